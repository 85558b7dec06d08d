//! Stage `policy`: whether this principal may do this (DESIGN.md §8), in two places on the path:
//!
//! - [`admit`], right after `identify` and before the body is looked at: the per-principal rate
//!   limit (HTTP 429 with `Retry-After`);
//! - [`tool_call`], once `route` has resolved a `tools/call` to (upstream, tool): visibility (a
//!   tool the principal may not use is "unknown", exactly like one that does not exist), a
//!   missing scope (403 `insufficient_scope`), the per-(principal, tool) rate limit and the loop
//!   lock (tool errors saying so), argument validation against the tool's `inputSchema` (a tool
//!   error naming the failing path; the upstream never sees the call), an audit log that cannot
//!   be written in fail-closed mode, and the approval gate (the call is held).
//!
//! Lists are filtered by the same rules (see [`crate::catalog::merged`], keyed by visibility
//! class). Every decision but "allowed" is audited here. Without governance configured every
//! call is allowed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use governance::audit::{AuditKind, AuditRecord};
use governance::policy::{check_call, CallDecision, ToolRule};
use mcp_wire::mcp::method;

use super::identify::Principal;
use super::route::Target;
use super::{Answer, Call, Ctx};
use crate::error::{ErrorKind, ProxyError};
use crate::gov::{tool_error, Gov};
use crate::hub::Worker;
use crate::session::Session;

/// The per-principal rate limit, before anything else is done for the request.
///
/// # Errors
/// `TooManyRequests` (429) with `Retry-After`.
pub fn admit(w: &Worker, principal: &Principal) -> Result<(), ProxyError> {
    let Some(g) = w.hub.gov.get() else {
        return Ok(());
    };
    let Some(spec) = &g.policy.principal_rate else {
        return Ok(());
    };
    if let Err(e) = g.limiter.check_principal(principal, spec) {
        g.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut r = AuditRecord::new(AuditKind::RateLimited);
        r.principal = Some(principal.binding().to_string());
        r.reason = Some("per-principal rate limit".into());
        g.audit(r);
        let mut err = ProxyError::new(
            ErrorKind::TooManyRequests,
            format!(
                "rate limit of {} reached: retry after {} s",
                principal.binding(),
                e.retry_after_secs()
            ),
        );
        err.header = Some(Box::new(("Retry-After", e.retry_after_secs().to_string())));
        return Err(err);
    }
    Ok(())
}

/// Records the principal's visibility class in the session, so the lists `route` serves show
/// exactly the tools this principal may use.
pub fn classify(w: &Worker, cx: &Ctx<'_>, session: &Session) {
    if let Some(g) = w.hub.gov.get() {
        let class = g.policy.classify(&cx.principal);
        let mut st = session.state.lock();
        if st.vis != Some(class) {
            st.vis = Some(class);
        }
    }
}

/// What the policy says of a routed call.
// Returned once per call and matched at once; boxing the answer would add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Verdict<'g> {
    /// Forward it (with the matching rule, when governance is configured).
    Go(Option<&'g ToolRule>),
    /// Answer it without forwarding (a denial the model can read).
    Answer(Answer),
    /// Hold it for an operator.
    Hold(&'g ToolRule),
}

/// Decides a routed `tools/call` (other methods pass).
///
/// # Errors
/// A hidden tool is `InvalidParams` "unknown tool" (indistinguishable from a missing one); a
/// missing scope is 403 with its challenge; an unwritable audit log (fail-closed) is
/// `Internal`.
pub async fn tool_call<'g>(
    w: &'g Worker,
    cx: &Ctx<'_>,
    call: &Call<'_>,
    target: &Target,
    session: &Arc<Session>,
) -> Result<Verdict<'g>, ProxyError> {
    let Some(g) = w.hub.gov.get() else {
        return Ok(Verdict::Go(None));
    };
    if call.msg.method.as_deref() != Some(method::TOOLS_CALL) {
        return Ok(Verdict::Go(None));
    }
    let Some(tool) = target.tool.as_deref() else {
        return Ok(Verdict::Go(None));
    };
    let upstream = &*w.hub.snap.upstreams[target.upstream].name;
    let exposed = call.msg.name.as_ref().map_or(tool, |n| &*n.value);
    let record = |kind: AuditKind, reason: String| {
        let mut r = AuditRecord::new(kind);
        r.principal = Some(cx.principal.binding().to_string());
        r.session = Some(session.id.to_string());
        r.upstream = Some(upstream.to_string());
        r.tool = Some(tool.to_string());
        r.reason = Some(reason);
        r.request_id = call.msg.id.map(str::to_string);
        g.audit(r);
    };
    if !g.audit_ready() {
        g.stats.denied.fetch_add(1, Ordering::Relaxed);
        return Err(ProxyError::new(
            ErrorKind::Internal,
            "the audit log cannot be written, and tool calls do not run unaudited (audit.on_failure: closed)",
        ));
    }
    let class = g.policy.classify(&cx.principal);
    let decision = check_call(
        &g.policy,
        &g.table,
        &g.limiter,
        &g.loops,
        &cx.principal,
        &class,
        &session.id,
        upstream,
        tool,
    );
    let rule = match decision {
        CallDecision::Hidden => {
            g.stats.denied.fetch_add(1, Ordering::Relaxed);
            record(
                AuditKind::HiddenCalled,
                "not visible to this principal".into(),
            );
            return Err(ProxyError::new(
                ErrorKind::InvalidParams,
                format!("unknown tool: {exposed}"),
            ));
        }
        CallDecision::InsufficientScope(rule) => {
            g.stats.denied.fetch_add(1, Ordering::Relaxed);
            let needed: Vec<&str> = rule.required_scopes.iter().map(|s| &**s).collect();
            record(
                AuditKind::Denied,
                format!("needs scope {}", needed.join(" ")),
            );
            let mut e = ProxyError::new(
                ErrorKind::Unauthorized(403),
                format!("insufficient scope: {exposed} needs {}", needed.join(" ")),
            );
            if let Some(auth) = &g.auth {
                e.header = Some(Box::new((
                    "WWW-Authenticate",
                    auth.challenge_403(&needed, &cx.principal.scopes, "this tool needs more scope"),
                )));
            }
            return Err(e);
        }
        CallDecision::RateLimited(e) => {
            g.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            let why = format!(
                "rate limit for {exposed} reached: retry after {} s",
                e.retry_after_secs()
            );
            record(AuditKind::RateLimited, why.clone());
            return Ok(Verdict::Answer(Answer::Json(tool_error(call.id(), &why))));
        }
        CallDecision::LoopLimited(e) => {
            g.stats.denied.fetch_add(1, Ordering::Relaxed);
            let why = format!(
                "loop limit: at most {} tool calls per session in {} s; retry in {} s",
                e.max_steps,
                e.window.as_secs(),
                e.retry_after.as_secs().max(1)
            );
            record(AuditKind::LoopLimited, why.clone());
            return Ok(Verdict::Answer(Answer::Json(tool_error(call.id(), &why))));
        }
        CallDecision::Allowed(rule) | CallDecision::NeedsApproval(rule) => rule,
    };
    if rule.validate_arguments {
        if let Some(answer) = validate(w, g, call, target, session, tool).await {
            g.stats.denied.fetch_add(1, Ordering::Relaxed);
            record(
                AuditKind::SchemaRejected,
                "arguments do not match inputSchema".into(),
            );
            return Ok(Verdict::Answer(answer));
        }
    }
    if rule.requires_approval {
        return Ok(Verdict::Hold(rule));
    }
    Ok(Verdict::Go(Some(rule)))
}

/// Validates the call's arguments against the tool's `inputSchema` (compiled once per catalog
/// copy); `Some(tool error)` when they do not match.
async fn validate(
    w: &Worker,
    g: &Gov,
    call: &Call<'_>,
    target: &Target,
    session: &Arc<Session>,
    tool: &str,
) -> Option<Answer> {
    let (schema, version) = crate::catalog::tool_schema(w, session, target.upstream, tool).await?;
    let key = governance::schema::SchemaKey {
        upstream: Arc::from(&*w.hub.snap.upstreams[target.upstream].name),
        tool: Arc::from(tool),
        version,
    };
    let args = super::audit::arguments(call);
    match g.schemas.check(&key, &schema, Some(args.as_bytes())) {
        Ok(()) => None,
        Err(e) => Some(Answer::Json(tool_error(
            call.id(),
            &format!("invalid arguments: {e}"),
        ))),
    }
}
