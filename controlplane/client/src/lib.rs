//! `meshgate-control-client`: the hub's half of the control plane (DESIGN.md §2, §8).
//!
//! - [`snapshot`]: the snapshot format (catalog, policy, kill switch, edge revocations) as serde
//!   types, plus the lookups a hub needs ([`Snapshot::tool_verdict`], [`Snapshot::killed`],
//!   [`Snapshot::edge_revoked`]).
//! - [`verify`]: the signed envelope: SHA-256 of the exact snapshot bytes, Ed25519 signature by the
//!   control plane. [`verify::seal`] (control plane) and [`verify::open`] (hub).
//! - [`watch`]: [`Watcher`], one thread with a small tokio runtime that long-polls
//!   `GET /v1/snapshots/watch`, verifies, saves the last good snapshot atomically on disk, and
//!   publishes it on a runtime-agnostic `tokio::sync::watch` channel.
//! - `enroll` (feature `enroll`): the edge agent's half of enrollment (key + CSR locally,
//!   certificate from the control plane, renewal).
//! - [`http`]: the minimal HTTP/1.1 (+ rustls) client both the watcher and the `meshgate-control`
//!   CLI use.
//!
//! Off the request path: nothing here is called per request except the snapshot lookups, and a
//! hub keeps serving from the snapshot it holds (or its config file) while the control plane is
//! away.
//!
//! # How the hub uses it (`meshgate --control URL`)
//!
//! 1. **Start** (main thread, before the workers):
//!    ```no_run
//!    # fn main() -> Result<(), Box<dyn std::error::Error>> {
//!    use meshgate_control_client::{WatchConfig, Watcher};
//!    let url = "http://127.0.0.1:7070"; // the --control value; may end in #key=<base64url>
//!    let mut cfg = WatchConfig::from_url(url, "/var/lib/meshgate")?; // state dir: snapshot + pinned key
//!    cfg.token = std::env::var("MESHGATE_CONTROL_TOKEN").ok();        // an API key with role `hub`
//!    cfg.ca_pem = std::env::var_os("MESHGATE_CONTROL_CA").map(std::fs::read).transpose()?;
//!    cfg.hub_id = "hub-1".into();                                      // e.g. the cluster advertise address
//!    let watcher = Watcher::start(cfg)?;      // returns at once; loads the disk snapshot first
//!    let first = watcher.current();           // Some(..) if a verified snapshot was on disk
//!    # let _ = first; Ok(()) }
//!    ```
//!    `Watcher::start` never blocks on the network: with the control plane down and a snapshot on
//!    disk, `current()` is that snapshot at once (static stability). With neither, the hub starts
//!    from its config file alone and applies the first snapshot when it arrives.
//! 2. **Follow** (one place in the hub, e.g. the thread that already rebuilds config snapshots):
//!    `let mut rx = watcher.subscribe(); while rx.changed().await.is_ok() { let s = rx.borrow().clone(); … }`.
//!    `tokio::sync::watch` needs no tokio runtime to await, so a monoio task can drive it. Build
//!    the hub's own immutable snapshot from [`Snapshot`] (below) and swap it between requests
//!    exactly as a config reload does: sessions are kept. Every value on the channel has passed
//!    [`verify::open`]; a refused one never reaches the channel (the watcher logs
//!    `control snapshot refused; keeping the one held` with the reason and counts
//!    [`WatchStats::refused`]).
//! 3. **Apply** a [`Snapshot`]:
//!    - upstreams: each `catalog.servers[]` with `federate: true` and `kind: http` is an upstream
//!      (`name`, `endpoints` = replicas), merged with the config file's (config wins on a name
//!      clash, reported once). `kind: edge` servers come from edge tunnels as today; the catalog
//!      only gates them (`federate`, tools).
//!    - tools: for each listed tool call [`Snapshot::tool_verdict`]`(upstream, tool)`:
//!      `Active` → list; `Deprecated{sunset,..}` → list with a warning (e.g. prefix the
//!      description with `DEPRECATED (sunset YYYY-MM-DD): ` and add
//!      `annotations.deprecated = true`); `Retired{replacement}` → do not list, a call answers a
//!      tool result `isError: true` with "tool X is retired; use Y"; `Hidden` → not listed,
//!      "unknown tool" on call. Tools an upstream lists that the snapshot does not know must be
//!      **reported** (`POST /v1/hubs/{hub}/discovered`, body below) so an operator can approve
//!      them; until approved they are `Hidden`. A hub with no snapshot yet (config-only) exposes
//!      everything as today.
//!    - kill switch: before forwarding a `tools/call`, `snapshot.killed(upstream, tool)`; when
//!      `Some(kill)`, answer a tool error `isError: true` naming `kill.reason` without contacting
//!      the upstream. Calls already in flight may finish. The check must read the snapshot the
//!      worker holds *now* (it is swapped within milliseconds of the control plane's change:
//!      the long-poll is answered the moment a snapshot is published).
//!    - edge revocations: on every swap, close tunnels where
//!      `snapshot.edge_revoked(link.edge_id(), cert_serial_hex)` and refuse new handshakes that
//!      match (the tunnel acceptor needs the client certificate serial next to its CN).
//!    - policy: `snapshot.policy` is the policy document in the playbook shape; parse it with the
//!      `governance` crate's policy type and use it instead of the config file's policy.
//! 4. **Report** through the watcher thread with [`Watcher::request`] (returns a
//!    `tokio::sync::oneshot::Receiver`, awaitable from monoio):
//!    - every ~5 s `POST /v1/hubs/{hub}/report` with
//!      `{"sessions":N,"tunnels":[{"edge":"e1","transport":"quic","since_ms":…}],
//!       "upstreams":[{"name":"files","up":true}],
//!       "kpi":{"tool_boot_ms":…,"reconnections":…,"cache_hits":…,"cache_misses":…,"calls":…,"errors":…}}`
//!      (counters are totals since start; the control plane computes rates);
//!    - `POST /v1/hubs/{hub}/discovered` with `{"server":"files","version":"1.2.0","tools":[{"name":"read"}]}`;
//!    - audit: `POST /v1/audit` with `{"hub":"hub-1","records":[…]}` (the shared `governance`
//!      audit record type, in chain order; the control plane verifies the chain per hub);
//!    - approvals: `POST /v1/approvals` with the held call, then long-poll
//!      `GET /v1/approvals/{id}?wait_ms=25000` until `state` is not `pending`.
//!
//! The `tests/hub_follow.rs` test of this crate plays that hub against a real `meshgate-control`.

#[cfg(feature = "enroll")]
pub mod enroll;
pub mod http;
pub mod snapshot;
pub mod verify;
pub mod watch;

pub use snapshot::{Kill, KillScope, Lifecycle, Snapshot, ToolVerdict};
pub use verify::{Verified, VerifyError};
pub use watch::{WatchConfig, WatchStats, Watcher};
