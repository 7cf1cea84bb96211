//! Business KPIs (issue 14's metric contract): what became of every document a channel sent
//! (`gateway_documents_total{channel,document,outcome}`), the value of accepted orders
//! (`gateway_order_value_minor_units_total{channel,currency}`), and the ERP's acknowledgement
//! time of documents it accepted synchronously (`gateway_delivery_ack_seconds{channel}`, which
//! store-and-forward observes for queued ones). Recorded once per request at its completion,
//! through handles cached per snapshot, so the request path never hashes a label.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use policies::kinds::Policy;
use policies::kinds::transform::OrderValue;
use policies::model::PolicySet;
use prometheus::{Histogram, IntCounter, IntCounterVec, Opts, Registry};

use crate::outcome::Outcome;

/// What became of a document, the `outcome` label of `gateway_documents_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentOutcome {
    /// Forwarded and answered 2xx by the ERP, or stored for delivery (202).
    Accepted,
    /// An idempotency replay of a stored answer.
    Replayed,
    /// Refused by authentication (`jwt`, `webhook_signature`).
    RejectedAuth,
    /// Refused by a `rate_limit`.
    RejectedLimit,
    /// Refused by `schema` or `json_body`.
    RejectedSchema,
    /// Refused by a `transform`.
    RejectedMapping,
    /// Any other refusal after routing (another policy, or the gateway's own, such as an
    /// idempotency conflict or a full queue).
    RejectedOther,
    /// The ERP answered 4xx.
    RejectedUpstream,
    /// The ERP answered 5xx or not at all (timeout, refused connection, open circuit,
    /// saturated): no acknowledgement.
    FailedUpstream,
}

impl DocumentOutcome {
    /// Every outcome, in label-slot order.
    pub const ALL: [DocumentOutcome; 9] = [
        DocumentOutcome::Accepted,
        DocumentOutcome::Replayed,
        DocumentOutcome::RejectedAuth,
        DocumentOutcome::RejectedLimit,
        DocumentOutcome::RejectedSchema,
        DocumentOutcome::RejectedMapping,
        DocumentOutcome::RejectedOther,
        DocumentOutcome::RejectedUpstream,
        DocumentOutcome::FailedUpstream,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentOutcome::Accepted => "accepted",
            DocumentOutcome::Replayed => "replayed",
            DocumentOutcome::RejectedAuth => "rejected_auth",
            DocumentOutcome::RejectedLimit => "rejected_limit",
            DocumentOutcome::RejectedSchema => "rejected_schema",
            DocumentOutcome::RejectedMapping => "rejected_mapping",
            DocumentOutcome::RejectedOther => "rejected_other",
            DocumentOutcome::RejectedUpstream => "rejected_upstream",
            DocumentOutcome::FailedUpstream => "failed_upstream",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }

    /// The outcome the ERP's answer gives a document that reached it (0: no answer).
    fn of_upstream_status(status: u16) -> DocumentOutcome {
        match status {
            200..=299 => DocumentOutcome::Accepted,
            1..=499 => DocumentOutcome::RejectedUpstream,
            _ => DocumentOutcome::FailedUpstream,
        }
    }

    /// The outcome of a refusal by a policy of this kind (its `kind:` tag).
    fn of_refusal(kind: Option<&str>) -> DocumentOutcome {
        match kind {
            Some("jwt" | "webhook_signature") => DocumentOutcome::RejectedAuth,
            Some("rate_limit") => DocumentOutcome::RejectedLimit,
            Some("schema" | "json_body") => DocumentOutcome::RejectedSchema,
            Some("transform") => DocumentOutcome::RejectedMapping,
            _ => DocumentOutcome::RejectedOther,
        }
    }
}

/// Classifies how a routed request ended. `refused_by` is the kind of the policy that answered
/// (for [`Outcome::Policy`]); `upstream_status` the ERP's status when it answered; `status`
/// the status sent to the client. `None`: not a document outcome (a read of a delivery's state,
/// or a request abandoned before anything was decided).
pub fn classify(
    outcome: &Outcome,
    refused_by: Option<&str>,
    upstream_status: Option<u16>,
    status: u16,
) -> Option<DocumentOutcome> {
    Some(match outcome {
        Outcome::Queued => DocumentOutcome::Accepted,
        // the ERP's status, not the client's: response policies may map an ERP error to
        // another status, but whether the ERP took the document is its own answer
        Outcome::Forwarded => {
            DocumentOutcome::of_upstream_status(upstream_status.unwrap_or(status))
        }
        Outcome::Upstream(_) => DocumentOutcome::FailedUpstream,
        Outcome::Edge(_) => DocumentOutcome::RejectedOther,
        Outcome::Policy { reason, .. } if *reason == "replayed" => DocumentOutcome::Replayed,
        // a response policy refused what the ERP answered: the ERP's verdict decides
        Outcome::Policy { .. } if upstream_status.is_some() => {
            DocumentOutcome::of_upstream_status(upstream_status.unwrap_or(0))
        }
        Outcome::Policy { .. } => DocumentOutcome::of_refusal(refused_by),
        // the client went away: only an answer of the ERP says what became of the document
        Outcome::Pending => DocumentOutcome::of_upstream_status(upstream_status?),
        Outcome::Served => return None,
    })
}

/// The KPI metric families.
#[derive(Debug, Clone)]
pub struct KpiMetrics {
    /// `gateway_documents_total{channel,document,outcome}`.
    pub documents: IntCounterVec,
    /// `gateway_order_value_minor_units_total{channel,currency}`.
    pub order_value: IntCounterVec,
}

impl KpiMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = KpiMetrics {
            documents: IntCounterVec::new(
                Opts::new(
                    "gateway_documents_total",
                    "Documents the channels sent, by channel, document and outcome (accepted, replayed, rejected_auth, rejected_limit, rejected_schema, rejected_mapping, rejected_other, rejected_upstream, failed_upstream).",
                ),
                &["channel", "document", "outcome"],
            )?,
            order_value: IntCounterVec::new(
                Opts::new(
                    "gateway_order_value_minor_units_total",
                    "Total value of accepted orders in minor units of their currency (cents, yen, fils), by channel and currency.",
                ),
                &["channel", "currency"],
            )?,
        };
        registry.register(Box::new(m.documents.clone()))?;
        registry.register(Box::new(m.order_value.clone()))?;
        Ok(m)
    }
}

/// Currencies one channel's order-value counter keeps handles for; more are counted through
/// the labelled family directly (rarer than a channel selling in eight currencies).
const CURRENCY_SLOTS: usize = 8;

/// One channel's order-value handles: (currency code, its counter), claimed first come.
type CurrencySlots = [OnceLock<([u8; 3], IntCounter)>; CURRENCY_SLOTS];

/// Per-snapshot handles of the KPI series, filled on first use: one counter per (route,
/// channel, outcome), a few order-value counters and one acknowledgement histogram per channel.
#[derive(Debug)]
pub struct KpiHandles {
    /// The `document` label of each route: its transform's document, or else its name.
    documents: Vec<Arc<str>>,
    channels: Vec<Arc<str>>,
    counters: Vec<OnceLock<IntCounter>>,
    values: Vec<CurrencySlots>,
    acks: Vec<OnceLock<Histogram>>,
}

/// The document a route carries: the `document` of its first `transform`, or else its name.
pub fn route_document(route: &policies::model::Route) -> Arc<str> {
    route
        .chain
        .policies()
        .iter()
        .find_map(|p| match &p.policy {
            Policy::Transform(t) => Some(Arc::from(t.document())),
            _ => None,
        })
        .unwrap_or_else(|| route.name.clone())
}

impl KpiHandles {
    /// Slots for this set's routes and channels.
    pub fn new(set: &PolicySet) -> Self {
        let documents: Vec<Arc<str>> = set.routes.iter().map(|r| route_document(r)).collect();
        let channels = set.channels.names().to_vec();
        let n = documents.len() * channels.len() * DocumentOutcome::ALL.len();
        KpiHandles {
            counters: (0..n).map(|_| OnceLock::new()).collect(),
            values: (0..channels.len())
                .map(|_| std::array::from_fn(|_| OnceLock::new()))
                .collect(),
            acks: (0..channels.len()).map(|_| OnceLock::new()).collect(),
            documents,
            channels,
        }
    }

    /// Counts one document of `route` from `channel` (indices in the snapshot's set).
    pub fn count(
        &self,
        metrics: &KpiMetrics,
        route: usize,
        channel: usize,
        outcome: DocumentOutcome,
    ) {
        let (Some(document), Some(name)) = (self.documents.get(route), self.channels.get(channel))
        else {
            return;
        };
        let slot =
            (route * self.channels.len() + channel) * DocumentOutcome::ALL.len() + outcome.slot();
        if let Some(cell) = self.counters.get(slot) {
            cell.get_or_init(|| {
                metrics
                    .documents
                    .with_label_values(&[name, document, outcome.as_str()])
            })
            .inc();
        }
    }

    /// Adds an accepted order's value.
    pub fn add_order_value(&self, metrics: &KpiMetrics, channel: usize, value: &OrderValue) {
        let (Some(slots), Some(name)) = (self.values.get(channel), self.channels.get(channel))
        else {
            return;
        };
        let family = &metrics.order_value;
        for cell in slots {
            let (code, counter) = cell.get_or_init(|| {
                (
                    value.currency,
                    family.with_label_values(&[name, value.currency()]),
                )
            });
            if *code == value.currency {
                counter.inc_by(value.minor_units);
                return;
            }
        }
        family
            .with_label_values(&[name, value.currency()])
            .inc_by(value.minor_units);
    }

    /// Observes the ERP's synchronous acknowledgement of a document from `channel`.
    pub fn observe_ack(&self, acks: &prometheus::HistogramVec, channel: usize, elapsed: Duration) {
        let (Some(cell), Some(name)) = (self.acks.get(channel), self.channels.get(channel)) else {
            return;
        };
        cell.get_or_init(|| acks.with_label_values(&[name]))
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::UpstreamError;

    fn refused(kind: &str, reason: &'static str) -> Option<DocumentOutcome> {
        let outcome = Outcome::Policy {
            policy: Some(Arc::from("p")),
            reason,
        };
        classify(&outcome, Some(kind), None, 400)
    }

    #[test]
    fn refusals_are_classified_by_the_kind_of_policy() {
        use DocumentOutcome::*;
        assert_eq!(refused("jwt", "invalid_token"), Some(RejectedAuth));
        assert_eq!(
            refused("webhook_signature", "bad_signature"),
            Some(RejectedAuth)
        );
        assert_eq!(refused("rate_limit", "quota_exceeded"), Some(RejectedLimit));
        assert_eq!(refused("schema", "schema_violation"), Some(RejectedSchema));
        assert_eq!(refused("json_body", "malformed_json"), Some(RejectedSchema));
        assert_eq!(refused("transform", "unmappable"), Some(RejectedMapping));
        assert_eq!(refused("idempotency", "key_in_flight"), Some(RejectedOther));
        assert_eq!(refused("idempotency", "replayed"), Some(Replayed));
        let unnamed = Outcome::Policy {
            policy: None,
            reason: "x",
        };
        assert_eq!(classify(&unnamed, None, None, 400), Some(RejectedOther));
    }

    #[test]
    fn the_erps_answer_decides_what_reached_it() {
        use DocumentOutcome::*;
        let fwd = Outcome::Forwarded;
        assert_eq!(classify(&fwd, None, Some(201), 201), Some(Accepted));
        assert_eq!(classify(&fwd, None, Some(409), 409), Some(RejectedUpstream));
        assert_eq!(classify(&fwd, None, Some(503), 503), Some(FailedUpstream));
        // a response policy mapped the ERP's 500 to a 422 problem: still the ERP failing
        assert_eq!(classify(&fwd, None, Some(500), 422), Some(FailedUpstream));
        assert_eq!(classify(&fwd, None, None, 200), Some(Accepted));
        let failed = Outcome::Upstream(UpstreamError::ConnectRefused);
        assert_eq!(classify(&failed, None, None, 502), Some(FailedUpstream));
        let open = Outcome::Upstream(UpstreamError::CircuitOpen {
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(classify(&open, None, None, 503), Some(FailedUpstream));
        assert_eq!(classify(&Outcome::Queued, None, None, 202), Some(Accepted));
        // the answer's mapping failed after the ERP took it
        let after = Outcome::Policy {
            policy: Some(Arc::from("t")),
            reason: "answer_unmappable",
        };
        assert_eq!(
            classify(&after, Some("transform"), Some(201), 502),
            Some(Accepted)
        );
        assert_eq!(
            classify(&Outcome::Edge("queue_full"), None, None, 503),
            Some(RejectedOther)
        );
        assert_eq!(classify(&Outcome::Served, None, None, 200), None);
        assert_eq!(classify(&Outcome::Pending, None, None, 0), None);
        assert_eq!(
            classify(&Outcome::Pending, None, Some(200), 0),
            Some(Accepted)
        );
    }

    #[test]
    fn labels_are_the_contracts() {
        let labels: Vec<&str> = DocumentOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(
            labels,
            [
                "accepted",
                "replayed",
                "rejected_auth",
                "rejected_limit",
                "rejected_schema",
                "rejected_mapping",
                "rejected_other",
                "rejected_upstream",
                "failed_upstream"
            ]
        );
        assert!(
            DocumentOutcome::ALL
                .iter()
                .enumerate()
                .all(|(i, o)| o.slot() == i)
        );
    }

    #[test]
    fn order_values_add_up_per_channel_and_currency() {
        let m = KpiMetrics::register(&Registry::new()).unwrap();
        let h = KpiHandles {
            documents: vec![Arc::from("order")],
            channels: vec![Arc::from("amazon")],
            counters: (0..DocumentOutcome::ALL.len())
                .map(|_| OnceLock::new())
                .collect(),
            values: vec![std::array::from_fn(|_| OnceLock::new())],
            acks: vec![OnceLock::new()],
        };
        let v = |c: &[u8; 3], minor_units| OrderValue {
            currency: *c,
            minor_units,
        };
        h.add_order_value(&m, 0, &v(b"USD", 1101));
        h.add_order_value(&m, 0, &v(b"JPY", 4480));
        h.add_order_value(&m, 0, &v(b"USD", 5870));
        // more currencies than slots still count
        for (i, c) in [
            b"EUR", b"GBP", b"CAD", b"AUD", b"MXN", b"BRL", b"SEK", b"KWD",
        ]
        .into_iter()
        .enumerate()
        {
            h.add_order_value(&m, 0, &v(c, i as u64 + 1));
        }
        let value = |c: &str| m.order_value.with_label_values(&["amazon", c]).get();
        assert_eq!(value("USD"), 6971);
        assert_eq!(value("JPY"), 4480);
        assert_eq!(value("KWD"), 8);
        h.count(&m, 0, 0, DocumentOutcome::RejectedLimit);
        assert_eq!(
            m.documents
                .with_label_values(&["amazon", "order", "rejected_limit"])
                .get(),
            1
        );
    }
}
