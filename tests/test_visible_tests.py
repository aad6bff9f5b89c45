"""visible_tests: hidden reference tests never reach training, only the log; prefixes and trajectory rollouts.

TestVisibility's split and resume check on their own; then a tiny trainer with
visible_tests=1, instrumented at every place a test could enter training (the
sandbox, the warm-up's test examples, the scoring head, the reward batches);
outcome_metrics on hand-made candidates with known answers; prefixes after a
generator update; rollout_chain=trajectory; stages=[]; and the resume refusal.
"""

import dataclasses
import json
import math

import pytest
import torch

from reasoning.stages import build_prompt, get_stage
from training import adversarial_trainer, extra_tests
from training import warmup as warmup_module
from training.data.problems import Problem
from training.data.visibility import TestVisibility, visible_indices
from training.errors import UserError
from training.outcomes import outcome_metrics
from training.rewards import REWARDS
from training.rollout import StageBatch, TestBatch
from training.warmup import Warmup

from test_trainer import _changed, _params, make_trainer

VISIBLE_1 = ["--visible_tests=1", "--visible_choice=first"]
# shorter samples than test_trainer's SHRUNK: the RL tests here only need some tokens of each stage
FAST = ["--max_new_tokens=[4, 4, 4, 4, 16]", "--test_max_new_tokens=12", "--group_size=2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(tmp_path):
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# ====================================================================== TestVisibility


def test_first_k_are_the_first_indices_and_the_rest_are_hidden(problems):
    vis = TestVisibility(3, "first", seed=0)
    split = vis.split(problems)
    for original, visible in zip(problems, split):
        assert vis.indices[original.id] == [0, 1, 2]
        assert visible.tests == original.tests[:3] and visible.id == original.id
        assert vis.hidden_tests(original) == original.tests[3:] and len(vis.hidden_tests(visible)) == 5
        assert original.tests != visible.tests  # the caller's problem is untouched (a copy was made)
    assert vis.enabled


def test_random_choice_is_seeded_by_seed_and_problem(problems):
    a = TestVisibility(3, "random", seed=0)
    a.split(problems)
    again = TestVisibility(3, "random", seed=0)
    again.split(problems)
    other = TestVisibility(3, "random", seed=1)
    other.split(problems)
    assert a.indices == again.indices
    assert any(a.indices[p.id] != other.indices[p.id] for p in problems)
    for p in problems:
        idx = a.indices[p.id]
        assert idx == sorted(idx) and len(set(idx)) == 3 and set(idx) <= set(range(len(p.tests)))
        assert a.hidden_tests(p) == [t for i, t in enumerate(p.tests) if i not in idx]
    # not simply the first k for every problem
    assert any(a.indices[p.id] != [0, 1, 2] for p in problems)


@pytest.mark.parametrize("k", [0, 8, 20])
def test_k_zero_or_at_least_the_test_count_keeps_every_test(problems, k):
    assert all(len(p.tests) == 8 for p in problems)
    vis = TestVisibility(k, "random", seed=0)
    split = vis.split(problems)
    assert vis.enabled == (k > 0)
    for original, visible in zip(problems, split):
        assert visible is original
        assert vis.indices[original.id] == list(range(8)) and vis.hidden_tests(original) == []
        assert visible_indices(original, k, "first", 0) == list(range(8))


@pytest.mark.parametrize("choice", ["first", "random"])
def test_split_is_idempotent(problems, choice):
    vis = TestVisibility(2, choice, seed=3)
    first = vis.split(problems)
    indices = {pid: list(idx) for pid, idx in vis.indices.items()}
    hidden = {pid: list(h) for pid, h in vis.hidden.items()}
    second = vis.split(first)  # the visible copies again
    assert all(a is b for a, b in zip(first, second))
    assert vis.indices == indices and vis.hidden == hidden
    third = vis.split(problems)  # the originals again: equal copies, the same split
    assert third == first
    assert vis.indices == indices and vis.hidden == hidden
    assert all(len(p.tests) == 2 for p in second)


def test_unknown_choice_is_a_user_error():
    with pytest.raises(UserError, match="visible_choice"):
        TestVisibility(1, "last", seed=0)


def test_check_resumable_refuses_checkpoints_that_saw_hidden_tests(problems):
    vis = TestVisibility(1, "first", seed=0)
    vis.split(problems)
    vis.check_resumable(vis.record(), "ckpt")  # the same split: fine
    vis.check_resumable(json.loads(json.dumps(vis.record())), "ckpt")  # as a checkpoint stores it
    subset = dict(vis.record(), indices={problems[0].id: []})
    vis.check_resumable(subset, "ckpt")  # saw fewer tests than it may: fine
    with pytest.raises(UserError, match="every reference test"):
        vis.check_resumable(None, "ckpt")  # saved before the record existed
    with pytest.raises(UserError, match="every reference test"):
        vis.check_resumable(TestVisibility(0, "first", 0).record(), "ckpt")
    with pytest.raises(UserError, match="every reference test"):
        vis.check_resumable({"k": 0, "choice": "first", "seed": 0, "indices": {}}, "ckpt")
    wider = TestVisibility(2, "first", seed=0)
    wider.split(problems)
    with pytest.raises(UserError, match="hides some of them"):
        vis.check_resumable(wider.record(), "ckpt")
    other = dict(vis.record(), indices={**vis.record()["indices"], problems[2].id: [5]})
    with pytest.raises(UserError, match=problems[2].id):
        vis.check_resumable(other, "ckpt")
    # a run that hides nothing resumes from anything
    TestVisibility(0, "first", 0).check_resumable(None, "ckpt")


def test_record_holds_the_rule_and_every_problems_indices(problems):
    vis = TestVisibility(2, "random", seed=5)
    vis.split(problems)
    record = vis.record()
    assert record["k"] == 2 and record["choice"] == "random" and record["seed"] == 5
    assert set(record["indices"]) == {p.id for p in problems}
    assert all(record["indices"][p.id] == vis.indices[p.id] for p in problems)
    off = TestVisibility(0, "first", 0)
    off.split(problems)
    assert off.record()["indices"] == {}


# ======================================================== nothing hidden reaches training


# the reference labels the writer's calls, a fuzzer mutates the visible tests, the writer's warm-up imitates mutations
LABELLED = ["--test_labels=reference", "--fuzz_tests=4", "--warmup.writer_examples=mutations"]


@pytest.mark.parametrize("tests_from", [[], LABELLED], ids=["written", "labelled"])
def test_hidden_tests_reach_only_outcome_metrics(tmp_path, sandbox, problems, monkeypatch, tests_from):
    trainer = make_trainer(
        tmp_path, sandbox, *VISIBLE_1, *FAST, "--stages=[1, 5]", "--iterations_per_stage=[1, 1, 1, 1, 2]",
        "--warmup.cpu_threads=1", "--probe_problems=2", "--probe_every=1", *tests_from,
    )
    hidden = {p.id: list(p.tests[1:]) for p in problems}
    hidden_strings = {t for ts in hidden.values() for t in ts}
    state = {"in_outcome": False}
    jobs, examples, scored, reward_batches, outcome_rows, outcome_ids = [], [], [], [], [], set()

    original_run_batch = sandbox.run_batch

    def run_batch(batch_jobs, **kw):
        batch_jobs = list(batch_jobs)
        jobs.extend((state["in_outcome"], job[0], list(job[1])) for job in batch_jobs)
        return original_run_batch(batch_jobs, **kw)

    monkeypatch.setattr(sandbox, "run_batch", run_batch)
    original_label_batch = sandbox.label_batch

    def label_batch(batch_jobs, **kw):  # the reference's runs that fill in expected values
        batch_jobs = list(batch_jobs)
        jobs.extend((state["in_outcome"], job[0], list(job[1])) for job in batch_jobs)
        return original_label_batch(batch_jobs, **kw)

    monkeypatch.setattr(sandbox, "label_batch", label_batch)
    mutated_from, mutants = [], set()  # every test the mutator was handed, and every call it made

    def recording(module):
        original = module.mutated_calls

        def mutated_calls(tests, *args, **kwargs):
            mutated_from.extend(tests)
            out = original(tests, *args, **kwargs)
            mutants.update(out)
            return out
        monkeypatch.setattr(module, "mutated_calls", mutated_calls)

    recording(extra_tests)
    recording(warmup_module)

    original_examples = Warmup.test_examples
    warmup_inputs = []

    def test_examples(self, warmup_problems, test_problems):
        out = original_examples(self, warmup_problems, test_problems)
        warmup_inputs.extend(list(warmup_problems) + list(test_problems))
        examples.extend(out)
        return out

    monkeypatch.setattr(Warmup, "test_examples", test_examples)

    disc = trainer.discriminator
    original_score = disc.score_batch

    def score_batch(items, *args, **kwargs):
        scored.extend(items)
        return original_score(items, *args, **kwargs)

    monkeypatch.setattr(disc, "score_batch", score_batch)

    for name, reward in list(REWARDS.items()):
        def fn(batch, _fn=reward.fn, _name=name):
            reward_batches.append((_name, batch))
            return _fn(batch)
        monkeypatch.setitem(REWARDS, name, dataclasses.replace(reward, fn=fn))

    def instrumented_outcome_metrics(batch, *args):
        state["in_outcome"] = True
        outcome_ids.update(p.id for p in batch.problems)
        try:
            out = outcome_metrics(batch, *args)
        finally:
            state["in_outcome"] = False
        outcome_rows.append(out)
        return out

    monkeypatch.setattr(adversarial_trainer, "outcome_metrics", instrumented_outcome_metrics)

    trainer.train(problems)

    assert {p.id: trainer.visibility.hidden_tests(p) for p in problems} == hidden
    # the instrumentation saw each channel
    assert examples and scored and reward_batches and outcome_rows
    assert any(not flag for flag, _, _ in jobs)
    in_outcome = [tests for flag, _, tests in jobs if flag]
    assert in_outcome and all(set(t) <= hidden_strings for t in in_outcome)
    # every hidden test of the code stage's problems was run there
    assert len(outcome_ids) >= 2
    assert {t for pid in outcome_ids for t in hidden[pid]} == {t for tests in in_outcome for t in tests}

    leaks = {}
    # a hidden test string may also be a test of another warm-up problem (sum_to_n instances share asserts): allowed;
    # and the reference's label of a call the mutator made from a visible test (f(0) -> f(1)) may equal a hidden one
    shared = {t for q in warmup_inputs if q.id not in hidden for t in q.tests}
    derived = {t for t in hidden_strings if t.split(" == ")[0] in mutants}
    others = shared | derived
    leaks["warm-up test examples"] = sorted(
        {t for _, text in examples for t in hidden_strings - others if t in text})
    leaks["scoring head inputs"] = sorted({t for item in scored for t in hidden_strings if t in repr(item)})
    leaks["sandbox jobs outside outcome_metrics"] = sorted(
        {t for flag, _, tests in jobs if not flag for t in tests if t in hidden_strings - derived})
    too_long, seen_tests = [], set()
    for name, rb in reward_batches:
        for p in rb.problems:
            seen_tests.update(p.tests)
        for results in rb.reference_results or []:
            if len(results) > 1:
                too_long.append((name, len(results)))
    leaks["reward batch problems' tests"] = sorted(seen_tests & hidden_strings)
    leaks["the mutator's seeds"] = sorted(set(mutated_from) & (hidden_strings - shared))
    if tests_from:
        assert mutated_from and any(job[1] == p.reference_solution for job in jobs for p in problems)
        assert any(r.get("fuzz_tests_per_problem", 0) > 0 for r in _rows(tmp_path))
    leaks["reward batch reference_results beyond the visible test"] = too_long
    assert {k: v for k, v in leaks.items() if v} == {}

    code_rows = [r for r in _rows(tmp_path) if r.get("stage") == 5 and "iteration" in r]
    assert len(code_rows) == 2
    for row in code_rows:
        assert 0.0 <= row["hidden_pass_rate"] <= 1.0
        assert row["hidden_pass_rate"] <= row["train_pass_rate"]  # passing every test implies passing the visible one
        if row.get("false_positive_rate") is not None:
            assert 0.0 <= row["false_positive_rate"] <= 1.0
        assert 0.0 <= row["probe_pass_rate"] <= 1.0
    assert all("hidden_pass_rate" in out for out in outcome_rows)


# ============================================================ outcome_metrics by hand

DOUBLE = Problem(id="toy/double", prompt="Double x.", entry_point="f", reference_solution="def f(x):\n    return 2 * x\n",
                 tests=["assert f(0) == 0", "assert f(1) == 2", "assert f(2) == 4"])
ONE = Problem(id="toy/one", prompt="Return 1.", entry_point="g", reference_solution="def g(x):\n    return 1\n",
              tests=["assert g(0) == 1"])


def test_outcome_metrics_on_known_candidates(tmp_path, sandbox, monkeypatch):
    trainer = make_trainer(tmp_path, sandbox, *VISIBLE_1, "--stages=[5]", "--group_size=4")
    one, double = trainer.visibility.split([ONE, DOUBLE])
    assert one is ONE and double.tests == ["assert f(0) == 0"]
    codes = [
        # toy/one: only one test, nothing hidden
        "def g(x):\n    return 1\n",                 # right
        "def g(x):\n    return 1\n",                 # right
        "def g(x):\n    return 0\n",                 # wrong
        "def g(x):\n    return 2\n",                 # wrong
        # toy/double: f(0) == 0 visible, f(1) == 2 and f(2) == 4 hidden
        "def f(x):\n    return 2 * x\n",             # right
        "def f(x):\n    return 0\n",                 # passes the visible test, fails both hidden ones
        "def f(x):\n    return x * x + x\n",         # passes the visible test and f(1), fails f(2)
        "def f(x):\n    return 2 * x if x else 5\n",  # fails the visible test, passes the hidden ones
    ]
    batch = StageBatch(stage_id=5, problems=[one, double], group_size=4, prefixes=[[], []], rollout=None,
                       completions=list(codes))
    trainer.rollouts.execute(batch, with_tests=False)
    assert [all(r) for r in batch.reference_results] == [True, True, False, False, True, True, True, False]
    assert all(len(r) == 1 for r in batch.reference_results)
    # the discriminator's tests: toy/one one valid test, toy/double three, the middle one invalid
    batch.test_batch = TestBatch(
        rollout=None, samples_per_problem=1, tests=[["t"], ["a", "b", "c"]], sample_tests=[["t"], ["a", "b", "c"]],
        passes_reference=[[True], [True, False, True]],
        candidate_results=[
            [[True], [True], [False], [True]],  # wrong g=2 caught, wrong g=3 not
            [[True, True, True], [False, True, True], [True, False, True], [True, True, False]],
            # wrong: g=1 caught (valid a), g=2 not (only the invalid b fails), g=3 caught (valid c)
        ],
    )
    hidden_jobs = []
    original = sandbox.run_batch
    monkeypatch.setattr(sandbox, "run_batch", lambda jobs, **kw: hidden_jobs.extend(jobs) or original(jobs, **kw))
    out = outcome_metrics(batch, trainer.visibility, trainer.rollouts)
    assert [tuple(j) for j in hidden_jobs] == [(c, ["assert f(1) == 2", "assert f(2) == 4"], "f") for c in codes[4:]]
    # right on every test: g0, g1 of toy/one, g0 of toy/double
    assert out["hidden_pass_rate"] == pytest.approx(3 / 8)
    # passing every visible test: 2 of toy/one (both right), 3 of toy/double (1 right): 2 of 5 false positives
    assert out["false_positive_rate"] == pytest.approx(2 / 5)
    # wrong ones: toy/one g2 (caught), g3; toy/double g1 (caught), g2, g3 (caught)
    assert out["catch_rate"] == pytest.approx(3 / 5)
    # the false positives: toy/double g1 (caught by the valid a) and g2 (only the invalid b fails it)
    assert out["false_positive_catch_rate"] == pytest.approx(1 / 2)


def test_outcome_metrics_without_hidden_tests_logs_no_hidden_rates(tmp_path, sandbox):
    trainer = make_trainer(tmp_path, sandbox, "--stages=[5]", "--group_size=2")
    (double,) = trainer.visibility.split([DOUBLE])
    assert double is DOUBLE
    batch = StageBatch(stage_id=5, problems=[double], group_size=2, prefixes=[[]], rollout=None,
                       completions=["def f(x):\n    return 2 * x\n", "def f(x):\n    return 0\n"])
    trainer.rollouts.execute(batch, with_tests=False)
    out = outcome_metrics(batch, trainer.visibility, trainer.rollouts)
    assert "hidden_pass_rate" not in out and "false_positive_rate" not in out


# ========================================================== prefixes from the current policy


def test_next_rollout_prefix_comes_from_the_updated_generator(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, *FAST, "--stages=[2]", "--iterations_per_stage=2", "--warmup.enabled=false",
                           "--probe_problems=0")
    chosen = problems[:2]  # problems_per_batch=2: both iterations roll out the same two problems
    seen = []
    original_rollout, original_update = trainer.rollout, trainer.update_generator

    def rollout(stage_id, batch_problems):
        cache_before = dict(trainer.rollouts.prefix_cache)
        batch = original_rollout(stage_id, batch_problems)
        current = trainer.generate_chains(batch.problems, upto=stage_id - 1)
        seen.append((cache_before, batch, current))
        return batch

    def update(batch, *args):
        stats = original_update(batch, *args)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():  # move the policy far enough that its greedy stage 1 changes
            for p in trainer.generator.model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)
        return stats

    trainer.rollout, trainer.update_generator = rollout, update
    trainer.train_stage(2, chosen)
    assert len(seen) == 2
    (cache0, first, current0), (cache1, second, current1) = seen
    assert [p.id for p in first.problems] == [p.id for p in second.problems]
    assert cache0 == {} and cache1 == {}  # nothing cached survives an update
    assert first.prefixes == current0
    assert second.prefixes == current1
    assert second.prefixes != first.prefixes  # the old cached prefix would not have passed the line above
    assert trainer.rollouts.prefix_cache == {}
    assert all(len(prefix) == 1 for prefix in second.prefixes)  # stage 2's prefix: the greedy stage 1
    G = second.group_size
    assert [second.rollout.prompts[b * G] for b in range(2)] == [
        build_prompt(p.prompt, prefix, 2) for p, prefix in zip(second.problems, second.prefixes)]


# ========================================================================== trajectories


def test_trajectory_rollout_samples_stages_k_to_5_and_trains(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, *FAST, "--stages=[3]", "--rollout_chain=trajectory",
                           "--warmup.enabled=false", "--probe_problems=0")
    batches, original_rollout = [], trainer.rollout
    trainer.rollout = lambda stage_id, ps: batches.append(original_rollout(stage_id, ps)) or batches[-1]
    before = _params(trainer.generator.model)
    trainer.train_stage(3, problems[:2])
    assert _changed(before, trainer.generator.model)
    rows = [r for r in _rows(tmp_path) if r.get("stage") == 3 and "iteration" in r]
    assert len(rows) == 1
    assert all(math.isfinite(r["reward"]) and 0.0 <= r["reward"] <= 1.0 for r in rows)
    assert all(0.0 <= r["train_pass_rate"] <= 1.0 for r in rows)

    (batch,) = batches
    N, G = 4, 2
    assert len(batch.completions) == N and batch.chains is not None and len(batch.chains) == N
    assert all(len(chain) == 5 for chain in batch.chains)
    assert len(batch.rollout) == 3 * N and batch.stages_per_completion == 3
    assert batch.runs_code and not batch.is_code
    assert batch.codes == [chain[-1] for chain in batch.chains]
    for i, chain in enumerate(batch.chains):
        b = i // G
        assert chain[:2] == batch.prefixes[b] and chain[2] == batch.completions[i]
        for s, stage in enumerate((3, 4, 5)):  # the rollout is stage-major: N rows of stage 3, then 4, then 5
            row = s * N + i
            assert batch.rollout.prompts[row] == build_prompt(batch.problems[b].prompt, chain[:stage - 1], stage)
            assert get_stage(stage).extract(batch.rollout.texts[row]) == chain[stage - 1]
    assert len(batch.rewards) == N and all(math.isfinite(r) and 0.0 <= r <= 1.0 for r in batch.rewards)
    assert "reference_tests" in batch.terms and "discriminator" in batch.terms
    assert len(batch.reference_results) == N  # the chains' code ran


# ============================================================== warm-up only, checkpoints


def test_no_stages_trains_the_warmup_only_and_records_the_split(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, *VISIBLE_1, "--stages=[]", "--warmup.cpu_threads=1")
    seen = []
    trainer.train_stage = lambda *a, **k: seen.append(a)
    trainer.train(problems)
    assert seen == []
    names = {p.name for p in tmp_path.iterdir()}
    assert {"warmup", "final"} <= names and not any(n.startswith("stage_") for n in names)
    for name in ("warmup", "final"):
        gen = _load(tmp_path / name / "generator.pt")
        record = gen["visible_tests"]
        assert record["k"] == 1 and record["choice"] == "first"
        # the training problems, and the warm-up problems the run split too, each with its first test
        assert {p.id for p in problems} <= set(record["indices"])
        assert all(idx == [0] for idx in record["indices"].values())
        assert gen["stage_id"] == 0
    assert [r["stage"] for r in _rows(tmp_path)] == [0]


def _checkpoint(tmp_path, sandbox, problems, *overrides):
    saver = make_trainer(tmp_path, sandbox, "--warmup.enabled=false", *overrides)
    saver.visibility.split(problems)
    saver.save_checkpoint(str(tmp_path / "stage_1"), 1, {})
    return tmp_path / "stage_1"


def test_resume_from_a_checkpoint_that_saw_every_test_is_refused(tmp_path, sandbox, problems):
    path = _checkpoint(tmp_path, sandbox, problems, "--visible_tests=0")
    assert _load(path / "generator.pt")["visible_tests"]["k"] == 0
    resumed = make_trainer(tmp_path, sandbox, *VISIBLE_1, "--warmup.enabled=false", "--stages=[5]")
    resumed.load_checkpoint(str(path))
    trained = []
    resumed.train_stage = lambda *a, **k: trained.append(a)
    with pytest.raises(UserError, match="visible_tests=1"):
        resumed.train(problems)
    assert trained == []


def test_resume_from_a_checkpoint_without_a_record_is_refused(tmp_path, sandbox, problems):
    path = _checkpoint(tmp_path, sandbox, problems, "--visible_tests=0")
    gen = _load(path / "generator.pt")
    del gen["visible_tests"]  # saved before the record existed
    torch.save(gen, path / "generator.pt")
    resumed = make_trainer(tmp_path, sandbox, *VISIBLE_1, "--warmup.enabled=false", "--stages=[5]")
    resumed.load_checkpoint(str(path))
    resumed.train_stage = lambda *a, **k: pytest.fail("trained after a refused resume")
    with pytest.raises(UserError, match="every reference test"):
        resumed.train(problems)


def test_resume_with_the_same_split_passes_and_another_split_is_refused(tmp_path, sandbox, problems):
    path = _checkpoint(tmp_path, sandbox, problems, *VISIBLE_1)
    same = make_trainer(tmp_path, sandbox, *VISIBLE_1, "--warmup.enabled=false")
    same.load_checkpoint(str(path))
    assert len(same.visibility.split(problems)[0].tests) == 1  # no error
    other = make_trainer(tmp_path, sandbox, "--visible_tests=1", "--visible_choice=random", "--warmup.enabled=false")
    assert any(visible_indices(p, 1, "random", other.config.seed) != [0] for p in problems)
    other.load_checkpoint(str(path))
    with pytest.raises(UserError, match="hides some of them"):
        other.visibility.split(problems)
