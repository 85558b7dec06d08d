//! `ProxyError`: every way a request can end early, with one mapping to an HTTP status and a
//! JSON-RPC error (DESIGN.md §9). Every stage returns it; `pipeline::reply_error` renders it once.
//!
//! The mappings are exhaustive `match`es without a wildcard, so a new variant forces a decision
//! about its status, code, source and retry policy.

use mcp_wire::jsonrpc::code;

/// Which side caused the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client sent something the hub refuses.
    Downstream,
    /// An upstream failed or misbehaved.
    Upstream,
    /// The hub itself.
    Internal,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// `Origin` not allowed (DNS rebinding defence).
    BadOrigin,
    /// `Host` not allowed while bound to loopback.
    BadHost,
    /// `Accept` lacks application/json or text/event-stream.
    NotAcceptable,
    /// `Content-Type` is not application/json.
    UnsupportedMediaType,
    /// GET/POST/DELETE only.
    MethodNotAllowed,
    /// Body is not JSON.
    Parse,
    /// Body is JSON but not JSON-RPC (or a batch where batches are not allowed).
    InvalidRequest,
    /// `MCP-Protocol-Version` names a revision the hub does not serve.
    UnsupportedVersion,
    /// A non-initialize request without `Mcp-Session-Id`.
    MissingSession,
    /// Unknown, expired or deleted session.
    UnknownSession,
    /// A response whose id matches no pending server→client request.
    UnknownResponseId,
    /// Method the hub does not serve.
    MethodNotFound,
    /// Bad params: unknown tool/prompt, bad cursor, bad level.
    InvalidParams,
    /// URI no upstream serves.
    ResourceNotFound,
    /// The upstream is marked down or refused the connection.
    UpstreamUnavailable,
    /// The upstream did not answer within its request timeout.
    UpstreamTimeout,
    /// The upstream dropped our session; it was re-created, the call was not run.
    UpstreamSessionLost,
    /// The upstream answered something that is not MCP.
    UpstreamProtocol,
    /// A bug or resource exhaustion in the hub.
    Internal,
    /// Authentication failed: 401 (missing/invalid token, with `WWW-Authenticate`), 403
    /// (`insufficient_scope`), 431 (a token too large), 503 (token keys not available).
    Unauthorized(u16),
    /// The principal's rate limit: HTTP 429 with `Retry-After`.
    TooManyRequests,
    /// A 2026-07-28 request refused for what the modern era requires: header/body mismatch
    /// (`-32020`), a capability the client did not declare (`-32021`), an unsupported version
    /// (`-32022`), a bad `_meta` envelope (`-32602`), an unknown or removed method (404
    /// `-32601`); each with the HTTP status the spec pairs with it.
    Modern(Box<mcp_wire::modern::ModernError>),
}

/// An error with the request id it belongs to and a human reason.
#[derive(Debug, Clone)]
pub struct ProxyError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Raw JSON id of the request, when it could be read.
    pub id: Option<Box<str>>,
    /// The reason, shown to the client and logged.
    pub message: String,
    /// Rendered for a 2026-07-28 client: an unknown method is HTTP 404, resource-not-found is
    /// `-32602` (the legacy `-32002` is gone).
    pub modern: bool,
    /// A header the reply carries (`WWW-Authenticate`, `Retry-After`).
    pub header: Option<Box<(&'static str, String)>>,
}

impl ProxyError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            id: None,
            message: message.into(),
            modern: false,
            header: None,
        }
    }

    /// A modern-era refusal.
    pub fn modern(e: mcp_wire::modern::ModernError) -> Self {
        let message = e.to_string();
        Self {
            kind: ErrorKind::Modern(Box::new(e)),
            id: None,
            message,
            modern: true,
            header: None,
        }
    }

    /// Marks the error as answering a 2026-07-28 request (see [`ProxyError::modern`] field).
    pub fn for_modern(mut self, modern: bool) -> Self {
        self.modern = self.modern || modern;
        self
    }

    /// Attaches the request id.
    pub fn with_id(mut self, id: Option<&str>) -> Self {
        if self.id.is_none() {
            self.id = id.map(Box::from);
        }
        self
    }

    /// HTTP status of the reply.
    pub fn status(&self) -> u16 {
        match &self.kind {
            ErrorKind::Modern(m) => m.http_status(),
            ErrorKind::Unauthorized(s) => *s,
            ErrorKind::TooManyRequests => 429,
            ErrorKind::MethodNotFound if self.modern => 404,
            ErrorKind::BadOrigin | ErrorKind::BadHost => 403,
            ErrorKind::NotAcceptable => 406,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Parse
            | ErrorKind::InvalidRequest
            | ErrorKind::UnsupportedVersion
            | ErrorKind::MissingSession
            | ErrorKind::UnknownResponseId => 400,
            ErrorKind::UnknownSession => 404,
            ErrorKind::MethodNotFound
            | ErrorKind::InvalidParams
            | ErrorKind::ResourceNotFound
            | ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamSessionLost
            | ErrorKind::UpstreamProtocol
            | ErrorKind::Internal => 200,
        }
    }

    /// JSON-RPC error code carried in the body, if the reply has a JSON-RPC body.
    pub fn code(&self) -> Option<i32> {
        match &self.kind {
            ErrorKind::Modern(m) => Some(m.code()),
            ErrorKind::Unauthorized(_) => None,
            ErrorKind::TooManyRequests => Some(code::INTERNAL_ERROR),
            ErrorKind::ResourceNotFound if self.modern => Some(code::INVALID_PARAMS),
            ErrorKind::UnknownSession | ErrorKind::MethodNotAllowed => None,
            ErrorKind::BadOrigin
            | ErrorKind::BadHost
            | ErrorKind::NotAcceptable
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::InvalidRequest
            | ErrorKind::MissingSession
            | ErrorKind::UnknownResponseId => Some(code::INVALID_REQUEST),
            ErrorKind::Parse => Some(code::PARSE_ERROR),
            ErrorKind::UnsupportedVersion | ErrorKind::InvalidParams => Some(code::INVALID_PARAMS),
            ErrorKind::MethodNotFound => Some(code::METHOD_NOT_FOUND),
            ErrorKind::ResourceNotFound => Some(code::RESOURCE_NOT_FOUND),
            ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamSessionLost
            | ErrorKind::UpstreamProtocol
            | ErrorKind::Internal => Some(code::INTERNAL_ERROR),
        }
    }

    /// Which side caused it.
    pub fn source(&self) -> ErrorSource {
        match &self.kind {
            ErrorKind::Modern(_)
            | ErrorKind::Unauthorized(_)
            | ErrorKind::TooManyRequests
            | ErrorKind::BadOrigin
            | ErrorKind::BadHost
            | ErrorKind::NotAcceptable
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::MethodNotAllowed
            | ErrorKind::Parse
            | ErrorKind::InvalidRequest
            | ErrorKind::UnsupportedVersion
            | ErrorKind::MissingSession
            | ErrorKind::UnknownSession
            | ErrorKind::UnknownResponseId
            | ErrorKind::MethodNotFound
            | ErrorKind::InvalidParams
            | ErrorKind::ResourceNotFound => ErrorSource::Downstream,
            ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamSessionLost
            | ErrorKind::UpstreamProtocol => ErrorSource::Upstream,
            ErrorKind::Internal => ErrorSource::Internal,
        }
    }

    /// Whether the client may simply retry the same request.
    pub fn retryable(&self) -> bool {
        match &self.kind {
            ErrorKind::Modern(_) | ErrorKind::Unauthorized(_) => false,
            ErrorKind::TooManyRequests => true,
            ErrorKind::UpstreamUnavailable
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamSessionLost
            | ErrorKind::Internal => true,
            ErrorKind::BadOrigin
            | ErrorKind::BadHost
            | ErrorKind::NotAcceptable
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::MethodNotAllowed
            | ErrorKind::Parse
            | ErrorKind::InvalidRequest
            | ErrorKind::UnsupportedVersion
            | ErrorKind::MissingSession
            | ErrorKind::UnknownSession
            | ErrorKind::UnknownResponseId
            | ErrorKind::MethodNotFound
            | ErrorKind::InvalidParams
            | ErrorKind::ResourceNotFound
            | ErrorKind::UpstreamProtocol => false,
        }
    }

    /// The JSON-RPC error object for the body, if any.
    pub fn body(&self) -> Option<Vec<u8>> {
        if let ErrorKind::Modern(m) = &self.kind {
            return Some(m.render(self.id.as_deref()));
        }
        let code = self.code()?;
        Some(mcp_wire::jsonrpc::error_object(
            self.id.as_deref(),
            code,
            &self.message,
            None,
        ))
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self.source() {
            ErrorSource::Downstream => "client_error",
            ErrorSource::Upstream => "upstream_error",
            ErrorSource::Internal => "internal_error",
        }
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering() {
        let e = ProxyError::new(ErrorKind::InvalidParams, "unknown tool: x").with_id(Some("3"));
        assert_eq!(e.status(), 200);
        let v: serde_json::Value = serde_json::from_slice(&e.body().unwrap()).unwrap();
        assert_eq!(v["id"], 3);
        assert_eq!(v["error"]["code"], -32602);
        let e = ProxyError::new(ErrorKind::UnknownSession, "gone");
        assert_eq!(e.status(), 404);
        assert!(e.body().is_none());
        assert_eq!(ProxyError::new(ErrorKind::Parse, "x").status(), 400);
    }
}
