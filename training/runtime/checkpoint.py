"""Checkpoint files: atomic directory writes, hard-linked `best/`, safe loading.

A checkpoint directory is written next to its final place under a temporary
name and renamed into place, so a process killed at any moment leaves each
directory either complete or absent. `best/` is made of hard links to the
files of the `stage_N/` it copies, so it costs no second copy of the bytes
(it falls back to a copy where the filesystem has no hard links).

`save_optimizer` (TrainingConfig) says which directories keep the optimizer
state: `all`, `latest` (only the newest stage_N/ or warmup/, and final/ that
links to it) or `none`. A file that drops it is rewritten under a new name and
renamed over the old path, so the directories hard-linked to the old file keep
it intact; `optimizer_state_dict` is then an empty dict.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import tempfile

import numpy as np
import torch

from training.errors import UserError

GENERATOR_FILE = "generator.pt"
DISCRIMINATOR_FILE = "discriminator.pt"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "training_config.json"
_TRASH_SUFFIX = ".old"
_TMP_FILE_MARK = ".tmp-"

log = logging.getLogger(__name__)


def write_dir_atomically(path: str, write_files) -> None:
    """Create directory `path` by calling `write_files(tmp_dir)`, then renaming.

    An existing `path` is replaced; between the two renames it is briefly
    absent, never half-written.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + _TMP_FILE_MARK, dir=parent)
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
        if (name.startswith(".") and _TMP_FILE_MARK in name) or name.endswith(_TRASH_SUFFIX):
            if os.path.isdir(full):
                shutil.rmtree(full, ignore_errors=True)
        elif os.path.isdir(full):  # a file rewrite (drop_optimizer_state) a kill left half-done
            for inner in os.listdir(full):
                if inner.startswith(".") and _TMP_FILE_MARK in inner:
                    try:
                        os.remove(os.path.join(full, inner))
                    except OSError:
                        pass


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


# ============================================================ a training run's state
def save_training_state(path: str, players: tuple, optimizers: tuple, dist, common: dict,
                        with_optimizer: bool = True) -> None:
    """Write generator.pt, discriminator.pt and metrics.json into `path`, atomically (the main process writes).

    `players` and `optimizers` are (generator, discriminator) pairs; `common`
    goes into both files (stage_id, metrics, step, config, rng_state,
    best_reward), and its plain `metrics` into metrics.json. Every rank calls it: under FSDP the weights and optimizer
    state are gathered whole first. Without `with_optimizer`, `optimizer_state_dict` is an empty dict.
    """
    (generator, discriminator), (gen_opt, disc_opt) = players, optimizers
    gen_opt_state, disc_opt_state = (gen_opt.state_dict(), disc_opt.state_dict()) if with_optimizer else ({}, {})
    states = dist.full([
        generator.model_state_dict(), gen_opt_state, discriminator.model_state_dict(), disc_opt_state,
    ])
    if not dist.is_main:
        return
    gen = {**common, **player_info(generator), "model_state_dict": states[0], "optimizer_state_dict": states[1]}
    disc = {**common, **player_info(discriminator), "model_state_dict": states[2], "optimizer_state_dict": states[3]}

    def write(tmp):
        save_torch(gen, os.path.join(tmp, GENERATOR_FILE))
        save_torch(disc, os.path.join(tmp, DISCRIMINATOR_FILE))
        save_json(common["metrics"], os.path.join(tmp, METRICS_FILE))

    write_dir_atomically(path, write)


def write_final(final: str, source: str, config) -> None:
    """`final`: the files of checkpoint `source` (hard-linked) and the full config the run used."""

    def write(tmp):
        for name in (GENERATOR_FILE, DISCRIMINATOR_FILE, METRICS_FILE):
            link_or_copy(os.path.join(source, name), os.path.join(tmp, name))
        config.to_json(os.path.join(tmp, CONFIG_FILE))

    write_dir_atomically(final, write)


def load_training_state(path: str, players: tuple, optimizers: tuple | None, dist) -> dict:
    """Restore both players (and, given `optimizers`, their optimizer states) from `path`; returns generator.pt's dict.

    A checkpoint without discriminator.pt restores the generator only.
    """
    require_checkpoint_dir(path)
    gen = load_torch(os.path.join(path, GENERATOR_FILE))
    disc_path = os.path.join(path, DISCRIMINATOR_FILE)
    disc = load_torch(disc_path) if os.path.isfile(disc_path) else None
    saved = [(gen, players[0], "generator")] + ([(disc, players[1], "discriminator")] if disc is not None else [])
    for state, player, role in saved:
        check_same_model(state, player, role, path)
        player.load_model_state(state["model_state_dict"], state)
    if optimizers is not None:
        without = [role for state, _, role in saved if not state.get("optimizer_state_dict")]
        if without:
            log.warning("checkpoint %s holds no optimizer state for the %s (saved with save_optimizer=latest or none); "
                        "continuing with a fresh optimizer", path, " and ".join(without))
        for (state, _, _), optimizer in zip(saved, optimizers):
            if state.get("optimizer_state_dict"):
                optimizer.load_state_dict(state["optimizer_state_dict"])
                dist.shard_optimizer_state(optimizer)  # FSDP: whole tensors become shards
    return gen


# ============================================================ save_optimizer=latest
def is_resume_dir(path: str, root: str) -> bool:
    """Whether `path` is warmup/ or a stage_N/ directly under the checkpoint tree `root`."""
    name = os.path.basename(os.path.abspath(path))
    same_root = os.path.dirname(os.path.abspath(path)) == os.path.abspath(root)
    return same_root and (name == "warmup" or (name.startswith("stage_") and name[6:].isdigit()))


def strip_optimizer_file(path: str) -> bool:
    """Rewrite the .pt file at `path` with an empty optimizer_state_dict; False when it held none.

    The new file is written beside the old one and renamed over it, so other
    hard links to the old file (best/, final/) keep their bytes unchanged.
    """
    obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not obj.get("optimizer_state_dict"):
        return False
    obj["optimizer_state_dict"] = {}
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix="." + name + _TMP_FILE_MARK, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(directory)
    return True


def _relink(src: str, dst: str) -> None:
    """Make `dst` a hard link to `src` (a copy without hard links), replacing it by a rename."""
    directory, name = os.path.split(dst)
    tmp = os.path.join(directory, "." + name + _TMP_FILE_MARK + "link")
    if os.path.lexists(tmp):
        os.remove(tmp)
    link_or_copy(src, tmp)
    os.replace(tmp, dst)


def _inode(path: str) -> tuple:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def drop_optimizer_state(root: str, keep: str) -> list[str]:
    """save_optimizer=latest: empty the optimizer state of every resume directory under `root` but `keep`.

    Called once `keep` (the stage_N/ or warmup/ just written) is complete, so a
    kill at any moment leaves a resumable directory. warmup/ and each other
    stage_N/ are rewritten file by file (strip_optimizer_file). best/ keeps no
    optimizer state of its own either: it holds it only while it links to
    `keep`'s files; a best/ file that linked to a stripped one is re-linked to
    the stripped file, and one that is a copy is stripped itself. final/ is
    left as it is (it is rewritten at the end of the run from the newest
    stage). Returns the paths rewritten or re-linked.
    """
    root, keep = os.path.abspath(root), os.path.abspath(keep)
    done, stripped = [], {}  # stripped: (dev, ino) of the old file -> the path of its stripped rewrite
    for name in checkpoint_dirs(root):
        directory = os.path.join(root, name)
        if directory == keep or not is_resume_dir(directory, root):
            continue
        for file in (GENERATOR_FILE, DISCRIMINATOR_FILE):
            path = os.path.join(directory, file)
            if not os.path.isfile(path) or _same_file(path, os.path.join(keep, file)):
                continue
            old = _inode(path)
            if strip_optimizer_file(path):
                stripped[old] = path
                done.append(path)
    best = os.path.join(root, "best")
    for file in (GENERATOR_FILE, DISCRIMINATOR_FILE):
        path = os.path.join(best, file)
        if not os.path.isfile(path) or _same_file(path, os.path.join(keep, file)):
            continue
        source = stripped.get(_inode(path))
        if source is not None:
            _relink(source, path)
            done.append(path)
        elif strip_optimizer_file(path):
            done.append(path)
    return done


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_same_model(saved: dict, player, role: str, path: str) -> None:
    name = saved.get("model_name_or_path")
    current = getattr(player, "model_name_or_path", None)
    if name is not None and current is not None and name != current:
        raise UserError(
            f"checkpoint {path} holds a {role} built from {name!r}, but this run's {role} is {current!r}; "
            f"pass --{role}_model={name} or resume from a checkpoint of this model"
        )


def player_info(player) -> dict:
    """What rebuilds the player without guessing (model name, config), as the player describes itself."""
    return plain(dict(player.checkpoint_info()) if hasattr(player, "checkpoint_info") else {})


def plain(obj):
    """JSON- and weights_only-safe copy: dicts, lists, str, int, float, bool, None."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (str, bool, int)) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.floating, np.integer)):
        return plain(obj.item())
    return str(obj)


def rng_state(rng: random.Random) -> dict:
    version, state, gauss = rng.getstate()
    return {"torch": torch.get_rng_state(), "python": [version, list(state), gauss]}


def set_rng_state(rng: random.Random, saved: dict) -> None:
    if "torch" in saved:
        torch.set_rng_state(saved["torch"])
    if "python" in saved:
        version, state, gauss = saved["python"]
        rng.setstate((version, tuple(state), gauss))


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
