//! Conversion between `serde_json::Value` and jaq's value type that never sends a number
//! through `f64`: integers stay integers of any size and decimal literals keep their text.
//!
//! The workspace builds serde_json with `arbitrary_precision`, so a `Number` carries its
//! literal text; jaq-json keeps non-integer literals as decimal text too (`Num::Dec`) until
//! arithmetic touches them. Going through that text both ways is what keeps `9.99` and
//! `9007199254740993` intact.

use std::str::FromStr;

use jaq_core::ValT as _;
use jaq_json::{Map as JaqMap, Num, Rc, Val};
use serde_json::{Map, Number, Value};

/// Why a jq result cannot be a JSON document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotJson {
    /// NaN or an infinity, which only float arithmetic produces.
    #[error("the number {0} has no JSON representation")]
    NonFinite(String),
    /// A number whose text serde_json does not accept.
    #[error("the number {0} is not a JSON number")]
    BadNumber(String),
    /// jq allows any value as an object key; JSON only strings.
    #[error("object key {0} is not a string")]
    NonStringKey(String),
    /// Byte strings (`tobytes`) have no JSON form.
    #[error("a byte string has no JSON representation")]
    ByteString,
}

/// Moves a JSON value into jaq's representation; strings are moved, not copied.
pub fn to_jaq(value: Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(b),
        Value::Number(n) => number_to_jaq(&n),
        Value::String(s) => Val::utf8_str(s.into_bytes()),
        Value::Array(items) => Val::Arr(Rc::new(items.into_iter().map(to_jaq).collect())),
        Value::Object(map) => {
            let mut out = JaqMap::with_capacity_and_hasher(map.len(), Default::default());
            for (k, v) in map {
                out.insert(Val::utf8_str(k.into_bytes()), to_jaq(v));
            }
            Val::obj(out)
        }
    }
}

/// A JSON number as a jaq number: machine integers directly, anything else from its text
/// (jaq then picks a big integer or keeps the decimal literal).
pub fn number_to_jaq(n: &Number) -> Val {
    if let Some(i) = n.as_i64().and_then(|i| isize::try_from(i).ok()) {
        return Val::from(i);
    }
    // `from_num` only fails for value types that cannot hold numbers; jaq-json's can.
    Val::from_num(n.as_str()).unwrap_or(Val::Null)
}

/// Moves a jq result back into a JSON value, failing on what JSON cannot express.
pub fn from_jaq(val: Val) -> Result<Value, NotJson> {
    Ok(match val {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(b),
        Val::Num(n) => Value::Number(num_to_json(&n)?),
        Val::TStr(bytes) => Value::String(bytes_to_string(*bytes)),
        Val::BStr(_) => return Err(NotJson::ByteString),
        Val::Arr(items) => {
            let items = Rc::try_unwrap(items).unwrap_or_else(|shared| (*shared).clone());
            Value::Array(items.into_iter().map(from_jaq).collect::<Result<_, _>>()?)
        }
        Val::Obj(map) => {
            let map = Rc::try_unwrap(map).unwrap_or_else(|shared| (*shared).clone());
            let mut out = Map::new();
            for (k, v) in map {
                let Val::TStr(key) = k else {
                    return Err(NotJson::NonStringKey(k.to_string()));
                };
                out.insert(bytes_to_string(*key), from_jaq(v)?);
            }
            Value::Object(out)
        }
    })
}

fn num_to_json(n: &Num) -> Result<Number, NotJson> {
    match n {
        Num::Int(i) => Ok(Number::from(*i as i64)),
        Num::BigInt(_) | Num::Dec(_) => {
            let text = n.to_string();
            Number::from_str(&text).map_err(|_| NotJson::BadNumber(text))
        }
        Num::Float(f) => Number::from_f64(*f).ok_or_else(|| NotJson::NonFinite(n.to_string())),
    }
}

/// jq strings are bytes that are meant to be UTF-8; a mapping that slices a multi-byte
/// character gets replacement characters rather than an error.
fn bytes_to_string(bytes: bytes::Bytes) -> String {
    match String::from_utf8(Vec::from(bytes)) {
        Ok(s) => s,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    }
}

/// The text of a jaq string value, if it is one.
pub fn as_str(val: &Val) -> Option<&str> {
    match val {
        Val::TStr(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(text: &str) -> String {
        let value: Value = serde_json::from_str(text).expect("test JSON");
        let back = from_jaq(to_jaq(value)).expect("representable");
        serde_json::to_string(&back).expect("serializable")
    }

    #[test]
    fn numbers_keep_their_literal_text() {
        assert_eq!(round_trip("9.99"), "9.99");
        assert_eq!(round_trip("9007199254740993"), "9007199254740993");
        assert_eq!(
            round_trip("123456789012345678901234567890"),
            "123456789012345678901234567890"
        );
        assert_eq!(round_trip("-0.10"), "-0.10");
        assert_eq!(round_trip("[0.1,{\"a\":0.2}]"), "[0.1,{\"a\":0.2}]");
    }

    #[test]
    fn strings_and_structure_survive() {
        let value = json!({"a": ["x", null, true, {"b": "é"}], "c": {}});
        assert_eq!(from_jaq(to_jaq(value.clone())), Ok(value));
    }

    #[test]
    fn non_json_results_are_refused() {
        assert!(matches!(
            from_jaq(Val::from(f64::NAN)),
            Err(NotJson::NonFinite(_))
        ));
        let mut map = JaqMap::default();
        map.insert(Val::from(1isize), Val::Null);
        assert!(matches!(
            from_jaq(Val::obj(map)),
            Err(NotJson::NonStringKey(_))
        ));
    }
}
