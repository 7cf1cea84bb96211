//! Retries and their budget: which requests may be repeated how often, and the cap on retries
//! as a share of requests over a sliding window, so a brownout of the upstream is not multiplied
//! by the gateway's own retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resilience::backoff::BackoffSpec;
use crate::units::DurationSpec;

/// Retries of requests that are safe to repeat: `GET` and `HEAD`, and requests on a route with an
/// `idempotency` policy (the gateway sends them with one `Idempotency-Key` on every attempt, so
/// the upstream can tell a repeat). A failed connection always moves on to the next endpoint,
/// whatever this says; nothing else is retried without this section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included, for a request that reached the upstream and failed
    /// (reset, timeout, or one of `on_status`).
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: u32,
    /// Upstream statuses that are retried.
    #[serde(default = "default_on_status")]
    pub on_status: Vec<u16>,
    /// Retries allowed as a share of requests within `budget_window` (0.2: at most one retry
    /// for five requests), on top of `budget_min_retries`.
    #[serde(default = "default_budget_ratio")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub budget_ratio: f64,
    /// Retries always allowed within `budget_window`, so a quiet upstream still gets them.
    #[serde(default = "default_budget_min_retries")]
    pub budget_min_retries: u32,
    /// The sliding window the budget counts over.
    #[serde(default = "default_budget_window")]
    pub budget_window: DurationSpec,
    /// The wait between attempts: exponential with full jitter.
    #[serde(default)]
    pub backoff: BackoffSpec,
    /// The longest upstream `Retry-After` the gateway waits for before retrying; an answer asking
    /// for longer is passed to the client as it is. No wait ever runs past the upstream's
    /// `total_timeout`.
    #[serde(default = "default_max_retry_after")]
    pub max_retry_after: DurationSpec,
}

fn default_max_attempts() -> u32 {
    3
}
fn default_on_status() -> Vec<u16> {
    vec![429, 500, 502, 503, 504]
}
fn default_budget_ratio() -> f64 {
    0.2
}
fn default_budget_min_retries() -> u32 {
    10
}
fn default_budget_window() -> DurationSpec {
    DurationSpec::secs(10)
}
fn default_max_retry_after() -> DurationSpec {
    DurationSpec::secs(2)
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            max_attempts: default_max_attempts(),
            on_status: default_on_status(),
            budget_ratio: default_budget_ratio(),
            budget_min_retries: default_budget_min_retries(),
            budget_window: default_budget_window(),
            backoff: BackoffSpec::default(),
            max_retry_after: default_max_retry_after(),
        }
    }
}

const BUCKETS: usize = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// The slot this bucket counts for, plus one (0: unused).
    slot: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// The retry budget of one upstream: requests and retries counted in ten buckets that slide
/// over the window. Lock-free; two threads rolling a bucket over at once may lose a count,
/// which only makes the budget a little more generous for that instant.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_retries: u64,
    slot_len: Duration,
    buckets: [Bucket; BUCKETS],
}

impl RetryBudget {
    /// A budget of `ratio` retries per request plus `min_retries`, over `window`.
    pub fn new(ratio: f64, min_retries: u32, window: Duration) -> Self {
        let window = window.max(Duration::from_millis(BUCKETS as u64));
        RetryBudget {
            ratio,
            min_retries: u64::from(min_retries),
            slot_len: window / BUCKETS as u32,
            buckets: Default::default(),
        }
    }

    fn slot(&self, now: Duration) -> u64 {
        (now.as_nanos() / self.slot_len.as_nanos().max(1)) as u64 + 1
    }

    fn bucket(&self, slot: u64) -> &Bucket {
        let b = &self.buckets[(slot % BUCKETS as u64) as usize];
        let seen = b.slot.load(Ordering::Acquire);
        if seen != slot
            && b.slot
                .compare_exchange(seen, slot, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.requests.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
        b
    }

    fn totals(&self, slot: u64) -> (u64, u64) {
        let oldest = slot.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| {
                let s = b.slot.load(Ordering::Acquire);
                s >= oldest && s <= slot
            })
            .fold((0, 0), |(q, r), b| {
                (
                    q + b.requests.load(Ordering::Relaxed),
                    r + b.retries.load(Ordering::Relaxed),
                )
            })
    }

    /// Counts a request (its first attempt).
    pub fn record_request(&self, now: Duration) {
        self.bucket(self.slot(now))
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_retry(&self, now: Duration) -> bool {
        let slot = self.slot(now);
        let (requests, retries) = self.totals(slot);
        let allowed = self.min_retries + (self.ratio * requests as f64) as u64;
        if retries >= allowed {
            return false;
        }
        self.bucket(slot).retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Retries taken and still allowed in the window at `now`, for the admin view.
    pub fn usage(&self, now: Duration) -> (u64, u64) {
        let (requests, retries) = self.totals(self.slot(now));
        let allowed = self.min_retries + (self.ratio * requests as f64) as u64;
        (retries, allowed.saturating_sub(retries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn retries_are_a_share_of_requests_plus_a_minimum() {
        let b = RetryBudget::new(0.2, 2, ms(1000));
        for _ in 0..10 {
            b.record_request(ms(5));
        }
        // 2 + 0.2 * 10 = 4
        let granted = (0..10).filter(|_| b.try_retry(ms(6))).count();
        assert_eq!(granted, 4);
        assert_eq!(b.usage(ms(7)), (4, 0));
        b.record_request(ms(8));
        b.record_request(ms(8));
        b.record_request(ms(8));
        b.record_request(ms(8));
        b.record_request(ms(8));
        assert!(b.try_retry(ms(9)), "five more requests earn one more retry");
        assert!(!b.try_retry(ms(9)));
    }

    #[test]
    fn the_window_slides() {
        let b = RetryBudget::new(0.0, 1, ms(100));
        assert!(b.try_retry(ms(0)));
        assert!(!b.try_retry(ms(50)));
        assert!(b.try_retry(ms(150)), "the old retry left the window");
    }

    #[test]
    fn a_budget_under_n_requests_bounds_total_attempts() {
        // the arithmetic the end-to-end brownout test relies on
        let b = RetryBudget::new(0.5, 3, Duration::from_secs(60));
        let mut attempts = 0;
        for i in 0..40u64 {
            b.record_request(ms(i));
            attempts += 1;
            // every request wants two retries
            for _ in 0..2 {
                if b.try_retry(ms(i)) {
                    attempts += 1;
                }
            }
        }
        assert!(attempts <= 40 + 20 + 3, "{attempts}");
    }
}
