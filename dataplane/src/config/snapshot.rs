//! The validated, immutable configuration every worker reads: upstream URLs resolved to socket
//! addresses, names checked, limits in the codec's own type. Built by [`Snapshot::from_config`];
//! a bad file is an error that names the field, never a half-applied config.
//!
//! Each [`Upstream`] has one or more [`Replica`]s (`url:` or `replicas:` in the file) and the
//! consistent-hash [`Ring`] over their URLs that step 7 (`affinity`, in `hub`) picks from.
//! An edge slot is an upstream with exactly one replica: the loopback edge bridge.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::raw::HubConfig;
use crate::ring::{Ring, DEFAULT_VNODES};

/// Why a config was refused. The message names the offending field.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `upstreams[1].url`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Which monoio driver the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring when the kernel allows it, epoll otherwise.
    Auto,
    /// io_uring only (fails at start where the kernel forbids it).
    IoUring,
    /// epoll only.
    Legacy,
}

/// Most upstreams one hub federates, edge slots included (health is one `u64` bit mask).
pub const MAX_UPSTREAMS: usize = 64;

/// Most replicas of one upstream (a failover walk tracks the tried ones in a `u64` bit mask).
pub const MAX_REPLICAS: usize = 64;

/// An upstream's name: fixed for a configured upstream; for an edge slot, bound once, when an
/// edge first announces a server for it, and kept for the life of the hub (so exposed names
/// never change meaning). Reads are lock-free; an unbound slot reads as `""`.
#[derive(Debug, Clone)]
pub struct UpstreamName(Arc<OnceLock<Arc<str>>>);

impl UpstreamName {
    /// A configured upstream's name.
    pub fn fixed(name: &str) -> Self {
        let cell = OnceLock::new();
        let _ = cell.set(Arc::from(name));
        Self(Arc::new(cell))
    }

    /// An edge slot not bound yet.
    pub fn unbound() -> Self {
        Self(Arc::new(OnceLock::new()))
    }

    /// Binds a slot to `name`; `false` when it is already bound (to this or another name).
    pub fn bind(&self, name: &str) -> bool {
        self.0.set(Arc::from(name)).is_ok()
    }

    /// Whether a name is bound.
    pub fn is_bound(&self) -> bool {
        self.0.get().is_some()
    }
}

impl std::ops::Deref for UpstreamName {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.get().map_or("", |s| s)
    }
}

impl std::fmt::Display for UpstreamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// The hub's end of the edge tunnels, validated (`edge:` in the config).
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// QUIC and TCP listen address.
    pub listen: SocketAddr,
    /// CA for edge client certificates.
    pub ca: PathBuf,
    /// Hub certificate chain.
    pub cert: PathBuf,
    /// Hub private key.
    pub key: PathBuf,
    /// Upstream slots reserved for edge servers.
    pub slots: usize,
    /// Tunnel keep-alive interval.
    pub keepalive: Duration,
    /// Tunnel idle timeout.
    pub idle_timeout: Duration,
    /// Accept QUIC.
    pub quic: bool,
    /// Accept TLS over TCP.
    pub tcp: bool,
    /// Hard cap on one request to an edge server.
    pub request_timeout: Duration,
}

/// A replica's socket address: resolved at load, and again (for a host name) by the resolver
/// thread on a schedule and after a failed connect. Workers only read it (no lookup on the
/// request path).
#[derive(Debug, Clone)]
pub struct ResolvedAddr(Arc<ResolvedInner>);

#[derive(Debug)]
struct ResolvedInner {
    /// `host:port` to look up again; `None` for an IP literal (never changes).
    name: Option<String>,
    current: parking_lot::RwLock<SocketAddr>,
    stale: std::sync::atomic::AtomicBool,
}

impl ResolvedAddr {
    /// An address that never changes (an IP literal, the edge bridge).
    pub fn fixed(addr: SocketAddr) -> Self {
        Self::new(None, addr)
    }

    fn new(name: Option<String>, addr: SocketAddr) -> Self {
        Self(Arc::new(ResolvedInner {
            name,
            current: parking_lot::RwLock::new(addr),
            stale: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The address to connect to now.
    pub fn get(&self) -> SocketAddr {
        *self.0.current.read()
    }

    /// Whether this address comes from a host name (so it is looked up again).
    pub fn has_name(&self) -> bool {
        self.0.name.is_some()
    }

    /// Asks the resolver thread to look the name up again soon (a connect failed).
    pub fn resolve_soon(&self) {
        if self.has_name() {
            self.0
                .stale
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether a new lookup was asked for.
    pub fn is_stale(&self) -> bool {
        self.0.stale.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Looks the name up again (blocking: only the resolver thread calls this). A failed
    /// lookup keeps the last address; a changed one is logged.
    pub fn refresh(&self) {
        let Some(name) = &self.0.name else { return };
        self.0
            .stale
            .store(false, std::sync::atomic::Ordering::Relaxed);
        match name.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) => {
                let old = std::mem::replace(&mut *self.0.current.write(), addr);
                if old != addr {
                    tracing::info!(host = %name, from = %old, to = %addr, "upstream address changed");
                }
            }
            Ok(None) => {
                tracing::warn!(host = %name, "upstream name resolves to no address; keeping the last one")
            }
            Err(e) => {
                tracing::warn!(host = %name, error = %e, "upstream name lookup failed; keeping the last address")
            }
        }
    }
}

/// Which eras of MCP an upstream speaks, as learned at run time (the prober's `server/discover`
/// and `initialize`, and every handshake): unknown until tried, then cached; a failed handshake
/// forgets it so the next one probes again. Shared by every worker (one atomic).
#[derive(Debug, Clone, Default)]
pub struct EraCell(Arc<std::sync::atomic::AtomicU8>);

impl EraCell {
    const LEGACY_YES: u8 = 1;
    const LEGACY_NO: u8 = 2;
    const MODERN_YES: u8 = 4;
    const MODERN_NO: u8 = 8;

    fn get(&self) -> u8 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether it speaks the legacy era (sessions): `None` until known.
    pub fn legacy(&self) -> Option<bool> {
        let v = self.get();
        (v & (Self::LEGACY_YES | Self::LEGACY_NO) != 0).then_some(v & Self::LEGACY_YES != 0)
    }

    /// Whether it speaks the modern era (2026-07-28): `None` until known.
    pub fn modern(&self) -> Option<bool> {
        let v = self.get();
        (v & (Self::MODERN_YES | Self::MODERN_NO) != 0).then_some(v & Self::MODERN_YES != 0)
    }

    /// Records whether it speaks the legacy era; returns whether that changed what was known.
    pub fn set_legacy(&self, yes: bool) -> bool {
        self.set(Self::LEGACY_YES, Self::LEGACY_NO, yes)
    }

    /// Records whether it speaks the modern era; returns whether that changed what was known.
    pub fn set_modern(&self, yes: bool) -> bool {
        self.set(Self::MODERN_YES, Self::MODERN_NO, yes)
    }

    fn set(&self, yes_bit: u8, no_bit: u8, yes: bool) -> bool {
        let bit = if yes { yes_bit } else { no_bit };
        let old = self
            .0
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |v| Some((v & !(yes_bit | no_bit)) | bit),
            )
            .unwrap_or(0);
        old & (yes_bit | no_bit) != bit
    }

    /// Forgets what was learned (a handshake failed: probe again).
    pub fn forget(&self) {
        self.0.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// `legacy`, `modern`, `dual` or `unknown`, for logs and `/metrics`.
    pub fn label(&self) -> &'static str {
        match (self.legacy(), self.modern()) {
            (Some(true), Some(true)) => "dual",
            (_, Some(true)) => "modern",
            (Some(true), _) => "legacy",
            _ => "unknown",
        }
    }
}

/// One endpoint of an upstream, resolved.
#[derive(Debug, Clone)]
pub struct Replica {
    /// Resolved address (re-resolved when named by host).
    pub addr: ResolvedAddr,
    /// `Host` header value.
    pub host: Arc<str>,
    /// Request target path (with query).
    pub path: Arc<str>,
    /// The URL as configured (its name on the ring and in messages).
    pub url: Arc<str>,
}

impl Replica {
    fn parse(field: &str, url: &str) -> Result<Replica, ConfigError> {
        let (addr, host, path) = parse_http_url(field, url)?;
        let literal = host_of(&host).parse::<std::net::IpAddr>().is_ok();
        let port = addr.port();
        let name = (!literal).then(|| format!("{}:{port}", host_of(&host)));
        Ok(Replica {
            addr: ResolvedAddr::new(name, addr),
            host: host.into(),
            path: path.into(),
            url: url.into(),
        })
    }
}

/// One federated upstream, resolved.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Position in the config: the index used in every per-upstream table.
    pub index: usize,
    /// Its name (configured, or bound when an edge announces it).
    pub name: UpstreamName,
    /// For an edge slot: its slot number (reached through the edge bridge, not by URL).
    pub edge_slot: Option<usize>,
    /// The URL(s) as configured, comma-separated (for messages).
    pub url: Arc<str>,
    /// Its endpoints (at least one; an edge slot has exactly one). Indices are stable and are
    /// the node indices of `ring`.
    pub replicas: Vec<Replica>,
    /// Consistent-hash ring over the replica URLs.
    pub ring: Ring,
    /// Bounded-load factor of the replica choice (at least 1.0).
    pub load_factor: f64,
    /// Consecutive failed requests that eject a replica.
    pub eject_after: u32,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Hard cap on one request.
    pub request_timeout: Duration,
    /// Active health-check interval.
    pub health_interval: Duration,
    /// Idle pooled connections per worker.
    pub pool_size: usize,
    /// Which eras of MCP it speaks (learned at run time).
    pub era: EraCell,
}

/// The validated hub configuration.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Listening address.
    pub listen: SocketAddr,
    /// Number of worker threads.
    pub workers: usize,
    /// IO driver choice.
    pub driver: Driver,
    /// MCP endpoint path.
    pub endpoint: Arc<str>,
    /// Name separator; `None` = names exposed unprefixed.
    pub separator: Option<Arc<str>>,
    /// Items per page of merged lists.
    pub page_size: usize,
    /// Allowed `Origin` values beyond loopback ones.
    pub allowed_origins: Vec<String>,
    /// Allowed `Host` names beyond loopback ones (checked when bound to loopback).
    pub allowed_hosts: Vec<String>,
    /// Client-facing HTTP limits.
    pub limits: h1::Limits,
    /// Idle session lifetime.
    pub session_ttl: Duration,
    /// SSE events kept per stream for replay.
    pub replay_events: usize,
    /// SSE keep-alive interval.
    pub sse_keepalive: Duration,
    /// Longest an upstream's cached list is served.
    pub catalog_ttl: Duration,
    /// How often upstream host names are resolved again.
    pub dns_refresh: Duration,
    /// Longest a server→client request waits for the client's answer.
    pub pending_timeout: Duration,
    /// Upstreams in config order, then the edge slots (added when the hub starts).
    pub upstreams: Vec<Upstream>,
    /// Edge tunnels, if configured.
    pub edge: Option<EdgeSettings>,
    /// Hub replicas, if configured.
    pub cluster: Option<crate::cluster::ClusterSettings>,
    /// The shared session store, if configured (`None` = sessions live in memory only).
    pub store: Option<crate::store::StoreConfig>,
    /// Identity, policy, audit and credentials (`None` = no governance configured).
    pub governance: Option<GovSettings>,
}

/// The governance sections of the config, as given (built into [`crate::gov::Gov`] at start).
#[derive(Debug, Clone, Default)]
pub struct GovSettings {
    /// `auth:`.
    pub auth: Option<governance::identity::AuthConfig>,
    /// `policy:`.
    pub policy: Option<governance::policy::PolicyConfig>,
    /// `schema:`.
    pub schema: Option<governance::schema::SchemaConfig>,
    /// `audit:`.
    pub audit: Option<governance::audit::AuditConfig>,
    /// `assertion:`.
    pub assertion: Option<governance::assertion::AssertionConfig>,
    /// `credentials:`.
    pub credentials: Option<governance::credentials::CredentialsConfig>,
    /// `admin.api_keys`.
    pub admin_keys: Vec<String>,
}

/// Whether `s` is a legal MCP name: 1–128 chars of `[A-Za-z0-9_.-]`.
pub fn is_mcp_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The host part of an authority (`[::1]:80` → `::1`, `name:80` → `name`).
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map_or(authority, |(h, _)| h)
}

fn parse_http_url(field: &str, url: &str) -> Result<(SocketAddr, String, String), ConfigError> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        return Err(err(field, "https upstreams are not supported yet; use http:// (loopback or a TLS-terminating sidecar)"));
    } else {
        return Err(err(field, format!("{url:?} is not an http:// URL")));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(err(field, "URL has no host"));
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| err(field, format!("cannot resolve {authority:?}: {e}")))?
        .next()
        .ok_or_else(|| err(field, format!("{authority:?} resolves to no address")))?;
    Ok((addr, authority.to_string(), path.to_string()))
}

fn governance_settings(
    cfg: &HubConfig,
    listen: SocketAddr,
) -> Result<Option<GovSettings>, ConfigError> {
    let any = cfg.auth.is_some()
        || cfg.policy.is_some()
        || cfg.schema.is_some()
        || cfg.audit.is_some()
        || cfg.assertion.is_some()
        || cfg.credentials.is_some()
        || cfg.admin.is_some();
    if !any {
        return Ok(None);
    }
    if let Some(auth) = &cfg.auth {
        governance::identity::validate(auth, listen).map_err(|e| err("auth", e.to_string()))?;
    } else if !listen.ip().is_loopback() {
        return Err(err(
            "auth",
            "governance without `auth` means anonymous callers: that is only allowed on a loopback listen address; configure auth",
        ));
    }
    Ok(Some(GovSettings {
        auth: cfg.auth.clone(),
        policy: cfg.policy.clone(),
        schema: cfg.schema.clone(),
        audit: cfg.audit.clone(),
        assertion: cfg.assertion.clone(),
        credentials: cfg.credentials.clone(),
        admin_keys: cfg
            .admin
            .as_ref()
            .map(|a| a.api_keys.clone())
            .unwrap_or_default(),
    }))
}

fn ring_of(replicas: &[Replica]) -> Ring {
    let names: Vec<&str> = replicas.iter().map(|r| &*r.url).collect();
    Ring::new(&names, DEFAULT_VNODES)
}

fn cluster_settings(
    cfg: &HubConfig,
    listen: SocketAddr,
) -> Result<Option<crate::cluster::ClusterSettings>, ConfigError> {
    let Some(c) = &cfg.cluster else {
        return Ok(None);
    };
    let advertise = match std::env::var("MESHGATE_ADVERTISE").ok().or(c.advertise.clone()) {
        Some(a) => a,
        None if !listen.ip().is_unspecified() && listen.port() != 0 => listen.to_string(),
        None => {
            return Err(err(
                "cluster.advertise",
                "required when listen is 0.0.0.0 or port 0: the ip:port other replicas reach this one at (or env MESHGATE_ADVERTISE)",
            ))
        }
    };
    let check = |field: &str, a: &str| -> Result<(), ConfigError> {
        a.parse::<SocketAddr>()
            .map(|_| ())
            .map_err(|e| err(field, format!("{a:?} is not ip:port: {e}")))
    };
    check("cluster.advertise", &advertise)?;
    for (i, p) in c.peers.iter().enumerate() {
        check(&format!("cluster.peers[{i}]"), p)?;
    }
    if c.peers.is_empty() && c.dns.is_none() {
        return Err(err(
            "cluster.peers",
            "give the replicas as peers, or a dns name",
        ));
    }
    if c.forward_timeout.is_zero() || c.refresh.is_zero() {
        return Err(err(
            "cluster.forward_timeout",
            "timeouts must be greater than zero",
        ));
    }
    Ok(Some(crate::cluster::ClusterSettings {
        advertise,
        peers: c.peers.clone(),
        dns: c.dns.clone(),
        refresh: c.refresh,
        forward_timeout: c.forward_timeout,
    }))
}

fn store_config(cfg: &HubConfig) -> Result<Option<crate::store::StoreConfig>, ConfigError> {
    use crate::store::{KeySource, StoreKind};
    let Some(s) = &cfg.store else {
        return Ok(None);
    };
    let ttl = s.ttl.unwrap_or(cfg.session.idle_ttl);
    if ttl.is_zero() {
        return Err(err("store.ttl", "must be greater than zero"));
    }
    let kind = match s.kind.as_str() {
        "memory" => return Ok(None),
        "redis" | "valkey" => {
            if s.url.is_none() && s.cluster.is_empty() {
                return Err(err(
                    "store.url",
                    "redis needs url (or cluster: [node urls])",
                ));
            }
            StoreKind::Redis {
                url: s.url.clone().unwrap_or_default(),
                cluster: s.cluster.clone(),
            }
        }
        other => {
            return Err(err(
                "store.kind",
                format!("{other:?}: expected memory or redis"),
            ))
        }
    };
    let keys = match (&s.keys, &s.keys_env) {
        (Some(f), None) => KeySource::File(f.into()),
        (None, Some(v)) => KeySource::Env(v.clone()),
        _ => {
            return Err(err(
                "store.keys",
                "give exactly one of keys (a key file) or keys_env (an environment variable)",
            ))
        }
    };
    Ok(Some(crate::store::StoreConfig { kind, ttl, keys }))
}

impl Snapshot {
    /// Validates a raw config.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first bad field.
    pub fn from_config(cfg: &HubConfig) -> Result<Snapshot, ConfigError> {
        let listen: SocketAddr = cfg.listen.parse().map_err(|e| {
            err(
                "listen",
                format!("{:?} is not an address (ip:port): {e}", cfg.listen),
            )
        })?;
        let driver = match cfg.driver.as_str() {
            "auto" => Driver::Auto,
            "iouring" | "io_uring" | "io-uring" => Driver::IoUring,
            "legacy" | "epoll" => Driver::Legacy,
            other => {
                return Err(err(
                    "driver",
                    format!("{other:?}: expected auto, iouring or legacy"),
                ))
            }
        };
        if !cfg.endpoint.starts_with('/') {
            return Err(err("endpoint", "must start with '/'"));
        }
        let separator = match cfg.separator.as_str() {
            "none" | "" => None,
            s if s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) =>
            {
                Some(Arc::<str>::from(s))
            }
            s => {
                return Err(err(
                    "separator",
                    format!("{s:?} may use only [A-Za-z0-9_.-], or be \"none\""),
                ))
            }
        };
        if cfg.list_page_size == 0 || cfg.list_page_size > 10_000 {
            return Err(err("list_page_size", "must be between 1 and 10000"));
        }
        let l = &cfg.limits;
        if l.max_head_bytes < 1024 {
            return Err(err("limits.max_head_bytes", "must be at least 1024"));
        }
        if l.max_headers == 0 {
            return Err(err("limits.max_headers", "must be at least 1"));
        }
        let limits = h1::Limits {
            max_head_bytes: l.max_head_bytes,
            max_headers: l.max_headers,
            max_body_bytes: l.max_body_bytes,
            head_timeout: l.head_timeout,
            body_timeout: l.body_timeout,
            idle_timeout: l.idle_timeout,
        };
        let mut upstreams: Vec<Upstream> = Vec::with_capacity(cfg.upstreams.len());
        for (i, u) in cfg.upstreams.iter().enumerate() {
            let f = |name: &str| format!("upstreams[{i}].{name}");
            if !is_mcp_name(&u.name) {
                return Err(err(
                    f("name"),
                    format!("{:?} must be 1-128 chars of [A-Za-z0-9_.-]", u.name),
                ));
            }
            if let Some(sep) = &separator {
                if u.name.contains(&**sep) {
                    return Err(err(f("name"), format!("{:?} contains the separator {sep:?}, so exposed names would be ambiguous", u.name)));
                }
            }
            if let Some(prev) = upstreams.iter().find(|p| *p.name == *u.name) {
                return Err(err(
                    f("name"),
                    format!("{:?} is also the name of upstreams[{}]", u.name, prev.index),
                ));
            }
            let replicas = match (&u.url, &u.replicas) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        f("replicas"),
                        "give either url (one endpoint) or replicas (several), not both",
                    ))
                }
                (None, None) => {
                    return Err(err(
                        f("url"),
                        "missing: give url (one endpoint) or replicas (a list of endpoints)",
                    ))
                }
                (Some(url), None) => vec![Replica::parse(&f("url"), url)?],
                (None, Some(list)) => {
                    if list.is_empty() {
                        return Err(err(f("replicas"), "must list at least one http:// URL"));
                    }
                    if list.len() > MAX_REPLICAS {
                        return Err(err(
                            f("replicas"),
                            format!(
                                "{} replicas; at most {MAX_REPLICAS} are supported",
                                list.len()
                            ),
                        ));
                    }
                    let mut out: Vec<Replica> = Vec::with_capacity(list.len());
                    for (j, url) in list.iter().enumerate() {
                        let field = format!("upstreams[{i}].replicas[{j}]");
                        if let Some(k) = list[..j].iter().position(|p| p == url) {
                            return Err(err(field, format!("{url:?} is also replicas[{k}]")));
                        }
                        out.push(Replica::parse(&field, url)?);
                    }
                    out
                }
            };
            if u.load_factor.is_nan() || u.load_factor < 1.0 {
                return Err(err(
                    f("load_factor"),
                    format!("{} must be at least 1.0", u.load_factor),
                ));
            }
            if u.eject_after == 0 {
                return Err(err(f("eject_after"), "must be at least 1"));
            }
            if u.connect_timeout.is_zero() || u.request_timeout.is_zero() {
                return Err(err(
                    f("request_timeout"),
                    "timeouts must be greater than zero",
                ));
            }
            upstreams.push(Upstream {
                index: i,
                name: UpstreamName::fixed(&u.name),
                edge_slot: None,
                url: replicas
                    .iter()
                    .map(|r| &*r.url)
                    .collect::<Vec<_>>()
                    .join(", ")
                    .into(),
                ring: ring_of(&replicas),
                replicas,
                load_factor: u.load_factor,
                eject_after: u.eject_after,
                connect_timeout: u.connect_timeout,
                request_timeout: u.request_timeout,
                health_interval: u.health_interval.max(Duration::from_millis(100)),
                pool_size: u.pool_size,
                era: EraCell::default(),
            });
        }
        let edge = cfg
            .edge
            .as_ref()
            .map(|e| {
                let listen: SocketAddr = e.listen.parse().map_err(|x| {
                    err(
                        "edge.listen",
                        format!("{:?} is not an address (ip:port): {x}", e.listen),
                    )
                })?;
                if e.slots == 0 {
                    return Err(err("edge.slots", "must be at least 1"));
                }
                if e.keepalive.is_zero() || e.idle_timeout <= e.keepalive {
                    return Err(err(
                        "edge.idle_timeout",
                        "must be longer than edge.keepalive (and both above zero)",
                    ));
                }
                if !e.quic && !e.tcp {
                    return Err(err(
                        "edge.quic",
                        "at least one of edge.quic and edge.tcp must be on",
                    ));
                }
                if e.request_timeout.is_zero() {
                    return Err(err("edge.request_timeout", "must be greater than zero"));
                }
                for (field, path) in [
                    ("edge.ca", &e.ca),
                    ("edge.cert", &e.cert),
                    ("edge.key", &e.key),
                ] {
                    if let Err(x) = std::fs::metadata(path) {
                        return Err(err(field, format!("cannot read {path:?}: {x}")));
                    }
                }
                Ok(EdgeSettings {
                    listen,
                    ca: e.ca.clone().into(),
                    cert: e.cert.clone().into(),
                    key: e.key.clone().into(),
                    slots: e.slots,
                    keepalive: e.keepalive,
                    idle_timeout: e.idle_timeout,
                    quic: e.quic,
                    tcp: e.tcp,
                    request_timeout: e.request_timeout,
                })
            })
            .transpose()?;
        let total = upstreams.len() + edge.as_ref().map_or(0, |e| e.slots);
        if total > MAX_UPSTREAMS {
            let field = if edge.is_some() {
                "edge.slots"
            } else {
                "upstreams"
            };
            return Err(err(
                field,
                format!("{total} upstreams (edge slots included); at most {MAX_UPSTREAMS} are supported"),
            ));
        }
        let workers = if cfg.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.workers
        };
        Ok(Snapshot {
            listen,
            workers,
            driver,
            endpoint: cfg.endpoint.as_str().into(),
            separator,
            page_size: cfg.list_page_size,
            allowed_origins: cfg.allowed_origins.clone(),
            allowed_hosts: cfg.allowed_hosts.clone(),
            limits,
            session_ttl: cfg.session.idle_ttl,
            replay_events: cfg.session.replay_events.max(1),
            sse_keepalive: cfg.sse_keepalive.max(Duration::from_millis(100)),
            catalog_ttl: cfg.catalog_ttl,
            dns_refresh: cfg.dns_refresh.max(Duration::from_secs(1)),
            pending_timeout: cfg.session.pending_timeout.max(Duration::from_secs(1)),
            upstreams,
            edge,
            cluster: cluster_settings(cfg, listen)?,
            store: store_config(cfg)?,
            governance: governance_settings(cfg, listen)?,
        })
    }

    /// Appends the edge slots as upstreams reached through the edge bridge at `bridge` (the
    /// bridge answers `/slot/<k>/<token>`). Called once, when the hub starts.
    pub fn add_edge_slots(&mut self, bridge: SocketAddr, token: &str) {
        let Some(e) = &self.edge else { return };
        let base = self.upstreams.len();
        for k in 0..e.slots {
            let url: Arc<str> = format!("edge slot {k}").into();
            let replicas = vec![Replica {
                addr: ResolvedAddr::fixed(bridge),
                host: bridge.to_string().into(),
                path: format!("/slot/{k}/{token}").into(),
                url: url.clone(),
            }];
            self.upstreams.push(Upstream {
                index: base + k,
                name: UpstreamName::unbound(),
                edge_slot: Some(k),
                url,
                ring: ring_of(&replicas),
                replicas,
                load_factor: crate::ring::DEFAULT_LOAD_FACTOR,
                eject_after: 3,
                connect_timeout: Duration::from_secs(2),
                request_timeout: e.request_timeout,
                health_interval: Duration::from_secs(3600),
                pool_size: 64,
                era: EraCell::default(),
            });
        }
    }

    /// The upstream called `name`.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams
            .iter()
            .find(|u| !name.is_empty() && &*u.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Snapshot, String> {
        let raw = HubConfig::from_yaml(yaml).map_err(|e| e.to_string())?;
        Snapshot::from_config(&raw).map_err(|e| e.to_string())
    }

    #[test]
    fn valid_minimal() {
        let s = load("upstreams:\n  - name: a\n    url: http://127.0.0.1:9/mcp\n").unwrap();
        assert_eq!(s.upstreams[0].replicas.len(), 1);
        assert_eq!(s.upstreams[0].replicas[0].path.as_ref(), "/mcp");
        assert_eq!(s.upstreams[0].replicas[0].host.as_ref(), "127.0.0.1:9");
        assert_eq!(s.upstreams[0].ring.len(), 1);
        assert_eq!(s.upstreams[0].load_factor, 1.25);
        assert_eq!(s.upstreams[0].eject_after, 3);
        assert_eq!(s.separator.as_deref(), Some("__"));
    }

    #[test]
    fn replicas() {
        let s = load("upstreams:\n  - name: a\n    replicas: [http://127.0.0.1:9/mcp, http://127.0.0.1:10/x]\n    load_factor: 2\n    eject_after: 5\n").unwrap();
        let u = &s.upstreams[0];
        assert_eq!(u.replicas.len(), 2);
        assert_eq!(u.replicas[1].path.as_ref(), "/x");
        assert_eq!(&*u.replicas[1].url, "http://127.0.0.1:10/x");
        assert_eq!(u.ring.len(), 2);
        assert_eq!((u.load_factor, u.eject_after), (2.0, 5));
    }

    #[test]
    fn invalid_table() {
        let cases = [
            ("bogus: 1", "unknown field"),
            ("listen: nope", "listen"),
            ("driver: fast", "driver"),
            ("separator: '/'", "separator"),
            ("upstreams:\n  - name: 'a b'\n    url: http://127.0.0.1:1/\n", "upstreams[0].name"),
            ("upstreams:\n  - name: a__b\n    url: http://127.0.0.1:1/\n", "separator"),
            ("upstreams:\n  - name: a\n    url: ftp://x/\n", "upstreams[0].url"),
            ("upstreams:\n  - name: a\n    url: https://x/\n", "not supported"),
            ("upstreams:\n  - name: a\n    url: http://127.0.0.1:1/\n  - name: a\n    url: http://127.0.0.1:2/\n", "upstreams[1].name"),
            ("upstreams:\n  - name: a\n    url: http://127.0.0.1:1/\n    timeout: 5s\n", "unknown field"),
            ("limits:\n  head_timeout: 5 parsecs\n", "invalid duration"),
            ("upstreams:\n  - name: a\n    url: http://127.0.0.1:1/\n    replicas: [http://127.0.0.1:2/]\n", "upstreams[0].replicas: give either url"),
            ("upstreams:\n  - name: a\n", "upstreams[0].url: missing"),
            ("upstreams:\n  - name: a\n    replicas: []\n", "upstreams[0].replicas: must list"),
            ("upstreams:\n  - name: a\n    replicas: [http://127.0.0.1:1/, ftp://x/]\n", "upstreams[0].replicas[1]"),
            ("upstreams:\n  - name: a\n    replicas: [http://127.0.0.1:1/, http://127.0.0.1:1/]\n", "upstreams[0].replicas[1]"),
            ("upstreams:\n  - name: a\n    url: http://127.0.0.1:1/\n    load_factor: 0.5\n", "upstreams[0].load_factor"),
            ("upstreams:\n  - name: a\n    url: http://127.0.0.1:1/\n    eject_after: 0\n", "upstreams[0].eject_after"),
        ];
        for (yaml, want) in cases {
            let e = load(yaml).unwrap_err();
            assert!(
                e.contains(want),
                "{yaml:?}: got {e:?}, want it to mention {want:?}"
            );
        }
    }
}
