//! JSON Schema validation: the canonical model's schemas (embedded at build time) and a
//! validator that compiles a schema once and lists every violation of an instance, each with
//! the RFC 6901 pointer of the offending value, the keyword that failed and a message.
//!
//! Messages never quote the instance's values (jsonschema's masked form), so a 422 listing
//! violations does not echo a buyer's data back, and stays small for a large body.

use std::fmt;
use std::sync::LazyLock;

use jsonschema::{Retrieve, Uri, Validator};
use serde::Serialize;
use serde_json::Value;

/// Where the canonical schemas live: their `$id`s are this followed by the file name.
pub const CANONICAL_BASE: &str = "https://retail-gateway.example/schemas/canonical/v1/";

/// Canonical documents with a schema: the four the ERP takes, the order change, and the two
/// shapes answered to a channel.
pub const CANONICAL_DOCUMENTS: [&str; 7] = [
    "order",
    "order_change",
    "inventory_adjustment",
    "shipment",
    "return",
    "answer",
    "problem",
];

/// (document, file name, text) of every canonical schema, `common` holding the shared parts.
const SOURCES: [(&str, &str, &str); 8] = [
    (
        "common",
        "common.schema.json",
        include_str!("../schemas/v1/common.schema.json"),
    ),
    (
        "order",
        "order.schema.json",
        include_str!("../schemas/v1/order.schema.json"),
    ),
    (
        "order_change",
        "order_change.schema.json",
        include_str!("../schemas/v1/order_change.schema.json"),
    ),
    (
        "inventory_adjustment",
        "inventory_adjustment.schema.json",
        include_str!("../schemas/v1/inventory_adjustment.schema.json"),
    ),
    (
        "shipment",
        "shipment.schema.json",
        include_str!("../schemas/v1/shipment.schema.json"),
    ),
    (
        "return",
        "return.schema.json",
        include_str!("../schemas/v1/return.schema.json"),
    ),
    (
        "answer",
        "answer.schema.json",
        include_str!("../schemas/v1/answer.schema.json"),
    ),
    (
        "problem",
        "problem.schema.json",
        include_str!("../schemas/v1/problem.schema.json"),
    ),
];

/// The parsed schemas, in `SOURCES` order. The texts are ours and tested to parse; a broken
/// one would show up as `null` and fail every validation rather than take the process down.
static SCHEMAS: LazyLock<Vec<Value>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|(_, _, text)| serde_json::from_str(text).unwrap_or(Value::Null))
        .collect()
});

/// Compiled validators of the canonical documents, in `SOURCES` order, built on first use.
static VALIDATORS: LazyLock<Vec<Result<SchemaValidator, SchemaError>>> =
    LazyLock::new(|| SCHEMAS.iter().map(SchemaValidator::compile).collect());

fn index_of(document: &str) -> Option<usize> {
    SOURCES.iter().position(|(name, _, _)| *name == document)
}

/// The JSON Schema of a canonical document (`order`, `shipment`, ..., `answer`, `problem`).
pub fn canonical_schema(document: &str) -> Option<&'static Value> {
    if !CANONICAL_DOCUMENTS.contains(&document) {
        return None;
    }
    index_of(document).and_then(|i| SCHEMAS.get(i))
}

/// The compiled validator of a canonical document, shared by the whole process.
pub fn canonical_validator(document: &str) -> Option<&'static SchemaValidator> {
    if !CANONICAL_DOCUMENTS.contains(&document) {
        return None;
    }
    index_of(document)
        .and_then(|i| VALIDATORS.get(i))
        .and_then(|compiled| compiled.as_ref().ok())
}

/// The `$id` of a canonical document's schema.
pub fn canonical_schema_id(document: &str) -> Option<String> {
    index_of(document).map(|i| format!("{CANONICAL_BASE}{}", SOURCES[i].1))
}

/// Serves `$ref`s to the canonical schemas from memory and refuses every other remote
/// reference: a policy file's schema may build on the canonical model, but validation never
/// reaches out to the network or the disk.
struct CanonicalOnly;

impl Retrieve for CanonicalOnly {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let wanted = uri.as_str();
        let found = wanted
            .strip_prefix(CANONICAL_BASE)
            .and_then(|file| SOURCES.iter().position(|(_, name, _)| *name == file))
            .and_then(|i| SCHEMAS.get(i));
        match found {
            Some(schema) => Ok(schema.clone()),
            None => Err(format!(
                "{wanted} is not a canonical schema; external references are not fetched"
            )
            .into()),
        }
    }
}

/// A schema that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON Schema: {0}")]
pub struct SchemaError(pub String);

/// One way an instance breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// RFC 6901 JSON Pointer to the offending value in the instance (`""` for the root).
    pub pointer: String,
    /// The schema keyword that failed (`required`, `type`, `pattern`, ...).
    pub keyword: String,
    /// What is wrong, without quoting the instance's values.
    pub message: String,
}

/// Every violation of an instance, the first `max` of them listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violations {
    /// The violations listed, at most the cap asked for.
    pub violations: Vec<Violation>,
    /// How many there are in all (more than listed when the cap was hit).
    pub total: usize,
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} schema violation(s)", self.total)?;
        for (i, v) in self.violations.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            let at = if v.pointer.is_empty() {
                "(root)"
            } else {
                &v.pointer
            };
            write!(f, "{sep}{at}: {} [{}]", v.message, v.keyword)?;
        }
        if self.total > self.violations.len() {
            write!(f, "; and {} more", self.total - self.violations.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

/// A JSON Schema compiled once, to validate any number of instances from any thread.
pub struct SchemaValidator {
    inner: Validator,
}

impl fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaValidator").finish_non_exhaustive()
    }
}

impl SchemaValidator {
    /// Compiles a schema (draft 2020-12 unless its `$schema` names another draft). `$ref`s
    /// to the canonical schemas (by their `$id`, see [`CANONICAL_BASE`]) resolve from memory;
    /// any other external reference is an error.
    pub fn compile(schema: &Value) -> Result<SchemaValidator, SchemaError> {
        let mut options = jsonschema::options().with_retriever(CanonicalOnly);
        if schema.get("$schema").is_none() {
            options = options.with_draft(jsonschema::Draft::Draft202012);
        }
        let inner = options
            .build(schema)
            .map_err(|err| SchemaError(err.to_string()))?;
        Ok(SchemaValidator { inner })
    }

    /// Whether the instance is valid; stops at the first violation.
    pub fn is_valid(&self, instance: &Value) -> bool {
        self.inner.is_valid(instance)
    }

    /// Every violation of the instance, listing at most `max_listed` of them but counting all.
    pub fn validate(&self, instance: &Value, max_listed: usize) -> Result<(), Violations> {
        // The valid case is the common one and is much cheaper than collecting errors.
        if self.inner.is_valid(instance) {
            return Ok(());
        }
        let mut violations = Vec::new();
        let mut total = 0;
        for error in self.inner.iter_errors(instance) {
            total += 1;
            if violations.len() < max_listed {
                violations.push(Violation {
                    pointer: error.instance_path().to_string(),
                    keyword: error.kind().keyword().to_owned(),
                    message: error.masked().to_string(),
                });
            }
        }
        if total == 0 {
            // is_valid and iter_errors disagreeing would be a jsonschema bug; say so rather
            // than pass an instance is_valid refused.
            total = 1;
            violations.push(Violation {
                pointer: String::new(),
                keyword: "schema".to_owned(),
                message: "the instance is not valid against the schema".to_owned(),
            });
        }
        Err(Violations { violations, total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_canonical_schema_parses_and_compiles() {
        for (i, (name, file, _)) in SOURCES.iter().enumerate() {
            let schema = &SCHEMAS[i];
            assert!(schema.is_object(), "{file} does not parse");
            assert_eq!(
                schema["$id"].as_str(),
                Some(format!("{CANONICAL_BASE}{file}").as_str()),
                "{file} has the wrong $id"
            );
            if *name != "common" {
                assert!(
                    canonical_validator(name).is_some(),
                    "{file} does not compile: {:?}",
                    VALIDATORS[i].as_ref().err()
                );
            }
        }
        assert!(canonical_schema("common").is_none());
        assert!(canonical_schema("nope").is_none());
    }

    #[test]
    fn every_violation_is_listed_with_pointer_and_keyword() {
        let validator = canonical_validator("order").expect("order schema");
        let order = json!({
            "id": "amazon:1",
            "document_type": "order",
            "model_version": "v1",
            "channel": "amazon",
            "channel_ids": {"order_id": "1"},
            "created_at": "2024-01-01T10:00:00+01:00",
            "status": "shipped",
            "channel_status": {"OrderStatus": "Shipped"},
            "currency": "USD",
            "lines": [{
                "line_id": "1",
                "quantity": {"ordered": 1},
                "status": "fulfilled",
                "subtotal": {"amount": 9.99, "currency": "USD"}
            }],
            "totals": {"subtotal": {"amount": "9.99", "currency": "USD"},
                       "tax": {"amount": "0.00", "currency": "USD"}},
            "surprise": true
        });
        let err = validator.validate(&order, 100).expect_err("invalid");
        let found: Vec<(&str, &str)> = err
            .violations
            .iter()
            .map(|v| (v.pointer.as_str(), v.keyword.as_str()))
            .collect();
        for expected in [
            ("/created_at", "pattern"),
            ("/status", "enum"),
            ("/lines/0/subtotal/amount", "type"),
            ("/totals", "required"),
            ("", "additionalProperties"),
        ] {
            assert!(
                found.contains(&expected),
                "{expected:?} missing in {found:?}"
            );
        }
        assert_eq!(err.total, err.violations.len());
        // Masked: the offending values are not quoted back.
        assert!(
            err.violations.iter().all(|v| !v.message.contains("9.99")),
            "{err}"
        );
    }

    #[test]
    fn the_list_is_capped_but_the_count_is_not() {
        let validator = SchemaValidator::compile(&json!({
            "type": "array",
            "items": {"type": "string"}
        }))
        .expect("schema");
        let err = validator
            .validate(&json!([1, 2, 3, 4, 5, "ok", 7]), 2)
            .expect_err("invalid");
        assert_eq!(err.total, 6);
        assert_eq!(err.violations.len(), 2);
        assert_eq!(err.violations[0].pointer, "/0");
        assert_eq!(err.violations[1].pointer, "/1");
        assert!(err.to_string().contains("and 4 more"), "{err}");
    }

    #[test]
    fn pointers_escape_per_rfc_6901() {
        let validator = SchemaValidator::compile(&json!({
            "additionalProperties": {"type": "integer"}
        }))
        .expect("schema");
        let err = validator
            .validate(&json!({"a/b": "x", "c~d": "y"}), 10)
            .expect_err("invalid");
        let pointers: Vec<&str> = err.violations.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&"/a~1b"), "{pointers:?}");
        assert!(pointers.contains(&"/c~0d"), "{pointers:?}");
    }

    #[test]
    fn schemas_can_reference_the_canonical_model_but_nothing_else() {
        let validator = SchemaValidator::compile(&json!({
            "$ref": format!("{CANONICAL_BASE}common.schema.json#/$defs/money")
        }))
        .expect("canonical refs resolve");
        assert!(validator.is_valid(&json!({"amount": "1.00", "currency": "EUR"})));
        assert!(!validator.is_valid(&json!({"amount": 1.0, "currency": "EUR"})));
        assert!(
            SchemaValidator::compile(&json!({"$ref": "https://example.com/elsewhere.json"}))
                .is_err()
        );
        assert!(SchemaValidator::compile(&json!({"type": "nonsense"})).is_err());
    }

    #[test]
    fn large_integers_are_integers() {
        let validator =
            SchemaValidator::compile(&json!({"type": "integer", "minimum": 0})).expect("schema");
        let big: Value = serde_json::from_str("9007199254740993").expect("json");
        assert!(validator.is_valid(&big));
        let fraction: Value = serde_json::from_str("1.5").expect("json");
        assert!(!validator.is_valid(&fraction));
    }
}
