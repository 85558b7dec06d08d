//! Client side of the codec: [`ClientConn`] sends requests to an upstream over one plain
//! TCP connection and reads responses, whole or piece by piece (SSE streams).
//!
//! The hub pools these per worker. A connection goes back to the pool only when
//! [`ClientConn::is_reusable`] says so: the last response was read to its end, both sides
//! allowed keep-alive, no stray bytes are buffered, and no operation was abandoned midway.
//! Every operation sets a `busy` flag on entry and clears it on completion, so a future
//! dropped by `monoio::time::timeout` leaves the connection marked unusable (a cancelled
//! read may already have consumed bytes of the response).
//!
//! Response bodies are decoded from one read buffer per connection; data is handed out as
//! `Bytes` split off that buffer, so nothing is copied except when joining a chunked body.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use monoio::net::TcpStream;

use crate::chunked::{Chunk, ChunkedDecoder};
use crate::headers::Headers;
use crate::io::{read_more, write_buf, BodyJoin};
use crate::wire;

/// Largest response head accepted.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Most response header fields accepted.
const MAX_RESPONSE_HEADERS: usize = 128;
/// Spare room requested from the read buffer per read while waiting for a head or the next piece
/// of a stream. Small on purpose: with io_uring a pending read pins its buffer, and a hub holds one
/// idle upstream SSE read per open client stream.
const READ_SPARE: usize = 4 * 1024;
/// Largest spare room requested for a body whose remaining length is known.
const BODY_READ_SPARE: usize = 64 * 1024;

/// Why a request/response exchange failed. After any error the connection is not reusable.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket error, or the peer closed in the middle of a body.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The response violates HTTP/1.1 framing.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// The response head exceeds 64 KiB or 128 fields.
    #[error("response head too large")]
    HeadTooLarge,
    /// The body exceeds the caller's limit.
    #[error("response body too large")]
    BodyTooLarge,
    /// The peer closed (or reset) the connection before a complete response head; typical
    /// of a pooled connection the upstream had already closed, so a retry on a fresh
    /// connection is reasonable for idempotent requests.
    #[error("connection closed before a response")]
    Closed,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (HEAD request, 1xx, 204, 304).
    Empty,
    /// `Content-Length` bytes (possibly 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Delimited by the server closing the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Status code (never 1xx except 101; interim responses are skipped).
    pub status: u16,
    /// Header fields in arrival order.
    pub headers: Headers,
    /// How the body is delimited.
    pub body: BodyKind,
    /// Whether both sides allow reusing the connection after this response.
    pub keep_alive: bool,
}

/// Body decoding state of the response in progress.
#[derive(Debug)]
enum BodyState {
    Done,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// One client connection to an upstream, over `monoio::net::TcpStream`.
pub struct ClientConn {
    io: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    body: BodyDecoder,
    /// Set while an operation runs; stays set if its future is dropped.
    busy: bool,
    /// Set after any error.
    broken: bool,
    /// Keep-alive as agreed for the last exchange.
    keep_alive: bool,
    /// Whether the last [`ClientConn::send`] wrote its whole request.
    written: bool,
}

impl ClientConn {
    /// Connect to `addr` and set `TCP_NODELAY`. The caller bounds this with
    /// `monoio::time::timeout`.
    ///
    /// # Errors
    /// Connect or socket-option errors.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let io = TcpStream::connect(addr).await?;
        io.set_nodelay(true)?;
        Ok(Self::from_stream(io))
    }

    /// Wrap an already connected stream.
    pub fn from_stream(io: TcpStream) -> Self {
        Self {
            io,
            rbuf: BytesMut::with_capacity(READ_SPARE),
            wbuf: Vec::with_capacity(1024),
            body: BodyDecoder::new(BodyKind::Empty),
            busy: false,
            broken: false,
            keep_alive: true,
            written: false,
        }
    }

    /// Whether the last [`ClientConn::send`] got its whole request written to the socket. After
    /// a failed send this tells "never delivered" (`false`: the peer cannot have acted on an
    /// incomplete request) from "may have been delivered" (`true`: the failure came while
    /// waiting for the answer).
    pub fn request_written(&self) -> bool {
        self.written
    }

    /// Whether the peer has closed this (idle) connection or sent bytes nobody asked for, so it
    /// must not be reused. A non-blocking peek at the socket; call it only on idle connections.
    pub fn peer_closed(&self) -> bool {
        !matches!(crate::io::peek_state(&self.io), crate::io::PeerState::Quiet)
    }

    /// The underlying stream.
    pub fn inner(&self) -> &TcpStream {
        &self.io
    }

    /// True only when the last response was read completely, both sides said keep-alive,
    /// and no operation was abandoned midway (or failed). A fresh connection is reusable.
    pub fn is_reusable(&self) -> bool {
        !self.busy && !self.broken && self.keep_alive && self.body.is_done() && self.rbuf.is_empty()
    }

    /// Write one request (`Host` added, `Content-Length` set from `body`), then read the
    /// response head, skipping 1xx interim responses (except 101).
    ///
    /// `headers` must not contain Host, Content-Length or Transfer-Encoding. GET, HEAD,
    /// DELETE and OPTIONS requests with an empty body carry no Content-Length.
    ///
    /// # Errors
    /// [`ClientError::Closed`] if the peer closed before a complete head (including a
    /// reset while writing); `Io` if this connection is not reusable; otherwise see
    /// [`ClientError`].
    pub async fn send(
        &mut self,
        method: &str,
        target: &str,
        host: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<ResponseHead, ClientError> {
        if !self.is_reusable() {
            return Err(ClientError::Io(std::io::Error::other(
                "connection is not reusable for another request",
            )));
        }
        self.busy = true;
        self.written = false;
        let res = self.send_inner(method, target, host, headers, body).await;
        match &res {
            Ok(_) => {}
            Err(_) => self.broken = true,
        }
        self.busy = false;
        res
    }

    async fn send_inner(
        &mut self,
        method: &str,
        target: &str,
        host: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> Result<ResponseHead, ClientError> {
        self.wbuf.clear();
        let out = &mut self.wbuf;
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        wire::put_header(out, "Host", host.as_bytes());
        wire::put_headers(out, headers);
        if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS") {
            wire::put_content_length(out, body.len());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        let request_close = headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("connection")
                && v.split(|&b| b == b',')
                    .any(|t| crate::headers::trim_ascii(t).eq_ignore_ascii_case(b"close"))
        });
        write_buf(&mut self.io, &mut self.wbuf)
            .await
            .map_err(closed_or_io)?;
        self.written = true;

        loop {
            if let Some(head) = self.try_parse_head(method == "HEAD", request_close)? {
                if (100..200).contains(&head.status) && head.status != 101 {
                    continue;
                }
                return Ok(head);
            }
            if self.rbuf.len() > MAX_RESPONSE_HEAD_BYTES {
                return Err(ClientError::HeadTooLarge);
            }
            let n = read_more(&mut self.io, &mut self.rbuf, READ_SPARE)
                .await
                .map_err(closed_or_io)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Parse a complete buffered response head, consume it and set up body decoding.
    fn try_parse_head(
        &mut self,
        head_request: bool,
        request_close: bool,
    ) -> Result<Option<ResponseHead>, ClientError> {
        let Some(head) = parse_response_head(&mut self.rbuf, head_request, request_close)? else {
            return Ok(None);
        };
        self.keep_alive = head.keep_alive;
        self.body = BodyDecoder::new(head.body);
        Ok(Some(head))
    }

    /// Next piece of the decoded (de-chunked) response body, delivered as soon as it
    /// arrives; `Ok(None)` at the end of the body.
    ///
    /// # Errors
    /// Socket errors, an early close (`Io` with `UnexpectedEof`), or bad chunk framing.
    pub async fn read_chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        self.busy = true;
        let res = self.next_piece().await;
        if res.is_err() {
            self.broken = true;
        }
        self.busy = false;
        res
    }

    async fn next_piece(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            match self.body.decode(&mut self.rbuf)? {
                BodyPiece::Data(d) => return Ok(Some(d)),
                BodyPiece::End => return Ok(None),
                BodyPiece::NeedMore => {}
            }
            let spare = match self.body.remaining() {
                Some(rem) => usize::try_from(rem)
                    .unwrap_or(BODY_READ_SPARE)
                    .clamp(READ_SPARE, BODY_READ_SPARE),
                None => READ_SPARE,
            };
            let n = read_more(&mut self.io, &mut self.rbuf, spare).await?;
            if n == 0 {
                self.body.eof()?;
                return Ok(None);
            }
        }
    }

    /// Read the rest of the body, up to `max` bytes.
    ///
    /// # Errors
    /// [`ClientError::BodyTooLarge`] past `max`, otherwise as [`read_chunk`].
    ///
    /// [`read_chunk`]: ClientConn::read_chunk
    pub async fn read_to_end(&mut self, max: usize) -> Result<Bytes, ClientError> {
        self.busy = true;
        let res = self.rest_of_body(max).await;
        if res.is_err() {
            self.broken = true;
        }
        self.busy = false;
        res
    }

    async fn rest_of_body(&mut self, max: usize) -> Result<Bytes, ClientError> {
        if let Some(rem) = self.body.remaining() {
            // Known length: read it into one contiguous buffer and split it off uncopied.
            let n = usize::try_from(rem).map_err(|_| ClientError::BodyTooLarge)?;
            if n > max {
                return Err(ClientError::BodyTooLarge);
            }
            if n == 0 {
                return Ok(Bytes::new());
            }
            while self.rbuf.len() < n {
                let missing = n - self.rbuf.len();
                let read = read_more(&mut self.io, &mut self.rbuf, missing).await?;
                if read == 0 {
                    return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
            return match self.body.decode(&mut self.rbuf)? {
                BodyPiece::Data(d) => Ok(d),
                BodyPiece::End | BodyPiece::NeedMore => Ok(Bytes::new()),
            };
        }
        let mut body = BodyJoin::default();
        while let Some(d) = self.next_piece().await? {
            body.push(d, max).map_err(|()| ClientError::BodyTooLarge)?;
        }
        Ok(body.finish())
    }
}

/// Sans-IO response-head parser (what [`ClientConn`] uses): parses a complete head at the start
/// of `buf`, splits it off and decides the body framing; `Ok(None)` means read more bytes.
///
/// `head_request`: the request was `HEAD` (no body follows). `request_close`: the request
/// said `Connection: close`. Interim 1xx heads are returned like any other; skip them and
/// parse again. Decode the body that follows with [`BodyDecoder::new`]`(head.body)`.
///
/// # Errors
/// [`ClientError::HeadTooLarge`] past 64 KiB or 128 fields (also while incomplete), or
/// [`ClientError::Malformed`].
pub fn parse_response_head(
    buf: &mut BytesMut,
    head_request: bool,
    request_close: bool,
) -> Result<Option<ResponseHead>, ClientError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD_BYTES => {
            return Err(ClientError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ClientError::HeadTooLarge),
        Err(_) => return Err(ClientError::Malformed("invalid response head")),
    };
    if len > MAX_RESPONSE_HEAD_BYTES {
        return Err(ClientError::HeadTooLarge);
    }
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(ClientError::Malformed("incomplete status line"));
    };
    let base = buf.as_ptr() as usize;
    let mut spans = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let n = h.name.as_ptr() as usize - base;
        let v = h.value.as_ptr() as usize - base;
        spans.push((n, n + h.name.len(), v, v + h.value.len()));
    }
    let head = buf.split_to(len).freeze();
    let mut headers = Headers::with_capacity(spans.len());
    for (ns, ne, vs, ve) in spans {
        headers.push_raw(head.slice(ns..ne), head.slice(vs..ve));
    }

    let body = if head_request || matches!(status, 100..=199 | 204 | 304) {
        BodyKind::Empty
    } else if headers.get("transfer-encoding").is_some() {
        let last_chunked = headers
            .get_all("transfer-encoding")
            .flat_map(|v| v.split(|&b| b == b','))
            .map(crate::headers::trim_ascii)
            .filter(|t| !t.is_empty())
            .last()
            .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        if last_chunked {
            BodyKind::Chunked
        } else {
            BodyKind::UntilClose
        }
    } else {
        let mut cl: Option<u64> = None;
        for v in headers.get_all("content-length") {
            for part in v.split(|&b| b == b',') {
                let n = wire::parse_content_length(part)
                    .ok_or(ClientError::Malformed("bad Content-Length"))?;
                if cl.is_some_and(|prev| prev != n) {
                    return Err(ClientError::Malformed("conflicting Content-Length"));
                }
                cl = Some(n);
            }
        }
        match cl {
            Some(n) => BodyKind::Length(n),
            None => BodyKind::UntilClose,
        }
    };
    let server_keep_alive = if minor >= 1 {
        !headers.has_token("connection", "close")
    } else {
        headers.has_token("connection", "keep-alive") && !headers.has_token("connection", "close")
    };
    let keep_alive = server_keep_alive && !request_close && body != BodyKind::UntilClose;
    Ok(Some(ResponseHead {
        status,
        headers,
        body,
        keep_alive,
    }))
}

// === impl BodyDecoder ===

/// What one [`BodyDecoder::decode`] step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyPiece {
    /// Some body data (never empty), split off the buffer without copying.
    Data(Bytes),
    /// The buffer holds no complete unit; read more bytes (or report the close with
    /// [`BodyDecoder::eof`]) and call again.
    NeedMore,
    /// The body is complete; bytes left in the buffer belong to the next response.
    End,
}

/// Sans-IO response-body decoder for one [`BodyKind`] (what [`ClientConn`] uses): hands out
/// the de-chunked body as it arrives.
#[derive(Debug)]
pub struct BodyDecoder {
    state: BodyState,
}

impl BodyDecoder {
    /// A decoder for a body framed as `kind`.
    pub fn new(kind: BodyKind) -> Self {
        let state = match kind {
            BodyKind::Empty | BodyKind::Length(0) => BodyState::Done,
            BodyKind::Length(n) => BodyState::Length(n),
            BodyKind::Chunked => BodyState::Chunked(ChunkedDecoder::new(MAX_RESPONSE_HEAD_BYTES)),
            BodyKind::UntilClose => BodyState::UntilClose,
        };
        Self { state }
    }

    /// True once the whole body was handed out.
    pub fn is_done(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// Bytes still expected for a `Content-Length` body (`None` for other framings).
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            BodyState::Length(n) => Some(n),
            BodyState::Done => Some(0),
            _ => None,
        }
    }

    /// Next piece of the body from the front of `buf`.
    ///
    /// # Errors
    /// [`ClientError::Malformed`] on bad chunk framing.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<BodyPiece, ClientError> {
        match &mut self.state {
            BodyState::Done => Ok(BodyPiece::End),
            BodyState::Length(rem) => {
                if buf.is_empty() {
                    return Ok(BodyPiece::NeedMore);
                }
                let n = usize::try_from(*rem).unwrap_or(usize::MAX).min(buf.len());
                *rem -= n as u64;
                if *rem == 0 {
                    self.state = BodyState::Done;
                }
                Ok(BodyPiece::Data(buf.split_to(n).freeze()))
            }
            BodyState::Chunked(dec) => match dec.decode(buf).map_err(ClientError::Malformed)? {
                Chunk::Data(d) => Ok(BodyPiece::Data(d)),
                Chunk::Done => {
                    self.state = BodyState::Done;
                    Ok(BodyPiece::End)
                }
                Chunk::NeedMore => Ok(BodyPiece::NeedMore),
            },
            BodyState::UntilClose => {
                if buf.is_empty() {
                    return Ok(BodyPiece::NeedMore);
                }
                let n = buf.len();
                Ok(BodyPiece::Data(buf.split_to(n).freeze()))
            }
        }
    }

    /// The peer closed the connection: the end of an until-close body, an error otherwise.
    ///
    /// # Errors
    /// `Io` with `UnexpectedEof` if the body was not complete.
    pub fn eof(&mut self) -> Result<(), ClientError> {
        match self.state {
            BodyState::Done => Ok(()),
            BodyState::UntilClose => {
                self.state = BodyState::Done;
                Ok(())
            }
            _ => Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        }
    }
}

/// A reset or broken pipe before any response means the upstream closed the connection.
fn closed_or_io(e: std::io::Error) -> ClientError {
    match e.kind() {
        std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionAborted => ClientError::Closed,
        _ => ClientError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_head_and_body_split_anywhere() {
        let wire: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata: \r\n3\r\nx\n\n\r\n0\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\nrest";
        for split in 0..wire.len() {
            let mut buf = BytesMut::new();
            let mut heads = Vec::new();
            let mut bodies: Vec<Vec<u8>> = Vec::new();
            let mut dec: Option<BodyDecoder> = None;
            for part in [&wire[..split], &wire[split..]] {
                buf.extend_from_slice(part);
                loop {
                    if let Some(d) = dec.as_mut() {
                        match d.decode(&mut buf).expect("valid body") {
                            BodyPiece::Data(b) => {
                                bodies.last_mut().expect("a body").extend_from_slice(&b)
                            }
                            BodyPiece::End => dec = None,
                            BodyPiece::NeedMore => break,
                        }
                        continue;
                    }
                    match parse_response_head(&mut buf, false, false).expect("valid head") {
                        Some(h) if h.status == 100 => {}
                        Some(h) => {
                            dec = Some(BodyDecoder::new(h.body));
                            heads.push(h);
                            bodies.push(Vec::new());
                        }
                        None => break,
                    }
                }
            }
            dec.as_mut()
                .expect("until-close body")
                .eof()
                .expect("clean close");
            assert_eq!(
                heads.iter().map(|h| h.status).collect::<Vec<_>>(),
                [200, 202, 200]
            );
            assert_eq!(
                heads[0].headers.get("content-type"),
                Some(&b"text/event-stream"[..])
            );
            assert_eq!(heads[2].body, BodyKind::UntilClose);
            assert!(!heads[2].keep_alive);
            assert_eq!(
                bodies,
                [b"data: x\n\n".to_vec(), b"ok".to_vec(), b"rest".to_vec()]
            );
        }
        let mut d = BodyDecoder::new(BodyKind::Length(3));
        let mut buf = BytesMut::from(&b"ab"[..]);
        assert_eq!(
            d.decode(&mut buf).expect("ok"),
            BodyPiece::Data(Bytes::from_static(b"ab"))
        );
        assert!(d.eof().is_err(), "a short Content-Length body is an error");
    }
}
