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
//! Everything below is for the hub (the `dataplane` crate) to wire; this crate does the
//! network, verification and disk parts, and its types are the contract.
//!
//! 1. **Start** (main thread, before the workers), when `--control URL` is given:
//!    ```no_run
//!    # fn main() -> Result<(), Box<dyn std::error::Error>> {
//!    use meshgate_control_client::{WatchConfig, Watcher};
//!    let url = "https://control.mcp.svc:7070"; // the --control value; may end in #key=<base64url>
//!    let state = std::env::var("MESHGATE_STATE_DIR").unwrap_or_else(|_| "/var/lib/meshgate".into());
//!    let mut cfg = WatchConfig::from_url(url, state)?;      // last good snapshot + pinned key live here
//!    cfg.token = std::env::var("MESHGATE_CONTROL_TOKEN").ok(); // an API key with role `hub`
//!    cfg.ca_pem = std::env::var_os("MESHGATE_CONTROL_CA").map(std::fs::read).transpose()?; // https
//!    cfg.hub_id = "10.0.0.11:8080".into();                   // e.g. cluster.advertise, else the host name
//!    let watcher = Watcher::start(cfg)?;    // returns at once; loads and verifies the disk copy first
//!    let first = watcher.current();         // Some(..) when a verified snapshot was on disk
//!    # let _ = first; Ok(()) }
//!    ```
//!    `Watcher::start` never waits on the network: with the control plane down and a snapshot
//!    on disk, `current()` is that snapshot at once (static stability). With neither, the hub
//!    starts from its config file alone and applies the first snapshot when it arrives. The env
//!    names are the ones `deploy/helm` and `deploy/compose` set (`MESHGATE_CONTROL_TOKEN`,
//!    `MESHGATE_CONTROL_CA`, `MESHGATE_STATE_DIR`); the `hub` key comes from the control plane's
//!    `MESHGATE_CONTROL_HUB_KEY` or `meshgate-control keys create NAME --role hub`.
//! 2. **Follow** on the thread that already rebuilds config snapshots:
//!    `let mut rx = watcher.subscribe(); while rx.changed().await.is_ok() { let v = rx.borrow().clone(); … }`
//!    (`tokio::sync::watch` needs no tokio runtime to await; a monoio task or a std thread with
//!    `futures::executor::block_on` works). Build the hub's immutable config snapshot from
//!    [`Snapshot`] and swap it between requests exactly like a config reload: sessions are kept.
//!    Every value on the channel has passed [`verify::open`] (hash, Ed25519 signature by the
//!    pinned key, format, version newer than the one held); a refused one never reaches the
//!    channel — the watcher logs `control snapshot refused; keeping the one held` with the reason
//!    and counts [`WatchStats::refused`]. Export [`WatchStats`] on `/metrics` (e.g.
//!    `meshgate_control_snapshot_version`, `_refused_total`, `_connected`).
//! 3. **Apply** a [`Snapshot`] (servers in the snapshot are governed by it; upstreams only in
//!    the hub's config file keep working as configured):
//!    - upstreams: each `catalog.servers[]` with `kind: http` and `federate: true` is an upstream
//!      (`name`, `endpoints` = replicas), added to the config file's (the file wins on a name
//!      clash, logged once). `federate: false` removes a server of that name from federation.
//!      `kind: edge` servers come from edge tunnels as today; the catalog gates their tools.
//!    - tools: for every tool an upstream lists, [`Snapshot::tool_verdict`]`(upstream, tool)`:
//!      `Active` → list; `Deprecated{sunset, replacement}` → list with a warning (prefix the
//!      description `DEPRECATED (sunset YYYY-MM-DD, use X): ` and set `_meta["meshgate/deprecated"]`);
//!      `Retired{replacement}` → not listed, a call answers `isError: true` with
//!      "tool X is retired; use Y" without contacting the upstream; `Hidden` → not listed,
//!      "unknown tool" on call (like a policy-hidden tool). Tools the snapshot does not know are
//!      `Hidden` and must be reported (step 4) so an operator can approve them.
//!    - kill switch: before forwarding a `tools/call`, `snapshot.killed(upstream, tool)`; when
//!      `Some(kill)`, answer `isError: true` naming `kill.reason` and do not contact the
//!      upstream. Calls already in flight may finish. Read the snapshot the worker holds now: it
//!      is swapped within milliseconds of the change, because the control plane answers the
//!      long-poll the moment it publishes (`tests/hub_follow.rs` measures 4-5 ms from the API
//!      call to a verified snapshot at three watching hubs).
//!    - edge revocations: on every swap, close tunnels for which
//!      `snapshot.edge_revoked(link.edge_id(), serial_hex)` holds, and refuse handshakes that
//!      match (the tunnel acceptor needs the client certificate's serial next to its CN;
//!      `Revocation::serial == None` revokes every certificate of that edge, which needs only the
//!      CN). The hub's `edge.ca` must be the control plane's edge CA (`GET /v1/edges/ca`, the CLI's
//!      `edge ca`), so only enrolled edges connect.
//!    - policy: `snapshot.policy` is a `governance::policy::PolicyConfig` as JSON
//!      (`serde_json::from_value`), `null` when none was applied; compile it like the config
//!      file's and use it instead. The control plane compiled it before publishing.
//! 4. **Report** through the watcher thread with [`Watcher::request`] (returns a
//!    `tokio::sync::oneshot::Receiver`, awaitable anywhere; failures are answers, never panics):
//!    - every ~5 s `POST /v1/hubs/{hub}/report`:
//!      `{"sessions":N,"tunnels":[{"edge":"e1","transport":"quic","since_ms":…}],
//!       "upstreams":[{"name":"files","up":true}],
//!       "kpi":{"tool_boot_ms":…,"reconnections":…,"cache_hits":…,"cache_misses":…,"calls":…,"errors":…}}`
//!      (counters are totals since start; the control plane computes rates for the console);
//!    - when an upstream's tool list changes: `POST /v1/hubs/{hub}/discovered`
//!      `{"server":"files","version":"<serverInfo.version>","tools":["read","write"]}`;
//!    - audit: ship the lines of the `governance::audit` log file exactly as written, in order,
//!      from the seq after the last accepted one: `POST /v1/audit`
//!      `{"hub":"<the AuditLog hub name>","key":"<audit verifying key, base64>","lines":["…"]}`.
//!      The answer's `head_seq` is the last accepted seq; 422 names the first bad line (the
//!      chain does not continue); 409 means another key than the pinned one (or a race: retry);
//!    - approvals: when the registry holds a call, `POST /v1/approvals` with the
//!      `governance::approval::ApprovalRequest` (its id and `expires_at` are the hub's; a retry
//!      with the same id is answered with the same approval), then long-poll
//!      `GET /v1/approvals/{id}?wait_ms=25000` until the answer's `decision` is not null: it is a
//!      `governance::approval::ApprovalDecision` to pass to `ApprovalRegistry::decide` (an
//!      `expired` one means the control plane's clock ran out first: expire it locally).
//!
//! `controlplane/tests/hub_follow.rs` plays this hub against a real `meshgate-control`.

#[cfg(feature = "enroll")]
pub mod enroll;
pub mod http;
pub mod snapshot;
pub mod verify;
pub mod watch;

pub use snapshot::{Kill, KillScope, Lifecycle, Snapshot, ToolVerdict};
pub use verify::{Verified, VerifyError};
pub use watch::{WatchConfig, WatchStats, Watcher};
