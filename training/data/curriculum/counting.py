"""Counting families: count items or characters that satisfy a condition."""

from training.data.curriculum.base import (
    LIST_PARAMS, SENTENCE_PARAMS, STR_PARAMS, Spec, code, family, int_list, letters, lines, pick, sentence,
)  # fmt: skip
from training.data.curriculum.searching import LIST_TARGET_PARAMS


@family("count_vowels", "counting")
def count_vowels(rng):
    f = pick(rng, "count_vowels", "vowel_count", "num_vowels", "how_many_vowels", "tally_vowels")
    s = pick(rng, *STR_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({s})` that returns how many vowels (a, e, i, o, u) the lowercase string {s} contains.",
        f"Implement `{f}({s})`, which counts the characters of {s} that are in 'aeiou' and returns the count.",
        f"Define `{f}({s})` to return the number of vowels in the text {s}.",
        f"Create a function `{f}({s})` that loops over {s} and counts each a, e, i, o or u.",
    )
    src = code(f"""
        def {f}({s}):
            count = 0
            for ch in {s}:
                if ch in "aeiou":
                    count += 1
            return count
    """)
    stages = (
        f"{f} looks at every character of {s} and adds one when it is a vowel. Membership in 'aeiou' is the test.",
        lines(f"Input: {s}, a lowercase string.", "Output: an integer count.", "Steps:", "1. Set count = 0.",
              f"2. For each ch in {s}, if ch in 'aeiou', add 1.", "3. Return count."),
        lines(f"function {f}({s}):", "    count = 0", f"    for ch in {s}:",
              "        if ch in 'aeiou': count += 1", "    return count"),
        lines(f"Edge cases: an empty {s} gives 0; a word without vowels gives 0.",
              f"Invariant: 0 <= count <= len({s}), and count only grows."),
    )  # fmt: skip
    inputs = [("",), ("xyz",), ("aeiou",)] + [(letters(rng, 1, 9),) for _ in range(9)]
    return Spec(f, prompt, src, stages, inputs)


@family("count_occurrences", "counting")
def count_occurrences(rng):
    f = pick(rng, "count_occurrences", "count_of", "how_many", "tally", "frequency_of")
    xs, target = pick(rng, *LIST_TARGET_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs}, {target})` that returns how many times {target} appears in the list {xs}.",
        f"Implement `{f}({xs}, {target})`, which counts the items of {xs} equal to {target} and returns the count.",
        f"Define `{f}({xs}, {target})` to return the number of positions i where {xs}[i] == {target}.",
    )
    src = code(f"""
        def {f}({xs}, {target}):
            count = 0
            for x in {xs}:
                if x == {target}:
                    count += 1
            return count
    """)
    stages = (
        f"{f} walks {xs} and adds one for every item equal to {target}.",
        lines(f"Input: {xs}, a list, and {target}, a value.", "Output: an integer count.", "Steps:",
              "1. Set count = 0.", f"2. For each x in {xs}, if x == {target}, add 1.", "3. Return count."),
        lines(f"function {f}({xs}, {target}):", "    count = 0", f"    for x in {xs}:",
              f"        if x == {target}: count += 1", "    return count"),
        lines(f"Edge cases: an empty {xs} gives 0; {target} missing gives 0.",
              f"Invariant: 0 <= count <= len({xs})."),
    )  # fmt: skip
    inputs = [([], 1), ([2, 2, 2], 2)]
    for _ in range(10):
        items = int_list(rng, 0, 5, 1, 8)
        inputs.append((items, rng.randint(0, 5)))
    return Spec(f, prompt, src, stages, inputs)


@family("count_multiples", "counting")
def count_multiples(rng):
    f = pick(rng, "count_multiples", "count_divisible", "how_many_multiples", "multiples_count", "tally_divisible")
    xs = pick(rng, *LIST_PARAMS)
    k = rng.randint(2, 7)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns how many elements of {xs} are divisible by {k}.",
        f"Implement `{f}({xs})`, which counts the numbers in {xs} that are multiples of {k} and returns the count.",
        f"Define `{f}({xs})` to return the number of items x in {xs} with x % {k} == 0.",
    )
    src = code(f"""
        def {f}({xs}):
            count = 0
            for x in {xs}:
                if x % {k} == 0:
                    count += 1
            return count
    """)
    stages = (
        f"{f} checks each number of {xs} for a zero remainder when divided by {k}, and counts those that have one.",
        lines(f"Input: {xs}, a list of integers.", "Output: an integer count.", "Steps:", "1. Set count = 0.",
              f"2. For each x in {xs}, if x % {k} == 0, add 1.", "3. Return count."),
        lines(f"function {f}({xs}):", "    count = 0", f"    for x in {xs}:",
              f"        if x mod {k} == 0: count += 1", "    return count"),
        lines(f"Edge cases: an empty {xs} gives 0; 0 is a multiple of {k}.",
              f"Invariant: 0 <= count <= len({xs})."),
    )  # fmt: skip
    inputs = [([],), ([0],), ([k + 1],)] + [(int_list(rng, -10, 30),) for _ in range(9)]
    return Spec(f, prompt, src, stages, inputs)


# RL-only: count_multiples' counting loop over the words of a sentence.
@family("count_long_words", "counting")
def count_long_words(rng):
    f = pick(rng, "count_long_words", "long_word_count", "words_longer_than", "count_big_words", "tally_long_words")
    s = pick(rng, *SENTENCE_PARAMS)
    k = rng.randint(2, 5)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({s})` that returns how many space-separated words in {s} have more than {k} letters.",
        f"Implement `{f}({s})`, which splits {s} into words and counts those longer than {k} characters.",
        f"Define `{f}({s})` to return the number of words w in {s} with len(w) > {k}.",
    )
    src = code(f"""
        def {f}({s}):
            count = 0
            for w in {s}.split():
                if len(w) > {k}:
                    count += 1
            return count
    """)
    stages = (
        f"{f} splits {s} into words and adds one for each word whose length is greater than {k}.",
        lines(f"Input: {s}, words separated by spaces.", "Output: an integer count.", "Steps:", "1. Set count = 0.",
              f"2. For each w in {s}.split(), if len(w) > {k}, add 1.", "3. Return count."),
        lines(f"function {f}({s}):", "    count = 0", f"    for w in split({s}):",
              f"        if len(w) > {k}: count += 1", "    return count"),
        lines(f"Edge cases: an empty {s} gives 0; a word of exactly {k} letters is not counted.",
              f"Invariant: 0 <= count <= number of words in {s}."),
    )  # fmt: skip
    inputs = [("",), ("a" * k,), ("b" * (k + 1),)] + [(sentence(rng, 1, 6),) for _ in range(9)]
    return Spec(f, prompt, src, stages, inputs)


# Held out: count_vowels with one given letter instead of a set.
@family("count_letter", "counting")
def count_letter(rng):
    f = pick(rng, "count_letter", "letter_count", "count_char", "times_letter_appears", "tally_letter")
    s = pick(rng, *STR_PARAMS)
    c = rng.choice("abcdeilmnorst")
    prompt = pick(
        rng,
        f"Write a Python function `{f}({s})` that returns how many times the letter '{c}' appears in the string {s}.",
        f"Implement `{f}({s})`, which counts the characters of {s} equal to '{c}' and returns the count.",
        f"Define `{f}({s})` to return the number of '{c}' characters in the text {s}.",
    )
    src = code(f"""
        def {f}({s}):
            count = 0
            for ch in {s}:
                if ch == "{c}":
                    count += 1
            return count
    """)
    stages = (
        f"{f} looks at every character of {s} and adds one when it is '{c}'.",
        lines(f"Input: {s}, a string.", "Output: an integer count.", "Steps:", "1. Set count = 0.",
              f"2. For each ch in {s}, if ch == '{c}', add 1.", "3. Return count."),
        lines(f"function {f}({s}):", "    count = 0", f"    for ch in {s}:",
              f"        if ch == '{c}': count += 1", "    return count"),
        lines(f"Edge cases: an empty {s} gives 0; {s} without '{c}' gives 0.",
              f"Invariant: 0 <= count <= len({s})."),
    )  # fmt: skip
    alphabet = "abcdeilmnorst" + c * 4
    inputs = [("",), (c,), (c * 3,)] + [(letters(rng, 1, 9, alphabet),) for _ in range(9)]
    return Spec(f, prompt, src, stages, inputs)


# Held out: count_multiples' loop with clamp_value's two bounds.
@family("count_in_range", "counting")
def count_in_range(rng):
    f = pick(rng, "count_in_range", "count_between", "how_many_in_range", "in_range_count", "tally_between")
    xs = pick(rng, *LIST_PARAMS)
    lo = rng.randint(-5, 10)
    hi = lo + rng.randint(2, 10)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({xs})` that returns how many elements of {xs} lie between {lo} and {hi}, inclusive.",
        f"Implement `{f}({xs})`, which counts the numbers x in {xs} with {lo} <= x <= {hi} and returns the count.",
        f"Define `{f}({xs})` to return the number of items of {xs} that are at least {lo} and at most {hi}.",
    )
    src = code(f"""
        def {f}({xs}):
            count = 0
            for x in {xs}:
                if {lo} <= x <= {hi}:
                    count += 1
            return count
    """)
    stages = (
        f"{f} checks each number of {xs} against both bounds, {lo} and {hi}, and counts the ones inside.",
        lines(f"Input: {xs}, a list of integers.", "Output: an integer count.", "Steps:", "1. Set count = 0.",
              f"2. For each x in {xs}, if {lo} <= x <= {hi}, add 1.", "3. Return count."),
        lines(f"function {f}({xs}):", "    count = 0", f"    for x in {xs}:",
              f"        if {lo} <= x <= {hi}: count += 1", "    return count"),
        lines(f"Edge cases: an empty {xs} gives 0; {lo} and {hi} themselves are counted.",
              f"Invariant: 0 <= count <= len({xs})."),
    )  # fmt: skip
    inputs = [([],), ([lo, hi],), ([lo - 1, hi + 1],)] + [(int_list(rng, lo - 8, hi + 8),) for _ in range(9)]
    return Spec(f, prompt, src, stages, inputs)
