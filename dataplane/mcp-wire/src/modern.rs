//! Sans-IO helpers for the modern (2026-07-28, stateless) era of MCP (reference/mcp-wire.md §3, §9).
//!
//! Where it sits: step 3 of the request path (DESIGN.md §4), beside [`peek`](crate::peek). After
//! the head is parsed and the body peeked, the hub asks this module which era a request belongs
//! to ([`request_era`]), reads the per-request `_meta` envelope without decoding the rest
//! ([`peek_meta`], [`check_meta`]), checks the mirrored headers against the body
//! ([`check_headers`]), and renders the era's errors with their HTTP status ([`ModernError`]).
//! On the way back it edits result bytes in place rather than re-encoding them
//! ([`ensure_result_type`], [`set_cache_hints`], [`translate_resource_not_found`]), reads MRTR
//! shapes ([`peek_result_shape`], [`peek_retry`]) and builds the `subscriptions/listen`
//! acknowledgement and tags ([`ListenFilter`], [`acknowledged`], [`tag_subscription`]).
//!
//! Nothing here touches sockets, runtimes or session state; every function works on bytes and
//! borrowed strings and is table-tested below.

use std::borrow::Cow;
use std::ops::Range;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::jsonrpc::{code, error_object, push_json_str};
use crate::mcp::{legacy_revision, method, Era, V2026_07_28};
use crate::peek::PeekError;

/// `_meta` key: the request's protocol revision (required on every modern request).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key: the client's capabilities (required on every modern request).
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key: the client's self-asserted `{name, version}` (SHOULD).
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key: opt-in log level for `notifications/message` on this request.
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// `_meta` key in results: the server's `{name, version}`.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// `_meta` key on `subscriptions/listen` stream messages: the listen request's JSON-RPC id.
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// Header mirroring the JSON-RPC `method` (required on every modern request).
pub const HEADER_MCP_METHOD: &str = "Mcp-Method";
/// Header mirroring `params.name` (tools/call, prompts/get) or `params.uri` (resources/read).
pub const HEADER_MCP_NAME: &str = "Mcp-Name";
/// Prefix of headers mirroring `x-mcp-header` tool arguments.
pub const HEADER_MCP_PARAM_PREFIX: &str = "Mcp-Param-";

/// Modern method: capability and version discovery (replaces `initialize`).
pub const METHOD_SERVER_DISCOVER: &str = "server/discover";
/// Modern method: the long-lived notification stream (replaces the GET stream).
pub const METHOD_SUBSCRIPTIONS_LISTEN: &str = "subscriptions/listen";
/// First message on a listen stream.
pub const METHOD_SUBSCRIPTIONS_ACKNOWLEDGED: &str = "notifications/subscriptions/acknowledged";

/// Legacy-only methods a modern request must not use; a modern server answers them with HTTP 404
/// and `-32601` (spec §3.4 "removed"; conformance `server-stateless`).
pub const REMOVED_METHODS: [&str; 6] = [
    method::INITIALIZE,
    method::PING,
    method::LOGGING_SET_LEVEL,
    method::RESOURCES_SUBSCRIBE,
    method::RESOURCES_UNSUBSCRIBE,
    method::ROOTS_LIST_CHANGED,
];

// ---------------------------------------------------------------------------------------------
// Era of a request.

/// Which era serves a request, decided from the method, the session header and the versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraVerdict {
    /// Serve in a legacy session (or open one).
    Legacy,
    /// Serve statelessly.
    Modern,
    /// A modern `_meta` protocol version together with a `Mcp-Session-Id`: the request claims
    /// both eras. The caller decides (the spec says a modern server ignores the session id; a
    /// dual-era hub may equally refuse it as a header mismatch).
    ModernWithSession,
}

/// Whether `version` names the modern era: any string that is not a legacy revision the hub
/// serves. Unknown versions are classed modern so that they get the modern `-32022` answer
/// (spec §3.3: "unsupported version → -32022"; the Python SDK routes them the same way).
pub fn is_modern_version(version: &str) -> bool {
    legacy_revision(version).is_none()
}

/// The era of a request (spec §3.5 "dual-era serving"):
/// `initialize` → legacy; else a `_meta` protocol version decides (modern if not a legacy
/// revision); else the `MCP-Protocol-Version` header decides; else a session id means legacy;
/// else legacy (a pre-2025-06-18 client sends neither header nor `_meta`).
/// A modern verdict together with a session id is reported as [`EraVerdict::ModernWithSession`].
pub fn request_era(
    method: Option<&str>,
    has_session_id: bool,
    meta_version: Option<&str>,
    header_version: Option<&str>,
) -> EraVerdict {
    if method == Some(method::INITIALIZE) {
        return EraVerdict::Legacy;
    }
    let modern = match (meta_version, header_version) {
        (Some(v), _) => is_modern_version(v),
        (None, Some(h)) => is_modern_version(h.trim()),
        (None, None) => false,
    };
    match (modern, has_session_id) {
        (false, _) => EraVerdict::Legacy,
        (true, false) => EraVerdict::Modern,
        (true, true) => EraVerdict::ModernWithSession,
    }
}

/// The [`Era`] of a verdict (`ModernWithSession` counts as modern).
pub fn verdict_era(v: EraVerdict) -> Era {
    match v {
        EraVerdict::Legacy => Era::Legacy,
        EraVerdict::Modern | EraVerdict::ModernWithSession => Era::Modern,
    }
}

// ---------------------------------------------------------------------------------------------
// `_meta` envelope peek.

/// The envelope fields of `params._meta`, borrowed from the request bytes. Raw values are JSON
/// as sent (objects, numbers, string literals with quotes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaPeek<'a> {
    /// Whether `params._meta` was present and an object.
    pub present: bool,
    /// `io.modelcontextprotocol/protocolVersion`, decoded.
    pub protocol_version: Option<Cow<'a, str>>,
    /// `io.modelcontextprotocol/clientCapabilities` as raw JSON.
    pub client_capabilities: Option<&'a str>,
    /// `io.modelcontextprotocol/clientInfo` as raw JSON.
    pub client_info: Option<&'a str>,
    /// `io.modelcontextprotocol/logLevel`, decoded.
    pub log_level: Option<Cow<'a, str>>,
    /// `progressToken` as raw JSON.
    pub progress_token: Option<&'a str>,
    /// `traceparent` (W3C trace context), decoded.
    pub traceparent: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ParamsMeta<'a> {
    #[serde(borrow, rename = "_meta")]
    meta: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MetaFields<'a> {
    #[serde(borrow, rename = "io.modelcontextprotocol/protocolVersion")]
    protocol_version: Option<&'a RawValue>,
    #[serde(borrow, rename = "io.modelcontextprotocol/clientCapabilities")]
    client_capabilities: Option<&'a RawValue>,
    #[serde(borrow, rename = "io.modelcontextprotocol/clientInfo")]
    client_info: Option<&'a RawValue>,
    #[serde(borrow, rename = "io.modelcontextprotocol/logLevel")]
    log_level: Option<&'a RawValue>,
    #[serde(borrow, rename = "progressToken")]
    progress_token: Option<&'a RawValue>,
    #[serde(borrow)]
    traceparent: Option<&'a RawValue>,
}

fn raw_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let s = raw.get();
    if !s.starts_with('"') {
        return None;
    }
    if !s.contains('\\') {
        return Some(Cow::Borrowed(&s[1..s.len() - 1]));
    }
    serde_json::from_str::<String>(s).ok().map(Cow::Owned)
}

fn data_err(e: &serde_json::Error, what: &'static str) -> PeekError {
    match e.classify() {
        serde_json::error::Category::Data => PeekError::Invalid(what),
        _ => PeekError::Parse(e.to_string()),
    }
}

/// Reads the envelope fields of `params._meta` from the raw `params` JSON (as returned in
/// [`Peeked::params`](crate::Peeked::params)), skipping every other field without decoding it.
/// Non-string `protocolVersion`/`logLevel`/`traceparent` read as absent (then [`check_meta`]
/// rejects a missing version).
///
/// # Errors
/// [`PeekError`] if `params` or `_meta` is not valid JSON.
pub fn peek_meta(params: &str) -> Result<MetaPeek<'_>, PeekError> {
    if !params.trim_start().starts_with('{') {
        return Ok(MetaPeek::default());
    }
    let p: ParamsMeta<'_> =
        serde_json::from_str(params).map_err(|e| data_err(&e, "malformed params"))?;
    let Some(meta) = p.meta.filter(|m| m.get().starts_with('{')) else {
        return Ok(MetaPeek::default());
    };
    let m: MetaFields<'_> =
        serde_json::from_str(meta.get()).map_err(|e| data_err(&e, "malformed _meta"))?;
    Ok(MetaPeek {
        present: true,
        protocol_version: m.protocol_version.and_then(raw_str),
        client_capabilities: m.client_capabilities.map(RawValue::get),
        client_info: m.client_info.map(RawValue::get),
        log_level: m.log_level.and_then(raw_str),
        progress_token: m.progress_token.map(RawValue::get),
        traceparent: m.traceparent.and_then(raw_str),
    })
}

/// Checks the required envelope fields (spec §3.3): `_meta` present, `protocolVersion` a string,
/// `clientCapabilities` an object (→ `-32602`, HTTP 400), and the version one of `supported`
/// (→ `-32022` with `data: {supported, requested}`, HTTP 400). `clientInfo` is optional (a SHOULD;
/// servers must not require it). Returns the accepted version.
///
/// # Errors
/// [`ModernError::InvalidMeta`] or [`ModernError::UnsupportedProtocolVersion`].
pub fn check_meta<'m>(meta: &'m MetaPeek<'_>, supported: &[&str]) -> Result<&'m str, ModernError> {
    if !meta.present {
        return Err(ModernError::InvalidMeta("params._meta is required"));
    }
    let Some(version) = meta.protocol_version.as_deref() else {
        return Err(ModernError::InvalidMeta(
            "_meta[\"io.modelcontextprotocol/protocolVersion\"] must be a string",
        ));
    };
    if !meta.client_capabilities.is_some_and(|c| c.starts_with('{')) {
        return Err(ModernError::InvalidMeta(
            "_meta[\"io.modelcontextprotocol/clientCapabilities\"] must be an object",
        ));
    }
    if !supported.contains(&version) {
        return Err(ModernError::UnsupportedProtocolVersion {
            supported: supported.iter().map(|s| (*s).to_owned()).collect(),
            requested: version.to_owned(),
        });
    }
    Ok(version)
}

// ---------------------------------------------------------------------------------------------
// Header validation.

/// Why the mirrored headers do not match the body (all render as `-32020` HeaderMismatch, HTTP
/// 400; spec §3.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderMismatch {
    /// A required header is absent.
    #[error("missing required header {0}")]
    Missing(String),
    /// A header is present where the body has no value to mirror.
    #[error("header {0} has no counterpart in the body")]
    Unexpected(String),
    /// Header and body disagree.
    #[error("header {header} is {got:?} but the body says {expected:?}")]
    Mismatch {
        /// Header name.
        header: String,
        /// The body's value (decoded).
        expected: String,
        /// The header's value (decoded).
        got: String,
    },
    /// The header value has characters a plain value may not carry (control, non-ASCII).
    #[error("header {0} contains characters that require =?base64?...?= encoding")]
    BadCharacters(String),
    /// The `=?base64?...?=` sentinel is malformed, not base64, or not UTF-8.
    #[error("header {0} has an invalid =?base64?...?= value")]
    BadEncoding(String),
    /// The mirrored argument has a type headers cannot carry (only string, integer, boolean).
    #[error("argument mirrored in {0} is not a string, integer or boolean")]
    UnsupportedType(String),
}

/// The modern headers of one request, as received (values untrimmed). Names compare
/// case-insensitively on the wire; the caller collects them.
#[derive(Debug, Clone, Default)]
pub struct ModernHeaders<'a> {
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<&'a str>,
    /// `Mcp-Method`.
    pub method: Option<&'a str>,
    /// `Mcp-Name`.
    pub name: Option<&'a str>,
    /// `Mcp-Param-<Name>` headers: (`<Name>` without the prefix, value).
    pub params: Vec<(&'a str, &'a str)>,
}

const SENTINEL_OPEN: &str = "=?base64?";
const SENTINEL_CLOSE: &str = "?=";

/// Decodes one header value (spec §3.2): optional whitespace around the value is ignored (HTTP
/// OWS); `=?base64?<b64>?=` (markers lowercase, exact) is standard padded base64 of UTF-8; any
/// other value must be plain visible ASCII or inner spaces.
///
/// # Errors
/// [`HeaderMismatch::BadEncoding`] / [`HeaderMismatch::BadCharacters`], naming `header`.
pub fn decode_header_value<'v>(
    header: &str,
    value: &'v str,
) -> Result<Cow<'v, str>, HeaderMismatch> {
    let v = value.trim_matches(|c| c == ' ' || c == '\t');
    if let Some(inner) = v
        .strip_prefix(SENTINEL_OPEN)
        .and_then(|r| r.strip_suffix(SENTINEL_CLOSE))
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(inner)
            .map_err(|_| HeaderMismatch::BadEncoding(header.to_owned()))?;
        return String::from_utf8(bytes)
            .map(Cow::Owned)
            .map_err(|_| HeaderMismatch::BadEncoding(header.to_owned()));
    }
    if v.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Ok(Cow::Borrowed(v))
    } else {
        Err(HeaderMismatch::BadCharacters(header.to_owned()))
    }
}

/// Encodes a value for `Mcp-Name` / `Mcp-Param-*` (spec §3.2): plain if it is non-empty visible
/// ASCII with inner spaces only and does not look like the sentinel; otherwise
/// `=?base64?<base64 of UTF-8>?=`.
pub fn encode_header_value(value: &str) -> Cow<'_, str> {
    let looks_like_sentinel = value.starts_with(SENTINEL_OPEN) && value.ends_with(SENTINEL_CLOSE);
    let safe_bytes = value.bytes().all(|b| (0x20..=0x7e).contains(&b));
    let edge_space = value.starts_with(' ') || value.ends_with(' ');
    let plain = !value.is_empty() && safe_bytes && !edge_space && !looks_like_sentinel;
    if plain {
        Cow::Borrowed(value)
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
        Cow::Owned(format!("{SENTINEL_OPEN}{b64}{SENTINEL_CLOSE}"))
    }
}

/// The JSON value of an argument compared against its mirror header: strings by their decoded
/// text, integers numerically (so `"007"` matches `7`), booleans as `true`/`false` (spec §3.2).
fn argument_matches(header: &str, raw_arg: &str, got: &str) -> Result<bool, HeaderMismatch> {
    let raw = raw_arg.trim();
    if raw.starts_with('"') {
        let s: String = serde_json::from_str(raw)
            .map_err(|_| HeaderMismatch::UnsupportedType(header.to_owned()))?;
        return Ok(s == got);
    }
    if raw == "true" || raw == "false" {
        return Ok(raw == got);
    }
    if let Ok(n) = raw.parse::<i64>() {
        return Ok(got.parse::<i64>().is_ok_and(|h| h == n));
    }
    // JSON allows integers written with an exponent or a zero fraction (e.g. 1.0, 1e2).
    if let Ok(f) = raw.parse::<f64>() {
        if f.fract() == 0.0 && f.abs() < 9.0e15 {
            #[allow(clippy::cast_possible_truncation)]
            let n = f as i64;
            return Ok(got.parse::<i64>().is_ok_and(|h| h == n));
        }
    }
    Err(HeaderMismatch::UnsupportedType(header.to_owned()))
}

/// What the body says, for [`check_headers`].
#[derive(Debug, Clone, Default)]
pub struct BodyFacts<'a> {
    /// The JSON-RPC `method`.
    pub method: &'a str,
    /// `params.name` (tools/call, prompts/get) or `params.uri` (resources/read), decoded.
    pub name: Option<&'a str>,
    /// `_meta` protocol version.
    pub meta_version: &'a str,
    /// For tools/call: each `x-mcp-header` argument of the tool's schema as
    /// (header `<Name>`, raw JSON of the argument or `None` if absent or `null`).
    pub mirrored_args: Vec<(&'a str, Option<&'a str>)>,
}

/// Whether `method` must carry `Mcp-Name`.
pub fn needs_name_header(method: &str) -> bool {
    matches!(
        method,
        method::TOOLS_CALL | method::PROMPTS_GET | method::RESOURCES_READ
    )
}

/// Checks the modern headers against the body (spec §3.2; anyone that processes the body MUST):
/// `MCP-Protocol-Version` equals the `_meta` version; `Mcp-Method` equals `method` (values are
/// case-sensitive); `Mcp-Name` equals `params.name`/`params.uri` on tools/call, prompts/get and
/// resources/read; each `x-mcp-header` argument that is present and non-null has its
/// `Mcp-Param-<Name>` header (names case-insensitive) with a matching value, and no such header
/// is sent for an absent argument. `Mcp-Param-*` headers the schema does not name are ignored
/// here (intermediaries forward them).
///
/// # Errors
/// The first [`HeaderMismatch`] found.
pub fn check_headers(h: &ModernHeaders<'_>, body: &BodyFacts<'_>) -> Result<(), HeaderMismatch> {
    let pv = h
        .protocol_version
        .ok_or_else(|| HeaderMismatch::Missing("MCP-Protocol-Version".to_owned()))?;
    let pv = pv.trim_matches(|c| c == ' ' || c == '\t');
    if pv != body.meta_version {
        return Err(HeaderMismatch::Mismatch {
            header: "MCP-Protocol-Version".to_owned(),
            expected: body.meta_version.to_owned(),
            got: pv.to_owned(),
        });
    }
    let m = h
        .method
        .ok_or_else(|| HeaderMismatch::Missing(HEADER_MCP_METHOD.to_owned()))?;
    let m = decode_header_value(HEADER_MCP_METHOD, m)?;
    if m != body.method {
        return Err(HeaderMismatch::Mismatch {
            header: HEADER_MCP_METHOD.to_owned(),
            expected: body.method.to_owned(),
            got: m.into_owned(),
        });
    }
    if needs_name_header(body.method) {
        let n = h
            .name
            .ok_or_else(|| HeaderMismatch::Missing(HEADER_MCP_NAME.to_owned()))?;
        let n = decode_header_value(HEADER_MCP_NAME, n)?;
        if Some(n.as_ref()) != body.name {
            return Err(HeaderMismatch::Mismatch {
                header: HEADER_MCP_NAME.to_owned(),
                expected: body.name.unwrap_or_default().to_owned(),
                got: n.into_owned(),
            });
        }
    }
    for (name, arg) in &body.mirrored_args {
        let header = format!("{HEADER_MCP_PARAM_PREFIX}{name}");
        let sent = h
            .params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v);
        match (arg, sent) {
            (None, None) => {}
            (None, Some(_)) => return Err(HeaderMismatch::Unexpected(header)),
            (Some(_), None) => return Err(HeaderMismatch::Missing(header)),
            (Some(raw), Some(v)) => {
                let got = decode_header_value(&header, v)?;
                if !argument_matches(&header, raw, &got)? {
                    return Err(HeaderMismatch::Mismatch {
                        expected: raw.trim().trim_matches('"').to_owned(),
                        got: got.into_owned(),
                        header,
                    });
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors of the modern era, with their HTTP status.

/// A modern-era rejection: its JSON-RPC code, HTTP status and rendered body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModernError {
    /// Headers disagree with the body: `-32020`, HTTP 400.
    #[error("header mismatch: {0}")]
    HeaderMismatch(#[from] HeaderMismatch),
    /// A capability the client did not declare is needed: `-32021`, HTTP 400, with
    /// `data.requiredCapabilities` (a `ClientCapabilities` object such as `{"sampling":{}}`).
    #[error("missing required client capability")]
    MissingRequiredClientCapability {
        /// Raw JSON object of the missing capabilities.
        required: String,
    },
    /// Unsupported protocol version: `-32022`, HTTP 400, `data: {supported, requested}`.
    #[error("unsupported protocol version {requested}")]
    UnsupportedProtocolVersion {
        /// Versions the hub supports.
        supported: Vec<String>,
        /// The version the request named.
        requested: String,
    },
    /// Unknown or removed method: `-32601`, HTTP 404 (the body tells it from a legacy 404).
    #[error("method not found: {0}")]
    MethodNotFound(String),
    /// Missing or malformed `_meta` envelope fields: `-32602`, HTTP 400.
    #[error("invalid _meta: {0}")]
    InvalidMeta(&'static str),
}

impl ModernError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i32 {
        match self {
            ModernError::HeaderMismatch(_) => code::HEADER_MISMATCH,
            ModernError::MissingRequiredClientCapability { .. } => {
                code::MISSING_REQUIRED_CLIENT_CAPABILITY
            }
            ModernError::UnsupportedProtocolVersion { .. } => code::UNSUPPORTED_PROTOCOL_VERSION,
            ModernError::MethodNotFound(_) => code::METHOD_NOT_FOUND,
            ModernError::InvalidMeta(_) => code::INVALID_PARAMS,
        }
    }

    /// The HTTP status the spec pairs with this error (§3.3, §9).
    pub fn http_status(&self) -> u16 {
        match self {
            ModernError::MethodNotFound(_) => 404,
            _ => 400,
        }
    }

    /// The raw JSON of `error.data`, if any.
    pub fn data(&self) -> Option<String> {
        match self {
            ModernError::MissingRequiredClientCapability { required } => {
                Some(format!("{{\"requiredCapabilities\":{required}}}"))
            }
            ModernError::UnsupportedProtocolVersion {
                supported,
                requested,
            } => {
                let mut out = Vec::with_capacity(64);
                out.extend_from_slice(b"{\"supported\":[");
                for (i, v) in supported.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    push_json_str(&mut out, v);
                }
                out.extend_from_slice(b"],\"requested\":");
                push_json_str(&mut out, requested);
                out.push(b'}');
                String::from_utf8(out).ok()
            }
            _ => None,
        }
    }

    /// Renders the JSON-RPC error response. `id` is the raw JSON of the request id (echoed, as
    /// the spec requires of every error that can read it), `None` for `null`.
    pub fn render(&self, id: Option<&str>) -> Vec<u8> {
        error_object(id, self.code(), &self.to_string(), self.data().as_deref())
    }
}

/// The error for a method a modern request may not use or the hub does not know: always
/// `-32601` with HTTP 404 (spec §3.3; removed methods included).
pub fn method_not_found(method: &str) -> ModernError {
    ModernError::MethodNotFound(method.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Result rewriting without a full re-encode.

#[derive(Deserialize)]
struct ResponseTop<'a> {
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

fn span_of(base: &[u8], raw: &RawValue) -> Range<usize> {
    let start = (raw.get().as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
    start..start + raw.get().len()
}

/// Finds `"key":<value>` among the *top-level* members of the JSON object `obj` and returns the
/// value's byte span in `obj`. Nested objects are skipped by the parser, not searched.
fn member_span(obj: &[u8], key: &str) -> Result<Option<Range<usize>>, PeekError> {
    let map: std::collections::BTreeMap<Cow<'_, str>, &RawValue> =
        serde_json::from_slice(obj).map_err(|e| data_err(&e, "result is not an object"))?;
    Ok(map.get(key).map(|raw| span_of(obj, raw)))
}

/// Inserts `"key":<raw>` as the first member of the object whose `{` is at `open`.
fn insert_member(out: &mut Vec<u8>, body: &[u8], open: usize, key: &str, raw: &str) {
    let empty = body[open + 1..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'}');
    out.extend_from_slice(&body[..=open]);
    push_json_str(out, key);
    out.push(b':');
    out.extend_from_slice(raw.as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&body[open + 1..]);
}

/// The byte span of `result` in a JSON-RPC response body, if it is a result (not an error).
///
/// # Errors
/// [`PeekError`] if the body is not a JSON object.
pub fn result_span(body: &[u8]) -> Result<Option<Range<usize>>, PeekError> {
    let top: ResponseTop<'_> =
        serde_json::from_slice(body).map_err(|e| data_err(&e, "response is not an object"))?;
    Ok(top
        .result
        .filter(|r| r.get().starts_with('{'))
        .map(|r| span_of(body, r)))
}

/// Adds `"resultType":"complete"` to the `result` of a JSON-RPC response unless it has a
/// `resultType` already (spec §3.4: required in every modern result; a legacy upstream's result
/// without one means `complete`). Errors and non-object results pass unchanged.
///
/// # Errors
/// [`PeekError`] if the body is not a JSON object.
pub fn ensure_result_type(body: &[u8]) -> Result<Cow<'_, [u8]>, PeekError> {
    let Some(span) = result_span(body)? else {
        return Ok(Cow::Borrowed(body));
    };
    if member_span(&body[span.clone()], "resultType")?.is_some() {
        return Ok(Cow::Borrowed(body));
    }
    let mut out = Vec::with_capacity(body.len() + 26);
    insert_member(&mut out, body, span.start, "resultType", "\"complete\"");
    Ok(Cow::Owned(out))
}

/// `cacheScope` of a cacheable result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// Shared caches may serve it to anyone.
    Public,
    /// Reuse only within the same authorization context.
    Private,
}

impl CacheScope {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheScope::Public => "public",
            CacheScope::Private => "private",
        }
    }
}

/// The caching hints of a result (spec §3.4 `CacheableResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheHints {
    /// `ttlMs`, an integer ≥ 0.
    pub ttl_ms: u64,
    /// `cacheScope`.
    pub scope: CacheScope,
}

impl CacheHints {
    /// The safe default when bridging a legacy upstream (which sends no hints): `ttlMs: 0`,
    /// `cacheScope: "private"` (reference §11).
    pub const SAFE_DEFAULT: CacheHints = CacheHints {
        ttl_ms: 0,
        scope: CacheScope::Private,
    };
}

/// Whether `method`'s complete results must carry caching hints (spec §3.4).
pub fn is_cacheable_method(method: &str) -> bool {
    matches!(
        method,
        METHOD_SERVER_DISCOVER
            | method::TOOLS_LIST
            | method::PROMPTS_LIST
            | method::RESOURCES_LIST
            | method::RESOURCES_TEMPLATES_LIST
            | method::RESOURCES_READ
    )
}

#[derive(Deserialize)]
struct HintFields<'a> {
    #[serde(borrow, rename = "ttlMs")]
    ttl_ms: Option<&'a RawValue>,
    #[serde(borrow, rename = "cacheScope")]
    scope: Option<&'a RawValue>,
}

/// Reads `ttlMs`/`cacheScope` from a result object. Returns `None` unless both are present and
/// valid (a non-negative integer and `"public"`/`"private"`).
///
/// # Errors
/// [`PeekError`] if `result` is not a JSON object.
pub fn cache_hints(result: &[u8]) -> Result<Option<CacheHints>, PeekError> {
    let f: HintFields<'_> =
        serde_json::from_slice(result).map_err(|e| data_err(&e, "result is not an object"))?;
    let ttl = f.ttl_ms.and_then(|r| r.get().parse::<u64>().ok());
    let scope = f.scope.and_then(|r| match r.get() {
        "\"public\"" => Some(CacheScope::Public),
        "\"private\"" => Some(CacheScope::Private),
        _ => None,
    });
    Ok(ttl
        .zip(scope)
        .map(|(ttl_ms, scope)| CacheHints { ttl_ms, scope }))
}

/// Writes `ttlMs`/`cacheScope` into the `result` of a response body: present members are
/// replaced in place, absent ones inserted; the rest of the bytes is copied untouched.
///
/// # Errors
/// [`PeekError`] if the body is not a JSON object; a body without an object `result` is
/// returned unchanged.
pub fn set_cache_hints(body: &[u8], hints: CacheHints) -> Result<Vec<u8>, PeekError> {
    let Some(span) = result_span(body)? else {
        return Ok(body.to_vec());
    };
    let ttl = hints.ttl_ms.to_string();
    let scope = format!("\"{}\"", hints.scope.as_str());
    let mut cur = body.to_vec();
    let mut res = span;
    for (key, val) in [("ttlMs", ttl.as_str()), ("cacheScope", scope.as_str())] {
        let next = match member_span(&cur[res.clone()], key)? {
            Some(v) => {
                let at = res.start + v.start..res.start + v.end;
                let mut out = Vec::with_capacity(cur.len() + val.len());
                out.extend_from_slice(&cur[..at.start]);
                out.extend_from_slice(val.as_bytes());
                out.extend_from_slice(&cur[at.end..]);
                let grow = val.len() as isize - (at.end - at.start) as isize;
                res = res.start..(res.end as isize + grow) as usize;
                out
            }
            None => {
                let mut out = Vec::with_capacity(cur.len() + key.len() + val.len() + 4);
                insert_member(&mut out, &cur, res.start, key, val);
                let grow = out.len() - cur.len();
                res = res.start..res.end + grow;
                out
            }
        };
        cur = next;
    }
    Ok(cur)
}

/// The hints of a federated list (issue 10 §2): the minimum TTL of its parts, `private` if any
/// part is private or the list is filtered per principal. A part without hints (a legacy
/// upstream) counts as [`CacheHints::SAFE_DEFAULT`]. No parts at all gives the safe default.
pub fn merge_cache_hints<I>(parts: I, filtered_per_principal: bool) -> CacheHints
where
    I: IntoIterator<Item = Option<CacheHints>>,
{
    let mut merged: Option<CacheHints> = None;
    for p in parts {
        let p = p.unwrap_or(CacheHints::SAFE_DEFAULT);
        merged = Some(match merged {
            None => p,
            Some(m) => CacheHints {
                ttl_ms: m.ttl_ms.min(p.ttl_ms),
                scope: if m.scope == CacheScope::Private || p.scope == CacheScope::Private {
                    CacheScope::Private
                } else {
                    CacheScope::Public
                },
            },
        });
    }
    let mut m = merged.unwrap_or(CacheHints::SAFE_DEFAULT);
    if filtered_per_principal {
        m.scope = CacheScope::Private;
    }
    m
}

#[derive(Deserialize)]
struct ErrorCode<'a> {
    #[serde(borrow)]
    code: Option<&'a RawValue>,
}

/// Rewrites a legacy upstream's `-32002` (resource not found) to the modern `-32602` (spec §9:
/// modern servers must not emit `-32002`). Returns `None` if the body is not such an error; the
/// message and `data` (e.g. `{uri}`) are kept.
///
/// # Errors
/// [`PeekError`] if the body is not a JSON object.
pub fn translate_resource_not_found(body: &[u8]) -> Result<Option<Vec<u8>>, PeekError> {
    let top: ResponseTop<'_> =
        serde_json::from_slice(body).map_err(|e| data_err(&e, "response is not an object"))?;
    let Some(err) = top.error.filter(|e| e.get().starts_with('{')) else {
        return Ok(None);
    };
    let ec: ErrorCode<'_> =
        serde_json::from_str(err.get()).map_err(|e| data_err(&e, "error is not an object"))?;
    let Some(c) = ec.code.filter(|c| c.get() == "-32002") else {
        return Ok(None);
    };
    let at = span_of(body, c);
    let mut out = Vec::with_capacity(body.len());
    out.extend_from_slice(&body[..at.start]);
    out.extend_from_slice(code::INVALID_PARAMS.to_string().as_bytes());
    out.extend_from_slice(&body[at.end..]);
    Ok(Some(out))
}

// ---------------------------------------------------------------------------------------------
// MRTR shapes.

/// The shape of a result object (spec §3.4 `resultType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultShape<'a> {
    /// `resultType` absent or `"complete"`.
    Complete,
    /// `resultType: "input_required"` with at least one of `inputRequests` (raw JSON object)
    /// and `requestState` (raw JSON string literal, to be echoed byte for byte).
    InputRequired {
        /// Raw `inputRequests` object.
        input_requests: Option<&'a str>,
        /// Raw `requestState` string literal.
        request_state: Option<&'a str>,
    },
    /// An `input_required` result with neither field (invalid per spec).
    InvalidInputRequired,
    /// Another `resultType` (an extension, e.g. `"task"`), decoded.
    Other(Cow<'a, str>),
}

#[derive(Deserialize)]
struct MrtrFields<'a> {
    #[serde(borrow, rename = "resultType")]
    result_type: Option<&'a RawValue>,
    #[serde(borrow, rename = "inputRequests")]
    input_requests: Option<&'a RawValue>,
    #[serde(borrow, rename = "requestState")]
    request_state: Option<&'a RawValue>,
    #[serde(borrow, rename = "inputResponses")]
    input_responses: Option<&'a RawValue>,
}

/// Classifies a result object by `resultType` (MRTR, spec §3.4).
///
/// # Errors
/// [`PeekError`] if `result` is not a JSON object.
pub fn peek_result_shape(result: &str) -> Result<ResultShape<'_>, PeekError> {
    let f: MrtrFields<'_> =
        serde_json::from_str(result).map_err(|e| data_err(&e, "result is not an object"))?;
    let rt = f.result_type.and_then(raw_str);
    Ok(match rt.as_deref() {
        None | Some("complete") => ResultShape::Complete,
        Some("input_required") => {
            let input_requests = f
                .input_requests
                .map(RawValue::get)
                .filter(|r| r.starts_with('{'));
            let request_state = f
                .request_state
                .map(RawValue::get)
                .filter(|r| r.starts_with('"'));
            if input_requests.is_none() && request_state.is_none() {
                ResultShape::InvalidInputRequired
            } else {
                ResultShape::InputRequired {
                    input_requests,
                    request_state,
                }
            }
        }
        Some(_) => ResultShape::Other(rt.unwrap_or_default()),
    })
}

/// The MRTR fields of a retried request's `params` (spec §3.4): raw `inputResponses` (an object)
/// and raw `requestState` (a string literal, compared and forwarded byte for byte).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retry<'a> {
    /// Raw `inputResponses`.
    pub input_responses: Option<&'a str>,
    /// Raw `requestState`.
    pub request_state: Option<&'a str>,
}

impl Retry<'_> {
    /// Whether this request is an MRTR retry (carries either field).
    pub fn is_retry(&self) -> bool {
        self.input_responses.is_some() || self.request_state.is_some()
    }
}

/// Reads `inputResponses`/`requestState` from a request's raw `params`. Only `tools/call`,
/// `prompts/get` and `resources/read` may carry them (the caller checks the method).
///
/// # Errors
/// [`PeekError`] if `params` is not valid JSON.
pub fn peek_retry(params: &str) -> Result<Retry<'_>, PeekError> {
    if !params.trim_start().starts_with('{') {
        return Ok(Retry::default());
    }
    let f: MrtrFields<'_> =
        serde_json::from_str(params).map_err(|e| data_err(&e, "malformed params"))?;
    Ok(Retry {
        input_responses: f.input_responses.map(RawValue::get),
        request_state: f.request_state.map(RawValue::get),
    })
}

/// Whether `method` may return `input_required` (spec §3.4).
pub fn allows_input_required(method: &str) -> bool {
    matches!(
        method,
        method::TOOLS_CALL | method::PROMPTS_GET | method::RESOURCES_READ
    )
}

// ---------------------------------------------------------------------------------------------
// subscriptions/listen.

/// The `params.notifications` filter of `subscriptions/listen` (spec §3.4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenFilter {
    /// `notifications/tools/list_changed`.
    #[serde(default)]
    pub tools_list_changed: bool,
    /// `notifications/prompts/list_changed`.
    #[serde(default)]
    pub prompts_list_changed: bool,
    /// `notifications/resources/list_changed`.
    #[serde(default)]
    pub resources_list_changed: bool,
    /// `notifications/resources/updated` for exactly these URIs.
    #[serde(default)]
    pub resource_subscriptions: Vec<String>,
}

#[derive(Deserialize)]
struct ListenParams {
    #[serde(default)]
    notifications: Option<ListenFilter>,
}

impl ListenFilter {
    /// Parses the filter from `subscriptions/listen` raw `params` (absent filter = nothing).
    ///
    /// # Errors
    /// [`ModernError::InvalidMeta`]-style `-32602` is the caller's answer; here a
    /// [`PeekError::Invalid`] for a filter of the wrong shape.
    pub fn from_params(params: Option<&str>) -> Result<ListenFilter, PeekError> {
        let Some(p) = params.filter(|p| p.trim_start().starts_with('{')) else {
            return Ok(ListenFilter::default());
        };
        let lp: ListenParams =
            serde_json::from_str(p).map_err(|e| data_err(&e, "malformed notifications filter"))?;
        Ok(lp.notifications.unwrap_or_default())
    }

    /// Whether a notification (method, and `params.uri` for resource updates) passes the filter:
    /// the server must not send unrequested types (spec §3.4).
    pub fn allows(&self, notification_method: &str, uri: Option<&str>) -> bool {
        match notification_method {
            method::TOOLS_LIST_CHANGED => self.tools_list_changed,
            method::PROMPTS_LIST_CHANGED => self.prompts_list_changed,
            method::RESOURCES_LIST_CHANGED => self.resources_list_changed,
            method::RESOURCES_UPDATED => {
                uri.is_some_and(|u| self.resource_subscriptions.iter().any(|s| s == u))
            }
            _ => false,
        }
    }

    /// The subset of this filter that `supported` (what the hub can deliver) honours.
    pub fn honoured(&self, supported: &ListenFilter, any_uri: bool) -> ListenFilter {
        ListenFilter {
            tools_list_changed: self.tools_list_changed && supported.tools_list_changed,
            prompts_list_changed: self.prompts_list_changed && supported.prompts_list_changed,
            resources_list_changed: self.resources_list_changed && supported.resources_list_changed,
            resource_subscriptions: if any_uri {
                self.resource_subscriptions.clone()
            } else {
                self.resource_subscriptions
                    .iter()
                    .filter(|u| supported.resource_subscriptions.contains(u))
                    .cloned()
                    .collect()
            },
        }
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (key, on) in [
            ("toolsListChanged", self.tools_list_changed),
            ("promptsListChanged", self.prompts_list_changed),
            ("resourcesListChanged", self.resources_list_changed),
        ] {
            if on {
                if !first {
                    out.push(b',');
                }
                first = false;
                push_json_str(out, key);
                out.extend_from_slice(b":true");
            }
        }
        if !self.resource_subscriptions.is_empty() {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"resourceSubscriptions\":[");
            for (i, u) in self.resource_subscriptions.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_str(out, u);
            }
            out.push(b']');
        }
        out.push(b'}');
    }
}

/// The first message of a listen stream (spec §3.4): `notifications/subscriptions/acknowledged`
/// echoing the honoured filter, tagged with the listen request's id (`subscription_id` is its raw
/// JSON).
pub fn acknowledged(subscription_id: &str, honoured: &ListenFilter) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":");
    push_json_str(&mut out, METHOD_SUBSCRIPTIONS_ACKNOWLEDGED);
    out.extend_from_slice(b",\"params\":{\"notifications\":");
    honoured.write_json(&mut out);
    out.extend_from_slice(b",\"_meta\":{");
    push_json_str(&mut out, META_SUBSCRIPTION_ID);
    out.push(b':');
    out.extend_from_slice(subscription_id.as_bytes());
    out.extend_from_slice(b"}}}");
    out
}

#[derive(Deserialize)]
struct NotificationTop<'a> {
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

/// Tags a notification for a listen stream: sets
/// `params._meta["io.modelcontextprotocol/subscriptionId"]` to `subscription_id` (raw JSON),
/// creating `params` and `_meta` as needed and replacing an existing tag (an upstream's own
/// subscription id must not leak through). Other bytes are copied untouched.
///
/// # Errors
/// [`PeekError`] if the notification is not a JSON object.
pub fn tag_subscription(notification: &[u8], subscription_id: &str) -> Result<Vec<u8>, PeekError> {
    let top: NotificationTop<'_> = serde_json::from_slice(notification)
        .map_err(|e| data_err(&e, "notification is not an object"))?;
    let mut tag = Vec::with_capacity(64);
    tag.push(b'{');
    push_json_str(&mut tag, META_SUBSCRIPTION_ID);
    tag.push(b':');
    tag.extend_from_slice(subscription_id.as_bytes());
    tag.push(b'}');
    let tag = String::from_utf8(tag).map_err(|_| PeekError::Invalid("subscription id"))?;
    let Some(params) = top.params.filter(|p| p.get().starts_with('{')) else {
        // No params object: add one right after the opening brace.
        let open = notification
            .iter()
            .position(|b| *b == b'{')
            .ok_or(PeekError::Invalid("notification is not an object"))?;
        let mut out = Vec::with_capacity(notification.len() + tag.len() + 24);
        let raw = format!("{{\"_meta\":{tag}}}");
        insert_member(&mut out, notification, open, "params", &raw);
        return Ok(out);
    };
    let ps = span_of(notification, params);
    let pbytes = &notification[ps.clone()];
    match member_span(pbytes, "_meta")? {
        Some(ms) if pbytes[ms.start] == b'{' => {
            let meta_at = ps.start + ms.start;
            let meta = &notification[meta_at..ps.start + ms.end];
            match member_span(meta, META_SUBSCRIPTION_ID)? {
                Some(id) => {
                    let at = meta_at + id.start..meta_at + id.end;
                    let mut out = Vec::with_capacity(notification.len() + subscription_id.len());
                    out.extend_from_slice(&notification[..at.start]);
                    out.extend_from_slice(subscription_id.as_bytes());
                    out.extend_from_slice(&notification[at.end..]);
                    Ok(out)
                }
                None => {
                    let mut out = Vec::with_capacity(notification.len() + tag.len());
                    insert_member(
                        &mut out,
                        notification,
                        meta_at,
                        META_SUBSCRIPTION_ID,
                        subscription_id,
                    );
                    Ok(out)
                }
            }
        }
        Some(_) => Err(PeekError::Invalid("params._meta is not an object")),
        None => {
            let mut out = Vec::with_capacity(notification.len() + tag.len() + 10);
            insert_member(&mut out, notification, ps.start, "_meta", &tag);
            Ok(out)
        }
    }
}

/// The modern revisions the hub serves.
pub const MODERN_REVISIONS: [&str; 1] = [V2026_07_28];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).expect("test output is JSON")
    }

    #[test]
    fn era_table() {
        use EraVerdict::*;
        type Case = (
            Option<&'static str>,
            bool,
            Option<&'static str>,
            Option<&'static str>,
            EraVerdict,
        );
        let cases: &[Case] = &[
            (Some("initialize"), false, None, None, Legacy),
            (Some("initialize"), false, Some("2026-07-28"), None, Legacy),
            (Some("tools/list"), true, None, Some("2025-11-25"), Legacy),
            (Some("tools/list"), false, None, None, Legacy),
            (
                Some("tools/list"),
                false,
                Some("2026-07-28"),
                Some("2026-07-28"),
                Modern,
            ),
            (Some("tools/list"), false, None, Some("2026-07-28"), Modern),
            (Some("tools/list"), false, Some("v999.0.0"), None, Modern),
            (
                Some("tools/list"),
                false,
                Some("2025-06-18"),
                Some("2026-07-28"),
                Legacy,
            ),
            (
                Some("tools/list"),
                true,
                Some("2026-07-28"),
                None,
                ModernWithSession,
            ),
            (None, false, None, Some(" 2026-07-28 "), Modern),
        ];
        for (m, sid, mv, hv, want) in cases {
            assert_eq!(
                request_era(*m, *sid, *mv, *hv),
                *want,
                "{m:?} {sid} {mv:?} {hv:?}"
            );
        }
        assert_eq!(verdict_era(ModernWithSession), Era::Modern);
    }

    #[test]
    fn meta_peek_reads_only_the_envelope() {
        let params = r#"{"name":"t","arguments":{"_meta":{"progressToken":"inner"}},
            "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
            "io.modelcontextprotocol/clientCapabilities":{"sampling":{}},
            "io.modelcontextprotocol/clientInfo":{"name":"c","version":"1"},
            "io.modelcontextprotocol/logLevel":"info","progressToken":7,
            "traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","x":[1,2]}}"#;
        let m = peek_meta(params).expect("valid");
        assert!(m.present);
        assert_eq!(m.protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(m.client_capabilities, Some(r#"{"sampling":{}}"#));
        assert_eq!(m.client_info, Some(r#"{"name":"c","version":"1"}"#));
        assert_eq!(m.log_level.as_deref(), Some("info"));
        assert_eq!(m.progress_token, Some("7"));
        assert!(m
            .traceparent
            .as_deref()
            .is_some_and(|t| t.starts_with("00-")));
        assert_eq!(peek_meta("{}").expect("valid"), MetaPeek::default());
        assert_eq!(peek_meta("null").expect("valid"), MetaPeek::default());
        assert!(peek_meta(r#"{"_meta":{"#).is_err());
    }

    #[test]
    fn check_meta_table() {
        let ok = r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}"#;
        let cases: &[(&str, Option<i32>)] = &[
            (ok, None),
            ("{}", Some(-32602)),
            (
                r#"{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}}"#,
                Some(-32602),
            ),
            (
                r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#,
                Some(-32602),
            ),
            (
                r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":[]}}"#,
                Some(-32602),
            ),
            (
                r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":7,"io.modelcontextprotocol/clientCapabilities":{}}}"#,
                Some(-32602),
            ),
            (
                r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"v999.0.0","io.modelcontextprotocol/clientCapabilities":{}}}"#,
                Some(-32022),
            ),
        ];
        for (params, want) in cases {
            let m = peek_meta(params).expect("valid json");
            let got = check_meta(&m, &MODERN_REVISIONS).err().map(|e| e.code());
            assert_eq!(got, *want, "{params}");
            if let Err(e) = check_meta(&m, &MODERN_REVISIONS) {
                assert_eq!(e.http_status(), 400);
            }
        }
        let m = peek_meta(cases[6].0).expect("valid json");
        let e = check_meta(&m, &MODERN_REVISIONS).expect_err("unsupported");
        let body = parse(&e.render(Some("301")));
        assert_eq!(body["id"], json!(301));
        assert_eq!(body["error"]["code"], json!(-32022));
        assert_eq!(
            body["error"]["data"],
            json!({"supported":["2026-07-28"],"requested":"v999.0.0"})
        );
    }

    #[test]
    fn header_values_decode_and_encode() {
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("plain", Ok("plain")),
            ("  padded\t", Ok("padded")),
            ("with inner space", Ok("with inner space")),
            ("=?base64?w6lsw6h2ZQ==?=", Ok("élève")),
            ("=?base64?IGxlYWRpbmc=?=", Ok(" leading")),
            ("=?base64?not base64!?=", Err(())),
            ("=?base64?/w==?=", Err(())), // 0xff is not UTF-8
            ("=?BASE64?aGk=?=", Ok("=?BASE64?aGk=?=")), // markers are lowercase: literal
            ("caf\u{e9}", Err(())),
            ("ctl\u{1}", Err(())),
        ];
        for (v, want) in cases {
            let got = decode_header_value("Mcp-Name", v);
            match want {
                Ok(w) => assert_eq!(got.as_deref().ok(), Some(*w), "{v:?}"),
                Err(()) => assert!(got.is_err(), "{v:?} should be rejected"),
            }
        }
        for v in [
            "plain",
            "élève",
            " leading",
            "trailing ",
            "=?base64?aGk=?=",
            "",
            "a\nb",
        ] {
            let enc = encode_header_value(v);
            assert!(
                enc.bytes().all(|b| (0x21..=0x7e).contains(&b) || b == b' '),
                "{enc}"
            );
            assert_eq!(
                decode_header_value("h", &enc).as_deref().ok(),
                Some(v),
                "{v:?}"
            );
        }
        assert_eq!(encode_header_value("plain"), Cow::Borrowed("plain"));
    }

    fn facts<'a>(
        method: &'a str,
        name: Option<&'a str>,
        args: Vec<(&'a str, Option<&'a str>)>,
    ) -> BodyFacts<'a> {
        BodyFacts {
            method,
            name,
            meta_version: "2026-07-28",
            mirrored_args: args,
        }
    }

    #[test]
    fn header_check_table() {
        let base = || ModernHeaders {
            protocol_version: Some("2026-07-28"),
            method: Some("tools/call"),
            name: Some("test_custom_headers"),
            params: vec![
                ("Region", "us-west1"),
                ("priority", "007"),
                ("Verbose", "true"),
                ("Unknown", "x"),
            ],
        };
        let args = || {
            vec![
                ("Region", Some("\"us-west1\"")),
                ("Priority", Some("7")),
                ("Verbose", Some("true")),
            ]
        };
        let body = facts("tools/call", Some("test_custom_headers"), args());
        assert_eq!(check_headers(&base(), &body), Ok(()));

        type Edit = fn(&mut ModernHeaders<'static>);
        let bad: &[(&str, Edit)] = &[
            ("no version", |h| h.protocol_version = None),
            ("other version", |h| h.protocol_version = Some("2025-11-25")),
            ("no method", |h| h.method = None),
            ("method case", |h| h.method = Some("Tools/Call")),
            ("no name", |h| h.name = None),
            ("other name", |h| h.name = Some("other")),
            ("name bad chars", |h| h.name = Some("t\u{e9}st")),
            ("param missing", |h| {
                h.params.retain(|(k, _)| *k != "Region")
            }),
            ("param mismatch", |h| h.params[0] = ("Region", "eu")),
            ("int mismatch", |h| h.params[1] = ("priority", "8")),
            ("int not a number", |h| h.params[1] = ("priority", "seven")),
            ("bool mismatch", |h| h.params[2] = ("Verbose", "false")),
            ("bad base64", |h| h.params[0] = ("Region", "=?base64?***?=")),
        ];
        for (what, edit) in bad {
            let mut h = base();
            edit(&mut h);
            let err = check_headers(&h, &body).expect_err(what);
            let e = ModernError::from(err);
            assert_eq!((e.code(), e.http_status()), (-32020, 400), "{what}");
        }
        // base64-encoded value matching the body; whitespace around the method is fine.
        let mut h = base();
        h.params[0] = ("REGION", "=?base64?dXMtd2VzdDE=?=");
        h.method = Some(" tools/call ");
        assert_eq!(check_headers(&h, &body), Ok(()));
        // An absent/null argument must not have a header; non-mirrorable types are refused.
        let body2 = facts(
            "tools/call",
            Some("test_custom_headers"),
            vec![("Region", None)],
        );
        assert!(matches!(
            check_headers(&base(), &body2),
            Err(HeaderMismatch::Unexpected(_))
        ));
        let body3 = facts(
            "tools/call",
            Some("test_custom_headers"),
            vec![("Region", Some("1.5"))],
        );
        assert!(matches!(
            check_headers(&base(), &body3),
            Err(HeaderMismatch::UnsupportedType(_))
        ));
        let body4 = facts(
            "tools/call",
            Some("test_custom_headers"),
            vec![("Priority", Some("7.0"))],
        );
        let mut h4 = base();
        h4.params = vec![("Priority", "7")];
        assert_eq!(check_headers(&h4, &body4), Ok(()));
        // tools/list needs no Mcp-Name.
        let list = ModernHeaders {
            protocol_version: Some("2026-07-28"),
            method: Some("tools/list"),
            ..ModernHeaders::default()
        };
        assert_eq!(
            check_headers(&list, &facts("tools/list", None, vec![])),
            Ok(())
        );
        // resources/read mirrors the uri.
        let read = ModernHeaders {
            protocol_version: Some("2026-07-28"),
            method: Some("resources/read"),
            name: Some("test://static-text"),
            params: vec![],
        };
        assert_eq!(
            check_headers(
                &read,
                &facts("resources/read", Some("test://static-text"), vec![])
            ),
            Ok(())
        );
    }

    #[test]
    fn error_bodies() {
        let cases: Vec<(ModernError, i32, u16, Option<Value>)> = vec![
            (
                HeaderMismatch::Missing("Mcp-Method".into()).into(),
                -32020,
                400,
                None,
            ),
            (
                ModernError::MissingRequiredClientCapability {
                    required: r#"{"sampling":{}}"#.into(),
                },
                -32021,
                400,
                Some(json!({"requiredCapabilities":{"sampling":{}}})),
            ),
            (
                ModernError::UnsupportedProtocolVersion {
                    supported: vec!["2026-07-28".into()],
                    requested: "1".into(),
                },
                -32022,
                400,
                Some(json!({"supported":["2026-07-28"],"requested":"1"})),
            ),
            (method_not_found("ping"), -32601, 404, None),
            (
                ModernError::InvalidMeta("params._meta is required"),
                -32602,
                400,
                None,
            ),
        ];
        for (e, c, s, data) in cases {
            assert_eq!((e.code(), e.http_status()), (c, s), "{e}");
            let body = parse(&e.render(Some("\"req-1\"")));
            assert_eq!(body["id"], json!("req-1"));
            assert_eq!(body["error"]["code"], json!(c));
            assert!(body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
            assert_eq!(body["error"].get("data").cloned(), data, "{e}");
        }
        assert!(REMOVED_METHODS.contains(&"ping"));
    }

    #[test]
    fn result_type_insertion() {
        let cases: &[(&str, Value)] = &[
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#,
                json!({"resultType":"complete","tools":[]}),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{ }}"#,
                json!({"resultType":"complete"}),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","requestState":"s"}}"#,
                json!({"resultType":"input_required","requestState":"s"}),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"resultType":"x"}]}}"#,
                json!({"resultType":"complete","content":[{"resultType":"x"}]}),
            ),
        ];
        for (input, want) in cases {
            let out = ensure_result_type(input.as_bytes()).expect("valid");
            let v = parse(&out);
            assert_eq!(v["result"], *want, "{input}");
            assert_eq!(v["id"], json!(1));
        }
        let err = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"m"}}"#;
        assert!(matches!(
            ensure_result_type(err).expect("valid"),
            Cow::Borrowed(_)
        ));
        let already = br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete"}}"#;
        assert!(matches!(
            ensure_result_type(already).expect("valid"),
            Cow::Borrowed(_)
        ));
        assert!(ensure_result_type(b"[").is_err());
    }

    #[test]
    fn cache_hint_read_write_merge() {
        let h = |ttl, scope| Some(CacheHints { ttl_ms: ttl, scope });
        assert_eq!(
            cache_hints(br#"{"ttlMs":5,"cacheScope":"public"}"#).expect("ok"),
            h(5, CacheScope::Public)
        );
        assert_eq!(
            cache_hints(br#"{"ttlMs":-1,"cacheScope":"public"}"#).expect("ok"),
            None
        );
        assert_eq!(
            cache_hints(br#"{"ttlMs":5,"cacheScope":"shared"}"#).expect("ok"),
            None
        );
        assert_eq!(cache_hints(br#"{"tools":[]}"#).expect("ok"), None);

        let set = |body: &str| {
            let out = set_cache_hints(
                body.as_bytes(),
                CacheHints {
                    ttl_ms: 1500,
                    scope: CacheScope::Private,
                },
            )
            .expect("valid");
            parse(&out)
        };
        let v = set(r#"{"jsonrpc":"2.0","id":"a","result":{"tools":[{"name":"x","ttlMs":9}]}}"#);
        assert_eq!(
            v["result"],
            json!({"cacheScope":"private","ttlMs":1500,"tools":[{"name":"x","ttlMs":9}]})
        );
        let v = set(
            r#"{"jsonrpc":"2.0","id":"a","result":{"ttlMs":99999,"tools":[],"cacheScope":"public"}}"#,
        );
        assert_eq!(
            v["result"],
            json!({"ttlMs":1500,"tools":[],"cacheScope":"private"})
        );
        let v = set(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#);
        assert_eq!(v["result"], json!({"ttlMs":1500,"cacheScope":"private"}));

        let pub60 = h(60_000, CacheScope::Public);
        let cases: &[(Vec<Option<CacheHints>>, bool, CacheHints)] = &[
            (
                vec![pub60, h(5_000, CacheScope::Public)],
                false,
                CacheHints {
                    ttl_ms: 5_000,
                    scope: CacheScope::Public,
                },
            ),
            (
                vec![pub60, h(90_000, CacheScope::Private)],
                false,
                CacheHints {
                    ttl_ms: 60_000,
                    scope: CacheScope::Private,
                },
            ),
            (vec![pub60, None], false, CacheHints::SAFE_DEFAULT),
            (
                vec![pub60],
                true,
                CacheHints {
                    ttl_ms: 60_000,
                    scope: CacheScope::Private,
                },
            ),
            (vec![], false, CacheHints::SAFE_DEFAULT),
        ];
        for (parts, filtered, want) in cases {
            assert_eq!(
                merge_cache_hints(parts.iter().copied(), *filtered),
                *want,
                "{parts:?} {filtered}"
            );
        }
        assert!(is_cacheable_method("resources/read"));
        assert!(!is_cacheable_method("tools/call"));
    }

    #[test]
    fn resource_not_found_translation() {
        let legacy = br#"{"jsonrpc":"2.0","id":2,"error":{"code":-32002,"message":"Resource not found","data":{"uri":"test://x"}}}"#;
        let v = parse(
            &translate_resource_not_found(legacy)
                .expect("valid")
                .expect("translated"),
        );
        assert_eq!(
            v["error"],
            json!({"code":-32602,"message":"Resource not found","data":{"uri":"test://x"}})
        );
        let other = br#"{"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"m"}}"#;
        assert_eq!(translate_resource_not_found(other).expect("valid"), None);
        let result = br#"{"jsonrpc":"2.0","id":2,"result":{"code":-32002}}"#;
        assert_eq!(translate_resource_not_found(result).expect("valid"), None);
    }

    #[test]
    fn mrtr_shapes() {
        let cases: &[(&str, ResultShape<'static>)] = &[
            (r#"{"content":[]}"#, ResultShape::Complete),
            (
                r#"{"resultType":"complete","content":[]}"#,
                ResultShape::Complete,
            ),
            (
                r#"{"resultType":"input_required","inputRequests":{"k":{"method":"roots/list","params":{}}}}"#,
                ResultShape::InputRequired {
                    input_requests: Some(r#"{"k":{"method":"roots/list","params":{}}}"#),
                    request_state: None,
                },
            ),
            (
                r#"{"resultType":"input_required","requestState":"v1.abc"}"#,
                ResultShape::InputRequired {
                    input_requests: None,
                    request_state: Some("\"v1.abc\""),
                },
            ),
            (
                r#"{"resultType":"input_required"}"#,
                ResultShape::InvalidInputRequired,
            ),
            (
                r#"{"resultType":"task","task":{}}"#,
                ResultShape::Other(Cow::Borrowed("task")),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(peek_result_shape(input).expect("valid"), *want, "{input}");
        }
        let r = peek_retry(r#"{"name":"t","arguments":{},"inputResponses":{"k":{"roots":[]}},"requestState":"v1.\u0041"}"#).expect("valid");
        assert!(r.is_retry());
        assert_eq!(r.input_responses, Some(r#"{"k":{"roots":[]}}"#));
        assert_eq!(r.request_state, Some(r#""v1.\u0041""#)); // byte for byte, escapes kept
        assert!(!peek_retry(r#"{"name":"t"}"#).expect("valid").is_retry());
        assert!(allows_input_required("prompts/get"));
        assert!(!allows_input_required("tools/list"));
    }

    #[test]
    fn listen_filter_ack_and_tagging() {
        let f = ListenFilter::from_params(Some(
            r#"{"_meta":{},"notifications":{"toolsListChanged":true,"resourceSubscriptions":["a://1","a://2"]}}"#,
        ))
        .expect("valid");
        assert!(f.tools_list_changed && !f.prompts_list_changed);
        let cases: &[(&str, Option<&str>, bool)] = &[
            ("notifications/tools/list_changed", None, true),
            ("notifications/prompts/list_changed", None, false),
            ("notifications/resources/updated", Some("a://2"), true),
            ("notifications/resources/updated", Some("a://3"), false),
            ("notifications/message", None, false),
            ("notifications/progress", None, false),
        ];
        for (m, uri, want) in cases {
            assert_eq!(f.allows(m, *uri), *want, "{m} {uri:?}");
        }
        let supported = ListenFilter {
            tools_list_changed: true,
            resource_subscriptions: vec!["a://1".into()],
            ..ListenFilter::default()
        };
        let honoured = f.honoured(&supported, false);
        assert_eq!(honoured.resource_subscriptions, vec!["a://1".to_owned()]);
        let ack = parse(&acknowledged("\"L-9\"", &honoured));
        assert_eq!(
            ack,
            json!({"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged",
            "params":{"notifications":{"toolsListChanged":true,"resourceSubscriptions":["a://1"]},
                      "_meta":{"io.modelcontextprotocol/subscriptionId":"L-9"}}})
        );
        assert_eq!(
            ListenFilter::from_params(None).expect("ok"),
            ListenFilter::default()
        );
        assert!(
            ListenFilter::from_params(Some(r#"{"notifications":{"toolsListChanged":"yes"}}"#))
                .is_err()
        );

        let tag = |n: &str| parse(&tag_subscription(n.as_bytes(), "42").expect("valid"));
        let key = META_SUBSCRIPTION_ID;
        let v = tag(r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#);
        assert_eq!(v["params"]["_meta"][key], json!(42));
        let v = tag(
            r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"a://1"}}"#,
        );
        assert_eq!(v["params"], json!({"_meta":{key:42},"uri":"a://1"}));
        let v = tag(r#"{"jsonrpc":"2.0","method":"m","params":{"_meta":{"x":1}}}"#);
        assert_eq!(v["params"]["_meta"], json!({key:42,"x":1}));
        let v = tag(
            r#"{"jsonrpc":"2.0","method":"m","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":"upstream-7","x":1}}}"#,
        );
        assert_eq!(v["params"]["_meta"], json!({key:42,"x":1}));
        assert!(tag_subscription(b"{\"params\":{\"_meta\":3}}", "1").is_err());
    }
}
