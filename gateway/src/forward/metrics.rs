//! The forwarding layer's metrics: attempts per endpoint (health probes excluded), failures by
//! kind, retries by reason and the retries not made, endpoint health, ejections and circuit
//! state, requests in flight and waiting per upstream, and the latency of each attempt.
//! Labels are upstream names and endpoint addresses from the policy file: bounded.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::forward::error::UpstreamError;

/// Every metric of the forwarding layer.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    /// `gateway_upstream_errors_total{upstream,kind}`.
    pub errors: IntCounterVec,
    /// `gateway_upstream_attempts_total{upstream,endpoint}`: requests sent (or tried) to an
    /// endpoint; health probes are not counted.
    pub attempts: IntCounterVec,
    /// `gateway_upstream_retries_total{upstream,reason}`.
    pub retries: IntCounterVec,
    /// `gateway_upstream_retries_skipped_total{upstream,reason}`: retries a rule refused
    /// (`budget`, `max_attempts`, `deadline`, `retry_after`).
    pub retries_skipped: IntCounterVec,
    /// `gateway_upstream_endpoint_healthy{upstream,endpoint}`.
    pub healthy: IntGaugeVec,
    /// `gateway_upstream_endpoint_ejected{upstream,endpoint}`.
    pub ejected: IntGaugeVec,
    /// `gateway_upstream_ejections_total{upstream,endpoint}`.
    pub ejections: IntCounterVec,
    /// `gateway_upstream_circuit_open{upstream,endpoint}`: 1 while the circuit is not closed.
    pub circuit_open: IntGaugeVec,
    /// `gateway_upstream_circuit_transitions_total{upstream,endpoint,to}`.
    pub circuit_transitions: IntCounterVec,
    /// `gateway_upstream_health_checks_total{upstream,endpoint,result}`.
    pub health_checks: IntCounterVec,
    /// `gateway_upstream_in_flight{upstream}`.
    pub in_flight: IntGaugeVec,
    /// `gateway_upstream_queued{upstream}`: requests waiting for a `max_in_flight` slot.
    pub queued: IntGaugeVec,
    /// `gateway_upstream_attempt_duration_seconds{upstream}`: from the start of an attempt to
    /// the upstream's response head (or the failure).
    pub duration: HistogramVec,
}

impl UpstreamMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels)
        };
        let m = UpstreamMetrics {
            errors: counter(
                "gateway_upstream_errors_total",
                "Failed upstream attempts and refusals, by upstream and kind.",
                &["upstream", "kind"],
            )?,
            attempts: counter(
                "gateway_upstream_attempts_total",
                "Attempts sent (or tried) to each endpoint; health probes excluded.",
                &["upstream", "endpoint"],
            )?,
            retries: counter(
                "gateway_upstream_retries_total",
                "Further attempts of a request, by upstream and reason (connect, status, reset, timeout, stale_connection).",
                &["upstream", "reason"],
            )?,
            retries_skipped: counter(
                "gateway_upstream_retries_skipped_total",
                "Retries a rule refused, by upstream and reason (budget, max_attempts, deadline, retry_after).",
                &["upstream", "reason"],
            )?,
            healthy: gauge(
                "gateway_upstream_endpoint_healthy",
                "1 while an endpoint passes its active health checks (always 1 without them).",
                &["upstream", "endpoint"],
            )?,
            ejected: gauge(
                "gateway_upstream_endpoint_ejected",
                "1 while an endpoint is ejected by outlier detection.",
                &["upstream", "endpoint"],
            )?,
            ejections: counter(
                "gateway_upstream_ejections_total",
                "Times an endpoint was ejected by outlier detection.",
                &["upstream", "endpoint"],
            )?,
            circuit_open: gauge(
                "gateway_upstream_circuit_open",
                "1 while an endpoint's circuit breaker is open or half-open.",
                &["upstream", "endpoint"],
            )?,
            circuit_transitions: counter(
                "gateway_upstream_circuit_transitions_total",
                "Circuit breaker state changes, by the state entered (open, half_open, closed).",
                &["upstream", "endpoint", "to"],
            )?,
            health_checks: counter(
                "gateway_upstream_health_checks_total",
                "Active health probes, by result (success, failure).",
                &["upstream", "endpoint", "result"],
            )?,
            in_flight: gauge(
                "gateway_upstream_in_flight",
                "Requests being exchanged with the upstream now.",
                &["upstream"],
            )?,
            queued: gauge(
                "gateway_upstream_queued",
                "Requests waiting for a max_in_flight slot of the upstream.",
                &["upstream"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "gateway_upstream_attempt_duration_seconds",
                    "Time from the start of an upstream attempt to its response head or failure.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ]),
                &["upstream"],
            )?,
        };
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.attempts.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.retries_skipped.clone()))?;
        registry.register(Box::new(m.healthy.clone()))?;
        registry.register(Box::new(m.ejected.clone()))?;
        registry.register(Box::new(m.ejections.clone()))?;
        registry.register(Box::new(m.circuit_open.clone()))?;
        registry.register(Box::new(m.circuit_transitions.clone()))?;
        registry.register(Box::new(m.health_checks.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.queued.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        Ok(m)
    }

    /// The handles one upstream uses, resolved once so the hot path does no label lookups.
    pub fn for_upstream(&self, upstream: &str) -> PoolMetrics {
        let errors = UpstreamError::KINDS.map(|k| self.errors.with_label_values(&[upstream, k]));
        let retries = RETRY_REASONS.map(|r| self.retries.with_label_values(&[upstream, r]));
        let skipped = SKIP_REASONS.map(|r| self.retries_skipped.with_label_values(&[upstream, r]));
        PoolMetrics {
            errors,
            retries,
            skipped,
            in_flight: self.in_flight.with_label_values(&[upstream]),
            queued: self.queued.with_label_values(&[upstream]),
            duration: self.duration.with_label_values(&[upstream]),
        }
    }

    /// The handles of one endpoint.
    pub fn for_endpoint(&self, upstream: &str, endpoint: &str) -> EndpointMetrics {
        let labels = [upstream, endpoint];
        let transition = |to: &str| {
            self.circuit_transitions
                .with_label_values(&[upstream, endpoint, to])
        };
        EndpointMetrics {
            attempts: self.attempts.with_label_values(&labels),
            healthy: self.healthy.with_label_values(&labels),
            ejected: self.ejected.with_label_values(&labels),
            ejections: self.ejections.with_label_values(&labels),
            circuit_open: self.circuit_open.with_label_values(&labels),
            to_open: transition("open"),
            to_half_open: transition("half_open"),
            to_closed: transition("closed"),
            probe_ok: self
                .health_checks
                .with_label_values(&[upstream, endpoint, "success"]),
            probe_failed: self
                .health_checks
                .with_label_values(&[upstream, endpoint, "failure"]),
        }
    }
}

/// Reasons of `gateway_upstream_retries_total`.
pub const RETRY_REASONS: [&str; 5] = ["connect", "status", "reset", "timeout", "stale_connection"];
/// Reasons of `gateway_upstream_retries_skipped_total`.
pub const SKIP_REASONS: [&str; 4] = ["budget", "max_attempts", "deadline", "retry_after"];

/// Label-resolved handles of one upstream.
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    errors: [IntCounter; UpstreamError::KINDS.len()],
    retries: [IntCounter; RETRY_REASONS.len()],
    skipped: [IntCounter; SKIP_REASONS.len()],
    /// Requests in flight.
    pub in_flight: IntGauge,
    /// Requests waiting for a slot.
    pub queued: IntGauge,
    /// Attempt latency.
    pub duration: Histogram,
}

impl PoolMetrics {
    /// Counts a failure.
    pub fn error(&self, e: &UpstreamError) {
        if let Some(i) = UpstreamError::KINDS.iter().position(|k| *k == e.kind()) {
            self.errors[i].inc();
        }
    }

    /// Counts a retry.
    pub fn retry(&self, reason: &str) {
        if let Some(i) = RETRY_REASONS.iter().position(|r| *r == reason) {
            self.retries[i].inc();
        }
    }

    /// Counts a retry not made.
    pub fn skipped(&self, reason: &str) {
        if let Some(i) = SKIP_REASONS.iter().position(|r| *r == reason) {
            self.skipped[i].inc();
        }
    }
}

/// Label-resolved handles of one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointMetrics {
    /// Attempts.
    pub attempts: IntCounter,
    /// Health gauge.
    pub healthy: IntGauge,
    /// Ejection gauge.
    pub ejected: IntGauge,
    /// Ejections.
    pub ejections: IntCounter,
    /// Circuit gauge.
    pub circuit_open: IntGauge,
    /// Transitions to open.
    pub to_open: IntCounter,
    /// Transitions to half-open.
    pub to_half_open: IntCounter,
    /// Transitions to closed.
    pub to_closed: IntCounter,
    /// Successful probes.
    pub probe_ok: IntCounter,
    /// Failed probes.
    pub probe_failed: IntCounter,
}
