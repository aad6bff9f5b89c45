"""Bytes on disk of a full checkpoint tree, ours (hard links) against full copies everywhere.

    python bench/checkpoint_footprint.py                      # writes a tree with train.py (~40 s), measures it
    python bench/checkpoint_footprint.py --tree checkpoints   # measure an existing tree instead
    python bench/checkpoint_footprint.py --json out.json

1. Measured. A whole tree (warmup/, stage_1..5/, best/, final/) written by
   the trainer's real save path: `train.py` on the default config, shrunken to
   one step of everything. "Ours" counts each file once per inode (best/ and
   final/ are hard links to a stage_N/); "naive" sums the apparent size of every
   path, as if every directory held full copies.
2. Projected for Qwen2.5-Coder-1.5B as both generator and discriminator
   (configs/qwen2.5-coder-1.5b.yaml: no warm-up, so stage_1..5 hold their own
   bytes and best/ and final/ link to them). The parameter count comes from
   the model's config; see `project` for the bytes per parameter.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._common import COMMANDS, environment, figure, write_json  # noqa: E402

GB = 1e9  # decimal gigabytes, as disk sizes count them

# Qwen2.5-Coder-1.5B(-Instruct) config.json
QWEN25_CODER_1_5B = dict(hidden=1536, layers=28, intermediate=8960, vocab=151936, heads=12, kv_heads=2, tied=True)

# One step of everything on the default (tiny) config: a complete tree in about 40 s on 2 cores.
SHRUNKEN = [
    "--warmup.steps=1", "--warmup.test_writer_steps=1", "--warmup.batch_size=2",
    "--iterations_per_stage=1", "--problems_per_batch=1", "--group_size=2", "--test_samples=2",
    "--max_new_tokens=[4,4,4,4,8]", "--eval_size=1", "--plot=false", "--progress=false", "--sandbox.workers=1",
]


# ----------------------------------------------------------------------------- measuring


def footprint(root: str) -> dict:
    """Bytes under `root`: each inode once (ours) and every path in full (naive), per directory too."""
    files = []  # (directory relative to root, path, (dev, ino), size)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):  # symlinks and the like hold no checkpoint bytes
                continue
            files.append((rel, path, (st.st_dev, st.st_ino), st.st_size))
    dirs_of_inode: dict = {}
    for rel, _, key, _ in files:
        dirs_of_inode.setdefault(key, set()).add(rel)
    seen, ours, naive = set(), 0, 0
    per_dir: dict = {}
    for rel, _, key, size in files:
        naive += size
        if key not in seen:
            seen.add(key)
            ours += size
        row = per_dir.setdefault(rel, {"name": rel, "files": 0, "bytes": 0, "linked_bytes": 0})
        row["files"] += 1
        row["bytes"] += size
        if len(dirs_of_inode[key]) > 1:
            row["linked_bytes"] += size
    return {"ours_bytes": ours, "naive_bytes": naive, "files": len(files), "inodes": len(seen),
            "directories": [per_dir[k] for k in sorted(per_dir, key=_dir_order)]}


def _dir_order(name: str):
    order = {"warmup": 0, "best": 7, "final": 8, ".": 9}
    if name.startswith("stage_") and name[6:].isdigit():
        return (1 + int(name[6:]), name)
    return (order.get(name, 10), name)


def state_dict_params(path: str) -> int:
    """Parameters in a checkpoint file's model_state_dict, each shared (tied) storage once."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)["model_state_dict"]
    seen, total = set(), 0
    for tensor in state.values():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            total += tensor.numel()
    return total


def write_tree(out: str) -> float:
    """Run train.py's real save path into `out`; returns its wall time."""
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), f"--checkpoint_dir={out}", *SHRUNKEN]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"train.py failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- projecting


def qwen2_params(hidden: int, layers: int, intermediate: int, vocab: int, heads: int, kv_heads: int,
                 tied: bool = True) -> int:
    """Parameters of a Qwen2-architecture causal LM from its config.

    Per layer: q/k/v projections with biases (k and v are kv_heads * head_dim wide),
    o projection without bias, gate/up/down MLP without biases, two RMSNorm weights.
    Plus the embedding, the final norm, and an LM head unless tied to the embedding.
    """
    head_dim = hidden // heads
    kv = kv_heads * head_dim
    attention = (hidden * hidden + hidden) + 2 * (hidden * kv + kv) + hidden * hidden
    layer = attention + 3 * hidden * intermediate + 2 * hidden
    return vocab * hidden * (1 if tied else 2) + layers * layer + hidden


def project(params: int, weight_bytes: float, optimizer_bytes: float, players: int = 2,
            own_dirs: int = 5, linked_dirs: int = 2) -> dict:
    """Bytes of a tree: every directory holds `players` checkpoints of params * (weights + optimizer state).

    Ours: `own_dirs` directories (stage_1..5) hold their own bytes and `linked_dirs`
    (best/, final/) are hard links. Naive: all own_dirs + linked_dirs are full copies.
    """
    per_dir = players * params * (weight_bytes + optimizer_bytes)
    return {"per_dir": per_dir, "ours": own_dirs * per_dir, "naive": (own_dirs + linked_dirs) * per_dir}


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", help="measure this existing checkpoint tree instead of writing one")
    parser.add_argument("--keep", help="write the tree here and keep it (default: a temporary directory)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)

    env = environment()
    tmp = None
    if args.tree:
        root, seconds = args.tree, None
    else:
        root = args.keep or os.path.join(tempfile.mkdtemp(prefix="bench-ckpt-"), "checkpoints")
        tmp = None if args.keep else os.path.dirname(root)
        seconds = write_tree(root)
    try:
        measured = footprint(root)
        stage = next((d for d in ("stage_5", "final", "best") if os.path.isfile(os.path.join(root, d, "generator.pt"))), None)
        if stage is None:
            raise SystemExit(f"{root} holds no stage_5/, final/ or best/ generator.pt to measure")
        gen_file = os.path.join(root, stage, "generator.pt")
        params = state_dict_params(gen_file)
        measured["params"] = params
        measured["bytes_per_param"] = os.path.getsize(gen_file) / params
        measured["train_seconds"] = seconds
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    result = {"environment": env, "measured": measured, "projection": projection(),
              "command_train": "python train.py --checkpoint_dir=DIR " + " ".join(SHRUNKEN)}
    result["figures"] = figures(result)
    print_summary(result)
    if args.json:
        write_json(args.json, result)
    return 0


def projection() -> dict:
    params = qwen2_params(**QWEN25_CODER_1_5B)
    fp32_moments = project(params, weight_bytes=2, optimizer_bytes=8)
    bf16_moments = project(params, weight_bytes=2, optimizer_bytes=4)
    weights_only = project(params, weight_bytes=2, optimizer_bytes=0)
    rows = []
    for label, p in (("bf16 weights + fp32 AdamW moments (assumed)", fp32_moments),
                     ("bf16 weights + bf16 AdamW moments (what torch.optim.AdamW keeps for bf16 parameters)", bf16_moments),
                     ("bf16 weights, no optimizer state", weights_only)):
        rows.append({"name": f"naive: {label}", "per_dir_gb": p["per_dir"] / GB, "unique_dirs": 7, "total_gb": p["naive"] / GB})
        rows.append({"name": f"ours: {label}", "per_dir_gb": p["per_dir"] / GB, "unique_dirs": 5, "total_gb": p["ours"] / GB})
    ours_gb, naive_gb = fp32_moments["ours"] / GB, fp32_moments["naive"] / GB
    links = ("hard links save two of seven directories, but each stage_N/ holds both players' optimizer state, "
             f"{8 / 10:.0%} of its bytes with fp32 moments.")
    # optimizer state dropped from stage_1..4, both players, 8 bytes per parameter
    resume = ("Keeping optimizer state only in the latest stage_N/ (all that resuming needs) would give "
              f"{(fp32_moments['ours'] - 4 * 2 * params * 8) / GB:.0f} GB.")
    # the round figure, from the model's nominal 1.5 B parameters
    fp32_copies = project(1.5e9, weight_bytes=4, optimizer_bytes=0)["naive"] / GB
    verdict = (
        f"With the assumed layout our tree takes {ours_gb:.0f} GB (naive: {naive_gb:.0f} GB). "
        f"{links[0].upper()}{links[1:]} "
        f"Seven full copies of fp32 weights with no optimizer state would take {fp32_copies:.0f} GB "
        "(7 directories × 2 players × 1.5 B parameters × 4 bytes). "
        + resume
    )
    return {
        "model": "Qwen2.5-Coder-1.5B",
        "config": QWEN25_CODER_1_5B,
        "params_per_player": params,
        "assumptions": [
            "the same model as generator and discriminator (the discriminator's scoring head adds 1,537 parameters, ignored)",
            "weights in bf16 (2 bytes per parameter, `dtype: bfloat16` in configs/qwen2.5-coder-1.5b.yaml)",
            "AdamW's two moments in fp32 (8 bytes per parameter); rows below also show bf16 moments and no optimizer state",
            "full fine-tuning (no LoRA), no warm-up directory (that config disables warm-up)",
            "GB = 10^9 bytes; metrics and config JSON files (kilobytes) ignored",
        ],
        "layouts": rows,
        "ours_gb": ours_gb,
        "naive_gb": naive_gb,
        "verdict": verdict,
        "why": f"{links} {resume}",
    }


def figures(result: dict) -> list[dict]:
    m, p = result["measured"], result["projection"]
    dirs = {d["name"]: d for d in m["directories"]}
    stage_bytes = max((d["bytes"] for n, d in dirs.items() if n.startswith("stage_")), default=0)
    links_cost = sum(d["bytes"] - d["linked_bytes"] for n, d in dirs.items() if n in ("best", "final"))
    ratio = m["naive_bytes"] / m["ours_bytes"]
    cheap = stage_bytes > 0 and links_cost <= 0.01 * stage_bytes
    command = COMMANDS["footprint"]
    return [
        figure(
            f"checkpoint tree of the tiny default run, {len(dirs) - ('.' in dirs)} directories (bytes)",
            f"{m['ours_bytes'] / 1e6:.1f} MB (best/ and final/ add {links_cost:,} bytes)",
            f"full copies in every directory: {m['naive_bytes'] / 1e6:.1f} MB",
            ratio, "best/ and final/ cost <= 1 % of one stage directory", cheap, command,
            "" if cheap else f"best/ and final/ hold {links_cost:,} bytes of their own; were they copied instead of linked?",
        ),
        figure(
            "projected tree for Qwen2.5-Coder-1.5B generator + discriminator (GB)",
            f"{p['ours_gb']:.0f} GB (5 of 7 directories hold bytes)",
            f"naive layout: {p['naive_gb']:.0f} GB",
            p["naive_gb"] / p["ours_gb"], "", None, command, p["why"],
            note="every stage_N/ keeps both players' optimizer state", ratio_note="smaller than the naive layout",
        ),
    ]


def print_summary(r: dict) -> None:
    m, p = r["measured"], r["projection"]
    print(f"{'directory':<12}{'files':>6}{'bytes':>14}{'linked':>14}")
    for d in m["directories"]:
        print(f"{d['name']:<12}{d['files']:>6}{d['bytes']:>14,}{d['linked_bytes']:>14,}")
    print(f"ours (each inode once): {m['ours_bytes']:,} bytes; naive: {m['naive_bytes']:,} bytes "
          f"({m['naive_bytes'] / m['ours_bytes']:.2f}x)")
    print(f"generator.pt: {m['bytes_per_param']:.2f} bytes per parameter ({m['params']:,} parameters)")
    print(f"\n{p['model']}: {p['params_per_player']:,} parameters per player")
    for row in p["layouts"]:
        print(f"  {row['name']:<100}{row['total_gb']:>8.1f} GB")
    print(p["verdict"])


if __name__ == "__main__":
    sys.exit(main())
