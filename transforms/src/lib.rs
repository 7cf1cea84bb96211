//! The canonical retail model (its JSON Schemas) and the engine that maps channel payloads to it.
//!
//! - [`canonical_schemas`]: the canonical schemas (`schemas/v1/*.schema.json`, embedded) and
//!   [`SchemaValidator`], which compiles any JSON Schema once and lists every violation of an
//!   instance with its JSON Pointer, keyword and message, capped and counted.
//! - [`precheck`]: size, nesting depth, UTF-8 and JSON syntax of a raw body, checked before
//!   (or while) it is parsed.
//! - [`Catalog`] / [`Mapping`]: the jq mappings of `mappings/<channel>/<document>.jq`, compiled
//!   once; [`Mapping::apply`] maps a channel document and validates the result against the
//!   canonical schema, so it returns a valid canonical document or an error, never a malformed
//!   document. Golden cases sit next to each mapping and run with
//!   [`Mapping::run_golden_cases`].
//! - [`OutboundMapping`]: the outbound mappings of `mappings/<channel>/outbound/<operation>.jq`
//!   (in the same [`Catalog`]), which turn a canonical shipment or stock level into a
//!   marketplace's request ([`OutboundRequest`]), checked against the operation's body schema
//!   (`schemas/outbound/<channel>/<operation>.schema.json`, [`outbound_body_schema`]).
//! - [`decimal`], [`time`], [`codes`], [`status`]: the exact-decimal, timestamp, country and
//!   status helpers the mappings call as jq functions, usable from Rust too.
//! - [`json_text`]: JSON text read into and written from a `serde_json::Value`, the same
//!   values and bytes as serde_json's, with less work per object member and per plain string.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! let catalog = transforms::Catalog::load(Path::new("transforms/mappings"))
//!     .map_err(|errors| format!("{} mapping errors", errors.len()))?;
//! let mapping = catalog.mapping("walmart", "order").ok_or("no walmart/order")?;
//! let order = mapping.apply(serde_json::from_str(r#"{"purchaseOrderId": "1"}"#)?);
//! // A Walmart order without lines is refused as the client's fault:
//! assert!(order.is_err_and(|err| err.is_rejection()));
//! # Ok(())
//! # }
//! ```
//!
//! The workspace builds serde_json with `arbitrary_precision`: numbers keep their literal text
//! from the request bytes to the mapping and back, which is what keeps money and 64-bit ids
//! exact.

pub mod canonical_schemas;
pub mod catalog;
pub mod codes;
mod compiled;
pub mod decimal;
mod engine;
pub mod error;
pub mod golden;
pub mod json_text;
mod mapping_files;
mod natives;
mod objects;
pub mod outbound;
pub mod precheck;
pub mod status;
pub mod time;
mod value;

pub use canonical_schemas::{
    CANONICAL_BASE, CANONICAL_DOCUMENTS, SchemaError, SchemaValidator, Violation, Violations,
    canonical_schema, canonical_validator,
};
pub use catalog::{Catalog, Mapping, TransformError};
pub use golden::{GoldenCase, GoldenOutcome};
pub use mapping_files::LoadError;
pub use outbound::{
    OUTBOUND_CHANNELS, OUTBOUND_OPERATIONS, OutboundMapping, OutboundRequest, outbound_body_schema,
    outbound_body_validator,
};
pub use precheck::{PrecheckError, PrecheckLimits, parse_checked, precheck};
pub use value::NotJson;
