//! Metrics that policies record themselves (outcomes that are not plain rejections, store
//! health). The gateway registers them in its registry, so `/metrics` shows them; labels stay
//! bounded (policy names from the file, fixed reasons and outcomes).

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// Every policy-level metric.
#[derive(Debug, Clone)]
pub struct PolicyMetrics {
    /// `gateway_auth_failures_total{policy,reason}`.
    pub auth_failures: IntCounterVec,
    /// `gateway_ratelimit_store_errors_total{policy,kind}`.
    pub ratelimit_store_errors: IntCounterVec,
    /// `gateway_ratelimit_degraded{policy}`: 1 while a limiter runs on its fallback.
    pub ratelimit_degraded: IntGaugeVec,
    /// `gateway_idempotency_total{policy,outcome}`.
    pub idempotency: IntCounterVec,
    /// `gateway_idempotency_store_errors_total{policy,kind}`.
    pub idempotency_store_errors: IntCounterVec,
    /// `gateway_jwks_refreshes_total{policy,outcome}`: fetches of an identity provider's key
    /// set (`success`, `failure`; after a failure the last good set keeps serving).
    pub jwks_refreshes: IntCounterVec,
}

impl PolicyMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.auth_failures.clone()))?;
        registry.register(Box::new(m.ratelimit_store_errors.clone()))?;
        registry.register(Box::new(m.ratelimit_degraded.clone()))?;
        registry.register(Box::new(m.idempotency.clone()))?;
        registry.register(Box::new(m.idempotency_store_errors.clone()))?;
        registry.register(Box::new(m.jwks_refreshes.clone()))?;
        Ok(m)
    }

    /// Metrics registered nowhere (offline compiles, unit tests).
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Ok(PolicyMetrics {
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "gateway_auth_failures_total",
                    "Requests refused by an authentication policy, by policy and reason.",
                ),
                &["policy", "reason"],
            )?,
            ratelimit_store_errors: IntCounterVec::new(
                Opts::new(
                    "gateway_ratelimit_store_errors_total",
                    "Rate-limit decisions the shared store could not make, by policy and kind.",
                ),
                &["policy", "kind"],
            )?,
            ratelimit_degraded: IntGaugeVec::new(
                Opts::new(
                    "gateway_ratelimit_degraded",
                    "1 while a rate limit runs on its store-failure behaviour instead of the shared store.",
                ),
                &["policy"],
            )?,
            idempotency: IntCounterVec::new(
                Opts::new(
                    "gateway_idempotency_total",
                    "Idempotency decisions, by policy and outcome.",
                ),
                &["policy", "outcome"],
            )?,
            idempotency_store_errors: IntCounterVec::new(
                Opts::new(
                    "gateway_idempotency_store_errors_total",
                    "Idempotency store calls that failed, by policy and kind.",
                ),
                &["policy", "kind"],
            )?,
            jwks_refreshes: IntCounterVec::new(
                Opts::new(
                    "gateway_jwks_refreshes_total",
                    "Fetches of an identity provider's JWKS, by policy and outcome.",
                ),
                &["policy", "outcome"],
            )?,
        })
    }
}

impl Default for PolicyMetrics {
    fn default() -> Self {
        // building metric descriptors with fixed, valid names cannot fail
        Self::unregistered()
            .unwrap_or_else(|e| panic!("policy metric definitions are invalid: {e}"))
    }
}
