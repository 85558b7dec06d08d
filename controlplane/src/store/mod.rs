//! Storage: one [`Store`] trait over everything the control plane keeps (catalog, policy, kill
//! switch, snapshots, API keys, edges and their certificates, approvals, audit records, hub
//! reports). One implementation, [`sql::SqlStore`], runs the same schema ([`migrate`]) on SQLite
//! (embedded default: one file, WAL) and PostgreSQL (HA: several control planes on one database).
//! The storage test suite (`tests/storage.rs`) runs unchanged against both.
//!
//! Off the request path: only the admin API, the snapshot publisher and the hubs' uplink
//! (reports, audit, approvals) touch the store.

pub mod migrate;
pub mod sql;

use serde::{Deserialize, Serialize};

pub use sql::SqlStore;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no (connection, SQL, constraint).
    #[error("database: {0}")]
    Db(String),
    /// A unique key already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Stored data that does not decode.
    #[error("stored data invalid: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e {
            if d.is_unique_violation() {
                return StoreError::Conflict(d.message().to_owned());
            }
        }
        StoreError::Db(e.to_string())
    }
}

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// A catalogued server (without its tools).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerRow {
    /// Upstream name.
    pub name: String,
    /// `http` or `edge`.
    pub kind: String,
    /// Zone name.
    pub zone: String,
    /// Owner.
    pub owner: String,
    /// Replica URLs or edge names.
    pub endpoints: Vec<String>,
    /// Allow-listed for federation.
    pub federate: bool,
    /// Declared or reported `serverInfo.version`.
    pub version: Option<String>,
    /// Last change (Unix ms).
    pub updated_ms: i64,
}

/// A tool of a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRow {
    /// Server name.
    pub server: String,
    /// Tool name at the server.
    pub name: String,
    /// Semver version.
    pub version: String,
    /// `active`, `deprecated` or `retired`.
    pub lifecycle: String,
    /// Sunset date for `deprecated`.
    pub sunset: Option<String>,
    /// Replacement for `deprecated`/`retired`.
    pub replacement: Option<String>,
    /// Approved by an operator for exposure.
    pub approved: bool,
    /// `declared` (by an admin) or `reported` (by a hub).
    pub source: String,
    /// Who approved.
    pub approved_by: Option<String>,
    /// Last change (Unix ms).
    pub updated_ms: i64,
}

/// A zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneRow {
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
}

/// The applied policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRow {
    /// Policy revision (1, 2, …).
    pub revision: i64,
    /// The text as applied (YAML or JSON).
    pub text: String,
    /// The parsed document (JSON), as published.
    pub json: serde_json::Value,
    /// Who applied it.
    pub by: String,
    /// When (Unix ms).
    pub applied_ms: i64,
}

/// An active kill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillRow {
    /// `global`, `upstream` or `tool`.
    pub scope: String,
    /// Upstream name, `<upstream>/<tool>`, or empty for global.
    pub target: String,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
    /// When (Unix ms).
    pub since_ms: i64,
}

/// A published snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    /// Version.
    pub version: i64,
    /// SHA-256 of the snapshot bytes.
    pub sha256: String,
    /// The signed envelope.
    pub envelope: Vec<u8>,
    /// When (Unix ms).
    pub created_ms: i64,
}

/// An API key (only its hash is stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRow {
    /// Id (public, for listing and deleting).
    pub id: String,
    /// Name (the principal name the key acts as).
    pub name: String,
    /// `viewer`, `operator`, `admin` or `hub`.
    pub role: String,
    /// Approval groups the key's holder belongs to.
    pub groups: Vec<String>,
    /// SHA-256 hex of the key.
    #[serde(skip_serializing)]
    pub hash: String,
    /// When (Unix ms).
    pub created_ms: i64,
}

/// An edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeRow {
    /// Edge name (certificate CN).
    pub name: String,
    /// `pending` (token issued), `enrolled` or `revoked`.
    pub state: String,
    /// When created (Unix ms).
    pub created_ms: i64,
    /// When revoked (Unix ms).
    pub revoked_ms: Option<i64>,
}

/// A certificate issued to an edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeCertRow {
    /// Serial (hex).
    pub serial: String,
    /// Edge name.
    pub edge: String,
    /// SHA-256 hex of the subject public key.
    pub key_sha256: String,
    /// Validity end (Unix ms).
    pub not_after_ms: i64,
    /// Issued (Unix ms).
    pub issued_ms: i64,
    /// Revoked (Unix ms).
    pub revoked_ms: Option<i64>,
}

/// A held call and its decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRow {
    /// Id.
    pub id: String,
    /// Hub holding the call.
    pub hub: String,
    /// Upstream.
    pub upstream: String,
    /// Tool.
    pub tool: String,
    /// Arguments.
    pub arguments: serde_json::Value,
    /// Caller.
    pub principal: String,
    /// Why held.
    pub reason: String,
    /// Deciding group.
    pub approval_group: Option<String>,
    /// `pending`, `approved`, `rejected` or `expired`.
    pub state: String,
    /// Submitted (Unix ms).
    pub created_ms: i64,
    /// Denied at this time if still pending (Unix ms).
    pub expires_ms: i64,
    /// Decided (Unix ms).
    pub decided_ms: Option<i64>,
    /// By whom.
    pub decided_by: Option<String>,
    /// Comment.
    pub comment: Option<String>,
}

/// One stored audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// Hub.
    pub hub: String,
    /// Position in the hub's chain.
    pub seq: i64,
    /// Record time (Unix ms).
    pub ts_ms: i64,
    /// Kind.
    pub kind: String,
    /// Principal.
    pub principal: String,
    /// Upstream.
    pub upstream: String,
    /// Tool.
    pub tool: String,
    /// Outcome.
    pub outcome: String,
    /// The line exactly as shipped.
    pub line: String,
    /// SHA-256 of `line`.
    pub hash: String,
}

/// Filter for audit queries.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditFilter {
    /// Only this hub.
    pub hub: Option<String>,
    /// Only this principal.
    pub principal: Option<String>,
    /// Only this tool.
    pub tool: Option<String>,
    /// Only records after this seq (with `hub`).
    pub after_seq: Option<i64>,
    /// At most this many (default 100, max 1000), newest first.
    pub limit: Option<i64>,
}

/// A hub as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubRow {
    /// Hub id.
    pub id: String,
    /// Its last report (JSON).
    pub report: serde_json::Value,
    /// When reported (Unix ms).
    pub reported_ms: i64,
    /// Pinned audit key (base64url), if it shipped audit.
    pub audit_key: Option<String>,
    /// Audit chain head: seq.
    pub audit_seq: i64,
    /// Audit chain head: hash of the last line.
    pub audit_hash: Option<String>,
}

/// One KPI sample (counter totals from a hub report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiSample {
    /// Hub.
    pub hub: String,
    /// When (Unix ms).
    pub ts_ms: i64,
    /// KPI name.
    pub name: String,
    /// Value.
    pub value: f64,
}

/// Everything the control plane stores, behind one trait so the API and tests do not care which
/// database is underneath. All methods are atomic on their own.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend (`sqlite` or `postgres`).
    fn backend(&self) -> &'static str;

    // --- catalog ---
    /// Creates or replaces a server (its tools are kept).
    async fn put_server(&self, s: &ServerRow) -> StoreResult<()>;
    /// Deletes a server and its tools; `false` if it did not exist.
    async fn delete_server(&self, name: &str) -> StoreResult<bool>;
    /// One server.
    async fn server(&self, name: &str) -> StoreResult<Option<ServerRow>>;
    /// All servers by name.
    async fn servers(&self) -> StoreResult<Vec<ServerRow>>;
    /// Creates or replaces a tool.
    async fn put_tool(&self, t: &ToolRow) -> StoreResult<()>;
    /// One tool.
    async fn tool(&self, server: &str, name: &str) -> StoreResult<Option<ToolRow>>;
    /// Tools of one server, or of all servers, by (server, name).
    async fn tools(&self, server: Option<&str>) -> StoreResult<Vec<ToolRow>>;
    /// Records tools a hub discovered; existing tools keep their approval and lifecycle (the
    /// version of a reported tool follows the report; a declared tool keeps its declared
    /// version). Returns how many were new.
    async fn record_discovered(
        &self,
        server: &str,
        version: &str,
        tools: &[String],
        now_ms: i64,
    ) -> StoreResult<usize>;
    /// Creates or replaces a zone.
    async fn put_zone(&self, z: &ZoneRow) -> StoreResult<()>;
    /// Deletes a zone.
    async fn delete_zone(&self, name: &str) -> StoreResult<bool>;
    /// All zones.
    async fn zones(&self) -> StoreResult<Vec<ZoneRow>>;

    // --- policy ---
    /// Stores a new policy revision; returns its number.
    async fn put_policy(
        &self,
        text: &str,
        json: &serde_json::Value,
        by: &str,
        now_ms: i64,
    ) -> StoreResult<i64>;
    /// The newest policy.
    async fn policy(&self) -> StoreResult<Option<PolicyRow>>;

    // --- kill switch ---
    /// Adds (or replaces the reason of) a kill.
    async fn put_kill(&self, k: &KillRow) -> StoreResult<()>;
    /// Lifts a kill; `false` if it was not active.
    async fn lift_kill(&self, scope: &str, target: &str) -> StoreResult<bool>;
    /// Active kills, newest first.
    async fn kills(&self) -> StoreResult<Vec<KillRow>>;

    // --- snapshots ---
    /// Stores a snapshot; [`StoreError::Conflict`] if the version exists (another control plane
    /// published it first).
    async fn insert_snapshot(&self, s: &SnapshotRow) -> StoreResult<()>;
    /// The newest snapshot.
    async fn latest_snapshot(&self) -> StoreResult<Option<SnapshotRow>>;
    /// One snapshot.
    async fn snapshot(&self, version: i64) -> StoreResult<Option<SnapshotRow>>;

    // --- API keys ---
    /// Adds a key.
    async fn put_api_key(&self, k: &ApiKeyRow) -> StoreResult<()>;
    /// Finds a key by its hash.
    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyRow>>;
    /// All keys.
    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRow>>;
    /// Deletes a key by id.
    async fn delete_api_key(&self, id: &str) -> StoreResult<bool>;

    // --- edges ---
    /// Creates an edge (state `pending`) or resets a revoked one to `pending`.
    async fn put_edge(&self, name: &str, now_ms: i64) -> StoreResult<()>;
    /// One edge.
    async fn edge(&self, name: &str) -> StoreResult<Option<EdgeRow>>;
    /// All edges.
    async fn edges(&self) -> StoreResult<Vec<EdgeRow>>;
    /// Stores a one-time enrollment token (its hash) for an edge.
    async fn put_enroll_token(&self, hash: &str, edge: &str, expires_ms: i64) -> StoreResult<()>;
    /// Consumes a token: returns the edge name if the token existed, was unused and not expired,
    /// and marks it used (atomically: a token works once).
    async fn take_enroll_token(&self, hash: &str, now_ms: i64) -> StoreResult<Option<String>>;
    /// Records an issued certificate and marks the edge `enrolled`.
    async fn put_edge_cert(&self, c: &EdgeCertRow) -> StoreResult<()>;
    /// Certificates of an edge (or all), newest first.
    async fn edge_certs(&self, edge: Option<&str>) -> StoreResult<Vec<EdgeCertRow>>;
    /// The newest unrevoked certificate with this public key.
    async fn edge_cert_by_key(&self, key_sha256: &str) -> StoreResult<Option<EdgeCertRow>>;
    /// Revokes an edge and all its certificates; `false` if unknown.
    async fn revoke_edge(&self, name: &str, now_ms: i64) -> StoreResult<bool>;

    // --- approvals ---
    /// Adds a held call.
    async fn insert_approval(&self, a: &ApprovalRow) -> StoreResult<()>;
    /// One approval.
    async fn approval(&self, id: &str) -> StoreResult<Option<ApprovalRow>>;
    /// Approvals in a state (or all), newest first, at most `limit`.
    async fn approvals(&self, state: Option<&str>, limit: i64) -> StoreResult<Vec<ApprovalRow>>;
    /// Decides a pending approval; `false` if it was not pending (already decided or expired).
    async fn decide_approval(
        &self,
        id: &str,
        state: &str,
        by: &str,
        comment: &str,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Marks pending approvals past their deadline `expired`; returns their ids.
    async fn expire_approvals(&self, now_ms: i64) -> StoreResult<Vec<String>>;

    // --- audit ---
    /// Appends verified records of one hub and moves its chain head, atomically, only if the
    /// stored head is still `(expect_seq, expect_hash)` (else [`StoreError::Conflict`]).
    async fn append_audit(
        &self,
        hub: &str,
        expect_seq: i64,
        rows: &[AuditRow],
        audit_key: &str,
    ) -> StoreResult<()>;
    /// Audit records, newest first.
    async fn audit(&self, f: &AuditFilter) -> StoreResult<Vec<AuditRow>>;
    /// A hub's whole chain in order (for `audit verify`), from `from_seq` on, at most `limit`.
    async fn audit_chain(&self, hub: &str, from_seq: i64, limit: i64)
        -> StoreResult<Vec<AuditRow>>;

    // --- keyring ---
    /// Stores `value` under `name` unless a value exists; returns the stored value (ours, or the
    /// one another replica stored first).
    async fn keyring_put_if_absent(
        &self,
        name: &str,
        value: &str,
        now_ms: i64,
    ) -> StoreResult<String>;

    // --- hubs and KPIs ---
    /// Stores a hub's report (creating the hub).
    async fn put_hub_report(
        &self,
        hub: &str,
        report: &serde_json::Value,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// One hub.
    async fn hub(&self, id: &str) -> StoreResult<Option<HubRow>>;
    /// All hubs.
    async fn hubs(&self) -> StoreResult<Vec<HubRow>>;
    /// Appends KPI samples.
    async fn put_kpis(&self, samples: &[KpiSample]) -> StoreResult<()>;
    /// KPI samples since `since_ms`, oldest first.
    async fn kpis(&self, since_ms: i64) -> StoreResult<Vec<KpiSample>>;
}
