//! The hub's shared state and the per-worker context.
//!
//! [`Hub`] is everything the workers share: the config snapshot, the session table, upstream
//! health and the metrics. [`Worker`] is one worker thread's own context (its upstream pool and
//! counters), passed around as `Rc` inside that thread.
//!
//! This module also owns upstream sessions: [`ensure_upstream`] opens (lazily) the upstream
//! session that carries one client session's traffic to one upstream, replaying log level and
//! subscriptions; and the health prober that marks upstreams up and down.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{Snapshot, Upstream};
use crate::error::{ErrorKind, ProxyError};
use crate::federation::Naming;
use crate::metrics::{Metrics, WorkerMetrics};
use crate::session::{Session, SessionTable, UpstreamSession};
use crate::upstream::{self, Pool, UpstreamError};

/// The revision the hub asks upstreams for.
pub const UPSTREAM_REVISION: &str = mcp_wire::mcp::V2025_11_25;

/// Health of one upstream.
pub struct UpstreamHealth {
    up: AtomicBool,
    failures: AtomicU32,
}

/// Everything the workers share.
pub struct Hub {
    /// Validated config.
    pub snap: Arc<Snapshot>,
    /// Client sessions.
    pub sessions: SessionTable,
    /// Upstream health, by index.
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
}

impl Hub {
    /// Shared state for a snapshot. Configured upstreams start as up (the prober corrects it
    /// quickly, and a refused connection marks one down at once); edge slots start down.
    pub fn new(snap: Arc<Snapshot>) -> Arc<Self> {
        let n = snap.upstreams.len();
        Arc::new(Hub {
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
                    up: AtomicBool::new(u.edge_slot.is_none()),
                    failures: AtomicU32::new(0),
                })
                .collect(),
            health_epoch: AtomicU64::new(0),
            sessions: SessionTable::default(),
            generation: AtomicU64::new(1),
            bound: parking_lot::Mutex::new(None),
            snap,
        })
    }

    /// Whether upstream `u` is considered up.
    pub fn is_up(&self, u: usize) -> bool {
        self.health
            .get(u)
            .is_some_and(|h| h.up.load(Ordering::Acquire))
    }

    /// Bit mask of the upstreams that are up (bit `u` for upstream `u`).
    pub fn up_mask(&self) -> u64 {
        self.health
            .iter()
            .enumerate()
            .filter(|(_, h)| h.up.load(Ordering::Acquire))
            .fold(0, |m, (i, _)| m | (1u64 << i))
    }

    /// Marks an upstream up or down; a change bumps the health epoch and is logged.
    pub fn set_up(&self, u: usize, up: bool, why: &str) {
        let Some(h) = self.health.get(u) else { return };
        if up {
            h.failures.store(0, Ordering::Relaxed);
        }
        if h.up.swap(up, Ordering::AcqRel) != up {
            self.health_epoch.fetch_add(1, Ordering::AcqRel);
            let name = &self.snap.upstreams[u].name;
            if up {
                tracing::info!(upstream = %name, "upstream is up");
            } else {
                tracing::warn!(upstream = %name, reason = why, "upstream is down: its tools leave the lists until it answers again");
            }
        }
    }

    fn next_generation(&self) -> u64 {
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

/// Turns an upstream failure into the client-facing error naming the upstream, and feeds passive
/// health (a refused connection marks the upstream down at once).
pub fn upstream_failure(w: &Worker, u: usize, e: &UpstreamError) -> ProxyError {
    let up = w.upstream(u);
    if e.is_unreachable() {
        w.hub.set_up(u, false, &e.to_string());
    }
    let kind = match e {
        UpstreamError::Timeout(_) => ErrorKind::UpstreamTimeout,
        UpstreamError::SessionGone => ErrorKind::UpstreamSessionLost,
        UpstreamError::Connect(_) | UpstreamError::Io(_) | UpstreamError::Status(..) => {
            ErrorKind::UpstreamUnavailable
        }
        UpstreamError::Protocol(_) => ErrorKind::UpstreamProtocol,
    };
    ProxyError::new(kind, format!("upstream '{}' failed: {e}", up.name))
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

/// Runs the MCP handshake with an upstream for a client that declared `capabilities`/`info`.
///
/// # Errors
/// [`UpstreamError`] when the upstream cannot be reached or does not complete the handshake.
pub async fn handshake(
    pool: &Pool,
    up: &Upstream,
    capabilities: &str,
    client_info: &str,
    generation: u64,
) -> Result<UpstreamSession, UpstreamError> {
    let body = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":\"mg-init\",\"method\":\"initialize\",\"params\":{{\"protocolVersion\":\"{UPSTREAM_REVISION}\",\"capabilities\":{capabilities},\"clientInfo\":{client_info}}}}}"
    );
    let (resp, sid) = upstream::request(pool, up, None, body.as_bytes()).await?;
    let parsed: InitResult<'_> = serde_json::from_slice(&resp)
        .map_err(|e| UpstreamError::Protocol(format!("bad initialize result: {e}")))?;
    if let Some(e) = parsed.error {
        return Err(UpstreamError::Protocol(format!(
            "initialize refused: {}",
            e.get()
        )));
    }
    let r = parsed
        .result
        .ok_or_else(|| UpstreamError::Protocol("initialize without result".into()))?;
    let version = mcp_wire::mcp::legacy_revision(&r.protocol_version).ok_or_else(|| {
        UpstreamError::Protocol(format!(
            "upstream chose protocol version {:?}, which the hub does not speak",
            r.protocol_version
        ))
    })?;
    let caps: serde_json::Value = r
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
    };
    let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    match upstream::post(pool, up, Some(&us), note).await? {
        upstream::Reply::Status(_) | upstream::Reply::Json { .. } => {}
        upstream::Reply::Stream { .. } => {}
    }
    Ok(us)
}

/// The upstream session carrying `session`'s traffic to upstream `u`, opened on first use.
///
/// # Errors
/// `UpstreamUnavailable` (naming the upstream) when it is down or the handshake fails.
pub async fn ensure_upstream(
    w: &Worker,
    session: &Arc<Session>,
    u: usize,
) -> Result<UpstreamSession, ProxyError> {
    if let Some(us) = session.state.lock().upstreams.get(u).cloned().flatten() {
        return Ok(us);
    }
    open_upstream(w, session, u).await
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
    let us = handshake(
        &w.pool,
        up,
        session.client_capabilities.get(),
        session.client_info.get(),
        w.hub.next_generation(),
    )
    .await
    .map_err(|e| upstream_failure(w, u, &e))?;
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
        if let Err(e) = upstream::request(&w.pool, up, Some(&us), &body).await {
            tracing::warn!(upstream = %up.name, error = %e, "replaying the log level failed");
        }
    }
    for uri in subs {
        let mut body =
            br#"{"jsonrpc":"2.0","id":"mg-sub","method":"resources/subscribe","params":{"uri":"#
                .to_vec();
        mcp_wire::jsonrpc::push_json_str(&mut body, &uri);
        body.extend_from_slice(b"}}");
        if let Err(e) = upstream::request(&w.pool, up, Some(&us), &body).await {
            tracing::warn!(upstream = %up.name, %uri, error = %e, "replaying a subscription failed");
        }
    }
    {
        let mut st = session.state.lock();
        st.upstreams[u] = Some(us.clone());
        st.lists.invalidate_upstream(u);
    }
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
        upstream::delete(&w.pool, w.upstream(u), &us).await;
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
    for u in (0..hub.snap.upstreams.len()).filter(|u| hub.snap.upstreams[*u].edge_slot.is_none()) {
        let w = w.clone();
        monoio::spawn(async move { probe_loop(w, u).await });
    }
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        for s in hub.sessions.expire(hub.snap.session_ttl) {
            tracing::info!(session = %s.id, "session expired (idle)");
            close_upstreams(&w, &s).await;
        }
    }
}

/// Probes one upstream forever: a hub-owned session answered by `ping` each interval; it is
/// re-created when the upstream forgets it.
async fn probe_loop(w: std::rc::Rc<Worker>, u: usize) {
    let up = w.upstream(u).clone();
    let mut session: Option<UpstreamSession> = None;
    loop {
        let ok = probe_once(&w, &up, &mut session).await;
        match ok {
            Ok(()) => w.hub.set_up(u, true, "probe answered"),
            Err(e) => {
                session = None;
                let h = &w.hub.health[u];
                let n = h.failures.fetch_add(1, Ordering::Relaxed) + 1;
                // One failed probe may be a blip; two in a row (or a refused connection) is down.
                if n >= 2 || e.is_unreachable() {
                    w.hub.set_up(u, false, &e.to_string());
                }
            }
        }
        // While down, probe faster so the upstream comes back quickly.
        let wait = if w.hub.is_up(u) {
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
    session: &mut Option<UpstreamSession>,
) -> Result<(), UpstreamError> {
    if session.is_none() {
        let info = r#"{"name":"meshgate-health","version":"0.1.0"}"#;
        *session = Some(handshake(&w.pool, up, "{}", info, 0).await?);
    }
    let us = session.as_ref().ok_or(UpstreamError::SessionGone)?;
    let (resp, _) = upstream::request(
        &w.pool,
        up,
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

/// Fetches every page of one upstream list (bounded to 1000 pages; a repeated cursor ends it).
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
        let (resp, _) = upstream::request(pool, up, Some(us), &body).await?;
        let (page, next) = crate::federation::parse_page(kind, &resp)?;
        items.extend(page);
        match next {
            Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
            _ => break,
        }
    }
    Ok(items)
}
