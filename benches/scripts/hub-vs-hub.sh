#!/usr/bin/env bash
# This change vs the last: two hub builds in front of the same mock upstream, driven in one
# interleaved run (meshgate-load --compare), with each hub's CPU per call from /proc/<pid>/stat.
#
# Pinning (2 cores): mock and both hubs (one worker each) on core 1, the driver on core 0.
# Usage: HUB_A=path/to/old/meshgate HUB_B=target/release/meshgate bash benches/scripts/hub-vs-hub.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/bench-results/hub-vs-hub}
mkdir -p "$OUT"
LOAD=target/release/meshgate-load
A=${HUB_A:?set HUB_A to the baseline meshgate binary}
B=${HUB_B:-target/release/meshgate}
DUR=${DUR:-20s}
[ -x "$LOAD" ] && [ -x "$A" ] && [ -x "$B" ] || { echo "build first (cargo build --release -p dataplane -p loadtest)"; exit 2; }

cleanup() { kill "${MOCK_PID:-}" "${A_PID:-}" "${B_PID:-}" 2>/dev/null || true; }
trap cleanup EXIT

taskset -c 1 "$LOAD" mock --listen 127.0.0.1:9100 --notify-interval 1s >/dev/null 2>&1 &
MOCK_PID=$!
for hub in A B; do
  bin=${!hub}; port=$([ "$hub" = A ] && echo 9201 || echo 9202)
  taskset -c 1 "$bin" --listen 127.0.0.1:$port --workers 1 --separator none \
    --upstream mock=http://127.0.0.1:9100/mcp >"$OUT/hub-$hub.log" 2>&1 &
  eval "${hub}_PID=$!"
done
for port in 9201 9202; do
  for _ in $(seq 50); do curl -sf http://127.0.0.1:$port/readyz >/dev/null 2>&1 && break; sleep 0.1; done
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

printf '%-9s %-6s %10s %10s %10s %10s %12s %12s\n' sessions rate A_p50ms B_p50ms A_p99ms B_p99ms A_cpu_us/call B_cpu_us/call
for spec in ${SPECS:-"1 1000" "64 5000" "64 20000"}; do
  set -- $spec; S=$1; R=$2
  a0=$(cpu_ticks "$A_PID"); b0=$(cpu_ticks "$B_PID")
  taskset -c 0 "$LOAD" run http://127.0.0.1:9201/mcp --compare http://127.0.0.1:9202/mcp \
    --scenario call --sessions "$S" --rate "$R" --duration "$DUR" --warmup 3s --quiet \
    --json "$OUT/call-$S-$R.json" >"$OUT/call-$S-$R.txt" 2>&1
  a1=$(cpu_ticks "$A_PID"); b1=$(cpu_ticks "$B_PID")
  python3 - "$OUT/call-$S-$R.json" "$S" "$R" "$a0" "$a1" "$b0" "$b1" "$TCK" <<'PY'
import json, sys
path, S, R = sys.argv[1], sys.argv[2], sys.argv[3]
a0, a1, b0, b1, tck = (int(x) for x in sys.argv[4:9])
doc = json.load(open(path))
urls = doc["config"]["targets"]
calls = {r["target"]: r for r in doc["results"] if r["metric"] == "call"}
a, b = calls[urls[0]], calls[urls[1]]
acpu = (a1 - a0) * 1e6 / tck / max(a["ok"], 1)
bcpu = (b1 - b0) * 1e6 / tck / max(b["ok"], 1)
errors = a["error_total"] + b["error_total"]
print(f"{S:<9} {R:<6} {a['p50_ms']:10.3f} {b['p50_ms']:10.3f} {a['p99_ms']:10.3f} {b['p99_ms']:10.3f} {acpu:12.1f} {bcpu:12.1f}  errors={errors}")
PY
done
