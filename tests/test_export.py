"""python -m training.export: the exported directories load with transformers (and peft) alone and behave as the players.

The checkpoints hold tiny players whose weights (LoRA: adapters) are moved
off their initial values by seeded noise, so an export that wrote the base
model instead of the checkpoint's weights gives different tokens. Every
comparison is greedy, on the stage-1 prompt of a few curriculum problems,
with a shrunken token budget.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from training.runtime import checkpoint as ckpt
from training.runtime import export
from test_inference import assert_one_error
from training.runtime.loading import load_players

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENS = 12
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
OUTPUT = "Loop over the digits and add each one to a running total."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_checkpoint(path, use_lora: bool, noise: float):
    """A checkpoint directory as the trainer writes it, of tiny players with perturbed trainable weights."""
    from sandbox import Sandbox
    from training.adversarial_trainer import AdversarialTrainer
    from training.runtime.build import build_players
    from training.config import TrainingConfig

    config = TrainingConfig(device="cpu", checkpoint_dir=str(path.parent), plot=False, progress=False, use_lora=use_lora)
    generator, discriminator = build_players(config)
    generator_seed = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for player in (generator, discriminator):
            for p in player.trainable_parameters():  # LoRA: the adapters (B starts at 0) and the head
                p.add_(torch.randn(p.shape, generator=generator_seed) * noise)
    with Sandbox(timeout_s=2.0, memory_mb=512, workers=1) as sandbox:
        AdversarialTrainer(generator, discriminator, sandbox, config).save_checkpoint(str(path), 1, {})
    return path


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("full") / "stage_1", use_lora=False, noise=0.02)


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("lora") / "stage_1", use_lora=True, noise=0.1)


@pytest.fixture(scope="module")
def prompts():
    from reasoning.stages import build_prompt
    from training.data.problems import load_problems

    problems = load_problems("curriculum:train:1")
    return [build_prompt(p.prompt, [], 1) for p in problems[::13][:3]]


@pytest.fixture(scope="module")
def base_tokens(prompts):
    """The untouched tiny model's greedy tokens: an export must not reproduce these."""
    from models.generator import LLMGenerator

    base = LLMGenerator("tiny", "cpu")
    return [wrapper_greedy(base, p) for p in prompts]


def run_export(capsys, *argv):
    code = export.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def wrapper_greedy(generator, prompt):
    """LLMGenerator's greedy completion tokens, up to and including the first EOS."""
    rollout = generator.sample([prompt], max_new_tokens=TOKENS, temperature=0)
    return rollout.completion_ids[0][rollout.completion_mask[0].bool()].tolist()


def exported_greedy(model, tokenizer, prompt):
    """Greedy tokens from a loaded export, the prompt formatted as CausalLMWrapper.format_prompt does.

    No sampling arguments: the exported generation_config.json must itself say greedy and name the eos token.
    """
    templated = bool(getattr(tokenizer, "chat_template", None))
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True) if templated else prompt
    inputs = tokenizer([text], return_tensors="pt", add_special_tokens=not templated)
    with torch.no_grad():
        sequences = model.generate(**inputs, max_new_tokens=TOKENS)  # (1, P + C)
    return sequences[0, inputs["input_ids"].size(1):].tolist()


def exported_score(backbone, tokenizer, directory, item):
    """The probability score_head.json describes: sigmoid(head(last hidden state of the last token))."""
    from reasoning.stages import build_discriminator_prompt

    head = load_file(os.path.join(directory, export.SCORE_HEAD_FILE))
    inputs = tokenizer([build_discriminator_prompt(*item)], return_tensors="pt")
    with torch.no_grad():
        hidden = backbone(**inputs).last_hidden_state[:, -1].float()  # (1, H)
    return torch.sigmoid(hidden @ head["weight"].T + head["bias"]).item()


def load_hf(directory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)


def load_adapters(directory):
    """The base model named in adapter_config.json with the exported adapters on it (peft)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with open(os.path.join(directory, "adapter_config.json")) as f:
        base_path = json.load(f)["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_path)
    return PeftModel.from_pretrained(base, directory).eval(), AutoTokenizer.from_pretrained(directory)


def score_item(prompt):
    return (prompt, [], 1, OUTPUT)


def check_players(checkpoint, out, prompts, base_tokens, load):
    """The export's generator greedy-decodes as LLMGenerator does, and its discriminator scores as LLMDiscriminator."""
    generator, discriminator, _, _ = load_players(str(checkpoint), device="cpu")
    model, tokenizer = load(out / export.GENERATOR_DIR)
    expected = [wrapper_greedy(generator, p) for p in prompts]
    assert [exported_greedy(model, tokenizer, p) for p in prompts] == expected
    assert expected != base_tokens  # the checkpoint's weights, not the base model's

    disc_dir = out / export.DISCRIMINATOR_DIR
    lm, tokenizer = load(disc_dir)
    backbone = (lm.get_base_model() if hasattr(lm, "get_base_model") else lm).base_model
    item = score_item(prompts[0])
    assert exported_score(backbone, tokenizer, disc_dir, item) == pytest.approx(discriminator.score(*item), abs=1e-5)


def assert_weight_files(directory, sharded=False):
    names = set(os.listdir(directory))
    assert {"config.json", "generation_config.json", *TOKENIZER_FILES} <= names, names
    assert "adapter_config.json" not in names
    if sharded:
        index = json.loads((directory / "model.safetensors.index.json").read_text())
        shards = set(index["weight_map"].values())
        assert len(shards) > 1 and shards <= names
    else:
        assert "model.safetensors" in names


# ======================================================================== full weights
def test_full_checkpoint_exports_models_that_match_the_players(full_checkpoint, prompts, base_tokens, tmp_path, capsys):
    out = tmp_path / "exported"
    code, stdout, err = run_export(capsys, "--checkpoint", full_checkpoint, "--out", out)
    assert code == 0, err
    assert str(out) in stdout
    assert sorted(os.listdir(out)) == [export.DISCRIMINATOR_DIR, export.EXPORT_NOTE, export.GENERATOR_DIR]
    for name in (export.GENERATOR_DIR, export.DISCRIMINATOR_DIR):
        assert_weight_files(out / name)
    generation = json.loads((out / export.GENERATOR_DIR / "generation_config.json").read_text())
    assert generation["do_sample"] is False and generation["max_new_tokens"] == 128  # the largest stage budget

    note = json.loads((out / export.DISCRIMINATOR_DIR / export.SCORE_HEAD_NOTE).read_text())
    assert note["file"] == export.SCORE_HEAD_FILE and note["tensors"] == {"weight": [1, 128], "bias": [1]}
    assert "last_hidden_state" in note["apply"] and "build_discriminator_prompt" in note["input"]
    summary = json.loads((out / export.EXPORT_NOTE).read_text())
    assert summary["checkpoint"] == str(full_checkpoint) and summary["lora"] is None and summary["stage_id"] == 1

    check_players(full_checkpoint, out, prompts, base_tokens, load_hf)


def test_small_max_shard_size_writes_shards_that_load(full_checkpoint, prompts, base_tokens, tmp_path, capsys):
    out = tmp_path / "sharded"
    code, _, err = run_export(capsys, "--checkpoint", full_checkpoint, "--out", out, "--max-shard-size", "2MB")
    assert code == 0, err
    for name in (export.GENERATOR_DIR, export.DISCRIMINATOR_DIR):
        assert_weight_files(out / name, sharded=True)
    check_players(full_checkpoint, out, prompts, base_tokens, load_hf)


# ======================================================================== LoRA
def test_lora_checkpoint_is_merged_by_default(lora_checkpoint, prompts, base_tokens, tmp_path, capsys):
    out = tmp_path / "merged"
    code, _, err = run_export(capsys, "--checkpoint", lora_checkpoint, "--out", out)
    assert code == 0, err
    for name in (export.GENERATOR_DIR, export.DISCRIMINATOR_DIR):
        assert_weight_files(out / name)
    state = load_file(str(out / export.GENERATOR_DIR / "model.safetensors"))
    assert not any("lora_" in k for k in state)  # plain weights, no peft needed
    assert json.loads((out / export.EXPORT_NOTE).read_text())["lora"] == "merged"
    check_players(lora_checkpoint, out, prompts, base_tokens, load_hf)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # raised inside peft's loader
def test_keep_adapters_writes_peft_directories(lora_checkpoint, prompts, base_tokens, tmp_path, capsys):
    out = tmp_path / "adapters"
    code, _, err = run_export(capsys, "--checkpoint", lora_checkpoint, "--out", out, "--keep-adapters")
    assert code == 0, err
    for name in (export.GENERATOR_DIR, export.DISCRIMINATOR_DIR):
        names = set(os.listdir(out / name))
        assert {"adapter_config.json", "adapter_model.safetensors", "generation_config.json", *TOKENIZER_FILES} <= names
        assert "model.safetensors" not in names and "config.json" not in names
        state = load_file(str(out / name / "adapter_model.safetensors"))
        assert state and all("lora_" in k for k in state)
    assert json.loads((out / export.EXPORT_NOTE).read_text())["lora"] == "adapters"
    check_players(lora_checkpoint, out, prompts, base_tokens, load_adapters)

    # transformers' own peft integration reads the same directory: base model plus adapters in one call
    generator, _, _, _ = load_players(str(lora_checkpoint), device="cpu", discriminator=False)
    model, tokenizer = load_hf(out / export.GENERATOR_DIR)
    assert exported_greedy(model, tokenizer, prompts[0]) == wrapper_greedy(generator, prompts[0])


# ======================================================================== errors


def test_missing_checkpoint_is_one_line(full_checkpoint, tmp_path, capsys):
    code, _, err = run_export(capsys, "--checkpoint", full_checkpoint.parent / "stage_9", "--out", tmp_path / "x")
    assert_one_error(code, err, "stage_9 not found", "stage_1")
    assert not (tmp_path / "x").exists()


def test_unreadable_checkpoint_is_one_line(tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ckpt.GENERATOR_FILE).write_bytes(b"not a checkpoint")
    (broken / ckpt.DISCRIMINATOR_FILE).write_bytes(b"not a checkpoint")
    code, _, err = run_export(capsys, "--checkpoint", broken, "--out", tmp_path / "x")
    assert_one_error(code, err, "unreadable or corrupted")
    assert not (tmp_path / "x").exists()


def test_checkpoint_without_discriminator_is_one_line(tmp_path, capsys):
    half = tmp_path / "half"
    half.mkdir()
    (half / ckpt.GENERATOR_FILE).write_bytes(b"")
    code, _, err = run_export(capsys, "--checkpoint", half, "--out", tmp_path / "x")
    assert_one_error(code, err, ckpt.DISCRIMINATOR_FILE, "both players")


def test_non_empty_out_needs_force(full_checkpoint, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = run_export(capsys, "--checkpoint", full_checkpoint, "--out", out)
    assert_one_error(code, err, "exists and is not empty", "--force")
    assert os.listdir(out) == ["notes.txt"]

    code, _, err = run_export(capsys, "--checkpoint", full_checkpoint, "--out", out, "--force")
    assert code == 0, err
    assert sorted(os.listdir(out)) == [export.DISCRIMINATOR_DIR, export.EXPORT_NOTE, export.GENERATOR_DIR]


def test_empty_out_directory_is_used(full_checkpoint, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    code, _, err = run_export(capsys, "--checkpoint", full_checkpoint, "--out", out)
    assert code == 0, err
    assert (out / export.GENERATOR_DIR / "config.json").is_file()


@pytest.mark.parametrize("case", ["file", "holds_checkpoint", "shard_size", "keep_adapters_without_lora"])
def test_bad_flags_are_one_line(case, full_checkpoint, tmp_path, capsys):
    out, extra = tmp_path / "out", []
    if case == "file":
        out.write_text("")
        fragments = ("is a file",)
    elif case == "holds_checkpoint":
        out = full_checkpoint.parent
        extra = ["--force"]
        fragments = ("holds the checkpoint",)
    elif case == "shard_size":
        extra = ["--max-shard-size", "lots"]
        fragments = ("--max-shard-size", "'lots'")
    else:
        extra = ["--keep-adapters"]
        fragments = ("--keep-adapters needs a LoRA checkpoint",)
    code, _, err = run_export(capsys, "--checkpoint", full_checkpoint, "--out", out, *extra)
    assert_one_error(code, err, *fragments)
    assert (full_checkpoint / ckpt.GENERATOR_FILE).is_file()  # nothing was replaced
    if case in ("shard_size", "keep_adapters_without_lora"):
        assert not out.exists()


def test_the_command_prints_one_error_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "training.export", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "x")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: checkpoint ") and "not found" in result.stderr
