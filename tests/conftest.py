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
    from training.curriculum import load_curriculum

    return load_curriculum("train", per_family=1)[:6]
