//! Criterion benches for the dataplane hot path live in `benches/benches/`; this library is empty.
