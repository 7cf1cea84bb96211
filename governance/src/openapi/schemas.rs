//! Embedding JSON Schema documents in an OpenAPI document's `components.schemas`: the shipped
//! schemas are standalone 2020-12 documents (`$schema`, an `$id` of their own, `$defs` reached
//! by `#/$defs/...`, the canonical ones `$ref` a sibling `common.schema.json`). Inside OpenAPI a
//! `$ref` resolves against the OpenAPI document, and tools (validators, generators such as
//! schemathesis) do not all honour an embedded `$id` as a new base URI, so each document is
//! rewritten: `$id`/`$schema` dropped, `$defs` hoisted to components of their own, every
//! reference pointed at its component.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The canonical model's shared definitions, which the canonical schemas `$ref` by file name
/// (`common.schema.json#/$defs/id`); `transforms` exposes the documents but not this file.
const CANONICAL_COMMON: &str = include_str!("../../../transforms/schemas/v1/common.schema.json");

/// The component schemas of a document being built, with each embedded source's name.
#[derive(Debug, Default)]
pub struct Components {
    /// `components.schemas`.
    pub schemas: Map<String, Value>,
    /// Component name of each embedded source (by its reference or canonical file name).
    embedded: BTreeMap<String, String>,
}

impl Components {
    /// Adds a component as is (a schema written here, without references to rewrite).
    pub fn insert(&mut self, name: &str, schema: Value) {
        self.schemas.insert(name.to_owned(), schema);
    }

    /// Embeds the schema document known as `reference` (once) and answers a `$ref` to it.
    pub fn embed(&mut self, reference: &str, schema: &Value) -> Value {
        if let Some(name) = self.embedded.get(reference) {
            return ref_to(name);
        }
        let name = self.unique_name(&component_name(reference));
        self.embedded.insert(reference.to_owned(), name.clone());
        let canonical = reference.starts_with("canonical:");
        self.rewrite_document(&name, schema, canonical);
        ref_to(&name)
    }

    /// Embeds a canonical document (`answer`, `problem`, `order`...) and answers a `$ref`.
    pub fn embed_canonical(&mut self, document: &str) -> Option<Value> {
        let schema = transforms::canonical_schema(document)?;
        Some(self.embed(&format!("canonical:{document}"), schema))
    }

    fn unique_name(&self, base: &str) -> String {
        let mut name = base.to_owned();
        let mut n = 2;
        while self.schemas.contains_key(&name) || self.embedded.values().any(|v| *v == name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        name
    }

    fn rewrite_document(&mut self, name: &str, schema: &Value, canonical: bool) {
        let mut root = schema.clone();
        let defs = match root.as_object_mut() {
            Some(obj) => {
                obj.remove("$schema");
                obj.remove("$id");
                obj.remove("$defs")
            }
            None => None,
        };
        // reserve the name before recursing, so a document referring to itself terminates
        self.schemas.insert(name.to_owned(), Value::Bool(true));
        let mut external = Vec::new();
        rewrite_refs(&mut root, name, canonical, &mut external);
        self.schemas.insert(name.to_owned(), root);
        if let Some(Value::Object(defs)) = defs {
            for (def, mut value) in defs {
                rewrite_refs(&mut value, name, canonical, &mut external);
                self.schemas.insert(format!("{name}.{def}"), value);
            }
        }
        for file in external {
            self.embed_canonical_file(&file);
        }
    }

    /// Embeds a sibling canonical file (`common.schema.json`) that a canonical schema refers to.
    fn embed_canonical_file(&mut self, file: &str) {
        let key = format!("canonical-file:{file}");
        if self.embedded.contains_key(&key) {
            return;
        }
        let document = file.trim_end_matches(".schema.json");
        let value = if document == "common" {
            serde_json::from_str(CANONICAL_COMMON).ok()
        } else {
            transforms::canonical_schema(document).cloned()
        };
        let Some(value) = value else { return };
        let name = canonical_component(document);
        self.embedded.insert(key, name.clone());
        if !self.schemas.contains_key(&name) {
            self.rewrite_document(&name, &value, true);
        }
    }
}

/// `{"$ref": "#/components/schemas/<name>"}`.
pub fn ref_to(name: &str) -> Value {
    let mut obj = Map::new();
    obj.insert(
        "$ref".into(),
        Value::String(format!("#/components/schemas/{}", escape_pointer(name))),
    );
    Value::Object(obj)
}

fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn canonical_component(document: &str) -> String {
    format!("canonical.{document}")
}

/// A component name for a schema reference: `schemas/amazon/order.schema.json` ->
/// `amazon.order`, `canonical:order` -> `canonical.order` (names may only hold
/// `A-Za-z0-9.-_`).
pub fn component_name(reference: &str) -> String {
    if let Some(doc) = reference.strip_prefix("canonical:") {
        return canonical_component(doc);
    }
    let trimmed = reference
        .trim_start_matches("./")
        .trim_start_matches("schemas/")
        .trim_end_matches(".json")
        .trim_end_matches(".schema");
    let name: String = trimmed
        .chars()
        .map(|c| match c {
            '/' | '\\' => '.',
            c if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') => c,
            _ => '_',
        })
        .collect();
    let name = name.trim_matches('.').to_owned();
    if name.is_empty() {
        "schema".to_owned()
    } else {
        name
    }
}

/// Points every `$ref` of `value` (part of the document embedded as `name`) at components:
/// `#` -> the document, `#/$defs/X/...` -> `<name>.X/...`, `#/...` -> inside the document;
/// in canonical documents, `<file>.schema.json#...` -> that canonical file's components
/// (collected in `external` to be embedded too). Other references are left as written.
fn rewrite_refs(value: &mut Value, name: &str, canonical: bool, external: &mut Vec<String>) {
    match value {
        Value::Object(obj) => {
            if let Some(Value::String(r)) = obj.get_mut("$ref")
                && let Some(new) = rewrite_ref(r, name, canonical, external)
            {
                *r = new;
            }
            for (k, v) in obj.iter_mut() {
                // `enum`/`const`/`examples`/`default` hold data, not schemas
                if matches!(k.as_str(), "enum" | "const" | "examples" | "default") {
                    continue;
                }
                rewrite_refs(v, name, canonical, external);
            }
        }
        Value::Array(items) => {
            for v in items {
                rewrite_refs(v, name, canonical, external);
            }
        }
        _ => {}
    }
}

fn rewrite_ref(r: &str, name: &str, canonical: bool, external: &mut Vec<String>) -> Option<String> {
    let (file, fragment) = match r.split_once('#') {
        Some((f, frag)) => (f, frag),
        None => (r, ""),
    };
    let target = if file.is_empty() {
        name.to_owned()
    } else if canonical && file.ends_with(".schema.json") && !file.contains('/') {
        if !external.iter().any(|e| e == file) {
            external.push(file.to_owned());
        }
        canonical_component(file.trim_end_matches(".schema.json"))
    } else {
        return None;
    };
    let base = format!("#/components/schemas/{}", escape_pointer(&target));
    if fragment.is_empty() {
        return Some(base);
    }
    if let Some(rest) = fragment.strip_prefix("/$defs/") {
        let (def, tail) = match rest.split_once('/') {
            Some((d, t)) => (d, format!("/{t}")),
            None => (rest, String::new()),
        };
        return Some(format!(
            "#/components/schemas/{}{tail}",
            escape_pointer(&format!("{target}.{def}"))
        ));
    }
    Some(format!("{base}{fragment}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_come_from_the_reference() {
        assert_eq!(
            component_name("schemas/amazon/order.schema.json"),
            "amazon.order"
        );
        assert_eq!(component_name("canonical:order"), "canonical.order");
        assert_eq!(component_name("v1 orders/x.json"), "v1_orders.x");
    }

    #[test]
    fn defs_are_hoisted_and_refs_rewritten() {
        let mut c = Components::default();
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "urn:x",
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/A"}, "b": {"$ref": "#/$defs/A/properties/n"},
                           "self": {"$ref": "#"}, "e": {"enum": [{"$ref": "#/$defs/A"}]}},
            "$defs": {"A": {"type": "object", "properties": {"n": {"type": "integer"}, "next": {"$ref": "#/$defs/A"}}}}
        });
        let r = c.embed("schemas/amazon/order.schema.json", &schema);
        assert_eq!(r, json!({"$ref": "#/components/schemas/amazon.order"}));
        let root = &c.schemas["amazon.order"];
        assert!(root.get("$id").is_none() && root.get("$schema").is_none());
        assert!(root.get("$defs").is_none());
        assert_eq!(
            root["properties"]["a"]["$ref"],
            "#/components/schemas/amazon.order.A"
        );
        assert_eq!(
            root["properties"]["b"]["$ref"],
            "#/components/schemas/amazon.order.A/properties/n"
        );
        assert_eq!(
            root["properties"]["self"]["$ref"],
            "#/components/schemas/amazon.order"
        );
        assert_eq!(root["properties"]["e"]["enum"][0]["$ref"], "#/$defs/A");
        assert_eq!(
            c.schemas["amazon.order.A"]["properties"]["next"]["$ref"],
            "#/components/schemas/amazon.order.A"
        );
        // embedding again answers the same component
        assert_eq!(c.embed("schemas/amazon/order.schema.json", &schema), r);
    }

    #[test]
    fn canonical_schemas_bring_their_common_definitions() {
        let mut c = Components::default();
        let r = c.embed_canonical("answer").expect("the answer schema");
        assert_eq!(r, json!({"$ref": "#/components/schemas/canonical.answer"}));
        assert_eq!(
            c.schemas["canonical.answer"]["properties"]["erp_document_id"]["$ref"],
            "#/components/schemas/canonical.common.id"
        );
        assert!(c.schemas.contains_key("canonical.common.id"));
        assert!(c.schemas.contains_key("canonical.common.timestamp"));
    }
}
