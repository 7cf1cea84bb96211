//! Spans as the gateway records them: plain values made on the request's thread with static
//! keys and few allocations, turned into OTLP messages only on the exporter's thread.

use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span, status};

/// The role of a span (OTLP `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Work inside the gateway (a policy).
    Internal,
    /// The request a client sent.
    Server,
    /// A request the gateway sent upstream.
    Client,
    /// A stored delivery taken from its queue.
    Consumer,
}

impl Kind {
    fn otlp(self) -> i32 {
        match self {
            Kind::Internal => span::SpanKind::Internal as i32,
            Kind::Server => span::SpanKind::Server as i32,
            Kind::Client => span::SpanKind::Client as i32,
            Kind::Consumer => span::SpanKind::Consumer as i32,
        }
    }
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// A string.
    Str(Cow<'static, str>),
    /// An integer.
    Int(i64),
}

impl From<&'static str> for Attr {
    fn from(s: &'static str) -> Self {
        Attr::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Attr {
    fn from(s: String) -> Self {
        Attr::Str(Cow::Owned(s))
    }
}

impl From<i64> for Attr {
    fn from(v: i64) -> Self {
        Attr::Int(v)
    }
}

/// A link to a span of another request (a delivery's to the request that accepted it).
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The linked span's trace.
    pub trace_id: [u8; 16],
    /// The linked span.
    pub span_id: [u8; 8],
    /// Why it is linked.
    pub attributes: Vec<(&'static str, Attr)>,
}

/// Something that happened at a point of a span (an acknowledgement).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its name.
    pub name: &'static str,
    /// When, in Unix nanoseconds.
    pub at_ns: u64,
    /// Its attributes.
    pub attributes: Vec<(&'static str, Attr)>,
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// Its trace.
    pub trace_id: [u8; 16],
    /// Its id.
    pub span_id: [u8; 8],
    /// Its parent's id; zero for a root.
    pub parent_id: [u8; 8],
    /// W3C trace flags.
    pub flags: u8,
    /// Its name (low cardinality: a route or policy name, never a raw path).
    pub name: Cow<'static, str>,
    /// Its role.
    pub kind: Kind,
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
    /// Attributes.
    pub attributes: Vec<(&'static str, Attr)>,
    /// Links.
    pub links: Vec<Link>,
    /// Events.
    pub events: Vec<Event>,
    /// `Some(message)` when it failed.
    pub error: Option<Cow<'static, str>>,
}

/// Unix nanoseconds of a wall-clock time.
pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Converts the monotonic instants of one request to wall-clock nanoseconds, from one pair
/// taken together (its start).
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    origin: Instant,
    origin_ns: u64,
}

impl Timeline {
    /// A timeline where `origin` happened at `wall`.
    pub fn new(origin: Instant, wall: SystemTime) -> Self {
        Timeline {
            origin,
            origin_ns: unix_ns(wall),
        }
    }

    /// Unix nanoseconds of `t`.
    pub fn ns(&self, t: Instant) -> u64 {
        match t.checked_duration_since(self.origin) {
            Some(d) => self.origin_ns.saturating_add(nanos(d)),
            None => self
                .origin_ns
                .saturating_sub(nanos(self.origin.duration_since(t))),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A fresh, non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

fn key_value(key: &str, value: &Attr) -> KeyValue {
    let v = match value {
        Attr::Str(s) => any_value::Value::StringValue(s.to_string()),
        Attr::Int(i) => any_value::Value::IntValue(*i),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn key_values(attrs: &[(&'static str, Attr)]) -> Vec<KeyValue> {
    attrs.iter().map(|(k, v)| key_value(k, v)).collect()
}

impl SpanRecord {
    /// The OTLP message of this span.
    pub fn to_otlp(&self) -> Span {
        Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: if self.parent_id == [0; 8] {
                Vec::new()
            } else {
                self.parent_id.to_vec()
            },
            flags: u32::from(self.flags),
            name: self.name.to_string(),
            kind: self.kind.otlp(),
            start_time_unix_nano: self.start_ns,
            end_time_unix_nano: self.end_ns.max(self.start_ns),
            attributes: key_values(&self.attributes),
            events: self
                .events
                .iter()
                .map(|e| span::Event {
                    time_unix_nano: e.at_ns,
                    name: e.name.to_owned(),
                    attributes: key_values(&e.attributes),
                    dropped_attributes_count: 0,
                })
                .collect(),
            links: self
                .links
                .iter()
                .map(|l| span::Link {
                    trace_id: l.trace_id.to_vec(),
                    span_id: l.span_id.to_vec(),
                    attributes: key_values(&l.attributes),
                    ..Default::default()
                })
                .collect(),
            status: Some(match &self.error {
                Some(message) => Status {
                    message: message.to_string(),
                    code: status::StatusCode::Error as i32,
                },
                None => Status {
                    message: String::new(),
                    code: status::StatusCode::Unset as i32,
                },
            }),
            ..Default::default()
        }
    }
}
