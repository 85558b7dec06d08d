//! The validated, immutable configuration every worker reads: upstream URLs resolved to socket
//! addresses, names checked, limits in the codec's own type. Built by [`Snapshot::from_config`];
//! a bad file is an error that names the field, never a half-applied config.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::raw::HubConfig;

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

/// One federated upstream, resolved.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Position in the config: the index used in every per-upstream table.
    pub index: usize,
    /// Its configured name.
    pub name: Arc<str>,
    /// The URL as configured (for messages).
    pub url: Arc<str>,
    /// Resolved address.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: Arc<str>,
    /// Request target path (with query).
    pub path: Arc<str>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Hard cap on one request.
    pub request_timeout: Duration,
    /// Active health-check interval.
    pub health_interval: Duration,
    /// Idle pooled connections per worker.
    pub pool_size: usize,
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
    /// Upstreams in config order.
    pub upstreams: Vec<Upstream>,
}

/// Whether `s` is a legal MCP name: 1–128 chars of `[A-Za-z0-9_.-]`.
pub fn is_mcp_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
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
            let (addr, host, path) = parse_http_url(&f("url"), &u.url)?;
            if u.connect_timeout.is_zero() || u.request_timeout.is_zero() {
                return Err(err(
                    f("request_timeout"),
                    "timeouts must be greater than zero",
                ));
            }
            upstreams.push(Upstream {
                index: i,
                name: u.name.as_str().into(),
                url: u.url.as_str().into(),
                addr,
                host: host.into(),
                path: path.into(),
                connect_timeout: u.connect_timeout,
                request_timeout: u.request_timeout,
                health_interval: u.health_interval.max(Duration::from_millis(100)),
                pool_size: u.pool_size,
            });
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
            upstreams,
        })
    }

    /// The upstream called `name`.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| &*u.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Snapshot, String> {
        let raw: HubConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        Snapshot::from_config(&raw).map_err(|e| e.to_string())
    }

    #[test]
    fn valid_minimal() {
        let s = load("upstreams:\n  - name: a\n    url: http://127.0.0.1:9/mcp\n").unwrap();
        assert_eq!(s.upstreams[0].path.as_ref(), "/mcp");
        assert_eq!(s.upstreams[0].host.as_ref(), "127.0.0.1:9");
        assert_eq!(s.separator.as_deref(), Some("__"));
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
