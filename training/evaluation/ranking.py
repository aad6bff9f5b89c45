"""CodeT dual agreement: pick one of N sampled programs using generated tests.

CodeT (Chen et al., 2022, "CodeT: Code Generation with Generated Tests")
trusts neither the samples nor the tests alone. Samples that pass exactly the
same set of tests agree with each other *and* with those tests; a group is
scored by how many samples agree times how many tests they pass:

    score(group) = |samples in the group| * |tests the group passes|

The best group's first sample is the pick; equal scores go to the group whose
first sample comes first, so a run is deterministic.

    pick = codet_rank([[True, True, False],    # sample 0
                       [True, True, False],    # sample 1: agrees with 0 -> 2 x 2 = 4
                       [True, True, True]])    # sample 2: alone        -> 1 x 3 = 3
    pick.index == 0
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass, field

from training.config import TrainingConfig

TEST_MAX_NEW_TOKENS = TrainingConfig.test_max_new_tokens  # one test-writer sample, as in training


@dataclass(frozen=True)
class Group:
    """Samples that pass exactly the same tests."""

    passed: tuple  # the pass pattern: one bool per test
    members: tuple  # sample indices, ascending

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def tests_passed(self) -> int:
        return sum(self.passed)

    @property
    def score(self) -> int:
        return self.size * self.tests_passed


@dataclass(frozen=True)
class RankedPick:
    """The chosen sample and the evidence for it."""

    index: int  # the winning sample
    num_samples: int
    num_tests: int
    groups: tuple = field(default_factory=tuple)  # best first

    @property
    def winner(self) -> Group:
        return self.groups[0]

    def explain(self) -> str:
        """One sentence a user can check against the printed tests."""
        if self.num_samples == 1:
            return "only one sample was drawn"
        g = self.winner
        if self.num_tests == 0:
            return f"no usable tests were written, so all {self.num_samples} samples tie and the first one is kept"
        if g.score == 0:
            return (
                f"no sample passes any of the {self.num_tests} tests, so all groups score 0 "
                f"and the first sample is kept"
            )
        text = (
            f"sample {self.index} is the first of {g.size} sample{'s' if g.size != 1 else ''} that pass the same "
            f"{g.tests_passed} of {self.num_tests} tests (score {g.size} x {g.tests_passed} = {g.score})"
        )
        if len(self.groups) > 1:
            r = self.groups[1]
            text += f"; next best group: {r.size} x {r.tests_passed} = {r.score}"
        return text

    def to_dict(self) -> dict:
        return {
            "winner": self.index,
            "num_samples": self.num_samples,
            "num_tests": self.num_tests,
            "group_size": self.winner.size,
            "tests_passed": self.winner.tests_passed,
            "score": self.winner.score,
            "explanation": self.explain(),
            "groups": [
                {"members": list(g.members), "passed": list(g.passed), "score": g.score} for g in self.groups
            ],
        }


def group_by_passes(pass_matrix: list) -> list:
    """Groups of samples with identical pass patterns, in order of first member."""
    patterns = [tuple(bool(x) for x in row) for row in pass_matrix]
    if len({len(p) for p in patterns}) > 1:
        raise ValueError("every sample needs a result for every test (rows of the pass matrix differ in length)")
    members: dict = {}
    for i, pattern in enumerate(patterns):
        members.setdefault(pattern, []).append(i)
    return [Group(passed=p, members=tuple(m)) for p, m in members.items()]


def codet_rank(pass_matrix: list) -> RankedPick:
    """Choose a sample from `pass_matrix[i][j]` = sample i passes test j.

    Groups are ranked by score, then by their first member (lower wins).
    """
    if not pass_matrix:
        raise ValueError("codet_rank needs at least one sample")
    groups = sorted(group_by_passes(pass_matrix), key=lambda g: (-g.score, g.members[0]))
    return RankedPick(
        index=groups[0].members[0],
        num_samples=len(pass_matrix),
        num_tests=len(pass_matrix[0]),
        groups=tuple(groups),
    )


# ----------------------------------------------------------------- with a sandbox
def pass_matrix(sandbox, codes: list, tests: list, entry_point: str) -> list:
    """Run every code sample on every test: `matrix[i][j]` = sample i passes test j.

    A sample that crashes before reporting every test fails the rest.
    """
    if not tests:
        return [[] for _ in codes]
    results = sandbox.run_batch([(code, list(tests), entry_point) for code in codes])
    return [r.outcomes(len(tests)) for r in results]


def sample_test_texts(discriminator, items: list, num_tests: int = 5, temperature: float = 0.7,
                      max_new_tokens: int = TEST_MAX_NEW_TOKENS, batch_size: int = 32, samples: int | None = None) -> list:
    """Per (problem_text, entry_point[, code]) item, the test writer's raw completions (`merge_tests` makes tests of them).

    The batched form of `LLMDiscriminator.generate_tests` before the merge:
    same prompt and sampling, `samples` completions per item (default:
    `num_tests` when sampling, one when greedy), for hundreds of problems.
    """
    from reasoning.stages import writer_samples

    S = writer_samples(num_tests, temperature, samples)
    per_call = max(1, batch_size // S)  # prompts per generate call: about batch_size sequences
    out = []
    for lo in range(0, len(items), per_call):
        chunk = items[lo : lo + per_call]
        prompts = [discriminator.test_prompt(*item) for item in chunk]
        rollout = discriminator.sample_tests(prompts, num_samples=S, max_new_tokens=max_new_tokens, temperature=temperature)
        out.extend(rollout.texts[i * S : (i + 1) * S] for i in range(len(chunk)))
    return out


# ------------------------------------------------- the test writer's tests, evaluated
def rerank_samples(discriminator, problems: list, samples_per_problem: list, sandbox, num_tests: int = 5,
                   test_temperature: float = 0.7, max_new_tokens: int = TEST_MAX_NEW_TOKENS, bar=None, agreement: bool = True) -> list:
    """CodeT picks: per problem, the discriminator writes tests, every sample runs them, dual agreement picks one.

    Returns per problem a dict with the pick (RankedPick), the tests and the
    pass matrix, and `other_pick`: CodeT's pick from the same test samples
    merged the other way (with or without `agreement`).
    """
    batch = 32
    picks = []
    for lo in range(0, len(problems), batch):
        chunk = problems[lo : lo + batch]
        codes_chunk = samples_per_problem[lo : lo + batch]
        merged, union = _tests_both_ways(discriminator, chunk, num_tests, test_temperature, max_new_tokens, agreement)
        # one sandbox batch for the whole chunk: every sample against its problem's tests
        jobs = [(code, tests, p.entry_point) for p, tests, codes in zip(chunk, union, codes_chunk) for code in codes if tests]
        results = iter(sandbox.run_batch(jobs) if jobs else [])
        for tests, (main, other), codes in zip(union, merged, codes_chunk):
            rows = [dict(zip(tests, next(results).outcomes(len(tests)))) if tests else {} for _ in codes]
            matrix = [[row[t] for t in main] for row in rows]
            picks.append({"pick": codet_rank(matrix), "tests": main, "matrix": matrix,
                          "other_pick": codet_rank([[row[t] for t in other] for row in rows])})
        if bar is not None:
            bar.update(len(chunk))
    return picks


def _tests_both_ways(discriminator, problems: list, num_tests: int, temperature: float, max_new_tokens: int,
                     agreement: bool, codes: list | None = None) -> tuple:
    """The discriminator's tests per problem from one set of samples, merged with `agreement` and the other way.

    With `codes` (one per problem) the writer reads that code too. Returns
    ([(main, other)], union): the two merges, and per problem their distinct
    tests together, to run in one sandbox job.
    """
    from reasoning.stages import merge_tests

    items = [(p.prompt, p.entry_point) + ((codes[i],) if codes is not None else ()) for i, p in enumerate(problems)]
    texts = sample_test_texts(discriminator, items, num_tests=num_tests,
                              temperature=temperature, max_new_tokens=max_new_tokens)
    merged = [tuple(merge_tests(t, p.entry_point, num_tests, mode)[0] for mode in (agreement, not agreement))
              for t, p in zip(texts, problems)]
    return merged, [list(dict.fromkeys(main + other)) for main, other in merged]


def voted_tests(sandbox, codes: list, tests: list, entry_point: str) -> list:
    """Each test's call with the value most of `codes` return for it, or None where no value has more than half.

    With no reference solution at hand, programs sampled for the problem vote
    on what a call returns (AlphaCode's clustering, MBR-exec): the tests'
    expected values are replaced by the majority's. A program that raises on
    the call, or returns no literal, votes for nothing.
    """
    if not tests or not codes:
        return [None] * len(tests)
    answers = sandbox.label_batch([(code, tests, entry_point) for code in codes])
    voted = []
    for j in range(len(tests)):
        votes = Counter(a[j]["test"] for a in answers if a[j]["test"])
        best, count = votes.most_common(1)[0] if votes else (None, 0)
        voted.append(best if 2 * count > len(codes) else None)
    return voted


def discriminator_test_validity(discriminator, problems: list, sandbox, num_tests: int = 5, temperature: float = 0.7,
                                max_new_tokens: int = TEST_MAX_NEW_TOKENS, bar=None, agreement: bool = True,
                                codes: list | None = None, read_code: bool = False, voters: list | None = None) -> dict:
    """How many of the discriminator's tests the reference solution passes, on `problems`.

    The discriminator writes up to `num_tests` distinct asserts per problem
    the way `inference.py --generate-tests` does (default temperature 0.7;
    with `agreement`, results its samples disagree on are dropped), and each
    runs against the problem's reference solution in the sandbox. A test the
    reference fails is invalid: it would fail correct code. The same samples
    merged the other way are summarised under "other_merge", so the vote's
    effect is measured without sampling noise. `forgeable_share` is the share
    of its tests that the sandbox can only check in assert mode.

    With `codes` (one program per problem, e.g. the greedy chain's code) each
    program also runs the problem's reference tests and the written ones:
    `catch_rate` is the share of the wrong programs (failing a reference
    test) that a valid written test fails. With `read_code` the writer reads
    that program first, as `inference.py --test-writer-input code` has it.
    `copy_share` counts tests whose call is the problem's first reference
    test's; `labelled_calls_per_problem`, the other distinct calls the
    reference answers (what the writer offers when the reference fills in the
    values). With `voters` (per problem, programs sampled for it) "voted"
    summarises the same tests with their values voted by those programs
    (`voted_tests`), valid when the reference returns the voted value.
    """
    if read_code and codes is None:
        raise ValueError("read_code needs the codes to read")
    rows, other_rows = [], []
    for lo in range(0, len(problems), 32):
        chunk = problems[lo : lo + 32]
        chunk_codes = codes[lo : lo + 32] if codes is not None else None
        merged, union = _tests_both_ways(discriminator, chunk, num_tests, temperature, max_new_tokens, agreement,
                                         chunk_codes if read_code else None)
        jobs = [(p.reference_solution, tests, p.entry_point) for p, tests in zip(chunk, union) if tests]
        n_reference = len(jobs)
        if chunk_codes is not None:
            jobs += [(code, list(p.tests) + tests, p.entry_point) for p, tests, code in zip(chunk, union, chunk_codes)]
        results = sandbox.run_batch(jobs) if jobs else []
        on_reference, on_code = iter(results[:n_reference]), iter(results[n_reference:])
        # the reference on each test's call: which calls are copies of the first reference test, and which
        # calls it answers (the tests the writer offers when the reference fills in the values)
        labels = iter(sandbox.label_batch([(p.reference_solution, [p.tests[0]] + main, p.entry_point)
                                           for p, (main, _) in zip(chunk, merged) if main and p.tests]))
        for p, tests, (main, other) in zip(chunk, union, merged):
            result = next(on_reference) if tests else None
            ok = dict(zip(tests, result.outcomes(len(tests)))) if tests else {}
            forgeable = dict(zip(tests, result.forgeable_at(len(tests)))) if tests else {}
            row = {"id": p.id, "tests": main, "valid": [ok[t] for t in main], "forgeable": [forgeable[t] for t in main]}
            first, *answers = next(labels) if main and p.tests else [{"call": None}]
            row["copy"] = [a["call"] is not None and a["call"] == first["call"] for a in answers]
            row["labelled_calls"] = len({a["call"] for a, copy in zip(answers, row["copy"]) if a.get("test") and not copy})
            if voters is not None:
                voted = voted_tests(sandbox, voters[len(rows)], main, p.entry_point)
                row["voted"] = [v is not None and v == a.get("test") for v, a in zip(voted, answers) if v is not None]
            if chunk_codes is not None:
                outcomes = next(on_code).outcomes(len(p.tests) + len(tests))
                passed = dict(zip(tests, outcomes[len(p.tests):]))
                row["code_wrong"] = not all(outcomes[:len(p.tests)])
                row["caught"] = row["code_wrong"] and any(ok[t] and not passed[t] for t in main)
            rows.append(row)
            other_rows.append([ok[t] for t in other])
        if bar is not None:
            bar.update(len(chunk))
    written = sum(len(row["tests"]) for row in rows)
    wrong = [row for row in rows if row.get("code_wrong")]
    extra = {}
    if codes is not None:
        extra = {"wrong_codes": len(wrong),
                 "catch_rate": sum(row["caught"] for row in wrong) / len(wrong) if wrong else float("nan")}
    return {
        "temperature": temperature,
        "agreement": agreement,
        "writer_input": "code" if read_code else "problem",
        **extra,
        **_validity([row["valid"] for row in rows]),
        # tests the sandbox could check only in assert mode (rewards leave them out)
        "forgeable_share": sum(sum(row["forgeable"]) for row in rows) / written if written else float("nan"),
        # tests whose call is the first reference test's (the one a visible_tests=1 run sees), arguments evaluated
        "copy_share": sum(sum(row["copy"]) for row in rows) / written if written else float("nan"),
        # distinct calls per problem that the reference answers, copies left out: valid tests once it fills the values in
        "labelled_calls_per_problem": sum(row["labelled_calls"] for row in rows) / len(rows) if rows else 0.0,
        "other_merge": {"agreement": not agreement, **_validity(other_rows)},
        **({"voted": {"voters": len(voters[0]) if voters else 0, **_validity([row["voted"] for row in rows])}}
           if voters is not None else {}),
        "problems": rows,
    }


def _validity(valid_per_problem: list) -> dict:
    written = sum(len(v) for v in valid_per_problem)
    n = len(valid_per_problem)
    return {
        "test_validity": sum(sum(v) for v in valid_per_problem) / written if written else float("nan"),
        "tests_per_problem": written / n if n else 0.0,
        "valid_tests_per_problem": sum(sum(v) for v in valid_per_problem) / n if n else 0.0,
        "problems_without_tests": sum(1 for v in valid_per_problem if not v),
    }


# ----------------------------------------------------------------- entry points
_BACKTICK_CALL_RE = re.compile(r"`\s*(?:def\s+)?([A-Za-z_]\w*)\s*\(")
_DEF_RE = re.compile(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)
_CALLED_RE = re.compile(r"\b(?:function|method)\s+(?:called\s+|named\s+)?`?([A-Za-z_]\w*)`?\s*\(")


def infer_entry_point(problem: str, codes: list = ()) -> str | None:
    """The function the tests should call, or None when nothing names one.

    In order: a `def name(` in the problem text, a backticked `name(`, a
    "function name(" phrase; else the first function the code samples define
    (the most common one across samples, ties to the earliest sample).
    """
    for pattern in (_DEF_RE, _BACKTICK_CALL_RE, _CALLED_RE):
        match = pattern.search(problem)
        if match and match.group(1) not in _NOT_NAMES:
            return match.group(1)
    counts: dict = {}
    for code in codes:
        name = _first_def(code)
        if name:
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return None
    return max(counts, key=lambda name: counts[name])  # dicts keep insertion order: ties go to the earliest


_NOT_NAMES = {"print", "len", "range", "return", "lambda"}


def _first_def(code: str) -> str | None:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        match = _DEF_RE.search(code)
        return match.group(1) if match else None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            return node.name
    return None
