//! The end-to-end suite, one test binary: each module starts the real gateway binary, the ERP
//! simulator, redis-server or a browser on 127.0.0.1 for one area. One binary links the shared
//! harness once instead of once per area (`cargo test -p tests --test e2e ratelimit::`).

mod admin_auth;
mod auth;
mod bodies;
mod config;
mod contract_review;
mod dashboard;
mod deep_check;
mod delivery_redis;
mod demo;
mod deprecation;
mod ebay_signature;
mod edge_fuzz;
mod example_set;
mod framing;
mod idempotency;
mod kpis;
mod missing_fields;
mod mtls;
mod openapi;
mod outbound;
mod protocols;
mod ratelimit;
mod redis_harness;
mod redis_tls;
mod resilience;
mod routing;
mod status_page;
mod store_and_forward;
mod store_and_forward_redis;
mod tls;
mod traces;
mod transform;
mod upstream_errors;
mod upstream_tls;
