//! Loading PEM files and building the rustls configurations (ring provider, TLS 1.3, mutual
//! authentication, pinned CA) shared by the hub and the edge; reading the peer's identity from
//! its certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{TlsFiles, TunnelError};

/// The ring provider, installed explicitly on every config (never the process default).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path, reason: impl Into<String>) -> TunnelError {
    TunnelError::TlsFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads every certificate of a PEM file; at least one is required.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TunnelError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, format!("invalid PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate found"));
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c.as_ref())
            .map_err(|e| file_err(path, format!("invalid X.509 certificate: {e}")))?;
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TunnelError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| file_err(path, format!("no valid PEM private key: {e}")))
}

fn roots(path: &Path) -> Result<RootCertStore, TunnelError> {
    let mut store = RootCertStore::empty();
    for c in load_certs(path)? {
        store
            .add(c)
            .map_err(|e| file_err(path, format!("unusable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// Hub side: serves its certificate, requires a client certificate chaining to the CA.
pub(crate) fn server_config(
    files: &TlsFiles,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TunnelError> {
    let provider = provider();
    let roots = roots(&files.ca)?;
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| file_err(&files.ca, format!("client verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TunnelError::TlsConfig(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            file_err(
                &files.key,
                format!("key does not fit certificate {}: {e}", files.cert.display()),
            )
        })?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(cfg)
}

/// Edge side: trusts only the pinned CA, presents its client certificate.
pub(crate) fn client_config(
    files: &TlsFiles,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, TunnelError> {
    let provider = provider();
    let roots = roots(&files.ca)?;
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TunnelError::TlsConfig(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| {
            file_err(
                &files.key,
                format!("key does not fit certificate {}: {e}", files.cert.display()),
            )
        })?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(cfg)
}

/// The identity in a certificate: its Common Name, else its first DNS SAN.
pub(crate) fn identity(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    if let Some(cn) = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        if !cn.is_empty() {
            return Some(cn.to_owned());
        }
    }
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
        _ => None,
    })
}
