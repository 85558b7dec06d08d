//! Stage `session` (legacy era): which client session a request belongs to.
//!
//! `initialize` is the only message that creates a session ([`initialize`]; the hub answers it
//! itself and mints the id). Every other request must carry `Mcp-Session-Id` naming a live
//! session bound to the same principal ([`find`]; another principal's session is unknown: 404).
//! With hub replicas, a session this replica does not hold is served by its owner in one hop,
//! or taken over from the shared store when the owner is gone ([`route_to_owner`]). DELETE ends
//! a session here and upstream ([`end`]).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use h1::Request;
use mcp_wire::jsonrpc::result_object;
use mcp_wire::mcp as mcpv;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::identify::Principal;
use super::{reply_error, Answer, Call, Conn, Ctx, VERSION};
use crate::error::{ErrorKind, ProxyError};
use crate::hub::{lifecycle, Worker};
use crate::session::Session;

/// Hub replicas (DESIGN.md §6): a request for a session this replica does not hold goes to
/// the session's owner in one hop (`Some(keep)`: answered there); when this replica is the
/// owner, or the request was already forwarded once (loop guard), the session is taken over
/// from the shared store and the request continues here (`None`; no record → 404 as usual).
pub async fn route_to_owner(
    w: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request,
    principal: &Principal,
) -> Option<bool> {
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
                    w.metrics.forwarded.fetch_add(1, Ordering::Relaxed);
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
    crate::persist::take_over(&w.hub, sid, principal.binding()).await;
    None
}

/// The session the request names, which must belong to the request's principal.
///
/// # Errors
/// `MissingSession` (400) without `Mcp-Session-Id`; `UnknownSession` (404) for an unknown,
/// expired or deleted session, or one bound to another principal.
pub fn find(w: &Worker, cx: &mut Ctx<'_>) -> Result<Arc<Session>, ProxyError> {
    if let Some(s) = &cx.session {
        return Ok(s.clone());
    }
    let sid = cx
        .req
        .head
        .headers
        .get_str("mcp-session-id")
        .ok_or_else(|| {
            ProxyError::new(
                ErrorKind::MissingSession,
                "missing Mcp-Session-Id header: send initialize first",
            )
        })?;
    let s = w
        .hub
        .sessions
        .get(sid)
        .filter(|s| *s.principal == *cx.principal.binding())
        .ok_or_else(|| {
            ProxyError::new(
                ErrorKind::UnknownSession,
                "unknown or expired session: initialize again",
            )
        })?;
    cx.session = Some(s.clone());
    Ok(s)
}

/// Ends the session the request names (DELETE): removed here and from the store, and every
/// upstream session deleted.
///
/// # Errors
/// As [`find`].
pub async fn end(w: &Worker, cx: &mut Ctx<'_>) -> Result<(), ProxyError> {
    if cx.req.head.headers.get_str("mcp-session-id").is_none() {
        return Err(ProxyError::new(
            ErrorKind::MissingSession,
            "DELETE needs the Mcp-Session-Id header",
        ));
    }
    let s = find(w, cx)?;
    let Some(session) = w.hub.sessions.remove(&s.id) else {
        return Err(ProxyError::new(
            ErrorKind::UnknownSession,
            "unknown or expired session",
        ));
    };
    crate::persist::forget(&w.hub, &session.id, &session.principal);
    lifecycle::close_all(w, &session).await;
    tracing::debug!(session = %session.id, "session deleted");
    Ok(())
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

/// `initialize`: the hub answers it itself and opens a session bound to the caller; upstream
/// sessions follow lazily.
///
/// # Errors
/// `InvalidParams` for unreadable params or a missing `protocolVersion`.
pub fn initialize(w: &Worker, cx: &mut Ctx<'_>, call: &Call<'_>) -> Result<Answer, ProxyError> {
    let id = call.id();
    let params: InitParams<'_> =
        serde_json::from_str(call.msg.params.unwrap_or("{}")).map_err(|e| {
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
    let session = Session::with_id(
        sid,
        cx.principal.binding(),
        version,
        caps,
        info,
        w.hub.snap.upstreams.len(),
    );
    w.hub.sessions.insert(session.clone());
    crate::persist::save(&w.hub, &session);
    let json = Bytes::from(result_object(id, &initialize_result(w, version)));
    tracing::debug!(session = %session.id, version, "session opened");
    let sid = session.id.clone();
    cx.session = Some(session);
    Ok(Answer::Opened { sid, json })
}

/// The hub's `InitializeResult`: what it relays, and instructions naming the federated servers.
fn initialize_result(w: &Worker, version: &str) -> Vec<u8> {
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
    let instructions = if names.is_empty() {
        "meshgate has no upstream MCP servers configured.".to_string()
    } else {
        format!(
            "meshgate federates these MCP servers: {}. {naming}",
            names.join(", ")
        )
    };
    let mut result = Vec::with_capacity(512);
    result.extend_from_slice(b"{\"protocolVersion\":\"");
    result.extend_from_slice(version.as_bytes());
    result.extend_from_slice(br#"","capabilities":{"logging":{},"completions":{},"prompts":{"listChanged":true},"resources":{"subscribe":true,"listChanged":true},"tools":{"listChanged":true}},"serverInfo":{"name":"meshgate","version":""#);
    result.extend_from_slice(VERSION.as_bytes());
    result.extend_from_slice(b"\"},\"instructions\":");
    mcp_wire::jsonrpc::push_json_str(&mut result, &instructions);
    result.push(b'}');
    result
}

/// The hub-held session that carries a 2026-07-28 client's requests (no protocol session in
/// that era): one per (principal, declared capabilities), found again on every request with the
/// same envelope, so legacy upstreams keep one upstream session (and one replica) for them.
/// Never named to a client; ends when idle like any session.
pub fn stateless(w: &Worker, cx: &mut Ctx<'_>, env: &super::admit::Envelope<'_>) -> Arc<Session> {
    if let Some(s) = &cx.session {
        return s.clone();
    }
    let binding = cx.principal.binding();
    let mut key = Vec::with_capacity(binding.len() + env.capabilities.len() + 1);
    key.extend_from_slice(binding.as_bytes());
    key.push(0);
    key.extend_from_slice(env.capabilities.as_bytes());
    let id = format!("~{:016x}", crate::ring::hash(&key));
    let found =
        w.hub.stateless.get(&id).filter(|s| {
            *s.principal == *binding && s.client_capabilities.get() == env.capabilities
        });
    let s = found.unwrap_or_else(|| {
        let caps = RawValue::from_string(env.capabilities.to_string())
            .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("{} is JSON"));
        let info = RawValue::from_string(env.info.to_string()).unwrap_or_else(|_| {
            RawValue::from_string(r#"{"name":"unknown","version":"0"}"#.into())
                .expect("literal is JSON")
        });
        let s = Session::stateless(
            Arc::from(id.as_str()),
            binding,
            caps,
            info,
            w.hub.snap.upstreams.len(),
        );
        w.hub.stateless.insert_if_absent(s)
    });
    cx.session = Some(s.clone());
    s
}
