//! Stream behaviours of the hub against real upstreams on loopback: SSE resumption with
//! `Last-Event-ID` (one stream only), `list_changed` on the GET stream when an upstream dies and
//! comes back, and transparent re-initialization when an upstream forgets our session.

// Tests drive the hub from plain threads, not monoio workers, so blocking sleeps are fine here.
#![allow(clippy::disallowed_methods)]
// Helper functions in an integration test are test code too.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dataplane::demo::{self, Example};
use loadtest::mock::{MockConfig, MockServer};
use support::*;

fn sse_request(hub: &Hub, method: &str, sid: &str, body: &str, extra: &str) -> TcpStream {
    let mut s = TcpStream::connect(hub.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} /mcp HTTP/1.1\r\nHost: {}\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nMcp-Session-Id: {sid}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        hub.addr,
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    s
}

/// Reads SSE events `(id, data)` from a raw chunked response until `stop` says so (bounded).
fn read_events(
    s: &mut TcpStream,
    within: Duration,
    mut stop: impl FnMut(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let mut events = Vec::new();
    while Instant::now() < deadline {
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(_) => break,
        }
        // Parse whole events out of the raw bytes (chunk-size lines are not `id:`/`data:` lines).
        let text = String::from_utf8_lossy(&buf).to_string();
        events.clear();
        let mut id = String::new();
        let mut data = String::new();
        for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if line.is_empty() && !id.is_empty() {
                events.push((std::mem::take(&mut id), std::mem::take(&mut data)));
            }
        }
        if stop(&events) {
            break;
        }
    }
    events
}

#[test]
fn last_event_id_replays_only_that_stream() {
    let clock = demo::start(Example::Clock).unwrap();
    let hub = start_hub(
        &format!(
            "listen: 127.0.0.1:0\nworkers: 2\nupstreams:\n  - name: clock\n    url: {clock}\n"
        ),
        "auto",
    );
    let sid = initialize(&hub, "2025-11-25");
    // Another stream first, so replay has something it must not include.
    let other = call_tool(&hub, &sid, "clock__countdown", r#"{"n":1}"#);
    assert!(other["result"].is_object(), "{other}");
    let body = r#"{"jsonrpc":"2.0","id":"cd","method":"tools/call","params":{"name":"clock__countdown","arguments":{"n":6},"_meta":{"progressToken":"tok"}}}"#;
    let mut s = sse_request(&hub, "POST", &sid, body, "");
    // Priming event + two progress events, then the client "loses" the connection.
    let first = read_events(&mut s, Duration::from_secs(10), |ev| {
        ev.iter().filter(|(_, d)| d.contains("progress")).count() >= 2
    });
    drop(s);
    let progress_seen: Vec<&(String, String)> = first
        .iter()
        .filter(|(_, d)| d.contains("progress"))
        .collect();
    assert!(progress_seen.len() >= 2, "{first:?}");
    let last_id = progress_seen.last().unwrap().0.clone();
    let stream_no = last_id.split('_').next().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(300));
    let mut g = sse_request(
        &hub,
        "GET",
        &sid,
        "",
        &format!("Last-Event-ID: {last_id}\r\n"),
    );
    let rest = read_events(&mut g, Duration::from_secs(10), |ev| {
        ev.iter().any(|(_, d)| d.contains("\"id\":\"cd\""))
    });
    assert!(
        rest.iter().any(|(_, d)| d.contains("liftoff")),
        "no final result after resume: {rest:?}"
    );
    for (id, data) in &rest {
        assert!(
            id.starts_with(&format!("{stream_no}_")),
            "event {id} from another stream: {data}"
        );
        assert!(
            !first.iter().any(|(fid, _)| fid == id),
            "event {id} was replayed twice"
        );
    }
    let seen_progress =
        progress_seen.len() + rest.iter().filter(|(_, d)| d.contains("progress")).count();
    assert_eq!(
        seen_progress, 6,
        "every progress event exactly once: first {first:?} rest {rest:?}"
    );
}

#[test]
fn get_stream_announces_upstream_loss_and_return() {
    let clock = demo::start(Example::Clock).unwrap();
    let mock = MockServer::start(MockConfig::default()).unwrap();
    let mock_addr = mock.addr();
    let hub = start_hub(
        &format!("listen: 127.0.0.1:0\nworkers: 2\nsse_keepalive: 1s\nupstreams:\n  - name: clock\n    url: {clock}\n  - name: mock\n    url: {}\n    health_interval: 200ms\n    connect_timeout: 300ms\n", mock.url()),
        "auto",
    );
    let sid = initialize(&hub, "2025-11-25");
    let list = |hub: &Hub| -> Vec<String> {
        let r = post(
            hub,
            Some(&sid),
            r#"{"jsonrpc":"2.0","id":"l","method":"tools/list"}"#,
            &[],
        );
        r.json()["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(list(&hub).iter().any(|n| n == "mock__tool_0"));
    let mut g = sse_request(&hub, "GET", &sid, "", "");
    // Let the stream settle, then kill the mock.
    read_events(&mut g, Duration::from_millis(500), |_| false);
    mock.shutdown();
    let started = Instant::now();
    let ev = read_events(&mut g, Duration::from_secs(8), |ev| {
        ev.iter().any(|(_, d)| d.contains("tools/list_changed"))
    });
    assert!(
        ev.iter()
            .any(|(_, d)| d.contains("notifications/tools/list_changed")),
        "no list_changed after upstream loss: {ev:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let names = list(&hub);
    assert!(!names.iter().any(|n| n.starts_with("mock__")), "{names:?}");
    assert!(names.iter().any(|n| n == "clock__now"), "{names:?}");
    let m = call_tool(&hub, &sid, "mock__tool_0", "{}");
    assert_eq!(m["error"]["code"], -32603, "{m}");
    assert!(
        m["error"]["message"].as_str().unwrap().contains("'mock'"),
        "{m}"
    );
    // Bring it back on the same port: the tools return and the stream says so.
    let cfg = MockConfig {
        listen: mock_addr,
        ..MockConfig::default()
    };
    let _mock2 = MockServer::start(cfg).unwrap();
    let ev = read_events(&mut g, Duration::from_secs(8), |ev| {
        ev.iter().any(|(_, d)| d.contains("tools/list_changed"))
    });
    assert!(
        ev.iter()
            .any(|(_, d)| d.contains("notifications/tools/list_changed")),
        "no list_changed on return: {ev:?}"
    );
    assert!(list(&hub).iter().any(|n| n == "mock__tool_0"));
}

#[test]
fn upstream_that_forgets_the_session_is_reinitialized() {
    let mock = MockServer::start(MockConfig::default()).unwrap();
    let addr = mock.addr();
    let hub = start_hub(&format!("listen: 127.0.0.1:0\nworkers: 1\nupstreams:\n  - name: mock\n    url: {}\n    health_interval: 60s\n", mock.url()), "auto");
    let sid = initialize(&hub, "2025-06-18");
    assert!(call_tool(&hub, &sid, "mock__tool_0", "{}")["result"].is_object());
    // Restart the upstream on the same port: it no longer knows our upstream session.
    mock.shutdown();
    let fresh = MockServer::start(MockConfig {
        listen: addr,
        ..MockConfig::default()
    })
    .unwrap();
    // The call that meets the restart fails clearly, naming the upstream: either the upstream
    // answered 404 for our session ("lost its session"), or the kept-alive connection to the
    // old process broke only after the request was written, so the hub cannot know whether it
    // ran and says so instead of sending it again (a tools/call runs at most once). Either way
    // the hub re-initializes the upstream session.
    let m = call_tool(&hub, &sid, "mock__tool_1", "{}");
    let msg = m["error"]["message"].as_str().unwrap_or("").to_string();
    assert_eq!(
        m["error"]["code"], -32603,
        "the in-flight call fails clearly: {m}"
    );
    assert!(msg.contains("'mock'"), "{m}");
    assert!(
        msg.contains("lost its session") || msg.contains("may or may not have run"),
        "{m}"
    );
    let again = call_tool(&hub, &sid, "mock__tool_1", "{}");
    assert!(
        again["result"].is_object(),
        "the session goes on after re-initialization: {again}"
    );
    assert!(
        fresh
            .stats()
            .sessions_created
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[test]
fn get_stream_and_first_call_racing_share_one_upstream_session() {
    let mock = MockServer::start(MockConfig::default()).unwrap();
    let hub = start_hub(
        &format!(
            "listen: 127.0.0.1:0\nworkers: 2\nupstreams:\n  - name: mock\n    url: {}\n",
            mock.url()
        ),
        "auto",
    );
    for round in 0..20 {
        let sid = initialize(&hub, "2025-11-25");
        // The GET stream opens the upstream session while the call opens it too.
        let _get = sse_request(&hub, "GET", &sid, "", "");
        let m = call_tool(&hub, &sid, "mock__tool_0", "{}");
        assert!(m["result"].is_object(), "round {round}: {m}");
    }
    let created = mock
        .stats()
        .sessions_created
        .load(std::sync::atomic::Ordering::Relaxed);
    let deleted = mock
        .stats()
        .sessions_deleted
        .load(std::sync::atomic::Ordering::Relaxed);
    // Opening is single-flight: each round opens exactly one upstream session (plus the health
    // probe's own), none is opened twice and none has to be deleted.
    assert!(
        created <= 21 && deleted == 0,
        "created {created}, deleted {deleted}"
    );
}
