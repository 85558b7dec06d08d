//! Local Streamable HTTP MCP servers (`kind: http`): the surface proxies `/mcp/<name>` to the
//! configured loopback URL over a fresh HTTP/1.1 connection per request (hyper client on TCP).
//!
//! The server's own `Mcp-Session-Id` passes through unchanged both ways, and response bodies
//! (JSON or SSE) stream back as they arrive. Sits behind [`crate::Surface`]; owns no state.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::body::{boxed, http_rpc_error, BoxBody};

/// Headers copied from the client request to the local server.
const REQUEST_HEADERS: [&str; 6] = [
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "authorization",
];
/// Headers copied from the local server's response.
const RESPONSE_HEADERS: [&str; 5] = [
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "cache-control",
    "www-authenticate",
];

/// Largest request body forwarded.
pub const MAX_BODY: usize = 16 << 20;

/// Splits `http://host:port/path` into (`host:port`, `/path`).
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` must start with http:// (local servers only)"))?;
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if auth.is_empty() || auth.contains('@') {
        return Err(format!("`{url}` has no usable host"));
    }
    let auth = if auth
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        auth.to_owned()
    } else {
        format!("{auth}:80")
    };
    Ok((auth, path.to_owned()))
}

/// A local HTTP MCP server.
#[derive(Debug)]
pub(crate) struct HttpServer {
    name: String,
    authority: String,
    path: String,
}

impl HttpServer {
    /// From a validated URL.
    pub(crate) fn new(name: &str, url: &str) -> Result<Self, String> {
        let (authority, path) = parse_url(url)?;
        Ok(HttpServer {
            name: name.to_owned(),
            authority,
            path,
        })
    }

    /// Forwards one request and streams the answer back.
    pub(crate) async fn forward(&self, req: Request<hyper::body::Incoming>) -> Response<BoxBody> {
        match self.try_forward(req).await {
            Ok(r) => r,
            Err(e) => http_rpc_error(
                StatusCode::BAD_GATEWAY,
                None,
                mcp_wire::jsonrpc::code::INTERNAL_ERROR,
                format!("http server '{}' ({}): {e}", self.name, self.authority),
            ),
        }
    }

    async fn try_forward(
        &self,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<BoxBody>, String> {
        let (parts, body) = req.into_parts();
        let body = http_body_util::Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading request body: {e}"))?
            .to_bytes();
        let mut b = Request::builder()
            .method(parts.method)
            .uri(&self.path)
            .header("host", &self.authority);
        for h in REQUEST_HEADERS {
            if let Some(v) = parts.headers.get(h) {
                b = b.header(h, v);
            }
        }
        let out = b.body(Full::new(body)).map_err(|e| e.to_string())?;
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&self.authority),
        )
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (mut send, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let resp = send
            .send_request(out)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let (rparts, rbody) = resp.into_parts();
        let mut r = Response::new(boxed(rbody));
        *r.status_mut() = rparts.status;
        for h in RESPONSE_HEADERS {
            if let Some(v) = rparts.headers.get(h) {
                r.headers_mut().insert(h, v.clone());
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/mcp").unwrap(),
            ("127.0.0.1:8080".into(), "/mcp".into())
        );
        assert_eq!(
            parse_url("http://localhost").unwrap(),
            ("localhost:80".into(), "/".into())
        );
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http:///x").is_err());
    }
}
