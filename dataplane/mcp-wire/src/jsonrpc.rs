//! JSON-RPC 2.0 error codes (reference/mcp-wire.md §9) and the renderer for error objects.
//!
//! Errors are rendered here once, by hand, into a byte buffer: the request id is copied as the
//! raw JSON it was sent as (string or number), so the reply is valid JSON-RPC whatever its type.

/// Standard and MCP error codes.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i32 = -32700;
    /// Not a JSON-RPC request object; batch where not allowed.
    pub const INVALID_REQUEST: i32 = -32600;
    /// Unknown method or capability not offered.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// Unknown tool, bad cursor, bad arguments.
    pub const INVALID_PARAMS: i32 = -32602;
    /// Server failure (the hub uses it for upstream failures, naming the upstream).
    pub const INTERNAL_ERROR: i32 = -32603;
    /// Resource not found (legacy revisions).
    pub const RESOURCE_NOT_FOUND: i32 = -32002;
    /// Modern era: header/body mismatch.
    pub const HEADER_MISMATCH: i32 = -32020;
    /// Modern era: a required client capability is missing.
    pub const MISSING_REQUIRED_CLIENT_CAPABILITY: i32 = -32021;
    /// Modern era: unsupported protocol version.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i32 = -32022;
}

/// Appends `s` to `out` as a JSON string literal (quotes included).
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for ch in s.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Renders `{"jsonrpc":"2.0","id":<id>,"error":{"code":..,"message":..,"data":..}}`.
///
/// `id` is the raw JSON of the request id; `None` renders `"id":null` (parse errors, where the id
/// could not be read). `data` is raw JSON, inserted as is.
pub fn error_object(id: Option<&str>, code: i32, message: &str, data: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + message.len() + data.map_or(0, str::len));
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.unwrap_or("null").as_bytes());
    out.extend_from_slice(b",\"error\":{\"code\":");
    out.extend_from_slice(code.to_string().as_bytes());
    out.extend_from_slice(b",\"message\":");
    push_json_str(&mut out, message);
    if let Some(d) = data {
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(d.as_bytes());
    }
    out.extend_from_slice(b"}}");
    out
}

/// Renders `{"jsonrpc":"2.0","id":<id>,"result":<result>}` from raw JSON parts.
pub fn result_object(id: &str, result: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + id.len() + result.len());
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b",\"result\":");
    out.extend_from_slice(result);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_object_is_valid_json_with_raw_id() {
        let b = error_object(
            Some("\"a\\\"b\""),
            code::INVALID_PARAMS,
            "unknown tool: x\"y",
            None,
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["id"], "a\"b");
        assert_eq!(v["error"]["code"], -32602);
        assert_eq!(v["error"]["message"], "unknown tool: x\"y");
        let b = error_object(None, code::PARSE_ERROR, "bad\n\u{1}", Some("{\"k\":1}"));
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert!(v["id"].is_null());
        assert_eq!(v["error"]["data"]["k"], 1);
        assert_eq!(v["error"]["message"], "bad\n\u{1}");
    }

    #[test]
    fn result_object_wraps_raw_result() {
        let b = result_object("7", b"{}");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["id"], 7);
        assert!(v["result"].as_object().unwrap().is_empty());
    }
}
