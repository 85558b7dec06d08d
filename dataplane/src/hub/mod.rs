//! The hub's shared state: what every worker reads, and the per-worker context.
//!
//! [`Hub`] is everything the workers share: the config snapshot, the session table, upstream
//! health ([`health`]), the shared catalog of upstream lists ([`crate::catalog`]), the metrics,
//! and, with hub replicas, the store and the cluster view. [`Worker`] is one worker thread's own
//! context (its upstream connection pool and counters), passed around as `Rc` inside that thread.
//!
//! The rest of this module is split by concern:
//! - [`health`]: per-replica health and load, passive ejection and the active prober;
//! - [`lifecycle`]: upstream sessions (handshake, single-flight opening, replay of log level and
//!   subscriptions, dropping and closing) that the `affinity` stage asks for;
//! - [`housekeeping`]: the background thread (probes, session expiry, pending server→client
//!   requests that were never answered, store refresh, DNS re-resolution of upstreams).

pub mod health;
pub mod housekeeping;
pub mod lifecycle;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::catalog::Catalog;
use crate::config::{Snapshot, Upstream};
use crate::error::{ErrorKind, ProxyError};
use crate::federation::Naming;
use crate::metrics::{Metrics, WorkerMetrics};
use crate::session::SessionTable;
use crate::upstream::{Pool, UpstreamError};

pub use health::{ReplicaState, UpstreamHealth};
pub use housekeeping::spawn_housekeeping;

/// The revision the hub asks upstreams for.
pub const UPSTREAM_REVISION: &str = mcp_wire::mcp::V2025_11_25;

/// Everything the workers share.
pub struct Hub {
    /// Validated config.
    pub snap: Arc<Snapshot>,
    /// Client sessions.
    pub sessions: SessionTable,
    /// Hub-held sessions carrying 2026-07-28 clients' requests, one per (principal, declared
    /// capabilities); never named to a client.
    pub stateless: SessionTable,
    /// Upstream health and replica loads, by upstream index.
    pub health: Vec<UpstreamHealth>,
    /// Bumped whenever an upstream goes up or down (streams watch it to send `list_changed`).
    pub health_epoch: AtomicU64,
    /// Exposed-name rules.
    pub naming: Naming,
    /// The upstreams' lists, shared by every session (one copy per upstream and client
    /// capability set), and their merged forms.
    pub catalog: Catalog,
    /// Counters and gauges.
    pub metrics: Metrics,
    generation: AtomicU64,
    /// The address the listener actually bound (after port 0 is resolved).
    pub bound: parking_lot::Mutex<Option<std::net::SocketAddr>>,
    /// The shared session store (several hub replicas); `None` = sessions live in memory only.
    pub store: Option<Arc<dyn crate::store::SessionStore>>,
    /// The hub replicas, when this hub is one of several.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Keys that seal the request state the hub hands 2026-07-28 clients (input rounds over a
    /// legacy upstream): the shared store's keys when there is one (so any replica can open
    /// another's), else random keys of this process.
    pub state_keys: crate::store::seal::Keyring,
    /// Identity, policy, approvals and the audit log, when configured (set once at start).
    pub gov: std::sync::OnceLock<crate::gov::Gov>,
    /// Session ids the store recently did not know (so a flood of unknown ids costs one store
    /// lookup each per TTL, not one per request).
    pub unknown_sessions: crate::persist::NegativeCache,
}

impl Hub {
    /// Shared state for a snapshot. Configured upstreams start as up (the prober corrects it
    /// quickly, and a refused connection marks one down at once); edge slots start down.
    pub fn new(snap: Arc<Snapshot>) -> Arc<Self> {
        Self::with_cluster(snap, None, None)
    }

    /// Shared state for a hub that is one of several replicas sharing `store`.
    pub fn with_cluster(
        snap: Arc<Snapshot>,
        store: Option<Arc<dyn crate::store::SessionStore>>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Arc<Self> {
        let n = snap.upstreams.len();
        Arc::new(Hub {
            store,
            cluster,
            naming: Naming {
                separator: snap.separator.clone(),
                upstreams: snap.upstreams.iter().map(|u| u.name.clone()).collect(),
            },
            metrics: Metrics::new(snap.workers, n),
            health: snap.upstreams.iter().map(UpstreamHealth::new).collect(),
            health_epoch: AtomicU64::new(0),
            catalog: Catalog::new(n, snap.catalog_ttl),
            sessions: SessionTable::default(),
            stateless: SessionTable::default(),
            generation: AtomicU64::new(1),
            bound: parking_lot::Mutex::new(None),
            unknown_sessions: crate::persist::NegativeCache::default(),
            state_keys: state_keys(&snap),
            gov: std::sync::OnceLock::new(),
            snap,
        })
    }

    /// A fresh upstream-session generation number.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed)
    }
}

/// The keys that seal hub-issued request state (see [`Hub::state_keys`]).
fn state_keys(snap: &Snapshot) -> crate::store::seal::Keyring {
    use base64::Engine;
    if let Some(cfg) = &snap.store {
        if !matches!(cfg.kind, crate::store::StoreKind::Memory) {
            match crate::store::seal::Keyring::load(&cfg.keys) {
                Ok(k) => return k,
                Err(e) => {
                    tracing::warn!(error = %e, "request state is sealed with this process's own keys: the store keys do not load")
                }
            }
        }
    }
    let mut key = [0u8; 32];
    let mut index = [0u8; 32];
    // A hub that cannot draw random keys cannot seal anything.
    getrandom::fill(&mut key).expect("the OS random number generator is available");
    getrandom::fill(&mut index).expect("the OS random number generator is available");
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = format!("p1:{}\nindex:{}\n", b64.encode(key), b64.encode(index));
    crate::store::seal::Keyring::parse(&text, "process keys").expect("generated key lines parse")
}

/// One worker thread's context.
pub struct Worker {
    /// Shared state.
    pub hub: Arc<Hub>,
    /// This worker's upstream connections.
    pub pool: Pool,
    /// This worker's counters.
    pub metrics: Arc<WorkerMetrics>,
}

impl Worker {
    /// The context of worker `index`.
    pub fn new(hub: Arc<Hub>, index: usize) -> Self {
        let metrics = hub.metrics.workers[index % hub.metrics.workers.len()].clone();
        Worker {
            pool: Pool::new(hub.snap.upstreams.len()),
            metrics,
            hub,
        }
    }

    /// The upstream at index `u`.
    pub fn upstream(&self, u: usize) -> &Upstream {
        &self.hub.snap.upstreams[u]
    }
}

/// The error kind a client sees for an upstream failure.
pub fn failure_kind(e: &UpstreamError) -> ErrorKind {
    match e {
        UpstreamError::Timeout(_) => ErrorKind::UpstreamTimeout,
        UpstreamError::SessionGone => ErrorKind::UpstreamSessionLost,
        UpstreamError::Connect(_)
        | UpstreamError::Io(_)
        | UpstreamError::MaybeDelivered(_)
        | UpstreamError::Status(..) => ErrorKind::UpstreamUnavailable,
        UpstreamError::Protocol(_) => ErrorKind::UpstreamProtocol,
    }
}

/// How messages name an upstream: `upstream 'x'`, plus ` replica URL` when it has several.
pub fn upstream_label(up: &Upstream, r: usize) -> String {
    match up.replicas.get(r) {
        Some(rep) if up.replicas.len() > 1 => format!("upstream '{}' replica {}", up.name, rep.url),
        _ => format!("upstream '{}'", up.name),
    }
}

/// Turns a failure on replica `r` of upstream `u` into the client-facing error naming them, and
/// feeds passive health ([`Hub::replica_failed`]).
pub fn upstream_failure(w: &Worker, u: usize, r: usize, e: &UpstreamError) -> ProxyError {
    w.hub.replica_failed(u, r, e);
    ProxyError::new(
        failure_kind(e),
        format!("{} failed: {e}", upstream_label(w.upstream(u), r)),
    )
}
