//! Certificate minting for the tunnel's mutual TLS: a CA, the hub's server certificate, one
//! client certificate per edge, and a quick-start set written to a directory.

use std::path::{Path, PathBuf};

use crate::TunnelError;

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
}

/// A new self-signed CA.
pub fn new_ca(_common_name: &str) -> Result<Issued, TunnelError> {
    Err(TunnelError::Pki("not implemented".into()))
}

/// Server cert for the hub: `names` are DNS names or IP literals (e.g. "localhost", "127.0.0.1", "10.99.0.1").
pub fn issue_hub(_ca: &Issued, _names: &[String]) -> Result<Issued, TunnelError> {
    Err(TunnelError::Pki("not implemented".into()))
}

/// Client cert for an edge: CN = edge_id (also a DNS SAN), clientAuth EKU.
pub fn issue_edge(_ca: &Issued, _edge_id: &str) -> Result<Issued, TunnelError> {
    Err(TunnelError::Pki("not implemented".into()))
}

/// Writes a quick-start set into `dir`: ca.pem ca-key.pem hub.pem hub-key.pem and `<edge>.pem`
/// `<edge>-key.pem` for each edge id (keys 0600). Returns the paths written.
pub fn quickstart(
    _dir: &Path,
    _hub_names: &[String],
    _edge_ids: &[String],
) -> Result<Vec<PathBuf>, TunnelError> {
    Err(TunnelError::Pki("not implemented".into()))
}
