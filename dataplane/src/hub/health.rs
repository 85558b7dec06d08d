//! Upstream health: per-replica up/down and load, passive ejection from failed requests, and
//! the active prober. Read by `route` (an upstream that is down leaves the lists and fails
//! fast) and by `affinity` (which replicas a session may be placed on).
//!
//! An upstream is up while at least one of its replicas is. Passive health
//! ([`Hub::replica_failed`]) ejects a replica after `eject_after` failed requests in a row (a
//! refused connection at once); the prober ([`probe_loop`]) keeps a hub-owned session on every
//! replica answering `ping`, and brings an ejected replica back when it answers again.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use super::{Hub, Worker};
use crate::config::Upstream;
use crate::session::UpstreamSession;
use crate::upstream::{self, UpstreamError};

/// Health and load of one replica of an upstream.
pub struct ReplicaState {
    pub(crate) up: AtomicBool,
    pub(crate) failures: AtomicU32,
    /// Upstream sessions currently assigned to this replica.
    pub(crate) load: AtomicU32,
}

/// Health of one upstream: its replicas, and the last upstream-level state announced.
pub struct UpstreamHealth {
    pub(crate) replicas: Vec<ReplicaState>,
    /// Whether at least one replica was up at the last change (for logs and the epoch).
    announced: AtomicBool,
}

impl UpstreamHealth {
    /// The initial health of an upstream: configured upstreams start up (the prober corrects it
    /// quickly); edge slots start down (they are up only while an edge serving them is
    /// connected).
    pub fn new(up: &Upstream) -> Self {
        let start_up = up.edge_slot.is_none();
        UpstreamHealth {
            replicas: up
                .replicas
                .iter()
                .map(|_| ReplicaState {
                    up: AtomicBool::new(start_up),
                    failures: AtomicU32::new(0),
                    load: AtomicU32::new(0),
                })
                .collect(),
            announced: AtomicBool::new(start_up),
        }
    }

    fn any_up(&self) -> bool {
        self.replicas.iter().any(|r| r.up.load(Ordering::Acquire))
    }
}

// === impl Hub (health) ===

impl Hub {
    /// Whether upstream `u` is considered up (at least one replica is).
    pub fn is_up(&self, u: usize) -> bool {
        self.health.get(u).is_some_and(UpstreamHealth::any_up)
    }

    /// Bit mask of the upstreams that are up (bit `u` for upstream `u`).
    pub fn up_mask(&self) -> u64 {
        self.health
            .iter()
            .enumerate()
            .filter(|(_, h)| h.any_up())
            .fold(0, |m, (i, _)| m | (1u64 << i))
    }

    /// Whether replica `r` of upstream `u` is considered up.
    pub fn replica_up(&self, u: usize, r: usize) -> bool {
        self.replica(u, r)
            .is_some_and(|s| s.up.load(Ordering::Acquire))
    }

    /// Upstream sessions currently assigned to replica `r` of upstream `u`.
    pub fn replica_load(&self, u: usize, r: usize) -> u32 {
        self.replica(u, r)
            .map_or(0, |s| s.load.load(Ordering::Relaxed))
    }

    pub(crate) fn replica(&self, u: usize, r: usize) -> Option<&ReplicaState> {
        self.health.get(u)?.replicas.get(r)
    }

    /// Marks every replica of an upstream up or down (edge slots: one replica, the tunnel).
    pub fn set_up(&self, u: usize, up: bool, why: &str) {
        let n = self.health.get(u).map_or(0, |h| h.replicas.len());
        for r in 0..n {
            self.set_replica_up(u, r, up, why);
        }
    }

    /// Marks one replica up or down. A change is logged; a change of the upstream as a whole
    /// (its first replica up, its last one down) bumps the health epoch and is logged too.
    pub fn set_replica_up(&self, u: usize, r: usize, up: bool, why: &str) {
        let (Some(h), Some(s)) = (self.health.get(u), self.replica(u, r)) else {
            return;
        };
        if up {
            s.failures.store(0, Ordering::Relaxed);
        }
        if s.up.swap(up, Ordering::AcqRel) == up {
            return;
        }
        let upstream = &self.snap.upstreams[u];
        if upstream.replicas.len() > 1 {
            let url = &upstream.replicas[r].url;
            if up {
                tracing::info!(upstream = %upstream.name, replica = %url, "replica is up");
            } else {
                tracing::warn!(upstream = %upstream.name, replica = %url, reason = why, "replica is down: its sessions move to the next replica");
            }
        }
        let any = h.any_up();
        if h.announced.swap(any, Ordering::AcqRel) != any {
            self.health_epoch.fetch_add(1, Ordering::AcqRel);
            if any {
                tracing::info!(upstream = %upstream.name, "upstream is up");
            } else {
                tracing::warn!(upstream = %upstream.name, reason = why, "upstream is down: its tools leave the lists until it answers again");
            }
        }
    }

    /// Passive health: a request to replica `r` of `u` failed with `e`. Failures that count
    /// ([`UpstreamError::is_replica_failure`]) eject the replica after `eject_after` in a row; a
    /// refused connection ejects it at once. Returns whether the replica is now down.
    pub fn replica_failed(&self, u: usize, r: usize, e: &UpstreamError) -> bool {
        let Some(s) = self.replica(u, r) else {
            return false;
        };
        if e.is_replica_failure() {
            let n = s.failures.fetch_add(1, Ordering::Relaxed) + 1;
            let limit = self.snap.upstreams[u].eject_after;
            if e.is_unreachable() || n >= limit {
                self.set_replica_up(u, r, false, &e.to_string());
            }
        }
        !s.up.load(Ordering::Acquire)
    }

    /// Passive health: a request to replica `r` of `u` was answered (resets its failure count).
    pub fn replica_ok(&self, u: usize, r: usize) {
        if let Some(s) = self.replica(u, r) {
            // Read first: the common case (no failures) writes nothing to the shared line.
            if s.failures.load(Ordering::Relaxed) != 0 {
                s.failures.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Counts one more upstream session on replica `r` of `u`.
    pub fn acquire(&self, u: usize, r: usize) {
        if let Some(s) = self.replica(u, r) {
            s.load.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one upstream session less on replica `r` of `u`.
    pub fn release(&self, u: usize, r: usize) {
        if let Some(s) = self.replica(u, r) {
            let _ = s
                .load
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

// === the prober ===

/// Probes one replica of one upstream forever: a hub-owned session answered by `ping` each
/// interval; it is re-created when the replica forgets it. A passing probe brings an ejected
/// replica back; two failing in a row (or a refused connection) eject it.
pub(crate) async fn probe_loop(w: std::rc::Rc<Worker>, u: usize, r: usize) {
    let snap = w.hub.snap.clone();
    let up = &snap.upstreams[u];
    let mut session: Option<UpstreamSession> = None;
    loop {
        let ok = probe_once(&w, up, r, &mut session).await;
        match ok {
            Ok(()) => w.hub.set_replica_up(u, r, true, "probe answered"),
            Err(e) => {
                session = None;
                let Some(s) = w.hub.replica(u, r) else { return };
                let n = s.failures.fetch_add(1, Ordering::Relaxed) + 1;
                // One failed probe may be a blip; two in a row (or a refused connection) is down.
                if n >= 2 || e.is_unreachable() {
                    w.hub.set_replica_up(u, r, false, &e.to_string());
                }
                if e.is_unreachable() {
                    // The name may point elsewhere now (a rescheduled pod): look it up again.
                    up.replicas[r].addr.resolve_soon();
                }
            }
        }
        // While down, probe faster so the replica comes back quickly.
        let wait = if w.hub.replica_up(u, r) {
            up.health_interval
        } else {
            up.health_interval.min(Duration::from_millis(500))
        };
        monoio::time::sleep(wait).await;
    }
}

async fn probe_once(
    w: &Worker,
    up: &Upstream,
    r: usize,
    session: &mut Option<UpstreamSession>,
) -> Result<(), UpstreamError> {
    let info = r#"{"name":"meshgate-health","version":"0.1.0"}"#;
    if up.era.modern().is_none() {
        // Learn once whether it speaks 2026-07-28 too (shown in /metrics and the log).
        let _ = super::lifecycle::open_in_era(&w.pool, up, r, "{}", info, 0, true).await;
    }
    if session.as_ref().is_some_and(UpstreamSession::is_modern) {
        // Stateless: nothing to keep; `server/discover` again is the probe.
        *session = None;
    }
    if session.is_none() {
        let us = super::lifecycle::handshake(&w.pool, up, r, "{}", info, 0).await?;
        if us.is_modern() {
            return Ok(());
        }
        *session = Some(us);
    }
    let us = session.as_ref().ok_or(UpstreamError::SessionGone)?;
    let (resp, _) = upstream::request(
        &w.pool,
        up,
        r,
        Some(us),
        br#"{"jsonrpc":"2.0","id":"mg-ping","method":"ping"}"#,
    )
    .await?;
    let p = mcp_wire::peek(&resp).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    if p.kind != mcp_wire::Kind::Response {
        return Err(UpstreamError::Protocol(
            "ping answer is not a response".into(),
        ));
    }
    Ok(())
}
