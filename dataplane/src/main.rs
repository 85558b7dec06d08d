//! `meshgate` binary.
fn main() {}
