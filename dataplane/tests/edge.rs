//! Edge tunnels end to end, with real processes: the `meshgate` hub, the `meshgate-edge` agent
//! (dialing out over QUIC, or TLS over TCP), a real stdio MCP server (`server-everything` from
//! npm) supervised by the agent, the agent's built-in device tools, and the official TypeScript
//! SDK client talking to the hub.
//!
//! The resume test runs the agent as a plain HTTP upstream (`serve-local`) so it can take the
//! agent's GET stream away from the hub and check the hub resumes it with `Last-Event-ID`.
//!
//! The partition tests put the agent in its own network namespace joined to the hub by a veth
//! pair, and cut the link with `ip link set down` (they need root and iproute2, as CI has).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Certificates for one test: a CA, the hub's (for `names`), and one per edge id.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(tag: &str, hub_names: &[&str], edges: &[&str]) -> Certs {
        let dir = scratch(tag);
        let names: Vec<String> = hub_names.iter().map(|s| s.to_string()).collect();
        let edges: Vec<String> = edges.iter().map(|s| s.to_string()).collect();
        meshgate_tunnel::pki::quickstart(&dir, &names, &edges).expect("quickstart PKI");
        Certs { dir }
    }
    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

/// The `meshgate-edge` binary next to `meshgate` (built by `cargo test --workspace`; built here
/// when a narrower `cargo test -p dataplane` left it out).
fn edge_bin() -> PathBuf {
    let hub = PathBuf::from(env!("CARGO_BIN_EXE_meshgate"));
    let bin = hub.with_file_name("meshgate-edge");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "edge-agent", "--bin", "meshgate-edge"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building meshgate-edge failed");
    }
    bin
}

/// A free port number on loopback (TCP checked; the hub binds UDP and TCP on it).
fn free_port() -> u16 {
    closed_port()
}

fn hub_yaml(certs: &Certs, edge_listen: &str, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nworkers: 2\nsession:\n  idle_ttl: 10m\nedge:\n  listen: {edge_listen}\n  ca: {}\n  cert: {}\n  key: {}\n  keepalive: 500ms\n  idle_timeout: 2s\n{extra}",
        certs.path("ca.pem"),
        certs.path("hub.pem"),
        certs.path("hub-key.pem"),
    )
}

fn everything_cmd() -> (String, Vec<String>) {
    let (node, kit) = require_node_kit();
    let script = kit.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    (
        node.display().to_string(),
        vec![script.display().to_string(), "stdio".into()],
    )
}

/// Agent config: the device tools plus server-everything (shared stdio).
fn edge_yaml(certs: &Certs, id: &str, hub: &str, server_name: &str, transport: &str) -> String {
    let (node, args) = everything_cmd();
    let args = args
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "edge:\n  id: {id}\nhub:\n  addr: \"{hub}\"\n  server_name: {server_name}\n  ca: {}\n  cert: {}\n  key: {}\n  transport: {transport}\n  backoff_max: 400ms\n  keepalive: 500ms\n  idle_timeout: 2s\ndevice:\n  enabled: true\nservers:\n  - name: everything\n    kind: stdio\n    command: \"{node}\"\n    args: [{args}]\n    mode: shared\n",
        certs.path("ca.pem"),
        certs.path(&format!("{id}.pem")),
        certs.path(&format!("{id}-key.pem")),
    )
}

/// A running agent; its process group is killed on drop.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(yaml: &str, netns: Option<&str>) -> Agent {
        use std::os::unix::process::CommandExt;
        let dir = scratch("edge");
        let cfg = dir.join("edge.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let log = dir.join("edge.log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(edge_bin());
                c
            }
            None => Command::new(edge_bin()),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg)
            .env("MESHGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0);
        let child = cmd.spawn().expect("spawn meshgate-edge");
        Agent { child, log }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tool names the hub lists for a fresh session.
fn tool_names(hub: &Hub) -> Vec<String> {
    let sid = initialize(hub, "2025-11-25");
    let r = post(
        hub,
        Some(&sid),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        &[],
    );
    let v = r.json();
    v["result"]["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (bounded) until `pred` holds for the hub's tool list; returns how long it took.
fn wait_tools(hub: &Hub, within: Duration, pred: impl Fn(&[String]) -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if pred(&tool_names(hub)) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn has(names: &[String], n: &str) -> bool {
    names.iter().any(|x| x == n)
}

fn start_edge_hub(certs: &Certs, edge_listen: &str) -> (Hub, SocketAddr) {
    let hub = start_hub(&hub_yaml(certs, edge_listen, ""), "auto");
    let addr: SocketAddr = edge_listen.parse().unwrap();
    (hub, addr)
}

#[test]
fn sdk_client_uses_edge_stdio_server_and_device_tools_through_the_hub() {
    let certs = Certs::new("edge-e2e", &["localhost", "127.0.0.1"], &["edge-1"]);
    let port = free_port();
    let (hub, _) = start_edge_hub(&certs, &format!("127.0.0.1:{port}"));
    let agent = Agent::start(
        &edge_yaml(
            &certs,
            "edge-1",
            &format!("127.0.0.1:{port}"),
            "localhost",
            "quic",
        ),
        None,
    );
    let up = wait_tools(&hub, Duration::from_secs(30), |n| {
        has(n, "everything__echo") && has(n, "device__cpu")
    });
    assert!(
        up.is_some(),
        "edge tools never reached the hub: {:?}\n--- hub ---\n{}\n--- edge ---\n{}",
        tool_names(&hub),
        hub.stderr(),
        agent.log()
    );
    // The hub logs the edge with its transport and certificate identity.
    assert!(hub.stderr().contains("edge connected"), "{}", hub.stderr());
    // A device tool through the hub.
    let sid = initialize(&hub, "2025-11-25");
    let cpu = call_tool(&hub, &sid, "device__cpu", "{}");
    assert!(cpu["result"]["structuredContent"].is_object(), "{cpu}");
    // The official SDK client runs server-everything's scenarios through hub and tunnel:
    // tools, progress, a server→client request (sampling, elicitation), logging, resources.
    let (node, kit) = require_node_kit();
    let out = Command::new(&node)
        .arg(kit.join("e2e-client.mjs"))
        .args([
            "--url",
            &hub.url,
            "--direct",
            "--everything",
            "everything__",
        ])
        .output()
        .expect("run e2e-client.mjs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(" 0 failed"),
        "SDK client through the edge tunnel failed:\n{text}\n{}\n--- hub ---\n{}\n--- edge ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        hub.stderr(),
        agent.log()
    );
    // Exactly these checks pass (a check that skipped itself, or one that went missing, fails
    // here); the rest are fixture-only and skip in `--direct --everything` mode.
    assert_eq!(
        passed_checks(&text),
        EDGE_E2E_PASSING,
        "the passing checks changed:\n{text}"
    );
}

/// The `ok - <name>` lines of an e2e-client run that passed (not skipped), in order.
fn passed_checks(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.strip_prefix("ok - "))
        .filter(|l| !l.contains(" # SKIP"))
        .collect()
}

/// The checks of `e2e-client.mjs --direct --everything everything__` that must pass through the
/// hub, the tunnel and the agent's shared stdio server-everything.
const EDGE_E2E_PASSING: &[&str] = &[
    "initialize",
    "tools/list paginated (both upstreams, no duplicates)",
    "tools/list has sampling/elicitation-conditional tools of server-everything",
    "tools/call server-everything echo",
    "progress (server-everything trigger-long-running-operation)",
    "sampling round trip (server-everything trigger-sampling-request)",
    "elicitation round trip (server-everything trigger-elicitation-request)",
    "logging/setLevel + log notifications on the GET stream (server-everything toggle-simulated-logging)",
    "resources/list paginated",
    "resources/read (server-everything)",
    "resources/templates/list",
    "resources/subscribe -> notifications/resources/updated (server-everything toggle-subscriber-updates)",
    "prompts/list paginated (both upstreams)",
    "prompts/get (server-everything args-prompt)",
    "completion/complete (server-everything completable-prompt)",
    "ping",
    "DELETE session, then POST with the old Mcp-Session-Id -> 404",
];

/// The agent's open sockets: it must not listen on any TCP port.
fn tcp_listen_inodes_of(pid: u32) -> Vec<String> {
    let mut inodes = Vec::new();
    for file in ["tcp", "tcp6"] {
        let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in t.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" {
                inodes.push(f[9].to_string());
            }
        }
    }
    let mine: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.display().to_string())
                .filter_map(|s| {
                    s.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    inodes.into_iter().filter(|i| mine.contains(i)).collect()
}

#[test]
fn agent_opens_no_listening_socket_and_its_tools_leave_and_return_with_it() {
    let certs = Certs::new("edge-presence", &["localhost", "127.0.0.1"], &["edge-1"]);
    let port = free_port();
    let (hub, _) = start_edge_hub(&certs, &format!("127.0.0.1:{port}"));
    let yaml = edge_yaml(
        &certs,
        "edge-1",
        &format!("127.0.0.1:{port}"),
        "127.0.0.1",
        "auto",
    );
    let mut agent = Agent::start(&yaml, None);
    assert!(
        wait_tools(&hub, Duration::from_secs(30), |n| has(n, "device__cpu")).is_some(),
        "{}\n{}",
        hub.stderr(),
        agent.log()
    );
    let listening = tcp_listen_inodes_of(agent.child.id());
    assert!(listening.is_empty(), "the agent listens: {listening:?}");
    // Kill the agent outright: the tunnel goes silent, the hub drops its tools.
    agent.kill9();
    assert!(
        wait_tools(&hub, Duration::from_secs(8), |n| !has(n, "device__cpu")).is_some(),
        "tools of a dead edge stayed listed"
    );
    let sid = initialize(&hub, "2025-11-25");
    let m = call_tool(&hub, &sid, "device__cpu", "{}");
    // It fails fast: the hub answers from the slot being down, without trying the edge (not a
    // timeout, not a connection attempt).
    let why = m["error"]["message"].as_str().unwrap_or_default();
    assert!(why.contains("is unavailable"), "{m}");
    // Back: the tools return.
    let agent2 = Agent::start(&yaml, None);
    assert!(
        wait_tools(&hub, Duration::from_secs(30), |n| has(n, "device__cpu")).is_some(),
        "{}",
        agent2.log()
    );
    let m = call_tool(&hub, &sid, "device__cpu", "{}");
    assert!(
        m["result"].is_object(),
        "the session goes on with the returned edge: {m}"
    );
}

#[test]
fn wrong_ca_or_unknown_client_certificate_is_refused_on_both_sides() {
    let certs = Certs::new("edge-good", &["localhost", "127.0.0.1"], &["edge-1"]);
    let other = Certs::new("edge-other", &["localhost", "127.0.0.1"], &["edge-1"]);
    let port = free_port();
    let (hub, _) = start_edge_hub(&certs, &format!("127.0.0.1:{port}"));
    // Edge certificate from another CA: the hub refuses the client.
    let bad_client = Agent::start(
        &edge_yaml(
            &other,
            "edge-1",
            &format!("127.0.0.1:{port}"),
            "127.0.0.1",
            "tcp",
        ),
        None,
    );
    // Edge pinning another CA: it refuses the hub.
    let mut yaml = edge_yaml(
        &certs,
        "edge-1",
        &format!("127.0.0.1:{port}"),
        "127.0.0.1",
        "quic",
    );
    yaml = yaml.replace(&certs.path("ca.pem"), &other.path("ca.pem"));
    let bad_server = Agent::start(&yaml, None);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut ok = false;
    while Instant::now() < deadline {
        let h = hub.stderr().to_lowercase();
        let c = bad_client.log().to_lowercase();
        let s = bad_server.log().to_lowercase();
        if h.contains("refused") && c.contains("certificate") && s.contains("certificate") {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        ok,
        "--- hub ---\n{}\n--- edge with foreign cert ---\n{}\n--- edge pinning foreign CA ---\n{}",
        hub.stderr(),
        bad_client.log(),
        bad_server.log()
    );
    assert!(!has(&tool_names(&hub), "device__cpu"));
}

/// A network namespace for the agent, joined to the root namespace by a veth pair; removed
/// on drop.
struct Netns {
    ns: String,
    host_if: String,
    hub_ip: String,
}

impl Netns {
    fn new(tag: u32) -> Netns {
        let id = std::process::id() % 10_000;
        let ns = format!("mgedge{id}x{tag}");
        let host_if = format!("mgh{id}x{tag}");
        let edge_if = format!("mge{id}x{tag}");
        let net = 200 + tag;
        let hub_ip = format!("10.{}.{}.1", 77, net);
        let edge_ip = format!("10.{}.{}.2", 77, net);
        let sh = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        sh(&["netns", "add", &ns]);
        let n = Netns {
            ns: ns.clone(),
            host_if: host_if.clone(),
            hub_ip: hub_ip.clone(),
        };
        sh(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &edge_if,
        ]);
        sh(&["link", "set", &edge_if, "netns", &ns]);
        sh(&["addr", "add", &format!("{hub_ip}/24"), "dev", &host_if]);
        sh(&["link", "set", &host_if, "up"]);
        sh(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{edge_ip}/24"),
            "dev",
            &edge_if,
        ]);
        sh(&["netns", "exec", &ns, "ip", "link", "set", &edge_if, "up"]);
        sh(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        n
    }
    fn link(&self, up: bool) {
        let st = Command::new("ip")
            .args(["link", "set", &self.host_if, if up { "up" } else { "down" }])
            .status()
            .unwrap();
        assert!(st.success());
    }
    /// Makes every UDP packet leaving the namespace fail (a policy rule ahead of the main table).
    fn block_udp(&self) {
        let st = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "ip", "rule", "add", "pref", "100", "ipproto", "udp",
                "prohibit",
            ])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn require_netns() {
    let out = Command::new("ip").args(["netns", "list"]).output();
    assert!(
        out.is_ok_and(|o| o.status.success()),
        "these tests need root and iproute2 (`ip netns`); .ci/run installs iproute2"
    );
}

#[test]
fn partition_fails_calls_fast_and_tools_return_with_the_link() {
    require_netns();
    let net = Netns::new(1);
    let certs = Certs::new("edge-part", &["localhost", &net.hub_ip], &["edge-1"]);
    let port = free_port();
    let listen = format!("{}:{port}", net.hub_ip);
    let (hub, _) = start_edge_hub(&certs, &listen);
    let agent = Agent::start(
        &edge_yaml(&certs, "edge-1", &listen, &net.hub_ip, "quic"),
        Some(&net.ns),
    );
    assert!(
        wait_tools(&hub, Duration::from_secs(30), |n| has(
            n,
            "everything__echo"
        ))
        .is_some(),
        "{}\n{}",
        hub.stderr(),
        agent.log()
    );
    // Load: sessions calling echo in a loop while the link is cut.
    let sids: Vec<String> = (0..4).map(|_| initialize(&hub, "2025-11-25")).collect();
    for sid in &sids {
        let m = call_tool(&hub, sid, "everything__echo", r#"{"message":"hi"}"#);
        assert!(m["result"].is_object(), "{m}");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hub_target = hub.addr;
    let workers: Vec<_> = sids
        .iter()
        .cloned()
        .map(|sid| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut worst_failure = Duration::ZERO;
                let (mut ok, mut failed) = (0u32, 0u32);
                let mut reasons = std::collections::BTreeSet::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let m = call_tool(&hub_target, &sid, "everything__echo", r#"{"message":"hi"}"#);
                    if m["result"].is_object() {
                        ok += 1;
                    } else {
                        failed += 1;
                        worst_failure = worst_failure.max(t0.elapsed());
                        reasons.insert(m["error"]["message"].as_str().unwrap_or("").to_string());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (ok, failed, worst_failure, reasons)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    net.link(false);
    let gone = wait_tools(&hub, Duration::from_secs(10), |n| {
        !has(n, "everything__echo")
    });
    assert!(gone.is_some(), "tools stayed listed after the link was cut");
    std::thread::sleep(Duration::from_millis(1500));
    net.link(true);
    let back = wait_tools(&hub, Duration::from_secs(10), |n| {
        has(n, "everything__echo")
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let back =
        back.unwrap_or_else(|| panic!("tools did not return\n{}\n{}", hub.stderr(), agent.log()));
    println!("tools left {gone:?} after the cut, returned {back:?} after the link came back; per session (ok, failed, slowest failure, reasons): {results:?}");
    // How fast is a figure (printed above; benches/scripts/edge-tunnel.sh for measurements);
    // what is asserted is behaviour: every session had calls succeed and fail, and every failure
    // is the lost link itself (the slot going down, or the tunnel stream or link ending), never
    // a call left waiting for the hub's request timeout.
    for (ok, failed, _, reasons) in &results {
        assert!(*ok > 0 && *failed > 0, "{results:?}");
        for r in reasons {
            let link_lost = r.contains("is unavailable")
                || r.contains("stream failed")
                || r.contains("unreachable");
            assert!(
                link_lost && !r.contains("did not answer within"),
                "a failure that is not the lost link: {r:?}"
            );
        }
    }
    // Every session works again after the link is back.
    for sid in &sids {
        let m = call_tool(&hub, sid, "everything__echo", r#"{"message":"again"}"#);
        assert!(m["result"].is_object(), "{m}");
    }
}

#[test]
fn blocked_udp_falls_back_to_tls_over_tcp() {
    require_netns();
    let net = Netns::new(2);
    net.block_udp();
    let certs = Certs::new("edge-udp", &["localhost", &net.hub_ip], &["edge-1"]);
    let port = free_port();
    let listen = format!("{}:{port}", net.hub_ip);
    let (hub, _) = start_edge_hub(&certs, &listen);
    let agent = Agent::start(
        &edge_yaml(&certs, "edge-1", &listen, &net.hub_ip, "auto"),
        Some(&net.ns),
    );
    assert!(
        wait_tools(&hub, Duration::from_secs(30), |n| has(n, "device__cpu")).is_some(),
        "{}\n{}",
        hub.stderr(),
        agent.log()
    );
    let log = hub.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("edge connected"))
        .unwrap_or_default();
    assert!(line.contains("tcp"), "expected the TCP fallback: {line}");
    let sid = initialize(&hub, "2025-11-25");
    let m = call_tool(&hub, &sid, "device__load", "{}");
    assert!(m["result"].is_object(), "{m}");
}

/// A raw SSE stream read by a thread; what arrived so far.
struct Collected {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    sock: std::net::TcpStream,
}

impl Collected {
    /// Sends `request` on a new connection to `addr` and collects what comes back.
    fn open(addr: &str, request: &str) -> Collected {
        use std::io::{Read, Write};
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.write_all(request.as_bytes()).unwrap();
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (t, mut r) = (text.clone(), sock.try_clone().unwrap());
        std::thread::spawn(move || {
            // Bounded: the test shuts the socket down when it is done with it.
            r.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                t.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Collected { text, sock }
    }
    fn has(&self, needle: &str) -> bool {
        self.text.lock().unwrap().contains(needle)
    }
    /// Waits (bounded) for `needle`; whether it came.
    fn wait(&self, needle: &str, within: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if self.has(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.has(needle)
    }
}

impl Drop for Collected {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// The hub's GET relay resumes an upstream GET stream of the same upstream session with
/// `Last-Event-ID`, and the agent replays what it sent while the stream was detached. Here the
/// agent (`serve-local`) is an ordinary HTTP upstream of the hub, so the test can take the
/// upstream session's GET stream away from the hub (a second GET on the agent wins) and give
/// it back, the way a late or reconnecting GET does between hub and edge.
#[test]
fn hub_resumes_an_edge_get_stream_with_last_event_id_and_loses_nothing() {
    let (node, _) = require_node_kit();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../edge-agent/tests/node/script-server.mjs")
        .canonicalize()
        .expect("the edge agent's script server");
    let dir = scratch("edge-resume");
    let cfg = dir.join("edge.yaml");
    std::fs::write(
        &cfg,
        format!(
            "edge: {{ id: edge-r }}\ndevice: {{ enabled: false }}\nservers:\n  - {{ name: script, kind: stdio, command: '{}', args: ['{}'], mode: per-session, prewarm: 1 }}\n",
            node.display(),
            script.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(edge_bin());
    cmd.args(["serve-local", "--config"])
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0"]);
    let agent = spawn_ready(cmd, "listening on ", Duration::from_secs(30));
    let agent_addr = agent.line["listening on ".len()..].trim().to_string();
    let hub = start_hub(
        &format!("listen: 127.0.0.1:0\nworkers: 2\nsse_keepalive: 1s\nupstreams:\n  - name: script\n    url: http://{agent_addr}/mcp/script\n    health_interval: 60s\n"),
        "auto",
    );
    let sid = initialize(&hub, "2025-11-25");
    let client = Collected::open(
        &hub.addr.to_string(),
        &format!("GET /mcp HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nMcp-Session-Id: {sid}\r\nMCP-Protocol-Version: 2025-11-25\r\n\r\n", hub.addr),
    );
    let log = |text: &str| {
        let r = call_tool(
            &hub,
            &sid,
            "script__log_later",
            &format!(r#"{{"ms":0,"text":"{text}"}}"#),
        );
        assert_eq!(r["result"]["content"][0]["text"], "scheduled", "{r}");
    };
    // The hub's GET relay is attached once a log sent now reaches the client live.
    let attached = (0..20).any(|k| {
        log(&format!("before-{k}"));
        client.wait(&format!("before-{k}"), Duration::from_millis(500))
    });
    assert!(
        attached,
        "the hub never relayed a GET-stream log\n{}",
        hub.stderr()
    );
    // The agent's sessions (the hub's, and possibly its health probe's).
    let status = |addr: &str| -> serde_json::Value {
        let r = raw(
            addr.parse().unwrap(),
            b"GET /meshgate/edge/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .unwrap();
        r.json()
    };
    let agent_sids: Vec<String> = status(&agent_addr)["servers"][0]["session_pids"]
        .as_object()
        .expect("per-session status lists sessions")
        .keys()
        .cloned()
        .collect();
    assert!(!agent_sids.is_empty());
    // Take the GET stream away from the hub, send a log while the test holds it, give it back.
    // The hub re-attaches about a second after losing its stream; an attempt where it won the
    // stream back before the log went out delivers that log live, so it is tried again.
    let mut detached = None;
    for k in 0..5 {
        let thieves: Vec<Collected> = agent_sids
            .iter()
            .map(|s| {
                Collected::open(
                    &agent_addr,
                    &format!("GET /mcp/script HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept: text/event-stream\r\nMcp-Session-Id: {s}\r\n\r\n"),
                )
            })
            .collect();
        for t in &thieves {
            assert!(
                t.wait("id: g-", Duration::from_secs(10)),
                "agent GET not opened"
            );
        }
        let text = format!("during-{k}");
        log(&text);
        // Watch every thief at once: waiting on them one after another could outlast the
        // hub's re-attach (the agent's session order is arbitrary).
        let watch_until = Instant::now() + Duration::from_millis(700);
        let stolen = loop {
            if thieves.iter().any(|t| t.has(&text)) {
                break true;
            }
            if Instant::now() > watch_until {
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        drop(thieves);
        if stolen && !client.has(&text) {
            detached = Some(text);
            break;
        }
    }
    let text = detached.expect("no log was ever sent while the hub's GET stream was detached");
    // The hub resumes from the last id it saw: the agent replays the missed log.
    assert!(
        client.wait(&text, Duration::from_secs(10)),
        "the log sent while the hub's upstream GET stream was detached never reached the client\n--- client ---\n{}\n--- hub ---\n{}",
        client.text.lock().unwrap(),
        hub.stderr()
    );
    // And it goes on live.
    log("after-resume");
    assert!(client.wait("after-resume", Duration::from_secs(10)));
}
