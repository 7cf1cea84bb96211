//! The operators' API over the queues, served on the admin listener (behind its
//! authentication): list and filter deliveries, show one whole, replay one or a filter (dead
//! letters after a fix, optionally mapping the original body again; already delivered
//! documents of a time range after an ERP restore), purge, and each queue's figures.
//!
//! `GET /queues` · `GET /deliveries?<filter>` · `GET /deliveries/{id}` ·
//! `POST /deliveries/{id}/replay[?retransform=true]` · `POST /deliveries/replay?<filter>` ·
//! `DELETE /deliveries/{id}` (or `POST /deliveries/{id}/purge`) · `POST /deliveries/purge?<filter>`.
//! A filter: `queue`, `channel`, `state`, `since`, `until`, `delivered_since`,
//! `delivered_until` (RFC 3339 times, or a duration such as `2h` meaning that long ago),
//! `after` (an id, for paging) and `limit`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use policies::kinds::Policy;
use policies::state::delivery::{Deliveries, DeliveryState, DeliveryStore, Filter};
use serde_json::{Value, json};

use crate::delivery::metrics::{DeliveryMetrics, NO_CHANNEL};
use crate::delivery::runtime::QueueRuntime;
use crate::delivery::view;
use crate::snapshot::Snapshot;

/// Most deliveries one list or bulk operation returns or touches.
const MAX_PAGE: usize = 1000;

/// An admin answer: status and JSON body.
pub type AdminAnswer = (StatusCode, Value);

fn problem(status: StatusCode, detail: impl Into<String>) -> AdminAnswer {
    (
        status,
        json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail.into(),
        }),
    )
}

/// Whether the path belongs to this API.
pub fn handles(path: &str) -> bool {
    path == "/queues" || path == "/deliveries" || path.starts_with("/deliveries/")
}

fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// A time in a filter: RFC 3339, or a duration meaning that long before `now_ms`.
fn time_ms(text: &str, now_ms: u64) -> Result<u64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64));
    }
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now_ms.saturating_sub(d.as_millis() as u64));
    }
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    Err(format!(
        "{text:?} is neither an RFC 3339 time, a duration (2h) nor unix milliseconds"
    ))
}

fn state(text: &str) -> Result<DeliveryState, String> {
    Ok(match text {
        "pending" => DeliveryState::Pending,
        "in_flight" => DeliveryState::InFlight,
        "blocked" => DeliveryState::Blocked,
        "delivered" => DeliveryState::Delivered,
        "dead" => DeliveryState::Dead,
        "superseded" => DeliveryState::Superseded,
        other => {
            return Err(format!(
                "state {other:?} is not one of pending, in_flight, blocked, delivered, dead, superseded"
            ));
        }
    })
}

/// What a request's query asks for.
struct Query {
    filter: Filter,
    after: Option<String>,
    limit: usize,
    retransform: bool,
    /// Whether any criterion narrows the filter (bulk operations require one).
    narrowed: bool,
}

fn parse_query(query: Option<&str>, now_ms: u64) -> Result<Query, String> {
    let mut q = Query {
        filter: Filter::default(),
        after: None,
        limit: 100,
        retransform: false,
        narrowed: false,
    };
    for (k, v) in query_pairs(query) {
        let f = &mut q.filter;
        match k.as_str() {
            "queue" => f.queue = Some(v),
            "channel" => f.channel = Some(v),
            "state" => f.state = Some(state(&v)?),
            "since" => f.since_ms = Some(time_ms(&v, now_ms)?),
            "until" => f.until_ms = Some(time_ms(&v, now_ms)?),
            "delivered_since" => f.delivered_since_ms = Some(time_ms(&v, now_ms)?),
            "delivered_until" => f.delivered_until_ms = Some(time_ms(&v, now_ms)?),
            "after" => q.after = Some(v),
            "limit" => {
                q.limit = v
                    .parse::<usize>()
                    .map_err(|_| format!("limit {v:?} is not a number"))?
                    .clamp(1, MAX_PAGE)
            }
            "retransform" => q.retransform = matches!(v.as_str(), "" | "true" | "1" | "yes"),
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    q.narrowed = q.filter != Filter::default();
    Ok(q)
}

/// Each distinct store with the queues in it that the filter selects.
fn stores<'a>(snapshot: &'a Snapshot, queue: Option<&str>) -> Vec<&'a Arc<QueueRuntime>> {
    let mut out: Vec<&Arc<QueueRuntime>> = Vec::new();
    for rt in &snapshot.queues {
        if queue.is_some_and(|q| q != &*rt.queue.name) {
            continue;
        }
        if out.iter().any(|o| Arc::ptr_eq(&o.store, &rt.store)) {
            continue;
        }
        out.push(rt);
    }
    out
}

fn now_ms(snapshot: &Snapshot) -> u64 {
    snapshot.queues.first().map_or_else(
        || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        },
        |q| q.clock_ms(),
    )
}

/// The runtime of the queue a delivery is in, found by id across the stores.
async fn find(
    snapshot: &Snapshot,
    id: &str,
) -> Result<Option<(Arc<QueueRuntime>, policies::state::delivery::Delivery)>, String> {
    for rt in stores(snapshot, None) {
        match rt.store.get(id).await {
            Ok(Some(d)) => {
                let owner = snapshot
                    .queues
                    .iter()
                    .find(|q| *q.queue.name == *d.record.queue && Arc::ptr_eq(&q.store, &rt.store))
                    .cloned()
                    .unwrap_or_else(|| rt.clone());
                return Ok(Some((owner, d)));
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(None)
}

/// Handles one request of this API.
pub async fn handle(
    snapshot: &Snapshot,
    metrics: &DeliveryMetrics,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> AdminAnswer {
    let now = now_ms(snapshot);
    let q = match parse_query(query, now) {
        Ok(q) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e),
    };
    let rest: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let result = match (method, rest.as_slice()) {
        (&Method::GET, ["queues"]) => queues(snapshot).await,
        (&Method::GET, ["deliveries"]) => list(snapshot, &q).await,
        (&Method::GET, ["deliveries", id]) => show(snapshot, id).await,
        (&Method::POST, ["deliveries", "replay"]) => {
            bulk(snapshot, metrics, &q, Bulk::Replay, now).await
        }
        (&Method::POST, ["deliveries", "purge"]) => {
            bulk(snapshot, metrics, &q, Bulk::Purge, now).await
        }
        (&Method::POST, ["deliveries", id, "replay"]) => {
            one(snapshot, metrics, id, Bulk::Replay, q.retransform, now).await
        }
        (&Method::POST, ["deliveries", id, "purge"]) | (&Method::DELETE, ["deliveries", id]) => {
            one(snapshot, metrics, id, Bulk::Purge, false, now).await
        }
        (_, ["queues"] | ["deliveries"] | ["deliveries", _] | ["deliveries", _, _]) => {
            Err(problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "see the admin API in the README",
            ))
        }
        _ => Err(problem(StatusCode::NOT_FOUND, "no such admin endpoint")),
    };
    result.unwrap_or_else(|e| e)
}

type Answered = Result<AdminAnswer, AdminAnswer>;

fn store_failed(e: impl std::fmt::Display) -> AdminAnswer {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the delivery store failed: {e}"),
    )
}

async fn queues(snapshot: &Snapshot) -> Answered {
    let mut out = Vec::new();
    for rt in &snapshot.queues {
        let stats = rt.store.stats(&rt.queue.name).await.map_err(store_failed)?;
        let now = rt.clock_ms();
        out.push(json!({
            "name": &*rt.queue.name,
            "store": match &*rt.store { Deliveries::Embedded(_) => "local", Deliveries::Redis(_) => "redis" },
            "depth": stats.depth,
            "dead": stats.dead,
            "bytes": stats.bytes,
            "oldest_pending_age_ms": stats.oldest_pending_ms.map(|t| now.saturating_sub(t)),
            "max_entries": rt.queue.limits.max_entries,
            "max_bytes": rt.queue.limits.max_bytes,
            "workers": rt.queue.workers,
        }));
    }
    Ok((StatusCode::OK, json!({ "queues": out })))
}

async fn list(snapshot: &Snapshot, q: &Query) -> Answered {
    let mut found = Vec::new();
    for rt in stores(snapshot, q.filter.queue.as_deref()) {
        let page = rt
            .store
            .list(&q.filter, q.after.as_deref(), q.limit)
            .await
            .map_err(store_failed)?;
        found.extend(page);
    }
    found.sort_by(|a, b| a.record.id.cmp(&b.record.id));
    found.truncate(q.limit);
    let next = (found.len() == q.limit)
        .then(|| found.last().map(|d| d.record.id.clone()))
        .flatten();
    Ok((
        StatusCode::OK,
        json!({
            "deliveries": found.iter().map(view::summary).collect::<Vec<_>>(),
            "next_after": next,
        }),
    ))
}

async fn show(snapshot: &Snapshot, id: &str) -> Answered {
    match find(snapshot, id).await.map_err(store_failed)? {
        Some((_, d)) => Ok((StatusCode::OK, view::for_operator(&d))),
        None => Err(problem(StatusCode::NOT_FOUND, "no delivery with this id")),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bulk {
    Replay,
    Purge,
}

/// The body a replay sends: the original mapped again when asked, else the stored one.
fn remapped(
    snapshot: &Snapshot,
    d: &policies::state::delivery::Delivery,
) -> Result<Option<String>, String> {
    let original = d
        .record
        .original
        .as_deref()
        .ok_or("the delivery has no original body to map again")?;
    let route = snapshot
        .set
        .routes
        .iter()
        .find(|r| *r.name == *d.record.route)
        .ok_or_else(|| format!("route {:?} is no longer in the policy set", d.record.route))?;
    let channel = d
        .record
        .channel
        .as_deref()
        .and_then(|c| snapshot.set.channels.get(c))
        .ok_or("the delivery has no known channel")?;
    let Some(transform) = route.chain.policies().iter().find_map(|p| match &p.policy {
        Policy::Transform(t) => Some(t),
        _ => None,
    }) else {
        return Ok(None);
    };
    let body = transform.remap(channel.index, original.as_bytes())?;
    Ok(Some(String::from_utf8_lossy(&body).into_owned()))
}

async fn apply(
    snapshot: &Snapshot,
    metrics: &DeliveryMetrics,
    rt: &QueueRuntime,
    d: &policies::state::delivery::Delivery,
    op: Bulk,
    retransform: bool,
    now: u64,
) -> Result<bool, AdminAnswer> {
    let channel = d.record.channel.as_deref().unwrap_or(NO_CHANNEL);
    match op {
        Bulk::Replay => {
            let body = if retransform {
                remapped(snapshot, d).map_err(|e| problem(StatusCode::UNPROCESSABLE_ENTITY, e))?
            } else {
                None
            };
            let done = rt
                .store
                .requeue(&d.record.id, body, now)
                .await
                .map_err(store_failed)?;
            if done {
                rt.wake.notify_one();
                metrics
                    .outcomes
                    .with_label_values(&[&rt.queue.name, channel, "replayed"])
                    .inc();
                tracing::info!(delivery = %d.record.id, queue = %rt.queue.name, retransform, "delivery replayed by an operator");
            }
            Ok(done)
        }
        Bulk::Purge => {
            let done = rt.store.purge(&d.record.id).await.map_err(store_failed)?;
            if done {
                rt.wake.notify_one();
                metrics
                    .outcomes
                    .with_label_values(&[&rt.queue.name, channel, "purged"])
                    .inc();
                tracing::info!(delivery = %d.record.id, queue = %rt.queue.name, "delivery purged by an operator");
            }
            Ok(done)
        }
    }
}

async fn one(
    snapshot: &Snapshot,
    metrics: &DeliveryMetrics,
    id: &str,
    op: Bulk,
    retransform: bool,
    now: u64,
) -> Answered {
    let Some((rt, d)) = find(snapshot, id).await.map_err(store_failed)? else {
        return Err(problem(StatusCode::NOT_FOUND, "no delivery with this id"));
    };
    if apply(snapshot, metrics, &rt, &d, op, retransform, now).await? {
        let key = if op == Bulk::Replay {
            "replayed"
        } else {
            "purged"
        };
        Ok((StatusCode::OK, json!({ key: 1, "delivery_id": id })))
    } else {
        let why = match op {
            Bulk::Replay => "only a dead or delivered delivery can be replayed",
            Bulk::Purge => "a delivery a worker holds cannot be purged; try again",
        };
        Err(problem(StatusCode::CONFLICT, why))
    }
}

async fn bulk(
    snapshot: &Snapshot,
    metrics: &DeliveryMetrics,
    q: &Query,
    op: Bulk,
    now: u64,
) -> Answered {
    if !q.narrowed {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "a bulk replay or purge needs a filter (queue, channel, state, since, until, delivered_since, delivered_until)",
        ));
    }
    let mut filter = q.filter.clone();
    if op == Bulk::Replay && filter.state.is_none() {
        // only what is over can be replayed: dead letters, or delivered documents when a
        // delivery time range says so (event replay)
        filter.state = Some(
            if filter.delivered_since_ms.is_some() || filter.delivered_until_ms.is_some() {
                DeliveryState::Delivered
            } else {
                DeliveryState::Dead
            },
        );
    }
    let mut count = 0u64;
    let mut failed = Vec::new();
    for rt in stores(snapshot, filter.queue.as_deref()) {
        let mut after: Option<String> = None;
        loop {
            let page = rt
                .store
                .list(&filter, after.as_deref(), MAX_PAGE)
                .await
                .map_err(store_failed)?;
            let Some(last) = page.last() else { break };
            after = Some(last.record.id.clone());
            for d in &page {
                let owner = snapshot
                    .queues
                    .iter()
                    .find(|x| *x.queue.name == *d.record.queue && Arc::ptr_eq(&x.store, &rt.store))
                    .unwrap_or(rt);
                match apply(snapshot, metrics, owner, d, op, q.retransform, now).await {
                    Ok(true) => count += 1,
                    Ok(false) => {}
                    Err((_, body)) => failed.push(json!({
                        "delivery_id": d.record.id,
                        "detail": body.get("detail"),
                    })),
                }
            }
            if page.len() < MAX_PAGE {
                break;
            }
        }
    }
    let key = if op == Bulk::Replay {
        "replayed"
    } else {
        "purged"
    };
    Ok((StatusCode::OK, json!({ key: count, "failed": failed })))
}

/// How long ago, for humans (`gateway deliveries` prints it).
pub fn age(ms: u64) -> String {
    humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_times_states_and_refuse_unknown_parameters() {
        let now = 10_000_000;
        let q = parse_query(
            Some("channel=walmart&state=dead&since=1h&limit=5&retransform=true"),
            now,
        )
        .unwrap();
        assert_eq!(q.filter.channel.as_deref(), Some("walmart"));
        assert_eq!(q.filter.state, Some(DeliveryState::Dead));
        assert_eq!(q.filter.since_ms, Some(now - 3_600_000));
        assert_eq!(q.limit, 5);
        assert!(q.retransform && q.narrowed);
        let t = parse_query(Some("since=2026-12-01T00%3A00%3A00Z"), now).unwrap();
        assert_eq!(t.filter.since_ms, Some(1_796_083_200_000));
        assert!(parse_query(Some("state=lost"), now).is_err());
        assert!(parse_query(Some("colour=red"), now).is_err());
        assert!(!parse_query(None, now).unwrap().narrowed);
    }
}
