//! The hub's shared state and the per-worker context.
//!
//! [`Hub`] is everything the workers share: the config snapshot, the session table, per-replica
//! health and load of every upstream, and the metrics. [`Worker`] is one worker thread's own
//! context (its upstream pool and counters), passed around as `Rc` inside that thread.
//!
//! This module also owns upstream sessions and step 7 (`affinity`) of the request path:
//! [`ensure_upstream`] opens (lazily) the upstream session that carries one client session's
//! traffic to one upstream, on the replica [`Hub::pick_replica`] chooses (consistent hashing of
//! the session id with bounded loads, healthy replicas only), records the replica in it and
//! replays log level and subscriptions. A recorded session whose replica is down moves to the
//! next replica on the ring on its next use (failover of a call in flight is in `mcp`).
//! Health: the prober here checks every replica of every configured upstream; passive health
//! ([`Hub::replica_failed`]) ejects a replica after `eject_after` failed requests in a row (a
//! refused connection at once). An upstream is up while at least one of its replicas is.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::snapshot::MAX_REPLICAS;
use crate::config::{Snapshot, Upstream};
use crate::error::{ErrorKind, ProxyError};
use crate::federation::Naming;
use crate::metrics::{Metrics, WorkerMetrics};
use crate::session::{Session, SessionTable, UpstreamSession};
use crate::upstream::{self, Pool, UpstreamError};

/// The revision the hub asks upstreams for.
pub const UPSTREAM_REVISION: &str = mcp_wire::mcp::V2025_11_25;

/// Health and load of one replica of an upstream.
pub struct ReplicaState {
    up: AtomicBool,
    failures: AtomicU32,
    /// Upstream sessions currently assigned to this replica.
    load: AtomicU32,
}

/// Health of one upstream: its replicas, and the last upstream-level state announced.
pub struct UpstreamHealth {
    replicas: Vec<ReplicaState>,
    /// Whether at least one replica was up at the last change (for logs and the epoch).
    announced: AtomicBool,
}

impl UpstreamHealth {
    fn any_up(&self) -> bool {
        self.replicas.iter().any(|r| r.up.load(Ordering::Acquire))
    }
}

/// Everything the workers share.
pub struct Hub {
    /// Validated config.
    pub snap: Arc<Snapshot>,
    /// Client sessions.
    pub sessions: SessionTable,
    /// Upstream health and replica loads, by upstream index.
    pub health: Vec<UpstreamHealth>,
    /// Bumped whenever an upstream goes up or down (streams watch it to send `list_changed`).
    pub health_epoch: AtomicU64,
    /// Exposed-name rules.
    pub naming: Naming,
    /// Counters and gauges.
    pub metrics: Metrics,
    generation: AtomicU64,
    /// The address the listener actually bound (after port 0 is resolved).
    pub bound: parking_lot::Mutex<Option<std::net::SocketAddr>>,
    /// The shared session store (several hub replicas); `None` = sessions live in memory only.
    pub store: Option<Arc<dyn crate::store::SessionStore>>,
    /// The hub replicas, when this hub is one of several.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
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
            // Edge slots start down: they are up only while an edge serving them is connected.
            health: snap
                .upstreams
                .iter()
                .map(|u| UpstreamHealth {
                    replicas: u
                        .replicas
                        .iter()
                        .map(|_| ReplicaState {
                            up: AtomicBool::new(u.edge_slot.is_none()),
                            failures: AtomicU32::new(0),
                            load: AtomicU32::new(0),
                        })
                        .collect(),
                    announced: AtomicBool::new(u.edge_slot.is_none()),
                })
                .collect(),
            health_epoch: AtomicU64::new(0),
            sessions: SessionTable::default(),
            generation: AtomicU64::new(1),
            bound: parking_lot::Mutex::new(None),
            snap,
        })
    }

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

    fn replica(&self, u: usize, r: usize) -> Option<&ReplicaState> {
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

    /// The replica of `u` a new upstream session for `key` (the client session id) starts on:
    /// consistent hashing with bounded loads over the healthy replicas not in `skip` (bit `r`
    /// for replica `r`). With every replica usable this is exactly [`Ring::pick_bounded`];
    /// otherwise the ring's candidates are walked and the first usable replica under the bound
    /// `ceil(load_factor * (usable load + 1) / usable replicas)` is taken, or else the first
    /// usable one. `None` when no replica is usable.
    ///
    /// [`Ring::pick_bounded`]: crate::ring::Ring::pick_bounded
    pub fn pick_replica(&self, u: usize, key: &[u8], skip: u64) -> Option<usize> {
        let up = self.snap.upstreams.get(u)?;
        let h = self.health.get(u)?;
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

    /// A fresh upstream-session generation number.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed)
    }
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
        UpstreamError::Connect(_) | UpstreamError::Io(_) | UpstreamError::Status(..) => {
            ErrorKind::UpstreamUnavailable
        }
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

#[derive(Deserialize)]
struct InitResult<'a> {
    #[serde(borrow)]
    result: Option<InitFields<'a>>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct InitFields<'a> {
    #[serde(rename = "protocolVersion")]
    protocol_version: String,
    #[serde(borrow, default)]
    capabilities: Option<&'a RawValue>,
}

/// Runs the MCP handshake with replica `r` of an upstream for a client that declared `capabilities`/`info`.
///
/// # Errors
/// [`UpstreamError`] when the upstream cannot be reached or does not complete the handshake.
pub async fn handshake(
    pool: &Pool,
    up: &Upstream,
    r: usize,
    capabilities: &str,
    client_info: &str,
    generation: u64,
) -> Result<UpstreamSession, UpstreamError> {
    let body = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":\"mg-init\",\"method\":\"initialize\",\"params\":{{\"protocolVersion\":\"{UPSTREAM_REVISION}\",\"capabilities\":{capabilities},\"clientInfo\":{client_info}}}}}"
    );
    let (resp, sid) = upstream::request(pool, up, r, None, body.as_bytes()).await?;
    let parsed: InitResult<'_> = serde_json::from_slice(&resp)
        .map_err(|e| UpstreamError::Protocol(format!("bad initialize result: {e}")))?;
    if let Some(e) = parsed.error {
        return Err(UpstreamError::Protocol(format!(
            "initialize refused: {}",
            e.get()
        )));
    }
    let res = parsed
        .result
        .ok_or_else(|| UpstreamError::Protocol("initialize without result".into()))?;
    let version = mcp_wire::mcp::legacy_revision(&res.protocol_version).ok_or_else(|| {
        UpstreamError::Protocol(format!(
            "upstream chose protocol version {:?}, which the hub does not speak",
            res.protocol_version
        ))
    })?;
    let caps: serde_json::Value = res
        .capabilities
        .map(|c| serde_json::from_str(c.get()))
        .transpose()
        .map_err(|e| UpstreamError::Protocol(format!("bad capabilities: {e}")))?
        .unwrap_or(serde_json::Value::Object(Default::default()));
    let us = UpstreamSession {
        sid: sid.map(Arc::from),
        version: version.into(),
        capabilities: Arc::new(caps),
        generation,
        replica: r,
    };
    let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    match upstream::post(pool, up, r, Some(&us), note).await? {
        upstream::Reply::Status(_) | upstream::Reply::Json { .. } => {}
        upstream::Reply::Stream { .. } => {}
    }
    Ok(us)
}

/// The upstream session carrying `session`'s traffic to upstream `u`, opened on first use. A
/// recorded session whose replica is down (ejected by the prober or by passive health) is
/// dropped and reopened on the next replica on the ring, with the handshake replayed.
///
/// # Errors
/// `UpstreamUnavailable` (naming the upstream) when it is down or the handshake fails.
pub async fn ensure_upstream(
    w: &Worker,
    session: &Arc<Session>,
    u: usize,
) -> Result<UpstreamSession, ProxyError> {
    let existing = session.state.lock().upstreams.get(u).cloned().flatten();
    match existing {
        Some(us) if w.hub.replica_up(u, us.replica) => Ok(us),
        Some(us) => {
            drop_upstream_session(&w.hub, session, u, us.generation);
            let moved = open_upstream_avoiding(w, session, u, replica_bit(us.replica)).await;
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
        None => open_upstream(w, session, u).await,
    }
}

/// Bit `r` of a replica mask (0 for replicas past [`MAX_REPLICAS`], which config refuses).
pub fn replica_bit(r: usize) -> u64 {
    if r < MAX_REPLICAS {
        1u64 << r
    } else {
        0
    }
}

/// Clears `session`'s upstream session on `u` if it is still the one of `generation` (so two
/// requests that saw the same failure clear it once), and releases its replica's load.
/// Returns whether it was cleared.
pub fn drop_upstream_session(hub: &Hub, session: &Session, u: usize, generation: u64) -> bool {
    let old = {
        let mut st = session.state.lock();
        match st.upstreams.get_mut(u) {
            Some(slot) if slot.as_ref().is_some_and(|s| s.generation == generation) => slot.take(),
            _ => None,
        }
    };
    match old {
        Some(old) => {
            hub.release(u, old.replica);
            session.changed.notify_waiters();
            true
        }
        None => false,
    }
}

/// Opens a fresh upstream session for `session` on `u`, replays the client's log level and
/// subscriptions on it, and records it. To replace a dead session, clear its slot first. One
/// opening at a time per (session, upstream): a request that finds one under way waits for it
/// and shares its result.
///
/// # Errors
/// As [`ensure_upstream`].
pub async fn open_upstream(
    w: &Worker,
    session: &Arc<Session>,
    u: usize,
) -> Result<UpstreamSession, ProxyError> {
    open_upstream_avoiding(w, session, u, 0).await
}

/// Counts a replica's load while an upstream session is being opened on it; released on drop
/// unless the session got recorded (then the load belongs to the recorded session).
struct LoadGuard<'a> {
    hub: &'a Hub,
    u: usize,
    r: usize,
    armed: bool,
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.hub.release(self.u, self.r);
        }
    }
}

/// As [`open_upstream`], preferring replicas outside `avoid` (bit `r` for replica `r`; the
/// replica a session is being moved away from). An avoided replica is still used when it is
/// the only healthy one (an upstream that forgot our session is re-initialized in place).
/// When a handshake fails, the next replica on the ring is tried (each replica once).
///
/// # Errors
/// As [`ensure_upstream`].
pub async fn open_upstream_avoiding(
    w: &Worker,
    session: &Arc<Session>,
    u: usize,
    avoid: u64,
) -> Result<UpstreamSession, ProxyError> {
    let up = w.upstream(u);
    // Single flight: while one request (on any worker) opens this upstream session, the
    // others wait for it instead of opening a second one.
    let _opening = loop {
        let notified = session.changed.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        {
            let mut st = session.state.lock();
            if let Some(us) = st.upstreams[u].clone() {
                return Ok(us);
            }
            if !st.opening[u] {
                st.opening[u] = true;
                break OpeningGuard { session, u };
            }
        }
        if monoio::time::timeout(up.request_timeout, notified)
            .await
            .is_err()
        {
            return Err(ProxyError::new(
                ErrorKind::UpstreamTimeout,
                format!(
                    "upstream '{}' did not finish its handshake within {:?}",
                    up.name, up.request_timeout
                ),
            ));
        }
    };
    if !w.hub.is_up(u) {
        return Err(ProxyError::new(
            ErrorKind::UpstreamUnavailable,
            format!(
                "upstream '{}' is unavailable (failing health checks)",
                up.name
            ),
        ));
    }
    let key = session.id.as_bytes();
    let mut tried: u64 = 0;
    let mut last: Option<ProxyError> = None;
    let (us, mut load) = loop {
        let pick = w
            .hub
            .pick_replica(u, key, avoid | tried)
            .or_else(|| w.hub.pick_replica(u, key, tried));
        let Some(r) = pick else {
            return Err(last.unwrap_or_else(|| {
                ProxyError::new(
                    ErrorKind::UpstreamUnavailable,
                    format!("upstream '{}' has no healthy replica", up.name),
                )
            }));
        };
        tried |= replica_bit(r);
        w.hub.acquire(u, r);
        let load = LoadGuard {
            hub: &w.hub,
            u,
            r,
            armed: true,
        };
        let opened = handshake(
            &w.pool,
            up,
            r,
            session.client_capabilities.get(),
            session.client_info.get(),
            w.hub.next_generation(),
        )
        .await;
        match opened {
            Ok(us) => {
                w.hub.replica_ok(u, r);
                break (us, load);
            }
            Err(e) => {
                let err = upstream_failure(w, u, r, &e);
                if up.replicas.len() > 1 {
                    tracing::warn!(error = %err, "opening an upstream session failed; trying the next replica");
                }
                last = Some(err);
            }
        }
    };
    let r = us.replica;
    let (level, subs) = {
        let st = session.state.lock();
        let subs: Vec<String> = st
            .subscriptions
            .iter()
            .filter(|(su, _)| *su == u)
            .map(|(_, uri)| uri.clone())
            .collect();
        (st.log_level.clone(), subs)
    };
    if let Some(level) = level.filter(|_| us.has_capability("logging")) {
        let mut body =
            br#"{"jsonrpc":"2.0","id":"mg-level","method":"logging/setLevel","params":{"level":"#
                .to_vec();
        mcp_wire::jsonrpc::push_json_str(&mut body, &level);
        body.extend_from_slice(b"}}");
        if let Err(e) = upstream::request(&w.pool, up, r, Some(&us), &body).await {
            tracing::warn!(upstream = %up.name, error = %e, "replaying the log level failed");
        }
    }
    for uri in subs {
        let mut body =
            br#"{"jsonrpc":"2.0","id":"mg-sub","method":"resources/subscribe","params":{"uri":"#
                .to_vec();
        mcp_wire::jsonrpc::push_json_str(&mut body, &uri);
        body.extend_from_slice(b"}}");
        if let Err(e) = upstream::request(&w.pool, up, r, Some(&us), &body).await {
            tracing::warn!(upstream = %up.name, %uri, error = %e, "replaying a subscription failed");
        }
    }
    {
        let mut st = session.state.lock();
        if let Some(old) = st.upstreams[u].replace(us.clone()) {
            // Not expected (openings are single-flight), but never leak a load count.
            w.hub.release(u, old.replica);
        }
        st.lists.invalidate_upstream(u);
    }
    load.armed = false;
    crate::persist::save(&w.hub, session);
    Ok(us)
}

/// Clears a session's "opening" mark for one upstream and wakes the requests waiting on it,
/// however the opening ends (recorded, failed, or its request dropped).
struct OpeningGuard<'a> {
    session: &'a Session,
    u: usize,
}

impl Drop for OpeningGuard<'_> {
    fn drop(&mut self) {
        self.session.state.lock().opening[self.u] = false;
        self.session.changed.notify_waiters();
    }
}

/// Deletes every upstream session of a client session (DELETE, expiry).
pub async fn close_upstreams(w: &Worker, session: &Session) {
    let ups: Vec<(usize, UpstreamSession)> = {
        let mut st = session.state.lock();
        st.upstreams
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.take().map(|s| (i, s)))
            .collect()
    };
    for (u, us) in ups {
        w.hub.release(u, us.replica);
        if w.hub.replica_up(u, us.replica) {
            upstream::delete(&w.pool, w.upstream(u), &us).await;
        }
    }
}

/// Background housekeeping on its own thread: health probes and session expiry.
pub fn spawn_housekeeping(hub: Arc<Hub>) -> std::io::Result<std::thread::JoinHandle<()>> {
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
            rt.block_on(housekeeping(hub));
        })
}

async fn housekeeping(hub: Arc<Hub>) {
    let w = std::rc::Rc::new(Worker::new(hub.clone(), 0));
    // Edge slots are not probed: a slot is up exactly while its tunnel is (see `edge`).
    for (u, up) in hub.snap.upstreams.iter().enumerate() {
        if up.edge_slot.is_some() {
            continue;
        }
        for r in 0..up.replicas.len() {
            let w = w.clone();
            monoio::spawn(async move { probe_loop(w, u, r).await });
        }
    }
    let mut last_refresh = std::time::Instant::now();
    let mut last_store_up = true;
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        for s in hub.sessions.expire(hub.snap.session_ttl) {
            tracing::info!(session = %s.id, "session expired (idle)");
            crate::persist::forget(&hub, &s.id);
            close_upstreams(&w, &s).await;
        }
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
            last_refresh = std::time::Instant::now();
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

/// Probes one replica of one upstream forever: a hub-owned session answered by `ping` each
/// interval; it is re-created when the replica forgets it. A passing probe brings an ejected
/// replica back; two failing in a row (or a refused connection) eject it.
async fn probe_loop(w: std::rc::Rc<Worker>, u: usize, r: usize) {
    let up = w.upstream(u).clone();
    let mut session: Option<UpstreamSession> = None;
    loop {
        let ok = probe_once(&w, &up, r, &mut session).await;
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
    if session.is_none() {
        let info = r#"{"name":"meshgate-health","version":"0.1.0"}"#;
        *session = Some(handshake(&w.pool, up, r, "{}", info, 0).await?);
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

/// Why an upstream list could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The exchange failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The answer was not a list.
    #[error(transparent)]
    List(#[from] crate::federation::ListError),
}

/// Fetches every page of one upstream list, from the replica of `us` (bounded to 1000 pages; a repeated cursor ends it).
///
/// # Errors
/// [`FetchError`] on the first failing page.
pub async fn fetch_list(
    pool: &Pool,
    up: &Upstream,
    us: &UpstreamSession,
    kind: crate::federation::ListKind,
) -> Result<Vec<crate::federation::Item>, FetchError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _page in 0..1000 {
        let mut body = br#"{"jsonrpc":"2.0","id":"mg-list","method":""#.to_vec();
        body.extend_from_slice(kind.method().as_bytes());
        body.extend_from_slice(b"\",\"params\":{");
        if let Some(c) = &cursor {
            body.extend_from_slice(b"\"cursor\":");
            mcp_wire::jsonrpc::push_json_str(&mut body, c);
        }
        body.extend_from_slice(b"}}");
        let (resp, _) = upstream::request(pool, up, us.replica, Some(us), &body).await?;
        let (page, next) = crate::federation::parse_page(kind, &resp)?;
        items.extend(page);
        match next {
            Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
            _ => break,
        }
    }
    Ok(items)
}
