//! Test support: a real PostgreSQL server ([`pg`]) and the real `meshgate-control` binary
//! ([`control`]).
#![allow(dead_code, unreachable_pub)]

pub mod audit;
pub mod control;
pub mod pg;
