//! Stage `route`: the method table. The hub answers what it owns (`ping`, merged list pages
//! from the [`crate::catalog`], the `logging/setLevel` fan-out) and delivers notifications and
//! the client's answers to server→client requests; everything else is mapped to one upstream:
//! `tools/call` and `prompts/get` by exposed name (rewritten to the upstream's own),
//! `resources/read|subscribe|unsubscribe` by URI (a listed resource or a matching template),
//! `completion/complete` by its prompt name or template URI. Unknown method: `-32601`; unknown
//! tool or prompt: `-32602`; an upstream that is down fails fast, naming it.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use mcp_wire::jsonrpc::result_object;
use mcp_wire::mcp::method;
use mcp_wire::Kind;
use serde::Deserialize;

use super::{Answer, Call};
use crate::catalog;
use crate::error::{ErrorKind, ProxyError};
use crate::federation::{self, ListKind};
use crate::hub::{lifecycle, Worker};
use crate::session::Session;
use crate::upstream;

/// Where a message goes.
pub enum Routed {
    /// The hub answered it.
    Answer(Answer),
    /// It goes to one upstream.
    Upstream(Target),
}

/// A message routed to an upstream.
pub struct Target {
    /// The upstream.
    pub upstream: usize,
    /// The bytes to send (the exposed name replaced by the upstream's own where needed).
    pub body: Bytes,
    /// For `tools/call`: the tool's upstream name (the retry rule reads its annotations).
    pub tool: Option<Arc<str>>,
    /// Bookkeeping once the upstream accepted it.
    pub then: After,
}

/// What the session remembers after a routed request succeeded.
pub enum After {
    /// Nothing.
    Nothing,
    /// A subscription to replay on new upstream sessions.
    Subscribe(String),
    /// A subscription no longer to replay.
    Unsubscribe(String),
}

/// Routes one message of `session`.
///
/// # Errors
/// `MethodNotFound`, `InvalidParams` (unknown tool/prompt, missing name/uri, bad cursor or
/// level), `ResourceNotFound`, `UpstreamUnavailable`, `UnknownResponseId`.
pub async fn route(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    call: &mut Call<'_>,
) -> Result<Routed, ProxyError> {
    match call.msg.kind {
        Kind::Response => return response(w, session, call).await.map(Routed::Answer),
        Kind::Notification => return notification(w, session, call).await.map(Routed::Answer),
        Kind::Request => {}
    }
    let id = call.id();
    let m = call.msg.method.as_deref().unwrap_or("");
    if m == method::PING {
        return Ok(Routed::Answer(Answer::Json(Bytes::from(result_object(
            id, b"{}",
        )))));
    }
    if let Some(kind) = ListKind::from_method(m) {
        return list_page(w, session, kind, call).await.map(Routed::Answer);
    }
    let target = match m {
        method::TOOLS_CALL | method::PROMPTS_GET => {
            let kind = if m == method::TOOLS_CALL {
                ListKind::Tools
            } else {
                ListKind::Prompts
            };
            let Some(name) = &call.msg.name else {
                return Err(ProxyError::new(
                    ErrorKind::InvalidParams,
                    format!("params.name (the {}) is required", what(kind)),
                ));
            };
            let (u, original) = resolve_name(w, session, kind, &name.value).await?;
            let body = rewrite(&call.body, name.span.clone(), &name.value, &original);
            let tool = (kind == ListKind::Tools).then_some(original);
            Target {
                upstream: u,
                body,
                tool,
                then: After::Nothing,
            }
        }
        method::RESOURCES_READ | method::RESOURCES_SUBSCRIBE | method::RESOURCES_UNSUBSCRIBE => {
            let Some(uri) = call.msg.uri.as_deref() else {
                return Err(ProxyError::new(
                    ErrorKind::InvalidParams,
                    "params.uri is required",
                ));
            };
            let u = resolve_uri(w, session, uri).await?;
            let then = match m {
                method::RESOURCES_SUBSCRIBE => After::Subscribe(uri.to_string()),
                method::RESOURCES_UNSUBSCRIBE => After::Unsubscribe(uri.to_string()),
                _ => After::Nothing,
            };
            Target {
                upstream: u,
                body: call.body.clone(),
                tool: None,
                then,
            }
        }
        method::COMPLETION_COMPLETE => {
            if let Some(name) = &call.msg.ref_name {
                let (u, original) =
                    resolve_name(w, session, ListKind::Prompts, &name.value).await?;
                Target {
                    upstream: u,
                    body: rewrite(&call.body, name.span.clone(), &name.value, &original),
                    tool: None,
                    then: After::Nothing,
                }
            } else if let Some(uri) = call.msg.ref_uri.as_deref() {
                Target {
                    upstream: resolve_template(w, session, uri).await?,
                    body: call.body.clone(),
                    tool: None,
                    then: After::Nothing,
                }
            } else {
                return Err(ProxyError::new(
                    ErrorKind::InvalidParams,
                    "params.ref needs a prompt name or a resource template uri",
                ));
            }
        }
        method::LOGGING_SET_LEVEL => return set_level(w, session, call).await.map(Routed::Answer),
        other => {
            return Err(ProxyError::new(
                ErrorKind::MethodNotFound,
                format!("method {other:?} is not served by meshgate"),
            ))
        }
    };
    call.upstream = Some(target.upstream);
    call.tool = target.tool.clone();
    Ok(Routed::Upstream(target))
}

/// Records what a successful routed request changed in the session (subscriptions).
pub fn after_forward(w: &Worker, session: &Session, target: &Target) {
    let u = target.upstream;
    match &target.then {
        After::Nothing => return,
        After::Subscribe(uri) => {
            let mut st = session.state.lock();
            if !st.subscriptions.iter().any(|(su, s)| *su == u && s == uri) {
                st.subscriptions.push((u, uri.clone()));
            }
        }
        After::Unsubscribe(uri) => {
            session
                .state
                .lock()
                .subscriptions
                .retain(|(su, s)| !(*su == u && s == uri));
        }
    }
    crate::persist::save(&w.hub, session);
}

fn what(kind: ListKind) -> &'static str {
    if kind == ListKind::Tools {
        "tool"
    } else {
        "prompt"
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

// === what the hub answers itself ===

async fn list_page(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    kind: ListKind,
    call: &Call<'_>,
) -> Result<Answer, ProxyError> {
    #[derive(Deserialize)]
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
    let m = catalog::merged(w, session, kind).await;
    let page = federation::render_page(kind, &m, offset, w.hub.snap.page_size);
    Ok(Answer::Json(Bytes::from(result_object(call.id(), &page))))
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

/// `logging/setLevel`: remembered in the session (replayed on new upstream sessions) and fanned
/// out to every upstream session that offers logging.
async fn set_level(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    call: &Call<'_>,
) -> Result<Answer, ProxyError> {
    #[derive(Deserialize)]
    struct P {
        level: String,
    }
    let level = serde_json::from_str::<P>(call.msg.params.unwrap_or("{}"))
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
    let body = lifecycle::set_level_body(&level);
    for u in 0..w.hub.snap.upstreams.len() {
        if !w.hub.is_up(u) {
            continue;
        }
        // Opening the upstream session replays the level already; only existing ones need it.
        let existing = session.state.lock().upstreams[u].clone();
        let us = match existing {
            Some(us) => us,
            None => {
                if let Err(e) = super::affinity::upstream_session(w, session, u).await {
                    tracing::warn!(error = %e, "log level not applied to an upstream");
                }
                continue;
            }
        };
        // A 2026-07-28 upstream has no setLevel: the level travels in each request's `_meta`.
        if !us.has_capability("logging") || us.is_modern() {
            continue;
        }
        if let Err(e) =
            upstream::request(&w.pool, w.upstream(u), us.replica, Some(&us), &body).await
        {
            tracing::warn!(upstream = %w.upstream(u).name, error = %e, "logging/setLevel fan-out failed");
        }
    }
    Ok(Answer::Json(Bytes::from(result_object(call.id(), b"{}"))))
}

/// A client notification: `notifications/cancelled` goes to the upstream running that request
/// (and ends the request's relay at once); `notifications/roots/list_changed` to every upstream
/// session; others are accepted and dropped.
async fn notification(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    call: &Call<'_>,
) -> Result<Answer, ProxyError> {
    let m = call.msg.method.as_deref().unwrap_or("");
    let targets: Vec<usize> = match m {
        method::CANCELLED => {
            let st = session.state.lock();
            let hit = call.msg.request_id.and_then(|rid| st.inflight.get(rid));
            if let Some(f) = hit {
                f.cancel.cancel();
            }
            hit.map(|f| f.upstream).into_iter().collect()
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
        // A 2026-07-28 upstream takes no client notifications: a cancel closes the stream
        // (the relay does it), and roots are asked for per request.
        if let Some(us) = us.filter(|us| !us.is_modern()) {
            if let Err(e) = upstream::post(
                &w.pool,
                w.upstream(u),
                us.replica,
                Some(&us),
                &call.body,
                upstream::Resend::Safe,
            )
            .await
            {
                tracing::warn!(upstream = %w.upstream(u).name, method = m, error = %e, "relaying a notification failed");
            }
        }
    }
    Ok(Answer::Accepted)
}

/// The client's answer to a server→client request: back to the upstream that asked, under its
/// original id.
async fn response(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    call: &Call<'_>,
) -> Result<Answer, ProxyError> {
    let id = call.id();
    // An answer to a request the hub itself asked (a modern upstream's input request).
    let waiter = session.state.lock().input_waiters.remove(id);
    if let Some(tx) = waiter {
        let _ = tx.send(call.body.clone());
        return Ok(Answer::Accepted);
    }
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
        return Ok(Answer::Accepted);
    };
    let span = super::relay::id_span(&call.body, id);
    let mut fwd = Vec::with_capacity(call.body.len() + pending.original_id.len());
    fwd.extend_from_slice(&call.body[..span.start]);
    fwd.extend_from_slice(pending.original_id.as_bytes());
    fwd.extend_from_slice(&call.body[span.end..]);
    let up = w.upstream(pending.upstream);
    if let Err(e) = upstream::post(
        &w.pool,
        up,
        us.replica,
        Some(&us),
        &fwd,
        upstream::Resend::Safe,
    )
    .await
    {
        tracing::warn!(upstream = %up.name, error = %e, "delivering the client's answer failed");
    }
    Ok(Answer::Accepted)
}

// === name and URI resolution ===

async fn resolve_name(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    kind: ListKind,
    exposed: &str,
) -> Result<(usize, Arc<str>), ProxyError> {
    let found = match w.hub.naming.split(exposed) {
        Some((u, orig)) => Some((u, Arc::from(orig))),
        None if w.hub.naming.separator.is_none() => {
            match catalog::merged(w, session, kind)
                .await
                .index
                .get(exposed)
                .cloned()
            {
                Some(hit) => Some(hit),
                // Transparent mode: a name no list shows goes to the only upstream serving this
                // capability, which answers for itself (lists may be partial or dynamic).
                None => sole_upstream(w, session, kind.capability())
                    .await
                    .map(|u| (u, Arc::from(exposed))),
            }
        }
        None => None,
    };
    let Some((u, orig)) = found else {
        return Err(ProxyError::new(
            ErrorKind::InvalidParams,
            format!("unknown {}: {exposed}", what(kind)),
        ));
    };
    if !w.hub.is_up(u) {
        return Err(ProxyError::new(
            ErrorKind::UpstreamUnavailable,
            format!(
                "upstream '{}' (serving {} {exposed}) is unavailable",
                w.upstream(u).name,
                what(kind)
            ),
        ));
    }
    Ok((u, orig))
}

/// The one upstream that is up and declared `capability` to this session, if exactly one is
/// (the session's upstream sessions are opened to learn it: the lists may have come from the
/// shared catalog without them).
async fn sole_upstream(w: &Worker, session: &Arc<Session>, capability: &str) -> Option<usize> {
    let mask = w.hub.up_mask();
    let mut found = None;
    for u in (0..w.hub.snap.upstreams.len()).filter(|&u| mask & (1 << u) != 0) {
        let Ok(us) = super::affinity::upstream_session(w, session, u).await else {
            continue;
        };
        if us.has_capability(capability) {
            if found.is_some() {
                return None;
            }
            found = Some(u);
        }
    }
    found
}

async fn resolve_uri(
    w: &Rc<Worker>,
    session: &Arc<Session>,
    uri: &str,
) -> Result<usize, ProxyError> {
    let m = catalog::merged(w, session, ListKind::Resources).await;
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
    let t = catalog::merged(w, session, ListKind::Templates).await;
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
    if let Some(u) = sole_upstream(w, session, "resources").await {
        return Ok(u);
    }
    Err(ProxyError::new(
        ErrorKind::ResourceNotFound,
        format!("no upstream serves resource {uri}"),
    ))
}
