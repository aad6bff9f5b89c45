"""Code that runs inside the job process, around the candidate's code.

The fork-server imports this module once; each job is a fork that calls
:func:`child_main`. Everything up to ``drop_privileges`` is trusted; after the
candidate's code has run, nothing in this process can be trusted, so:

- I/O units (one per call of the candidate) send back only ``repr()`` of the
  returned value, built by a serializer that accepts exact builtin types (an
  ``int`` subclass, an object with a lying ``__eq__`` or a generator is
  "unsupported", never a value). The manager compares, or has a clean job
  decide the assert; expected values are never in this process.
- A clean job (no candidate code, ``code`` empty) evaluates a test's own
  expressions: ``e`` units, with values bound as names.
- Assert tests (anything that is not an I/O form) run here. Each one that
  completes sends its own secret marker, and the job must finish with the end
  marker. Their code arrives compiled by the manager with comparisons,
  arithmetic and truth tests routed through the ``sbx_*`` guards below, which
  accept only plain builtin values; they get pristine copies of
  builtins and of common stdlib modules (monkeypatching ``math.isclose`` does
  not reach them), and ``sys.settrace``/``sys.setprofile`` are disabled (a
  trace function can rewrite a guard's local variables). This stops the known
  reward hacks, but code that introspects this process (gc, closures, ctypes)
  can still find a marker, so results mark these tests forgeable.

Records sent to the manager (framed, see protocol.py): ``TAG\\tindex\\ttext`` with
TAG one of S (syntax error), X (candidate code failed before the tests),
R (I/O result repr), E (unit raised or returned an unsupported value),
U (a clean job's expression has a value that is not plain),
P (assert unit passed, with its marker), F (assert unit failed), END.
"""

from __future__ import annotations

import builtins
import marshal
import operator
import os
import sys
import types

from . import limits
from .protocol import pack, read_frame, write_all

EXIT_MEMORY = 75       # the harness itself ran out of memory
EXIT_INTERNAL = 70     # the harness failed (or the candidate broke it)
MAX_RESULT_CHARS = 1_000_000
MAX_DEPTH = 100
RESULT_FD = 3

# Captured at import, in the fork-server: later monkeypatching of builtins by
# candidate code does not change what the harness calls.
_type = type
_id = id
_len = len
_int, _float, _complex, _bool = int, float, complex, bool
_str, _bytes, _list, _tuple, _dict = str, bytes, list, tuple, dict
_set, _frozenset, _range, _NoneType = set, frozenset, range, type(None)
_int_repr, _float_repr = int.__repr__, float.__repr__
_str_repr, _bytes_repr = str.__repr__, bytes.__repr__
_exec, _eval, _compile, _isinstance = exec, eval, compile, isinstance
_WRAPS = {"list": list, "tuple": tuple, "sorted": sorted, "set": set, "frozenset": frozenset,
          "len": len}
_enumerate, _all, _vars, _type_type = enumerate, all, vars, type
_BaseException, _SystemExit = BaseException, SystemExit
_MemoryError, _RecursionError, _ValueError = MemoryError, RecursionError, ValueError
_ModuleType = types.ModuleType
_sys_modules = sys.modules
_gettrace, _getprofile = sys.gettrace, sys.getprofile
_real_import = builtins.__import__

# Modules the fork-server imports up front, so that jobs find them warm, and
# whose pristine copies assert tests get. The list is short on purpose: every
# page the fork-server owns makes each fork dearer, and `random` in particular
# re-seeds itself after every fork (about 0.5 ms per job, see docs/sandbox.md).
# Other stdlib modules import normally in the job (the Python installation
# stays readable to the unprivileged job user).
PREIMPORT = ("typing", "math", "cmath", "collections", "itertools", "functools",
             "heapq", "bisect", "re", "string", "operator")
CLONED_MODULES = PREIMPORT
# At the reduced levels there is no mount namespace to re-expose a Python
# installed under a 0700 home, so after the uid drop only what is already
# imported works: import more (ctypes for limits.die_with_parent, too).
PREIMPORT_REDUCED = ("random", "json", "decimal", "fractions", "statistics", "datetime",
                     "hashlib", "copy", "dataclasses", "enum", "array", "queue", "time",
                     "unicodedata", "textwrap", "numbers", "contextlib", "io", "struct",
                     "ctypes", "string", "itertools", "collections.abc", "math")

_PRISTINE: dict[str, dict] = {}
_PRISTINE_BUILTINS: dict = {}


def prepare_fork_server(reduced: bool = False) -> None:
    """Import what jobs may use and snapshot module dicts (called once, pre-fork)."""
    for name in PREIMPORT + (PREIMPORT_REDUCED if reduced else ()):
        try:
            __import__(name)
        except ImportError:
            pass
    _warm_up()
    # A trace or profile function can rewrite the local variables of any
    # frame, the guards' included, and so forge an assert-mode pass: jobs get
    # neither (no reference to the originals is kept in this process).
    sys.settrace = sys.setprofile = _tracing_disabled
    _PRISTINE_BUILTINS.update(vars(builtins))
    for name in CLONED_MODULES:
        mod = sys.modules.get(name)
        if mod is not None:
            _PRISTINE[name] = dict(vars(mod))


_WARM_UP_CODE = """
from typing import List, Dict, Optional
import math, collections, itertools, functools, heapq, re
class _C:
    x: int = 1
def _f(a: List[int], *args, k=None, **kw) -> Optional[int]:
    s = f"{a!r:>3}" + "%s" % (k,)
    t = [i * 2 for i in a if i] + list({i: i for i in a}) + sorted({1, 2})
    g = (lambda v: v + 1)(len(t))
    try:
        return sum(t) // g
    except ZeroDivisionError as e:
        raise ValueError(str(e)) from e
    finally:
        pass
_r = _f([1, 2, 3], k=2)
"""


def _tracing_disabled(*args, **kwargs):
    raise RuntimeError("tracing and profiling are disabled in the sandbox")


def _warm_up() -> None:
    # CPython builds some state lazily on first use (the AST node types used
    # by compile(), marshal's tables, ...). Done here once, before the heap is
    # frozen, instead of in every forked job: a cold compile() in a job cost
    # about 120 extra page faults (docs/sandbox.md).
    g: dict = {"__name__": "__warm_up__"}
    _exec(_compile(_WARM_UP_CODE, "<warm-up>", "exec", dont_inherit=True), g)
    marshal.loads(marshal.dumps({"a": [1, 2.0, "x", (None, True)], "b": {1}}))
    serialize([1, 2.5, "s", b"b", (None, True), {1: {2}}, frozenset(), complex(1, 2)])
    describe(ValueError("warm-up"))


# --------------------------------------------------------------------------
# Serializer for I/O results: exact builtin types only.

class Unsupported(Exception):
    pass


def serialize(value) -> str:
    parts: list = []
    budget = [MAX_RESULT_CHARS]
    _ser(value, 0, parts, budget)
    return "".join(parts)


def _emit(parts, budget, s):
    budget[0] -= _len(s)
    if budget[0] < 0:
        raise Unsupported("returned value is too large")
    parts.append(s)


def _ser(v, depth, parts, budget):
    if depth > MAX_DEPTH:
        raise Unsupported("returned value is nested too deeply (or cyclic)")
    t = _type(v)
    if t is _bool:
        _emit(parts, budget, "True" if v else "False")
    elif t is _int:
        try:
            _emit(parts, budget, _int_repr(v))
        except _ValueError:  # beyond sys.get_int_max_str_digits()
            raise Unsupported("returned integer is too large") from None
    elif t is _float:
        _emit(parts, budget, _float_repr(v))
    elif t is _str:
        _emit(parts, budget, _str_repr(v))
    elif v is None:
        _emit(parts, budget, "None")
    elif t is _bytes:
        _emit(parts, budget, _bytes_repr(v))
    elif t is _complex:
        _emit(parts, budget, f"complex({_float_repr(v.real)}, {_float_repr(v.imag)})")
    elif t is _list or t is _tuple:
        _emit(parts, budget, "[" if t is _list else "(")
        n = 0
        for x in v:
            if n:
                _emit(parts, budget, ", ")
            _ser(x, depth + 1, parts, budget)
            n += 1
        _emit(parts, budget, "]" if t is _list else ("," if n == 1 else "") + ")")
    elif t is _dict:
        _emit(parts, budget, "{")
        n = 0
        for k, x in v.items():
            if n:
                _emit(parts, budget, ", ")
            _ser(k, depth + 1, parts, budget)
            _emit(parts, budget, ": ")
            _ser(x, depth + 1, parts, budget)
            n += 1
        _emit(parts, budget, "}")
    elif t is _set or t is _frozenset:
        if not v:
            _emit(parts, budget, "set()" if t is _set else "frozenset()")
            return
        _emit(parts, budget, "{" if t is _set else "frozenset({")
        n = 0
        for x in v:
            if n:
                _emit(parts, budget, ", ")
            _ser(x, depth + 1, parts, budget)
            n += 1
        _emit(parts, budget, "}" if t is _set else "})")
    else:
        raise Unsupported(f"returned a {_type_name(v)}, not a plain builtin value")


def _type_name(v) -> str:
    try:
        name = _type(v).__name__
        return name if _type(name) is _str else "?"
    except _BaseException:
        return "?"


# --------------------------------------------------------------------------
# Assert-mode guards: only plain builtin values take part in comparisons,
# arithmetic and truth tests written in the test code.

class UntrustedValue(BaseException):
    """Raised when test code would let a candidate-defined object decide a check.

    A BaseException so that ``except Exception`` in test code cannot swallow it.
    """


_PLAIN_IDS = frozenset(_id(t) for t in (_int, _float, _complex, _bool, _str, _bytes,
                                        _NoneType, _list, _tuple, _dict, _set,
                                        _frozenset, _range))


def _plain(v, depth=0) -> bool:
    if depth > MAX_DEPTH:
        return False
    t = _type(v)
    if t is _type_type:     # a class: compared by identity, cannot lie
        return True
    if _id(t) not in _PLAIN_IDS:
        return False
    if t is _list or t is _tuple or t is _set or t is _frozenset:
        return _all(_plain(x, depth + 1) for x in v)
    if t is _dict:
        return _all(_plain(k, depth + 1) and _plain(x, depth + 1) for k, x in v.items())
    return True


def _require_plain(*values):
    # A trace or profile function can rewrite the local variables of any frame
    # it sees, this guard's included: refuse to judge while one is active.
    if _gettrace() is not None or _getprofile() is not None:
        raise UntrustedValue("a trace or profile function is active during the test")
    for v in values:
        if not _plain(v):
            raise UntrustedValue(f"check on a {_type_name(v)} object (only plain builtin "
                                 f"values are trusted)")


_CMP = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge,
        "in": lambda a, b: operator.contains(b, a),
        "not in": lambda a, b: not operator.contains(b, a)}
_BIN = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
        "//": operator.floordiv, "%": operator.mod, "**": operator.pow,
        "<<": operator.lshift, ">>": operator.rshift, "|": operator.or_,
        "^": operator.xor, "&": operator.and_, "@": operator.matmul}
_UN = {"-": operator.neg, "+": operator.pos, "~": operator.invert}


def sbx_cmp(op, a, b):
    if op == "is" or op == "is not":
        _require_plain()
        return (a is b) if op == "is" else (a is not b)
    _require_plain(a, b)
    return _bool(_CMP[op](a, b))


def sbx_chain(left, *pairs):
    for op, thunk in pairs:
        right = thunk()
        if not sbx_cmp(op, left, right):
            return False
        left = right
    return True


def sbx_bin(op, a, b):
    _require_plain(a, b)
    return _BIN[op](a, b)


def sbx_un(op, a):
    _require_plain(a)
    return _UN[op](a)


def sbx_truth(v):
    _require_plain(v)
    return _bool(v)


def _clone_module(name, cache):
    mod = cache.get(name)
    if mod is None:
        mod = _ModuleType(name)
        _vars(mod).update(_PRISTINE[name])
        cache[name] = mod
    return mod


def _test_globals(candidate_globals: dict, clones: dict) -> dict:
    """Globals for one assert test: the candidate's names, pristine modules/builtins."""
    pristine_ids = {_id(_sys_modules.get(n)): n for n in _PRISTINE}

    def pristine_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name in _PRISTINE:
            return _clone_module(name, clones)
        return _real_import(name, globals, locals, fromlist, level)

    b = _dict(_PRISTINE_BUILTINS)
    b["__import__"] = pristine_import
    tg = _dict(candidate_globals)
    for k, v in tg.items():
        n = pristine_ids.get(_id(v))
        if n is not None and _type(v) is _ModuleType:
            tg[k] = _clone_module(n, clones)
    tg.update(__builtins__=b, __sbx_cmp__=sbx_cmp, __sbx_chain__=sbx_chain,
              __sbx_bin__=sbx_bin, __sbx_un__=sbx_un, __sbx_truth__=sbx_truth)
    return tg


# --------------------------------------------------------------------------
# The job

def describe(exc) -> str:
    """Short 'Type: message' for an exception the candidate may have crafted."""
    name = _type_name(exc)
    try:
        msg = _str(exc)
        msg = msg if _type(msg) is _str else ""
    except _BaseException:
        msg = ""
    if _isinstance(exc, _SystemExit):
        return f"SystemExit({msg}): exit() called"
    return f"{name}: {msg[:200]}" if msg else name


def _send(tag: str, idx: int, text: str) -> None:
    data = f"{tag}\t{idx}\t{text}".encode("utf-8", "backslashreplace")
    write_all(RESULT_FD, pack(data))


def _make_reporters(markers: dict, end_marker: str):
    # The secrets live only in this closure, not in any frame the candidate's
    # code runs under (frame walking finds nothing; gc-level introspection
    # still can).
    def report_pass(idx):
        _send("P", idx, markers.pop(idx, ""))

    def report_end():
        _send("END", -1, end_marker)
    return report_pass, report_end


def run_job(code_src: str, entry: str | None, units: list, report_pass, report_end) -> None:
    """Compile, run the candidate's code, then each unit; send one record per unit."""
    try:
        code = _compile(code_src, "<candidate>", "exec", dont_inherit=True)
    except SyntaxError as e:
        _send("S", -1, f"SyntaxError: {e.msg} (line {e.lineno})")
        return
    except (ValueError, OverflowError, RecursionError, MemoryError) as e:
        _send("S", -1, describe(e))
        return
    g = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        _exec(code, g)
    except _BaseException as e:   # includes SystemExit: exiting before the tests fails
        _flush_std()
        _send("X", -1, "candidate code raised " + describe(e))
        return
    if entry and entry not in g:
        _send("X", -1, f"entry point {entry!r} is not defined")
        return

    # From here on the candidate's code has run: only names captured at import
    # (the _-prefixed aliases) are used, never a builtin looked up now.
    clones: dict = {}
    for i, u in _enumerate(units):
        if u[0] == "i":
            _, name, args, kwargs, wrap = u
            fn = g.get(name, _PRISTINE_BUILTINS.get(name))
            if fn is None:
                _send("E", i, f"name {name!r} is not defined")
                continue
            try:
                value = fn(*args, **kwargs)
                if wrap:
                    value = _WRAPS[wrap](value)
            except _BaseException as e:
                _send("E", i, describe(e))
                continue
            _send_value(i, value, "E")
            del value
        elif u[0] == "e":
            # A clean job (checks.py: no candidate code ran in this process)
            # evaluating a test's own expression.
            _, expr, bindings, modules, truth = u
            if code_src:
                _send("E", i, "expressions are evaluated only in clean jobs")
                continue
            try:
                env = _dict(bindings)
                env["__builtins__"] = builtins
                for alias, module in modules:
                    env[alias] = _real_import(module)
                value = _eval(expr, env)
                if truth:
                    value = _bool(value)
            except _BaseException as e:
                _send("E", i, describe(e))
                continue
            _send_value(i, value, "U")
            del value
        else:
            test_code = u[1]     # compiled with guards by the manager (checks.py)
            try:
                _exec(test_code, _test_globals(g, clones))
            except _BaseException as e:
                _send("F", i, describe(e))
                continue
            report_pass(i)
    _flush_std()
    report_end()


def _send_value(i: int, value, unsupported_tag: str) -> None:
    try:
        text = serialize(value)
    except Unsupported as e:
        _send(unsupported_tag, i, e.args[0])
        return
    except (_RecursionError, _MemoryError) as e:
        _send("E", i, "could not serialize the result: " + describe(e))
        return
    _send("R", i, text)


def _flush_std() -> None:
    # Print output is block-buffered (stdout is a pipe) and os._exit skips the
    # flush; flush so ExecutionResult.output shows it.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except _BaseException:
            pass


def child_main(res_fd: int, out_fd: int, zcfg: dict) -> None:
    """Entry point of a forked job process. Never returns.

    The fork-server already set the environment, the working directory's path,
    stdin (/dev/null) and no_new_privs; what is done here is per job.
    """
    exit_code = EXIT_INTERNAL
    try:
        # Own session and process group, so the reduced levels can kill the
        # group; fds 0-3 are the only ones the job keeps.
        os.setsid()
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        os.dup2(res_fd, RESULT_FD)
        os.closerange(RESULT_FD + 1, 1 << 16)
        raw = read_frame(RESULT_FD)
        if raw is None:
            os._exit(0)
        job = marshal.loads(raw)
        del raw
        os.chdir(zcfg["jobdir"])
        lim = job["limits"]
        limits.apply_rlimits(lim["memory_mb"], lim["cpu_s"], lim["file_mb"],
                             lim["max_procs"], limit_procs=zcfg["drop_uid"])
        if zcfg["drop_uid"]:
            limits.drop_privileges(zcfg["uid"])
        if not zcfg["in_pid_ns"]:
            # In a PID namespace the job dies with the fork-server anyway.
            limits.die_with_parent()
        units = job["units"]
        report_pass, report_end = _make_reporters(
            {i: u[2] for i, u in enumerate(units) if u[0] == "a"}, job["end"])
        units = [u[:2] if u[0] == "a" else u for u in units]
        code_src, entry = job["code"], job["entry"]
        del job
        exit_code = 0
        run_job(code_src, entry, units, report_pass, report_end)
    except _MemoryError:
        exit_code = EXIT_MEMORY
    except _BaseException:
        exit_code = EXIT_INTERNAL
    finally:
        os._exit(exit_code)
