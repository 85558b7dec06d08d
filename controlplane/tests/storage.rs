//! One storage suite, run unchanged against SQLite (a file in a temp dir, WAL) and a real
//! PostgreSQL server this test starts (Debian `postgresql` package, see `support/pg.rs`).

#![allow(clippy::unwrap_used)]

mod support;

use controlplane::store::*;
use serde_json::json;

fn server(name: &str, federate: bool) -> ServerRow {
    ServerRow {
        name: name.into(),
        kind: "http".into(),
        zone: "dc1".into(),
        owner: "team-a".into(),
        endpoints: vec![
            "http://10.0.0.1:3000/mcp".into(),
            "http://10.0.0.2:3000/mcp".into(),
        ],
        federate,
        version: Some("1.4.0".into()),
        updated_ms: 10,
    }
}

fn tool(server: &str, name: &str, approved: bool) -> ToolRow {
    ToolRow {
        server: server.into(),
        name: name.into(),
        version: "1.4.0".into(),
        lifecycle: "active".into(),
        sunset: None,
        replacement: None,
        approved,
        source: "declared".into(),
        approved_by: approved.then(|| "ops".into()),
        updated_ms: 10,
    }
}

/// The suite: every method of the trait, with the edge cases that matter (one-time tokens,
/// compare-and-set audit heads, decisions only while pending, expiry).
async fn suite(s: &dyn Store) {
    // --- catalog ---
    assert!(s.servers().await.unwrap().is_empty());
    s.put_server(&server("files", true)).await.unwrap();
    s.put_server(&server("search", false)).await.unwrap();
    let mut f2 = server("files", true);
    f2.endpoints = vec!["http://10.0.0.9:3000/mcp".into()];
    f2.version = None;
    s.put_server(&f2).await.unwrap();
    let all = s.servers().await.unwrap();
    assert_eq!(
        all.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
        ["files", "search"]
    );
    assert_eq!(s.server("files").await.unwrap().unwrap(), f2);
    assert!(!s.server("search").await.unwrap().unwrap().federate);
    assert!(s.server("nope").await.unwrap().is_none());

    s.put_tool(&tool("files", "read", true)).await.unwrap();
    let mut retired = tool("files", "old_read", true);
    retired.lifecycle = "retired".into();
    retired.replacement = Some("files__read".into());
    s.put_tool(&retired).await.unwrap();
    assert_eq!(s.tool("files", "old_read").await.unwrap().unwrap(), retired);
    // hubs report tools: new ones arrive unapproved, known ones keep approval and lifecycle
    let new = s
        .record_discovered(
            "files",
            "1.5.0",
            &["read".into(), "write".into(), "old_read".into()],
            20,
        )
        .await
        .unwrap();
    assert_eq!(new, 1);
    let write = s.tool("files", "write").await.unwrap().unwrap();
    assert!(!write.approved);
    assert_eq!(write.source, "reported");
    let read = s.tool("files", "read").await.unwrap().unwrap();
    assert!(read.approved);
    assert_eq!(
        read.version, "1.4.0",
        "a declared tool keeps its declared version"
    );
    s.record_discovered("files", "1.6.0", &["write".into()], 21)
        .await
        .unwrap();
    assert_eq!(
        s.tool("files", "write").await.unwrap().unwrap().version,
        "1.6.0",
        "a reported one follows"
    );
    assert_eq!(
        s.tool("files", "old_read")
            .await
            .unwrap()
            .unwrap()
            .lifecycle,
        "retired"
    );
    assert_eq!(s.tools(Some("files")).await.unwrap().len(), 3);
    s.put_tool(&tool("search", "query", false)).await.unwrap();
    assert_eq!(s.tools(None).await.unwrap().len(), 4);

    s.put_zone(&ZoneRow {
        name: "dc1".into(),
        description: "first".into(),
    })
    .await
    .unwrap();
    s.put_zone(&ZoneRow {
        name: "dc1".into(),
        description: "main".into(),
    })
    .await
    .unwrap();
    s.put_zone(&ZoneRow {
        name: "site-7".into(),
        description: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(s.zones().await.unwrap()[0].description, "main");
    assert!(s.delete_zone("site-7").await.unwrap());
    assert!(!s.delete_zone("site-7").await.unwrap());
    assert_eq!(s.zones().await.unwrap().len(), 1);

    assert!(s.delete_server("search").await.unwrap());
    assert!(!s.delete_server("search").await.unwrap());
    assert_eq!(
        s.tools(None).await.unwrap().len(),
        3,
        "tools of a deleted server go too"
    );

    // --- policy ---
    assert!(s.policy().await.unwrap().is_none());
    let r1 = s
        .put_policy("tools: []", &json!({"tools": []}), "alice", 30)
        .await
        .unwrap();
    let r2 = s
        .put_policy(
            "max_loop_steps: 5",
            &json!({"max_loop_steps": 5}),
            "bob",
            31,
        )
        .await
        .unwrap();
    assert_eq!((r1, r2), (1, 2));
    let p = s.policy().await.unwrap().unwrap();
    assert_eq!(p.revision, 2);
    assert_eq!(p.json["max_loop_steps"], 5);
    assert_eq!(p.by, "bob");

    // --- kill switch ---
    let kill = |scope: &str, target: &str, since| KillRow {
        scope: scope.into(),
        target: target.into(),
        reason: "incident 42".into(),
        by: "ops".into(),
        since_ms: since,
    };
    s.put_kill(&kill("tool", "files/write", 40)).await.unwrap();
    s.put_kill(&kill("global", "", 41)).await.unwrap();
    s.put_kill(&kill("global", "", 41)).await.unwrap(); // idempotent
    let ks = s.kills().await.unwrap();
    assert_eq!(ks.len(), 2);
    assert_eq!(ks[0].scope, "global", "newest first");
    assert!(s.lift_kill("global", "").await.unwrap());
    assert!(!s.lift_kill("global", "").await.unwrap());
    assert_eq!(s.kills().await.unwrap().len(), 1);

    // --- snapshots ---
    assert!(s.latest_snapshot().await.unwrap().is_none());
    let snap = |v: i64| SnapshotRow {
        version: v,
        sha256: format!("{v:064x}"),
        envelope: format!("{{\"v\":{v}}}").into_bytes(),
        created_ms: 50 + v,
    };
    s.insert_snapshot(&snap(1)).await.unwrap();
    s.insert_snapshot(&snap(2)).await.unwrap();
    assert!(matches!(
        s.insert_snapshot(&snap(2)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.latest_snapshot().await.unwrap().unwrap(), snap(2));
    assert_eq!(s.snapshot(1).await.unwrap().unwrap(), snap(1));
    assert!(s.snapshot(9).await.unwrap().is_none());

    // --- API keys ---
    let key = ApiKeyRow {
        id: "k1".into(),
        name: "ops".into(),
        role: "operator".into(),
        groups: vec!["sre".into()],
        hash: "h1".into(),
        created_ms: 60,
    };
    s.put_api_key(&key).await.unwrap();
    let mut dup = key.clone();
    dup.id = "k2".into();
    assert!(matches!(
        s.put_api_key(&dup).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.api_key_by_hash("h1").await.unwrap().unwrap(), key);
    assert!(s.api_key_by_hash("h2").await.unwrap().is_none());
    assert_eq!(s.api_keys().await.unwrap().len(), 1);
    assert!(s.delete_api_key("k1").await.unwrap());
    assert!(s.api_key_by_hash("h1").await.unwrap().is_none());

    // --- edges ---
    s.put_edge("edge-1", 70).await.unwrap();
    assert_eq!(s.edge("edge-1").await.unwrap().unwrap().state, "pending");
    s.put_enroll_token("t1", "edge-1", 1000).await.unwrap();
    s.put_enroll_token("t-old", "edge-1", 75).await.unwrap();
    assert_eq!(
        s.take_enroll_token("t-old", 80).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(s.take_enroll_token("nope", 80).await.unwrap(), None);
    assert_eq!(
        s.take_enroll_token("t1", 80).await.unwrap().as_deref(),
        Some("edge-1")
    );
    assert_eq!(
        s.take_enroll_token("t1", 81).await.unwrap(),
        None,
        "one time only"
    );
    let cert = EdgeCertRow {
        serial: "0a1b".into(),
        edge: "edge-1".into(),
        key_sha256: "kh".into(),
        not_after_ms: 5000,
        issued_ms: 90,
        revoked_ms: None,
    };
    s.put_edge_cert(&cert).await.unwrap();
    assert_eq!(s.edge("edge-1").await.unwrap().unwrap().state, "enrolled");
    assert_eq!(s.edge_cert_by_key("kh").await.unwrap().unwrap(), cert);
    let mut rotated = cert.clone();
    rotated.serial = "0a1c".into();
    rotated.issued_ms = 95;
    s.put_edge_cert(&rotated).await.unwrap();
    assert_eq!(
        s.edge_cert_by_key("kh").await.unwrap().unwrap().serial,
        "0a1c"
    );
    assert_eq!(s.edge_certs(Some("edge-1")).await.unwrap().len(), 2);
    s.put_enroll_token("t2", "edge-1", 1000).await.unwrap();
    assert!(s.revoke_edge("edge-1", 100).await.unwrap());
    assert!(!s.revoke_edge("edge-9", 100).await.unwrap());
    let e = s.edge("edge-1").await.unwrap().unwrap();
    assert_eq!((e.state.as_str(), e.revoked_ms), ("revoked", Some(100)));
    assert!(s.edge_cert_by_key("kh").await.unwrap().is_none());
    assert!(s
        .edge_certs(None)
        .await
        .unwrap()
        .iter()
        .all(|c| c.revoked_ms == Some(100)));
    assert_eq!(
        s.take_enroll_token("t2", 101).await.unwrap(),
        None,
        "revocation voids tokens"
    );
    s.put_edge("edge-1", 110).await.unwrap();
    assert_eq!(
        s.edge("edge-1").await.unwrap().unwrap().state,
        "pending",
        "re-enrolment"
    );
    assert_eq!(s.edges().await.unwrap().len(), 1);

    // --- approvals ---
    let appr = |id: &str, created: i64, expires: i64| ApprovalRow {
        id: id.into(),
        hub: "hub-1".into(),
        upstream: "files".into(),
        tool: "delete".into(),
        arguments: json!({"path": "/srv/x"}),
        principal: "alice".into(),
        reason: "destructive".into(),
        approval_group: Some("sre".into()),
        state: "pending".into(),
        created_ms: created,
        expires_ms: expires,
        decided_ms: None,
        decided_by: None,
        comment: None,
    };
    s.insert_approval(&appr("a1", 200, 10_000)).await.unwrap();
    s.insert_approval(&appr("a2", 201, 10_000)).await.unwrap();
    s.insert_approval(&appr("a3", 202, 300)).await.unwrap();
    assert_eq!(s.approvals(Some("pending"), 10).await.unwrap().len(), 3);
    assert_eq!(
        s.approvals(None, 2).await.unwrap()[0].id,
        "a3",
        "newest first, limited"
    );
    assert!(s
        .decide_approval("a1", "approved", "ops", "fine", 250)
        .await
        .unwrap());
    assert!(!s
        .decide_approval("a1", "rejected", "ops", "again", 251)
        .await
        .unwrap());
    assert!(
        !s.decide_approval("a3", "approved", "ops", "late", 301)
            .await
            .unwrap(),
        "past its deadline it cannot be approved"
    );
    let a1 = s.approval("a1").await.unwrap().unwrap();
    assert_eq!(a1.state, "approved");
    assert_eq!(a1.comment.as_deref(), Some("fine"));
    assert_eq!(a1.arguments["path"], "/srv/x");
    assert_eq!(
        s.expire_approvals(301).await.unwrap(),
        vec!["a3".to_string()]
    );
    assert!(s.expire_approvals(302).await.unwrap().is_empty());
    assert_eq!(s.approval("a3").await.unwrap().unwrap().state, "expired");
    assert_eq!(s.approvals(Some("pending"), 10).await.unwrap().len(), 1);

    // --- audit ---
    let row = |seq: i64, principal: &str| AuditRow {
        hub: "hub-1".into(),
        seq,
        ts_ms: 400 + seq,
        kind: "call".into(),
        principal: principal.into(),
        upstream: "files".into(),
        tool: "read".into(),
        outcome: "ok".into(),
        line: format!("{{\"seq\":{seq}}}"),
        hash: format!("{seq:064x}"),
    };
    s.append_audit("hub-1", 0, &[row(1, "alice"), row(2, "bob")], "KEY")
        .await
        .unwrap();
    assert!(
        matches!(
            s.append_audit("hub-1", 0, &[row(1, "alice")], "KEY").await,
            Err(StoreError::Conflict(_))
        ),
        "a stale head is refused"
    );
    s.append_audit("hub-1", 2, &[row(3, "alice")], "KEY")
        .await
        .unwrap();
    let h = s.hub("hub-1").await.unwrap().unwrap();
    assert_eq!(
        (h.audit_seq, h.audit_hash.as_deref()),
        (3, Some(format!("{:064x}", 3).as_str()))
    );
    assert_eq!(h.audit_key.as_deref(), Some("KEY"));
    let by_alice = s
        .audit(&AuditFilter {
            principal: Some("alice".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_alice.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 1]);
    let chain = s.audit_chain("hub-1", 2, 10).await.unwrap();
    assert_eq!(chain.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
    let limited = s
        .audit(&AuditFilter {
            hub: Some("hub-1".into()),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);

    // --- keyring: the first value wins, later ones get it back ---
    assert_eq!(
        s.keyring_put_if_absent("signing", "one", 1).await.unwrap(),
        "one"
    );
    assert_eq!(
        s.keyring_put_if_absent("signing", "two", 2).await.unwrap(),
        "one"
    );

    // --- hubs and KPIs ---
    s.put_hub_report("hub-1", &json!({"sessions": 4}), 500)
        .await
        .unwrap();
    s.put_hub_report("hub-2", &json!({"sessions": 1}), 501)
        .await
        .unwrap();
    let h = s.hub("hub-1").await.unwrap().unwrap();
    assert_eq!(h.report["sessions"], 4);
    assert_eq!(h.audit_seq, 3, "a report keeps the audit head");
    assert_eq!(s.hubs().await.unwrap().len(), 2);
    let k = |ts, v| KpiSample {
        hub: "hub-1".into(),
        ts_ms: ts,
        name: "calls".into(),
        value: v,
    };
    s.put_kpis(&[k(600, 1.0), k(700, 2.5)]).await.unwrap();
    let got = s.kpis(650).await.unwrap();
    assert_eq!(got, vec![k(700, 2.5)]);
}

#[tokio::test]
async fn storage_suite_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    let s = SqlStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(s.journal_mode().await.unwrap().as_deref(), Some("wal"));
    assert_eq!(s.schema_version().await.unwrap(), migrate::latest());
    suite(&s).await;
    drop(s);
    // Reopening migrates nothing and keeps the data.
    let s = SqlStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(s.servers().await.unwrap().len(), 1);
    assert!(path.exists());
}

#[tokio::test]
async fn storage_suite_postgres() {
    let pg = support::pg::Pg::start();
    pg.create_db("suite");
    let s = SqlStore::connect(&pg.url("suite")).await.unwrap();
    assert_eq!(s.backend(), "postgres");
    assert_eq!(s.schema_version().await.unwrap(), migrate::latest());
    suite(&s).await;
    // Two control planes migrating one database at once: both succeed, schema applied once.
    pg.create_db("ha");
    let url = pg.url("ha");
    let (a, b) = tokio::join!(SqlStore::connect(&url), SqlStore::connect(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.schema_version().await.unwrap(), migrate::latest());
    a.put_server(&server("x", true)).await.unwrap();
    assert_eq!(b.servers().await.unwrap().len(), 1, "both see one database");
}
