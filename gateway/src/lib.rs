//! The retail API gateway: a Pingora reverse proxy driven by policy files. This crate is the
//! only one that touches Pingora: listeners, the proxy, upstream pools, admin endpoints,
//! reload and the command line.

pub mod access_log;
pub mod admin;
pub mod demo;
pub mod exchange;
pub mod framing;
pub mod ids;
pub mod metrics;
pub mod proxy;
pub mod respond;
pub mod server;
pub mod snapshot;
pub mod token;
pub mod upstream;
