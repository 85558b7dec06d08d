//! The hub against the official MCP software from npm (pinned in `tests/node`):
//! - the official TypeScript SDK client through the hub federating `server-everything` and our
//!   fixture server (prefixes on, small pages so the hub's own pagination is exercised);
//! - the official conformance suite through the hub in transparent mode (prefixing off):
//!   (a) in front of `server-everything`, every scenario it passes directly must pass;
//!   (b) in front of our fixture server, the whole active suite must pass.
//!
//! Needs `npm ci --prefix dataplane/tests/node` (the README's test command does it).

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

fn node_server(script: &str, extra: &[&str]) -> (Proc, String) {
    let (node, kit) = require_node_kit();
    let mut cmd = Command::new(node);
    cmd.current_dir(&kit)
        .arg(script)
        .args(["--port", "0"])
        .args(extra);
    let p = spawn_ready(cmd, "LISTENING ", Duration::from_secs(30));
    let url = p.line.trim_start_matches("LISTENING ").trim().to_string();
    (p, url)
}

fn run_node(args: &[&str], within: Duration) -> (bool, String) {
    let (node, kit) = require_node_kit();
    let out = Command::new("timeout")
        .arg("--kill-after=5")
        .arg(within.as_secs().to_string())
        .arg(node)
        .args(args)
        .current_dir(&kit)
        .output()
        .expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn official_sdk_client_through_hub_federating_two_servers() {
    let (_everything, ev_url) = node_server("run-everything.mjs", &[]);
    let (_fixture, fx_url) = node_server("fixture-server.mjs", &["--page-size", "3"]);
    for driver in ["iouring", "legacy"] {
        let hub = start_hub(
            &format!("listen: 127.0.0.1:0\nworkers: 2\nlist_page_size: 4\nupstreams:\n  - name: everything\n    url: {ev_url}\n  - name: fixture\n    url: {fx_url}\n"),
            driver,
        );
        let (ok, out) = run_node(
            &[
                "e2e-client.mjs",
                "--url",
                &hub.url,
                "--everything",
                "everything__",
                "--fixture",
                "fixture__",
            ],
            Duration::from_secs(120),
        );
        println!("--- {driver} ---\n{out}");
        assert!(
            ok,
            "SDK e2e through the hub failed ({driver}):\n{out}\n--- hub log ---\n{}",
            hub.stderr()
        );
        assert!(out.contains(" passed, 0 failed"), "{out}");
        assert!(!out.contains("not ok"), "{out}");
    }
}

#[test]
fn conformance_suite_through_hub_in_front_of_fixture_server() {
    let (_fixture, fx_url) = node_server("fixture-server.mjs", &[]);
    let hub = start_hub(
        &format!("listen: 127.0.0.1:0\nworkers: 2\nseparator: none\nupstreams:\n  - name: fixture\n    url: {fx_url}\n"),
        "auto",
    );
    let out_dir = scratch("conformance-fixture");
    let (ok, out) = run_node(
        &[
            "conformance.mjs",
            "--url",
            &hub.url,
            "--out",
            out_dir.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(300),
    );
    println!("{out}");
    assert!(
        ok,
        "conformance through the hub (fixture) failed:\n{out}\n--- hub log ---\n{}",
        hub.stderr()
    );
    assert!(out.contains("dns-rebinding-protection"), "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn conformance_through_hub_matches_server_everything_directly() {
    let (_everything, ev_url) = node_server("run-everything.mjs", &[]);
    let hub = start_hub(
        &format!("listen: 127.0.0.1:0\nworkers: 2\nseparator: none\nupstreams:\n  - name: everything\n    url: {ev_url}\n"),
        "auto",
    );
    let out_dir = scratch("conformance-everything");
    let (ok, out) = run_node(
        &[
            "conformance.mjs",
            "--url",
            &hub.url,
            "--baseline",
            "baseline-everything.json",
            "--out",
            out_dir.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(300),
    );
    println!("{out}");
    assert!(ok, "a scenario server-everything passes directly failed through the hub:\n{out}\n--- hub log ---\n{}", hub.stderr());
}
