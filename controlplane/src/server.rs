//! `meshgate-control serve`: opens the store (migrating it), loads or creates the keys (snapshot
//! signing key, edge CA, bootstrap admin key), publishes the first snapshot, starts the background
//! tasks (approval sweeper, snapshot refresh for HA) and serves the router over HTTPS (rustls) —
//! or plain HTTP, which is allowed on loopback only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;

use crate::api::{self, App, Settings};
use crate::auth::{Auth, OidcConfig};
use crate::export::{Exporter, Sink};
use crate::pki::EdgeCa;
use crate::publish::Publisher;
use crate::store::{SqlStore, Store};

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory (SQLite file, keys, CA) — created if missing.
    pub data_dir: PathBuf,
    /// Database URL (default `sqlite://<data>/control.db`).
    pub db: Option<String>,
    /// Snapshot signing key file (default: kept in the database keyring, shared by replicas).
    pub signing_key: Option<PathBuf>,
    /// Edge CA certificate file (default: kept in the database keyring).
    pub edge_ca: Option<PathBuf>,
    /// Edge CA key file.
    pub edge_ca_key: Option<PathBuf>,
    /// Bootstrap admin key file (default `<data>/admin.key`, created when missing).
    pub bootstrap_key_file: Option<PathBuf>,
    /// Bootstrap admin key given directly (env `MESHGATE_CONTROL_ADMIN_KEY`).
    pub bootstrap_key: Option<String>,
    /// Bootstrap key with role `hub` for the hubs (env `MESHGATE_CONTROL_HUB_KEY`).
    pub bootstrap_hub_key: Option<String>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS key (PEM).
    pub tls_key: Option<PathBuf>,
    /// OIDC issuer for bearer JWTs.
    pub oidc: Option<OidcConfig>,
    /// Audit export sinks.
    pub audit_export: Vec<Sink>,
    /// Serve plain HTTP on a non-loopback address (behind a TLS-terminating proxy or mesh).
    pub allow_plain_http: bool,
    /// Handler settings.
    pub settings: Settings,
}

impl ServeConfig {
    /// Defaults for a listen address and data directory.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        ServeConfig {
            listen,
            data_dir,
            db: None,
            signing_key: None,
            edge_ca: None,
            edge_ca_key: None,
            bootstrap_key_file: None,
            bootstrap_key: None,
            bootstrap_hub_key: None,
            tls_cert: None,
            tls_key: None,
            oidc: None,
            audit_export: vec![],
            allow_plain_http: false,
            settings: Settings::default(),
        }
    }
}

/// Builds the application state (store, keys, CA, first snapshot).
pub async fn build(cfg: &ServeConfig) -> anyhow::Result<Arc<App>> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("create {}", cfg.data_dir.display()))?;
    let db = cfg
        .db
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", cfg.data_dir.join("control.db").display()));
    let store = SqlStore::connect(&db)
        .await
        .with_context(|| format!("open database {}", redact(&db)))?;
    if let Some(mode) = store.journal_mode().await? {
        tracing::info!(db = %redact(&db), journal = %mode, "database open (SQLite)");
    } else {
        tracing::info!(db = %redact(&db), "database open (PostgreSQL)");
    }
    let store: Arc<dyn Store> = Arc::new(store);
    // Key material: files when given (e.g. mounted from a Secret), else the database keyring,
    // which every replica on one PostgreSQL shares (the first one to start creates it).
    let key = match &cfg.signing_key {
        Some(path) => crate::files::load_or_create_signing_key(path).map_err(anyhow::Error::msg)?,
        None => {
            let candidate = crate::files::new_signing_key_pem().map_err(anyhow::Error::msg)?;
            let pem = store
                .keyring_put_if_absent(
                    "snapshot-signing-key",
                    &candidate,
                    crate::store::sql::now_ms(),
                )
                .await?;
            crate::files::parse_signing_key(&pem, "keyring snapshot-signing-key")
                .map_err(anyhow::Error::msg)?
        }
    };
    let ca = match (&cfg.edge_ca, &cfg.edge_ca_key) {
        (Some(c), Some(k)) => EdgeCa::load_or_create(c, k).map_err(anyhow::Error::msg)?,
        (None, None) => {
            let (c, k) = EdgeCa::generate_pem().map_err(anyhow::Error::msg)?;
            let candidate = serde_json::json!({"cert": c, "key": k}).to_string();
            let stored = store
                .keyring_put_if_absent("edge-ca", &candidate, crate::store::sql::now_ms())
                .await?;
            let v: serde_json::Value =
                serde_json::from_str(&stored).context("keyring edge-ca is not JSON")?;
            EdgeCa::from_pem(
                v["cert"].as_str().unwrap_or_default(),
                v["key"].as_str().unwrap_or_default(),
            )
            .map_err(anyhow::Error::msg)?
        }
        _ => anyhow::bail!("--edge-ca and --edge-ca-key go together"),
    };
    let auth = Auth::new(store.clone(), cfg.oidc.clone());
    let bootstrap = match &cfg.bootstrap_key {
        Some(k) => k.trim().to_owned(),
        None => {
            let path = cfg
                .bootstrap_key_file
                .clone()
                .unwrap_or_else(|| cfg.data_dir.join("admin.key"));
            match std::fs::read_to_string(&path) {
                Ok(k) => k.trim().to_owned(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let k = crate::auth::new_key();
                    crate::files::write_secret(&path, format!("{k}\n").as_bytes())
                        .map_err(anyhow::Error::msg)?;
                    tracing::warn!(path = %path.display(), "bootstrap admin API key created (keep it secret; create named keys with `meshgate-control keys create`)");
                    k
                }
                Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
            }
        }
    };
    auth.ensure_bootstrap(&bootstrap, crate::auth::Role::Admin)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap key: {}", e.message))?;
    if let Some(k) = &cfg.bootstrap_hub_key {
        auth.ensure_bootstrap(k.trim(), crate::auth::Role::Hub)
            .await
            .map_err(|e| anyhow::anyhow!("bootstrap hub key: {}", e.message))?;
    }
    let publisher = Publisher::new(store.clone(), key);
    publisher
        .init()
        .await
        .context("publish the first snapshot")?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let (decisions, _) = tokio::sync::watch::channel(0u64);
    Ok(Arc::new(App {
        store,
        publisher,
        auth,
        ca,
        exporter: Exporter::start(cfg.audit_export.clone(), host),
        settings: cfg.settings.clone(),
        watching: Default::default(),
        decisions,
        audit_refused: Default::default(),
    }))
}

fn redact(url: &str) -> String {
    // postgres://user:password@host → postgres://user:***@host
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.split_once(':') {
                Some((u, _)) => format!("{}{u}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn spawn_background(app: &Arc<App>) {
    // Held calls past their deadline are denied ("expired") and waiting hubs woken.
    let a = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            match a.store.expire_approvals(crate::store::sql::now_ms()).await {
                Ok(ids) if !ids.is_empty() => {
                    for id in &ids {
                        tracing::info!(id = %id, "approval expired (denied)");
                    }
                    a.decisions.send_modify(|n| *n += 1);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "approval sweeper"),
            }
        }
    });
    // Another control plane on the same database may publish: serve its snapshots too.
    let a = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if let Err(e) = a.publisher.refresh().await {
                tracing::warn!(error = %e, "snapshot refresh");
            }
        }
    });
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject as _;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("certificates in {}", cert.display()))?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("key in {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Runs the server until SIGTERM/SIGINT. Prints `meshgate-control listening on URL` on stdout
/// once the socket is bound (tests wait for it).
pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    if tls.is_none() && !cfg.listen.ip().is_loopback() {
        if !cfg.allow_plain_http {
            anyhow::bail!(
                "refusing plain HTTP on {} (not loopback): pass --tls-cert and --tls-key \
                 (or --allow-plain-http behind a TLS-terminating proxy)",
                cfg.listen
            );
        }
        tracing::warn!(listen = %cfg.listen, "plain HTTP on a non-loopback address (--allow-plain-http): credentials travel unencrypted unless a proxy or mesh encrypts them");
    }
    let app = build(&cfg).await?;
    spawn_background(&app);
    let router = api::router(app.clone());
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("bind {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("meshgate-control listening on {scheme}://{addr}");
    tracing::info!(%addr, scheme, snapshot = app.publisher.current().map(|p| p.version).unwrap_or(0), "meshgate-control serving");
    match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = shutdown_signal().await;
                })
                .await
                .context("serve")?;
        }
        Some(acceptor) => {
            let shutdown = shutdown_signal();
            tokio::pin!(shutdown);
            loop {
                let (tcp, peer) = tokio::select! {
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => { tracing::warn!(error = %e, "accept"); continue; }
                    },
                    _ = &mut shutdown => break,
                };
                let acceptor = acceptor.clone();
                let svc = TowerToHyperService::new(router.clone());
                tokio::spawn(async move {
                    let tls =
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if let Err(e) = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
        }
    }
    tracing::info!("meshgate-control stopped");
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://mg:secret@db:5432/mg"),
            "postgres://mg:***@db:5432/mg"
        );
        assert_eq!(super::redact("sqlite:///x/y.db"), "sqlite:///x/y.db");
    }
}
