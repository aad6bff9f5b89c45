"""Reward functions: one contract, a registry of names, weights from config.

Every reward has the shape

    fn(batch: RewardBatch) -> list[float | None]

with one value per completion, in [0, 1], or None where the term does not
apply (a stage-5 execution reward on a stage-2 completion, a problem without
validated discriminator tests). The trainer combines the terms that apply
into one reward per completion: their weighted mean, so the total stays in
[0, 1] whatever the weights.

Rewards that need a model or the sandbox are built by factories registered
under a name (`REWARDS["reference_tests"](trainer)` returns the function);
the names are the keys of `TrainingConfig.rewards`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from reasoning.stages import parses

RewardFn = Callable[["RewardBatch"], list]
REWARDS: dict[str, Callable[..., RewardFn]] = {}


def register(name: str):
    """Register a reward factory `factory(trainer) -> RewardFn` under `name`."""

    def wrap(factory):
        REWARDS[name] = factory
        return factory

    return wrap


@dataclass
class RewardBatch:
    """What a reward function sees: N = len(completions) candidates for one stage."""

    stage_id: int
    problems: list  # Problem per completion (repeated G times per problem)
    prefixes: list  # list[list[str]]: stages 1..k-1 per completion
    completions: list  # extracted stage text per completion
    # Stage 5, per completion: results (list[bool]) on the problem's reference tests,
    # and on the discriminator's tests that the reference solution passes.
    reference_results: list | None = None
    discriminator_results: list | None = None
    # Stages 1-4 with look-ahead: per completion, pass fraction of the greedily completed chain.
    lookahead_pass: list | None = None
    extras: dict = field(default_factory=dict)


def combine(terms: dict[str, list], weights: dict[str, float], n: int) -> list[float]:
    """Weighted mean of the terms that apply to each of n completions; 0 where none apply."""
    total = []
    for i in range(n):
        num = den = 0.0
        for name, values in terms.items():
            value, weight = values[i], weights.get(name, 0.0)
            if value is None or weight <= 0:
                continue
            if not math.isfinite(value):
                value = 0.0
            num += weight * value
            den += weight
        total.append(num / den if den > 0 else 0.0)
    return total


@register("discriminator")
def discriminator_reward(trainer) -> RewardFn:
    """Stages 1-4: probability that the stage output is reference-quality."""

    def fn(batch: RewardBatch) -> list:
        if batch.stage_id == 5 or trainer.discriminator is None:
            return [None] * len(batch.completions)
        items = [(p.prompt, prefix, batch.stage_id, text) for p, prefix, text in zip(batch.problems, batch.prefixes, batch.completions)]
        return [float(x) for x in trainer.discriminator_scores(items)]

    return fn


@register("lookahead")
def lookahead_reward(trainer) -> RewardFn:
    """Stages 1-4: pass fraction of the chain completed greedily from this output."""

    def fn(batch: RewardBatch) -> list:
        if batch.stage_id == 5 or batch.lookahead_pass is None:
            return [None] * len(batch.completions)
        return list(batch.lookahead_pass)

    return fn


def _pass_fraction(results: list) -> float:
    return sum(results) / len(results) if results else 0.0


def runnable(code: str) -> bool:
    """Code that is non-empty and parses; anything else scores 0."""
    return bool(code.strip()) and parses(code)


@register("reference_tests")
def reference_tests_reward(trainer) -> RewardFn:
    """Stage 5: pass fraction on the problem's reference tests; unparseable code scores 0."""

    def fn(batch: RewardBatch) -> list:
        if batch.stage_id != 5:
            return [None] * len(batch.completions)
        return [
            _pass_fraction(results) if runnable(code) else 0.0
            for code, results in zip(batch.completions, batch.reference_results)
        ]

    return fn


@register("discriminator_tests")
def discriminator_tests_reward(trainer) -> RewardFn:
    """Stage 5: pass fraction on the discriminator's tests that the reference passes.

    None for problems where the discriminator wrote no valid test, so the term
    never rewards an empty test set.
    """

    def fn(batch: RewardBatch) -> list:
        if batch.stage_id != 5:
            return [None] * len(batch.completions)
        return [
            None if not results else (_pass_fraction(results) if runnable(code) else 0.0)
            for code, results in zip(batch.completions, batch.discriminator_results)
        ]

    return fn


def cure_test_rewards(passes_reference: list[bool], wrong_pass_matrix: list[list[bool]], invalid_penalty: float = 0.0) -> list[float]:
    """CURE reward of each generated test (DESIGN.md, discriminator update (b)).

    passes_reference[j]: test j passes the reference solution (it is valid).
    wrong_pass_matrix[i][j]: wrong candidate i passes test j. A wrong candidate
    is one that fails at least one reference test.

    valid test:   + share of wrong candidates it fails (its catch rate);
    invalid test: - share of wrong candidates it lets pass; -1 when there are
                  no wrong candidates to measure it on, since a test the
                  reference fails is wrong whatever the candidates do.

    `invalid_penalty` is subtracted from every invalid test's reward. CURE's
    reward alone gives an invalid test that every wrong candidate fails 0, the
    same as a valid test that catches nothing, so it does not push a weak test
    writer towards valid tests; 0 is CURE as published.
    """
    n_wrong = len(wrong_pass_matrix)
    rewards = []
    for j, valid in enumerate(passes_reference):
        if n_wrong == 0:
            rewards.append(0.0 if valid else -1.0 - invalid_penalty)
            continue
        passed = sum(1 for row in wrong_pass_matrix if row[j])
        rewards.append((n_wrong - passed) / n_wrong if valid else -passed / n_wrong - invalid_penalty)
    return rewards


def writer_sample_reward(test_rewards: list, how: str = "mean") -> float:
    """A test-writer sample's reward from the CURE rewards of its tests; -1 for a sample without a test.

    "mean" dilutes a test that catches wrong code with every valid one beside
    it that catches nothing, so a writer learns to write one safe test; "sum"
    never lowers the reward for an extra valid test.
    """
    if not test_rewards:
        return -1.0
    total = float(sum(test_rewards))
    return total if how == "sum" else total / len(test_rewards)
