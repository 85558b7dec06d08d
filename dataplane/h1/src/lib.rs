//! HTTP/1.1 codec for the dataplane (placeholder: being written).
