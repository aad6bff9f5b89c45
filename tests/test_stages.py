import pytest

from reasoning.stages import (
    NUM_STAGES,
    build_discriminator_prompt,
    build_prompt,
    build_test_prompt,
    extract_tests,
    get_stage,
)

NAMES = ["Informal Reasoning", "Structured Reasoning", "Pseudocode", "Constraints and Invariants", "Executable Code"]


def test_five_stages_in_order_with_names():
    assert NUM_STAGES == 5
    assert [get_stage(i).name for i in range(1, 6)] == NAMES
    assert all(get_stage(i).max_new_tokens > 0 for i in range(1, 6))


@pytest.mark.parametrize("bad", [0, 6, -1, "1", 1.0, True, None])
def test_get_stage_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match="1 to 5"):
        get_stage(bad)


def test_prompt_for_stage_k_holds_problem_and_previous_stages_in_order():
    prev = ["think A", "steps B", "pseudo C"]
    prompt = build_prompt("Write `f(x)`.", prev, 4)
    assert prompt.startswith("Problem:\nWrite `f(x)`.")
    positions = [prompt.index(t) for t in prev]
    assert positions == sorted(positions)
    assert prompt.index("### Stage 3: Pseudocode") < prompt.index("### Stage 4: Constraints and Invariants")
    assert prompt.rstrip().endswith(")")  # ends on the stage-4 instruction line
    with pytest.raises(ValueError, match="stages 1..3"):
        build_prompt("p", ["only one"], 4)


def test_template_from_stage_object_gives_same_prompt():
    stage = get_stage(1)
    assert build_prompt("p", [], 1, stage.generator_prompt_template) == build_prompt("p", [], 1)


def test_extract_cuts_at_next_header_and_takes_code_from_fence():
    assert get_stage(2).extract("Input: x\nSteps: 1\n### Stage 3: Pseudocode\nblah") == "Input: x\nSteps: 1"
    fenced = "Here:\n```python\ndef f(x):\n    return x\n```\ntrailing"
    assert get_stage(5).extract(fenced) == "def f(x):\n    return x"
    assert get_stage(5).extract("def f(x):\n    return x\n### Stage 1: x") == "def f(x):\n    return x"


def test_extract_tests_keeps_single_asserts_on_entry_point():
    text = "assert f(1) == 2\nassert g(1) == 2\nassert f(2) == 3; import os\nassert f(\nprint(1)\nassert f(1) == 2\n"
    tests, dropped = extract_tests(text, "f")
    assert tests == ["assert f(1) == 2"]
    assert dropped == 5  # g, two statements, syntax error, print, duplicate


def test_discriminator_and_test_prompts_mention_their_inputs():
    d = build_discriminator_prompt("prob", ["a", "b"], 3, "out")
    assert "prob" in d and "a" in d and "b" in d and d.endswith("out\n### Verdict:")
    t = build_test_prompt("prob", "f", code="def f(): pass")
    assert "def f(): pass" in t and t.endswith("### Unit tests for f\n")
