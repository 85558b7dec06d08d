//! Bad input, one test each, against the real hub binary in front of the in-process mock
//! upstream. Each test also proves the hub stays up and that another session keeps working.
//! Every test runs under both monoio drivers (io_uring and epoll).
// Tests drive the hub from plain threads, not monoio workers, so blocking sleeps are fine here.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use loadtest::mock::{MockConfig, MockServer};
use support::*;

const DRIVERS: [&str; 2] = ["iouring", "legacy"];

struct Env {
    _mock: loadtest::mock::MockHandle,
    hub: Hub,
    /// A healthy session opened before the bad input.
    sid: String,
}

fn env(driver: &str, extra_yaml: &str) -> Env {
    let mock = MockServer::start(MockConfig::default()).expect("mock starts");
    let yaml = format!(
        "listen: 127.0.0.1:0\nworkers: 2\nlimits:\n  max_body_bytes: 65536\n  max_head_bytes: 4096\n  head_timeout: 500ms\n{extra_yaml}upstreams:\n  - name: mock\n    url: {}\n  - name: down\n    url: http://127.0.0.1:{}/mcp\n    connect_timeout: 500ms\n",
        mock.url(),
        closed_port()
    );
    let hub = start_hub(&yaml, driver);
    let sid = initialize(&hub, "2025-06-18");
    Env {
        _mock: mock,
        hub,
        sid,
    }
}

/// The hub is alive and the healthy session still calls a tool.
fn still_serving(e: &mut Env) {
    assert!(e.hub.alive(), "hub died; stderr:\n{}", e.hub.stderr());
    let m = call_tool(&e.hub, &e.sid, "mock__tool_0", "{}");
    assert!(
        m.get("result").is_some(),
        "healthy session broken after bad input: {m}"
    );
}

fn each_driver(f: impl Fn(&mut Env)) {
    for d in DRIVERS {
        let mut e = env(d, "");
        f(&mut e);
        still_serving(&mut e);
    }
}

#[test]
fn malformed_json_is_400_parse_error() {
    each_driver(|e| {
        let r = post(&e.hub, Some(&e.sid), "{\"jsonrpc\":\"2.0\",", &[]);
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"]["code"], -32700);
        assert!(r.json()["id"].is_null());
    });
}

#[test]
fn not_jsonrpc_is_400_invalid_request() {
    each_driver(|e| {
        let r = post(&e.hub, Some(&e.sid), r#"{"hello":"world"}"#, &[]);
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"]["code"], -32600);
    });
}

#[test]
fn batch_after_2025_03_26_is_400() {
    each_driver(|e| {
        let r = post(
            &e.hub,
            Some(&e.sid),
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            &[],
        );
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], -32600);
        assert!(r.text().contains("batch"), "{}", r.text());
    });
}

#[test]
fn batch_in_2025_03_26_is_answered_as_array() {
    each_driver(|e| {
        let sid = initialize(&e.hub, "2025-03-26");
        let r = post(
            &e.hub,
            Some(&sid),
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"mock__tool_1","arguments":{}}}]"#,
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let arr = v.as_array().expect("array answer");
        assert_eq!(arr.len(), 2, "{v}");
        assert_eq!(arr[0]["id"], 1);
        assert!(arr[1]["result"]["content"].is_array(), "{v}");
    });
}

#[test]
fn missing_session_id_is_400() {
    each_driver(|e| {
        let r = post(
            &e.hub,
            None,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            &[],
        );
        assert_eq!(r.status, 400);
        assert!(r.text().contains("Mcp-Session-Id"), "{}", r.text());
    });
}

#[test]
fn unknown_and_deleted_sessions_are_404() {
    each_driver(|e| {
        let r = post(
            &e.hub,
            Some("0123456789abcdef0123456789abcdef"),
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            &[],
        );
        assert_eq!(r.status, 404);
        let sid = initialize(&e.hub, "2025-11-25");
        let del = format!("DELETE /mcp HTTP/1.1\r\nHost: {}\r\nMcp-Session-Id: {sid}\r\nConnection: close\r\n\r\n", e.hub.addr);
        let d = raw(e.hub.addr, del.as_bytes(), Duration::from_secs(10)).unwrap();
        assert_eq!(d.status, 200);
        let r = post(
            &e.hub,
            Some(&sid),
            r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
            &[],
        );
        assert_eq!(r.status, 404);
    });
}

#[test]
fn unsupported_protocol_version_is_400() {
    each_driver(|e| {
        let r = post(
            &e.hub,
            Some(&e.sid),
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            &[("MCP-Protocol-Version", "1999-01-01")],
        );
        assert_eq!(r.status, 400);
        assert!(r.text().contains("1999-01-01"), "{}", r.text());
    });
}

#[test]
fn wrong_accept_is_406() {
    each_driver(|e| {
        let r = post(
            &e.hub,
            Some(&e.sid),
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            &[("Accept", "text/html")],
        );
        assert_eq!(r.status, 406);
    });
}

#[test]
fn wrong_content_type_is_415() {
    each_driver(|e| {
        let r = post(
            &e.hub,
            Some(&e.sid),
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            &[("Content-Type", "text/plain")],
        );
        assert_eq!(r.status, 415);
    });
}

#[test]
fn body_over_limit_is_413() {
    each_driver(|e| {
        let big = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
            "x".repeat(70_000)
        );
        let r = post(&e.hub, Some(&e.sid), &big, &[]);
        assert_eq!(r.status, 413);
    });
}

#[test]
fn head_over_limit_is_431() {
    each_driver(|e| {
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            e.hub.addr,
            "y".repeat(8000)
        );
        let r = raw(e.hub.addr, req.as_bytes(), Duration::from_secs(10)).unwrap();
        assert_eq!(r.status, 431);
    });
}

#[test]
fn slow_head_is_cut_off() {
    each_driver(|e| {
        // head_timeout is 500ms; send one byte every 100ms for up to 5s.
        let mut s = TcpStream::connect(e.hub.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Length: 2\r\n\r\n{{}}",
            e.hub.addr
        );
        let started = Instant::now();
        let mut closed = false;
        let mut got = Vec::new();
        for b in req.bytes() {
            if s.write_all(&[b]).is_err() {
                closed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            let mut tmp = [0u8; 512];
            match s.read(&mut tmp) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => got.extend_from_slice(&tmp[..n]),
                Err(_) => {}
            }
            if started.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            closed || text.starts_with("HTTP/1.1 408"),
            "slow client was not cut off: {text:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "took {:?}",
            started.elapsed()
        );
    });
}

#[test]
fn unknown_tool_is_32602() {
    each_driver(|e| {
        for name in ["nosuchserver__x", "plainname"] {
            let m = call_tool(&e.hub, &e.sid, name, "{}");
            assert_eq!(m["error"]["code"], -32602, "{m}");
            assert!(
                m["error"]["message"].as_str().unwrap().contains(name),
                "{m}"
            );
        }
    });
}

#[test]
fn upstream_refusing_connections_fails_fast_naming_it() {
    each_driver(|e| {
        let started = Instant::now();
        let m = call_tool(&e.hub, &e.sid, "down__tool_0", "{}");
        assert_eq!(m["error"]["code"], -32603, "{m}");
        let msg = m["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("'down'"),
            "message must name the upstream: {msg}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        // The dead upstream's tools are not listed; the live one's are.
        let r = post(
            &e.hub,
            Some(&e.sid),
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#,
            &[],
        );
        let names: Vec<String> = r.json()["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        assert!(names.iter().any(|n| n == "mock__tool_0"), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("down__")), "{names:?}");
    });
}

#[test]
fn bad_origin_and_host_are_403() {
    each_driver(|e| {
        let r = post(
            &e.hub,
            Some(&e.sid),
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            &[("Origin", "http://evil.example.com")],
        );
        assert_eq!(r.status, 403);
        let req = "POST /mcp HTTP/1.1\r\nHost: evil.example.com\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        let r = raw(e.hub.addr, req.as_bytes(), Duration::from_secs(10)).unwrap();
        assert_eq!(r.status, 403);
        let ok = post(
            &e.hub,
            Some(&e.sid),
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            &[("Origin", "http://localhost:3000")],
        );
        assert_eq!(ok.status, 200);
    });
}

#[test]
fn unknown_response_id_is_400_and_unknown_method_is_32601() {
    each_driver(|e| {
        let r = post(
            &e.hub,
            Some(&e.sid),
            r#"{"jsonrpc":"2.0","id":"mg-999","result":{}}"#,
            &[],
        );
        assert_eq!(r.status, 400);
        let r = post(
            &e.hub,
            Some(&e.sid),
            r#"{"jsonrpc":"2.0","id":5,"method":"no/such"}"#,
            &[],
        );
        assert_eq!(r.json()["error"]["code"], -32601);
    });
}

#[test]
fn ops_endpoints() {
    each_driver(|e| {
        let get = |p: &str| {
            raw(
                e.hub.addr,
                format!("GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
                Duration::from_secs(10),
            )
            .unwrap()
        };
        assert_eq!(get("/healthz").status, 200);
        assert_eq!(get("/readyz").status, 200);
        let m = get("/metrics");
        assert_eq!(m.status, 200);
        let t = m.text();
        assert!(t.contains("meshgate_active_sessions"), "{t}");
        assert!(
            t.contains("meshgate_upstream_up{upstream=\"mock\"} 1"),
            "{t}"
        );
        assert_eq!(get("/nope").status, 404);
    });
}
