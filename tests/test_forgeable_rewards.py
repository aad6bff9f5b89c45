"""Tests that the sandbox can only check in assert mode (forgeable) stay out of rewards.

A candidate that forges pass records from its own memory passes such a test
(tests/test_sandbox_hostile.py); with the default config no reward counts it,
and the trainer logs how many tests it left out.
"""

import dataclasses
import textwrap

import pytest

import training.rollout as rollout_module

from test_sandbox_hostile import FORGERS
from test_trainer import make_trainer


def with_forgeable_test(problem):
    """The problem with one more reference test: its first one, as a loop (assert mode)."""
    cond = problem.tests[0][len("assert "):]
    return dataclasses.replace(problem, tests=list(problem.tests) + [f"assert all(({cond}) for _ in [0])"])


def forger(entry_point: str) -> str:
    return textwrap.dedent(FORGERS["secrets from closure cells"]).replace("def f(", f"def {entry_point}(")


@pytest.mark.parametrize("allow", [False, True])
def test_forgeable_reference_tests_stay_out_of_the_reward(tmp_path, sandbox, problems, allow):
    problem = with_forgeable_test(problems[0])
    trainer = make_trainer(tmp_path, sandbox, "--stages=[5]", "--use_discriminator=false",
                           f"--allow_forgeable_tests={str(allow).lower()}")
    batch = trainer.rollout(5, [problem])
    batch.completions[0] = forger(problem.entry_point)
    batch.completions[1] = problem.reference_solution
    rewards = trainer.score(batch)
    n = len(problem.tests)
    if allow:
        assert [len(r) for r in batch.reference_results] == [n] * 3
        assert batch.reference_results[0] == [False] * (n - 1) + [True]   # the forged pass counts
        assert rewards[0] > 0
        assert batch.stats()["forgeable_tests_excluded"] == 0
    else:
        assert [len(r) for r in batch.reference_results] == [n - 1] * 3   # the same tests for every candidate
        assert batch.reference_results[0] == [False] * (n - 1)
        assert rewards[0] == 0.0
        assert batch.stats()["forgeable_tests_excluded"] == 1
    assert rewards[1] == 1.0


@pytest.mark.parametrize("allow", [False, True])
def test_forgeable_discriminator_tests_are_never_valid(tmp_path, sandbox, problems, monkeypatch, allow):
    problem = problems[0]
    io_test = problem.tests[0]
    forgeable = with_forgeable_test(problem).tests[-1]
    monkeypatch.setattr(rollout_module, "extract_tests", lambda text, entry: ([io_test, forgeable], 0))
    trainer = make_trainer(tmp_path, sandbox, "--stages=[5]", f"--allow_forgeable_tests={str(allow).lower()}")
    batch = trainer.rollout(5, [problem])
    trainer.score(batch)
    tb = batch.test_batch
    assert tb.tests == [[io_test, forgeable]]
    assert tb.forgeable == [[False, True]]
    assert tb.passes_reference == [[True, allow]]
    stats = batch.stats()
    assert stats["test_writer_forgeable_share"] == 0.5
    assert stats["forgeable_tests_excluded"] == (0 if allow else 1)
