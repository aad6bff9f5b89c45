"""The five reasoning stages, their prompt templates, and how to parse outputs.

A stage-k prompt holds the problem and stages 1..k-1, then the header of
stage k; the generator completes the stage text. The plain-text format is
deliberately regular (one `### Stage N: Name` header per stage) so that a tiny
model learns it fast, and so that a completion that runs on into the next
stage can be cut at the next header.

    from reasoning.stages import get_stage, build_prompt
    stage = get_stage(3)
    prompt = build_prompt(problem, [s1, s2], 3)
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

STAGE_HEADER = "### Stage {id}: {name}"
# A completion that runs past its own stage is cut at the next header or at
# the verdict/test markers, whichever comes first.
_CUT_RE = re.compile(r"\n?(### Stage \d|### Verdict|### Unit tests)")
_FENCE_RE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


@dataclass(frozen=True)
class Stage:
    id: int
    name: str
    instruction: str  # one line for instruct models; cheap for the tiny one
    max_new_tokens: int  # default token budget for this stage's output

    @property
    def is_code(self) -> bool:
        """The last stage is executable code: judged by running it, not by the scoring head."""
        return self.id == NUM_STAGES

    @property
    def header(self) -> str:
        return STAGE_HEADER.format(id=self.id, name=self.name)

    @property
    def generator_prompt_template(self) -> str:
        """Template with `{problem}` and `{previous_stages}` placeholders."""
        return "Problem:\n{problem}\n\n{previous_stages}" + f"{self.header}\n({self.instruction})\n"

    @property
    def discriminator_prompt_template(self) -> str:
        """Template with `{problem}`, `{previous_stages}` and `{output}`."""
        return "Problem:\n{problem}\n\n{previous_stages}" + f"{self.header}\n" + "{output}\n### Verdict:"

    def extract(self, text: str) -> str:
        """The usable part of a raw completion for this stage."""
        return extract_code(text) if self.is_code else cut_at_next_header(text)


STAGES: tuple[Stage, ...] = (
    Stage(1, "Informal Reasoning", "Explain in plain words how to solve it.", 80),
    Stage(2, "Structured Reasoning", "List inputs, outputs and steps.", 96),
    Stage(3, "Pseudocode", "Write pseudocode.", 96),
    Stage(4, "Constraints and Invariants", "State edge cases and invariants.", 80),
    Stage(5, "Executable Code", "Write the Python function.", 128),
)
NUM_STAGES = len(STAGES)


def get_stage(stage_id: int) -> Stage:
    """Stage `stage_id` (1..5)."""
    if isinstance(stage_id, bool) or not isinstance(stage_id, int) or not 1 <= stage_id <= NUM_STAGES:
        raise ValueError(f"stage_id must be an integer from 1 to {NUM_STAGES}, got {stage_id!r}")
    return STAGES[stage_id - 1]


def format_previous_stages(previous_stages: list[str]) -> str:
    """Stages 1..k-1 as they appear inside a prompt."""
    parts = []
    for i, text in enumerate(previous_stages, start=1):
        parts.append(f"{get_stage(i).header}\n{text.strip()}\n\n")
    return "".join(parts)


def build_prompt(problem: str, previous_stages: list[str], stage_id: int, template: str | None = None) -> str:
    """The generator's prompt for `stage_id`, given the outputs of stages 1..k-1."""
    stage = get_stage(stage_id)
    if len(previous_stages) != stage_id - 1:
        raise ValueError(
            f"stage {stage_id} needs the outputs of stages 1..{stage_id - 1}, got {len(previous_stages)} previous stages"
        )
    template = template if template is not None else stage.generator_prompt_template
    return template.format(problem=problem.strip(), previous_stages=format_previous_stages(previous_stages))


def build_discriminator_prompt(problem: str, previous_stages: list[str], stage_id: int, output: str) -> str:
    """The text the discriminator's scoring head reads for one stage output."""
    stage = get_stage(stage_id)
    return stage.discriminator_prompt_template.format(
        problem=problem.strip(),
        previous_stages=format_previous_stages(previous_stages[: stage_id - 1]),
        output=output.strip(),
    )


def build_test_prompt(problem: str, entry_point: str, code: str | None = None) -> str:
    """The test writer's prompt: the problem (and optionally the code under test)."""
    code_part = f"Code:\n{code.strip()}\n\n" if code else ""
    return f"Problem:\n{problem.strip()}\n\n{code_part}### Unit tests for {entry_point}\n"


def cut_at_next_header(text: str) -> str:
    match = _CUT_RE.search(text)
    return (text[: match.start()] if match else text).strip()


def extract_code(text: str) -> str:
    """Stage 5: the last fenced code block, or the raw text when there is none."""
    blocks = _FENCE_RE.findall(text)
    if blocks:
        return blocks[-1].strip("\n")
    return cut_at_next_header(text)


def extract_tests(text: str, entry_point: str) -> tuple[list[str], int]:
    """Single well-formed assert statements that call `entry_point`.

    Returns (tests, dropped): one test per line, in order, without duplicates;
    `dropped` counts the non-empty lines that were not such a test.
    """
    tests: list[str] = []
    dropped = 0
    for line in cut_at_next_header(text).splitlines():
        line = line.strip()
        if not line or line.startswith("```"):
            continue
        if is_assert_on(line, entry_point) and line not in tests:
            tests.append(line)
        else:
            dropped += 1
    return tests, dropped


def writer_samples(num_tests: int, temperature: float, samples: int | None = None) -> int:
    """Test-writer completions to sample for `num_tests` tests: `samples`, else `num_tests` (one when greedy)."""
    if samples is not None:
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        return samples
    return max(1, num_tests) if temperature > 0 else 1


def merge_tests(texts: list, entry_point: str, limit: int, agreement: bool = True) -> tuple[list[str], int]:
    """Up to `limit` distinct tests from several test-writer samples; and the lines dropped.

    With `agreement` (self-consistency over the samples), a call that the
    samples assert different results for (`f(0) == 0` in one, `f(0) == -19`
    in another) keeps only a result with more than half of the votes on that
    call (one per sample that asserts it), and is dropped when none has them:
    a writer that guesses scatters its wrong results, while one that knows
    repeats the right one. The kept tests come most-agreed first. Without it, every distinct test is kept in
    the order the samples wrote them.
    """
    per_sample: list[list[str]] = []
    dropped = 0
    for text in texts:
        found, bad = extract_tests(text, entry_point)
        dropped += bad
        per_sample.append(found)
    tests = list(dict.fromkeys(t for found in per_sample for t in found))
    if agreement and len(per_sample) > 1:
        tests = _agreed_tests(per_sample, tests, entry_point)
    return tests[:limit], dropped


def _agreed_tests(per_sample: list, tests: list, entry_point: str) -> list:
    """`tests` without the results the samples disagree on, the most-written first (see merge_tests)."""
    claim = {t: _asserted_result(t, entry_point) for t in tests}  # (call, result), or None
    key = {t: claim[t] or t for t in tests}  # `f(0) == 1` and `1 == f(0)` make one claim
    support = {k: sum(any(key[t] == k for t in found) for found in per_sample) for k in set(key.values())}
    results_of: dict = {}
    for k in support:
        if isinstance(k, tuple):
            results_of.setdefault(k[0], []).append(k)
    rejected = set()
    for claims in results_of.values():
        winner = max(claims, key=lambda k: support[k])
        rejected |= {k for k in claims if k != winner or 2 * support[k] <= sum(support[c] for c in claims)}
    kept, seen = [], set()
    for t in tests:
        if key[t] not in rejected and key[t] not in seen:
            kept.append(t)
            seen.add(key[t])
    return sorted(kept, key=lambda t: -support[key[t]])  # stable: ties stay in written order


def _asserted_result(test: str, entry_point: str) -> tuple | None:
    """For `assert <call> == <result>` (either way round), the sources of call and result; None otherwise."""
    try:
        node = ast.parse(test).body[0].test
    except (SyntaxError, ValueError, IndexError, AttributeError):
        return None
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq)):
        return None
    left, right = node.left, node.comparators[0]
    if _calls(left, entry_point) == _calls(right, entry_point):
        return None
    call, result = (left, right) if _calls(left, entry_point) else (right, left)
    return ast.unparse(call), ast.unparse(result)


def _calls(node, entry_point: str) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == entry_point for n in ast.walk(node))


def is_assert_on(source: str, entry_point: str) -> bool:
    """True when `source` is exactly one assert statement that calls `entry_point`."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return False
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point
        for node in ast.walk(tree.body[0].test)
    )


def canonical_test(test: str) -> str:
    """A test's syntax tree as text (the stripped source when it does not parse): spacing does not count."""
    try:
        return ast.dump(ast.parse(test.strip()))
    except (SyntaxError, ValueError):
        return test.strip()


def parses(code: str) -> bool:
    """True when `code` is syntactically valid Python."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True
