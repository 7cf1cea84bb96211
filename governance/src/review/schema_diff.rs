//! Whether a JSON Schema (draft 2020-12) accepts less than it did: the keyword-by-keyword
//! comparison of an old and a new channel schema, following local `$ref`s into `$defs` and
//! descending through `properties`, `additionalProperties`, `items`, `prefixItems`,
//! `allOf`/`anyOf`/`oneOf` and `if`/`then`/`else`.
//!
//! A change is *stricter* when a document the old schema accepted may be refused by the new
//! one (a new required field, a removed property under `additionalProperties: false`, a
//! narrower `type`/`enum`/`const`/`pattern`/`format`, a lower `maxLength`/`maximum`/`maxItems`,
//! a higher `minimum`/`minLength`/`minItems`, `additionalProperties` newly false, a new
//! `dependentRequired`, ...), and *looser* otherwise. Where the comparison cannot prove a
//! change harmless (a rewritten pattern, a changed `if` condition, a keyword it does not
//! analyse) it calls the change stricter: contract review must not wave a break through.
//! Annotations (`title`, `description`, `examples`, ...) never count.
//!
//! This module knows nothing of routes or findings: it takes two schema documents and returns
//! [`SchemaChange`]s, which the review turns into findings.

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value};

/// One difference between two schemas.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaChange {
    /// Whether documents the old schema accepted may now be refused.
    pub stricter: bool,
    /// The keyword that changed (`required`, `type`, `maxLength`, `properties`, ...).
    pub keyword: &'static str,
    /// Where in the document: a JSON pointer, with `*` standing for every item of an array
    /// (or every property an `additionalProperties` schema covers). `""` is the whole document.
    pub pointer: String,
    /// The keyword in the new schema (in the old one when the keyword is gone), as a JSON
    /// pointer into that schema file after following `$ref`s, e.g.
    /// `/$defs/Money/properties/Amount/maxLength`.
    pub schema_pointer: String,
    /// What changed, for people.
    pub message: String,
    /// The keyword's old value, when it had one.
    pub old: Option<Value>,
    /// The keyword's new value, when it has one.
    pub new: Option<Value>,
}

/// Every change from `old` to `new` (two whole schema documents, each the root its own `$ref`s
/// resolve against), stricter ones and looser ones, in document order.
pub fn diff(old: &Value, new: &Value) -> Vec<SchemaChange> {
    if old == new {
        return Vec::new();
    }
    let mut walker = Walker {
        old_root: old,
        new_root: new,
        out: Vec::new(),
        in_progress: HashSet::new(),
    };
    walker.compare(
        Node::new(old, String::new()),
        Node::new(new, String::new()),
        "",
        0,
    );
    walker.out
}

/// Schemas nested deeper than this are not compared further (a guard; real ones are < 20).
const MAX_DEPTH: usize = 64;

/// Keywords that describe without constraining.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$anchor",
    "$dynamicAnchor",
    "$comment",
    "$defs",
    "definitions",
    "$vocabulary",
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
];

/// Keywords compared by [`Walker::compare_object`] itself; any other one is compared as a
/// whole value.
const ANALYSED: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "pattern",
    "format",
    "maxLength",
    "maxItems",
    "maxProperties",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "minItems",
    "minProperties",
    "minimum",
    "exclusiveMinimum",
    "multipleOf",
    "uniqueItems",
    "required",
    "dependentRequired",
    "properties",
    "additionalProperties",
    "items",
    "prefixItems",
    "allOf",
    "anyOf",
    "oneOf",
    "if",
    "then",
    "else",
];

const UPPER_BOUNDS: &[&str] = &[
    "maxLength",
    "maxItems",
    "maxProperties",
    "maximum",
    "exclusiveMaximum",
];
const LOWER_BOUNDS: &[&str] = &[
    "minLength",
    "minItems",
    "minProperties",
    "minimum",
    "exclusiveMinimum",
];

/// A schema as the comparison sees it: an object of keywords (a `$ref` merged with its target),
/// with where it sits in its file.
#[derive(Debug, Clone)]
struct Node {
    /// The keywords; `false` becomes `{"not": {}}` and `true` `{}`.
    keywords: Map<String, Value>,
    /// JSON pointer of the schema in its file.
    path: String,
    /// An unresolvable `$ref` (not `#...`, or pointing nowhere), kept as written.
    opaque_ref: Option<String>,
}

impl Node {
    /// A node without resolving anything (the root, or a literal value).
    fn new(value: &Value, path: String) -> Node {
        let keywords = match value {
            Value::Object(map) => map.clone(),
            Value::Bool(false) => {
                let mut m = Map::new();
                m.insert("not".to_owned(), Value::Object(Map::new()));
                m
            }
            _ => Map::new(),
        };
        Node {
            keywords,
            path,
            opaque_ref: None,
        }
    }

    fn get(&self, keyword: &str) -> Option<&Value> {
        self.keywords.get(keyword)
    }
}

struct Walker<'a> {
    old_root: &'a Value,
    new_root: &'a Value,
    out: Vec<SchemaChange>,
    /// The (old, new) schema locations being compared further up: a recursive schema stops
    /// here instead of looping.
    in_progress: HashSet<(String, String)>,
}

/// Follows `$ref` chains (local ones: `#` plus a JSON pointer) and merges each target with the
/// keywords written beside the `$ref` (both apply in 2020-12; the ones beside it win a clash,
/// which the shipped schemas never have).
fn resolve(root: &Value, node: Node) -> Node {
    let mut node = node;
    let mut hops = 0;
    while let Some(Value::String(reference)) = node.keywords.get("$ref").cloned() {
        hops += 1;
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(&percent_decode(pointer)));
        let Some(target) = target.filter(|_| hops <= 32) else {
            node.keywords.remove("$ref");
            node.opaque_ref = Some(reference);
            return node;
        };
        let mut merged = Node::new(target, reference.trim_start_matches('#').to_owned());
        for (k, v) in node.keywords {
            if k != "$ref" {
                merged.keywords.insert(k, v);
            }
        }
        node = merged;
    }
    node
}

/// `%25` and friends in a `$ref` fragment (rare, but a valid way to write a `$defs` name).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = text
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A property name as a JSON pointer segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn child(pointer: &str, segment: &str) -> String {
    format!("{pointer}/{}", escape(segment))
}

fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}

fn at(pointer: &str) -> &str {
    if pointer.is_empty() {
        "(root)"
    } else {
        pointer
    }
}

/// The JSON types a `type` keyword admits; `integer` stands for itself, `number` for every
/// number. None: every type.
fn types(node: &Node) -> Option<BTreeSet<String>> {
    match node.get("type")? {
        Value::String(t) => Some(BTreeSet::from([t.clone()])),
        Value::Array(list) => Some(
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        _ => None,
    }
}

fn admits(set: &Option<BTreeSet<String>>, t: &str) -> bool {
    match set {
        None => true,
        Some(s) => s.contains(t) || (t == "integer" && s.contains("number")),
    }
}

/// The JSON type of a value, integers as `integer`.
fn value_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
    }
}

const ALL_TYPES: &[&str] = &["null", "boolean", "object", "array", "number", "string"];

fn type_list(set: &Option<BTreeSet<String>>) -> String {
    match set {
        None => "any".to_owned(),
        Some(s) => s.iter().cloned().collect::<Vec<_>>().join("|"),
    }
}

/// The values an `enum` (or a `const`) admits; None: no such restriction.
fn enum_values(node: &Node) -> Option<Vec<Value>> {
    if let Some(Value::Array(list)) = node.get("enum") {
        return Some(list.clone());
    }
    node.get("const").map(|c| vec![c.clone()])
}

/// The top-level alternatives of a regular expression (`a|b|c`), outside groups and classes.
fn alternatives(pattern: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut in_class, mut escaped, mut start) = (0usize, false, false, 0);
    for (i, c) in pattern.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => depth = depth.saturating_sub(1),
            '|' if !in_class && depth == 0 => {
                out.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&pattern[start..]);
    out
}

/// `additionalProperties` as it constrains properties not listed.
enum Extra {
    Any,
    Never,
    Schema(Value),
}

fn extra(node: &Node) -> Extra {
    match node.get("additionalProperties") {
        None | Some(Value::Bool(true)) => Extra::Any,
        Some(Value::Bool(false)) => Extra::Never,
        Some(v) if v.as_object().is_some_and(Map::is_empty) => Extra::Any,
        Some(v) => Extra::Schema(v.clone()),
    }
}

fn string_set(value: Option<&Value>) -> BTreeSet<String> {
    value
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl Walker<'_> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        stricter: bool,
        keyword: &'static str,
        pointer: &str,
        schema_pointer: String,
        message: String,
        old: Option<&Value>,
        new: Option<&Value>,
    ) {
        self.out.push(SchemaChange {
            stricter,
            keyword,
            pointer: pointer.to_owned(),
            schema_pointer,
            message,
            old: old.cloned(),
            new: new.cloned(),
        });
    }

    /// Compares two schemas describing the document at `pointer`.
    fn compare(&mut self, old: Node, new: Node, pointer: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let old = resolve(self.old_root, old);
        let new = resolve(self.new_root, new);
        let key = (old.path.clone(), new.path.clone());
        if !self.in_progress.insert(key.clone()) {
            return; // a recursive schema: this pair is already being compared further up
        }
        self.compare_object(&old, &new, pointer, depth);
        self.in_progress.remove(&key);
    }

    fn compare_object(&mut self, old: &Node, new: &Node, pointer: &str, depth: usize) {
        let kw = |node: &Node, k: &str| format!("{}/{k}", node.path);
        // where a keyword is reported: in the new schema, or the old one when it is gone
        let loc = |k: &str| {
            if new.get(k).is_some() || old.get(k).is_none() {
                kw(new, k)
            } else {
                kw(old, k)
            }
        };

        if old.opaque_ref != new.opaque_ref {
            let o = old.opaque_ref.clone().map(Value::String);
            let n = new.opaque_ref.clone().map(Value::String);
            self.push(
                true,
                "$ref",
                pointer,
                loc("$ref"),
                format!(
                    "{}: $ref changed from {} to {} (not resolvable here: treated as breaking)",
                    at(pointer),
                    o.as_ref().map_or("none".into(), shown),
                    n.as_ref().map_or("none".into(), shown)
                ),
                o.as_ref(),
                n.as_ref(),
            );
        }

        self.compare_type(old, new, pointer, loc("type"));
        self.compare_enum(old, new, pointer, &loc);
        self.compare_pattern(old, new, pointer, loc("pattern"));
        self.compare_format(old, new, pointer, loc("format"));
        for &k in UPPER_BOUNDS {
            self.compare_bound(old, new, pointer, k, true, loc(k));
        }
        for &k in LOWER_BOUNDS {
            self.compare_bound(old, new, pointer, k, false, loc(k));
        }
        self.compare_multiple_of(old, new, pointer, loc("multipleOf"));
        self.compare_unique(old, new, pointer, loc("uniqueItems"));
        self.compare_required(old, new, pointer, loc("required"));
        self.compare_dependent_required(old, new, pointer, loc("dependentRequired"));
        self.compare_properties(old, new, pointer, depth);
        self.compare_items(old, new, pointer, depth);
        for k in ["allOf", "anyOf", "oneOf"] {
            self.compare_composition(old, new, pointer, k, loc(k), depth);
        }
        self.compare_conditional(old, new, pointer, loc("if"), depth);

        // every other constraining keyword: equal or treated as breaking
        let names: BTreeSet<&String> = old.keywords.keys().chain(new.keywords.keys()).collect();
        for name in names {
            if ANNOTATIONS.contains(&name.as_str()) || ANALYSED.contains(&name.as_str()) {
                continue;
            }
            let (o, n) = (old.get(name), new.get(name));
            if o == n {
                continue;
            }
            let stricter = n.is_some();
            let message = match (o, n) {
                (None, Some(v)) => format!(
                    "{}: {name} {} added (not analysed: treated as breaking)",
                    at(pointer),
                    shown(v)
                ),
                (Some(_), None) => format!("{}: {name} removed", at(pointer)),
                _ => format!(
                    "{}: {name} changed (not analysed: treated as breaking)",
                    at(pointer)
                ),
            };
            self.push(stricter, "other", pointer, loc(name), message, o, n);
        }
    }

    fn compare_type(&mut self, old: &Node, new: &Node, pointer: &str, loc: String) {
        let (o, n) = (types(old), types(new));
        if o == n {
            return;
        }
        // an enum (or const) already limits the old schema to its values' types
        let old_values = enum_values(old);
        let old_admits: Vec<&str> = ALL_TYPES
            .iter()
            .copied()
            .chain(["integer"])
            .filter(|t| admits(&o, t))
            .filter(|t| {
                old_values
                    .as_ref()
                    .is_none_or(|values| values.iter().any(|v| value_type(v) == *t))
            })
            .collect();
        let lost: Vec<&str> = old_admits
            .iter()
            .copied()
            .filter(|t| !admits(&n, t))
            .collect();
        let gained = ALL_TYPES
            .iter()
            .copied()
            .chain(["integer"])
            .any(|t| admits(&n, t) && !admits(&o, t));
        let (ov, nv) = (old.get("type"), new.get("type"));
        if !lost.is_empty() {
            let lost_text = lost
                .iter()
                .map(|t| {
                    if *t == "number" && admits(&n, "integer") {
                        "non-integer numbers"
                    } else {
                        t
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            self.push(
                true,
                "type",
                pointer,
                loc,
                format!(
                    "{}: type narrowed from {} to {} ({lost_text} refused)",
                    at(pointer),
                    type_list(&o),
                    type_list(&n)
                ),
                ov,
                nv,
            );
        } else if gained {
            self.push(
                false,
                "type",
                pointer,
                loc,
                format!(
                    "{}: type widened from {} to {}",
                    at(pointer),
                    type_list(&o),
                    type_list(&n)
                ),
                ov,
                nv,
            );
        }
    }

    fn compare_enum(
        &mut self,
        old: &Node,
        new: &Node,
        pointer: &str,
        loc: &dyn Fn(&str) -> String,
    ) {
        let (o, n) = (enum_values(old), enum_values(new));
        // report under the keyword the new schema uses (enum or const)
        let keyword = if new.get("enum").is_some()
            || (new.get("const").is_none() && old.get("enum").is_some())
        {
            "enum"
        } else {
            "const"
        };
        let (ov, nv) = (
            old.get(keyword).or(old.get("enum")).or(old.get("const")),
            new.get(keyword),
        );
        match (&o, &n) {
            (None, None) => {}
            (None, Some(values)) => self.push(
                true,
                keyword,
                pointer,
                loc(keyword),
                format!(
                    "{}: {keyword} added: only {} accepted",
                    at(pointer),
                    shown(&Value::Array(values.clone()))
                ),
                ov,
                nv,
            ),
            (Some(_), None) => self.push(
                false,
                keyword,
                pointer,
                loc(keyword),
                format!(
                    "{}: {keyword} removed: any value of the type accepted",
                    at(pointer)
                ),
                ov,
                nv,
            ),
            (Some(ov_list), Some(nv_list)) => {
                let removed: Vec<Value> = ov_list
                    .iter()
                    .filter(|v| !nv_list.contains(v))
                    .cloned()
                    .collect();
                let added: Vec<Value> = nv_list
                    .iter()
                    .filter(|v| !ov_list.contains(v))
                    .cloned()
                    .collect();
                if !removed.is_empty() {
                    self.push(
                        true,
                        keyword,
                        pointer,
                        loc(keyword),
                        format!(
                            "{}: {keyword} narrowed: {} no longer accepted",
                            at(pointer),
                            shown(&Value::Array(removed))
                        ),
                        ov,
                        nv,
                    );
                }
                if !added.is_empty() {
                    self.push(
                        false,
                        keyword,
                        pointer,
                        loc(keyword),
                        format!(
                            "{}: {keyword} widened: {} now accepted",
                            at(pointer),
                            shown(&Value::Array(added))
                        ),
                        ov,
                        nv,
                    );
                }
            }
        }
    }

    fn compare_pattern(&mut self, old: &Node, new: &Node, pointer: &str, loc: String) {
        let (ov, nv) = (old.get("pattern"), new.get("pattern"));
        let (o, n) = (ov.and_then(Value::as_str), nv.and_then(Value::as_str));
        let (stricter, message) = match (o, n) {
            (a, b) if a == b => return,
            (None, Some(p)) => (true, format!("{}: pattern {p:?} added", at(pointer))),
            (Some(_), None) => (false, format!("{}: pattern removed", at(pointer))),
            (Some(a), Some(b)) => {
                // the one case provable here: the new pattern is the old one plus alternatives
                if alternatives(b).len() > 1 && alternatives(b).contains(&a) {
                    (
                        false,
                        format!("{}: pattern widened from {a:?} to {b:?}", at(pointer)),
                    )
                } else {
                    (
                        true,
                        format!(
                            "{}: pattern changed from {a:?} to {b:?} (strings the old one accepted may be refused)",
                            at(pointer)
                        ),
                    )
                }
            }
            _ => return,
        };
        self.push(stricter, "pattern", pointer, loc, message, ov, nv);
    }

    fn compare_format(&mut self, old: &Node, new: &Node, pointer: &str, loc: String) {
        let (ov, nv) = (old.get("format"), new.get("format"));
        let (stricter, message) = match (ov, nv) {
            (a, b) if a == b => return,
            (None, Some(f)) => (true, format!("{}: format {} added", at(pointer), shown(f))),
            (Some(_), None) => (false, format!("{}: format removed", at(pointer))),
            (Some(a), Some(b)) => (
                true,
                format!(
                    "{}: format changed from {} to {}",
                    at(pointer),
                    shown(a),
                    shown(b)
                ),
            ),
            _ => return,
        };
        self.push(stricter, "format", pointer, loc, message, ov, nv);
    }

    fn compare_bound(
        &mut self,
        old: &Node,
        new: &Node,
        pointer: &str,
        keyword: &'static str,
        upper: bool,
        loc: String,
    ) {
        let (ov, nv) = (old.get(keyword), new.get(keyword));
        let (o, n) = (ov.and_then(Value::as_f64), nv.and_then(Value::as_f64));
        let (stricter, message) = match (o, n) {
            (None, None) => return,
            (None, Some(_)) => (
                true,
                format!(
                    "{}: {keyword} {} added",
                    at(pointer),
                    shown(nv.unwrap_or(&Value::Null))
                ),
            ),
            (Some(_), None) => (false, format!("{}: {keyword} removed", at(pointer))),
            (Some(a), Some(b)) if a == b => return,
            (Some(a), Some(b)) => {
                let lowered = b < a;
                let word = if lowered { "lowered" } else { "raised" };
                (
                    lowered == upper,
                    format!(
                        "{}: {keyword} {word} from {} to {}",
                        at(pointer),
                        shown(ov.unwrap_or(&Value::Null)),
                        shown(nv.unwrap_or(&Value::Null))
                    ),
                )
            }
        };
        self.push(stricter, keyword, pointer, loc, message, ov, nv);
    }

    fn compare_multiple_of(&mut self, old: &Node, new: &Node, pointer: &str, loc: String) {
        let (ov, nv) = (old.get("multipleOf"), new.get("multipleOf"));
        let (o, n) = (ov.and_then(Value::as_f64), nv.and_then(Value::as_f64));
        let stricter = match (o, n) {
            (None, None) => return,
            (Some(a), Some(b)) if a == b => return,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            // looser when every multiple of the old step is a multiple of the new one
            (Some(a), Some(b)) => b == 0.0 || (a / b).fract() != 0.0,
        };
        let message = format!(
            "{}: multipleOf {} -> {}",
            at(pointer),
            ov.map_or("none".into(), shown),
            nv.map_or("none".into(), shown)
        );
        self.push(stricter, "multipleOf", pointer, loc, message, ov, nv);
    }

    fn compare_unique(&mut self, old: &Node, new: &Node, pointer: &str, loc: String) {
        let (ov, nv) = (old.get("uniqueItems"), new.get("uniqueItems"));
        let on = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(false);
        match (on(ov), on(nv)) {
            (false, true) => self.push(
                true,
                "uniqueItems",
                pointer,
                loc,
                format!("{}: items must now be unique", at(pointer)),
                ov,
                nv,
            ),
            (true, false) => self.push(
                false,
                "uniqueItems",
                pointer,
                loc,
                format!("{}: items no longer need to be unique", at(pointer)),
                ov,
                nv,
            ),
            _ => {}
        }
    }

    fn compare_required(&mut self, old: &Node, new: &Node, pointer: &str, loc: String) {
        let (o, n) = (
            string_set(old.get("required")),
            string_set(new.get("required")),
        );
        for name in n.difference(&o) {
            let field = child(pointer, name);
            self.push(
                true,
                "required",
                &field,
                loc.clone(),
                format!("{field}: new required field {name:?}"),
                None,
                Some(&Value::String(name.clone())),
            );
        }
        for name in o.difference(&n) {
            let field = child(pointer, name);
            self.push(
                false,
                "required",
                &field,
                loc.clone(),
                format!("{field}: {name:?} is no longer required"),
                Some(&Value::String(name.clone())),
                None,
            );
        }
    }

    fn compare_dependent_required(&mut self, old: &Node, new: &Node, pointer: &str, loc: String) {
        let map = |node: &Node| -> Vec<(String, BTreeSet<String>)> {
            node.get("dependentRequired")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), string_set(Some(v))))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (o, n) = (map(old), map(new));
        let deps = |list: &[(String, BTreeSet<String>)], key: &str| {
            list.iter()
                .find(|(k, _)| k == key)
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        };
        for (key, wanted) in &n {
            let before = deps(&o, key);
            for d in wanted.difference(&before) {
                self.push(
                    true,
                    "dependentRequired",
                    &child(pointer, d),
                    loc.clone(),
                    format!(
                        "{}: now required whenever {key:?} is present",
                        child(pointer, d)
                    ),
                    None,
                    Some(&Value::String(d.clone())),
                );
            }
        }
        for (key, wanted) in &o {
            let after = deps(&n, key);
            for d in wanted.difference(&after) {
                self.push(
                    false,
                    "dependentRequired",
                    &child(pointer, d),
                    loc.clone(),
                    format!(
                        "{}: no longer required when {key:?} is present",
                        child(pointer, d)
                    ),
                    Some(&Value::String(d.clone())),
                    None,
                );
            }
        }
    }

    fn compare_properties(&mut self, old: &Node, new: &Node, pointer: &str, depth: usize) {
        let empty = Map::new();
        let op = old
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let np = new
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let (oe, ne) = (extra(old), extra(new));
        let prop_path =
            |node: &Node, name: &str| format!("{}/properties/{}", node.path, escape(name));

        for (name, o_schema) in op {
            let field = child(pointer, name);
            match (np.get(name), &ne) {
                (Some(n_schema), _) => self.compare(
                    Node::new(o_schema, prop_path(old, name)),
                    Node::new(n_schema, prop_path(new, name)),
                    &field,
                    depth + 1,
                ),
                (None, Extra::Never) => self.push(
                    true,
                    "properties",
                    &field,
                    prop_path(old, name),
                    format!(
                        "{field}: property {name:?} removed while additionalProperties is false (documents carrying it are refused)"
                    ),
                    Some(o_schema),
                    None,
                ),
                (None, Extra::Schema(s)) => self.compare(
                    Node::new(o_schema, prop_path(old, name)),
                    Node::new(s, format!("{}/additionalProperties", new.path)),
                    &field,
                    depth + 1,
                ),
                (None, Extra::Any) => self.push(
                    false,
                    "properties",
                    &field,
                    prop_path(old, name),
                    format!("{field}: property {name:?} no longer described (any value accepted)"),
                    Some(o_schema),
                    None,
                ),
            }
        }
        for (name, n_schema) in np {
            if op.contains_key(name) {
                continue;
            }
            let field = child(pointer, name);
            match &oe {
                Extra::Schema(s) => self.compare(
                    Node::new(s, format!("{}/additionalProperties", old.path)),
                    Node::new(n_schema, prop_path(new, name)),
                    &field,
                    depth + 1,
                ),
                Extra::Never => self.push(
                    false,
                    "properties",
                    &field,
                    prop_path(new, name),
                    format!("{field}: new property {name:?} accepted"),
                    None,
                    Some(n_schema),
                ),
                // optional unless `required` says otherwise (reported there)
                Extra::Any => self.push(
                    false,
                    "properties",
                    &field,
                    prop_path(new, name),
                    format!("{field}: new optional property {name:?} described"),
                    None,
                    Some(n_schema),
                ),
            }
        }

        let (ov, nv) = (
            old.get("additionalProperties"),
            new.get("additionalProperties"),
        );
        let loc = if nv.is_some() || ov.is_none() {
            format!("{}/additionalProperties", new.path)
        } else {
            format!("{}/additionalProperties", old.path)
        };
        let every = child(pointer, "*");
        match (&oe, &ne) {
            (Extra::Any, Extra::Never) | (Extra::Schema(_), Extra::Never) => self.push(
                true,
                "additionalProperties",
                pointer,
                loc,
                format!(
                    "{}: additionalProperties newly false: properties not listed are refused",
                    at(pointer)
                ),
                ov,
                nv,
            ),
            (Extra::Never, Extra::Any) | (Extra::Never, Extra::Schema(_)) => self.push(
                false,
                "additionalProperties",
                pointer,
                loc,
                format!(
                    "{}: additionalProperties no longer false: unlisted properties accepted",
                    at(pointer)
                ),
                ov,
                nv,
            ),
            (Extra::Any, Extra::Schema(s)) => self.compare(
                Node::new(
                    &Value::Object(Map::new()),
                    format!("{}/additionalProperties", old.path),
                ),
                Node::new(s, format!("{}/additionalProperties", new.path)),
                &every,
                depth + 1,
            ),
            (Extra::Schema(s), Extra::Any) => self.compare(
                Node::new(s, format!("{}/additionalProperties", old.path)),
                Node::new(
                    &Value::Object(Map::new()),
                    format!("{}/additionalProperties", new.path),
                ),
                &every,
                depth + 1,
            ),
            (Extra::Schema(a), Extra::Schema(b)) => self.compare(
                Node::new(a, format!("{}/additionalProperties", old.path)),
                Node::new(b, format!("{}/additionalProperties", new.path)),
                &every,
                depth + 1,
            ),
            (Extra::Any, Extra::Any) | (Extra::Never, Extra::Never) => {}
        }
    }

    fn compare_items(&mut self, old: &Node, new: &Node, pointer: &str, depth: usize) {
        let any = Value::Object(Map::new());
        let (oi, ni) = (old.get("items"), new.get("items"));
        if oi.is_some() || ni.is_some() {
            self.compare(
                Node::new(oi.unwrap_or(&any), format!("{}/items", old.path)),
                Node::new(ni.unwrap_or(&any), format!("{}/items", new.path)),
                &child(pointer, "*"),
                depth + 1,
            );
        }
        let empty = Vec::new();
        let op = old
            .get("prefixItems")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        let np = new
            .get("prefixItems")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        for i in 0..op.len().max(np.len()) {
            self.compare(
                Node::new(
                    op.get(i).unwrap_or(&any),
                    format!("{}/prefixItems/{i}", old.path),
                ),
                Node::new(
                    np.get(i).unwrap_or(&any),
                    format!("{}/prefixItems/{i}", new.path),
                ),
                &child(pointer, &i.to_string()),
                depth + 1,
            );
        }
    }

    fn compare_composition(
        &mut self,
        old: &Node,
        new: &Node,
        pointer: &str,
        keyword: &'static str,
        loc: String,
        depth: usize,
    ) {
        let (ov, nv) = (old.get(keyword), new.get(keyword));
        let empty = Vec::new();
        let o = ov.and_then(Value::as_array).unwrap_or(&empty);
        let n = nv.and_then(Value::as_array).unwrap_or(&empty);
        // equal text can still reach different `$defs`: same length, compare branch by branch
        if o.len() == n.len() {
            for (i, (a, b)) in o.iter().zip(n).enumerate() {
                self.compare(
                    Node::new(a, format!("{}/{keyword}/{i}", old.path)),
                    Node::new(b, format!("{}/{keyword}/{i}", new.path)),
                    pointer,
                    depth + 1,
                );
            }
            return;
        }
        let added = n.iter().filter(|b| !o.contains(b)).count();
        let removed = o.iter().filter(|b| !n.contains(b)).count();
        // allOf: every branch must hold (more branches, stricter); anyOf/oneOf: one must
        let stricter = match keyword {
            "allOf" => added > 0,
            _ => removed > 0 || o.is_empty(),
        };
        let message = format!(
            "{}: {keyword} changed ({} -> {} schemas: {added} added, {removed} removed)",
            at(pointer),
            o.len(),
            n.len()
        );
        self.push(stricter, keyword, pointer, loc, message, ov, nv);
    }

    fn compare_conditional(
        &mut self,
        old: &Node,
        new: &Node,
        pointer: &str,
        loc: String,
        depth: usize,
    ) {
        let (oi, ni) = (old.get("if"), new.get("if"));
        let any = Value::Object(Map::new());
        if oi.is_none() && ni.is_none() {
            return;
        }
        if oi != ni {
            self.push(
                true,
                "if",
                pointer,
                loc,
                format!(
                    "{}: the if condition changed (which branch applies may differ: treated as breaking)",
                    at(pointer)
                ),
                oi,
                ni,
            );
            return;
        }
        for branch in ["then", "else"] {
            let (ob, nb) = (old.get(branch), new.get(branch));
            if ob.is_none() && nb.is_none() {
                continue;
            }
            self.compare(
                Node::new(ob.unwrap_or(&any), format!("{}/{branch}", old.path)),
                Node::new(nb.unwrap_or(&any), format!("{}/{branch}", new.path)),
                pointer,
                depth + 1,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    /// (stricter, keyword, pointer) of every change, for compact assertions.
    fn brief(old: &Value, new: &Value) -> Vec<(bool, &'static str, String)> {
        diff(old, new)
            .into_iter()
            .map(|c| (c.stricter, c.keyword, c.pointer))
            .collect()
    }

    fn shipped(path: &str) -> Value {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../policies/files/schemas")
            .join(path);
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
    }

    #[test]
    fn every_shipped_schema_equals_itself() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/files/schemas");
        let mut seen = 0;
        for channel in std::fs::read_dir(dir).unwrap() {
            let channel = channel.unwrap().path();
            if !channel.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(channel).unwrap() {
                let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
                let schema: Value = serde_json::from_str(&text).unwrap();
                // a copy, so the fast path of equal documents is not what answers
                let mut copy = schema.clone();
                copy["title"] = json!("another title");
                assert_eq!(diff(&schema, &copy), vec![]);
                seen += 1;
            }
        }
        assert!(seen >= 10, "{seen} schemas");
    }

    #[test]
    fn a_new_required_field_inside_array_items_is_stricter_and_located() {
        let old = shipped("amazon/order.schema.json");
        let mut new = old.clone();
        new["properties"]["OrderItems"]["items"]["required"]
            .as_array_mut()
            .unwrap()
            .push(json!("SellerSKU"));
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1, "{changes:?}");
        let c = &changes[0];
        assert!(c.stricter);
        assert_eq!(c.keyword, "required");
        assert_eq!(c.pointer, "/OrderItems/*/SellerSKU");
        assert_eq!(c.schema_pointer, "/properties/OrderItems/items/required");
        assert_eq!(c.new, Some(json!("SellerSKU")));
        // and the other way round it is looser
        assert_eq!(
            brief(&new, &old),
            vec![(false, "required", "/OrderItems/*/SellerSKU".to_owned())]
        );
    }

    #[test]
    fn a_change_inside_defs_is_reported_at_every_place_that_refers_to_it() {
        let old = shipped("amazon/order.schema.json");
        let mut new = old.clone();
        new["$defs"]["Money"]["properties"]["CurrencyCode"]["maxLength"] = json!(3);
        let changes = diff(&old, &new);
        let pointers: Vec<&str> = changes.iter().map(|c| c.pointer.as_str()).collect();
        assert!(
            pointers.contains(&"/OrderTotal/CurrencyCode"),
            "{pointers:?}"
        );
        assert!(
            pointers.contains(&"/OrderItems/*/ItemPrice/CurrencyCode"),
            "{pointers:?}"
        );
        // OrderTotal and the item amounts: one change per place that refers to Money
        let uses = old.to_string().matches("\"#/$defs/Money\"").count();
        assert!(uses >= 2, "{uses}");
        assert_eq!(changes.len(), uses, "{pointers:?}");
        for c in &changes {
            assert!(c.stricter && c.keyword == "maxLength", "{c:?}");
            assert_eq!(
                c.schema_pointer,
                "/$defs/Money/properties/CurrencyCode/maxLength"
            );
        }
    }

    #[test]
    fn defs_nobody_refers_to_do_not_count() {
        let old = shipped("amazon/order.schema.json");
        let mut new = old.clone();
        new["$defs"]["Unused"] = json!({"type": "object", "required": ["x"]});
        assert_eq!(diff(&old, &new), vec![]);
    }

    #[test]
    fn a_ref_replaced_by_the_same_schema_inline_changes_nothing() {
        let old = shipped("amazon/order.schema.json");
        let mut new = old.clone();
        new["properties"]["OrderTotal"] = old["$defs"]["Money"].clone();
        assert_eq!(diff(&old, &new), vec![]);
    }

    #[test]
    fn if_then_else_branches_are_compared_through_their_refs() {
        let old = shipped("shopify/shipment.schema.json");
        let mut new = old.clone();
        new["$defs"]["Fulfillment"]["properties"]["status"]["enum"] =
            json!(["pending", "open", "success"]);
        let got = brief(&old, &new);
        // the bare document (else) and the wrapped one (then: /fulfillment)
        assert!(
            got.contains(&(true, "enum", "/status".to_owned())),
            "{got:?}"
        );
        assert!(
            got.contains(&(true, "enum", "/fulfillment/status".to_owned())),
            "{got:?}"
        );
        let c = diff(&old, &new).into_iter().next().unwrap();
        assert!(
            c.message.contains("[\"cancelled\",\"error\",\"failure\"]"),
            "{}",
            c.message
        );
    }

    #[test]
    fn properties_and_additional_properties() {
        let old = json!({
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
            "additionalProperties": false
        });
        // b removed while extra properties are refused: documents with b now fail
        let new = json!({
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "additionalProperties": false
        });
        assert_eq!(
            brief(&old, &new),
            vec![(true, "properties", "/b".to_owned())]
        );
        // a new property under additionalProperties: false is only more accepted
        assert_eq!(
            brief(&new, &old),
            vec![(false, "properties", "/b".to_owned())]
        );
        // removed from a tolerant schema: anything goes there now
        let tolerant = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}});
        let without_b = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        assert_eq!(
            brief(&tolerant, &without_b),
            vec![(false, "properties", "/b".to_owned())]
        );
        // closing an open object
        let mut closed = tolerant.clone();
        closed["additionalProperties"] = json!(false);
        assert_eq!(
            brief(&tolerant, &closed),
            vec![(true, "additionalProperties", String::new())]
        );
        assert_eq!(
            brief(&closed, &tolerant),
            vec![(false, "additionalProperties", String::new())]
        );
        // an additionalProperties schema is compared like a property
        let typed =
            json!({"type": "object", "additionalProperties": {"type": "string", "maxLength": 10}});
        let tighter =
            json!({"type": "object", "additionalProperties": {"type": "string", "maxLength": 5}});
        assert_eq!(
            brief(&typed, &tighter),
            vec![(true, "maxLength", "/*".to_owned())]
        );
    }

    #[test]
    fn types_narrow_and_widen() {
        let s = |t: Value| json!({"properties": {"x": {"type": t}}});
        assert_eq!(
            brief(&s(json!(["string", "null"])), &s(json!("string"))),
            vec![(true, "type", "/x".to_owned())]
        );
        assert_eq!(
            brief(&s(json!("string")), &s(json!(["string", "null"]))),
            vec![(false, "type", "/x".to_owned())]
        );
        // every integer is a number: number -> integer narrows, integer -> number widens
        assert_eq!(
            brief(&s(json!("number")), &s(json!("integer"))),
            vec![(true, "type", "/x".to_owned())]
        );
        assert_eq!(
            brief(&s(json!("integer")), &s(json!("number"))),
            vec![(false, "type", "/x".to_owned())]
        );
        let c = &diff(&s(json!("number")), &s(json!("integer")))[0];
        assert!(
            c.message.contains("non-integer numbers refused"),
            "{}",
            c.message
        );
        // a type added to an enum of strings refuses nothing the enum accepted
        let e = json!({"enum": ["A", "B"]});
        let typed = json!({"type": "string", "enum": ["A", "B"]});
        assert_eq!(brief(&e, &typed), vec![]);
    }

    #[test]
    fn enums_and_consts() {
        let old = json!({"enum": ["MFN", "AFN"]});
        assert_eq!(
            brief(&old, &json!({"enum": ["MFN"]})),
            vec![(true, "enum", String::new())]
        );
        assert_eq!(
            brief(&old, &json!({"enum": ["MFN", "AFN", "SFN"]})),
            vec![(false, "enum", String::new())]
        );
        // both at once: one stricter, one looser finding
        assert_eq!(
            brief(&old, &json!({"enum": ["MFN", "SFN"]})),
            vec![
                (true, "enum", String::new()),
                (false, "enum", String::new())
            ]
        );
        assert_eq!(
            brief(
                &json!({"type": "string"}),
                &json!({"type": "string", "enum": ["x"]})
            ),
            vec![(true, "enum", String::new())]
        );
        assert_eq!(
            brief(
                &json!({"type": "string"}),
                &json!({"type": "string", "const": "x"})
            ),
            vec![(true, "const", String::new())]
        );
    }

    #[test]
    fn bounds() {
        let s = |k: &str, v: Value| json!({"properties": {"x": {k: v}}});
        for k in [
            "maxLength",
            "maximum",
            "maxItems",
            "exclusiveMaximum",
            "maxProperties",
        ] {
            assert_eq!(
                brief(&s(k, json!(10)), &s(k, json!(5))),
                vec![(true, k, "/x".into())],
                "{k}"
            );
            assert_eq!(
                brief(&s(k, json!(5)), &s(k, json!(10))),
                vec![(false, k, "/x".into())],
                "{k}"
            );
            assert_eq!(
                brief(&json!({"properties": {"x": {}}}), &s(k, json!(5))),
                vec![(true, k, "/x".into())],
                "{k}"
            );
            assert_eq!(
                brief(&s(k, json!(5)), &json!({"properties": {"x": {}}})),
                vec![(false, k, "/x".into())],
                "{k}"
            );
        }
        for k in [
            "minLength",
            "minimum",
            "minItems",
            "exclusiveMinimum",
            "minProperties",
        ] {
            assert_eq!(
                brief(&s(k, json!(0)), &s(k, json!(1))),
                vec![(true, k, "/x".into())],
                "{k}"
            );
            assert_eq!(
                brief(&s(k, json!(1)), &s(k, json!(0))),
                vec![(false, k, "/x".into())],
                "{k}"
            );
            assert_eq!(
                brief(&json!({"properties": {"x": {}}}), &s(k, json!(1))),
                vec![(true, k, "/x".into())],
                "{k}"
            );
        }
        // 1 and 1.0 are the same bound
        assert_eq!(
            brief(&s("minimum", json!(1)), &s("minimum", json!(1.0))),
            vec![]
        );
        let c = &diff(&s("maxLength", json!(40)), &s("maxLength", json!(20)))[0];
        assert_eq!(c.message, "/x: maxLength lowered from 40 to 20");
        assert_eq!(
            (c.old.clone(), c.new.clone()),
            (Some(json!(40)), Some(json!(20)))
        );
    }

    #[test]
    fn patterns_and_formats() {
        let s = |p: &str| json!({"properties": {"d": {"type": "string", "pattern": p}}});
        assert_eq!(
            brief(&s("^[A-Z]{2}$"), &s("^[A-Z]{3}$")),
            vec![(true, "pattern", "/d".to_owned())]
        );
        // the old pattern as one alternative of the new: provably wider
        assert_eq!(
            brief(&s("^[0-9]{4}$"), &s("^$|^[0-9]{4}$")),
            vec![(false, "pattern", "/d".to_owned())]
        );
        // an alternative inside a group is not a top-level one
        assert_eq!(alternatives("^(a|b)$"), vec!["^(a|b)$"]);
        assert_eq!(alternatives("a|[|]|\\|"), vec!["a", "[|]", "\\|"]);
        let f = |v: Option<&str>| match v {
            Some(v) => json!({"properties": {"u": {"type": "string", "format": v}}}),
            None => json!({"properties": {"u": {"type": "string"}}}),
        };
        assert_eq!(
            brief(&f(None), &f(Some("uri"))),
            vec![(true, "format", "/u".to_owned())]
        );
        assert_eq!(
            brief(&f(Some("uri")), &f(Some("email"))),
            vec![(true, "format", "/u".to_owned())]
        );
        assert_eq!(
            brief(&f(Some("uri")), &f(None)),
            vec![(false, "format", "/u".to_owned())]
        );
    }

    #[test]
    fn dependent_required_and_compositions() {
        let dep = |d: Value| json!({"type": "object", "dependentRequired": d});
        assert_eq!(
            brief(&dep(json!({})), &dep(json!({"a": ["b"]}))),
            vec![(true, "dependentRequired", "/b".to_owned())]
        );
        assert_eq!(
            brief(&dep(json!({"a": ["b"]})), &dep(json!({}))),
            vec![(false, "dependentRequired", "/b".to_owned())]
        );
        let any = |v: Value| json!({"anyOf": v});
        let a = json!({"type": "integer"});
        let b = json!({"type": "string"});
        assert_eq!(
            brief(&any(json!([a, b])), &any(json!([a]))),
            vec![(true, "anyOf", String::new())]
        );
        assert_eq!(
            brief(&any(json!([a])), &any(json!([a, b]))),
            vec![(false, "anyOf", String::new())]
        );
        // same number of branches: compared branch by branch
        let tighter = json!({"type": "integer", "minimum": 1});
        assert_eq!(
            brief(&any(json!([a, b])), &any(json!([tighter, b]))),
            vec![(true, "minimum", String::new())]
        );
    }

    #[test]
    fn a_recursive_schema_ends() {
        let old = json!({
            "$defs": {"Node": {"type": "object", "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}
            }}},
            "$ref": "#/$defs/Node"
        });
        let mut new = old.clone();
        new["$defs"]["Node"]["required"] = json!(["name"]);
        assert_eq!(
            brief(&old, &new),
            vec![(true, "required", "/name".to_owned())]
        );
    }

    #[test]
    fn a_keyword_it_does_not_analyse_is_treated_as_breaking_when_it_changes() {
        let old = json!({"type": "object", "propertyNames": {"maxLength": 10}});
        let new = json!({"type": "object", "propertyNames": {"maxLength": 5}});
        assert_eq!(brief(&old, &new), vec![(true, "other", String::new())]);
        // an unresolvable (remote) $ref is compared as written
        let r = |u: &str| json!({"properties": {"a": {"$ref": u}}});
        assert_eq!(
            brief(
                &r("https://x.invalid/a.json"),
                &r("https://x.invalid/b.json")
            ),
            vec![(true, "$ref", "/a".to_owned())]
        );
        assert_eq!(
            brief(
                &r("https://x.invalid/a.json"),
                &r("https://x.invalid/a.json")
            ),
            vec![]
        );
    }

    #[test]
    fn false_and_true_schemas() {
        let old = json!({"properties": {"a": true}});
        let new = json!({"properties": {"a": false}});
        assert_eq!(brief(&old, &new), vec![(true, "other", "/a".to_owned())]);
        assert_eq!(brief(&new, &old), vec![(false, "other", "/a".to_owned())]);
    }
}
