//! OpenTelemetry traces: the spans of a request (the request, each policy phase that ran, each
//! upstream attempt) and of a stored delivery's attempts (linked to the request that accepted
//! it), sampled at the edge and exported over OTLP/HTTP by a thread of their own.

pub mod export;
pub mod span;

use std::borrow::Cow;
use std::time::{Instant, SystemTime};

use policies::pipeline::PolicyRun;

pub use export::{TraceMetrics, Tracer};
use span::{Attr, Event, Kind, Link, SpanRecord, Timeline, new_span_id};

use crate::forward::AttemptRecord;
use crate::ids::TraceContext;

/// What the request span of one traced request says.
#[derive(Debug)]
pub struct RequestSummary<'a> {
    /// Its trace context (our span is `span_id`, the caller's `parent_id`).
    pub trace: &'a TraceContext,
    /// When its head arrived, on both clocks.
    pub started: Instant,
    /// The wall-clock time of `started`.
    pub started_wall: SystemTime,
    /// Method.
    pub method: &'a str,
    /// The route's name, when one took it.
    pub route: Option<&'a str>,
    /// The request's channel.
    pub channel: Option<&'a str>,
    /// The request id.
    pub request_id: &'a str,
    /// Status sent (0: none).
    pub status: u16,
    /// `forwarded`, `queued`, `policy`, ...
    pub outcome: &'static str,
    /// The answering policy, if any.
    pub policy: Option<&'a str>,
    /// The refusal's or failure's reason.
    pub reason: &'a str,
}

fn attempt_spans(
    out: &mut Vec<SpanRecord>,
    trace_id: [u8; 16],
    parent: [u8; 8],
    flags: u8,
    timeline: &Timeline,
    attempts: &[AttemptRecord],
    upstream: &str,
) {
    for a in attempts {
        let mut attributes = vec![
            ("gateway.upstream", Attr::from(upstream.to_owned())),
            ("server.address", Attr::from(a.endpoint.to_string())),
        ];
        if let Some(status) = a.status {
            attributes.push(("http.response.status_code", Attr::Int(i64::from(status))));
        }
        if let Some(e) = a.error {
            attributes.push(("error.type", Attr::from(e)));
        }
        if let Some(r) = a.retry {
            attributes.push(("gateway.retry_reason", Attr::from(r)));
        }
        let failed = a.error.is_some() || a.status.is_some_and(|s| s >= 500);
        out.push(SpanRecord {
            trace_id,
            span_id: a.span_id,
            parent_id: parent,
            flags,
            name: Cow::Borrowed(if a.sent {
                "upstream attempt"
            } else {
                "upstream refused"
            }),
            kind: Kind::Client,
            start_ns: timeline.ns(a.started),
            end_ns: timeline.ns(a.ended.unwrap_or_else(Instant::now)),
            attributes,
            links: Vec::new(),
            events: Vec::new(),
            error: failed.then(|| {
                a.error
                    .map_or(Cow::Borrowed("upstream error status"), Cow::Borrowed)
            }),
        });
    }
}

/// The spans of one finished, traced request.
pub fn request_spans(
    r: &RequestSummary<'_>,
    runs: &[PolicyRun],
    attempts: &[AttemptRecord],
    upstream: &str,
) -> Vec<SpanRecord> {
    let t = r.trace;
    let timeline = Timeline::new(r.started, r.started_wall);
    let mut out = Vec::with_capacity(1 + runs.len() + attempts.len());
    let mut attributes = vec![
        ("http.request.method", Attr::from(r.method.to_owned())),
        ("http.response.status_code", Attr::Int(i64::from(r.status))),
        ("gateway.request_id", Attr::from(r.request_id.to_owned())),
        ("gateway.outcome", Attr::from(r.outcome)),
    ];
    if let Some(route) = r.route {
        attributes.push(("gateway.route", Attr::from(route.to_owned())));
    }
    if let Some(channel) = r.channel {
        attributes.push(("gateway.channel", Attr::from(channel.to_owned())));
    }
    if let Some(policy) = r.policy {
        attributes.push(("gateway.policy", Attr::from(policy.to_owned())));
    }
    if !r.reason.is_empty() {
        attributes.push(("gateway.reason", Attr::from(r.reason.to_owned())));
    }
    let name = match r.route {
        Some(route) => format!("{} {route}", r.method),
        None => format!("{} unmatched", r.method),
    };
    out.push(SpanRecord {
        trace_id: t.trace_id,
        span_id: t.span_id,
        parent_id: t.parent_id,
        flags: t.flags,
        name: Cow::Owned(name),
        kind: Kind::Server,
        start_ns: timeline.ns(r.started),
        end_ns: timeline.ns(Instant::now()),
        attributes,
        links: Vec::new(),
        events: Vec::new(),
        error: (r.status >= 500 || r.status == 0)
            .then(|| Cow::Owned(format!("{} {}", r.outcome, r.reason))),
    });
    for run in runs {
        let mut attributes = vec![
            ("gateway.policy", Attr::from(run.policy.to_string())),
            ("gateway.policy.kind", Attr::from(run.kind)),
            ("gateway.policy.phase", Attr::from(run.phase)),
            (
                "gateway.policy.outcome",
                Attr::from(if run.refused.is_some() {
                    "refused"
                } else {
                    "passed"
                }),
            ),
        ];
        if let Some((status, reason)) = run.refused {
            attributes.push(("http.response.status_code", Attr::Int(i64::from(status))));
            attributes.push(("gateway.reason", Attr::from(reason)));
        }
        out.push(SpanRecord {
            trace_id: t.trace_id,
            span_id: new_span_id(),
            parent_id: t.span_id,
            flags: t.flags,
            name: Cow::Owned(format!("policy {}", run.policy)),
            kind: Kind::Internal,
            start_ns: timeline.ns(run.started),
            end_ns: timeline.ns(run.ended),
            attributes,
            links: Vec::new(),
            events: Vec::new(),
            error: None,
        });
    }
    attempt_spans(
        &mut out, t.trace_id, t.span_id, t.flags, &timeline, attempts, upstream,
    );
    out
}

/// The trace of one attempt of a stored delivery: its own span, in the trace of the request
/// that accepted the document, child of and linked to that request's span.
#[derive(Debug, Clone)]
pub struct DeliveryTrace {
    /// The accepting request's trace.
    pub trace_id: [u8; 16],
    /// The accepting request's span.
    pub accepted_by: [u8; 8],
    /// This attempt's span.
    pub span_id: [u8; 8],
    /// Trace flags.
    pub flags: u8,
    started: Instant,
    started_wall: SystemTime,
}

/// How a delivery attempt ended, for its span.
#[derive(Debug)]
pub struct DeliverySummary<'a> {
    /// The queue.
    pub queue: &'a str,
    /// The delivery's id.
    pub delivery: &'a str,
    /// Its channel.
    pub channel: &'a str,
    /// The upstream.
    pub upstream: &'a str,
    /// Which attempt of the delivery this was (1 for the first).
    pub attempt: u32,
    /// `delivered`, `retried`, `dead` or `released`.
    pub result: &'static str,
    /// The upstream's status, if it answered.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<&'a str>,
}

impl DeliveryTrace {
    /// Begins the span of an attempt of a delivery accepted under `traceparent`, if the tracer
    /// samples it (by the stored sampled flag when parent-based, else by its ratio).
    pub fn begin(tracer: &Tracer, traceparent: Option<&str>) -> Option<Self> {
        let stored = traceparent.map(|tp| TraceContext::from_headers(Some(tp.as_bytes()), None));
        let (trace_id, accepted_by, caller_flags) = match &stored {
            // from_headers gives a new trace when the stored value is not valid
            Some(t) if t.parent_id != [0; 8] => (t.trace_id, t.parent_id, Some(t.flags)),
            _ => {
                let fresh = TraceContext::from_headers(None, None);
                (fresh.trace_id, [0; 8], None)
            }
        };
        if !tracer.settings().sampled(&trace_id, caller_flags) {
            return None;
        }
        Some(DeliveryTrace {
            trace_id,
            accepted_by,
            span_id: new_span_id(),
            flags: 0x01,
            started: Instant::now(),
            started_wall: SystemTime::now(),
        })
    }

    /// The spans of the attempt: the delivery span (an `erp.acknowledged` event when the
    /// upstream took it) and one per upstream attempt under it.
    pub fn finish(self, d: &DeliverySummary<'_>, attempts: &[AttemptRecord]) -> Vec<SpanRecord> {
        let timeline = Timeline::new(self.started, self.started_wall);
        let end = Instant::now();
        let mut attributes = vec![
            ("gateway.queue", Attr::from(d.queue.to_owned())),
            ("gateway.delivery.id", Attr::from(d.delivery.to_owned())),
            ("gateway.channel", Attr::from(d.channel.to_owned())),
            ("gateway.delivery.attempt", Attr::Int(i64::from(d.attempt))),
            ("gateway.delivery.result", Attr::from(d.result)),
        ];
        if let Some(status) = d.status {
            attributes.push(("http.response.status_code", Attr::Int(i64::from(status))));
        }
        let mut events = Vec::new();
        if d.result == "delivered" {
            events.push(Event {
                name: "erp.acknowledged",
                at_ns: timeline.ns(end),
                attributes: d
                    .status
                    .map(|s| vec![("http.response.status_code", Attr::Int(i64::from(s)))])
                    .unwrap_or_default(),
            });
        }
        let links = if self.accepted_by == [0; 8] {
            Vec::new()
        } else {
            vec![Link {
                trace_id: self.trace_id,
                span_id: self.accepted_by,
                attributes: vec![("gateway.link", Attr::from("accepted_by"))],
            }]
        };
        let mut out = Vec::with_capacity(1 + attempts.len());
        out.push(SpanRecord {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_id: self.accepted_by,
            flags: self.flags,
            name: Cow::Owned(format!("deliver {}", d.queue)),
            kind: Kind::Consumer,
            start_ns: timeline.ns(self.started),
            end_ns: timeline.ns(end),
            attributes,
            links,
            events,
            error: matches!(d.result, "retried" | "dead")
                .then(|| Cow::Owned(d.error.unwrap_or(d.result).to_owned())),
        });
        attempt_spans(
            &mut out,
            self.trace_id,
            self.span_id,
            self.flags,
            &timeline,
            attempts,
            d.upstream,
        );
        out
    }
}
