//! Hub configuration: `raw` is what the YAML file (or the quick-start flags) says, `snapshot` is
//! the validated, immutable form with every reference resolved. Only [`Snapshot`] reaches the
//! request path; it is built once at start and shared by every worker behind an `Arc`.

pub mod raw;
pub mod snapshot;

pub use raw::{ClusterConfig, EdgeConfig, HubConfig, StoreConfig, UpstreamConfig};
pub use snapshot::{
    ConfigError, Driver, EdgeSettings, EraCell, GovSettings, Replica, ResolvedAddr, Snapshot,
    Upstream, UpstreamName,
};
