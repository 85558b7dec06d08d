//! The admin API (JSON over HTTPS; plain HTTP on loopback only) and the hub protocol, one axum
//! router. Handlers are thin: authenticate and authorise ([`App::who`]), parse the body with a
//! clear 400 on bad JSON ([`parse`]), call the store, publish a new snapshot when state that
//! hubs see changed. The OpenAPI document (`openapi.json` in this crate) is served at
//! `/openapi.json` and `/.well-known/openapi.json`; a test checks it lists every route.
//!
//! Routes, by module: [`catalog`] (servers, tools, zones), [`ops`] (snapshots, policy, kill
//! switch, API keys, hubs, KPIs), [`approvals`], [`audit`], [`edges`] (enrollment, renewal,
//! revocation). `/` and `/console/…` serve the web console's built files.

pub mod approvals;
pub mod audit;
pub mod catalog;
pub mod edges;
pub mod ops;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::{Auth, Need, Principal};
use crate::error::{ApiError, ApiResult};
use crate::export::Exporter;
use crate::pki::EdgeCa;
use crate::publish::Publisher;
use crate::store::Store;

/// The OpenAPI document.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Settings the handlers use.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Lifetime of a one-time enrollment token.
    pub enroll_token_ttl: Duration,
    /// Lifetime of an edge certificate.
    pub edge_cert_ttl: Duration,
    /// A certificate may be renewed when less than this is left (or any time by its key holder).
    pub renew_before: Duration,
    /// Default wait before a held call is denied.
    pub approval_timeout: Duration,
    /// Directory of the built console (`index.html` …).
    pub console_dir: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enroll_token_ttl: Duration::from_secs(3600),
            edge_cert_ttl: Duration::from_secs(30 * 24 * 3600),
            renew_before: Duration::from_secs(10 * 24 * 3600),
            approval_timeout: Duration::from_secs(300),
            console_dir: None,
        }
    }
}

/// A hub currently long-polling (or recently).
#[derive(Debug, Clone, Serialize)]
pub struct WatchingHub {
    /// Snapshot version it said it holds.
    pub version: u64,
    /// Last poll (Unix ms).
    pub last_seen_ms: i64,
    /// Polls in flight now.
    pub polling: u32,
}

/// Shared state of every handler.
pub struct App {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Snapshot publisher.
    pub publisher: Publisher,
    /// Authenticator.
    pub auth: Auth,
    /// Edge CA.
    pub ca: EdgeCa,
    /// Audit export.
    pub exporter: Exporter,
    /// Settings.
    pub settings: Settings,
    /// Hubs watching snapshots.
    pub watching: Mutex<HashMap<String, WatchingHub>>,
    /// Bumped on every approval decision or expiry (wakes long-polls).
    pub decisions: tokio::sync::watch::Sender<u64>,
    /// Audit batches refused on ingest (bad chain or signature).
    pub audit_refused: std::sync::atomic::AtomicU64,
}

impl App {
    /// Authenticates the request and checks the role.
    pub async fn who(&self, headers: &HeaderMap, need: Need) -> ApiResult<Principal> {
        let h = headers
            .get(header::AUTHORIZATION)
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::unauthorized("Authorization is not text"))
            })
            .transpose()?;
        let p = self.auth.authenticate(h).await?;
        p.require(need)?;
        Ok(p)
    }

    /// Publishes a new snapshot after a change hubs must see.
    pub async fn changed(&self, why: &str) -> ApiResult<u64> {
        Ok(self.publisher.publish(why).await?.version)
    }
}

/// Shared state handle.
pub type AppState = Arc<App>;

/// Parses a JSON body, 400 naming the problem.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

/// A JSON response.
pub fn json<T: Serialize>(v: &T) -> Response {
    axum::Json(v).into_response()
}

/// Checks a catalog name (`[A-Za-z0-9_.-]`, 1..=64).
pub fn check_name(what: &str, s: &str) -> ApiResult<()> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(ApiError::bad_request(format!(
            "{what} {s:?}: 1-64 characters of [A-Za-z0-9_.-]"
        )));
    }
    Ok(())
}

/// Every (method, path) the router serves besides the console; the OpenAPI document must list
/// exactly these (unit test below), and `tests/api.rs` calls each on a real server.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/openapi.json"),
    ("GET", "/.well-known/openapi.json"),
    ("GET", "/v1/whoami"),
    ("GET", "/v1/snapshots/key"),
    ("GET", "/v1/snapshots/latest"),
    ("GET", "/v1/snapshots/watch"),
    ("GET", "/v1/servers"),
    ("GET", "/v1/servers/{name}"),
    ("PUT", "/v1/servers/{name}"),
    ("DELETE", "/v1/servers/{name}"),
    ("GET", "/v1/tools"),
    ("PUT", "/v1/servers/{name}/tools/{tool}"),
    ("POST", "/v1/servers/{name}/tools/{tool}/approve"),
    ("POST", "/v1/servers/{name}/tools/{tool}/lifecycle"),
    ("GET", "/v1/zones"),
    ("PUT", "/v1/zones/{name}"),
    ("DELETE", "/v1/zones/{name}"),
    ("GET", "/v1/policy"),
    ("PUT", "/v1/policy"),
    ("GET", "/v1/kill"),
    ("POST", "/v1/kill"),
    ("POST", "/v1/kill/lift"),
    ("GET", "/v1/keys"),
    ("POST", "/v1/keys"),
    ("DELETE", "/v1/keys/{id}"),
    ("GET", "/v1/hubs"),
    ("POST", "/v1/hubs/{id}/report"),
    ("POST", "/v1/hubs/{id}/discovered"),
    ("GET", "/v1/kpis"),
    ("GET", "/v1/approvals"),
    ("POST", "/v1/approvals"),
    ("GET", "/v1/approvals/{id}"),
    ("POST", "/v1/approvals/{id}/decision"),
    ("GET", "/v1/audit"),
    ("POST", "/v1/audit"),
    ("GET", "/v1/audit/verify"),
    ("GET", "/v1/edges"),
    ("GET", "/v1/edges/ca"),
    ("POST", "/v1/edges/{name}/enroll"),
    ("POST", "/v1/edges/{name}/revoke"),
    ("POST", "/v1/enroll"),
    ("POST", "/v1/edges/renew"),
];

/// The router.
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.json", get(openapi))
        .route("/.well-known/openapi.json", get(openapi))
        .route("/v1/whoami", get(ops::whoami))
        // snapshots (hubs)
        .route("/v1/snapshots/key", get(ops::snapshot_key))
        .route("/v1/snapshots/latest", get(ops::snapshot_latest))
        .route("/v1/snapshots/watch", get(ops::snapshot_watch))
        // catalog
        .route("/v1/servers", get(catalog::list_servers))
        .route(
            "/v1/servers/{name}",
            get(catalog::get_server)
                .put(catalog::put_server)
                .delete(catalog::delete_server),
        )
        .route("/v1/tools", get(catalog::list_tools))
        .route("/v1/servers/{name}/tools/{tool}", put(catalog::put_tool))
        .route(
            "/v1/servers/{name}/tools/{tool}/approve",
            post(catalog::approve_tool),
        )
        .route(
            "/v1/servers/{name}/tools/{tool}/lifecycle",
            post(catalog::set_lifecycle),
        )
        .route("/v1/zones", get(catalog::list_zones))
        .route(
            "/v1/zones/{name}",
            put(catalog::put_zone).delete(catalog::delete_zone),
        )
        // policy and kill switch
        .route("/v1/policy", get(ops::get_policy).put(ops::put_policy))
        .route("/v1/kill", get(ops::get_kills).post(ops::kill))
        .route("/v1/kill/lift", post(ops::lift))
        // API keys
        .route("/v1/keys", get(ops::list_keys).post(ops::create_key))
        .route("/v1/keys/{id}", axum::routing::delete(ops::delete_key))
        // hubs
        .route("/v1/hubs", get(ops::list_hubs))
        .route("/v1/hubs/{id}/report", post(ops::hub_report))
        .route("/v1/hubs/{id}/discovered", post(catalog::discovered))
        .route("/v1/kpis", get(ops::kpis))
        // approvals
        .route(
            "/v1/approvals",
            get(approvals::list).post(approvals::submit),
        )
        .route("/v1/approvals/{id}", get(approvals::get_one))
        .route("/v1/approvals/{id}/decision", post(approvals::decide))
        // audit
        .route("/v1/audit", get(audit::query).post(audit::ingest))
        .route("/v1/audit/verify", get(audit::verify))
        // edges
        .route("/v1/edges", get(edges::list))
        .route("/v1/edges/ca", get(edges::ca))
        .route("/v1/edges/{name}/enroll", post(edges::enroll_token))
        .route("/v1/edges/{name}/revoke", post(edges::revoke))
        .route("/v1/enroll", post(edges::enroll))
        .route("/v1/edges/renew", post(edges::renew))
        // console
        .route("/", get(console_index))
        .route("/console", get(console_index))
        .route("/console/{*path}", get(console_file))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024))
        .with_state(app)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn console_index(State(app): State<AppState>) -> Response {
    serve_console(&app, "index.html").await
}

async fn console_file(State(app): State<AppState>, Path(path): Path<String>) -> Response {
    serve_console(&app, &path).await
}

async fn serve_console(app: &App, rel: &str) -> Response {
    let Some(dir) = &app.settings.console_dir else {
        return ApiError::not_found(
            "the web console is not installed (build controlplane/console and pass --console DIR)",
        )
        .into_response();
    };
    // Only plain relative names: no `..`, no absolute paths, no hidden files.
    let ok = !rel.is_empty()
        && rel
            .split('/')
            .all(|p| !p.is_empty() && !p.starts_with('.') && p != "..");
    if !ok {
        return ApiError::not_found("no such file").into_response();
    }
    let path = dir.join(rel);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let ct = match path.extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("svg") => "image/svg+xml",
                Some("json") => "application/json",
                Some("png") => "image/png",
                _ => "application/octet-stream",
            };
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, ct),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                bytes,
            )
                .into_response()
        }
        Err(_) => ApiError::not_found(format!("no such file {rel:?}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut documented = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for m in ops.as_object().unwrap().keys() {
                documented.push((m.to_uppercase(), path.clone()));
            }
        }
        let mut served: Vec<_> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn names_checked() {
        assert!(check_name("x", "files-1.a_b").is_ok());
        assert!(check_name("x", "").is_err());
        assert!(check_name("x", "a/b").is_err());
        assert!(check_name("x", &"a".repeat(65)).is_err());
    }
}
