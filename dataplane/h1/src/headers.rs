//! Header list and request method types shared by the server and client codecs.
//!
//! [`Headers`] keeps fields in arrival order. Parsed values are `Bytes` slices of the frozen
//! head buffer, so building the list copies no header bytes; names are compared
//! ASCII-case-insensitively. [`Method`] classifies the request method without allocating.

use bytes::Bytes;

/// Header list in arrival order; names compared case-insensitively.
///
/// Cheap: values are `Bytes` slices of the head buffer. Names are kept as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(Bytes, Bytes)>,
}

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
        }
    }

    /// Value of the first field named `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_ref())
    }

    /// Value of the first field named `name`, if it is valid UTF-8, with surrounding
    /// whitespace trimmed.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// Values of every field named `name`, in arrival order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_ref())
    }

    /// Every field as `(name as sent, value)`, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        // Names are HTTP tokens (checked by the parser) or came from a `&str` in `push`,
        // so the UTF-8 check cannot fail; the fallback only keeps this panic-free.
        self.entries
            .iter()
            .map(|(n, v)| (std::str::from_utf8(n).unwrap_or(""), v.as_ref()))
    }

    /// Number of fields (repeated names count once per field).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Append a field (for building a list by hand).
    pub fn push(&mut self, name: &str, value: Bytes) {
        self.entries
            .push((Bytes::copy_from_slice(name.as_bytes()), value));
    }

    /// Append a field whose name is already a `Bytes` slice (used by the parsers, which
    /// have validated the name as a token).
    pub(crate) fn push_raw(&mut self, name: Bytes, value: Bytes) {
        self.entries.push((name, value));
    }

    /// True if any comma-separated token of any field named `name` equals `token`
    /// (ASCII case-insensitive), e.g. `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| trim_ascii(t).eq_ignore_ascii_case(token.as_bytes()))
        })
    }
}

/// Trim ASCII spaces and tabs from both ends.
pub(crate) fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Request method. `Other` covers every method not listed; the raw bytes stay in
/// [`crate::RequestHead::method_raw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `DELETE`
    Delete,
    /// `HEAD`
    Head,
    /// `OPTIONS`
    Options,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// Any other token (methods are case-sensitive, so `get` is `Other`).
    Other,
}

impl Method {
    /// Classify a method token (case-sensitive, as RFC 9110 requires).
    pub fn from_bytes(raw: &[u8]) -> Self {
        match raw {
            b"GET" => Self::Get,
            b"POST" => Self::Post,
            b"DELETE" => Self::Delete,
            b"HEAD" => Self::Head,
            b"OPTIONS" => Self::Options,
            b"PUT" => Self::Put,
            b"PATCH" => Self::Patch,
            _ => Self::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_ordered() {
        let mut h = Headers::new();
        h.push("Content-Type", Bytes::from_static(b"application/json"));
        h.push("X-A", Bytes::from_static(b" one "));
        h.push("x-a", Bytes::from_static(b"two"));
        assert_eq!(h.len(), 3);
        assert!(!h.is_empty());
        assert_eq!(h.get("content-type"), Some(&b"application/json"[..]));
        assert_eq!(h.get_str("X-a"), Some("one"));
        assert_eq!(
            h.get_all("x-A").collect::<Vec<_>>(),
            vec![&b" one "[..], &b"two"[..]]
        );
        assert_eq!(h.get("missing"), None);
        let names: Vec<&str> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Content-Type", "X-A", "x-a"]);
    }

    #[test]
    fn tokens() {
        let mut h = Headers::new();
        h.push("Connection", Bytes::from_static(b"Keep-Alive , Upgrade"));
        h.push("connection", Bytes::from_static(b"close"));
        assert!(h.has_token("connection", "keep-alive"));
        assert!(h.has_token("CONNECTION", "upgrade"));
        assert!(h.has_token("connection", "close"));
        assert!(!h.has_token("connection", "clos"));
    }

    #[test]
    fn methods() {
        assert_eq!(Method::from_bytes(b"GET"), Method::Get);
        assert_eq!(Method::from_bytes(b"PATCH"), Method::Patch);
        assert_eq!(Method::from_bytes(b"get"), Method::Other);
        assert_eq!(Method::from_bytes(b"BREW"), Method::Other);
    }
}
