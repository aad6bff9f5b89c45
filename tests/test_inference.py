"""inference.py end to end on a checkpoint written by the trainer, and every error a user can hit.

The checkpoint holds untrained tiny players, so the stage texts are noise; the
tests check the format, the JSON, the tests/ranking report and the errors.
Most runs call `main(argv)` in-process (the models load in about a second);
one runs the real script in a subprocess to check exit code and stderr.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import inference
from training.runtime import checkpoint as ckpt

from checkpoints_helper import write_checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENS = "8"  # a shrunken budget per stage keeps each run to a few seconds
PROBLEM = "Implement a function `reverse_string(s)` that reverses a string"
STAGE_NAMES = ["Informal Reasoning", "Structured Reasoning", "Pseudocode", "Constraints and Invariants", "Executable Code"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """checkpoints/stage_1 and checkpoints/final written by AdversarialTrainer.save_checkpoint."""
    metrics = {"generator": {"avg_reward": 0.25}, "discriminator": {"accuracy": 0.5}}
    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"), {"stage_1": (1, metrics)}, final=True)


def run_main(capsys, *argv):
    code = inference.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err):
    return [line for line in err.splitlines() if line.startswith("error:")]


def assert_one_error(code, err, *fragments):
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def stage_blocks(out):
    """(stage number, name, text) for each `Stage N: Name` header followed by a 60-dash rule."""
    lines = out.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.startswith("Stage ") and ": " in line and i + 1 < len(lines) and lines[i + 1] == "-" * 60:
            number, name = line[len("Stage "):].split(": ", 1)
            end = i + 2
            while end < len(lines) and not (lines[end].startswith("Stage ") and end + 1 < len(lines) and lines[end + 1] == "-" * 60):
                end += 1
            blocks.append((int(number), name, "\n".join(lines[i + 2 : end])))
    return blocks


# ======================================================================== output
def test_prints_five_stages_tests_and_writes_json(tree, tmp_path, capsys):
    """The real players and the real test writer, end to end."""
    output = tmp_path / "out" / "results.json"
    code, out, err = run_main(
        capsys, "--checkpoint", tree / "stage_1", "--problem", PROBLEM, "--device", "cpu",
        "--max-new-tokens", TOKENS, "--generate-tests", "--output", output,
    )
    assert code == 0, err
    blocks = stage_blocks(out)
    assert [(n, name) for n, name, _ in blocks] == list(zip(range(1, 6), STAGE_NAMES))
    data = json.loads(output.read_text())
    # exactly: header, 60 dashes, the stage text, a blank line; then the tests section
    stages = "".join(
        f"Stage {n}: {name}\n{'-' * 60}\n{text}\n\n" for n, name, text in zip(range(1, 6), STAGE_NAMES, data["reasoning_chain"])
    )
    assert out.startswith(stages)
    tests_section = out[len(stages):].splitlines()
    assert tests_section[0] == "Tests for reverse_string:"
    verdicts = [line for line in tests_section if line.startswith(("PASS", "FAIL"))]
    passed = sum(v.startswith("PASS") for v in verdicts)
    assert tests_section[-1] == f"{passed}/{len(verdicts)} tests passed"

    assert data["problem"] == PROBLEM
    assert isinstance(data["reasoning_chain"], list) and len(data["reasoning_chain"]) == 5
    assert all(isinstance(s, str) for s in data["reasoning_chain"])
    assert data["final_code"] == data["reasoning_chain"][4]
    assert data["entry_point"] == "reverse_string"
    assert [t["test"] for t in data["tests"]] == [v.split(None, 1)[1] for v in verdicts]
    assert data["summary"]["passed"] == passed and data["summary"]["total"] == len(verdicts)
    assert os.listdir(output.parent) == ["results.json"]  # no temporary left behind


def test_without_tests_prints_only_the_stages(tree, tmp_path, capsys):
    output = tmp_path / "results.json"
    code, out, err = run_main(
        capsys, "--checkpoint", tree / "stage_1", "--problem", PROBLEM, "--device", "cpu",
        "--max-new-tokens", "2", "--output", output,
    )
    assert code == 0, err
    data = json.loads(output.read_text())
    assert out == "".join(
        f"Stage {n}: {name}\n{'-' * 60}\n{text}\n\n" for n, name, text in zip(range(1, 6), STAGE_NAMES, data["reasoning_chain"])
    )
    assert "tests" not in data and "ranking" not in data  # only when asked for


def _fake_chains(codes, seen=None):
    def fake(generator, texts, max_new_tokens=None, temperature=0.0, **kwargs):
        if seen is not None:
            seen["temperature"], seen["n"] = temperature, len(texts)
        return [[f"stage {k} of sample {i}" for k in range(1, 5)] + [codes[i]] for i in range(len(texts))]

    return fake


def test_generate_tests_prints_pass_fail_lines_and_summary(tree, tmp_path, capsys, monkeypatch):
    """Known code and known tests through the real sandbox: one PASS, one FAIL, and the summary."""
    import training.chains
    from models.discriminator import LLMDiscriminator

    tests = ["assert reverse_string('aba') == 'aba'", "assert reverse_string('ab') == 'ba'"]
    monkeypatch.setattr(training.chains, "generate_chains", _fake_chains(["def reverse_string(s):\n    return s\n"]))
    monkeypatch.setattr(LLMDiscriminator, "generate_tests", lambda self, *a, **k: list(tests))
    output = tmp_path / "results.json"
    code, out, err = run_main(
        capsys, "--checkpoint", tree / "stage_1", "--problem", PROBLEM, "--device", "cpu",
        "--generate-tests", "--num-tests", "2", "--output", output,
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-3:] == [f"PASS  {tests[0]}", f"FAIL  {tests[1]}", "1/2 tests passed"]
    data = json.loads(output.read_text())
    assert data["tests"] == [{"test": tests[0], "passed": True}, {"test": tests[1], "passed": False}]
    assert data["summary"] == {"passed": 1, "total": 2}


@pytest.mark.parametrize("flag", [[], ["--no-test-agreement"]])
def test_generate_tests_says_when_the_samples_disagreed_on_every_result(tree, tmp_path, capsys, monkeypatch, flag):
    import training.chains
    from models.discriminator import LLMDiscriminator

    asked = {}

    def no_agreed_tests(self, *args, **kwargs):
        asked["agreement"] = kwargs["agreement"]
        self.last_disputed_tests = 3 if kwargs["agreement"] else 0
        return []

    monkeypatch.setattr(training.chains, "generate_chains", _fake_chains(["def reverse_string(s):\n    return s\n"]))
    monkeypatch.setattr(LLMDiscriminator, "generate_tests", no_agreed_tests)
    output = tmp_path / "results.json"
    code, out, err = run_main(capsys, "--checkpoint", tree / "stage_1", "--problem", PROBLEM, "--device", "cpu",
                              "--generate-tests", "--output", output, *flag)
    assert code == 0, err
    agreement = not flag
    assert asked["agreement"] is agreement
    data = json.loads(output.read_text())
    assert data["test_agreement"] is agreement and data["tests"] == []
    assert ("disagreed on every result" in data["summary"]["note"]) is agreement
    assert ("no usable test" in data["summary"]["note"]) is not agreement


def test_num_samples_picks_by_codet_and_explains(tree, tmp_path, capsys, monkeypatch):
    """Three samples: the two correct ones agree on all three tests and beat the lone wrong one."""
    import training.chains
    from models.discriminator import LLMDiscriminator

    codes = [
        "def reverse_string(s):\n    return s\n",  # passes the palindrome and the empty test: 1 x 2 = 2
        "def reverse_string(s):\n    return s[::-1]\n",  # {1, 2} pass all three: 2 x 3 = 6
        "def reverse_string(s):\n    return ''.join(reversed(s))\n",
    ]
    seen = {}
    tests = ["assert reverse_string('ab') == 'ba'", "assert reverse_string('aba') == 'aba'", "assert reverse_string('') == ''"]
    monkeypatch.setattr(training.chains, "generate_chains", _fake_chains(codes, seen))
    monkeypatch.setattr(LLMDiscriminator, "generate_tests", lambda self, *a, **k: list(tests))
    output = tmp_path / "results.json"
    code, out, err = run_main(
        capsys, "--checkpoint", tree / "stage_1", "--problem", PROBLEM, "--device", "cpu",
        "--num-samples", "3", "--generate-tests", "--output", output,
    )
    assert code == 0, err
    assert seen == {"temperature": 0.8, "n": 3}  # N > 1 samples at 0.8 by default
    explanation = [line for line in out.splitlines() if line.startswith("Picked sample")]
    assert len(explanation) == 1
    assert "sample 1 of 3" in explanation[0] and "2 samples" in explanation[0] and "3 of 3 tests" in explanation[0]
    assert "2 x 3 = 6" in explanation[0]
    assert [text.strip() for _, _, text in stage_blocks(out)][0] == "stage 1 of sample 1"  # the winner's chain
    assert "3/3 tests passed" in out.splitlines()
    data = json.loads(output.read_text())
    assert data["final_code"] == codes[1]
    assert data["reasoning_chain"][0] == "stage 1 of sample 1"
    ranking = data["ranking"]
    assert (ranking["winner"], ranking["group_size"], ranking["tests_passed"], ranking["score"]) == (1, 2, 3, 6)
    assert [s["passed"] for s in data["samples"]] == [[False, True, True], [True, True, True], [True, True, True]]


def test_test_values_from_samples_replace_the_writers_guesses_by_the_majority(tree, tmp_path, capsys, monkeypatch):
    """The writer guesses wrong values; two of three samples return the same ones, which become the tests."""
    import training.chains
    from models.discriminator import LLMDiscriminator

    codes = ["def reverse_string(s):\n    return s[::-1]\n", "def reverse_string(s):\n    return s\n",
             "def reverse_string(s):\n    return ''.join(reversed(s))\n"]
    written = ["assert reverse_string('ab') == 'xx'", "assert reverse_string('abc') == ''"]
    monkeypatch.setattr(training.chains, "generate_chains", _fake_chains(codes, {}))
    monkeypatch.setattr(LLMDiscriminator, "generate_tests", lambda self, *a, **k: list(written))
    output = tmp_path / "results.json"
    code, out, err = run_main(
        capsys, "--checkpoint", tree / "stage_1", "--problem", PROBLEM, "--device", "cpu",
        "--num-samples", "3", "--generate-tests", "--test-values", "samples", "--output", output,
    )
    assert code == 0, err
    data = json.loads(output.read_text())
    assert [r["test"] for r in data["tests"]] == ["assert reverse_string('ab') == 'ba'", "assert reverse_string('abc') == 'cba'"]
    assert "2 of 2 calls had a majority" in out and data["final_code"] != codes[1]


# ======================================================================== errors
def test_test_values_from_samples_needs_several_samples(tree, capsys):
    code, _, err = run_main(capsys, "--checkpoint", tree / "stage_1", "--problem", PROBLEM, "--device", "cpu",
                            "--generate-tests", "--test-values", "samples")
    assert_one_error(code, err, "--num-samples 2 or more")


def test_missing_checkpoint_lists_existing_and_suggests_final(tree, capsys):
    code, out, err = run_main(capsys, "--checkpoint", tree / "best", "--problem", PROBLEM, "--device", "cpu")
    assert_one_error(code, err, "not found", "stage_1", "final", "try final")
    assert out == ""


def test_empty_problem(tree, capsys):
    code, _, err = run_main(capsys, "--checkpoint", tree / "stage_1", "--problem", "   \n", "--device", "cpu")
    assert_one_error(code, err, "problem is empty")


def test_cuda_without_cuda(tree, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run_main(capsys, "--checkpoint", tree / "stage_1", "--problem", PROBLEM, "--device", "cuda")
    assert_one_error(code, err, "CUDA is not available")


def test_architecture_mismatch(tree, tmp_path, capsys):
    """A generator.pt whose weights come from a different tiny config than the one it records."""
    from models.generator import LLMGenerator

    bad = tmp_path / "mismatch"
    shutil.copytree(tree / "stage_1", bad)
    saved = torch.load(bad / ckpt.GENERATOR_FILE, map_location="cpu", weights_only=True)
    other_config = dict(saved["model_config"], hidden_size=64, intermediate_size=128)
    other = LLMGenerator("tiny", "cpu", model_config=other_config)
    saved["model_state_dict"] = other.model_state_dict()
    torch.save(saved, bad / ckpt.GENERATOR_FILE)
    code, _, err = run_main(capsys, "--checkpoint", bad, "--problem", PROBLEM, "--device", "cpu")
    assert_one_error(code, err, "Model architecture mismatch", ckpt.GENERATOR_FILE)


def _corrupted_copy(tree, tmp_path):
    bad = tmp_path / "corrupt"
    shutil.copytree(tree / "stage_1", bad)
    data = (bad / ckpt.GENERATOR_FILE).read_bytes()
    os.remove(bad / ckpt.GENERATOR_FILE)  # never write through a hard link into another checkpoint
    (bad / ckpt.GENERATOR_FILE).write_bytes(data[: len(data) // 3])
    return bad


def test_corrupted_checkpoint_file(tree, tmp_path, capsys):
    bad = _corrupted_copy(tree, tmp_path)
    code, _, err = run_main(capsys, "--checkpoint", bad, "--problem", PROBLEM, "--device", "cpu")
    assert_one_error(code, err, "unreadable or corrupted", ckpt.GENERATOR_FILE)


def test_cli_subprocess_errors_without_traceback(tree, tmp_path):
    """The real script: exit code 2 and one `error:` line on stderr, nothing on stdout."""
    bad = _corrupted_copy(tree, tmp_path)
    proc = subprocess.run(
        [sys.executable, "inference.py", "--checkpoint", str(bad), "--problem", PROBLEM, "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert_one_error(proc.returncode, proc.stderr, "unreadable or corrupted")
    assert proc.stdout == ""


@pytest.mark.slow
def test_cli_subprocess_end_to_end(tree, tmp_path):
    output = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "inference.py", "--checkpoint", str(tree / "final"), "--problem", PROBLEM,
         "--max-new-tokens", TOKENS, "--generate-tests", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert [n for n, _, _ in stage_blocks(proc.stdout)] == [1, 2, 3, 4, 5]
    assert proc.stdout.rstrip().splitlines()[-1].endswith("tests passed")
    assert set(json.loads(output.read_text())) >= {"problem", "reasoning_chain", "final_code", "tests", "summary"}


def test_evaluation_keeps_to_the_families_the_run_trained_on(tree):
    from training.config import DEFAULT_FAMILIES
    from training.evaluate import evaluate_checkpoint

    def families(report):
        return [{row["id"].split("/")[1] for row in r["problems"]} for r in report["results"]]

    kwargs = dict(limit=3, max_new_tokens=4, device="cpu", progress=False, workers=1)
    report = evaluate_checkpoint(str(tree / "final"), ["curriculum:heldout_instances", "curriculum:heldout_families"], **kwargs)
    (seen, none) = families(report)
    assert seen and seen <= set(DEFAULT_FAMILIES) and none == set()
    report = evaluate_checkpoint(str(tree / "final"), ["curriculum:heldout_families"], all_families=True, **kwargs)
    (held_out,) = families(report)
    assert len(held_out) == 3 and not held_out & set(DEFAULT_FAMILIES)


def test_evaluation_samples_the_same_greedy_code_with_either_engine(tree):
    from training.evaluate import evaluate_checkpoint

    kwargs = dict(limit=3, max_new_tokens=8, device="cpu", progress=False, workers=1, keep_samples=True)
    codes = []
    for engine in ("fast", "generate"):
        report = evaluate_checkpoint(str(tree / "final"), ["curriculum:heldout_instances"], generation_engine=engine, **kwargs)
        codes.append([row["completions"] for row in report["results"][0]["problems"]])
    assert codes[0] and codes[0] == codes[1]


def test_generation_engine_flags_offer_the_engines():
    from models.base import GENERATION_ENGINES
    from training.evaluation.cli import parse_args

    assert parse_args(["--generation-engine", "generate"]).generation_engine == "generate"
    assert parse_args([]).generation_engine is None  # the checkpoint's own
    for parse in (parse_args, inference.parse_args):
        for engine in GENERATION_ENGINES:
            assert parse(["--generation-engine", engine]).generation_engine == engine
        with pytest.raises(SystemExit):
            parse(["--generation-engine", "sglang"])
