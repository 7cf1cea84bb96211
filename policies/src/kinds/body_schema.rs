//! `schema`: validates the request body against a JSON Schema chosen per channel, after cheap
//! checks (nesting depth, UTF-8, JSON syntax) made before any tree is built. An invalid body is
//! answered 422 with every violation (JSON Pointer, keyword, message; capped and counted), and
//! never reaches the upstream. Optionally validates the upstream's successful answers too.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use transforms::{PrecheckError, PrecheckLimits, SchemaValidator, Violations};

use super::{KindContext, PolicyKind};
use crate::pipeline::{ExchangeState, Flow, ParsedBody, Phases, RequestView, ResponseView};
use crate::problem::{Problem, Reply};

/// Settings of a `schema` policy. A schema is a file path (relative to this policy file) or
/// `canonical:<document>` for one of the canonical retail model's schemas (`canonical:order`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaSpec {
    /// The schema of each channel's documents on this route, by channel name.
    #[serde(default)]
    pub channels: BTreeMap<String, String>,
    /// The schema for requests of any channel not listed (and routes without a channel).
    /// Without it, a channel with no schema here is answered 404.
    #[serde(default)]
    pub default: Option<String>,
    /// Deepest nesting of arrays and objects accepted (checked before parsing); deeper gets 400.
    #[serde(default = "default_max_depth")]
    #[schemars(range(min = 1, max = 128))]
    pub max_depth: u32,
    /// How many violations a 422 lists; all of them are counted in `total`.
    #[serde(default = "default_max_errors")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_errors: u32,
    /// Also validate the upstream's successful (2xx) answers against this schema; an invalid
    /// answer is replaced by a 502 problem.
    #[serde(default)]
    pub response: Option<String>,
}

fn default_max_depth() -> u32 {
    64
}

fn default_max_errors() -> u32 {
    20
}

/// A compiled schema with the name it was given (for details and logs).
#[derive(Debug)]
struct NamedSchema {
    name: String,
    validator: Arc<SchemaValidator>,
}

/// The compiled `schema` policy.
#[derive(Debug)]
pub struct Schema {
    by_channel: Vec<Option<Arc<NamedSchema>>>,
    default: Option<Arc<NamedSchema>>,
    response: Option<NamedSchema>,
    limits: PrecheckLimits,
    max_errors: usize,
}

/// Loads `canonical:<document>` or a schema file relative to the policy file.
pub fn load_schema(reference: &str, base_dir: &Path) -> Result<Arc<SchemaValidator>, String> {
    if let Some(doc) = reference.strip_prefix("canonical:") {
        return transforms::canonical_schema(doc)
            .ok_or_else(|| {
                format!(
                    "no canonical schema {doc:?} (known: {})",
                    transforms::CANONICAL_DOCUMENTS.join(", ")
                )
            })
            .and_then(|s| SchemaValidator::compile(s).map_err(|e| e.to_string()))
            .map(Arc::new);
    }
    let path = base_dir.join(reference);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read schema {}: {e}", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| format!("schema {} is not JSON: {e}", path.display()))?;
    SchemaValidator::compile(&value)
        .map(Arc::new)
        .map_err(|e| format!("schema {}: {e}", path.display()))
}

impl PolicyKind for Schema {
    type Spec = SchemaSpec;
    type Metrics = ();

    /// Compiles the spec, loading and compiling every schema once.
    fn compile(spec: &SchemaSpec, cx: &mut KindContext<'_, '_, Self>) -> Option<Schema> {
        let mut ok = true;
        type Cx<'c, 'a, 'm> = &'c mut KindContext<'a, 'm, Schema>;
        let load = |cx: Cx<'_, '_, '_>, field: String, reference: &str| {
            match load_schema(reference, cx.base_dir) {
                Ok(v) => Some(Arc::new(NamedSchema {
                    name: reference.to_owned(),
                    validator: v,
                })),
                Err(msg) => {
                    cx.error(&field, msg);
                    None
                }
            }
        };
        let mut by_channel = vec![None; cx.channels.names().len()];
        for (channel, reference) in &spec.channels {
            let field = format!("/channels/{channel}");
            match cx.channels.get(channel) {
                Some(c) => {
                    by_channel[c.index] = load(cx, field, reference);
                    ok &= by_channel[c.index].is_some();
                }
                None => {
                    let known = cx
                        .channels
                        .names()
                        .iter()
                        .map(|n| &**n)
                        .collect::<Vec<_>>()
                        .join(", ");
                    cx.error(
                        &field,
                        format!("{channel:?} is not a declared channel (declared: {known})"),
                    );
                    ok = false;
                }
            }
        }
        let default = spec
            .default
            .as_deref()
            .and_then(|r| load(cx, "/default".into(), r));
        ok &= spec.default.is_none() || default.is_some();
        let response = spec
            .response
            .as_deref()
            .and_then(|r| load(cx, "/response".into(), r))
            .and_then(|n| Arc::try_unwrap(n).ok());
        ok &= spec.response.is_none() || response.is_some();
        if spec.channels.is_empty() && spec.default.is_none() {
            cx.error("", "a schema policy needs `channels` or a `default` schema");
            ok = false;
        }
        ok.then_some(Schema {
            by_channel,
            default,
            response,
            limits: PrecheckLimits {
                max_bytes: usize::MAX,
                max_depth: spec.max_depth as usize,
            },
            max_errors: spec.max_errors as usize,
        })
    }
}

impl Schema {
    fn schema_for(&self, state: &ExchangeState) -> Option<&Arc<NamedSchema>> {
        state
            .channel
            .as_ref()
            .and_then(|c| self.by_channel.get(c.index).and_then(Option::as_ref))
            .or(self.default.as_ref())
    }
}

/// The reply to a body that failed the checks made before parsing.
pub fn precheck_reply(e: &PrecheckError) -> Reply {
    let (status, slug, title) = match e {
        PrecheckError::TooLarge { .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
        ),
        PrecheckError::TooDeep { .. } => (
            StatusCode::BAD_REQUEST,
            "json-too-deep",
            "JSON nested too deeply",
        ),
        PrecheckError::NotUtf8 { .. } | PrecheckError::NotJson { .. } => (
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON body",
        ),
    };
    Reply::problem(
        Problem::new(status, slug, title).with_detail(e.to_string()),
        e.reason(),
    )
}

/// The 422 of a document that violates its schema, listing the violations.
pub fn violations_reply(schema: &str, v: &Violations) -> Reply {
    let listed: Vec<Value> = v
        .violations
        .iter()
        .map(|x| json!({"pointer": x.pointer, "keyword": x.keyword, "message": x.message}))
        .collect();
    let detail = if v.total > listed.len() {
        format!(
            "{} violations of {schema}; the first {} are listed",
            v.total,
            listed.len()
        )
    } else {
        format!("{} violation(s) of {schema}", v.total)
    };
    Reply::problem(
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema-violation",
            "The document does not match its schema",
        )
        .with_detail(detail)
        .with_extension("violations", Value::Array(listed))
        .with_extension("total", v.total),
        "schema_violation",
    )
}

impl Phases for Schema {
    const PHASES: u8 = crate::pipeline::phase::REQUEST_BODY | crate::pipeline::phase::RESPONSE_BODY;

    fn needs_body(&self) -> bool {
        true
    }

    async fn on_request_body(
        &self,
        _req: &RequestView<'_>,
        state: &mut ExchangeState,
        body: &mut Bytes,
    ) -> Flow {
        let Some(schema) = self.schema_for(state).cloned() else {
            let channel = state
                .channel
                .as_ref()
                .map_or("(none)", |c| &*c.name)
                .to_owned();
            return Flow::Break(Reply::problem(
                Problem::new(
                    StatusCode::NOT_FOUND,
                    "no-schema",
                    "Not accepted from this channel",
                )
                .with_detail(format!("this route has no schema for channel {channel}")),
                "no_schema",
            ));
        };
        let value = match transforms::parse_checked(body, &self.limits) {
            Ok(v) => v,
            Err(e) => return Flow::Break(precheck_reply(&e)),
        };
        if let Err(v) = schema.validator.validate(&value, self.max_errors) {
            return Flow::Break(violations_reply(&schema.name, &v));
        }
        state.extensions.insert(ParsedBody::new(body, value));
        Flow::Continue(())
    }

    async fn on_response_body(
        &self,
        resp: &mut ResponseView<'_>,
        _state: &mut ExchangeState,
        body: &mut Bytes,
    ) -> Flow {
        let Some(schema) = &self.response else {
            return Flow::Continue(());
        };
        if !resp.status.is_success() {
            return Flow::Continue(());
        }
        let verdict = match transforms::json_text::parse_slice(body) {
            Ok(v) => schema
                .validator
                .validate(&v, self.max_errors)
                .map_err(|v| v.to_string()),
            Err(e) => Err(format!("not JSON: {e}")),
        };
        match verdict {
            Ok(()) => Flow::Continue(()),
            Err(why) => {
                tracing::warn!(schema = %schema.name, reason = %why, "upstream answer failed response validation");
                Flow::Break(Reply::problem(
                    Problem::new(
                        StatusCode::BAD_GATEWAY,
                        "upstream-invalid-answer",
                        "The upstream's answer is invalid",
                    )
                    .with_detail(format!(
                        "the upstream answered a document that does not match {}",
                        schema.name
                    )),
                    "invalid_response",
                ))
            }
        }
    }
}
