//! The in-process rate-limit counters: the TATs of every key, in a map split into shards with a
//! lock each, so concurrent decisions on different keys rarely wait for one another. Entries
//! whose buckets are full again carry no information and are swept out as time passes.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use super::CounterStore;
use super::gcra::{self, Decision, Gcra};
use crate::state::StoreError;

/// Shards of the map; a power of two well above the core counts the gateway runs on.
const SHARDS: usize = 64;

/// How often (µs) a shard drops entries whose buckets have refilled.
const SWEEP_INTERVAL_US: u64 = 10_000_000;

#[derive(Debug, Default)]
struct Shard {
    tats: HashMap<Box<str>, Box<[u64]>>,
    next_sweep: u64,
}

/// Keyed GCRA state kept in this process.
#[derive(Debug)]
pub struct LocalCounters {
    limits: Box<[Gcra]>,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl LocalCounters {
    /// An empty store for these limits (decided together, per key).
    pub fn new(limits: &[Gcra]) -> LocalCounters {
        LocalCounters {
            limits: limits.into(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &[Gcra] {
        &self.limits
    }

    /// Decides a request of `cost` units for `key` at monotonic time `now_us`.
    pub fn decide(&self, key: &str, now_us: u64, cost: u64) -> Decision {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        if now_us >= shard.next_sweep {
            shard
                .tats
                .retain(|_, tats| tats.iter().any(|&t| t > now_us));
            shard.next_sweep = now_us + SWEEP_INTERVAL_US;
        }
        if let Some(tats) = shard.tats.get_mut(key) {
            return gcra::decide(&self.limits, tats, now_us, cost);
        }
        let mut tats = vec![0; self.limits.len()].into_boxed_slice();
        let d = gcra::decide(&self.limits, &mut tats, now_us, cost);
        if d.allowed {
            // a refused first request changed nothing, so it needs no entry
            shard.tats.insert(key.into(), tats);
        }
        d
    }

    /// Keys currently holding state (tests, diagnostics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).tats.len())
            .sum()
    }

    /// Whether no key holds state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CounterStore for LocalCounters {
    /// Decides at `now_us`, in this process; never fails.
    fn decide(
        &self,
        key: &str,
        cost: u64,
        now_us: u64,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send {
        std::future::ready(Ok(LocalCounters::decide(self, key, now_us, cost)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_limited_independently_and_swept_once_refilled() {
        let store = LocalCounters::new(&[Gcra::new(2, 1_000_000, 2).unwrap()]);
        for key in ["a", "b"] {
            assert!(store.decide(key, 0, 1).allowed);
            assert!(store.decide(key, 0, 1).allowed);
            assert!(!store.decide(key, 0, 1).allowed);
        }
        for i in 0..100 {
            assert!(store.decide(&format!("k{i}"), 0, 1).allowed);
        }
        assert_eq!(store.len(), 102);
        // a minute later every bucket is full again: the first decision in each shard sweeps it
        // (and a refused request, costing more than the bucket, stores nothing itself)
        for key in ["a", "b"] {
            assert!(!store.decide(key, 60_000_000, 3).allowed);
        }
        for i in 0..100 {
            assert!(!store.decide(&format!("k{i}"), 60_000_000, 3).allowed);
        }
        assert!(store.is_empty());
    }

    #[test]
    fn a_refused_first_request_stores_nothing() {
        let store = LocalCounters::new(&[Gcra::new(1, 1_000_000, 1).unwrap()]);
        assert!(!store.decide("k", 0, 2).allowed);
        assert!(store.is_empty());
    }
}
