//! Follows a control plane the way a hub does and prints each verified snapshot:
//!
//! ```sh
//! MESHGATE_CONTROL_TOKEN=mgc_... cargo run -p meshgate-control-client --example follow -- \
//!     http://127.0.0.1:7070 /tmp/hub-state
//! ```
//!
//! Stop it, stop the control plane, start it again: it prints the snapshot from disk first.

use meshgate_control_client::{WatchConfig, Watcher};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: follow URL STATE_DIR")?;
    let dir = args.next().ok_or("usage: follow URL STATE_DIR")?;
    let mut cfg = WatchConfig::from_url(&url, dir)?;
    cfg.token = std::env::var("MESHGATE_CONTROL_TOKEN").ok();
    cfg.ca_pem = std::env::var_os("MESHGATE_CONTROL_CA")
        .map(std::fs::read)
        .transpose()?;
    let watcher = Watcher::start(cfg)?;
    let mut rx = watcher.subscribe();
    // A hub awaits this from its own runtime; a one-thread tokio runtime stands in here.
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    rt.block_on(async move {
        loop {
            if let Some(v) = rx.borrow_and_update().clone() {
                let s = &v.snapshot;
                println!(
                    "snapshot v{} sha256 {}: {} servers, {} kills, {} revoked edges, policy {}",
                    s.version,
                    &v.sha256[..12],
                    s.catalog.servers.len(),
                    s.kill.active.len(),
                    s.revoked.len(),
                    if s.policy.is_null() { "none" } else { "set" }
                );
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    Ok(())
}
