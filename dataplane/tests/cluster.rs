//! Hub replicas with a shared session store, end to end and with real processes: three
//! `meshgate` replicas, a real `redis-server`, three replicas of one upstream (the loadtest mock),
//! nginx in front (the `deploy/nginx` recipe: consistent hash on `Mcp-Session-Id`), concurrent
//! sessions, and the official TypeScript SDK client.
//!
//! What must hold: killing an upstream replica loses no session (only calls in flight on it
//! fail); killing a hub replica loses no session (the next replica on the ring takes its
//! sessions over from Redis); a request sent to a replica that does not own the session
//! succeeds through one internal hop; a broken store record reads as an unknown session.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::mock::{MockConfig, MockServer};
use support::*;

/// A `redis-server` child on a free port; killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start() -> Redis {
        let dir = scratch("redis");
        let port = closed_port();
        let mut r = Redis {
            child: None,
            port,
            dir,
        };
        r.spawn();
        r
    }
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        self.child = Some(child);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start");
    }
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// nginx in front of the hubs, configured like `deploy/nginx/meshgate.conf`.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(hubs: &[SocketAddr]) -> Nginx {
        let dir = scratch("nginx");
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let port = closed_port();
        let servers: String = hubs
            .iter()
            .map(|a| format!("        server {a} max_fails=1 fail_timeout=3s;\n"))
            .collect();
        let conf = format!(
            "worker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log warn;\ndaemon off;\nevents {{ worker_connections 1024; }}\nhttp {{\n    access_log off;\n    client_body_temp_path {dir}/tmp;\n    proxy_temp_path {dir}/tmp;\n    map $http_mcp_session_id $mg_key {{ \"\" $request_id; default $http_mcp_session_id; }}\n    upstream meshgate_hubs {{\n        hash $mg_key consistent;\n{servers}        keepalive 16;\n    }}\n    server {{\n        listen 127.0.0.1:{port};\n        location /mcp {{\n            proxy_pass http://meshgate_hubs;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            proxy_set_header Host 127.0.0.1;\n            proxy_buffering off;\n            proxy_read_timeout 1h;\n            proxy_next_upstream error timeout http_502 http_503;\n            proxy_next_upstream_tries 3;\n            proxy_connect_timeout 1s;\n        }}\n    }}\n}}\n",
            dir = dir.display()
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        use std::os::unix::process::CommandExt;
        // Its own process group: nginx forks a worker, and both must go at the end.
        let mut child = Command::new(nginx_bin())
            .args([
                "-p",
                &dir.display().to_string(),
                "-c",
                &path.display().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("nginx must be installed (.ci/run installs it)");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Nginx { child, port };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill_group(child.id());
        let _ = child.kill();
        let _ = child.wait();
        panic!("nginx did not start");
    }
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_bin() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("nginx")
}

/// A store key file: active key `k1` and the index key (32 bytes each, base64).
fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("store.keys");
    dataplane::store::generate_key_file(&path).expect("key file");
    path
}

struct Cluster {
    hubs: Vec<Option<Hub>>,
    addrs: Vec<SocketAddr>,
}

fn start_cluster(redis: &Redis, upstream_urls: &[String], keys: &Path) -> Cluster {
    let ports: Vec<u16> = (0..3).map(|_| closed_port()).collect();
    let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let replicas = upstream_urls
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut hubs = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let yaml = format!(
            "listen: 127.0.0.1:{p}\nworkers: 2\ncluster:\n  advertise: \"{me}\"\n  peers: [{peers}]\nstore:\n  kind: redis\n  url: \"{redis}\"\n  keys: \"{keys}\"\nupstreams:\n  - name: mock\n    replicas: [{replicas}]\n    health_interval: 500ms\n",
            me = peers[i],
            peers = peers
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", "),
            redis = redis.url(),
            keys = keys.display(),
        );
        hubs.push(Some(start_hub(&yaml, "auto")));
    }
    let addrs = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    Cluster { hubs, addrs }
}

fn hub_logs(c: &Cluster) -> String {
    c.hubs
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            h.as_ref()
                .map(|h| format!("--- hub {i} ---\n{}", h.stderr()))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which hub (index) owns a session: the first on the hubs' ring for its id (the ring is
/// built the same way as in the hub: sorted names, default points per node).
fn owner_of(c: &Cluster, sid: &str) -> Option<usize> {
    let mut names: Vec<String> = c.addrs.iter().map(|a| a.to_string()).collect();
    names.sort();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let ring = dataplane::ring::Ring::new(&refs, dataplane::ring::DEFAULT_VNODES);
    let name = &names[ring.primary(sid.as_bytes())?];
    c.addrs.iter().position(|a| &a.to_string() == name)
}

#[test]
fn sessions_survive_the_loss_of_an_upstream_replica_and_of_a_hub_replica() {
    let redis = Redis::start();
    let dir = scratch("cluster");
    let keys = key_file(&dir);
    let mut mocks: Vec<_> = (0..3)
        .map(|_| MockServer::start(MockConfig::default()).unwrap())
        .collect();
    let urls: Vec<String> = mocks.iter().map(|m| m.url()).collect();
    let mut cluster = start_cluster(&redis, &urls, &keys);
    let lb = Nginx::start(&cluster.addrs);
    let lb_addr = lb.addr();

    // Sessions through the load balancer; each is owned by the replica that minted it.
    let sids: Vec<String> = (0..24)
        .map(|_| initialize(&lb_addr, "2025-11-25"))
        .collect();
    for sid in &sids {
        let m = call_tool(&lb_addr, sid, "mock__tool_0", "{}");
        assert!(m["result"].is_object(), "{m}\n{}", hub_logs(&cluster));
    }
    // The official SDK client runs alongside for the whole test.
    let (node, kit) = require_node_kit();
    let sdk = Command::new(&node)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/cluster-client.mjs"))
        .args([
            "--url",
            &format!("http://{lb_addr}/mcp"),
            "--tool",
            "mock__tool_1",
            "--seconds",
            "9",
        ])
        .current_dir(&kit)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cluster-client.mjs");

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = sids
        .iter()
        .cloned()
        .map(|sid| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed, mut lost) = (0u32, 0u32, 0u32);
                let mut last_ok = true;
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = post(
                        &lb_addr,
                        Some(&sid),
                        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"mock__tool_0","arguments":{}}}"#,
                        &[],
                    );
                    if r.status == 404 {
                        lost += 1;
                    }
                    let v = if r.status == 200 {
                        r.messages()
                            .into_iter()
                            .rev()
                            .find(|m| m.get("id").is_some())
                            .unwrap_or_default()
                    } else {
                        serde_json::Value::Null
                    };
                    last_ok = v["result"].is_object();
                    if last_ok {
                        ok += 1;
                    } else {
                        failed += 1;
                        if errors.len() < 3 {
                            errors.push(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
                (sid, ok, failed, lost, last_ok, errors)
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(1500));
    // 1. An upstream replica dies.
    mocks.remove(0).shutdown();
    std::thread::sleep(Duration::from_millis(2500));
    // 2. The hub replica owning the most sessions dies (kill -9).
    let mut owned = [0usize; 3];
    for sid in &sids {
        if let Some(i) = owner_of(&cluster, sid) {
            owned[i] += 1;
        }
    }
    let victim = (0..3).max_by_key(|i| owned[*i]).unwrap();
    println!("sessions minted per hub replica: {owned:?}; killing replica {victim}");
    if let Some(mut h) = cluster.hubs[victim].take() {
        let _ = h.child.kill();
        let _ = h.child.wait();
    }
    std::thread::sleep(Duration::from_millis(4000));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let sdk_out = sdk.wait_with_output().unwrap();
    let sdk_text = String::from_utf8_lossy(&sdk_out.stdout).into_owned();
    let (failed_total, lost_total): (u32, u32) =
        results.iter().fold((0, 0), |(f, l), r| (f + r.2, l + r.3));
    println!(
        "calls failed in total: {failed_total}; 404s: {lost_total}; per session: {:?}",
        results.iter().map(|r| (r.1, r.2)).collect::<Vec<_>>()
    );
    println!("SDK client: {sdk_text}");
    for (sid, ok, _failed, lost, last_ok, errors) in &results {
        assert_eq!(
            *lost,
            0,
            "session {sid} was lost (404): {errors:?}\n{}",
            hub_logs(&cluster)
        );
        assert!(
            *last_ok && *ok > 0,
            "session {sid} did not continue: {errors:?}\n{}",
            hub_logs(&cluster)
        );
    }
    assert!(
        sdk_out.status.success() && sdk_text.contains("session kept"),
        "SDK client: {sdk_text}\n{}\n{}",
        String::from_utf8_lossy(&sdk_out.stderr),
        hub_logs(&cluster)
    );
    // Every check of cluster-client.mjs ran and passed, none missing.
    assert_checks(
        &sdk_text,
        &[
            "session id unchanged throughout",
            "no call answered 404 (session never lost)",
            "calls succeeded during the failovers",
            "final call after the run succeeded",
        ],
        &[],
    );
    // The store holds no raw session id.
    let keys_listed = redis.cli(&["--scan"]);
    for sid in &sids {
        assert!(
            !keys_listed.contains(sid.as_str()),
            "raw session id in the store"
        );
    }
    drop(lb);
}

#[test]
fn a_request_to_a_replica_that_does_not_own_the_session_takes_one_hop() {
    let redis = Redis::start();
    let dir = scratch("cluster-hop");
    let keys = key_file(&dir);
    let mock = MockServer::start(MockConfig::default()).unwrap();
    let cluster = start_cluster(&redis, &[mock.url()], &keys);
    let a = cluster.addrs[0];
    let sid = initialize(&a, "2025-11-25");
    for (i, other) in cluster.addrs.iter().enumerate().skip(1) {
        let m = call_tool(other, &sid, "mock__tool_0", "{}");
        assert!(
            m["result"].is_object(),
            "via replica {i}: {m}\n{}",
            hub_logs(&cluster)
        );
    }
    // Exactly one session exists upstream: the hops reached the owner, nobody took over.
    let created = mock.stats().sessions_created.load(Ordering::Relaxed);
    assert!(
        created <= 4,
        "{created} upstream sessions (3 probes + 1 expected)"
    );
    // The owner logs nothing about takeover; the non-owners forwarded.
    let text = hub_logs(&cluster);
    assert!(!text.contains("took the session over"), "{text}");
}

#[test]
fn a_tampered_store_record_reads_as_an_unknown_session() {
    let redis = Redis::start();
    let dir = scratch("cluster-tamper");
    let keys = key_file(&dir);
    let mock = MockServer::start(MockConfig::default()).unwrap();
    let mut cluster = start_cluster(&redis, &[mock.url()], &keys);
    let a = cluster.addrs[0];
    let sid = initialize(&a, "2025-11-25");
    assert!(call_tool(&a, &sid, "mock__tool_0", "{}")["result"].is_object());
    // Wait for the record, then flip one character of every stored value.
    let t0 = Instant::now();
    let mut keys_listed = String::new();
    while t0.elapsed() < Duration::from_secs(5) {
        keys_listed = redis.cli(&["--scan"]);
        if !keys_listed.trim().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = keys_listed
        .lines()
        .next()
        .expect("a record in the store")
        .trim()
        .to_string();
    let v = redis.cli(&["GET", &key]);
    let v = v.trim_end_matches('\n');
    let mut b = v.as_bytes().to_vec();
    let i = b.len() - 3;
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    redis.cli(&["SET", &key, std::str::from_utf8(&b).unwrap()]);
    // The owner dies; the takeover finds a broken record: 404, and a log line says why.
    if let Some(mut h) = cluster.hubs[0].take() {
        let _ = h.child.kill();
        let _ = h.child.wait();
    }
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"mock__tool_0","arguments":{}}}"#;
    let mut r = post(&cluster.addrs[1], Some(&sid), call, &[]);
    // A killed io_uring process's listener can still take a connection for a moment and then
    // drop it; the forwarding replica cannot tell whether the request ran, so that first call
    // fails asking for a retry. The retry is taken over here.
    if r.status == 200 && r.text().contains("retry") {
        r = post(&cluster.addrs[1], Some(&sid), call, &[]);
    }
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    let t0 = Instant::now();
    let mut logged = false;
    while t0.elapsed() < Duration::from_secs(5) && !logged {
        logged = cluster.hubs[1..].iter().flatten().any(|h| {
            h.stderr().to_lowercase().contains("decrypt")
                || h.stderr().to_lowercase().contains("tamper")
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(logged, "{}", hub_logs(&cluster));
}

#[test]
fn redis_down_keeps_sessions_and_new_ones_working() {
    let mut redis = Redis::start();
    let dir = scratch("cluster-redis-down");
    let keys = key_file(&dir);
    let mock = MockServer::start(MockConfig::default()).unwrap();
    let cluster = start_cluster(&redis, &[mock.url()], &keys);
    let a = cluster.addrs[0];
    let sid = initialize(&a, "2025-11-25");
    redis.stop();
    std::thread::sleep(Duration::from_millis(300));
    // Existing session: still served from memory.
    assert!(call_tool(&a, &sid, "mock__tool_0", "{}")["result"].is_object());
    // New sessions are still created and served (the calls' own timeouts bound the wait; how
    // much a down store costs a new session is not gated on a shared machine).
    let sid2 = initialize(&a, "2025-11-25");
    assert!(call_tool(&a, &sid2, "mock__tool_0", "{}")["result"].is_object());
    // A metric and a log line say the store is down.
    let t0 = Instant::now();
    let mut seen = false;
    while t0.elapsed() < Duration::from_secs(5) && !seen {
        let m = raw(
            a,
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            Duration::from_secs(2),
        )
        .unwrap();
        let body = String::from_utf8_lossy(&m.body).into_owned();
        seen = body.contains("meshgate_store_up 0")
            && cluster.hubs[0].as_ref().unwrap().stderr().contains("store");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen, "{}", hub_logs(&cluster));
    // Redis back: writes resume (a new session's record appears).
    redis.spawn();
    let t0 = Instant::now();
    let mut stored = false;
    while t0.elapsed() < Duration::from_secs(10) && !stored {
        let _ = initialize(&a, "2025-11-25");
        stored = !redis.cli(&["--scan"]).trim().is_empty();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(stored, "{}", hub_logs(&cluster));
}
