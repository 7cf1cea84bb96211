//! Metrics that policies record themselves (outcomes that are not plain rejections, store
//! health). Each kind declares its own next to its code (its `PolicyKind::Metrics`), and
//! `kinds::PolicyMetrics` gathers them; the gateway registers them in its registry, so
//! `/metrics` shows them. What several kinds record together lives here. Labels stay bounded
//! (policy names from the file, fixed reasons and outcomes).

/// The `channel` label of requests, deliveries and events without a channel.
pub const NO_CHANNEL: &str = "none";

use prometheus::{IntCounterVec, Opts, Registry};

/// The metrics of one policy kind: made once per gateway, before any policy compiles, and
/// registered in its registry; a kind's compile step resolves the labelled series it records.
pub trait KindMetrics: Clone + Send + Sync + std::fmt::Debug + Sized + 'static {
    /// Makes the metrics; `shared` holds the ones several kinds record.
    fn new(shared: &SharedMetrics) -> Result<Self, prometheus::Error>;

    /// Registers the metrics this kind alone owns.
    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error>;
}

/// A kind that records no metrics of its own.
impl KindMetrics for () {
    fn new(_: &SharedMetrics) -> Result<Self, prometheus::Error> {
        Ok(())
    }

    fn register(&self, _: &Registry) -> Result<(), prometheus::Error> {
        Ok(())
    }
}

/// Metrics several kinds record, registered once.
#[derive(Debug, Clone)]
pub struct SharedMetrics {
    /// `gateway_auth_failures_total{policy,reason}`: requests refused by an authentication
    /// policy (`jwt`, `webhook_signature`).
    pub auth_failures: IntCounterVec,
}

impl SharedMetrics {
    /// Makes the metrics, registered nowhere yet.
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(SharedMetrics {
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "gateway_auth_failures_total",
                    "Requests refused by an authentication policy, by policy and reason.",
                ),
                &["policy", "reason"],
            )?,
        })
    }

    /// Registers them in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.auth_failures.clone()))
    }
}
