//! Accepting a document for later delivery: after every body policy passed (nothing invalid is
//! ever stored), the request as it would go upstream becomes a [`DeliveryRecord`] in the
//! route's queue, and only once the store says it is durable does the caller get
//! `202 Accepted` with the delivery's `Location`. A full queue is a 503 with `Retry-After`.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, StatusCode};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use policies::kinds::Policy;
use policies::model::{Route, Upstream};
use policies::problem::Problem;
use policies::queue::RouteDelivery;
use policies::state::delivery::{
    DeliveryError, DeliveryRecord, DeliveryStore, Destination, FORMAT_VERSION,
};
use serde_json::json;

use crate::completion;
use crate::context::{Outcome, RequestCtx};
use crate::delivery::metrics::{DeliveryMetrics, NO_CHANNEL};
use crate::delivery::runtime::QueueRuntime;
use crate::forward::IDEMPOTENCY_KEY;
use crate::ids::{REQUEST_ID, TraceContext};
use crate::respond;

/// The request as it goes upstream, for a record.
pub struct Outgoing<'a> {
    /// The rewritten upstream head.
    pub head: &'a RequestHeader,
    /// The body sent upstream (the canonical document).
    pub body: &'a Bytes,
    /// The body the caller sent.
    pub original: Option<&'a Bytes>,
    /// The caller's trace context.
    pub trace: Option<&'a TraceContext>,
}

fn text(b: &Bytes) -> String {
    // bodies are JSON, so nearly always valid UTF-8: `from_utf8` checks that a word at a time
    // where `from_utf8_lossy` goes byte by byte; a route without body policies may still
    // store other bytes, which the lossy copy keeps as before
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// The `<channel>:<value>` ordering key of a document, from the route's pointer.
fn ordering_key(pointer: Option<&str>, channel: Option<&str>, body: &Bytes) -> Option<String> {
    let pointer = pointer?;
    let doc = transforms::json_text::parse_slice(body).ok()?;
    let value = match doc.pointer(pointer)? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(match channel {
        Some(c) => format!("{c}:{value}"),
        None => value,
    })
}

/// The mapping that made the body, `<channel>/<document>`, when the route transforms.
fn mapping(route: &Route, channel: Option<&str>) -> Option<String> {
    let channel = channel?;
    route.chain.policies().iter().find_map(|p| match &p.policy {
        Policy::Transform(t) => Some(format!("{channel}/{}", t.document())),
        _ => None,
    })
}

/// Builds the record of a document the route accepted.
pub fn record(
    ctx: &RequestCtx,
    route: &Route,
    upstream: &Upstream,
    delivery: &RouteDelivery,
    queue: &str,
    out: &Outgoing<'_>,
    now_ms: u64,
) -> DeliveryRecord {
    let channel = ctx.state.channel.as_ref().map(|c| c.name.to_string());
    // the upstream's own headers (which may hold secrets) are added again at each attempt,
    // never stored; the key has its own field
    let skip = |name: &http::HeaderName| {
        name == CONTENT_LENGTH
            || name == TRANSFER_ENCODING
            || name == IDEMPOTENCY_KEY
            || upstream.request_headers.iter().any(|(n, _)| n == name)
            || (name == HOST && upstream.transport.host.is_some())
    };
    let headers = out
        .head
        .headers
        .iter()
        .filter(|(n, _)| !skip(n))
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let upstream_key = ctx
        .attempts
        .idempotency_key
        .as_ref()
        .and_then(|k| k.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("\"{}\"", uuid::Uuid::now_v7()));
    DeliveryRecord {
        v: FORMAT_VERSION,
        id: uuid::Uuid::now_v7().to_string(),
        queue: queue.to_owned(),
        route: route.name.to_string(),
        channel: channel.clone(),
        destination: Destination {
            upstream: upstream.name.to_string(),
            method: out.head.method.as_str().to_owned(),
            path: out
                .head
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            mapping: mapping(route, channel.as_deref()),
            operation: None,
        },
        headers,
        body: text(out.body),
        original: out.original.map(text),
        upstream_key,
        ordering_key: ordering_key(
            delivery.ordering_key.as_deref(),
            channel.as_deref(),
            out.body,
        ),
        traceparent: out.trace.map(|t| {
            t.upstream_traceparent()
                .to_str()
                .unwrap_or_default()
                .to_owned()
        }),
        tracestate: out
            .trace
            .and_then(|t| t.tracestate.as_ref())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        request_id: ctx.state.request_id.clone(),
        accepted_at_ms: now_ms,
        sequence: None,
    }
}

/// Stores the record and answers 202 (or 503 when the queue is full or the store failed).
pub async fn store_and_answer(
    metrics: &DeliveryMetrics,
    session: &mut Session,
    ctx: &mut RequestCtx,
    rt: &QueueRuntime,
    record: DeliveryRecord,
    readable: bool,
) -> Result<bool> {
    let queue = rt.queue.name.clone();
    let channel = record.channel.clone();
    let channel_label = channel.as_deref().unwrap_or(NO_CHANNEL).to_owned();
    let id = record.id.clone();
    let now_ms = record.accepted_at_ms;
    match rt.store.enqueue(record, rt.queue.limits, now_ms).await {
        Ok(()) => {
            rt.wake.notify_one();
            metrics
                .outcomes
                .with_label_values(&[&*queue, &channel_label, "accepted"])
                .inc();
        }
        Err(e) => return refuse(metrics, session, ctx, &queue, &channel_label, &e).await,
    }
    let location = readable.then(|| {
        format!(
            "{}/deliveries/{id}",
            session.req_header().uri.path().trim_end_matches('/')
        )
    });
    let body = json!({
        "delivery_id": id,
        "state": "pending",
        "queue": &*queue,
        "channel": channel,
        "location": location,
    });
    accepted(session, ctx, &body, location.as_deref()).await
}

/// Answers a document that could not be stored: 503 with `Retry-After` (the queue is full or
/// the store failed), counted and logged.
pub async fn refuse(
    metrics: &DeliveryMetrics,
    session: &mut Session,
    ctx: &mut RequestCtx,
    queue: &str,
    channel_label: &str,
    e: &DeliveryError,
) -> Result<bool> {
    let (problem, reason) = match e {
        DeliveryError::Full { what, .. } => {
            metrics
                .outcomes
                .with_label_values(&[queue, channel_label, "full"])
                .inc();
            (
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "queue-full",
                    "Delivery queue full",
                )
                .with_detail(format!(
                    "the gateway holds as many documents for delivery as it may ({what}); try again later"
                )),
                "queue_full",
            )
        }
        other => {
            metrics
                .store_errors
                .with_label_values(&[queue, "enqueue"])
                .inc();
            tracing::error!(queue = %queue, error = %other, "could not store a document for delivery");
            (
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "delivery-store-unavailable",
                    "Delivery store unavailable",
                )
                .with_detail("the document could not be stored for delivery; try again later"),
                "store_error",
            )
        }
    };
    ctx.outcome = Outcome::Edge(reason);
    respond::problem(
        session,
        &problem,
        ctx.ids(),
        &ctx.state.response_headers,
        vec![(RETRY_AFTER, HeaderValue::from_static("5"))],
        false,
    )
    .await?;
    Ok(true)
}

/// Writes the `202 Accepted` of stored documents (kept by an idempotency policy first, so a
/// repeat of the request gets the same answer).
pub async fn accepted(
    session: &mut Session,
    ctx: &mut RequestCtx,
    body: &serde_json::Value,
    location: Option<&str>,
) -> Result<bool> {
    let body = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    let mut headers = HeaderMap::new();
    for (name, value) in &ctx.state.response_headers {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(Ok(v)) = location.map(HeaderValue::from_str) {
        headers.insert(LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.state.request_id) {
        headers.insert(REQUEST_ID, v);
    }
    ctx.outcome = Outcome::Queued;
    // an idempotency policy keeps this answer (stored before it is written): a repeat of the
    // request gets the same 202
    ctx.buffered_response = Some((headers, body));
    ctx.buffered_status = Some(StatusCode::ACCEPTED.as_u16());
    completion::complete_policies(ctx, StatusCode::ACCEPTED.as_u16()).await;
    let Some((headers, body)) = &ctx.buffered_response else {
        return Error::e_explain(ErrorType::InternalError, "queued answer vanished");
    };
    respond::write(
        session,
        StatusCode::ACCEPTED,
        headers,
        std::iter::empty(),
        body.clone(),
        false,
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_text_is_copied_exactly_and_bytes_that_are_not_utf8_are_replaced() {
        let json = Bytes::from_static("{\"name\":\"Café ☕\"}".as_bytes());
        assert_eq!(text(&json), "{\"name\":\"Café ☕\"}");
        assert_eq!(
            text(&Bytes::from_static(b"a\xffb\xc3")),
            "a\u{FFFD}b\u{FFFD}"
        );
        assert_eq!(text(&Bytes::new()), "");
    }

    #[test]
    fn ordering_keys_come_from_the_pointer_prefixed_with_the_channel() {
        let body = Bytes::from_static(br#"{"id":"amazon:902-1","n":7,"o":{}}"#);
        assert_eq!(
            ordering_key(Some("/id"), Some("amazon"), &body).as_deref(),
            Some("amazon:amazon:902-1")
        );
        assert_eq!(ordering_key(Some("/n"), None, &body).as_deref(), Some("7"));
        assert_eq!(ordering_key(Some("/o"), None, &body), None);
        assert_eq!(ordering_key(Some("/missing"), None, &body), None);
        assert_eq!(ordering_key(None, None, &body), None);
    }
}
