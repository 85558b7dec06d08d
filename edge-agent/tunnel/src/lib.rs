//! The edge tunnel (not built yet): mutual-TLS QUIC dialed by `meshgate-edge`, TLS over TCP as
//! the fallback, the hub opening one stream per request.
