//! Passive outlier detection: an endpoint whose attempts fail `consecutive_failures` times in a
//! row is ejected (no attempts go to it) for a time that doubles with each repeat ejection, up
//! to a maximum. The upstream decides whether an ejection may happen at all, so that a share of
//! its endpoints always stays in use ([`max_ejected`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::DurationSpec;

/// Passive outlier detection on an upstream's endpoints (on by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetectionSpec {
    /// Whether endpoints are ejected at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Failed attempts in a row (connect failures, resets, timeouts, 5xx answers) that eject an
    /// endpoint.
    #[serde(default = "default_consecutive_failures")]
    #[schemars(range(min = 1))]
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; each repeat ejection of the same endpoint doubles it.
    #[serde(default = "default_base_ejection_time")]
    pub base_ejection_time: DurationSpec,
    /// The longest an ejection lasts.
    #[serde(default = "default_max_ejection_time")]
    pub max_ejection_time: DurationSpec,
    /// The most endpoints ejected at once, as a percentage of the upstream's endpoints. One
    /// endpoint may always be ejected when there are two or more, and never all of them.
    #[serde(default = "default_max_ejected_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub max_ejected_percent: u8,
}

fn yes() -> bool {
    true
}
fn default_consecutive_failures() -> u32 {
    5
}
fn default_base_ejection_time() -> DurationSpec {
    DurationSpec::secs(10)
}
fn default_max_ejection_time() -> DurationSpec {
    DurationSpec::secs(300)
}
fn default_max_ejected_percent() -> u8 {
    50
}

impl Default for OutlierDetectionSpec {
    fn default() -> Self {
        OutlierDetectionSpec {
            enabled: true,
            consecutive_failures: default_consecutive_failures(),
            base_ejection_time: default_base_ejection_time(),
            max_ejection_time: default_max_ejection_time(),
            max_ejected_percent: default_max_ejected_percent(),
        }
    }
}

/// How many of `endpoints` may be ejected at once: the percentage, at least one when there are
/// two or more, never all.
pub fn max_ejected(endpoints: usize, percent: u8) -> usize {
    if endpoints < 2 {
        return 0;
    }
    (endpoints * usize::from(percent) / 100).clamp(1, endpoints - 1)
}

/// The ejection state of one endpoint (lock-free: it is touched by every attempt).
#[derive(Debug, Default)]
pub struct Ejection {
    consecutive: AtomicU32,
    /// End of the current or last ejection, in ms since the origin, plus one (0: never).
    until_ms: AtomicU64,
    /// Ejections so far (the multiplier of the next one); forgotten after a quiet while.
    times: AtomicU32,
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl Ejection {
    /// Whether the endpoint is ejected at `now`.
    pub fn is_ejected(&self, now: Duration) -> bool {
        let until = self.until_ms.load(Ordering::Acquire);
        until != 0 && millis(now) + 1 < until
    }

    /// Time left of the current ejection.
    pub fn ejected_for(&self, now: Duration) -> Option<Duration> {
        let until = self.until_ms.load(Ordering::Acquire);
        let now = millis(now) + 1;
        (until != 0 && now < until).then(|| Duration::from_millis(until - now))
    }

    /// How many times the endpoint was ejected (since the count was last forgotten).
    pub fn times(&self) -> u32 {
        self.times.load(Ordering::Relaxed)
    }

    /// A successful attempt: the run of failures is over, and an endpoint that has stayed in
    /// use for `max_ejection_time` since its last ejection has its multiplier forgotten.
    pub fn on_success(&self, now: Duration, spec: &OutlierDetectionSpec) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        let until = self.until_ms.load(Ordering::Relaxed);
        if until != 0
            && self.times.load(Ordering::Relaxed) != 0
            && millis(now) + 1 >= until + millis(spec.max_ejection_time.0)
        {
            self.times.store(0, Ordering::Relaxed);
        }
    }

    /// A failed attempt; true when this failure reaches the threshold and the endpoint should
    /// be ejected (the caller checks the upstream's cap, then calls [`Ejection::eject`]).
    pub fn on_failure(&self, spec: &OutlierDetectionSpec) -> bool {
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        spec.enabled && n >= spec.consecutive_failures
    }

    /// Ejects the endpoint from `now`; returns how long for.
    pub fn eject(&self, now: Duration, spec: &OutlierDetectionSpec) -> Duration {
        let times = self.times.fetch_add(1, Ordering::Relaxed);
        let base = spec.base_ejection_time.0;
        let length = base
            .checked_mul(1u32 << times.min(20))
            .unwrap_or(spec.max_ejection_time.0)
            .min(spec.max_ejection_time.0.max(base));
        self.until_ms
            .store(millis(now + length) + 1, Ordering::Release);
        // the endpoint comes back with a clean slate: one more failure does not eject it again
        self.consecutive.store(0, Ordering::Relaxed);
        length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> OutlierDetectionSpec {
        OutlierDetectionSpec {
            enabled: true,
            consecutive_failures: 3,
            base_ejection_time: DurationSpec::millis(100),
            max_ejection_time: DurationSpec::millis(350),
            max_ejected_percent: 50,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_cap_keeps_some_endpoints_in_use() {
        assert_eq!(max_ejected(1, 100), 0);
        assert_eq!(max_ejected(2, 10), 1);
        assert_eq!(max_ejected(3, 50), 1);
        assert_eq!(max_ejected(3, 100), 2);
        assert_eq!(max_ejected(10, 50), 5);
        assert_eq!(max_ejected(4, 0), 1);
    }

    #[test]
    fn failures_in_a_row_eject_for_a_time_that_doubles_up_to_the_max() {
        let s = spec();
        let e = Ejection::default();
        assert!(!e.on_failure(&s));
        e.on_success(ms(0), &s);
        assert!(!e.on_failure(&s));
        assert!(!e.on_failure(&s));
        assert!(e.on_failure(&s));
        assert_eq!(e.eject(ms(1000), &s), ms(100));
        assert!(e.is_ejected(ms(1099)));
        assert!(!e.is_ejected(ms(1100)));
        for _ in 0..2 {
            assert!(!e.on_failure(&s), "the count restarts after an ejection");
        }
        assert!(e.on_failure(&s));
        assert_eq!(e.eject(ms(1200), &s), ms(200));
        assert_eq!(e.ejected_for(ms(1300)), Some(ms(100)));
        assert_eq!(e.eject(ms(2000), &s), ms(350), "capped");
        assert_eq!(e.times(), 3);
    }

    #[test]
    fn a_quiet_while_forgets_the_multiplier() {
        let s = spec();
        let e = Ejection::default();
        e.eject(ms(0), &s);
        e.on_success(ms(200), &s);
        assert_eq!(e.times(), 1);
        e.on_success(ms(100 + 350), &s);
        assert_eq!(e.times(), 0);
        assert_eq!(e.eject(ms(1000), &s), ms(100));
    }

    #[test]
    fn disabled_detection_never_asks_for_an_ejection() {
        let s = OutlierDetectionSpec {
            enabled: false,
            ..spec()
        };
        let e = Ejection::default();
        assert!((0..10).all(|_| !e.on_failure(&s)));
    }
}
