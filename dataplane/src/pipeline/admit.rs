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
    media_types(req)?;
    version_header(req)
}

/// The media-type checks of a POST, for either era.
///
/// # Errors
/// `NotAcceptable` (406), `UnsupportedMediaType` (415).
pub fn media_types(req: &Request) -> Result<(), ProxyError> {
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
    Ok(())
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

/// The era a POSTed message is served in (DESIGN.md §3): `initialize` or a session → legacy;
/// a `_meta` protocol version (or else an `MCP-Protocol-Version` header) that is not a legacy
/// revision → the 2026-07-28 stateless front. A modern request's `Mcp-Session-Id` is ignored,
/// as the spec says for a modern server.
pub fn era(req: &Request, msg: &Peeked<'_>) -> mcpv::Era {
    let meta_version = msg
        .params
        .and_then(|p| mcp_wire::modern::peek_meta(p).ok())
        .and_then(|m| m.protocol_version.map(|v| v.into_owned()));
    // An `initialize` carrying a 2026-07-28 envelope is a modern client calling a removed
    // method (404 `-32601`), not a legacy handshake.
    if msg.method.as_deref() == Some(mcpv::method::INITIALIZE)
        && meta_version
            .as_deref()
            .is_some_and(mcp_wire::modern::is_modern_version)
    {
        return mcpv::Era::Modern;
    }
    // A session id without a modern envelope is a legacy request, whatever its version header
    // says (an unknown one is then refused as such: 400 naming it).
    if meta_version.is_none() && req.head.headers.get_str("mcp-session-id").is_some() {
        return mcpv::Era::Legacy;
    }
    let v = mcp_wire::modern::request_era(
        msg.method.as_deref(),
        req.head.headers.get_str("mcp-session-id").is_some(),
        meta_version.as_deref(),
        req.head.headers.get_str("mcp-protocol-version"),
    );
    mcp_wire::modern::verdict_era(v)
}

/// What a 2026-07-28 request says about its client, from its `_meta` envelope.
pub struct Envelope<'r> {
    /// The negotiated (only) modern revision.
    pub version: &'static str,
    /// `clientCapabilities`, raw JSON object.
    pub capabilities: &'r str,
    /// `clientInfo`, raw JSON object (a default when absent).
    pub info: &'r str,
    /// Whether the request asked for log messages (`logLevel`); without it none may be sent.
    pub log_level: bool,
}

/// The 2026-07-28 checks of a request (spec §3.2–3.3), in the order the spec's errors need:
/// the `_meta` envelope (`-32602`, 400), the mirrored headers (`-32020`, 400), then the version
/// (`-32022`, 400).
///
/// # Errors
/// A [`ErrorKind::Modern`] refusal.
pub fn modern<'r>(req: &'r Request, msg: &Peeked<'r>) -> Result<Envelope<'r>, ProxyError> {
    use mcp_wire::modern::{self as m, ModernError};
    let params = msg.params.unwrap_or("{}");
    let meta = m::peek_meta(params).map_err(|_| {
        ProxyError::modern(ModernError::InvalidMeta("params._meta is not valid JSON"))
    })?;
    if !meta.present {
        return Err(ProxyError::modern(ModernError::InvalidMeta(
            "params._meta is required",
        )));
    }
    let Some(version) = meta.protocol_version.as_deref() else {
        return Err(ProxyError::modern(ModernError::InvalidMeta(
            "_meta[\"io.modelcontextprotocol/protocolVersion\"] must be a string",
        )));
    };
    let Some(capabilities) = meta.client_capabilities.filter(|c| c.starts_with('{')) else {
        return Err(ProxyError::modern(ModernError::InvalidMeta(
            "_meta[\"io.modelcontextprotocol/clientCapabilities\"] must be an object",
        )));
    };
    let h = &req.head.headers;
    let params_headers: Vec<(&str, &str)> = h
        .iter()
        .filter_map(|(k, v)| {
            k.get(..10)
                .filter(|p| p.eq_ignore_ascii_case("mcp-param-"))?;
            Some((&k[10..], std::str::from_utf8(v).ok()?))
        })
        .collect();
    let headers = m::ModernHeaders {
        protocol_version: h.get_str("mcp-protocol-version"),
        method: h.get_str("mcp-method"),
        name: h.get_str("mcp-name"),
        params: params_headers,
    };
    let method = msg.method.as_deref().unwrap_or("");
    let name = msg.name.as_ref().map(|n| &*n.value).or(msg.uri.as_deref());
    let facts = m::BodyFacts {
        method,
        name,
        meta_version: version,
        mirrored_args: Vec::new(),
    };
    m::check_headers(&headers, &facts).map_err(|e| ProxyError::modern(e.into()))?;
    let version = m::check_meta(&meta, &m::MODERN_REVISIONS).map_err(ProxyError::modern)?;
    let version = m::MODERN_REVISIONS
        .iter()
        .copied()
        .find(|v| *v == version)
        .unwrap_or(mcpv::V2026_07_28);
    Ok(Envelope {
        version,
        capabilities,
        info: meta
            .client_info
            .filter(|i| i.starts_with('{'))
            .unwrap_or(r#"{"name":"unknown","version":"0"}"#),
        log_level: meta.log_level.is_some(),
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
