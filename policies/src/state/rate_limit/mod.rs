//! Rate-limit counters: the GCRA state of every key, behind [`CounterStore`], with an
//! in-process implementation ([`LocalCounters`]) and a Redis one ([`RedisCounters`], one script
//! call per decision) that make the same decisions from the same state. A policy holds the
//! [`Counters`] its `store` chose.

pub mod gcra;
pub mod local;
pub mod redis;

use std::future::Future;
use std::sync::Arc;

use super::StoreError;

pub use gcra::{Decision, Gcra, LimitOutcome, MAX_LIMITS};
pub use local::LocalCounters;
pub use redis::RedisCounters;

/// Counters that decide a request against every limit of its key at once: all admit it and
/// each spends its cost, or none does.
pub trait CounterStore: Send + Sync {
    /// Decides a request of `cost` units for `key`. `now_us` is the policy's monotonic time in
    /// microseconds; an implementation shared by several gateways may use a time of its own.
    fn decide(
        &self,
        key: &str,
        cost: u64,
        now_us: u64,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send;
}

/// The counters a policy chose with `store`.
#[derive(Debug)]
pub enum Counters {
    /// In this process (shared with the policy it replaced on reload, when the limits match).
    Local(Arc<LocalCounters>),
    /// On Redis.
    Redis(RedisCounters),
}

impl CounterStore for Counters {
    async fn decide(&self, key: &str, cost: u64, now_us: u64) -> Result<Decision, StoreError> {
        match self {
            Counters::Local(c) => CounterStore::decide(&**c, key, cost, now_us).await,
            // boxed: the Redis round trip's future is ~2.5 KiB, and inline it would size every
            // policy's request future, local decisions included (the chain boxes that future)
            Counters::Redis(c) => Box::pin(CounterStore::decide(c, key, cost, now_us)).await,
        }
    }
}
