"""Two processes on CPU (gloo) through `accelerate launch`, against the same run in one process.

One module fixture trains the tiny model three times with the shrunken config:
`python train.py`, `accelerate launch --config_file configs/accelerate/cpu_2proc.yaml`
(data parallel) and the same launch with configs/accelerate/fsdp.yaml (FSDP2),
the last two through tests/_dist_worker.py, which runs train.py's own main and
records each rank's weights. The tests then check what data parallelism
promises: every rank ends with the same weights, the weights moved, only rank 0
wrote, and the checkpoint is the one a single process writes and loads; and
for FSDP, that the players really were sharded and that it trains to the
weights data parallel reaches.
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
FSDP_CONFIG = os.path.join(ROOT, "configs", "accelerate", "fsdp.yaml")
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
    fsdp, fsdp_ranks = base / "fsdp", base / "fsdp_ranks"
    # TrainingConfig's own defaults under SHRUNK, as in test_trainer.py, not configs/default.yaml's recipe
    (base / "base.yaml").write_text("device: cpu\n")
    args = ["--config", str(base / "base.yaml"), *ARGS]
    _run([sys.executable, "train.py", *args, f"--checkpoint_dir={single}"], "single-process train.py")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", CONFIG]
    _run([*launch, WORKER, str(ranks), *args, f"--checkpoint_dir={dual}"], "2-process accelerate launch")
    fsdp_launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", FSDP_CONFIG]
    _run([*fsdp_launch, WORKER, str(fsdp_ranks), *args, f"--checkpoint_dir={fsdp}"], "2-process FSDP launch")
    records = [json.loads((ranks / f"rank{r}.json").read_text()) for r in (0, 1)]
    fsdp_records = [json.loads((fsdp_ranks / f"rank{r}.json").read_text()) for r in (0, 1)]
    return {"single": single, "dual": dual, "ranks": records, "fsdp": fsdp, "fsdp_ranks": fsdp_records}


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


def test_train_py_destroys_the_process_group_before_exit(runs):
    # a gloo group left to interpreter shutdown can abort a rank (SIGABRT) after a finished run
    assert [r["group_closed"] for r in runs["ranks"] + runs["fsdp_ranks"]] == [True] * 4


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
    from training.runtime.loading import load_players

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


# ----------------------------------------------------------------------------- FSDP


def test_fsdp_shards_both_players_and_both_ranks_end_identical(runs):
    rank0, rank1 = runs["fsdp_ranks"]
    assert rank0["sharded"] and rank1["sharded"]
    # each rank holds about half of the optimizer state (a dimension of odd size splits unevenly)
    assert 0.4 < rank0["optimizer_state_share"] < 0.6 and 0.4 < rank1["optimizer_state_share"] < 0.6
    assert rank0["initial"] == rank1["initial"]  # rank 1's perturbation was undone before sharding
    assert rank0["final"] == rank1["final"]
    for player in ("generator", "discriminator", "score_head"):
        names = [n for n in rank0["final"] if n.startswith(player + "/")]
        assert any(rank0["final"][n] != rank0["initial"][n] for n in names), f"{player} did not train"


def test_fsdp_warm_up_reaches_the_weights_data_parallel_reaches(runs):
    # Supervised warm-up sees the same examples either way, so the weights agree to float
    # precision. (RL stages sample, and a last-bit difference can flip a sampled token.)
    ddp = _load(runs["dual"] / "warmup" / "generator.pt")["model_state_dict"]
    fsdp = _load(runs["fsdp"] / "warmup" / "generator.pt")["model_state_dict"]
    start = _load(runs["fsdp"] / "stage_1" / "generator.pt")["model_state_dict"]
    assert set(ddp) == set(fsdp)
    assert max((ddp[k].float() - fsdp[k].float()).abs().max().item() for k in ddp) < 1e-5
    assert any(not torch.equal(start[k], fsdp[k]) for k in fsdp)  # and RL moved them afterwards


@pytest.fixture(scope="module")
def fsdp_mechanics(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp_mechanics")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", FSDP_CONFIG]
    _run([*launch, os.path.join(ROOT, "tests", "_fsdp_worker.py"), str(out)], "FSDP mechanics worker")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_fsdp_gradients_equal_the_average_over_ranks_with_uneven_micro_batches(fsdp_mechanics):
    for record in fsdp_mechanics:
        assert record["sharded"]
        assert record["max_grad_error"] < 1e-6  # against a replica that ran every rank's micro-batches
        assert record["norm"] == pytest.approx(record["whole_norm"], rel=1e-4)
        assert record["clipped_norm"] == pytest.approx(0.01, rel=1e-3)


def test_fsdp_state_dicts_gather_whole_on_rank_0_and_load_back_into_shards(fsdp_mechanics):
    for record in fsdp_mechanics:
        assert record["full_on_rank0_only"] and record["load_round_trip"]


def test_fsdp_checkpoint_has_the_single_process_tree_and_loads_in_one_process(runs):
    from _dist_worker import digests
    from training.runtime.loading import load_players

    assert _tree(runs["fsdp"]) == _tree(runs["single"])
    state = _load(runs["fsdp"] / "stage_5" / "generator.pt")
    assert all(type(v) is torch.Tensor for v in state["model_state_dict"].values())  # whole tensors, not shards
    generator, discriminator, _, _ = load_players(str(runs["fsdp"] / "final"), device="cpu")
    assert digests(generator, discriminator) == runs["fsdp_ranks"][0]["final"]


# ------------------------------------------------------------------ loss variants


@pytest.fixture(scope="module", params=["data parallel", "FSDP"])
def loss_ranks(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("loss_ranks")
    config = CONFIG if request.param == "data parallel" else FSDP_CONFIG
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config]
    _run([*launch, os.path.join(ROOT, "tests", "_loss_worker.py"), str(out)], f"{request.param} loss worker")
    return request.param, [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_each_loss_type_on_two_processes_gives_the_one_process_update(loss_ranks):
    mode, records = loss_ranks
    assert [r["rows"] for r in records] == [5, 7]  # uneven shares, micro-batches of 2
    assert all(r["sharded"] == (mode == "FSDP") for r in records)
    for record in records:
        sizes = [record[t]["update_size"] for t in ("grpo", "dapo", "dr_grpo")]
        assert len({round(x, 6) for x in sizes}) == 3 and min(sizes) > 1e-3  # three different reductions, all moved
        for loss_type in ("grpo", "dapo", "dr_grpo"):
            assert record[loss_type]["max_error"] < 1e-6, (mode, loss_type)


# ------------------------------------------------------------------ launch settings


def test_a_deepspeed_launch_stops_with_one_line_pointing_to_fsdp():
    env = _env() | {"ACCELERATE_USE_DEEPSPEED": "true"}
    proc = subprocess.run(
        [sys.executable, "train.py", "--device=cpu"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "DeepSpeed is not supported" in lines[0] and "fsdp.yaml" in lines[0]


def test_fsdp_parameter_offload_is_refused(monkeypatch):
    from training.runtime.distributed import Distributed
    from training.errors import UserError

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
    with pytest.raises(UserError, match="offload_reference"):
        Distributed()


def test_one_process_with_fsdp_settings_shards_nothing(monkeypatch):
    from training.runtime.distributed import Distributed

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for key in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(key, raising=False)
    dist = Distributed()
    model = torch.nn.Linear(2, 2)
    dist.prepare_model(model)
    assert not dist.fsdp and not dist.is_sharded(model)
    with dist.gathered(model):
        model(torch.ones(1, 2)).sum().backward()
    dist.sync_gradients(model, list(model.parameters()))
    assert type(model.weight) is torch.nn.Parameter and model.weight.grad is not None
