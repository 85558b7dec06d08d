//! Stage `relay`: SSE back to the client. Every event the client sees carries a hub-minted id
//! `<stream>_<seq>` and is kept in a bounded replay buffer, so a GET with `Last-Event-ID`
//! resumes exactly that stream ([`get_stream`] → [`resume`]). Server→client requests
//! (sampling, elicitation, roots) get hub-minted ids, recorded so the client's answer finds the
//! upstream that asked ([`relay_message`]); `list_changed` drops the catalog's copy.
//!
//! - [`post_stream`] relays an upstream SSE answer to a POST until its response; it keeps
//!   reading after the client goes away (the events stay replayable), resumes the upstream
//!   stream with `Last-Event-ID` when the upstream closes it early (2025-11-25 polling), ends at
//!   once, with no late response, when the client cancels the request, and otherwise always
//!   ends with the response or a JSON-RPC error for it.
//! - [`batch_stream`] answers a 2025-03-26 batch as SSE when one of its answers streams.
//! - [`standalone_stream`] is the GET stream: it merges the upstream sessions' GET streams
//!   (resuming each with its last event id when it breaks), and announces `list_changed` when an
//!   upstream goes down or comes back.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h1::Request;
use mcp_wire::jsonrpc::error_object;
use mcp_wire::mcp::{self as mcpv, method};
use mcp_wire::Kind;
use tokio::sync::mpsc;

use super::Conn;
use crate::federation::ListKind;
use crate::hub::Worker;
use crate::metrics;
use crate::session::{parse_event_id, Cancel, PendingRequest, ReplayStream, Session};
use crate::upstream::{self, ReaderMsg};

const SSE_HEADERS: [(&str, &[u8]); 3] = [
    ("Content-Type", b"text/event-stream"),
    ("Cache-Control", b"no-cache"),
    ("X-Accel-Buffering", b"no"),
];

/// An upstream SSE answer to relay to the client.
pub struct StreamSource {
    /// The upstream.
    pub upstream: usize,
    /// The replica the stream comes from (its connection returns to that replica's pool).
    pub replica: usize,
    /// The upstream session generation it belongs to.
    pub generation: u64,
    /// The connection, positioned at the start of the SSE body.
    pub conn: h1::ClientConn,
    /// The client's request id (raw JSON): the response with this id ends the stream.
    pub client_id: Box<str>,
    /// Set when the client cancels the request.
    pub cancel: Arc<Cancel>,
    /// Whether the upstream session is a 2026-07-28 one (its stream is already modern).
    pub modern: bool,
    /// The request as routed (before any envelope), to retry after an `input_required`.
    pub request: Bytes,
    /// The tool rule's guard (time bound, guardrails, cache) for the final result.
    pub guard: Option<Box<super::guard::Guard>>,
}

/// One answer of a batch.
// Batches are rare (2025-03-26 only); a box per streamed part would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum BatchPart {
    /// A complete JSON-RPC message.
    Json(Bytes),
    /// A stream to relay to its response.
    Stream(StreamSource),
}

/// Byte range of a borrowed `&str` (a peeked raw id) inside `body`.
pub fn id_span(body: &[u8], raw: &str) -> std::ops::Range<usize> {
    let start = (raw.as_ptr() as usize).saturating_sub(body.as_ptr() as usize);
    if start + raw.len() <= body.len() {
        start..start + raw.len()
    } else {
        0..0
    }
}

/// Rewrites one upstream SSE message for the client: server→client requests get a hub-minted id
/// (recorded so the answer finds its way back); `list_changed` drops the catalog's copy of that
/// upstream's list. Returns the data to send and whether it is the response to `final_id`.
pub async fn relay_message(
    w: &Worker,
    session: &Session,
    u: usize,
    generation: u64,
    data: &str,
    final_id: Option<&str>,
) -> (Bytes, bool) {
    let Ok(p) = mcp_wire::peek(data.as_bytes()) else {
        tracing::warn!(
            upstream = u,
            "upstream sent a non-JSON-RPC SSE message; relayed as is"
        );
        return (Bytes::copy_from_slice(data.as_bytes()), false);
    };
    match p.kind {
        Kind::Request => {
            let original = p.id.unwrap_or("null");
            let (minted, evicted) = session.mint_pending(PendingRequest {
                upstream: u,
                original_id: original.into(),
                generation,
                created: Instant::now(),
            });
            if let Some(old) = evicted {
                let why = format!(
                    "the client left {} server requests unanswered; meshgate gave up on the oldest",
                    crate::session::MAX_PENDING
                );
                crate::hub::housekeeping::answer_upstream_with_error(w, session, &old, &why).await;
            }
            let span = id_span(data.as_bytes(), original);
            let mut out = Vec::with_capacity(data.len() + 8);
            out.extend_from_slice(&data.as_bytes()[..span.start]);
            out.extend_from_slice(minted.as_bytes());
            out.extend_from_slice(&data.as_bytes()[span.end..]);
            (Bytes::from(out), false)
        }
        Kind::Response => {
            let is_final = final_id.is_some_and(|f| p.id == Some(f));
            (Bytes::copy_from_slice(data.as_bytes()), is_final)
        }
        Kind::Notification => {
            for k in ListKind::from_changed(p.method.as_deref().unwrap_or("")) {
                w.hub.catalog.invalidate(u, *k);
            }
            (Bytes::copy_from_slice(data.as_bytes()), false)
        }
    }
}

/// Writes one event to the client (if still connected) and records it for replay.
pub struct Emitter<'a> {
    conn: &'a mut Conn,
    stream: Arc<ReplayStream>,
    client_ok: bool,
    last_write: Instant,
    buf: Vec<u8>,
}

impl<'a> Emitter<'a> {
    /// Starts the client's SSE response and a replay buffer for it.
    async fn start(w: &Worker, conn: &'a mut Conn, session: &Session, standalone: bool) -> Self {
        let stream = session.open_stream(w.hub.snap.replay_events, standalone);
        let started = conn.start_stream(200, &SSE_HEADERS).await.is_ok();
        Emitter {
            conn,
            stream,
            client_ok: started,
            last_write: Instant::now(),
            buf: Vec::with_capacity(1024),
        }
    }

    async fn emit(&mut self, data: &[u8]) {
        let (seq, id) = self.stream.next_id();
        self.buf.clear();
        h1::encode_sse_event(&mut self.buf, Some(&id), None, Some(data), None);
        let frame = Bytes::copy_from_slice(&self.buf);
        self.stream.push(seq, frame.clone());
        self.write(&frame).await;
    }

    async fn prime(&mut self, version: &str) {
        // 2025-11-25 clients get a priming event, so they have a Last-Event-ID from the start.
        if version >= mcpv::V2025_11_25 {
            let (_, id) = self.stream.next_id();
            self.buf.clear();
            h1::encode_sse_event(&mut self.buf, Some(&id), None, Some(b""), None);
            let frame = Bytes::copy_from_slice(&self.buf);
            self.write(&frame).await;
        }
    }

    async fn write(&mut self, frame: &[u8]) {
        if self.client_ok {
            self.client_ok = self.conn.write_chunk(frame).await.is_ok();
            self.last_write = Instant::now();
        }
    }

    async fn keepalive_if_idle(&mut self, every: Duration) {
        if self.client_ok && self.last_write.elapsed() >= every {
            self.write(h1::SSE_KEEPALIVE).await;
        }
    }

    /// Ends the stream; returns whether the client connection is still usable.
    async fn finish(self) -> bool {
        self.stream.finish();
        self.client_ok && self.conn.finish_stream().await.is_ok()
    }
}

/// Relays an upstream SSE answer to a POST (see the module doc).
pub async fn post_stream(
    w: &Rc<Worker>,
    conn: &mut Conn,
    session: &Arc<Session>,
    src: StreamSource,
) -> bool {
    let _guard = metrics::StreamGuard::new(&w.hub.metrics.open_streams);
    let mut em = Emitter::start(w, conn, session, false).await;
    em.prime(session.version).await;
    relay_to_response(w, &mut em, session, src).await;
    em.finish().await
}

/// Answers a request the client cancelled before its upstream answered: an SSE response with
/// nothing in it (a cancelled request gets no response).
pub async fn empty_stream(conn: &mut Conn) -> bool {
    conn.start_stream(200, &SSE_HEADERS).await.is_ok() && conn.finish_stream().await.is_ok()
}

/// A batch answered as SSE: the complete answers first, then each stream to its response.
pub async fn batch_stream(
    w: &Rc<Worker>,
    conn: &mut Conn,
    session: &Arc<Session>,
    parts: Vec<BatchPart>,
) -> bool {
    let _guard = metrics::StreamGuard::new(&w.hub.metrics.open_streams);
    let mut em = Emitter::start(w, conn, session, false).await;
    let mut streams = Vec::new();
    for p in parts {
        match p {
            BatchPart::Json(j) => em.emit(&j).await,
            BatchPart::Stream(s) => streams.push(s),
        }
    }
    for src in streams {
        relay_to_response(w, &mut em, session, src).await;
    }
    em.finish().await
}

/// Pumps one upstream SSE answer into `em` until the response to `src.client_id`, a failure
/// (then a JSON-RPC error for the request is emitted), or the client's cancel (then nothing).
async fn relay_to_response(
    w: &Rc<Worker>,
    em: &mut Emitter<'_>,
    session: &Arc<Session>,
    src: StreamSource,
) {
    let StreamSource {
        upstream: u,
        replica,
        generation,
        conn: up_conn,
        client_id,
        cancel,
        modern,
        request,
        guard,
    } = src;
    let up = w.upstream(u);
    // The upstream's request timeout, or the tool rule's tighter bound.
    let bound = guard.as_ref().and_then(|g| g.timeout());
    let policy_bound = bound.is_some_and(|b| b < up.request_timeout);
    let deadline = Instant::now() + bound.map_or(up.request_timeout, |b| b.min(up.request_timeout));
    let keepalive = w.hub.snap.sse_keepalive;
    let mut reader = Some(up_conn);
    let mut done = false;
    let mut failure = String::new();
    'attempts: for _attempt in 0..4 {
        let Some(c) = reader.take() else { break };
        let (tx, mut rx) = mpsc::channel::<((), ReaderMsg)>(64);
        upstream::spawn_reader(c, (), tx);
        let mut last_up_id: Option<String> = None;
        let mut retry_ms: u64 = 1000;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                failure = format!(
                    "upstream '{}' did not answer within {:?}",
                    up.name, up.request_timeout
                );
                break;
            }
            let msg = monoio::select! {
                m = rx.recv() => m,
                _ = cancel.cancelled() => {
                    // Cancelled: the upstream was told; nothing more goes to the client.
                    done = true;
                    break 'attempts;
                }
                _ = monoio::time::sleep(keepalive.min(left)) => {
                    em.keepalive_if_idle(keepalive).await;
                    continue;
                }
            };
            match msg {
                Some(((), ReaderMsg::Event(ev))) => {
                    if let Some(id) = ev.id.clone() {
                        last_up_id = Some(id);
                    }
                    if let Some(r) = ev.retry {
                        retry_ms = r;
                    }
                    if !ev.has_data || ev.data.is_empty() {
                        continue;
                    }
                    let (data, is_final) =
                        relay_message(w, session, u, generation, &ev.data, Some(&client_id)).await;
                    if is_final && modern && !session.modern && is_input_required(&data) {
                        // A 2026-07-28 upstream wants input: ask this legacy client for it as
                        // server→client requests, retry, and relay the final answer.
                        let fin = input_rounds(w, em, session, u, &request, &client_id, data).await;
                        let fin = match &guard {
                            Some(g) => super::guard::finish(w, g, &client_id, fin),
                            None => fin,
                        };
                        em.emit(&fin).await;
                        done = true;
                        break;
                    }
                    let data = match &guard {
                        Some(g) if is_final => super::guard::finish(w, g, &client_id, data),
                        _ => data,
                    };
                    em.emit(&data).await;
                    if is_final {
                        done = true;
                        break;
                    }
                }
                Some(((), ReaderMsg::End(c))) => {
                    w.pool.put(up, replica, c);
                    failure = format!("upstream '{}' ended the stream without answering", up.name);
                    break;
                }
                Some(((), ReaderMsg::Failed(e))) => {
                    failure = format!("upstream '{}' stream failed: {e}", up.name);
                    break;
                }
                None => break,
            }
        }
        if done || deadline <= Instant::now() {
            break;
        }
        // The upstream closed the stream early; with an event id it may be resumed (SSE polling).
        let Some(last) = last_up_id else { break };
        let us = session.state.lock().upstreams[u].clone();
        // Resume only within the same upstream session (a moved session has a new stream).
        let Some(us) = us.filter(|us| us.generation == generation) else {
            break;
        };
        monoio::time::sleep(Duration::from_millis(retry_ms.min(5000))).await;
        match upstream::get_stream(&w.pool, up, &us, Some(&last)).await {
            Ok(Some(c)) => reader = Some(c),
            Ok(None) => break,
            Err(e) => {
                failure = format!("upstream '{}' stream could not be resumed: {e}", up.name);
                break;
            }
        }
    }
    if !done && policy_bound && deadline <= Instant::now() {
        // Past the tool rule's bound: the upstream is told to stop, the client gets a tool error.
        if let Some(g) = &guard {
            cancel_upstream(
                w,
                session,
                u,
                generation,
                &client_id,
                "the call exceeded the tool's maximum execution time",
            )
            .await;
            em.emit(&g.timed_out(&client_id)).await;
            done = true;
        }
    }
    if !done {
        if failure.is_empty() {
            failure = format!("upstream '{}' ended the stream without answering", up.name);
        }
        tracing::warn!(session = %session.id, "{failure}");
        let err = error_object(
            Some(&client_id),
            mcp_wire::jsonrpc::code::INTERNAL_ERROR,
            &failure,
            None,
        );
        em.emit(&err).await;
    }
    session.state.lock().inflight.remove(&*client_id);
}

// === GET ===

/// A GET on a session: with a `Last-Event-ID` of one of its streams, that stream resumed;
/// otherwise (or for the GET stream's own ids) the standalone stream.
pub async fn get_stream(
    w: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request,
    session: &Arc<Session>,
) -> bool {
    if let Some((no, seq)) = req
        .head
        .headers
        .get_str("last-event-id")
        .and_then(parse_event_id)
    {
        let stream = session.state.lock().streams.get(&no).cloned();
        match stream {
            Some(stream) if !stream.standalone => {
                return resume(w, conn, session, stream, seq).await;
            }
            Some(stream) => {
                standalone_stream(w, conn, session, Some((stream, seq))).await;
                return false;
            }
            None => {}
        }
    }
    standalone_stream(w, conn, session, None).await;
    false
}

/// A subscription to a 2026-07-28 upstream changed: has the session's GET stream reopen that
/// upstream's listen stream with the new set, and waits (at most 2 s) until the upstream
/// acknowledged it, so an update right after the subscribe is not missed. Without a GET stream
/// there is nothing to wait for.
pub async fn resubscribe(session: &Session) {
    let want = {
        let mut st = session.state.lock();
        st.listen_want += 1;
        if st.get_stream_gen == 0 {
            return;
        }
        st.listen_want
    };
    session.changed.notify_waiters();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let n = session.changed.notified();
        let mut n = std::pin::pin!(n);
        n.as_mut().enable();
        if session.state.lock().listen_have >= want || session.is_closed() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || monoio::time::timeout(left, n).await.is_err() {
            return;
        }
    }
}

/// What the standalone stream knows of one upstream's GET stream (the last event id seen on it
/// is kept in the session, `upstream_get_ids`, so a newer GET stream resumes it too).
#[derive(Default, Clone)]
struct Attached {
    /// The upstream-session generation whose GET stream is attached now.
    live: Option<u64>,
    /// When a failed attach may be retried.
    retry_at: Option<Instant>,
    /// The session's `listen_want` a just-opened listen stream stands for (reached when the
    /// upstream acknowledges it).
    listen_for: Option<u64>,
}

/// The standalone GET stream: merges the upstream sessions' GET streams, sends `list_changed`
/// when upstream health changes, keep-alive comments when idle; ends when the client goes away
/// or the session ends.
pub async fn standalone_stream(
    w: &Rc<Worker>,
    conn: &mut Conn,
    session: &Arc<Session>,
    replay: Option<(Arc<ReplayStream>, u64)>,
) {
    let _guard = metrics::StreamGuard::new(&w.hub.metrics.open_streams);
    // Only one standalone stream per session: a newer one (a reconnect) takes over.
    let my_gen = {
        let mut st = session.state.lock();
        st.get_stream_gen += 1;
        st.get_stream_gen
    };
    let mut em = Emitter::start(w, conn, session, true).await;
    if let Some((old, seq)) = replay {
        // What the client missed on its previous GET stream, then this stream goes on live.
        for (_, frame) in old.after(seq) {
            em.write(&frame).await;
        }
    }
    em.prime(session.version).await;
    let n = w.hub.snap.upstreams.len();
    let keepalive = w.hub.snap.sse_keepalive;
    let tick = keepalive.min(Duration::from_millis(250));
    let (tx, mut rx) = mpsc::channel::<(usize, ReaderMsg)>(256);
    let mut attached: Vec<Attached> = vec![Attached::default(); n];
    let mut seen_mask = w.hub.up_mask();
    while em.client_ok && !session.is_closed() && session.state.lock().get_stream_gen == my_gen {
        session.touch();
        for (u, a) in attached.iter_mut().enumerate() {
            if a.retry_at.is_some_and(|t| Instant::now() < t) || !w.hub.is_up(u) {
                continue;
            }
            // A client that opens its GET stream wants every upstream's own messages (logs,
            // list_changed, resource updates), so the upstream sessions open now if they have not
            // yet been opened by a request (and move if their replica went down).
            let us = match super::affinity::upstream_session(w, session, u).await {
                Ok(us) => us,
                Err(e) => {
                    tracing::debug!(error = %e, "upstream session for a GET stream not opened; retrying later");
                    a.retry_at = Some(Instant::now() + Duration::from_secs(1));
                    continue;
                }
            };
            if us.is_modern() {
                // A 2026-07-28 upstream has no GET stream: its listen stream, asking for the
                // list changes and this session's resource subscriptions there, stands in.
                let subs: Vec<String> = session
                    .state
                    .lock()
                    .subscriptions
                    .iter()
                    .filter(|(su, _)| *su == u)
                    .map(|(_, uri)| uri.clone())
                    .collect();
                let want = us.generation ^ crate::ring::hash(subs.join("\n").as_bytes());
                let listen_want = session.state.lock().listen_want;
                if a.live == Some(want) {
                    // Nothing to reopen for this upstream: it is current.
                    let mut st = session.state.lock();
                    if a.listen_for.is_none() && st.listen_have < listen_want {
                        st.listen_have = listen_want;
                        drop(st);
                        session.changed.notify_waiters();
                    }
                    continue;
                }
                let filter = mcp_wire::modern::ListenFilter {
                    tools_list_changed: true,
                    prompts_list_changed: true,
                    resources_list_changed: true,
                    resource_subscriptions: subs,
                };
                let env = super::forward::envelope_for(session, None);
                match open_listen(w, u, &us, &env, &filter).await {
                    Ok(Some(c)) => {
                        // A replaced listen stream's reader goes on until its upstream ends it;
                        // its events are those of the old filter, still wanted or harmless.
                        upstream::spawn_reader(c, u, tx.clone());
                        a.live = Some(want);
                        a.retry_at = None;
                        a.listen_for = Some(listen_want);
                    }
                    Ok(None) => a.live = Some(want),
                    Err(e) => {
                        tracing::debug!(upstream = %w.upstream(u).name, error = %e, "upstream listen stream not available; retrying later");
                        a.retry_at = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
                continue;
            }
            if a.live == Some(us.generation) {
                continue;
            }
            // Taken over by a newer GET: attach nothing more (a late attach could reach the
            // upstream after the newer stream's and take its place there, e.g. at an edge).
            if session.state.lock().get_stream_gen != my_gen {
                break;
            }
            // The same upstream session's stream broke, or this stream took over from an older
            // one: resume where it was, so what the upstream sent meanwhile is not lost.
            let resume_from = session.state.lock().upstream_get_ids[u]
                .as_ref()
                .filter(|(g, _)| *g == us.generation)
                .map(|(_, id)| id.clone());
            match upstream::get_stream(&w.pool, w.upstream(u), &us, resume_from.as_deref()).await {
                Ok(Some(c)) => {
                    tracing::debug!(session = %session.id, upstream = %w.upstream(u).name, resume_from = ?resume_from, "upstream GET stream attached");
                    upstream::spawn_reader(c, u, tx.clone());
                    a.live = Some(us.generation);
                    a.retry_at = None;
                }
                Ok(None) => a.live = Some(us.generation),
                Err(e) => {
                    tracing::debug!(upstream = %w.upstream(u).name, error = %e, "upstream GET stream not available; retrying later");
                    a.retry_at = Some(Instant::now() + Duration::from_secs(1));
                    if resume_from.is_some() {
                        // Refused to resume: ask for a fresh stream next time.
                        session.state.lock().upstream_get_ids[u] = None;
                    }
                }
            }
        }
        let changed = session.changed.notified();
        let msg = monoio::select! {
            m = rx.recv() => m,
            _ = changed => None,
            _ = monoio::time::sleep(tick) => None,
        };
        match msg {
            Some((u, ReaderMsg::Event(ev))) => {
                // A 2026-07-28 upstream acknowledged the listen stream opened for a new set of
                // subscriptions: a subscribe waiting for it may answer now.
                if let Some(v) = attached[u].listen_for {
                    if ev
                        .data
                        .contains(mcp_wire::modern::METHOD_SUBSCRIPTIONS_ACKNOWLEDGED)
                    {
                        attached[u].listen_for = None;
                        let mut st = session.state.lock();
                        st.listen_have = st.listen_have.max(v);
                        drop(st);
                        session.changed.notify_waiters();
                    }
                }
                let generation = attached[u].live.unwrap_or(0);
                if let Some(id) = &ev.id {
                    session.state.lock().upstream_get_ids[u] = Some((generation, id.clone()));
                }
                // A listen stream's acknowledgement and end (a 2026-07-28 upstream) are the
                // hub's business, not the client's.
                let own = mcp_wire::peek(ev.data.as_bytes()).is_ok_and(|p| {
                    p.kind == Kind::Response
                        || p.method.as_deref()
                            == Some(mcp_wire::modern::METHOD_SUBSCRIPTIONS_ACKNOWLEDGED)
                });
                if ev.has_data && !ev.data.is_empty() && !own {
                    let (data, _) = relay_message(w, session, u, generation, &ev.data, None).await;
                    em.emit(&data).await;
                }
            }
            Some((u, ReaderMsg::End(_))) | Some((u, ReaderMsg::Failed(_))) => {
                tracing::debug!(session = %session.id, upstream = %w.upstream(u).name, "upstream GET stream ended; re-attaching in a second");
                attached[u].live = None;
                // Re-attached a second later, resuming from the last event id (nothing is lost).
                attached[u].retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
            None => {}
        }
        let mask = w.hub.up_mask();
        if mask != seen_mask {
            seen_mask = mask;
            for note in [
                method::TOOLS_LIST_CHANGED,
                method::PROMPTS_LIST_CHANGED,
                method::RESOURCES_LIST_CHANGED,
            ] {
                let mut data = br#"{"jsonrpc":"2.0","method":""#.to_vec();
                data.extend_from_slice(note.as_bytes());
                data.extend_from_slice(b"\"}");
                em.emit(&data).await;
            }
        }
        em.keepalive_if_idle(keepalive).await;
    }
    let _ = em.finish().await;
}

/// Replays a stream after `seq` (GET with `Last-Event-ID`) and follows it live until it ends.
pub async fn resume(
    w: &Rc<Worker>,
    conn: &mut Conn,
    session: &Arc<Session>,
    stream: Arc<ReplayStream>,
    mut seq: u64,
) -> bool {
    let _guard = metrics::StreamGuard::new(&w.hub.metrics.open_streams);
    if conn.start_stream(200, &SSE_HEADERS).await.is_err() {
        return false;
    }
    let keepalive = w.hub.snap.sse_keepalive;
    let deadline = Instant::now() + w.hub.snap.session_ttl;
    let mut last_write = Instant::now();
    while Instant::now() < deadline && !session.is_closed() {
        let notified = stream.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        for (s, frame) in stream.after(seq) {
            if conn.write_chunk(&frame).await.is_err() {
                return false;
            }
            seq = s;
            last_write = Instant::now();
        }
        if stream.is_done() && stream.after(seq).is_empty() {
            break;
        }
        monoio::select! {
            _ = notified => {}
            _ = monoio::time::sleep(keepalive) => {}
        }
        if last_write.elapsed() >= keepalive {
            if conn.write_chunk(h1::SSE_KEEPALIVE).await.is_err() {
                return false;
            }
            last_write = Instant::now();
        }
    }
    conn.finish_stream().await.is_ok()
}

// === the 2026-07-28 era ===

/// Writes one SSE event without an id (the modern era has no resumption).
async fn write_event(conn: &mut Conn, buf: &mut Vec<u8>, data: &[u8]) -> bool {
    buf.clear();
    h1::encode_sse_event(buf, None, None, Some(data), None);
    conn.write_chunk(buf).await.is_ok()
}

/// Where a 2026-07-28 relay reads an upstream answer from: the connection's reader on this
/// worker, or (after an `input_required` round) a channel any worker can read.
pub enum Source {
    /// Read by a reader task on this worker (the connection goes back to its pool at the end).
    Local(mpsc::Receiver<((), ReaderMsg)>),
    /// Events forwarded from the worker that holds the connection (`None` = ended or failed).
    Remote(mpsc::Receiver<Option<h1::SseEvent>>),
}

impl Source {
    /// The next event; `None` at the end of the stream, `Err` when it broke.
    async fn next(
        &mut self,
        w: &Worker,
        u: usize,
        replica: usize,
    ) -> Option<Result<h1::SseEvent, String>> {
        match self {
            Source::Local(rx) => match rx.recv().await? {
                ((), ReaderMsg::Event(ev)) => Some(Ok(ev)),
                ((), ReaderMsg::End(c)) => {
                    w.pool.put(w.upstream(u), replica, c);
                    None
                }
                ((), ReaderMsg::Failed(e)) => Some(Err(e.to_string())),
            },
            Source::Remote(rx) => rx.recv().await.flatten().map(Ok),
        }
    }

    /// A source that can wait in the session for the client's retry, read on any worker: a
    /// local reader gets a forwarding task on this worker.
    fn into_remote(self) -> mpsc::Receiver<Option<h1::SseEvent>> {
        match self {
            Source::Remote(rx) => rx,
            Source::Local(mut rx) => {
                let (tx, out) = mpsc::channel(64);
                monoio::spawn(async move {
                    while let Some(((), m)) = rx.recv().await {
                        let ev = match m {
                            ReaderMsg::Event(ev) => Some(ev),
                            ReaderMsg::End(_) | ReaderMsg::Failed(_) => None,
                        };
                        let end = ev.is_none();
                        if tx.send(ev).await.is_err() || end {
                            return;
                        }
                    }
                    let _ = tx.send(None).await;
                });
                out
            }
        }
    }
}

/// Relays an upstream SSE answer to a 2026-07-28 client's request (see [`modern_pump`]).
pub async fn modern_post_stream(
    w: &Rc<Worker>,
    conn: &mut Conn,
    session: &Arc<Session>,
    src: StreamSource,
    log_level: bool,
) -> bool {
    let StreamSource {
        upstream: u,
        replica,
        generation,
        conn: up_conn,
        client_id,
        cancel,
        modern,
        request: _,
        guard,
    } = src;
    let (tx, rx) = mpsc::channel::<((), ReaderMsg)>(64);
    upstream::spawn_reader(up_conn, (), tx);
    let flow = Flow {
        u,
        replica,
        generation,
        upstream_id: client_id.clone(),
        modern,
        log_level,
        guard,
    };
    modern_pump(
        w,
        conn,
        session,
        flow,
        Source::Local(rx),
        &client_id,
        &cancel,
    )
    .await
}

/// What a modern relay pumps: whose stream, and under which ids.
pub struct Flow {
    /// The upstream.
    pub u: usize,
    /// Its replica.
    pub replica: usize,
    /// The upstream session generation.
    pub generation: u64,
    /// The request id the upstream answers under (the first request's, across input rounds).
    pub upstream_id: Box<str>,
    /// Whether the upstream is a 2026-07-28 one.
    pub modern: bool,
    /// Whether the request asked for log messages.
    pub log_level: bool,
    /// The tool rule's guard for the final result (kept across input rounds).
    pub guard: Option<Box<super::guard::Guard>>,
}

/// Pumps an upstream answer to a 2026-07-28 client's request as an SSE stream: a modern
/// upstream's events as they are; a legacy upstream's in the modern shape (log messages only when
/// the request set `logLevel`, `list_changed` kept off request streams, `resultType` on the
/// response). A legacy upstream's server→client request ends the answer with an
/// `input_required` result (the upstream stream waits in the session, [`suspend`]); the client's
/// retry resumes it here ([`super::modern::resume`]). The response goes out under `reply_id`.
/// The client closing its stream is the cancellation: the relay stops and a legacy upstream
/// gets `notifications/cancelled`.
pub async fn modern_pump(
    w: &Rc<Worker>,
    conn: &mut Conn,
    session: &Arc<Session>,
    flow: Flow,
    mut source: Source,
    reply_id: &str,
    cancel: &Cancel,
) -> bool {
    let _guard = metrics::StreamGuard::new(&w.hub.metrics.open_streams);
    let Flow {
        u,
        replica,
        generation,
        ref upstream_id,
        modern,
        log_level,
        ref guard,
    } = flow;
    let up = w.upstream(u);
    let mut client_ok = conn.start_stream(200, &SSE_HEADERS).await.is_ok();
    let deadline = Instant::now() + up.request_timeout;
    let keepalive = w.hub.snap.sse_keepalive;
    let mut buf = Vec::with_capacity(1024);
    let mut last_write = Instant::now();
    let mut done = false;
    let mut failure = String::new();
    let mut ask: Option<(String, Box<str>, String)> = None;
    while client_ok {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            failure = format!(
                "upstream '{}' did not answer within {:?}",
                up.name, up.request_timeout
            );
            break;
        }
        let next = monoio::select! {
            m = source.next(w, u, replica) => m,
            _ = cancel.cancelled() => { done = true; break; }
            _ = monoio::time::sleep(keepalive.min(left).min(Duration::from_millis(250))) => {
                // Closing the stream is this era's cancel: notice it within a tick.
                if conn.client_closed() {
                    client_ok = false;
                } else if last_write.elapsed() >= keepalive {
                    client_ok = conn.write_chunk(h1::SSE_KEEPALIVE).await.is_ok();
                    last_write = Instant::now();
                }
                continue;
            }
        };
        let ev = match next {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                failure = format!("upstream '{}' stream failed: {e}", up.name);
                break;
            }
            None => {
                failure = format!("upstream '{}' ended the stream without answering", up.name);
                break;
            }
        };
        if !ev.has_data || ev.data.is_empty() {
            continue;
        }
        let data = ev.data.as_bytes();
        let Ok(p) = mcp_wire::peek(data) else {
            continue;
        };
        let out: Option<Bytes> = match p.kind {
            Kind::Response if p.id == Some(&**upstream_id) => {
                done = true;
                let typed = if modern {
                    Bytes::copy_from_slice(data)
                } else {
                    super::modern::modern_result(data, "")
                };
                let out = rewrite_id(&typed, reply_id);
                Some(match guard {
                    Some(g) => super::guard::finish(w, g, reply_id, out),
                    None => out,
                })
            }
            Kind::Response => None,
            Kind::Notification => {
                let name = p.method.as_deref().unwrap_or("");
                let kinds = ListKind::from_changed(name);
                for k in kinds {
                    w.hub.catalog.invalidate(u, *k);
                }
                let drop_it = !kinds.is_empty()
                    || name == method::RESOURCES_UPDATED
                    || (name == "notifications/message" && !log_level && !modern);
                (!drop_it).then(|| Bytes::copy_from_slice(data))
            }
            Kind::Request if modern => None,
            Kind::Request => {
                let asked = p.method.as_deref().unwrap_or("").to_string();
                let original: Box<str> = p.id.unwrap_or("null").into();
                let needs = match asked.as_str() {
                    "sampling/createMessage" => "sampling",
                    "elicitation/create" => "elicitation",
                    "roots/list" => "roots",
                    _ => "",
                };
                if needs.is_empty() || !session.client_has(needs) {
                    // Not something this client declared it can answer: the upstream is told.
                    let pending = PendingRequest {
                        upstream: u,
                        original_id: original,
                        generation,
                        created: Instant::now(),
                    };
                    let why = format!(
                        "meshgate: the client did not declare the capability {asked} needs"
                    );
                    crate::hub::housekeeping::answer_upstream_with_error(
                        w, session, &pending, &why,
                    )
                    .await;
                    None
                } else {
                    ask = Some((asked, original, p.params.unwrap_or("{}").to_string()));
                    break;
                }
            }
        };
        if let Some(out) = out {
            client_ok = write_event(conn, &mut buf, &out).await;
            last_write = Instant::now();
        }
        if done {
            break;
        }
    }
    if let Some((asked, original, params)) = ask {
        // The upstream wants input: answer the client with input_required; the stream waits.
        let state = suspend(w, session, &flow, source, &original);
        let mut result =
            br#"{"resultType":"input_required","inputRequests":{"input":{"method":"#.to_vec();
        mcp_wire::jsonrpc::push_json_str(&mut result, &asked);
        result.extend_from_slice(b",\"params\":");
        result.extend_from_slice(params.as_bytes());
        result.extend_from_slice(b"}},\"requestState\":");
        mcp_wire::jsonrpc::push_json_str(&mut result, &state);
        result.push(b'}');
        let msg = mcp_wire::jsonrpc::result_object(reply_id, &result);
        client_ok = client_ok && write_event(conn, &mut buf, &msg).await;
        session.state.lock().inflight.remove(reply_id);
        return client_ok && conn.finish_stream().await.is_ok();
    }
    session.state.lock().inflight.remove(reply_id);
    if !done && client_ok {
        if failure.is_empty() {
            failure = format!("upstream '{}' ended the stream without answering", up.name);
        }
        let err = error_object(
            Some(reply_id),
            mcp_wire::jsonrpc::code::INTERNAL_ERROR,
            &failure,
            None,
        );
        client_ok = write_event(conn, &mut buf, &err).await;
    }
    if !done && !client_ok && !modern {
        // The client closed its stream: that is the cancel; tell the legacy upstream.
        cancel_upstream(w, session, u, generation, upstream_id, CLIENT_CLOSED).await;
    }
    client_ok && conn.finish_stream().await.is_ok()
}

/// `response` with its top-level `id` replaced by `id` (raw JSON).
fn rewrite_id(response: &[u8], id: &str) -> Bytes {
    let Ok(p) = mcp_wire::peek(response) else {
        return Bytes::copy_from_slice(response);
    };
    match p.id {
        Some(old) if old != id => {
            let span = id_span(response, old);
            let mut out = Vec::with_capacity(response.len() + id.len());
            out.extend_from_slice(&response[..span.start]);
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&response[span.end..]);
            Bytes::from(out)
        }
        _ => Bytes::copy_from_slice(response),
    }
}

/// Parks an upstream answer that asked for input in the session, and returns the sealed
/// `requestState` that finds it again: AEAD (the hub's state keys, bound to the principal), with
/// the parked stream's token, the session, this hub and an expiry.
fn suspend(w: &Worker, session: &Session, flow: &Flow, source: Source, asked_id: &str) -> String {
    let mut t = [0u8; 8];
    // Unguessable tokens (the state is sealed too; this keeps parked streams apart).
    getrandom::fill(&mut t).expect("the OS random number generator is available");
    let token = u64::from_le_bytes(t);
    let parked = crate::session::Suspended {
        upstream: flow.u,
        replica: flow.replica,
        generation: flow.generation,
        upstream_id: flow.upstream_id.clone(),
        asked_id: asked_id.into(),
        log_level: flow.log_level,
        guard: flow.guard.clone(),
        events: source.into_remote(),
        created: Instant::now(),
    };
    session.park(token, parked);
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        + w.hub.snap.pending_timeout.as_millis() as u64;
    let me = w.hub.cluster.as_ref().map_or("", |c| c.me());
    let plain =
        serde_json::json!({"t": token, "s": &*session.id, "h": me, "e": expires}).to_string();
    format!(
        "mgrs.{}",
        w.hub
            .state_keys
            .seal(&state_aad(&session.principal), plain.as_bytes())
    )
}

/// What sealed request state is bound to: the principal.
pub fn state_aad(principal: &str) -> String {
    format!("mrtr\u{0}{principal}")
}

/// The cancel reason when a client closed its stream (the 2026-07-28 cancel) or went away.
pub const CLIENT_CLOSED: &str = "the client closed its stream";

/// Sends `notifications/cancelled` for `client_id` to upstream `u` with `reason` (a 2026-07-28
/// client closed its stream or went away; a tool ran past its policy's time bound).
pub(crate) async fn cancel_upstream(
    w: &Worker,
    session: &Session,
    u: usize,
    generation: u64,
    client_id: &str,
    reason: &str,
) {
    let us = session.state.lock().upstreams[u].clone();
    let Some(us) = us.filter(|us| us.generation == generation) else {
        return;
    };
    let mut body =
        br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"#.to_vec();
    body.extend_from_slice(client_id.as_bytes());
    body.extend_from_slice(b",\"reason\":");
    mcp_wire::jsonrpc::push_json_str(&mut body, reason);
    body.extend_from_slice(b"}}");
    let up = w.upstream(u);
    if let Err(e) = upstream::post(
        &w.pool,
        up,
        us.replica,
        Some(&us),
        &body,
        upstream::Resend::Safe,
    )
    .await
    {
        tracing::debug!(upstream = %up.name, error = %e, "cancelling upstream failed");
    }
}

/// `subscriptions/listen` (2026-07-28): one long-lived stream for the client, acknowledged
/// first, every notification tagged with the listen request's id, only the kinds the filter
/// asked for. It is fed by the modern upstreams' own listen streams (opened with the same
/// filter) and by the hub itself (`list_changed` when an upstream goes down or comes back).
pub async fn listen(
    w: &Rc<Worker>,
    conn: &mut Conn,
    session: &Arc<Session>,
    id: &str,
    filter: &mcp_wire::modern::ListenFilter,
    capabilities: &str,
    info: &str,
) -> bool {
    let _guard = metrics::StreamGuard::new(&w.hub.metrics.open_streams);
    if conn.start_stream(200, &SSE_HEADERS).await.is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(512);
    // The hub can deliver every kind (it relays each upstream's and adds its own).
    let ack = mcp_wire::modern::acknowledged(id, filter);
    let mut client_ok = write_event(conn, &mut buf, &ack).await;
    let n = w.hub.snap.upstreams.len();
    let (tx, mut rx) = mpsc::channel::<(usize, ReaderMsg)>(64);
    let env = crate::hub::lifecycle::envelope(capabilities, info);
    let mut attached = vec![false; n];
    let mut retry_at = vec![Instant::now(); n];
    let keepalive = w.hub.snap.sse_keepalive;
    let tick = keepalive.min(Duration::from_millis(250));
    let mut last_write = Instant::now();
    let mut seen_mask = w.hub.up_mask();
    while client_ok && !session.is_closed() {
        session.touch();
        for u in 0..n {
            if attached[u] || Instant::now() < retry_at[u] || !w.hub.is_up(u) {
                continue;
            }
            let Ok(us) = super::affinity::upstream_session(w, session, u).await else {
                retry_at[u] = Instant::now() + Duration::from_secs(1);
                continue;
            };
            if !us.is_modern() {
                // A legacy upstream: subscribe (within the hub-held session) to the URIs it
                // serves, and merge that session's GET stream. One GET stream per upstream
                // session: a second listen of the same principal and capabilities at once gets
                // only the hub's own notifications from this upstream.
                for uri in &filter.resource_subscriptions {
                    if super::route::resolve_uri(w, session, uri).await.ok() != Some(u) {
                        continue;
                    }
                    let known = session
                        .state
                        .lock()
                        .subscriptions
                        .iter()
                        .any(|(su, s)| *su == u && s == uri);
                    if !known {
                        let mut body = br#"{"jsonrpc":"2.0","id":"mg-sub","method":"resources/subscribe","params":{"uri":"#.to_vec();
                        mcp_wire::jsonrpc::push_json_str(&mut body, uri);
                        body.extend_from_slice(b"}}");
                        match upstream::request(
                            &w.pool,
                            w.upstream(u),
                            us.replica,
                            Some(&us),
                            &body,
                        )
                        .await
                        {
                            Ok(_) => session.state.lock().subscriptions.push((u, uri.clone())),
                            Err(e) => {
                                tracing::debug!(upstream = %w.upstream(u).name, %uri, error = %e, "subscribing for a listen stream failed")
                            }
                        }
                    }
                }
                match upstream::get_stream(&w.pool, w.upstream(u), &us, None).await {
                    Ok(Some(c)) => {
                        upstream::spawn_reader(c, u, tx.clone());
                        attached[u] = true;
                    }
                    Ok(None) => attached[u] = true,
                    Err(e) => {
                        tracing::debug!(upstream = %w.upstream(u).name, error = %e, "upstream GET stream for a listen stream not opened; retrying later");
                        retry_at[u] = Instant::now() + Duration::from_secs(1);
                    }
                }
                continue;
            }
            match open_listen(w, u, &us, &env, filter).await {
                Ok(Some(c)) => {
                    upstream::spawn_reader(c, u, tx.clone());
                    attached[u] = true;
                }
                Ok(None) => attached[u] = true,
                Err(e) => {
                    tracing::debug!(upstream = %w.upstream(u).name, error = %e, "upstream listen stream not opened; retrying later");
                    retry_at[u] = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        let msg = monoio::select! {
            m = rx.recv() => m,
            _ = monoio::time::sleep(tick) => None,
        };
        match msg {
            Some((u, ReaderMsg::Event(ev))) if ev.has_data && !ev.data.is_empty() => {
                if let Ok(p) = mcp_wire::peek(ev.data.as_bytes()) {
                    let name = p.method.as_deref().unwrap_or("");
                    for k in ListKind::from_changed(name) {
                        w.hub.catalog.invalidate(u, *k);
                    }
                    if p.kind == Kind::Notification
                        && name != mcp_wire::modern::METHOD_SUBSCRIPTIONS_ACKNOWLEDGED
                        && filter.allows(name, p.uri.as_deref())
                    {
                        if let Ok(tagged) =
                            mcp_wire::modern::tag_subscription(ev.data.as_bytes(), id)
                        {
                            client_ok = write_event(conn, &mut buf, &tagged).await;
                            last_write = Instant::now();
                        }
                    }
                }
            }
            Some((_, ReaderMsg::Event(_))) => {}
            Some((u, ReaderMsg::End(_) | ReaderMsg::Failed(_))) => {
                attached[u] = false;
                retry_at[u] = Instant::now() + Duration::from_secs(1);
            }
            None => {}
        }
        let mask = w.hub.up_mask();
        if mask != seen_mask {
            seen_mask = mask;
            for note in [
                method::TOOLS_LIST_CHANGED,
                method::PROMPTS_LIST_CHANGED,
                method::RESOURCES_LIST_CHANGED,
            ] {
                if !filter.allows(note, None) {
                    continue;
                }
                let mut data = br#"{"jsonrpc":"2.0","method":""#.to_vec();
                data.extend_from_slice(note.as_bytes());
                data.extend_from_slice(b"\"}");
                if let Ok(tagged) = mcp_wire::modern::tag_subscription(&data, id) {
                    client_ok = write_event(conn, &mut buf, &tagged).await;
                    last_write = Instant::now();
                }
            }
        }
        if conn.client_closed() {
            client_ok = false;
        } else if client_ok && last_write.elapsed() >= keepalive {
            client_ok = conn.write_chunk(h1::SSE_KEEPALIVE).await.is_ok();
            last_write = Instant::now();
        }
    }
    client_ok && conn.finish_stream().await.is_ok()
}

/// Opens a 2026-07-28 upstream's `subscriptions/listen` stream with `filter`; `Ok(None)` when
/// it answers without a stream.
async fn open_listen(
    w: &Worker,
    u: usize,
    us: &crate::session::UpstreamSession,
    env: &str,
    filter: &mcp_wire::modern::ListenFilter,
) -> Result<Option<h1::ClientConn>, crate::upstream::UpstreamError> {
    let mut body =
        br#"{"jsonrpc":"2.0","id":"mg-listen","method":"subscriptions/listen","params":{"_meta":"#
            .to_vec();
    body.extend_from_slice(env.as_bytes());
    body.extend_from_slice(b",\"notifications\":");
    body.extend_from_slice(listen_filter_json(filter).as_bytes());
    body.extend_from_slice(b"}}");
    let reply = upstream::post(
        &w.pool,
        w.upstream(u),
        us.replica,
        Some(us),
        &body,
        upstream::Resend::Safe,
    )
    .await?;
    match reply {
        upstream::Reply::Stream { conn, .. } => Ok(Some(conn)),
        _ => Ok(None),
    }
}

/// The `notifications` filter as JSON (what the hub asks its modern upstreams for).
fn listen_filter_json(f: &mcp_wire::modern::ListenFilter) -> String {
    serde_json::json!({
        "toolsListChanged": f.tools_list_changed,
        "promptsListChanged": f.prompts_list_changed,
        "resourcesListChanged": f.resources_list_changed,
        "resourceSubscriptions": f.resource_subscriptions,
    })
    .to_string()
}

// === a legacy client and a 2026-07-28 upstream: input rounds ===

/// Whether a JSON-RPC response is an `input_required` result.
pub fn is_input_required(response: &[u8]) -> bool {
    mcp_wire::modern::result_span(response)
        .ok()
        .flatten()
        .and_then(|r| std::str::from_utf8(&response[r]).ok().map(str::to_string))
        .is_some_and(|r| {
            matches!(
                mcp_wire::modern::peek_result_shape(&r),
                Ok(mcp_wire::modern::ResultShape::InputRequired { .. })
            )
        })
}

/// Answers the `input_required` result `first` for a legacy client (whose session has no MRTR):
/// each of its `inputRequests` goes to the client as a server→client request on this stream;
/// with every answer in, the request is retried upstream with `inputResponses` and the
/// upstream's `requestState` echoed; repeated while the upstream asks again (at most 8 rounds).
/// Returns the final response to send under the client's id.
pub async fn input_rounds(
    w: &Rc<Worker>,
    em: &mut Emitter<'_>,
    session: &Arc<Session>,
    u: usize,
    request: &Bytes,
    client_id: &str,
    first: Bytes,
) -> Bytes {
    use serde_json::value::RawValue;
    let fail = |why: String| {
        Bytes::from(error_object(
            Some(client_id),
            mcp_wire::jsonrpc::code::INTERNAL_ERROR,
            &why,
            None,
        ))
    };
    let up = w.upstream(u);
    let mut current = first;
    for _round in 0..8 {
        if !is_input_required(&current) {
            return current;
        }
        #[derive(serde::Deserialize)]
        struct Resp<'a> {
            #[serde(borrow)]
            result: InputRequired<'a>,
        }
        #[derive(serde::Deserialize)]
        struct InputRequired<'a> {
            #[serde(borrow, rename = "inputRequests", default)]
            input_requests: Option<std::collections::BTreeMap<String, &'a RawValue>>,
            #[serde(borrow, rename = "requestState", default)]
            request_state: Option<&'a RawValue>,
        }
        let Ok(resp) = serde_json::from_slice::<Resp<'_>>(&current) else {
            return fail(format!(
                "upstream '{}' sent an unreadable input_required result",
                up.name
            ));
        };
        let mut responses: Vec<(String, Bytes)> = Vec::new();
        let mut waiting = Vec::new();
        for (key, req) in resp.result.input_requests.unwrap_or_default() {
            // `{method, params}` as a JSON-RPC request under a hub-minted id.
            let (id, rx) = session.mint_waiter();
            let mut msg = br#"{"jsonrpc":"2.0","id":"#.to_vec();
            msg.extend_from_slice(id.as_bytes());
            msg.push(b',');
            let inner = req.get().trim();
            msg.extend_from_slice(inner.get(1..).unwrap_or("}").as_bytes());
            em.emit(&msg).await;
            waiting.push((key, rx));
        }
        for (key, rx) in waiting {
            let answer = monoio::time::timeout(w.hub.snap.pending_timeout, rx).await;
            let Ok(Ok(answer)) = answer else {
                return fail(format!(
                    "the client did not answer the input request {key:?} of upstream '{}'",
                    up.name
                ));
            };
            // The client's JSON-RPC response: its `result` is the input response.
            let result = mcp_wire::modern::result_span(&answer).ok().flatten();
            match result {
                Some(r) => responses.push((key, answer.slice(r))),
                None => {
                    return fail(format!(
                        "the client refused the input request {key:?} of upstream '{}'",
                        up.name
                    ))
                }
            }
        }
        // The retry: the same request, with inputResponses and the upstream's requestState.
        let mut members = String::from("\"inputResponses\":{");
        for (i, (key, value)) in responses.iter().enumerate() {
            if i > 0 {
                members.push(',');
            }
            let mut k = Vec::new();
            mcp_wire::jsonrpc::push_json_str(&mut k, key);
            members.push_str(&String::from_utf8_lossy(&k));
            members.push(':');
            members.push_str(&String::from_utf8_lossy(value));
        }
        members.push('}');
        if let Some(state) = resp.result.request_state {
            members.push_str(",\"requestState\":");
            members.push_str(state.get());
        }
        let Some(retry) = super::forward::with_params(request, &members) else {
            return fail("the request could not be retried".into());
        };
        let level = session.state.lock().log_level.clone();
        let env = super::forward::envelope_for(session, level.as_deref());
        let Some(retry) = super::forward::with_envelope(&retry, &env) else {
            return fail("the request could not be retried".into());
        };
        let us = session.state.lock().upstreams[u].clone();
        let Some(us) = us else {
            return fail(format!("upstream '{}' session is gone", up.name));
        };
        current = match upstream::post(
            &w.pool,
            up,
            us.replica,
            Some(&us),
            &retry,
            upstream::Resend::IfUnsent,
        )
        .await
        {
            Ok(upstream::Reply::Json { body, .. }) => body,
            Ok(upstream::Reply::Stream { conn, .. }) => {
                match collect_response(w, em, session, u, us.generation, conn, client_id).await {
                    Some(b) => b,
                    None => {
                        return fail(format!(
                            "upstream '{}' ended the stream without answering",
                            up.name
                        ))
                    }
                }
            }
            Ok(upstream::Reply::Status(s)) => {
                return fail(format!("upstream '{}' answered HTTP {s}", up.name))
            }
            Err(e) => return fail(format!("upstream '{}' failed: {e}", up.name)),
        };
    }
    fail(format!(
        "upstream '{}' asked for input more than 8 times",
        up.name
    ))
}

/// A legacy client's answer that starts with an upstream's `input_required` JSON result: an SSE
/// stream carrying the input rounds and then the final response.
pub async fn input_stream(
    w: &Rc<Worker>,
    conn: &mut Conn,
    session: &Arc<Session>,
    u: usize,
    request: &Bytes,
    client_id: &str,
    first: Bytes,
) -> bool {
    let _guard = metrics::StreamGuard::new(&w.hub.metrics.open_streams);
    let mut em = Emitter::start(w, conn, session, false).await;
    em.prime(session.version).await;
    let fin = input_rounds(w, &mut em, session, u, request, client_id, first).await;
    em.emit(&fin).await;
    session.state.lock().inflight.remove(client_id);
    em.finish().await
}

/// Reads an upstream SSE answer to its response, relaying its notifications to `em`.
async fn collect_response(
    w: &Rc<Worker>,
    em: &mut Emitter<'_>,
    session: &Arc<Session>,
    u: usize,
    generation: u64,
    conn: h1::ClientConn,
    client_id: &str,
) -> Option<Bytes> {
    let up = w.upstream(u);
    let (tx, mut rx) = mpsc::channel::<((), ReaderMsg)>(64);
    upstream::spawn_reader(conn, (), tx);
    let deadline = Instant::now() + up.request_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = monoio::time::timeout(left, rx.recv())
            .await
            .ok()
            .flatten()?;
        match msg {
            ((), ReaderMsg::Event(ev)) if ev.has_data && !ev.data.is_empty() => {
                let (data, is_final) =
                    relay_message(w, session, u, generation, &ev.data, Some(client_id)).await;
                if is_final {
                    return Some(data);
                }
                em.emit(&data).await;
            }
            ((), ReaderMsg::Event(_)) => {}
            ((), ReaderMsg::End(_) | ReaderMsg::Failed(_)) => return None,
        }
    }
}

// === the approval gate ===

/// A call held for an operator (the approval gate): the client's stream gets keep-alives and,
/// when it sent a progress token, progress notifications naming the approval while it waits;
/// approved, the call runs and its answer follows on the same stream; rejected or expired, the
/// client gets a tool result saying so (`isError`). Every outcome is audited by the registry's
/// observer.
#[allow(clippy::too_many_arguments)]
pub async fn held(
    w: &Rc<Worker>,
    conn: &mut Conn,
    cx: &super::Ctx<'_>,
    session: &Arc<Session>,
    call: &super::Call<'_>,
    target: super::route::Target,
    approval: &str,
    mut decision: tokio::sync::oneshot::Receiver<governance::approval::ApprovalDecision>,
    guard: Option<super::guard::Guard>,
) -> bool {
    use governance::approval::ApprovalOutcome;
    use std::sync::atomic::Ordering;
    let _guard = metrics::StreamGuard::new(&w.hub.metrics.open_streams);
    let mut em = Emitter::start(w, conn, session, false).await;
    em.prime(session.version).await;
    let keepalive = w.hub.snap.sse_keepalive;
    let started = Instant::now();
    let mut step = 0u64;
    let outcome = loop {
        monoio::select! {
            d = &mut decision => break d.ok(),
            _ = monoio::time::sleep(keepalive) => {
                step += 1;
                if let Some(token) = call.msg.progress_token {
                    let mut n = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"#.to_vec();
                    n.extend_from_slice(token.as_bytes());
                    n.extend_from_slice(format!(",\"progress\":{step},\"message\":").as_bytes());
                    mcp_wire::jsonrpc::push_json_str(&mut n, &format!("waiting for approval {approval}"));
                    n.extend_from_slice(b"}}");
                    em.emit(&n).await;
                } else {
                    em.keepalive_if_idle(keepalive).await;
                }
            }
        }
    };
    let g = w.hub.gov.get();
    if let Some(g) = g {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        g.stats.approval_ms_total.fetch_add(ms, Ordering::Relaxed);
        let approved = outcome
            .as_ref()
            .is_some_and(|d| d.outcome == ApprovalOutcome::Approved);
        let counter = if approved {
            &g.stats.approvals_approved
        } else {
            &g.stats.approvals_denied
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    let id = call.id();
    match outcome {
        Some(d) if d.outcome == ApprovalOutcome::Approved => {
            tracing::info!(approval, by = %d.by, "approved: the held call runs");
            let run = async {
                let us = super::affinity::upstream_session(w, session, target.upstream).await?;
                super::guard::forward(w, session, &cx.principal, call, &target, us, guard).await
            };
            match run.await {
                Ok(super::Answer::Json(b) | super::Answer::Status(_, b)) => em.emit(&b).await,
                Ok(super::Answer::Stream(src)) => relay_to_response(w, &mut em, session, src).await,
                Ok(_) => {}
                Err(e) => {
                    if let Some(b) = e.with_id(Some(id)).body() {
                        em.emit(&b).await;
                    }
                }
            }
            super::route::after_forward(w, session, &target);
        }
        Some(d) => {
            let what = match d.outcome {
                ApprovalOutcome::Expired => {
                    "no operator approved it in time (timeout = deny)".to_string()
                }
                _ => format!(
                    "rejected by {}{}",
                    d.by,
                    d.comment
                        .as_deref()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                ),
            };
            em.emit(&crate::gov::tool_error(
                id,
                &format!("the call was not run: {what}"),
            ))
            .await;
        }
        None => {
            em.emit(&crate::gov::tool_error(
                id,
                "the call was not run: its approval is gone (the hub is shutting down)",
            ))
            .await;
        }
    }
    em.finish().await
}
