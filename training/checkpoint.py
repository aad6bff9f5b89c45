"""Checkpoint files: atomic directory writes, hard-linked `best/`, safe loading.

A checkpoint directory is written next to its final place under a temporary
name and renamed into place, so a process killed at any moment leaves each
directory either complete or absent. `best/` is made of hard links to the
files of the `stage_N/` it copies, so it costs no second copy of the bytes
(it falls back to a copy where the filesystem has no hard links).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch

from training.errors import UserError

GENERATOR_FILE = "generator.pt"
DISCRIMINATOR_FILE = "discriminator.pt"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "training_config.json"
_TRASH_SUFFIX = ".old"


def write_dir_atomically(path: str, write_files) -> None:
    """Create directory `path` by calling `write_files(tmp_dir)`, then renaming.

    An existing `path` is replaced; between the two renames it is briefly
    absent, never half-written.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".tmp-", dir=parent)
    try:
        write_files(tmp)
        _fsync_dir(tmp)
        trash = path + _TRASH_SUFFIX
        if os.path.exists(path):
            shutil.rmtree(trash, ignore_errors=True)
            os.rename(path, trash)
        os.rename(tmp, path)
        shutil.rmtree(trash, ignore_errors=True)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_stale(checkpoint_dir: str) -> None:
    """Remove temporaries a killed run left behind."""
    if not os.path.isdir(checkpoint_dir):
        return
    for name in os.listdir(checkpoint_dir):
        full = os.path.join(checkpoint_dir, name)
        if (name.startswith(".") and ".tmp-" in name) or name.endswith(_TRASH_SUFFIX):
            if os.path.isdir(full):
                shutil.rmtree(full, ignore_errors=True)


def link_or_copy(src: str, dst: str) -> None:
    """Hard-link `src` to `dst`; copy where the filesystem has no hard links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_or_copy_dir(src: str, dst: str) -> None:
    """Make `dst` hold the same files as `src`, by hard links where possible."""

    def fill(tmp):
        for name in sorted(os.listdir(src)):
            if os.path.isfile(os.path.join(src, name)):
                link_or_copy(os.path.join(src, name), os.path.join(tmp, name))

    write_dir_atomically(dst, fill)


def save_torch(obj, path: str) -> None:
    torch.save(obj, path)


def save_json(obj, path: str) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=float)


def load_torch(path: str) -> dict:
    """Load a checkpoint .pt with weights_only=True; one clear error if it can't be read."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise UserError(f"checkpoint file {path} is unreadable or corrupted ({type(e).__name__}); use another checkpoint directory") from None
    if not isinstance(obj, dict) or "model_state_dict" not in obj:
        raise UserError(f"checkpoint file {path} is not a model checkpoint of this project (no model_state_dict)")
    return obj


def load_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is unreadable ({e.__class__.__name__}); the checkpoint may be incomplete") from None


def checkpoint_dirs(root: str) -> list[str]:
    """The checkpoint directories under `root` that hold a generator.pt, in a natural order."""
    if not os.path.isdir(root):
        return []
    found = [n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, GENERATOR_FILE))]

    def key(name):
        if name.startswith("stage_") and name[6:].isdigit():
            return (0, int(name[6:]), name)
        return (1, 0, name)

    return sorted(found, key=key)


def missing_checkpoint_message(path: str) -> str:
    root = os.path.dirname(os.path.abspath(path.rstrip("/"))) or "."
    existing = checkpoint_dirs(root)
    if existing:
        listing = ", ".join(os.path.join(_readable(root), n) for n in existing)
        hint = " (try final)" if "final" in existing else ""
        return f"checkpoint {path} not found; existing checkpoints: {listing}{hint}"
    return f"checkpoint {path} not found and {_readable(root)} holds no checkpoints; run `python train.py` first"


def _readable(path: str) -> str:
    """Relative to the working directory when below it, absolute otherwise."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def require_checkpoint_dir(path: str) -> None:
    if not os.path.isfile(os.path.join(path, GENERATOR_FILE)):
        raise UserError(missing_checkpoint_message(path))


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
