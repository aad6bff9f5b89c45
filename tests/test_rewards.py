import math

import pytest
import torch

from training.losses import compute_advantages
from training.data.problems import Problem
from training.rewards import REWARDS, RewardBatch, combine, cure_test_rewards


def _problem():
    return Problem(id="p", prompt="Write `f(x)`.", entry_point="f", reference_solution="def f(x):\n    return x\n",
                   tests=["assert f(1) == 1", "assert f(2) == 2"])


def test_registry_names_match_config_weights():
    from training.config import RewardConfig
    import dataclasses

    assert set(REWARDS) == {f.name for f in dataclasses.fields(RewardConfig)}


def test_combine_is_weighted_mean_of_applicable_terms_and_in_range():
    terms = {"a": [1.0, None, 0.5, float("nan")], "b": [0.0, 1.0, None, 1.0]}
    total = combine(terms, {"a": 3.0, "b": 1.0}, 4)
    assert total[0] == pytest.approx(0.75)
    assert total[1] == 1.0 and total[2] == 0.5
    assert total[3] == pytest.approx(0.25)  # nan counts as 0, never propagates
    assert combine({"a": [None]}, {"a": 1.0}, 1) == [0.0]
    assert combine({}, {}, 2) == [0.0, 0.0]
    assert all(0.0 <= t <= 1.0 and math.isfinite(t) for t in total)


def test_stage5_execution_rewards_on_hand_written_completions():
    fn_ref = REWARDS["reference_tests"].fn
    fn_disc = REWARDS["discriminator_tests"].fn
    p = _problem()
    batch = RewardBatch(
        stage_id=5,
        problems=[p] * 3,
        prefixes=[[]] * 3,
        completions=["def f(x):\n    return x", "def f(x) return", "def f(x):\n    return 1"],
        reference_results=[[True, True], [False, False], [True, False]],
        discriminator_results=[[True], [], [False, True]],
    )
    assert fn_ref(batch) == [1.0, 0.0, 0.5]
    # no validated discriminator test -> not applicable; unparseable code -> 0 when tests exist
    assert fn_disc(batch) == [1.0, None, 0.5]
    batch.discriminator_results = [[True], [True], [True]]
    assert fn_disc(batch)[1] == 0.0
    assert REWARDS["reference_tests"].code_stage and REWARDS["discriminator_tests"].code_stage


def test_rewards_declare_what_they_read():
    from training.rewards import NEEDS, register

    assert REWARDS["discriminator"].needs == ("discriminator_scores",) and not REWARDS["discriminator"].code_stage
    assert REWARDS["lookahead"].needs == ("lookahead_pass",)
    assert all(set(r.needs) <= set(NEEDS) for r in REWARDS.values())
    with pytest.raises(ValueError, match="unknown RewardBatch fields"):
        register("bogus", code_stage=True, needs=("trainer",))
    assert "bogus" not in REWARDS


def test_cure_rewards_follow_design():
    # two wrong candidates; test 0 valid and catches both, test 1 valid catches one,
    # test 2 invalid and lets one wrong candidate pass, test 3 invalid and lets both pass
    passes_reference = [True, True, False, False]
    wrong = [[False, True, True, True], [False, False, False, True]]
    assert cure_test_rewards(passes_reference, wrong) == [1.0, 0.5, -0.5, -1.0]
    assert cure_test_rewards([True, False], []) == [0.0, -1.0]


def test_invalid_test_penalty_separates_invalid_from_useless_valid_tests():
    # test 0 valid, catches nothing; test 1 invalid, every wrong candidate fails it:
    # CURE scores both 0, the penalty puts the invalid one below
    passes_reference, wrong = [True, False], [[True, False], [True, False]]
    assert cure_test_rewards(passes_reference, wrong) == [0.0, 0.0]
    assert cure_test_rewards(passes_reference, wrong, invalid_penalty=0.5) == [0.0, -0.5]
    assert cure_test_rewards([True, False], [], invalid_penalty=0.5) == [0.0, -1.5]


def test_group_advantages_skip_zero_spread_groups():
    rewards = [1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5]
    adv, valid, frac = compute_advantages(rewards, 4)
    assert frac == 0.5
    assert valid.tolist() == [True] * 4 + [False] * 4
    assert torch.all(adv[4:] == 0)
    assert adv[:4].sum().abs() < 1e-5 and adv[0] > 0 > adv[1]
    assert torch.isfinite(adv).all()


def test_a_test_writer_sample_scores_the_mean_or_the_sum_of_its_tests():
    from training.rewards import writer_sample_reward

    catches, idle, invalid = 0.75, 0.0, -0.5
    assert writer_sample_reward([catches], "mean") == writer_sample_reward([catches], "sum") == 0.75
    # an extra valid test that catches nothing halves the mean but leaves the sum alone
    assert writer_sample_reward([catches, idle], "mean") == 0.375
    assert writer_sample_reward([catches, idle], "sum") == 0.75
    assert writer_sample_reward([catches, invalid], "sum") < writer_sample_reward([catches], "sum")
    assert writer_sample_reward([], "mean") == writer_sample_reward([], "sum") == -1.0
