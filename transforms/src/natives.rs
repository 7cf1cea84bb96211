//! The functions mappings get on top of jq's standard library: exact decimals for money,
//! timestamp and country normalisation, and the status roll-up, all written in Rust so that
//! nothing a mapping computes on money goes through binary floating point.
//!
//! Also the list of standard functions mappings may not use: a mapping must give the same
//! output for the same input, so clocks, the environment and process exits are cut off.

use jaq_core::native::{Fun, bome, v};
use jaq_core::{Cv, Error, Native, ValR, ValXs, data::JustLut};
use jaq_json::{Num, Val};
use rust_decimal::Decimal;

use crate::value::as_str;
use crate::{codes, decimal, status, time};

/// What the compiled programs run on: plain jaq-json values, no extra global data.
pub(crate) type Data = JustLut<Val>;

/// Names of standard functions replaced by an error: they would make a mapping depend on
/// the clock, the environment or the process.
const FORBIDDEN: [&str; 5] = ["now", "env", "halt", "localtime", "strflocaltime"];

/// Names of standard functions replaced by a no-op: `debug` and `stderr` would write to the
/// gateway's stderr on every request.
const SILENCED: [&str; 2] = ["debug_empty", "stderr_empty"];

/// The standard functions with the forbidden ones disarmed, then ours (the one-step object and
/// string builders of `objects` are added beside them by the engine).
pub(crate) fn all() -> Vec<Fun<Data>> {
    let standard = jaq_core::funs::<Data>()
        .chain(jaq_std::funs::<Data>())
        .chain(jaq_json::funs::<Data>())
        .map(|(name, args, native)| {
            if FORBIDDEN.contains(&name) {
                (name, args, Native::<Data>::new(forbidden))
            } else if SILENCED.contains(&name) {
                (name, args, Native::<Data>::new(silenced))
            } else {
                (name, args, native)
            }
        });
    standard.chain(ours()).collect()
}

/// Zero-argument standard definitions replaced by natives with the same meaning: jaq writes
/// them in jq (`def null: [][0];`, `def empty: {}[] as $x | .;`, `def type: if . == null ...`),
/// and mappings use them everywhere, so each use cost thousands of instructions.
pub(crate) const NATIVE_OVERRIDES: [(&str, usize); 8] = [
    ("null", 0),
    ("true", 0),
    ("false", 0),
    ("not", 0),
    ("empty", 0),
    ("values", 0),
    ("type", 0),
    ("join", 1),
];

/// The functions this crate adds; the mappings README lists them for authors.
fn ours() -> Vec<Fun<Data>> {
    vec![
        ("null", v(0), Native::<Data>::new(|_| bome(Ok(Val::Null)))),
        (
            "true",
            v(0),
            Native::<Data>::new(|_| bome(Ok(Val::Bool(true)))),
        ),
        (
            "false",
            v(0),
            Native::<Data>::new(|_| bome(Ok(Val::Bool(false)))),
        ),
        (
            "not",
            v(0),
            Native::<Data>::new(|cv| bome(Ok(Val::Bool(!truthy(&cv.1))))),
        ),
        ("empty", v(0), Native::<Data>::new(silenced)),
        ("values", v(0), Native::<Data>::new(values)),
        ("type", v(0), Native::<Data>::new(type_of)),
        ("join", v(1), Native::<Data>::new(join)),
        ("id_string", v(0), Native::<Data>::new(id_string)),
        ("decimal", v(0), Native::<Data>::new(decimal_of)),
        ("decimal_add", v(2), Native::<Data>::new(decimal_add)),
        ("decimal_sub", v(2), Native::<Data>::new(decimal_sub)),
        ("decimal_mul", v(2), Native::<Data>::new(decimal_mul)),
        ("decimal_neg", v(0), Native::<Data>::new(decimal_neg)),
        ("decimal_abs", v(0), Native::<Data>::new(decimal_abs)),
        ("decimal_sum", v(0), Native::<Data>::new(decimal_sum)),
        ("money_amount", v(1), Native::<Data>::new(money_amount)),
        ("money", v(1), Native::<Data>::new(money)),
        ("compact", v(0), Native::<Data>::new(compact)),
        ("blank", v(0), Native::<Data>::new(blank)),
        ("nonempty", v(0), Native::<Data>::new(nonempty)),
        ("to_int", v(0), Native::<Data>::new(to_int)),
        (
            "epoch_ms_to_rfc3339",
            v(0),
            Native::<Data>::new(epoch_ms_to_rfc3339),
        ),
        ("to_utc", v(0), Native::<Data>::new(to_utc)),
        ("to_epoch_ms", v(0), Native::<Data>::new(to_epoch_ms)),
        ("to_utc_ms", v(0), Native::<Data>::new(to_utc_ms)),
        ("id_number", v(0), Native::<Data>::new(id_number)),
        ("stable_number", v(0), Native::<Data>::new(stable_number)),
        ("country_alpha2", v(0), Native::<Data>::new(country_alpha2)),
        ("status_rollup", v(0), Native::<Data>::new(status_rollup)),
    ]
}

/// A failure of the mapping: a value of the wrong type reached a function (null where a
/// string belongs), or money computed with jq arithmetic.
fn fail(message: impl std::fmt::Display) -> Error<Val> {
    Error::str(message)
}

/// A channel value of the right type but malformed (a decimal string that is no number, an
/// unknown currency or country, a timestamp without offset, a fractional quantity): the
/// input's fault, so it rejects the input like the prelude's `reject`.
fn bad_input(message: impl std::fmt::Display) -> Error<Val> {
    rejection(message.to_string())
}

fn string(text: String) -> Val {
    Val::utf8_str(text)
}

/// A decimal string or a JSON number as an exact decimal. A float can only come from jq
/// arithmetic, which already lost exactness, so it is refused rather than papered over.
fn decimal_in(value: &Val) -> Result<Decimal, Error<Val>> {
    let parsed = match value {
        Val::TStr(_) => as_str(value).map(decimal::parse),
        Val::Num(Num::Int(i)) => return Ok(Decimal::from(*i as i64)),
        Val::Num(n @ (Num::BigInt(_) | Num::Dec(_))) => Some(decimal::parse(&n.to_string())),
        Val::Num(Num::Float(f)) => {
            return Err(fail(format_args!(
                "refusing the binary floating-point number {f} as money: it was computed with \
                 jq arithmetic; use decimal_add, decimal_sub or decimal_mul on the original amounts"
            )));
        }
        _ => None,
    };
    match parsed {
        Some(result) => result.map_err(bad_input),
        None => Err(fail(format_args!(
            "expected a decimal string or number, got {value}"
        ))),
    }
}

fn decimal_out(result: Result<Decimal, decimal::DecimalError>) -> ValR<Val> {
    result.map(|d| string(decimal::format(d))).map_err(fail)
}

fn decimal_of(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    bome(decimal_in(&cv.1).map(|d| string(decimal::format(d))))
}

/// Pops the two arguments of a binary native; jq pushes them in order, so the last comes off first.
fn two_args(mut cv: Cv<'_, Data>) -> (Val, Val) {
    let b = cv.0.pop_var();
    let a = cv.0.pop_var();
    (a, b)
}

fn binary(
    cv: Cv<'_, Data>,
    op: fn(Decimal, Decimal) -> Result<Decimal, decimal::DecimalError>,
) -> ValXs<'_, Val> {
    let (a, b) = two_args(cv);
    let result = decimal_in(&a).and_then(|a| decimal_in(&b).and_then(|b| decimal_out(op(a, b))));
    bome(result)
}

fn decimal_add(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    binary(cv, decimal::add)
}

fn decimal_sub(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    binary(cv, decimal::sub)
}

fn decimal_mul(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    binary(cv, decimal::mul)
}

fn decimal_neg(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    bome(decimal_in(&cv.1).map(|d| string(decimal::format(decimal::neg(d)))))
}

fn decimal_abs(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    bome(decimal_in(&cv.1).map(|d| string(decimal::format(d.abs()))))
}

fn decimal_sum(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let result = match &cv.1 {
        Val::Arr(items) => items
            .iter()
            .map(decimal_in)
            .collect::<Result<Vec<_>, _>>()
            .and_then(|items| decimal_out(decimal::sum(items))),
        other => Err(fail(format_args!(
            "decimal_sum expects an array of decimals, got {other}"
        ))),
    };
    bome(result)
}

fn money_amount(mut cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let currency = cv.0.pop_var();
    let result = match as_str(&currency) {
        Some(code) => decimal_in(&cv.1).and_then(|amount| {
            decimal::money_amount(amount, code)
                .map(|d| string(decimal::format(d)))
                .map_err(bad_input)
        }),
        None => Err(fail(format_args!(
            "money_amount expects a currency code, got {currency}"
        ))),
    };
    bome(result)
}

/// `{amount, currency}` built directly: mappings make one for every amount they move, and an
/// object built in jq costs several times more.
fn money(mut cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let currency = cv.0.pop_var();
    let result = match as_str(&currency) {
        Some(code) => decimal_in(&cv.1).and_then(|amount| {
            let amount = decimal::money_amount(amount, code).map_err(bad_input)?;
            let mut map = jaq_json::Map::with_capacity_and_hasher(2, Default::default());
            map.insert(key("amount"), string(decimal::format(amount)));
            map.insert(key("currency"), currency.clone());
            Ok(Val::obj(map))
        }),
        None => Err(fail(format_args!(
            "money expects a currency code, got {currency}"
        ))),
    };
    bome(result)
}

fn key(name: &'static str) -> Val {
    Val::utf8_str(bytes::Bytes::from_static(name.as_bytes()))
}

/// Drops the null members of an object. Written natively because the jq definition
/// (`with_entries(select(.value != null))`) builds an object per member and dominated the
/// cost of whole mappings.
fn compact(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let result = match cv.1 {
        Val::Obj(map) => {
            let mut map = jaq_json::Rc::try_unwrap(map).unwrap_or_else(|shared| (*shared).clone());
            map.retain(|_, value| !matches!(value, Val::Null));
            Ok(Val::obj(map))
        }
        other => Err(fail(format_args!("compact expects an object, got {other}"))),
    };
    bome(result)
}

/// `""` as null: channels send empty strings for absent optional text.
fn blank(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    match cv.1 {
        Val::TStr(text) if text.is_empty() => bome(Ok(Val::Null)),
        value => bome(Ok(value)),
    }
}

/// An empty object or array as null, so `compact` drops it.
fn nonempty(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    match cv.1 {
        Val::Arr(items) if items.is_empty() => bome(Ok(Val::Null)),
        Val::Obj(map) if map.is_empty() => bome(Ok(Val::Null)),
        value => bome(Ok(value)),
    }
}

/// A whole number from a JSON integer or a string of digits (Walmart sends quantities as
/// `"1"`), refusing fractions rather than truncating them.
fn int_in(value: &Val) -> Result<i64, Error<Val>> {
    let refuse = || bad_input(format_args!("expected a whole number, got {value}"));
    match value {
        Val::Num(Num::Int(i)) => Ok(*i as i64),
        Val::Num(n @ Num::BigInt(_)) => n.to_string().parse().map_err(|_| refuse()),
        Val::TStr(_) => {
            let text = as_str(value).ok_or_else(refuse)?;
            let digits = text.strip_prefix('-').unwrap_or(text);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(refuse());
            }
            text.parse().map_err(|_| refuse())
        }
        Val::Num(_) => Err(refuse()),
        other => Err(fail(format_args!("expected a whole number, got {other}"))),
    }
}

fn to_int(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    bome(int_in(&cv.1).and_then(|i| {
        isize::try_from(i)
            .map(Val::from)
            .map_err(|_| fail(format_args!("{i} does not fit a machine integer")))
    }))
}

fn epoch_ms_to_rfc3339(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    bome(int_in(&cv.1).and_then(|ms| {
        time::epoch_millis_to_rfc3339(ms)
            .map(string)
            .map_err(bad_input)
    }))
}

fn to_utc(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let result = match as_str(&cv.1) {
        Some(text) => time::to_utc(text).map(string).map_err(bad_input),
        None => Err(fail(format_args!(
            "to_utc expects an RFC 3339 timestamp string, got {}",
            cv.1
        ))),
    };
    bome(result)
}

/// A timestamp string through one of the `time` conversions: a malformed stamp rejects the
/// input, a value that is no string is the mapping's fault.
fn timestamp_with<T>(
    value: &Val,
    name: &str,
    convert: impl FnOnce(&str) -> Result<T, time::TimeError>,
) -> Result<T, Error<Val>> {
    match as_str(value) {
        Some(text) => convert(text).map_err(bad_input),
        None => Err(fail(format_args!(
            "{name} expects an RFC 3339 timestamp string, got {value}"
        ))),
    }
}

fn to_epoch_ms(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    bome(
        timestamp_with(&cv.1, "to_epoch_ms", time::rfc3339_to_epoch_millis).and_then(|ms| {
            isize::try_from(ms)
                .map(Val::from)
                .map_err(|_| fail(format_args!("{ms} does not fit a machine integer")))
        }),
    )
}

fn to_utc_ms(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    bome(timestamp_with(&cv.1, "to_utc_ms", time::to_utc_millis).map(string))
}

/// A numeric identifier (a string of digits, or an integer) as a JSON integer with exactly
/// those digits, however large (Shopify's 64-bit ids). Anything else rejects the input.
fn id_number(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let refuse = |what: &dyn std::fmt::Display| {
        rejection(format!("expected a numeric identifier, got {what}"))
    };
    let result = match &cv.1 {
        Val::Num(n @ (Num::Int(_) | Num::BigInt(_))) => {
            if n.to_string().starts_with('-') {
                Err(refuse(&"a negative number"))
            } else {
                Ok(cv.1.clone())
            }
        }
        value @ Val::TStr(_) => {
            let text = as_str(value).unwrap_or_default();
            let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
            match digits.then(|| Num::from_str_radix(text, 10)).flatten() {
                Some(n) => Ok(Val::Num(n)),
                None => Err(refuse(&format_args!("{text:?}"))),
            }
        }
        Val::Null => Err(refuse(&"null")),
        Val::Bool(_) => Err(refuse(&"a boolean")),
        Val::Num(_) => Err(refuse(&"a fraction")),
        Val::Arr(_) => Err(refuse(&"an array")),
        _ => Err(refuse(&"an object")),
    };
    bome(result)
}

/// A positive number, as a string of at most 15 digits, derived from the input string (its
/// 64-bit FNV-1a hash): the same text always gives the same number. Amazon wants a numeric
/// `packageReferenceId` unique per order; a shipment without one gets this of its canonical
/// id, so a retried event confirms the same package.
fn stable_number(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let Some(text) = as_str(&cv.1) else {
        return bome(Err(fail(format_args!(
            "stable_number expects a string, got {}",
            cv.1
        ))));
    };
    bome(Ok(string(stable_number_of(text))))
}

/// `stable_number`'s digits for a text: its 64-bit FNV-1a hash, as 1 ..= 10^15 - 1 (positive,
/// and exact as a double for consumers that parse it as one). The compiled form calls it too.
pub(crate) fn stable_number_of(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % 999_999_999_999_999 + 1).to_string()
}

fn country_alpha2(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let result = match as_str(&cv.1) {
        Some(text) => codes::country_alpha2(text)
            .map(|code| string(code.to_owned()))
            .ok_or_else(|| {
                bad_input(format_args!(
                    "{text:?} is not an ISO 3166-1 alpha-2 or alpha-3 country code"
                ))
            }),
        None => Err(fail(format_args!(
            "country_alpha2 expects a country code string, got {}",
            cv.1
        ))),
    };
    bome(result)
}

fn status_rollup(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let parse = |value: &Val| -> Result<status::Status, Error<Val>> {
        as_str(value)
            .ok_or_else(|| fail(format_args!("expected a status string, got {value}")))?
            .parse()
            .map_err(fail)
    };
    let result = match &cv.1 {
        Val::Arr(items) => items
            .iter()
            .map(parse)
            .collect::<Result<Vec<_>, _>>()
            .and_then(|statuses| {
                status::roll_up(&statuses)
                    .map(|s| string(s.as_str().to_owned()))
                    .ok_or_else(|| fail("status_rollup needs at least one line status"))
            }),
        other => Err(fail(format_args!(
            "status_rollup expects an array of line statuses, got {other}"
        ))),
    };
    bome(result)
}

/// jq truthiness: everything but `null` and `false`.
fn truthy(value: &Val) -> bool {
    !matches!(value, Val::Null | Val::Bool(false))
}

fn values(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    match cv.1 {
        Val::Null => Box::new(core::iter::empty()),
        value => bome(Ok(value)),
    }
}

fn type_of(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let name = match cv.1 {
        Val::Null => "null",
        Val::Bool(_) => "boolean",
        Val::Num(_) => "number",
        Val::TStr(_) | Val::BStr(_) => "string",
        Val::Arr(_) => "array",
        Val::Obj(_) => "object",
    };
    bome(Ok(key(name)))
}

/// jq's `join($sep)`: null members count as "", strings, numbers and booleans as their text.
fn join(mut cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    let separator = cv.0.pop_var();
    let result = (|| {
        let sep = as_str(&separator).ok_or_else(|| {
            fail(format_args!(
                "join expects a string separator, got {separator}"
            ))
        })?;
        let Val::Arr(items) = &cv.1 else {
            return Err(fail(format_args!("cannot join {}", cv.1)));
        };
        let mut out = String::new();
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            match item {
                Val::Null => {}
                Val::TStr(_) => out.push_str(as_str(item).unwrap_or_default()),
                Val::Bool(_) | Val::Num(_) => out.push_str(&item.to_string()),
                other => return Err(fail(format_args!("cannot join {other}"))),
            }
        }
        Ok(string(out))
    })();
    bome(result)
}

/// An identifier as a string: strings as they are, numbers by their own digits (Shopify's
/// 64-bit ids). Anything else rejects the input, like the prelude's `reject`.
fn id_string(cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    match cv.1 {
        value @ Val::TStr(_) => bome(Ok(value)),
        Val::Num(n) => bome(Ok(string(n.to_string()))),
        other => {
            let kind = match other {
                Val::Null => "null",
                Val::Bool(_) => "a boolean",
                Val::Arr(_) => "an array",
                _ => "an object",
            };
            bome(Err(rejection(format!(
                "expected an identifier, got {kind}"
            ))))
        }
    }
}

/// The error value the prelude's `reject` raises, which the engine reports as a rejection.
fn rejection(message: String) -> Error<Val> {
    let mut map = jaq_json::Map::with_capacity_and_hasher(1, Default::default());
    map.insert(key("rejected"), string(message));
    Error::new(Val::obj(map))
}

fn forbidden(_cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    bome(Err(fail(
        "this function is not available in mappings: a mapping must give the same output \
         for the same input (no clock, environment or halting)",
    )))
}

fn silenced(_cv: Cv<'_, Data>) -> ValXs<'_, Val> {
    Box::new(core::iter::empty())
}

#[cfg(test)]
mod tests {
    use crate::engine::{Program, RunError};
    use crate::value::to_jaq;
    use serde_json::Value;

    /// Runs `code` on the JSON `input` text (parsed, so numbers keep their literals).
    fn run(code: &str, input: &str) -> Result<Value, RunError> {
        let input: Value = serde_json::from_str(input).expect("test JSON");
        Program::compile(code).expect("compiles").run(to_jaq(input))
    }

    fn ok(code: &str, input: &str) -> String {
        run(code, input)
            .map(|v| v.to_string())
            .unwrap_or_else(|err| panic!("{code}: {err:?}"))
    }

    #[test]
    fn decimals_are_exact_in_jq() {
        // The trap: jq's own + on these gives 0.30000000000000004.
        assert_eq!(
            ok(".a + .b", r#"{"a": 0.1, "b": 0.2}"#),
            "0.30000000000000004"
        );
        assert_eq!(
            ok("decimal_add(.a; .b)", r#"{"a": 0.1, "b": 0.2}"#),
            r#""0.3""#
        );
        assert_eq!(
            ok("decimal_add(.a; .b)", r#"{"a": "0.10", "b": "0.20"}"#),
            r#""0.30""#
        );
        assert_eq!(ok("decimal_sub(\"10.00\"; \"0.01\")", "null"), r#""9.99""#);
        assert_eq!(ok("decimal_mul(\"199.00\"; 3)", "null"), r#""597.00""#);
        assert_eq!(
            ok("map(decimal) | decimal_sum", r#"[9.99, "0.01", 1]"#),
            r#""11.00""#
        );
        assert_eq!(ok("decimal_neg", "-10.59"), r#""10.59""#);
        assert_eq!(ok("decimal_abs", r#""-2.00""#), r#""2.00""#);
        assert_eq!(ok("decimal", "9.99"), r#""9.99""#);
        assert_eq!(ok("decimal", "9007199254740993"), r#""9007199254740993""#);
        assert!(
            matches!(run("0.1 + 0.2 | decimal", "null"), Err(RunError::Failed(m)) if m.contains("floating-point"))
        );
        assert!(matches!(
            run("decimal", r#""1,50""#),
            Err(RunError::Rejected(_))
        ));
        assert!(matches!(run("decimal", "null"), Err(RunError::Failed(_))));
        assert!(matches!(
            run("decimal_sum", r#""x""#),
            Err(RunError::Failed(_))
        ));
    }

    #[test]
    fn money_follows_the_currency() {
        assert_eq!(
            ok("money(\"USD\")", "9.9"),
            r#"{"amount":"9.90","currency":"USD"}"#
        );
        assert_eq!(ok("money_amount(\"JPY\")", r#""1500.00""#), r#""1500""#);
        assert_eq!(ok("money_amount(\"KWD\")", "12.345"), r#""12.345""#);
        assert!(matches!(
            run("money(\"XYZ\")", "1"),
            Err(RunError::Rejected(_))
        ));
        assert_eq!(
            ok(
                "money_sum(\"USD\")",
                r#"[{"amount": "0.10"}, {"amount": "0.20"}]"#
            ),
            r#"{"amount":"0.30","currency":"USD"}"#
        );
    }

    #[test]
    fn integers_timestamps_countries_and_statuses() {
        assert_eq!(ok("to_int", r#""12""#), "12");
        assert_eq!(ok("to_int", "12"), "12");
        assert!(matches!(
            run("to_int", r#""1.5""#),
            Err(RunError::Rejected(_))
        ));
        assert!(matches!(run("to_int", "1.5"), Err(RunError::Rejected(_))));
        assert!(matches!(run("to_int", "null"), Err(RunError::Failed(_))));
        assert_eq!(
            ok("epoch_ms_to_rfc3339", "1568466571000"),
            r#""2019-09-14T13:09:31Z""#
        );
        assert_eq!(
            ok("to_utc", r#""2008-01-10T11:00:00-05:00""#),
            r#""2008-01-10T16:00:00Z""#
        );
        assert!(matches!(
            run("to_utc", r#""2008-01-10T11:00:00""#),
            Err(RunError::Rejected(m)) if m.contains("offset")
        ));
        assert!(matches!(run("to_utc", "12"), Err(RunError::Failed(_))));
        assert_eq!(ok("country_alpha2", r#""USA""#), r#""US""#);
        assert!(matches!(
            run("country_alpha2", r#""Narnia""#),
            Err(RunError::Rejected(_))
        ));
        assert!(matches!(
            run("country_alpha2", "null"),
            Err(RunError::Failed(_))
        ));
        assert_eq!(
            ok("status_rollup", r#"["fulfilled", "unfulfilled"]"#),
            r#""partially_fulfilled""#
        );
        assert!(run("status_rollup", "[]").is_err());
        assert!(run("status_rollup", r#"["Shipped"]"#).is_err());
    }

    #[test]
    fn outbound_conversions() {
        assert_eq!(
            ok("to_epoch_ms", r#""2019-09-14T08:09:31.5-05:00""#),
            "1568466571500"
        );
        assert_eq!(
            ok("to_utc_ms", r#""2008-01-10T11:00:00-05:00""#),
            r#""2008-01-10T16:00:00.000Z""#
        );
        assert!(matches!(
            run("to_epoch_ms", r#""2008-01-10""#),
            Err(RunError::Rejected(_))
        ));
        assert!(matches!(run("to_utc_ms", "1"), Err(RunError::Failed(_))));
        assert_eq!(
            ok(
                "map(id_number)",
                r#"["450789469", 12, "18446744073709551617"]"#
            ),
            "[450789469,12,18446744073709551617]"
        );
        for bad in [r#""gid://shopify/Order/1""#, r#""""#, "-3", "1.5", "null"] {
            assert!(
                matches!(run("id_number", bad), Err(RunError::Rejected(m)) if m.contains("numeric identifier")),
                "{bad}"
            );
        }
        let a = ok("stable_number", r#""amazon:shipment:1:x""#);
        assert_eq!(a, ok("stable_number", r#""amazon:shipment:1:x""#));
        assert_ne!(a, ok("stable_number", r#""amazon:shipment:1:y""#));
        let digits = a.trim_matches('"');
        assert!(
            (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()),
            "{a}"
        );
        assert!(!digits.starts_with('0'), "{a}");
        // Path segments and query values of the outbound calls go through jq's @uri.
        assert_eq!(
            ok("@uri", r#""A B/é?&=#%+""#),
            r#""A%20B%2F%C3%A9%3F%26%3D%23%25%2B""#
        );
        assert_eq!(ok(r#"@uri "/x/\(.)""#, r#""a/b""#), r#""/x/a%2Fb""#);
    }

    #[test]
    fn object_helpers() {
        assert_eq!(
            ok("compact", r#"{"a": null, "b": 0, "c": false}"#),
            r#"{"b":0,"c":false}"#
        );
        assert_eq!(ok("map(blank)", r#"["", "x", null]"#), r#"[null,"x",null]"#);
        assert_eq!(
            ok("map(nonempty)", r#"[[], {}, [0], ""]"#),
            r#"[null,null,[0],""]"#
        );
        assert_eq!(
            ok("map(id_string)", r#"["a", 9007199254740993]"#),
            r#"["a","9007199254740993"]"#
        );
        assert_eq!(ok(".x | maybe(. + 1)", r#"{"x": null}"#), "null");
        assert!(
            matches!(run("id_string", "null"), Err(RunError::Rejected(m)) if m.contains("identifier"))
        );
        assert_eq!(
            ok("join(\",\")", r#"["a", null, 1, true, 2.50]"#),
            r#""a,,1,true,2.50""#
        );
        assert_eq!(ok("join(\"-\")", "[]"), r#""""#);
        assert!(run("join(\",\")", "[[1]]").is_err());
    }
}
