//! The call guard: what a tool's policy rule asks of an allowed `tools/call` around forwarding.
//! Sits between `policy::tool_call` and `forward` on the request path (and again in `relay`, on
//! the result):
//!
//! - **cache** (`cache_ttl_seconds`): a successful result is kept per (principal, upstream,
//!   tool, arguments) for the TTL, and the same call by the same principal is answered from it
//!   without reaching the upstream. Never shared across principals (upstream credentials and the
//!   user assertion may differ per principal); `input_required` and `isError` results are not kept.
//! - **max execution time** (`max_execution_timeout_ms`): the upstream call is bounded; past the
//!   bound the upstream is sent `notifications/cancelled` and the client gets a tool error saying
//!   so (a JSON answer and a streamed one alike).
//! - **guardrails**: the rule's `redact` rules, then every guardrail the embedding registered
//!   ([`crate::Extensions`]), run on the final result before its first byte leaves the hub; a
//!   `Block` turns it into a tool error, and every redaction or block is audited.
//!
//! A call whose rule asks none of this (or a hub without governance) has no guard and goes
//! straight to `forward`: nothing here is on the ungoverned hot path.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use governance::audit::{AuditKind, AuditRecord};
use governance::policy::ToolRule;
use governance::redact::{Guardrail, GuardrailContext, GuardrailDecision, Redactor};
use governance::Principal;

use super::route::Target;
use super::{Answer, Call};
use crate::error::ProxyError;
use crate::hub::Worker;
use crate::session::{Session, UpstreamSession};

/// The guard of one call (cheap to clone: a few `Arc`s).
#[derive(Clone)]
pub struct Guard {
    upstream: usize,
    tool: Arc<str>,
    principal: Principal,
    session: Arc<str>,
    timeout: Option<Duration>,
    redactor: Option<Arc<Redactor>>,
    /// The cache key text and the TTL.
    cache: Option<(Arc<str>, Duration)>,
    /// Whether registered guardrails run (only with governance; they are per hub).
    extra: bool,
}

impl Guard {
    /// The guard `rule` asks for on this call, or `None` when it asks nothing.
    pub fn for_call(
        w: &Worker,
        principal: &Principal,
        session: &Session,
        call: &Call<'_>,
        target: &Target,
        rule: Option<&ToolRule>,
    ) -> Option<Guard> {
        let g = w.hub.gov.get()?;
        let extra = !g.guardrails.is_empty();
        let rule = rule?;
        let ttl = rule.cache_ttl.filter(|t| !t.is_zero());
        if rule.max_execution_timeout.is_none()
            && rule.redactor.is_none()
            && ttl.is_none()
            && !extra
        {
            return None;
        }
        let tool: Arc<str> = Arc::from(target.tool.as_deref().unwrap_or(""));
        let cache = ttl.map(|t| {
            let mut k = String::new();
            k.push_str(principal.binding());
            k.push('\0');
            k.push_str(&w.hub.snap.upstreams[target.upstream].name);
            k.push('\0');
            k.push_str(&tool);
            k.push('\0');
            k.push_str(super::audit::arguments(call));
            (Arc::<str>::from(k), t)
        });
        Some(Guard {
            upstream: target.upstream,
            tool,
            principal: principal.clone(),
            session: session.id.clone(),
            timeout: rule.max_execution_timeout,
            redactor: rule.redactor.clone(),
            cache,
            extra,
        })
    }

    /// The bound on the upstream call, if the rule sets one.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The tool error for a call that ran past its bound.
    pub fn timed_out(&self, id: &str) -> Bytes {
        let ms = self.timeout.map_or(0, |t| t.as_millis());
        crate::gov::tool_error(
            id,
            &format!(
                "{} exceeded its maximum execution time of {ms} ms (policy); the upstream was told to cancel",
                self.tool
            ),
        )
    }
}

/// Forwards a call under its guard: from the cache when it may, bounded in time, its JSON result
/// through the guardrails (a streamed result carries the guard to the relay).
///
/// # Errors
/// As [`super::forward::forward`].
pub async fn forward(
    w: &Worker,
    session: &Arc<Session>,
    principal: &Principal,
    call: &Call<'_>,
    target: &Target,
    us: UpstreamSession,
    guard: Option<Guard>,
) -> Result<Answer, ProxyError> {
    let Some(guard) = guard else {
        return super::forward::forward(w, session, principal, call, target, us).await;
    };
    let id = call.id();
    if let Some(hit) = cached(w, &guard, id) {
        tracing::debug!(tool = %guard.tool, "answered from the result cache");
        return Ok(Answer::Json(hit));
    }
    let generation = us.generation;
    let run = super::forward::forward(w, session, principal, call, target, us);
    let answer = match guard.timeout {
        Some(t) => {
            if let Ok(a) = monoio::time::timeout(t, run).await {
                a?
            } else {
                session.state.lock().inflight.remove(id);
                super::relay::cancel_upstream(
                    w,
                    session,
                    target.upstream,
                    generation,
                    id,
                    "the call exceeded the tool's maximum execution time",
                )
                .await;
                audit(
                    w,
                    &guard,
                    AuditKind::Denied,
                    "maximum execution time exceeded",
                );
                return Ok(Answer::Json(guard.timed_out(id)));
            }
        }
        None => run.await?,
    };
    Ok(match answer {
        Answer::Json(b) => Answer::Json(finish(w, &guard, id, b)),
        Answer::Stream(mut s) => {
            s.guard = Some(Box::new(guard));
            Answer::Stream(s)
        }
        other => other,
    })
}

/// The final result of a guarded call, ready for the client: guardrails applied (a block
/// becomes a tool error), then kept in the cache when the rule says so.
pub fn finish(w: &Worker, guard: &Guard, id: &str, result: Bytes) -> Bytes {
    let Some(g) = w.hub.gov.get() else {
        return result;
    };
    let mut out = result;
    let ctx = GuardrailContext {
        upstream: &w.hub.snap.upstreams[guard.upstream].name,
        tool: &guard.tool,
        principal: &guard.principal,
    };
    let rails = guard
        .redactor
        .iter()
        .map(|r| &**r as &dyn Guardrail)
        .chain(g.guardrails.iter().filter(|_| guard.extra).map(|r| &**r));
    for rail in rails {
        let mut bytes = out.to_vec();
        match rail.on_result(&ctx, &mut bytes) {
            GuardrailDecision::Pass { modified: false } => {}
            GuardrailDecision::Pass { modified: true } => {
                audit(w, guard, AuditKind::Guardrail, "result redacted");
                out = Bytes::from(bytes);
            }
            GuardrailDecision::Block { reason } => {
                tracing::info!(tool = %guard.tool, %reason, "a guardrail blocked a result");
                audit(
                    w,
                    guard,
                    AuditKind::Guardrail,
                    &format!("blocked: {reason}"),
                );
                return crate::gov::tool_error(
                    id,
                    &format!("the result was withheld by a guardrail: {reason}"),
                );
            }
        }
    }
    if let Some((key, ttl)) = &guard.cache {
        g.results.put(key, *ttl, &out);
    }
    out
}

/// A cached result for this call, under the caller's request id.
fn cached(w: &Worker, guard: &Guard, id: &str) -> Option<Bytes> {
    let (key, _) = guard.cache.as_ref()?;
    let result = w.hub.gov.get()?.results.get(key)?;
    Some(Bytes::from(mcp_wire::jsonrpc::result_object(id, &result)))
}

fn audit(w: &Worker, guard: &Guard, kind: AuditKind, reason: &str) {
    let Some(g) = w.hub.gov.get() else { return };
    let mut r = AuditRecord::new(kind);
    r.principal = Some(guard.principal.binding().to_string());
    r.session = Some(guard.session.to_string());
    r.upstream = Some(w.hub.snap.upstreams[guard.upstream].name.to_string());
    r.tool = Some(guard.tool.to_string());
    r.reason = Some(reason.to_string());
    g.audit(r);
}
