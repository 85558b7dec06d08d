//! Agent-side MCP sessions: one per `initialize` the surface answered, keyed by the
//! `Mcp-Session-Id` the agent minted.
//!
//! A session records which server it belongs to, its standalone GET stream (for notifications not
//! tied to a request), its last activity (for idle reaping) and, in per-session stdio mode, the
//! process that serves it. Owned by [`crate::Surface`]; referenced weakly by the multiplexers.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;

use crate::body::Sink;
use crate::mux::Mux;

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
    get_stream: Mutex<Option<Sink>>,
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
            get_stream: Mutex::new(None),
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

    /// Installs a new standalone GET stream (replacing an older one).
    pub fn set_get_stream(&self, sink: Sink) {
        *lock(&self.get_stream) = Some(sink);
    }

    /// Whether a GET stream is open.
    pub fn has_get_stream(&self) -> bool {
        lock(&self.get_stream)
            .as_ref()
            .is_some_and(|s| !s.is_closed())
    }

    /// Sends a message on the GET stream; `false` if there is none (or it closed).
    pub fn send_standalone(&self, msg: &Value) -> bool {
        let mut g = lock(&self.get_stream);
        match g.as_ref() {
            Some(s) if s.send(msg) => true,
            Some(_) => {
                *g = None;
                false
            }
            None => false,
        }
    }

    /// Ends the GET stream (session deleted).
    pub fn close_streams(&self) {
        *lock(&self.get_stream) = None;
    }
}
