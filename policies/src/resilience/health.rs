//! Active health checks: what a probe is (an HTTP request expecting a status, or a TCP
//! connection), how often it runs, and the thresholds that turn an endpoint's run of probe
//! results into healthy or unhealthy. The gateway sends the probes; this module only counts.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::DurationSpec;

/// What a health probe does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// `GET path` on a connection of its own; healthy when the status is one of `expect_status`.
    #[default]
    Http,
    /// A TCP (and TLS, for a TLS upstream) connection; healthy when it is made.
    Tcp,
}

/// Active health checks of an upstream's endpoints (off unless configured). Probes never
/// count as attempts, and endpoints start healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// `http` (the default) or `tcp`.
    #[serde(default, rename = "type")]
    pub kind: ProbeKind,
    /// Path of the HTTP probe.
    #[serde(default = "default_path")]
    pub path: String,
    /// Statuses that mean healthy for the HTTP probe.
    #[serde(default = "default_expect_status")]
    #[schemars(length(min = 1))]
    pub expect_status: Vec<u16>,
    /// Time between two probes of one endpoint.
    #[serde(default = "default_interval")]
    pub interval: DurationSpec,
    /// How long a probe may take (connecting and answering); past it, it failed.
    #[serde(default = "default_timeout")]
    pub timeout: DurationSpec,
    /// Successful probes in a row that make an unhealthy endpoint healthy again.
    #[serde(default = "default_healthy_threshold")]
    #[schemars(range(min = 1))]
    pub healthy_threshold: u32,
    /// Failed probes in a row that make a healthy endpoint unhealthy (no traffic goes to it).
    #[serde(default = "default_unhealthy_threshold")]
    #[schemars(range(min = 1))]
    pub unhealthy_threshold: u32,
}

fn default_path() -> String {
    "/".into()
}
fn default_expect_status() -> Vec<u16> {
    vec![200]
}
fn default_interval() -> DurationSpec {
    DurationSpec::secs(5)
}
fn default_timeout() -> DurationSpec {
    DurationSpec::secs(1)
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// The health of one endpoint as its probes tell it.
#[derive(Debug)]
pub struct Health {
    healthy: AtomicBool,
    /// Probes in a row that disagree with the current state.
    streak: AtomicU32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            healthy: AtomicBool::new(true),
            streak: AtomicU32::new(0),
        }
    }
}

impl Health {
    /// Whether the endpoint takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Counts one probe result (probes of one endpoint run one at a time); returns the new state
    /// when it changed.
    pub fn record(&self, ok: bool, spec: &HealthCheckSpec) -> Option<bool> {
        let healthy = self.is_healthy();
        if ok == healthy {
            self.streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        let threshold = if healthy {
            spec.unhealthy_threshold
        } else {
            spec.healthy_threshold
        };
        if streak < threshold {
            return None;
        }
        self.streak.store(0, Ordering::Relaxed);
        self.healthy.store(ok, Ordering::Release);
        Some(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_turn_runs_of_probes_into_state_changes() {
        let spec = HealthCheckSpec {
            kind: ProbeKind::Http,
            path: "/health".into(),
            expect_status: vec![200],
            interval: DurationSpec::millis(50),
            timeout: DurationSpec::millis(20),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        };
        let h = Health::default();
        assert!(h.is_healthy());
        assert_eq!(h.record(false, &spec), None);
        assert_eq!(h.record(false, &spec), None);
        assert_eq!(h.record(true, &spec), None, "a success breaks the run");
        assert_eq!(h.record(false, &spec), None);
        assert_eq!(h.record(false, &spec), None);
        assert_eq!(h.record(false, &spec), Some(false));
        assert!(!h.is_healthy());
        assert_eq!(h.record(true, &spec), None);
        assert_eq!(h.record(true, &spec), Some(true));
        assert!(h.is_healthy());
    }
}
