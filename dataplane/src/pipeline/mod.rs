//! The request path on the MCP endpoint: one request = one ordered list of stages.
//!
//! ```text
//! admit → identify → session → policy → route → policy (per tool) → affinity → guard → forward → relay → audit
//! ```
//!
//! | stage | module | owns |
//! |---|---|---|
//! | admit | [`admit`] | HTTP checks: method, Origin/Host, media types, `MCP-Protocol-Version`, the JSON-RPC envelope (peek), the era |
//! | identify | [`identify`] | who is calling: the [`identify::Principal`] (bearer JWT, API key, or anonymous with `auth: none`) |
//! | session | [`session`] | find the session (or create it at `initialize`), bound to its principal; its owner among hub replicas, takeover |
//! | policy | [`policy`] | the principal's rate limit (before anything is parsed), its visibility class, then per tool: hidden, scope, rate, loop lock, `inputSchema`, approval |
//! | route | [`route`] | the method table: answer what the hub owns, or map a name/URI to `(upstream, original)` |
//! | affinity | [`affinity`] | which replica of the upstream, and the upstream session on it |
//! | guard | [`guard`] | what the tool's rule asks around the call: result cache, time bound, guardrails |
//! | forward | [`forward`] | send upstream (its credential, the user assertion); on a lost replica move the session and retry only when safe |
//! | relay | [`relay`] | SSE back to the client: hub-minted event ids, server→client id remapping, replay, held calls, era translation of streams |
//! | audit | [`audit`] | a signed record of every tool call, on success and on error |
//!
//! A 2026-07-28 request runs the same stages from [`modern::post`], statelessly.
//!
//! What stages learn about a request travels in [`Ctx`] (the HTTP request, the principal, the
//! session) and, per JSON-RPC message, in [`Call`] (the peeked message, the chosen upstream and
//! replica, the outcome), in the manner of pingora's per-request context. Any stage may end the
//! request with a [`ProxyError`], rendered once by [`reply_error`].
//!
//! One `tools/call`, top to bottom: [`handle`] → [`admit::origin_and_host`] →
//! [`identify::principal`] → [`policy::admit`] → [`session::route_to_owner`] → [`post`] →
//! [`admit::media_types`] → [`admit::peek`] → [`admit::era`] → [`serve`] → [`session::find`] →
//! [`policy::classify`] → [`route::route`] → [`policy::tool_call`] →
//! [`affinity::upstream_session`] → [`guard::forward`] → [`forward::forward`] → [`respond`] →
//! [`relay::post_stream`] (when the upstream streams) → [`audit::record`].

pub mod admit;
pub mod affinity;
pub mod audit;
pub mod forward;
pub mod guard;
pub mod identify;
pub mod modern;
pub mod policy;
pub mod relay;
pub mod route;
pub mod session;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use h1::{Method, Request, ServerConn};
use mcp_wire::{Kind, Peeked};
use monoio::net::TcpStream;
use serde_json::value::RawValue;

use crate::error::{ErrorKind, ProxyError};
use crate::hub::Worker;
use crate::metrics;
use crate::session::Session;

/// The hub's own version, reported as `serverInfo.version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A client connection.
pub type Conn = ServerConn<TcpStream>;

const JSON: (&str, &[u8]) = ("Content-Type", b"application/json");

/// What the stages learned about one HTTP request.
pub struct Ctx<'r> {
    /// The request as read by the codec.
    pub req: &'r Request,
    /// When the request was read.
    pub started: Instant,
    /// Whether the client connection may be kept alive.
    pub keep_alive: bool,
    /// Who is calling (`identify`).
    pub principal: identify::Principal,
    /// The session (`session`), once found or created.
    pub session: Option<Arc<Session>>,
}

/// What the stages learned about one JSON-RPC message (a POST body, or one batch element).
pub struct Call<'r> {
    /// The peeked message.
    pub msg: Peeked<'r>,
    /// The message's bytes (forwarded as they are unless a rewrite is needed).
    pub body: Bytes,
    /// Metrics label of the method.
    pub method: usize,
    /// Where `route` sent it: the upstream, and the tool's upstream name for `tools/call`.
    pub upstream: Option<usize>,
    /// The tool (upstream name), for `tools/call`.
    pub tool: Option<Arc<str>>,
    /// The replica `affinity` chose.
    pub replica: Option<usize>,
    /// How it ended: `ok`, or the error's metrics label (`client_error`, `upstream_error`…).
    pub outcome: &'static str,
}

impl<'r> Call<'r> {
    fn new(msg: Peeked<'r>, body: Bytes) -> Self {
        let method = metrics::method_index(match msg.kind {
            Kind::Request => msg.method.as_deref().unwrap_or("other"),
            Kind::Notification => "notification",
            Kind::Response => "response",
        });
        Self {
            msg,
            body,
            method,
            upstream: None,
            tool: None,
            replica: None,
            outcome: "ok",
        }
    }

    /// The request id as raw JSON (`null` when there is none).
    pub fn id(&self) -> &'r str {
        self.msg.id.unwrap_or("null")
    }

    fn is_initialize(&self) -> bool {
        self.msg.kind == Kind::Request
            && self.msg.method.as_deref() == Some(mcp_wire::mcp::method::INITIALIZE)
    }
}

/// How a message is answered.
pub enum Answer {
    /// A complete JSON-RPC message.
    Json(Bytes),
    /// 202, no body.
    Accepted,
    /// A new session: the `initialize` result and the session id to send with it.
    Opened {
        /// The minted `Mcp-Session-Id`.
        sid: Arc<str>,
        /// The JSON-RPC response.
        json: Bytes,
    },
    /// An upstream SSE stream to relay.
    Stream(relay::StreamSource),
    /// The client cancelled the request before the upstream answered: nothing more is sent.
    Cancelled,
    /// A JSON-RPC error a 2026-07-28 upstream answered with an HTTP 4xx (relayed with it to a
    /// modern client; a legacy client gets it with 200).
    Status(u16, Bytes),
    /// A call held for an operator's decision (approval gate).
    Held {
        /// Where it goes once approved.
        target: route::Target,
        /// The approval id (what the operator decides on).
        approval: String,
        /// The decision, when it comes (rejection or expiry included).
        decision: tokio::sync::oneshot::Receiver<governance::approval::ApprovalDecision>,
        /// The rule's guard, for the call once it runs.
        guard: Option<guard::Guard>,
    },
    /// A 2026-07-28 upstream answered a legacy client's request with `input_required`: the hub
    /// asks the client on an SSE stream and retries ([`relay::input_rounds`]).
    Input {
        /// The upstream.
        upstream: usize,
        /// The request as routed (to retry).
        request: Bytes,
        /// The `input_required` response.
        first: Bytes,
    },
}

/// Handles one request on the MCP endpoint; returns whether the connection may be kept alive.
pub async fn handle(w: &Rc<Worker>, conn: &mut Conn, req: Request, bound_loopback: bool) -> bool {
    let keep = req.head.keep_alive;
    // admit: Origin/Host first, for every method.
    if let Err(e) = admit::origin_and_host(&w.hub.snap, bound_loopback, &req.head) {
        return reply_error(conn, &e, keep).await;
    }
    // identify: who is calling, before anything is looked up on their behalf.
    let principal = match identify::principal(w, &req).await {
        Ok(p) => p,
        Err(e) => return reply_error(conn, &e, keep).await,
    };
    // policy (before anything is looked at): the principal's own rate limit.
    if let Err(e) = policy::admit(w, &principal) {
        return reply_error(conn, &e, keep).await;
    }
    // session (hub replicas): a session another replica owns is served there, in one hop.
    if let Some(keep) = session::route_to_owner(w, conn, &req, &principal).await {
        return keep;
    }
    let mut cx = Ctx {
        req: &req,
        started: Instant::now(),
        keep_alive: keep,
        principal,
        session: None,
    };
    match req.head.method {
        Method::Post => post(w, conn, &mut cx).await,
        Method::Get => get(w, conn, &mut cx).await,
        Method::Delete => delete(w, conn, &mut cx).await,
        _ => {
            let e = ProxyError::new(ErrorKind::MethodNotAllowed, "use POST, GET or DELETE");
            reply_error(conn, &e, keep).await
        }
    }
}

// === POST ===

/// A POST: one message (or a 2025-03-26 batch) through the stages, answered, audited.
pub async fn post(w: &Rc<Worker>, conn: &mut Conn, cx: &mut Ctx<'_>) -> bool {
    let req = cx.req;
    if let Err(e) = admit::media_types(req) {
        return reply_error(conn, &e, cx.keep_alive).await;
    }
    if mcp_wire::peek::is_batch(&req.body) {
        if let Err(e) = admit::version_header(req) {
            return reply_error(conn, &e, cx.keep_alive).await;
        }
        return batch(w, conn, cx).await;
    }
    let msg = match admit::peek(&req.body) {
        Ok(m) => m,
        Err(e) => return reply_error(conn, &e, cx.keep_alive).await,
    };
    // The era: a 2026-07-28 request runs the same stages statelessly.
    if admit::era(req, &msg) == mcp_wire::mcp::Era::Modern {
        return modern::post(w, conn, cx, msg).await;
    }
    if let Err(e) = admit::version_header(req) {
        return reply_error(conn, &e.with_id(msg.id), cx.keep_alive).await;
    }
    let mut call = Call::new(msg, req.body.clone());
    let answer = serve(w, cx, &mut call).await;
    let keep = respond(w, conn, cx, &mut call, answer).await;
    audit::record(w, cx, &call);
    keep
}

/// The stages after admission for one message: session → policy → route → affinity → forward.
pub async fn serve(
    w: &Rc<Worker>,
    cx: &mut Ctx<'_>,
    call: &mut Call<'_>,
) -> Result<Answer, ProxyError> {
    // session: `initialize` opens one; everything else needs one, owned by this principal.
    if call.is_initialize() {
        return session::initialize(w, cx, call);
    }
    let session = session::find(w, cx)?;
    policy::classify(w, cx, &session);
    // route: what the hub answers itself, or which upstream and name a request goes to.
    let target = match route::route(w, &session, call).await? {
        route::Routed::Answer(a) => return Ok(a),
        route::Routed::Upstream(t) => t,
    };
    // policy: may this principal call this tool, now, with these arguments.
    let rule = match policy::tool_call(w, cx, call, &target, &session).await? {
        policy::Verdict::Go(rule) => rule,
        policy::Verdict::Answer(a) => return Ok(a),
        policy::Verdict::Hold(rule) => return Ok(hold(w, cx, call, &session, target, rule)),
    };
    // affinity: the replica and the upstream session on it.
    let us = affinity::upstream_session(w, &session, target.upstream).await?;
    call.replica = Some(us.replica);
    // A 2026-07-28 upstream has no resources/subscribe: the hub keeps the subscription and
    // delivers its updates from the upstream's listen stream on the session's GET stream.
    if us.is_modern()
        && matches!(
            target.then,
            route::After::Subscribe(_) | route::After::Unsubscribe(_)
        )
    {
        route::after_forward(w, &session, &target);
        relay::resubscribe(&session).await;
        return Ok(Answer::Json(Bytes::from(mcp_wire::jsonrpc::result_object(
            call.id(),
            b"{}",
        ))));
    }
    // forward: send it; a lost replica moves the session, and a retry happens only when safe.
    // A tool rule's guard (cache, time bound, guardrails) wraps it.
    let modern_upstream = us.is_modern();
    let guard = guard::Guard::for_call(w, &cx.principal, &session, call, &target, rule);
    let answer = guard::forward(w, &session, &cx.principal, call, &target, us, guard).await?;
    route::after_forward(w, &session, &target);
    Ok(match answer {
        Answer::Json(first) if modern_upstream && relay::is_input_required(&first) => {
            Answer::Input {
                upstream: target.upstream,
                request: target.body.clone(),
                first,
            }
        }
        other => other,
    })
}

/// Holds a call for an operator's decision (the approval gate): the client's stream waits with
/// keep-alives ([`relay::held`]).
pub fn hold(
    w: &Worker,
    cx: &Ctx<'_>,
    call: &Call<'_>,
    session: &Session,
    target: route::Target,
    rule: &governance::policy::ToolRule,
) -> Answer {
    let guard = guard::Guard::for_call(w, &cx.principal, session, call, &target, Some(rule));
    let g = w.hub.gov.get().expect("a held call has governance");
    let args: serde_json::Value =
        serde_json::from_str(audit::arguments(call)).unwrap_or(serde_json::Value::Null);
    let upstream = w.hub.snap.upstreams[target.upstream].name.to_string();
    let tool = target.tool.as_deref().unwrap_or("").to_string();
    let req = governance::approval::ApprovalRequest::for_call(
        &g.hub_id,
        &upstream,
        &tool,
        &args,
        &cx.principal,
        rule,
    );
    let mut r = governance::audit::AuditRecord::new(governance::audit::AuditKind::ApprovalHeld);
    r.principal = Some(cx.principal.binding().to_string());
    r.upstream = Some(upstream);
    r.tool = Some(tool);
    r.reason = Some(req.reason.clone());
    let (id, decision) = g.approvals.hold(req);
    r.approval_id = Some(id.clone());
    g.audit(r);
    g.stats
        .approvals_held
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(approval = %id, "call held for approval");
    Answer::Held {
        target,
        approval: id,
        decision,
        guard,
    }
}

/// Writes the answer (JSON, 202, a new session, or the relayed stream) or the error.
async fn respond(
    w: &Rc<Worker>,
    conn: &mut Conn,
    cx: &Ctx<'_>,
    call: &mut Call<'_>,
    answer: Result<Answer, ProxyError>,
) -> bool {
    let keep = cx.keep_alive;
    let out = match answer {
        Ok(Answer::Json(json) | Answer::Status(_, json)) => {
            conn.write_full(200, &[JSON], &json, keep).await.is_ok() && keep
        }
        Ok(Answer::Accepted) => conn.write_empty(202, &[], keep).await.is_ok() && keep,
        Ok(Answer::Opened { sid, json }) => {
            let headers = [JSON, ("Mcp-Session-Id", sid.as_bytes())];
            conn.write_full(200, &headers, &json, keep).await.is_ok() && keep
        }
        Ok(Answer::Stream(src)) => match &cx.session {
            Some(s) => relay::post_stream(w, conn, s, src).await && keep,
            None => false,
        },
        Ok(Answer::Cancelled) => relay::empty_stream(conn).await && keep,
        Ok(Answer::Held {
            target,
            approval,
            decision,
            guard,
        }) => match &cx.session {
            Some(s) => {
                relay::held(w, conn, cx, s, call, target, &approval, decision, guard).await && keep
            }
            None => false,
        },
        Ok(Answer::Input {
            upstream,
            request,
            first,
        }) => match &cx.session {
            Some(s) => {
                relay::input_stream(w, conn, s, upstream, &request, call.id(), first).await && keep
            }
            None => false,
        },
        Err(e) => {
            call.outcome = e.label();
            reply_error(conn, &e.with_id(call.msg.id), keep).await
        }
    };
    let label = metrics::outcome_index(call.outcome);
    w.metrics
        .record(call.method, call.upstream, label, cx.started.elapsed());
    out
}

/// A 2025-03-26 batch: every element goes through the stages in order. Answers are sent
/// together as a JSON array; when an element's upstream answers with a stream, the whole batch
/// is answered as SSE instead, so that server→client requests inside it reach the client.
async fn batch(w: &Rc<Worker>, conn: &mut Conn, cx: &mut Ctx<'_>) -> bool {
    let keep = cx.keep_alive;
    let req = cx.req;
    let session = match session::find(w, cx) {
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
    if !mcp_wire::mcp::allows_batch(session.version) {
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
            let e = ProxyError::new(kind, format!("bad batch: {e}"));
            return reply_error(conn, &e, keep).await;
        }
    };
    let mut answers: Vec<relay::BatchPart> = Vec::with_capacity(elements.len());
    for raw in &elements {
        let msg = match admit::peek(raw) {
            Ok(m) => m,
            Err(e) => {
                answers.extend(e.body().map(|b| relay::BatchPart::Json(Bytes::from(b))));
                continue;
            }
        };
        let mut call = Call::new(msg, raw.clone());
        let answer = if call.is_initialize() {
            Err(ProxyError::new(
                ErrorKind::InvalidRequest,
                "initialize must not be inside a batch",
            ))
        } else {
            serve(w, cx, &mut call).await
        };
        match answer {
            Ok(Answer::Json(j) | Answer::Status(_, j)) => answers.push(relay::BatchPart::Json(j)),
            Ok(Answer::Accepted | Answer::Cancelled) => {}
            Ok(Answer::Input { first, .. }) => answers.push(relay::BatchPart::Json(first)),
            Ok(Answer::Held { approval, .. }) => {
                // A batch cannot wait on an operator: the call is refused, saying so.
                if let Some(g) = w.hub.gov.get() {
                    g.approvals.cancel(&approval);
                }
                answers.push(relay::BatchPart::Json(crate::gov::tool_error(
                    call.id(),
                    "this call needs an operator's approval: send it on its own, not in a batch",
                )));
            }
            Ok(Answer::Opened { json, .. }) => answers.push(relay::BatchPart::Json(json)),
            Ok(Answer::Stream(src)) => answers.push(relay::BatchPart::Stream(src)),
            Err(e) => {
                call.outcome = e.label();
                answers.extend(
                    e.with_id(call.msg.id)
                        .body()
                        .map(|b| relay::BatchPart::Json(Bytes::from(b))),
                );
            }
        }
        audit::record(w, cx, &call);
    }
    if answers.is_empty() {
        return conn.write_empty(202, &[], keep).await.is_ok() && keep;
    }
    if answers
        .iter()
        .any(|a| matches!(a, relay::BatchPart::Stream(_)))
    {
        return relay::batch_stream(w, conn, &session, answers).await && keep;
    }
    let parts: Vec<Bytes> = answers
        .into_iter()
        .filter_map(|a| match a {
            relay::BatchPart::Json(j) => Some(j),
            relay::BatchPart::Stream(_) => None,
        })
        .collect();
    let mut out = Vec::with_capacity(parts.iter().map(Bytes::len).sum::<usize>() + parts.len() + 2);
    out.push(b'[');
    for (i, a) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(a);
    }
    out.push(b']');
    conn.write_full(200, &[JSON], &out, keep).await.is_ok() && keep
}

// === GET ===

/// A GET: the standalone SSE stream of a session, or the resumption of one of its streams
/// (`Last-Event-ID`).
pub async fn get(w: &Rc<Worker>, conn: &mut Conn, cx: &mut Ctx<'_>) -> bool {
    let keep = cx.keep_alive;
    if let Err(e) = admit::get(cx.req) {
        return reply_error(conn, &e, keep).await;
    }
    let session = match session::find(w, cx) {
        Ok(s) => s,
        Err(e) => return reply_error(conn, &e, keep).await,
    };
    relay::get_stream(w, conn, cx.req, &session).await
}

// === DELETE ===

/// A DELETE: ends the session here and on every upstream.
pub async fn delete(w: &Rc<Worker>, conn: &mut Conn, cx: &mut Ctx<'_>) -> bool {
    let keep = cx.keep_alive;
    match session::end(w, cx).await {
        Ok(()) => conn.write_empty(200, &[], keep).await.is_ok() && keep,
        Err(e) => reply_error(conn, &e, keep).await,
    }
}

/// Writes an error reply (the one place a [`ProxyError`] is rendered); returns whether the
/// connection may be kept alive.
pub async fn reply_error(conn: &mut Conn, e: &ProxyError, keep_alive: bool) -> bool {
    if e.status() >= 400 {
        tracing::debug!(status = e.status(), error = %e, "request refused");
    } else {
        tracing::info!(error = %e, "request failed");
    }
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(2);
    if let Some(h) = &e.header {
        headers.push((h.0, h.1.as_bytes()));
    }
    let res = match (e.body(), e.kind == ErrorKind::MethodNotAllowed) {
        (_, true) => {
            conn.write_empty(405, &[("Allow", b"GET, POST, DELETE")], keep_alive)
                .await
        }
        (Some(body), false) => {
            headers.push(JSON);
            conn.write_full(e.status(), &headers, &body, keep_alive)
                .await
        }
        (None, false) => {
            let text = format!("{}\n", e.message);
            headers.push(("Content-Type", b"text/plain"));
            conn.write_full(e.status(), &headers, text.as_bytes(), keep_alive)
                .await
        }
    };
    res.is_ok() && keep_alive
}
