//! HTTP response bodies and JSON-RPC reply helpers for the [`crate::Surface`].
//!
//! Owns the boxed body type handed back to hyper (and through it to the tunnel), the SSE body
//! that drains a channel of pre-rendered events and emits keep-alive comments when idle, and the
//! small constructors for JSON / error replies. Every response the surface produces is built here.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame};
use hyper::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

/// The error type of response bodies.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type of the surface (compatible with `meshgate_tunnel::BoxBody`).
pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, BodyError>;

/// Interval of SSE keep-alive comments on idle streams.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// Sends JSON-RPC messages into one SSE stream (a POST's response stream or a session's GET
/// stream). Cheap to clone; sending to a closed stream reports `false`.
#[derive(Clone, Debug)]
pub struct Sink(mpsc::UnboundedSender<Bytes>);

impl Sink {
    /// A new sink and the body that streams what is sent into it.
    pub fn new() -> (Sink, SseBody) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Sink(tx), SseBody::new(rx))
    }

    /// Sends one JSON-RPC message as an SSE `message` event; `false` if the stream is gone.
    pub fn send(&self, msg: &Value) -> bool {
        let mut ev = Vec::with_capacity(128);
        ev.extend_from_slice(b"event: message\ndata: ");
        // serde_json never writes raw newlines into compact output, so one data line suffices.
        if serde_json::to_writer(&mut ev, msg).is_err() {
            return false;
        }
        ev.extend_from_slice(b"\n\n");
        self.0.send(Bytes::from(ev)).is_ok()
    }

    /// Whether the receiving body was dropped (client went away).
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// An SSE response body fed by a [`Sink`]; ends when every sink is dropped. Emits a `: keep-alive`
/// comment after [`KEEPALIVE`] without events.
#[derive(Debug)]
pub struct SseBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    keepalive: tokio::time::Interval,
}

impl SseBody {
    fn new(rx: mpsc::UnboundedReceiver<Bytes>) -> Self {
        let mut keepalive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        SseBody { rx, keepalive }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => {
                self.keepalive.reset();
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        match self.keepalive.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b": keep-alive\n\n",
            ))))),
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
