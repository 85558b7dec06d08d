//! The harness measured against its own mock: accuracy, coordinated omission, error counting.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use loadtest::driver::{run, RunConfig, Scenario};
use loadtest::mock::{MockConfig, MockServer, ServiceTime};

fn quiet(targets: Vec<String>) -> RunConfig {
    RunConfig {
        targets,
        live: false,
        warmup: Duration::from_millis(300),
        ..RunConfig::default()
    }
}

/// A fixed 2 ms service time is reported as p50 ≈ 2 ms. Tolerance: [2.0, 12.0] ms. The lower
/// bound is hard (nothing can be faster than the service time); the upper allows the loopback
/// round trip, timer overshoot (~0.1 ms) and a debug build on a shared 2-core machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn fixed_2ms_service_time_reports_p50_2ms() {
    let mock = MockServer::start(MockConfig {
        service_time: ServiceTime::Fixed(Duration::from_millis(2)),
        ..MockConfig::default()
    })
    .unwrap();
    let cfg = RunConfig {
        sessions: 4,
        rate: Some(400.0),
        duration: Duration::from_secs(2),
        ..quiet(vec![mock.url()])
    };
    let rep = run(&cfg).await.unwrap();
    let s = rep.metric("call")[0];
    assert_eq!(s.error_total, 0, "{:?}", s.errors);
    assert!(s.ok > 600, "only {} calls", s.ok);
    eprintln!("fixed 2 ms: p50 {:.3} ms p99 {:.3} ms", s.p50_ms, s.p99_ms);
    // Never below the service time (that would be a measuring bug); the upper bound is loose
    // because a busy 2-core machine adds scheduling delay to every sample.
    assert!(s.p50_ms >= 2.0 && s.p50_ms <= 12.0, "p50 {} ms", s.p50_ms);
    assert!(
        (s.throughput - 400.0).abs() < 40.0,
        "throughput {}",
        s.throughput
    );
}

/// The mock stalls for 1 s in the middle of a 3 s open-loop run: requests that were due during
/// the stall are charged from their intended send time, so p99 shows the stall (≥ 0.8 s)
/// although only 4 requests (one per session) actually waited on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn stall_shows_in_open_loop_p99() {
    let mock = MockServer::start(MockConfig {
        stall_after: Duration::from_millis(1500),
        stall: Duration::from_secs(1),
        ..MockConfig::default()
    })
    .unwrap();
    let cfg = RunConfig {
        sessions: 4,
        rate: Some(200.0),
        duration: Duration::from_secs(3),
        warmup: Duration::from_millis(200),
        ..quiet(vec![mock.url()])
    };
    let rep = run(&cfg).await.unwrap();
    let s = rep.metric("call")[0];
    assert_eq!(s.error_total, 0, "{:?}", s.errors);
    assert!(
        s.p99_ms >= 800.0,
        "open-loop p99 {} ms hides the stall",
        s.p99_ms
    );
    assert!(
        s.max_ms >= 900.0 && s.max_ms < 1500.0,
        "max {} ms",
        s.max_ms
    );
    // Roughly a third of the run was inside the stall: the median stays small but p90 does not.
    assert!(s.p50_ms < 50.0, "p50 {} ms", s.p50_ms);
    assert!(s.p90_ms > 100.0, "p90 {} ms", s.p90_ms);
}

/// A port with nothing listening: every scheduled request is an error of kind
/// `connect_refused`; none succeed, and the run ends on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn refused_connections_are_counted() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = RunConfig {
        sessions: 2,
        rate: Some(100.0),
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        preflight: false,
        ..quiet(vec![format!("http://127.0.0.1:{port}/mcp")])
    };
    let start = std::time::Instant::now();
    let rep = run(&cfg).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    let s = rep.metric("call")[0];
    assert_eq!(s.ok, 0);
    let refused = s.errors.get("connect_refused").copied().unwrap_or(0);
    assert!((80..=110).contains(&refused), "{:?}", s.errors);
    assert_eq!(
        rep.setup_errors
            .values()
            .flat_map(|m| m.values())
            .sum::<u64>(),
        2
    );
}

/// `--compare`: two mocks with 1 ms and 3 ms service time driven interleaved; the ratio of
/// medians comes out near 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn compare_two_targets_interleaved() {
    let a = MockServer::start(MockConfig {
        service_time: ServiceTime::Fixed(Duration::from_millis(1)),
        ..MockConfig::default()
    })
    .unwrap();
    let b = MockServer::start(MockConfig {
        service_time: ServiceTime::Fixed(Duration::from_millis(3)),
        ..MockConfig::default()
    })
    .unwrap();
    let cfg = RunConfig {
        sessions: 2,
        rate: Some(200.0),
        duration: Duration::from_secs(1),
        ..quiet(vec![a.url(), b.url()])
    };
    let rep = run(&cfg).await.unwrap();
    let m = rep.metric("call");
    assert_eq!(m.len(), 2);
    let r = loadtest::report::ratios(m[0], m[1]);
    assert_eq!(r[0].0, "p50");
    // Load on the machine adds the same delay to both sides, so check the difference of the
    // medians (2 ms by construction) and that the ratio points the right way.
    let diff = m[1].p50_ms - m[0].p50_ms;
    assert!((1.0..=4.0).contains(&diff), "p50 difference {diff} ms");
    assert!(r[0].1 > 1.2 && r[0].1 < 3.5, "p50 ratio {}", r[0].1);
    let table = loadtest::report::table(&rep);
    assert!(table.contains("ratio B/A call: p50"), "{table}");
    let svg = loadtest::report::svg("t", &[("a".into(), m[0]), ("b".into(), m[1])]);
    assert_eq!(svg.matches("<polyline").count(), 2);
}

/// Streams, churn and the modern era each produce samples without errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn stream_churn_and_modern_scenarios() {
    let mock = MockServer::start(MockConfig {
        notify_interval: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .unwrap();
    let stream = RunConfig {
        scenario: Scenario::Stream,
        streams: 20,
        duration: Duration::from_secs(1),
        ..quiet(vec![mock.url()])
    };
    let rep = run(&stream).await.unwrap();
    let s = rep.metric("delivery")[0];
    assert!(s.ok >= 200, "{} notifications", s.ok);
    assert!(s.p50_ms < 50.0, "delivery p50 {}", s.p50_ms);
    let churn = RunConfig {
        scenario: Scenario::Churn,
        sessions: 4,
        rate: Some(100.0),
        duration: Duration::from_secs(1),
        ..quiet(vec![mock.url()])
    };
    let rep = run(&churn).await.unwrap();
    let s = rep.metric("cycle")[0];
    assert!(s.ok >= 80 && s.error_total == 0, "{} {:?}", s.ok, s.errors);
    let modern = RunConfig {
        era: loadtest::client::Era::Modern,
        sessions: 2,
        rate: Some(100.0),
        duration: Duration::from_secs(1),
        ..quiet(vec![mock.url()])
    };
    let rep = run(&modern).await.unwrap();
    let s = rep.metric("call")[0];
    assert!(s.ok >= 80 && s.error_total == 0, "{} {:?}", s.ok, s.errors);
}

/// The monoio engine serves a closed-loop call run, the legacy session lifecycle around it
/// (initialize, calls, DELETE) and GET streams, without a single error.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn monoio_engine_closed_loop_calls_and_streams() {
    use loadtest::mock::Engine;
    let mock = MockServer::start(MockConfig {
        engine: Engine::Monoio,
        notify_interval: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .unwrap();
    assert_eq!(mock.engine(), Engine::Monoio);
    let calls = RunConfig {
        sessions: 8,
        rate: None,
        duration: Duration::from_secs(1),
        ..quiet(vec![mock.url()])
    };
    let rep = run(&calls).await.unwrap();
    let s = rep.metric("call")[0];
    assert_eq!(s.error_total, 0, "{:?}", s.errors);
    assert!(s.ok >= 100, "only {} calls", s.ok);
    let stream = RunConfig {
        scenario: Scenario::Stream,
        streams: 8,
        duration: Duration::from_secs(1),
        ..quiet(vec![mock.url()])
    };
    let rep = run(&stream).await.unwrap();
    let s = rep.metric("delivery")[0];
    assert!(s.ok >= 80, "{} notifications", s.ok);
    assert_eq!(s.error_total, 0, "{:?}", s.errors);
    mock.shutdown();

    // Options the monoio engine does not implement fall back to tokio.
    let slow = MockServer::start(MockConfig {
        engine: Engine::Monoio,
        service_time: ServiceTime::Fixed(Duration::from_millis(1)),
        ..MockConfig::default()
    })
    .unwrap();
    assert_eq!(slow.engine(), Engine::Tokio);
}
