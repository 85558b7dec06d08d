//! Agent-side MCP sessions: one per `initialize` the surface answered, keyed by the
//! `Mcp-Session-Id` the agent minted.
//!
//! A session records which server it belongs to, its standalone GET stream (for messages not
//! tied to a request), its last activity (for idle reaping) and, in per-session stdio mode, the
//! process that serves it. Owned by [`crate::Surface`]; referenced weakly by the multiplexers.
//!
//! # The GET stream: event ids and replay
//!
//! Every message for the GET stream gets an event id `g-<n>` (`n` counts up per session; POST
//! streams carry no ids, so ids never collide across streams) and is kept in a small bounded
//! replay buffer ([`REPLAY_EVENTS`], [`REPLAY_BYTES`]) whether or not a GET is attached. A GET
//! with `Last-Event-ID: g-<k>` gets the kept events after `k`, then goes on live; a GET without
//! one starts live. Each GET starts with a priming event (an id, empty data) so its consumer
//! always holds an id to resume from. One GET is live per session: a newer GET takes over and
//! the older stream ends (each message goes to exactly one stream); its consumer, if still
//! there, resumes with its last id and loses nothing the buffer still holds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use crate::body::{sse_frame, Sink, SseBody};
use crate::mux::Mux;

/// Events of a session's GET stream kept for `Last-Event-ID` resumption.
pub const REPLAY_EVENTS: usize = 128;
/// Bytes of a session's GET stream kept for `Last-Event-ID` resumption.
pub const REPLAY_BYTES: usize = 1 << 20;

/// Locks a mutex, recovering from poisoning (state here stays consistent across panics because
/// every critical section is a plain map/field update).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Mints a session id: 128 bits from the OS CSPRNG, hex.
pub fn mint_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness is unrecoverable for session security; fall back to a time+counter
        // mix only so the agent keeps serving (ids are routing state, never authentication).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        b = t.to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One agent session.
#[derive(Debug)]
pub struct Session {
    /// The `Mcp-Session-Id`.
    pub id: String,
    /// The server it talks to.
    pub server: Arc<str>,
    get_stream: Mutex<GetStream>,
    last_seen: Mutex<Instant>,
    /// Per-session mode: the process serving this session.
    pub(crate) mux: Mutex<Option<Arc<Mux>>>,
}

impl Session {
    /// A new session for `server`.
    pub fn new(server: Arc<str>) -> Arc<Session> {
        Arc::new(Session {
            id: mint_id(),
            server,
            get_stream: Mutex::new(GetStream::default()),
            last_seen: Mutex::new(Instant::now()),
            mux: Mutex::new(None),
        })
    }

    /// Marks activity now.
    pub fn touch(&self) {
        *lock(&self.last_seen) = Instant::now();
    }

    /// When the session was last used.
    pub fn last_seen(&self) -> Instant {
        *lock(&self.last_seen)
    }

    /// Opens a GET stream: replays the kept events after `last_event_id` (when given and
    /// known), sends a priming event, and makes it the session's live GET stream (an older one
    /// ends).
    pub fn open_get_stream(&self, last_event_id: Option<&str>) -> SseBody {
        let (sink, body) = Sink::new(format!("GET session={} server={}", self.id, self.server));
        let mut g = lock(&self.get_stream);
        if let Some(raw) = last_event_id {
            match parse_event_id(raw).filter(|k| *k <= g.seq) {
                Some(k) => {
                    let first_kept = g.replay.front().map_or(g.seq + 1, |(n, _)| *n);
                    if k + 1 < first_kept {
                        tracing::warn!(session = %self.id, server = %self.server, last_event_id = raw, lost = first_kept - k - 1, "GET resumed past the replay buffer: the oldest events are gone");
                    }
                    for (_, frame) in g.replay.iter().filter(|(n, _)| *n > k) {
                        sink.send_frame(frame.clone());
                    }
                }
                None => {
                    tracing::debug!(session = %self.id, last_event_id = raw, "unknown Last-Event-ID: the GET stream starts live")
                }
            }
        }
        let mut priming = Vec::with_capacity(24);
        h1::encode_sse_event(&mut priming, Some(&event_id(g.seq)), None, Some(b""), None);
        sink.send_frame(Bytes::from(priming));
        g.sink = Some(sink);
        body
    }

    /// Whether a GET stream is open.
    pub fn has_get_stream(&self) -> bool {
        lock(&self.get_stream)
            .sink
            .as_ref()
            .is_some_and(|s| !s.is_closed())
    }

    /// Sends a message on the GET stream: it gets the next event id and is kept for replay.
    /// `true` if a live GET stream took it.
    pub fn send_standalone(&self, msg: &Value) -> bool {
        self.standalone(msg, false)
    }

    /// Like [`Session::send_standalone`], but only when a GET stream is live (nothing is kept
    /// otherwise): for server→client requests, which the agent answers itself when no client
    /// can.
    pub fn send_standalone_if_live(&self, msg: &Value) -> bool {
        self.standalone(msg, true)
    }

    fn standalone(&self, msg: &Value, only_live: bool) -> bool {
        let mut g = lock(&self.get_stream);
        if g.sink.as_ref().is_some_and(Sink::is_closed) {
            g.sink = None;
        }
        if only_live && g.sink.is_none() {
            return false;
        }
        let n = g.seq + 1;
        let Some(frame) = sse_frame(Some(&event_id(n)), msg) else {
            return false;
        };
        g.seq = n;
        g.replay_bytes += frame.len();
        g.replay.push_back((n, frame.clone()));
        while g.replay.len() > REPLAY_EVENTS || g.replay_bytes > REPLAY_BYTES {
            match g.replay.pop_front() {
                Some((_, f)) => g.replay_bytes -= f.len(),
                None => break,
            }
        }
        let delivered = g.sink.as_ref().is_some_and(|s| s.send_frame(frame));
        if !delivered {
            g.sink = None;
        }
        delivered
    }

    /// Ends the GET stream and forgets its replay buffer (session deleted).
    pub fn close_streams(&self) {
        *lock(&self.get_stream) = GetStream::default();
    }
}

/// A session's GET stream: the live sink, the id counter and the replay buffer.
#[derive(Debug, Default)]
struct GetStream {
    /// The last event id minted (0: none yet).
    seq: u64,
    /// Recent events, oldest first, with their ids.
    replay: VecDeque<(u64, Bytes)>,
    replay_bytes: usize,
    sink: Option<Sink>,
}

/// The SSE event id of GET-stream event `n`.
fn event_id(n: u64) -> String {
    format!("g-{n}")
}

/// The sequence number in a GET-stream event id (`g-<n>`).
fn parse_event_id(s: &str) -> Option<u64> {
    s.trim().strip_prefix("g-")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::json;

    /// Reads what a body has ready (bounded: a body with nothing ready for 50 ms ends the
    /// read); `true` with it when the body ended.
    async fn read(body: &mut SseBody) -> (String, bool) {
        let mut out = String::new();
        loop {
            match tokio::time::timeout(std::time::Duration::from_millis(50), body.frame()).await {
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        out.push_str(&String::from_utf8_lossy(&d));
                    }
                }
                Ok(Some(Err(_))) | Ok(None) => return (out, true),
                Err(_) => return (out, false),
            }
        }
    }

    async fn drain(body: &mut SseBody) -> String {
        read(body).await.0
    }

    fn ids(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn get_stream_events_have_ids_and_resume_replays_what_was_missed() {
        let s = Session::new(Arc::from("x"));
        // Sent while no GET is attached: kept, not delivered.
        assert!(!s.send_standalone(&json!({"n": 1})));
        let mut a = s.open_get_stream(None);
        assert!(s.send_standalone(&json!({"n": 2})));
        let got = drain(&mut a).await;
        // Priming id g-1 (event 1 came before this stream), then event 2.
        assert_eq!(ids(&got), ["g-1", "g-2"], "{got}");
        assert!(got.contains(r#"data: {"n":2}"#), "{got}");
        // The consumer goes away; events 3 and 4 are sent while detached.
        drop(a);
        assert!(!s.send_standalone(&json!({"n": 3})));
        assert!(!s.send_standalone(&json!({"n": 4})));
        let mut b = s.open_get_stream(Some("g-2"));
        let got = drain(&mut b).await;
        assert_eq!(ids(&got), ["g-3", "g-4", "g-4"], "{got}");
        assert!(
            got.contains(r#"{"n":3}"#) && got.contains(r#"{"n":4}"#),
            "{got}"
        );
        assert!(
            !got.contains(r#"{"n":2}"#),
            "replayed an event before the id: {got}"
        );
    }

    #[tokio::test]
    async fn a_newer_get_takes_over_and_the_older_stream_ends() {
        let s = Session::new(Arc::from("x"));
        let mut old = s.open_get_stream(None);
        let mut new = s.open_get_stream(None);
        assert!(s.send_standalone(&json!({"to": "new"})));
        let (old_text, ended) = read(&mut old).await;
        assert!(ended, "the older stream is still open: {old_text}");
        assert!(!old_text.contains("\"to\""), "{old_text}");
        assert!(drain(&mut new).await.contains(r#"{"to":"new"}"#));
    }

    #[tokio::test]
    async fn replay_buffer_is_bounded_and_a_resume_past_it_gets_what_is_kept() {
        let s = Session::new(Arc::from("x"));
        for n in 1..=(REPLAY_EVENTS as u64 + 10) {
            s.send_standalone(&json!({"n": n}));
        }
        let mut b = s.open_get_stream(Some("g-0"));
        let got = drain(&mut b).await;
        let ids = ids(&got);
        // The kept events (the newest REPLAY_EVENTS) and the priming event.
        assert_eq!(ids.len(), REPLAY_EVENTS + 1);
        assert_eq!(ids[0], "g-11");
        // An id from the future or of another shape starts live (priming only).
        for bad in ["g-999999", "7", "x-1"] {
            let mut c = s.open_get_stream(Some(bad));
            assert_eq!(self::ids(&drain(&mut c).await).len(), 1, "{bad}");
        }
    }

    #[test]
    fn server_requests_are_not_kept_without_a_live_stream() {
        let s = Session::new(Arc::from("x"));
        assert!(!s.send_standalone_if_live(&json!({"id": "s2c-1"})));
        assert!(lock(&s.get_stream).replay.is_empty());
    }
}
