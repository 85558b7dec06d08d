//! The monoio serving engine of the mock: one thread, io_uring (epoll when io_uring is
//! unavailable), HTTP/1.1 through the dataplane's `h1::ServerConn`.
//!
//! Only the socket work lives here: every request goes through the shared [`route`], so
//! the MCP behaviour is the tokio engine's. Calls are answered at once (the mock falls back
//! to the tokio engine when a stall, service time, SSE or progress is configured, see
//! [`needs_tokio`](super::needs_tokio)); GET streams, with their periodic notifications, are
//! served here too.
//!
//! Shutdown: every connection (and every GET stream's reader) runs inside an [`Abortable`]
//! registered in a per-thread [`Registry`]; on stop the accept loop marks them all stopped,
//! wakes them, and waits (bounded) until they have dropped their sockets.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use h1::ServerConn;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{call_result, route, Reply, Req, State, StreamGuard};
use crate::sys;
use crate::wire;

use super::Method;

const JSON: (&str, &[u8]) = ("content-type", b"application/json");
const SSE: [(&str, &[u8]); 3] = [
    ("content-type", b"text/event-stream"),
    ("cache-control", b"no-cache"),
    ("x-accel-buffering", b"no"),
];
/// How long shutdown waits for connections to drop their sockets.
const DRAIN: Duration = Duration::from_secs(2);

/// Builds the runtime on the current thread (io_uring if the kernel allows it, else
/// epoll), reports readiness through `ready`, then serves until `stop` turns true.
pub(super) fn run(
    std_listener: std::net::TcpListener,
    state: Arc<State>,
    stop: watch::Receiver<bool>,
    ready: std::sync::mpsc::SyncSender<std::io::Result<()>>,
) {
    if monoio::utils::detect_uring() {
        if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
        {
            rt.block_on(serve(std_listener, state, stop, ready));
            return;
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(serve(std_listener, state, stop, ready)),
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
}

async fn serve(
    std_listener: std::net::TcpListener,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    ready: std::sync::mpsc::SyncSender<std::io::Result<()>>,
) {
    let listener = match TcpListener::from_std(std_listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let reg = Rc::new(Registry::default());
    loop {
        monoio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    state.stats.connections.fetch_add(1, Ordering::Relaxed);
                    let fut = conn(state.clone(), s, reg.clone());
                    monoio::spawn(reg.abortable(fut));
                }
                // EMFILE and friends: back off briefly instead of spinning.
                Err(_) => monoio::time::sleep(Duration::from_millis(5)).await,
            },
            _ = stop.wait_for(|v| *v) => break,
        }
    }
    drop(listener);
    reg.stop_all();
    let deadline = monoio::time::Instant::now() + DRAIN;
    while !reg.is_empty() && monoio::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn conn(state: Arc<State>, stream: TcpStream, reg: Rc<Registry>) {
    let mut c = ServerConn::new(stream, super::limits());
    loop {
        let req = match c.next_request().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                if let Some(status) = e.status() {
                    let _ = c.write_empty(status, &[], false).await;
                }
                return;
            }
        };
        state.stats.requests.fetch_add(1, Ordering::Relaxed);
        let head = &req.head;
        let r = Req {
            method: Method::from(head.method),
            path_ok: head.path() == state.cfg.path.as_bytes(),
            keep_alive: head.keep_alive,
            session: head.headers.get("mcp-session-id"),
            proto: head.headers.get("mcp-protocol-version"),
            body: &req.body,
        };
        let ka = r.keep_alive;
        let sent = match route(&state, &r) {
            Reply::Status(s) => c.write_empty(s, &[], ka).await,
            Reply::Json {
                status,
                body,
                session: Some(sid),
            } => {
                let h = [JSON, ("mcp-session-id", sid.as_bytes())];
                c.write_full(status, &h, &body, ka).await
            }
            Reply::Json { status, body, .. } => c.write_full(status, &[JSON], &body, ka).await,
            Reply::Call { id, modern, .. } => {
                let body = call_result(&state, id, modern);
                let sent = c.write_full(200, &[JSON], &body, ka).await;
                state.stats.calls.fetch_add(1, Ordering::Relaxed);
                sent
            }
            Reply::Stream => {
                get_stream(&state, c, &reg).await;
                return;
            }
        };
        if sent.is_err() || !ka {
            return;
        }
    }
}

/// The standalone SSE stream: an opening comment, then a `notifications/message` every
/// `notify_interval` until the client closes (or sends anything).
async fn get_stream(state: &State, mut c: ServerConn<TcpStream>, reg: &Rc<Registry>) {
    if c.start_stream(200, &SSE).await.is_err() || c.write_chunk(b":\n\n").await.is_err() {
        return;
    }
    state.stats.streams_open.fetch_add(1, Ordering::Relaxed);
    let _guard = StreamGuard(&state.stats);
    let (mut rd, mut wr) = c.into_inner().into_split();
    let mut reader = monoio::spawn(reg.abortable(async move {
        let _ = rd.read(Vec::with_capacity(512)).await;
    }));
    let period = state.cfg.notify_interval;
    if period.is_zero() {
        let _ = (&mut reader).await;
        return;
    }
    let mut out = Vec::with_capacity(256);
    let mut seq = 0u64;
    loop {
        monoio::select! {
            _ = &mut reader => return,
            _ = monoio::time::sleep(period) => {}
        }
        seq += 1;
        out.clear();
        let mut num = itoa::Buffer::new();
        let mut num2 = itoa::Buffer::new();
        wire::write_sse_chunk(
            &mut out,
            &[
                b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"logger\":\"mock\",\"data\":{\"emitNs\":",
                num.format(sys::unix_nanos()).as_bytes(),
                b",\"seq\":",
                num2.format(seq).as_bytes(),
                b"}}}",
            ],
        );
        let (res, buf) = wr.write_all(out).await;
        out = buf;
        if res.is_err() {
            return;
        }
    }
}

// === shutdown plumbing ===

/// One abortable task's stop flag and waker.
#[derive(Default)]
struct Slot {
    stopped: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// The live tasks of this thread, so shutdown can end them all.
#[derive(Default)]
struct Registry {
    next: Cell<u64>,
    slots: RefCell<HashMap<u64, Rc<Slot>>>,
}

impl Registry {
    fn abortable<F: Future<Output = ()>>(self: &Rc<Self>, fut: F) -> Abortable<F> {
        let id = self.next.get();
        self.next.set(id + 1);
        let slot = Rc::new(Slot::default());
        self.slots.borrow_mut().insert(id, slot.clone());
        Abortable {
            inner: Box::pin(fut),
            slot,
            id,
            reg: self.clone(),
        }
    }

    fn stop_all(&self) {
        let slots: Vec<Rc<Slot>> = self.slots.borrow().values().cloned().collect();
        for s in slots {
            s.stopped.set(true);
            if let Some(w) = s.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.slots.borrow().is_empty()
    }
}

/// A task that completes early (dropping its future, and so its socket) once its slot is
/// stopped. Costs one flag check and a waker comparison per poll.
struct Abortable<F> {
    inner: Pin<Box<F>>,
    slot: Rc<Slot>,
    id: u64,
    reg: Rc<Registry>,
}

impl<F: Future<Output = ()>> Future for Abortable<F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.slot.stopped.get() {
            return Poll::Ready(());
        }
        {
            let mut w = self.slot.waker.borrow_mut();
            if !w.as_ref().is_some_and(|old| old.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        self.inner.as_mut().poll(cx)
    }
}

impl<F> Drop for Abortable<F> {
    fn drop(&mut self) {
        self.reg.slots.borrow_mut().remove(&self.id);
    }
}
