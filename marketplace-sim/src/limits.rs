//! Rate limits: one token bucket per channel and operation, on tokio's clock (so a test with
//! paused time controls refills exactly).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::channel::{Channel, Operation};
use crate::lock::lock;
use crate::options::{Limit, MarketOptions};

/// How long a caller is told to wait when a bucket never refills (rate 0).
const NEVER: Duration = Duration::from_secs(3600);

/// What a bucket said about one call (or, peeked, about the next one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verdict {
    /// The call may proceed (a token was taken).
    pub(crate) allowed: bool,
    /// The bucket's limit.
    pub(crate) limit: Limit,
    /// Tokens left after this call (fractional).
    pub(crate) tokens: f64,
    /// How long until the next whole token is in the bucket (zero if there is one).
    pub(crate) next_token_in: Duration,
}

impl Verdict {
    /// Calls the bucket holds against its size, as Shopify counts them (`used/burst`).
    pub(crate) fn used(&self) -> u32 {
        let used = (f64::from(self.limit.burst) - self.tokens).ceil();
        // Clamped: tokens never exceed burst nor go below zero.
        used.clamp(0.0, f64::from(self.limit.burst)) as u32
    }
}

struct Bucket {
    limit: Limit,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(limit: Limit, now: Instant) -> Bucket {
        Bucket {
            limit,
            tokens: f64::from(limit.burst),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limit.rate).min(f64::from(self.limit.burst));
        self.at = now;
    }

    fn verdict(&self, allowed: bool) -> Verdict {
        let missing = 1.0 - self.tokens;
        let next_token_in = if missing <= 0.0 {
            Duration::ZERO
        } else if self.limit.rate > 0.0 {
            Duration::try_from_secs_f64(missing / self.limit.rate).unwrap_or(NEVER)
        } else {
            NEVER
        };
        Verdict {
            allowed,
            limit: self.limit,
            tokens: self.tokens,
            next_token_in,
        }
    }
}

/// Every bucket, indexed by channel and operation.
pub(crate) struct Limits {
    buckets: Mutex<Vec<Bucket>>,
}

fn slot(channel: Channel, operation: Operation) -> usize {
    channel.index() * Operation::ALL.len() + operation.index()
}

impl Limits {
    pub(crate) fn new(options: &MarketOptions) -> Limits {
        Limits {
            buckets: Mutex::new(Self::buckets(options)),
        }
    }

    fn buckets(options: &MarketOptions) -> Vec<Bucket> {
        let now = Instant::now();
        let mut buckets = Vec::new();
        for channel in Channel::ALL {
            for operation in Operation::ALL {
                debug_assert_eq!(buckets.len(), slot(channel, operation));
                buckets.push(Bucket::full(options.channel(channel).limit(operation), now));
            }
        }
        buckets
    }

    /// Takes a token for one call if there is one.
    pub(crate) fn take(&self, channel: Channel, operation: Operation) -> Verdict {
        let mut buckets = lock(&self.buckets);
        let bucket = &mut buckets[slot(channel, operation)];
        bucket.refill(Instant::now());
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.verdict(true)
        } else {
            bucket.verdict(false)
        }
    }

    /// The bucket's state without taking anything (for answers refused before the limit).
    pub(crate) fn peek(&self, channel: Channel, operation: Operation) -> Verdict {
        let mut buckets = lock(&self.buckets);
        let bucket = &mut buckets[slot(channel, operation)];
        bucket.refill(Instant::now());
        bucket.verdict(true)
    }

    /// Replaces one bucket's limit; the bucket starts full.
    pub(crate) fn set(&self, channel: Channel, operation: Operation, limit: Limit) {
        lock(&self.buckets)[slot(channel, operation)] = Bucket::full(limit, Instant::now());
    }

    pub(crate) fn get(&self, channel: Channel, operation: Operation) -> Limit {
        lock(&self.buckets)[slot(channel, operation)].limit
    }

    /// Every bucket back to the options' limits, full.
    pub(crate) fn reset(&self, options: &MarketOptions) {
        *lock(&self.buckets) = Self::buckets(options);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_passes_its_burst_then_refills_at_its_rate() {
        let mut options = MarketOptions::default();
        options.amazon.shipment = Limit::new(2.0, 3);
        let limits = Limits::new(&options);
        for _ in 0..3 {
            assert!(limits.take(Channel::Amazon, Operation::Shipment).allowed);
        }
        let refused = limits.take(Channel::Amazon, Operation::Shipment);
        assert!(!refused.allowed);
        assert_eq!(refused.next_token_in, Duration::from_millis(500));
        assert_eq!(refused.used(), 3);
        // Another operation and another channel have their own buckets.
        assert!(limits.take(Channel::Amazon, Operation::Inventory).allowed);
        assert!(limits.take(Channel::Walmart, Operation::Shipment).allowed);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limits.take(Channel::Amazon, Operation::Shipment).allowed);
        assert!(!limits.take(Channel::Amazon, Operation::Shipment).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_rate_never_refills() {
        let limits = Limits::new(&MarketOptions::default());
        limits.set(Channel::Ebay, Operation::Inventory, Limit::new(0.0, 1));
        assert!(limits.take(Channel::Ebay, Operation::Inventory).allowed);
        tokio::time::advance(Duration::from_secs(86_400)).await;
        let refused = limits.take(Channel::Ebay, Operation::Inventory);
        assert!(!refused.allowed);
        assert_eq!(refused.next_token_in, NEVER);
    }
}
