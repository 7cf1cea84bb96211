//! Checks on a raw request body: size, UTF-8, nesting depth and JSON syntax. `precheck` counts
//! the depth with a scan that builds nothing; `parse_checked` counts it as it builds the tree,
//! so a hostile `[[[[...` costs at most the limit's levels either way.

use serde::de::IgnoredAny;
use serde_json::Value;

use crate::json_text::WithinError;

/// Limits a body must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrecheckLimits {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and objects accepted: `{}` is depth 1, `{"a":[]}` depth 2.
    /// serde_json refuses anything past 128 levels whatever this says.
    pub max_depth: usize,
}

impl Default for PrecheckLimits {
    /// 8 MiB and 64 levels: room for a 5 MiB order, far below what a parser chokes on.
    fn default() -> Self {
        PrecheckLimits {
            max_bytes: 8 * 1024 * 1024,
            max_depth: 64,
        }
    }
}

/// Which check a body failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrecheckError {
    #[error("the body is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("the body nests arrays and objects deeper than {limit} levels (at byte {offset})")]
    TooDeep { limit: usize, offset: usize },
    #[error("the body is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("the body is not JSON: {message} at line {line}, column {column}")]
    NotJson {
        line: usize,
        column: usize,
        message: String,
    },
}

impl PrecheckError {
    /// A short, bounded name for metrics labels and problem types.
    pub fn reason(&self) -> &'static str {
        match self {
            PrecheckError::TooLarge { .. } => "too_large",
            PrecheckError::TooDeep { .. } => "too_deep",
            PrecheckError::NotUtf8 { .. } => "not_utf8",
            PrecheckError::NotJson { .. } => "not_json",
        }
    }
}

/// Checks size, depth, UTF-8 and JSON syntax without building a tree.
pub fn precheck(bytes: &[u8], limits: &PrecheckLimits) -> Result<(), PrecheckError> {
    let text = size_and_utf8(bytes, limits)?;
    check_depth(bytes, limits.max_depth)?;
    serde_json::from_str::<IgnoredAny>(text)
        .map(|_| ())
        .map_err(not_json)
}

/// The same checks, then the one parse the caller needs anyway: use this rather than
/// `precheck` followed by a parse, which would read the body twice. The parse itself holds the
/// depth limit, so a body is not scanned for it first; a body that nests too deep is scanned
/// only to say where. Unlike `precheck`, a syntax error before the first bracket too deep is
/// reported as such.
pub fn parse_checked(bytes: &[u8], limits: &PrecheckLimits) -> Result<Value, PrecheckError> {
    // from the checked text: serde_json then does not validate every string's UTF-8 again
    let text = size_and_utf8(bytes, limits)?;
    crate::json_text::parse_str_within(text, limits.max_depth).map_err(|err| match err {
        WithinError::TooDeep => {
            let limit = limits.max_depth;
            // the parse stopped at the first bracket too deep, which the scan finds again
            let offset = first_bracket_past_depth(bytes, limit).unwrap_or_default();
            PrecheckError::TooDeep { limit, offset }
        }
        WithinError::Json(err) => not_json(err),
    })
}

/// Size, then UTF-8; the body as text.
fn size_and_utf8<'b>(bytes: &'b [u8], limits: &PrecheckLimits) -> Result<&'b str, PrecheckError> {
    if bytes.len() > limits.max_bytes {
        return Err(PrecheckError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    std::str::from_utf8(bytes).map_err(|err| PrecheckError::NotUtf8 {
        offset: err.valid_up_to(),
    })
}

/// Counts open brackets outside strings; the syntax itself is left to the parser.
fn check_depth(bytes: &[u8], limit: usize) -> Result<(), PrecheckError> {
    match first_bracket_past_depth(bytes, limit) {
        Some(offset) => Err(PrecheckError::TooDeep { limit, offset }),
        None => Ok(()),
    }
}

/// The byte offset of the first bracket that nests deeper than `limit` in a JSON text, scanning
/// bytes outside strings without building a tree (the syntax is left to the parser).
pub fn first_bracket_past_depth(bytes: &[u8], limit: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut offset = 0usize;
    while offset < bytes.len() {
        match bytes[offset] {
            b'"' => {
                // skip the string with memchr: most of a document's bytes are inside strings
                offset += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &bytes[offset..]) {
                        None => return None,
                        Some(i) if bytes[offset + i] == b'\\' => offset += i + 2,
                        Some(i) => {
                            offset += i;
                            break;
                        }
                    }
                    if offset >= bytes.len() {
                        return None;
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Some(offset);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        offset += 1;
    }
    None
}

fn not_json(err: serde_json::Error) -> PrecheckError {
    let full = err.to_string();
    // serde_json appends " at line L column C"; the position has its own fields.
    let message = match full.rfind(" at line ") {
        Some(at) => full[..at].to_owned(),
        None => full,
    };
    PrecheckError::NotJson {
        line: err.line(),
        column: err.column(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: usize, max_depth: usize) -> PrecheckLimits {
        PrecheckLimits {
            max_bytes,
            max_depth,
        }
    }

    #[test]
    fn a_good_body_passes_and_parses_once() {
        let body = br#"{"a":[1,{"b":"[[[[\"}}}"}],"c":9007199254740993}"#;
        assert_eq!(precheck(body, &limits(1024, 3)), Ok(()));
        let value = parse_checked(body, &limits(1024, 3)).expect("valid");
        assert_eq!(value["c"].to_string(), "9007199254740993");
    }

    #[test]
    fn too_large_is_refused_before_anything_else() {
        let body = b"\xff not even utf-8, and long";
        assert_eq!(
            precheck(body, &limits(10, 64)),
            Err(PrecheckError::TooLarge {
                size: body.len(),
                limit: 10
            })
        );
    }

    #[test]
    fn too_deep_is_refused_by_the_scan() {
        let body = "[".repeat(100_000);
        let err = precheck(body.as_bytes(), &limits(1 << 20, 64)).expect_err("too deep");
        assert_eq!(
            err,
            PrecheckError::TooDeep {
                limit: 64,
                offset: 64
            }
        );
        assert_eq!(err.reason(), "too_deep");
        // Brackets inside strings do not count, escaped quotes do not end the string.
        assert_eq!(precheck(br#"[["\"[[[[[["]]"#, &limits(100, 2)), Ok(()));
        assert!(precheck(br#"[[["x"]]]"#, &limits(100, 2)).is_err());
        // an escaped backslash does not escape the quote after it: the bracket counts
        assert_eq!(first_bracket_past_depth(br#"[["\\"["#, 2), Some(6));
        // an unterminated string (the parser refuses it) hides what follows
        assert_eq!(first_bracket_past_depth(br#"["\"#, 0), Some(0));
        assert_eq!(first_bracket_past_depth(br#""[[[\"#, 1), None);
    }

    #[test]
    fn not_utf8_is_named_with_its_offset() {
        let err = precheck(b"{\"a\":\"\xc3\x28\"}", &limits(100, 8)).expect_err("not utf-8");
        assert_eq!(err, PrecheckError::NotUtf8 { offset: 6 });
        assert_eq!(err.reason(), "not_utf8");
    }

    #[test]
    fn not_json_is_named_with_its_position() {
        for body in [
            &b"{\"a\":1,}"[..],
            b"",
            b"{\"a\":1} trailing",
            b"NaN",
            b"{'a':1}",
        ] {
            let err = precheck(body, &limits(100, 8)).expect_err("not JSON");
            assert_eq!(err.reason(), "not_json", "{body:?}");
        }
        match parse_checked(b"{\n  \"a\": 1 2\n}", &limits(100, 8)) {
            Err(PrecheckError::NotJson { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected NotJson, got {other:?}"),
        }
    }

    #[test]
    fn the_parse_refuses_what_the_scan_refuses_at_the_same_bracket() {
        let bodies: [&[u8]; 12] = [
            b"[]",
            b"{}",
            b"[[]]",
            b"{\"a\":{}}",
            b"{\"a\":[1,{\"b\":[]}]}",
            b"[[[1]]]",
            b"{\"a\":{\"b\":{\"c\":1}}}",
            b"[{},[],[{}],{\"x\":[[]]}]",
            // brackets in strings, escaped quotes, and numbers (a map to serde_json with
            // arbitrary precision) at the deepest level do not count
            b"[[\"[[[\\\"[[\"]]",
            b"[[0.5, 1e400, 123456789012345678901234567890]]",
            b"{\"a\":[{\"b\":0.25}]}",
            b"  [ [ [ ] ] ]  ",
        ];
        for body in bodies {
            for depth in 0..5 {
                let limits = limits(1024, depth);
                let scanned = precheck(body, &limits);
                let parsed = parse_checked(body, &limits).map(|_| ());
                assert_eq!(
                    parsed,
                    scanned,
                    "{} at depth {depth}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        // a hostile nest is refused where it passes the limit, with the scan's offset
        let body = "[".repeat(100_000);
        assert_eq!(
            parse_checked(body.as_bytes(), &limits(1 << 20, 64)),
            Err(PrecheckError::TooDeep {
                limit: 64,
                offset: 64
            })
        );
        // past serde_json's own limit, its error stands, as after the scan
        let body = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(
            parse_checked(body.as_bytes(), &limits(1024, 500)).map_err(|e| e.reason()),
            Err("not_json")
        );
    }
}
