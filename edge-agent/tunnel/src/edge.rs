//! The edge side: dial the hub (QUIC first, TLS over TCP as fallback), serve a hyper service on
//! every hub-opened stream, and reconnect with capped exponential backoff and full jitter. The
//! edge opens no listening socket: QUIC uses a client-only endpoint on an ephemeral UDP port,
//! TCP is an outbound connect.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;

use crate::{tls, TlsFiles, Transport, TunnelError, ALPN_QUIC, ALPN_TCP};

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

/// Everything prepared once from the configuration.
struct Prepared {
    quic: Option<quinn::ClientConfig>,
    tcp: Option<tokio_rustls::TlsConnector>,
    server_name: ServerName<'static>,
}

fn prepare(cfg: &DialConfig) -> Result<Prepared, TunnelError> {
    let server_name = ServerName::try_from(cfg.server_name.clone())
        .map_err(|e| TunnelError::TlsConfig(format!("server name {:?}: {e}", cfg.server_name)))?;
    let quic = if cfg.transport != TransportChoice::Tcp {
        let client_tls = tls::client_config(&cfg.tls, ALPN_QUIC)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(client_tls))
            .map_err(|e| TunnelError::TlsConfig(format!("quic client tls: {e}")))?;
        let mut qc = quinn::ClientConfig::new(Arc::new(crypto));
        qc.transport_config(Arc::new(crate::hub::quic_transport(
            cfg.keepalive,
            cfg.idle_timeout,
        )?));
        Some(qc)
    } else {
        None
    };
    let tcp = if cfg.transport != TransportChoice::Quic {
        let client_tls = tls::client_config(&cfg.tls, ALPN_TCP)?;
        Some(tokio_rustls::TlsConnector::from(Arc::new(client_tls)))
    } else {
        None
    };
    Ok(Prepared {
        quic,
        tcp,
        server_name,
    })
}

enum Link {
    Quic {
        conn: quinn::Connection,
        // Keeps the client endpoint (ephemeral UDP socket) alive for the link's lifetime.
        _endpoint: quinn::Endpoint,
    },
    Tcp(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn resolve(hub: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(hub)
        .await
        .map_err(|e| format!("resolve {hub}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("resolve {hub}: no address"));
    }
    Ok(addrs)
}

async fn dial_quic(
    client: &quinn::ClientConfig,
    addr: SocketAddr,
    server_name: &str,
) -> Result<Link, String> {
    let bind: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // Client-only endpoint: no server config, so it never accepts connections.
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| format!("bind udp: {e}"))?;
    let connecting = endpoint
        .connect_with(client.clone(), addr, server_name)
        .map_err(|e| format!("quic connect {addr}: {e}"))?;
    let conn = connecting
        .await
        .map_err(|e| format!("quic handshake with {addr}: {e}"))?;
    Ok(Link::Quic {
        conn,
        _endpoint: endpoint,
    })
}

async fn dial_tcp(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    server_name: ServerName<'static>,
    keepalive: Duration,
) -> Result<Link, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("tcp connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(&stream);
    let _ = sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(keepalive)
            .with_interval(keepalive),
    );
    let tls = connector
        .connect(server_name, stream)
        .await
        .map_err(|e| format!("tls handshake with {addr}: {e}"))?;
    Ok(Link::Tcp(Box::new(tls)))
}

/// One dial attempt over the configured transports; the error names every failure.
async fn dial(cfg: &DialConfig, prep: &Prepared) -> Result<(Link, Transport, SocketAddr), String> {
    let addrs = resolve(&cfg.hub).await?;
    let mut failures = Vec::new();
    if let Some(client) = &prep.quic {
        for &addr in &addrs {
            let attempt = dial_quic(client, addr, &cfg.server_name);
            // Bounded in every mode: a handshake stuck on a dead path is abandoned and the next
            // attempt starts fresh (after backoff) instead of waiting out the idle timeout.
            let res = match tokio::time::timeout(cfg.quic_timeout, attempt).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "quic handshake with {addr}: no answer within {:?}",
                    cfg.quic_timeout
                )),
            };
            match res {
                Ok(link) => return Ok((link, Transport::Quic, addr)),
                Err(e) => failures.push(e),
            }
        }
    }
    if let Some(connector) = &prep.tcp {
        for &addr in &addrs {
            let attempt = dial_tcp(connector, addr, prep.server_name.clone(), cfg.keepalive);
            let res =
                match tokio::time::timeout(cfg.idle_timeout.max(Duration::from_secs(5)), attempt)
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!("tcp/tls dial {addr}: timed out")),
                };
            match res {
                Ok(link) => return Ok((link, Transport::Tcp, addr)),
                Err(e) => failures.push(e),
            }
        }
    }
    Err(failures.join("; "))
}

async fn serve<S, B>(link: Link, cfg: &DialConfig, service: S) -> String
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
    match link {
        Link::Quic { conn, _endpoint } => {
            // Dropping this future (edge task cancelled) closes the link and aborts every
            // stream being served, so the hub sees the loss at once.
            let _guard = CloseOnDrop(conn.clone(), _endpoint);
            let mut streams = tokio::task::JoinSet::new();
            loop {
                while streams.try_join_next().is_some() {}
                match conn.accept_bi().await {
                    Ok((send, recv)) => {
                        let service = service.clone();
                        streams.spawn(async move {
                            let io = TokioIo::new(tokio::io::join(recv, send));
                            if let Err(e) = hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, service)
                                .await
                            {
                                tracing::debug!(error = %e, "tunnel stream ended with error");
                            }
                        });
                    }
                    Err(e) => break e.to_string(),
                }
            }
        }
        Link::Tcp(tls) => {
            let res = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(cfg.keepalive)
                .keep_alive_timeout(cfg.idle_timeout)
                .max_concurrent_streams(crate::hub::MAX_STREAMS)
                .serve_connection(TokioIo::new(tls), service)
                .await;
            match res {
                Ok(()) => "connection closed by hub".to_string(),
                Err(e) => e.to_string(),
            }
        }
    }
}

struct CloseOnDrop(quinn::Connection, quinn::Endpoint);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(quinn::VarInt::from_u32(0), b"edge link down");
        self.1.close(quinn::VarInt::from_u32(0), b"edge link down");
    }
}

/// Full jitter: a uniformly random delay in `[0, cap]`.
fn jitter(cap: Duration) -> Duration {
    let mut buf = [0u8; 8];
    let r = match getrandom::fill(&mut buf) {
        Ok(()) => u64::from_le_bytes(buf),
        Err(_) => u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0),
        ),
    };
    let nanos = cap.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(r % (nanos + 1))
}

fn emit(events: &Option<UnboundedSender<LinkEvent>>, ev: LinkEvent) {
    if let Some(tx) = events {
        let _ = tx.send(ev);
    }
}

/// Runs forever: dial, serve `service` on every hub-opened stream until the link dies, back off
/// (capped exponential, full jitter, reset after a link that stayed up), dial again.
/// Returns only on a configuration error (unreadable/invalid TLS files). Logs each up/down with
/// transport and reason.
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
    let prep = prepare(&cfg)?;
    let backoff_min = cfg.backoff_min.max(Duration::from_millis(1));
    let backoff_max = cfg.backoff_max.max(backoff_min);
    let mut backoff = backoff_min;
    loop {
        match dial(&cfg, &prep).await {
            Ok((link, transport, hub)) => {
                tracing::info!(%transport, %hub, "tunnel link up");
                emit(&events, LinkEvent::Up { transport, hub });
                let since = Instant::now();
                let reason = serve(link, &cfg, service.clone()).await;
                tracing::warn!(%transport, %hub, %reason, "tunnel link down");
                emit(
                    &events,
                    LinkEvent::Down {
                        reason: format!("{transport} link to {hub} down: {reason}"),
                    },
                );
                // A link that stayed up longer than the cap earns a fresh backoff.
                if since.elapsed() >= backoff_max {
                    backoff = backoff_min;
                }
            }
            Err(reason) => {
                tracing::warn!(hub = %cfg.hub, %reason, "tunnel dial failed");
                emit(&events, LinkEvent::Down { reason });
            }
        }
        let delay = jitter(backoff);
        tracing::debug!(?delay, "tunnel reconnect backoff");
        tokio::time::sleep(delay).await;
        backoff = (backoff * 2).min(backoff_max);
    }
}
