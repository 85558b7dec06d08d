//! Server side of the codec: [`ServerConn`] reads requests off one accepted connection and
//! writes responses back (whole, or streamed with chunked encoding for SSE).
//!
//! Request flow: wait up to `idle_timeout` for the first byte, then read until the head is
//! complete (bounded by `head_timeout`, `max_head_bytes`, `max_headers`), parse it in place
//! with `httparse`, `freeze()` the head bytes and slice method, target and header values out
//! of them. The body is then read whole (bounded by `body_timeout` and `max_body_bytes`):
//! a Content-Length body is split straight off the read buffer without copying; a chunked
//! body is de-chunked (a single-chunk body is not copied either). Bytes past the request
//! stay buffered for the next (pipelined) request.
//!
//! Errors: every [`ServerError`] except `Io` maps to a status via [`ServerError::status`];
//! the caller writes that reply and drops the connection. Writes go through one `Vec<u8>`
//! per connection that is handed to monoio and given back, so responses do not allocate.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::time::Instant;

use crate::chunked::{Chunk, ChunkedDecoder};
use crate::headers::{Headers, Method};
use crate::io::{read_more, write_buf, BodyJoin};
use crate::wire;

/// Header slots parsed on the stack; a larger `max_headers` uses a heap array.
const STACK_HEADER_SLOTS: usize = 128;
/// Bytes of spare room requested from the read buffer per read while reading a head.
const HEAD_READ_SPARE: usize = 4096;
/// Bytes of spare room requested per read while reading a chunked body.
const BODY_READ_SPARE: usize = 16 * 1024;

/// Per-connection limits for reading requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line + headers + blank line). Over it:
    /// [`ServerError::HeadTooLarge`] (431). Default 16 KiB.
    pub max_head_bytes: usize,
    /// Most header fields in one head. Over it: [`ServerError::TooManyHeaders`] (431).
    /// Default 64.
    pub max_headers: usize,
    /// Largest body, by Content-Length or by chunked total. Over it:
    /// [`ServerError::BodyTooLarge`] (413). Default 4 MiB.
    pub max_body_bytes: usize,
    /// Time from the first byte of a head until the whole head is in; a client trickling
    /// its head byte by byte hits this. Over it: [`ServerError::Timeout`] (408). Default 10 s.
    pub head_timeout: Duration,
    /// Time for the whole body. Over it: [`ServerError::Timeout`] (408). Default 30 s.
    pub body_timeout: Duration,
    /// Wait for the first byte of the next request on a keep-alive connection; when it
    /// elapses [`ServerConn::next_request`] returns `Ok(None)`. Default 60 s.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 4 * 1024 * 1024,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A parsed request head. All `Bytes` fields are slices of one frozen head buffer.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Classified method.
    pub method: Method,
    /// Method token as sent.
    pub method_raw: Bytes,
    /// Raw request-target, e.g. `b"/mcp?x=1"`.
    pub target: Bytes,
    /// HTTP minor version: 0 or 1.
    pub minor_version: u8,
    /// Header fields in arrival order.
    pub headers: Headers,
    /// Whether the client allows the connection to be reused: HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
}

impl RequestHead {
    /// The request-target without its query (`/mcp` for `/mcp?x=1`).
    pub fn path(&self) -> &[u8] {
        match memchr::memchr(b'?', &self.target) {
            Some(q) => &self.target[..q],
            None => &self.target,
        }
    }

    /// The query after `?`, if any.
    pub fn query(&self) -> Option<&[u8]> {
        memchr::memchr(b'?', &self.target).map(|q| &self.target[q + 1..])
    }
}

/// A whole request: head plus its fully read (and de-chunked) body.
#[derive(Debug, Clone)]
pub struct Request {
    /// The parsed head.
    pub head: RequestHead,
    /// The body, bounded by [`Limits::max_body_bytes`]; empty when there is none.
    pub body: Bytes,
}

/// Why a request could not be read. After any of these the connection must be dropped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Socket error, or the peer closed in the middle of a request.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The head exceeds [`Limits::max_head_bytes`].
    #[error("request head too large")]
    HeadTooLarge,
    /// The head has more than [`Limits::max_headers`] fields.
    #[error("too many request headers")]
    TooManyHeaders,
    /// The body exceeds [`Limits::max_body_bytes`].
    #[error("request body too large")]
    BodyTooLarge,
    /// The head or the body did not arrive in time.
    #[error("timed out reading request")]
    Timeout,
    /// Bad request line or headers, bad chunk framing, both Content-Length and
    /// Transfer-Encoding, or a bad Content-Length.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// A Transfer-Encoding other than `chunked`.
    #[error("unsupported transfer-encoding")]
    UnsupportedTransferEncoding,
    /// An `Expect:` other than `100-continue`.
    #[error("expectation failed")]
    ExpectationFailed,
}

impl ServerError {
    /// The status to reply with, or `None` when no reply should be attempted (`Io`).
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Io(_) => None,
            Self::HeadTooLarge | Self::TooManyHeaders => Some(431),
            Self::BodyTooLarge => Some(413),
            Self::Timeout => Some(408),
            Self::Malformed(_) => Some(400),
            Self::UnsupportedTransferEncoding => Some(501),
            Self::ExpectationFailed => Some(417),
        }
    }
}

/// How the response body in progress is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamMode {
    /// No streamed response in progress.
    None,
    /// `Transfer-Encoding: chunked` (HTTP/1.1 clients).
    Chunked,
    /// Raw bytes delimited by closing the connection (HTTP/1.0 clients).
    UntilClose,
}

/// Byte offsets of one parsed header within the head buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

/// Offsets of a parsed request line plus the head length.
struct ParsedHead {
    len: usize,
    method: (usize, usize),
    target: (usize, usize),
    minor_version: u8,
}

/// One accepted connection, server side.
///
/// Generic over monoio's owned-buffer IO traits, so it works on `TcpStream` under either
/// driver and on TLS streams. Needs a runtime with the timer enabled.
pub struct ServerConn<S> {
    io: S,
    limits: Limits,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Reused scratch list of header offsets, so parsing does not allocate per request.
    spans: Vec<Span>,
    /// Where the next search for the end of the head starts (avoids rescanning a head
    /// that arrives in many small reads).
    scan_from: usize,
    /// HTTP minor version of the last request, which decides how responses are framed.
    last_minor: u8,
    stream: StreamMode,
}

impl<S: AsyncReadRent + AsyncWriteRent> ServerConn<S> {
    /// Wrap an accepted connection.
    pub fn new(io: S, limits: Limits) -> Self {
        Self {
            io,
            limits,
            rbuf: BytesMut::with_capacity(HEAD_READ_SPARE),
            wbuf: Vec::with_capacity(1024),
            spans: Vec::new(),
            scan_from: 0,
            last_minor: 1,
            stream: StreamMode::None,
        }
    }

    /// The limits this connection enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The underlying stream (e.g. to read the peer address).
    pub fn inner(&self) -> &S {
        &self.io
    }

    /// Whether the client has closed the connection (a non-blocking peek; nothing is consumed).
    /// A streaming response uses it to notice a client that went away without writing to it.
    pub fn client_closed(&self) -> bool
    where
        S: std::os::fd::AsRawFd,
    {
        crate::io::peek_state(&self.io) == crate::io::PeerState::Closed
    }

    /// Next request on this connection.
    ///
    /// `Ok(None)`: the peer closed cleanly between requests, or `idle_timeout` elapsed
    /// before the first byte of a request.
    ///
    /// # Errors
    /// Any [`ServerError`]; the caller writes an error reply if
    /// [`status`](ServerError::status) is `Some`, then drops the connection.
    pub async fn next_request(&mut self) -> Result<Option<Request>, ServerError> {
        let Some(head) = self.read_head().await? else {
            return Ok(None);
        };
        self.last_minor = head.minor_version;
        let body = self.read_body(&head).await?;
        Ok(Some(Request { head, body }))
    }

    async fn read_head(&mut self) -> Result<Option<RequestHead>, ServerError> {
        self.scan_from = 0;
        if self.rbuf.is_empty() {
            let first = monoio::time::timeout(
                self.limits.idle_timeout,
                read_more(&mut self.io, &mut self.rbuf, HEAD_READ_SPARE),
            )
            .await;
            match first {
                Err(_elapsed) => return Ok(None),
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ServerError::Io(e)),
            }
        }
        let deadline = Instant::now() + self.limits.head_timeout;
        loop {
            if let Some(parsed) = self.try_parse_head()? {
                return Ok(Some(self.split_head(parsed)));
            }
            let read = monoio::time::timeout_at(
                deadline,
                read_more(&mut self.io, &mut self.rbuf, HEAD_READ_SPARE),
            )
            .await;
            match read {
                Err(_elapsed) => return Err(ServerError::Timeout),
                Ok(Ok(0)) => return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ServerError::Io(e)),
            }
        }
    }

    /// Parse the buffered head if it is complete, recording offsets into `self.spans`.
    fn try_parse_head(&mut self) -> Result<Option<ParsedHead>, ServerError> {
        try_parse_head(
            &self.rbuf,
            &self.limits,
            &mut self.scan_from,
            &mut self.spans,
        )
    }

    /// Split the parsed head off the read buffer and slice its parts.
    fn split_head(&mut self, p: ParsedHead) -> RequestHead {
        split_head(&mut self.rbuf, p, &self.spans)
    }

    async fn read_body(&mut self, head: &RequestHead) -> Result<Bytes, ServerError> {
        let framing = request_framing(&head.headers)?;
        let max = self.limits.max_body_bytes;
        if let Framing::Length(n) = framing {
            if n > max as u64 {
                return Err(ServerError::BodyTooLarge);
            }
        }
        if let Some(expect) = head.headers.get("expect") {
            if !crate::headers::trim_ascii(expect).eq_ignore_ascii_case(b"100-continue") {
                return Err(ServerError::ExpectationFailed);
            }
            let wants_body = !matches!(framing, Framing::Length(0));
            // The client waits for this before sending the body; skip it if the body is
            // already arriving anyway or the client speaks HTTP/1.0 (no 1xx there).
            if wants_body && head.minor_version >= 1 && self.rbuf.is_empty() {
                self.wbuf.clear();
                self.wbuf
                    .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                write_buf(&mut self.io, &mut self.wbuf).await?;
            }
        }
        let deadline = Instant::now() + self.limits.body_timeout;
        match framing {
            Framing::Length(0) => Ok(Bytes::new()),
            Framing::Length(n) => {
                let n = usize::try_from(n).map_err(|_| ServerError::BodyTooLarge)?;
                while self.rbuf.len() < n {
                    let missing = n - self.rbuf.len();
                    self.read_body_bytes(deadline, missing).await?;
                }
                Ok(self.rbuf.split_to(n).freeze())
            }
            Framing::Chunked => {
                let mut dec = ChunkedDecoder::new(self.limits.max_head_bytes);
                // A body sent as one chunk is handed out without copying.
                let mut body = BodyJoin::default();
                loop {
                    match dec.decode(&mut self.rbuf).map_err(ServerError::Malformed)? {
                        Chunk::Data(d) => {
                            body.push(d, max).map_err(|()| ServerError::BodyTooLarge)?;
                        }
                        Chunk::NeedMore => self.read_body_bytes(deadline, BODY_READ_SPARE).await?,
                        Chunk::Done => break,
                    }
                }
                Ok(body.finish())
            }
        }
    }

    /// One body read before `deadline`; EOF is an error (the body is incomplete).
    async fn read_body_bytes(
        &mut self,
        deadline: Instant,
        spare: usize,
    ) -> Result<(), ServerError> {
        let read =
            monoio::time::timeout_at(deadline, read_more(&mut self.io, &mut self.rbuf, spare))
                .await
                .map_err(|_elapsed| ServerError::Timeout)??;
        if read == 0 {
            return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// Append the status line, caller headers and the connection header for `keep_alive`.
    fn begin_head(&mut self, status: u16, headers: &[(&str, &[u8])], keep_alive: bool) {
        self.wbuf.clear();
        wire::put_status_line(&mut self.wbuf, status);
        wire::put_headers(&mut self.wbuf, headers);
        if !keep_alive {
            wire::put_header(&mut self.wbuf, "Connection", b"close");
        } else if self.last_minor == 0 {
            // HTTP/1.0 clients close unless told the connection persists.
            wire::put_header(&mut self.wbuf, "Connection", b"keep-alive");
        }
    }

    /// Write a whole response with `Content-Length`.
    ///
    /// `headers` must not contain Content-Length, Transfer-Encoding or Connection: the
    /// codec writes them (`Connection: close` when `keep_alive` is false).
    ///
    /// # Errors
    /// Socket errors; the connection is then unusable.
    pub async fn write_full(
        &mut self,
        status: u16,
        headers: &[(&str, &[u8])],
        body: &[u8],
        keep_alive: bool,
    ) -> std::io::Result<()> {
        self.begin_head(status, headers, keep_alive);
        wire::put_content_length(&mut self.wbuf, body.len());
        self.wbuf.extend_from_slice(b"\r\n");
        self.wbuf.extend_from_slice(body);
        write_buf(&mut self.io, &mut self.wbuf).await
    }

    /// Write a response without a body (202/204/304 style). 1xx, 204 and 304 carry no
    /// Content-Length; every other status gets `Content-Length: 0`.
    ///
    /// # Errors
    /// Socket errors; the connection is then unusable.
    pub async fn write_empty(
        &mut self,
        status: u16,
        headers: &[(&str, &[u8])],
        keep_alive: bool,
    ) -> std::io::Result<()> {
        self.begin_head(status, headers, keep_alive);
        if !matches!(status, 100..=199 | 204 | 304) {
            wire::put_content_length(&mut self.wbuf, 0);
        }
        self.wbuf.extend_from_slice(b"\r\n");
        write_buf(&mut self.io, &mut self.wbuf).await
    }

    /// Start a streamed response with chunked transfer encoding (for SSE). The head is
    /// written immediately. HTTP/1.0 clients get a body delimited by connection close
    /// instead, and the caller must close the connection after [`finish_stream`].
    ///
    /// [`finish_stream`]: ServerConn::finish_stream
    ///
    /// # Errors
    /// Socket errors; the connection is then unusable.
    pub async fn start_stream(
        &mut self,
        status: u16,
        headers: &[(&str, &[u8])],
    ) -> std::io::Result<()> {
        if self.last_minor == 0 {
            self.begin_head(status, headers, false);
            self.stream = StreamMode::UntilClose;
        } else {
            self.begin_head(status, headers, true);
            wire::put_header(&mut self.wbuf, "Transfer-Encoding", b"chunked");
            self.stream = StreamMode::Chunked;
        }
        self.wbuf.extend_from_slice(b"\r\n");
        write_buf(&mut self.io, &mut self.wbuf).await
    }

    /// Write one chunk of a streamed response and flush it to the socket. Empty `data` is
    /// skipped (an empty chunk would end the body).
    ///
    /// # Errors
    /// Socket errors; the connection is then unusable.
    pub async fn write_chunk(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.wbuf.clear();
        if self.stream == StreamMode::Chunked {
            wire::put_chunk_size(&mut self.wbuf, data.len());
            self.wbuf.extend_from_slice(data);
            self.wbuf.extend_from_slice(b"\r\n");
        } else {
            self.wbuf.extend_from_slice(data);
        }
        write_buf(&mut self.io, &mut self.wbuf).await
    }

    /// End a streamed response (the terminating zero-size chunk).
    ///
    /// # Errors
    /// Socket errors; the connection is then unusable.
    pub async fn finish_stream(&mut self) -> std::io::Result<()> {
        let mode = std::mem::replace(&mut self.stream, StreamMode::None);
        if mode != StreamMode::Chunked {
            return Ok(());
        }
        self.wbuf.clear();
        self.wbuf.extend_from_slice(b"0\r\n\r\n");
        write_buf(&mut self.io, &mut self.wbuf).await
    }

    /// Close after an error reply without resetting it: shut the write side (the client sees
    /// the reply and then end of stream), then read and discard what the client is still
    /// sending — at most `max_bytes`, for at most `max_wait` — before the caller drops the
    /// connection. Closing a socket with unread bytes makes the kernel send RST, which can
    /// destroy the reply before the client reads it (a 431 for an oversized header that is
    /// still arriving, say).
    pub async fn linger(&mut self, max_bytes: usize, max_wait: Duration) {
        let _ = self.io.shutdown().await;
        let deadline = Instant::now() + max_wait;
        let mut drained = 0usize;
        while drained < max_bytes {
            self.rbuf.clear();
            let read = monoio::time::timeout_at(
                deadline,
                read_more(&mut self.io, &mut self.rbuf, HEAD_READ_SPARE.max(64 * 1024)),
            )
            .await;
            match read {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
        self.rbuf.clear();
    }

    /// Give back the underlying stream. Bytes already read past the last request are lost.
    pub fn into_inner(self) -> S {
        self.io
    }
}

/// Parse the head at the start of `buf` if it is complete, recording header offsets into
/// `spans`; `scan_from` remembers where to look for the end of the head next time.
fn try_parse_head(
    buf: &[u8],
    limits: &Limits,
    scan_from: &mut usize,
    spans: &mut Vec<Span>,
) -> Result<Option<ParsedHead>, ServerError> {
    let max_head = limits.max_head_bytes;
    if !head_end_seen(buf, *scan_from) {
        // The terminator may straddle this read and the next one.
        *scan_from = buf.len().saturating_sub(2);
        if buf.len() > max_head {
            return Err(ServerError::HeadTooLarge);
        }
        return Ok(None);
    }
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADER_SLOTS];
    let mut heap;
    let slots: &mut [httparse::Header<'_>] = if limits.max_headers <= STACK_HEADER_SLOTS {
        &mut stack[..limits.max_headers]
    } else {
        heap = vec![httparse::EMPTY_HEADER; limits.max_headers];
        &mut heap
    };
    let mut req = httparse::Request::new(slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            *scan_from = buf.len().saturating_sub(2);
            if buf.len() > max_head {
                return Err(ServerError::HeadTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ServerError::TooManyHeaders),
        Err(e) => return Err(ServerError::Malformed(parse_error_text(e))),
    };
    if len > max_head {
        return Err(ServerError::HeadTooLarge);
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start, start + s.len())
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(ServerError::Malformed("incomplete request line"));
    };
    let parsed = ParsedHead {
        len,
        method: span(method.as_bytes()),
        target: span(path.as_bytes()),
        minor_version: version,
    };
    spans.clear();
    for h in req.headers.iter() {
        spans.push(Span {
            name: span(h.name.as_bytes()),
            value: span(h.value),
        });
    }
    Ok(Some(parsed))
}

/// Split the parsed head off `rbuf` and slice its parts.
fn split_head(rbuf: &mut BytesMut, p: ParsedHead, spans: &[Span]) -> RequestHead {
    let head = rbuf.split_to(p.len).freeze();
    let mut headers = Headers::with_capacity(spans.len());
    for s in spans {
        headers.push_raw(
            head.slice(s.name.0..s.name.1),
            head.slice(s.value.0..s.value.1),
        );
    }
    let method_raw = head.slice(p.method.0..p.method.1);
    let keep_alive = if p.minor_version >= 1 {
        !headers.has_token("connection", "close")
    } else {
        headers.has_token("connection", "keep-alive") && !headers.has_token("connection", "close")
    };
    RequestHead {
        method: Method::from_bytes(&method_raw),
        method_raw,
        target: head.slice(p.target.0..p.target.1),
        minor_version: p.minor_version,
        headers,
        keep_alive,
    }
}

// === impl RequestParser ===

/// Sans-IO request reader: the same head parsing, framing rules and limits as [`ServerConn`],
/// for a caller that does its own IO (e.g. the loadtest mock's tokio engine).
///
/// Append what the socket delivers to one `BytesMut` and call [`RequestParser::parse`] after
/// each read; it consumes a complete request (head and de-chunked body) from the front of the
/// buffer and leaves any pipelined bytes behind. It neither reads a clock nor writes: the
/// caller enforces timeouts, and a request with `Expect: 100-continue` gets no interim
/// `100 Continue` (write one yourself if clients wait for it).
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    spans: Vec<Span>,
    scan_from: usize,
    /// A head whose body is still arriving.
    pending: Option<(RequestHead, PendingBody)>,
}

#[derive(Debug)]
enum PendingBody {
    Length(usize),
    Chunked(ChunkedDecoder, BodyJoin),
}

impl RequestParser {
    /// A parser enforcing `limits` (its timeouts are not used: there is no clock here).
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            spans: Vec::new(),
            scan_from: 0,
            pending: None,
        }
    }

    /// Consume the next complete request from the front of `buf`; `Ok(None)` means read
    /// more bytes and call again.
    ///
    /// # Errors
    /// Any [`ServerError`] except `Io` and `Timeout`; the caller writes the reply that
    /// [`ServerError::status`] names and closes the connection.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ServerError> {
        if self.pending.is_none() {
            let Some(parsed) =
                try_parse_head(buf, &self.limits, &mut self.scan_from, &mut self.spans)?
            else {
                return Ok(None);
            };
            self.scan_from = 0;
            let head = split_head(buf, parsed, &self.spans);
            if let Some(expect) = head.headers.get("expect") {
                if !crate::headers::trim_ascii(expect).eq_ignore_ascii_case(b"100-continue") {
                    return Err(ServerError::ExpectationFailed);
                }
            }
            let body = match request_framing(&head.headers)? {
                Framing::Length(n) if n > self.limits.max_body_bytes as u64 => {
                    return Err(ServerError::BodyTooLarge)
                }
                Framing::Length(n) => {
                    PendingBody::Length(usize::try_from(n).map_err(|_| ServerError::BodyTooLarge)?)
                }
                Framing::Chunked => PendingBody::Chunked(
                    ChunkedDecoder::new(self.limits.max_head_bytes),
                    BodyJoin::default(),
                ),
            };
            self.pending = Some((head, body));
        }
        let Some((_, body)) = self.pending.as_mut() else {
            return Ok(None);
        };
        let body = match body {
            PendingBody::Length(n) => {
                if buf.len() < *n {
                    return Ok(None);
                }
                buf.split_to(*n).freeze()
            }
            PendingBody::Chunked(dec, join) => loop {
                match dec.decode(buf).map_err(ServerError::Malformed)? {
                    Chunk::Data(d) => join
                        .push(d, self.limits.max_body_bytes)
                        .map_err(|()| ServerError::BodyTooLarge)?,
                    Chunk::NeedMore => return Ok(None),
                    Chunk::Done => break std::mem::take(join).finish(),
                }
            },
        };
        let (head, _) = self
            .pending
            .take()
            .expect("a pending head was checked above");
        Ok(Some(Request { head, body }))
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// Decide request body framing (RFC 9112 §6): chunked, Content-Length, or no body.
fn request_framing(headers: &Headers) -> Result<Framing, ServerError> {
    let mut cl: Option<u64> = None;
    for v in headers.get_all("content-length") {
        // A list such as `5, 5` or repeated equal fields is tolerated; differing ones are not.
        for part in v.split(|&b| b == b',') {
            let n = wire::parse_content_length(part)
                .ok_or(ServerError::Malformed("bad Content-Length"))?;
            if cl.is_some_and(|prev| prev != n) {
                return Err(ServerError::Malformed("conflicting Content-Length"));
            }
            cl = Some(n);
        }
    }
    let mut te_tokens = 0usize;
    let mut te_chunked = false;
    let mut te_seen = false;
    for v in headers.get_all("transfer-encoding") {
        te_seen = true;
        for t in v.split(|&b| b == b',') {
            let t = crate::headers::trim_ascii(t);
            if t.is_empty() {
                continue;
            }
            te_tokens += 1;
            te_chunked = t.eq_ignore_ascii_case(b"chunked");
        }
    }
    if !te_seen {
        return Ok(Framing::Length(cl.unwrap_or(0)));
    }
    if cl.is_some() {
        return Err(ServerError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    match (te_tokens, te_chunked) {
        (0, _) => Err(ServerError::Malformed("empty Transfer-Encoding")),
        (1, true) => Ok(Framing::Chunked),
        _ => Err(ServerError::UnsupportedTransferEncoding),
    }
}

/// True if `buf[from..]` contains the blank line that ends a head (`\n\n` or `\n\r\n`).
fn head_end_seen(buf: &[u8], from: usize) -> bool {
    let from = from.min(buf.len());
    memchr::memchr_iter(b'\n', &buf[from..]).any(|i| {
        let rest = &buf[from + i + 1..];
        rest.starts_with(b"\n") || rest.starts_with(b"\r\n")
    })
}

fn parse_error_text(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in list {
            h.push(n, Bytes::copy_from_slice(v.as_bytes()));
        }
        h
    }

    #[test]
    fn framing_table() {
        use Framing::*;
        type Case<'a> = (&'a [(&'a str, &'a str)], Result<Framing, Option<u16>>);
        let cases: &[Case<'_>] = &[
            (&[], Ok(Length(0))),
            (&[("Content-Length", "12")], Ok(Length(12))),
            (
                &[("content-length", "5"), ("Content-Length", "5")],
                Ok(Length(5)),
            ),
            (&[("content-length", "5, 5")], Ok(Length(5))),
            (
                &[("content-length", "5"), ("Content-Length", "6")],
                Err(Some(400)),
            ),
            (&[("content-length", "-5")], Err(Some(400))),
            (&[("content-length", "")], Err(Some(400))),
            (&[("Transfer-Encoding", "chunked")], Ok(Chunked)),
            (&[("Transfer-Encoding", " Chunked ")], Ok(Chunked)),
            (&[("Transfer-Encoding", "gzip, chunked")], Err(Some(501))),
            (&[("Transfer-Encoding", "gzip")], Err(Some(501))),
            (
                &[
                    ("Transfer-Encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                Err(Some(501)),
            ),
            (&[("Transfer-Encoding", "")], Err(Some(400))),
            (
                &[("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
                Err(Some(400)),
            ),
        ];
        for (list, want) in cases {
            let got = request_framing(&headers(list)).map_err(|e| e.status());
            assert_eq!(&got, want, "{list:?}");
        }
    }

    #[test]
    fn head_end_detection() {
        assert!(head_end_seen(b"GET / HTTP/1.1\r\n\r\n", 0));
        assert!(head_end_seen(b"GET / HTTP/1.1\n\n", 0));
        assert!(!head_end_seen(b"GET / HTTP/1.1\r\nA: b\r\n", 0));
        assert!(!head_end_seen(b"GET / HTTP/1.1\r\n\r", 0));
        assert!(head_end_seen(b"GET / HTTP/1.1\r\n\r\n", 14));
        assert!(!head_end_seen(b"GET / HTTP/1.1\r\n\r\n", 100));
    }

    #[test]
    fn statuses() {
        assert_eq!(ServerError::HeadTooLarge.status(), Some(431));
        assert_eq!(ServerError::TooManyHeaders.status(), Some(431));
        assert_eq!(ServerError::BodyTooLarge.status(), Some(413));
        assert_eq!(ServerError::Timeout.status(), Some(408));
        assert_eq!(ServerError::Malformed("x").status(), Some(400));
        assert_eq!(ServerError::UnsupportedTransferEncoding.status(), Some(501));
        assert_eq!(ServerError::ExpectationFailed.status(), Some(417));
        assert_eq!(
            ServerError::Io(std::io::ErrorKind::Other.into()).status(),
            None
        );
    }

    #[test]
    fn request_parser_split_anywhere_and_pipelined() {
        let wire: &[u8] = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nMcp-Session-Id: abc\r\n\r\nhello\
POST /mcp HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
GET /mcp HTTP/1.0\r\n\r\n";
        for split in 0..wire.len() {
            let mut p = RequestParser::new(Limits::default());
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                buf.extend_from_slice(part);
                while let Some(r) = p.parse(&mut buf).expect("valid requests") {
                    got.push(r);
                }
            }
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[0].head.method, Method::Post);
            assert_eq!(got[0].head.path(), b"/mcp");
            assert_eq!(got[0].head.headers.get("mcp-session-id"), Some(&b"abc"[..]));
            assert_eq!(&got[0].body[..], b"hello");
            assert_eq!(&got[1].body[..], b"abcde");
            assert_eq!(got[2].head.method, Method::Get);
            assert!(!got[2].head.keep_alive);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn request_parser_limits_and_errors() {
        let small = Limits {
            max_head_bytes: 64,
            max_body_bytes: 4,
            ..Limits::default()
        };
        type Want = fn(&ServerError) -> bool;
        let table: &[(&[u8], Want)] = &[
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", |e| {
                matches!(e, ServerError::BodyTooLarge)
            }),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                |e| matches!(e, ServerError::BodyTooLarge),
            ),
            (&[b'a'; 100], |e| matches!(e, ServerError::HeadTooLarge)),
            (b"\x16\x03\x01\r\n\r\n", |e| {
                matches!(e, ServerError::Malformed(_))
            }),
            (b"POST / HTTP/1.1\r\nExpect: teapot\r\n\r\n", |e| {
                matches!(e, ServerError::ExpectationFailed)
            }),
        ];
        for (input, want) in table {
            let mut p = RequestParser::new(small);
            let mut buf = BytesMut::from(*input);
            let e = p.parse(&mut buf).expect_err("must be refused");
            assert!(want(&e), "{:?}: {e:?}", String::from_utf8_lossy(input));
        }
        // Incomplete input is not an error.
        let mut p = RequestParser::new(small);
        let mut buf = BytesMut::from(&b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"[..]);
        assert!(p.parse(&mut buf).expect("incomplete is fine").is_none());
        buf.extend_from_slice(b"c");
        assert_eq!(
            &p.parse(&mut buf).expect("ok").expect("complete").body[..],
            b"abc"
        );
    }
}
