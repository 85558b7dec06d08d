//! The hub's governance: who may call and what they may do, and the record of it (DESIGN.md §8),
//! built once from the config with the `governance` engine and read by the `identify`,
//! `policy`, `forward` and `audit` stages.
//!
//! - identify: [`Gov::principal`] validates the bearer JWT (JWKS on the engine's network
//!   thread, verification cached per token) or static API key; failures render as 401 with
//!   `WWW-Authenticate: Bearer resource_metadata=…`, 403 `insufficient_scope`, 431.
//! - policy: visibility classes (hidden tools are absent from lists and "unknown" when called),
//!   per-principal (HTTP 429) and per-tool rate limits, the loop lock, argument validation
//!   against `inputSchema`, the approval gate.
//! - forward: upstream credentials and the hub-signed user assertion; the client's token never
//!   goes upstream (the hub builds upstream requests from scratch).
//! - audit: the signed, hash-chained JSONL log; in fail-closed mode a log that cannot be written
//!   stops tool calls.

use std::sync::Arc;
use std::time::Duration;

use governance::approval::{ApprovalRegistry, Decided};
use governance::audit::{AuditKind, AuditLog, AuditRecord, FailMode};
use governance::identity::{AuthConfig, AuthError, Authenticator};
use governance::policy::{CompiledPolicy, LoopGuard, RateLimiter, ToolTable};
use governance::schema::SchemaCache;
use governance::Principal;

use crate::config::GovSettings;
use crate::error::{ErrorKind, ProxyError};

/// Everything governance holds at run time.
pub struct Gov {
    /// Token and key validation; `None` = every caller is anonymous (`auth: none`).
    pub auth: Option<Authenticator>,
    /// The compiled tool policy.
    pub policy: CompiledPolicy,
    /// Exact (upstream, tool) → rule lookups ahead of the globs (empty: globs decide).
    pub table: ToolTable,
    /// Token buckets per principal and per (principal, tool).
    pub limiter: RateLimiter,
    /// Tool calls per session per window.
    pub loops: LoopGuard,
    /// Compiled `inputSchema`s.
    pub schemas: SchemaCache,
    /// The audit log, if configured.
    pub audit: Option<Arc<AuditLog>>,
    /// Calls held for an operator.
    pub approvals: ApprovalRegistry,
    /// Upstream credentials and the user assertion.
    pub credentials: Option<governance::credentials::Credentials>,
    /// Hashed admin API keys for the hub's admin endpoints (approvals).
    pub admin_keys: Vec<String>,
    /// This hub's name in audit records and approval requests.
    pub hub_id: String,
    /// Whether tool calls stop while the audit log cannot be written.
    pub audit_fail_closed: bool,
    /// Counters for `/metrics`.
    pub stats: GovStats,
    /// Results kept for tools whose rule sets `cache_ttl_seconds` (`pipeline::guard`).
    pub results: ResultCache,
    /// Guardrails the embedding registered ([`crate::Extensions`]), run on every governed
    /// tool result after the rule's own redaction.
    pub guardrails: Vec<Arc<dyn governance::redact::Guardrail>>,
}

/// Tool results kept per (principal, upstream, tool, arguments) until their TTL; bounded (the
/// whole cache is cleared when full, as the assertion cache does; a cache miss only costs a call).
pub struct ResultCache {
    map: dashmap::DashMap<Arc<str>, (std::time::Instant, bytes::Bytes)>,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for ResultCache {
    fn default() -> Self {
        Self {
            map: dashmap::DashMap::new(),
            max_entries: 10_000,
            max_bytes: 256 << 10,
        }
    }
}

impl ResultCache {
    /// The kept `result` object (raw JSON) for `key`, if it has not expired.
    pub fn get(&self, key: &str) -> Option<bytes::Bytes> {
        let hit = self.map.get(key)?;
        if hit.0 > std::time::Instant::now() {
            return Some(hit.1.clone());
        }
        drop(hit);
        self.map.remove(key);
        None
    }

    /// Keeps the `result` of `response` (a JSON-RPC response) for `ttl`, unless it is an error,
    /// a tool error, an `input_required` result, or too large.
    pub fn put(&self, key: &Arc<str>, ttl: Duration, response: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Resp<'a> {
            #[serde(borrow)]
            result: Option<&'a serde_json::value::RawValue>,
        }
        #[derive(serde::Deserialize)]
        struct Outcome<'a> {
            #[serde(default, rename = "isError")]
            is_error: bool,
            #[serde(default, borrow, rename = "resultType")]
            result_type: Option<&'a str>,
        }
        if response.len() > self.max_bytes {
            return;
        }
        let Ok(Resp {
            result: Some(result),
        }) = serde_json::from_slice::<Resp<'_>>(response)
        else {
            return;
        };
        match serde_json::from_str::<Outcome<'_>>(result.get()) {
            Ok(o) if !o.is_error && o.result_type.is_none_or(|t| t == "complete") => {}
            _ => return,
        }
        if self.map.len() >= self.max_entries {
            self.map.clear();
        }
        self.map.insert(
            key.clone(),
            (
                std::time::Instant::now() + ttl,
                bytes::Bytes::copy_from_slice(result.get().as_bytes()),
            ),
        );
    }
}

/// Governance counters (exported in `/metrics`).
#[derive(Default)]
pub struct GovStats {
    /// Requests refused by authentication.
    pub auth_failed: std::sync::atomic::AtomicU64,
    /// Calls denied by policy (hidden, scope, rate, loop, schema, audit unavailable).
    pub denied: std::sync::atomic::AtomicU64,
    /// Calls refused by a rate limit.
    pub rate_limited: std::sync::atomic::AtomicU64,
    /// Calls held for approval.
    pub approvals_held: std::sync::atomic::AtomicU64,
    /// Held calls approved.
    pub approvals_approved: std::sync::atomic::AtomicU64,
    /// Held calls rejected or expired.
    pub approvals_denied: std::sync::atomic::AtomicU64,
    /// Sum of approval cycle times, milliseconds (with the count: the mean).
    pub approval_ms_total: std::sync::atomic::AtomicU64,
}

impl Gov {
    /// Builds governance from the validated config (starting the engine's network thread when
    /// tokens or credentials need it, and waiting up to 10 s for the first JWKS).
    ///
    /// # Errors
    /// A message naming the config field or file that is wrong.
    pub fn build(
        s: &GovSettings,
        listen: std::net::SocketAddr,
        hub_id: &str,
    ) -> Result<Gov, String> {
        let auth_cfg = s.auth.clone().unwrap_or(AuthConfig::None);
        governance::identity::validate(&auth_cfg, listen).map_err(|e| e.to_string())?;
        let needs_net = matches!(auth_cfg, AuthConfig::Required(_)) || s.credentials.is_some();
        let net = if needs_net {
            Some(
                governance::net::NetRuntime::start(None)
                    .map_err(|e| format!("governance network thread: {e}"))?,
            )
        } else {
            None
        };
        let auth = match &auth_cfg {
            AuthConfig::None => None,
            AuthConfig::Required(_) => {
                let a = Authenticator::new(&auth_cfg, net.clone()).map_err(|e| e.to_string())?;
                if let Err(e) = a.wait_ready(Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "token keys not loaded yet; tokens are refused (503) until they are");
                }
                Some(a)
            }
        };
        let policy = match &s.policy {
            Some(p) => CompiledPolicy::compile(p).map_err(|e| e.to_string())?,
            None => CompiledPolicy::allow_all(),
        };
        let table = policy.tool_table(std::iter::empty());
        let audit = match &s.audit {
            Some(a) => {
                a.validate().map_err(|e| e.to_string())?;
                let key = governance::keys::load_signing_key(&a.key_file)
                    .map_err(|e| format!("audit.key_file: {e}"))?;
                Some(Arc::new(
                    AuditLog::open(a, hub_id, key).map_err(|e| format!("audit: {e}"))?,
                ))
            }
            None => None,
        };
        let signer = match &s.assertion {
            Some(a) => {
                let key = governance::keys::load_signing_key(&a.key_file)
                    .map_err(|e| format!("assertion.key_file: {e}"))?;
                Some(Arc::new(
                    governance::assertion::AssertionSigner::new(a, &key)
                        .map_err(|e| e.to_string())?,
                ))
            }
            None => None,
        };
        let credentials = match &s.credentials {
            Some(c) => {
                let key = match &c.secret_key_file {
                    Some(p) => Some(read_secret_key(p)?),
                    None => None,
                };
                Some(
                    governance::credentials::Credentials::new(c, key.as_ref(), net.clone(), signer)
                        .map_err(|e| e.to_string())?,
                )
            }
            None => None,
        };
        // Every approval outcome is audited in one place.
        let observer_log = audit.clone();
        let observer: governance::approval::Observer = Box::new(move |d: &Decided| {
            if let Some(log) = &observer_log {
                let mut r = AuditRecord::new(AuditKind::from(d.decision.outcome));
                r.principal = Some(d.request.principal.clone());
                r.upstream = Some(d.request.upstream.clone());
                r.tool = Some(d.request.tool.clone());
                r.approval_id = Some(d.request.id.clone());
                r.reason = d.decision.comment.clone().or(Some(d.decision.by.clone()));
                r.outcome = Some(format!("{:?}", d.decision.outcome).to_lowercase());
                let _ = log.submit(r);
            }
        });
        Ok(Gov {
            auth,
            table,
            limiter: RateLimiter::new(100_000),
            loops: LoopGuard::new(100_000),
            schemas: SchemaCache::new(&s.schema.clone().unwrap_or_default()),
            audit,
            approvals: ApprovalRegistry::new(Some(observer)),
            credentials,
            admin_keys: s.admin_keys.clone(),
            hub_id: hub_id.to_string(),
            audit_fail_closed: s
                .audit
                .as_ref()
                .is_some_and(|a| a.on_failure == FailMode::Closed),
            stats: GovStats::default(),
            results: ResultCache::default(),
            guardrails: Vec::new(),
            policy,
        })
    }

    /// The caller of a request (anonymous without `auth`), checked against the required scopes.
    ///
    /// # Errors
    /// 401/403/431/503 with the challenge header.
    pub async fn principal(&self, authorization: Option<&[u8]>) -> Result<Principal, ProxyError> {
        let Some(auth) = &self.auth else {
            return Ok(Principal::anonymous());
        };
        let checked = match auth.authenticate_cached(authorization) {
            Some(r) => r,
            None => auth.authenticate(authorization).await,
        };
        let p = checked
            .and_then(|p| auth.require_scopes(&p).map(|()| p))
            .map_err(|e| self.auth_error(&e))?;
        Ok(p)
    }

    /// An authentication failure as the client sees it (and counted, audited).
    fn auth_error(&self, e: &AuthError) -> ProxyError {
        use std::sync::atomic::Ordering;
        self.stats.auth_failed.fetch_add(1, Ordering::Relaxed);
        if let Some(log) = &self.audit {
            let mut r = AuditRecord::new(AuditKind::AuthFailed);
            r.outcome = Some(e.code().to_string());
            r.reason = Some(e.to_string());
            let _ = log.submit(r);
        }
        let auth = self
            .auth
            .as_ref()
            .expect("only called with auth configured");
        let status = e.status();
        let header = match e {
            AuthError::InsufficientScope { needed } => {
                let needed: Vec<&str> = needed.iter().map(String::as_str).collect();
                auth.challenge_403(&needed, &[], &e.to_string())
            }
            _ => auth.challenge_401(e),
        };
        tracing::info!(status, reason = e.code(), "request refused: {e}");
        let mut err = ProxyError::new(ErrorKind::Unauthorized(status), format!("{e}"));
        if status == 401 || status == 403 {
            err.header = Some(Box::new(("WWW-Authenticate", header)));
        }
        err
    }

    /// Writes an audit record (no-op without a log); `false` when the log refuses it.
    pub fn audit(&self, r: AuditRecord) -> bool {
        match &self.audit {
            Some(log) => log.submit(r).is_ok(),
            None => true,
        }
    }

    /// Whether a tool call may run as far as auditing goes: `false` when the log is failing and
    /// configured fail-closed (a call is never run unaudited then).
    pub fn audit_ready(&self) -> bool {
        match &self.audit {
            Some(log) => log.failure().is_none() || !self.audit_fail_closed,
            None => true,
        }
    }

    /// Whether `authorization` carries one of the admin API keys.
    pub fn is_admin(&self, authorization: Option<&str>) -> bool {
        let Some(key) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        let hashed = governance::identity::hash_api_key(key.trim());
        self.admin_keys
            .iter()
            .any(|k| constant_eq(k.as_bytes(), hashed.as_bytes()))
    }
}

/// Constant-time equality (admin key hashes).
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads a 32-byte secret key (base64) for sealed upstream secrets.
fn read_secret_key(path: &std::path::Path) -> Result<[u8; 32], String> {
    use base64::Engine;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("credentials.secret_key_file {}: {e}", path.display()))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("credentials.secret_key_file {}: {e}", path.display()))?;
    raw.try_into().map_err(|_| {
        format!(
            "credentials.secret_key_file {}: need 32 bytes",
            path.display()
        )
    })
}

/// A tool error result (`isError: true`) with `text`, for denials the model can read.
pub fn tool_error(id: &str, text: &str) -> bytes::Bytes {
    let mut r = br#"{"content":[{"type":"text","text":"#.to_vec();
    mcp_wire::jsonrpc::push_json_str(&mut r, text);
    r.extend_from_slice(br#"}],"isError":true}"#);
    bytes::Bytes::from(mcp_wire::jsonrpc::result_object(id, &r))
}
