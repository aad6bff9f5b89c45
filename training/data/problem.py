"""The `Problem` record every part of training reads, and its validation.

A `Problem` is one programming task with a reference solution and tests. The
record sits below its sources (`problems.py`, the curriculum), which all build it.
Nothing here runs untrusted code: tests are only parsed, never executed.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import asdict, dataclass

from training.errors import UserError

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
        return native_problem(d, "problem record", default_id=None, default_source="curriculum")


def native_problem(d: dict, where: str, default_id: str | None, default_source: str) -> Problem:
    if not isinstance(d, dict):
        raise UserError(f"{where}: expected a JSON object with fields prompt, entry_point, reference_solution, tests.")
    for key in ("prompt", "entry_point", "reference_solution"):
        require_str(d, key, where)
    entry = d["entry_point"]
    if not entry.isidentifier():
        raise UserError(f"{where}: field 'entry_point' must be a Python function name, got {entry!r}.")
    check_defines(d["reference_solution"], entry, "reference_solution", where)
    tests = check_tests(d.get("tests"), "tests", where)

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



# --------------------------------------------------------------------------- validation helpers


def require_str(d: dict, key: str, where: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: field {key!r} must be a non-empty string.")
    return value


def json_field(d: dict, key: str, where: str):
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


def parse_source(source: str, field: str, where: str) -> ast.Module:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError) as e:
        detail = f"line {e.lineno}: {e.msg}" if isinstance(e, SyntaxError) else str(e)
        raise UserError(f"{where}: field {field!r} is not valid Python 3 ({detail}).") from None


def check_defines(source: str, name: str, field: str, where: str) -> None:
    tree = parse_source(source, field, where)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return
    raise UserError(f"{where}: field {field!r} does not define {name!r}, the function named in 'entry_point'.")


def check_tests(tests, field: str, where: str) -> list[str]:
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


def called_names(tests: list[str]) -> list[str]:
    """Names of plain functions the tests call, in order of first appearance."""
    names: list[str] = []
    for test in tests:
        for node in ast.walk(ast.parse(test)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in names:
                names.append(node.func.id)
    return names


def signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    return f"{fn.name}({ast.unparse(fn.args)})"


def in_hashed_share(problem_id: str, share: float, salt: str = "") -> bool:
    """Whether a problem falls in a fixed `share` of all problems, by a stable hash of its id (and `salt`).

    The same on every rank and in every run; two slices with different salts are independent.
    """
    digest = hashlib.sha256((salt + problem_id).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share

