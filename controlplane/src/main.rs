//! `meshgate-control` binary (thin CLI over the `controlplane` library).
fn main() {}
