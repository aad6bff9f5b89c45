"""Load a trained checkpoint directory back into players, for inference and evaluation.

    generator, discriminator, config, metrics = load_players("checkpoints/best")

Everything needed to rebuild the models is read from the checkpoint itself
(model name, architecture config, LoRA settings, the run's TrainingConfig),
so no flag has to repeat what training already knew. Every failure a user can
cause (wrong directory, a truncated file, weights that don't fit the recorded
architecture, CUDA asked for where there is none) is a one-sentence UserError.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from training import checkpoint as ckpt
from training.build import resolve_device
from training.config import TrainingConfig
from training.config_parsing import RENAMED_KEYS
from training.errors import UserError

log = logging.getLogger(__name__)


def load_players(checkpoint_dir: str, device: str = "auto", dtype=None, discriminator: bool = True):
    """(generator, discriminator, config, metrics) rebuilt from `checkpoint_dir`.

    `device` is cpu, cuda, cuda:N or auto; `dtype` None means the run's own
    ("auto": fp32 weights, with bf16 autocast on CUDA). With `discriminator=False` the
    discriminator is not loaded and None is returned in its place (faster when
    only the generator is needed).
    """
    device = resolve_device(device)  # before reading gigabytes: a wrong device fails at once
    ckpt.require_checkpoint_dir(checkpoint_dir)
    gen_path = os.path.join(checkpoint_dir, ckpt.GENERATOR_FILE)
    gen_ckpt = ckpt.load_torch(gen_path)
    disc_ckpt = None
    if discriminator:
        disc_path = os.path.join(checkpoint_dir, ckpt.DISCRIMINATOR_FILE)
        if not os.path.isfile(disc_path):
            raise UserError(
                f"checkpoint {checkpoint_dir} has no {ckpt.DISCRIMINATOR_FILE}, which writing tests and reranking need; "
                "use a checkpoint written by train.py"
            )
        disc_ckpt = ckpt.load_torch(disc_path)

    # the run's config, with the device these players actually live on
    config = dataclasses.replace(config_from_checkpoint(gen_ckpt, checkpoint_dir), device=device)
    if dtype is None:
        dtype = config.dtype
    metrics = _metrics(checkpoint_dir, gen_ckpt)

    from models.generator import LLMGenerator

    generator = _rebuild(LLMGenerator, gen_ckpt, gen_path, device, dtype)
    disc = None
    if disc_ckpt is not None:
        from models.discriminator import LLMDiscriminator

        disc = _rebuild(LLMDiscriminator, disc_ckpt, os.path.join(checkpoint_dir, ckpt.DISCRIMINATOR_FILE), device, dtype)
    return generator, disc, config, metrics


def config_from_checkpoint(saved: dict, checkpoint_dir: str = "") -> TrainingConfig:
    """The TrainingConfig a checkpoint was trained with (defaults when it records none).

    Keys this version no longer knows are dropped with a warning, so an older
    checkpoint still loads; `final/training_config.json` is the fallback source.
    """
    data = saved.get("config")
    if not isinstance(data, dict):
        path = os.path.join(checkpoint_dir, ckpt.CONFIG_FILE)
        data = ckpt.load_json(path) if checkpoint_dir and os.path.isfile(path) else {}
    known = _known_keys(TrainingConfig, data, prefix="")
    return TrainingConfig.from_dict(known, source=f"{checkpoint_dir or 'checkpoint'} config")


def _known_keys(cls, data: dict, prefix: str) -> dict:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    out = {}
    for key, value in data.items():
        if prefix + key in RENAMED_KEYS:  # from_dict loads it under its new name
            out[key] = value
            continue
        if key not in fields:
            log.warning("checkpoint config key %s%s is unknown to this version; ignored", prefix, key)
            continue
        default = getattr(defaults, key)
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = _known_keys(type(default), value, prefix + key + ".")
        out[key] = value
    return out


def _metrics(checkpoint_dir: str, saved: dict) -> dict:
    path = os.path.join(checkpoint_dir, ckpt.METRICS_FILE)
    if os.path.isfile(path):
        return ckpt.load_json(path)
    return dict(saved.get("metrics") or {})


def _rebuild(cls, saved: dict, path: str, device: str, dtype):
    """cls.from_checkpoint, with the file named in any error it raises."""
    try:
        return cls.from_checkpoint(saved, device=device, dtype=dtype)
    except UserError as e:
        message = str(e).rstrip(".")
        raise UserError(f"{message} (in {path})") from None
