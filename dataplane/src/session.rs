//! Client sessions (legacy era): the state a `Mcp-Session-Id` stands for.
//!
//! Step 4 of the request path. A [`Session`] is created only by `initialize` and holds what the
//! hub needs to continue it: negotiated version, the client's real capabilities and info, one
//! upstream session per upstream (opened lazily, each on the replica chosen for it and recorded in
//! it, so the session sticks to that replica while it is healthy), the log level and subscriptions to replay when
//! an upstream session is re-created, pending server→client requests (hub-minted id → upstream
//! and original id; bounded in number and age), the client requests in flight (for
//! cancellation), and the replay buffers of its SSE streams. Upstream lists are not here: they
//! are shared by all sessions in [`crate::catalog`].
//!
//! The `session` stage of the request path ([`crate::pipeline::session`]) finds or creates these;
//! this module only holds the state.
//!
//! Sessions live in one process-wide table shared by the workers (a sharded `DashMap`), because
//! a client may spread one session over several connections and each connection lands on any
//! worker. Each session's mutable part sits behind a short `parking_lot::Mutex` that is never held
//! across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The session table.
#[derive(Default)]
pub struct SessionTable {
    map: DashMap<Arc<str>, Arc<Session>>,
}

impl SessionTable {
    /// Inserts a new session.
    pub fn insert(&self, s: Arc<Session>) {
        self.map.insert(s.id.clone(), s);
    }
    /// Inserts `s` unless a session with its id is already there; returns the one kept.
    pub fn insert_if_absent(&self, s: Arc<Session>) -> Arc<Session> {
        self.map.entry(s.id.clone()).or_insert(s).value().clone()
    }
    /// The live session with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.map.get(id).map(|e| e.value().clone())?;
        s.touch();
        Some(s)
    }
    /// Removes and returns a session (DELETE or expiry).
    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let (_, s) = self.map.remove(id)?;
        s.close();
        Some(s)
    }
    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Removes sessions idle for longer than `ttl`; returns them so their upstream sessions can be
    /// deleted.
    pub fn expire(&self, ttl: Duration) -> Vec<Arc<Session>> {
        let now = Instant::now();
        let dead: Vec<Arc<str>> = self
            .map
            .iter()
            .filter(|e| e.value().idle_for(now) > ttl)
            .map(|e| e.key().clone())
            .collect();
        dead.iter().filter_map(|id| self.remove(id)).collect()
    }
    /// A snapshot of every live session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map.iter().map(|e| e.value().clone()).collect()
    }
}

/// Mints a session id: 128 random bits as 32 lowercase hex chars (visible ASCII).
pub fn mint_session_id() -> Arc<str> {
    let mut b = [0u8; 16];
    // The OS RNG failing is not recoverable for a server that must mint unguessable ids.
    getrandom::fill(&mut b).expect("the OS random number generator is available");
    let mut s = String::with_capacity(32);
    for x in b {
        s.push(char::from(b"0123456789abcdef"[usize::from(x >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(x & 15)]));
    }
    s.into()
}

/// One upstream's session, as opened for a client session.
#[derive(Debug, Clone)]
pub struct UpstreamSession {
    /// The upstream's `Mcp-Session-Id`, if it uses sessions.
    pub sid: Option<Arc<str>>,
    /// The revision the upstream negotiated (sent as its `MCP-Protocol-Version`).
    pub version: Arc<str>,
    /// The upstream's declared capabilities (raw JSON object).
    pub capabilities: Arc<serde_json::Value>,
    /// Bumped each time this upstream session is (re)created.
    pub generation: u64,
    /// The replica of the upstream it lives on (index into `Upstream::replicas`); every request
    /// within it goes there.
    pub replica: usize,
}

impl UpstreamSession {
    /// Whether this is a 2026-07-28 (stateless) upstream: no session id; every request carries
    /// its `_meta` envelope and mirrored headers.
    pub fn is_modern(&self) -> bool {
        mcp_wire::modern::is_modern_version(&self.version)
    }

    /// Whether the upstream declared a top-level capability, e.g. `logging`.
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.get(name).is_some()
    }
}

/// A server→client request waiting for the client's answer.
#[derive(Debug, Clone)]
pub struct PendingRequest {
    /// The upstream that asked.
    pub upstream: usize,
    /// Its original id, as raw JSON.
    pub original_id: Box<str>,
    /// The upstream session generation it came from (an answer for a dead session is dropped).
    pub generation: u64,
    /// When it was relayed to the client (old ones are given up, see
    /// [`Session::expire_pending`]).
    pub created: Instant,
}

/// Most server→client requests one session may have waiting for the client; past it the
/// oldest is given up (its upstream gets an error), so a client that never answers cannot grow
/// the hub's memory.
pub const MAX_PENDING: usize = 64;

/// An upstream answer parked while a 2026-07-28 client is asked for input (an
/// `input_required` round over a legacy upstream): found again by the token in the sealed
/// `requestState` of the client's retry.
pub struct Suspended {
    /// The upstream.
    pub upstream: usize,
    /// Its replica.
    pub replica: usize,
    /// The upstream session generation the stream belongs to.
    pub generation: u64,
    /// The request id the upstream will answer under.
    pub upstream_id: Box<str>,
    /// The id of the upstream's server→client request the client's input answers.
    pub asked_id: Box<str>,
    /// Whether the request asked for log messages.
    pub log_level: bool,
    /// The tool rule's guard for the final result.
    pub guard: Option<Box<crate::pipeline::guard::Guard>>,
    /// The rest of the upstream's answer.
    pub events: tokio::sync::mpsc::Receiver<Option<h1::SseEvent>>,
    /// When it was parked (old ones are dropped).
    pub created: Instant,
}

/// A client request in flight, for `notifications/cancelled`.
#[derive(Debug, Clone)]
pub struct Inflight {
    /// The upstream running it.
    pub upstream: usize,
    /// Set when the client cancels it: its relay ends at once, with no late response.
    pub cancel: Arc<Cancel>,
}

/// A cancellation flag a relay waits on.
#[derive(Debug, Default)]
pub struct Cancel {
    set: AtomicBool,
    notify: Notify,
}

impl Cancel {
    /// Cancels (wakes the relay).
    pub fn cancel(&self) {
        self.set.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }
    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        loop {
            let n = self.notify.notified();
            let mut n = std::pin::pin!(n);
            n.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            n.await;
        }
    }
}

/// The mutable part of a session.
#[derive(Default)]
pub struct SessionState {
    /// Upstream sessions by upstream index.
    pub upstreams: Vec<Option<UpstreamSession>>,
    /// Upstreams whose session is being opened right now (single flight: others wait).
    pub opening: Vec<bool>,
    /// Last `logging/setLevel` level, replayed on new upstream sessions.
    pub log_level: Option<String>,
    /// Resource subscriptions `(upstream, uri)`, replayed on new upstream sessions.
    pub subscriptions: Vec<(usize, String)>,
    /// Server→client requests by hub-minted id (raw JSON).
    pub pending: HashMap<Box<str>, PendingRequest>,
    /// The visibility class of the principal's last request (which tools its lists show).
    pub vis: Option<governance::policy::VisibilityClass>,
    /// Upstream answers parked for a 2026-07-28 client's input, by token.
    pub suspended: HashMap<u64, Suspended>,
    /// Requests the hub itself sent the client (a 2026-07-28 upstream's `inputRequests` turned
    /// into server→client requests), by hub-minted id: the client's answer goes to the waiter.
    pub input_waiters: HashMap<Box<str>, tokio::sync::oneshot::Sender<Bytes>>,
    /// Client requests in flight: client id (raw JSON) → upstream and cancel flag.
    pub inflight: HashMap<Box<str>, Inflight>,
    /// Replay buffers of this session's SSE streams, by stream number.
    pub streams: HashMap<u64, Arc<ReplayStream>>,
    /// Bumped by each standalone GET stream; an older stream ends when it sees a newer one
    /// (a reconnecting client takes over instead of getting a conflict).
    pub get_stream_gen: u64,
    /// Per upstream: the last event id seen on its GET stream and the upstream-session
    /// generation it belongs to. A GET stream that re-attaches (after a break, or a newer client
    /// GET taking over) resumes from there with `Last-Event-ID`, so nothing the upstream sent
    /// in between is lost.
    pub upstream_get_ids: Vec<Option<(u64, String)>>,
    /// Bumped when a subscription to a 2026-07-28 upstream changes (its listen stream, which
    /// the GET stream holds, must be reopened with the new set).
    pub listen_want: u64,
    /// The `listen_want` the GET stream's listen streams are acknowledged at.
    pub listen_have: u64,
}

/// A client session.
pub struct Session {
    /// The hub-minted id.
    pub id: Arc<str>,
    /// The principal it is bound to (`identify::Principal::binding`; `""` anonymous): a request
    /// by anyone else does not find it.
    pub principal: Arc<str>,
    /// Negotiated revision with the client.
    pub version: &'static str,
    /// The client's `capabilities` object, as sent (forwarded to upstreams unchanged).
    pub client_capabilities: Box<serde_json::value::RawValue>,
    /// The client's `clientInfo` object, as sent.
    pub client_info: Box<serde_json::value::RawValue>,
    /// A hub-held session that carries 2026-07-28 (stateless) clients' requests to the
    /// upstreams (one per principal and declared capabilities): it prefers modern upstream
    /// sessions, and is never named to a client.
    pub modern: bool,
    /// Sessions whose clients declared the same capabilities see the same upstream lists
    /// ([`crate::catalog`]).
    pub caps_class: u64,
    created: Instant,
    created_unix_ms: u64,
    last_seen_ms: AtomicU64,
    closed: AtomicBool,
    /// Woken when the session closes, and when its set of upstream sessions changes.
    pub changed: Notify,
    next_stream: AtomicU64,
    next_pending: AtomicU64,
    /// Mutable state; never hold across `.await`.
    pub state: Mutex<SessionState>,
}

impl Session {
    /// A new anonymous session for a client that sent these capabilities and info, with a
    /// fresh id.
    pub fn new(
        version: &'static str,
        client_capabilities: Box<serde_json::value::RawValue>,
        client_info: Box<serde_json::value::RawValue>,
        upstreams: usize,
    ) -> Arc<Self> {
        Self::with_id(
            mint_session_id(),
            "",
            version,
            client_capabilities,
            client_info,
            upstreams,
        )
    }

    /// A session with a given id, bound to `principal`: one a hub replica minted for itself,
    /// or one taken over from the shared store.
    pub fn with_id(
        id: Arc<str>,
        principal: &str,
        version: &'static str,
        client_capabilities: Box<serde_json::value::RawValue>,
        client_info: Box<serde_json::value::RawValue>,
        upstreams: usize,
    ) -> Arc<Self> {
        Self::build(
            id,
            principal,
            version,
            client_capabilities,
            client_info,
            upstreams,
            false,
        )
    }

    /// The hub-held session that carries a 2026-07-28 client's requests (see
    /// [`Session::modern`]): legacy upstreams get the hub's own sessions under it (at the newest
    /// legacy revision), modern upstreams are reached statelessly.
    pub fn stateless(
        id: Arc<str>,
        principal: &str,
        client_capabilities: Box<serde_json::value::RawValue>,
        client_info: Box<serde_json::value::RawValue>,
        upstreams: usize,
    ) -> Arc<Self> {
        Self::build(
            id,
            principal,
            mcp_wire::mcp::V2025_11_25,
            client_capabilities,
            client_info,
            upstreams,
            true,
        )
    }

    fn build(
        id: Arc<str>,
        principal: &str,
        version: &'static str,
        client_capabilities: Box<serde_json::value::RawValue>,
        client_info: Box<serde_json::value::RawValue>,
        upstreams: usize,
        modern: bool,
    ) -> Arc<Self> {
        let state = SessionState {
            upstreams: vec![None; upstreams],
            opening: vec![false; upstreams],
            upstream_get_ids: vec![None; upstreams],
            ..SessionState::default()
        };
        Arc::new(Session {
            id,
            principal: Arc::from(principal),
            modern,
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            version,
            caps_class: crate::ring::hash(client_capabilities.get().as_bytes()),
            client_capabilities,
            client_info,
            created: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            changed: Notify::new(),
            next_stream: AtomicU64::new(1),
            next_pending: AtomicU64::new(1),
            state: Mutex::new(state),
        })
    }

    /// When the session was created (Unix ms; kept in the store record).
    pub fn created_unix_ms(&self) -> u64 {
        self.created_unix_ms
    }

    /// Records activity (requests, and open streams while they live).
    pub fn touch(&self) {
        let ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self, now: Instant) -> Duration {
        let seen = self.created + Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(seen)
    }

    /// Marks the session ended and wakes its streams.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Whether DELETE or expiry ended this session.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether the client declared a top-level capability (`sampling`, `elicitation`, `roots`).
    pub fn client_has(&self, capability: &str) -> bool {
        serde_json::from_str::<HashMap<&str, &serde_json::value::RawValue>>(
            self.client_capabilities.get(),
        )
        .is_ok_and(|m| m.contains_key(capability))
    }

    /// Opens a new replay stream (`standalone` = the GET stream, else a POST answer).
    pub fn open_stream(&self, keep: usize, standalone: bool) -> Arc<ReplayStream> {
        let no = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let mut s = ReplayStream::new(no, keep);
        s.standalone = standalone;
        let s = Arc::new(s);
        let mut st = self.state.lock();
        // Keep the newest streams only: a finished stream's events are worth keeping only until
        // the client had a chance to resume it.
        if st.streams.len() >= 32 {
            if let Some(oldest) = st
                .streams
                .iter()
                .filter(|(_, s)| s.is_done())
                .map(|(k, _)| *k)
                .min()
            {
                st.streams.remove(&oldest);
            }
        }
        st.streams.insert(no, s.clone());
        s
    }

    /// Mints an id for a server→client request and records where its answer must go. At
    /// [`MAX_PENDING`] the oldest waiting request is given up and returned, so the caller can
    /// tell its upstream.
    pub fn mint_pending(&self, p: PendingRequest) -> (Box<str>, Option<PendingRequest>) {
        let n = self.next_pending.fetch_add(1, Ordering::Relaxed);
        let id: Box<str> = format!("\"mg-{n}\"").into();
        let mut st = self.state.lock();
        let evicted = if st.pending.len() >= MAX_PENDING {
            let oldest = st
                .pending
                .iter()
                .min_by_key(|(_, p)| p.created)
                .map(|(k, _)| k.clone());
            oldest.and_then(|k| st.pending.remove(&k))
        } else {
            None
        };
        st.pending.insert(id.clone(), p);
        (id, evicted)
    }

    /// Parks an upstream answer (at [`MAX_PENDING`], the oldest is dropped; the housekeeping
    /// drops those older than the pending timeout).
    pub fn park(&self, token: u64, s: Suspended) {
        let mut st = self.state.lock();
        if st.suspended.len() >= MAX_PENDING {
            if let Some(k) = st
                .suspended
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| *k)
            {
                st.suspended.remove(&k);
            }
        }
        st.suspended.insert(token, s);
    }

    /// Drops parked answers older than `max_age`.
    pub fn expire_parked(&self, max_age: Duration) {
        self.state
            .lock()
            .suspended
            .retain(|_, s| s.created.elapsed() < max_age);
    }

    /// Mints an id for a request the hub sends the client itself; the client's answer (the
    /// whole JSON-RPC response) arrives on the receiver.
    pub fn mint_waiter(&self) -> (Box<str>, tokio::sync::oneshot::Receiver<Bytes>) {
        let n = self.next_pending.fetch_add(1, Ordering::Relaxed);
        let id: Box<str> = format!("\"mg-{n}\"").into();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut st = self.state.lock();
        if st.input_waiters.len() >= MAX_PENDING {
            // Bounded like pending requests: the oldest waiter is given up (its round fails).
            if let Some(k) = st.input_waiters.keys().next().cloned() {
                st.input_waiters.remove(&k);
            }
        }
        st.input_waiters.insert(id.clone(), tx);
        (id, rx)
    }

    /// Removes and returns the server→client requests waiting `max_age` or longer.
    pub fn expire_pending(&self, max_age: Duration) -> Vec<PendingRequest> {
        let mut st = self.state.lock();
        if st.pending.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        let old: Vec<Box<str>> = st
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.created) >= max_age)
            .map(|(k, _)| k.clone())
            .collect();
        old.iter().filter_map(|k| st.pending.remove(k)).collect()
    }
}

/// The events of one SSE stream, kept for `Last-Event-ID` replay (bounded).
pub struct ReplayStream {
    /// Stream number, unique in the session; event ids are `<stream>_<seq>`.
    pub no: u64,
    /// Whether this is a standalone GET stream (resuming it continues live after the replay).
    pub standalone: bool,
    keep: usize,
    next_seq: AtomicU64,
    inner: Mutex<VecDeque<(u64, Bytes)>>,
    done: AtomicBool,
    /// Woken on every new event and at the end.
    pub notify: Notify,
}

impl ReplayStream {
    fn new(no: u64, keep: usize) -> Self {
        Self {
            no,
            standalone: false,
            keep,
            next_seq: AtomicU64::new(1),
            inner: Mutex::new(VecDeque::new()),
            done: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    /// The next event id for this stream (and reserves it).
    pub fn next_id(&self) -> (u64, String) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        (seq, format!("{}_{}", self.no, seq))
    }

    /// Records an encoded event frame.
    pub fn push(&self, seq: u64, frame: Bytes) {
        let mut q = self.inner.lock();
        if q.len() >= self.keep {
            q.pop_front();
        }
        q.push_back((seq, frame));
        drop(q);
        self.notify.notify_waiters();
    }

    /// Marks the stream complete.
    pub fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether the stream has ended.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Frames after `seq`, oldest first.
    pub fn after(&self, seq: u64) -> Vec<(u64, Bytes)> {
        self.inner
            .lock()
            .iter()
            .filter(|(s, _)| *s > seq)
            .cloned()
            .collect()
    }
}

/// Parses a hub event id `<stream>_<seq>`.
pub fn parse_event_id(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.trim().split_once('_')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_random_visible_ascii() {
        let a = mint_session_id();
        let b = mint_session_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| (0x21..=0x7e).contains(&c)));
    }

    fn session() -> Arc<Session> {
        let caps = serde_json::value::RawValue::from_string("{}".into()).unwrap();
        let info = serde_json::value::RawValue::from_string("{}".into()).unwrap();
        Session::new("2025-11-25", caps, info, 1)
    }

    fn pending(created: Instant) -> PendingRequest {
        PendingRequest {
            upstream: 0,
            original_id: "1".into(),
            generation: 1,
            created,
        }
    }

    #[test]
    fn pending_requests_are_bounded_in_number() {
        let s = session();
        let mut evicted = 0;
        for _ in 0..MAX_PENDING * 3 {
            let (_, e) = s.mint_pending(pending(Instant::now()));
            evicted += usize::from(e.is_some());
        }
        assert_eq!(s.state.lock().pending.len(), MAX_PENDING);
        assert_eq!(evicted, MAX_PENDING * 2);
    }

    #[test]
    fn pending_requests_expire_by_age() {
        let s = session();
        let (id, _) = s.mint_pending(pending(Instant::now()));
        assert!(s.expire_pending(Duration::from_secs(3600)).is_empty());
        assert!(s.state.lock().pending.contains_key(&id));
        let gone = s.expire_pending(Duration::ZERO);
        assert_eq!(gone.len(), 1);
        assert!(s.state.lock().pending.is_empty());
    }

    #[test]
    fn replay_is_bounded_and_ordered() {
        let s = ReplayStream::new(3, 2);
        for _ in 0..3 {
            let (seq, id) = s.next_id();
            s.push(seq, Bytes::from(id));
        }
        let after: Vec<_> = s.after(0).into_iter().map(|(q, _)| q).collect();
        assert_eq!(after, vec![2, 3]);
        assert_eq!(s.after(2).len(), 1);
        assert_eq!(parse_event_id("3_2"), Some((3, 2)));
        assert_eq!(parse_event_id("x"), None);
    }
}
