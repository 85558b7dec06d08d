//! meshgate dataplane: the hub that federates many MCP servers behind one Streamable HTTP
//! endpoint, on monoio with one worker per core.
//!
//! The request path, one module per step (DESIGN.md §4):
//! 1. [`server`] reads requests with the `h1` codec (limits, timeouts);
//! 2. [`admit`] checks Origin/Host and media types;
//! 3. [`mcp_wire::peek()`] reads method, id, name/uri without decoding the body;
//! 4. [`session`] finds the session (`initialize` creates it); with hub replicas, [`cluster`]
//!    sends a request to the replica owning its session in one hop, and [`persist`] takes a
//!    session over from the shared [`store`] when its owner is gone;
//! 5. [`mcp`] answers what the hub owns and routes the rest, using [`federation`] for merged
//!    lists and name/URI mapping;
//! 6. [`hub`] opens upstream sessions on the replica the [`ring`] picks and tracks replica health;
//! 7. [`upstream`] sends to the upstream over pooled connections and relays SSE.
//!
//! [`error::ProxyError`] is the one error type; [`metrics`] counts everything; [`config`] is
//! the validated snapshot every worker reads; [`worker`] runs the threads.
//!
//! Off the request path: [`preflight`] refuses to start on unprefixed name collisions;
//! [`demo`] holds the two example servers of `meshgate --demo`; [`ring`] is the bounded-load
//! consistent-hash ring used for upstream replicas and hub replicas; [`edge`] accepts edge
//! tunnels on its own thread and bridges edge slots to them; [`store`] is the shared session
//! store (Redis with sealed values) that [`persist`] writes on state change.

pub mod admit;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod edge;
pub mod error;
pub mod federation;
pub mod hub;
pub mod mcp;
pub mod metrics;
pub mod persist;
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

/// Starts a hub from a validated snapshot: binds, starts the edge tunnels (if configured),
/// housekeeping and the workers.
///
/// # Errors
/// When an address cannot be bound, the edge certificates cannot be loaded, or a thread cannot
/// start.
pub fn start(snap: config::Snapshot) -> std::io::Result<Running> {
    let addr = worker::probe_bind(snap.listen)?;
    let mut snap = snap;
    snap.listen = addr;
    let bridge = match &snap.edge {
        Some(_) => {
            let b = edge::Bridge::bind()?;
            snap.add_edge_slots(b.addr, &b.token);
            Some(b)
        }
        None => None,
    };
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
    let edge_addr = match (bridge, &hub.snap.edge) {
        (Some(b), Some(settings)) => Some(edge::start(hub.clone(), settings, b)?),
        _ => None,
    };
    hub::spawn_housekeeping(hub.clone())?;
    let workers = worker::start(hub.clone(), addr)?;
    Ok(Running {
        addr,
        hub,
        workers,
        edge_addr,
    })
}
