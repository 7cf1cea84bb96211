//! How the simulator misbehaves: the [`Behaviour`] settings (faults, latency, downtime) and
//! [`Script`]s that change them over time. Plain data with validation; applying them is
//! `faults`' job.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A probability between 0.0 and 1.0 (finite, so it compares and hashes like a number).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Ratio(f64);

impl Ratio {
    /// `value` when it lies in `0.0..=1.0`.
    pub fn new(value: f64) -> Result<Ratio, OutOfRange> {
        if (0.0..=1.0).contains(&value) {
            Ok(Ratio(value))
        } else {
            Err(OutOfRange {
                what: "a ratio",
                range: "0.0 to 1.0",
                value,
            })
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

// NaN never gets in (`new` refuses it), so equality is reflexive.
impl Eq for Ratio {}

impl TryFrom<f64> for Ratio {
    type Error = OutOfRange;
    fn try_from(value: f64) -> Result<Ratio, OutOfRange> {
        Ratio::new(value)
    }
}

impl From<Ratio> for f64 {
    fn from(ratio: Ratio) -> f64 {
        ratio.0
    }
}

/// A percentile between 0 and 100 (finite).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Percentile(f64);

impl Percentile {
    /// `value` when it lies in `0.0..=100.0`.
    pub fn new(value: f64) -> Result<Percentile, OutOfRange> {
        if (0.0..=100.0).contains(&value) {
            Ok(Percentile(value))
        } else {
            Err(OutOfRange {
                what: "a percentile",
                range: "0 to 100",
                value,
            })
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

// NaN never gets in (`new` refuses it), so equality is reflexive.
impl Eq for Percentile {}

impl TryFrom<f64> for Percentile {
    type Error = OutOfRange;
    fn try_from(value: f64) -> Result<Percentile, OutOfRange> {
        Percentile::new(value)
    }
}

impl From<Percentile> for f64 {
    fn from(percentile: Percentile) -> f64 {
        percentile.0
    }
}

/// A number outside the range its type allows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{what} must be between {range}, got {value}")]
pub struct OutOfRange {
    what: &'static str,
    range: &'static str,
    value: f64,
}

/// One point of a latency distribution: `percentile` % of requests take at most `ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyPoint {
    /// Which share of requests (0–100) is at least this fast.
    pub percentile: Percentile,
    /// Milliseconds at that percentile.
    pub ms: u64,
}

impl LatencyPoint {
    /// `percentile` must lie in 0–100 (a value outside it is clamped into it).
    pub fn new(percentile: f64, ms: u64) -> LatencyPoint {
        let clamped = if percentile.is_nan() {
            0.0
        } else {
            percentile.clamp(0.0, 100.0)
        };
        LatencyPoint {
            percentile: Percentile(clamped),
            ms,
        }
    }
}

/// How the simulator misbehaves for ERP and echo requests (never for `/_sim/`). All fields are
/// optional; the default answers every request at once. `PUT /_sim/behaviour` takes this as
/// JSON (unknown fields are refused).
///
/// Which requests fail: every `fail_every`-th one, or each with probability `fail_ratio`, or
/// (neither set) all of them; at most `fail_count` of them. How they fail: `drop_connection`,
/// else `hang`, else `fail_status`. Latency (`delay_ms` + jitter + a draw from
/// `latency_percentiles`) delays every answer, failures included, after the body is read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Sleep this long after reading the body, before answering.
    pub delay_ms: Option<u64>,
    /// Add a uniformly drawn 0..=`jitter_ms` milliseconds to the delay.
    pub jitter_ms: Option<u64>,
    /// Add a delay drawn from this distribution: points of increasing `percentile`, the last
    /// at 100, with non-decreasing `ms`. Between two points the delay is interpolated
    /// linearly; below the first point it is the first point's `ms`.
    pub latency_percentiles: Option<Vec<LatencyPoint>>,
    /// Answer this status with code `SIMULATED_FAILURE` instead of handling the request.
    pub fail_status: Option<u16>,
    /// On a `fail_status` answer, send `Retry-After` with this many seconds.
    pub retry_after: Option<u64>,
    /// How many of the next requests fail (by `fail_status`, `drop_connection` or `hang`);
    /// absent means all of them while set. Counts down; `0` means failing is over.
    pub fail_count: Option<u64>,
    /// Only every Nth request fails (the Nth, 2Nth, ... since this behaviour was set): `2`
    /// fails every other request. Excludes `fail_ratio`.
    pub fail_every: Option<u64>,
    /// Each request fails with this probability (0.0–1.0), drawn from a generator seeded by
    /// `seed`. Excludes `fail_every`.
    pub fail_ratio: Option<Ratio>,
    /// Seeds the generator behind `fail_ratio`, `jitter_ms` and `latency_percentiles`: the same
    /// seed and the same request order give the same faults and delays. Absent: a random seed,
    /// shown as `seed_in_use` by `GET /_sim/behaviour`.
    pub seed: Option<u64>,
    /// Read the headers, then close the TCP connection without any response.
    #[serde(default)]
    pub drop_connection: bool,
    /// Read the whole request, then never answer and keep the connection open (a hung ERP).
    #[serde(default)]
    pub hang: bool,
    /// Close the listening socket (connections are refused, open ones closed) as soon as this
    /// behaviour is set, and listen again on the same port after this many milliseconds.
    pub down_for_ms: Option<u64>,
}

impl Behaviour {
    /// Answer after `ms` milliseconds.
    pub fn delay_ms(ms: u64) -> Behaviour {
        Behaviour {
            delay_ms: Some(ms),
            ..Behaviour::default()
        }
    }

    /// Answer `status` to the next `count` requests (all of them when `None`).
    pub fn fail(status: u16, count: Option<u64>) -> Behaviour {
        Behaviour {
            fail_status: Some(status),
            fail_count: count,
            ..Behaviour::default()
        }
    }

    /// Drop the connection of the next `count` requests (all of them when `None`).
    pub fn drop_connection(count: Option<u64>) -> Behaviour {
        Behaviour {
            drop_connection: true,
            fail_count: count,
            ..Behaviour::default()
        }
    }

    /// Hang (read, never answer) the next `count` requests (all of them when `None`).
    pub fn hang(count: Option<u64>) -> Behaviour {
        Behaviour {
            hang: true,
            fail_count: count,
            ..Behaviour::default()
        }
    }

    /// Answer `status` to every `n`th request (`2`: every other one).
    pub fn fail_every(status: u16, n: u64) -> Behaviour {
        Behaviour {
            fail_status: Some(status),
            fail_every: Some(n),
            ..Behaviour::default()
        }
    }

    /// Answer `status` to each request with probability `ratio`, reproducibly for a `seed`.
    pub fn fail_ratio(status: u16, ratio: Ratio, seed: u64) -> Behaviour {
        Behaviour {
            fail_status: Some(status),
            fail_ratio: Some(ratio),
            seed: Some(seed),
            ..Behaviour::default()
        }
    }

    /// Refuse connections for `ms` milliseconds, then answer normally.
    pub fn down_for_ms(ms: u64) -> Behaviour {
        Behaviour {
            down_for_ms: Some(ms),
            ..Behaviour::default()
        }
    }

    /// The same, with `Retry-After: seconds` on every `fail_status` answer.
    pub fn with_retry_after(self, seconds: u64) -> Behaviour {
        Behaviour {
            retry_after: Some(seconds),
            ..self
        }
    }

    /// Checks what the types cannot: a failure status, one way of choosing failing requests,
    /// a way to fail when one is chosen, and a well-formed latency distribution.
    pub fn validate(&self) -> Result<(), InvalidBehaviour> {
        let invalid = |message: String| Err(InvalidBehaviour(message));
        if let Some(status) = self.fail_status
            && !(400..=599).contains(&status)
        {
            return invalid(format!(
                "fail_status must be between 400 and 599, got {status}"
            ));
        }
        if self.fail_every == Some(0) {
            return invalid("fail_every must be at least 1".into());
        }
        if self.fail_every.is_some() && self.fail_ratio.is_some() {
            return invalid("fail_every and fail_ratio exclude each other: pick one".into());
        }
        let fails = self.fail_status.is_some() || self.drop_connection || self.hang;
        if !fails {
            for (set, field) in [
                (self.fail_every.is_some(), "fail_every"),
                (self.fail_ratio.is_some(), "fail_ratio"),
                (self.fail_count.is_some(), "fail_count"),
            ] {
                if set {
                    return invalid(format!(
                        "{field} chooses which requests fail; also say how they fail \
                         (fail_status, drop_connection or hang)"
                    ));
                }
            }
        }
        if self.retry_after.is_some() && self.fail_status.is_none() {
            return invalid("retry_after is sent on fail_status answers: set fail_status".into());
        }
        if let Some(points) = &self.latency_percentiles {
            validate_latency(points)?;
        }
        Ok(())
    }
}

fn validate_latency(points: &[LatencyPoint]) -> Result<(), InvalidBehaviour> {
    let invalid = |message: &str| Err(InvalidBehaviour(format!("latency_percentiles: {message}")));
    let Some(last) = points.last() else {
        return invalid("needs at least one point");
    };
    if last.percentile.get() != 100.0 {
        return invalid("the last point must be at percentile 100");
    }
    for pair in points.windows(2) {
        if pair[1].percentile <= pair[0].percentile {
            return invalid("percentiles must increase from point to point");
        }
        if pair[1].ms < pair[0].ms {
            return invalid("ms must not decrease as the percentile grows");
        }
    }
    Ok(())
}

/// A behaviour or script the simulator refuses, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidBehaviour(String);

/// One step of a [`Script`]: a behaviour held for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// How long this phase lasts, in milliseconds (at least 1). The last phase of a script
    /// that does not repeat is held after it ends.
    pub duration_ms: u64,
    /// What the simulator does during the phase; its counters (`fail_count`, `fail_every`)
    /// start afresh when the phase begins, and its `down_for_ms` starts then.
    #[serde(default)]
    pub behaviour: Behaviour,
}

impl Phase {
    pub fn new(duration_ms: u64, behaviour: Behaviour) -> Phase {
        Phase {
            duration_ms,
            behaviour,
        }
    }
}

/// Behaviours over time, e.g. healthy, then a brownout, then healthy again. `PUT /_sim/script`
/// takes this as JSON; setting a behaviour or resetting ends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The phases in order (at least one).
    pub phases: Vec<Phase>,
    /// Start again from the first phase after the last one ends, instead of holding the last.
    #[serde(default)]
    pub repeat: bool,
}

impl Script {
    /// A script that holds its last phase.
    pub fn new(phases: Vec<Phase>) -> Script {
        Script {
            phases,
            repeat: false,
        }
    }

    pub fn validate(&self) -> Result<(), InvalidBehaviour> {
        if self.phases.is_empty() {
            return Err(InvalidBehaviour("a script needs at least one phase".into()));
        }
        for (index, phase) in self.phases.iter().enumerate() {
            if phase.duration_ms == 0 {
                return Err(InvalidBehaviour(format!(
                    "phase {index}: duration_ms must be at least 1"
                )));
            }
            phase
                .behaviour
                .validate()
                .map_err(|err| InvalidBehaviour(format!("phase {index}: {err}")))?;
        }
        Ok(())
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.phases.iter().map(|p| p.duration_ms).sum();
        write!(
            f,
            "{} phase(s) over {total} ms{}",
            self.phases.len(),
            if self.repeat { ", repeating" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Behaviour {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn json_rejects_unknown_fields_and_out_of_range_numbers() {
        assert_eq!(parse(r#"{"fail_status":503}"#), Behaviour::fail(503, None));
        assert!(serde_json::from_str::<Behaviour>(r#"{"fail_stat":503}"#).is_err());
        assert!(serde_json::from_str::<Behaviour>(r#"{"fail_ratio":1.5}"#).is_err());
        assert!(serde_json::from_str::<Behaviour>(r#"{"fail_ratio":-0.1}"#).is_err());
        let points = r#"{"latency_percentiles":[{"percentile":101,"ms":1}]}"#;
        assert!(serde_json::from_str::<Behaviour>(points).is_err());
        let ratio = parse(r#"{"fail_status":503,"fail_ratio":0.25,"seed":7}"#);
        assert_eq!(ratio, Behaviour::fail_ratio(503, Ratio(0.25), 7));
        let json = serde_json::to_value(&ratio).unwrap();
        assert_eq!(json["fail_ratio"], 0.25);
        assert_eq!(serde_json::from_value::<Behaviour>(json).unwrap(), ratio);
    }

    #[test]
    fn validate_explains_what_is_inconsistent() {
        let message = |b: Behaviour| b.validate().unwrap_err().to_string();
        assert!(message(Behaviour::fail(200, None)).contains("between 400 and 599"));
        assert!(Behaviour::fail(599, None).validate().is_ok());
        assert!(message(Behaviour::fail_every(503, 0)).contains("at least 1"));
        let both = Behaviour {
            fail_ratio: Some(Ratio(0.5)),
            ..Behaviour::fail_every(503, 2)
        };
        assert!(message(both).contains("exclude each other"));
        let how = Behaviour {
            fail_ratio: Some(Ratio(0.5)),
            ..Behaviour::default()
        };
        assert!(message(how).contains("also say how they fail"));
        let retry = Behaviour::delay_ms(1).with_retry_after(3);
        assert!(message(retry).contains("set fail_status"));
        assert!(Behaviour::hang(Some(1)).validate().is_ok());
        assert!(Behaviour::down_for_ms(5).validate().is_ok());
    }

    #[test]
    fn latency_points_must_form_a_distribution() {
        let with = |points: Vec<LatencyPoint>| Behaviour {
            latency_percentiles: Some(points),
            ..Behaviour::default()
        };
        let ok = with(vec![
            LatencyPoint::new(50.0, 10),
            LatencyPoint::new(100.0, 90),
        ]);
        assert!(ok.validate().is_ok());
        for bad in [
            vec![],
            vec![LatencyPoint::new(50.0, 10)],
            vec![LatencyPoint::new(50.0, 10), LatencyPoint::new(50.0, 20)],
            vec![LatencyPoint::new(50.0, 30), LatencyPoint::new(100.0, 20)],
        ] {
            assert!(with(bad.clone()).validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scripts_need_phases_that_last_and_are_valid() {
        let script: Script = serde_json::from_str(
            r#"{"phases":[{"duration_ms":100,"behaviour":{"fail_status":503,"fail_every":2}},
                           {"duration_ms":50}]}"#,
        )
        .unwrap();
        assert!(script.validate().is_ok());
        assert_eq!(script.phases[1].behaviour, Behaviour::default());
        assert!(!script.repeat);
        assert!(Script::new(vec![]).validate().is_err());
        assert!(
            Script::new(vec![Phase::new(0, Behaviour::default())])
                .validate()
                .is_err()
        );
        let err = Script::new(vec![
            Phase::new(10, Behaviour::default()),
            Phase::new(10, Behaviour::fail(42, None)),
        ])
        .validate()
        .unwrap_err();
        assert!(err.to_string().starts_with("phase 1: "), "{err}");
    }
}
