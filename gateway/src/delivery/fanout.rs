//! Accepting a canonical event on a fan-out route: the body is checked against its canonical
//! schema, then becomes one delivery per destination (the route's upstream with the canonical
//! document; each marketplace with the document mapped to its own call), all stored at once
//! before the caller gets one `202 Accepted` naming every delivery. Inventory is split per
//! item, and a snapshot older than one already accepted for its SKU and channel is not stored
//! (last writer wins).

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use policies::fanout::{Fanout, FanoutDocument, FanoutTarget, Marketplace, Outbound};
use policies::kinds::body_schema::violations_reply;
use policies::model::{Route, Upstream};
use policies::problem::{Problem, Reply};
use policies::queue::RouteDelivery;
use policies::state::delivery::{DeliveryRecord, DeliveryStore, Destination, FORMAT_VERSION};
use serde_json::{Value, json};

use crate::answer;
use crate::context::RequestCtx;
use crate::delivery::accept::{self, Outgoing};
use crate::delivery::metrics::NO_CHANNEL;
use crate::delivery::runtime::QueueRuntime;
use crate::metrics::Metrics;

/// The policy name fan-out refusals are counted under.
const FANOUT: &str = "fanout";

/// A refusal, boxed: it travels up through `Result`s and is rare.
type Refusal = Box<Reply>;

fn refusal(
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    reason: &'static str,
) -> Refusal {
    let mut reply = Reply::problem(
        Problem::new(status, slug, title).with_detail(detail),
        reason,
    );
    reply.policy = Some(Arc::from(FANOUT));
    Box::new(reply)
}

fn unprocessable(detail: String, reason: &'static str) -> Refusal {
    refusal(
        StatusCode::UNPROCESSABLE_ENTITY,
        "fanout-refused",
        "The event cannot be fanned out",
        detail,
        reason,
    )
}

/// One delivery to make, before it is stored.
struct Planned {
    record: DeliveryRecord,
    destination: String,
    sku: Option<String>,
}

/// What the caller is told about a destination that gets no delivery.
struct Skipped {
    destination: String,
    sku: String,
    sequence: u64,
    newest: bool,
}

/// Everything [`accept`] needs from the buffered path.
pub struct Event<'a> {
    /// The route.
    pub route: &'a Route,
    /// Its fan-out.
    pub fanout: &'a Fanout,
    /// Its upstream (the `route_upstream` destination).
    pub upstream: &'a Upstream,
    /// Its delivery (queue, ordering pointer).
    pub delivery: &'a RouteDelivery,
    /// The queue.
    pub rt: &'a QueueRuntime,
    /// The request as it would go to the route's upstream.
    pub head: &'a RequestHeader,
    /// The body (the canonical event).
    pub body: &'a Bytes,
}

/// Checks the event, stores its deliveries and answers 202 (or the refusal).
pub async fn accept(
    metrics: &Metrics,
    session: &mut Session,
    ctx: &mut RequestCtx,
    event: Event<'_>,
) -> Result<bool> {
    let snapshot = ctx.snapshot.clone();
    let plan = match plan(ctx, &snapshot.set.outbound, &snapshot.set.upstreams, &event) {
        Ok(p) => p,
        Err(reply) => return answer::reply(metrics, session, ctx, *reply, false).await,
    };
    let (planned, mut skipped) = plan;
    let rt = event.rt;
    let queue = &*rt.queue.name;
    let now_ms = rt.clock_ms();
    // last writer wins: a snapshot older than one accepted for its SKU and channel is not
    // stored (an equal one is: the same event retried)
    let mut records = Vec::with_capacity(planned.len());
    let mut listed = Vec::with_capacity(planned.len());
    for p in planned {
        if let (Some(seq), Some(key)) = (p.record.sequence, p.record.ordering_key.as_deref()) {
            match rt.store.note_sequence(queue, key, seq).await {
                Ok(true) => {}
                Ok(false) => {
                    skipped.push(Skipped {
                        destination: p.destination,
                        sku: p.sku.unwrap_or_default(),
                        sequence: seq,
                        newest: false,
                    });
                    continue;
                }
                Err(e) => {
                    let label = p.record.channel.as_deref().unwrap_or(NO_CHANNEL).to_owned();
                    return accept::refuse(&metrics.delivery, session, ctx, queue, &label, &e)
                        .await;
                }
            }
        }
        listed.push((
            p.record.id.clone(),
            p.destination,
            p.sku,
            p.record.channel.clone(),
            p.record.destination.operation.clone(),
            p.record.sequence,
        ));
        records.push(p.record);
    }
    let channels: Vec<String> = records
        .iter()
        .map(|r| r.channel.as_deref().unwrap_or(NO_CHANNEL).to_owned())
        .collect();
    if !records.is_empty() {
        if let Err(e) = rt
            .store
            .enqueue_batch(records, rt.queue.limits, now_ms)
            .await
        {
            let label = channels
                .first()
                .map_or(NO_CHANNEL, String::as_str)
                .to_owned();
            return accept::refuse(&metrics.delivery, session, ctx, queue, &label, &e).await;
        }
        rt.wake.notify_one();
    }
    for c in &channels {
        metrics
            .delivery
            .outcomes
            .with_label_values(&[queue, c, "accepted"])
            .inc();
    }
    let base = session
        .req_header()
        .uri
        .path()
        .trim_end_matches('/')
        .to_owned();
    let readable = event.delivery.readable;
    let deliveries: Vec<Value> = listed
        .into_iter()
        .map(|(id, destination, sku, channel, operation, sequence)| {
            let location = readable.then(|| format!("{base}/deliveries/{id}"));
            let mut d = json!({
                "delivery_id": id,
                "destination": destination,
                "state": "pending",
                "location": location,
            });
            if let Some(o) = d.as_object_mut() {
                if let Some(c) = channel {
                    o.insert("channel".into(), Value::String(c));
                }
                if let Some(op) = operation {
                    o.insert("operation".into(), Value::String(op));
                }
                if let Some(s) = sku {
                    o.insert("sku".into(), Value::String(s));
                }
                if let Some(s) = sequence {
                    o.insert("sequence".into(), json!(s));
                }
            }
            d
        })
        .collect();
    let superseded: Vec<Value> = skipped
        .iter()
        .filter(|s| !s.newest)
        .map(|s| json!({"destination": s.destination, "sku": s.sku, "sequence": s.sequence}))
        .collect();
    let unlisted: Vec<&str> = skipped
        .iter()
        .filter(|s| s.newest)
        .map(|s| s.sku.as_str())
        .collect();
    let mut body = json!({
        "queue": queue,
        "deliveries": deliveries,
    });
    if let Some(o) = body.as_object_mut() {
        if !superseded.is_empty() {
            o.insert("superseded".into(), Value::Array(superseded));
        }
        if !unlisted.is_empty() {
            o.insert("unlisted_skus".into(), json!(unlisted));
        }
    }
    accept::accepted(session, ctx, &body, None).await
}

type Plan = (Vec<Planned>, Vec<Skipped>);

/// Turns the event into its deliveries (not stored yet), or the refusal.
fn plan(
    ctx: &RequestCtx,
    outbound: &Option<Arc<Outbound>>,
    upstreams: &[Arc<Upstream>],
    event: &Event<'_>,
) -> std::result::Result<Plan, Refusal> {
    let doc: Value = transforms::json_text::parse_slice(event.body).map_err(|e| {
        refusal(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON body",
            format!("the body is not JSON: {e}"),
            "malformed_json",
        )
    })?;
    let fanout = event.fanout;
    let schema = fanout.document.as_str();
    if let Err(v) = fanout.validator.validate(&doc, 20) {
        let mut reply = violations_reply(&format!("the canonical {schema} schema"), &v);
        reply.policy = Some(Arc::from(FANOUT));
        return Err(Box::new(reply));
    }
    if fanout.document == FanoutDocument::InventoryAdjustment {
        check_snapshots(&doc)?;
    }
    let mut planned = Vec::new();
    let mut skipped = Vec::new();
    for target in &fanout.to {
        match target {
            FanoutTarget::RouteUpstream => {
                let out = Outgoing {
                    head: event.head,
                    body: event.body,
                    original: None,
                    trace: ctx.trace.as_ref(),
                };
                let mut record = accept::record(
                    ctx,
                    event.route,
                    event.upstream,
                    event.delivery,
                    &event.rt.queue.name,
                    &out,
                    event.rt.clock_ms(),
                );
                // the event's channel (the marketplace an order came from) labels its
                // deliveries, as the route's {channel} does elsewhere
                if record.channel.is_none() {
                    record.channel = doc
                        .get("channel")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                }
                planned.push(Planned {
                    record,
                    destination: event.upstream.name.to_string(),
                    sku: None,
                });
            }
            FanoutTarget::DocumentChannel => {
                let outbound = outbound.as_deref().ok_or_else(no_outbound)?;
                let channel = doc.get("channel").and_then(Value::as_str).unwrap_or("");
                let marketplace = outbound.marketplace(channel).ok_or_else(|| {
                    unprocessable(
                        format!("the document's channel {channel:?} has no marketplace this gateway calls"),
                        "no_marketplace",
                    )
                })?;
                let record = marketplace_record(
                    ctx,
                    event,
                    upstreams,
                    marketplace,
                    fanout.document,
                    &doc,
                    &Value::Object(Default::default()),
                    None,
                )?;
                planned.push(Planned {
                    record,
                    destination: channel.to_owned(),
                    sku: None,
                });
            }
            FanoutTarget::ListingChannels => {
                let outbound = outbound.as_deref().ok_or_else(no_outbound)?;
                let items = doc
                    .get("items")
                    .and_then(Value::as_array)
                    .map_or(&[][..], Vec::as_slice);
                for item in items {
                    let sku = item.get("sku").and_then(Value::as_str).unwrap_or("");
                    let sequence = item.get("sequence").and_then(Value::as_u64);
                    let listed = fanout.skus.channels(sku);
                    if listed.is_empty() {
                        skipped.push(Skipped {
                            destination: String::new(),
                            sku: sku.to_owned(),
                            sequence: sequence.unwrap_or(0),
                            newest: true,
                        });
                        continue;
                    }
                    let mut one = doc.clone();
                    if let Some(o) = one.as_object_mut() {
                        o.insert("items".into(), Value::Array(vec![item.clone()]));
                    }
                    for (channel, listing) in listed {
                        let Some(marketplace) = outbound.marketplace(channel) else {
                            continue;
                        };
                        let record = marketplace_record(
                            ctx,
                            event,
                            upstreams,
                            marketplace,
                            fanout.document,
                            &one,
                            listing,
                            Some((sku, sequence)),
                        )?;
                        planned.push(Planned {
                            record,
                            destination: channel.to_string(),
                            sku: Some(sku.to_owned()),
                        });
                    }
                }
            }
        }
    }
    Ok((planned, skipped))
}

fn no_outbound() -> Refusal {
    refusal(
        StatusCode::INTERNAL_SERVER_ERROR,
        "fanout-misconfigured",
        "Fan-out not configured",
        "the policy set has no outbound section".into(),
        "no_outbound",
    )
}

/// Outbound inventory carries absolute quantities with a per-SKU sequence: a delta cannot be
/// ordered against a snapshot by sequence, so it is refused.
fn check_snapshots(doc: &Value) -> std::result::Result<(), Refusal> {
    let items = doc
        .get("items")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for (i, item) in items.iter().enumerate() {
        if item.get("kind").and_then(Value::as_str) != Some("snapshot") {
            return Err(unprocessable(
                format!(
                    "/items/{i}: outbound inventory is absolute quantities (kind: snapshot); a delta is refused"
                ),
                "inventory_delta",
            ));
        }
        if item.get("sku").and_then(Value::as_str).is_none() {
            return Err(unprocessable(
                format!("/items/{i}: a sku is required"),
                "inventory_no_sku",
            ));
        }
        if item.get("sequence").and_then(Value::as_u64).is_none() {
            return Err(unprocessable(
                format!("/items/{i}: a per-SKU sequence (an integer, higher is newer) is required"),
                "inventory_no_sequence",
            ));
        }
    }
    Ok(())
}

/// The delivery of one marketplace call: the outbound mapping's request, to the marketplace's
/// upstream. Its ordering key serializes the calls about one order (shipments) or one SKU
/// (inventory) on that channel.
#[allow(clippy::too_many_arguments)]
fn marketplace_record(
    ctx: &RequestCtx,
    event: &Event<'_>,
    upstreams: &[Arc<Upstream>],
    marketplace: &Marketplace,
    document: FanoutDocument,
    doc: &Value,
    listing: &Value,
    sku: Option<(&str, Option<u64>)>,
) -> std::result::Result<DeliveryRecord, Refusal> {
    let op_name = document.operation();
    let channel = &*marketplace.channel;
    let operation = marketplace.operation(op_name).ok_or_else(|| {
        unprocessable(
            format!("the gateway does not call {op_name} on {channel}"),
            "no_operation",
        )
    })?;
    let upstream = upstreams
        .get(marketplace.upstream)
        .ok_or_else(no_outbound)?;
    let input = json!({"document": doc, "target": marketplace.params, "listing": listing});
    let request = operation.mapping.apply(input).map_err(|e| {
        if e.is_rejection() {
            unprocessable(format!("{channel}: {e}"), "mapping_rejected")
        } else {
            tracing::error!(channel, operation = op_name, error = %e, "outbound mapping failed");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "mapping-failed",
                "Outbound mapping failed",
                format!(
                    "the {} mapping could not map this event; operators were told",
                    operation.mapping.name()
                ),
                "mapping_failed",
            )
        }
    })?;
    let ordering_key = match sku {
        Some((sku, _)) => format!("{channel}:inventory:{sku}"),
        None => {
            let order = doc
                .pointer("/channel_ids/order_id")
                .or_else(|| doc.get("order_id"))
                .and_then(Value::as_str)
                .unwrap_or("");
            format!("{channel}:{op_name}:{order}")
        }
    };
    let body = serde_json::to_string(&request.body).unwrap_or_default();
    Ok(DeliveryRecord {
        v: FORMAT_VERSION,
        id: uuid::Uuid::now_v7().to_string(),
        queue: event.rt.queue.name.to_string(),
        route: event.route.name.to_string(),
        channel: Some(channel.to_owned()),
        destination: Destination {
            upstream: upstream.name.to_string(),
            method: request.method,
            path: request.path,
            mapping: Some(operation.mapping.name().to_owned()),
            operation: Some(op_name.to_owned()),
        },
        headers: vec![
            (
                CONTENT_TYPE.as_str().to_owned(),
                "application/json".to_owned(),
            ),
            ("accept".to_owned(), "application/json".to_owned()),
        ],
        body,
        original: None,
        upstream_key: format!("\"{}\"", uuid::Uuid::now_v7()),
        ordering_key: Some(ordering_key),
        sequence: sku.and_then(|(_, s)| s),
        traceparent: ctx.trace.as_ref().map(|t| {
            t.upstream_traceparent()
                .to_str()
                .unwrap_or_default()
                .to_owned()
        }),
        tracestate: ctx
            .trace
            .as_ref()
            .and_then(|t| t.tracestate.as_ref())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        request_id: ctx.state.request_id.clone(),
        accepted_at_ms: event.rt.clock_ms(),
    })
}
