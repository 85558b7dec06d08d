//! Bad input through the binary: a clear message and a non-zero exit, never a hang.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary with `args`, killing it after 20 s; returns (exit code, stderr).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshgate-load"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("meshgate-load {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unreachable_target() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let (code, err) = run(&["run", &url, "--duration", "1s", "--quiet"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("unreachable") && err.contains("connection refused"),
        "{err}"
    );
}

#[test]
fn too_many_sessions_for_the_fd_limit_is_said_plainly() {
    let (code, err) = run(&[
        "run",
        "http://127.0.0.1:1/mcp",
        "--sessions",
        "10000000",
        "--quiet",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("open files but the hard limit is"), "{err}");
}

#[test]
fn target_that_is_not_mcp() {
    // A plain web server answering every request with an HTML page.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(4) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "<html>hello</html>";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let url = format!("http://127.0.0.1:{port}/mcp");
    let (code, err) = run(&["run", &url, "--duration", "1s", "--quiet"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("does not look like an MCP endpoint"), "{err}");
}

#[test]
fn target_that_never_answers() {
    // Accepts and then says nothing: the probe times out instead of hanging.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let (code, err) = run(&[
        "run",
        &url,
        "--duration",
        "1s",
        "--timeout",
        "1s",
        "--quiet",
    ]);
    drop(l);
    assert_eq!(code, Some(2));
    assert!(err.contains("did not answer"), "{err}");
}

#[test]
fn invalid_scenario_file() {
    let dir = std::env::temp_dir().join(format!("mgl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.toml");
    std::fs::write(&p, "target = \"http://127.0.0.1:1/mcp\"\nsesions = 4\n").unwrap();
    let (code, err) = run(&["run", "--file", p.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("invalid scenario file") && err.contains("sesions"),
        "{err}"
    );
    let (code, err) = run(&["run", "--file", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot read scenario file"), "{err}");
    let (code, err) = run(&["run", "ftp://x/mcp", "--quiet"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("only http://"), "{err}");
}

#[test]
fn mock_and_run_end_to_end_with_json_and_plot() {
    let mut mock = Command::new(env!("CARGO_BIN_EXE_meshgate-load"))
        .args(["mock", "--listen", "127.0.0.1:0", "--service-time", "1ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = mock.stdout.take().unwrap();
    let mut banner = Vec::new();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        banner.push(byte[0]);
    }
    let banner = String::from_utf8(banner).unwrap();
    let url = banner
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    let dir = std::env::temp_dir().join(format!("mgl-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("r.json"), dir.join("r.svg"));
    let (code, err) = run(&[
        "run",
        &url,
        "--compare",
        &url,
        "--sessions",
        "2",
        "--rate",
        "100",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    mock.kill().unwrap();
    let _ = mock.wait();
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.iter().filter(|r| r["metric"] == "call").count(), 2);
    assert_eq!(
        results.iter().filter(|r| r["metric"] == "send_lag").count(),
        2
    );
    assert!(v["results"][0]["p50_ms"].as_f64().unwrap() >= 1.0);
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
}

/// The suite's whole matrix at 1/100 scale, with a second mock standing in for the hub:
/// every case runs, ratios are printed, and JSON + SVG files are written.
#[test]
fn suite_smoke_with_hub_stand_in() {
    use loadtest::mock::{MockConfig, MockServer};
    let direct = MockServer::start(MockConfig::default()).unwrap();
    let hub = MockServer::start(MockConfig::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("mgl-suite-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshgate-load"))
        .args([
            "suite",
            "--direct",
            &direct.url(),
            "--hub",
            &hub.url(),
            "--scale",
            "100",
        ])
        .args(["--duration", "1s", "--out", dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("suite hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "{out}");
    assert_eq!(out.matches("ratio B/A call").count(), 4, "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("suite.json")).unwrap()).unwrap();
    assert_eq!(v["cases"].as_array().unwrap().len(), 6);
    assert_eq!(v["stream_ratios"].as_array().unwrap().len(), 5);
    assert!(
        out.contains("ratio hub/direct streams-10k delivery"),
        "{out}"
    );
    assert!(dir.join("streams-10k-hub.svg").exists());
}
