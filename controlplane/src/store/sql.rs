//! [`SqlStore`]: the [`Store`] over `sqlx`'s `Any` driver, so one set of queries serves SQLite and
//! PostgreSQL. Queries are written with `?` placeholders and rewritten to `$n` for PostgreSQL;
//! they are checked at run time (no compile-time database), and the storage suite runs them on
//! both backends.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row as _};

use super::migrate::{latest, MIGRATIONS};
use super::*;

/// Which database is underneath.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (embedded, one file, WAL).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The SQL store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

impl SqlStore {
    /// Connects and migrates. `url`: `sqlite:PATH` / `sqlite://PATH` (file created if missing)
    /// or `postgres://user@host:port/db`.
    ///
    /// # Errors
    /// Connection or migration failure, or a schema newer than this binary.
    pub async fn connect(url: &str) -> StoreResult<SqlStore> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Db(format!(
                "unsupported database URL {url:?} (sqlite:PATH or postgres://…)"
            )));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let opts: AnyConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Db(format!("database URL: {e}")))?;
        let mut pool_opts = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(std::time::Duration::from_secs(10));
        if backend == Backend::Sqlite {
            pool_opts = pool_opts.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // One file, WAL: readers never block the writer; wait instead of failing
                    // when another connection holds the write lock.
                    for pragma in [
                        "PRAGMA journal_mode=WAL",
                        "PRAGMA synchronous=NORMAL",
                        "PRAGMA busy_timeout=5000",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = pool_opts.connect_with(opts).await?;
        let store = SqlStore { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    /// The backend kind.
    pub fn kind(&self) -> Backend {
        self.backend
    }

    /// The journal mode SQLite reports (`wal`), for tests and `serve` logs.
    pub async fn journal_mode(&self) -> StoreResult<Option<String>> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let row = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(row.try_get::<String, _>(0)?))
    }

    /// Applied schema version.
    pub async fn schema_version(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("v")?)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            // Several control planes starting at once: one migrates, the others wait (even the
            // CREATE ... IF NOT EXISTS below races in PostgreSQL's catalog otherwise).
            sqlx::query("SELECT 1 AS ok FROM (SELECT pg_advisory_lock(720412)) AS l")
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, \
                 name TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
            )
            .execute(&mut *conn)
            .await?;
            let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
                .fetch_one(&mut *conn)
                .await?;
            let have: i64 = row.try_get("v")?;
            if have > latest() {
                return Err(StoreError::Db(format!(
                    "database schema version {have} is newer than this binary's ({}); \
                     refusing to touch it",
                    latest()
                )));
            }
            for (version, name, stmts) in MIGRATIONS.iter().filter(|m| m.0 > have) {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                for s in stmts.iter() {
                    sqlx::query(s).execute(&mut *tx).await?;
                }
                let ins = self.q(
                    "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)",
                );
                sqlx::query(&ins)
                    .bind(*version)
                    .bind(*name)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                tracing::info!(version, name, backend = self.backend(), "schema migrated");
            }
            Ok(())
        }
        .await;
        if self.backend == Backend::Postgres {
            let _ = sqlx::query("SELECT 1 AS ok FROM (SELECT pg_advisory_unlock(720412)) AS l")
                .execute(&mut *conn)
                .await;
        }
        result
    }

    /// `?` → `$1, $2, …` for PostgreSQL (our queries have no `?` inside literals).
    fn q(&self, sql: &str) -> String {
        if self.backend == Backend::Sqlite {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len() + 8);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Now, Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn server_row(r: &sqlx::any::AnyRow) -> StoreResult<ServerRow> {
    let endpoints: String = r.try_get("endpoints")?;
    Ok(ServerRow {
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        zone: r.try_get("zone")?,
        owner: r.try_get("owner")?,
        endpoints: serde_json::from_str(&endpoints).map_err(|e| corrupt("servers.endpoints", e))?,
        federate: r.try_get::<i64, _>("federate")? != 0,
        version: r.try_get("version")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

fn tool_row(r: &sqlx::any::AnyRow) -> StoreResult<ToolRow> {
    Ok(ToolRow {
        server: r.try_get("server")?,
        name: r.try_get("name")?,
        version: r.try_get("version")?,
        lifecycle: r.try_get("lifecycle")?,
        sunset: r.try_get("sunset")?,
        replacement: r.try_get("replacement")?,
        approved: r.try_get::<i64, _>("approved")? != 0,
        source: r.try_get("source")?,
        approved_by: r.try_get("approved_by")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

fn key_row(r: &sqlx::any::AnyRow) -> StoreResult<ApiKeyRow> {
    let groups: String = r.try_get("groups_json")?;
    Ok(ApiKeyRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        groups: serde_json::from_str(&groups).map_err(|e| corrupt("api_keys.groups", e))?,
        hash: r.try_get("hash")?,
        created_ms: r.try_get("created_ms")?,
    })
}

fn cert_row(r: &sqlx::any::AnyRow) -> StoreResult<EdgeCertRow> {
    Ok(EdgeCertRow {
        serial: r.try_get("serial")?,
        edge: r.try_get("edge")?,
        key_sha256: r.try_get("key_sha256")?,
        not_after_ms: r.try_get("not_after_ms")?,
        issued_ms: r.try_get("issued_ms")?,
        revoked_ms: r.try_get("revoked_ms")?,
    })
}

fn approval_row(r: &sqlx::any::AnyRow) -> StoreResult<ApprovalRow> {
    let args: String = r.try_get("arguments")?;
    Ok(ApprovalRow {
        id: r.try_get("id")?,
        hub: r.try_get("hub")?,
        upstream: r.try_get("upstream")?,
        tool: r.try_get("tool")?,
        arguments: serde_json::from_str(&args).map_err(|e| corrupt("approvals.arguments", e))?,
        principal: r.try_get("principal")?,
        reason: r.try_get("reason")?,
        approval_group: r.try_get("approval_group")?,
        state: r.try_get("state")?,
        created_ms: r.try_get("created_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        decided_ms: r.try_get("decided_ms")?,
        decided_by: r.try_get("decided_by")?,
        comment: r.try_get("comment")?,
    })
}

fn audit_row(r: &sqlx::any::AnyRow) -> StoreResult<AuditRow> {
    Ok(AuditRow {
        hub: r.try_get("hub")?,
        seq: r.try_get("seq")?,
        ts_ms: r.try_get("ts_ms")?,
        kind: r.try_get("kind")?,
        principal: r.try_get("principal")?,
        upstream: r.try_get("upstream")?,
        tool: r.try_get("tool")?,
        outcome: r.try_get("outcome")?,
        line: r.try_get("line")?,
        hash: r.try_get("hash")?,
    })
}

fn hub_row(r: &sqlx::any::AnyRow) -> StoreResult<HubRow> {
    let report: String = r.try_get("report")?;
    Ok(HubRow {
        id: r.try_get("id")?,
        report: serde_json::from_str(&report).map_err(|e| corrupt("hubs.report", e))?,
        reported_ms: r.try_get("reported_ms")?,
        audit_key: r.try_get("audit_key")?,
        audit_seq: r.try_get("audit_seq")?,
        audit_hash: r.try_get("audit_hash")?,
    })
}

const APPROVAL_COLS: &str =
    "id, hub, upstream, tool, arguments, principal, reason, approval_group, \
     state, created_ms, expires_ms, decided_ms, decided_by, comment";
const AUDIT_COLS: &str = "hub, seq, ts_ms, kind, principal, upstream, tool, outcome, line, hash";

#[async_trait::async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    // === catalog ===

    async fn put_server(&self, s: &ServerRow) -> StoreResult<()> {
        let sql = self.q(
            "INSERT INTO servers (name, kind, zone, owner, endpoints, federate, version, updated_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, \
             zone = excluded.zone, owner = excluded.owner, endpoints = excluded.endpoints, \
             federate = excluded.federate, version = excluded.version, updated_ms = excluded.updated_ms",
        );
        sqlx::query(&sql)
            .bind(&s.name)
            .bind(&s.kind)
            .bind(&s.zone)
            .bind(&s.owner)
            .bind(json_text(&s.endpoints))
            .bind(i64::from(s.federate))
            .bind(s.version.clone())
            .bind(s.updated_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_server(&self, name: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&self.q("DELETE FROM tools WHERE server = ?"))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query(&self.q("DELETE FROM servers WHERE name = ?"))
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn server(&self, name: &str) -> StoreResult<Option<ServerRow>> {
        sqlx::query(&self.q("SELECT * FROM servers WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(server_row)
            .transpose()
    }

    async fn servers(&self) -> StoreResult<Vec<ServerRow>> {
        sqlx::query("SELECT * FROM servers ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(server_row)
            .collect()
    }

    async fn put_tool(&self, t: &ToolRow) -> StoreResult<()> {
        let sql = self.q(
            "INSERT INTO tools (server, name, version, lifecycle, sunset, replacement, approved, \
             source, approved_by, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (server, name) DO UPDATE SET version = excluded.version, \
             lifecycle = excluded.lifecycle, sunset = excluded.sunset, \
             replacement = excluded.replacement, approved = excluded.approved, \
             source = excluded.source, approved_by = excluded.approved_by, \
             updated_ms = excluded.updated_ms",
        );
        sqlx::query(&sql)
            .bind(&t.server)
            .bind(&t.name)
            .bind(&t.version)
            .bind(&t.lifecycle)
            .bind(t.sunset.clone())
            .bind(t.replacement.clone())
            .bind(i64::from(t.approved))
            .bind(&t.source)
            .bind(t.approved_by.clone())
            .bind(t.updated_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn tool(&self, server: &str, name: &str) -> StoreResult<Option<ToolRow>> {
        sqlx::query(&self.q("SELECT * FROM tools WHERE server = ? AND name = ?"))
            .bind(server)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(tool_row)
            .transpose()
    }

    async fn tools(&self, server: Option<&str>) -> StoreResult<Vec<ToolRow>> {
        let rows = match server {
            Some(s) => {
                sqlx::query(&self.q("SELECT * FROM tools WHERE server = ? ORDER BY name"))
                    .bind(s)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM tools ORDER BY server, name")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(tool_row).collect()
    }

    async fn record_discovered(
        &self,
        server: &str,
        version: &str,
        tools: &[String],
        now_ms: i64,
    ) -> StoreResult<usize> {
        let mut tx = self.pool.begin().await?;
        let mut new = 0;
        for name in tools {
            let ins = self.q(
                "INSERT INTO tools (server, name, version, lifecycle, sunset, replacement, approved, \
                 source, approved_by, updated_ms) VALUES (?, ?, ?, 'active', NULL, NULL, 0, \
                 'reported', NULL, ?) ON CONFLICT (server, name) DO NOTHING",
            );
            let n = sqlx::query(&ins)
                .bind(server)
                .bind(name)
                .bind(version)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                let upd = self.q(
                    "UPDATE tools SET version = ?, updated_ms = ? WHERE server = ? AND name = ? \
                     AND version <> ? AND source = 'reported'",
                );
                sqlx::query(&upd)
                    .bind(version)
                    .bind(now_ms)
                    .bind(server)
                    .bind(name)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
            }
            new += n as usize;
        }
        tx.commit().await?;
        Ok(new)
    }

    async fn put_zone(&self, z: &ZoneRow) -> StoreResult<()> {
        let sql = self.q(
            "INSERT INTO zones (name, description) VALUES (?, ?) ON CONFLICT (name) \
             DO UPDATE SET description = excluded.description",
        );
        sqlx::query(&sql)
            .bind(&z.name)
            .bind(&z.description)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_zone(&self, name: &str) -> StoreResult<bool> {
        let n = sqlx::query(&self.q("DELETE FROM zones WHERE name = ?"))
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn zones(&self) -> StoreResult<Vec<ZoneRow>> {
        let rows = sqlx::query("SELECT name, description FROM zones ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ZoneRow {
                    name: r.try_get("name")?,
                    description: r.try_get("description")?,
                })
            })
            .collect()
    }

    // === policy ===

    async fn put_policy(
        &self,
        text: &str,
        json: &serde_json::Value,
        by: &str,
        now_ms: i64,
    ) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT COALESCE(MAX(revision), 0) AS r FROM policies")
            .fetch_one(&mut *tx)
            .await?;
        let rev: i64 = row.try_get::<i64, _>("r")? + 1;
        let sql = self.q(
            "INSERT INTO policies (revision, body, json, applied_by, applied_ms) VALUES (?, ?, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(rev)
            .bind(text)
            .bind(json_text(json))
            .bind(by)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rev)
    }

    async fn policy(&self) -> StoreResult<Option<PolicyRow>> {
        let row = sqlx::query(
            "SELECT revision, body, json, applied_by, applied_ms FROM policies \
             ORDER BY revision DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let json: String = r.try_get("json")?;
            Ok(PolicyRow {
                revision: r.try_get("revision")?,
                text: r.try_get("body")?,
                json: serde_json::from_str(&json).map_err(|e| corrupt("policies.json", e))?,
                by: r.try_get("applied_by")?,
                applied_ms: r.try_get("applied_ms")?,
            })
        })
        .transpose()
    }

    // === kill switch ===

    async fn put_kill(&self, k: &KillRow) -> StoreResult<()> {
        let sql = self.q(
            "INSERT INTO kills (scope, target, reason, by_whom, since_ms) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (scope, target) DO UPDATE SET reason = excluded.reason, \
             by_whom = excluded.by_whom",
        );
        sqlx::query(&sql)
            .bind(&k.scope)
            .bind(&k.target)
            .bind(&k.reason)
            .bind(&k.by)
            .bind(k.since_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn lift_kill(&self, scope: &str, target: &str) -> StoreResult<bool> {
        let n = sqlx::query(&self.q("DELETE FROM kills WHERE scope = ? AND target = ?"))
            .bind(scope)
            .bind(target)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn kills(&self) -> StoreResult<Vec<KillRow>> {
        let rows = sqlx::query(
            "SELECT scope, target, reason, by_whom, since_ms FROM kills \
             ORDER BY since_ms DESC, scope, target",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KillRow {
                    scope: r.try_get("scope")?,
                    target: r.try_get("target")?,
                    reason: r.try_get("reason")?,
                    by: r.try_get("by_whom")?,
                    since_ms: r.try_get("since_ms")?,
                })
            })
            .collect()
    }

    // === snapshots ===

    async fn insert_snapshot(&self, s: &SnapshotRow) -> StoreResult<()> {
        let text = String::from_utf8(s.envelope.clone())
            .map_err(|e| StoreError::Db(format!("snapshot envelope is not UTF-8: {e}")))?;
        let sql = self
            .q("INSERT INTO snapshots (version, sha256, envelope, created_ms) VALUES (?, ?, ?, ?)");
        sqlx::query(&sql)
            .bind(s.version)
            .bind(&s.sha256)
            .bind(text)
            .bind(s.created_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn latest_snapshot(&self) -> StoreResult<Option<SnapshotRow>> {
        let row = sqlx::query(
            "SELECT version, sha256, envelope, created_ms FROM snapshots ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| snapshot_row(&r)).transpose()
    }

    async fn snapshot(&self, version: i64) -> StoreResult<Option<SnapshotRow>> {
        let row = sqlx::query(
            &self
                .q("SELECT version, sha256, envelope, created_ms FROM snapshots WHERE version = ?"),
        )
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| snapshot_row(&r)).transpose()
    }

    // === API keys ===

    async fn put_api_key(&self, k: &ApiKeyRow) -> StoreResult<()> {
        let sql = self.q(
            "INSERT INTO api_keys (id, name, role, groups_json, hash, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(&k.id)
            .bind(&k.name)
            .bind(&k.role)
            .bind(json_text(&k.groups))
            .bind(&k.hash)
            .bind(k.created_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyRow>> {
        sqlx::query(&self.q("SELECT * FROM api_keys WHERE hash = ?"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(key_row)
            .transpose()
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRow>> {
        sqlx::query("SELECT * FROM api_keys ORDER BY created_ms, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(key_row)
            .collect()
    }

    async fn delete_api_key(&self, id: &str) -> StoreResult<bool> {
        let n = sqlx::query(&self.q("DELETE FROM api_keys WHERE id = ?"))
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    // === edges ===

    async fn put_edge(&self, name: &str, now_ms: i64) -> StoreResult<()> {
        let sql = self.q(
            "INSERT INTO edges (name, state, created_ms, revoked_ms) VALUES (?, 'pending', ?, NULL) \
             ON CONFLICT (name) DO UPDATE SET state = CASE WHEN edges.state = 'revoked' \
             THEN 'pending' ELSE edges.state END, revoked_ms = NULL",
        );
        sqlx::query(&sql)
            .bind(name)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn edge(&self, name: &str) -> StoreResult<Option<EdgeRow>> {
        let row = sqlx::query(&self.q("SELECT * FROM edges WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| edge_row(&r)).transpose()
    }

    async fn edges(&self) -> StoreResult<Vec<EdgeRow>> {
        sqlx::query("SELECT * FROM edges ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(edge_row)
            .collect()
    }

    async fn put_enroll_token(&self, hash: &str, edge: &str, expires_ms: i64) -> StoreResult<()> {
        let sql = self.q(
            "INSERT INTO enroll_tokens (hash, edge, expires_ms, used_ms) VALUES (?, ?, ?, NULL)",
        );
        sqlx::query(&sql)
            .bind(hash)
            .bind(edge)
            .bind(expires_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn take_enroll_token(&self, hash: &str, now_ms: i64) -> StoreResult<Option<String>> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(&self.q(
            "UPDATE enroll_tokens SET used_ms = ? WHERE hash = ? AND used_ms IS NULL AND expires_ms > ?",
        ))
        .bind(now_ms)
        .bind(hash)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let row = sqlx::query(&self.q("SELECT edge FROM enroll_tokens WHERE hash = ?"))
            .bind(hash)
            .fetch_one(&mut *tx)
            .await?;
        let edge: String = row.try_get("edge")?;
        tx.commit().await?;
        Ok(Some(edge))
    }

    async fn put_edge_cert(&self, c: &EdgeCertRow) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&self.q(
            "INSERT INTO edge_certs (serial, edge, key_sha256, not_after_ms, issued_ms, revoked_ms) \
             VALUES (?, ?, ?, ?, ?, NULL)",
        ))
        .bind(&c.serial)
        .bind(&c.edge)
        .bind(&c.key_sha256)
        .bind(c.not_after_ms)
        .bind(c.issued_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            &self.q("UPDATE edges SET state = 'enrolled' WHERE name = ? AND state <> 'revoked'"),
        )
        .bind(&c.edge)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn edge_certs(&self, edge: Option<&str>) -> StoreResult<Vec<EdgeCertRow>> {
        let rows =
            match edge {
                Some(e) => {
                    sqlx::query(&self.q(
                        "SELECT * FROM edge_certs WHERE edge = ? ORDER BY issued_ms DESC, serial",
                    ))
                    .bind(e)
                    .fetch_all(&self.pool)
                    .await?
                }
                None => {
                    sqlx::query("SELECT * FROM edge_certs ORDER BY issued_ms DESC, serial")
                        .fetch_all(&self.pool)
                        .await?
                }
            };
        rows.iter().map(cert_row).collect()
    }

    async fn edge_cert_by_key(&self, key_sha256: &str) -> StoreResult<Option<EdgeCertRow>> {
        sqlx::query(&self.q(
            "SELECT * FROM edge_certs WHERE key_sha256 = ? AND revoked_ms IS NULL \
             ORDER BY issued_ms DESC LIMIT 1",
        ))
        .bind(key_sha256)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(cert_row)
        .transpose()
    }

    async fn revoke_edge(&self, name: &str, now_ms: i64) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            &self.q("UPDATE edges SET state = 'revoked', revoked_ms = ? WHERE name = ?"),
        )
        .bind(now_ms)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            &self.q("UPDATE edge_certs SET revoked_ms = ? WHERE edge = ? AND revoked_ms IS NULL"),
        )
        .bind(now_ms)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            &self.q("UPDATE enroll_tokens SET used_ms = ? WHERE edge = ? AND used_ms IS NULL"),
        )
        .bind(now_ms)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    // === approvals ===

    async fn insert_approval(&self, a: &ApprovalRow) -> StoreResult<()> {
        let sql = self.q(&format!(
            "INSERT INTO approvals ({APPROVAL_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ));
        sqlx::query(&sql)
            .bind(&a.id)
            .bind(&a.hub)
            .bind(&a.upstream)
            .bind(&a.tool)
            .bind(json_text(&a.arguments))
            .bind(&a.principal)
            .bind(&a.reason)
            .bind(a.approval_group.clone())
            .bind(&a.state)
            .bind(a.created_ms)
            .bind(a.expires_ms)
            .bind(a.decided_ms)
            .bind(a.decided_by.clone())
            .bind(a.comment.clone())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn approval(&self, id: &str) -> StoreResult<Option<ApprovalRow>> {
        sqlx::query(&self.q(&format!(
            "SELECT {APPROVAL_COLS} FROM approvals WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(approval_row)
        .transpose()
    }

    async fn approvals(&self, state: Option<&str>, limit: i64) -> StoreResult<Vec<ApprovalRow>> {
        let limit = limit.clamp(1, 1000);
        let rows = match state {
            Some(s) => {
                sqlx::query(&self.q(&format!(
                    "SELECT {APPROVAL_COLS} FROM approvals WHERE state = ? \
                     ORDER BY created_ms DESC, id LIMIT ?"
                )))
                .bind(s)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&self.q(&format!(
                    "SELECT {APPROVAL_COLS} FROM approvals ORDER BY created_ms DESC, id LIMIT ?"
                )))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(approval_row).collect()
    }

    async fn decide_approval(
        &self,
        id: &str,
        state: &str,
        by: &str,
        comment: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let n = sqlx::query(&self.q(
            "UPDATE approvals SET state = ?, decided_ms = ?, decided_by = ?, comment = ? \
             WHERE id = ? AND state = 'pending' AND expires_ms > ?",
        ))
        .bind(state)
        .bind(now_ms)
        .bind(by)
        .bind(comment)
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    async fn expire_approvals(&self, now_ms: i64) -> StoreResult<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            &self.q("SELECT id FROM approvals WHERE state = 'pending' AND expires_ms <= ?"),
        )
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get("id")?;
            sqlx::query(&self.q(
                "UPDATE approvals SET state = 'expired', decided_ms = ?, decided_by = 'timeout', \
                 comment = 'no decision before the deadline' WHERE id = ? AND state = 'pending'",
            ))
            .bind(now_ms)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    // === audit ===

    async fn append_audit(
        &self,
        hub: &str,
        expect_seq: i64,
        rows: &[AuditRow],
        audit_key: &str,
    ) -> StoreResult<()> {
        let Some(last) = rows.last() else {
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(&self.q(
            "INSERT INTO hubs (id, report, reported_ms, audit_key, audit_seq, audit_hash) \
             VALUES (?, 'null', 0, NULL, 0, NULL) ON CONFLICT (id) DO NOTHING",
        ))
        .bind(hub)
        .execute(&mut *tx)
        .await?;
        // Compare-and-set on the chain head: two ingests of one hub cannot both extend it.
        let n = sqlx::query(&self.q(
            "UPDATE hubs SET audit_seq = ?, audit_hash = ?, audit_key = ? WHERE id = ? AND audit_seq = ?",
        ))
        .bind(last.seq)
        .bind(&last.hash)
        .bind(audit_key)
        .bind(hub)
        .bind(expect_seq)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "audit chain of hub {hub} moved (expected head {expect_seq})"
            )));
        }
        let ins = self.q(&format!(
            "INSERT INTO audit ({AUDIT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ));
        for r in rows {
            sqlx::query(&ins)
                .bind(&r.hub)
                .bind(r.seq)
                .bind(r.ts_ms)
                .bind(&r.kind)
                .bind(&r.principal)
                .bind(&r.upstream)
                .bind(&r.tool)
                .bind(&r.outcome)
                .bind(&r.line)
                .bind(&r.hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn audit(&self, f: &AuditFilter) -> StoreResult<Vec<AuditRow>> {
        let mut sql = format!("SELECT {AUDIT_COLS} FROM audit WHERE 1 = 1");
        if f.hub.is_some() {
            sql.push_str(" AND hub = ?");
        }
        if f.principal.is_some() {
            sql.push_str(" AND principal = ?");
        }
        if f.tool.is_some() {
            sql.push_str(" AND tool = ?");
        }
        if f.after_seq.is_some() {
            sql.push_str(" AND seq > ?");
        }
        sql.push_str(" ORDER BY ts_ms DESC, hub, seq DESC LIMIT ?");
        let sql = self.q(&sql);
        let mut q = sqlx::query(&sql);
        if let Some(h) = &f.hub {
            q = q.bind(h.clone());
        }
        if let Some(p) = &f.principal {
            q = q.bind(p.clone());
        }
        if let Some(t) = &f.tool {
            q = q.bind(t.clone());
        }
        if let Some(s) = f.after_seq {
            q = q.bind(s);
        }
        q = q.bind(f.limit.unwrap_or(100).clamp(1, 1000));
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(audit_row)
            .collect()
    }

    async fn audit_chain(
        &self,
        hub: &str,
        from_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<AuditRow>> {
        sqlx::query(&self.q(&format!(
            "SELECT {AUDIT_COLS} FROM audit WHERE hub = ? AND seq >= ? ORDER BY seq LIMIT ?"
        )))
        .bind(hub)
        .bind(from_seq)
        .bind(limit.max(1))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(audit_row)
        .collect()
    }

    // === keyring ===

    async fn keyring_put_if_absent(
        &self,
        name: &str,
        value: &str,
        now_ms: i64,
    ) -> StoreResult<String> {
        sqlx::query(&self.q(
            "INSERT INTO keyring (name, value, created_ms) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        ))
        .bind(name)
        .bind(value)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(&self.q("SELECT value FROM keyring WHERE name = ?"))
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("value")?)
    }

    // === hubs and KPIs ===

    async fn put_hub_report(
        &self,
        hub: &str,
        report: &serde_json::Value,
        now_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(&self.q(
            "INSERT INTO hubs (id, report, reported_ms, audit_key, audit_seq, audit_hash) \
             VALUES (?, ?, ?, NULL, 0, NULL) ON CONFLICT (id) DO UPDATE SET \
             report = excluded.report, reported_ms = excluded.reported_ms",
        ))
        .bind(hub)
        .bind(json_text(report))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn hub(&self, id: &str) -> StoreResult<Option<HubRow>> {
        sqlx::query(&self.q("SELECT * FROM hubs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(hub_row)
            .transpose()
    }

    async fn hubs(&self) -> StoreResult<Vec<HubRow>> {
        sqlx::query("SELECT * FROM hubs ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(hub_row)
            .collect()
    }

    async fn put_kpis(&self, samples: &[KpiSample]) -> StoreResult<()> {
        if samples.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let sql = self.q("INSERT INTO kpi_samples (hub, ts_ms, name, value) VALUES (?, ?, ?, ?)");
        for s in samples {
            sqlx::query(&sql)
                .bind(&s.hub)
                .bind(s.ts_ms)
                .bind(&s.name)
                .bind(s.value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn kpis(&self, since_ms: i64) -> StoreResult<Vec<KpiSample>> {
        let rows = sqlx::query(&self.q(
            "SELECT hub, ts_ms, name, value FROM kpi_samples WHERE ts_ms >= ? ORDER BY ts_ms, hub, name",
        ))
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KpiSample {
                    hub: r.try_get("hub")?,
                    ts_ms: r.try_get("ts_ms")?,
                    name: r.try_get("name")?,
                    value: r.try_get("value")?,
                })
            })
            .collect()
    }
}

fn snapshot_row(r: &sqlx::any::AnyRow) -> StoreResult<SnapshotRow> {
    let env: String = r.try_get("envelope")?;
    Ok(SnapshotRow {
        version: r.try_get("version")?,
        sha256: r.try_get("sha256")?,
        envelope: env.into_bytes(),
        created_ms: r.try_get("created_ms")?,
    })
}

fn edge_row(r: &sqlx::any::AnyRow) -> StoreResult<EdgeRow> {
    Ok(EdgeRow {
        name: r.try_get("name")?,
        state: r.try_get("state")?,
        created_ms: r.try_get("created_ms")?,
        revoked_ms: r.try_get("revoked_ms")?,
    })
}
