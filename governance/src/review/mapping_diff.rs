//! Whether a channel's mapping still does what it did: the old and the new mapping both run on
//! the old mapping's golden inputs, and every input whose result differs is a finding.

use serde_json::Value;
use transforms::{Mapping, TransformError};

use super::finding::{Finding, Severity};

/// What the old and new mapping make of the old mapping's golden inputs (one finding per
/// input whose result differs).
pub fn diff(route: &str, channel: &str, old: &Mapping, new: &Mapping) -> Vec<Finding> {
    let mut out = Vec::new();
    for case in old.golden_cases() {
        let before = old.apply(case.input.clone());
        let after = new.apply(case.input.clone());
        let input = format!(
            "route {route}, {channel}'s mapping: golden input {}/{}",
            old.name(),
            case.name
        );
        let finding = |severity, kind: &str, message: String| {
            Finding::new(severity, kind, Some(route), Some(channel), message)
        };
        match (before, after) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(a), Ok(b)) => {
                let lines = transforms::golden::diff(&a, &b);
                let first = lines.first().cloned().unwrap_or_default();
                let pointer = first
                    .split_once(": ")
                    .map_or("", |(p, _)| p)
                    .replace("(root)", "");
                let (old_value, new_value) = if pointer.is_empty() {
                    (Some(a.clone()), Some(b.clone()))
                } else {
                    (a.pointer(&pointer).cloned(), b.pointer(&pointer).cloned())
                };
                out.push(
                    finding(
                        Severity::Breaking,
                        "mapping.output_changed",
                        format!(
                            "{input}: the output differs in {} place(s), first {}",
                            lines.len(),
                            first.replace("expected", "was").replace(", got", ", now")
                        ),
                    )
                    .at(pointer)
                    .values(old_value, new_value),
                );
            }
            (Ok(a), Err(e)) => out.push(
                finding(
                    Severity::Breaking,
                    "mapping.output_changed",
                    format!("{input}: mapped before, now {}", failure(&e)),
                )
                .at("")
                .values(Some(a), Some(Value::String(e.to_string()))),
            ),
            (Err(e), Ok(b)) => out.push(
                finding(
                    Severity::Additive,
                    "mapping.now_maps",
                    format!("{input}: {} before, now mapped", failure(&e)),
                )
                .at("")
                .values(Some(Value::String(e.to_string())), Some(b)),
            ),
            (Err(a), Err(b)) => {
                let (a, b) = (a.to_string(), b.to_string());
                if a != b {
                    out.push(
                        finding(
                            Severity::Additive,
                            "mapping.rejection_changed",
                            format!("{input}: refused with another message"),
                        )
                        .values(Some(Value::String(a)), Some(Value::String(b))),
                    );
                }
            }
        }
    }
    out
}

fn failure(err: &TransformError) -> String {
    if err.is_rejection() {
        format!("refused ({err})")
    } else {
        format!("failed ({err})")
    }
}
