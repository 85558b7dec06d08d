//! Serialisation helpers for message heads: status lines with reason phrases, header
//! lines and chunk-size prefixes, all appended into a reused `Vec<u8>` without `format!`.

/// Reason phrase for `status`; unknown codes get a phrase for their class.
pub fn reason_phrase(status: u16) -> &'static str {
    known_phrase(status).unwrap_or(match status {
        100..=199 => "Informational",
        200..=299 => "Success",
        300..=399 => "Redirection",
        400..=499 => "Client Error",
        _ => "Server Error",
    })
}

fn known_phrase(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => return None,
    })
}

/// Append `HTTP/1.1 <status> <reason>\r\n`.
pub(crate) fn put_status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Append one `name: value\r\n` line.
pub(crate) fn put_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Append every header of `headers`.
pub(crate) fn put_headers(out: &mut Vec<u8>, headers: &[(&str, &[u8])]) {
    for (name, value) in headers {
        put_header(out, name, value);
    }
}

/// Append `Content-Length: n\r\n`.
pub(crate) fn put_content_length(out: &mut Vec<u8>, n: usize) {
    put_header(
        out,
        "Content-Length",
        itoa::Buffer::new().format(n).as_bytes(),
    );
}

/// Append `n` in lower-case hex (no leading zeros) followed by `\r\n`.
pub(crate) fn put_chunk_size(out: &mut Vec<u8>, n: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = HEX[v & 0xf];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Parse a Content-Length value: ASCII digits only, no sign, no overflow.
pub(crate) fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = crate::headers::trim_ascii(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let mut out = Vec::new();
        put_status_line(&mut out, 200);
        put_status_line(&mut out, 431);
        put_status_line(&mut out, 599);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nHTTP/1.1 431 Request Header Fields Too Large\r\nHTTP/1.1 599 Server Error\r\n"
        );
        for code in [
            200, 202, 204, 400, 401, 403, 404, 405, 406, 408, 413, 415, 417, 429, 431,
        ] {
            assert!(
                !reason_phrase(code).ends_with("Error") || code == 500,
                "{code}"
            );
        }
    }

    #[test]
    fn chunk_sizes() {
        for (n, s) in [
            (0usize, "0"),
            (1, "1"),
            (15, "f"),
            (16, "10"),
            (4096, "1000"),
        ] {
            let mut out = Vec::new();
            put_chunk_size(&mut out, n);
            assert_eq!(out, format!("{s}\r\n").as_bytes());
        }
        let mut out = Vec::new();
        put_chunk_size(&mut out, usize::MAX);
        assert_eq!(out, b"ffffffffffffffff\r\n");
    }

    #[test]
    fn content_length() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        assert_eq!(parse_content_length(b"+1"), None);
        assert_eq!(parse_content_length(b"-1"), None);
        assert_eq!(parse_content_length(b"1 2"), None);
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
    }
}
