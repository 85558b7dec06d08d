//! Background housekeeping, off the request path, on its own thread (a small monoio runtime):
//! the health probes of every replica, expiry of idle sessions (their upstream sessions are
//! deleted), server→client requests the client never answered (the upstream that asked gets a
//! JSON-RPC error), the shared store's status and periodic record refresh, and DNS
//! re-resolution of upstream host names (on a schedule and when a connect fails), which runs on
//! one more thread because the system resolver blocks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{health, lifecycle, Hub, Worker};
use crate::session::{PendingRequest, Session};
use crate::upstream;

/// Starts the housekeeping thread (and the resolver thread when an upstream is named by host).
///
/// # Errors
/// When a thread cannot be started.
pub fn spawn_housekeeping(hub: Arc<Hub>) -> std::io::Result<std::thread::JoinHandle<()>> {
    spawn_resolver(&hub)?;
    std::thread::Builder::new()
        .name("meshgate-housekeeping".into())
        .spawn(move || {
            let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build();
            let mut rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "housekeeping runtime failed to start; health checks are off");
                    return;
                }
            };
            rt.block_on(run(hub));
        })
}

async fn run(hub: Arc<Hub>) {
    let w = std::rc::Rc::new(Worker::new(hub.clone(), 0));
    // Edge slots are not probed: a slot is up exactly while its tunnel is (see `edge`).
    for (u, up) in hub.snap.upstreams.iter().enumerate() {
        if up.edge_slot.is_some() {
            continue;
        }
        for r in 0..up.replicas.len() {
            let w = w.clone();
            monoio::spawn(async move { health::probe_loop(w, u, r).await });
        }
    }
    let mut last_refresh = Instant::now();
    let mut last_store_up = true;
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        for s in hub.sessions.expire(hub.snap.session_ttl) {
            tracing::info!(session = %s.id, "session expired (idle)");
            crate::persist::forget(&hub, &s.id, &s.principal);
            lifecycle::close_all(&w, &s).await;
        }
        for s in hub.stateless.expire(hub.snap.session_ttl) {
            tracing::debug!(session = %s.id, "idle stateless-client session ended");
            lifecycle::close_all(&w, &s).await;
        }
        expire_pending(&w).await;
        if let Some(store) = &hub.store {
            let up = store.status().up;
            hub.metrics.set_store_up(up);
            if up && !last_store_up {
                // Writes dropped while the store was down: write every live session again.
                for s in hub.sessions.all() {
                    crate::persist::save(&hub, &s);
                }
            }
            last_store_up = up;
        }
        // Stored records expire an idle TTL after their last write: refresh live sessions'
        // records a few times per TTL (and DNS-discovered replica sets on their interval).
        let every = hub.snap.session_ttl / 3;
        if last_refresh.elapsed()
            >= every.min(hub.cluster.as_ref().map_or(every, |c| c.refresh_interval()))
        {
            last_refresh = Instant::now();
            if let Some(c) = &hub.cluster {
                c.refresh();
            }
            if hub.store.is_some() {
                for s in hub.sessions.all() {
                    crate::persist::save(&hub, &s);
                }
            }
        }
    }
}

/// Server→client requests older than `session.pending_timeout` are given up: each upstream
/// that asked gets a JSON-RPC error for its request (instead of waiting forever), and the
/// entry is gone, so a client that never answers costs bounded memory.
async fn expire_pending(w: &Worker) {
    let max_age = w.hub.snap.pending_timeout;
    for s in w
        .hub
        .sessions
        .all()
        .into_iter()
        .chain(w.hub.stateless.all())
    {
        let expired = s.expire_pending(max_age);
        for p in expired {
            let why = format!(
                "the client did not answer within {}s (meshgate gave up on this request)",
                max_age.as_secs()
            );
            answer_upstream_with_error(w, &s, &p, &why).await;
        }
    }
}

/// Tells the upstream that sent server→client request `p` that it will get no answer.
pub(crate) async fn answer_upstream_with_error(
    w: &Worker,
    session: &Session,
    p: &PendingRequest,
    why: &str,
) {
    let us = session.state.lock().upstreams[p.upstream].clone();
    let Some(us) = us.filter(|us| us.generation == p.generation) else {
        return;
    };
    let body = mcp_wire::jsonrpc::error_object(
        Some(&p.original_id),
        mcp_wire::jsonrpc::code::INTERNAL_ERROR,
        why,
        None,
    );
    let up = w.upstream(p.upstream);
    tracing::info!(upstream = %up.name, session = %session.id, "{why}");
    if let Err(e) = upstream::post(
        &w.pool,
        up,
        us.replica,
        Some(&us),
        &body,
        upstream::Resend::Safe,
    )
    .await
    {
        tracing::debug!(upstream = %up.name, error = %e, "telling the upstream its request expired failed");
    }
}

/// The resolver thread: re-resolves upstream host names every `dns_refresh`, and within a
/// quarter second when a worker or the prober asked for it after a failed connect. The system
/// resolver blocks, so it runs here, never on a worker.
fn spawn_resolver(hub: &Arc<Hub>) -> std::io::Result<()> {
    let named: Vec<crate::config::ResolvedAddr> = hub
        .snap
        .upstreams
        .iter()
        .flat_map(|u| u.replicas.iter())
        .map(|r| r.addr.clone())
        .filter(|a| a.has_name())
        .collect();
    if named.is_empty() {
        return Ok(());
    }
    let every = hub.snap.dns_refresh;
    std::thread::Builder::new()
        .name("meshgate-resolver".into())
        .spawn(move || {
            let mut last = Instant::now();
            loop {
                std::thread::park_timeout(Duration::from_millis(250));
                let due = last.elapsed() >= every;
                for a in &named {
                    if due || a.is_stale() {
                        a.refresh();
                    }
                }
                if due {
                    last = Instant::now();
                }
            }
        })?;
    Ok(())
}
