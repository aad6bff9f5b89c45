"""Trusted-side test handling: classify test strings, parse and compare results.

Runs in the worker manager, never in the job process. A test is one of:

I/O tests (unforgeable)
    A test made of asserts (alone, after ``import`` lines of known modules,
    or in a HumanEval-style ``def check(candidate): ...`` followed by
    ``check(name)``) in which the candidate is only ever *called*, with
    arguments that do not involve the candidate. Each call becomes one unit
    of the job: the job receives the function name and the argument values,
    and returns ``repr()`` of the result built by a type-checking serializer;
    this module parses it with :func:`parse_value` (a literal-only parser).
    What the test does with the returned values is decided outside the
    candidate's process:

    - ``call == expected`` (and ``!=``, ``is True/False/None``, a bare call,
      ``not call``, with ``list/tuple/sorted/set/frozenset/len`` around the
      call applied in the job): compared here by :func:`strict_equal`.
    - anything else (``abs(f(x) - y) < 1e-6``, ``x in f(y)``, several calls
      in one assert): a *clean job*, a sandbox job that runs no candidate
      code, evaluates the assert with the returned values in place of the
      calls (a :class:`Verdict`).

    Arguments and expected values that are expressions rather than literals
    (``f(3 * 19)``, ``== sorted([3, 1])``) are :class:`Free` expressions: a
    clean job evaluates them once per test, and :func:`resolve` puts their
    values in the plan. Expected values and verdicts never enter the
    candidate's job, so nothing it does in its own process can make a wrong
    answer pass.

Assert tests (forgeable)
    Anything else (a loop over candidate calls, an argument that depends on
    candidate state) runs inside the job with a per-test secret marker (see
    ``harness.py``). That stops naive forgeries but not introspection, so
    results mark these tests ``forgeable``.
"""

from __future__ import annotations

import ast
import builtins
import cmath
import math
from dataclasses import dataclass, field, replace

FLOAT_REL_TOL = 1e-9
FLOAT_ABS_TOL = 1e-12
MAX_TEST_CHARS = 200_000
_MAX_DEPTH = 100

# Modules a test may use without importing them; `import m` or `import m as a`
# of one of these in front of a test's asserts binds it too. The clean job
# that evaluates a test's expressions imports what they use.
KNOWN_MODULES = frozenset({"math", "cmath", "collections", "itertools", "functools", "heapq",
                           "bisect", "re", "string", "operator", "typing", "fractions",
                           "statistics", "random"})
# Builtins that the job may apply to a candidate call's result before
# serializing it (`list(f(x)) == [...]` accepts a generator-returning f).
WRAPS = ("list", "tuple", "sorted", "set", "frozenset", "len")
_BUILTIN_NAMES = frozenset(dir(builtins))
_VALUE = "__sbx_v{}__"


class _Spanned:
    test: str
    span: tuple

    @property
    def source(self) -> str:
        """Short text of the checked expression, for failure reasons.

        Cut from the test on demand: ast.unparse for every call was half the
        cost of classifying a HumanEval test.
        """
        node = ast.Module()       # any node carrying the span will do
        node.lineno, node.col_offset, node.end_lineno, node.end_col_offset = self.span
        return _short(ast.get_source_segment(self.test, node) or "assert")


@dataclass(frozen=True)
class Free:
    """An argument or expected value still to be computed: index into TestPlan.prep."""

    index: int


@dataclass(frozen=True)
class CleanExpr:
    """An expression for a clean job: eval-mode code, the modules it names, and whether only its truth is wanted."""

    code: object
    modules: tuple = ()           # (name, module name) pairs bound before evaluating
    truth: bool = False


@dataclass(frozen=True)
class Verdict(_Spanned):
    """An assert that a clean job decides from the values its candidate calls returned."""

    expr: CleanExpr               # the condition, each call replaced by __sbx_v<j>__
    calls: tuple                  # indices into TestPlan.calls, bound in order
    test: str = field(default="", repr=False)
    span: tuple = ()


@dataclass(frozen=True)
class IoCall(_Spanned):
    func: str                     # function name, looked up in the candidate's globals
    args: tuple                   # positional argument values (Free before resolve)
    kwargs: dict                  # keyword argument values (Free before resolve)
    expect: str                   # "eq" | "ne" | "truthy" | "falsy" | "is" | "isnot" | "value"
    value: object = None          # expected value for eq/ne/is/isnot (Free before resolve)
    test: str = field(default="", repr=False)   # the whole test text
    span: tuple = ()              # (lineno, col, end_lineno, end_col) of the checked expression
    wrap: str = ""                # one of WRAPS, applied to the result in the job
    fallback: Verdict | None = None   # decides the assert if the expected value is not a plain value


@dataclass(frozen=True)
class TestPlan:
    kind: str                     # "io" | "assert" | "invalid"
    calls: tuple = ()             # IoCall, for "io": one job unit each
    verdicts: tuple = ()          # Verdict, for "io": one clean job per run decides them
    prep: tuple = ()              # CleanExpr per Free index, and constant asserts: see resolve()
    source: str = ""              # test code, for "assert"
    code: object = None           # its guarded code object, for "assert"
    reason: str = ""              # for "invalid"

    @property
    def forgeable(self) -> bool:
        """True when the verdict is reached inside the candidate's process (assert mode)."""
        return self.kind == "assert"


def _literal(node: ast.AST):
    """ast.literal_eval on a node; raises ValueError if not a literal."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
        raise ValueError("not a literal") from e


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def value_name(j: int) -> str:
    """The name a Verdict's code uses for the value of its j-th call."""
    return _VALUE.format(j)


def short_repr(value, n: int = 60) -> str:
    return _short(repr(value), n)


# --------------------------------------------------------------------------
# From asserts to calls, free expressions and verdicts

class _NotIo(Exception):
    """The test is not of a form whose verdict can be reached outside the candidate's process."""


class _Scope:
    """What the names of one test mean: the candidate's, a module, a builtin, or a local."""

    def __init__(self, rename: dict, modules: dict, entry_point: str | None, reserved: frozenset):
        self.rename = rename          # name in the test -> the candidate's name (check's parameter)
        self.modules = modules        # name -> module name
        self.entry_point = entry_point
        self.reserved = reserved      # names the test assigns itself: not handled here

    def kind(self, name: str, local: frozenset) -> str:
        if name in local:
            return "local"
        if name in self.reserved:
            raise _NotIo
        if name in self.rename or name == self.entry_point:
            return "candidate"
        if name in self.modules:
            return "module"
        if name in _BUILTIN_NAMES:
            return "builtin"
        return "candidate"


class _Lifter(ast.NodeTransformer):
    """Replace each call of a candidate function by a placeholder name; collect the calls.

    Raises _NotIo when the candidate is used other than by a call, or when a
    call's arguments involve the candidate or a name bound inside the assert.
    """

    def __init__(self, scope: _Scope):
        self.scope = scope
        self.calls: list = []         # (candidate name, ast.Call, wrap)
        self.local: frozenset = frozenset()
        self.modules: dict = {}       # name -> module name, as used

    def _bound(self, node, names):
        saved, self.local = self.local, self.local | frozenset(names)
        try:
            return self.generic_visit(node)
        finally:
            self.local = saved

    def visit_Lambda(self, node):
        a = node.args
        names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
        names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
        return self._bound(node, names)

    def _comprehension(self, node):
        names = [n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)]
        return self._bound(node, names)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def visit_NamedExpr(self, node):
        raise _NotIo

    visit_Yield = visit_YieldFrom = visit_Await = visit_NamedExpr

    def visit_Name(self, node):
        kind = self.scope.kind(node.id, self.local)
        if kind == "candidate":
            raise _NotIo             # the candidate's object itself, not a call of it
        if kind == "module":
            self.modules[node.id] = self.scope.modules[node.id]
        return node

    def _candidate(self, node) -> str | None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and self.scope.kind(node.func.id, self.local) == "candidate":
            if self.local:
                raise _NotIo     # called once per iteration of a comprehension or lambda
            return self.scope.rename.get(node.func.id, node.func.id)
        return None

    def visit_Call(self, node):
        name = self._candidate(node)
        wrap = ""
        if name is None and isinstance(node.func, ast.Name) and node.func.id in WRAPS \
                and self.scope.kind(node.func.id, self.local) == "builtin" \
                and len(node.args) == 1 and not node.keywords:
            inner = self._candidate(node.args[0])
            if inner is not None:
                name, wrap, node = inner, node.func.id, node.args[0]
        if name is None:
            return self.generic_visit(node)
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise _NotIo
        for arg in list(node.args) + [k.value for k in node.keywords]:
            self._require_free(arg)
        self.calls.append((name, node, wrap))
        return ast.copy_location(ast.Name(id=value_name(len(self.calls) - 1), ctx=ast.Load()), node)

    def _require_free(self, node):
        """node is evaluated before the call: it may name builtins and modules only.

        (A call inside a comprehension or lambda never gets here, so no local
        name of the assert can reach its arguments.)
        """
        inner = _Lifter(self.scope)
        inner.visit(node)              # rewrites only a nested candidate call, which ends planning
        if inner.calls:
            raise _NotIo
        self.modules.update(inner.modules)


def _copy(node):
    return ast.parse(ast.unparse(node), mode="eval").body


class _PlanBuilder:
    """Collects one test's calls, verdicts and free expressions, assert by assert."""

    def __init__(self, text: str, scope: _Scope):
        self.text, self.scope = text, scope
        self.calls: list = []
        self.verdicts: list = []
        self.prep: list = []

    def _clean(self, node, modules: dict, truth: bool = False) -> CleanExpr:
        tree = ast.fix_missing_locations(ast.Expression(body=node))
        code = compile(tree, "<test>", "eval", dont_inherit=True)
        return CleanExpr(code, tuple(sorted(modules.items())), truth)

    def _value(self, node):
        """A literal's value, or a Free placeholder for a clean job to compute."""
        try:
            return _literal(node)
        except ValueError:
            self.prep.append(self._clean(node, _used_modules(node, self.scope)))
            return Free(len(self.prep) - 1)

    def _literal_call(self, node, span: tuple, expect: str, value=None) -> bool:
        """The common `f(<literals>) == <literal>` shapes without the general walk; False if not one."""
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and self.scope.kind(node.func.id, frozenset()) == "candidate"):
            return False
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            return False
        try:
            args = tuple(_literal(a) for a in node.args)
            kwargs = {k.arg: _literal(k.value) for k in node.keywords}
        except ValueError:
            return False
        name = self.scope.rename.get(node.func.id, node.func.id)
        self.calls.append(IoCall(name, args, kwargs, expect, value, self.text, span))
        return True

    def _fast(self, test: ast.expr, span: tuple) -> bool:
        if isinstance(test, ast.Call):
            return self._literal_call(test, span, "truthy")
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return self._literal_call(test.operand, span, "falsy")
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Eq, ast.NotEq)):
            expect = "eq" if isinstance(test.ops[0], ast.Eq) else "ne"
            for call, other in ((test.left, test.comparators[0]), (test.comparators[0], test.left)):
                if isinstance(call, ast.Call) and not isinstance(other, ast.Call):
                    try:
                        value = _literal(other)
                    except ValueError:
                        return False
                    return self._literal_call(call, span, expect, value)
        return False

    def add(self, test: ast.expr, span: tuple) -> None:
        """One assert's condition (rewritten in place), and its position in the test text."""
        if self._fast(test, span):
            return
        lifter = _Lifter(self.scope)
        cond = lifter.visit(test)
        if not lifter.calls:           # decided without the candidate: once, in the prep job
            self.prep.append(self._clean(cond, lifter.modules, truth=True))
            return
        first = len(self.calls)
        for name, call, wrap in lifter.calls:
            args = tuple(self._value(a) for a in call.args)
            kwargs = {k.arg: self._value(k.value) for k in call.keywords}
            self.calls.append(IoCall(name, args, kwargs, "value", None, self.text, span, wrap))

        def verdict():
            return Verdict(self._clean(cond, lifter.modules, truth=True),
                           tuple(range(first, len(self.calls))), self.text, span)

        direct = _direct_form(cond) if len(lifter.calls) == 1 else None
        if direct is None:
            self.verdicts.append(verdict())
            return
        expect, other = direct
        value = other if expect in ("truthy", "falsy", "is", "isnot") else self._value(other)
        self.calls[first] = replace(self.calls[first], expect=expect, value=value,
                                    fallback=verdict() if isinstance(value, Free) else None)

    def plan(self) -> TestPlan:
        return TestPlan("io", calls=tuple(self.calls), verdicts=tuple(self.verdicts),
                        prep=tuple(self.prep), source=self.text)


def _used_modules(node, scope: _Scope) -> dict:
    return {n.id: scope.modules[n.id] for n in ast.walk(node)
            if isinstance(n, ast.Name) and n.id in scope.modules}


def _direct_form(cond):
    """(expect, expected node or value) when the manager can check the one call itself."""
    v0 = value_name(0)

    def is_v0(n):
        return isinstance(n, ast.Name) and n.id == v0

    def has_v0(n):
        return any(is_v0(x) for x in ast.walk(n))

    if is_v0(cond):
        return "truthy", None
    if isinstance(cond, ast.UnaryOp) and isinstance(cond.op, ast.Not) and is_v0(cond.operand):
        return "falsy", None
    if not (isinstance(cond, ast.Compare) and len(cond.ops) == 1):
        return None
    op, left, right = cond.ops[0], cond.left, cond.comparators[0]
    if isinstance(op, (ast.Is, ast.IsNot)):
        if is_v0(left) and isinstance(right, ast.Constant) and type(right.value) in (bool, type(None)):
            return ("is" if isinstance(op, ast.Is) else "isnot"), right.value
        return None
    if isinstance(op, (ast.Eq, ast.NotEq)):
        expect = "eq" if isinstance(op, ast.Eq) else "ne"
        if is_v0(left) and not has_v0(right):
            return expect, right
        if is_v0(right) and not has_v0(left):
            return expect, left
    return None


def _import_modules(stmt) -> dict | None:
    """{name: module} for `import m [as a], ...` of known modules; None for any other statement."""
    if not isinstance(stmt, ast.Import):
        return None
    out = {}
    for alias in stmt.names:
        if alias.name not in KNOWN_MODULES:
            return None
        out[alias.asname or alias.name] = alias.name
    return out


MAX_UNROLL = 64   # iterations of `for x in range(...)` a test may unroll into asserts


def _assert_groups(tree: ast.Module):
    """(statements, rename, modules, reserved) for the two shapes handled unforgeably, or None."""
    modules = {m: m for m in KNOWN_MODULES}
    body = list(tree.body)
    while body and _import_modules(body[0]) is not None:
        modules.update(_import_modules(body.pop(0)))
    if body and not any(isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                        for s in body):
        return body, {}, modules, frozenset()
    return _humaneval_body(body, modules)


def _humaneval_body(body: list, modules: dict):
    """``[literal assigns] def check(c): <statements>  check(name)``: its statements, c -> name."""
    if not body:
        return None
    body = list(body)
    last = body.pop()
    if not (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
            and isinstance(last.value.func, ast.Name) and len(last.value.args) == 1
            and not last.value.keywords and isinstance(last.value.args[0], ast.Name)):
        return None
    check_name, target = last.value.func.id, last.value.args[0].id
    check_def, assigned = None, set()
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == check_name and check_def is None:
            check_def = stmt
        elif isinstance(stmt, ast.Assign):
            try:
                _literal(stmt.value)
            except ValueError:
                return None
            assigned.update(n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name))
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
    reserved = frozenset(assigned | {check_name}) - {param}
    return check_def.body, {param: target}, modules, reserved


class _Inline(ast.NodeTransformer):
    """Replace the names a test bound to candidate-free expressions by those expressions."""

    def __init__(self, bound: dict):
        self.bound = bound

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load) and node.id in self.bound:
            return ast.copy_location(_copy(self.bound[node.id]), node)
        return node

    def _scoped(self, node, names):
        saved = self.bound
        self.bound = {k: v for k, v in saved.items() if k not in names}
        try:
            return self.generic_visit(node)
        finally:
            self.bound = saved

    def _comprehension(self, node):
        return self._scoped(node, {n.id for g in node.generators for n in ast.walk(g.target)
                                   if isinstance(n, ast.Name)})

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def visit_Lambda(self, node):
        return self._scoped(node, {n.arg for n in ast.walk(node.args) if isinstance(n, ast.arg)})


def _pure(node) -> bool:
    """An expression that names only builtins and calls only builtins: safe to inline where used."""
    local = {t.id for g in ast.walk(node) if isinstance(g, ast.comprehension)
             for t in ast.walk(g.target) if isinstance(t, ast.Name)}
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id not in _BUILTIN_NAMES and n.id not in local:
            return False
        if isinstance(n, ast.Call) and not (isinstance(n.func, ast.Name) and n.func.id in _BUILTIN_NAMES):
            return False
        if isinstance(n, (ast.NamedExpr, ast.Lambda)):
            return False
    return True


def _flatten(stmts: list, scope: "_Scope", bound: dict, out: list) -> None:
    """The asserts of `stmts`, with bound names inlined and small range loops unrolled.

    Raises _NotIo for any statement that cannot be checked outside the
    candidate's process.
    """
    for stmt in stmts:
        if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and (
                isinstance(stmt.value, ast.Constant)
                or (isinstance(stmt.value, ast.Name) and stmt.value.id in _BUILTIN_NAMES))):
            continue              # a docstring, a comment-like string, a bare `print`
        if isinstance(stmt, ast.Assert):
            test = stmt.test
            if isinstance(test, ast.Constant) and test.value is True:
                continue          # HumanEval's `assert True, "..."` padding
            inlined = _Inline(bound).visit(_copy(test)) if bound else test
            out.append((inlined, (test.lineno, test.col_offset, test.end_lineno, test.end_col_offset)))
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id not in scope.reserved:
            value = _Inline(bound).visit(_copy(stmt.value)) if bound else stmt.value
            if not _pure(value):
                raise _NotIo
            bound = {**bound, stmt.targets[0].id: value}
        elif isinstance(stmt, ast.For) and not stmt.orelse and isinstance(stmt.target, ast.Name) \
                and isinstance(stmt.iter, ast.Call) and isinstance(stmt.iter.func, ast.Name) \
                and stmt.iter.func.id == "range" and not stmt.iter.keywords:
            try:
                bounds = [_literal(a) for a in stmt.iter.args]
                values = range(*bounds) if all(type(b) is int for b in bounds) else None
            except (ValueError, TypeError):
                values = None
            if values is None or len(values) > MAX_UNROLL:
                raise _NotIo
            for v in values:
                _flatten(stmt.body, scope, {**bound, stmt.target.id: ast.Constant(v)}, out)
        else:
            raise _NotIo


def plan_test(test, entry_point: str | None = None) -> TestPlan:
    """Decide how one test string is run and checked.

    `entry_point` is the candidate's function: a test that calls it by a
    builtin's name (a candidate called `sorted`) calls the candidate.
    """
    if not isinstance(test, str):
        return TestPlan("invalid", reason=f"test is a {type(test).__name__}, not a string")
    if len(test) > MAX_TEST_CHARS:
        return TestPlan("invalid", reason="test is too long")
    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        return TestPlan("invalid", reason=f"test is not valid Python ({type(e).__name__})")
    if not tree.body:
        return TestPlan("invalid", reason="test is empty")
    groups = _assert_groups(tree)
    if groups is not None:
        stmts, rename, modules, reserved = groups
        scope = _Scope(rename, modules, entry_point, reserved)
        builder = _PlanBuilder(test, scope)
        try:
            asserts: list = []
            _flatten(stmts, scope, {}, asserts)
            if asserts:
                for cond, span in asserts:
                    builder.add(cond, span)
                return builder.plan()
        except _NotIo:
            pass
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError):
            pass
        tree = ast.parse(test)         # planning rewrote the asserts in place
    return _assert_plan(test, tree)


def _assert_plan(test: str, tree: ast.Module) -> TestPlan:
    try:
        code = compile_guarded(tree)
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as e:
        return TestPlan("invalid", reason=f"test does not compile ({type(e).__name__})")
    return TestPlan("assert", source=test, code=code)


class _Invalid(Exception):
    pass


def resolve(plan: TestPlan, outcomes: list) -> TestPlan:
    """Put the clean job's values of `plan.prep` in the plan.

    outcomes[k] is ("ok", value), ("raised", why) or ("unsupported", why) for
    prep[k]. An argument or expected value that raised, and a constant assert
    that is false or raised, make the test invalid: it fails whatever the
    candidate does. An argument that is not a plain value cannot reach the
    candidate's job, so the test falls back to assert mode; an expected value
    that is not one is left to the assert's Verdict.
    """
    def value(v, what):
        if not isinstance(v, Free):
            return v
        status, got = outcomes[v.index]
        if status == "ok":
            return got
        if status == "raised":
            raise _Invalid(f"{what} raised {got}")
        raise _NotIo

    try:
        calls, verdicts = [], list(plan.verdicts)
        for c in plan.calls:
            args = tuple(value(a, f"{c.source}: an argument") for a in c.args)
            kwargs = {k: value(v, f"{c.source}: an argument") for k, v in c.kwargs.items()}
            try:
                expected = value(c.value, f"{c.source}: the expected value")
            except _NotIo:
                calls.append(replace(c, args=args, kwargs=kwargs, expect="value", value=None,
                                     fallback=None))
                verdicts.append(c.fallback)
                continue
            calls.append(replace(c, args=args, kwargs=kwargs, value=expected, fallback=None))
        for k, e in enumerate(plan.prep):
            if e.truth:
                status, got = outcomes[k]
                if status != "ok" or got is not True:
                    raise _Invalid("an assert without a call of the candidate "
                                   + ("is false" if status == "ok" else f"raised {got}"))
    except _Invalid as e:
        return TestPlan("invalid", reason=str(e))
    except _NotIo:
        return _assert_plan(plan.source, ast.parse(plan.source))
    return TestPlan("io", calls=tuple(calls), verdicts=tuple(verdicts), source=plan.source)


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


# --------------------------------------------------------------------------
# Labelling: the reference fills in a call's expected value

MAX_LABELLED_CHARS = 2_000


def single_call(plan: TestPlan, entry_point: str | None) -> IoCall | None:
    """The one call of `entry_point` that an I/O plan checks directly; None for any other plan."""
    if plan.kind != "io" or len(plan.calls) != 1 or plan.verdicts:
        return None
    call = plan.calls[0]
    if entry_point and call.func != entry_point:
        return None
    if any(isinstance(v, Free) for v in (*call.args, *call.kwargs.values())):
        return None
    return call


def call_key(call: IoCall) -> str:
    """The call's identity once its arguments are evaluated: `f(3*2)` and `f(6)` are one call."""
    return repr((call.func, call.args, sorted(call.kwargs.items())))


def labelled_test(call: IoCall, value) -> str | None:
    """`assert f(args) == value` with literal arguments and value; None when it has no such form.

    The text is planned again and must check exactly this call and value, so
    a value whose repr is not a literal (inf, nan, an object) is refused.
    """
    args = [repr(a) for a in call.args] + [f"{k}={v!r}" for k, v in call.kwargs.items()]
    text = f"assert {call.func}({', '.join(args)}) == {value!r}"
    if len(text) > MAX_LABELLED_CHARS:
        return None
    again = single_call(plan_test(text, call.func), call.func)
    if again is None or again.expect != "eq" or call_key(again) != call_key(call):
        return None
    if not strict_equal(value, again.value):
        return None
    return text
