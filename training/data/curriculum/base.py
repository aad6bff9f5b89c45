"""What every curriculum family shares.

A family is a function `make(rng) -> Spec` registered with `@family(name,
category)`. It picks a function name, parameter names, constants and a prompt
phrasing from `rng`, and returns the instance's texts plus argument tuples for
the tests (edge cases first). `realise` turns a Spec into a Problem: it runs the
reference solution in-process (our own code, never a model's) on those
arguments and writes `assert f(<args>) == <result>` with Python literals.
"""

from __future__ import annotations

import copy
import random
import textwrap
from dataclasses import dataclass
from typing import Callable

from training.data.problem import Problem

# Sizes a ~1.6M-parameter model with a 1024-token context can learn from.
MIN_TESTS = 6
MAX_TESTS = 8
MAX_PROMPT_CHARS = 220
MAX_STAGE_CHARS = 240
MAX_CODE_LINES = 8

LIST_PARAMS = ("nums", "values", "numbers", "xs", "items", "data")
STR_PARAMS = ("s", "text", "word", "string", "chars")
SENTENCE_PARAMS = ("sentence", "text", "s", "line", "phrase")
DICT_PARAMS = ("d", "mapping", "table", "scores", "stock", "prices")
INT_PARAMS = ("n", "num", "x", "value", "number")
LETTERS = "abcdeilmnorstu"
WORDS = (
    "cat", "dog", "sun", "tree", "blue", "red", "code", "data", "apple", "moon",
    "river", "stone", "light", "green", "bird", "fish", "book", "rain", "star", "wind",
)  # fmt: skip


@dataclass(frozen=True)
class Spec:
    """One instance before its tests are computed."""

    entry_point: str
    prompt: str
    code: str  # reference solution
    stages: tuple[str, str, str, str]  # gold texts for stages 1-4
    inputs: list[tuple]  # argument tuples; repeats are dropped, the first MAX_TESTS distinct kept


@dataclass(frozen=True)
class Family:
    name: str
    category: str
    make: Callable[[random.Random], Spec]


REGISTRY: dict[str, Family] = {}


def family(name: str, category: str):
    """Register `make(rng) -> Spec` as the generator of family `name`."""

    def register(make: Callable[[random.Random], Spec]):
        if name in REGISTRY:
            raise ValueError(f"curriculum family {name!r} is registered twice")
        REGISTRY[name] = Family(name, category, make)
        return make

    return register


def realise(spec: Spec, family_name: str, problem_id: str, split: str) -> Problem:
    """The Problem for `spec`, with tests computed by running its reference."""
    namespace: dict = {}
    exec(compile(spec.code, f"<curriculum {family_name}>", "exec"), namespace)
    fn = namespace[spec.entry_point]
    tests: list[str] = []
    calls: set[str] = set()
    for args in spec.inputs:
        call = f"{spec.entry_point}({', '.join(map(repr, args))})"
        if call in calls:
            continue
        calls.add(call)
        expected = fn(*copy.deepcopy(args))
        tests.append(f"assert {call} == {expected!r}")
        if len(tests) == MAX_TESTS:
            break
    if len(tests) < MIN_TESTS:
        raise RuntimeError(f"curriculum family {family_name} made only {len(tests)} distinct tests for {problem_id}")
    return Problem(
        id=problem_id,
        prompt=spec.prompt,
        entry_point=spec.entry_point,
        reference_solution=spec.code,
        tests=tests,
        gold_stages=list(spec.stages),
        source="curriculum",
        family=family_name,
        split=split,
    )


# --------------------------------------------------------------------------- text helpers


def pick(rng: random.Random, *options):
    return rng.choice(options)


def code(text: str) -> str:
    """Dedent an indented triple-quoted source block and end it with one newline."""
    return textwrap.dedent(text).strip("\n") + "\n"


def lines(*parts: str) -> str:
    return "\n".join(parts)


# --------------------------------------------------------------------------- random inputs


def int_list(rng: random.Random, lo: int = -9, hi: int = 20, min_len: int = 1, max_len: int = 6) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(min_len, max_len))]


def letters(rng: random.Random, min_len: int = 1, max_len: int = 8, alphabet: str = LETTERS) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len)))


def sentence(rng: random.Random, min_words: int = 1, max_words: int = 5, vocab: tuple[str, ...] = WORDS) -> str:
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(min_words, max_words)))


def word_dict(
    rng: random.Random, min_len: int = 1, max_len: int = 5, lo: int = 0, hi: int = 20, unique_values: bool = False
) -> dict[str, int]:
    keys = rng.sample(WORDS, rng.randint(min_len, max_len))
    values = rng.sample(range(lo, hi + 1), len(keys)) if unique_values else [rng.randint(lo, hi) for _ in keys]
    return dict(zip(keys, values))
