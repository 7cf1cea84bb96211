//! Time as policies see it: a trait so tests move time by hand instead of sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall-clock time since the Unix epoch (token expiry, record TTLs shared between instances).
    fn unix_time(&self) -> Duration;
    /// Monotonic time since an arbitrary origin (local rate limits, leases).
    fn monotonic(&self) -> Duration;
}

/// The real clock.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn unix_time(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that only moves when told to, for deterministic tests.
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<(Duration, Duration)>,
}

impl ManualClock {
    /// A clock showing `unix_time` as wall time and zero as monotonic time.
    pub fn new(unix_time: Duration) -> Self {
        ManualClock {
            state: Mutex::new((unix_time, Duration::ZERO)),
        }
    }

    /// Moves both wall and monotonic time forward.
    pub fn advance(&self, by: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += by;
        s.1 += by;
    }
}

impl Clock for ManualClock {
    fn unix_time(&self) -> Duration {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn monotonic(&self) -> Duration {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// The system clock shifted by a number of seconds read from a file on every call. For
/// end-to-end tests only (compiled with the `test-hooks` feature): the gateway uses it when
/// started with the environment variable [`TEST_CLOCK_OFFSET_ENV`], so a test can move the time
/// of a running binary (expire records) by writing a new offset instead of sleeping. A missing
/// or unreadable file means no offset.
#[cfg(feature = "test-hooks")]
#[derive(Debug)]
pub struct TestOffsetClock {
    system: SystemClock,
    file: std::path::PathBuf,
}

/// The environment variable naming the offset file of [`TestOffsetClock`] (tests only).
#[cfg(feature = "test-hooks")]
pub const TEST_CLOCK_OFFSET_ENV: &str = "GATEWAY_TEST_CLOCK_OFFSET_FILE";

#[cfg(feature = "test-hooks")]
impl TestOffsetClock {
    /// A clock shifted by the seconds written in `file` (an integer, may be absent).
    pub fn new(file: impl Into<std::path::PathBuf>) -> Self {
        TestOffsetClock {
            system: SystemClock::new(),
            file: file.into(),
        }
    }

    fn offset(&self) -> Duration {
        std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs)
    }
}

#[cfg(feature = "test-hooks")]
impl Clock for TestOffsetClock {
    fn unix_time(&self) -> Duration {
        self.system.unix_time() + self.offset()
    }

    fn monotonic(&self) -> Duration {
        self.system.monotonic() + self.offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new(Duration::from_secs(1_700_000_000));
        assert_eq!(c.monotonic(), Duration::ZERO);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.unix_time(), Duration::from_millis(1_700_000_001_500));
        assert_eq!(c.monotonic(), Duration::from_millis(1500));
    }
}
