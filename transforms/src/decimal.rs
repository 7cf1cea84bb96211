//! Exact decimal arithmetic on decimal strings, for money: jq's own arithmetic is binary
//! floating point (`0.1 + 0.2` is `0.30000000000000004`), so mappings move amounts as strings
//! and add, negate or multiply them through these functions.
//!
//! Results keep the scale arithmetic gives them (`"0.10" + "0.20"` is `"0.30"`, `"199.00" * 2`
//! is `"398.00"`); [`money_amount`] then brings an amount to its currency's minor unit without
//! ever rounding.

use rust_decimal::Decimal;

use crate::codes;

/// Why an exact decimal operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Not in JSON number syntax, or more than the 28 significant digits kept exactly.
    #[error("{0:?} is not an exact decimal number")]
    Invalid(String),
    /// The result does not fit in 28 significant digits.
    #[error("decimal overflow in {0}")]
    Overflow(&'static str),
    /// Not an ISO 4217 alphabetic code.
    #[error("{0:?} is not an ISO 4217 currency code")]
    UnknownCurrency(String),
}

/// Parses a decimal in JSON number syntax (`-12.50`, `3`, `1.5e3`), refusing anything it
/// cannot hold exactly instead of rounding it.
pub fn parse(text: &str) -> Result<Decimal, DecimalError> {
    let invalid = || DecimalError::Invalid(text.to_owned());
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    if !is_json_mantissa(mantissa) {
        return Err(invalid());
    }
    let value = match exponent {
        None => Decimal::from_str_exact(mantissa).map_err(|_| invalid())?,
        Some(exp) => {
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            let exp: i64 = exp.parse().map_err(|_| invalid())?;
            let base = Decimal::from_str_exact(mantissa).map_err(|_| invalid())?;
            shift(base, exp).ok_or_else(invalid)?
        }
    };
    Ok(positive_zero(value))
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, the number syntax of RFC 8259 without its exponent.
fn is_json_mantissa(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && (int == "0" || !int.starts_with('0')) && frac.is_none_or(digits)
}

/// Multiplies by 10^exp exactly, or gives up. The result has the fraction digits the literal
/// wrote: `1.50e1` is `15.0`, `1.5e3` is `1500`.
fn shift(base: Decimal, exp: i64) -> Option<Decimal> {
    let mut value = base;
    if exp >= 0 {
        let exp = u32::try_from(exp).ok()?;
        for _ in 0..exp {
            value = value.checked_mul(Decimal::TEN)?;
        }
        // The digits dropped here are the zeros the multiplication appended.
        value.rescale(value.scale().saturating_sub(exp));
        Some(value)
    } else {
        let scale = value
            .scale()
            .checked_add(u32::try_from(exp.unsigned_abs()).ok()?)?;
        if scale > Decimal::MAX_SCALE {
            return None;
        }
        value.set_scale(scale).ok()?;
        Some(value)
    }
}

/// `-0.00` prints as `0.00`: a sign on zero means nothing to an ERP and breaks comparisons.
fn positive_zero(mut value: Decimal) -> Decimal {
    if value.is_zero() {
        value.set_sign_positive(true);
    }
    value
}

/// The decimal string of a value, with the scale it carries.
pub fn format(value: Decimal) -> String {
    positive_zero(value).to_string()
}

/// `a + b`.
pub fn add(a: Decimal, b: Decimal) -> Result<Decimal, DecimalError> {
    a.checked_add(b)
        .map(positive_zero)
        .ok_or(DecimalError::Overflow("decimal_add"))
}

/// `a - b`.
pub fn sub(a: Decimal, b: Decimal) -> Result<Decimal, DecimalError> {
    a.checked_sub(b)
        .map(positive_zero)
        .ok_or(DecimalError::Overflow("decimal_sub"))
}

/// `a * b`, keeping every digit (the scales add up).
pub fn mul(a: Decimal, b: Decimal) -> Result<Decimal, DecimalError> {
    let product = a
        .checked_mul(b)
        .ok_or(DecimalError::Overflow("decimal_mul"))?;
    // A zero product comes back with scale 0 ("0.00" * 3 is 0): give it the scale the factors
    // give (found by `gateway check --deep`: a free line of quantity > 1 failed the order).
    if product.is_zero() {
        let mut zero = Decimal::ZERO;
        zero.rescale(a.scale() + b.scale());
        return Ok(zero);
    }
    // rust_decimal rounds a product whose scale would pass 28 digits; refuse that instead.
    if product.scale() != a.scale() + b.scale() {
        return Err(DecimalError::Overflow("decimal_mul"));
    }
    Ok(positive_zero(product))
}

/// `-a`.
pub fn neg(a: Decimal) -> Decimal {
    positive_zero(-a)
}

/// The sum of all values; `0` for none.
pub fn sum(values: impl IntoIterator<Item = Decimal>) -> Result<Decimal, DecimalError> {
    values.into_iter().try_fold(Decimal::ZERO, add)
}

/// Brings an amount to its currency's minor unit without rounding: `9.9` USD becomes `9.90`,
/// `1500.00` JPY becomes `1500`, and `0.125` USD stays `0.125` because dropping a digit
/// would change the amount. Codes ISO gives no minor unit keep the amount as it is.
pub fn money_amount(amount: Decimal, currency: &str) -> Result<Decimal, DecimalError> {
    if !codes::is_currency(currency) {
        return Err(DecimalError::UnknownCurrency(currency.to_owned()));
    }
    let Some(exponent) = codes::currency_exponent(currency) else {
        return Ok(amount);
    };
    let amount = positive_zero(amount);
    if amount.scale() == exponent {
        return Ok(amount);
    }
    let trimmed = amount.normalize();
    if trimmed.scale() > exponent {
        return Ok(trimmed);
    }
    let mut padded = trimmed;
    padded.rescale(exponent);
    // A rescale that cannot hold the extra digits leaves the value rounded or unchanged in
    // scale; only an exact pad is used.
    if padded == trimmed && padded.scale() == exponent {
        Ok(padded)
    } else {
        Ok(trimmed)
    }
}

/// An amount in whole minor units of its currency (cents for USD, yen for JPY, fils for KWD),
/// exactly: the ISO 4217 exponent when the code is known (0 for JPY, 3 for KWD, BHD...), 2 for
/// any other code of three uppercase letters. Refused rather than rounded: a negative amount,
/// a fraction of a minor unit (`0.125` USD), anything past `u64`, or a code that is not three
/// uppercase letters. Counters of order value add these, so no float ever touches money.
pub fn minor_units(amount: &str, currency: &str) -> Result<u64, DecimalError> {
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(DecimalError::UnknownCurrency(currency.to_owned()));
    }
    let exponent = codes::currency_exponent(currency).unwrap_or(2);
    let invalid = || DecimalError::Invalid(amount.to_owned());
    let value = parse(amount)?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(invalid());
    }
    let scaled = shift(value, i64::from(exponent)).ok_or_else(invalid)?;
    if !scaled.fract().is_zero() {
        return Err(invalid());
    }
    u64::try_from(scaled.trunc()).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        parse(text).expect("test decimal")
    }

    #[test]
    fn sums_are_exact_and_keep_the_scale() {
        assert_eq!(format(add(d("0.10"), d("0.20")).expect("add")), "0.30");
        assert_eq!(format(add(d("0.1"), d("0.2")).expect("add")), "0.3");
        let many = sum(std::iter::repeat_n(d("0.10"), 10)).expect("sum");
        assert_eq!(format(many), "1.00");
        assert_eq!(format(sum([]).expect("empty sum")), "0");
    }

    #[test]
    fn products_keep_every_digit() {
        assert_eq!(format(mul(d("199.00"), d("2")).expect("mul")), "398.00");
        assert_eq!(format(mul(d("0.00"), d("12890")).expect("mul")), "0.00");
        assert_eq!(format(mul(d("-0.5"), d("0")).expect("mul")), "0.0");
        assert_eq!(format(mul(d("0.125"), d("3")).expect("mul")), "0.375");
        assert_eq!(
            format(mul(d("1.005"), d("1.005")).expect("mul")),
            "1.010025"
        );
    }

    #[test]
    fn negation_and_signed_zero() {
        assert_eq!(format(neg(d("-10.59"))), "10.59");
        assert_eq!(format(neg(d("0.00"))), "0.00");
        assert_eq!(format(d("-0.00")), "0.00");
        assert_eq!(format(sub(d("1.00"), d("1.00")).expect("sub")), "0.00");
    }

    #[test]
    fn parsing_is_strict_json_syntax() {
        for bad in [
            "", "-", ".5", "5.", "01", "1,5", "1.5.5", " 1", "+1", "1e", "NaN", "0x10",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(format(d("1.5e3")), "1500");
        assert_eq!(format(d("1.50e1")), "15.0");
        assert_eq!(format(d("15e-3")), "0.015");
        // Past what 96 bits hold exactly: refused, never rounded.
        assert!(parse("123456789012345678901234567890").is_err());
        assert!(parse("0.123456789012345678901234567891").is_err());
    }

    #[test]
    fn money_amounts_follow_the_currency_without_rounding() {
        let m = |a: &str, c: &str| format(money_amount(d(a), c).expect("money"));
        assert_eq!(m("9.99", "USD"), "9.99");
        assert_eq!(m("0.6", "USD"), "0.60");
        assert_eq!(m("10", "USD"), "10.00");
        assert_eq!(m("1500", "JPY"), "1500");
        assert_eq!(m("1500.00", "JPY"), "1500");
        assert_eq!(m("12.345", "KWD"), "12.345");
        assert_eq!(m("12.3", "KWD"), "12.300");
        assert_eq!(m("0.125", "USD"), "0.125");
        assert_eq!(m("0.1250", "USD"), "0.125");
        assert_eq!(m("1500.5", "JPY"), "1500.5");
        assert!(money_amount(d("1"), "usd").is_err());
        assert!(money_amount(d("1"), "ZZZ").is_err());
    }

    #[test]
    fn minor_units_follow_the_currency_exponent_exactly() {
        assert_eq!(minor_units("11.01", "USD"), Ok(1101));
        assert_eq!(minor_units("10", "USD"), Ok(1000));
        assert_eq!(minor_units("0.6", "USD"), Ok(60));
        assert_eq!(minor_units("0.00", "USD"), Ok(0));
        assert_eq!(minor_units("4480", "JPY"), Ok(4480));
        assert_eq!(minor_units("4480.00", "JPY"), Ok(4480));
        assert_eq!(minor_units("12.345", "KWD"), Ok(12345));
        assert_eq!(minor_units("12.3", "KWD"), Ok(12300));
        assert_eq!(minor_units("1.5e3", "USD"), Ok(150_000));
        // a code ISO does not list, written like one, has two decimals
        assert_eq!(minor_units("1.25", "XQQ"), Ok(125));
        // past 2^53: exact all the same
        assert_eq!(
            minor_units("90071992547409.93", "USD"),
            Ok(9_007_199_254_740_993)
        );
    }

    #[test]
    fn minor_units_refuse_rather_than_round() {
        for (amount, currency) in [
            ("0.125", "USD"),
            ("1500.5", "JPY"),
            ("12.3456", "KWD"),
            ("-1.00", "USD"),
            ("abc", "USD"),
            ("", "USD"),
            ("1,00", "USD"),
            ("1.00", "usd"),
            ("1.00", "US"),
            ("1.00", "USDX"),
            ("1e30", "USD"),
            ("184467440737095516.16", "USD"),
        ] {
            assert!(
                minor_units(amount, currency).is_err(),
                "{amount} {currency} should be refused"
            );
        }
    }
}
