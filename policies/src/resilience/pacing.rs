//! A rate cap on what an upstream is sent: attempts are spaced `per / rate` apart (GCRA's
//! virtual scheduling, with an optional burst), and an attempt whose turn is further away than
//! the caller may wait is refused instead of queued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::DurationSpec;

/// The most attempts sent to an upstream per period, by this gateway instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaxRateSpec {
    /// Attempts per `per`.
    #[schemars(range(min = 1))]
    pub rate: u32,
    /// The period, e.g. `1s`.
    pub per: DurationSpec,
    /// Attempts that may go at once after a quiet while (1: evenly spaced).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

/// The pacer of one upstream (lock-free: one compare-and-swap per attempt).
#[derive(Debug)]
pub struct Pacer {
    emission_ns: u64,
    tolerance_ns: u64,
    /// The theoretical arrival time of the next attempt, in ns since the origin.
    tat_ns: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Pacer {
    /// A pacer for `spec` (a zero rate or period is refused by the compiler).
    pub fn new(spec: &MaxRateSpec) -> Self {
        let emission = nanos(spec.per.0) / u64::from(spec.rate.max(1));
        Pacer {
            emission_ns: emission.max(1),
            tolerance_ns: emission.saturating_mul(u64::from(spec.burst.max(1)) - 1),
            tat_ns: AtomicU64::new(0),
        }
    }

    /// Reserves the next turn at `now`: `Ok(wait)` until it comes (zero when it is now), or
    /// `Err(wait)` when that is longer than `max_wait` (nothing is reserved then).
    pub fn reserve(&self, now: Duration, max_wait: Duration) -> Result<Duration, Duration> {
        let now = nanos(now);
        let mut tat = self.tat_ns.load(Ordering::Acquire);
        loop {
            let go = tat.saturating_sub(self.tolerance_ns).max(now);
            let wait = Duration::from_nanos(go - now);
            if wait > max_wait {
                return Err(wait);
            }
            let next = tat.max(now) + self.emission_ns;
            match self
                .tat_ns
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(wait),
                Err(seen) => tat = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn attempts_are_spaced_and_a_turn_too_far_away_is_refused() {
        let p = Pacer::new(&MaxRateSpec {
            rate: 10,
            per: DurationSpec::secs(1),
            burst: 1,
        });
        assert_eq!(p.reserve(ms(1000), ms(500)), Ok(ms(0)));
        assert_eq!(p.reserve(ms(1000), ms(500)), Ok(ms(100)));
        assert_eq!(p.reserve(ms(1000), ms(500)), Ok(ms(200)));
        assert_eq!(
            p.reserve(ms(1000), ms(150)),
            Err(ms(300)),
            "refused, not reserved"
        );
        assert_eq!(p.reserve(ms(1050), ms(500)), Ok(ms(250)));
        // after a quiet while the next one goes at once
        assert_eq!(p.reserve(ms(5000), ms(0)), Ok(ms(0)));
    }

    #[test]
    fn a_burst_goes_at_once_then_the_rest_is_spaced() {
        let p = Pacer::new(&MaxRateSpec {
            rate: 4,
            per: DurationSpec::secs(1),
            burst: 3,
        });
        for _ in 0..3 {
            assert_eq!(p.reserve(ms(0), ms(0)), Ok(ms(0)));
        }
        assert_eq!(p.reserve(ms(0), ms(1000)), Ok(ms(250)));
    }
}
