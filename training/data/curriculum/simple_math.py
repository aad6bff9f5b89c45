"""Simple math families: divisibility, factorials, GCD/LCM, Fibonacci, primes.

(Named simple_math so that it can never shadow the standard `math` module.)
"""

from training.data.curriculum.base import INT_PARAMS, Spec, code, family, lines, pick

PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97)


@family("is_multiple", "math")
def is_multiple(rng):
    f = pick(rng, "is_divisible", "is_multiple", "divides_evenly", "check_divisible", "has_factor")
    n = pick(rng, *INT_PARAMS)
    k = rng.randint(2, 12)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({n})` that returns True if the integer {n} is divisible by {k} and False otherwise.",
        f"Implement `{f}({n})`, which checks whether {n} is a multiple of {k} and returns a boolean.",
        f"Define `{f}({n})` to return True when {n} leaves no remainder when divided by {k}, else False.",
    )
    src = code(f"""
        def {f}({n}):
            return {n} % {k} == 0
    """)
    stages = (
        f"{f} asks whether {k} divides {n} with no remainder. The % operator gives the remainder, so compare it with 0.",
        lines(f"Input: {n}, an integer.", "Output: True or False.", "Steps:",
              f"1. Compute {n} % {k}.", "2. Return True if it is 0, else False."),
        lines(f"function {f}({n}):", f"    return ({n} mod {k}) == 0"),
        lines(f"Edge cases: {n} = 0 is divisible (True); negative multiples of {k} are True too.",
              f"Invariant: {f}({n}) == {f}({n} + {k})."),
    )  # fmt: skip
    inputs = [(0,), (k,), (k + 1,)] + [
        (rng.randint(-10, 10) * k if rng.random() < 0.5 else rng.randint(-60, 60),) for _ in range(9)
    ]
    return Spec(f, prompt, src, stages, inputs)


@family("factorial", "math")
def factorial(rng):
    f = pick(rng, "factorial", "fact", "product_up_to", "compute_factorial", "factorial_of")
    n = pick(rng, "n", "num", "k", "m", "number")
    prompt = pick(
        rng,
        f"Write a Python function `{f}({n})` that returns the factorial of the non-negative integer {n}, that is 1 * 2 * ... * {n}.",
        f"Implement `{f}({n})`, which returns {n}! (the product of 1 through {n}), with 0! equal to 1.",
        f"Define `{f}({n})` to multiply all integers from 1 to {n} and return the product (1 when {n} is 0).",
        f"Create a function `{f}({n})` that computes {n} factorial with a loop and returns it.",
    )
    src = code(f"""
        def {f}({n}):
            result = 1
            for i in range(2, {n} + 1):
                result *= i
            return result
    """)
    stages = (
        f"{f} multiplies the numbers 1 to {n}. Starting from 1 makes {n} = 0 work without a special case.",
        lines(f"Input: {n}, a non-negative integer.", "Output: an integer.", "Steps:",
              "1. Set result = 1.", f"2. For i from 2 to {n}, multiply result by i.", "3. Return result."),
        lines(f"function {f}({n}):", "    result = 1", f"    for i in 2..{n}: result *= i", "    return result"),
        lines(f"Edge cases: {n} = 0 and {n} = 1 both give 1.",
              f"Invariant: after step i, result == i!, so {f}({n}) == {n} * {f}({n} - 1) for {n} >= 1."),
    )  # fmt: skip
    inputs = [(0,), (1,)] + [(n_,) for n_ in rng.sample(range(2, 15), 10)]
    return Spec(f, prompt, src, stages, inputs)


@family("gcd", "math")
def gcd(rng):
    f = pick(rng, "gcd", "greatest_common_divisor", "common_divisor", "find_gcd", "highest_common_factor")
    a, b = pick(rng, ("a", "b"), ("x", "y"), ("m", "n"), ("p", "q"), ("first", "second"))
    prompt = pick(
        rng,
        f"Write a Python function `{f}({a}, {b})` that returns the greatest common divisor of the non-negative integers {a} and {b}.",
        f"Implement `{f}({a}, {b})`, which returns the largest integer that divides both {a} and {b}, using Euclid's algorithm.",
        f"Define `{f}({a}, {b})` to return the GCD of {a} and {b}; when {b} is 0 the answer is {a}.",
        f"Create a function `{f}({a}, {b})` that finds the biggest common factor of two non-negative integers {a} and {b}.",
    )
    src = code(f"""
        def {f}({a}, {b}):
            while {b} != 0:
                {a}, {b} = {b}, {a} % {b}
            return {a}
    """)
    stages = (
        f"{f} uses Euclid's idea: the GCD of {a} and {b} equals the GCD of {b} and {a} % {b}. "
        f"Repeat until {b} is 0; then {a} is the answer.",
        lines(f"Input: non-negative integers {a} and {b}.", "Output: an integer.", "Steps:",
              f"1. While {b} != 0, set {a}, {b} = {b}, {a} % {b}.", f"2. Return {a}."),
        lines(f"function {f}({a}, {b}):", f"    while {b} != 0:", f"        ({a}, {b}) = ({b}, {a} mod {b})",
              f"    return {a}"),
        lines(f"Edge cases: {f}({a}, 0) == {a}; equal inputs return that value.",
              f"Invariant: the GCD of the pair never changes in the loop, and {b} shrinks every step."),
    )  # fmt: skip
    inputs = [(rng.randint(1, 30), 0), (0, rng.randint(1, 30)), (12, 12)]
    for _ in range(9):
        g = rng.randint(1, 9)
        inputs.append((g * rng.randint(1, 15), g * rng.randint(1, 15)))
    return Spec(f, prompt, src, stages, inputs)


@family("fibonacci", "math")
def fibonacci(rng):
    f = pick(rng, "fibonacci", "fib", "nth_fibonacci", "fib_number", "fibo")
    n = pick(rng, "n", "index", "k", "position", "i")
    prompt = pick(
        rng,
        f"Write a Python function `{f}({n})` that returns the {n}-th Fibonacci number, where {f}(0) is 0 and {f}(1) is 1.",
        f"Implement `{f}({n})`, which returns Fibonacci number {n} of the sequence 0, 1, 1, 2, 3, 5, ...",
        f"Define `{f}({n})` to compute the Fibonacci number at index {n} with a loop (index 0 gives 0, index 1 gives 1).",
        f"Create a function `{f}({n})` that returns element {n} of the Fibonacci sequence starting 0, 1.",
    )
    src = code(f"""
        def {f}({n}):
            a, b = 0, 1
            for _ in range({n}):
                a, b = b, a + b
            return a
    """)
    stages = (
        f"{f} walks the Fibonacci sequence {n} steps. Keep the last two numbers; each step the next one is their sum.",
        lines(f"Input: {n}, a non-negative integer.", "Output: an integer.", "Steps:",
              "1. Set a, b = 0, 1.", f"2. Repeat {n} times: a, b = b, a + b.", "3. Return a."),
        lines(f"function {f}({n}):", "    (a, b) = (0, 1)", f"    repeat {n} times: (a, b) = (b, a + b)", "    return a"),
        lines(f"Edge cases: {n} = 0 gives 0, {n} = 1 gives 1.",
              f"Invariant: after j steps a == F(j) and b == F(j + 1), so {f}({n}) == {f}({n} - 1) + {f}({n} - 2)."),
    )  # fmt: skip
    inputs = [(0,), (1,), (2,)] + [(n_,) for n_ in rng.sample(range(3, 26), 9)]
    return Spec(f, prompt, src, stages, inputs)


# RL-only: is_multiple tried for every candidate divisor.
@family("is_prime", "math")
def is_prime(rng):
    f = pick(rng, "is_prime", "check_prime", "prime_test", "is_prime_number", "prime")
    n = pick(rng, *INT_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({n})` that returns True if the integer {n} is a prime number and False otherwise.",
        f"Implement `{f}({n})`, which checks whether {n} has exactly two divisors, 1 and itself, and returns a boolean.",
        f"Define `{f}({n})` to return True when {n} is prime; numbers below 2 are not prime.",
        f"Create a function `{f}({n})` that tells whether {n} is prime by trying every divisor from 2 to {n} - 1.",
    )
    src = code(f"""
        def {f}({n}):
            if {n} < 2:
                return False
            for d in range(2, {n}):
                if {n} % d == 0:
                    return False
            return True
    """)
    stages = (
        f"{f} checks that nothing between 2 and {n} - 1 divides {n}. Numbers below 2 are never prime.",
        lines(f"Input: {n}, an integer.", "Output: True or False.", "Steps:",
              f"1. If {n} < 2, return False.", f"2. For d from 2 to {n} - 1, if {n} % d == 0, return False.",
              "3. Return True."),
        lines(f"function {f}({n}):", f"    if {n} < 2: return False", f"    for d in 2..{n} - 1:",
              f"        if {n} mod d == 0: return False", "    return True"),
        lines(f"Edge cases: 0, 1 and negative {n} give False; 2 is the smallest prime.",
              f"Invariant: when the loop reaches d, no number from 2 to d - 1 divides {n}."),
    )  # fmt: skip
    inputs = [(0,), (1,), (2,)] + [
        (rng.choice(PRIMES) if rng.random() < 0.5 else rng.randint(4, 100),) for _ in range(12)
    ]
    return Spec(f, prompt, src, stages, inputs)


# Held out: gcd, then a * b // gcd.
@family("lcm", "math")
def lcm(rng):
    f = pick(rng, "lcm", "least_common_multiple", "lowest_common_multiple", "find_lcm", "smallest_common_multiple")
    a, b = pick(rng, ("a", "b"), ("m", "n"), ("p", "q"), ("first", "second"), ("u", "v"))
    prompt = pick(
        rng,
        f"Write a Python function `{f}({a}, {b})` that returns the least common multiple of the positive integers {a} and {b}.",
        f"Implement `{f}({a}, {b})`, which returns the smallest positive number divisible by both {a} and {b}.",
        f"Define `{f}({a}, {b})` to return {a} * {b} divided by the greatest common divisor of {a} and {b}.",
    )
    src = code(f"""
        def {f}({a}, {b}):
            x, y = {a}, {b}
            while y != 0:
                x, y = y, x % y
            return {a} * {b} // x
    """)
    stages = (
        f"{f} finds the GCD of {a} and {b} with Euclid's loop, then {a} * {b} // gcd is the least common multiple.",
        lines(f"Input: positive integers {a} and {b}.", "Output: an integer.", "Steps:",
              f"1. Copy x, y = {a}, {b}.", "2. While y != 0: x, y = y, x % y.", f"3. Return {a} * {b} // x."),
        lines(f"function {f}({a}, {b}):", f"    g = gcd of {a} and {b} (Euclid)", f"    return {a} * {b} // g"),
        lines(f"Edge cases: {f}(1, {b}) == {b}; equal inputs return that value.",
              f"Invariant: the result is divisible by both {a} and {b} and is at most {a} * {b}."),
    )  # fmt: skip
    inputs = [(1, rng.randint(2, 12)), (6, 6)]
    for _ in range(10):
        g = rng.randint(1, 6)
        inputs.append((g * rng.randint(1, 9), g * rng.randint(1, 9)))
    return Spec(f, prompt, src, stages, inputs)
