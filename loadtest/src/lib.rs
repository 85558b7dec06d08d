//! `meshgate-load`: load harness and mock upstream (placeholder: being written).
