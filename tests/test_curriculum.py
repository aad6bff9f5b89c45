"""The bundled curriculum: family groups, instance shape, splits, determinism, correctness."""

import ast
from collections import defaultdict

import pytest

from training.data.curriculum import (
    HELDOUT_FAMILIES,
    RL_ONLY_FAMILIES,
    SFT_FAMILIES,
    SPLITS,
    list_families,
    load_curriculum,
)
from training.data.curriculum.base import MAX_CODE_LINES, MAX_PROMPT_CHARS, MAX_STAGE_CHARS, MIN_TESTS
from training.errors import UserError

from references import run_references

CATEGORIES = {"arithmetic", "math", "strings", "lists", "dicts", "searching", "counting"}



@pytest.fixture(scope="module")
def splits():
    return {name: load_curriculum(name) for name in SPLITS[:-1]}


@pytest.fixture(scope="module")
def every_instance(splits):
    return splits["train"] + splits["heldout_instances"] + splits["heldout_families"]


def _by_family(problems):
    groups = defaultdict(list)
    for p in problems:
        groups[p.family].append(p)
    return groups


# --------------------------------------------------------------------------- families


def test_family_groups_sizes_and_categories():
    infos = list_families()
    names = [f.name for f in infos]
    assert len(names) >= 44 and len(set(names)) == len(names)
    assert len(HELDOUT_FAMILIES) >= 8
    assert {f.group for f in infos} == {"sft", "rl_only", "heldout"}
    assert {f.category for f in infos} == CATEGORIES
    # ~60 / 20 / 20
    assert 0.5 <= len(SFT_FAMILIES) / len(names) <= 0.7
    assert 0.15 <= len(RL_ONLY_FAMILIES) / len(names) <= 0.3
    assert 0.15 <= len(HELDOUT_FAMILIES) / len(names) <= 0.3
    by_group = defaultdict(set)
    for f in infos:
        by_group[f.group].add(f.name)
    assert by_group["sft"] == set(SFT_FAMILIES)
    assert by_group["rl_only"] == set(RL_ONLY_FAMILIES)
    assert by_group["heldout"] == set(HELDOUT_FAMILIES)


# --------------------------------------------------------------------------- instance shape


def _params(reference, entry_point):
    fn = next(n for n in ast.parse(reference).body if isinstance(n, ast.FunctionDef) and n.name == entry_point)
    return [a.arg for a in fn.args.args]


def test_every_instance_is_well_formed(every_instance):
    ids = [p.id for p in every_instance]
    assert len(set(ids)) == len(ids)
    for p in every_instance:
        assert p.source == "curriculum" and p.family and p.split
        assert p.id.startswith(f"curriculum/{p.family}/")
        # prompt: short, names the signature
        params = _params(p.reference_solution, p.entry_point)
        assert len(p.prompt) <= MAX_PROMPT_CHARS, p.prompt
        assert f"`{p.entry_point}({', '.join(params)})`" in p.prompt, p.prompt
        # reference: short, plain, 4-space indented
        lines = p.reference_solution.splitlines()
        assert len(lines) <= MAX_CODE_LINES and lines[0].startswith(f"def {p.entry_point}(")
        assert all((len(line) - len(line.lstrip(" "))) % 4 == 0 and "\t" not in line for line in lines)
        # tests: >= 6 distinct `assert f(<literals>) == <literal>`
        assert len(p.tests) >= MIN_TESTS and len(set(p.tests)) == len(p.tests)
        for test in p.tests:
            (node,) = ast.parse(test).body
            assert isinstance(node, ast.Assert), test
            cmp = node.test
            assert isinstance(cmp, ast.Compare) and isinstance(cmp.ops[0], ast.Eq) and len(cmp.ops) == 1, test
            call = cmp.left
            assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name), test
            assert call.func.id == p.entry_point, test
            for arg in call.args:
                ast.literal_eval(arg)
            ast.literal_eval(cmp.comparators[0])
        # gold stages: 4 short texts about this instance
        assert isinstance(p.gold_stages, list) and len(p.gold_stages) == 4
        for text in p.gold_stages:
            assert text.strip() and len(text) <= MAX_STAGE_CHARS, text
            assert p.entry_point in text or any(name in text for name in params), text
        assert p.entry_point in p.gold_stages[0] and p.entry_point in p.gold_stages[2]
        assert p.gold_stages[1].startswith("Input:") and "Steps:" in p.gold_stages[1]
        assert "Edge cases:" in p.gold_stages[3] and "Invariant:" in p.gold_stages[3]


def test_tests_include_an_edge_case(every_instance):
    """An empty or trivial argument (0, 1, '', [], {} or one item) appears in every instance's tests."""

    def trivial(value):
        return value in (0, 1) or (isinstance(value, (str, list, dict)) and len(value) <= 1)

    for p in every_instance:
        if p.family == "clamp_value":  # its edge cases are the two bounds, checked by the test values
            continue
        calls = [ast.parse(t).body[0].test.left for t in p.tests]
        assert any(trivial(ast.literal_eval(a)) for call in calls for a in call.args), p.tests


def test_variety_of_names_phrasings_and_constants(splits):
    for family, problems in _by_family(splits["train"]).items():
        assert len({p.entry_point for p in problems}) >= 4, family
        assert len({p.prompt.split()[0] for p in problems}) >= 3, family  # Write / Implement / Define / Create
        assert len({tuple(_params(p.reference_solution, p.entry_point)) for p in problems}) >= 3, family
        assert len({p.prompt for p in problems}) == len(problems), family


# --------------------------------------------------------------------------- splits


def test_splits_hold_the_right_families(splits):
    families = {name: {p.family for p in problems} for name, problems in splits.items()}
    assert families["warmup"] == set(SFT_FAMILIES)
    assert families["train"] == set(SFT_FAMILIES) | set(RL_ONLY_FAMILIES)
    assert families["heldout_instances"] == families["train"]
    assert families["heldout_families"] == set(HELDOUT_FAMILIES)
    for name, problems in splits.items():
        assert {p.split for p in problems} == {name}


def test_default_sizes(splits):
    for name, per_family in [("warmup", 40), ("train", 40), ("heldout_instances", 10), ("heldout_families", 10)]:
        counts = {f: len(ps) for f, ps in _by_family(splits[name]).items()}
        assert set(counts.values()) == {per_family}, name


def test_warmup_is_the_sft_part_of_train(splits):
    train = {p.id: p for p in splits["train"]}
    for p in splits["warmup"]:
        assert train[p.id].prompt == p.prompt and train[p.id].tests == p.tests


def test_heldout_instances_never_repeat_a_train_prompt(splits):
    train_prompts = {p.prompt for p in load_curriculum("train", per_family=80)}
    heldout = splits["heldout_instances"]
    assert not train_prompts & {p.prompt for p in heldout}
    assert not {p.id for p in splits["train"]} & {p.id for p in heldout}


def test_all_is_train_plus_both_heldout_splits(splits, every_instance):
    assert [p.id for p in load_curriculum("all")] == [p.id for p in every_instance]


def test_unknown_split_and_bad_size_raise_user_error():
    with pytest.raises(UserError) as err:
        load_curriculum("test")
    for name in SPLITS:
        assert name in str(err.value)
    with pytest.raises(UserError, match="per_family"):
        load_curriculum("train", per_family=0)


# --------------------------------------------------------------------------- determinism and speed


def test_same_seed_same_problems_other_seed_other_problems(splits):
    assert load_curriculum("train") == splits["train"]
    other = load_curriculum("train", seed=1)
    assert [p.prompt for p in other] != [p.prompt for p in splits["train"]]


def test_instance_i_does_not_depend_on_per_family(splits):
    small = load_curriculum("heldout_instances", per_family=3)
    by_id = {p.id: p for p in splits["heldout_instances"]}
    assert all(by_id[p.id] == p for p in small)


def test_whole_curriculum_generates_every_family_under_distinct_ids():
    problems = load_curriculum("all")
    ids = [p.id for p in problems]
    assert len(ids) == len(set(ids))
    assert {i.split("/")[1] for i in ids} == {f.name for f in list_families()}


# --------------------------------------------------------------------------- correctness


def test_runner_reports_a_failing_reference():
    from training.data.problems import Problem

    wrong = Problem("x", "p", "f", "def f(a):\n    return a + 1\n", ["assert f(1) == 2", "assert f(1) == 3"])
    failures = run_references([wrong])
    assert [(i, t) for i, t, _ in failures] == [("x", "assert f(1) == 3")]


@pytest.mark.parametrize("family", SFT_FAMILIES + RL_ONLY_FAMILIES + HELDOUT_FAMILIES)
def test_reference_solutions_pass_their_own_tests(every_instance, family):
    problems = [p for p in every_instance if p.family == family]
    assert problems
    assert run_references(problems) == []
