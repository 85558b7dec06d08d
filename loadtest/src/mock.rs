//! The mock MCP upstream: a fast Streamable HTTP server for load tests and for other crates'
//! integration tests (start it in-process with [`MockServer::start`]).
//!
//! Speaks both eras on one endpoint (`reference/mcp-wire.md` §2–§4):
//! - **legacy**: `initialize` mints an `Mcp-Session-Id`; `notifications/initialized` → 202;
//!   `ping`, `tools/list` (paginated when configured), `tools/call`; GET opens a standalone SSE
//!   stream with periodic `notifications/message` carrying the emit time; DELETE ends the
//!   session (200, later 404); an unknown session → 404; a missing one → 400.
//! - **modern** (`2026-07-28`): a request whose `params._meta["io.modelcontextprotocol/
//!   protocolVersion"]` is `2026-07-28` is served statelessly, `server/discover` included;
//!   results carry `resultType` and, for lists, `ttlMs`/`cacheScope`.
//!
//! Performance notes: one task per connection, keep-alive, `TCP_NODELAY`, the request head is
//! parsed in place, the JSON body is decoded borrowing from the buffer, and every result body
//! (tool lists, call results) is rendered once at start and spliced around the request id.
//! Service times use [`HiResTimer`] so a 2 ms service time is 2 ms, not 2–3 ms.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::sys::{self, HiResTimer};
use crate::wire::{self, BodyKind};

/// The modern protocol revision served statelessly.
pub const MODERN_VERSION: &str = "2026-07-28";
/// Legacy revisions accepted by `initialize` (the last one is offered by default).
pub const LEGACY_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
const MAX_BODY: usize = 16 * 1024 * 1024;

mod uring;

// === Engine ===

/// Which serving engine runs the mock. Both answer through the same MCP logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// tokio (epoll), hand-rolled HTTP/1.1; supports every option and any thread count.
    #[default]
    Tokio,
    /// monoio (io_uring, epoll fallback) with the dataplane's `h1` codec, one thread.
    /// Falls back to [`Engine::Tokio`] when `threads > 1` or when a stall, a service time,
    /// SSE answers or progress notifications are configured; [`MockHandle::engine`] says
    /// which engine actually runs.
    Monoio,
}

/// Parses `tokio` or `monoio`.
impl FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "tokio" => Ok(Engine::Tokio),
            "monoio" => Ok(Engine::Monoio),
            other => Err(format!("unknown engine {other:?} (tokio | monoio)")),
        }
    }
}

// === ServiceTime ===

/// How long a `tools/call` takes before its result is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServiceTime {
    /// Answer immediately.
    Zero,
    /// Always this long.
    Fixed(Duration),
    /// Uniform between `min` and `max`.
    Uniform {
        /// Lower bound.
        min: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// Exponential with this mean (capped at 20× the mean).
    Exponential {
        /// Mean service time.
        mean: Duration,
    },
}

impl ServiceTime {
    fn sample(&self, rng: &mut u64) -> Duration {
        match *self {
            ServiceTime::Zero => Duration::ZERO,
            ServiceTime::Fixed(d) => d,
            ServiceTime::Uniform { min, max } => {
                let span = max.saturating_sub(min).as_nanos() as f64;
                min + Duration::from_nanos((span * unit(rng)) as u64)
            }
            ServiceTime::Exponential { mean } => {
                let x = -(1.0 - unit(rng)).max(1e-12).ln();
                Duration::from_nanos((mean.as_nanos() as f64 * x.min(20.0)) as u64)
            }
        }
    }
}

/// Parses `0`, `2ms`, `uniform:1ms..5ms`, `exp:2ms` (durations in the workspace grammar of
/// `meshgate-duration`).
impl FromStr for ServiceTime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("uniform:") {
            let (a, b) = rest
                .split_once("..")
                .ok_or_else(|| format!("expected uniform:MIN..MAX, got {s:?}"))?;
            let (min, max) = (parse_duration(a)?, parse_duration(b)?);
            if max < min {
                return Err(format!("uniform max < min in {s:?}"));
            }
            return Ok(ServiceTime::Uniform { min, max });
        }
        if let Some(rest) = s.strip_prefix("exp:") {
            return Ok(ServiceTime::Exponential {
                mean: parse_duration(rest)?,
            });
        }
        let d = parse_duration(s)?;
        Ok(if d.is_zero() {
            ServiceTime::Zero
        } else {
            ServiceTime::Fixed(d)
        })
    }
}

/// A duration in the workspace grammar, with the error as text (the `FromStr` error type).
fn parse_duration(s: &str) -> Result<Duration, String> {
    meshgate_duration::parse(s).map_err(|e| e.to_string())
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(rng: &mut u64) -> f64 {
    (splitmix(rng) >> 11) as f64 / (1u64 << 53) as f64
}

// === MockConfig ===

/// Everything the mock can be told. `Default` is a fast, zero-service-time server on
/// `127.0.0.1:0` with 10 tools, 64-byte results and JSON responses.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Address to bind; port 0 picks a free port (read it back from [`MockHandle::addr`]).
    pub listen: SocketAddr,
    /// Path of the MCP endpoint; other paths get 404.
    pub path: String,
    /// Runtime threads: 1 = a current-thread runtime (the benchmark setting, pin it with
    /// `taskset`); more = a multi-thread runtime.
    pub threads: usize,
    /// Number of tools, named `tool_0` … `tool_{n-1}`.
    pub tool_count: usize,
    /// Tools per `tools/list` page; 0 = everything on one page (no `nextCursor`).
    pub page_size: usize,
    /// Length of the text content in each `tools/call` result, in bytes.
    pub response_bytes: usize,
    /// How long each `tools/call` takes.
    pub service_time: ServiceTime,
    /// Answer `tools/call` as SSE (`text/event-stream`) instead of one JSON object.
    /// A call carrying `_meta.progressToken` is always answered as SSE when
    /// `progress_count > 0`, since progress can only travel on a stream.
    pub sse: bool,
    /// Progress notifications sent during a call that carries `_meta.progressToken`,
    /// spread evenly over the service time.
    pub progress_count: u32,
    /// Period of the `notifications/message` on GET streams; zero = no notifications.
    /// Each carries `params.data.emitNs` (Unix nanoseconds when written) and `seq`.
    pub notify_interval: Duration,
    /// Start of the one stall, measured from server start; ignored when `stall` is zero.
    /// Every request that arrives in `[stall_after, stall_after + stall)` is held until
    /// the stall ends (like a GC pause or a blocked upstream).
    pub stall_after: Duration,
    /// Length of the stall; zero = no stall.
    pub stall: Duration,
    /// Legacy requests other than `initialize` without `Mcp-Session-Id` get 400 when true;
    /// when false they are served as if stateless.
    pub require_session: bool,
    /// Listen backlog (the kernel caps it at `net.core.somaxconn`).
    pub backlog: i32,
    /// `serverInfo.name` reported by `initialize` and `server/discover`.
    pub server_name: String,
    /// Serving engine (see [`Engine`] for when `Monoio` falls back to tokio).
    pub engine: Engine,
    /// The first `read_only_tools` tools carry `annotations: {readOnlyHint: true}` in
    /// `tools/list` (a hub may retry their calls on another replica).
    pub read_only_tools: usize,
    /// Start the text of every `tools/call` result with `<server_name>:`, so a client can tell
    /// which replica answered.
    pub tag_results: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            path: "/mcp".to_owned(),
            threads: 1,
            tool_count: 10,
            page_size: 0,
            response_bytes: 64,
            service_time: ServiceTime::Zero,
            sse: false,
            progress_count: 0,
            notify_interval: Duration::from_secs(1),
            stall_after: Duration::ZERO,
            stall: Duration::ZERO,
            require_session: true,
            backlog: 65535,
            server_name: "meshgate-mock".to_owned(),
            engine: Engine::default(),
            read_only_tools: 0,
            tag_results: false,
        }
    }
}

// === MockServer / MockHandle ===

/// Counters the mock keeps (relaxed atomics, read at any time).
#[derive(Debug, Default)]
pub struct MockStats {
    /// HTTP requests answered.
    pub requests: AtomicU64,
    /// `tools/call` requests answered successfully.
    pub calls: AtomicU64,
    /// `tools/list` requests answered (each page counts).
    pub lists: AtomicU64,
    /// Sessions created by `initialize`.
    pub sessions_created: AtomicU64,
    /// Sessions ended by DELETE.
    pub sessions_deleted: AtomicU64,
    /// GET streams currently open.
    pub streams_open: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
}

/// Entry point: starts a mock on its own thread.
pub struct MockServer;

/// A running mock; dropping it shuts the mock down.
pub struct MockHandle {
    addr: SocketAddr,
    engine: Engine,
    path: String,
    stats: Arc<MockStats>,
    stop: Option<watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockServer {
    /// Binds `cfg.listen` now (so the address is usable when this returns) and serves on a
    /// dedicated thread running its own tokio runtime.
    ///
    /// # Errors
    /// When the address cannot be bound or the thread or runtime cannot be created.
    pub fn start(cfg: MockConfig) -> std::io::Result<MockHandle> {
        let std_listener = sys::bind_listener(cfg.listen, cfg.backlog)?;
        let addr = std_listener.local_addr()?;
        let timer = HiResTimer::start("mock-timer")?;
        let stats = Arc::new(MockStats::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = Arc::new(State::new(cfg.clone(), timer, stats.clone())?);
        let threads = cfg.threads.max(1);
        let engine = match cfg.engine {
            Engine::Monoio if threads == 1 && !needs_tokio(&cfg) => Engine::Monoio,
            _ => Engine::Tokio,
        };
        let thread = if engine == Engine::Monoio {
            // monoio runtimes are not Send: build it on the server thread and wait for it.
            let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
            let thread = std::thread::Builder::new()
                .name("mock".to_owned())
                .spawn(move || uring::run(std_listener, state, stop_rx, ready_tx))?;
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let _ = thread.join();
                    return Err(e);
                }
                Err(_) => {
                    let _ = thread.join();
                    return Err(std::io::Error::other("mock thread ended during start-up"));
                }
            }
            thread
        } else {
            let rt = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("mock-worker")
                    .enable_all()
                    .build()?
            };
            std::thread::Builder::new()
                .name("mock".to_owned())
                .spawn(move || {
                    rt.block_on(async move {
                        match TcpListener::from_std(std_listener) {
                            Ok(l) => accept_loop(l, state, stop_rx).await,
                            Err(e) => eprintln!("mock: cannot register listener: {e}"),
                        }
                    });
                    // Dropping the runtime here cancels every connection and stream task.
                    drop(rt);
                })?
        };
        Ok(MockHandle {
            addr,
            engine,
            path: cfg.path,
            stats,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl MockHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The engine actually serving (a requested [`Engine::Monoio`] may have fallen back).
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// `http://ADDR/PATH`, the MCP endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }

    /// Live counters.
    pub fn stats(&self) -> &MockStats {
        &self.stats
    }

    /// Stops accepting, closes every connection and joins the server thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    /// Blocks until the server thread ends (it only ends after [`MockHandle::shutdown`] or
    /// when the process is interrupted); used by the `mock` subcommand.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn stop_and_join(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

// === State ===

struct Prebuilt {
    /// Legacy / modern `tools/list` results, one per page.
    list_legacy: Vec<Vec<u8>>,
    list_modern: Vec<Vec<u8>>,
    call_legacy: Vec<u8>,
    call_modern: Vec<u8>,
    discover: Vec<u8>,
    init_tail: Vec<u8>,
}

struct State {
    cfg: MockConfig,
    timer: HiResTimer,
    stats: Arc<MockStats>,
    start: Instant,
    nonce: u64,
    next_session: AtomicU64,
    sessions: Vec<Mutex<HashSet<u64>>>,
    pre: Prebuilt,
}

const SHARDS: usize = 16;

impl State {
    fn new(cfg: MockConfig, timer: HiResTimer, stats: Arc<MockStats>) -> std::io::Result<Self> {
        let mut seed = [0u8; 16];
        getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        let nonce = u64::from_le_bytes(seed[..8].try_into().unwrap_or_default());
        let next = u64::from_le_bytes(seed[8..].try_into().unwrap_or_default());
        let pre = prebuild(&cfg);
        Ok(Self {
            cfg,
            timer,
            stats,
            start: Instant::now(),
            nonce,
            next_session: AtomicU64::new(next),
            sessions: (0..SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
            pre,
        })
    }

    fn shard(&self, id: u64) -> &Mutex<HashSet<u64>> {
        &self.sessions[(id as usize) % SHARDS]
    }

    fn mint_session(&self) -> String {
        let mut c = self.next_session.fetch_add(1, Ordering::Relaxed);
        // splitmix is a bijection: distinct counters give distinct, unguessable-looking ids.
        let id = splitmix(&mut c);
        if let Ok(mut s) = self.shard(id).lock() {
            s.insert(id);
        }
        self.stats.sessions_created.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{:016x}", self.nonce, id)
    }

    /// Parses a session header into the id it names (None: malformed or not ours).
    fn parse_session(&self, v: &[u8]) -> Option<u64> {
        if v.len() != 32 {
            return None;
        }
        let s = std::str::from_utf8(v).ok()?;
        let nonce = u64::from_str_radix(&s[..16], 16).ok()?;
        let id = u64::from_str_radix(&s[16..], 16).ok()?;
        (nonce == self.nonce).then_some(id)
    }

    fn session_alive(&self, v: &[u8]) -> bool {
        self.parse_session(v)
            .is_some_and(|id| self.shard(id).lock().is_ok_and(|s| s.contains(&id)))
    }

    fn end_session(&self, v: &[u8]) -> bool {
        let removed = self
            .parse_session(v)
            .is_some_and(|id| self.shard(id).lock().is_ok_and(|mut s| s.remove(&id)));
        if removed {
            self.stats.sessions_deleted.fetch_add(1, Ordering::Relaxed);
        }
        removed
    }

    /// If now is inside the stall window, the instant it ends.
    fn stall_until(&self) -> Option<Instant> {
        if self.cfg.stall.is_zero() {
            return None;
        }
        let from = self.start + self.cfg.stall_after;
        let to = from + self.cfg.stall;
        let now = Instant::now();
        (now >= from && now < to).then_some(to)
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn prebuild(cfg: &MockConfig) -> Prebuilt {
    let server_info = format!(
        "{{\"name\":{},\"version\":\"{}\"}}",
        json_str(&cfg.server_name),
        env!("CARGO_PKG_VERSION")
    );
    let modern_meta = format!("\"_meta\":{{\"io.modelcontextprotocol/serverInfo\":{server_info}}}");
    let tool = |i: usize| {
        let annotations = if i < cfg.read_only_tools {
            ",\"annotations\":{\"readOnlyHint\":true}"
        } else {
            ""
        };
        format!(
            "{{\"name\":\"tool_{i}\",\"description\":\"mock tool {i}\",\"inputSchema\":\
             {{\"type\":\"object\",\"properties\":{{\"text\":{{\"type\":\"string\"}}}}}}{annotations}}}"
        )
    };
    let page = if cfg.page_size == 0 {
        cfg.tool_count.max(1)
    } else {
        cfg.page_size
    };
    let mut list_legacy = Vec::new();
    let mut list_modern = Vec::new();
    let mut start = 0;
    loop {
        let end = (start + page).min(cfg.tool_count);
        let tools: Vec<String> = (start..end).map(tool).collect();
        let next = if end < cfg.tool_count {
            format!(",\"nextCursor\":\"{end}\"")
        } else {
            String::new()
        };
        let body = format!("\"tools\":[{}]{next}", tools.join(","));
        list_legacy.push(format!("{{{body}}}").into_bytes());
        list_modern.push(
            format!(
                "{{{body},\"resultType\":\"complete\",\"ttlMs\":60000,\"cacheScope\":\"public\",{modern_meta}}}"
            )
            .into_bytes(),
        );
        start = end;
        if start >= cfg.tool_count {
            break;
        }
    }
    let mut pad = "x".repeat(cfg.response_bytes);
    if cfg.tag_results {
        // The name goes inside a JSON string literal: escape it.
        let name = json_str(&cfg.server_name);
        pad = format!("{}:{pad}", &name[1..name.len() - 1]);
    }
    let content =
        format!("\"content\":[{{\"type\":\"text\",\"text\":\"{pad}\"}}],\"isError\":false");
    let call_legacy = format!("{{{content}}}").into_bytes();
    let call_modern =
        format!("{{{content},\"resultType\":\"complete\",{modern_meta}}}").into_bytes();
    let discover = format!(
        "{{\"resultType\":\"complete\",\"supportedVersions\":[\"{MODERN_VERSION}\"],\
         \"capabilities\":{{\"tools\":{{\"listChanged\":true}},\"logging\":{{}}}},\
         \"ttlMs\":60000,\"cacheScope\":\"public\",{modern_meta}}}"
    )
    .into_bytes();
    let init_tail = format!(
        ",\"capabilities\":{{\"tools\":{{\"listChanged\":true}},\"logging\":{{}}}},\"serverInfo\":{server_info}}}"
    )
    .into_bytes();
    Prebuilt {
        list_legacy,
        list_modern,
        call_legacy,
        call_modern,
        discover,
        init_tail,
    }
}

// === serving ===

async fn accept_loop(l: TcpListener, state: Arc<State>, stop: watch::Receiver<bool>) {
    let mut stop_accept = stop.clone();
    loop {
        tokio::select! {
            r = l.accept() => match r {
                Ok((s, _)) => {
                    sys::tune_stream(&s, false);
                    state.stats.connections.fetch_add(1, Ordering::Relaxed);
                    let st = state.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let mut stop = stop;
                        tokio::select! {
                            _ = serve_conn(st, s) => {}
                            _ = stop.wait_for(|v| *v) => {}
                        }
                    });
                }
                // EMFILE and friends: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            _ = stop_accept.wait_for(|v| *v) => return,
        }
    }
}

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
}

#[derive(Deserialize, Default)]
struct Params<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    cursor: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "protocolVersion")]
    protocol_version: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "_meta")]
    meta: Option<Meta<'a>>,
}

#[derive(Deserialize, Default)]
struct Meta<'a> {
    #[serde(borrow, default, rename = "progressToken")]
    progress_token: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "io.modelcontextprotocol/protocolVersion")]
    protocol_version: Option<Cow<'a, str>>,
}

/// What the connection loop should do after a request.
enum Next {
    KeepGoing,
    Close,
}

async fn serve_conn(state: Arc<State>, mut sock: TcpStream) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut rng = state.nonce ^ (&buf as *const BytesMut as u64);
    // The dataplane's codec (h1) reads the requests; this engine only moves the bytes.
    let mut parser = h1::RequestParser::new(limits());
    loop {
        // Read until a complete request (head + body) is buffered.
        let req = loop {
            match parser.parse(&mut buf) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => {
                    if let Some(status) = e.status() {
                        out.clear();
                        wire::write_head(&mut out, status, BodyKind::Empty, None, false);
                        let _ = sock.write_all(&out).await;
                    }
                    return;
                }
            }
            match sock.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        state.stats.requests.fetch_add(1, Ordering::Relaxed);
        out.clear();
        let head = &req.head;
        let r = Req {
            method: Method::from(head.method),
            path_ok: head.path() == state.cfg.path.as_bytes(),
            keep_alive: head.keep_alive,
            session: head.headers.get("mcp-session-id"),
            proto: head.headers.get("mcp-protocol-version"),
            body: &req.body,
        };
        let next = handle(&state, r, &mut sock, &mut out, &mut rng).await;
        if matches!(next, Next::Close) {
            return;
        }
    }
}

/// Request limits of both engines (the h1 codec's, with the mock's sizes).
pub(crate) fn limits() -> h1::Limits {
    h1::Limits {
        max_head_bytes: wire::MAX_HEAD,
        max_headers: wire::MAX_HEADERS,
        max_body_bytes: MAX_BODY,
        // No idle limit: an hour is "never" for a load test.
        idle_timeout: Duration::from_secs(3600),
        ..h1::Limits::default()
    }
}

/// Request method, as far as MCP cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Delete,
    Other,
}

impl From<h1::Method> for Method {
    fn from(m: h1::Method) -> Self {
        match m {
            h1::Method::Get => Method::Get,
            h1::Method::Post => Method::Post,
            h1::Method::Delete => Method::Delete,
            _ => Method::Other,
        }
    }
}

struct Req<'a> {
    method: Method,
    path_ok: bool,
    keep_alive: bool,
    session: Option<&'a [u8]>,
    proto: Option<&'a [u8]>,
    body: &'a [u8],
}

fn jsonrpc_error(id: Option<&RawValue>, code: i32, msg: &str, data: Option<&str>) -> Vec<u8> {
    let mut b = Vec::with_capacity(128);
    b.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    b.extend_from_slice(id.map_or("null", RawValue::get).as_bytes());
    b.extend_from_slice(b",\"error\":{\"code\":");
    b.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
    b.extend_from_slice(b",\"message\":");
    b.extend_from_slice(json_str(msg).as_bytes());
    if let Some(d) = data {
        b.extend_from_slice(b",\"data\":");
        b.extend_from_slice(d.as_bytes());
    }
    b.extend_from_slice(b"}}");
    b
}

async fn send_json(
    sock: &mut TcpStream,
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    session: Option<&str>,
    keep_alive: bool,
) -> Next {
    out.clear();
    wire::write_head(out, status, BodyKind::Json(body.len()), session, keep_alive);
    out.extend_from_slice(body);
    if sock.write_all(out).await.is_err() || !keep_alive {
        return Next::Close;
    }
    Next::KeepGoing
}

async fn send_status(
    sock: &mut TcpStream,
    out: &mut Vec<u8>,
    status: u16,
    keep_alive: bool,
) -> Next {
    out.clear();
    wire::write_head(out, status, BodyKind::Empty, None, keep_alive);
    if sock.write_all(out).await.is_err() || !keep_alive {
        return Next::Close;
    }
    Next::KeepGoing
}

/// `{"jsonrpc":"2.0","id":ID,"result":RESULT}`
fn result_envelope(id: Option<&RawValue>, result: &[u8]) -> Vec<u8> {
    let id = id.map_or("null", RawValue::get);
    let mut b = Vec::with_capacity(40 + id.len() + result.len());
    b.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    b.extend_from_slice(id.as_bytes());
    b.extend_from_slice(b",\"result\":");
    b.extend_from_slice(result);
    b.push(b'}');
    b
}

/// What a request resolves to, independent of the serving engine: the MCP logic lives in
/// [`route`]; each engine only turns a `Reply` into bytes on its socket.
enum Reply<'a> {
    /// A response without a body.
    Status(u16),
    /// A JSON body, optionally minting a session header.
    Json {
        status: u16,
        body: Vec<u8>,
        session: Option<String>,
    },
    /// A valid `tools/call` (tool checked); the engine applies stall, service time, SSE and
    /// progress, and sends [`call_result`].
    Call {
        id: Option<&'a RawValue>,
        progress: Option<&'a RawValue>,
        modern: bool,
    },
    /// A GET whose session checks passed: open the standalone SSE stream.
    Stream,
}

fn json_reply(status: u16, body: Vec<u8>) -> Reply<'static> {
    Reply::Json {
        status,
        body,
        session: None,
    }
}

fn error_reply(status: u16, id: Option<&RawValue>, code: i32, msg: &str) -> Reply<'static> {
    json_reply(status, jsonrpc_error(id, code, msg, None))
}

/// The whole MCP behaviour of the mock, shared by both engines.
fn route<'a>(state: &State, req: &Req<'a>) -> Reply<'a> {
    if !req.path_ok {
        return Reply::Status(404);
    }
    match req.method {
        Method::Post => {}
        Method::Get => {
            return match req.session {
                Some(s) if !state.session_alive(s) => Reply::Status(404),
                None if state.cfg.require_session => Reply::Status(400),
                _ => Reply::Stream,
            };
        }
        Method::Delete => {
            return match req.session {
                Some(s) if state.end_session(s) => Reply::Status(200),
                Some(_) => Reply::Status(404),
                None => Reply::Status(400),
            };
        }
        Method::Other => return Reply::Status(405),
    }
    let msg: Msg<'a> = match serde_json::from_slice(req.body) {
        Ok(m) => m,
        Err(_) => return error_reply(400, None, -32700, "parse error"),
    };
    let Some(method) = msg.method.as_deref() else {
        // A JSON-RPC response from the client (legacy era): accepted.
        return Reply::Status(202);
    };
    let params = msg.params.unwrap_or_default();
    let meta = params.meta.unwrap_or_default();
    let id = msg.id;
    let call = |modern: bool| {
        if params
            .name
            .as_deref()
            .and_then(tool_index)
            .is_none_or(|i| i >= state.cfg.tool_count)
        {
            return error_reply(200, id, -32602, "unknown tool");
        }
        Reply::Call {
            id,
            progress: meta.progress_token,
            modern,
        }
    };
    if let Some(v) = meta.protocol_version.as_deref() {
        if v != MODERN_VERSION {
            let data = format!(
                "{{\"supported\":[\"{MODERN_VERSION}\"],\"requested\":{}}}",
                json_str(v)
            );
            return json_reply(
                400,
                jsonrpc_error(id, -32022, "unsupported protocol version", Some(&data)),
            );
        }
        if req.proto.is_some_and(|h| h != v.as_bytes()) {
            return error_reply(
                400,
                id,
                -32020,
                "MCP-Protocol-Version header does not match _meta",
            );
        }
        // Modern era: stateless.
        if method.starts_with("notifications/") {
            return Reply::Status(202);
        }
        return match method {
            "server/discover" => json_reply(200, result_envelope(id, &state.pre.discover)),
            "tools/list" => match page(state, params.cursor.as_deref(), true) {
                Some(p) => json_reply(200, result_envelope(id, p)),
                None => error_reply(200, id, -32602, "invalid cursor"),
            },
            "tools/call" => call(true),
            _ => error_reply(404, id, -32601, "method not found"),
        };
    }
    // Legacy era.
    if method == "initialize" {
        let asked = params.protocol_version.as_deref().unwrap_or("");
        let version = if LEGACY_VERSIONS.contains(&asked) {
            asked
        } else {
            LEGACY_VERSIONS[2]
        };
        let sid = state.mint_session();
        let mut result = Vec::with_capacity(200);
        result.extend_from_slice(b"{\"protocolVersion\":\"");
        result.extend_from_slice(version.as_bytes());
        result.push(b'"');
        result.extend_from_slice(&state.pre.init_tail);
        return Reply::Json {
            status: 200,
            body: result_envelope(id, &result),
            session: Some(sid),
        };
    }
    match req.session {
        Some(s) if !state.session_alive(s) => {
            return error_reply(404, id, -32001, "session not found");
        }
        None if state.cfg.require_session => {
            return error_reply(400, id, -32600, "missing Mcp-Session-Id");
        }
        _ => {}
    }
    if method.starts_with("notifications/") || id.is_none() {
        return Reply::Status(202);
    }
    match method {
        "ping" => json_reply(200, result_envelope(id, b"{}")),
        "tools/list" => match page(state, params.cursor.as_deref(), false) {
            Some(p) => json_reply(200, result_envelope(id, p)),
            None => error_reply(200, id, -32602, "invalid cursor"),
        },
        "tools/call" => call(false),
        _ => error_reply(200, id, -32601, "method not found"),
    }
}

/// The JSON-RPC response to a successful `tools/call`.
fn call_result(state: &State, id: Option<&RawValue>, modern: bool) -> Vec<u8> {
    let result = if modern {
        &state.pre.call_modern
    } else {
        &state.pre.call_legacy
    };
    result_envelope(id, result)
}

/// True when the mock's call path needs the tokio engine's timers or SSE framing: a stall,
/// a non-zero service time, SSE answers or progress notifications.
fn needs_tokio(cfg: &MockConfig) -> bool {
    !cfg.stall.is_zero()
        || cfg.service_time != ServiceTime::Zero
        || cfg.sse
        || cfg.progress_count > 0
}

async fn handle(
    state: &State,
    req: Req<'_>,
    sock: &mut TcpStream,
    out: &mut Vec<u8>,
    rng: &mut u64,
) -> Next {
    let ka = req.keep_alive;
    match route(state, &req) {
        Reply::Status(s) => send_status(sock, out, s, ka).await,
        Reply::Json {
            status,
            body,
            session,
        } => send_json(sock, out, status, &body, session.as_deref(), ka).await,
        Reply::Call {
            id,
            progress,
            modern,
        } => call(state, id, progress, modern, sock, out, rng, ka).await,
        Reply::Stream => get_stream(state, sock, out).await,
    }
}

fn page<'s>(state: &'s State, cursor: Option<&str>, modern: bool) -> Option<&'s [u8]> {
    state.stats.lists.fetch_add(1, Ordering::Relaxed);
    let pages = if modern {
        &state.pre.list_modern
    } else {
        &state.pre.list_legacy
    };
    let idx = match cursor {
        None => 0,
        Some(c) => {
            let start: usize = c.parse().ok()?;
            let per = if state.cfg.page_size == 0 {
                usize::MAX
            } else {
                state.cfg.page_size
            };
            if start % per != 0 {
                return None;
            }
            start / per
        }
    };
    pages.get(idx).map(Vec::as_slice)
}

fn tool_index(name: &str) -> Option<usize> {
    name.strip_prefix("tool_")?.parse().ok()
}

#[allow(clippy::too_many_arguments)]
async fn call(
    state: &State,
    id: Option<&RawValue>,
    progress: Option<&RawValue>,
    modern: bool,
    sock: &mut TcpStream,
    out: &mut Vec<u8>,
    rng: &mut u64,
    ka: bool,
) -> Next {
    let arrived = Instant::now();
    if let Some(until) = state.stall_until() {
        state.timer.sleep_until(until).await;
    }
    let service = state.cfg.service_time.sample(rng);
    let progress = progress.filter(|_| state.cfg.progress_count > 0);
    if !state.cfg.sse && progress.is_none() {
        if !service.is_zero() {
            state.timer.sleep_until(arrived + service).await;
        }
        let b = call_result(state, id, modern);
        let r = send_json(sock, out, 200, &b, None, ka).await;
        state.stats.calls.fetch_add(1, Ordering::Relaxed);
        return r;
    }
    // SSE: head now, progress spread over the service time, then the result.
    out.clear();
    wire::write_head(out, 200, BodyKind::Sse, None, ka);
    if let Some(tok) = progress {
        let n = state.cfg.progress_count;
        let mut num = itoa::Buffer::new();
        for i in 1..=n {
            let at = arrived + service.mul_f64(f64::from(i) / f64::from(n + 1));
            if at > Instant::now() {
                if !out.is_empty() {
                    if sock.write_all(out).await.is_err() {
                        return Next::Close;
                    }
                    out.clear();
                }
                state.timer.sleep_until(at).await;
            }
            wire::write_sse_chunk(
                out,
                &[
                    b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":",
                    tok.get().as_bytes(),
                    b",\"progress\":",
                    num.format(i).as_bytes(),
                    b",\"total\":",
                    itoa::Buffer::new().format(n).as_bytes(),
                    b"}}",
                ],
            );
        }
    }
    if arrived + service > Instant::now() {
        if !out.is_empty() {
            if sock.write_all(out).await.is_err() {
                return Next::Close;
            }
            out.clear();
        }
        state.timer.sleep_until(arrived + service).await;
    }
    let b = call_result(state, id, modern);
    wire::write_sse_chunk(out, &[&b]);
    wire::write_last_chunk(out);
    state.stats.calls.fetch_add(1, Ordering::Relaxed);
    if sock.write_all(out).await.is_err() || !ka {
        return Next::Close;
    }
    Next::KeepGoing
}

async fn get_stream(state: &State, sock: &mut TcpStream, out: &mut Vec<u8>) -> Next {
    out.clear();
    wire::write_head(out, 200, BodyKind::Sse, None, true);
    // A comment first so the client sees the stream open even before the first notification.
    out.extend_from_slice(b"3\r\n:\n\n\r\n");
    if sock.write_all(out).await.is_err() {
        return Next::Close;
    }
    state.stats.streams_open.fetch_add(1, Ordering::Relaxed);
    let _guard = StreamGuard(&state.stats);
    let (mut rd, mut wr) = sock.split();
    let mut scratch = [0u8; 512];
    let period = state.cfg.notify_interval;
    let mut tick = tokio::time::interval(if period.is_zero() {
        Duration::from_secs(3600)
    } else {
        period
    });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut seq = 0u64;
    let mut num = itoa::Buffer::new();
    loop {
        tokio::select! {
            r = rd.read(&mut scratch) => match r {
                // The client closed (or sent junk on a stream): end it.
                Ok(_) | Err(_) => return Next::Close,
            },
            _ = tick.tick() => {
                if period.is_zero() { continue; }
                seq += 1;
                out.clear();
                let ts = sys::unix_nanos();
                let mut num2 = itoa::Buffer::new();
                wire::write_sse_chunk(out, &[
                    b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"logger\":\"mock\",\"data\":{\"emitNs\":",
                    num.format(ts).as_bytes(),
                    b",\"seq\":",
                    num2.format(seq).as_bytes(),
                    b"}}}",
                ]);
                if wr.write_all(out).await.is_err() {
                    return Next::Close;
                }
            }
        }
    }
}

struct StreamGuard<'a>(&'a MockStats);
impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}
