//! The request path's correctness defects, each against real processes and sockets: the shared
//! catalog (N sessions × M upstreams make M list fetches), a call sent at most once when its
//! connection breaks after the write, server→client requests the client never answers,
//! cancellation ending the relay, batches that carry a server→client request, and upstream
//! host names resolved again (a network namespace with its own `hosts` file).

// Tests drive the hub from plain threads, not monoio workers, so blocking sleeps are fine here.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::mock::{MockConfig, MockServer};
use support::*;

// === helpers ===

/// Opens a request whose answer is read incrementally (`Connection: close`, so the end of the
/// answer is the end of the connection).
fn open(hub: SocketAddr, sid: &str, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(hub).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {hub}\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nConnection: close\r\nMcp-Session-Id: {sid}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    s
}

/// What has arrived on an open answer so far.
struct Incoming {
    raw: Vec<u8>,
    closed: bool,
}

impl Incoming {
    fn new() -> Self {
        Self {
            raw: Vec::new(),
            closed: false,
        }
    }

    /// Reads until `done(messages)` or the connection closes, within `within`.
    fn until(
        &mut self,
        s: &mut TcpStream,
        within: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        let mut tmp = [0u8; 8192];
        loop {
            let msgs = self.messages();
            if done(&msgs) || self.closed || Instant::now() >= deadline {
                return msgs;
            }
            match s.read(&mut tmp) {
                Ok(0) => self.closed = true,
                Ok(n) => self.raw.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.closed = true,
            }
        }
    }

    /// The JSON-RPC messages in the `data:` lines seen so far (chunk-size lines are skipped).
    fn messages(&self) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&self.raw)
            .split(['\n', '\r'])
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect()
    }
}

fn has_id(msgs: &[serde_json::Value], id: &str) -> bool {
    msgs.iter()
        .any(|m| m["id"] == id && m.get("method").is_none())
}

fn node_server(script: &str) -> (Proc, String) {
    let (node, kit) = require_node_kit();
    let mut cmd = Command::new(node);
    cmd.current_dir(&kit).arg(script).args(["--port", "0"]);
    let p = spawn_ready(cmd, "LISTENING ", Duration::from_secs(30));
    let url = p.line.trim_start_matches("LISTENING ").trim().to_string();
    (p, url)
}

/// `initialize` declaring `capabilities`, then `notifications/initialized`.
fn initialize_with(hub: &Hub, version: &str, capabilities: &str) -> String {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"{version}","capabilities":{capabilities},"clientInfo":{{"name":"rust-test","version":"1"}}}}}}"#
    );
    let r = post(hub, None, &body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let sid = r.header("mcp-session-id").unwrap().to_string();
    let n = post(
        hub,
        Some(&sid),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        &[],
    );
    assert_eq!(n.status, 202);
    sid
}

// === the shared catalog ===

#[test]
fn two_hundred_sessions_over_ten_upstreams_make_ten_list_fetches() {
    let mocks: Vec<_> = (0..10)
        .map(|_| MockServer::start(MockConfig::default()).unwrap())
        .collect();
    let mut yaml =
        String::from("listen: 127.0.0.1:0\nworkers: 2\nlist_page_size: 1000\nupstreams:\n");
    for (i, m) in mocks.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: m{i}\n    url: {}\n    health_interval: 60s\n",
            m.url()
        ));
    }
    let hub = Arc::new(start_hub(&yaml, "auto"));
    // 200 sessions, 8 at a time, each listing tools twice.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let sid = initialize(&*hub, "2025-11-25");
                    for _ in 0..2 {
                        let r = post(
                            &*hub,
                            Some(&sid),
                            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
                            &[],
                        );
                        let tools = r.json()["result"]["tools"].as_array().unwrap().len();
                        assert_eq!(tools, 100, "every upstream's 10 tools are listed");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let fetches: Vec<u64> = mocks
        .iter()
        .map(|m| m.stats().lists.load(Ordering::Relaxed))
        .collect();
    println!("tools/list fetches per upstream for 200 sessions: {fetches:?}");
    assert_eq!(
        fetches,
        vec![1; 10],
        "one fetch per upstream (not per session); hub log:\n{}",
        hub.stderr()
    );
}

// === a call is sent at most once ===

/// A real HTTP/1.1 MCP server on loopback that misbehaves on purpose: it answers the handshake
/// and lists over kept-alive connections, and on `tools/call` reads the whole request, counts
/// it, and closes the connection without answering (as a server that crashed mid-call would).
struct DroppingUpstream {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
}

impl DroppingUpstream {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let c = c.clone();
                std::thread::spawn(move || Self::serve(conn, &c));
            }
        });
        Self { addr, calls }
    }

    fn serve(conn: TcpStream, calls: &AtomicU64) {
        let mut w = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        loop {
            let mut len = 0usize;
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                if h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let body = String::from_utf8_lossy(&body).to_string();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let id = v["id"].clone();
            let answer = match v["method"].as_str() {
                Some("initialize") => format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"2025-11-25","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"dropper","version":"1"}}}}}}"#
                ),
                Some("tools/list") => format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{{"tools":[{{"name":"pay","inputSchema":{{"type":"object"}}}},{{"name":"look","inputSchema":{{"type":"object"}},"annotations":{{"readOnlyHint":true}}}}]}}}}"#
                ),
                Some("tools/call") => {
                    calls.fetch_add(1, Ordering::SeqCst);
                    return; // the connection closes here, unanswered
                }
                Some(_) if !id.is_null() => {
                    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#)
                }
                _ => {
                    let _ = w.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
                    continue;
                }
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: s1\r\nContent-Length: {}\r\n\r\n",
                answer.len()
            );
            if w.write_all(head.as_bytes()).is_err() || w.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }
}

#[test]
fn a_tools_call_is_not_sent_again_when_its_connection_breaks_after_the_write() {
    let up = DroppingUpstream::start();
    let hub = start_hub(
        &format!(
            "listen: 127.0.0.1:0\nworkers: 1\nupstreams:\n  - name: d\n    url: http://{}/mcp\n    health_interval: 60s\n    eject_after: 100\n",
            up.addr
        ),
        "auto",
    );
    let sid = initialize(&hub, "2025-11-25");
    // The list goes over a kept-alive connection, which the call then reuses.
    let l = post(
        &hub,
        Some(&sid),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        &[],
    );
    assert_eq!(l.json()["result"]["tools"].as_array().unwrap().len(), 2);
    let m = call_tool(&hub, &sid, "d__pay", "{}");
    assert_eq!(m["error"]["code"], -32603, "{m}");
    let msg = m["error"]["message"].as_str().unwrap();
    assert!(msg.contains("may or may not have run"), "{m}");
    assert_eq!(
        up.calls.load(Ordering::SeqCst),
        1,
        "a tools/call that may have been delivered was sent again; hub log:\n{}",
        hub.stderr()
    );
    // A read-only tool may run twice: it is sent again (and fails again here, clearly).
    let before = up.calls.load(Ordering::SeqCst);
    let m = call_tool(&hub, &sid, "d__look", "{}");
    assert_eq!(m["error"]["code"], -32603, "{m}");
    assert!(
        up.calls.load(Ordering::SeqCst) >= before + 2,
        "a read-only call is retried"
    );
}

// === server→client requests the client never answers ===

#[test]
fn a_server_request_the_client_never_answers_gets_the_upstream_an_error() {
    let (_fx, url) = node_server("fixture-server.mjs");
    let hub = start_hub(
        &format!("listen: 127.0.0.1:0\nworkers: 1\nsession:\n  pending_timeout: 1s\nupstreams:\n  - name: fx\n    url: {url}\n"),
        "auto",
    );
    let sid = initialize_with(&hub, "2025-11-25", r#"{"sampling":{}}"#);
    let mut s = open(
        hub.addr,
        &sid,
        r#"{"jsonrpc":"2.0","id":"s1","method":"tools/call","params":{"name":"fx__test_sampling","arguments":{"prompt":"hi"}}}"#,
    );
    let mut inc = Incoming::new();
    let msgs = inc.until(&mut s, Duration::from_secs(10), |m| {
        m.iter().any(|x| x["method"] == "sampling/createMessage")
    });
    assert!(
        msgs.iter().any(|x| x["method"] == "sampling/createMessage"),
        "the sampling request reaches the client: {msgs:?}"
    );
    // Nobody answers it. The fixture itself would wait 30 s; the hub gives up after 1 s and
    // tells the upstream, whose tool then ends with an error the client can read.
    let msgs = inc.until(&mut s, Duration::from_secs(15), |m| has_id(m, "s1"));
    let last = msgs
        .iter()
        .find(|m| m["id"] == "s1" && m.get("method").is_none());
    let last = last.unwrap_or_else(|| {
        panic!(
            "no answer after the hub gave up: {msgs:?}\n{}",
            hub.stderr()
        )
    });
    let text = last.to_string();
    assert!(
        last["result"]["isError"] == true || last.get("error").is_some(),
        "the call ends in an error: {text}"
    );
    assert!(
        hub.stderr().contains("did not answer within"),
        "the hub says why"
    );
}

// === cancellation ===

#[test]
fn a_cancelled_call_ends_its_stream_at_once_with_no_response() {
    let (_fx, url) = node_server("fixture-server.mjs");
    let hub = start_hub(
        &format!("listen: 127.0.0.1:0\nworkers: 1\nupstreams:\n  - name: fx\n    url: {url}\n"),
        "auto",
    );
    let sid = initialize(&hub, "2025-11-25");
    let mut s = open(
        hub.addr,
        &sid,
        r#"{"jsonrpc":"2.0","id":"slow1","method":"tools/call","params":{"name":"fx__slow_echo","arguments":{"text":"cx1","ms":30000}}}"#,
    );
    let mut inc = Incoming::new();
    // Wait until the call is under way (the response head is there), then cancel it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&inc.raw).contains("text/event-stream")
        && Instant::now() < deadline
    {
        inc.until(&mut s, Duration::from_millis(200), |_| false);
    }
    assert!(String::from_utf8_lossy(&inc.raw).contains("text/event-stream"));
    let c = post(
        &hub,
        Some(&sid),
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"slow1","reason":"user"}}"#,
        &[],
    );
    assert_eq!(c.status, 202);
    // The stream ends well before the tool would have answered, with no response in it.
    let msgs = inc.until(&mut s, Duration::from_secs(10), |_| false);
    assert!(
        inc.closed,
        "the stream did not end after the cancel: {msgs:?}"
    );
    assert!(
        !has_id(&msgs, "slow1"),
        "a cancelled request got a response: {msgs:?}"
    );
    // The upstream got the cancellation.
    let m = call_tool(&hub, &sid, "fx__last_cancelled", r#"{"text":"cx1"}"#);
    let text = m["result"]["content"][0]["text"].as_str().unwrap_or("");
    assert!(text.contains("user"), "the upstream saw the cancel: {m}");
}

// === batches ===

#[test]
fn a_batch_whose_call_asks_the_client_for_sampling_is_answered_as_sse() {
    let (_fx, url) = node_server("fixture-server.mjs");
    let hub = start_hub(
        &format!("listen: 127.0.0.1:0\nworkers: 1\nupstreams:\n  - name: fx\n    url: {url}\n"),
        "auto",
    );
    let sid = initialize_with(&hub, "2025-03-26", r#"{"sampling":{}}"#);
    let mut s = open(
        hub.addr,
        &sid,
        r#"[{"jsonrpc":"2.0","id":"b1","method":"tools/call","params":{"name":"fx__test_sampling","arguments":{"prompt":"hi"}}},{"jsonrpc":"2.0","id":"b2","method":"ping"}]"#,
    );
    let mut inc = Incoming::new();
    let msgs = inc.until(&mut s, Duration::from_secs(10), |m| {
        m.iter().any(|x| x["method"] == "sampling/createMessage")
    });
    let req = msgs
        .iter()
        .find(|x| x["method"] == "sampling/createMessage")
        .unwrap_or_else(|| {
            panic!("the batch's sampling request never reached the client: {msgs:?}")
        });
    assert!(
        has_id(&msgs, "b2"),
        "the batch's other answers come too: {msgs:?}"
    );
    let answer = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"role":"assistant","content":{{"type":"text","text":"from-the-client"}},"model":"m","stopReason":"endTurn"}}}}"#,
        req["id"]
    );
    assert_eq!(post(&hub, Some(&sid), &answer, &[]).status, 202);
    let msgs = inc.until(&mut s, Duration::from_secs(10), |m| has_id(m, "b1"));
    let b1 = msgs
        .iter()
        .find(|m| m["id"] == "b1")
        .unwrap_or_else(|| panic!("{msgs:?}"));
    assert!(
        b1.to_string().contains("from-the-client"),
        "the client's answer reached the upstream: {b1}"
    );
}

// === upstream names resolved again ===

/// A network namespace for the hub, joined to this one by a veth pair; the namespace has its
/// own `/etc/hosts` (`ip netns exec` mounts `/etc/netns/<ns>/hosts` over it for the hub).
struct Netns {
    ns: String,
    host_if: String,
    etc: std::path::PathBuf,
}

impl Netns {
    fn new() -> Netns {
        let id = std::process::id() % 10_000;
        let ns = format!("mgdns{id}");
        let host_if = format!("mgd{id}h");
        let peer_if = format!("mgd{id}n");
        let sh = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .expect("run ip (root and iproute2 needed; .ci/run installs iproute2)");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let etc = std::path::PathBuf::from(format!("/etc/netns/{ns}"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        sh(&["netns", "add", &ns]);
        sh(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        sh(&["link", "set", &peer_if, "netns", &ns]);
        sh(&["addr", "add", "10.79.1.1/24", "dev", &host_if]);
        sh(&["addr", "add", "10.79.1.3/24", "dev", &host_if]);
        sh(&["link", "set", &host_if, "up"]);
        sh(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            "10.79.1.2/24",
            "dev",
            &peer_if,
        ]);
        sh(&["netns", "exec", &ns, "ip", "link", "set", &peer_if, "up"]);
        sh(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        Netns { ns, host_if, etc }
    }

    /// Rewrites the namespace's hosts file in place (same inode, so the hub's mount sees it).
    fn hosts(&self, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.etc.join("hosts"))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

#[test]
fn an_upstream_host_name_is_resolved_again_when_it_moves() {
    let net = Netns::new();
    // Two upstreams on the same port at two addresses, told apart by their answers' size.
    let port = closed_port();
    let mock = |ip: &str, bytes: usize| {
        MockServer::start(MockConfig {
            listen: format!("{ip}:{port}").parse().unwrap(),
            response_bytes: bytes,
            ..MockConfig::default()
        })
        .unwrap()
    };
    let a = mock("10.79.1.1", 11);
    let b = mock("10.79.1.3", 33);
    net.hosts("127.0.0.1 localhost\n10.79.1.1 upstream.test\n");
    let hub_port = closed_port();
    let hub = start_hub_in(
        Some(&net.ns),
        &format!("listen: 10.79.1.2:{hub_port}\nworkers: 1\ndns_refresh: 1s\nupstreams:\n  - name: u\n    url: http://upstream.test:{port}/mcp\n    health_interval: 1s\n"),
        "auto",
    );
    let sid = initialize(&hub, "2025-11-25");
    let size = |m: &serde_json::Value| m["result"]["content"][0]["text"].as_str().map(str::len);
    assert_eq!(size(&call_tool(&hub, &sid, "u__tool_0", "{}")), Some(11));
    // The name moves to the other address and the old server goes away.
    net.hosts("127.0.0.1 localhost\n10.79.1.3 upstream.test\n");
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        last = call_tool(&hub, &sid, "u__tool_0", "{}");
        if size(&last) == Some(33) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        size(&last),
        Some(33),
        "calls never reached the new address: {last}\n{}",
        hub.stderr()
    );
    assert!(
        hub.stderr().contains("upstream address changed"),
        "the change is logged"
    );
    assert!(b.stats().calls.load(Ordering::Relaxed) >= 1);
}
