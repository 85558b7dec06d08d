//! The session store against real `redis-server` processes (loopback, random ports, no
//! persistence), and the memory store through the same `open()`: round trips, sealing (no raw
//! ids, no plaintext, tamper, wrong key, rotation), TTL, delete, Redis lost and back, reads from a
//! monoio task, and a latency measure (printed, not asserted).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use dataplane::store::{
    self, KeySource, SessionRecord, SessionStore, StoreConfig, StoreError, StoreKind,
    UpstreamRecord,
};

// === log capture: the store thread logs, so the subscriber must be global ===

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = Capture(buf.clone());
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::set_global_default(sub).unwrap();
        buf
    })
    .clone()
}

/// Waits (bounded) until the captured logs contain `needle`.
fn wait_log(needle: &str) -> bool {
    let buf = logs();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if String::from_utf8_lossy(&buf.lock().unwrap()).contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn count_log(needle: &str) -> usize {
    String::from_utf8_lossy(&logs().lock().unwrap())
        .matches(needle)
        .count()
}

// === a redis-server child per test ===

struct Redis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tmp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("mg-store-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: tmp_dir("redis"),
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `redis-server` ({e}): install it (Debian: apt-get install -y \
                     redis-server; .ci/run does this)"
                )
            });
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < until,
                "redis-server did not listen on {addr} in 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A direct connection, to look at what the store wrote.
    fn direct(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }

    fn keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg("*")
            .query(&mut self.direct())
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// === helpers ===

fn key_line(kid: &str, byte: u8) -> String {
    format!(
        "{kid}:{}\n",
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    )
}

fn key_file(dir: &Path, name: &str, text: &str) -> KeySource {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    KeySource::File(p)
}

fn open_redis(r: &Redis, ttl: Duration, keys: KeySource) -> Arc<dyn SessionStore> {
    store::open(&StoreConfig {
        kind: StoreKind::Redis {
            url: r.url(),
            cluster: vec![],
        },
        ttl,
        keys,
    })
    .unwrap()
}

const CLIENT_INFO: &str = r#"{"name":"very-distinctive-client","version":"9.9"}"#;

fn record(principal: &str) -> SessionRecord {
    SessionRecord {
        principal: principal.into(),
        version: "2025-06-18".into(),
        client_info: CLIENT_INFO.into(),
        client_capabilities: r#"{"roots":{"listChanged":true}}"#.into(),
        upstreams: vec![UpstreamRecord {
            upstream: "files".into(),
            replica: "10.1.2.3:8080".into(),
            session_id: Some("up-sess-1".into()),
            version: "2025-03-26".into(),
            capabilities: "{}".into(),
        }],
        subscriptions: vec![("files".into(), "file:///etc/motd".into())],
        log_level: Some("debug".into()),
        created_unix_ms: 1_700_000_000_000,
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs `f` to completion, or gives up after `limit` (`None`): a hang guard.
fn block_within<F: std::future::Future>(limit: Duration, f: F) -> Option<F::Output> {
    block(async { tokio::time::timeout(limit, f).await.ok() })
}

/// Polls `get` until it returns `want` (bounded): writes are fire-and-forget.
fn wait_get(s: &dyn SessionStore, id: &str, p: &str, want: Option<&SessionRecord>) {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let got = block(s.get(id, p));
        if matches!(&got, Ok(g) if g.as_ref() == want) {
            return;
        }
        assert!(
            Instant::now() < until,
            "get({id}) = {got:?}, wanted {want:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn session_id() -> String {
    dataplane::session::mint_session_id().to_string()
}

// === tests ===

#[test]
fn memory_round_trip_ttl_delete() {
    let s = store::open(&StoreConfig {
        kind: StoreKind::Memory,
        ttl: Duration::from_secs(1),
        keys: KeySource::Inline(String::new()),
    })
    .unwrap();
    let (a, b) = (session_id(), session_id());
    s.put(&a, "alice", &record("alice"));
    s.put(&b, "alice", &record("alice"));
    assert_eq!(block(s.get(&a, "alice")).unwrap(), Some(record("alice")));
    assert_eq!(block(s.get(&a, "mallory")).unwrap(), None);
    s.delete(&b, "alice");
    assert_eq!(block(s.get(&b, "alice")).unwrap(), None);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(block(s.get(&a, "alice")).unwrap(), None, "TTL 1 s");
    assert!(s.status().up);
}

#[test]
fn redis_round_trip_sealed_and_keyed_by_hmac() {
    let r = Redis::start();
    let dir = tmp_dir("keys");
    let keys = key_file(&dir, "keys", &(key_line("k1", 1) + &key_line("index", 7)));
    let s = open_redis(&r, Duration::from_secs(60), keys);
    assert!(s.status().up);
    let id = session_id();
    s.put(&id, "alice", &record("alice"));
    wait_get(&*s, &id, "alice", Some(&record("alice")));
    // Another principal does not find it.
    assert_eq!(block(s.get(&id, "mallory")).unwrap(), None);

    let keys = r.keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("mgs:") && keys[0].len() == 68,
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.contains(&id)),
        "raw session id in a key"
    );
    let value: String = redis::cmd("GET")
        .arg(&keys[0])
        .query(&mut r.direct())
        .unwrap();
    assert!(value.starts_with("mg1.k1."), "{value}");
    for secret in [&id[..], "very-distinctive-client", "alice", "up-sess-1"] {
        assert!(
            !value.contains(secret),
            "plaintext {secret:?} in the stored value"
        );
    }
    // TTL is set (PX 60000).
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query(&mut r.direct())
        .unwrap();
    assert!(pttl > 50_000 && pttl <= 60_000, "{pttl}");
    let st = s.status();
    assert_eq!(
        (st.writes_ok, st.writes_dropped, st.decrypt_failures),
        (1, 0, 0)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn redis_tampered_value_reads_as_absent_with_warning() {
    logs();
    let r = Redis::start();
    let dir = tmp_dir("keys");
    let keys = key_file(&dir, "keys", &(key_line("k1", 1) + &key_line("index", 7)));
    let s = open_redis(&r, Duration::from_secs(60), keys);
    let id = session_id();
    s.put(&id, "alice", &record("alice"));
    wait_get(&*s, &id, "alice", Some(&record("alice")));
    let key = r.keys().pop().unwrap();
    let mut value: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut r.direct()).unwrap();
    // Flip one ciphertext character (keep it base64url so only authentication can fail).
    let i = value.len() - 5;
    value[i] = if value[i] == b'A' { b'B' } else { b'A' };
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&value)
        .query(&mut r.direct())
        .unwrap();
    assert_eq!(block(s.get(&id, "alice")).unwrap(), None);
    assert_eq!(s.status().decrypt_failures, 1);
    assert!(wait_log(&format!("store_key=\"{key}\"")) || wait_log(&format!("store_key={key}")));
    assert!(wait_log("tampered, moved, or a wrong key"));
    // A value moved under another session's key fails too (AAD = store key).
    let id2 = session_id();
    s.put(&id2, "alice", &record("alice"));
    wait_get(&*s, &id2, "alice", Some(&record("alice")));
    let keys = r.keys();
    let key2 = keys.iter().find(|k| **k != key).unwrap();
    let v2: Vec<u8> = redis::cmd("GET").arg(key2).query(&mut r.direct()).unwrap();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&v2)
        .query(&mut r.direct())
        .unwrap();
    assert_eq!(block(s.get(&id, "alice")).unwrap(), None);
    assert_eq!(s.status().decrypt_failures, 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn redis_wrong_key_and_rotation() {
    logs();
    let r = Redis::start();
    let dir = tmp_dir("keys");
    let index = key_line("index", 7);
    let old = open_redis(
        &r,
        Duration::from_secs(60),
        key_file(&dir, "old", &(key_line("k1", 1) + &index)),
    );
    let id = session_id();
    old.put(&id, "alice", &record("alice"));
    wait_get(&*old, &id, "alice", Some(&record("alice")));

    // Same kid, different key material: rejected, read as absent.
    let wrong = open_redis(
        &r,
        Duration::from_secs(60),
        key_file(&dir, "wrong", &(key_line("k1", 2) + &index)),
    );
    assert_eq!(block(wrong.get(&id, "alice")).unwrap(), None);
    assert_eq!(wrong.status().decrypt_failures, 1);

    // Rotation: a new key prepended; the old record still opens, new writes use k2.
    let new = open_redis(
        &r,
        Duration::from_secs(60),
        key_file(
            &dir,
            "new",
            &(key_line("k2", 3) + &key_line("k1", 1) + &index),
        ),
    );
    assert_eq!(block(new.get(&id, "alice")).unwrap(), Some(record("alice")));
    let id2 = session_id();
    new.put(&id2, "bob", &record("bob"));
    wait_get(&*new, &id2, "bob", Some(&record("bob")));
    let values: Vec<String> = r
        .keys()
        .iter()
        .map(|k| redis::cmd("GET").arg(k).query(&mut r.direct()).unwrap())
        .collect();
    assert_eq!(
        values.iter().filter(|v| v.starts_with("mg1.k2.")).count(),
        1
    );
    assert_eq!(
        values.iter().filter(|v| v.starts_with("mg1.k1.")).count(),
        1
    );
    // A replica that does not hold k2 yet reads the new record as absent, and says why.
    assert_eq!(block(old.get(&id2, "bob")).unwrap(), None);
    assert!(wait_log("unknown key id \"k2\""));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn redis_ttl_and_delete() {
    let r = Redis::start();
    let dir = tmp_dir("keys");
    let keys = key_file(&dir, "keys", &(key_line("k1", 1) + &key_line("index", 7)));
    let s = open_redis(&r, Duration::from_secs(1), keys);
    let (a, b) = (session_id(), session_id());
    s.put(&a, "alice", &record("alice"));
    s.put(&b, "alice", &record("alice"));
    wait_get(&*s, &a, "alice", Some(&record("alice")));
    wait_get(&*s, &b, "alice", Some(&record("alice")));
    s.delete(&b, "alice");
    wait_get(&*s, &b, "alice", None);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        block(s.get(&a, "alice")).unwrap(),
        None,
        "expired after 1 s"
    );
    assert!(r.keys().is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn redis_lost_and_back() {
    logs();
    let mut r = Redis::start();
    let dir = tmp_dir("keys");
    let keys = key_file(&dir, "keys", &(key_line("k1", 1) + &key_line("index", 7)));
    let s = open_redis(&r, Duration::from_secs(60), keys);
    let id = session_id();
    s.put(&id, "alice", &record("alice"));
    wait_get(&*s, &id, "alice", Some(&record("alice")));
    let downs_before = count_log("session store unreachable");

    r.stop();
    // The first get after the loss discovers it (connection reset, or the 500 ms operation
    // timeout fires) and fails with Down instead of hanging. HANG is a hang guard, 20 times the
    // operation timeout, not a latency gate: latency is measured in benches/scripts/store.sh.
    const HANG: Duration = Duration::from_secs(10);
    let got = block_within(HANG, s.get(&id, "alice")).expect("get after the loss hung");
    assert!(matches!(got, Err(StoreError::Down(_))), "{got:?}");
    assert!(!s.status().up);
    // Now every put is dropped and counted at once rather than queued behind the outage.
    let dropped_before = s.status().writes_dropped;
    let t = Instant::now();
    for _ in 0..100 {
        s.put(&id, "alice", &record("alice"));
    }
    // A put that waited for the store would take the operation timeout each (50 s for 100).
    assert!(t.elapsed() < HANG, "100 puts blocked: {:?}", t.elapsed());
    assert_eq!(s.status().writes_dropped, dropped_before + 100);
    for _ in 0..5 {
        let got = block_within(HANG, s.get(&id, "alice")).expect("get while down hung");
        assert!(matches!(got, Err(StoreError::Down(_))), "{got:?}");
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        count_log("session store unreachable"),
        downs_before + 1,
        "one warning per outage, not one per request"
    );

    // Back on the same port (empty: no persistence): writes succeed again, status up.
    r.spawn();
    let until = Instant::now() + Duration::from_secs(5);
    while !s.status().up {
        assert!(
            Instant::now() < until,
            "store not back up within 5 s of redis"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(wait_log("session store reachable again"));
    let ok_before = s.status().writes_ok;
    s.put(&id, "alice", &record("alice"));
    wait_get(&*s, &id, "alice", Some(&record("alice")));
    assert_eq!(s.status().writes_ok, ok_before + 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn redis_get_from_a_monoio_task() {
    let r = Redis::start();
    let dir = tmp_dir("keys");
    let keys = key_file(&dir, "keys", &(key_line("k1", 1) + &key_line("index", 7)));
    let s = open_redis(&r, Duration::from_secs(60), keys);
    let id = session_id();
    s.put(&id, "alice", &record("alice"));
    wait_get(&*s, &id, "alice", Some(&record("alice")));
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        // A worker-style call: put then get without blocking the monoio thread.
        let id2 = session_id();
        s.put(&id2, "bob", &record("bob"));
        monoio::time::sleep(Duration::from_millis(50)).await;
        (s.get(&id, "alice").await, s.get(&id2, "bob").await)
    });
    assert_eq!(got.0.unwrap(), Some(record("alice")));
    assert_eq!(got.1.unwrap(), Some(record("bob")));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn redis_unreachable_at_start_comes_up_later() {
    let port = free_port();
    let dir = tmp_dir("keys");
    let keys = key_file(&dir, "keys", &(key_line("k1", 1) + &key_line("index", 7)));
    let s = store::open(&StoreConfig {
        kind: StoreKind::Redis {
            url: format!("redis://127.0.0.1:{port}/0"),
            cluster: vec![],
        },
        ttl: Duration::from_secs(60),
        keys,
    })
    .unwrap();
    assert!(!s.status().up);
    let mut r = Redis {
        port,
        dir: tmp_dir("redis"),
        child: None,
    };
    r.spawn();
    let until = Instant::now() + Duration::from_secs(5);
    while !s.status().up {
        assert!(Instant::now() < until, "store not up within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let id = session_id();
    s.put(&id, "alice", &record("alice"));
    wait_get(&*s, &id, "alice", Some(&record("alice")));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A measurement, not a test (ignored; run by `benches/scripts/store.sh`, figures in
/// BENCHMARKS.md): put→get latency through the bridge thread and the caller's cost of `put`.
#[test]
#[ignore = "measurement: benches/scripts/store.sh"]
fn redis_latency_measure() {
    let r = Redis::start();
    let dir = tmp_dir("keys");
    let keys = key_file(&dir, "keys", &(key_line("k1", 1) + &key_line("index", 7)));
    let s = open_redis(&r, Duration::from_secs(60), keys);
    let rec = record("alice");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let n = 1000;
    let mut put_ns = Vec::with_capacity(n);
    let mut rtt_ns = Vec::with_capacity(n);
    for _ in 0..n {
        let id = session_id();
        let t = Instant::now();
        s.put(&id, "alice", &rec);
        put_ns.push(t.elapsed().as_nanos());
        // The get is queued after the put on the same ordered channel and connection.
        let got = rt.block_on(s.get(&id, "alice"));
        rtt_ns.push(t.elapsed().as_nanos());
        assert!(got.unwrap().is_some());
    }
    let pct = |v: &mut Vec<u128>, p: usize| {
        v.sort_unstable();
        v[(v.len() * p / 100).min(v.len() - 1)]
    };
    println!(
        "store bench (n={n}, local redis, debug build): put on caller p50 {} ns p99 {} ns; \
         put->get round trip p50 {} us p99 {} us",
        pct(&mut put_ns, 50),
        pct(&mut put_ns, 99),
        pct(&mut rtt_ns, 50) / 1000,
        pct(&mut rtt_ns, 99) / 1000
    );
    // A burst of puts without waiting: the caller's cost when the store thread is awake.
    let mut burst_ns = Vec::with_capacity(n);
    let ids: Vec<String> = (0..n).map(|_| session_id()).collect();
    for id in &ids {
        let t = Instant::now();
        s.put(id, "alice", &rec);
        burst_ns.push(t.elapsed().as_nanos());
    }
    println!(
        "store bench: burst of {n} puts on caller p50 {} ns p99 {} ns",
        pct(&mut burst_ns, 50),
        pct(&mut burst_ns, 99)
    );
    wait_get(&*s, &ids[n - 1], "alice", Some(&rec));
    assert_eq!(s.status().writes_dropped, 0);
    std::fs::remove_dir_all(dir).unwrap();
}
