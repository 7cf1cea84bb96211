//! The body schemas of the eight outbound endpoints: the same files the gateway checks its
//! mapped bodies against (transforms/schemas/outbound/), compiled once per simulator.

use jsonschema::Validator;
use serde_json::Value;

use crate::channel::{Channel, Operation};

macro_rules! schema {
    ($channel:literal, $operation:literal) => {
        include_str!(concat!(
            "../../transforms/schemas/outbound/",
            $channel,
            "/",
            $operation,
            ".schema.json"
        ))
    };
}

/// The schema texts, by channel then operation (the order of `Channel::ALL`, `Operation::ALL`).
const SOURCES: [[&str; 2]; 4] = [
    [
        schema!("amazon", "shipment"),
        schema!("amazon", "inventory"),
    ],
    [
        schema!("walmart", "shipment"),
        schema!("walmart", "inventory"),
    ],
    [schema!("ebay", "shipment"), schema!("ebay", "inventory")],
    [
        schema!("shopify", "shipment"),
        schema!("shopify", "inventory"),
    ],
];

/// At most this many violations are listed in a 400.
const MAX_LISTED: usize = 10;

/// The eight compiled validators.
pub(crate) struct Schemas {
    validators: Vec<Validator>,
}

impl Schemas {
    /// Compiles all eight; an error names the schema that does not parse or compile.
    pub(crate) fn compile() -> Result<Schemas, String> {
        let mut validators = Vec::new();
        for channel in Channel::ALL {
            for operation in Operation::ALL {
                let source = SOURCES[channel.index()][operation.index()];
                let name = format!("{channel}/{operation}.schema.json");
                let schema: Value =
                    serde_json::from_str(source).map_err(|err| format!("{name}: {err}"))?;
                let mut options = jsonschema::options();
                if schema.get("$schema").is_none() {
                    options = options.with_draft(jsonschema::Draft::Draft202012);
                }
                let validator = options
                    .build(&schema)
                    .map_err(|err| format!("{name}: {err}"))?;
                validators.push(validator);
            }
        }
        Ok(Schemas { validators })
    }

    /// The violations of `body` (`pointer: message`, at most ten), empty if it is valid.
    pub(crate) fn check(
        &self,
        channel: Channel,
        operation: Operation,
        body: &Value,
    ) -> Vec<String> {
        let validator =
            &self.validators[channel.index() * Operation::ALL.len() + operation.index()];
        if validator.is_valid(body) {
            return Vec::new();
        }
        let mut errors: Vec<String> = validator
            .iter_errors(body)
            .take(MAX_LISTED)
            .map(|err| format!("{}: {}", err.instance_path(), err.masked()))
            .collect();
        if errors.is_empty() {
            errors.push("the body does not match the schema".to_owned());
        }
        errors
    }
}
