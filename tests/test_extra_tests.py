"""Tests labelled by the reference: the sandbox's label job, copies and duplicates, the writer's reward, the mutator.

Sandbox.label on calls with known results; Labeller.pool on hand-made writer
samples (a copy of the visible test, a repeat, a wrong guess, a call the
reference raises on); the writer's clipped validity and discrimination on
known counts; and the mutator's types, distinctness and seeds.
"""

import random
from types import SimpleNamespace

import pytest

from sandbox.checks import plan_test
from training.data.curriculum import load_curriculum
from training.data.mutation import mutate, mutated_calls, seed_calls
from training.data.problems import Problem
from training.extra_tests import COPY, DUPLICATE, INVALID, VALID, WRONG, Labeller, label_stats, writer_rewards

HALVE = Problem(
    id="toy/halve", prompt="Halve an even number; refuse odd ones.", entry_point="halve",
    reference_solution="def halve(n):\n    if n % 2:\n        raise ValueError('odd')\n    return n // 2\n",
    tests=["assert halve(4) == 2"],
)


# ====================================================================== Sandbox.label


def test_label_fills_in_the_reference_value_and_refuses_what_it_cannot(sandbox):
    answers = sandbox.label(HALVE.reference_solution, [
        "assert halve(10) == 5",           # a right guess
        "assert halve(2 * 3) == 0",        # a wrong guess; the argument is evaluated
        "assert halve(3) == 1",            # the reference raises
        "assert halve(8) + 1 == 5",        # not a single call
        "assert other(8) == 4",            # not the entry point
        "assert halve(12)",                # no expected value: still labelled
    ], "halve")
    assert [a["test"] for a in answers] == [
        "assert halve(10) == 5", "assert halve(6) == 3", None, None, None, "assert halve(12) == 6"]
    assert [a["agrees"] for a in answers] == [True, False, False, False, False, True]
    assert answers[1]["call"] == sandbox.label(HALVE.reference_solution, ["assert halve(6) == 1"], "halve")[0]["call"]
    assert "odd" in answers[2]["error"] and answers[3]["error"] and answers[4]["error"]


def test_a_call_the_reference_loops_on_is_invalid(sandbox):
    [answer] = sandbox.label("def f(x):\n    while True:\n        pass\n", ["assert f(1) == 1"], "f", timeout_s=1.0)
    assert answer["test"] is None and "timeout" in answer["error"]


def test_a_filled_test_is_checked_in_io_mode_and_catches_a_wrong_candidate(sandbox):
    [answer] = sandbox.label(HALVE.reference_solution, ["assert halve(100) == 0"], "halve")
    filled = answer["test"]
    assert plan_test(filled, "halve").kind == "io"
    assert sandbox.run(HALVE.reference_solution, [filled], "halve").passed
    wrong = sandbox.run("def halve(n):\n    return n >> 2\n", [filled], "halve")
    assert not wrong.passed and not any(wrong.forgeable)


def test_a_result_with_no_literal_form_is_invalid(sandbox):
    [answer] = sandbox.label("def f(x):\n    return float('inf')\n", ["assert f(1) == 1"], "f")
    assert answer["test"] is None and "literal" in answer["error"]


# ====================================================================== copies, duplicates, the pool


@pytest.fixture(scope="module")
def labeller(sandbox):
    return Labeller(sandbox, seed=0)


def test_pool_marks_copies_duplicates_wrong_guesses_and_invalid_calls(labeller):
    samples = [
        ["assert halve(4) == 2", "assert halve(2 + 2) == 9", "assert halve(8) == 4"],  # copy, copy (evaluated), valid
        ["assert halve(8) == 1", "assert halve(8) == 4", "assert halve(3) == 1"],      # wrong guess, duplicate, invalid
    ]
    pools, labels = labeller.pool([HALVE], samples, T=2)
    assert [s for s, _ in labels[0]] == [COPY, COPY, VALID]
    assert [s for s, _ in labels[1]] == [WRONG, DUPLICATE, INVALID]
    # one pooled test per distinct call, with the reference's value, whoever guessed what
    assert pools == [["assert halve(8) == 4"]]
    assert labels[0][2][1] == labels[1][0][1] == 0
    assert [j for _, j in labels[0][:2]] == [-1, -1] and [j for _, j in labels[1][1:]] == [-1, -1]


def test_fuzz_gives_labelled_tests_that_are_not_the_visible_ones(labeller, sandbox):
    [tests] = labeller.fuzz([HALVE], 12)
    assert tests and "assert halve(4) == 2" not in tests
    assert sandbox.run(HALVE.reference_solution, tests, "halve").passed
    calls = [t.split(" == ")[0] for t in tests]
    assert len(set(calls)) == len(calls)


# ====================================================================== the writer's reward


def _batch(labels, candidate_results, T, reads_code=False):
    return SimpleNamespace(tests=[["t"] * 4], samples_per_problem=T, labels=labels,
                           candidate_results=[candidate_results], runs_of=lambda b, g: range(4))


def test_validity_is_clipped_to_the_minimum_count_and_copies_earn_nothing():
    labels = [
        [(VALID, 0)],                                   # one valid test: 1/3
        [(VALID, 0), (VALID, 1), (VALID, 2)],           # three: 1
        [(COPY, -1), (COPY, -1), (DUPLICATE, -1)],      # nothing but copies: 0
        [(VALID, 0), (WRONG, 1), (INVALID, -1)],        # one of three
    ]
    everyone_passes = [[True] * 4, [True] * 4]
    rewards = writer_rewards(_batch(labels, everyone_passes, T=4), ["x = 1", "x = 2"], [[True], [True]],
                             group_size=2, min_valid=3, reads_code=False)
    assert rewards == pytest.approx([1 / 3, 1.0, 0.0, 1 / 3])


def test_discrimination_is_the_share_of_wrong_candidates_a_valid_test_catches():
    # candidate 0 fails pooled test 1, candidate 1 fails the visible test, candidate 2 is right
    results = [[True, False, True, True], [True, True, True, True], [True] * 4]
    labels = [[(VALID, 1)], [(WRONG, 1)], [(VALID, 0)]]
    codes = ["x = 1", "x = 2", "x = 3"]
    rewards = writer_rewards(_batch(labels, results, T=3), codes, [[True], [False], [True]],
                             group_size=3, min_valid=1, reads_code=False)
    # wrong candidates: 0 (caught by test 1) and 1 (visible test); a wrong guess at test 1 catches nothing
    assert rewards == pytest.approx([1.0 + 0.5, 0.0, 1.0])
    # reading code: sample g is rewarded for catching candidate g only
    rewards = writer_rewards(_batch(labels, results, T=3), codes, [[True], [False], [True]],
                             group_size=3, min_valid=1, reads_code=True)
    assert rewards == pytest.approx([2.0, 0.0, 1.0])


def test_label_stats_count_each_status():
    tb = SimpleNamespace(samples_per_problem=2, labels=[[(VALID, 0), (COPY, -1)], [(VALID, 0), (WRONG, 1)]])
    row = label_stats(tb, 1)
    assert row["test_validity"] == 0.5 and row["test_copy_share"] == 0.25 and row["test_wrong_value_share"] == 0.25
    assert row["valid_tests_per_problem"] == 1 and row["tests_per_problem"] == 4


# ====================================================================== the mutator


def _types(value):
    if isinstance(value, (list, tuple, set, frozenset)):
        return {type(value)} | {t for v in value for t in _types(v)}
    if isinstance(value, dict):
        return {dict} | {t for kv in value.items() for v in kv for t in _types(v)}
    return {type(value)}


def test_mutated_calls_keep_the_seed_types_and_differ_from_the_seeds():
    tests = ["assert f([1, 2], 'ab', {'a': 1.5}, k=(1, 'x')) == 0", "assert f([3], 'c', {}, k=(2, 'y')) == 1"]
    seeds = seed_calls(tests, "f")
    allowed = set().union(*(_types(v) for args, kwargs in seeds for v in (*args, *dict(kwargs).values())))
    calls = mutated_calls(tests, "f", 40, random.Random(0))
    assert len(calls) == len(set(calls)) == 40
    for call in calls:
        [(args, kwargs)] = seed_calls([call], "f")
        assert (args, kwargs) not in seeds
        assert [type(a) for a in args] == [list, str, dict] and dict(kwargs).keys() == {"k"}
        assert type(dict(kwargs)["k"]) is tuple and len(dict(kwargs)["k"]) == 2
        assert _types(args[0]) <= {list, int} and _types(args[1]) == {str}
        assert all(_types(v) <= allowed for v in (*args, *dict(kwargs).values()))


def test_mutate_leaves_its_input_alone_and_keeps_scalars_typed():
    rng = random.Random(1)
    value = [1, [2, 3], "ab"]
    for _ in range(200):
        mutate(value, rng)
    assert value == [1, [2, 3], "ab"]
    assert all(type(mutate(x, rng)) is type(x) for x in (True, 7, 2.5, "s", (1, 2), {"a": 1}, {1, 2}) for _ in range(20))


def test_calls_without_literal_arguments_give_nothing():
    assert mutated_calls(["assert f(x) == 1", "assert f() == 1", "assert g(1) == 1"], "f", 5, random.Random(0)) == []


def test_the_reference_runs_on_mutations_of_every_curriculum_family(labeller):
    problems = load_curriculum("train", per_family=1)
    calls = [mutated_calls(p.tests[:1], p.entry_point, 6, random.Random(0)) for p in problems]
    tests = labeller.fresh(problems, calls)
    # most mutations are calls the reference answers: the fuzzer has something to offer every family
    assert sum(map(len, tests)) >= 0.6 * sum(map(len, calls))
    assert sum(1 for t in tests if t) >= 0.9 * len(problems)


def test_voted_values_need_more_than_half_of_the_programs(sandbox):
    from training.evaluation.ranking import voted_tests

    plus_one, doubled = "def f(x):\n    return x + 1\n", "def f(x):\n    return x * 2\n"
    tests = ["assert f(3) == 0", "assert f(1) == 9", "assert g(1) == 2"]
    # f(3): 4, 4, 6 -> 4 wins; f(1): 2 from all three; g is not the entry point
    assert voted_tests(sandbox, [plus_one, plus_one, doubled], tests, "f") == ["assert f(3) == 4", "assert f(1) == 2", None]
    # one program each way: no majority on f(3)
    assert voted_tests(sandbox, [plus_one, doubled], tests[:2], "f") == [None, "assert f(1) == 2"]
    assert voted_tests(sandbox, [], tests, "f") == [None, None, None]


# ====================================================================== in the trainer


def test_fuzz_tests_reach_the_reward_without_a_discriminator(tmp_path, sandbox, problems):
    from test_trainer import make_trainer

    trainer = make_trainer(tmp_path, sandbox, "--stages=[5]", "--use_discriminator=false", "--fuzz_tests=6",
                           "--visible_tests=1")
    assert trainer.reward_weights["discriminator_tests"] > 0
    visible = trainer.visibility.split(problems[:2])
    batch = trainer.rollout(5, visible)
    batch.completions[0] = problems[0].reference_solution  # passes every labelled test
    batch.completions[1] = "def " + problems[0].entry_point + "(*args):\n    return None\n"  # fails them
    trainer.score(batch)
    tb = batch.test_batch
    assert tb is not None and tb.rollout is None and all(n > 0 for n in tb.fuzzed)
    # the fuzz tests are the pool, every candidate ran them, and they make the term
    assert all(len(rows[0]) == len(tests) for rows, tests in zip(tb.candidate_results, tb.tests))
    assert batch.terms["discriminator_tests"][0] == 1.0 and batch.terms["discriminator_tests"][1] < 1.0
    # none of them is the visible test (the hidden-test instrumentation in test_visible_tests.py covers the rest)
    for p, tests in zip(visible, tb.tests):
        assert p.tests[0] not in tests and len(p.tests) == 1
    assert batch.stats()["fuzz_tests_per_problem"] > 0


def test_a_code_reading_writer_has_its_labelled_calls_run_on_the_candidate_it_read(tmp_path, sandbox, problems,
                                                                                   monkeypatch):
    from test_trainer import make_trainer

    trainer = make_trainer(tmp_path, sandbox, "--stages=[5]", "--test_labels=reference", "--test_writer_input=code",
                           "--visible_tests=1")
    visible = trainer.visibility.split(problems[:1])
    p = visible[0]
    a, b, c = (call + " == 0" for call in mutated_calls(p.tests, p.entry_point, 3, random.Random(0)))
    calls = iter([[a], [b, c], [b]])  # per candidate, the calls its sample makes: b twice
    monkeypatch.setattr("training.rollout.extract_tests", lambda text, entry: (next(calls), 0))
    batch = trainer.rollout(5, visible)
    trainer.score(batch)
    tb = batch.test_batch
    statuses = [[s for s, _ in labels] for labels in tb.labels]
    assert [len(row) for row in statuses] == [1, 2, 1] and all(s in (VALID, WRONG) for row in statuses for s in row)
    for g, labels in enumerate(tb.labels):
        own = sorted({j for _, j in labels if j >= 0})
        assert list(tb.runs[0][g][:len(own)]) == own  # the candidate ran the calls written for it
        assert len(tb.candidate_results[0][g]) == len(tb.runs[0][g])
    # the second and third samples share a call: it is pooled once, and both candidates run it
    assert len(tb.tests[0]) == 3 and tb.labels[1][0][1] == tb.labels[2][0][1]
