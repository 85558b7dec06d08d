#!/usr/bin/env bash
# Added latency of the one internal hop between hub replicas: the same session's calls sent to
# its owner (A) and to a replica that forwards them to A (B), interleaved call by call over
# keep-alive connections, medians and percentiles of each. Python is the client (its own cost is
# the same on both sides and cancels in the difference).
#
# Pinning (2 cores): mock and both hubs on core 1; the client on core 0.
# Usage: bash benches/scripts/cluster-hop.sh [OUT_DIR]   (after cargo build --release -p dataplane -p loadtest)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-target/bench-results/hop}
N=${N:-3000}
mkdir -p "$OUT"
LOAD=target/release/meshgate-load
HUB=target/release/meshgate
for b in "$LOAD" "$HUB"; do [ -x "$b" ] || { echo "build first: cargo build --release -p dataplane -p loadtest"; exit 2; }; done
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

taskset -c 1 "$LOAD" mock --listen 127.0.0.1:9100 --notify-interval 0 >/dev/null 2>&1 & PIDS+=($!)
for port in 9201 9202; do
  cat >"$OUT/hub-$port.yaml" <<YAML
listen: 127.0.0.1:$port
workers: 1
cluster: { advertise: "127.0.0.1:$port", peers: ["127.0.0.1:9201", "127.0.0.1:9202"] }
upstreams: [{ name: mock, url: "http://127.0.0.1:9100/mcp" }]
YAML
  MESHGATE_LOG=warn taskset -c 1 "$HUB" --config "$OUT/hub-$port.yaml" >"$OUT/hub-$port.log" 2>&1 & PIDS+=($!)
done
for _ in $(seq 50); do curl -sf http://127.0.0.1:9202/readyz >/dev/null 2>&1 && curl -sf http://127.0.0.1:9201/readyz >/dev/null 2>&1 && break; sleep 0.1; done

taskset -c 0 python3 - "$N" <<'PY'
import http.client, json, sys, time, statistics
N = int(sys.argv[1])
H = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
a = http.client.HTTPConnection("127.0.0.1", 9201)
b = http.client.HTTPConnection("127.0.0.1", 9202)
def post(c, body, sid=None, extra=None):
    h = dict(H)
    if sid: h["Mcp-Session-Id"] = sid
    if extra: h.update(extra)
    c.request("POST", "/mcp", body=json.dumps(body), headers=h)
    r = c.getresponse(); data = r.read()
    return r, data
r, _ = post(a, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "hop", "version": "1"}}})
sid = r.getheader("mcp-session-id")
post(a, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid, {"MCP-Protocol-Version": "2025-11-25"})
call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "mock__tool_0", "arguments": {}}}
for c in (a, b) * 200:  # warm-up
    post(c, call, sid)
ta, tb = [], []
for i in range(N):
    for c, t in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
        t0 = time.perf_counter_ns(); r, d = post(c, call, sid); t.append(time.perf_counter_ns() - t0)
        assert r.status == 200 and b'"result"' in d, d
def pct(v, p): v = sorted(v); return v[min(len(v) - 1, int(p / 100 * len(v)))] / 1000
print(f"calls per side: {N}")
print(f"owner (A) direct : p50 {pct(ta,50):7.1f} us  p90 {pct(ta,90):7.1f} us  p99 {pct(ta,99):7.1f} us")
print(f"via B (one hop)  : p50 {pct(tb,50):7.1f} us  p90 {pct(tb,90):7.1f} us  p99 {pct(tb,99):7.1f} us")
print(f"added by the hop : p50 {pct(tb,50)-pct(ta,50):+7.1f} us  p99 {pct(tb,99)-pct(ta,99):+7.1f} us")
PY
grep -h forwarded_total <(curl -s http://127.0.0.1:9202/metrics) | tail -1
