//! `meshgate-edge enroll`: obtains the edge's client certificate from `meshgate-control`
//! (DESIGN.md §7, §8). The key pair is generated here and never leaves the box: only a CSR and
//! the one-time token (from `meshgate-control edge enroll NAME`) are sent. `--renew` exchanges a
//! CSR for the same key for a fresh certificate before expiry (run it from a timer; with
//! `--if-due` it does nothing until the renewal window opens). The files written are the ones the
//! `hub:` section of `edge.yaml` names: `<out>/<name>.pem`, `<out>/<name>-key.pem`, plus
//! `<out>/edge-ca.pem` and `<out>/<name>.enroll.json`.
//!
//! Not on any request path: it runs once (or from a timer) before `meshgate-edge run`.

use std::path::PathBuf;

use anyhow::Context as _;
use meshgate_control_client::enroll;
use meshgate_control_client::http::Client;

/// Arguments of `meshgate-edge enroll`.
#[derive(clap::Args, Debug)]
pub(crate) struct EnrollArgs {
    /// Control plane URL (`https://control.example:7443`).
    #[arg(long, env = "MESHGATE_CONTROL_URL")]
    control: String,
    /// CA certificate (PEM) of the control plane's TLS certificate (for an https URL).
    #[arg(long)]
    control_ca: Option<PathBuf>,
    /// Edge name (the certificate CN the hubs know this edge by).
    #[arg(long)]
    name: String,
    /// One-time enrollment token (not needed with --renew).
    #[arg(long, env = "MESHGATE_ENROLL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Directory for the key, certificate and CA.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Renew the existing certificate (same key) instead of enrolling.
    #[arg(long)]
    renew: bool,
    /// With --renew: only when the renewal window has opened.
    #[arg(long)]
    if_due: bool,
}

/// Runs `meshgate-edge enroll`.
pub(crate) fn run(a: EnrollArgs) -> anyhow::Result<()> {
    let ca = a
        .control_ca
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("read {}", p.display())))
        .transpose()?;
    let client = Client::new(&a.control, ca.as_deref(), None)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let done = rt.block_on(async {
        if a.renew {
            if a.if_due {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                match enroll::state(&a.name, &a.out) {
                    Some(s) if !enroll::due(&s, now) => return Ok(None),
                    _ => {}
                }
            }
            enroll::renew(&client, &a.name, &a.out).await.map(Some)
        } else {
            let token = a
                .token
                .as_deref()
                .context("--token (or MESHGATE_ENROLL_TOKEN) is required to enroll")?;
            enroll::enroll(&client, token, &a.name, &a.out)
                .await
                .map(Some)
        }
        .map_err(anyhow::Error::new)
    })?;
    match done {
        None => println!("certificate of {} not due for renewal", a.name),
        Some(e) => {
            println!("certificate {} (serial {})", e.cert.display(), e.serial);
            println!("key {} (generated here, never sent)", e.key.display());
            println!("edge CA {}", e.ca.display());
            println!(
                "renew after {} ms since epoch (expires {})",
                e.renew_after_ms, e.not_after_ms
            );
        }
    }
    Ok(())
}
