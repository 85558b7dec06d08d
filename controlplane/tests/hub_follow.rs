//! Plays "the hub" with `meshgate-control-client` against real `meshgate-control` processes:
//! snapshots followed (catalog add / deprecate / retire, kill switch pushed and lifted), the
//! control plane killed (the watcher keeps its snapshot; a restarted hub starts from disk), the
//! control plane back (catches up), one byte tampered in transit and on disk (refused with a log
//! line and a counter, the old snapshot kept), and two control planes on one PostgreSQL (a change
//! made on one reaches a hub watching the other).

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshgate_control_client::snapshot::ToolVerdict;
use meshgate_control_client::watch::Current;
use meshgate_control_client::{WatchConfig, Watcher};
use serde_json::json;
use support::control::{Api, Control};

/// Log lines of this test process (the watcher logs through `tracing`).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn install() -> Logs {
        let logs = Logs::default();
        let w = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("meshgate_control_client=debug")
            .with_ansi(false)
            .with_writer(move || w.clone())
            .try_init();
        logs
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn hub_key(api: &Api) -> String {
    let v = api
        .post("/v1/keys", json!({"name": "hub-test", "role": "hub"}))
        .await;
    v["key"].as_str().unwrap().to_owned()
}

fn watcher(url: &str, dir: &std::path::Path, token: &str, hub: &str) -> Watcher {
    let mut cfg = WatchConfig::from_url(url, dir).unwrap();
    cfg.token = Some(token.to_owned());
    cfg.hub_id = hub.to_owned();
    cfg.backoff_min = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(500);
    Watcher::start(cfg).unwrap()
}

/// Waits (bounded) until the watcher's snapshot satisfies `pred`.
async fn wait_for(w: &Watcher, what: &str, pred: impl Fn(&Current) -> bool) -> Current {
    let mut rx = w.subscribe();
    let got = match tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|c| pred(c))).await {
        Ok(Ok(c)) => Some(c.clone()),
        _ => None,
    };
    match got {
        Some(c) => c,
        None => panic!(
            "watcher never saw {what} (holds version {:?}, stats {:?}, last refusal {:?})",
            w.current().map(|c| c.version()),
            w.stats(),
            w.stats().last_refusal()
        ),
    }
}

fn version(c: &Current) -> u64 {
    c.as_ref().map(|v| v.version()).unwrap_or(0)
}

async fn latest(api: &Api) -> u64 {
    api.get("/v1/hubs").await["latest_snapshot"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_follows_snapshots_survives_outage_and_refuses_tampering() {
    let logs = Logs::install();
    let tmp = tempfile::tempdir().unwrap();
    let mut cp = Control::start(&tmp.path().join("cp"), &[]);
    let admin = cp.admin();
    let token = hub_key(&admin).await;
    let state = tmp.path().join("hub1");

    // --- 1. follow: first contact pins the key (TOFU) and fetches the newest snapshot ---
    let w = watcher(&cp.url, &state, &token, "hub-1");
    let v0 = latest(&admin).await;
    wait_for(&w, "the first snapshot", |c| version(c) == v0).await;
    assert!(state.join("control-key.pub").exists());
    assert!(state.join("control-snapshot.json").exists());

    // add a server with two tools -> the hub sees them (Active); an unapproved third stays Hidden
    admin
        .put("/v1/zones/dc1", json!({"description": "main"}))
        .await;
    admin
        .put(
            "/v1/servers/files",
            json!({"kind": "http", "zone": "dc1", "owner": "storage-team",
                   "endpoints": ["http://127.0.0.1:9/mcp"], "version": "1.2.0"}),
        )
        .await;
    admin.put("/v1/servers/files/tools/read", json!({})).await;
    admin
        .put(
            "/v1/servers/files/tools/read_v2",
            json!({"version": "2.0.0"}),
        )
        .await;
    let hub_api = cp.client(Some(&token));
    hub_api
        .post(
            "/v1/hubs/hub-1/discovered",
            json!({"server": "files", "tools": ["read", "read_v2", "delete"]}),
        )
        .await;
    let c = wait_for(&w, "files/read active", |c| {
        c.as_ref()
            .is_some_and(|s| s.snapshot.tool_verdict("files", "read_v2") == ToolVerdict::Active)
    })
    .await;
    let s = &c.as_ref().unwrap().snapshot;
    assert_eq!(s.tool_verdict("files", "read"), ToolVerdict::Active);
    assert_eq!(
        s.tool_verdict("files", "delete"),
        ToolVerdict::Hidden,
        "reported, not approved"
    );
    assert_eq!(s.server("files").unwrap().zone, "dc1");

    // deprecate, then retire naming the replacement
    admin
        .post(
            "/v1/servers/files/tools/read/lifecycle",
            json!({"state": "deprecated", "sunset": "2027-06-30", "replacement": "files__read_v2"}),
        )
        .await;
    wait_for(&w, "read deprecated", |c| {
        c.as_ref().is_some_and(|s| {
            matches!(
                s.snapshot.tool_verdict("files", "read"),
                ToolVerdict::Deprecated {
                    sunset: "2027-06-30",
                    ..
                }
            )
        })
    })
    .await;
    admin
        .post(
            "/v1/servers/files/tools/read/lifecycle",
            json!({"state": "retired", "replacement": "files__read_v2"}),
        )
        .await;
    wait_for(&w, "read retired", |c| {
        c.as_ref().is_some_and(|s| {
            s.snapshot.tool_verdict("files", "read")
                == ToolVerdict::Retired {
                    replacement: Some("files__read_v2"),
                }
        })
    })
    .await;
    // an operator approves the reported tool
    admin
        .post(
            "/v1/servers/files/tools/delete/approve",
            json!({"approved": true}),
        )
        .await;
    wait_for(&w, "delete approved", |c| {
        c.as_ref()
            .is_some_and(|s| s.snapshot.tool_verdict("files", "delete") == ToolVerdict::Active)
    })
    .await;

    // --- 2. kill switch: pushed at once, per tool then global, then lifted ---
    let t0 = Instant::now();
    admin
        .post(
            "/v1/kill",
            json!({"scope": "tool", "target": "files/delete", "reason": "incident 7"}),
        )
        .await;
    let c = wait_for(&w, "tool kill", |c| {
        c.as_ref()
            .is_some_and(|s| s.snapshot.killed("files", "delete").is_some())
    })
    .await;
    let tool_kill = t0.elapsed();
    let s = &c.as_ref().unwrap().snapshot;
    assert_eq!(s.killed("files", "delete").unwrap().reason, "incident 7");
    assert!(s.killed("files", "read_v2").is_none());
    let t1 = Instant::now();
    let (ok, _, err) = cp.cli(&["kill", "global", "--reason", "drill"], None);
    assert!(ok, "{err}");
    wait_for(&w, "global kill", |c| {
        c.as_ref()
            .is_some_and(|s| s.snapshot.killed("other", "x").is_some())
    })
    .await;
    let global_kill = t1.elapsed();
    let (ok, _, err) = cp.cli(&["kill", "global", "--lift"], None);
    assert!(ok, "{err}");
    wait_for(&w, "global kill lifted", |c| {
        c.as_ref()
            .is_some_and(|s| s.snapshot.killed("other", "x").is_none())
    })
    .await;
    println!(
        "kill switch, API call -> verified snapshot at the hub: tool {} ms, global (CLI process) {} ms",
        tool_kill.as_millis(),
        global_kill.as_millis()
    );
    // the control plane sees the hub watching, on the newest version (bounded wait: between
    // two polls the hub is briefly not waiting)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hubs = admin.get("/v1/hubs").await;
        let me = hubs["hubs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["id"] == "hub-1")
            .cloned();
        if me.as_ref().is_some_and(|m| {
            m["watching"]["polling"].as_u64() >= Some(1) && m["snapshot_current"] == true
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "control plane never listed hub-1 as current: {me:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // --- 3. control plane killed: the hub keeps its snapshot ---
    let held = version(&w.current());
    cp.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.stats().errors.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "watcher never noticed the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        version(&w.current()),
        held,
        "snapshot kept while the control plane is gone"
    );
    assert!(!w.stats().connected.load(Ordering::Relaxed));
    // a hub restarted meanwhile starts from its snapshot on disk, before any network contact
    w.shutdown();
    let w = watcher(&cp.url, &state, &token, "hub-1");
    let c = w.current();
    assert_eq!(version(&c), held, "restarted hub serves from disk");
    assert_eq!(
        c.as_ref().unwrap().snapshot.tool_verdict("files", "delete"),
        ToolVerdict::Active
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(version(&w.current()), held);

    // --- 4. control plane back: the hub catches up ---
    cp.restart();
    let admin = cp.admin();
    admin
        .post(
            "/v1/kill",
            json!({"scope": "upstream", "target": "files", "reason": "maintenance"}),
        )
        .await;
    let newest = latest(&admin).await;
    assert!(newest > held);
    let c = wait_for(&w, "the newest snapshot after the outage", |c| {
        version(c) == newest
    })
    .await;
    assert!(c
        .as_ref()
        .unwrap()
        .snapshot
        .killed("files", "read_v2")
        .is_some());
    assert!(
        w.stats().errors.load(Ordering::Relaxed) >= 1,
        "it tried while the control plane was down"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.stats().reconnects.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "reconnection not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // --- 5. one byte tampered in transit: refused, old kept, log line + counter ---
    let proxy = TamperProxy::start(&cp.addr);
    let key = admin.get("/v1/snapshots/key").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let state2 = tmp.path().join("hub2");
    let w2 = watcher(
        &format!("http://{}#key={key}", proxy.addr),
        &state2,
        &token,
        "hub-2",
    );
    wait_for(&w2, "newest via the proxy", |c| version(c) == newest).await;
    proxy.tamper.store(true, Ordering::SeqCst);
    admin
        .post(
            "/v1/kill/lift",
            json!({"scope": "upstream", "target": "files"}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while w2.stats().refused.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "tampered snapshot not refused: {:?}",
            w2.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        proxy.flipped.load(Ordering::SeqCst),
        "the proxy changed a byte"
    );
    assert_eq!(version(&w2.current()), newest, "old snapshot kept");
    let why = w2.stats().last_refusal().unwrap();
    assert!(why.contains("hash mismatch"), "{why}");
    assert!(logs
        .text()
        .contains("control snapshot refused; keeping the one held"));
    // untampered again: the hub takes the real one
    proxy.tamper.store(false, Ordering::SeqCst);
    let lifted = latest(&admin).await;
    let c = wait_for(&w2, "the real snapshot", |c| version(c) == lifted).await;
    assert!(c
        .as_ref()
        .unwrap()
        .snapshot
        .killed("files", "read_v2")
        .is_none());

    // --- 6. one byte tampered on disk: refused at start, then fetched fresh ---
    w2.shutdown();
    let file = state2.join("control-snapshot.json");
    let mut bytes = std::fs::read(&file).unwrap();
    let i = find(&bytes, b"\"owner\":\"storage-team\"").expect("owner in snapshot") + 10;
    bytes[i] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let w3 = watcher(
        &format!("http://{}#key={key}", cp.addr),
        &state2,
        &token,
        "hub-2",
    );
    assert!(w3.current().is_none(), "tampered disk snapshot not served");
    assert_eq!(w3.stats().refused.load(Ordering::Relaxed), 1);
    assert!(w3.stats().last_refusal().unwrap().starts_with("on disk:"));
    wait_for(&w3, "fresh snapshot after the bad disk copy", |c| {
        version(c) == lifted
    })
    .await;
    assert!(logs.text().contains("control snapshot on disk refused"));
    w3.shutdown();
    w.shutdown();
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A loopback TCP proxy that, while `tamper` is set, changes one digit of `created_ms` inside
/// snapshot responses (same length, so the HTTP framing stays valid).
struct TamperProxy {
    addr: String,
    tamper: Arc<AtomicBool>,
    flipped: Arc<AtomicBool>,
}

impl TamperProxy {
    fn start(upstream: &str) -> TamperProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let tamper = Arc::new(AtomicBool::new(false));
        let flipped = Arc::new(AtomicBool::new(false));
        let (t, f, up) = (tamper.clone(), flipped.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (t, f, up) = (t.clone(), f.clone(), up.clone());
                std::thread::spawn(move || {
                    let Ok(server) = TcpStream::connect(&up) else {
                        return;
                    };
                    let (mut c_in, mut s_out) =
                        (conn.try_clone().unwrap(), server.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c_in, &mut s_out);
                        let _ = s_out.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut s_in, mut c_out) = (server, conn);
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        let n = match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = &mut buf[..n];
                        if t.load(Ordering::SeqCst) {
                            if let Some(i) = find(chunk, b"\"created_ms\":") {
                                let j = i + 13;
                                if j < chunk.len() {
                                    chunk[j] = if chunk[j] == b'1' { b'2' } else { b'1' };
                                    f.store(true, Ordering::SeqCst);
                                }
                            }
                        }
                        if c_out.write_all(chunk).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        TamperProxy {
            addr,
            tamper,
            flipped,
        }
    }
}

/// Two control planes on one PostgreSQL (HA): a change made through one reaches a hub that
/// watches the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_on_one_postgres_serve_the_same_snapshots() {
    let pg = support::pg::Pg::start();
    pg.create_db("ha");
    let tmp = tempfile::tempdir().unwrap();
    // HA instances share the signing key and the edge CA through the database keyring.
    let a = Control::start(&tmp.path().join("a"), &["--db", &pg.url("ha")]);
    let b = Control::start(&tmp.path().join("b"), &["--db", &pg.url("ha")]);
    assert_eq!(
        a.admin().get("/v1/snapshots/key").await,
        b.admin().get("/v1/snapshots/key").await,
        "one signing key"
    );
    assert_eq!(
        a.client(None)
            .c
            .get("/v1/edges/ca", Duration::from_secs(5))
            .await
            .unwrap()
            .body,
        b.client(None)
            .c
            .get("/v1/edges/ca", Duration::from_secs(5))
            .await
            .unwrap()
            .body,
        "one edge CA"
    );
    let token = hub_key(&a.admin()).await;
    let w = watcher(&b.url, &tmp.path().join("hub"), &token, "hub-ha");
    let v = latest(&b.admin()).await;
    wait_for(&w, "first snapshot from b", |c| version(c) == v).await;
    a.admin()
        .post("/v1/kill", json!({"scope": "global", "reason": "from a"}))
        .await;
    let c = wait_for(&w, "a's kill via b", |c| {
        c.as_ref()
            .is_some_and(|s| s.snapshot.killed("x", "y").is_some())
    })
    .await;
    assert_eq!(c.as_ref().unwrap().snapshot.kill.active[0].reason, "from a");
    // both instances publish into one version sequence
    b.admin()
        .post("/v1/kill/lift", json!({"scope": "global"}))
        .await;
    let vb = latest(&b.admin()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while latest(&a.admin()).await != vb {
        assert!(Instant::now() < deadline, "a never served b's version {vb}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for(&w, "b's lift", |c| {
        c.as_ref()
            .is_some_and(|s| s.snapshot.killed("x", "y").is_none())
    })
    .await;
    w.shutdown();
}

/// The kill switch reaches three watching hubs: the time from the API call to a verified
/// snapshot holding the kill at each of them is measured and printed (not asserted: timing on
/// a shared machine; BENCHMARKS-style figure for the report). What is asserted: every hub gets
/// it, and the lift, each within a bounded wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_reaches_three_hubs() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = Control::start(&tmp.path().join("cp"), &[]);
    let admin = cp.admin();
    let token = hub_key(&admin).await;
    let hubs: Vec<Watcher> = (0..3)
        .map(|i| {
            watcher(
                &cp.url,
                &tmp.path().join(format!("hub{i}")),
                &token,
                &format!("hub-{i}"),
            )
        })
        .collect();
    let v0 = latest(&admin).await;
    for w in &hubs {
        wait_for(w, "the first snapshot", |c| version(c) == v0).await;
    }
    // every hub is parked in its long-poll before the press (so the figure is the push path)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin.get("/v1/hubs").await;
        let polling = v["hubs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["watching"]["polling"].as_u64() >= Some(1))
            .count();
        if polling == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "hubs not all polling: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut rounds = Vec::new();
    for round in 0..5 {
        let t0 = Instant::now();
        let tasks: Vec<_> = hubs
            .iter()
            .map(|w| {
                let mut rx = w.subscribe();
                tokio::spawn(async move {
                    let ok = tokio::time::timeout(
                        Duration::from_secs(10),
                        rx.wait_for(|c| {
                            c.as_ref()
                                .is_some_and(|s| s.snapshot.killed("any", "tool").is_some())
                        }),
                    )
                    .await
                    .is_ok();
                    (ok, t0.elapsed())
                })
            })
            .collect();
        admin
            .post(
                "/v1/kill",
                json!({"scope": "global", "reason": format!("drill {round}")}),
            )
            .await;
        let mut worst = Duration::ZERO;
        for t in tasks {
            let (ok, took) = t.await.unwrap();
            assert!(ok, "a hub never received the kill");
            worst = worst.max(took);
        }
        rounds.push(worst.as_millis());
        admin
            .post("/v1/kill/lift", json!({"scope": "global"}))
            .await;
        for w in &hubs {
            wait_for(w, "the lift", |c| {
                c.as_ref()
                    .is_some_and(|s| s.snapshot.killed("any", "tool").is_none())
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rounds.sort();
    println!(
        "kill switch, API call -> verified snapshot at all 3 hubs (5 rounds, slowest hub): {rounds:?} ms"
    );
    for w in hubs {
        w.shutdown();
    }
}
