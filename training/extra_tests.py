"""Tests the code reward runs beyond the visible reference tests, labelled by the reference solution.

Two sources, one rule: a test's expected value comes from the reference
solution, never from whoever proposed the call.

- `test_labels=reference`: the test writer's asserts are calls. The sandbox
  runs the reference on each call's arguments (`Sandbox.label`), and the
  candidates run `assert f(args) == <the reference's result>`. The writer is
  still judged on its own expected value: a test whose value the reference
  disagrees with is `wrong_value`, and counts against the writer, though its
  call (a good input) still tests the candidates.
- `fuzz_tests=K`: K calls per problem made by type-aware mutation of the
  visible tests' arguments (`training/data/mutation.py`), labelled the same
  way; no learned writer.

A call whose evaluated arguments equal a visible reference test's is a
`copy`, and one that the same writer sample already made is a `duplicate`:
neither earns anything, and neither enters the pool twice. A call the
reference raises on (or times out on, or that is not one call of the entry
point) is `invalid`. The writer's reward (`writer_rewards`) follows UTRL and
CURE: validity = valid tests / max(min_valid_tests, tests written), so two or
three easy tests cannot score full marks, plus discrimination = the share of
the group's wrong candidates that one of the sample's valid tests fails (the
candidate it read, for a writer that reads code). A candidate is wrong when
it fails a visible test or a labelled one: labelled tests are right by
construction, so failing one is a bug found.
"""

from __future__ import annotations

import random

from training.data.mutation import mutated_calls
from training.rewards import runnable

VALID, WRONG, COPY, DUPLICATE, INVALID = "valid", "wrong_value", "copy", "duplicate", "invalid"
STATUSES = (VALID, WRONG, COPY, DUPLICATE, INVALID)
POOLED = (VALID, WRONG)  # statuses whose call the candidates run


class Labeller:
    """Labels calls with a problem's reference solution in the sandbox; knows each problem's visible calls."""

    def __init__(self, sandbox, seed: int = 0):
        self.sandbox = sandbox
        self.seed = seed
        self.fuzz_rounds = 0  # fuzz() calls so far: each round mutates afresh
        self._visible: dict = {}  # problem id -> call keys of its visible tests

    def label(self, problems: list, tests: list) -> list:
        """Per problem, one `Sandbox.label` answer per test of `tests[b]`, run on its reference solution."""
        todo = [b for b, t in enumerate(tests) if t]
        answers = self.sandbox.label_batch([(problems[b].reference_solution, list(tests[b]), problems[b].entry_point)
                                            for b in todo]) if todo else []
        out = [[] for _ in problems]
        for b, answer in zip(todo, answers):
            out[b] = answer
        return out

    def visible_calls(self, problems: list) -> list:
        """Per problem, the calls (arguments evaluated) of the tests it carries: the run's visible tests."""
        todo = list({p.id: p for p in problems if p.id not in self._visible}.values())
        for p, answers in zip(todo, self.label(todo, [p.tests for p in todo])):
            self._visible[p.id] = {a["call"] for a in answers if a["call"]}
        return [self._visible[p.id] for p in problems]

    def fuzz(self, problems: list, k: int) -> list:
        """Per problem, up to k labelled tests from mutations of its visible tests, none a copy of one."""
        self.fuzz_rounds += 1
        calls = [mutated_calls(p.tests, p.entry_point, k, random.Random(f"{self.seed}:{p.id}:{self.fuzz_rounds}"))
                 for p in problems]
        return self.fresh(problems, calls)

    def fresh(self, problems: list, calls: list) -> list:
        """Per problem, the labelled tests of `calls[b]` that the reference accepts, one per call, no copy of a visible one."""
        out = []
        for answers, visible in zip(self.label(problems, calls), self.visible_calls(problems)):
            seen, kept = set(visible), []
            for a in answers:
                if a["test"] and a["call"] not in seen:
                    seen.add(a["call"])
                    kept.append(a["test"])
            out.append(kept)
        return out

    def pool(self, problems: list, sample_tests: list, T: int) -> tuple:
        """(pools, labels): per problem its labelled tests, one per distinct pooled call; per sample its tests' (status, pool index).

        `sample_tests` holds T samples' written tests per problem, problem-major.
        The pool index is -1 for a test that is not pooled (copy, duplicate, invalid).
        """
        written = [list(dict.fromkeys(t for s in sample_tests[b * T:(b + 1) * T] for t in s)) for b in range(len(problems))]
        answers = self.label(problems, written)
        visible = self.visible_calls(problems)
        pools, labels = [], []
        for b in range(len(problems)):
            answer_of = dict(zip(written[b], answers[b]))
            pool, index = [], {}
            for s in sample_tests[b * T:(b + 1) * T]:
                mine, seen = [], set()
                for test in s:
                    a = answer_of[test]
                    status = (INVALID if not a["test"] else COPY if a["call"] in visible[b]
                              else DUPLICATE if a["call"] in seen else VALID if a["agrees"] else WRONG)
                    seen.add(a["call"])
                    if status in POOLED and a["call"] not in index:
                        index[a["call"]] = len(pool)
                        pool.append(a["test"])
                    mine.append((status, index[a["call"]] if status in POOLED else -1))
                labels.append(mine)
            pools.append(pool)
        return pools, labels


def writer_rewards(test_batch, completions: list, reference_results: list, group_size: int,
                   min_valid: int, reads_code: bool) -> list:
    """Each writer sample's reward (problem-major): validity + discrimination, each in [0, 1] (module docstring)."""
    tb, G, T = test_batch, group_size, test_batch.samples_per_problem
    rewards = []
    for b in range(len(tb.tests)):
        failed = []  # per candidate: the pool indices of the tests it failed
        for g in range(G):
            failed.append({j for r, j in zip(tb.candidate_results[b][g], tb.runs_of(b, g)) if not r})
        wrong = [g for g in range(G) if runnable(completions[b * G + g])
                 and (not all(reference_results[b * G + g]) or failed[g])]
        for t in range(T):
            labels = tb.labels[b * T + t]
            valid = {j for status, j in labels if status == VALID}
            validity = len(valid) / max(min_valid, len(labels), 1)
            if reads_code:  # sample t read candidate t
                caught = float(runnable(completions[b * G + t]) and bool(valid & failed[t]))
            else:
                caught = sum(1 for g in wrong if valid & failed[g]) / len(wrong) if wrong else 0.0
            rewards.append(validity + caught)
    return rewards


def label_stats(test_batch, n_problems: int) -> dict:
    """The log's view of labelled writer tests: the share of each status; tests and distinct valid calls per problem."""
    T = test_batch.samples_per_problem
    statuses = [status for labels in test_batch.labels for status, _ in labels]
    row = {f"test_{s}_share": (statuses.count(s) / len(statuses) if statuses else 0.0) for s in STATUSES}
    row["test_validity"] = row.pop("test_valid_share")
    row["tests_per_problem"] = len(statuses) / n_problems
    row["valid_tests_per_problem"] = sum(
        len({j for labels in test_batch.labels[b * T:(b + 1) * T] for status, j in labels if status == VALID})
        for b in range(n_problems)) / n_problems
    return row
