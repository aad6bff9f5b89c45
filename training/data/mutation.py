"""Type-aware mutation of a test's call arguments: new inputs with no learned writer.

    from training.data.mutation import mutated_calls
    calls = mutated_calls(problem.tests, problem.entry_point, k=12, rng=random.Random(0))
    # ['assert f([3, 0, 2])', 'assert f([])', ...]: calls only; a reference solution labels them

EvalPlus's rule: start from the seed inputs (here, the calls of the tests it is
given), and grow a pool by changing one argument of a pooled call at a time,
keeping every value's type: an int stays an int, a list of ints a list of ints.
Small and edge values come often (0, 1, -1, the empty string and list, one
element), since that is where code goes wrong. The calls come back as
`assert f(args)` texts with no expected value: the trainer asks the sandbox to
run the reference solution on them (`Sandbox.label`), which fills the value in
and drops a call the reference raises on. The mutator reads only the tests it
is handed: the trainer hands it a problem's visible tests.
"""

from __future__ import annotations

import ast
import random
import string

MAX_LEN = 10  # longest list, dict or set a mutation makes
MAX_STR = 24
MAX_INT = 10**6
_ATTEMPTS = 20  # tries per call wanted before giving up on a seed that has few mutations


def seed_calls(tests: list, entry_point: str) -> list:
    """(args, kwargs) of every call of `entry_point` with literal arguments in `tests`, in order, distinct."""
    calls, seen = [], set()
    for test in tests:
        try:
            tree = ast.parse(test)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point):
                continue
            try:
                args = tuple(ast.literal_eval(a) for a in node.args)
                kwargs = tuple((k.arg, ast.literal_eval(k.value)) for k in node.keywords if k.arg)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue  # an argument that is not a literal: nothing to mutate
            if len(kwargs) != len(node.keywords) or any(isinstance(a, ast.Starred) for a in node.args):
                continue
            key = repr((args, kwargs))
            if key not in seen:
                seen.add(key)
                calls.append((args, kwargs))
    return calls


def call_text(entry_point: str, args: tuple, kwargs: tuple) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs]
    return f"assert {entry_point}({', '.join(parts)})"


def mutated_calls(tests: list, entry_point: str, k: int, rng: random.Random) -> list:
    """Up to `k` distinct calls, none equal to a seed call, each one mutation away from a seed or an earlier mutant."""
    seeds = seed_calls(tests, entry_point)
    if k <= 0 or not any(args or kwargs for args, kwargs in seeds):
        return []
    pool = list(seeds)
    seen = {repr(c) for c in seeds}
    # per argument, the fullest seed value: an emptied list refills with its kind of element
    likes = [max((s[0][i] for s in seeds if len(s[0]) > i), key=_size, default=None) for i in range(len(seeds[0][0]))]
    like_kw = {name: max((dict(s[1]).get(name) for s in seeds), key=_size) for name, _ in seeds[0][1]}
    out = []
    for _ in range(k * _ATTEMPTS):
        if len(out) >= k:
            break
        args, kwargs = rng.choice(pool)
        if not args and not kwargs:
            continue
        args, kwargs = list(args), list(kwargs)
        i = rng.randrange(len(args) + len(kwargs))
        if i < len(args):
            args[i] = mutate(args[i], rng, likes[i] if i < len(likes) else None)
        else:
            name, value = kwargs[i - len(args)]
            kwargs[i - len(args)] = (name, mutate(value, rng, like_kw.get(name)))
        call = (tuple(args), tuple(kwargs))
        if repr(call) in seen:
            continue
        seen.add(repr(call))
        pool.append(call)
        out.append(call_text(entry_point, *call))
    return out


def _size(value) -> int:
    return len(value) if isinstance(value, (str, list, tuple, dict, set, frozenset)) else 0


def mutate(value, rng: random.Random, like=None):
    """One type-preserving change of `value` (a new object; `value` is left as it was).

    `like` is a value of the same kind whose elements show what an empty
    `value` may be refilled with (its seed's elements); without one, an empty
    list gets small ints or short words, and the reference rejects a misfit.
    """
    if isinstance(value, (list, set, frozenset, dict)) and not value and isinstance(like, type(value)) and like:
        if isinstance(like, dict):
            key = rng.choice(list(like))
            return {mutate(key, rng): mutate(like[key], rng)}
        return type(value)([mutate(rng.choice(list(like)), rng)])
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return _int(value, rng)
    if isinstance(value, float):
        return _float(value, rng)
    if isinstance(value, str):
        return _str(value, rng)
    if isinstance(value, list):
        return _sequence(value, rng)
    if isinstance(value, tuple):  # a tuple is often a record (a pair): its length stays
        if not value:
            return value
        i = rng.randrange(len(value))
        return value[:i] + (mutate(value[i], rng),) + value[i + 1:]
    if isinstance(value, dict):
        return _dict(value, rng)
    if isinstance(value, (set, frozenset)):
        return type(value)(_sequence(list(value), rng))
    return value  # None, bytes, complex: left alone


def _int(x: int, rng: random.Random) -> int:
    choice = rng.randrange(7)
    if choice == 0:
        out = rng.choice((0, 1, -1))
    elif choice == 1:
        out = x + rng.choice((1, -1))
    elif choice == 2:
        out = -x
    elif choice == 3:
        out = x * 2
    elif choice == 4:
        out = x // 2
    else:
        out = x + rng.randint(-10, 10)
    return max(-MAX_INT, min(MAX_INT, out))


def _float(x: float, rng: random.Random) -> float:
    choice = rng.randrange(5)
    if choice == 0:
        return rng.choice((0.0, 1.0, -1.0, 0.5))
    if choice == 1:
        return -x
    if choice == 2:
        return x * 2
    if choice == 3:
        return round(x + rng.uniform(-5, 5), 2)
    return float(int(x))


def _str(s: str, rng: random.Random) -> str:
    alphabet = s + (string.ascii_lowercase if not s or s.islower() or not s.isupper() else string.ascii_uppercase)
    choice = rng.randrange(8)
    if choice == 0:
        out = rng.choice(("", rng.choice(alphabet)))
    elif choice == 1 and s:
        i = rng.randrange(len(s))
        out = s[:i] + s[i + 1:]
    elif choice == 2:
        i = rng.randrange(len(s) + 1)
        out = s[:i] + rng.choice(alphabet) + s[i:]
    elif choice == 3 and s:
        i = rng.randrange(len(s))
        out = s[:i] + rng.choice(alphabet) + s[i + 1:]
    elif choice == 4:
        out = s[::-1]
    elif choice == 5:
        out = s.swapcase()
    elif choice == 6 and " " in s:
        words = s.split(" ")
        rng.shuffle(words)
        out = " ".join(words)
    else:
        out = s + s[: rng.randrange(len(s) + 1)]
    return out[:MAX_STR]


def _sequence(xs: list, rng: random.Random) -> list:
    if not xs:  # no element to take the type from: small ints or short words, and the reference rejects a misfit
        return [rng.randint(-5, 9) for _ in range(rng.randint(1, 3))] if rng.random() < 0.5 else \
            [_str("", rng) or "a" for _ in range(rng.randint(1, 3))]
    choice = rng.randrange(7)
    if choice == 0:
        return rng.choice(([], xs[:1]))
    if choice == 1 and xs:
        i = rng.randrange(len(xs))
        return xs[:i] + xs[i + 1:]
    if choice == 2 and xs and len(xs) < MAX_LEN:
        i = rng.randrange(len(xs) + 1)
        return xs[:i] + [mutate(rng.choice(xs), rng)] + xs[i:]
    if choice == 3 and xs:
        i = rng.randrange(len(xs))
        return xs[:i] + [mutate(xs[i], rng)] + xs[i + 1:]
    if choice == 4 and xs and len(xs) < MAX_LEN:
        return xs + [rng.choice(xs)]
    if choice == 5:
        return list(reversed(xs))
    ys = list(xs)
    rng.shuffle(ys)
    return ys


def _dict(d: dict, rng: random.Random) -> dict:
    items = list(d.items())
    choice = rng.randrange(4) if items else 3
    if choice == 0 and items:
        del items[rng.randrange(len(items))]
    elif choice == 1 and items and len(items) < MAX_LEN:
        key, value = rng.choice(items)
        items.append((mutate(key, rng), mutate(value, rng)))
    elif choice == 2 and items:
        i = rng.randrange(len(items))
        items[i] = (items[i][0], mutate(items[i][1], rng))
    elif not items:  # as for an empty list: a word to a small int, and the reference rejects a misfit
        items = [(_str("", rng) or "a", rng.randint(0, 9))]
    else:
        items = []
    return dict(items)
