"""Train the generator against the discriminator, stage by stage.

    python train.py                                   # embedded tiny model, configs/default.yaml
    python train.py --config configs/qwen2.5-coder-1.5b.yaml
    python train.py --iterations_per_stage=4 --sandbox.workers=1   # any config key, typed
    python train.py --resume checkpoints/stage_3      # continue with stage 4, same tree
    python train.py --use_discriminator=false         # ablation: execution reward only
    python train.py --help                            # every key with its default and help

Writes checkpoints/{warmup,stage_1..5,best,final}/, checkpoints/metrics.jsonl
and a PNG of the curves per stage.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.yaml")


def parse_args(argv):
    from training.config import describe_fields

    keys = "\n".join(f"  --{k}={v!r:<14} {h}" for k, v, h in describe_fields())
    parser = argparse.ArgumentParser(
        description="Adversarial multi-stage training of a code LLM.",
        epilog="config keys (override with --key=value):\n" + keys,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML config (default: configs/default.yaml; with --resume, the checkpoint's own)")
    parser.add_argument("--resume", metavar="DIR", help="checkpoint directory to continue from, e.g. checkpoints/stage_3")
    return parser.parse_known_args(argv)


def main(argv=None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)

    from training.runtime.cli import run_cli

    return run_cli(
        run, args, overrides,
        interrupted="interrupted; completed stages are in the checkpoint directory, resume with --resume",
    )


def run(args, overrides) -> int:
    from training.adversarial_trainer import AdversarialTrainer
    from training.runtime.build import (
        build_players, build_sandbox, check_writable, load_run_problems, resolve_device, seed_everything, set_threads,
    )
    from training.runtime.checkpoint import GENERATOR_FILE, load_torch, require_checkpoint_dir
    from training.config import TrainingConfig
    from training.runtime.distributed import Distributed

    # ---------------------------------------------------------------- config
    if args.resume:
        require_checkpoint_dir(args.resume)
        if args.config:
            config = TrainingConfig.from_yaml(args.config)
        else:
            saved = load_torch(os.path.join(args.resume, GENERATOR_FILE)).get("config") or {}
            config = TrainingConfig.from_dict(saved, source=f"{args.resume}/{GENERATOR_FILE}")
        # the resumed run continues the tree the checkpoint belongs to
        config = config.with_overrides([f"--checkpoint_dir={os.path.dirname(os.path.abspath(args.resume))}"])
    else:
        config = TrainingConfig.from_yaml(args.config or DEFAULT_CONFIG)
    config = config.with_overrides(overrides)
    distributed = Distributed(cpu=resolve_device(config.device) == "cpu")  # one process per rank under `accelerate launch`
    config = config.with_overrides([f"--device={distributed.device(resolve_device(config.device))}"])
    if distributed.is_main:
        check_writable(config.checkpoint_dir)
    set_threads(config.cpu_threads)
    seed_everything(config.seed)

    try:
        # ------------------------------------------------------------ data
        problems = load_run_problems(config.problems, config)
        eval_problems = load_run_problems(config.eval_problems, config) if config.eval_problems else []

        # ------------------------------------------------------------ players
        generator, discriminator = build_players(config)
        with build_sandbox(config) as sandbox:
            trainer = AdversarialTrainer(generator, discriminator, sandbox, config, distributed)
            if args.resume:
                trainer.load_checkpoint(args.resume, load_optimizer=True)
                if distributed.is_main:
                    print(f"resumed from {args.resume}: continuing after stage {trainer.completed_stage}", file=sys.stderr)

            # -------------------------------------------------------- train
            trainer.train(problems, eval_problems=eval_problems)
        distributed.barrier()
    finally:
        distributed.close()
    if distributed.is_main:
        print(f"done: checkpoints in {config.checkpoint_dir}/ (best/, final/, stage_N/)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
