//! Supervised stdio servers in their two sharing modes.
//!
//! - `SharedServer`: one process for every session. A supervisor task starts it (eagerly at
//!   boot), restarts it with capped exponential backoff when it dies, stops it after
//!   `idle_timeout` without sessions and restarts it lazily on the next use. Callers wait
//!   (bounded) while it is starting and get the start failure's reason at once if it cannot start.
//! - `PerSessionServer`: one process per session, taken from a pool of `prewarm` processes that
//!   were spawned and initialized ahead of time; a background task refills the pool. Closing the
//!   session (DELETE, idle reap) kills its process.
//!
//! Both hand requests to a `Mux`; sits between [`crate::Surface`] and [`crate::supervisor`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use crate::body::Sink;
use crate::config::StdioConfig;
use crate::mux::{CallError, Mux};
use crate::session::{lock, Session};
use crate::supervisor::Backoff;

/// How long a child may take to spawn and answer `initialize`.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
enum Status {
    Idle,
    Starting,
    Ready(Arc<Mux>),
    Failed(String),
}

/// A stdio server shared by all sessions.
#[derive(Debug)]
pub(crate) struct SharedServer {
    name: Arc<str>,
    cfg: StdioConfig,
    status: watch::Sender<Status>,
    demand: Notify,
    sessions: Mutex<HashMap<String, Weak<Session>>>,
    last_active: Mutex<Instant>,
}

impl SharedServer {
    /// Creates the server and its supervisor task (which starts the process right away).
    pub(crate) fn new(name: Arc<str>, cfg: StdioConfig) -> Arc<Self> {
        let (status, _) = watch::channel(Status::Starting);
        let s = Arc::new(SharedServer {
            name,
            cfg,
            status,
            demand: Notify::new(),
            sessions: Mutex::new(HashMap::new()),
            last_active: Mutex::new(Instant::now()),
        });
        tokio::spawn(Self::supervise(Arc::downgrade(&s)));
        s
    }

    async fn supervise(weak: Weak<Self>) {
        let Some(me) = weak.upgrade() else { return };
        let mut backoff = Backoff::new(me.cfg.restart_backoff_max);
        drop(me);
        loop {
            let Some(me) = weak.upgrade() else { return };
            if matches!(*me.status.borrow(), Status::Idle) {
                // Stopped for idleness: start again on the next use.
                me.demand.notified().await;
            }
            me.status.send_replace(Status::Starting);
            match Mux::start(me.name.clone(), &me.cfg, INIT_TIMEOUT).await {
                Ok(mux) => {
                    tracing::info!(server = %me.name, pid = mux.pid, "stdio server started");
                    for s in lock(&me.sessions).values().filter_map(Weak::upgrade) {
                        mux.attach(&s);
                    }
                    me.status.send_replace(Status::Ready(mux.clone()));
                    tokio::select! {
                        msg = mux.exited() => {
                            if mux.started.elapsed() > Duration::from_secs(30) {
                                backoff.reset();
                            }
                            let d = backoff.next_delay();
                            tracing::warn!(server = %me.name, "{msg}; restarting in {d:?}");
                            me.status.send_replace(Status::Starting);
                            drop(me);
                            tokio::time::sleep(d).await;
                        }
                        _ = Self::idle(&me) => {
                            tracing::info!(server = %me.name, "no sessions for {:?}: stopping until next use", me.cfg.idle_timeout);
                            me.status.send_replace(Status::Idle);
                            mux.kill();
                        }
                    }
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    tracing::error!(server = %me.name, "stdio server failed to start: {e}; retrying in {d:?}");
                    me.status.send_replace(Status::Failed(e));
                    drop(me);
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    /// Resolves when the server has had no sessions for `idle_timeout` (never if disabled).
    async fn idle(&self) {
        let Some(limit) = self.cfg.idle_timeout else {
            return std::future::pending().await;
        };
        let tick = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            tokio::time::sleep(tick).await;
            let n = {
                let mut s = lock(&self.sessions);
                s.retain(|_, w| w.strong_count() > 0);
                s.len()
            };
            if n == 0 && lock(&self.last_active).elapsed() >= limit {
                return;
            }
        }
    }

    async fn mux(&self) -> Result<Arc<Mux>, String> {
        *lock(&self.last_active) = Instant::now();
        let mut rx = self.status.subscribe();
        if matches!(*rx.borrow(), Status::Idle) {
            self.demand.notify_one();
        }
        let wait = async {
            loop {
                match &*rx.borrow_and_update() {
                    Status::Ready(m) if m.is_alive() => return Ok(m.clone()),
                    Status::Failed(e) => return Err(e.clone()),
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return Err(format!("stdio server '{}' is shut down", self.name));
                }
            }
        };
        match tokio::time::timeout(INIT_TIMEOUT + Duration::from_secs(5), wait).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "stdio server '{}' did not become ready in time",
                self.name
            )),
        }
    }

    /// Opens a session: the cached `InitializeResult`.
    pub(crate) async fn open(&self, s: &Arc<Session>) -> Result<Value, String> {
        let m = self.mux().await?;
        lock(&self.sessions).insert(s.id.clone(), Arc::downgrade(s));
        m.attach(s);
        Ok(m.init_result())
    }

    /// Forwards a request.
    pub(crate) async fn call(
        &self,
        s: &Arc<Session>,
        msg: Value,
        sink: Sink,
    ) -> Result<Value, CallError> {
        let m = self.mux().await.map_err(CallError::Exited)?;
        m.attach(s);
        let r = m.call(Some(s), msg, Some(sink)).await;
        *lock(&self.last_active) = Instant::now();
        r
    }

    fn current(&self) -> Option<Arc<Mux>> {
        match &*self.status.borrow() {
            Status::Ready(m) => Some(m.clone()),
            _ => None,
        }
    }

    /// Forwards a notification (only to a running process).
    pub(crate) fn notify(&self, s: &Session, msg: Value) {
        if let Some(m) = self.current() {
            m.notify(s, msg);
        }
    }

    /// Forwards a client's answer to a server→client request.
    pub(crate) fn respond(&self, msg: Value) -> bool {
        self.current().is_some_and(|m| m.respond(msg))
    }

    /// Ends a session.
    pub(crate) fn close(&self, s: &Session) {
        lock(&self.sessions).remove(&s.id);
        *lock(&self.last_active) = Instant::now();
        if let Some(m) = self.current() {
            m.detach(&s.id);
        }
    }

    /// Status for `/meshgate/edge/status`.
    pub(crate) fn status_json(&self) -> Value {
        match &*self.status.borrow() {
            Status::Idle => json!({"state": "idle", "pids": []}),
            Status::Starting => json!({"state": "starting", "pids": []}),
            Status::Ready(m) => {
                json!({"state": if m.is_alive() {"running"} else {"restarting"}, "pids": [m.pid], "sessions": m.session_count()})
            }
            Status::Failed(e) => json!({"state": "failed", "error": e, "pids": []}),
        }
    }
}

// === impl PerSessionServer ===

/// A stdio server with one process per session, served from a prewarmed pool.
#[derive(Debug)]
pub(crate) struct PerSessionServer {
    name: Arc<str>,
    cfg: StdioConfig,
    pool: Mutex<VecDeque<Arc<Mux>>>,
    refill: Notify,
    last_error: Mutex<Option<String>>,
    active: Mutex<HashMap<String, i32>>,
}

impl PerSessionServer {
    /// Creates the server and its pool-refill task.
    pub(crate) fn new(name: Arc<str>, cfg: StdioConfig) -> Arc<Self> {
        let s = Arc::new(PerSessionServer {
            name,
            cfg,
            pool: Mutex::new(VecDeque::new()),
            refill: Notify::new(),
            last_error: Mutex::new(None),
            active: Mutex::new(HashMap::new()),
        });
        tokio::spawn(Self::refill_loop(Arc::downgrade(&s)));
        s
    }

    fn pooled(&self) -> usize {
        let mut p = lock(&self.pool);
        p.retain(|m| m.is_alive());
        p.len()
    }

    async fn refill_loop(weak: Weak<Self>) {
        let Some(me) = weak.upgrade() else { return };
        let mut backoff = Backoff::new(me.cfg.restart_backoff_max);
        drop(me);
        loop {
            let Some(me) = weak.upgrade() else { return };
            if me.pooled() < me.cfg.prewarm {
                match Mux::start(me.name.clone(), &me.cfg, INIT_TIMEOUT).await {
                    Ok(m) => {
                        tracing::debug!(server = %me.name, pid = m.pid, "prewarmed process ready");
                        backoff.reset();
                        *lock(&me.last_error) = None;
                        lock(&me.pool).push_back(m);
                    }
                    Err(e) => {
                        let d = backoff.next_delay();
                        tracing::error!(server = %me.name, "prewarm failed: {e}; retrying in {d:?}");
                        *lock(&me.last_error) = Some(e);
                        drop(me);
                        tokio::time::sleep(d).await;
                    }
                }
                continue;
            }
            // Also wake periodically to replace pooled processes that died.
            let _ = tokio::time::timeout(Duration::from_secs(2), me.refill.notified()).await;
        }
    }

    async fn acquire(&self) -> Result<Arc<Mux>, String> {
        let pooled = {
            let mut p = lock(&self.pool);
            p.retain(|m| m.is_alive());
            p.pop_front()
        };
        self.refill.notify_one();
        match pooled {
            Some(m) => Ok(m),
            None => {
                if let Some(e) = lock(&self.last_error).clone() {
                    return Err(e);
                }
                Mux::start(self.name.clone(), &self.cfg, INIT_TIMEOUT).await
            }
        }
    }

    /// Opens a session on a pooled process: that process's `InitializeResult`.
    pub(crate) async fn open(&self, s: &Arc<Session>) -> Result<Value, String> {
        let m = self.acquire().await?;
        m.attach(s);
        lock(&self.active).insert(s.id.clone(), m.pid);
        let r = m.init_result();
        *lock(&s.mux) = Some(m);
        Ok(r)
    }

    fn session_mux(&self, s: &Session) -> Result<Arc<Mux>, CallError> {
        lock(&s.mux).clone().ok_or_else(|| {
            CallError::Exited(format!(
                "stdio server '{}': session has no process",
                self.name
            ))
        })
    }

    /// Forwards a request to the session's process.
    pub(crate) async fn call(
        &self,
        s: &Arc<Session>,
        msg: Value,
        sink: Sink,
    ) -> Result<Value, CallError> {
        let m = self.session_mux(s)?;
        m.call(Some(s), msg, Some(sink)).await
    }

    /// Forwards a notification.
    pub(crate) fn notify(&self, s: &Session, msg: Value) {
        if let Ok(m) = self.session_mux(s) {
            m.notify(s, msg);
        }
    }

    /// Forwards a client's answer to a server→client request.
    pub(crate) fn respond(&self, s: &Session, msg: Value) -> bool {
        self.session_mux(s).is_ok_and(|m| m.respond(msg))
    }

    /// Ends a session and kills its process.
    pub(crate) fn close(&self, s: &Session) {
        lock(&self.active).remove(&s.id);
        if let Some(m) = lock(&s.mux).take() {
            m.kill();
        }
    }

    /// Status for `/meshgate/edge/status`.
    pub(crate) fn status_json(&self) -> Value {
        let pool: Vec<i32> = lock(&self.pool)
            .iter()
            .filter(|m| m.is_alive())
            .map(|m| m.pid)
            .collect();
        let live = crate::supervisor::live_children();
        let sessions: serde_json::Map<String, Value> = lock(&self.active)
            .iter()
            .filter(|(_, pid)| live.contains(pid))
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "state": "running",
            "pool": pool,
            "prewarm": self.cfg.prewarm,
            "session_pids": sessions,
            "error": lock(&self.last_error).clone(),
        })
    }
}
