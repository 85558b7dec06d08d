//! The snapshot format: what the control plane publishes and a hub applies (catalog, policy,
//! kill-switch state, edge revocations). Plain serde types; the control plane builds them from
//! its store and the hub reads them after [`crate::verify`] has checked hash and signature.
//!
//! Where it sits: off the request path. The hub turns a verified [`Snapshot`] into its own
//! immutable config snapshot between requests; nothing here runs per request except the small
//! lookups ([`Snapshot::tool_verdict`], [`Snapshot::killed`], [`Snapshot::edge_revoked`]), which
//! a hub may also precompute into maps when it swaps the snapshot in.

use serde::{Deserialize, Serialize};

/// The snapshot format version this crate reads and writes. A hub refuses other versions; within
/// one format, fields may be added (unknown fields are ignored, so newer control planes can serve
/// older hubs).
pub const FORMAT: u32 = 1;

/// One immutable, versioned view of everything a hub takes from the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// Monotonic version: every change on the control plane makes version + 1.
    pub version: u64,
    /// When the control plane built it (Unix milliseconds).
    pub created_ms: i64,
    /// Servers, their endpoints and tools, zones.
    pub catalog: Catalog,
    /// The policy document in the shared playbook shape (parsed by the hub with the `governance`
    /// crate's policy type); `null` when no policy was applied.
    pub policy: serde_json::Value,
    /// Kill-switch state: what must not execute right now.
    pub kill: KillSwitch,
    /// Edge certificates (and whole edges) that hubs must refuse.
    pub revoked: Vec<Revocation>,
}

/// The catalog part of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Zones (e.g. a datacenter, a site) servers belong to.
    pub zones: Vec<Zone>,
    /// Upstream MCP servers, datacenter and edge.
    pub servers: Vec<Server>,
}

/// A zone: a named place servers live in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    /// Zone name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// How a hub reaches a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// Streamable HTTP endpoints the hub dials.
    Http,
    /// Served by edge agents through their tunnels (endpoints name the edges).
    Edge,
}

/// One upstream MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// Upstream name (`[A-Za-z0-9_.-]`), the prefix of its exposed tools.
    pub name: String,
    /// How it is reached.
    pub kind: ServerKind,
    /// Zone name (may be empty).
    #[serde(default)]
    pub zone: String,
    /// Owning team or person.
    #[serde(default)]
    pub owner: String,
    /// Replicas: URLs for `http`, edge names for `edge`.
    pub endpoints: Vec<String>,
    /// The allow-list: `false` means hubs must not federate this server at all.
    pub federate: bool,
    /// `serverInfo.version` as reported or declared (semver), if known.
    #[serde(default)]
    pub version: Option<String>,
    /// Tools of this server that an operator has approved, plus retired ones (so calls to them
    /// can be answered with the replacement). Tools not listed here must not be exposed.
    pub tools: Vec<Tool>,
}

/// One tool of a server, as approved by an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// The tool's own name at the server (not prefixed).
    pub name: String,
    /// Tool version (semver), declared or taken from the server's `serverInfo.version`.
    pub version: String,
    /// Lifecycle state.
    pub lifecycle: Lifecycle,
}

/// Lifecycle of a tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Lifecycle {
    /// Exposed normally.
    Active,
    /// Still exposed, listed with a warning annotation until the sunset date.
    Deprecated {
        /// Sunset date (`YYYY-MM-DD`).
        sunset: String,
        /// Optional successor.
        #[serde(default)]
        replacement: Option<String>,
    },
    /// Not exposed; a call answers a tool error naming the replacement (MCP analogue of 410).
    Retired {
        /// The tool (exposed name) to use instead, if any.
        #[serde(default)]
        replacement: Option<String>,
    },
}

/// Kill-switch state. Anything matched here must not execute on any hub.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KillSwitch {
    /// Active kills, newest first.
    pub active: Vec<Kill>,
}

/// What one kill covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", content = "target", rename_all = "lowercase")]
pub enum KillScope {
    /// Every tool call on every hub.
    Global,
    /// Every tool of one upstream (by upstream name).
    Upstream(String),
    /// One tool: `"<upstream>/<tool>"` (the server's own tool name).
    Tool(String),
}

/// One active kill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kill {
    /// What it covers.
    #[serde(flatten)]
    pub scope: KillScope,
    /// Why (shown to callers).
    pub reason: String,
    /// Who pressed it.
    pub by: String,
    /// When (Unix milliseconds).
    pub since_ms: i64,
}

/// A revoked edge identity. Hubs refuse tunnels whose client certificate matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Edge name (the certificate CN).
    pub edge: String,
    /// Certificate serial (hex, lowercase, no separators); `None` revokes every certificate of
    /// the edge.
    #[serde(default)]
    pub serial: Option<String>,
    /// When (Unix milliseconds).
    pub since_ms: i64,
}

/// What a hub does with a (server, tool) pair according to the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolVerdict<'a> {
    /// Expose and allow.
    Active,
    /// Expose with a warning annotation naming the sunset date.
    Deprecated {
        /// Sunset date.
        sunset: &'a str,
        /// Successor, if named.
        replacement: Option<&'a str>,
    },
    /// Hide from lists; a call gets a tool error naming the replacement.
    Retired {
        /// Successor, if named.
        replacement: Option<&'a str>,
    },
    /// Not approved or server not federated: hide, and a call is "unknown tool".
    Hidden,
}

// === impl Snapshot ===

impl Snapshot {
    /// An empty snapshot of the given version (nothing federated, nothing killed).
    pub fn empty(version: u64, created_ms: i64) -> Self {
        Snapshot {
            format: FORMAT,
            version,
            created_ms,
            catalog: Catalog::default(),
            policy: serde_json::Value::Null,
            kill: KillSwitch::default(),
            revoked: Vec::new(),
        }
    }

    /// The server of this name, if catalogued.
    pub fn server(&self, name: &str) -> Option<&Server> {
        self.catalog.servers.iter().find(|s| s.name == name)
    }

    /// What the catalog says about `tool` of `server`.
    pub fn tool_verdict(&self, server: &str, tool: &str) -> ToolVerdict<'_> {
        let Some(s) = self.server(server) else {
            return ToolVerdict::Hidden;
        };
        if !s.federate {
            return ToolVerdict::Hidden;
        }
        match s
            .tools
            .iter()
            .find(|t| t.name == tool)
            .map(|t| &t.lifecycle)
        {
            None => ToolVerdict::Hidden,
            Some(Lifecycle::Active) => ToolVerdict::Active,
            Some(Lifecycle::Deprecated {
                sunset,
                replacement,
            }) => ToolVerdict::Deprecated {
                sunset,
                replacement: replacement.as_deref(),
            },
            Some(Lifecycle::Retired { replacement }) => ToolVerdict::Retired {
                replacement: replacement.as_deref(),
            },
        }
    }

    /// The kill that stops a call of `tool` at `upstream`, if any (global first).
    pub fn killed(&self, upstream: &str, tool: &str) -> Option<&Kill> {
        self.kill.active.iter().find(|k| match &k.scope {
            KillScope::Global => true,
            KillScope::Upstream(u) => u == upstream,
            KillScope::Tool(t) => t
                .split_once('/')
                .is_some_and(|(u, n)| u == upstream && n == tool),
        })
    }

    /// Whether an edge presenting a certificate with this CN and serial (hex, any case, with or
    /// without `:` separators) must be refused.
    pub fn edge_revoked(&self, edge: &str, serial_hex: &str) -> bool {
        let serial = normalize_serial(serial_hex);
        self.revoked.iter().any(|r| {
            r.edge == edge
                && r.serial
                    .as_deref()
                    .is_none_or(|s| normalize_serial(s) == serial)
        })
    }
}

/// Lowercase hex without separators or leading zeros (so `00:AB` and `ab` compare equal).
pub fn normalize_serial(s: &str) -> String {
    let hex: String = s
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        let mut s = Snapshot::empty(3, 0);
        s.catalog.servers.push(Server {
            name: "files".into(),
            kind: ServerKind::Http,
            zone: "dc1".into(),
            owner: "team".into(),
            endpoints: vec!["http://127.0.0.1:1/mcp".into()],
            federate: true,
            version: Some("1.2.0".into()),
            tools: vec![
                Tool {
                    name: "read".into(),
                    version: "1.2.0".into(),
                    lifecycle: Lifecycle::Active,
                },
                Tool {
                    name: "old".into(),
                    version: "1.0.0".into(),
                    lifecycle: Lifecycle::Deprecated {
                        sunset: "2027-01-01".into(),
                        replacement: None,
                    },
                },
                Tool {
                    name: "gone".into(),
                    version: "0.9.0".into(),
                    lifecycle: Lifecycle::Retired {
                        replacement: Some("files__read".into()),
                    },
                },
            ],
        });
        s
    }

    #[test]
    fn verdicts() {
        let s = snap();
        assert_eq!(s.tool_verdict("files", "read"), ToolVerdict::Active);
        assert!(matches!(
            s.tool_verdict("files", "old"),
            ToolVerdict::Deprecated {
                sunset: "2027-01-01",
                ..
            }
        ));
        assert_eq!(
            s.tool_verdict("files", "gone"),
            ToolVerdict::Retired {
                replacement: Some("files__read")
            }
        );
        assert_eq!(s.tool_verdict("files", "unlisted"), ToolVerdict::Hidden);
        assert_eq!(s.tool_verdict("nope", "read"), ToolVerdict::Hidden);
        let mut s2 = s.clone();
        s2.catalog.servers[0].federate = false;
        assert_eq!(s2.tool_verdict("files", "read"), ToolVerdict::Hidden);
    }

    #[test]
    fn kills_by_scope() {
        let mut s = snap();
        assert!(s.killed("files", "read").is_none());
        let k = |scope| Kill {
            scope,
            reason: "r".into(),
            by: "me".into(),
            since_ms: 1,
        };
        s.kill.active = vec![k(KillScope::Tool("files/read".into()))];
        assert!(s.killed("files", "read").is_some());
        assert!(s.killed("files", "old").is_none());
        assert!(s.killed("other", "read").is_none());
        s.kill.active = vec![k(KillScope::Upstream("files".into()))];
        assert!(s.killed("files", "old").is_some());
        assert!(s.killed("other", "x").is_none());
        s.kill.active = vec![k(KillScope::Global)];
        assert!(s.killed("other", "x").is_some());
    }

    #[test]
    fn revocations() {
        let mut s = snap();
        s.revoked.push(Revocation {
            edge: "e1".into(),
            serial: Some("00:AB:cd".into()),
            since_ms: 0,
        });
        s.revoked.push(Revocation {
            edge: "e2".into(),
            serial: None,
            since_ms: 0,
        });
        assert!(s.edge_revoked("e1", "abcd"));
        assert!(s.edge_revoked("e1", "AB:CD"));
        assert!(!s.edge_revoked("e1", "abce"));
        assert!(s.edge_revoked("e2", "anything-1"));
        assert!(!s.edge_revoked("e3", "abcd"));
    }

    #[test]
    fn wire_shape_round_trips() {
        let mut s = snap();
        s.kill.active.push(Kill {
            scope: KillScope::Upstream("files".into()),
            reason: "incident".into(),
            by: "ops".into(),
            since_ms: 5,
        });
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["kill"]["active"][0]["scope"], "upstream");
        assert_eq!(j["kill"]["active"][0]["target"], "files");
        assert_eq!(
            j["catalog"]["servers"][0]["tools"][2]["lifecycle"]["state"],
            "retired"
        );
        let back: Snapshot = serde_json::from_value(j).unwrap();
        assert_eq!(back, s);
    }
}
