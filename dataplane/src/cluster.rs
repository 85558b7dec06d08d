//! Hub replicas: which replica owns a session, ids a replica mints for itself, and the one
//! internal hop that carries a request to its owner. Part of step 4 (`session`) of the request
//! path (DESIGN.md §6): before a request looks its session up, [`Cluster::route`] says whether
//! this replica serves it or forwards it.
//!
//! # Ownership
//!
//! The replicas (from `cluster.peers`, or the addresses a DNS name resolves to, e.g. a
//! Kubernetes headless service) form a consistent-hash [`Ring`]; a session's owner is the first
//! replica on the ring for its id that is not marked down. A replica mints only ids it owns
//! ([`Cluster::mint`]), so `initialize` may land anywhere and needs no hop. A request for a
//! session this replica does not hold goes to the owner in one hop, carrying
//! [`FORWARDED_BY`]; a request that carries it is never forwarded again (loop guard) — the
//! receiver serves it or answers 404. When the owner cannot be reached it is marked down for a
//! while, and the next replica on the ring takes the session over from the shared store.
//!
//! An external load balancer hashing on `Mcp-Session-Id` (see `deploy/nginx/`) spreads requests
//! without knowing this ring; the hop corrects the difference.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h1::{BodyKind, ClientConn, Request, ServerConn};
use monoio::net::TcpStream;
use parking_lot::{Mutex, RwLock};

use crate::ring::{Ring, DEFAULT_VNODES};

/// Header on a forwarded request: the name of the replica that forwarded it (loop guard).
pub const FORWARDED_BY: &str = "meshgate-forwarded-by";

/// How long an unreachable replica stays out of the ring's candidates.
const DOWN_FOR: Duration = Duration::from_secs(3);

/// Largest forwarded answer read whole (bigger or streamed answers are relayed chunk by chunk).
const MAX_WHOLE: u64 = 1024 * 1024;

/// Cluster settings (`cluster:` in the config).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// This replica's name on the ring: the `ip:port` other replicas reach it at.
    pub advertise: String,
    /// Static replica list (`ip:port`, this replica included).
    pub peers: Vec<String>,
    /// A DNS name (`host:port`) whose addresses are the replicas (re-resolved every `refresh`).
    pub dns: Option<String>,
    /// DNS refresh interval.
    pub refresh: Duration,
    /// Connect and head timeout of the internal hop.
    pub forward_timeout: Duration,
}

/// One membership view: the ring and the replicas' addresses.
struct View {
    names: Vec<Arc<str>>,
    addrs: Vec<SocketAddr>,
    ring: Ring,
    me: Option<usize>,
}

impl View {
    fn new(mut names: Vec<String>, me: &str) -> View {
        names.sort();
        names.dedup();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let ring = Ring::new(&refs, DEFAULT_VNODES);
        let addrs = names
            .iter()
            .map(|n| {
                n.parse()
                    .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
            })
            .collect();
        let me = names.iter().position(|n| n == me);
        View {
            names: names.into_iter().map(Arc::from).collect(),
            addrs,
            ring,
            me,
        }
    }
}

/// Where a request for a session goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This replica serves it (holds the session, or is the one to take it over).
    Here,
    /// Forward it to this replica.
    Peer {
        /// Its ring name.
        name: Arc<str>,
        /// Its address.
        addr: SocketAddr,
    },
}

/// The replica set as this replica sees it.
pub struct Cluster {
    settings: ClusterSettings,
    view: RwLock<Arc<View>>,
    down: Mutex<Vec<(Arc<str>, Instant)>>,
}

impl Cluster {
    /// The cluster from settings (static peers now; DNS peers once resolved, see
    /// [`Cluster::refresh`]).
    pub fn new(settings: ClusterSettings) -> Arc<Cluster> {
        let mut names = settings.peers.clone();
        names.push(settings.advertise.clone());
        let view = View::new(names, &settings.advertise);
        let c = Arc::new(Cluster {
            settings,
            view: RwLock::new(Arc::new(view)),
            down: Mutex::new(Vec::new()),
        });
        c.refresh();
        c
    }

    /// This replica's ring name.
    pub fn me(&self) -> &str {
        &self.settings.advertise
    }

    /// Timeout of the internal hop.
    pub fn forward_timeout(&self) -> Duration {
        self.settings.forward_timeout
    }

    /// Replica names in the current view.
    pub fn members(&self) -> Vec<Arc<str>> {
        self.view.read().names.clone()
    }

    /// Re-resolves the DNS name, if any, and swaps in the new view when the set changed.
    /// Called from housekeeping (blocking DNS is fine there, never on a worker).
    pub fn refresh(&self) {
        let Some(dns) = &self.settings.dns else {
            return;
        };
        let resolved: Vec<String> = match dns.to_socket_addrs() {
            Ok(a) => a.map(|a| a.to_string()).collect(),
            Err(e) => {
                tracing::warn!(dns = %dns, error = %e, "cannot resolve the replica set; keeping the last view");
                return;
            }
        };
        let mut names = resolved;
        names.extend(self.settings.peers.iter().cloned());
        names.push(self.settings.advertise.clone());
        let new = View::new(names, &self.settings.advertise);
        let changed = new.names != self.view.read().names;
        if changed {
            let list: Vec<&str> = new.names.iter().map(|n| &**n).collect();
            tracing::info!(replicas = ?list, "hub replica set changed");
            *self.view.write() = Arc::new(new);
        }
    }

    /// Every `refresh` interval.
    pub fn refresh_interval(&self) -> Duration {
        self.settings.refresh
    }

    fn is_down(&self, name: &str, now: Instant) -> bool {
        let mut down = self.down.lock();
        down.retain(|(_, until)| *until > now);
        down.iter().any(|(n, _)| &**n == name)
    }

    /// Keeps an unreachable replica out of the candidates for a while.
    pub fn mark_down(&self, name: &Arc<str>) {
        tracing::warn!(replica = %name, "hub replica unreachable: the next replica on the ring takes its sessions over");
        let mut down = self.down.lock();
        down.retain(|(n, _)| n != name);
        down.push((name.clone(), Instant::now() + DOWN_FOR));
    }

    /// Where a request for session `sid` goes: the first replica on the ring for `sid` that
    /// is not marked down.
    pub fn route(&self, sid: &str) -> Route {
        let view = self.view.read().clone();
        let now = Instant::now();
        for i in view.ring.candidates(sid.as_bytes()) {
            if Some(i) == view.me {
                return Route::Here;
            }
            if !self.is_down(&view.names[i], now) {
                return Route::Peer {
                    name: view.names[i].clone(),
                    addr: view.addrs[i],
                };
            }
        }
        Route::Here
    }

    /// Whether this replica owns `sid` (first on the ring, ignoring replicas marked down).
    pub fn owns(&self, sid: &str) -> bool {
        let view = self.view.read();
        view.me.is_some() && view.ring.primary(sid.as_bytes()) == view.me
    }

    /// A fresh session id this replica owns (ids are drawn until one hashes here: `n`
    /// draws on average for `n` replicas; bounded).
    pub fn mint(&self) -> Arc<str> {
        let mut id = crate::session::mint_session_id();
        for _ in 0..10_000 {
            if self.owns(&id) {
                break;
            }
            id = crate::session::mint_session_id();
        }
        id
    }
}

/// Why a forward failed before the peer answered (the caller marks the peer down; nothing
/// reached the client yet).
#[derive(Debug, thiserror::Error)]
#[error("replica {peer} unreachable: {reason}")]
pub struct Unreachable {
    /// The peer's ring name.
    pub peer: Arc<str>,
    /// What failed.
    pub reason: String,
    /// Whether the request may have reached the peer (sent, then no answer): it may have run,
    /// so it must not be replayed elsewhere. `false`: never delivered, safe to send elsewhere.
    pub sent: bool,
}

/// Idle kept-alive connections to other replicas, per worker thread (a worker is one thread
/// and `ClientConn` never leaves it).
const MAX_IDLE: usize = 64;

thread_local! {
    static IDLE: std::cell::RefCell<Vec<(SocketAddr, ClientConn)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn take_idle(addr: SocketAddr) -> Option<ClientConn> {
    IDLE.with(|v| {
        let mut v = v.borrow_mut();
        let i = v.iter().rposition(|(a, _)| *a == addr)?;
        Some(v.swap_remove(i).1)
    })
}

fn put_idle(addr: SocketAddr, conn: ClientConn) {
    if !conn.is_reusable() {
        return;
    }
    IDLE.with(|v| {
        let mut v = v.borrow_mut();
        if v.len() < MAX_IDLE {
            v.push((addr, conn));
        }
    });
}

/// Headers never copied across the hop (hop-by-hop, or written by the codec).
fn end_to_end(name: &str) -> bool {
    !matches!(
        name.to_ascii_lowercase().as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "host"
            | "te"
            | "upgrade"
            | "proxy-connection"
    )
}

/// Sends `req` to the owning replica and relays its answer (JSON, SSE or empty) to the client
/// as it arrives. `Ok(keep)` once an answer started (whether the client connection may be
/// reused); `Err` when the peer could not be reached or answered nothing (the client has been
/// sent nothing, so the caller may try the next replica).
///
/// # Errors
/// [`Unreachable`] as described.
pub async fn forward(
    cluster: &Cluster,
    conn: &mut ServerConn<TcpStream>,
    req: &Request,
    peer: &Arc<str>,
    addr: SocketAddr,
) -> Result<bool, Unreachable> {
    let unreachable = |reason: String| Unreachable {
        peer: peer.clone(),
        reason,
        sent: false,
    };
    let lost = |reason: String| Unreachable {
        peer: peer.clone(),
        reason,
        sent: true,
    };
    let t = cluster.forward_timeout();
    let mut headers: Vec<(&str, &[u8])> = req
        .head
        .headers
        .iter()
        .filter(|(n, _)| end_to_end(n))
        .collect();
    headers.push((FORWARDED_BY, cluster.me().as_bytes()));
    let method = std::str::from_utf8(&req.head.method_raw).unwrap_or("POST");
    let target = std::str::from_utf8(&req.head.target).unwrap_or("/");
    let host = peer.to_string();
    let answer_within = t.max(Duration::from_secs(30));
    // A kept-alive connection to the peer first (no connect on the hot path). One the peer
    // closed while idle fails before any answer: the request goes once more on a fresh one.
    let mut pooled = None;
    if let Some(mut idle) = take_idle(addr) {
        match monoio::time::timeout(
            answer_within,
            idle.send(method, target, &host, &headers, &req.body),
        )
        .await
        {
            Ok(Ok(h)) => pooled = Some((idle, h)),
            Ok(Err(h1::ClientError::Closed)) | Ok(Err(h1::ClientError::Io(_))) => {}
            Ok(Err(e)) => return Err(lost(e.to_string())),
            Err(_) => return Err(lost("no answer".into())),
        }
    }
    let (mut up, head) = match pooled {
        Some(p) => p,
        None => {
            let mut up = match monoio::time::timeout(t, ClientConn::connect(addr)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(unreachable(e.to_string())),
                Err(_) => return Err(unreachable(format!("connect timed out after {t:?}"))),
            };
            // A TCP connect to a dead replica's port on the same host can pick that very port
            // as its source and connect to itself (nothing listens there): that is "refused".
            let local = up.inner().local_addr().ok();
            if local.is_some() && local == up.inner().peer_addr().ok() {
                return Err(unreachable(
                    "nothing listens there (self-connected socket)".into(),
                ));
            }
            match monoio::time::timeout(
                answer_within,
                up.send(method, target, &host, &headers, &req.body),
            )
            .await
            {
                Ok(Ok(h)) => (up, h),
                // Refused before any byte of the request was taken: never delivered.
                Ok(Err(h1::ClientError::Io(e)))
                    if e.kind() == std::io::ErrorKind::ConnectionRefused =>
                {
                    return Err(unreachable(e.to_string()))
                }
                Ok(Err(e)) => return Err(lost(e.to_string())),
                Err(_) => return Err(lost("no answer".into())),
            }
        }
    };
    let keep = req.head.keep_alive;
    let copied: Vec<(String, Bytes)> = head
        .headers
        .iter()
        .filter(|(n, _)| end_to_end(n))
        .map(|(n, v)| (n.to_string(), Bytes::copy_from_slice(v)))
        .collect();
    let out: Vec<(&str, &[u8])> = copied.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
    match head.body {
        BodyKind::Empty => {
            put_idle(addr, up);
            Ok(conn.write_empty(head.status, &out, keep).await.is_ok() && keep)
        }
        BodyKind::Length(n) if n <= MAX_WHOLE => {
            let body = match up.read_to_end(MAX_WHOLE as usize).await {
                Ok(b) => b,
                Err(e) => return Err(lost(format!("answer body: {e}"))),
            };
            put_idle(addr, up);
            Ok(conn
                .write_full(head.status, &out, &body, keep)
                .await
                .is_ok()
                && keep)
        }
        _ => {
            if conn.start_stream(head.status, &out).await.is_err() {
                return Ok(false);
            }
            loop {
                match up.read_chunk().await {
                    Ok(Some(chunk)) => {
                        if conn.write_chunk(&chunk).await.is_err() {
                            return Ok(false);
                        }
                    }
                    Ok(None) => {
                        put_idle(addr, up);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(replica = %peer, error = %e, "forwarded stream broke");
                        return Ok(false);
                    }
                }
            }
            Ok(conn.finish_stream().await.is_ok() && keep)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(me: &str, peers: &[&str]) -> Arc<Cluster> {
        Cluster::new(ClusterSettings {
            advertise: me.into(),
            peers: peers.iter().map(|s| s.to_string()).collect(),
            dns: None,
            refresh: Duration::from_secs(5),
            forward_timeout: Duration::from_secs(1),
        })
    }

    const PEERS: [&str; 3] = ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"];

    #[test]
    fn minted_ids_are_owned_and_routed_here_everywhere_else_to_the_minter() {
        let cs: Vec<_> = PEERS.iter().map(|me| cluster(me, &PEERS)).collect();
        for (i, c) in cs.iter().enumerate() {
            for _ in 0..50 {
                let id = c.mint();
                assert!(c.owns(&id));
                assert_eq!(c.route(&id), Route::Here);
                for (j, other) in cs.iter().enumerate() {
                    if i != j {
                        match other.route(&id) {
                            Route::Peer { name, .. } => assert_eq!(&*name, PEERS[i]),
                            Route::Here => {
                                panic!("{} claims a session {} owns", PEERS[j], PEERS[i])
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_down_owner_hands_its_sessions_to_the_next_replica() {
        let owner = cluster(PEERS[0], &PEERS);
        let b = cluster(PEERS[1], &PEERS);
        let c = cluster(PEERS[2], &PEERS);
        for _ in 0..50 {
            let id = owner.mint();
            // Both survivors mark the owner down; both must then agree on one new owner.
            let n: Arc<str> = Arc::from(PEERS[0]);
            b.mark_down(&n);
            c.mark_down(&n);
            let (rb, rc) = (b.route(&id), c.route(&id));
            let taker_b = match &rb {
                Route::Here => PEERS[1].to_string(),
                Route::Peer { name, .. } => name.to_string(),
            };
            let taker_c = match &rc {
                Route::Here => PEERS[2].to_string(),
                Route::Peer { name, .. } => name.to_string(),
            };
            assert_eq!(taker_b, taker_c);
            assert_ne!(taker_b, PEERS[0]);
        }
    }

    #[test]
    fn a_single_replica_owns_everything() {
        let c = cluster("127.0.0.1:8080", &[]);
        let id = c.mint();
        assert!(c.owns(&id));
        assert_eq!(c.route("anything"), Route::Here);
    }
}
