//! Prometheus metrics of the gateway. Names are `gateway_<thing>_<unit>`; labels are bounded
//! (route names, declared channels, status classes, policy names, fixed reasons), never raw
//! paths or ids.

use std::sync::{Arc, OnceLock};

use crate::delivery::DeliveryMetrics;
use crate::forward::UpstreamMetrics;
use crate::kpi::KpiMetrics;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric the gateway exports, registered in its own registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `gateway_requests_total{route,channel,status_class}`.
    pub requests: IntCounterVec,
    /// `gateway_request_duration_seconds{route}`.
    pub duration: HistogramVec,
    /// `gateway_channel_request_duration_seconds{channel}`: the same time per channel.
    pub channel_duration: HistogramVec,
    /// The business KPIs (documents by outcome, order value).
    pub kpi: KpiMetrics,
    /// The forwarding layer's metrics.
    pub upstream: UpstreamMetrics,
    /// Store-and-forward's metrics.
    pub delivery: DeliveryMetrics,
    /// Span export's metrics.
    pub traces: crate::telemetry::TraceMetrics,
    /// Calls to deprecated routes (the counter and each route's top clients).
    pub deprecations: crate::deprecation::DeprecationMetrics,
    /// `gateway_policy_rejections_total{policy,reason}`.
    pub policy_rejections: IntCounterVec,
    /// `gateway_edge_rejections_total{reason}`: requests the gateway refused before any policy
    /// (framing, sizes, unknown routes).
    pub edge_rejections: IntCounterVec,
    /// `gateway_config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
    /// `gateway_config_last_reload_success_timestamp_seconds`.
    pub config_loaded_at: IntGauge,
    /// `gateway_inflight_requests`.
    pub inflight: IntGauge,
    /// `gateway_access_log_dropped_total`: access-log lines lost because stdout fell too far
    /// behind or failed.
    pub access_log_dropped: IntCounter,
}

/// The route label of requests no route took.
pub const UNMATCHED_ROUTE: &str = "unmatched";
pub use policies::metrics::NO_CHANNEL;

const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// The buckets of the request-duration histograms (per route and per channel).
const DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The index of a status into [`STATUS_CLASSES`].
pub fn status_class(status: u16) -> usize {
    match status {
        100..=599 => (status / 100) as usize,
        _ => 0,
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_requests_total",
                "Requests answered, by route, channel and status class.",
            ),
            &["route", "channel", "status_class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "Time from request head received to response sent, by route.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )?;
        let channel_duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_channel_request_duration_seconds",
                "Time from request head received to response sent, by channel.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["channel"],
        )?;
        let policy_rejections = IntCounterVec::new(
            Opts::new(
                "gateway_policy_rejections_total",
                "Requests a policy refused, by policy and reason.",
            ),
            &["policy", "reason"],
        )?;
        let edge_rejections = IntCounterVec::new(
            Opts::new(
                "gateway_edge_rejections_total",
                "Requests refused before any policy ran (framing, sizes, unknown routes), by reason.",
            ),
            &["reason"],
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "gateway_config_reloads_total",
                "Policy-set reloads, by result.",
            ),
            &["result"],
        )?;
        let config_loaded_at = IntGauge::new(
            "gateway_config_last_reload_success_timestamp_seconds",
            "When the serving policy set was loaded (Unix seconds).",
        )?;
        let inflight = IntGauge::new("gateway_inflight_requests", "Requests being handled now.")?;
        let access_log_dropped = IntCounter::new(
            "gateway_access_log_dropped_total",
            "Access-log lines dropped because stdout fell too far behind or failed.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(channel_duration.clone()))?;
        registry.register(Box::new(policy_rejections.clone()))?;
        registry.register(Box::new(edge_rejections.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(config_loaded_at.clone()))?;
        registry.register(Box::new(inflight.clone()))?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        registry.register(Box::new(crate::pool_race::LOST.clone()))?;
        let upstream = UpstreamMetrics::register(&registry)?;
        let delivery = DeliveryMetrics::register(&registry)?;
        let traces = crate::telemetry::TraceMetrics::register(&registry)?;
        let kpi = KpiMetrics::register(&registry)?;
        let deprecations = crate::deprecation::DeprecationMetrics::register(&registry)?;
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        Ok(Metrics {
            registry,
            requests,
            duration,
            channel_duration,
            kpi,
            upstream,
            delivery,
            traces,
            deprecations,
            policy_rejections,
            edge_rejections,
            config_reloads,
            config_loaded_at,
            inflight,
            access_log_dropped,
        })
    }

    /// The registry, for collectors added by other modules.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // encoding into a Vec cannot fail for well-formed metric families
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Per-snapshot cache of labelled metric handles, so the hot path does no label hashing or
/// locking: one slot per (route, channel, status class), filled on first use.
#[derive(Debug)]
pub struct RouteMetricHandles {
    routes: Vec<Arc<str>>,
    channels: Vec<Arc<str>>,
    counters: Vec<OnceLock<IntCounter>>,
    histograms: Vec<OnceLock<Histogram>>,
    /// One per declared channel (requests without a channel have no per-channel latency).
    channel_histograms: Vec<OnceLock<Histogram>>,
}

impl RouteMetricHandles {
    /// Slots for these routes and channels (plus the unmatched route and the no-channel case).
    pub fn new(routes: Vec<Arc<str>>, channels: Vec<Arc<str>>) -> Self {
        let n_routes = routes.len() + 1;
        let n_channels = channels.len() + 1;
        RouteMetricHandles {
            counters: (0..n_routes * n_channels * STATUS_CLASSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            histograms: (0..n_routes).map(|_| OnceLock::new()).collect(),
            channel_histograms: (0..channels.len()).map(|_| OnceLock::new()).collect(),
            routes,
            channels,
        }
    }

    fn route_label(&self, route: Option<usize>) -> (usize, &str) {
        match route.and_then(|r| self.routes.get(r).map(|n| (r + 1, &**n))) {
            Some(x) => x,
            None => (0, UNMATCHED_ROUTE),
        }
    }

    /// Counts one answered request and its duration (per route, and per channel when it has
    /// one).
    pub fn observe(
        &self,
        metrics: &Metrics,
        route: Option<usize>,
        channel: Option<usize>,
        status: u16,
        seconds: f64,
    ) {
        let (r, route_name) = self.route_label(route);
        let (c, channel_name) =
            match channel.and_then(|c| self.channels.get(c).map(|n| (c + 1, &**n))) {
                Some(x) => x,
                None => (0, NO_CHANNEL),
            };
        let class = status_class(status);
        let slot = (r * (self.channels.len() + 1) + c) * STATUS_CLASSES.len() + class;
        if let Some(cell) = self.counters.get(slot) {
            cell.get_or_init(|| {
                metrics.requests.with_label_values(&[
                    route_name,
                    channel_name,
                    STATUS_CLASSES[class],
                ])
            })
            .inc();
        }
        if let Some(cell) = self.histograms.get(r) {
            cell.get_or_init(|| metrics.duration.with_label_values(&[route_name]))
                .observe(seconds);
        }
        if let Some(cell) = channel.and_then(|c| self.channel_histograms.get(c)) {
            cell.get_or_init(|| metrics.channel_duration.with_label_values(&[channel_name]))
                .observe(seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_count_into_the_labelled_series() {
        let m = Metrics::new().unwrap();
        let h = RouteMetricHandles::new(vec![Arc::from("orders")], vec![Arc::from("amazon")]);
        h.observe(&m, Some(0), Some(0), 201, 0.01);
        h.observe(&m, Some(0), Some(0), 204, 0.01);
        h.observe(&m, None, None, 404, 0.001);
        assert_eq!(
            m.requests
                .with_label_values(&["orders", "amazon", "2xx"])
                .get(),
            2
        );
        assert_eq!(
            m.requests
                .with_label_values(&["unmatched", "none", "4xx"])
                .get(),
            1
        );
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("gateway_request_duration_seconds_count{route=\"orders\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("gateway_channel_request_duration_seconds_count{channel=\"amazon\"} 2"),
            "{text}"
        );
        assert!(
            !text.contains("gateway_channel_request_duration_seconds_count{channel=\"none\"}"),
            "{text}"
        );
    }

    #[test]
    fn status_classes() {
        assert_eq!(STATUS_CLASSES[status_class(0)], "none");
        assert_eq!(STATUS_CLASSES[status_class(503)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(101)], "1xx");
    }
}
