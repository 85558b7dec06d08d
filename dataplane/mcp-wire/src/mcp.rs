//! MCP protocol revisions, eras and method names (reference/mcp-wire.md §0, §4, §5).

/// A protocol revision string as it appears in `initialize` and `MCP-Protocol-Version`.
pub type Revision = &'static str;

/// 2025-03-26: first Streamable HTTP revision; the only one that allows JSON-RPC batches.
pub const V2025_03_26: Revision = "2025-03-26";
/// 2025-06-18: batching removed, `MCP-Protocol-Version` header required.
pub const V2025_06_18: Revision = "2025-06-18";
/// 2025-11-25: SSE polling, 403 on bad Origin, tasks; the newest legacy (session) revision.
pub const V2025_11_25: Revision = "2025-11-25";
/// 2026-07-28: the stateless (modern) era.
pub const V2026_07_28: Revision = "2026-07-28";

/// The legacy (session-based) revisions the hub serves, newest first.
pub const LEGACY_REVISIONS: [Revision; 3] = [V2025_11_25, V2025_06_18, V2025_03_26];

/// The revision assumed when a client sends no `MCP-Protocol-Version` header (spec §2.7).
pub const DEFAULT_ASSUMED_REVISION: Revision = V2025_03_26;

/// The protocol era of a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// Handshake-based: `initialize`, `Mcp-Session-Id`, GET stream, server→client requests.
    Legacy,
    /// Stateless: per-request `_meta`, `server/discover`, MRTR.
    Modern,
}

/// The legacy revision named by `s`, as a `'static` string, if the hub serves it.
pub fn legacy_revision(s: &str) -> Option<Revision> {
    LEGACY_REVISIONS.iter().copied().find(|r| *r == s)
}

/// Whether a revision allows JSON-RPC batches (only 2025-03-26 does).
pub fn allows_batch(rev: &str) -> bool {
    rev == V2025_03_26
}

/// Method names the hub looks at.
pub mod method {
    /// Opens a legacy session.
    pub const INITIALIZE: &str = "initialize";
    /// Client's confirmation after `initialize`.
    pub const INITIALIZED: &str = "notifications/initialized";
    /// Liveness check, either direction.
    pub const PING: &str = "ping";
    /// Tool listing.
    pub const TOOLS_LIST: &str = "tools/list";
    /// Tool invocation.
    pub const TOOLS_CALL: &str = "tools/call";
    /// Prompt listing.
    pub const PROMPTS_LIST: &str = "prompts/list";
    /// Prompt fetch.
    pub const PROMPTS_GET: &str = "prompts/get";
    /// Resource listing.
    pub const RESOURCES_LIST: &str = "resources/list";
    /// Resource template listing.
    pub const RESOURCES_TEMPLATES_LIST: &str = "resources/templates/list";
    /// Resource read.
    pub const RESOURCES_READ: &str = "resources/read";
    /// Resource subscription (legacy).
    pub const RESOURCES_SUBSCRIBE: &str = "resources/subscribe";
    /// Resource unsubscription (legacy).
    pub const RESOURCES_UNSUBSCRIBE: &str = "resources/unsubscribe";
    /// Argument completion.
    pub const COMPLETION_COMPLETE: &str = "completion/complete";
    /// Log level (legacy).
    pub const LOGGING_SET_LEVEL: &str = "logging/setLevel";
    /// Cancellation notification.
    pub const CANCELLED: &str = "notifications/cancelled";
    /// Progress notification.
    pub const PROGRESS: &str = "notifications/progress";
    /// Log message notification.
    pub const MESSAGE: &str = "notifications/message";
    /// Tool list changed.
    pub const TOOLS_LIST_CHANGED: &str = "notifications/tools/list_changed";
    /// Prompt list changed.
    pub const PROMPTS_LIST_CHANGED: &str = "notifications/prompts/list_changed";
    /// Resource list changed.
    pub const RESOURCES_LIST_CHANGED: &str = "notifications/resources/list_changed";
    /// A subscribed resource changed.
    pub const RESOURCES_UPDATED: &str = "notifications/resources/updated";
    /// Client roots changed.
    pub const ROOTS_LIST_CHANGED: &str = "notifications/roots/list_changed";
}

/// Header names (compared case-insensitively on the wire).
pub mod header {
    /// Session id header.
    pub const SESSION_ID: &str = "Mcp-Session-Id";
    /// Negotiated protocol version header (from 2025-06-18).
    pub const PROTOCOL_VERSION: &str = "MCP-Protocol-Version";
    /// SSE resumption header.
    pub const LAST_EVENT_ID: &str = "Last-Event-ID";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions() {
        assert_eq!(legacy_revision("2025-06-18"), Some(V2025_06_18));
        assert_eq!(legacy_revision("2026-07-28"), None);
        assert_eq!(legacy_revision("1999-01-01"), None);
        assert!(allows_batch("2025-03-26"));
        assert!(!allows_batch("2025-06-18"));
        assert!(!allows_batch("2025-11-25"));
    }
}
