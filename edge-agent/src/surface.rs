//! The edge agent's one HTTP surface: a cheap-`Clone` hyper service the tunnel calls for every
//! stream the hub opens (and `serve-local` calls for loopback connections in tests).
//!
//! Routes:
//! - `GET /meshgate/edge/announce` — what this edge offers (`{"edge", "servers": [...]}`);
//! - `GET /meshgate/edge/status` — process/pool/session state and stream counters (diagnostics,
//!   tests);
//! - `POST|GET|DELETE /mcp/<server>` — MCP Streamable HTTP, legacy session era.
//!
//! For `/mcp/<server>` the surface owns the agent sessions (`Mcp-Session-Id` minted here), parses
//! each POSTed message once, and hands it to the server's backend: the in-process
//! [`crate::device`] server, a [`crate::stdio`] server (shared or per-session), or — without
//! parsing anything — the [`crate::httpproxy`] for local HTTP servers. Requests are answered as
//! SSE streams carrying the related notifications and server→client requests, then the response.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use mcp_wire::jsonrpc::code;

use crate::body::{self, http_rpc_error, BoxBody, Sink};
use crate::config::{EdgeConfig, ServerKind, StdioMode};
use crate::httpproxy::HttpServer;
use crate::mux::CallError;
use crate::session::{lock, Session};
use crate::stdio::{PerSessionServer, SharedServer};

/// Idle timeout of device-server sessions.
const DEVICE_SESSION_IDLE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
enum Backend {
    Device,
    Shared(Arc<SharedServer>, Option<Duration>),
    PerSession(Arc<PerSessionServer>, Option<Duration>),
    Http(Arc<HttpServer>),
}

impl Backend {
    fn session_idle(&self) -> Option<Duration> {
        match self {
            Backend::Device => Some(DEVICE_SESSION_IDLE),
            Backend::Shared(_, d) | Backend::PerSession(_, d) => *d,
            Backend::Http(_) => None,
        }
    }
}

#[derive(Debug)]
struct Inner {
    edge_id: String,
    servers: HashMap<String, Backend>,
    announce: Vec<Value>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

/// The hyper service serving announce and every local MCP server. Clone freely.
#[derive(Debug, Clone)]
pub struct Surface {
    inner: Arc<Inner>,
}

impl Surface {
    /// Builds every server from the config and starts their supervisors (stdio shared servers
    /// start right away, per-session pools prewarm). Must be called inside a tokio runtime.
    pub fn new(cfg: &EdgeConfig) -> Result<Surface, String> {
        let mut servers = HashMap::new();
        let mut announce = Vec::new();
        if cfg.device_enabled {
            servers.insert("device".to_owned(), Backend::Device);
            announce.push(json!({"name": "device", "kind": "device"}));
        }
        for s in &cfg.servers {
            let name: Arc<str> = Arc::from(s.name.as_str());
            let (backend, entry) = match &s.kind {
                ServerKind::Stdio(sc) => {
                    let entry = json!({"name": s.name, "kind": "stdio", "mode": sc.mode.as_str()});
                    let b = match sc.mode {
                        StdioMode::Shared => {
                            Backend::Shared(SharedServer::new(name, sc.clone()), sc.idle_timeout)
                        }
                        StdioMode::PerSession => Backend::PerSession(
                            PerSessionServer::new(name, sc.clone()),
                            sc.idle_timeout,
                        ),
                    };
                    (b, entry)
                }
                ServerKind::Http { url } => (
                    Backend::Http(Arc::new(HttpServer::new(&s.name, url)?)),
                    json!({"name": s.name, "kind": "http"}),
                ),
            };
            servers.insert(s.name.clone(), backend);
            announce.push(entry);
        }
        let inner = Arc::new(Inner {
            edge_id: cfg.edge_id.clone(),
            servers,
            announce,
            sessions: Mutex::new(HashMap::new()),
        });
        tokio::spawn(reap_sessions(Arc::downgrade(&inner)));
        Ok(Surface { inner })
    }

    /// This edge's id.
    pub fn edge_id(&self) -> &str {
        &self.inner.edge_id
    }

    /// The announce document (`GET /meshgate/edge/announce`).
    pub fn announce(&self) -> Value {
        json!({"edge": self.inner.edge_id, "servers": self.inner.announce})
    }

    /// Ends every session (their per-session processes stop, shared servers forget them).
    /// Called when the tunnel is lost: the hub forgets its upstream sessions on this edge at
    /// the same moment and opens fresh ones when the edge returns, so nothing would ever use
    /// the old ones again.
    pub fn end_all_sessions(&self) -> usize {
        let all: Vec<Arc<Session>> = lock(&self.inner.sessions).drain().map(|(_, s)| s).collect();
        for s in &all {
            s.close_streams();
            match self.inner.servers.get(&*s.server) {
                Some(Backend::Shared(b, _)) => b.close(s),
                Some(Backend::PerSession(b, _)) => b.close(s),
                Some(Backend::Device | Backend::Http(_)) | None => {}
            }
        }
        all.len()
    }

    /// Kills every child process (agent shutdown).
    pub fn shutdown(&self) {
        crate::supervisor::kill_all_children();
    }

    /// Serves one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<BoxBody> {
        let path = req.uri().path().to_owned();
        match (req.method(), path.as_str()) {
            (&Method::GET, "/meshgate/edge/announce") => {
                body::json(StatusCode::OK, &self.announce())
            }
            (&Method::GET, "/meshgate/edge/status") => body::json(StatusCode::OK, &self.status()),
            (_, p) if p.starts_with("/mcp/") => {
                let name = &p["/mcp/".len()..];
                let name = name.strip_suffix('/').unwrap_or(name);
                match self.inner.servers.get(name).cloned() {
                    Some(Backend::Http(h)) => h.forward(req).await,
                    Some(b) => self.mcp(name, b, req).await,
                    None => http_rpc_error(
                        StatusCode::NOT_FOUND,
                        None,
                        code::INVALID_REQUEST,
                        format!("unknown server '{name}' on edge '{}'", self.inner.edge_id),
                    ),
                }
            }
            _ => http_rpc_error(
                StatusCode::NOT_FOUND,
                None,
                code::INVALID_REQUEST,
                format!("no route for {path} (try /mcp/<server> or /meshgate/edge/announce)"),
            ),
        }
    }

    fn status(&self) -> Value {
        let servers: Vec<Value> = self
            .inner
            .announce
            .iter()
            .map(|a| {
                let name = a["name"].as_str().unwrap_or_default();
                let mut v = a.clone();
                let st = match self.inner.servers.get(name) {
                    Some(Backend::Shared(s, _)) => s.status_json(),
                    Some(Backend::PerSession(s, _)) => s.status_json(),
                    _ => json!({"state": "running"}),
                };
                if let (Some(o), Value::Object(st)) = (v.as_object_mut(), st) {
                    o.extend(st);
                }
                v
            })
            .collect();
        let sessions = lock(&self.inner.sessions).len();
        json!({
            "edge": self.inner.edge_id,
            "servers": servers,
            "sessions": sessions,
            "children": crate::supervisor::live_children(),
            // SSE streams cut because their consumer fell behind (see `body`).
            "streams": {"dropped_slow_consumer": body::slow_consumer_drops()},
        })
    }

    fn session(&self, name: &str, req: &Request<Incoming>) -> Result<Arc<Session>, SessionError> {
        let Some(id) = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        else {
            return Err(SessionError::Missing);
        };
        let mut sessions = lock(&self.inner.sessions);
        match sessions.get(id) {
            Some(s) if &*s.server == name => {
                // A per-session process that died took the session's server state with it: the
                // session is over (404), so the client re-initializes onto a fresh process.
                if lock(&s.mux).as_ref().is_some_and(|m| !m.is_alive()) {
                    let s = sessions.remove(id);
                    drop(sessions);
                    if let Some(s) = s {
                        s.close_streams();
                        lock(&s.mux).take();
                    }
                    return Err(SessionError::Unknown);
                }
                s.touch();
                Ok(s.clone())
            }
            _ => Err(SessionError::Unknown),
        }
    }

    async fn mcp(&self, name: &str, backend: Backend, req: Request<Incoming>) -> Response<BoxBody> {
        if let Some(v) = req.headers().get("mcp-protocol-version") {
            let ok = v
                .to_str()
                .ok()
                .and_then(mcp_wire::mcp::legacy_revision)
                .is_some();
            if !ok {
                return http_rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    code::INVALID_REQUEST,
                    format!("unsupported MCP-Protocol-Version {v:?}"),
                );
            }
        }
        match *req.method() {
            Method::POST => self.post(name, backend, req).await,
            Method::GET => match self.session(name, &req) {
                Ok(s) => {
                    let last = req
                        .headers()
                        .get("last-event-id")
                        .and_then(|v| v.to_str().ok());
                    body::sse(s.open_get_stream(last))
                }
                Err(e) => e.response(name),
            },
            Method::DELETE => match self.session(name, &req) {
                Ok(s) => {
                    self.close_session(&s, &backend);
                    body::status(StatusCode::OK)
                }
                Err(e) => e.response(name),
            },
            _ => {
                let mut r = body::status(StatusCode::METHOD_NOT_ALLOWED);
                r.headers_mut().insert(
                    hyper::header::ALLOW,
                    hyper::header::HeaderValue::from_static("GET, POST, DELETE"),
                );
                r
            }
        }
    }

    fn close_session(&self, s: &Arc<Session>, backend: &Backend) {
        lock(&self.inner.sessions).remove(&s.id);
        s.close_streams();
        match backend {
            Backend::Shared(b, _) => b.close(s),
            Backend::PerSession(b, _) => b.close(s),
            Backend::Device | Backend::Http(_) => {}
        }
    }

    async fn post(
        &self,
        name: &str,
        backend: Backend,
        req: Request<Incoming>,
    ) -> Response<BoxBody> {
        let revision = req
            .headers()
            .get("mcp-protocol-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(mcp_wire::mcp::DEFAULT_ASSUMED_REVISION)
            .to_owned();
        let sess = if req.headers().contains_key("mcp-session-id") {
            Some(self.session(name, &req))
        } else {
            None
        };
        let bytes = match http_body_util::Limited::new(req.into_body(), crate::httpproxy::MAX_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return http_rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    code::INVALID_REQUEST,
                    format!("cannot read body: {e}"),
                )
            }
        };
        let msg: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return http_rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    code::PARSE_ERROR,
                    format!("Parse error: {e}"),
                )
            }
        };
        if let Value::Array(items) = msg {
            return self.batch(name, &backend, sess, &revision, items);
        }
        let kind = match classify(&msg) {
            Ok(k) => k,
            Err(e) => {
                return http_rpc_error(
                    StatusCode::BAD_REQUEST,
                    msg.get("id"),
                    code::INVALID_REQUEST,
                    e,
                )
            }
        };
        if let Msg::Request(m, id) = &kind {
            if m == mcp_wire::mcp::method::INITIALIZE {
                return self.initialize(name, &backend, id, &msg).await;
            }
        }
        let s = match sess {
            Some(Ok(s)) => s,
            Some(Err(e)) => return e.response(name),
            None => return SessionError::Missing.response(name),
        };
        match kind {
            Msg::Request(m, id) => {
                if m == mcp_wire::mcp::method::PING {
                    return body::json(StatusCode::OK, &body::rpc_result(&id, json!({})));
                }
                if let Backend::Device = backend {
                    return body::json(StatusCode::OK, &crate::device::handle(&msg).await);
                }
                let (sink, sse) = Sink::new(format!("POST session={} server={name}", s.id));
                spawn_request(backend, s, msg, id, sink);
                body::sse(sse)
            }
            Msg::Notification => {
                notify(&backend, &s, msg);
                body::status(StatusCode::ACCEPTED)
            }
            Msg::Response => {
                respond(name, &backend, &s, msg);
                body::status(StatusCode::ACCEPTED)
            }
        }
    }

    /// A JSON-RPC batch (2025-03-26 only): requests answered on one SSE stream, which ends after
    /// the last response; a batch of only notifications/responses gets 202.
    fn batch(
        &self,
        name: &str,
        backend: &Backend,
        sess: Option<Result<Arc<Session>, SessionError>>,
        revision: &str,
        items: Vec<Value>,
    ) -> Response<BoxBody> {
        if !mcp_wire::mcp::allows_batch(revision) || items.is_empty() {
            return http_rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                code::INVALID_REQUEST,
                format!("Invalid Request: JSON-RPC batches are not allowed in protocol revision {revision} (send one message per POST)"),
            );
        }
        let s = match sess {
            Some(Ok(s)) => s,
            Some(Err(e)) => return e.response(name),
            None => return SessionError::Missing.response(name),
        };
        let (sink, sse) = Sink::new(format!("POST batch session={} server={name}", s.id));
        let mut answers = false;
        for item in items {
            match classify(&item) {
                Ok(Msg::Request(m, id)) if m == mcp_wire::mcp::method::INITIALIZE => {
                    answers = true;
                    sink.send(&body::rpc_error(
                        Some(&id),
                        code::INVALID_REQUEST,
                        "initialize must not be part of a batch",
                    ));
                }
                Ok(Msg::Request(_, id)) => {
                    answers = true;
                    spawn_request(backend.clone(), s.clone(), item, id, sink.clone());
                }
                Ok(Msg::Notification) => notify(backend, &s, item),
                Ok(Msg::Response) => respond(name, backend, &s, item),
                Err(e) => {
                    answers = true;
                    sink.send(&body::rpc_error(item.get("id"), code::INVALID_REQUEST, e));
                }
            }
        }
        if answers {
            body::sse(sse)
        } else {
            body::status(StatusCode::ACCEPTED)
        }
    }

    async fn initialize(
        &self,
        name: &str,
        backend: &Backend,
        id: &Value,
        msg: &Value,
    ) -> Response<BoxBody> {
        let s = Session::new(Arc::from(name));
        let result = match backend {
            Backend::Device => Ok(crate::device::initialize_result(
                msg.pointer("/params/protocolVersion")
                    .and_then(Value::as_str),
            )),
            Backend::Shared(b, _) => b.open(&s).await,
            Backend::PerSession(b, _) => b.open(&s).await,
            Backend::Http(_) => Err("unreachable".to_owned()),
        };
        match result {
            Ok(mut r) => {
                // The agent is the server this client talks to: it speaks any legacy revision
                // the client asks for (transport rules follow the client's revision; message
                // shapes are the child's and compatible across legacy revisions).
                if let Some(rev) = msg
                    .pointer("/params/protocolVersion")
                    .and_then(Value::as_str)
                    .and_then(mcp_wire::mcp::legacy_revision)
                {
                    r["protocolVersion"] = json!(rev);
                }
                // The backend may have waited for a process start: the idle clock starts now.
                s.touch();
                lock(&self.inner.sessions).insert(s.id.clone(), s.clone());
                let mut resp = body::json(StatusCode::OK, &body::rpc_result(id, r));
                if let Ok(v) = s.id.parse() {
                    resp.headers_mut().insert("mcp-session-id", v);
                }
                resp
            }
            Err(e) => body::json(
                StatusCode::OK,
                &body::rpc_error(Some(id), code::INTERNAL_ERROR, e),
            ),
        }
    }
}

/// Why a request's session could not be used.
#[derive(Debug, Clone, Copy)]
enum SessionError {
    /// No `Mcp-Session-Id` header.
    Missing,
    /// Unknown, deleted or expired id, or one of another server.
    Unknown,
}

impl SessionError {
    fn response(self, name: &str) -> Response<BoxBody> {
        match self {
            SessionError::Missing => http_rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                code::INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is required (send initialize first)",
            ),
            SessionError::Unknown => http_rpc_error(
                StatusCode::NOT_FOUND,
                None,
                code::INVALID_REQUEST,
                format!(
                    "session not found on server '{name}' (expired or deleted): initialize again"
                ),
            ),
        }
    }
}

/// What a posted JSON-RPC message is.
enum Msg {
    /// A request: method and id.
    Request(String, Value),
    /// A notification.
    Notification,
    /// A response (the client answering a server→client request).
    Response,
}

fn classify(v: &Value) -> Result<Msg, &'static str> {
    let Some(obj) = v.as_object() else {
        return Err("Invalid Request: expected a JSON-RPC message object");
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("Invalid Request: jsonrpc must be \"2.0\"");
    }
    let id = obj
        .get("id")
        .filter(|i| i.is_string() || i.is_number())
        .cloned();
    match (obj.get("method"), id) {
        (Some(Value::String(m)), Some(id)) => Ok(Msg::Request(m.clone(), id)),
        (Some(Value::String(_)), None) if !obj.contains_key("id") => Ok(Msg::Notification),
        (None, Some(_)) if obj.contains_key("result") || obj.contains_key("error") => {
            Ok(Msg::Response)
        }
        _ => Err("Invalid Request: not a JSON-RPC 2.0 request, notification or response"),
    }
}

/// Runs a request in the background; its related messages and then its response go to `sink`.
fn spawn_request(backend: Backend, s: Arc<Session>, msg: Value, id: Value, sink: Sink) {
    tokio::spawn(async move {
        let r = match &backend {
            Backend::Device => Ok(crate::device::handle(&msg).await),
            Backend::Shared(b, _) => b.call(&s, msg, sink.clone()).await,
            Backend::PerSession(b, _) => b.call(&s, msg, sink.clone()).await,
            Backend::Http(_) => Err(CallError::Exited(
                "http servers are proxied, not dispatched".to_owned(),
            )),
        };
        // A long call is activity too: the idle clock restarts when it ends.
        s.touch();
        finish(&sink, &id, r);
    });
}

fn notify(backend: &Backend, s: &Session, msg: Value) {
    match backend {
        Backend::Shared(b, _) => b.notify(s, msg),
        Backend::PerSession(b, _) => b.notify(s, msg),
        Backend::Device | Backend::Http(_) => {}
    }
}

fn respond(name: &str, backend: &Backend, s: &Session, msg: Value) {
    let known = match backend {
        Backend::Shared(b, _) => b.respond(msg),
        Backend::PerSession(b, _) => b.respond(s, msg),
        Backend::Device | Backend::Http(_) => false,
    };
    if !known {
        tracing::debug!(
            server = name,
            "client response for an unknown or expired request id"
        );
    }
}

/// Ends a request's SSE stream with its response (or the error naming the server).
fn finish(sink: &Sink, id: &Value, r: Result<Value, CallError>) {
    match r {
        Ok(v) => {
            sink.send(&v);
        }
        Err(CallError::Exited(e)) => {
            sink.send(&body::rpc_error(Some(id), code::INTERNAL_ERROR, e));
        }
        Err(CallError::Cancelled) => {}
    }
}

/// Periodically closes sessions idle for longer than their server's idle timeout (sessions
/// holding an open GET stream count as active).
async fn reap_sessions(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(inner) = inner.upgrade() else { return };
        let expired: Vec<(Arc<Session>, Backend)> = {
            let sessions = lock(&inner.sessions);
            sessions
                .values()
                .filter_map(|s| {
                    let b = inner.servers.get(&*s.server)?;
                    let limit = b.session_idle()?;
                    (s.last_seen().elapsed() > limit && !s.has_get_stream())
                        .then(|| (s.clone(), b.clone()))
                })
                .collect()
        };
        for (s, b) in expired {
            tracing::info!(server = %s.server, session = %s.id, "session idle: closing");
            lock(&inner.sessions).remove(&s.id);
            s.close_streams();
            match b {
                Backend::Shared(b, _) => b.close(&s),
                Backend::PerSession(b, _) => b.close(&s),
                Backend::Device | Backend::Http(_) => {}
            }
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for Surface {
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let s = self.clone();
        Box::pin(async move { Ok(s.handle(req).await) })
    }
}

/// Serves the surface on a TCP listener (HTTP/1.1), one task per connection, until the listener
/// fails. Used by `serve-local` (tests) — the real path is the tunnel.
pub async fn serve_tcp(surface: Surface, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let svc = surface.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(tcp);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}
