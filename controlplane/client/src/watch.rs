//! The snapshot watcher: one OS thread with a small current-thread tokio runtime that long-polls
//! the control plane, verifies each snapshot, keeps the last good one on disk (written
//! atomically) and hands verified snapshots to the hub through a [`tokio::sync::watch`] channel.
//! The channel is runtime-agnostic: monoio workers can `borrow()` it or await `changed()` without
//! a tokio runtime of their own.
//!
//! Static stability: [`Watcher::start`] loads the snapshot on disk *before* it returns, so a hub
//! restarted while the control plane is down starts from its last snapshot. A snapshot that fails
//! verification (tampered, wrong key, older than the one held) is refused: the old one stays, a
//! `warn` log line says why and [`WatchStats::refused`] counts it. Lost connections are retried
//! with capped exponential backoff and full jitter.
//!
//! The same thread also carries the hub's other traffic to the control plane ([`Watcher::request`]:
//! reports, audit batches, approval requests), so the hub needs no tokio runtime for it either.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use hyper::Method;
use tokio::sync::{mpsc, oneshot, watch};

use crate::http::{Client, HttpError, Response};
use crate::verify::{self, Verified, VerifyError};

/// File name of the last good snapshot in the state directory.
pub const SNAPSHOT_FILE: &str = "control-snapshot.json";
/// File name of the pinned control-plane key in the state directory.
pub const KEY_FILE: &str = "control-key.pub";

/// How to reach and trust the control plane.
#[derive(Clone)]
pub struct WatchConfig {
    /// Base URL of `meshgate-control` (`http://…` or `https://…`), without a fragment.
    pub url: String,
    /// Directory for the last good snapshot and the pinned key (created if missing).
    pub state_dir: PathBuf,
    /// The control plane's snapshot key. `None`: use the key pinned in `state_dir`, or on first
    /// contact fetch and pin it (trust on first use, logged as a warning).
    pub trusted_key: Option<VerifyingKey>,
    /// CA certificate (PEM) for an `https` URL.
    pub ca_pem: Option<Vec<u8>>,
    /// Bearer token of a `hub` API key.
    pub token: Option<String>,
    /// This hub's id, shown in the control plane's list of watching hubs.
    pub hub_id: String,
    /// How long the control plane may hold one long-poll before answering "no change".
    pub poll_wait: Duration,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
}

impl std::fmt::Debug for WatchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchConfig")
            .field("url", &self.url)
            .field("state_dir", &self.state_dir)
            .field(
                "trusted_key",
                &self.trusted_key.as_ref().map(verify::key_id),
            )
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("hub_id", &self.hub_id)
            .finish()
    }
}

impl WatchConfig {
    /// Settings from a `--control` URL. A fragment `#key=<base64url>` pins the snapshot key
    /// (it is never sent to the server); without it the key is pinned on first use.
    pub fn from_url(url: &str, state_dir: impl Into<PathBuf>) -> Result<Self, WatchError> {
        let (base, fragment) = match url.split_once('#') {
            Some((b, f)) => (b, Some(f)),
            None => (url, None),
        };
        let mut trusted_key = None;
        if let Some(f) = fragment {
            for part in f.split('&') {
                match part.split_once('=') {
                    Some(("key", v)) => trusted_key = Some(verify::decode_key(v)?),
                    _ => {
                        return Err(WatchError::Config(format!(
                            "unknown --control URL fragment {part:?} (expected key=<base64url>)"
                        )))
                    }
                }
            }
        }
        Ok(WatchConfig {
            url: base.trim_end_matches('/').to_owned(),
            state_dir: state_dir.into(),
            trusted_key,
            ca_pem: None,
            token: None,
            hub_id: default_hub_id(),
            poll_wait: Duration::from_secs(25),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
        })
    }
}

fn default_hub_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "hub".into())
}

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Bad settings.
    #[error("control plane settings: {0}")]
    Config(String),
    /// Bad key.
    #[error(transparent)]
    Key(#[from] VerifyError),
    /// Bad URL or TLS settings.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// State directory or thread.
    #[error("{what}: {err}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        err: std::io::Error,
    },
}

/// Counters and state of a watcher, shared with the hub (e.g. for `/metrics`).
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Snapshots verified and applied (including the one loaded from disk).
    pub applied: AtomicU64,
    /// Snapshots refused (bad hash, signature, format, key, or older than the one held).
    pub refused: AtomicU64,
    /// Failed exchanges with the control plane (connect, timeout, unexpected status).
    pub errors: AtomicU64,
    /// Reconnections after a failure.
    pub reconnects: AtomicU64,
    /// Whether the last exchange with the control plane succeeded.
    pub connected: AtomicBool,
    /// Version of the snapshot held (0 = none).
    pub version: AtomicU64,
    last_refusal: Mutex<Option<String>>,
}

impl WatchStats {
    /// Why the last refused snapshot was refused.
    pub fn last_refusal(&self) -> Option<String> {
        self.last_refusal.lock().ok().and_then(|g| g.clone())
    }

    fn refuse(&self, why: String) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.last_refusal.lock() {
            *g = Some(why);
        }
    }
}

/// The current verified snapshot, shared by every hub worker (`None` until one is known).
pub type Current = Option<Arc<Verified>>;

enum Cmd {
    Request {
        method: Method,
        path: String,
        body: Option<Bytes>,
        timeout: Duration,
        reply: oneshot::Sender<Result<Response, HttpError>>,
    },
}

/// A running watcher. Dropping it stops the thread (without waiting for it).
pub struct Watcher {
    rx: watch::Receiver<Current>,
    stats: Arc<WatchStats>,
    cmd: mpsc::UnboundedSender<Cmd>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("version", &self.stats.version.load(Ordering::Relaxed))
            .finish()
    }
}

impl Watcher {
    /// Loads the last good snapshot from `state_dir` (if any verifies) and starts the watcher
    /// thread. Returns at once; the hub can serve from [`Watcher::current`] immediately.
    ///
    /// # Errors
    /// Bad URL, TLS or key settings, or a state directory that cannot be created.
    pub fn start(cfg: WatchConfig) -> Result<Watcher, WatchError> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(|err| WatchError::Io {
            what: format!("create {}", cfg.state_dir.display()),
            err,
        })?;
        let client = Client::new(&cfg.url, cfg.ca_pem.as_deref(), cfg.token.clone())?;
        let stats = Arc::new(WatchStats::default());
        let key_path = cfg.state_dir.join(KEY_FILE);
        let key = match cfg.trusted_key {
            Some(k) => {
                write_atomic(&key_path, verify::encode_key(&k).as_bytes()).map_err(|err| {
                    WatchError::Io {
                        what: format!("write {}", key_path.display()),
                        err,
                    }
                })?;
                Some(k)
            }
            None => read_pinned_key(&key_path)?,
        };
        let mut initial: Current = None;
        if let Some(k) = &key {
            initial = load_from_disk(&cfg.state_dir.join(SNAPSHOT_FILE), k, &stats);
        }
        let (tx, rx) = watch::channel(initial);
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("meshgate-control-watch".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "control watcher: no tokio runtime; snapshots will not be followed");
                        return;
                    }
                };
                let task = Task {
                    cfg,
                    client,
                    key,
                    tx,
                    stats: st,
                };
                rt.block_on(task.run(cmd_rx, stop_rx));
            })
            .map_err(|err| WatchError::Io {
                what: "spawn watcher thread".into(),
                err,
            })?;
        Ok(Watcher {
            rx,
            stats,
            cmd: cmd_tx,
            stop: stop_tx,
            thread: Some(thread),
        })
    }

    /// The snapshot held now (`None` before any is known).
    pub fn current(&self) -> Current {
        self.rx.borrow().clone()
    }

    /// A receiver to await new snapshots on (`changed().await`), from any async runtime.
    pub fn subscribe(&self) -> watch::Receiver<Current> {
        self.rx.clone()
    }

    /// Counters and state.
    pub fn stats(&self) -> &Arc<WatchStats> {
        &self.stats
    }

    /// Sends a request to the control plane on the watcher's thread; await the answer from any
    /// runtime. `path` starts with `/` (e.g. `/v1/hubs/hub-1/report`).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        json: Option<Bytes>,
        timeout: Duration,
    ) -> oneshot::Receiver<Result<Response, HttpError>> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Request {
            method,
            path: path.to_owned(),
            body: json,
            timeout,
            reply,
        };
        if let Err(mpsc::error::SendError(Cmd::Request { reply, path, .. })) = self.cmd.send(cmd) {
            let _ = reply.send(Err(HttpError::Io {
                url: path,
                reason: "control watcher thread has stopped".into(),
            }));
        }
        rx
    }

    /// Stops the thread and waits for it.
    pub fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn read_pinned_key(path: &Path) -> Result<Option<VerifyingKey>, WatchError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(verify::decode_key(&s)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(WatchError::Io {
            what: format!("read {}", path.display()),
            err,
        }),
    }
}

fn load_from_disk(path: &Path, key: &VerifyingKey, stats: &WatchStats) -> Current {
    let raw = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "control snapshot on disk unreadable");
            return None;
        }
    };
    match verify::open(Bytes::from(raw), key) {
        Ok(v) => {
            tracing::info!(version = v.version(), path = %path.display(), "control snapshot loaded from disk");
            stats.applied.fetch_add(1, Ordering::Relaxed);
            stats.version.store(v.version(), Ordering::Relaxed);
            Some(Arc::new(v))
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), reason = %e, "control snapshot on disk refused");
            stats.refuse(format!("on disk: {e}"));
            None
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename,
/// fsync of the directory. A crash leaves the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot".into());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

struct Task {
    cfg: WatchConfig,
    client: Client,
    key: Option<VerifyingKey>,
    tx: watch::Sender<Current>,
    stats: Arc<WatchStats>,
}

impl Task {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut stop: watch::Receiver<bool>,
    ) {
        // Requests from the hub run as their own tasks, next to the long-poll.
        let client = self.client.clone();
        let mut stop2 = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    c = cmds.recv() => match c {
                        Some(Cmd::Request { method, path, body, timeout, reply }) => {
                            let client = client.clone();
                            tokio::spawn(async move {
                                let r = client.request(method, &path, body, timeout).await;
                                let _ = reply.send(r);
                            });
                        }
                        None => return,
                    },
                    _ = stop2.changed() => return,
                }
            }
        });
        let mut failures: u32 = 0;
        loop {
            if *stop.borrow() {
                return;
            }
            let ok = tokio::select! {
                r = self.round() => r,
                _ = stop.changed() => return,
            };
            if ok {
                if failures > 0 {
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(url = %self.cfg.url, "control plane reachable again");
                }
                failures = 0;
                self.stats.connected.store(true, Ordering::Relaxed);
                continue;
            }
            self.stats.connected.store(false, Ordering::Relaxed);
            failures = failures.saturating_add(1);
            let delay = backoff(self.cfg.backoff_min, self.cfg.backoff_max, failures);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One exchange: pin the key if needed, then one long-poll. `false` = back off.
    async fn round(&mut self) -> bool {
        let key = match self.key {
            Some(k) => k,
            None => match self.fetch_key().await {
                Some(k) => k,
                None => return false,
            },
        };
        let held = self.tx.borrow().as_ref().map(|v| v.version()).unwrap_or(0);
        let wait = self.cfg.poll_wait;
        let path = format!(
            "/v1/snapshots/watch?after={held}&wait_ms={}&hub={}",
            wait.as_millis(),
            urlencode(&self.cfg.hub_id)
        );
        let resp = match self.client.get(&path, wait + Duration::from_secs(10)).await {
            Ok(r) => r,
            Err(e) => {
                self.fail(format!("{e}"));
                return false;
            }
        };
        match resp.status {
            204 => true,
            200 => self.offer(resp.body, &key),
            s => {
                self.fail(format!(
                    "watch answered HTTP {s}: {}",
                    truncate(&resp.text())
                ));
                false
            }
        }
    }

    /// Verifies and applies a snapshot; `false` when refused (the caller backs off).
    fn offer(&mut self, raw: Bytes, key: &VerifyingKey) -> bool {
        let held = self.tx.borrow().clone();
        let v = match verify::open(raw, key) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(reason = %e, held = held.as_ref().map(|h| h.version()).unwrap_or(0),
                    "control snapshot refused; keeping the one held");
                self.stats.refuse(e.to_string());
                return false;
            }
        };
        if let Some(h) = &held {
            if v.version() <= h.version() {
                let why = format!(
                    "snapshot version {} is not newer than the one held ({})",
                    v.version(),
                    h.version()
                );
                tracing::warn!(reason = %why, "control snapshot refused; keeping the one held");
                self.stats.refuse(why);
                return false;
            }
        }
        let path = self.cfg.state_dir.join(SNAPSHOT_FILE);
        if let Err(e) = write_atomic(&path, &v.raw) {
            // Still apply it: serving the newest state matters more than the disk copy.
            tracing::warn!(path = %path.display(), error = %e, "control snapshot not saved to disk");
        }
        tracing::info!(version = v.version(), sha256 = %v.sha256, "control snapshot applied");
        self.stats.applied.fetch_add(1, Ordering::Relaxed);
        self.stats.version.store(v.version(), Ordering::Relaxed);
        let _ = self.tx.send(Some(Arc::new(v)));
        true
    }

    async fn fetch_key(&mut self) -> Option<VerifyingKey> {
        let resp = match self
            .client
            .get("/v1/snapshots/key", Duration::from_secs(10))
            .await
        {
            Ok(r) if r.is_success() => r,
            Ok(r) => {
                self.fail(format!("key endpoint answered HTTP {}", r.status));
                return None;
            }
            Err(e) => {
                self.fail(e.to_string());
                return None;
            }
        };
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&resp.body);
        let key = parsed
            .ok()
            .and_then(|v| v.get("key").and_then(|k| k.as_str()).map(str::to_owned))
            .ok_or_else(|| VerifyError::Malformed("key endpoint: no \"key\"".into()))
            .and_then(|k| verify::decode_key(&k));
        match key {
            Ok(k) => {
                let path = self.cfg.state_dir.join(KEY_FILE);
                if let Err(e) = write_atomic(&path, verify::encode_key(&k).as_bytes()) {
                    tracing::warn!(path = %path.display(), error = %e, "pinned control key not saved");
                }
                tracing::warn!(key_id = %verify::key_id(&k), url = %self.cfg.url,
                    "control plane snapshot key pinned on first use (pass #key=... in the URL to pin it explicitly)");
                self.key = Some(k);
                Some(k)
            }
            Err(e) => {
                self.fail(e.to_string());
                None
            }
        }
    }

    fn fail(&self, why: String) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        if self.stats.connected.swap(false, Ordering::Relaxed) {
            tracing::warn!(url = %self.cfg.url, reason = %why, "control plane unreachable; serving the snapshot held");
        } else {
            tracing::debug!(url = %self.cfg.url, reason = %why, "control plane still unreachable");
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Capped exponential backoff with full jitter: a random delay in `[min, min(max, min·2^n)]`.
fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let cap = min
        .saturating_mul(1u32 << failures.min(16))
        .min(max)
        .max(min);
    let span = cap.saturating_sub(min).as_millis() as u64;
    let mut b = [0u8; 8];
    let r = if getrandom::fill(&mut b).is_ok() {
        u64::from_le_bytes(b)
    } else {
        0
    };
    let extra = if span == 0 { 0 } else { r % (span + 1) };
    min + Duration::from_millis(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_bounded() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for n in 0..40 {
            let d = backoff(min, max, n);
            assert!(d >= min && d <= max, "{n}: {d:?}");
        }
    }

    #[test]
    fn url_fragment_pins_key() {
        let k = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
        let url = format!("http://127.0.0.1:7070/#key={}", verify::encode_key(&k));
        let c = WatchConfig::from_url(&url, "/tmp/x").unwrap();
        assert_eq!(c.url, "http://127.0.0.1:7070");
        assert_eq!(c.trusted_key, Some(k));
        assert!(WatchConfig::from_url("http://h#bogus=1", "/tmp/x").is_err());
        assert!(WatchConfig::from_url("http://h#key=zz", "/tmp/x").is_err());
        let c = WatchConfig::from_url("https://cp.example:7443", "/tmp/x").unwrap();
        assert!(c.trusted_key.is_none());
    }

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
