//! `meshgate-edge` (not built yet).
fn main() {}
