"""String families: reversing, palindromes, removing and repeating characters, words."""

from training.data.curriculum.base import SENTENCE_PARAMS, STR_PARAMS, Spec, code, family, letters, lines, pick, sentence


@family("reverse_string", "strings")
def reverse_string(rng):
    f = pick(rng, "reverse_string", "reverse_text", "backwards", "flip_string", "reversed_copy")
    s = pick(rng, *STR_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({s})` that returns the string {s} reversed.",
        f"Implement `{f}({s})`, which returns the characters of {s} in reverse order as a new string.",
        f"Define `{f}({s})` to return {s} read backwards, so 'abc' becomes 'cba'.",
        f"Create a function `{f}({s})` that reverses the text {s} and returns the result.",
    )
    src = code(f"""
        def {f}({s}):
            return {s}[::-1]
    """)
    stages = (
        f"{f} needs the characters of {s} from last to first. A slice with step -1 does exactly that.",
        lines(f"Input: {s}, a string.", "Output: a string of the same length.", "Steps:",
              f"1. Slice {s} with step -1.", "2. Return the slice."),
        lines(f"function {f}({s}):", f"    return {s}[::-1]"),
        lines(f"Edge cases: an empty {s} gives ''; a single character stays the same.",
              f"Invariant: {f}({f}({s})) == {s} and the length does not change."),
    )  # fmt: skip
    inputs = [("",), (rng.choice("abc"),)] + [(letters(rng, 2, 8),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


@family("is_palindrome", "strings")
def is_palindrome(rng):
    f = pick(rng, "is_palindrome", "reads_same_backwards", "check_palindrome", "palindrome", "is_mirror")
    s = pick(rng, *STR_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({s})` that returns True if the string {s} reads the same forwards and backwards, else False.",
        f"Implement `{f}({s})`, which checks whether {s} is a palindrome and returns a boolean.",
        f"Define `{f}({s})` to return True when {s} equals its own reverse, and False otherwise.",
        f"Create a function `{f}({s})` that tells whether the text {s} is a palindrome (case-sensitive).",
    )
    src = code(f"""
        def {f}({s}):
            return {s} == {s}[::-1]
    """)
    stages = (
        f"{f} compares {s} with its reverse. If they are equal, {s} reads the same both ways.",
        lines(f"Input: {s}, a string.", "Output: True or False.", "Steps:",
              f"1. Reverse {s} with the slice {s}[::-1].", f"2. Return whether it equals {s}."),
        lines(f"function {f}({s}):", f"    return {s} == reverse({s})"),
        lines(f"Edge cases: an empty {s} and one character are palindromes (True).",
              f"Invariant: {f}({s}) == {f}({s}[::-1]); character i must equal character -1 - i."),
    )  # fmt: skip
    inputs = [("",), (rng.choice("abc"),), ("ab",)]
    for _ in range(9):
        half = letters(rng, 1, 4, "abcdelmnor")
        if rng.random() < 0.5:
            inputs.append((half + rng.choice(["", rng.choice("xyz")]) + half[::-1],))
        else:
            inputs.append((letters(rng, 2, 7, "abcdelmnor"),))
    return Spec(f, prompt, src, stages, inputs)


@family("remove_char", "strings")
def remove_char(rng):
    f = pick(rng, "remove_char", "strip_letter", "drop_char", "delete_letter", "without_char")
    s = pick(rng, *STR_PARAMS)
    c = rng.choice("abcdeilmnorst")
    prompt = pick(
        rng,
        f"Write a Python function `{f}({s})` that returns {s} with every occurrence of the letter '{c}' removed.",
        f"Implement `{f}({s})`, which builds a new string from {s} leaving out each '{c}' character.",
        f"Define `{f}({s})` to return the text {s} without any '{c}' in it, keeping the other characters in order.",
    )
    src = code(f"""
        def {f}({s}):
            result = ""
            for ch in {s}:
                if ch != "{c}":
                    result += ch
            return result
    """)
    stages = (
        f"{f} copies {s} character by character and skips every '{c}'. The other characters keep their order.",
        lines(f"Input: {s}, a string.", "Output: a string.", "Steps:",
              "1. Start with an empty result.", f"2. For each ch in {s}, append ch unless it is '{c}'.",
              "3. Return result."),
        lines(f"function {f}({s}):", "    result = ''", f"    for ch in {s}:",
              f"        if ch != '{c}': result += ch", "    return result"),
        lines(f"Edge cases: an empty {s} gives ''; a string of only '{c}' gives ''.",
              f"Invariant: '{c}' never appears in the result and len(result) <= len({s})."),
    )  # fmt: skip
    alphabet = "abcdeilmnorst" + c * 4
    inputs = [("",), (c,), (c * 3,)] + [(letters(rng, 1, 8, alphabet),) for _ in range(9)]
    return Spec(f, prompt, src, stages, inputs)


@family("capitalize_words", "strings")
def capitalize_words(rng):
    f = pick(rng, "capitalize_words", "title_words", "upper_first_letters", "capitalize_each", "title_case")
    s = pick(rng, *SENTENCE_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({s})` that returns {s} with the first letter of every word in upper case; "
        "words are separated by single spaces.",
        f"Implement `{f}({s})`, which upper-cases the first character of each space-separated word in {s} and returns the new string.",
        f"Define `{f}({s})` to turn a line of lowercase words such as 'red fox' into 'Red Fox'; {s} has single spaces.",
    )
    src = code(f"""
        def {f}({s}):
            words = []
            for w in {s}.split():
                words.append(w[0].upper() + w[1:])
            return " ".join(words)
    """)
    stages = (
        f"{f} splits {s} into words, upper-cases the first letter of each, and joins them again with spaces.",
        lines(f"Input: {s}, lowercase words separated by spaces.", "Output: a string.", "Steps:",
              f"1. Split {s} into words.", "2. For each word w, make w[0].upper() + w[1:].",
              "3. Join the words with ' '."),
        lines(f"function {f}({s}):", "    words = []", f"    for w in split({s}): add upper(w[0]) + w[1:]",
              "    return join(words, ' ')"),
        lines(f"Edge cases: an empty {s} gives ''; one word gets one capital.",
              f"Invariant: the result has as many words as {s}, and only first letters change."),
    )  # fmt: skip
    inputs = [("",), (rng.choice(["cat", "sun", "moon"]),)] + [(sentence(rng, 2, 5),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


@family("repeat_chars", "strings")
def repeat_chars(rng):
    f = pick(rng, "repeat_chars", "stretch", "multiply_letters", "echo_chars", "stutter")
    s = pick(rng, *STR_PARAMS)
    k = rng.randint(2, 4)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({s})` that returns a string where each character of {s} is repeated {k} times.",
        f"Implement `{f}({s})`, which replaces every character of {s} by {k} copies of it, so 'ab' becomes '{'a' * k}{'b' * k}'.",
        f"Define `{f}({s})` to build a new string by writing each letter of {s} {k} times in a row.",
    )
    src = code(f"""
        def {f}({s}):
            result = ""
            for ch in {s}:
                result += ch * {k}
            return result
    """)
    stages = (
        f"{f} walks through {s} and writes every character {k} times. Building the result in order keeps the letters in place.",
        lines(f"Input: {s}, a string.", "Output: a string.", "Steps:", "1. Start with an empty result.",
              f"2. For each ch in {s}, append ch * {k}.", "3. Return result."),
        lines(f"function {f}({s}):", "    result = ''", f"    for ch in {s}: result += ch * {k}", "    return result"),
        lines(f"Edge cases: an empty {s} gives ''.",
              f"Invariant: len({f}({s})) == {k} * len({s}), and result[i] == {s}[i // {k}]."),
    )  # fmt: skip
    inputs = [("",), (rng.choice("xyz"),)] + [(letters(rng, 2, 5),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


# RL-only: reverse_string applied to the list of words.
@family("reverse_words", "strings")
def reverse_words(rng):
    f = pick(rng, "reverse_words", "flip_words", "words_backwards", "reverse_word_order", "backwards_sentence")
    s = pick(rng, *SENTENCE_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({s})` that returns the words of {s} in reverse order, joined by single spaces.",
        f"Implement `{f}({s})`, which reverses the order of the space-separated words in {s} (the words themselves stay the same).",
        f"Define `{f}({s})` to turn a sentence like 'red fox runs' into 'runs fox red'.",
        f"Create a function `{f}({s})` that splits {s} into words and returns them last to first, separated by spaces.",
    )
    src = code(f"""
        def {f}({s}):
            words = {s}.split()
            return " ".join(words[::-1])
    """)
    stages = (
        f"{f} reverses the order of words, not letters: split {s} into words, reverse that list, and join with spaces.",
        lines(f"Input: {s}, words separated by spaces.", "Output: a string.", "Steps:",
              f"1. words = {s}.split().", "2. Reverse the list with words[::-1].", "3. Join with ' '."),
        lines(f"function {f}({s}):", f"    words = split({s})", "    return join(reverse(words), ' ')"),
        lines(f"Edge cases: an empty {s} gives ''; a single word is returned unchanged.",
              f"Invariant: the result has the same words as {s}; word i becomes word -1 - i."),
    )  # fmt: skip
    inputs = [("",), (rng.choice(["cat", "sun", "moon"]),)] + [(sentence(rng, 2, 5),) for _ in range(10)]
    return Spec(f, prompt, src, stages, inputs)


# Held out: remove_char with a set of letters + count_vowels' membership test.
@family("remove_vowels", "strings")
def remove_vowels(rng):
    f = pick(rng, "remove_vowels", "strip_vowels", "drop_vowels", "consonants_only", "devowel")
    s = pick(rng, *STR_PARAMS)
    prompt = pick(
        rng,
        f"Write a Python function `{f}({s})` that returns {s} with all the vowels a, e, i, o, u removed.",
        f"Implement `{f}({s})`, which builds a new string from the lowercase text {s} leaving out every vowel.",
        f"Define `{f}({s})` to return the characters of {s} that are not in 'aeiou', in their original order.",
    )
    src = code(f"""
        def {f}({s}):
            result = ""
            for ch in {s}:
                if ch not in "aeiou":
                    result += ch
            return result
    """)
    stages = (
        f"{f} copies {s} but skips each vowel. Checking membership in 'aeiou' tells whether a character is a vowel.",
        lines(f"Input: {s}, a lowercase string.", "Output: a string.", "Steps:", "1. Start with an empty result.",
              f"2. For each ch in {s}, append it if ch not in 'aeiou'.", "3. Return result."),
        lines(f"function {f}({s}):", "    result = ''", f"    for ch in {s}:",
              "        if ch not in 'aeiou': result += ch", "    return result"),
        lines(f"Edge cases: an empty {s} gives ''; a word of only vowels gives ''.",
              f"Invariant: no vowel is in the result and len(result) <= len({s})."),
    )  # fmt: skip
    inputs = [("",), ("aeiou",), ("xyz",)] + [(letters(rng, 1, 8),) for _ in range(9)]
    return Spec(f, prompt, src, stages, inputs)
