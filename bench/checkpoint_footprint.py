"""Bytes on disk of a full checkpoint tree, ours (hard links) against full copies everywhere, per save_optimizer.

    python bench/checkpoint_footprint.py                      # writes a tree per save_optimizer mode with train.py
                                                              # (three runs side by side, ~30 s), measures them
    python bench/checkpoint_footprint.py --modes all          # one mode only
    python bench/checkpoint_footprint.py --tree checkpoints   # measure an existing tree instead
    python bench/checkpoint_footprint.py --json out.json

1. Measured. A whole tree (warmup/, stage_1..5/, best/, final/) written by
   the trainer's real save path: `train.py` on the default config, shrunken to
   one step of everything, once per `save_optimizer` mode (all, latest, none).
   "Ours" counts each file once per inode (best/ and final/ are hard links to a
   stage_N/); "naive" sums the apparent size of every path, as if every
   directory held full copies.
2. Projected for Qwen2.5-Coder-1.5B as both generator and discriminator
   (configs/qwen2.5-coder-1.5b.yaml: no warm-up, so stage_1..5 hold their own
   bytes and best/ and final/ link to them), full fine-tuning and LoRA, per
   mode. The parameter counts come from the model's config; see `project` and
   `project_modes` for the bytes per parameter and the directories.
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

MODES = ("all", "latest", "none")
# LoRA of configs/qwen2.5-coder-1.5b.yaml: rank 16 on every linear layer of the blocks (models/base.py "all-linear")
QWEN25_LORA_R = 16
STAGE_DIRS = 5  # stage_1..5 hold their own bytes; best/ and final/ are hard links

# One step of everything on the default (tiny) config: a complete tree in about 15 s on one core.
SHRUNKEN = [
    "--warmup.steps=1", "--warmup.test_writer_steps=1", "--warmup.scoring_head_steps=1", "--warmup.batch_size=2",
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


def write_trees(outs: dict) -> dict:
    """{mode: directory}: one train.py per save_optimizer mode, side by side; returns {mode: wall seconds}."""
    start, procs, seconds = time.perf_counter(), {}, {}
    for mode, out in outs.items():
        cmd = [sys.executable, os.path.join(ROOT, "train.py"), f"--checkpoint_dir={out}", *SHRUNKEN,
               f"--save_optimizer={mode}"]
        procs[mode] = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for mode, proc in procs.items():
        _, err = proc.communicate()
        seconds[mode] = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"train.py --save_optimizer={mode} failed ({proc.returncode}):\n{err[-2000:]}")
    return seconds


def optimizer_dirs(root: str) -> list[str]:
    """The directories under `root` whose generator.pt holds optimizer state."""
    import torch

    held = []
    for name in sorted(os.listdir(root), key=_dir_order):
        path = os.path.join(root, name, "generator.pt")
        if os.path.isfile(path) and torch.load(path, map_location="cpu", weights_only=True, mmap=True).get(
                "optimizer_state_dict"):
            held.append(name)
    return held


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


def lora_params(hidden: int, layers: int, intermediate: int, heads: int, kv_heads: int, r: int, **_) -> int:
    """LoRA adapter parameters on every linear layer of a Qwen2 block: r * (in + out) per projection.

    q and o are hidden -> hidden, k and v hidden -> kv_heads * head_dim, gate and up
    hidden -> intermediate, down intermediate -> hidden; the LM head has none.
    """
    kv = kv_heads * (hidden // heads)
    per_layer = r * (2 * (hidden + hidden) + 2 * (hidden + kv) + 3 * (hidden + intermediate))
    return layers * per_layer


def project_modes(params: int, weight_bytes: float, optimizer_bytes: float, players: int = 2,
                  stage_dirs: int = STAGE_DIRS) -> dict:
    """Bytes of a tree per save_optimizer mode; best/ and final/ are hard links and add nothing.

    W = players * params * weight_bytes, O = players * params * optimizer_bytes (one directory's share):
    all = stage_dirs * (W + O); latest = stage_dirs * W + O (only the newest stage_N/, which final/
    links to); none = stage_dirs * W. `latest` peaks while the newest directory is written and the one
    before still holds its state: stage_dirs * W + 2 * O, plus one player's weights for the file being
    rewritten while best/ still links to the old one.
    """
    w, o = players * params * weight_bytes, players * params * optimizer_bytes
    return {"W": w, "O": o, "all": stage_dirs * (w + o), "latest": stage_dirs * w + o, "none": stage_dirs * w,
            "latest_peak": stage_dirs * w + 2 * o + params * weight_bytes}


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
    parser.add_argument("--modes", default=",".join(MODES),
                        help="save_optimizer modes to write a tree for, comma-separated (default: all,latest,none)")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes takes a comma-separated subset of {','.join(MODES)}, got {args.modes!r}")

    env = environment()
    tmp = None
    if args.tree:
        roots, seconds = {"given": args.tree}, {"given": None}
    else:
        base = args.keep or tempfile.mkdtemp(prefix="bench-ckpt-")
        tmp = None if args.keep else base
        roots = {mode: os.path.join(base, mode if len(modes) > 1 else "checkpoints") for mode in modes}
        seconds = write_trees(roots)
    try:
        trees = {mode: measure(root, seconds[mode]) for mode, root in roots.items()}
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    # the per-directory table: the default mode's tree (or the one given)
    measured = trees.get("all") or next(iter(trees.values()))
    result = {"environment": env, "measured": measured, "modes": trees, "projection": projection(),
              "command_train": "python train.py --checkpoint_dir=DIR " + " ".join(SHRUNKEN)
                               + (" --save_optimizer=MODE" if len(trees) > 1 else "")}
    result["figures"] = figures(result)
    print_summary(result)
    if args.json:
        write_json(args.json, result)
    return 0


def measure(root: str, seconds: float | None) -> dict:
    """footprint(root) plus the parameters, bytes per parameter and which directories hold optimizer state."""
    measured = footprint(root)
    stage = next((d for d in ("stage_5", "final", "best") if os.path.isfile(os.path.join(root, d, "generator.pt"))), None)
    if stage is None:
        raise SystemExit(f"{root} holds no stage_5/, final/ or best/ generator.pt to measure")
    gen_file = os.path.join(root, stage, "generator.pt")
    params = state_dict_params(gen_file)
    measured["params"] = params
    measured["bytes_per_param"] = os.path.getsize(gen_file) / params
    measured["optimizer_dirs"] = optimizer_dirs(root)
    measured["train_seconds"] = seconds
    return measured


# (label, parameters per player, weight bytes, optimizer bytes) of each projected recipe
def recipes() -> list[tuple]:
    full = qwen2_params(**QWEN25_CODER_1_5B)
    lora = lora_params(**QWEN25_CODER_1_5B, r=QWEN25_LORA_R)
    return [
        ("full fine-tuning, bf16 weights (2 bytes) + bf16 AdamW moments (4 bytes: torch.optim.AdamW keeps them in the "
         "parameters' dtype)", full, 2, 4),
        ("full fine-tuning, bf16 weights (2 bytes) + fp32 AdamW moments (8 bytes, as with fp32 master state)", full, 2, 8),
        ("full fine-tuning, fp32 weights (4 bytes) + fp32 AdamW moments (8 bytes): --use_lora=false --dtype=float32", full, 4, 8),
        (f"LoRA r={QWEN25_LORA_R} as configured, fp32 adapters (4 bytes) + fp32 AdamW moments (8 bytes), base weights "
         "not saved", lora, 4, 8),
    ]


def projection_old_layouts() -> list[dict]:
    """Full copies in every directory against hard links, with optimizer state in every stage_N/ (save_optimizer=all)."""
    params = qwen2_params(**QWEN25_CODER_1_5B)
    rows = []
    for label, opt in (("bf16 weights + fp32 AdamW moments", 8), ("bf16 weights + bf16 AdamW moments", 4)):
        p = project(params, weight_bytes=2, optimizer_bytes=opt)
        rows.append({"name": f"naive (full copies in 7 directories), all: full fine-tuning, {label}",
                     "per_dir_gb": p["per_dir"] / GB, "unique_dirs": 7, "total_gb": p["naive"] / GB})
    return rows


def projection() -> dict:
    params = qwen2_params(**QWEN25_CODER_1_5B)
    rows, by_recipe = projection_old_layouts(), []
    for label, n, wb, ob in recipes():
        p = project_modes(n, weight_bytes=wb, optimizer_bytes=ob)
        by_recipe.append({"recipe": label, "params_per_player": n, "weight_bytes": wb, "optimizer_bytes": ob,
                          **{k: v / GB for k, v in p.items()}})
        per_dir = (p["W"] + p["O"]) / GB
        each = f"2 players × {n:,} parameters"
        arithmetic = {
            "all": f"{STAGE_DIRS} directories × {each} × ({wb} + {ob}) bytes",
            "latest": f"{STAGE_DIRS} directories × {each} × {wb} bytes + 1 directory × {each} × {ob} bytes",
            "none": f"{STAGE_DIRS} directories × {each} × {wb} bytes",
        }
        for mode in MODES:
            rows.append({"name": f"save_optimizer={mode}: {label}; {arithmetic[mode]}",
                         "per_dir_gb": per_dir if mode != "none" else p["W"] / GB, "unique_dirs": STAGE_DIRS,
                         "total_gb": p[mode] / GB})
    main = by_recipe[0]  # full fine-tuning with bf16 weights, what torch's AdamW keeps
    fp32_moments = by_recipe[1]
    lora = by_recipe[3]
    aim = 60.0  # the bound the figure is checked against

    def against(gb: float) -> str:
        return f"{'within' if gb <= aim else 'over'} {aim:.0f} GB"

    verdict = (
        f"Full fine-tuning with bf16 weights under save_optimizer=latest: {main['latest']:.1f} GB with bf16 moments "
        f"(= {STAGE_DIRS} × {main['W']:.2f} GB of weights + {main['O']:.2f} GB of optimizer state, "
        f"{against(main['latest'])}), {fp32_moments['latest']:.1f} GB with fp32 moments "
        f"({against(fp32_moments['latest'])}) at the end of the run. While the newest stage_N/ is written and the "
        f"one before still holds its state (a kill must leave one resumable), the tree peaks at "
        f"{main['latest_peak']:.1f} GB with bf16 moments ({against(main['latest_peak'])}) and "
        f"{fp32_moments['latest_peak']:.1f} GB with fp32 moments ({against(fp32_moments['latest_peak'])}). "
        f"save_optimizer=all takes {main['all']:.1f} / {fp32_moments['all']:.1f} GB, none {main['none']:.1f} GB. "
        f"LoRA (the config as shipped) saves only the adapters ({lora['params_per_player']:,} parameters per player): "
        f"{lora['all']:.2f} GB all, {lora['latest']:.2f} GB latest, {lora['none']:.2f} GB none."
    )
    why = (f"optimizer state is {main['O']:.1f} GB per stage directory for full fine-tuning (bf16 moments), "
           f"{main['O'] / (main['W'] + main['O']):.0%} of its bytes; save_optimizer=latest keeps one copy of it instead "
           f"of {STAGE_DIRS}, and best/ and final/ are hard links.")
    return {
        "model": "Qwen2.5-Coder-1.5B",
        "config": QWEN25_CODER_1_5B,
        "params_per_player": params,
        "lora_params_per_player": lora["params_per_player"],
        "assumptions": [
            "the same model as generator and discriminator (the discriminator's scoring head adds 1,537 parameters, ignored)",
            "no warm-up directory (that config disables warm-up): stage_1..5 hold their own bytes, best/ and final/ "
            "are hard links",
            "full fine-tuning: every parameter saved (bf16 = 2 bytes, fp32 = 4) with AdamW's two moments "
            "(4 bytes per parameter in bf16, 8 in fp32); LoRA: only the adapters, rank 16 on q, k, v, o, gate, up, "
            "down of each of 28 layers, r × (in + out) each",
            "GB = 10^9 bytes; metrics and config JSON files (kilobytes) and AdamW's per-tensor step counts ignored",
        ],
        "layouts": rows,
        "recipes": by_recipe,
        "ours_gb": main["latest"],
        "naive_gb": project(params, weight_bytes=2, optimizer_bytes=4)["naive"] / GB,
        "all_gb": main["all"],
        "aim_gb": aim,
        "verdict": verdict,
        "why": why,
    }


def figures(result: dict) -> list[dict]:
    m, p = result["measured"], result["projection"]
    dirs = {d["name"]: d for d in m["directories"]}
    stage_bytes = max((d["bytes"] for n, d in dirs.items() if n.startswith("stage_")), default=0)
    links_cost = sum(d["bytes"] - d["linked_bytes"] for n, d in dirs.items() if n in ("best", "final"))
    ratio = m["naive_bytes"] / m["ours_bytes"]
    cheap = stage_bytes > 0 and links_cost <= 0.01 * stage_bytes
    command = COMMANDS["footprint"]
    out = [
        figure(
            f"checkpoint tree of the tiny default run, {len(dirs) - ('.' in dirs)} directories (bytes)",
            f"{m['ours_bytes'] / 1e6:.1f} MB (best/ and final/ add {links_cost:,} bytes)",
            f"full copies in every directory: {m['naive_bytes'] / 1e6:.1f} MB",
            ratio, "best/ and final/ cost <= 1 % of one stage directory", cheap, command,
            "" if cheap else f"best/ and final/ hold {links_cost:,} bytes of their own; were they copied instead of linked?",
        ),
    ]
    modes = result.get("modes", {})
    if "all" in modes:
        full = modes["all"]["ours_bytes"]
        for mode in ("latest", "none"):
            if mode not in modes:
                continue
            t = modes[mode]
            held = t["optimizer_dirs"]
            if mode == "latest":  # best/ holds it only as hard links to stage_5/'s files
                expected = {"stage_5", "final"} | ({"best"} if "best" in held and _linked(t, "best", "stage_5") else set())
            else:
                expected = set()
            ok = set(held) == expected
            out.append(figure(
                f"checkpoint tree of the tiny default run, save_optimizer={mode} (bytes)",
                f"{t['ours_bytes'] / 1e6:.1f} MB (optimizer state in: {', '.join(held) or 'none'})",
                f"save_optimizer=all: {full / 1e6:.1f} MB", full / t["ours_bytes"],
                "optimizer state only in stage_5/ and final/ (best/ when it links to stage_5/)" if mode == "latest"
                else "no optimizer state anywhere", ok, command,
                "" if ok else f"optimizer state found in {', '.join(held)}",
                ratio_note="smaller than save_optimizer=all",
            ))
    main = p["recipes"][0]
    out.append(figure(
        "projected tree for Qwen2.5-Coder-1.5B generator + discriminator, full fine-tuning, bf16, save_optimizer=latest (GB)",
        f"{p['ours_gb']:.1f} GB (peak while a stage is written: {main['latest_peak']:.1f} GB)",
        f"save_optimizer=all: {p['all_gb']:.1f} GB; naive layout: {p['naive_gb']:.1f} GB",
        p["all_gb"] / p["ours_gb"], f"<= {p['aim_gb']:.0f} GB", p["ours_gb"] <= p["aim_gb"], command, p["why"],
        note="bf16 AdamW moments; with fp32 moments " + f"{p['recipes'][1]['latest']:.1f} GB",
        ratio_note="smaller than save_optimizer=all",
    ))
    lora = p["recipes"][3]
    out.append(figure(
        "projected tree for Qwen2.5-Coder-1.5B generator + discriminator, LoRA r=16 as configured, save_optimizer=latest (GB)",
        f"{lora['latest']:.2f} GB", f"save_optimizer=all: {lora['all']:.2f} GB", lora["all"] / lora["latest"],
        "", None, command, note="adapters only; the base weights come from the hub",
        ratio_note="smaller than save_optimizer=all",
    ))
    return out


def _linked(tree: dict, a: str, b: str) -> bool:
    """Whether directories `a` and `b` of a measured tree hold the same bytes, all of them shared (hard links)."""
    dirs = {d["name"]: d for d in tree["directories"]}
    return a in dirs and b in dirs and dirs[a]["bytes"] == dirs[a]["linked_bytes"] == dirs[b]["bytes"]


def print_summary(r: dict) -> None:
    for mode, m in r.get("modes", {"": r["measured"]}).items():
        print(f"\n== tree{' save_optimizer=' + mode if mode else ''}")
        print(f"{'directory':<12}{'files':>6}{'bytes':>14}{'linked':>14}")
        for d in m["directories"]:
            print(f"{d['name']:<12}{d['files']:>6}{d['bytes']:>14,}{d['linked_bytes']:>14,}")
        print(f"ours (each inode once): {m['ours_bytes']:,} bytes; naive: {m['naive_bytes']:,} bytes "
              f"({m['naive_bytes'] / m['ours_bytes']:.2f}x)")
        print(f"generator.pt: {m['bytes_per_param']:.2f} bytes per parameter ({m['params']:,} parameters); "
              f"optimizer state in: {', '.join(m['optimizer_dirs']) or 'none'}")
    p = r["projection"]
    print(f"\n{p['model']}: {p['params_per_player']:,} parameters per player, "
          f"{p['lora_params_per_player']:,} LoRA parameters per player")
    for row in p["layouts"]:
        print(f"  {row['name']:<150}{row['total_gb']:>8.2f} GB")
    print(p["verdict"])


if __name__ == "__main__":
    sys.exit(main())
