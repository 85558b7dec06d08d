//! The dual-era hub (issue 10) against the official software of both eras, pinned in
//! `tests/node` and `tests/python`:
//! - conformance `0.2.0-alpha.12 --requirements 2026-07-28` through the hub in front of the
//!   modern fixture (TS SDK 2.x server): every scenario the fixture passes directly passes;
//! - the four SDK pairings (TS SDK 1.x and Python `mcp` 2.x clients in legacy mode; Python
//!   `mcp` 2.x and TS SDK 2.x clients in 2026-07-28 mode) through the hub against both eras of
//!   servers (server-everything, legacy; a Python `mcp` 2.x modern-only server), every check of
//!   each (discovery/initialize, lists, a call, a server→client request or input round, a
//!   subscription update, cancellation) — including the pairings that cannot work directly;
//! - one hub serving a legacy and a modern client at once, federating both eras;
//! - bad 2026-07-28 input, each with the spec's error, the hub unaffected.

// Tests drive the hub from plain threads, not monoio workers, so blocking sleeps are fine here.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::*;

/// The checks every pairing client prints for either target.
const PAIRING_CHECKS: &[&str] = &[
    "connect",
    "lists",
    "call",
    "server-to-client request",
    "subscription update",
    "cancellation",
];

fn kit_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The Python `mcp` 2.x modern-only server of the kit.
fn python_modern_server(python: &PathBuf) -> (Proc, String) {
    let mut cmd = Command::new(python);
    cmd.arg(kit_path("tests/python/modern_server.py"))
        .args(["--port", "0"]);
    let p = spawn_ready(cmd, "LISTENING ", Duration::from_secs(30));
    let url = p.line.trim_start_matches("LISTENING ").trim().to_string();
    (p, url)
}

/// A hub federating one upstream under its own names (prefixing off, as the pairing clients
/// call fixed names).
fn hub_for(name: &str, url: &str) -> Hub {
    start_hub(
        &format!("listen: 127.0.0.1:0\nworkers: 2\nseparator: none\nupstreams:\n  - name: {name}\n    url: {url}\n"),
        "auto",
    )
}

/// Runs one pairing client against `url` (a hub in front of `target`).
fn pairing(python: &PathBuf, client: &str, url: &str, target: &str) -> (bool, String) {
    let within = Duration::from_secs(120);
    match client {
        "ts1" => run_node(
            &[
                "pairing-client.mjs",
                "--sdk",
                "ts1",
                "--url",
                url,
                "--target",
                target,
            ],
            within,
        ),
        "ts2" => run_node(
            &[
                "pairing-client.mjs",
                "--sdk",
                "ts2",
                "--mode",
                "pin",
                "--url",
                url,
                "--target",
                target,
            ],
            within,
        ),
        "py-legacy" | "py-modern" => {
            let mode = if client == "py-legacy" {
                "legacy"
            } else {
                "2026-07-28"
            };
            run_bounded(
                Command::new(python)
                    .arg(kit_path("tests/python/pairing_client.py"))
                    .args(["--mode", mode, "--url", url, "--target", target]),
                within,
            )
        }
        other => panic!("unknown pairing client {other}"),
    }
}

#[test]
fn conformance_2026_07_28_through_the_hub_matches_the_modern_fixture_directly() {
    let (_fixture, fx_url) = node_server("modern-fixture-server.mjs", &[]);
    let hub = hub_for("fixture", &fx_url);
    let out_dir = scratch("conformance-modern");
    let (ok, out) = run_node(
        &[
            "conformance.mjs",
            "--modern",
            "--url",
            &hub.url,
            "--baseline",
            "baseline-modern-fixture.json",
            "--out",
            out_dir.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(360),
    );
    println!("{out}");
    assert!(
        ok,
        "a scenario the modern fixture passes directly failed through the hub:\n{out}\n--- hub log ---\n{}",
        hub.stderr()
    );
    // Exactly the baseline's lists: its passes must PASS (server-stateless, caching and the
    // input-required-result-* family among them), its failures may fail.
    let baseline: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(kit_path("tests/node/baseline-modern-fixture.json"))
            .expect("read the baseline"),
    )
    .expect("baseline is JSON");
    let list = |k: &str| -> Vec<String> {
        baseline[k]
            .as_array()
            .expect("baseline list")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let (pass, fail) = (list("pass"), list("fail"));
    for must in [
        "server-stateless",
        "caching",
        "input-required-result-tampered-state",
    ] {
        assert!(pass.iter().any(|p| p == must), "baseline lacks {must}");
    }
    let pass: Vec<&str> = pass.iter().map(String::as_str).collect();
    let fail: Vec<&str> = fail.iter().map(String::as_str).collect();
    assert_checks(&out, &pass, &fail);
}

#[test]
fn four_sdk_pairings_pass_through_the_hub_against_both_eras_of_servers() {
    let python = require_python_kit();
    let (_everything, ev_url) = node_server("run-everything.mjs", &[]);
    let (_modern, pm_url) = python_modern_server(&python);
    let ev_hub = hub_for("everything", &ev_url);
    let pm_hub = hub_for("pymodern", &pm_url);
    let mut failures = Vec::new();
    for (target, hub) in [("everything", &ev_hub), ("py-modern", &pm_hub)] {
        for client in ["ts1", "py-legacy", "py-modern", "ts2"] {
            let (ok, out) = pairing(&python, client, &hub.url, target);
            println!("--- {client} -> {target} ---\n{out}");
            let report = CheckReport::parse(&out);
            let mut passed = report.passed.clone();
            passed.sort();
            let mut want: Vec<String> = PAIRING_CHECKS.iter().map(|s| s.to_string()).collect();
            want.sort();
            if !ok || passed != want || !report.failed.is_empty() || !report.skipped.is_empty() {
                failures.push(format!(
                    "{client} -> {target}: passed {passed:?}, failed {:?}, skipped {:?}",
                    report.failed, report.skipped
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "pairings through the hub:\n{}\n--- hub (everything) ---\n{}\n--- hub (py-modern) ---\n{}",
        failures.join("\n"),
        ev_hub.stderr(),
        pm_hub.stderr()
    );
}

#[test]
fn one_hub_serves_a_legacy_and_a_modern_client_at_once_federating_both_eras() {
    let python = require_python_kit();
    let (_everything, ev_url) = node_server("run-everything.mjs", &[]);
    let (_modern, pm_url) = python_modern_server(&python);
    let hub = start_hub(
        &format!("listen: 127.0.0.1:0\nworkers: 2\nupstreams:\n  - name: everything\n    url: {ev_url}\n  - name: pymodern\n    url: {pm_url}\n"),
        "auto",
    );
    // At once: a legacy TS 1.x client on the modern upstream, a 2026-07-28 TS 2.x client on the
    // legacy one (each through the translation the other era needs).
    // Both upstreams expose `echo`: the hub prefixes names (`<upstream>__<name>`).
    let url = hub.url.clone();
    let legacy = std::thread::spawn(move || {
        run_node(
            &[
                "pairing-client.mjs",
                "--sdk",
                "ts1",
                "--url",
                &url,
                "--target",
                "py-modern",
                "--prefix",
                "pymodern__",
            ],
            Duration::from_secs(120),
        )
    });
    let url = hub.url.clone();
    let modern = std::thread::spawn(move || {
        run_node(
            &[
                "pairing-client.mjs",
                "--sdk",
                "ts2",
                "--mode",
                "pin",
                "--url",
                &url,
                "--target",
                "everything",
                "--prefix",
                "everything__",
            ],
            Duration::from_secs(120),
        )
    });
    for (who, (ok, out)) in [
        ("legacy ts1 -> py-modern", legacy.join().unwrap()),
        ("modern ts2 -> everything", modern.join().unwrap()),
    ] {
        println!("--- {who} ---\n{out}");
        assert!(
            ok,
            "{who} failed through the shared hub:\n{out}\n--- hub ---\n{}",
            hub.stderr()
        );
        assert_checks(&out, PAIRING_CHECKS, &[]);
    }
    // The eras the hub learned are in /metrics.
    let m = raw(
        hub.addr,
        format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            hub.addr
        )
        .as_bytes(),
        Duration::from_secs(10),
    )
    .unwrap()
    .text();
    assert!(
        m.contains(r#"meshgate_upstream_era{upstream="everything",era="legacy"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"meshgate_upstream_era{upstream="pymodern",era="modern"} 1"#),
        "{m}"
    );
}

/// A 2026-07-28 POST with the envelope and headers a client would send, plus `extra` headers.
fn modern_post(
    hub: &Hub,
    body: &str,
    method: &str,
    name: Option<&str>,
    extra: &[(&str, &str)],
) -> Resp {
    let mut headers: Vec<(&str, &str)> = vec![
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", method),
    ];
    if let Some(n) = name {
        headers.push(("Mcp-Name", n));
    }
    headers.extend_from_slice(extra);
    post(hub, None, body, &headers)
}

const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"rust-test","version":"1"}}"#;

#[test]
fn bad_2026_07_28_input_gets_the_spec_errors_and_the_hub_goes_on() {
    let (_fixture, fx_url) = node_server("modern-fixture-server.mjs", &[]);
    let hub = hub_for("fixture", &fx_url);
    let call = |name: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{name}","arguments":{{}},{META}}}}}"#
        )
    };
    let check = |r: &Resp, status: u16, code: i64, what: &str| {
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["code"], code, "{what}: {v}");
        assert_eq!(v["id"], 7, "{what}: errors echo the request id: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: a reason"
        );
    };
    // Header and body disagree (Mcp-Name), and a required header is missing (Mcp-Method).
    let r = modern_post(
        &hub,
        &call("test_simple_text"),
        "tools/call",
        Some("other_tool"),
        &[],
    );
    check(&r, 400, -32020, "Mcp-Name mismatch");
    let r = post(
        &hub,
        None,
        &call("test_simple_text"),
        &[
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Name", "test_simple_text"),
        ],
    );
    check(&r, 400, -32020, "missing Mcp-Method");
    // An unknown protocol version: -32022 with the supported ones.
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let r = post(
        &hub,
        None,
        body,
        &[
            ("MCP-Protocol-Version", "2099-01-01"),
            ("Mcp-Method", "server/discover"),
        ],
    );
    check(&r, 400, -32022, "unknown version");
    assert_eq!(r.json()["error"]["data"]["supported"][0], "2026-07-28");
    assert_eq!(r.json()["error"]["data"]["requested"], "2099-01-01");
    // The envelope lacks clientCapabilities: -32602.
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let r = modern_post(&hub, body, "server/discover", None, &[]);
    check(&r, 400, -32602, "missing clientCapabilities");
    // A removed method: 404 -32601.
    let body = format!(r#"{{"jsonrpc":"2.0","id":7,"method":"ping","params":{{{META}}}}}"#);
    let r = modern_post(&hub, &body, "ping", None, &[]);
    check(&r, 404, -32601, "ping is removed");
    // Request state the hub issued, altered: refused (the upstream never sees it).
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"test_simple_text","arguments":{{}},"inputResponses":{{"input":{{}}}},"requestState":"mgrs.mg1.p1.AAAA.AAAA",{META}}}}}"#
    );
    let r = modern_post(&hub, &body, "tools/call", Some("test_simple_text"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], -32602, "{}", r.text());
    assert!(r.text().contains("requestState refused"), "{}", r.text());
    // A 2026-07-28 request with a session id: the id is ignored (never minted nor echoed), the
    // request is served statelessly.
    let r = modern_post(
        &hub,
        &call("test_simple_text"),
        "tools/call",
        Some("test_simple_text"),
        &[("Mcp-Session-Id", "not-a-session")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("mcp-session-id").is_none());
    let last = r
        .messages()
        .into_iter()
        .rev()
        .find(|m| m["id"] == 7)
        .unwrap();
    assert_eq!(last["result"]["resultType"], "complete", "{last}");
    // After all that, discovery and a legacy session both still work.
    let body =
        format!(r#"{{"jsonrpc":"2.0","id":8,"method":"server/discover","params":{{{META}}}}}"#);
    let r = modern_post(&hub, &body, "server/discover", None, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["supportedVersions"][0], "2026-07-28");
    assert!(r.json()["result"]["ttlMs"].is_u64());
    let sid = initialize(&hub, "2025-11-25");
    assert!(!sid.is_empty());
}
