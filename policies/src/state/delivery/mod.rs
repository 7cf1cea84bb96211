//! Store-and-forward: the documents a `queued` or `fallback` route accepted, stored durably
//! until a worker delivered them, behind [`DeliveryStore`], with an embedded implementation on
//! local disk (`embedded`); Redis Streams are to follow. A store holds every queue of a
//! gateway; the gateway's workers drive it (claim what is due, attempt, settle) and its admin
//! API reads and replays it. Times are unix milliseconds passed in, so tests move time by hand.
//!
//! Ordering: deliveries that share an ordering key are attempted one at a time, oldest first;
//! a dead letter parks its key (the later ones are `blocked`) until it is requeued or purged.
//!
//! Last writer wins: a store also keeps, per queue and ordering key, the highest `sequence`
//! noted for it ([`DeliveryStore::note_sequence`]), so an older state of a SKU that is still
//! queued can be settled [`Settle::Superseded`] instead of being sent after a newer one.

mod any;
pub mod embedded;
mod inbox;
pub mod redis;
mod replies;

use std::future::Future;

use serde::{Deserialize, Serialize};

pub use self::redis::{RedisDeliveries, RedisDeliveryOptions};
pub use any::Deliveries;
pub use embedded::{CommitHook, EmbeddedDeliveries, GroupCommit};

/// The format version written in every record; a reader refuses a newer one by name.
pub const FORMAT_VERSION: u32 = 1;

/// What a route stored: everything a delivery (and later capabilities: fan-out, tracing) needs,
/// so that none of them needs a migration. Immutable once stored, except that a replay may
/// replace `body` when the mapping was fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// [`FORMAT_VERSION`] when written.
    pub v: u32,
    /// The delivery id: a UUIDv7 in text, so ids sort by acceptance time.
    pub id: String,
    /// The queue it is in.
    pub queue: String,
    /// The route that accepted it.
    pub route: String,
    /// The channel it came from, if the route knows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Where it goes.
    pub destination: Destination,
    /// The headers sent upstream with it (content type, the gateway's request headers), the
    /// `Idempotency-Key` excepted (that is [`DeliveryRecord::upstream_key`]).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The body sent upstream: the canonical document.
    pub body: String,
    /// The body the caller sent (before any transform), for operators and re-transforms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// The `Idempotency-Key` every attempt sends upstream (made before the first attempt, the
    /// sync one included).
    pub upstream_key: String,
    /// Deliveries with the same key are delivered in acceptance order; `None`: unordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// The caller's W3C `traceparent`, so delivery spans can link to the accepting request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The caller's W3C `tracestate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// The gateway request id that accepted it.
    #[serde(default)]
    pub request_id: String,
    /// When it was accepted.
    pub accepted_at_ms: u64,
    /// The source's order of the state it carries within its ordering key (higher is newer),
    /// for last-writer-wins deliveries (inventory snapshots); `None`: not ordered so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// The upstream's name in the policy file.
    pub upstream: String,
    /// The HTTP method.
    pub method: String,
    /// The upstream path and query, already rendered.
    pub path: String,
    /// The mapping that made `body` (`<channel>/<document>`), for re-transforms and fan-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<String>,
    /// The outbound operation of a marketplace delivery (`shipment`, `inventory`); `None` for
    /// the other deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// A worker holds it (an attempt may be on its way).
    InFlight,
    /// Pending, but a dead letter with its ordering key is ahead of it.
    Blocked,
    /// The upstream acknowledged it.
    Delivered,
    /// Given up: a permanent failure, or out of attempts or age. Parks its ordering key.
    Dead,
    /// Never sent: a newer sequence of its ordering key was accepted (last writer wins). Final;
    /// parks nothing and is not a dead letter.
    Superseded,
}

impl DeliveryState {
    /// The name used in the API, metrics and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Blocked => "blocked",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Superseded => "superseded",
        }
    }

    /// Whether the delivery is over (nothing more will be attempted unless replayed).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryState::Delivered | DeliveryState::Dead | DeliveryState::Superseded
        )
    }

    /// Whether it is over and off its queue: it counts against no limit, holds no ordering
    /// key, and is kept only to be read back until pruned (delivered or superseded).
    pub fn is_done(self) -> bool {
        matches!(self, DeliveryState::Delivered | DeliveryState::Superseded)
    }
}

/// One attempt, as kept in the delivery's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// When it started.
    pub at_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// The upstream's status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed, if it did (a transport error, or the status's meaning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The upstream's answer to the delivered attempt, as the sync path would have answered the
/// caller (response policies applied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    /// Its status.
    pub status: u16,
    /// Its content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Its body.
    pub body: String,
}

/// The mutable part of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStatus {
    /// Where it is.
    pub state: DeliveryState,
    /// Every attempt so far, oldest first (a store may keep only the latest ones).
    pub attempts: Vec<AttemptRecord>,
    /// Attempts made in all (including those no longer kept).
    pub attempt_count: u32,
    /// When it may next be attempted.
    pub next_attempt_at_ms: u64,
    /// The answer, once delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<StoredAnswer>,
    /// Why it is dead (or, when superseded, by which sequence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was last delivered (event replay selects on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at_ms: Option<u64>,
    /// When the status last changed.
    pub updated_at_ms: u64,
    /// Times it was replayed.
    #[serde(default)]
    pub replays: u32,
}

impl DeliveryStatus {
    /// The status of a delivery just accepted, due at once.
    pub fn accepted(now_ms: u64) -> Self {
        DeliveryStatus {
            state: DeliveryState::Pending,
            attempts: Vec::new(),
            attempt_count: 0,
            next_attempt_at_ms: now_ms,
            answer: None,
            reason: None,
            delivered_at_ms: None,
            updated_at_ms: now_ms,
            replays: 0,
        }
    }

    /// Records that an attempt ended with `outcome` (every store settles this way).
    pub fn settle(&mut self, attempt: Option<&AttemptRecord>, outcome: &Settle, now_ms: u64) {
        // A release means nothing was sent (or it was cut short by shutdown), and a superseded
        // delivery is never sent: neither is an attempt.
        if !matches!(outcome, Settle::Release(_) | Settle::Superseded(_)) {
            self.attempt_count = self.attempt_count.saturating_add(1);
            if let Some(a) = attempt {
                self.attempts.push(a.clone());
                let extra = self.attempts.len().saturating_sub(KEPT_ATTEMPTS);
                self.attempts.drain(..extra);
            }
        }
        match outcome {
            Settle::Delivered(answer) => {
                self.state = DeliveryState::Delivered;
                self.answer = Some(answer.clone());
                self.delivered_at_ms = Some(now_ms);
                self.reason = None;
            }
            Settle::RetryAt(at) | Settle::Release(at) => {
                self.state = DeliveryState::Pending;
                self.next_attempt_at_ms = *at;
            }
            Settle::Dead(reason) => {
                self.state = DeliveryState::Dead;
                self.reason = Some(reason.clone());
            }
            Settle::Superseded(newer) => {
                self.state = DeliveryState::Superseded;
                self.reason = Some(format!("superseded by sequence {newer}"));
            }
        }
        self.updated_at_ms = now_ms;
    }
}

/// The most attempts a delivery's history keeps (the count goes on).
pub const KEPT_ATTEMPTS: usize = 20;

/// A delivery: its record and its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// What was stored.
    pub record: DeliveryRecord,
    /// Where it is.
    pub status: DeliveryStatus,
}

/// A delivery a worker claimed: it holds it until it settles it or `lease_ms` passes (after
/// which, or after a restart, another worker may claim it again).
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The delivery.
    pub delivery: Delivery,
    /// Proves the claim when settling (a store-specific handle).
    pub lease: String,
}

/// How an attempt ended, for [`DeliveryStore::settle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Acknowledged by the upstream.
    Delivered(StoredAnswer),
    /// Try again at this time.
    RetryAt(u64),
    /// Give up, for this reason.
    Dead(String),
    /// Put back untouched (shutdown, or the upstream refused before sending): due at this
    /// time, the attempt not counted.
    Release(u64),
    /// Not sent because a newer sequence of its ordering key was accepted (the newer one):
    /// final, the attempt not counted, its ordering key free for the next delivery.
    Superseded(u64),
}

/// Which deliveries an operator means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// In this queue.
    #[serde(default)]
    pub queue: Option<String>,
    /// From this channel.
    #[serde(default)]
    pub channel: Option<String>,
    /// In this state.
    #[serde(default)]
    pub state: Option<DeliveryState>,
    /// Accepted at or after (unix ms).
    #[serde(default)]
    pub since_ms: Option<u64>,
    /// Accepted before (unix ms).
    #[serde(default)]
    pub until_ms: Option<u64>,
    /// Delivered at or after (unix ms): event replay after an ERP restore.
    #[serde(default)]
    pub delivered_since_ms: Option<u64>,
    /// Delivered before (unix ms).
    #[serde(default)]
    pub delivered_until_ms: Option<u64>,
}

impl Filter {
    /// Whether `d` matches (state as computed by the store, `blocked` included).
    pub fn matches(&self, d: &Delivery) -> bool {
        let r = &d.record;
        let s = &d.status;
        self.queue.as_deref().is_none_or(|q| q == r.queue)
            && self
                .channel
                .as_deref()
                .is_none_or(|c| r.channel.as_deref() == Some(c))
            && self.state.is_none_or(|st| st == s.state)
            && self.since_ms.is_none_or(|t| r.accepted_at_ms >= t)
            && self.until_ms.is_none_or(|t| r.accepted_at_ms < t)
            && self
                .delivered_since_ms
                .is_none_or(|t| s.delivered_at_ms.is_some_and(|d| d >= t))
            && self
                .delivered_until_ms
                .is_none_or(|t| s.delivered_at_ms.is_some_and(|d| d < t))
    }
}

/// Per-queue limits, checked on every enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most deliveries not yet final (pending, in flight, blocked, dead).
    pub max_entries: u64,
    /// Most bytes of their records.
    pub max_bytes: u64,
}

/// What a queue holds, for metrics and the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Deliveries not final (pending, in flight, blocked).
    pub depth: u64,
    /// Dead letters.
    pub dead: u64,
    /// Bytes of the records counted against `max_bytes`.
    pub bytes: u64,
    /// Acceptance time of the oldest delivery not final, if any.
    pub oldest_pending_ms: Option<u64>,
    /// The dead letters per channel (only channels that have some), by channel name.
    #[serde(default)]
    pub dead_by_channel: Vec<ChannelDeadLetters>,
}

/// The dead letters of one channel in a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDeadLetters {
    /// The channel; `None` for deliveries accepted without one.
    pub channel: Option<String>,
    /// How many.
    pub dead: u64,
    /// Acceptance time of the oldest of them.
    pub oldest_accepted_ms: u64,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The queue is at `max_entries` or `max_bytes`: the caller gets 503 with `Retry-After`.
    #[error("queue {queue:?} is full ({what})")]
    Full {
        /// The queue.
        queue: String,
        /// Which limit (`entries` or `bytes`).
        what: &'static str,
    },
    /// The store cannot be opened or read: names the path (or URL) and the cause.
    #[error("delivery store {location}: {message}")]
    Unreadable {
        /// The file or Redis it is at.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// A record written by a newer gateway.
    #[error(
        "delivery record {id} has format version {found}, newer than this gateway's {FORMAT_VERSION}"
    )]
    NewerFormat {
        /// The record.
        id: String,
        /// Its version.
        found: u32,
    },
    /// Writing or reading failed (disk, Redis).
    #[error("delivery store failed: {0}")]
    Failed(String),
    /// The lease does not hold this delivery any more (it ran out and another worker took it).
    #[error("the lease of delivery {0} was lost")]
    LeaseLost(String),
}

/// A delivery store. An implementation must make `enqueue` durable before it returns (the
/// caller then answers 202), and must never hand two workers the same ordering key at once.
pub trait DeliveryStore: Send + Sync {
    /// Stores a new delivery, due at once; returns when it is durable. `Full` past the queue's
    /// limits.
    fn enqueue(
        &self,
        record: DeliveryRecord,
        limits: QueueLimits,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;

    /// Stores the deliveries of one accepted event (one per destination), each due at once;
    /// returns when they are durable. The embedded store stores all or none (one transaction:
    /// `Full` if any of them would not fit). Redis stores them one by one in order and stops
    /// at the first failure, the ones before it kept: enqueueing an id already stored is a
    /// no-op there, so the caller's retry of the whole batch stores only what is missing.
    fn enqueue_batch(
        &self,
        records: Vec<DeliveryRecord>,
        limits: QueueLimits,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;

    /// The last-writer-wins register of (`queue`, `ordering_key`), durable: atomically, if
    /// `seq` is at least the highest sequence noted so far (or none was), it becomes the
    /// highest and the answer is true; else nothing changes and the answer is false. Equal is
    /// accepted: a retried identical event.
    fn note_sequence(
        &self,
        queue: &str,
        ordering_key: &str,
        seq: u64,
    ) -> impl Future<Output = Result<bool, DeliveryError>> + Send;

    /// The highest sequence noted for (`queue`, `ordering_key`), if any.
    fn latest_sequence(
        &self,
        queue: &str,
        ordering_key: &str,
    ) -> impl Future<Output = Result<Option<u64>, DeliveryError>> + Send;

    /// Claims up to `max` deliveries of `queue` due at `now_ms`: per ordering key only the
    /// oldest not final, and only if no other worker holds that key and no dead letter parks
    /// it. Each is held until settled or until `now_ms + lease_ms`.
    fn claim(
        &self,
        queue: &str,
        max: usize,
        now_ms: u64,
        lease_ms: u64,
    ) -> impl Future<Output = Result<Vec<Claimed>, DeliveryError>> + Send;

    /// Ends a claim: records `attempt` (unless the outcome is `Release` or `Superseded`) and
    /// the outcome.
    fn settle(
        &self,
        claimed: &Claimed,
        attempt: Option<AttemptRecord>,
        outcome: Settle,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;

    /// One delivery by id, with its state as of now (`blocked` computed).
    fn get(&self, id: &str)
    -> impl Future<Output = Result<Option<Delivery>, DeliveryError>> + Send;

    /// Deliveries matching `filter`, oldest first, at most `limit`, starting after the id
    /// `after` (paging).
    fn list(
        &self,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, DeliveryError>> + Send;

    /// Makes a dead, delivered or superseded delivery pending again, due at `now_ms` (its history kept,
    /// `replays` counted; a new `body` when the mapping was re-run). False when it does not
    /// exist or is not final.
    fn requeue(
        &self,
        id: &str,
        body: Option<String>,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, DeliveryError>> + Send;

    /// Removes a delivery that is not in flight (unparking its ordering key when it was dead).
    /// False when it does not exist or a worker holds it.
    fn purge(&self, id: &str) -> impl Future<Output = Result<bool, DeliveryError>> + Send;

    /// What each queue holds.
    fn stats(&self, queue: &str) -> impl Future<Output = Result<QueueStats, DeliveryError>> + Send;

    /// The earliest time a delivery of `queue` not held by a worker becomes due, so an idle
    /// worker knows how long it may sleep (`None`: nothing pending).
    fn next_due(
        &self,
        queue: &str,
    ) -> impl Future<Output = Result<Option<u64>, DeliveryError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_names_its_version() {
        let r = DeliveryRecord {
            v: FORMAT_VERSION,
            id: "0190-a".into(),
            queue: "erp".into(),
            route: "amazon-orders".into(),
            channel: Some("amazon".into()),
            destination: Destination {
                upstream: "erp".into(),
                method: "POST".into(),
                path: "/erp/v1/orders?channel=amazon".into(),
                mapping: Some("amazon/order".into()),
                operation: None,
            },
            headers: vec![("content-type".into(), "application/json".into())],
            body: "{}".into(),
            original: Some("{\"a\":1}".into()),
            upstream_key: "\"k\"".into(),
            ordering_key: Some("amazon:1".into()),
            traceparent: None,
            tracestate: None,
            request_id: "r1".into(),
            accepted_at_ms: 5,
            sequence: None,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.starts_with("{\"v\":1,"), "{text}");
        let back: DeliveryRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_record_without_the_fan_out_fields_reads_and_writes_none_of_them() {
        let old = serde_json::json!({
            "v": 1, "id": "x", "queue": "erp", "route": "r",
            "destination": {"upstream": "erp", "method": "POST", "path": "/"},
            "body": "{}", "upstream_key": "k", "accepted_at_ms": 100
        });
        let r: DeliveryRecord = serde_json::from_value(old).unwrap();
        assert_eq!(
            (r.sequence, r.destination.operation.as_deref()),
            (None, None)
        );
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            !text.contains("sequence") && !text.contains("operation"),
            "{text}"
        );
        let mut new = r;
        new.sequence = Some(u64::MAX);
        new.destination.operation = Some("inventory".into());
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains("\"sequence\":18446744073709551615"), "{text}");
        assert!(text.contains("\"operation\":\"inventory\""), "{text}");
        let back: DeliveryRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, new);
    }

    #[test]
    fn superseding_is_final_and_not_an_attempt() {
        let mut st = DeliveryStatus::accepted(1);
        let attempt = AttemptRecord {
            at_ms: 2,
            duration_ms: 1,
            status: None,
            error: None,
        };
        st.settle(Some(&attempt), &Settle::Superseded(9), 5);
        assert_eq!(st.state, DeliveryState::Superseded);
        assert_eq!((st.attempt_count, st.attempts.len()), (0, 0));
        assert_eq!(st.reason.as_deref(), Some("superseded by sequence 9"));
        assert_eq!((st.updated_at_ms, st.delivered_at_ms), (5, None));
        let state = DeliveryState::Superseded;
        assert!(state.is_final() && state.is_done());
        assert!(DeliveryState::Dead.is_final() && !DeliveryState::Dead.is_done());
        assert_eq!(state.as_str(), "superseded");
        assert_eq!(serde_json::to_value(state).unwrap(), "superseded");
        let filter: Filter = serde_json::from_str(r#"{"state": "superseded"}"#).unwrap();
        assert_eq!(filter.state, Some(state));
    }

    #[test]
    fn filters_select_on_channel_state_and_times() {
        let mut d = Delivery {
            record: serde_json::from_value(serde_json::json!({
                "v": 1, "id": "x", "queue": "erp", "route": "r", "channel": "walmart",
                "destination": {"upstream": "erp", "method": "POST", "path": "/"},
                "body": "{}", "upstream_key": "k", "accepted_at_ms": 100
            }))
            .unwrap(),
            status: DeliveryStatus::accepted(100),
        };
        let dead_walmart = Filter {
            channel: Some("walmart".into()),
            state: Some(DeliveryState::Dead),
            since_ms: Some(50),
            ..Filter::default()
        };
        assert!(!dead_walmart.matches(&d));
        d.status.state = DeliveryState::Dead;
        assert!(dead_walmart.matches(&d));
        let later = Filter {
            since_ms: Some(101),
            ..dead_walmart.clone()
        };
        assert!(!later.matches(&d));
        let delivered = Filter {
            delivered_since_ms: Some(0),
            ..Filter::default()
        };
        assert!(!delivered.matches(&d), "never delivered");
        d.status.delivered_at_ms = Some(7);
        assert!(delivered.matches(&d));
    }
}
