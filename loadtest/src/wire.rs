//! Minimal HTTP/1.1 framing shared by the mock server and the load client.
//!
//! Owns: request/response head parsing (over the connection buffer with `httparse`, no
//! per-header allocation), body framing (`Content-Length`, chunked, until-close), an
//! incremental chunked decoder, an SSE event splitter and response-head writing. Only what
//! MCP Streamable HTTP needs; no HTTP/2, no compression, no `Expect: 100-continue`.

use bytes::BytesMut;

/// Most headers accepted in one head.
pub(crate) const MAX_HEADERS: usize = 48;
/// Largest head accepted before answering 431 / failing the response.
pub(crate) const MAX_HEAD: usize = 32 * 1024;

/// Framing and parse failures.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer sent bytes that are not HTTP/1.1.
    #[error("malformed HTTP: {0}")]
    Parse(&'static str),
    /// The head exceeded 32 KiB.
    #[error("HTTP head too large")]
    HeadTooLarge,
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes (responses only).
    UntilClose,
}

/// Request method, as far as MCP cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Delete,
    Other,
}

/// A parsed request head; borrowed header values point into the connection buffer.
pub(crate) struct RequestHead<'a> {
    pub(crate) method: Method,
    pub(crate) path: &'a str,
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
    pub(crate) session: Option<&'a [u8]>,
    pub(crate) protocol_version: Option<&'a [u8]>,
    pub(crate) head_len: usize,
}

fn eq_ci(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn parse_len(v: &[u8]) -> Result<usize, WireError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(WireError::Parse("bad content-length"))
}

fn is_chunked(v: &[u8]) -> bool {
    v.split(|b| *b == b',')
        .next_back()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Parses a request head at the start of `buf`; `Ok(None)` = need more bytes.
pub(crate) fn parse_request(buf: &[u8]) -> Result<Option<RequestHead<'_>>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let status = req
        .parse(buf)
        .map_err(|_| WireError::Parse("request head"))?;
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            if buf.len() > MAX_HEAD {
                return Err(WireError::HeadTooLarge);
            }
            return Ok(None);
        }
    };
    let method = match req.method {
        Some("POST") => Method::Post,
        Some("GET") => Method::Get,
        Some("DELETE") => Method::Delete,
        _ => Method::Other,
    };
    let mut framing = Framing::Length(0);
    let mut keep_alive = req.version == Some(1);
    let mut session = None;
    let mut protocol_version = None;
    for h in req.headers.iter() {
        let n = h.name;
        if eq_ci(n, "content-length") {
            if framing != Framing::Chunked {
                framing = Framing::Length(parse_len(h.value)?);
            }
        } else if eq_ci(n, "transfer-encoding") {
            if is_chunked(h.value) {
                framing = Framing::Chunked;
            }
        } else if eq_ci(n, "mcp-session-id") {
            session = Some(h.value);
        } else if eq_ci(n, "mcp-protocol-version") {
            protocol_version = Some(h.value);
        } else if eq_ci(n, "connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                keep_alive = false;
            } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    Ok(Some(RequestHead {
        method,
        path: req.path.unwrap_or("/"),
        framing,
        keep_alive,
        session,
        protocol_version,
        head_len,
    }))
}

/// A parsed response head (owned: the client keeps it past buffer reuse).
#[derive(Debug, Clone)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    pub(crate) sse: bool,
    pub(crate) json: bool,
    pub(crate) keep_alive: bool,
    pub(crate) session: Option<String>,
    pub(crate) head_len: usize,
}

/// Parses a response head at the start of `buf`; `Ok(None)` = need more bytes.
/// `head_request` is true when the request had no body-bearing response (never here).
pub(crate) fn parse_response(buf: &[u8]) -> Result<Option<ResponseHead>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let status = resp
        .parse(buf)
        .map_err(|_| WireError::Parse("response head"))?;
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            if buf.len() > MAX_HEAD {
                return Err(WireError::HeadTooLarge);
            }
            return Ok(None);
        }
    };
    let code = resp.code.unwrap_or(0);
    let mut framing = None;
    let mut keep_alive = resp.version == Some(1);
    let mut sse = false;
    let mut json = false;
    let mut session = None;
    for h in resp.headers.iter() {
        let n = h.name;
        if eq_ci(n, "content-length") {
            if framing != Some(Framing::Chunked) {
                framing = Some(Framing::Length(parse_len(h.value)?));
            }
        } else if eq_ci(n, "transfer-encoding") {
            if is_chunked(h.value) {
                framing = Some(Framing::Chunked);
            }
        } else if eq_ci(n, "content-type") {
            let v = h.value.trim_ascii_start();
            sse = v.len() >= 17 && v[..17].eq_ignore_ascii_case(b"text/event-stream");
            json = v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/json");
        } else if eq_ci(n, "mcp-session-id") {
            session = std::str::from_utf8(h.value).ok().map(str::to_owned);
        } else if eq_ci(n, "connection") && h.value.eq_ignore_ascii_case(b"close") {
            keep_alive = false;
        }
    }
    let framing = match framing {
        Some(f) => f,
        // RFC 9112 §6.3: these never have a body; everything else without framing reads to close.
        None if code == 204 || code == 304 || (100..200).contains(&code) => Framing::Length(0),
        None => Framing::UntilClose,
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    Ok(Some(ResponseHead {
        status: code,
        framing,
        sse,
        json,
        keep_alive,
        session,
        head_len,
    }))
}

// === impl ChunkedDecoder ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailer,
    Done,
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
}

impl ChunkedDecoder {
    pub(crate) fn new() -> Self {
        Self {
            state: ChunkState::Size,
        }
    }

    /// True once the terminating chunk and trailers were consumed.
    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input`, appending payload to `out`; returns bytes consumed.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> Result<usize, WireError> {
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size => {
                    let Some(nl) = memchr::memchr(b'\n', &input[pos..]) else {
                        if input.len() - pos > 1024 {
                            return Err(WireError::Parse("chunk size line"));
                        }
                        return Ok(pos);
                    };
                    let line = &input[pos..pos + nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let hex = line
                        .split(|b| *b == b';')
                        .next()
                        .unwrap_or_default()
                        .trim_ascii();
                    let size = std::str::from_utf8(hex)
                        .ok()
                        .and_then(|s| usize::from_str_radix(s, 16).ok())
                        .ok_or(WireError::Parse("chunk size"))?;
                    pos += nl + 1;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(rem) => {
                    let avail = input.len() - pos;
                    if avail == 0 {
                        return Ok(pos);
                    }
                    let take = rem.min(avail);
                    out.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    self.state = if take == rem {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(rem - take)
                    };
                }
                ChunkState::DataEnd => {
                    let Some(nl) = memchr::memchr(b'\n', &input[pos..]) else {
                        return Ok(pos);
                    };
                    pos += nl + 1;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(nl) = memchr::memchr(b'\n', &input[pos..]) else {
                        return Ok(pos);
                    };
                    let line = &input[pos..pos + nl];
                    pos += nl + 1;
                    if line.is_empty() || line == b"\r" {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

// === SSE ===

/// Splits an SSE byte stream into events; yields the joined `data:` payload of each.
#[derive(Debug, Default)]
pub(crate) struct SseSplitter {
    pending: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

impl SseSplitter {
    /// Feeds bytes; calls `on_event` with each complete event's data (events with no
    /// `data:` line, such as comments and priming events, are skipped).
    pub(crate) fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(&[u8])) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = memchr::memchr(b'\n', &self.pending[start..]) {
            let line = &self.pending[start..start + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if self.has_data {
                    on_event(&self.data);
                }
                self.data.clear();
                self.has_data = false;
            } else if let Some(rest) = line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(rest);
                self.has_data = true;
            }
            start += nl + 1;
        }
        self.pending.drain(..start);
    }
}

// === response writing ===

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Body kind of a response written by [`write_head`].
pub(crate) enum BodyKind {
    /// No body (`Content-Length: 0`).
    Empty,
    /// JSON of this length.
    Json(usize),
    /// SSE, chunked, length unknown.
    Sse,
}

/// Writes a response head into `out`.
pub(crate) fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    body: BodyKind,
    session: Option<&str>,
    keep_alive: bool,
) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(num.format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    match body {
        BodyKind::Empty => out.extend_from_slice(b"content-length: 0\r\n"),
        BodyKind::Json(n) => {
            out.extend_from_slice(b"content-type: application/json\r\ncontent-length: ");
            out.extend_from_slice(num.format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        BodyKind::Sse => out.extend_from_slice(
            b"content-type: text/event-stream\r\ncache-control: no-cache\r\n\
              x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n",
        ),
    }
    if let Some(s) = session {
        out.extend_from_slice(b"mcp-session-id: ");
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one SSE event (`data: <json>\n\n`) as one HTTP chunk.
pub(crate) fn write_sse_chunk(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = 6 + parts.iter().map(|p| p.len()).sum::<usize>() + 2;
    let mut hex = [0u8; 16];
    let mut i = hex.len();
    let mut n = len;
    loop {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\ndata: ");
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\n\n\r\n");
}

/// Appends the terminating chunk.
pub(crate) fn write_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_roundtrip_split_anywhere() {
        let mut enc = Vec::new();
        write_sse_chunk(&mut enc, &[b"{\"a\":1}"]);
        write_sse_chunk(&mut enc, &[b"{\"b\":", b"2}"]);
        write_last_chunk(&mut enc);
        for split in 0..enc.len() {
            let mut d = ChunkedDecoder::new();
            let mut out = BytesMut::new();
            let mut buf = enc[..split].to_vec();
            let n = d.feed(&buf, &mut out).unwrap();
            buf.drain(..n);
            buf.extend_from_slice(&enc[split..]);
            let n2 = d.feed(&buf, &mut out).unwrap();
            assert_eq!(n2, buf.len());
            assert!(d.is_done());
            assert_eq!(&out[..], b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n");
        }
    }

    #[test]
    fn sse_splitter_joins_and_skips_comments() {
        let mut s = SseSplitter::default();
        let mut got = Vec::new();
        s.feed(b": ping\n\nid: 1\ndata:\n\ndata: a\r\nda", |e| {
            got.push(e.to_vec())
        });
        s.feed(b"ta: b\r\n\r\n", |e| got.push(e.to_vec()));
        assert_eq!(got, vec![b"".to_vec(), b"a\nb".to_vec()]);
    }

    #[test]
    fn request_head_fields() {
        let raw = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nMcp-Session-Id: abc\r\n\r\nhello";
        let h = parse_request(raw).unwrap().unwrap();
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.path, "/mcp");
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(h.session, Some(&b"abc"[..]));
        assert!(h.keep_alive);
        assert!(parse_request(b"POST /mcp HTTP/1.1\r\nHo")
            .unwrap()
            .is_none());
        assert!(parse_request(b"\x16\x03\x01garbage\r\n\r\n").is_err());
    }

    #[test]
    fn response_head_framing() {
        let h = parse_response(b"HTTP/1.1 202 Accepted\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::UntilClose);
        let h = parse_response(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert!(h.sse && h.framing == Framing::Chunked && h.keep_alive);
    }
}
