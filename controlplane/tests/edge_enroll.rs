//! Edge enrollment end to end against a real `meshgate-control`: `edge enroll NAME` (CLI) issues a
//! one-time token; the edge's half (`meshgate-control-client::enroll`, what `meshgate-edge enroll`
//! runs) generates the key locally and exchanges a CSR for a certificate; the real tunnel
//! (`meshgate-tunnel`, hub acceptor trusting the control plane's edge CA) comes up with it and
//! names the edge by its CN; renewal keeps the key and changes the serial; revocation reaches a
//! watching hub in the next snapshot (the hub side, played here, drops the link), voids renewal,
//! and a new token re-enrolls.

#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use meshgate_control_client::enroll::{self, EnrollError};
use meshgate_control_client::http::Client;
use meshgate_control_client::{WatchConfig, Watcher};
use meshgate_tunnel::{DialConfig, HubConfig, TlsFiles};
use serde_json::json;
use support::control::Control;

fn token(cp: &Control, name: &str) -> String {
    let (ok, out, err) = cp.cli(&["edge", "enroll", name], None);
    assert!(ok, "edge enroll: {err}");
    let t = out.trim().to_owned();
    assert!(t.starts_with("mge_"), "{out}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_certificate_tunnel_renewal_revocation() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = Control::start(&tmp.path().join("cp"), &[]);
    let client = Client::new(&cp.url, None, None).unwrap();
    let edge_dir = tmp.path().join("edge");

    // --- token -> certificate (key generated on the edge, 0600) ---
    let t = token(&cp, "edge-7");
    let e = enroll::enroll(&client, &t, "edge-7", &edge_dir)
        .await
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&e.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let key_pem = std::fs::read_to_string(&e.key).unwrap();
    assert!(key_pem.contains("PRIVATE KEY"));
    // the control plane never saw the key: it only stores the public key's hash
    let edges = cp.admin().get("/v1/edges").await;
    let certs = &edges[0]["certificates"];
    assert_eq!(edges[0]["state"], "enrolled");
    assert_eq!(certs[0]["serial"], e.serial.as_str());
    assert!(!edges.to_string().contains("PRIVATE"));
    // a token works once
    match enroll::enroll(&client, &t, "edge-7", &tmp.path().join("again")).await {
        Err(EnrollError::Refused {
            status: 401,
            message,
        }) => {
            assert!(message.contains("already used"), "{message}")
        }
        other => panic!("token reused: {other:?}"),
    }

    // --- tunnel up with the issued certificate ---
    let hub_dir = tmp.path().join("hub");
    std::fs::create_dir_all(&hub_dir).unwrap();
    let hub_ca = meshgate_tunnel::pki::new_ca("test hub CA").unwrap();
    let hub_cert =
        meshgate_tunnel::pki::issue_hub(&hub_ca, &["localhost".into(), "127.0.0.1".into()])
            .unwrap();
    std::fs::write(hub_dir.join("hub-ca.pem"), &hub_ca.cert_pem).unwrap();
    std::fs::write(hub_dir.join("hub.pem"), &hub_cert.cert_pem).unwrap();
    std::fs::write(hub_dir.join("hub-key.pem"), &hub_cert.key_pem).unwrap();
    // the hub trusts the control plane's edge CA, fetched from the API (`edge.ca` in hub.yaml)
    let ca_pem = client
        .get("/v1/edges/ca", Duration::from_secs(10))
        .await
        .unwrap()
        .text();
    assert_eq!(ca_pem, std::fs::read_to_string(&e.ca).unwrap());
    std::fs::write(hub_dir.join("edge-ca.pem"), &ca_pem).unwrap();
    let mut hub_cfg = HubConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        TlsFiles {
            ca: hub_dir.join("edge-ca.pem"),
            cert: hub_dir.join("hub.pem"),
            key: hub_dir.join("hub-key.pem"),
        },
    );
    hub_cfg.quic = false; // TLS over TCP is enough to prove the certificate
    let mut acceptor = meshgate_tunnel::Acceptor::bind(hub_cfg).await.unwrap();
    let mut dial = DialConfig::new(
        acceptor.local_addr().to_string(),
        "localhost",
        TlsFiles {
            ca: hub_dir.join("hub-ca.pem"),
            cert: e.cert.clone(),
            key: e.key.clone(),
        },
    );
    dial.transport = meshgate_tunnel::TransportChoice::Tcp;
    let svc = hyper::service::service_fn(|_req| async {
        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
            b"hello from edge-7",
        ))))
    });
    let edge_task = tokio::spawn(meshgate_tunnel::edge::run(dial, svc, None));
    let link = tokio::time::timeout(Duration::from_secs(20), acceptor.accept())
        .await
        .expect("tunnel up within 20 s")
        .unwrap();
    assert_eq!(
        link.edge_id(),
        "edge-7",
        "the hub names the edge by its certificate"
    );
    let resp = link
        .send(
            hyper::Request::builder()
                .uri("/ping")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello from edge-7");

    // --- renewal: same key, new serial ---
    let r = enroll::renew(&client, "edge-7", &edge_dir).await.unwrap();
    assert_ne!(r.serial, e.serial);
    assert_eq!(
        std::fs::read_to_string(&r.key).unwrap(),
        key_pem,
        "key unchanged"
    );
    assert!(r.not_after_ms >= e.not_after_ms);
    assert_eq!(enroll::state("edge-7", &edge_dir).unwrap().serial, r.serial);
    assert!(!enroll::due(&r, r.renew_after_ms - 1));
    assert!(enroll::due(&r, r.renew_after_ms));
    // a key the control plane never certified cannot renew
    let stranger = tmp.path().join("stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    let k = rcgen::KeyPair::generate().unwrap();
    std::fs::write(stranger.join("edge-7-key.pem"), k.serialize_pem()).unwrap();
    assert!(matches!(
        enroll::renew(&client, "edge-7", &stranger).await,
        Err(EnrollError::Refused { status: 401, .. })
    ));

    // --- revocation: in the next snapshot; the hub (played here) drops the link ---
    let hub_key = cp
        .admin()
        .post("/v1/keys", json!({"name": "hub", "role": "hub"}))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut wc = WatchConfig::from_url(&cp.url, tmp.path().join("hub-state")).unwrap();
    wc.token = Some(hub_key);
    let w = Watcher::start(wc).unwrap();
    let mut rx = w.subscribe();
    let (ok, _, err) = cp.cli(&["edge", "revoke", "edge-7"], None);
    assert!(ok, "{err}");
    let t0 = std::time::Instant::now();
    let revoked = tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|c| {
            c.as_ref()
                .is_some_and(|s| s.snapshot.edge_revoked("edge-7", &r.serial))
        }),
    )
    .await
    .is_ok();
    assert!(revoked, "revocation never reached the hub");
    println!(
        "revocation: CLI exit -> hub snapshot in {} ms",
        t0.elapsed().as_millis()
    );
    // what the hub does with it (the lead's hub-side check, played here)
    if w.current()
        .is_some_and(|s| s.snapshot.edge_revoked(link.edge_id(), &r.serial))
    {
        link.close("edge certificate revoked");
    }
    assert!(link.is_closed());
    match enroll::renew(&client, "edge-7", &edge_dir).await {
        Err(EnrollError::Refused { status: 401, .. }) => {}
        other => panic!("renewal after revocation: {other:?}"),
    }
    // a new token re-enrolls it and takes it off the revocation list
    let t2 = token(&cp, "edge-7");
    let e2 = enroll::enroll(&client, &t2, "edge-7", &edge_dir)
        .await
        .unwrap();
    let cleared = tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|c| {
            c.as_ref()
                .is_some_and(|s| !s.snapshot.edge_revoked("edge-7", &e2.serial))
        }),
    )
    .await
    .is_ok();
    assert!(cleared);
    edge_task.abort();
    w.shutdown();
}
