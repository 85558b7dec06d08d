//! The admin API of a real `meshgate-control` process: every documented route is served, RBAC
//! per role, bad input answered with a status and a reason, the CLI (`policy apply FILE`,
//! `catalog`, `approvals`, `audit verify`, `kill`), approvals (group rule, approve, reject,
//! timeout = deny, hub long-poll), the audit store (per-hub chain verification on ingest, export
//! to real syslog UDP/TCP and OTLP/HTTP listeners, `audit verify` finding a changed record), OIDC
//! bearer tokens against a JWKS served by a small test issuer (written here), HTTPS, the
//! loopback-only rule for plain HTTP, hub reports and KPI series.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use base64::Engine as _;
use hyper::Method;
use serde_json::{json, Value};
use support::control::{Api, Control};

async fn key(admin: &Api, name: &str, role: &str, groups: &[&str]) -> String {
    admin
        .post(
            "/v1/keys",
            json!({"name": name, "role": role, "groups": groups}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_served_rbac_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = Control::start(&tmp.path().join("cp"), &[]);
    let admin = cp.admin();
    // every documented route exists (never the router's fallback), with an admin token
    for (m, p) in controlplane::api::ROUTES {
        let path = p
            .replace("{name}", "nosuch")
            .replace("{tool}", "nosuch")
            .replace("{id}", "nosuch");
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        let body = matches!(*m, "POST" | "PUT").then(|| json!({}));
        let (s, v) = admin.req(method, &path, body).await;
        assert!(
            !(s == 404 && v["error"] == "no such route") && s != 405,
            "{m} {p}: {s} {v}"
        );
        assert!(s < 500, "{m} {p}: {s} {v}");
    }
    let (s, v) = admin.req(Method::GET, "/v1/nope", None).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("no such route")));
    let openapi = cp.client(None).get("/.well-known/openapi.json").await;
    assert_eq!(openapi["info"]["title"], "meshgate-control");

    // RBAC
    let viewer = cp.client(Some(&key(&admin, "vera", "viewer", &[]).await));
    let operator = cp.client(Some(&key(&admin, "otto", "operator", &[]).await));
    let hub = cp.client(Some(&key(&admin, "hub-a", "hub", &[]).await));
    let anon = cp.client(None);
    let bogus = cp.client(Some("mgc_not-a-real-key-000000000000000000"));
    let server = json!({"kind": "http", "endpoints": ["http://127.0.0.1:9/mcp"]});
    let cases: Vec<(&Api, Method, &str, Option<Value>, u16)> = vec![
        (&anon, Method::GET, "/v1/servers", None, 401),
        (&bogus, Method::GET, "/v1/servers", None, 401),
        (&viewer, Method::GET, "/v1/servers", None, 200),
        (
            &viewer,
            Method::PUT,
            "/v1/servers/s1",
            Some(server.clone()),
            403,
        ),
        (
            &operator,
            Method::PUT,
            "/v1/servers/s1",
            Some(server.clone()),
            403,
        ),
        (
            &admin,
            Method::PUT,
            "/v1/servers/s1",
            Some(server.clone()),
            200,
        ),
        (&hub, Method::GET, "/v1/servers", None, 403),
        (&hub, Method::GET, "/v1/snapshots/latest", None, 200),
        (
            &viewer,
            Method::POST,
            "/v1/kill",
            Some(json!({"scope": "global"})),
            403,
        ),
        (
            &operator,
            Method::POST,
            "/v1/kill",
            Some(json!({"scope": "global"})),
            200,
        ),
        (
            &operator,
            Method::POST,
            "/v1/kill/lift",
            Some(json!({"scope": "global"})),
            200,
        ),
        (&operator, Method::PUT, "/v1/zones/z", Some(json!({})), 403),
        (
            &viewer,
            Method::POST,
            "/v1/hubs/h/report",
            Some(json!({"sessions": 1})),
            403,
        ),
        (
            &hub,
            Method::POST,
            "/v1/hubs/h/report",
            Some(json!({"sessions": 1})),
            200,
        ),
        (&operator, Method::GET, "/v1/keys", None, 403),
        (&anon, Method::GET, "/v1/snapshots/key", None, 200),
        (&anon, Method::GET, "/healthz", None, 200),
        (&anon, Method::GET, "/v1/edges/ca", None, 200),
        (&operator, Method::POST, "/v1/edges/e1/enroll", None, 403),
    ];
    for (api, m, p, b, want) in cases {
        let (s, v) = api.req(m.clone(), p, b).await;
        assert_eq!(s, want, "{m} {p}: {v}");
        if s >= 400 {
            assert!(
                v["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{m} {p}: no reason: {v}"
            );
        }
    }
    let (_, who) = operator.req(Method::GET, "/v1/whoami", None).await;
    assert_eq!(
        (who["name"].as_str(), who["role"].as_str()),
        (Some("otto"), Some("operator"))
    );

    // bad input: a status and a reason, the process unaffected
    let raw = |body: &'static str| {
        let c = admin.c.clone();
        async move {
            let r = c
                .request(
                    Method::PUT,
                    "/v1/servers/s2",
                    Some(bytes::Bytes::from(body)),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            (
                r.status,
                serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null),
            )
        }
    };
    let (s, v) = raw("{not json").await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().starts_with("body:"));
    let (s, v) = raw("{\"kind\":\"http\",\"endpoints\":[\"x\"],\"surprise\":1}").await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("surprise"), "{v}");
    let (s, v) = raw("{\"kind\":\"http\",\"endpoints\":[\"ftp://x\"]}").await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("endpoints[0]"), "{v}");
    let bad: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/servers/s3",
            json!({"endpoints": ["http://h/mcp"], "version": "one"}),
            "semver",
        ),
        (
            "/v1/servers/s3",
            json!({"endpoints": ["http://h/mcp"], "zone": "nowhere"}),
            "zone",
        ),
        (
            "/v1/servers/a__b",
            json!({"endpoints": ["http://h/mcp"]}),
            "separator",
        ),
        (
            "/v1/servers/bad%20name",
            json!({"endpoints": ["http://h/mcp"]}),
            "A-Za-z0-9",
        ),
    ];
    for (p, b, needle) in bad {
        let (s, v) = admin.req(Method::PUT, p, Some(b)).await;
        assert_eq!(s, 400, "{p}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{p}: {v}");
    }
    admin
        .put("/v1/servers/s1/tools/t1", json!({"version": "1.0.0"}))
        .await;
    let (s, v) = admin
        .req(
            Method::POST,
            "/v1/servers/s1/tools/t1/lifecycle",
            Some(json!({"state": "deprecated"})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("sunset"), "{v}");
    let (s, _) = operator
        .req(
            Method::POST,
            "/v1/kill",
            Some(json!({"scope": "tool", "target": "no-slash"})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = operator
        .req(
            Method::POST,
            "/v1/kill/lift",
            Some(json!({"scope": "global"})),
        )
        .await;
    assert_eq!(s, 404, "nothing to lift");
    assert_eq!(admin.get("/healthz").await, Value::Null); // "ok" is text; still 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_catalog_policy_kill_and_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = Control::start(&tmp.path().join("cp"), &[]);
    let run = |args: &[&str]| {
        let (ok, out, err) = cp.cli(args, None);
        assert!(ok, "{args:?}: {err}");
        out
    };
    run(&["catalog", "zone", "dc1", "--description", "main"]);
    let spec = tmp.path().join("files.yaml");
    std::fs::write(
        &spec,
        "kind: http\nzone: dc1\nowner: storage\nendpoints: [http://10.0.0.1:3000/mcp, http://10.0.0.2:3000/mcp]\nversion: 1.4.0\n",
    )
    .unwrap();
    run(&["catalog", "put", "files", "--file", spec.to_str().unwrap()]);
    run(&["catalog", "tool", "files", "read"]);
    run(&[
        "catalog",
        "deprecate",
        "files",
        "read",
        "--sunset",
        "2027-01-31",
    ]);
    let listed: Value = serde_json::from_str(&run(&["catalog", "list"])).unwrap();
    assert_eq!(listed[0]["name"], "files");
    assert_eq!(listed[0]["endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["tools"][0]["lifecycle"], "deprecated");
    assert_eq!(listed[0]["tools"][0]["version"], "1.4.0");

    // policy apply FILE
    let pol = tmp.path().join("policy.yaml");
    std::fs::write(
        &pol,
        "max_loop_steps: 25\ntools:\n  - match: files/delete\n    classification: destructive\n    requires_approval: true\n    approval_group: sre\n    approval_timeout: 1m\n    max_execution_timeout_ms: 30000\n  - match: files/read\n    cache_ttl_seconds: 60\n    roles: [dev]\n",
    )
    .unwrap();
    let applied: Value =
        serde_json::from_str(&run(&["policy", "apply", pol.to_str().unwrap()])).unwrap();
    assert_eq!(applied["revision"], 1);
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "tools:\n  - match: x\n    requires_approvl: true\n").unwrap();
    let (ok, _, err) = cp.cli(&["policy", "apply", bad.to_str().unwrap()], None);
    assert!(!ok);
    assert!(
        err.contains("422") && err.contains("requires_approvl"),
        "{err}"
    );
    let shown: Value = serde_json::from_str(&run(&["policy", "show"])).unwrap();
    assert_eq!(shown["revision"], 1, "the bad file changed nothing");

    // kill switch through the CLI, and the snapshot carries all of it, signed
    run(&["kill", "tool", "files/delete", "--reason", "incident 9"]);
    let snap: Value = serde_json::from_str(&run(&["snapshot"])).unwrap();
    let body = &snap["snapshot"];
    assert_eq!(snap["version"], body["version"]);
    assert!(snap["signature"].as_str().unwrap().len() > 80);
    assert_eq!(body["policy"]["max_loop_steps"], 25);
    assert_eq!(body["kill"]["active"][0]["target"], "files/delete");
    assert_eq!(
        body["catalog"]["servers"][0]["tools"][0]["lifecycle"]["sunset"],
        "2027-01-31"
    );
    let kills: Value = serde_json::from_str(&run(&["kill", "list"])).unwrap();
    assert_eq!(kills[0]["reason"], "incident 9");
    run(&["kill", "tool", "files/delete", "--lift"]);
    let (ok, _, err) = cp.cli(&["kill", "tool", "files/delete", "--lift"], None);
    assert!(!ok && err.contains("404"), "{err}");
    // a wrong token is a clear failure
    let (ok, _, err) = cp.cli(
        &["catalog", "list"],
        Some("mgc_wrong-wrong-wrong-wrong-wrong"),
    );
    assert!(!ok && err.contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_group_approve_reject_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = Control::start(&tmp.path().join("cp"), &[]);
    let admin = cp.admin();
    let (s, v) = admin
        .req(
            Method::PUT,
            "/v1/policy",
            Some(
                json!({"tools": [{"match": "files/delete", "requires_approval": true,
                                   "approval_group": "sre", "approval_timeout": "2m"}]}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let alice = cp.client(Some(&key(&admin, "alice", "operator", &["sre"]).await));
    let bob = cp.client(Some(&key(&admin, "bob", "operator", &["dba"]).await));
    let carol = cp.client(Some(&key(&admin, "carol", "operator", &["sre"]).await));
    let hub = cp.client(Some(&key(&admin, "hub-1", "hub", &[]).await));
    // the shared governance::approval::ApprovalRequest, as the hub's registry mints it
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let held = |id: &str, tool: &str, group: Option<&str>, timeout_ms: u64| {
        serde_json::to_value(governance::approval::ApprovalRequest {
            id: id.into(),
            hub: "hub-1".into(),
            tool: tool.into(),
            upstream: "files".into(),
            arguments: json!({"path": "/srv/a"}),
            principal: "dev-dan".into(),
            reason: "destructive tool".into(),
            approval_group: group.map(str::to_owned),
            created_at: now,
            expires_at: now + timeout_ms,
        })
        .unwrap()
    };
    let a1 = hub
        .post(
            "/v1/approvals",
            held("hub1-0001", "delete", Some("sre"), 120_000),
        )
        .await;
    let again = hub
        .post(
            "/v1/approvals",
            held("hub1-0001", "delete", Some("sre"), 120_000),
        )
        .await;
    assert_eq!(
        again["id"], "hub1-0001",
        "a retried submission is the same approval"
    );
    let a2 = hub
        .post("/v1/approvals", held("", "delete", Some("sre"), 120_000))
        .await;
    let a3 = hub
        .post("/v1/approvals", held("hub1-0003", "wipe", None, 1000))
        .await;
    assert_eq!(a1["state"], "pending");
    assert_eq!(a1["id"], "hub1-0001");
    assert!(a1["decision"].is_null());
    let id1 = a1["id"].as_str().unwrap().to_owned();
    let id2 = a2["id"].as_str().unwrap().to_owned();
    let id3 = a3["id"].as_str().unwrap().to_owned();
    let queue = alice.get("/v1/approvals?state=pending").await;
    assert_eq!(queue.as_array().unwrap().len(), 3);
    assert!(queue[0]["age_ms"].as_i64().unwrap() >= 0);
    assert_eq!(queue[0]["arguments"]["path"], "/srv/a");

    // the hub long-polls its held call; the decision answers it
    let hub2 = hub.clone();
    let p1 = id1.clone();
    let waiter = tokio::spawn(async move {
        let t = Instant::now();
        let v = hub2.get(&format!("/v1/approvals/{p1}?wait_ms=30000")).await;
        (v, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, v) = bob
        .req(
            Method::POST,
            &format!("/v1/approvals/{id1}/decision"),
            Some(json!({"approve": true})),
        )
        .await;
    assert_eq!(s, 403, "bob is not in sre: {v}");
    alice
        .post(
            &format!("/v1/approvals/{id1}/decision"),
            json!({"approve": true, "comment": "checked the path"}),
        )
        .await;
    let (v, took) = waiter.await.unwrap();
    assert_eq!(v["state"], "approved");
    // what the hub hands its registry: the shared decision record
    let d: governance::approval::ApprovalDecision =
        serde_json::from_value(v["decision"].clone()).unwrap();
    assert_eq!(d.id, id1);
    assert_eq!(d.outcome, governance::approval::ApprovalOutcome::Approved);
    assert_eq!(d.by, "operator:alice");
    assert_eq!(d.comment.as_deref(), Some("checked the path"));
    assert!(
        took < Duration::from_secs(25),
        "long-poll answered by the decision, not its timeout"
    );
    // rejection through the CLI
    // (the CLI runs with the bootstrap admin key: an admin may decide for any group)
    let (ok, _, err) = cp.cli(
        &["approvals", "reject", &id2, "--comment", "not today"],
        None,
    );
    assert!(ok, "{err}");
    let (s, v) = carol
        .req(
            Method::POST,
            &format!("/v1/approvals/{id2}/decision"),
            Some(json!({"approve": true})),
        )
        .await;
    assert_eq!(s, 409, "already decided: {v}");
    // timeout = deny
    let v = hub.get(&format!("/v1/approvals/{id3}?wait_ms=20000")).await;
    assert_eq!(v["state"], "expired", "{v}");
    assert_eq!(v["decision"]["outcome"], "expired");
    assert_eq!(v["decision"]["by"], "timer");
    let (s, _) = alice
        .req(
            Method::POST,
            &format!("/v1/approvals/{id3}/decision"),
            Some(json!({"approve": true})),
        )
        .await;
    assert_eq!(s, 409);
    let pending = alice.get("/v1/approvals?state=pending").await;
    assert!(pending.as_array().unwrap().is_empty());
    let all = alice.get("/v1/approvals").await;
    let states: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["state"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        states.contains(&"approved".into())
            && states.contains(&"rejected".into())
            && states.contains(&"expired".into())
    );
    let kpis = alice.get("/v1/kpis").await;
    assert_eq!(
        kpis["series"]["approval_cycle_ms"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_ingest_verify_and_export() {
    // real receivers: syslog over UDP and TCP, OTLP/HTTP
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let tcp_buf = Arc::new(Mutex::new(Vec::new()));
    let tb = tcp_buf.clone();
    std::thread::spawn(move || {
        for c in tcp.incoming().flatten() {
            let tb = tb.clone();
            std::thread::spawn(move || {
                let mut c = c;
                let mut b = [0u8; 4096];
                while let Ok(n) = c.read(&mut b) {
                    if n == 0 {
                        break;
                    }
                    tb.lock().unwrap().extend_from_slice(&b[..n]);
                }
            });
        }
    });
    let otlp_bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let ob = otlp_bodies.clone();
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = otlp.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/v1/logs",
        post(move |body: bytes::Bytes| {
            let ob = ob.clone();
            async move {
                ob.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                "{}"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(otlp, app).await });

    let tmp = tempfile::tempdir().unwrap();
    let cp = Control::start(
        &tmp.path().join("cp"),
        &[
            "--audit-export",
            &format!("syslog+udp://{}", udp.local_addr().unwrap()),
            "--audit-export",
            &format!("syslog+tcp://{tcp_addr}"),
            "--audit-export",
            &format!("otlp+http://{otlp_addr}/v1/logs"),
        ],
    );
    let admin = cp.admin();
    let hub = cp.client(Some(&key(&admin, "hub-1", "hub", &[]).await));
    // the hub's real audit writer: log_opened + 4 calls = 5 lines, shipped in two batches
    let k = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let kb = base64::engine::general_purpose::STANDARD.encode(k.verifying_key().as_bytes());
    let recs = ["alice", "bob", "alice", "bob"]
        .iter()
        .map(|p| support::audit::call(p, "files", "read", "ok"))
        .collect();
    let lines = support::audit::hub_lines(tmp.path(), "hub-1", &k, recs);
    assert_eq!(lines.len(), 5);
    let (first, second) = (lines[..3].to_vec(), lines[3..].to_vec());
    let ingest = |lines: &[String], key: &str| json!({"hub": "hub-1", "key": key, "lines": lines});
    let v = hub.post("/v1/audit", ingest(&first, &kb)).await;
    assert_eq!(
        (v["accepted"].as_u64(), v["head_seq"].as_u64()),
        (Some(3), Some(3))
    );
    // a replayed, reordered, altered or foreign-signed batch is refused with the reason
    let (s, v) = hub
        .req(Method::POST, "/v1/audit", Some(ingest(&first, &kb)))
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("seq Some(1) breaks the chain (expected 4)"),
        "{v}"
    );
    let mut altered = second.clone();
    altered[1] = altered[1].replace("\"bob\"", "\"eve\"");
    assert_ne!(altered[1], second[1]);
    let (s, v) = hub
        .req(Method::POST, "/v1/audit", Some(ingest(&altered, &kb)))
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("record 1 (seq 5)"),
        "{v}"
    );
    let other = ed25519_dalek::SigningKey::from_bytes(&[43; 32]);
    let ob64 =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(other.verifying_key().as_bytes());
    let (s, _) = hub
        .req(Method::POST, "/v1/audit", Some(ingest(&second, &ob64)))
        .await;
    assert_eq!(s, 409, "another key than the pinned one");
    let (s, v) = hub
        .req(
            Method::POST,
            "/v1/audit",
            Some(json!({"hub": "hub-2", "key": kb, "lines": second})),
        )
        .await;
    assert_eq!(s, 422, "another hub's lines: {v}");
    let v = hub.post("/v1/audit", ingest(&second, &kb)).await;
    assert_eq!(v["head_seq"], 5);

    // indexed queries
    let bobs = admin.get("/v1/audit?principal=bob").await;
    let mut seqs: Vec<i64> = bobs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    seqs.sort();
    assert_eq!(seqs, [3, 5]);
    assert_eq!(bobs[0]["kind"], "tool_call");
    assert_eq!(bobs[0]["record"]["latency_us"], 1200);
    let (ok, out, err) = cp.cli(&["audit", "verify"], None);
    assert!(ok, "{out}{err}");
    assert!(out.contains("\"records\": 5"), "{out}");

    // exported: 5 datagrams, 5 framed TCP messages, 5 OTLP log records (bounded wait)
    let mut dgrams = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while dgrams.len() < 5 && Instant::now() < deadline {
        let mut b = [0u8; 8192];
        if let Ok(n) = udp.recv(&mut b) {
            dgrams.push(String::from_utf8_lossy(&b[..n]).into_owned());
        }
    }
    assert_eq!(dgrams.len(), 5, "{dgrams:?}");
    assert!(dgrams[0].starts_with("<133>1 20"), "{}", dgrams[0]);
    assert!(
        dgrams[0].contains(" log_opened [meshgate@32473 hub=\"hub-1\" seq=\"1\""),
        "{}",
        dgrams[0]
    );
    assert!(
        dgrams[1].contains(
            "seq=\"2\" principal=\"alice\" upstream=\"files\" tool=\"read\" outcome=\"ok\""
        ),
        "{}",
        dgrams[1]
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = String::from_utf8_lossy(&tcp_buf.lock().unwrap()).into_owned();
        let n = text.matches("<133>1 ").count();
        if n >= 5 {
            let first_len: usize = text.split(' ').next().unwrap().parse().unwrap();
            assert!(first_len > 50, "octet-counting frame: {text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "TCP syslog got {n} messages: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n: usize = otlp_bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| {
                b["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
                    .as_array()
                    .map_or(0, |a| a.len())
            })
            .sum();
        if n >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "OTLP got {n} records");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // one stored record changed behind the control plane's back: `audit verify` names it
    let db = cp.data.join("control.db");
    {
        use sqlx::Connection as _;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query(
            "UPDATE audit SET line = replace(line, '\"bob\"', '\"mallory\"') WHERE seq = 3",
        )
        .execute(&mut c)
        .await
        .unwrap();
    }
    let (ok, out, _) = cp.cli(&["audit", "verify"], None);
    assert!(!ok, "verify must fail: {out}");
    assert!(out.contains("seq 3"), "{out}");
}

/// A small OIDC issuer written for this test: an Ed25519 key, its JWKS served over HTTP, tokens
/// signed with jsonwebtoken.
struct Issuer {
    jwks_url: String,
    enc: jsonwebtoken::EncodingKey,
}

impl Issuer {
    async fn start() -> Issuer {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let x =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sk.verifying_key().as_bytes());
        let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA", "use": "sig"}]});
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/jwks.json",
            get(move || {
                let j = jwks.clone();
                async move { axum::Json(j) }
            }),
        );
        tokio::spawn(async move { axum::serve(l, app).await });
        let der = sk.to_pkcs8_der().unwrap();
        Issuer {
            jwks_url: format!("http://{addr}/jwks.json"),
            enc: jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
        }
    }

    fn token(&self, claims: Value, kid: &str) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, &claims, &self.enc).unwrap()
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_bearer_tokens_https_and_loopback_rule() {
    let iss = Issuer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    // HTTPS with a certificate from a test CA
    let ca = meshgate_tunnel::pki::new_ca("test CA").unwrap();
    let leaf =
        meshgate_tunnel::pki::issue_hub(&ca, &["127.0.0.1".into(), "localhost".into()]).unwrap();
    std::fs::write(tmp.path().join("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(tmp.path().join("tls.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(tmp.path().join("tls-key.pem"), &leaf.key_pem).unwrap();
    let cp = Control::start(
        &tmp.path().join("cp"),
        &[
            "--oidc-issuer",
            "https://idp.test",
            "--oidc-audience",
            "meshgate-control",
            "--oidc-jwks",
            &iss.jwks_url,
            "--oidc-role-prefix",
            "meshgate-",
            "--tls-cert",
            tmp.path().join("tls.pem").to_str().unwrap(),
            "--tls-key",
            tmp.path().join("tls-key.pem").to_str().unwrap(),
        ],
    );
    assert!(cp.url.starts_with("https://"));
    let ca_pem = std::fs::read(tmp.path().join("ca.pem")).unwrap();
    let api = |tok: Option<String>| Api {
        c: meshgate_control_client::http::Client::new(&cp.url, Some(&ca_pem), tok).unwrap(),
    };
    let claims = |roles: Value, aud: &str, exp: u64| {
        json!({"iss": "https://idp.test", "aud": aud, "sub": "u-1", "preferred_username": "olga",
               "exp": exp, "iat": now_s(), "roles": roles, "groups": ["sre"]})
    };
    let good = iss.token(
        claims(
            json!(["meshgate-operator", "other"]),
            "meshgate-control",
            now_s() + 300,
        ),
        "k1",
    );
    let op = api(Some(good));
    let who = op.get("/v1/whoami").await;
    assert_eq!(
        (
            who["name"].as_str(),
            who["role"].as_str(),
            who["via"].as_str()
        ),
        (Some("olga"), Some("operator"), Some("oidc"))
    );
    assert_eq!(who["groups"][0], "sre");
    op.post(
        "/v1/kill",
        json!({"scope": "global", "reason": "oidc operator"}),
    )
    .await;
    let (s, _) = op
        .req(Method::PUT, "/v1/policy", Some(json!({"tools": []})))
        .await;
    assert_eq!(s, 403, "operator is not admin");
    let admin_tok = iss.token(
        claims(json!(["meshgate-admin"]), "meshgate-control", now_s() + 300),
        "k1",
    );
    let (s, v) = api(Some(admin_tok))
        .req(Method::PUT, "/v1/policy", Some(json!({"tools": []})))
        .await;
    assert_eq!(s, 200, "{v}");
    let viewer = iss.token(
        claims(json!("meshgate-viewer"), "meshgate-control", now_s() + 300),
        "k1",
    );
    let (s, _) = api(Some(viewer))
        .req(
            Method::POST,
            "/v1/kill/lift",
            Some(json!({"scope": "global"})),
        )
        .await;
    assert_eq!(s, 403);
    let refused: Vec<(String, u16, &str)> = vec![
        (
            iss.token(
                claims(json!(["meshgate-admin"]), "meshgate-control", now_s() - 600),
                "k1",
            ),
            401,
            "xpired",
        ),
        (
            iss.token(
                claims(json!(["meshgate-admin"]), "someone-else", now_s() + 300),
                "k1",
            ),
            401,
            "udience",
        ),
        (
            iss.token(
                claims(json!(["meshgate-admin"]), "meshgate-control", now_s() + 300),
                "k9",
            ),
            401,
            "unknown kid",
        ),
        (
            iss.token(
                claims(json!(["admin"]), "meshgate-control", now_s() + 300),
                "k1",
            ),
            403,
            "no meshgate-admin",
        ),
        (
            {
                let h = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
                let c = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
                    claims(json!(["meshgate-admin"]), "meshgate-control", now_s() + 300)
                        .to_string(),
                );
                format!("{h}.{c}.")
            },
            401,
            "token",
        ),
        (
            {
                let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
                h.kid = Some("k1".into());
                jsonwebtoken::encode(
                    &h,
                    &claims(json!(["meshgate-admin"]), "meshgate-control", now_s() + 300),
                    &jsonwebtoken::EncodingKey::from_secret(b"guess"),
                )
                .unwrap()
            },
            401,
            "not allowed",
        ),
        ("garbage".into(), 401, "token"),
    ];
    for (tok, want, needle) in refused {
        let (s, v) = api(Some(tok)).req(Method::GET, "/v1/servers", None).await;
        assert_eq!(s, want, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    // still serving after all that
    api(Some(support::control::ADMIN.into()))
        .get("/v1/servers")
        .await;
    // plain http is for loopback only
    let out = std::process::Command::new(support::control::bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(tmp.path().join("open"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing plain HTTP"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_reports_and_kpis() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = Control::start(&tmp.path().join("cp"), &[]);
    let admin = cp.admin();
    let hub = cp.client(Some(&key(&admin, "hub-1", "hub", &[]).await));
    let report = |calls: u64, errors: u64, hits: u64| {
        json!({"sessions": 12, "tunnels": [{"edge": "edge-7", "transport": "quic", "since_ms": 1}],
               "upstreams": [{"name": "files", "up": true}],
               "kpi": {"tool_boot_ms": 420.0, "reconnections": 1, "cache_hits": hits, "cache_misses": 10, "calls": calls, "errors": errors}})
    };
    hub.post("/v1/hubs/hub-1/report", report(100, 0, 10)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    hub.post("/v1/hubs/hub-1/report", report(200, 5, 40)).await;
    let hubs = admin.get("/v1/hubs").await;
    let h = &hubs["hubs"][0];
    assert_eq!(h["id"], "hub-1");
    assert_eq!(h["report"]["sessions"], 12);
    assert_eq!(h["report"]["tunnels"][0]["edge"], "edge-7");
    assert_eq!(h["stale"], false);
    let k = admin.get("/v1/kpis?window_s=600").await;
    let s = &k["series"];
    assert_eq!(s["tool_boot_ms"].as_array().unwrap().len(), 2);
    assert_eq!(s["error_rate"][0][1], 0.05);
    assert_eq!(s["cache_hit_ratio"][0][1], 1.0, "30 hits, 0 new misses");
    let (st, _) = hub
        .req(Method::POST, "/v1/hubs/hub-1/report", Some(json!([1, 2])))
        .await;
    assert_eq!(st, 400);
}
