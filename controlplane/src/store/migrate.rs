//! The schema, as ordered migrations shared by SQLite and PostgreSQL. Only portable SQL: `TEXT`
//! and `BIGINT` columns (booleans as 0/1, lists and documents as JSON text), no autoincrement,
//! `ON CONFLICT` upserts. Applied migrations are recorded in `schema_migrations`; a database
//! newer than this binary is refused rather than touched.

/// `(version, name, statements)`, in order. Never edit a released entry: add a new one.
pub const MIGRATIONS: &[(i64, &str, &[&str])] = &[
    (
        1,
        "catalog, policy, kill switch, snapshots, keys",
        &[
            "CREATE TABLE zones (name TEXT PRIMARY KEY, description TEXT NOT NULL)",
            "CREATE TABLE servers (name TEXT PRIMARY KEY, kind TEXT NOT NULL, zone TEXT NOT NULL, \
             owner TEXT NOT NULL, endpoints TEXT NOT NULL, federate BIGINT NOT NULL, \
             version TEXT, updated_ms BIGINT NOT NULL)",
            "CREATE TABLE tools (server TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, \
             lifecycle TEXT NOT NULL, sunset TEXT, replacement TEXT, approved BIGINT NOT NULL, \
             source TEXT NOT NULL, approved_by TEXT, updated_ms BIGINT NOT NULL, \
             PRIMARY KEY (server, name))",
            "CREATE TABLE policies (revision BIGINT PRIMARY KEY, body TEXT NOT NULL, \
             json TEXT NOT NULL, applied_by TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
            "CREATE TABLE kills (scope TEXT NOT NULL, target TEXT NOT NULL, reason TEXT NOT NULL, \
             by_whom TEXT NOT NULL, since_ms BIGINT NOT NULL, PRIMARY KEY (scope, target))",
            "CREATE TABLE snapshots (version BIGINT PRIMARY KEY, sha256 TEXT NOT NULL, \
             envelope TEXT NOT NULL, created_ms BIGINT NOT NULL)",
            "CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, \
             groups_json TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created_ms BIGINT NOT NULL)",
        ],
    ),
    (
        2,
        "edges and their certificates",
        &[
            "CREATE TABLE edges (name TEXT PRIMARY KEY, state TEXT NOT NULL, \
             created_ms BIGINT NOT NULL, revoked_ms BIGINT)",
            "CREATE TABLE enroll_tokens (hash TEXT PRIMARY KEY, edge TEXT NOT NULL, \
             expires_ms BIGINT NOT NULL, used_ms BIGINT)",
            "CREATE TABLE edge_certs (serial TEXT PRIMARY KEY, edge TEXT NOT NULL, \
             key_sha256 TEXT NOT NULL, not_after_ms BIGINT NOT NULL, issued_ms BIGINT NOT NULL, \
             revoked_ms BIGINT)",
            "CREATE INDEX edge_certs_key ON edge_certs (key_sha256)",
        ],
    ),
    (
        3,
        "approvals, audit, hubs, KPIs",
        &[
            "CREATE TABLE approvals (id TEXT PRIMARY KEY, hub TEXT NOT NULL, upstream TEXT NOT NULL, \
             tool TEXT NOT NULL, arguments TEXT NOT NULL, principal TEXT NOT NULL, \
             reason TEXT NOT NULL, approval_group TEXT, state TEXT NOT NULL, \
             created_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL, decided_ms BIGINT, \
             decided_by TEXT, comment TEXT)",
            "CREATE INDEX approvals_state ON approvals (state, created_ms)",
            "CREATE TABLE hubs (id TEXT PRIMARY KEY, report TEXT NOT NULL, reported_ms BIGINT NOT NULL, \
             audit_key TEXT, audit_seq BIGINT NOT NULL, audit_hash TEXT)",
            "CREATE TABLE audit (hub TEXT NOT NULL, seq BIGINT NOT NULL, ts_ms BIGINT NOT NULL, \
             kind TEXT NOT NULL, principal TEXT NOT NULL, upstream TEXT NOT NULL, tool TEXT NOT NULL, \
             outcome TEXT NOT NULL, line TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (hub, seq))",
            "CREATE INDEX audit_ts ON audit (ts_ms)",
            "CREATE INDEX audit_principal ON audit (principal, ts_ms)",
            "CREATE INDEX audit_tool ON audit (tool, ts_ms)",
            "CREATE TABLE kpi_samples (hub TEXT NOT NULL, ts_ms BIGINT NOT NULL, name TEXT NOT NULL, \
             value DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX kpi_ts ON kpi_samples (ts_ms)",
        ],
    ),
    (
        4,
        "keyring shared by control-plane replicas",
        &["CREATE TABLE keyring (name TEXT PRIMARY KEY, value TEXT NOT NULL, created_ms BIGINT NOT NULL)"],
    ),
];

/// The newest schema version this binary knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}
