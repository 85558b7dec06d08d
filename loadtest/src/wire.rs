//! Response writing for the mock upstream (both engines): status line and the few headers MCP
//! Streamable HTTP needs, and SSE events written as single HTTP chunks (parts concatenated
//! without an intermediate copy).
//!
//! Reading is not here: requests and responses are parsed, de-chunked and SSE-split by the
//! dataplane's own codec, the `h1` crate (`h1::RequestParser`, `h1::parse_response_head`,
//! `h1::BodyDecoder`, `h1::SseDecoder`), so the harness frames HTTP exactly as the hub does.

/// Most headers accepted in one request head.
pub(crate) const MAX_HEADERS: usize = 48;
/// Largest request head accepted before answering 431.
pub(crate) const MAX_HEAD: usize = 32 * 1024;

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
    use bytes::BytesMut;

    #[test]
    fn written_sse_decodes_with_h1_split_anywhere() {
        let mut enc = Vec::new();
        write_head(&mut enc, 200, BodyKind::Sse, Some("s1"), true);
        write_sse_chunk(&mut enc, &[b"{\"a\":1}"]);
        write_sse_chunk(&mut enc, &[b"{\"b\":", b"2}"]);
        write_last_chunk(&mut enc);
        for split in 0..enc.len() {
            let mut buf = BytesMut::new();
            let mut head = None;
            let mut body: Option<h1::BodyDecoder> = None;
            let mut sse = h1::SseDecoder::new();
            let mut events = Vec::new();
            let mut ended = false;
            for part in [&enc[..split], &enc[split..]] {
                buf.extend_from_slice(part);
                if head.is_none() {
                    if let Some(h) = h1::parse_response_head(&mut buf, false, false).unwrap() {
                        body = Some(h1::BodyDecoder::new(h.body));
                        head = Some(h);
                    }
                }
                if let Some(d) = body.as_mut() {
                    loop {
                        match d.decode(&mut buf).unwrap() {
                            h1::BodyPiece::Data(b) => sse.push(&b),
                            h1::BodyPiece::End => {
                                ended = true;
                                break;
                            }
                            h1::BodyPiece::NeedMore => break,
                        }
                    }
                }
                while let Some(ev) = sse.next_event() {
                    events.push(ev.data);
                }
            }
            let h = head.expect("head");
            assert_eq!(h.status, 200);
            assert_eq!(h.headers.get("mcp-session-id"), Some(&b"s1"[..]));
            assert!(ended, "split {split}");
            assert_eq!(events, ["{\"a\":1}", "{\"b\":2}"]);
        }
    }
}
