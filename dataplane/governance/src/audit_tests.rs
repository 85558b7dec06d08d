use super::*;
use crate::keys::generate_signing_key;

struct Log {
    _dir: tempfile::TempDir,
    cfg: AuditConfig,
    key: SigningKey,
}

fn setup() -> Log {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        path: dir.path().join("audit.jsonl"),
        head_path: None,
        key_file: dir.path().join("audit.key"),
        queue: 1024,
        on_failure: FailMode::Closed,
        fsync: false,
        sign_every: 1,
    };
    Log {
        _dir: dir,
        cfg,
        key: generate_signing_key(),
    }
}

fn write(l: &Log, n: usize) {
    let log = AuditLog::open(&l.cfg, "hub-a", l.key.clone()).unwrap();
    for i in 0..n {
        let mut r = AuditRecord::new(AuditKind::ToolCall);
        r.principal = Some("jwt:i#alice".into());
        r.tool = Some(format!("tool{i}"));
        r.args_sha256 = Some(argument_digest(br#"{"a":1}"#));
        r.outcome = Some("ok".into());
        r.latency_us = Some(100 + i as u64);
        log.submit(r).unwrap();
    }
    assert!(log.flush(Duration::from_secs(10)));
    log.close(Duration::from_secs(10));
}

fn lines(l: &Log) -> Vec<Vec<u8>> {
    std::fs::read(&l.cfg.path)
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn put(l: &Log, lines: &[Vec<u8>]) {
    let mut out = Vec::new();
    for x in lines {
        out.extend_from_slice(x);
        out.push(b'\n');
    }
    std::fs::write(&l.cfg.path, out).unwrap();
}

#[test]
fn a_real_log_verifies_and_continues_across_restarts() {
    let l = setup();
    write(&l, 5);
    let s = verify(&l.cfg.path, &l.key.verifying_key()).unwrap();
    // log_opened + 5 records.
    assert_eq!(s.records, 6);
    assert_eq!(s.head_seq, 6);
    assert_eq!(s.unanchored, 0);
    write(&l, 3);
    let s = verify(&l.cfg.path, &l.key.verifying_key()).unwrap();
    assert_eq!(s.records, 10);
    let first: serde_json::Value = serde_json::from_slice(&lines(&l)[0]).unwrap();
    assert_eq!(first["kind"], "log_opened");
    assert_eq!(first["hub"], "hub-a");
    assert_eq!(first["prev"], ZERO_HASH);
    let rec: serde_json::Value = serde_json::from_slice(&lines(&l)[1]).unwrap();
    assert_eq!(rec["kind"], "tool_call");
    assert_eq!(rec["args_sha256"], argument_digest(br#"{"a":1}"#));
    assert!(rec["time"].as_str().unwrap().ends_with('Z'));
    // Another key does not verify it.
    assert!(matches!(
        verify(&l.cfg.path, &generate_signing_key().verifying_key()),
        Err(VerifyError::BadRecord { line: 1, .. })
    ));
}

#[test]
fn one_changed_byte_is_found_on_its_line() {
    let l = setup();
    write(&l, 5);
    let mut ls = lines(&l);
    let pos = ls[3].windows(5).position(|w| w == b"tool2").unwrap();
    ls[3][pos + 4] = b'9';
    put(&l, &ls);
    match verify(&l.cfg.path, &l.key.verifying_key()) {
        Err(VerifyError::BadRecord { line: 4, why }) => assert!(why.contains("signature"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_removed_record_is_found_at_the_next_line() {
    let l = setup();
    write(&l, 5);
    let mut ls = lines(&l);
    ls.remove(2);
    put(&l, &ls);
    assert!(matches!(
        verify(&l.cfg.path, &l.key.verifying_key()),
        Err(VerifyError::BadRecord { line: 3, .. })
    ));
}

#[test]
fn an_inserted_record_is_found() {
    let l = setup();
    write(&l, 5);
    let mut ls = lines(&l);
    // A duplicate of a genuine, validly signed record inserted.
    let dup = ls[1].clone();
    ls.insert(3, dup);
    put(&l, &ls);
    assert!(matches!(
        verify(&l.cfg.path, &l.key.verifying_key()),
        Err(VerifyError::BadRecord { line: 4, .. })
    ));
}

#[test]
fn a_clean_tail_cut_is_found_by_the_head() {
    let l = setup();
    write(&l, 5);
    let mut ls = lines(&l);
    ls.truncate(4);
    put(&l, &ls);
    assert_eq!(
        verify(&l.cfg.path, &l.key.verifying_key()),
        Err(VerifyError::Truncated {
            line: 5,
            expected: 6,
            found: 4
        })
    );
    // A cut mid-line is found too.
    let mut data = std::fs::read(&l.cfg.path).unwrap();
    data.truncate(data.len() - 10);
    std::fs::write(&l.cfg.path, data).unwrap();
    assert!(matches!(
        verify(&l.cfg.path, &l.key.verifying_key()),
        Err(VerifyError::BadRecord { line: 4, .. })
    ));
    // And without a head, verify refuses to vouch for the tail.
    std::fs::remove_file(l.cfg.head()).unwrap();
    write(&l, 0);
    std::fs::remove_file(l.cfg.head()).unwrap();
    assert!(matches!(
        verify(&l.cfg.path, &l.key.verifying_key()),
        Err(VerifyError::Head(_))
    ));
}

#[test]
fn restart_after_a_partial_line_and_a_truncation_records_both() {
    let l = setup();
    write(&l, 3);
    let mut ls = lines(&l);
    ls.truncate(2);
    put(&l, &ls);
    let mut data = std::fs::read(&l.cfg.path).unwrap();
    data.extend_from_slice(b"{\"seq\":3,\"partial");
    std::fs::write(&l.cfg.path, data).unwrap();
    write(&l, 1);
    let s = verify(&l.cfg.path, &l.key.verifying_key()).unwrap();
    assert_eq!(s.notices.len(), 2, "{:?}", s.notices);
    assert!(s.notices[0].1.contains("partial"));
    assert!(s.notices[1].1.contains("missing"));
}

#[test]
fn a_failing_disk_stops_tool_calls_in_closed_mode() {
    let l = setup();
    let mut cfg = l.cfg.clone();
    // /dev/full accepts opens and fails every write with ENOSPC.
    cfg.path = PathBuf::from("/dev/full");
    cfg.head_path = Some(l.cfg.head());
    let log = AuditLog::open(&cfg, "hub-a", l.key.clone()).unwrap();
    assert!(!log.flush(Duration::from_secs(10)), "the write fails");
    let err = log
        .submit(AuditRecord::new(AuditKind::ToolCall))
        .unwrap_err();
    assert!(err.0.contains("/dev/full"), "{err}");
    assert!(log.failure().is_some());
    assert!(log.dropped() >= 1);

    cfg.on_failure = FailMode::Open;
    let open = AuditLog::open(&cfg, "hub-a", l.key.clone()).unwrap();
    assert!(!open.flush(Duration::from_secs(10)));
    assert!(open.submit(AuditRecord::new(AuditKind::ToolCall)).is_ok());
}

#[test]
fn a_full_queue_is_counted_and_refused_in_closed_mode() {
    let l = setup();
    let mut cfg = l.cfg.clone();
    cfg.queue = 1;
    let log = AuditLog::open(&cfg, "hub-a", l.key.clone()).unwrap();
    let mut refused = 0;
    for _ in 0..10_000 {
        if log.submit(AuditRecord::new(AuditKind::Allowed)).is_err() {
            refused += 1;
        }
    }
    assert!(log.flush(Duration::from_secs(10)));
    log.close(Duration::from_secs(10));
    assert_eq!(log.dropped(), refused);
    let s = verify(&cfg.path, &l.key.verifying_key()).unwrap();
    let lost: u64 = s
        .notices
        .iter()
        .map(|(_, n)| {
            n.trim_start_matches("audit_gap: ")
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        lost, refused,
        "every refused record is accounted for in a gap record"
    );
    assert_eq!(s.records, 1 + (10_000 - refused) + s.notices.len() as u64);
}

#[test]
fn sign_every_n_keeps_every_check() {
    let mut l = setup();
    l.cfg.sign_every = 4;
    write(&l, 30);
    let ls = lines(&l);
    let signed = ls
        .iter()
        .filter(|x| x.windows(7).any(|w| w == b"\"sig\":\""))
        .count();
    assert!(signed < ls.len(), "{signed} of {} signed", ls.len());
    assert!(signed >= ls.len() / 4);
    let s = verify(&l.cfg.path, &l.key.verifying_key()).unwrap();
    assert_eq!(s.records, 31);
    // Change an unsigned record: the chain breaks at the next record.
    let i = ls
        .iter()
        .position(|x| {
            !x.windows(7).any(|w| w == b"\"sig\":\"") && x.windows(4).any(|w| w == b"tool")
        })
        .unwrap();
    let mut bad = ls.clone();
    let pos = bad[i].windows(4).position(|w| w == b"tool").unwrap();
    bad[i][pos] = b'T';
    put(&l, &bad);
    assert!(matches!(
        verify(&l.cfg.path, &l.key.verifying_key()),
        Err(VerifyError::BadRecord { line, .. }) if line == i as u64 + 2
    ));
    // An unsigned record forged after the head is not covered by anything.
    let mut extra = ls.clone();
    let last: serde_json::Value = serde_json::from_slice(ls.last().unwrap()).unwrap();
    let forged = serde_json::json!({"seq": last["seq"].as_u64().unwrap() + 1, "kind": "tool_call",
        "prev": hex::encode(Sha256::digest(ls.last().unwrap()))});
    extra.push(serde_json::to_vec(&forged).unwrap());
    put(&l, &extra);
    assert!(matches!(
        verify(&l.cfg.path, &l.key.verifying_key()),
        Err(VerifyError::BadRecord { line: 32, .. })
    ));
    // Tail truncation is still caught by the head.
    let mut cut = ls.clone();
    cut.truncate(20);
    put(&l, &cut);
    assert!(matches!(
        verify(&l.cfg.path, &l.key.verifying_key()),
        Err(VerifyError::Truncated { .. })
    ));
}
