//! A finding of contract review: one change between two policy files, breaking or additive,
//! with the field names the JSON output keeps stable.

use serde::Serialize;
use serde_json::Value;

/// Whether a change breaks callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Callers that worked before may now fail.
    Breaking,
    /// Callers gain something; nothing that worked fails.
    Additive,
}

impl Severity {
    /// `breaking` or `additive`, as in the JSON output.
    pub fn word(self) -> &'static str {
        match self {
            Severity::Breaking => "breaking",
            Severity::Additive => "additive",
        }
    }
}

/// One change between two files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Breaking or additive.
    pub severity: Severity,
    /// What it is about, e.g. `route.removed`, `scope.added`, `schema.required` (the list is in
    /// the `review` module's documentation).
    pub kind: String,
    /// The route (None for file-wide changes).
    pub route: Option<String>,
    /// The channel, when the change is per channel.
    pub channel: Option<String>,
    /// A JSON pointer into the channel's document (schema findings, `*` for every array item),
    /// the mapping's output (mapping findings) or the policy file (limits), when there is one.
    pub pointer: Option<String>,
    /// For schema findings: the other places in the document the same changed keyword
    /// applies to (a `$defs` entry referred to from several places is reported once, at
    /// `pointer`, with the rest here); empty otherwise.
    pub also_at: Vec<String>,
    /// For schema findings: the changed keyword in the new schema file (the old one when the
    /// keyword is gone), as the file and a JSON pointer, e.g.
    /// `schemas/amazon/order.schema.json#/$defs/Money/properties/Amount/maxLength`.
    pub schema: Option<String>,
    /// What changed, for people.
    pub message: String,
    /// The old value, when there is one to show (a limit, a keyword's value, a scope).
    pub old: Option<Value>,
    /// The new value, when there is one to show.
    pub new: Option<Value>,
}

impl Finding {
    /// A finding without pointer, schema location or values.
    pub fn new(
        severity: Severity,
        kind: &str,
        route: Option<&str>,
        channel: Option<&str>,
        message: String,
    ) -> Finding {
        Finding {
            severity,
            kind: kind.to_owned(),
            route: route.map(str::to_owned),
            channel: channel.map(str::to_owned),
            pointer: None,
            also_at: Vec::new(),
            schema: None,
            message,
            old: None,
            new: None,
        }
    }

    /// The same finding at a pointer.
    pub fn at(mut self, pointer: impl Into<String>) -> Finding {
        self.pointer = Some(pointer.into());
        self
    }

    /// The same finding with its old and new values.
    pub fn values(mut self, old: Option<Value>, new: Option<Value>) -> Finding {
        self.old = old;
        self.new = new;
        self
    }
}
