//! Stage `audit`: the last stage, run for every message on success and on error (pingora's
//! logging phase). Every `tools/call` becomes a record of the signed, hash-chained audit log
//! (principal, session, upstream, tool, SHA-256 of the arguments, outcome, latency); the policy
//! stage records its own decisions (denials, hidden tools called, rate limits, approvals). The
//! log is written by its own thread: submitting never blocks a worker. Without an audit log
//! configured nothing is built.

use super::{Call, Ctx};
use crate::hub::Worker;
use governance::audit::{AuditKind, AuditRecord};
use mcp_wire::mcp::method;

/// Records one message.
pub fn record(w: &Worker, cx: &Ctx<'_>, call: &Call<'_>) {
    let Some(g) = w.hub.gov.get() else { return };
    if g.audit.is_none() || call.msg.method.as_deref() != Some(method::TOOLS_CALL) {
        return;
    }
    let mut r = AuditRecord::new(AuditKind::ToolCall);
    r.principal = Some(cx.principal.binding().to_string());
    r.session = cx.session.as_deref().map(|s| s.id.to_string());
    r.upstream = call
        .upstream
        .map(|u| w.hub.snap.upstreams[u].name.to_string());
    r.tool = call
        .tool
        .as_deref()
        .map(str::to_string)
        .or_else(|| call.msg.name.as_ref().map(|n| n.value.to_string()));
    r.args_sha256 = Some(governance::audit::argument_digest(
        arguments(call).as_bytes(),
    ));
    r.outcome = Some(call.outcome.to_string());
    r.latency_us = Some(u64::try_from(cx.started.elapsed().as_micros()).unwrap_or(u64::MAX));
    r.request_id = call.msg.id.map(str::to_string);
    if !g.audit(r) {
        tracing::warn!("audit record dropped: the audit log refused it");
    }
}

/// The raw `params.arguments` of a call (`{}` when absent).
pub fn arguments<'a>(call: &Call<'a>) -> &'a str {
    #[derive(serde::Deserialize)]
    struct P<'a> {
        #[serde(borrow)]
        arguments: Option<&'a serde_json::value::RawValue>,
    }
    call.msg
        .params
        .and_then(|p| serde_json::from_str::<P<'_>>(p).ok())
        .and_then(|p| p.arguments)
        .map_or("{}", |a| a.get())
}
