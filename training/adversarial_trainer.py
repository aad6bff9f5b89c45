"""AdversarialTrainer: the generator and the discriminator trained against each other.

One RL iteration of stage k, in named steps:

    batch   = rollout(stage_id, problems)     # G samples of stage k per problem
    rewards = score(batch)                    # registry of reward functions
                                              # (dynamic_sampling: more of both until the batch has spread)
    adv     = compute_advantages(rewards)     # group-relative, zero-spread groups skipped
    update_generator(batch, adv)              # clipped PG over completion tokens + KL
    update_discriminator(batch)               # BCE scoring head (gold vs generated, or the outcome
                                              # judge, judge.py); the test writer at the code stage (CURE,
                                              # or the attack reward when it reads the code)

The parts live beside it: `warmup.py` (supervised warm-up), `rollout.py`
(sampling, prefixes, sandbox execution), `rewards.py` (the registry),
`losses.py` (advantages, the policy-gradient loss of both players, optimizer
steps), `sampling.py` (which problems an iteration sees) and `checkpoint.py`.
The KL reference is a frozen copy of the generator taken at the start of each
stage, which also makes a resumed run rebuild it exactly.
"""

from __future__ import annotations

import math
import os
import random
import time

import torch

from reasoning.stages import NUM_STAGES, canonical_test, get_stage
from training import checkpoint as ckpt
from training.build import spread
from training.config import TrainingConfig
from training.distributed import Distributed
from training.errors import UserError
from training.judge import JUDGED_STAGES, StageJudge
from training.losses import (
    compute_advantages, discriminator_modules, group_spread, policy_update, scoring_head_step, trainable_parameters,
)
from training.metrics import MetricsLog, best_metric, mean_rows, stage_metrics, stage_summary
from training.mistakes import MistakeBook
from training.rewards import REWARDS, RewardBatch, attack_writer_rewards, combine, runnable, test_writer_rewards
from training.rollout import Rollouts, StageBatch
from training.sampling import ProblemSampler, cap_groups
from training.visibility import TestVisibility
from training.warmup import Warmup


class AdversarialTrainer:
    def __init__(self, generator, discriminator, sandbox, config: TrainingConfig, distributed: Distributed | None = None):
        self.dist = distributed or Distributed()
        self.generator = generator
        self.discriminator = discriminator
        self.sandbox = sandbox
        self.config = config
        self.device = generator.device
        self.rng = random.Random(config.seed)
        if self.dist.enabled:  # before the optimizers take the (possibly sharded) parameters
            self.dist.prepare_players(generator.model, discriminator_modules(discriminator), config.seed, config.problems_per_batch)
        self.generator_optimizer = torch.optim.AdamW(
            trainable_parameters([generator.model]), lr=config.generator_lr_at(1), weight_decay=0.0
        )
        self.discriminator_optimizer = torch.optim.AdamW(
            trainable_parameters(discriminator_modules(discriminator)), lr=config.discriminator_lr, weight_decay=0.0
        )
        self.reference_model = None
        self.reward_weights = {name: getattr(config.rewards, name) for name in REWARDS}
        if not config.use_discriminator:  # the ablation: execution reward only
            self.reward_weights["discriminator"] = 0.0
            self.reward_weights["discriminator_tests"] = 0.0
        self.global_step = 0
        self.completed_stage = 0  # last stage whose checkpoint exists (0 = none, or warm-up only)
        self.best_reward = -math.inf
        self.warmed_up = False
        self.start_time = time.time()
        self.log = MetricsLog(config.checkpoint_dir, enabled=self.dist.is_main, progress=config.progress,
                              report_to=config.report_to, run_config=config.to_dict())
        self.rollouts = Rollouts(generator, discriminator, sandbox, config, self.dist)
        self.sampler = None  # the current stage's ProblemSampler
        self.judge = (StageJudge(discriminator, self.discriminator_optimizer, self.rollouts, config, self.dist, self.log)
                      if config.judge.target == "outcome" and config.use_discriminator else None)
        self.visibility = TestVisibility(config.visible_tests, config.visible_choice, config.seed)
        self._resumed = None  # (path, the checkpoint's visibility record) until train() checks it
        self.probe_problems: list = []  # the inference-style probe's training problems (visible tests)
        self.book = MistakeBook(config.mistake_book_size, config.mistake_book_max_age)

    # ================================================================== public API
    def train(self, problems: list, eval_problems: list | None = None) -> dict:
        """Warm-up (unless done or disabled), every configured stage after the last completed one, then final/."""
        _check_problems(problems)
        problems = self.visible(problems)
        ckpt.clean_stale(self.config.checkpoint_dir)
        last_metrics = {}
        if self.config.warmup.enabled and not self.warmed_up and self.completed_stage == 0:
            self.warmup(test_problems=problems)
            last_metrics = {"warmup": True}
            if eval_problems:
                last_metrics["eval"] = self.evaluate(eval_problems)
                self.log.message(f"warm-up: held-out pass@1 {last_metrics['eval']['pass_at_1']:.3f}")
            self.save_checkpoint(os.path.join(self.config.checkpoint_dir, "warmup"), 0, last_metrics)
        for stage_id in self.config.stages:
            if stage_id > self.completed_stage:
                last_metrics = self.train_stage(stage_id, problems, eval_problems=eval_problems)
        self.save_final(last_metrics)
        self.log.close()  # the trackers' files are complete; a later write opens them again
        return last_metrics

    def train_stage(self, stage_id: int, problems: list, eval_problems: list | None = None) -> dict:
        """RL iterations of one stage, then stage_N/ (and best/ when the best metric improved)."""
        get_stage(stage_id)
        _check_problems(problems)
        problems = self.visible(problems)
        config = self.config
        if not self.probe_problems and config.probe_problems:  # fixed for the run: its curve is comparable
            self.probe_problems = spread(problems, config.probe_problems)
        self.rollouts.prefix_cache.clear()
        _set_lr(self.generator_optimizer, config.generator_lr_at(stage_id))
        self.reference_model = self._make_reference() if config.kl_beta > 0 else None
        stage_start = time.time()
        self.sampler = sampler = ProblemSampler(
            problems, config.problem_sampling, config.problems_per_batch, config.seed, self.global_step, self.dist
        )
        history = []
        if self.judge is not None and stage_id in JUDGED_STAGES:
            seeded = self.judge.prepare(problems)
            if seeded:
                self.log.write({"stage": stage_id, **seeded, "global_step": self.global_step})
        iterations = config.iterations(stage_id)
        bar = self.log.progress_bar(iterations, f"stage {stage_id}")
        for iteration in range(iterations):
            t0 = time.time()
            drawn = sampler.batch(iteration, self.global_step)  # the global batch; each rank rolls out its share
            row, timings = {"stage": stage_id, "iteration": iteration}, {}
            for _ in range(config.generator_steps):
                batch, rollouts = self.rollout_until_full(stage_id, drawn, timings)
                advantages, valid, frac_zero = self.compute_advantages(
                    batch.rewards, batch.group_size, scale_rewards=config.scale_rewards, dist=self.dist
                )
                sampler.note_spread(batch.problems, batch.group_size, valid)
                valid = cap_groups(valid, batch.group_size, config.problems_per_batch, self.dist)
                stats = _timed(timings, "update_generator", self.update_generator, batch, advantages, valid)
                self.rollouts.prefix_cache.clear()  # the policy moved: the next rollout writes its prefixes anew
                self.global_step += 1
            row.update(batch.stats(), frac_reward_zero_std=frac_zero, rollout_batches=rollouts,
                       trained_groups=_groups(valid, batch.group_size, self.dist), **stats)
            if batch.runs_code:
                row.update(_timed(timings, "hidden_tests", self.outcome_metrics, batch))
            if self.book and batch.test_batch is not None:
                row.update(self.record_mistakes(batch))
            if config.use_discriminator:
                for _ in range(config.discriminator_steps):
                    row.update(_timed(timings, "update_discriminator", self.update_discriminator, batch))
            if self.probe_problems and (iteration % config.probe_every == 0 or iteration == iterations - 1):
                row["probe_pass_rate"] = _timed(timings, "probe", self.probe)
            timings["prefix"], self.rollouts.prefix_seconds = self.rollouts.prefix_seconds, 0.0  # part of rollout
            row.update({f"time_{k}": v for k, v in timings.items()}, time_iteration=time.time() - t0, global_step=self.global_step)
            if self.device.type == "cuda":
                # the high-water mark since the run began: what a GPU must hold for this config
                row["gpu_peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
            row = mean_rows(self.dist.gather(row))
            history.append(row)
            if iteration % config.log_every == 0 or iteration == iterations - 1:
                self.log.write(row)
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward']:.3f}", pass_rate=f"{row.get('train_pass_rate', float('nan')):.2f}")
        bar.close()
        metrics = stage_metrics(stage_id, history, time.time() - stage_start, time.time() - self.start_time)
        if self.judge is not None and stage_id in JUDGED_STAGES:
            metrics["judge"] = self.judge.quality(stage_id)
            self.log.write({"stage": stage_id, **metrics["judge"], "global_step": self.global_step})
        if eval_problems:
            metrics["eval"] = self.evaluate(eval_problems)
        self.log.message(f"stage {stage_id}: " + stage_summary(metrics))
        self.completed_stage = stage_id
        stage_dir = os.path.join(config.checkpoint_dir, f"stage_{stage_id}")
        self.save_checkpoint(stage_dir, stage_id, metrics)
        score = best_metric(metrics, config.best_metric)
        if score > self.best_reward:
            self.best_reward = score
            if self.dist.is_main:
                ckpt.link_or_copy_dir(stage_dir, os.path.join(config.checkpoint_dir, "best"))
        if config.plot:
            self.log.plot(os.path.join(config.checkpoint_dir, f"stage_{stage_id}.png"))
        self.reference_model = None
        return metrics

    def warmup(self, problems: list | None = None, test_problems: list | None = None) -> dict:
        """Supervised warm-up (training/warmup.py): the generator on gold chains, the test writer on reference tests.

        `problems` (default: the config's `warmup.problems`) give the gold chains
        and reference tests; with `warmup.tests_from_training_problems` the test
        writer also imitates the reference tests of `test_problems` (`train`
        passes its training problems).
        """
        from training.build import load_run_problems

        if problems is None:
            problems = load_run_problems(self.config.warmup.problems, self.config)
        # the warm-up set may hold training problems (the curriculum's are the same): it sees what RL sees
        problems = self.visible(problems)
        stats = Warmup(
            self.generator, self.discriminator, self.discriminator_optimizer, self.config, self.dist, self.log
        ).run(problems, test_problems or [])
        self.warmed_up = True
        self.log.write({"stage": 0, **stats, "global_step": self.global_step})
        return stats

    # ============================================================ visible tests
    def visible(self, problems: list) -> list:
        """The problems with only their visible tests (TestVisibility); every trainer path uses these.

        The first call also checks that a checkpoint this run resumed from saw
        no test the run hides.
        """
        problems = self.visibility.split(problems)
        if self._resumed is not None:
            path, saved = self._resumed
            self.visibility.check_resumable(saved, path)
            self._resumed = None
        return problems

    def outcome_metrics(self, batch: StageBatch) -> dict:
        """What the reward cannot see, for the log only: the candidates' results on the hidden tests.

        hidden_pass_rate: share of candidates that pass every reference test,
        hidden ones included; false_positive_rate: of the candidates that pass
        every visible test, the share that fail a hidden one (both only when
        some tests are hidden). catch_rate: of the wrong candidates (failing a
        reference test, hidden ones included), the share that a valid
        discriminator test fails; false_positive_catch_rate: the same share of
        the false positives alone. Nothing here feeds a reward or an update.
        """
        G, codes = batch.group_size, batch.codes
        visible_pass = [bool(r) and all(r) for r in batch.reference_results]
        correct = list(visible_pass)
        out = {}
        if self.visibility.enabled:
            hidden = [self.visibility.hidden_tests(p) for p in batch.problems]
            jobs = [(codes[b * G + g], tests, p.entry_point)
                    for b, (p, tests) in enumerate(zip(batch.problems, hidden)) if tests for g in range(G)]
            results = iter(self.sandbox.run_batch(jobs) if jobs else [])
            for b, tests in enumerate(hidden):
                if not tests:
                    continue
                outcomes, _ = self.rollouts.trusted_outcomes([next(results) for _ in range(G)], len(tests))
                for g, o in enumerate(outcomes):
                    correct[b * G + g] = correct[b * G + g] and all(o)
            passing = [ok for ok, vis in zip(correct, visible_pass) if vis]
            out["hidden_pass_rate"] = sum(correct) / len(correct)
            out["false_positive_rate"] = 1.0 - sum(passing) / len(passing) if passing else None
        tb = batch.test_batch
        if tb is not None:  # each candidate on the valid tests it ran: the pool, or those written for it and the book's
            failed = [not all(r) for r in tb.valid_results()]
            caught = [hit for hit, ok in zip(failed, correct) if not ok]
            out["catch_rate"] = sum(caught) / len(caught) if caught else None
            if self.visibility.enabled:  # the wrong ones only a test beyond the visible ones can catch
                missed = [hit for hit, ok, vis in zip(failed, correct, visible_pass) if vis and not ok]
                out["false_positive_catch_rate"] = sum(missed) / len(missed) if missed else None
        return {k: v for k, v in out.items() if v is not None}

    def probe(self) -> float:
        """Inference-style pass rate: greedy chains from the problem alone on the probe, scored on visible tests."""
        problems = self.dist.shard(self.probe_problems)
        chains = self.generate_chains(problems, upto=NUM_STAGES)
        results = self.sandbox.run_batch([(c[-1], list(p.tests), p.entry_point) for c, p in zip(chains, problems)])
        passed = []
        for p, r in zip(problems, results):
            (outcomes,), _ = self.rollouts.trusted_outcomes([r], len(p.tests))
            passed.append(bool(outcomes) and all(outcomes))
        total = self.dist.sum(len(passed))
        return self.dist.sum(sum(passed)) / total if total else 0.0

    # ================================================================ rollout, score
    def rollout(self, stage_id: int, problems: list) -> StageBatch:
        """G candidates of stage k per problem, each after the generator's own greedy prefix."""
        return self.rollouts.sample(stage_id, problems)

    def rollout_until_full(self, stage_id: int, drawn: list, timings: dict | None = None) -> tuple[StageBatch, int]:
        """The scored rollout of the global batch `drawn` and, under dynamic_sampling, of more problems.

        Extra draws (ProblemSampler.extra_batch) go on until each player has
        problems_per_batch groups with reward spread over every rank (the
        generator's candidates; the test writer's samples at the code stage),
        or max_rollout_batches rollouts were taken. Returns every group
        rolled out, in order, and the number of rollouts.
        """
        config, timings = self.config, {} if timings is None else timings
        batches, seen, problems = [], {p.id for p in drawn}, drawn
        while True:
            batch = _timed(timings, "rollout", self.rollout, stage_id, self.dist.shard(problems))
            _timed(timings, "score", self.score, batch)
            batches.append(batch)
            if not config.dynamic_sampling or len(batches) >= config.max_rollout_batches:
                break
            found = [self.dist.sum(n) for n in self._spread_groups(batches)]
            if min(found) >= config.problems_per_batch:
                break
            problems = self.sampler.extra_batch(self.global_step, len(batches), seen)
            seen.update(p.id for p in problems)
        return StageBatch.cat(batches), len(batches)

    def _spread_groups(self, batches: list) -> list:
        """This rank's groups with reward spread in `batches`: the generator's, then the test writer's where it writes."""
        counts = [sum(int(group_spread(b.rewards, b.group_size).sum()) for b in batches)]
        if self.config.use_discriminator and all(b.test_batch is not None for b in batches):
            counts.append(sum(int(group_spread(self._test_writer_rewards(b), b.test_batch.samples_per_problem).sum())
                              for b in batches))
        return counts

    def generate_chains(self, problems: list, upto: int = NUM_STAGES, start: list | None = None) -> list:
        return self.rollouts.generate_chains(problems, upto=upto, start=start)

    def score(self, batch: StageBatch) -> list:
        """Fill batch.rewards (N floats in [0, 1]) and batch.terms from the rewards that apply to this stage.

        Each reward declares the RewardBatch fields it reads, and only those are
        computed. The code stage always runs in the sandbox: its results are
        also the test writer's reward and the pass rate.
        """
        # a sampled trajectory is scored by execution, plus the judge's score of its stage-k output
        active = {
            name: reward for name, reward in REWARDS.items()
            if self.reward_weights.get(name, 0) > 0 and (
                reward.code_stage == batch.runs_code or (batch.chains is not None and name == "discriminator"))
        }
        needs = {need for reward in active.values() for need in reward.needs}
        reward_batch = RewardBatch(
            stage_id=batch.stage_id,
            problems=batch.per_completion(batch.problems),
            prefixes=batch.per_completion(batch.prefixes),
            completions=batch.codes,
        )
        if batch.runs_code:
            book = [self.book.tests(p.id, self.global_step) for p in batch.problems] if self.book else None
            self.rollouts.execute(batch, with_tests=self.config.use_discriminator, book_tests=book)
            reward_batch.reference_results = batch.reference_results
            tb = batch.test_batch
            reward_batch.discriminator_results = tb.valid_results() if tb else [[] for _ in batch.completions]
        if "lookahead_pass" in needs:
            reward_batch.lookahead_pass = self.rollouts.lookahead(batch)
        if "discriminator_scores" in needs:
            reward_batch.discriminator_scores = self.rollouts.discriminator_scores(batch)
        terms = {}
        for name, reward in active.items():
            values = reward.fn(reward_batch)
            if any(v is not None for v in values):  # keep only the terms that apply here
                terms[name] = values
        batch.terms = terms
        batch.rewards = combine(terms, self.reward_weights, len(batch.completions))
        return batch.rewards

    compute_advantages = staticmethod(compute_advantages)

    # ==================================================================== updates
    def update_generator(self, batch: StageBatch, advantages: torch.Tensor, valid: torch.Tensor) -> dict:
        """Clipped policy gradient over completion tokens, KL to the frozen reference."""
        config = self.config
        S = batch.stages_per_completion  # a trajectory: every sampled stage's tokens share the chain's advantage
        budget = max(config.max_new_tokens[batch.stage_id - 1:batch.stage_id - 1 + S])
        return policy_update(
            self.generator, self.generator_optimizer, trainable_parameters([self.generator.model]),
            batch.rollout, advantages.repeat(S), valid.repeat(S), self.dist,
            temperature=config.temperature, max_completion_length=budget,
            epochs=config.policy_epochs, reference_model=self.reference_model, beta=config.kl_beta,
            **self._policy_loss_settings(),
        )

    def _policy_loss_settings(self) -> dict:
        """The policy-gradient loss settings that both players' updates share."""
        c = self.config
        return dict(micro_batch_size=c.micro_batch_size, clip_range=c.clip_range, max_grad_norm=c.max_grad_norm,
                    loss_type=c.loss_type, epsilon_high=c.epsilon_high, importance_sampling_level=c.importance_sampling_level)

    def update_discriminator(self, batch: StageBatch) -> dict:
        """The scoring head (gold vs generated, or the outcome judge); the test writer at the code stage."""
        if self.judge is not None:
            self.judge.observe(batch.labelled)
            batch.labelled = []  # each chain enters the replay once, whatever discriminator_steps is
        stats = {}
        if not batch.is_code:
            stats = self.judge.step() if self.judge is not None else self._update_scoring_head(batch)
        if batch.test_batch is not None:
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
        return scoring_head_step(
            self.discriminator, self.discriminator_optimizer, items, labels, self.dist, self.config.max_grad_norm
        )

    def record_mistakes(self, batch: StageBatch) -> dict:
        """Put the valid tests that failed a runnable candidate in the mistake book; its row of the log.

        A test that the problem's reference tests (those the run sees) already
        hold stays out: every candidate runs it anyway, so it would add nothing.
        """
        tb, G = batch.test_batch, batch.group_size
        tb_runs, hits = tb.book_runs()
        self.book.count(tb_runs, hits)
        for b, problem in enumerate(batch.problems):
            known = {canonical_test(t) for t in problem.tests}
            caught = [t for g in range(G) if runnable(batch.codes[b * G + g]) for t in tb.caught_tests(b, g)
                      if canonical_test(t) not in known]
            self.book.record(problem.id, caught, self.global_step)
        return self.book.stats()

    def _test_writer_rewards(self, batch: StageBatch) -> list:
        """Each test sample's reward (rewards.py): CURE over every candidate, or the attack on the candidate it read."""
        config = self.config
        if config.test_writer_input == "code":
            return attack_writer_rewards(batch.test_batch, batch.codes, config.quiet_test_reward, config.quiet_test_cap)
        return test_writer_rewards(
            batch.test_batch, batch.codes, batch.reference_results, batch.group_size,
            config.invalid_test_penalty, config.test_writer_reward,
        )

    def _update_test_writer(self, batch: StageBatch) -> dict:
        """The same policy-gradient update as the generator's, on the test samples, rewarded by CURE (rewards.py)."""
        config, tb = self.config, batch.test_batch
        sample_rewards = self._test_writer_rewards(batch)
        advantages, valid, frac_zero = self.compute_advantages(
            sample_rewards, tb.samples_per_problem, scale_rewards=config.scale_rewards, dist=self.dist
        )
        valid = cap_groups(valid, tb.samples_per_problem, config.problems_per_batch, self.dist)
        trained = _groups(valid, tb.samples_per_problem, self.dist)
        params = trainable_parameters(discriminator_modules(self.discriminator))
        stats = policy_update(
            self.discriminator, self.discriminator_optimizer, params, tb.rollout, advantages, valid, self.dist,
            temperature=config.test_temperature, max_completion_length=config.test_max_new_tokens,
            **self._policy_loss_settings(),
        )
        return {"test_writer_reward": sum(sample_rewards) / len(sample_rewards), "test_writer_frac_reward_zero_std": frac_zero,
                "test_writer_trained_groups": trained,
                **{f"test_writer_{k}": stats[k] for k in ("policy_loss", "grad_norm", "clip_fraction", "entropy")}}

    # ================================================================= evaluation
    def evaluate(self, problems: list) -> dict:
        """Greedy five-stage chains scored like `python -m training.evaluate`: pass@1, also per family group."""
        from training.evaluate import greedy_pass_at_1

        mine = self.dist.shard(spread(problems, self.config.eval_size))
        chains = self.generate_chains(mine, upto=NUM_STAGES)
        return greedy_pass_at_1(mine, [c[-1] for c in chains], self.sandbox, self.dist)

    # ================================================================ checkpoints
    def save_checkpoint(self, path: str, stage_id: int, metrics: dict) -> None:
        """generator.pt, discriminator.pt and metrics.json in `path` (training/checkpoint.py); every rank calls it."""
        metrics = dict(metrics)
        metrics.setdefault("stage_id", stage_id)
        common = {
            "stage_id": stage_id,
            "metrics": ckpt.plain(metrics),
            "step": self.global_step,
            "config": self.config.to_dict(),
            "rng_state": ckpt.rng_state(self.rng),
            "best_reward": self.best_reward if math.isfinite(self.best_reward) else None,
            "visible_tests": self.visibility.record(),
            "mistake_book": self.book.state_dict(),
        }
        mode = self.config.save_optimizer
        ckpt.save_training_state(path, self._players(), self._optimizers(), self.dist, common, with_optimizer=mode != "none")
        if mode == "latest" and self.dist.is_main and ckpt.is_resume_dir(path, self.config.checkpoint_dir):
            # only now that `path` is complete: a kill at any moment leaves a resumable directory
            ckpt.drop_optimizer_state(self.config.checkpoint_dir, keep=path)

    def save_final(self, metrics: dict) -> None:
        """final/: the last stage's weights (hard-linked), its metrics, and the full config."""
        final = os.path.join(self.config.checkpoint_dir, "final")
        source = os.path.join(self.config.checkpoint_dir, f"stage_{self.completed_stage}")
        if not self.dist.gather(os.path.isdir(source))[0]:  # rank 0's view: every rank takes one branch
            self.save_checkpoint(final, self.completed_stage, metrics or {})  # all ranks: a collective under FSDP
            source = final
        if self.dist.is_main:
            ckpt.write_final(final, source, self.config)

    def load_checkpoint(self, path: str, load_optimizer: bool = True) -> dict:
        """Restore both players (and optimizers) from a checkpoint directory; training resumes after its stage.

        A directory saved without optimizer state (save_optimizer=latest or none) logs one warning and leaves
        the optimizers fresh.
        """
        gen = ckpt.load_training_state(path, self._players(), self._optimizers() if load_optimizer else None, self.dist)
        self.completed_stage = int(gen.get("stage_id", 0))
        if load_optimizer:  # the saved state carries the old run's learning rates; this run's config wins
            # (after stage 5, e.g. from final/, the next stage would be a 6th: keep stage 5's rate)
            _set_lr(self.generator_optimizer, self.config.generator_lr_at(min(self.completed_stage + 1, NUM_STAGES)))
            _set_lr(self.discriminator_optimizer, self.config.discriminator_lr)
        self.global_step = int(gen.get("step", 0))
        self.warmed_up = True
        best = gen.get("best_reward")
        self.best_reward = best if best is not None else -math.inf
        if gen.get("rng_state"):
            ckpt.set_rng_state(self.rng, gen["rng_state"])
        if self.dist.enabled:  # the saved stream is rank 0's: give each rank its own again
            torch.manual_seed(int(torch.randint(2**31, (1,)).item()) + 1000 * self.dist.rank)
        self.log.truncate_after(self.completed_stage)
        self._resumed = (path, gen.get("visible_tests"))  # checked against this run's split in train()
        self.book.load_state_dict(gen.get("mistake_book"))
        return gen.get("metrics", {})

    def _players(self) -> tuple:
        return self.generator, self.discriminator

    def _optimizers(self) -> tuple:
        return self.generator_optimizer, self.discriminator_optimizer

    def _make_reference(self):
        state = None
        if self.dist.is_sharded(self.generator.model) and not self.generator.use_lora:
            # a whole local copy on every rank: the reference then needs no collectives
            state = self.dist.full(self.generator.model.state_dict(), everywhere=True)
        return self.generator.make_reference_model(offload=self.config.offload_reference, state_dict=state)


def _check_problems(problems: list) -> None:
    if not problems:
        raise UserError("no training problems: check --problems (e.g. curriculum:train, humaneval, or a .jsonl file)")


def _timed(timings: dict, name: str, fn, *args):
    t0 = time.time()
    out = fn(*args)
    timings[name] = timings.get(name, 0.0) + time.time() - t0
    return out


def _groups(valid: torch.Tensor, group_size: int, dist) -> int:
    """How many groups an update learned from, over every rank."""
    return int(dist.sum(int(valid.sum()) // group_size))


def _set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
