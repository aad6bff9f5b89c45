"""Arithmetic families: formulas, ranges, digits, sums and products."""

from training.data.curriculum.base import INT_PARAMS, LIST_PARAMS, Spec, code, family, int_list, lines, pick


@family("affine", "arithmetic")
def affine(rng):
    f = pick(rng, "affine", "linear_map", "scale_and_shift", "apply_formula", "transform_number")
    n = pick(rng, *INT_PARAMS)
    a, b = rng.randint(2, 9), rng.randint(1, 20)
    op, verb, word = pick(rng, ("+", "add", "plus"), ("-", "subtract", "minus"))
    prompt = pick(
        rng,
        f"Write a Python function `{f}({n})` that returns {n} multiplied by {a}, {word} {b}.",
        f"Implement `{f}({n})`, which computes {a} * {n} {op} {b} for an integer {n} and returns it.",
        f"Define `{f}({n})`: multiply the integer {n} by {a}, then {verb} {b}, and return the result.",
    )
    src = code(f"""
        def {f}({n}):
            return {a} * {n} {op} {b}
    """)
    stages = (
        f"{f} is a linear formula: first multiply {n} by {a}, then {verb} {b}. One expression is enough.",
        lines(f"Input: {n}, an integer.", "Output: an integer.", "Steps:",
              f"1. Multiply {n} by {a}.", f"2. {verb.capitalize()} {b}.", "3. Return the value."),
        lines(f"function {f}({n}):", f"    return {a} * {n} {op} {b}"),
        lines(f"Edge cases: {n} = 0 gives {b if op == '+' else -b}; a negative {n} follows the same formula.",
              f"Invariant: {f}({n} + 1) - {f}({n}) == {a}."),
    )  # fmt: skip
    inputs = [(0,), (1,), (-1,)] + [(rng.randint(-50, 50),) for _ in range(9)]
    return Spec(f, prompt, src, stages, inputs)


@family("clamp_value", "arithmetic")
def clamp_value(rng):
    f = pick(rng, "clamp", "clamp_value", "limit_range", "bound_value", "keep_in_range")
    n = pick(rng, *INT_PARAMS)
    lo = rng.randint(-10, 10)
    hi = lo + rng.randint(5, 30)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({n})` that returns {n} clamped to the range {lo} to {hi}: "
        f"below {lo} gives {lo}, above {hi} gives {hi}.",
        f"Implement `{f}({n})`, which limits the integer {n} so that the result is never below {lo} and never above {hi}.",
        f"Define `{f}({n})` to return {lo} if {n} < {lo}, {hi} if {n} > {hi}, and {n} otherwise.",
    )
    src = code(f"""
        def {f}({n}):
            if {n} < {lo}:
                return {lo}
            if {n} > {hi}:
                return {hi}
            return {n}
    """)
    stages = (
        f"{f} keeps {n} inside [{lo}, {hi}]. Values below {lo} are raised to {lo}, values above {hi} "
        f"are lowered to {hi}, the rest pass through.",
        lines(f"Input: {n}, an integer.", f"Output: an integer from {lo} to {hi}.", "Steps:",
              f"1. If {n} < {lo}, return {lo}.", f"2. If {n} > {hi}, return {hi}.", f"3. Otherwise return {n}."),
        lines(f"function {f}({n}):", f"    if {n} < {lo}: return {lo}", f"    if {n} > {hi}: return {hi}",
              f"    return {n}"),
        lines(f"Edge cases: {n} equal to {lo} or {hi} is returned unchanged.",
              f"Invariant: {lo} <= {f}({n}) <= {hi}, and {f}({n}) == {n} when {n} is already in range."),
    )  # fmt: skip
    inputs = [(lo,), (hi,), (lo - 1,), (hi + 1,)] + [(rng.randint(lo - 20, hi + 20),) for _ in range(8)]
    return Spec(f, prompt, src, stages, inputs)


@family("abs_difference", "arithmetic")
def abs_difference(rng):
    f = pick(rng, "abs_difference", "distance", "abs_diff", "gap_between", "absolute_gap")
    a, b = pick(rng, ("a", "b"), ("x", "y"), ("m", "n"), ("first", "second"), ("p", "q"))
    prompt = pick(
        rng,
        f"Write a Python function `{f}({a}, {b})` that returns the absolute difference between the integers {a} and {b}.",
        f"Implement `{f}({a}, {b})`, which returns how far apart {a} and {b} are on the number line, as a non-negative integer.",
        f"Define `{f}({a}, {b})` to return {a} - {b} if {a} is larger, and {b} - {a} otherwise.",
        f"Create a function `{f}({a}, {b})` that returns the distance |{a} - {b}| between two integers.",
    )
    src = code(f"""
        def {f}({a}, {b}):
            if {a} > {b}:
                return {a} - {b}
            return {b} - {a}
    """)
    stages = (
        f"{f} measures the gap between {a} and {b}. Subtract the smaller from the larger so the answer is never negative.",
        lines(f"Input: integers {a} and {b}.", "Output: a non-negative integer.", "Steps:",
              f"1. Compare {a} and {b}.", f"2. If {a} > {b}, return {a} - {b}.", f"3. Otherwise return {b} - {a}."),
        lines(f"function {f}({a}, {b}):", f"    if {a} > {b}: return {a} - {b}", f"    return {b} - {a}"),
        lines(f"Edge cases: equal {a} and {b} give 0; negative inputs work the same way.",
              f"Invariant: {f}({a}, {b}) == {f}({b}, {a}) and the result is >= 0."),
    )  # fmt: skip
    same = rng.randint(-9, 9)
    inputs = [(0, 0), (same, same)] + [(rng.randint(-30, 30), rng.randint(-30, 30)) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


@family("sum_to_n", "arithmetic")
def sum_to_n(rng):
    f = pick(rng, "sum_to_n", "sum_up_to", "triangle_number", "total_through", "sum_first")
    n = pick(rng, "n", "limit", "count", "top", "m")
    prompt = pick(
        rng,
        f"Write a Python function `{f}({n})` that returns the sum of all integers from 1 to {n} inclusive.",
        f"Implement `{f}({n})`, which adds up 1 + 2 + ... + {n} and returns the total (0 when {n} is 0).",
        f"Define `{f}({n})` to return the total of the whole numbers 1 through {n}.",
        f"Create a function `{f}({n})` that loops from 1 to {n} and returns the sum of those numbers.",
    )
    src = code(f"""
        def {f}({n}):
            total = 0
            for i in range(1, {n} + 1):
                total += i
            return total
    """)
    stages = (
        f"{f} adds every integer from 1 up to {n}. A running total over range(1, {n} + 1) gives the answer.",
        lines(f"Input: {n}, a non-negative integer.", "Output: an integer.", "Steps:",
              "1. Set total = 0.", f"2. For i from 1 to {n}, add i to total.", "3. Return total."),
        lines(f"function {f}({n}):", "    total = 0", f"    for i in 1..{n}: total += i", "    return total"),
        lines(f"Edge cases: {n} = 0 gives 0, {n} = 1 gives 1.",
              f"Invariant: after adding i, total == i * (i + 1) / 2, so the result is {n} * ({n} + 1) / 2."),
    )  # fmt: skip
    inputs = [(0,), (1,)] + [(rng.randint(2, 40),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


@family("digit_sum", "arithmetic")
def digit_sum(rng):
    f = pick(rng, "digit_sum", "sum_digits", "add_digits", "digits_total", "sum_of_digits")
    n = pick(rng, "n", "num", "number", "value", "x")
    prompt = pick(
        rng,
        f"Write a Python function `{f}({n})` that returns the sum of the decimal digits of the non-negative integer {n}.",
        f"Implement `{f}({n})`, which adds up the digits of {n} (for example 123 gives 6) and returns the total.",
        f"Define `{f}({n})` to return the total of all digits in the non-negative integer {n}.",
        f"Create a function `{f}({n})` that splits {n} into its digits and returns their sum.",
    )
    src = code(f"""
        def {f}({n}):
            total = 0
            for d in str({n}):
                total += int(d)
            return total
    """)
    stages = (
        f"{f} adds the digits of {n}. Turning {n} into a string makes the digits easy to loop over.",
        lines(f"Input: {n}, a non-negative integer.", "Output: an integer.", "Steps:",
              "1. Set total = 0.", f"2. For each digit character d in str({n}), add int(d).", "3. Return total."),
        lines(f"function {f}({n}):", "    total = 0", f"    for d in digits of {n}: total += d", "    return total"),
        lines(f"Edge cases: {n} = 0 gives 0; a one-digit {n} returns itself.",
              f"Invariant: 0 <= result <= 9 * (number of digits of {n})."),
    )  # fmt: skip
    inputs = [(0,), (rng.randint(1, 9),)] + [(rng.randint(10, 10 ** rng.randint(2, 6)),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


# RL-only: sum_list + is_multiple.
@family("sum_of_multiples", "arithmetic")
def sum_of_multiples(rng):
    f = pick(rng, "sum_of_multiples", "sum_divisible", "add_multiples", "total_of_multiples", "multiples_sum")
    xs = pick(rng, *LIST_PARAMS)
    k = rng.randint(2, 7)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns the sum of the elements of {xs} that are divisible by {k}.",
        f"Implement `{f}({xs})`, which adds up only the numbers in {xs} that are multiples of {k} and returns the total.",
        f"Define `{f}({xs})` to return the total of every item of {xs} that leaves no remainder when divided by {k}.",
    )
    src = code(f"""
        def {f}({xs}):
            total = 0
            for x in {xs}:
                if x % {k} == 0:
                    total += x
            return total
    """)
    stages = (
        f"{f} keeps only the multiples of {k} in {xs} and sums them. Numbers with a remainder when divided by {k} are skipped.",
        lines(f"Input: {xs}, a list of integers.", "Output: an integer.", "Steps:",
              "1. Set total = 0.", f"2. For each x in {xs}, if x % {k} == 0, add x.", "3. Return total."),
        lines(f"function {f}({xs}):", "    total = 0", f"    for x in {xs}:",
              f"        if x mod {k} == 0: total += x", "    return total"),
        lines(f"Edge cases: an empty {xs} or no multiples of {k} gives 0; 0 counts as a multiple.",
              f"Invariant: total only changes by multiples of {k}, so {f}({xs}) % {k} == 0."),
    )  # fmt: skip
    inputs = [([],), ([k + 1],), ([0, k],)] + [(int_list(rng, -10, 30),) for _ in range(9)]
    return Spec(f, prompt, src, stages, inputs)


# Held out: sum_of_squares with a product instead of a sum.
@family("product_list", "arithmetic")
def product_list(rng):
    f = pick(rng, "product_list", "multiply_list", "product_of", "list_product", "multiply_together")
    xs = pick(rng, *LIST_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns the product of all numbers in {xs}, or 1 if {xs} is empty.",
        f"Implement `{f}({xs})`, which multiplies every element of the list {xs} together and returns the result (1 for an empty list).",
        f"Define `{f}({xs})` to return the result of multiplying all the integers in {xs}, starting from 1.",
        f"Create a function `{f}({xs})` that starts from 1, multiplies it by each item of {xs} and returns the product.",
    )
    src = code(f"""
        def {f}({xs}):
            result = 1
            for x in {xs}:
                result *= x
            return result
    """)
    stages = (
        f"{f} multiplies all numbers in {xs}. Start from 1, the neutral value for products, and multiply by each item.",
        lines(f"Input: {xs}, a list of integers.", "Output: an integer.", "Steps:",
              "1. Set result = 1.", f"2. For each x in {xs}, multiply result by x.", "3. Return result."),
        lines(f"function {f}({xs}):", "    result = 1", f"    for x in {xs}: result *= x", "    return result"),
        lines(f"Edge cases: an empty {xs} gives 1; any 0 in {xs} gives 0.",
              f"Invariant: after i items, result is the product of the first i items of {xs}."),
    )  # fmt: skip
    inputs = [([],), ([rng.randint(2, 9)],), ([0, rng.randint(1, 9)],)] + [
        (int_list(rng, -5, 9, 2, 5),) for _ in range(9)
    ]
    return Spec(f, prompt, src, stages, inputs)


# Held out: digit_sum + count_occurrences.
@family("count_digit", "arithmetic")
def count_digit(rng):
    f = pick(rng, "count_digit", "digit_occurrences", "digit_frequency", "times_digit_appears", "tally_digit")
    n = pick(rng, "n", "num", "number", "value", "x")
    d = rng.randint(0, 9)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({n})` that returns how many times the digit {d} appears in the non-negative integer {n}.",
        f"Implement `{f}({n})`, which counts the digits of {n} that are equal to {d} and returns the count.",
        f"Define `{f}({n})` to return the number of {d} digits in the decimal form of {n}.",
    )
    src = code(f"""
        def {f}({n}):
            count = 0
            for c in str({n}):
                if c == "{d}":
                    count += 1
            return count
    """)
    stages = (
        f"{f} looks at each digit of {n} and counts the ones equal to {d}. Reading str({n}) gives the digits as characters.",
        lines(f"Input: {n}, a non-negative integer.", "Output: an integer count.", "Steps:",
              "1. Set count = 0.", f"2. For each character c in str({n}), if c is \"{d}\", add 1.", "3. Return count."),
        lines(f"function {f}({n}):", "    count = 0", f"    for c in digits of {n}:",
              f"        if c == {d}: count += 1", "    return count"),
        lines(f"Edge cases: {n} = 0 has one digit 0; a number without {d} gives 0.",
              f"Invariant: 0 <= {f}({n}) <= number of digits of {n}."),
    )  # fmt: skip
    digits = "0123456789" + str(d) * 4
    inputs = [(0,), (d,)] + [
        (int(str(rng.randint(1, 9)) + "".join(rng.choice(digits) for _ in range(rng.randint(1, 6)))),) for _ in range(10)
    ]
    return Spec(f, prompt, src, stages, inputs)
