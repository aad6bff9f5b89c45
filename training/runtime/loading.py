"""Load a trained checkpoint directory back into players, for inference and evaluation.

    generator, discriminator, config, metrics = load_players("checkpoints/best")
    generator, discriminator, config, metrics = load_model_players("Qwen/Qwen2.5-Coder-1.5B-Instruct")  # untrained

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

from models.vllm_engine import vllm_installed
from training.runtime import checkpoint as ckpt
from training.runtime.build import resolve_device
from training.config import TrainingConfig
from training.runtime.config_parsing import RENAMED_KEYS
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
    engine = config.generation_engine
    if engine == "vllm" and not vllm_installed():
        # A checkpoint stays usable (export, evaluation on a laptop) where its run's engine is not installed.
        log.warning("the run sampled with vLLM, which is not installed here; sampling with the fast engine instead")
        engine = "fast"
    for player in (generator, disc):
        if player is not None:  # sampling as the run sampled
            player.vllm_options = dataclasses.asdict(config.vllm)
            player.generation_engine = engine
    return generator, disc, config, metrics


def load_model_players(model: str, device: str = "auto", test_model: str | None = None, dtype=None,
                       discriminator: bool = True):
    """(generator, discriminator, config, metrics) straight from a Hugging Face model, without a checkpoint.

    `model` (a directory written by `save_pretrained`, a hub id, or "tiny") is
    the generator; the test writer is an LLMDiscriminator on `test_model`
    (default: the same model, loaded a second time). A hub id downloads as
    `from_pretrained` does, unless HF_HUB_OFFLINE is set (`resolve_model`).
    Its scoring head is untrained, which writing tests does not use. The config
    is TrainingConfig's defaults (token budgets, sandbox, families) with these
    model names; metrics is empty. A directory that is not a model is a UserError.
    """
    device = resolve_device(device)
    test_model = test_model or model
    config = TrainingConfig(device=device, generator_model=model, discriminator_model=test_model)
    model, test_model = resolve_model(model, "--model"), resolve_model(test_model, "--test-model")
    dtype = config.dtype if dtype is None else dtype

    from models.discriminator import LLMDiscriminator
    from models.generator import LLMGenerator

    generator = LLMGenerator(model, device=device, dtype=dtype)
    disc = LLMDiscriminator(test_model, device=device, dtype=dtype) if discriminator else None
    return generator, disc, config, {}


def use_engine(engine: str | None, *players) -> None:
    """`--generation-engine`: what samples, for every loaded player given (None keeps what each was loaded with)."""
    for player in players:
        if engine and player is not None:
            player.generation_engine = engine


def players_source(checkpoint: str | None, model: str | None, test_model: str | None,
                   default_checkpoint: str) -> str | None:
    """The checkpoint directory a CLI loads (None when --model names a model, which is checked here).

    --model with --checkpoint, and --test-model without --model, are UserErrors.
    """
    if model is not None and checkpoint is not None:
        raise UserError("--model and --checkpoint exclude each other: --model runs a Hugging Face model as it is, "
                        "--checkpoint a trained one; give one of them")
    if test_model is not None and model is None:
        raise UserError("--test-model needs --model (a checkpoint brings its own discriminator)")
    if model is None:
        return checkpoint or default_checkpoint
    resolve_model(model, "--model")
    if test_model is not None:
        resolve_model(test_model, "--test-model")
    return None


def resolve_model(name: str, flag: str = "--model") -> str:
    """What to load for a --model value: "tiny" (or "tiny-WIDTHxLAYERS"), a directory with config.json, or a hub id.

    A cached hub id loads from its snapshot directory; one that is not cached
    is returned as it is, for `from_pretrained` to download, except with
    HF_HUB_OFFLINE set, where it is a UserError at once. Anything else is a
    UserError.
    """
    from models.tiny import is_tiny_name, tiny_config

    if not name or not name.strip():
        raise UserError(f"{flag} is empty; give a model directory or a hub id")
    if is_tiny_name(name):
        tiny_config(name)  # a UserError for a malformed size
        return name
    usage = "give a directory written by save_pretrained, or the id of a model in the Hugging Face cache"
    if os.path.isdir(name):
        if os.path.isfile(os.path.join(name, "config.json")):
            return name
        if os.path.isfile(os.path.join(name, ckpt.GENERATOR_FILE)):
            raise UserError(f"{flag} {name} is a checkpoint directory written by train.py, not a Hugging Face model; "
                            "pass it with --checkpoint")
        raise UserError(f"{flag} {name} is not a Hugging Face model directory (it has no config.json); {usage}")
    if os.path.exists(name):
        raise UserError(f"{flag} {name} is a file, not a model directory; {usage}")
    if os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name):
        raise UserError(f"{flag} {name}: no such model directory; {usage}")
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        config = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id
        raise UserError(f"{flag} {name} is neither a model directory nor a hub id; {usage}") from None
    if isinstance(config, str):
        return os.path.dirname(config)
    if constants.HF_HUB_OFFLINE:
        raise UserError(f"{flag} {name} is not in the Hugging Face cache, and HF_HUB_OFFLINE is set; "
                        f"fetch it first (`hf download {name}`) or {usage}")
    return name  # from_pretrained downloads it


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
