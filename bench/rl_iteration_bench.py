"""One default code-stage RL iteration with `generate` and per-row log-probs, and with the fast engine and shared prefixes.

    python bench/rl_iteration_bench.py --checkpoint checkpoints/warmup          # a warm-up checkpoint
    python bench/rl_iteration_bench.py --warmup-steps 300 --pairs 5 --json OUT.json

The trainer is the default config at stage 5 (the probe off, so that every
iteration does the same work). Each pair restores the same weights,
optimizer moments and random state, then runs one iteration sampled by
`generate` with every row's prompt in the loss (the plain path), and one
sampled by `fast` with each group's prompt run once (`shared_prefix_loss`),
in alternating order, so drift on a shared machine hits both. Reported: the median of each phase's seconds
(`time_*` of the iteration's log row) per engine, each phase's share of
the iteration, and the median of the per-pair ratios of the whole
iteration. Without --checkpoint the generator is first warmed up for
--warmup-steps steps (an untrained model writes every token it may, which
no real iteration does).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training.adversarial_trainer import AdversarialTrainer  # noqa: E402
from training.config import TrainingConfig  # noqa: E402
from training.runtime.build import build_players, build_sandbox, load_run_problems, seed_everything  # noqa: E402
from training.sampling import ProblemSampler  # noqa: E402

ENGINES = ("generate", "fast")


def snapshot(trainer) -> dict:
    return copy.deepcopy({
        "generator": trainer.generator.model.state_dict(), "discriminator": trainer.discriminator.model.state_dict(),
        "generator_optimizer": trainer.generator_optimizer.state_dict(),
        "discriminator_optimizer": trainer.discriminator_optimizer.state_dict(),
        "rng": trainer.rng.getstate(), "step": trainer.global_step,
    })


def restore(trainer, state: dict, seed: int) -> None:
    state = copy.deepcopy(state)
    trainer.generator.model.load_state_dict(state["generator"])
    trainer.discriminator.model.load_state_dict(state["discriminator"])
    trainer.generator_optimizer.load_state_dict(state["generator_optimizer"])
    trainer.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
    trainer.rng.setstate(state["rng"])
    trainer.global_step = state["step"]
    trainer.rollouts.prefix_cache.clear()
    torch.manual_seed(seed)
    random.seed(seed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a checkpoint directory to start from (e.g. a run's warmup/)")
    parser.add_argument("--warmup-steps", type=int, default=150, help="without --checkpoint: warm-up steps first")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainingConfig().with_overrides([
            "--stages=[5]", "--cpu_threads=1", "--progress=false", "--plot=false", "--probe_problems=0",
            f"--warmup.steps={args.warmup_steps}", "--warmup.cpu_threads=1", f"--checkpoint_dir={tmp}",
        ])
        seed_everything(config.seed)
        generator, discriminator = build_players(config)
        with build_sandbox(config) as sandbox:
            trainer = AdversarialTrainer(generator, discriminator, sandbox, config)
            if args.checkpoint:
                trainer.load_checkpoint(args.checkpoint)
            else:
                trainer.warmup()
            problems = trainer.visibility.split(load_run_problems(config.problems, config))
            trainer.sampler = ProblemSampler(problems, config.problem_sampling, config.problems_per_batch, config.seed,
                                             trainer.global_step, trainer.dist)
            trainer.reference_model = trainer._make_reference() if config.kl_beta > 0 else None
            start = snapshot(trainer)
            rows = {engine: [] for engine in ENGINES}
            for pair in range(args.pairs):
                for engine in (ENGINES if pair % 2 == 0 else ENGINES[::-1]):
                    restore(trainer, start, seed=config.seed + pair)
                    generator.generation_engine = discriminator.generation_engine = engine
                    trainer.config.shared_prefix_loss = engine == "fast"
                    rows[engine].append(trainer.iteration(5, 0))
                    print(f"pair {pair} {engine}: {rows[engine][-1]['time_iteration']:.2f} s", file=sys.stderr)
    phases = sorted({k for r in rows["generate"] + rows["fast"] for k in r if k.startswith("time_")})
    medians = {e: {p: statistics.median(r.get(p, 0.0) for r in rows[e]) for p in phases} for e in ENGINES}
    ratios = [g["time_iteration"] / f["time_iteration"] for g, f in zip(rows["generate"], rows["fast"])]
    result = {"pairs": args.pairs, "checkpoint": args.checkpoint, "median_seconds": medians,
              "share_of_iteration": {e: {p: medians[e][p] / medians[e]["time_iteration"] for p in phases
                                         if p != "time_iteration"} for e in ENGINES},
              "iteration_speedup": statistics.median(ratios),
              "completion_length": {e: statistics.median(r["completion_length"] for r in rows[e]) for e in ENGINES}}
    print(f"{'phase':28s} {'generate':>10s} {'fast':>10s}")
    for p in phases:
        print(f"{p:28s} {medians['generate'][p]:10.2f} {medians['fast'][p]:10.2f}")
    print(f"iteration: fast + shared prefixes is {result['iteration_speedup']:.2f}x generate + per-row "
          f"(median of {args.pairs} paired ratios)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
