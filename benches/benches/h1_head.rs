//! Request-head parsing for a typical MCP `POST /mcp` (10 header fields).
//!
//! `h1::ServerConn` needs a monoio stream, so its head parse cannot be driven from memory
//! here. Instead this measures:
//! - `httparse`: `httparse::Request::parse` into 64 stack slots, as `ServerConn` does with the
//!   default `max_headers`; the baseline cost of the head parse itself.
//! - `httparse_to_headers`: the same parse plus what `ServerConn` does next, using only h1's
//!   public API: split and freeze the head, slice each value out as `Bytes` into an
//!   `h1::Headers`, then read the fields the hub routes on. `Headers::push` copies the name
//!   (the crate-private `push_raw` used by h1 slices it), so this is a slight upper bound.
//!
//! h1's chunked decoder has no public entry point, so it is not benched here.

use std::hint::black_box;
use std::ops::Range;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{Criterion, Throughput};

/// A Streamable HTTP `tools/call` POST as an MCP client sends it.
const HEAD: &[u8] = b"POST /mcp HTTP/1.1\r\n\
Host: hub.meshgate.internal:8080\r\n\
User-Agent: claude-code/1.0.72 (external, cli)\r\n\
Content-Type: application/json\r\n\
Accept: application/json, text/event-stream\r\n\
Mcp-Session-Id: 7c9e6679-7425-40de-944b-e07fc1f90ae7\r\n\
MCP-Protocol-Version: 2025-06-18\r\n\
Authorization: Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhZ2VudC0xNyJ9.c2lnbmF0dXJl\r\n\
Accept-Encoding: gzip, deflate\r\n\
Connection: keep-alive\r\n\
Content-Length: 214\r\n\
\r\n";

/// Header slots on the stack: `h1::Limits::default().max_headers`.
const SLOTS: usize = 64;

/// Parses the head; returns its length and the number of header fields.
fn parse(buf: &[u8]) -> (usize, usize) {
    let mut slots = [httparse::EMPTY_HEADER; SLOTS];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(buf).expect("fixture head is valid") {
        httparse::Status::Complete(n) => (n, req.headers.len()),
        httparse::Status::Partial => panic!("fixture head is complete"),
    }
}

/// Parse, then build an `h1::Headers` of `Bytes` slices and read the routed fields.
fn parse_to_headers(buf: &mut BytesMut) -> (h1::Method, h1::Headers, usize) {
    let mut slots = [httparse::EMPTY_HEADER; SLOTS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf).expect("fixture head is valid") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("fixture head is complete"),
    };
    // Spans first: the borrow of `buf` must end before it is split and frozen.
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method = span(req.method.expect("method").as_bytes());
    let mut fields: [(Range<usize>, Range<usize>); SLOTS] = std::array::from_fn(|_| (0..0, 0..0));
    let n = req.headers.len();
    for (slot, h) in fields.iter_mut().zip(req.headers.iter()) {
        *slot = (span(h.name.as_bytes()), span(h.value));
    }
    let head = buf.split_to(len).freeze();
    let mut headers = h1::Headers::with_capacity(n);
    for (name, value) in &fields[..n] {
        // httparse checked the name is a token, so this is ASCII.
        let name = std::str::from_utf8(&head[name.clone()]).expect("token");
        headers.push(name, head.slice(value.clone()));
    }
    let method = h1::Method::from_bytes(&head[method]);
    let content_length = headers
        .get_str("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .expect("content-length");
    black_box(headers.get("mcp-session-id"));
    black_box(headers.get("mcp-protocol-version"));
    black_box(headers.has_token("accept", "text/event-stream"));
    (method, headers, content_length)
}

fn bench_head(c: &mut Criterion) {
    assert_eq!(parse(HEAD), (HEAD.len(), 10));
    let mut group = c.benchmark_group("h1_head");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(50)
        .throughput(Throughput::Bytes(HEAD.len() as u64));

    group.bench_function("httparse", |b| b.iter(|| parse(black_box(HEAD))));

    // One read buffer per connection, refilled per request as the socket would.
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    group.bench_function("httparse_to_headers", |b| {
        b.iter(|| {
            rbuf.extend_from_slice(black_box(HEAD));
            parse_to_headers(&mut rbuf)
        })
    });
    group.finish();
}

// Written out instead of `criterion_group!`, whose generated `pub fn` has no docs.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_head(&mut c);
    c.final_summary();
}
