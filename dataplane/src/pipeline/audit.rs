//! Stage `audit`: the last stage, run for every message on success and on error (pingora's
//! logging phase). It builds an [`AuditRecord`] and hands it to the hub's [`AuditSink`]; the
//! sink must never block a worker (a real one queues to a writer thread and counts drops). Until
//! an audit log is configured the sink is [`NoAudit`], which drops records without building
//! them.

use std::time::Duration;

use super::{Call, Ctx};
use crate::hub::Worker;
use crate::metrics;

/// What the hub records about one message.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    /// The principal's binding (`""` anonymous).
    pub principal: &'a str,
    /// The session id, if any.
    pub session: Option<&'a str>,
    /// The JSON-RPC method (or `notification` / `response`).
    pub method: &'static str,
    /// The upstream it went to, by name.
    pub upstream: Option<&'a str>,
    /// The tool (upstream name) of a `tools/call`.
    pub tool: Option<&'a str>,
    /// `ok`, or the error's metrics label.
    pub outcome: &'static str,
    /// Time from the request to the end of the answer.
    pub latency: Duration,
}

/// Where audit records go.
pub trait AuditSink: Send + Sync {
    /// Whether records are wanted at all (so a disabled sink costs nothing per request).
    fn enabled(&self) -> bool;
    /// Takes one record. Must not block.
    fn submit(&self, record: &AuditRecord<'_>);
}

/// The sink of a hub without an audit log: records are not even built.
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn enabled(&self) -> bool {
        false
    }
    fn submit(&self, _record: &AuditRecord<'_>) {}
}

/// Records one message.
pub fn record(w: &Worker, cx: &Ctx<'_>, call: &Call<'_>) {
    let sink = &w.hub.audit;
    if !sink.enabled() {
        return;
    }
    let rec = AuditRecord {
        principal: cx.principal.binding(),
        session: cx.session.as_deref().map(|s| &*s.id),
        method: metrics::METHODS[call.method],
        upstream: call.upstream.map(|u| &*w.hub.snap.upstreams[u].name),
        tool: call.tool.as_deref(),
        outcome: call.outcome,
        latency: cx.started.elapsed(),
    };
    sink.submit(&rec);
}
