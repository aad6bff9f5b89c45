"""How well a checkpoint's outcome judge predicts whether a chain passes (training/judge.py).

    python -m training.judge --checkpoint checkpoints/final --compare OTHER_DIR
        # AUC / Brier per stage k on fresh chains of held-out instances,
        # the checkpoint's head beside another checkpoint's on the same chains
"""

from __future__ import annotations

import argparse
import json
import math

from sandbox import Sandbox
from training.chains import sample_chains
from training.errors import UserError
from training.judge import JUDGED_STAGES, judge_quality, label_chains, positive_share
from training.rollout import Rollouts
from training.runtime.build import load_run_problems, seed_everything, spread
from training.runtime.cli import run_cli, write_atomically
from training.runtime.loading import load_players


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.judge",
        description="How well a checkpoint's scoring head predicts whether a chain passes: AUC and Brier per stage, "
                    "on chains its generator samples for held-out problems.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory whose generator samples the chains")
    parser.add_argument("--compare", action="append", default=[], metavar="DIR",
                        help="another checkpoint whose scoring head is scored on the same chains (repeatable)")
    parser.add_argument("--problems", default="curriculum:heldout_instances")
    parser.add_argument("--limit", type=int, default=120, help="problems (spread over families), 0 = all")
    parser.add_argument("--n", type=int, default=2, help="chains per problem")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers")
    parser.add_argument("--output", help="write the report as JSON")
    return run_cli(run, parser.parse_args(argv))


def run(args) -> int:
    report = evaluate_judges(args)
    print(format_report(report))
    if args.output:
        write_atomically(args.output, json.dumps(report, indent=2) + "\n")
    return 0


def evaluate_judges(args) -> dict:
    if args.n < 1 or args.temperature <= 0:
        raise UserError("--n must be at least 1 and --temperature positive")
    seed_everything(args.seed)
    generator, discriminator, config, _ = load_players(args.checkpoint, device=args.device)
    problems = spread(load_run_problems(args.problems, config), args.limit)  # the run's own families
    with Sandbox(workers=args.workers) as sandbox:
        per_problem = sample_chains(generator, problems, args.n, args.temperature, config.max_new_tokens)
        flat_problems = [p for p, chains in zip(problems, per_problem) for _ in chains]
        flat_chains = [c for chains in per_problem for c in chains]
        rollouts = Rollouts(generator, discriminator, sandbox, config, dist=None)
        labelled = label_chains(flat_problems, flat_chains, sandbox, rollouts.trusted_outcomes)
    report = {"problems": args.problems, "num_problems": len(problems), "n": args.n,
              "temperature": args.temperature, "positive_share": positive_share(labelled), "judges": {}}
    for directory in [args.checkpoint] + args.compare:
        disc = discriminator if directory == args.checkpoint else load_players(directory, device=args.device)[1]
        quality = judge_quality(disc, labelled)
        report["judges"][directory] = {str(k): v for k, v in quality.items()}
    return report


def format_report(report: dict) -> str:
    lines = [f"{report['num_problems']} problems x {report['n']} chains at T={report['temperature']}, "
             f"{_fmt(report['positive_share'])} of them pass", "",
             "| scoring head of | " + " | ".join(f"{name} stage {k}" for name in ("AUC", "within-problem AUC", "Brier")
                                                 for k in JUDGED_STAGES) + " |",
             "|---" * (1 + 3 * len(JUDGED_STAGES)) + "|"]
    for directory, per_stage in report["judges"].items():
        cells = [_fmt(per_stage[str(k)][key]) for key in ("auc", "within_problem_auc", "brier") for k in JUDGED_STAGES]
        lines.append(f"| `{directory}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"

