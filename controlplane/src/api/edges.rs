//! Edge enrollment. An admin issues a one-time token for an edge name
//! (`POST /v1/edges/{name}/enroll`, the CLI's `edge enroll NAME`); the edge agent generates its
//! key, sends only a CSR with the token (`POST /v1/enroll`) and gets a client certificate
//! (CN = the name) signed by the edge CA hubs trust. Before expiry the agent renews with a CSR
//! for the same key (`POST /v1/edges/renew`; proof of possession is the CSR's signature).
//! Revocation (`POST /v1/edges/{name}/revoke`) voids the edge's certificates and tokens and
//! publishes a snapshot whose `revoked` list takes it off every hub.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::{check_name, json, parse, AppState};
use crate::auth::{key_hash, Need};
use crate::error::{ApiError, ApiResult};
use crate::store::{sql::now_ms, EdgeCertRow};

/// Prefix of enrollment tokens.
pub const TOKEN_PREFIX: &str = "mge_";

/// `GET /v1/edges`: edges with their certificates.
pub async fn list(State(app): State<AppState>, h: HeaderMap) -> ApiResult<Response> {
    app.who(&h, Need::Read).await?;
    let certs = app.store.edge_certs(None).await?;
    let out: Vec<_> = app
        .store
        .edges()
        .await?
        .into_iter()
        .map(|e| {
            let mine: Vec<_> = certs.iter().filter(|c| c.edge == e.name).collect();
            json!({"name": e.name, "state": e.state, "created_ms": e.created_ms,
                   "revoked_ms": e.revoked_ms, "certificates": mine})
        })
        .collect();
    Ok(json(&out))
}

/// `GET /v1/edges/ca` (public): the edge CA certificate (PEM) hubs put in `edge.ca`.
pub async fn ca(State(app): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        app.ca.cert_pem().to_owned(),
    )
        .into_response()
}

/// `POST /v1/edges/{name}/enroll` (admin): a one-time enrollment token (shown once).
pub async fn enroll_token(
    State(app): State<AppState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let who = app.who(&h, Need::Admin).await?;
    check_name("edge name", &name)?;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| ApiError::internal(format!("random: {e}")))?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    );
    let now = now_ms();
    let expires = now + app.settings.enroll_token_ttl.as_millis() as i64;
    app.store.put_edge(&name, now).await?;
    app.store
        .put_enroll_token(&key_hash(&token), &name, expires)
        .await?;
    // A revoked edge enrolled again leaves the revocation list.
    app.changed(&format!("edge {name} enrollment opened"))
        .await?;
    tracing::info!(edge = %name, by = %who.name, "enrollment token issued");
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"edge": name, "token": token, "expires_ms": expires})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollReq {
    token: String,
    csr: String,
}

/// `POST /v1/enroll` (authenticated by the one-time token): CSR → certificate.
pub async fn enroll(State(app): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let req: EnrollReq = parse(&body)?;
    if !req.token.starts_with(TOKEN_PREFIX) {
        return Err(ApiError::unauthorized("not an enrollment token"));
    }
    // Check the CSR before spending the token, so a malformed request can be retried.
    crate::pki::csr_key_sha256(&req.csr).map_err(ApiError::bad_request)?;
    let edge = app
        .store
        .take_enroll_token(&key_hash(&req.token), now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized("enrollment token unknown, already used, expired or revoked")
        })?;
    issue(&app, &edge, &req.csr).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewReq {
    csr: String,
}

/// `POST /v1/edges/renew`: a new certificate for the key of a current, unrevoked certificate.
pub async fn renew(State(app): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let req: RenewReq = parse(&body)?;
    let key = crate::pki::csr_key_sha256(&req.csr).map_err(ApiError::bad_request)?;
    let cert = app
        .store
        .edge_cert_by_key(&key)
        .await?
        .ok_or_else(|| ApiError::unauthorized("no current certificate for this key"))?;
    let now = now_ms();
    if cert.not_after_ms <= now {
        return Err(ApiError::unauthorized(
            "the certificate for this key has expired: enroll again with a new token",
        ));
    }
    match app.store.edge(&cert.edge).await? {
        Some(e) if e.state != "revoked" => {}
        _ => return Err(ApiError::unauthorized("edge revoked")),
    }
    issue(&app, &cert.edge, &req.csr).await
}

async fn issue(app: &AppState, edge: &str, csr: &str) -> ApiResult<Response> {
    let issued = app
        .ca
        .sign_csr(csr, edge, app.settings.edge_cert_ttl)
        .map_err(ApiError::bad_request)?;
    let now = now_ms();
    app.store
        .put_edge_cert(&EdgeCertRow {
            serial: issued.serial.clone(),
            edge: edge.to_owned(),
            key_sha256: issued.key_sha256.clone(),
            not_after_ms: issued.not_after_ms,
            issued_ms: now,
            revoked_ms: None,
        })
        .await?;
    tracing::info!(edge, serial = %issued.serial, "edge certificate issued");
    let renew_after = (issued.not_after_ms - app.settings.renew_before.as_millis() as i64).max(now);
    Ok(json(&json!({
        "edge": edge,
        "certificate": issued.cert_pem,
        "ca": app.ca.cert_pem(),
        "serial": issued.serial,
        "not_after_ms": issued.not_after_ms,
        "renew_after_ms": renew_after,
    })))
}

/// `POST /v1/edges/{name}/revoke` (admin).
pub async fn revoke(
    State(app): State<AppState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let who = app.who(&h, Need::Admin).await?;
    if !app.store.revoke_edge(&name, now_ms()).await? {
        return Err(ApiError::not_found(format!("no edge {name:?}")));
    }
    let v = app.changed(&format!("edge {name} revoked")).await?;
    tracing::warn!(edge = %name, by = %who.name, snapshot = v, "edge revoked");
    Ok(json(&json!({"revoked": name, "snapshot": v})))
}
