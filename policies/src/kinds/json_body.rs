//! `json_body`: the request body must be well-formed UTF-8 JSON, not too deeply nested, and
//! (optionally) declared as JSON. The foundation's built-in body policy.

use bytes::Bytes;
use http::{StatusCode, header::CONTENT_TYPE};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{KindContext, PolicyKind};
use crate::pipeline::{ExchangeState, Flow, Phases, RequestView};
use crate::problem::{Problem, Reply};

/// Settings of a `json_body` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonBodySpec {
    /// Require `Content-Type: application/json` (or any `+json` type); others get 415.
    #[serde(default = "yes")]
    pub require_content_type: bool,
    /// Deepest nesting of arrays and objects accepted; deeper gets 400. At most 128.
    #[serde(default = "default_max_depth")]
    #[schemars(range(min = 1, max = 128))]
    pub max_depth: u32,
    /// Accept an empty body (it is then not JSON, and passes).
    #[serde(default)]
    pub allow_empty: bool,
}

fn yes() -> bool {
    true
}

fn default_max_depth() -> u32 {
    64
}

/// The compiled `json_body` policy.
#[derive(Debug)]
pub struct JsonBody {
    require_content_type: bool,
    max_depth: u32,
    allow_empty: bool,
}

impl PolicyKind for JsonBody {
    type Spec = JsonBodySpec;
    type Metrics = ();

    /// Compiles the spec.
    fn compile(spec: &JsonBodySpec, cx: &mut KindContext<'_, '_, Self>) -> Option<JsonBody> {
        if spec.max_depth == 0 || spec.max_depth > 128 {
            cx.error("/max_depth", "max_depth must be between 1 and 128");
            return None;
        }
        Some(JsonBody {
            require_content_type: spec.require_content_type,
            max_depth: spec.max_depth,
            allow_empty: spec.allow_empty,
        })
    }
}

/// Whether a `Content-Type` value names JSON (`application/json`, `application/x+json`).
pub fn is_json_media_type(value: &[u8]) -> bool {
    let essence = value.split(|b| *b == b';').next().unwrap_or_default();
    let essence = essence.trim_ascii();
    let Some(sub) = essence
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case(b"application/"))
        .map(|_| &essence[12..])
    else {
        return false;
    };
    sub.eq_ignore_ascii_case(b"json")
        || (sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// Whether a JSON text nests deeper than `limit` (a byte scan, no tree is built).
pub fn nesting_depth_exceeds(body: &[u8], limit: u32) -> bool {
    transforms::precheck::first_bracket_past_depth(body, limit as usize).is_some()
}

fn reject(
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    reason: &'static str,
) -> Flow {
    Flow::Break(Reply::problem(
        Problem::new(status, slug, title).with_detail(detail),
        reason,
    ))
}

impl Phases for JsonBody {
    const PHASES: u8 = crate::pipeline::phase::REQUEST | crate::pipeline::phase::REQUEST_BODY;

    fn needs_body(&self) -> bool {
        true
    }

    async fn on_request(&self, req: &RequestView<'_>, _state: &mut ExchangeState) -> Flow {
        if self.require_content_type {
            let ok = req
                .headers
                .get(CONTENT_TYPE)
                .is_some_and(|v| is_json_media_type(v.as_bytes()));
            if !ok {
                return reject(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "Unsupported media type",
                    "this route takes application/json bodies".into(),
                    "content_type",
                );
            }
        }
        Flow::Continue(())
    }

    async fn on_request_body(
        &self,
        _req: &RequestView<'_>,
        _state: &mut ExchangeState,
        body: &mut Bytes,
    ) -> Flow {
        if body.is_empty() {
            if self.allow_empty {
                return Flow::Continue(());
            }
            return reject(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON body",
                "the request body is empty; this route takes a JSON document".into(),
                "empty_body",
            );
        }
        if nesting_depth_exceeds(body, self.max_depth) {
            return reject(
                StatusCode::BAD_REQUEST,
                "json-too-deep",
                "JSON nested too deeply",
                format!(
                    "the body nests arrays and objects deeper than {} levels",
                    self.max_depth
                ),
                "too_deep",
            );
        }
        // serde_json skips ignored strings without checking their UTF-8, so check it first.
        let text = match std::str::from_utf8(body) {
            Ok(t) => t,
            Err(e) => {
                return reject(
                    StatusCode::BAD_REQUEST,
                    "malformed-json",
                    "Malformed JSON body",
                    format!(
                        "the body is not UTF-8 (invalid byte at offset {})",
                        e.valid_up_to()
                    ),
                    "not_utf8",
                );
            }
        };
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
            let what = match e.classify() {
                serde_json::error::Category::Eof => "the body ends before the JSON document does",
                _ => "the body is not well-formed JSON",
            };
            return reject(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON body",
                format!("{what}: {e}"),
                "malformed_json",
            );
        }
        Flow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::PathParams;
    use http::{HeaderMap, HeaderValue, Method};

    fn policy() -> JsonBody {
        JsonBody {
            require_content_type: true,
            max_depth: 4,
            allow_empty: false,
        }
    }

    async fn body_flow(p: &JsonBody, body: &str) -> Flow {
        let headers = HeaderMap::new();
        let params = PathParams::default();
        let req = RequestView {
            method: &Method::POST,
            path: "/x",
            query: None,
            headers: &headers,
            params: &params,
        };
        let mut body = Bytes::copy_from_slice(body.as_bytes());
        p.on_request_body(&req, &mut ExchangeState::default(), &mut body)
            .await
    }

    fn reason(flow: Flow) -> Option<(&'static str, u16)> {
        match flow {
            Flow::Break(r) => Some((r.reason, r.status.as_u16())),
            Flow::Continue(()) => None,
        }
    }

    #[tokio::test]
    async fn well_formed_json_passes_and_malformed_is_400() {
        let p = policy();
        assert_eq!(
            reason(body_flow(&p, r#"{"a":[1,2,{"b":"}"}]}"#).await),
            None
        );
        assert_eq!(
            reason(body_flow(&p, r#"{"a":"#).await),
            Some(("malformed_json", 400))
        );
        assert_eq!(
            reason(body_flow(&p, r#"{"a":1}}"#).await),
            Some(("malformed_json", 400))
        );
        assert_eq!(reason(body_flow(&p, "").await), Some(("empty_body", 400)));
    }

    #[tokio::test]
    async fn invalid_utf8_is_rejected() {
        let p = policy();
        let headers = HeaderMap::new();
        let params = PathParams::default();
        let req = RequestView {
            method: &Method::POST,
            path: "/x",
            query: None,
            headers: &headers,
            params: &params,
        };
        let mut body = Bytes::from_static(b"{\"a\":\"\xff\"}");
        let flow = p
            .on_request_body(&req, &mut ExchangeState::default(), &mut body)
            .await;
        assert_eq!(reason(flow), Some(("not_utf8", 400)));
    }

    #[tokio::test]
    async fn depth_is_limited_and_strings_do_not_count() {
        let p = policy();
        assert_eq!(reason(body_flow(&p, "[[[[1]]]]").await), None);
        assert_eq!(
            reason(body_flow(&p, "[[[[[1]]]]]").await),
            Some(("too_deep", 400))
        );
        assert_eq!(reason(body_flow(&p, r#"["[[[[[[[[\"]]]]"]"#).await), None);
    }

    #[tokio::test]
    async fn content_type_must_be_json() {
        let p = policy();
        let params = PathParams::default();
        for (ct, ok) in [
            (Some("application/json"), true),
            (Some("application/json; charset=utf-8"), true),
            (Some("Application/vnd.amazon.order+JSON"), true),
            (Some("text/plain"), false),
            (Some("application/jsonp"), false),
            (None, false),
        ] {
            let mut headers = HeaderMap::new();
            if let Some(ct) = ct {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            let req = RequestView {
                method: &Method::POST,
                path: "/x",
                query: None,
                headers: &headers,
                params: &params,
            };
            let flow = p.on_request(&req, &mut ExchangeState::default()).await;
            assert_eq!(reason(flow).is_none(), ok, "{ct:?}");
        }
    }
}
