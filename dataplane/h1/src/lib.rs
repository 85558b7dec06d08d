//! HTTP/1.1 server and client codec for the meshgate dataplane, over monoio's owned-buffer
//! IO, plus server-sent-events framing.
//!
//! Where it sits: the hub's worker accepts a connection and wraps it in a [`ServerConn`],
//! which reads bounded, fully-buffered [`Request`]s and writes whole or streamed (chunked,
//! SSE) responses. Upstream MCP servers are reached through pooled [`ClientConn`]s, whose
//! responses are read whole or piece by piece. [`SseDecoder`] and [`encode_sse_event`]
//! frame `text/event-stream` bodies in both directions.
//!
//! Modules:
//! - `headers`: [`Headers`] (values are slices of the frozen head buffer) and [`Method`].
//! - `server`: [`ServerConn`], [`Limits`], [`RequestHead`], [`Request`], [`ServerError`].
//! - `client`: [`ClientConn`], [`ResponseHead`], [`BodyKind`], [`ClientError`].
//! - `sse`: [`SseDecoder`], [`SseEvent`], [`encode_sse_event`], [`SSE_KEEPALIVE`].
//! - `chunked`, `wire`, `io`: sans-IO chunked decoding ([`ChunkedDecoder`]), head
//!   serialisation, buffer glue.
//!
//! Sans-IO entry points for callers with their own IO (the loadtest's tokio client and mock):
//! [`RequestParser`] (requests, server side), [`parse_response_head`] and [`BodyDecoder`]
//! (responses, client side), [`SseDecoder`]. `ServerConn` and `ClientConn` are built on the
//! same functions, so both drivers frame messages identically.
//!
//! Performance: one read buffer (`BytesMut`) and one write buffer (`Vec<u8>`) per
//! connection; heads are parsed in place and sliced after `freeze()`; Content-Length bodies
//! are never copied. All timeouts need a monoio runtime built with `enable_timer()`.
//!
//! Features: `runtime` (default) builds everything above; without it (`default-features =
//! false`) only the sans-IO `sse` module is built, with no runtime dependency.
//!
//! Cancellation: monoio IO owns its buffers, and a dropped read may already have consumed
//! bytes. A connection whose operation was cancelled or failed is never reused
//! ([`ClientConn::is_reusable`]); a server connection is dropped after any error.

// The crate doc above links the runtime types, which a build without `runtime` does not have.
#![cfg_attr(not(feature = "runtime"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "runtime")]
mod chunked;
#[cfg(feature = "runtime")]
mod client;
#[cfg(feature = "runtime")]
mod headers;
#[cfg(feature = "runtime")]
mod io;
#[cfg(feature = "runtime")]
mod server;
mod sse;
#[cfg(feature = "runtime")]
mod wire;

#[cfg(feature = "runtime")]
pub use chunked::{Chunk, ChunkedDecoder};
#[cfg(feature = "runtime")]
pub use client::{
    parse_response_head, BodyDecoder, BodyKind, BodyPiece, ClientConn, ClientError, ResponseHead,
};
#[cfg(feature = "runtime")]
pub use headers::{Headers, Method};
#[cfg(feature = "runtime")]
pub use server::{Limits, Request, RequestHead, RequestParser, ServerConn, ServerError};
pub use sse::{encode_sse_event, SseDecoder, SseEvent, SSE_KEEPALIVE};
#[cfg(feature = "runtime")]
pub use wire::reason_phrase;
