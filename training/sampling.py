"""Which problems each RL iteration sees.

`uniform`: shuffled passes over the training set, reshuffled at every stage.

`edge`: RL gains come from problems the policy solves sometimes. The trainer
keeps a running pass-rate estimate per problem (`PassRates`, from the
code-stage rollouts it runs anyway), and each batch takes most of its problems
from those whose estimate is strictly between 0 and 1; a share `explore` is
drawn from all problems, so unseen ones get an estimate and others can come
back. Without an estimate yet, that is uniform.

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
EDGE_DECAY = 0.5  # weight of a problem's pass-rate history against its newest group
EDGE_MARGIN = 0.05  # an estimate within this of 0 or 1 counts as solved never or always


class PassRates:
    """A running pass-rate estimate per training problem, from the code-stage groups the run already rolls out.

    Kept by the trainer across stages and in every checkpoint, so a resumed
    run draws as the uninterrupted one would. A problem's estimate is the
    share of its group that passed every visible test, blended with its
    history (EDGE_DECAY); it is on the edge of competence when it lies
    strictly between EDGE_MARGIN and 1 - EDGE_MARGIN.
    """

    def __init__(self):
        self.rates: dict = {}  # problem id -> estimate

    def note(self, problems: list, group_size: int, passed: list, dist) -> None:
        """Blend in each problem's group (`passed`: one bool per candidate, problem-major), over every rank."""
        mine = [(p.id, sum(passed[b * group_size:(b + 1) * group_size]) / group_size) for b, p in enumerate(problems)]
        for pid, share in (row for part in dist.gather(mine) for row in part):
            old = self.rates.get(pid)
            self.rates[pid] = share if old is None else EDGE_DECAY * old + (1 - EDGE_DECAY) * share

    def on_edge(self, problem_id: str) -> bool:
        rate = self.rates.get(problem_id)
        return rate is not None and EDGE_MARGIN < rate < 1 - EDGE_MARGIN

    def state_dict(self) -> dict:
        return {"rates": dict(self.rates)}

    def load_state_dict(self, state: dict | None) -> None:
        self.rates = dict((state or {}).get("rates", {}))


class ProblemSampler:
    """One stage's problem draws; a new stage gets a new sampler (spread at stages 1-4 says nothing about code)."""

    def __init__(self, problems: list, method: str, batch_size: int, seed: int, global_step: int, dist,
                 pass_rates: PassRates | None = None, explore: float = 0.25):
        self.problems = problems
        self.pass_rates = pass_rates if pass_rates is not None else PassRates()
        self.explore = explore
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
        if self.method == "edge":
            return self.edge_batch(self.batch_size, global_step)
        n = len(self.order)
        return [self.order[(iteration * self.batch_size + i) % n] for i in range(self.batch_size)]

    def note_spread(self, problems: list, group_size: int, valid: torch.Tensor) -> None:
        """Record, per family, whether each problem's group had reward spread (all ranks, same order)."""
        mine = [(p.family or "", bool(valid[b * group_size])) for b, p in enumerate(problems)]
        for family, spread in (row for part in self.dist.gather(mine) for row in part):
            old = self.family_spread.get(family, 1.0)  # unseen families start optimistic
            self.family_spread[family] = SPREAD_DECAY * old + (1 - SPREAD_DECAY) * float(spread)

    def extra_batch(self, global_step: int, draw: int, exclude: set) -> list:
        """Dynamic sampling's `draw`-th further global batch of this step: problems whose ids are not in `exclude`.

        Drawn as the method draws (uniform: every problem alike), without
        replacement; when too few problems are left, the rest repeat.
        """
        rng = random.Random(f"{self.seed}-{global_step}-{draw}")
        fresh = [p for p in self.problems if p.id not in exclude]
        return self._weighted_draw(fresh or self.problems, self.batch_size, rng, by_spread=self.method == "informative")

    def edge_batch(self, size: int, global_step: int) -> list:
        """`size` distinct problems while they last: all but `explore` of them on the edge of competence, if so many are."""
        rng = random.Random(self.seed * 1000 + global_step)
        edge = [p for p in self.problems if self.pass_rates.on_edge(p.id)]
        chosen = rng.sample(edge, min(len(edge), size - round(size * self.explore)))
        taken = {p.id for p in chosen}
        others = [p for p in self.problems if p.id not in taken]
        chosen += rng.sample(others, min(size - len(chosen), len(others)))
        rng.shuffle(chosen)
        return [chosen[i % len(chosen)] for i in range(size)]

    def edge_share(self, problems: list) -> float:
        """The share of `problems` on the edge of competence (the log's `edge_share`)."""
        return sum(self.pass_rates.on_edge(p.id) for p in problems) / len(problems) if problems else 0.0

    def informative_batch(self, size: int, global_step: int) -> list:
        """`size` distinct problems, families weighted by their spread rate (weighted sampling without replacement)."""
        return self._weighted_draw(self.problems, size, random.Random(self.seed * 1000 + global_step), by_spread=True)

    def _weighted_draw(self, problems: list, size: int, rng: random.Random, by_spread: bool) -> list:
        """`size` problems, distinct while they last; by_spread weights families by their spread rate."""
        counts: dict = {}
        for p in problems:
            counts[p.family or ""] = counts.get(p.family or "", 0) + 1
        keys = []
        for i, p in enumerate(problems):
            family = p.family or ""
            weight = max(self.family_spread.get(family, 1.0), SPREAD_FLOOR) / counts[family] if by_spread else 1.0
            keys.append((rng.random() ** (1.0 / weight), i))  # Efraimidis-Spirakis: top keys win
        chosen = sorted(keys, reverse=True)[: min(size, len(problems))]
        batch = [problems[i] for _, i in chosen]
        return [batch[i % len(batch)] for i in range(size)]


def cap_groups(valid: torch.Tensor, group_size: int, capacity: int, dist) -> torch.Tensor:
    """`valid` with only the first `capacity` groups that have spread, counted over every rank in rank order.

    Dynamic sampling trains on a batch of `capacity` informative groups; the
    extra draws can find more, and those beyond it are left out.
    """
    groups = valid.view(-1, group_size)[:, 0]  # (B,)
    mine = int(groups.sum())
    before = sum(dist.gather(mine)[: dist.rank])
    room = max(0, capacity - before)
    keep = groups & (groups.long().cumsum(0) <= room)
    return keep.repeat_interleave(group_size)


def rollouts_until_full(drawn: list, roll, spread_counts, sampler: ProblemSampler, config, dist, global_step: int) -> list:
    """The scored rollouts of the global batch `drawn` and, under dynamic_sampling, of more problems.

    `roll(problems)` rolls out and scores this rank's share; `spread_counts(batches)`
    counts this rank's groups with reward spread per player. Extra draws
    (`ProblemSampler.extra_batch`) go on until each player has
    problems_per_batch such groups over every rank, or max_rollout_batches
    rollouts were taken. Returns every batch rolled out, in order.
    """
    batches, seen, problems = [], {p.id for p in drawn}, drawn
    while True:
        batches.append(roll(dist.shard(problems)))
        if not config.dynamic_sampling or len(batches) >= config.max_rollout_batches:
            return batches
        found = [dist.sum(n) for n in spread_counts(batches)]
        if min(found) >= config.problems_per_batch:
            return batches
        problems = sampler.extra_batch(global_step, len(batches), seen)
        seen.update(p.id for p in problems)

