//! Audit lines written by the hub's real audit writer (`governance::audit::AuditLog`), for
//! shipping to the control plane as a hub would.

use governance::audit::{AuditConfig, AuditKind, AuditLog, AuditRecord, FailMode};

/// A hub's audit log in `dir`: `records` are submitted in order; returns every line of the file
/// (the writer's own `log_opened` record first).
pub fn hub_lines(
    dir: &std::path::Path,
    hub: &str,
    key: &ed25519_dalek::SigningKey,
    records: Vec<AuditRecord>,
) -> Vec<String> {
    let cfg = AuditConfig {
        path: dir.join(format!("{hub}-audit.jsonl")),
        head_path: None,
        key_file: dir.join("unused.key"),
        queue: 4096,
        on_failure: FailMode::Closed,
        fsync: false,
        sign_every: 1,
    };
    let log = AuditLog::open(&cfg, hub, key.clone()).expect("audit log");
    for r in records {
        log.submit(r).expect("submit");
    }
    assert!(log.flush(std::time::Duration::from_secs(10)), "audit flush");
    log.close(std::time::Duration::from_secs(10));
    std::fs::read_to_string(&cfg.path)
        .expect("read audit log")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A tool-call record.
pub fn call(principal: &str, upstream: &str, tool: &str, outcome: &str) -> AuditRecord {
    let mut r = AuditRecord::new(AuditKind::ToolCall);
    r.principal = Some(principal.into());
    r.upstream = Some(upstream.into());
    r.tool = Some(tool.into());
    r.outcome = Some(outcome.into());
    r.latency_us = Some(1200);
    r
}
