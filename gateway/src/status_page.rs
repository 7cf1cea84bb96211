//! The status page on the admin listener: `/` serves one self-contained HTML page (its script
//! and styles inline, nothing fetched from elsewhere, so it works offline) that polls
//! `/status.json` every two seconds and updates in place.
//!
//! `/status.json` holds cumulative figures read from the in-process Prometheus registry (per
//! channel: requests, failures, limit refusals, the latency histogram's buckets; dead letters
//! per channel), the queues and their dead letters (from the delivery admin API), the upstream
//! endpoints (the same document as `/upstreams`), the deprecated routes with their calls and
//! top clients (the same as `/deprecations`) and the serving config version with the last
//! reload (from `/config`). Rates, error ratios and p99 are computed by the page from the
//! difference between two polls, so the server keeps no state per viewer. A metric family the
//! running gateway does not export (yet) comes out as `null`, which the page shows as "not
//! measured" instead of failing.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Response, StatusCode, header};
use prometheus::proto::{Metric, MetricFamily};
use serde_json::{Value, json};

use crate::admin_auth::with_headers;
use crate::admin_views;
use crate::delivery;
use crate::metrics::Metrics;
use crate::snapshot::ConfigStore;

/// The page: HTML, CSS and script in one file.
const PAGE: &str = include_str!("status_page.html");

/// Most dead letters listed on the page (the count in the queue table is exact).
const DEAD_LETTERS_LISTED: usize = 50;

/// The request counter (`route`, `channel`, `status_class`).
const REQUESTS: &str = "gateway_requests_total";
/// Documents by outcome (`channel`, `document`, `outcome`); its `rejected_limit` outcome is
/// the rate-limit refusals per channel.
const DOCUMENTS: &str = "gateway_documents_total";
/// Per-channel latency histogram (`channel`).
const CHANNEL_LATENCY: &str = "gateway_channel_request_duration_seconds";
/// Dead letters per queue and channel (gauge).
const CHANNEL_DEAD_LETTERS: &str = "gateway_delivery_channel_dead_letters";
/// Reloads by result.
const RELOADS: &str = "gateway_config_reloads_total";

/// Whether `path` is the status page's.
pub fn handles(path: &str) -> bool {
    path == "/" || path == "/status.json"
}

/// Serves `GET /` (the page) and `GET /status.json` (its data).
pub async fn response(
    store: &ConfigStore,
    metrics: &Metrics,
    method: &Method,
    path: &str,
) -> Response<Vec<u8>> {
    if method != Method::GET && method != Method::HEAD {
        return with_headers(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            b"the status page is read-only\n".to_vec(),
        );
    }
    if path == "/status.json" {
        let body = serde_json::to_vec(&status(store, metrics).await).unwrap_or_default();
        return with_headers(StatusCode::OK, "application/json", body);
    }
    let mut resp = with_headers(
        StatusCode::OK,
        "text/html; charset=utf-8",
        PAGE.as_bytes().to_vec(),
    );
    let h = resp.headers_mut();
    // The page's only requests are to this listener; its script and styles are inline (the
    // file is static, no value is ever written into it by the server, so inline is safe).
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The `/status.json` document.
async fn status(store: &ConfigStore, metrics: &Metrics) -> Value {
    let families = metrics.registry().gather();
    let config = admin_views::config(store);
    let declared: Vec<String> = config["channels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let figures = Figures::read(&families);
    let snapshot = store.current();
    let queues = admin_get(metrics, &snapshot, "/queues", None).await;
    let dead = admin_get(
        metrics,
        &snapshot,
        "/deliveries",
        Some(&format!("state=dead&limit={DEAD_LETTERS_LISTED}")),
    )
    .await;
    json!({
        "now_ms": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        "measured": {
            "documents": figures.documents,
            "channel_latency": figures.latency,
            "channel_dead_letters": figures.channel_dead,
        },
        "channels": figures.channels(&declared),
        "queues": queues.map_or_else(|e| json!({ "error": e }), |v| v["queues"].clone()),
        "dead_letters": dead.map_or_else(|e| json!({ "error": e }), |v| v["deliveries"].clone()),
        "upstreams": admin_views::upstreams(store)["upstreams"].clone(),
        // deprecated routes with their calls and top clients (the `/deprecations` document)
        "deprecations": metrics.deprecations.view(&snapshot.set)["routes"].clone(),
        "config": {
            "version": config["version"],
            "summary": config["summary"],
            "last_reload": config["last_reload"],
            "reloads": figures.reloads,
        },
    })
}

/// A GET of the delivery admin API, its body or its problem's detail.
async fn admin_get(
    metrics: &Metrics,
    snapshot: &crate::snapshot::Snapshot,
    path: &str,
    query: Option<&str>,
) -> Result<Value, String> {
    let (status, body) =
        delivery::admin::handle(snapshot, &metrics.delivery, &Method::GET, path, query).await;
    if status.is_success() {
        Ok(body)
    } else {
        Err(body["detail"]
            .as_str()
            .unwrap_or("the delivery store did not answer")
            .to_owned())
    }
}

/// One channel's cumulative figures.
#[derive(Debug, Default, Clone, PartialEq)]
struct Channel {
    requests: f64,
    /// 5xx answers: the gateway or the ERP failed.
    failed: f64,
    /// 4xx answers: the request was refused (bad document, no permission, over a limit).
    refused: f64,
    rejected_limit: f64,
    /// Cumulative buckets `(upper bound, count)`, `+Inf` last.
    buckets: BTreeMap<u64, (f64, f64)>,
    latency_count: f64,
    dead_letters: f64,
}

/// What the registry says, by channel.
#[derive(Debug, Default)]
struct Figures {
    by_channel: BTreeMap<String, Channel>,
    /// Whether each newer family is exported at all (absent: the page says "not measured").
    documents: bool,
    latency: bool,
    channel_dead: bool,
    reloads: BTreeMap<String, f64>,
}

fn label<'a>(m: &'a Metric, name: &str) -> Option<&'a str> {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

impl Figures {
    fn read(families: &[MetricFamily]) -> Figures {
        let mut f = Figures::default();
        for family in families {
            let name = family.name();
            for m in family.get_metric() {
                let channel = label(m, "channel").unwrap_or(crate::metrics::NO_CHANNEL);
                match name {
                    REQUESTS => {
                        let v = m.get_counter().get_value();
                        let c = f.by_channel.entry(channel.to_owned()).or_default();
                        c.requests += v;
                        match label(m, "status_class") {
                            Some("5xx") => c.failed += v,
                            Some("4xx") => c.refused += v,
                            _ => {}
                        }
                    }
                    DOCUMENTS => {
                        f.documents = true;
                        let c = f.by_channel.entry(channel.to_owned()).or_default();
                        if label(m, "outcome") == Some("rejected_limit") {
                            c.rejected_limit += m.get_counter().get_value();
                        }
                    }
                    CHANNEL_LATENCY => {
                        f.latency = true;
                        let h = m.get_histogram();
                        let c = f.by_channel.entry(channel.to_owned()).or_default();
                        c.latency_count += h.get_sample_count() as f64;
                        for b in h.get_bucket() {
                            let e = c
                                .buckets
                                .entry(b.upper_bound().to_bits())
                                .or_insert((b.upper_bound(), 0.0));
                            e.1 += b.cumulative_count() as f64;
                        }
                    }
                    CHANNEL_DEAD_LETTERS => {
                        f.channel_dead = true;
                        let c = f.by_channel.entry(channel.to_owned()).or_default();
                        c.dead_letters += m.get_gauge().get_value();
                    }
                    RELOADS => {
                        let result = label(m, "result").unwrap_or("unknown").to_owned();
                        *f.reloads.entry(result).or_default() += m.get_counter().get_value();
                    }
                    _ => {}
                }
            }
        }
        f
    }

    /// The declared channels in the policy file's order, then any other channel label seen
    /// (requests without a channel, or a channel an earlier policy set declared).
    fn channels(&self, declared: &[String]) -> Vec<Value> {
        let mut names: Vec<&str> = declared.iter().map(String::as_str).collect();
        for (name, c) in &self.by_channel {
            if !names.contains(&name.as_str()) && c.requests > 0.0 {
                names.push(name);
            }
        }
        let empty = Channel::default();
        names
            .into_iter()
            .map(|name| {
                let c = self.by_channel.get(name).unwrap_or(&empty);
                // Buckets sorted by bound (the map is keyed by bits, which sort like the
                // positive floats they are, +Inf last).
                let mut buckets: Vec<(f64, f64)> = c.buckets.values().copied().collect();
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                if !buckets.last().is_some_and(|b| b.0.is_infinite()) && self.latency {
                    buckets.push((f64::INFINITY, c.latency_count));
                }
                json!({
                    "name": name,
                    "requests": c.requests,
                    "failed": c.failed,
                    "refused": c.refused,
                    "rejected_limit": self.documents.then_some(c.rejected_limit),
                    "latency": self.latency.then(|| json!({
                        "count": c.latency_count,
                        // JSON has no infinity: the last bound is null
                        "buckets": buckets
                            .iter()
                            .map(|(le, n)| json!([if le.is_finite() { json!(le) } else { Value::Null }, n]))
                            .collect::<Vec<_>>(),
                    })),
                    "dead_letters": self.channel_dead.then_some(c.dead_letters),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

    fn registry(with_kpis: bool) -> Registry {
        let r = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(REQUESTS, "requests"),
            &["route", "channel", "status_class"],
        )
        .unwrap();
        r.register(Box::new(requests.clone())).unwrap();
        requests
            .with_label_values(&["orders", "amazon", "2xx"])
            .inc_by(7);
        requests
            .with_label_values(&["orders", "amazon", "5xx"])
            .inc_by(2);
        requests
            .with_label_values(&["orders", "amazon", "4xx"])
            .inc_by(1);
        requests
            .with_label_values(&["other", "amazon", "2xx"])
            .inc_by(1);
        if with_kpis {
            let docs = IntCounterVec::new(
                Opts::new(DOCUMENTS, "docs"),
                &["channel", "document", "outcome"],
            )
            .unwrap();
            r.register(Box::new(docs.clone())).unwrap();
            docs.with_label_values(&["amazon", "order", "rejected_limit"])
                .inc_by(3);
            docs.with_label_values(&["amazon", "order", "accepted"])
                .inc_by(5);
            let h = HistogramVec::new(
                HistogramOpts::new(CHANNEL_LATENCY, "latency").buckets(vec![0.01, 0.1]),
                &["channel"],
            )
            .unwrap();
            r.register(Box::new(h.clone())).unwrap();
            h.with_label_values(&["amazon"]).observe(0.005);
            h.with_label_values(&["amazon"]).observe(0.05);
        }
        r
    }

    #[test]
    fn figures_sum_a_channels_series_and_split_failures_from_refusals() {
        let f = Figures::read(&registry(true).gather());
        let out = f.channels(&["amazon".into(), "ebay".into()]);
        assert_eq!(out.len(), 2);
        let a = &out[0];
        assert_eq!(a["name"], "amazon");
        assert_eq!(a["requests"], 11.0);
        assert_eq!(a["failed"], 2.0);
        assert_eq!(a["refused"], 1.0);
        assert_eq!(a["rejected_limit"], 3.0);
        assert_eq!(a["latency"]["count"], 2.0);
        assert_eq!(
            a["latency"]["buckets"],
            json!([[0.01, 1.0], [0.1, 2.0], [null, 2.0]])
        );
        // a declared channel without traffic is listed with zeros
        assert_eq!(out[1]["name"], "ebay");
        assert_eq!(out[1]["requests"], 0.0);
        assert_eq!(out[1]["rejected_limit"], 0.0);
    }

    #[test]
    fn families_the_gateway_does_not_export_come_out_as_null() {
        let f = Figures::read(&registry(false).gather());
        let out = f.channels(&["amazon".into()]);
        assert_eq!(out[0]["requests"], 11.0);
        assert!(out[0]["rejected_limit"].is_null());
        assert!(out[0]["latency"].is_null());
        assert!(out[0]["dead_letters"].is_null());
    }

    #[test]
    fn the_page_is_self_contained() {
        // nothing loaded from another origin: no absolute URLs in src/href, no @import
        for needle in ["src=\"http", "href=\"http", "@import", "//cdn", "fonts.g"] {
            assert!(!PAGE.contains(needle), "the page refers to {needle}");
        }
        assert!(PAGE.contains("/status.json"));
    }
}
