"""The outcome judge: the scoring head as the probability that a chain's code passes.

With `--judge.target=outcome` the discriminator's scoring head learns, by
binary cross-entropy, whether the chain that stages 1..k belong to ended in
code that passes the reference tests the reward sees. Its labels are free:
every stage-5 rollout and every look-ahead completion is a full chain with a
verdict. They go into a bounded `JudgeReplay`, so that stage 1's judge has
data before stage 1's RL starts: when the replay is empty at the start of a
stage 1-4, the trainer samples chains from the current generator, runs them,
and labels them (`seed_chains`). The head only ever reads what the generator
wrote (problem, stages 1..k), never the tests.

A share of the problems (`judge.holdout`, by a hash of the problem id) is
never trained on: their chains give the judge's AUC and Brier score.

    python -m training.judge --checkpoint checkpoints/final --compare OTHER_DIR
        # AUC / Brier per stage k on fresh chains of held-out instances,
        # the checkpoint's head beside another checkpoint's on the same chains
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections import deque

import numpy as np
import torch

from reasoning.stages import NUM_STAGES
from training.chains import LabelledChain, chain_passed, generate_chains  # noqa: F401  (LabelledChain: importable from here)
from training.data.problem import in_hashed_share
from training.losses import scoring_head_step

JUDGED_STAGES = tuple(range(1, NUM_STAGES))  # stages 1-4: the code stage is judged by execution


def held_out(problem_id: str, share: float) -> bool:
    """Whether a problem's chains belong to the judge's held-out slice (a stable hash of its id)."""
    return in_hashed_share(problem_id, share)


class JudgeReplay:
    """The most recent labelled chains, up to `capacity` of them in training and in the held-out slice each."""

    def __init__(self, capacity: int, holdout: float):
        if capacity < 1:
            raise ValueError(f"judge replay capacity must be at least 1, got {capacity}")
        self.holdout_share = holdout
        self.train: deque = deque(maxlen=capacity)
        self.holdout: deque = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self.train) + len(self.holdout)

    def add(self, chains: list) -> None:
        for chain in chains:
            if len(chain.stages) < len(JUDGED_STAGES):
                raise ValueError(f"a labelled chain needs stages 1-4, got {len(chain.stages)}")
            (self.holdout if held_out(chain.problem_id, self.holdout_share) else self.train).append(chain)

    def sample(self, n: int, rng: random.Random, stages=JUDGED_STAGES) -> tuple[list, list]:
        """n training examples (items, labels): a random chain each, judged at a random stage of `stages`."""
        if not self.train:
            return [], []
        chains = [self.train[rng.randrange(len(self.train))] for _ in range(n)]
        items = [c.item(rng.choice(stages)) for c in chains]
        return items, [float(c.passed) for c in chains]

    def state(self) -> dict:
        return {"train": len(self.train), "holdout": len(self.holdout),
                "positive_share": positive_share(list(self.train) + list(self.holdout))}


def positive_share(chains: list) -> float | None:
    return float(np.mean([c.passed for c in chains])) if chains else None


# ------------------------------------------------------------------ metrics
def auc(scores: list, labels: list) -> float | None:
    """Area under the ROC curve (the probability that a positive outranks a negative; ties count half).

    None when the labels hold only one class.
    """
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def brier(probs: list, labels: list) -> float | None:
    """Mean squared error of probabilities against 0/1 outcomes (0 is perfect, 0.25 a constant 0.5)."""
    if not probs:
        return None
    return float(np.mean((np.asarray(probs, dtype=float) - np.asarray(labels, dtype=float)) ** 2))


def within_problem_auc(probs: list, chains: list) -> float | None:
    """AUC over pairs of chains of the same problem, one passing and one not.

    What group-relative advantages see: a judge that only knows which
    problems are hard scores 0.5 here, however high its AUC over all chains.
    None when no problem has both a passing and a failing chain.
    """
    by_problem: dict = {}
    for p, c in zip(probs, chains):
        by_problem.setdefault(c.problem_id, []).append((p, c.passed))
    wins = pairs = 0.0
    for rows in by_problem.values():
        pos = [p for p, ok in rows if ok]
        neg = [p for p, ok in rows if not ok]
        for a in pos:
            for b in neg:
                wins += 1.0 if a > b else 0.5 if a == b else 0.0
                pairs += 1
    return wins / pairs if pairs else None


def judge_probabilities(discriminator, chains: list, k: int, batch_size: int = 32) -> list:
    """The scoring head's probability for stage k of each chain, no gradient (parameters already gathered)."""
    probs = []
    discriminator.model.eval()
    for lo in range(0, len(chains), batch_size):
        with torch.no_grad():
            logits = discriminator.score_batch([c.item(k) for c in chains[lo : lo + batch_size]])
        probs += torch.sigmoid(logits.float()).tolist()
    return probs


def judge_quality(discriminator, chains: list, stages=JUDGED_STAGES, dist=None) -> dict:
    """Per stage k: AUC, Brier score and the share of positive chains, of the head on `chains`.

    Under data parallelism every rank calls it (with its own chains, maybe
    none): the parameters are gathered once around the whole evaluation.
    """
    labels = [c.passed for c in chains]
    out = {}
    with dist.gathered(discriminator.model) if dist is not None else contextlib.nullcontext():
        for k in stages:
            probs = judge_probabilities(discriminator, chains, k)
            out[k] = {"auc": auc(probs, labels), "within_problem_auc": within_problem_auc(probs, chains),
                      "brier": brier(probs, labels), "positive_share": positive_share(chains), "chains": len(chains)}
    return out


# ------------------------------------------------------------------ labelling
def label_chains(problems: list, chains: list, sandbox, trusted_outcomes) -> list:
    """Run each chain's code on its problem's reference tests; LabelledChains in order.

    `trusted_outcomes(results, n)` turns a problem's sandbox results into the
    outcomes the reward sees (Rollouts.trusted_outcomes: forgeable tests out),
    so the label is exactly what the reward would say.
    """
    results = sandbox.run_batch([(c[-1], list(p.tests), p.entry_point) for p, c in zip(problems, chains)])
    out = []
    for p, c, r in zip(problems, chains, results):
        (outcomes,), _ = trusted_outcomes([r], len(p.tests))
        out.append(LabelledChain(p.id, p.prompt, tuple(c[: len(JUDGED_STAGES)]), chain_passed(outcomes)))
    return out


def seed_chains(rollouts, problems: list, n: int, rng: random.Random) -> list:
    """n chains sampled at the run's temperature from the current generator, on random `problems`, labelled."""
    config = rollouts.config
    picked = [problems[rng.randrange(len(problems))] for _ in range(n)]
    with torch.no_grad(), rollouts.dist.gathered(rollouts.generator.model):
        chains = generate_chains(rollouts.generator, [p.prompt for p in picked], config.max_new_tokens,
                                 temperature=config.temperature, top_p=config.top_p)
    return label_chains(picked, chains, rollouts.sandbox, rollouts.trusted_outcomes)


class StageJudge:
    """The outcome judge in a run: its replay of labelled chains, its seeding, its BCE steps and its metrics."""

    def __init__(self, discriminator, optimizer, rollouts, config, dist, log):
        self.discriminator, self.optimizer, self.rollouts = discriminator, optimizer, rollouts
        self.config, self.dist, self.log = config, dist, log
        self.replay = JudgeReplay(config.judge.replay_size, config.judge.holdout)
        self.rng = random.Random(config.seed + 3 + 1000 * dist.rank)

    def prepare(self, problems: list) -> dict:
        """Before a stage 1-4: with an empty replay, sample, run and label chains, and train on them."""
        jc = self.config.judge
        if len(self.replay) or jc.seed_chains == 0:
            return {}
        self.observe(seed_chains(self.rollouts, problems, jc.seed_chains, self.rng))
        bar = self.log.progress_bar(jc.seed_steps, "judge on seeded chains")
        stats = {}
        for _ in range(jc.seed_steps):
            stats = self.step()
            bar.update(1)
        bar.close()
        return {"judge_seed_chains": jc.seed_chains, "judge_seed_positive_share": self.replay.state()["positive_share"],
                **{f"judge_seed_{k}": v for k, v in stats.items()}}

    def observe(self, chains: list) -> None:
        self.replay.add(chains)

    def step(self) -> dict:
        """One BCE step of the scoring head on a sample of the replay's training chains."""
        items, labels = self.replay.sample(self.config.judge.batch_size, self.rng)
        stats = scoring_head_step(self.discriminator, self.optimizer, items, labels, self.dist, self.config.max_grad_norm)
        return {**stats, "judge_replay": len(self.replay)}

    def quality(self, stage_id: int) -> dict:
        """AUC, Brier score and positive share of stage `stage_id`'s judgements on the held-out chains."""
        q = judge_quality(self.discriminator, list(self.replay.holdout), stages=(stage_id,), dist=self.dist)[stage_id]
        return {f"judge_{k}": v for k, v in q.items()}


if __name__ == "__main__":  # `python -m training.judge`: the report's command line lives with the evaluation
    from training.evaluation.judge_report import main

    sys.exit(main())
