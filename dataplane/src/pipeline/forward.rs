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
    let attempt = async {
        let rule = || resend_rule(w, session, u, target.tool.as_deref());
        let resend = Resend::Ask(&rule);
        match send_once(w, u, &us, &target.body, client_id, &cancel, resend).await {
            Sent::Done(out) => out,
            // The rare path is boxed so the common one's future stays small (it is moved).
            Sent::Lost(e) => {
                Box::pin(failover(w, session, u, &us, target, client_id, &cancel, e)).await
            }
        }
    };
    let mut out = attempt.await;
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
enum Sent {
    /// An answer (or a failure that is not the replica's).
    Done(Result<Answer, ProxyError>),
    /// The replica of the upstream session was lost.
    Lost(UpstreamError),
}

async fn send_once(
    w: &Worker,
    u: usize,
    us: &UpstreamSession,
    body: &bytes::Bytes,
    client_id: &str,
    cancel: &Arc<Cancel>,
    resend: Resend<'_>,
) -> Sent {
    let r = us.replica;
    let out = match upstream::post(&w.pool, w.upstream(u), r, Some(us), body, resend).await {
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
    client_id: &str,
    cancel: &Arc<Cancel>,
    e: UpstreamError,
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
    match send_once(w, u, &new, &target.body, client_id, cancel, Resend::Safe).await {
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
    use super::may_run_twice;

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
