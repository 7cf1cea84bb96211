//! The wait before a retry: exponential backoff with full jitter, and the upstream's own
//! `Retry-After` (RFC 9110 10.2.3: delay-seconds or an HTTP-date).

use std::time::{Duration, SystemTime};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::DurationSpec;

/// Exponential backoff with full jitter: before retry `n` (1 for the first), a random wait
/// between zero and `min(max, base × 2^(n-1))`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    /// The ceiling of the first wait.
    #[serde(default = "default_base")]
    pub base: DurationSpec,
    /// The largest ceiling.
    #[serde(default = "default_max")]
    pub max: DurationSpec,
}

fn default_base() -> DurationSpec {
    DurationSpec::millis(25)
}
fn default_max() -> DurationSpec {
    DurationSpec::secs(1)
}

impl Default for BackoffSpec {
    fn default() -> Self {
        BackoffSpec {
            base: default_base(),
            max: default_max(),
        }
    }
}

impl BackoffSpec {
    /// The wait before retry `n` (1-based), given `unit`, a random number in `[0, 1)`.
    pub fn delay(&self, n: u32, unit: f64) -> Duration {
        let shift = n.saturating_sub(1).min(30);
        let ceiling = self
            .base
            .0
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max.0)
            .min(self.max.0);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// The wait a `Retry-After` value asks for at `now` (a date in the past asks for none); `None`
/// when the value is neither delay-seconds nor an HTTP-date.
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_max_and_jitter_scales_it() {
        let b = BackoffSpec {
            base: DurationSpec::millis(10),
            max: DurationSpec::millis(50),
        };
        assert_eq!(b.delay(1, 0.999_999).as_millis(), 9);
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(10));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(40));
        assert_eq!(b.delay(4, 1.0), Duration::from_millis(50));
        assert_eq!(b.delay(40, 1.0), Duration::from_millis(50));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after(b"120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(b"Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(b"Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(b"-1", now), None);
        assert_eq!(parse_retry_after(b"soon", now), None);
        assert_eq!(parse_retry_after(b"", now), None);
    }
}
