#!/usr/bin/env bash
# The session store's costs against a local redis-server (the timing the store tests no longer
# gate on): the caller's cost of a fire-and-forget `put`, a put->get round trip through the
# store thread, and a burst of puts. Runs the ignored measurement in dataplane/tests/store.rs.
# Usage: bash benches/scripts/store.sh   (needs redis-server on PATH)
set -euo pipefail
cd "$(dirname "$0")/../.."
taskset -c 1 cargo test --release --locked -p dataplane --test store redis_latency_measure \
  -- --ignored --nocapture 2>&1 | grep -E "store bench|test result"
