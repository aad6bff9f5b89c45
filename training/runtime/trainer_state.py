"""The trainer's state on disk: saving stage_N/, best/ and final/, and resuming from any of them.

`AdversarialTrainer` inherits these methods; they read and restore what the
loop keeps (players, optimizers, step, best metric, random state, the test
split, the mistake book, the problems' pass-rate estimates) in the format
training/runtime/checkpoint.py writes.
"""

from __future__ import annotations

import math
import os

import torch

from reasoning.stages import NUM_STAGES
from training.runtime import checkpoint as ckpt
from training.runtime.metrics import best_metric


class TrainerState:
    def save_checkpoint(self, path: str, stage_id: int, metrics: dict) -> None:
        """generator.pt, discriminator.pt and metrics.json in `path` (runtime/checkpoint.py); every rank calls it."""
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
            "pass_rates": self.pass_rates.state_dict(),
        }
        mode = self.config.save_optimizer
        players, optimizers = self._players_and_optimizers()
        ckpt.save_training_state(path, players, optimizers, self.dist, common, with_optimizer=mode != "none")
        if mode == "latest" and self.dist.is_main and ckpt.is_resume_dir(path, self.config.checkpoint_dir):
            # only now that `path` is complete: a kill at any moment leaves a resumable directory
            ckpt.drop_optimizer_state(self.config.checkpoint_dir, keep=path)

    def save_stage(self, stage_id: int, metrics: dict) -> None:
        """stage_N/, best/ when the best metric improved, and the stage's plot."""
        stage_dir = os.path.join(self.config.checkpoint_dir, f"stage_{stage_id}")
        self.save_checkpoint(stage_dir, stage_id, metrics)
        score = best_metric(metrics, self.config.best_metric)
        if score > self.best_reward:
            self.best_reward = score
            if self.dist.is_main:
                ckpt.link_or_copy_dir(stage_dir, os.path.join(self.config.checkpoint_dir, "best"))
        if self.config.plot:
            self.log.plot(os.path.join(self.config.checkpoint_dir, f"stage_{stage_id}.png"))

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
        players, optimizers = self._players_and_optimizers()
        gen = ckpt.load_training_state(path, players, optimizers if load_optimizer else None, self.dist)
        self.completed_stage = int(gen.get("stage_id", 0))
        if load_optimizer:  # the saved state carries the old run's learning rates; this run's config wins
            # (after stage 5, e.g. from final/, the next stage would be a 6th: keep stage 5's rate)
            set_lr(self.generator_optimizer, self.config.generator_lr_at(min(self.completed_stage + 1, NUM_STAGES)))
            set_lr(self.discriminator_optimizer, self.config.discriminator_lr)
        self.global_step = int(gen.get("step", 0))
        self.warmed_up = True
        best = gen.get("best_reward")
        self.best_reward = best if best is not None else -math.inf
        if gen.get("rng_state"):
            ckpt.set_rng_state(self.rng, gen["rng_state"])
        if self.dist.enabled:  # the saved stream is rank 0's: give each rank its own again
            torch.manual_seed(int(torch.randint(2**31, (1,)).item()) + 1000 * self.dist.rank)
        self.log.truncate_after(self.completed_stage)
        self.visibility.resumed_from(path, gen.get("visible_tests"))  # checked against this run's split
        self.book.load_state_dict(gen.get("mistake_book"))
        self.pass_rates.load_state_dict(gen.get("pass_rates"))
        return gen.get("metrics", {})

    def _players_and_optimizers(self) -> tuple:
        return (self.generator, self.discriminator), (self.generator_optimizer, self.discriminator_optimizer)


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

