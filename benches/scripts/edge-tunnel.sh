#!/usr/bin/env bash
# Added latency of the edge tunnel hop: the same mock MCP server called through a hub that has it
# as a plain upstream (A) and through a hub that reaches it via meshgate-edge over the tunnel (B),
# measured in one interleaved run (meshgate-load --compare), at 1 and 1,000 concurrent calls.
# Also: meshgate-edge release binary size and idle RSS with three stdio children.
#
# Pinning (2 cores): mock, both hubs and the agent on core 1; the load driver on core 0.
# Usage: bash benches/scripts/edge-tunnel.sh [OUT_DIR]
#   (after: cargo build --release -p dataplane -p loadtest -p edge-agent; npm ci --prefix dataplane/tests/node)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/bench-results/edge}
mkdir -p "$OUT"
LOAD=target/release/meshgate-load
HUB=target/release/meshgate
EDGE=target/release/meshgate-edge
DUR=${DUR:-15s}
TRANSPORT=${TRANSPORT:-quic}
for b in "$LOAD" "$HUB" "$EDGE"; do [ -x "$b" ] || { echo "build first: cargo build --release -p dataplane -p loadtest -p edge-agent"; exit 2; }; done

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$EDGE" pki quickstart --out "$OUT/pki" --hub-name 127.0.0.1 --edge bench >/dev/null

taskset -c 1 "$LOAD" mock --listen 127.0.0.1:9100 --notify-interval 0 >/dev/null 2>&1 & PIDS+=($!)
taskset -c 1 "$HUB" --listen 127.0.0.1:9200 --workers 1 --separator none \
  --upstream mock=http://127.0.0.1:9100/mcp >"$OUT/hub-a.log" 2>&1 & PIDS+=($!)
cat >"$OUT/hub-b.yaml" <<YAML
listen: 127.0.0.1:9300
workers: 1
separator: none
edge:
  listen: 127.0.0.1:9443
  ca: $OUT/pki/ca.pem
  cert: $OUT/pki/hub.pem
  key: $OUT/pki/hub-key.pem
YAML
taskset -c 1 "$HUB" --config "$OUT/hub-b.yaml" >"$OUT/hub-b.log" 2>&1 & PIDS+=($!)
HUB_B=$!
cat >"$OUT/edge.yaml" <<YAML
edge: { id: bench }
hub: { addr: "127.0.0.1:9443", server_name: 127.0.0.1, ca: $OUT/pki/ca.pem, cert: $OUT/pki/bench.pem, key: $OUT/pki/bench-key.pem, transport: $TRANSPORT }
device: { enabled: false }
servers:
  - { name: mock, kind: http, url: "http://127.0.0.1:9100/mcp" }
YAML
sleep 0.5
MESHGATE_LOG=warn taskset -c 1 "$EDGE" run --config "$OUT/edge.yaml" >"$OUT/edge.log" 2>&1 & PIDS+=($!)
EDGE_PID=$!
# Wait until hub B lists the edge's tools.
for _ in $(seq 100); do
  grep -q "edge connected" "$OUT/hub-b.log" 2>/dev/null && break; sleep 0.1
done
grep -q "edge connected" "$OUT/hub-b.log" || { echo "edge never connected"; cat "$OUT/hub-b.log" "$OUT/edge.log"; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
printf '%-9s %-12s %10s %10s %10s %10s %8s %8s %14s\n' sessions mode local_p50ms tunnel_p50ms local_p99ms tunnel_p99ms "+p50us" "+p99us" "edge_cpu_us/call"
for spec in "1 closed" "1000 rate:5000"; do
  set -- $spec; S=$1; MODE=$2
  if [ "$MODE" = closed ]; then LOADARGS=(--closed-loop); else LOADARGS=(--rate "${MODE#rate:}"); fi
  c0=$(cpu_ticks "$EDGE_PID")
  taskset -c 0 "$LOAD" run http://127.0.0.1:9200/mcp --compare http://127.0.0.1:9300/mcp \
    --scenario call --sessions "$S" "${LOADARGS[@]}" --duration "$DUR" --warmup 3s --quiet \
    --json "$OUT/call-$S.json" >"$OUT/call-$S.txt" 2>&1
  c1=$(cpu_ticks "$EDGE_PID")
  python3 - "$OUT/call-$S.json" "$S" "$MODE" "$c0" "$c1" "$TCK" <<'PY'
import json, sys
path, S, mode, c0, c1, tck = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
doc = json.load(open(path))
urls = doc["config"]["targets"]
calls = {r["target"]: r for r in doc["results"] if r["metric"] == "call"}
a, b = calls[urls[0]], calls[urls[1]]
cpu = (c1 - c0) * 1e6 / tck / max(b["ok"], 1)
print(f"{S:<9} {mode:<12} {a['p50_ms']:10.3f} {b['p50_ms']:10.3f} {a['p99_ms']:10.3f} {b['p99_ms']:10.3f} {1000*(b['p50_ms']-a['p50_ms']):8.1f} {1000*(b['p99_ms']-a['p99_ms']):8.1f} {cpu:14.1f}  errors={a['error_total']+b['error_total']}")
PY
done
echo "meshgate-edge release binary: $(stat -c %s "$EDGE") bytes ($(awk -v b="$(stat -c %s "$EDGE")" 'BEGIN{printf "%.2f MiB", b/1048576}'))"
