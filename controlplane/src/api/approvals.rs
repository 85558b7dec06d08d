//! Approvals: the queue of calls held by every hub. A hub submits a held call as the shared
//! `governance::approval::ApprovalRequest` (`POST /v1/approvals`; its id and deadline are the
//! hub's) and long-polls it (`GET /v1/approvals/{id}?wait_ms=`) until the answer carries a
//! `decision` — a `governance::approval::ApprovalDecision` the hub passes straight to its
//! registry. An operator in the call's approval group (the principal's groups: OIDC `groups`
//! claim or the API key's groups; admins decide any) approves or rejects with a comment
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
use crate::store::{sql::now_ms, ApprovalRow};
use governance::approval::{ApprovalDecision, ApprovalOutcome, ApprovalRequest};

/// The shared decision record for a decided row (`None` while pending).
pub fn decision(a: &ApprovalRow) -> Option<ApprovalDecision> {
    let outcome = match a.state.as_str() {
        "approved" => ApprovalOutcome::Approved,
        "rejected" => ApprovalOutcome::Rejected,
        "expired" => ApprovalOutcome::Expired,
        _ => return None,
    };
    Some(ApprovalDecision {
        id: a.id.clone(),
        outcome,
        by: match outcome {
            ApprovalOutcome::Expired => "timer".into(),
            _ => format!("operator:{}", a.decided_by.as_deref().unwrap_or("unknown")),
        },
        comment: a.comment.clone().filter(|c| !c.is_empty()),
        decided_at: a.decided_ms.unwrap_or(0).max(0) as u64,
    })
}

fn view(a: &ApprovalRow, now: i64) -> serde_json::Value {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    v["age_ms"] = json!(a.decided_ms.unwrap_or(now) - a.created_ms);
    v["decision"] = serde_json::to_value(decision(a)).unwrap_or_default();
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
    if req.id.len() > 128 {
        return Err(ApiError::bad_request("id: at most 128 characters"));
    }
    let now = now_ms();
    // A hub retrying its submission gets the same approval back.
    if !req.id.is_empty() {
        if let Some(existing) = app.store.approval(&req.id).await? {
            if existing.hub != req.hub {
                return Err(ApiError::conflict(format!(
                    "approval id {} belongs to another hub",
                    req.id
                )));
            }
            return Ok(json(&view(&existing, now)));
        }
    }
    let created = if req.created_at == 0 {
        now
    } else {
        req.created_at as i64
    };
    let default_deadline = created + app.settings.approval_timeout.as_millis() as i64;
    let expires = if req.expires_at == 0 {
        default_deadline
    } else {
        // The hub's deadline (from the policy's approval_timeout), within sane bounds.
        (req.expires_at as i64).clamp(created + 1_000, created + 24 * 3600 * 1000)
    };
    let row = ApprovalRow {
        id: if req.id.is_empty() { new_id() } else { req.id },
        hub: req.hub,
        upstream: req.upstream,
        tool: req.tool,
        arguments: req.arguments,
        principal: req.principal,
        reason: req.reason,
        approval_group: req.approval_group,
        state: "pending".into(),
        created_ms: created,
        expires_ms: expires,
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

/// Body of a decision.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    /// Approve (`true`) or reject.
    approve: bool,
    /// Comment shown to the caller and audited by the hub.
    #[serde(default)]
    comment: String,
}

/// `POST /v1/approvals/{id}/decision` (operator in the approval group, or admin).
pub async fn decide(
    State(app): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let who = app.who(&h, Need::Operate).await?;
    let d: DecisionBody = parse(&body)?;
    let row = app
        .store
        .approval(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no approval {id:?}")))?;
    if let Some(g) = &row.approval_group {
        let member = who.groups.iter().any(|x| x == g);
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
