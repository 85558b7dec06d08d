//! The edge tunnel: mutual-TLS QUIC dialed by `meshgate-edge` (TLS over TCP with HTTP/2 as the
//! fallback when UDP is blocked), the hub opening one stream per HTTP request.
//!
//! The crate owns the wire between hub and edge: [`pki`] mints the certificates, [`hub`] accepts
//! authenticated edge links and sends requests over them, [`edge`] dials the hub and serves a
//! hyper service on every hub-opened stream, reconnecting with backoff when the link dies.

use std::fmt;
use std::path::PathBuf;

pub mod edge;
pub mod hub;
pub mod pki;
mod tls;

pub use edge::{DialConfig, LinkEvent, TransportChoice};
pub use hub::{Acceptor, EdgeLink, HubConfig};

/// ALPN id spoken on the QUIC transport.
pub const ALPN_QUIC: &[u8] = b"meshgate-tunnel/1";
/// ALPN id spoken on the TLS-over-TCP transport (HTTP/2).
pub const ALPN_TCP: &[u8] = b"h2";

/// Response and request body type used across the tunnel.
pub type BoxBody =
    http_body_util::combinators::BoxBody<bytes::Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The PEM files of one side of the tunnel.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that the peer's certificate must chain to (pinned: the only trust root).
    pub ca: PathBuf,
    /// This side's certificate chain.
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
}

/// Which transport carries a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// QUIC (one bidirectional stream per request, HTTP/1.1 on each stream).
    Quic,
    /// TLS over TCP (HTTP/2, one h2 stream per request).
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
        })
    }
}

/// Errors of the tunnel.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// A TLS file could not be read or parsed.
    #[error("tls file {path}: {reason}")]
    TlsFile {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS configuration is invalid (e.g. the key does not match the certificate).
    #[error("tls config: {0}")]
    TlsConfig(String),
    /// Certificate generation failed.
    #[error("pki: {0}")]
    Pki(String),
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The link is closed; no request can be sent on it.
    #[error("link to edge {edge_id} ({transport}) is closed: {reason}")]
    LinkClosed {
        /// The edge the link belonged to.
        edge_id: String,
        /// Its transport.
        transport: Transport,
        /// Why it closed.
        reason: String,
    },
    /// Opening a stream or exchanging the request failed.
    #[error("request to edge {edge_id} failed: {reason}")]
    Request {
        /// The edge.
        edge_id: String,
        /// What failed.
        reason: String,
    },
    /// Dialing the hub failed.
    #[error("dial {hub}: {reason}")]
    Dial {
        /// The hub address dialed.
        hub: String,
        /// What failed.
        reason: String,
    },
    /// The acceptor was shut down.
    #[error("acceptor closed")]
    AcceptorClosed,
}

impl TunnelError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TunnelError::Io {
            context: context.into(),
            source,
        }
    }
}
