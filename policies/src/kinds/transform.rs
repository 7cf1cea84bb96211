//! `transform`: maps the request body from the channel's dialect to the canonical retail model
//! with the channel's jq mapping (compiled once; its output validated against the canonical
//! schema before anything is forwarded), and maps the upstream's answer back: an ERP
//! acknowledgement to the canonical answer, an ERP error to problem+json.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use transforms::{Catalog, Mapping, PrecheckLimits, TransformError};

use super::{KindContext, PolicyKind};
use crate::kinds::body_schema::precheck_reply;
use crate::pipeline::{ExchangeState, Flow, ParsedBody, Phases, RequestView, ResponseView};
use crate::problem::{PROBLEM_CONTENT_TYPE, Problem, Reply};

/// Settings of a `transform` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformSpec {
    /// The mapping catalog: a folder with one sub-folder per channel holding
    /// `<document>.jq` mappings and their golden cases; relative to this policy file.
    pub mappings: String,
    /// The document this route carries (`order`, `inventory_adjustment`, `shipment`,
    /// `return`, `order_change`): the request body goes through `<channel>/<document>`.
    pub document: String,
    /// A version of the document's mappings (`v1`), for an older version of a route: a
    /// channel with a `<document>.<version>.jq` mapping uses it, the others their
    /// `<document>.jq`. Absent: every channel uses `<document>.jq`.
    #[serde(default)]
    pub version: Option<String>,
    /// The mapping of the upstream's successful answers (input `{status, body}`), e.g.
    /// `erp/ack`. Absent: the answer passes unchanged.
    #[serde(default)]
    pub answer: Option<String>,
    /// The mapping of the upstream's error answers (4xx/5xx) into a problem document, e.g.
    /// `erp/error`. Absent: errors pass unchanged.
    #[serde(default)]
    pub error: Option<String>,
    /// Deepest nesting of arrays and objects accepted (checked before parsing).
    #[serde(default = "default_max_depth")]
    #[schemars(range(min = 1, max = 128))]
    pub max_depth: u32,
}

fn default_max_depth() -> u32 {
    64
}

/// The total of a canonical order this request carries, in exact minor units of its currency,
/// left in [`ExchangeState::extensions`] by a `transform` of `document: order`: the gateway adds
/// it to its order-value counter once the document is accepted (not when it is refused, failed
/// or replayed). Absent when the total is missing or not exact in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderValue {
    /// ISO 4217 code (three uppercase ASCII letters).
    pub currency: [u8; 3],
    /// `totals.total.amount` in whole minor units (cents, yen, fils).
    pub minor_units: u64,
}

impl OrderValue {
    /// The value of a canonical order: its `totals.total`, when exact in minor units.
    pub fn of(order: &Value) -> Option<OrderValue> {
        let total = order.get("totals")?.get("total")?;
        let currency = total.get("currency")?.as_str()?;
        let amount = total.get("amount")?.as_str()?;
        let minor_units = transforms::decimal::minor_units(amount, currency).ok()?;
        Some(OrderValue {
            currency: currency.as_bytes().try_into().ok()?,
            minor_units,
        })
    }

    /// The currency code as text.
    pub fn currency(&self) -> &str {
        // minor_units admitted only three uppercase ASCII letters
        std::str::from_utf8(&self.currency).unwrap_or("XXX")
    }
}

/// Catalogs loaded during one compile, so policies sharing a folder load it once.
type CatalogCache = HashMap<PathBuf, Arc<Catalog>>;

/// The compiled `transform` policy.
pub struct Transform {
    document: String,
    /// Whether `document` is `order` (its total is left for the order-value metric).
    is_order: bool,
    by_channel: Vec<Option<Arc<Mapping>>>,
    answer: Option<Arc<Mapping>>,
    error: Option<Arc<Mapping>>,
    limits: PrecheckLimits,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transform")
            .field("document", &self.document)
            .finish_non_exhaustive()
    }
}

impl PolicyKind for Transform {
    type Spec = TransformSpec;
    type Metrics = ();

    /// Compiles the spec: loads (or reuses) the catalog and picks each channel's mapping.
    fn compile(spec: &TransformSpec, cx: &mut KindContext<'_, '_, Self>) -> Option<Transform> {
        let root = cx.base_dir.join(&spec.mappings);
        let loaded = cx.cache::<CatalogCache>().get(&root).cloned();
        let catalog = match loaded {
            Some(c) => c,
            None => match Catalog::load(&root) {
                Ok(c) => {
                    warn_interpreted(&c);
                    let c = Arc::new(c);
                    cx.cache::<CatalogCache>().insert(root.clone(), c.clone());
                    c
                }
                Err(errors) => {
                    for e in errors {
                        cx.error("/mappings", e.to_string());
                    }
                    return None;
                }
            },
        };
        let versioned = spec
            .version
            .as_ref()
            .map(|v| format!("{}.{v}", spec.document));
        let by_channel: Vec<Option<Arc<Mapping>>> = cx
            .channels
            .names()
            .iter()
            .map(|c| {
                versioned
                    .as_ref()
                    .and_then(|v| catalog.mapping(c, v))
                    .or_else(|| catalog.mapping(c, &spec.document))
            })
            .collect();
        // a version no channel has is a typo, not a route that maps like the current one
        if let Some(v) = &versioned
            && !cx
                .channels
                .names()
                .iter()
                .any(|c| catalog.mapping(c, v).is_some())
        {
            cx.error(
                "/version",
                format!("no channel has a {v:?} mapping in {}", root.display()),
            );
            return None;
        }
        if by_channel.iter().all(Option::is_none) {
            cx.error(
                "/document",
                format!(
                    "no channel has a {:?} mapping in {}",
                    spec.document,
                    root.display()
                ),
            );
            return None;
        }
        type Cx<'c, 'a, 'm> = &'c mut KindContext<'a, 'm, Transform>;
        let named = |cx: Cx<'_, '_, '_>, field: &str, name: &Option<String>| match name {
            None => Some(None),
            Some(n) => match catalog.get(n) {
                Some(m) => Some(Some(m)),
                None => {
                    cx.error(field, format!("no mapping {n:?} in {}", root.display()));
                    None
                }
            },
        };
        let answer = named(cx, "/answer", &spec.answer)?;
        let error = named(cx, "/error", &spec.error)?;
        Some(Transform {
            document: spec.document.clone(),
            is_order: spec.document == "order",
            by_channel,
            answer,
            error,
            limits: PrecheckLimits {
                max_bytes: usize::MAX,
                max_depth: spec.max_depth as usize,
            },
        })
    }
}

impl Transform {
    /// The mapping of one channel's documents (by channel index), if the channel has one.
    pub fn channel_mapping(&self, channel: usize) -> Option<&Arc<Mapping>> {
        self.by_channel.get(channel).and_then(Option::as_ref)
    }

    /// The mappings of the upstream's successful and error answers, when set.
    pub fn answer_mappings(&self) -> (Option<&Arc<Mapping>>, Option<&Arc<Mapping>>) {
        (self.answer.as_ref(), self.error.as_ref())
    }

    /// Every mapping this policy uses (for `gateway check`'s golden cases).
    pub fn mappings(&self) -> Vec<Arc<Mapping>> {
        self.by_channel
            .iter()
            .flatten()
            .chain(self.answer.iter())
            .chain(self.error.iter())
            .cloned()
            .collect()
    }
}

/// A mapping the compiled form does not know runs on jaq at several times the cost: said once
/// per load, so an operator who wrote one knows where the time goes.
fn warn_interpreted(catalog: &Catalog) {
    let inbound = catalog
        .mappings()
        .filter(|m| !m.runs_compiled())
        .map(|m| m.path().to_owned());
    let outbound = catalog
        .outbound_mappings()
        .filter(|m| !m.runs_compiled())
        .map(|m| m.path().to_owned());
    for path in inbound.chain(outbound) {
        tracing::warn!(
            mapping = %path.display(),
            "this mapping runs on the jq interpreter, at several times the cost of a compiled \
             one: it uses jq the compiled form does not know (see mappings/README.md)"
        );
    }
}

fn mapping_failed(e: &TransformError, status: StatusCode, reason: &'static str) -> Reply {
    // the full message names fields of the document; it goes to the log, the client gets a summary
    tracing::error!(mapping = %e.mapping(), error = %e, "mapping failed");
    Reply::problem(
        Problem::new(status, "mapping-failed", "The document could not be mapped").with_detail(
            format!(
                "the gateway's mapping {} failed; nothing was forwarded",
                e.mapping()
            ),
        ),
        reason,
    )
}

/// `value` as compact JSON, in a buffer of `capacity` bytes to start with (a fair guess saves
/// the buffer's regrowths).
fn serialize(value: &Value, capacity: usize) -> Bytes {
    let mut out = Vec::with_capacity(capacity);
    transforms::json_text::write_value(&mut out, value);
    Bytes::from(out)
}

impl Transform {
    /// The document this route carries (`order`, `shipment`, ...).
    pub fn document(&self) -> &str {
        &self.document
    }

    /// Maps a document again with the channel's current mapping (an operator's replay after
    /// the mapping was fixed): the canonical body, or why it cannot be mapped.
    pub fn remap(&self, channel: usize, body: &[u8]) -> Result<Bytes, String> {
        let mapping = self
            .by_channel
            .get(channel)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("there is no {} mapping for this channel", self.document))?;
        let input = transforms::parse_checked(body, &self.limits).map_err(|e| e.to_string())?;
        let doc = mapping.apply(input).map_err(|e| e.to_string())?;
        Ok(serialize(&doc, body.len()))
    }
}

impl Phases for Transform {
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
        let mapping = state
            .channel
            .as_ref()
            .and_then(|c| self.by_channel.get(c.index).and_then(Option::as_ref))
            .cloned();
        let Some(mapping) = mapping else {
            let channel = state
                .channel
                .as_ref()
                .map_or("(none)", |c| &*c.name)
                .to_owned();
            return Flow::Break(Reply::problem(
                Problem::new(
                    StatusCode::NOT_FOUND,
                    "no-mapping",
                    "Not accepted from this channel",
                )
                .with_detail(format!(
                    "there is no {} mapping for channel {channel}",
                    self.document
                )),
                "no_mapping",
            ));
        };
        let input = match ParsedBody::take(state, body) {
            Some(v) => v,
            None => match transforms::parse_checked(body, &self.limits) {
                Ok(v) => v,
                Err(e) => return Flow::Break(precheck_reply(&e)),
            },
        };
        match mapping.apply(input) {
            Ok(doc) => {
                if self.is_order
                    && let Some(value) = OrderValue::of(&doc)
                {
                    state.extensions.insert(value);
                }
                // a canonical order is about as long as the channel's
                *body = serialize(&doc, body.len() + body.len() / 4);
                state
                    .upstream_headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Flow::Continue(())
            }
            Err(e) if e.is_rejection() => {
                let detail = match &e {
                    TransformError::Rejected { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                Flow::Break(Reply::problem(
                    Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "unmappable-document",
                        "The document cannot be accepted",
                    )
                    .with_detail(detail),
                    "unmappable",
                ))
            }
            Err(e) => Flow::Break(mapping_failed(
                &e,
                StatusCode::INTERNAL_SERVER_ERROR,
                "mapping_failed",
            )),
        }
    }

    async fn on_response_body(
        &self,
        resp: &mut ResponseView<'_>,
        state: &mut ExchangeState,
        body: &mut Bytes,
    ) -> Flow {
        let success = resp.status.is_success();
        let Some(mapping) = (if success { &self.answer } else { &self.error }) else {
            return Flow::Continue(());
        };
        if resp.status.is_informational() || resp.status.is_redirection() {
            return Flow::Continue(());
        }
        let parsed = transforms::json_text::parse_slice(body).unwrap_or(Value::Null);
        let envelope = json!({"status": resp.status.as_u16(), "body": parsed});
        match mapping.apply(envelope) {
            Ok(mut doc) => {
                if success {
                    resp.headers
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                } else {
                    if let Some(status) = doc
                        .get("status")
                        .and_then(Value::as_u64)
                        .and_then(|s| u16::try_from(s).ok())
                        .and_then(|s| StatusCode::from_u16(s).ok())
                    {
                        resp.status = status;
                    }
                    if let Some(obj) = doc.as_object_mut() {
                        obj.insert("request_id".into(), Value::String(state.request_id.clone()));
                    }
                    resp.headers
                        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
                }
                *body = serialize(&doc, body.len() + 256);
                Flow::Continue(())
            }
            Err(e) => Flow::Break(mapping_failed(
                &e,
                StatusCode::BAD_GATEWAY,
                "answer_unmappable",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_value_is_its_total_in_minor_units() {
        let order = |amount: &str, currency: &str| json!({"totals": {"total": {"amount": amount, "currency": currency}}});
        let v = OrderValue::of(&order("11.01", "USD")).expect("a value");
        assert_eq!((v.currency(), v.minor_units), ("USD", 1101));
        let v = OrderValue::of(&order("4480", "JPY")).expect("a value");
        assert_eq!((v.currency(), v.minor_units), ("JPY", 4480));
        let v = OrderValue::of(&order("1.234", "KWD")).expect("a value");
        assert_eq!((v.currency(), v.minor_units), ("KWD", 1234));
        assert_eq!(OrderValue::of(&order("0.125", "USD")), None);
        assert_eq!(OrderValue::of(&order("1.00", "usd")), None);
        assert_eq!(OrderValue::of(&json!({"totals": {}})), None);
        assert_eq!(
            OrderValue::of(&json!({"totals": {"total": {"amount": 11.01, "currency": "USD"}}})),
            None,
            "amounts are strings in the canonical model"
        );
    }
}
