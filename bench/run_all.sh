#!/usr/bin/env bash
# Run every bench side by side with its peer, then write docs/benchmarks.md from what they measured.
#
#   pip install -r requirements-bench.txt     # once: trl for the RL-step peer
#   bash bench/run_all.sh                     # about 4 minutes on 2 cores
#   OUT=/tmp/bench bash bench/run_all.sh      # keep the JSONs and logs there
#
# Each bench writes OUT/<name>.json and OUT/<name>.log. A bench that fails, or runs
# past its time cap (the caps add up to about 14 minutes), is listed as "not measured" in
# the doc, and the script exits non-zero.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d -t bench-XXXXXX)}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
status=0

run() {  # run NAME SECONDS_LIMIT COMMAND...
    local name="$1" limit="$2"; shift 2
    local start=$SECONDS
    echo "== $name: $*" >&2
    if timeout "$limit" "$@" --json "$OUT/$name.json" >"$OUT/$name.log" 2>&1; then
        echo "   done in $((SECONDS - start)) s" >&2
    else
        echo "   FAILED after $((SECONDS - start)) s (exit $?); last lines of $OUT/$name.log:" >&2
        tail -n 15 "$OUT/$name.log" >&2
        rm -f "$OUT/$name.json"
        status=1
    fi
}

run sandbox_bench 90 "$PY" bench/sandbox_bench.py
run generation_bench 240 "$PY" bench/generation_bench.py
run rl_step_vs_trl 120 "$PY" bench/rl_step_vs_trl.py
run rl_step_vs_trl_kl 120 "$PY" bench/rl_step_vs_trl.py --beta 0.04
run rl_step_vs_trl_dapo 120 "$PY" bench/rl_step_vs_trl.py --loss-type dapo
run shared_prefix_bench 90 "$PY" bench/shared_prefix_bench.py
run checkpoint_footprint 70 "$PY" bench/checkpoint_footprint.py

"$PY" bench/_common.py render "$OUT" docs/benchmarks.md || status=1
echo "JSONs and logs in $OUT" >&2
exit $status
