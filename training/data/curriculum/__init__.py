"""The bundled procedural curriculum: 50 problem families written for this project.

    from training.data.curriculum import load_curriculum, list_families
    warmup = load_curriculum("warmup")             # SFT families: gold chains for supervised warm-up
    train = load_curriculum("train")               # SFT + RL-only families
    evaluate = load_curriculum("heldout_instances")  # new instances of the train families
    transfer = load_curriculum("heldout_families")   # families never trained on

Families are split into three fixed groups (listed below, by name):
- SFT: gold chains are used for warm-up, and the problems for RL too.
- RL-only: never in warm-up; RL trains on their tests. Each is a composition or
  variant of SFT families, so this is where reinforcement learning has headroom.
- HELD-OUT: never trained on; they measure generalisation to new families.

Instances come from `random.Random` seeded by (seed, family, stream, attempt),
so a split is a pure function of its arguments, and instance i does not depend
on how many instances were asked for. Train and held-out instances of the same
family are told apart by a hash of the prompt (one in five prompts belongs to
the held-out side), so the two never share a prompt whatever per_family is.
See docs/problems.md.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from training.data.curriculum import arithmetic, counting, dicts, lists, searching, simple_math, strings  # noqa: F401  (registers the families)
from training.data.curriculum.base import REGISTRY, Family, realise
from training.errors import UserError
from training.data.problem import Problem

SFT_FAMILIES: tuple[str, ...] = (
    # arithmetic
    "affine", "clamp_value", "abs_difference", "sum_to_n", "digit_sum",
    # math
    "is_multiple", "factorial", "gcd", "fibonacci",
    # strings
    "reverse_string", "is_palindrome", "remove_char", "capitalize_words", "repeat_chars",
    # lists
    "scale_list", "filter_greater", "sum_of_squares", "running_sum", "pairwise_add", "remove_duplicates",
    # dicts
    "word_count", "invert_dict", "filter_dict_by_value", "sum_dict_values",
    # searching
    "index_of", "max_in_list", "first_greater",
    # counting
    "count_vowels", "count_occurrences", "count_multiples",
)  # fmt: skip
RL_ONLY_FAMILIES: tuple[str, ...] = (
    "sum_of_multiples",   # sum + is_multiple
    "is_prime",           # is_multiple over every divisor
    "reverse_words",      # reverse_string on words
    "scale_then_filter",  # scale_list, then filter_greater
    "clamp_list",         # clamp_value on every item
    "running_max",        # running_sum's shape, max_in_list's update
    "keys_above",         # filter_dict_by_value, sorted keys
    "max_minus_min",      # max_in_list and min
    "last_index_of",      # index_of, last match
    "count_long_words",   # count_multiples' loop over words
)  # fmt: skip
HELDOUT_FAMILIES: tuple[str, ...] = (
    "product_list",       # sum_of_squares with a product
    "count_digit",        # digit_sum + count_occurrences
    "lcm",                # gcd, then a * b // g
    "remove_vowels",      # remove_char + count_vowels' membership test
    "is_sorted",          # neighbour comparison with an early return
    "filter_then_scale",  # filter (below), then scale_list
    "dict_max_key",       # max_in_list's loop over dict items
    "first_repeated",     # remove_duplicates' seen list + index_of's early return
    "count_letter",       # count_vowels with one letter
    "count_in_range",     # count_multiples' loop, clamp_value's bounds
)  # fmt: skip
GROUPS: dict[str, tuple[str, ...]] = {"sft": SFT_FAMILIES, "rl_only": RL_ONLY_FAMILIES, "heldout": HELDOUT_FAMILIES}

SPLITS: tuple[str, ...] = ("warmup", "train", "heldout_instances", "heldout_families", "all")
DEFAULT_PER_FAMILY = {"warmup": 40, "train": 40, "heldout_instances": 10, "heldout_families": 10}
HELDOUT_BUCKETS = 5  # one prompt in five belongs to heldout_instances
# A family with little variety may repeat a prompt (with new test inputs) only
# after this many attempts; a constant, so that instance i never depends on n.
REPEAT_AFTER_ATTEMPTS = 2000


def _check_groups() -> None:
    listed = [name for names in GROUPS.values() for name in names]
    if len(listed) != len(set(listed)) or set(listed) != set(REGISTRY):
        raise RuntimeError(
            "curriculum groups must list every registered family exactly once; "
            f"unlisted: {sorted(set(REGISTRY) - set(listed))}, unknown: {sorted(set(listed) - set(REGISTRY))}"
        )


_check_groups()


@dataclass(frozen=True)
class FamilyInfo:
    name: str
    category: str  # arithmetic | math | strings | lists | dicts | searching | counting
    group: str  # sft | rl_only | heldout


def list_families() -> list[FamilyInfo]:
    """Every family with its category and group, SFT first, then RL-only, then held-out."""
    return [FamilyInfo(name, REGISTRY[name].category, group) for group, names in GROUPS.items() for name in names]


def load_curriculum(split: str, per_family: int | None = None, seed: int = 0) -> list[Problem]:
    """Instances of the curriculum for `split` (see the module docstring).

    per_family defaults to 40 for warmup/train and 10 for the held-out splits;
    "all" is train + heldout_instances + heldout_families, each with its default
    unless per_family is given.
    """
    if split not in SPLITS:
        raise UserError(f"unknown curriculum split {split!r}; use one of {', '.join(SPLITS)}.")
    if per_family is not None and (isinstance(per_family, bool) or not isinstance(per_family, int) or per_family < 1):
        raise UserError(f"per_family must be a positive integer, got {per_family!r}.")
    if split == "all":
        return [p for part in SPLITS[1:-1] for p in load_curriculum(part, per_family, seed)]

    n = per_family if per_family is not None else DEFAULT_PER_FAMILY[split]
    if split == "warmup":
        # The same instances as train's SFT part, so warm-up and RL see one problem set.
        return [p for name in SFT_FAMILIES for p in _instances(REGISTRY[name], "train", n, seed, split)]
    if split == "heldout_families":
        return [p for name in HELDOUT_FAMILIES for p in _instances(REGISTRY[name], split, n, seed, split)]
    stream = "train" if split == "train" else "heldout_instances"
    names = SFT_FAMILIES + RL_ONLY_FAMILIES
    return [p for name in names for p in _instances(REGISTRY[name], stream, n, seed, split)]


def _is_heldout_prompt(prompt: str) -> bool:
    return hashlib.sha256(prompt.encode("utf-8")).digest()[0] % HELDOUT_BUCKETS == 0


def _instances(fam: Family, stream: str, n: int, seed: int, split: str) -> list[Problem]:
    """n instances of `fam` from seed stream `stream`, with distinct prompts while the family's variety allows."""
    wanted_bucket = {"train": False, "heldout_instances": True}.get(stream)  # None: no train/held-out partition
    problems: list[Problem] = []
    prompts: set[str] = set()
    attempt = 0
    while len(problems) < n:
        if attempt > 400 * n + 2000:
            raise RuntimeError(f"curriculum family {fam.name} cannot produce {n} instances for {stream}")
        rng = random.Random(f"curriculum/{seed}/{fam.name}/{stream}/{attempt}")
        attempt += 1
        spec = fam.make(rng)
        if wanted_bucket is not None and _is_heldout_prompt(spec.prompt) != wanted_bucket:
            continue
        if spec.prompt in prompts and attempt < REPEAT_AFTER_ATTEMPTS:
            continue
        prompts.add(spec.prompt)
        problem_id = f"curriculum/{fam.name}/{stream}/{len(problems):04d}"
        problems.append(realise(spec, fam.name, problem_id, split))
    return problems
