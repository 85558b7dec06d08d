//! Operations routes: snapshots for hubs (key, latest, long-poll watch), policy, the kill switch,
//! API keys, hub reports (sessions, tunnels, KPI counters) and the KPI series for the console.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{check_name, json, parse, AppState, WatchingHub};
use crate::auth::{key_hash, new_id, new_key, Need, Role};
use crate::error::{ApiError, ApiResult};
use crate::publish::Published;
use crate::store::{sql::now_ms, ApiKeyRow, KillRow, KpiSample};

/// `GET /v1/whoami`.
pub async fn whoami(State(app): State<AppState>, h: HeaderMap) -> ApiResult<Response> {
    let p = app.who(&h, Need::Any).await?;
    Ok(json(&p))
}

/// `GET /v1/snapshots/key` (public): the key snapshots are signed with.
pub async fn snapshot_key(State(app): State<AppState>) -> Response {
    let k = app.publisher.verifying_key();
    json(&json!({
        "key": meshgate_control_client::verify::encode_key(&k),
        "key_id": meshgate_control_client::verify::key_id(&k),
        "alg": "Ed25519",
    }))
}

fn envelope(p: &Published) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::ETAG, format!("\"{}\"", p.sha256)),
        ],
        p.envelope.clone(),
    )
        .into_response()
}

/// `GET /v1/snapshots/latest`.
pub async fn snapshot_latest(State(app): State<AppState>, h: HeaderMap) -> ApiResult<Response> {
    app.who(&h, Need::Any).await?;
    let p = app
        .publisher
        .current()
        .ok_or_else(|| ApiError::internal("no snapshot published yet"))?;
    Ok(envelope(&p))
}

/// Query of the watch endpoint.
#[derive(Debug, Deserialize)]
pub struct WatchQuery {
    /// The version the hub holds (0 = none).
    #[serde(default)]
    after: u64,
    /// How long to hold the request when nothing is newer (ms, max 60000).
    #[serde(default = "default_wait")]
    wait_ms: u64,
    /// The hub's id.
    #[serde(default)]
    hub: Option<String>,
}

fn default_wait() -> u64 {
    25_000
}

/// `GET /v1/snapshots/watch?after=N&wait_ms=M&hub=ID`: long-poll. Answers at once with the
/// newest snapshot when it is not version N (newer, or older after a restore), else waits for
/// the next publish (answered the moment it happens) or 204 after `wait_ms`.
pub async fn snapshot_watch(
    State(app): State<AppState>,
    h: HeaderMap,
    Query(q): Query<WatchQuery>,
) -> ApiResult<Response> {
    app.who(&h, Need::Any).await?;
    let hub = q.hub.clone().filter(|s| !s.is_empty() && s.len() <= 128);
    let _guard = hub.as_ref().map(|id| Polling::new(&app, id, q.after));
    let mut rx = app.publisher.subscribe();
    let wait = Duration::from_millis(q.wait_ms.min(60_000));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let cur = rx.borrow_and_update().clone();
        if let Some(p) = cur {
            if p.version != q.after {
                return Ok(envelope(&p));
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return Err(ApiError::internal("publisher stopped")),
            Err(_) => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}

/// Tracks a hub's poll in `App::watching` while it is held.
struct Polling {
    app: AppState,
    hub: String,
}

impl Polling {
    fn new(app: &AppState, hub: &str, version: u64) -> Polling {
        if let Ok(mut m) = app.watching.lock() {
            let e = m.entry(hub.to_owned()).or_insert(WatchingHub {
                version,
                last_seen_ms: 0,
                polling: 0,
            });
            e.version = version;
            e.last_seen_ms = now_ms();
            e.polling += 1;
        }
        Polling {
            app: app.clone(),
            hub: hub.to_owned(),
        }
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        if let Ok(mut m) = self.app.watching.lock() {
            if let Some(e) = m.get_mut(&self.hub) {
                e.polling = e.polling.saturating_sub(1);
                e.last_seen_ms = now_ms();
            }
        }
    }
}

/// `GET /v1/policy`.
pub async fn get_policy(State(app): State<AppState>, h: HeaderMap) -> ApiResult<Response> {
    app.who(&h, Need::Read).await?;
    match app.store.policy().await? {
        Some(p) => Ok(json(&p)),
        None => Err(ApiError::not_found("no policy applied yet")),
    }
}

/// `PUT /v1/policy` (admin): the policy document as YAML or JSON text; checked, stored as a new
/// revision, published.
pub async fn put_policy(
    State(app): State<AppState>,
    h: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let who = app.who(&h, Need::Admin).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("policy must be UTF-8 text (YAML or JSON)"))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("policy is empty"));
    }
    let doc = check_policy(text).map_err(ApiError::unprocessable)?;
    let rev = app
        .store
        .put_policy(text, &doc, &who.name, now_ms())
        .await?;
    let v = app.changed(&format!("policy revision {rev}")).await?;
    Ok(json(
        &json!({"revision": rev, "snapshot": v, "policy": doc}),
    ))
}

/// Parses a policy document (the hub's `governance::policy::PolicyConfig`, YAML or JSON) and
/// compiles it as the hub will (globs, roles, scopes, limits), so a policy that a hub would refuse
/// is refused here, naming the problem. Returns the document as published in snapshots.
pub fn check_policy(text: &str) -> Result<serde_json::Value, String> {
    let cfg: governance::policy::PolicyConfig =
        yaml_serde::from_str(text).map_err(|e| format!("policy: {e}"))?;
    governance::policy::CompiledPolicy::compile(&cfg).map_err(|e| format!("policy: {e}"))?;
    serde_json::to_value(&cfg).map_err(|e| format!("policy: {e}"))
}

/// `GET /v1/kill`: active kills.
pub async fn get_kills(State(app): State<AppState>, h: HeaderMap) -> ApiResult<Response> {
    app.who(&h, Need::Read).await?;
    Ok(json(&app.store.kills().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillSpec {
    scope: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    reason: String,
}

fn check_scope(k: &KillSpec) -> ApiResult<()> {
    match k.scope.as_str() {
        "global" if k.target.is_empty() => Ok(()),
        "global" => Err(ApiError::bad_request("global kill takes no target")),
        "upstream" => check_name("target (upstream)", &k.target),
        "tool" => match k.target.split_once('/') {
            Some((u, t)) => {
                check_name("target upstream", u)?;
                check_name("target tool", t)
            }
            None => Err(ApiError::bad_request(
                "tool kill target is \"<upstream>/<tool>\"",
            )),
        },
        s => Err(ApiError::bad_request(format!(
            "scope {s:?}: global, upstream or tool"
        ))),
    }
}

/// `POST /v1/kill` (operator): stop tool execution (global, per upstream, per tool) on every hub.
pub async fn kill(State(app): State<AppState>, h: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let who = app.who(&h, Need::Operate).await?;
    let k: KillSpec = parse(&body)?;
    check_scope(&k)?;
    let row = KillRow {
        scope: k.scope,
        target: k.target,
        reason: if k.reason.is_empty() {
            "stopped by the kill switch".into()
        } else {
            k.reason
        },
        by: who.name.clone(),
        since_ms: now_ms(),
    };
    app.store.put_kill(&row).await?;
    let v = app
        .changed(&format!("kill {} {}", row.scope, row.target))
        .await?;
    tracing::warn!(scope = %row.scope, target = %row.target, by = %who.name, snapshot = v, "kill switch pressed");
    Ok(json(&json!({"kill": row, "snapshot": v})))
}

/// `POST /v1/kill/lift` (operator): lift a kill (same scope and target).
pub async fn lift(State(app): State<AppState>, h: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let who = app.who(&h, Need::Operate).await?;
    let k: KillSpec = parse(&body)?;
    check_scope(&k)?;
    if !app.store.lift_kill(&k.scope, &k.target).await? {
        return Err(ApiError::not_found(format!(
            "no active {} kill{}",
            k.scope,
            if k.target.is_empty() {
                String::new()
            } else {
                format!(" on {}", k.target)
            }
        )));
    }
    let v = app
        .changed(&format!("kill lifted {} {}", k.scope, k.target))
        .await?;
    tracing::warn!(scope = %k.scope, target = %k.target, by = %who.name, snapshot = v, "kill switch lifted");
    Ok(json(
        &json!({"lifted": {"scope": k.scope, "target": k.target}, "snapshot": v}),
    ))
}

/// `GET /v1/keys` (admin).
pub async fn list_keys(State(app): State<AppState>, h: HeaderMap) -> ApiResult<Response> {
    app.who(&h, Need::Admin).await?;
    Ok(json(&app.store.api_keys().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySpec {
    name: String,
    role: String,
    #[serde(default)]
    groups: Vec<String>,
}

/// `POST /v1/keys` (admin): a new API key; the key itself is shown once.
pub async fn create_key(
    State(app): State<AppState>,
    h: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    app.who(&h, Need::Admin).await?;
    let spec: KeySpec = parse(&body)?;
    check_name("key name", &spec.name)?;
    let role = Role::parse(&spec.role).ok_or_else(|| {
        ApiError::bad_request(format!(
            "role {:?}: viewer, operator, admin or hub",
            spec.role
        ))
    })?;
    let key = new_key();
    let row = ApiKeyRow {
        id: new_id(),
        name: spec.name,
        role: role.as_str().into(),
        groups: spec.groups,
        hash: key_hash(&key),
        created_ms: now_ms(),
    };
    app.store.put_api_key(&row).await?;
    let mut v = serde_json::to_value(&row).map_err(|e| ApiError::internal(e.to_string()))?;
    v["key"] = json!(key);
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

/// `DELETE /v1/keys/{id}` (admin).
pub async fn delete_key(
    State(app): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    app.who(&h, Need::Admin).await?;
    if !app.store.delete_api_key(&id).await? {
        return Err(ApiError::not_found(format!("no key {id:?}")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/hubs`: hubs that reported or are watching, with their last report.
pub async fn list_hubs(State(app): State<AppState>, h: HeaderMap) -> ApiResult<Response> {
    app.who(&h, Need::Read).await?;
    let rows = app.store.hubs().await?;
    let watching = app.watching.lock().map(|m| m.clone()).unwrap_or_default();
    let latest = app.publisher.current().map(|p| p.version).unwrap_or(0);
    let mut out = Vec::new();
    let now = now_ms();
    for r in &rows {
        let w = watching.get(&r.id);
        out.push(json!({
            "id": r.id,
            "report": r.report,
            "reported_ms": r.reported_ms,
            "stale": now - r.reported_ms > 30_000,
            "audit_seq": r.audit_seq,
            "watching": w,
            "snapshot_current": w.map(|w| w.version == latest),
        }));
    }
    for (id, w) in &watching {
        if !rows.iter().any(|r| &r.id == id) {
            out.push(json!({"id": id, "report": null, "watching": w, "snapshot_current": w.version == latest}));
        }
    }
    Ok(json(&json!({"latest_snapshot": latest, "hubs": out})))
}

/// The KPI counters a hub reports (totals since its start).
const KPI_FIELDS: &[&str] = &[
    "tool_boot_ms",
    "reconnections",
    "cache_hits",
    "cache_misses",
    "calls",
    "errors",
];

/// `POST /v1/hubs/{id}/report` (hub): sessions, tunnels, upstream health, KPI counters.
pub async fn hub_report(
    State(app): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    app.who(&h, Need::Hub).await?;
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError::bad_request("hub id: 1-128 characters"));
    }
    let report: serde_json::Value = parse(&body)?;
    if !report.is_object() {
        return Err(ApiError::bad_request("report must be a JSON object"));
    }
    let now = now_ms();
    app.store.put_hub_report(&id, &report, now).await?;
    let mut samples = Vec::new();
    if let Some(k) = report.get("kpi").and_then(|k| k.as_object()) {
        for f in KPI_FIELDS {
            if let Some(v) = k.get(*f).and_then(|v| v.as_f64()) {
                samples.push(KpiSample {
                    hub: id.clone(),
                    ts_ms: now,
                    name: (*f).into(),
                    value: v,
                });
            }
        }
    }
    app.store.put_kpis(&samples).await?;
    Ok(json(&json!({"ok": true, "kpi_samples": samples.len()})))
}

/// Query of `GET /v1/kpis`.
#[derive(Debug, Deserialize)]
pub struct KpiQuery {
    /// Window (seconds back from now; default 3600).
    #[serde(default)]
    window_s: Option<i64>,
}

/// `GET /v1/kpis`: series for the console. From hub counter totals: reconnection rate (per
/// minute), cache hit ratio, error rate (errors / calls) per reporting interval, tool boot time
/// as reported; from approvals: approval cycle time (decision − submission).
pub async fn kpis(
    State(app): State<AppState>,
    h: HeaderMap,
    Query(q): Query<KpiQuery>,
) -> ApiResult<Response> {
    app.who(&h, Need::Read).await?;
    let window = q.window_s.unwrap_or(3600).clamp(60, 30 * 86400);
    let since = now_ms() - window * 1000;
    let samples = app.store.kpis(since).await?;
    Ok(json(&kpi_series(
        &samples,
        &app.store.approvals(None, 1000).await?,
        since,
    )))
}

/// Computes the KPI series (pure, tested below).
pub fn kpi_series(
    samples: &[KpiSample],
    approvals: &[crate::store::ApprovalRow],
    since_ms: i64,
) -> serde_json::Value {
    use std::collections::BTreeMap;
    // hub -> ts -> name -> value
    let mut by_hub: BTreeMap<&str, BTreeMap<i64, BTreeMap<&str, f64>>> = BTreeMap::new();
    for s in samples {
        by_hub
            .entry(&s.hub)
            .or_default()
            .entry(s.ts_ms)
            .or_default()
            .insert(&s.name, s.value);
    }
    let mut boot = Vec::new();
    let mut reconn = Vec::new();
    let mut hit = Vec::new();
    let mut err = Vec::new();
    for points in by_hub.values() {
        let mut prev: Option<(i64, &BTreeMap<&str, f64>)> = None;
        for (ts, vals) in points {
            if let Some(b) = vals.get("tool_boot_ms") {
                boot.push(json!([ts, b]));
            }
            if let Some((pts, pv)) = prev {
                let d = |n: &str| match (vals.get(n), pv.get(n)) {
                    (Some(a), Some(b)) if a >= b => Some(a - b),
                    _ => None,
                };
                let minutes = ((ts - pts) as f64 / 60_000.0).max(1e-9);
                if let Some(r) = d("reconnections") {
                    reconn.push(json!([ts, r / minutes]));
                }
                if let (Some(hits), Some(miss)) = (d("cache_hits"), d("cache_misses")) {
                    if hits + miss > 0.0 {
                        hit.push(json!([ts, hits / (hits + miss)]));
                    }
                }
                if let (Some(e), Some(c)) = (d("errors"), d("calls")) {
                    if c > 0.0 {
                        err.push(json!([ts, e / c]));
                    }
                }
            }
            prev = Some((*ts, vals));
        }
    }
    let mut cycle: Vec<_> = approvals
        .iter()
        .filter_map(|a| a.decided_ms.map(|d| (d, d - a.created_ms)))
        .filter(|(d, _)| *d >= since_ms)
        .collect();
    cycle.sort();
    let sort = |v: &mut Vec<serde_json::Value>| v.sort_by_key(|p| p[0].as_i64().unwrap_or(0));
    sort(&mut boot);
    sort(&mut reconn);
    sort(&mut hit);
    sort(&mut err);
    json!({
        "since_ms": since_ms,
        "series": {
            "tool_boot_ms": boot,
            "reconnections_per_min": reconn,
            "cache_hit_ratio": hit,
            "error_rate": err,
            "approval_cycle_ms": cycle.into_iter().map(|(d, c)| json!([d, c])).collect::<Vec<_>>(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_checked_like_the_hub() {
        let ok = "max_loop_steps: 10\ntools:\n  - match: \"files/delete_*\"\n    requires_approval: true\n    approval_group: sre\n    approval_timeout: 2m\n";
        let doc = check_policy(ok).unwrap();
        assert_eq!(doc["tools"][0]["match"], "files/delete_*");
        // what the hub reads back from a snapshot is the same policy
        let back: governance::policy::PolicyConfig = serde_json::from_value(doc).unwrap();
        assert_eq!(back.tools[0].approval_group.as_deref(), Some("sre"));
        assert!(check_policy("bogus: 1").unwrap_err().contains("bogus"));
        assert!(
            check_policy("tools:\n  - match: \"[\"\n").is_err(),
            "bad glob"
        );
    }

    #[test]
    fn kpi_rates_from_counter_totals() {
        let s = |ts, name: &str, v| KpiSample {
            hub: "h".into(),
            ts_ms: ts,
            name: name.into(),
            value: v,
        };
        let samples = vec![
            s(0, "calls", 100.0),
            s(0, "errors", 1.0),
            s(0, "cache_hits", 10.0),
            s(0, "cache_misses", 10.0),
            s(0, "reconnections", 0.0),
            s(60_000, "calls", 200.0),
            s(60_000, "errors", 11.0),
            s(60_000, "cache_hits", 40.0),
            s(60_000, "cache_misses", 20.0),
            s(60_000, "reconnections", 3.0),
            s(60_000, "tool_boot_ms", 850.0),
        ];
        let v = kpi_series(&samples, &[], 0);
        let ser = &v["series"];
        assert_eq!(ser["error_rate"][0][1], 0.1);
        assert_eq!(ser["cache_hit_ratio"][0][1], 0.75);
        assert_eq!(ser["reconnections_per_min"][0][1], 3.0);
        assert_eq!(ser["tool_boot_ms"][0][1], 850.0);
    }
}
