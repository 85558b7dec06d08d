//! End-to-end tests of the tunnel on loopback: PKI, QUIC and TCP round trips, streaming,
//! concurrency, fallback, mutual-TLS refusals, link loss and reconnection.
#![allow(clippy::unwrap_used, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::http::{Method, Request, Response};
use meshgate_tunnel::edge::{self, DialConfig, LinkEvent, TransportChoice};
use meshgate_tunnel::hub::{Acceptor, EdgeLink, HubConfig};
use meshgate_tunnel::{pki, BoxBody, TlsFiles, Transport, TunnelError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

fn tmpdir(tag: &str) -> PathBuf {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    let d = std::env::temp_dir().join(format!("meshgate-tunnel-{tag}-{}", u64::from_le_bytes(b)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Self {
        let dir = tmpdir(tag);
        pki::quickstart(
            &dir,
            &["localhost".into(), "127.0.0.1".into()],
            &["edge-1".into()],
        )
        .unwrap();
        Pki { dir }
    }
    fn hub(&self) -> TlsFiles {
        TlsFiles {
            ca: self.dir.join("ca.pem"),
            cert: self.dir.join("hub.pem"),
            key: self.dir.join("hub-key.pem"),
        }
    }
    fn edge(&self) -> TlsFiles {
        TlsFiles {
            ca: self.dir.join("ca.pem"),
            cert: self.dir.join("edge-1.pem"),
            key: self.dir.join("edge-1-key.pem"),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A body fed by a channel: each message is one chunk, sent when the test says so.
struct ChanBody(mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Gates of `/gated` streams: stream id → the sender the test releases each next chunk with.
static GATES: Mutex<Option<std::collections::HashMap<u64, mpsc::Sender<()>>>> = Mutex::new(None);

/// POST echoes the body; GET /stream?n=N&ms=M sends N chunks M ms apart ("chunk-i\n");
/// GET /gated?id=K&n=N sends "chunk-0\n" and each next chunk only when the test releases it
/// ([`release`]).
async fn echo(req: Request<Incoming>) -> Result<Response<BoxBody>, Infallible> {
    if req.method() == Method::POST {
        let body = req.into_body().collect().await.map(|c| c.to_bytes());
        let body = body.unwrap_or_default();
        return Ok(Response::new(
            Full::new(body).map_err(|e| match e {}).boxed(),
        ));
    }
    let q = req.uri().query().unwrap_or("").to_string();
    let get = |k: &str| -> u64 {
        q.split('&')
            .find_map(|kv| {
                kv.strip_prefix(&format!("{k}="))
                    .map(|v| v.parse().unwrap())
            })
            .unwrap_or(3)
    };
    let (n, ms) = (get("n"), get("ms"));
    let (tx, rx) = mpsc::channel(4);
    if req.uri().path() == "/gated" {
        let (gate_tx, mut gate) = mpsc::channel::<()>(4);
        GATES
            .lock()
            .unwrap()
            .get_or_insert_with(Default::default)
            .insert(get("id"), gate_tx);
        tokio::spawn(async move {
            for i in 0..n {
                if i > 0 && gate.recv().await.is_none() {
                    return;
                }
                if tx.send(Bytes::from(format!("chunk-{i}\n"))).await.is_err() {
                    return;
                }
            }
        });
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .body(ChanBody(rx).boxed())
            .unwrap());
    }
    tokio::spawn(async move {
        for i in 0..n {
            if tx.send(Bytes::from(format!("chunk-{i}\n"))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    });
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .body(ChanBody(rx).boxed())
        .unwrap())
}

async fn hub(pki: &Pki, quic: bool, tcp: bool) -> Acceptor {
    let mut cfg = HubConfig::new("127.0.0.1:0".parse().unwrap(), pki.hub());
    cfg.quic = quic;
    cfg.tcp = tcp;
    Acceptor::bind(cfg).await.unwrap()
}

fn dial_cfg(acc: &Acceptor, files: TlsFiles, transport: TransportChoice) -> DialConfig {
    let mut cfg = DialConfig::new(
        format!("127.0.0.1:{}", acc.local_addr().port()),
        "localhost",
        files,
    );
    cfg.transport = transport;
    cfg
}

fn spawn_edge(cfg: DialConfig) -> (JoinHandle<()>, mpsc::UnboundedReceiver<LinkEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let h = tokio::spawn(async move {
        let svc = hyper::service::service_fn(echo);
        let r = edge::run(cfg, svc, Some(tx)).await;
        panic!("edge::run returned: {:?}", r.err());
    });
    (h, rx)
}

async fn accept(acc: &mut Acceptor) -> EdgeLink {
    timeout(T, acc.accept())
        .await
        .expect("accept timed out")
        .unwrap()
}

async fn post(link: &EdgeLink, body: &'static str) -> Bytes {
    let req = Request::post("/echo")
        .header("host", "edge")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = timeout(T, link.send(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    timeout(T, resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes()
}

async fn stream_req(link: &EdgeLink, n: u32, ms: u32) -> Response<Incoming> {
    let req = Request::get(format!("/stream?n={n}&ms={ms}"))
        .header("host", "edge")
        .body(Full::new(Bytes::new()))
        .unwrap();
    timeout(T, link.send(req)).await.unwrap().unwrap()
}

/// Lets `/gated` stream `id` produce its next chunk.
async fn release(id: u64) {
    let gate = GATES
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(&id).cloned())
        .expect("gated stream registered");
    gate.send(()).await.unwrap();
}

/// Reads a stream whose server produces each next chunk only after the test has received the
/// previous one: every chunk must arrive on its own, before the next exists (incremental
/// delivery, checked by order rather than by the clock).
async fn check_streaming(link: &EdgeLink) {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let req = Request::get(format!("/gated?id={id}&n=4"))
        .header("host", "edge")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = timeout(T, link.send(req))
        .await
        .unwrap()
        .unwrap()
        .into_body();
    let mut text = String::new();
    for i in 0..4 {
        let want = format!("chunk-{i}\n");
        // Chunk i arrives although chunk i+1 does not exist yet.
        while text.len() < want.len() {
            let f = timeout(T, body.frame())
                .await
                .unwrap_or_else(|_| panic!("chunk {i} never arrived (got {text:?})"))
                .expect("stream ended early")
                .unwrap();
            if let Ok(d) = f.into_data() {
                text.push_str(&String::from_utf8_lossy(&d));
            }
        }
        assert_eq!(text, want, "chunks coalesced or out of order");
        text.clear();
        if i < 3 {
            release(id).await;
        }
    }
    // Then the stream ends (h2 may close it with an empty frame).
    while let Some(f) = timeout(T, body.frame()).await.unwrap() {
        let f = f.unwrap();
        assert!(
            f.data_ref().is_none_or(|d| d.is_empty()),
            "data after the last chunk"
        );
    }
}

async fn round_trip(transport: TransportChoice, expect: Transport) {
    let pki = Pki::new("rt");
    let mut acc = hub(&pki, true, true).await;
    let (edge_task, mut events) = spawn_edge(dial_cfg(&acc, pki.edge(), transport));
    let link = accept(&mut acc).await;
    assert_eq!(link.edge_id(), "edge-1");
    assert_eq!(link.transport(), expect);
    assert!(link.remote_addr().ip().is_loopback());
    match timeout(T, events.recv()).await.unwrap().unwrap() {
        LinkEvent::Up { transport, .. } => assert_eq!(transport, expect),
        e => panic!("unexpected {e:?}"),
    }

    assert_eq!(post(&link, "hello tunnel").await, "hello tunnel");
    check_streaming(&link).await;

    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..200 {
        let link = link.clone();
        set.spawn(async move {
            let body = format!("req-{i}");
            let req = Request::post("/echo")
                .header("host", "edge")
                .body(Full::new(Bytes::from(body.clone())))
                .unwrap();
            let resp = link.send(req).await.unwrap();
            let got = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(got, body.as_bytes());
        });
    }
    timeout(T, async {
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("200 concurrent sends timed out");
    eprintln!("{expect}: 200 concurrent sends in {:?}", start.elapsed());
    assert!(!link.is_closed());
    edge_task.abort();
}

#[tokio::test]
async fn quic_round_trip_streaming_and_concurrency() {
    round_trip(TransportChoice::Quic, Transport::Quic).await;
}

#[tokio::test]
async fn tcp_round_trip_streaming_and_concurrency() {
    round_trip(TransportChoice::Tcp, Transport::Tcp).await;
}

#[tokio::test]
async fn auto_prefers_quic() {
    let pki = Pki::new("auto-quic");
    let mut acc = hub(&pki, true, true).await;
    let (edge_task, _events) = spawn_edge(dial_cfg(&acc, pki.edge(), TransportChoice::Auto));
    let link = accept(&mut acc).await;
    assert_eq!(link.transport(), Transport::Quic);
    assert_eq!(post(&link, "q").await, "q");
    edge_task.abort();
}

#[tokio::test]
async fn auto_falls_back_to_tcp_when_quic_is_off() {
    let pki = Pki::new("auto-tcp");
    let mut acc = hub(&pki, false, true).await;
    let mut cfg = dial_cfg(&acc, pki.edge(), TransportChoice::Auto);
    cfg.quic_timeout = Duration::from_millis(500);
    let (edge_task, mut events) = spawn_edge(cfg);
    let link = accept(&mut acc).await;
    assert_eq!(link.transport(), Transport::Tcp);
    match timeout(T, events.recv()).await.unwrap().unwrap() {
        LinkEvent::Up { transport, hub } => {
            assert_eq!(transport, Transport::Tcp);
            assert_eq!(hub.port(), acc.local_addr().port());
        }
        e => panic!("unexpected {e:?}"),
    }
    assert_eq!(post(&link, "fallback").await, "fallback");
    edge_task.abort();
}

/// Captures log output of the current thread (tests using it run on a current-thread runtime).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let w = logs.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    (logs, tracing::subscriber::set_default(sub))
}

async fn expect_refused(
    acc: &mut Acceptor,
    events: &mut mpsc::UnboundedReceiver<LinkEvent>,
) -> String {
    let mut reasons = Vec::new();
    // Two failed dials at least (QUIC and TCP are both tried by Auto).
    while reasons.len() < 2 {
        match timeout(T, events.recv()).await.unwrap().unwrap() {
            LinkEvent::Down { reason } => reasons.push(reason),
            e => panic!("link came up: {e:?}"),
        }
    }
    assert!(
        timeout(Duration::from_millis(300), acc.accept())
            .await
            .is_err(),
        "acceptor returned a link"
    );
    reasons.join(" | ")
}

#[tokio::test]
async fn edge_with_wrong_ca_gets_no_link() {
    let (logs, _g) = capture();
    let pki = Pki::new("wrong-ca");
    let other = Pki::new("other-ca");
    let mut acc = hub(&pki, true, true).await;
    // The edge's own cert is fine, but it pins a CA that did not sign the hub.
    let mut files = pki.edge();
    files.ca = other.dir.join("ca.pem");
    let (edge_task, mut events) = spawn_edge(dial_cfg(&acc, files, TransportChoice::Auto));
    let reasons = expect_refused(&mut acc, &mut events).await;
    assert!(reasons.contains("certificate"), "{reasons}");
    assert!(
        reasons.contains("quic") && reasons.contains("tls"),
        "{reasons}"
    );
    edge_task.abort();
    let text = logs.text();
    assert!(text.contains("edge handshake refused"), "{text}");
    assert!(text.contains("127.0.0.1"), "{text}");
}

#[tokio::test]
async fn edge_cert_from_other_ca_is_refused_by_hub() {
    let (logs, _g) = capture();
    let pki = Pki::new("good");
    let other = Pki::new("rogue");
    let mut acc = hub(&pki, true, true).await;
    // The edge trusts the right hub CA but presents a certificate from another CA.
    let files = TlsFiles {
        ca: pki.dir.join("ca.pem"),
        cert: other.dir.join("edge-1.pem"),
        key: other.dir.join("edge-1-key.pem"),
    };
    for transport in [TransportChoice::Quic, TransportChoice::Tcp] {
        let (edge_task, mut events) = spawn_edge(dial_cfg(&acc, files.clone(), transport));
        // TLS 1.3: the client may think it is up before the hub rejects its certificate, so
        // what matters is that the hub never yields a link and the edge sees it go down.
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut downs = 0;
        while Instant::now() < deadline && downs < 2 {
            if let Ok(Some(LinkEvent::Down { .. })) =
                timeout(Duration::from_millis(500), events.recv()).await
            {
                downs += 1;
            }
        }
        assert!(downs >= 1, "{transport:?}: edge saw no failure");
        assert!(
            timeout(Duration::from_millis(300), acc.accept())
                .await
                .is_err(),
            "{transport:?}: acceptor returned a link"
        );
        edge_task.abort();
    }
    let text = logs.text();
    assert!(text.contains("edge handshake refused"), "{text}");
    assert!(
        text.contains("transport=\"quic\"") || text.contains("transport=quic"),
        "{text}"
    );
    assert!(
        text.contains("transport=\"tcp\"") || text.contains("transport=tcp"),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("certificate")
            || text.contains("UnknownIssuer")
            || text.contains("BadCertificate"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_tls_files_are_config_errors() {
    let pki = Pki::new("bad-files");
    let mut files = pki.hub();
    files.key = pki.dir.join("missing-key.pem");
    let err = Acceptor::bind(HubConfig::new("127.0.0.1:0".parse().unwrap(), files))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, TunnelError::TlsFile { .. }), "{err}");
    assert!(err.to_string().contains("missing-key.pem"), "{err}");

    let mut files = pki.edge();
    files.ca = pki.dir.join("edge-1-key.pem"); // a key is not a certificate
    let cfg = DialConfig::new("127.0.0.1:1", "localhost", files);
    let r = timeout(T, edge::run(cfg, hyper::service::service_fn(echo), None))
        .await
        .unwrap();
    let err = r.err().unwrap();
    assert!(err.to_string().contains("edge-1-key.pem"), "{err}");
}

async fn link_loss(transport: TransportChoice, drop_edge: bool) {
    let pki = Pki::new("loss");
    let mut acc = hub(&pki, true, true).await;
    let (edge_task, mut events) = spawn_edge(dial_cfg(&acc, pki.edge(), transport));
    let link = accept(&mut acc).await;
    let mut body = stream_req(&link, 1000, 50).await.into_body();
    let first = timeout(T, body.frame()).await.unwrap().unwrap().unwrap();
    assert!(first.into_data().is_ok());

    let cut = Instant::now();
    if drop_edge {
        edge_task.abort();
    } else {
        link.close("test cut");
    }
    // The in-flight body ends with an error, promptly.
    let end = timeout(Duration::from_secs(5), async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    })
    .await
    .expect("in-flight body hung after link loss");
    assert!(end.is_err(), "body ended cleanly after link loss");
    timeout(Duration::from_secs(5), link.closed())
        .await
        .expect("closed() did not resolve");
    assert!(link.is_closed());
    let lost = cut.elapsed();

    // A send on the dead link fails at once.
    let req = Request::post("/echo")
        .body(Full::new(Bytes::new()))
        .unwrap();
    // At once: the first poll already fails, without waiting for anything.
    let send = link.send(req);
    tokio::pin!(send);
    let first = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(Err(err)) => {
            assert!(matches!(err, TunnelError::LinkClosed { .. }), "{err}")
        }
        Poll::Ready(Ok(_)) => panic!("a send on a dead link succeeded"),
        Poll::Pending => panic!("a send on a dead link waited instead of failing at once"),
    }

    if !drop_edge {
        // The edge reports the loss and redials (bounded by T; the time it takes is a figure
        // for benches/scripts/edge-tunnel.sh, not an assertion).
        let t1 = Instant::now();
        let again = timeout(T, acc.accept())
            .await
            .expect("no reconnect")
            .unwrap();
        let back = t1.elapsed();
        assert_eq!(post(&again, "again").await, "again");
        let mut saw_down = false;
        while let Ok(ev) = events.try_recv() {
            if matches!(ev, LinkEvent::Down { .. }) {
                saw_down = true;
            }
        }
        assert!(saw_down);
        eprintln!("{transport:?}: loss detected in {lost:?}, reconnected in {back:?}");
        edge_task.abort();
    } else {
        eprintln!("{transport:?} (edge dropped): loss detected in {lost:?}");
    }
}

#[tokio::test]
async fn quic_hub_close_mid_stream_then_reconnect() {
    link_loss(TransportChoice::Quic, false).await;
}

#[tokio::test]
async fn tcp_hub_close_mid_stream_then_reconnect() {
    link_loss(TransportChoice::Tcp, false).await;
}

#[tokio::test]
async fn quic_edge_dropped_mid_stream() {
    link_loss(TransportChoice::Quic, true).await;
}

#[tokio::test]
async fn tcp_edge_dropped_mid_stream() {
    link_loss(TransportChoice::Tcp, true).await;
}

#[test]
fn pki_quickstart_writes_a_valid_set() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, UnixTime};

    let dir = tmpdir("pki");
    let written = pki::quickstart(
        &dir,
        &["localhost".into(), "10.99.0.1".into()],
        &["edge-a".into(), "edge-b".into()],
    )
    .unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for n in [
        "ca.pem",
        "ca-key.pem",
        "hub.pem",
        "hub-key.pem",
        "edge-a.pem",
        "edge-a-key.pem",
        "edge-b.pem",
        "edge-b-key.pem",
    ] {
        assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
        assert!(dir.join(n).is_file());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for k in ["ca-key.pem", "hub-key.pem", "edge-a-key.pem"] {
            let mode = std::fs::metadata(dir.join(k)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{k}");
        }
    }

    let load = |p: &Path| CertificateDer::from_pem_file(p).unwrap();
    let verifier = |ca: &Path| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(load(ca)).unwrap();
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap()
    };
    let v = verifier(&dir.join("ca.pem"));
    v.verify_client_cert(&load(&dir.join("edge-a.pem")), &[], UnixTime::now())
        .expect("edge cert must chain to the CA");

    // A cert from another CA does not.
    let other_ca = pki::new_ca("other").unwrap();
    let rogue = pki::issue_edge(&other_ca, "edge-a").unwrap();
    let rogue = CertificateDer::from_pem_slice(rogue.cert_pem.as_bytes()).unwrap();
    assert!(v.verify_client_cert(&rogue, &[], UnixTime::now()).is_err());

    // Edge identity is in CN and SAN.
    let edge = load(&dir.join("edge-b.pem"));
    let (_, parsed) = x509_parser::parse_x509_certificate(edge.as_ref()).unwrap();
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    assert_eq!(cn, "edge-b");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Finished streams give their credit back: more requests than the per-link stream limit
/// (4096) go through one QUIC link.
#[tokio::test]
async fn quic_streams_are_released() {
    let pki = Pki::new("release");
    let mut acc = hub(&pki, true, false).await;
    let (edge_task, _events) = spawn_edge(dial_cfg(&acc, pki.edge(), TransportChoice::Quic));
    let link = accept(&mut acc).await;
    let start = Instant::now();
    for _ in 0..22 {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let link = link.clone();
            set.spawn(async move { post(&link, "x").await });
        }
        timeout(T, async {
            while let Some(r) = set.join_next().await {
                assert_eq!(r.unwrap(), "x");
            }
        })
        .await
        .expect("stream credit exhausted?");
    }
    eprintln!("4400 requests over one quic link in {:?}", start.elapsed());
    edge_task.abort();
}
