import pytest

from training.runtime.build import load_run_problems, resolve_device, spread
from training.config import TrainingConfig
from training.errors import UserError


def test_families_restrict_curriculum_problems_only():
    config = TrainingConfig(families=["scale_list", "max_minus_min"])
    train = load_run_problems("curriculum:train", config)
    assert train and {p.family for p in train} == {"scale_list", "max_minus_min"}
    warmup = load_run_problems("curriculum:warmup", config)
    assert {p.family for p in warmup} == {"scale_list"}  # max_minus_min is RL-only: no gold chains in warm-up
    assert len(load_run_problems("humaneval", config)) == 164  # not a curriculum source: untouched


def test_unknown_family_is_one_clear_error():
    with pytest.raises(UserError, match="unknown curriculum families \\['nope'\\]"):
        load_run_problems("curriculum:train", TrainingConfig(families=["nope"]))


def test_spread_takes_problems_across_the_list():
    assert spread(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert spread(list(range(3)), 0) == [0, 1, 2]
    assert spread(list(range(3)), 7) == [0, 1, 2]


def test_cuda_without_cuda_is_one_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"
