//! The edge agent's half of enrollment (feature `enroll`): generate a key pair locally (ECDSA
//! P-256; written 0600 before anything is sent), send only a CSR with the one-time token to
//! `POST /v1/enroll`, and store the certificate, the edge CA and the renewal time next to the
//! key. [`renew`] sends a CSR for the same key to `POST /v1/edges/renew` before expiry. The
//! private key never leaves the edge.
//!
//! Files in the output directory (the names `meshgate-edge pki quickstart` uses):
//! `<name>.pem` (certificate), `<name>-key.pem` (key), `edge-ca.pem` (the CA hubs trust for
//! edges), `<name>.enroll.json` (serial, expiry, when to renew).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use rcgen::{CertificateParams, KeyPair};
use serde::{Deserialize, Serialize};

use crate::http::Client;
use crate::watch::write_atomic;

/// Why enrollment or renewal failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The control plane could not be reached.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// The control plane refused (status and its message).
    #[error("control plane refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its error message.
        message: String,
    },
    /// Key, CSR or files.
    #[error("{0}")]
    Local(String),
}

/// What enrollment produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrolled {
    /// Edge name (certificate CN).
    pub edge: String,
    /// Certificate serial (hex).
    pub serial: String,
    /// Validity end (Unix ms).
    pub not_after_ms: i64,
    /// Renew from this time on (Unix ms).
    pub renew_after_ms: i64,
    /// Certificate file.
    pub cert: PathBuf,
    /// Key file.
    pub key: PathBuf,
    /// Edge CA file.
    pub ca: PathBuf,
}

#[derive(Deserialize)]
struct Issued {
    edge: String,
    certificate: String,
    ca: String,
    serial: String,
    not_after_ms: i64,
    renew_after_ms: i64,
}

fn local(what: &str, e: impl std::fmt::Display) -> EnrollError {
    EnrollError::Local(format!("{what}: {e}"))
}

fn check_name(name: &str) -> Result<(), EnrollError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        || name.starts_with('.')
    {
        return Err(EnrollError::Local(format!(
            "edge name {name:?}: 1-64 characters of [A-Za-z0-9_.-]"
        )));
    }
    Ok(())
}

fn paths(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
        dir.join("edge-ca.pem"),
        dir.join(format!("{name}.enroll.json")),
    )
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), EnrollError> {
    use std::os::unix::fs::PermissionsExt as _;
    write_atomic(path, bytes).map_err(|e| local(&format!("write {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| local(&format!("chmod {}", path.display()), e))
}

fn csr_for(name: &str, key: &KeyPair) -> Result<String, EnrollError> {
    CertificateParams::new(vec![name.to_owned()])
        .map_err(|e| local("CSR name", e))?
        .serialize_request(key)
        .map_err(|e| local("CSR", e))?
        .pem()
        .map_err(|e| local("CSR PEM", e))
}

async fn exchange(
    client: &Client,
    path: &str,
    body: serde_json::Value,
    dir: &Path,
    name: &str,
) -> Result<Enrolled, EnrollError> {
    let r = client
        .request(
            hyper::Method::POST,
            path,
            Some(Bytes::from(body.to_string())),
            Duration::from_secs(30),
        )
        .await?;
    if !r.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| r.text());
        return Err(EnrollError::Refused {
            status: r.status,
            message,
        });
    }
    let issued: Issued = serde_json::from_slice(&r.body).map_err(|e| local("answer", e))?;
    if issued.edge != name {
        return Err(EnrollError::Local(format!(
            "certificate issued for {:?}, not {name:?} (the token was for another edge)",
            issued.edge
        )));
    }
    let (cert, key, ca, meta) = paths(dir, name);
    write_mode(&cert, issued.certificate.as_bytes(), 0o644)?;
    write_mode(&ca, issued.ca.as_bytes(), 0o644)?;
    let out = Enrolled {
        edge: issued.edge,
        serial: issued.serial,
        not_after_ms: issued.not_after_ms,
        renew_after_ms: issued.renew_after_ms,
        cert,
        key,
        ca,
    };
    let j = serde_json::to_vec_pretty(&out).map_err(|e| local("enroll.json", e))?;
    write_mode(&meta, &j, 0o644)?;
    Ok(out)
}

/// Enrolls edge `name` with a one-time `token`: a new key in `dir` (0600), a CSR to the control
/// plane, the certificate and CA back.
pub async fn enroll(
    client: &Client,
    token: &str,
    name: &str,
    dir: &Path,
) -> Result<Enrolled, EnrollError> {
    check_name(name)?;
    std::fs::create_dir_all(dir).map_err(|e| local(&format!("create {}", dir.display()), e))?;
    let key = KeyPair::generate().map_err(|e| local("generate key", e))?;
    let (_, key_path, _, _) = paths(dir, name);
    write_mode(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    let csr = csr_for(name, &key)?;
    exchange(
        client,
        "/v1/enroll",
        serde_json::json!({"token": token, "csr": csr}),
        dir,
        name,
    )
    .await
}

/// Renews the certificate of `name` in `dir` (same key; the CSR's signature proves possession).
pub async fn renew(client: &Client, name: &str, dir: &Path) -> Result<Enrolled, EnrollError> {
    check_name(name)?;
    let (_, key_path, _, _) = paths(dir, name);
    let pem = std::fs::read_to_string(&key_path)
        .map_err(|e| local(&format!("read {}", key_path.display()), e))?;
    let key = KeyPair::from_pem(&pem).map_err(|e| local("key", e))?;
    let csr = csr_for(name, &key)?;
    exchange(
        client,
        "/v1/edges/renew",
        serde_json::json!({"csr": csr}),
        dir,
        name,
    )
    .await
}

/// The stored enrollment state of `name` in `dir`, if any.
pub fn state(name: &str, dir: &Path) -> Option<Enrolled> {
    let (_, _, _, meta) = paths(dir, name);
    std::fs::read(meta)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Whether the certificate should be renewed at `now_ms` (inside its renewal window).
pub fn due(e: &Enrolled, now_ms: i64) -> bool {
    now_ms >= e.renew_after_ms
}
