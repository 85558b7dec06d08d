//! `meshgate-edge`: runs on an edge box, supervises local stdio MCP servers, offers built-in
//! device tools and local HTTP MCP servers, and serves them all as one Streamable HTTP surface
//! reachable only through the outbound tunnel to the hub (DESIGN.md §7).
//!
//! Path of a hub request: the tunnel (`meshgate-tunnel`) accepts a hub-opened stream and calls
//! [`Surface`] → [`surface`] routes `/mcp/<server>` and owns the agent sessions ([`session`]) →
//! the backend: [`device`] (in-process tools), [`stdio`] (shared / per-session supervised
//! processes, each driven by a `mux` over [`supervisor`]-spawned children) or [`httpproxy`]
//! (local HTTP servers). Replies are built by [`body`]. [`config`] parses `edge.yaml`.

pub mod body;
pub mod config;
pub mod device;
pub mod httpproxy;
pub(crate) mod mux;
pub mod session;
pub mod stdio;
pub mod supervisor;
pub mod surface;

pub use config::EdgeConfig;
pub use surface::{serve_tcp, Surface};
