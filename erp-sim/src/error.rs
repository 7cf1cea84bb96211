//! The ERP's own error answers: one enum, one status and code per case, one JSON shape.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::response::json_response;

/// Everything the simulated ERP (or its control API) refuses, answered as
/// `{"error":{"code":..,"message":..}}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ErpError {
    #[error("the request body is not a JSON object: {0}")]
    InvalidDocument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("the request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    #[error("simulated failure")]
    SimulatedFailure(StatusCode),
    #[error("invalid behaviour: {0}")]
    InvalidBehaviour(String),
}

impl ErpError {
    fn status(&self) -> StatusCode {
        match self {
            ErpError::InvalidDocument(_) | ErpError::InvalidBehaviour(_) => StatusCode::BAD_REQUEST,
            ErpError::NotFound(_) => StatusCode::NOT_FOUND,
            ErpError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ErpError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ErpError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ErpError::SimulatedFailure(status) => *status,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ErpError::InvalidDocument(_) => "INVALID_DOCUMENT",
            ErpError::NotFound(_) => "NOT_FOUND",
            ErpError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ErpError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ErpError::BodyRead(_) => "BODY_READ_FAILED",
            ErpError::SimulatedFailure(_) => "SIMULATED_FAILURE",
            ErpError::InvalidBehaviour(_) => "INVALID_BEHAVIOUR",
        }
    }

    pub(crate) fn to_response(&self) -> Response<Full<Bytes>> {
        json_response(
            self.status(),
            &json!({"error": {"code": self.code(), "message": self.to_string()}}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_failure_keeps_the_configured_status() {
        let response = ErpError::SimulatedFailure(StatusCode::SERVICE_UNAVAILABLE).to_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            "application/json"
        );
    }
}
