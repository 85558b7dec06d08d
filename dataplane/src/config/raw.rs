//! The config file as written: serde structs with `deny_unknown_fields`, explicit defaults and
//! human-readable durations in the workspace grammar of `meshgate-duration` (`250ms`, `1.5s`,
//! `10s`, `5m`, `1h`, or a bare number of seconds).
//!
//! Example (`hub.yaml`):
//! ```yaml
//! listen: 127.0.0.1:8080
//! separator: "__"          # exposed names are <upstream>__<name>; "none" disables prefixing
//! upstreams:
//!   - name: everything
//!     url: http://127.0.0.1:3001/mcp
//!   - name: search           # several replicas of one MCP server
//!     replicas: [http://10.0.0.7:3000/mcp, http://10.0.0.8:3000/mcp]
//!     load_factor: 1.25      # bounded-load consistent hashing (>= 1.0)
//!     eject_after: 3         # consecutive failed requests that eject a replica
//! ```

use std::time::Duration;

use serde::Deserialize;

/// Top-level hub configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Address to listen on (`127.0.0.1:8080`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Worker threads; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// IO driver: `auto` (io_uring when the kernel allows it, else epoll), `iouring`, `legacy`.
    #[serde(default = "default_driver")]
    pub driver: String,
    /// Path of the MCP endpoint.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Separator between upstream name and original name in exposed tool/prompt names;
    /// `none` exposes original names (then names must not collide across upstreams).
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Items per page of the hub's merged lists.
    #[serde(default = "default_page_size")]
    pub list_page_size: usize,
    /// Extra allowed `Origin` values (loopback origins are always allowed).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Extra allowed `Host` names (checked only when bound to loopback; loopback names are
    /// always allowed).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// HTTP limits and timeouts facing clients.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Session lifetime and resumability.
    #[serde(default)]
    pub session: SessionConfig,
    /// Interval of keep-alive comments on idle SSE streams.
    #[serde(
        default = "default_keepalive",
        deserialize_with = "meshgate_duration::deserialize"
    )]
    pub sse_keepalive: Duration,
    /// Longest an upstream's cached list is served before it is fetched again (a `list_changed`
    /// from the upstream refreshes it at once).
    #[serde(
        default = "default_catalog_ttl",
        deserialize_with = "meshgate_duration::deserialize"
    )]
    pub catalog_ttl: Duration,
    /// How often upstream host names are resolved again (also at once after a failed connect).
    #[serde(
        default = "default_dns_refresh",
        deserialize_with = "meshgate_duration::deserialize"
    )]
    pub dns_refresh: Duration,
    /// The MCP servers this hub federates.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Edge tunnels: where `meshgate-edge` agents dial in (absent = no edge tunnels).
    #[serde(default)]
    pub edge: Option<EdgeConfig>,
    /// Hub replicas sharing sessions (absent = this hub alone).
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Where sessions are kept for takeover by another replica (absent = memory only).
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// Who may call: `none` (only when bound to loopback) or bearer JWTs / API keys. Absent:
    /// no governance at all (every caller anonymous, every tool allowed).
    #[serde(default)]
    pub auth: Option<governance::identity::AuthConfig>,
    /// Tool policy: visibility by role/scope, approvals, limits, redaction.
    #[serde(default)]
    pub policy: Option<governance::policy::PolicyConfig>,
    /// Argument validation against each tool's `inputSchema`.
    #[serde(default)]
    pub schema: Option<governance::schema::SchemaConfig>,
    /// The signed, hash-chained audit log.
    #[serde(default)]
    pub audit: Option<governance::audit::AuditConfig>,
    /// The hub-signed user assertion sent upstream.
    #[serde(default)]
    pub assertion: Option<governance::assertion::AssertionConfig>,
    /// Per-upstream credentials (static secret header, client credentials, token exchange).
    #[serde(default)]
    pub credentials: Option<governance::credentials::CredentialsConfig>,
    /// The hub's admin endpoints (`/admin/approvals`).
    #[serde(default)]
    pub admin: Option<AdminConfig>,
}

/// The hub's own admin endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// SHA-256 hashes of the admin API keys (`meshgate hash-key KEY` prints one).
    #[serde(default)]
    pub api_keys: Vec<String>,
}

/// Hub replicas: who the others are and how to reach the owner of a session.
///
/// ```yaml
/// cluster:
///   advertise: 10.0.0.11:8080     # this replica's address as the others reach it
///   peers: [10.0.0.11:8080, 10.0.0.12:8080, 10.0.0.13:8080]
///   # or: dns: meshgate-headless.mcp.svc.cluster.local:8080   (a Kubernetes headless service)
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This replica's `ip:port` on the ring; default: the `listen` address (must then be a
    /// concrete address, not 0.0.0.0). Env `MESHGATE_ADVERTISE` overrides it (e.g. the pod IP).
    #[serde(default)]
    pub advertise: Option<String>,
    /// The replicas (`ip:port`), this one included or not.
    #[serde(default)]
    pub peers: Vec<String>,
    /// A DNS name (`host:port`) resolving to the replicas, re-resolved every `refresh`.
    #[serde(default)]
    pub dns: Option<String>,
    /// DNS refresh interval.
    #[serde(
        default = "default_refresh",
        deserialize_with = "meshgate_duration::deserialize"
    )]
    pub refresh: Duration,
    /// Connect/answer timeout of the internal hop to a session's owner.
    #[serde(
        default = "default_forward_timeout",
        deserialize_with = "meshgate_duration::deserialize"
    )]
    pub forward_timeout: Duration,
}

/// The shared session store.
///
/// ```yaml
/// store:
///   kind: redis                       # memory (default) | redis
///   url: redis://10.0.0.20:6379/0     # or cluster: [redis://a:6379, redis://b:6379]
///   keys: /etc/meshgate/store.keys    # or keys_env: MESHGATE_STORE_KEYS
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `memory` or `redis`.
    #[serde(default = "default_store_kind")]
    pub kind: String,
    /// Redis (or Valkey) URL, standalone.
    #[serde(default)]
    pub url: Option<String>,
    /// Redis Cluster node URLs (instead of `url`).
    #[serde(default)]
    pub cluster: Vec<String>,
    /// Key file: lines `<kid>:<base64 32 bytes>` (first = active) and `index:<base64 32 bytes>`.
    #[serde(default)]
    pub keys: Option<String>,
    /// Environment variable holding the same lines (instead of `keys`).
    #[serde(default)]
    pub keys_env: Option<String>,
    /// Idle TTL of a stored session; default: `session.idle_ttl`.
    #[serde(default, deserialize_with = "meshgate_duration::deserialize_option")]
    pub ttl: Option<Duration>,
}

fn default_refresh() -> Duration {
    Duration::from_secs(5)
}
fn default_forward_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_store_kind() -> String {
    "memory".into()
}

/// The hub's end of the edge tunnels.
///
/// ```yaml
/// edge:
///   listen: 0.0.0.0:4433     # UDP (QUIC) and TCP (TLS fallback) on the same port
///   ca: certs/ca.pem         # edges must present a client certificate from this CA
///   cert: certs/hub.pem
///   key: certs/hub-key.pem
///   slots: 16                # most distinct edge server names federated at once
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Address for QUIC (UDP) and TLS-over-TCP (TCP), same port number.
    pub listen: String,
    /// CA certificate (PEM) that edge client certificates must chain to.
    pub ca: String,
    /// The hub's certificate chain (PEM), signed by a CA the edges pin.
    pub cert: String,
    /// The hub's private key (PEM).
    pub key: String,
    /// Upstream slots reserved for edge servers: each distinct server name an edge announces
    /// takes one for the life of the hub (replicas on several edges share it).
    #[serde(default = "default_edge_slots")]
    pub slots: usize,
    /// Keep-alive interval on each tunnel.
    #[serde(
        default = "default_edge_keepalive",
        deserialize_with = "meshgate_duration::deserialize"
    )]
    pub keepalive: Duration,
    /// A tunnel silent this long is dead (its calls fail, its tools leave the lists).
    #[serde(
        default = "default_edge_idle",
        deserialize_with = "meshgate_duration::deserialize"
    )]
    pub idle_timeout: Duration,
    /// Accept QUIC tunnels.
    #[serde(default = "default_true")]
    pub quic: bool,
    /// Accept TLS-over-TCP tunnels (for sites where UDP is blocked).
    #[serde(default = "default_true")]
    pub tcp: bool,
    /// Hard cap on one request to an edge server.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "meshgate_duration::deserialize"
    )]
    pub request_timeout: Duration,
}

fn default_edge_slots() -> usize {
    16
}
fn default_edge_keepalive() -> Duration {
    Duration::from_secs(1)
}
fn default_edge_idle() -> Duration {
    Duration::from_secs(3)
}
fn default_true() -> bool {
    true
}

/// Client-facing HTTP limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request head (431 past it).
    pub max_head_bytes: usize,
    /// Most headers in a request (431 past it).
    pub max_headers: usize,
    /// Largest request body (413 past it).
    pub max_body_bytes: usize,
    /// Time to receive a whole head once it started (408 past it).
    #[serde(deserialize_with = "meshgate_duration::deserialize")]
    pub head_timeout: Duration,
    /// Time to receive a whole body (408 past it).
    #[serde(deserialize_with = "meshgate_duration::deserialize")]
    pub body_timeout: Duration,
    /// Keep-alive idle time between requests.
    #[serde(deserialize_with = "meshgate_duration::deserialize")]
    pub idle_timeout: Duration,
}

impl Default for LimitsConfig {
    /// The codec's own defaults: 16 KiB head, 64 headers, 4 MiB body, 10 s head, 30 s body,
    /// 60 s idle.
    fn default() -> Self {
        let l = h1::Limits::default();
        Self {
            max_head_bytes: l.max_head_bytes,
            max_headers: l.max_headers,
            max_body_bytes: l.max_body_bytes,
            head_timeout: l.head_timeout,
            body_timeout: l.body_timeout,
            idle_timeout: l.idle_timeout,
        }
    }
}

/// Session settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A session unused for this long is ended (and its upstream sessions deleted).
    #[serde(deserialize_with = "meshgate_duration::deserialize")]
    pub idle_ttl: Duration,
    /// SSE events kept per stream for `Last-Event-ID` replay.
    pub replay_events: usize,
    /// A server→client request (sampling, elicitation, roots) the client has not answered
    /// within this is given up: the upstream that asked gets a JSON-RPC error.
    #[serde(deserialize_with = "meshgate_duration::deserialize")]
    pub pending_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_ttl: Duration::from_secs(30 * 60),
            replay_events: 256,
            pending_timeout: Duration::from_secs(300),
        }
    }
}

fn default_catalog_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_dns_refresh() -> Duration {
    Duration::from_secs(30)
}

/// One federated MCP server (Streamable HTTP), reached at one URL or at several replicas.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name used in exposed names and error messages: `[A-Za-z0-9_.-]`, unique.
    pub name: String,
    /// Its MCP endpoint, `http://host:port/path` (exactly one of `url` and `replicas`).
    #[serde(default)]
    pub url: Option<String>,
    /// Endpoints of several replicas of the same MCP server (exactly one of `url` and
    /// `replicas`). Each client session sticks to one replica (DESIGN.md §6).
    #[serde(default)]
    pub replicas: Option<Vec<String>>,
    /// Bounded-load factor of the replica choice (at least 1.0).
    #[serde(default = "default_load_factor")]
    pub load_factor: f64,
    /// Consecutive failed requests (refused, timed out, broken) that eject a replica until a
    /// health check passes again; a refused connection ejects it at once.
    #[serde(default = "default_eject_after")]
    pub eject_after: u32,
    /// TCP connect timeout.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "meshgate_duration::deserialize"
    )]
    pub connect_timeout: Duration,
    /// Hard cap on one request, progress or not.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "meshgate_duration::deserialize"
    )]
    pub request_timeout: Duration,
    /// Active health-check interval.
    #[serde(
        default = "default_health_interval",
        deserialize_with = "meshgate_duration::deserialize"
    )]
    pub health_interval: Duration,
    /// Idle keep-alive connections kept per worker.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

impl UpstreamConfig {
    /// An upstream with default timeouts (the `--upstream NAME=URL` flag).
    pub fn quick(name: &str, url: &str) -> Self {
        Self {
            name: name.to_string(),
            url: Some(url.to_string()),
            replicas: None,
            load_factor: default_load_factor(),
            eject_after: default_eject_after(),
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            health_interval: default_health_interval(),
            pool_size: default_pool_size(),
        }
    }
}

impl HubConfig {
    /// A config with every default and no upstreams (the quick-start flags fill it in).
    pub fn empty() -> Self {
        // An empty YAML mapping takes every default.
        Self::from_yaml("{}").expect("the empty config deserializes from defaults")
    }

    /// Parses a config file's text (YAML). The only place the hub names its YAML crate.
    ///
    /// # Errors
    /// Syntax, shape, unknown-field and duration errors; the message starts with the field
    /// path (`upstreams[0].request_timeout: invalid duration "soon" ...`) and ends with the
    /// line and column.
    pub fn from_yaml(text: &str) -> Result<Self, yaml_serde::Error> {
        yaml_serde::from_str(text)
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_driver() -> String {
    "auto".into()
}
fn default_endpoint() -> String {
    "/mcp".into()
}
fn default_separator() -> String {
    "__".into()
}
fn default_page_size() -> usize {
    100
}
fn default_keepalive() -> Duration {
    Duration::from_secs(15)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_pool_size() -> usize {
    64
}
fn default_load_factor() -> f64 {
    crate::ring::DEFAULT_LOAD_FACTOR
}
fn default_eject_after() -> u32 {
    3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_the_workspace_grammar_and_errors_name_the_field() {
        let ok: &[(&str, Duration)] = &[
            ("sse_keepalive: 1.5s", Duration::from_millis(1500)),
            ("sse_keepalive: 250ms", Duration::from_millis(250)),
            ("sse_keepalive: 7", Duration::from_secs(7)),
            ("sse_keepalive: 5m", Duration::from_secs(300)),
        ];
        for (text, want) in ok {
            let c = HubConfig::from_yaml(text).unwrap();
            assert_eq!(c.sse_keepalive, *want, "{text}");
        }
        let bad = [
            (
                "upstreams:\n  - name: a\n    url: http://127.0.0.1:1/mcp\n    request_timeout: soon\n",
                "upstreams[0].request_timeout: invalid duration \"soon\"",
            ),
            ("limits:\n  head_timeout: 5 parsecs\n", "limits.head_timeout: invalid duration"),
            ("store:\n  ttl: -1\n", "store.ttl: invalid duration"),
            ("upstreams:\n  - name: a\n    colour: red\n", "upstreams[0]: unknown field `colour`"),
        ];
        for (text, want) in bad {
            let e = HubConfig::from_yaml(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }
}
