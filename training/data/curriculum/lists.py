"""List families: map, filter, accumulate and combine lists of integers."""

from training.data.curriculum.base import LIST_PARAMS, Spec, code, family, int_list, lines, pick


@family("scale_list", "lists")
def scale_list(rng):
    f = pick(rng, "scale_list", "multiply_all", "times_each", "scale_values", "scaled_copy")
    xs = pick(rng, *LIST_PARAMS)
    k = rng.randint(2, 9)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns a new list with every element of {xs} multiplied by {k}.",
        f"Implement `{f}({xs})`, which multiplies each number in the list {xs} by {k} and returns the new list.",
        f"Define `{f}({xs})` to return a list where each item of {xs} is multiplied by {k}, in the same order.",
    )
    src = code(f"""
        def {f}({xs}):
            return [x * {k} for x in {xs}]
    """)
    stages = (
        f"{f} maps each number in {xs} to that number times {k}. A list comprehension builds the new list and leaves {xs} unchanged.",
        lines(f"Input: {xs}, a list of integers.", "Output: a new list of the same length.", "Steps:",
              f"1. Take each x in {xs} in order.", f"2. Compute x * {k}.", "3. Return the list of results."),
        lines(f"function {f}({xs}):", f"    return [x * {k} for each x in {xs}]"),
        lines(f"Edge cases: an empty {xs} gives []; negative numbers stay negative.",
              f"Invariant: the result has len({xs}) items and item i equals {xs}[i] * {k}."),
    )  # fmt: skip
    inputs = [([],), ([0],)] + [(int_list(rng),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


@family("filter_greater", "lists")
def filter_greater(rng):
    f = pick(rng, "filter_greater", "keep_above", "values_over", "select_greater", "above_threshold")
    xs = pick(rng, *LIST_PARAMS)
    t = rng.randint(-5, 15)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns the elements of {xs} greater than {t}, in their original order.",
        f"Implement `{f}({xs})`, which keeps only the numbers in {xs} that are larger than {t} and returns them as a new list.",
        f"Define `{f}({xs})` to return a list of the items of {xs} that exceed {t}, keeping their order.",
    )
    src = code(f"""
        def {f}({xs}):
            return [x for x in {xs} if x > {t}]
    """)
    stages = (
        f"{f} filters {xs}: an item stays only if it is greater than {t}. A comprehension with a condition keeps the order.",
        lines(f"Input: {xs}, a list of integers.", "Output: a new list.", "Steps:",
              f"1. Take each x in {xs} in order.", f"2. Keep x if x > {t}.", "3. Return the kept items."),
        lines(f"function {f}({xs}):", f"    return [x for each x in {xs} if x > {t}]"),
        lines(f"Edge cases: an empty {xs} gives []; {t} itself is not kept.",
              f"Invariant: every item of the result is > {t} and len(result) <= len({xs})."),
    )  # fmt: skip
    inputs = [([],), ([t],), ([t + 1],)] + [(int_list(rng, t - 10, t + 10),) for _ in range(9)]
    return Spec(f, prompt, src, stages, inputs)


@family("sum_of_squares", "lists")
def sum_of_squares(rng):
    f = pick(rng, "sum_of_squares", "square_sum", "sum_squares", "total_squared", "squares_total")
    xs = pick(rng, *LIST_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns the sum of the squares of the numbers in {xs}.",
        f"Implement `{f}({xs})`, which squares each element of {xs} and returns the total of those squares.",
        f"Define `{f}({xs})` to return x * x added up over every item x of the list {xs} (0 for an empty list).",
        f"Create a function `{f}({xs})` that adds the square of each integer in {xs} and returns the result.",
    )
    src = code(f"""
        def {f}({xs}):
            total = 0
            for x in {xs}:
                total += x * x
            return total
    """)
    stages = (
        f"{f} squares every number in {xs} and adds the squares. A running total starting at 0 does it in one pass.",
        lines(f"Input: {xs}, a list of integers.", "Output: an integer.", "Steps:",
              "1. Set total = 0.", f"2. For each x in {xs}, add x * x.", "3. Return total."),
        lines(f"function {f}({xs}):", "    total = 0", f"    for x in {xs}: total += x * x", "    return total"),
        lines(f"Edge cases: an empty {xs} gives 0; negative numbers add positive squares.",
              f"Invariant: total never decreases, so {f}({xs}) >= 0."),
    )  # fmt: skip
    inputs = [([],), ([rng.randint(-5, -1)],)] + [(int_list(rng, -9, 9),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


@family("running_sum", "lists")
def running_sum(rng):
    f = pick(rng, "running_sum", "prefix_sums", "cumulative_sum", "running_total", "accumulate")
    xs = pick(rng, *LIST_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns a list whose item i is the sum of {xs}[0] through {xs}[i].",
        f"Implement `{f}({xs})`, which returns the running totals of the list {xs}, e.g. [1, 2, 3] gives [1, 3, 6].",
        f"Define `{f}({xs})` to return the cumulative sums of {xs} as a new list of the same length.",
        f"Create a function `{f}({xs})` that adds up {xs} from left to right and records the total after each item.",
    )
    src = code(f"""
        def {f}({xs}):
            result = []
            total = 0
            for x in {xs}:
                total += x
                result.append(total)
            return result
    """)
    stages = (
        f"{f} keeps a running total while walking {xs} and records it after each item, so item i holds the sum so far.",
        lines(f"Input: {xs}, a list of integers.", "Output: a list of the same length.", "Steps:",
              "1. Set total = 0 and result = [].", f"2. For each x in {xs}: total += x, append total.",
              "3. Return result."),
        lines(f"function {f}({xs}):", "    (result, total) = ([], 0)", f"    for x in {xs}:",
              "        total += x; append total to result", "    return result"),
        lines(f"Edge cases: an empty {xs} gives []; one item gives [that item].",
              f"Invariant: result[-1] == sum({xs}) and result[i] - result[i - 1] == {xs}[i]."),
    )  # fmt: skip
    inputs = [([],), ([rng.randint(1, 9)],)] + [(int_list(rng, -5, 12),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


@family("pairwise_add", "lists")
def pairwise_add(rng):
    f = pick(rng, "pairwise_add", "add_lists", "elementwise_sum", "zip_add", "sum_pairs")
    a, b = pick(rng, ("xs", "ys"), ("left", "right"), ("first", "second"), ("nums1", "nums2"), ("a", "b"))
    prompt = pick(
        rng,
        f"Write a Python function `{f}({a}, {b})` that returns a list whose item i is {a}[i] + {b}[i]; both lists have the same length.",
        f"Implement `{f}({a}, {b})`, which adds two equally long lists of integers element by element and returns the sums.",
        f"Define `{f}({a}, {b})` to return the position-wise sums of the lists {a} and {b}.",
        f"Create a function `{f}({a}, {b})` that pairs up items of {a} and {b} by index and returns a list of their sums.",
    )
    src = code(f"""
        def {f}({a}, {b}):
            return [x + y for x, y in zip({a}, {b})]
    """)
    stages = (
        f"{f} walks {a} and {b} together with zip and adds the two items at each position.",
        lines(f"Input: lists {a} and {b} of equal length.", "Output: a list of the same length.", "Steps:",
              f"1. Pair items with zip({a}, {b}).", "2. Add each pair x + y.", "3. Return the sums as a list."),
        lines(f"function {f}({a}, {b}):", f"    return [x + y for each (x, y) in zip({a}, {b})]"),
        lines(f"Edge cases: empty {a} and {b} give []; a 0 leaves the other item unchanged.",
              f"Invariant: len(result) == len({a}) and result[i] == {a}[i] + {b}[i]."),
    )  # fmt: skip
    inputs = [([], []), ([1], [2])]
    for _ in range(10):
        left = int_list(rng, -9, 20, 1, 5)
        inputs.append((left, [rng.randint(-9, 20) for _ in left]))
    return Spec(f, prompt, src, stages, inputs)


@family("remove_duplicates", "lists")
def remove_duplicates(rng):
    f = pick(rng, "remove_duplicates", "dedupe", "unique_items", "drop_repeats", "first_occurrences")
    xs = pick(rng, *LIST_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns {xs} without repeated values, keeping the first occurrence of each.",
        f"Implement `{f}({xs})`, which returns a new list with the distinct items of {xs} in the order they first appear.",
        f"Define `{f}({xs})` to drop every value of {xs} that was already seen earlier, keeping the order.",
        f"Create a function `{f}({xs})` that removes duplicates from the list {xs} and returns the result in original order.",
    )
    src = code(f"""
        def {f}({xs}):
            result = []
            for x in {xs}:
                if x not in result:
                    result.append(x)
            return result
    """)
    stages = (
        f"{f} copies {xs} but skips any value already copied. Checking the result list keeps only first occurrences, in order.",
        lines(f"Input: {xs}, a list of integers.", "Output: a new list.", "Steps:", "1. Start with result = [].",
              f"2. For each x in {xs}, append x if x is not in result.", "3. Return result."),
        lines(f"function {f}({xs}):", "    result = []", f"    for x in {xs}:",
              "        if x not in result: append x", "    return result"),
        lines(f"Edge cases: an empty {xs} gives []; a list without repeats is returned as is.",
              f"Invariant: result has no repeats and keeps the order in which values first appear in {xs}."),
    )  # fmt: skip
    inputs = [([],), ([3, 3],)] + [(int_list(rng, 0, 5, 1, 8),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


# RL-only: scale_list + filter_greater.
@family("scale_then_filter", "lists")
def scale_then_filter(rng):
    f = pick(rng, "scale_then_filter", "multiply_and_keep", "scaled_above", "big_products", "scale_and_select")
    xs = pick(rng, *LIST_PARAMS)
    k, t = rng.randint(2, 5), rng.randint(0, 20)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that multiplies every element of {xs} by {k} and returns the products greater than {t}, in order.",
        f"Implement `{f}({xs})`, which scales each number in {xs} by {k} and keeps only the results above {t}.",
        f"Define `{f}({xs})` to return the values x * {k} for the items x of {xs}, leaving out products that are {t} or less.",
    )
    src = code(f"""
        def {f}({xs}):
            return [x * {k} for x in {xs} if x * {k} > {t}]
    """)
    stages = (
        f"{f} first multiplies each x in {xs} by {k}, then keeps the product only if it is greater than {t}.",
        lines(f"Input: {xs}, a list of integers.", "Output: a new list.", "Steps:",
              f"1. For each x in {xs}, compute x * {k}.", f"2. Keep the product if it is > {t}.",
              "3. Return the kept products in order."),
        lines(f"function {f}({xs}):", f"    return [x * {k} for each x in {xs} if x * {k} > {t}]"),
        lines(f"Edge cases: an empty {xs} gives []; a product equal to {t} is dropped.",
              f"Invariant: every item of the result is > {t} and divisible by {k}."),
    )  # fmt: skip
    inputs = [([],), ([0],)] + [(int_list(rng, -5, 12),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


# RL-only: clamp_value applied to every item, as in scale_list.
@family("clamp_list", "lists")
def clamp_list(rng):
    f = pick(rng, "clamp_list", "clamp_all", "limit_values", "bound_each", "clip_list")
    xs = pick(rng, *LIST_PARAMS)
    lo = rng.randint(-5, 5)
    hi = lo + rng.randint(3, 12)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns a new list where each element of {xs} is clamped to the range {lo} to {hi}.",
        f"Implement `{f}({xs})`, which replaces items of {xs} below {lo} by {lo} and items above {hi} by {hi}, and returns the new list.",
        f"Define `{f}({xs})` to return {xs} with every value limited to at least {lo} and at most {hi}.",
    )
    src = code(f"""
        def {f}({xs}):
            return [min(max(x, {lo}), {hi}) for x in {xs}]
    """)
    stages = (
        f"{f} clamps each item of {xs} on its own: max(x, {lo}) lifts small values, then min(..., {hi}) caps large ones.",
        lines(f"Input: {xs}, a list of integers.", "Output: a list of the same length.", "Steps:",
              f"1. For each x in {xs}, take max(x, {lo}).", f"2. Then take min of that and {hi}.",
              "3. Return the new list."),
        lines(f"function {f}({xs}):", f"    return [min(max(x, {lo}), {hi}) for each x in {xs}]"),
        lines(f"Edge cases: an empty {xs} gives []; items already in range stay the same.",
              f"Invariant: len(result) == len({xs}) and {lo} <= item <= {hi} for every item."),
    )  # fmt: skip
    inputs = [([],), ([lo, hi],)] + [(int_list(rng, lo - 8, hi + 8),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


# RL-only: running_sum's shape with max_in_list's update.
@family("running_max", "lists")
def running_max(rng):
    f = pick(rng, "running_max", "prefix_max", "cumulative_max", "max_so_far", "rolling_best")
    xs = pick(rng, *LIST_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns a list whose item i is the largest of {xs}[0] through {xs}[i].",
        f"Implement `{f}({xs})`, which returns the maximum seen so far at each position of {xs}, e.g. [2, 1, 5] gives [2, 2, 5].",
        f"Define `{f}({xs})` to walk {xs} from left to right and record the biggest value found up to each item.",
    )
    src = code(f"""
        def {f}({xs}):
            result = []
            best = None
            for x in {xs}:
                if best is None or x > best:
                    best = x
                result.append(best)
            return result
    """)
    stages = (
        f"{f} keeps the best value seen so far while walking {xs} and records it after each item.",
        lines(f"Input: {xs}, a list of integers.", "Output: a list of the same length.", "Steps:",
              "1. Set best = None and result = [].", f"2. For each x in {xs}: if x > best, best = x; append best.",
              "3. Return result."),
        lines(f"function {f}({xs}):", "    (result, best) = ([], none)", f"    for x in {xs}:",
              "        best = x if best is none or x > best", "        append best", "    return result"),
        lines(f"Edge cases: an empty {xs} gives []; one item gives [that item].",
              f"Invariant: result never decreases and result[i] == max({xs}[:i + 1])."),
    )  # fmt: skip
    inputs = [([],), ([rng.randint(-5, 5)],)] + [(int_list(rng, -9, 20, 2, 7),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


# Held out: the pairwise comparison of neighbours, with an early return.
@family("is_sorted", "lists")
def is_sorted(rng):
    f = pick(rng, "is_sorted", "is_ascending", "check_sorted", "in_order", "is_nondecreasing")
    xs = pick(rng, *LIST_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns True if {xs} is sorted in non-decreasing order and False otherwise.",
        f"Implement `{f}({xs})`, which checks that no item of {xs} is smaller than the item before it.",
        f"Define `{f}({xs})` to return True when the list {xs} is in ascending order (equal neighbours allowed).",
    )
    src = code(f"""
        def {f}({xs}):
            for i in range(1, len({xs})):
                if {xs}[i] < {xs}[i - 1]:
                    return False
            return True
    """)
    stages = (
        f"{f} compares each item of {xs} with the one before it. One drop means {xs} is not sorted.",
        lines(f"Input: {xs}, a list of integers.", "Output: True or False.", "Steps:",
              f"1. For i from 1 to len({xs}) - 1:", f"2. If {xs}[i] < {xs}[i - 1], return False.", "3. Return True."),
        lines(f"function {f}({xs}):", f"    for i in 1..len({xs}) - 1:",
              f"        if {xs}[i] < {xs}[i - 1]: return False", "    return True"),
        lines(f"Edge cases: an empty {xs} and a single item are sorted (True); equal neighbours are fine.",
              f"Invariant: when the loop reaches i, {xs}[:i] is sorted."),
    )  # fmt: skip
    inputs = [([],), ([rng.randint(0, 9)],), ([2, 1],)]
    for _ in range(9):
        items = int_list(rng, -5, 12, 2, 6)
        inputs.append((sorted(items) if rng.random() < 0.5 else items,))
    return Spec(f, prompt, src, stages, inputs)


# Held out: filter_greater reversed (keep small ones), then scale_list.
@family("filter_then_scale", "lists")
def filter_then_scale(rng):
    f = pick(rng, "filter_then_scale", "scale_small", "multiply_below", "small_times", "select_and_scale")
    xs = pick(rng, *LIST_PARAMS)
    t, k = rng.randint(0, 12), rng.randint(2, 6)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that keeps the elements of {xs} smaller than {t} and returns each of them multiplied by {k}.",
        f"Implement `{f}({xs})`, which selects the numbers in {xs} below {t} and returns them times {k}, in order.",
        f"Define `{f}({xs})` to return x * {k} for every item x of {xs} with x < {t}.",
    )
    src = code(f"""
        def {f}({xs}):
            return [x * {k} for x in {xs} if x < {t}]
    """)
    stages = (
        f"{f} first checks each x in {xs} against {t}; only items below {t} are kept, and each kept item is multiplied by {k}.",
        lines(f"Input: {xs}, a list of integers.", "Output: a new list.", "Steps:",
              f"1. For each x in {xs}, keep it if x < {t}.", f"2. Multiply each kept x by {k}.",
              "3. Return the products in order."),
        lines(f"function {f}({xs}):", f"    return [x * {k} for each x in {xs} if x < {t}]"),
        lines(f"Edge cases: an empty {xs} gives []; an item equal to {t} is dropped.",
              f"Invariant: every item of the result is divisible by {k} and len(result) <= len({xs})."),
    )  # fmt: skip
    inputs = [([],), ([t],)] + [(int_list(rng, t - 8, t + 8),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)
