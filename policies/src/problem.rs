//! RFC 9457 problem details and `Reply`, the value a policy answers with instead of forwarding
//! (a rejection, or a response it already has, such as an idempotent replay).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, Value};

/// The namespace of the gateway's problem types; each is documented in docs/problems.md.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:gateway:problem:";

/// The media type of problem documents.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// A problem details document (RFC 9457) before the gateway adds the request id.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// The problem type's short name, rendered as `urn:gateway:problem:<slug>`. Empty renders
    /// `about:blank`, whose title is the status phrase.
    pub slug: &'static str,
    /// A short summary that does not change between occurrences.
    pub title: Cow<'static, str>,
    /// What happened this time. Never contains a secret or a token.
    pub detail: Option<String>,
    /// Extension members, such as the list of violations.
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// A problem of a gateway-defined type.
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: impl Into<Cow<'static, str>>,
    ) -> Self {
        Problem {
            status,
            slug,
            title: title.into(),
            detail: None,
            extensions: Map::new(),
        }
    }

    /// A plain HTTP problem (`about:blank`), titled with the status phrase.
    pub fn status(status: StatusCode) -> Self {
        Problem::new(status, "", status.canonical_reason().unwrap_or("Error"))
    }

    /// Sets the detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds an extension member.
    pub fn with_extension(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    /// The `type` member.
    pub fn type_uri(&self) -> Cow<'static, str> {
        if self.slug.is_empty() {
            Cow::Borrowed("about:blank")
        } else {
            Cow::Owned(format!("{PROBLEM_TYPE_PREFIX}{}", self.slug))
        }
    }

    /// Serializes the document, adding `instance` (the request path) and `request_id`.
    pub fn to_json(&self, instance: &str, request_id: &str) -> Bytes {
        self.to_json_traced(instance, request_id, None)
    }

    /// Serializes the document, adding `instance`, `request_id` and, when there is one, the
    /// `trace_id` (32 hex digits) that finds the request's trace.
    pub fn to_json_traced(
        &self,
        instance: &str,
        request_id: &str,
        trace_id: Option<&str>,
    ) -> Bytes {
        let mut doc = Map::with_capacity(7 + self.extensions.len());
        doc.insert("type".into(), Value::String(self.type_uri().into_owned()));
        doc.insert("title".into(), Value::String(self.title.to_string()));
        doc.insert("status".into(), Value::from(self.status.as_u16()));
        if let Some(detail) = &self.detail {
            doc.insert("detail".into(), Value::String(detail.clone()));
        }
        doc.insert("instance".into(), Value::String(instance.to_owned()));
        doc.insert("request_id".into(), Value::String(request_id.to_owned()));
        if let Some(t) = trace_id {
            doc.insert("trace_id".into(), Value::String(t.to_owned()));
        }
        for (k, v) in &self.extensions {
            doc.entry(k.clone()).or_insert_with(|| v.clone());
        }
        // Serializing a map of strings and numbers cannot fail.
        Bytes::from(serde_json::to_vec(&Value::Object(doc)).unwrap_or_default())
    }
}

/// What a reply carries as its body.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBody {
    /// A problem document, completed with the request id when sent.
    Problem(Problem),
    /// A ready body, such as a stored response replayed.
    Bytes {
        /// Its `Content-Type`, if any.
        content_type: Option<HeaderValue>,
        /// The bytes.
        body: Bytes,
    },
}

/// A response a policy gives instead of letting the request go upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers to send with it (for example `WWW-Authenticate` or `Retry-After`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: ReplyBody,
    /// Why, as a short label for metrics and logs (`malformed_json`, `replayed`...).
    pub reason: &'static str,
    /// The policy that answered; filled in by the chain.
    pub policy: Option<Arc<str>>,
}

impl Reply {
    /// A rejection carrying a problem document.
    pub fn problem(problem: Problem, reason: &'static str) -> Self {
        Reply {
            status: problem.status,
            headers: Vec::new(),
            body: ReplyBody::Problem(problem),
            reason,
            policy: None,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Whether this reply refuses the request (as opposed to answering it, like a replay).
    pub fn is_rejection(&self) -> bool {
        matches!(self.body, ReplyBody::Problem(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_renders_rfc9457_members_and_request_id() {
        let p = Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON body",
        )
        .with_detail("expected value at line 1 column 2")
        .with_extension("hint", "check the payload");
        let doc: Value =
            serde_json::from_slice(&p.to_json("/channels/amazon/orders", "r-1")).unwrap();
        assert_eq!(doc["type"], "urn:gateway:problem:malformed-json");
        assert_eq!(doc["title"], "Malformed JSON body");
        assert_eq!(doc["status"], 400);
        assert_eq!(doc["detail"], "expected value at line 1 column 2");
        assert_eq!(doc["instance"], "/channels/amazon/orders");
        assert_eq!(doc["request_id"], "r-1");
        assert_eq!(doc["hint"], "check the payload");
    }

    #[test]
    fn plain_status_problems_are_about_blank() {
        let p = Problem::status(StatusCode::NOT_FOUND);
        let doc: Value = serde_json::from_slice(&p.to_json("/x", "r")).unwrap();
        assert_eq!(doc["type"], "about:blank");
        assert_eq!(doc["title"], "Not Found");
        assert!(doc.get("detail").is_none());
    }

    #[test]
    fn extensions_cannot_override_standard_members() {
        let p = Problem::status(StatusCode::BAD_GATEWAY).with_extension("status", 200);
        let doc: Value = serde_json::from_slice(&p.to_json("/x", "r")).unwrap();
        assert_eq!(doc["status"], 502);
    }
}
