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


# ------------------------------------------------------------ merging the test writer's samples
def test_merge_tests_drops_results_the_samples_disagree_on():
    from reasoning.stages import merge_tests

    samples = [
        "assert f(0) == -19\nassert f(1) == -13",
        "assert f(0) == 0",  # a guess: the samples scatter over f(0)
        "assert f(0) == 4\nassert f(2) == 3",
        "assert f(1) == -13\nassert f(1) == 7",  # f(1): -13 twice, 7 once, a majority of 3 votes
    ]
    tests, dropped = merge_tests(samples, "f", limit=5)
    assert tests == ["assert f(1) == -13", "assert f(2) == 3"]  # most-agreed first; no result for f(0) survives
    assert dropped == 0
    every, _ = merge_tests(samples, "f", limit=10, agreement=False)
    assert every == ["assert f(0) == -19", "assert f(1) == -13", "assert f(0) == 0", "assert f(0) == 4",
                     "assert f(2) == 3", "assert f(1) == 7"]  # written order, every distinct test


def test_merge_tests_needs_a_strict_majority_and_reads_either_side_of_the_comparison():
    from reasoning.stages import merge_tests

    assert merge_tests(["assert f(0) == 1", "assert f(0) == 2"], "f", 5)[0] == []  # a tie keeps neither
    kept, _ = merge_tests(["assert 1 == f(0)", "assert f(0) == 1", "assert f(0) == 2", "assert f(0)"], "f", 5)
    assert kept == ["assert 1 == f(0)", "assert f(0)"]  # one claim, written two ways, beats f(0) == 2 by 2 to 1
    # one sample has nothing to vote against: its tests stay as written
    assert merge_tests(["assert f(0) == 1\nassert f(0) == 2"], "f", 5)[0] == ["assert f(0) == 1", "assert f(0) == 2"]
    assert merge_tests(["assert f(1) == 2\nassert f(2) == 4", "assert f(2) == 4"], "f", 1)[0] == ["assert f(2) == 4"]
