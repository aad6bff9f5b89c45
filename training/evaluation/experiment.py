"""Run arms x seeds of an experiment on this machine and write its markdown table.

    python -m training.experiment --spec configs/experiments/sparse_tests.yaml --out experiments/sparse_tests
    python -m training.experiment --spec ... --out ... --table-only      # the table from what has finished

A spec (YAML) names the seeds, the overrides of each seed's shared warm-up,
the overrides every RL arm shares, the arms, the pairs of arms to compare
and the evaluation:

    seeds: [0, 1, 2]
    warmup: [--visible_tests=1]
    rl: [--stages=[5], "--iterations_per_stage=[0,0,0,0,40]"]
    arms: {warmup: null, exec_1: [--use_discriminator=false], adv_1: [],
           sft_long: {supervised: [--warmup.steps=1200]}}
    compare: [[adv_1, exec_1]]
    evaluate: {problems: curriculum:heldout_instances, limit: 48, n: 8, temperature: 1.0, rerank: 8, visible_tests: 1,
               test_validity: [adv_1]}

Per seed, one warm-up (`train.py --stages=[]`) writes `<out>/seed_S/warmup_run/`;
every RL arm resumes from its `warmup/` into `<out>/seed_S/<arm>/` (an arm
set to null is the warm-up itself; an arm `{supervised: [flags]}` is a
warm-up of its own, the shared warm-up's flags plus these, with no RL: the
supervised baseline an RL arm must beat at equal CPU time, which the table's
training minutes show), and each checkpoint is evaluated greedily and by
sampling (`python -m training.evaluate`), CodeT-reranked once with its own
test writer and once with the warm-up's; an arm in `test_validity` also
has its test writer write tests for its greedy code on the same problems
(`--test-validity`, reading what the run's writer read). Jobs run as subprocesses, `--jobs`
at a time (default 2) with one torch thread each. A job is done when its
output exists, so a killed experiment started again skips what finished and
reruns what did not; Ctrl-C or `kill` stops the runner and every job it
started. `<out>/jobs.json` keeps each job's time; `<out>/table.md` holds means
with standard errors over seeds and the paired differences.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from training.runtime.cli import run_cli, write_atomically
from training.runtime.config_parsing import read_yaml_mapping
from training.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WARMUP_ARM = "warmup"  # the arm name reserved for the warm-up itself
COMMON_TRAIN = ["--eval_problems=", "--plot=false", "--progress=false", "--cpu_threads=1", "--warmup.cpu_threads=1"]


# ============================================================================ spec
@dataclass
class Spec:
    seeds: list
    warmup: list
    rl: list
    arms: dict  # name -> overrides, None for the warm-up itself, or {"supervised": overrides}
    compare: list = field(default_factory=list)
    evaluate: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str) -> "Spec":
        data = read_yaml_mapping(path, "experiment spec", "configs/experiments/")
        unknown = set(data) - {"seeds", "warmup", "rl", "arms", "compare", "evaluate"}
        if unknown:
            raise UserError(f"experiment spec {path}: unknown key {sorted(unknown)[0]!r}; "
                            "valid: seeds, warmup, rl, arms, compare, evaluate")
        seeds = data.get("seeds")
        if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
            raise UserError(f"experiment spec {path}: seeds must be a non-empty list of integers")
        arms = data.get("arms")
        if not isinstance(arms, dict) or not arms:
            raise UserError(f"experiment spec {path}: arms must map names to lists of overrides (or null)")
        for name, overrides in arms.items():
            if overrides is not None and not _flags(overrides) and not _flags(supervised_flags(overrides)):
                raise UserError(f"experiment spec {path}: arm {name!r} must be null, a list of --key=value flags "
                                "or {supervised: [flags]}")
            if overrides is None and name != WARMUP_ARM:
                raise UserError(f"experiment spec {path}: only the arm named {WARMUP_ARM!r} may be null (the warm-up)")
        for key in ("warmup", "rl"):
            if not _flags(data.get(key, [])):
                raise UserError(f"experiment spec {path}: {key} must be a list of --key=value flags")
        compare = data.get("compare", [])
        for pair in compare:
            if not (isinstance(pair, list) and len(pair) == 2 and all(a in arms for a in pair)):
                raise UserError(f"experiment spec {path}: compare lists pairs of arm names, got {pair!r}")
        measured = (data.get("evaluate") or {}).get("test_validity", [])
        if not isinstance(measured, list) or any(a not in arms for a in measured):
            raise UserError(f"experiment spec {path}: evaluate.test_validity lists arm names, got {measured!r}")
        return cls(seeds=seeds, warmup=list(data.get("warmup", [])), rl=list(data.get("rl", [])), arms=arms,
                   compare=compare, evaluate=dict(data.get("evaluate") or {}))


def _flags(value) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) and x.startswith("--") for x in value)


def supervised_flags(overrides):
    """The warm-up flags of a supervised-only arm (`{supervised: [flags]}`), else None."""
    if isinstance(overrides, dict) and set(overrides) == {"supervised"}:
        return overrides["supervised"]
    return None


# ============================================================================ jobs
@dataclass
class Job:
    name: str
    command: list
    done: list  # paths that exist once the job has finished
    log: str
    after: list = field(default_factory=list)  # names of jobs that must finish first

    def finished(self) -> bool:
        return all(os.path.exists(p) for p in self.done)


def seed_dir(out: str, seed: int) -> str:
    return os.path.join(out, f"seed_{seed}")


def checkpoint_of(out: str, seed: int, arm: str) -> str:
    """The checkpoint an arm is evaluated from: its final/ (a supervised arm's final/ is its warm-up), or the
    shared warm-up's warmup/ for the warm-up arm."""
    if arm == WARMUP_ARM:
        return os.path.join(seed_dir(out, seed), "warmup_run", "warmup")
    return os.path.join(seed_dir(out, seed), arm, "final")


def train_job(arm: str, seed: int) -> str:
    """The name of the job that trains an arm on a seed (the shared warm-up's, for the warm-up arm)."""
    return f"seed{seed}/warmup" if arm == WARMUP_ARM else f"seed{seed}/{arm}/train"


def eval_files(out: str, seed: int, arm: str) -> dict:
    base = os.path.join(seed_dir(out, seed), arm if arm != WARMUP_ARM else "warmup_run")
    return {"greedy": os.path.join(base, "eval_greedy.json"), "sampled": os.path.join(base, "eval_sampled.json")}


def tests_file(out: str, seed: int, arm: str) -> str:
    """The held-out test-writing evaluation of an arm listed in evaluate.test_validity."""
    return os.path.join(os.path.dirname(eval_files(out, seed, arm)["greedy"]), "eval_tests.json")


def plan(spec: Spec, out: str) -> list:
    """Every job of the experiment: the seeds' warm-ups first, then arm by arm, each arm on every seed.

    Arm-major, so that an experiment cut short has its first arms on every
    seed, which the paired table needs, rather than every arm of one seed.
    """
    python, ev = sys.executable, spec.evaluate

    def warmup(seed: int, extra: list) -> list:  # the shared warm-up's command, and a supervised arm's
        return [python, "train.py", "--stages=[]", f"--seed={seed}", *COMMON_TRAIN, *spec.warmup, *extra]

    jobs = []
    for seed in spec.seeds:
        sd = seed_dir(out, seed)
        jobs.append(Job(
            train_job(WARMUP_ARM, seed), [*warmup(seed, []), f"--checkpoint_dir={os.path.join(sd, 'warmup_run')}"],
            [os.path.join(sd, "warmup_run", "final")], os.path.join(sd, "warmup.log"),
        ))
    for arm, overrides in spec.arms.items():
        for seed in spec.seeds:
            sd = seed_dir(out, seed)
            warmup_ckpt = checkpoint_of(out, seed, WARMUP_ARM)
            after = [train_job(WARMUP_ARM, seed)]
            supervised = supervised_flags(overrides)
            if supervised is not None:  # a warm-up of its own: it waits for nothing
                train, after = warmup(seed, supervised), []
            elif overrides is not None:
                train = [python, "train.py", "--resume", warmup_ckpt, f"--seed={seed}", *COMMON_TRAIN, *spec.rl,
                         *overrides]
            if overrides is not None:
                jobs.append(Job(train_job(arm, seed), [*train, f"--checkpoint_dir={os.path.join(sd, arm)}"],
                                [checkpoint_of(out, seed, arm)], os.path.join(sd, f"{arm}.train.log"), after))
                after = [jobs[-1].name]
            files = eval_files(out, seed, arm)
            common = [python, "-m", "training.evaluate", "--checkpoint", checkpoint_of(out, seed, arm),
                      "--problems", ev.get("problems", "curriculum:heldout_instances"),
                      "--limit", str(ev.get("limit", 0)), "--no-progress", "--workers", "1"]
            visible = ["--visible-tests", str(ev["visible_tests"])] if ev.get("visible_tests") else []
            n = int(ev.get("n", 8))
            rerank = ["--num-samples-rerank", str(ev["rerank"])] if ev.get("rerank") else []
            if rerank and overrides is not None:
                rerank += ["--rerank-writer", warmup_ckpt]
            greedy = [*common, "--n", "1", "--k", "1", *visible, "--output", files["greedy"]]
            sampled = [*common, "--n", str(n), "--k", f"1,{n}", "--temperature", str(ev.get("temperature", 1.0)),
                       *rerank, *visible, "--output", files["sampled"]]
            jobs.append(Job(f"seed{seed}/{arm}/eval", ["bash", "-c", f"{shlex.join(greedy)} && {shlex.join(sampled)}"],
                            [files["greedy"], files["sampled"]], os.path.join(sd, f"{arm}.eval.log"), after))
            if arm in ev.get("test_validity", []):  # tests written for the greedy code, as inference.py writes them
                tests = tests_file(out, seed, arm)
                jobs.append(Job(f"seed{seed}/{arm}/tests", [*common, "--n", "1", "--test-validity", "--output", tests],
                                [tests], os.path.join(sd, f"{arm}.tests.log"), after))
    return jobs


def run_jobs(jobs: list, out: str, parallel: int, poll_s: float = 2.0) -> list:
    """Run the unfinished jobs, `parallel` at a time, each after the jobs it waits for; returns the failed ones."""
    times_path = os.path.join(out, "jobs.json")
    times = _read_json(times_path) or {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    pending = [j for j in jobs if not j.finished()]
    finished = {j.name for j in jobs if j.finished()}
    failed, running = [], {}
    if len(pending) < len(jobs):
        print(f"{len(jobs) - len(pending)} of {len(jobs)} jobs already done", file=sys.stderr)
    try:
        while pending or running:
            for job in list(pending):
                if len(running) >= parallel:
                    break
                if any(a in {f.name for f in failed} for a in job.after):
                    pending.remove(job)
                    failed.append(job)
                    print(f"skipped {job.name}: a job it needs failed", file=sys.stderr)
                    continue
                if all(a in finished for a in job.after):
                    pending.remove(job)
                    os.makedirs(os.path.dirname(job.log), exist_ok=True)
                    log = open(job.log, "a")
                    log.write(f"$ {shlex.join(job.command)}\n")
                    log.flush()
                    # A job is a process group of its own (an evaluation is `bash -c "a && b"`, a run has
                    # sandbox workers), so that stopping the runner stops all of it.
                    proc = subprocess.Popen(job.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
                    running[job.name] = (job, proc, log, time.time())
                    print(f"started {job.name}", file=sys.stderr)
            time.sleep(poll_s)
            for name, (job, proc, log, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[name]
                elapsed = time.time() - t0
                if proc.returncode == 0 and job.finished():
                    finished.add(name)
                    times[name] = elapsed
                    write_atomically(times_path, json.dumps(times, indent=1, sort_keys=True) + "\n")
                    print(f"done {name} in {elapsed / 60:.1f} min", file=sys.stderr)
                else:
                    failed.append(job)
                    print(f"failed {name} (exit {proc.returncode}); see {job.log}", file=sys.stderr)
    except KeyboardInterrupt:
        for job, proc, log, _ in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for job, proc, log, _ in running.values():
            proc.wait()
            log.close()
        raise
    return failed


# =========================================================================== table
def columns(n: int) -> list:
    """(column, where it is read from, how it is shown) of the table, for n samples per problem."""
    return [
        ("greedy pass@1", ("greedy", "pass@1"), "pct"),
        ("sampled pass@1", ("sampled", "pass@1"), "pct"),
        (f"pass@{n}", ("sampled", f"pass@{n}"), "pct"),
        ("greedy, sft families", ("greedy", "by_group", "sft", "pass@1"), "pct"),
        ("greedy, rl_only families", ("greedy", "by_group", "rl_only", "pass@1"), "pct"),
        ("sampled, rl_only families", ("sampled", "by_group", "rl_only", "pass@1"), "pct"),
        ("CodeT, own writer", ("sampled", "rerank", "pass@1"), "pct"),
        ("CodeT, warm-up writer", ("sampled", "rerank", "writer", "pass@1"), "pct"),
        ("false positives (held-out)", ("sampled", "false_positive_rate"), "pct"),
        ("false positives (training)", ("train", "generator", "false_positive_rate"), "pct"),
        ("catch rate", ("train", "discriminator", "catch_rate"), "pct"),
        ("catch rate of false positives", ("train", "discriminator", "false_positive_catch_rate"), "pct"),
        ("valid tests / problem", ("train", "discriminator", "valid_tests_per_problem"), "num"),
        ("copies of a visible test", ("train", "discriminator", "test_copy_share"), "pct"),
        ("fuzz tests / problem", ("train", "discriminator", "fuzz_tests_per_problem"), "num"),
        ("probe, first", ("train", "generator", "probe_pass_rate_first"), "pct"),
        ("probe, last", ("train", "generator", "probe_pass_rate"), "pct"),
        ("held-out test validity", ("tests", "tests", "test_validity"), "pct"),
        ("held-out valid tests / problem", ("tests", "tests", "valid_tests_per_problem"), "num"),
        ("held-out catch rate", ("tests", "tests", "catch_rate"), "pct"),
        ("held-out copies of the first test", ("tests", "tests", "copy_share"), "pct"),
        ("held-out calls the reference answers / problem", ("tests", "tests", "labelled_calls_per_problem"), "num"),
        ("s / iteration", ("train", "time", "iteration"), "num"),
        ("training minutes", ("job", "minutes"), "num"),
    ]


def compared(n: int) -> list:
    """The columns whose paired differences the table reports."""
    return ["greedy pass@1", "sampled pass@1", f"pass@{n}", "greedy, rl_only families", "sampled, rl_only families",
            "CodeT, own writer", "false positives (held-out)",
            "catch rate", "catch rate of false positives", "held-out valid tests / problem", "held-out catch rate", "s / iteration"]


def arm_values(out: str, seed: int, arm: str, n: int, times: dict | None = None) -> dict | None:
    """The table's numbers of one arm and seed (None until its evaluation exists); `times`: jobs.json."""
    files = eval_files(out, seed, arm)
    reports = {k: _read_json(p) for k, p in files.items()}
    if any(r is None for r in reports.values()):
        return None
    data = {k: r["results"][0] for k, r in reports.items()}
    tests = _read_json(tests_file(out, seed, arm))
    data["tests"] = tests["results"][0] if tests else {}
    data["train"] = {}  # the warm-up arm has no RL figures
    seconds = (times or {}).get(train_job(arm, seed))
    data["job"] = {"minutes": seconds / 60 if seconds is not None else None}  # an RL arm's own, after the warm-up's
    if arm != WARMUP_ARM:
        data["train"] = _read_json(os.path.join(checkpoint_of(out, seed, arm), "metrics.json")) or {}
    else:
        rerank = data["sampled"].get("rerank")
        if rerank is not None:  # the warm-up's own writer is the warm-up writer
            rerank.setdefault("writer", {"pass@1": rerank.get("pass@1")})
    values = {}
    for name, path, _ in columns(n):
        value = data
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        values[name] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return values


def mean_se(values: list) -> tuple:
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None, 1
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var / len(values)), len(values)


def paired(a: dict, b: dict, seeds: list, column: str, column_b: str | None = None) -> tuple:
    """mean_se of a's value minus b's (column_b of b, default the same column) over the seeds that have both."""
    column_b = column_b or column
    return mean_se([a[s][column] - b[s][column_b] for s in seeds if a[s] is not None and b[s] is not None
                    and a[s][column] is not None and b[s][column_b] is not None])


def _show(m, se, kind: str) -> str:
    if m is None:
        return "-"
    scale = 100.0 if kind == "pct" else 1.0
    text = f"{m * scale:.1f}" if kind == "pct" else f"{m:.2f}"
    if se is not None:
        text += f" ± {se * scale:.1f}" if kind == "pct" else f" ± {se:.2f}"
    return text


def table(spec: Spec, out: str, times: dict | None = None) -> str:
    """Markdown: each arm's mean ± standard error over seeds, then the paired differences per seed."""
    n = int(spec.evaluate.get("n", 8))
    cols, diffs_of = columns(n), compared(n)
    kinds = {c: kind for c, _, kind in cols}
    per = {arm: {s: arm_values(out, s, arm, n, times) for s in spec.seeds} for arm in spec.arms}
    lines = ["| arm | seeds | " + " | ".join(c for c, _, _ in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for arm in spec.arms:
        rows = [v for v in per[arm].values() if v is not None]
        cells = [_show(*mean_se([r[c] for r in rows])[:2], kind) for c, _, kind in cols]
        lines.append(f"| {arm} | {len(rows)} | " + " | ".join(cells) + " |")
    if spec.compare:
        lines += ["", "Paired differences per seed, in points for rates (mean ± standard error; * where |mean| > 2 SE):", "",
                  "| difference | seeds | " + " | ".join(diffs_of) + " |", "|---|---|" + "---|" * len(diffs_of)]
        for a, b in spec.compare:
            seeds = [s for s in spec.seeds if per[a][s] is not None and per[b][s] is not None]
            cells = []
            for c in diffs_of:
                m, se, _ = paired(per[a], per[b], seeds, c)
                mark = "*" if m is not None and se is not None and abs(m) > 2 * se else ""
                cells.append(_show(m, se, kinds[c]) + mark)
            lines.append(f"| {a} − {b} | {len(seeds)} | " + " | ".join(cells) + " |")
    if spec.evaluate.get("rerank"):
        lines += ["", "Own writer's CodeT pick minus the warm-up writer's, on the same samples (points):", "",
                  "| arm | seeds | difference |", "|---|---|---|"]
        for arm, overrides in spec.arms.items():
            if overrides is None:
                continue
            m, se, n = paired(per[arm], per[arm], spec.seeds, "CodeT, own writer", "CodeT, warm-up writer")
            lines.append(f"| {arm} | {n} | {_show(m, se, 'pct')} |")
    if times:
        total = sum(times.values())
        lines += ["", f"Job time: {total / 60:.1f} min in all ({len(times)} jobs); "
                      f"{total / 120:.1f} min of wall clock at two jobs at a time."]
    return "\n".join(lines) + "\n"


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ============================================================================= CLI
def parse_args(argv):
    parser = argparse.ArgumentParser(description="Run arms x seeds of an experiment and write its markdown table.")
    parser.add_argument("--spec", required=True, help="experiment YAML, e.g. configs/experiments/sparse_tests.yaml")
    parser.add_argument("--out", required=True, help="directory of the runs, jobs.json and table.md")
    parser.add_argument("--jobs", type=int, default=2, help="jobs at a time, one torch thread each (default 2)")
    parser.add_argument("--table-only", action="store_true", help="write table.md from the finished jobs, run nothing")
    return parser.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    spec = Spec.load(args.spec)
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    failed = []
    if not args.table_only:
        t0 = time.time()
        # `kill PID` stops the runner like Ctrl-C: a runner started with nohup ignores SIGINT.
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            failed = run_jobs(plan(spec, out), out, args.jobs)
        finally:
            signal.signal(signal.SIGTERM, previous)
        print(f"wall clock {(time.time() - t0) / 60:.1f} min", file=sys.stderr)
    text = table(spec, out, _read_json(os.path.join(out, "jobs.json")))
    write_atomically(os.path.join(out, "table.md"), text)
    print(text)
    if failed:
        print(f"error: {len(failed)} job(s) failed: {', '.join(j.name for j in failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    return run_cli(run, parse_args(sys.argv[1:] if argv is None else argv),
                   interrupted="interrupted; run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())
