//! The `tracing:` section of a policy file (OpenTelemetry traces over OTLP/HTTP) and its
//! compiled settings, including the sampling decision, which needs no I/O.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::DurationSpec;

/// OpenTelemetry traces, exported over OTLP/HTTP (protobuf) to a collector. Absent: no span is
/// recorded (the W3C trace context is still propagated upstream). A change takes effect on
/// reload; spans already queued are sent to the endpoint they were recorded for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingSpec {
    /// The collector's OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`
    /// (`http://` or `https://`).
    pub endpoint: String,
    /// The `service.name` resource attribute of every span.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Which traces are recorded.
    #[serde(default)]
    pub sampling: SamplingSpec,
    /// Spans waiting for export (the batch being sent included) beyond which new spans are
    /// dropped and counted in `gateway_trace_spans_dropped_total{reason="queue_full"}`, so a
    /// slow or dead collector costs bounded memory and never slows requests.
    #[serde(default = "default_max_queue_spans")]
    #[schemars(range(min = 1))]
    pub max_queue_spans: usize,
    /// Spans sent in one export request.
    #[serde(default = "default_max_batch_spans")]
    #[schemars(range(min = 1))]
    pub max_batch_spans: usize,
    /// How long a span may wait for its batch to fill before the batch is sent anyway.
    #[serde(default = "default_batch_delay")]
    pub batch_delay: DurationSpec,
    /// How long one export request may take; a failed or timed-out export drops its spans
    /// (counted with `reason="export_failed"`).
    #[serde(default = "default_export_timeout")]
    pub export_timeout: DurationSpec,
}

/// Head sampling of traces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingSpec {
    /// The share of traces recorded, from `0.0` to `1.0`, decided from the trace id (so every
    /// gateway instance decides the same way for one trace).
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// When the caller sent a valid `traceparent`, follow its sampled flag instead of the
    /// ratio (a marketplace that records the trace gets the gateway's spans too).
    #[serde(default = "default_true")]
    pub parent_based: bool,
}

impl Default for SamplingSpec {
    fn default() -> Self {
        SamplingSpec {
            ratio: default_ratio(),
            parent_based: true,
        }
    }
}

fn default_service_name() -> String {
    "retail-gateway".to_owned()
}
fn default_ratio() -> f64 {
    1.0
}
fn default_true() -> bool {
    true
}
fn default_max_queue_spans() -> usize {
    4096
}
fn default_max_batch_spans() -> usize {
    512
}
fn default_batch_delay() -> DurationSpec {
    DurationSpec::secs(1)
}
fn default_export_timeout() -> DurationSpec {
    DurationSpec::secs(10)
}

/// The compiled `tracing:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The OTLP/HTTP traces URL.
    pub endpoint: String,
    /// `service.name`.
    pub service_name: String,
    /// Traces whose id falls under this bound are sampled (`ratio * 2^64`, on the trace id's
    /// last 8 bytes, as OpenTelemetry's `TraceIdRatioBased`).
    pub ratio_bound: u64,
    /// The configured ratio, for display.
    pub ratio: f64,
    /// Follow the caller's sampled flag.
    pub parent_based: bool,
    /// Bound of the export queue, in spans.
    pub max_queue_spans: usize,
    /// Spans per export request.
    pub max_batch_spans: usize,
    /// Longest wait of a partial batch.
    pub batch_delay: std::time::Duration,
    /// Longest export request.
    pub export_timeout: std::time::Duration,
}

impl TracingSettings {
    /// Checks `spec`; each error comes with the JSON pointer (under `/tracing`) it is about.
    pub fn compile(spec: &TracingSpec) -> Result<Self, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        let endpoint = spec.endpoint.trim();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || endpoint.parse::<http::Uri>().is_err()
        {
            errors.push((
                "/tracing/endpoint",
                format!("{endpoint:?} is not an http:// or https:// URL"),
            ));
        }
        let ratio = spec.sampling.ratio;
        if !(0.0..=1.0).contains(&ratio) {
            errors.push((
                "/tracing/sampling/ratio",
                format!("the ratio must be between 0.0 and 1.0, not {ratio}"),
            ));
        }
        if spec.max_queue_spans == 0 {
            errors.push(("/tracing/max_queue_spans", "must be at least 1".to_owned()));
        }
        if spec.max_batch_spans == 0 {
            errors.push(("/tracing/max_batch_spans", "must be at least 1".to_owned()));
        }
        if spec.service_name.trim().is_empty() {
            errors.push(("/tracing/service_name", "must not be empty".to_owned()));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let ratio_bound = if ratio >= 1.0 {
            u64::MAX
        } else {
            // a ratio below one never reaches 2^64
            (ratio * (u64::MAX as f64)) as u64
        };
        Ok(TracingSettings {
            endpoint: endpoint.to_owned(),
            service_name: spec.service_name.trim().to_owned(),
            ratio_bound,
            ratio,
            parent_based: spec.sampling.parent_based,
            max_queue_spans: spec.max_queue_spans,
            max_batch_spans: spec.max_batch_spans.min(spec.max_queue_spans),
            batch_delay: spec.batch_delay.0,
            export_timeout: spec.export_timeout.0,
        })
    }

    /// Whether a trace is recorded: the caller's sampled flag when there is a caller and
    /// `parent_based`, else the ratio on the trace id.
    pub fn sampled(&self, trace_id: &[u8; 16], caller_flags: Option<u8>) -> bool {
        match caller_flags {
            Some(flags) if self.parent_based => flags & 0x01 == 0x01,
            _ => {
                if self.ratio_bound == u64::MAX {
                    return true;
                }
                let mut low = [0u8; 8];
                low.copy_from_slice(&trace_id[8..]);
                u64::from_be_bytes(low) < self.ratio_bound
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ratio: f64, parent_based: bool) -> TracingSpec {
        TracingSpec {
            endpoint: "http://127.0.0.1:4318/v1/traces".into(),
            service_name: default_service_name(),
            sampling: SamplingSpec {
                ratio,
                parent_based,
            },
            max_queue_spans: 10,
            max_batch_spans: 50,
            batch_delay: default_batch_delay(),
            export_timeout: default_export_timeout(),
        }
    }

    #[test]
    fn the_ratio_decides_on_the_trace_ids_low_bytes() {
        let s = TracingSettings::compile(&spec(0.25, true)).unwrap();
        let mut low = [0u8; 16];
        low[8] = 0x30; // 0x30.. / 2^64 < 0.25
        let mut high = [0u8; 16];
        high[8] = 0x50; // > 0.25
        assert!(s.sampled(&low, None));
        assert!(!s.sampled(&high, None));
        // over many random ids, the share is near the ratio
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| s.sampled(&rand::random::<[u8; 16]>(), None))
            .count();
        assert!((4_000..6_000).contains(&hits), "{hits} of {n}");
        assert_eq!(s.max_batch_spans, 10, "a batch never exceeds the queue");
    }

    #[test]
    fn a_callers_flag_wins_when_parent_based() {
        let none = TracingSettings::compile(&spec(0.0, true)).unwrap();
        assert!(none.sampled(&[1; 16], Some(0x01)));
        assert!(!none.sampled(&[1; 16], Some(0x00)));
        assert!(!none.sampled(&[1; 16], None));
        let all = TracingSettings::compile(&spec(1.0, false)).unwrap();
        assert!(
            all.sampled(&[1; 16], Some(0x00)),
            "not parent based: the ratio"
        );
    }

    #[test]
    fn bad_settings_name_their_field() {
        let mut s = spec(1.5, true);
        s.endpoint = "127.0.0.1:4318".into();
        s.max_queue_spans = 0;
        let errors = TracingSettings::compile(&s).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            fields,
            [
                "/tracing/endpoint",
                "/tracing/sampling/ratio",
                "/tracing/max_queue_spans"
            ]
        );
    }
}
