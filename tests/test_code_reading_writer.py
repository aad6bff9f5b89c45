"""test_writer_input=code: the writer reads each candidate, its attack reward, and the mistake book.

The reward function case by case; the book's bound, dedup, ageing and
checkpoint; a tiny trainer whose writer's samples are set by hand, so that
which tests reach whose reward is known: the prompt carries each candidate's
code, a test the reference fails never reaches the generator's reward, and a
test in the book fails a new wrong candidate. Then a whole iteration trains
the writer, inference.py records the mode, and evaluation writes tests for
the code it reads.
"""

import json
import math

import pytest

from training.config import TrainingConfig
from training.errors import UserError
from training.data.problems import Problem
from training.mistakes import MistakeBook
from training.outcomes import outcome_metrics
from training.rewards import attack_reward, attack_writer_rewards
from training.rollout import StageBatch, TestBatch
from training.updates import writer_rewards

from test_trainer import _changed, _params, make_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DOUBLE = Problem(id="toy/double", prompt="Double x.", entry_point="f", reference_solution="def f(x):\n    return 2 * x\n",
                 tests=["assert f(0) == 0"])
RIGHT = "def f(x):\n    return 2 * x\n"
WRONG = "def f(x):\n    return x * x\n"  # right at 0 and 2, wrong at 1 and 3
CODE = ["--test_writer_input=code", "--stages=[5]", "--group_size=2"]


# ======================================================================== the reward
@pytest.mark.parametrize("valid, caught, expected", [
    ([True], [True], 1.0),                              # a valid test that fails the candidate: the win
    ([True, True], [True, True], 2.0),                  # each catch counts
    ([True], [False], 0.1),                             # valid, catches nothing: small
    ([True, True, True], [False, False, False], 0.3),   # quiet ones add up to the cap ...
    ([True] * 5, [False] * 5, 0.3),                     # ... and no further
    ([False], [False], -1.0),                           # invalid: a loss
    ([False], [True], -1.0),                            # invalid whatever the candidate did
    ([True, False], [True, True], 0.0),                 # a catch and an invalid test
    ([True, True, True], [True, False, False], 1.2),    # a catch and two quiet tests
    ([], [], -1.0),                                     # no test at all
])
def test_attack_reward_cases(valid, caught, expected):
    assert attack_reward(valid, caught) == pytest.approx(expected)


def test_quiet_tests_never_outweigh_one_catch():
    many_quiet = attack_reward([True] * 50, [False] * 50, quiet=0.2, quiet_cap=0.9)
    assert many_quiet == pytest.approx(0.9) and many_quiet < attack_reward([True], [True], quiet=0.2, quiet_cap=0.9)


def test_attack_reward_needs_one_result_per_test():
    with pytest.raises(ValueError, match="2 validity flags but 1 results"):
        attack_reward([True, True], [False])


def test_a_candidate_that_does_not_parse_cannot_be_caught():
    # one problem, two samples: sample 0 read runnable wrong code, sample 1 read code that does not parse
    tb = TestBatch(rollout=None, samples_per_problem=2, tests=[["a", "b"]], sample_tests=[["a"], ["b"]],
                   passes_reference=[[True, True]], runs=[[[0], [1]]], candidate_results=[[[False], [False]]])
    assert attack_writer_rewards(tb, [WRONG, "def f(x) return"]) == pytest.approx([1.0, 0.1])


@pytest.mark.parametrize("flags, message", [
    (["--test_writer_input=candidate"], "test_writer_input must be problem or code"),
    (["--quiet_test_cap=1.0"], "quiet tests must not outweigh one catch"),
    (["--quiet_test_reward=0.5", "--quiet_test_cap=0.3"], "quiet_test_reward <= quiet_test_cap"),
    (["--mistake_book_size=-1"], "mistake_book_size must not be negative"),
    (["--code_tests_scope=all"], "code_tests_scope must be own or group"),
    (["--mistake_book_max_age=0"], "mistake_book_max_age must be at least 1"),
])
def test_bad_settings_are_one_user_error(flags, message):
    with pytest.raises(UserError, match=message):
        TrainingConfig().with_overrides(flags)


# ==================================================================== the mistake book
def test_book_is_bounded_per_problem_dropping_the_least_recent_catch():
    book = MistakeBook(size=2, max_age=100)
    book.record("p", ["a"], step=1)
    book.record("p", ["b"], step=2)
    book.record("p", ["a"], step=3)  # a caught again: now b is the least recent
    book.record("p", ["c"], step=4)
    assert book.tests("p", step=4) == ["a", "c"]
    book.record("q", ["x"], step=4)
    assert len(book) == 3 and book.tests("q", step=4) == ["x"]


def test_book_keeps_one_copy_of_a_test():
    book = MistakeBook(size=8, max_age=100)
    book.record("p", ["a", "a", "b"], step=1)
    book.record("p", ["a"], step=2)
    assert book.tests("p", step=2) == ["b", "a"] and len(book) == 2


def test_book_entries_age_out_unless_they_catch_again():
    book = MistakeBook(size=8, max_age=5)
    book.record("p", ["old", "kept"], step=0)
    book.record("p", ["kept"], step=4)
    assert book.tests("p", step=5) == ["old", "kept"]  # age 5: still in
    assert book.tests("p", step=6) == ["kept"]  # old: no catch for 6 steps
    assert book.tests("p", step=10) == [] and len(book) == 0 and "p" not in book.entries


def test_book_logs_its_size_and_hit_rate_and_survives_a_checkpoint():
    book = MistakeBook(size=8, max_age=5)
    assert not MistakeBook(size=0, max_age=5) and book
    book.record("p", ["a", "b"], step=1)
    book.count(runs=4, hits=1)
    assert book.stats() == {"mistake_book_size": 2, "mistake_book_problems": 1, "mistake_book_hit_rate": 0.25}
    assert "mistake_book_hit_rate" not in book.stats()  # nothing ran since
    smaller = MistakeBook(size=1, max_age=5)
    smaller.load_state_dict(json.loads(json.dumps(book.state_dict())))  # as a checkpoint holds it
    assert smaller.tests("p", step=1) == ["b"]  # this run's bound applies
    smaller.load_state_dict(None)
    assert len(smaller) == 0


# ====================================================== which tests reach whose reward
def _writer_writes(trainer, monkeypatch, texts_for):
    """Make the writer's samples `texts_for(prompt)`; record its prompts. The rollout's tokens stay real."""
    prompts = []
    original = trainer.discriminator.sample

    def sample(batch_prompts, **kwargs):
        prompts.extend(batch_prompts)
        ro = original(batch_prompts, **kwargs)
        ro.texts = [texts_for(p) for p in ro.prompts]
        return ro

    monkeypatch.setattr(trainer.discriminator, "sample", sample)
    return prompts


def _batch(problem, codes):
    return StageBatch(stage_id=5, problems=[problem], group_size=len(codes), prefixes=[[]], rollout=None,
                      completions=list(codes))


def test_the_writer_reads_each_candidate_and_only_valid_tests_score_it(tmp_path, sandbox, monkeypatch):
    trainer = make_trainer(tmp_path, sandbox, *CODE)
    written = {RIGHT: "assert f(1) == 2\nassert f(1) == 3\n",  # valid; invalid (the reference gives 2)
               WRONG: "assert f(3) == 6\n"}                      # valid, and the wrong code fails it
    prompts = _writer_writes(trainer, monkeypatch, lambda p: next(t for c, t in written.items() if c.strip() in p))
    batch = _batch(DOUBLE, [RIGHT, WRONG])
    jobs = []
    original = sandbox.run_batch
    monkeypatch.setattr(sandbox, "run_batch", lambda js, **kw: jobs.extend(js) or original(js, **kw))
    rewards = trainer.score(batch)
    assert len(prompts) == 2 and RIGHT.strip() in prompts[0] and WRONG.strip() in prompts[1]
    assert all("Code:" in p and "### Unit tests for f" in p for p in prompts)
    tb = batch.test_batch
    assert tb.samples_per_problem == 2 and tb.passes_reference == [[True, False, True]]
    # each candidate ran the tests written for it, not the other's
    candidate_jobs = [j for j in jobs if j[1][:1] == DOUBLE.tests]  # (the other job validates the pool)
    assert candidate_jobs == [(RIGHT, ["assert f(0) == 0", "assert f(1) == 2", "assert f(1) == 3"], "f"),
                              (WRONG, ["assert f(0) == 0", "assert f(3) == 6"], "f")]
    # the invalid test, which the right code fails, is not in its reward: 1.0 and not 0.5
    assert batch.terms["discriminator_tests"] == [1.0, 0.0]
    assert batch.terms["reference_tests"] == [1.0, 1.0]  # the one visible reference test misses the bug
    assert rewards[0] > rewards[1]
    # the writer: a quiet valid test and an invalid one (0.1 - 1); a catch (1)
    assert writer_rewards(batch, trainer.config) == pytest.approx([-0.9, 1.0])
    # the catch goes in the book, the invalid and the quiet test do not
    row = trainer.book.record_batch(batch, trainer.global_step)
    assert trainer.book.tests(DOUBLE.id, trainer.global_step) == [] and row.get("mistake_book_size", 0) == 0
    assert trainer.config.mistake_book_size == 0


def test_group_scope_runs_every_test_written_for_the_problem_on_each_candidate(tmp_path, sandbox, monkeypatch):
    trainer = make_trainer(tmp_path, sandbox, *CODE, "--code_tests_scope=group")
    written = {RIGHT: "assert f(1) == 2\nassert f(1) == 3\n", WRONG: "assert f(3) == 6\n"}
    _writer_writes(trainer, monkeypatch, lambda p: next(t for c, t in written.items() if c.strip() in p))
    batch = _batch(DOUBLE, [RIGHT, WRONG])
    trainer.score(batch)
    assert batch.test_batch.runs == [None]
    # both valid tests score both candidates; the invalid one scores neither
    assert batch.test_batch.valid_results() == [[True, True], [False, False]]
    assert batch.terms["discriminator_tests"] == [1.0, 0.0]
    # the writer is still rewarded for the candidate it read
    assert writer_rewards(batch, trainer.config) == pytest.approx([-0.9, 1.0])


def test_a_caught_bug_keeps_failing_new_wrong_candidates(tmp_path, sandbox, monkeypatch):
    trainer = make_trainer(tmp_path, sandbox, *CODE, "--mistake_book_size=4", "--mistake_book_max_age=3")
    # the visible reference test, respaced, fails the third candidate: it stays out of the book (all run it)
    texts = {"first": "assert f(3) == 6\nassert  f(0)==0\n", "later": ""}  # later, the writer finds nothing
    _writer_writes(trainer, monkeypatch, lambda p: texts[state["round"]])
    state = {"round": "first"}
    first = _batch(DOUBLE, [RIGHT, WRONG, "def f(x):\n    return 2 * x + 1\n"])
    trainer.score(first)
    assert trainer.book.record_batch(first, trainer.global_step)["mistake_book_size"] == 1
    assert trainer.book.tests(DOUBLE.id, trainer.global_step) == ["assert f(3) == 6"]

    state["round"] = "later"
    trainer.global_step += 1
    also_wrong = "def f(x):\n    return x ** 2\n"  # the same bug, written anew: f(0) passes, f(3) == 6 fails
    later = _batch(DOUBLE, [also_wrong, RIGHT])
    trainer.score(later)
    tb = later.test_batch
    assert tb.written == [0] and tb.book == [[0]]  # the writer wrote nothing; the book's test ran on both
    assert later.terms["discriminator_tests"] == [0.0, 1.0]
    assert writer_rewards(later, trainer.config) == [-1.0, -1.0]  # the book's tests are no sample's
    row = trainer.book.record_batch(later, trainer.global_step)
    assert row["mistake_book_hit_rate"] == pytest.approx(0.5)  # one of two candidates failed it
    # a catch refreshes it; with no catch for more than max_age steps it leaves
    assert trainer.book.tests(DOUBLE.id, trainer.global_step + 3) == ["assert f(3) == 6"]
    assert trainer.book.tests(DOUBLE.id, trainer.global_step + 4) == []


def test_outcome_catch_rate_counts_the_tests_each_candidate_ran(tmp_path, sandbox, monkeypatch):
    trainer = make_trainer(tmp_path, sandbox, *CODE, "--group_size=3", "--visible_tests=1")
    full = Problem(id="toy/double3", prompt="Double x.", entry_point="f", reference_solution=RIGHT,
                   tests=["assert f(0) == 0", "assert f(1) == 2", "assert f(3) == 6"])
    (problem,) = trainer.visibility.split([full])  # f(0) == 0 visible; f(1) and f(3) hidden
    cubic = "def f(x):\n    return x ** 3 - 3 * x\n"
    written = {RIGHT: "assert f(2) == 4\n", WRONG: "assert f(2) == 4\n", cubic: "assert f(3) == 6\n"}
    _writer_writes(trainer, monkeypatch, lambda p: next(t for c, t in written.items() if c.strip() in p))
    batch = _batch(problem, [RIGHT, WRONG, cubic])
    trainer.score(batch)
    out = outcome_metrics(batch, trainer.visibility, trainer.rollouts)
    # WRONG and cubic pass the visible test and fail a hidden one; WRONG passes the f(2) == 4 written for it,
    # cubic fails its f(3) == 6: one of the two caught, among the wrong ones and among the false positives
    assert out["false_positive_rate"] == pytest.approx(2 / 3)
    assert out["catch_rate"] == pytest.approx(0.5) and out["false_positive_catch_rate"] == pytest.approx(0.5)


def test_a_code_reading_iteration_trains_the_writer_and_checkpoints_the_book(tmp_path, sandbox, problems, monkeypatch):
    trainer = make_trainer(tmp_path, sandbox, *CODE, "--mistake_book_size=4", "--test_max_new_tokens=24",
                           "--max_new_tokens=[4, 4, 4, 4, 24]", "--iterations_per_stage=2")
    trainer.book.record(problems[0].id, ["assert stored(1) == 1"], step=0)  # what a checkpoint must keep
    # in each group, one sample writes the problem's valid first test and the other its negation (invalid),
    # so the writer's rewards have spread: 0.1 or 1 against -1
    calls = iter(range(10**6))
    owner = {p.prompt.strip(): p for p in problems[:2]}

    def texts_for(prompt):
        p = next(q for text, q in owner.items() if text in prompt)
        return p.tests[0] if next(calls) % 2 == 0 else p.tests[0].replace("==", "!=", 1)

    _writer_writes(trainer, monkeypatch, texts_for)
    before = _params(trainer.discriminator.model)
    metrics = trainer.train_stage(5, problems[:2])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("mistake_book_size" in r and math.isfinite(r["test_writer_reward"]) for r in rows)
    assert all(-1.0 <= r["test_writer_reward"] <= 1.0 for r in rows)
    assert all(r["test_writer_trained_groups"] == 2 for r in rows)
    assert _changed(before, trainer.discriminator.model)
    assert metrics["discriminator"]["mistake_book_size"] == rows[-1]["mistake_book_size"]
    assert metrics["time"]["iteration"] > 0
    resumed = make_trainer(tmp_path / "again", sandbox, *CODE, "--mistake_book_size=4")
    resumed.load_checkpoint(str(tmp_path / "stage_5"))
    assert resumed.book.entries == trainer.book.entries and len(resumed.book) >= 1


# ============================================================== inference and evaluation
def test_inference_writes_tests_for_the_generated_code_and_records_the_mode(tmp_path, capsys, monkeypatch):
    import training.chains
    from checkpoints_helper import write_checkpoints
    from models.discriminator import LLMDiscriminator
    from test_inference import PROBLEM, _fake_chains, run_main

    root = write_checkpoints(tmp_path / "checkpoints", {"stage_1": (1, {"generator": {}, "discriminator": {}})}) / "stage_1"
    code = "def reverse_string(s):\n    return s\n"
    seen = []

    def generate_tests(self, problem, entry_point, code=None, **kwargs):
        seen.append(code)
        return ["assert reverse_string('ab') == 'ba'"]

    monkeypatch.setattr(training.chains, "generate_chains", _fake_chains([code]))
    monkeypatch.setattr(LLMDiscriminator, "generate_tests", generate_tests)
    for flag, mode, read in (([], "problem", None), (["--test-writer-input", "code"], "code", code)):
        output = tmp_path / f"{mode}.json"
        status, out, err = run_main(capsys, "--checkpoint", root, "--problem", PROBLEM, "--device", "cpu",
                                    "--max-new-tokens", "8", "--generate-tests", "--output", output, *flag)
        assert status == 0, err
        data = json.loads(output.read_text())
        assert data["test_writer_input"] == mode and seen[-1] == read
        assert data["summary"] == {"passed": 0, "total": 1}


def test_held_out_validity_reads_the_code_and_counts_its_catches():
    from sandbox import Sandbox
    from training.evaluation.ranking import discriminator_test_validity

    class Writer:
        def __init__(self):
            self.prompts = []

        def test_prompt(self, problem, entry_point, code=None):
            return f"{problem}|{code}"

        def sample_tests(self, prompts, num_samples=1, **kwargs):
            self.prompts += prompts

            class Rollout:
                texts = ["assert f(3) == 6\nassert f(1) == 5\n" for _ in prompts for _ in range(num_samples)]

            return Rollout()

    right = Problem(id="p/right", prompt="Double x.", entry_point="f", reference_solution=RIGHT, tests=["assert f(1) == 2"])
    wrong = Problem(id="p/wrong", prompt="Double y.", entry_point="f", reference_solution=RIGHT, tests=["assert f(1) == 2"])
    missed = Problem(id="p/missed", prompt="Double z.", entry_point="f", reference_solution=RIGHT, tests=["assert f(1) == 2"])
    codes = [RIGHT, WRONG, "def f(x):\n    return 6 if x == 3 else 0\n"]
    writer = Writer()
    with Sandbox(workers=1) as sandbox:
        out = discriminator_test_validity(writer, [right, wrong, missed], sandbox, num_tests=2, temperature=0.0,
                                          codes=codes, read_code=True)
    assert all(c in p for c, p in zip(codes, writer.prompts))
    assert out["writer_input"] == "code" and out["test_validity"] == pytest.approx(0.5)
    assert out["valid_tests_per_problem"] == pytest.approx(1.0)
    # wrong: WRONG fails the valid f(3) == 6 (caught); missed passes it and fails only the reference test
    assert out["wrong_codes"] == 2 and out["catch_rate"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="read_code needs the codes"):
        discriminator_test_validity(writer, [right], None, read_code=True)


def test_evaluate_refuses_a_writer_input_without_test_validity(capsys):
    from training.evaluate import main

    assert main(["--checkpoint", "nowhere", "--test-writer-input", "code"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "--test-writer-input says how --test-validity's tests are written" in err


def test_experiment_spec_names_only_its_arms_for_test_writing(tmp_path):
    from training.evaluation.experiment import Spec

    spec = tmp_path / "spec.yaml"
    spec.write_text("seeds: [0]\narms: {adv: []}\nevaluate: {test_validity: [adv, nowhere]}\n")
    with pytest.raises(UserError, match="evaluate.test_validity lists arm names"):
        Spec.load(str(spec))
