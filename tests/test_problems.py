"""Problem record, JSONL (our schema, MBPP, APPS), HumanEval and load_problems."""

import json

import pytest

from training.data.curriculum import load_curriculum
from training.errors import UserError

from references import run_references
from training.data.problems import Problem, load_humaneval, load_jsonl, load_problems, save_jsonl

# One fresh interpreter runs a whole batch of (reference, tests) jobs.


def write_lines(path, records):
    """Write JSONL; a record that is a str is written as is (for malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


NATIVE = {
    "id": "demo/add",
    "prompt": "Write a Python function `add(a, b)` that returns a + b.",
    "entry_point": "add",
    "reference_solution": "def add(a, b):\n    return a + b\n",
    "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
}

MBPP = {  # MBPP task 3, verbatim (CRLF line ends and an import included)
    "text": "Write a python function to identify non-prime numbers.",
    "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):\r\n"
    "        if n % i == 0:\r\n            result = True\r\n    return result",
    "task_id": 3,
    "test_setup_code": "",
    "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True", "assert is_not_prime(35) == True"],
    "challenge_test_list": [],
}

APPS_FUNCTION = {
    "problem_id": 2400,
    "question": "Given a list of integers, return the sum of the even ones.",
    "solutions": json.dumps(["def even_sum(xs):\n    return sum(x for x in xs if x % 2 == 0)\n"]),
    "input_output": json.dumps({"fn_name": "even_sum", "inputs": [[[1, 2, 4]], [[]], [[3]]], "outputs": [[6], [0], [0]]}),
    "difficulty": "introductory",
}

APPS_CLASS = {
    "problem_id": 2401,
    "question": "Return the indices of the two numbers that add up to target.",
    "solutions": json.dumps(
        [
            "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
            "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
            "                return [seen[target - x], i]\n            seen[x] = i\n"
        ]
    ),
    "input_output": json.dumps(
        {"fn_name": "twoSum", "inputs": [[[2, 7, 11, 15], 9], [[3, 2, 4], 6]], "outputs": [[[0, 1]], [[1, 2]]]}
    ),
}

APPS_STDIO = {
    "problem_id": 1,
    "question": "Read n and print n + 1.",
    "solutions": json.dumps(["print(int(input()) + 1)"]),
    "input_output": json.dumps({"inputs": ["1\n"], "outputs": ["2\n"]}),
}


# --------------------------------------------------------------------------- record


def test_to_dict_from_dict_round_trip_is_json_safe():
    problems = load_curriculum("warmup", per_family=1)[:5] + load_humaneval()[:2]
    for p in problems:
        assert Problem.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_from_dict_validates():
    with pytest.raises(UserError, match="'tests'"):
        Problem.from_dict({**NATIVE, "tests": []})


# --------------------------------------------------------------------------- our JSONL schema


def test_jsonl_round_trip(tmp_path):
    problems = load_curriculum("train", per_family=2) + load_humaneval()[:3]
    path = tmp_path / "sub" / "problems.jsonl"
    save_jsonl(problems, path)
    assert load_jsonl(path) == problems


def test_minimal_lines_blank_lines_and_defaults(tmp_path):
    minimal = {k: v for k, v in NATIVE.items() if k != "id"}
    path = write_lines(tmp_path / "mine.jsonl", ["", json.dumps(minimal), "   ", json.dumps(NATIVE)])
    first, second = load_jsonl(path)
    assert first.id == "mine/2" and first.source == f"jsonl:{path}"
    assert first.gold_stages is None and first.tests == NATIVE["tests"]
    assert second.id == "demo/add"
    assert run_references([first, second]) == []


# --------------------------------------------------------------------------- MBPP and APPS


def test_mbpp_line_is_mapped(tmp_path):
    (p,) = load_jsonl(write_lines(tmp_path / "mbpp.jsonl", [MBPP]))
    assert p.id == "mbpp/3" and p.entry_point == "is_not_prime"
    assert p.prompt.startswith(MBPP["text"]) and "is_not_prime(n)" in p.prompt
    assert p.tests == MBPP["test_list"] and "\r" not in p.reference_solution
    assert run_references([p]) == []


def test_mbpp_entry_point_is_the_function_the_tests_call(tmp_path):
    line = {
        **MBPP,
        "task_id": 9,
        "code": "def helper(x):\n    return x * 2\n\ndef double_all(xs):\n    return [helper(x) for x in xs]",
        "test_list": ["assert double_all([1, 2]) == [2, 4]", "assert len(double_all([])) == 0"],
    }
    (p,) = load_jsonl(write_lines(tmp_path / "mbpp.jsonl", [line]))
    assert p.entry_point == "double_all" and "double_all(xs)" in p.prompt
    assert run_references([p]) == []


def test_apps_call_based_lines_are_mapped_and_stdio_lines_skipped(tmp_path):
    path = write_lines(tmp_path / "apps.jsonl", [APPS_STDIO, APPS_FUNCTION, APPS_CLASS])
    fn, cls = load_jsonl(path)
    assert fn.id == "apps/2400" and fn.entry_point == "even_sum" and "even_sum(xs)" in fn.prompt
    # APPS wraps each expected output in a one-item list; the asserts unwrap it
    assert fn.tests == ["assert even_sum([1, 2, 4]) == 6", "assert even_sum([]) == 0", "assert even_sum([3]) == 0"]
    assert cls.entry_point == "twoSum" and "twoSum(nums, target)" in cls.prompt
    assert cls.tests[0] == "assert twoSum([2, 7, 11, 15], 9) == [0, 1]"
    assert run_references([fn, cls]) == []


def test_apps_file_without_function_tests_is_an_error(tmp_path):
    with pytest.raises(UserError, match="no usable problems"):
        load_jsonl(write_lines(tmp_path / "apps.jsonl", [APPS_STDIO]))


# --------------------------------------------------------------------------- malformed input


def _apps_with(**fields):
    return {**APPS_FUNCTION, **fields}


MALFORMED = [
    ("not json", '{"prompt": "x",', "not valid JSON"),
    ("not an object", "[1, 2]", "JSON object"),
    ("tests not a list", {**NATIVE, "tests": "assert add(1, 2) == 3"}, "'tests'"),
    ("tests empty", {**NATIVE, "tests": []}, "'tests'"),
    ("test without assert", {**NATIVE, "tests": ["add(1, 2) == 3"]}, "'tests'"),
    ("test not python", {**NATIVE, "tests": ["assert add(1, 2) =="]}, "'tests'"),
    ("missing prompt", {k: v for k, v in NATIVE.items() if k != "prompt"}, "'prompt'"),
    ("bad entry point", {**NATIVE, "entry_point": "add two"}, "'entry_point'"),
    ("reference lacks entry", {**NATIVE, "reference_solution": "def plus(a, b):\n    return a + b\n"}, "'reference_solution'"),
    ("reference not python", {**NATIVE, "reference_solution": "def add(a, b) return a + b"}, "'reference_solution'"),
    ("three gold stages", {**NATIVE, "gold_stages": ["a", "b", "c"]}, "'gold_stages'"),
    ("duplicate id", NATIVE, "'id'"),
    ("mbpp code not python", {**MBPP, "code": "def is_not_prime(n)\n    return 1"}, "'code'"),
    ("mbpp tests call nothing defined", {**MBPP, "test_list": ["assert other(1) == 2"]}, "'test_list'"),
    ("apps input_output not json", _apps_with(input_output="{fn_name: x"), "'input_output'"),
    ("apps outputs missing", _apps_with(input_output=json.dumps({"fn_name": "even_sum", "inputs": [[1]]})), "'input_output'"),
    ("apps no solutions", _apps_with(solutions="[]"), "'solutions'"),
    ("apps solution lacks fn", _apps_with(solutions=json.dumps(["def other(xs):\n    return 0\n"])), "'solutions'"),
]


@pytest.mark.parametrize("case, bad_line, expected", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_line_names_path_line_and_field(tmp_path, case, bad_line, expected):
    path = write_lines(tmp_path / "problems.jsonl", [NATIVE, "", bad_line])  # the bad line is line 3
    with pytest.raises(UserError) as err:
        load_jsonl(path)
    message = str(err.value)
    assert message.startswith(f"{path} line 3: ") and expected in message
    assert "\n" not in message


def test_unreadable_files_raise_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match="is a directory"):
        load_jsonl(tmp_path)
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps(NATIVE).encode() + b"\n\xe9\n")
    with pytest.raises(UserError, match="UTF-8"):
        load_jsonl(latin1)
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="no usable problems"):
        load_jsonl(blank)


# --------------------------------------------------------------------------- HumanEval


@pytest.fixture(scope="module")
def humaneval():
    return load_humaneval()


def test_humaneval_loads_164_problems_in_the_documented_format(humaneval):
    assert len(humaneval) == 164 and len({p.id for p in humaneval}) == 164
    for p in humaneval:
        assert p.source == "humaneval" and p.split == "eval" and p.gold_stages is None
        assert p.reference_solution.startswith(p.prompt) and f"def {p.entry_point}(" in p.prompt
        (test,) = p.tests
        assert "def check(candidate)" in test and test.endswith(f"\ncheck({p.entry_point})\n")


def test_humaneval_canonical_solutions_pass(humaneval):
    assert run_references(humaneval) == []


# --------------------------------------------------------------------------- dispatch


def test_load_problems_dispatches_on_the_spec(tmp_path):
    heldout = load_problems("curriculum:heldout_families")
    assert heldout and {p.split for p in heldout} == {"heldout_families"}
    assert len(load_problems("humaneval")) == 164
    path = write_lines(tmp_path / "mine.jsonl", [NATIVE])
    assert [p.id for p in load_problems(str(path))] == ["demo/add"]


def test_a_curriculum_spec_can_ask_for_more_instances_per_family():
    warmup = load_problems("curriculum:warmup")
    more = load_problems("curriculum:train:60")
    assert len(more) == 60 * len({p.family for p in more})
    by_id = {p.id: p.prompt for p in more}
    # the first 40 of each SFT family are the warm-up's own instances; the rest are new to it
    assert all(by_id.get(p.id) == p.prompt for p in warmup)
    assert len(more) > len(load_problems("curriculum:train"))


@pytest.mark.parametrize("spec", ["curriculum:train:many", "curriculum:train:0", "curriculum:train:5:6"])
def test_a_bad_instance_count_is_one_clear_error(spec):
    with pytest.raises(UserError, match="per.family|instances per family"):
        load_problems(spec)


@pytest.mark.parametrize("spec", ["mbpp", "curriculum:test", "problems.json"])
def test_load_problems_rejects_unknown_specs(spec):
    with pytest.raises(UserError) as err:
        load_problems(spec)
    assert "heldout_families" in str(err.value)
    if spec != "curriculum:test":
        assert "humaneval" in str(err.value) and ".jsonl" in str(err.value)
