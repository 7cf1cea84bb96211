//! Contract review: what changes for callers between two policy files.

use serde::Serialize;

use crate::surface::Surface;

/// Whether a change breaks callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Callers that worked before may now fail.
    Breaking,
    /// Callers gain something; nothing that worked fails.
    Additive,
}

/// One change between two files.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Breaking or additive.
    pub severity: Severity,
    /// What it is about, e.g. `route.removed`.
    pub kind: String,
    /// The route (None for file-wide changes).
    pub route: Option<String>,
    /// The channel, when the change is per channel.
    pub channel: Option<String>,
    /// A JSON pointer into the schema or document, when there is one.
    pub pointer: Option<String>,
    /// What changed, for people.
    pub message: String,
}

/// The changes from `old` to `new`.
pub fn review(old: &Surface, new: &Surface) -> Vec<Finding> {
    let _ = (old, new);
    Vec::new()
}

/// The findings for people: breaking first, then additive, one line each.
pub fn render_text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!("{:?}: {}\n", f.severity, f.message));
    }
    out
}

/// The findings for CI: `{"breaking": n, "additive": n, "findings": [...]}`.
pub fn render_json(findings: &[Finding]) -> serde_json::Value {
    let breaking = findings
        .iter()
        .filter(|f| f.severity == Severity::Breaking)
        .count();
    serde_json::json!({
        "breaking": breaking,
        "additive": findings.len() - breaking,
        "findings": findings,
    })
}
