"""The experiment command: arms x seeds from shared warm-ups, a table, and a killed run that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from training.errors import UserError
from training.evaluation.experiment import Spec, columns, mean_se, plan, table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL = [
    "--families=[affine,reverse_string]", "--sandbox.workers=1", "--max_new_tokens=[16,16,16,16,48]",
    "--test_max_new_tokens=24",
]
SPEC = {
    "seeds": [0],
    "warmup": [*SMALL, "--visible_tests=1", "--warmup.steps=2", "--warmup.test_writer_steps=1",
               "--warmup.scoring_head_steps=1", "--warmup.batch_size=4"],
    "rl": ["--stages=[5]", "--iterations_per_stage=[0,0,0,0,2]", "--group_size=2", "--problems_per_batch=2",
           "--test_samples=2", "--probe_problems=2", "--probe_every=1"],
    "arms": {"warmup": None, "exec_1": ["--use_discriminator=false"]},
    "compare": [["exec_1", "warmup"]],
    "evaluate": {"limit": 2, "n": 2, "temperature": 1.0, "rerank": 2, "visible_tests": 1},
}


def _spec_file(tmp_path, data=SPEC) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(spec: str, out: str, *extra) -> subprocess.Popen:
    # Started as `nohup ... &` starts it: with SIGINT ignored, so `kill` (SIGTERM) is how it is stopped.
    return subprocess.Popen([sys.executable, "-m", "training.experiment", "--spec", spec, "--out", out, *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ignore_sigint)


def _processes_naming(text: str) -> list:
    """The command lines of running processes that contain `text`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_plan_shares_each_seeds_warmup(tmp_path):
    spec = Spec.load(_spec_file(tmp_path, {**SPEC, "seeds": [0, 1], "arms": {"warmup": None, "a": [], "b": []},
                                           "compare": [["a", "b"]]}))
    jobs = plan(spec, str(tmp_path))
    names = [j.name for j in jobs]
    assert names[:2] == ["seed0/warmup", "seed1/warmup"]
    for seed in (0, 1):
        warm = os.path.join(str(tmp_path), f"seed_{seed}", "warmup_run", "warmup")
        trains = [j for j in jobs if j.name.startswith(f"seed{seed}/") and j.name.endswith("/train")]
        assert len(trains) == 2
        for job in trains:  # every RL arm resumes from its own seed's warm-up
            assert job.command[job.command.index("--resume") + 1] == warm
            assert f"--seed={seed}" in job.command and job.after == [f"seed{seed}/warmup"]


def test_a_supervised_arm_is_a_warmup_of_its_own_evaluated_like_an_rl_arm(tmp_path):
    data = {**SPEC, "arms": {"warmup": None, "exec_1": ["--use_discriminator=false"],
                             "sft_long": {"supervised": ["--warmup.steps=4"]}}}
    jobs = {j.name: j for j in plan(Spec.load(_spec_file(tmp_path, data)), str(tmp_path))}
    train = jobs["seed0/sft_long/train"]
    assert "--resume" not in train.command and "--stages=[]" in train.command
    assert train.after == []  # it does not wait for the shared warm-up
    flags = [c for c in train.command if c.startswith("--warmup.steps")]
    assert flags == ["--warmup.steps=2", "--warmup.steps=4"]  # the shared warm-up's flags, then its own: its own win
    assert not any(c in train.command for c in SPEC["rl"])
    run_dir = os.path.join(str(tmp_path), "seed_0", "sft_long")
    assert train.done == [os.path.join(run_dir, "final")]
    assert jobs["seed0/sft_long/eval"].after == ["seed0/sft_long/train"]
    assert os.path.join(run_dir, "final") in jobs["seed0/sft_long/eval"].command[-1]


def test_the_table_shows_each_arms_training_minutes(tmp_path):
    out = str(tmp_path)
    for arm, path in (("warmup", "warmup_run"), ("exec_1", "exec_1")):
        os.makedirs(os.path.join(out, "seed_0", path, "final"))
        for kind in ("greedy", "sampled"):
            with open(os.path.join(out, "seed_0", path, f"eval_{kind}.json"), "w") as f:
                json.dump({"results": [{"pass@1": 0.5, "pass@2": 0.75}]}, f)
    spec = Spec.load(_spec_file(tmp_path))
    times = {"seed0/warmup": 300.0, "seed0/warmup/eval": 60.0, "seed0/exec_1/train": 900.0}
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table(spec, out, times).splitlines()[2:4]}
    column = [c for c, _, _ in columns(2)].index("training minutes") + 1
    assert rows["warmup"][column] == "5.00" and rows["exec_1"][column] == "15.00"


@pytest.mark.parametrize("bad, message", [
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"arms": {"x": None}}, "only the arm named 'warmup' may be null"),
    ({"arms": {"x": ["oops"]}}, "arm 'x' must be null, a list of --key=value flags"),
    ({"arms": {"x": {"supervised": "--warmup.steps=9"}}}, "arm 'x' must be null, a list of --key=value flags"),
    ({"arms": {"x": {"rl": []}}}, "arm 'x' must be null, a list of --key=value flags"),
    ({"compare": [["exec_1", "nope"]]}, "compare lists pairs of arm names"),
    ({"extra": 1}, "unknown key 'extra'"),
])
def test_bad_spec_is_one_error(tmp_path, bad, message):
    with pytest.raises(UserError, match=message):
        Spec.load(_spec_file(tmp_path, {**SPEC, **bad}))


def test_mean_se():
    m, se, n = mean_se([0.1, 0.3, None])
    assert (round(m, 6), round(se, 6), n) == (0.2, 0.1, 2)
    assert mean_se([]) == (None, None, 0)


def test_two_arms_one_seed_table_and_a_killed_arm_resumes(tmp_path):
    spec, out = _spec_file(tmp_path), str(tmp_path / "out")
    proc = _run(spec, out)
    train_dir = os.path.join(out, "seed_0", "exec_1")
    for line in proc.stderr:  # the runner says when it starts a job: kill it then, long before the arm can finish
        if line.startswith("started seed0/exec_1/train"):
            break
    else:
        raise AssertionError(f"the RL arm never started: {proc.communicate()}")
    proc.send_signal(signal.SIGTERM)  # killed mid-way: the arm is not finished
    proc.communicate(timeout=120)
    assert proc.returncode == 130  # interrupted, not killed outright
    time.sleep(1)
    assert not _processes_naming(train_dir)  # the arm's run went with the runner: no orphan to race a restart
    assert not os.path.isdir(os.path.join(train_dir, "final"))
    warmup_times = json.load(open(os.path.join(out, "jobs.json")))
    assert "seed0/warmup" in warmup_times

    proc = _run(spec, out)
    stdout, stderr = proc.communicate(timeout=480)
    assert proc.returncode == 0, stderr[-3000:]
    assert "1 of 4 jobs already done" in stderr and "started seed0/warmup\n" not in stderr  # the warm-up is not redone
    assert "started seed0/exec_1/train" in stderr  # the killed arm runs again, from the warm-up
    assert os.path.isdir(os.path.join(train_dir, "final"))
    text = open(os.path.join(out, "table.md")).read()
    header = text.splitlines()[0]
    for column, _, _ in columns(2):
        assert column in header
    assert "| warmup | 1 |" in text and "| exec_1 | 1 |" in text
    assert "exec_1 − warmup" in text
    # the RL arm logged the probe and the hidden-test metrics; the table reads them back
    assert "Job time" in text
    row = [line for line in text.splitlines() if line.startswith("| exec_1 | 1 |")][0]
    cells = [c.strip() for c in row.strip("|").split("|")]
    values = dict(zip(["arm", "seeds"] + [c for c, _, _ in columns(2)], cells))
    assert values["greedy, rl_only families"] == "-"  # the run's two families are both sft families
    for column in ("greedy pass@1", "sampled pass@1", "pass@2", "greedy, sft families", "CodeT, own writer", "probe, last"):
        assert values[column] != "-", column
        assert 0.0 <= float(values[column].split()[0]) <= 100.0


def test_the_shipped_spec_plans_the_whole_table(tmp_path):
    spec = Spec.load(os.path.join(ROOT, "configs", "experiments", "sparse_tests.yaml"))
    jobs = plan(spec, str(tmp_path))
    kinds = [j.name.split("/")[-1] for j in jobs]
    assert (kinds.count("warmup"), kinds.count("train"), kinds.count("eval"), kinds.count("tests")) == (3, 21, 24, 15)
    for job in jobs:  # the test-writing evaluation reads what each run's writer read: its config decides
        if job.name.endswith("/tests"):
            assert "--test-validity" in job.command and "--test-writer-input" not in job.command
    assert spec.arms["warmup"] is None and len(spec.seeds) >= 3
    for job in jobs:  # the table's held-out instances and their false positives under one visible test
        if job.name.endswith("/eval"):
            assert "--visible-tests 1" in job.command[-1] and "heldout_instances" in job.command[-1]
