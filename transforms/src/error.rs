//! Why a mapping (inbound or outbound) could not turn an input into its output: the one error
//! type of the catalog's mappings, shared by the golden cases that compare against it.

use crate::canonical_schemas::Violations;
use crate::value::NotJson;

/// Why a mapping could not turn an input into a canonical document.
///
/// Only [`TransformError::Rejected`] blames the input; every other variant is a fault of the
/// mapping (answer it as a server error and fix the mapping: a malformed canonical document
/// is never returned).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// The mapping refused the input (`reject(...)`): a client error.
    #[error("{mapping}: the input was rejected: {message}")]
    Rejected { mapping: String, message: String },
    /// jq raised an error the mapping did not turn into a rejection.
    #[error("{mapping}: the mapping failed: {message}")]
    Failed { mapping: String, message: String },
    /// The mapping produced nothing.
    #[error("{mapping}: the mapping produced no output")]
    NoOutput { mapping: String },
    /// The mapping produced more than one document.
    #[error("{mapping}: the mapping produced more than one output")]
    SeveralOutputs { mapping: String },
    /// The output cannot be JSON (NaN, non-string keys, bytes).
    #[error("{mapping}: the mapping produced a value that is not JSON: {source}")]
    NotJson {
        mapping: String,
        #[source]
        source: NotJson,
    },
    /// The output is JSON but not a valid canonical document: a bug in the mapping.
    #[error("{mapping}: the mapping produced an invalid canonical {document}: {violations}")]
    InvalidOutput {
        mapping: String,
        document: &'static str,
        violations: Violations,
    },
    /// An outbound mapping's output is not a valid request: its envelope (`part` is
    /// `"envelope"`) or its body against the operation's body schema (`"body"`; pointers
    /// start with `/body`). A bug in the mapping.
    #[error("{mapping}: the mapping produced an invalid request {part}: {violations}")]
    InvalidRequest {
        mapping: String,
        part: &'static str,
        violations: Violations,
    },
}

impl TransformError {
    /// True when the input is to blame (answer 4xx); false for faults of the mapping (5xx).
    pub fn is_rejection(&self) -> bool {
        matches!(self, TransformError::Rejected { .. })
    }

    /// The mapping that failed, `<channel>/<document>`.
    pub fn mapping(&self) -> &str {
        match self {
            TransformError::Rejected { mapping, .. }
            | TransformError::Failed { mapping, .. }
            | TransformError::NoOutput { mapping }
            | TransformError::SeveralOutputs { mapping }
            | TransformError::NotJson { mapping, .. }
            | TransformError::InvalidOutput { mapping, .. }
            | TransformError::InvalidRequest { mapping, .. } => mapping,
        }
    }
}
