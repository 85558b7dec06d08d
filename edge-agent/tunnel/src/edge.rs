//! The edge side: dial the hub (QUIC first, TLS over TCP as fallback), serve a hyper service on
//! every hub-opened stream, and reconnect with capped exponential backoff and full jitter.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::http::{Request, Response};
use tokio::sync::mpsc::UnboundedSender;

use crate::{TlsFiles, Transport, TunnelError};

/// Which transport the edge dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    /// QUIC first; if no QUIC handshake within `quic_timeout`, TLS over TCP.
    Auto,
    /// QUIC only.
    Quic,
    /// TLS over TCP only.
    Tcp,
}

/// Configuration of the edge's dialer.
#[derive(Debug, Clone)]
pub struct DialConfig {
    /// The hub, `host:port`.
    pub hub: String,
    /// The name in the hub's certificate.
    pub server_name: String,
    /// The edge's certificate, key, and the pinned hub CA.
    pub tls: TlsFiles,
    /// Transport selection.
    pub transport: TransportChoice,
    /// How long to wait for the QUIC handshake in `Auto` before falling back. Default 1 s.
    pub quic_timeout: Duration,
    /// Keepalive interval. Default 1 s.
    pub keepalive: Duration,
    /// Idle timeout. Default 3 s.
    pub idle_timeout: Duration,
    /// First backoff delay. Default 100 ms.
    pub backoff_min: Duration,
    /// Backoff cap. Default 2 s.
    pub backoff_max: Duration,
}

impl DialConfig {
    /// A configuration with default timings and `Auto` transport.
    pub fn new(hub: impl Into<String>, server_name: impl Into<String>, tls: TlsFiles) -> Self {
        DialConfig {
            hub: hub.into(),
            server_name: server_name.into(),
            tls,
            transport: TransportChoice::Auto,
            quic_timeout: Duration::from_secs(1),
            keepalive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// A change of the link's state, reported to the optional events channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link is up.
    Up {
        /// Its transport.
        transport: Transport,
        /// The hub address it reached.
        hub: SocketAddr,
    },
    /// A link went down, or a dial failed.
    Down {
        /// Why.
        reason: String,
    },
}

/// Runs forever: dial, serve `service` on every hub-opened stream until the link dies, back off,
/// dial again. Returns only on a configuration error (unreadable/invalid TLS files).
pub async fn run<S, B>(
    cfg: DialConfig,
    service: S,
    events: Option<UnboundedSender<LinkEvent>>,
) -> Result<Infallible, TunnelError>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = (cfg, service, events);
    Err(TunnelError::TlsConfig("not implemented".into()))
}
