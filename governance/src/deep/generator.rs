//! A seeded generator of JSON documents valid against a JSON Schema (draft 2020-12), over the
//! keywords the channel schemas use. Any other keyword is an error naming the schema and the
//! pointer where it sits: a keyword the generator would skip could make it claim coverage it
//! does not have. Every document it returns has passed the schema itself (a document the
//! schema refuses is a generator bug, reported as an error).
//!
//! Two kinds of document: the minimal one (only required properties, the fewest items, the
//! shortest strings, the lowest numbers, the first alternative) and random ones (optional
//! properties present or absent, every type a property allows, enum values, boundary lengths
//! and numbers, array sizes, formats, unknown extra properties where the schema allows them).
//! Strings with a `pattern` or `format` often take a value from the example documents given
//! (the mapping's golden inputs) that meets every constraint, reusing it within a document
//! (one currency, one date), so documents get past the mapping's first semantic check and
//! exercise the rest; the others are generated from the regex.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Number, Value};
use transforms::SchemaValidator;

use super::pattern::Pattern;

/// Keywords that only annotate: nothing to generate.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Formats the generator produces values of (the validator does not assert formats, but a
/// value of the format is what a caller sends).
const FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "email",
    "uri",
    "uri-reference",
    "uuid",
    "hostname",
    "ipv4",
    "ipv6",
];

/// JSON Schema type names.
const TYPES: &[&str] = &[
    "null", "boolean", "integer", "number", "string", "array", "object",
];

/// How deep documents nest before only required properties and the fewest items are made.
const MAX_DEPTH: usize = 24;
/// Attempts at a random document before the generator gives up on a schema.
const ATTEMPTS: usize = 24;
/// Attempts at a string meeting every string constraint at once.
const STRING_ATTEMPTS: usize = 16;

/// Why documents could not be generated from a schema.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenError {
    /// A keyword the generator does not know.
    #[error("{schema}: unknown keyword {keyword:?} at {pointer:?}: the generator cannot honour it")]
    UnknownKeyword {
        /// The schema, as the policy file names it.
        schema: String,
        /// JSON pointer of the schema object holding it.
        pointer: String,
        /// The keyword.
        keyword: String,
    },
    /// A known keyword with a value the generator cannot use (a bad `$ref`, an unknown format,
    /// a pattern that does not parse, ...).
    #[error("{schema}: at {pointer:?}: {message}")]
    Unsupported {
        /// The schema.
        schema: String,
        /// JSON pointer of the offending value.
        pointer: String,
        /// What is wrong.
        message: String,
    },
    /// The generated document fails the schema: a generator bug, or a schema no document
    /// meets.
    #[error("{schema}: generated a document the schema refuses ({violations}): {document}")]
    Invalid {
        /// The schema.
        schema: String,
        /// The schema's violations of the document.
        violations: String,
        /// The document.
        document: Value,
    },
}

/// A generator for one schema.
pub struct Generator {
    name: String,
    root: Value,
    validator: SchemaValidator,
    /// Each pattern parsed (to generate) and compiled alone (to match as the validator does).
    patterns: BTreeMap<String, (Pattern, SchemaValidator)>,
    /// Strings of the example documents by the member name they stood under, offered for
    /// constrained strings of a member of that name.
    examples: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Generator {
    /// Checks every keyword of the schema (`name` is how errors name it) and compiles it.
    pub fn new(name: &str, schema: &Value) -> Result<Generator, GenError> {
        let mut patterns = BTreeMap::new();
        check_keywords(name, schema, schema, "", &mut patterns)?;
        let validator = SchemaValidator::compile(schema).map_err(|e| GenError::Unsupported {
            schema: name.to_owned(),
            pointer: String::new(),
            message: format!("the schema does not compile: {e}"),
        })?;
        let mut compiled = BTreeMap::new();
        for (text, parsed) in patterns {
            let alone =
                SchemaValidator::compile(&serde_json::json!({ "pattern": text })).map_err(|e| {
                    GenError::Unsupported {
                        schema: name.to_owned(),
                        pointer: String::new(),
                        message: format!("pattern {text:?} does not compile: {e}"),
                    }
                })?;
            compiled.insert(text, (parsed, alone));
        }
        Ok(Generator {
            name: name.to_owned(),
            root: schema.clone(),
            validator,
            patterns: compiled,
            examples: BTreeMap::new(),
        })
    }

    /// Offers the strings of these documents (e.g. a mapping's golden inputs) as values of
    /// constrained strings.
    pub fn with_examples<'v>(mut self, documents: impl IntoIterator<Item = &'v Value>) -> Self {
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for doc in documents {
            collect_strings(doc, None, &mut seen);
        }
        self.examples = seen
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect();
        self
    }

    /// The minimal document: required properties only, smallest values, first alternatives
    /// (the next alternatives when the first ones fail the schema).
    pub fn minimal(&self) -> Result<Value, GenError> {
        let mut last = None;
        for attempt in 0..4 {
            let mut run = Run::new(self, Mode::Minimal(attempt));
            let doc = run.any(&[(&self.root, String::new())], 0)?;
            match self.validator.validate(&doc, 5) {
                Ok(()) => return Ok(doc),
                Err(v) => last = Some((v.to_string(), doc)),
            }
        }
        Err(self.invalid(last))
    }

    /// A random document drawn with `rng`.
    pub fn random(&self, rng: &mut ChaCha8Rng) -> Result<Value, GenError> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let realistic = rng.random_bool(0.5);
            let mut run = Run::new(self, Mode::Random(rng));
            run.realistic = realistic;
            let doc = run.any(&[(&self.root, String::new())], 0)?;
            match self.validator.validate(&doc, 5) {
                Ok(()) => return Ok(doc),
                Err(v) => last = Some((v.to_string(), doc)),
            }
        }
        Err(self.invalid(last))
    }

    /// The minimal document, then `samples` random ones from `seed`: the same seed, the same
    /// documents.
    pub fn documents(&self, seed: u64, samples: u32) -> Result<Vec<Value>, GenError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut docs = Vec::with_capacity(samples as usize + 1);
        docs.push(self.minimal()?);
        for _ in 0..samples {
            docs.push(self.random(&mut rng)?);
        }
        Ok(docs)
    }

    /// Whether a document is valid against the schema.
    pub fn is_valid(&self, document: &Value) -> bool {
        self.validator.is_valid(document)
    }

    fn invalid(&self, last: Option<(String, Value)>) -> GenError {
        let (violations, document) = last.unwrap_or_default();
        GenError::Invalid {
            schema: self.name.clone(),
            violations,
            document,
        }
    }

    fn unsupported(&self, pointer: &str, message: String) -> GenError {
        GenError::Unsupported {
            schema: self.name.clone(),
            pointer: pointer.to_owned(),
            message,
        }
    }
}

/// The strings in a document by the member name they stand under (array items under the
/// array's name).
fn collect_strings(value: &Value, key: Option<&str>, out: &mut BTreeMap<String, BTreeSet<String>>) {
    match value {
        Value::String(s) => {
            if let Some(k) = key {
                out.entry(k.to_owned()).or_default().insert(s.clone());
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, key, out)),
        Value::Object(members) => members
            .iter()
            .for_each(|(k, v)| collect_strings(v, Some(k), out)),
        _ => {}
    }
}

/// A JSON pointer token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The schema a local `$ref` (`#`, `#/$defs/Money`) points at, and its pointer.
fn resolve<'s>(root: &'s Value, reference: &str) -> Option<(&'s Value, String)> {
    let pointer = reference.strip_prefix('#')?;
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return None; // an anchor; none of the shipped schemas uses one
    }
    root.pointer(pointer).map(|v| (v, pointer.to_owned()))
}

/// Walks every subschema, refusing keywords the generator does not know and values it cannot
/// use, and parsing the patterns.
fn check_keywords(
    name: &str,
    root: &Value,
    schema: &Value,
    pointer: &str,
    patterns: &mut BTreeMap<String, Pattern>,
) -> Result<(), GenError> {
    let bad = |at: String, message: String| GenError::Unsupported {
        schema: name.to_owned(),
        pointer: at,
        message,
    };
    let members = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(m) => m,
        _ => {
            return Err(bad(
                pointer.to_owned(),
                "a schema must be an object or a boolean".to_owned(),
            ));
        }
    };
    for (keyword, value) in members {
        let at = format!("{pointer}/{}", escape(keyword));
        let sub = |value: &Value, at: &str, patterns: &mut BTreeMap<String, Pattern>| {
            check_keywords(name, root, value, at, patterns)
        };
        match keyword.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "type" => {
                let names: Vec<&Value> = match value {
                    Value::Array(list) => list.iter().collect(),
                    one => vec![one],
                };
                for n in names {
                    if !n.as_str().is_some_and(|n| TYPES.contains(&n)) {
                        return Err(bad(at, format!("{n} is not a JSON Schema type")));
                    }
                }
            }
            "properties" | "$defs" | "dependentRequired" => {
                let Some(map) = value.as_object() else {
                    return Err(bad(at, format!("{keyword} must be an object")));
                };
                for (key, v) in map {
                    let at = format!("{at}/{}", escape(key));
                    if keyword == "dependentRequired" {
                        if !v.as_array().is_some_and(|l| l.iter().all(Value::is_string)) {
                            return Err(bad(at, "must be an array of names".to_owned()));
                        }
                    } else {
                        sub(v, &at, patterns)?;
                    }
                }
            }
            "items" | "additionalProperties" | "if" | "then" | "else" => sub(value, &at, patterns)?,
            "allOf" | "anyOf" | "oneOf" => {
                let Some(list) = value.as_array().filter(|l| !l.is_empty()) else {
                    return Err(bad(at, format!("{keyword} must be a non-empty array")));
                };
                for (i, v) in list.iter().enumerate() {
                    sub(v, &format!("{at}/{i}"), patterns)?;
                }
            }
            "required" => {
                if !value
                    .as_array()
                    .is_some_and(|l| l.iter().all(Value::is_string))
                {
                    return Err(bad(at, "required must be an array of names".to_owned()));
                }
            }
            "enum" => {
                if value.as_array().is_none_or(Vec::is_empty) {
                    return Err(bad(at, "enum must be a non-empty array".to_owned()));
                }
            }
            "const" => {}
            "pattern" => {
                let Some(p) = value.as_str() else {
                    return Err(bad(at, "pattern must be a string".to_owned()));
                };
                let parsed = Pattern::parse(p).map_err(|e| bad(at, format!("pattern: {e}")))?;
                patterns.insert(p.to_owned(), parsed);
            }
            "format" => {
                if !value.as_str().is_some_and(|f| FORMATS.contains(&f)) {
                    return Err(bad(
                        at,
                        format!("format {value} is not one the generator knows ({FORMATS:?})"),
                    ));
                }
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" => {
                if value.as_u64().is_none() {
                    return Err(bad(at, format!("{keyword} must be a non-negative integer")));
                }
            }
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                if !value.as_f64().is_some_and(f64::is_finite) {
                    return Err(bad(at, format!("{keyword} must be a number")));
                }
            }
            "$ref" => {
                let target = value.as_str().and_then(|r| resolve(root, r));
                if target.is_none() {
                    return Err(bad(
                        at,
                        format!("$ref {value} does not point into this schema"),
                    ));
                }
            }
            _ => {
                return Err(GenError::UnknownKeyword {
                    schema: name.to_owned(),
                    pointer: pointer.to_owned(),
                    keyword: keyword.clone(),
                });
            }
        }
    }
    Ok(())
}

/// How a run decides.
enum Mode<'r> {
    /// The minimal document; the attempt number picks later alternatives on later attempts.
    Minimal(usize),
    /// At random.
    Random(&'r mut ChaCha8Rng),
}

/// Subschemas that all apply to one value, each with its pointer.
type Conjunction<'g> = [(&'g Value, String)];

/// One document being generated.
struct Run<'g, 'r> {
    owner: &'g Generator,
    mode: Mode<'r>,
    /// The example string chosen per pattern/format within this document.
    chosen: BTreeMap<String, String>,
    extra: usize,
    /// The member name the value being generated stands under.
    key: Option<String>,
    /// Whether strings take the examples' values wherever there are some (half the random
    /// documents: they get past the mapping's semantic checks; the other half explore).
    realistic: bool,
}

/// Every constraint of a conjunction, merged.
#[derive(Default)]
struct Merged<'g> {
    types: Option<BTreeSet<&'static str>>,
    enumerated: Option<Vec<Value>>,
    properties: BTreeMap<String, Vec<(&'g Value, String)>>,
    required: BTreeSet<String>,
    closed: bool,
    additional: Vec<(&'g Value, String)>,
    dependent: Vec<(String, Vec<String>)>,
    items: Vec<(&'g Value, String)>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    patterns: Vec<String>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    format: Option<String>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    /// Types the keywords hint at, when no `type` is given.
    hinted: BTreeSet<&'static str>,
}

impl<'g, 'r> Run<'g, 'r> {
    fn new(owner: &'g Generator, mode: Mode<'r>) -> Self {
        Run {
            owner,
            mode,
            chosen: BTreeMap::new(),
            extra: 0,
            key: None,
            realistic: false,
        }
    }

    fn minimal(&self) -> bool {
        matches!(self.mode, Mode::Minimal(_))
    }

    /// An index below `n`: the attempt's alternative when minimal, else random.
    fn pick(&mut self, n: usize) -> usize {
        match &mut self.mode {
            Mode::Minimal(attempt) => *attempt % n,
            Mode::Random(rng) => rng.random_range(0..n),
        }
    }

    /// True with probability `p` (never when minimal).
    fn chance(&mut self, p: f64) -> bool {
        match &mut self.mode {
            Mode::Minimal(_) => false,
            Mode::Random(rng) => rng.random_bool(p),
        }
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        match &mut self.mode {
            Mode::Minimal(_) => lo,
            Mode::Random(rng) => rng.random_range(lo..=hi.max(lo)),
        }
    }

    /// Adds a subschema and everything that applies with it ($ref, allOf, one chosen anyOf /
    /// oneOf alternative, if+then or else) to the conjunction.
    fn collect(
        &mut self,
        schema: &'g Value,
        pointer: String,
        out: &mut Vec<(&'g Value, String)>,
        depth: usize,
    ) -> Result<(), GenError> {
        if depth > 64 {
            return Err(self
                .owner
                .unsupported(&pointer, "$ref chain too deep (a cycle?)".to_owned()));
        }
        let Some(members) = schema.as_object() else {
            if schema == &Value::Bool(false) {
                return Err(self
                    .owner
                    .unsupported(&pointer, "false: no document is valid".to_owned()));
            }
            return Ok(());
        };
        out.push((schema, pointer.clone()));
        if let Some(reference) = members.get("$ref").and_then(Value::as_str) {
            let (target, at) = resolve(&self.owner.root, reference).ok_or_else(|| {
                self.owner
                    .unsupported(&pointer, format!("$ref {reference} does not resolve"))
            })?;
            self.collect(target, at, out, depth + 1)?;
        }
        if let Some(all) = members.get("allOf").and_then(Value::as_array) {
            for (i, sub) in all.iter().enumerate() {
                self.collect(sub, format!("{pointer}/allOf/{i}"), out, depth + 1)?;
            }
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(list) = members.get(keyword).and_then(Value::as_array) {
                let i = self.pick(list.len());
                self.collect(&list[i], format!("{pointer}/{keyword}/{i}"), out, depth + 1)?;
            }
        }
        if let Some(condition) = members.get("if") {
            // The minimal document tries the else branch first (the bare document).
            let then_branch = match self.mode {
                Mode::Minimal(attempt) => attempt % 2 == 1,
                Mode::Random(_) => self.chance(0.5),
            };
            if then_branch {
                self.collect(condition, format!("{pointer}/if"), out, depth + 1)?;
                if let Some(t) = members.get("then") {
                    self.collect(t, format!("{pointer}/then"), out, depth + 1)?;
                }
            } else if let Some(e) = members.get("else") {
                self.collect(e, format!("{pointer}/else"), out, depth + 1)?;
            }
        }
        Ok(())
    }

    fn merge(&self, conjunction: &Conjunction<'g>) -> Merged<'g> {
        let mut m = Merged::default();
        for (schema, pointer) in conjunction {
            let Some(o) = schema.as_object() else {
                continue;
            };
            if let Some(t) = o.get("type") {
                let set: BTreeSet<&'static str> = match t {
                    Value::Array(list) => list.iter().filter_map(type_name).collect(),
                    one => type_name(one).into_iter().collect(),
                };
                m.types = Some(match m.types.take() {
                    Some(prev) => prev.intersection(&set).copied().collect(),
                    None => set,
                });
            }
            let listed = o
                .get("enum")
                .and_then(Value::as_array)
                .cloned()
                .or_else(|| o.get("const").map(|c| vec![c.clone()]));
            if let Some(list) = listed {
                m.enumerated = Some(match m.enumerated.take() {
                    Some(prev) => prev.into_iter().filter(|v| list.contains(v)).collect(),
                    None => list,
                });
            }
            if let Some(props) = o.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    m.properties
                        .entry(name.clone())
                        .or_default()
                        .push((sub, format!("{pointer}/properties/{}", escape(name))));
                }
                m.hinted.insert("object");
            }
            if let Some(req) = o.get("required").and_then(Value::as_array) {
                m.required
                    .extend(req.iter().filter_map(Value::as_str).map(str::to_owned));
                m.hinted.insert("object");
            }
            match o.get("additionalProperties") {
                Some(Value::Bool(false)) => m.closed = true,
                Some(sub @ Value::Object(_)) => m
                    .additional
                    .push((sub, format!("{pointer}/additionalProperties"))),
                _ => {}
            }
            if let Some(dep) = o.get("dependentRequired").and_then(Value::as_object) {
                for (name, list) in dep {
                    let names = list
                        .as_array()
                        .map(|l| {
                            l.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    m.dependent.push((name.clone(), names));
                }
            }
            if let Some(items) = o.get("items") {
                m.items.push((items, format!("{pointer}/items")));
                m.hinted.insert("array");
            }
            let num = |k: &str| o.get(k).and_then(Value::as_f64);
            let count = |k: &str| o.get(k).and_then(Value::as_u64);
            if let Some(v) = count("minItems") {
                m.min_items = Some(m.min_items.map_or(v, |p| p.max(v)));
                m.hinted.insert("array");
            }
            if let Some(v) = count("maxItems") {
                m.max_items = Some(m.max_items.map_or(v, |p| p.min(v)));
                m.hinted.insert("array");
            }
            if let Some(v) = count("minLength") {
                m.min_length = Some(m.min_length.map_or(v, |p| p.max(v)));
                m.hinted.insert("string");
            }
            if let Some(v) = count("maxLength") {
                m.max_length = Some(m.max_length.map_or(v, |p| p.min(v)));
                m.hinted.insert("string");
            }
            if let Some(p) = o.get("pattern").and_then(Value::as_str) {
                m.patterns.push(p.to_owned());
                m.hinted.insert("string");
            }
            if let Some(f) = o.get("format").and_then(Value::as_str) {
                m.format.get_or_insert_with(|| f.to_owned());
                m.hinted.insert("string");
            }
            for (k, slot, max) in [
                ("minimum", &mut m.minimum, false),
                ("maximum", &mut m.maximum, true),
                ("exclusiveMinimum", &mut m.exclusive_minimum, false),
                ("exclusiveMaximum", &mut m.exclusive_maximum, true),
            ] {
                if let Some(v) = num(k) {
                    *slot = Some(match *slot {
                        Some(p) if max => p.min(v),
                        Some(p) => p.max(v),
                        None => v,
                    });
                }
            }
            if ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]
                .iter()
                .any(|k| o.contains_key(*k))
            {
                m.hinted.insert("number");
            }
        }
        m
    }

    /// A value meeting every subschema of the conjunction.
    fn any(&mut self, conjunction: &Conjunction<'g>, depth: usize) -> Result<Value, GenError> {
        let mut all = Vec::new();
        for (schema, pointer) in conjunction {
            self.collect(schema, pointer.clone(), &mut all, 0)?;
        }
        let pointer = conjunction
            .first()
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        let m = self.merge(&all);
        if let Some(values) = &m.enumerated {
            let allowed: Vec<&Value> = values
                .iter()
                .filter(|v| m.types.as_ref().is_none_or(|t| value_has_type(v, t)))
                .collect();
            if allowed.is_empty() {
                return Err(self
                    .owner
                    .unsupported(&pointer, "no enum value has an allowed type".to_owned()));
            }
            let i = self.pick(allowed.len());
            return Ok(allowed[i].clone());
        }
        let ty = self.choose_type(&m, &pointer)?;
        match ty {
            "null" => Ok(Value::Null),
            "boolean" => Ok(Value::Bool(self.chance(0.5))),
            "integer" => Ok(self.integer(&m)),
            "number" => Ok(self.number(&m)),
            "string" => self.string(&m, &pointer),
            "array" => self.array(&m, depth),
            _ => self.object(&m, depth),
        }
    }

    fn choose_type(&mut self, m: &Merged<'g>, pointer: &str) -> Result<&'static str, GenError> {
        // Without `type`, a schema allows every type: random documents use that (mostly the
        // type its keywords describe); the minimal one takes the described type.
        let allowed: Vec<&'static str> = match &m.types {
            Some(t) => TYPES.iter().copied().filter(|n| t.contains(n)).collect(),
            None => {
                let hinted: Vec<&'static str> = TYPES
                    .iter()
                    .copied()
                    .filter(|n| m.hinted.contains(n))
                    .collect();
                if hinted.is_empty() || self.chance(0.2) {
                    TYPES.to_vec()
                } else {
                    hinted
                }
            }
        };
        if allowed.is_empty() {
            return Err(self.owner.unsupported(
                pointer,
                "the types of the subschemas do not meet".to_owned(),
            ));
        }
        // Minimal: the simplest allowed type (TYPES is ordered simplest first).
        let i = if self.minimal() {
            0
        } else {
            self.pick(allowed.len())
        };
        Ok(allowed[i])
    }

    fn integer(&mut self, m: &Merged<'g>) -> Value {
        let lo = m
            .minimum
            .map(|v| v.ceil())
            .into_iter()
            .chain(m.exclusive_minimum.map(|v| v.floor() + 1.0))
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
        let hi = m
            .maximum
            .map(|v| v.floor())
            .into_iter()
            .chain(m.exclusive_maximum.map(|v| v.ceil() - 1.0))
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.min(b))));
        let lo_i = lo.map(|v| v as i64);
        let hi_i = hi.map(|v| v as i64);
        if self.minimal() {
            let v = lo_i.unwrap_or(0.clamp(i64::MIN, hi_i.unwrap_or(i64::MAX)));
            return Value::from(v);
        }
        let base = lo_i.unwrap_or(-1000);
        let top = hi_i.unwrap_or(base.saturating_add(100_000));
        let candidates: Vec<Value> = match self.pick(6) {
            0 => vec![Value::from(base)],
            1 => vec![Value::from(base.saturating_add(1).min(top))],
            2 => vec![Value::from(top)],
            3 if hi_i.is_none() => {
                // Past 2^53, where a double loses digits, and past 2^64.
                vec![
                    big("9007199254740993"),
                    big("18446744073709551617"),
                    Value::from(i64::MAX),
                ]
            }
            4 if lo_i.is_none_or(|l| l <= 0) && hi_i.is_none_or(|h| h >= 0) => {
                vec![Value::from(0)]
            }
            _ => vec![Value::from(self.range_i(base, top))],
        };
        let i = self.pick(candidates.len());
        candidates[i].clone()
    }

    fn range_i(&mut self, lo: i64, hi: i64) -> i64 {
        match &mut self.mode {
            Mode::Minimal(_) => lo,
            Mode::Random(rng) => rng.random_range(lo..=hi.max(lo)),
        }
    }

    fn number(&mut self, m: &Merged<'g>) -> Value {
        // Integral values are numbers too; fractions and exponents are what differ.
        let lo = m.minimum.or(m.exclusive_minimum);
        let hi = m.maximum.or(m.exclusive_maximum);
        if self.minimal() {
            let v = match (m.minimum, m.exclusive_minimum) {
                (Some(v), _) => v,
                (None, Some(v)) => v + 0.5,
                (None, None) => 0.0_f64.min(hi.unwrap_or(0.0)),
            };
            return number_value(v);
        }
        let base = lo.unwrap_or(-1000.0);
        let top = hi.unwrap_or(base + 100_000.0);
        let v = match self.pick(5) {
            0 if m.exclusive_minimum.is_none() => base,
            1 if m.exclusive_maximum.is_none() => top,
            2 => {
                let cents = self.range_i(0, 99) as f64 / 100.0;
                (base + 1.0 + cents).min(top)
            }
            _ => {
                let v = self.range_i(base.ceil() as i64, top.floor() as i64) as f64;
                let frac = self.range_i(0, 999) as f64 / 1000.0;
                (v + frac).min(top)
            }
        };
        // Write some as exponents and with trailing zeros: valid JSON numbers all.
        let text = match self.pick(8) {
            0 => format!("{v:e}"),
            1 => format!("{v:.2}"),
            _ => format!("{v}"),
        };
        let n = text.parse::<Number>().map(Value::Number);
        let value = n.unwrap_or_else(|_| number_value(v));
        // Never outside the bounds because of the formatting.
        let f = value.as_f64().unwrap_or(v);
        let inside = m.minimum.is_none_or(|b| f >= b)
            && m.maximum.is_none_or(|b| f <= b)
            && m.exclusive_minimum.is_none_or(|b| f > b)
            && m.exclusive_maximum.is_none_or(|b| f < b);
        if inside { value } else { number_value(v) }
    }

    fn string(&mut self, m: &Merged<'g>, pointer: &str) -> Result<Value, GenError> {
        let min = m.min_length.unwrap_or(0);
        let max = m.max_length.unwrap_or(u64::MAX);
        let fits = |s: &str, owner: &Generator| {
            let n = s.chars().count() as u64;
            n >= min
                && n <= max
                && m.patterns.iter().all(|p| {
                    owner
                        .patterns
                        .get(p)
                        .is_some_and(|(_, v)| v.is_valid(&Value::String(s.to_owned())))
                })
        };
        let constrained = !m.patterns.is_empty() || m.format.is_some();
        // A value of the examples meeting every constraint, reused within the document.
        let owner = self.owner;
        let examples = self.key.as_deref().and_then(|k| owner.examples.get(k));
        let (take, reuse) = if self.realistic {
            (1.0, 1.0)
        } else {
            (0.3, 0.85)
        };
        if (constrained || self.realistic) && examples.is_some() && self.chance(take) {
            // Constrained strings share a value across members (one currency, one date);
            // free text only within its member name.
            let key = if constrained {
                format!("{:?}{:?}{min}-{max}", m.patterns, m.format)
            } else {
                format!("member {:?}", self.key)
            };
            if let Some(s) = self.chosen.get(&key).cloned()
                && self.chance(reuse)
            {
                return Ok(Value::String(s));
            }
            let fitting: Vec<&String> = examples
                .into_iter()
                .flatten()
                .filter(|s| fits(s, self.owner) && format_fits(m.format.as_deref(), s))
                .collect();
            if let Mode::Random(rng) = &mut self.mode
                && let Some(s) = fitting.choose(rng)
            {
                let s = (*s).clone();
                self.chosen.insert(key, s.clone());
                return Ok(Value::String(s));
            }
        }
        for _ in 0..STRING_ATTEMPTS {
            let s = if let Some(first) = m.patterns.first() {
                let Some((p, _)) = self.owner.patterns.get(first) else {
                    return Err(self
                        .owner
                        .unsupported(pointer, format!("pattern {first:?} was not parsed")));
                };
                match &mut self.mode {
                    Mode::Minimal(_) => p.shortest(),
                    Mode::Random(rng) => p.random(*rng),
                }
            } else if let Some(f) = m.format.clone() {
                self.formatted(&f)
            } else {
                self.free_text(min, max)
            };
            if fits(&s, self.owner) {
                return Ok(Value::String(s));
            }
            if self.minimal() {
                break;
            }
        }
        // Pad or cut a pattern-free string; with a pattern give up (the schema check says why).
        if m.patterns.is_empty() {
            return Ok(Value::String(self.free_text(min, max)));
        }
        Err(self.owner.unsupported(
            pointer,
            format!(
                "no string meets {:?} with length {min}..{}",
                m.patterns,
                m.max_length.map_or("".to_owned(), |v| v.to_string())
            ),
        ))
    }

    fn free_text(&mut self, min: u64, max: u64) -> String {
        const ALPHABET: &[char] = &[
            'a',
            'b',
            'z',
            'A',
            'Q',
            '0',
            '7',
            ' ',
            '-',
            '_',
            '.',
            '/',
            '"',
            '\\',
            '\'',
            '\u{e9}',
            '\u{65e5}',
            '\u{1f600}',
            '\n',
            '%',
        ];
        let len = if self.minimal() {
            min
        } else {
            let cap = max.min(min.saturating_add(24));
            match self.pick(4) {
                0 => min,
                1 => cap,
                _ => self.range(min, cap),
            }
        };
        let mut s = String::new();
        for _ in 0..len {
            let c = match &mut self.mode {
                Mode::Minimal(_) => 'a',
                Mode::Random(rng) => *ALPHABET.choose(*rng).unwrap_or(&'a'),
            };
            s.push(c);
        }
        s
    }

    fn formatted(&mut self, format: &str) -> String {
        let n = self.range(0, 9999);
        let (y, mo, d) = (
            1970 + self.range(0, 129),
            1 + self.range(0, 11),
            1 + self.range(0, 27),
        );
        let (h, mi, s) = (self.range(0, 23), self.range(0, 59), self.range(0, 59));
        match format {
            "date-time" => {
                let offset = ["Z", "+00:00", "-05:00", "+09:30", ".123Z"];
                let i = self.pick(offset.len());
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{}", offset[i])
            }
            "date" => format!("{y:04}-{mo:02}-{d:02}"),
            "time" => format!("{h:02}:{mi:02}:{s:02}Z"),
            "email" => format!("buyer{n}@example.com"),
            "uri" => format!("https://example.com/items/{n}?q={n}"),
            "uri-reference" => format!("/items/{n}"),
            "uuid" => format!("00000000-0000-4000-8000-{n:012}"),
            "hostname" => format!("host{n}.example.com"),
            "ipv4" => format!("192.0.2.{}", n % 256),
            _ => format!("2001:db8::{:x}", n),
        }
    }

    fn array(&mut self, m: &Merged<'g>, depth: usize) -> Result<Value, GenError> {
        let min = m.min_items.unwrap_or(0);
        let max = m.max_items.unwrap_or(u64::MAX);
        let n = if self.minimal() || depth >= MAX_DEPTH {
            min
        } else {
            let cap = max.min(min + 3);
            match self.pick(3) {
                0 => min,
                _ => self.range(min, cap),
            }
        };
        let mut items = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let conj = m.items.clone();
            items.push(if conj.is_empty() {
                self.untyped(depth + 1)
            } else {
                self.any(&conj, depth + 1)?
            });
        }
        Ok(Value::Array(items))
    }

    fn object(&mut self, m: &Merged<'g>, depth: usize) -> Result<Value, GenError> {
        let mut present: BTreeSet<String> = m.required.clone();
        if !self.minimal() && depth < MAX_DEPTH {
            let optional: Vec<String> = m
                .properties
                .keys()
                .filter(|k| !m.required.contains(*k))
                .cloned()
                .collect();
            // Per document, some leave every optional property out, some put them all in.
            let p = match self.pick(4) {
                0 => 0.1,
                1 => 0.9,
                _ => 0.5,
            };
            for k in optional {
                if self.chance(p) {
                    present.insert(k);
                }
            }
        }
        // dependentRequired, to a fixpoint.
        loop {
            let before = present.len();
            for (name, deps) in &m.dependent {
                if present.contains(name) {
                    present.extend(deps.iter().cloned());
                }
            }
            if present.len() == before {
                break;
            }
        }
        let mut out = Map::new();
        for name in present {
            let conj: Vec<(&'g Value, String)> = match m.properties.get(&name) {
                Some(list) => list.clone(),
                None => m.additional.clone(),
            };
            let outer = self.key.replace(name.clone());
            let v = if conj.is_empty() {
                Ok(self.untyped(depth + 1))
            } else {
                self.any(&conj, depth + 1)
            };
            self.key = outer;
            out.insert(name, v?);
        }
        if !m.closed && depth < MAX_DEPTH && self.chance(0.15) {
            // Marketplaces add fields: an unknown one must not disturb the mapping.
            self.extra += 1;
            let name = format!("x_unknown_field_{}", self.extra);
            let v = if m.additional.is_empty() {
                self.untyped(depth + 1)
            } else {
                self.any(&m.additional.clone(), depth + 1)?
            };
            out.insert(name, v);
        }
        Ok(Value::Object(out))
    }

    /// A value of any type (a schema that says nothing about it).
    fn untyped(&mut self, depth: usize) -> Value {
        if self.minimal() {
            return Value::Null;
        }
        let limit = if depth >= MAX_DEPTH { 5 } else { 7 };
        match self.pick(limit) {
            0 => Value::Null,
            1 => Value::Bool(self.chance(0.5)),
            2 => Value::from(self.range_i(-5, 1000)),
            3 => big("12.50"),
            4 => Value::String(self.free_text(0, 12)),
            5 => Value::Array(vec![self.untyped(depth + 1)]),
            _ => {
                let mut m = Map::new();
                m.insert("k".to_owned(), self.untyped(depth + 1));
                Value::Object(m)
            }
        }
    }
}

fn type_name(v: &Value) -> Option<&'static str> {
    let s = v.as_str()?;
    TYPES.iter().copied().find(|t| *t == s)
}

fn value_has_type(v: &Value, types: &BTreeSet<&'static str>) -> bool {
    let t = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    types.contains(t) || (t == "integer" && types.contains("number"))
}

fn big(text: &str) -> Value {
    text.parse::<Number>()
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn number_value(v: f64) -> Value {
    Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Whether an example string plausibly is of the format (the validator does not assert
/// formats, so this only keeps an email from standing in for a date).
fn format_fits(format: Option<&str>, s: &str) -> bool {
    match format {
        None => true,
        Some("date-time") => s.len() >= 20 && s.as_bytes().get(10) == Some(&b'T'),
        Some("date") => s.len() == 10 && s.as_bytes().get(4) == Some(&b'-'),
        Some("email") => s.contains('@'),
        Some("uri") => s.contains("://"),
        Some(_) => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests panic on setup failures by design

    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    /// Every channel schema the example set ships, with its name.
    fn shipped() -> Vec<(String, Value)> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/files/schemas");
        let mut out = Vec::new();
        for channel in std::fs::read_dir(&root).unwrap() {
            let channel = channel.unwrap().path();
            if !channel.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&channel).unwrap() {
                let file = file.unwrap().path();
                if file.extension().is_some_and(|e| e == "json") {
                    let text = std::fs::read_to_string(&file).unwrap();
                    out.push((
                        file.display().to_string(),
                        serde_json::from_str(&text).unwrap(),
                    ));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(out.len() >= 10, "found only {} schemas", out.len());
        out
    }

    #[test]
    fn every_generated_document_of_every_shipped_schema_validates() {
        for (name, schema) in shipped() {
            let generator = Generator::new(&name, &schema).unwrap();
            let validator = SchemaValidator::compile(&schema).unwrap();
            let docs = generator.documents(17, 150).unwrap();
            assert_eq!(docs.len(), 151);
            for (i, doc) in docs.iter().enumerate() {
                assert!(
                    validator.validate(doc, 5).is_ok(),
                    "{name}: document {i} is invalid: {doc}"
                );
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_documents_and_another_seed_others() {
        for (name, schema) in shipped() {
            let generator = Generator::new(&name, &schema).unwrap();
            let a = generator.documents(42, 30).unwrap();
            let b = generator.documents(42, 30).unwrap();
            let c = generator.documents(43, 30).unwrap();
            assert_eq!(a, b, "{name}");
            assert_ne!(a[1..], c[1..], "{name}");
            // The minimal document does not depend on the seed.
            assert_eq!(a[0], c[0], "{name}");
        }
    }

    #[test]
    fn an_unknown_keyword_is_an_error_naming_the_schema_and_pointer() {
        let schema = json!({
            "type": "object",
            "properties": {"items": {"type": "array", "uniqueItems": true}}
        });
        let err = Generator::new("test.schema.json", &schema).unwrap_err();
        assert_eq!(
            err,
            GenError::UnknownKeyword {
                schema: "test.schema.json".to_owned(),
                pointer: "/properties/items".to_owned(),
                keyword: "uniqueItems".to_owned(),
            }
        );
        // Deep in $defs and under a combinator too; and an unknown format, a foreign $ref.
        for (schema, pointer) in [
            (
                json!({"$defs": {"A": {"not": {"type": "null"}}}}),
                "/$defs/A",
            ),
            (
                json!({"anyOf": [{"type": "string"}, {"multipleOf": 2}]}),
                "/anyOf/1",
            ),
        ] {
            match Generator::new("s", &schema).unwrap_err() {
                GenError::UnknownKeyword { pointer: p, .. } => assert_eq!(p, pointer),
                other => panic!("{other}"),
            }
        }
        for schema in [
            json!({"type": "string", "format": "credit-card"}),
            json!({"$ref": "https://example.com/other.json"}),
            json!({"type": "strin"}),
        ] {
            assert!(matches!(
                Generator::new("s", &schema).unwrap_err(),
                GenError::Unsupported { .. }
            ));
        }
    }

    #[test]
    fn the_minimal_document_has_only_required_members_and_smallest_values() {
        let schema = json!({
            "type": "object",
            "required": ["id", "lines", "status"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "note": {"type": "string"},
                "status": {"enum": ["open", "closed"]},
                "lines": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["sku"],
                    "properties": {"sku": {"type": "string", "minLength": 2}, "qty": {"type": "integer"}}
                }}
            }
        });
        let generator = Generator::new("s", &schema).unwrap();
        assert_eq!(
            generator.minimal().unwrap(),
            json!({"id": 1, "lines": [{"sku": "aa"}], "status": "open"})
        );
    }

    #[test]
    fn random_documents_cover_optional_members_enums_branches_sizes_and_bounds() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/files/schemas");
        let text = std::fs::read_to_string(root.join("shopify/order.schema.json")).unwrap();
        let schema: Value = serde_json::from_str(&text).unwrap();
        let docs = Generator::new("shopify/order", &schema)
            .unwrap()
            .documents(7, 300)
            .unwrap();
        let order = |d: &Value| d.get("order").cloned().unwrap_or_else(|| d.clone());
        // if/then/else: both the wrapped and the bare order.
        assert!(docs.iter().any(|d| d.get("order").is_some()));
        assert!(docs.iter().any(|d| d.get("order").is_none()));
        // An optional member present and absent; a dependentRequired pulled in.
        assert!(
            docs.iter()
                .any(|d| order(d).get("presentment_currency").is_some())
        );
        assert!(
            docs.iter()
                .any(|d| order(d).get("presentment_currency").is_none())
        );
        for d in &docs {
            let o = order(d);
            if o.get("presentment_currency").is_some() {
                assert!(o.get("total_price_set").is_some(), "{d}");
            }
        }
        // Array sizes: the minimum and more.
        let sizes: BTreeSet<usize> = docs
            .iter()
            .map(|d| order(d)["line_items"].as_array().unwrap().len())
            .collect();
        assert!(
            sizes.contains(&1) && sizes.iter().any(|n| *n >= 3),
            "{sizes:?}"
        );
        // The boundary and the big ids (past 2^53), and every type a member allows.
        let ids: BTreeSet<String> = docs.iter().map(|d| order(d)["id"].to_string()).collect();
        assert!(
            ids.contains("1") && ids.contains("9007199254740993"),
            "{ids:?}"
        );
        let kinds: BTreeSet<&str> = docs
            .iter()
            .filter_map(|d| order(d).get("financial_status").cloned())
            .map(|v| if v.is_null() { "null" } else { "string" })
            .collect();
        assert_eq!(kinds.len(), 2);

        // Every enum value of Amazon's OrderStatus turns up.
        let text = std::fs::read_to_string(root.join("amazon/order.schema.json")).unwrap();
        let schema: Value = serde_json::from_str(&text).unwrap();
        let docs = Generator::new("amazon/order", &schema)
            .unwrap()
            .documents(7, 300)
            .unwrap();
        let statuses: BTreeSet<String> =
            docs.iter().map(|d| d["OrderStatus"].to_string()).collect();
        assert_eq!(statuses.len(), 8, "{statuses:?}");
    }

    #[test]
    fn example_strings_stand_in_for_constrained_strings_of_the_same_member() {
        let schema = json!({
            "type": "object", "required": ["a", "b"],
            "properties": {
                "a": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "b": {"type": "string", "pattern": "^[A-Z]{3}$"}
            }
        });
        let examples = [json!({"a": "EUR", "b": "not three capitals"})];
        let generator = Generator::new("s", &schema)
            .unwrap()
            .with_examples(examples.iter());
        let docs = generator.documents(3, 100).unwrap();
        // Taken from the examples under the same member name, and reused within a document.
        assert!(docs.iter().any(|d| d["a"] == "EUR" && d["b"] == "EUR"));
        assert!(docs.iter().any(|d| d["a"] != "EUR"));
    }
}
