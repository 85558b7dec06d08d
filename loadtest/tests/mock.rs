//! The mock upstream's protocol behaviour, driven over loopback by the harness client.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::client::{emit_nanos, ClientError, Conn, ConnectOpts, Era, McpClient, Target};
use loadtest::mock::{MockConfig, MockServer, ServiceTime};

async fn client(url: &str, era: Era) -> McpClient {
    let t = Arc::new(Target::resolve(url).await.unwrap());
    McpClient::new(t, era, ConnectOpts::default(), Duration::from_secs(5))
}

#[tokio::test]
async fn legacy_session_lifecycle() {
    let mock = MockServer::start(MockConfig {
        tool_count: 25,
        page_size: 10,
        ..MockConfig::default()
    })
    .unwrap();
    let mut c = client(&mock.url(), Era::Legacy).await;
    // Without a session: 400.
    assert!(matches!(
        c.ping().await,
        Err(ClientError::JsonRpc { code: -32600, .. })
    ));
    c.initialize().await.unwrap();
    let sid = c.session().unwrap().to_owned();
    assert_eq!(sid.len(), 32);
    c.ping().await.unwrap();
    assert_eq!(c.list_tools().await.unwrap(), 25);
    c.call_tool("tool_3", false).await.unwrap();
    assert!(matches!(
        c.call_tool("tool_99", false).await,
        Err(ClientError::JsonRpc { code: -32602, .. })
    ));
    // DELETE → 200, then the same id → 404.
    assert_eq!(c.delete_session().await.unwrap(), 200);
    let t = Arc::new(Target::resolve(&mock.url()).await.unwrap());
    let mut conn = Conn::connect(t.addr, ConnectOpts::default()).await.unwrap();
    let mut out = Vec::new();
    let r = conn
        .request("DELETE", &t, &[("mcp-session-id", &sid)], &[], &mut out)
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let r = conn
        .request("POST", &t, &[("mcp-session-id", &sid)], body, &mut out)
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    let r = conn
        .request("POST", &t, &[("mcp-session-id", "nope")], body, &mut out)
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(
        mock.stats()
            .sessions_created
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    mock.shutdown();
}

#[tokio::test]
async fn modern_stateless_and_version_errors() {
    let mock = MockServer::start(MockConfig::default()).unwrap();
    let mut c = client(&mock.url(), Era::Modern).await;
    c.initialize().await.unwrap(); // server/discover
    assert_eq!(c.list_tools().await.unwrap(), 10);
    c.call_tool("tool_0", false).await.unwrap();
    assert!(c.session().is_none());
    let t = Arc::new(Target::resolve(&mock.url()).await.unwrap());
    let mut conn = Conn::connect(t.addr, ConnectOpts::default()).await.unwrap();
    let mut out = Vec::new();
    let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01"}}}"#;
    let r = conn.request("POST", &t, &[], body, &mut out).await.unwrap();
    assert_eq!(r.status, 400);
    assert!(std::str::from_utf8(&r.body).unwrap().contains("-32022"));
    let body = br#"{"jsonrpc":"2.0","id":8,"method":"ping","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let r = conn.request("POST", &t, &[], body, &mut out).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(std::str::from_utf8(&r.body).unwrap().contains("-32601"));
}

#[tokio::test]
async fn sse_call_with_progress_and_service_time() {
    let mock = MockServer::start(MockConfig {
        sse: true,
        progress_count: 3,
        response_bytes: 10_000,
        service_time: ServiceTime::Fixed(Duration::from_millis(20)),
        ..MockConfig::default()
    })
    .unwrap();
    let mut c = client(&mock.url(), Era::Legacy).await;
    c.initialize().await.unwrap();
    let t0 = Instant::now();
    c.call_tool("tool_1", true).await.unwrap();
    let el = t0.elapsed();
    // The service time is applied (a hard lower bound; load only adds to it).
    assert!(el >= Duration::from_millis(20), "{el:?}");
    // Raw look at the stream: three progress notifications before the result.
    let t = Arc::new(Target::resolve(&mock.url()).await.unwrap());
    let mut conn = Conn::connect(t.addr, ConnectOpts::default()).await.unwrap();
    let body = br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"tool_1","_meta":{"progressToken":"p"}}}"#;
    let mut out = Vec::new();
    let r = conn
        .request(
            "POST",
            &t,
            &[("mcp-session-id", c.session().unwrap())],
            body,
            &mut out,
        )
        .await
        .unwrap();
    assert!(r.sse);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert_eq!(text.matches("notifications/progress").count(), 3);
    assert!(text.contains("\"id\":5,\"result\""));
}

#[tokio::test]
async fn get_stream_carries_emit_timestamps() {
    let mock = MockServer::start(MockConfig {
        notify_interval: Duration::from_millis(20),
        ..MockConfig::default()
    })
    .unwrap();
    let mut c = client(&mock.url(), Era::Legacy).await;
    c.initialize().await.unwrap();
    let mut s = c.open_stream().await.unwrap();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while got < 3 && Instant::now() < deadline {
        let ev = tokio::time::timeout(Duration::from_secs(2), s.next_event())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let ts = emit_nanos(&ev).expect("emitNs");
        let now = loadtest::sys::unix_nanos();
        assert!(ts <= now && now - ts < 1_000_000_000, "delay {}", now - ts);
        got += 1;
    }
    assert_eq!(got, 3);
    assert_eq!(
        mock.stats()
            .streams_open
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Unknown session: 404 on GET.
    c.delete_session().await.unwrap();
    assert!(matches!(
        c.open_stream().await,
        Err(ClientError::Status(400))
    ));
}

#[test]
fn service_time_parsing() {
    assert_eq!(
        "2ms".parse::<ServiceTime>().unwrap(),
        ServiceTime::Fixed(Duration::from_millis(2))
    );
    assert_eq!("0".parse::<ServiceTime>().unwrap(), ServiceTime::Zero);
    assert!(matches!(
        "uniform:1ms..3ms".parse::<ServiceTime>().unwrap(),
        ServiceTime::Uniform { .. }
    ));
    assert!(matches!(
        "exp:500us".parse::<ServiceTime>().unwrap(),
        ServiceTime::Exponential { .. }
    ));
    // The workspace grammar (meshgate-duration): a bare number is seconds.
    assert_eq!(
        "2".parse::<ServiceTime>().unwrap(),
        ServiceTime::Fixed(Duration::from_secs(2))
    );
    assert!("2 parsecs".parse::<ServiceTime>().is_err());
    assert!("uniform:3ms..1ms".parse::<ServiceTime>().is_err());
}
