//! INTERIM shared types, to be deleted when the `governance` crate (policy, approval, audit
//! modules shared with the hub, issue 12: "one definition in a shared crate serves both") lands
//! on `main`. Everything the control plane needs from those three modules is here and only here:
//! the policy check on `policy apply`, the approval request a hub submits, and the audit record
//! chain check on ingest. When `governance` is merged: depend on it by path, replace each item
//! below by the crate's, delete this file.

use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

// === policy ===

/// The policy document in the playbook shape (per-tool settings plus global limits), checked on
/// `policy apply` and published in snapshots as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Tool calls allowed per session per window (loop lock).
    #[serde(default)]
    pub max_loop_steps: Option<u64>,
    /// Per tool (glob over `<upstream>__<tool>` exposed names) settings.
    #[serde(default)]
    pub tools: Vec<ToolPolicy>,
    /// Approval groups: who may decide calls held for the group.
    #[serde(default)]
    pub approval_groups: Vec<ApprovalGroup>,
}

/// Settings for tools matching `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPolicy {
    /// Glob over exposed tool names (`files__*`, `*`).
    pub name: String,
    /// Free classification (`read`, `write`, `destructive`, …).
    #[serde(default)]
    pub classification: Option<String>,
    /// Calls wait for a human decision.
    #[serde(default)]
    pub requires_approval: bool,
    /// Who decides (an approval group's name).
    #[serde(default)]
    pub approval_group: Option<String>,
    /// Hard cap on one call.
    #[serde(default)]
    pub max_execution_timeout_ms: Option<u64>,
    /// Result cache TTL.
    #[serde(default)]
    pub cache_ttl_seconds: Option<u64>,
    /// Roles allowed (empty = everyone).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes required.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// An approval group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalGroup {
    /// Group name (referenced by `approval_group`).
    pub name: String,
    /// Principals (API key names or token subjects) who may decide.
    #[serde(default)]
    pub members: Vec<String>,
    /// How long a held call waits before it is denied.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl Policy {
    /// Parses YAML or JSON text and checks references; the error names the field.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let p: Policy = serde_yaml::from_str(text).map_err(|e| format!("policy: {e}"))?;
        for (i, t) in p.tools.iter().enumerate() {
            if t.name.is_empty() {
                return Err(format!("policy: tools[{i}].name: must not be empty"));
            }
            if let Some(g) = &t.approval_group {
                if !p.approval_groups.iter().any(|a| &a.name == g) {
                    return Err(format!(
                        "policy: tools[{i}].approval_group: unknown group {g:?}"
                    ));
                }
            }
            if t.approval_group.is_some() && !t.requires_approval {
                return Err(format!(
                    "policy: tools[{i}].approval_group: set but requires_approval is false"
                ));
            }
        }
        let mut names: Vec<&str> = p.approval_groups.iter().map(|g| g.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("policy: approval_groups: duplicate name".into());
        }
        Ok(p)
    }

    /// The group of this name.
    pub fn group(&self, name: &str) -> Option<&ApprovalGroup> {
        self.approval_groups.iter().find(|g| g.name == name)
    }
}

// === approval ===

/// A call held by a hub, submitted for a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    /// Hub holding the call.
    pub hub: String,
    /// Upstream (server) name.
    pub upstream: String,
    /// Tool (the server's own name).
    pub tool: String,
    /// Call arguments.
    #[serde(default)]
    pub arguments: serde_json::Value,
    /// Who called.
    pub principal: String,
    /// Why it is held (policy rule).
    #[serde(default)]
    pub reason: String,
    /// Group that decides (from the policy).
    #[serde(default)]
    pub approval_group: Option<String>,
    /// How long to wait before denying (default from the group, else 5 minutes).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// An operator's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalDecision {
    /// Approve (`true`) or reject.
    pub approve: bool,
    /// Comment shown to the caller and audited.
    #[serde(default)]
    pub comment: String,
}

// === audit ===

/// One audit record as a hub writes it (one JSONL line). The hash chain: `prev` is the SHA-256
/// (hex) of the previous line's exact bytes (64 zeros for the first record of a hub); `sig` is
/// the base64 Ed25519 signature by the hub's audit key over the SHA-256 of the line with `sig`
/// set to the empty string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the hub's chain, from 1.
    pub seq: u64,
    /// When (Unix milliseconds).
    pub ts_ms: i64,
    /// SHA-256 hex of the previous line.
    pub prev: String,
    /// What happened (`call`, `denied`, `approval`, …).
    pub kind: String,
    /// Who.
    #[serde(default)]
    pub principal: String,
    /// Upstream.
    #[serde(default)]
    pub upstream: String,
    /// Tool.
    #[serde(default)]
    pub tool: String,
    /// Outcome (`ok`, `error`, `denied`, …).
    #[serde(default)]
    pub outcome: String,
    /// Everything else the hub records.
    #[serde(default)]
    pub detail: serde_json::Value,
    /// Signature (see the type doc).
    pub sig: String,
}

/// Hash of the chain before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 hex of a line.
pub fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

fn signed_digest(rec: &AuditRecord) -> Result<[u8; 32], String> {
    let mut unsigned = rec.clone();
    unsigned.sig = String::new();
    let text = serde_json::to_string(&unsigned).map_err(|e| e.to_string())?;
    Ok(Sha256::digest(text.as_bytes()).into())
}

/// Signs a record in place (used by tests and by anything that plays a hub).
pub fn sign_record(
    rec: &mut AuditRecord,
    key: &ed25519_dalek::SigningKey,
) -> Result<String, String> {
    use ed25519_dalek::Signer as _;
    rec.sig = String::new();
    let d = signed_digest(rec)?;
    rec.sig = base64::engine::general_purpose::STANDARD.encode(key.sign(&d).to_bytes());
    serde_json::to_string(rec).map_err(|e| e.to_string())
}

/// A chain head: the last record's seq and the hash of its line.
pub type ChainHead = (u64, String);

/// Checks `lines` continue a chain whose last record had `head` (`(seq, line hash)`, `None` for a
/// new chain), each signed by `key`. Returns the parsed records and the new head, or names the
/// first bad line.
pub fn verify_chain(
    head: Option<ChainHead>,
    lines: &[String],
    key: &VerifyingKey,
) -> Result<(Vec<AuditRecord>, Option<ChainHead>), String> {
    let (mut seq, mut prev) = head.unwrap_or((0, GENESIS.to_owned()));
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let rec: AuditRecord =
            serde_json::from_str(line).map_err(|e| format!("record {i}: not a record: {e}"))?;
        if rec.seq != seq + 1 {
            return Err(format!(
                "record {i}: seq {} breaks the chain (expected {})",
                rec.seq,
                seq + 1
            ));
        }
        if rec.prev != prev {
            return Err(format!(
                "record {i} (seq {}): prev hash does not match the previous record",
                rec.seq
            ));
        }
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&rec.sig)
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or_else(|| format!("record {i} (seq {}): malformed signature", rec.seq))?;
        let d = signed_digest(&rec)?;
        key.verify(&d, &sig)
            .map_err(|_| format!("record {i} (seq {}): signature invalid", rec.seq))?;
        seq = rec.seq;
        prev = line_hash(line);
        out.push(rec);
    }
    Ok((out, if seq == 0 { None } else { Some((seq, prev)) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64, key: &ed25519_dalek::SigningKey) -> Vec<String> {
        let mut prev = GENESIS.to_owned();
        let mut out = Vec::new();
        for seq in 1..=n {
            let mut r = AuditRecord {
                seq,
                ts_ms: seq as i64,
                prev: prev.clone(),
                kind: "call".into(),
                principal: "alice".into(),
                upstream: "files".into(),
                tool: "read".into(),
                outcome: "ok".into(),
                detail: serde_json::json!({"latency_ms": 3}),
                sig: String::new(),
            };
            let line = sign_record(&mut r, key).unwrap();
            prev = line_hash(&line);
            out.push(line);
        }
        out
    }

    #[test]
    fn chain_checks() {
        let k = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let vk = k.verifying_key();
        let lines = chain(4, &k);
        let (recs, head) = verify_chain(None, &lines, &vk).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(head.as_ref().unwrap().0, 4);
        // continuing from a head
        let (_, h2) = verify_chain(None, &lines[..2], &vk).unwrap();
        verify_chain(h2.clone(), &lines[2..], &vk).unwrap();
        // deletion, insertion, change, wrong key
        let mut del = lines.clone();
        del.remove(1);
        assert!(verify_chain(None, &del, &vk).unwrap_err().contains("seq"));
        let mut ins = lines.clone();
        ins.insert(2, lines[1].clone());
        assert!(verify_chain(None, &ins, &vk).is_err());
        let mut chg = lines.clone();
        chg[2] = chg[2].replace("alice", "mallory");
        assert!(verify_chain(None, &chg, &vk)
            .unwrap_err()
            .contains("record 2"));
        let other = ed25519_dalek::SigningKey::from_bytes(&[6; 32]).verifying_key();
        assert!(verify_chain(None, &lines, &other).is_err());
        // continuing with a wrong head
        assert!(verify_chain(h2, &lines, &vk).is_err());
    }

    #[test]
    fn policy_checks() {
        let ok = "max_loop_steps: 10\ntools:\n  - name: files__delete\n    requires_approval: true\n    approval_group: sre\napproval_groups:\n  - name: sre\n    members: [ops]\n";
        let p = Policy::parse(ok).unwrap();
        assert_eq!(p.group("sre").unwrap().members, vec!["ops"]);
        assert!(Policy::parse(
            "tools:\n  - name: x\n    approval_group: nope\n    requires_approval: true\n"
        )
        .unwrap_err()
        .contains("tools[0].approval_group"));
        assert!(Policy::parse("bogus: 1").unwrap_err().contains("bogus"));
    }
}
