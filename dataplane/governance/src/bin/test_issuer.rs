//! Test-only OAuth issuer (filled in below).
fn main() {}
