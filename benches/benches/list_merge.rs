//! Federated list building: `dataplane::federation::parse_page` of an upstream's 100-tool
//! `tools/list` response, then `merge` of two such upstreams with the `__` prefix and
//! `render_page` of the first page (the default page size, 100).
//!
//! This runs once per session and list kind (results are cached until a `list_changed`), so
//! it is warm-path rather than per-request work, but it is the hub's largest JSON job.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use dataplane::config::UpstreamName;
use dataplane::federation::{merge, parse_page, render_page, ListKind, Naming, UpstreamList};
use serde_json::json;

/// Default `list_page_size`.
const PAGE: usize = 100;

/// A `tools/list` response with 100 tools of realistic size (description and input schema).
fn tools_response(upstream: &str) -> Vec<u8> {
    let tools: Vec<serde_json::Value> = (0..100)
        .map(|i| {
            json!({
                "name": format!("{upstream}_tool_{i:03}"),
                "title": format!("Tool {i} of {upstream}"),
                "description": format!(
                    "Runs operation {i} against the {upstream} backend. Returns a JSON document \
                     describing the outcome, or an error when the target does not exist."
                ),
                "inputSchema": {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {
                        "target": {"type": "string", "description": "Path or identifier"},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 500},
                        "dryRun": {"type": "boolean", "default": false}
                    },
                    "required": ["target"],
                    "additionalProperties": false
                },
                "annotations": {"readOnlyHint": i % 3 == 0}
            })
        })
        .collect();
    let v = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}});
    serde_json::to_vec(&v).expect("fixture serialises")
}

fn upstream_list(response: &[u8]) -> Arc<UpstreamList> {
    let (items, next) = parse_page(ListKind::Tools, response).expect("fixture parses");
    assert!(next.is_none());
    Arc::new(UpstreamList::new(ListKind::Tools, items))
}

fn bench_lists(c: &mut Criterion) {
    let github = tools_response("github");
    let fs = tools_response("fs");
    let naming = Naming {
        separator: Some(Arc::from("__")),
        upstreams: vec![UpstreamName::fixed("github"), UpstreamName::fixed("fs")],
    };
    let lists = [Some(upstream_list(&github)), Some(upstream_list(&fs))];

    // Shape check outside timing: 200 exposed tools, a full first page with a cursor.
    let merged = merge(ListKind::Tools, &naming, &lists, 0b11);
    assert_eq!(merged.items.len(), 200);
    let page: serde_json::Value =
        serde_json::from_slice(&render_page(ListKind::Tools, &merged, 0, PAGE)).expect("page");
    assert_eq!(page["tools"].as_array().map(Vec::len), Some(PAGE));
    assert_eq!(page["tools"][0]["name"], "github__github_tool_000");
    assert!(page["nextCursor"].is_string());

    let mut group = c.benchmark_group("list_merge");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);

    group.throughput(Throughput::Bytes(github.len() as u64));
    group.bench_function("parse_page_100_tools", |b| {
        b.iter(|| parse_page(ListKind::Tools, black_box(&github)).expect("parse"))
    });
    group.throughput(Throughput::Elements(200));
    group.bench_function("merge_2x100", |b| {
        b.iter(|| merge(ListKind::Tools, &naming, black_box(&lists), 0b11))
    });
    group.bench_function("merge_2x100_render_first_page", |b| {
        b.iter(|| {
            let m = merge(ListKind::Tools, &naming, black_box(&lists), 0b11);
            render_page(ListKind::Tools, &m, 0, PAGE)
        })
    });
    group.finish();
}

// Written out instead of `criterion_group!`, whose generated `pub fn` has no docs.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_lists(&mut c);
    c.final_summary();
}
