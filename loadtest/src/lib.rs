//! `meshgate-load`: the MCP load harness and the fast mock upstream; also the test-support
//! library other crates' integration tests use to get a real MCP upstream on loopback.
//!
//! Parts:
//! - [`mock`]: the mock MCP Streamable HTTP server (both eras), startable in-process.
//! - [`client`]: a lean HTTP/1.1 MCP client (one session per connection).
//! - [`wire`]: the mock's response writing; all HTTP/1.1 and SSE parsing is the dataplane's
//!   `h1` codec.
//! - [`sys`]: high-resolution timer, open-file limit, socket tuning.
//! - [`driver`]: scenarios, open/closed loop, `--compare` interleaving.
//! - [`stats`]: HDR histograms and summaries; [`report`]: table, JSON, SVG.
//! - [`scenario`]: TOML scenario files; [`suite`]: the standard matrix.
//!
//! Example (a hub test):
//! ```no_run
//! use loadtest::mock::{MockConfig, MockServer, ServiceTime};
//! let mock = MockServer::start(MockConfig {
//!     service_time: ServiceTime::Fixed(std::time::Duration::from_millis(2)),
//!     ..MockConfig::default()
//! })?;
//! let upstream_url = mock.url(); // http://127.0.0.1:PORT/mcp
//! # let _ = upstream_url;
//! mock.shutdown();
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod client;
pub mod driver;
pub mod mock;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod suite;
pub mod sys;
pub mod wire;
