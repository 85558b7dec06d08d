//! `meshgate-load` binary (placeholder while the driver is written).
fn main() {}
