//! A deprecated route's lifecycle, compiled from `routes[].deprecation`: its dates as Unix
//! seconds, the `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and `Link` header values built
//! once, whether the sunset has passed (on the compile environment's clock, so tests can move
//! it), and the warnings `gateway check` prints about its dates.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue};

use crate::clock::Clock;
use crate::error::ConfigError;
use crate::source::Location;
use crate::spec::{AfterSunset, DeprecationSpec};

/// `Deprecation` (RFC 9745).
pub static DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
/// `Sunset` (RFC 8594).
pub static SUNSET: HeaderName = HeaderName::from_static("sunset");

/// A compiled `deprecation:` of a route.
#[derive(Debug)]
pub struct Deprecation {
    /// When the route was (or will be) deprecated, Unix seconds.
    pub deprecated_at: i64,
    /// When it stops being served, Unix seconds; `None`: not announced.
    pub sunset_at: Option<i64>,
    /// Where callers read about it (an absolute http(s) URL).
    pub link: Option<String>,
    /// What happens after the sunset.
    pub after_sunset: AfterSunset,
    /// The headers every answer of the route carries, built once.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Where `sunset` (else `deprecated`) sits in the file, for warnings.
    location: Option<Location>,
    /// The route's name, for warnings.
    route: Arc<str>,
    clock: Arc<dyn Clock>,
}

impl Deprecation {
    /// Whether the sunset date has passed (never, without one).
    pub fn sunset_passed(&self) -> bool {
        self.sunset_at.is_some_and(|s| self.now() >= s)
    }

    /// Whether the route refuses calls now (its sunset passed and `after_sunset: refuse`).
    pub fn refuses(&self) -> bool {
        self.after_sunset == AfterSunset::Refuse && self.sunset_passed()
    }

    /// The clock's time, Unix seconds.
    pub fn now(&self) -> i64 {
        i64::try_from(self.clock.unix_time().as_secs()).unwrap_or(i64::MAX)
    }

    /// What `gateway check` warns about: a sunset already past, a sunset before the
    /// deprecation date. The file still compiles and serves.
    pub fn warnings(&self, file: &std::path::Path) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let Some(sunset) = self.sunset_at else {
            return out;
        };
        let warn = |message: String| ConfigError {
            file: PathBuf::from(file),
            location: self.location,
            message,
        };
        if sunset < self.deprecated_at {
            out.push(warn(format!(
                "route {:?}: the sunset ({}) is before the deprecation date ({})",
                self.route,
                rfc3339(sunset),
                rfc3339(self.deprecated_at)
            )));
        }
        if self.sunset_passed() {
            let what = match self.after_sunset {
                AfterSunset::Refuse => "it answers 410 Gone",
                AfterSunset::Serve => "it is still served (after_sunset: serve)",
            };
            out.push(warn(format!(
                "route {:?}: the sunset ({}) is past: {what}",
                self.route,
                rfc3339(sunset)
            )));
        }
        out
    }
}

/// Compiles a route's `deprecation:`; `Err` holds (JSON Pointer below the `deprecation`
/// member, message) for each error.
pub fn compile(
    spec: &DeprecationSpec,
    route: &str,
    location: Option<Location>,
    clock: Arc<dyn Clock>,
) -> Result<Deprecation, Vec<(&'static str, String)>> {
    let mut errors = Vec::new();
    let deprecated_at = parse_date(&spec.deprecated)
        .map_err(|m| errors.push(("/deprecated", m)))
        .ok();
    let sunset_at = match &spec.sunset {
        Some(s) => match parse_date(s) {
            Ok(t) => Some(t),
            Err(m) => {
                errors.push(("/sunset", m));
                None
            }
        },
        None => None,
    };
    if let Some(link) = &spec.link
        && let Err(m) = check_link(link)
    {
        errors.push(("/link", m));
    }
    let Some(deprecated_at) = deprecated_at else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut headers = Vec::with_capacity(3);
    // RFC 9745: an sf-date, `@` and the Unix seconds
    let value = format!("@{deprecated_at}");
    match HeaderValue::from_str(&value) {
        Ok(v) => headers.push((DEPRECATION.clone(), v)),
        Err(e) => errors.push(("/deprecated", e.to_string())),
    }
    if let Some(s) = sunset_at {
        match HeaderValue::from_str(&imf_fixdate(s)) {
            Ok(v) => headers.push((SUNSET.clone(), v)),
            Err(e) => errors.push(("/sunset", e.to_string())),
        }
    }
    if let Some(link) = &spec.link {
        match HeaderValue::from_str(&format!("<{link}>; rel=\"deprecation\"")) {
            Ok(v) => headers.push((http::header::LINK, v)),
            Err(e) => errors.push(("/link", e.to_string())),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Deprecation {
        deprecated_at,
        sunset_at,
        link: spec.link.clone(),
        after_sunset: spec.after_sunset,
        headers,
        location,
        route: Arc::from(route),
        clock,
    })
}

/// The earliest and latest dates accepted: 1970 to 9999 (an HTTP-date has four year digits).
const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// Parses an RFC 3339 full-date (`2026-06-30`, midnight UTC) or date-time
/// (`2026-06-30T12:00:00Z`, `2026-06-30T14:00:00.5+02:00`) into Unix seconds (fractions
/// dropped).
pub fn parse_date(text: &str) -> Result<i64, String> {
    let bad = || {
        format!("{text:?} is not an RFC 3339 date (2026-06-30) or date-time (2026-06-30T12:00:00Z)")
    };
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return Err(bad());
    };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(format!("{text:?}: no such date"));
    }
    let mut seconds = days_from_civil(year, month, day) * 86_400;
    if b.len() > 10 {
        if !matches!(b[10], b'T' | b't') || b.len() < 20 || b[13] != b':' || b[16] != b':' {
            return Err(bad());
        }
        let (Some(h), Some(m), Some(s)) = (digits(11..13), digits(14..16), digits(17..19)) else {
            return Err(bad());
        };
        // 60: a leap second, counted as the next second's start
        if h > 23 || m > 59 || s > 60 {
            return Err(format!("{text:?}: no such time of day"));
        }
        let mut rest = &b[19..];
        if rest.first() == Some(&b'.') {
            let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return Err(bad());
            }
            rest = &rest[1 + n..];
        }
        let offset = match rest {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
                if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
            {
                let oh = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
                let om = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
                if oh > 23 || om > 59 {
                    return Err(bad());
                }
                let off = oh * 3600 + om * 60;
                if *sign == b'+' { off } else { -off }
            }
            _ => {
                return Err(format!(
                    "{text:?}: a date-time needs its offset (Z or +hh:mm), per RFC 3339"
                ));
            }
        };
        seconds += h * 3600 + m * 60 + s - offset;
    }
    if !(0..=MAX_SECONDS).contains(&seconds) {
        return Err(format!("{text:?}: dates run from 1970 to 9999"));
    }
    Ok(seconds)
}

/// Checks that a link is an absolute http(s) URL a header can carry.
fn check_link(link: &str) -> Result<(), String> {
    let rest = link
        .strip_prefix("https://")
        .or_else(|| link.strip_prefix("http://"))
        .ok_or_else(|| format!("link {link:?} must be an absolute http(s) URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("link {link:?} has no host"));
    }
    // `<` and `>` delimit the URI in the Link header; spaces and controls cannot be in a URI
    if link
        .bytes()
        .any(|c| c <= b' ' || c >= 0x7f || matches!(c, b'<' | b'>' | b'"'))
    {
        return Err(format!(
            "link {link:?} holds a character a URI cannot (space, control, <, >, \" or non-ASCII: percent-encode it)"
        ));
    }
    Ok(())
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), as `Sunset` carries it.
pub fn imf_fixdate(unix: i64) -> String {
    httpdate::fmt_http_date(system_time(unix))
}

/// RFC 3339 UTC text of Unix seconds (`2026-06-30T00:00:00Z`), for messages and the admin view.
pub fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(system_time(unix)).to_string()
}

fn system_time(unix: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(unix.clamp(0, MAX_SECONDS)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn spec(deprecated: &str, sunset: Option<&str>, link: Option<&str>) -> DeprecationSpec {
        DeprecationSpec {
            deprecated: deprecated.into(),
            sunset: sunset.map(Into::into),
            link: link.map(Into::into),
            after_sunset: AfterSunset::Refuse,
        }
    }

    fn clock_at(text: &str) -> Arc<dyn Clock> {
        let t = parse_date(text).unwrap();
        Arc::new(ManualClock::new(Duration::from_secs(t as u64)))
    }

    #[test]
    fn dates_and_date_times_parse_to_unix_seconds() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("2026-06-30"), Ok(1_782_777_600));
        assert_eq!(parse_date("2026-06-30T12:00:00Z"), Ok(1_782_820_800));
        assert_eq!(
            parse_date("2026-06-30T14:00:00.250+02:00"),
            Ok(1_782_820_800)
        );
        assert_eq!(parse_date("2026-06-30T11:30:00-00:30"), Ok(1_782_820_800));
        assert_eq!(parse_date("2000-02-29"), Ok(951_782_400));
        for bad in [
            "",
            "2026-6-30",
            "2026-02-30",
            "2026-13-01",
            "2026-06-30T12:00:00",
            "2026-06-30T12:00Z",
            "2026-06-30T24:00:00Z",
            "2026-06-30 12:00:00Z",
            "June 30, 2026",
            "1969-12-31",
            "2026-06-30T12:00:00.Z",
            "2026-06-30T12:00:00+2:00",
        ] {
            assert!(parse_date(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn headers_follow_rfc_9745_and_8594() {
        let d = compile(
            &spec(
                "2026-06-30",
                Some("2099-12-31"),
                Some("https://developer.example.com/orders-v2"),
            ),
            "orders_v1",
            None,
            clock_at("2026-12-03"),
        )
        .unwrap();
        let headers: Vec<(String, String)> = d
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            headers,
            [
                ("deprecation".into(), "@1782777600".into()),
                ("sunset".into(), "Thu, 31 Dec 2099 00:00:00 GMT".into()),
                (
                    "link".into(),
                    "<https://developer.example.com/orders-v2>; rel=\"deprecation\"".into()
                ),
            ]
        );
        assert!(!d.sunset_passed());
        assert!(d.warnings(std::path::Path::new("f.yaml")).is_empty());
    }

    #[test]
    fn the_sunset_passes_on_the_clock() {
        let clock = Arc::new(ManualClock::new(Duration::from_secs(
            parse_date("2026-12-31T23:59:59Z").unwrap() as u64,
        )));
        let d = compile(
            &spec("2026-06-30", Some("2027-01-01"), None),
            "r",
            None,
            clock.clone(),
        )
        .unwrap();
        assert!(!d.sunset_passed() && !d.refuses());
        clock.advance(Duration::from_secs(1));
        assert!(d.sunset_passed() && d.refuses());
        let w = d.warnings(std::path::Path::new("f.yaml"));
        assert_eq!(w.len(), 1);
        assert!(w[0].message.contains("is past"), "{w:?}");
    }

    #[test]
    fn a_sunset_before_the_deprecation_is_a_warning() {
        let d = compile(
            &spec("2099-06-30", Some("2099-01-01"), None),
            "r",
            Some(Location { line: 3, column: 7 }),
            clock_at("2026-12-03"),
        )
        .unwrap();
        let w = d.warnings(std::path::Path::new("f.yaml"));
        assert_eq!(w.len(), 1);
        assert_eq!(
            w[0].to_string(),
            "f.yaml:3:7: route \"r\": the sunset (2099-01-01T00:00:00Z) is before the deprecation date (2099-06-30T00:00:00Z)"
        );
    }

    #[test]
    fn bad_dates_and_links_are_errors_at_their_fields() {
        let e = compile(
            &spec("soon", Some("2026-02-30"), Some("/docs/v2")),
            "r",
            None,
            clock_at("2026-12-03"),
        )
        .unwrap_err();
        let at: Vec<&str> = e.iter().map(|(p, _)| *p).collect();
        assert_eq!(at, ["/deprecated", "/sunset", "/link"]);
        for link in [
            "ftp://x.example/a",
            "https:///a",
            "https://x.example/a b",
            "https://x.example/<a>",
        ] {
            assert!(check_link(link).is_err(), "{link}");
        }
        assert!(check_link("http://docs.example.com:8080/v2?x=1#y").is_ok());
    }
}
