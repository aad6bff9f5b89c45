"""Training log: one JSON line per iteration, progress bars, and a PNG of the curves.

`checkpoints/metrics.jsonl` is append-only while training; on resume from
stage k the lines of later (interrupted) stages are dropped, so a resumed run
ends with the same log a straight run would have.

With `report_to` (the config key) the main process also sends every scalar of
each line to experiment trackers, named as in the line and at its
`global_step`: TensorBoard event files under <checkpoint_dir>/tensorboard/
(a resumed run drops the interrupted run's later steps there too) and W&B
(one run per process; WANDB_MODE=offline or disabled works without network).
Their packages are optional (requirements-track.txt); a missing one is a
`UserError` when the log is built, on every process.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time
import weakref

import numpy as np
from tqdm import tqdm

from training.errors import UserError

PLOTTED = (
    ("reward", "generator reward"),
    ("train_pass_rate", "code-stage rollout pass rate"),
    ("disc_accuracy", "discriminator accuracy"),
    ("kl", "KL to reference"),
)


# The experiment trackers `report_to` may name; each needs the package of its name.
TRACKERS = ("tensorboard", "wandb")
TRACK_INSTALL = "pip install -r requirements-track.txt"


class MetricsLog:
    def __init__(
        self, checkpoint_dir: str, enabled: bool = True, progress: bool = True, report_to=(), run_config: dict | None = None,
    ):
        self.checkpoint_dir = checkpoint_dir
        self.path = os.path.join(checkpoint_dir, "metrics.jsonl")
        self.enabled = enabled  # False on every process but the main one
        self.progress = progress and enabled
        self.report_to = list(dict.fromkeys(report_to))
        self.run_config = run_config
        self.tensorboard_dir = os.path.join(checkpoint_dir, "tensorboard")
        # every process checks the packages, so a missing one stops them all at start-up, not the main one mid-run
        self._modules = {name: _import_tracker(name) for name in self.report_to}
        self._trackers = {}  # name -> open writer / run, main process only
        self._purge_step = None  # set on resume: TensorBoard hides the interrupted run's steps from here on
        # closes what is still open when the log is dropped or the interpreter exits (a run that raised)
        self._finalizer = weakref.finalize(self, _close_trackers, self._trackers)
        if self.enabled and "wandb" in self.report_to:
            self._tracker("wandb")  # wandb.init's own errors (no login without WANDB_MODE=offline) at start-up too

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in row.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean, sort_keys=True) + "\n")
        if self.report_to:
            self._track(clean)

    def close(self) -> None:
        """Flush and close the trackers; a later `write` opens them again (TensorBoard appends a new event file)."""
        _close_trackers(self._trackers)

    def _track(self, row: dict) -> None:
        """Every number of a metrics line (null ones have no value), at the line's global_step."""
        scalars = {k: float(v) for k, v in row.items() if isinstance(v, (int, float))}
        step = row.get("global_step")
        step = int(step) if isinstance(step, (int, float)) else None
        for name in self.report_to:
            tracker = self._tracker(name)
            if name == "tensorboard":
                for key, value in scalars.items():
                    tracker.add_scalar(key, value, global_step=step)
                tracker.flush()  # a killed run keeps what it logged, like metrics.jsonl
            else:
                tracker.log(scalars, step=step)

    def _tracker(self, name: str):
        if name not in self._trackers:
            module = self._modules[name]
            if name == "tensorboard":
                os.makedirs(self.tensorboard_dir, exist_ok=True)
                self._trackers[name] = module.SummaryWriter(self.tensorboard_dir, purge_step=self._purge_step)
                self._purge_step = None
            else:
                os.makedirs(self.checkpoint_dir, exist_ok=True)
                try:
                    self._trackers[name] = module.init(
                        dir=os.environ.get("WANDB_DIR") or self.checkpoint_dir, config=self.run_config, reinit="create_new"
                    )
                except Exception as e:  # wandb's own errors, e.g. no API key and no network
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise UserError(f"report_to=wandb: wandb.init failed ({first}); without network set WANDB_MODE=offline") from None
        return self._trackers[name]

    def rows(self) -> list:
        if not os.path.isfile(self.path):
            return []
        out = []
        with open(self.path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue  # a line cut by a kill mid-write
        return out

    def truncate_after(self, stage_id: int) -> None:
        """Drop the lines of stages after `stage_id` (left by an interrupted run)."""
        if not self.enabled or not os.path.isfile(self.path):
            return
        kept = [r for r in self.rows() if r.get("stage", 0) <= stage_id]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for row in kept:
                f.write(json.dumps(row, sort_keys=True) + "\n")
        os.replace(tmp, self.path)
        if "tensorboard" in self.report_to:
            steps = [r["global_step"] for r in kept if isinstance(r.get("global_step"), int)]
            self._purge_step = max(steps) + 1 if steps else 0
            writer = self._trackers.pop("tensorboard", None)
            if writer is not None:  # the next write opens one that purges
                writer.close()

    def progress_bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, disable=not self.progress, dynamic_ncols=True, file=sys.stderr, leave=True)

    def message(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text, file=sys.stderr)

    def plot(self, path: str) -> None:
        """Reward, pass rate, discriminator accuracy and KL over global steps, one panel each."""
        if not self.enabled:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [r for r in self.rows() if r.get("stage", 0) >= 1]
        fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
        for ax, (key, title) in zip(axes.flat, PLOTTED):
            points = [(r["global_step"], r[key]) for r in rows if r.get(key) is not None and "global_step" in r]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker=".", linewidth=1)
            for boundary in _stage_starts(rows):
                ax.axvline(boundary, color="grey", linewidth=0.5, linestyle="--")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        for ax in axes[1]:
            ax.set_xlabel("generator step")
        fig.tight_layout()
        tmp = path + ".tmp.png"
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        os.replace(tmp, path)


def _import_tracker(name: str):
    """The module `report_to=name` writes through; a missing package is one UserError naming the install."""
    try:
        if name == "tensorboard":
            importlib.import_module("tensorboard")  # torch's writer needs the tensorboard package itself
            return importlib.import_module("torch.utils.tensorboard")
        return importlib.import_module("wandb")
    except ImportError:
        raise UserError(f"report_to={name} needs the {name} package, which is not installed: {TRACK_INSTALL}") from None


def _close_trackers(trackers: dict) -> None:
    while trackers:
        name, tracker = trackers.popitem()
        if name == "tensorboard":
            tracker.close()
        else:
            tracker.finish()


def _stage_starts(rows: list) -> list:
    starts, last = [], None
    for r in rows:
        if r.get("stage") != last:
            last = r.get("stage")
            if "global_step" in r:
                starts.append(r["global_step"])
    return starts[1:]


def stage_metrics(stage_id: int, history: list, elapsed: float, total_elapsed: float) -> dict:
    """metrics.json of a stage: means over its iterations' rows."""

    def present(key):
        return [row[key] for row in history if row.get(key) is not None]

    def mean(key, default=None):
        values = present(key)
        return float(np.mean(values)) if values else default

    def first(key):
        values = present(key)
        return float(values[0]) if values else None

    def last(key):
        values = present(key)
        return float(values[-1]) if values else None

    terms = sorted({k for row in history for k in row if k.startswith("reward_") and k != "reward_std"})
    return {
        "stage_id": stage_id,
        "iterations": len(history),
        "elapsed_s": elapsed,
        "total_elapsed_s": total_elapsed,
        "generator": {
            "avg_reward": mean("reward", 0.0),
            "train_pass_rate": mean("train_pass_rate"),  # None at stages 1-4: nothing runs there
            # hidden tests (visible_tests > 0), never seen by the reward: None otherwise
            "hidden_pass_rate": mean("hidden_pass_rate"),
            "false_positive_rate": mean("false_positive_rate"),
            # greedy chains from scratch on the probe: the first and the last of the stage
            "probe_pass_rate_first": first("probe_pass_rate"),
            "probe_pass_rate": last("probe_pass_rate"),
            "kl": mean("kl", 0.0),
            "frac_reward_zero_std": mean("frac_reward_zero_std", 0.0),
            "reward_terms": {k[len("reward_"):]: mean(k) for k in terms},
        },
        "discriminator": {
            "loss": mean("disc_loss"),
            "accuracy": mean("disc_accuracy"),
            "test_validity": mean("test_validity"),
            "tests_per_problem": mean("tests_per_problem"),
            "valid_tests_per_problem": mean("valid_tests_per_problem"),
            # test_labels=reference: calls equal to a visible test's, or repeated within a sample (extra_tests.py)
            "test_copy_share": mean("test_copy_share"),
            "test_duplicate_share": mean("test_duplicate_share"),
            "fuzz_tests_per_problem": mean("fuzz_tests_per_problem"),
            "catch_rate": mean("catch_rate"),
            "false_positive_catch_rate": mean("false_positive_catch_rate"),
            "test_writer_reward": mean("test_writer_reward"),
            "mistake_book_size": last("mistake_book_size"),
            "mistake_book_hit_rate": mean("mistake_book_hit_rate"),
        },
        # seconds per iteration, and the test writer's part of it (sampling and scoring sit in time_score)
        "time": {k[len("time_"):]: mean(k) for k in ("time_iteration", "time_score", "time_update_discriminator")
                 if present(k)},
    }


def mean_rows(rows: list) -> dict:
    """One metrics row from every rank's: numbers averaged (peak memory: the largest), the rest from rank 0."""
    if len(rows) == 1:
        return rows[0]
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("stage", "iteration", "global_step"):
            values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
            out[key] = max(values) if key.endswith("peak_memory_gb") else sum(values) / len(values)
    return out


def best_metric(metrics: dict, name: str) -> float:
    """What best/ maximises. avg_reward mixes scales across stages (scoring-head probabilities at 1-4,
    execution at the code stage); eval_pass_at_1 compares held-out pass@1 instead."""
    if name != "eval_pass_at_1":
        return metrics["generator"][name]
    if "eval" not in metrics:
        raise UserError("best_metric=eval_pass_at_1 needs held-out problems: pass eval_problems to train/train_stage")
    return metrics["eval"]["pass_at_1"]


def stage_summary(metrics: dict) -> str:
    generator = metrics["generator"]
    text = f"avg reward {generator['avg_reward']:.3f}"
    if generator.get("train_pass_rate") is not None:
        text += f", train pass rate {generator['train_pass_rate']:.3f}"
    if "eval" in metrics:
        text += f", held-out pass@1 {metrics['eval']['pass_at_1']:.3f}"
    return text


def timed(timings: dict, name: str, fn, *args):
    """fn(*args), its wall time added to timings[name] (an iteration's `time_<name>` columns)."""
    t0 = time.time()
    out = fn(*args)
    timings[name] = timings.get(name, 0.0) + time.time() - t0
    return out

