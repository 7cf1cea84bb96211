//! Timestamps into the canonical form, RFC 3339 in UTC with a `Z` (`2024-11-28T12:00:00.123Z`):
//! from Walmart's epoch milliseconds and from ISO 8601 stamps carrying a local offset
//! (Shopify's `2008-01-10T11:00:00-05:00`).
//!
//! Fractional seconds are printed with as many digits as they need and no more, so the same
//! instant always has the same text. The outbound mappings go the other way: to Walmart's
//! epoch milliseconds and to eBay's UTC stamps with exactly three fractional digits.

use jiff::Timestamp;
use jiff::tz::Offset;

/// Why a timestamp could not be brought to UTC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not an RFC 3339 / ISO 8601 date-time with an offset (a stamp without one is ambiguous).
    #[error("{text:?} is not an RFC 3339 timestamp with a UTC offset: {reason}")]
    Unparsable { text: String, reason: String },
    /// Outside the years 0000 to 9999 RFC 3339 can write.
    #[error("{0} is outside the range RFC 3339 can express")]
    OutOfRange(String),
}

/// Epoch milliseconds (Walmart's `orderDate`) as an RFC 3339 UTC timestamp.
pub fn epoch_millis_to_rfc3339(millis: i64) -> Result<String, TimeError> {
    let ts = Timestamp::from_millisecond(millis)
        .map_err(|_| TimeError::OutOfRange(format!("epoch millisecond {millis}")))?;
    format_utc(ts)
}

/// Any RFC 3339 timestamp (any offset, or `Z`) as the same instant in UTC.
pub fn to_utc(text: &str) -> Result<String, TimeError> {
    let ts: Timestamp = text
        .parse()
        .map_err(|err: jiff::Error| TimeError::Unparsable {
            text: text.to_owned(),
            reason: err.to_string(),
        })?;
    format_utc(ts)
}

/// An RFC 3339 timestamp (any offset) as epoch milliseconds, for Walmart's `shipDateTime`.
/// Digits below the millisecond are dropped (the instant is truncated toward the past).
pub fn rfc3339_to_epoch_millis(text: &str) -> Result<i64, TimeError> {
    floor_millis(parse(text)?, text)
}

/// An RFC 3339 timestamp (any offset) in UTC with exactly three fractional digits
/// (`2024-11-28T12:00:00.000Z`), the form eBay's `shippedDate` takes. Digits below the
/// millisecond are dropped, as for [`rfc3339_to_epoch_millis`].
pub fn to_utc_millis(text: &str) -> Result<String, TimeError> {
    let millis = floor_millis(parse(text)?, text)?;
    let whole = Timestamp::from_millisecond(millis.div_euclid(1000) * 1000)
        .map_err(|_| TimeError::OutOfRange(text.to_owned()))?;
    let seconds = format_utc(whole)?;
    let stem = seconds.strip_suffix('Z').unwrap_or(&seconds);
    Ok(format!("{stem}.{:03}Z", millis.rem_euclid(1000)))
}

/// Whole milliseconds toward the past (jiff's `as_millisecond` truncates toward zero, which
/// would move instants before 1970 forward).
fn floor_millis(ts: Timestamp, text: &str) -> Result<i64, TimeError> {
    i64::try_from(ts.as_nanosecond().div_euclid(1_000_000))
        .map_err(|_| TimeError::OutOfRange(text.to_owned()))
}

fn parse(text: &str) -> Result<Timestamp, TimeError> {
    text.parse()
        .map_err(|err: jiff::Error| TimeError::Unparsable {
            text: text.to_owned(),
            reason: err.to_string(),
        })
}

fn format_utc(ts: Timestamp) -> Result<String, TimeError> {
    let dt = Offset::UTC.to_datetime(ts);
    let year = dt.year();
    if !(0..=9999).contains(&year) {
        return Err(TimeError::OutOfRange(ts.to_string()));
    }
    // written digit by digit: `format!` cost more than the parse, on every timestamp of every
    // document
    let mut out = String::with_capacity(30);
    push_digits(&mut out, year.unsigned_abs().into(), 4);
    out.push('-');
    push_digits(&mut out, dt.month().unsigned_abs().into(), 2);
    out.push('-');
    push_digits(&mut out, dt.day().unsigned_abs().into(), 2);
    out.push('T');
    push_digits(&mut out, dt.hour().unsigned_abs().into(), 2);
    out.push(':');
    push_digits(&mut out, dt.minute().unsigned_abs().into(), 2);
    out.push(':');
    push_digits(&mut out, dt.second().unsigned_abs().into(), 2);
    let nanos = dt.subsec_nanosecond().unsigned_abs();
    if nanos > 0 {
        // as many digits as the fraction needs: trailing zeros dropped
        let (mut digits, mut width) = (nanos, 9);
        while digits % 10 == 0 {
            digits /= 10;
            width -= 1;
        }
        out.push('.');
        push_digits(&mut out, digits, width);
    }
    out.push('Z');
    Ok(out)
}

/// `value` in `width` decimal digits, zero-padded (`value` has no more digits than that).
fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10u32.pow(place) % 10) as u8;
        out.push(char::from(b'0' + digit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_millis_become_utc() {
        assert_eq!(
            epoch_millis_to_rfc3339(1_568_466_571_000).as_deref(),
            Ok("2019-09-14T13:09:31Z")
        );
        assert_eq!(
            epoch_millis_to_rfc3339(1_732_795_200_123).as_deref(),
            Ok("2024-11-28T12:00:00.123Z")
        );
        assert_eq!(
            epoch_millis_to_rfc3339(0).as_deref(),
            Ok("1970-01-01T00:00:00Z")
        );
        assert!(epoch_millis_to_rfc3339(i64::MAX).is_err());
    }

    #[test]
    fn local_offsets_become_utc() {
        assert_eq!(
            to_utc("2008-01-10T11:00:00-05:00").as_deref(),
            Ok("2008-01-10T16:00:00Z")
        );
        assert_eq!(
            to_utc("2024-03-31T01:30:00+09:00").as_deref(),
            Ok("2024-03-30T16:30:00Z")
        );
        assert_eq!(
            to_utc("2022-11-29T19:42:04.284Z").as_deref(),
            Ok("2022-11-29T19:42:04.284Z")
        );
        assert_eq!(
            to_utc("2024-11-28T12:00:00.000Z").as_deref(),
            Ok("2024-11-28T12:00:00Z")
        );
        assert_eq!(
            to_utc("2024-11-28T23:59:59.5+05:30").as_deref(),
            Ok("2024-11-28T18:29:59.5Z")
        );
    }

    #[test]
    fn timestamps_become_epoch_millis_and_millisecond_utc() {
        assert_eq!(
            rfc3339_to_epoch_millis("2024-11-28T12:00:00.123Z"),
            Ok(1_732_795_200_123)
        );
        assert_eq!(
            rfc3339_to_epoch_millis("2019-09-14T08:09:31-05:00"),
            Ok(1_568_466_571_000)
        );
        assert_eq!(
            rfc3339_to_epoch_millis("2024-11-28T12:00:00.1239Z"),
            Ok(1_732_795_200_123)
        );
        assert_eq!(rfc3339_to_epoch_millis("1969-12-31T23:59:59.9995Z"), Ok(-1));
        assert_eq!(
            to_utc_millis("2008-01-10T11:00:00-05:00").as_deref(),
            Ok("2008-01-10T16:00:00.000Z")
        );
        assert_eq!(
            to_utc_millis("2024-11-28T23:59:59.5+05:30").as_deref(),
            Ok("2024-11-28T18:29:59.500Z")
        );
        assert_eq!(
            to_utc_millis("2022-11-29T19:42:04.28461Z").as_deref(),
            Ok("2022-11-29T19:42:04.284Z")
        );
        assert_eq!(
            to_utc_millis("1969-12-31T23:59:59.9995Z").as_deref(),
            Ok("1969-12-31T23:59:59.999Z")
        );
        assert!(rfc3339_to_epoch_millis("2024-11-28T12:00:00").is_err());
        assert!(to_utc_millis("2024-11-28").is_err());
    }

    /// The digit-by-digit writer against `format!`, over instants from year 0 to jiff's last in 9999 with
    /// fractions of every length.
    #[test]
    fn the_written_stamp_is_what_format_writes() {
        let reference = |ts: Timestamp| {
            let dt = Offset::UTC.to_datetime(ts);
            let mut out = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                dt.year(),
                dt.month(),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second()
            );
            let nanos = dt.subsec_nanosecond();
            if nanos > 0 {
                out.push('.');
                out.push_str(format!("{nanos:09}").trim_end_matches('0'));
            }
            out.push('Z');
            out
        };
        let first = Timestamp::from_second(-62_167_219_200).expect("year 0");
        let last = Timestamp::from_second(253_402_207_200).expect("year 9999");
        let span = (last.as_second() - first.as_second()) as u64;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..20_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let second = first.as_second() + (seed % span) as i64;
            // fractions of 0 to 9 digits, and none
            let nanos = ((seed >> 20) % 1_000_000_000) as i32 / 10i32.pow((i % 10) as u32)
                * 10i32.pow((i % 10) as u32);
            let ts = Timestamp::new(second, nanos).expect("in range");
            assert_eq!(
                format_utc(ts).as_deref(),
                Ok(reference(ts).as_str()),
                "{ts}"
            );
        }
        assert_eq!(format_utc(first).as_deref(), Ok("0000-01-01T00:00:00Z"));
        assert_eq!(format_utc(last).as_deref(), Ok("9999-12-30T22:00:00Z"));
    }

    #[test]
    fn stamps_without_offset_are_refused() {
        assert!(to_utc("2024-11-28T12:00:00").is_err());
        assert!(to_utc("2024-11-28").is_err());
        assert!(to_utc("yesterday").is_err());
    }
}
