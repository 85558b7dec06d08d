#!/usr/bin/env bash
# The load harness measured against its own mock, pinned (the timing the loadtest tests no longer
# gate on): (1) accuracy: a fixed 2 ms service time at 400 req/s open loop, p50 should be just
# above 2 ms; (2) capacity: closed loop with zero service time, calls/s and p50 of the harness
# client + mock pair (both framed by the h1 codec). Medians of RUNS runs.
#
# Pinning (2 cores): mock on core 1, client on core 0.
# Usage: bash benches/scripts/harness-accuracy.sh [OUT_DIR]   (after cargo build --release -p loadtest)
#        LOAD=/path/to/other/meshgate-load bash benches/scripts/harness-accuracy.sh   (a baseline)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/bench-results/harness}
RUNS=${RUNS:-5}
LOAD=${LOAD:-target/release/meshgate-load}
mkdir -p "$OUT"
[ -x "$LOAD" ] || { echo "build first: cargo build --release -p loadtest"; exit 2; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

taskset -c 1 "$LOAD" mock --listen 127.0.0.1:9110 --service-time 2ms >/dev/null 2>&1 & PIDS+=($!)
taskset -c 1 "$LOAD" mock --listen 127.0.0.1:9111 >/dev/null 2>&1 & PIDS+=($!)
sleep 0.5
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { python3 -c "import json,sys; r=[x for x in json.load(open(sys.argv[1]))['results'] if x['metric']=='call'][0]; print(r[sys.argv[2]])" "$@"; }
for i in $(seq "$RUNS"); do
  taskset -c 0 "$LOAD" run http://127.0.0.1:9110/mcp --sessions 4 --rate 400 --duration 3s \
    --warmup 500ms --quiet --json "$OUT/accuracy-$i.json" >/dev/null
  taskset -c 0 "$LOAD" run http://127.0.0.1:9111/mcp --sessions 8 --closed-loop --duration 3s \
    --warmup 500ms --quiet --json "$OUT/capacity-$i.json" >/dev/null
done
acc_p50=$(for i in $(seq "$RUNS"); do field "$OUT/accuracy-$i.json" p50_ms; done | median)
cap_tput=$(for i in $(seq "$RUNS"); do field "$OUT/capacity-$i.json" throughput; done | median)
cap_p50=$(for i in $(seq "$RUNS"); do field "$OUT/capacity-$i.json" p50_ms; done | median)
echo "accuracy (2 ms service, 400/s open loop): p50 ${acc_p50} ms (median of $RUNS)"
echo "capacity (0 ms service, 8 sessions closed loop): ${cap_tput} calls/s, p50 ${cap_p50} ms (median of $RUNS)"
