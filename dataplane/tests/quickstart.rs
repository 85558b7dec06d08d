//! The README's first command (`meshgate --demo`) really federates the two bundled servers:
//! list, call a tool from each, and a progress-streaming call relayed over SSE.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn demo_federates_two_bundled_servers() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshgate"));
    cmd.args(["--demo", "--listen", "127.0.0.1:0"]);
    let p = spawn_ready(cmd, "meshgate listening on ", Duration::from_secs(20));
    let url = p
        .line
        .trim_start_matches("meshgate listening on ")
        .trim()
        .to_string();
    let hub: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let sid = initialize(&hub, "2025-11-25");
    let list = post(
        &hub,
        Some(&sid),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        &[],
    );
    let names: Vec<String> = list.json()["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "clock__now",
        "clock__countdown",
        "notes__add_note",
        "notes__list_notes",
    ] {
        assert!(
            names.contains(&want.to_string()),
            "{want} missing from {names:?}"
        );
    }
    let add = post(
        &hub,
        Some(&sid),
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"notes__add_note","arguments":{"title":"hello","text":"world"}}}"#,
        &[],
    );
    assert_eq!(
        add.messages()[0]["result"]["isError"],
        false,
        "{}",
        add.text()
    );
    let read = post(
        &hub,
        Some(&sid),
        r#"{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"note://hello"}}"#,
        &[],
    );
    assert_eq!(
        read.json()["result"]["contents"][0]["text"],
        "world",
        "{}",
        read.text()
    );
    let cd = post(
        &hub,
        Some(&sid),
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"clock__countdown","arguments":{"n":2},"_meta":{"progressToken":"p"}}}"#,
        &[],
    );
    let msgs = cd.messages();
    let progress = msgs
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .count();
    assert_eq!(progress, 2, "{}", cd.text());
    assert!(msgs.last().unwrap()["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("liftoff"));
}
