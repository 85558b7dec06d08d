//! Stage `affinity`: which replica of the routed upstream serves this session, and the
//! upstream session on it (DESIGN.md §6).
//!
//! A session's first request to an upstream places its upstream session on the replica that
//! consistent hashing with bounded loads picks for the session id ([`pick_replica`]), among the
//! healthy replicas; the choice is recorded in the session, so it never changes while that
//! replica is healthy. A recorded session whose replica went down moves to the next replica on
//! the ring on its next use, with the upstream handshake replayed ([`upstream_session`]).
//! Opening and closing upstream sessions is [`crate::hub::lifecycle`]'s.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::snapshot::MAX_REPLICAS;
use crate::error::ProxyError;
use crate::hub::lifecycle::{self, replica_bit};
use crate::hub::{Hub, Worker};
use crate::session::{Session, UpstreamSession};

/// The upstream session carrying `session`'s traffic to upstream `u`, opened on first use. A
/// recorded session whose replica is down (ejected by the prober or by passive health) is
/// dropped and reopened on the next replica on the ring, with the handshake replayed.
///
/// # Errors
/// `UpstreamUnavailable` (naming the upstream) when it is down or the handshake fails.
pub async fn upstream_session(
    w: &Worker,
    session: &Arc<Session>,
    u: usize,
) -> Result<UpstreamSession, ProxyError> {
    let existing = session.state.lock().upstreams.get(u).cloned().flatten();
    match existing {
        Some(us) if w.hub.replica_up(u, us.replica) => Ok(us),
        Some(us) => {
            lifecycle::drop_upstream_session(&w.hub, session, u, us.generation);
            let moved = Box::pin(lifecycle::open(w, session, u, replica_bit(us.replica))).await;
            if let Ok(new) = &moved {
                let up = w.upstream(u);
                tracing::info!(
                    upstream = %up.name,
                    session = %session.id,
                    from = %up.replicas[us.replica].url,
                    to = %up.replicas[new.replica].url,
                    "replica is down: session moved"
                );
            }
            moved
        }
        // Opening (a handshake) is the rare path: boxed, so the future of every request that
        // finds its upstream session open stays small.
        None => Box::pin(lifecycle::open(w, session, u, 0)).await,
    }
}

/// The replica of `u` a new upstream session for `key` (the client session id) starts on:
/// consistent hashing with bounded loads over the healthy replicas not in `skip` (bit `r`
/// for replica `r`). With every replica usable this is exactly [`Ring::pick_bounded`];
/// otherwise the ring's candidates are walked and the first usable replica under the bound
/// `ceil(load_factor * (usable load + 1) / usable replicas)` is taken, or else the first
/// usable one. `None` when no replica is usable.
///
/// [`Ring::pick_bounded`]: crate::ring::Ring::pick_bounded
pub fn pick_replica(hub: &Hub, u: usize, key: &[u8], skip: u64) -> Option<usize> {
    let up = hub.snap.upstreams.get(u)?;
    let h = hub.health.get(u)?;
    let usable = |r: usize| {
        r < MAX_REPLICAS
            && skip & (1u64 << r) == 0
            && h.replicas
                .get(r)
                .is_some_and(|s| s.up.load(Ordering::Acquire))
    };
    let mut loads = [0u32; MAX_REPLICAS];
    let (mut n, mut total) = (0u64, 0u64);
    for (r, s) in h.replicas.iter().enumerate().take(MAX_REPLICAS) {
        loads[r] = s.load.load(Ordering::Relaxed);
        if usable(r) {
            n += 1;
            total += u64::from(loads[r]);
        }
    }
    if n == 0 {
        return None;
    }
    let count = h.replicas.len().min(MAX_REPLICAS);
    if n as usize == count {
        return up.ring.pick_bounded(key, &loads[..count], up.load_factor);
    }
    let cap = (up.load_factor * (total + 1) as f64 / n as f64).ceil();
    let mut first = None;
    for r in up.ring.candidates(key).filter(|&r| usable(r)) {
        if f64::from(loads[r]) < cap {
            return Some(r);
        }
        first.get_or_insert(r);
    }
    first
}
