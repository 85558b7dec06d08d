#!/usr/bin/env bash
# Added latency, hub CPU per call and hub memory per open stream: meshgate vs direct to the same
# mock upstream, measured in one interleaved run per concurrency level (meshgate-load --compare).
#
# Pinning (2 cores): the system under test (mock + hub, one worker) on core 1, the driver on core 0.
# Usage: bash benches/scripts/hub-vs-direct.sh [OUT_DIR]   (after cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/bench-results}
mkdir -p "$OUT"
LOAD=target/release/meshgate-load
HUB=target/release/meshgate
DUR=${DUR:-20s}
[ -x "$LOAD" ] && [ -x "$HUB" ] || { echo "build first: cargo build --release -p dataplane -p loadtest"; exit 2; }

cleanup() { kill "${MOCK_PID:-}" "${HUB_PID:-}" 2>/dev/null || true; }
trap cleanup EXIT

taskset -c 1 "$LOAD" mock --listen 127.0.0.1:9100 --notify-interval 1s >/dev/null 2>&1 &
MOCK_PID=$!
taskset -c 1 "$HUB" --listen 127.0.0.1:9200 --workers 1 --separator none \
  --upstream mock=http://127.0.0.1:9100/mcp >"$OUT/hub.log" 2>&1 &
HUB_PID=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:9200/readyz >/dev/null 2>&1 && break; sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
TCK=$(getconf CLK_TCK)

printf '%-9s %-6s %10s %10s %10s %10s %8s %8s %12s\n' sessions rate direct_p50ms hub_p50ms direct_p99ms hub_p99ms "+p50us" "+p99us" "hub_cpu_us/call"
for spec in "1 1000" "64 5000" "512 5000"; do
  set -- $spec; S=$1; R=$2
  c0=$(cpu_ticks "$HUB_PID")
  taskset -c 0 "$LOAD" run http://127.0.0.1:9100/mcp --compare http://127.0.0.1:9200/mcp \
    --scenario call --sessions "$S" --rate "$R" --duration "$DUR" --warmup 3s --quiet \
    --json "$OUT/call-$S.json" --plot "$OUT/call-$S.svg" >"$OUT/call-$S.txt" 2>&1
  c1=$(cpu_ticks "$HUB_PID")
  python3 - "$OUT/call-$S.json" "$S" "$R" "$c0" "$c1" "$TCK" <<'PY'
import json, sys
path, S, R, c0, c1, tck = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
doc = json.load(open(path))
urls = doc["config"]["targets"]
calls = {r["target"]: r for r in doc["results"] if r["metric"] == "call"}
a, b = calls[urls[0]], calls[urls[1]]
ap50, bp50, ap99, bp99 = a["p50_ms"], b["p50_ms"], a["p99_ms"], b["p99_ms"]
errors = a["error_total"] + b["error_total"]
cpu_us = (c1 - c0) * 1e6 / tck / max(b["ok"], 1)
print(f"{S:<9} {R:<6} {ap50:10.3f} {bp50:10.3f} {ap99:10.3f} {bp99:10.3f} {1000*(bp50-ap50):8.1f} {1000*(bp99-ap99):8.1f} {cpu_us:12.1f}  errors={errors}")
PY
done

# Hub memory per open stream: RSS before and while N GET streams are held through the hub.
for N in 1000 5000; do
  r0=$(rss_kib "$HUB_PID")
  taskset -c 0 "$LOAD" run http://127.0.0.1:9200/mcp --scenario stream --streams "$N" \
    --duration 15s --warmup 5s --quiet --json "$OUT/stream-$N.json" >"$OUT/stream-$N.txt" 2>&1 &
  DRV=$!
  sleep 12
  r1=$(rss_kib "$HUB_PID")
  wait "$DRV" || true
  echo "streams=$N hub_rss_before_kib=$r0 hub_rss_during_kib=$r1 per_stream_bytes=$(( (r1 - r0) * 1024 / N ))"
done
