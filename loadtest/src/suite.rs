//! `meshgate-load suite`: the standard matrix, in under five minutes.
//!
//! Cases (open loop, 2 s warm-up each):
//! - `call-1`, `call-64`, `call-1024`: legacy sessions calling tools at 500, 5,000 and
//!   5,000 requests/s per target; with `--hub` the direct mock and the hub are driven
//!   interleaved in the same run and the table prints hub/direct ratios.
//! - `streams-10k`: 10,000 idle GET streams, notification delivery delay (direct and hub run
//!   one after the other: 20,000 sockets at once would not fit a 20,000-descriptor limit).
//! - `streams-1k-callers`: 1,000 streams plus 64 callers at 2,000 requests/s.
//!
//! Without `--direct`, the suite starts `meshgate-load mock` as a child process (its own
//! descriptor limit, and pinnable). For hub figures, start the mock yourself so the hub can
//! point at it, and pin the three processes apart on a 2-core machine:
//!
//! ```text
//! taskset -c 0 meshgate-load mock --listen 127.0.0.1:9100 &
//! taskset -c 0 meshgate --config hub-to-9100.yaml &          # hub upstream = the mock
//! taskset -c 1 meshgate-load suite --direct http://127.0.0.1:9100/mcp \
//!     --hub http://127.0.0.1:8080/mcp --out suite-out
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::client::Era;
use crate::driver::{self, RunConfig, RunReport, Scenario};
use crate::report;

/// Suite options.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// The upstream mock (started as a child when `None`).
    pub direct: Option<String>,
    /// The hub fronting that mock.
    pub hub: Option<String>,
    /// Output directory for JSON and SVG files.
    pub out: PathBuf,
    /// Seconds per case (default 10; tests use less).
    pub duration: Duration,
    /// Scale session/stream counts down (for tests): divide by this.
    pub scale: usize,
}

/// The whole suite's output (`suite.json`).
#[derive(Debug, Serialize)]
pub struct SuiteReport {
    /// Each case by name.
    pub cases: Vec<(String, RunReport)>,
    /// Hub/direct ratios of the stream cases, which run one after the other.
    pub stream_ratios: Vec<(String, f64)>,
}

fn case(name: &str, base: &RunConfig, f: impl FnOnce(&mut RunConfig)) -> (String, RunConfig) {
    let mut c = base.clone();
    f(&mut c);
    (name.to_owned(), c)
}

/// Runs the matrix and writes `suite.json`, `<case>.json` and `<case>.svg` into `out`.
///
/// # Errors
/// A failing case, an unusable target or unwritable output.
pub async fn run(cfg: &SuiteConfig) -> anyhow::Result<SuiteReport> {
    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", cfg.out.display()))?;
    let mut child = None;
    let direct = match &cfg.direct {
        Some(u) => u.clone(),
        None => {
            let (c, url) = spawn_mock().await?;
            child = Some(c);
            url
        }
    };
    let s = cfg.scale.max(1);
    let mut both = vec![direct.clone()];
    if let Some(h) = &cfg.hub {
        both.push(h.clone());
    }
    let base = RunConfig {
        targets: both.clone(),
        era: Era::Legacy,
        duration: cfg.duration,
        warmup: Duration::from_secs(2).min(cfg.duration),
        live: true,
        ..RunConfig::default()
    };
    let mut cases = vec![
        case("call-1", &base, |c| {
            c.sessions = 1;
            c.rate = Some(500.0);
        }),
        case("call-64", &base, |c| {
            c.sessions = (64 / s).max(1);
            c.rate = Some(5000.0 / s as f64);
        }),
        case("call-1024", &base, |c| {
            c.sessions = (1024 / s).max(1);
            c.rate = Some(5000.0 / s as f64);
        }),
    ];
    for t in &both {
        let tag = if *t == direct { "direct" } else { "hub" };
        cases.push(case(&format!("streams-10k-{tag}"), &base, |c| {
            c.targets = vec![t.clone()];
            c.scenario = Scenario::Stream;
            c.streams = (10_000 / s).max(1);
            c.setup_concurrency = 512;
            c.duration = cfg.duration.max(Duration::from_secs(3));
        }));
    }
    cases.push(case("streams-1k-callers", &base, |c| {
        c.scenario = Scenario::Mixed;
        c.streams = (1000 / s).max(1);
        c.sessions = (64 / s).max(1);
        c.rate = Some(2000.0 / s as f64);
        c.duration = cfg.duration.max(Duration::from_secs(3));
    }));
    let mut out = Vec::new();
    for (name, rc) in cases {
        eprintln!(
            "== {name}: {:?}, {} sessions, {} streams, rate {:?}",
            rc.scenario, rc.sessions, rc.streams, rc.rate
        );
        let rep = driver::run(&rc)
            .await
            .map_err(|e| anyhow::anyhow!("case {name}: {e}"))?;
        println!("== {name}\n{}", report::table(&rep));
        report::write_json(&rep, &cfg.out.join(format!("{name}.json")))?;
        report::write_plot(&rep, &name, &cfg.out.join(format!("{name}.svg")))?;
        out.push((name, rep));
    }
    // The 10k-stream cases ran separately per target: compare them here.
    let mut stream_ratios = Vec::new();
    let find = |n: &str| out.iter().find(|(name, _)| name == n).map(|(_, r)| r);
    if let (Some(d), Some(h)) = (find("streams-10k-direct"), find("streams-10k-hub")) {
        if let (Some(a), Some(b)) = (d.metric("delivery").first(), h.metric("delivery").first()) {
            let r = report::ratios(a, b);
            let parts: Vec<String> = r.iter().map(|(l, v)| format!("{l} {v:.2}×")).collect();
            println!(
                "ratio hub/direct streams-10k delivery: {}",
                parts.join("  ")
            );
            stream_ratios = r.into_iter().map(|(l, v)| (l.to_owned(), v)).collect();
        }
    }
    let rep = SuiteReport {
        cases: out,
        stream_ratios,
    };
    report::write_json(&rep, &cfg.out.join("suite.json"))?;
    if let Some(mut c) = child {
        let _ = c.kill().await;
    }
    Ok(rep)
}

/// Starts `meshgate-load mock` (this executable, or the one named by the
/// `MESHGATE_LOAD_BIN` environment variable) on a free port; returns it and its URL.
async fn spawn_mock() -> anyhow::Result<(tokio::process::Child, String)> {
    let exe = match std::env::var_os("MESHGATE_LOAD_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?,
    };
    spawn_mock_from(&exe).await
}

async fn spawn_mock_from(exe: &Path) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut child = tokio::process::Command::new(exe)
        .args(["mock", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start the mock ({}): {e}", exe.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("mock stdout not captured"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .map_err(|_| anyhow::anyhow!("the mock did not report its address within 10 s"))??
        .ok_or_else(|| anyhow::anyhow!("the mock exited before reporting its address"))?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .ok_or_else(|| anyhow::anyhow!("unexpected mock banner {line:?}"))?
        .to_owned();
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, url))
}
