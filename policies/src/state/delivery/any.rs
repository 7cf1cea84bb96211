//! One type for every store, so the gateway holds a queue's store without generics: each call
//! goes to the store the queue chose.

use super::embedded::EmbeddedDeliveries;
use super::redis::RedisDeliveries;
use super::{
    AttemptRecord, Claimed, Delivery, DeliveryError, DeliveryRecord, DeliveryStore, Filter,
    QueueLimits, QueueStats, Settle,
};

/// The store of a queue.
pub enum Deliveries {
    /// On local disk.
    Embedded(EmbeddedDeliveries),
    /// On Redis Streams, shared by every instance.
    Redis(RedisDeliveries),
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Deliveries::Embedded(_) => "Deliveries::Embedded",
            Deliveries::Redis(_) => "Deliveries::Redis",
        })
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Deliveries::Embedded($s) => $call,
            Deliveries::Redis($s) => $call,
        }
    };
}

impl Deliveries {
    /// Removes delivered documents settled before `older_than_ms`; returns how many.
    pub async fn prune_delivered(&self, older_than_ms: u64) -> Result<u64, DeliveryError> {
        each!(self, s => s.prune_delivered(older_than_ms).await)
    }
}
impl DeliveryStore for Deliveries {
    async fn enqueue(
        &self,
        record: DeliveryRecord,
        limits: QueueLimits,
        now_ms: u64,
    ) -> Result<(), DeliveryError> {
        each!(self, s => s.enqueue(record, limits, now_ms).await)
    }

    async fn enqueue_batch(
        &self,
        records: Vec<DeliveryRecord>,
        limits: QueueLimits,
        now_ms: u64,
    ) -> Result<(), DeliveryError> {
        each!(self, s => s.enqueue_batch(records, limits, now_ms).await)
    }

    async fn note_sequence(
        &self,
        queue: &str,
        ordering_key: &str,
        seq: u64,
    ) -> Result<bool, DeliveryError> {
        each!(self, s => s.note_sequence(queue, ordering_key, seq).await)
    }

    async fn latest_sequence(
        &self,
        queue: &str,
        ordering_key: &str,
    ) -> Result<Option<u64>, DeliveryError> {
        each!(self, s => s.latest_sequence(queue, ordering_key).await)
    }

    async fn claim(
        &self,
        queue: &str,
        max: usize,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<Claimed>, DeliveryError> {
        each!(self, s => s.claim(queue, max, now_ms, lease_ms).await)
    }

    async fn settle(
        &self,
        claimed: &Claimed,
        attempt: Option<AttemptRecord>,
        outcome: Settle,
        now_ms: u64,
    ) -> Result<(), DeliveryError> {
        each!(self, s => s.settle(claimed, attempt, outcome, now_ms).await)
    }

    async fn get(&self, id: &str) -> Result<Option<Delivery>, DeliveryError> {
        each!(self, s => s.get(id).await)
    }

    async fn list(
        &self,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, DeliveryError> {
        each!(self, s => s.list(filter, after, limit).await)
    }

    async fn requeue(
        &self,
        id: &str,
        body: Option<String>,
        now_ms: u64,
    ) -> Result<bool, DeliveryError> {
        each!(self, s => s.requeue(id, body, now_ms).await)
    }

    async fn purge(&self, id: &str) -> Result<bool, DeliveryError> {
        each!(self, s => s.purge(id).await)
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, DeliveryError> {
        each!(self, s => s.stats(queue).await)
    }

    async fn next_due(&self, queue: &str) -> Result<Option<u64>, DeliveryError> {
        each!(self, s => s.next_due(queue).await)
    }
}
