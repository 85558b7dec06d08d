//! The audit log: [`AuditRecord`]s written as a hash-chained, Ed25519-signed JSONL file by one
//! writer thread, and [`verify`] that proves a log complete and unchanged.
//!
//! The `audit` stage runs last on every request, on success and on error: the worker builds an
//! [`AuditRecord`] and calls [`AuditLog::submit`], which is a `try_send` on a bounded channel
//! (no IO, no lock held across anything slow). The `meshgate-audit` thread serializes, chains,
//! signs and appends.
//!
//! # File format
//!
//! One JSON object per line:
//!
//! ```text
//! {"seq":7,"time":"2026-…Z","hub":"hub-a","ts_ms":…,"kind":"tool_call",…,"prev":"<hex>","sig":"<b64>"}
//! ```
//!
//! - `seq` counts from 1 with no gaps; `prev` is the SHA-256 (hex) of the previous line's bytes
//!   (without the newline), 64 zeros for the first line.
//! - `sig` is the Ed25519 signature (standard base64) over the line's bytes up to `,"sig":`
//!   with a closing `}` appended — i.e. over the same object without its `sig` member, exactly
//!   as written. Verification never re-serializes, so it is independent of JSON formatting.
//! - With `sign_every: N` (default 1) only every N-th record and the last record of each
//!   batch carry `sig`; an unsigned record is fixed by the `prev` chain into the next signed
//!   record or the signed head, so the guarantees below are unchanged, and [`verify`] refuses
//!   unsigned records that nothing after them covers.
//!
//! # Why this detects every change — including a truncated tail
//!
//! A changed byte breaks that line's signature (or, in `prev`, the link); an inserted line
//! cannot be signed by an attacker; a removed line breaks the next line's `prev` and `seq`. A
//! clean cut at a record boundary, however, leaves a valid prefix. So the writer also keeps a
//! **signed head** file (`<log>.head`, or `head_path`): after each batch is written (and synced,
//! if `fsync`), it atomically replaces the head (write temp, fsync, rename) with the last `seq`,
//! the SHA-256 of the last line and the file length, signed with the same key over
//! `meshgate-audit-head-v1\n<seq>\n<hash>\n<bytes>`. [`verify`] requires the head: a log with
//! fewer records than the head names, or whose record at the head's `seq` hashes differently,
//! is reported as truncated/altered. Records after the head's `seq` (a crash between appending
//! and updating the head) are valid but reported as `unanchored` in the [`Summary`].
//!
//! The head defends against an attacker who can edit the log but not keep an old head; one who
//! can also roll the head back to an older copy can still cut the tail. Ship heads (or the
//! records) off the box — the control plane's audit store does — to close that too; the
//! [`Summary::head_hash`] is the value to compare out of band.
//!
//! # Failure handling
//!
//! A write error (full disk, IO error) marks the log failing: the writer truncates any partial
//! line, keeps the unwritten records (bounded by the queue size) and retries every second.
//! While failing, [`AuditLog::submit`] returns [`AuditUnavailable`] when `on_failure: closed`
//! (the default: the hub refuses tool calls with a clear error rather than run them unaudited),
//! or accepts and counts when `open`. Records that could not be kept are counted
//! ([`AuditLog::dropped`]) and, once writing works again, an `audit_gap` record states how many
//! were lost. A restarted writer continues the chain of an existing file; a partial last line
//! (crash mid-write) is cut and recorded in a `log_repaired` record.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ConfigError;

// === records ===

/// What an audit record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// The policy allowed a call (before it runs).
    Allowed,
    /// The policy denied a call (e.g. insufficient scope).
    Denied,
    /// A call named a tool hidden from the principal (answered "unknown tool").
    HiddenCalled,
    /// A rate limit refused a request.
    RateLimited,
    /// The loop lock refused a call.
    LoopLimited,
    /// Argument validation refused a call.
    SchemaRejected,
    /// A call is held for approval.
    ApprovalHeld,
    /// A held call was approved.
    ApprovalApproved,
    /// A held call was rejected (by an operator or the hub's shutdown).
    ApprovalRejected,
    /// A held call timed out (= denied).
    ApprovalExpired,
    /// A tool call finished (with its outcome and latency).
    ToolCall,
    /// Authentication failed (the reason says how).
    AuthFailed,
    /// A guardrail blocked or redacted a result.
    Guardrail,
    /// The writer opened (or continued) the log.
    LogOpened,
    /// The writer cut a partial last line or found the log shorter than its head.
    LogRepaired,
    /// Records were lost (queue full or a write failure); `reason` says how many.
    AuditGap,
}

/// One audit event, as the hub builds it (the writer adds `seq`, `time`, `hub`, `prev`, `sig`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When it happened (Unix milliseconds).
    pub ts_ms: u64,
    /// What happened.
    pub kind: Option<AuditKind>,
    /// The principal's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The session id (legacy) or affinity key (modern), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The tool's original name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// SHA-256 (hex) of the raw `arguments` bytes ([`argument_digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_sha256: Option<String>,
    /// `ok`, `error`, `is_error`, `timeout`, `denied`… (free-form, short).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Time from receiving the request to the end of the answer, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// Why (denial reason, error message, approver comment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The rule's classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// The approval id, for approval records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// The JSON-RPC request id (as JSON text), for correlation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl AuditRecord {
    /// A record of `kind` stamped now.
    pub fn new(kind: AuditKind) -> Self {
        AuditRecord {
            ts_ms: crate::config::unix_now_ms(),
            kind: Some(kind),
            ..Default::default()
        }
    }
}

/// SHA-256 (hex) of the raw arguments bytes, for [`AuditRecord::args_sha256`].
pub fn argument_digest(raw_arguments: &[u8]) -> String {
    hex::encode(Sha256::digest(raw_arguments))
}

#[derive(Serialize)]
// The record's fields spelled out: `#[serde(flatten)]` would go through a map serializer.
struct Envelope<'a> {
    seq: u64,
    time: String,
    hub: &'a str,
    ts_ms: u64,
    kind: Option<AuditKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args_sha256: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    classification: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval_id: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: &'a Option<String>,
    prev: &'a str,
}

// === config ===

/// What the hub does while the audit log cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Refuse tool calls ([`AuditLog::submit`] errors) — the default.
    #[default]
    Closed,
    /// Keep serving; count lost records.
    Open,
}

/// The `audit:` config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The JSONL log.
    pub path: PathBuf,
    /// The signed head file (default `<path>.head`).
    #[serde(default)]
    pub head_path: Option<PathBuf>,
    /// The Ed25519 private key (PKCS#8 PEM, mode 0600; see [`crate::keys`]).
    pub key_file: PathBuf,
    /// Records that may wait for the writer (default 65536).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Behaviour while the log cannot be written (default `closed`).
    #[serde(default)]
    pub on_failure: FailMode,
    /// `fdatasync` the log and head after each batch (default true).
    #[serde(default = "yes")]
    pub fsync: bool,
    /// Sign every N-th record and the last record of every batch (default 1 = every record).
    /// Records between signatures are fixed by the hash chain into the next signed record (or
    /// the signed head), so every check of [`verify`] still holds; the writer's CPU per record
    /// drops about N-fold under load (an Ed25519 signature is most of its cost).
    #[serde(default = "one")]
    pub sign_every: u32,
}

fn one() -> u32 {
    1
}

fn default_queue() -> usize {
    65_536
}
fn yes() -> bool {
    true
}

impl AuditConfig {
    /// Checks the values serde cannot.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.queue == 0 {
            return Err(ConfigError::new("audit.queue", "must be at least 1"));
        }
        if self.sign_every == 0 {
            return Err(ConfigError::new("audit.sign_every", "must be at least 1"));
        }
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::new("audit.path", "empty path"));
        }
        Ok(())
    }
    /// The head file's path.
    pub fn head(&self) -> PathBuf {
        self.head_path.clone().unwrap_or_else(|| {
            let mut p = self.path.clone().into_os_string();
            p.push(".head");
            PathBuf::from(p)
        })
    }
}

// === writer ===

/// [`AuditLog::submit`] refused a record; the hub must not run the tool call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log unavailable: {0}")]
pub struct AuditUnavailable(pub String);

/// Opening the log failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// File IO.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The existing log's last record cannot be continued.
    #[error("{path}: cannot continue the existing log: {why}")]
    Corrupt {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// The writer thread could not start.
    #[error("cannot start the audit writer thread: {0}")]
    Thread(std::io::Error),
}

enum Msg {
    Record(Box<AuditRecord>),
    Flush(mpsc::Sender<bool>),
    Stop,
}

#[derive(Debug)]
struct Shared {
    failing: AtomicBool,
    failure: Mutex<Option<String>>,
    dropped: AtomicU64,
    written: AtomicU64,
    mode: FailMode,
}

/// The hub's handle on the audit writer: `Send + Sync`, share it through an `Arc`.
#[derive(Debug)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
    closed: AtomicBool,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AuditLog {
    /// Opens (or continues) the log at `cfg.path`, signing with `key`, as hub `hub`.
    ///
    /// # Errors
    /// [`AuditError`] when the file cannot be opened or its last record cannot be read.
    pub fn open(cfg: &AuditConfig, hub: &str, key: SigningKey) -> Result<Self, AuditError> {
        let mut w = Writer::open(cfg, hub, key)?;
        let (tx, rx) = mpsc::sync_channel(cfg.queue);
        let shared = Arc::new(Shared {
            failing: AtomicBool::new(false),
            failure: Mutex::new(None),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            mode: cfg.on_failure,
        });
        let s2 = shared.clone();
        let cap = cfg.queue;
        let thread = std::thread::Builder::new()
            .name("meshgate-audit".into())
            .spawn(move || w.run(rx, s2, cap))
            .map_err(AuditError::Thread)?;
        Ok(AuditLog {
            tx,
            closed: AtomicBool::new(false),
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a record (never blocks).
    ///
    /// # Errors
    /// [`AuditUnavailable`] in `closed` mode while the log is failing or the queue is full, or
    /// after [`AuditLog::close`]; the caller must then refuse the tool call. In `open` mode
    /// only after `close`.
    pub fn submit(&self, record: AuditRecord) -> Result<(), AuditUnavailable> {
        let closed = self.shared.mode == FailMode::Closed;
        if closed && self.shared.failing.load(Ordering::Acquire) {
            let why = self
                .shared
                .failure
                .lock()
                .clone()
                .unwrap_or_else(|| "write failed".into());
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(AuditUnavailable(why));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(AuditUnavailable("the audit log is closed".into()));
        }
        match self.tx.try_send(Msg::Record(Box::new(record))) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                if closed {
                    Err(AuditUnavailable("the audit queue is full".into()))
                } else {
                    Ok(())
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                Err(AuditUnavailable("the audit writer stopped".into()))
            }
        }
    }

    /// Waits (blocking, up to `timeout`) until everything queued before is written; `true` if it
    /// was. For shutdown and tests, not for workers.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        // A bounded wait for queue room, then for the writer's answer.
        let deadline = std::time::Instant::now() + timeout;
        let mut msg = Msg::Flush(tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                    msg = m;
                    std::thread::yield_now();
                }
                Err(_) => return false,
            }
        }
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or(false)
    }

    /// Stops the writer after it wrote what was queued (bounded by `timeout` for the flush).
    pub fn close(&self, timeout: Duration) {
        self.flush(timeout);
        self.closed.store(true, Ordering::Release);
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }

    /// Whether the last write failed (and why).
    pub fn failure(&self) -> Option<String> {
        if self.shared.failing.load(Ordering::Acquire) {
            self.shared.failure.lock().clone()
        } else {
            None
        }
    }

    /// Records lost or refused so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Records written so far (by this process).
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }
}

struct Writer {
    file: File,
    path: PathBuf,
    head_path: PathBuf,
    key: SigningKey,
    hub: String,
    seq: u64,
    prev: String,
    len: u64,
    fsync: bool,
    sign_every: u64,
    pending: Vec<AuditRecord>,
    lost: u64,
    seen_dropped: u64,
    head_dirty: bool,
    startup: Vec<AuditRecord>,
}

const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Writer {
    fn open(cfg: &AuditConfig, hub: &str, key: SigningKey) -> Result<Self, AuditError> {
        let path = cfg.path.clone();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut startup = Vec::new();
        let len = file.metadata().map_err(io_err(&path))?.len();
        let (mut seq, mut prev, mut good_len) = (0, ZERO_HASH.to_string(), 0);
        if len > 0 {
            // Read the tail to find the last complete line (records are far below 1 MiB).
            let tail = len.min(1 << 20);
            let mut buf = vec![0u8; tail as usize];
            file.seek(SeekFrom::Start(len - tail))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(io_err(&path))?;
            let end = buf.iter().rposition(|b| *b == b'\n').map(|i| i + 1);
            let Some(end) = end else {
                return Err(AuditError::Corrupt {
                    path: path.display().to_string(),
                    why: "no complete line in the last MiB".into(),
                });
            };
            good_len = len - tail + end as u64;
            let body = &buf[..end - 1];
            let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if start == 0 && len > tail {
                return Err(AuditError::Corrupt {
                    path: path.display().to_string(),
                    why: "the last line is longer than 1 MiB".into(),
                });
            }
            let last = &body[start..];
            let v: serde_json::Value =
                serde_json::from_slice(last).map_err(|e| AuditError::Corrupt {
                    path: path.display().to_string(),
                    why: format!("last record is not JSON: {e}"),
                })?;
            seq = v
                .get("seq")
                .and_then(|s| s.as_u64())
                .ok_or_else(|| AuditError::Corrupt {
                    path: path.display().to_string(),
                    why: "last record has no seq".into(),
                })?;
            prev = hex::encode(Sha256::digest(last));
            if good_len < len {
                file.set_len(good_len).map_err(io_err(&path))?;
                let mut r = AuditRecord::new(AuditKind::LogRepaired);
                r.reason = Some(format!(
                    "cut {} bytes of a partial last line at offset {good_len}",
                    len - good_len
                ));
                startup.push(r);
            }
        }
        let head_path = cfg.head();
        if let Ok(h) = read_head(&head_path) {
            if h.seq > seq {
                let mut r = AuditRecord::new(AuditKind::LogRepaired);
                r.reason = Some(format!(
                    "the head names record {} but the log ends at record {seq}: {} records missing",
                    h.seq,
                    h.seq - seq
                ));
                startup.push(r);
            }
        }
        let mut r = AuditRecord::new(AuditKind::LogOpened);
        r.reason = Some(format!(
            "writer started; public key {}",
            base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes())
        ));
        startup.push(r);
        Ok(Writer {
            file,
            path,
            head_path,
            key,
            hub: hub.to_string(),
            seq,
            prev,
            len: good_len,
            fsync: cfg.fsync,
            sign_every: u64::from(cfg.sign_every.max(1)),
            pending: Vec::new(),
            lost: 0,
            seen_dropped: 0,
            head_dirty: false,
            startup,
        })
    }

    fn run(&mut self, rx: Receiver<Msg>, shared: Arc<Shared>, cap: usize) {
        self.pending = std::mem::take(&mut self.startup);
        let mut flushes: Vec<mpsc::Sender<bool>> = Vec::new();
        let mut open = true;
        while open || !self.pending.is_empty() {
            // Wait for work, or a second to retry a failing write.
            let first = if self.pending.is_empty() {
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                rx.recv_timeout(Duration::from_secs(1))
            };
            match first {
                Ok(Msg::Stop) => open = false,
                Ok(m) => self.take(m, &mut flushes, cap, &shared),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            while open && self.pending.len() < 4096 {
                match rx.try_recv() {
                    Ok(Msg::Stop) => open = false,
                    Ok(m) => self.take(m, &mut flushes, cap, &shared),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let dropped = shared.dropped.load(Ordering::Relaxed);
            self.lost += dropped - self.seen_dropped;
            self.seen_dropped = dropped;
            match self.write_batch() {
                Ok(n) => {
                    shared.written.fetch_add(n, Ordering::Relaxed);
                    if shared.failing.swap(false, Ordering::AcqRel) {
                        tracing::info!(path = %self.path.display(), "audit log writable again");
                    }
                    for f in flushes.drain(..) {
                        let _ = f.send(true);
                    }
                }
                Err(e) => {
                    let why = format!("{}: {e}", self.path.display());
                    if !shared.failing.swap(true, Ordering::AcqRel) {
                        tracing::error!(error = %why, "audit log write failed");
                    }
                    *shared.failure.lock() = Some(why);
                    for f in flushes.drain(..) {
                        let _ = f.send(false);
                    }
                    if !open {
                        // Shutting down with an unwritable log: give up on what is left.
                        return;
                    }
                }
            }
        }
    }

    fn take(&mut self, m: Msg, flushes: &mut Vec<mpsc::Sender<bool>>, cap: usize, shared: &Shared) {
        match m {
            Msg::Record(r) => {
                // Pending grows past the queue only while writes fail; then the oldest stay.
                if self.pending.len() >= cap + 16 {
                    self.lost += 1;
                    self.seen_dropped += 1;
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.pending.push(*r);
                }
            }
            Msg::Flush(tx) => flushes.push(tx),
            Msg::Stop => {}
        }
    }

    /// Serializes, chains, signs and appends the pending records; on error nothing is
    /// committed (a partial write is cut off) and the records stay pending.
    fn write_batch(&mut self) -> std::io::Result<u64> {
        if self.pending.is_empty() && self.lost == 0 {
            if self.head_dirty {
                self.write_head()?;
                self.head_dirty = false;
            }
            return Ok(0);
        }
        let gap = (self.lost > 0).then(|| {
            let mut r = AuditRecord::new(AuditKind::AuditGap);
            r.reason = Some(format!("{} audit records were lost", self.lost));
            r
        });
        let count = usize::from(gap.is_some()) + self.pending.len();
        let mut buf = Vec::with_capacity(count * 320);
        let (mut seq, mut prev) = (self.seq, self.prev.clone());
        let last = count.saturating_sub(1);
        for (i, r) in gap.iter().chain(self.pending.iter()).enumerate() {
            seq += 1;
            let start = buf.len();
            // The last record of a batch is always signed, so nothing after the head is unsigned.
            let sign = i == last || seq % self.sign_every == 0;
            self.encode(seq, &prev, r, sign, &mut buf);
            prev = hex::encode(Sha256::digest(&buf[start..]));
            buf.push(b'\n');
        }
        let res = self.file.write_all(&buf).and_then(|_| {
            if self.fsync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = res {
            // Cut whatever part of the batch reached the file so the chain stays clean.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += buf.len() as u64;
        self.seq = seq;
        self.prev = prev;
        self.pending.clear();
        self.lost = 0;
        self.head_dirty = true;
        self.write_head()?;
        self.head_dirty = false;
        Ok(count as u64)
    }

    fn encode(&self, seq: u64, prev: &str, r: &AuditRecord, sign: bool, buf: &mut Vec<u8>) {
        let start = buf.len();
        let env = Envelope {
            seq,
            time: humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(r.ts_ms))
                .to_string(),
            hub: &self.hub,
            ts_ms: r.ts_ms,
            kind: r.kind,
            latency_us: r.latency_us,
            principal: &r.principal,
            session: &r.session,
            upstream: &r.upstream,
            tool: &r.tool,
            args_sha256: &r.args_sha256,
            outcome: &r.outcome,
            reason: &r.reason,
            classification: &r.classification,
            approval_id: &r.approval_id,
            request_id: &r.request_id,
            prev,
        };
        serde_json::to_writer(&mut *buf, &env).expect("audit records always serialize");
        if !sign {
            return;
        }
        // Sign the object as written; then replace its closing brace by the signature member.
        let sig = self.key.sign(&buf[start..]);
        buf.pop();
        buf.extend_from_slice(b",\"sig\":\"");
        buf.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(sig.to_bytes())
                .as_bytes(),
        );
        buf.extend_from_slice(b"\"}");
    }

    fn write_head(&self) -> std::io::Result<()> {
        let msg = head_message(self.seq, &self.prev, self.len);
        let sig = self.key.sign(msg.as_bytes());
        let head = Head {
            seq: self.seq,
            line_sha256: self.prev.clone(),
            bytes: self.len,
            sig: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
        };
        let mut tmp = self.head_path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o640)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec(&head).expect("a head always serializes"))?;
            if self.fsync {
                f.sync_all()?;
            }
        }
        std::fs::rename(&tmp, &self.head_path)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Head {
    seq: u64,
    line_sha256: String,
    bytes: u64,
    sig: String,
}

fn head_message(seq: u64, hash: &str, bytes: u64) -> String {
    format!("meshgate-audit-head-v1\n{seq}\n{hash}\n{bytes}")
}

fn read_head(path: &Path) -> Result<Head, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: not a head file: {e}", path.display()))
}

// === verify ===

/// What a successful [`verify`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records in the log.
    pub records: u64,
    /// The head's `seq`.
    pub head_seq: u64,
    /// SHA-256 of the record the head names (compare it out of band).
    pub head_hash: String,
    /// Valid records after the head (written just before a crash); 0 normally.
    pub unanchored: u64,
    /// `log_repaired` and `audit_gap` records (line, reason), for the operator to read.
    pub notices: Vec<(u64, String)>,
}

/// Why a log failed verification: the first bad record (1-based line) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The log or head cannot be read.
    #[error("{0}")]
    Io(String),
    /// A record is bad.
    #[error("line {line}: {why}")]
    BadRecord {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        why: String,
    },
    /// The head is missing, unsigned or does not match.
    #[error("head: {0}")]
    Head(String),
    /// The log ends before the record the head names.
    #[error(
        "line {line}: log truncated: the head names record {expected} but the log has {found}"
    )]
    Truncated {
        /// The first missing line.
        line: u64,
        /// The head's `seq`.
        expected: u64,
        /// Records found.
        found: u64,
    },
}

/// Verifies the log at `path` (and its head at `<path>.head`) against `public_key`.
///
/// # Errors
/// The first problem, as a [`VerifyError`] naming the line.
pub fn verify(path: &Path, public_key: &VerifyingKey) -> Result<Summary, VerifyError> {
    let mut head = path.to_path_buf().into_os_string();
    head.push(".head");
    verify_with_head(path, Path::new(&head), public_key)
}

/// [`verify`] with an explicit head path.
///
/// # Errors
/// As [`verify`].
pub fn verify_with_head(
    path: &Path,
    head_path: &Path,
    public_key: &VerifyingKey,
) -> Result<Summary, VerifyError> {
    let data =
        std::fs::read(path).map_err(|e| VerifyError::Io(format!("{}: {e}", path.display())))?;
    let mut expected_prev = ZERO_HASH.to_string();
    let mut n: u64 = 0;
    let mut hashes: Vec<String> = Vec::new();
    let mut notices = Vec::new();
    let mut last_signed: u64 = 0;
    let mut rest: &[u8] = &data;
    while !rest.is_empty() {
        let line_no = n + 1;
        let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
            return Err(VerifyError::BadRecord {
                line: line_no,
                why: "incomplete last line (no newline)".into(),
            });
        };
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        let bad = |why: String| VerifyError::BadRecord { line: line_no, why };
        const MARK: &[u8] = b",\"sig\":\"";
        let signed: std::borrow::Cow<'_, [u8]> = match find_last(line, MARK) {
            // Unsigned (`sign_every` > 1): fixed by the chain into a later signature or the head.
            None => std::borrow::Cow::Borrowed(line),
            Some(at) => {
                if !line.ends_with(b"\"}") || at + MARK.len() > line.len() - 2 {
                    return Err(bad("malformed signature member".into()));
                }
                let sig_b64 = &line[at + MARK.len()..line.len() - 2];
                let sig_bytes = base64::engine::general_purpose::STANDARD
                    .decode(sig_b64)
                    .map_err(|_| bad("signature is not base64".into()))?;
                let sig = Signature::from_slice(&sig_bytes)
                    .map_err(|_| bad("signature has the wrong length".into()))?;
                let mut signed = line[..at].to_vec();
                signed.push(b'}');
                public_key.verify(&signed, &sig).map_err(|_| {
                    bad("signature does not verify (record altered or foreign)".into())
                })?;
                last_signed = line_no;
                std::borrow::Cow::Owned(signed)
            }
        };
        let v: serde_json::Value =
            serde_json::from_slice(&signed).map_err(|e| bad(format!("not JSON: {e}")))?;
        let seq = v.get("seq").and_then(|s| s.as_u64());
        if seq != Some(line_no) {
            return Err(bad(format!(
                "seq is {seq:?}, expected {line_no} (record inserted or removed before it)"
            )));
        }
        let prev = v.get("prev").and_then(|p| p.as_str()).unwrap_or("");
        if prev != expected_prev {
            return Err(bad(
                "prev does not match the previous record's hash (a record before it was removed or changed)"
                    .into(),
            ));
        }
        if let Some(k @ ("log_repaired" | "audit_gap")) = v.get("kind").and_then(|k| k.as_str()) {
            let reason = v.get("reason").and_then(|r| r.as_str()).unwrap_or("");
            notices.push((line_no, format!("{k}: {reason}")));
        }
        expected_prev = hex::encode(Sha256::digest(line));
        hashes.push(expected_prev.clone());
        n += 1;
    }
    let head = read_head(head_path).map_err(VerifyError::Head)?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&head.sig)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or_else(|| VerifyError::Head("bad signature encoding".into()))?;
    public_key
        .verify(
            head_message(head.seq, &head.line_sha256, head.bytes).as_bytes(),
            &sig,
        )
        .map_err(|_| VerifyError::Head("signature does not verify".into()))?;
    if head.seq > n {
        return Err(VerifyError::Truncated {
            line: n + 1,
            expected: head.seq,
            found: n,
        });
    }
    if head.seq > 0 && hashes[(head.seq - 1) as usize] != head.line_sha256 {
        return Err(VerifyError::BadRecord {
            line: head.seq,
            why: "does not match the record the head names".into(),
        });
    }
    let covered = last_signed.max(head.seq);
    if n > covered {
        return Err(VerifyError::BadRecord {
            line: covered + 1,
            why: "unsigned and after the head: not covered by any signature".into(),
        });
    }
    Ok(Summary {
        records: n,
        head_seq: head.seq,
        head_hash: head.line_sha256,
        unanchored: n - head.seq,
        notices,
    })
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// Unix milliseconds of a `SystemTime` (for callers building records from other clocks).
pub fn to_unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
