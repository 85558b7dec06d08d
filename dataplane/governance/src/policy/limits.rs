//! Rate limits (token buckets per principal and per (principal, tool)) and the loop lock
//! (at most `max_loop_steps` tool calls per session per window), shared by all hub workers.
//!
//! Runs in the `policy` stage: [`RateLimiter::check_principal`] before the body is parsed (a
//! refusal is HTTP 429 with `Retry-After`), [`RateLimiter::check_tool`] and [`LoopGuard::step`]
//! for each `tools/call` (a refusal is a tool result with `isError: true`).
//!
//! - Each bucket is one `AtomicU64` holding the GCRA "theoretical arrival time" (the token bucket
//!   expressed as a single timestamp): a check is a compare-and-swap, no lock. Buckets live in a
//!   sharded map keyed by a keyed (per-process random) 64-bit hash of the key, so lookups never
//!   allocate; the shard lock is held only for the map access.
//! - Memory is bounded: a bucket whose arrival time is in the past is indistinguishable from a
//!   fresh one, so sweeps (every 4096 new buckets, and whenever the map is full) drop those with
//!   no loss of accuracy. If the map is still full after a sweep, new keys are allowed untracked
//!   and counted ([`RateLimiter::overflowed`]) — a security team sees the counter rise.
//! - The loop lock packs (window start in ms, count) into one `AtomicU64` per session: a fixed
//!   window that starts at the session's first call after the previous window ended.
//! - The limiter outlives policy swaps (the hub keeps one), and takes the current spec per call.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::principal::Principal;

/// A token-bucket rate in GCRA form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    /// Time per token (`per / rate`), in nanoseconds.
    interval_ns: u64,
    /// How far the arrival time may run ahead of now: `interval * (burst - 1)`.
    tolerance_ns: u64,
    /// Calls per `per`.
    pub rate: u32,
    /// The period.
    pub per: Duration,
    /// Largest burst.
    pub burst: u32,
}

impl RateSpec {
    /// `rate` calls per `per`, bursts up to `burst`; `None` if a value is zero.
    pub fn new(rate: u32, per: Duration, burst: u32) -> Option<Self> {
        if rate == 0 || burst == 0 || per.is_zero() {
            return None;
        }
        let interval_ns = (per.as_nanos() / u128::from(rate)).max(1);
        let interval_ns = u64::try_from(interval_ns).ok()?;
        Some(RateSpec {
            interval_ns,
            tolerance_ns: interval_ns.checked_mul(u64::from(burst - 1))?,
            rate,
            per,
            burst,
        })
    }
}

/// Which limit refused the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    /// The principal's overall rate: HTTP 429 + `Retry-After`.
    Principal,
    /// The (principal, tool) rate: a tool error.
    Tool,
}

/// A refused call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded ({scope:?}); retry after {retry_after:?}")]
pub struct RateLimited {
    /// Which limit.
    pub scope: RateScope,
    /// When one more call would be allowed.
    pub retry_after: Duration,
}

impl RateLimited {
    /// The `Retry-After` header value: whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let ns = self.retry_after.as_nanos();
        (ns.div_ceil(1_000_000_000) as u64).max(1)
    }
}

/// Hasher for keys that are already keyed hashes: passes the `u64` through.
#[derive(Default)]
struct PassThrough(u64);
impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type KeyMap = DashMap<u64, AtomicU64, BuildHasherDefault<PassThrough>>;

const SWEEP_EVERY: usize = 4096;

/// Token buckets per principal and per (principal, tool); one per hub, shared by all workers.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: KeyMap,
    keys: RandomState,
    epoch: Instant,
    max: usize,
    inserts: AtomicUsize,
    overflow: AtomicU64,
    limited: AtomicU64,
}

impl RateLimiter {
    /// A limiter keeping at most `max_buckets` buckets.
    pub fn new(max_buckets: usize) -> Self {
        RateLimiter {
            buckets: DashMap::with_hasher(BuildHasherDefault::default()),
            keys: RandomState::new(),
            epoch: Instant::now(),
            max: max_buckets.max(1),
            inserts: AtomicUsize::new(0),
            overflow: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        // Start one hour "in", so that a fresh bucket (tat 0) is always in the past.
        self.epoch.elapsed().as_nanos() as u64 + 3_600_000_000_000
    }

    /// The principal's overall rate (run before parsing the body).
    ///
    /// # Errors
    /// [`RateLimited`] with [`RateScope::Principal`] when the bucket is empty.
    pub fn check_principal(&self, p: &Principal, spec: &RateSpec) -> Result<(), RateLimited> {
        let key = super::keyed_hash(&self.keys, (0u8, p.binding()));
        self.check(key, spec, self.now_ns())
            .map_err(|retry_after| RateLimited {
                scope: RateScope::Principal,
                retry_after,
            })
    }

    /// The (principal, tool) rate.
    ///
    /// # Errors
    /// [`RateLimited`] with [`RateScope::Tool`] when the bucket is empty.
    pub fn check_tool(
        &self,
        p: &Principal,
        upstream: &str,
        tool: &str,
        spec: &RateSpec,
    ) -> Result<(), RateLimited> {
        let key = super::keyed_hash(&self.keys, (1u8, p.binding(), upstream, tool));
        self.check(key, spec, self.now_ns())
            .map_err(|retry_after| RateLimited {
                scope: RateScope::Tool,
                retry_after,
            })
    }

    /// GCRA on bucket `key` at time `now` (ns): `Err(retry_after)` when refused.
    fn check(&self, key: u64, spec: &RateSpec, now: u64) -> Result<(), Duration> {
        if let Some(tat) = self.buckets.get(&key) {
            return self.gcra(&tat, spec, now);
        }
        if self.buckets.len() >= self.max {
            self.sweep(now);
            if self.buckets.len() >= self.max {
                self.overflow.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        if self.inserts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(now);
        }
        let tat = self.buckets.entry(key).or_insert_with(|| AtomicU64::new(0));
        self.gcra(&tat, spec, now)
    }

    fn gcra(&self, tat: &AtomicU64, spec: &RateSpec, now: u64) -> Result<(), Duration> {
        let mut cur = tat.load(Ordering::Relaxed);
        loop {
            let base = cur.max(now);
            if base - now > spec.tolerance_ns {
                self.limited.fetch_add(1, Ordering::Relaxed);
                return Err(Duration::from_nanos(base - now - spec.tolerance_ns));
            }
            match tat.compare_exchange_weak(
                cur,
                base + spec.interval_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Drops buckets that are full again (their arrival time is past): lossless.
    fn sweep(&self, now: u64) {
        self.buckets
            .retain(|_, tat| tat.load(Ordering::Relaxed) > now);
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }
    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
    /// Calls allowed untracked because the map was full of active buckets.
    pub fn overflowed(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }
    /// Calls refused so far (both scopes).
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
}

// === loop lock ===

/// `max_steps` tool calls per session per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopSpec {
    /// Calls allowed per window.
    pub max_steps: u32,
    /// The window.
    pub window: Duration,
}

impl LoopSpec {
    /// `None` when `max_steps` is 0 or above 16M, or `window` is not in 1ms..=1 year.
    pub fn new(max_steps: u32, window: Duration) -> Option<Self> {
        let ok = (1..=COUNT_MASK as u32).contains(&max_steps)
            && window >= Duration::from_millis(1)
            && window <= Duration::from_secs(366 * 86_400);
        ok.then_some(LoopSpec { max_steps, window })
    }
}

/// The loop lock fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("loop limit: at most {max_steps} tool calls per {window:?} in one session; the window ends in {retry_after:?}")]
pub struct LoopLimited {
    /// The configured maximum.
    pub max_steps: u32,
    /// The configured window.
    pub window: Duration,
    /// Time left in the current window.
    pub retry_after: Duration,
}

const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Per-session step counters; one per hub, shared by all workers.
#[derive(Debug)]
pub struct LoopGuard {
    windows: KeyMap,
    keys: RandomState,
    epoch: Instant,
    max: usize,
    inserts: AtomicUsize,
    fired: AtomicU64,
}

impl LoopGuard {
    /// A guard tracking at most `max_sessions` sessions (expired windows are evicted first).
    pub fn new(max_sessions: usize) -> Self {
        LoopGuard {
            windows: DashMap::with_hasher(BuildHasherDefault::default()),
            keys: RandomState::new(),
            epoch: Instant::now(),
            max: max_sessions.max(1),
            inserts: AtomicUsize::new(0),
            fired: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Counts one tool call of `session`; `Ok(step)` is the call's number in the window.
    ///
    /// # Errors
    /// [`LoopLimited`] once the session made `max_steps` calls in the current window.
    pub fn step(&self, session: &str, spec: &LoopSpec) -> Result<u32, LoopLimited> {
        self.step_at(session, spec, self.now_ms())
    }

    fn step_at(&self, session: &str, spec: &LoopSpec, now: u64) -> Result<u32, LoopLimited> {
        let key = super::keyed_hash(&self.keys, session);
        let window_ms = spec.window.as_millis() as u64;
        let slot = match self.windows.get(&key) {
            Some(s) => s,
            None => {
                if self.windows.len() >= self.max
                    || self.inserts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1
                {
                    self.windows.retain(|_, v| {
                        now.saturating_sub(v.load(Ordering::Relaxed) >> COUNT_BITS) < window_ms
                    });
                }
                if self.windows.len() >= self.max {
                    // Full of live sessions: count this call untracked rather than refuse it.
                    return Ok(1);
                }
                self.windows.entry(key).or_insert_with(|| AtomicU64::new(0));
                self.windows
                    .get(&key)
                    .expect("inserted just above; only sweeps remove entries")
            }
        };
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let start = cur >> COUNT_BITS;
            let count = cur & COUNT_MASK;
            let (new_start, new_count) = if cur == 0 || now.saturating_sub(start) >= window_ms {
                (now, 1)
            } else if count >= u64::from(spec.max_steps) {
                self.fired.fetch_add(1, Ordering::Relaxed);
                return Err(LoopLimited {
                    max_steps: spec.max_steps,
                    window: spec.window,
                    retry_after: Duration::from_millis(window_ms - (now - start)),
                });
            } else {
                (start, count + 1)
            };
            match slot.compare_exchange_weak(
                cur,
                (new_start << COUNT_BITS) | new_count,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(new_count as u32),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Forgets a session (call when it is deleted).
    pub fn forget(&self, session: &str) {
        self.windows.remove(&super::keyed_hash(&self.keys, session));
    }

    /// Times the lock fired.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::Relaxed)
    }
    /// Sessions tracked.
    pub fn len(&self) -> usize {
        self.windows.len()
    }
    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_burst_then_refuses_then_refills() {
        let l = RateLimiter::new(100);
        let spec = RateSpec::new(10, Duration::from_secs(1), 3).unwrap();
        let t0 = 10_000_000_000_000;
        for i in 0..3 {
            assert!(l.check(7, &spec, t0).is_ok(), "burst call {i}");
        }
        let retry = l.check(7, &spec, t0).unwrap_err();
        assert_eq!(retry, Duration::from_millis(100));
        // Another key is unaffected.
        assert!(l.check(8, &spec, t0).is_ok());
        // After one interval one more call passes, and only one.
        assert!(l.check(7, &spec, t0 + 100_000_000).is_ok());
        assert!(l.check(7, &spec, t0 + 100_000_000).is_err());
        assert_eq!(l.limited(), 2);
    }

    #[test]
    fn principal_and_tool_scopes() {
        let l = RateLimiter::new(100);
        let spec = RateSpec::new(1, Duration::from_secs(3600), 1).unwrap();
        let a = Principal::api_key("a", [""; 0], [""; 0]);
        let b = Principal::api_key("b", [""; 0], [""; 0]);
        assert!(l.check_principal(&a, &spec).is_ok());
        let e = l.check_principal(&a, &spec).unwrap_err();
        assert_eq!(e.scope, RateScope::Principal);
        assert!(e.retry_after_secs() >= 3599);
        assert!(l.check_principal(&b, &spec).is_ok());
        assert!(l.check_tool(&a, "u", "t1", &spec).is_ok());
        assert!(l.check_tool(&a, "u", "t2", &spec).is_ok());
        assert_eq!(
            l.check_tool(&a, "u", "t1", &spec).unwrap_err().scope,
            RateScope::Tool
        );
    }

    #[test]
    fn memory_is_bounded_and_sweeps_are_lossless() {
        let l = RateLimiter::new(10);
        let spec = RateSpec::new(1, Duration::from_secs(1), 1).unwrap();
        let t0 = 10_000_000_000_000;
        for k in 0..10 {
            assert!(l.check(k, &spec, t0).is_ok());
        }
        assert_eq!(l.len(), 10);
        // Full of live buckets: an 11th key is allowed untracked and counted.
        assert!(l.check(99, &spec, t0).is_ok());
        assert_eq!(l.overflowed(), 1);
        assert_eq!(l.len(), 10);
        // Two seconds later all are refilled, the sweep drops them, and the new key is tracked.
        assert!(l.check(99, &spec, t0 + 2_000_000_000).is_ok());
        assert_eq!(l.len(), 1);
        assert!(l.check(99, &spec, t0 + 2_000_000_000).is_err());
    }

    #[test]
    fn concurrent_checks_never_exceed_the_burst() {
        let l = std::sync::Arc::new(RateLimiter::new(100));
        let spec = RateSpec::new(1, Duration::from_secs(3600), 50).unwrap();
        let p = Principal::api_key("x", [""; 0], [""; 0]);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (l, p) = (l.clone(), p.clone());
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| l.check_principal(&p, &spec).is_ok())
                        .count()
                })
            })
            .collect();
        let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(ok, 50);
    }

    #[test]
    fn loop_lock_fires_at_the_configured_step_and_resets_after_the_window() {
        let g = LoopGuard::new(100);
        let spec = LoopSpec::new(3, Duration::from_secs(60)).unwrap();
        assert_eq!(g.step_at("s1", &spec, 1000), Ok(1));
        assert_eq!(g.step_at("s1", &spec, 1001), Ok(2));
        assert_eq!(g.step_at("s1", &spec, 1002), Ok(3));
        let e = g.step_at("s1", &spec, 1003).unwrap_err();
        assert_eq!(e.max_steps, 3);
        assert_eq!(e.retry_after, Duration::from_millis(59_997));
        assert_eq!(g.step_at("s2", &spec, 1003), Ok(1));
        assert_eq!(g.step_at("s1", &spec, 61_000), Ok(1));
        g.forget("s1");
        assert_eq!(g.len(), 1);
        assert_eq!(g.fired(), 1);
        assert!(LoopSpec::new(0, Duration::from_secs(1)).is_none());
    }
}
