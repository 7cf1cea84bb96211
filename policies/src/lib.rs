//! Edge policies and the policy-file model of the gateway.
pub mod clock;
pub mod compile;
pub mod error;
pub mod fetch;
pub mod file_schema;
pub mod kinds;
pub mod metrics;
pub mod pipeline;
pub mod problem;
pub mod route;
pub mod secret;
pub mod source;
pub mod spec;
pub mod store;
pub mod units;
