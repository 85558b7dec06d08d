//! The hub side: the [`Acceptor`] listening on UDP (QUIC) and TCP (TLS, HTTP/2) on one port
//! number, authenticating edges by client certificate, and the [`EdgeLink`] over which the hub
//! sends one request per stream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::{tls, TlsFiles, Transport, TunnelError, ALPN_QUIC, ALPN_TCP};

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

/// Time allowed for a TLS handshake on TCP before the peer is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams (QUIC) / h2 streams (TCP) allowed in flight per link.
pub(crate) const MAX_STREAMS: u32 = 4096;

/// QUIC transport parameters shared by hub and edge.
pub(crate) fn quic_transport(
    keepalive: Duration,
    idle: Duration,
) -> Result<quinn::TransportConfig, TunnelError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(keepalive));
    t.max_idle_timeout(Some(quinn::IdleTimeout::try_from(idle).map_err(|e| {
        TunnelError::TlsConfig(format!("idle timeout {idle:?}: {e}"))
    })?));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    // Hub and edges are usually within a continent: start from a 100 ms RTT guess (quinn's
    // default is 333 ms), so a handshake packet lost while a link comes back is re-sent in
    // ~0.3 s instead of ~1 s.
    t.initial_rtt(Duration::from_millis(100));
    Ok(t)
}

/// Accepts authenticated edge links on both transports.
pub struct Acceptor {
    local_addr: SocketAddr,
    links: mpsc::UnboundedReceiver<EdgeLink>,
    tasks: Vec<JoinHandle<()>>,
    endpoint: Option<quinn::Endpoint>,
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(ep) = &self.endpoint {
            // Stop taking new connections; established links stay up.
            ep.set_server_config(None);
        }
    }
}

impl Acceptor {
    /// Binds UDP (QUIC) and TCP on the same port number. With port 0, QUIC binds first and TCP
    /// takes the same port number.
    pub async fn bind(cfg: HubConfig) -> Result<Acceptor, TunnelError> {
        if !cfg.quic && !cfg.tcp {
            return Err(TunnelError::TlsConfig(
                "hub acceptor needs at least one transport (quic or tcp)".into(),
            ));
        }
        let quic_tls = if cfg.quic {
            Some(tls::server_config(&cfg.tls, ALPN_QUIC)?)
        } else {
            None
        };
        let tcp_tls = if cfg.tcp {
            Some(Arc::new(tls::server_config(&cfg.tls, ALPN_TCP)?))
        } else {
            None
        };

        // Bind, retrying when port 0 gave a UDP port whose TCP twin is taken.
        let mut attempt = 0;
        let (endpoint, listener, local_addr) = loop {
            attempt += 1;
            let mut addr = cfg.listen;
            let endpoint = match &quic_tls {
                Some(server_tls) => {
                    let crypto =
                        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls.clone())
                            .map_err(|e| TunnelError::TlsConfig(format!("quic server tls: {e}")))?;
                    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
                    sc.transport_config(Arc::new(quic_transport(cfg.keepalive, cfg.idle_timeout)?));
                    let ep = quinn::Endpoint::server(sc, addr)
                        .map_err(|e| TunnelError::io(format!("bind udp {addr} for quic"), e))?;
                    addr = ep
                        .local_addr()
                        .map_err(|e| TunnelError::io("quic local address", e))?;
                    Some(ep)
                }
                None => None,
            };
            let listener = if tcp_tls.is_some() {
                match TcpListener::bind(addr).await {
                    Ok(l) => {
                        addr = l
                            .local_addr()
                            .map_err(|e| TunnelError::io("tcp local address", e))?;
                        Some(l)
                    }
                    Err(e) if cfg.listen.port() == 0 && endpoint.is_some() && attempt < 20 => {
                        tracing::debug!(%addr, error = %e, "tcp twin of quic port taken, rebinding");
                        continue;
                    }
                    Err(e) => return Err(TunnelError::io(format!("bind tcp {addr}"), e)),
                }
            } else {
                None
            };
            break (endpoint, listener, addr);
        };

        let (tx, rx) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        if let Some(ep) = &endpoint {
            tasks.push(tokio::spawn(quic_accept_loop(ep.clone(), tx.clone())));
        }
        if let (Some(l), Some(server_tls)) = (listener, tcp_tls) {
            tasks.push(tokio::spawn(tcp_accept_loop(
                l,
                tokio_rustls::TlsAcceptor::from(server_tls),
                cfg.keepalive,
                cfg.idle_timeout,
                tx,
            )));
        }
        tracing::info!(%local_addr, quic = cfg.quic, tcp = cfg.tcp, "tunnel acceptor listening");
        Ok(Acceptor {
            local_addr,
            links: rx,
            tasks,
            endpoint,
        })
    }

    /// The bound address (the port is shared by UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Next authenticated edge link from either transport. Failed handshakes are logged with
    /// `tracing::warn!` (peer address and reason) and never returned.
    pub async fn accept(&mut self) -> Result<EdgeLink, TunnelError> {
        self.links.recv().await.ok_or(TunnelError::AcceptorClosed)
    }
}

async fn quic_accept_loop(endpoint: quinn::Endpoint, tx: mpsc::UnboundedSender<EdgeLink>) {
    while let Some(incoming) = endpoint.accept().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            let peer = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%peer, transport = "quic", reason = %e, "edge handshake refused");
                    return;
                }
            };
            let id = conn
                .peer_identity()
                .and_then(|any| {
                    any.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
                        .ok()
                })
                .and_then(|certs| certs.first().and_then(tls::identity));
            let Some(edge_id) = id else {
                tracing::warn!(%peer, transport = "quic", reason = "client certificate has no CN or DNS SAN", "edge handshake refused");
                conn.close(quinn::VarInt::from_u32(1), b"no edge identity");
                return;
            };
            let link = EdgeLink::new(edge_id, Transport::Quic, peer, LinkKind::Quic(conn.clone()));
            let watcher = Arc::downgrade(&link.inner);
            tokio::spawn(async move {
                let err = conn.closed().await;
                if let Some(w) = watcher.upgrade() {
                    w.mark_closed(err.to_string());
                }
            });
            tracing::info!(edge = link.edge_id(), %peer, transport = "quic", "edge link up");
            let _ = tx.send(link);
        });
    }
}

async fn tcp_accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    keepalive: Duration,
    idle: Duration,
    tx: mpsc::UnboundedSender<EdgeLink>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(reason) = tcp_link(stream, peer, acceptor, keepalive, idle, tx).await {
                tracing::warn!(%peer, transport = "tcp", %reason, "edge handshake refused");
            }
        });
    }
}

async fn tcp_link(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    keepalive: Duration,
    idle: Duration,
    tx: mpsc::UnboundedSender<EdgeLink>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| format!("tls handshake timed out after {TLS_HANDSHAKE_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let edge_id = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(tls::identity)
        .ok_or_else(|| "client certificate has no CN or DNS SAN".to_string())?;
    let kill = Arc::new(KillSwitch::default());
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(keepalive)
        .keep_alive_timeout(idle)
        .keep_alive_while_idle(true)
        .max_concurrent_reset_streams(1024)
        .handshake::<_, Full<Bytes>>(TokioIo::new(KillableIo {
            inner: tls,
            kill: kill.clone(),
        }))
        .await
        .map_err(|e| format!("http/2 handshake: {e}"))?;
    let link = EdgeLink::new(edge_id, Transport::Tcp, peer, LinkKind::Tcp(sender, kill));
    let inner = Arc::downgrade(&link.inner);
    tokio::spawn(async move {
        let reason = match conn.await {
            Ok(()) => "connection closed by edge".to_string(),
            Err(e) => e.to_string(),
        };
        if let Some(inner) = inner.upgrade() {
            inner.mark_closed(reason);
        }
    });
    tracing::info!(edge = link.edge_id(), %peer, transport = "tcp", "edge link up");
    let _ = tx.send(link);
    Ok(())
}

enum LinkKind {
    Quic(quinn::Connection),
    Tcp(
        hyper::client::conn::http2::SendRequest<Full<Bytes>>,
        Arc<KillSwitch>,
    ),
}

/// Cuts a TCP link from the hub side: once fired, the transport under the HTTP/2 connection
/// fails every read and write, so the connection errors out and every stream in flight with it.
#[derive(Default)]
struct KillSwitch {
    killed: std::sync::atomic::AtomicBool,
    wakers: Mutex<Vec<std::task::Waker>>,
}

impl KillSwitch {
    fn fire(&self) {
        self.killed.store(true, std::sync::atomic::Ordering::SeqCst);
        let wakers = match self.wakers.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(_) => Vec::new(),
        };
        for w in wakers {
            w.wake();
        }
    }

    fn check(&self, cx: &std::task::Context<'_>) -> std::io::Result<()> {
        if let Ok(mut w) = self.wakers.lock() {
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                if w.len() >= 4 {
                    w.remove(0);
                }
                w.push(cx.waker().clone());
            }
        }
        if self.killed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "link closed by hub",
            ));
        }
        Ok(())
    }
}

struct KillableIo<T> {
    inner: T,
    kill: Arc<KillSwitch>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for KillableIo<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Err(e) = self.kill.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for KillableIo<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Err(e) = self.kill.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Err(e) = self.kill.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct LinkInner {
    edge_id: String,
    transport: Transport,
    remote: SocketAddr,
    kind: LinkKind,
    closed: watch::Sender<Option<String>>,
}

impl LinkInner {
    fn mark_closed(&self, reason: String) {
        let first = self.closed.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason.clone());
                true
            } else {
                false
            }
        });
        if first {
            tracing::info!(edge = %self.edge_id, peer = %self.remote, transport = %self.transport, %reason, "edge link down");
        }
    }

    fn closed_reason(&self) -> Option<String> {
        self.closed.borrow().clone()
    }
}

impl Drop for LinkInner {
    fn drop(&mut self) {
        match &self.kind {
            LinkKind::Quic(conn) => conn.close(quinn::VarInt::from_u32(0), b"link dropped by hub"),
            LinkKind::Tcp(_, kill) => kill.fire(),
        }
    }
}

/// One authenticated link to an edge. Cheap to clone; all clones share the link.
#[derive(Clone)]
pub struct EdgeLink {
    inner: Arc<LinkInner>,
}

impl std::fmt::Debug for EdgeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeLink")
            .field("edge_id", &self.inner.edge_id)
            .field("transport", &self.inner.transport)
            .field("remote", &self.inner.remote)
            .field("closed", &self.inner.closed_reason())
            .finish()
    }
}

impl EdgeLink {
    fn new(edge_id: String, transport: Transport, remote: SocketAddr, kind: LinkKind) -> Self {
        let (closed, _) = watch::channel(None);
        EdgeLink {
            inner: Arc::new(LinkInner {
                edge_id,
                transport,
                remote,
                kind,
                closed,
            }),
        }
    }

    /// The edge's identity (certificate Common Name, else first DNS SAN).
    pub fn edge_id(&self) -> &str {
        &self.inner.edge_id
    }

    /// The transport carrying this link.
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    /// The edge's address as seen by the hub.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.remote
    }

    fn closed_err(&self, reason: String) -> TunnelError {
        TunnelError::LinkClosed {
            edge_id: self.inner.edge_id.clone(),
            transport: self.inner.transport,
            reason,
        }
    }

    fn request_err(&self, reason: impl std::fmt::Display) -> TunnelError {
        if let Some(r) = self.inner.closed_reason() {
            return self.closed_err(r);
        }
        TunnelError::Request {
            edge_id: self.inner.edge_id.clone(),
            reason: reason.to_string(),
        }
    }

    /// One request over a new stream. Request body: `Full<Bytes>`. The response body is
    /// streamed; it ends with an error if the link dies mid-body. Fails at once on a closed link.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, TunnelError> {
        if let Some(r) = self.inner.closed_reason() {
            return Err(self.closed_err(r));
        }
        match &self.inner.kind {
            LinkKind::Quic(conn) => {
                if let Some(e) = conn.close_reason() {
                    self.inner.mark_closed(e.to_string());
                    return Err(self.closed_err(e.to_string()));
                }
                let (send, recv) = conn
                    .open_bi()
                    .await
                    .map_err(|e| self.request_err(format!("open stream: {e}")))?;
                let io = TokioIo::new(tokio::io::join(recv, send));
                let (mut sender, conn_task) = hyper::client::conn::http1::Builder::new()
                    .handshake::<_, Full<Bytes>>(io)
                    .await
                    .map_err(|e| self.request_err(format!("http/1 on stream: {e}")))?;
                tokio::spawn(async move {
                    if let Err(e) = conn_task.await {
                        tracing::debug!(error = %e, "tunnel stream ended with error");
                    }
                });
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| self.request_err(e))
            }
            LinkKind::Tcp(sender, _) => {
                let mut sender = sender.clone();
                sender
                    .ready()
                    .await
                    .map_err(|e| self.request_err(format!("h2 not ready: {e}")))?;
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| self.request_err(e))
            }
        }
    }

    /// Resolves when the link is gone (peer closed, idle timeout, error).
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        let _ = rx.wait_for(|r| r.is_some()).await;
    }

    /// Whether the link is gone.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.borrow().is_some()
    }

    /// Why the link closed, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.inner.closed_reason()
    }

    /// Closes the link; requests in flight end with an error.
    pub fn close(&self, reason: &str) {
        match &self.inner.kind {
            LinkKind::Quic(conn) => {
                conn.close(quinn::VarInt::from_u32(0), reason.as_bytes());
            }
            LinkKind::Tcp(_, kill) => kill.fire(),
        }
        self.inner.mark_closed(format!("closed by hub: {reason}"));
    }
}
