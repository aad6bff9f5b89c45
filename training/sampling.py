"""Which problems each RL iteration sees.

`uniform`: shuffled passes over the training set, reshuffled at every stage.

`informative`: a group whose G rewards are all equal teaches nothing and is
skipped. At the code stage most groups are all-fail (or all-pass), and whole
families stay that way for many iterations, so the sampler learns per family
how often a group had spread and draws problems in proportion (never below
SPREAD_FLOOR, so a family that was hopeless can come back).

Every draw is seeded by the run's seed and global step, so all ranks draw the
same global batch and a resumed run draws what the uninterrupted one would.
"""

from __future__ import annotations

import random

import torch

SPREAD_FLOOR = 0.1
SPREAD_DECAY = 0.8  # weight of a family's history against its newest group


class ProblemSampler:
    """One stage's problem draws; a new stage gets a new sampler (spread at stages 1-4 says nothing about code)."""

    def __init__(self, problems: list, method: str, batch_size: int, seed: int, global_step: int, dist):
        self.problems = problems
        self.method = method
        self.batch_size = batch_size
        self.seed = seed
        self.dist = dist
        self.family_spread: dict = {}  # family -> running share of its groups with reward spread
        self.order = list(problems)
        random.Random(seed * 1000 + global_step).shuffle(self.order)

    def batch(self, iteration: int, global_step: int) -> list:
        """The global batch of `batch_size` problems for one iteration (the same on every rank)."""
        if self.method == "informative":
            return self.informative_batch(self.batch_size, global_step)
        n = len(self.order)
        return [self.order[(iteration * self.batch_size + i) % n] for i in range(self.batch_size)]

    def note_spread(self, problems: list, group_size: int, valid: torch.Tensor) -> None:
        """Record, per family, whether each problem's group had reward spread (all ranks, same order)."""
        mine = [(p.family or "", bool(valid[b * group_size])) for b, p in enumerate(problems)]
        for family, spread in (row for part in self.dist.gather(mine) for row in part):
            old = self.family_spread.get(family, 1.0)  # unseen families start optimistic
            self.family_spread[family] = SPREAD_DECAY * old + (1 - SPREAD_DECAY) * float(spread)

    def informative_batch(self, size: int, global_step: int) -> list:
        """`size` distinct problems, families weighted by their spread rate (weighted sampling without replacement)."""
        rng = random.Random(self.seed * 1000 + global_step)
        counts: dict = {}
        for p in self.problems:
            counts[p.family or ""] = counts.get(p.family or "", 0) + 1
        keys = []
        for i, p in enumerate(self.problems):
            family = p.family or ""
            weight = max(self.family_spread.get(family, 1.0), SPREAD_FLOOR) / counts[family]
            keys.append((rng.random() ** (1.0 / weight), i))  # Efraimidis-Spirakis: top keys win
        chosen = sorted(keys, reverse=True)[: min(size, len(self.problems))]
        batch = [self.problems[i] for _, i in chosen]
        return [batch[i % len(batch)] for i in range(size)]
