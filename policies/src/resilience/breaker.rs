//! A circuit breaker per endpoint: closed (requests flow), open (none are sent, callers are told
//! when to come back), half-open (a few probe requests decide whether it closes or opens again).
//! It opens on `consecutive_failures` failed attempts in a row, or when more than
//! `failure_ratio` of at least `min_requests` attempts within `window` failed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::DurationSpec;

/// A circuit breaker for each endpoint of an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerSpec {
    /// Failed attempts in a row (connect failures, resets, timeouts, 5xx answers) that open the
    /// circuit of an endpoint.
    #[serde(default = "default_consecutive_failures")]
    #[schemars(range(min = 1))]
    pub consecutive_failures: u32,
    /// Share of failed attempts (0 to 1) within `window` that opens the circuit, once the
    /// window holds at least `min_requests` attempts.
    #[serde(default = "default_failure_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub failure_ratio: f64,
    /// Attempts the window must hold before `failure_ratio` applies.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 1))]
    pub min_requests: u32,
    /// The sliding window `failure_ratio` is measured over.
    #[serde(default = "default_window")]
    pub window: DurationSpec,
    /// How long an open circuit sends nothing to its endpoint before letting probes through.
    #[serde(default = "default_open_for")]
    pub open_for: DurationSpec,
    /// Requests let through at once while half-open (each is a real request: the probe).
    #[serde(default = "default_half_open_probes")]
    #[schemars(range(min = 1))]
    pub half_open_probes: u32,
    /// Successful probes in a row that close the circuit again; one failed probe opens it.
    #[serde(default = "default_close_after")]
    #[schemars(range(min = 1))]
    pub close_after: u32,
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_failure_ratio() -> f64 {
    0.5
}
fn default_min_requests() -> u32 {
    10
}
fn default_window() -> DurationSpec {
    DurationSpec::secs(10)
}
fn default_open_for() -> DurationSpec {
    DurationSpec::secs(10)
}
fn default_half_open_probes() -> u32 {
    1
}
fn default_close_after() -> u32 {
    3
}

impl Default for CircuitBreakerSpec {
    fn default() -> Self {
        CircuitBreakerSpec {
            consecutive_failures: default_consecutive_failures(),
            failure_ratio: default_failure_ratio(),
            min_requests: default_min_requests(),
            window: default_window(),
            open_for: default_open_for(),
            half_open_probes: default_half_open_probes(),
            close_after: default_close_after(),
        }
    }
}

/// Where a breaker stands, as shown in metrics and on the admin listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Nothing is sent until `retry_after` has passed.
    Open {
        /// Time left until probes are let through.
        retry_after: Duration,
    },
    /// Probes decide.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// What the breaker lets one attempt do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Send it; report its result with [`CircuitBreaker::record`].
    Pass,
    /// Send it as a half-open probe; report its result, or [`CircuitBreaker::abandon`] it.
    Probe,
    /// Do not send it; the endpoint may be tried again after this long.
    Deny(Duration),
}

/// A state change worth logging and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The circuit opened.
    Opened,
    /// The circuit let its first probe through.
    HalfOpened,
    /// The probes succeeded: the circuit closed.
    Closed,
}

const CLOSED: u8 = 0;
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    slot: u64,
    attempts: u32,
    failures: u32,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Duration },
    HalfOpen { probes: u32, successes: u32 },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    consecutive: u32,
    buckets: [Bucket; BUCKETS],
}

/// The runtime breaker of one endpoint.
#[derive(Debug)]
pub struct CircuitBreaker {
    spec: CircuitBreakerSpec,
    slot_len: Duration,
    /// `CLOSED` while closed, so the common case admits without taking the lock.
    fast: AtomicU8,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(spec: &CircuitBreakerSpec) -> Self {
        let window = spec.window.0.max(Duration::from_millis(BUCKETS as u64));
        CircuitBreaker {
            spec: spec.clone(),
            slot_len: window / BUCKETS as u32,
            fast: AtomicU8::new(CLOSED),
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive: 0,
                buckets: [Bucket::default(); BUCKETS],
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an attempt may go to this endpoint now, and as what.
    pub fn admit(&self, now: Duration) -> (Admit, Option<Transition>) {
        if self.fast.load(Ordering::Acquire) == CLOSED {
            return (Admit::Pass, None);
        }
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => (Admit::Pass, None),
            Phase::Open { until } if now < until => (Admit::Deny(until - now), None),
            Phase::Open { .. } => {
                inner.phase = Phase::HalfOpen {
                    probes: 1,
                    successes: 0,
                };
                (Admit::Probe, Some(Transition::HalfOpened))
            }
            Phase::HalfOpen {
                ref mut probes,
                successes: _,
            } => {
                if *probes < self.spec.half_open_probes {
                    *probes += 1;
                    (Admit::Probe, None)
                } else {
                    // the probes in flight decide soon; a caller may come back after a fraction
                    // of the open time
                    (Admit::Deny(self.probe_wait()), None)
                }
            }
        }
    }

    fn probe_wait(&self) -> Duration {
        (self.spec.open_for.0 / 10).max(Duration::from_millis(1))
    }

    /// Reports the result of an attempt `admit` let through.
    pub fn record(&self, now: Duration, admitted: Admit, ok: bool) -> Option<Transition> {
        let mut inner = self.lock();
        match admitted {
            Admit::Deny(_) => None,
            Admit::Probe => {
                let Phase::HalfOpen { probes, successes } = &mut inner.phase else {
                    return None;
                };
                *probes = probes.saturating_sub(1);
                if !ok {
                    self.open(&mut inner, now);
                    return Some(Transition::Opened);
                }
                *successes += 1;
                if *successes >= self.spec.close_after {
                    inner.phase = Phase::Closed;
                    inner.consecutive = 0;
                    inner.buckets = [Bucket::default(); BUCKETS];
                    self.fast.store(CLOSED, Ordering::Release);
                    return Some(Transition::Closed);
                }
                None
            }
            Admit::Pass => {
                // results of attempts admitted before the circuit opened change nothing
                if !matches!(inner.phase, Phase::Closed) {
                    return None;
                }
                let slot = (now.as_nanos() / self.slot_len.as_nanos().max(1)) as u64;
                let bucket = &mut inner.buckets[(slot % BUCKETS as u64) as usize];
                if bucket.slot != slot {
                    *bucket = Bucket {
                        slot,
                        ..Bucket::default()
                    };
                }
                bucket.attempts += 1;
                if ok {
                    inner.consecutive = 0;
                    return None;
                }
                bucket.failures += 1;
                inner.consecutive += 1;
                let oldest = slot.saturating_sub(BUCKETS as u64 - 1);
                let (attempts, failures) = inner
                    .buckets
                    .iter()
                    .filter(|b| b.slot >= oldest && b.slot <= slot)
                    .fold((0u32, 0u32), |(a, f), b| (a + b.attempts, f + b.failures));
                let ratio_trips = attempts >= self.spec.min_requests
                    && f64::from(failures) > self.spec.failure_ratio * f64::from(attempts);
                if inner.consecutive >= self.spec.consecutive_failures || ratio_trips {
                    self.open(&mut inner, now);
                    return Some(Transition::Opened);
                }
                None
            }
        }
    }

    /// A probe that ended without a result (the client went away): its slot is freed.
    pub fn abandon(&self, admitted: Admit) {
        if admitted != Admit::Probe {
            return;
        }
        if let Phase::HalfOpen { probes, .. } = &mut self.lock().phase {
            *probes = probes.saturating_sub(1);
        }
    }

    fn open(&self, inner: &mut Inner, now: Duration) {
        inner.phase = Phase::Open {
            until: now + self.spec.open_for.0,
        };
        inner.consecutive = 0;
        self.fast.store(1, Ordering::Release);
    }

    /// The state at `now`.
    pub fn state(&self, now: Duration) -> BreakerState {
        if self.fast.load(Ordering::Acquire) == CLOSED {
            return BreakerState::Closed;
        }
        match self.lock().phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open {
                retry_after: until - now,
            },
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether `spec` describes this breaker (a reload with the same settings keeps it).
    pub fn has_spec(&self, spec: &CircuitBreakerSpec) -> bool {
        &self.spec == spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(&CircuitBreakerSpec {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            min_requests: 6,
            window: DurationSpec::millis(1000),
            open_for: DurationSpec::millis(500),
            half_open_probes: 1,
            close_after: 2,
        })
    }

    #[test]
    fn consecutive_failures_open_and_the_open_time_is_told() {
        let b = breaker();
        assert_eq!(b.record(ms(1), Admit::Pass, false), None);
        assert_eq!(b.record(ms(2), Admit::Pass, false), None);
        assert_eq!(
            b.record(ms(3), Admit::Pass, false),
            Some(Transition::Opened)
        );
        assert_eq!(b.admit(ms(103)), (Admit::Deny(ms(400)), None));
        assert_eq!(
            b.state(ms(103)),
            BreakerState::Open {
                retry_after: ms(400)
            }
        );
    }

    #[test]
    fn a_success_resets_the_run_of_failures() {
        let b = breaker();
        for t in 0..10 {
            assert_eq!(b.record(ms(t * 300), Admit::Pass, false), None);
            assert_eq!(b.record(ms(t * 300 + 1), Admit::Pass, true), None);
            assert_eq!(b.record(ms(t * 300 + 2), Admit::Pass, true), None);
        }
        assert_eq!(b.state(ms(3000)), BreakerState::Closed);
    }

    #[test]
    fn a_failure_ratio_over_the_window_opens() {
        let b = breaker();
        // F S F S F S F: 4 of 7 failed within the window, never 3 in a row
        let mut opened = None;
        for (i, ok) in [false, true, false, true, false, true, false]
            .into_iter()
            .enumerate()
        {
            opened = opened.or(b.record(ms(i as u64 * 10), Admit::Pass, ok));
        }
        assert_eq!(opened, Some(Transition::Opened));
    }

    #[test]
    fn old_results_leave_the_window() {
        let b = breaker();
        // 4 failures of 5: below min_requests, never 3 in a row
        for (t, ok) in [false, false, true, false, false].into_iter().enumerate() {
            assert_eq!(b.record(ms(t as u64), Admit::Pass, ok), None);
        }
        // much later: 3 of 6 failed (not more than half); with the old five counted it would
        // be 7 of 11
        for t in 0..6 {
            assert_eq!(b.record(ms(5000 + t), Admit::Pass, t % 2 == 0), None);
        }
        assert_eq!(b.state(ms(5006)), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_limited_probes_through_and_closes_after_successes() {
        let b = breaker();
        for t in 0..3 {
            b.record(ms(t), Admit::Pass, false);
        }
        assert_eq!(
            b.admit(ms(502)),
            (Admit::Probe, Some(Transition::HalfOpened))
        );
        // one probe at a time
        assert!(matches!(b.admit(ms(503)).0, Admit::Deny(_)));
        assert_eq!(b.record(ms(510), Admit::Probe, true), None);
        assert_eq!(b.admit(ms(511)).0, Admit::Probe);
        assert_eq!(
            b.record(ms(520), Admit::Probe, true),
            Some(Transition::Closed)
        );
        assert_eq!(b.admit(ms(521)), (Admit::Pass, None));
        assert_eq!(b.state(ms(521)), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_opens_again_and_an_abandoned_one_frees_its_slot() {
        let b = breaker();
        for t in 0..3 {
            b.record(ms(t), Admit::Pass, false);
        }
        assert_eq!(b.admit(ms(600)).0, Admit::Probe);
        b.abandon(Admit::Probe);
        assert_eq!(b.admit(ms(601)).0, Admit::Probe);
        assert_eq!(
            b.record(ms(602), Admit::Probe, false),
            Some(Transition::Opened)
        );
        assert_eq!(b.admit(ms(700)), (Admit::Deny(ms(402)), None));
        // results of attempts let through before it opened change nothing
        assert_eq!(b.record(ms(701), Admit::Pass, true), None);
        assert!(matches!(b.state(ms(701)), BreakerState::Open { .. }));
    }
}
