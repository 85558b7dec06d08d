//! The load client: one MCP client session over one keep-alive HTTP/1.1 connection.
//!
//! Owns: target URL resolution ([`Target`]), the connection ([`Conn`]: write a request, read
//! a JSON or SSE response, chunked or not), MCP calls in both eras ([`McpClient`]), GET event
//! streams ([`EventStream`]) and the error taxonomy the report counts by kind
//! ([`ClientError::kind`]). A connection that saw any error is dropped, never reused.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h1::{BodyDecoder, BodyKind, BodyPiece, SseDecoder};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mock::{LEGACY_VERSIONS, MODERN_VERSION};
use crate::sys;

/// Protocol era a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Era {
    /// `initialize` + `Mcp-Session-Id` (2025-11-25).
    Legacy,
    /// Stateless per-request `_meta` (2026-07-28).
    Modern,
}

impl std::str::FromStr for Era {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "legacy" | "2025-11-25" => Ok(Era::Legacy),
            "modern" | "2026-07-28" => Ok(Era::Modern),
            _ => Err(format!("unknown era {s:?} (legacy | modern)")),
        }
    }
}

/// Client-side failures, grouped for the report by [`ClientError::kind`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TCP connect was refused (nothing listening).
    #[error("connection refused by {0}")]
    ConnectRefused(SocketAddr),
    /// TCP connect did not finish in time.
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    /// Another connect failure.
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    /// Read/write failed on an established connection.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed before the response was complete.
    #[error("connection closed mid-response")]
    Closed,
    /// The whole request exceeded the request timeout.
    #[error("request timed out")]
    Timeout,
    /// A non-success HTTP status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// A JSON-RPC error object in the response.
    #[error("JSON-RPC error {code}: {message}")]
    JsonRpc {
        /// Error code.
        code: i64,
        /// Error message.
        message: String,
    },
    /// The answer is not MCP (bad HTTP, not JSON/SSE, no JSON-RPC response).
    #[error("not an MCP response: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Stable label for the "errors by kind" table and JSON.
    pub fn kind(&self) -> String {
        match self {
            ClientError::ConnectRefused(_) => "connect_refused".into(),
            ClientError::ConnectTimeout(_) => "connect_timeout".into(),
            ClientError::Connect(..) => "connect_error".into(),
            ClientError::Io(_) => "io".into(),
            ClientError::Closed => "closed".into(),
            ClientError::Timeout => "timeout".into(),
            ClientError::Status(s) => format!("http_{s}"),
            ClientError::JsonRpc { code, .. } => format!("jsonrpc_{code}"),
            ClientError::Protocol(_) => "protocol".into(),
        }
    }
}

// === Target ===

/// A resolved `http://host:port/path` MCP endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// First resolved address.
    pub addr: SocketAddr,
    host: String,
    path: String,
}

impl Target {
    /// Parses and resolves `url` (plain `http://` only).
    ///
    /// # Errors
    /// A bad URL or a host that does not resolve.
    pub async fn resolve(url: &str) -> anyhow::Result<Target> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            anyhow::anyhow!(
                "target {url:?}: only http:// URLs are supported (e.g. http://127.0.0.1:9100/mcp)"
            )
        })?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/mcp"),
        };
        if hostport.is_empty() {
            anyhow::bail!("target {url:?} has no host");
        }
        let with_port = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            hostport.to_owned()
        } else {
            format!("{hostport}:80")
        };
        let addr =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host(&with_port))
                .await
                .map_err(|_| anyhow::anyhow!("target {url:?}: resolving {with_port} timed out"))?
                .map_err(|e| anyhow::anyhow!("target {url:?}: cannot resolve {with_port}: {e}"))?
                .next()
                .ok_or_else(|| {
                    anyhow::anyhow!("target {url:?}: {with_port} resolves to nothing")
                })?;
        Ok(Target {
            url: url.to_owned(),
            addr,
            host: hostport.to_owned(),
            path: path.to_owned(),
        })
    }
}

// === Conn ===

/// A decoded HTTP response.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// `Mcp-Session-Id` header, if any.
    pub session: Option<String>,
    /// True for `text/event-stream`.
    pub sse: bool,
    /// True for `application/json`.
    pub json: bool,
    /// Body with transfer framing removed.
    pub body: Bytes,
}

/// What the client needs from a response head (parsed by `h1::parse_response_head`).
struct Head {
    status: u16,
    session: Option<String>,
    sse: bool,
    json: bool,
    body: BodyKind,
}

impl From<h1::ResponseHead> for Head {
    fn from(h: h1::ResponseHead) -> Self {
        let ctype = h
            .headers
            .get("content-type")
            .unwrap_or_default()
            .trim_ascii_start();
        let starts = |p: &[u8]| ctype.len() >= p.len() && ctype[..p.len()].eq_ignore_ascii_case(p);
        Self {
            status: h.status,
            session: h.headers.get_str("mcp-session-id").map(str::to_owned),
            sse: starts(b"text/event-stream"),
            json: starts(b"application/json"),
            body: h.body,
        }
    }
}

/// One HTTP/1.1 connection.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    reusable: bool,
}

/// Connect-phase tuning.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOpts {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Close with RST (no `TIME_WAIT`).
    pub zero_linger: bool,
}

impl Default for ConnectOpts {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            zero_linger: true,
        }
    }
}

impl Conn {
    /// Connects to `addr`.
    ///
    /// # Errors
    /// Refused, timed out or other connect failures.
    pub async fn connect(addr: SocketAddr, opts: ConnectOpts) -> Result<Conn, ClientError> {
        let stream =
            match tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr)).await {
                Err(_) => return Err(ClientError::ConnectTimeout(addr)),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(ClientError::ConnectRefused(addr))
                }
                Ok(Err(e)) => return Err(ClientError::Connect(addr, e)),
                Ok(Ok(s)) => s,
            };
        sys::tune_stream(&stream, opts.zero_linger);
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            reusable: true,
        })
    }

    /// Sends one request and reads the head of its response.
    async fn send_head(
        &mut self,
        method: &str,
        target: &Target,
        headers: &[(&str, &str)],
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Head, ClientError> {
        out.clear();
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(target.host.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (k, v) in headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if method == "POST" {
            out.extend_from_slice(b"content-type: application/json\r\ncontent-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        self.stream.write_all(out).await?;
        loop {
            // The dataplane's codec (h1), driven over this tokio socket.
            match h1::parse_response_head(&mut self.buf, false, false) {
                Ok(Some(h)) if (100..200).contains(&h.status) => continue,
                Ok(Some(h)) => {
                    if !h.keep_alive {
                        self.reusable = false;
                    }
                    return Ok(Head::from(h));
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(e.to_string())),
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Reads a whole body framed as `kind` (a single-piece body is not copied).
    async fn read_body(&mut self, kind: BodyKind) -> Result<Bytes, ClientError> {
        const LIMIT: usize = 64 * 1024 * 1024;
        if let BodyKind::Length(n) = kind {
            if n > LIMIT as u64 {
                return Err(ClientError::Protocol(format!("body of {n} bytes")));
            }
        }
        if kind == BodyKind::UntilClose {
            self.reusable = false;
        }
        let mut dec = BodyDecoder::new(kind);
        let mut first: Option<Bytes> = None;
        let mut joined = BytesMut::new();
        loop {
            match dec
                .decode(&mut self.buf)
                .map_err(|e| ClientError::Protocol(e.to_string()))?
            {
                BodyPiece::Data(d) => {
                    if let Some(f) = first.take() {
                        joined.extend_from_slice(&f);
                    }
                    if joined.is_empty() {
                        first = Some(d);
                    } else {
                        joined.extend_from_slice(&d);
                    }
                    if joined.len() > LIMIT {
                        return Err(ClientError::Protocol("body too large".into()));
                    }
                    continue;
                }
                BodyPiece::End => break,
                BodyPiece::NeedMore => {}
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                dec.eof().map_err(|_| ClientError::Closed)?;
                break;
            }
        }
        Ok(first.unwrap_or_else(|| joined.freeze()))
    }

    /// One complete request/response exchange.
    ///
    /// # Errors
    /// I/O, framing or closed-connection errors (status codes are returned, not errors).
    pub async fn request(
        &mut self,
        method: &str,
        target: &Target,
        headers: &[(&str, &str)],
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Response, ClientError> {
        let h = self.send_head(method, target, headers, body, out).await?;
        let body = self.read_body(h.body).await?;
        Ok(Response {
            status: h.status,
            session: h.session,
            sse: h.sse,
            json: h.json,
            body,
        })
    }
}

// === JSON-RPC response inspection ===

#[derive(Deserialize)]
struct RpcMsg<'a> {
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<RpcErr>,
}

#[derive(Deserialize)]
struct RpcErr {
    code: i64,
    #[serde(default)]
    message: String,
}

/// Checks an HTTP response carries a JSON-RPC result; returns the result JSON text.
fn expect_result(resp: &Response, want: bool) -> Result<String, ClientError> {
    if resp.status != 200 {
        // Modern errors ride on 4xx with a JSON-RPC body: surface the JSON-RPC code then.
        if resp.json {
            if let Ok(m) = serde_json::from_slice::<RpcMsg<'_>>(&resp.body) {
                if let Some(e) = m.error {
                    return Err(ClientError::JsonRpc {
                        code: e.code,
                        message: e.message,
                    });
                }
            }
        }
        return Err(ClientError::Status(resp.status));
    }
    let check = |raw: &[u8]| -> Option<Result<String, ClientError>> {
        let m: RpcMsg<'_> = serde_json::from_slice(raw).ok()?;
        if m.method.is_some() {
            return None; // a notification on the stream (progress, log)
        }
        if let Some(e) = m.error {
            return Some(Err(ClientError::JsonRpc {
                code: e.code,
                message: e.message,
            }));
        }
        m.result.map(|r| {
            Ok(if want {
                r.get().to_owned()
            } else {
                String::new()
            })
        })
    };
    if resp.sse {
        let mut found = None;
        let mut sse = SseDecoder::new();
        // The closing blank line dispatches a last event the server left unterminated.
        sse.push(&resp.body);
        sse.push(b"\n\n");
        while let Some(ev) = sse.next_event() {
            if found.is_none() && ev.has_data {
                found = check(ev.data.as_bytes());
            }
        }
        return found.unwrap_or_else(|| {
            Err(ClientError::Protocol(
                "SSE response without a JSON-RPC response".into(),
            ))
        });
    }
    if !resp.json {
        let snippet: String = String::from_utf8_lossy(&resp.body[..resp.body.len().min(60)]).into();
        return Err(ClientError::Protocol(format!(
            "HTTP 200 but neither application/json nor text/event-stream (body starts {snippet:?})"
        )));
    }
    check(&resp.body).unwrap_or_else(|| {
        Err(ClientError::Protocol(
            "JSON body is not a JSON-RPC response".into(),
        ))
    })
}

// === McpClient ===

/// One MCP client (a legacy session or a modern stateless caller) over one connection,
/// reconnecting after errors.
pub struct McpClient {
    target: Arc<Target>,
    era: Era,
    opts: ConnectOpts,
    timeout: Duration,
    conn: Option<Conn>,
    session: Option<String>,
    next_id: u64,
    out: Vec<u8>,
    body: Vec<u8>,
    /// `"_meta":{...` of modern requests without the closing brace, built once.
    meta_open: String,
}

impl McpClient {
    /// A client that connects lazily.
    pub fn new(target: Arc<Target>, era: Era, opts: ConnectOpts, timeout: Duration) -> Self {
        Self {
            target,
            era,
            opts,
            timeout,
            conn: None,
            session: None,
            next_id: 1,
            out: Vec::with_capacity(512),
            body: Vec::with_capacity(512),
            meta_open: {
                let mut m = Self::modern_meta("");
                m.pop();
                m
            },
        }
    }

    /// The session id (legacy, after [`McpClient::initialize`]).
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The target this client drives.
    pub fn target(&self) -> &Arc<Target> {
        &self.target
    }

    async fn exchange(
        &mut self,
        method: &str,
        headers: &[(&str, &str)],
        with_body: bool,
    ) -> Result<Response, ClientError> {
        let fut = async {
            if self.conn.is_none() {
                self.conn = Some(Conn::connect(self.target.addr, self.opts).await?);
            }
            let conn = self.conn.as_mut().ok_or(ClientError::Closed)?;
            let body: &[u8] = if with_body { &self.body } else { &[] };
            conn.request(method, &self.target, headers, body, &mut self.out)
                .await
        };
        let r = match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout),
        };
        match &r {
            Ok(_) if self.conn.as_ref().is_some_and(|c| c.reusable) => {}
            _ => self.conn = None,
        }
        r
    }

    /// Builds the JSON-RPC body into `self.body` and posts it.
    async fn rpc(
        &mut self,
        method: &str,
        params: &[&[u8]],
        name: Option<&str>,
    ) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.body.clear();
        self.body.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
        self.body
            .extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
        self.body.extend_from_slice(b",\"method\":\"");
        self.body.extend_from_slice(method.as_bytes());
        self.body.extend_from_slice(b"\",\"params\":");
        for p in params {
            self.body.extend_from_slice(p);
        }
        self.body.push(b'}');
        // Taken and put back so the header can borrow it while `exchange` borrows `self`.
        let session = self.session.take();
        let mut headers: [(&str, &str); 4] = [("accept", "application/json, text/event-stream"); 4];
        let mut n = 1;
        match self.era {
            Era::Legacy => {
                if let Some(s) = session.as_deref() {
                    headers[1] = ("mcp-session-id", s);
                    headers[2] = ("mcp-protocol-version", LEGACY_VERSIONS[2]);
                    n = 3;
                }
            }
            Era::Modern => {
                headers[1] = ("mcp-protocol-version", MODERN_VERSION);
                headers[2] = ("mcp-method", method);
                n = 3;
                if let Some(name) = name {
                    headers[3] = ("mcp-name", name);
                    n = 4;
                }
            }
        }
        let r = self.exchange("POST", &headers[..n], true).await;
        self.session = session;
        r
    }

    fn modern_meta(extra: &str) -> String {
        format!(
            "\"_meta\":{{\"io.modelcontextprotocol/protocolVersion\":\"{MODERN_VERSION}\",\
             \"io.modelcontextprotocol/clientCapabilities\":{{}},\
             \"io.modelcontextprotocol/clientInfo\":{{\"name\":\"meshgate-load\",\"version\":\"1\"}}{extra}}}"
        )
    }

    /// Legacy: `initialize` then `notifications/initialized`; modern: `server/discover`.
    ///
    /// # Errors
    /// Any failure of either exchange, or a missing session id in the legacy answer.
    pub async fn initialize(&mut self) -> Result<(), ClientError> {
        match self.era {
            Era::Legacy => {
                self.session = None;
                let params = format!(
                    "{{\"protocolVersion\":\"{}\",\"capabilities\":{{}},\"clientInfo\":{{\"name\":\"meshgate-load\",\"version\":\"1\"}}}}",
                    LEGACY_VERSIONS[2]
                );
                let resp = self.rpc("initialize", &[params.as_bytes()], None).await?;
                expect_result(&resp, false)?;
                let sid = resp.session.ok_or_else(|| {
                    ClientError::Protocol("initialize answered without Mcp-Session-Id".into())
                })?;
                self.session = Some(sid);
                self.body.clear();
                self.body.extend_from_slice(
                    b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}",
                );
                let s = self.session.clone().unwrap_or_default();
                let headers = [
                    ("accept", "application/json, text/event-stream"),
                    ("mcp-session-id", s.as_str()),
                    ("mcp-protocol-version", LEGACY_VERSIONS[2]),
                ];
                let r = self.exchange("POST", &headers, true).await?;
                if r.status != 202 && r.status != 200 {
                    return Err(ClientError::Status(r.status));
                }
                Ok(())
            }
            Era::Modern => {
                let params = format!("{{{}}}", Self::modern_meta(""));
                let resp = self
                    .rpc("server/discover", &[params.as_bytes()], None)
                    .await?;
                expect_result(&resp, false).map(|_| ())
            }
        }
    }

    /// `tools/call` of `name`; with `progress` a `progressToken` is attached.
    ///
    /// # Errors
    /// Transport, status, JSON-RPC or protocol errors.
    pub async fn call_tool(&mut self, name: &str, progress: bool) -> Result<(), ClientError> {
        let mut tok = itoa::Buffer::new();
        let tok = tok.format(self.next_id).as_bytes().to_owned();
        let meta = std::mem::take(&mut self.meta_open);
        let head: &[&[u8]] = &[
            b"{\"name\":\"",
            name.as_bytes(),
            b"\",\"arguments\":{\"text\":\"hi\"}",
        ];
        let r = match (self.era, progress) {
            (Era::Legacy, false) => {
                self.rpc("tools/call", &[head[0], head[1], head[2], b"}"], Some(name))
                    .await
            }
            (Era::Legacy, true) => {
                let parts: &[&[u8]] = &[
                    head[0],
                    head[1],
                    head[2],
                    b",\"_meta\":{\"progressToken\":",
                    &tok,
                    b"}}",
                ];
                self.rpc("tools/call", parts, Some(name)).await
            }
            (Era::Modern, false) => {
                let parts: &[&[u8]] = &[head[0], head[1], head[2], b",", meta.as_bytes(), b"}}"];
                self.rpc("tools/call", parts, Some(name)).await
            }
            (Era::Modern, true) => {
                let parts: &[&[u8]] = &[
                    head[0],
                    head[1],
                    head[2],
                    b",",
                    meta.as_bytes(),
                    b",\"progressToken\":",
                    &tok,
                    b"}}",
                ];
                self.rpc("tools/call", parts, Some(name)).await
            }
        };
        self.meta_open = meta;
        expect_result(&r?, false).map(|_| ())
    }

    /// `tools/list`, following `nextCursor`; returns the tool count.
    ///
    /// # Errors
    /// Transport, status, JSON-RPC or protocol errors.
    pub async fn list_tools(&mut self) -> Result<usize, ClientError> {
        #[derive(Deserialize)]
        struct Page {
            tools: Vec<serde_json::Value>,
            #[serde(rename = "nextCursor", default)]
            next: Option<String>,
        }
        let mut cursor: Option<String> = None;
        let mut n = 0;
        for _ in 0..10_000 {
            let c = cursor
                .as_deref()
                .map(|c| format!("\"cursor\":{}", serde_json::Value::String(c.to_owned())))
                .unwrap_or_default();
            let params = match self.era {
                Era::Legacy => format!("{{{c}}}"),
                Era::Modern if c.is_empty() => format!("{{{}}}", Self::modern_meta("")),
                Era::Modern => format!("{{{c},{}}}", Self::modern_meta("")),
            };
            let resp = self.rpc("tools/list", &[params.as_bytes()], None).await?;
            let raw = expect_result(&resp, true)?;
            let p: Page = serde_json::from_str(&raw)
                .map_err(|e| ClientError::Protocol(format!("tools/list result: {e}")))?;
            n += p.tools.len();
            match p.next {
                Some(c) => cursor = Some(c),
                None => return Ok(n),
            }
        }
        Err(ClientError::Protocol(
            "tools/list pagination does not end".into(),
        ))
    }

    /// `ping` (legacy only).
    ///
    /// # Errors
    /// Transport, status, JSON-RPC or protocol errors.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        let resp = self.rpc("ping", &[b"{}"], None).await?;
        expect_result(&resp, false).map(|_| ())
    }

    /// DELETE the session (legacy); returns the HTTP status.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn delete_session(&mut self) -> Result<u16, ClientError> {
        let s = self.session.take().unwrap_or_default();
        let headers = [("mcp-session-id", s.as_str())];
        Ok(self.exchange("DELETE", &headers, false).await?.status)
    }

    /// Opens the standalone GET stream of this session on a new connection.
    ///
    /// # Errors
    /// Connect errors, a non-200 status or a non-SSE answer.
    pub async fn open_stream(&self) -> Result<EventStream, ClientError> {
        let fut = async {
            let mut conn = Conn::connect(self.target.addr, self.opts).await?;
            let mut headers = vec![
                ("accept", "text/event-stream"),
                ("mcp-protocol-version", LEGACY_VERSIONS[2]),
            ];
            if let Some(s) = self.session.as_deref() {
                headers.push(("mcp-session-id", s));
            }
            let mut out = Vec::new();
            let h = conn
                .send_head("GET", &self.target, &headers, &[], &mut out)
                .await?;
            if h.status != 200 {
                return Err(ClientError::Status(h.status));
            }
            if !h.sse {
                return Err(ClientError::Protocol(
                    "GET stream is not text/event-stream".into(),
                ));
            }
            Ok(EventStream {
                conn,
                body: BodyDecoder::new(h.body),
                sse: SseDecoder::new(),
                ready: std::collections::VecDeque::new(),
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }
}

// === EventStream ===

/// A held-open SSE stream yielding each event's data (framing and SSE parsing by h1).
pub struct EventStream {
    conn: Conn,
    body: BodyDecoder,
    sse: SseDecoder,
    ready: std::collections::VecDeque<Vec<u8>>,
}

impl EventStream {
    /// Next event's data; `Ok(None)` when the server ended the stream.
    ///
    /// # Errors
    /// I/O or framing errors.
    pub async fn next_event(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e));
            }
            // Drain what is buffered first, then read more.
            match self
                .body
                .decode(&mut self.conn.buf)
                .map_err(|e| ClientError::Protocol(e.to_string()))?
            {
                BodyPiece::Data(d) => {
                    self.sse.push(&d);
                    while let Some(ev) = self.sse.next_event() {
                        // Comments and id-only blocks carry no data: not an event here.
                        if ev.has_data {
                            self.ready.push_back(ev.data.into_bytes());
                        }
                    }
                    continue;
                }
                BodyPiece::End => return Ok(None),
                BodyPiece::NeedMore => {}
            }
            if self.conn.stream.read_buf(&mut self.conn.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// Extracts `params.data.emitNs` from a mock stream notification.
pub fn emit_nanos(event: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct N {
        params: P,
    }
    #[derive(Deserialize)]
    struct P {
        data: D,
    }
    #[derive(Deserialize)]
    struct D {
        #[serde(rename = "emitNs")]
        emit_ns: u64,
    }
    serde_json::from_slice::<N>(event)
        .ok()
        .map(|n| n.params.data.emit_ns)
}
