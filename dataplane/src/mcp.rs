//! The MCP endpoint (legacy era, 2025-03-26 … 2025-11-25): POST, GET and DELETE on `/mcp`.
//!
//! One POST runs the request path top to bottom: media-type checks, [`mcp_wire::peek()`], the
//! session (created only by `initialize`), then either an answer the hub owns (`initialize`,
//! `ping`, merged lists, `logging/setLevel` fan-out) or a route to one upstream (`tools/call`,
//! `prompts/get`, `resources/*`, `completion/complete`) whose answer is forwarded as JSON or as a
//! relayed SSE stream (each upstream session sits on one replica of its upstream; when that replica
//! is lost under a call, `forward` moves the session to the next replica and fails the call
//! clearly, or retries it once when it may safely run twice). The hub rewrites only what must change: the exposed tool/prompt name on
//! the way in, and the ids of server→client requests (hub-minted, mapped back when the client
//! answers). Every SSE event the client sees carries a hub-minted id and is kept in a bounded
//! replay buffer, so a GET with `Last-Event-ID` resumes exactly that stream.
//!
//! GET opens the standalone stream: it merges the GET streams of the session's upstream
//! sessions, and announces `list_changed` when an upstream goes down or comes back.
//! DELETE ends the session here and on every upstream.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h1::{Method, Request, ServerConn};
use mcp_wire::jsonrpc::{error_object, result_object};
use mcp_wire::mcp::{self as mcpv, method};
use mcp_wire::{Kind, Peeked};
use monoio::net::TcpStream;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::error::{ErrorKind, ProxyError};
use crate::federation::{self, ListKind, Merged, UpstreamList};
use crate::hub::{
    ensure_upstream, failure_kind, open_upstream_avoiding, replica_bit, upstream_failure,
    upstream_label, Worker,
};
use crate::metrics;
use crate::session::{parse_event_id, PendingRequest, ReplayStream, Session, UpstreamSession};
use crate::upstream::{self, ReaderMsg, Reply, UpstreamError};

/// The hub's own version, reported as `serverInfo.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

type Conn = ServerConn<TcpStream>;

const JSON: (&str, &[u8]) = ("Content-Type", b"application/json");
const SSE_HEADERS: [(&str, &[u8]); 3] = [
    ("Content-Type", b"text/event-stream"),
    ("Cache-Control", b"no-cache"),
    ("X-Accel-Buffering", b"no"),
];

/// How a handled message is answered.
enum Outcome {
    /// A complete JSON-RPC message.
    Json(Bytes),
    /// 202, no body.
    Accepted,
    /// An upstream SSE stream to relay.
    Stream(StreamSource),
}

/// An upstream SSE answer to relay to the client.
struct StreamSource {
    upstream: usize,
    /// The replica the stream comes from (its connection returns to that replica's pool).
    replica: usize,
    conn: h1::ClientConn,
    client_id: Box<str>,
}

/// Handles one request on the MCP endpoint; returns whether the connection may be kept alive.
pub async fn handle(w: &Rc<Worker>, conn: &mut Conn, req: Request, bound_loopback: bool) -> bool {
    if let Err(e) = crate::admit::check_origin_and_host(&w.hub.snap, bound_loopback, &req.head) {
        return reply_error(conn, &e, req.head.keep_alive).await;
    }
    if let Some(keep) = route_to_owner(w, conn, &req).await {
        return keep;
    }
    match req.head.method {
        Method::Post => post(w, conn, req).await,
        Method::Get => get(w, conn, &req).await,
        Method::Delete => delete(w, conn, &req).await,
        _ => {
            let e = ProxyError::new(ErrorKind::MethodNotAllowed, "use POST, GET or DELETE");
            reply_error(conn, &e, req.head.keep_alive).await
        }
    }
}

/// Hub replicas (DESIGN.md §6): a request for a session this replica does not hold goes to
/// the session's owner in one hop (`Some(keep)`: answered there); when this replica is the
/// owner, or the request was already forwarded once (loop guard), the session is taken over
/// from the shared store and the request continues here (`None`; no record → 404 as usual).
async fn route_to_owner(w: &Rc<Worker>, conn: &mut Conn, req: &Request) -> Option<bool> {
    let cluster = w.hub.cluster.as_ref()?;
    let sid = req.head.headers.get_str("mcp-session-id")?;
    if w.hub.sessions.get(sid).is_some() {
        return None;
    }
    if req.head.headers.get(crate::cluster::FORWARDED_BY).is_none() {
        // At most one try per other replica: each failure marks that replica down.
        for _ in 0..cluster.members().len() {
            let crate::cluster::Route::Peer { name, addr } = cluster.route(sid) else {
                break;
            };
            match crate::cluster::forward(cluster, conn, req, &name, addr).await {
                Ok(keep) => {
                    w.metrics
                        .forwarded
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Some(keep);
                }
                Err(e) => {
                    tracing::warn!(session = %sid, error = %e, "forwarding to the session's owner failed");
                    cluster.mark_down(&name);
                    if e.sent {
                        // It may have run there: fail it clearly instead of running it twice.
                        // The session itself moves on with the next request.
                        let err = ProxyError::new(
                            ErrorKind::UpstreamUnavailable,
                            format!("the hub replica owning this session ({name}) failed while handling this request (it may or may not have run); the session continues on another replica: retry"),
                        );
                        return Some(reply_error(conn, &err, req.head.keep_alive).await);
                    }
                }
            }
        }
    }
    crate::persist::take_over(&w.hub, sid).await;
    None
}

/// Writes an error reply; returns whether the connection may be kept alive.
async fn reply_error(conn: &mut Conn, e: &ProxyError, keep_alive: bool) -> bool {
    if e.status() >= 400 {
        tracing::debug!(status = e.status(), error = %e, "request refused");
    } else {
        tracing::info!(error = %e, "request failed");
    }
    let res = match (e.body(), e.kind == ErrorKind::MethodNotAllowed) {
        (_, true) => {
            conn.write_empty(405, &[("Allow", b"GET, POST, DELETE")], keep_alive)
                .await
        }
        (Some(body), false) => {
            conn.write_full(e.status(), &[JSON], &body, keep_alive)
                .await
        }
        (None, false) => {
            let text = format!("{}\n", e.message);
            conn.write_full(
                e.status(),
                &[("Content-Type", b"text/plain")],
                text.as_bytes(),
                keep_alive,
            )
            .await
        }
    };
    res.is_ok() && keep_alive
}

fn session_of(w: &Worker, req: &Request) -> Result<Arc<Session>, ProxyError> {
    let sid = req.head.headers.get_str("mcp-session-id").ok_or_else(|| {
        ProxyError::new(
            ErrorKind::MissingSession,
            "missing Mcp-Session-Id header: send initialize first",
        )
    })?;
    w.hub.sessions.get(sid).ok_or_else(|| {
        ProxyError::new(
            ErrorKind::UnknownSession,
            "unknown or expired session: initialize again",
        )
    })
}

fn check_version_header(req: &Request) -> Result<(), ProxyError> {
    if let Some(v) = req.head.headers.get_str("mcp-protocol-version") {
        if mcpv::legacy_revision(v).is_none() {
            return Err(ProxyError::new(
                ErrorKind::UnsupportedVersion,
                format!(
                    "unsupported MCP-Protocol-Version {v:?}; supported: {}",
                    mcpv::LEGACY_REVISIONS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

// === POST ===

async fn post(w: &Rc<Worker>, conn: &mut Conn, req: Request) -> bool {
    let started = Instant::now();
    let keep = req.head.keep_alive;
    let accept = req.head.headers.get_str("accept").unwrap_or("");
    if !crate::admit::accepts(accept, "application/json")
        || !crate::admit::accepts(accept, "text/event-stream")
    {
        let e = ProxyError::new(
            ErrorKind::NotAcceptable,
            "Accept must list application/json and text/event-stream",
        );
        return reply_error(conn, &e, keep).await;
    }
    let ct = req.head.headers.get_str("content-type").unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/json") {
        let e = ProxyError::new(
            ErrorKind::UnsupportedMediaType,
            format!("Content-Type must be application/json, not {ct:?}"),
        );
        return reply_error(conn, &e, keep).await;
    }
    if let Err(e) = check_version_header(&req) {
        return reply_error(conn, &e, keep).await;
    }
    let body = req.body.clone();
    if mcp_wire::peek::is_batch(&body) {
        return batch(w, conn, &req, keep).await;
    }
    let p = match mcp_wire::peek(&body) {
        Ok(p) => p,
        Err(e) => {
            let kind = if e.code() == mcp_wire::jsonrpc::code::PARSE_ERROR {
                ErrorKind::Parse
            } else {
                ErrorKind::InvalidRequest
            };
            return reply_error(conn, &ProxyError::new(kind, e.to_string()), keep).await;
        }
    };
    let mi = metrics::method_index(match p.kind {
        Kind::Request => p.method.as_deref().unwrap_or("other"),
        Kind::Notification => "notification",
        Kind::Response => "response",
    });
    if p.kind == Kind::Request && p.method.as_deref() == Some(method::INITIALIZE) {
        let r = initialize(w, &p);
        return match r {
            Ok((sid, json)) => {
                w.metrics.record(mi, None, 0, started.elapsed());
                let headers = [JSON, ("Mcp-Session-Id", sid.as_bytes())];
                conn.write_full(200, &headers, &json, keep).await.is_ok() && keep
            }
            Err(e) => {
                let e = e.with_id(p.id);
                w.metrics.record(
                    mi,
                    None,
                    metrics::outcome_index(e.label()),
                    started.elapsed(),
                );
                reply_error(conn, &e, keep).await
            }
        };
    }
    let session = match session_of(w, &req) {
        Ok(s) => s,
        Err(e) => return reply_error(conn, &e.with_id(p.id), keep).await,
    };
    let (upstream, outcome) = dispatch(w, &session, &p, &body).await;
    let label = match &outcome {
        Ok(_) => 0,
        Err(e) => metrics::outcome_index(e.label()),
    };
    let keep = match outcome {
        Ok(Outcome::Json(json)) => conn.write_full(200, &[JSON], &json, keep).await.is_ok() && keep,
        Ok(Outcome::Accepted) => conn.write_empty(202, &[], keep).await.is_ok() && keep,
        Ok(Outcome::Stream(src)) => relay_post_stream(w, conn, &session, src).await && keep,
        Err(e) => reply_error(conn, &e.with_id(p.id), keep).await,
    };
    w.metrics.record(mi, upstream, label, started.elapsed());
    keep
}

/// A 2025-03-26 batch: every element handled in order, requests answered together as a JSON
/// array (streamed answers are collected to their final response).
async fn batch(w: &Rc<Worker>, conn: &mut Conn, req: &Request, keep: bool) -> bool {
    let session = match session_of(w, req) {
        Ok(s) => s,
        Err(e) if e.kind == ErrorKind::MissingSession => {
            let e = ProxyError::new(
                ErrorKind::InvalidRequest,
                "a batch cannot open a session: send initialize alone",
            );
            return reply_error(conn, &e, keep).await;
        }
        Err(e) => return reply_error(conn, &e, keep).await,
    };
    if !mcpv::allows_batch(session.version) {
        let e = ProxyError::new(
            ErrorKind::InvalidRequest,
            format!(
                "JSON-RPC batches are not allowed in protocol version {}",
                session.version
            ),
        );
        return reply_error(conn, &e, keep).await;
    }
    // Each element is peeked within its own slice of the body (zero-copy), so every span the
    // peek reports is relative to the bytes that get forwarded.
    let elements: Vec<Bytes> = match serde_json::from_slice::<Vec<&RawValue>>(&req.body) {
        Ok(v) if !v.is_empty() => v
            .iter()
            .map(|r| req.body.slice_ref(r.get().as_bytes()))
            .collect(),
        Ok(_) => {
            let e = ProxyError::new(ErrorKind::InvalidRequest, "empty batch");
            return reply_error(conn, &e, keep).await;
        }
        Err(e) => {
            let kind = if e.is_data() {
                ErrorKind::InvalidRequest
            } else {
                ErrorKind::Parse
            };
            return reply_error(
                conn,
                &ProxyError::new(kind, format!("bad batch: {e}")),
                keep,
            )
            .await;
        }
    };
    let mut answers: Vec<Bytes> = Vec::new();
    for raw in &elements {
        let p = match mcp_wire::peek(raw) {
            Ok(p) => p,
            Err(e) => {
                let kind = if e.code() == mcp_wire::jsonrpc::code::PARSE_ERROR {
                    ErrorKind::Parse
                } else {
                    ErrorKind::InvalidRequest
                };
                answers.extend(ProxyError::new(kind, e.to_string()).body().map(Bytes::from));
                continue;
            }
        };
        if p.method.as_deref() == Some(method::INITIALIZE) {
            let e = ProxyError::new(
                ErrorKind::InvalidRequest,
                "initialize must not be inside a batch",
            )
            .with_id(p.id);
            answers.extend(e.body().map(Bytes::from));
            continue;
        }
        let (_, outcome) = dispatch(w, &session, &p, raw).await;
        match outcome {
            Ok(Outcome::Json(j)) => answers.push(j),
            Ok(Outcome::Accepted) => {}
            Ok(Outcome::Stream(src)) => answers.push(collect_stream(w, &session, src).await),
            Err(e) => answers.extend(e.with_id(p.id).body().map(Bytes::from)),
        }
    }
    if answers.is_empty() {
        return conn.write_empty(202, &[], keep).await.is_ok() && keep;
    }
    let mut out =
        Vec::with_capacity(answers.iter().map(Bytes::len).sum::<usize>() + answers.len() + 2);
    out.push(b'[');
    for (i, a) in answers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(a);
    }
    out.push(b']');
    conn.write_full(200, &[JSON], &out, keep).await.is_ok() && keep
}

#[derive(Deserialize)]
struct InitParams<'a> {
    #[serde(rename = "protocolVersion")]
    protocol_version: Option<String>,
    #[serde(borrow)]
    capabilities: Option<&'a RawValue>,
    #[serde(borrow, rename = "clientInfo")]
    client_info: Option<&'a RawValue>,
}

/// `initialize`: the hub answers it itself and opens a session; upstream sessions follow lazily.
fn initialize(w: &Worker, p: &Peeked<'_>) -> Result<(Arc<str>, Bytes), ProxyError> {
    let id = p.id.unwrap_or("null");
    let params: InitParams<'_> = serde_json::from_str(p.params.unwrap_or("{}")).map_err(|e| {
        ProxyError::new(
            ErrorKind::InvalidParams,
            format!("bad initialize params: {e}"),
        )
    })?;
    let requested = params.protocol_version.as_deref().ok_or_else(|| {
        ProxyError::new(
            ErrorKind::InvalidParams,
            "initialize needs params.protocolVersion",
        )
    })?;
    // Echo the client's revision when served; otherwise offer the newest (the client decides).
    let version = mcpv::legacy_revision(requested).unwrap_or(mcpv::V2025_11_25);
    let caps = params
        .capabilities
        .filter(|c| c.get().starts_with('{'))
        .map(|c| c.to_owned())
        .unwrap_or_else(|| RawValue::from_string("{}".into()).expect("{} is JSON"));
    let info = params
        .client_info
        .filter(|c| c.get().starts_with('{'))
        .map(|c| c.to_owned())
        .unwrap_or_else(|| {
            RawValue::from_string(r#"{"name":"unknown","version":"0"}"#.into())
                .expect("literal is JSON")
        });
    // One of several replicas mints only ids it owns, so `initialize` needs no hop.
    let sid = match &w.hub.cluster {
        Some(c) => c.mint(),
        None => crate::session::mint_session_id(),
    };
    let session = Session::with_id(sid, version, caps, info, w.hub.snap.upstreams.len());
    w.hub.sessions.insert(session.clone());
    crate::persist::save(&w.hub, &session);
    let names: Vec<&str> = w
        .hub
        .snap
        .upstreams
        .iter()
        .filter(|u| u.name.is_bound())
        .map(|u| &*u.name)
        .collect();
    let naming = match &w.hub.snap.separator {
        Some(sep) => format!("Tool and prompt names are <server>{sep}<name>."),
        None => "Tool and prompt names are the servers' own.".to_string(),
    };
    let mut instructions = format!(
        "meshgate federates these MCP servers: {}. {naming}",
        names.join(", ")
    );
    if names.is_empty() {
        instructions = "meshgate has no upstream MCP servers configured.".into();
    }
    let mut result = Vec::with_capacity(512);
    result.extend_from_slice(b"{\"protocolVersion\":\"");
    result.extend_from_slice(version.as_bytes());
    result.extend_from_slice(br#"","capabilities":{"logging":{},"completions":{},"prompts":{"listChanged":true},"resources":{"subscribe":true,"listChanged":true},"tools":{"listChanged":true}},"serverInfo":{"name":"meshgate","version":""#);
    result.extend_from_slice(VERSION.as_bytes());
    result.extend_from_slice(b"\"},\"instructions\":");
    mcp_wire::jsonrpc::push_json_str(&mut result, &instructions);
    result.push(b'}');
    tracing::debug!(session = %session.id, version, "session opened");
    Ok((session.id.clone(), Bytes::from(result_object(id, &result))))
}

/// Routes one message of an existing session. Returns the upstream it went to (for metrics).
async fn dispatch(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    p: &Peeked<'_>,
    body: &Bytes,
) -> (Option<usize>, Result<Outcome, ProxyError>) {
    match p.kind {
        Kind::Response => (None, route_response(w, session, p, body).await),
        Kind::Notification => (None, notification(w, session, p, body).await),
        Kind::Request => request(w, session, p, body).await,
    }
}

async fn request(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    p: &Peeked<'_>,
    body: &Bytes,
) -> (Option<usize>, Result<Outcome, ProxyError>) {
    let id = p.id.unwrap_or("null");
    let m = p.method.as_deref().unwrap_or("");
    if m == method::PING {
        return (
            None,
            Ok(Outcome::Json(Bytes::from(result_object(id, b"{}")))),
        );
    }
    if let Some(kind) = ListKind::from_method(m) {
        return (
            None,
            list_page(w, session, kind, p).await.map(Outcome::Json),
        );
    }
    match m {
        method::TOOLS_CALL | method::PROMPTS_GET => {
            let kind = if m == method::TOOLS_CALL {
                ListKind::Tools
            } else {
                ListKind::Prompts
            };
            let what = if m == method::TOOLS_CALL {
                "tool"
            } else {
                "prompt"
            };
            let Some(name) = &p.name else {
                return (
                    None,
                    Err(ProxyError::new(
                        ErrorKind::InvalidParams,
                        format!("params.name (the {what}) is required"),
                    )),
                );
            };
            match resolve_name(w, session, kind, &name.value).await {
                Ok((u, original)) => {
                    let fwd = rewrite(body, name.span.clone(), &name.value, &original);
                    let tool = (kind == ListKind::Tools).then_some(original.as_str());
                    (Some(u), forward(w, session, u, fwd, id, tool).await)
                }
                Err(e) => (None, Err(e)),
            }
        }
        method::RESOURCES_READ | method::RESOURCES_SUBSCRIBE | method::RESOURCES_UNSUBSCRIBE => {
            let Some(uri) = p.uri.as_deref() else {
                return (
                    None,
                    Err(ProxyError::new(
                        ErrorKind::InvalidParams,
                        "params.uri is required",
                    )),
                );
            };
            let u = match resolve_uri(w, session, uri).await {
                Ok(u) => u,
                Err(e) => return (None, Err(e)),
            };
            let out = forward(w, session, u, body.clone(), id, None).await;
            if out.is_ok() {
                let mut st = session.state.lock();
                if m == method::RESOURCES_SUBSCRIBE {
                    if !st.subscriptions.iter().any(|(su, s)| *su == u && s == uri) {
                        st.subscriptions.push((u, uri.to_string()));
                    }
                } else if m == method::RESOURCES_UNSUBSCRIBE {
                    st.subscriptions.retain(|(su, s)| !(*su == u && s == uri));
                }
                drop(st);
                crate::persist::save(&w.hub, session);
            }
            (Some(u), out)
        }
        method::COMPLETION_COMPLETE => {
            if let Some(name) = &p.ref_name {
                match resolve_name(w, session, ListKind::Prompts, &name.value).await {
                    Ok((u, original)) => {
                        let fwd = rewrite(body, name.span.clone(), &name.value, &original);
                        (Some(u), forward(w, session, u, fwd, id, None).await)
                    }
                    Err(e) => (None, Err(e)),
                }
            } else if let Some(uri) = p.ref_uri.as_deref() {
                match resolve_template(w, session, uri).await {
                    Ok(u) => (
                        Some(u),
                        forward(w, session, u, body.clone(), id, None).await,
                    ),
                    Err(e) => (None, Err(e)),
                }
            } else {
                (
                    None,
                    Err(ProxyError::new(
                        ErrorKind::InvalidParams,
                        "params.ref needs a prompt name or a resource template uri",
                    )),
                )
            }
        }
        method::LOGGING_SET_LEVEL => (None, set_level(w, session, p).await),
        other => (
            None,
            Err(ProxyError::new(
                ErrorKind::MethodNotFound,
                format!("method {other:?} is not served by meshgate"),
            )),
        ),
    }
}

/// The body to forward with the exposed name replaced by the upstream's own (no copy when equal).
fn rewrite(body: &Bytes, span: std::ops::Range<usize>, exposed: &str, original: &str) -> Bytes {
    if exposed == original {
        body.clone()
    } else {
        Bytes::from(mcp_wire::peek::splice_str(body, span, original))
    }
}

/// Sends a client request to upstream `u` within the client's session there (on the replica
/// recorded in it). When that replica is lost under the call (refused, timed out, broken, or it
/// answers 404 for the session), the session moves to the next replica on the ring (handshake
/// replayed) and the call fails with an error naming both replicas, unless it may run twice:
/// it never reached the replica (the connection was refused), or it is a `tools/call` of a tool
/// annotated `readOnlyHint`/`idempotentHint` (`tool` = its original name). Those are retried
/// once, transparently, on the new replica.
async fn forward(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    u: usize,
    body: Bytes,
    client_id: &str,
    tool: Option<&str>,
) -> Result<Outcome, ProxyError> {
    let us = ensure_upstream(w, session, u).await?;
    session.state.lock().inflight.insert(client_id.into(), u);
    let out = match send_once(w, u, &us, &body, client_id).await {
        Sent::Done(out) => out,
        Sent::Lost(e) => failover(w, session, u, &us, &body, client_id, tool, e).await,
    };
    if !matches!(out, Ok(Outcome::Stream(_))) {
        session.state.lock().inflight.remove(client_id);
    }
    out
}

/// What one attempt of [`forward`] came to.
enum Sent {
    /// An answer (or a failure that is not the replica's).
    Done(Result<Outcome, ProxyError>),
    /// The replica of the upstream session was lost.
    Lost(UpstreamError),
}

async fn send_once(
    w: &Rc<Worker>,
    u: usize,
    us: &UpstreamSession,
    body: &Bytes,
    client_id: &str,
) -> Sent {
    let r = us.replica;
    let out = match upstream::post(&w.pool, w.upstream(u), r, Some(us), body).await {
        Ok(Reply::Json { body, .. }) => Ok(Outcome::Json(body)),
        Ok(Reply::Stream { conn, .. }) => Ok(Outcome::Stream(StreamSource {
            upstream: u,
            replica: r,
            conn,
            client_id: client_id.into(),
        })),
        Ok(Reply::Status(s)) => Err(ProxyError::new(
            ErrorKind::UpstreamProtocol,
            format!(
                "{} answered a request with HTTP {s} and no response",
                upstream_label(w.upstream(u), r)
            ),
        )),
        Err(e) if e.is_replica_failure() || matches!(e, UpstreamError::SessionGone) => {
            return Sent::Lost(e)
        }
        Err(e) => Err(upstream_failure(w, u, r, &e)),
    };
    if out.is_ok() {
        w.hub.replica_ok(u, r);
    }
    Sent::Done(out)
}

/// The replica of `lost` failed with `e` under a call: feeds passive health, moves the session
/// to the next replica, and retries the call there when that is safe (see [`forward`]).
#[allow(clippy::too_many_arguments)]
async fn failover(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    u: usize,
    lost: &UpstreamSession,
    body: &Bytes,
    client_id: &str,
    tool: Option<&str>,
    e: UpstreamError,
) -> Result<Outcome, ProxyError> {
    let up = w.upstream(u);
    let gone = matches!(e, UpstreamError::SessionGone);
    let from = up
        .replicas
        .get(lost.replica)
        .map_or_else(|| up.url.clone(), |r| r.url.clone());
    if gone {
        tracing::warn!(upstream = %up.name, replica = %from, session = %session.id, "upstream lost our session");
    } else {
        w.hub.replica_failed(u, lost.replica, &e);
        w.pool.clear(u, lost.replica);
        tracing::warn!(upstream = %up.name, replica = %from, session = %session.id, error = %e, "replica failed under a call; moving the session");
    }
    // Whether the call may run twice, from the tools list cached before the session moves (the
    // move drops it); looked up on the new replica when it was not cached.
    let cached = tool.and_then(|t| {
        session
            .state
            .lock()
            .lists
            .get(u, ListKind::Tools)
            .map(|l| l.retry_safe(t))
    });
    crate::hub::drop_upstream_session(&w.hub, session, u, lost.generation);
    let moved = open_upstream_avoiding(w, session, u, replica_bit(lost.replica)).await;
    let what = if gone {
        format!("upstream '{}' replica {from} lost its session", up.name)
    } else {
        format!("upstream '{}' replica {from} failed: {e}", up.name)
    };
    let new = match moved {
        Ok(new) => new,
        Err(e2) => {
            return Err(ProxyError::new(
                failure_kind(&e),
                format!(
                    "{what}; the call was not completed and no replica could take the session: {}",
                    e2.message
                ),
            ))
        }
    };
    let to = up
        .replicas
        .get(new.replica)
        .map_or_else(|| up.url.clone(), |r| r.url.clone());
    let safe = if e.is_unreachable() {
        true
    } else if let Some(t) = tool {
        match cached {
            Some(safe) => safe,
            None => upstream_list(w, session, u, ListKind::Tools)
                .await
                .ok()
                .flatten()
                .is_some_and(|l| l.retry_safe(t)),
        }
    } else {
        false
    };
    if !safe {
        return Err(ProxyError::new(
            failure_kind(&e),
            format!("{what}; the call was not completed (it may or may not have run); the session moved to replica {to}; retry"),
        ));
    }
    tracing::info!(upstream = %up.name, from = %from, to = %to, "call retried on the session's new replica");
    match send_once(w, u, &new, body, client_id).await {
        Sent::Done(out) => out,
        Sent::Lost(e2) => {
            let err = upstream_failure(w, u, new.replica, &e2);
            crate::hub::drop_upstream_session(&w.hub, session, u, new.generation);
            Err(ProxyError::new(
                err.kind,
                format!("{what}; retried on replica {to}, which failed too: {e2}"),
            ))
        }
    }
}

async fn set_level(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    p: &Peeked<'_>,
) -> Result<Outcome, ProxyError> {
    #[derive(Deserialize)]
    struct P {
        level: String,
    }
    const LEVELS: [&str; 8] = [
        "debug",
        "info",
        "notice",
        "warning",
        "error",
        "critical",
        "alert",
        "emergency",
    ];
    let level = serde_json::from_str::<P>(p.params.unwrap_or("{}"))
        .ok()
        .map(|p| p.level)
        .filter(|l| LEVELS.contains(&l.as_str()))
        .ok_or_else(|| {
            ProxyError::new(
                ErrorKind::InvalidParams,
                format!("params.level must be one of {}", LEVELS.join(", ")),
            )
        })?;
    session.state.lock().log_level = Some(level.clone());
    crate::persist::save(&w.hub, session);
    let mut body =
        br#"{"jsonrpc":"2.0","id":"mg-level","method":"logging/setLevel","params":{"level":"#
            .to_vec();
    mcp_wire::jsonrpc::push_json_str(&mut body, &level);
    body.extend_from_slice(b"}}");
    for u in 0..w.hub.snap.upstreams.len() {
        if !w.hub.is_up(u) {
            continue;
        }
        // Opening the upstream session replays the level already; only existing ones need it.
        let existing = session.state.lock().upstreams[u].clone();
        let us = match existing {
            Some(us) => us,
            None => {
                if let Err(e) = ensure_upstream(w, session, u).await {
                    tracing::warn!(error = %e, "log level not applied to an upstream");
                }
                continue;
            }
        };
        if !us.has_capability("logging") {
            continue;
        }
        if let Err(e) =
            upstream::request(&w.pool, w.upstream(u), us.replica, Some(&us), &body).await
        {
            tracing::warn!(upstream = %w.upstream(u).name, error = %e, "logging/setLevel fan-out failed");
        }
    }
    Ok(Outcome::Json(Bytes::from(result_object(
        p.id.unwrap_or("null"),
        b"{}",
    ))))
}

async fn notification(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    p: &Peeked<'_>,
    body: &Bytes,
) -> Result<Outcome, ProxyError> {
    let m = p.method.as_deref().unwrap_or("");
    let targets: Vec<usize> = match m {
        method::CANCELLED => {
            let st = session.state.lock();
            p.request_id
                .and_then(|rid| st.inflight.get(rid).copied())
                .into_iter()
                .collect()
        }
        method::ROOTS_LIST_CHANGED => {
            let st = session.state.lock();
            st.upstreams
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_some())
                .map(|(i, _)| i)
                .collect()
        }
        _ => Vec::new(),
    };
    for u in targets {
        let us = session.state.lock().upstreams[u].clone();
        if let Some(us) = us {
            if let Err(e) =
                upstream::post(&w.pool, w.upstream(u), us.replica, Some(&us), body).await
            {
                tracing::warn!(upstream = %w.upstream(u).name, method = m, error = %e, "relaying a notification failed");
            }
        }
    }
    Ok(Outcome::Accepted)
}

/// The client's answer to a server→client request: back to the upstream that asked, under its
/// original id.
async fn route_response(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    p: &Peeked<'_>,
    body: &Bytes,
) -> Result<Outcome, ProxyError> {
    let id = p.id.unwrap_or("null");
    let pending = session.state.lock().pending.remove(id);
    let Some(pending) = pending else {
        return Err(ProxyError::new(
            ErrorKind::UnknownResponseId,
            format!("no pending server request has id {id}"),
        ));
    };
    let us = session.state.lock().upstreams[pending.upstream].clone();
    let Some(us) = us.filter(|us| us.generation == pending.generation) else {
        tracing::warn!(upstream = %w.upstream(pending.upstream).name, "answer for an upstream session that is gone; dropped");
        return Ok(Outcome::Accepted);
    };
    let span = id_span(body, id);
    let mut fwd = Vec::with_capacity(body.len() + pending.original_id.len());
    fwd.extend_from_slice(&body[..span.start]);
    fwd.extend_from_slice(pending.original_id.as_bytes());
    fwd.extend_from_slice(&body[span.end..]);
    let up = w.upstream(pending.upstream);
    if let Err(e) = upstream::post(&w.pool, up, us.replica, Some(&us), &fwd).await {
        tracing::warn!(upstream = %w.upstream(pending.upstream).name, error = %e, "delivering the client's answer failed");
    }
    Ok(Outcome::Accepted)
}

/// Byte range of a borrowed `&str` (a peeked raw id) inside `body`.
fn id_span(body: &[u8], raw: &str) -> std::ops::Range<usize> {
    let start = (raw.as_ptr() as usize).saturating_sub(body.as_ptr() as usize);
    if start + raw.len() <= body.len() {
        start..start + raw.len()
    } else {
        0..0
    }
}

// === routing ===

/// Loads (or reuses) one upstream's full list of `kind` for this session.
async fn upstream_list(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    u: usize,
    kind: ListKind,
) -> Result<Option<Arc<UpstreamList>>, ProxyError> {
    if let Some(l) = session.state.lock().lists.get(u, kind) {
        return Ok(Some(l));
    }
    let us = ensure_upstream(w, session, u).await?;
    if !us.has_capability(kind.capability()) {
        let empty = Arc::new(UpstreamList::default());
        session.state.lock().lists.put(u, kind, empty.clone());
        return Ok(Some(empty));
    }
    let items = match crate::hub::fetch_list(&w.pool, w.upstream(u), &us, kind).await {
        Ok(items) => items,
        Err(crate::hub::FetchError::Upstream(UpstreamError::SessionGone)) => {
            crate::hub::drop_upstream_session(&w.hub, session, u, us.generation);
            return Err(ProxyError::new(
                ErrorKind::UpstreamSessionLost,
                format!(
                    "upstream '{}' lost its session while listing",
                    w.upstream(u).name
                ),
            ));
        }
        Err(crate::hub::FetchError::Upstream(e)) => {
            return Err(upstream_failure(w, u, us.replica, &e))
        }
        Err(crate::hub::FetchError::List(e)) => {
            return Err(ProxyError::new(
                ErrorKind::UpstreamProtocol,
                format!("upstream '{}': {e}", w.upstream(u).name),
            ))
        }
    };
    let list = Arc::new(UpstreamList { items });
    session.state.lock().lists.put(u, kind, list.clone());
    Ok(Some(list))
}

/// The merged list of `kind` over the upstreams that are up. An upstream failing to list is
/// skipped (logged), so one bad upstream never empties the whole list.
async fn merged(w: &Rc<Worker>, session: &Arc<Session>, kind: ListKind) -> Arc<Merged> {
    let mask = w.hub.up_mask();
    if let Some(m) = session.state.lock().lists.merged(kind, mask) {
        return m;
    }
    let n = w.hub.snap.upstreams.len();
    let mut lists = Vec::with_capacity(n);
    for u in 0..n {
        if mask & (1 << u) == 0 {
            lists.push(None);
            continue;
        }
        match upstream_list(w, session, u, kind).await {
            Ok(l) => lists.push(l),
            Err(e) => {
                tracing::warn!(error = %e, list = kind.method(), "upstream skipped in merged list");
                lists.push(None);
            }
        }
    }
    let m = Arc::new(federation::merge(kind, &w.hub.naming, &lists, mask));
    session.state.lock().lists.put_merged(kind, m.clone());
    m
}

async fn list_page(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    kind: ListKind,
    p: &Peeked<'_>,
) -> Result<Bytes, ProxyError> {
    #[derive(Deserialize)]
    struct P {
        cursor: Option<String>,
    }
    let id = p.id.unwrap_or("null");
    let cursor = serde_json::from_str::<P>(p.params.unwrap_or("{}"))
        .ok()
        .and_then(|p| p.cursor);
    let offset = match cursor {
        None => 0,
        Some(c) => federation::decode_cursor(kind, &c).ok_or_else(|| {
            ProxyError::new(ErrorKind::InvalidParams, format!("invalid cursor {c:?}"))
        })?,
    };
    let m = merged(w, session, kind).await;
    let page = federation::render_page(kind, &m, offset, w.hub.snap.page_size);
    Ok(Bytes::from(result_object(id, &page)))
}

async fn resolve_name(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    kind: ListKind,
    exposed: &str,
) -> Result<(usize, String), ProxyError> {
    let what = if kind == ListKind::Tools {
        "tool"
    } else {
        "prompt"
    };
    let found = match w.hub.naming.split(exposed) {
        Some((u, orig)) => Some((u, orig.to_string())),
        None if w.hub.naming.separator.is_none() => {
            match merged(w, session, kind).await.index.get(exposed).cloned() {
                Some(hit) => Some(hit),
                // Transparent mode: a name no list shows goes to the only upstream serving this
                // capability, which answers for itself (lists may be partial or dynamic).
                None => {
                    sole_upstream(w, session, kind.capability()).map(|u| (u, exposed.to_string()))
                }
            }
        }
        None => None,
    };
    let Some((u, orig)) = found else {
        return Err(ProxyError::new(
            ErrorKind::InvalidParams,
            format!("unknown {what}: {exposed}"),
        ));
    };
    if !w.hub.is_up(u) {
        return Err(ProxyError::new(
            ErrorKind::UpstreamUnavailable,
            format!(
                "upstream '{}' (serving {what} {exposed}) is unavailable",
                w.upstream(u).name
            ),
        ));
    }
    Ok((u, orig))
}

/// The one upstream that is up and declared `capability` in this session, if exactly one is.
fn sole_upstream(w: &Worker, session: &Session, capability: &str) -> Option<usize> {
    let mask = w.hub.up_mask();
    let st = session.state.lock();
    let mut it = (0..w.hub.snap.upstreams.len()).filter(|&u| {
        mask & (1 << u) != 0
            && st.upstreams[u]
                .as_ref()
                .is_some_and(|us| us.has_capability(capability))
    });
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

async fn resolve_uri(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    uri: &str,
) -> Result<usize, ProxyError> {
    let m = merged(w, session, ListKind::Resources).await;
    if let Some((u, _)) = m.index.get(uri) {
        return Ok(*u);
    }
    resolve_template(w, session, uri).await
}

async fn resolve_template(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    uri: &str,
) -> Result<usize, ProxyError> {
    let t = merged(w, session, ListKind::Templates).await;
    if let Some((u, _)) = t.index.get(uri) {
        return Ok(*u);
    }
    if let Some((_, (u, _))) = t
        .index
        .iter()
        .find(|(tpl, _)| federation::template_matches(tpl, uri))
    {
        return Ok(*u);
    }
    // A URI no list names may still exist upstream (lists can be partial): with a single
    // upstream that serves resources, ask it.
    if let Some(u) = sole_upstream(w, session, "resources") {
        return Ok(u);
    }
    Err(ProxyError::new(
        ErrorKind::ResourceNotFound,
        format!("no upstream serves resource {uri}"),
    ))
}

// === SSE relay ===

/// Rewrites one upstream SSE message for the client: server→client requests get a hub-minted id
/// (recorded so the answer finds its way back); `list_changed` drops the session's cached list.
/// Returns the data to send and whether it is the response to `final_id`.
fn relay_message(
    session: &Session,
    u: usize,
    generation: u64,
    data: &str,
    final_id: Option<&str>,
) -> (Bytes, bool) {
    let Ok(p) = mcp_wire::peek(data.as_bytes()) else {
        tracing::warn!(
            upstream = u,
            "upstream sent a non-JSON-RPC SSE message; relayed as is"
        );
        return (Bytes::copy_from_slice(data.as_bytes()), false);
    };
    match p.kind {
        Kind::Request => {
            let original = p.id.unwrap_or("null");
            let minted = session.mint_pending(PendingRequest {
                upstream: u,
                original_id: original.into(),
                generation,
            });
            let span = id_span(data.as_bytes(), original);
            let mut out = Vec::with_capacity(data.len() + 8);
            out.extend_from_slice(&data.as_bytes()[..span.start]);
            out.extend_from_slice(minted.as_bytes());
            out.extend_from_slice(&data.as_bytes()[span.end..]);
            (Bytes::from(out), false)
        }
        Kind::Response => {
            let is_final = final_id.is_some_and(|f| p.id == Some(f));
            (Bytes::copy_from_slice(data.as_bytes()), is_final)
        }
        Kind::Notification => {
            let kinds = ListKind::from_changed(p.method.as_deref().unwrap_or(""));
            if !kinds.is_empty() {
                let mut st = session.state.lock();
                for k in kinds {
                    st.lists.invalidate(u, *k);
                }
            }
            (Bytes::copy_from_slice(data.as_bytes()), false)
        }
    }
}

/// Writes one event to the client (if still connected) and records it for replay.
struct Emitter<'a> {
    conn: &'a mut Conn,
    stream: Arc<ReplayStream>,
    client_ok: bool,
    last_write: Instant,
    buf: Vec<u8>,
}

impl Emitter<'_> {
    async fn emit(&mut self, data: &[u8]) {
        let (seq, id) = self.stream.next_id();
        self.buf.clear();
        h1::encode_sse_event(&mut self.buf, Some(&id), None, Some(data), None);
        let frame = Bytes::copy_from_slice(&self.buf);
        self.stream.push(seq, frame.clone());
        self.write(&frame).await;
    }

    async fn prime(&mut self, version: &str) {
        // 2025-11-25 clients get a priming event, so they have a Last-Event-ID from the start.
        if version >= mcpv::V2025_11_25 {
            let (_, id) = self.stream.next_id();
            self.buf.clear();
            h1::encode_sse_event(&mut self.buf, Some(&id), None, Some(b""), None);
            let frame = Bytes::copy_from_slice(&self.buf);
            self.write(&frame).await;
        }
    }

    async fn write(&mut self, frame: &[u8]) {
        if self.client_ok {
            self.client_ok = self.conn.write_chunk(frame).await.is_ok();
            self.last_write = Instant::now();
        }
    }

    async fn keepalive_if_idle(&mut self, every: Duration) {
        if self.client_ok && self.last_write.elapsed() >= every {
            self.write(h1::SSE_KEEPALIVE).await;
        }
    }
}

/// Relays an upstream SSE answer to a POST. Keeps reading after the client goes away (the
/// events stay replayable), resumes the upstream stream with `Last-Event-ID` if the upstream
/// closes it early, and always ends with the response or a JSON-RPC error for it.
async fn relay_post_stream(
    w: &Rc<Worker>,
    conn: &mut Conn,
    session: &Arc<Session>,
    src: StreamSource,
) -> bool {
    let StreamSource {
        upstream: u,
        replica,
        conn: up_conn,
        client_id,
    } = src;
    let up = w.upstream(u).clone();
    let generation = session.state.lock().upstreams[u]
        .as_ref()
        .map_or(0, |s| s.generation);
    let _guard = metrics::StreamGuard::new(&w.hub.metrics.open_streams);
    let stream = session.open_stream(w.hub.snap.replay_events, false);
    let started = conn.start_stream(200, &SSE_HEADERS).await.is_ok();
    let mut em = Emitter {
        conn,
        stream: stream.clone(),
        client_ok: started,
        last_write: Instant::now(),
        buf: Vec::with_capacity(1024),
    };
    em.prime(session.version).await;
    let deadline = Instant::now() + up.request_timeout;
    let keepalive = w.hub.snap.sse_keepalive;
    let mut reader = Some(up_conn);
    let mut done = false;
    let mut failure = String::new();
    for _attempt in 0..4 {
        let Some(c) = reader.take() else { break };
        let (tx, mut rx) = mpsc::channel::<((), ReaderMsg)>(64);
        upstream::spawn_reader(c, (), tx);
        let mut last_up_id: Option<String> = None;
        let mut retry_ms: u64 = 1000;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                failure = format!(
                    "upstream '{}' did not answer within {:?}",
                    up.name, up.request_timeout
                );
                break;
            }
            let msg = monoio::select! {
                m = rx.recv() => m,
                _ = monoio::time::sleep(keepalive.min(left)) => {
                    em.keepalive_if_idle(keepalive).await;
                    continue;
                }
            };
            match msg {
                Some(((), ReaderMsg::Event(ev))) => {
                    if let Some(id) = ev.id.clone() {
                        last_up_id = Some(id);
                    }
                    if let Some(r) = ev.retry {
                        retry_ms = r;
                    }
                    if !ev.has_data || ev.data.is_empty() {
                        continue;
                    }
                    let (data, is_final) =
                        relay_message(session, u, generation, &ev.data, Some(&client_id));
                    em.emit(&data).await;
                    if is_final {
                        done = true;
                        break;
                    }
                }
                Some(((), ReaderMsg::End(c))) => {
                    w.pool.put(&up, replica, c);
                    failure = format!("upstream '{}' ended the stream without answering", up.name);
                    break;
                }
                Some(((), ReaderMsg::Failed(e))) => {
                    failure = format!("upstream '{}' stream failed: {e}", up.name);
                    break;
                }
                None => break,
            }
        }
        if done || deadline <= Instant::now() {
            break;
        }
        // The upstream closed the stream early; with an event id it may be resumed (SSE polling).
        let Some(last) = last_up_id else { break };
        let us = session.state.lock().upstreams[u].clone();
        // Resume only within the same upstream session (a moved session has a new stream).
        let Some(us) = us.filter(|us| us.generation == generation) else {
            break;
        };
        monoio::time::sleep(Duration::from_millis(retry_ms.min(5000))).await;
        match upstream::get_stream(&w.pool, &up, &us, Some(&last)).await {
            Ok(Some(c)) => reader = Some(c),
            Ok(None) => break,
            Err(e) => {
                failure = format!("upstream '{}' stream could not be resumed: {e}", up.name);
                break;
            }
        }
    }
    if !done {
        if failure.is_empty() {
            failure = format!("upstream '{}' ended the stream without answering", up.name);
        }
        tracing::warn!(session = %session.id, "{failure}");
        let err = error_object(
            Some(&client_id),
            mcp_wire::jsonrpc::code::INTERNAL_ERROR,
            &failure,
            None,
        );
        em.emit(&err).await;
    }
    stream.finish();
    session.state.lock().inflight.remove(&*client_id);
    let ok = em.client_ok;
    ok && em.conn.finish_stream().await.is_ok()
}

/// Reads an upstream SSE answer to its final response (batches cannot stream).
async fn collect_stream(w: &Rc<Worker>, session: &Arc<Session>, src: StreamSource) -> Bytes {
    let up = w.upstream(src.upstream).clone();
    let mut c = src.conn;
    let fut = async {
        let mut dec = h1::SseDecoder::new();
        while let Ok(Some(chunk)) = c.read_chunk().await {
            dec.push(&chunk);
            while let Some(ev) = dec.next_event() {
                if let Ok(p) = mcp_wire::peek(ev.data.as_bytes()) {
                    if p.kind == Kind::Response && p.id == Some(&*src.client_id) {
                        return Some(Bytes::from(ev.data.into_bytes()));
                    }
                }
            }
        }
        None
    };
    let out = monoio::time::timeout(up.request_timeout, fut)
        .await
        .ok()
        .flatten();
    session.state.lock().inflight.remove(&*src.client_id);
    out.unwrap_or_else(|| {
        Bytes::from(error_object(
            Some(&src.client_id),
            mcp_wire::jsonrpc::code::INTERNAL_ERROR,
            &format!("upstream '{}' ended the stream without answering", up.name),
            None,
        ))
    })
}

// === GET ===

async fn get(w: &Rc<Worker>, conn: &mut Conn, req: &Request) -> bool {
    let keep = req.head.keep_alive;
    let accept = req.head.headers.get_str("accept").unwrap_or("");
    if !crate::admit::accepts(accept, "text/event-stream") {
        let e = ProxyError::new(
            ErrorKind::NotAcceptable,
            "Accept must list text/event-stream",
        );
        return reply_error(conn, &e, keep).await;
    }
    if let Err(e) = check_version_header(req) {
        return reply_error(conn, &e, keep).await;
    }
    let session = match session_of(w, req) {
        Ok(s) => s,
        Err(e) => return reply_error(conn, &e, keep).await,
    };
    if let Some((no, seq)) = req
        .head
        .headers
        .get_str("last-event-id")
        .and_then(parse_event_id)
    {
        let stream = session.state.lock().streams.get(&no).cloned();
        match stream {
            Some(stream) if !stream.standalone => {
                return resume(w, conn, &session, stream, seq).await;
            }
            Some(stream) => {
                standalone_stream(w, conn, &session, Some((stream, seq))).await;
                return false;
            }
            None => {}
        }
    }
    standalone_stream(w, conn, &session, None).await;
    false
}

/// The standalone GET stream: merges the upstream sessions' GET streams, sends `list_changed`
/// when upstream health changes, keep-alive comments when idle; ends when the client goes away
/// or the session ends.
async fn standalone_stream(
    w: &Rc<Worker>,
    conn: &mut Conn,
    session: &Arc<Session>,
    replay: Option<(Arc<ReplayStream>, u64)>,
) {
    let _guard = metrics::StreamGuard::new(&w.hub.metrics.open_streams);
    // Only one standalone stream per session: a newer one (a reconnect) takes over.
    let my_gen = {
        let mut st = session.state.lock();
        st.get_stream_gen += 1;
        st.get_stream_gen
    };
    let stream = session.open_stream(w.hub.snap.replay_events, true);
    let mut started = conn.start_stream(200, &SSE_HEADERS).await.is_ok();
    if let Some((old, seq)) = replay {
        // What the client missed on its previous GET stream, then this stream goes on live.
        for (_, frame) in old.after(seq) {
            started = started && conn.write_chunk(&frame).await.is_ok();
        }
    }
    let mut em = Emitter {
        conn,
        stream: stream.clone(),
        client_ok: started,
        last_write: Instant::now(),
        buf: Vec::with_capacity(1024),
    };
    em.prime(session.version).await;
    let n = w.hub.snap.upstreams.len();
    let keepalive = w.hub.snap.sse_keepalive;
    let tick = keepalive.min(Duration::from_millis(250));
    let (tx, mut rx) = mpsc::channel::<(usize, ReaderMsg)>(256);
    // Per upstream: the upstream-session generation whose GET stream is attached, and when a
    // failed attach may be retried.
    let mut attached: Vec<Option<u64>> = vec![None; n];
    let mut retry_at: Vec<Instant> = vec![Instant::now(); n];
    // EDGE-RESUME: per upstream, the last event id seen on its GET stream and the upstream-session
    // generation it belongs to; a re-attach to the same generation resumes with `Last-Event-ID`
    // (the edge agent replays what it sent while the stream was detached).
    let mut last_id: Vec<Option<(u64, String)>> = vec![None; n];
    let mut seen_mask = w.hub.up_mask();
    while em.client_ok && !session.is_closed() && session.state.lock().get_stream_gen == my_gen {
        session.touch();
        for u in 0..n {
            if Instant::now() < retry_at[u] || !w.hub.is_up(u) {
                continue;
            }
            // A client that opens its GET stream wants every upstream's own messages (logs,
            // list_changed, resource updates), so the upstream sessions open now if they have not
            // yet been opened by a request (and move if their replica went down).
            let us = match ensure_upstream(w, session, u).await {
                Ok(us) => us,
                Err(e) => {
                    tracing::debug!(error = %e, "upstream session for a GET stream not opened; retrying later");
                    retry_at[u] = Instant::now() + Duration::from_secs(1);
                    continue;
                }
            };
            if attached[u] == Some(us.generation) {
                continue;
            }
            // EDGE-RESUME: a stream taken over by a newer GET must not attach upstream streams any
            // more: an attach it started late could reach the edge after the newer stream's and
            // take the edge session's one GET stream from it.
            if session.state.lock().get_stream_gen != my_gen {
                break;
            }
            // EDGE-RESUME: same upstream session as before: resume from the last event id seen.
            let resume = last_id[u]
                .as_ref()
                .filter(|(g, _)| *g == us.generation)
                .map(|(_, id)| id.clone());
            match upstream::get_stream(&w.pool, w.upstream(u), &us, resume.as_deref()).await {
                Ok(Some(c)) => {
                    upstream::spawn_reader(c, u, tx.clone());
                    attached[u] = Some(us.generation);
                }
                Ok(None) => attached[u] = Some(us.generation),
                Err(e) => {
                    tracing::debug!(upstream = %w.upstream(u).name, error = %e, "upstream GET stream not available; retrying later");
                    retry_at[u] = Instant::now() + Duration::from_secs(1);
                    // EDGE-RESUME: an upstream that refuses the resume is next asked for a fresh
                    // stream.
                    if resume.is_some() {
                        last_id[u] = None;
                    }
                }
            }
        }
        let msg = monoio::select! {
            m = rx.recv() => m,
            _ = monoio::time::sleep(tick) => None,
        };
        // EDGE-RESUME: remember the last upstream event id (priming events included).
        if let Some((u, ReaderMsg::Event(ev))) = &msg {
            if let (Some(id), Some(g)) = (&ev.id, attached[*u]) {
                last_id[*u] = Some((g, id.clone()));
            }
        }
        match msg {
            Some((u, ReaderMsg::Event(ev))) if ev.has_data && !ev.data.is_empty() => {
                let generation = attached[u].unwrap_or(0);
                let (data, _) = relay_message(session, u, generation, &ev.data, None);
                em.emit(&data).await;
            }
            Some((_, ReaderMsg::Event(_))) => {}
            Some((u, ReaderMsg::End(_))) | Some((u, ReaderMsg::Failed(_))) => {
                attached[u] = None;
                retry_at[u] = Instant::now() + Duration::from_secs(1);
            }
            None => {}
        }
        let mask = w.hub.up_mask();
        if mask != seen_mask {
            seen_mask = mask;
            for note in [
                method::TOOLS_LIST_CHANGED,
                method::PROMPTS_LIST_CHANGED,
                method::RESOURCES_LIST_CHANGED,
            ] {
                let mut data = br#"{"jsonrpc":"2.0","method":""#.to_vec();
                data.extend_from_slice(note.as_bytes());
                data.extend_from_slice(b"\"}");
                em.emit(&data).await;
            }
        }
        em.keepalive_if_idle(keepalive).await;
    }
    stream.finish();
    if em.client_ok {
        let _ = em.conn.finish_stream().await;
    }
}

/// Replays a stream after `seq` (GET with `Last-Event-ID`) and follows it live until it ends.
async fn resume(
    w: &Rc<Worker>,
    conn: &mut Conn,
    session: &Arc<Session>,
    stream: Arc<ReplayStream>,
    mut seq: u64,
) -> bool {
    let _guard = metrics::StreamGuard::new(&w.hub.metrics.open_streams);
    if conn.start_stream(200, &SSE_HEADERS).await.is_err() {
        return false;
    }
    let keepalive = w.hub.snap.sse_keepalive;
    let deadline = Instant::now() + w.hub.snap.session_ttl;
    let mut last_write = Instant::now();
    while Instant::now() < deadline && !session.is_closed() {
        let notified = stream.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        for (s, frame) in stream.after(seq) {
            if conn.write_chunk(&frame).await.is_err() {
                return false;
            }
            seq = s;
            last_write = Instant::now();
        }
        if stream.is_done() && stream.after(seq).is_empty() {
            break;
        }
        monoio::select! {
            _ = notified => {}
            _ = monoio::time::sleep(keepalive) => {}
        }
        if last_write.elapsed() >= keepalive {
            if conn.write_chunk(h1::SSE_KEEPALIVE).await.is_err() {
                return false;
            }
            last_write = Instant::now();
        }
    }
    conn.finish_stream().await.is_ok()
}

// === DELETE ===

async fn delete(w: &Rc<Worker>, conn: &mut Conn, req: &Request) -> bool {
    let keep = req.head.keep_alive;
    let sid = match req.head.headers.get_str("mcp-session-id") {
        Some(s) => s,
        None => {
            let e = ProxyError::new(
                ErrorKind::MissingSession,
                "DELETE needs the Mcp-Session-Id header",
            );
            return reply_error(conn, &e, keep).await;
        }
    };
    let Some(session) = w.hub.sessions.remove(sid) else {
        let e = ProxyError::new(ErrorKind::UnknownSession, "unknown or expired session");
        return reply_error(conn, &e, keep).await;
    };
    crate::persist::forget(&w.hub, &session.id);
    crate::hub::close_upstreams(w, &session).await;
    tracing::debug!(session = %session.id, "session deleted");
    conn.write_empty(200, &[], keep).await.is_ok() && keep
}
