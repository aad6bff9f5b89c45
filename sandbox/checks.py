"""Trusted-side test handling: classify test strings, parse and compare results.

Runs in the worker manager, never in the job process. Two kinds of test:

I/O tests
    ``assert f(<literals>) == <literal>`` and the forms listed in
    :func:`plan_test`. The job receives only the function name and the
    arguments, returns ``repr()`` of the result built by a type-checking
    serializer, and this module parses it with :func:`parse_value` (a
    literal-only parser) and compares it with :func:`strict_equal`. Expected
    values never enter the job, so nothing the candidate does inside its
    process can make a wrong answer pass.

    A HumanEval-style test (``def check(candidate): assert candidate(...) == ...``
    followed by ``check(name)``) whose every statement is of that form is turned
    into one I/O call per assert, so most HumanEval problems get this strength.

Assert tests
    Anything else runs inside the job with a per-test secret marker (see
    ``harness.py``). That stops naive forgeries but not introspection.
"""

from __future__ import annotations

import ast
import cmath
import math
from dataclasses import dataclass, field

FLOAT_REL_TOL = 1e-9
FLOAT_ABS_TOL = 1e-12
MAX_TEST_CHARS = 200_000
_MAX_DEPTH = 100


@dataclass(frozen=True)
class IoCall:
    func: str                     # function name, looked up in the candidate's globals
    args: tuple                   # literal positional arguments
    kwargs: dict                  # literal keyword arguments
    expect: str                   # "eq" | "ne" | "truthy" | "falsy" | "is" | "isnot"
    value: object = None          # expected value for eq/ne/is/isnot
    test: str = field(default="", repr=False)   # the whole test text
    span: tuple = ()              # (lineno, col, end_lineno, end_col) of the checked expression

    @property
    def source(self) -> str:
        """Short text of the checked expression, for failure reasons.

        Cut from the test on demand: ast.unparse for every call was half the
        cost of classifying a HumanEval test.
        """
        node = ast.Module()       # any node carrying the span will do
        node.lineno, node.col_offset, node.end_lineno, node.end_col_offset = self.span
        return _short(ast.get_source_segment(self.test, node) or self.func + "(...)")


@dataclass(frozen=True)
class TestPlan:
    kind: str                     # "io" | "assert" | "invalid"
    calls: tuple = ()             # IoCall, for "io"
    source: str = ""              # test code, for "assert"
    code: object = None           # its guarded code object, for "assert"
    reason: str = ""              # for "invalid"


def _literal(node: ast.AST):
    """ast.literal_eval on a node; raises ValueError if not a literal."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
        raise ValueError("not a literal") from e


def _call_parts(node: ast.AST, func_name: str | None = None):
    """(name, args, kwargs) if node is ``name(<literals>)``; else None."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return None
    if func_name is not None and node.func.id != func_name:
        return None
    if any(isinstance(a, ast.Starred) for a in node.args):
        return None
    try:
        args = tuple(_literal(a) for a in node.args)
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:  # **mapping
                return None
            kwargs[kw.arg] = _literal(kw.value)
    except ValueError:
        return None
    return node.func.id, args, kwargs


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _io_call_from_assert(stmt: ast.Assert, text: str, func_name: str | None = None,
                         rename: str | None = None) -> IoCall | None:
    """Map one ``assert`` to an IoCall, or None if it is not an I/O form."""
    test = stmt.test
    span = (test.lineno, test.col_offset, test.end_lineno, test.end_col_offset)

    def make(call_node, expect, value=None):
        parts = _call_parts(call_node, func_name)
        if parts is None:
            return None
        name, args, kwargs = parts
        return IoCall(rename or name, args, kwargs, expect, value, text, span)

    if isinstance(test, ast.Call):
        return make(test, "truthy")
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return make(test.operand, "falsy")
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        op, left, right = test.ops[0], test.left, test.comparators[0]
        if isinstance(op, (ast.Is, ast.IsNot)):
            if isinstance(right, ast.Constant) and right.value in (True, False, None) \
                    and type(right.value) in (bool, type(None)):
                return make(left, "is" if isinstance(op, ast.Is) else "isnot", right.value)
            return None
        if isinstance(op, (ast.Eq, ast.NotEq)):
            expect = "eq" if isinstance(op, ast.Eq) else "ne"
            for call_node, lit_node in ((left, right), (right, left)):
                if isinstance(call_node, ast.Call):
                    try:
                        value = _literal(lit_node)
                    except ValueError:
                        continue
                    found = make(call_node, expect, value)
                    if found is not None:
                        return found
    return None


def _humaneval_calls(tree: ast.Module, text: str) -> tuple | None:
    """Convert ``[literal assigns] def check(c): <io asserts>  check(name)`` to calls."""
    body = list(tree.body)
    if not body:
        return None
    last = body.pop()
    if not (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
            and isinstance(last.value.func, ast.Name) and len(last.value.args) == 1
            and not last.value.keywords and isinstance(last.value.args[0], ast.Name)):
        return None
    check_name, target = last.value.func.id, last.value.args[0].id
    check_def = None
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == check_name and check_def is None:
            check_def = stmt
        elif isinstance(stmt, ast.Assign):
            try:
                _literal(stmt.value)
            except ValueError:
                return None
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        else:
            return None
    if check_def is None or check_def.decorator_list:
        return None
    a = check_def.args
    if len(a.args) != 1 or a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or a.defaults:
        return None
    param = a.args[0].arg
    calls = []
    for stmt in check_def.body:
        if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr)
                                          and isinstance(stmt.value, ast.Constant)):
            continue
        if isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Constant) \
                and stmt.test.value is True:
            continue  # HumanEval's `assert True, "..."` padding
        if not isinstance(stmt, ast.Assert):
            return None
        call = _io_call_from_assert(stmt, text, func_name=param, rename=target)
        if call is None:
            return None
        calls.append(call)
    return tuple(calls) if calls else None


def plan_test(test) -> TestPlan:
    """Decide how one test string is run and checked."""
    if not isinstance(test, str):
        return TestPlan("invalid", reason=f"test is a {type(test).__name__}, not a string")
    if len(test) > MAX_TEST_CHARS:
        return TestPlan("invalid", reason="test is too long")
    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        return TestPlan("invalid", reason=f"test is not valid Python ({type(e).__name__})")
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
        call = _io_call_from_assert(tree.body[0], test)
        if call is not None:
            return TestPlan("io", calls=(call,))
    calls = _humaneval_calls(tree, test)
    if calls is not None:
        return TestPlan("io", calls=calls)
    if not tree.body:
        return TestPlan("invalid", reason="test is empty")
    try:
        code = compile_guarded(tree)
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as e:
        return TestPlan("invalid", reason=f"test does not compile ({type(e).__name__})")
    return TestPlan("assert", source=test, code=code)


# --------------------------------------------------------------------------
# Assert-mode tests: route comparisons, arithmetic and conditions through the
# job's guards (harness.sbx_*), which accept only plain builtin values.

_OP_TEXT = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
            ast.GtE: ">=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
            ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
            ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
            ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitXor: "^",
            ast.BitAnd: "&", ast.MatMult: "@", ast.USub: "-", ast.UAdd: "+",
            ast.Invert: "~"}


def _helper(name, args):
    return ast.Call(func=ast.Name(id=name, ctx=ast.Load()), args=args, keywords=[])


class _GuardRewriter(ast.NodeTransformer):
    """Route the test code's comparisons, arithmetic and conditions through guards."""

    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) == 1:
            return _helper("__sbx_cmp__", [ast.Constant(_OP_TEXT[type(node.ops[0])]),
                                           node.left, node.comparators[0]])
        pairs = [ast.Tuple(elts=[ast.Constant(_OP_TEXT[type(op)]),
                                 ast.Lambda(args=ast.arguments(posonlyargs=[], args=[],
                                                               kwonlyargs=[], kw_defaults=[],
                                                               defaults=[]), body=comp)],
                           ctx=ast.Load())
                 for op, comp in zip(node.ops, node.comparators)]
        return _helper("__sbx_chain__", [node.left] + pairs)

    def visit_BinOp(self, node):
        self.generic_visit(node)
        return _helper("__sbx_bin__", [ast.Constant(_OP_TEXT[type(node.op)]),
                                       node.left, node.right])

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            node.operand = self._cond(node.operand)
            return node
        # Keep negative literals literal (-1 is a UnaryOp in the AST).
        if isinstance(node.operand, ast.Constant):
            return node
        return _helper("__sbx_un__", [ast.Constant(_OP_TEXT[type(node.op)]), node.operand])

    def _cond(self, node):
        if isinstance(node, ast.BoolOp):
            node.values = [self._cond(v) for v in node.values]
            return node
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return node   # its operand was wrapped by visit_UnaryOp
        return _helper("__sbx_truth__", [node])

    def visit_Assert(self, node):
        self.generic_visit(node)
        node.test = self._cond(node.test)
        return node

    def visit_If(self, node):
        self.generic_visit(node)
        node.test = self._cond(node.test)
        return node

    visit_While = visit_If
    visit_IfExp = visit_If


def compile_guarded(tree: ast.Module):
    """Compile assert-mode test code with its checks routed through the job's guards.

    Done here, on the trusted side and once per distinct test, rather than in
    every job. The names ``__sbx_*__`` are bound by harness._test_globals.
    """
    tree = ast.fix_missing_locations(_GuardRewriter().visit(tree))
    return compile(tree, "<test>", "exec", dont_inherit=True)


# --------------------------------------------------------------------------
# Parsing what the job returned

class ValueParseError(ValueError):
    pass


_NAMES = {"inf": math.inf, "nan": math.nan}


def parse_value(text: str):
    """Parse a plain-value repr from the job. Only literals; raises ValueParseError.

    Accepts what ``ast.literal_eval`` accepts plus ``inf``/``nan`` and
    ``set()``, ``frozenset(...)`` and ``complex(a, b)``, which the job's
    serializer emits for values that have no literal form.
    """
    try:
        node = ast.parse(text, mode="eval").body
        return _convert(node, 0)
    except ValueParseError:
        raise
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError,
            OverflowError) as e:
        raise ValueParseError(f"unparsable result ({type(e).__name__})") from e


def _convert(node, depth):
    if depth > _MAX_DEPTH:
        raise ValueParseError("result nested too deeply")
    d = depth + 1
    if isinstance(node, ast.Constant):
        if type(node.value) in (int, float, complex, str, bytes, bool, type(None)):
            return node.value
        raise ValueParseError("unsupported constant")
    if isinstance(node, ast.List):
        return [_convert(e, d) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_convert(e, d) for e in node.elts)
    if isinstance(node, ast.Set):
        return {_convert(e, d) for e in node.elts}
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueParseError("dict unpacking in result")
        return {_convert(k, d): _convert(v, d) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _convert(node.operand, d)
        if type(v) not in (int, float, complex):
            raise ValueParseError("sign on a non-number")
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        args = [_convert(a, d) for a in node.args]
        name = node.func.id
        if name == "set" and not args:
            return set()
        if name == "frozenset" and len(args) <= 1:
            return frozenset(args[0]) if args else frozenset()
        if name == "complex" and len(args) == 2 and all(type(a) is float for a in args):
            return complex(args[0], args[1])
    raise ValueParseError(f"not a plain value ({type(node).__name__})")


def strict_equal(got, exp, depth: int = 0) -> bool:
    """Type-aware equality: exact types, floats within a tight tolerance.

    An int where a float is expected is accepted (3 for 3.0); a float where an
    int is expected, a bool for an int (or the reverse), a tuple for a list are
    not.
    """
    if depth > _MAX_DEPTH:
        return False
    te, tg = type(exp), type(got)
    if te is float:
        if tg is not float and tg is not int:
            return False
        if math.isnan(exp):
            return tg is float and math.isnan(got)
        try:
            return math.isclose(got, exp, rel_tol=FLOAT_REL_TOL, abs_tol=FLOAT_ABS_TOL)
        except OverflowError:  # an int too large for a float
            return False
    if te is complex:
        return tg is complex and cmath.isclose(got, exp, rel_tol=FLOAT_REL_TOL,
                                               abs_tol=FLOAT_ABS_TOL)
    if tg is not te:
        return False
    if te is list or te is tuple:
        return len(got) == len(exp) and all(
            strict_equal(g, e, depth + 1) for g, e in zip(got, exp))
    if te is dict:
        if len(got) != len(exp):
            return False
        got_keys = {k: k for k in got}   # equal key -> the job's own key object
        for k, v in exp.items():
            if k not in got_keys:
                return False
            gk = got_keys[k]
            if not strict_equal(gk, k, depth + 1) or not strict_equal(got[gk], v, depth + 1):
                return False
        return True
    if te is set or te is frozenset:
        if len(got) != len(exp):
            return False
        got_keys = {k: k for k in got}
        return all(k in got_keys and strict_equal(got_keys[k], k, depth + 1) for k in exp)
    return got == exp   # int, bool, str, bytes, None: same exact type already


def check_call(call: IoCall, text: str) -> tuple[bool, str]:
    """Verify one I/O call's returned repr against its expectation."""
    try:
        got = parse_value(text)
    except ValueParseError as e:
        return False, f"{call.source}: {e}"
    if call.expect == "eq":
        ok = strict_equal(got, call.value)
    elif call.expect == "ne":
        ok = not strict_equal(got, call.value)
    elif call.expect == "truthy":
        ok = bool(got)
    elif call.expect == "falsy":
        ok = not got
    elif call.expect == "is":
        ok = got is call.value
    elif call.expect == "isnot":
        ok = got is not call.value
    else:  # pragma: no cover - plan_test only builds the kinds above
        return False, f"unknown expectation {call.expect}"
    if ok:
        return True, ""
    shown = _short(text, 60)
    if call.expect in ("eq", "is"):
        return False, f"{call.source}: expected {_short(repr(call.value), 60)}, got {shown}"
    return False, f"{call.source}: got {shown}"
