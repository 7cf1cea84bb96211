//! The ERP's own error answers: one enum, one status and code per case, one JSON shape.

use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
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
    SimulatedFailure {
        status: StatusCode,
        retry_after: Option<u64>,
    },
    #[error(
        "a request with this Idempotency-Key is still being processed; retry after it completes"
    )]
    IdempotencyKeyInUse,
    #[error("invalid behaviour: {0}")]
    InvalidBehaviour(String),
    #[error("invalid script: {0}")]
    InvalidScript(String),
}

impl ErpError {
    fn status(&self) -> StatusCode {
        match self {
            ErpError::InvalidDocument(_)
            | ErpError::InvalidBehaviour(_)
            | ErpError::InvalidScript(_)
            | ErpError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ErpError::NotFound(_) => StatusCode::NOT_FOUND,
            ErpError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ErpError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ErpError::SimulatedFailure { status, .. } => *status,
            ErpError::IdempotencyKeyInUse => StatusCode::CONFLICT,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ErpError::InvalidDocument(_) => "INVALID_DOCUMENT",
            ErpError::NotFound(_) => "NOT_FOUND",
            ErpError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ErpError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ErpError::BodyRead(_) => "BODY_READ_FAILED",
            ErpError::SimulatedFailure { .. } => "SIMULATED_FAILURE",
            ErpError::IdempotencyKeyInUse => "IDEMPOTENCY_KEY_IN_USE",
            ErpError::InvalidBehaviour(_) => "INVALID_BEHAVIOUR",
            ErpError::InvalidScript(_) => "INVALID_SCRIPT",
        }
    }

    pub(crate) fn to_response(&self) -> Response<Bytes> {
        let mut response = json_response(
            self.status(),
            &json!({"error": {"code": self.code(), "message": self.to_string()}}),
        );
        if let ErpError::SimulatedFailure {
            retry_after: Some(seconds),
            ..
        } = self
        {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(*seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_failure_keeps_the_configured_status_and_retry_after() {
        let response = ErpError::SimulatedFailure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        }
        .to_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            "application/json"
        );
        assert!(!response.headers().contains_key(RETRY_AFTER));
        let response = ErpError::SimulatedFailure {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(7),
        }
        .to_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "7");
    }
}
