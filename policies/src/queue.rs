//! Store-and-forward in the policy file: the `queues` a route's accepted documents wait in
//! (their store, limits, workers and retry schedule) and a route's `delivery` mode, checked
//! and compiled into [`Queue`] and [`RouteDelivery`]. Opening a queue's store is the gateway's
//! job at start, not the compile's, so `gateway check` never creates or locks a data file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::state::StoreKind;
use crate::state::delivery::QueueLimits;
use crate::units::{ByteSize, DurationSpec};

/// A store-and-forward queue: where the documents of `queued` and `fallback` routes wait,
/// durably, until a worker delivered them to their upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// `local`: the embedded store on this machine's disk (no other service); `redis`: Redis
    /// Streams on the file's `redis`, shared by every gateway instance.
    #[serde(default)]
    pub store: StoreKind,
    /// The embedded store's file (`store: local`), relative to this policy file; queues naming
    /// the same file share it (and its group commits). Default: `deliveries.redb`.
    #[serde(default)]
    pub path: Option<String>,
    /// Deliveries attempted at once from this queue by one instance. The upstream's
    /// `max_in_flight` and `max_rate` still bound what it is sent.
    #[serde(default = "default_workers")]
    #[schemars(range(min = 1, max = 1024))]
    pub workers: u32,
    /// Most deliveries waiting (pending, blocked or dead); past it a route answers 503 with
    /// `Retry-After`, never dropping a document silently.
    #[serde(default = "default_max_entries")]
    #[schemars(range(min = 1))]
    pub max_entries: u64,
    /// Most bytes of stored records waiting; past it, 503 as for `max_entries`.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// When to try again, and when to give up.
    #[serde(default)]
    pub retry: DeliveryRetrySpec,
    /// How long a worker holds a delivery before another worker (or instance) may take it
    /// over; must exceed the upstreams' `total_timeout`. Absent: twice the longest one, and at
    /// least 10s.
    #[serde(default)]
    pub lease: Option<DurationSpec>,
    /// How often an idle worker looks for due deliveries (a new document wakes the workers of
    /// this instance at once; this bounds how late another instance's are seen).
    #[serde(default = "default_poll")]
    pub poll_interval: DurationSpec,
    /// `store: redis`: ordering keys hash into this many partition streams, each read by one
    /// instance at a time.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1024))]
    pub partitions: u32,
    /// Delivered documents are kept this long (for reading them back and for event replay),
    /// then removed.
    #[serde(default = "default_retention")]
    pub keep_delivered: DurationSpec,
}

/// The retry schedule of a queue's deliveries: exponential backoff with full jitter, an
/// upstream's `Retry-After` honoured (up to `max_backoff`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryRetrySpec {
    /// Wait before the second attempt.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: DurationSpec,
    /// Longest wait between attempts.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: DurationSpec,
    /// Attempts before a delivery becomes a dead letter.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1))]
    pub max_attempts: u32,
    /// Age (since acceptance) past which a failing delivery becomes a dead letter.
    #[serde(default = "default_max_age")]
    pub max_age: DurationSpec,
}

impl Default for DeliveryRetrySpec {
    fn default() -> Self {
        DeliveryRetrySpec {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            max_attempts: default_max_attempts(),
            max_age: default_max_age(),
        }
    }
}

fn default_workers() -> u32 {
    8
}
fn default_max_entries() -> u64 {
    100_000
}
fn default_max_bytes() -> ByteSize {
    ByteSize::mib(512)
}
fn default_poll() -> DurationSpec {
    DurationSpec::millis(200)
}
fn default_partitions() -> u32 {
    16
}
fn default_retention() -> DurationSpec {
    DurationSpec::secs(7 * 24 * 3600)
}
fn default_initial_backoff() -> DurationSpec {
    DurationSpec::secs(1)
}
fn default_max_backoff() -> DurationSpec {
    DurationSpec::secs(300)
}
fn default_max_attempts() -> u32 {
    25
}
fn default_max_age() -> DurationSpec {
    DurationSpec::secs(72 * 3600)
}

/// How a route hands its documents to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Forward now and answer with the upstream's answer.
    #[default]
    Sync,
    /// Store the (validated, transformed) document and answer `202 Accepted` with its
    /// delivery's `Location`; a worker delivers it.
    Queued,
    /// Forward now; when the upstream cannot take it (a failed connection, a 5xx, a timeout,
    /// a full `max_in_flight`, an open circuit), store it and answer 202 instead of an error.
    Fallback,
}

impl DeliveryMode {
    /// The name, as written.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::Sync => "sync",
            DeliveryMode::Queued => "queued",
            DeliveryMode::Fallback => "fallback",
        }
    }
}

/// A route's delivery: how, and through which queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteDeliverySpec {
    /// `sync` (the default), `queued` or `fallback`.
    #[serde(default)]
    pub mode: DeliveryMode,
    /// The queue (under `queues`) of `queued` and `fallback` routes.
    #[serde(default)]
    pub queue: Option<String>,
    /// A JSON pointer into the document sent upstream (the canonical one, after any transform)
    /// whose value orders deliveries: documents with the same value (prefixed with the
    /// channel) are delivered one at a time in acceptance order, so an order update never
    /// overtakes its creation. Absent: each document is delivered on its own.
    #[serde(default)]
    pub ordering_key: Option<String>,
}

/// A compiled queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// Its name.
    pub name: Arc<str>,
    /// Where its deliveries are kept.
    pub store: QueueStore,
    /// Its limits.
    pub limits: QueueLimits,
    /// Concurrent deliveries per instance.
    pub workers: u32,
    /// The retry schedule.
    pub retry: DeliveryRetry,
    /// How long a claim holds a delivery.
    pub lease: Duration,
    /// Idle workers look this often.
    pub poll_interval: Duration,
    /// How long delivered documents are kept.
    pub keep_delivered: Duration,
    /// The spec, so the gateway keeps a queue's workers when a reload did not change it.
    pub spec: QueueSpec,
}

/// Where a queue's deliveries are kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueueStore {
    /// The embedded store in this file (absolute).
    Embedded(PathBuf),
    /// Redis Streams on the file's Redis, in this many partitions.
    Redis {
        /// Partition streams.
        partitions: u32,
    },
}

/// A compiled retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRetry {
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// Age before giving up.
    pub max_age: Duration,
}

impl DeliveryRetry {
    /// The wait after attempt number `attempt` (1 for the first) failed: exponential with full
    /// jitter (`unit` in [0, 1) picks the point), at least the upstream's `retry_after`, never
    /// more than `max_backoff`.
    pub fn backoff(&self, attempt: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_backoff);
        // half fixed, half jittered: never a zero wait, still spread out
        let jittered = exp / 2 + exp.mul_f64(unit.clamp(0.0, 1.0) / 2.0);
        jittered
            .max(retry_after.unwrap_or(Duration::ZERO))
            .min(self.max_backoff)
    }
}

/// A compiled route delivery (only for `queued` and `fallback` routes).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteDelivery {
    /// `queued` or `fallback`.
    pub mode: DeliveryMode,
    /// Index of the queue in the set's queues.
    pub queue: usize,
    /// The pointer whose value orders deliveries.
    pub ordering_key: Option<String>,
    /// Whether callers may read their deliveries at `<path>/deliveries/{id}` (the route
    /// authenticates callers with a token, which then guards the read too).
    pub readable: bool,
}

/// Compiles one queue; errors are (pointer under the queue, message).
pub fn compile_queue(
    name: &str,
    spec: &QueueSpec,
    base_dir: &Path,
    has_redis: bool,
    max_total_timeout: Duration,
) -> Result<Queue, Vec<(&'static str, String)>> {
    let mut errors = Vec::new();
    let store = match spec.store {
        StoreKind::Local => {
            let file = spec.path.as_deref().unwrap_or("deliveries.redb");
            QueueStore::Embedded(base_dir.join(file))
        }
        StoreKind::Redis => {
            if !has_redis {
                errors.push((
                    "/store",
                    "store: redis needs the file's `redis` section".to_owned(),
                ));
            }
            if spec.path.is_some() {
                errors.push(("/path", "path only applies with store: local".to_owned()));
            }
            QueueStore::Redis {
                partitions: spec.partitions,
            }
        }
    };
    if spec.workers == 0 {
        errors.push(("/workers", "a queue needs at least one worker".to_owned()));
    }
    if spec.max_entries == 0 || spec.max_bytes.0 == 0 {
        errors.push((
            "/max_entries",
            "max_entries and max_bytes must be above zero".to_owned(),
        ));
    }
    let r = &spec.retry;
    if r.max_attempts == 0 {
        errors.push(("/retry/max_attempts", "at least one attempt".to_owned()));
    }
    if r.initial_backoff.0.is_zero() || r.initial_backoff.0 > r.max_backoff.0 {
        errors.push((
            "/retry/initial_backoff",
            format!(
                "initial_backoff ({}) must be above zero and at most max_backoff ({})",
                r.initial_backoff, r.max_backoff
            ),
        ));
    }
    let lease = spec.lease.as_ref().map_or_else(
        || (max_total_timeout * 2).max(Duration::from_secs(10)),
        |l| l.0,
    );
    if lease <= max_total_timeout {
        errors.push((
            "/lease",
            format!(
                "lease ({}ms) must exceed the longest upstream total_timeout ({}ms), or a slow attempt's delivery could be taken over while it is still on its way",
                lease.as_millis(),
                max_total_timeout.as_millis()
            ),
        ));
    }
    if spec.poll_interval.0.is_zero() {
        errors.push(("/poll_interval", "must be above zero".to_owned()));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Queue {
        name: Arc::from(name),
        store,
        limits: QueueLimits {
            max_entries: spec.max_entries,
            max_bytes: spec.max_bytes.0,
        },
        workers: spec.workers,
        retry: DeliveryRetry {
            initial_backoff: r.initial_backoff.0,
            max_backoff: r.max_backoff.0,
            max_attempts: r.max_attempts,
            max_age: r.max_age.0,
        },
        lease,
        poll_interval: spec.poll_interval.0,
        keep_delivered: spec.keep_delivered.0,
        spec: spec.clone(),
    })
}

/// Checks a JSON pointer as RFC 6901 writes it.
pub fn check_pointer(p: &str) -> Result<(), String> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err(format!("{p:?} is not a JSON pointer (it starts with '/')"));
    }
    let mut bytes = p.bytes().peekable();
    while let Some(b) = bytes.next() {
        if b == b'~' && !matches!(bytes.peek(), Some(b'0' | b'1')) {
            return Err(format!("{p:?}: '~' must be followed by 0 or 1"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_capped_and_honours_retry_after() {
        let r = DeliveryRetry {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_attempts: 5,
            max_age: Duration::from_secs(60),
        };
        assert_eq!(r.backoff(1, 0.0, None), Duration::from_millis(50));
        assert_eq!(r.backoff(1, 1.0, None), Duration::from_millis(100));
        assert_eq!(r.backoff(3, 1.0, None), Duration::from_millis(400));
        assert_eq!(r.backoff(30, 1.0, None), Duration::from_secs(2), "capped");
        assert_eq!(
            r.backoff(1, 0.5, Some(Duration::from_secs(1))),
            Duration::from_secs(1),
            "Retry-After is a floor"
        );
        assert_eq!(
            r.backoff(1, 0.5, Some(Duration::from_secs(60))),
            Duration::from_secs(2),
            "but never past max_backoff"
        );
    }

    #[test]
    fn a_lease_shorter_than_an_attempt_is_refused() {
        let spec: QueueSpec = serde_json::from_value(serde_json::json!({"lease": "1s"})).unwrap();
        let errors = compile_queue("q", &spec, Path::new("/tmp"), false, Duration::from_secs(5))
            .unwrap_err();
        assert_eq!(errors[0].0, "/lease");
        let ok = compile_queue(
            "q",
            &spec,
            Path::new("/tmp"),
            false,
            Duration::from_millis(500),
        )
        .unwrap();
        let default: QueueSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        let long = compile_queue(
            "q",
            &default,
            Path::new("/"),
            false,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            long.lease,
            Duration::from_secs(120),
            "twice the longest attempt"
        );
        assert_eq!(
            ok.store,
            QueueStore::Embedded(PathBuf::from("/tmp/deliveries.redb"))
        );
    }

    #[test]
    fn redis_queues_need_the_redis_section() {
        let spec: QueueSpec =
            serde_json::from_value(serde_json::json!({"store": "redis"})).unwrap();
        let errors =
            compile_queue("q", &spec, Path::new("/"), false, Duration::from_secs(1)).unwrap_err();
        assert_eq!(errors[0].0, "/store");
        assert!(
            errors
                .iter()
                .any(|e| e.1.contains("needs the file's `redis`"))
        );
    }

    #[test]
    fn pointers_are_checked() {
        assert!(check_pointer("/id").is_ok());
        assert!(check_pointer("/a~1b").is_ok());
        assert!(check_pointer("id").is_err());
        assert!(check_pointer("/a~2").is_err());
    }
}
