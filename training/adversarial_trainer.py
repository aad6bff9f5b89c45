"""AdversarialTrainer: the generator and the discriminator trained against each other.

One RL iteration of stage k, in named steps (DESIGN.md, "The algorithm"):

    batch   = rollout(stage_id, problems)     # G samples of stage k per problem
    rewards = score(batch)                    # registry of reward functions
    adv     = compute_advantages(rewards)     # group-relative, zero-spread groups skipped
    update_generator(batch, adv)              # clipped PG over completion tokens + KL
    update_discriminator(batch)               # BCE scoring head; CURE test writer at stage 5

Prefixes (stages 1..k-1) come from the generator's own greedy outputs; they
are computed once per problem per stage and cached, since training stage k
barely moves the earlier stages. The KL reference is a frozen copy of the
generator taken at the start of each stage, which also makes a resumed run
rebuild it exactly.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from reasoning.stages import build_prompt, build_test_prompt, extract_tests, get_stage
from training import checkpoint as ckpt
from training.chains import generate_chains
from training.config import TrainingConfig
from training.build import spread
from training.distributed import Distributed
from training.errors import UserError
from training.metrics import MetricsLog
from training.rewards import REWARDS, RewardBatch, combine, cure_test_rewards, runnable, writer_sample_reward


TESTS_PER_SAMPLE = 3  # asserts per test-writer sample (warm-up examples have the same size)


@dataclass
class StageBatch:
    """One rollout of stage k: G completions for each of B problems, prompt-major."""

    stage_id: int
    problems: list  # B problems
    group_size: int
    prefixes: list  # B lists of stages 1..k-1
    rollout: object  # models' Rollout for the N = B*G completions
    completions: list  # N extracted stage texts
    rewards: list = field(default_factory=list)  # N floats in [0, 1]
    terms: dict = field(default_factory=dict)  # name -> N values (None = not applicable)
    # Stage 5 only:
    reference_results: list = field(default_factory=list)  # N lists of bool
    test_batch: object = None  # the test writer's rollout and CURE data

    def per_completion(self, values: list) -> list:
        return [v for v in values for _ in range(self.group_size)]


@dataclass
class TestBatch:
    """The discriminator's tests for a stage-5 batch, and what they caught."""

    rollout: object  # Rollout of T test samples per problem
    samples_per_problem: int
    tests: list  # per problem: unique tests pooled from its samples
    sample_tests: list  # per sample: its tests
    passes_reference: list  # per problem: list[bool] per pooled test
    candidate_results: list = field(default_factory=list)  # per problem: G lists of bool per pooled test


class AdversarialTrainer:
    def __init__(self, generator, discriminator, sandbox, config: TrainingConfig, distributed: Distributed | None = None):
        self.dist = distributed or Distributed()
        self.generator = generator
        self.discriminator = discriminator
        self.sandbox = sandbox
        self.config = config
        self.device = generator.device
        self.rng = random.Random(config.seed)
        if self.dist.enabled:
            # same weights everywhere (the scoring head is initialised from each rank's RNG),
            # then different samples on each rank
            self.dist.broadcast_parameters(generator.model)
            for module in self._discriminator_modules():
                self.dist.broadcast_parameters(module)
            # FSDP launches shard the LMs here, before the optimizers take their parameters
            self.dist.prepare_model(generator.model)
            self.dist.prepare_model(discriminator.model)
            torch.manual_seed(config.seed + 1000 * self.dist.rank)
            if config.problems_per_batch < self.dist.world_size:
                raise UserError(
                    f"problems_per_batch={config.problems_per_batch} is smaller than the {self.dist.world_size} processes; "
                    "give every process at least one problem"
                )
        self.generator_optimizer = torch.optim.AdamW(
            [p for p in generator.model.parameters() if p.requires_grad], lr=config.generator_lr_at(1), weight_decay=0.0
        )
        self.discriminator_optimizer = torch.optim.AdamW(
            [p for p in self._discriminator_parameters() if p.requires_grad], lr=config.discriminator_lr, weight_decay=0.0
        )
        self.reference_model = None
        self.reward_fns = {name: factory(self) for name, factory in REWARDS.items()}
        self.reward_weights = {name: getattr(config.rewards, name) for name in REWARDS}
        if not config.use_discriminator:  # the ablation: execution reward only
            self.reward_weights["discriminator"] = 0.0
            self.reward_weights["discriminator_tests"] = 0.0
        self.global_step = 0
        self.completed_stage = 0  # last stage whose checkpoint exists (0 = none, or warm-up only)
        self.best_reward = -math.inf
        self.warmed_up = False
        self.start_time = time.time()
        self.log = MetricsLog(config.checkpoint_dir, enabled=self.dist.is_main, progress=config.progress)
        self._prefix_cache: dict = {}
        self.family_spread: dict = {}  # family -> running share of its groups with reward spread

    # ================================================================== public API
    def train(self, problems: list, eval_problems: list | None = None) -> dict:
        """Warm-up (unless done or disabled), every configured stage after the last completed one, then final/."""
        self._check_problems(problems)
        ckpt.clean_stale(self.config.checkpoint_dir)
        if self.config.warmup.enabled and not self.warmed_up and self.completed_stage == 0:
            self.warmup(test_problems=problems)
            metrics = {"warmup": True}
            if eval_problems:
                metrics["eval"] = self.evaluate(eval_problems)
                self.log.message(f"warm-up: held-out pass@1 {metrics['eval']['pass_at_1']:.3f}")
            self.save_checkpoint(os.path.join(self.config.checkpoint_dir, "warmup"), 0, metrics)
        last_metrics = {}
        for stage_id in self.config.stages:
            if stage_id <= self.completed_stage:
                continue
            last_metrics = self.train_stage(stage_id, problems, eval_problems=eval_problems)
        self.save_final(last_metrics)
        return last_metrics

    def train_stage(self, stage_id: int, problems: list, eval_problems: list | None = None) -> dict:
        """RL iterations of one stage, then stage_N/ (and best/ when the reward improved)."""
        get_stage(stage_id)
        self._check_problems(problems)
        config = self.config
        self._prefix_cache.clear()
        self.family_spread.clear()  # spread at stages 1-4 (discriminator scores) says nothing about stage 5
        _set_lr(self.generator_optimizer, config.generator_lr_at(stage_id))
        self.reference_model = self._make_reference() if config.kl_beta > 0 else None
        stage_start = time.time()
        order = self._problem_order(problems)
        history = []
        iterations = config.iterations(stage_id)
        bar = self.log.progress_bar(iterations, f"stage {stage_id}")
        for iteration in range(iterations):
            t0 = time.time()
            if config.problem_sampling == "informative":
                global_batch = self._informative_batch(problems, config.problems_per_batch)
            else:
                global_batch = [order[(iteration * config.problems_per_batch + i) % len(order)] for i in range(config.problems_per_batch)]
            batch_problems = self.dist.shard(global_batch)
            row = {"stage": stage_id, "iteration": iteration}
            for _ in range(config.generator_steps):
                timings = {}
                batch = self._timed(timings, "rollout", self.rollout, stage_id, batch_problems)
                self._timed(timings, "score", self.score, batch)
                advantages, valid, frac_zero = self.compute_advantages(batch.rewards, batch.group_size)
                self._note_spread(batch, valid)
                stats = self._timed(timings, "update_generator", self.update_generator, batch, advantages, valid)
                self.global_step += 1
            row.update(self._batch_stats(batch), frac_reward_zero_std=frac_zero, **stats)
            if config.use_discriminator:
                for _ in range(config.discriminator_steps):
                    row.update(self._timed(timings, "update_discriminator", self.update_discriminator, batch))
            row.update({f"time_{k}": v for k, v in timings.items()}, time_iteration=time.time() - t0, global_step=self.global_step)
            if self.device.type == "cuda":
                # the high-water mark since the run began: what a GPU must hold for this config
                row["gpu_peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
            row = _mean_rows(self.dist.gather(row))
            history.append(row)
            if iteration % config.log_every == 0 or iteration == iterations - 1:
                self.log.write(row)
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward']:.3f}", pass_rate=f"{row.get('pass_rate', float('nan')):.2f}")
        bar.close()
        metrics = self._stage_metrics(stage_id, history, time.time() - stage_start)
        if eval_problems:
            metrics["eval"] = self.evaluate(eval_problems)
            metrics["generator"]["pass_rate"] = metrics["eval"]["pass_at_1"]
        self.log.message(
            f"stage {stage_id}: avg reward {metrics['generator']['avg_reward']:.3f}, "
            f"pass rate {metrics['generator']['pass_rate']:.3f}"
        )
        self.completed_stage = stage_id
        stage_dir = os.path.join(config.checkpoint_dir, f"stage_{stage_id}")
        self.save_checkpoint(stage_dir, stage_id, metrics)
        # avg_reward mixes scales across stages (discriminator probabilities at 1-4,
        # execution at 5); best_metric=pass_rate compares held-out pass@1 instead
        score = metrics["generator"][config.best_metric]
        if score > self.best_reward:
            self.best_reward = score
            if self.dist.is_main:
                ckpt.link_or_copy_dir(stage_dir, os.path.join(config.checkpoint_dir, "best"))
        if config.plot:
            self.log.plot(os.path.join(config.checkpoint_dir, f"stage_{stage_id}.png"))
        self.reference_model = None
        return metrics

    # ====================================================================== warm-up
    def warmup(self, problems: list | None = None, test_problems: list | None = None) -> dict:
        """Supervised warm-up: the generator on gold chains, the test writer on reference tests.

        `problems` (default: the config's `warmup.problems`) give the gold chains
        and reference tests; with `warmup.tests_from_training_problems` the test
        writer also imitates the reference tests of `test_problems` (`train`
        passes its training problems).
        """
        before = torch.get_num_threads()
        if self.device.type == "cpu":
            # no sandbox workers compete during warm-up: matrix multiplies may take every core
            cores = self.config.warmup.cpu_threads or max(1, _usable_cores() // self.dist.world_size)
            torch.set_num_threads(cores)
        try:
            return self._warmup(problems, test_problems or [])
        finally:
            torch.set_num_threads(before)

    def _warmup(self, problems: list | None, test_problems: list) -> dict:
        from training.build import load_run_problems

        wc = self.config.warmup
        problems = problems if problems is not None else load_run_problems(wc.problems, self.config)
        # one pool per stage, so that the share of code examples is a knob of its own
        pools = [
            [_warmup_pair(p, k, wc.chain_loss) for p in problems if p.gold_stages]
            for k in range(1, 6)
        ]
        if not pools[0]:
            raise UserError(f"warm-up needs problems with gold stages; {wc.problems} has none (set --warmup.enabled=false)")
        f5 = wc.stage5_fraction
        weights = [(1 - f5) / 4] * 4 + [f5]
        gen_loss = self._supervised(self.generator, pools, weights, wc.steps, wc.lr, "warm-up generator")
        stats = {"warmup_generator_loss": gen_loss}
        if self.config.use_discriminator and wc.discriminator_from_generator:
            stats["discriminator_from_generator"] = self._copy_generator_into_discriminator()
        if self.config.use_discriminator and wc.discriminator_steps > 0:
            # a handful of asserts per example, as the test writer samples them in RL. Only the
            # first few tests of each problem by default: the curriculum lists edge cases first
            # (empty, zero, one element), whose expected values a small model can get right;
            # imitating all 8 asserts, random inputs included, left 83% of its tests invalid.
            # the RL training problems too: families without gold chains get tests of their own
            seen = {p.id for p in problems}
            extra = [p for p in test_problems if p.id not in seen] if wc.tests_from_training_problems else []
            test_examples = []
            for p in problems + extra:
                tests = p.tests[: wc.tests_per_problem or None]
                prompt = build_test_prompt(p.prompt, p.entry_point)
                test_examples += [(prompt, "\n".join(tests[i : i + TESTS_PER_SAMPLE])) for i in range(0, len(tests), TESTS_PER_SAMPLE)]
            stats["warmup_test_writer_loss"] = self._supervised(
                self.discriminator, [test_examples], [1.0], wc.discriminator_steps, wc.lr, "warm-up test writer"
            )
        if self.config.use_discriminator and wc.scoring_head_steps > 0:
            stats.update(self._warmup_scoring_head(problems, wc.scoring_head_steps))
        self.warmed_up = True
        self.log.write({"stage": 0, **stats, "global_step": self.global_step})
        return stats

    def _copy_generator_into_discriminator(self) -> bool:
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

    def _warmup_scoring_head(self, problems: list, steps: int) -> dict:
        """Teach the scoring head gold stage texts (real) against the warmed-up generator's samples (fake).

        Without it the stage 1-4 reward of the first RL iterations is the opinion of
        a randomly initialised head, and the generator learns that noise.
        """
        rng = random.Random(self.config.seed + 2 + 1000 * self.dist.rank)
        with_gold = [p for p in problems if p.gold_stages]
        bar = self.log.progress_bar(steps, "warm-up scoring head")
        recent = []
        for _ in range(steps):
            k = rng.randint(1, 4)
            batch = [with_gold[rng.randrange(len(with_gold))] for _ in range(self.config.problems_per_batch)]
            with torch.no_grad(), self.dist.gathered(self.generator.model):
                ro = self.generator.sample(
                    [build_prompt(p.prompt, p.gold_stages[: k - 1], k) for p in batch],
                    max_new_tokens=self.config.max_new_tokens[k - 1], temperature=self.config.temperature,
                )
            fakes = [get_stage(k).extract(t) for t in ro.texts]
            stats = self._scoring_head_step(
                [(p.prompt, p.gold_stages[: k - 1], k, p.gold_stages[k - 1]) for p in batch]
                + [(p.prompt, p.gold_stages[: k - 1], k, fake) for p, fake in zip(batch, fakes)],
                [1.0] * len(batch) + [0.0] * len(batch),
            )
            recent = (recent + [stats.get("disc_accuracy", 0.0)])[-10:]
            bar.update(1)
            bar.set_postfix(accuracy=f"{sum(recent) / len(recent):.2f}")
        bar.close()
        return {"warmup_scoring_head_accuracy": sum(recent) / max(len(recent), 1)}

    def _supervised(self, player, pools: list, weights: list, steps: int, lr: float, desc: str) -> float:
        """Completion-only cross-entropy on (prompt, completion) pairs; each example's pool drawn by weight."""
        params = [p for p in player.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1)))
        )
        rng = random.Random(self.config.seed + 1 + 1000 * self.dist.rank)  # each rank its own examples
        bs = self.config.warmup.batch_size
        player.model.train()
        recent = []
        bar = self.log.progress_bar(steps, desc)
        for step in range(steps):
            chunk = []
            for pool in rng.choices(pools, weights=weights, k=bs):
                chunk.append(pool[rng.randrange(len(pool))])
            optimizer.zero_grad(set_to_none=True)
            # one forward and backward per rank and step: under FSDP the per-layer collectives line up
            loss = player.sft_loss([p for p, _ in chunk], [c for _, c in chunk])
            loss.backward()
            self.dist.sync_gradients(player.model, params)
            self._optimizer_step(optimizer, params)
            schedule.step()
            recent.append(loss.item())  # a CPU-GPU sync point, once per step is fine
            recent = recent[-20:]
            bar.update(1)
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}")
        bar.close()
        return sum(recent) / max(len(recent), 1)

    # ====================================================================== rollout
    def rollout(self, stage_id: int, problems: list) -> StageBatch:
        """Sample G candidate outputs of stage k for each problem, after its own prefix."""
        config = self.config
        prefixes = self.prefixes(problems, stage_id)
        prompts = [build_prompt(p.prompt, prefix, stage_id) for p, prefix in zip(problems, prefixes)]
        self.generator.model.eval()
        with torch.no_grad(), self.dist.gathered(self.generator.model):
            ro = self.generator.sample(
                prompts,
                num_samples=config.group_size,
                max_new_tokens=config.max_new_tokens[stage_id - 1],
                temperature=config.temperature,
                top_p=config.top_p,
            )
        stage = get_stage(stage_id)
        return StageBatch(
            stage_id=stage_id,
            problems=problems,
            group_size=config.group_size,
            prefixes=prefixes,
            rollout=ro,
            completions=[stage.extract(t) for t in ro.texts],
        )

    def prefixes(self, problems: list, stage_id: int) -> list:
        """The generator's own greedy stages 1..k-1 for each problem (cached for the stage)."""
        if stage_id == 1:
            return [[] for _ in problems]
        missing = [p for p in problems if (p.id, stage_id) not in self._prefix_cache]
        if missing:
            chains = self.generate_chains(missing, upto=stage_id - 1)
            for p, chain in zip(missing, chains):
                self._prefix_cache[(p.id, stage_id)] = chain
        return [self._prefix_cache[(p.id, stage_id)] for p in problems]

    def generate_chains(self, problems: list, upto: int = 5, start: list | None = None) -> list:
        """Greedy stages len(start)+1..upto for each problem, with this run's token budgets."""
        with self.dist.gathered(self.generator.model):
            return generate_chains(
                self.generator, [p.prompt for p in problems], self.config.max_new_tokens, upto=upto, start=start
            )

    # ======================================================================== score
    def score(self, batch: StageBatch) -> list:
        """Fill batch.rewards (N floats in [0, 1]) and batch.terms from the reward registry."""
        problems = batch.per_completion(batch.problems)
        reward_batch = RewardBatch(
            stage_id=batch.stage_id,
            problems=problems,
            prefixes=batch.per_completion(batch.prefixes),
            completions=batch.completions,
        )
        if batch.stage_id == 5:
            self._execute_stage5(batch)
            reward_batch.reference_results = batch.reference_results
            reward_batch.discriminator_results = self._valid_test_results(batch)
        elif self.reward_weights.get("lookahead", 0) > 0:
            reward_batch.lookahead_pass = self._lookahead(batch)
        terms = {}
        for name, fn in self.reward_fns.items():
            if self.reward_weights.get(name, 0) > 0:
                values = fn(reward_batch)
                if any(v is not None for v in values):  # keep only the terms that apply here
                    terms[name] = values
        batch.terms = terms
        batch.rewards = combine(terms, self.reward_weights, len(batch.completions))
        return batch.rewards

    def discriminator_scores(self, items: list) -> list:
        """Probabilities from the scoring head, no gradient."""
        self.discriminator.model.eval()
        with torch.no_grad(), self.dist.gathered(self.discriminator.model):
            logits = self.discriminator.score_batch(items)
        return torch.sigmoid(logits.float()).tolist()

    def _execute_stage5(self, batch: StageBatch) -> None:
        """Run each candidate on the reference tests and on the discriminator's tests."""
        G = batch.group_size
        tests_batch = self._write_tests(batch.problems) if self.config.use_discriminator else None
        jobs = []
        for b, problem in enumerate(batch.problems):
            extra = tests_batch.tests[b] if tests_batch else []
            for g in range(G):
                jobs.append((batch.completions[b * G + g], list(problem.tests) + extra, problem.entry_point))
        results = self.sandbox.run_batch(jobs)
        batch.reference_results = []
        if tests_batch:
            tests_batch.candidate_results = [[] for _ in batch.problems]
        for n, result in enumerate(results):
            problem_index = n // G
            n_ref = len(batch.problems[problem_index].tests)
            outcome = _padded(result.test_results, len(jobs[n][1]))
            batch.reference_results.append(outcome[:n_ref])
            if tests_batch:
                tests_batch.candidate_results[problem_index].append(outcome[n_ref:])
        batch.test_batch = tests_batch

    def _write_tests(self, problems: list) -> TestBatch:
        """The test writer samples T completions per problem; pooled tests are checked on the reference."""
        T = max(2, self.config.num_generated_tests)
        prompts = [build_test_prompt(p.prompt, p.entry_point) for p in problems]
        self.discriminator.model.eval()
        with torch.no_grad(), self.dist.gathered(self.discriminator.model):
            ro = self.discriminator.sample(prompts, num_samples=T, max_new_tokens=96, temperature=self.config.test_temperature)
        sample_tests, pooled = [], []
        for b, problem in enumerate(problems):
            pool = []
            for t in range(T):
                tests, _dropped = extract_tests(ro.texts[b * T + t], problem.entry_point)
                tests = tests[:TESTS_PER_SAMPLE]  # one sample is a handful of asserts, not a whole file
                sample_tests.append(tests)
                pool.extend(x for x in tests if x not in pool)
            pooled.append(pool)
        validation = self.sandbox.run_batch([(p.reference_solution, pool, p.entry_point) for p, pool in zip(problems, pooled) if pool])
        passes_reference, it = [], iter(validation)
        for pool in pooled:
            passes_reference.append(_padded(next(it).test_results, len(pool)) if pool else [])
        return TestBatch(rollout=ro, samples_per_problem=T, tests=pooled, sample_tests=sample_tests, passes_reference=passes_reference)

    def _valid_test_results(self, batch: StageBatch) -> list:
        """Per completion, its results on the discriminator tests that the reference passes."""
        tb = batch.test_batch
        if tb is None:
            return [[] for _ in batch.completions]
        out = []
        for b in range(len(batch.problems)):
            valid = tb.passes_reference[b]
            for row in tb.candidate_results[b]:
                out.append([r for r, ok in zip(row, valid) if ok])
        return out

    def _lookahead(self, batch: StageBatch) -> list:
        """Complete each candidate's chain greedily to code and run the reference tests."""
        problems = batch.per_completion(batch.problems)
        starts = [prefix + [text] for prefix, text in zip(batch.per_completion(batch.prefixes), batch.completions)]
        chains = self.generate_chains(problems, upto=5, start=starts)
        results = self.sandbox.run_batch([(c[-1], p.tests, p.entry_point) for c, p in zip(chains, problems)])
        return [_fraction(_padded(r.test_results, len(p.tests))) for r, p in zip(results, problems)]

    # =================================================================== advantages
    @staticmethod
    def compute_advantages(rewards: list, group_size: int, eps: float = 1e-4):
        """Group-relative advantages; groups with zero spread are masked out and counted.

        Returns (advantages (N,), valid (N,) bool, frac_reward_zero_std).
        """
        r = torch.tensor(rewards, dtype=torch.float32).view(-1, group_size)  # (B, G)
        mean = r.mean(dim=1, keepdim=True)
        std = r.std(dim=1, keepdim=True, unbiased=False)
        zero = std.squeeze(1) < 1e-6  # (B,)
        advantages = ((r - mean) / (std + eps)).view(-1)  # (N,)
        valid = (~zero).repeat_interleave(group_size)  # (N,)
        advantages = torch.where(valid, advantages, torch.zeros_like(advantages))
        return advantages, valid, zero.float().mean().item()

    # ============================================================== generator update
    def update_generator(self, batch: StageBatch, advantages: torch.Tensor, valid: torch.Tensor) -> dict:
        """Clipped policy gradient over completion tokens, KL to the frozen reference."""
        stats = {"kl": 0.0, "policy_loss": 0.0, "grad_norm": 0.0}
        keep = valid.nonzero().flatten().tolist()
        total_keep = self.dist.sum(len(keep))  # over all ranks
        if total_keep == 0:  # every group had zero spread: nothing to learn from
            return stats
        # each rank's loss is its share of the global mean; averaging the gradients
        # over ranks divides by world_size again, so scale it back up
        norm = total_keep / self.dist.world_size
        ro = batch.rollout
        beta = self.config.kl_beta
        model = self.generator.model
        with torch.no_grad(), self.dist.gathered(model):
            # log-probs under the sampling distribution, softmax(logits / T), like the samples
            T = self.config.temperature
            # With one pass over fresh samples the policy is the sampling policy, so the
            # ratio is exp(logp - logp.detach()) == 1 and no extra forward pass is needed.
            old_logps = self._logps(self.generator, ro, keep, model, T) if self.config.policy_epochs > 1 else None
            ref_logps = self._logps(self.generator, ro, keep, self.reference_model, T) if self.reference_model is not None else None
        params = [p for p in model.parameters() if p.requires_grad]
        model.train()
        kl_sum = loss_sum = 0.0
        for _epoch in range(self.config.policy_epochs):
            self.generator_optimizer.zero_grad(set_to_none=True)
            with self.dist.gathered(model):  # FSDP: ranks run different numbers of micro-batches
                for c, idx in enumerate(self._chunks(keep)):
                    completion_mask = ro.completion_mask[idx].to(self.device).float()  # (n, C)
                    per_token_logps = self.generator.per_token_logps(
                        ro.prompt_ids[idx].to(self.device), ro.prompt_mask[idx].to(self.device),
                        ro.completion_ids[idx].to(self.device), ro.completion_mask[idx].to(self.device), temperature=T,
                    )  # (n, C)
                    adv = advantages[idx].to(self.device).unsqueeze(1)  # (n, 1)
                    old = old_logps[c] if old_logps is not None else per_token_logps.detach()
                    ratio = torch.exp(per_token_logps - old)  # (n, C)
                    clipped = torch.clamp(ratio, 1 - self.config.clip_range, 1 + self.config.clip_range)
                    per_token_loss = -torch.min(ratio * adv, clipped * adv)  # (n, C)
                    if ref_logps is not None:
                        delta = ref_logps[c] - per_token_logps
                        per_token_kl = torch.exp(delta) - delta - 1  # (n, C), k3 estimator, >= 0
                        per_token_loss = per_token_loss + beta * per_token_kl
                        kl_sum += _masked_mean_per_seq(per_token_kl.detach(), completion_mask).sum().item()
                    seq_loss = _masked_mean_per_seq(per_token_loss, completion_mask)  # (n,)
                    loss = seq_loss.sum() / norm
                    loss.backward()
                    loss_sum += loss.item()
                self.dist.sync_gradients(model, params)
            grad_norm = self._optimizer_step(self.generator_optimizer, params)
        epochs = self.config.policy_epochs
        stats.update(kl=kl_sum / max(len(keep), 1) / epochs, policy_loss=loss_sum / epochs, grad_norm=float(grad_norm))
        return stats

    def _logps(self, player, ro, keep: list, model, temperature: float) -> list:
        out = []
        for idx in self._chunks(keep):
            out.append(
                player.per_token_logps(
                    ro.prompt_ids[idx].to(self.device), ro.prompt_mask[idx].to(self.device),
                    ro.completion_ids[idx].to(self.device), ro.completion_mask[idx].to(self.device),
                    model=model, temperature=temperature,
                ).detach()
            )
        return out

    def _chunks(self, keep: list) -> list:
        size = max(1, self.config.micro_batch_size)
        return [torch.tensor(keep[i : i + size]) for i in range(0, len(keep), size)]

    # ========================================================== discriminator update
    def update_discriminator(self, batch: StageBatch) -> dict:
        """Scoring head on reference vs generated stage texts; the test writer at stage 5."""
        stats = {}
        if batch.stage_id < 5:
            stats.update(self._update_scoring_head(batch))
        elif batch.test_batch is not None:
            stats.update(self._update_test_writer(batch))
        return stats

    def _update_scoring_head(self, batch: StageBatch) -> dict:
        """Balanced BCE: each problem with a gold text gives one real and one generated example."""
        k, G = batch.stage_id, batch.group_size
        items, labels = [], []
        for b, problem in enumerate(batch.problems):
            if not problem.gold_stages:
                continue
            fake = batch.completions[b * G + self.rng.randrange(G)]
            items.append((problem.prompt, batch.prefixes[b], k, problem.gold_stages[k - 1]))
            items.append((problem.prompt, batch.prefixes[b], k, fake))
            labels += [1.0, 0.0]
        return self._scoring_head_step(items, labels)

    def _scoring_head_step(self, items: list, labels: list) -> dict:
        """One BCE step of the scoring head (and the LM under it) on labelled stage outputs."""
        if self.dist.sum(len(items)) == 0:
            return {}
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        stats = {}
        with self.dist.gathered(self.discriminator.model):
            if items:
                self.discriminator.model.train()
                logits = self.discriminator.score_batch(items, grad=True).float()  # (2M,)
                target = torch.tensor(labels, device=logits.device)
                loss = F.binary_cross_entropy_with_logits(logits, target)
                loss.backward()
                accuracy = ((logits.detach() > 0).float() == target).float().mean().item()
                stats = {"disc_loss": loss.item(), "disc_accuracy": accuracy}
            self._discriminator_step()
        return stats

    def _update_test_writer(self, batch: StageBatch) -> dict:
        """Policy gradient on test samples with the CURE reward (mean over a sample's tests)."""
        tb, G = batch.test_batch, batch.group_size
        T = tb.samples_per_problem
        sample_rewards = []
        for b in range(len(batch.problems)):
            wrong = [
                g for g in range(G)
                if runnable(batch.completions[b * G + g]) and not all(batch.reference_results[b * G + g])
            ]
            per_test = cure_test_rewards(
                tb.passes_reference[b], [tb.candidate_results[b][g] for g in wrong], self.config.invalid_test_penalty
            )
            reward_of = dict(zip(tb.tests[b], per_test))
            for t in range(T):
                tests = tb.sample_tests[b * T + t]
                sample_rewards.append(writer_sample_reward([reward_of[x] for x in tests], self.config.test_writer_reward))
        advantages, valid, _ = self.compute_advantages(sample_rewards, T)
        keep = valid.nonzero().flatten().tolist()
        stats = {"test_writer_reward": sum(sample_rewards) / len(sample_rewards)}
        total_keep = self.dist.sum(len(keep))
        if total_keep == 0:
            return stats
        norm = total_keep / self.dist.world_size
        ro = tb.rollout
        self.discriminator.model.train()
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        with self.dist.gathered(self.discriminator.model):  # FSDP: ranks run different numbers of micro-batches
            for idx in self._chunks(keep):
                per_token_logps = self.discriminator.per_token_logps(
                    ro.prompt_ids[idx].to(self.device), ro.prompt_mask[idx].to(self.device),
                    ro.completion_ids[idx].to(self.device), ro.completion_mask[idx].to(self.device),
                    temperature=self.config.test_temperature,
                )  # (n, C)
                mask = ro.completion_mask[idx].to(self.device).float()
                adv = advantages[idx].to(self.device).unsqueeze(1)  # (n, 1)
                # one gradient step on fresh samples: ratio == 1, so the clipped loss is plain REINFORCE
                loss = (_masked_mean_per_seq(-per_token_logps * adv, mask)).sum() / norm
                loss.backward()
            self._discriminator_step()
        return stats

    def _discriminator_step(self) -> None:
        """Synchronise the discriminator's gradients (inside its `gathered` block), clip, step."""
        params = [p for p in self._discriminator_parameters() if p.requires_grad]
        self.dist.sync_gradients(self.discriminator.model, params)
        self._optimizer_step(self.discriminator_optimizer, params)

    def _optimizer_step(self, optimizer, params: list) -> torch.Tensor:
        """Clip the (already averaged) gradients, step, and free them; returns the norm before clipping."""
        grad_norm = self.dist.clip_grad_norm(params, self.config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # no gradients held through rollouts
        return grad_norm

    def _discriminator_modules(self) -> list:
        head = getattr(self.discriminator, "score_head", None)
        return [self.discriminator.model] + ([head] if head is not None else [])

    def _discriminator_parameters(self) -> list:
        return [p for module in self._discriminator_modules() for p in module.parameters()]

    # ==================================================================== evaluation
    def evaluate(self, problems: list) -> dict:
        """Greedy five-stage chains scored like `python -m training.evaluate`: pass@1 and test pass rate.

        Curriculum problems are also reported per family group (sft, rl_only,
        heldout), since warm-up saturates the groups it has seen.
        """
        from training.curriculum import GROUPS
        from training.evaluate import evaluate_samples

        problems = spread(problems, self.config.eval_size)
        mine = self.dist.shard(problems)
        chains = self.generate_chains(mine, upto=5)
        report = evaluate_samples(mine, [[c[-1]] for c in chains], self.sandbox, ks=(1,))
        groups = {family: group for group, families in GROUPS.items() for family in families}
        local = [(groups.get(p.family), row["c"] > 0, row["test_pass_rate"]) for p, row in zip(mine, report["problems"])]
        rows = [r for part in self.dist.gather(local) for r in part]
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

    # ================================================================== checkpoints
    def save_checkpoint(self, path: str, stage_id: int, metrics: dict) -> None:
        """Write generator.pt, discriminator.pt and metrics.json into `path`, atomically (main process writes).

        Every rank calls it: under FSDP the weights and optimizer state are gathered whole first.
        """
        states = self.dist.full([
            self.generator.model_state_dict(), self.generator_optimizer.state_dict(),
            self.discriminator.model_state_dict(), self.discriminator_optimizer.state_dict(),
        ])
        if not self.dist.is_main:
            return
        config = self.config
        metrics = dict(metrics)
        metrics.setdefault("stage_id", stage_id)
        common = {
            "stage_id": stage_id,
            "metrics": _plain(metrics),
            "step": self.global_step,
            "config": config.to_dict(),
            "rng_state": _rng_state(self.rng),
            "best_reward": self.best_reward if math.isfinite(self.best_reward) else None,
        }
        gen = {
            **common,
            **_player_info(self.generator),
            "model_state_dict": states[0],
            "optimizer_state_dict": states[1],
        }
        disc = {
            **common,
            **_player_info(self.discriminator),
            "model_state_dict": states[2],
            "optimizer_state_dict": states[3],
        }

        def write(tmp):
            ckpt.save_torch(gen, os.path.join(tmp, ckpt.GENERATOR_FILE))
            ckpt.save_torch(disc, os.path.join(tmp, ckpt.DISCRIMINATOR_FILE))
            ckpt.save_json(_plain(metrics), os.path.join(tmp, ckpt.METRICS_FILE))

        ckpt.write_dir_atomically(path, write)

    def save_final(self, metrics: dict) -> None:
        """final/: the last stage's weights (hard-linked), its metrics, and the full config."""
        config = self.config
        final = os.path.join(config.checkpoint_dir, "final")
        source = os.path.join(config.checkpoint_dir, f"stage_{self.completed_stage}")
        if not self.dist.gather(os.path.isdir(source))[0]:  # rank 0's view: every rank takes one branch
            self.save_checkpoint(final, self.completed_stage, metrics or {})  # all ranks: a collective under FSDP
            source = final
        if not self.dist.is_main:
            return

        def write(tmp):
            for name in (ckpt.GENERATOR_FILE, ckpt.DISCRIMINATOR_FILE, ckpt.METRICS_FILE):
                ckpt.link_or_copy(os.path.join(source, name), os.path.join(tmp, name))
            config.to_json(os.path.join(tmp, ckpt.CONFIG_FILE))

        ckpt.write_dir_atomically(final, write)

    def load_checkpoint(self, path: str, load_optimizer: bool = True) -> dict:
        """Restore both players (and optimizers) from a checkpoint directory; training resumes after its stage."""
        ckpt.require_checkpoint_dir(path)
        gen = ckpt.load_torch(os.path.join(path, ckpt.GENERATOR_FILE))
        disc_path = os.path.join(path, ckpt.DISCRIMINATOR_FILE)
        disc = ckpt.load_torch(disc_path) if os.path.isfile(disc_path) else None
        self._check_same_model(gen, self.generator, "generator", path)
        self.generator.load_model_state(gen["model_state_dict"], gen)
        if disc is not None:
            self._check_same_model(disc, self.discriminator, "discriminator", path)
            self.discriminator.load_model_state(disc["model_state_dict"], disc)
        if load_optimizer:
            self.generator_optimizer.load_state_dict(gen["optimizer_state_dict"])
            self.dist.shard_optimizer_state(self.generator_optimizer)  # FSDP: whole tensors become shards
            if disc is not None:
                self.discriminator_optimizer.load_state_dict(disc["optimizer_state_dict"])
                self.dist.shard_optimizer_state(self.discriminator_optimizer)
            # the saved state carries the old run's learning rates; this run's config wins
            _set_lr(self.generator_optimizer, self.config.generator_lr_at(self.completed_stage + 1))
            _set_lr(self.discriminator_optimizer, self.config.discriminator_lr)
        self.completed_stage = int(gen.get("stage_id", 0))
        self.global_step = int(gen.get("step", 0))
        self.warmed_up = True
        best = gen.get("best_reward")
        self.best_reward = best if best is not None else -math.inf
        if gen.get("rng_state"):
            _set_rng_state(self.rng, gen["rng_state"])
        if self.dist.enabled:  # the saved stream is rank 0's: give each rank its own again
            torch.manual_seed(int(torch.randint(2**31, (1,)).item()) + 1000 * self.dist.rank)
        self.log.truncate_after(self.completed_stage)
        return gen.get("metrics", {})

    @staticmethod
    def _check_same_model(saved: dict, player, role: str, path: str) -> None:
        name = saved.get("model_name_or_path")
        current = getattr(player, "model_name_or_path", None)
        if name is not None and current is not None and name != current:
            raise UserError(
                f"checkpoint {path} holds a {role} built from {name!r}, but this run's {role} is {current!r}; "
                f"pass --{role}_model={name} or resume from a checkpoint of this model"
            )

    # ====================================================================== helpers
    def _make_reference(self):
        state = None
        if self.dist.is_sharded(self.generator.model) and not self.generator.use_lora:
            # a whole local copy on every rank: the reference then needs no collectives
            state = self.dist.full(self.generator.model.state_dict(), everywhere=True)
        return self.generator.make_reference_model(offload=self.config.offload_reference, state_dict=state)

    # Informative sampling: a group whose G rewards are all equal teaches nothing and is
    # skipped. At stage 5 most groups are all-fail (or all-pass), and whole families stay
    # that way for many iterations, so the sampler learns per family how often a group
    # had spread and draws problems in proportion (never below SPREAD_FLOOR, so a family
    # that was hopeless can come back).
    SPREAD_FLOOR = 0.1
    SPREAD_DECAY = 0.8  # weight of a family's history against its newest group

    def _note_spread(self, batch: StageBatch, valid: torch.Tensor) -> None:
        """Record, per family, whether each problem's group had reward spread (all ranks, same order)."""
        mine = [(p.family or "", bool(valid[b * batch.group_size])) for b, p in enumerate(batch.problems)]
        for family, spread in (row for part in self.dist.gather(mine) for row in part):
            old = self.family_spread.get(family, 1.0)  # unseen families start optimistic
            self.family_spread[family] = self.SPREAD_DECAY * old + (1 - self.SPREAD_DECAY) * float(spread)

    def _informative_batch(self, problems: list, size: int) -> list:
        """`size` distinct problems, families weighted by their spread rate (weighted sampling without replacement)."""
        rng = random.Random(self.config.seed * 1000 + self.global_step)  # the same draw on every rank
        counts: dict = {}
        for p in problems:
            counts[p.family or ""] = counts.get(p.family or "", 0) + 1
        keys = []
        for i, p in enumerate(problems):
            family = p.family or ""
            weight = max(self.family_spread.get(family, 1.0), self.SPREAD_FLOOR) / counts[family]
            keys.append((rng.random() ** (1.0 / weight), i))  # Efraimidis-Spirakis: top keys win
        chosen = sorted(keys, reverse=True)[: min(size, len(problems))]
        batch = [problems[i] for _, i in chosen]
        return [batch[i % len(batch)] for i in range(size)]

    def _problem_order(self, problems: list) -> list:
        order = list(problems)
        random.Random(self.config.seed * 1000 + self.global_step).shuffle(order)
        return order

    @staticmethod
    def _check_problems(problems: list) -> None:
        if not problems:
            raise UserError("no training problems: check --problems (e.g. curriculum:train, humaneval, or a .jsonl file)")

    @staticmethod
    def _timed(timings: dict, name: str, fn, *args):
        t0 = time.time()
        out = fn(*args)
        timings[name] = timings.get(name, 0.0) + time.time() - t0
        return out

    def _batch_stats(self, batch: StageBatch) -> dict:
        row = {"reward": float(np.mean(batch.rewards)), "reward_std": float(np.std(batch.rewards))}
        for name, values in batch.terms.items():
            applicable = [v for v in values if v is not None]
            if applicable:
                row[f"reward_{name}"] = float(np.mean(applicable))
        if batch.stage_id == 5:
            row["pass_rate"] = float(np.mean([bool(r) and all(r) for r in batch.reference_results]))
            tb = batch.test_batch
            if tb is not None:
                flat = [ok for per in tb.passes_reference for ok in per]
                row["test_validity"] = float(np.mean(flat)) if flat else 0.0
                row["tests_per_problem"] = len(flat) / len(batch.problems)
        lengths = batch.rollout.completion_mask.sum(dim=1).float()
        row["completion_length"] = lengths.mean().item()
        return row

    def _stage_metrics(self, stage_id: int, history: list, elapsed: float) -> dict:
        def mean(key, default=None):
            values = [row[key] for row in history if key in row and row[key] is not None]
            return float(np.mean(values)) if values else default

        return {
            "stage_id": stage_id,
            "iterations": len(history),
            "elapsed_s": elapsed,
            "total_elapsed_s": time.time() - self.start_time,
            "generator": {
                "avg_reward": mean("reward", 0.0),
                "pass_rate": mean("pass_rate", 0.0),
                "kl": mean("kl", 0.0),
                "frac_reward_zero_std": mean("frac_reward_zero_std", 0.0),
                "reward_terms": {k[7:]: mean(k) for k in sorted({k for row in history for k in row}) if k.startswith("reward_") and k != "reward_std"},
            },
            "discriminator": {
                "loss": mean("disc_loss"),
                "accuracy": mean("disc_accuracy"),
                "test_validity": mean("test_validity"),
                "test_writer_reward": mean("test_writer_reward"),
            },
        }


# ======================================================================== utilities
def _warmup_pair(problem, stage_id: int, chain_loss: bool) -> tuple:
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


def _usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not every core of the host."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _masked_mean_per_seq(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's completion tokens: (n, C), (n, C) -> (n,)."""
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def _padded(results, n: int) -> list:
    """A sandbox result's per-test booleans, padded with False to n (a crashed job reports fewer)."""
    results = list(results or [])[:n]
    return [bool(r) for r in results] + [False] * (n - len(results))


def _fraction(results: list) -> float:
    return sum(results) / len(results) if results else 0.0


def _player_info(player) -> dict:
    info = dict(player.checkpoint_info()) if hasattr(player, "checkpoint_info") else {}
    return _plain(info)


def _plain(obj):
    """JSON- and weights_only-safe copy: dicts, lists, str, int, float, bool, None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, bool, int)) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.floating, np.integer)):
        return _plain(obj.item())
    return str(obj)


def _rng_state(rng: random.Random) -> dict:
    version, state, gauss = rng.getstate()
    return {"torch": torch.get_rng_state(), "python": [version, list(state), gauss]}


def _set_rng_state(rng: random.Random, saved: dict) -> None:
    if "torch" in saved:
        torch.set_rng_state(saved["torch"])
    if "python" in saved:
        version, state, gauss = saved["python"]
        rng.setstate((version, tuple(state), gauss))


def _mean_rows(rows: list) -> dict:
    """One metrics row from every rank's: numbers averaged (peak memory: the largest), the rest from rank 0."""
    if len(rows) == 1:
        return rows[0]
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("stage", "iteration", "global_step"):
            values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
            out[key] = max(values) if key.endswith("peak_memory_gb") else sum(values) / len(values)
    return out
