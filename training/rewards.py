"""Reward functions: one contract, a registry of names, weights from config.

Every reward is a plain function

    fn(batch: RewardBatch) -> list[float | None]

with one value per completion, in [0, 1], or None where the term does not
apply (a problem without validated discriminator tests). It is registered
with the stages it scores (the code stage, or stages 1-4) and the
`RewardBatch` fields it reads; `score_batch` fills exactly those
fields before calling it, and combines the terms that apply into one reward
per completion: their weighted mean, so the total stays in [0, 1] whatever
the weights. The names are the keys of `TrainingConfig.rewards`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Callable

from reasoning.stages import parses

RewardFn = Callable[["RewardBatch"], list]


@dataclass(frozen=True)
class Reward:
    fn: RewardFn
    code_stage: bool  # True: scores the code stage; False: stages 1-4
    needs: tuple  # RewardBatch fields that score() fills before calling fn


REWARDS: dict[str, Reward] = {}


@dataclass
class RewardBatch:
    """What a reward function sees: N = len(completions) candidates for one stage."""

    stage_id: int
    problems: list  # Problem per completion (repeated G times per problem)
    prefixes: list  # list[list[str]]: stages 1..k-1 per completion
    completions: list  # extracted stage text per completion
    # Code stage, per completion: results (list[bool]) on the reference tests the run
    # may see, and on the discriminator's tests that the reference solution passes.
    reference_results: list | None = None
    discriminator_results: list | None = None
    # Stages 1-4, per completion: pass fraction of the chain completed greedily from it,
    # and the discriminator's score of it.
    lookahead_pass: list | None = None
    discriminator_scores: list | None = None
    extras: dict = field(default_factory=dict)


NEEDS = tuple(f.name for f in fields(RewardBatch) if f.name not in ("stage_id", "problems", "prefixes", "completions", "extras"))


def register(name: str, *, code_stage: bool, needs: tuple = ()):
    """Register `fn(batch) -> list[float | None]` under `name`."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"reward {name!r} needs unknown RewardBatch fields {sorted(unknown)}; known: {NEEDS}")

    def wrap(fn):
        REWARDS[name] = Reward(fn=fn, code_stage=code_stage, needs=tuple(needs))
        return fn

    return wrap


def reward_weights(config) -> dict:
    """Each registered reward's weight from config.rewards; the discriminator's are 0 without a discriminator."""
    weights = {name: getattr(config.rewards, name) for name in REWARDS}
    if not config.use_discriminator:  # the ablation: execution reward only (and the fuzzer's tests, if any)
        weights["discriminator"] = 0.0
        if not config.fuzz_tests:
            weights["discriminator_tests"] = 0.0
    return weights


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


def score_batch(batch, weights: dict, rollouts, with_tests: bool, book_tests: list | None = None) -> list:
    """Fill batch.rewards (N floats in [0, 1]) and batch.terms of a rollout.StageBatch from the rewards that apply.

    A reward applies when its weight is positive and it scores this stage (a
    sampled trajectory is scored by execution, plus the judge's score of its
    stage-k output). Only the RewardBatch fields the applying rewards read are
    computed. The code stage always runs in the sandbox (`rollouts.execute`,
    with the discriminator's tests when `with_tests`, and the mistake book's
    `book_tests` per problem): its results are also the test writer's
    reward and the pass rate.
    """
    active = {
        name: reward for name, reward in REWARDS.items()
        if weights.get(name, 0) > 0 and (
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
        rollouts.execute(batch, with_tests=with_tests, book_tests=book_tests)
        reward_batch.reference_results = batch.reference_results
        tb = batch.test_batch
        reward_batch.discriminator_results = tb.valid_results() if tb else [[] for _ in batch.completions]
    if "lookahead_pass" in needs:
        reward_batch.lookahead_pass = rollouts.lookahead(batch)
    if "discriminator_scores" in needs:
        reward_batch.discriminator_scores = rollouts.discriminator_scores(batch)
    terms = {}
    for name, reward in active.items():
        values = reward.fn(reward_batch)
        if any(v is not None for v in values):  # keep only the terms that apply here
            terms[name] = values
    batch.terms = terms
    batch.rewards = combine(terms, weights, len(batch.completions))
    return batch.rewards


def pass_fraction(results: list) -> float:
    return sum(results) / len(results) if results else 0.0


def runnable(code: str) -> bool:
    """Code that is non-empty and parses; anything else scores 0."""
    return bool(code.strip()) and parses(code)


@register("discriminator", code_stage=False, needs=("discriminator_scores",))
def discriminator_reward(batch: RewardBatch) -> list:
    """Stages 1-4: the scoring head's probability that the stage output is reference-quality."""
    return list(batch.discriminator_scores)


@register("lookahead", code_stage=False, needs=("lookahead_pass",))
def lookahead_reward(batch: RewardBatch) -> list:
    """Stages 1-4: pass fraction of the chain completed greedily from this output."""
    return list(batch.lookahead_pass)


@register("reference_tests", code_stage=True, needs=("reference_results",))
def reference_tests_reward(batch: RewardBatch) -> list:
    """Code stage: pass fraction on the problem's reference tests; unparseable code scores 0."""
    return [
        pass_fraction(results) if runnable(code) else 0.0
        for code, results in zip(batch.completions, batch.reference_results)
    ]


@register("discriminator_tests", code_stage=True, needs=("discriminator_results",))
def discriminator_tests_reward(batch: RewardBatch) -> list:
    """Code stage: pass fraction on the discriminator's tests that the reference passes (and the fuzzer's, if any).

    None for problems where the discriminator wrote no valid test, so the term
    never rewards an empty test set.
    """
    return [
        None if not results else (pass_fraction(results) if runnable(code) else 0.0)
        for code, results in zip(batch.completions, batch.discriminator_results)
    ]


def cure_test_rewards(passes_reference: list[bool], wrong_pass_matrix: list[list[bool]], invalid_penalty: float = 0.0) -> list[float]:
    """CURE reward of each generated test (co-evolving coder and unit tester).

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


def test_writer_rewards(test_batch, completions: list, reference_results: list, group_size: int,
                        invalid_penalty: float = 0.0, how: str = "mean") -> list:
    """The reward of each test-writer sample (problem-major): its tests' CURE rewards, combined by `how`.

    A problem's wrong candidates are its runnable completions that fail a
    reference test; `test_batch` holds the pooled tests, their verdicts on
    the reference solution and every candidate's results on them.
    """
    G, T = group_size, test_batch.samples_per_problem
    rewards = []
    for b, tests in enumerate(test_batch.tests):
        wrong = [g for g in range(G) if runnable(completions[b * G + g]) and not all(reference_results[b * G + g])]
        per_test = cure_test_rewards(
            test_batch.passes_reference[b], [test_batch.candidate_results[b][g] for g in wrong], invalid_penalty
        )
        reward_of = dict(zip(tests, per_test))
        for t in range(T):
            rewards.append(writer_sample_reward([reward_of[x] for x in test_batch.sample_tests[b * T + t]], how))
    return rewards


def attack_reward(valid: list, caught: list, quiet: float = 0.1, quiet_cap: float = 0.3, invalid: float = 1.0) -> float:
    """The reward of one test-writer sample that read one candidate's code, from its tests.

    valid[j]: test j passes the reference solution (and the sandbox can check
    it out of the candidate's reach); caught[j]: the candidate it read fails
    test j. Per test:

    | test                                  | reward                            |
    |---------------------------------------|-----------------------------------|
    | valid, fails the candidate (a catch)  | +1                                |
    | valid, the candidate passes (quiet)   | +quiet, all quiet ones <= cap     |
    | invalid (whatever the candidate does) | -invalid                          |
    | no test at all                        | -1 for the sample                 |

    The sample's reward is the sum. Quiet tests together earn at most
    `quiet_cap` (below 1), so a writer cannot make up for a catch by piling
    up safe tests, and a writer facing a correct candidate still learns to
    write valid ones. For example, with the defaults: one catch and two quiet
    tests 1.2; three quiet tests 0.3, and a fourth adds nothing;
    one catch and one invalid test 0.
    """
    if len(valid) != len(caught):
        raise ValueError(f"{len(valid)} validity flags but {len(caught)} results")
    if not valid:
        return -1.0
    catches = sum(1 for ok, hit in zip(valid, caught) if ok and hit)
    quiets = sum(1 for ok, hit in zip(valid, caught) if ok and not hit)
    invalids = sum(1 for ok in valid if not ok)
    return catches + min(quiets * quiet, quiet_cap) - invalids * invalid


def attack_writer_rewards(test_batch, completions: list, quiet: float = 0.1, quiet_cap: float = 0.3) -> list:
    """The reward of each code-reading test-writer sample (one per candidate, problem-major): `attack_reward`.

    Sample i read candidate i. A candidate that does not parse fails every
    test, so failing it is no catch: its valid tests count as quiet.
    """
    rewards = []
    for b, tests in enumerate(test_batch.tests):
        index = {t: j for j, t in enumerate(tests)}
        for g in range(test_batch.samples_per_problem):
            i = b * test_batch.samples_per_problem + g
            ran = dict(zip(test_batch.runs_of(b, g), test_batch.candidate_results[b][g]))
            own = [index[t] for t in test_batch.sample_tests[i]]
            valid = [test_batch.passes_reference[b][j] for j in own]
            caught = [runnable(completions[i]) and not ran[j] for j in own]
            rewards.append(attack_reward(valid, caught, quiet, quiet_cap))
    return rewards
