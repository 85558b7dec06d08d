//! `meshgate-control`: the small tokio + hyper service that will own the catalog (servers,
//! endpoints, tools, zones), policies, approvals, the hash-chained signed audit log and edge
//! enrollment (a small CA), and publish versioned snapshots that dataplanes watch.
//!
//! Not built yet: the hub runs from its config file alone and never calls the control plane on the
//! request path (DESIGN.md §2, §8). This crate exists so the workspace layout is fixed.

/// The version of the control-plane snapshot format this crate will publish.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 0;
