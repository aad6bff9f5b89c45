"""What the reward cannot see, for the log only: a batch's results on hidden tests, and the inference-style probe.

Nothing here feeds a reward or an update.
"""

from __future__ import annotations

from reasoning.stages import NUM_STAGES
from training.chains import chain_passed


def outcome_metrics(batch, visibility, rollouts) -> dict:
    """The candidates of a code-stage `batch` (rollout.StageBatch) judged on every reference test.

    hidden_pass_rate: share of candidates that pass every reference test,
    hidden ones included; false_positive_rate: of the candidates that pass
    every visible test, the share that fail a hidden one (both only when
    some tests are hidden). catch_rate: of the wrong candidates (failing a
    reference test, hidden ones included), the share that a valid
    discriminator test fails; false_positive_catch_rate: the same share of
    the false positives alone.
    """
    G, codes = batch.group_size, batch.codes
    visible_pass = batch.passed()
    correct = list(visible_pass)
    out = {}
    if visibility.enabled:
        hidden = [visibility.hidden_tests(p) for p in batch.problems]
        jobs = [(codes[b * G + g], tests, p.entry_point)
                for b, (p, tests) in enumerate(zip(batch.problems, hidden)) if tests for g in range(G)]
        results = iter(rollouts.sandbox.run_batch(jobs) if jobs else [])
        for b, tests in enumerate(hidden):
            if not tests:
                continue
            outcomes, _ = rollouts.trusted_outcomes([next(results) for _ in range(G)], len(tests))
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
        if visibility.enabled:  # the wrong ones only a test beyond the visible ones can catch
            missed = [hit for hit, ok, vis in zip(failed, correct, visible_pass) if vis and not ok]
            out["false_positive_catch_rate"] = sum(missed) / len(missed) if missed else None
    return {k: v for k, v in out.items() if v is not None}


def probe_pass_rate(problems: list, rollouts, dist) -> float:
    """Inference-style pass rate: greedy chains from the problem alone, scored on the tests the reward sees.

    `problems` are the run's fixed probe problems; each rank takes its share.
    """
    problems = dist.shard(problems)
    chains = rollouts.generate_chains(problems, upto=NUM_STAGES)
    results = rollouts.sandbox.run_batch([(c[-1], list(p.tests), p.entry_point) for c, p in zip(chains, problems)])
    passed = []
    for p, r in zip(problems, results):
        (outcomes,), _ = rollouts.trusted_outcomes([r], len(p.tests))
        passed.append(chain_passed(outcomes))
    total = dist.sum(len(passed))
    return dist.sum(sum(passed)) / total if total else 0.0
