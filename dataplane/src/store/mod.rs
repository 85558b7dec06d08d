//! The shared session store: what a hub replica needs to take over a session whose owner died
//! (DESIGN.md §2, §6).
//!
//! Off the request path. The owner of a session writes a [`SessionRecord`] when the session is
//! created or changes (fire-and-forget [`SessionStore::put`]) and removes it on `DELETE` or
//! expiry ([`SessionStore::delete`]); another replica that receives a request for a session it
//! does not hold reads it with [`SessionStore::get`] and rebuilds the session (replaying the
//! upstream handshakes). Calls never block a monoio worker: writes are queued, reads return a
//! [`StoreGet`] future that any executor can poll.
//!
//! Backends, picked by [`open`] from a [`StoreConfig`]:
//! - [`memory`]: the embedded default for one hub, an in-process map with idle expiry;
//! - [`redis`]: Redis or Valkey (standalone or cluster) for several hubs, on its own thread with
//!   a small tokio runtime; values are sealed with AES-256-GCM and keyed by an HMAC of the session
//!   id and principal ([`seal`]), so the store never holds a raw session id.
//!
//! Records expire after [`StoreConfig::ttl`] without a `put`: an owner should re-put a live
//! session at least once per half TTL.

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
pub mod seal;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use seal::{generate_key_file, KeyError, KeySource, Keyring, OpenError};

/// What a replica needs to continue a session it did not create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Who owns the session (the authenticated principal); reads under another principal find
    /// nothing.
    pub principal: String,
    /// The revision negotiated with the client.
    pub version: String,
    /// The client's `clientInfo` object, raw JSON text.
    pub client_info: String,
    /// The client's `capabilities` object, raw JSON text.
    pub client_capabilities: String,
    /// The upstream sessions opened so far.
    pub upstreams: Vec<UpstreamRecord>,
    /// Resource subscriptions `(upstream name, uri)`, replayed on takeover.
    pub subscriptions: Vec<(String, String)>,
    /// Last `logging/setLevel` level, replayed on takeover.
    pub log_level: Option<String>,
    /// When the session was created (Unix ms).
    pub created_unix_ms: u64,
}

/// One upstream session of a [`SessionRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamRecord {
    /// The upstream's name.
    pub upstream: String,
    /// The replica chosen for this session (address or name), kept while it is healthy.
    pub replica: String,
    /// The upstream's `Mcp-Session-Id`, if it uses sessions.
    pub session_id: Option<String>,
    /// The revision the upstream negotiated.
    pub version: String,
    /// The upstream's declared capabilities, raw JSON text (empty in older records).
    #[serde(default)]
    pub capabilities: String,
}

/// Which backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// In-process map (one hub).
    Memory,
    /// Redis or Valkey.
    Redis {
        /// `redis://host:port/db` (`rediss://` is refused until a TLS feature is built in).
        url: String,
        /// Cluster nodes (`redis://host:port`); non-empty selects cluster mode and `url` is then
        /// ignored.
        cluster: Vec<String>,
    },
}

/// The store settings, as mapped from the config file by its owner.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Which backend.
    pub kind: StoreKind,
    /// Idle TTL: a record not re-put for this long is gone.
    pub ttl: Duration,
    /// The sealing and index keys (read by the Redis backend only).
    pub keys: KeySource,
}

/// A store that cannot be opened or answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable (or did not answer in time); the caller treats the session as
    /// not recoverable for now.
    #[error("session store is down: {0}")]
    Down(String),
    /// The request queue to the store thread is full.
    #[error("session store queue is full")]
    Busy,
    /// The backend answered with an error (not an outage).
    #[error("session store error: {0}")]
    Backend(String),
    /// The configuration or key source is unusable (startup only).
    #[error("session store config: {0}")]
    Config(String),
}

impl From<KeyError> for StoreError {
    fn from(e: KeyError) -> Self {
        StoreError::Config(e.to_string())
    }
}

/// Health and counters of a store, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStatus {
    /// Whether the backend is reachable right now.
    pub up: bool,
    /// Writes (puts and deletes) the backend acknowledged.
    pub writes_ok: u64,
    /// Writes dropped: queue full, store down, or the backend failed them.
    pub writes_dropped: u64,
    /// Reads that failed (down, timeout, backend error, queue full).
    pub read_errors: u64,
    /// Records read that failed to open (tampered, unknown key id, wrong key) or decode.
    pub decrypt_failures: u64,
}

/// The session store. Every method returns without blocking: safe to call from a monoio task.
pub trait SessionStore: Send + Sync {
    /// Writes (or replaces) the record of session `id` owned by `principal`, and restarts its
    /// idle TTL. Fire-and-forget: when the queue is full or the store is down the write is
    /// dropped and counted in [`StoreStatus::writes_dropped`].
    fn put(&self, id: &str, principal: &str, record: &SessionRecord);
    /// Removes the record of session `id` owned by `principal`. Fire-and-forget, as `put`.
    fn delete(&self, id: &str, principal: &str);
    /// Reads the record of session `id` owned by `principal`. Resolves to `Ok(None)` when there
    /// is none, and also when the stored value fails to open (a `warn!` says why); to
    /// `Err(StoreError::Down)` within a bounded time when the backend is unreachable.
    fn get(&self, id: &str, principal: &str) -> StoreGet;
    /// Reachability and counters.
    fn status(&self) -> StoreStatus;
}

/// The answer of [`SessionStore::get`].
pub type GetResult = Result<Option<SessionRecord>, StoreError>;

/// A pending [`SessionStore::get`]: a future that any executor (monoio or tokio) can poll; it
/// needs no timer of its own because the store bounds every read.
#[must_use = "a get does nothing useful unless awaited"]
pub struct StoreGet(GetInner);

enum GetInner {
    Ready(Option<GetResult>),
    Wait(oneshot::Receiver<GetResult>),
}

impl StoreGet {
    /// An already known answer.
    pub fn ready(r: GetResult) -> Self {
        StoreGet(GetInner::Ready(Some(r)))
    }
    /// An answer that the store thread will send.
    pub fn wait(rx: oneshot::Receiver<GetResult>) -> Self {
        StoreGet(GetInner::Wait(rx))
    }
}

impl Future for StoreGet {
    type Output = GetResult;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<GetResult> {
        match &mut self.0 {
            GetInner::Ready(r) => Poll::Ready(
                r.take()
                    .unwrap_or_else(|| Err(StoreError::Backend("get polled after done".into()))),
            ),
            GetInner::Wait(rx) => Pin::new(rx).poll(cx).map(|r| {
                r.unwrap_or_else(|_| Err(StoreError::Down("session store thread is gone".into())))
            }),
        }
    }
}

/// Counters shared by the backends.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) writes_ok: AtomicU64,
    pub(crate) writes_dropped: AtomicU64,
    pub(crate) read_errors: AtomicU64,
    pub(crate) decrypt_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn status(&self, up: bool) -> StoreStatus {
        StoreStatus {
            up,
            writes_ok: self.writes_ok.load(Ordering::Relaxed),
            writes_dropped: self.writes_dropped.load(Ordering::Relaxed),
            read_errors: self.read_errors.load(Ordering::Relaxed),
            decrypt_failures: self.decrypt_failures.load(Ordering::Relaxed),
        }
    }
}

/// Opens the configured store. For Redis this loads the keys, starts the `meshgate-store` thread
/// and waits (at most about a second) for the first connection; an unreachable Redis is not an
/// error here: the store starts down and reconnects in the background.
///
/// # Errors
/// [`StoreError::Config`] for an unusable key source, URL or node list, or when the store thread
/// cannot start.
pub fn open(cfg: &StoreConfig) -> Result<Arc<dyn SessionStore>, StoreError> {
    if cfg.ttl.is_zero() {
        return Err(StoreError::Config("ttl must be positive".into()));
    }
    match &cfg.kind {
        StoreKind::Memory => Ok(Arc::new(memory::MemoryStore::new(cfg.ttl))),
        #[cfg(not(feature = "redis"))]
        StoreKind::Redis { .. } => Err(StoreError::Config(
            "this meshgate was built without the `redis` feature; rebuild with it to share sessions through Redis".into(),
        )),
        #[cfg(feature = "redis")]
        StoreKind::Redis { url, cluster } => {
            let keys = Keyring::load(&cfg.keys)?;
            let target = if cluster.is_empty() {
                self::redis::Target::Standalone(url.clone())
            } else {
                self::redis::Target::Cluster(cluster.clone())
            };
            Ok(Arc::new(self::redis::RedisStore::start(
                target,
                cfg.ttl,
                keys,
                self::redis::Tuning::default(),
            )?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_json_round_trip() {
        let r = SessionRecord {
            principal: "alice".into(),
            version: "2025-06-18".into(),
            client_info: r#"{"name":"x"}"#.into(),
            client_capabilities: "{}".into(),
            upstreams: vec![UpstreamRecord {
                upstream: "fs".into(),
                replica: "10.0.0.1:80".into(),
                session_id: Some("u1".into()),
                version: "2025-03-26".into(),
                capabilities: r#"{"tools":{}}"#.into(),
            }],
            subscriptions: vec![("fs".into(), "file:///a".into())],
            log_level: Some("debug".into()),
            created_unix_ms: 1,
        };
        let j = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<SessionRecord>(&j).unwrap(), r);
    }

    #[cfg(feature = "redis")]
    #[test]
    fn open_refuses_zero_ttl_and_bad_keys() {
        let mem = StoreConfig {
            kind: StoreKind::Memory,
            ttl: Duration::ZERO,
            keys: KeySource::Inline(String::new()),
        };
        assert!(open(&mem).is_err());
        let red = StoreConfig {
            kind: StoreKind::Redis {
                url: "redis://127.0.0.1:1".into(),
                cluster: vec![],
            },
            ttl: Duration::from_secs(1),
            keys: KeySource::Inline("k1:short\n".into()),
        };
        let err = open(&red).err().unwrap().to_string();
        assert!(err.contains("inline keys line 1"), "{err}");
    }
}
