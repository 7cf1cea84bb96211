//! JSON text to and from a `serde_json::Value`, the same values and bytes as serde_json's
//! `from_str` and `to_writer`, with less work per object member and per string.
//!
//! - Writing: serde_json checks each byte of a string against a table and writes a string in
//!   three pieces, ~163 instructions a string on a retail order. Almost every key and value of
//!   such a document is plain text, so [`write_str`] tests it eight bytes at a time, as one
//!   word, and copies it; a string with anything to escape is left to serde_json, so escapes
//!   are written exactly as it writes them.
//! - Reading: serde_json inserts each member of an object into its `BTreeMap` as it reads it,
//!   a search from the root comparing keys. [`parse_str`] gathers an object's members, then
//!   builds the map from them at once (sorted, then laid out in order; the last of two equal
//!   keys wins, as with insertion). Syntax, errors and limits stay serde_json's: the same
//!   `Deserializer` reads the text. The members of an object pass through a short-lived
//!   vector, which mimalloc (the gateway's allocator) serves cheaply: ~0.9x serde_json's time
//!   there, 1.02–1.06x under glibc's malloc (benches/README.md, issue 13's ninth part).

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses one JSON text into a `Value`, as `serde_json::from_str::<Value>` does.
pub fn parse_str(text: &str) -> Result<Value, serde_json::Error> {
    parse(serde_json::Deserializer::from_str(text))
}

/// Parses one JSON text into a `Value`, as `serde_json::from_slice::<Value>` does.
pub fn parse_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    parse(serde_json::Deserializer::from_slice(bytes))
}

/// Why [`parse_str_within`] refused a text.
#[derive(Debug)]
pub enum WithinError {
    /// An array or object opens deeper than the limit (found while reading, so nothing past
    /// it was read: a syntax error after it is not reported).
    TooDeep,
    /// Not one JSON text, as serde_json reports it.
    Json(serde_json::Error),
}

/// Parses one JSON text as [`parse_str`] does, refusing it as soon as an array or object opens
/// deeper than `max_depth` levels (`{}` is depth 1, `{"a":[]}` depth 2). The limit is checked
/// as the parser reads, so a body needs no scan of its own for it, and a hostile `[[[[...`
/// costs no more than `max_depth` levels of work.
pub fn parse_str_within(text: &str, max_depth: usize) -> Result<Value, WithinError> {
    let too_deep = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let read = (&mut de)
        .deserialize_any(ValueVisitor {
            depth_left: max_depth,
            too_deep: Some(&too_deep),
        })
        .and_then(|value| de.end().map(|()| value));
    read.map_err(|err| {
        if too_deep.get() {
            WithinError::TooDeep
        } else {
            WithinError::Json(err)
        }
    })
}

fn parse<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
) -> Result<Value, serde_json::Error> {
    let value = (&mut de).deserialize_any(ValueVisitor::UNLIMITED)?;
    de.end()?;
    Ok(value)
}

/// The key under which serde_json hands a number's text to a visitor (with
/// `arbitrary_precision` it passes a number that is no `u64` or `i64` as a one-member map).
/// Learnt from serde_json by reading `0.5`, not written here: `None` if numbers come as
/// numbers.
fn number_key() -> Option<&'static str> {
    static KEY: OnceLock<Option<String>> = OnceLock::new();
    KEY.get_or_init(|| {
        struct FirstKey;
        impl<'de> Visitor<'de> for FirstKey {
            type Value = Option<String>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let key = map.next_key::<String>()?;
                let _ = map.next_value::<de::IgnoredAny>();
                Ok(key)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(None)
            }
        }
        serde_json::Deserializer::from_str("0.5")
            .deserialize_any(FirstKey)
            .ok()
            .flatten()
    })
    .as_deref()
}

/// Builds a `Value`, with the levels of nesting still allowed below the one it reads.
#[derive(Clone, Copy)]
struct ValueVisitor<'a> {
    depth_left: usize,
    /// Set when the limit refuses an array or object, to tell that error from serde_json's.
    too_deep: Option<&'a Cell<bool>>,
}

impl<'a> ValueVisitor<'a> {
    /// No limit of its own: serde_json's recursion limit (128) still holds.
    const UNLIMITED: ValueVisitor<'static> = ValueVisitor {
        depth_left: usize::MAX,
        too_deep: None,
    };

    /// The visitor of the members of an array or object this one opens, or the error when
    /// it may not open one.
    fn nested<E: de::Error>(self) -> Result<ValueVisitor<'a>, E> {
        match self.depth_left.checked_sub(1) {
            Some(depth_left) => Ok(ValueVisitor { depth_left, ..self }),
            None => {
                if let Some(flag) = self.too_deep {
                    flag.set(true);
                }
                Err(E::custom("arrays and objects nested too deep"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueVisitor<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        // a number's text comes as a map too, so the object's level is counted only once
        // its first key shows it is one ({} included)
        let Some(first) = map.next_key::<String>()? else {
            self.nested::<A::Error>()?;
            return Ok(Value::Object(Map::new()));
        };
        if number_key() == Some(first.as_str()) {
            let text: String = map.next_value()?;
            return Number::from_str(&text)
                .map(Value::Number)
                .map_err(de::Error::custom);
        }
        let inner = self.nested()?;
        let mut members = Vec::with_capacity(8);
        members.push((first, map.next_value_seed(inner)?));
        while let Some(key) = map.next_key::<String>()? {
            members.push((key, map.next_value_seed(inner)?));
        }
        // sorted (stably: of equal keys the last read stays) and built in one pass
        Ok(Value::Object(members.into_iter().collect()))
    }
}

/// Appends `value` as compact JSON (serde_json's `to_writer` output, byte for byte).
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Appends a number: with `arbitrary_precision` its literal text, which is what serde_json
/// writes.
pub fn write_number(out: &mut Vec<u8>, n: &Number) {
    out.extend_from_slice(n.as_str().as_bytes());
}

/// Appends `s` as a JSON string, quoted and escaped as serde_json escapes it.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // writing into a Vec cannot fail
        let _ = serde_json::to_writer(&mut *out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Whether any byte is one serde_json escapes: a control character, `"` or `\`. Eight bytes
/// at a time, as one word: most strings of a document are short keys and values, for which a
/// loop per byte (or a vector loop and its byte-wise tail) costs more than the copy.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Exact for "is there such a byte" (the classic test for a zero byte, on the word, on
    // the word xor the byte sought, and less than 0x20 by subtracting it).
    let flagged = |w: u64| {
        let below_space = w.wrapping_sub(ONES * 0x20) & !w;
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        (below_space
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash))
            & HIGH
    };
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_ne_bytes(w)
    };
    let mut any = 0;
    if bytes.len() >= 8 {
        // whole words, the last one ending at the last byte (it may overlap the one before)
        let mut at = 0;
        while at + 8 < bytes.len() {
            any |= flagged(word(at));
            at += 8;
        }
        any |= flagged(word(bytes.len() - 8));
    } else {
        // a short string padded with spaces, which are not escaped
        let mut w = [b' '; 8];
        for (slot, &b) in w.iter_mut().zip(bytes) {
            *slot = b;
        }
        any = flagged(u64::from_ne_bytes(w));
    }
    any != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn same_as_serde(value: &Value) {
        let mut ours = Vec::new();
        write_value(&mut ours, value);
        let theirs = serde_json::to_vec(value).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "for {value:?}"
        );
    }

    #[test]
    fn every_single_character_string_is_written_as_serde_json_writes_it() {
        // each ASCII byte and a few multi-byte characters, alone and inside text
        let mut chars: Vec<char> = (0u8..0x80).map(char::from).collect();
        chars.extend(['é', '€', '\u{2028}', '\u{fffd}', '😀', '\u{7f}', '\u{80}']);
        for c in chars {
            same_as_serde(&Value::String(c.to_string()));
            same_as_serde(&Value::String(format!("ab{c}cd")));
            same_as_serde(&Value::String(format!("{c}{}", "x".repeat(40))));
            same_as_serde(&json!({ format!("k{c}"): c.to_string() }));
        }
    }

    #[test]
    fn the_escape_test_finds_a_bad_byte_wherever_it_is() {
        for len in [1usize, 15, 16, 31, 32, 33, 64, 100] {
            for at in 0..len {
                for bad in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = bad;
                    assert!(needs_escape(&bytes), "len {len} at {at} byte {bad}");
                }
                let mut bytes = vec![b'a'; len];
                bytes[at] = 0x20;
                assert!(!needs_escape(&bytes), "a space is not escaped");
            }
        }
    }

    #[test]
    fn the_escape_test_agrees_with_serde_json_for_every_byte_at_every_place() {
        for len in 1usize..=17 {
            for at in 0..len {
                for byte in 0u8..=0xff {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    let escaped = byte < 0x20 || byte == b'"' || byte == b'\\';
                    assert_eq!(
                        needs_escape(&bytes),
                        escaped,
                        "len {len} at {at} byte {byte}"
                    );
                    // and beside a byte that is escaped
                    if at + 1 < len {
                        bytes[at + 1] = b'"';
                        assert!(needs_escape(&bytes));
                    }
                }
            }
        }
        assert!(!needs_escape(b""));
    }

    #[test]
    fn documents_are_written_as_serde_json_writes_them() {
        let numbers: Value = serde_json::from_str(
            r#"[0, -0, 1.0, 1.50, -12.3e-7, 1E+400, 18446744073709551616, -9223372036854775809]"#,
        )
        .unwrap();
        same_as_serde(&numbers);
        same_as_serde(&json!(null));
        same_as_serde(&json!([]));
        same_as_serde(&json!({}));
        same_as_serde(&json!({"b": [true, false, null, {}], "a": {"x": [[]]}, "": ""}));
        same_as_serde(&json!(1u64 << 63));
        same_as_serde(&json!(-5i64));
        same_as_serde(&json!(0.1f64));
    }

    /// Parsed by both, the same value, and the same error (message, line and column).
    fn parsed_as_serde_parses(text: &str) {
        parsed_the_same(
            text.as_bytes(),
            parse_slice(text.as_bytes()),
            serde_json::from_slice(text.as_bytes()),
        );
        parsed_the_same(text.as_bytes(), parse_str(text), serde_json::from_str(text));
    }

    fn parsed_the_same(
        text: &[u8],
        ours: Result<Value, serde_json::Error>,
        theirs: Result<Value, serde_json::Error>,
    ) {
        let text = String::from_utf8_lossy(text);
        match (ours, theirs) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "for {text}");
                // equal values can differ in a number's text; the written forms do not
                assert_eq!(
                    serde_json::to_string(&a).unwrap(),
                    serde_json::to_string(&b).unwrap()
                );
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "for {text}"),
            (a, b) => panic!("for {text}: ours {a:?}, serde_json's {b:?}"),
        }
    }

    #[test]
    fn texts_parse_as_serde_json_parses_them() {
        for text in [
            "0",
            "-0",
            "1.50",
            "-12.3e-7",
            "1E+400",
            "18446744073709551616",
            "[1, 2.0, -3]",
            r#"{"b": 1, "a": {"d": [true, null], "c": "x"}, "": ""}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"{"k": 1, "a": 0, "k": {"x": 2}, "z": 3, "k": "last"}"#,
            r#"{"$serde_json::private::Number": "1"}"#,
            r#""esc\u00e9\n\"""#,
            "{}",
            "[]",
            " [ ] ",
            "",
            "{",
            r#"{"a" 1}"#,
            "[1,]",
            "01",
            "1.",
            "tru",
            r#"{"a": 1} x"#,
            r#""\u0000""#,
            r#""\ud800""#,
            &"[".repeat(200),
        ] {
            parsed_as_serde_parses(text);
        }
        // members in every order, each a few times over: the tree is the same
        let keys: Vec<String> = (0..40).map(|i| format!("k{}", (i * 17) % 40)).collect();
        for n in [1, 2, 11, 12, 40] {
            let members: Vec<String> = keys[..n]
                .iter()
                .chain(keys[..n / 2].iter())
                .enumerate()
                .map(|(i, k)| format!("\"{k}\": {i}"))
                .collect();
            parsed_as_serde_parses(&format!("{{{}}}", members.join(",")));
        }
        // not UTF-8 inside a string, and outside one
        for bytes in [&b"\"a\xff\""[..], b"[1, \xc3]"] {
            parsed_the_same(bytes, parse_slice(bytes), serde_json::from_slice(bytes));
        }
    }

    #[test]
    fn every_golden_case_document_is_read_and_written_as_serde_json_does() {
        // the mappings' inputs and expected outputs: real channel and canonical documents
        fn walk(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "json") {
                    found.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"),
            &mut files,
        );
        assert!(files.len() > 50, "only {} case files", files.len());
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            parsed_as_serde_parses(&text);
            same_as_serde(&parse_str(&text).unwrap());
        }
    }
}
