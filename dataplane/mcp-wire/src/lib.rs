//! `mcp-wire`: the runtime-free wire vocabulary shared by every meshgate crate.
//!
//! - [`jsonrpc`]: JSON-RPC 2.0 error codes and the one function that renders an error object.
//! - [`peek`](mod@peek): reads only what routing needs (method, id, `params.name`/`params.uri`,
//!   `_meta.progressToken`) from the raw request bytes, borrowing from them; the body itself is
//!   forwarded untouched.
//! - [`mcp`]: protocol revisions, eras and method names.
//! - [`modern`]: the 2026-07-28 (stateless) era: era detection, `_meta` envelope peek, header
//!   validation, `-32020..-32022` error bodies, in-place result rewriting (`resultType`, caching
//!   hints), MRTR shapes and `subscriptions/listen` helpers.
//!
//! In the dataplane request path this crate is step 3 (`jsonrpc::peek`, DESIGN.md §4); it knows
//! nothing about sockets, sessions or runtimes, so it is tested and benchmarked on its own.

pub mod jsonrpc;
pub mod mcp;
pub mod modern;
pub mod peek;

pub use peek::{peek, peek_batch, Kind, PeekError, Peeked};
