"""Export a checkpoint as Hugging Face model directories, one per player.

    python -m training.export --checkpoint checkpoints/best --out exported/
    python -m training.export --checkpoint checkpoints/best --out exported/ --keep-adapters   # LoRA runs
    python -m training.export --checkpoint checkpoints/final --out exported/ --max-shard-size 2GB --force

OUT/generator/ and OUT/discriminator/ then load with transformers alone:

    model = AutoModelForCausalLM.from_pretrained("exported/generator")
    tokenizer = AutoTokenizer.from_pretrained("exported/generator")

Each holds config.json, model.safetensors (shards and their index when larger
than --max-shard-size), the tokenizer files and a generation_config.json
(greedy, the run's eos and pad tokens). A LoRA run's adapters are merged into
the base weights; with --keep-adapters each directory is instead a peft
adapter directory (adapter_config.json, adapter_model.safetensors) over the
base model the run used. The discriminator's directory also holds its scoring
head, score_head.safetensors, and score_head.json saying how to apply it.
OUT/export.json records the source checkpoint.

From code: `export_checkpoint("checkpoints/best", "exported")`.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

from training.runtime import checkpoint as ckpt
from training.runtime.cli import run_cli
from training.errors import UserError
from training.runtime.loading import load_players

GENERATOR_DIR = "generator"
DISCRIMINATOR_DIR = "discriminator"
SCORE_HEAD_FILE = "score_head.safetensors"
SCORE_HEAD_NOTE = "score_head.json"
EXPORT_NOTE = "export.json"
DEFAULT_MAX_SHARD_SIZE = "5GB"

SCORE_HEAD_USAGE = """\
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

lm = AutoModelForCausalLM.from_pretrained(DIR)   # with --keep-adapters: PeftModel.from_pretrained(base, DIR).get_base_model()
tokenizer = AutoTokenizer.from_pretrained(DIR)
head = load_file(DIR + "/score_head.safetensors")   # weight (1, H), bias (1,)
inputs = tokenizer([text], return_tensors="pt")     # text: build_discriminator_prompt(...), no chat template
hidden = lm.base_model(**inputs).last_hidden_state[:, -1].float()   # (B, H)
probability = torch.sigmoid(hidden @ head["weight"].T + head["bias"]).squeeze(-1)   # (B,)
"""


def export_checkpoint(
    checkpoint_dir: str,
    out_dir: str,
    keep_adapters: bool = False,
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE,
    force: bool = False,
) -> dict:
    """Write OUT/generator/, OUT/discriminator/ and OUT/export.json; returns what export.json holds.

    `out_dir` is written under a temporary name and renamed into place, so a
    failed export leaves nothing half-written; with `force` an existing
    `out_dir` is replaced.
    """
    _check_inputs(checkpoint_dir, out_dir, max_shard_size, force)
    generator, discriminator, config, metrics = load_players(checkpoint_dir, device="cpu")
    if keep_adapters and not (generator.use_lora or discriminator.use_lora):
        raise UserError(
            f"--keep-adapters needs a LoRA checkpoint, but {checkpoint_dir} holds full weights; export it without the flag"
        )
    max_new_tokens = max(config.max_new_tokens)
    summary = {
        "checkpoint": os.path.abspath(checkpoint_dir),
        "stage_id": metrics.get("stage_id"),
        "base_model": generator.model_name_or_path,
        "lora": ("adapters" if keep_adapters else "merged") if generator.use_lora else None,
        "generator": GENERATOR_DIR,
        "discriminator": DISCRIMINATOR_DIR,
        "score_head": f"{DISCRIMINATOR_DIR}/{SCORE_HEAD_FILE}",
    }

    def fill(tmp: str) -> None:
        save_player(generator, os.path.join(tmp, GENERATOR_DIR), keep_adapters, max_shard_size, max_new_tokens)
        disc_dir = os.path.join(tmp, DISCRIMINATOR_DIR)
        save_player(discriminator, disc_dir, keep_adapters, max_shard_size, config.test_max_new_tokens)
        save_score_head(discriminator, disc_dir)
        ckpt.save_json(summary, os.path.join(tmp, EXPORT_NOTE))

    ckpt.write_dir_atomically(out_dir, fill)
    return summary


def _check_inputs(checkpoint_dir: str, out_dir: str, max_shard_size: str, force: bool) -> None:
    """Every mistake that can be seen before the weights are read, as one UserError."""
    from transformers.utils.hub import convert_file_size_to_int

    ckpt.require_checkpoint_dir(checkpoint_dir)
    if not os.path.isfile(os.path.join(checkpoint_dir, ckpt.DISCRIMINATOR_FILE)):
        raise UserError(
            f"checkpoint {checkpoint_dir} has no {ckpt.DISCRIMINATOR_FILE}; export needs both players, "
            "use a checkpoint written by train.py"
        )
    try:
        shard_bytes = convert_file_size_to_int(max_shard_size)
    except ValueError:
        shard_bytes = 0
    if shard_bytes <= 0:
        raise UserError(f"--max-shard-size must be a positive size such as 5GB, 500MB or 2GiB, got {max_shard_size!r}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out {out_dir} is a file; give a directory to create")
    out, source = os.path.realpath(out_dir), os.path.realpath(checkpoint_dir)
    if source == out or source.startswith(out.rstrip(os.sep) + os.sep):
        raise UserError(f"--out {out_dir} holds the checkpoint {checkpoint_dir}; export to another directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not force:
        raise UserError(f"--out {out_dir} exists and is not empty; choose a new directory, or pass --force to replace it")


def save_player(player, directory: str, keep_adapters: bool, max_shard_size: str, max_new_tokens: int) -> None:
    """One player's Hugging Face directory: weights (merged, or LoRA adapters), tokenizer, generation config."""
    os.makedirs(directory)
    generation_config = export_generation_config(player, max_new_tokens)
    if player.use_lora and keep_adapters:
        player.model.save_pretrained(directory)  # adapter_config.json + adapter_model.safetensors
        generation_config.save_pretrained(directory)
    else:
        # Merged on a copy: the player keeps its adapters (the scoring head is saved from it afterwards).
        model = copy.deepcopy(player.model).merge_and_unload() if player.use_lora else player.model
        model.generation_config = generation_config
        model.save_pretrained(directory, max_shard_size=max_shard_size)
    player.tokenizer.save_pretrained(directory)


def export_generation_config(player, max_new_tokens: int):
    """Greedy decoding stopped by the player's eos tokens: what `inference.py` does by default.

    The base model's own sampling defaults (top_k, repetition_penalty, ...) are
    left out: the players were trained and evaluated without them.
    """
    from transformers import GenerationConfig

    eos = player.eos_token_ids
    return GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos[0] if len(eos) == 1 else eos,
        pad_token_id=player.tokenizer.pad_token_id,
        bos_token_id=getattr(player.base_model.generation_config, "bos_token_id", None),
    )


def save_score_head(discriminator, directory: str) -> None:
    """score_head.safetensors (weight (1, H), bias (1,), float32) and score_head.json on how to apply it."""
    from safetensors.torch import save_file

    from models.discriminator import SCORE_HEAD_PREFIX

    state = {name: tensor.detach().float().cpu().contiguous() for name, tensor in discriminator.score_head.state_dict().items()}
    save_file(state, os.path.join(directory, SCORE_HEAD_FILE))
    note = {
        "file": SCORE_HEAD_FILE,
        "tensors": {name: list(tensor.shape) for name, tensor in state.items()},
        "dtype": "float32",
        "project_keys": f"{SCORE_HEAD_PREFIX}weight, {SCORE_HEAD_PREFIX}bias in the project's discriminator.pt",
        "input": (
            "the text reasoning.stages.build_discriminator_prompt(problem, previous_stages, stage_id, output) returns "
            "(it ends with '### Verdict:'), tokenized as plain text: no chat template, the tokenizer's special tokens added"
        ),
        "apply": (
            "logit = weight @ h + bias, where h is the float32 final hidden state of the last token from the "
            "transformer without its LM head (model.base_model(...).last_hidden_state[:, -1]); "
            "sigmoid(logit) is the probability that the output is reference-quality"
        ),
        "batching": (
            "pad on the left and pass position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0), "
            "so every text's last token is in the last column"
        ),
        "usage": SCORE_HEAD_USAGE,
    }
    ckpt.save_json(note, os.path.join(directory, SCORE_HEAD_NOTE))


# --------------------------------------------------------------------------- command line


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Write a checkpoint's generator and discriminator as Hugging Face model directories.",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory written by train.py (e.g. checkpoints/best)")
    parser.add_argument("--out", required=True, help="directory to create; holds generator/, discriminator/ and export.json")
    parser.add_argument("--keep-adapters", action="store_true",
                        help="LoRA checkpoints: write peft adapter directories instead of merging the adapters into the base weights")
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE,
                        help=f"largest safetensors file before the weights are split into shards (default: {DEFAULT_MAX_SHARD_SIZE})")
    parser.add_argument("--force", action="store_true", help="replace --out when it exists and is not empty")
    return parser.parse_args(argv)


def run(args) -> int:
    from training.runtime.build import quiet_model_loading

    quiet_model_loading()
    summary = export_checkpoint(args.checkpoint, args.out, keep_adapters=args.keep_adapters,
                                max_shard_size=args.max_shard_size, force=args.force)
    lora = f" (LoRA {summary['lora']})" if summary["lora"] else ""
    print(f"exported {args.checkpoint} to {args.out}: {GENERATOR_DIR}/, {DISCRIMINATOR_DIR}/{lora}")
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_cli(run, args)


if __name__ == "__main__":
    sys.exit(main())
