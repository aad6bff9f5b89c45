"""Build what a run needs from a TrainingConfig: device, players, sandbox, problems.

Shared by train.py, inference.py and notebooks, so every entry point makes
the same objects the same way.
"""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
import torch

from training.config import TrainingConfig
from training.errors import UserError


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available, else cpu; a CUDA device without CUDA is a UserError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} was asked for but CUDA is not available here; use --device=cpu")
    return device


def set_threads(cpu_threads: int) -> None:
    if cpu_threads > 0:
        torch.set_num_threads(cpu_threads)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def quiet_model_loading() -> None:
    """Turn off transformers' per-file progress bars: the CLIs print their own."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def build_players(config: TrainingConfig):
    """The generator and the discriminator named by the config, on its device."""
    from models.discriminator import LLMDiscriminator
    from models.generator import LLMGenerator

    quiet_model_loading()
    device = resolve_device(config.device)
    common = dict(
        device=device,
        dtype=config.dtype,  # the name, not a torch dtype: "auto" alone turns on bf16 autocast on CUDA
        use_lora=config.use_lora,
        lora_r=config.lora.r,
        lora_alpha=config.lora.alpha,
        gradient_checkpointing=config.gradient_checkpointing,
        generation_engine=config.generation_engine,
        vllm_options=dataclasses.asdict(config.vllm),
    )
    generator = LLMGenerator(config.generator_model, **common)
    discriminator = LLMDiscriminator(config.discriminator_model, **common)
    return generator, discriminator


def build_sandbox(config: TrainingConfig):
    from sandbox import Sandbox

    return Sandbox(**dataclasses.asdict(config.sandbox))


def check_writable(directory: str) -> None:
    """Fail early, with one sentence, when checkpoints could not be written."""
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, ".write-probe")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise UserError(f"checkpoint directory {directory} is not writable ({e.strerror}); pass --checkpoint_dir=<a writable path>") from None


def load_run_problems(spec: str, config: TrainingConfig) -> list:
    """Problems from `spec`; curriculum problems restricted to `config.families` when it names any."""
    from training.data.problems import load_problems

    problems = load_problems(spec)
    if config.families:
        from training.data.curriculum.base import REGISTRY

        unknown = sorted(set(config.families) - set(REGISTRY))
        if unknown:
            raise UserError(
                f"unknown curriculum families {unknown}; the valid names are listed in docs/problems.md "
                f"(e.g. {', '.join(sorted(REGISTRY)[:4])}, ...)"
            )
        problems = [p for p in problems if p.source != "curriculum" or p.family in config.families]
    return problems

def spread(problems: list, size: int) -> list:
    """`size` problems taken evenly across the list (all of them when size is 0 or larger)."""
    if not size or size >= len(problems):
        return list(problems)
    step = len(problems) / size
    return [problems[int(i * step)] for i in range(size)]
