//! meshgate dataplane (placeholder).
