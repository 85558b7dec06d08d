//! Approvals: the queue of calls held by every hub. A hub submits a held call
//! (`POST /v1/approvals`) and long-polls its state (`GET /v1/approvals/{id}?wait_ms=`); an
//! operator in the call's approval group approves or rejects it with a comment
//! (`POST /v1/approvals/{id}/decision`); a call still pending at its deadline becomes `expired`
//! (= denied) by the sweeper in `server`. The hub holds the call; the control plane decides.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{json, parse, AppState};
use crate::auth::{new_id, Need, Role};
use crate::error::{ApiError, ApiResult};
use crate::interim::{ApprovalDecision, ApprovalRequest, Policy};
use crate::store::{sql::now_ms, ApprovalRow};

async fn current_policy(app: &AppState) -> ApiResult<Option<Policy>> {
    Ok(app
        .store
        .policy()
        .await?
        .and_then(|p| serde_json::from_value(p.json).ok()))
}

fn view(a: &ApprovalRow, now: i64) -> serde_json::Value {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    v["age_ms"] = json!(a.decided_ms.unwrap_or(now) - a.created_ms);
    v
}

/// `POST /v1/approvals` (hub): a call is held; returns its id and deadline.
pub async fn submit(State(app): State<AppState>, h: HeaderMap, body: Bytes) -> ApiResult<Response> {
    app.who(&h, Need::Hub).await?;
    let req: ApprovalRequest = parse(&body)?;
    for (what, v) in [
        ("hub", &req.hub),
        ("upstream", &req.upstream),
        ("tool", &req.tool),
    ] {
        if v.is_empty() || v.len() > 128 {
            return Err(ApiError::bad_request(format!("{what}: 1-128 characters")));
        }
    }
    let policy = current_policy(&app).await?;
    let group_timeout = req
        .approval_group
        .as_deref()
        .and_then(|g| policy.as_ref().and_then(|p| p.group(g)))
        .and_then(|g| g.timeout_ms);
    let timeout = req
        .timeout_ms
        .or(group_timeout)
        .unwrap_or(app.settings.approval_timeout.as_millis() as u64)
        .clamp(1_000, 24 * 3600 * 1000);
    let now = now_ms();
    let row = ApprovalRow {
        id: new_id(),
        hub: req.hub,
        upstream: req.upstream,
        tool: req.tool,
        arguments: req.arguments,
        principal: req.principal,
        reason: req.reason,
        approval_group: req.approval_group,
        state: "pending".into(),
        created_ms: now,
        expires_ms: now + timeout as i64,
        decided_ms: None,
        decided_by: None,
        comment: None,
    };
    app.store.insert_approval(&row).await?;
    tracing::info!(id = %row.id, hub = %row.hub, tool = %format!("{}/{}", row.upstream, row.tool),
        principal = %row.principal, "call held for approval");
    Ok((StatusCode::CREATED, axum::Json(view(&row, now))).into_response())
}

/// Query of the approval list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// `pending`, `approved`, `rejected`, `expired` (default: all).
    state: Option<String>,
    /// At most (default 200).
    limit: Option<i64>,
}

/// `GET /v1/approvals?state=pending`: the queue, newest first, with ages.
pub async fn list(
    State(app): State<AppState>,
    h: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    app.who(&h, Need::Read).await?;
    let rows = app
        .store
        .approvals(q.state.as_deref(), q.limit.unwrap_or(200))
        .await?;
    let now = now_ms();
    Ok(json(&rows.iter().map(|a| view(a, now)).collect::<Vec<_>>()))
}

/// Query of one approval.
#[derive(Debug, Deserialize)]
pub struct OneQuery {
    /// Hold the request until decided, at most this long (ms, max 60000).
    wait_ms: Option<u64>,
}

/// `GET /v1/approvals/{id}?wait_ms=`: one approval; with `wait_ms`, answered when it is decided
/// (or expires), else after `wait_ms` still pending.
pub async fn get_one(
    State(app): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<OneQuery>,
) -> ApiResult<Response> {
    let who = app.who(&h, Need::HubOrRead).await?;
    if who.role < Role::Viewer && who.role != Role::Hub {
        return Err(ApiError::forbidden("role may not read approvals"));
    }
    let mut rx = app.decisions.subscribe();
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0).min(60_000));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let row = app
            .store
            .approval(&id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no approval {id:?}")))?;
        let now = now_ms();
        if row.state != "pending" || tokio::time::Instant::now() >= deadline {
            return Ok(json(&view(&row, now)));
        }
        // Wake on any decision, or at the deadline of this one (the sweeper expires it then).
        let until_expiry = Duration::from_millis((row.expires_ms - now).max(0) as u64 + 50);
        let wake = deadline.min(tokio::time::Instant::now() + until_expiry);
        let _ = tokio::time::timeout_at(wake, rx.changed()).await;
        if row.expires_ms <= now_ms() {
            let ids = app.store.expire_approvals(now_ms()).await?;
            if !ids.is_empty() {
                app.decisions.send_modify(|n| *n += 1);
            }
        }
    }
}

/// `POST /v1/approvals/{id}/decision` (operator in the approval group, or admin).
pub async fn decide(
    State(app): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let who = app.who(&h, Need::Operate).await?;
    let d: ApprovalDecision = parse(&body)?;
    let row = app
        .store
        .approval(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no approval {id:?}")))?;
    if let Some(g) = &row.approval_group {
        let policy = current_policy(&app).await?;
        let member = policy
            .as_ref()
            .and_then(|p| p.group(g))
            .is_some_and(|grp| grp.members.iter().any(|m| m == &who.name))
            || who.groups.iter().any(|x| x == g);
        if !member && who.role != Role::Admin {
            return Err(ApiError::forbidden(format!(
                "{} is not in approval group {g:?}",
                who.name
            )));
        }
    }
    let state = if d.approve { "approved" } else { "rejected" };
    let now = now_ms();
    if !app
        .store
        .decide_approval(&id, state, &who.name, &d.comment, now)
        .await?
    {
        let cur = app
            .store
            .approval(&id)
            .await?
            .map(|r| r.state)
            .unwrap_or_default();
        let cur = if cur == "pending" {
            "expired".to_owned()
        } else {
            cur
        };
        return Err(ApiError::conflict(format!(
            "approval {id} is no longer pending ({cur})"
        )));
    }
    app.decisions.send_modify(|n| *n += 1);
    tracing::info!(id = %id, state, by = %who.name, "approval decided");
    let row = app
        .store
        .approval(&id)
        .await?
        .ok_or_else(|| ApiError::internal("decided approval vanished"))?;
    Ok(json(&view(&row, now)))
}
