"""The mistake book: per problem, valid tests that once failed a candidate, replayed on later candidates.

    book = MistakeBook(size=8, max_age=20)
    book.record("affine/3", ["assert affine(0) == 1"], step=12)   # a valid test that failed a candidate
    book.tests("affine/3", step=20)                               # -> ["assert affine(0) == 1"]
    book.tests("affine/3", step=33)                               # -> [] (no catch for more than 20 steps)

A test the test writer wrote, that the reference solution passes and that a
candidate failed, marks a bug the generator made. The trainer runs the book's
tests of a problem on every later candidate of that problem, so the bug keeps
costing reward until the generator stops making it. Each entry remembers the
step (generator update) of its last catch: a test that no candidate has failed
for more than `max_age` steps has done its job and leaves, and a problem holds
at most `size` tests, the least recently useful going first.
"""

from __future__ import annotations

from reasoning.stages import canonical_test
from training.rewards import runnable


class MistakeBook:
    def __init__(self, size: int, max_age: int):
        if size < 0 or max_age < 1:
            raise ValueError(f"a mistake book needs size >= 0 and max_age >= 1, got {size} and {max_age}")
        self.size = size
        self.max_age = max_age
        self.entries: dict = {}  # problem id -> {test: step of its last catch}, oldest catch first
        self.runs = 0  # candidate x book-test runs since the last `stats()`
        self.hits = 0  # of those, the runs the candidate failed

    def __bool__(self) -> bool:
        return self.size > 0

    def __len__(self) -> int:
        return sum(len(tests) for tests in self.entries.values())

    def tests(self, problem_id: str, step: int) -> list:
        """The problem's tests still in the book at `step` (the expired ones leave)."""
        self._expire(problem_id, step)
        return list(self.entries.get(problem_id, {}))

    def record(self, problem_id: str, caught: list, step: int) -> None:
        """Valid tests that failed a candidate at `step`: added, or their last catch moved to `step`."""
        if not self.size or not caught:
            return
        book = self.entries.setdefault(problem_id, {})
        for test in dict.fromkeys(caught):
            book.pop(test, None)  # re-inserted last: the dict stays ordered by last catch
            book[test] = step
        while len(book) > self.size:
            del book[next(iter(book))]
        self._expire(problem_id, step)

    def record_batch(self, batch, step: int) -> dict:
        """Put the valid tests that failed a runnable candidate of a code-stage `batch` in the book; its row of the log.

        A test that the problem's reference tests (those the run sees) already
        hold stays out: every candidate runs it anyway, so it would add nothing.
        """
        tb, G = batch.test_batch, batch.group_size
        self.count(*tb.book_runs())
        for b, problem in enumerate(batch.problems):
            known = {canonical_test(t) for t in problem.tests}
            caught = [t for g in range(G) if runnable(batch.codes[b * G + g]) for t in tb.caught_tests(b, g)
                      if canonical_test(t) not in known]
            self.record(problem.id, caught, step)
        return self.stats()

    def count(self, runs: int, hits: int) -> None:
        """Book tests run on candidates this iteration, and how many the candidates failed."""
        self.runs += runs
        self.hits += hits

    def stats(self) -> dict:
        """The log's row: entries in all, problems with any, and the hit rate of the runs since the last call."""
        row = {"mistake_book_size": len(self), "mistake_book_problems": len(self.entries)}
        if self.runs:
            row["mistake_book_hit_rate"] = self.hits / self.runs
        self.runs = self.hits = 0
        return row

    def _expire(self, problem_id: str, step: int) -> None:
        book = self.entries.get(problem_id)
        if book is None:
            return
        for test in [t for t, last in book.items() if step - last > self.max_age]:
            del book[test]
        if not book:
            del self.entries[problem_id]

    # -------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {"size": self.size, "max_age": self.max_age,
                "entries": {pid: [[t, s] for t, s in tests.items()] for pid, tests in self.entries.items()}}

    def load_state_dict(self, state: dict | None) -> None:
        """The entries of a saved book (none when `state` is None); this run's size and age bound them."""
        self.entries = {}
        for pid, tests in ((state or {}).get("entries") or {}).items():
            self.entries[pid] = {t: int(s) for t, s in tests}
            while len(self.entries[pid]) > self.size:
                del self.entries[pid][next(iter(self.entries[pid]))]
            if not self.entries[pid]:
                del self.entries[pid]
