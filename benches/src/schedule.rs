//! The open-loop schedule and a deterministic model of the generator that follows it.
//!
//! Coordinated omission: a generator that waits for a response before sending the next request
//! sends less while the system stalls, so the stall hides in a few samples. Our open loop fixes
//! every request's *intended* send time in advance (slot `i` at `start + i / rate`), whether or
//! not a connection is free then, and measures each latency from that intended time. A request
//! that had to wait for a connection freed by a slow response carries that wait in its latency,
//! as a user arriving at that moment would (the correction of wrk2 and `oha
//! --latency-correction`). [`simulate`] runs the very same rules on a synthetic system so the
//! tests can show a stall reaching the corrected percentiles.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::latency::{new_histogram, record};

/// Slot times of an open loop at a fixed rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Offered rate, requests per second (> 0).
    pub rate: f64,
    /// Number of slots.
    pub slots: u64,
}

impl Schedule {
    /// `rate` requests per second for `duration` (at least one slot).
    pub fn new(rate: f64, duration: Duration) -> Schedule {
        let rate = rate.max(1e-3);
        let slots = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
        Schedule { rate, slots }
    }

    /// Intended send time of slot `i`, from the schedule's start.
    pub fn intended(&self, i: u64) -> Duration {
        Duration::from_nanos((i as f64 * 1e9 / self.rate).round() as u64)
    }

    /// The length of the schedule (the intended time one slot past the last).
    pub fn span(&self) -> Duration {
        self.intended(self.slots)
    }
}

/// What the generator measures for one request: from its intended send time (corrected) and
/// from when it actually went out (what a naive closed-loop generator reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Response complete minus intended send time.
    pub corrected: Duration,
    /// Response complete minus actual send time.
    pub service: Duration,
}

/// Times of one request: intended, actually sent, completed (all from the schedule's start).
pub fn timing(intended: Duration, sent: Duration, done: Duration) -> Timing {
    Timing {
        corrected: done.saturating_sub(intended),
        service: done.saturating_sub(sent),
    }
}

/// Result of [`simulate`].
pub struct Simulated {
    /// Latency from the intended send time.
    pub corrected: Histogram<u64>,
    /// Latency from the actual send time.
    pub service: Histogram<u64>,
}

/// Runs the generator's rules on a synthetic system: `connections` keep-alive connections,
/// each carrying one request at a time; the next slot goes to the connection free earliest (as
/// the real workers take slots from one queue in the order they become free) and is sent at
/// `max(intended, connection free)`; `service(send_time)` is how long the system takes to
/// answer a request sent then.
pub fn simulate(
    schedule: &Schedule,
    connections: usize,
    service: impl Fn(Duration) -> Duration,
) -> Simulated {
    let mut free = vec![Duration::ZERO; connections.max(1)];
    let mut corrected = new_histogram();
    let mut measured = new_histogram();
    for i in 0..schedule.slots {
        let intended = schedule.intended(i);
        let (c, at) = free
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(_, t)| t)
            .unwrap_or((0, Duration::ZERO));
        let sent = intended.max(at);
        let done = sent + service(sent);
        free[c] = done;
        let t = timing(intended, sent, done);
        record(&mut corrected, t.corrected);
        record(&mut measured, t.service);
    }
    Simulated {
        corrected,
        service: measured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::percentiles;

    #[test]
    fn slots_are_evenly_spaced() {
        let s = Schedule::new(4000.0, Duration::from_secs(2));
        assert_eq!(s.slots, 8000);
        assert_eq!(s.intended(0), Duration::ZERO);
        assert_eq!(s.intended(1), Duration::from_micros(250));
        assert_eq!(s.intended(4000), Duration::from_secs(1));
        assert_eq!(s.span(), Duration::from_secs(2));
    }

    #[test]
    fn timing_from_intended_and_from_send() {
        let t = timing(
            Duration::from_millis(10),
            Duration::from_millis(14),
            Duration::from_millis(15),
        );
        assert_eq!(t.corrected, Duration::from_millis(5));
        assert_eq!(t.service, Duration::from_millis(1));
    }

    #[test]
    fn a_fast_system_below_capacity_shows_its_service_time() {
        // 1000/s on one connection, 100 µs per request: never queues.
        let s = Schedule::new(1000.0, Duration::from_secs(10));
        let sim = simulate(&s, 1, |_| Duration::from_micros(100));
        let c = percentiles(&sim.corrected);
        assert_eq!(c.count, 10_000);
        assert_eq!((c.p50_us, c.p99_us, c.p999_us), (100, 100, 100));
    }

    /// The system freezes for one second in a ten-second run at 1000/s. A naive measurement
    /// sees one slow request (p99 stays 100 µs); measured from the intended send times, the
    /// thousand requests that should have gone out during the stall all waited, so ~10% of
    /// samples are slow and p99 is ~0.9 s.
    #[test]
    fn a_stall_shows_in_the_corrected_percentiles() {
        let s = Schedule::new(1000.0, Duration::from_secs(10));
        let stall_from = Duration::from_secs(5);
        let stall_to = Duration::from_secs(6);
        let base = Duration::from_micros(100);
        let service = |sent: Duration| {
            if sent >= stall_from && sent < stall_to {
                (stall_to - sent) + base
            } else {
                base
            }
        };
        let sim = simulate(&s, 1, service);
        let naive = percentiles(&sim.service);
        let corrected = percentiles(&sim.corrected);
        assert_eq!(naive.p99_us, 100, "naive {naive:?}");
        assert!(naive.max_us >= 999_000, "naive {naive:?}");
        assert_eq!(corrected.p50_us, 100, "corrected {corrected:?}");
        assert!(
            (850_000..=950_000).contains(&corrected.p99_us),
            "corrected {corrected:?}"
        );
        assert!(corrected.p999_us >= 985_000, "corrected {corrected:?}");
        // every slot of the stall is accounted for (1000), and so are the ~111 that arrive
        // while the backlog drains (at 10k/s against 1k/s arriving: 1000 / 9000 s)
        let slow = sim.corrected.count_between(1_000, crate::latency::MAX_US);
        assert_eq!(slow, 1111, "{slow} slow samples");
    }

    #[test]
    fn more_connections_do_not_hide_a_stall_either() {
        // 8 connections: the stall ties all of them up within 8 ms, then slots queue.
        let s = Schedule::new(1000.0, Duration::from_secs(10));
        let service = |sent: Duration| {
            let (a, b) = (Duration::from_secs(5), Duration::from_secs(6));
            if sent >= a && sent < b {
                (b - sent) + Duration::from_micros(100)
            } else {
                Duration::from_micros(100)
            }
        };
        let sim = simulate(&s, 8, service);
        let corrected = percentiles(&sim.corrected);
        assert!(corrected.p99_us >= 850_000, "{corrected:?}");
    }

    #[test]
    fn overload_grows_without_bound() {
        // offered 2000/s, capacity 1000/s: latency from the intended time keeps growing.
        let s = Schedule::new(2000.0, Duration::from_secs(2));
        let sim = simulate(&s, 1, |_| Duration::from_millis(1));
        let c = percentiles(&sim.corrected);
        assert!(c.max_us >= 1_900_000, "{c:?}");
        assert!(c.p50_us >= 900_000, "{c:?}");
        assert_eq!(percentiles(&sim.service).p99_us, 1000);
    }
}
