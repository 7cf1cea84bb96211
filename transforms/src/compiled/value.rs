//! Values as the compiled form moves them: borrowed from the input document where a mapping
//! only reads it, owned where it builds; and jq's meaning of truth, order, arithmetic,
//! indexing and text on them, for the cases the compiled form is sure of.

use std::borrow::Cow;
use std::cmp::Ordering;

use jaq_core::ops::{Cmp, Math};
use serde_json::{Map, Number, Value};

/// A value during a run: a part of the input (or of the program's constants), or built.
pub(crate) type V<'a> = Cow<'a, Value>;

pub(crate) static NULL: Value = Value::Null;
static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

/// Why a run stopped before its end.
#[derive(Debug)]
pub(crate) enum Stop {
    /// `error(v)` (and so the prelude's `reject`): the value is the program's own.
    Error(Value),
    /// Any other error (a type error, a native refusing its input): a `try` without `catch`
    /// may swallow it, but its message is jaq's to give. Raised only where jaq surely fails
    /// too, since a swallowed error changes the result.
    Opaque,
    /// Something the compiled form does not reproduce exactly (floats, object order, ...):
    /// the run is given to jaq.
    Fallback,
    /// `first(f)` has its value.
    Done,
    /// An error raised after a `try`'s body gave a value, which that `try` must not catch.
    Downstream(Box<Stop>),
}

pub(crate) type R<T = ()> = Result<T, Stop>;

pub(crate) fn boolean(b: bool) -> V<'static> {
    Cow::Borrowed(if b { &TRUE } else { &FALSE })
}

pub(crate) fn string<'a>(text: String) -> V<'a> {
    Cow::Owned(Value::String(text))
}

pub(crate) fn int<'a>(i: i64) -> V<'a> {
    Cow::Owned(Value::Number(Number::from(i)))
}

/// jq's truth: everything but `null` and `false`.
pub(crate) fn truthy(value: &Value) -> bool {
    !matches!(value, Value::Null | Value::Bool(false))
}

/// A value to put into a built document. A number taken from the input keeps its text, as
/// jaq's conversion does, except `-0`, which jaq reads as the integer 0.
pub(crate) fn owned(value: V<'_>) -> Value {
    match value {
        Cow::Owned(v) => v,
        Cow::Borrowed(v) => clone(v),
    }
}

fn clone(value: &Value) -> Value {
    match value {
        Value::Number(n) if n.as_str() == "-0" => Value::Number(Number::from(0)),
        Value::Array(items) => Value::Array(items.iter().map(clone).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), clone(v)))
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

/// The integer a JSON number is, when it is one a machine word holds.
pub(crate) fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn rank(value: &Value) -> u8 {
    match value {
        Value::Null => 0,
        Value::Bool(false) => 1,
        Value::Bool(true) => 2,
        Value::Number(_) => 3,
        Value::String(_) => 4,
        Value::Array(_) => 5,
        Value::Object(_) => 6,
    }
}

/// jq's `==`.
pub(crate) fn equal(a: &Value, b: &Value) -> R<bool> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Ok(x == y),
            _ if x.as_str() == y.as_str() => Ok(true),
            _ => Err(Stop::Fallback),
        },
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Ok(false);
            }
            for (x, y) in x.iter().zip(y) {
                if !equal(x, y)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return Ok(false);
            }
            for (k, x) in x {
                match y.get(k) {
                    Some(y) if equal(x, y)? => {}
                    _ => return Ok(false),
                }
            }
            Ok(true)
        }
        _ => Ok(rank(a) == rank(b) && a == b),
    }
}

/// jq's order, where the compiled form knows it.
fn order(a: &Value, b: &Value) -> R<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Ok(x.cmp(&y)),
            _ if x.as_str() == y.as_str() => Ok(Ordering::Equal),
            _ => Err(Stop::Fallback),
        },
        (Value::String(x), Value::String(y)) => Ok(x.as_bytes().cmp(y.as_bytes())),
        (Value::Array(x), Value::Array(y)) => {
            for (x, y) in x.iter().zip(y) {
                match order(x, y)? {
                    Ordering::Equal => {}
                    other => return Ok(other),
                }
            }
            Ok(x.len().cmp(&y.len()))
        }
        (Value::Object(_), Value::Object(_)) => Err(Stop::Fallback),
        _ => Ok(rank(a).cmp(&rank(b))),
    }
}

pub(crate) fn compare(op: Cmp, a: &Value, b: &Value) -> R<bool> {
    Ok(match op {
        Cmp::Eq => equal(a, b)?,
        Cmp::Ne => !equal(a, b)?,
        Cmp::Lt => order(a, b)? == Ordering::Less,
        Cmp::Le => order(a, b)? != Ordering::Greater,
        Cmp::Gt => order(a, b)? == Ordering::Greater,
        Cmp::Ge => order(a, b)? != Ordering::Less,
    })
}

/// jq's arithmetic on integers, strings, arrays and objects; anything that would take jaq
/// into floating point (or past a machine integer) is given to jaq.
pub(crate) fn math<'a>(op: Math, a: V<'a>, b: V<'a>) -> R<V<'a>> {
    if let (Some(x), Some(y)) = (as_int(&a), as_int(&b)) {
        let result = match op {
            Math::Add => x.checked_add(y),
            Math::Sub => x.checked_sub(y),
            Math::Mul => x.checked_mul(y),
            Math::Div | Math::Rem => None,
        };
        return result.map(int).ok_or(Stop::Fallback);
    }
    match (op, &*a, &*b) {
        (Math::Add, Value::Null, _) => Ok(b),
        (Math::Add, _, Value::Null) => Ok(a),
        (Math::Add, Value::String(_), Value::String(y)) => {
            let Value::String(mut x) = a.into_owned() else {
                unreachable!("matched as a string")
            };
            x.push_str(y);
            Ok(string(x))
        }
        (Math::Add, Value::Array(_), Value::Array(_)) => {
            let Value::Array(mut x) = owned(a) else {
                unreachable!("matched as an array")
            };
            let Value::Array(y) = owned(b) else {
                unreachable!("matched as an array")
            };
            x.extend(y);
            Ok(Cow::Owned(Value::Array(x)))
        }
        (Math::Add, Value::Object(_), Value::Object(_)) => {
            let Value::Object(mut x) = owned(a) else {
                unreachable!("matched as an object")
            };
            let Value::Object(y) = owned(b) else {
                unreachable!("matched as an object")
            };
            x.extend(y);
            Ok(Cow::Owned(Value::Object(x)))
        }
        // jq splits a string by dividing it.
        (Math::Div, Value::String(x), Value::String(sep)) if !x.is_empty() && !sep.is_empty() => {
            Ok(Cow::Owned(Value::Array(
                x.split(sep.as_str())
                    .map(|part| Value::String(part.to_owned()))
                    .collect(),
            )))
        }
        (_, Value::Number(_), Value::Number(_)) => Err(Stop::Fallback),
        // Only what jaq surely refuses is an error here: a `try` may swallow it, so an error
        // where jaq gives a value would change the result (array subtraction, ...).
        (Math::Add, _, _) => Err(Stop::Opaque),
        _ => Err(Stop::Fallback),
    }
}

/// `v[i]`: members of objects by string, elements of arrays by integer (negative from the
/// end), anything of null is null.
pub(crate) fn index<'a>(v: V<'a>, i: &Value) -> R<V<'a>> {
    match (&*v, i) {
        (Value::Null, _) => Ok(Cow::Borrowed(&NULL)),
        (Value::Object(_), Value::String(key)) => Ok(match v {
            Cow::Borrowed(Value::Object(map)) => Cow::Borrowed(map.get(key).unwrap_or(&NULL)),
            Cow::Owned(Value::Object(mut map)) => {
                Cow::Owned(map.remove(key).unwrap_or(Value::Null))
            }
            _ => unreachable!("matched as an object"),
        }),
        (Value::Object(_), _) => Ok(Cow::Borrowed(&NULL)),
        (Value::Array(items), Value::Number(n)) => {
            let i = n.as_i64().ok_or(Stop::Fallback)?;
            let len = items.len() as i64;
            let at = if i < 0 { i + len } else { i };
            if at < 0 || at >= len {
                return Ok(Cow::Borrowed(&NULL));
            }
            let at = at as usize;
            Ok(match v {
                Cow::Borrowed(Value::Array(items)) => Cow::Borrowed(&items[at]),
                Cow::Owned(Value::Array(mut items)) => Cow::Owned(items.swap_remove(at)),
                _ => unreachable!("matched as an array"),
            })
        }
        (Value::Array(_), Value::Array(_) | Value::Object(_)) => Err(Stop::Fallback),
        // jaq slices a string by `{start, end}`.
        (Value::String(_), Value::Object(_)) => Err(Stop::Fallback),
        _ => Err(Stop::Opaque),
    }
}

/// `v[]`, each member in turn. An object of several members is left to jaq: jaq gives its
/// members in the order it built the object, which a built object here does not keep (values
/// built during a run may be shared by reference, so a borrowed object is not necessarily the
/// input's).
pub(crate) fn iterate<'a>(v: V<'a>, mut each: impl FnMut(V<'a>) -> R) -> R {
    match v {
        Cow::Borrowed(Value::Array(items)) => items.iter().try_for_each(|i| each(Cow::Borrowed(i))),
        Cow::Owned(Value::Array(items)) => items.into_iter().try_for_each(|i| each(Cow::Owned(i))),
        Cow::Borrowed(Value::Object(map)) if map.len() <= 1 => {
            map.values().try_for_each(|i| each(Cow::Borrowed(i)))
        }
        Cow::Owned(Value::Object(map)) if map.len() <= 1 => {
            map.into_iter().try_for_each(|(_, i)| each(Cow::Owned(i)))
        }
        Cow::Borrowed(Value::Object(_)) | Cow::Owned(Value::Object(_)) => Err(Stop::Fallback),
        _ => Err(Stop::Opaque),
    }
}

/// jq's `tostring` appended to `out`: strings as they are, numbers and constants as JSON.
pub(crate) fn write_text(value: &Value, out: &mut String) -> R {
    match value {
        Value::String(s) => out.push_str(s),
        Value::Number(n) => match n.as_i64() {
            Some(i) => {
                use std::fmt::Write as _;
                let _ = write!(out, "{i}");
            }
            None => out.push_str(n.as_str()),
        },
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // jaq writes objects in the order it built them; not reproduced here.
        Value::Array(_) | Value::Object(_) => return Err(Stop::Fallback),
    }
    Ok(())
}

/// jq's `@uri`: every byte but the unreserved characters percent-encoded.
pub(crate) fn write_uri(value: &Value, out: &mut String) -> R {
    let mut text = String::new();
    let text = match value {
        Value::String(s) => s.as_str(),
        other => {
            write_text(other, &mut text)?;
            text.as_str()
        }
    };
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 15)] as char);
        }
    }
    Ok(())
}
