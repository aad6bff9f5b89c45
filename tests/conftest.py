import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Tests run on 2 cores: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")


# The trainer tests' sandbox and problems (test_trainer.py and the tests built on its make_trainer).
@pytest.fixture(scope="module")
def sandbox():
    from sandbox import Sandbox

    with Sandbox(timeout_s=1.0, memory_mb=512, workers=1) as sb:
        yield sb


@pytest.fixture(scope="module")
def problems():
    from training.data.curriculum import load_curriculum

    return load_curriculum("train", per_family=1)[:6]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module, as --cpu_threads=1 gives the CLIs: on a busy 2-core host two
    threads per process oversubscribe the cores, and generation slows many times over."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
