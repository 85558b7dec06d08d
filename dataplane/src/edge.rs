//! Edge tunnels, the hub's end: accepts `meshgate-edge` links, binds each server an edge
//! announces to an upstream slot, and carries the dataplane's requests for those slots over the
//! link. Off the request path's hot loop: it runs on its own thread with a small tokio runtime
//! (quinn, rustls and hyper live there), never on a monoio worker.
//!
//! # How a call reaches an edge
//!
//! Edge slots are ordinary upstreams to the workers (`Upstream::edge_slot`), whose address is
//! the **bridge**: a loopback HTTP/1.1 listener on this thread, reached at `/slot/<k>/<token>`
//! (the token is random per process, so nothing else on the box can use the bridge). The bridge
//! picks the link for the request — the edge that minted the request's `Mcp-Session-Id`, or, for
//! `initialize`, the next edge announcing that server (several edges announcing one server name
//! are replicas of one upstream) — and sends it as one hub-opened stream over that link. The
//! answer (JSON or a long SSE stream) streams back unchanged. Reusing the workers' own HTTP
//! client this way keeps every upstream feature (pooling, SSE relay, resumption, re-initialize
//! on 404) identical for edge and datacenter servers, at the price of one loopback hop.
//!
//! # Presence is health
//!
//! A slot is up while at least one link announcing it lives; it goes down the moment the last
//! one is lost (its tools leave the lists with `list_changed`, new calls fail fast), and its
//! upstream sessions are forgotten so a returning edge starts clean. Calls in flight on a lost
//! link end at once: the stream's body fails, the bridge breaks the response, the worker reports
//! a clear error.

// This module runs on its own tokio thread, where tokio::spawn is the right call.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use meshgate_tunnel::hub::{Acceptor, EdgeLink, HubConfig};
use meshgate_tunnel::TlsFiles;
use parking_lot::Mutex;

use crate::config::snapshot::is_mcp_name;
use crate::config::EdgeSettings;
use crate::hub::Hub;

type BoxBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Largest request body the bridge forwards (the workers enforce the client limit first).
const MAX_BRIDGE_BODY: usize = 16 * 1024 * 1024;

/// The loopback listener the workers reach edge slots through, bound before the workers start.
pub struct Bridge {
    listener: std::net::TcpListener,
    /// Its address.
    pub addr: SocketAddr,
    /// The per-process secret in every bridge path.
    pub token: String,
}

impl Bridge {
    /// Binds the bridge on an ephemeral loopback port with a fresh random token.
    ///
    /// # Errors
    /// When the port cannot be bound or no randomness is available.
    pub fn bind() -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
        let token = raw.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            listener,
            addr,
            token,
        })
    }
}

/// One connected edge.
struct EdgeEntry {
    link: EdgeLink,
    /// Distinguishes this connection from a later one of the same edge.
    conn: u64,
    /// Slots it announced.
    slots: Vec<usize>,
}

/// Who serves what, shared by the acceptor and the bridge.
#[derive(Default)]
struct Registry {
    /// Connected edges by id.
    edges: HashMap<String, EdgeEntry>,
    /// Per slot: the edges announcing it, in arrival order, and a round-robin cursor.
    slots: Vec<(Vec<String>, usize)>,
    /// Upstream session id (minted by an edge) → that edge.
    sessions: HashMap<String, String>,
}

struct Ctx {
    hub: Arc<Hub>,
    /// Upstream index of slot 0.
    base: usize,
    token: String,
    reg: Mutex<Registry>,
    next_conn: AtomicU64,
}

/// Starts the edge thread: binds the tunnel listener, then serves the bridge and accepts edges
/// until the process exits. Returns the tunnel address once it is bound.
///
/// # Errors
/// When the thread or its runtime cannot start, or the tunnel listener cannot be bound (bad
/// certificate files, port in use): the hub refuses to start rather than run without its edges.
pub fn start(
    hub: Arc<Hub>,
    settings: &EdgeSettings,
    bridge: Bridge,
) -> std::io::Result<SocketAddr> {
    let base = hub
        .snap
        .upstreams
        .iter()
        .position(|u| u.edge_slot.is_some())
        .unwrap_or(hub.snap.upstreams.len());
    let ctx = Arc::new(Ctx {
        hub,
        base,
        token: bridge.token.clone(),
        reg: Mutex::new(Registry {
            slots: vec![(Vec::new(), 0); settings.slots],
            ..Registry::default()
        }),
        next_conn: AtomicU64::new(1),
    });
    let cfg = HubConfig {
        listen: settings.listen,
        tls: TlsFiles {
            ca: settings.ca.clone(),
            cert: settings.cert.clone(),
            key: settings.key.clone(),
        },
        keepalive: settings.keepalive,
        idle_timeout: settings.idle_timeout,
        quic: settings.quic,
        tcp: settings.tcp,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<SocketAddr>>();
    std::thread::Builder::new()
        .name("meshgate-edge".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let acceptor = match Acceptor::bind(cfg).await {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = ready_tx.send(Err(std::io::Error::other(e.to_string())));
                        return;
                    }
                };
                let listener = match tokio::net::TcpListener::from_std(bridge.listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(acceptor.local_addr()));
                tokio::spawn(serve_bridge(ctx.clone(), listener));
                accept_loop(ctx, acceptor).await;
            });
        })?;
    ready_rx
        .recv()
        .map_err(|_| std::io::Error::other("the edge thread stopped before binding"))?
}

async fn accept_loop(ctx: Arc<Ctx>, mut acceptor: Acceptor) {
    loop {
        match acceptor.accept().await {
            Ok(link) => {
                tokio::spawn(run_link(ctx.clone(), link));
            }
            Err(e) => {
                tracing::error!(error = %e, "edge tunnel listener failed; retrying in 1s");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// What an edge announces on connect (`GET /meshgate/edge/announce`).
#[derive(serde::Deserialize)]
struct Announce {
    servers: Vec<AnnouncedServer>,
}

#[derive(serde::Deserialize)]
struct AnnouncedServer {
    name: String,
}

async fn fetch_announce(link: &EdgeLink) -> Result<Vec<String>, String> {
    let req = Request::get("/meshgate/edge/announce")
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), link.send(req))
        .await
        .map_err(|_| "no announcement within 10s".to_string())?
        .map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::OK {
        return Err(format!("announce answered HTTP {}", resp.status()));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let a: Announce =
        serde_json::from_slice(&body).map_err(|e| format!("bad announcement: {e}"))?;
    Ok(a.servers.into_iter().map(|s| s.name).collect())
}

async fn run_link(ctx: Arc<Ctx>, link: EdgeLink) {
    let edge = link.edge_id().to_string();
    let servers = match fetch_announce(&link).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(edge = %edge, remote = %link.remote_addr(), error = %e, "edge refused: its announcement failed");
            link.close("announcement failed");
            return;
        }
    };
    let conn = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
    let (slots, came_up, replaced) = register(&ctx, &edge, conn, &link, &servers);
    if let Some(old) = replaced {
        old.close("replaced by a newer connection of the same edge");
    }
    for k in &came_up {
        forget_upstream_sessions(&ctx.hub, ctx.base + k);
        ctx.hub.set_up(ctx.base + k, true, "edge announced it");
    }
    let names: Vec<&str> = slots
        .iter()
        .map(|k| &*ctx.hub.snap.upstreams[ctx.base + k].name)
        .collect();
    tracing::info!(edge = %edge, transport = %link.transport(), remote = %link.remote_addr(), servers = ?names, "edge connected");
    link.closed().await;
    let went_down = unregister(&ctx, &edge, conn);
    for k in &went_down {
        ctx.hub.set_up(
            ctx.base + k,
            false,
            &format!("edge tunnel lost (edge '{edge}')"),
        );
        forget_upstream_sessions(&ctx.hub, ctx.base + k);
    }
    tracing::warn!(edge = %edge, transport = %link.transport(), "edge disconnected: calls to its servers fail until it returns");
}

/// Records a new link; returns its slots, the slots that had no edge before, and the older
/// link of the same edge it replaces.
fn register(
    ctx: &Ctx,
    edge: &str,
    conn: u64,
    link: &EdgeLink,
    servers: &[String],
) -> (Vec<usize>, Vec<usize>, Option<EdgeLink>) {
    let snap = &ctx.hub.snap;
    let mut reg = ctx.reg.lock();
    let replaced = reg.edges.remove(edge).map(|old| {
        for k in &old.slots {
            reg.slots[*k].0.retain(|e| e != edge);
        }
        old.link
    });
    let mut slots = Vec::new();
    let mut came_up = Vec::new();
    for name in servers {
        let ok_name = is_mcp_name(name)
            && snap
                .separator
                .as_deref()
                .is_none_or(|sep| !name.contains(sep));
        if !ok_name {
            tracing::warn!(edge = %edge, server = %name, "edge server name is not usable (1-128 of [A-Za-z0-9_.-], without the separator); skipped");
            continue;
        }
        if snap
            .upstreams
            .iter()
            .any(|u| u.edge_slot.is_none() && &*u.name == name)
        {
            tracing::warn!(edge = %edge, server = %name, "edge server has the name of a configured upstream; skipped");
            continue;
        }
        let existing = snap.upstreams[ctx.base..]
            .iter()
            .position(|u| &*u.name == name.as_str());
        let k = match existing {
            Some(k) => k,
            None => {
                let free = snap.upstreams[ctx.base..]
                    .iter()
                    .position(|u| !u.name.is_bound() && u.name.bind(name));
                match free {
                    Some(k) => k,
                    None => {
                        tracing::error!(edge = %edge, server = %name, slots = reg.slots.len(), "no free edge slot for this server name; raise edge.slots");
                        continue;
                    }
                }
            }
        };
        if slots.contains(&k) {
            continue;
        }
        if reg.slots[k].0.is_empty() {
            came_up.push(k);
        }
        reg.slots[k].0.push(edge.to_string());
        slots.push(k);
    }
    reg.edges.insert(
        edge.to_string(),
        EdgeEntry {
            link: link.clone(),
            conn,
            slots: slots.clone(),
        },
    );
    (slots, came_up, replaced)
}

/// Forgets a lost link (unless a newer connection of the edge took its place); returns the
/// slots left with no edge.
fn unregister(ctx: &Ctx, edge: &str, conn: u64) -> Vec<usize> {
    let mut reg = ctx.reg.lock();
    let ours = reg.edges.get(edge).is_some_and(|e| e.conn == conn);
    if !ours {
        return Vec::new();
    }
    let Some(entry) = reg.edges.remove(edge) else {
        return Vec::new();
    };
    reg.sessions.retain(|_, e| e != edge);
    let mut down = Vec::new();
    for k in entry.slots {
        reg.slots[k].0.retain(|e| e != edge);
        if reg.slots[k].0.is_empty() {
            down.push(k);
        }
    }
    down
}

/// Drops every client session's upstream session on `u` (they lived on a lost edge).
fn forget_upstream_sessions(hub: &Hub, u: usize) {
    for s in hub.sessions.all() {
        let mut st = s.state.lock();
        if let Some(slot) = st.upstreams.get_mut(u) {
            *slot = None;
        }
    }
    hub.catalog.invalidate_upstream(u);
}

async fn serve_bridge(ctx: Arc<Ctx>, listener: tokio::net::TcpListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "edge bridge accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| bridge_request(ctx.clone(), req));
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "edge bridge connection ended");
            }
        });
    }
}

fn plain(status: StatusCode, msg: String) -> Response<BoxBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Headers the bridge passes to the edge (everything else is hop-by-hop or the bridge's own).
const FORWARDED: &[&str] = &[
    "accept",
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

async fn bridge_request(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, Infallible> {
    Ok(match bridge_inner(&ctx, req).await {
        Ok(r) => r,
        Err((status, msg)) => plain(status, msg),
    })
}

async fn bridge_inner(
    ctx: &Ctx,
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, (StatusCode, String)> {
    let not_found = || (StatusCode::NOT_FOUND, "not found".to_string());
    let path = req.uri().path();
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let (Some("slot"), Some(k), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(not_found());
    };
    if !same_secret(token.as_bytes(), ctx.token.as_bytes()) {
        return Err(not_found());
    }
    let k: usize = k.parse().map_err(|_| not_found())?;
    let u = ctx.base + k;
    let name = ctx
        .hub
        .snap
        .upstreams
        .get(u)
        .filter(|up| up.name.is_bound())
        .map(|up| up.name.to_string())
        .ok_or_else(not_found)?;
    let sid = req
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (edge, link) = pick_link(ctx, k, sid.as_deref()).map_err(|msg| {
        // An upstream session whose edge is gone reads as "session unknown", so the worker
        // opens a new one on a replica that is still here.
        if sid.is_some() {
            (StatusCode::NOT_FOUND, msg)
        } else {
            (StatusCode::BAD_GATEWAY, msg)
        }
    })?;
    let method = req.method().clone();
    let mut out = Request::builder()
        .method(method.clone())
        .uri(format!("/mcp/{name}"));
    for h in FORWARDED {
        for v in req.headers().get_all(*h) {
            out = out.header(*h, v);
        }
    }
    let body = http_body_util::Limited::new(req.into_body(), MAX_BRIDGE_BODY)
        .collect()
        .await
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("request body: {e}")))?
        .to_bytes();
    let out = out
        .body(Full::new(body))
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    let resp = link.send(out).await.map_err(|e| {
        (
            StatusCode::BAD_GATEWAY,
            format!("edge '{edge}' serving '{name}' is unreachable: {e}"),
        )
    })?;
    if sid.is_none() {
        if let Some(new_sid) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            ctx.reg.lock().sessions.insert(new_sid.to_string(), edge);
        }
    } else if method == hyper::Method::DELETE {
        if let Some(sid) = &sid {
            ctx.reg.lock().sessions.remove(sid);
        }
    }
    let (parts, body) = resp.into_parts();
    let edge_name = name.clone();
    let body = body
        .map_err(move |e| -> Box<dyn std::error::Error + Send + Sync> {
            format!("edge server '{edge_name}': tunnel stream failed: {e}").into()
        })
        .boxed();
    Ok(Response::from_parts(parts, body))
}

/// The link for a request on slot `k`: the edge that minted `sid`, or (no session yet) the next
/// edge announcing the slot, round robin.
fn pick_link(ctx: &Ctx, k: usize, sid: Option<&str>) -> Result<(String, EdgeLink), String> {
    let mut reg = ctx.reg.lock();
    let edge = match sid {
        Some(sid) => reg
            .sessions
            .get(sid)
            .cloned()
            .ok_or_else(|| "no connected edge holds this upstream session".to_string())?,
        None => {
            let (edges, rr) = reg
                .slots
                .get_mut(k)
                .ok_or_else(|| "no such edge slot".to_string())?;
            if edges.is_empty() {
                return Err("no edge serving it is connected".to_string());
            }
            *rr = rr.wrapping_add(1);
            edges[*rr % edges.len()].clone()
        }
    };
    let link = reg
        .edges
        .get(&edge)
        .map(|e| e.link.clone())
        .ok_or_else(|| format!("edge '{edge}' is not connected"))?;
    if link.is_closed() {
        return Err(format!("edge '{edge}' lost its tunnel"));
    }
    Ok((edge, link))
}

/// Compares two secrets without an early exit on the first differing byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
