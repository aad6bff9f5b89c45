"""One generator update on a code-stage rollout, each prompt run once (shared prefix) against once per row, side by side.

    python bench/shared_prefix_bench.py                          # the default config's update, 5 pairs
    python bench/shared_prefix_bench.py --pairs 7 --json OUT.json
    python bench/shared_prefix_bench.py --profile                # where the per-row update spends its time

The update is `losses.policy_update` as the trainer calls it at stage 5, with
the default config's settings (problems_per_batch 8 x group_size 8 rows,
micro_batch_size 32, kl_beta 0.02 with a frozen reference, one policy epoch)
on the tiny model. Prompts are curriculum problems with their gold stages
1-4 (as the code stage sees them); completions are random tokens of
--completion-tokens on average (half to one and a half of it, right-padded),
since an untrained model writes every token it may and no real code-stage
rollout does. Each pair runs both paths from the same weights and optimizer
state, in alternating order, so drift on a shared machine hits both.
Reported: medians of the whole update and of its passes (the reference's
log-probs without gradient; the loss's forward; backward and optimizer step),
and the median of the per-pair ratios per-row / shared.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from bench._common import COMMANDS, environment, figure, write_json  # noqa: E402

PATHS = ("per_row", "shared")
SPEED_BOUND = 2.0  # the per-row update's time over the shared one's, at the default code-stage shapes
PASSES = ("reference (no grad)", "loss forward", "backward + step")


def code_stage_rollout(gen, problems: int, group_size: int, completion_tokens: int, seed: int):
    from models.base import Rollout
    from reasoning.stages import build_prompt
    from training.data.curriculum import load_curriculum

    chosen = [p for p in load_curriculum("train") if p.gold_stages][:problems]
    prompts = [build_prompt(p.prompt, list(p.gold_stages), 5) for p in chosen]
    prompt_ids, prompt_mask = gen._encode_prompts(prompts)  # (B, P)
    N = problems * group_size
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(completion_tokens // 2, completion_tokens * 3 // 2 + 1, (N,), generator=g)  # (N,)
    C = int(lengths.max())
    completion_mask = (torch.arange(C).unsqueeze(0) < lengths.unsqueeze(1)).long()  # (N, C)
    completion_ids = torch.randint(3, gen.tokenizer.vocab_size, (N, C), generator=g)
    completion_ids = completion_ids.masked_fill(completion_mask == 0, gen.tokenizer.pad_token_id)
    return Rollout(prompt_ids=prompt_ids.repeat_interleave(group_size, 0),
                   prompt_mask=prompt_mask.repeat_interleave(group_size, 0), completion_ids=completion_ids,
                   completion_mask=completion_mask, texts=[""] * N, prompts=[p for p in prompts for _ in range(group_size)],
                   num_samples=group_size)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=5, help="timed pairs (after one untimed pair)")
    parser.add_argument("--completion-tokens", type=int, default=27, help="mean completion length")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top operators for each path")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from models.generator import LLMGenerator
    from training.config import TrainingConfig
    from training.losses import policy_update
    from training.runtime.distributed import Distributed
    from training.updates import policy_loss_settings

    config = TrainingConfig(device="cpu", dtype="float32")
    torch.manual_seed(args.seed)
    gen = LLMGenerator("tiny", "cpu")
    reference = gen.make_reference_model()
    optimizer = torch.optim.AdamW(gen.trainable_parameters(), lr=config.generator_lr_at(5))
    rollout = code_stage_rollout(gen, config.problems_per_batch, config.group_size, args.completion_tokens, args.seed)
    advantages = torch.randn(len(rollout), generator=torch.Generator().manual_seed(args.seed))
    valid = torch.ones(len(rollout), dtype=torch.bool)
    settings = {**policy_loss_settings(config), "max_completion_length": config.max_new_tokens[4]}
    dist = Distributed()

    # the passes, timed from outside: per_token_logps with and without grad, the rest of the update
    timings: dict[str, float] = {}
    logps = gen.per_token_logps

    def timed_logps(*a, **kw):
        start = time.perf_counter()
        try:
            return logps(*a, **kw)
        finally:
            name = PASSES[1] if torch.is_grad_enabled() else PASSES[0]
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - start

    gen.per_token_logps = timed_logps
    start_state = copy.deepcopy((gen.model.state_dict(), optimizer.state_dict()))

    def update(path: str) -> dict:
        gen.model.load_state_dict(start_state[0])
        optimizer.load_state_dict(start_state[1])
        timings.clear()
        start = time.perf_counter()
        stats = policy_update(gen, optimizer, gen.trainable_parameters(), rollout, advantages, valid, dist,
                              temperature=config.temperature, reference_model=reference, beta=config.kl_beta,
                              epochs=config.policy_epochs, **{**settings, "shared_prefix": path == "shared"})
        total = time.perf_counter() - start
        return {"update": total, **timings, PASSES[2]: total - sum(timings.values()), "policy_loss": stats["policy_loss"]}

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for path in PATHS:
            update(path)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                update(path)
            print(f"== {path}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        return 0

    rows = {path: [] for path in PATHS}
    for pair in range(args.pairs + 1):
        for path in (PATHS if pair % 2 == 0 else PATHS[::-1]):
            row = update(path)
            if pair:  # the first pair warms up
                rows[path].append(row)
        if pair:
            print(f"pair {pair}: per-row {rows['per_row'][-1]['update']:.3f} s, shared {rows['shared'][-1]['update']:.3f} s",
                  file=sys.stderr)
    keys = ("update",) + PASSES
    medians = {path: {k: statistics.median(r[k] for r in rows[path]) for k in keys} for path in PATHS}
    ratios = {k: statistics.median(a[k] / b[k] for a, b in zip(rows["per_row"], rows["shared"])) for k in keys}
    P = int(rollout.prompt_mask.sum(1).float().mean())
    C = float(rollout.completion_mask.sum(1).float().mean())
    env = environment()
    result = {"environment": env, "pairs": args.pairs, "rows": len(rollout), "prompt_tokens_mean": P, "prompt_width": rollout.prompt_ids.size(1),
              "completion_tokens_mean": C, "completion_width": rollout.completion_ids.size(1),
              "micro_batch_size": config.micro_batch_size, "threads": args.threads,
              "median_seconds": medians, "per_row_over_shared": ratios,
              "loss_difference": max(abs(a["policy_loss"] - b["policy_loss"]) for a, b in zip(rows["per_row"], rows["shared"]))}
    print(f"{len(rollout)} rows, prompts {P} tokens on average (width {result['prompt_width']}), "
          f"completions {C:.1f} (width {result['completion_width']}), micro-batches of {config.micro_batch_size}")
    print(f"{'median s':22s} {'per-row':>9s} {'shared':>9s} {'ratio':>7s}")
    for k in keys:
        print(f"{k:22s} {medians['per_row'][k]:9.3f} {medians['shared'][k]:9.3f} {ratios[k]:6.2f}x")
    print(f"largest |policy_loss| difference between the paths: {result['loss_difference']:.1e}")
    ratio, G = ratios["update"], config.group_size
    result["figures"] = [figure(
        f"generator update at the code stage, {len(rollout)} rows ({len(rollout) // G} prompts × G={G}), "
        f"micro-batches of {config.micro_batch_size}, reference pass included (s/update)",
        f"shared prefix: {medians['shared']['update']:.2f} s", f"per-row forward: {medians['per_row']['update']:.2f} s",
        ratio, f">= {SPEED_BOUND:g}× the per-row update", ratio >= SPEED_BOUND, COMMANDS["shared_prefix"],
        note=f"prompts {P} tokens, completions {C:.0f} on average; {args.pairs} paired runs, median ratio",
        why=(f"each micro-batch runs {config.micro_batch_size // G} prompts once instead of {config.micro_batch_size} "
             "times, but every row still runs its own completion, LM head and log-softmax over the vocabulary, and "
             "attends to the whole prefix; the optimizer step is the same on both sides"),
    )]
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
