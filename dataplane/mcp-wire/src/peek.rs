//! Zero-decode peek at a JSON-RPC message: the fields routing needs, borrowed from the raw bytes.
//!
//! The hub never decodes a whole request. `peek` validates that the bytes are JSON and a JSON-RPC
//! 2.0 message, then hands back the method, the id (as its raw JSON, string or number), and from
//! `params` only `name`, `uri`, `ref.name`/`ref.uri` (completion) and `_meta.progressToken`.
//! String fields come back as `Cow`: borrowed unless the JSON used escapes. Each routed name also
//! carries its byte span in the input, so the hub can splice in a rewritten name without
//! re-encoding the rest of the body.
//!
//! Errors map to JSON-RPC: [`PeekError::Parse`] is -32700, [`PeekError::Invalid`] is -32600.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::jsonrpc::code;

/// What kind of JSON-RPC message this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has `method` and `id`: needs an answer.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `id` and exactly one of `result`/`error`: an answer to a request the peer received.
    Response,
}

/// Why a body is not a usable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeekError {
    /// Not valid JSON (-32700).
    #[error("parse error: {0}")]
    Parse(String),
    /// Valid JSON but not a JSON-RPC 2.0 message (-32600).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
}

impl PeekError {
    /// The JSON-RPC error code for this failure.
    pub fn code(&self) -> i32 {
        match self {
            PeekError::Parse(_) => code::PARSE_ERROR,
            PeekError::Invalid(_) => code::INVALID_REQUEST,
        }
    }
}

/// A string field with the byte span of its JSON literal (quotes included) in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<'a> {
    /// The decoded value.
    pub value: Cow<'a, str>,
    /// Byte range of the JSON string literal, quotes included, within the peeked input.
    pub span: Range<usize>,
}

/// The routing-relevant fields of one JSON-RPC message.
#[derive(Debug, Clone)]
pub struct Peeked<'a> {
    /// Request, notification or response.
    pub kind: Kind,
    /// `method`, for requests and notifications.
    pub method: Option<Cow<'a, str>>,
    /// `id` as raw JSON (a string literal with quotes, or a number).
    pub id: Option<&'a str>,
    /// `params` as raw JSON, if present.
    pub params: Option<&'a str>,
    /// `params.name` (tools/call, prompts/get).
    pub name: Option<Spanned<'a>>,
    /// `params.uri` (resources/read, subscribe, unsubscribe, notifications/resources/updated).
    pub uri: Option<Cow<'a, str>>,
    /// `params.ref.name` (completion/complete on a prompt).
    pub ref_name: Option<Spanned<'a>>,
    /// `params.ref.uri` (completion/complete on a resource template).
    pub ref_uri: Option<Cow<'a, str>>,
    /// `params._meta.progressToken` as raw JSON.
    pub progress_token: Option<&'a str>,
    /// `params.requestId` as raw JSON (notifications/cancelled).
    pub request_id: Option<&'a str>,
}

/// Deserializes a present field as `Some(raw)` even when it is `null`, so `"id": null` is seen
/// (and rejected) instead of passing as an absent id.
fn present<'de, D>(d: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&'de RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    uri: Option<&'a RawValue>,
    #[serde(borrow, rename = "ref")]
    reference: Option<&'a RawValue>,
    #[serde(borrow, rename = "_meta")]
    meta: Option<&'a RawValue>,
    #[serde(borrow, rename = "requestId")]
    request_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Ref<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    uri: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow, rename = "progressToken")]
    progress_token: Option<&'a RawValue>,
}

fn first_byte(b: &[u8]) -> Option<u8> {
    b.iter()
        .copied()
        .find(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
}

fn classify(e: serde_json::Error, what: &'static str) -> PeekError {
    match e.classify() {
        serde_json::error::Category::Data => PeekError::Invalid(what),
        _ => PeekError::Parse(e.to_string()),
    }
}

/// Byte range of `raw` inside `input`. `raw` must have been borrowed from `input`.
fn span_in(input: &[u8], raw: &RawValue) -> Range<usize> {
    let start = (raw.get().as_ptr() as usize).saturating_sub(input.as_ptr() as usize);
    start..start + raw.get().len()
}

fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let s = raw.get();
    if !s.starts_with('"') {
        return None;
    }
    if !s.contains('\\') {
        return Some(Cow::Borrowed(&s[1..s.len() - 1]));
    }
    serde_json::from_str::<String>(s).ok().map(Cow::Owned)
}

fn spanned<'a>(input: &'a [u8], raw: &'a RawValue) -> Option<Spanned<'a>> {
    as_str(raw).map(|value| Spanned {
        value,
        span: span_in(input, raw),
    })
}

fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

/// Peeks one JSON-RPC message (an object). Arrays are rejected as invalid: use [`peek_batch`]
/// where the negotiated revision allows batches.
///
/// # Errors
/// [`PeekError::Parse`] for invalid JSON, [`PeekError::Invalid`] for JSON that is not a
/// JSON-RPC 2.0 request, notification or response.
pub fn peek(input: &[u8]) -> Result<Peeked<'_>, PeekError> {
    match first_byte(input) {
        Some(b'{') => {}
        Some(b'[') => {
            // Valid JSON array or not? Report syntax errors as such.
            serde_json::from_slice::<&RawValue>(input).map_err(|e| classify(e, "batch"))?;
            return Err(PeekError::Invalid("batch not allowed here"));
        }
        _ => {
            serde_json::from_slice::<&RawValue>(input).map_err(|e| classify(e, "not json"))?;
            return Err(PeekError::Invalid("message is not a JSON object"));
        }
    }
    let top: Top<'_> =
        serde_json::from_slice(input).map_err(|e| classify(e, "malformed message"))?;
    peek_top(input, top)
}

fn peek_top<'a>(input: &'a [u8], top: Top<'a>) -> Result<Peeked<'a>, PeekError> {
    if top.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(PeekError::Invalid("jsonrpc must be \"2.0\""));
    }
    let id = match top.id {
        None => None,
        Some(raw) => {
            let s = raw.get();
            let ok = s.starts_with('"')
                || s.starts_with('-')
                || s.as_bytes().first().is_some_and(u8::is_ascii_digit);
            if !ok {
                return Err(PeekError::Invalid("id must be a string or a number"));
            }
            Some(s)
        }
    };
    let method = match top.method {
        None => None,
        Some(raw) => Some(as_str(raw).ok_or(PeekError::Invalid("method must be a string"))?),
    };
    let kind = match (&method, id, top.result.is_some(), top.error.is_some()) {
        (Some(_), Some(_), false, false) => Kind::Request,
        (Some(_), None, false, false) => Kind::Notification,
        (None, Some(_), true, false) | (None, Some(_), false, true) => Kind::Response,
        _ => {
            return Err(PeekError::Invalid(
                "not a request, notification or response",
            ))
        }
    };
    let mut out = Peeked {
        kind,
        method,
        id,
        params: top.params.map(RawValue::get),
        name: None,
        uri: None,
        ref_name: None,
        ref_uri: None,
        progress_token: None,
        request_id: None,
    };
    if let Some(params) = top.params.filter(|p| is_object(p)) {
        let p: Params<'_> =
            serde_json::from_str(params.get()).map_err(|e| classify(e, "malformed params"))?;
        out.name = p.name.and_then(|r| spanned(input, r));
        out.uri = p.uri.and_then(as_str);
        out.request_id = p.request_id.map(RawValue::get);
        if let Some(r) = p.reference.filter(|r| is_object(r)) {
            let r: Ref<'_> =
                serde_json::from_str(r.get()).map_err(|e| classify(e, "malformed ref"))?;
            out.ref_name = r.name.and_then(|n| spanned(input, n));
            out.ref_uri = r.uri.and_then(as_str);
        }
        if let Some(m) = p.meta.filter(|m| is_object(m)) {
            let m: Meta<'_> =
                serde_json::from_str(m.get()).map_err(|e| classify(e, "malformed _meta"))?;
            out.progress_token = m.progress_token.map(RawValue::get);
        }
    }
    Ok(out)
}

/// Peeks a JSON-RPC batch (2025-03-26 only): every element must be a valid message.
///
/// # Errors
/// As [`peek`]; an empty array is invalid.
pub fn peek_batch(input: &[u8]) -> Result<Vec<Peeked<'_>>, PeekError> {
    let items: Vec<&RawValue> =
        serde_json::from_slice(input).map_err(|e| classify(e, "batch must be an array"))?;
    if items.is_empty() {
        return Err(PeekError::Invalid("empty batch"));
    }
    items
        .into_iter()
        .map(|raw| {
            if !is_object(raw) {
                return Err(PeekError::Invalid("batch element is not an object"));
            }
            let top: Top<'_> =
                serde_json::from_str(raw.get()).map_err(|e| classify(e, "malformed message"))?;
            peek_top(input, top)
        })
        .collect()
}

/// Whether the body's first non-blank byte opens an array (a batch).
pub fn is_batch(input: &[u8]) -> bool {
    first_byte(input) == Some(b'[')
}

/// Replaces the bytes at `span` in `input` with the JSON string literal of `value`.
pub fn splice_str(input: &[u8], span: Range<usize>, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + value.len());
    out.extend_from_slice(&input[..span.start]);
    crate::jsonrpc::push_json_str(&mut out, value);
    out.extend_from_slice(&input[span.end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fields() {
        let b = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a__echo","arguments":{"x":[1,2,{"name":"no"}]},"_meta":{"progressToken":"p1"}}}"#;
        let p = peek(b).unwrap();
        assert_eq!(p.kind, Kind::Request);
        assert_eq!(p.method.as_deref(), Some("tools/call"));
        assert_eq!(p.id, Some("7"));
        let name = p.name.unwrap();
        assert_eq!(name.value, "a__echo");
        assert_eq!(&b[name.span.clone()], b"\"a__echo\"");
        assert_eq!(p.progress_token, Some("\"p1\""));
        let out = splice_str(b, name.span, "echo");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["params"]["name"], "echo");
        assert_eq!(v["params"]["arguments"]["x"][2]["name"], "no");
    }

    #[test]
    fn escaped_strings_and_kinds() {
        let p = peek(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"r\"1"}}"#).unwrap();
        assert_eq!(p.kind, Kind::Notification);
        assert_eq!(p.request_id, Some("\"r\\\"1\""));
        let p = peek(br#"{"jsonrpc":"2.0","id":"x","result":{}}"#).unwrap();
        assert_eq!(p.kind, Kind::Response);
        assert_eq!(p.id, Some("\"x\""));
        let p =
            peek(br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a\/b"}}"#)
                .unwrap();
        assert_eq!(p.uri.as_deref(), Some("a/b"));
        let p = peek(br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"s__p"},"argument":{"name":"a","value":"b"}}}"#).unwrap();
        assert_eq!(p.ref_name.unwrap().value, "s__p");
    }

    #[test]
    fn errors_table() {
        let cases: &[(&[u8], i32)] = &[
            (b"{", code::PARSE_ERROR),
            (b"not json", code::PARSE_ERROR),
            (b"", code::PARSE_ERROR),
            (b"[1,", code::PARSE_ERROR),
            (b"42", code::INVALID_REQUEST),
            (b"[]", code::INVALID_REQUEST),
            (br#"{"id":1,"method":"x"}"#, code::INVALID_REQUEST),
            (
                br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":true,"method":"x"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":5}"#,
                code::INVALID_REQUEST,
            ),
            (br#"{"jsonrpc":"2.0","id":1}"#, code::INVALID_REQUEST),
            (
                br#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"x","method":"y"}"#,
                code::INVALID_REQUEST,
            ),
        ];
        for (input, want) in cases {
            let got = peek(input).map(|_| ()).unwrap_err().code();
            assert_eq!(got, *want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn batch() {
        let b = br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
        assert!(is_batch(b));
        let items = peek_batch(b).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].kind, Kind::Notification);
        assert!(peek_batch(b"[1]").is_err());
        assert!(peek(b).is_err());
    }
}
