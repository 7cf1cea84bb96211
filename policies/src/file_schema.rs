//! The JSON Schema of the policy-file format, generated from the spec structs (their `///` docs
//! become descriptions editors show), and the validation that reports every structural error
//! in a file (unknown keys, wrong types, missing keys) before any typed parsing happens.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use serde_json::{Map, Value, json};

use crate::error::ErrorSink;
use crate::source::push_token;
use crate::spec::PolicyFileSpec;

/// The `$id` of the published schema.
pub const SCHEMA_ID: &str = "urn:gateway:policy-file:v1";

/// The schema of the policy-file format, as published in `policies/policy-file.schema.json`.
pub fn policy_file_schema() -> Value {
    let mut schema = schemars::schema_for!(PolicyFileSpec).to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("$id".into(), Value::String(SCHEMA_ID.into()));
        obj.insert("title".into(), Value::String("Gateway policy file".into()));
    }
    rewrite_tagged_unions(&mut schema, "kind");
    schema
}

/// The published schema as pretty JSON (what `gateway schema` prints).
pub fn policy_file_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&policy_file_schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// Rewrites each internally tagged union (`oneOf` of objects told apart by `tag`) into an
/// `if kind == X then <X's schema>` chain. With `oneOf`, a mistake inside one policy would be
/// reported as "not valid under any of the schemas"; with `if`/`then`, the validator (and an
/// editor) checks the policy against its own kind and reports the exact field.
fn rewrite_tagged_unions(node: &mut Value, tag: &str) {
    match node {
        Value::Object(obj) => {
            if let Some(Value::Array(alts)) = obj.get("oneOf") {
                let consts: Option<Vec<Value>> = alts
                    .iter()
                    .map(|a| a.pointer(&format!("/properties/{tag}/const")).cloned())
                    .collect();
                if let Some(consts) = consts {
                    let Some(Value::Array(alts)) = obj.remove("oneOf") else {
                        return;
                    };
                    let branches: Vec<Value> = consts
                        .iter()
                        .zip(alts)
                        .map(|(c, alt)| {
                            json!({
                                "if": { "properties": { tag: { "const": c } }, "required": [tag] },
                                "then": alt,
                            })
                        })
                        .collect();
                    obj.insert("type".into(), json!("object"));
                    obj.insert("required".into(), json!([tag]));
                    obj.insert(
                        "properties".into(),
                        json!({ tag: { "description": "The kind of policy.", "enum": consts } }),
                    );
                    obj.insert("allOf".into(), Value::Array(branches));
                }
            }
            for v in obj.values_mut() {
                rewrite_tagged_unions(v, tag);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_tagged_unions(v, tag)),
        _ => {}
    }
}

struct Compiled {
    schema: Value,
    validator: jsonschema::Validator,
}

fn compiled() -> Option<&'static Compiled> {
    static COMPILED: OnceLock<Option<Compiled>> = OnceLock::new();
    COMPILED
        .get_or_init(|| {
            let schema = policy_file_schema();
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&schema)
                .ok()?;
            Some(Compiled { schema, validator })
        })
        .as_ref()
}

/// Checks a parsed file against the schema, reporting every violation at its place.
pub fn validate(document: &Value, errors: &mut ErrorSink<'_>) {
    let Some(c) = compiled() else {
        errors.at(
            "",
            "internal error: the policy-file schema does not compile",
        );
        return;
    };
    for e in c.validator.iter_errors(document) {
        let pointer = e.instance_path().as_str().to_owned();
        match e.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let known = known_keys(&c.schema, e.schema_path().as_str());
                for key in unexpected {
                    let mut msg = format!("unknown key {key:?}");
                    if let Some(s) = suggestion(key, &known) {
                        msg.push_str(&format!(" (did you mean {s:?}?)"));
                    } else if !known.is_empty() {
                        msg.push_str(&format!("; expected one of: {}", known.join(", ")));
                    }
                    errors.at_key(&push_token(&pointer, key), msg);
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property
                    .as_str()
                    .map_or_else(|| property.to_string(), str::to_owned);
                errors.at_key(&pointer, format!("missing required key {name:?}"));
            }
            _ => {
                let at = if pointer.is_empty() {
                    "the file"
                } else {
                    pointer.as_str()
                };
                errors.at(&pointer, format!("{e} (at {at})"));
            }
        }
    }
}

/// The property names the object schema at `schema_path` (ending in `additionalProperties`)
/// allows, following `$ref`s.
fn known_keys(schema: &Value, schema_path: &str) -> Vec<String> {
    let mut node = schema;
    let segments: Vec<&str> = schema_path.split('/').skip(1).collect();
    let Some((_, parents)) = segments.split_last() else {
        return Vec::new();
    };
    for seg in parents {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg == "$ref" {
            if let Some(target) = node
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|p| schema.pointer(p))
            {
                node = target;
            }
            continue;
        }
        match node {
            Value::Object(o) => match o.get(&seg) {
                Some(n) => node = n,
                None => return Vec::new(),
            },
            Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get(i)) {
                Some(n) => node = n,
                None => return Vec::new(),
            },
            _ => return Vec::new(),
        }
    }
    node.get("properties")
        .and_then(Value::as_object)
        .map(|p: &Map<String, Value>| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The closest known key, if it is close enough to be a likely typo.
fn suggestion<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::parse_yaml;
    use std::path::PathBuf;

    fn errors_of(yaml: &str) -> Vec<String> {
        let (doc, map) = parse_yaml(yaml).unwrap();
        let mut sink = ErrorSink::new(PathBuf::from("p.yaml"), &map);
        validate(&doc, &mut sink);
        match sink.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn the_schema_compiles_and_has_an_id() {
        assert!(compiled().is_some());
        assert_eq!(policy_file_schema()["$id"], SCHEMA_ID);
    }

    #[test]
    fn every_structural_error_is_reported_with_its_line() {
        let yaml = "\
version: 1
upstreams:
  erp:
    endpoint: [\"127.0.0.1:1\"]
    connect_timeout: 5
policies:
  body:
    kind: json_body
    max_depth: deep
  other:
    kind: nope
routes:
  - name: r
    methods: [POST]
    path: /x
    upstream: erp
    colour: blue
";
        let errs = errors_of(yaml);
        let joined = errs.join("\n");
        assert!(
            joined.contains("p.yaml:4:5: unknown key \"endpoint\" (did you mean \"endpoints\"?)"),
            "{joined}"
        );
        assert!(
            joined.contains("p.yaml:3:3: missing required key \"endpoints\""),
            "{joined}"
        );
        assert!(
            joined.contains("p.yaml:5:22: 5 is not of type \"string\""),
            "{joined}"
        );
        assert!(
            joined.contains("p.yaml:9:16: \"deep\" is not of type \"integer\""),
            "{joined}"
        );
        assert!(
            joined.contains("p.yaml:11:11: \"nope\" is not one of"),
            "{joined}"
        );
        assert!(
            joined.contains("p.yaml:17:5: unknown key \"colour\"; expected one of:"),
            "{joined}"
        );
        assert_eq!(errs.len(), 6, "{joined}");
    }

    #[test]
    fn a_valid_minimal_file_passes() {
        let yaml = "version: 1\nupstreams:\n  erp:\n    endpoints: [\"127.0.0.1:1\"]\nroutes: []\n";
        assert!(errors_of(yaml).is_empty());
    }

    #[test]
    fn the_published_schema_file_is_up_to_date() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policy-file.schema.json");
        let published = std::fs::read_to_string(&path).unwrap_or_default();
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, policy_file_schema_text()).unwrap();
            return;
        }
        assert!(
            published == policy_file_schema_text(),
            "policies/policy-file.schema.json is stale; run `UPDATE_SCHEMA=1 cargo test -p policies schema` and commit it"
        );
    }
}
