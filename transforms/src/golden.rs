//! Golden cases of a mapping (an input and the exact canonical output expected from it, or
//! the rejection expected of it), and the readable diff shown when a mapping's output drifts
//! from what was expected.
//!
//! An expected file holding only `{"$rejected": "<message>"}` expects the mapping to refuse
//! the input with exactly that message (`reject(...)`, answered 422), not to produce output.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::TransformError;
use crate::mapping_files::{LoadError, file_name, sorted_entries};

const INPUT_SUFFIX: &str = ".input.json";
const EXPECTED_SUFFIX: &str = ".expected.json";
/// The one member of an expected file that expects a rejection instead of an output.
pub const REJECTED_KEY: &str = "$rejected";

/// How many differences a diff lists before it only counts.
const MAX_DIFF_LINES: usize = 40;
/// How much of a value a diff line shows.
const MAX_SHOWN_CHARS: usize = 160;

/// One golden case: an input document and the canonical output it must map to, exactly.
#[derive(Debug, Clone)]
pub struct GoldenCase {
    /// The file name without `.input.json`.
    pub name: String,
    pub input_path: PathBuf,
    pub expected_path: PathBuf,
    pub input: Value,
    pub expected: Value,
}

impl GoldenCase {
    /// The rejection message the case expects, when its expected file is
    /// `{"$rejected": "<message>"}`.
    pub fn expected_rejection(&self) -> Option<&str> {
        let members = self.expected.as_object()?;
        if members.len() != 1 {
            return None;
        }
        members.get(REJECTED_KEY)?.as_str()
    }
}

/// The result of running one golden case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldenOutcome {
    pub name: String,
    pub passed: bool,
    /// On failure: the differences (`pointer: expected X, got Y`, one per line) or the error.
    pub diff: Option<String>,
}

pub(crate) fn load_cases(dir: &Path) -> Result<Vec<GoldenCase>, Vec<LoadError>> {
    let entries = sorted_entries(dir).map_err(|err| vec![LoadError::at(dir, err)])?;
    let mut errors = Vec::new();
    let mut cases = Vec::new();
    for path in &entries {
        let name = file_name(path).unwrap_or_default();
        if let Some(case) = name.strip_suffix(INPUT_SUFFIX) {
            let expected_path = dir.join(format!("{case}{EXPECTED_SUFFIX}"));
            let input = read_json(path);
            let expected = read_json(&expected_path);
            match (input, expected) {
                (Ok(input), Ok(expected)) => cases.push(GoldenCase {
                    name: case.to_owned(),
                    input_path: path.clone(),
                    expected_path,
                    input,
                    expected,
                }),
                (input, expected) => {
                    errors.extend(input.err());
                    errors.extend(expected.err());
                }
            }
        } else if let Some(case) = name.strip_suffix(EXPECTED_SUFFIX) {
            if !dir.join(format!("{case}{INPUT_SUFFIX}")).exists() {
                errors.push(LoadError::at(
                    path,
                    format!("no {case}{INPUT_SUFFIX} beside it"),
                ));
            }
        } else if path.is_file() && !name.starts_with('.') && name != "README.md" {
            errors.push(LoadError::at(
                path,
                format!("a golden case is a pair <name>{INPUT_SUFFIX} and <name>{EXPECTED_SUFFIX}"),
            ));
        }
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(errors)
    }
}

fn read_json(path: &Path) -> Result<Value, LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| LoadError::at(path, format!("cannot read: {err}")))?;
    serde_json::from_str(&text).map_err(|err| {
        // serde_json ends its message with the position, which the error carries on its own.
        let full = err.to_string();
        let message = full
            .rfind(" at line ")
            .map_or(full.as_str(), |at| &full[..at]);
        LoadError {
            path: path.to_owned(),
            line: Some(err.line()),
            column: Some(err.column()),
            message: format!("not JSON: {message}"),
        }
    })
}

/// Compares what the mapping made of a case's input with the expected output (or the
/// expected rejection).
pub(crate) fn run_case(case: &GoldenCase, result: Result<Value, TransformError>) -> GoldenOutcome {
    let diff = match (case.expected_rejection(), result) {
        (None, Ok(actual)) => {
            let lines = diff(&case.expected, &actual);
            (!lines.is_empty()).then(|| lines.join("\n"))
        }
        (None, Err(err)) => Some(format!(
            "the mapping failed instead of producing the expected output: {err}"
        )),
        (Some(wanted), Err(TransformError::Rejected { message, .. })) => (message != wanted)
            .then(|| format!("expected the rejection {wanted:?}, got the rejection {message:?}")),
        (Some(wanted), Err(err)) => Some(format!(
            "expected the rejection {wanted:?}, but the mapping failed: {err}"
        )),
        (Some(wanted), Ok(actual)) => Some(format!(
            "expected the rejection {wanted:?}, got an output: {}",
            shown(&actual)
        )),
    };
    GoldenOutcome {
        name: case.name.clone(),
        passed: diff.is_none(),
        diff,
    }
}

/// Every difference between two JSON values, one line each, by JSON Pointer; empty when equal.
/// Numbers compare by their text (`1.0` is not `1`), as an ERP would see them.
pub fn diff(expected: &Value, actual: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let mut count = 0;
    walk(String::new(), expected, actual, &mut lines, &mut count);
    if count > lines.len() {
        lines.push(format!("... and {} more differences", count - lines.len()));
    }
    lines
}

fn walk(
    pointer: String,
    expected: &Value,
    actual: &Value,
    lines: &mut Vec<String>,
    count: &mut usize,
) {
    let at = |p: &str| {
        if p.is_empty() {
            "(root)".to_owned()
        } else {
            p.to_owned()
        }
    };
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, e_value) in e {
                let child = format!("{pointer}/{}", escape(key));
                match a.get(key) {
                    Some(a_value) => walk(child, e_value, a_value, lines, count),
                    None => note(
                        lines,
                        count,
                        format!("{}: missing, expected {}", at(&child), shown(e_value)),
                    ),
                }
            }
            for (key, a_value) in a {
                if !e.contains_key(key) {
                    let child = format!("{pointer}/{}", escape(key));
                    note(
                        lines,
                        count,
                        format!("{}: unexpected {}", at(&child), shown(a_value)),
                    );
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for (i, (e_item, a_item)) in e.iter().zip(a).enumerate() {
                walk(format!("{pointer}/{i}"), e_item, a_item, lines, count);
            }
            if e.len() != a.len() {
                note(
                    lines,
                    count,
                    format!(
                        "{}: expected {} items, got {}",
                        at(&pointer),
                        e.len(),
                        a.len()
                    ),
                );
            }
        }
        (e, a) if e == a => {}
        (e, a) => note(
            lines,
            count,
            format!("{}: expected {}, got {}", at(&pointer), shown(e), shown(a)),
        ),
    }
}

/// Counts a difference, listing it while the list has room.
fn note(lines: &mut Vec<String>, count: &mut usize, line: String) {
    *count += 1;
    if lines.len() < MAX_DIFF_LINES {
        lines.push(line);
    }
}

/// RFC 6901: `~` as `~0`, `/` as `~1`.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > MAX_SHOWN_CHARS {
        format!(
            "{}...",
            text.chars().take(MAX_SHOWN_CHARS).collect::<String>()
        )
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn case(expected: Value) -> GoldenCase {
        GoldenCase {
            name: "c".into(),
            input_path: PathBuf::from("c.input.json"),
            expected_path: PathBuf::from("c.expected.json"),
            input: Value::Null,
            expected,
        }
    }

    fn rejected(message: &str) -> Result<Value, TransformError> {
        Err(TransformError::Rejected {
            mapping: "m".into(),
            message: message.into(),
        })
    }

    #[test]
    fn expected_rejections_pass_only_on_that_rejection() {
        let expects = case(json!({"$rejected": "missing sequence"}));
        assert_eq!(expects.expected_rejection(), Some("missing sequence"));
        assert!(run_case(&expects, rejected("missing sequence")).passed);
        let other = run_case(&expects, rejected("a delta item"));
        assert_eq!(
            other.diff.as_deref(),
            Some(r#"expected the rejection "missing sequence", got the rejection "a delta item""#)
        );
        let output = run_case(&expects, Ok(json!({"a": 1})));
        assert!(!output.passed);
        assert!(output.diff.is_some_and(|d| d.contains("got an output")));
        let failed = run_case(
            &expects,
            Err(TransformError::NoOutput {
                mapping: "m".into(),
            }),
        );
        assert!(
            failed
                .diff
                .is_some_and(|d| d.contains("the mapping failed"))
        );
        // An output case is not passed by a rejection, and a `$rejected` next to other members
        // is an ordinary expected document.
        let plain = case(json!({"$rejected": "x", "other": 1}));
        assert_eq!(plain.expected_rejection(), None);
        assert!(!run_case(&plain, rejected("x")).passed);
    }

    #[test]
    fn equal_values_have_no_diff() {
        let v = json!({"a": [1, {"b": "x"}], "c": null});
        assert!(diff(&v, &v.clone()).is_empty());
    }

    #[test]
    fn differences_are_listed_by_pointer() {
        let expected = json!({"a": {"amount": "10.00"}, "b": [1, 2], "gone": 1, "x/y": true});
        let actual = json!({"a": {"amount": "10.0"}, "b": [1], "new": 2, "x/y": false});
        let lines = diff(&expected, &actual);
        assert!(
            lines.contains(&r#"/a/amount: expected "10.00", got "10.0""#.to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"/b: expected 2 items, got 1".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"/gone: missing, expected 1".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"/new: unexpected 2".to_owned()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"/x~1y: expected true, got false".to_owned()),
            "{lines:?}"
        );
    }

    #[test]
    fn numbers_compare_by_their_text() {
        let one: Value = serde_json::from_str("1").expect("json");
        let one_point_zero: Value = serde_json::from_str("1.0").expect("json");
        assert_eq!(diff(&one, &one_point_zero).len(), 1);
    }

    #[test]
    fn long_diffs_are_capped_and_counted() {
        let expected = Value::Array((0..100).map(|i| json!(i)).collect());
        let actual = Value::Array((0..100).map(|i| json!(i + 1)).collect());
        let lines = diff(&expected, &actual);
        assert_eq!(lines.len(), MAX_DIFF_LINES + 1);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("... and 60 more differences")
        );
    }
}
