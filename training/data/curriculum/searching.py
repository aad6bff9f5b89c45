"""Searching families: find an index, a maximum, the first match, a repeat."""

from training.data.curriculum.base import LIST_PARAMS, Spec, code, family, int_list, lines, pick

# (list parameter, target parameter); the code's own names are i and x.
LIST_TARGET_PARAMS = (("nums", "target"), ("values", "wanted"), ("items", "item"), ("xs", "goal"), ("data", "needle"))


def _list_and_target(rng):
    """A list with small values and a target that is often, not always, in it."""
    items = int_list(rng, 0, 9, 1, 7)
    return items, rng.choice(items) if rng.random() < 0.7 else rng.randint(0, 9)


@family("index_of", "searching")
def index_of(rng):
    f = pick(rng, "index_of", "find_index", "position_of", "locate", "first_index")
    xs, target = pick(rng, *LIST_TARGET_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs}, {target})` that returns the index of the first occurrence of {target} in {xs}, or -1 if it is missing.",
        f"Implement `{f}({xs}, {target})`, which searches the list {xs} from the left and returns the position of {target} (-1 when absent).",
        f"Define `{f}({xs}, {target})` to return the smallest i with {xs}[i] == {target}, and -1 if there is none.",
    )
    src = code(f"""
        def {f}({xs}, {target}):
            for i, x in enumerate({xs}):
                if x == {target}:
                    return i
            return -1
    """)
    stages = (
        f"{f} scans {xs} from the left and stops at the first item equal to {target}. If the loop ends, {target} is missing.",
        lines(f"Input: {xs}, a list, and {target}, a value.", "Output: an index or -1.", "Steps:",
              f"1. For each index i and item x in {xs}:", f"2. If x == {target}, return i.", "3. After the loop return -1."),
        lines(f"function {f}({xs}, {target}):", f"    for (i, x) in enumerate({xs}):",
              f"        if x == {target}: return i", "    return -1"),
        lines(f"Edge cases: an empty {xs} gives -1; with repeats the first index wins.",
              f"Invariant: no item before index i equals {target}; a result r >= 0 has {xs}[r] == {target}."),
    )  # fmt: skip
    inputs = [([], 3), ([5], 5)] + [_list_and_target(rng) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


@family("max_in_list", "searching")
def max_in_list(rng):
    f = pick(rng, "max_in_list", "largest", "find_max", "biggest", "maximum_of")
    xs = pick(rng, *LIST_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns the largest number in {xs}, or None if {xs} is empty.",
        f"Implement `{f}({xs})`, which finds the biggest element of the list {xs} with a loop (None for an empty list).",
        f"Define `{f}({xs})` to return the maximum value of {xs} without using max(); return None when {xs} is empty.",
    )
    src = code(f"""
        def {f}({xs}):
            best = None
            for x in {xs}:
                if best is None or x > best:
                    best = x
            return best
    """)
    stages = (
        f"{f} remembers the largest number seen so far while walking {xs}; a bigger item replaces it.",
        lines(f"Input: {xs}, a list of integers.", "Output: an integer or None.", "Steps:", "1. Set best = None.",
              f"2. For each x in {xs}: if best is None or x > best, best = x.", "3. Return best."),
        lines(f"function {f}({xs}):", "    best = none", f"    for x in {xs}:",
              "        if best is none or x > best: best = x", "    return best"),
        lines(f"Edge cases: an empty {xs} gives None; negative numbers work too.",
              f"Invariant: best is the maximum of the items seen so far, and the result is in {xs}."),
    )  # fmt: skip
    inputs = [([],), ([rng.randint(-9, -1)],)] + [(int_list(rng, -20, 30),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


@family("first_greater", "searching")
def first_greater(rng):
    f = pick(rng, "first_greater", "first_above", "find_first_over", "first_exceeding", "first_bigger")
    xs = pick(rng, *LIST_PARAMS)
    k = rng.randint(0, 15)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns the first element of {xs} greater than {k}, or None if there is none.",
        f"Implement `{f}({xs})`, which scans {xs} from the left and returns the first number above {k} (None if no number is).",
        f"Define `{f}({xs})` to return the earliest item of {xs} that is bigger than {k}, and None otherwise.",
    )
    src = code(f"""
        def {f}({xs}):
            for x in {xs}:
                if x > {k}:
                    return x
            return None
    """)
    stages = (
        f"{f} checks the items of {xs} in order and returns as soon as one is greater than {k}.",
        lines(f"Input: {xs}, a list of integers.", "Output: an integer or None.", "Steps:",
              f"1. For each x in {xs}:", f"2. If x > {k}, return x.", "3. After the loop return None."),
        lines(f"function {f}({xs}):", f"    for x in {xs}:", f"        if x > {k}: return x", "    return none"),
        lines(f"Edge cases: an empty {xs} gives None; {k} itself does not count.",
              f"Invariant: every item before the returned one is <= {k}."),
    )  # fmt: skip
    inputs = [([],), ([k],), ([k + 1],)] + [(int_list(rng, k - 10, k + 6),) for _ in range(9)]
    return Spec(f, prompt, src, stages, inputs)


# RL-only: max_in_list and its minimum twin.
@family("max_minus_min", "searching")
def max_minus_min(rng):
    f = pick(rng, "max_minus_min", "value_range", "spread", "range_width", "max_gap")
    xs = pick(rng, *LIST_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns the largest element of {xs} minus the smallest, or 0 if {xs} is empty.",
        f"Implement `{f}({xs})`, which returns the difference between the maximum and the minimum of the list {xs} (0 for an empty list).",
        f"Define `{f}({xs})` to return how wide the range of values in {xs} is: max minus min.",
    )
    src = code(f"""
        def {f}({xs}):
            if not {xs}:
                return 0
            return max({xs}) - min({xs})
    """)
    stages = (
        f"{f} needs both ends of {xs}: the biggest and the smallest value. Their difference is the spread.",
        lines(f"Input: {xs}, a list of integers.", "Output: a non-negative integer.", "Steps:",
              f"1. If {xs} is empty, return 0.", f"2. Find max({xs}) and min({xs}).", "3. Return max - min."),
        lines(f"function {f}({xs}):", f"    if {xs} is empty: return 0", f"    return max({xs}) - min({xs})"),
        lines(f"Edge cases: an empty {xs} gives 0; one item or all-equal items give 0.",
              f"Invariant: the result is >= 0 and every item lies between min({xs}) and min({xs}) + result."),
    )  # fmt: skip
    inputs = [([],), ([rng.randint(-9, 9)],)] + [(int_list(rng, -20, 30),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


# RL-only: index_of, but the last match wins.
@family("last_index_of", "searching")
def last_index_of(rng):
    f = pick(rng, "last_index_of", "find_last", "last_position", "rindex_of", "last_occurrence")
    xs, target = pick(rng, *LIST_TARGET_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs}, {target})` that returns the index of the last occurrence of {target} in {xs}, or -1 if it is missing.",
        f"Implement `{f}({xs}, {target})`, which returns the largest i with {xs}[i] == {target}, and -1 when {target} is absent.",
        f"Define `{f}({xs}, {target})` to find where {target} appears last in the list {xs} (-1 if nowhere).",
    )
    src = code(f"""
        def {f}({xs}, {target}):
            result = -1
            for i, x in enumerate({xs}):
                if x == {target}:
                    result = i
            return result
    """)
    stages = (
        f"{f} scans all of {xs} and remembers the latest index where the item equals {target}; -1 stays if none does.",
        lines(f"Input: {xs}, a list, and {target}, a value.", "Output: an index or -1.", "Steps:",
              "1. Set result = -1.", f"2. For each index i and item x in {xs}: if x == {target}, result = i.",
              "3. Return result."),
        lines(f"function {f}({xs}, {target}):", "    result = -1", f"    for (i, x) in enumerate({xs}):",
              f"        if x == {target}: result = i", "    return result"),
        lines(f"Edge cases: an empty {xs} gives -1; with repeats the last index wins.",
              f"Invariant: no item after the result equals {target}."),
    )  # fmt: skip
    inputs = [([], 3), ([5], 5), ([2, 2], 2)] + [_list_and_target(rng) for _ in range(9)]
    return Spec(f, prompt, src, stages, inputs)


# Held out: remove_duplicates' seen-list with index_of's early return.
@family("first_repeated", "searching")
def first_repeated(rng):
    f = pick(rng, "first_repeated", "first_duplicate", "find_repeat", "first_seen_twice", "earliest_repeat")
    xs = pick(rng, *LIST_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns the first element of {xs} that already appeared earlier in the list, or None.",
        f"Implement `{f}({xs})`, which scans {xs} from the left and returns the first value seen for the second time (None if no value repeats).",
        f"Define `{f}({xs})` to return the earliest item of {xs} that is a repeat of a previous item, and None otherwise.",
    )
    src = code(f"""
        def {f}({xs}):
            seen = []
            for x in {xs}:
                if x in seen:
                    return x
                seen.append(x)
            return None
    """)
    stages = (
        f"{f} remembers the values of {xs} already passed; the first item found among them is the answer.",
        lines(f"Input: {xs}, a list of integers.", "Output: an integer or None.", "Steps:", "1. Start with seen = [].",
              f"2. For each x in {xs}: if x is in seen, return x; else add x.", "3. Return None."),
        lines(f"function {f}({xs}):", "    seen = []", f"    for x in {xs}:",
              "        if x in seen: return x", "        add x to seen", "    return none"),
        lines(f"Edge cases: an empty {xs} or one without repeats gives None.",
              f"Invariant: seen holds distinct values, the items of {xs} before x."),
    )  # fmt: skip
    inputs = [([],), ([4, 4],), ([1, 2, 3],)] + [(int_list(rng, 0, 9, 2, 7),) for _ in range(9)]
    return Spec(f, prompt, src, stages, inputs)
