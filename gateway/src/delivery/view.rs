//! How a delivery is shown: to its caller at the `Location` of its 202 (its state, attempts,
//! and once delivered the answer the sync path would have given; never another channel's), and
//! to operators in the admin API (everything stored, every attempt).

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use pingora::prelude::*;
use pingora::proxy::Session;
use policies::problem::Problem;
use policies::state::delivery::{Delivery, DeliveryStore, StoredAnswer};
use serde_json::{Value, json};

use crate::context::{Outcome, RequestCtx};
use crate::delivery::metrics::DeliveryMetrics;
use crate::ids::REQUEST_ID;
use crate::respond;

/// A unix-milliseconds time in RFC 3339.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The answer's body as JSON when it is JSON, else as text.
fn answer_json(a: &StoredAnswer) -> Value {
    json!({
        "status": a.status,
        "content_type": a.content_type,
        "body": serde_json::from_str::<Value>(&a.body).unwrap_or_else(|_| Value::String(a.body.clone())),
    })
}

/// What the caller sees of its delivery.
pub fn for_caller(d: &Delivery) -> Value {
    let s = &d.status;
    let mut v = json!({
        "delivery_id": d.record.id,
        "state": s.state.as_str(),
        "queue": d.record.queue,
        "channel": d.record.channel,
        "accepted_at": rfc3339(d.record.accepted_at_ms),
        "attempts": s.attempt_count,
    });
    if let Some(last) = s.attempts.last() {
        v["last_attempt"] = json!({
            "at": rfc3339(last.at_ms),
            "status": last.status,
            "error": last.error,
        });
    }
    if !s.state.is_final() {
        v["next_attempt_at"] = json!(rfc3339(s.next_attempt_at_ms));
    }
    if let Some(a) = &s.answer {
        v["answer"] = answer_json(a);
    }
    if let Some(at) = s.delivered_at_ms {
        v["delivered_at"] = json!(rfc3339(at));
    }
    if let Some(r) = &s.reason {
        v["reason"] = json!(r);
    }
    v
}

/// Everything about a delivery, for operators.
pub fn for_operator(d: &Delivery) -> Value {
    let r = &d.record;
    let s = &d.status;
    let mut v = for_caller(d);
    v["route"] = json!(r.route);
    v["destination"] = json!(r.destination);
    v["upstream_key"] = json!(r.upstream_key);
    v["ordering_key"] = json!(r.ordering_key);
    v["request_id"] = json!(r.request_id);
    v["traceparent"] = json!(r.traceparent);
    v["replays"] = json!(s.replays);
    v["updated_at"] = json!(rfc3339(s.updated_at_ms));
    v["attempt_history"] = Value::Array(
        s.attempts
            .iter()
            .map(|a| {
                json!({
                    "at": rfc3339(a.at_ms),
                    "duration_ms": a.duration_ms,
                    "status": a.status,
                    "error": a.error,
                })
            })
            .collect(),
    );
    let parsed = |t: &str| serde_json::from_str::<Value>(t).unwrap_or_else(|_| json!(t));
    v["body"] = parsed(&r.body);
    if let Some(o) = &r.original {
        v["original_body"] = parsed(o);
    }
    v
}

/// A short line per delivery, for lists.
pub fn summary(d: &Delivery) -> Value {
    let s = &d.status;
    json!({
        "delivery_id": d.record.id,
        "queue": d.record.queue,
        "channel": d.record.channel,
        "route": d.record.route,
        "state": s.state.as_str(),
        "attempts": s.attempt_count,
        "accepted_at": rfc3339(d.record.accepted_at_ms),
        "ordering_key": d.record.ordering_key,
        "last_status": s.attempts.last().and_then(|a| a.status),
        "reason": s.reason,
    })
}

/// Serves `GET <route path>/deliveries/{delivery_id}` (the guard policies already passed):
/// the delivery, if it exists, was accepted by that route and belongs to the caller's channel.
pub async fn serve(
    metrics: &DeliveryMetrics,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let snapshot = ctx.snapshot.clone();
    let found = async {
        let route = ctx.route.as_ref()?;
        let origin = snapshot.set.routes.get(route.status_of?)?;
        let rt = snapshot.queues.get(origin.delivery.as_ref()?.queue)?;
        let id = ctx.params.get("delivery_id")?;
        let d = match rt.store.get(id).await {
            Ok(d) => d?,
            Err(e) => {
                metrics
                    .store_errors
                    .with_label_values(&[&rt.queue.name, "get"])
                    .inc();
                tracing::warn!(error = %e, "cannot read a delivery");
                return None;
            }
        };
        let caller = ctx.state.channel.as_ref().map(|c| &*c.name);
        let visible = *d.record.route == *origin.name
            && (caller.is_none() || caller == d.record.channel.as_deref());
        visible.then_some(d)
    }
    .await;
    ctx.outcome = Outcome::Served;
    let Some(d) = found else {
        let p = Problem::status(StatusCode::NOT_FOUND)
            .with_detail("no delivery with this id was accepted here");
        respond::problem(
            session,
            &p,
            ctx.ids(),
            &ctx.state.response_headers,
            Vec::new(),
            false,
        )
        .await?;
        return Ok(true);
    };
    let body = Bytes::from(serde_json::to_vec(&for_caller(&d)).unwrap_or_default());
    let mut headers = HeaderMap::new();
    for (name, value) in &ctx.state.response_headers {
        headers.insert(name.clone(), value.clone());
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&ctx.state.request_id) {
        headers.insert(REQUEST_ID, v);
    }
    respond::write(
        session,
        StatusCode::OK,
        &headers,
        std::iter::empty(),
        body,
        false,
    )
    .await?;
    Ok(true)
}
