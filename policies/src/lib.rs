//! Edge policies and the policy-file model of the gateway. A policy file (`spec`) is compiled by
//! `compile` into the runtime `model` the gateway serves from; the `kinds` of policy run the
//! phases of `pipeline` in each route's `chain`, and keep their state behind `state`'s
//! interfaces (in process or on Redis).
pub mod admin_auth;
pub mod background;
pub mod chain;
pub mod clock;
pub mod compile;
pub mod credentials;
pub mod deprecation;
pub mod env;
pub mod error;
pub mod fanout;
pub mod fetch;
pub mod file_schema;
pub mod kinds;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod problem;
pub mod queue;
pub mod resilience;
pub mod route;
pub mod secret;
pub mod source;
pub mod spec;
pub mod state;
pub mod traces;
pub mod units;
pub mod upstream;
