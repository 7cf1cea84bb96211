//! The ERP's memory of `Idempotency-Key`s on writes: the first request with a key that creates
//! a document records its answer, later ones with the same method, path and key are repeats
//! (answered with that answer when keys are honoured). A key is reserved while its first
//! request is processed, and released (as if never seen) when that request does not create a
//! document.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::lock::lock;

/// The header on a replayed answer, so a test can tell a replay from a first answer.
pub(crate) const REPLAYED_HEADER: &str = "erp-sim-replayed";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct KeyId {
    method: Method,
    path: String,
    key: String,
}

/// An answer as recorded for replay: its status, the headers that describe the body, the body.
#[derive(Debug, Clone)]
pub(crate) struct StoredAnswer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl StoredAnswer {
    pub(crate) fn of(response: &Response<Bytes>) -> StoredAnswer {
        let mut headers = HeaderMap::new();
        for name in [CONTENT_TYPE, LOCATION] {
            if let Some(value) = response.headers().get(&name) {
                headers.insert(name, value.clone());
            }
        }
        StoredAnswer {
            status: response.status(),
            headers,
            body: response.body().clone(),
        }
    }

    pub(crate) fn replay(&self) -> Response<Bytes> {
        let mut response = Response::new(self.body.clone());
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, http::HeaderValue::from_static("true"));
        response
    }
}

enum Entry {
    /// Its first request is being processed; the number tells reservations apart.
    Processing(u64),
    Answered(Arc<StoredAnswer>),
}

#[derive(Default)]
struct Keys {
    entries: HashMap<KeyId, Entry>,
    /// Answered keys, oldest first, to forget the oldest beyond the limit.
    answered: VecDeque<KeyId>,
    /// Never reset, so a reservation made before a reset cannot touch an entry made after it.
    last_reservation: u64,
}

/// What the memory says about a write's key.
pub(crate) enum Lookup {
    /// Answered before: send this again.
    Replay(Arc<StoredAnswer>),
    /// The first request with this key is still being processed.
    Processing,
    /// New: this request reserves the key until it completes or is dropped.
    Fresh(Reservation),
}

pub(crate) struct IdempotencyKeys {
    limit: usize,
    honoured: AtomicBool,
    keys: Arc<Mutex<Keys>>,
}

impl IdempotencyKeys {
    pub(crate) fn new(limit: usize, honoured: bool) -> IdempotencyKeys {
        IdempotencyKeys {
            limit,
            honoured: AtomicBool::new(honoured),
            keys: Arc::default(),
        }
    }

    /// Whether a repeat is answered from memory (and a conflict refused) rather than
    /// processed.
    pub(crate) fn honoured(&self) -> bool {
        self.honoured.load(Ordering::Relaxed)
    }

    pub(crate) fn set_honoured(&self, honoured: bool) {
        self.honoured.store(honoured, Ordering::Relaxed);
    }

    pub(crate) fn lookup(&self, method: &Method, path: &str, key: &str) -> Lookup {
        let id = KeyId {
            method: method.clone(),
            path: path.to_owned(),
            key: key.to_owned(),
        };
        let mut keys = lock(&self.keys);
        match keys.entries.get(&id) {
            Some(Entry::Answered(answer)) => return Lookup::Replay(Arc::clone(answer)),
            Some(Entry::Processing(_)) => return Lookup::Processing,
            None => {}
        }
        keys.last_reservation += 1;
        let number = keys.last_reservation;
        keys.entries.insert(id.clone(), Entry::Processing(number));
        Lookup::Fresh(Reservation {
            keys: Arc::clone(&self.keys),
            limit: self.limit,
            id: Some(id),
            number,
        })
    }

    pub(crate) fn clear(&self) {
        let mut keys = lock(&self.keys);
        keys.entries.clear();
        keys.answered.clear();
    }
}

/// A key held while its first request is processed. Dropping it without
/// [`Reservation::answered`] releases the key.
pub(crate) struct Reservation {
    keys: Arc<Mutex<Keys>>,
    limit: usize,
    id: Option<KeyId>,
    number: u64,
}

impl Reservation {
    /// Records the answer for replay.
    pub(crate) fn answered(mut self, answer: StoredAnswer) {
        let Some(id) = self.id.take() else { return };
        let mut keys = lock(&self.keys);
        if !matches!(keys.entries.get(&id), Some(Entry::Processing(n)) if *n == self.number) {
            return;
        }
        if self.limit == 0 {
            keys.entries.remove(&id);
            return;
        }
        keys.entries
            .insert(id.clone(), Entry::Answered(Arc::new(answer)));
        keys.answered.push_back(id);
        while keys.answered.len() > self.limit {
            if let Some(oldest) = keys.answered.pop_front() {
                keys.entries.remove(&oldest);
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let mut keys = lock(&self.keys);
        if matches!(keys.entries.get(&id), Some(Entry::Processing(n)) if *n == self.number) {
            keys.entries.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(body: &'static str) -> Response<Bytes> {
        let mut response = Response::new(Bytes::from_static(body.as_bytes()));
        *response.status_mut() = StatusCode::CREATED;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, "application/json".parse().unwrap());
        response
            .headers_mut()
            .insert("x-unrelated", "1".parse().unwrap());
        response
    }

    fn reserve(keys: &IdempotencyKeys, path: &str, key: &str) -> Reservation {
        match keys.lookup(&Method::POST, path, key) {
            Lookup::Fresh(reservation) => reservation,
            _ => panic!("{key} on {path} was not fresh"),
        }
    }

    #[test]
    fn an_answered_key_replays_and_a_processing_one_conflicts() {
        let keys = IdempotencyKeys::new(10, true);
        let first = reserve(&keys, "/erp/v1/orders", "k");
        assert!(matches!(
            keys.lookup(&Method::POST, "/erp/v1/orders", "k"),
            Lookup::Processing
        ));
        first.answered(StoredAnswer::of(&created("{\"a\":1}")));
        let Lookup::Replay(answer) = keys.lookup(&Method::POST, "/erp/v1/orders", "k") else {
            panic!("no replay");
        };
        let replay = answer.replay();
        assert_eq!(replay.status(), StatusCode::CREATED);
        assert_eq!(replay.body(), "{\"a\":1}");
        assert_eq!(replay.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(replay.headers()[REPLAYED_HEADER], "true");
        assert!(!replay.headers().contains_key("x-unrelated"));
        // Same key elsewhere is another key.
        drop(reserve(&keys, "/erp/v1/returns", "k"));
    }

    #[test]
    fn a_dropped_reservation_releases_the_key() {
        let keys = IdempotencyKeys::new(10, true);
        drop(reserve(&keys, "/erp/v1/orders", "k"));
        drop(reserve(&keys, "/erp/v1/orders", "k"));
    }

    #[test]
    fn a_reservation_from_before_a_clear_leaves_newer_entries_alone() {
        let keys = IdempotencyKeys::new(10, true);
        let old = reserve(&keys, "/erp/v1/orders", "k");
        keys.clear();
        let new = reserve(&keys, "/erp/v1/orders", "k");
        old.answered(StoredAnswer::of(&created("old")));
        assert!(matches!(
            keys.lookup(&Method::POST, "/erp/v1/orders", "k"),
            Lookup::Processing
        ));
        new.answered(StoredAnswer::of(&created("new")));
        let Lookup::Replay(answer) = keys.lookup(&Method::POST, "/erp/v1/orders", "k") else {
            panic!("no replay");
        };
        assert_eq!(answer.replay().body(), "new");
    }

    #[test]
    fn the_oldest_answered_keys_are_forgotten_beyond_the_limit() {
        let keys = IdempotencyKeys::new(2, true);
        for key in ["a", "b", "c"] {
            reserve(&keys, "/p", key).answered(StoredAnswer::of(&created("x")));
        }
        drop(reserve(&keys, "/p", "a"));
        assert!(matches!(
            keys.lookup(&Method::POST, "/p", "c"),
            Lookup::Replay(_)
        ));
        let none = IdempotencyKeys::new(0, true);
        reserve(&none, "/p", "a").answered(StoredAnswer::of(&created("x")));
        drop(reserve(&none, "/p", "a"));
    }
}
