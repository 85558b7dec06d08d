//! The web console in real headless Chromium (Debian's `/usr/bin/chromium`, driven by
//! `playwright-core` from the console's lock file; no browser download). The console is built
//! with its pinned toolchain (`npm ci` + `vite build`) and served by a real `meshgate-control`.
//! The script logs in, sees the catalog, approves a reported tool and a held call, checks the
//! audit chain, the hub view and the KPI charts, and presses the kill switch; meanwhile this test
//! plays the hub: its long-poll on the held call completes with the console's decision, and its
//! watcher receives the kill in a verified snapshot. Screenshots: `target/console-e2e/*.png`.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshgate_control_client::snapshot::ToolVerdict;
use meshgate_control_client::{WatchConfig, Watcher};
use serde_json::json;
use support::control::Control;

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("console")
}

/// Runs a command to completion within `limit`, panicking with its output otherwise.
fn run(cmd: &mut Command, what: &str, limit: Duration) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                status.success(),
                "{what} failed ({status}):\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return stdout;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not finish within {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn build_console() -> PathBuf {
    let dir = console_dir();
    run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir),
        "npm ci (controlplane/console)",
        Duration::from_secs(300),
    );
    run(
        Command::new("npm")
            .args(["run", "build", "--prefix"])
            .arg(&dir),
        "console build (tsc + vite)",
        Duration::from_secs(120),
    );
    let dist = dir.join("dist");
    assert!(dist.join("index.html").exists());
    dist
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_headless_chromium() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "headless Chromium is needed: apt-get install -y chromium (.ci/run installs it)"
    );
    let dist = build_console();
    let tmp = tempfile::tempdir().unwrap();
    let cp = Control::start(
        &tmp.path().join("cp"),
        &["--console", dist.to_str().unwrap()],
    );
    let admin = cp.admin();

    // --- the fleet the console shows ---
    admin
        .put("/v1/zones/dc1", json!({"description": "main"}))
        .await;
    admin
        .put(
            "/v1/servers/files",
            json!({"zone": "dc1", "owner": "storage-team", "version": "1.4.0",
                   "endpoints": ["http://10.0.0.1:3000/mcp", "http://10.0.0.2:3000/mcp"]}),
        )
        .await;
    admin.put("/v1/servers/files/tools/read", json!({})).await;
    admin
        .put(
            "/v1/servers/files/tools/old",
            json!({"version": "1.0.0", "lifecycle": "deprecated", "sunset": "2027-01-31"}),
        )
        .await;
    let hub_key = admin
        .post("/v1/keys", json!({"name": "hub-1", "role": "hub"}))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let hub = cp.client(Some(&hub_key));
    hub.post(
        "/v1/hubs/hub-1/discovered",
        json!({"server": "files", "tools": ["read", "old", "delete"]}),
    )
    .await;
    for (calls, errors) in [(100, 0), (200, 5)] {
        hub.post(
            "/v1/hubs/hub-1/report",
            json!({"sessions": 3, "tunnels": [{"edge": "edge-7", "transport": "quic", "since_ms": 0}],
                   "upstreams": [{"name": "files", "up": true}],
                   "kpi": {"tool_boot_ms": 350.0, "reconnections": 0, "cache_hits": 5, "cache_misses": 5,
                           "calls": calls, "errors": errors}}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let k = ed25519_dalek::SigningKey::from_bytes(&[11; 32]);
    // the hub's real audit writer: log_opened + 2 calls = 3 records
    let lines = support::audit::hub_lines(
        tmp.path(),
        "hub-1",
        &k,
        vec![
            support::audit::call("dev-dan", "files", "read", "ok"),
            support::audit::call("dev-dan", "files", "read", "ok"),
        ],
    );
    hub.post(
        "/v1/audit",
        json!({"hub": "hub-1", "key": meshgate_control_client::verify::encode_key(&k.verifying_key()), "lines": lines}),
    )
    .await;
    // the hub holds a call and long-polls its decision (as it would while the client waits)
    let held = hub
        .post(
            "/v1/approvals",
            json!({"id": "", "hub": "hub-1", "upstream": "files", "tool": "delete", "arguments": {"path": "/srv/data"},
                   "principal": "dev-dan", "reason": "destructive tool", "approval_group": null,
                   "created_at": 0, "expires_at": 0}),
        )
        .await;
    let id = held["id"].as_str().unwrap().to_owned();
    let hub2 = hub.clone();
    let id2 = id.clone();
    let holder = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(150);
        loop {
            let v = hub2
                .get(&format!("/v1/approvals/{id2}?wait_ms=20000"))
                .await;
            if v["state"] != "pending" || Instant::now() > deadline {
                return v;
            }
        }
    });
    let mut wc = WatchConfig::from_url(&cp.url, tmp.path().join("hub-state")).unwrap();
    wc.token = Some(hub_key.clone());
    wc.hub_id = "hub-1".into();
    let w = Watcher::start(wc).unwrap();

    // --- the browser ---
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-e2e");
    let _ = std::fs::remove_dir_all(&shots);
    let node = if Command::new("node").arg("--version").output().is_ok() {
        PathBuf::from("node")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../dataplane/tests/node/node_modules/node/bin/node")
    };
    let out = tokio::task::spawn_blocking({
        let url = cp.url.clone();
        let shots = shots.clone();
        move || {
            run(
                Command::new(node)
                    .arg(console_dir().join("e2e/console.mjs"))
                    .arg(&url)
                    .arg(support::control::ADMIN)
                    .arg(&shots),
                "console e2e in Chromium",
                Duration::from_secs(180),
            )
        }
    })
    .await
    .unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert_eq!(summary["ok"], true, "{out}");
    assert_eq!(summary["approval"], id.as_str());
    let steps = summary["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 8, "{summary}");
    for s in steps {
        let png = shots.join(format!("{}.png", s.as_str().unwrap()));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(
            bytes.len() > 1000 && bytes.starts_with(b"\x89PNG"),
            "{}",
            png.display()
        );
    }
    println!("console screenshots in {}", shots.display());

    // --- what the hub saw ---
    let decided = tokio::time::timeout(Duration::from_secs(30), holder)
        .await
        .expect("held call answered")
        .unwrap();
    assert_eq!(decided["state"], "approved", "{decided}");
    assert_eq!(decided["comment"], "ok from console");
    assert_eq!(decided["decided_by"], "bootstrap-admin");
    let mut rx = w.subscribe();
    let seen = tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|c| {
            c.as_ref().is_some_and(|s| {
                s.snapshot
                    .killed("files", "read")
                    .is_some_and(|k| k.reason == "console drill")
                    && s.snapshot.tool_verdict("files", "delete") == ToolVerdict::Active
            })
        }),
    )
    .await
    .is_ok();
    assert!(
        seen,
        "the hub never got the console's kill and tool approval"
    );
    w.shutdown();
}
