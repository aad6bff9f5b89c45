"""Dictionary families: counting into a dict, inverting, filtering and summing values."""

from training.data.curriculum.base import DICT_PARAMS, SENTENCE_PARAMS, Spec, code, family, lines, pick, sentence, word_dict

FEW_WORDS = ("cat", "dog", "sun", "red", "tree", "moon")  # a small vocabulary, so words repeat


@family("word_count", "dicts")
def word_count(rng):
    f = pick(rng, "word_count", "count_words", "word_frequencies", "tally_words", "word_histogram")
    s = pick(rng, *SENTENCE_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({s})` that returns a dict mapping each word of {s} to the number of times it appears.",
        f"Implement `{f}({s})`, which splits {s} on spaces and counts every word, returning the counts as a dictionary.",
        f"Define `{f}({s})` to return {{word: count}} for the space-separated words in {s}.",
    )
    src = code(f"""
        def {f}({s}):
            counts = {{}}
            for w in {s}.split():
                counts[w] = counts.get(w, 0) + 1
            return counts
    """)
    stages = (
        f"{f} splits {s} into words and counts them in a dict. counts.get(w, 0) + 1 handles a word seen for the first time.",
        lines(f"Input: {s}, words separated by spaces.", "Output: a dict from word to count.", "Steps:",
              "1. Start with counts = {}.", f"2. For each w in {s}.split(), add 1 to counts[w].", "3. Return counts."),
        lines(f"function {f}({s}):", "    counts = empty dict", f"    for w in split({s}):",
              "        counts[w] = counts.get(w, 0) + 1", "    return counts"),
        lines(f"Edge cases: an empty {s} gives {{}}; a repeated word counts more than once.",
              f"Invariant: the counts add up to the number of words in {s}."),
    )  # fmt: skip
    inputs = [("",), (rng.choice(FEW_WORDS),)] + [(sentence(rng, 2, 6, FEW_WORDS),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


@family("invert_dict", "dicts")
def invert_dict(rng):
    f = pick(rng, "invert_dict", "swap_keys_values", "reverse_mapping", "flip_dict", "inverse_map")
    d = pick(rng, *DICT_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({d})` that returns a new dict with the keys and values of {d} swapped; all values are distinct.",
        f"Implement `{f}({d})`, which turns every pair key: value of the dictionary {d} into value: key.",
        f"Define `{f}({d})` to return the inverse of {d}, mapping each value back to its key.",
    )
    src = code(f"""
        def {f}({d}):
            return {{value: key for key, value in {d}.items()}}
    """)
    stages = (
        f"{f} builds a new dict from the pairs of {d}, using each value as the key and the key as the value.",
        lines(f"Input: {d}, a dict with distinct values.", "Output: a new dict.", "Steps:",
              f"1. Go through the pairs (key, value) of {d}.", "2. Store key under value in the new dict.",
              "3. Return the new dict."),
        lines(f"function {f}({d}):", f"    return {{value: key for each (key, value) in {d}}}"),
        lines(f"Edge cases: an empty {d} gives {{}}.",
              f"Invariant: len(result) == len({d}) and result[{d}[key]] == key for every key."),
    )  # fmt: skip
    inputs = [({},)] + [(word_dict(rng, 1, 4, 0, 30, unique_values=True),) for _ in range(11)]
    return Spec(f, prompt, src, stages, inputs)


@family("filter_dict_by_value", "dicts")
def filter_dict_by_value(rng):
    f = pick(rng, "filter_dict", "keep_large_values", "select_items", "entries_at_least", "big_entries")
    d = pick(rng, *DICT_PARAMS)
    t = rng.randint(1, 15)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({d})` that returns a new dict with only the items of {d} whose value is at least {t}.",
        f"Implement `{f}({d})`, which keeps the key: value pairs of {d} with value >= {t} and returns them as a dict.",
        f"Define `{f}({d})` to return {d} without the entries whose value is below {t}.",
    )
    src = code(f"""
        def {f}({d}):
            return {{key: value for key, value in {d}.items() if value >= {t}}}
    """)
    stages = (
        f"{f} copies the pairs of {d} whose value is {t} or more. A dict comprehension with a condition does it.",
        lines(f"Input: {d}, a dict from strings to integers.", "Output: a new dict.", "Steps:",
              f"1. Go through the pairs (key, value) of {d}.", f"2. Keep a pair if value >= {t}.",
              "3. Return the kept pairs as a dict."),
        lines(f"function {f}({d}):", f"    return {{key: value for each (key, value) in {d} if value >= {t}}}"),
        lines(f"Edge cases: an empty {d} gives {{}}; a value equal to {t} is kept.",
              f"Invariant: every value in the result is >= {t} and every key comes from {d}."),
    )  # fmt: skip
    inputs = [({},)] + [(word_dict(rng, 1, 5, 0, 2 * t + 2),) for _ in range(11)]
    return Spec(f, prompt, src, stages, inputs)


@family("sum_dict_values", "dicts")
def sum_dict_values(rng):
    f = pick(rng, "sum_values", "total_of_values", "dict_total", "add_values", "sum_dict_values")
    d = pick(rng, *DICT_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({d})` that returns the sum of all values in the dictionary {d}.",
        f"Implement `{f}({d})`, which adds up the integer values of {d} and returns the total (0 for an empty dict).",
        f"Define `{f}({d})` to return the total of every value stored in {d}, ignoring the keys.",
        f"Create a function `{f}({d})` that loops over the values of {d} and returns their sum.",
    )
    src = code(f"""
        def {f}({d}):
            total = 0
            for value in {d}.values():
                total += value
            return total
    """)
    stages = (
        f"{f} only needs the values of {d}, not the keys. Add each value to a running total.",
        lines(f"Input: {d}, a dict from strings to integers.", "Output: an integer.", "Steps:",
              "1. Set total = 0.", f"2. For each value in {d}.values(), add it.", "3. Return total."),
        lines(f"function {f}({d}):", "    total = 0", f"    for value in values of {d}: total += value",
              "    return total"),
        lines(f"Edge cases: an empty {d} gives 0; negative values lower the total.",
              f"Invariant: after i values, total is the sum of the first i values of {d}."),
    )  # fmt: skip
    inputs = [({},)] + [(word_dict(rng, 1, 5, -5, 20),) for _ in range(11)]
    return Spec(f, prompt, src, stages, inputs)


# RL-only: filter_dict_by_value, but returning sorted keys.
@family("keys_above", "dicts")
def keys_above(rng):
    f = pick(rng, "keys_above", "keys_over", "big_keys", "keys_with_large_values", "select_keys")
    d = pick(rng, *DICT_PARAMS)
    t = rng.randint(1, 15)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({d})` that returns a sorted list of the keys of {d} whose value is greater than {t}.",
        f"Implement `{f}({d})`, which collects the keys of the dictionary {d} with values above {t} and returns them in sorted order.",
        f"Define `{f}({d})` to return, alphabetically sorted, every key of {d} that maps to a number bigger than {t}.",
    )
    src = code(f"""
        def {f}({d}):
            result = []
            for key, value in {d}.items():
                if value > {t}:
                    result.append(key)
            return sorted(result)
    """)
    stages = (
        f"{f} checks every pair of {d} and keeps the key when its value is above {t}; sorting makes the order fixed.",
        lines(f"Input: {d}, a dict from strings to integers.", "Output: a sorted list of keys.", "Steps:",
              f"1. For each (key, value) in {d}, keep key if value > {t}.", "2. Sort the kept keys.",
              "3. Return them."),
        lines(f"function {f}({d}):", "    result = []", f"    for (key, value) in {d}:",
              f"        if value > {t}: append key", "    return sorted(result)"),
        lines(f"Edge cases: an empty {d} gives []; a value equal to {t} is left out.",
              f"Invariant: the result is sorted and {d}[key] > {t} for each key in it."),
    )  # fmt: skip
    inputs = [({},)] + [(word_dict(rng, 1, 5, 0, 2 * t + 2),) for _ in range(11)]
    return Spec(f, prompt, src, stages, inputs)


# Held out: max_in_list's best-so-far loop over dict items.
@family("dict_max_key", "dicts")
def dict_max_key(rng):
    f = pick(rng, "max_key", "key_of_max", "argmax_key", "best_key", "top_entry")
    d = pick(rng, *DICT_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({d})` that returns the key of {d} with the largest value, or None if {d} is empty.",
        f"Implement `{f}({d})`, which finds the entry of {d} with the biggest value and returns its key (the first one on ties).",
        f"Define `{f}({d})` to return the key that maps to the maximum value in {d}; return None for an empty dict.",
    )
    src = code(f"""
        def {f}({d}):
            best = None
            for key, value in {d}.items():
                if best is None or value > {d}[best]:
                    best = key
            return best
    """)
    stages = (
        f"{f} remembers the key with the largest value seen so far while walking {d}; a strictly larger value replaces it.",
        lines(f"Input: {d}, a dict from strings to integers.", "Output: a key, or None.", "Steps:",
              "1. Set best = None.", f"2. For each (key, value) in {d}: if best is None or value > {d}[best], best = key.",
              "3. Return best."),
        lines(f"function {f}({d}):", "    best = none", f"    for (key, value) in {d}:",
              f"        if best is none or value > {d}[best]: best = key", "    return best"),
        lines(f"Edge cases: an empty {d} gives None; on ties the first key wins.",
              f"Invariant: {d}[best] is the maximum of the values seen so far."),
    )  # fmt: skip
    inputs = [({},)] + [(word_dict(rng, 1, 5, 0, 30),) for _ in range(11)]
    return Spec(f, prompt, src, stages, inputs)
