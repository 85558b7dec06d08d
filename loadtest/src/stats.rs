//! Latency recording and summaries.
//!
//! Owns: [`Recorder`] (an HDR histogram of microseconds, successes, errors by kind and a
//! per-interval histogram for the live line) and [`Summary`] (the serialisable result of one
//! metric on one target: percentiles, throughput, errors, and the percentile spectrum the
//! plot draws). Shared by all workers of a target behind a `Mutex`: the driver runs on one
//! core, so the lock is uncontended and cheaper than 10,000 private histograms.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable value: one hour, in microseconds.
const MAX_US: u64 = 3_600_000_000;

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static histogram bounds are valid")
}

/// Samples of one metric (call latency, delivery delay, session cycle) for one target.
pub struct Recorder {
    total: Histogram<u64>,
    interval: Histogram<u64>,
    interval_errors: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

/// A recorder shared by a target's workers.
pub type SharedRecorder = Arc<Mutex<Recorder>>;

impl Default for Recorder {
    fn default() -> Self {
        Self {
            total: new_hist(),
            interval: new_hist(),
            interval_errors: 0,
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

impl Recorder {
    /// A new shared recorder.
    pub fn shared() -> SharedRecorder {
        Arc::new(Mutex::new(Recorder::default()))
    }

    /// Records one success taking `d`.
    pub fn ok(&mut self, d: Duration) {
        let us = (d.as_nanos() / 1000).clamp(1, u128::from(MAX_US)) as u64;
        let _ = self.total.record(us);
        let _ = self.interval.record(us);
        self.ok += 1;
    }

    /// Records one failure of `kind`.
    pub fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_insert(0) += 1;
        self.interval_errors += 1;
    }

    /// Successes so far.
    pub fn ok_count(&self) -> u64 {
        self.ok
    }

    /// Failures so far, all kinds.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Errors by kind.
    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }

    /// Takes the interval counters: (successes, errors, p50 µs, p99 µs), then resets them.
    pub fn take_interval(&mut self) -> (u64, u64, u64, u64) {
        let r = (
            self.interval.len(),
            self.interval_errors,
            self.interval.value_at_quantile(0.5),
            self.interval.value_at_quantile(0.99),
        );
        self.interval.reset();
        self.interval_errors = 0;
        r
    }

    /// Summarises over `elapsed` of measurement.
    pub fn summary(&self, target: &str, metric: &str, elapsed: Duration) -> Summary {
        let h = &self.total;
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(p))
            }
        };
        let mut spectrum = Vec::new();
        if !h.is_empty() {
            // Points evenly spaced on the log(1/(1-p)) axis, as HdrHistogram plots do.
            for i in 0..=60 {
                let p = 1.0 - 10f64.powf(-(i as f64) / 10.0);
                spectrum.push((p * 100.0, ms(h.value_at_quantile(p))));
            }
            spectrum.push((100.0, ms(h.max())));
        }
        let secs = elapsed.as_secs_f64().max(1e-9);
        Summary {
            target: target.to_owned(),
            metric: metric.to_owned(),
            ok: self.ok,
            errors: self.errors.clone(),
            error_total: self.error_count(),
            seconds: secs,
            throughput: self.ok as f64 / secs,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: if h.is_empty() { 0.0 } else { ms(h.max()) },
            mean_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            spectrum,
        }
    }
}

/// The result of one metric on one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Target URL.
    pub target: String,
    /// `call`, `delivery` (stream notification delay), `cycle` (session create+delete) or
    /// `send_lag` (open loop: driver's actual minus intended send time).
    pub metric: String,
    /// Successful samples.
    pub ok: u64,
    /// Failures by kind (`connect_refused`, `http_404`, `timeout`, …).
    pub errors: BTreeMap<String, u64>,
    /// Sum of `errors`.
    pub error_total: u64,
    /// Measurement window in seconds.
    pub seconds: f64,
    /// Successes per second.
    pub throughput: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// (percentile, ms) points for the spectrum plot.
    pub spectrum: Vec<(f64, f64)>,
}

impl Summary {
    /// The percentiles reported in tables and ratios, with their labels.
    pub fn percentiles(&self) -> [(&'static str, f64); 5] {
        [
            ("p50", self.p50_ms),
            ("p90", self.p90_ms),
            ("p99", self.p99_ms),
            ("p99.9", self.p999_ms),
            ("max", self.max_ms),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_known_samples() {
        let mut r = Recorder::default();
        for i in 1..=1000u64 {
            r.ok(Duration::from_micros(i * 10));
        }
        r.error("timeout".into());
        let s = r.summary("t", "call", Duration::from_secs(2));
        assert!((s.p50_ms - 5.0).abs() < 0.01, "{}", s.p50_ms);
        assert!((s.p99_ms - 9.9).abs() < 0.02, "{}", s.p99_ms);
        assert!((s.max_ms - 10.0).abs() < 0.02);
        assert_eq!(s.throughput, 500.0);
        assert_eq!(s.errors["timeout"], 1);
        assert!(s.spectrum.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
