//! Pooled upstream connections that Pingora loses to a race, counted in a metric instead of
//! logged as errors.
//!
//! Pingora 0.9's pool hands an idle connection to a request only once the pool's idle watcher,
//! a task on a random worker thread, has let go of it; the request checks this a moment too
//! early when the watcher runs on another thread (cloudflare/pingora#998). The connection is
//! then closed, the request connects anew, and Pingora logs `failed to acquire reusable stream`
//! at ERROR. Nothing fails, but with two busy per-thread workers it happened to 2–4 % of the
//! requests: hundreds of ERROR lines a second that say nothing an operator can act on. (On the
//! work-stealing scheduler, the default with more than one worker, it did not happen.) This
//! filter drops those lines and counts them in `gateway_upstream_pool_reuse_lost_total`.

use std::fmt;
use std::sync::LazyLock;

use prometheus::IntCounter;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// The message Pingora logs for each lost connection.
const MESSAGE: &str = "failed to acquire reusable stream";
/// Where Pingora logs it from (a `log` record, so the target travels in a field).
const TARGET: &str = "pingora_core::connectors";

/// `gateway_upstream_pool_reuse_lost_total`: one process-wide count, since Pingora's log line
/// names no upstream. Every metrics registry of the process registers this same counter.
pub static LOST: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "gateway_upstream_pool_reuse_lost_total",
        "Pooled upstream connections Pingora closed instead of reusing (cloudflare/pingora#998); \
         each cost its request a new connection, and nothing else.",
    )
    .unwrap_or_else(|e| unreachable!("a constant name and help: {e}"))
});

/// The log filter that counts the lost connections and drops their log lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountLostConnections;

impl<S> Filter<S> for CountLostConnections {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    // Never narrows a callsite's interest: it decides per event, in `event_enabled`.
    fn callsite_enabled(&self, _meta: &'static Metadata<'static>) -> Interest {
        Interest::always()
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        if *event.metadata().level() != Level::ERROR {
            return true;
        }
        let mut seen = Seen::default();
        event.record(&mut seen);
        if seen.message && seen.target {
            LOST.inc();
            return false;
        }
        true
    }

    // Decides nothing by level: the filter it is combined with keeps its maximum.
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
}

/// Whether an event's fields are the lost connection's.
#[derive(Default)]
struct Seen {
    message: bool,
    target: bool,
}

impl Visit for Seen {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            self.target = value == TARGET;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // only ERROR events get here, and they are rare but for this one
        if field.name() == "message" {
            self.message = format!("{value:?}") == MESSAGE;
        }
    }
}
