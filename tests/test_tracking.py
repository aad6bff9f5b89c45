"""report_to: experiment trackers get every scalar of metrics.jsonl, under its name, at its global_step."""

import json
import math
import sys
import types

import pytest

from training.config import TrainingConfig, describe_fields
from training.errors import UserError
from training.runtime.metrics import MetricsLog

ROWS = [
    {"stage": 0, "warmup_generator_loss": 2.25, "discriminator_from_generator": True, "global_step": 0},
    {"stage": 1, "iteration": 0, "reward": 0.5, "kl": 0.01, "train_pass_rate": float("nan"), "grad_norm": 3, "global_step": 1},
    {"stage": 5, "iteration": 0, "reward": 0.25, "kl": 0.02, "train_pass_rate": 0.125, "disc_accuracy": 0.75, "global_step": 2},
    {"stage": 5, "iteration": 1, "reward": 0.375, "kl": float("inf"), "train_pass_rate": 0.5, "note": "text", "global_step": 3},
]


def _jsonl_rows(directory):
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def _event_scalars(directory) -> dict:
    """{tag: [(step, value), ...]} of every TensorBoard event file under `directory`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory), size_guidance={"scalars": 0})  # 0 = keep every point
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _expected(rows) -> dict:
    """What the trackers should hold for these metrics.jsonl rows: every number (null = no value), by name."""
    out = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, (int, float)) and value is not None:
                out.setdefault(key, []).append((row["global_step"], float(value)))
    return out


def _assert_events_match(scalars: dict, expected: dict):
    assert set(scalars) == set(expected)
    for tag, points in expected.items():
        assert [s for s, _ in scalars[tag]] == [s for s, _ in points], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def _write_rows(log: MetricsLog) -> None:
    """Every row of ROWS through `log`, then close it."""
    for row in ROWS:
        log.write(row)
    log.close()


# ------------------------------------------------------------------ tensorboard
def test_tensorboard_event_files_hold_every_metrics_line_scalar(tmp_path):
    pytest.importorskip("tensorboard")
    _write_rows(MetricsLog(str(tmp_path), progress=False, report_to=["tensorboard"]))
    rows = _jsonl_rows(tmp_path)
    assert rows[1]["train_pass_rate"] is None and rows[3]["kl"] is None  # non-finite: null in the line, no point
    scalars = _event_scalars(tmp_path / "tensorboard")
    _assert_events_match(scalars, _expected(rows))
    assert scalars["reward"] == [(1, 0.5), (2, 0.25), (3, 0.375)]
    assert scalars["discriminator_from_generator"] == [(0, 1.0)]
    assert "note" not in scalars and "train_pass_rate" in scalars and "kl" in scalars


def test_metrics_jsonl_is_the_same_with_and_without_trackers(tmp_path):
    pytest.importorskip("tensorboard")
    plain, tracked = tmp_path / "plain", tmp_path / "tracked"
    for directory, report_to in ((plain, []), (tracked, ["tensorboard"])):
        _write_rows(MetricsLog(str(directory), progress=False, report_to=report_to))
    assert (plain / "metrics.jsonl").read_bytes() == (tracked / "metrics.jsonl").read_bytes()
    assert sorted(p.name for p in plain.iterdir()) == ["metrics.jsonl"]
    assert sorted(p.name for p in tracked.iterdir()) == ["metrics.jsonl", "tensorboard"]


def test_only_the_main_process_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    _write_rows(MetricsLog(str(tmp_path), enabled=False, report_to=["tensorboard"]))
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_resume_drops_the_interrupted_steps_from_tensorboard_too(tmp_path):
    pytest.importorskip("tensorboard")
    first = MetricsLog(str(tmp_path), progress=False, report_to=["tensorboard"])
    for step, stage in ((1, 1), (2, 1), (3, 2), (4, 2)):  # killed during stage 2, after its step 4
        first.write({"stage": stage, "iteration": 0, "reward": float(step), "global_step": step})
    first.close()
    resumed = MetricsLog(str(tmp_path), progress=False, report_to=["tensorboard"])
    resumed.truncate_after(1)  # what load_checkpoint(stage_1) does
    resumed.write({"stage": 2, "iteration": 0, "reward": 30.0, "global_step": 3})
    resumed.close()
    resumed.write({"stage": 2, "iteration": 1, "reward": 40.0, "global_step": 4})  # reopened after close
    resumed.close()
    rows = _jsonl_rows(tmp_path)
    assert [r["global_step"] for r in rows] == [1, 2, 3, 4]
    scalars = _event_scalars(tmp_path / "tensorboard")
    assert scalars["reward"] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    _assert_events_match(scalars, _expected(rows))


# ------------------------------------------------------------------ wandb
class _FakeRun:
    def __init__(self, **kwargs):
        self.init_kwargs, self.logged, self.finished = kwargs, [], 0

    def log(self, data, step=None):
        self.logged.append((step, dict(data)))

    def finish(self):
        self.finished += 1


def _fake_wandb(monkeypatch):
    runs = []
    module = types.ModuleType("wandb")
    module.init = lambda **kwargs: runs.append(_FakeRun(**kwargs)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", module)
    return runs


def test_wandb_gets_every_scalar_at_its_global_step(tmp_path, monkeypatch):
    runs = _fake_wandb(monkeypatch)
    log = MetricsLog(str(tmp_path), progress=False, report_to=["wandb"], run_config={"seed": 3})
    assert len(runs) == 1  # started when the log is built: wandb's own errors come at start-up
    _write_rows(log)
    run = runs[0]
    assert run.init_kwargs["config"] == {"seed": 3} and run.init_kwargs["dir"] == str(tmp_path)
    assert "mode" not in run.init_kwargs  # WANDB_MODE decides
    assert run.finished == 1
    rows = _jsonl_rows(tmp_path)
    assert [step for step, _ in run.logged] == [r["global_step"] for r in rows]
    for (_, data), row in zip(run.logged, rows):
        assert data == {k: float(v) for k, v in row.items() if isinstance(v, (int, float))}
    assert "train_pass_rate" not in run.logged[1][1] and run.logged[2][1]["train_pass_rate"] == 0.125


def test_wandb_is_not_started_on_other_processes(tmp_path, monkeypatch):
    runs = _fake_wandb(monkeypatch)
    log = MetricsLog(str(tmp_path), enabled=False, report_to=["wandb"])
    log.write(ROWS[0])
    log.close()
    assert runs == []


def test_wandb_offline_run_is_written_under_the_checkpoint_dir(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    _write_rows(MetricsLog(str(tmp_path), progress=False, report_to=["wandb"], run_config={"seed": 0}))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("name", ["tensorboard", "wandb"])
@pytest.mark.parametrize("enabled", [True, False])
def test_a_missing_tracker_package_is_one_error_naming_the_install(tmp_path, monkeypatch, name, enabled):
    monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    with pytest.raises(UserError) as e:
        MetricsLog(str(tmp_path), enabled=enabled, report_to=[name])
    message = str(e.value)
    assert "\n" not in message and name in message and "pip install -r requirements-track.txt" in message
    assert not (tmp_path / "tensorboard").exists()


def test_no_tracker_imports_nothing(tmp_path, monkeypatch):
    for name in ("tensorboard", "wandb"):
        monkeypatch.setitem(sys.modules, name, None)
    log = MetricsLog(str(tmp_path), progress=False)
    log.write(ROWS[1])
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_report_to_defaults_to_none_and_has_help():
    assert TrainingConfig().report_to == []
    help_text = {key: h for key, _, h in describe_fields()}["report_to"]
    assert "tensorboard" in help_text and "wandb" in help_text


@pytest.mark.parametrize("value", ["[tensorbord]", "[tensorboard, mlflow]"])
def test_an_unknown_tracker_is_one_error_naming_the_valid_ones(value):
    with pytest.raises(UserError) as e:
        TrainingConfig().with_overrides([f"--report_to={value}"])
    message = str(e.value)
    assert "\n" not in message and "report_to" in message and "tensorboard, wandb" in message
    assert ("tensorbord" if "tensorbord" in value else "mlflow") in message


def test_report_to_must_be_a_list():
    with pytest.raises(UserError, match="report_to"):
        TrainingConfig(report_to="tensorboard")
    with pytest.raises(UserError, match="report_to"):
        TrainingConfig().with_overrides(["--report_to=tensorboard"])
    assert TrainingConfig().with_overrides(["--report_to=[tensorboard, wandb]"]).report_to == ["tensorboard", "wandb"]


# ------------------------------------------------------------------ a trainer's run
def test_a_short_run_logs_its_metrics_lines_to_tensorboard(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from sandbox import Sandbox
    from test_trainer import make_trainer
    from training.data.curriculum import load_curriculum

    problems = load_curriculum("train", per_family=1)[:6]
    with Sandbox(timeout_s=1.0, memory_mb=512, workers=1) as sandbox:
        trainer = make_trainer(tmp_path, sandbox, "--stages=[1]", "--report_to=[tensorboard]")
        trainer.train(problems)
    assert trainer.log._trackers == {}  # closed when the run ended
    rows = _jsonl_rows(tmp_path)
    assert [r["stage"] for r in rows] == [0, 1]
    scalars = _event_scalars(tmp_path / "tensorboard")
    _assert_events_match(scalars, _expected(rows))
    for key in ("reward", "kl", "warmup_generator_loss", "global_step"):
        assert key in scalars, key
    assert all(math.isfinite(v) for points in scalars.values() for _, v in points)


def test_the_trainer_stops_at_start_up_without_the_package(tmp_path, monkeypatch):
    from test_trainer import make_trainer

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(UserError, match="requirements-track.txt"):
        make_trainer(tmp_path, None, "--report_to=[tensorboard]")
    assert not (tmp_path / "metrics.jsonl").exists()
