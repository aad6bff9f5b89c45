"""Supervised warm-up of both players, before any RL.

- The generator imitates gold five-stage chains (each stage after the gold
  stages before it; with `chain_loss` the stages inside the prompt too).
- The discriminator's LM starts from the warmed-up generator where the two
  have the same architecture, and its test writer imitates reference tests.
- The scoring head learns gold stage texts (real) against the warmed-up
  generator's samples (fake), so that the first RL iterations of stages 1-4
  are not rewarded by a randomly initialised head.
"""

from __future__ import annotations

import math
import os
import random

import torch

from reasoning.stages import NUM_STAGES, build_prompt, build_test_prompt, get_stage
from training.data.mutation import mutated_calls
from training.data.problem import in_hashed_share
from training.errors import UserError
from training.losses import optimizer_step, scoring_head_step
from training.rollout import TESTS_PER_SAMPLE


class Warmup:
    """The warm-up of one run; `run()` returns its stats row."""

    def __init__(self, generator, discriminator, discriminator_optimizer, config, dist, log, labeller=None):
        self.generator = generator
        self.labeller = labeller  # extra_tests.Labeller: the reference's values for mutated calls (writer_examples=mutations)
        self.discriminator = discriminator
        # the scoring head's warm-up steps the run's own discriminator optimizer, so RL continues its moments
        self.discriminator_optimizer = discriminator_optimizer
        self.config = config
        self.dist = dist
        self.log = log

    def run(self, problems: list, test_problems: list) -> dict:
        """`problems` give the gold chains and reference tests; `test_problems` more reference tests."""
        before = torch.get_num_threads()
        if self.generator.device.type == "cpu":
            # no sandbox workers compete during warm-up: matrix multiplies may take every core
            cores = self.config.warmup.cpu_threads or max(1, usable_cores() // self.dist.world_size)
            torch.set_num_threads(cores)
        try:
            return self._run(problems, test_problems)
        finally:
            torch.set_num_threads(before)

    def _run(self, problems: list, test_problems: list) -> dict:
        config, wc = self.config, self.config.warmup
        with_gold = [p for p in problems if p.gold_stages]
        if not with_gold:
            raise UserError(f"warm-up needs problems with gold stages; {wc.problems} has none (set --warmup.enabled=false)")
        monitor = None
        if wc.stop != "steps":  # a validation slice that never trains watches the warm-up and stops it
            val = [p for p in with_gold if in_validation_slice(p.id, wc.val_share)]
            with_gold = [p for p in with_gold if not in_validation_slice(p.id, wc.val_share)]
            if not val or not with_gold:
                raise UserError(f"warmup.val_share={wc.val_share} leaves no validation or no training problems in {wc.problems}")
            monitor = WarmupMonitor(self.generator, val, config, self.dist, self.log)
        # one pool per stage, so that the share of code examples is a knob of its own
        pools = [[warmup_pair(p, k, wc.chain_loss) for p in with_gold] for k in range(1, NUM_STAGES + 1)]
        f5 = wc.stage5_fraction
        weights = [(1 - f5) / 4] * 4 + [f5]
        stats = {"warmup_generator_loss": self.supervised(self.generator, pools, weights, wc.steps, "warm-up generator",
                                                          monitor)}
        if monitor is not None:
            stats.update(monitor.summary())
        if config.use_discriminator and wc.discriminator_from_generator:
            stats["discriminator_from_generator"] = self.copy_generator_into_discriminator()
        if config.use_discriminator and wc.test_writer_steps > 0:
            examples = self.test_examples(problems, test_problems)
            stats["warmup_test_writer_loss"] = self.supervised(
                self.discriminator, [examples], [1.0], wc.test_writer_steps, "warm-up test writer"
            )
        if config.use_discriminator and wc.scoring_head_steps > 0 and config.judge.target == "gold":
            # (the outcome judge learns from labelled chains instead: judge.py)
            stats.update(self.scoring_head(problems, wc.scoring_head_steps))
        return stats

    def test_examples(self, problems: list, test_problems: list) -> list:
        """(prompt, asserts) pairs for the test writer, TESTS_PER_SAMPLE asserts each, as RL samples them.

        writer_examples=tests: the first `tests_per_problem` tests of each
        problem; the curriculum lists edge cases first (empty, zero, one
        element), whose expected values a small model can get right;
        imitating all 8 asserts, random inputs included, left 83% of its tests
        invalid. writer_examples=mutations: `tests_per_problem` calls made by
        mutating the arguments of the problem's tests, labelled by its
        reference solution, none a copy of one of those tests: a writer that
        never sees a reference test cannot learn to copy it. With
        `tests_from_training_problems` the RL training problems come too, so
        families without gold chains get tests of their own. Every problem
        here carries only the tests the run sees.
        """
        wc = self.config.warmup
        seen = {p.id for p in problems}
        extra = [p for p in test_problems if p.id not in seen] if wc.tests_from_training_problems else []
        sources = problems + extra
        if wc.writer_examples == "mutations":
            if self.labeller is None:
                raise UserError("warmup.writer_examples=mutations needs the sandbox to label the calls")
            rng = random.Random(f"{self.config.seed}:writer-warmup")
            calls = [mutated_calls(p.tests, p.entry_point, wc.tests_per_problem or 8, rng) for p in sources]
            tests_of = self.labeller.fresh(sources, calls)
        else:
            tests_of = [p.tests[: wc.tests_per_problem or None] for p in sources]
        examples = []
        for p, tests in zip(sources, tests_of):
            prompt = build_test_prompt(p.prompt, p.entry_point)
            examples += [(prompt, "\n".join(tests[i : i + TESTS_PER_SAMPLE])) for i in range(0, len(tests), TESTS_PER_SAMPLE)]
        if not examples:
            raise UserError("the test writer's warm-up found no example: no problem has a test the reference labels")
        return examples

    def copy_generator_into_discriminator(self) -> bool:
        """Start the discriminator's LM from the warmed-up generator when the two have the same shapes.

        A test writer that starts from a model that already writes Python for
        these problems learns valid asserts far sooner than one from scratch
        (the scoring head keeps its own weights). Returns whether it copied.
        """
        source = self.generator.model.state_dict()
        target = self.discriminator.model.state_dict()
        same = set(source) == set(target) and all(source[k].shape == target[k].shape for k in target)
        if not same:
            self.log.message("discriminator keeps its own weights: its architecture differs from the generator's")
            return False
        self.discriminator.model.load_state_dict(source)
        return True

    def scoring_head(self, problems: list, steps: int) -> dict:
        """Teach the scoring head gold stage texts (real) against the warmed-up generator's samples (fake)."""
        config, dist = self.config, self.dist
        rng = random.Random(config.seed + 2 + 1000 * dist.rank)
        with_gold = [p for p in problems if p.gold_stages]
        bar = self.log.progress_bar(steps, "warm-up scoring head")
        recent = []
        for _ in range(steps):
            k = rng.randint(1, 4)
            batch = [with_gold[rng.randrange(len(with_gold))] for _ in range(config.problems_per_batch)]
            with torch.no_grad(), dist.gathered(self.generator.model):
                ro = self.generator.sample(
                    [build_prompt(p.prompt, p.gold_stages[: k - 1], k) for p in batch],
                    max_new_tokens=config.max_new_tokens[k - 1], temperature=config.temperature,
                )
            fakes = [get_stage(k).extract(t) for t in ro.texts]
            stats = scoring_head_step(
                self.discriminator, self.discriminator_optimizer,
                [(p.prompt, p.gold_stages[: k - 1], k, p.gold_stages[k - 1]) for p in batch]
                + [(p.prompt, p.gold_stages[: k - 1], k, fake) for p, fake in zip(batch, fakes)],
                [1.0] * len(batch) + [0.0] * len(batch),
                dist, config.max_grad_norm,
            )
            recent = (recent + [stats.get("disc_accuracy", 0.0)])[-10:]
            bar.update(1)
            bar.set_postfix(accuracy=f"{sum(recent) / len(recent):.2f}")
        bar.close()
        return {"warmup_scoring_head_accuracy": sum(recent) / max(len(recent), 1)}

    def supervised(self, player, pools: list, weights: list, steps: int, desc: str, monitor=None) -> float:
        """Completion-only cross-entropy on (prompt, completion) pairs; each example's pool drawn by weight.

        A `monitor` (WarmupMonitor) is asked every warmup.eval_every steps whether to stop before `steps`.
        """
        config, dist, lr = self.config, self.dist, self.config.warmup.lr
        params = [p for p in player.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1)))
        )
        rng = random.Random(config.seed + 1 + 1000 * dist.rank)  # each rank its own examples
        bs = config.warmup.batch_size
        player.model.train()
        recent = []
        bar = self.log.progress_bar(steps, desc)
        for step in range(steps):
            chunk = [pool[rng.randrange(len(pool))] for pool in rng.choices(pools, weights=weights, k=bs)]
            optimizer.zero_grad(set_to_none=True)
            # one forward and backward per rank and step: under FSDP the per-layer collectives line up
            loss = player.sft_loss([p for p, _ in chunk], [c for _, c in chunk])
            loss.backward()
            dist.sync_gradients(player.model, params)
            optimizer_step(optimizer, params, dist, config.max_grad_norm)
            schedule.step()
            recent.append(loss.item())  # a CPU-GPU sync point, once per step is fine
            recent = recent[-20:]
            bar.update(1)
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}")
            if monitor is not None and (step + 1) % config.warmup.eval_every == 0 and monitor.check(step + 1):
                break
        bar.close()
        return sum(recent) / max(len(recent), 1)


class WarmupMonitor:
    """The generator's warm-up curve on a validation slice of the warm-up problems, and the rule that stops it.

    Each check logs (as a stage-0 row of metrics.jsonl) the slice's
    supervised loss and the mean token entropy of stage-5 code the generator
    samples for it at the run's temperature, after the gold stages 1-4. The
    slice never trains; nothing else is read (no evaluation problem).
    """

    def __init__(self, generator, problems: list, config, dist, log):
        self.generator, self.config, self.dist, self.log = generator, config, dist, log
        self.pairs = [warmup_pair(p, NUM_STAGES, False) for p in problems]  # the code stage, as RL samples it
        self.curve: list = []
        self.stopped_at = None

    def check(self, step: int) -> bool:
        model = self.generator.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self.dist.gathered(model):
                row = {"warmup_step": step, "warmup_val_loss": self.val_loss(), "warmup_code_entropy": self.code_entropy()}
        finally:
            model.train(was_training)
        self.curve.append(row)
        self.log.write({"stage": 0, **row})
        wc = self.config.warmup
        stop = should_stop([r["warmup_val_loss"] for r in self.curve], [r["warmup_code_entropy"] for r in self.curve],
                           wc.stop, wc.patience, wc.min_delta, wc.entropy_floor)
        stop = bool(self.dist.gather(stop)[0])  # rank 0's samples decide: every rank stops at the same step
        if stop:
            self.stopped_at = step
        return stop

    def val_loss(self) -> float:
        bs, total = self.config.warmup.batch_size, 0.0
        for i in range(0, len(self.pairs), bs):
            chunk = self.pairs[i:i + bs]
            total += self.generator.sft_loss([p for p, _ in chunk], [c for _, c in chunk]).item() * len(chunk)
        return total / len(self.pairs)

    def code_entropy(self) -> float:
        """Mean entropy (nats) per sampled token of softmax(logits / T), over the slice's code samples."""
        config = self.config
        rollout = self.generator.sample([p for p, _ in self.pairs], max_new_tokens=config.max_new_tokens[NUM_STAGES - 1],
                                        temperature=config.temperature)
        _, entropy = self.generator.per_token_logps(rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids,
                                                    rollout.completion_mask, temperature=config.temperature, with_entropy=True)
        tokens = rollout.completion_mask.sum()
        return float(entropy.sum() / tokens) if tokens else 0.0

    def summary(self) -> dict:
        """The stats row's part: the steps the generator trained, and the last check's figures."""
        last = self.curve[-1] if self.curve else {}
        return {"warmup_generator_steps": self.stopped_at or self.config.warmup.steps,
                **{k: v for k, v in last.items() if k != "warmup_step"}}


def should_stop(val_losses: list, entropies: list, rule: str, patience: int, min_delta: float, entropy_floor: float) -> bool:
    """Whether the warm-up stops after the latest check (`rule`: val_loss or entropy; steps never stops early).

    val_loss: none of the last `patience` checks fell below the best loss
    before them by a relative `min_delta`. entropy: the latest sampled-code
    entropy is at or below `entropy_floor`.
    """
    if rule == "entropy":
        return bool(entropies) and entropies[-1] <= entropy_floor
    if rule == "val_loss" and len(val_losses) > patience:
        best_before = min(val_losses[:-patience])
        return min(val_losses[-patience:]) > best_before * (1 - min_delta)
    return False


def in_validation_slice(problem_id: str, share: float) -> bool:
    """A fixed share of problems, by a hash of the id: the same slice on every rank and every run.

    Salted, so that it is independent of the judge's held-out slice.
    """
    return in_hashed_share(problem_id, share, salt="warmup-validation/")


def warmup_pair(problem, stage_id: int, chain_loss: bool) -> tuple:
    """(prompt, completion) of one warm-up example: gold stage `stage_id` after the gold stages before it.

    With `chain_loss` the split moves back to the end of the problem statement,
    so the gold stages 1..k-1 that the prompt carries are supervised too. The
    forward pass covers them anyway; the loss on them is free supervision, and
    it is where a small model sees each stage copy names and constants from the
    one before.
    """
    prompt = build_prompt(problem.prompt, problem.gold_stages[: stage_id - 1], stage_id)
    completion = (problem.gold_stages + [problem.reference_solution])[stage_id - 1]
    head, placeholder, _ = get_stage(stage_id).generator_prompt_template.partition("{previous_stages}")
    if not chain_loss or not placeholder:
        return prompt, completion
    head = head.format(problem=problem.prompt.strip())  # build_prompt's own template: `prompt` starts with it
    return head, prompt[len(head):] + completion


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not every core of the host."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
