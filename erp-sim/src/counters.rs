//! The simulator's counters: requests started and completed, connections, requests in flight
//! and their high-water mark, idempotent replays and conflicts, refused TLS handshakes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use crate::lock::lock;

/// A snapshot of the counters, as served by `GET /_sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    pub requests_started: u64,
    pub requests_completed: u64,
    pub connections_accepted: u64,
    /// Requests per path (at most 1024 distinct paths; the rest count under `(other)`).
    pub by_path: BTreeMap<String, u64>,
    /// ERP and echo requests between their headers being parsed and their answer being
    /// written (a hung request counts while it hangs).
    pub in_flight: u64,
    /// The most requests ever in flight at once since start or reset.
    pub max_in_flight: u64,
    /// Writes repeating an `Idempotency-Key` already answered with a created document
    /// (answered from memory when keys are honoured, processed again when not).
    pub duplicates: u64,
    /// Writes whose `Idempotency-Key` was still being processed by an earlier request
    /// (refused with `409` when keys are honoured).
    pub in_flight_conflicts: u64,
    /// TLS handshakes that failed, e.g. a client without the required certificate.
    pub tls_handshake_failures: u64,
    /// `GET /erp/v1/health` probes answered (kept out of every other counter and of the
    /// request log, which are about the ERP's business traffic).
    pub health_checks: u64,
}

impl SimStats {
    pub(crate) fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Requests in flight now and at most. One lock for both, so the high-water mark is exact.
#[derive(Default)]
pub(crate) struct InFlightGauge {
    counts: Mutex<InFlightCounts>,
}

#[derive(Default, Clone, Copy)]
struct InFlightCounts {
    now: u64,
    max: u64,
}

impl InFlightGauge {
    /// Counts a request in flight until the returned guard is dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> InFlight {
        let mut counts = lock(&self.counts);
        counts.now += 1;
        counts.max = counts.max.max(counts.now);
        InFlight(Arc::clone(self))
    }

    fn snapshot(&self) -> InFlightCounts {
        *lock(&self.counts)
    }

    /// The high-water mark restarts from what is in flight right now: the gauge itself stays
    /// true, since those requests are still being served.
    fn reset_max(&self) {
        let mut counts = lock(&self.counts);
        counts.max = counts.now;
    }
}

/// One request in flight; dropping it (answer written, connection gone) ends it.
pub(crate) struct InFlight(Arc<InFlightGauge>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut counts = lock(&self.0.counts);
        counts.now = counts.now.saturating_sub(1);
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    /// Bumped by reset, so a request in flight across it does not count as completed after it.
    epoch: AtomicU64,
    started: AtomicU64,
    completed: AtomicU64,
    connections: AtomicU64,
    duplicates: AtomicU64,
    in_flight_conflicts: AtomicU64,
    tls_handshake_failures: AtomicU64,
    health_checks: AtomicU64,
    pub(crate) in_flight: Arc<InFlightGauge>,
}

impl Counters {
    /// Counts a started request and returns the epoch it started in.
    pub(crate) fn start(&self) -> u64 {
        let epoch = self.epoch.load(Ordering::Acquire);
        self.started.fetch_add(1, Ordering::Relaxed);
        epoch
    }

    pub(crate) fn complete(&self, epoch: u64) {
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.completed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn accept(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn in_flight_conflict(&self) {
        self.in_flight_conflicts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn health_check(&self) {
        self.health_checks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn tls_handshake_failure(&self) {
        self.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    pub(crate) fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Everything but `by_path`, which the request log keeps.
    pub(crate) fn snapshot(&self, by_path: BTreeMap<String, u64>) -> SimStats {
        let in_flight = self.in_flight.snapshot();
        SimStats {
            requests_started: self.started(),
            requests_completed: self.completed(),
            connections_accepted: self.connections(),
            by_path,
            in_flight: in_flight.now,
            max_in_flight: in_flight.max,
            duplicates: self.duplicates.load(Ordering::Relaxed),
            in_flight_conflicts: self.in_flight_conflicts.load(Ordering::Relaxed),
            tls_handshake_failures: self.tls_handshake_failures.load(Ordering::Relaxed),
            health_checks: self.health_checks.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn reset(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for counter in [
            &self.started,
            &self.completed,
            &self.connections,
            &self.duplicates,
            &self.in_flight_conflicts,
            &self.tls_handshake_failures,
            &self.health_checks,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        self.in_flight.reset_max();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_keeps_its_high_water_mark_until_reset() {
        let counters = Counters::default();
        let first = counters.in_flight.enter();
        let second = counters.in_flight.enter();
        drop(first);
        let third = counters.in_flight.enter();
        let stats = counters.snapshot(BTreeMap::new());
        assert_eq!((stats.in_flight, stats.max_in_flight), (2, 2));
        drop(second);
        drop(third);
        let stats = counters.snapshot(BTreeMap::new());
        assert_eq!((stats.in_flight, stats.max_in_flight), (0, 2));

        let hung = counters.in_flight.enter();
        counters.reset();
        let stats = counters.snapshot(BTreeMap::new());
        assert_eq!((stats.in_flight, stats.max_in_flight), (1, 1));
        drop(hung);
        assert_eq!(counters.snapshot(BTreeMap::new()).in_flight, 0);
    }

    #[test]
    fn a_request_completing_after_a_reset_is_not_counted() {
        let counters = Counters::default();
        let epoch = counters.start();
        counters.duplicate();
        counters.reset();
        counters.complete(epoch);
        let stats = counters.snapshot(BTreeMap::new());
        assert_eq!((stats.requests_started, stats.requests_completed), (0, 0));
        assert_eq!(stats.duplicates, 0);
    }
}
