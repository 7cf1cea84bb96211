//! Outbound mappings: a canonical event (a shipment, or an inventory adjustment with one item)
//! turned into the request a marketplace's API takes. `<channel>/outbound/<operation>.jq`
//! produces the envelope `{"method", "path", "body"}`; [`OutboundMapping::apply`] checks the
//! envelope and then the body against the operation's body schema
//! (`schemas/outbound/<channel>/<operation>.schema.json`, embedded), so a mapping bug surfaces
//! as an error, never as a malformed call to a marketplace.
//!
//! Layout under a channel folder of the mappings root (see `mappings/README.md`):
//! ```text
//! <channel>/outbound/<operation>.jq                          the mapping
//! <channel>/outbound/cases/<operation>/<name>.input.json     a golden input
//! <channel>/outbound/cases/<operation>/<name>.expected.json  its expected request (or rejection)
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical_schemas::{SchemaError, SchemaValidator, Violation, Violations};
use crate::engine::{Program, RunError};
use crate::error::TransformError;
use crate::golden::{self, GoldenCase, GoldenOutcome};
use crate::mapping_files::LoadError;
use crate::value;

/// The operations a marketplace can be sent: a shipment confirmation and a stock level.
pub const OUTBOUND_OPERATIONS: [&str; 2] = ["shipment", "inventory"];

/// The channels with outbound body schemas (and so, outbound mappings).
pub const OUTBOUND_CHANNELS: [&str; 4] = ["amazon", "walmart", "ebay", "shopify"];

/// The HTTP methods an outbound request may use.
pub const OUTBOUND_METHODS: [&str; 3] = ["POST", "PUT", "PATCH"];

/// How many violations of an envelope or body an error lists (all are counted).
const MAX_LISTED_VIOLATIONS: usize = 20;

/// (channel, operation, text) of every body schema.
const SOURCES: [(&str, &str, &str); 8] = [
    (
        "amazon",
        "shipment",
        include_str!("../schemas/outbound/amazon/shipment.schema.json"),
    ),
    (
        "amazon",
        "inventory",
        include_str!("../schemas/outbound/amazon/inventory.schema.json"),
    ),
    (
        "walmart",
        "shipment",
        include_str!("../schemas/outbound/walmart/shipment.schema.json"),
    ),
    (
        "walmart",
        "inventory",
        include_str!("../schemas/outbound/walmart/inventory.schema.json"),
    ),
    (
        "ebay",
        "shipment",
        include_str!("../schemas/outbound/ebay/shipment.schema.json"),
    ),
    (
        "ebay",
        "inventory",
        include_str!("../schemas/outbound/ebay/inventory.schema.json"),
    ),
    (
        "shopify",
        "shipment",
        include_str!("../schemas/outbound/shopify/shipment.schema.json"),
    ),
    (
        "shopify",
        "inventory",
        include_str!("../schemas/outbound/shopify/inventory.schema.json"),
    ),
];

/// The parsed body schemas, in `SOURCES` order. The texts are ours and tested to parse; a
/// broken one would show up as `null` and fail every check rather than take the process down.
static SCHEMAS: LazyLock<Vec<Value>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|(_, _, text)| serde_json::from_str(text).unwrap_or(Value::Null))
        .collect()
});

/// The compiled body validators, in `SOURCES` order, built on first use.
static VALIDATORS: LazyLock<Vec<Result<SchemaValidator, SchemaError>>> =
    LazyLock::new(|| SCHEMAS.iter().map(SchemaValidator::compile).collect());

fn index_of(channel: &str, operation: &str) -> Option<usize> {
    SOURCES
        .iter()
        .position(|(c, o, _)| *c == channel && *o == operation)
}

/// The JSON Schema (draft 2020-12, self-contained) of the body a channel's API takes for an
/// operation (`outbound_body_schema("amazon", "shipment")`: Amazon's `ConfirmShipmentRequest`).
pub fn outbound_body_schema(channel: &str, operation: &str) -> Option<&'static Value> {
    index_of(channel, operation).and_then(|i| SCHEMAS.get(i))
}

/// The compiled validator of [`outbound_body_schema`], shared by the whole process.
pub fn outbound_body_validator(channel: &str, operation: &str) -> Option<&'static SchemaValidator> {
    index_of(channel, operation)
        .and_then(|i| VALIDATORS.get(i))
        .and_then(|compiled| compiled.as_ref().ok())
}

/// The call an outbound mapping produced: checked envelope, body valid against the
/// operation's body schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundRequest {
    /// `POST`, `PUT` or `PATCH`.
    pub method: String,
    /// The path with its query, every id in it percent-encoded (`/v3/inventory?sku=A%2FB`);
    /// relative to the marketplace upstream's base.
    pub path: String,
    /// The JSON body.
    pub body: Value,
}

impl OutboundRequest {
    /// The envelope as JSON, `{"method", "path", "body"}` (what golden cases expect).
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("method".to_owned(), Value::String(self.method.clone()));
        map.insert("path".to_owned(), Value::String(self.path.clone()));
        map.insert("body".to_owned(), self.body.clone());
        Value::Object(map)
    }
}

/// One compiled outbound mapping, with its golden cases.
pub struct OutboundMapping {
    name: String,
    channel: String,
    operation: String,
    path: PathBuf,
    program: Program,
    validator: &'static SchemaValidator,
    pub(crate) cases: Vec<GoldenCase>,
}

impl fmt::Debug for OutboundMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundMapping")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("cases", &self.cases.len())
            .finish_non_exhaustive()
    }
}

impl OutboundMapping {
    /// Compiles an outbound mapping from its source; `path` is only used in error messages
    /// (jq errors are located at `path:line:col`). The channel and operation must have a body
    /// schema ([`OUTBOUND_CHANNELS`] x [`OUTBOUND_OPERATIONS`]).
    pub fn compile(
        channel: &str,
        operation: &str,
        source: &str,
        path: &Path,
    ) -> Result<OutboundMapping, Vec<LoadError>> {
        if !OUTBOUND_OPERATIONS.contains(&operation) {
            return Err(vec![LoadError::at(
                path,
                format!(
                    "no outbound operation is called {operation:?} (known: {})",
                    OUTBOUND_OPERATIONS.join(", ")
                ),
            )]);
        }
        let Some(validator) = outbound_body_validator(channel, operation) else {
            let message = if OUTBOUND_CHANNELS.contains(&channel) {
                format!("the body schema of {channel}/{operation} does not compile")
            } else {
                format!(
                    "no outbound body schema for channel {channel:?} (channels with one: {})",
                    OUTBOUND_CHANNELS.join(", ")
                )
            };
            return Err(vec![LoadError::at(path, message)]);
        };
        let program =
            Program::compile(source).map_err(|errors| LoadError::in_source(path, errors))?;
        Ok(OutboundMapping {
            name: format!("{channel}/outbound/{operation}"),
            channel: channel.to_owned(),
            operation: operation.to_owned(),
            path: path.to_owned(),
            program,
            validator,
            cases: Vec::new(),
        })
    }

    /// `<channel>/outbound/<operation>`, e.g. `amazon/outbound/shipment`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The marketplace it calls.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// `shipment` or `inventory`.
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The `.jq` file it was compiled from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Maps `{"document": <canonical>, "target": {...}, "listing": {...}}` to the request, its
    /// envelope and body checked: the result is a valid request or an error. Only
    /// [`TransformError::Rejected`] blames the input (answer 422).
    pub fn apply(&self, input: Value) -> Result<OutboundRequest, TransformError> {
        self.checked(self.program.run_json(input))
    }

    /// [`OutboundMapping::apply`] through jaq alone (see [`crate::Mapping::apply_interpreted`]).
    #[doc(hidden)]
    pub fn apply_interpreted(&self, input: Value) -> Result<OutboundRequest, TransformError> {
        self.checked(self.program.run(value::to_jaq(input)))
    }

    /// Whether [`OutboundMapping::apply`] runs the compiled form of the mapping.
    pub fn runs_compiled(&self) -> bool {
        self.program.is_compiled()
    }

    fn checked(&self, result: Result<Value, RunError>) -> Result<OutboundRequest, TransformError> {
        let output = result.map_err(|err| self.run_error(err))?;
        let request =
            check_envelope(output).map_err(|violations| self.invalid("envelope", violations))?;
        self.validator
            .validate(&request.body, MAX_LISTED_VIOLATIONS)
            .map_err(|violations| self.invalid("body", under("/body", violations)))?;
        Ok(request)
    }

    fn invalid(&self, part: &'static str, violations: Violations) -> TransformError {
        TransformError::InvalidRequest {
            mapping: self.name.clone(),
            part,
            violations,
        }
    }

    fn run_error(&self, err: RunError) -> TransformError {
        let mapping = self.name.clone();
        match err {
            RunError::Rejected(message) => TransformError::Rejected { mapping, message },
            RunError::Failed(message) => TransformError::Failed { mapping, message },
            RunError::NoOutput => TransformError::NoOutput { mapping },
            RunError::SeveralOutputs => TransformError::SeveralOutputs { mapping },
            RunError::NotJson(source) => TransformError::NotJson { mapping, source },
        }
    }

    /// The golden cases found in `cases/<operation>/` beside the mapping.
    pub fn golden_cases(&self) -> &[GoldenCase] {
        &self.cases
    }

    /// Runs every golden case; a failed one carries a readable diff or the error.
    pub fn run_golden_cases(&self) -> Vec<GoldenOutcome> {
        self.cases
            .iter()
            .map(|case| {
                let result = self.apply(case.input.clone()).map(|r| r.to_value());
                golden::run_case(case, result)
            })
            .collect()
    }
}

/// Prefixes the pointers of body violations with the body's place in the envelope.
fn under(prefix: &str, mut violations: Violations) -> Violations {
    for v in &mut violations.violations {
        v.pointer = format!("{prefix}{}", v.pointer);
    }
    violations
}

fn violation(pointer: &str, keyword: &str, message: impl Into<String>) -> Violation {
    Violation {
        pointer: pointer.to_owned(),
        keyword: keyword.to_owned(),
        message: message.into(),
    }
}

/// Checks the envelope's shape: exactly `method` (POST, PUT, PATCH), `path` (see
/// [`path_problem`]) and `body`.
fn check_envelope(output: Value) -> Result<OutboundRequest, Violations> {
    let Value::Object(mut map) = output else {
        return Err(Violations {
            violations: vec![violation(
                "",
                "type",
                "the envelope must be an object {method, path, body}",
            )],
            total: 1,
        });
    };
    let mut found = Vec::new();
    for key in map.keys() {
        if !matches!(key.as_str(), "method" | "path" | "body") {
            found.push(violation(
                &format!("/{}", key.replace('~', "~0").replace('/', "~1")),
                "additionalProperties",
                "the envelope takes only method, path and body",
            ));
        }
    }
    let method = match map.remove("method") {
        Some(Value::String(m)) if OUTBOUND_METHODS.contains(&m.as_str()) => Some(m),
        Some(_) => {
            found.push(violation(
                "/method",
                "enum",
                format!("the method must be one of {}", OUTBOUND_METHODS.join(", ")),
            ));
            None
        }
        None => {
            found.push(violation(
                "",
                "required",
                "\"method\" is a required property",
            ));
            None
        }
    };
    let path = match map.remove("path") {
        Some(Value::String(p)) => match path_problem(&p) {
            None => Some(p),
            Some(problem) => {
                found.push(violation("/path", "format", problem));
                None
            }
        },
        Some(_) => {
            found.push(violation("/path", "type", "the path must be a string"));
            None
        }
        None => {
            found.push(violation("", "required", "\"path\" is a required property"));
            None
        }
    };
    let body = map.remove("body");
    if body.is_none() {
        found.push(violation("", "required", "\"body\" is a required property"));
    }
    match (method, path, body) {
        (Some(method), Some(path), Some(body)) if found.is_empty() => {
            Ok(OutboundRequest { method, path, body })
        }
        _ => Err(Violations {
            total: found.len(),
            violations: found.into_iter().take(MAX_LISTED_VIOLATIONS).collect(),
        }),
    }
}

/// What is wrong with a request path, if anything. It must be an absolute path (not `//`,
/// which would name a host) with an optional query, made of URI characters only: every other
/// byte percent-encoded (jq's `@uri`), every `%` starting an escape, no fragment. A `.` or
/// `..` segment is refused too: `@uri` leaves dots alone, and a client or proxy normalising
/// `/items/{seller}/..` would call another resource than the one the mapping meant.
pub fn path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') || path.starts_with("//") {
        return Some("the path must start with a single '/'");
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return Some("a '%' in the path must start a percent-encoded byte (%XX)");
            }
            i += 3;
            continue;
        }
        let allowed = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?".contains(&b);
        if !allowed {
            return Some(
                "the path holds a character that must be percent-encoded (use @uri on every \
                 value put in it)",
            );
        }
        i += 1;
    }
    let route = path.split('?').next().unwrap_or_default();
    if route
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Some("the path has a '.' or '..' segment");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(channel: &str, operation: &str, source: &str) -> OutboundMapping {
        OutboundMapping::compile(channel, operation, source, Path::new("test.jq"))
            .expect("compiles")
    }

    #[test]
    fn every_body_schema_parses_compiles_and_is_self_contained() {
        for channel in OUTBOUND_CHANNELS {
            for operation in OUTBOUND_OPERATIONS {
                let schema = outbound_body_schema(channel, operation)
                    .unwrap_or_else(|| panic!("{channel}/{operation} has a schema"));
                assert!(schema.is_object(), "{channel}/{operation} parses");
                assert!(
                    outbound_body_validator(channel, operation).is_some(),
                    "{channel}/{operation} compiles"
                );
                let text = schema.to_string();
                for (at, _) in text.match_indices("\"$ref\":\"") {
                    let target = &text[at + 8..];
                    assert!(
                        target.starts_with('#'),
                        "{channel}/{operation}: a $ref to another file: {}",
                        &target[..target.find('"').unwrap_or(target.len())]
                    );
                }
            }
        }
        assert!(outbound_body_schema("erp", "shipment").is_none());
        assert!(outbound_body_schema("amazon", "order").is_none());
    }

    #[test]
    fn mappings_are_shareable_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<OutboundMapping>();
    }

    #[test]
    fn a_valid_request_comes_back_checked() {
        let mapping = compile(
            "walmart",
            "inventory",
            r#"{method: "PUT", path: "/v3/inventory?sku=\(.sku | @uri)",
                body: {sku: .sku, quantity: {unit: "EACH", amount: .n}}}"#,
        );
        let request = mapping
            .apply(json!({"sku": "A B/1", "n": 7}))
            .expect("valid");
        assert_eq!(
            request,
            OutboundRequest {
                method: "PUT".into(),
                path: "/v3/inventory?sku=A%20B%2F1".into(),
                body: json!({"sku": "A B/1", "quantity": {"unit": "EACH", "amount": 7}}),
            }
        );
        assert_eq!(mapping.name(), "walmart/outbound/inventory");
        assert_eq!(
            request.to_value(),
            json!({"method": "PUT", "path": "/v3/inventory?sku=A%20B%2F1",
                   "body": {"sku": "A B/1", "quantity": {"unit": "EACH", "amount": 7}}})
        );
    }

    #[test]
    fn a_bad_envelope_is_a_mapping_error_listing_every_problem() {
        let mapping = compile(
            "walmart",
            "inventory",
            r#"{method: "GET", path: "/v3/inventory?sku=\(.sku)", extra: 1}"#,
        );
        let err = mapping.apply(json!({"sku": "A B"})).expect_err("invalid");
        assert!(!err.is_rejection());
        let TransformError::InvalidRequest {
            mapping,
            part,
            violations,
        } = &err
        else {
            panic!("expected InvalidRequest, got {err:?}");
        };
        assert_eq!(
            (mapping.as_str(), *part),
            ("walmart/outbound/inventory", "envelope")
        );
        let found: Vec<(&str, &str)> = violations
            .violations
            .iter()
            .map(|v| (v.pointer.as_str(), v.keyword.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("/extra", "additionalProperties"),
                ("/method", "enum"),
                ("/path", "format"),
                ("", "required"),
            ]
        );
        assert!(
            err.to_string().contains("invalid request envelope"),
            "{err}"
        );
        let not_object = compile("walmart", "inventory", "[1]");
        assert!(matches!(
            not_object.apply(json!(null)),
            Err(TransformError::InvalidRequest {
                part: "envelope",
                ..
            })
        ));
    }

    #[test]
    fn a_body_off_its_schema_is_a_mapping_error_pointing_into_the_body() {
        let mapping = compile(
            "walmart",
            "inventory",
            r#"{method: "PUT", path: "/v3/inventory?sku=A",
                body: {sku: "A", quantity: {unit: "EACH", amount: "7"}}}"#,
        );
        let err = mapping.apply(json!(null)).expect_err("invalid body");
        let TransformError::InvalidRequest {
            part, violations, ..
        } = &err
        else {
            panic!("expected InvalidRequest, got {err:?}");
        };
        assert_eq!(*part, "body");
        assert_eq!(violations.violations[0].pointer, "/body/quantity/amount");
        assert!(!err.is_rejection());
    }

    #[test]
    fn rejections_and_failures_keep_their_kind() {
        let mapping = compile(
            "ebay",
            "inventory",
            r#"if .delta then reject("a delta item") else .x[] end"#,
        );
        let rejected = mapping.apply(json!({"delta": true})).expect_err("rejected");
        assert!(rejected.is_rejection());
        assert_eq!(rejected.mapping(), "ebay/outbound/inventory");
        assert!(matches!(
            mapping.apply(json!({"x": []})),
            Err(TransformError::NoOutput { .. })
        ));
        assert!(matches!(
            mapping.apply(json!({"x": 1})),
            Err(TransformError::Failed { .. })
        ));
    }

    #[test]
    fn unknown_operations_channels_and_syntax_errors_are_load_errors() {
        let at = |channel: &str, operation: &str, source: &str| {
            OutboundMapping::compile(channel, operation, source, Path::new("x/outbound/y.jq"))
                .expect_err("refused")
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        let unknown_op = at("amazon", "order", ".");
        assert!(
            unknown_op[0].starts_with("x/outbound/y.jq: no outbound operation is called \"order\""),
            "{unknown_op:?}"
        );
        let unknown_channel = at("erp", "shipment", ".");
        assert!(
            unknown_channel[0].contains("no outbound body schema for channel \"erp\""),
            "{unknown_channel:?}"
        );
        let syntax = at("amazon", "shipment", "{\n  method: (1 +\n}");
        assert!(
            syntax.iter().any(|e| e.starts_with("x/outbound/y.jq:3:")),
            "{syntax:?}"
        );
    }

    #[test]
    fn paths_hold_only_uri_characters() {
        for good in [
            "/orders/v0/orders/902-1/shipmentConfirmation",
            "/listings/2021-08-01/items/A1/SKU%2F1?marketplaceIds=ATVPDKIKX0DER",
            "/v3/inventory?sku=a%20b",
            "/admin/api/2026-07/fulfillments.json",
            "/items/a.b/..x",
        ] {
            assert_eq!(path_problem(good), None, "{good}");
        }
        for bad in [
            "orders/1",
            "//evil.example/x",
            "/v3/inventory?sku=a b",
            "/items/é",
            "/items/a#frag",
            "/items/100%",
            "/items/%zz",
            "/items/seller/../other",
            "/items/./x",
            "/items/\n",
        ] {
            assert!(path_problem(bad).is_some(), "{bad:?}");
        }
    }
}
