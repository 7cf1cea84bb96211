//! Human-friendly units in policy files: durations ("250ms", "2s", "1h") and byte sizes ("64KiB").

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a number with a unit, such as `250ms`, `2s`, `5m` or `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DurationSpec(pub Duration);

impl DurationSpec {
    /// A duration of whole seconds.
    pub const fn secs(secs: u64) -> Self {
        DurationSpec(Duration::from_secs(secs))
    }

    /// A duration of whole milliseconds.
    pub const fn millis(ms: u64) -> Self {
        DurationSpec(Duration::from_millis(ms))
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(DurationSpec)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for DurationSpec {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit (ms, s, m, h, d), e.g. \"250ms\", \"2s\", \"1h 30m\".",
            "pattern": "^\\s*[0-9]+\\s*(ns|us|ms|s|sec|secs|m|min|mins|h|hr|hrs|d|days?)(\\s*[0-9]+\\s*(ns|us|ms|s|sec|secs|m|min|mins|h|hr|hrs|d|days?))*\\s*$"
        })
    }
}

/// A size in bytes: a plain integer, or a number with a unit (`B`, `KiB`, `MiB`, `GiB`,
/// or the decimal `KB`, `MB`, `GB`), such as `512KiB` or `5MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` kibibytes.
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }

    /// Parses `"5MiB"`, `"512 KiB"`, `"100"`.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("invalid size {text:?}: expected a number and a unit"))?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "invalid size unit {other:?} in {text:?}: use B, KiB, MiB, GiB, KB, MB or GB"
                ));
            }
        };
        n.checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n != 0 && n.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", n >> 20)
        } else if n != 0 && n.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}B")
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: an integer, or a number with a unit (B, KiB, MiB, GiB, KB, MB, GB), e.g. \"5MiB\".",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+\\s*(B|KiB|MiB|GiB|KB|kB|MB|GB)?\\s*$" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(ByteSize::parse("5MiB"), Ok(ByteSize(5 * 1024 * 1024)));
        assert_eq!(ByteSize::parse("512 KiB"), Ok(ByteSize(512 * 1024)));
        assert_eq!(ByteSize::parse("100"), Ok(ByteSize(100)));
        assert_eq!(ByteSize::parse("2KB"), Ok(ByteSize(2000)));
        assert!(ByteSize::parse("5 parsecs").is_err());
        assert!(ByteSize::parse("99999999999999GiB").is_err());
    }

    #[test]
    fn durations_parse_and_print() {
        let d: DurationSpec = serde_json::from_value(serde_json::json!("250ms")).unwrap();
        assert_eq!(d.0, Duration::from_millis(250));
        assert_eq!(d.to_string(), "250ms");
        assert!(serde_json::from_value::<DurationSpec>(serde_json::json!("soon")).is_err());
    }
}
