//! Prometheus metrics. Each worker owns a [`WorkerMetrics`] it alone writes (relaxed atomics,
//! so no cache line is shared between writers); a scrape on any worker sums them all and adds
//! the process-wide gauges (sessions, open streams, upstream and replica health).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Method labels; anything else counts as `other`.
pub const METHODS: [&str; 16] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    "notification",
    "response",
    "other",
];

/// Outcome labels.
pub const OUTCOMES: [&str; 4] = ["ok", "client_error", "upstream_error", "internal_error"];

/// Latency histogram bucket bounds, seconds.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The label index of a method name.
pub fn method_index(m: &str) -> usize {
    METHODS
        .iter()
        .position(|x| *x == m)
        .unwrap_or(METHODS.len() - 1)
}

/// The label index of an outcome.
pub fn outcome_index(label: &str) -> usize {
    OUTCOMES.iter().position(|x| *x == label).unwrap_or(0)
}

/// One worker's counters.
pub struct WorkerMetrics {
    /// Requests this worker forwarded to the hub replica owning their session.
    pub forwarded: AtomicU64,
    upstreams: usize,
    requests: Vec<AtomicU64>,
    latency_buckets: Vec<AtomicU64>,
    latency_sum_ns: Vec<AtomicU64>,
    latency_count: Vec<AtomicU64>,
}

impl WorkerMetrics {
    /// Counters for `upstreams` upstreams (+1 for the hub itself).
    pub fn new(upstreams: usize) -> Self {
        let cells = METHODS.len() * (upstreams + 1) * OUTCOMES.len();
        Self {
            forwarded: AtomicU64::new(0),
            upstreams,
            requests: (0..cells).map(|_| AtomicU64::new(0)).collect(),
            latency_buckets: (0..METHODS.len() * (BUCKETS.len() + 1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            latency_sum_ns: (0..METHODS.len()).map(|_| AtomicU64::new(0)).collect(),
            latency_count: (0..METHODS.len()).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts one finished request. `upstream` None = answered by the hub.
    pub fn record(&self, method: usize, upstream: Option<usize>, outcome: usize, took: Duration) {
        let u = upstream.map_or(0, |u| (u + 1).min(self.upstreams));
        let cell = (method * (self.upstreams + 1) + u) * OUTCOMES.len() + outcome;
        if let Some(c) = self.requests.get(cell) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let b = BUCKETS
            .iter()
            .position(|&x| secs <= x)
            .unwrap_or(BUCKETS.len());
        if let Some(c) = self.latency_buckets.get(method * (BUCKETS.len() + 1) + b) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_ns[method].fetch_add(ns, Ordering::Relaxed);
        self.latency_count[method].fetch_add(1, Ordering::Relaxed);
    }
}

/// Process-wide gauges and the list of worker counters.
pub struct Metrics {
    /// Every worker's counters.
    pub workers: Vec<Arc<WorkerMetrics>>,
    /// SSE streams currently open to clients.
    pub open_streams: AtomicI64,
    /// Client connections currently open.
    pub open_connections: AtomicI64,
    /// The shared session store: -1 none configured, 0 down, 1 up.
    store_up: AtomicI64,
}

impl Metrics {
    /// Records whether the shared session store is reachable (shown once set).
    pub fn set_store_up(&self, up: bool) {
        self.store_up.store(i64::from(up), Ordering::Relaxed);
    }

    /// Metrics for `workers` workers and `upstreams` upstreams.
    pub fn new(workers: usize, upstreams: usize) -> Self {
        Self {
            workers: (0..workers)
                .map(|_| Arc::new(WorkerMetrics::new(upstreams)))
                .collect(),
            open_streams: AtomicI64::new(0),
            open_connections: AtomicI64::new(0),
            store_up: AtomicI64::new(-1),
        }
    }

    /// Renders the Prometheus text format. `replicas`: `(upstream, replica URL, up)` for each
    /// replica of the upstreams that have several.
    pub fn render(
        &self,
        upstream_names: &[&str],
        healthy: &[bool],
        replicas: &[(&str, &str, bool)],
        sessions: usize,
    ) -> String {
        let mut out = String::with_capacity(8192);
        let n = upstream_names.len();
        let _ = writeln!(out, "# HELP meshgate_requests_total JSON-RPC messages handled, by method, upstream and outcome.");
        let _ = writeln!(out, "# TYPE meshgate_requests_total counter");
        for (mi, m) in METHODS.iter().enumerate() {
            for u in 0..=n {
                let uname = if u == 0 { "hub" } else { upstream_names[u - 1] };
                for (oi, o) in OUTCOMES.iter().enumerate() {
                    let cell = (mi * (n + 1) + u) * OUTCOMES.len() + oi;
                    let v: u64 = self
                        .workers
                        .iter()
                        .map(|w| {
                            w.requests
                                .get(cell)
                                .map_or(0, |c| c.load(Ordering::Relaxed))
                        })
                        .sum();
                    if v > 0 {
                        let _ = writeln!(out, "meshgate_requests_total{{method=\"{m}\",upstream=\"{uname}\",outcome=\"{o}\"}} {v}");
                    }
                }
            }
        }
        let _ = writeln!(out, "# HELP meshgate_request_duration_seconds Time from request read to last response byte written.");
        let _ = writeln!(out, "# TYPE meshgate_request_duration_seconds histogram");
        for (mi, m) in METHODS.iter().enumerate() {
            let count: u64 = self
                .workers
                .iter()
                .map(|w| w.latency_count[mi].load(Ordering::Relaxed))
                .sum();
            if count == 0 {
                continue;
            }
            let mut cum = 0u64;
            for b in 0..=BUCKETS.len() {
                cum += self
                    .workers
                    .iter()
                    .map(|w| {
                        w.latency_buckets[mi * (BUCKETS.len() + 1) + b].load(Ordering::Relaxed)
                    })
                    .sum::<u64>();
                let le = BUCKETS.get(b).map_or("+Inf".to_string(), |x| x.to_string());
                let _ = writeln!(
                    out,
                    "meshgate_request_duration_seconds_bucket{{method=\"{m}\",le=\"{le}\"}} {cum}"
                );
            }
            let sum: u64 = self
                .workers
                .iter()
                .map(|w| w.latency_sum_ns[mi].load(Ordering::Relaxed))
                .sum();
            let _ = writeln!(
                out,
                "meshgate_request_duration_seconds_sum{{method=\"{m}\"}} {}",
                sum as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "meshgate_request_duration_seconds_count{{method=\"{m}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP meshgate_active_sessions Client sessions alive."
        );
        let _ = writeln!(out, "# TYPE meshgate_active_sessions gauge");
        let _ = writeln!(out, "meshgate_active_sessions {sessions}");
        let _ = writeln!(
            out,
            "# HELP meshgate_open_streams SSE streams open to clients."
        );
        let _ = writeln!(out, "# TYPE meshgate_open_streams gauge");
        let _ = writeln!(
            out,
            "meshgate_open_streams {}",
            self.open_streams.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP meshgate_open_connections Client connections open."
        );
        let _ = writeln!(out, "# TYPE meshgate_open_connections gauge");
        let _ = writeln!(
            out,
            "meshgate_open_connections {}",
            self.open_connections.load(Ordering::Relaxed)
        );
        let forwarded: u64 = self
            .workers
            .iter()
            .map(|w| w.forwarded.load(Ordering::Relaxed))
            .sum();
        let _ = writeln!(
            out,
            "# HELP meshgate_forwarded_total Requests forwarded to the hub replica owning their session."
        );
        let _ = writeln!(out, "# TYPE meshgate_forwarded_total counter");
        let _ = writeln!(out, "meshgate_forwarded_total {forwarded}");
        let store = self.store_up.load(Ordering::Relaxed);
        if store >= 0 {
            let _ = writeln!(
                out,
                "# HELP meshgate_store_up Whether the shared session store is reachable."
            );
            let _ = writeln!(out, "# TYPE meshgate_store_up gauge");
            let _ = writeln!(out, "meshgate_store_up {store}");
        }
        let _ = writeln!(
            out,
            "# HELP meshgate_upstream_up Whether the upstream passed its last health check."
        );
        let _ = writeln!(out, "# TYPE meshgate_upstream_up gauge");
        for (name, up) in upstream_names.iter().zip(healthy) {
            let _ = writeln!(
                out,
                "meshgate_upstream_up{{upstream=\"{name}\"}} {}",
                u8::from(*up)
            );
        }
        if !replicas.is_empty() {
            let _ = writeln!(
                out,
                "# HELP meshgate_upstream_replica_up Whether the replica is in use (passing health checks, not ejected)."
            );
            let _ = writeln!(out, "# TYPE meshgate_upstream_replica_up gauge");
            for (name, url, up) in replicas {
                let url = url.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(
                    out,
                    "meshgate_upstream_replica_up{{upstream=\"{name}\",replica=\"{url}\"}} {}",
                    u8::from(*up)
                );
            }
        }
        out
    }
}

/// An RAII guard that counts an open stream.
pub struct StreamGuard<'a>(&'a AtomicI64);

impl<'a> StreamGuard<'a> {
    /// Counts one more open stream until dropped.
    pub fn new(g: &'a AtomicI64) -> Self {
        g.fetch_add(1, Ordering::Relaxed);
        Self(g)
    }
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let m = Metrics::new(2, 1);
        m.workers[0].record(
            method_index("tools/call"),
            Some(0),
            0,
            Duration::from_micros(300),
        );
        m.workers[1].record(
            method_index("tools/call"),
            Some(0),
            0,
            Duration::from_millis(2),
        );
        m.workers[1].record(method_index("ping"), None, 0, Duration::from_micros(50));
        let text = m.render(&["a"], &[true], &[("a", "http://x/mcp", false)], 3);
        assert!(
            text.contains(
                "meshgate_requests_total{method=\"tools/call\",upstream=\"a\",outcome=\"ok\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "meshgate_request_duration_seconds_bucket{method=\"tools/call\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains("meshgate_request_duration_seconds_count{method=\"tools/call\"} 2"));
        assert!(text.contains("meshgate_active_sessions 3"));
        assert!(text.contains("meshgate_upstream_up{upstream=\"a\"} 1"));
        assert!(text
            .contains("meshgate_upstream_replica_up{upstream=\"a\",replica=\"http://x/mcp\"} 0"));
    }
}
