"""--model / --test-model: inference.py and `python -m training.evaluate` on a Hugging Face model, no checkpoint.

The model is a small random qwen2 saved with `save_pretrained`, with a chat
template, so the prompts go through the tokenizer's chat template as a hub
instruct model's would. Its texts are noise; the tests check the format, the
report, the budgets, the weight sharing and every error a user can hit.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import inference
from models.base import CausalLMWrapper
from training.config import TrainingConfig
from training.evaluate import main as evaluate_main

from checkpoints_helper import write_checkpoints
from test_models import make_model_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBLEM = "Implement a function `reverse_string(s)` that reverses a string"
STAGE_NAMES = ["Informal Reasoning", "Structured Reasoning", "Pseudocode", "Constraints and Invariants", "Executable Code"]
TEMPLATE = (
    "{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("hub"), "qwen2", chat_template=TEMPLATE)


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("hub-other"), "llama", chat_template=TEMPLATE)


@pytest.fixture
def templated(monkeypatch):
    """Every text format_prompt returns, to see that the chat template was applied."""
    seen = []
    original = CausalLMWrapper.format_prompt

    def spy(self, text):
        out = original(self, text)
        seen.append(out)
        return out

    monkeypatch.setattr(CausalLMWrapper, "format_prompt", spy)
    return seen


def headers(out):
    lines = out.splitlines()
    return [line for i, line in enumerate(lines[:-1]) if line.startswith("Stage ") and lines[i + 1] == "-" * 60]


def one_error(code, err, *fragments):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ======================================================================== inference.py
def test_inference_answers_with_a_model_and_its_chat_template(model_dir, tmp_path, capsys, templated):
    output = tmp_path / "results.json"
    code = inference.main(["--model", model_dir, "--problem", PROBLEM, "--device", "cpu", "--max-new-tokens", "6",
                           "--generate-tests", "--num-tests", "2", "--output", str(output)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert headers(out) == [f"Stage {n}: {name}" for n, name in zip(range(1, 6), STAGE_NAMES)]
    assert "Tests for reverse_string:" in out and out.rstrip().endswith("tests passed")
    # the five stage prompts and the test writer's went through the chat template
    assert len(templated) >= 6 and all(t.startswith("<|user|>") and t.endswith("<|assistant|>\n") for t in templated)
    assert any("reverse_string" in t and "Stage 5" in t for t in templated)
    data = json.loads(output.read_text())
    assert data["model"] == model_dir and data["test_model"] == model_dir
    assert data["checkpoint"] is None and data["checkpoint_stage"] is None
    assert len(data["reasoning_chain"]) == 5 and "summary" in data


def test_inference_budgets_are_the_training_config_defaults(model_dir, capsys, monkeypatch):
    """Without a checkpoint and without --max-new-tokens, every budget is TrainingConfig's default."""
    import training.chains
    from models.discriminator import LLMDiscriminator

    seen = {}

    def fake_chains(generator, texts, max_new_tokens=None, temperature=0.0, **kwargs):
        seen["budgets"] = list(max_new_tokens)
        seen["generator"] = type(generator).__name__
        return [["s1", "s2", "s3", "s4", "def reverse_string(s):\n    return s[::-1]\n"] for _ in texts]

    def fake_tests(self, problem, entry_point, code=None, num_tests=4, max_new_tokens=128, **kwargs):
        seen["test_budget"] = max_new_tokens
        return ["assert reverse_string('ab') == 'ba'"]

    monkeypatch.setattr(training.chains, "generate_chains", fake_chains)
    monkeypatch.setattr(LLMDiscriminator, "generate_tests", fake_tests)
    code = inference.main(["--model", model_dir, "--problem", PROBLEM, "--device", "cpu", "--generate-tests"])
    out, err = capsys.readouterr()
    assert code == 0, err
    defaults = TrainingConfig()
    assert seen == {"budgets": list(defaults.max_new_tokens), "generator": "LLMGenerator",
                    "test_budget": defaults.test_max_new_tokens}
    assert out.rstrip().splitlines()[-2:] == ["PASS  assert reverse_string('ab') == 'ba'", "1/1 tests passed"]


def test_the_test_writer_is_the_model_unless_another_is_named(model_dir, other_model_dir):
    from models.discriminator import LLMDiscriminator
    from models.generator import LLMGenerator
    from training.runtime.loading import load_model_players

    generator, discriminator, config, metrics = load_model_players(model_dir, "cpu")
    assert type(generator) is LLMGenerator and type(discriminator) is LLMDiscriminator
    weights = dict(discriminator.model.named_parameters())
    assert all(torch.equal(p, weights[n]) for n, p in generator.model.named_parameters())  # the same model
    assert not hasattr(generator, "score_head") and hasattr(discriminator, "score_head")
    assert config.generator_model == config.discriminator_model == model_dir and metrics == {}
    assert config.max_new_tokens == TrainingConfig().max_new_tokens

    generator, discriminator, config, _ = load_model_players(model_dir, "cpu", test_model=other_model_dir)
    assert type(generator.model).__name__ == "Qwen2ForCausalLM"
    assert type(discriminator.model).__name__ == "LlamaForCausalLM"
    assert config.discriminator_model == other_model_dir
    generator, discriminator, _, _ = load_model_players(model_dir, "cpu", discriminator=False)
    assert discriminator is None and type(generator) is LLMGenerator


def test_a_cached_hub_id_loads_from_the_cache(model_dir, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--someone--coder" / "snapshots" / "0123abcd"
    shutil.copytree(model_dir, snapshot)
    (tmp_path / "hub" / "models--someone--coder" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--coder" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code = inference.main(["--model", "someone/coder", "--problem", PROBLEM, "--device", "cpu", "--max-new-tokens", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(headers(out)) == 5
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code = inference.main(["--model", "someone/other", "--problem", PROBLEM, "--device", "cpu"])
    one_error(code, capsys.readouterr().err, "someone/other", "not in the Hugging Face cache")


# ======================================================================== errors
@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"), {"stage_1": (1, {"generator": {}})}) / "stage_1"


@pytest.mark.parametrize("cli", ["inference", "evaluate"])
def test_user_errors_are_one_line(cli, model_dir, checkpoint_dir, tmp_path, capsys):
    def run(*argv):
        if cli == "inference":
            code = inference.main([*map(str, argv), "--problem", PROBLEM, "--device", "cpu"])
        else:
            code = evaluate_main([*map(str, argv), "--problems", "humaneval", "--limit", "1", "--device", "cpu",
                                  "--no-progress"])
        captured = capsys.readouterr()
        assert captured.out == ""
        return code, captured.err

    one_error(*run("--model", model_dir, "--checkpoint", checkpoint_dir), "--model and --checkpoint")
    one_error(*run("--test-model", model_dir), "--test-model needs --model")
    (tmp_path / "empty").mkdir()
    one_error(*run("--model", tmp_path / "empty"), "not a Hugging Face model directory", "config.json")
    one_error(*run("--model", model_dir, "--test-model", tmp_path / "empty"), "--test-model", "config.json")
    one_error(*run("--model", checkpoint_dir), "checkpoint directory", "--checkpoint")
    one_error(*run("--model", tmp_path / "no" / "such"), "no such model directory")
    (tmp_path / "file.txt").write_text("x")
    one_error(*run("--model", tmp_path / "file.txt"), "is a file")


def test_a_hub_id_that_is_not_cached_fails_at_once_offline(model_dir, tmp_path):
    """The real script offline: one line, no download attempt."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HUB_CACHE"] = str(tmp_path / "empty-cache")
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "training.evaluate", "--model", "nobody/no-such-model", "--problems", "humaneval"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )
    line = one_error(proc.returncode, proc.stderr, "nobody/no-such-model", "not in the Hugging Face cache")
    assert proc.stderr.strip() == line and proc.stdout == ""


def test_canonical_with_a_model_is_refused(model_dir, capsys):
    one_error(evaluate_main(["--canonical", "--model", model_dir]), capsys.readouterr().err, "--canonical")


# ======================================================================== evaluate
def test_evaluate_reports_pass_at_1_of_a_model(model_dir, other_model_dir, tmp_path, capsys, templated):
    output, markdown = tmp_path / "r.json", tmp_path / "r.md"
    code = evaluate_main([
        "--model", model_dir, "--test-model", other_model_dir,
        "--problems", "curriculum:heldout_instances,humaneval", "--limit", "2", "--n", "2", "--k", "1,2",
        "--num-samples-rerank", "2", "--num-tests", "2", "--max-new-tokens", "4", "--device", "cpu",
        "--no-progress", "--output", str(output), "--markdown", str(markdown),
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(output.read_text())
    assert report["model"] == model_dir and report["test_model"] == other_model_dir
    assert report["checkpoint"] is None and report["checkpoint_stage"] is None
    assert [r["source"] for r in report["results"]] == ["curriculum:heldout_instances", "humaneval"]
    for r in report["results"]:
        assert r["num_problems"] == 2 and r["n"] == 2
        assert 0.0 <= r["pass@1"] <= r["pass@2"] <= 1.0 and 0.0 <= r["rerank"]["pass@1"] <= 1.0
    # curriculum problems come from the default run's families, as for a default checkpoint
    families = {row["id"].split("/")[1] for row in report["results"][0]["problems"]}
    assert families <= set(TrainingConfig().families)
    table = markdown.read_text()
    assert table.startswith(f"Evaluation of model `{model_dir}` (untrained)")
    assert "| source | problems | n | pass@1 | pass@2 |" in table and table in captured.out
    assert templated and all(t.startswith("<|user|>") for t in templated)


def test_evaluate_budgets_are_the_training_config_defaults(model_dir, capsys, monkeypatch):
    import training.chains

    seen = []

    def fake_chains(generator, texts, max_new_tokens=None, temperature=0.0, **kwargs):
        seen.append(list(max_new_tokens))
        return [["s1", "s2", "s3", "s4", "def f():\n    pass\n"] for _ in texts]

    monkeypatch.setattr(training.chains, "generate_chains", fake_chains)
    code = evaluate_main(["--model", model_dir, "--problems", "humaneval", "--limit", "2", "--k", "1",
                          "--device", "cpu", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert seen and all(b == list(TrainingConfig().max_new_tokens) for b in seen)
    assert "| `humaneval` | 2 | 1 | 0.000 |" in out
