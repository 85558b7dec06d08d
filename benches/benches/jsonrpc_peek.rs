//! The hub's per-request JSON work: reading `method`, `id`, `params.name` and
//! `params._meta.progressToken` (plus the `jsonrpc` check and the request / notification /
//! response classification) from one JSON-RPC message.
//!
//! Candidates, each extracting the same fields from the same immutable input:
//! - `mcp_wire_peek`: the hub's implementation (`serde_json` with borrowed `&RawValue`).
//! - `serde_json_value`: a full `serde_json::Value` decode, as a reference point.
//! - `simd_json_tape`: copy into a reused scratch buffer (simd-json parses in place and the
//!   hub's body is immutable `Bytes`, so the copy is timed), then a tape with reused
//!   `Buffers` and tape storage: simd-json's cheapest way to look up a few fields.
//! - `simd_json_borrowed`: the same copy, then `simd_json::to_borrowed_value`.
//! - `sonic_rs_get_many`: `sonic_rs::get_many` over a prebuilt `PointerTree`.
//! - `sonic_rs_lazy`: the hub's two-step serde scheme with `sonic_rs::LazyValue` standing in for
//!   `&RawValue` (what a drop-in swap of the parser in `peek.rs` would look like).
//!
//! Before timing, every candidate's fields are checked against the hub's, so the comparison
//! is between implementations of the same job.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use mcp_wire::Kind;
use serde::Deserialize;
use serde_json::json;
use simd_json::prelude::*;

// === fixtures ===

/// One benchmark input: a name for the report and the message bytes.
struct Message {
    name: &'static str,
    bytes: Vec<u8>,
}

/// The four message shapes the hub sees most: small and large calls, a progress
/// notification and a response relayed from an upstream.
fn messages() -> Vec<Message> {
    let small_call = json!({
        "jsonrpc": "2.0",
        "id": 42,
        "method": "tools/call",
        "params": {
            "name": "github__search_issues",
            "arguments": {"repo": "meshgate/meshgate", "query": "is:open label:bug", "limit": 20},
            "_meta": {"progressToken": "tok-7f3a"}
        }
    });

    // A source file sent as an argument: escaped newlines and quotes, ~4 KiB in all, with
    // `_meta` after the arguments so a lazy reader has to skip the payload to reach it.
    let line = "    let value = map.get(\"key\").copied().unwrap_or_default(); // lookup\n";
    let content: String = line.repeat(44);
    let large_call = json!({
        "jsonrpc": "2.0",
        "id": "call-0193",
        "method": "tools/call",
        "params": {
            "name": "fs__write_file",
            "arguments": {
                "path": "src/generated/lookup.rs",
                "content": content,
                "options": {"create": true, "mode": "0644", "tags": ["gen", "lookup", "v2"]}
            },
            "_meta": {"progressToken": 7001}
        }
    });

    let progress = json!({
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {"progressToken": "tok-7f3a", "progress": 50, "total": 100, "message": "indexing"}
    });

    // A tool result of ~2 KiB: a text block plus a structured block.
    let text: String =
        "match 17: dataplane/src/hub.rs:412 fn route(&self, p: &Peeked) ...\n".repeat(24);
    let response = json!({
        "jsonrpc": "2.0",
        "id": "req-19",
        "result": {
            "content": [
                {"type": "text", "text": text},
                {"type": "text", "text": "{\"matches\":24,\"truncated\":false}"}
            ],
            "isError": false
        }
    });

    [
        ("small_call", small_call),
        ("call_4k_args", large_call),
        ("progress_notification", progress),
        ("response_2k_result", response),
    ]
    .into_iter()
    .map(|(name, v)| Message {
        name,
        bytes: serde_json::to_vec(&v).expect("fixture serialises"),
    })
    .collect()
}

// === common result shape ===

/// A scalar field as a candidate found it: raw JSON text, a decoded string or an integer.
#[derive(Debug)]
enum Token<'a> {
    Raw(&'a str),
    Str(Cow<'a, str>),
    Int(i64),
    UInt(u64),
}

impl Token<'_> {
    /// Canonical JSON text, for the equality check outside the timing loop.
    fn normalise(&self) -> String {
        match self {
            Token::Raw(s) => serde_json::from_str::<serde_json::Value>(s)
                .expect("raw token is JSON")
                .to_string(),
            Token::Str(s) => serde_json::Value::String(s.to_string()).to_string(),
            Token::Int(n) => n.to_string(),
            Token::UInt(n) => n.to_string(),
        }
    }
}

/// What every candidate hands to its visitor, borrowed from the input or its scratch copy.
#[derive(Debug)]
struct Refs<'a> {
    kind: Kind,
    method: Option<Cow<'a, str>>,
    id: Option<Token<'a>>,
    name: Option<Cow<'a, str>>,
    progress_token: Option<Token<'a>>,
}

/// Owned form of [`Refs`] for comparing candidates.
#[derive(Debug, PartialEq, Eq)]
struct Fields {
    kind: Kind,
    method: Option<String>,
    id: Option<String>,
    name: Option<String>,
    progress_token: Option<String>,
}

/// The visitor for the equality check: a plain `fn` so it accepts `Refs` of any lifetime.
fn owned(r: Refs<'_>) -> Fields {
    {
        Fields {
            kind: r.kind,
            method: r.method.map(Cow::into_owned),
            id: r.id.as_ref().map(Token::normalise),
            name: r.name.map(Cow::into_owned),
            progress_token: r.progress_token.as_ref().map(Token::normalise),
        }
    }
}

/// The same classification rule as `mcp_wire::peek`.
fn classify(has_method: bool, has_id: bool, result: bool, error: bool) -> Result<Kind, String> {
    match (has_method, has_id, result, error) {
        (true, true, false, false) => Ok(Kind::Request),
        (true, false, false, false) => Ok(Kind::Notification),
        (false, true, true, false) | (false, true, false, true) => Ok(Kind::Response),
        _ => Err("not a request, notification or response".into()),
    }
}

/// A JSON string literal's contents: borrowed when it has no escapes, like the hub's `as_str`.
fn unquote<'a>(raw: &'a str) -> Option<Cow<'a, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        sonic_rs::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

// === candidates ===

/// (a) The hub's implementation.
fn hub_peek<R>(input: &[u8], visit: impl FnOnce(Refs<'_>) -> R) -> Result<R, String> {
    let p = mcp_wire::peek(input).map_err(|e| e.to_string())?;
    Ok(visit(Refs {
        kind: p.kind,
        method: p.method,
        id: p.id.map(Token::Raw),
        name: p.name.map(|n| n.value),
        progress_token: p.progress_token.map(Token::Raw),
    }))
}

/// (b) Reference: decode everything into a `serde_json::Value`, then look the fields up.
fn serde_value<R>(input: &[u8], visit: impl FnOnce(Refs<'_>) -> R) -> Result<R, String> {
    fn token(v: &serde_json::Value) -> Option<Token<'_>> {
        match v {
            serde_json::Value::String(s) => Some(Token::Str(Cow::Borrowed(s))),
            serde_json::Value::Number(n) => n.as_i64().map(Token::Int),
            _ => None,
        }
    }
    let v: serde_json::Value = serde_json::from_slice(input).map_err(|e| e.to_string())?;
    let top = v.as_object().ok_or("not an object")?;
    if top.get("jsonrpc").and_then(|v| v.as_str()) != Some("2.0") {
        return Err("jsonrpc must be \"2.0\"".into());
    }
    let method = top
        .get("method")
        .and_then(|m| m.as_str())
        .map(Cow::Borrowed);
    let id = top.get("id").and_then(token);
    let kind = classify(
        method.is_some(),
        id.is_some(),
        top.contains_key("result"),
        top.contains_key("error"),
    )?;
    let params = top.get("params").and_then(|p| p.as_object());
    let name = params
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(Cow::Borrowed);
    let progress_token = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("progressToken"))
        .and_then(token);
    Ok(visit(Refs {
        kind,
        method,
        id,
        name,
        progress_token,
    }))
}

/// Reused state for the simd-json tape candidate: one per worker in a real hub.
struct SimdScratch {
    copy: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: simd_json::tape::Tape<'static>,
}

impl SimdScratch {
    fn new() -> Self {
        Self {
            copy: Vec::with_capacity(8192),
            buffers: simd_json::Buffers::new(8192),
            tape: simd_json::tape::Tape::null(),
        }
    }
}

/// (c) simd-json tape: copy (timed), parse into the reused tape, look the fields up.
fn simd_tape<R>(
    input: &[u8],
    s: &mut SimdScratch,
    visit: impl FnOnce(Refs<'_>) -> R,
) -> Result<R, String> {
    fn token<'a>(v: simd_json::tape::Value<'_, 'a>) -> Option<Token<'a>> {
        if let Some(s) = v.into_string() {
            Some(Token::Str(Cow::Borrowed(s)))
        } else if let Some(n) = v.as_i64() {
            Some(Token::Int(n))
        } else {
            v.as_u64().map(Token::UInt)
        }
    }
    s.copy.clear();
    s.copy.extend_from_slice(input);
    let mut tape = std::mem::replace(&mut s.tape, simd_json::tape::Tape(Vec::new())).reset();
    let out = match simd_json::fill_tape(&mut s.copy, &mut s.buffers, &mut tape) {
        Err(e) => Err(e.to_string()),
        Ok(()) => (|| {
            let top = tape.as_value().as_object().ok_or("not an object")?;
            if top.get("jsonrpc").and_then(|v| v.into_string()) != Some("2.0") {
                return Err("jsonrpc must be \"2.0\"".to_string());
            }
            let method = top
                .get("method")
                .and_then(|m| m.into_string())
                .map(Cow::Borrowed);
            let id = top.get("id").and_then(token);
            let kind = classify(
                method.is_some(),
                id.is_some(),
                top.get("result").is_some(),
                top.get("error").is_some(),
            )?;
            let params = top.get("params").and_then(|p| p.as_object());
            let name = params
                .as_ref()
                .and_then(|p| p.get("name"))
                .and_then(|n| n.into_string())
                .map(Cow::Borrowed);
            let progress_token = params
                .as_ref()
                .and_then(|p| p.get("_meta"))
                .and_then(|m| m.get("progressToken"))
                .and_then(token);
            Ok(visit(Refs {
                kind,
                method,
                id,
                name,
                progress_token,
            }))
        })(),
    };
    s.tape = tape.reset();
    out
}

/// (c') simd-json borrowed value: copy (timed) into a reused buffer, full borrowed decode.
fn simd_borrowed<R>(
    input: &[u8],
    copy: &mut Vec<u8>,
    visit: impl FnOnce(Refs<'_>) -> R,
) -> Result<R, String> {
    fn token<'a>(v: &'a simd_json::BorrowedValue<'_>) -> Option<Token<'a>> {
        if let Some(s) = v.as_str() {
            Some(Token::Str(Cow::Borrowed(s)))
        } else if let Some(n) = v.as_i64() {
            Some(Token::Int(n))
        } else {
            v.as_u64().map(Token::UInt)
        }
    }
    copy.clear();
    copy.extend_from_slice(input);
    let v = simd_json::to_borrowed_value(copy).map_err(|e| e.to_string())?;
    let top = v.as_object().ok_or("not an object")?;
    if top.get("jsonrpc").and_then(|v| v.as_str()) != Some("2.0") {
        return Err("jsonrpc must be \"2.0\"".into());
    }
    let method = top
        .get("method")
        .and_then(|m| m.as_str())
        .map(Cow::Borrowed);
    let id = top.get("id").and_then(token);
    let kind = classify(
        method.is_some(),
        id.is_some(),
        top.contains_key("result"),
        top.contains_key("error"),
    )?;
    let params = top.get("params").and_then(|p| p.as_object());
    let name = params
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(Cow::Borrowed);
    let progress_token = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("progressToken"))
        .and_then(token);
    Ok(visit(Refs {
        kind,
        method,
        id,
        name,
        progress_token,
    }))
}

/// Pointer paths for `sonic_rs::get_many`, in this order; built once, like a snapshot.
fn sonic_tree() -> sonic_rs::PointerTree {
    let mut tree = sonic_rs::PointerTree::new();
    tree.add_path(["jsonrpc"]);
    tree.add_path(["method"]);
    tree.add_path(["id"]);
    tree.add_path(["params", "name"]);
    tree.add_path(["params", "_meta", "progressToken"]);
    // `result` and `error` are never both present, so `get_many` never finds every path and
    // always scans (and checks) the whole top-level object, as the hub's peek does.
    tree.add_path(["result"]);
    tree.add_path(["error"]);
    tree
}

/// A raw JSON scalar as a token: strings are unquoted, numbers kept as raw text.
fn raw_token(raw: &str) -> Option<Token<'_>> {
    if raw.starts_with('"') {
        unquote(raw).map(Token::Str)
    } else {
        Some(Token::Raw(raw))
    }
}

/// (d) sonic-rs `get_many` by pointer.
fn sonic_get_many<R>(
    input: &[u8],
    tree: &sonic_rs::PointerTree,
    visit: impl FnOnce(Refs<'_>) -> R,
) -> Result<R, String> {
    let found = sonic_rs::get_many(input, tree).map_err(|e| e.to_string())?;
    let raw = |i: usize| found[i].as_ref().map(|v| v.as_raw_str());
    if raw(0) != Some("\"2.0\"") {
        return Err("jsonrpc must be \"2.0\"".into());
    }
    let method = raw(1).and_then(unquote);
    let id = raw(2).and_then(raw_token);
    let kind = classify(
        method.is_some(),
        id.is_some(),
        found[5].is_some(),
        found[6].is_some(),
    )?;
    Ok(visit(Refs {
        kind,
        method,
        id,
        name: raw(3).and_then(unquote),
        progress_token: raw(4).and_then(raw_token),
    }))
}

#[derive(Deserialize)]
struct SonicTop<'a> {
    #[serde(borrow)]
    jsonrpc: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    method: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    id: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    params: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    result: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    error: Option<sonic_rs::LazyValue<'a>>,
}

#[derive(Deserialize)]
struct SonicParams<'a> {
    #[serde(borrow)]
    name: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow, rename = "_meta")]
    meta: Option<sonic_rs::LazyValue<'a>>,
}

#[derive(Deserialize)]
struct SonicMeta<'a> {
    #[serde(borrow, rename = "progressToken")]
    progress_token: Option<sonic_rs::LazyValue<'a>>,
}

/// (d') sonic-rs serde with `LazyValue` fields: the hub's scheme with another parser.
fn sonic_lazy<R>(input: &[u8], visit: impl FnOnce(Refs<'_>) -> R) -> Result<R, String> {
    let top: SonicTop<'_> = sonic_rs::from_slice(input).map_err(|e| e.to_string())?;
    if top.jsonrpc.as_ref().map(|v| v.as_raw_str()) != Some("\"2.0\"") {
        return Err("jsonrpc must be \"2.0\"".into());
    }
    let method = top.method.as_ref().and_then(|m| unquote(m.as_raw_str()));
    let id = top.id.as_ref().and_then(|v| raw_token(v.as_raw_str()));
    let kind = classify(
        method.is_some(),
        id.is_some(),
        top.result.is_some(),
        top.error.is_some(),
    )?;
    // Both nested parses stay alive until the visitor has run: the fields borrow from them.
    let params = top
        .params
        .as_ref()
        .map(|p| p.as_raw_str())
        .filter(|p| p.starts_with('{'));
    let p: Option<SonicParams<'_>> = params
        .map(sonic_rs::from_str)
        .transpose()
        .map_err(|e| e.to_string())?;
    let meta = p
        .as_ref()
        .and_then(|p| p.meta.as_ref())
        .map(|m| m.as_raw_str())
        .filter(|m| m.starts_with('{'));
    let m: Option<SonicMeta<'_>> = meta
        .map(sonic_rs::from_str)
        .transpose()
        .map_err(|e| e.to_string())?;
    let name = p
        .as_ref()
        .and_then(|p| p.name.as_ref())
        .and_then(|n| unquote(n.as_raw_str()));
    let progress_token = m
        .as_ref()
        .and_then(|m| m.progress_token.as_ref())
        .and_then(|t| raw_token(t.as_raw_str()));
    Ok(visit(Refs {
        kind,
        method,
        id,
        name,
        progress_token,
    }))
}

// === bench ===

/// Consumes a candidate's result so none of the extraction is optimised away.
fn sink(r: Refs<'_>) {
    black_box(&r);
}

fn bench_peek(c: &mut Criterion) {
    let tree = sonic_tree();
    let mut simd = SimdScratch::new();
    let mut copy = Vec::with_capacity(8192);

    let mut group = c.benchmark_group("jsonrpc_peek");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(50);

    for msg in messages() {
        let input = msg.bytes.as_slice();

        // Honesty check, outside timing: every candidate extracts exactly the hub's fields.
        let expected: Fields = hub_peek(input, owned).expect("hub peeks fixture");
        let others: [(&str, Fields); 5] = [
            (
                "serde_json_value",
                serde_value(input, owned).expect("serde_json"),
            ),
            (
                "simd_json_tape",
                simd_tape(input, &mut simd, owned).expect("simd tape"),
            ),
            (
                "simd_json_borrowed",
                simd_borrowed(input, &mut copy, owned).expect("simd"),
            ),
            (
                "sonic_rs_get_many",
                sonic_get_many(input, &tree, owned).expect("sonic"),
            ),
            (
                "sonic_rs_lazy",
                sonic_lazy(input, owned).expect("sonic lazy"),
            ),
        ];
        for (candidate, got) in &others {
            assert_eq!(
                got, &expected,
                "{candidate} disagrees with mcp_wire::peek on {}",
                msg.name
            );
        }

        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("mcp_wire_peek", msg.name),
            input,
            |b, i| {
                b.iter(|| hub_peek(black_box(i), sink).expect("peek"));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json_value", msg.name),
            input,
            |b, i| {
                b.iter(|| serde_value(black_box(i), sink).expect("serde_json"));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("simd_json_tape", msg.name),
            input,
            |b, i| {
                b.iter(|| simd_tape(black_box(i), &mut simd, sink).expect("simd tape"));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("simd_json_borrowed", msg.name),
            input,
            |b, i| {
                b.iter(|| simd_borrowed(black_box(i), &mut copy, sink).expect("simd borrowed"));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("sonic_rs_get_many", msg.name),
            input,
            |b, i| {
                b.iter(|| sonic_get_many(black_box(i), &tree, sink).expect("sonic get_many"));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("sonic_rs_lazy", msg.name),
            input,
            |b, i| {
                b.iter(|| sonic_lazy(black_box(i), sink).expect("sonic lazy"));
            },
        );
    }
    group.finish();
}

// Written out instead of `criterion_group!`, whose generated `pub fn` has no docs.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_peek(&mut c);
    c.final_summary();
}
