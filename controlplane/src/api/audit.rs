//! The audit store. Hubs ship their hash-chained, signed records (`POST /v1/audit`: the lines
//! of their `governance::audit` log, exactly as written); the
//! control plane checks each batch continues that hub's chain (seq, previous hash, signature by
//! the hub's pinned audit key) before storing it, indexes the records (hub, time, principal,
//! tool), exports them (syslog / OTLP) and re-verifies whole chains on demand
//! (`GET /v1/audit/verify`, the CLI's `audit verify`).

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{json, parse, AppState};
use crate::audit_chain::{kind_name, line_hash, verify_lines};
use crate::auth::Need;
use crate::error::{ApiError, ApiResult};
use crate::store::{AuditFilter, AuditRow, StoreError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    hub: String,
    /// The hub's audit verifying key (base64 or base64url, 32 bytes); pinned on the first batch.
    key: String,
    lines: Vec<String>,
}

/// `POST /v1/audit` (hub): a batch of records in chain order.
pub async fn ingest(State(app): State<AppState>, h: HeaderMap, body: Bytes) -> ApiResult<Response> {
    app.who(&h, Need::Hub).await?;
    let b: Batch = parse(&body)?;
    if b.hub.is_empty() || b.hub.len() > 128 {
        return Err(ApiError::bad_request("hub: 1-128 characters"));
    }
    if b.lines.len() > 10_000 {
        return Err(ApiError::bad_request("at most 10000 records per batch"));
    }
    let key = meshgate_control_client::verify::decode_key(&b.key)
        .map_err(|e| ApiError::bad_request(format!("key: {e}")))?;
    let key_text = meshgate_control_client::verify::encode_key(&key);
    let hub = app.store.hub(&b.hub).await?;
    let (seq, hash, pinned) = match &hub {
        Some(h) => (h.audit_seq, h.audit_hash.clone(), h.audit_key.clone()),
        None => (0, None, None),
    };
    if let Some(p) = &pinned {
        if p != &key_text {
            app.audit_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(hub = %b.hub, "audit batch refused: signed with another key than the pinned one");
            return Err(ApiError::conflict(format!(
                "hub {} ships audit signed by another key than the one pinned at its first batch",
                b.hub
            )));
        }
    }
    let head = hash.map(|h| (seq as u64, h));
    let (records, _) = verify_lines(head, &b.hub, &b.lines, &key).map_err(|e| {
        app.audit_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(hub = %b.hub, reason = %e, "audit batch refused: chain does not verify");
        ApiError::unprocessable(format!("audit chain of hub {} does not verify: {e}", b.hub))
    })?;
    let rows: Vec<AuditRow> = records
        .iter()
        .zip(&b.lines)
        .map(|(l, line)| AuditRow {
            hub: b.hub.clone(),
            seq: l.seq as i64,
            ts_ms: l.record.ts_ms as i64,
            kind: kind_name(&l.record),
            principal: l.record.principal.clone().unwrap_or_default(),
            upstream: l.record.upstream.clone().unwrap_or_default(),
            tool: l.record.tool.clone().unwrap_or_default(),
            outcome: l.record.outcome.clone().unwrap_or_default(),
            line: line.clone(),
            hash: l.hash.clone(),
        })
        .collect();
    match app.store.append_audit(&b.hub, seq, &rows, &key_text).await {
        Ok(()) => {}
        Err(StoreError::Conflict(m)) => return Err(ApiError::conflict(m)),
        Err(e) => return Err(e.into()),
    }
    app.exporter.push(&rows);
    let head = rows.last().map(|r| r.seq).unwrap_or(seq);
    Ok(json(&json!({"accepted": rows.len(), "head_seq": head})))
}

/// `GET /v1/audit?hub=&principal=&tool=&after_seq=&limit=`: records, newest first.
pub async fn query(
    State(app): State<AppState>,
    h: HeaderMap,
    Query(f): Query<AuditFilter>,
) -> ApiResult<Response> {
    app.who(&h, Need::Read).await?;
    let rows = app.store.audit(&f).await?;
    let out: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "hub": r.hub, "seq": r.seq, "ts_ms": r.ts_ms, "kind": r.kind,
                "principal": r.principal, "upstream": r.upstream, "tool": r.tool,
                "outcome": r.outcome, "hash": r.hash,
                "record": serde_json::from_str::<serde_json::Value>(&r.line).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect();
    Ok(json(&out))
}

/// `GET /v1/audit/verify`: re-checks every hub's stored chain from its first record (links,
/// signatures, and that it ends at the recorded head).
pub async fn verify(State(app): State<AppState>, h: HeaderMap) -> ApiResult<Response> {
    app.who(&h, Need::Read).await?;
    let mut out = Vec::new();
    let mut all_ok = true;
    for hub in app.store.hubs().await? {
        if hub.audit_seq == 0 {
            continue;
        }
        let key = hub
            .audit_key
            .as_deref()
            .map(meshgate_control_client::verify::decode_key);
        let result = match key {
            Some(Ok(k)) => {
                verify_stored(&app, &hub.id, &k, hub.audit_seq, hub.audit_hash.as_deref()).await?
            }
            _ => Err("no valid pinned audit key".to_owned()),
        };
        all_ok &= result.is_ok();
        out.push(match result {
            Ok(n) => json!({"hub": hub.id, "ok": true, "records": n, "head_seq": hub.audit_seq}),
            Err(e) => json!({"hub": hub.id, "ok": false, "error": e, "head_seq": hub.audit_seq}),
        });
    }
    Ok(json(&json!({"ok": all_ok, "hubs": out})))
}

async fn verify_stored(
    app: &AppState,
    hub: &str,
    key: &ed25519_dalek::VerifyingKey,
    head_seq: i64,
    head_hash: Option<&str>,
) -> ApiResult<Result<i64, String>> {
    let mut head: Option<(u64, String)> = None;
    let mut from = 1;
    let mut n = 0;
    loop {
        let page = app.store.audit_chain(hub, from, 1000).await?;
        if page.is_empty() {
            break;
        }
        let lines: Vec<String> = page.iter().map(|r| r.line.clone()).collect();
        match verify_lines(head.clone(), hub, &lines, key) {
            Ok((_, h)) => head = h,
            Err(e) => return Ok(Err(e)),
        }
        for r in &page {
            if r.hash != line_hash(&r.line) {
                return Ok(Err(format!(
                    "seq {}: stored hash does not match the record",
                    r.seq
                )));
            }
        }
        n += page.len() as i64;
        from = page.last().map(|r| r.seq + 1).unwrap_or(from);
    }
    match head {
        Some((s, hsh)) if s as i64 == head_seq && Some(hsh.as_str()) == head_hash => Ok(Ok(n)),
        Some((s, _)) => Ok(Err(format!(
            "chain ends at seq {s} but the recorded head is {head_seq} (records missing or changed)"
        ))),
        None => Ok(Err("no records stored".into())),
    }
}
