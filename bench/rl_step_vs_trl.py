"""One generator RL step of this project's trainer against TRL's GRPOTrainer, same work on both sides.

    pip install -r requirements-bench.txt             # trl 1.16 (does not move torch/transformers)
    python bench/rl_step_vs_trl.py                    # 4 prompts x G=4 x 64 tokens, 2 warm-up + 6 timed steps
    python bench/rl_step_vs_trl.py --json out.json --steps 8 --beta 0.04
    python bench/rl_step_vs_trl.py --loss-type dapo  # TRL's default loss, on both sides

Both sides train the same tiny model (resolve_model_path("tiny")) on the same
stage-5 prompts (curriculum problems from load_curriculum("train"), gold stages
1-4 as prefix, built with reasoning.stages.build_prompt), with the same group
size, temperature, learning rate, clip range, beta (0 by default: no reference
model on either side), loss_type (grpo, dapo or dr_grpo; the same reduction on
both sides), one optimizer step per batch, and the same reward: the
pass fraction of the extracted code on the problem's reference tests, run
through this project's sandbox. Both are forced to generate exactly --new-tokens
tokens per completion (min_new_tokens), so they do the same arithmetic.

Ours is the trainer's own step, as train_stage runs it (without the
discriminator): rollout -> score -> compute_advantages -> update_generator. TRL's
step is one optimizer step of GRPOTrainer.train(). The two alternate: a
callback at the end of each TRL step runs one of ours. Phases are timed from the
outside by wrapping methods (nothing in the trainer is edited): generation,
reward, log-probs without gradient, the forward with gradient, backward, and
optimizer (clip + step); "other" is the rest of the step.

The untrained tiny model passes no test, so a pure pass-fraction reward has no
spread in any group: our trainer would then skip the update (by design) while
TRL back-propagates zero advantages, and the comparison would say nothing about
the update. A tie-break below --tiebreak (a hash of the extracted code) is added
to every reward on both sides so that both run the full update; --tiebreak 0
turns it off.

On TRL's first (untimed) step the bench also computes our loss from the very
inputs of TRL's loss (its per-token log-probs, advantages, masks and, with
beta, reference log-probs) through training/losses.py, and records how far
the two losses, and their gradients with respect to the per-token
log-probs, differ: the two reductions must agree.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from bench._common import environment, figure, write_json  # noqa: E402

SPEED_BOUND = 1.5  # TRL's step time over ours
LOSS_TOLERANCE = 1e-5  # the two losses (absolute) and their gradients (relative) on the same inputs
PHASES = ("generation", "reward", "log-probs (no grad)", "forward (loss)", "backward", "optimizer")


# ------------------------------------------------------------------------ timing


class PhaseTimer:
    """Seconds per named phase, per side; only the outermost timed call counts (no double counting)."""

    def __init__(self):
        self.side = "trl"
        self.totals: dict[str, dict[str, float]] = {"ours": {}, "trl": {}}
        self._depth = 0

    def wrap(self, fn, phase):
        def timed(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            name = phase(*args, **kwargs) if callable(phase) else phase
            self._depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                bucket = self.totals[self.side]
                bucket[name] = bucket.get(name, 0.0) + time.perf_counter() - start

        return timed

    def take(self, side: str) -> dict:
        out, self.totals[side] = self.totals[side], {}
        return out


def logps_phase(*_args, **_kwargs) -> str:
    return "forward (loss)" if torch.is_grad_enabled() else "log-probs (no grad)"


# ------------------------------------------------------------------------ reward


def tiebreak(code: str, scale: float) -> float:
    return scale * (zlib.crc32(code.encode("utf-8", "replace")) / 2**32)


def pass_fractions(sandbox, codes: list, tests: list, entry_points: list) -> list:
    """The trainer's reference_tests reward: pass fraction, 0 for code that does not parse."""
    from training.rewards import runnable

    results = sandbox.run_batch([(c, list(t), e) for c, t, e in zip(codes, tests, entry_points)])
    out = []
    for code, result, t in zip(codes, results, tests):
        passed = [bool(x) for x in list(result.test_results or [])[: len(t)]]
        out.append(sum(passed) / len(t) if t and runnable(code) else 0.0)
    return out


# ------------------------------------------------------------------------ the two sides


def build_ours(args, problems, sandbox, timer, log_dir):
    """Our trainer on the bench's problems; returns step() -> (tokens, mean pass fraction)."""
    from training.adversarial_trainer import AdversarialTrainer
    from training.runtime.build import build_players
    from training.config import TrainingConfig

    P, G, T = len(problems), args.group_size, args.new_tokens
    config = TrainingConfig(
        device="cpu", dtype="float32", seed=args.seed, use_discriminator=False, kl_beta=args.beta,
        problems_per_batch=P, group_size=G, max_new_tokens=[T] * 5, temperature=1.0, top_p=1.0,
        generator_lr=args.lr, clip_range=0.2, policy_epochs=1, max_grad_norm=1.0, micro_batch_size=P * G,
        loss_type=args.loss_type,
        checkpoint_dir=log_dir, plot=False, progress=False,
    )
    config.warmup.enabled = False
    generator, discriminator = build_players(config)
    trainer = AdversarialTrainer(generator, discriminator, sandbox, config)
    # The same prompts as TRL's: gold stages 1-4 as the prefix (the trainer caches
    # prefixes per stage; filling the cache replaces its greedy chains).
    for p in problems:
        trainer.rollouts.prefix_cache[(p.id, 5)] = list(p.gold_stages)
    if args.beta > 0:
        trainer.reference_model = trainer._make_reference()

    sample = generator.sample
    if args.force_length:
        def sample_exact(prompts, **kw):
            return sample(prompts, **{**kw, "min_new_tokens": kw["max_new_tokens"]})
        generator.sample = sample_exact

    score = trainer.score
    pure = []

    def score_with_tiebreak(batch):
        rewards = score(batch)
        pure.append(sum(rewards) / len(rewards))
        batch.rewards = [r + tiebreak(c, args.tiebreak) for r, c in zip(rewards, batch.completions)]
        return batch.rewards

    trainer.rollout = timer.wrap(trainer.rollout, "generation")
    trainer.score = timer.wrap(score_with_tiebreak, "reward")
    generator.per_token_logps = timer.wrap(generator.per_token_logps, logps_phase)
    trainer.generator_optimizer.step = timer.wrap(trainer.generator_optimizer.step, "optimizer")

    def step():
        # train_stage's generator step (rollout, score, update), without the discriminator
        batch = trainer.rollout(5, problems)
        trainer.score(batch)
        advantages, valid, _frac_zero = trainer.compute_advantages(batch.rewards, batch.group_size)
        trainer.update_generator(batch, advantages, valid)
        return int(batch.rollout.completion_mask.sum()), pure[-1]

    n_params = sum(p.numel() for p in generator.model.parameters())
    prompt_tokens = [len(ids) for ids in generator._prompt_tokens([build_prompt5(p) for p in problems])]
    return step, n_params, prompt_tokens


def build_prompt5(problem) -> str:
    from reasoning.stages import build_prompt

    return build_prompt(problem.prompt, list(problem.gold_stages), 5)


loss_checks: list = []  # our loss on the inputs of TRL's first loss


def our_loss(per_token_logps, inputs: dict, args) -> torch.Tensor:
    """training/losses.py's loss on the inputs TRL's loss saw: the same per-token terms, reduced by loss_type."""
    from training.runtime.distributed import Distributed
    from training.losses import kept_rows, kept_tokens, per_token_policy_loss, summed_loss

    mask = inputs["completion_mask"].float()
    advantages = inputs["advantages"]
    per_token_loss, _, _ = per_token_policy_loss(
        per_token_logps, advantages, mask, clip_range=0.2, beta=args.beta,
        ref_per_token_logps=inputs.get("ref_per_token_logps") if args.beta else None,
    )
    dist = Distributed()
    keep, norm = kept_rows(torch.ones(len(advantages), dtype=torch.bool), dist)  # TRL keeps every row
    if args.loss_type == "dapo":
        norm = kept_tokens(mask, keep, dist)
    return summed_loss(per_token_loss, mask, args.loss_type, args.new_tokens) / norm


def build_trl(args, problems, sandbox, timer, model_dir, out_dir, on_step):
    """TRL's GRPOTrainer on the same prompts and reward; `on_step` runs after each of its steps."""
    import datasets
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from reasoning.stages import get_stage

    P, G, T = len(problems), args.group_size, args.new_tokens
    stage5 = get_stage(5)
    dataset = datasets.Dataset.from_list(
        [{"prompt": build_prompt5(p), "tests": list(p.tests), "entry_point": p.entry_point} for p in problems]
    )
    pure = []

    def execution_reward(prompts, completions, tests, entry_point, **_):
        codes = [stage5.extract(c) for c in completions]
        rewards = pass_fractions(sandbox, codes, tests, entry_point)
        pure.append(sum(rewards) / len(rewards))
        return [r + tiebreak(c, args.tiebreak) for r, c in zip(rewards, codes)]

    config = GRPOConfig(
        output_dir=out_dir, use_cpu=True, report_to=[], save_strategy="no", bf16=False,
        per_device_train_batch_size=P * G, gradient_accumulation_steps=1, num_generations=G,
        max_completion_length=T, beta=args.beta, learning_rate=args.lr, lr_scheduler_type="constant",
        temperature=1.0, top_p=1.0, epsilon=0.2, num_iterations=1, loss_type=args.loss_type, max_grad_norm=1.0,
        max_steps=args.warmup + args.steps, seed=args.seed, disable_tqdm=True, shuffle_dataset=False,
        generation_kwargs={"min_new_tokens": T} if args.force_length else None,
        # TRL turns gradient checkpointing on by default; our config has it off. Off on both
        # sides compares the same arithmetic (--trl-gradient-checkpointing: TRL's default).
        gradient_checkpointing=args.trl_gradient_checkpointing,
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = GRPOTrainer(model=model_dir, reward_funcs=execution_reward, args=config,
                          train_dataset=dataset, processing_class=tokenizer)

    tokens = []
    generate = trainer._generate

    def generate_counted(prompts):
        out = generate(prompts)
        tokens.append(sum(len(c) for c in out[1]))  # out[1]: completion ids per completion
        return out

    trainer._generate = timer.wrap(generate_counted, "generation")
    compute_loss = trainer._compute_loss

    def compute_loss_checked(model, inputs):
        if loss_checks:  # only TRL's first step, which is not timed
            return compute_loss(model, inputs)
        logps_of = trainer._get_per_token_logps_and_entropies
        seen = {}

        def capture(*a, **kw):
            out = logps_of(*a, **kw)
            seen["logps"] = out[0]
            return out

        trainer._get_per_token_logps_and_entropies = capture
        try:
            loss = compute_loss(model, inputs)
        finally:
            trainer._get_per_token_logps_and_entropies = logps_of
        # the loss at ratio 1 is about 0 (advantages centre on each group), so compare its gradient too
        (trl_grad,) = torch.autograd.grad(loss, seen["logps"], retain_graph=True)
        logps = seen["logps"].detach().requires_grad_()
        ours = our_loss(logps, inputs, args)
        (our_grad,) = torch.autograd.grad(ours, logps)
        loss_checks.append({
            "trl": loss.item(), "ours": ours.item(), "abs_diff": abs(ours.item() - loss.item()),
            "grad_rel_diff": ((our_grad - trl_grad).abs().max() / trl_grad.abs().max().clamp(min=1e-30)).item(),
        })
        return loss

    trainer._compute_loss = compute_loss_checked
    trainer._calculate_rewards = timer.wrap(trainer._calculate_rewards, "reward")
    trainer._get_per_token_logps_and_entropies = timer.wrap(trainer._get_per_token_logps_and_entropies, logps_phase)
    trainer._clip_grad_norm = timer.wrap(trainer._clip_grad_norm, "optimizer")

    class Interleave(TrainerCallback):
        def on_train_begin(self, args_, state, control, optimizer=None, **kw):
            optimizer.step = timer.wrap(optimizer.step, "optimizer")
            self.t = time.perf_counter()

        def on_step_end(self, args_, state, control, **kw):
            on_step(time.perf_counter() - self.t, tokens[-1], pure[-1])
            self.t = time.perf_counter()  # our step, run in on_step, is not TRL's time

    trainer.add_callback(Interleave())
    return trainer


# ------------------------------------------------------------------------ main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4, help="problems per step")
    parser.add_argument("--group-size", type=int, default=4, help="G, completions per problem")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens per completion")
    parser.add_argument("--no-force-length", dest="force_length", action="store_false",
                        help="let completions stop at EOS (then compare tokens per step too)")
    parser.add_argument("--trl-gradient-checkpointing", action="store_true",
                        help="TRL's own default (recompute activations in backward); off = like ours")
    parser.add_argument("--beta", type=float, default=0.0, help="KL weight on both sides (0: no reference model)")
    parser.add_argument("--loss-type", choices=("grpo", "dapo", "dr_grpo"), default="grpo",
                        help="loss_type on both sides (TRL's default is dapo)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--tiebreak", type=float, default=1e-3, help="reward tie-break scale (0: off)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per side")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: see docs/models.md, 2 threads collapse on a busy 2-core box)")
    parser.add_argument("--sandbox-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)

    import warnings

    try:
        import trl  # noqa: F401
    except ImportError:
        print("error: this bench needs TRL as the peer; pip install -r requirements-bench.txt", file=sys.stderr)
        return 2
    import transformers

    # transformers 5.x deprecation notices from inside TRL, and the scheduler's notice about
    # the optimizer.step wrapper this bench installs to time it: noise in the bench's output.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*optimizer.step\\(\\)` has been overridden.*")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from models.tiny import resolve_model_path
    from sandbox import Sandbox
    from training.data.curriculum import load_curriculum

    env = environment()
    pool = [p for p in load_curriculum("train") if p.gold_stages]
    problems = random.Random(args.seed).sample(pool, args.prompts)
    model_dir = resolve_model_path("tiny")
    timer = PhaseTimer()
    backward = torch.Tensor.backward
    torch.Tensor.backward = timer.wrap(backward, "backward")
    ours_steps, trl_steps = [], []

    with Sandbox(timeout_s=2.0, memory_mb=512, workers=args.sandbox_workers) as sandbox, \
            tempfile.TemporaryDirectory(prefix="bench-rl-") as tmp:
        sandbox.run("def f():\n    return 1\n", ["assert f() == 1"], "f")  # start the workers untimed
        our_step, n_params, prompt_tokens = build_ours(args, problems, sandbox, timer, os.path.join(tmp, "ours"))

        def on_trl_step(trl_seconds, trl_tokens, trl_pass):
            trl_steps.append({"s": trl_seconds, "tokens": trl_tokens, "pass": trl_pass, "phases": timer.take("trl")})
            timer.side = "ours"
            start = time.perf_counter()
            tokens, passed = our_step()
            ours_steps.append({"s": time.perf_counter() - start, "tokens": tokens, "pass": passed,
                               "phases": timer.take("ours")})
            timer.side = "trl"
            print(f"step {len(ours_steps)}: TRL {trl_seconds:.2f} s, ours {ours_steps[-1]['s']:.2f} s", file=sys.stderr)

        trl_trainer = build_trl(args, problems, sandbox, timer, model_dir, os.path.join(tmp, "trl"), on_trl_step)
        timer.take("trl")
        trl_trainer.train()
    torch.Tensor.backward = backward

    result = summarize(args, env, ours_steps[args.warmup:], trl_steps[args.warmup:], n_params, prompt_tokens)
    print_table(result)
    if args.json:
        write_json(args.json, result)
    return 0


def summarize(args, env, ours: list, trl: list, n_params: int, prompt_tokens: list) -> dict:
    def side(steps):
        phases = {name: statistics.median(s["phases"].get(name, 0.0) for s in steps) for name in PHASES}
        step_s = statistics.median(s["s"] for s in steps)
        # "other": the median of what each step spent outside the named phases
        phases["other"] = statistics.median(s["s"] - sum(s["phases"].values()) for s in steps)
        return {"step_s": step_s, "steps_s": [round(s["s"], 4) for s in steps], "phases_s": phases,
                "tokens_per_step": statistics.mean(s["tokens"] for s in steps),
                "pass_fraction": statistics.mean(s["pass"] for s in steps)}

    o, t = side(ours), side(trl)
    paired = statistics.median(b["s"] / a["s"] for a, b in zip(ours, trl))  # TRL time / our time, per pair
    P, G, T = args.prompts, args.group_size, args.new_tokens
    met = paired >= SPEED_BOUND
    biggest = max(PHASES, key=lambda k: o["phases_s"][k] - t["phases_s"][k])
    note = (f"our step is {o['step_s']:.2f} s vs TRL's {t['step_s']:.2f} s; the largest gap is "
            f"'{biggest}' ({o['phases_s'][biggest]:.3f} s vs {t['phases_s'][biggest]:.3f} s)")
    notes = []
    if o["phases_s"]["log-probs (no grad)"] > 0:
        what = "the reference's, as TRL's is" if args.beta > 0 else "the old policy's"
        notes.append(
            f"Our no-grad log-prob pass is {what}: {o['phases_s']['log-probs (no grad)']:.3f} s per step to TRL's "
            f"{t['phases_s']['log-probs (no grad)']:.3f} s. With one policy epoch neither side runs the old policy "
            "(the ratio is exp(logp - logp.detach())), and ours runs each prompt once per group (shared_prefix_loss)."
        )
    ours_loss = o["phases_s"]["forward (loss)"] + o["phases_s"]["backward"]
    trl_loss = t["phases_s"]["forward (loss)"] + t["phases_s"]["backward"]
    if trl_loss > ours_loss:
        notes.append(
            f"TRL's loss pass (forward + backward) takes {trl_loss:.2f} s to our {ours_loss:.2f} s: without Triton "
            "its fused LM head projects every position of prompt and completion (about "
            f"{statistics.mean(prompt_tokens) + T:.0f} per row here, where our per_token_logps keeps the {T + 1} "
            "that predict completion tokens, via logits_to_keep), and it computes per-token entropy for its logs. Ours "
            "also runs each prompt once per group of G, not once per row (shared_prefix_loss)."
        )
    command = ("python bench/rl_step_vs_trl.py" + (f" --beta {args.beta:g}" if args.beta else "")
               + (f" --loss-type {args.loss_type}" if args.loss_type != "grpo" else "") + " --json OUT.json")
    fig = figure(
        f"generator RL step, {P} prompts × G={G} × {T} tokens, beta {args.beta:g}, loss_type {args.loss_type} (s/step)",
        f"{o['step_s']:.2f} s", f"TRL {env.get('trl', '?')} GRPOTrainer: {t['step_s']:.2f} s",
        paired, f">= {SPEED_BOUND:g}× TRL's speed", met, command, "" if met else note,
    )
    check = loss_checks[0] if loss_checks else None
    agree = check is not None and check["abs_diff"] < LOSS_TOLERANCE and check["grad_rel_diff"] < LOSS_TOLERANCE
    loss_fig = figure(
        f"the loss of TRL's first batch from TRL's own loss inputs, loss_type {args.loss_type}",
        f"{check['ours']:.6g}" if check else "not measured", f"TRL: {check['trl']:.6g}" if check else "not measured",
        None, f"loss and gradient differ by < {LOSS_TOLERANCE:g}", agree, command,
        note=(f"gradients differ by {check['grad_rel_diff']:.1e} of their largest entry" if check else ""),
    )
    return {
        "environment": env,
        "setup": {
            "model": "tiny", "model_params": n_params, "prompts": P, "group_size": G, "new_tokens": T,
            "force_length": args.force_length, "beta": args.beta, "loss_type": args.loss_type, "lr": args.lr,
            "temperature": 1.0,
            "tiebreak": args.tiebreak, "threads": args.threads, "sandbox_workers": args.sandbox_workers,
            "trl_gradient_checkpointing": args.trl_gradient_checkpointing,
            "warmup_steps": args.warmup, "timed_steps": len(ours),
            "prompt_tokens_mean": statistics.mean(prompt_tokens),
        },
        "phase_order": list(PHASES) + ["other"],
        "ours": o,
        "trl": t,
        "trl_over_ours_paired_median": paired,
        "trl_over_ours_of_medians": t["step_s"] / o["step_s"],
        "notes": notes,
        "loss_check": check,
        "figures": [fig, loss_fig],
    }


def print_table(r: dict) -> None:
    o, t = r["ours"], r["trl"]
    print(f"\n{'phase (median s/step)':<24}{'ours':>9}{'TRL':>9}")
    for phase in r["phase_order"]:
        print(f"{phase:<24}{o['phases_s'][phase]:>9.3f}{t['phases_s'][phase]:>9.3f}")
    print(f"{'step':<24}{o['step_s']:>9.3f}{t['step_s']:>9.3f}")
    print(f"{'tokens/step':<24}{o['tokens_per_step']:>9.0f}{t['tokens_per_step']:>9.0f}")
    print(f"TRL time / our time: {r['trl_over_ours_paired_median']:.2f}x (median of pairs), "
          f"{r['trl_over_ours_of_medians']:.2f}x (of medians)")
    if r["loss_check"]:
        c = r["loss_check"]
        print(f"loss on TRL's first batch: ours {c['ours']:.6g}, TRL {c['trl']:.6g}; gradients with respect to the "
              f"log-probs differ by {c['grad_rel_diff']:.1e} of their largest entry")
    for n in r["notes"]:
        print("note:", n)


if __name__ == "__main__":
    sys.exit(main())
