//! Store-and-forward metrics: what each queue holds (depth, dead letters, age of its oldest
//! delivery), what happened to deliveries (accepted, delivered, retried, dead, refused as full,
//! replayed, purged), dead letters per channel with the age of the oldest, attempts by result,
//! the time from acceptance to the upstream's acknowledgement per channel, and the embedded
//! store's fsyncs (group commits). Labels are queue and channel names from the policy file:
//! bounded.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

pub use policies::metrics::NO_CHANNEL;

/// Every metric of store-and-forward.
#[derive(Debug, Clone)]
pub struct DeliveryMetrics {
    /// `gateway_delivery_queue_depth{queue}`: deliveries not final (pending, in flight,
    /// blocked).
    pub depth: IntGaugeVec,
    /// `gateway_delivery_dead_letters{queue}`: dead letters waiting for an operator.
    pub dead_letters: IntGaugeVec,
    /// `gateway_delivery_oldest_pending_age_seconds{queue}`.
    pub oldest_age: IntGaugeVec,
    /// `gateway_delivery_channel_dead_letters{queue,channel}`: dead letters per channel.
    pub channel_dead_letters: IntGaugeVec,
    /// `gateway_delivery_oldest_dead_letter_age_seconds{queue,channel}`: age of the oldest
    /// dead letter's acceptance (0 when none).
    pub oldest_dead_age: IntGaugeVec,
    /// `gateway_deliveries_total{queue,channel,outcome}`: accepted, delivered, retried, dead,
    /// full, replayed, purged.
    pub outcomes: IntCounterVec,
    /// `gateway_delivery_attempts_total{queue,result}`: ok, retryable, permanent, refused
    /// (the forwarding layer did not send it: circuit open, saturated).
    pub attempts: IntCounterVec,
    /// `gateway_delivery_ack_seconds{channel}`: from acceptance to the upstream's
    /// acknowledgement.
    pub ack_seconds: HistogramVec,
    /// `gateway_delivery_store_fsyncs_total`: commits of the embedded store (each one fsync).
    pub fsyncs: IntCounter,
    /// `gateway_delivery_store_records_per_fsync`: records made durable by one commit.
    pub records_per_fsync: Histogram,
    /// `gateway_delivery_store_errors_total{queue,op}`.
    pub store_errors: IntCounterVec,
    /// `gateway_outbound_waits_total{channel,operation,reason}`: marketplace deliveries held
    /// back (not counted as attempts): `limit` (the published limit the gateway mirrors),
    /// `marketplace_429` (the marketplace answered 429), `marketplace_pause` (a call waited
    /// out the pause a 429 asked for).
    pub outbound: IntCounterVec,
}

impl DeliveryMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = DeliveryMetrics {
            depth: IntGaugeVec::new(
                Opts::new(
                    "gateway_delivery_queue_depth",
                    "Deliveries not yet final (pending, in flight, blocked), by queue.",
                ),
                &["queue"],
            )?,
            dead_letters: IntGaugeVec::new(
                Opts::new(
                    "gateway_delivery_dead_letters",
                    "Dead letters waiting for an operator (replay or purge), by queue.",
                ),
                &["queue"],
            )?,
            oldest_age: IntGaugeVec::new(
                Opts::new(
                    "gateway_delivery_oldest_pending_age_seconds",
                    "Age of the oldest delivery not yet final, by queue (0 when empty).",
                ),
                &["queue"],
            )?,
            channel_dead_letters: IntGaugeVec::new(
                Opts::new(
                    "gateway_delivery_channel_dead_letters",
                    "Dead letters waiting for an operator, by queue and channel.",
                ),
                &["queue", "channel"],
            )?,
            oldest_dead_age: IntGaugeVec::new(
                Opts::new(
                    "gateway_delivery_oldest_dead_letter_age_seconds",
                    "Time since the oldest dead letter was accepted, by queue and channel (0 when none).",
                ),
                &["queue", "channel"],
            )?,
            outcomes: IntCounterVec::new(
                Opts::new(
                    "gateway_deliveries_total",
                    "Deliveries by queue, channel and outcome (accepted, delivered, retried, dead, full, replayed, purged, superseded).",
                ),
                &["queue", "channel", "outcome"],
            )?,
            attempts: IntCounterVec::new(
                Opts::new(
                    "gateway_delivery_attempts_total",
                    "Delivery attempts by queue and result (ok, retryable, permanent, refused).",
                ),
                &["queue", "result"],
            )?,
            ack_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "gateway_delivery_ack_seconds",
                    "Time from a document's acceptance to the upstream's acknowledgement, by channel.",
                )
                .buckets(vec![
                    0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0, 21600.0, 86400.0,
                ]),
                &["channel"],
            )?,
            fsyncs: IntCounter::new(
                "gateway_delivery_store_fsyncs_total",
                "Commits of the embedded delivery store; each is one fsync shared by the records in it.",
            )?,
            records_per_fsync: Histogram::with_opts(
                HistogramOpts::new(
                    "gateway_delivery_store_records_per_fsync",
                    "Records made durable by one commit of the embedded delivery store (group commit).",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            )?,
            store_errors: IntCounterVec::new(
                Opts::new(
                    "gateway_delivery_store_errors_total",
                    "Failed delivery-store calls, by queue and operation.",
                ),
                &["queue", "op"],
            )?,
            outbound: IntCounterVec::new(
                Opts::new(
                    "gateway_outbound_waits_total",
                    "Marketplace deliveries held back without spending an attempt, by channel, operation and reason (limit, marketplace_429, marketplace_pause).",
                ),
                &["channel", "operation", "reason"],
            )?,
        };
        registry.register(Box::new(m.depth.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.oldest_age.clone()))?;
        registry.register(Box::new(m.channel_dead_letters.clone()))?;
        registry.register(Box::new(m.oldest_dead_age.clone()))?;
        registry.register(Box::new(m.outcomes.clone()))?;
        registry.register(Box::new(m.attempts.clone()))?;
        registry.register(Box::new(m.ack_seconds.clone()))?;
        registry.register(Box::new(m.fsyncs.clone()))?;
        registry.register(Box::new(m.records_per_fsync.clone()))?;
        registry.register(Box::new(m.store_errors.clone()))?;
        registry.register(Box::new(m.outbound.clone()))?;
        Ok(m)
    }
}
