//! `meshgate-control`: the control plane of a meshgate fleet (DESIGN.md §2, §8).
//!
//! Off the request path: hubs serve from the last snapshot they hold and never wait on this
//! service. Modules:
//! - [`store`]: the storage trait and its SQL implementation (SQLite embedded, PostgreSQL HA).
//! - [`interim`]: policy / approval / audit types until the shared `governance` crate lands.

pub mod interim;
pub mod store;
