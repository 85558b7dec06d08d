//! Stage `forward`: send a routed request to its upstream session's replica and hand back the
//! answer (a JSON body, or an SSE stream for `relay`). Owns the retry rule.
//!
//! When the replica is lost under the call (refused, timed out, broken, or it answers 404 for
//! the session), the session moves to the next replica on the ring (handshake replayed) and the
//! call fails with an error naming both replicas, unless it may run twice ([`may_run_twice`]):
//! it never reached the replica (the connection was refused), or it is a `tools/call` of a tool
//! annotated `readOnlyHint`/`idempotentHint`. Those are retried once, transparently, on the new
//! replica. The same rule decides whether the connection layer may re-send a request whose
//! pooled connection broke after it was written ([`upstream::Resend`]).
//!
//! The request is registered as in flight for `notifications/cancelled`: a cancel ends the relay
//! at once when the answer streams, and suppresses a JSON answer that arrives after it.

use std::sync::Arc;

use super::relay::StreamSource;
use super::route::Target;
use super::{Answer, Call};
use crate::catalog;
use crate::error::ProxyError;
use crate::hub::lifecycle::{self, replica_bit};
use crate::hub::{failure_kind, upstream_failure, upstream_label, Worker};
use crate::session::{Cancel, Inflight, Session, UpstreamSession};
use crate::upstream::{self, Reply, Resend, UpstreamError};

/// Sends `target` within `us` and returns the answer; fails over as described above.
///
/// # Errors
/// The upstream's failure, naming the upstream and replica(s).
pub async fn forward(
    w: &Worker,
    session: &Arc<Session>,
    principal: &super::identify::Principal,
    call: &Call<'_>,
    target: &Target,
    us: UpstreamSession,
) -> Result<Answer, ProxyError> {
    let u = target.upstream;
    let client_id = call.id();
    let cancel = Arc::new(Cancel::default());
    session.state.lock().inflight.insert(
        client_id.into(),
        Inflight {
            upstream: u,
            cancel: cancel.clone(),
        },
    );
    // A legacy client's request to a 2026-07-28 upstream carries the envelope that upstream
    // needs (the client's capabilities and info from its session, its log level).
    let injected;
    let body = if us.is_modern() && !session.modern {
        let level = session.state.lock().log_level.clone();
        let env = envelope_for(session, level.as_deref());
        injected = with_envelope(&target.body, &env).map(bytes::Bytes::from);
        injected.as_ref().unwrap_or(&target.body)
    } else {
        &target.body
    };
    // No token passthrough: upstream requests are built from scratch; what the upstream gets is
    // its own credential and, when configured, the hub-signed assertion of the user.
    let creds = match w.hub.gov.get().and_then(|g| g.credentials.as_ref()) {
        Some(c) => c
            .headers(&w.upstream(u).name, principal, None)
            .await
            .map_err(|e| {
                ProxyError::new(
                    crate::error::ErrorKind::UpstreamUnavailable,
                    format!("upstream '{}': no credentials: {e}", w.upstream(u).name),
                )
            })?,
        None => Vec::new(),
    };
    let extra: Vec<(&str, &[u8])> = creds.iter().map(|(k, v)| (&**k, v.as_bytes())).collect();
    let extra = &extra[..];
    let attempt = async {
        let rule = || resend_rule(w, session, u, target.tool.as_deref());
        let resend = Resend::Ask(&rule);
        match send_once(
            w,
            u,
            &us,
            body,
            &target.body,
            client_id,
            &cancel,
            resend,
            extra,
        )
        .await
        {
            Sent::Done(out) => out,
            // The rare path is boxed so the common one's future stays small (it is moved).
            Sent::Lost(e) => {
                Box::pin(failover(
                    w, session, u, &us, target, body, client_id, &cancel, e, extra,
                ))
                .await
            }
        }
    };
    // To a 2026-07-28 upstream, closing the request is the cancel: a client's cancel while it
    // has not answered yet drops the request (the `select!` costs instructions, so only here).
    let mut out = if us.is_modern() {
        monoio::select! {
            out = attempt => out,
            _ = cancel.cancelled() => Ok(Answer::Cancelled),
        }
    } else {
        attempt.await
    };
    // Cancelled while the upstream was answering: a JSON answer is not sent (a cancelled
    // request gets no response); a stream's relay sees the flag and ends at once. Waiting for the
    // head is not raced against the cancel: that `select!` cost ~7% of the hub's instructions
    // per call (benches/scripts/instructions-per-call.sh), and the head of an answer that never
    // comes is bounded by the upstream's request timeout.
    if cancel.is_cancelled() && matches!(out, Ok(Answer::Json(_))) {
        out = Ok(Answer::Cancelled);
    }
    if !matches!(out, Ok(Answer::Stream(_))) {
        session.state.lock().inflight.remove(client_id);
    }
    out
}

/// The `_meta` envelope for a legacy session's request to a modern upstream.
pub fn envelope_for(session: &Session, log_level: Option<&str>) -> String {
    let env = crate::hub::lifecycle::envelope(
        session.client_capabilities.get(),
        session.client_info.get(),
    );
    match log_level {
        Some(level) => {
            let mut e = env[..env.len() - 1].to_string();
            e.push_str(",\"io.modelcontextprotocol/logLevel\":");
            let mut lv = Vec::new();
            mcp_wire::jsonrpc::push_json_str(&mut lv, level);
            e.push_str(&String::from_utf8_lossy(&lv));
            e.push('}');
            e
        }
        None => env,
    }
}

/// `body` with the envelope `env` (a JSON object) merged into `params._meta` (created as
/// needed; the request's own `_meta` members, such as its progress token, are kept). `None`
/// when the body is not a JSON-RPC object.
pub fn with_envelope(body: &[u8], env: &str) -> Option<Vec<u8>> {
    use serde::Deserialize;
    use serde_json::value::RawValue;
    #[derive(Deserialize)]
    struct Top<'a> {
        #[serde(borrow)]
        params: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Params<'a> {
        #[serde(borrow, rename = "_meta")]
        meta: Option<&'a RawValue>,
    }
    let span = |outer: &[u8], inner: &str| {
        let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
        start..start + inner.len()
    };
    let inner = env.strip_prefix('{')?.strip_suffix('}')?;
    let top: Top<'_> = serde_json::from_slice(body).ok()?;
    let mut out = Vec::with_capacity(body.len() + env.len() + 24);
    let Some(params) = top.params.filter(|p| p.get().starts_with('{')) else {
        let open = body.iter().position(|b| *b == b'{')?;
        let empty = body[open + 1..]
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'}');
        out.extend_from_slice(&body[..=open]);
        out.extend_from_slice(b"\"params\":{\"_meta\":");
        out.extend_from_slice(env.as_bytes());
        out.push(b'}');
        if !empty {
            out.push(b',');
        }
        out.extend_from_slice(&body[open + 1..]);
        return Some(out);
    };
    let ps = span(body, params.get());
    let p: Params<'_> = serde_json::from_str(params.get()).ok()?;
    let (at, text) = match p.meta.filter(|m| m.get().starts_with('{')) {
        // Into the existing `_meta` object, ahead of its own members.
        Some(meta) => {
            let ms = span(body, meta.get());
            let empty = meta.get()[1..].trim_start().starts_with('}');
            (
                ms.start + 1,
                format!("{inner}{}", if empty { "" } else { "," }),
            )
        }
        None => {
            let empty = params.get()[1..].trim_start().starts_with('}');
            (
                ps.start + 1,
                format!("\"_meta\":{env}{}", if empty { "" } else { "," }),
            )
        }
    };
    out.extend_from_slice(&body[..at]);
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&body[at..]);
    Some(out)
}

/// `body` with the members `members` (`"k":v,…`, no braces) put first in its `params` object
/// (created when absent). `None` when the body is not a JSON-RPC object.
pub fn with_params(body: &[u8], members: &str) -> Option<Vec<u8>> {
    // The same splice as the envelope, one level up: into `params` itself.
    use serde::Deserialize;
    use serde_json::value::RawValue;
    #[derive(Deserialize)]
    struct Top<'a> {
        #[serde(borrow)]
        params: Option<&'a RawValue>,
    }
    let top: Top<'_> = serde_json::from_slice(body).ok()?;
    let mut out = Vec::with_capacity(body.len() + members.len() + 16);
    match top.params.filter(|p| p.get().starts_with('{')) {
        Some(p) => {
            let start = p.get().as_ptr() as usize - body.as_ptr() as usize;
            let empty = p.get()[1..].trim_start().starts_with('}');
            out.extend_from_slice(&body[..=start]);
            out.extend_from_slice(members.as_bytes());
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(&body[start + 1..]);
        }
        None => {
            let open = body.iter().position(|b| *b == b'{')?;
            out.extend_from_slice(&body[..=open]);
            out.extend_from_slice(b"\"params\":{");
            out.extend_from_slice(members.as_bytes());
            out.extend_from_slice(b"},");
            out.extend_from_slice(&body[open + 1..]);
        }
    }
    Some(out)
}

/// Whether a call may run twice: it never reached the replica (`unreachable`), or it is a
/// `tools/call` of a tool whose annotations say `readOnlyHint` or `idempotentHint` (`safe_tool`).
/// Everything else is sent at most once.
pub fn may_run_twice(unreachable: bool, safe_tool: Option<bool>) -> bool {
    unreachable || safe_tool == Some(true)
}

/// Whether the connection layer may re-send this request on a fresh connection after a pooled
/// one broke once the request was written: by [`may_run_twice`], from the cached catalog.
fn resend_rule(w: &Worker, session: &Session, u: usize, tool: Option<&str>) -> bool {
    let safe = tool.and_then(|t| catalog::cached_retry_safe(w, session, u, t));
    may_run_twice(false, safe)
}

/// What one attempt of [`forward`] came to.
// Moved once per request; boxing the answer would cost an allocation per call instead.
#[allow(clippy::large_enum_variant)]
enum Sent {
    /// An answer (or a failure that is not the replica's).
    Done(Result<Answer, ProxyError>),
    /// The replica of the upstream session was lost.
    Lost(UpstreamError),
}

#[allow(clippy::too_many_arguments)]
async fn send_once(
    w: &Worker,
    u: usize,
    us: &UpstreamSession,
    body: &bytes::Bytes,
    request: &bytes::Bytes,
    client_id: &str,
    cancel: &Arc<Cancel>,
    resend: Resend<'_>,
    extra: &[(&str, &[u8])],
) -> Sent {
    let r = us.replica;
    let out =
        match upstream::post_with(&w.pool, w.upstream(u), r, Some(us), body, resend, extra).await {
            Ok(Reply::Json {
                status: 200, body, ..
            }) => Ok(Answer::Json(body)),
            Ok(Reply::Json { status, body, .. }) => Ok(Answer::Status(status, body)),
            Ok(Reply::Stream { conn, .. }) => Ok(Answer::Stream(StreamSource {
                upstream: u,
                replica: r,
                generation: us.generation,
                conn,
                client_id: client_id.into(),
                cancel: cancel.clone(),
                modern: us.is_modern(),
                request: request.clone(),
                guard: None,
            })),
            Ok(Reply::Status(s)) => Err(ProxyError::new(
                crate::error::ErrorKind::UpstreamProtocol,
                format!(
                    "{} answered a request with HTTP {s} and no response",
                    upstream_label(w.upstream(u), r)
                ),
            )),
            // A broken connection (even one that broke after the request was written, which is
            // then not re-sent unless it may run twice) means the replica may be gone: fail over.
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
    w: &Worker,
    session: &Arc<Session>,
    u: usize,
    lost: &UpstreamSession,
    target: &Target,
    body: &bytes::Bytes,
    client_id: &str,
    cancel: &Arc<Cancel>,
    e: UpstreamError,
    extra: &[(&str, &[u8])],
) -> Result<Answer, ProxyError> {
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
    lifecycle::drop_upstream_session(&w.hub, session, u, lost.generation);
    let moved = lifecycle::open(w, session, u, replica_bit(lost.replica)).await;
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
    let safe_tool = match target.tool.as_deref() {
        Some(t) if !e.is_unreachable() => Some(catalog::tool_retry_safe(w, session, u, t).await),
        _ => None,
    };
    if !may_run_twice(e.is_unreachable(), safe_tool) {
        return Err(ProxyError::new(
            failure_kind(&e),
            format!("{what}; the call was not completed (it may or may not have run); the session moved to replica {to}; retry"),
        ));
    }
    tracing::info!(upstream = %up.name, from = %from, to = %to, "call retried on the session's new replica");
    match send_once(
        w,
        u,
        &new,
        body,
        &target.body,
        client_id,
        cancel,
        Resend::Safe,
        extra,
    )
    .await
    {
        Sent::Done(out) => out,
        Sent::Lost(e2) => {
            let err = upstream_failure(w, u, new.replica, &e2);
            lifecycle::drop_upstream_session(&w.hub, session, u, new.generation);
            Err(ProxyError::new(
                err.kind,
                format!("{what}; retried on replica {to}, which failed too: {e2}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{may_run_twice, with_envelope};

    #[test]
    fn the_envelope_is_merged_into_meta() {
        let env = r#"{"v":1}"#;
        let cases = [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x"}"#,
                r#"{"params":{"_meta":{"v":1}},"jsonrpc":"2.0","id":1,"method":"x"}"#,
            ),
            (
                r#"{"id":1,"params":{}}"#,
                r#"{"id":1,"params":{"_meta":{"v":1}}}"#,
            ),
            (
                r#"{"id":1,"params":{"name":"t"}}"#,
                r#"{"id":1,"params":{"_meta":{"v":1},"name":"t"}}"#,
            ),
            (
                r#"{"id":1,"params":{"_meta":{"progressToken":7},"name":"t"}}"#,
                r#"{"id":1,"params":{"_meta":{"v":1,"progressToken":7},"name":"t"}}"#,
            ),
            (
                r#"{"id":1,"params":{"_meta":{}}}"#,
                r#"{"id":1,"params":{"_meta":{"v":1}}}"#,
            ),
        ];
        for (body, want) in cases {
            let got = with_envelope(body.as_bytes(), env).unwrap();
            assert_eq!(std::str::from_utf8(&got).unwrap(), want, "{body}");
            serde_json::from_slice::<serde_json::Value>(&got).unwrap();
        }
        assert!(with_envelope(b"not json", env).is_none());
    }

    #[test]
    fn the_retry_rule() {
        // Never delivered: always safe.
        assert!(may_run_twice(true, None));
        assert!(may_run_twice(true, Some(false)));
        // Delivered or maybe delivered: only an annotated tool.
        assert!(may_run_twice(false, Some(true)));
        assert!(!may_run_twice(false, Some(false)));
        assert!(!may_run_twice(false, None));
    }
}
