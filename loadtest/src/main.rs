//! `meshgate-load`: thin CLI over the `loadtest` library (mock, run, suite).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadtest::client::Era;
use loadtest::driver::{self, RunConfig, Scenario};
use loadtest::mock::{Engine, MockConfig, MockServer, ServiceTime};
use loadtest::{report, scenario, suite, sys};

#[derive(Parser)]
#[command(
    name = "meshgate-load",
    version,
    about = "MCP load harness and fast mock upstream"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the mock MCP upstream until killed.
    Mock(MockArgs),
    /// Drive load at one target (or two with --compare).
    Run(Box<RunArgs>),
    /// Run the standard matrix and write JSON + plots.
    Suite(SuiteArgs),
}

/// Every duration flag takes the workspace grammar (`250ms`, `1.5s`, `10s`, `5m`, bare seconds).
fn dur(s: &str) -> Result<Duration, meshgate_duration::DurationError> {
    meshgate_duration::parse(s)
}

#[derive(Args)]
struct MockArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: std::net::SocketAddr,
    /// Endpoint path.
    #[arg(long, default_value = "/mcp")]
    path: String,
    /// Runtime threads (1 = single core; pin with taskset).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Number of tools.
    #[arg(long, default_value_t = 10)]
    tools: usize,
    /// Tools per tools/list page (0 = one page).
    #[arg(long, default_value_t = 0)]
    page_size: usize,
    /// Bytes of text in each tools/call result.
    #[arg(long, default_value_t = 64)]
    response_bytes: usize,
    /// Service time: 0, 2ms, uniform:1ms..5ms, exp:2ms.
    #[arg(long, default_value = "0")]
    service_time: ServiceTime,
    /// Answer tools/call as SSE.
    #[arg(long)]
    sse: bool,
    /// Progress notifications per call carrying a progressToken.
    #[arg(long, default_value_t = 0)]
    progress: u32,
    /// Period of GET-stream notifications (0 = none).
    #[arg(long, default_value = "1s", value_parser = dur)]
    notify_interval: Duration,
    /// Start of the single stall, from server start.
    #[arg(long, default_value = "0", value_parser = dur)]
    stall_after: Duration,
    /// Length of the stall (0 = none).
    #[arg(long, default_value = "0", value_parser = dur)]
    stall: Duration,
    /// Serve legacy requests without a session instead of answering 400.
    #[arg(long)]
    no_require_session: bool,
    /// Serving engine: tokio | monoio (monoio falls back to tokio for --threads > 1,
    /// --stall, --service-time, --sse and --progress).
    #[arg(long, default_value = "tokio")]
    engine: Engine,
    /// Annotate the first N tools `readOnlyHint: true` (a hub may retry them on a replica).
    #[arg(long, default_value_t = 0)]
    annotate: usize,
}

#[derive(Args)]
struct RunArgs {
    /// Target MCP endpoint URL (http://host:port/path).
    target: Option<String>,
    /// Drive this second target interleaved with the first and print B/A ratios.
    #[arg(long)]
    compare: Option<String>,
    /// TOML scenario file; command-line flags override it.
    #[arg(long = "file")]
    file: Option<PathBuf>,
    /// call | stream | churn | mixed.
    #[arg(long)]
    scenario: Option<Scenario>,
    /// legacy | modern (2026-07-28).
    #[arg(long)]
    era: Option<Era>,
    /// Calling sessions (call, mixed) or churners (churn).
    #[arg(long)]
    sessions: Option<usize>,
    /// Held GET streams (stream, mixed).
    #[arg(long)]
    streams: Option<usize>,
    /// Open-loop rate per target, requests (or churn cycles) per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: each session sends back-to-back.
    #[arg(long)]
    closed_loop: bool,
    /// Measured duration.
    #[arg(long, value_parser = dur)]
    duration: Option<Duration>,
    /// Unmeasured warm-up.
    #[arg(long, value_parser = dur)]
    warmup: Option<Duration>,
    /// Distinct tools to call.
    #[arg(long)]
    tools: Option<usize>,
    /// Attach progress tokens to calls.
    #[arg(long)]
    progress: bool,
    /// Request timeout.
    #[arg(long, value_parser = dur)]
    timeout: Option<Duration>,
    /// Skip the initial MCP probe of each target.
    #[arg(long)]
    no_preflight: bool,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG latency-percentile spectrum.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Driver runtime threads (1 = current-thread, pin with taskset).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Args)]
struct SuiteArgs {
    /// The mock the hub points at (default: start one as a child process).
    #[arg(long)]
    direct: Option<String>,
    /// The hub's MCP endpoint (adds direct-vs-hub comparisons).
    #[arg(long)]
    hub: Option<String>,
    /// Output directory.
    #[arg(long, default_value = "suite-out")]
    out: PathBuf,
    /// Measured duration per case.
    #[arg(long, default_value = "10s", value_parser = dur)]
    duration: Duration,
    /// Divide session/stream counts by this (smoke runs).
    #[arg(long, default_value_t = 1)]
    scale: usize,
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    })
}

fn build_run(a: &RunArgs) -> anyhow::Result<RunConfig> {
    let f = match &a.file {
        Some(p) => scenario::load(p)?,
        None => scenario::ScenarioFile::default(),
    };
    let parse_d = |s: &Option<String>| -> anyhow::Result<Option<Duration>> {
        s.as_deref()
            .map(meshgate_duration::parse)
            .transpose()
            .map_err(anyhow::Error::msg)
    };
    let d = RunConfig::default();
    let target = a.target.clone().or(f.target.clone()).ok_or_else(|| {
        anyhow::anyhow!(
            "no target: give a URL (e.g. http://127.0.0.1:9100/mcp) or `target` in --file"
        )
    })?;
    let mut targets = vec![target];
    if let Some(b) = a.compare.clone().or(f.compare.clone()) {
        targets.push(b);
    }
    let scenario = match (a.scenario, &f.scenario) {
        (Some(s), _) => s,
        (None, Some(s)) => s.parse().map_err(anyhow::Error::msg)?,
        (None, None) => Scenario::Call,
    };
    let era = match (a.era, &f.era) {
        (Some(e), _) => e,
        (None, Some(e)) => e.parse().map_err(anyhow::Error::msg)?,
        (None, None) => Era::Legacy,
    };
    let closed = a.closed_loop || (a.rate.is_none() && f.closed_loop == Some(true));
    let streams_default = if matches!(scenario, Scenario::Stream | Scenario::Mixed) {
        100
    } else {
        0
    };
    Ok(RunConfig {
        targets,
        scenario,
        era,
        sessions: a.sessions.or(f.sessions).unwrap_or(d.sessions),
        streams: a.streams.or(f.streams).unwrap_or(streams_default),
        rate: if closed {
            None
        } else {
            a.rate.or(f.rate).or(d.rate)
        },
        duration: a.duration.or(parse_d(&f.duration)?).unwrap_or(d.duration),
        warmup: a.warmup.or(parse_d(&f.warmup)?).unwrap_or(d.warmup),
        tools: a.tools.or(f.tools).unwrap_or(d.tools),
        progress: a.progress || f.progress == Some(true),
        timeout: a.timeout.or(parse_d(&f.timeout)?).unwrap_or(d.timeout),
        preflight: !a.no_preflight,
        live: !a.quiet,
        ..d
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshgate-load: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Mock(a) => {
            let lim = sys::raise_nofile()?;
            let h = MockServer::start(MockConfig {
                listen: a.listen,
                path: a.path,
                threads: a.threads,
                tool_count: a.tools,
                page_size: a.page_size,
                response_bytes: a.response_bytes,
                service_time: a.service_time,
                sse: a.sse,
                progress_count: a.progress,
                notify_interval: a.notify_interval,
                stall_after: a.stall_after,
                stall: a.stall,
                require_session: !a.no_require_session,
                engine: a.engine,
                read_only_tools: a.annotate,
                ..MockConfig::default()
            })
            .map_err(|e| anyhow::anyhow!("mock: cannot listen on {}: {e}", a.listen))?;
            println!(
                "meshgate-load mock listening on {} (open files limit {}, engine {:?})",
                h.url(),
                lim.soft,
                h.engine()
            );
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            h.wait();
            Ok(())
        }
        Cmd::Run(a) => {
            let cfg = build_run(&a)?;
            let rt = runtime(a.threads)?;
            let rep = rt.block_on(driver::run(&cfg))?;
            print!("{}", report::table(&rep));
            if let Some(p) = &a.json {
                report::write_json(&rep, p)?;
            }
            if let Some(p) = &a.plot {
                let title = format!(
                    "{:?} {} sessions {} streams rate {:?}",
                    cfg.scenario, cfg.sessions, cfg.streams, cfg.rate
                );
                report::write_plot(&rep, &title, p)?;
            }
            let ok: u64 = rep.results.iter().map(|s| s.ok).sum();
            if ok == 0 {
                anyhow::bail!("no request succeeded");
            }
            Ok(())
        }
        Cmd::Suite(a) => {
            let rt = runtime(1)?;
            rt.block_on(suite::run(&suite::SuiteConfig {
                direct: a.direct,
                hub: a.hub,
                out: a.out.clone(),
                duration: a.duration,
                scale: a.scale,
            }))?;
            println!("suite written to {}", a.out.display());
            Ok(())
        }
    }
}
