//! MCP wire crate (placeholder).
