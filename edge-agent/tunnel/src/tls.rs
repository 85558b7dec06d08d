//! Loading PEM files and building the rustls configurations (ring provider, TLS 1.3, mutual
//! authentication) shared by the hub and the edge; reading the peer's identity from its certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{TlsFiles, TunnelError};

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn server_config(
    _files: &TlsFiles,
    _alpn: &[u8],
) -> Result<rustls::ServerConfig, TunnelError> {
    Err(TunnelError::TlsConfig("not implemented".into()))
}

pub(crate) fn client_config(
    _files: &TlsFiles,
    _alpn: &[u8],
) -> Result<rustls::ClientConfig, TunnelError> {
    Err(TunnelError::TlsConfig("not implemented".into()))
}

#[allow(dead_code)]
pub(crate) fn load_certs(_path: &Path) -> Result<Vec<CertificateDer<'static>>, TunnelError> {
    Err(TunnelError::TlsConfig("not implemented".into()))
}

#[allow(dead_code)]
pub(crate) fn load_key(_path: &Path) -> Result<PrivateKeyDer<'static>, TunnelError> {
    Err(TunnelError::TlsConfig("not implemented".into()))
}
