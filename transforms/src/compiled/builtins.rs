//! The builtins of the compiled form that take the input and value arguments: jq's standard
//! functions the mappings use and our natives (see `natives`), on `serde_json::Value`, with
//! the same results. Their errors are opaque: jaq, run again, gives the message.

use std::borrow::Cow;

use rust_decimal::Decimal;
use serde_json::{Map, Number, Value};

use super::op::Builtin;
use super::value::{self, NULL, R, Stop, V, boolean, int, string};
use crate::{codes, decimal, natives, status, time};

/// Calls a builtin that takes values: `input` is `.`, `args` the values of its arguments.
pub(crate) fn call<'a>(builtin: Builtin, input: V<'a>, args: &[V<'a>]) -> R<V<'a>> {
    let arg = |i: usize| args.get(i).map(|v| &**v).ok_or(Stop::Fallback);
    match builtin {
        Builtin::Error => Err(Stop::Error(value::owned(
            args.first().cloned().ok_or(Stop::Fallback)?,
        ))),
        Builtin::Length => length(&input),
        Builtin::Type => Ok(Cow::Owned(Value::String(type_name(&input).to_owned()))),
        Builtin::Not => Ok(boolean(!value::truthy(&input))),
        Builtin::ToString => match &*input {
            Value::String(_) => Ok(input),
            other => {
                let mut text = String::new();
                value::write_text(other, &mut text)?;
                Ok(string(text))
            }
        },
        Builtin::AsciiDowncase => match &*input {
            Value::String(s) => Ok(string(s.to_ascii_lowercase())),
            _ => Err(Stop::Opaque),
        },
        Builtin::AsciiUpcase => match &*input {
            Value::String(s) => Ok(string(s.to_ascii_uppercase())),
            _ => Err(Stop::Opaque),
        },
        Builtin::StartsWith | Builtin::EndsWith => match (&*input, arg(0)?) {
            (Value::String(s), Value::String(fix)) => {
                Ok(boolean(if builtin == Builtin::StartsWith {
                    s.starts_with(fix.as_str())
                } else {
                    s.ends_with(fix.as_str())
                }))
            }
            _ => Err(Stop::Opaque),
        },
        Builtin::Has => match (&*input, arg(0)?) {
            (Value::Object(map), Value::String(key)) => Ok(boolean(map.contains_key(key))),
            (Value::Array(items), Value::Number(n)) => {
                let i = n.as_i64().ok_or(Stop::Fallback)?;
                Ok(boolean(i >= 0 && (i as u64) < items.len() as u64))
            }
            _ => Err(Stop::Opaque),
        },
        Builtin::Join => join(&input, arg(0)?),
        Builtin::Add => add(input),
        Builtin::Uri => {
            let mut text = String::new();
            value::write_uri(&input, &mut text)?;
            Ok(string(text))
        }
        Builtin::ToJson => {
            let mut text = String::new();
            write_json(&input, &mut text)?;
            Ok(string(text))
        }
        Builtin::Unique => unique(&input),
        Builtin::Test => match (&*input, arg(0)?) {
            (Value::String(text), Value::String(re)) => {
                Ok(boolean(regex(re)?.is_match(text.as_bytes())))
            }
            _ => Err(Stop::Opaque),
        },
        Builtin::Gsub => match (&*input, arg(0)?, arg(1)?) {
            (Value::String(text), Value::String(re), Value::String(with)) => {
                gsub(text, &regex(re)?, with)
            }
            _ => Err(Stop::Opaque),
        },
        Builtin::Decimal => decimal_out(Ok(decimal_in(&input)?)),
        Builtin::DecimalAdd => {
            decimal_out(decimal::add(decimal_in(arg(0)?)?, decimal_in(arg(1)?)?))
        }
        Builtin::DecimalSub => {
            decimal_out(decimal::sub(decimal_in(arg(0)?)?, decimal_in(arg(1)?)?))
        }
        Builtin::DecimalMul => {
            decimal_out(decimal::mul(decimal_in(arg(0)?)?, decimal_in(arg(1)?)?))
        }
        Builtin::DecimalNeg => decimal_out(Ok(decimal::neg(decimal_in(&input)?))),
        Builtin::DecimalAbs => decimal_out(Ok(decimal_in(&input)?.abs())),
        Builtin::DecimalSum => match &*input {
            Value::Array(items) => {
                let items = items.iter().map(decimal_in).collect::<R<Vec<_>>>()?;
                decimal_out(decimal::sum(items))
            }
            _ => Err(Stop::Opaque),
        },
        Builtin::MoneyAmount => {
            let Value::String(code) = arg(0)? else {
                return Err(Stop::Opaque);
            };
            let amount =
                decimal::money_amount(decimal_in(&input)?, code).map_err(|_| Stop::Opaque)?;
            Ok(string(decimal::format(amount)))
        }
        Builtin::Money => {
            let Value::String(code) = arg(0)? else {
                return Err(Stop::Opaque);
            };
            let amount =
                decimal::money_amount(decimal_in(&input)?, code).map_err(|_| Stop::Opaque)?;
            let mut map = Map::new();
            map.insert("amount".to_owned(), Value::String(decimal::format(amount)));
            map.insert("currency".to_owned(), Value::String(code.clone()));
            Ok(Cow::Owned(Value::Object(map)))
        }
        Builtin::Compact => match input {
            Cow::Owned(Value::Object(mut map)) => {
                map.retain(|_, v| !v.is_null());
                Ok(Cow::Owned(Value::Object(map)))
            }
            Cow::Borrowed(Value::Object(map)) => Ok(Cow::Owned(Value::Object(
                map.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), value::owned(Cow::Borrowed(v))))
                    .collect(),
            ))),
            _ => Err(Stop::Opaque),
        },
        Builtin::Blank => match &*input {
            Value::String(s) if s.is_empty() => Ok(Cow::Borrowed(&NULL)),
            _ => Ok(input),
        },
        Builtin::NonEmpty => match &*input {
            Value::Array(items) if items.is_empty() => Ok(Cow::Borrowed(&NULL)),
            Value::Object(map) if map.is_empty() => Ok(Cow::Borrowed(&NULL)),
            _ => Ok(input),
        },
        Builtin::IdString => match &*input {
            Value::String(_) => Ok(input),
            Value::Number(n) => Ok(string(match n.as_i64() {
                Some(i) => i.to_string(),
                None => n.as_str().to_owned(),
            })),
            _ => Err(Stop::Opaque),
        },
        Builtin::ToInt => Ok(int(int_in(&input)?)),
        Builtin::EpochMsToRfc3339 => time::epoch_millis_to_rfc3339(int_in(&input)?)
            .map(string)
            .map_err(|_| Stop::Opaque),
        Builtin::ToUtc => text_with(&input, time::to_utc).map(string),
        Builtin::ToEpochMs => text_with(&input, time::rfc3339_to_epoch_millis).map(int),
        Builtin::ToUtcMs => text_with(&input, time::to_utc_millis).map(string),
        Builtin::IdNumber => id_number(&input),
        Builtin::StableNumber => match &*input {
            Value::String(text) => Ok(string(natives::stable_number_of(text))),
            _ => Err(Stop::Opaque),
        },
        Builtin::CountryAlpha2 => match &*input {
            Value::String(text) => codes::country_alpha2(text)
                .map(|code| string(code.to_owned()))
                .ok_or(Stop::Opaque),
            _ => Err(Stop::Opaque),
        },
        Builtin::StatusRollup => match &*input {
            Value::Array(items) => {
                let statuses = items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => s.parse::<status::Status>().map_err(|_| Stop::Opaque),
                        _ => Err(Stop::Opaque),
                    })
                    .collect::<R<Vec<_>>>()?;
                status::roll_up(&statuses)
                    .map(|s| string(s.as_str().to_owned()))
                    .ok_or(Stop::Opaque)
            }
            _ => Err(Stop::Opaque),
        },
        // The filter-taking builtins are run by the evaluator itself.
        Builtin::Empty
        | Builtin::Values
        | Builtin::Select
        | Builtin::Map
        | Builtin::First
        | Builtin::Range => Err(Stop::Fallback),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn length<'a>(input: &Value) -> R<V<'a>> {
    match input {
        Value::Null => Ok(int(0)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.checked_abs().map(int).ok_or(Stop::Fallback),
            None => Err(Stop::Fallback),
        },
        Value::String(s) => Ok(int(s.chars().count() as i64)),
        Value::Array(items) => Ok(int(items.len() as i64)),
        Value::Object(map) => Ok(int(map.len() as i64)),
        Value::Bool(_) => Err(Stop::Opaque),
    }
}

fn join<'a>(input: &Value, separator: &Value) -> R<V<'a>> {
    let (Value::Array(items), Value::String(sep)) = (input, separator) else {
        return Err(Stop::Opaque);
    };
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        match item {
            Value::Null => {}
            Value::String(_) | Value::Bool(_) | Value::Number(_) => {
                value::write_text(item, &mut out)?
            }
            _ => return Err(Stop::Opaque),
        }
    }
    Ok(string(out))
}

/// jq's `add`: the sum of an array's elements with `+`, null for an empty array.
fn add(input: V<'_>) -> R<V<'_>> {
    let mut sum = Cow::Borrowed(&NULL);
    value::iterate(input, |item| {
        let acc = std::mem::replace(&mut sum, Cow::Borrowed(&NULL));
        sum = value::math(jaq_core::ops::Math::Add, acc, item)?;
        Ok(())
    })
    .map_err(|stop| match stop {
        // `null | add` and the like: jaq's definition iterates its input.
        Stop::Opaque => Stop::Fallback,
        other => other,
    })?;
    Ok(sum)
}

/// A decimal string or a JSON number as an exact decimal.
fn decimal_in(value: &Value) -> R<Decimal> {
    match value {
        Value::String(s) => decimal::parse(s).map_err(|_| Stop::Opaque),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(Decimal::from(i)),
            None => decimal::parse(n.as_str()).map_err(|_| Stop::Opaque),
        },
        _ => Err(Stop::Opaque),
    }
}

fn decimal_out<'a>(result: Result<Decimal, decimal::DecimalError>) -> R<V<'a>> {
    result
        .map(|d| string(decimal::format(d)))
        .map_err(|_| Stop::Opaque)
}

/// A whole number from a JSON integer or a string of digits.
fn int_in(value: &Value) -> R<i64> {
    match value {
        Value::Number(n) => n.as_i64().ok_or(Stop::Opaque),
        Value::String(text) => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Stop::Opaque);
            }
            text.parse().map_err(|_| Stop::Opaque)
        }
        _ => Err(Stop::Opaque),
    }
}

fn text_with<T>(value: &Value, convert: impl FnOnce(&str) -> Result<T, time::TimeError>) -> R<T> {
    match value {
        Value::String(text) => convert(text).map_err(|_| Stop::Opaque),
        _ => Err(Stop::Opaque),
    }
}

fn id_number<'a>(input: &Value) -> R<V<'a>> {
    match input {
        Value::Number(n) => match n.as_i64() {
            Some(i) if i >= 0 => Ok(int(i)),
            Some(_) => Err(Stop::Opaque),
            None => {
                let text = n.as_str();
                if text.bytes().all(|b| b.is_ascii_digit()) {
                    Ok(Cow::Owned(Value::Number(n.clone())))
                } else {
                    Err(Stop::Opaque)
                }
            }
        },
        Value::String(text) => {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Stop::Opaque);
            }
            if let Ok(i) = text.parse::<i64>() {
                return Ok(int(i));
            }
            // Beyond a machine integer jaq keeps the digits, without leading zeros.
            if text.starts_with('0') {
                return Err(Stop::Fallback);
            }
            text.parse::<Number>()
                .map(|n| Cow::Owned(Value::Number(n)))
                .map_err(|_| Stop::Fallback)
        }
        _ => Err(Stop::Opaque),
    }
}

/// A regular expression as jaq builds it without flags.
fn regex(re: &str) -> R<regex_bites::bytes::Regex> {
    regex_bites::bytes::RegexBuilder::new(re)
        .build()
        .map_err(|_| Stop::Opaque)
}

/// `gsub(re; "text")`: every match replaced by the text. Patterns that can match the empty
/// string are left to jaq, whose way of stepping past empty matches is not copied here.
fn gsub<'a>(text: &str, re: &regex_bites::bytes::Regex, with: &str) -> R<V<'a>> {
    if re.is_match(b"") {
        return Err(Stop::Fallback);
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for m in re.find_iter(text.as_bytes()) {
        out.push_str(text.get(last..m.start()).ok_or(Stop::Fallback)?);
        out.push_str(with);
        last = m.end();
    }
    out.push_str(text.get(last..).ok_or(Stop::Fallback)?);
    Ok(string(out))
}

/// `unique`: sorted in jq's order, each value once. Objects, whose order the compiled form
/// does not know, are left to jaq.
fn unique<'a>(input: &Value) -> R<V<'a>> {
    let Value::Array(items) = input else {
        return Err(Stop::Fallback);
    };
    if items.iter().any(|i| i.is_object() || i.is_array()) {
        return Err(Stop::Fallback);
    }
    let mut sorted: Vec<&Value> = Vec::with_capacity(items.len());
    for item in items {
        // Insertion keeps the comparison's errors (numbers it cannot order) visible.
        let mut at = sorted.len();
        for (i, other) in sorted.iter().enumerate() {
            if value::compare(jaq_core::ops::Cmp::Lt, item, other)? {
                at = i;
                break;
            }
        }
        if at > 0 && value::equal(sorted[at - 1], item)? {
            continue;
        }
        sorted.insert(at, item);
    }
    Ok(Cow::Owned(Value::Array(
        sorted
            .into_iter()
            .map(|v| value::owned(Cow::Borrowed(v)))
            .collect(),
    )))
}

/// `tojson` of a scalar; strings only when nothing in them needs more than `\"` and `\\`
/// (jaq's escapes of other characters are not copied here).
fn write_json(value: &Value, out: &mut String) -> R {
    match value {
        Value::String(s) => {
            if s.chars().any(|c| c.is_control() || !c.is_ascii()) {
                return Err(Stop::Fallback);
            }
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
            Ok(())
        }
        Value::Array(_) | Value::Object(_) => Err(Stop::Fallback),
        scalar => value::write_text(scalar, out),
    }
}
