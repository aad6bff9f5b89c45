"""Every test form that reaches its verdict outside the candidate's process.

For each form: a correct candidate passes, a wrong one fails, an object with
lying comparison and arithmetic methods fails, and a candidate that forges
pass records from its own memory fails. The forms are listed in
sandbox/checks.py; anything else runs in assert mode and is marked forgeable.
"""

import textwrap

import pytest

from sandbox import Sandbox
from sandbox.checks import plan_test

from test_sandbox_hostile import FORGERS

CORRECT = "def f(x):\n    return x * 2\n"
WRONG = "def f(x):\n    return x * 3\n"
ALWAYS_EQUAL = textwrap.dedent("""
    class Liar:
        def __eq__(self, other): return True
        def __ne__(self, other): return False
        __lt__ = __le__ = __gt__ = __ge__ = __eq__
        def __bool__(self): return True
        def __hash__(self): return 0
        def __abs__(self): return self
        def __sub__(self, other): return self
        __add__ = __radd__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __sub__
        def __contains__(self, other): return True
    def f(x):
        return Liar()
""")

FORMS = {
    "expected value is an expression": "assert f(2) == max(4, 0)",
    "argument is an expression": "assert f(3 * 2) == 12",
    "call inside arithmetic": "assert abs(f(1.5) - 3.0) < 1e-9",
    "builtin applied to the call": "assert sorted(f([2, 1])) == [1, 1, 2, 2]",
    "len of the call": "assert len(f('ab')) == 4",
    "membership": "assert 4 in [f(2), 0]",
    "call on the right of in": "assert 'bb' in [f('b')]",
    "several calls": "assert f(3) == f(1) + 4",
    "chained comparison": "assert 3 < f(2) <= 4",
    "module function": "import math\nassert math.isclose(f(0.5), 1.0)",
    "or skips a raising call": "assert f(1) == 2 or f(None) == 0",
    "check() with a bound name and a loop":
        "def check(candidate):\n    xs = list(range(3))\n    assert candidate(xs) == xs + xs\n"
        "    for i in range(3):\n        assert candidate(i) == 2 * i\n\ncheck(f)\n",
}


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout_s=2.0, memory_mb=256, workers=2) as box:
        yield box


@pytest.mark.parametrize("form", sorted(FORMS))
def test_form(sb, form):
    test = FORMS[form]
    assert plan_test(test, "f").kind == "io"
    codes = [CORRECT, WRONG, ALWAYS_EQUAL] + [textwrap.dedent(c) for c in FORGERS.values()]
    results = sb.run_batch([(code, [test], "f") for code in codes])
    assert results[0].passed, (form, results[0])
    for code, r in zip(codes[1:], results[1:]):
        assert not r.passed, (form, code, r)
    assert all(r.forgeable == [False] for r in results)


def test_failure_reasons_name_the_assert_and_the_values(sb):
    r = sb.run(WRONG, ["assert abs(f(1.5) - 3.0) < 1e-9"], "f")
    assert "abs(f(1.5) - 3.0) < 1e-9" in r.error and "4.5" in r.error
    r = sb.run(WRONG, ["assert f(2) == max(4, 0)"], "f")
    assert "expected 4, got 6" in r.error


def test_tests_that_cannot_pass_are_invalid(sb):
    # Their expected side raises, or they do not depend on the code and are false.
    r = sb.run(CORRECT, ["assert f(1) == 1 / 0", "assert 1 == 2", "assert f(1) == 2"], "f")
    assert r.status == "error" and r.test_results == [False, False, True]
    assert "ZeroDivisionError" in r.error


def test_argument_without_a_plain_value_runs_in_assert_mode(sb):
    r = sb.run("def f(xs):\n    return sum(xs)\n", ["assert f(range(4)) == 6"], "f")
    assert r.passed and r.forgeable == [True]


def test_entry_point_named_like_a_builtin(sb):
    code = "def sorted(xs):\n    return list(xs)\n"
    assert sb.run(code, ["assert sorted([2, 1]) == [2, 1]"], "sorted").passed
    assert not sb.run(code, ["assert sorted([2, 1]) == [1, 2]"], "sorted").passed


def test_generator_result_accepted_through_list(sb):
    code = "def f(n):\n    return (i * i for i in range(n))\n"
    assert sb.run(code, ["assert list(f(3)) == [0, 1, 4]"], "f").passed
    assert not sb.run(code, ["assert f(3) == [0, 1, 4]"], "f").passed
