//! The in-process idempotency records: claims and stored responses per key, in a map split into
//! shards with a lock each (never held across an await). Bounded: past `max_entries` a shard
//! first drops what has expired, then the completed record closest to its expiry; in-flight
//! claims are never evicted (a full store of in-flight claims refuses new ones). Eviction takes
//! the record at the front of a queue ordered by expiry rather than scanning the shard, so a
//! store kept full by a steady flow of new keys pays one pop per claim, not a pass over
//! thousands of keys. Records stored with the same TTL expire in the order they were stored, so
//! a queue per TTL (one, unless a reload changed it) stays in order by pushing at its back: a
//! pop reads the queue's front, where a heap's pop walked a path of cold cache lines down a
//! heap of thousands of items.
//! A key is hashed once per call: the hash picks the shard and finds the key in it, and the
//! queue keeps it, so an eviction finds its record without hashing again.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::HashTable;

use super::{Claim, Fingerprint, Record, RecordStore};
use crate::state::StoreError;

/// Shards of the map (a power of two well above the core counts the gateway runs on).
const SHARDS: usize = 64;

/// Where a key's hash picks its shard: bits the shard's table does not use. The table takes
/// its bucket from the low bits and its tag from the top seven, so keys that share these bits
/// (every key of a shard) still spread over its buckets and tags.
const SHARD_SHIFT: u32 = 32;

/// How often (ms) a shard drops expired entries even when it is not full.
const SWEEP_INTERVAL_MS: u64 = 10_000;

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    /// Unix ms after which the entry is gone (the lease of a claim, the TTL of a record).
    expires_ms: u64,
    /// The claim's token while in flight.
    token: u64,
    record: Option<Arc<Record>>,
}

/// A key's place in its shard's table.
#[derive(Debug)]
struct Slot {
    /// The key's hash, so the table never hashes a key again when it grows.
    hash: u64,
    /// Shared with `by_expiry`, so a record pays for its key once.
    key: Arc<str>,
    entry: Entry,
}

/// A completed record's place in its shard's expiry queue.
#[derive(Debug)]
struct Expiring {
    expires_ms: u64,
    hash: u64,
    key: Arc<str>,
}

/// Completed records stored with one TTL, nearest expiry first.
#[derive(Debug)]
struct ExpiryQueue {
    ttl_ms: u64,
    items: VecDeque<Expiring>,
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashTable<Slot>,
    /// Completed records, a queue per TTL. An item whose key no longer holds a record with
    /// that expiry (it expired, was evicted or claimed anew) is stale and skipped; sweeps drop
    /// the expired ones, so stale items do not pile up.
    by_expiry: Vec<ExpiryQueue>,
    /// No in-flight claim expires before this (a lower bound, exact after each sweep): a full
    /// shard looks for expired claims only when one may be there.
    claims_expire_from: u64,
    next_sweep: u64,
}

/// The shard of a key's hash.
fn shard_of(hash: u64) -> usize {
    (hash >> SHARD_SHIFT) as usize % SHARDS
}

/// The slot of `key` among slots of its `hash`.
fn is_key(key: &str) -> impl Fn(&Slot) -> bool + '_ {
    move |slot| &*slot.key == key
}

impl Shard {
    /// Drops everything expired.
    fn sweep(&mut self, now_ms: u64) {
        let mut claims_from = u64::MAX;
        self.entries.retain(|slot| {
            let e = &slot.entry;
            let keep = e.expires_ms > now_ms;
            if keep && e.record.is_none() {
                claims_from = claims_from.min(e.expires_ms);
            }
            keep
        });
        self.claims_expire_from = claims_from;
        for queue in &mut self.by_expiry {
            while queue
                .items
                .front()
                .is_some_and(|item| item.expires_ms <= now_ms)
            {
                queue.items.pop_front();
            }
        }
        // the queue of a TTL no longer in use goes once it is empty
        self.by_expiry.retain(|queue| !queue.items.is_empty());
    }

    /// Queues a completed record that expires `ttl_ms` after it was stored.
    fn push_expiring(&mut self, ttl_ms: u64, item: Expiring) {
        let at = match self.by_expiry.iter().position(|q| q.ttl_ms == ttl_ms) {
            Some(at) => at,
            None => {
                self.by_expiry.push(ExpiryQueue {
                    ttl_ms,
                    items: VecDeque::new(),
                });
                self.by_expiry.len() - 1
            }
        };
        let items = &mut self.by_expiry[at].items;
        if items
            .back()
            .is_none_or(|last| last.expires_ms <= item.expires_ms)
        {
            items.push_back(item);
        } else {
            // the clock went back since the last record was stored: in its place by expiry
            let place = items.partition_point(|queued| queued.expires_ms <= item.expires_ms);
            items.insert(place, item);
        }
    }

    /// Takes the queued record nearest its expiry, whatever its TTL.
    fn pop_nearest(&mut self) -> Option<Expiring> {
        let (_, at) = self
            .by_expiry
            .iter()
            .enumerate()
            .filter_map(|(at, queue)| Some((queue.items.front()?.expires_ms, at)))
            .min()?;
        self.by_expiry[at].items.pop_front()
    }
}

/// The store is full of in-flight claims: nothing could be evicted for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the idempotency store is full of in-flight requests")]
pub struct Full;

/// Idempotency records kept in this process.
#[derive(Debug)]
pub struct LocalRecords {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    max_entries: usize,
    per_shard: usize,
}

impl LocalRecords {
    /// An empty store holding at most about `max_entries` keys.
    pub fn new(max_entries: usize) -> LocalRecords {
        LocalRecords {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            max_entries,
            per_shard: max_entries.div_ceil(SHARDS).max(1),
        }
    }

    /// The bound it was made with.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The key's hash and its shard, locked.
    fn shard(&self, key: &str) -> (u64, MutexGuard<'_, Shard>) {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[shard_of(hash)];
        (hash, shard.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Claims `key` for a request with this fingerprint at unix ms `now_ms`, for `lease_ms`;
    /// or reports the claim in flight, or the stored record.
    pub fn claim(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        token: u64,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Claim, Full> {
        let (hash, mut shard) = self.shard(key);
        let shard = &mut *shard;
        if now_ms >= shard.next_sweep {
            shard.sweep(now_ms);
            shard.next_sweep = now_ms + SWEEP_INTERVAL_MS;
        }
        let expires_ms = now_ms.saturating_add(lease_ms);
        let claimed = Entry {
            fingerprint: *fingerprint,
            expires_ms,
            token,
            record: None,
        };
        match shard.entries.find_mut(hash, is_key(key)) {
            Some(Slot { entry: e, .. }) if e.expires_ms > now_ms => {
                return Ok(match &e.record {
                    Some(record) => Claim::Done {
                        fingerprint: e.fingerprint,
                        record: record.clone(),
                    },
                    None => Claim::InFlight {
                        fingerprint: e.fingerprint,
                        remaining_ms: e.expires_ms - now_ms,
                    },
                });
            }
            // expired: claimed anew where it is (its queued item, if any, is now stale)
            Some(slot) => slot.entry = claimed,
            None => {
                if shard.entries.len() >= self.per_shard {
                    make_room(shard, now_ms)?;
                }
                let slot = Slot {
                    hash,
                    key: key.into(),
                    entry: claimed,
                };
                shard.entries.insert_unique(hash, slot, |s| s.hash);
            }
        }
        shard.claims_expire_from = shard.claims_expire_from.min(expires_ms);
        Ok(Claim::Claimed)
    }

    /// Stores the response of the claim holding `token`, kept until `now_ms + ttl_ms`. False
    /// when the claim is no longer this one's, or its lease ran out.
    pub fn complete(
        &self,
        key: &str,
        token: u64,
        record: Arc<Record>,
        now_ms: u64,
        ttl_ms: u64,
    ) -> bool {
        let (hash, mut shard) = self.shard(key);
        let shard = &mut *shard;
        let Some(slot) = shard.entries.find_mut(hash, is_key(key)) else {
            return false;
        };
        let e = &mut slot.entry;
        if e.record.is_some() || e.token != token || e.expires_ms <= now_ms {
            return false;
        }
        let expires_ms = now_ms.saturating_add(ttl_ms);
        e.record = Some(record);
        e.token = 0;
        e.expires_ms = expires_ms;
        let key = slot.key.clone();
        shard.push_expiring(
            ttl_ms,
            Expiring {
                expires_ms,
                hash,
                key,
            },
        );
        true
    }

    /// Gives up the claim holding `token`, so the next request with the key goes through.
    /// False when the claim is no longer this one's, or its lease ran out (it is free anyway).
    pub fn release(&self, key: &str, token: u64, now_ms: u64) -> bool {
        let (hash, mut shard) = self.shard(key);
        match shard.entries.find_entry(hash, is_key(key)) {
            Ok(found) => {
                let e = &found.get().entry;
                let ours = e.record.is_none() && e.token == token && e.expires_ms > now_ms;
                if ours {
                    found.remove();
                }
                ours
            }
            Err(_) => false,
        }
    }

    /// Keys currently held, expired or not (tests, diagnostics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).entries.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RecordStore for LocalRecords {
    fn claim(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        token: u64,
        now_ms: u64,
        lease_ms: u64,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        let claimed = LocalRecords::claim(self, key, fingerprint, token, now_ms, lease_ms);
        std::future::ready(claimed.map_err(|Full| StoreError::Full))
    }

    fn complete(
        &self,
        key: &str,
        token: u64,
        record: Record,
        now_ms: u64,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let stored = LocalRecords::complete(self, key, token, Arc::new(record), now_ms, ttl_ms);
        std::future::ready(Ok(stored))
    }

    fn release(
        &self,
        key: &str,
        token: u64,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        std::future::ready(Ok(LocalRecords::release(self, key, token, now_ms)))
    }
}

/// Frees a slot in a full shard: expired entries first, else the record nearest its expiry.
fn make_room(shard: &mut Shard, now_ms: u64) -> Result<(), Full> {
    // the queues know the records, not the claims: a claim whose lease ran out is found by a
    // sweep, made only when the bound says one may be there
    if shard.claims_expire_from <= now_ms {
        let before = shard.entries.len();
        shard.sweep(now_ms);
        if shard.entries.len() < before {
            return Ok(());
        }
    }
    // the nearest expiry first, so an expired record goes before any live one
    while let Some(Expiring {
        expires_ms,
        hash,
        key,
    }) = shard.pop_nearest()
    {
        // the slot is known by the key it shares with its queued item, without reading the
        // key's text (a cache miss more, in a store of thousands of keys); a slot made anew
        // for the same text holds another key, and this item is stale
        if let Ok(found) = shard
            .entries
            .find_entry(hash, |slot| Arc::ptr_eq(&slot.key, &key))
        {
            let e = &found.get().entry;
            if e.record.is_some() && e.expires_ms == expires_ms {
                found.remove();
                return Ok(());
            }
        }
    }
    Err(Full)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record(body: &'static str) -> Arc<Record> {
        Arc::new(Record {
            status: 201,
            headers: Vec::new(),
            body: Bytes::from_static(body.as_bytes()),
        })
    }

    const FP: Fingerprint = [7; 32];

    /// `n` keys `k0`, `k1`, ... that hash to the shard of `key`, so tests can fill one shard.
    fn keys_in_shard_of(s: &LocalRecords, key: &str, n: usize) -> Vec<String> {
        let shard = |k: &str| shard_of(s.hasher.hash_one(k));
        (0..10_000)
            .map(|i| format!("k{i}"))
            .filter(|k| shard(k) == shard(key))
            .take(n)
            .collect()
    }

    #[test]
    fn a_key_is_claimed_once_then_replayed_until_its_ttl() {
        let s = LocalRecords::new(1000);
        assert_eq!(s.claim("k", &FP, 1, 0, 30_000), Ok(Claim::Claimed));
        assert_eq!(
            s.claim("k", &[8; 32], 2, 1_000, 30_000),
            Ok(Claim::InFlight {
                fingerprint: FP,
                remaining_ms: 29_000
            })
        );
        // only the holder of the claim completes it
        assert!(!s.complete("k", 2, record("no"), 2_000, 60_000));
        assert!(s.complete("k", 1, record("yes"), 2_000, 60_000));
        assert!(!s.complete("k", 1, record("again"), 2_000, 60_000));
        assert_eq!(
            s.claim("k", &FP, 3, 61_999, 30_000),
            Ok(Claim::Done {
                fingerprint: FP,
                record: record("yes")
            })
        );
        assert_eq!(s.claim("k", &FP, 4, 62_000, 30_000), Ok(Claim::Claimed));
    }

    #[test]
    fn a_lease_runs_out_so_a_crashed_holder_frees_the_key() {
        let s = LocalRecords::new(1000);
        assert_eq!(s.claim("k", &FP, 1, 0, 30_000), Ok(Claim::Claimed));
        assert!(matches!(
            s.claim("k", &FP, 2, 29_999, 30_000),
            Ok(Claim::InFlight { .. })
        ));
        assert_eq!(s.claim("k", &FP, 3, 30_000, 30_000), Ok(Claim::Claimed));
        // the first holder comes back late: its answer is not stored over the new claim
        assert!(!s.complete("k", 1, record("late"), 31_000, 60_000));
        assert!(!s.release("k", 1, 31_000));
        // nor is an answer that comes after its own lease
        assert!(!s.complete("k", 3, record("late"), 60_000, 60_000));
        assert!(s.release("k", 3, 59_999));
        assert!(s.is_empty());
    }

    #[test]
    fn every_key_is_found_again_after_its_shard_grew_many_times() {
        // thousands of keys per shard: each table regrows, moving slots by their kept hashes
        let s = LocalRecords::new(1_000_000);
        let keys: Vec<String> = (0..50_000).map(|i| format!("order-{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(s.claim(k, &FP, i as u64 + 1, 0, 30_000), Ok(Claim::Claimed));
        }
        for (i, k) in keys.iter().enumerate().step_by(2) {
            assert!(
                s.complete(k, i as u64 + 1, record("stored"), 10, 60_000),
                "{k}"
            );
        }
        for (i, k) in keys.iter().enumerate() {
            let again = s.claim(k, &[9; 32], 0, 20, 30_000);
            if i % 2 == 0 {
                assert_eq!(
                    again,
                    Ok(Claim::Done {
                        fingerprint: FP,
                        record: record("stored")
                    }),
                    "{k}"
                );
            } else {
                assert!(matches!(again, Ok(Claim::InFlight { .. })), "{k}");
                assert!(s.release(k, i as u64 + 1, 20), "{k}");
            }
        }
        assert_eq!(s.len(), keys.len() / 2);
    }

    #[test]
    fn a_full_store_evicts_expired_then_oldest_records_never_claims() {
        // one entry per shard
        let s = LocalRecords::new(1);
        assert_eq!(s.claim("a", &FP, 1, 0, 1_000), Ok(Claim::Claimed));
        // "a" is in flight and its shard is full: claims of other keys hashing there fail
        let same_shard = keys_in_shard_of(&s, "a", 2);
        assert_eq!(s.claim(&same_shard[0], &FP, 2, 10, 1_000), Err(Full));
        assert!(s.complete("a", 1, record("a"), 10, 100_000));
        // a record is evicted for a new claim
        assert_eq!(
            s.claim(&same_shard[0], &FP, 3, 20, 1_000),
            Ok(Claim::Claimed)
        );
        assert_eq!(s.claim("a", &FP, 4, 30, 1_000), Err(Full));
        // once the lease ran out, the expired claim makes room
        assert_eq!(s.claim("a", &FP, 5, 2_000, 1_000), Ok(Claim::Claimed));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_record_nearest_its_expiry_goes_first_and_stale_queued_items_are_skipped() {
        // two entries per shard
        let s = LocalRecords::new(2 * SHARDS);
        let keys = keys_in_shard_of(&s, "k0", 4);
        let (a, b, c, d) = (&keys[0], &keys[1], &keys[2], &keys[3]);
        assert_eq!(s.claim(a, &FP, 1, 0, 1_000), Ok(Claim::Claimed));
        assert_eq!(s.claim(b, &FP, 2, 0, 1_000), Ok(Claim::Claimed));
        assert!(s.complete(a, 1, record("a"), 10, 5_000));
        assert!(s.complete(b, 2, record("b"), 10, 2_000));
        // b expires first, so it makes room for c; a stays
        assert_eq!(s.claim(c, &FP, 3, 20, 1_000), Ok(Claim::Claimed));
        assert!(matches!(
            s.claim(a, &FP, 4, 30, 1_000),
            Ok(Claim::Done { .. })
        ));
        // a is claimed anew once its record expired (before any sweep): its queued item is stale
        assert!(s.release(c, 3, 40));
        assert_eq!(s.claim(a, &FP, 5, 5_010, 1_000), Ok(Claim::Claimed));
        assert_eq!(s.claim(b, &FP, 6, 5_020, 1_000), Ok(Claim::Claimed));
        // full of live claims: nothing to evict, and the stale item does not evict a's claim
        assert_eq!(s.claim(d, &FP, 7, 5_030, 1_000), Err(Full));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_record_stored_after_the_clock_went_back_is_queued_by_its_expiry() {
        // two entries per shard, one TTL
        let s = LocalRecords::new(2 * SHARDS);
        let keys = keys_in_shard_of(&s, "k0", 3);
        let (a, b, c) = (&keys[0], &keys[1], &keys[2]);
        assert_eq!(s.claim(a, &FP, 1, 0, 1_000), Ok(Claim::Claimed));
        assert_eq!(s.claim(b, &FP, 2, 0, 1_000), Ok(Claim::Claimed));
        assert!(s.complete(a, 1, record("a"), 500, 5_000));
        // stored later, by a clock 400 ms behind: b expires before a
        assert!(s.complete(b, 2, record("b"), 100, 5_000));
        assert_eq!(s.claim(c, &FP, 3, 600, 1_000), Ok(Claim::Claimed));
        assert!(matches!(
            s.claim(a, &FP, 4, 700, 1_000),
            Ok(Claim::Done { .. })
        ));
        // b's record is gone: its key is claimed anew
        assert_eq!(s.claim(b, &FP, 5, 700, 1_000), Ok(Claim::Claimed));
    }

    #[test]
    fn a_sweep_drops_expired_items_and_the_queues_left_empty() {
        let s = LocalRecords::new(1000);
        for (i, ttl) in [(1, 1_000), (2, 2_000), (3, 60_000)] {
            let key = format!("k{i}");
            assert_eq!(s.claim(&key, &FP, i, 0, 1_000), Ok(Claim::Claimed));
            assert!(s.complete(&key, i, record("r"), 0, ttl));
        }
        let queued = |s: &LocalRecords| -> (usize, usize) {
            s.shards.iter().fold((0, 0), |(queues, items), shard| {
                let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
                let n: usize = shard.by_expiry.iter().map(|q| q.items.len()).sum();
                (queues + shard.by_expiry.len(), items + n)
            })
        };
        assert_eq!(queued(&s), (3, 3));
        // the first call past the sweep interval sweeps its shard; sweep them all
        for shard in s.shards.iter() {
            shard.lock().unwrap_or_else(|e| e.into_inner()).sweep(2_000);
        }
        assert_eq!(queued(&s), (1, 1));
        assert_eq!(s.len(), 1);
    }
}
