//! Where the agent sends what a stdio server prints, end to end: a real `meshgate-edge
//! serve-local` process, a scripted stdio MCP server (`tests/node/script-server.mjs`, so each
//! server message leaves at a moment the test controls), and plain HTTP/1.1 clients on loopback.
//!
//! Covers: unsolicited messages only on the GET streams of attached sessions (never another
//! client's POST stream), task and elicitation messages only to their session, progress by
//! token, GET-stream event ids with `Last-Event-ID` replay, and slow consumers being dropped
//! while other sessions go on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::time::Duration;

use serde_json::Value;
use support::{http, post_stream, read_until, script_entry, Agent, GetReader};

const WAIT: Duration = Duration::from_secs(15);

fn agent_with(servers: &[&str]) -> Agent {
    let entries: String = servers.iter().map(|n| script_entry(n, "")).collect();
    Agent::start(&format!(
        "edge: {{ id: edge-r }}\ndevice: {{ enabled: false }}\nservers:\n{entries}"
    ))
}

fn tool_call(id: &str, name: &str, args: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":"{id}","method":"tools/call","params":{{"name":"{name}","arguments":{args}}}}}"#
    )
}

/// The JSON-RPC messages in an SSE text (its `data:` lines).
fn messages(sse: &str) -> Vec<Value> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

fn has_method(sse: &str, method: &str) -> bool {
    messages(sse).iter().any(|m| m["method"] == method)
}

/// Reads a streamed POST answer up to the server→client request `method`; returns its id.
fn server_request_id(s: &mut std::net::TcpStream, method: &str) -> Value {
    let got = read_until(s, method, WAIT);
    let req = messages(&got)
        .into_iter()
        .find(|m| m["method"] == method)
        .unwrap_or_else(|| panic!("no {method} on the POST stream:\n{got}"));
    req["id"].clone()
}

/// Reads `s` to its end (or `within`) looking for `needle` without keeping what it read;
/// returns whether it was seen and whether the stream ended.
fn scan(s: &mut std::net::TcpStream, needle: &[u8], within: Duration) -> (bool, bool) {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    let mut window: Vec<u8> = Vec::new();
    let mut buf = [0u8; 65536];
    while std::time::Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (false, true),
            Ok(n) => {
                window.extend_from_slice(&buf[..n]);
                if window.windows(needle.len()).any(|w| w == needle) {
                    return (true, false);
                }
                let keep = window.len().saturating_sub(needle.len());
                window.drain(..keep);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (false, true),
        }
    }
    (false, false)
}

#[test]
fn unsolicited_logs_go_to_the_get_streams_of_attached_sessions_never_to_a_post_stream() {
    let agent = agent_with(&["script", "other"]);
    let (a, _) = agent.initialize("script");
    let (b, _) = agent.initialize("script");
    let (c, _) = agent.initialize("other");
    let ga = GetReader::open(&agent.addr, "script", &a, None);
    let gb = GetReader::open(&agent.addr, "script", &b, None);
    let gc = GetReader::open(&agent.addr, "other", &c, None);
    for g in [&ga, &gb, &gc] {
        g.wait_for("text/event-stream", WAIT, "the GET stream's headers");
    }
    // B has a call in flight on the shared process: it waits on a sampling request that B
    // answers only at the end, so B's POST stream is open the whole time.
    let mut bp = post_stream(&agent.addr, "script", &b, &tool_call("b1", "sample", "{}"));
    let sid = server_request_id(&mut bp, "sampling/createMessage");
    // A log the server sends outside any request (after A's call has been answered).
    let r = agent.call(
        "script",
        &a,
        &tool_call("a1", "log_later", r#"{"ms":0,"text":"unsolicited-1"}"#),
    );
    assert_eq!(r["result"]["content"][0]["text"], "scheduled", "{r}");
    ga.wait_for("unsolicited-1", WAIT, "the log on A's GET stream");
    gb.wait_for("unsolicited-1", WAIT, "the log on B's GET stream");
    // B answers; its POST stream ends with its own result and carries no log.
    let answer = format!(
        r#"{{"jsonrpc":"2.0","id":{sid},"result":{{"role":"assistant","content":{{"type":"text","text":"canned"}},"model":"m"}}}}"#
    );
    let ack = http(
        &agent.addr,
        "POST",
        "/mcp/script",
        &[("mcp-session-id", &b)],
        Some(&answer),
    );
    assert_eq!(ack.status, 202);
    let rest = read_until(&mut bp, "sampled: canned", WAIT);
    assert!(rest.contains("sampled: canned"), "{rest}");
    assert!(
        !has_method(&rest, "notifications/message"),
        "a log reached another client's POST stream:\n{rest}"
    );
    // A session of another server never sees it.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!gc.text().contains("unsolicited-1"), "{}", gc.text());
}

#[test]
fn task_and_elicitation_messages_go_only_to_their_session_and_progress_by_token() {
    let agent = agent_with(&["script"]);
    let (a, _) = agent.initialize("script");
    let (b, _) = agent.initialize("script");
    let ga = GetReader::open(&agent.addr, "script", &a, None);
    let gb = GetReader::open(&agent.addr, "script", &b, None);
    ga.wait_for("text/event-stream", WAIT, "A's GET stream");
    gb.wait_for("text/event-stream", WAIT, "B's GET stream");

    // A task created by A's call: its status and its related log reach A only.
    let r = agent.call(
        "script",
        &a,
        &tool_call("t1", "task_later", r#"{"ms":200}"#),
    );
    let task = r["result"]["task"]["taskId"].as_str().unwrap().to_owned();
    let t = ga.wait_for(
        "notifications/tasks/status",
        WAIT,
        "the task status on A's GET stream",
    );
    assert!(t.contains(&format!("log of {task}")), "{t}");

    // A URL-mode elicitation sent to A: its completion reaches A only.
    let mut ap = post_stream(
        &agent.addr,
        "script",
        &a,
        &tool_call("e1", "elicit_url", "{}"),
    );
    let eid = server_request_id(&mut ap, "elicitation/create");
    let answer = format!(r#"{{"jsonrpc":"2.0","id":{eid},"result":{{"action":"accept"}}}}"#);
    let ack = http(
        &agent.addr,
        "POST",
        "/mcp/script",
        &[("mcp-session-id", &a)],
        Some(&answer),
    );
    assert_eq!(ack.status, 202);
    let done = read_until(&mut ap, "elicited: accept", WAIT);
    assert!(done.contains("elicited: accept"), "{done}");
    ga.wait_for(
        "notifications/elicitation/complete",
        WAIT,
        "the elicitation completion on A's GET stream",
    );

    // Both sessions use the same progress token at once: each POST stream gets its own three.
    let call = |sid: &str, id: &str| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":"{id}","method":"tools/call","params":{{"name":"progress","arguments":{{"steps":3}},"_meta":{{"progressToken":"tok"}}}}}}"#
        );
        post_stream(&agent.addr, "script", sid, &body)
    };
    let (mut pa, mut pb) = (call(&a, "pa"), call(&b, "pb"));
    for (s, id) in [(&mut pa, "pa"), (&mut pb, "pb")] {
        let got = read_until(s, "progress 3", WAIT);
        let ms = messages(&got);
        let progress: Vec<&Value> = ms
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .collect();
        assert_eq!(progress.len(), 3, "{got}");
        assert!(progress
            .iter()
            .all(|m| m["params"]["progressToken"] == "tok"));
        assert_eq!(ms.last().unwrap()["id"], id, "{got}");
    }

    // B, attached to the same process, saw none of A's task or elicitation messages.
    std::thread::sleep(Duration::from_millis(300));
    let bt = gb.text();
    for m in [
        "notifications/tasks/status",
        "notifications/elicitation/complete",
    ] {
        assert!(!has_method(&bt, m), "{m} leaked to another session:\n{bt}");
    }
    assert!(!bt.contains("log of task-"), "{bt}");
}

#[test]
fn get_stream_events_carry_ids_and_a_resume_with_last_event_id_replays_what_was_missed() {
    let agent = agent_with(&["script"]);
    let (a, _) = agent.initialize("script");
    let (b, _) = agent.initialize("script");
    let gb = GetReader::open(&agent.addr, "script", &b, None);
    gb.wait_for("text/event-stream", WAIT, "B's GET stream");
    let ga = GetReader::open(&agent.addr, "script", &a, None);
    ga.wait_for("text/event-stream", WAIT, "A's GET stream");
    agent.call(
        "script",
        &a,
        &tool_call("1", "log_later", r#"{"ms":0,"text":"seen-live"}"#),
    );
    ga.wait_for("seen-live", WAIT, "the live log");
    let last = ga
        .ids()
        .last()
        .cloned()
        .expect("GET stream events carry ids");
    // A's consumer goes away; two logs are sent while it is detached (B, attached to the same
    // process, proves they were sent).
    ga.close();
    assert!(ga.wait_end(WAIT));
    for text in ["while-away-1", "while-away-2"] {
        agent.call(
            "script",
            &a,
            &tool_call("2", "log_later", &format!(r#"{{"ms":0,"text":"{text}"}}"#)),
        );
        gb.wait_for(text, WAIT, "the log on B's stream");
    }
    // Resume from the last id seen: exactly the missed events, then the stream is live again.
    let again = GetReader::open(&agent.addr, "script", &a, Some(&last));
    let t = again.wait_for("while-away-2", WAIT, "the replayed events");
    assert!(t.contains("while-away-1"), "{t}");
    assert!(
        !t.contains("seen-live"),
        "replayed an event it had seen:\n{t}"
    );
    agent.call(
        "script",
        &a,
        &tool_call("3", "log_later", r#"{"ms":0,"text":"live-again"}"#),
    );
    again.wait_for("live-again", WAIT, "a live log after the resume");
    // Ids are unique and increasing.
    let n: Vec<u64> = again
        .ids()
        .iter()
        .filter_map(|i| i.strip_prefix("g-")?.parse().ok())
        .collect();
    assert!(n.windows(2).all(|w| w[0] <= w[1]), "{n:?}");
    // A newer GET takes over: the older one ends and the newer one gets what follows.
    let newer = GetReader::open(&agent.addr, "script", &a, None);
    newer.wait_for("id: g-", WAIT, "the newer stream's priming event");
    assert!(again.wait_end(WAIT), "the older GET stream stayed open");
    agent.call(
        "script",
        &a,
        &tool_call("4", "log_later", r#"{"ms":0,"text":"to-the-newer"}"#),
    );
    newer.wait_for("to-the-newer", WAIT, "the log on the newer stream");
}

#[test]
fn a_stalled_get_consumer_is_dropped_while_other_sessions_go_on() {
    let agent = agent_with(&["script"]);
    let (a, _) = agent.initialize("script");
    let (b, _) = agent.initialize("script");
    let dropped = |ag: &Agent| ag.status()["streams"]["dropped_slow_consumer"].as_u64();
    let dropped_before = dropped(&agent).unwrap_or_default();
    // A's GET stream: a tiny receive buffer and nobody reading.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = agent.addr.parse().unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut stalled: std::net::TcpStream = sock.into();
    write!(
        stalled,
        "GET /mcp/script HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\nmcp-session-id: {a}\r\n\r\n"
    )
    .unwrap();
    let gb = GetReader::open(&agent.addr, "script", &b, None);
    gb.wait_for("text/event-stream", WAIT, "B's GET stream");
    // Far more than the socket buffers and the stream's queue hold (6000 events of ~1 KB).
    let r = agent.call(
        "script",
        &b,
        &tool_call("f", "flood", r#"{"count":6000,"size":1000}"#),
    );
    assert_eq!(r["result"]["content"][0]["text"], "flooding", "{r}");
    gb.wait_for(
        "flood-5999-",
        Duration::from_secs(60),
        "the whole flood on B's stream",
    );
    // B goes on, live.
    agent.call(
        "script",
        &b,
        &tool_call("g", "log_later", r#"{"ms":0,"text":"after-flood"}"#),
    );
    gb.wait_for("after-flood", WAIT, "a log after the flood on B's stream");
    assert!(!gb.ended());
    // A's stream was cut: reading it drains what the socket held, then it ends, without the
    // later log.
    let (found, ended) = scan(&mut stalled, b"after-flood", Duration::from_secs(30));
    assert!(!found, "the dropped stream went on");
    assert!(ended, "the dropped stream did not end");
    // The agent counts it (and logs it).
    let n = dropped(&agent).expect("status counts dropped streams");
    assert_eq!(
        n,
        dropped_before + 1,
        "exactly the stalled stream was dropped"
    );
}
