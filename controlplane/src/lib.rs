//! `meshgate-control`: the control plane of a meshgate fleet (DESIGN.md §2, §8).
//!
//! Off the request path: hubs serve from the last snapshot they hold (on disk too) and never
//! wait on this service. What it owns, by module:
//! - [`store`]: the storage trait and its SQL implementation (SQLite embedded, PostgreSQL HA).
//! - [`publish`]: versioned, content-hashed, Ed25519-signed snapshots (catalog + policy + kill
//!   switch + edge revocations), pushed to long-polling hubs the moment they change.
//! - [`api`]: the admin API and the hub protocol (axum); [`auth`]: API keys, OIDC JWTs, RBAC;
//!   [`error`]: one error → status + JSON mapping.
//! - [`pki`]: the edge CA (CSR signing for enrollment and renewal).
//! - [`export`]: audit export to syslog (RFC 5424, UDP/TCP) and OTLP logs.
//! - [`server`]: `serve` (TLS, background tasks); [`cli`]: the command line.
//! - [`audit_chain`]: per-line checks of hubs' `governance::audit` records on ingest.
//!
//! Shared with the hub through the `governance` crate: the policy document
//! (`governance::policy::PolicyConfig`), approval records (`governance::approval`) and audit
//! records and their file format (`governance::audit`).
//!
//! The hub side (snapshot format, verification, watcher) is the `meshgate-control-client` crate.

pub mod api;
pub mod audit_chain;
pub mod auth;
pub mod cli;
pub mod error;
pub mod export;
pub mod files;
pub mod pki;
pub mod publish;
pub mod server;
pub mod store;
