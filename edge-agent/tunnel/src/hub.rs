//! The hub side: the [`Acceptor`] listening on UDP (QUIC) and TCP (TLS, HTTP/2) on one port
//! number, authenticating edges by client certificate, and the [`EdgeLink`] over which the hub
//! sends one request per stream.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::http::{Request, Response};

use crate::{TlsFiles, Transport, TunnelError};

/// Configuration of the hub's acceptor.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Address to listen on (UDP and TCP, same port number).
    pub listen: SocketAddr,
    /// The hub's certificate, key, and the CA edge certificates must chain to.
    pub tls: TlsFiles,
    /// Keepalive interval (QUIC keep-alive, HTTP/2 pings). Default 1 s.
    pub keepalive: Duration,
    /// A link silent for this long is declared dead. Default 3 s.
    pub idle_timeout: Duration,
    /// Accept QUIC links.
    pub quic: bool,
    /// Accept TLS-over-TCP links.
    pub tcp: bool,
}

impl HubConfig {
    /// A configuration with default timings and both transports enabled.
    pub fn new(listen: SocketAddr, tls: TlsFiles) -> Self {
        HubConfig {
            listen,
            tls,
            keepalive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
            quic: true,
            tcp: true,
        }
    }
}

/// Accepts authenticated edge links on both transports.
pub struct Acceptor {
    local_addr: SocketAddr,
}

impl Acceptor {
    /// Binds UDP (QUIC) and TCP on the same port number.
    pub async fn bind(cfg: HubConfig) -> Result<Acceptor, TunnelError> {
        let _ = cfg;
        Err(TunnelError::AcceptorClosed)
    }

    /// The bound address (the port is shared by UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Next authenticated edge link from either transport.
    pub async fn accept(&mut self) -> Result<EdgeLink, TunnelError> {
        Err(TunnelError::AcceptorClosed)
    }
}

/// One authenticated link to an edge. Cheap to clone; all clones share the link.
#[derive(Clone)]
pub struct EdgeLink {
    edge_id: String,
    transport: Transport,
    remote: SocketAddr,
}

impl EdgeLink {
    /// The edge's identity (certificate Common Name, else first DNS SAN).
    pub fn edge_id(&self) -> &str {
        &self.edge_id
    }

    /// The transport carrying this link.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The edge's address as seen by the hub.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// One request over a new stream. The response body is streamed.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, TunnelError> {
        let _ = req;
        Err(TunnelError::AcceptorClosed)
    }

    /// Resolves when the link is gone (peer closed, idle timeout, error).
    pub async fn closed(&self) {}

    /// Whether the link is gone.
    pub fn is_closed(&self) -> bool {
        true
    }

    /// Closes the link.
    pub fn close(&self, reason: &str) {
        let _ = reason;
    }
}
