//! Upstream sessions: the MCP session the hub holds on one replica of an upstream on behalf of
//! one client session. The `affinity` stage decides which replica and asks here to open one;
//! `forward` drops one whose replica was lost; DELETE and expiry close them all.
//!
//! Opening is single flight per (client session, upstream): while one request (on any worker)
//! runs the handshake, the others wait for it and share its result. A new upstream session gets
//! the client's log level and subscriptions replayed, and is recorded in the client session (and
//! in the shared store) with the replica it lives on.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{upstream_failure, Hub, Worker, UPSTREAM_REVISION};
use crate::config::snapshot::MAX_REPLICAS;
use crate::config::Upstream;
use crate::error::{ErrorKind, ProxyError};
use crate::session::{Session, UpstreamSession};
use crate::upstream::{self, Pool, UpstreamError};

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

/// Opens an upstream session with replica `r` for a client that declared
/// `capabilities`/`info`, in the era the upstream speaks: a legacy `initialize` handshake, or,
/// for a 2026-07-28 upstream, a `server/discover` (nothing to open: the result only tells the
/// capabilities; every request carries its own `_meta`). `prefer_modern` (a modern client)
/// tries `server/discover` first. What the upstream turned out to speak is cached in
/// [`Upstream::era`]; a refusal that says "not this era" falls back to the other one.
///
/// # Errors
/// [`UpstreamError`] when the upstream cannot be reached or speaks neither era.
pub async fn handshake(
    pool: &Pool,
    up: &Upstream,
    r: usize,
    capabilities: &str,
    client_info: &str,
    generation: u64,
) -> Result<UpstreamSession, UpstreamError> {
    open_in_era(pool, up, r, capabilities, client_info, generation, false).await
}

/// As [`handshake`], preferring the modern era when `prefer_modern`.
///
/// # Errors
/// As [`handshake`].
pub async fn open_in_era(
    pool: &Pool,
    up: &Upstream,
    r: usize,
    capabilities: &str,
    client_info: &str,
    generation: u64,
    prefer_modern: bool,
) -> Result<UpstreamSession, UpstreamError> {
    let try_modern_first = match (up.era.modern(), up.era.legacy()) {
        (Some(false), _) => false,
        (_, Some(false)) => true,
        (m, _) => prefer_modern && m != Some(false),
    };
    if try_modern_first {
        match discover(pool, up, r, capabilities, client_info, generation).await {
            Ok(us) => return Ok(us),
            Err(e) if up.era.legacy() == Some(false) => return Err(e),
            Err(e) if up.era.modern() != Some(false) => return Err(e),
            Err(_) => {}
        }
    }
    match initialize(pool, up, r, capabilities, client_info, generation).await {
        Ok(us) => {
            if up.era.set_legacy(true) {
                tracing::info!(upstream = %up.name, era = up.era.label(), "upstream speaks the legacy era (sessions)");
            }
            Ok(us)
        }
        Err(e) if refuses_legacy(&e) && up.era.modern() != Some(false) => {
            if up.era.set_legacy(false) {
                tracing::info!(upstream = %up.name, "upstream refuses initialize: it is a 2026-07-28 server");
            }
            discover(pool, up, r, capabilities, client_info, generation).await
        }
        Err(e) => Err(e),
    }
}

/// Whether an `initialize` failure says "I do not speak the legacy era" (a 2026-07-28-only
/// server answers `-32022` UnsupportedProtocolVersion, or 400/404/405 with a modern error).
fn refuses_legacy(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::Status(400 | 404 | 405, body) => {
            body.contains("-32022") || body.contains("-32601") || body.contains("-32020")
        }
        UpstreamError::Protocol(m) => m.contains("-32022"),
        _ => false,
    }
}

/// The `_meta` envelope a 2026-07-28 upstream needs on every request, for a client that
/// declared `capabilities`/`info` (raw JSON objects).
pub fn envelope(capabilities: &str, client_info: &str) -> String {
    format!(
        "{{\"io.modelcontextprotocol/protocolVersion\":\"{}\",\"io.modelcontextprotocol/clientCapabilities\":{capabilities},\"io.modelcontextprotocol/clientInfo\":{client_info}}}",
        mcp_wire::mcp::V2026_07_28
    )
}

/// The modern-era "handshake": `server/discover` with the client's envelope. A result naming
/// 2026-07-28 among `supportedVersions` makes this a modern upstream session (no id).
async fn discover(
    pool: &Pool,
    up: &Upstream,
    r: usize,
    capabilities: &str,
    client_info: &str,
    generation: u64,
) -> Result<UpstreamSession, UpstreamError> {
    use mcp_wire::mcp::V2026_07_28;
    let probe = UpstreamSession {
        sid: None,
        version: V2026_07_28.into(),
        capabilities: Arc::new(serde_json::Value::Object(Default::default())),
        generation,
        replica: r,
    };
    let body = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":\"mg-discover\",\"method\":\"server/discover\",\"params\":{{\"_meta\":{}}}}}",
        envelope(capabilities, client_info)
    );
    let outcome = upstream::request(pool, up, r, Some(&probe), body.as_bytes()).await;
    let resp = match outcome {
        Ok((resp, _)) => resp,
        Err(e @ (UpstreamError::Status(..) | UpstreamError::Protocol(_))) => {
            if up.era.set_modern(false) {
                tracing::debug!(upstream = %up.name, "upstream does not answer server/discover: not a 2026-07-28 server");
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    #[derive(Deserialize)]
    struct Discover<'a> {
        #[serde(borrow)]
        result: Option<DiscoverFields<'a>>,
    }
    #[derive(Deserialize)]
    struct DiscoverFields<'a> {
        #[serde(rename = "supportedVersions", default)]
        supported: Vec<String>,
        #[serde(borrow, default)]
        capabilities: Option<&'a RawValue>,
    }
    let parsed: Discover<'_> = serde_json::from_slice(&resp).unwrap_or(Discover { result: None });
    let Some(res) = parsed
        .result
        .filter(|r| r.supported.iter().any(|v| v == V2026_07_28))
    else {
        up.era.set_modern(false);
        return Err(UpstreamError::Protocol(
            "server/discover did not offer 2026-07-28".into(),
        ));
    };
    if up.era.set_modern(true) {
        tracing::info!(upstream = %up.name, "upstream speaks the 2026-07-28 era (stateless)");
    }
    let caps: serde_json::Value = res
        .capabilities
        .and_then(|c| serde_json::from_str(c.get()).ok())
        .unwrap_or(serde_json::Value::Object(Default::default()));
    Ok(UpstreamSession {
        capabilities: Arc::new(caps),
        ..probe
    })
}

/// The legacy handshake: `initialize`, then `notifications/initialized`.
async fn initialize(
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
    match upstream::post(pool, up, r, Some(&us), note, upstream::Resend::Safe).await? {
        upstream::Reply::Status(_) | upstream::Reply::Json { .. } => {}
        upstream::Reply::Stream { .. } => {}
    }
    Ok(us)
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

/// Opens a fresh upstream session for `session` on `u`, preferring replicas outside `avoid`
/// (bit `r` for replica `r`; the replica a session is being moved away from), replays the
/// client's log level and subscriptions on it, and records it. An avoided replica is still used
/// when it is the only healthy one (an upstream that forgot our session is re-initialized in
/// place). When a handshake fails, the next replica on the ring is tried (each replica once).
/// To replace a dead session, clear its slot first ([`drop_upstream_session`]).
///
/// # Errors
/// `UpstreamUnavailable` (naming the upstream) when it is down or no handshake succeeds;
/// `UpstreamTimeout` when another request's opening did not finish in time.
pub async fn open(
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
        let pick = crate::pipeline::affinity::pick_replica(&w.hub, u, key, avoid | tried)
            .or_else(|| crate::pipeline::affinity::pick_replica(&w.hub, u, key, tried));
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
        let opened = open_in_era(
            &w.pool,
            up,
            r,
            session.client_capabilities.get(),
            session.client_info.get(),
            w.hub.next_generation(),
            session.modern,
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
    if !us.is_modern() {
        replay_state(w, session, u, &us).await;
    }
    {
        let mut st = session.state.lock();
        if let Some(old) = st.upstreams[u].replace(us.clone()) {
            // Not expected (openings are single-flight), but never leak a load count.
            w.hub.release(u, old.replica);
        }
    }
    load.armed = false;
    crate::persist::save(&w.hub, session);
    Ok(us)
}

/// Replays what the client set up before this upstream session existed: its log level (when
/// the upstream offers logging) and its subscriptions to this upstream's resources.
async fn replay_state(w: &Worker, session: &Session, u: usize, us: &UpstreamSession) {
    let up = w.upstream(u);
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
        let body = set_level_body(&level);
        if let Err(e) = upstream::request(&w.pool, up, us.replica, Some(us), &body).await {
            tracing::warn!(upstream = %up.name, error = %e, "replaying the log level failed");
        }
    }
    for uri in subs {
        let mut body =
            br#"{"jsonrpc":"2.0","id":"mg-sub","method":"resources/subscribe","params":{"uri":"#
                .to_vec();
        mcp_wire::jsonrpc::push_json_str(&mut body, &uri);
        body.extend_from_slice(b"}}");
        if let Err(e) = upstream::request(&w.pool, up, us.replica, Some(us), &body).await {
            tracing::warn!(upstream = %up.name, %uri, error = %e, "replaying a subscription failed");
        }
    }
}

/// The hub's own `logging/setLevel` request for `level`.
pub fn set_level_body(level: &str) -> Vec<u8> {
    let mut body =
        br#"{"jsonrpc":"2.0","id":"mg-level","method":"logging/setLevel","params":{"level":"#
            .to_vec();
    mcp_wire::jsonrpc::push_json_str(&mut body, level);
    body.extend_from_slice(b"}}");
    body
}

/// Deletes every upstream session of a client session (DELETE, expiry).
pub async fn close_all(w: &Worker, session: &Session) {
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
