//! The generic cell rate algorithm (GCRA) both rate-limit backends run, in whole microseconds.
//! The Redis script (`redis.rs`) is a line-by-line transcription of [`decide`]; the two are
//! checked against each other on the same sequence of requests, so one policy behaves the
//! same on either backend.
//!
//! Per key and limit only one number is kept: the theoretical arrival time (TAT), the instant
//! at which the bucket would be full again. A request of `cost` units is admitted when, after
//! adding `cost × interval` to the TAT, the TAT is at most `burst × interval` ahead of now.

/// Most limits one policy may decide together (they share one stored record per key).
pub const MAX_LIMITS: usize = 8;

/// Largest bucket, in microseconds of replenishment (about 35 years). Keeps every value the
/// Redis script handles below 2^53, where Lua's numbers are still exact integers.
pub const MAX_CAPACITY_US: u64 = 1 << 50;

const MICROS_PER_SEC: u64 = 1_000_000;

/// One limit: a unit replenishes every `interval` microseconds, up to `burst` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Microseconds one unit takes to replenish (the emission interval).
    pub interval: u64,
    /// Units admitted at once from a full bucket.
    pub burst: u64,
}

impl Gcra {
    /// `rate` units per `per_us` microseconds, with a bucket of `burst` units. The interval is
    /// rounded up to whole microseconds, so the limit never admits more than configured.
    pub fn new(rate: u64, per_us: u64, burst: u64) -> Result<Gcra, String> {
        if rate == 0 {
            return Err("rate must be at least 1".into());
        }
        if burst == 0 {
            return Err("burst must be at least 1".into());
        }
        if per_us < rate {
            return Err(format!(
                "rate {rate} per {per_us}µs is finer than one unit per microsecond"
            ));
        }
        let g = Gcra {
            interval: per_us.div_ceil(rate),
            burst,
        };
        g.check()?;
        Ok(g)
    }

    fn check(&self) -> Result<(), String> {
        match self.interval.checked_mul(self.burst) {
            Some(c) if c <= MAX_CAPACITY_US => Ok(()),
            _ => Err("burst × (per / rate) is longer than 35 years".into()),
        }
    }

    /// The bucket in microseconds of replenishment (`burst × interval`).
    pub fn capacity(&self) -> u64 {
        self.interval * self.burst
    }

    /// The window `w` of a `RateLimit-Policy` header: seconds the full bucket takes to
    /// replenish, rounded up (so `q` units per `w` seconds never overstates the limit).
    pub fn window_secs(&self) -> u64 {
        self.capacity().div_ceil(MICROS_PER_SEC).max(1)
    }

    /// This limit shared out among `instances` gateways that each decide alone: each replenishes
    /// `instances` times slower and holds `burst / instances` units (at least one).
    pub fn divided(&self, instances: u64) -> Result<Gcra, String> {
        let instances = instances.max(1);
        let g = Gcra {
            interval: self
                .interval
                .checked_mul(instances)
                .ok_or("the limit divided by instances is too small")?,
            burst: (self.burst / instances).max(1),
        };
        g.check()?;
        Ok(g)
    }
}

/// What one limit looked like when a request was decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOutcome {
    /// Whole units left after this request (`r` of the `RateLimit` header).
    pub remaining: u64,
    /// Microseconds until the bucket is full again (`t` of the `RateLimit` header).
    pub reset_us: u64,
    /// Microseconds until this request could be admitted; 0 when this limit allows it.
    pub retry_us: u64,
}

impl LimitOutcome {
    /// `t`: seconds until the bucket is full again, rounded up.
    pub fn reset_secs(&self) -> u64 {
        self.reset_us.div_ceil(MICROS_PER_SEC)
    }
}

/// A decision over every limit of a policy: admitted by all, or by none (a request refused by
/// one limit spends nothing from the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted.
    pub allowed: bool,
    outcomes: [LimitOutcome; MAX_LIMITS],
    len: usize,
}

impl Decision {
    /// A decision from per-limit outcomes (at most [`MAX_LIMITS`]; extra ones are dropped).
    pub fn new(allowed: bool, outcomes: &[LimitOutcome]) -> Decision {
        let mut d = Decision {
            allowed,
            outcomes: [LimitOutcome::default(); MAX_LIMITS],
            len: outcomes.len().min(MAX_LIMITS),
        };
        d.outcomes[..d.len].copy_from_slice(&outcomes[..d.len]);
        d
    }

    /// Each limit's outcome, in the policy's order.
    pub fn limits(&self) -> &[LimitOutcome] {
        &self.outcomes[..self.len]
    }

    /// `Retry-After` in whole seconds (rounded up, at least 1) for a refused request; 0 for an
    /// admitted one.
    pub fn retry_after_secs(&self) -> u64 {
        if self.allowed {
            return 0;
        }
        let us = self.limits().iter().map(|o| o.retry_us).max().unwrap_or(0);
        us.div_ceil(MICROS_PER_SEC).max(1)
    }
}

/// Decides a request of `cost` units at `now` (µs) against `limits`, whose stored TATs are
/// `tats` (0 = nothing stored). The TATs are advanced only when every limit admits it.
pub fn decide(limits: &[Gcra], tats: &mut [u64], now: u64, cost: u64) -> Decision {
    let n = limits.len().min(tats.len()).min(MAX_LIMITS);
    let mut allowed = true;
    for i in 0..n {
        let tat = tats[i].max(now);
        if tat + cost * limits[i].interval - now > limits[i].capacity() {
            allowed = false;
        }
    }
    let mut outcomes = [LimitOutcome::default(); MAX_LIMITS];
    for i in 0..n {
        let g = limits[i];
        let cap = g.capacity();
        let tat = tats[i].max(now);
        let next = tat + cost * g.interval;
        outcomes[i] = if allowed {
            tats[i] = next;
            LimitOutcome {
                remaining: (cap - (next - now)) / g.interval,
                reset_us: next - now,
                retry_us: 0,
            }
        } else {
            // a limit made smaller by a reload may find its TAT beyond the new capacity
            LimitOutcome {
                remaining: cap.saturating_sub(tat - now) / g.interval,
                reset_us: tat - now,
                retry_us: (next - now).saturating_sub(cap),
            }
        };
    }
    Decision::new(allowed, &outcomes[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = MICROS_PER_SEC;

    #[test]
    fn a_full_bucket_admits_exactly_burst_then_one_per_interval() {
        // 2 per second, bucket of 40 (Shopify's REST limit)
        let g = Gcra::new(2, S, 40).unwrap();
        assert_eq!(g.interval, 500_000);
        assert_eq!(g.window_secs(), 20);
        let mut tat = [0];
        let admitted = (0..100)
            .filter(|_| decide(&[g], &mut tat, 0, 1).allowed)
            .count();
        assert_eq!(admitted, 40);
        let d = decide(&[g], &mut tat, 0, 1);
        assert_eq!(d.limits()[0].retry_us, 500_000);
        assert_eq!(d.retry_after_secs(), 1);
        // after 1.2 s, two units have replenished (not 2.4)
        let admitted = (0..10)
            .filter(|_| decide(&[g], &mut tat, 1_200_000, 1).allowed)
            .count();
        assert_eq!(admitted, 2);
    }

    #[test]
    fn outcomes_report_remaining_reset_and_retry() {
        // 5 per hour
        let g = Gcra::new(5, 3600 * S, 5).unwrap();
        let mut tat = [0];
        let d = decide(&[g], &mut tat, 10, 1);
        assert!(d.allowed);
        assert_eq!(
            d.limits()[0],
            LimitOutcome {
                remaining: 4,
                reset_us: 720 * S,
                retry_us: 0
            }
        );
        for _ in 0..4 {
            assert!(decide(&[g], &mut tat, 10, 1).allowed);
        }
        let d = decide(&[g], &mut tat, 10, 1);
        assert!(!d.allowed);
        assert_eq!(
            d.limits()[0],
            LimitOutcome {
                remaining: 0,
                reset_us: 3600 * S,
                retry_us: 720 * S
            }
        );
        assert_eq!(d.retry_after_secs(), 720);
        assert_eq!(d.limits()[0].reset_secs(), 3600);
    }

    #[test]
    fn weights_spend_several_units_and_a_refusal_spends_nothing() {
        let g = Gcra::new(10, S, 10).unwrap();
        let mut tat = [0];
        assert!(decide(&[g], &mut tat, 0, 4).allowed);
        assert!(decide(&[g], &mut tat, 0, 4).allowed);
        let d = decide(&[g], &mut tat, 0, 4);
        assert!(!d.allowed);
        assert_eq!(d.limits()[0].remaining, 2);
        // the refused request took nothing: two single units still pass
        assert!(decide(&[g], &mut tat, 0, 2).allowed);
        assert!(!decide(&[g], &mut tat, 0, 1).allowed);
    }

    #[test]
    fn several_limits_admit_together_or_not_at_all() {
        let second = Gcra::new(3, S, 3).unwrap();
        let daily = Gcra::new(5, 86_400 * S, 5).unwrap();
        let limits = [second, daily];
        let mut tats = [0, 0];
        let mut admitted = 0;
        for t in 0..10 {
            for _ in 0..3 {
                if decide(&limits, &mut tats, t * S, 1).allowed {
                    admitted += 1;
                }
            }
        }
        assert_eq!(admitted, 5, "the daily quota caps the per-second limit");
        let d = decide(&limits, &mut tats, 10 * S, 1);
        assert!(!d.allowed);
        // the per-second limit would allow it and reports its full bucket
        assert_eq!(d.limits()[0].remaining, 3);
        assert_eq!(d.limits()[0].retry_us, 0);
        assert_eq!(d.limits()[1].remaining, 0);
    }

    #[test]
    fn intervals_round_up_and_bad_limits_are_refused() {
        assert_eq!(Gcra::new(3, S, 3).unwrap().interval, 333_334);
        assert!(Gcra::new(0, S, 1).is_err());
        assert!(Gcra::new(1, S, 0).is_err());
        assert!(Gcra::new(2_000_000, S, 1).is_err());
        assert!(Gcra::new(1, 86_400 * S, 1_000_000).is_err());
        let g = Gcra::new(60, 60 * S, 10).unwrap();
        assert_eq!(
            g.divided(4).unwrap(),
            Gcra {
                interval: 4 * S,
                burst: 2
            }
        );
        assert_eq!(g.divided(20).unwrap().burst, 1);
    }
}
