//! Upstream resilience decisions, apart from any I/O: the circuit breaker, passive outlier
//! ejection, active health-check thresholds, the retry budget, backoff and rate pacing. The gateway's
//! forwarding layer keeps one of each per endpoint or per upstream and feeds them outcomes with
//! the time they happened; these types only decide. Time is a [`std::time::Duration`] since an
//! arbitrary monotonic origin, passed in by the caller, so tests drive them with explicit
//! instants and never sleep.

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod ejection;
pub mod health;
pub mod pacing;
