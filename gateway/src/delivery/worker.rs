//! Delivering what the queues hold. One dispatcher per queue claims what is due (the store
//! hands out, per ordering key, only its oldest delivery) and runs up to `workers` attempts at
//! once; each goes through the forwarding layer (the upstream's `max_in_flight`, `max_rate`,
//! health, breaker and retry rules apply as to any request) with the record's one upstream
//! `Idempotency-Key`. Then the outcome is settled: delivered (the answer mapped back as the
//! sync path would have), tried again later with backoff and jitter (the upstream's
//! `Retry-After` honoured), or given up as a dead letter, which parks its ordering key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use policies::pipeline::{ExchangeState, Flow, ResponseView};
use policies::resilience::backoff::parse_retry_after;
use policies::state::delivery::{
    AttemptRecord, Claimed, Deliveries, DeliveryRecord, DeliveryStore, Settle, StoredAnswer,
};
use tokio::sync::Semaphore;

use crate::delivery::metrics::{DeliveryMetrics, NO_CHANNEL};
use crate::delivery::outbound::{self, Throttle, Turn};
use crate::delivery::runtime::QueueRuntime;
use crate::forward::{self, Attempts, IDEMPOTENCY_KEY, UpstreamError};
use crate::outbound_auth::OutboundAuth;
use crate::snapshot::{ConfigStore, Snapshot};
use crate::telemetry::{DeliverySummary, DeliveryTrace};

/// How a reason is cut in a dead letter (the answer's body can be large).
const REASON_BODY_CHARS: usize = 512;

/// The background service that runs every queue's dispatcher.
pub struct DeliveryService {
    /// Where the current snapshot (and its queues) comes from.
    pub config: Arc<ConfigStore>,
    /// Metrics.
    pub metrics: DeliveryMetrics,
    /// Upstream connections of deliveries (pooled per peer).
    pub connector: Arc<Connector>,
    /// Marketplace calls: their credentials and their turns.
    pub outbound: Arc<Outbound>,
}

/// What deliveries to marketplaces share across queues and reloads.
#[derive(Debug)]
pub struct Outbound {
    /// The marketplaces' pauses and limits.
    pub throttle: Throttle,
    /// Their credentials (tokens cached and refreshed).
    pub auth: OutboundAuth,
}

#[async_trait]
impl BackgroundService for DeliveryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // This runtime keeps the normal scheduling policy, unlike the store's writer and the
        // access log (`policies::background`): as batch work it waited for the request
        // worker's idle moments, so a saturated gateway delivered a third of what it accepted
        // and left the upstream idle while its backlog grew.
        let mut running: Vec<Arc<QueueRuntime>> = Vec::new();
        let mut stats_due = Instant::now();
        let mut prune_due = Instant::now() + Duration::from_secs(60);
        loop {
            let snapshot = self.config.current();
            // start the dispatcher of every queue the snapshot has and none runs for yet
            running.retain(|rt| snapshot.queues.iter().any(|q| Arc::ptr_eq(q, rt)));
            for rt in &snapshot.queues {
                if running.iter().any(|r| Arc::ptr_eq(r, rt)) {
                    continue;
                }
                running.push(rt.clone());
                let dispatcher = Dispatcher {
                    rt: rt.clone(),
                    config: self.config.clone(),
                    metrics: self.metrics.clone(),
                    connector: self.connector.clone(),
                    outbound: self.outbound.clone(),
                };
                let stop = shutdown.clone();
                tokio::spawn(async move { dispatcher.run(stop).await });
            }
            if Instant::now() >= stats_due {
                stats_due = Instant::now() + Duration::from_secs(1);
                record_stats(&self.metrics, &snapshot).await;
            }
            if Instant::now() >= prune_due {
                prune_due = Instant::now() + Duration::from_secs(60);
                prune(&snapshot).await;
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// Removes delivered documents past their queue's `keep_delivered` (a store shared by several
/// queues keeps them as long as the longest of those asks).
async fn prune(snapshot: &Snapshot) {
    let mut done: Vec<&Arc<Deliveries>> = Vec::new();
    for rt in &snapshot.queues {
        if done.iter().any(|s| Arc::ptr_eq(s, &rt.store)) {
            continue;
        }
        done.push(&rt.store);
        let keep = snapshot
            .queues
            .iter()
            .filter(|q| Arc::ptr_eq(&q.store, &rt.store))
            .map(|q| q.queue.keep_delivered)
            .max()
            .unwrap_or_default();
        let cutoff = rt.clock_ms().saturating_sub(keep.as_millis() as u64);
        match rt.store.prune_delivered(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                removed = n,
                "delivered documents past keep_delivered removed"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot remove old delivered documents"),
        }
    }
}

async fn record_stats(metrics: &DeliveryMetrics, snapshot: &Snapshot) {
    for rt in &snapshot.queues {
        let name = &*rt.queue.name;
        let Ok(stats) = rt.store.stats(name).await else {
            continue;
        };
        let m = metrics;
        m.depth.with_label_values(&[name]).set(stats.depth as i64);
        m.dead_letters
            .with_label_values(&[name])
            .set(stats.dead as i64);
        let age = stats
            .oldest_pending_ms
            .map_or(0, |t| rt.clock_ms().saturating_sub(t) / 1000);
        m.oldest_age.with_label_values(&[name]).set(age as i64);
        // every declared channel (and "none") gets its gauges, so one whose dead letters were
        // replayed or purged drops back to 0 instead of keeping its last value
        let channels = snapshot.set.channels.names();
        let named = channels.iter().map(|c| Some(&**c)).chain([None]);
        let extra = stats
            .dead_by_channel
            .iter()
            .map(|d| d.channel.as_deref())
            .filter(|c| c.is_some_and(|c| !channels.iter().any(|n| &**n == c)));
        for channel in named.chain(extra) {
            let dead = stats
                .dead_by_channel
                .iter()
                .find(|d| d.channel.as_deref() == channel);
            let label = [name, channel.unwrap_or(NO_CHANNEL)];
            m.channel_dead_letters
                .with_label_values(&label)
                .set(dead.map_or(0, |d| d.dead) as i64);
            let age = dead.map_or(0, |d| {
                rt.clock_ms().saturating_sub(d.oldest_accepted_ms) / 1000
            });
            m.oldest_dead_age.with_label_values(&label).set(age as i64);
        }
    }
}

/// The dispatcher of one queue.
struct Dispatcher {
    rt: Arc<QueueRuntime>,
    config: Arc<ConfigStore>,
    metrics: DeliveryMetrics,
    connector: Arc<Connector>,
    outbound: Arc<Outbound>,
}

impl Dispatcher {
    fn current(&self) -> bool {
        self.config
            .current()
            .queues
            .iter()
            .any(|q| Arc::ptr_eq(q, &self.rt))
    }

    async fn run(self, mut shutdown: ShutdownWatch) {
        let queue = self.rt.queue.clone();
        let slots = Arc::new(Semaphore::new(queue.workers as usize));
        let lease_ms = queue.lease.as_millis() as u64;
        let this = Arc::new(self);
        let mut failing = false;
        loop {
            if *shutdown.borrow() || !this.current() {
                return;
            }
            let free = slots.available_permits();
            if free > 0 {
                let now = this.rt.clock_ms();
                match this.rt.store.claim(&queue.name, free, now, lease_ms).await {
                    Ok(claimed) if !claimed.is_empty() => {
                        failing = false;
                        for c in claimed {
                            let Ok(slot) = slots.clone().acquire_owned().await else {
                                return;
                            };
                            let me = this.clone();
                            // boxed where it starts: inline, tokio would copy the attempt's
                            // future into the task's cell and again at each stage of the task
                            tokio::spawn(async move {
                                Box::pin(me.attempt(c)).await;
                                drop(slot);
                                // a freed worker takes the next due delivery at once, not
                                // after the poll interval
                                me.rt.wake.notify_one();
                            });
                        }
                        continue;
                    }
                    Ok(_) => failing = false,
                    Err(e) => {
                        this.metrics
                            .store_errors
                            .with_label_values(&[&queue.name, "claim"])
                            .inc();
                        if !failing {
                            tracing::warn!(queue = %queue.name, error = %e, "cannot claim deliveries");
                        }
                        failing = true;
                    }
                }
            }
            // idle (or every worker busy): wait for a document, a worker, the next due time or
            // the poll interval, whichever comes first
            let mut wait = queue.poll_interval;
            if free > 0
                && let Ok(Some(due)) = this.rt.store.next_due(&queue.name).await
            {
                let now = this.rt.clock_ms();
                wait = wait.min(Duration::from_millis(due.saturating_sub(now)));
            }
            if wait.is_zero() && free == 0 {
                wait = Duration::from_millis(5);
            }
            tokio::select! {
                _ = this.rt.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One attempt of a claimed delivery, then its settlement.
    /// Settles a delivery without an attempt when it need not (or may not yet) be sent: a
    /// newer sequence of its SKU on its channel was accepted (superseded), or the
    /// marketplace's limit or pause says wait (released, not counted as an attempt).
    async fn before_attempt(&self, claimed: &Claimed, snapshot: &Snapshot) -> bool {
        let record = &claimed.delivery.record;
        let queue = &*self.rt.queue.name;
        let channel = record.channel.as_deref().unwrap_or(NO_CHANNEL);
        let now = self.rt.clock_ms();
        let outcome = 'decide: {
            if let (Some(seq), Some(key)) = (record.sequence, record.ordering_key.as_deref())
                && let Ok(Some(latest)) = self.rt.store.latest_sequence(queue, key).await
                && latest > seq
            {
                break 'decide Some((Settle::Superseded(latest), "superseded"));
            }
            let Some(op) = record.destination.operation.as_deref() else {
                break 'decide None;
            };
            let Some(operation) = snapshot
                .set
                .outbound
                .as_ref()
                .and_then(|o| o.marketplace(channel))
                .and_then(|m| m.operation(op))
            else {
                break 'decide None;
            };
            match self.outbound.throttle.turn(channel, operation, now).await {
                Turn::Go => None,
                Turn::Wait(ms, by_marketplace) => {
                    let source = if by_marketplace {
                        "marketplace_pause"
                    } else {
                        "limit"
                    };
                    self.metrics
                        .outbound
                        .with_label_values(&[channel, op, source])
                        .inc();
                    Some((Settle::Release(now + ms), "released"))
                }
            }
        };
        let Some((settle, label)) = outcome else {
            return false;
        };
        if label != "released" {
            self.metrics
                .outcomes
                .with_label_values(&[queue, channel, label])
                .inc();
        }
        if let Err(e) = self.rt.store.settle(claimed, None, settle, now).await {
            self.metrics
                .store_errors
                .with_label_values(&[queue, "settle"])
                .inc();
            tracing::error!(queue, delivery = %record.id, error = %e, "cannot record a delivery's outcome");
        }
        true
    }

    async fn attempt(&self, claimed: Claimed) {
        let snapshot = self.config.current();
        if self.before_attempt(&claimed, &snapshot).await {
            return;
        }
        let record = &claimed.delivery.record;
        let queue = &*self.rt.queue.name;
        let started_ms = self.rt.clock_ms();
        let t0 = Instant::now();
        let traced = snapshot
            .tracer
            .as_ref()
            .and_then(|t| DeliveryTrace::begin(t, record.traceparent.as_deref()));
        let mut at = Attempts::default();
        if let Some(t) = &traced {
            at.trace(t.trace_id, t.flags);
        }
        let result = deliver(&self.connector, &snapshot, record, &mut at, &self.outbound).await;
        let trace_status = match &result {
            Delivered::Answer { status, .. } => Some(*status),
            _ => None,
        };
        let trace_error = match &result {
            Delivered::Refused(e) => Some(e.describe().to_owned()),
            Delivered::Failed(why) => Some(why.clone()),
            Delivered::Answer { .. } => None,
        };
        let duration_ms = t0.elapsed().as_millis() as u64;
        let retry = self.rt.queue.retry;
        let attempt_no = claimed.delivery.status.attempt_count + 1;
        let age = Duration::from_millis(started_ms.saturating_sub(record.accepted_at_ms));
        let now = self.rt.clock_ms();
        let channel = record.channel.as_deref().unwrap_or(NO_CHANNEL);
        let m = &self.metrics;
        let give_up = |why: String| {
            if attempt_no >= retry.max_attempts || age >= retry.max_age {
                Some(format!("gave up after {attempt_no} attempts: {why}"))
            } else {
                None
            }
        };
        let (attempt, outcome, result_label) = match result {
            Delivered::Answer {
                throttled: Some(wait),
                ..
            } => {
                // the marketplace's 429: every call of the operation waits as it asked; the
                // delivery is put back without spending an attempt
                let op = record.destination.operation.as_deref().unwrap_or("-");
                let until = now + wait.as_millis() as u64;
                self.outbound.throttle.pause(channel, op, until);
                m.outbound
                    .with_label_values(&[channel, op, "marketplace_429"])
                    .inc();
                if age >= retry.max_age {
                    let attempt = AttemptRecord {
                        at_ms: started_ms,
                        duration_ms,
                        status: Some(429),
                        error: Some(describe_status(429)),
                    };
                    let reason = format!("gave up at max_age: {}", describe_status(429));
                    (Some(attempt), Settle::Dead(reason), "retryable")
                } else {
                    (None, Settle::Release(until), "throttled")
                }
            }
            Delivered::Answer {
                status,
                answer,
                refused: Some(why),
                ..
            } => {
                let attempt = AttemptRecord {
                    at_ms: started_ms,
                    duration_ms,
                    status: Some(status),
                    error: Some(why.clone()),
                };
                let reason = format!("{why} ({})", cut(&answer.body, REASON_BODY_CHARS));
                (Some(attempt), Settle::Dead(reason), "permanent")
            }
            Delivered::Answer {
                status,
                answer,
                retry_after,
                ..
            } => {
                let attempt = AttemptRecord {
                    at_ms: started_ms,
                    duration_ms,
                    status: Some(status),
                    error: (status >= 400).then(|| describe_status(status)),
                };
                if status < 400 {
                    (Some(attempt), Settle::Delivered(answer), "ok")
                } else if permanent(status) {
                    let reason = format!(
                        "the upstream refused it ({status}): {}",
                        cut(&answer.body, REASON_BODY_CHARS)
                    );
                    (Some(attempt), Settle::Dead(reason), "permanent")
                } else {
                    let why = describe_status(status);
                    match give_up(why) {
                        Some(reason) => (Some(attempt), Settle::Dead(reason), "retryable"),
                        None => {
                            let wait = retry.backoff(attempt_no, rand::random(), retry_after);
                            (
                                Some(attempt),
                                Settle::RetryAt(now + wait.as_millis() as u64),
                                "retryable",
                            )
                        }
                    }
                }
            }
            Delivered::Refused(e) => {
                // nothing was sent: the attempt does not count, the delivery waits for the
                // upstream to take requests again
                let hint = match e {
                    UpstreamError::CircuitOpen { retry_after }
                    | UpstreamError::NoHealthyEndpoint { retry_after }
                    | UpstreamError::Saturated { retry_after } => retry_after,
                    _ => Duration::ZERO,
                };
                let wait = hint.max(self.rt.queue.poll_interval).min(retry.max_backoff);
                if age >= retry.max_age {
                    let attempt = AttemptRecord {
                        at_ms: started_ms,
                        duration_ms,
                        status: None,
                        error: Some(e.describe().to_owned()),
                    };
                    let reason = format!("gave up at max_age: {}", e.describe());
                    (Some(attempt), Settle::Dead(reason), "refused")
                } else {
                    (
                        None,
                        Settle::Release(now + wait.as_millis() as u64),
                        "refused",
                    )
                }
            }
            Delivered::Failed(why) => {
                let attempt = AttemptRecord {
                    at_ms: started_ms,
                    duration_ms,
                    status: None,
                    error: Some(why.clone()),
                };
                match give_up(why) {
                    Some(reason) => (Some(attempt), Settle::Dead(reason), "retryable"),
                    None => {
                        let wait = retry.backoff(attempt_no, rand::random(), None);
                        (
                            Some(attempt),
                            Settle::RetryAt(now + wait.as_millis() as u64),
                            "retryable",
                        )
                    }
                }
            }
        };
        m.attempts.with_label_values(&[queue, result_label]).inc();
        let label = match &outcome {
            Settle::Delivered(_) => {
                m.ack_seconds
                    .with_label_values(&[channel])
                    .observe(now.saturating_sub(record.accepted_at_ms) as f64 / 1000.0);
                "delivered"
            }
            Settle::RetryAt(_) => "retried",
            Settle::Dead(reason) => {
                tracing::warn!(queue, delivery = %record.id, channel, reason = %reason, "dead letter");
                "dead"
            }
            Settle::Release(_) => "released",
            Settle::Superseded(_) => "superseded",
        };
        if label != "released" {
            m.outcomes.with_label_values(&[queue, channel, label]).inc();
        }
        if let (Some(t), Some(tracer)) = (traced, snapshot.tracer.as_ref()) {
            let summary = DeliverySummary {
                queue,
                delivery: &record.id,
                channel,
                upstream: &record.destination.upstream,
                attempt: attempt_no,
                result: label,
                status: trace_status,
                error: trace_error.as_deref(),
            };
            tracer.record(t.finish(&summary, &at.traced));
        }
        if let Err(e) = self.rt.store.settle(&claimed, attempt, outcome, now).await {
            m.store_errors.with_label_values(&[queue, "settle"]).inc();
            // the lease runs out and the delivery is attempted again, with the same key
            tracing::error!(queue, delivery = %record.id, error = %e, "cannot record a delivery's outcome");
        }
    }
}

/// Whether an upstream status means the document will never be taken as it is: a 4xx other
/// than 408 Request Timeout, 425 Too Early, 429 Too Many Requests, and 409 Conflict, which an
/// upstream honouring `Idempotency-Key` answers while an earlier attempt with the same key is
/// still being processed (the next attempt gets that attempt's answer).
pub fn permanent(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 409 | 425 | 429)
}

fn describe_status(status: u16) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("the upstream answered {status} {reason}")
}

fn cut(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// What one delivery attempt came to.
enum Delivered {
    /// The upstream answered (the answer mapped back as the sync path would).
    Answer {
        status: u16,
        answer: StoredAnswer,
        retry_after: Option<Duration>,
        /// A marketplace's 429, with the wait its rate headers ask for.
        throttled: Option<Duration>,
        /// A marketplace's refusal inside a success status.
        refused: Option<String>,
    },
    /// The forwarding layer did not send it.
    Refused(UpstreamError),
    /// It failed on the way (or the gateway cannot place it).
    Failed(String),
}

/// The request head of a delivery: the stored one, with the upstream's own headers (which may
/// hold secrets and are never stored), its `Host` and the delivery's upstream key.
fn head(
    record: &DeliveryRecord,
    upstream: &policies::model::Upstream,
) -> Result<RequestHeader, String> {
    // No case map: the stored names are lowercase `HeaderName`s, which Pingora writes in the
    // same bytes with or without one (see `respond::write`).
    let mut req = RequestHeader::build_no_case(
        record.destination.method.as_bytes(),
        record.destination.path.as_bytes(),
        Some(record.headers.len() + 4),
    )
    .map_err(|e| format!("stored request head: {e}"))?;
    for (name, value) in &record.headers {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            continue;
        };
        req.append_header(n, v)
            .map_err(|e| format!("stored header: {e}"))?;
    }
    if let Some(host) = &upstream.transport.host {
        req.insert_header(HOST, host.clone())
            .map_err(|e| e.to_string())?;
    }
    for (name, value) in &upstream.request_headers {
        req.insert_header(name.clone(), value.clone())
            .map_err(|e| e.to_string())?;
    }
    let key = HeaderValue::from_str(&record.upstream_key).map_err(|e| e.to_string())?;
    req.insert_header(IDEMPOTENCY_KEY, key)
        .map_err(|e| e.to_string())?;
    Ok(req)
}

async fn deliver(
    connector: &Connector,
    snapshot: &Snapshot,
    record: &DeliveryRecord,
    at: &mut Attempts,
    outbound: &Outbound,
) -> Delivered {
    let Some(index) = snapshot
        .set
        .upstreams
        .iter()
        .position(|u| *u.name == *record.destination.upstream)
    else {
        return Delivered::Failed(format!(
            "upstream {:?} is not in the policy set",
            record.destination.upstream
        ));
    };
    let (Some(upstream), Some(pool)) =
        (snapshot.set.upstreams.get(index), snapshot.pools.get(index))
    else {
        return Delivered::Failed("the upstream has no pool".into());
    };
    let body = Bytes::from(record.body.clone());
    // a refused token is refreshed once and the call made again: a second 401 is the
    // answer, never a loop
    let mut refreshed = false;
    let answer = loop {
        let mut req = match head(record, upstream) {
            Ok(r) => r,
            Err(e) => return Delivered::Failed(e),
        };
        if upstream.credentials.is_some() {
            match outbound.auth.headers(upstream).await {
                Ok(headers) => {
                    for (name, value) in headers {
                        if let Err(e) = req.insert_header(name, value) {
                            return Delivered::Failed(e.to_string());
                        }
                    }
                }
                Err(e) => return Delivered::Failed(format!("no outbound token: {e}")),
            }
        }
        at.begin(pool, Instant::now() + upstream.total_timeout, true);
        at.idempotency_key = req.headers.get(IDEMPOTENCY_KEY).cloned();
        // boxed, as the buffered exchange boxes it: the exchange's future is ~12 KiB, which
        // the timeout and every future around this one would otherwise each copy
        let exchanged = tokio::time::timeout(
            upstream.total_timeout,
            Box::pin(forward::exchange(connector, at, req, &body)),
        )
        .await;
        let forwarded = at.forwarded;
        at.finish();
        let answer = match exchanged {
            Ok(Ok(a)) => a,
            Ok(Err(e)) if !forwarded && e.retry_after().is_some() => {
                return Delivered::Refused(e);
            }
            Ok(Err(e)) => return Delivered::Failed(e.describe().to_owned()),
            Err(_) => {
                pool.metrics.error(&UpstreamError::TotalTimeout);
                return Delivered::Failed(UpstreamError::TotalTimeout.describe().to_owned());
            }
        };
        if answer.head.status == StatusCode::UNAUTHORIZED
            && upstream.credentials.is_some()
            && !refreshed
        {
            refreshed = true;
            outbound.auth.refused(upstream);
            continue;
        }
        break answer;
    };
    let retry_after = answer
        .head
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| parse_retry_after(v.as_bytes(), std::time::SystemTime::now()));
    if let Some(op) = record.destination.operation.as_deref() {
        // a marketplace's answer is kept as it came: the route's response policies map the
        // ERP's answers, not a marketplace's
        let status = answer.head.status.as_u16();
        let throttled = (status == 429).then(|| {
            outbound::wait_after_throttle(&answer.head.headers, std::time::SystemTime::now())
        });
        let refused = if status < 300 {
            outbound::refused_in_body(op, &answer.body)
        } else {
            None
        };
        let content_type = answer
            .head
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        return Delivered::Answer {
            status,
            answer: StoredAnswer {
                status,
                content_type,
                body: String::from_utf8_lossy(&answer.body).into_owned(),
            },
            retry_after,
            throttled,
            refused,
        };
    }
    let (status, content_type, body) = map_back(snapshot, record, answer).await;
    Delivered::Answer {
        status,
        answer: StoredAnswer {
            status,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
        },
        retry_after,
        throttled: None,
        refused: None,
    }
}

/// The route's response policies on the upstream's answer, as the sync path runs them (an ERP
/// acknowledgement mapped to the canonical answer, an ERP error to a problem).
async fn map_back(
    snapshot: &Snapshot,
    record: &DeliveryRecord,
    answer: forward::Answer,
) -> (u16, Option<String>, Bytes) {
    let forward::Answer { head, body } = answer;
    let mut body = body;
    let mut status = head.status;
    let mut headers: HeaderMap = head.headers.clone();
    if let Some(route) = snapshot
        .set
        .routes
        .iter()
        .find(|r| *r.name == *record.route)
    {
        let mut state = ExchangeState {
            request_id: record.request_id.clone(),
            channel: record
                .channel
                .as_deref()
                .and_then(|c| snapshot.set.channels.get(c)),
            route: Some(route.name.clone()),
            ..ExchangeState::default()
        };
        let mut view = ResponseView {
            status,
            headers: &mut headers,
        };
        if let Flow::Continue(()) = route.chain.on_response(&mut view, &mut state).await
            && let Flow::Continue(()) = route
                .chain
                .on_response_body(&mut view, &mut state, &mut body)
                .await
        {
            status = view.status;
        }
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status.as_u16(), content_type, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_4xx_other_than_408_409_425_429_is_permanent() {
        for s in [400, 401, 404, 422] {
            assert!(permanent(s), "{s}");
        }
        for s in [200, 408, 409, 425, 429, 500, 502, 503] {
            assert!(!permanent(s), "{s}");
        }
    }
}
