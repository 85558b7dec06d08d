//! Edge agent configuration: the YAML file (`edge.yaml`) parsed with serde (`deny_unknown_fields`)
//! and validated into an immutable [`EdgeConfig`] snapshot.
//!
//! Sits at startup: `main.rs` loads it, [`crate::Surface::new`] builds every server from it. Errors
//! name the offending field (`servers[2].name: ...`), so a bad file is fixed in one go.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration error: the field path and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// YAML syntax or shape error (serde names the field and position).
    #[error("invalid config: {0}")]
    Parse(String),
    /// A semantic error in a field.
    #[error("invalid config: {field}: {reason}")]
    Field {
        /// The field path, e.g. `servers[1].name`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn field_err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

// === raw (serde) layer ===

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    edge: RawEdge,
    #[serde(default)]
    hub: Option<RawHub>,
    #[serde(default)]
    device: RawDevice,
    #[serde(default)]
    servers: Vec<RawServer>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHub {
    addr: String,
    #[serde(default)]
    server_name: Option<String>,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    transport: Option<String>,
    #[serde(default)]
    backoff_max: Option<String>,
    #[serde(default)]
    keepalive: Option<String>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    quic_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    #[serde(default = "yes")]
    enabled: bool,
}

impl Default for RawDevice {
    fn default() -> Self {
        Self { enabled: true }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: String,
    kind: String,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<PathBuf>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    restart_backoff_max: Option<String>,
    #[serde(default)]
    prewarm: Option<usize>,
    #[serde(default)]
    url: Option<String>,
}

// === validated snapshot ===

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// This edge's id (announced to the hub); defaults to the hostname.
    pub edge_id: String,
    /// How to reach the hub; required by `meshgate-edge run` only.
    pub hub: Option<HubConfig>,
    /// Whether the built-in `device` server is offered.
    pub device_enabled: bool,
    /// The local servers, in file order.
    pub servers: Vec<ServerConfig>,
}

/// Tunnel transport choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// QUIC first, TLS over TCP as fallback.
    Auto,
    /// QUIC only.
    Quic,
    /// TLS over TCP only.
    Tcp,
}

/// How to dial the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// `host:port` of the hub's tunnel listener.
    pub addr: String,
    /// TLS server name expected in the hub certificate (defaults to the host part of `addr`).
    pub server_name: String,
    /// CA bundle that signed the hub certificate.
    pub ca: PathBuf,
    /// This edge's client certificate.
    pub cert: PathBuf,
    /// This edge's private key.
    pub key: PathBuf,
    /// Transport choice.
    pub transport: Transport,
    /// Reconnect backoff cap (full jitter below it).
    pub backoff_max: Duration,
    /// Tunnel keep-alive interval.
    pub keepalive: Duration,
    /// A tunnel silent this long is dead (then the agent reconnects).
    pub idle_timeout: Duration,
    /// How long a QUIC handshake may take before the attempt (and, with `auto`, the fallback to
    /// TLS over TCP) moves on.
    pub quic_timeout: Duration,
}

/// One local MCP server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Name, `[A-Za-z0-9_-]{1,64}`, unique; the URL path is `/mcp/<name>`.
    pub name: String,
    /// What kind of server it is.
    pub kind: ServerKind,
}

/// Server kinds.
#[derive(Debug, Clone)]
pub enum ServerKind {
    /// A child process speaking newline-delimited JSON-RPC on stdio.
    Stdio(StdioConfig),
    /// A local Streamable HTTP MCP server.
    Http {
        /// `http://host:port/path`.
        url: String,
    },
}

/// How a stdio server is shared between sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdioMode {
    /// One process serves every session.
    Shared,
    /// One process per session, from a prewarmed pool.
    PerSession,
}

impl StdioMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StdioMode::Shared => "shared",
            StdioMode::PerSession => "per-session",
        }
    }
}

/// A stdio server's launch and supervision settings.
#[derive(Debug, Clone)]
pub struct StdioConfig {
    /// Program to run.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Sharing mode.
    pub mode: StdioMode,
    /// Stop a shared server with no sessions after this long (`None` = never); also the idle
    /// timeout of sessions.
    pub idle_timeout: Option<Duration>,
    /// Restart backoff cap.
    pub restart_backoff_max: Duration,
    /// Per-session mode: processes kept spawned and initialized ahead of time.
    pub prewarm: usize,
}

/// Parses a duration in the workspace grammar (`250ms`, `1.5s`, `10m`, `1h`, a bare number of
/// seconds); the caller wraps the error with the field path.
fn parse_duration(s: &str) -> Result<Duration, String> {
    meshgate_duration::parse(s).map_err(|e| e.to_string())
}

/// Whether `name` is a valid server name.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn hostname() -> String {
    let uts = rustix::system::uname();
    let n = uts.nodename().to_string_lossy().into_owned();
    if n.is_empty() {
        "edge".to_owned()
    } else {
        n
    }
}

impl EdgeConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawFile = if text.trim().is_empty() {
            RawFile::default()
        } else {
            yaml_serde::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?
        };
        let edge_id = match raw.edge.id {
            Some(id) if valid_name(&id) => id,
            Some(id) => {
                return Err(field_err(
                    "edge.id",
                    format!("`{id}` must match [A-Za-z0-9_-]{{1,64}}"),
                ))
            }
            None => hostname(),
        };
        let hub = raw.hub.map(validate_hub).transpose()?;
        let mut seen = HashSet::new();
        let mut servers = Vec::with_capacity(raw.servers.len());
        for (i, s) in raw.servers.into_iter().enumerate() {
            let f = |k: &str| format!("servers[{i}].{k}");
            if !valid_name(&s.name) {
                return Err(field_err(
                    f("name"),
                    format!("`{}` must match [A-Za-z0-9_-]{{1,64}}", s.name),
                ));
            }
            if s.name == "device" {
                return Err(field_err(
                    f("name"),
                    "`device` is reserved for the built-in device server",
                ));
            }
            if !seen.insert(s.name.clone()) {
                return Err(field_err(
                    f("name"),
                    format!("duplicate server name `{}`", s.name),
                ));
            }
            let kind = match s.kind.as_str() {
                "stdio" => {
                    if s.url.is_some() {
                        return Err(field_err(f("url"), "only allowed with kind: http"));
                    }
                    let command = match s.command {
                        Some(c) if !c.trim().is_empty() => c,
                        _ => return Err(field_err(f("command"), "required for kind: stdio")),
                    };
                    let mode = match s.mode.as_deref() {
                        None | Some("shared") => StdioMode::Shared,
                        Some("per-session") => StdioMode::PerSession,
                        Some(m) => {
                            return Err(field_err(
                                f("mode"),
                                format!("`{m}` is not one of: shared, per-session"),
                            ))
                        }
                    };
                    let idle = match s.idle_timeout.as_deref() {
                        None => Some(Duration::from_secs(600)),
                        Some(d) => {
                            let d =
                                parse_duration(d).map_err(|e| field_err(f("idle_timeout"), e))?;
                            (!d.is_zero()).then_some(d)
                        }
                    };
                    let backoff = match s.restart_backoff_max.as_deref() {
                        None => Duration::from_secs(5),
                        Some(d) => parse_duration(d)
                            .map_err(|e| field_err(f("restart_backoff_max"), e))?
                            .max(Duration::from_millis(10)),
                    };
                    if s.prewarm.is_some() && mode == StdioMode::Shared {
                        return Err(field_err(
                            f("prewarm"),
                            "only allowed with mode: per-session",
                        ));
                    }
                    let prewarm = s.prewarm.unwrap_or(1);
                    if prewarm > 64 {
                        return Err(field_err(f("prewarm"), "at most 64"));
                    }
                    for k in s.env.keys() {
                        if k.is_empty() || k.contains('=') || k.contains('\0') {
                            return Err(field_err(f("env"), format!("bad variable name `{k}`")));
                        }
                    }
                    ServerKind::Stdio(StdioConfig {
                        command,
                        args: s.args,
                        env: s.env,
                        cwd: s.cwd,
                        mode,
                        idle_timeout: idle,
                        restart_backoff_max: backoff,
                        prewarm,
                    })
                }
                "http" => {
                    for (k, set) in [
                        ("command", s.command.is_some()),
                        ("args", !s.args.is_empty()),
                        ("env", !s.env.is_empty()),
                        ("cwd", s.cwd.is_some()),
                        ("mode", s.mode.is_some()),
                        ("prewarm", s.prewarm.is_some()),
                        ("idle_timeout", s.idle_timeout.is_some()),
                        ("restart_backoff_max", s.restart_backoff_max.is_some()),
                    ] {
                        if set {
                            return Err(field_err(f(k), "only allowed with kind: stdio"));
                        }
                    }
                    let url = s
                        .url
                        .ok_or_else(|| field_err(f("url"), "required for kind: http"))?;
                    crate::httpproxy::parse_url(&url).map_err(|e| field_err(f("url"), e))?;
                    ServerKind::Http { url }
                }
                k => {
                    return Err(field_err(
                        f("kind"),
                        format!("`{k}` is not one of: stdio, http"),
                    ))
                }
            };
            servers.push(ServerConfig { name: s.name, kind });
        }
        Ok(EdgeConfig {
            edge_id,
            hub,
            device_enabled: raw.device.enabled,
            servers,
        })
    }
}

fn validate_hub(h: RawHub) -> Result<HubConfig, ConfigError> {
    let host = match h.addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        _ => {
            return Err(field_err(
                "hub.addr",
                format!("`{}` is not host:port", h.addr),
            ))
        }
    };
    let transport = match h.transport.as_deref() {
        None | Some("auto") => Transport::Auto,
        Some("quic") => Transport::Quic,
        Some("tcp") => Transport::Tcp,
        Some(t) => {
            return Err(field_err(
                "hub.transport",
                format!("`{t}` is not one of: auto, quic, tcp"),
            ))
        }
    };
    let backoff_max = match h.backoff_max.as_deref() {
        None => Duration::from_secs(5),
        Some(d) => parse_duration(d).map_err(|e| field_err("hub.backoff_max", e))?,
    };
    let dur = |field: &str, v: Option<&str>, default_ms: u64| -> Result<Duration, ConfigError> {
        match v {
            None => Ok(Duration::from_millis(default_ms)),
            Some(d) => match parse_duration(d) {
                Ok(x) if !x.is_zero() => Ok(x),
                Ok(_) => Err(field_err(field, "must be greater than zero".to_string())),
                Err(e) => Err(field_err(field, e)),
            },
        }
    };
    let keepalive = dur("hub.keepalive", h.keepalive.as_deref(), 1000)?;
    let idle_timeout = dur("hub.idle_timeout", h.idle_timeout.as_deref(), 3000)?;
    let quic_timeout = dur("hub.quic_timeout", h.quic_timeout.as_deref(), 1000)?;
    if idle_timeout <= keepalive {
        return Err(field_err(
            "hub.idle_timeout",
            "must be longer than hub.keepalive".to_string(),
        ));
    }
    Ok(HubConfig {
        addr: h.addr,
        server_name: h.server_name.unwrap_or(host),
        ca: h.ca,
        cert: h.cert,
        key: h.key,
        transport,
        backoff_max,
        keepalive,
        idle_timeout,
        quic_timeout,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_use_the_workspace_grammar() {
        // The grammar itself is tested in meshgate-duration; here: it is the one in use, and
        // a bad value names the field.
        let c = EdgeConfig::parse(
            "hub: {addr: 'h:1', ca: a, cert: b, key: c, keepalive: 1.5s, idle_timeout: 4, backoff_max: 250ms}",
        )
        .unwrap();
        let hub = c.hub.unwrap();
        assert_eq!(hub.keepalive, Duration::from_millis(1500));
        assert_eq!(hub.idle_timeout, Duration::from_secs(4));
        assert_eq!(hub.backoff_max, Duration::from_millis(250));
        let e = EdgeConfig::parse("hub: {addr: 'h:1', ca: a, cert: b, key: c, quic_timeout: soon}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hub.quic_timeout: invalid duration \"soon\""),
            "{e}"
        );
    }

    #[test]
    fn yaml_errors_name_the_unknown_field_and_its_path() {
        let e = EdgeConfig::parse("servers:\n  - {name: a, kind: stdio, command: x}\n  - {name: b, kind: stdio, command: y, colour: red}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("servers[1]: unknown field `colour`"), "{e}");
        let e = EdgeConfig::parse("hub: {addr: 'h:1', ca: a, cert: b, key: c, transprt: quic}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hub: unknown field `transprt`"), "{e}");
    }

    #[test]
    fn full_example_loads() {
        let c = EdgeConfig::parse(
            r#"
edge: { id: edge-1 }
hub: { addr: "hub.example:4433", server_name: hub.example, ca: ca.pem, cert: e.pem, key: k.pem, transport: auto, backoff_max: 2s }
device: { enabled: true }
servers:
  - { name: everything, kind: stdio, command: node, args: [a], env: {K: V}, cwd: /x, mode: shared, idle_timeout: 10m, restart_backoff_max: 5s }
  - { name: files, kind: stdio, command: x, mode: per-session, prewarm: 2 }
  - { name: local, kind: http, url: "http://127.0.0.1:8080/mcp" }
"#,
        )
        .unwrap();
        assert_eq!(c.edge_id, "edge-1");
        assert_eq!(c.servers.len(), 3);
        assert_eq!(c.hub.unwrap().backoff_max, Duration::from_secs(2));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "servers: [{name: 'a b', kind: stdio, command: x}]",
                "servers[0].name",
            ),
            (
                "servers: [{name: device, kind: stdio, command: x}]",
                "servers[0].name",
            ),
            (
                "servers: [{name: a, kind: stdio, command: x}, {name: a, kind: stdio, command: y}]",
                "servers[1].name",
            ),
            ("servers: [{name: a, kind: ftp}]", "servers[0].kind"),
            ("servers: [{name: a, kind: stdio}]", "servers[0].command"),
            (
                "servers: [{name: a, kind: stdio, command: x, mode: both}]",
                "servers[0].mode",
            ),
            (
                "servers: [{name: a, kind: stdio, command: x, idle_timeout: soon}]",
                "servers[0].idle_timeout",
            ),
            (
                "servers: [{name: a, kind: http, url: 'ftp://x'}]",
                "servers[0].url",
            ),
            (
                "servers: [{name: a, kind: stdio, command: x, colour: red}]",
                "colour",
            ),
            ("hub: {addr: nope, ca: a, cert: b, key: c}", "hub.addr"),
            ("edge: {id: 'bad id'}", "edge.id"),
        ];
        for (text, want) in cases {
            let e = EdgeConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e} should name {want}");
        }
    }
}
