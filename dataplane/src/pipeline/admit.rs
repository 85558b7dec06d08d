//! Stage `admit`: the HTTP checks every MCP request passes before anything is looked up for
//! it, cheapest first. `Origin` must be a loopback origin or an allowed one (DNS-rebinding
//! defence, 403); while the hub is bound to loopback, `Host` must name loopback or an allowed
//! host (403). Per method: `Accept` (406), `Content-Type` (415) and `MCP-Protocol-Version`
//! (400). Last, the JSON-RPC envelope of a POST body is peeked (method, id, name/uri) without
//! decoding the rest (400 `-32700`/`-32600`).

use h1::{Request, RequestHead};
use mcp_wire::mcp as mcpv;
use mcp_wire::Peeked;

use crate::config::Snapshot;
use crate::error::{ErrorKind, ProxyError};

fn host_part(authority: &str) -> &str {
    let a = authority.trim();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    a.rsplit_once(':').map_or(a, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            a
        }
    })
}

fn is_loopback_name(h: &str) -> bool {
    h.eq_ignore_ascii_case("localhost")
        || h == "::1"
        || h.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks `Origin` and `Host`.
///
/// # Errors
/// `BadOrigin` / `BadHost` (403).
pub fn origin_and_host(
    snap: &Snapshot,
    bound_loopback: bool,
    head: &RequestHead,
) -> Result<(), ProxyError> {
    if let Some(origin) = head.headers.get_str("origin") {
        let allowed = snap.allowed_origins.iter().any(|o| o == origin) || {
            let rest = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            rest.is_some_and(|r| is_loopback_name(host_part(r.split('/').next().unwrap_or(""))))
        };
        if !allowed && origin != "null" {
            return Err(ProxyError::new(
                ErrorKind::BadOrigin,
                format!("Origin {origin:?} is not allowed"),
            ));
        }
        if origin == "null" {
            return Err(ProxyError::new(
                ErrorKind::BadOrigin,
                "Origin \"null\" is not allowed",
            ));
        }
    }
    if bound_loopback {
        let host = head.headers.get_str("host").unwrap_or("");
        let name = host_part(host);
        let ok =
            is_loopback_name(name) || snap.allowed_hosts.iter().any(|h| h == host || h == name);
        if !ok {
            return Err(ProxyError::new(
                ErrorKind::BadHost,
                format!("Host {host:?} is not allowed for a hub bound to loopback"),
            ));
        }
    }
    Ok(())
}

/// A POST must accept both JSON and SSE answers, carry JSON, and name a served revision.
///
/// # Errors
/// `NotAcceptable` (406), `UnsupportedMediaType` (415), `UnsupportedVersion` (400).
pub fn post(req: &Request) -> Result<(), ProxyError> {
    let accept = req.head.headers.get_str("accept").unwrap_or("");
    if !accepts(accept, "application/json") || !accepts(accept, "text/event-stream") {
        return Err(ProxyError::new(
            ErrorKind::NotAcceptable,
            "Accept must list application/json and text/event-stream",
        ));
    }
    let ct = req.head.headers.get_str("content-type").unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/json") {
        return Err(ProxyError::new(
            ErrorKind::UnsupportedMediaType,
            format!("Content-Type must be application/json, not {ct:?}"),
        ));
    }
    version_header(req)
}

/// A GET must accept SSE and name a served revision.
///
/// # Errors
/// `NotAcceptable` (406), `UnsupportedVersion` (400).
pub fn get(req: &Request) -> Result<(), ProxyError> {
    let accept = req.head.headers.get_str("accept").unwrap_or("");
    if !accepts(accept, "text/event-stream") {
        return Err(ProxyError::new(
            ErrorKind::NotAcceptable,
            "Accept must list text/event-stream",
        ));
    }
    version_header(req)
}

/// `MCP-Protocol-Version`, when present, must name a revision the hub serves (absent means
/// 2025-03-26 or the session's own).
///
/// # Errors
/// `UnsupportedVersion` (400).
pub fn version_header(req: &Request) -> Result<(), ProxyError> {
    if let Some(v) = req.head.headers.get_str("mcp-protocol-version") {
        if mcpv::legacy_revision(v).is_none() {
            return Err(ProxyError::new(
                ErrorKind::UnsupportedVersion,
                format!(
                    "unsupported MCP-Protocol-Version {v:?}; supported: {}",
                    mcpv::LEGACY_REVISIONS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Peeks one JSON-RPC message: kind, method, id, and the params routing needs.
///
/// # Errors
/// `Parse` (`-32700`) for invalid JSON, `InvalidRequest` (`-32600`) for JSON that is not a
/// JSON-RPC message.
pub fn peek(body: &[u8]) -> Result<Peeked<'_>, ProxyError> {
    mcp_wire::peek(body).map_err(|e| {
        let kind = if e.code() == mcp_wire::jsonrpc::code::PARSE_ERROR {
            ErrorKind::Parse
        } else {
            ErrorKind::InvalidRequest
        };
        ProxyError::new(kind, e.to_string())
    })
}

/// Whether an `Accept` header value admits `mime` (`*/*` and `type/*` count).
pub fn accepts(accept: &str, mime: &str) -> bool {
    let major = mime.split('/').next().unwrap_or("");
    accept.split(',').any(|part| {
        let t = part.split(';').next().unwrap_or("").trim();
        t.eq_ignore_ascii_case(mime)
            || t == "*/*"
            || t.strip_suffix("/*")
                .is_some_and(|m| m.eq_ignore_ascii_case(major))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_part("localhost:8080"), "localhost");
        assert_eq!(host_part("[::1]:80"), "::1");
        assert_eq!(host_part("127.0.0.1"), "127.0.0.1");
        assert!(is_loopback_name("127.0.0.5"));
        assert!(!is_loopback_name("evil.example.com"));
    }

    #[test]
    fn accept_header() {
        assert!(accepts(
            "application/json, text/event-stream",
            "text/event-stream"
        ));
        assert!(accepts("application/json;q=0.9", "application/json"));
        assert!(accepts("*/*", "application/json"));
        assert!(!accepts("text/html", "application/json"));
    }
}
