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

The parts live beside it, in training/: `rollout.py` (sampling, prefixes,
sandbox execution), `rewards.py` (the registry and `score_batch`),
`losses.py` (advantages, the policy-gradient loss), `updates.py` (both
players' updates), `sampling.py` (which problems an iteration sees, dynamic
sampling's fill), `outcomes.py` (hidden-test metrics and the probe, for the
log only), `mistakes.py`, `judge.py` and `warmup.py`. The problems are in
`data/`, the measurements in `evaluation/`, checkpoints and the rest of the
plumbing in `runtime/` (`trainer_state.py`: saving and resuming this class).
The KL reference is a frozen copy of the generator taken at the start of each
stage, which also makes a resumed run rebuild it exactly.
"""

from __future__ import annotations

import math
import os
import random
import time

import torch

from reasoning.stages import NUM_STAGES, get_stage
from training.config import TrainingConfig
from training.data.visibility import TestVisibility
from training.errors import UserError
from training.evaluation.scoring import greedy_pass_at_1
from training.judge import JUDGED_STAGES, StageJudge
from training.losses import compute_advantages, discriminator_modules, trainable_parameters
from training.mistakes import MistakeBook
from training.outcomes import outcome_metrics, probe_pass_rate
from training.rewards import reward_weights, score_batch
from training.rollout import Rollouts, StageBatch
from training.runtime import checkpoint as ckpt
from training.runtime.build import load_run_problems, spread
from training.runtime.distributed import Distributed
from training.runtime.metrics import MetricsLog, mean_rows, stage_metrics, stage_summary, timed
from training.runtime.trainer_state import TrainerState, set_lr
from training.sampling import PassRates, ProblemSampler, cap_groups, rollouts_until_full
from training.updates import spread_groups, trained_groups, update_generator, update_scoring_head, update_test_writer
from training.warmup import Warmup


class AdversarialTrainer(TrainerState):
    def __init__(self, generator, discriminator, sandbox, config: TrainingConfig, distributed: Distributed | None = None):
        self.dist = distributed or Distributed()
        self.generator, self.discriminator, self.sandbox, self.config = generator, discriminator, sandbox, config
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
        self.reward_weights = reward_weights(config)
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
        self.probe_problems: list = []  # the inference-style probe's training problems (visible tests)
        self.pass_rates = PassRates()  # per training problem, kept in checkpoints
        self.book = MistakeBook(config.mistake_book_size, config.mistake_book_max_age)

    # ================================================================== public API
    def train(self, problems: list, eval_problems: list | None = None) -> dict:
        """Warm-up (unless done or disabled), every configured stage after the last completed one, then final/."""
        _check_problems(problems)
        problems = self.visibility.split(problems)
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
        problems, config, stage_start = self.visibility.split(problems), self.config, time.time()
        if not self.probe_problems and config.probe_problems:  # fixed for the run: its curve is comparable
            self.probe_problems = spread(problems, config.probe_problems)
        self.rollouts.prefix_cache.clear()
        set_lr(self.generator_optimizer, config.generator_lr_at(stage_id))
        self.reference_model = self._make_reference() if config.kl_beta > 0 else None
        self.sampler = ProblemSampler(
            problems, config.problem_sampling, config.problems_per_batch, config.seed, self.global_step, self.dist,
            pass_rates=self.pass_rates, explore=config.edge_explore,
        )
        if self.judge is not None and stage_id in JUDGED_STAGES and (seeded := self.judge.prepare(problems)):
            self.log.write({"stage": stage_id, **seeded, "global_step": self.global_step})
        iterations, history = config.iterations(stage_id), []
        bar = self.log.progress_bar(iterations, f"stage {stage_id}")
        for iteration in range(iterations):
            row = self.iteration(stage_id, iteration, last=iteration == iterations - 1)
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
        self.save_stage(stage_id, metrics)
        self.reference_model = None
        return metrics

    def iteration(self, stage_id: int, iteration: int, last: bool = False) -> dict:
        """One RL iteration of stage k, in the named steps of the module's docstring; its row of the log."""
        config, t0, timings = self.config, time.time(), {}
        drawn = self.sampler.batch(iteration, self.global_step)  # the global batch; each rank rolls out its share
        row = {"stage": stage_id, "iteration": iteration, "edge_share": self.sampler.edge_share(drawn)}
        for _ in range(config.generator_steps):
            batch, rollouts = self.rollout_until_full(stage_id, drawn, timings)
            advantages, valid, frac_zero = self.compute_advantages(
                batch.rewards, batch.group_size, scale_rewards=config.scale_rewards, dist=self.dist
            )
            self.sampler.note_spread(batch.problems, batch.group_size, valid)
            if batch.runs_code:  # passing every visible test: what problem_sampling=edge estimates
                self.pass_rates.note(batch.problems, batch.group_size, batch.passed(), self.dist)
            valid = cap_groups(valid, batch.group_size, config.problems_per_batch, self.dist)
            stats = timed(timings, "update_generator", self.update_generator, batch, advantages, valid)
            self.rollouts.prefix_cache.clear()  # the policy moved: the next rollout writes its prefixes anew
            self.global_step += 1
        row.update(batch.stats(), frac_reward_zero_std=frac_zero, rollout_batches=rollouts,
                   trained_groups=trained_groups(valid, batch.group_size, self.dist), **stats)
        if batch.runs_code:
            row.update(timed(timings, "hidden_tests", outcome_metrics, batch, self.visibility, self.rollouts))
        if self.book and batch.test_batch is not None:
            row.update(self.book.record_batch(batch, self.global_step))
        if config.use_discriminator:
            for _ in range(config.discriminator_steps):
                row.update(timed(timings, "update_discriminator", self.update_discriminator, batch))
        if self.probe_problems and (iteration % config.probe_every == 0 or last):
            row["probe_pass_rate"] = timed(timings, "probe", probe_pass_rate, self.probe_problems, self.rollouts, self.dist)
        timings["prefix"], self.rollouts.prefix_seconds = self.rollouts.prefix_seconds, 0.0  # part of rollout
        row.update({f"time_{k}": v for k, v in timings.items()}, time_iteration=time.time() - t0, global_step=self.global_step)
        if self.device.type == "cuda":
            # the high-water mark since the run began: what a GPU must hold for this config
            row["gpu_peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        return mean_rows(self.dist.gather(row))

    def warmup(self, problems: list | None = None, test_problems: list | None = None) -> dict:
        """Supervised warm-up (training/warmup.py): the generator on gold chains, the test writer on reference tests.

        `problems` (default: the config's `warmup.problems`) give the gold chains
        and reference tests; with `warmup.tests_from_training_problems` the test
        writer also imitates the reference tests of `test_problems` (`train`
        passes its training problems).
        """
        if problems is None:
            problems = load_run_problems(self.config.warmup.problems, self.config)
        # the warm-up set may hold training problems (the curriculum's are the same): it sees what RL sees
        problems = self.visibility.split(problems)
        stats = Warmup(
            self.generator, self.discriminator, self.discriminator_optimizer, self.config, self.dist, self.log,
            self.rollouts.labeller,
        ).run(problems, test_problems or [])
        self.warmed_up = True
        self.log.write({"stage": 0, **stats, "global_step": self.global_step})
        return stats

    # ================================================== rollout, score, updates
    def rollout(self, stage_id: int, problems: list) -> StageBatch:
        """G candidates of stage k per problem, each after the generator's own greedy prefix."""
        return self.rollouts.sample(stage_id, problems)

    def score(self, batch: StageBatch) -> list:
        """batch.rewards and batch.terms from the reward registry (rewards.score_batch); the mistake book's tests run too."""
        book = [self.book.tests(p.id, self.global_step) for p in batch.problems] if self.book and batch.runs_code else None
        return score_batch(batch, self.reward_weights, self.rollouts, self.config.use_discriminator, book)

    def rollout_until_full(self, stage_id: int, drawn: list, timings: dict | None = None) -> tuple[StageBatch, int]:
        """The scored rollout of `drawn` and, under dynamic_sampling, of more problems (sampling.rollouts_until_full)."""
        timings = {} if timings is None else timings

        def roll(problems):
            batch = timed(timings, "rollout", self.rollout, stage_id, problems)
            timed(timings, "score", self.score, batch)
            return batch

        batches = rollouts_until_full(drawn, roll, lambda b: spread_groups(b, self.config), self.sampler, self.config,
                                      self.dist, self.global_step)
        return StageBatch.cat(batches), len(batches)

    compute_advantages = staticmethod(compute_advantages)

    def update_generator(self, batch: StageBatch, advantages: torch.Tensor, valid: torch.Tensor) -> dict:
        """Clipped policy gradient over completion tokens, KL to the frozen reference (updates.py)."""
        return update_generator(self.generator, self.generator_optimizer, batch, advantages, valid, self.config,
                                self.dist, self.reference_model)

    def update_discriminator(self, batch: StageBatch) -> dict:
        """The scoring head (gold vs generated, or the outcome judge); the test writer at the code stage."""
        if self.judge is not None:
            self.judge.observe(batch.labelled)
            batch.labelled = []  # each chain enters the replay once, whatever discriminator_steps is
        stats = {}
        if not batch.is_code:
            stats = self.judge.step() if self.judge is not None else update_scoring_head(
                self.discriminator, self.discriminator_optimizer, batch, self.rng, self.config, self.dist)
        if batch.test_batch is not None:
            stats.update(update_test_writer(self.discriminator, self.discriminator_optimizer, batch, self.config, self.dist))
        return stats

    def generate_chains(self, problems: list, upto: int = NUM_STAGES, start: list | None = None) -> list:
        return self.rollouts.generate_chains(problems, upto=upto, start=start)

    def evaluate(self, problems: list) -> dict:
        """Greedy five-stage chains scored like `python -m training.evaluate`: pass@1, also per family group."""
        mine = self.dist.shard(spread(problems, self.config.eval_size))
        chains = self.generate_chains(mine, upto=NUM_STAGES)
        return greedy_pass_at_1(mine, [c[-1] for c in chains], self.sandbox, self.dist)

    def _make_reference(self):
        state = None
        if self.dist.is_sharded(self.generator.model) and not self.generator.use_lora:
            # a whole local copy on every rank: the reference then needs no collectives
            state = self.dist.full(self.generator.model.state_dict(), everywhere=True)
        return self.generator.make_reference_model(offload=self.config.offload_reference, state_dict=state)


def _check_problems(problems: list) -> None:
    if not problems:
        raise UserError("no training problems: check --problems (e.g. curriculum:train, humaneval, or a .jsonl file)")
