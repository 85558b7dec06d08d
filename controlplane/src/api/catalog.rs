//! Catalog routes: servers (datacenter and edge) with endpoints, zone, owner and the federation
//! allow-list; tools with semver versions, lifecycle and operator approval; zones; and the hubs'
//! reports of discovered tools. Every change publishes a snapshot.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{check_name, json, parse, AppState};
use crate::auth::Need;
use crate::error::{ApiError, ApiResult};
use crate::store::{sql::now_ms, ServerRow, ToolRow, ZoneRow};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSpec {
    #[serde(default = "http_kind")]
    kind: String,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default = "yes")]
    federate: bool,
    #[serde(default)]
    version: Option<String>,
}

fn http_kind() -> String {
    "http".into()
}
fn yes() -> bool {
    true
}

fn check_semver(what: &str, v: &str) -> ApiResult<()> {
    semver::Version::parse(v)
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(format!("{what} {v:?} is not semver: {e}")))
}

fn check_date(what: &str, d: &str) -> ApiResult<()> {
    let b = d.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && digits(0..4)
        && digits(5..7)
        && digits(8..10);
    let month = d.get(5..7).and_then(|m| m.parse::<u8>().ok()).unwrap_or(0);
    let day = d.get(8..10).and_then(|m| m.parse::<u8>().ok()).unwrap_or(0);
    if ok && (1..=12).contains(&month) && (1..=31).contains(&day) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what} {d:?}: expected YYYY-MM-DD"
        )))
    }
}

async fn server_json(app: &AppState, s: &ServerRow) -> ApiResult<serde_json::Value> {
    let tools = app.store.tools(Some(&s.name)).await?;
    let mut v = serde_json::to_value(s).map_err(|e| ApiError::internal(e.to_string()))?;
    v["tools"] = serde_json::to_value(tools).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(v)
}

/// `GET /v1/servers`: every server with its tools.
pub async fn list_servers(State(app): State<AppState>, h: HeaderMap) -> ApiResult<Response> {
    app.who(&h, Need::Read).await?;
    let mut out = Vec::new();
    for s in app.store.servers().await? {
        out.push(server_json(&app, &s).await?);
    }
    Ok(json(&out))
}

/// `GET /v1/servers/{name}`.
pub async fn get_server(
    State(app): State<AppState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    app.who(&h, Need::Read).await?;
    let s = app
        .store
        .server(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("server {name:?} not in the catalog")))?;
    Ok(json(&server_json(&app, &s).await?))
}

/// `PUT /v1/servers/{name}` (admin): create or replace a server.
pub async fn put_server(
    State(app): State<AppState>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    app.who(&h, Need::Admin).await?;
    check_name("server name", &name)?;
    if name.contains("__") {
        return Err(ApiError::bad_request(format!(
            "server name {name:?} must not contain the default separator \"__\""
        )));
    }
    let spec: ServerSpec = parse(&body)?;
    match spec.kind.as_str() {
        "http" => {
            if spec.endpoints.is_empty() {
                return Err(ApiError::bad_request(
                    "endpoints: an http server needs at least one URL",
                ));
            }
            for (i, e) in spec.endpoints.iter().enumerate() {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(ApiError::bad_request(format!(
                        "endpoints[{i}] {e:?}: must be an http:// or https:// URL"
                    )));
                }
            }
        }
        "edge" => {
            for (i, e) in spec.endpoints.iter().enumerate() {
                check_name(&format!("endpoints[{i}] (edge name)"), e)?;
            }
        }
        k => return Err(ApiError::bad_request(format!("kind {k:?}: http or edge"))),
    }
    if let Some(v) = &spec.version {
        check_semver("version", v)?;
    }
    if !spec.zone.is_empty() && !app.store.zones().await?.iter().any(|z| z.name == spec.zone) {
        return Err(ApiError::bad_request(format!(
            "zone {:?} does not exist (PUT /v1/zones/{} first)",
            spec.zone, spec.zone
        )));
    }
    let row = ServerRow {
        name: name.clone(),
        kind: spec.kind,
        zone: spec.zone,
        owner: spec.owner,
        endpoints: spec.endpoints,
        federate: spec.federate,
        version: spec.version,
        updated_ms: now_ms(),
    };
    app.store.put_server(&row).await?;
    let version = app.changed(&format!("server {name} saved")).await?;
    let mut v = server_json(&app, &row).await?;
    v["snapshot"] = json!(version);
    Ok(json(&v))
}

/// `DELETE /v1/servers/{name}` (admin).
pub async fn delete_server(
    State(app): State<AppState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    app.who(&h, Need::Admin).await?;
    if !app.store.delete_server(&name).await? {
        return Err(ApiError::not_found(format!(
            "server {name:?} not in the catalog"
        )));
    }
    let version = app.changed(&format!("server {name} deleted")).await?;
    Ok(json(&json!({"deleted": name, "snapshot": version})))
}

/// `GET /v1/tools`: every tool of every server.
pub async fn list_tools(State(app): State<AppState>, h: HeaderMap) -> ApiResult<Response> {
    app.who(&h, Need::Read).await?;
    Ok(json(&app.store.tools(None).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolSpec {
    version: Option<String>,
    #[serde(default = "active")]
    lifecycle: String,
    #[serde(default)]
    sunset: Option<String>,
    #[serde(default)]
    replacement: Option<String>,
    #[serde(default = "yes")]
    approved: bool,
}

fn active() -> String {
    "active".into()
}

fn check_lifecycle(state: &str, sunset: &Option<String>) -> ApiResult<()> {
    match state {
        "active" | "retired" => Ok(()),
        "deprecated" => match sunset {
            Some(d) => check_date("sunset", d),
            None => Err(ApiError::bad_request(
                "deprecated needs a sunset date (YYYY-MM-DD)",
            )),
        },
        s => Err(ApiError::bad_request(format!(
            "lifecycle {s:?}: active, deprecated or retired"
        ))),
    }
}

async fn need_server(app: &AppState, name: &str) -> ApiResult<ServerRow> {
    app.store
        .server(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("server {name:?} not in the catalog")))
}

/// `PUT /v1/servers/{name}/tools/{tool}` (admin): declare a tool.
pub async fn put_tool(
    State(app): State<AppState>,
    h: HeaderMap,
    Path((name, tool)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let who = app.who(&h, Need::Admin).await?;
    let server = need_server(&app, &name).await?;
    check_name("tool name", &tool)?;
    let spec: ToolSpec = parse(&body)?;
    let version = spec
        .version
        .or(server.version)
        .ok_or_else(|| ApiError::bad_request("version: required (the server declares none)"))?;
    check_semver("version", &version)?;
    check_lifecycle(&spec.lifecycle, &spec.sunset)?;
    let row = ToolRow {
        server: name.clone(),
        name: tool.clone(),
        version,
        lifecycle: spec.lifecycle,
        sunset: spec.sunset,
        replacement: spec.replacement,
        approved: spec.approved,
        source: "declared".into(),
        approved_by: spec.approved.then(|| who.name.clone()),
        updated_ms: now_ms(),
    };
    app.store.put_tool(&row).await?;
    let v = app.changed(&format!("tool {name}/{tool} saved")).await?;
    let mut out = serde_json::to_value(&row).map_err(|e| ApiError::internal(e.to_string()))?;
    out["snapshot"] = json!(v);
    Ok(json(&out))
}

async fn need_tool(app: &AppState, server: &str, tool: &str) -> ApiResult<ToolRow> {
    app.store
        .tool(server, tool)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("tool {server}/{tool} not in the catalog")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Approve {
    #[serde(default = "yes")]
    approved: bool,
}

/// `POST /v1/servers/{name}/tools/{tool}/approve` (operator): expose (or hide) a tool.
pub async fn approve_tool(
    State(app): State<AppState>,
    h: HeaderMap,
    Path((name, tool)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let who = app.who(&h, Need::Operate).await?;
    let a: Approve = if body.is_empty() {
        Approve { approved: true }
    } else {
        parse(&body)?
    };
    let mut t = need_tool(&app, &name, &tool).await?;
    t.approved = a.approved;
    t.approved_by = a.approved.then(|| who.name.clone());
    t.updated_ms = now_ms();
    app.store.put_tool(&t).await?;
    let v = app
        .changed(&format!(
            "tool {name}/{tool} {}",
            if a.approved { "approved" } else { "unapproved" }
        ))
        .await?;
    let mut out = serde_json::to_value(&t).map_err(|e| ApiError::internal(e.to_string()))?;
    out["snapshot"] = json!(v);
    Ok(json(&out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleSpec {
    state: String,
    #[serde(default)]
    sunset: Option<String>,
    #[serde(default)]
    replacement: Option<String>,
}

/// `POST /v1/servers/{name}/tools/{tool}/lifecycle` (operator): active / deprecated / retired.
pub async fn set_lifecycle(
    State(app): State<AppState>,
    h: HeaderMap,
    Path((name, tool)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    app.who(&h, Need::Operate).await?;
    let spec: LifecycleSpec = parse(&body)?;
    check_lifecycle(&spec.state, &spec.sunset)?;
    let mut t = need_tool(&app, &name, &tool).await?;
    t.lifecycle = spec.state;
    t.sunset = if t.lifecycle == "deprecated" {
        spec.sunset
    } else {
        None
    };
    t.replacement = spec.replacement;
    t.updated_ms = now_ms();
    app.store.put_tool(&t).await?;
    let v = app
        .changed(&format!("tool {name}/{tool} {}", t.lifecycle))
        .await?;
    let mut out = serde_json::to_value(&t).map_err(|e| ApiError::internal(e.to_string()))?;
    out["snapshot"] = json!(v);
    Ok(json(&out))
}

/// `GET /v1/zones`.
pub async fn list_zones(State(app): State<AppState>, h: HeaderMap) -> ApiResult<Response> {
    app.who(&h, Need::Read).await?;
    Ok(json(&app.store.zones().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneSpec {
    #[serde(default)]
    description: String,
}

/// `PUT /v1/zones/{name}` (admin).
pub async fn put_zone(
    State(app): State<AppState>,
    h: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    app.who(&h, Need::Admin).await?;
    check_name("zone name", &name)?;
    let spec: ZoneSpec = if body.is_empty() {
        ZoneSpec {
            description: String::new(),
        }
    } else {
        parse(&body)?
    };
    let z = ZoneRow {
        name,
        description: spec.description,
    };
    app.store.put_zone(&z).await?;
    app.changed(&format!("zone {} saved", z.name)).await?;
    Ok(json(&z))
}

/// `DELETE /v1/zones/{name}` (admin): refused while a server is in it.
pub async fn delete_zone(
    State(app): State<AppState>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    app.who(&h, Need::Admin).await?;
    if let Some(s) = app
        .store
        .servers()
        .await?
        .into_iter()
        .find(|s| s.zone == name)
    {
        return Err(ApiError::conflict(format!(
            "zone {name:?} still holds server {:?}",
            s.name
        )));
    }
    if !app.store.delete_zone(&name).await? {
        return Err(ApiError::not_found(format!("zone {name:?} does not exist")));
    }
    app.changed(&format!("zone {name} deleted")).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Discovered {
    server: String,
    #[serde(default)]
    version: Option<String>,
    tools: Vec<DiscoveredTool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DiscoveredTool {
    Name(String),
    Object { name: String },
}

/// `POST /v1/hubs/{id}/discovered` (hub): tools an upstream lists. New ones are recorded
/// unapproved (an operator approves them); known ones get the reported version.
pub async fn discovered(
    State(app): State<AppState>,
    h: HeaderMap,
    Path(hub): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    app.who(&h, Need::Hub).await?;
    let d: Discovered = parse(&body)?;
    let server = need_server(&app, &d.server).await?;
    let version = d
        .version
        .or(server.version)
        .unwrap_or_else(|| "0.0.0".into());
    if semver::Version::parse(&version).is_err() {
        return Err(ApiError::bad_request(format!(
            "version {version:?} is not semver"
        )));
    }
    let names: Vec<String> = d
        .tools
        .into_iter()
        .map(|t| match t {
            DiscoveredTool::Name(n) | DiscoveredTool::Object { name: n } => n,
        })
        .collect();
    for n in &names {
        check_name("tool name", n)?;
    }
    let before = app.store.tools(Some(&d.server)).await?;
    let new = app
        .store
        .record_discovered(&d.server, &version, &names, now_ms())
        .await?;
    if new > 0 {
        tracing::info!(hub = %hub, server = %d.server, new, "hub reported new tools (awaiting approval)");
    }
    // A new version of a published (approved or retired) tool changes what hubs see.
    let moved = before
        .iter()
        .filter(|t| t.source == "reported" && t.version != version)
        .filter(|t| t.approved || t.lifecycle == "retired")
        .any(|t| names.contains(&t.name));
    let snapshot = if moved {
        Some(
            app.changed(&format!("server {} reported version {version}", d.server))
                .await?,
        )
    } else {
        None
    };
    Ok(json(
        &json!({"new": new, "known": names.len() - new, "snapshot": snapshot}),
    ))
}
