//! meshgate dataplane: the hub that federates many MCP servers behind one Streamable HTTP
//! endpoint, on monoio with one worker per core.
//!
//! # The request path
//!
//! [`server`] reads requests with the `h1` codec (limits, timeouts) and hands those on the MCP
//! endpoint to [`pipeline::handle`], which runs one ordered list of stages, each its own module:
//!
//! 1. [`pipeline::admit`] — HTTP checks: Origin/Host, media types, `MCP-Protocol-Version`, the
//!    JSON-RPC envelope (peeked, not decoded);
//! 2. [`pipeline::identify`] — the caller's principal;
//! 3. [`pipeline::session`] — find the session (`initialize` creates it) bound to that
//!    principal; with hub replicas, serve it at its owner in one hop ([`cluster`]) or take it
//!    over from the shared [`store`] ([`persist`]);
//! 4. [`pipeline::policy`] — may this principal do this;
//! 5. [`pipeline::route`] — the method table: what the hub answers itself (merged lists from
//!    the [`catalog`], using [`federation`]), or which upstream and name a request goes to;
//! 6. [`pipeline::affinity`] — the upstream replica (bounded-load consistent hashing, [`ring`])
//!    and the upstream session on it ([`hub::lifecycle`]);
//! 7. [`pipeline::forward`] — send over the per-worker [`upstream`] pools; fail over a lost
//!    replica, retry only what may run twice;
//! 8. [`pipeline::relay`] — SSE back to the client with hub-minted event ids, server→client
//!    id remapping and replay;
//! 9. [`pipeline::audit`] — a record of every message, on success and on error.
//!
//! What stages learn travels in [`pipeline::Ctx`] and [`pipeline::Call`]; any stage may end the
//! request with [`error::ProxyError`], rendered once.
//!
//! # Around the path
//!
//! [`hub`] is the state every worker shares (sessions, upstream health in [`hub::health`],
//! the catalog) and the per-worker context; [`hub::housekeeping`] runs probes, expiry and DNS
//! re-resolution off the path. [`session`] is the state of one client session. [`config`] is
//! the validated snapshot every worker reads; [`worker`] runs the threads; [`metrics`] counts
//! everything. [`preflight`] refuses to start on unprefixed name collisions; [`demo`] holds the
//! two example servers of `meshgate --demo`; [`edge`] accepts edge tunnels on its own thread
//! and bridges edge slots to them.

pub mod catalog;
pub mod cluster;
pub mod config;
pub mod demo;
#[cfg(feature = "edge")]
pub mod edge;
pub mod error;
pub mod federation;
pub mod gov;
pub mod hub;
pub mod metrics;
pub mod persist;
pub mod pipeline;
pub mod preflight;
pub mod ring;
pub mod server;
pub mod session;
pub mod store;
pub mod upstream;
pub mod worker;

use std::sync::Arc;

/// A running hub: its bound address and worker threads.
pub struct Running {
    /// The address the hub listens on (port 0 resolved).
    pub addr: std::net::SocketAddr,
    /// Shared state (sessions, health, metrics).
    pub hub: Arc<hub::Hub>,
    /// Worker thread handles.
    pub workers: Vec<std::thread::JoinHandle<()>>,
    /// Where edge tunnels are accepted (QUIC and TCP), when configured.
    pub edge_addr: Option<std::net::SocketAddr>,
}

/// What an embedding adds to the hub beyond its config.
#[derive(Default)]
pub struct Extensions {
    /// Guardrails run on every governed tool result, after the tool rule's own `redact` rules
    /// (see [`governance::redact::Guardrail`]: quick, no IO, first `Block` wins).
    pub guardrails: Vec<Arc<dyn governance::redact::Guardrail>>,
}

/// Stops taking decisions that outlive the process (SIGTERM, SIGINT): every call held for
/// approval is denied with `reason` (each client gets a tool result saying so, and each denial is
/// audited), the clients are given up to `grace` to receive them, and the audit log is flushed
/// and closed. The caller exits afterwards.
pub fn shutdown(hub: &hub::Hub, reason: &str, grace: std::time::Duration) {
    let Some(g) = hub.gov.get() else { return };
    let denied = g.approvals.deny_all(reason);
    if !denied.is_empty() {
        tracing::info!(held = denied.len(), reason, "held calls denied at shutdown");
        // The held streams write their tool results on the workers: give them a moment. This
        // runs on the signal thread, never on a worker.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(grace.min(std::time::Duration::from_millis(500)));
    }
    if let Some(log) = &g.audit {
        log.close(grace);
    }
}

/// Starts a hub from a validated snapshot: binds, starts the edge tunnels (if configured),
/// housekeeping and the workers.
///
/// # Errors
/// When an address cannot be bound, the edge certificates cannot be loaded, or a thread cannot
/// start.
pub fn start(snap: config::Snapshot) -> std::io::Result<Running> {
    start_with(snap, Extensions::default())
}

/// [`start`], with what the embedding adds.
///
/// # Errors
/// As [`start`].
pub fn start_with(snap: config::Snapshot, ext: Extensions) -> std::io::Result<Running> {
    let addr = worker::probe_bind(snap.listen)?;
    let mut snap = snap;
    snap.listen = addr;
    #[cfg(feature = "edge")]
    let bridge = match &snap.edge {
        Some(_) => {
            let b = edge::Bridge::bind()?;
            snap.add_edge_slots(b.addr, &b.token);
            Some(b)
        }
        None => None,
    };
    #[cfg(not(feature = "edge"))]
    if snap.edge.is_some() {
        return Err(std::io::Error::other(
            "edge: this meshgate was built without the `edge` feature; rebuild with it to accept edge tunnels",
        ));
    }
    // The shared store (Redis) and the replica ring, when this hub is one of several.
    let store = match &snap.store {
        Some(cfg) => Some(
            store::open(cfg).map_err(|e| std::io::Error::other(format!("session store: {e}")))?,
        ),
        None => None,
    };
    let cluster = snap.cluster.clone().map(cluster::Cluster::new);
    if cluster.is_some() && store.is_none() {
        tracing::warn!("cluster configured without a shared store: a replica's sessions are lost with it (configure store: redis)");
    }
    let hub = hub::Hub::with_cluster(Arc::new(snap), store, cluster);
    if let Some(st) = &hub.store {
        hub.metrics.set_store_up(st.status().up);
    }
    *hub.bound.lock() = Some(addr);
    if let Some(g) = &hub.snap.governance {
        let id = hub
            .cluster
            .as_ref()
            .map_or_else(|| addr.to_string(), |c| c.me().to_string());
        let mut gov = gov::Gov::build(g, addr, &id).map_err(std::io::Error::other)?;
        gov.guardrails = ext.guardrails;
        let _ = hub.gov.set(gov);
    }
    #[cfg(feature = "edge")]
    let edge_addr = match (bridge, &hub.snap.edge) {
        (Some(b), Some(settings)) => Some(edge::start(hub.clone(), settings, b)?),
        _ => None,
    };
    #[cfg(not(feature = "edge"))]
    let edge_addr = None;
    hub::spawn_housekeeping(hub.clone())?;
    let workers = worker::start(hub.clone(), addr)?;
    Ok(Running {
        addr,
        hub,
        workers,
        edge_addr,
    })
}
