//! The 2026-07-28 (stateless) era on the same endpoint: a POST whose `_meta` names a modern
//! revision runs the same stages as a legacy one, with the envelope in place of a session.
//!
//! - `admit` checks the envelope and the mirrored headers ([`super::admit::modern`]:
//!   `-32602`, `-32020`, `-32022`, all HTTP 400).
//! - `session`: no protocol session; the request is carried by a hub-held session per
//!   (principal, declared capabilities) ([`super::session::stateless`]), under which legacy
//!   upstreams get the hub's own sessions and modern upstreams are reached statelessly. So
//!   affinity (which replica) works as for legacy clients, keyed by that session.
//! - `route`: the hub answers `server/discover` and the merged lists (with `resultType`,
//!   `ttlMs`/`cacheScope` — the minimum of the parts' — and `serverInfo`), serves
//!   `subscriptions/listen` ([`super::relay::listen`]); removed methods (`initialize`, `ping`,
//!   `logging/setLevel`, `resources/subscribe`…) are HTTP 404 `-32601`; the rest routes by name
//!   or URI as for legacy clients.
//! - `forward` sends to a modern upstream with its mirrored headers and the client's own
//!   envelope; to a legacy upstream within the hub-held session.
//! - `relay` ([`super::relay::modern_post_stream`]) passes a modern upstream's stream through,
//!   and turns a legacy upstream's answer into the modern shape (`resultType`, no log messages
//!   unless `logLevel` was asked for, no server→client requests: those become an
//!   `input_required` result).

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use mcp_wire::jsonrpc::result_object;
use mcp_wire::mcp::method;
use mcp_wire::modern::{self as m, ModernError};
use mcp_wire::{Kind, Peeked};

use super::admit::Envelope;
use super::{reply_error, Answer, Call, Conn, Ctx, JSON, VERSION};
use crate::catalog;
use crate::error::{ErrorKind, ProxyError};
use crate::federation::{self, ListKind};
use crate::hub::Worker;
use crate::metrics;

/// What a modern request comes to.
pub enum Modern {
    /// An answer as for legacy clients (JSON, a relayed stream, 202, a 4xx error).
    Answer(Answer),
    /// A `subscriptions/listen` stream.
    Listen(m::ListenFilter),
    /// A retry that resumes an upstream answer parked for input.
    Resume(super::relay::Flow, super::relay::Source),
}

/// A 2026-07-28 POST (one message; batches do not exist in this era).
pub async fn post<'r>(w: &Rc<Worker>, conn: &mut Conn, cx: &mut Ctx<'r>, msg: Peeked<'r>) -> bool {
    let mut call = Call::new(msg, cx.req.body.clone());
    let keep = cx.keep_alive;
    // Closing the stream is this era's cancel, also while the upstream has not answered yet:
    // a client gone before the answer ends the request (dropping it closes the upstream's).
    let served = {
        let watch = client_gone(conn);
        let serve = admit_and_serve(w, cx, &mut call);
        monoio::select! {
            s = serve => Some(s),
            _ = watch => None,
        }
    };
    let Some(served) = served else {
        call.outcome = "client_error";
        tracing::debug!("2026-07-28 client closed its request before the answer; cancelled");
        // A legacy upstream running it is told (a modern one saw its connection close).
        if let Some(s) = &cx.session {
            let flight = s.state.lock().inflight.remove(call.id());
            if let Some(f) = flight {
                let us = s.state.lock().upstreams[f.upstream].clone();
                if let Some(us) = us.filter(|us| !us.is_modern()) {
                    super::relay::cancel_upstream(
                        w,
                        s,
                        f.upstream,
                        us.generation,
                        call.id(),
                        super::relay::CLIENT_CLOSED,
                    )
                    .await;
                }
            }
        }
        super::audit::record(w, cx, &call);
        return false;
    };
    let out = match served {
        Ok((env, Modern::Answer(a))) => respond(w, conn, cx, &mut call, &env, a).await,
        Ok((env, Modern::Listen(filter))) => match &cx.session {
            Some(s) => {
                super::relay::listen(w, conn, s, call.id(), &filter, env.capabilities, env.info)
                    .await
                    && keep
            }
            None => false,
        },
        Ok((_, Modern::Resume(flow, source))) => match &cx.session {
            Some(s) => {
                let cancel = crate::session::Cancel::default();
                super::relay::modern_pump(w, conn, s, flow, source, call.id(), &cancel).await
                    && keep
            }
            None => false,
        },
        Err(e) => {
            call.outcome = e.label();
            reply_error(conn, &e.for_modern(true).with_id(call.msg.id), keep).await
        }
    };
    let label = metrics::outcome_index(call.outcome);
    w.metrics
        .record(call.method, call.upstream, label, cx.started.elapsed());
    super::audit::record(w, cx, &call);
    out
}

/// Resolves when the client has closed its connection (checked every quarter second).
async fn client_gone(conn: &Conn) {
    loop {
        monoio::time::sleep(std::time::Duration::from_millis(250)).await;
        if conn.client_closed() {
            return;
        }
    }
}

async fn admit_and_serve<'r>(
    w: &Rc<Worker>,
    cx: &mut Ctx<'r>,
    call: &mut Call<'r>,
) -> Result<(Envelope<'r>, Modern), ProxyError> {
    // admit: envelope and mirrored headers.
    let env = super::admit::modern(cx.req, &call.msg)?;
    let served = serve(w, cx, call, &env).await?;
    Ok((env, served))
}

async fn serve(
    w: &Rc<Worker>,
    cx: &mut Ctx<'_>,
    call: &mut Call<'_>,
    env: &Envelope<'_>,
) -> Result<Modern, ProxyError> {
    match call.msg.kind {
        // Closing the response stream is the cancellation in this era; other notifications
        // (a listen stream's `notifications/cancelled`) need nothing.
        Kind::Notification => return Ok(Modern::Answer(Answer::Accepted)),
        Kind::Response => {
            return Err(ProxyError::new(
                ErrorKind::InvalidRequest,
                "a 2026-07-28 client sends no JSON-RPC responses (input goes in inputResponses)",
            ))
        }
        Kind::Request => {}
    }
    let id = call.id();
    let name = call.msg.method.as_deref().unwrap_or("").to_string();
    let name = name.as_str();
    if m::REMOVED_METHODS.contains(&name) || name == method::PING {
        return Err(ProxyError::modern(m::method_not_found(name)));
    }
    if name == m::METHOD_SERVER_DISCOVER {
        return Ok(Modern::Answer(Answer::Json(discover(w, id))));
    }
    // session: the hub-held session of this principal and capability set.
    let session = super::session::stateless(w, cx, env);
    super::policy::classify(w, cx, &session);
    if name == m::METHOD_SUBSCRIPTIONS_LISTEN {
        let filter = m::ListenFilter::from_params(call.msg.params).map_err(|e| {
            ProxyError::new(
                ErrorKind::InvalidParams,
                format!("bad notifications filter: {e}"),
            )
        })?;
        return Ok(Modern::Listen(filter));
    }
    if let Some(kind) = ListKind::from_method(name) {
        return list_page(w, &session, kind, call).await.map(Modern::Answer);
    }
    // A retry carrying request state the hub issued resumes the parked upstream answer.
    if m::allows_input_required(name) {
        if let Some(resumed) = resume(w, &session, call).await? {
            return Ok(resumed);
        }
    }
    // route → affinity → forward, as for a legacy client.
    let target = match super::route::route(w, &session, call).await? {
        super::route::Routed::Answer(a) => return Ok(Modern::Answer(a)),
        super::route::Routed::Upstream(t) => t,
    };
    // policy: may this principal call this tool, now, with these arguments.
    let rule = match super::policy::tool_call(w, cx, call, &target, &session).await? {
        super::policy::Verdict::Go(rule) => rule,
        super::policy::Verdict::Answer(a) => return Ok(Modern::Answer(a)),
        super::policy::Verdict::Hold(rule) => {
            return Ok(Modern::Answer(super::hold(
                w, cx, call, &session, target, rule,
            )))
        }
    };
    let us = super::affinity::upstream_session(w, &session, target.upstream).await?;
    call.replica = Some(us.replica);
    let guard = super::guard::Guard::for_call(w, &cx.principal, &session, call, &target, rule);
    let answer =
        super::guard::forward(w, &session, &cx.principal, call, &target, us.clone(), guard).await?;
    Ok(Modern::Answer(match answer {
        // A legacy upstream's answer in the modern shape; a modern upstream's as it is.
        Answer::Json(body) if !us.is_modern() => Answer::Json(modern_result(&body, name)),
        other => other,
    }))
}

/// Writes a modern answer.
async fn respond(
    w: &Rc<Worker>,
    conn: &mut Conn,
    cx: &Ctx<'_>,
    call: &mut Call<'_>,
    env: &Envelope<'_>,
    answer: Answer,
) -> bool {
    let keep = cx.keep_alive;
    match answer {
        Answer::Held {
            target,
            approval,
            decision,
            guard,
        } => match &cx.session {
            Some(s) => {
                super::relay::held(w, conn, cx, s, call, target, &approval, decision, guard).await
                    && keep
            }
            None => false,
        },
        Answer::Json(json) | Answer::Opened { json, .. } | Answer::Input { first: json, .. } => {
            conn.write_full(200, &[JSON], &json, keep).await.is_ok() && keep
        }
        Answer::Status(status, json) => {
            call.outcome = "client_error";
            conn.write_full(status, &[JSON], &json, keep).await.is_ok() && keep
        }
        Answer::Accepted => conn.write_empty(202, &[], keep).await.is_ok() && keep,
        Answer::Cancelled => super::relay::empty_stream(conn).await && keep,
        Answer::Stream(src) => match &cx.session {
            Some(s) => {
                super::relay::modern_post_stream(w, conn, s, src, env.log_level).await && keep
            }
            None => false,
        },
    }
}

/// A legacy upstream's JSON answer as a modern client must get it: `resultType` on the result,
/// resource-not-found as `-32602`, and caching hints on a `resources/read` (the safe default:
/// a legacy upstream says nothing about caching).
pub fn modern_result(body: &[u8], method_name: &str) -> Bytes {
    if let Ok(Some(t)) = m::translate_resource_not_found(body) {
        return Bytes::from(t);
    }
    let typed = match m::ensure_result_type(body) {
        Ok(t) => t.into_owned(),
        Err(_) => return Bytes::copy_from_slice(body),
    };
    if m::is_cacheable_method(method_name) {
        if let Ok(with) = m::set_cache_hints(&typed, m::CacheHints::SAFE_DEFAULT) {
            return Bytes::from(with);
        }
    }
    Bytes::from(typed)
}

/// `"_meta":{"io.modelcontextprotocol/serverInfo":{...}}`, the hub's own.
fn server_info_meta(out: &mut Vec<u8>) {
    out.extend_from_slice(
        br#""_meta":{"io.modelcontextprotocol/serverInfo":{"name":"meshgate","version":""#,
    );
    out.extend_from_slice(VERSION.as_bytes());
    out.extend_from_slice(b"\"}}");
}

/// `server/discover`, answered by the hub: what it relays to modern clients.
fn discover(w: &Worker, id: &str) -> Bytes {
    let names: Vec<&str> = w
        .hub
        .snap
        .upstreams
        .iter()
        .filter(|u| u.name.is_bound())
        .map(|u| &*u.name)
        .collect();
    let mut r = Vec::with_capacity(512);
    r.extend_from_slice(br#"{"resultType":"complete","supportedVersions":[""#);
    r.extend_from_slice(mcp_wire::mcp::V2026_07_28.as_bytes());
    r.extend_from_slice(br#""],"capabilities":{"completions":{},"prompts":{"listChanged":true},"resources":{"subscribe":true,"listChanged":true},"tools":{"listChanged":true}},"instructions":"#);
    let instructions = if names.is_empty() {
        "meshgate has no upstream MCP servers configured.".to_string()
    } else {
        format!(
            "meshgate federates these MCP servers: {}.",
            names.join(", ")
        )
    };
    mcp_wire::jsonrpc::push_json_str(&mut r, &instructions);
    // The hub's own answer changes only with its configuration: shareable, briefly.
    r.extend_from_slice(br#","ttlMs":60000,"cacheScope":"public","#);
    server_info_meta(&mut r);
    r.push(b'}');
    Bytes::from(result_object(id, &r))
}

/// One page of a merged list in the modern shape.
async fn list_page(
    w: &Rc<Worker>,
    session: &Arc<crate::session::Session>,
    kind: ListKind,
    call: &Call<'_>,
) -> Result<Answer, ProxyError> {
    #[derive(serde::Deserialize)]
    struct P {
        cursor: Option<String>,
    }
    let cursor = serde_json::from_str::<P>(call.msg.params.unwrap_or("{}"))
        .ok()
        .and_then(|p| p.cursor);
    let offset = match cursor {
        None => 0,
        Some(c) => federation::decode_cursor(kind, &c).ok_or_else(|| {
            ProxyError::new(ErrorKind::InvalidParams, format!("invalid cursor {c:?}"))
        })?,
    };
    let merged = catalog::merged(w, session, kind).await;
    let page = federation::render_page(kind, &merged, offset, w.hub.snap.page_size);
    let hints = merged.hints.unwrap_or(m::CacheHints::SAFE_DEFAULT);
    // `{"tools":[...]...}` → `{"resultType":"complete","ttlMs":N,"cacheScope":"x","_meta":…,"tools":[...]...}`
    let mut r = Vec::with_capacity(page.len() + 160);
    r.extend_from_slice(br#"{"resultType":"complete","ttlMs":"#);
    r.extend_from_slice(hints.ttl_ms.to_string().as_bytes());
    r.extend_from_slice(br#","cacheScope":""#);
    r.extend_from_slice(hints.scope.as_str().as_bytes());
    r.extend_from_slice(b"\",");
    server_info_meta(&mut r);
    r.push(b',');
    r.extend_from_slice(page.get(1..).unwrap_or(b"}"));
    Ok(Answer::Json(Bytes::from(result_object(call.id(), &r))))
}

/// The error a removed or unknown method gets.
pub fn not_found(name: &str) -> ProxyError {
    ProxyError::modern(ModernError::MethodNotFound(name.to_string()))
}

/// Prefix of request state the hub issued (anything else is an upstream's, passed through).
const STATE_PREFIX: &str = "mgrs.";

/// A retry with hub-issued `requestState`: opens it (altered, another principal's, or expired
/// state is refused with `-32602`), hands the client's input to the upstream that asked, and
/// returns the parked answer to pump. `None` when the request carries no hub state.
async fn resume(
    w: &Worker,
    session: &Arc<crate::session::Session>,
    call: &Call<'_>,
) -> Result<Option<Modern>, ProxyError> {
    let retry = m::peek_retry(call.msg.params.unwrap_or("{}")).unwrap_or_default();
    let Some(raw) = retry.request_state else {
        return Ok(None);
    };
    let state: String = serde_json::from_str(raw).unwrap_or_default();
    let Some(sealed) = state.strip_prefix(STATE_PREFIX) else {
        return Ok(None);
    };
    let refused = |why: &str| {
        ProxyError::new(
            ErrorKind::InvalidParams,
            format!("requestState refused: {why}"),
        )
    };
    let plain = w
        .hub
        .state_keys
        .open(&super::relay::state_aad(&session.principal), sealed)
        .map_err(|_| refused("it was altered, or issued to another principal"))?;
    #[derive(serde::Deserialize)]
    struct State {
        t: u64,
        s: String,
        e: u64,
    }
    let st: State = serde_json::from_slice(&plain).map_err(|_| refused("unreadable"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if st.s != *session.id || st.e < now {
        return Err(refused("it expired or belongs to another client"));
    }
    let parked = session.state.lock().suspended.remove(&st.t);
    let Some(parked) = parked else {
        return Err(refused(
            "the call it continues is gone (expired, or already resumed)",
        ));
    };
    #[derive(serde::Deserialize)]
    struct Responses<'a> {
        #[serde(borrow)]
        input: Option<&'a serde_json::value::RawValue>,
    }
    let value = retry
        .input_responses
        .and_then(|r| serde_json::from_str::<Responses<'_>>(r).ok())
        .and_then(|r| r.input);
    let Some(value) = value else {
        // Nothing to give the upstream yet: keep waiting for a retry that has it.
        session.park(st.t, parked);
        return Err(ProxyError::new(
            ErrorKind::InvalidParams,
            "inputResponses.input is required to continue this call",
        ));
    };
    let us = session.state.lock().upstreams[parked.upstream].clone();
    let Some(us) = us.filter(|us| us.generation == parked.generation) else {
        return Err(ProxyError::new(
            ErrorKind::UpstreamSessionLost,
            format!(
                "upstream '{}' lost the session this call ran in",
                w.upstream(parked.upstream).name
            ),
        ));
    };
    let mut answer = br#"{"jsonrpc":"2.0","id":"#.to_vec();
    answer.extend_from_slice(parked.asked_id.as_bytes());
    answer.extend_from_slice(b",\"result\":");
    answer.extend_from_slice(value.get().as_bytes());
    answer.push(b'}');
    let up = w.upstream(parked.upstream);
    if let Err(e) = crate::upstream::post(
        &w.pool,
        up,
        us.replica,
        Some(&us),
        &answer,
        crate::upstream::Resend::Safe,
    )
    .await
    {
        return Err(crate::hub::upstream_failure(
            w,
            parked.upstream,
            us.replica,
            &e,
        ));
    }
    let flow = super::relay::Flow {
        u: parked.upstream,
        replica: parked.replica,
        generation: parked.generation,
        upstream_id: parked.upstream_id,
        modern: false,
        log_level: parked.log_level,
        guard: parked.guard,
    };
    Ok(Some(Modern::Resume(
        flow,
        super::relay::Source::Remote(parked.events),
    )))
}
