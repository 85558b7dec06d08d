//! Upstream replicas end to end, over real sockets: the real hub binary in front of three
//! in-process mock replicas (`loadtest::mock`). Sessions spread over the replicas with bounded
//! loads and stick to theirs; killing a replica fails only the calls in flight on it (read-only
//! tools are retried transparently) and moves its sessions to the survivors; a replica restarted
//! on its port is taken back once the prober sees it. Config errors name the field.

// Tests drive the hub from plain threads, not monoio workers, so blocking sleeps are fine here.
#![allow(clippy::disallowed_methods)]
// Helper functions in an integration test are test code too.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loadtest::mock::{MockConfig, MockHandle, MockServer, ServiceTime};
use support::*;

fn mock(name: &str, listen: SocketAddr, service: Duration) -> MockHandle {
    MockServer::start(MockConfig {
        listen,
        server_name: name.to_string(),
        tag_results: true,
        read_only_tools: 1,
        service_time: if service.is_zero() {
            ServiceTime::Zero
        } else {
            ServiceTime::Fixed(service)
        },
        ..MockConfig::default()
    })
    .unwrap()
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn hub_for(mocks: &[&MockHandle]) -> Hub {
    let urls: Vec<String> = mocks.iter().map(|m| m.url()).collect();
    start_hub(
        &format!(
            "listen: 127.0.0.1:0\nworkers: 2\nupstreams:\n  - name: m\n    replicas: [{}]\n    health_interval: 300ms\n    request_timeout: 10s\n",
            urls.join(", ")
        ),
        "auto",
    )
}

/// One call's outcome: `Ok(replica name)` from the tagged result, or `Err(message)`.
fn call(hub: &Hub, sid: &str, tool: &str) -> Result<String, String> {
    let m = call_tool(hub, sid, tool, "{}");
    if let Some(text) = m["result"]["content"][0]["text"].as_str() {
        return Ok(text.split(':').next().unwrap_or("").to_string());
    }
    Err(m["error"]["message"]
        .as_str()
        .map_or_else(|| m.to_string(), str::to_string))
}

fn created(m: &MockHandle) -> u64 {
    m.stats().sessions_created.load(Ordering::Relaxed)
}

fn metrics(hub: &Hub) -> String {
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        hub.addr
    );
    raw(hub.addr, req.as_bytes(), Duration::from_secs(5))
        .map(|r| r.text())
        .unwrap_or_default()
}

/// Runs `f` on `threads` threads over `items`, collecting the results in order.
fn par<T: Send + Sync + 'static, R: Send + 'static>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(&T) -> R + Send + Sync + 'static,
) -> Vec<R> {
    let items = Arc::new(items);
    let f = Arc::new(f);
    let n = items.len();
    let out: Arc<Mutex<Vec<Option<R>>>> = Arc::new(Mutex::new((0..n).map(|_| None).collect()));
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (items, f, out) = (items.clone(), f.clone(), out.clone());
            std::thread::spawn(move || {
                for i in (t..n).step_by(threads) {
                    let r = f(&items[i]);
                    out.lock().unwrap()[i] = Some(r);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let v = std::mem::take(&mut *out.lock().unwrap());
    v.into_iter().map(Option::unwrap).collect()
}

#[test]
fn sessions_spread_over_replicas_and_stick() {
    let mocks: Vec<MockHandle> = (0..3)
        .map(|i| mock(&format!("r{i}"), any_port(), Duration::ZERO))
        .collect();
    let hub = Arc::new(hub_for(&mocks.iter().collect::<Vec<_>>()));
    let sids: Vec<String> = (0..60).map(|_| initialize(&*hub, "2025-11-25")).collect();
    let h = hub.clone();
    let seen = par(sids, 6, move |sid| {
        (0..3)
            .map(|_| call(&h, sid, "m__tool_1").unwrap())
            .collect::<Vec<String>>()
    });
    let mut per: HashMap<String, usize> = HashMap::new();
    for calls in &seen {
        assert!(
            calls.iter().all(|r| r == &calls[0]),
            "a session changed replica: {calls:?}"
        );
        *per.entry(calls[0].clone()).or_default() += 1;
    }
    let bound = (1.25f64 * 60.0 / 3.0).ceil() as usize;
    eprintln!("sessions per replica: {per:?} (bound {bound})");
    for (i, m) in mocks.iter().enumerate() {
        let n = per.get(&format!("r{i}")).copied().unwrap_or(0);
        assert!(
            n > 0 && n <= bound,
            "replica r{i} has {n} sessions: {per:?}"
        );
        // Each hub session opened one upstream session on its replica (plus the prober's own),
        // and all its calls went there.
        let calls = m.stats().calls.load(Ordering::Relaxed);
        assert_eq!(calls, 3 * n as u64, "r{i}: calls");
        let c = created(m);
        assert!(
            c >= n as u64 && c <= n as u64 + 3,
            "r{i}: {c} sessions for {n}"
        );
    }
    let text = metrics(&hub);
    assert!(
        text.contains(&format!(
            "meshgate_upstream_replica_up{{upstream=\"m\",replica=\"{}\"}} 1",
            mocks[1].url()
        )),
        "{text}"
    );
}

#[derive(Debug, Clone)]
struct Record {
    at: Instant,
    result: Result<String, String>,
}

#[test]
fn killed_replica_fails_only_calls_in_flight_and_comes_back() {
    let service = Duration::from_millis(40);
    let mut mocks: Vec<Option<MockHandle>> = (0..3)
        .map(|i| Some(mock(&format!("r{i}"), any_port(), service)))
        .collect();
    let urls: Vec<String> = mocks.iter().map(|m| m.as_ref().unwrap().url()).collect();
    let addrs: Vec<SocketAddr> = mocks.iter().map(|m| m.as_ref().unwrap().addr()).collect();
    let hub = Arc::new(hub_for(
        &mocks
            .iter()
            .map(|m| m.as_ref().unwrap())
            .collect::<Vec<_>>(),
    ));
    // 30 sessions, one thread each; even ones call a plain tool, odd ones a read-only one.
    let sids: Vec<String> = (0..30).map(|_| initialize(&*hub, "2025-11-25")).collect();
    let first: Vec<String> = sids
        .iter()
        .map(|sid| call(&hub, sid, "m__tool_1").unwrap())
        .collect();
    let victim = "r1";
    let on_victim: Vec<usize> = (0..30).filter(|&i| first[i] == victim).collect();
    assert!(!on_victim.is_empty(), "no session on {victim}: {first:?}");
    let before_survivors =
        created(mocks[0].as_ref().unwrap()) + created(mocks[2].as_ref().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let logs: Vec<Arc<Mutex<Vec<Record>>>> = (0..30).map(|_| Arc::default()).collect();
    let threads: Vec<_> = (0..30)
        .map(|i| {
            let (hub, sid, stop, log) =
                (hub.clone(), sids[i].clone(), stop.clone(), logs[i].clone());
            let tool = if i % 2 == 0 { "m__tool_1" } else { "m__tool_0" };
            std::thread::spawn(move || {
                // Keep calling until told to stop, and then until the last call succeeded.
                for _ in 0..500 {
                    let result = call(&hub, &sid, tool);
                    let ok = result.is_ok();
                    log.lock().unwrap().push(Record {
                        at: Instant::now(),
                        result,
                    });
                    if stop.load(Ordering::Relaxed) && ok {
                        break;
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(600));
    let killed_at = Instant::now();
    mocks[1].take().unwrap().shutdown();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let mut failed = 0;
    let mut recovered = Duration::ZERO;
    for (i, log) in logs.iter().enumerate() {
        let log = log.lock().unwrap();
        assert!(
            log.last().unwrap().result.is_ok(),
            "session {i} ended failing"
        );
        for (k, rec) in log.iter().enumerate() {
            if let Err(e) = &rec.result {
                failed += 1;
                assert!(i % 2 == 0, "a read-only call failed (session {i}): {e}");
                assert!(
                    e.contains(&urls[1]) && e.contains("retry"),
                    "error names the replica: {e}"
                );
                assert!(
                    rec.at >= killed_at,
                    "a call failed before the kill (session {i}): {e}"
                );
                // The next call of this session succeeds.
                let next = &log[k + 1].result;
                assert!(next.is_ok(), "session {i} failed twice in a row: {next:?}");
            }
        }
        if on_victim.contains(&i) {
            let back = log
                .iter()
                .find(|r| r.at >= killed_at && r.result.is_ok())
                .unwrap();
            recovered = recovered.max(back.at - killed_at);
            let last = log.last().unwrap().result.as_ref().unwrap();
            assert_ne!(last, victim, "session {i} still on the killed replica");
        } else {
            // Sessions on healthy replicas are untouched.
            let last = log.last().unwrap().result.as_ref().unwrap();
            assert_eq!(
                last, &first[i],
                "session {i} moved although its replica lived"
            );
        }
    }
    let read_only = on_victim.iter().filter(|&&i| i % 2 == 1).count();
    eprintln!(
        "killed {victim} with {} of 30 sessions on it ({read_only} calling a read-only tool, never failing): {failed} calls failed (in flight); every affected session succeeded again within {recovered:?}",
        on_victim.len()
    );
    // At most one call in flight per session on the killed replica can fail.
    assert!(failed <= on_victim.len(), "{failed} failures");
    // Each moved session was re-initialized on a survivor.
    let after_survivors = created(mocks[0].as_ref().unwrap()) + created(mocks[2].as_ref().unwrap());
    assert!(
        after_survivors >= before_survivors + on_victim.len() as u64,
        "survivors created {} sessions for {} moved",
        after_survivors - before_survivors,
        on_victim.len()
    );
    for (i, sid) in sids.iter().enumerate() {
        assert!(call(&hub, sid, "m__tool_1").is_ok(), "session {i} lost");
    }
    let down = format!(
        "meshgate_upstream_replica_up{{upstream=\"m\",replica=\"{}\"}} 0",
        urls[1]
    );
    assert!(metrics(&hub).contains(&down), "{}", metrics(&hub));

    // Restart it on the same port: the prober marks it up, and new sessions use it again.
    let restarted = mock(victim, addrs[1], Duration::ZERO);
    let restarted_at = Instant::now();
    let up = down.replace("} 0", "} 1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics(&hub).contains(&up) {
        assert!(Instant::now() < deadline, "restarted replica not marked up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let came_back = restarted_at.elapsed();
    let mut landed = 0;
    for _ in 0..30 {
        let sid = initialize(&*hub, "2025-11-25");
        if call(&hub, &sid, "m__tool_1").unwrap() == victim {
            landed += 1;
        }
    }
    eprintln!("restarted {victim} is up again; {landed} of 30 new sessions landed on it (marked up {came_back:?} after the restart)");
    assert!(landed > 0, "no new session on the restarted replica");
    assert!(restarted.stats().calls.load(Ordering::Relaxed) >= landed);
}

#[test]
fn replica_config_errors_name_the_field() {
    use dataplane::config::{HubConfig, Snapshot};
    let load = |yaml: &str| -> Result<Snapshot, String> {
        let raw = HubConfig::from_yaml(yaml).map_err(|e| e.to_string())?;
        Snapshot::from_config(&raw).map_err(|e| e.to_string())
    };
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/config/invalid");
    for (file, field) in [
        ("replicas-and-url.yaml", "upstreams[0].replicas"),
        ("replicas-empty.yaml", "upstreams[0].replicas"),
        ("load-factor-below-one.yaml", "upstreams[0].load_factor"),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let e = load(&text).err().unwrap_or_else(|| panic!("{file} loads"));
        assert!(e.starts_with(field), "{file}: {e}");
    }
    let e = load("upstreams:\n  - name: a\n").err().unwrap();
    assert!(e.contains("upstreams[0].url"), "{e}");
    let ok = load(
        "upstreams:\n  - name: a\n    replicas: [http://127.0.0.1:1/mcp, http://127.0.0.1:2/mcp]\n",
    )
    .unwrap();
    assert_eq!(ok.upstreams[0].replicas.len(), 2);
    // The hub binary refuses such a file at start, naming the field.
    let dir = scratch("bad-replicas");
    let cfg = dir.join("hub.yaml");
    std::fs::write(
        &cfg,
        "listen: 127.0.0.1:0\nupstreams:\n  - name: a\n    replicas: []\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upstreams[0].replicas"), "{err}");
}
