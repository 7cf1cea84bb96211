//! Latency recording and percentile extraction on an HDR histogram (microsecond resolution,
//! three significant digits, up to 60 s), shared by the generator and its tests.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency recorded; anything slower is clamped to it (and is a failed run anyway).
pub const MAX_US: u64 = 60_000_000;

/// A histogram of latencies in microseconds.
pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 60 s with 3 significant digits is a fixed, small allocation; the bounds are
    // constants, so this cannot fail.
    match Histogram::new_with_bounds(1, MAX_US, 3) {
        Ok(h) => h,
        Err(e) => panic!("constant histogram bounds rejected: {e}"),
    }
}

/// Records one latency (sub-microsecond values count as 1 µs, huge ones are clamped).
pub fn record(h: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros())
        .unwrap_or(MAX_US)
        .clamp(1, MAX_US);
    h.saturating_record(us);
}

/// The percentiles the report shows, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

/// p50, p99, p99.9 and max of a histogram (all 0 when it is empty).
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        count: h.len(),
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within the histogram's 3-significant-digit precision.
    fn close(got: u64, want: u64) -> bool {
        got.abs_diff(want) <= want / 500 + 1
    }

    #[test]
    fn percentiles_of_a_uniform_set() {
        let mut h = new_histogram();
        for us in 1..=10_000u64 {
            record(&mut h, Duration::from_micros(us));
        }
        let p = percentiles(&h);
        assert_eq!(p.count, 10_000);
        assert!(close(p.p50_us, 5_000), "{p:?}");
        assert!(close(p.p99_us, 9_900), "{p:?}");
        assert!(close(p.p999_us, 9_990), "{p:?}");
        assert!(close(p.max_us, 10_000), "{p:?}");
    }

    #[test]
    fn a_rare_outlier_shows_in_p999_but_not_p99() {
        let mut h = new_histogram();
        for _ in 0..998 {
            record(&mut h, Duration::from_micros(100));
        }
        for _ in 0..2 {
            record(&mut h, Duration::from_millis(50));
        }
        let p = percentiles(&h);
        assert!(close(p.p99_us, 100), "{p:?}");
        assert!(close(p.p999_us, 50_000), "{p:?}");
    }

    #[test]
    fn clamps_and_empty() {
        assert_eq!(percentiles(&new_histogram()), Percentiles::default());
        let mut h = new_histogram();
        record(&mut h, Duration::from_nanos(10));
        record(&mut h, Duration::from_secs(3600));
        assert_eq!(h.min(), 1);
        assert!(close(h.max(), MAX_US));
    }
}
