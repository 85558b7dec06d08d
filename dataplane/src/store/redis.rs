//! The Redis/Valkey session store, for several hub replicas (standalone or cluster).
//!
//! Off the request path, behind [`super::SessionStore`]. The workers run on monoio, the `redis`
//! client on tokio, so the client lives on its own `meshgate-store` thread with a current-thread
//! tokio runtime, and the two sides meet through channels that work across runtimes:
//!
//! ```text
//! worker (monoio) --put/delete/get--> bounded mpsc (4096) --> store thread: seal/open, SET/GET/DEL
//!        ^------------------- oneshot (get answers) -------------------'
//! ```
//!
//! - `put`/`delete` serialise on the caller (about a microsecond) and `try_send`; a full queue or
//!   a store known to be down drops the write and counts it. Values are sealed on the store
//!   thread ([`super::seal`]) and written with `SET key value PX ttl`.
//! - `get` answers `Down` at once while the store is down, else queues and returns a future that
//!   the store thread resolves within the operation timeout (500 ms by default).
//! - Reachability: any connection-level failure or timeout marks the store down (one `warn!`); a
//!   background task then pings (or reconnects from scratch) every 250 ms and marks it up again
//!   (one `info!`). While up, the `ConnectionManager` (standalone) or the cluster connection also
//!   reconnects on its own after a blip.

// `tokio::spawn` is banned in the dataplane because workers run monoio; this module runs on its
// own dedicated tokio thread, where spawning onto that runtime is exactly right.
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Client, Cmd, FromRedisValue, RedisError, RedisResult};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::seal::Keyring;
use super::{Counters, GetResult, SessionRecord, SessionStore, StoreError, StoreGet, StoreStatus};

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server (or a proxy): `redis://host:port/db`.
    Standalone(String),
    /// Cluster seed nodes: `redis://host:port` each.
    Cluster(Vec<String>),
}

/// Queue and timing knobs (defaults suit a local or same-zone Redis).
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Requests that may wait for the store thread; beyond it writes drop and reads fail `Busy`.
    pub queue: usize,
    /// Bound on one command (a read answers `Down` after it).
    pub op_timeout: Duration,
    /// Bound on one connection attempt.
    pub connect_timeout: Duration,
    /// How often a down store tries to come back.
    pub retry_every: Duration,
    /// How long [`RedisStore::start`] waits for the first connection.
    pub first_connect_wait: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            queue: 4096,
            op_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            retry_every: Duration::from_millis(250),
            first_connect_wait: Duration::from_secs(2),
        }
    }
}

// === state ===

const STARTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// What the callers and the store thread share.
struct Shared {
    state: AtomicU8,
    counters: Counters,
    keys: Keyring,
    ttl_ms: u64,
    tuning: Tuning,
    /// The live connection; cloned out per request, never held across an `.await`.
    conn: Mutex<Option<Conn>>,
}

impl Shared {
    fn is_up(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    /// Marks the store down; logs only on the transition.
    fn set_down(&self, why: &str) {
        if self.state.swap(DOWN, Ordering::AcqRel) != DOWN {
            tracing::warn!(
                reason = why,
                "session store unreachable: writes are dropped and reads fail until it is back"
            );
        }
    }

    /// Marks the store up; logs only on the transition.
    fn set_up(&self) {
        match self.state.swap(UP, Ordering::AcqRel) {
            UP => {}
            DOWN => tracing::info!("session store reachable again"),
            _ => tracing::info!("session store connected"),
        }
    }
}

/// Whether an error means the store cannot be reached (as opposed to a reply error).
fn is_outage(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || e.is_cluster_error()
}

// === connections ===

/// A built client, validated before the thread starts.
#[derive(Clone)]
enum Backend {
    Single(Client),
    Cluster(ClusterClient),
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn run<T: FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

impl Backend {
    fn build(target: &Target, t: &Tuning) -> Result<Backend, StoreError> {
        match target {
            Target::Standalone(url) => {
                if url.starts_with("rediss://") {
                    return Err(StoreError::Config(format!(
                        "{url}: TLS to Redis (rediss://) is not built into this hub yet"
                    )));
                }
                Client::open(url.as_str())
                    .map(Backend::Single)
                    .map_err(|e| StoreError::Config(format!("redis url {url:?}: {e}")))
            }
            Target::Cluster(nodes) => {
                if let Some(n) = nodes.iter().find(|n| n.starts_with("rediss://")) {
                    return Err(StoreError::Config(format!(
                        "{n}: TLS to Redis (rediss://) is not built into this hub yet"
                    )));
                }
                ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(t.connect_timeout)
                    .response_timeout(t.op_timeout)
                    .retries(1)
                    .build()
                    .map(Backend::Cluster)
                    .map_err(|e| StoreError::Config(format!("redis cluster {nodes:?}: {e}")))
            }
        }
    }

    /// One bounded attempt at a fresh, verified connection.
    async fn connect(&self, t: &Tuning) -> Result<Conn, String> {
        let attempt = async {
            let mut conn = match self {
                Backend::Single(c) => {
                    let cfg = ConnectionManagerConfig::new()
                        .set_connection_timeout(t.connect_timeout)
                        .set_response_timeout(t.op_timeout)
                        .set_number_of_retries(1)
                        .set_factor(50)
                        .set_max_delay(200);
                    Conn::Single(ConnectionManager::new_with_config(c.clone(), cfg).await?)
                }
                Backend::Cluster(c) => Conn::Cluster(c.get_async_connection().await?),
            };
            conn.run::<()>(&::redis::cmd("PING")).await?;
            Ok::<_, RedisError>(conn)
        };
        match tokio::time::timeout(t.connect_timeout * 2, attempt).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no connection within {:?}", t.connect_timeout * 2)),
        }
    }
}

// === requests ===

enum Req {
    Put {
        id: String,
        principal: String,
        json: Vec<u8>,
    },
    Delete {
        id: String,
        principal: String,
    },
    Get {
        id: String,
        principal: String,
        reply: oneshot::Sender<GetResult>,
    },
}

/// The Redis-backed store; cheap to share behind an `Arc`.
pub struct RedisStore {
    tx: mpsc::Sender<Req>,
    shared: Arc<Shared>,
}

impl RedisStore {
    /// Validates the target, starts the `meshgate-store` thread and waits up to
    /// [`Tuning::first_connect_wait`] for the first connection. Call at startup, not from a
    /// worker task (it may block that long). An unreachable Redis is not an error: the store
    /// starts down and keeps trying.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a bad URL or node list, or when the thread cannot start.
    pub fn start(
        target: Target,
        ttl: Duration,
        keys: Keyring,
        tuning: Tuning,
    ) -> Result<RedisStore, StoreError> {
        let backend = Backend::build(&target, &tuning)?;
        let (tx, rx) = mpsc::channel(tuning.queue.max(1));
        let shared = Arc::new(Shared {
            state: AtomicU8::new(STARTING),
            counters: Counters::default(),
            keys,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            tuning,
            conn: Mutex::new(None),
        });
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("meshgate-store".into())
            .spawn(move || store_thread(backend, sh, rx, first_tx))
            .map_err(|e| StoreError::Config(format!("cannot start the store thread: {e}")))?;
        // Either outcome is fine: connected, or down and retrying in the background.
        let _ = first_rx.recv_timeout(shared.tuning.first_connect_wait);
        Ok(RedisStore { tx, shared })
    }

    fn drop_write(&self) {
        Counters::bump(&self.shared.counters.writes_dropped);
    }
}

impl SessionStore for RedisStore {
    fn put(&self, id: &str, principal: &str, record: &SessionRecord) {
        if !self.shared.is_up() {
            return self.drop_write();
        }
        let json = match serde_json::to_vec(record) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "session record does not serialise; not stored");
                return self.drop_write();
            }
        };
        let req = Req::Put {
            id: id.to_string(),
            principal: principal.to_string(),
            json,
        };
        if self.tx.try_send(req).is_err() {
            self.drop_write();
        }
    }

    fn delete(&self, id: &str, principal: &str) {
        if !self.shared.is_up() {
            return self.drop_write();
        }
        let req = Req::Delete {
            id: id.to_string(),
            principal: principal.to_string(),
        };
        if self.tx.try_send(req).is_err() {
            self.drop_write();
        }
    }

    fn get(&self, id: &str, principal: &str) -> StoreGet {
        if !self.shared.is_up() {
            Counters::bump(&self.shared.counters.read_errors);
            return StoreGet::ready(Err(StoreError::Down("unreachable".into())));
        }
        let (reply, rx) = oneshot::channel();
        let req = Req::Get {
            id: id.to_string(),
            principal: principal.to_string(),
            reply,
        };
        match self.tx.try_send(req) {
            Ok(()) => StoreGet::wait(rx),
            Err(mpsc::error::TrySendError::Full(_)) => {
                Counters::bump(&self.shared.counters.read_errors);
                StoreGet::ready(Err(StoreError::Busy))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Counters::bump(&self.shared.counters.read_errors);
                StoreGet::ready(Err(StoreError::Down("store thread is gone".into())))
            }
        }
    }

    fn status(&self) -> StoreStatus {
        self.shared.counters.status(self.shared.is_up())
    }
}

// === the store thread ===

fn store_thread(
    backend: Backend,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Req>,
    first: std::sync::mpsc::Sender<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            shared.set_down(&format!("cannot build the store runtime: {e}"));
            return;
        }
    };
    rt.block_on(async move {
        match backend.connect(&shared.tuning).await {
            Ok(c) => {
                *shared.conn.lock() = Some(c);
                shared.set_up();
            }
            Err(e) => shared.set_down(&e),
        }
        let _ = first.send(());
        tokio::spawn(keep_alive(backend, shared.clone()));
        // Ends when every `RedisStore` handle is dropped; the runtime then drops its tasks.
        while let Some(req) = rx.recv().await {
            let conn = shared.conn.lock().clone();
            match conn {
                Some(conn) if shared.is_up() => {
                    // One task per request: the multiplexed connection pipelines them.
                    tokio::spawn(handle(conn, shared.clone(), req));
                }
                _ => refuse(&shared, req),
            }
        }
    });
}

/// Brings a down store back: ping the current connection, else build a fresh one.
async fn keep_alive(backend: Backend, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.tuning.retry_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if shared.is_up() {
            continue;
        }
        let current = shared.conn.lock().clone();
        if let Some(mut c) = current {
            let cmd = ::redis::cmd("PING");
            let ping = c.run::<()>(&cmd);
            if let Ok(Ok(())) = tokio::time::timeout(shared.tuning.op_timeout, ping).await {
                shared.set_up();
                continue;
            }
        }
        if let Ok(c) = backend.connect(&shared.tuning).await {
            *shared.conn.lock() = Some(c);
            shared.set_up();
        }
    }
}

/// A request that arrived while the store is down (it was queued just before).
fn refuse(shared: &Shared, req: Req) {
    match req {
        Req::Put { .. } | Req::Delete { .. } => Counters::bump(&shared.counters.writes_dropped),
        Req::Get { reply, .. } => {
            Counters::bump(&shared.counters.read_errors);
            let _ = reply.send(Err(StoreError::Down("unreachable".into())));
        }
    }
}

/// Runs `cmd` within the operation timeout; an outage marks the store down.
async fn bounded<T: FromRedisValue>(
    conn: &mut Conn,
    shared: &Shared,
    cmd: &Cmd,
) -> Result<T, StoreError> {
    match tokio::time::timeout(shared.tuning.op_timeout, conn.run::<T>(cmd)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if is_outage(&e) => {
            let why = e.to_string();
            shared.set_down(&why);
            Err(StoreError::Down(why))
        }
        Ok(Err(e)) => Err(StoreError::Backend(e.to_string())),
        Err(_) => {
            let why = format!("no answer within {:?}", shared.tuning.op_timeout);
            shared.set_down(&why);
            Err(StoreError::Down(why))
        }
    }
}

async fn handle(mut conn: Conn, shared: Arc<Shared>, req: Req) {
    let c = &shared.counters;
    match req {
        Req::Put {
            id,
            principal,
            json,
        } => {
            let key = shared.keys.store_key(&id, &principal);
            let value = shared.keys.seal(&key, &json);
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(&key).arg(value).arg("PX").arg(shared.ttl_ms);
            match bounded::<()>(&mut conn, &shared, &cmd).await {
                Ok(()) => Counters::bump(&c.writes_ok),
                Err(_) => Counters::bump(&c.writes_dropped),
            }
        }
        Req::Delete { id, principal } => {
            let key = shared.keys.store_key(&id, &principal);
            let mut cmd = ::redis::cmd("DEL");
            cmd.arg(&key);
            match bounded::<i64>(&mut conn, &shared, &cmd).await {
                Ok(_) => Counters::bump(&c.writes_ok),
                Err(_) => Counters::bump(&c.writes_dropped),
            }
        }
        Req::Get {
            id,
            principal,
            reply,
        } => {
            let key = shared.keys.store_key(&id, &principal);
            let mut cmd = ::redis::cmd("GET");
            cmd.arg(&key);
            let res = match bounded::<Option<Vec<u8>>>(&mut conn, &shared, &cmd).await {
                Ok(None) => Ok(None),
                Ok(Some(raw)) => Ok(open_record(&shared, &key, &raw)),
                Err(e) => {
                    Counters::bump(&c.read_errors);
                    Err(e)
                }
            };
            // The caller may have given up; nothing to do then.
            let _ = reply.send(res);
        }
    }
}

/// Opens and decodes a stored value; failures are logged, counted and read as absent.
fn open_record(shared: &Shared, key: &str, raw: &[u8]) -> Option<SessionRecord> {
    let fail = |why: &dyn std::fmt::Display| {
        Counters::bump(&shared.counters.decrypt_failures);
        tracing::warn!(
            store_key = key,
            reason = %why,
            "stored session record rejected; treated as absent"
        );
        None
    };
    let text = match std::str::from_utf8(raw) {
        Ok(t) => t,
        Err(_) => return fail(&super::OpenError::Malformed),
    };
    let plain = match shared.keys.open(key, text) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    match serde_json::from_slice(&plain) {
        Ok(r) => Some(r),
        Err(e) => fail(&format_args!("sealed record does not decode: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rediss_and_bad_urls_are_config_errors() {
        let t = Tuning::default();
        for target in [
            Target::Standalone("rediss://h:1".into()),
            Target::Standalone("http://h:1".into()),
            Target::Cluster(vec!["rediss://h:1".into()]),
        ] {
            assert!(
                matches!(Backend::build(&target, &t), Err(StoreError::Config(_))),
                "{target:?}"
            );
        }
        assert!(Backend::build(&Target::Standalone("redis://127.0.0.1:6379/0".into()), &t).is_ok());
    }

    #[test]
    fn unreachable_redis_starts_down_and_answers_at_once() {
        let keys = Keyring::parse(
            "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nindex:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
            "t",
        )
        .unwrap();
        // Port 1 on loopback: refused at once.
        let s = RedisStore::start(
            Target::Standalone("redis://127.0.0.1:1".into()),
            Duration::from_secs(5),
            keys,
            Tuning::default(),
        )
        .unwrap();
        assert!(!s.status().up);
        let rec = SessionRecord {
            principal: "p".into(),
            version: "v".into(),
            client_info: "{}".into(),
            client_capabilities: "{}".into(),
            upstreams: vec![],
            subscriptions: vec![],
            log_level: None,
            created_unix_ms: 0,
        };
        s.put("a", "p", &rec);
        s.delete("a", "p");
        assert_eq!(s.status().writes_dropped, 2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(s.get("a", "p"));
        assert!(matches!(r, Err(StoreError::Down(_))), "{r:?}");
        assert_eq!(s.status().read_errors, 1);
    }
}
