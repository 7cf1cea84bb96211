//! The retail API gateway: a Pingora reverse proxy driven by policy files. This crate is the
//! only one that touches Pingora: listeners, the proxy, the forwarding layer, admin endpoints,
//! reload and the command line.

pub mod access_log;
pub mod admin;
pub mod admin_auth;
pub mod admin_views;
pub mod answer;
pub mod buffered;
pub mod completion;
pub mod context;
pub mod deliveries_cli;
pub mod delivery;
#[cfg(feature = "demo")]
pub mod demo;
pub mod deprecation;
pub mod edge;
pub mod edge_layer;
pub mod forward;
pub mod framing;
pub mod governance_cli;
pub mod ids;
pub mod kpi;
pub mod metrics;
pub mod outbound_auth;
pub mod outcome;
pub mod pool_race;
pub mod proxy;
pub mod respond;
pub mod server;
pub mod snapshot;
pub mod status_page;
pub mod telemetry;
pub mod tls;
pub mod token;
