//! The official MCP TypeScript SDK client (`dataplane/tests/node/oauth-client.mjs`) completes
//! the OAuth flow against a minimal MCP endpoint protected by the real `identity` module, with
//! tokens from the real test issuer: 401 → RFC 9728 metadata → RFC 8414 discovery → dynamic
//! registration → authorize (PKCE) → token → tools/list and tools/call succeed.
//!
//! The endpoint here is a stand-in for the hub (which gets its `identify` stage from the lead):
//! a small hyper server answering initialize / tools/list / tools/call in JSON, whose only
//! security is `Authenticator::authenticate` and its 401 challenge.
// Test code: unwraps are assertions, and the stand-in servers run on plain tokio threads.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use governance::identity::{AuthConfig, Authenticator};
use governance::net::NetRuntime;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use support::Issuer;

fn respond(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body.into()))
        .unwrap()
}

async fn serve(
    a: Authenticator,
    authorized: Arc<AtomicUsize>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if a.well_known_paths().contains(&path) {
        return Ok(respond(
            StatusCode::OK,
            "application/json",
            a.protected_resource_metadata().to_vec(),
        ));
    }
    if path != "/mcp" {
        return Ok(respond(StatusCode::NOT_FOUND, "text/plain", "not found"));
    }
    if req.method() != hyper::Method::POST {
        return Ok(respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "POST only",
        ));
    }
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let principal = match a.authenticate(header.as_deref()).await {
        Ok(p) => p,
        Err(e) => {
            return Ok(Response::builder()
                .status(e.status())
                .header("www-authenticate", a.challenge_401(&e))
                .body(Full::new(Bytes::new()))
                .unwrap())
        }
    };
    authorized.fetch_add(1, Ordering::Relaxed);
    let body = Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return Ok(respond(StatusCode::BAD_REQUEST, "text/plain", "not JSON")),
    };
    let Some(id) = msg.get("id").cloned() else {
        return Ok(respond(StatusCode::ACCEPTED, "text/plain", ""));
    };
    let result = match msg["method"].as_str().unwrap_or("") {
        "initialize" => json!({
            "protocolVersion": msg["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "protected-stand-in", "version": "0.1.0"}
        }),
        "ping" => json!({}),
        "tools/list" => {
            json!({"tools": [{"name": "whoami", "description": "the caller's principal",
                                           "inputSchema": {"type": "object"}}]})
        }
        "tools/call" => json!({"content": [{"type": "text",
            "text": format!("{} roles={}", principal.binding(), principal.roles.join(","))}]}),
        other => {
            let e = json!({"jsonrpc": "2.0", "id": id,
                           "error": {"code": -32601, "message": format!("no method {other}")}});
            return Ok(respond(StatusCode::OK, "application/json", e.to_string()));
        }
    };
    let out = json!({"jsonrpc": "2.0", "id": id, "result": result});
    Ok(respond(StatusCode::OK, "application/json", out.to_string()))
}

#[test]
fn the_official_sdk_client_completes_the_oauth_flow() {
    let kit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/node");
    let node = kit.join("node_modules/node/bin/node");
    assert!(
        node.exists(),
        "the Node test kit is not installed: run `npm ci --prefix dataplane/tests/node`"
    );
    let issuer = Issuer::start(&["--roles", "ops,viewer"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let cfg: AuthConfig = serde_json::from_value(json!({
        "resource": resource,
        "scopes_supported": ["mcp:tools"],
        "jwt": {"issuer": issuer.url}
    }))
    .unwrap();
    let a = Authenticator::new(&cfg, Some(NetRuntime::start(None).unwrap())).unwrap();
    a.wait_ready(Duration::from_secs(20)).expect("JWKS loaded");
    let authorized = Arc::new(AtomicUsize::new(0));
    let (a2, c2) = (a.clone(), authorized.clone());
    std::thread::spawn(move || {
        rt.block_on(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (a, c) = (a2.clone(), c2.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |r| serve(a.clone(), c.clone(), r));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        })
    });

    let mut child = Command::new(&node)
        .arg(kit.join("oauth-client.mjs"))
        .args([
            "--url",
            &resource,
            "--tool",
            "whoami",
            "--timeout-ms",
            "60000",
        ])
        .args([
            "--expect",
            &format!("jwt:{}#alice roles=ops,viewer", issuer.url),
        ])
        .current_dir(&kit)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("oauth-client.mjs did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "oauth-client.mjs failed");
    assert!(
        stdout.lines().any(|l| l == "8 passed, 0 failed"),
        "{stdout}"
    );
    for check in [
        "ok - unauthenticated request gets 401 with resource_metadata",
        "ok - SDK discovers, registers a client and asks for authorization",
        "ok - finishAuth exchanges the code for a token bound to the resource",
        "ok - calls whoami",
    ] {
        assert!(stdout.contains(check), "missing `{check}`");
    }
    // The issuer minted the user's token; the endpoint saw authorized requests only with it.
    assert!(issuer.stats()["tokens"].as_u64().unwrap() >= 1);
    assert!(
        authorized.load(Ordering::Relaxed) >= 3,
        "initialize, tools/list, tools/call"
    );
}
