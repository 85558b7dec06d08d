//! `meshgate-edge run` end to end through the real tunnel: certificates from
//! `meshgate-edge pki quickstart`, a hub acceptor from `meshgate-tunnel` in the test, the agent
//! dialing it and serving announce and MCP over hub-opened streams. Loopback only, bounded waits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use meshgate_tunnel::hub::{Acceptor, EdgeLink, HubConfig};
use meshgate_tunnel::TlsFiles;
use serde_json::Value;
use support::{everything_entry, TempDir};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(30);

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.0.id().to_string())
            .stderr(Stdio::null())
            .status();
        for _ in 0..250 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn send(
    link: &EdgeLink,
    method: &str,
    path: &str,
    sid: Option<&str>,
    body: &str,
) -> (u16, Option<String>, String) {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "edge")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(s) = sid {
        b = b.header("mcp-session-id", s);
    }
    let req = b.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let resp = timeout(T, link.send(req))
        .await
        .expect("tunnel request timed out")
        .unwrap();
    let status = resp.status().as_u16();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = timeout(T, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    (status, sid, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_the_surface_through_the_tunnel() {
    let dir = TempDir::new("tunnel");
    let pki = dir.0.join("pki");
    let out = Command::new(support::bin())
        .args(["pki", "quickstart", "--out"])
        .arg(&pki)
        .args([
            "--hub-name",
            "localhost",
            "--hub-name",
            "127.0.0.1",
            "--edge",
            "edge-t",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cfg = HubConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        TlsFiles {
            ca: pki.join("ca.pem"),
            cert: pki.join("hub.pem"),
            key: pki.join("hub-key.pem"),
        },
    );
    let mut acc = Acceptor::bind(cfg).await.unwrap();
    let yaml = format!(
        "edge: {{ id: edge-t }}\nhub: {{ addr: '127.0.0.1:{}', server_name: localhost, ca: pki/ca.pem, cert: pki/edge-t.pem, key: pki/edge-t-key.pem, transport: auto, backoff_max: 1s }}\nservers:\n{}",
        acc.local_addr().port(),
        everything_entry("everything", "")
    );
    let cfg_path = dir.0.join("edge.yaml");
    std::fs::write(&cfg_path, yaml).unwrap();
    let _agent = Killed(
        Command::new(support::bin())
            .args(["run", "--config"])
            .arg(&cfg_path)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );

    let link = timeout(T, acc.accept())
        .await
        .expect("edge did not connect")
        .unwrap();
    assert_eq!(link.edge_id(), "edge-t");

    let (status, _, body) = send(&link, "GET", "/meshgate/edge/announce", None, "").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["edge"], "edge-t");
    assert_eq!(v["servers"][1]["name"], "everything");

    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"hub","version":"1"}}}"#;
    for server in ["device", "everything"] {
        let path = format!("/mcp/{server}");
        let (status, sid, body) = send(&link, "POST", &path, None, init).await;
        assert_eq!(status, 200, "{body}");
        let sid = sid.expect("session id");
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let (status, _, body) = send(&link, "POST", &path, Some(&sid), call).await;
        assert_eq!(status, 200);
        assert!(body.contains("\"tools\""), "{server}: {body}");
    }
    let echo = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"via tunnel"}}}"#;
    let (_, sid, _) = send(&link, "POST", "/mcp/everything", None, init).await;
    let (status, _, body) = send(&link, "POST", "/mcp/everything", sid.as_deref(), echo).await;
    assert_eq!(status, 200);
    assert!(body.contains("Echo: via tunnel"), "{body}");
}
