//! meshgate governance: who is calling, what they may do, and the record of what they did.
//!
//! The engine behind the hub's `identify`, `policy` and `audit` stages (and the shapes the
//! control plane shares: policy, approval and audit records). Nothing here does IO on a hub
//! worker: per-request functions are plain non-blocking fns or `async fn`s whose only awaits are
//! runtime-agnostic `tokio::sync` primitives; network IO (JWKS, token endpoints) runs on one
//! background thread with its own small tokio runtime ([`net`]); the audit log and approval
//! expiry have their own std threads.
//!
//! | stage | module | per request |
//! |---|---|---|
//! | identify | [`identity`] → [`principal`] | cached token lookup; 401/403/431 rendering |
//! | session | [`principal::Principal::binding`] | the string sessions are bound to |
//! | policy | [`policy`], [`policy::limits`], [`schema`], [`approval`] | visibility, rate/loop limits, argument validation, approval gate |
//! | forward | [`credentials`], [`assertion`] | upstream credentials and the hub-signed user assertion |
//! | relay | [`redact`] | result redaction and guardrails |
//! | audit | [`audit`] | a record to the signed, hash-chained log |
//!
//! Config types live next to their module, all `deny_unknown_fields`; durations are strings
//! parsed by [`config::parse_duration`]. [`GovernanceConfig`] gathers them:
//!
//! ```yaml
//! auth:                                   # or `auth: none` (loopback listeners only)
//!   resource: https://gw.example.com/mcp  # the audience tokens must carry
//!   scopes_supported: [mcp:tools]
//!   jwt: { issuer: https://idp.example.com, roles_claim: realm_access.roles, leeway: 30s }
//!   api_keys: [{ name: ci, hash: "sha256:…", roles: [deployer] }]
//! policy:
//!   unmatched: deny
//!   max_loop_steps: 50
//!   loop_window: 10m
//!   rate_limits: { per_principal: { rate: 20, per: 1s, burst: 40 }, per_tool: { rate: 5 } }
//!   tools:
//!     - { match: "payments/*", requires_approval: true, approval_group: finance,
//!         roles: [finance], redact_arguments: [/card_number], classification: restricted }
//!     - { match: "*/delete_*", roles: [admin] }
//!     - { match: "crm/*", roles: [sales, admin], redact: [{ pattern: "\\d{3}-\\d{2}-\\d{4}" }] }
//! schema: { on_uncompilable: reject }
//! audit: { path: /var/lib/meshgate/audit.jsonl, key_file: /etc/meshgate/audit.key, on_failure: closed }
//! assertion: { key_file: /etc/meshgate/assertion.key, issuer: https://gw.example.com, ttl: 2m }
//! credentials:
//!   secret_key_file: /etc/meshgate/secret.key
//!   upstreams:
//!     payments: { header: { name: Authorization, prefix: "Bearer ", secret_file: /etc/meshgate/payments.sealed } }
//!     crm: { client_credentials: { token_endpoint: https://idp.example.com/token, client_id: hub,
//!                                  client_secret_file: /etc/meshgate/hub.sealed }, assertion: {} }
//! ```

pub mod approval;
pub mod assertion;
pub mod audit;
pub mod config;
pub mod credentials;
pub mod identity;
pub mod keys;
pub mod net;
pub mod policy;
pub mod principal;
pub mod redact;
pub mod schema;

pub use config::{parse_duration, ConfigError};
pub use principal::{Principal, PrincipalKind};

/// All governance sections of a hub config, for a loader that wants them in one place
/// (each is also usable on its own). Every field is optional except as the hub decides.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceConfig {
    /// `auth: none` (loopback only) or the bearer-token settings.
    pub auth: identity::AuthConfig,
    /// Tool policy, limits.
    #[serde(default)]
    pub policy: policy::PolicyConfig,
    /// Argument validation.
    #[serde(default)]
    pub schema: schema::SchemaConfig,
    /// The signed audit log (absent = no audit log).
    #[serde(default)]
    pub audit: Option<audit::AuditConfig>,
    /// The hub-signed user assertion (absent = none).
    #[serde(default)]
    pub assertion: Option<assertion::AssertionConfig>,
    /// Upstream credentials.
    #[serde(default)]
    pub credentials: credentials::CredentialsConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_workers_share_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<identity::Authenticator>();
        shared::<principal::Principal>();
        shared::<policy::CompiledPolicy>();
        shared::<policy::ToolTable>();
        shared::<policy::RateLimiter>();
        shared::<policy::LoopGuard>();
        shared::<schema::SchemaCache>();
        shared::<audit::AuditLog>();
        shared::<approval::ApprovalRegistry>();
        shared::<credentials::Credentials>();
        shared::<assertion::AssertionSigner>();
        shared::<redact::Redactor>();
        shared::<net::NetRuntime>();
    }

    #[test]
    fn a_whole_governance_config_parses_and_unknown_fields_are_named() {
        let c: GovernanceConfig = serde_json::from_value(serde_json::json!({
            "auth": {"resource": "https://gw.example.com/mcp",
                     "jwt": {"issuer": "https://idp.example.com", "leeway": "10s"}},
            "policy": {"max_loop_steps": 20, "loop_window": "5m",
                       "tools": [{"match": "*/delete_*", "roles": ["admin"]}]},
            "audit": {"path": "/var/log/meshgate/audit.jsonl", "key_file": "/etc/meshgate/audit.key"},
            "credentials": {"upstreams": {"crm": {"assertion": {}}}}
        }))
        .unwrap();
        assert!(matches!(c.auth, identity::AuthConfig::Required(_)));
        assert_eq!(c.policy.max_loop_steps, Some(20));
        let e = serde_json::from_value::<GovernanceConfig>(
            serde_json::json!({"auth": "none", "polcy": {}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `polcy`"), "{e}");
    }
}
