//! The load driver: sets up sessions and streams, runs a scenario against one target or two
//! interleaved targets (`--compare`), and returns per-target [`Summary`]s.
//!
//! Open loop (`rate` set): request *k* of a target has an intended send time
//! `t0 + k / rate`; requests are dealt round-robin to the sessions, and latency is measured
//! from the intended time, so when the target stalls, the requests that *should* have been
//! sent during the stall count the wait (no coordinated omission). With two targets the
//! global sequence alternates between them, so both see the same moment-to-moment noise.
//! Closed loop (`rate` unset): each session sends back-to-back; latency from the actual send.
//!
//! Scenarios: `call` (N sessions initialize, then call tools), `stream` (hold N GET streams
//! and measure notification delay from the mock's emit timestamp), `churn` (open-loop
//! session create + delete cycles on fresh connections), `mixed` (callers + streams).
//!
//! Every wait is bounded: connects and requests have timeouts, workers stop at the end of
//! the window, and stragglers are aborted one request-timeout later.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{emit_nanos, ClientError, ConnectOpts, Era, McpClient, Target};
use crate::stats::{Recorder, SharedRecorder, Summary};
use crate::sys::{self, HiResTimer};

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Sessions initialize once, then call tools.
    Call,
    /// Hold GET/SSE streams, measure notification delivery delay.
    Stream,
    /// Create and delete sessions.
    Churn,
    /// Callers and streams at once.
    Mixed,
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "call" => Ok(Scenario::Call),
            "stream" => Ok(Scenario::Stream),
            "churn" => Ok(Scenario::Churn),
            "mixed" => Ok(Scenario::Mixed),
            _ => Err(format!(
                "unknown scenario {s:?} (call | stream | churn | mixed)"
            )),
        }
    }
}

/// A fully specified run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// One target, or two for a comparison (the second is "B" in ratios B/A).
    pub targets: Vec<String>,
    /// Scenario.
    pub scenario: Scenario,
    /// Protocol era of the simulated clients.
    pub era: Era,
    /// Calling sessions (`call`, `mixed`) or concurrent churners (`churn`).
    pub sessions: usize,
    /// Held streams (`stream`, `mixed`).
    pub streams: usize,
    /// Open-loop rate per target (requests or cycles per second); `None` = closed loop.
    pub rate: Option<f64>,
    /// Measured window.
    pub duration: Duration,
    /// Unmeasured lead-in after setup.
    pub warmup: Duration,
    /// Number of distinct tools to call (`tool_0` … ), round-robin.
    pub tools: usize,
    /// Attach a `progressToken` to calls.
    pub progress: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Probe each target once before starting and fail fast when it is not MCP.
    pub preflight: bool,
    /// Print a live progress line on stderr (only when stderr is a terminal).
    pub live: bool,
    /// Concurrent connects/initializes during setup.
    pub setup_concurrency: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            scenario: Scenario::Call,
            era: Era::Legacy,
            sessions: 1,
            streams: 0,
            rate: Some(100.0),
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            tools: 10,
            progress: false,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            preflight: true,
            live: true,
            setup_concurrency: 256,
        }
    }
}

/// Results of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// What was run.
    pub config: RunConfig,
    /// One entry per (target, metric).
    pub results: Vec<Summary>,
    /// Setup failures (sessions or streams that never started), by target then kind.
    pub setup_errors: BTreeMap<String, BTreeMap<String, u64>>,
}

impl RunReport {
    /// The summaries of `metric`, in target order.
    pub fn metric(&self, metric: &str) -> Vec<&Summary> {
        self.results.iter().filter(|s| s.metric == metric).collect()
    }
}

/// File descriptors a run needs (sessions + streams per target, plus slack).
pub fn fds_needed(cfg: &RunConfig) -> u64 {
    let per = match cfg.scenario {
        Scenario::Call | Scenario::Churn => cfg.sessions,
        Scenario::Stream => cfg.streams,
        Scenario::Mixed => cfg.sessions + cfg.streams,
    };
    // A stream's session holds a second connection only while it is being set up.
    (per * cfg.targets.len() + cfg.setup_concurrency) as u64 + 64
}

/// Probes `target` once: connect, then `initialize` (legacy) or `server/discover` (modern).
///
/// # Errors
/// A plain message saying why the target is unusable.
pub async fn preflight(target: &Arc<Target>, era: Era, timeout: Duration) -> anyhow::Result<()> {
    let opts = ConnectOpts {
        connect_timeout: timeout,
        zero_linger: true,
    };
    let mut c = McpClient::new(target.clone(), era, opts, timeout);
    let url = &target.url;
    match c.initialize().await {
        Ok(()) => {
            if era == Era::Legacy {
                let _ = c.delete_session().await;
            }
            Ok(())
        }
        Err(ClientError::ConnectRefused(a)) => {
            anyhow::bail!("target {url} is unreachable: connection refused by {a} (is it running?)")
        }
        Err(ClientError::ConnectTimeout(a)) => {
            anyhow::bail!("target {url} is unreachable: connecting to {a} timed out")
        }
        Err(ClientError::Connect(a, e)) => anyhow::bail!("target {url} is unreachable ({a}): {e}"),
        Err(ClientError::Timeout) => {
            anyhow::bail!(
            "target {url} accepted the connection but did not answer an MCP {} within {timeout:?}",
            if era == Era::Legacy { "initialize" } else { "server/discover" }
        )
        }
        Err(e) => anyhow::bail!("target {url} does not look like an MCP endpoint: {e}"),
    }
}

/// Shared per-target state of a run.
struct TargetRun {
    target: Arc<Target>,
    call: SharedRecorder,
    delivery: SharedRecorder,
    cycle: SharedRecorder,
    setup: SharedRecorder,
    /// Open loop only: actual send time minus intended send time (the driver's own lag).
    lag: SharedRecorder,
}

/// When samples count: `[measure_from, end)`.
#[derive(Clone, Copy)]
struct Window {
    t0: Instant,
    measure_from: Instant,
    end: Instant,
}

/// Intended send times of one session in an (optionally interleaved) open-loop schedule.
#[derive(Clone, Copy)]
struct Schedule {
    t0: Instant,
    /// Seconds between consecutive global slots (all targets).
    slot: f64,
    sessions: usize,
    targets: usize,
    target: usize,
    session: usize,
}

impl Schedule {
    fn at(&self, j: u64) -> Instant {
        let s = ((j * self.sessions as u64 + self.session as u64) * self.targets as u64
            + self.target as u64) as f64;
        self.t0 + Duration::from_secs_f64(s * self.slot)
    }
}

fn lock(r: &SharedRecorder) -> std::sync::MutexGuard<'_, Recorder> {
    // A poisoned recorder only means a worker panicked mid-record; the data is still usable.
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `cfg` to completion on the current tokio runtime.
///
/// # Errors
/// Bad configuration, preflight failure, or not enough file descriptors.
pub async fn run(cfg: &RunConfig) -> anyhow::Result<RunReport> {
    validate(cfg)?;
    sys::ensure_nofile(fds_needed(cfg))?;
    let mut targets = Vec::new();
    for url in &cfg.targets {
        let t = Arc::new(Target::resolve(url).await?);
        if cfg.preflight {
            preflight(&t, cfg.era, cfg.connect_timeout.min(Duration::from_secs(5))).await?;
        }
        targets.push(Arc::new(TargetRun {
            target: t,
            call: Recorder::shared(),
            delivery: Recorder::shared(),
            cycle: Recorder::shared(),
            setup: Recorder::shared(),
            lag: Recorder::shared(),
        }));
    }
    let timer = HiResTimer::start("load-timer")?;
    let opts = ConnectOpts {
        connect_timeout: cfg.connect_timeout,
        zero_linger: true,
    };
    let tool_names: Arc<Vec<String>> =
        Arc::new((0..cfg.tools.max(1)).map(|i| format!("tool_{i}")).collect());

    // Setup: sessions (call/mixed) and streams (stream/mixed), bounded concurrency.
    let sem = Arc::new(Semaphore::new(cfg.setup_concurrency.max(1)));
    let callers = matches!(cfg.scenario, Scenario::Call | Scenario::Mixed);
    let streamers = matches!(cfg.scenario, Scenario::Stream | Scenario::Mixed);
    let mut setup = JoinSet::new();
    let setup_deadline = Instant::now() + cfg.timeout + Duration::from_secs(30);
    for (k, tr) in targets.iter().enumerate() {
        if callers {
            for i in 0..cfg.sessions {
                let (tr, sem) = (tr.clone(), sem.clone());
                let (era, timeout) = (cfg.era, cfg.timeout);
                setup.spawn(async move {
                    let _p = sem.acquire_owned().await;
                    let mut c = McpClient::new(tr.target.clone(), era, opts, timeout);
                    // A session that failed to start still runs: its calls fail and are
                    // counted (and a 404 makes it re-initialize).
                    if let Err(e) = c.initialize().await {
                        lock(&tr.setup).error(e.kind());
                    }
                    Some((k, i, Ok(c)))
                });
            }
        }
        if streamers {
            for i in 0..cfg.streams {
                let (tr, sem) = (tr.clone(), sem.clone());
                let timeout = cfg.timeout;
                setup.spawn(async move {
                    let _p = sem.acquire_owned().await;
                    let mut c = McpClient::new(tr.target.clone(), Era::Legacy, opts, timeout);
                    let r = async {
                        c.initialize().await?;
                        c.open_stream().await
                    }
                    .await;
                    match r {
                        Ok(s) => Some((k, i, Err(s))),
                        Err(e) => {
                            lock(&tr.setup).error(e.kind());
                            None
                        }
                    }
                });
            }
        }
    }
    let mut clients: Vec<Vec<(usize, McpClient)>> =
        (0..targets.len()).map(|_| Vec::new()).collect();
    let mut streams = Vec::new();
    loop {
        match tokio::time::timeout_at(setup_deadline.into(), setup.join_next()).await {
            Ok(Some(Ok(Some((k, i, Ok(c)))))) => clients[k].push((i, c)),
            Ok(Some(Ok(Some((k, _, Err(s)))))) => streams.push((k, s)),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                setup.abort_all();
                anyhow::bail!("setup did not finish in time (sessions/streams still connecting)");
            }
        }
    }
    if streamers && cfg.streams > 0 && streams.is_empty() {
        let errs: Vec<String> = targets
            .iter()
            .map(|t| format!("{}: {:?}", t.target.url, lock(&t.setup).errors()))
            .collect();
        anyhow::bail!("no stream could be opened ({})", errs.join("; "));
    }

    // Measurement.
    let t0 = Instant::now() + Duration::from_millis(20);
    let win = Window {
        t0,
        measure_from: t0 + cfg.warmup,
        end: t0 + cfg.warmup + cfg.duration,
    };
    let mut work = JoinSet::new();
    let ntargets = targets.len();
    let slot = cfg.rate.map(|r| 1.0 / (r * ntargets as f64));
    for (k, list) in clients.into_iter().enumerate() {
        for (i, c) in list {
            let tr = targets[k].clone();
            let sched = slot.map(|slot| Schedule {
                t0,
                slot,
                sessions: cfg.sessions,
                targets: ntargets,
                target: k,
                session: i,
            });
            let (timer, names, progress) = (timer.clone(), tool_names.clone(), cfg.progress);
            work.spawn(call_worker(c, tr, sched, win, timer, names, progress));
        }
    }
    for (k, s) in streams {
        work.spawn(stream_worker(s, targets[k].clone(), win));
    }
    if cfg.scenario == Scenario::Churn {
        for (k, tr) in targets.iter().enumerate() {
            for i in 0..cfg.sessions {
                let sched = slot.map(|slot| Schedule {
                    t0,
                    slot,
                    sessions: cfg.sessions,
                    targets: ntargets,
                    target: k,
                    session: i,
                });
                let c = McpClient::new(tr.target.clone(), cfg.era, opts, cfg.timeout);
                let fresh = (opts, cfg.timeout);
                work.spawn(churn_worker(
                    c,
                    tr.clone(),
                    sched,
                    win,
                    timer.clone(),
                    fresh,
                ));
            }
        }
    }
    let live = cfg.live && std::io::stderr().is_terminal();
    let ticker = live.then(|| tokio::spawn(live_line(targets.clone(), win)));
    let hard_stop = win.end + cfg.timeout + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(hard_stop.into(), work.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                work.abort_all();
                break;
            }
        }
    }
    if let Some(t) = ticker {
        t.abort();
        eprintln!();
    }

    let elapsed = cfg.duration;
    let mut results = Vec::new();
    let mut setup_errors = BTreeMap::new();
    for tr in &targets {
        let url = &tr.target.url;
        if callers {
            results.push(lock(&tr.call).summary(url, "call", elapsed));
            if cfg.rate.is_some() {
                results.push(lock(&tr.lag).summary(url, "send_lag", elapsed));
            }
        }
        if streamers {
            results.push(lock(&tr.delivery).summary(url, "delivery", elapsed));
        }
        if cfg.scenario == Scenario::Churn {
            results.push(lock(&tr.cycle).summary(url, "cycle", elapsed));
        }
        let se = lock(&tr.setup).errors().clone();
        if !se.is_empty() {
            setup_errors.insert(url.clone(), se);
        }
    }
    Ok(RunReport {
        config: cfg.clone(),
        results,
        setup_errors,
    })
}

fn validate(cfg: &RunConfig) -> anyhow::Result<()> {
    if cfg.targets.is_empty() || cfg.targets.len() > 2 {
        anyhow::bail!("give one target, or two with --compare");
    }
    if let Some(r) = cfg.rate {
        if !(r.is_finite() && r > 0.0) {
            anyhow::bail!("rate must be a positive number of requests per second");
        }
    }
    let needs_sessions = matches!(
        cfg.scenario,
        Scenario::Call | Scenario::Churn | Scenario::Mixed
    );
    if needs_sessions && cfg.sessions == 0 {
        anyhow::bail!("scenario {:?} needs --sessions > 0", cfg.scenario);
    }
    if matches!(cfg.scenario, Scenario::Stream | Scenario::Mixed) && cfg.streams == 0 {
        anyhow::bail!("scenario {:?} needs --streams > 0", cfg.scenario);
    }
    if cfg.era == Era::Modern && cfg.scenario == Scenario::Stream {
        anyhow::bail!(
            "the stream scenario uses legacy GET streams; 2026-07-28 has none (use --era legacy)"
        );
    }
    if cfg.era == Era::Modern && cfg.scenario == Scenario::Churn {
        anyhow::bail!(
            "churn creates and deletes legacy sessions; 2026-07-28 is stateless (use --era legacy)"
        );
    }
    if cfg.duration.is_zero() {
        anyhow::bail!("duration must be > 0");
    }
    Ok(())
}

async fn call_worker(
    mut c: McpClient,
    tr: Arc<TargetRun>,
    sched: Option<Schedule>,
    win: Window,
    timer: HiResTimer,
    names: Arc<Vec<String>>,
    progress: bool,
) {
    let mut j: u64 = 0;
    let offset = sched.map_or(0, |s| s.session);
    if sched.is_none() {
        timer.sleep_until(win.t0).await;
    }
    loop {
        let intended = match sched {
            Some(s) => s.at(j),
            None => Instant::now(),
        };
        if intended >= win.end {
            return;
        }
        timer.sleep_until(intended).await;
        if sched.is_some() && intended >= win.measure_from {
            lock(&tr.lag).ok(intended.elapsed());
        }
        let name = &names[(offset + j as usize) % names.len()];
        let r = c.call_tool(name, progress).await;
        let done = Instant::now();
        if intended >= win.measure_from && done <= win.end + Duration::from_secs(3600) {
            let mut rec = lock(&tr.call);
            match &r {
                Ok(()) => rec.ok(done - intended),
                Err(e) => rec.error(e.kind()),
            }
        }
        match r {
            // The session was lost (hub restarted, session expired): start a new one.
            Err(ClientError::Status(404)) | Err(ClientError::JsonRpc { code: -32001, .. }) => {
                let _ = c.initialize().await;
            }
            // Nothing listening: in closed loop do not spin.
            Err(ClientError::ConnectRefused(_) | ClientError::Connect(..)) if sched.is_none() => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => {}
        }
        j += 1;
    }
}

async fn churn_worker(
    mut c: McpClient,
    tr: Arc<TargetRun>,
    sched: Option<Schedule>,
    win: Window,
    timer: HiResTimer,
    (opts, timeout): (ConnectOpts, Duration),
) {
    let mut j: u64 = 0;
    timer.sleep_until(win.t0).await;
    loop {
        let intended = match sched {
            Some(s) => s.at(j),
            None => Instant::now(),
        };
        if intended >= win.end {
            return;
        }
        timer.sleep_until(intended).await;
        let r = async {
            c.initialize().await?;
            match c.delete_session().await? {
                200 | 202 | 204 | 405 => Ok(()),
                s => Err(ClientError::Status(s)),
            }
        }
        .await;
        let done = Instant::now();
        if intended >= win.measure_from {
            let mut rec = lock(&tr.cycle);
            match &r {
                Ok(()) => rec.ok(done - intended),
                Err(e) => rec.error(e.kind()),
            }
        }
        if r.is_err() && sched.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A fresh connection per cycle: churn exercises connection setup too.
        c = McpClient::new(c.target().clone(), Era::Legacy, opts, timeout);
        j += 1;
    }
}

async fn stream_worker(mut s: crate::client::EventStream, tr: Arc<TargetRun>, win: Window) {
    loop {
        match tokio::time::timeout_at(win.end.into(), s.next_event()).await {
            Err(_) => return,
            Ok(Ok(Some(ev))) => {
                let now_ns = sys::unix_nanos();
                if Instant::now() < win.measure_from {
                    continue;
                }
                // Only the mock's timestamped notifications are timed.
                if let Some(ts) = emit_nanos(&ev) {
                    lock(&tr.delivery).ok(Duration::from_nanos(now_ns.saturating_sub(ts)));
                }
            }
            Ok(Ok(None)) => {
                lock(&tr.delivery).error("stream_ended".into());
                return;
            }
            Ok(Err(e)) => {
                lock(&tr.delivery).error(e.kind());
                return;
            }
        }
    }
}

async fn live_line(targets: Vec<Arc<TargetRun>>, win: Window) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let el = now.saturating_duration_since(win.t0).as_secs_f64();
        let total = (win.end - win.t0).as_secs_f64();
        let phase = if now < win.measure_from {
            "warmup"
        } else {
            "run"
        };
        let mut line = format!("\r[{phase} {el:5.1}s/{total:.0}s]");
        for (k, t) in targets.iter().enumerate() {
            for (name, r) in [
                ("call", &t.call),
                ("delivery", &t.delivery),
                ("cycle", &t.cycle),
            ] {
                let (n, e, p50, p99) = lock(r).take_interval();
                if n == 0 && e == 0 {
                    continue;
                }
                let tag = if targets.len() > 1 {
                    ["A", "B"][k.min(1)]
                } else {
                    ""
                };
                line.push_str(&format!(
                    " {tag}{name}: {n}/s p50 {:.2}ms p99 {:.2}ms err {e} |",
                    p50 as f64 / 1000.0,
                    p99 as f64 / 1000.0
                ));
            }
        }
        line.push_str("   ");
        eprint!("{line}");
    }
}
