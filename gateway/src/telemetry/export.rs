//! The bounded span queue and the thread that exports it over OTLP/HTTP (protobuf), in batches.
//! A request only ever takes the queue's lock to append its spans; when the queue holds
//! `max_queue_spans` (the batch on its way counted), further spans are dropped and counted, so
//! a slow or dead collector costs bounded memory and never a request's time.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use policies::traces::TracingSettings;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use prost::Message;

use crate::telemetry::span::SpanRecord;

/// The metrics of span export.
#[derive(Debug, Clone)]
pub struct TraceMetrics {
    /// `gateway_trace_spans_exported_total`: spans the collector accepted.
    pub exported: IntCounter,
    /// `gateway_trace_spans_dropped_total{reason}`: `queue_full` (the queue was at its bound)
    /// or `export_failed` (the collector refused, failed or timed out).
    pub dropped: IntCounterVec,
    /// `gateway_trace_queue_spans`: spans waiting for export, the batch on its way included.
    pub queued: IntGauge,
}

impl TraceMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = TraceMetrics {
            exported: IntCounter::new(
                "gateway_trace_spans_exported_total",
                "Spans the OTLP collector accepted.",
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "gateway_trace_spans_dropped_total",
                    "Spans dropped, by reason (queue_full, export_failed).",
                ),
                &["reason"],
            )?,
            queued: IntGauge::new(
                "gateway_trace_queue_spans",
                "Spans waiting for export, the batch being sent included.",
            )?,
        };
        registry.register(Box::new(m.exported.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.queued.clone()))?;
        for reason in ["queue_full", "export_failed"] {
            m.dropped.with_label_values(&[reason]);
        }
        Ok(m)
    }
}

struct Queue {
    spans: VecDeque<SpanRecord>,
    /// Spans in `spans` plus those of the batch being exported.
    held: usize,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    settings: TracingSettings,
    metrics: TraceMetrics,
    dropped_full: IntCounter,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // a panic while holding the lock leaves plain values behind: still usable
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tracer of one `tracing:` setting: decides sampling, takes finished spans, and owns the
/// exporter thread (which sends what is queued and stops when the tracer is dropped, after a
/// reload replaced its setting and the last request using it ended).
pub struct Tracer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("endpoint", &self.shared.settings.endpoint)
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// Starts the exporter of `settings`.
    pub fn start(settings: TracingSettings, metrics: &TraceMetrics) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                spans: VecDeque::with_capacity(settings.max_batch_spans),
                held: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            dropped_full: metrics.dropped.with_label_values(&["queue_full"]),
            metrics: metrics.clone(),
            settings,
        });
        let thread = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn({
                let shared = shared.clone();
                move || export_loop(&shared)
            })?;
        Ok(Tracer {
            shared,
            thread: Some(thread),
        })
    }

    /// Its settings.
    pub fn settings(&self) -> &TracingSettings {
        &self.shared.settings
    }

    /// Queues finished spans for export; those beyond the bound are dropped and counted.
    pub fn record(&self, spans: impl IntoIterator<Item = SpanRecord>) {
        let max = self.shared.settings.max_queue_spans;
        let mut dropped = 0u64;
        let mut added = 0i64;
        let wake = {
            let mut q = lock(&self.shared.queue);
            let was_empty = q.spans.is_empty();
            for span in spans {
                if q.held >= max {
                    dropped += 1;
                } else {
                    q.held += 1;
                    added += 1;
                    q.spans.push_back(span);
                }
            }
            // the exporter sleeps while the queue is empty: the first span starts its batch
            // delay, a full batch ends it
            (was_empty && !q.spans.is_empty())
                || q.spans.len() >= self.shared.settings.max_batch_spans
        };
        if dropped > 0 {
            self.shared.dropped_full.inc_by(dropped);
        }
        self.shared.metrics.queued.add(added);
        if wake {
            self.shared.ready.notify_one();
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.ready.notify_one();
        // the thread sends what is queued (each export bounded by its timeout), then ends; no
        // one waits for it
        drop(self.thread.take());
    }
}

/// Takes the next batch: when `max_batch_spans` are queued, when the oldest queued span has
/// waited `batch_delay`, or when the tracer closes. `None` when closed and empty.
fn next_batch(shared: &Shared) -> Option<Vec<SpanRecord>> {
    let s = &shared.settings;
    let mut q = lock(&shared.queue);
    let mut first_seen: Option<Instant> = None;
    loop {
        if q.spans.len() >= s.max_batch_spans || (q.closed && !q.spans.is_empty()) {
            break;
        }
        if q.closed {
            return None;
        }
        if q.spans.is_empty() {
            first_seen = None;
            q = shared.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let since = *first_seen.get_or_insert_with(Instant::now);
        let left = s.batch_delay.saturating_sub(since.elapsed());
        if left.is_zero() {
            break;
        }
        q = shared
            .ready
            .wait_timeout(q, left)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    let n = q.spans.len().min(s.max_batch_spans);
    Some(q.spans.drain(..n).collect())
}

fn export_loop(shared: &Shared) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the span exporter; spans will be dropped");
            return;
        }
    };
    let client = match reqwest::Client::builder()
        .timeout(shared.settings.export_timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the OTLP client; spans will be dropped");
            return;
        }
    };
    let resource = Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(
                    shared.settings.service_name.clone(),
                )),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut failures_logged_at: Option<Instant> = None;
    while let Some(batch) = next_batch(shared) {
        let n = batch.len();
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "retail-gateway".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans: batch.iter().map(SpanRecord::to_otlp).collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec();
        drop(batch);
        let sent = runtime.block_on(async {
            let resp = client
                .post(&shared.settings.endpoint)
                .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                .body(body)
                .send()
                .await?;
            resp.error_for_status()
        });
        match sent {
            Ok(_) => shared.metrics.exported.inc_by(n as u64),
            Err(e) => {
                shared
                    .metrics
                    .dropped
                    .with_label_values(&["export_failed"])
                    .inc_by(n as u64);
                // one line a minute at most while the collector is down
                if failures_logged_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    failures_logged_at = Some(Instant::now());
                    tracing::warn!(endpoint = %shared.settings.endpoint, spans = n, error = %e, "span export failed; spans dropped");
                }
            }
        }
        let mut q = lock(&shared.queue);
        q.held = q.held.saturating_sub(n);
        drop(q);
        shared.metrics.queued.sub(n as i64);
    }
}
