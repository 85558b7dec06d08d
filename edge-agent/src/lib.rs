//! `meshgate-edge`: will run on edge boxes, supervise local stdio MCP servers (spawn, restart with
//! backoff, idle reap, process-group kill), offer built-in device tools, and reach the hub through
//! an outbound-only QUIC tunnel with a TLS-over-TCP fallback (DESIGN.md §7).
//!
//! Not built yet; this crate exists so the workspace layout is fixed.

/// The tunnel protocol version the agent will announce in its hello frame.
pub const TUNNEL_PROTOCOL_VERSION: u32 = 0;
