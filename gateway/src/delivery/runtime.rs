//! The queues a snapshot delivers through. A queue's store is opened once per file (the
//! embedded store locks its file) and kept across reloads; a queue whose
//! settings did not change keeps its runtime, so its workers go on undisturbed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use policies::clock::Clock;
use policies::queue::{Queue, QueueStore};
use policies::state::delivery::embedded::EmbeddedDeliveries;
use policies::state::delivery::{Deliveries, RedisDeliveries, RedisDeliveryOptions};
use policies::state::redis::RedisStore;
use tokio::sync::Notify;

use crate::delivery::DeliveryMetrics;

/// A queue as the gateway runs it.
#[derive(Debug)]
pub struct QueueRuntime {
    /// Its compiled settings.
    pub queue: Arc<Queue>,
    /// Where its deliveries are.
    pub store: Arc<Deliveries>,
    /// Wakes its dispatcher when a document was stored (or replayed) here.
    pub wake: Notify,
    /// The clock deliveries are scheduled by (the policies' clock).
    pub clock: Arc<dyn Clock>,
}

impl QueueRuntime {
    /// Now, in unix milliseconds of the queue's clock.
    pub fn clock_ms(&self) -> u64 {
        self.clock.unix_time().as_millis() as u64
    }
}

/// The stores opened so far, by file, kept across reloads; and this process's name among the
/// instances sharing Redis queues.
pub struct DeliveryStores {
    embedded: Mutex<HashMap<PathBuf, Arc<Deliveries>>>,
    instance: String,
}

impl Default for DeliveryStores {
    fn default() -> Self {
        DeliveryStores {
            embedded: Mutex::default(),
            instance: instance_name(),
        }
    }
}

/// `<host>-<pid>-<random>`: unique per process (a restarted instance is a new consumer, so it
/// never mistakes a dead process's claims for its own), readable in `XINFO CONSUMERS`.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl std::fmt::Debug for DeliveryStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryStores").finish_non_exhaustive()
    }
}

impl DeliveryStores {
    /// The store of `queue`, opened now if it is the first queue using it. An unreadable or
    /// corrupt embedded store is an error naming its file.
    pub fn open(
        &self,
        queue: &Queue,
        redis: Option<&Arc<RedisStore>>,
        metrics: &DeliveryMetrics,
    ) -> Result<Arc<Deliveries>, String> {
        match &queue.store {
            QueueStore::Embedded(path) => {
                let mut opened = self.embedded.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(s) = opened.get(path) {
                    return Ok(s.clone());
                }
                let fsyncs = metrics.fsyncs.clone();
                let per_fsync = metrics.records_per_fsync.clone();
                let store = EmbeddedDeliveries::open_with(
                    path,
                    Arc::new(move |records: usize| {
                        fsyncs.inc();
                        per_fsync.observe(records as f64);
                    }),
                )
                .map_err(|e| e.to_string())?;
                let store = Arc::new(Deliveries::Embedded(store));
                opened.insert(path.clone(), store.clone());
                Ok(store)
            }
            QueueStore::Redis { partitions } => {
                let redis = redis.ok_or_else(|| {
                    format!(
                        "queue {:?}: store: redis needs the file's redis",
                        queue.name
                    )
                })?;
                // one per queue: it carries the queue's partition count and lease
                Ok(Arc::new(Deliveries::Redis(RedisDeliveries::new(
                    redis.clone(),
                    &self.instance,
                    RedisDeliveryOptions {
                        partitions: *partitions,
                        partition_lease_ms: queue.lease.as_millis() as u64,
                    },
                ))))
            }
        }
    }
}

/// The runtime of each queue of a new snapshot: the previous one's when the queue did not
/// change, a new one otherwise.
pub fn queue_runtimes(
    queues: &[Arc<Queue>],
    redis: Option<&Arc<RedisStore>>,
    stores: &DeliveryStores,
    metrics: &DeliveryMetrics,
    clock: &Arc<dyn Clock>,
    previous: &[Arc<QueueRuntime>],
) -> Result<Vec<Arc<QueueRuntime>>, String> {
    let mut out = Vec::with_capacity(queues.len());
    for q in queues {
        if let Some(prev) = previous
            .iter()
            .find(|p| p.queue.name == q.name && p.queue.spec == q.spec && p.queue.store == q.store)
        {
            out.push(prev.clone());
            continue;
        }
        let store = stores.open(q, redis, metrics)?;
        out.push(Arc::new(QueueRuntime {
            queue: q.clone(),
            store,
            wake: Notify::new(),
            clock: clock.clone(),
        }));
    }
    Ok(out)
}
