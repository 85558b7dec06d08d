//! Upstream connections: per-worker keep-alive pools and the requests the hub sends to MCP
//! servers. The connection layer under the `forward` and `relay` stages (DESIGN.md §4, steps
//! 8–9).
//!
//! Every call names the upstream and the replica it goes to (`r`, an index into
//! [`Upstream::replicas`]): an upstream session lives on one replica, so everything sent within
//! it goes there. A [`Pool`] belongs to one worker (no locks: `RefCell`) and keeps idle
//! connections per (upstream, replica). [`post`] sends one JSON-RPC message
//! and classifies the answer: a JSON body (read whole), an SSE stream (handed back with its
//! connection for the caller to pump), or a bare status. An idle pooled connection is checked
//! before reuse (a non-blocking peek tells whether the upstream closed it meanwhile). A pooled
//! connection that still breaks is retried once on a fresh connection only when the request
//! was not completely written, or the caller says the request may run twice ([`Resend`]): a
//! request that may have been delivered is never sent again behind the caller's back. Every
//! call is bounded by the upstream's connect and request timeouts.
//!
//! SSE bodies are read by a small local task ([`spawn_reader`]) that feeds decoded events into a
//! channel, so the forwarding loop can wait for "next event or keep-alive tick" without ever
//! cancelling a socket read halfway (which would lose bytes of the stream).

use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;
use h1::{BodyKind, ClientConn, ClientError, ResponseHead, SseDecoder, SseEvent};
use tokio::sync::mpsc;

use crate::config::{Replica, Upstream};
use crate::session::UpstreamSession;

/// Largest JSON body accepted from an upstream.
pub const MAX_UPSTREAM_BODY: usize = 16 * 1024 * 1024;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed or timed out.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No (complete) answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke mid-exchange.
    #[error("connection failed: {0}")]
    Io(String),
    /// A kept-alive connection broke after the request was written, and the request may not
    /// run twice, so it was not re-sent: it may or may not have run.
    #[error("the connection broke after the request was sent (it may or may not have run): {0}")]
    MaybeDelivered(String),
    /// The upstream does not know our session id any more (HTTP 404).
    #[error("the upstream no longer knows our session")]
    SessionGone,
    /// An HTTP status the hub cannot use.
    #[error("HTTP status {0}: {1}")]
    Status(u16, String),
    /// The answer is not MCP.
    #[error("not an MCP answer: {0}")]
    Protocol(String),
}

impl UpstreamError {
    /// Whether this failure means the replica itself is unreachable (for passive health: it is
    /// ejected at once). The request was not delivered.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }

    /// Whether this failure counts against the replica's health (refused or timed-out connect,
    /// no answer in time, a broken connection): `eject_after` in a row eject it, and the upstream
    /// session on it moves to another replica.
    pub fn is_replica_failure(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_)
                | UpstreamError::Timeout(_)
                | UpstreamError::Io(_)
                | UpstreamError::MaybeDelivered(_)
        )
    }
}

impl From<ClientError> for UpstreamError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Io(e) => UpstreamError::Io(e.to_string()),
            ClientError::Closed => UpstreamError::Io("closed by the upstream".into()),
            other => UpstreamError::Protocol(other.to_string()),
        }
    }
}

/// Whether a request may be sent again on a fresh connection when a kept-alive one broke
/// after the request was written (the `forward` stage's retry rule decides).
#[derive(Clone, Copy)]
pub enum Resend<'a> {
    /// The request may run twice (the hub's own requests, read-only or idempotent tools).
    Safe,
    /// Only when the request was not completely written (so it cannot have run).
    IfUnsent,
    /// Ask (only when it matters, which is rare): `true` = it may run twice.
    Ask(&'a dyn Fn() -> bool),
}

impl Resend<'_> {
    /// Whether a request that may have been delivered may be sent again.
    pub fn allows_twice(&self) -> bool {
        match self {
            Resend::Safe => true,
            Resend::IfUnsent => false,
            Resend::Ask(f) => f(),
        }
    }
}

/// An idle pooled connection and when it went idle.
struct Idle {
    conn: ClientConn,
    since: std::time::Instant,
}

/// A connection idle longer than this is checked with a peek before reuse. One used a moment
/// ago is not (at saturation connections go back and forth within microseconds, and the check
/// costs a syscall); anything idle longer may have been closed by an upstream that restarted
/// or timed out its keep-alive.
const CHECK_IDLE_AFTER: Duration = Duration::from_millis(1);

/// One worker's idle upstream connections, per (upstream, replica).
pub struct Pool {
    idle: RefCell<Vec<Vec<Vec<Idle>>>>,
}

impl Pool {
    /// An empty pool for `n` upstreams (replica tables grow on first use).
    pub fn new(n: usize) -> Self {
        Self {
            idle: RefCell::new((0..n).map(|_| Vec::new()).collect()),
        }
    }

    /// The most recently used idle connection to replica `r` that is still open.
    fn take(&self, up: &Upstream, r: usize) -> Option<ClientConn> {
        let mut idle = self.idle.borrow_mut();
        let v = idle.get_mut(up.index)?.get_mut(r)?;
        while let Some(i) = v.pop() {
            if i.since.elapsed() < CHECK_IDLE_AFTER || !i.conn.peer_closed() {
                return Some(i.conn);
            }
        }
        None
    }

    /// Returns a connection to replica `r` of `up` after use; kept only if reusable and the
    /// pool has room.
    pub fn put(&self, up: &Upstream, r: usize, conn: ClientConn) {
        if !conn.is_reusable() || r >= up.replicas.len() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        if let Some(per) = idle.get_mut(up.index) {
            if per.len() <= r {
                per.resize_with(up.replicas.len(), Vec::new);
            }
            let v = &mut per[r];
            if v.len() < up.pool_size {
                v.push(Idle {
                    conn,
                    since: std::time::Instant::now(),
                });
            }
        }
    }

    /// Drops the idle connections to one replica (it was found dead).
    pub fn clear(&self, index: usize, r: usize) {
        if let Some(v) = self
            .idle
            .borrow_mut()
            .get_mut(index)
            .and_then(|p| p.get_mut(r))
        {
            v.clear();
        }
    }

    /// Idle connections held for an upstream, all replicas (metrics, tests).
    pub fn idle_count(&self, index: usize) -> usize {
        self.idle
            .borrow()
            .get(index)
            .map_or(0, |p| p.iter().map(Vec::len).sum())
    }
}

/// Replica `r` of `up`, or a protocol error (an index from another snapshot).
fn replica(up: &Upstream, r: usize) -> Result<&Replica, UpstreamError> {
    up.replicas.get(r).ok_or_else(|| {
        UpstreamError::Protocol(format!("upstream '{}' has no replica {r}", up.name))
    })
}

async fn connect(up: &Upstream, rep: &Replica) -> Result<ClientConn, UpstreamError> {
    let addr = rep.addr.get();
    let out = match monoio::time::timeout(up.connect_timeout, ClientConn::connect(addr)).await {
        Ok(Ok(c)) => return Ok(c),
        Ok(Err(e)) => UpstreamError::Connect(format!("{e} ({addr})")),
        Err(_) => UpstreamError::Connect(format!(
            "connect to {addr} timed out after {:?}",
            up.connect_timeout
        )),
    };
    // The name may point elsewhere now: have the resolver thread look it up again.
    rep.addr.resolve_soon();
    Err(out)
}

/// What an upstream answered to a POST.
pub enum Reply {
    /// A whole JSON body.
    Json {
        /// HTTP status (200).
        status: u16,
        /// The upstream's `Mcp-Session-Id`, if it sent one.
        session_id: Option<String>,
        /// The body.
        body: Bytes,
    },
    /// An SSE stream, to be read from `conn`.
    Stream {
        /// The upstream's `Mcp-Session-Id`, if it sent one.
        session_id: Option<String>,
        /// The connection, positioned at the start of the body.
        conn: ClientConn,
    },
    /// A status without a usable body (202 for notifications and responses).
    Status(u16),
}

fn header_list<'a>(
    us: Option<&'a UpstreamSession>,
    accept: &'a [u8],
    extra: &[(&'a str, &'a [u8])],
) -> ([(&'a str, &'a [u8]); 12], usize) {
    let mut h: [(&str, &[u8]); 12] = [("", b""); 12];
    let mut n = 0;
    h[n] = ("Accept", accept);
    n += 1;
    h[n] = ("Content-Type", b"application/json");
    n += 1;
    if let Some(us) = us {
        if let Some(sid) = &us.sid {
            h[n] = ("Mcp-Session-Id", sid.as_bytes());
            n += 1;
        }
        h[n] = ("MCP-Protocol-Version", us.version.as_bytes());
        n += 1;
    }
    for e in extra.iter().take(h.len() - n) {
        h[n] = *e;
        n += 1;
    }
    (h, n)
}

/// The headers a 2026-07-28 upstream requires mirrored from the body (`Mcp-Method`, and
/// `Mcp-Name` for tools/call, prompts/get, resources/read), read from the body itself so they
/// always match it. Values that are not plain ASCII go in the spec's `=?base64?…?=` form.
fn modern_headers(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(p) = mcp_wire::peek(body) else {
        return (None, None);
    };
    let method = p.method.as_deref().map(str::to_string);
    let name = match method.as_deref() {
        Some(m) if mcp_wire::modern::needs_name_header(m) => p
            .name
            .as_ref()
            .map(|n| n.value.to_string())
            .or_else(|| p.uri.as_deref().map(str::to_string))
            .map(|v| mcp_wire::modern::encode_header_value(&v).into_owned()),
        _ => None,
    };
    (method, name)
}

const ACCEPT_BOTH: &[u8] = b"application/json, text/event-stream";

async fn exchange(
    pool: &Pool,
    up: &Upstream,
    r: usize,
    method: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
    resend: Resend<'_>,
) -> Result<(ResponseHead, ClientConn), UpstreamError> {
    let rep = replica(up, r)?;
    // A pooled connection may have been closed by the upstream just as it was reused; that
    // shows up as a failure before any response byte. It is retried once on a fresh connection
    // when the request cannot have been delivered (not completely written) or may run twice.
    let mut reused_failed = false;
    if let Some(mut conn) = pool.take(up, r) {
        match conn.send(method, &rep.path, &rep.host, headers, body).await {
            Ok(head) => return Ok((head, conn)),
            Err(e @ (ClientError::Closed | ClientError::Io(_))) => {
                if conn.request_written() && !resend.allows_twice() {
                    return Err(UpstreamError::MaybeDelivered(format!(
                        "{e} (upstream '{}', {})",
                        up.name, rep.url
                    )));
                }
                reused_failed = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut conn = match connect(up, rep).await {
        Ok(c) => c,
        // The pooled attempt may have reached the upstream before the connection broke (it
        // cannot be told apart from a stale idle one), so this is not "never delivered".
        Err(UpstreamError::Connect(e)) if reused_failed => {
            return Err(UpstreamError::Io(format!(
                "the connection broke and reconnecting failed: {e}"
            )))
        }
        Err(e) => return Err(e),
    };
    let head = conn
        .send(method, &rep.path, &rep.host, headers, body)
        .await?;
    Ok((head, conn))
}

fn content_type_is(head: &ResponseHead, ct: &str) -> bool {
    head.headers
        .get_str("content-type")
        .is_some_and(|v| v.to_ascii_lowercase().starts_with(ct))
}

/// POSTs one JSON-RPC message to replica `r` of the upstream (within its request timeout for
/// the head and any JSON body; an SSE body is the caller's to bound).
///
/// # Errors
/// [`UpstreamError`]; HTTP 404 with a session id is [`UpstreamError::SessionGone`].
pub async fn post(
    pool: &Pool,
    up: &Upstream,
    r: usize,
    us: Option<&UpstreamSession>,
    body: &[u8],
    resend: Resend<'_>,
) -> Result<Reply, UpstreamError> {
    post_with(pool, up, r, us, body, resend, &[]).await
}

/// As [`post`], with `headers` added: the upstream credentials and the hub-signed user
/// assertion of the `forward` stage (at most 4).
///
/// # Errors
/// As [`post`].
pub async fn post_with(
    pool: &Pool,
    up: &Upstream,
    r: usize,
    us: Option<&UpstreamSession>,
    body: &[u8],
    resend: Resend<'_>,
    headers: &[(&str, &[u8])],
) -> Result<Reply, UpstreamError> {
    let fut = async {
        let (method, name) = match us {
            Some(us) if us.is_modern() => modern_headers(body),
            _ => (None, None),
        };
        let mut extra: [(&str, &[u8]); 6] = [("", b""); 6];
        let mut k = 0;
        for hd in headers.iter().take(4) {
            extra[k] = *hd;
            k += 1;
        }
        if let Some(m) = &method {
            extra[k] = ("Mcp-Method", m.as_bytes());
            k += 1;
        }
        if let Some(nm) = &name {
            extra[k] = ("Mcp-Name", nm.as_bytes());
            k += 1;
        }
        let (h, n) = header_list(us, ACCEPT_BOTH, &extra[..k]);
        let (head, mut conn) = exchange(pool, up, r, "POST", &h[..n], body, resend).await?;
        let session_id = head.headers.get_str("mcp-session-id").map(str::to_string);
        if head.status == 404 && us.is_some_and(|u| u.sid.is_some()) {
            return Err(UpstreamError::SessionGone);
        }
        if head.status == 202 || head.status == 204 {
            if !matches!(head.body, BodyKind::Empty) {
                let _ = conn.read_to_end(MAX_UPSTREAM_BODY).await;
            }
            pool.put(up, r, conn);
            return Ok(Reply::Status(head.status));
        }
        if head.status == 200 && content_type_is(&head, "text/event-stream") {
            return Ok(Reply::Stream { session_id, conn });
        }
        let body = conn.read_to_end(MAX_UPSTREAM_BODY).await?;
        pool.put(up, r, conn);
        // A 2026-07-28 upstream answers some errors with a 4xx and a JSON-RPC error body
        // (-32020..-32022, -32602 for a bad envelope, 404 + -32601): that is an answer, relayed.
        let modern_error = us.is_some_and(UpstreamSession::is_modern)
            && (400..500).contains(&head.status)
            && content_type_is(&head, "application/json");
        if (head.status == 200 || modern_error) && content_type_is(&head, "application/json") {
            return Ok(Reply::Json {
                status: head.status,
                session_id,
                body,
            });
        }
        if head.status == 200 {
            return Err(UpstreamError::Protocol(format!(
                "unexpected content type {:?}",
                head.headers.get_str("content-type").unwrap_or("")
            )));
        }
        let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        Err(UpstreamError::Status(head.status, snippet))
    };
    match monoio::time::timeout(up.request_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Timeout(up.request_timeout)),
    }
}

/// Opens a GET stream on the upstream session, on its replica (`Last-Event-ID` to resume one).
/// `Ok(None)` when the upstream does not offer one (405).
///
/// # Errors
/// [`UpstreamError`].
pub async fn get_stream(
    pool: &Pool,
    up: &Upstream,
    us: &UpstreamSession,
    last_event_id: Option<&str>,
) -> Result<Option<ClientConn>, UpstreamError> {
    let fut = async {
        let extra: Vec<(&str, &[u8])> = last_event_id
            .map(|id| ("Last-Event-ID", id.as_bytes()))
            .into_iter()
            .collect();
        let (h, n) = header_list(Some(us), b"text/event-stream", &extra);
        // Content-Type on a GET without body is harmless but odd; skip it.
        let hs: Vec<(&str, &[u8])> = h[..n]
            .iter()
            .copied()
            .filter(|(k, _)| *k != "Content-Type")
            .collect();
        let r = us.replica;
        let (head, mut conn) = exchange(pool, up, r, "GET", &hs, b"", Resend::Safe).await?;
        match head.status {
            200 if content_type_is(&head, "text/event-stream") => Ok(Some(conn)),
            404 => Err(UpstreamError::SessionGone),
            405 => {
                let _ = conn.read_to_end(64 * 1024).await;
                pool.put(up, r, conn);
                Ok(None)
            }
            s => Err(UpstreamError::Status(s, "GET stream refused".into())),
        }
    };
    match monoio::time::timeout(up.request_timeout.min(Duration::from_secs(30)), fut).await {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Timeout(up.request_timeout)),
    }
}

/// DELETEs an upstream session on its replica (best effort; 405 is fine).
pub async fn delete(pool: &Pool, up: &Upstream, us: &UpstreamSession) {
    if us.sid.is_none() {
        return;
    }
    let fut = async {
        let (h, n) = header_list(Some(us), ACCEPT_BOTH, &[]);
        let hs: Vec<(&str, &[u8])> = h[..n]
            .iter()
            .copied()
            .filter(|(k, _)| *k != "Content-Type")
            .collect();
        let r = us.replica;
        let (_head, mut conn) = exchange(pool, up, r, "DELETE", &hs, b"", Resend::Safe).await?;
        let _ = conn.read_to_end(64 * 1024).await;
        pool.put(up, r, conn);
        Ok::<(), UpstreamError>(())
    };
    if let Ok(Err(e)) = monoio::time::timeout(Duration::from_secs(5), fut).await {
        tracing::debug!(upstream = %up.name, error = %e, "upstream session DELETE failed");
    }
}

/// POSTs a request to replica `r` and waits for its JSON-RPC response, whether the upstream
/// answers with JSON or SSE (other events on the stream are dropped: used for the hub's own
/// requests, which may run twice: handshake, lists, ping, log level, subscriptions).
///
/// # Errors
/// [`UpstreamError`].
pub async fn request(
    pool: &Pool,
    up: &Upstream,
    r: usize,
    us: Option<&UpstreamSession>,
    body: &[u8],
) -> Result<(Bytes, Option<String>), UpstreamError> {
    match post(pool, up, r, us, body, Resend::Safe).await? {
        Reply::Json {
            body, session_id, ..
        } => Ok((body, session_id)),
        Reply::Status(s) => Err(UpstreamError::Status(s, "no response body".into())),
        Reply::Stream {
            session_id,
            mut conn,
        } => {
            let fut = async {
                let mut dec = SseDecoder::new();
                while let Some(chunk) = conn.read_chunk().await? {
                    dec.push(&chunk);
                    while let Some(ev) = dec.next_event() {
                        if !ev.has_data || ev.data.is_empty() {
                            continue;
                        }
                        if let Ok(p) = mcp_wire::peek(ev.data.as_bytes()) {
                            if p.kind == mcp_wire::Kind::Response {
                                return Ok(Bytes::from(ev.data.into_bytes()));
                            }
                        }
                    }
                }
                Err(UpstreamError::Protocol(
                    "SSE stream ended without a response".into(),
                ))
            };
            let body = match monoio::time::timeout(up.request_timeout, fut).await {
                Ok(r) => r?,
                Err(_) => return Err(UpstreamError::Timeout(up.request_timeout)),
            };
            // The rest of the stream is not read, so the connection cannot be reused.
            drop(conn);
            Ok((body, session_id))
        }
    }
}

/// A message from a stream reader task.
pub enum ReaderMsg {
    /// One decoded SSE event.
    Event(SseEvent),
    /// The stream ended normally; the connection is handed back for the pool.
    End(ClientConn),
    /// The stream broke.
    Failed(UpstreamError),
}

/// Spawns a local task that reads an SSE body from `conn` and sends its events, tagged with
/// `tag`, into `tx`. The task stops when the stream ends or when every receiver is gone.
pub fn spawn_reader<T: Copy + 'static>(
    mut conn: ClientConn,
    tag: T,
    tx: mpsc::Sender<(T, ReaderMsg)>,
) {
    monoio::spawn(async move {
        let mut dec = SseDecoder::new();
        loop {
            let chunk = monoio::select! {
                r = conn.read_chunk() => r,
                _ = tx.closed() => return,
            };
            match chunk {
                Ok(Some(bytes)) => {
                    dec.push(&bytes);
                    while let Some(ev) = dec.next_event() {
                        if tx.send((tag, ReaderMsg::Event(ev))).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => {
                    let _ = tx.send((tag, ReaderMsg::End(conn))).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send((tag, ReaderMsg::Failed(e.into()))).await;
                    return;
                }
            }
        }
    });
}
