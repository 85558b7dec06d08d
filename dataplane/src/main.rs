//! `meshgate`: the hub binary. Loads the config (a YAML file, or quick-start flags), starts one
//! worker per core and prints the MCP endpoint.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dataplane::config::{HubConfig, Snapshot, UpstreamConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// meshgate hub: one MCP endpoint federating many MCP servers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// YAML config file (see README "Configuration").
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address (overrides the file).
    #[arg(long)]
    listen: Option<String>,
    /// An upstream MCP server, NAME=URL (repeatable; added to the file's).
    #[arg(long = "upstream", value_name = "NAME=URL")]
    upstreams: Vec<String>,
    /// Name separator, or "none" (overrides the file).
    #[arg(long)]
    separator: Option<String>,
    /// Worker threads, 0 = one per core (overrides the file).
    #[arg(long)]
    workers: Option<usize>,
    /// IO driver: auto, iouring or legacy (overrides the file; env MESHGATE_DRIVER too).
    #[arg(long, env = "MESHGATE_DRIVER")]
    driver: Option<String>,
    /// Also start the two bundled example MCP servers (clock, notes) and federate them.
    #[arg(long)]
    demo: bool,
    /// Validate the config, print it, and exit.
    #[arg(long)]
    check: bool,
    /// Tools instead of serving (audit verification, key helpers).
    #[command(subcommand)]
    tool: Option<Tool>,
}

/// `meshgate <tool>`: helpers that do not serve.
#[derive(clap::Subcommand, Debug)]
enum Tool {
    /// The audit log.
    Audit {
        #[command(subcommand)]
        what: AuditCmd,
    },
    /// Prints the hash of an API key (for `auth.api_keys` and `admin.api_keys`).
    HashKey {
        /// The key.
        key: String,
    },
    /// Writes a new Ed25519 key file (mode 0600; audit signing or the user assertion) and
    /// prints its public key.
    Keygen {
        /// Where to write it (refused if it exists).
        path: PathBuf,
    },
}

/// `meshgate audit …`.
#[derive(clap::Subcommand, Debug)]
enum AuditCmd {
    /// Verifies a log: every record's hash chain and signature, and the signed head (so a
    /// truncated tail is found too). Names the first bad record.
    Verify {
        /// The JSONL audit log.
        file: PathBuf,
        /// The public key (PEM) or the signing key file it belongs to.
        #[arg(long)]
        key: PathBuf,
    },
}

/// Runs a tool; returns the process exit code.
fn run_tool(tool: Tool) -> anyhow::Result<i32> {
    match tool {
        Tool::Audit {
            what: AuditCmd::Verify { file, key },
        } => {
            let vk = governance::keys::load_verifying_key(&key)
                .or_else(|_| governance::keys::load_signing_key(&key).map(|k| k.verifying_key()))
                .with_context(|| format!("reading key {}", key.display()))?;
            match governance::audit::verify(&file, &vk) {
                Ok(s) => {
                    println!("ok: {} verified ({s:?})", file.display());
                    Ok(0)
                }
                Err(e) => {
                    println!("BAD: {}: {e}", file.display());
                    Ok(1)
                }
            }
        }
        Tool::HashKey { key } => {
            println!("{}", governance::identity::hash_api_key(&key));
            Ok(0)
        }
        Tool::Keygen { path } => {
            let vk = governance::keys::generate_key_file(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            print!("{}", governance::keys::public_key_pem(&vk));
            Ok(0)
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cli = Cli::parse();
    if let Some(tool) = cli.tool.take() {
        std::process::exit(run_tool(tool)?);
    }
    let mut cfg = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config {}", path.display()))?;
            HubConfig::from_yaml(&text)
                .with_context(|| format!("invalid config {}", path.display()))?
        }
        None => HubConfig::empty(),
    };
    if let Some(l) = cli.listen {
        cfg.listen = l;
    }
    if let Some(s) = cli.separator {
        cfg.separator = s;
    }
    if let Some(n) = cli.workers {
        cfg.workers = n;
    }
    if let Some(d) = cli.driver {
        cfg.driver = d;
    }
    for u in &cli.upstreams {
        let (name, url) = u
            .split_once('=')
            .with_context(|| format!("--upstream {u:?}: expected NAME=URL"))?;
        cfg.upstreams.push(UpstreamConfig::quick(name, url));
    }
    if cli.demo {
        for ex in [
            dataplane::demo::Example::Clock,
            dataplane::demo::Example::Notes,
        ] {
            let url = dataplane::demo::start(ex).context("starting a demo server")?;
            let name = if ex == dataplane::demo::Example::Clock {
                "clock"
            } else {
                "notes"
            };
            cfg.upstreams.push(UpstreamConfig::quick(name, &url));
        }
    }
    let snap = Snapshot::from_config(&cfg).context("invalid config")?;
    if cli.check {
        println!("{snap:#?}");
        return Ok(());
    }
    dataplane::preflight::check_names(&snap).context("refusing to start")?;
    if snap.upstreams.is_empty() {
        tracing::warn!("no upstreams configured: the hub will serve empty lists");
    }
    // Every open stream holds two sockets (client and upstream): take all the descriptors the
    // hard limit allows, and say how many that is.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(open_files = n, "open-file limit (each open stream uses 2)"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let running = dataplane::start(snap).context("starting the hub")?;
    println!(
        "meshgate listening on http://{}{}",
        running.addr, running.hub.snap.endpoint
    );
    for (u, up) in running.hub.snap.upstreams.iter().enumerate() {
        if up.edge_slot.is_none() {
            println!("  upstream {u}: {} -> {}", up.name, up.url);
        }
    }
    if let Some(a) = running.edge_addr {
        println!("meshgate edge tunnels on {a} (QUIC/UDP and TLS/TCP)");
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    // SIGTERM/SIGINT: deny what is held for approval (with a reason), flush the audit log, exit.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("installing the signal handlers")?;
    let hub = running.hub.clone();
    std::thread::Builder::new()
        .name("meshgate-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "shutting down");
                dataplane::shutdown(&hub, "the hub is shutting down", Duration::from_secs(2));
                std::process::exit(0);
            }
        })
        .context("starting the signal thread")?;
    for h in running.workers {
        let _ = h.join();
    }
    Ok(())
}
