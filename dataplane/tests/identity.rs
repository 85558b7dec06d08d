//! Identity and policy on the hub's path (issue 9), against real parts: the test OAuth issuer
//! (`meshgate-test-issuer`, a small real authorization server written for these tests: JWKS,
//! authorize + PKCE, token, dynamic registration, deliberately bad tokens on request), the
//! official TypeScript SDK client with its OAuth support, the loadtest mock upstream, and an
//! upstream that records the headers it gets.

// Tests drive the hub from plain threads, not monoio workers, so blocking sleeps are fine here.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loadtest::mock::{MockConfig, MockServer};
use support::*;

/// The test issuer (built with the workspace; built here when a narrower test run left it out).
fn issuer() -> (Proc, String) {
    let hub = PathBuf::from(env!("CARGO_BIN_EXE_meshgate"));
    let bin = hub.with_file_name("meshgate-test-issuer");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "governance", "--bin", "meshgate-test-issuer"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building meshgate-test-issuer failed");
    }
    let p = spawn_ready(Command::new(bin), "LISTENING ", Duration::from_secs(20));
    let url = p.line.trim_start_matches("LISTENING ").trim().to_string();
    (p, url)
}

/// A token minted by the issuer with `query` (sub, aud, roles, exp_in, iss, kid, alg…).
fn mint(issuer: &str, query: &str) -> String {
    let addr: SocketAddr = issuer.trim_start_matches("http://").parse().unwrap();
    let r = raw(
        addr,
        format!("GET /admin/mint?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.status, 200, "mint {query}: {}", r.text());
    r.text().trim().to_string()
}

/// A POST to the hub with a bearer token.
fn post_as(hub: &Hub, token: &str, sid: Option<&str>, body: &str) -> Resp {
    let auth = format!("Bearer {token}");
    post(hub, sid, body, &[("Authorization", &auth)])
}

fn initialize_as(hub: &Hub, token: &str) -> String {
    let r = post_as(
        hub,
        token,
        None,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
    );
    assert_eq!(r.status, 200, "initialize: {}", r.text());
    r.header("mcp-session-id").unwrap().to_string()
}

fn tools_as(hub: &Hub, token: &str, sid: &str) -> Vec<String> {
    let r = post_as(
        hub,
        token,
        Some(sid),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    );
    r.json()["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("tools/list: {}", r.text()))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn call_as(hub: &Hub, token: &str, sid: &str, name: &str, args: &str) -> serde_json::Value {
    let r = post_as(
        hub,
        token,
        Some(sid),
        &format!(
            r#"{{"jsonrpc":"2.0","id":"c","method":"tools/call","params":{{"name":"{name}","arguments":{args}}}}}"#
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.messages()
        .into_iter()
        .rev()
        .find(|m| m.get("id").is_some())
        .unwrap()
}

/// A real HTTP/1.1 MCP server on loopback that records the headers and bodies of every request
/// it gets. Tools: `whoami` (answers "recorded"), `secret` (a result carrying a card number and a
/// token, for redaction), `slow` (answers after 3 s, for the time bound).
struct Recorder {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Recorder {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (h, b) = (heads.clone(), bodies.clone());
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (h, b) = (h.clone(), b.clone());
                std::thread::spawn(move || Self::serve(conn, &h, &b));
            }
        });
        Self {
            addr,
            heads,
            bodies,
        }
    }

    /// `tools/call`s of `tool` the upstream received.
    fn calls_of(&self, tool: &str) -> usize {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["method"] == "tools/call" && v["params"]["name"] == tool)
            .count()
    }

    fn serve(conn: TcpStream, heads: &Mutex<Vec<String>>, bodies: &Mutex<Vec<serde_json::Value>>) {
        let mut w = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        loop {
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            heads.lock().unwrap().push(head);
            bodies.lock().unwrap().push(v.clone());
            let id = v["id"].clone();
            let answer = match v["method"].as_str() {
                _ if id.is_null() => {
                    let _ = w.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
                    continue;
                }
                Some("initialize") => format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"2025-11-25","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"rec","version":"1"}}}}}}"#
                ),
                Some("tools/list") => format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{{"name":"whoami","inputSchema":{{"type":"object"}}}},{{"name":"secret","inputSchema":{{"type":"object"}}}},{{"name":"slow","inputSchema":{{"type":"object"}}}}]}}}}"#
                ),
                Some("tools/call") if v["params"]["name"] == "secret" => format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":"card 4111-1111-1111-1111 on file"}}],"structuredContent":{{"token":"tok-abc","ok":true}}}}}}"#
                ),
                Some("tools/call") if v["params"]["name"] == "slow" => {
                    std::thread::sleep(Duration::from_secs(3));
                    format!(
                        r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":"late"}}]}}}}"#
                    )
                }
                Some("tools/call") => serde_json::json!({
                    "jsonrpc": "2.0", "id": id,
                    "result": {"content": [{"type": "text", "text": format!("recorded {}", v["params"]["arguments"])}]}
                })
                .to_string(),
                _ => format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#),
            };
            let out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: r1\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
            if w.write_all(out.as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// A fresh Ed25519 key file (audit signing, the user assertion).
fn key_file(dir: &std::path::Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    governance::keys::generate_key_file(&p).unwrap();
    p
}

#[test]
fn the_official_sdk_client_gets_a_token_through_the_oauth_flow_and_calls_tools() {
    let (_iss, iss_url) = issuer();
    let mock = MockServer::start(MockConfig::default()).unwrap();
    let port = closed_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let hub = start_hub(
        &format!("listen: 127.0.0.1:{port}\nworkers: 2\nauth:\n  resource: {resource}\n  jwt:\n    issuer: {iss_url}\nupstreams:\n  - name: mock\n    url: {}\n", mock.url()),
        "auto",
    );
    let (ok, out) = run_node(
        &[
            "oauth-client.mjs",
            "--url",
            &hub.url,
            "--tool",
            "mock__tool_0",
        ],
        Duration::from_secs(90),
    );
    println!("{out}");
    assert!(
        ok,
        "the SDK's OAuth flow through the hub failed:\n{out}\n--- hub ---\n{}",
        hub.stderr()
    );
    let report = CheckReport::parse(&out);
    assert!(
        report.failed.is_empty() && report.skipped.is_empty(),
        "{out}"
    );
    for must in [
        "unauthenticated request gets 401 with resource_metadata",
        "finishAuth exchanges the code for a token bound to the resource",
    ] {
        assert!(
            report.passed.iter().any(|p| p == must),
            "missing check {must:?}:\n{out}"
        );
    }
    assert!(report.passed.len() >= 6, "{out}");
    // Both RFC 9728 well-known paths serve the metadata.
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let r = raw(
            hub.addr,
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["resource"], resource.as_str(), "{path}");
    }
}

#[test]
fn principals_see_their_tools_keep_their_sessions_and_are_limited() {
    let (_iss, iss_url) = issuer();
    let mock = MockServer::start(MockConfig::default()).unwrap();
    let rec = Recorder::start();
    let dir = scratch("identity");
    let assertion_key = key_file(&dir, "assertion.key");
    let port = closed_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let hub = start_hub(
        &format!(
            "listen: 127.0.0.1:{port}\nworkers: 2\n\
             auth:\n  resource: {resource}\n  jwt:\n    issuer: {iss_url}\n\
             policy:\n  max_loop_steps: 6\n  loop_window: 1m\n  rate_limits:\n    per_principal:\n      rate: 40\n      per: 1m\n  tools:\n    - match: mock/tool_1\n      roles: [admin]\n\
             assertion:\n  key_file: {}\n  issuer: meshgate-test\n\
             credentials:\n  upstreams:\n    rec:\n      assertion: {{}}\n\
             upstreams:\n  - name: mock\n    url: {}\n  - name: rec\n    url: http://{}/mcp\n",
            assertion_key.display(),
            mock.url(),
            rec.addr
        ),
        "auto",
    );
    let tok =
        |sub: &str, roles: &str| mint(&iss_url, &format!("sub={sub}&roles={roles}&aud={resource}"));
    let alice = tok("alice", "viewer");
    let bob = tok("bob", "admin");

    // Two principals, two views of the tools; the hidden one is unknown when called.
    let a = initialize_as(&hub, &alice);
    let b = initialize_as(&hub, &bob);
    let alice_tools = tools_as(&hub, &alice, &a);
    let bob_tools = tools_as(&hub, &bob, &b);
    assert!(
        !alice_tools.iter().any(|t| t == "mock__tool_1"),
        "{alice_tools:?}"
    );
    assert!(
        bob_tools.iter().any(|t| t == "mock__tool_1"),
        "{bob_tools:?}"
    );
    assert!(alice_tools.iter().any(|t| t == "mock__tool_0"));
    let hidden = call_as(&hub, &alice, &a, "mock__tool_1", "{}");
    let missing = call_as(&hub, &alice, &a, "mock__no_such_tool", "{}");
    assert_eq!(hidden["error"]["code"], -32602, "{hidden}");
    assert_eq!(
        hidden["error"]["message"], "unknown tool: mock__tool_1",
        "{hidden}"
    );
    assert_eq!(missing["error"]["code"], -32602, "{missing}");
    assert!(call_as(&hub, &bob, &b, "mock__tool_1", "{}")["result"].is_object());

    // Another principal's session id is unknown (404).
    let r = post_as(
        &hub,
        &alice,
        Some(&b),
        r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
    );
    assert_eq!(r.status, 404, "{}", r.text());

    // Invalid arguments never reach the upstream.
    let calls = || {
        mock.stats()
            .calls
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = calls();
    let bad = call_as(&hub, &bob, &b, "mock__tool_0", r#"{"text":5}"#);
    assert_eq!(bad["result"]["isError"], true, "{bad}");
    let text = bad["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("/text"), "names the failing path: {text}");
    assert_eq!(calls(), before, "the upstream saw an invalid call");
    assert!(
        call_as(&hub, &bob, &b, "mock__tool_0", r#"{"text":"ok"}"#)["result"]["isError"] == false
    );

    // The loop lock fires at step 7 of a session (6 allowed in the window).
    let l = initialize_as(&hub, &bob);
    for i in 0..6 {
        let m = call_as(&hub, &bob, &l, "mock__tool_0", "{}");
        assert_eq!(m["result"]["isError"], false, "step {i}: {m}");
    }
    let locked = call_as(&hub, &bob, &l, "mock__tool_0", "{}");
    assert_eq!(locked["result"]["isError"], true, "{locked}");
    assert!(locked.to_string().contains("loop limit"), "{locked}");

    // The upstream gets the hub's assertion of the user, never the client's token.
    let who = call_as(&hub, &alice, &a, "rec__whoami", "{}");
    assert!(who["result"].is_object(), "{who}");
    let heads = rec.heads.lock().unwrap().join("\n");
    assert!(!heads.contains(&alice), "the client's token went upstream");
    assert!(
        !heads.to_ascii_lowercase().contains("authorization:"),
        "{heads}"
    );
    let assertion = heads
        .lines()
        .find_map(|l| {
            l.strip_prefix("X-Meshgate-Assertion: ")
                .or_else(|| l.strip_prefix("x-meshgate-assertion: "))
        })
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no assertion upstream:\n{heads}"));
    use base64::Engine;
    let payload = assertion.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert!(
        claims["sub"].as_str().unwrap().contains("alice"),
        "{claims}"
    );
    assert_eq!(claims["iss"], "meshgate-test", "{claims}");

    // A principal over its rate limit gets 429 with Retry-After; another is unaffected.
    let carol = tok("carol", "viewer");
    let mut limited = None;
    for _ in 0..60 {
        let r = post_as(
            &hub,
            &carol,
            None,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        );
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("carol was never rate limited");
    assert!(limited
        .header("retry-after")
        .is_some_and(|v| v.parse::<u64>().unwrap() >= 1));
    assert!(call_as(&hub, &alice, &a, "mock__tool_0", "{}")["result"].is_object());

    // Bad tokens: each a clear 401 with the challenge (431 for a huge one); the hub goes on.
    let bad_tokens = [
        (
            "expired",
            mint(&iss_url, &format!("sub=x&aud={resource}&exp_in=-600")),
        ),
        (
            "wrong audience",
            mint(&iss_url, "sub=x&aud=http://elsewhere/mcp"),
        ),
        (
            "wrong issuer",
            mint(
                &iss_url,
                &format!("sub=x&aud={resource}&iss=http://evil.example"),
            ),
        ),
        (
            "alg none",
            mint(&iss_url, &format!("sub=x&aud={resource}&alg=none")),
        ),
        (
            "unknown kid",
            mint(&iss_url, &format!("sub=x&aud={resource}&kid=nope")),
        ),
        ("garbage", "not.a.token".to_string()),
    ];
    for (what, t) in &bad_tokens {
        let r = post_as(&hub, t, None, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains("resource_metadata="),
            "{what}: {challenge}"
        );
    }
    let r = post(
        &hub,
        None,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        &[("Authorization", "Basic dXNlcjpwdw==")],
    );
    assert_eq!(r.status, 401, "Basic auth: {}", r.text());
    let r = post(
        &hub,
        None,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        &[],
    );
    assert_eq!(r.status, 401, "no token: {}", r.text());
    let huge = format!("Bearer {}", "a".repeat(10 * 1024 * 1024));
    let r = post(
        &hub,
        None,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        &[("Authorization", &huge)],
    );
    assert_eq!(r.status, 431, "a 10 MB token");
    assert!(
        call_as(&hub, &bob, &b, "mock__tool_0", "{}")["result"].is_object(),
        "the hub goes on"
    );
}

#[test]
fn approvals_are_held_decided_and_timed_out_and_everything_is_audited() {
    let mock = MockServer::start(MockConfig::default()).unwrap();
    let dir = scratch("approvals");
    let audit_key = key_file(&dir, "audit.key");
    let log = dir.join("audit.jsonl");
    let user_key = "user-key-123";
    let admin_key = "admin-key-456";
    let hash = governance::identity::hash_api_key;
    let port = closed_port();
    let hub = start_hub(
        &format!(
            "listen: 127.0.0.1:{port}\nworkers: 2\n\
             auth:\n  resource: http://127.0.0.1:{port}/mcp\n  api_keys:\n    - name: user\n      hash: \"{}\"\n\
             admin:\n  api_keys: [\"{}\"]\n\
             policy:\n  tools:\n    - match: mock/tool_2\n      requires_approval: true\n      approval_timeout: 3s\n\
             audit:\n  path: {}\n  key_file: {}\n\
             upstreams:\n  - name: mock\n    url: {}\n",
            hash(user_key),
            hash(admin_key),
            log.display(),
            audit_key.display(),
            mock.url()
        ),
        "auto",
    );
    let sid = initialize_as(&hub, user_key);
    let admin = |method: &str, path: &str, body: &str| {
        raw(
            hub.addr,
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {admin_key}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
            Duration::from_secs(10),
        )
        .unwrap()
    };
    let pending = || -> Vec<String> {
        admin("GET", "/admin/approvals", "")
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    // Without the admin key the endpoint refuses.
    let r = raw(
        hub.addr,
        format!(
            "GET /admin/approvals HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.status, 401);
    let held_call = || {
        let addr = hub.addr;
        let sid = sid.clone();
        std::thread::spawn(move || {
            let r = post(
                &addr,
                Some(&sid),
                r#"{"jsonrpc":"2.0","id":"h","method":"tools/call","params":{"name":"mock__tool_2","arguments":{}}}"#,
                &[("Authorization", &format!("Bearer {user_key}"))],
            );
            r.messages()
                .into_iter()
                .rev()
                .find(|m| m["id"] == "h")
                .unwrap()
        })
    };
    let wait_pending = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let p = pending();
            if p.len() >= n || Instant::now() > deadline {
                return p;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Held, then approved: the call runs.
    let t = held_call();
    let ids = wait_pending(1);
    assert_eq!(ids.len(), 1, "one call held");
    let r = admin(
        "POST",
        &format!("/admin/approvals/{}", ids[0]),
        r#"{"outcome":"approved","by":"ops","comment":"fine"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let approved = t.join().unwrap();
    assert_eq!(approved["result"]["isError"], false, "{approved}");
    // Held, then rejected: a tool result saying so.
    let t = held_call();
    let ids = wait_pending(1);
    admin(
        "POST",
        &format!("/admin/approvals/{}", ids[0]),
        r#"{"outcome":"rejected","by":"ops","comment":"not today"}"#,
    );
    let rejected = t.join().unwrap();
    assert_eq!(rejected["result"]["isError"], true, "{rejected}");
    assert!(rejected.to_string().contains("not today"), "{rejected}");
    // Held, nobody decides: it times out (= denied).
    let expired = held_call().join().unwrap();
    assert_eq!(expired["result"]["isError"], true, "{expired}");
    assert!(expired.to_string().contains("in time"), "{expired}");
    // Every outcome and the call that ran are in the audit log.
    let deadline = Instant::now() + Duration::from_secs(10);
    let kinds = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let kinds: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["kind"].as_str().map(str::to_string))
            .collect();
        let has = |k: &str| kinds.iter().filter(|x| *x == k).count();
        if (has("approval_held") >= 3
            && has("approval_approved") >= 1
            && has("approval_rejected") >= 1
            && has("approval_expired") >= 1
            && has("tool_call") >= 1)
            || Instant::now() > deadline
        {
            break kinds;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for k in [
        "approval_held",
        "approval_approved",
        "approval_rejected",
        "approval_expired",
        "tool_call",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} record: {kinds:?}");
    }
    // Let the signed head catch up with the last record before stopping the hub: a record
    // written in the instant before a kill is valid but unanchored, and cutting it is the one
    // truncation the head cannot see (the audit module's documented crash window).
    let head = dir.join("audit.jsonl.head");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count() as u64;
        let head_seq = std::fs::read_to_string(&head)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["seq"].as_u64());
        if head_seq == Some(records) || Instant::now() > deadline {
            assert_eq!(head_seq, Some(records), "the head names the last record");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(hub);

    // `meshgate audit verify` passes on the real log and names each kind of tampering.
    let verify = |file: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .args(["audit", "verify"])
            .arg(file)
            .arg("--key")
            .arg(&audit_key)
            .output()
            .unwrap()
    };
    let ok = verify(&log);
    assert!(
        ok.status.success(),
        "a real log verifies: {}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let original = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() >= 6, "{original}");
    let tamper = |name: &str, text: String| {
        let f = dir.join(format!("{name}.jsonl"));
        std::fs::write(&f, text).unwrap();
        // The signed head goes with the log it was written for.
        let head_copy = dir.join(format!("{name}.jsonl.head"));
        if head.exists() {
            std::fs::copy(&head, &head_copy).unwrap();
        }
        let out = verify(&f);
        assert!(
            !out.status.success(),
            "{name} was not detected: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let changed = original.replacen("approval_held", "approval_hele", 1);
    println!("{}", tamper("changed", changed));
    let mut removed = lines.clone();
    removed.remove(2);
    println!("{}", tamper("removed", removed.join("\n") + "\n"));
    let mut inserted = lines.clone();
    inserted.insert(2, lines[1]);
    println!("{}", tamper("inserted", inserted.join("\n") + "\n"));
    let truncated = lines[..lines.len() - 1].join("\n") + "\n";
    println!("{}", tamper("truncated", truncated));
}

#[test]
fn tool_rules_cache_results_bound_calls_and_redact_what_leaves_the_hub() {
    let (_iss, iss_url) = issuer();
    let rec = Recorder::start();
    // Two upstreams answering over SSE: one whose result text carries an account id, one slow.
    let tagged = MockServer::start(MockConfig {
        sse: true,
        tag_results: true,
        server_name: "acct-0042-secret".into(),
        ..MockConfig::default()
    })
    .unwrap();
    let slow_sse = MockServer::start(MockConfig {
        sse: true,
        service_time: loadtest::mock::ServiceTime::Fixed(Duration::from_secs(3)),
        ..MockConfig::default()
    })
    .unwrap();
    let dir = scratch("guard");
    let audit_key = key_file(&dir, "audit.key");
    let log = dir.join("audit.jsonl");
    let port = closed_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let hub = start_hub(
        &format!(
            "listen: 127.0.0.1:{port}\nworkers: 2\n\
             auth:\n  resource: {resource}\n  jwt:\n    issuer: {iss_url}\n\
             policy:\n  tools:\n\
             \x20   - match: rec/whoami\n      cache_ttl_seconds: 60\n\
             \x20   - match: rec/secret\n      redact:\n        - pattern: '\\d{{4}}-\\d{{4}}-\\d{{4}}-\\d{{4}}'\n        - pointer: /token\n\
             \x20   - match: rec/slow\n      max_execution_timeout_ms: 300\n\
             \x20   - match: tagged/tool_0\n      redact:\n        - pattern: 'acct-\\d{{4}}-secret'\n\
             \x20   - match: slowsse/tool_0\n      max_execution_timeout_ms: 300\n\
             audit:\n  path: {}\n  key_file: {}\n\
             upstreams:\n  - name: rec\n    url: http://{}/mcp\n  - name: tagged\n    url: {}\n  - name: slowsse\n    url: {}\n",
            log.display(),
            audit_key.display(),
            rec.addr,
            tagged.url(),
            slow_sse.url()
        ),
        "auto",
    );
    let tok = |sub: &str| mint(&iss_url, &format!("sub={sub}&roles=viewer&aud={resource}"));
    let (alice, bob) = (tok("alice"), tok("bob"));
    let a = initialize_as(&hub, &alice);
    let b = initialize_as(&hub, &bob);

    // cache_ttl_seconds: the same call by the same principal is answered by the hub.
    let first = call_as(&hub, &alice, &a, "rec__whoami", r#"{"x":1}"#);
    let again = call_as(&hub, &alice, &a, "rec__whoami", r#"{"x":1}"#);
    assert_eq!(first["result"], again["result"], "{first} / {again}");
    assert!(
        first.to_string().contains(r#"recorded {\"x\":1}"#),
        "{first}"
    );
    assert_eq!(
        rec.calls_of("whoami"),
        1,
        "the second call reached the upstream"
    );
    // Other arguments, or another principal, are not served from it.
    let other = call_as(&hub, &alice, &a, "rec__whoami", r#"{"x":2}"#);
    assert!(
        other.to_string().contains(r#"recorded {\"x\":2}"#),
        "{other}"
    );
    assert_eq!(rec.calls_of("whoami"), 2);
    let bobs = call_as(&hub, &bob, &b, "rec__whoami", r#"{"x":1}"#);
    assert!(bobs["result"].is_object(), "{bobs}");
    assert_eq!(
        rec.calls_of("whoami"),
        3,
        "a cached result was shared across principals"
    );

    // redact: the card number (regex over text) and the token (pointer into
    // structuredContent) never leave the hub; the rest does.
    let secret = call_as(&hub, &alice, &a, "rec__secret", "{}");
    let text = secret["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(text, "card [REDACTED] on file", "{secret}");
    assert_eq!(
        secret["result"]["structuredContent"]["token"], "[REDACTED]",
        "{secret}"
    );
    assert_eq!(
        secret["result"]["structuredContent"]["ok"], true,
        "{secret}"
    );
    assert!(!secret.to_string().contains("4111"), "{secret}");
    assert!(!secret.to_string().contains("tok-abc"), "{secret}");

    // The same on a streamed (SSE) result: the final response is redacted before it is relayed.
    let streamed = call_as(&hub, &alice, &a, "tagged__tool_0", "{}");
    let text = streamed["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.starts_with("[REDACTED]:x"), "{streamed}");
    assert!(!streamed.to_string().contains("acct-0042"), "{streamed}");
    // And a streamed call past its bound is a tool error too.
    let slow = call_as(&hub, &alice, &a, "slowsse__tool_0", "{}");
    assert_eq!(slow["result"]["isError"], true, "{slow}");
    assert!(
        slow.to_string()
            .contains("maximum execution time of 300 ms"),
        "{slow}"
    );

    // max_execution_timeout_ms: past 300 ms the client gets a tool error and the upstream is
    // told to cancel that very request.
    let slow = call_as(&hub, &alice, &a, "rec__slow", "{}");
    assert_eq!(slow["result"]["isError"], true, "{slow}");
    assert!(
        slow.to_string()
            .contains("maximum execution time of 300 ms"),
        "{slow}"
    );
    let slow_id = rec
        .bodies
        .lock()
        .unwrap()
        .iter()
        .find(|v| v["method"] == "tools/call" && v["params"]["name"] == "slow")
        .map(|v| v["id"].clone())
        .expect("the slow call reached the upstream");
    let deadline = Instant::now() + Duration::from_secs(10);
    let cancelled = loop {
        let seen = rec.bodies.lock().unwrap().iter().any(|v| {
            v["method"] == "notifications/cancelled" && v["params"]["requestId"] == slow_id
        });
        if seen || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        cancelled,
        "the upstream was not told to cancel request {slow_id}"
    );
    // The hub goes on.
    let after = call_as(&hub, &alice, &a, "rec__whoami", r#"{"x":3}"#);
    assert!(after["result"].is_object(), "{after}");

    // Each redaction and the time-out are in the audit log.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("\"guardrail\"") && text.contains("maximum execution time")
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("\"kind\":\"guardrail\""), "{text}");
    assert!(text.contains("result redacted"), "{text}");
    assert!(text.contains("maximum execution time exceeded"), "{text}");
}

#[test]
fn a_hub_shutdown_denies_held_calls_with_a_reason_and_closes_the_audit_log() {
    let mock = MockServer::start(MockConfig::default()).unwrap();
    let dir = scratch("shutdown");
    let audit_key = key_file(&dir, "audit.key");
    let log = dir.join("audit.jsonl");
    let user_key = "user-key-789";
    let port = closed_port();
    let mut hub = start_hub(
        &format!(
            "listen: 127.0.0.1:{port}\nworkers: 2\n\
             auth:\n  resource: http://127.0.0.1:{port}/mcp\n  api_keys:\n    - name: user\n      hash: \"{}\"\n\
             policy:\n  tools:\n    - match: mock/tool_1\n      requires_approval: true\n      approval_timeout: 1m\n\
             audit:\n  path: {}\n  key_file: {}\n\
             upstreams:\n  - name: mock\n    url: {}\n",
            governance::identity::hash_api_key(user_key),
            log.display(),
            audit_key.display(),
            mock.url()
        ),
        "auto",
    );
    let sid = initialize_as(&hub, user_key);
    let addr = hub.addr;
    let held = std::thread::spawn(move || {
        post(
            &addr,
            Some(&sid),
            r#"{"jsonrpc":"2.0","id":"s","method":"tools/call","params":{"name":"mock__tool_1","arguments":{}}}"#,
            &[("Authorization", &format!("Bearer {user_key}"))],
        )
    });
    // Held once its record is in the log.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("approval_held")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGTERM: the held call is denied with the reason, and the hub exits on its own.
    let pid = hub.child.id().to_string();
    let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(st.success());
    let r = held.join().unwrap();
    let answer = r
        .messages()
        .into_iter()
        .rev()
        .find(|m| m["id"] == "s")
        .unwrap_or_else(|| panic!("no answer to the held call: {}", r.text()));
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(
        answer.to_string().contains("the hub is shutting down"),
        "{answer}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        match hub.child.try_wait().unwrap() {
            Some(status) => break Some(status),
            None if Instant::now() > deadline => break None,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert!(
        exited.is_some_and(|s| s.success()),
        "the hub did not exit cleanly: {exited:?}"
    );
    // The denial is audited, and the closed log verifies with nothing unanchored.
    let text = std::fs::read_to_string(&log).unwrap();
    let rejected = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["kind"] == "approval_rejected")
        .unwrap_or_else(|| panic!("no approval_rejected record:\n{text}"));
    assert_eq!(rejected["reason"], "the hub is shutting down", "{rejected}");
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["audit", "verify"])
        .arg(&log)
        .arg("--key")
        .arg(&audit_key)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("unanchored: 0"), "{said}");
}
