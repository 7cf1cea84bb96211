//! The load-test harness and its parts: a load generator of our own (closed loop for
//! throughput, open loop at a fixed offered rate with latency measured from each request's
//! intended send time), the systems under test it starts, the scenario matrix, and the report
//! (table, JSON, SVG). The `loadbench` binary drives it; criterion micro benches live in
//! `benches/`.

pub mod latency;
pub mod loadgen;
pub mod orders;
pub mod procstat;
pub mod recipe;
pub mod report;
pub mod rotation;
pub mod scenarios;
pub mod schedule;
pub mod systems;
pub mod tokens;
