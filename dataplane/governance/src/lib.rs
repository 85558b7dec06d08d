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
//! parsed by [`config::parse_duration`].

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
