"""Visible and hidden reference tests of the training problems.

Real data often has few tests per problem (MBPP: 3), and code that passes
them can still be wrong. `visible_tests: k` reproduces that on any source: the
run sees only k reference tests of each training problem, the rest are
hidden. Which k is a fixed choice per problem:

    first   the first k, as the problem lists them (the curriculum lists edge cases first)
    random  k at random, seeded by the run's seed and the problem's id

Hidden tests never reach the reward, the warm-up, the scoring head or the
outcome judge: the trainer hands every one of them the visible copies that
`TestVisibility.split` returns. The trainer keeps the hidden tests only to
log what RL cannot see (`hidden_pass_rate`, `false_positive_rate`).
Evaluation always uses every test. The reference solution stays visible:
it validates the discriminator's tests, as in CURE and UTRL.

The choice is recorded in every checkpoint (`record`), and a run refuses to
resume from a checkpoint that was trained on tests it would hide
(`check_resumable`).
"""

from __future__ import annotations

import dataclasses
import random

from training.errors import UserError

CHOICES = ("first", "random")


def visible_indices(problem, k: int, choice: str, seed: int) -> list:
    """Indices of `problem`'s visible tests: all when k is 0 or k covers them."""
    n = len(problem.tests)
    if k <= 0 or k >= n:
        return list(range(n))
    if choice == "first":
        return list(range(k))
    return sorted(random.Random(f"{seed}:{problem.id}").sample(range(n), k))


class TestVisibility:
    """The run's split of each training problem's tests into visible and hidden ones."""

    __test__ = False  # not a pytest class, whatever imports it

    def __init__(self, k: int, choice: str, seed: int):
        if choice not in CHOICES:
            raise UserError(f"visible_choice must be {' or '.join(CHOICES)}, got {choice!r}")
        self.k, self.choice, self.seed = k, choice, seed
        self.indices: dict = {}  # problem id -> visible test indices
        self.hidden: dict = {}  # problem id -> hidden tests
        self._visible: dict = {}  # problem id -> the visible copy handed out
        self._resumed = None  # (source, its record) of a resumed checkpoint, checked at the next split

    @property
    def enabled(self) -> bool:
        return self.k > 0

    def resumed_from(self, source: str, saved: dict | None) -> None:
        """The run resumed from `source`, whose `record()` is `saved`: the next `split` checks it (`check_resumable`)."""
        self._resumed = (source, saved)

    def split(self, problems: list) -> list:
        """The problems with only their visible tests; a problem already split is returned as it is.

        The first split after `resumed_from` also checks that the checkpoint
        saw no test this run hides.
        """
        out = []
        for p in problems:
            seen = self._visible.get(p.id)
            if seen is not None and (p is seen or list(p.tests) == list(seen.tests)):
                out.append(seen)
                continue
            idx = visible_indices(p, self.k, self.choice, self.seed)
            chosen = set(idx)
            self.indices[p.id] = idx
            self.hidden[p.id] = [t for i, t in enumerate(p.tests) if i not in chosen]
            visible = p if len(idx) == len(p.tests) else dataclasses.replace(p, tests=[p.tests[i] for i in idx])
            self._visible[p.id] = visible
            out.append(visible)
        if self._resumed is not None:
            source, saved = self._resumed
            self.check_resumable(saved, source)
            self._resumed = None
        return out

    def hidden_tests(self, problem) -> list:
        """The tests of `problem` the run does not see (empty when every test is visible)."""
        return self.hidden.get(problem.id, [])

    def record(self) -> dict:
        """What a checkpoint stores: the rule, and the visible indices of every problem the run split."""
        return {"k": self.k, "choice": self.choice, "seed": self.seed,
                "indices": dict(self.indices) if self.enabled else {}}

    def check_resumable(self, saved: dict | None, source: str) -> None:
        """Refuse a checkpoint whose training saw tests that this run hides.

        `saved` is the checkpoint's `record()` (None: saved before the record
        existed, when every test was visible). Call after `split`.
        """
        if not self.enabled:
            return
        if not saved or int(saved.get("k", 0)) <= 0:
            raise UserError(
                f"{source} was trained on every reference test, so this run's hidden tests (visible_tests="
                f"{self.k}) are not hidden from it; resume from a warm-up made with --visible_tests={self.k}"
            )
        seen = saved.get("indices") or {}
        for pid, idx in self.indices.items():
            if pid in seen and not set(seen[pid]) <= set(idx):
                raise UserError(
                    f"{source} saw tests {sorted(seen[pid])} of {pid}, and this run (visible_tests={self.k}, "
                    f"visible_choice={self.choice}, seed={self.seed}) hides some of them; resume with the "
                    f"checkpoint's visible_tests={saved.get('k')}, visible_choice={saved.get('choice')} "
                    f"and seed={saved.get('seed')}"
                )
