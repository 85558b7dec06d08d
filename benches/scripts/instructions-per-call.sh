#!/usr/bin/env bash
# Hub instructions per tools/call, counted by valgrind's callgrind (deterministic: robust to a
# loaded machine, unlike time). The hub (epoll driver: valgrind does not model io_uring) runs
# under callgrind in front of the mock; counters are zeroed after a warm-up, then N seconds of
# closed-loop calls are counted and divided by the calls answered.
# Usage: bash benches/scripts/instructions-per-call.sh HUB_BIN [SECONDS]   (after cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:?hub binary}; SECS=${2:-5}
LOAD=target/release/meshgate-load
PORT=$((20000 + RANDOM % 20000)); MPORT=$((PORT + 1))
OUT=$(mktemp -d)
"$LOAD" mock --listen 127.0.0.1:$MPORT --notify-interval 0 >/dev/null 2>&1 &
MOCK=$!
MESHGATE_DRIVER=legacy valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" "$BIN" \
  --listen 127.0.0.1:$PORT --workers 1 --separator none --upstream mock=http://127.0.0.1:$MPORT/mcp \
  >/dev/null 2>"$OUT/hub.err" &
HUB=$!
trap 'kill -9 $HUB $MOCK 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp "$OUT"/cg.out.* "$KEEP"/ ; rm -rf "$OUT"' EXIT
for _ in $(seq 300); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null 2>&1 && break; sleep 0.1; done
"$LOAD" run http://127.0.0.1:$PORT/mcp --scenario call --sessions 4 --closed-loop --duration 2s --warmup 0s --quiet >/dev/null 2>&1
callgrind_control -z "$HUB" >/dev/null
"$LOAD" run http://127.0.0.1:$PORT/mcp --scenario call --sessions 4 --closed-loop --duration "${SECS}s" --warmup 0s --quiet --json "$OUT/run.json" >/dev/null 2>&1
callgrind_control -d "$HUB" >/dev/null
sleep 1
IR=$(cat "$OUT"/cg.out.* | awk '/^summary:/ {s+=$2} END {print s}')
python3 - "$OUT/run.json" "$IR" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); ir = int(sys.argv[2])
calls = [x for x in d["results"] if x["metric"] == "call"][0]["ok"]
print(f"instructions/call={ir / max(calls, 1):.0f} calls={calls} instructions={ir}")
PY
