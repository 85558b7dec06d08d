//! Federation: how many upstreams' lists become one, and how an exposed name or URI finds its
//! upstream again. Used by the `route` stage of the request path.
//!
//! - Exposed tool and prompt names are `<upstream><separator><name>` (or the bare name when the
//!   separator is `none`). Each upstream's items are kept as their original raw JSON; only the
//!   `name` string is spliced when a page is rendered, so schemas pass through byte for byte.
//! - Merged lists are paginated with the hub's own opaque cursors (`offset` into the merged
//!   list, base64url-wrapped); an unreadable cursor is `-32602`.
//! - A name exposed twice (possible only with the `none` separator) is never a silent shadow:
//!   the first upstream in config order keeps it, the other is hidden and logged as an error.
//! - A tool's annotations in the cached list say whether a call may be retried on another replica
//!   after its replica was lost ([`UpstreamList::retry_safe`]).
//! - Pure functions over lists; where the lists are kept and refreshed is [`crate::catalog`].
//! - Resource URIs pass through unchanged; `uri → upstream` comes from the resource lists and
//!   from RFC 6570 templates (simple `{var}` expressions).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The four mergeable lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// `tools/list` → `tools`.
    Tools,
    /// `prompts/list` → `prompts`.
    Prompts,
    /// `resources/list` → `resources`.
    Resources,
    /// `resources/templates/list` → `resourceTemplates`.
    Templates,
}

impl ListKind {
    /// All kinds, in a fixed order (also the index into per-kind tables).
    pub const ALL: [ListKind; 4] = [
        ListKind::Tools,
        ListKind::Prompts,
        ListKind::Resources,
        ListKind::Templates,
    ];

    /// The list method.
    pub fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::Templates => "resources/templates/list",
        }
    }

    /// The kind listed by a method.
    pub fn from_method(m: &str) -> Option<ListKind> {
        ListKind::ALL.into_iter().find(|k| k.method() == m)
    }

    /// The result field that holds the items.
    pub fn field(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }

    /// The server capability that offers this list.
    pub fn capability(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources | ListKind::Templates => "resources",
        }
    }

    /// Whether items carry a `name` the hub prefixes.
    pub fn is_named(self) -> bool {
        matches!(self, ListKind::Tools | ListKind::Prompts)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The kinds a `list_changed` notification method invalidates.
    pub fn from_changed(method: &str) -> &'static [ListKind] {
        match method {
            "notifications/tools/list_changed" => &[ListKind::Tools],
            "notifications/prompts/list_changed" => &[ListKind::Prompts],
            "notifications/resources/list_changed" => &[ListKind::Resources, ListKind::Templates],
            _ => &[],
        }
    }
}

/// One item of an upstream list: its raw JSON and its key (name, uri or uriTemplate).
#[derive(Debug)]
pub struct Item {
    /// The item exactly as the upstream sent it.
    pub raw: Box<RawValue>,
    /// `name` for tools/prompts, `uri` for resources, `uriTemplate` for templates (interned).
    pub key: Arc<str>,
    /// Byte span of the `name` string literal in `raw` (tools/prompts).
    pub name_span: Option<std::ops::Range<usize>>,
}

/// An upstream's complete list of one kind, all pages fetched.
#[derive(Debug, Default)]
pub struct UpstreamList {
    /// Items in upstream order.
    pub items: Vec<Item>,
    /// Tools that may safely run twice (annotated `readOnlyHint: true` or
    /// `idempotentHint: true`), by original name; read once, when the list is fetched.
    retry_safe: std::collections::HashSet<Arc<str>>,
    /// The upstream's caching hints for this list (2026-07-28 upstreams; `None` for legacy).
    pub hints: Option<mcp_wire::modern::CacheHints>,
    /// Each tool's `inputSchema`, parsed once when first needed (argument validation).
    schemas: std::sync::OnceLock<HashMap<Arc<str>, Arc<serde_json::Value>>>,
}

impl UpstreamList {
    /// The list of these items (`kind` says whether tool annotations are read).
    pub fn new(kind: ListKind, items: Vec<Item>) -> Self {
        let retry_safe = if kind == ListKind::Tools {
            items
                .iter()
                .filter(|i| annotated_retry_safe(i.raw.get()))
                .map(|i| i.key.clone())
                .collect()
        } else {
            Default::default()
        };
        Self {
            items,
            retry_safe,
            hints: None,
            schemas: std::sync::OnceLock::new(),
        }
    }

    /// For a tools list: the `inputSchema` of tool `name` (its original name).
    pub fn input_schema(&self, name: &str) -> Option<Arc<serde_json::Value>> {
        #[derive(Deserialize)]
        struct Tool {
            #[serde(rename = "inputSchema")]
            input_schema: Option<serde_json::Value>,
        }
        let all = self.schemas.get_or_init(|| {
            self.items
                .iter()
                .filter_map(|i| {
                    let t: Tool = serde_json::from_str(i.raw.get()).ok()?;
                    Some((i.key.clone(), Arc::new(t.input_schema?)))
                })
                .collect()
        });
        all.get(name).cloned()
    }

    /// For a tools list: whether the tool `name` (its original name) declares
    /// `annotations.readOnlyHint: true` or `annotations.idempotentHint: true`, i.e. a call may
    /// safely run twice. `false` for an unlisted tool or unreadable annotations.
    pub fn retry_safe(&self, name: &str) -> bool {
        self.retry_safe.contains(name)
    }
}

/// Whether a tool's JSON declares `readOnlyHint: true` or `idempotentHint: true`.
fn annotated_retry_safe(tool: &str) -> bool {
    #[derive(Deserialize)]
    struct Tool {
        #[serde(default)]
        annotations: Option<Hints>,
    }
    #[derive(Deserialize)]
    struct Hints {
        #[serde(rename = "readOnlyHint", default)]
        read_only: Option<bool>,
        #[serde(rename = "idempotentHint", default)]
        idempotent: Option<bool>,
    }
    serde_json::from_str::<Tool>(tool)
        .ok()
        .and_then(|t| t.annotations)
        .is_some_and(|h| h.read_only == Some(true) || h.idempotent == Some(true))
}

/// One merged, exposed list: rendered items in order, plus the exposed-name index.
#[derive(Debug, Default)]
pub struct Merged {
    /// Rendered items (names rewritten).
    pub items: Vec<Bytes>,
    /// Exposed key → (upstream, original key).
    pub index: HashMap<Arc<str>, (usize, Arc<str>)>,
    /// Which upstreams contributed (health mask this was built for).
    pub mask: u64,
    /// The upstream lists it was built from (by upstream index; `None` = skipped), so a cache
    /// can tell whether it is still current.
    pub parts: Vec<Option<Arc<UpstreamList>>>,
    /// The caching hints of the merged list for a 2026-07-28 client: the minimum TTL of its
    /// parts, `private` if any part is (a legacy part counts as `ttlMs: 0`, private).
    pub hints: Option<mcp_wire::modern::CacheHints>,
}

#[derive(Deserialize)]
struct ItemFields<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    uri: Option<&'a RawValue>,
    #[serde(borrow, rename = "uriTemplate")]
    uri_template: Option<&'a RawValue>,
}

/// Why an upstream's list page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The response was not a JSON-RPC result with the expected array.
    #[error("malformed {0} response: {1}")]
    Malformed(&'static str, String),
    /// The upstream answered with a JSON-RPC error.
    #[error("upstream error: {0}")]
    Upstream(String),
}

/// Parses one page of a list response: the items and the upstream's `nextCursor`.
///
/// # Errors
/// [`ListError`] when the response is not a result with the expected array.
pub fn parse_page(
    kind: ListKind,
    response: &[u8],
) -> Result<(Vec<Item>, Option<String>), ListError> {
    #[derive(Deserialize)]
    struct Resp<'a> {
        #[serde(borrow)]
        result: Option<&'a RawValue>,
        #[serde(borrow)]
        error: Option<&'a RawValue>,
    }
    let r: Resp<'_> = serde_json::from_slice(response)
        .map_err(|e| ListError::Malformed(kind.method(), e.to_string()))?;
    if let Some(e) = r.error {
        return Err(ListError::Upstream(e.get().to_string()));
    }
    let result = r
        .result
        .ok_or_else(|| ListError::Malformed(kind.method(), "no result".into()))?;
    let fields: HashMap<Cow<'_, str>, &RawValue> = serde_json::from_str(result.get())
        .map_err(|e| ListError::Malformed(kind.method(), e.to_string()))?;
    let items: Vec<&RawValue> = match fields.get(kind.field()) {
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|e| ListError::Malformed(kind.method(), e.to_string()))?,
        None => Vec::new(),
    };
    let next = match fields.get("nextCursor") {
        Some(raw) if raw.get() != "null" => Some(
            serde_json::from_str::<String>(raw.get())
                .map_err(|e| ListError::Malformed(kind.method(), e.to_string()))?,
        ),
        _ => None,
    };
    let mut out = Vec::with_capacity(items.len());
    for raw in items {
        let f: ItemFields<'_> = serde_json::from_str(raw.get())
            .map_err(|e| ListError::Malformed(kind.method(), e.to_string()))?;
        let key_raw = match kind {
            ListKind::Tools | ListKind::Prompts => f.name,
            ListKind::Resources => f.uri,
            ListKind::Templates => f.uri_template,
        };
        let Some(key_raw) = key_raw else {
            return Err(ListError::Malformed(
                kind.method(),
                "item without its key field".into(),
            ));
        };
        let key: String = serde_json::from_str(key_raw.get())
            .map_err(|e| ListError::Malformed(kind.method(), e.to_string()))?;
        let key: Arc<str> = Arc::from(key);
        let name_span = kind.is_named().then(|| {
            let start =
                (key_raw.get().as_ptr() as usize).saturating_sub(raw.get().as_ptr() as usize);
            start..start + key_raw.get().len()
        });
        let owned = RawValue::from_string(raw.get().to_string())
            .map_err(|e| ListError::Malformed(kind.method(), e.to_string()))?;
        out.push(Item {
            raw: owned,
            key,
            name_span,
        });
    }
    Ok((out, next))
}

/// How exposed names are built and taken apart.
#[derive(Debug, Clone)]
pub struct Naming {
    /// Separator; `None` = unprefixed.
    pub separator: Option<Arc<str>>,
    /// Upstream names by index (an unbound edge slot reads as `""` and matches nothing).
    pub upstreams: Vec<crate::config::UpstreamName>,
}

impl Naming {
    /// The exposed name of `name` from upstream `u`.
    pub fn expose(&self, u: usize, name: &str) -> String {
        match &self.separator {
            Some(sep) => format!("{}{}{}", self.upstreams[u], sep, name),
            None => name.to_string(),
        }
    }

    /// Splits an exposed name into (upstream, original name) when names are prefixed.
    /// `None` when unprefixed (the caller looks the name up in the merged index instead) or
    /// when no upstream has that prefix.
    pub fn split<'a>(&self, exposed: &'a str) -> Option<(usize, &'a str)> {
        let sep = self.separator.as_deref()?;
        let (prefix, rest) = exposed.split_once(sep)?;
        if prefix.is_empty() {
            return None;
        }
        let u = self.upstreams.iter().position(|n| &**n == prefix)?;
        Some((u, rest))
    }
}

/// Builds the merged list of one kind from the upstream lists (`None` = upstream skipped).
pub fn merge(
    kind: ListKind,
    naming: &Naming,
    lists: &[Option<Arc<UpstreamList>>],
    mask: u64,
) -> Merged {
    merge_visible(kind, naming, lists, mask, &|_, _| true)
}

/// As [`merge`], keeping only the items `visible(upstream, original key)` allows (the policy's
/// view of one principal).
pub fn merge_visible(
    kind: ListKind,
    naming: &Naming,
    lists: &[Option<Arc<UpstreamList>>],
    mask: u64,
    visible: &dyn Fn(usize, &str) -> bool,
) -> Merged {
    let mut m = Merged {
        mask,
        parts: lists.to_vec(),
        hints: Some(mcp_wire::modern::merge_cache_hints(
            lists.iter().flatten().map(|l| l.hints),
            false,
        )),
        ..Merged::default()
    };
    for (u, list) in lists.iter().enumerate() {
        let Some(list) = list else { continue };
        for item in list.items.iter().filter(|i| visible(u, &i.key)) {
            let exposed: Arc<str> = if kind.is_named() && naming.separator.is_some() {
                Arc::from(naming.expose(u, &item.key))
            } else {
                item.key.clone()
            };
            if kind.is_named() && !crate::config::snapshot::is_mcp_name(&exposed) {
                tracing::error!(upstream = %naming.upstreams[u], name = %item.key, exposed = %exposed, "exposed name is not a valid MCP name (1-128 of [A-Za-z0-9_.-]); hidden");
                continue;
            }
            if let Some((first, _)) = m.index.get(&*exposed) {
                tracing::error!(kind = kind.field(), name = %exposed, kept = %naming.upstreams[*first], hidden = %naming.upstreams[u], "name collision between upstreams: the later one is hidden; set a separator to expose both");
                continue;
            }
            let rendered = match (&item.name_span, naming.separator.is_some()) {
                (Some(span), true) => Bytes::from(mcp_wire::peek::splice_str(
                    item.raw.get().as_bytes(),
                    span.clone(),
                    &exposed,
                )),
                _ => Bytes::copy_from_slice(item.raw.get().as_bytes()),
            };
            m.index.insert(exposed, (u, item.key.clone()));
            m.items.push(rendered);
        }
    }
    m
}

/// Renders one page of a merged list as a JSON-RPC result object.
pub fn render_page(kind: ListKind, m: &Merged, offset: usize, page: usize) -> Vec<u8> {
    let end = (offset + page).min(m.items.len());
    let slice = m.items.get(offset..end).unwrap_or(&[]);
    let mut out =
        Vec::with_capacity(32 + slice.iter().map(Bytes::len).sum::<usize>() + slice.len());
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(kind.field().as_bytes());
    out.extend_from_slice(b"\":[");
    for (i, item) in slice.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    if end < m.items.len() {
        out.extend_from_slice(b",\"nextCursor\":\"");
        out.extend_from_slice(encode_cursor(kind, end).as_bytes());
        out.push(b'"');
    }
    out.push(b'}');
    out
}

const CURSOR_TAG: &str = "mgc1";

/// The hub's opaque cursor for `offset` into a merged list.
pub fn encode_cursor(kind: ListKind, offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{CURSOR_TAG}:{}:{offset}", kind.index()))
}

/// Reads a cursor minted by [`encode_cursor`] for this kind.
pub fn decode_cursor(kind: ListKind, cursor: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let s = std::str::from_utf8(&raw).ok()?;
    let mut it = s.split(':');
    if it.next()? != CURSOR_TAG || it.next()?.parse::<usize>().ok()? != kind.index() {
        return None;
    }
    let off = it.next()?.parse().ok()?;
    it.next().is_none().then_some(off)
}

/// Whether `uri` matches an RFC 6570 template made of literals and simple `{var}` expressions
/// (a `{var}` matches one or more characters other than `/`; `{+var}` also matches `/`).
pub fn template_matches(template: &str, uri: &str) -> bool {
    fn go(t: &[u8], u: &[u8]) -> bool {
        match t.first() {
            None => u.is_empty(),
            Some(b'{') => {
                let Some(close) = t.iter().position(|&c| c == b'}') else {
                    return false;
                };
                let reserved = t.get(1) == Some(&b'+');
                let rest = &t[close + 1..];
                (1..=u.len()).any(|n| (reserved || !u[..n].contains(&b'/')) && go(rest, &u[n..]))
            }
            Some(&c) => u.first() == Some(&c) && go(&t[1..], &u[1..]),
        }
    }
    go(template.as_bytes(), uri.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming(sep: Option<&str>) -> Naming {
        Naming {
            separator: sep.map(Arc::from),
            upstreams: vec![
                crate::config::UpstreamName::fixed("a"),
                crate::config::UpstreamName::fixed("b"),
            ],
        }
    }

    fn list(kind: ListKind, json: &str) -> Arc<UpstreamList> {
        let resp = format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{json}}}");
        Arc::new(UpstreamList::new(
            kind,
            parse_page(kind, resp.as_bytes()).unwrap().0,
        ))
    }

    #[test]
    fn merge_prefixes_and_keeps_schema_bytes() {
        let a = list(
            ListKind::Tools,
            r#"{"tools":[{"name":"echo","inputSchema":{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false}}]}"#,
        );
        let b = list(
            ListKind::Tools,
            r#"{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"add","inputSchema":{"type":"object"}}]}"#,
        );
        let m = merge(ListKind::Tools, &naming(Some("__")), &[Some(a), Some(b)], 3);
        assert_eq!(m.items.len(), 3);
        let first: serde_json::Value = serde_json::from_slice(&m.items[0]).unwrap();
        assert_eq!(first["name"], "a__echo");
        assert!(std::str::from_utf8(&m.items[0]).unwrap().contains(r#""$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false"#));
        assert_eq!(m.index["b__add"], (1, Arc::from("add")));
    }

    #[test]
    fn unprefixed_collision_hides_the_later_one() {
        let a = list(
            ListKind::Tools,
            r#"{"tools":[{"name":"echo","inputSchema":{}}]}"#,
        );
        let b = list(
            ListKind::Tools,
            r#"{"tools":[{"name":"echo","inputSchema":{}},{"name":"add","inputSchema":{}}]}"#,
        );
        let m = merge(ListKind::Tools, &naming(None), &[Some(a), Some(b)], 3);
        assert_eq!(m.items.len(), 2);
        assert_eq!(m.index["echo"].0, 0);
        assert_eq!(m.index["add"].0, 1);
    }

    #[test]
    fn pages_and_cursors() {
        let a = list(
            ListKind::Prompts,
            r#"{"prompts":[{"name":"p1"},{"name":"p2"},{"name":"p3"}]}"#,
        );
        let m = merge(ListKind::Prompts, &naming(Some("__")), &[Some(a), None], 1);
        let p1: serde_json::Value =
            serde_json::from_slice(&render_page(ListKind::Prompts, &m, 0, 2)).unwrap();
        assert_eq!(p1["prompts"].as_array().unwrap().len(), 2);
        let cur = p1["nextCursor"].as_str().unwrap();
        let off = decode_cursor(ListKind::Prompts, cur).unwrap();
        let p2: serde_json::Value =
            serde_json::from_slice(&render_page(ListKind::Prompts, &m, off, 2)).unwrap();
        assert_eq!(p2["prompts"][0]["name"], "a__p3");
        assert!(p2.get("nextCursor").is_none());
        assert!(decode_cursor(ListKind::Tools, cur).is_none());
        assert!(decode_cursor(ListKind::Prompts, "garbage!").is_none());
    }

    #[test]
    fn split_names() {
        let n = naming(Some("__"));
        assert_eq!(n.split("a__echo"), Some((0, "echo")));
        assert_eq!(n.split("b__x__y"), Some((1, "x__y")));
        assert_eq!(n.split("c__echo"), None);
        assert_eq!(n.split("echo"), None);
    }

    #[test]
    fn templates() {
        assert!(template_matches(
            "test://template/{id}/data",
            "test://template/42/data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template/4/2/data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template//data"
        ));
        assert!(template_matches("file:///{+path}", "file:///a/b/c"));
        assert!(!template_matches("demo://x", "demo://y"));
    }
}
