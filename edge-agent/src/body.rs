//! HTTP response bodies and JSON-RPC reply helpers for the [`crate::Surface`].
//!
//! Owns the boxed body type handed back to hyper (and through it to the tunnel), the SSE body
//! that drains a bounded queue of pre-rendered events and emits keep-alive comments when idle,
//! and the small constructors for JSON / error replies. Every response the surface produces is
//! built here. SSE events are framed with `h1`'s sans-IO encoder (the same one the hub uses).
//!
//! # Slow consumers
//!
//! A [`Sink`] never buffers without bound: an event is queued only while the stream's queue
//! holds fewer than [`SINK_MAX_EVENTS`] events and [`SINK_MAX_BYTES`] bytes (the event itself
//! may overshoot the byte bound, so a large response still passes). A consumer that falls that far
//! behind has its stream **dropped**: the queue is freed at once, the body ends with an error
//! (hyper aborts the response, the hub sees the stream fail and resumes the GET stream with
//! `Last-Event-ID`), a warning is logged and [`slow_consumer_drops`] counts it (shown in
//! `/meshgate/edge/status`). The process's memory is never what gives way.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame};
use hyper::{Response, StatusCode};
use serde_json::Value;

use crate::session::lock;

/// The error type of response bodies.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type of the surface (compatible with `meshgate_tunnel::BoxBody`).
pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, BodyError>;

/// Interval of SSE keep-alive comments on idle streams.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// Most events one SSE stream may have queued for its consumer before it is dropped.
pub const SINK_MAX_EVENTS: usize = 1024;
/// Bytes one SSE stream may have queued for its consumer before it is dropped (plus the one
/// event that crosses the bound).
pub const SINK_MAX_BYTES: usize = 1 << 20;

/// Streams dropped because their consumer fell behind, since the process started.
static SLOW_DROPS: AtomicU64 = AtomicU64::new(0);

/// How many SSE streams were dropped because their consumer fell behind (process lifetime).
pub fn slow_consumer_drops() -> u64 {
    SLOW_DROPS.load(Ordering::Relaxed)
}

/// The queue shared by a stream's sinks and its body.
#[derive(Debug)]
struct Queue {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// Live [`Sink`] clones; the body ends when the last one is gone and the queue is drained.
    senders: usize,
    /// The body was dropped (the client went away).
    receiver_gone: bool,
    /// The stream was dropped for a slow consumer (the body fails on its next poll).
    dropped: bool,
    waker: Option<Waker>,
}

impl Queue {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Sends events into one SSE stream (a POST's response stream or a session's GET stream).
/// Cheap to clone; sending to a closed or dropped stream reports `false`.
#[derive(Debug)]
pub struct Sink {
    q: Arc<Mutex<Queue>>,
    /// What the stream is, for the slow-consumer log line.
    label: Arc<str>,
    max_events: usize,
    max_bytes: usize,
}

impl Clone for Sink {
    fn clone(&self) -> Self {
        lock(&self.q).senders += 1;
        Sink {
            q: self.q.clone(),
            label: self.label.clone(),
            max_events: self.max_events,
            max_bytes: self.max_bytes,
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let mut q = lock(&self.q);
        q.senders -= 1;
        if q.senders == 0 {
            q.wake();
        }
    }
}

/// Renders one JSON-RPC message as an SSE `message` event, with an optional event id.
pub fn sse_frame(id: Option<&str>, msg: &Value) -> Option<Bytes> {
    // serde_json never writes raw newlines into compact output, so the data is one line.
    let data = serde_json::to_vec(msg).ok()?;
    let mut ev = Vec::with_capacity(data.len() + 32);
    h1::encode_sse_event(&mut ev, id, Some("message"), Some(&data), None);
    Some(Bytes::from(ev))
}

impl Sink {
    /// A new sink (bounded by [`SINK_MAX_EVENTS`] / [`SINK_MAX_BYTES`]) and the body that
    /// streams what is sent into it. `label` names the stream in the slow-consumer log line.
    pub fn new(label: impl Into<Arc<str>>) -> (Sink, SseBody) {
        Sink::with_limits(label, SINK_MAX_EVENTS, SINK_MAX_BYTES)
    }

    /// [`Sink::new`] with explicit bounds (tests).
    pub fn with_limits(
        label: impl Into<Arc<str>>,
        max_events: usize,
        max_bytes: usize,
    ) -> (Sink, SseBody) {
        let q = Arc::new(Mutex::new(Queue {
            frames: VecDeque::new(),
            bytes: 0,
            senders: 1,
            receiver_gone: false,
            dropped: false,
            waker: None,
        }));
        let sink = Sink {
            q: q.clone(),
            label: label.into(),
            max_events: max_events.max(1),
            max_bytes,
        };
        (sink, SseBody::new(q))
    }

    /// Sends one JSON-RPC message as an SSE `message` event; `false` if the stream is gone.
    pub fn send(&self, msg: &Value) -> bool {
        match sse_frame(None, msg) {
            Some(f) => self.send_frame(f),
            None => false,
        }
    }

    /// Queues one pre-rendered SSE frame; `false` if the stream is gone or was dropped (now
    /// or earlier) because its consumer is too slow.
    pub fn send_frame(&self, frame: Bytes) -> bool {
        let mut q = lock(&self.q);
        if q.receiver_gone || q.dropped {
            return false;
        }
        let full = q.frames.len() >= self.max_events || q.bytes >= self.max_bytes;
        if full {
            let (events, bytes) = (q.frames.len(), q.bytes);
            q.frames.clear();
            q.bytes = 0;
            q.dropped = true;
            q.wake();
            drop(q);
            let total = SLOW_DROPS.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                stream = %self.label,
                queued_events = events,
                queued_bytes = bytes,
                dropped_total = total,
                "SSE consumer too slow: stream dropped (its queue is full)"
            );
            return false;
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        q.wake();
        true
    }

    /// Whether the stream is over for senders: the body was dropped (client went away) or the
    /// stream was dropped for a slow consumer.
    pub fn is_closed(&self) -> bool {
        let q = lock(&self.q);
        q.receiver_gone || q.dropped
    }

    /// Whether two sinks feed the same stream.
    pub fn same_stream(&self, other: &Sink) -> bool {
        Arc::ptr_eq(&self.q, &other.q)
    }
}

/// Why a stream was cut.
#[derive(Debug, thiserror::Error)]
#[error("SSE consumer too slow: stream dropped")]
pub struct SlowConsumer;

/// An SSE response body fed by a [`Sink`]; ends when every sink is dropped and the queue is
/// drained, fails when the stream was dropped for a slow consumer. Emits a `: keep-alive`
/// comment after [`KEEPALIVE`] without events.
#[derive(Debug)]
pub struct SseBody {
    q: Arc<Mutex<Queue>>,
    keepalive: tokio::time::Interval,
}

impl SseBody {
    fn new(q: Arc<Mutex<Queue>>) -> Self {
        let mut keepalive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        SseBody { q, keepalive }
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        let mut q = lock(&self.q);
        q.receiver_gone = true;
        q.frames.clear();
        q.bytes = 0;
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        {
            let mut q = lock(&self.q);
            if q.dropped {
                return Poll::Ready(Some(Err(Box::new(SlowConsumer))));
            }
            if let Some(b) = q.frames.pop_front() {
                q.bytes -= b.len();
                drop(q);
                self.keepalive.reset();
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if q.senders == 0 {
                return Poll::Ready(None);
            }
            q.waker = Some(cx.waker().clone());
        }
        match self.keepalive.poll_tick(cx) {
            Poll::Ready(_) => {
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(h1::SSE_KEEPALIVE)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Boxes any body with a boxable error.
pub fn boxed<B>(b: B) -> BoxBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BodyError>,
{
    b.map_err(Into::into).boxed()
}

/// An empty body.
pub fn empty() -> BoxBody {
    boxed(Empty::<Bytes>::new())
}

/// A complete body.
pub fn full(b: impl Into<Bytes>) -> BoxBody {
    boxed(Full::new(b.into()))
}

/// A response with a status, content type and complete body.
pub fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<BoxBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON response.
pub fn json(status: StatusCode, v: &Value) -> Response<BoxBody> {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    response(status, "application/json", body)
}

/// A status-only response with no body.
pub fn status(status: StatusCode) -> Response<BoxBody> {
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    r
}

/// An SSE response streaming `body`.
pub fn sse(body: SseBody) -> Response<BoxBody> {
    let mut r = Response::new(boxed(body));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    h.insert(
        "x-accel-buffering",
        hyper::header::HeaderValue::from_static("no"),
    );
    r
}

/// A JSON-RPC error message value.
pub fn rpc_error(id: Option<&Value>, code: i32, message: impl Into<String>) -> Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {"code": code, "message": message.into()},
    })
}

/// A JSON-RPC result message value.
pub fn rpc_result(id: &Value, result: Value) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An HTTP error response whose body is a JSON-RPC error.
pub fn http_rpc_error(
    status: StatusCode,
    id: Option<&Value>,
    code: i32,
    message: impl Into<String>,
) -> Response<BoxBody> {
    json(status, &rpc_error(id, code, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_stalled_consumer_has_its_stream_dropped_and_its_queue_freed() {
        let before = slow_consumer_drops();
        let (stalled, mut stalled_body) = Sink::with_limits("stalled", 8, 1 << 20);
        let (healthy, mut healthy_body) = Sink::with_limits("healthy", 8, 1 << 20);
        let mut accepted = 0;
        for n in 0..100 {
            // The healthy consumer reads everything as it comes.
            assert!(healthy.send(&json!({"n": n})));
            let f = healthy_body.frame().await.unwrap().unwrap();
            assert!(String::from_utf8_lossy(f.data_ref().unwrap()).contains(&format!(r#""n":{n}"#)));
            if stalled.send(&json!({"n": n})) {
                accepted += 1;
            }
        }
        // Exactly the bound was queued, then the stream was dropped (once) and stays dropped.
        assert_eq!(accepted, 8);
        assert!(stalled.is_closed());
        assert_eq!(lock(&stalled.q).frames.len(), 0, "queue not freed");
        assert!(slow_consumer_drops() > before);
        // Its body fails instead of delivering a stream with a hole in it.
        assert!(stalled_body.frame().await.unwrap().is_err());
        assert!(!healthy.is_closed());
    }

    #[tokio::test]
    async fn the_byte_bound_counts_and_a_large_event_still_passes() {
        let big = json!({"data": "x".repeat(4096)});
        let (s, mut body) = Sink::with_limits("bytes", 1000, 1024);
        // Larger than the byte bound, but the queue is below it: admitted.
        assert!(s.send(&json!({"small": 1})));
        assert!(s.send(&big));
        // Now the queue is over its byte bound: the next event drops the stream.
        assert!(!s.send(&json!({"small": 2})));
        assert!(s.is_closed());
        assert!(body.frame().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn the_body_ends_when_every_sink_is_gone_after_draining() {
        let (s, mut body) = Sink::new("t");
        let s2 = s.clone();
        assert!(s.send(&json!({"a": 1})));
        drop(s);
        assert!(s2.send(&json!({"a": 2})));
        drop(s2);
        let mut n = 0;
        while let Some(f) = body.frame().await {
            assert!(f.is_ok());
            n += 1;
        }
        assert_eq!(n, 2);
    }

    #[test]
    fn frames_are_sse_message_events_with_an_optional_id() {
        let f = sse_frame(Some("g-7"), &json!({"k": "v"})).unwrap();
        assert_eq!(&f[..], b"id: g-7\nevent: message\ndata: {\"k\":\"v\"}\n\n");
        let f = sse_frame(None, &json!(1)).unwrap();
        assert_eq!(&f[..], b"event: message\ndata: 1\n\n");
    }
}
