"""Two processes on CPU (gloo) through `accelerate launch`, against the same run in one process.

One module fixture trains the tiny model twice with the shrunken config:
`python train.py` and `accelerate launch --config_file configs/accelerate/cpu_2proc.yaml`
(through tests/_dist_worker.py, which runs train.py's own main and records each
rank's weights). The tests then check what data parallelism promises: every
rank ends with the same weights, the weights moved, only rank 0 wrote, and the
checkpoint is the one a single process writes and loads.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from test_trainer import SHRUNK

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "accelerate", "cpu_2proc.yaml")
WORKER = os.path.join(ROOT, "tests", "_dist_worker.py")
TIMEOUT_S = 300

ARGS = SHRUNK + [
    "--stages=[1, 5]",
    "--problems_per_batch=2",  # one problem per rank
    "--warmup.steps=2",
    "--eval_size=2",
    "--sandbox.workers=1",
]


def _env() -> dict:
    env = dict(os.environ)
    env.update(
        CUDA_VISIBLE_DEVICES="",  # gloo, even where GPUs exist (nccl can't reduce CPU tensors)
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.pop("ACCELERATE_CONFIG_FILE", None)  # only the config we pass
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # a launcher above pytest must not leak its ranks into ours
    return env


def _run(cmd: list, what: str) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"")[-3000:]
        pytest.fail(f"{what} did not finish in {TIMEOUT_S} s (a rank waiting in a collective?):\n{tail}")
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    single, dual, ranks = base / "single", base / "dual", base / "ranks"
    # TrainingConfig's own defaults under SHRUNK, as in test_trainer.py, not configs/default.yaml's recipe
    (base / "base.yaml").write_text("device: cpu\n")
    args = ["--config", str(base / "base.yaml"), *ARGS]
    _run([sys.executable, "train.py", *args, f"--checkpoint_dir={single}"], "single-process train.py")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", CONFIG]
    _run([*launch, WORKER, str(ranks), *args, f"--checkpoint_dir={dual}"], "2-process accelerate launch")
    records = [json.loads((ranks / f"rank{r}.json").read_text()) for r in (0, 1)]
    return {"single": single, "dual": dual, "ranks": records}


def _tree(root) -> set:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}


def _key_paths(obj, prefix="") -> set:
    """Every nested key of a JSON-like dict, as 'a/b/c'."""
    if not isinstance(obj, dict):
        return set()
    out = set()
    for k, v in obj.items():
        out.add(prefix + str(k))
        out |= _key_paths(v, prefix + str(k) + "/")
    return out


def _load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_both_ranks_end_with_identical_weights_that_changed(runs):
    rank0, rank1 = runs["ranks"]
    assert rank0["world_size"] == rank1["world_size"] == 2 and rank0["enabled"] and rank1["enabled"]
    # rank 1 perturbed its weights before the trainer was built: the broadcast undid it
    assert rank0["initial"] == rank1["initial"]
    assert rank0["final"] == rank1["final"]
    for player in ("generator", "discriminator", "score_head"):
        names = [n for n in rank0["final"] if n.startswith(player + "/")]
        assert names, player
        assert any(rank0["final"][n] != rank0["initial"][n] for n in names), f"{player} did not train"


def test_checkpoint_tree_and_keys_match_a_single_process_run(runs):
    single, dual = runs["single"], runs["dual"]
    assert _tree(dual) == _tree(single)
    assert {"warmup", "stage_1", "stage_5", "best", "final"} <= set(os.listdir(dual))
    for name in sorted(_tree(dual)):
        if name.endswith(".pt"):
            a, b = _load(single / name), _load(dual / name)
            assert set(a) == set(b), name
            assert set(a["model_state_dict"]) == set(b["model_state_dict"]), name
            assert set(a["optimizer_state_dict"]["state"]) == set(b["optimizer_state_dict"]["state"]), name
            assert b["config"] == a["config"] | {"checkpoint_dir": b["config"]["checkpoint_dir"]}, name
        elif name.endswith(".json"):
            a, b = json.loads((single / name).read_text()), json.loads((dual / name).read_text())
            assert _key_paths(a) - {"checkpoint_dir"} == _key_paths(b) - {"checkpoint_dir"}, name
    metrics = json.loads((dual / "final" / "metrics.json").read_text())
    assert metrics["eval"]["num_problems"] == 2  # each rank evaluated one, gathered on rank 0


def test_only_rank_0_wrote_one_metrics_line_per_iteration(runs):
    lines = [json.loads(line) for line in (runs["dual"] / "metrics.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (runs["single"] / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r.get("iteration")) for r in lines] == [(r["stage"], r.get("iteration")) for r in single]
    assert [r["stage"] for r in lines] == [0, 1, 5]
    assert [r["global_step"] for r in lines] == [0, 1, 2]


def test_checkpoint_loads_in_one_process_with_rank_0s_weights(runs):
    from _dist_worker import digests
    from training.loading import load_players

    generator, discriminator, config, metrics = load_players(str(runs["dual"] / "final"), device="cpu")
    assert config.stages == [1, 5] and "generator" in metrics
    assert digests(generator, discriminator) == runs["ranks"][0]["final"]


def test_inference_cli_on_a_two_process_checkpoint(runs):
    proc = _run(
        [sys.executable, "inference.py", "--checkpoint", str(runs["dual"] / "best"), "--problem",
         "Implement a function `add(a, b)` that returns the sum of a and b.", "--device", "cpu", "--max-new-tokens", "8"],
        "inference.py",
    )
    headers = [line for line in proc.stdout.splitlines() if line.startswith("Stage ")]
    assert [h.split(":")[0] for h in headers] == [f"Stage {i}" for i in range(1, 6)]


def test_a_parameter_no_rank_used_does_not_move(runs):
    assert [r["unused_parameter_moved"] for r in runs["ranks"]] == [0.0, 0.0]
