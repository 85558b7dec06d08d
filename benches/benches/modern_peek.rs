//! Routing a modern (2026-07-28) `tools/call` on its headers alone vs. reading the body.
//!
//! Issue 10 §8: when no rewrite is needed, the hub may route a modern request on `Mcp-Method` /
//! `Mcp-Name` and forward the body untouched. Candidates, same input each time:
//! - `header_only`: decode `Mcp-Method` and `Mcp-Name` (base64 sentinel aware) and pick the
//!   route: no body bytes read.
//! - `full_peek`: `mcp_wire::peek` (method, id, name, progress token) plus `modern::peek_meta`
//!   (protocol version, client capabilities) plus `modern::check_meta` and `check_headers`, i.e.
//!   everything a body-reading front does before it can route.
//!
//! Before timing, both candidates are checked to choose the same route.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use mcp_wire::modern::{self, BodyFacts, ModernHeaders};
use serde_json::json;

fn body() -> Vec<u8> {
    let line = "    let value = map.get(\"key\").copied().unwrap_or_default(); // lookup\n";
    serde_json::to_vec(&json!({
        "jsonrpc": "2.0",
        "id": 42,
        "method": "tools/call",
        "params": {
            "name": "github__search_issues",
            "arguments": {"repo": "meshgate/meshgate", "query": "is:open label:bug", "limit": 20,
                          "context": line.repeat(8)},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {"sampling": {}, "elicitation": {"form": {}}},
                "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1.0.0"},
                "progressToken": "tok-7f3a"
            }
        }
    }))
    .expect("fixture serializes")
}

fn headers() -> ModernHeaders<'static> {
    ModernHeaders {
        protocol_version: Some("2026-07-28"),
        method: Some("tools/call"),
        name: Some("github__search_issues"),
        params: vec![],
    }
}

/// The route: the upstream prefix of the tool name (what the hub's table would be keyed on).
fn route(name: &str) -> Option<&str> {
    name.split_once("__").map(|(up, _)| up)
}

fn header_only(h: &ModernHeaders<'_>) -> Option<String> {
    let m = modern::decode_header_value("Mcp-Method", h.method?).ok()?;
    if m != "tools/call" {
        return None;
    }
    let n = modern::decode_header_value("Mcp-Name", h.name?).ok()?;
    route(&n).map(str::to_owned)
}

fn full_peek(h: &ModernHeaders<'_>, b: &[u8]) -> Option<String> {
    let p = mcp_wire::peek(b).ok()?;
    let meta = modern::peek_meta(p.params?).ok()?;
    let version = modern::check_meta(&meta, &modern::MODERN_REVISIONS).ok()?;
    let name = p.name.as_ref()?.value.as_ref();
    let facts = BodyFacts {
        method: p.method.as_deref()?,
        name: Some(name),
        meta_version: version,
        mirrored_args: vec![],
    };
    modern::check_headers(h, &facts).ok()?;
    route(name).map(str::to_owned)
}

fn bench(c: &mut Criterion) {
    let b = body();
    let h = headers();
    assert_eq!(header_only(&h).as_deref(), Some("github"));
    assert_eq!(full_peek(&h, &b).as_deref(), Some("github"));
    let mut g = c.benchmark_group("modern_route_tools_call");
    g.throughput(Throughput::Bytes(b.len() as u64));
    g.bench_function("header_only", |bn| bn.iter(|| header_only(black_box(&h))));
    g.bench_function("full_peek", |bn| {
        bn.iter(|| full_peek(black_box(&h), black_box(&b)))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
}
