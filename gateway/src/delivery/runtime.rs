//! The queues a snapshot delivers through. A queue's store is opened once per file (the
//! embedded store locks its file) and kept across reloads; a queue whose
//! settings did not change keeps its runtime, so its workers go on undisturbed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use policies::clock::Clock;
use policies::queue::{Queue, QueueStore};
use policies::state::delivery::Deliveries;
use policies::state::delivery::embedded::EmbeddedDeliveries;
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

/// The stores opened so far, by file or Redis, kept across reloads.
#[derive(Default)]
pub struct DeliveryStores {
    embedded: Mutex<HashMap<PathBuf, Arc<Deliveries>>>,
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
            QueueStore::Redis { .. } => {
                let _ = redis;
                Err(format!(
                    "queue {:?}: store: redis is not available in this build yet; use store: local",
                    queue.name
                ))
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
