//! Chain checks of hub audit lines on ingest. The record type and the file format are the
//! shared `governance::audit` ones (one definition for hub and control plane): each line is a
//! JSON object `{"seq":…,"time":…,"hub":…,<AuditRecord fields>,"prev":…,"sig":…}` where `prev` is
//! the SHA-256 (hex) of the previous line's bytes (64 zeros before the first) and `sig` the
//! Ed25519 signature over the line's bytes up to `,"sig":` with `}` appended.
//! `governance::audit::verify` checks a whole file; a control plane receives a hub's chain in
//! batches that continue a stored head, so this module checks the same rules line by line from
//! a given head. `tests/api.rs` feeds it lines written by the real `governance::audit::AuditLog`.

use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use governance::audit::AuditRecord;
use sha2::{Digest as _, Sha256};

/// Hash of the chain before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A chain head: the last record's seq and the SHA-256 of its line.
pub type ChainHead = (u64, String);

/// One verified line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Position in the hub's chain.
    pub seq: u64,
    /// The record (shared type).
    pub record: AuditRecord,
    /// SHA-256 (hex) of the line.
    pub hash: String,
}

/// SHA-256 hex of a line's bytes.
pub fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

const MARK: &str = ",\"sig\":\"";

/// Checks that `lines` continue the chain at `head` (`None`: a new chain from seq 1), were
/// written by `hub` and signed by `key`. Returns the records and the new head, or names the
/// first bad line (by its index in the batch and its seq).
pub fn verify_lines(
    head: Option<ChainHead>,
    hub: &str,
    lines: &[String],
    key: &VerifyingKey,
) -> Result<(Vec<Line>, Option<ChainHead>), String> {
    let (mut seq, mut prev) = head.clone().unwrap_or((0, GENESIS.to_owned()));
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let bad = |why: &str| format!("record {i} (seq {}): {why}", seq + 1);
        let at = line.rfind(MARK).ok_or_else(|| bad("no signature"))?;
        if !line.ends_with("\"}") || at + MARK.len() > line.len() - 2 {
            return Err(bad("malformed signature member"));
        }
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&line[at + MARK.len()..line.len() - 2])
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or_else(|| bad("signature is not a base64 Ed25519 signature"))?;
        let signed = format!("{}}}", &line[..at]);
        key.verify(signed.as_bytes(), &sig).map_err(|_| {
            bad("signature does not verify (record altered or signed by another key)")
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&signed).map_err(|e| bad(&format!("not JSON: {e}")))?;
        let got = v.get("seq").and_then(|s| s.as_u64());
        if got != Some(seq + 1) {
            return Err(format!(
                "record {i}: seq {got:?} breaks the chain (expected {})",
                seq + 1
            ));
        }
        if v.get("prev").and_then(|p| p.as_str()) != Some(prev.as_str()) {
            return Err(bad("prev does not match the previous record's hash"));
        }
        if v.get("hub").and_then(|h| h.as_str()) != Some(hub) {
            return Err(bad(&format!(
                "written by hub {:?}, not {hub:?}",
                v.get("hub")
            )));
        }
        let record: AuditRecord =
            serde_json::from_value(v).map_err(|e| bad(&format!("not an audit record: {e}")))?;
        seq += 1;
        prev = line_hash(line);
        out.push(Line {
            seq,
            record,
            hash: prev.clone(),
        });
    }
    let new_head = if seq == 0 { head } else { Some((seq, prev)) };
    Ok((out, new_head))
}

/// The record's kind as its snake_case name (`tool_call`, `approval_held`, …).
pub fn kind_name(r: &AuditRecord) -> String {
    r.kind
        .and_then(|k| serde_json::to_value(k).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use governance::audit::{AuditConfig, AuditKind, AuditLog, FailMode};

    /// Lines written by the hub's real audit writer.
    fn hub_log(n: usize, key: &ed25519_dalek::SigningKey) -> Vec<String> {
        let d = tempfile::tempdir().unwrap();
        let cfg = AuditConfig {
            path: d.path().join("audit.jsonl"),
            head_path: None,
            key_file: d.path().join("unused.key"),
            queue: 1024,
            on_failure: FailMode::Closed,
            fsync: false,
            sign_every: 1,
        };
        let log = AuditLog::open(&cfg, "hub-a", key.clone()).unwrap();
        for i in 0..n {
            let mut r = AuditRecord::new(AuditKind::ToolCall);
            r.principal = Some(format!("user-{i}"));
            r.upstream = Some("files".into());
            r.tool = Some("read".into());
            r.outcome = Some("ok".into());
            log.submit(r).unwrap();
        }
        assert!(log.flush(std::time::Duration::from_secs(10)));
        log.close(std::time::Duration::from_secs(10));
        std::fs::read_to_string(&cfg.path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn lines_of_the_real_hub_writer_verify_in_batches() {
        let k = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let vk = k.verifying_key();
        let lines = hub_log(4, &k); // log_opened + 4 tool calls
        assert_eq!(lines.len(), 5);
        let (recs, head) = verify_lines(None, "hub-a", &lines[..2], &vk).unwrap();
        assert_eq!(recs[0].record.kind, Some(AuditKind::LogOpened));
        assert_eq!(kind_name(&recs[1].record), "tool_call");
        let (recs2, head2) = verify_lines(head.clone(), "hub-a", &lines[2..], &vk).unwrap();
        assert_eq!(recs2.last().unwrap().seq, 5);
        assert_eq!(head2.unwrap().0, 5);
        // refusals: replay, removal, change, other hub, other key
        assert!(verify_lines(head.clone(), "hub-a", &lines[..2], &vk)
            .unwrap_err()
            .contains("breaks the chain"));
        assert!(verify_lines(head.clone(), "hub-a", &lines[3..], &vk).is_err());
        let changed = lines[2].replace("user-1", "user-X");
        assert!(verify_lines(head.clone(), "hub-a", &[changed], &vk)
            .unwrap_err()
            .contains("signature does not verify"));
        assert!(verify_lines(None, "hub-b", &lines, &vk)
            .unwrap_err()
            .contains("not \"hub-b\""));
        let other = ed25519_dalek::SigningKey::from_bytes(&[4; 32]).verifying_key();
        assert!(verify_lines(None, "hub-a", &lines, &other).is_err());
        // an empty batch keeps the head
        assert_eq!(
            verify_lines(head.clone(), "hub-a", &[], &vk).unwrap().1,
            head
        );
    }
}
