"""pass@k, CodeT ranking and the evaluation scoring path (training/evaluate.py, training/ranking.py)."""

import json
import math
from itertools import combinations

import pytest

from sandbox import ExecutionResult, Sandbox
from training.evaluate import evaluate_samples, main as evaluate_main, pass_at_k, sample_passed, summarize, to_markdown
from training.data.problems import Problem
from training.evaluation.ranking import codet_rank, group_by_passes, infer_entry_point, pass_matrix

from checkpoints_helper import write_checkpoints


# ================================================================== pass@k
@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 1, 0.4),  # c / n
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 0, 1, 0.0),
        (5, 0, 5, 0.0),
        (5, 4, 2, 1.0),  # n - c = 1 < k: every pair holds a pass
        (5, 5, 1, 1.0),
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_the_subset_definition():
    # pass@k is the chance that a random k-subset of the n samples holds a passing one
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(combinations([True] * c + [False] * (n - c), k))
                exact = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    value = pass_at_k(2000, 3, 100)  # binomials of this size overflow floats
    assert math.isfinite(value) and 0 < value < 1
    assert value == pytest.approx(1 - math.comb(1997, 100) / math.comb(2000, 100), rel=1e-9)


@pytest.mark.parametrize("n, c, k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (3, 1, 5)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_summarize_skips_k_larger_than_n():
    rows = [{"n": 2, "c": 1, "test_pass_rate": 0.5}, {"n": 2, "c": 0, "test_pass_rate": 0.0}]
    out = summarize(rows, ks=[1, 2, 5])
    assert out["ks"] == [1, 2]
    assert out["pass@1"] == pytest.approx(0.25)
    assert out["pass@2"] == pytest.approx(0.5)
    assert "pass@5" not in out


def test_summarize_reports_each_family_group_apart():
    rows = [{"n": 2, "c": 2, "test_pass_rate": 1.0, "group": "sft"},
            {"n": 2, "c": 0, "test_pass_rate": 0.0, "group": "sft"},
            {"n": 2, "c": 1, "test_pass_rate": 0.5, "group": "rl_only"},
            {"n": 2, "c": 2, "test_pass_rate": 1.0, "group": None}]  # not a curriculum problem: in no group
    out = summarize(rows, ks=[1, 2])
    assert out["by_group"]["sft"] == {"num_problems": 2, "pass@1": pytest.approx(0.5), "pass@2": pytest.approx(0.5)}
    assert out["by_group"]["rl_only"] == {"num_problems": 1, "pass@1": pytest.approx(0.5), "pass@2": pytest.approx(1.0)}
    assert "heldout" not in out["by_group"]
    assert "by_group" not in summarize([{"n": 1, "c": 1, "test_pass_rate": 1.0, "group": None}])


def test_evaluate_samples_puts_curriculum_problems_in_their_group():
    from training.data.curriculum import load_curriculum

    problems = [p for p in load_curriculum("heldout_instances", per_family=1) if p.family in ("affine", "reverse_words")]
    assert {p.family for p in problems} == {"affine", "reverse_words"}
    codes = [[p.reference_solution] if p.family == "affine" else ["def nothing(): pass"] for p in problems]
    with Sandbox(workers=1) as sandbox:
        out = evaluate_samples(problems, codes, sandbox)
    assert out["by_group"] == {"sft": {"num_problems": 1, "pass@1": 1.0}, "rl_only": {"num_problems": 1, "pass@1": 0.0}}


# ================================================================== CodeT ranking
T, F = True, False


def test_consensus_group_beats_a_lone_sample_passing_more_tests():
    matrix = [
        [T, F, F, F],  # 0: alone, 1 test            -> 1
        [T, T, T, F],  # 1: agrees with 3 and 4      -> 3 x 3 = 9
        [T, T, T, T],  # 2: alone, passes everything -> 1 x 4 = 4
        [T, T, T, F],
        [T, T, T, F],
    ]
    pick = codet_rank(matrix)
    assert pick.index == 1
    assert (pick.winner.size, pick.winner.tests_passed, pick.winner.score) == (3, 3, 9)
    assert pick.winner.members == (1, 3, 4)
    assert [g.score for g in pick.groups] == [9, 4, 1]
    assert "3 samples" in pick.explain() and "3 of 4 tests" in pick.explain() and "= 9" in pick.explain()


def test_more_tests_win_when_groups_are_equally_large():
    pick = codet_rank([[T, F, F], [T, F, F], [T, T, F], [T, T, F]])
    assert pick.index == 2 and pick.winner.score == 4


def test_equal_scores_go_to_the_lower_index():
    # {0, 2} pass 1 test (2 x 1 = 2); {1} passes 2 tests (1 x 2 = 2): tie -> the group of sample 0
    assert codet_rank([[T, F], [T, T], [T, F]]).index == 0
    # {0} passes 2 tests (2); {1, 2} pass 1 test (2): tie -> sample 0
    assert codet_rank([[T, T], [F, T], [F, T]]).index == 0
    # the same tie with the lone sample later -> the pair, starting at 0
    assert codet_rank([[F, T], [F, T], [T, T]]).index == 0


def test_groups_need_the_exact_same_passing_set():
    # 0 and 1 each pass one test, but different ones: no agreement between them
    groups = group_by_passes([[T, F], [F, T], [T, F]])
    assert [(g.members, g.passed) for g in groups] == [((0, 2), (T, F)), ((1,), (F, T))]


def test_no_passes_and_no_tests_keep_the_first_sample():
    none_pass = codet_rank([[F, F], [F, F], [F, F]])
    assert none_pass.index == 0 and none_pass.winner.score == 0 and "no sample passes" in none_pass.explain()
    no_tests = codet_rank([[], [], []])
    assert no_tests.index == 0 and no_tests.num_tests == 0 and "no usable tests" in no_tests.explain()


def test_a_single_sample_is_its_own_pick():
    pick = codet_rank([[F, T]])
    assert pick.index == 0 and pick.to_dict()["winner"] == 0


def test_ranking_rejects_ragged_or_empty_matrices():
    with pytest.raises(ValueError):
        codet_rank([])
    with pytest.raises(ValueError):
        codet_rank([[T], [T, F]])


def test_to_dict_is_json_ready():
    d = codet_rank([[T, F], [T, F], [F, T]]).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert (d["winner"], d["group_size"], d["tests_passed"], d["score"]) == (0, 2, 1, 2)


# ================================================================== entry points
@pytest.mark.parametrize(
    "problem, codes, expected",
    [
        ("Write `reverse_string(s)` that reverses s.", [], "reverse_string"),
        ("def add(a, b):\n    '''Add.'''\n", [], "add"),
        ("Write a function called count_vowels(text) ...", [], "count_vowels"),
        ("Implement a function that reverses a string", ["def rev(s):\n    return s[::-1]\n"], "rev"),
        ("Reverse a string", ["def a(s): pass", "def b(s): pass", "def b(s): return s"], "b"),
        ("Reverse a string", ["def a(s): pass", "def b(s): pass"], "a"),
        ("Reverse a string", ["not python at all", ""], None),
    ],
)
def test_infer_entry_point(problem, codes, expected):
    assert infer_entry_point(problem, codes) == expected


# ================================================================== scoring path (fake sandbox)
class FakeSandbox:
    """Runs nothing: a sample "passes" test j when the code string contains `ok<j>`; `crash` reports nothing."""

    def __init__(self):
        self.jobs = []

    def run_batch(self, jobs):
        self.jobs.extend(jobs)
        out = []
        for code, tests, _entry in jobs:
            if "crash" in code:
                out.append(ExecutionResult(False, [], "error"))
                continue
            results = [f"ok{j}" in code for j in range(len(tests))]
            out.append(ExecutionResult(all(results), results, "ok"))
        return out


def _problem(pid, n_tests, source="curriculum"):
    return Problem(id=pid, prompt="p", entry_point="f", reference_solution="def f(): pass",
                   tests=[f"assert f() == {i}" for i in range(n_tests)], source=source)


def test_evaluate_samples_counts_full_passes_only():
    problems = [_problem("a", 2), _problem("b", 2)]
    samples = [["ok0 ok1", "ok0", "crash", "ok0 ok1"], ["ok1", "", "ok0", "crash"]]
    sandbox = FakeSandbox()
    out = evaluate_samples(problems, samples, sandbox, ks=[1, 2, 10])
    assert len(sandbox.jobs) == 8
    assert [(r["n"], r["c"]) for r in out["problems"]] == [(4, 2), (4, 0)]
    assert out["pass@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert out["pass@2"] == pytest.approx((pass_at_k(4, 2, 2) + 0.0) / 2)
    assert "pass@10" not in out and out["ks"] == [1, 2]
    # test pass rate: problem a 1, .5, 0, 1 -> .625; problem b .5, 0, .5, 0 -> .25
    assert out["test_pass_rate"] == pytest.approx((0.625 + 0.25) / 2)


def test_block_test_is_judged_by_the_sandbox_verdict():
    # HumanEval keeps one check(...) block: pass/fail is the sandbox's, whatever test_results says
    assert sample_passed(ExecutionResult(True, [], "ok"), 1) is True
    assert sample_passed(ExecutionResult(False, [True], "ok"), 1) is False
    # several tests: a job that stopped half-way fails the tests it did not report
    assert sample_passed(ExecutionResult(True, [True], "ok"), 2) is False
    assert sample_passed(ExecutionResult(True, [True, True], "ok"), 2) is True


def test_pass_matrix_pads_crashed_jobs():
    matrix = pass_matrix(FakeSandbox(), ["ok0 ok2", "crash", ""], ["t0", "t1", "t2"], "f")
    assert matrix == [[T, F, T], [F, F, F], [F, F, F]]
    assert pass_matrix(FakeSandbox(), ["a", "b"], [], "f") == [[], []]


def test_markdown_table_has_one_row_per_source():
    report = {
        "checkpoint": "ck", "canonical": False, "n": 4, "ks": [1, 2], "num_samples_rerank": 4,
        "results": [
            {"source": "curriculum:heldout_instances", "num_problems": 3, "n": 4, "pass@1": 0.5, "pass@2": 0.75,
             "test_pass_rate": 0.6, "rerank": {"pass@1": 2 / 3, "random_pick_pass@1": 0.5}},
            {"source": "humaneval", "num_problems": 164, "n": 4, "pass@1": 0.0, "pass@2": 0.0, "test_pass_rate": 0.0},
        ],
    }
    lines = to_markdown(report).strip().splitlines()
    header = lines[2]
    assert header.startswith("| source | problems | n | pass@1 | pass@2 |") and "reranked pass@1" in header
    rows = lines[4:]
    assert len(rows) == 2
    assert rows[0].split("|")[1:-1] == [" `curriculum:heldout_instances` ", " 3 ", " 4 ", " 0.500 ", " 0.750 ",
                                         " 0.600 ", " 0.667 ", " 0.500 "]
    assert "n/a" in rows[1]


# ================================================================== CLI errors (no models, no sandbox)
def test_cli_rejects_bad_arguments_with_one_line(capsys):
    assert evaluate_main(["--canonical", "--k", "1,x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --k")
    assert evaluate_main(["--canonical", "--problems", "nonsense"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown problem source")


def test_cli_missing_checkpoint_lists_existing(tmp_path, capsys):
    (tmp_path / "stage_1").mkdir()
    (tmp_path / "stage_1" / "generator.pt").write_bytes(b"")
    code = evaluate_main(["--checkpoint", str(tmp_path / "best"), "--problems", "curriculum:heldout_instances", "--limit", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not found" in err[0] and "stage_1" in err[0]


# ================================================================== canonical solutions (real sandbox)
def test_canonical_humaneval_scores_pass_at_1_of_one():
    """The 164 reference solutions through the model's scoring path: anything below 1.0 is a harness bug."""
    from training.evaluate import evaluate_canonical

    report = evaluate_canonical(["humaneval", "curriculum:heldout_families"], ks=[1, 5], progress=False)
    humaneval, families = report["results"]
    assert humaneval["source"] == "humaneval" and humaneval["num_problems"] == 164
    failed = [r["id"] for r in humaneval["problems"] if r["c"] != r["n"]]
    assert humaneval["pass@1"] == 1.0, f"reference solutions failing: {failed}"
    assert families["pass@1"] == 1.0 and families["num_problems"] > 0
    assert report["ks"] == [1] and "pass@5" not in humaneval


def test_canonical_scoring_path_rejects_wrong_code():
    """The same path fails code that is wrong, so the 1.0 above is not vacuous."""
    from sandbox import Sandbox
    from training.data.problems import load_problems

    problems = load_problems("humaneval")[:5]
    wrong = [[f"def {p.entry_point}(*args, **kwargs):\n    return None\n", p.reference_solution] for p in problems]
    with Sandbox(timeout_s=2.0, memory_mb=512, workers=2) as sandbox:
        out = evaluate_samples(problems, wrong, sandbox, ks=[1, 2])
    assert [(r["n"], r["c"]) for r in out["problems"]] == [(2, 1)] * 5
    assert out["pass@1"] == pytest.approx(0.5) and out["pass@2"] == 1.0


def test_cli_canonical_writes_json_and_markdown(tmp_path, capsys):
    code = evaluate_main(["--canonical", "--problems", "humaneval", "--limit", "10", "--no-progress",
                          "--output", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["canonical"] is True and report["results"][0]["pass@1"] == 1.0
    assert report["results"][0]["num_problems"] == 10
    table = (tmp_path / "r.md").read_text()
    assert "| `humaneval` | 10 | 1 | 1.000 |" in table
    assert table in capsys.readouterr().out


# ================================================================== reranking through evaluate_players
class FakeDiscriminator:
    """Writes the same two tests for every problem, through the batched test-writer interface."""

    def test_prompt(self, problem, entry_point, code=None):
        return f"{problem}|{entry_point}"

    def sample_tests(self, prompts, num_samples=1, max_new_tokens=128, temperature=1.0, top_p=1.0):
        class Rollout:
            texts = ["assert f(1) == 2\nnot a test\nassert f(5) == 6\n" for _ in prompts for _ in range(num_samples)]

        return Rollout()


def test_rerank_reports_the_codet_pick_against_a_random_pick(monkeypatch):
    import training.chains
    from sandbox import Sandbox
    from training.evaluate import evaluate_players

    right = "def f(x):\n    return x + 1\n"
    wrong = "def f(x):\n    return 0\n"
    partly = "def f(x):\n    return 2\n"  # passes f(1) == 2 only
    codes = {"p1": [partly, right, right], "p2": [right, wrong, wrong]}

    fake_chains = _chains_ending_in(codes)

    monkeypatch.setattr(training.chains, "generate_chains", fake_chains)
    problems = [
        Problem(id=pid, prompt=pid, entry_point="f", reference_solution=right,
                tests=["assert f(1) == 2", "assert f(2) == 3", "assert f(10) == 11"])
        for pid in ("p1", "p2")
    ]
    with Sandbox(timeout_s=2.0, memory_mb=512, workers=2) as sandbox:
        out = evaluate_players(None, problems, sandbox, n=3, ks=[1, 3], temperature=0.8,
                               discriminator=FakeDiscriminator(), num_samples_rerank=3, num_tests=5, progress=False)
    assert [(r["n"], r["c"]) for r in out["problems"]] == [(3, 2), (3, 1)]
    assert out["pass@1"] == pytest.approx((2 / 3 + 1 / 3) / 2) and out["pass@3"] == 1.0
    # p1: {1, 2} pass both tests (2 x 2 = 4) over {0} (1 x 1); p2: {0} passes both (2) over {1, 2} passing none (0)
    assert [r["rerank"]["pick"] for r in out["problems"]] == [1, 0]
    assert out["problems"][0]["rerank"]["tests"] == ["assert f(1) == 2", "assert f(5) == 6"]
    assert out["rerank"]["pass@1"] == 1.0
    assert out["rerank"]["random_pick_pass@1"] == pytest.approx(0.5)
    assert out["rerank"]["mean_tests_per_problem"] == 2
    # its samples all agree, so merging them without the vote picks the same
    assert out["rerank"]["other_merge"] == {"agreement": False, "pass@1": 1.0}


def test_test_validity_counts_the_tests_the_reference_solution_passes():
    from sandbox import Sandbox
    from training.evaluation.ranking import discriminator_test_validity

    # FakeDiscriminator writes f(1) == 2 and f(5) == 6 for every problem
    plus_one = Problem(id="p1", prompt="p1", entry_point="f", reference_solution="def f(x):\n    return x + 1\n",
                       tests=["assert f(1) == 2"])
    times_two = Problem(id="p2", prompt="p2", entry_point="f", reference_solution="def f(x):\n    return 2 * x\n",
                        tests=["assert f(1) == 2"])
    with Sandbox(timeout_s=2.0, memory_mb=512, workers=2) as sandbox:
        out = discriminator_test_validity(FakeDiscriminator(), [plus_one, times_two], sandbox, num_tests=5)
    assert [row["valid"] for row in out["problems"]] == [[True, True], [True, False]]
    assert out["test_validity"] == pytest.approx(3 / 4) and out["tests_per_problem"] == 2
    assert out["problems_without_tests"] == 0 and out["temperature"] == 0.7
    assert out["forgeable_share"] == 0.0 and out["problems"][0]["forgeable"] == [False, False]
    # f(1) is each problem's first reference test: a copy; f(5) is the one call the reference labels for them
    assert [row["copy"] for row in out["problems"]] == [[True, False], [True, False]]
    assert out["copy_share"] == 0.5 and out["labelled_calls_per_problem"] == 1


class GuessingDiscriminator(FakeDiscriminator):
    """Its samples agree on f(5) == 6 and each guesses a different f(1)."""

    def sample_tests(self, prompts, num_samples=1, max_new_tokens=128, temperature=1.0, top_p=1.0):
        class Rollout:
            texts = [f"assert f(1) == {2 + i}\nassert f(5) == 6\n" for _ in prompts for i in range(num_samples)]

        return Rollout()


@pytest.mark.parametrize("agreement, tests, validity", [
    (True, ["assert f(5) == 6"], 1.0),
    (False, ["assert f(1) == 2", "assert f(5) == 6", "assert f(1) == 3"], 2 / 3),
])
def test_test_validity_merges_the_samples_by_agreement_unless_told_not_to(agreement, tests, validity):
    from sandbox import Sandbox
    from training.evaluation.ranking import discriminator_test_validity

    plus_one = Problem(id="p1", prompt="p1", entry_point="f", reference_solution="def f(x):\n    return x + 1\n",
                       tests=["assert f(1) == 2"])
    with Sandbox(timeout_s=2.0, memory_mb=512, workers=1) as sandbox:
        out = discriminator_test_validity(GuessingDiscriminator(), [plus_one], sandbox, num_tests=3, agreement=agreement)
    assert out["problems"][0]["tests"] == tests
    assert out["test_validity"] == pytest.approx(validity) and out["agreement"] is agreement
    # the same samples merged the other way, for the vote's effect without sampling noise
    other = out["other_merge"]
    assert other["agreement"] is not agreement
    assert other["test_validity"] == pytest.approx(2 / 3 if agreement else 1.0)
    assert other["tests_per_problem"] == (3 if agreement else 1)
    assert other["valid_tests_per_problem"] == (2 if agreement else 1)


def test_rerank_reports_the_pick_of_the_other_merge_from_the_same_samples():
    from sandbox import Sandbox
    from training.evaluation.ranking import rerank_samples

    right = "def f(x):\n    return x + 1\n"
    three = "def f(x):\n    return 3\n"  # passes only the guess f(1) == 3
    problem = Problem(id="p1", prompt="p1", entry_point="f", reference_solution=right, tests=["assert f(1) == 2"])
    with Sandbox(timeout_s=2.0, memory_mb=512, workers=1) as sandbox:
        [pick] = rerank_samples(GuessingDiscriminator(), [problem], [[three, three, right]], sandbox, num_tests=3)
    # by agreement only f(5) == 6 is left: `right` passes it, the two `three`s do not
    assert pick["tests"] == ["assert f(5) == 6"] and pick["matrix"] == [[False], [False], [True]]
    assert pick["pick"].index == 2
    # every test: f(1) == 2, f(5) == 6, f(1) == 3; the two `three`s pass one each (2 x 1), `right` two (1 x 2),
    # and the tie goes to the earlier sample
    assert pick["other_pick"].index == 0


def test_sampling_n_at_temperature_zero_is_refused():
    from training.errors import UserError
    from training.evaluate import evaluate_players

    with pytest.raises(UserError, match="temperature"):
        evaluate_players(None, [_problem("a", 1)], FakeSandbox(), n=4, temperature=0.0, progress=False)


# ================================================================== the CLI on a real checkpoint
@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    metrics = {"generator": {"avg_reward": 0.0}, "discriminator": {}}
    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"), {"stage_2": (2, metrics)}) / "stage_2"


def test_cli_evaluates_a_checkpoint_with_rerank(checkpoint_dir, tmp_path, capsys):
    code = evaluate_main([
        "--checkpoint", str(checkpoint_dir), "--problems", "curriculum:heldout_instances,humaneval", "--limit", "2",
        "--n", "2", "--k", "1,2,5", "--num-samples-rerank", "2", "--num-tests", "2", "--max-new-tokens", "4",
        "--device", "cpu", "--no-progress", "--output", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"),
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "pass@5 needs more samples" in captured.err  # asked for explicitly, so it says why it is missing
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["checkpoint"] == str(checkpoint_dir) and report["checkpoint_stage"] == 2 and report["ks"] == [1, 2]
    assert [r["source"] for r in report["results"]] == ["curriculum:heldout_instances", "humaneval"]
    for r in report["results"]:
        assert r["num_problems"] == 2 and r["n"] == 2 and r["temperature"] == 0.8
        assert 0.0 <= r["pass@1"] <= r["pass@2"] <= 1.0
        assert 0.0 <= r["rerank"]["pass@1"] <= 1.0 and r["rerank"]["num_samples"] == 2
        assert all(len(p["passed"]) == 2 and 0 <= p["rerank"]["pick"] < 2 for p in r["problems"])
    table = (tmp_path / "r.md").read_text().splitlines()
    assert table[2] == ("| source | problems | n | pass@1 | pass@2 | test pass rate | reranked pass@1 (of 2) "
                        "| random pick pass@1 |")
    assert len(table) == 6


def test_cli_reports_the_discriminators_test_validity(checkpoint_dir, tmp_path, capsys):
    code = evaluate_main([
        "--checkpoint", str(checkpoint_dir), "--problems", "curriculum:heldout_instances", "--limit", "3",
        "--k", "1", "--test-validity", "--test-temperature", "0", "--num-tests", "3", "--max-new-tokens", "8",
        "--device", "cpu", "--no-progress", "--output", str(tmp_path / "r.json"),
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    tests = json.loads((tmp_path / "r.json").read_text())["results"][0]["tests"]
    assert tests["temperature"] == 0 and len(tests["problems"]) == 3
    written = sum(len(row["tests"]) for row in tests["problems"])
    assert tests["tests_per_problem"] == pytest.approx(written / 3)
    assert all(len(row["valid"]) == len(row["tests"]) <= 3 for row in tests["problems"])
    assert "| discriminator test validity (writer reads problem) | its tests per problem | valid tests per problem |" in captured.out
    assert tests["writer_input"] == "problem" and 0 <= tests["wrong_codes"] <= 3
    assert all("caught" in row and "code_wrong" in row for row in tests["problems"])
    assert evaluate_main(["--canonical", "--test-validity"]) == 2
    assert "--test-validity needs a checkpoint" in capsys.readouterr().err


# ================================================================== visible tests: false positives at evaluation
def _doubling_problem(pid="double"):
    return Problem(id=pid, prompt=pid, entry_point="f", reference_solution="def f(x):\n    return 2 * x\n",
                   tests=["assert f(0) == 0", "assert f(1) == 2", "assert f(2) == 4"])


DOUBLING_SAMPLES = ["def f(x):\n    return 0\n",  # passes f(0) == 0 only
                    "def f(x):\n    return 2 * x\n",  # passes all three
                    "def f(x):\n    return x\n"]  # passes f(0) == 0 only


@pytest.mark.parametrize("k, visible_c, false_positives, visible_pass, rate", [
    (1, 3, 2, 1.0, 2 / 3),  # all three pass f(0) == 0; two of them are wrong
    (2, 1, 0, 1 / 3, 0.0),  # only 2 * x passes f(0) == 0 and f(1) == 2, and it is right
    (3, 1, 0, 1 / 3, 0.0),  # every test visible: nothing is hidden
])
def test_false_positive_rate_of_hand_made_samples(k, visible_c, false_positives, visible_pass, rate):
    from sandbox import Sandbox

    with Sandbox(timeout_s=2.0, memory_mb=512, workers=2) as sandbox:
        out = evaluate_samples([_doubling_problem()], [DOUBLING_SAMPLES], sandbox, ks=[1], visible_tests=k)
    [row] = out["problems"]
    assert row["c"] == 1 and row["visible"] == list(range(k))
    assert (row["visible_c"], row["false_positives"]) == (visible_c, false_positives)
    assert out["visible_tests"] == k
    assert out["visible_pass@1"] == pytest.approx(visible_pass)
    assert out["false_positive_rate"] == pytest.approx(rate)
    assert out["pass@1"] == pytest.approx(1 / 3)  # the full-test score is untouched


def test_visible_tests_reuse_the_sandbox_results_and_pool_over_the_source():
    from training.data.visibility import visible_indices

    # FakeSandbox: a sample passes test j when its code holds ok<j>
    problems = [_problem("a", 3), _problem("b", 3), _problem("he", 1, source="humaneval")]
    samples = [["ok0", "ok0 ok1 ok2", "ok1"], ["ok0 ok2", "crash", ""], ["ok0", ""]]
    sandbox = FakeSandbox()
    out = evaluate_samples(problems, samples, sandbox, ks=[1], visible_tests=1)
    assert len(sandbox.jobs) == 8  # one job per sample, as without visible tests
    rows = out["problems"]
    # a: ok0 and ok0 ok1 ok2 pass test 0, one is wrong; b: ok0 ok2 passes test 0 and is wrong;
    # he: one check block, nothing hidden, so the visible pass is the pass
    assert [(r["visible_c"], r["false_positives"]) for r in rows] == [(2, 1), (1, 1), (1, 0)]
    assert rows[2]["visible"] == [0]
    assert out["visible_pass@1"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert out["false_positive_rate"] == pytest.approx(2 / 4)
    # random: the same indices the training run's split uses
    out = evaluate_samples(problems, samples, FakeSandbox(), visible_tests=2, visible_choice="random", visible_seed=7)
    assert [r["visible"] for r in out["problems"]] == [visible_indices(p, 2, "random", 7) for p in problems]


def test_false_positive_rate_is_none_when_no_sample_passes_the_visible_tests():
    out = evaluate_samples([_problem("a", 3)], [["", "ok1"]], FakeSandbox(), visible_tests=1)
    assert out["visible_pass@1"] == 0.0 and out["false_positive_rate"] is None
    assert "n/a" in to_markdown({"checkpoint": "ck", "n": 2, "ks": [1], "results": [{"source": "s", **out}]})
    empty = evaluate_samples([], [], FakeSandbox(), visible_tests=1)
    assert empty["visible_pass@1"] is None and empty["false_positive_rate"] is None


def test_visible_keys_and_columns_only_when_asked():
    plain = evaluate_samples([_problem("a", 3)], [["ok0"]], FakeSandbox())
    assert not {"visible_tests", "visible_pass@1", "false_positive_rate"} & set(plain)
    assert "visible_c" not in plain["problems"][0]
    out = evaluate_samples([_problem("a", 3)], [["ok0", "ok0 ok1 ok2"]], FakeSandbox(), visible_tests=1)
    table = to_markdown({"checkpoint": "ck", "n": 2, "ks": [1], "results": [{"source": "s", **out}]}).splitlines()
    assert table[2] == "| source | problems | n | pass@1 | test pass rate | visible pass@1 (1 tests) | false-positive rate |"
    assert table[4].endswith("| 1.000 | 0.500 |")


def test_cli_rejects_bad_visible_flags_with_one_line(capsys):
    for argv, start in [(["--visible-tests", "0"], "error: --visible-tests must be at least 1"),
                        (["--visible-tests", "1", "--visible-choice", "last"], "error: --visible-choice must be first or random"),
                        (["--visible-seed", "3"], "error: --visible-choice and --visible-seed need --visible-tests")]:
        assert evaluate_main(["--canonical", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(start), err


def test_cli_canonical_solutions_have_no_false_positives(tmp_path):
    code = evaluate_main(["--canonical", "--problems", "curriculum:heldout_families", "--limit", "4", "--no-progress",
                          "--visible-tests", "1", "--visible-choice", "random", "--output", str(tmp_path / "r.json")])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["visible"] == {"k": 1, "choice": "random", "seed": 0}
    [result] = report["results"]
    assert result["visible_pass@1"] == 1.0 and result["false_positive_rate"] == 0.0


# ================================================================== a second test writer on the same samples
def test_rerank_writer_reranks_the_same_codes(monkeypatch):
    import training.chains
    from sandbox import Sandbox
    from training.errors import UserError
    from training.evaluate import evaluate_players

    right = "def f(x):\n    return x + 1\n"
    partly = "def f(x):\n    return 2\n"  # passes f(1) == 2 only
    codes = {"p1": [partly, right, right]}

    fake_chains = _chains_ending_in(codes)

    class Recording(GuessingDiscriminator):
        def __init__(self):
            self.prompts = []

        def test_prompt(self, problem, entry_point, code=None):
            self.prompts.append((problem, entry_point))
            return super().test_prompt(problem, entry_point, code)

    monkeypatch.setattr(training.chains, "generate_chains", fake_chains)
    problems = [Problem(id="p1", prompt="p1", entry_point="f", reference_solution=right,
                        tests=["assert f(1) == 2", "assert f(2) == 3"])]
    writer = Recording()
    with Sandbox(timeout_s=2.0, memory_mb=512, workers=2) as sandbox:
        out = evaluate_players(None, problems, sandbox, n=3, ks=[1], temperature=0.8, discriminator=FakeDiscriminator(),
                               num_samples_rerank=3, num_tests=3, progress=False, rerank_discriminator=writer)
    # FakeDiscriminator's f(1) == 2, f(5) == 6 pick `right` (sample 1); the guessing writer keeps only f(5) == 6
    assert out["rerank"]["pass@1"] == 1.0 and out["problems"][0]["rerank"]["pick"] == 1
    assert out["rerank"]["writer"] == {"pass@1": 1.0, "mean_tests_per_problem": 1.0}
    row = out["problems"][0]["rerank"]
    assert row["writer_pick"] == 1 and row["writer_pick_passed"] is True and row["writer_tests"] == ["assert f(5) == 6"]
    assert writer.prompts == [("p1", "f")]
    with pytest.raises(UserError, match="--num-samples-rerank"):
        evaluate_players(None, problems, FakeSandbox(), n=1, progress=False, rerank_discriminator=writer)


def test_cli_rerank_writer_with_the_same_checkpoint_reproduces_the_primary(checkpoint_dir, tmp_path, capsys):
    code = evaluate_main([
        "--checkpoint", str(checkpoint_dir), "--problems", "curriculum:heldout_instances", "--limit", "2",
        "--n", "2", "--k", "1", "--num-samples-rerank", "2", "--num-tests", "2", "--max-new-tokens", "4",
        "--rerank-writer", str(checkpoint_dir), "--visible-tests", "1",
        "--device", "cpu", "--no-progress", "--output", str(tmp_path / "r.json"),
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rerank_writer"] == str(checkpoint_dir)
    [r] = report["results"]
    writer = r["rerank"]["writer"]
    assert writer["checkpoint"] == str(checkpoint_dir) and 0.0 <= writer["pass@1"] <= 1.0
    # the same weights from the same random state write the same tests: the same picks
    assert writer["pass@1"] == r["rerank"]["pass@1"]
    assert writer["mean_tests_per_problem"] == r["rerank"]["mean_tests_per_problem"]
    assert all(p["rerank"]["writer_pick"] == p["rerank"]["pick"] for p in r["problems"])
    assert r["visible_tests"] == 1 and 0.0 <= r["visible_pass@1"] <= 1.0
    header = captured.out.splitlines()[2]
    assert header.endswith(f"| random pick pass@1 | reranked pass@1, writer `{checkpoint_dir}` |")
    assert "| visible pass@1 (1 tests) | false-positive rate |" in header


def test_cli_rerank_writer_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "gen_only").mkdir()
    (tmp_path / "gen_only" / "generator.pt").write_bytes(b"")
    cases = [
        ([], "error: --rerank-writer needs --num-samples-rerank R > 1"),
        (["--num-samples-rerank", "1"], "error: --rerank-writer needs --num-samples-rerank R > 1"),
        (["--num-samples-rerank", "2", "--canonical"], "error: --rerank-writer reranks a model's samples"),
    ]
    for extra, start in cases:
        assert evaluate_main(["--rerank-writer", str(tmp_path / "gen_only"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(start), err
    assert evaluate_main(["--rerank-writer", str(tmp_path / "nowhere"), "--num-samples-rerank", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --rerank-writer: checkpoint") and "not found" in err[0]
    assert evaluate_main(["--rerank-writer", str(tmp_path / "gen_only"), "--num-samples-rerank", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no discriminator.pt" in err[0]


def _chains_ending_in(codes: dict):
    """A stand-in for generate_chains: the i-th chain asked for a problem text ends in codes[text][i]."""

    def fake_chains(generator, texts, max_new_tokens=None, temperature=0.0, **kwargs):
        seen = {}
        out = []
        for text in texts:
            i = seen[text] = seen.get(text, -1) + 1
            out.append(["s1", "s2", "s3", "s4", codes[text][i]])
        return out

    return fake_chains


def test_sampled_evaluation_repeats_with_its_seed(checkpoint_dir, tmp_path, capsys):
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert evaluate_main(["--checkpoint", str(checkpoint_dir), "--problems", "curriculum:heldout_instances",
                              "--limit", "2", "--n", "3", "--k", "1", "--temperature", "1.0", "--max-new-tokens", "8",
                              "--device", "cpu", "--no-progress", "--seed", seed,
                              "--samples-jsonl", str(tmp_path / f"{name}.jsonl")]) == 0
    capsys.readouterr()
    a, b, c = ((tmp_path / f"{n}.jsonl").read_text() for n in "abc")
    assert a == b and len(a.splitlines()) == 6
    assert a != c
