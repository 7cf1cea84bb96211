//! What the gateway knows about one request while it handles it: the snapshot it started with,
//! its route and policy state, its forwarding state, how it ended, and the buffered answer that
//! completion policies (idempotency records) store.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use policies::model::Route;
use policies::pipeline::ExchangeState;
use policies::route::PathParams;

use crate::forward::Attempts;
use crate::ids::TraceContext;
pub use crate::outcome::Outcome;
use crate::snapshot::Snapshot;

/// Per-request context.
pub struct RequestCtx {
    /// The snapshot the request started with (kept to its end across reloads).
    pub snapshot: Arc<Snapshot>,
    /// When the request head arrived.
    pub started: Instant,
    /// Its trace context.
    pub trace: Option<TraceContext>,
    /// When a traced request (sampled, with tracing on) arrived, on the wall clock; `None`:
    /// no spans are recorded for it.
    pub traced_at: Option<std::time::SystemTime>,
    /// Its route, once matched.
    pub route: Option<Arc<Route>>,
    /// The route's path parameters.
    pub params: PathParams,
    /// The policies' state.
    pub state: ExchangeState,
    /// The forwarding state.
    pub attempts: Attempts,
    /// A retry decided on an upstream answer of the streaming path (Pingora calls back with an
    /// error, which must not count as a second failure).
    pub retry_on_answer: bool,
    /// How it ended.
    pub outcome: Outcome,
    /// The answer of a buffered exchange (kept even when the client went away before it was
    /// written, for completion policies).
    pub buffered_response: Option<(HeaderMap, Bytes)>,
    /// The status of `buffered_response`.
    pub buffered_status: Option<u16>,
    /// Whether the policies' completion phase already ran (before the answer was written).
    pub policies_completed: bool,
    /// Request body bytes read by the buffered path.
    pub bytes_in: usize,
}

impl RequestCtx {
    /// A context for a request starting now on `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        RequestCtx {
            snapshot,
            started: Instant::now(),
            trace: None,
            traced_at: None,
            route: None,
            params: PathParams::default(),
            state: ExchangeState::default(),
            attempts: Attempts::default(),
            retry_on_answer: false,
            outcome: Outcome::Pending,
            buffered_response: None,
            buffered_status: None,
            policies_completed: false,
            bytes_in: 0,
        }
    }

    /// The ids its answers carry.
    pub fn ids(&self) -> crate::respond::Ids<'_> {
        crate::respond::Ids {
            request_id: &self.state.request_id,
            trace_id: self.trace.as_ref().map(|t| &t.trace_id),
        }
    }

    /// The name of the route's upstream, for problems and metrics.
    pub fn upstream_name(&self) -> &str {
        self.route
            .as_ref()
            .and_then(|r| self.snapshot.set.upstreams.get(r.upstream))
            .map_or("-", |u| &u.name)
    }

    /// The route's upstream pool.
    pub fn pool(&self) -> Option<&Arc<crate::forward::UpstreamPool>> {
        self.route
            .as_ref()
            .and_then(|r| self.snapshot.pools.get(r.upstream))
    }
}
