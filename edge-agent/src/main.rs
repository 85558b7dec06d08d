//! `meshgate-edge`: the edge agent binary (thin CLI over the `edge_agent` library).
//!
//! - `run --config edge.yaml`: build the [`edge_agent::Surface`] and serve it through the tunnel
//!   dialed out to the hub;
//! - `check --config edge.yaml`: validate the config only;
//! - `enroll --control URL --name N --token T --out DIR`: get the certificate (`src/enroll.rs`);
//! - `pki quickstart --out DIR --hub-name N... --edge ID...`: write a CA and certificates;
//! - `serve-local --config X --listen 127.0.0.1:0`: tests only, serves the surface on loopback.
//!
//! SIGTERM/SIGINT kill every child process group and exit 0.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

use edge_agent::{EdgeConfig, Surface};

mod enroll;

// No mimalloc here (unlike the hub): on a small edge box idle memory matters more than
// allocation speed, and mimalloc's per-thread segments cost ~11 MiB of RSS at idle (measured:
// 19.8 MiB with it, 8.4 MiB with the system allocator; BENCHMARKS.md).

/// meshgate edge agent.
#[derive(Parser, Debug)]
#[command(
    name = "meshgate-edge",
    version,
    about = "meshgate edge agent: serves local MCP servers to the hub through an outbound tunnel"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the agent: supervise servers and dial the hub.
    Run {
        /// Config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and exit.
    Check {
        /// Config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Get (or renew) this edge's certificate from meshgate-control.
    Enroll(enroll::EnrollArgs),
    /// Certificate helpers.
    Pki {
        #[command(subcommand)]
        cmd: PkiCmd,
    },
    /// FOR TESTS ONLY: serve the surface on a loopback TCP listener (no tunnel, no TLS, no auth)
    /// and print `listening on ADDR`.
    #[command(hide = true)]
    ServeLocal {
        /// Config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Loopback address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Subcommand, Debug)]
enum PkiCmd {
    /// Write ca.pem, hub.pem and EDGE.pem (with keys) into a directory.
    Quickstart {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Names in the hub certificate (repeatable).
        #[arg(long = "hub-name", required = true)]
        hub_names: Vec<String>,
        /// Edge ids to issue certificates for (repeatable).
        #[arg(long = "edge", required = true)]
        edges: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            edge_agent::supervisor::kill_all_children();
            eprintln!("meshgate-edge: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Enroll(a) => enroll::run(a),
        Cmd::Check { config } => {
            let c = EdgeConfig::load(&config)?;
            println!(
                "config ok: edge {}, {} server(s){}",
                c.edge_id,
                c.servers.len() + usize::from(c.device_enabled),
                if c.hub.is_some() {
                    ""
                } else {
                    " (no hub section: `run` needs one)"
                }
            );
            Ok(())
        }
        Cmd::Pki {
            cmd:
                PkiCmd::Quickstart {
                    out,
                    hub_names,
                    edges,
                },
        } => {
            let files = meshgate_tunnel::pki::quickstart(&out, &hub_names, &edges)?;
            for f in files {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
        Cmd::Run { config } => {
            let c = EdgeConfig::load(&config)?;
            let hub = c
                .hub
                .clone()
                .context("invalid config: hub: required by `meshgate-edge run`")?;
            let base = config.parent().unwrap_or(Path::new("."));
            let rel = |p: &Path| {
                if p.is_absolute() {
                    p.to_owned()
                } else {
                    base.join(p)
                }
            };
            let tls = meshgate_tunnel::TlsFiles {
                ca: rel(&hub.ca),
                cert: rel(&hub.cert),
                key: rel(&hub.key),
            };
            let mut dial = meshgate_tunnel::DialConfig::new(hub.addr, hub.server_name, tls);
            dial.transport = match hub.transport {
                edge_agent::config::Transport::Auto => meshgate_tunnel::TransportChoice::Auto,
                edge_agent::config::Transport::Quic => meshgate_tunnel::TransportChoice::Quic,
                edge_agent::config::Transport::Tcp => meshgate_tunnel::TransportChoice::Tcp,
            };
            dial.backoff_max = hub.backoff_max;
            dial.keepalive = hub.keepalive;
            dial.idle_timeout = hub.idle_timeout;
            dial.quic_timeout = hub.quic_timeout;
            runtime()?.block_on(async move {
                let surface = Surface::new(&c).map_err(anyhow::Error::msg)?;
                tracing::info!(edge = %c.edge_id, hub = %dial.hub, "meshgate-edge running");
                let s2 = surface.clone();
                // A lost tunnel ends every session: the hub forgets them at the same moment.
                let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let s3 = surface.clone();
                tokio::spawn(async move {
                    let mut was_up = false;
                    while let Some(ev) = rx.recv().await {
                        match ev {
                            meshgate_tunnel::LinkEvent::Up { .. } => was_up = true,
                            meshgate_tunnel::LinkEvent::Down { .. } if was_up => {
                                was_up = false;
                                let n = s3.end_all_sessions();
                                tracing::info!(sessions = n, "tunnel lost: sessions ended");
                            }
                            meshgate_tunnel::LinkEvent::Down { .. } => {}
                        }
                    }
                });
                tokio::select! {
                    r = meshgate_tunnel::edge::run(dial, surface, Some(events)) => {
                        s2.shutdown();
                        match r {
                            Ok(never) => match never {},
                            Err(e) => Err(anyhow::Error::new(e).context("tunnel")),
                        }
                    }
                    r = shutdown_signal() => {
                        s2.shutdown();
                        r
                    }
                }
            })
        }
        Cmd::ServeLocal { config, listen } => {
            let c = EdgeConfig::load(&config)?;
            runtime()?.block_on(async move {
                let surface = Surface::new(&c).map_err(anyhow::Error::msg)?;
                let l = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("bind {listen}"))?;
                println!("listening on {}", l.local_addr()?);
                let s2 = surface.clone();
                tokio::select! {
                    r = edge_agent::serve_tcp(surface, l) => {
                        s2.shutdown();
                        r.context("listener failed")
                    }
                    r = shutdown_signal() => {
                        s2.shutdown();
                        r
                    }
                }
            })
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread: the agent waits on sockets and pipes; a multi-thread runtime only adds
    // threads and memory (26 MiB vs 20 MiB idle RSS, measured with mimalloc).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    Ok(())
}
