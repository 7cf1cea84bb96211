//! An upstream's endpoints as the forwarding layer uses them: each endpoint resolved to a
//! Pingora peer (with its TLS, client certificate and HTTP/2 settings) and its resilience state
//! (health, ejection, circuit breaker), plus the upstream's retry budget and `max_in_flight`
//! slots. A pool outlives reloads that do not change its upstream, so that state is kept.

use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::utils::tls::{CertKey, WrappedX509, parse_x509};
use policies::model::Upstream;
use policies::resilience::breaker::{Admit, BreakerState, CircuitBreaker, Transition};
use policies::resilience::budget::RetryBudget;
use policies::resilience::ejection::{Ejection, max_ejected};
use policies::resilience::health::Health;
use policies::resilience::pacing::Pacer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::forward::error::UpstreamError;
use crate::forward::health::{ProbeSchedule, Prober};
use crate::forward::metrics::{EndpointMetrics, PoolMetrics, UpstreamMetrics};

static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Monotonic time since the process's origin: the clock every pool's state shares, so state
/// kept across reloads stays comparable.
pub fn now() -> Duration {
    ORIGIN.elapsed()
}

/// [`now`] at `at`, for a caller that has just read the clock for something else.
pub fn now_at(at: Instant) -> Duration {
    at.saturating_duration_since(*ORIGIN)
}

/// One endpoint: a resolved address with its state.
#[derive(Debug)]
pub struct EndpointSlot {
    /// The Pingora peer (connections are pooled by Pingora per peer).
    pub peer: HttpPeer,
    /// The address as logged and labelled.
    pub label: Arc<str>,
    /// Active health.
    pub health: Health,
    /// Passive outlier ejection.
    pub ejection: Ejection,
    /// The circuit breaker, when configured.
    pub breaker: Option<CircuitBreaker>,
    /// Attempts at this endpoint now.
    pub in_flight: AtomicUsize,
    /// When it is probed next.
    pub schedule: ProbeSchedule,
    /// Metric handles.
    pub metrics: EndpointMetrics,
}

/// An endpoint that could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("upstream {upstream:?}: cannot resolve endpoint {endpoint}: {reason}")]
pub struct ResolveError {
    upstream: String,
    endpoint: String,
    reason: String,
}

/// One upstream cluster, ready to forward to.
#[derive(Debug)]
pub struct UpstreamPool {
    /// The compiled upstream.
    pub upstream: Arc<Upstream>,
    endpoints: Vec<EndpointSlot>,
    next: AtomicUsize,
    max_ejected: usize,
    slots: Option<Arc<Semaphore>>,
    pacer: Option<Pacer>,
    budget: Option<RetryBudget>,
    prober: Option<Prober>,
    /// Metric handles.
    pub metrics: PoolMetrics,
}

/// The result of an attempt, as the resilience state sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The endpoint answered (any status but a 5xx).
    Answered,
    /// It failed: connect failure, reset, timeout, or a 5xx answer.
    Failed,
    /// No verdict (the client went away, or the answer was a 429).
    Abandoned,
}

/// A chosen endpoint, with what its breaker allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chosen {
    /// The endpoint's index in the pool.
    pub index: usize,
    /// The breaker's answer (`Pass` when there is no breaker).
    pub admit: Admit,
}

/// A `max_in_flight` slot (or, without a limit, just the in-flight count), released on drop.
#[derive(Debug)]
pub struct InFlight {
    _permit: Option<OwnedSemaphorePermit>,
    gauge: prometheus::IntGauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn certificate_chain(ders: &[Vec<u8>]) -> Vec<WrappedX509> {
    // compile parsed each certificate with the same parser, so this cannot fail here
    ders.iter()
        .map(|der| WrappedX509::new(der.clone(), parse_x509))
        .collect()
}

impl UpstreamPool {
    /// Builds the pool of `upstream`, or keeps `previous` (with all its state) when the upstream
    /// did not change.
    pub fn build(
        upstream: Arc<Upstream>,
        metrics: &UpstreamMetrics,
        previous: Option<&Arc<UpstreamPool>>,
    ) -> Result<Arc<Self>, ResolveError> {
        if let Some(prev) = previous
            && same_upstream(&prev.upstream, &upstream)
        {
            return Ok(prev.clone());
        }
        let transport = &upstream.transport;
        let ca: Option<Arc<[WrappedX509]>> = (!transport.ca.is_empty())
            .then(|| Arc::from(certificate_chain(&transport.ca).into_boxed_slice()));
        let client_cert = transport
            .client_cert
            .as_ref()
            .map(|c| Arc::new(CertKey::new(c.chain.clone(), c.key.clone())));
        let resilience = &upstream.resilience;
        let mut endpoints = Vec::with_capacity(upstream.endpoints.len());
        for ep in &upstream.endpoints {
            let addrs =
                (ep.host.as_str(), ep.port)
                    .to_socket_addrs()
                    .map_err(|e| ResolveError {
                        upstream: upstream.name.to_string(),
                        endpoint: ep.to_string(),
                        reason: e.to_string(),
                    })?;
            let sni = upstream.sni.clone().unwrap_or_else(|| ep.host.clone());
            let mut any = false;
            for addr in addrs {
                any = true;
                let mut peer = HttpPeer::new(addr, transport.tls, sni.clone());
                let o = &mut peer.options;
                o.connection_timeout = Some(upstream.connect_timeout);
                o.total_connection_timeout = Some(upstream.connect_timeout);
                o.read_timeout = Some(upstream.read_timeout);
                o.write_timeout = Some(upstream.read_timeout);
                o.idle_timeout = Some(upstream.idle_timeout);
                if transport.http2 {
                    // over TLS, ALPN offers h2 and keeps HTTP/1.1 possible; in plain text
                    // there is no negotiation, so h2c is spoken from the first byte
                    let min = if transport.tls { 1 } else { 2 };
                    o.set_http_version(2, min);
                }
                o.ca.clone_from(&ca);
                peer.client_cert_key.clone_from(&client_cert);
                let label: Arc<str> = Arc::from(peer.address().to_string());
                let m = metrics.for_endpoint(&upstream.name, &label);
                m.healthy.set(1);
                m.ejected.set(0);
                m.circuit_open.set(0);
                endpoints.push(EndpointSlot {
                    peer,
                    label,
                    health: Health::default(),
                    ejection: Ejection::default(),
                    breaker: resilience.circuit_breaker.as_ref().map(CircuitBreaker::new),
                    in_flight: AtomicUsize::new(0),
                    schedule: ProbeSchedule::default(),
                    metrics: m,
                });
            }
            if !any {
                return Err(ResolveError {
                    upstream: upstream.name.to_string(),
                    endpoint: ep.to_string(),
                    reason: "no addresses".into(),
                });
            }
        }
        let max_ejected = max_ejected(
            endpoints.len(),
            resilience.outlier_detection.max_ejected_percent,
        );
        let slots = resilience
            .max_in_flight
            .map(|n| Arc::new(Semaphore::new(n as usize)));
        let budget = resilience
            .retry
            .as_ref()
            .map(|r| RetryBudget::new(r.budget_ratio, r.budget_min_retries, r.budget_window.0));
        let pacer = resilience.max_rate.as_ref().map(Pacer::new);
        let prober = match (&resilience.health_check, endpoints.first()) {
            (Some(spec), Some(first)) => {
                let host = transport
                    .host
                    .as_ref()
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
                    .or_else(|| upstream.endpoints.first().map(ToString::to_string))
                    .unwrap_or_default();
                Some(
                    Prober::new(spec, &first.peer, &host).map_err(|e| ResolveError {
                        upstream: upstream.name.to_string(),
                        endpoint: host.clone(),
                        reason: format!("cannot build its health probe: {e}"),
                    })?,
                )
            }
            _ => None,
        };
        Ok(Arc::new(UpstreamPool {
            metrics: metrics.for_upstream(&upstream.name),
            upstream,
            endpoints,
            next: AtomicUsize::new(0),
            max_ejected,
            slots,
            pacer,
            budget,
            prober,
        }))
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[EndpointSlot] {
        &self.endpoints
    }

    /// How many endpoints (addresses) the pool has.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The retry budget, when retries are configured.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }

    /// Where round robin starts for a new request.
    pub fn start(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Chooses the endpoint of an attempt: the first, in round-robin order from `start +
    /// offset`, that is healthy, not ejected and whose breaker lets it through. Ejection yields
    /// when it would leave nothing to choose. Returns the choice and the offset after it.
    pub fn choose(
        &self,
        start: usize,
        offset: usize,
        now: Duration,
    ) -> Result<(Chosen, usize), UpstreamError> {
        let n = self.endpoints.len();
        if n == 0 {
            return Err(UpstreamError::ConnectFailed);
        }
        let mut open_for: Option<Duration> = None;
        let mut any_healthy = false;
        for honour_ejection in [true, false] {
            for k in 0..n {
                let i = start.wrapping_add(offset + k) % n;
                let Some(ep) = self.endpoints.get(i) else {
                    continue;
                };
                if !ep.health.is_healthy() {
                    continue;
                }
                any_healthy = true;
                if honour_ejection && ep.ejection.is_ejected(now) {
                    continue;
                }
                let admit = match &ep.breaker {
                    None => Admit::Pass,
                    Some(b) => {
                        let (admit, transition) = b.admit(now);
                        self.note_transition(ep, transition);
                        admit
                    }
                };
                if let Admit::Deny(wait) = admit {
                    open_for = Some(open_for.map_or(wait, |w| w.min(wait)));
                    continue;
                }
                return Ok((Chosen { index: i, admit }, offset + k + 1));
            }
            if open_for.is_some() || !any_healthy {
                break;
            }
        }
        if let Some(retry_after) = open_for {
            return Err(UpstreamError::CircuitOpen { retry_after });
        }
        let retry_after = self
            .upstream
            .resilience
            .health_check
            .as_ref()
            .map_or(Duration::from_secs(1), |h| h.interval.0);
        Err(UpstreamError::NoHealthyEndpoint { retry_after })
    }

    /// The endpoint at `index`.
    pub fn endpoint(&self, index: usize) -> Option<&EndpointSlot> {
        self.endpoints.get(index)
    }

    /// Reports how an attempt at an endpoint ended.
    pub fn record(&self, chosen: Chosen, result: AttemptResult, now: Duration) {
        let Some(ep) = self.endpoints.get(chosen.index) else {
            return;
        };
        let od = &self.upstream.resilience.outlier_detection;
        match result {
            AttemptResult::Answered => ep.ejection.on_success(now, od),
            AttemptResult::Failed => {
                if ep.ejection.on_failure(od) && self.ejected_count(now) < self.max_ejected {
                    let length = ep.ejection.eject(now, od);
                    ep.metrics.ejections.inc();
                    ep.metrics.ejected.set(1);
                    tracing::warn!(
                        upstream = %self.upstream.name,
                        endpoint = %ep.label,
                        ejection_ms = length.as_millis() as u64,
                        times = ep.ejection.times(),
                        "endpoint ejected after failures in a row"
                    );
                }
            }
            AttemptResult::Abandoned => {}
        }
        if let Some(b) = &ep.breaker {
            let transition = match result {
                AttemptResult::Abandoned => {
                    b.abandon(chosen.admit);
                    None
                }
                r => b.record(now, chosen.admit, r == AttemptResult::Answered),
            };
            self.note_transition(ep, transition);
        }
    }

    fn note_transition(&self, ep: &EndpointSlot, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        let (to, counter, open) = match t {
            Transition::Opened => ("open", &ep.metrics.to_open, 1),
            Transition::HalfOpened => ("half_open", &ep.metrics.to_half_open, 1),
            Transition::Closed => ("closed", &ep.metrics.to_closed, 0),
        };
        counter.inc();
        ep.metrics.circuit_open.set(open);
        tracing::warn!(
            upstream = %self.upstream.name,
            endpoint = %ep.label,
            state = to,
            "circuit breaker changed state"
        );
    }

    fn ejected_count(&self, now: Duration) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.ejection.is_ejected(now))
            .count()
    }

    /// Refreshes the ejection gauges (ejections end by time, not by an event).
    pub fn refresh_gauges(&self, now: Duration) {
        for ep in &self.endpoints {
            ep.metrics
                .ejected
                .set(i64::from(ep.ejection.is_ejected(now)));
        }
    }

    /// Takes a `max_in_flight` slot, waiting at most `wait`; without a limit, only counts.
    pub async fn slot(&self, wait: Duration) -> Result<InFlight, UpstreamError> {
        let permit = match &self.slots {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    self.metrics.queued.inc();
                    let got = tokio::time::timeout(wait, sem.clone().acquire_owned()).await;
                    self.metrics.queued.dec();
                    match got {
                        Ok(Ok(p)) => Some(p),
                        _ => {
                            return Err(UpstreamError::Saturated {
                                retry_after: self.upstream.resilience.queue_timeout,
                            });
                        }
                    }
                }
            },
        };
        self.metrics.in_flight.inc();
        Ok(InFlight {
            _permit: permit,
            gauge: self.metrics.in_flight.clone(),
        })
    }

    /// Waits for the next attempt's turn under `max_rate`, at most `wait`; a turn further away
    /// is refused (nothing is reserved for it). True when it waited.
    pub async fn pace(&self, wait: Duration) -> Result<bool, UpstreamError> {
        let Some(pacer) = &self.pacer else {
            return Ok(false);
        };
        match pacer.reserve(now(), wait) {
            Ok(turn) if turn.is_zero() => Ok(false),
            Ok(turn) => {
                self.metrics.queued.inc();
                tokio::time::sleep(turn).await;
                self.metrics.queued.dec();
                Ok(true)
            }
            Err(turn) => Err(UpstreamError::Saturated { retry_after: turn }),
        }
    }

    /// Requests waiting for a slot and slots in use, for the admin view.
    pub fn slots_in_use(&self) -> Option<(usize, usize)> {
        let sem = self.slots.as_ref()?;
        let limit = self.upstream.resilience.max_in_flight.unwrap_or(0) as usize;
        Some((limit.saturating_sub(sem.available_permits()), limit))
    }
}

impl UpstreamPool {
    /// Starts the health probes that are due (each endpoint's at its own interval, one at a
    /// time); returns the interval, or `None` without health checks.
    pub fn probe_due(self: &Arc<Self>) -> Option<Duration> {
        let prober = self.prober.as_ref()?;
        let interval = prober.spec.interval.0;
        let now_ms = now().as_millis() as u64;
        for i in 0..self.endpoints.len() {
            let Some(ep) = self.endpoints.get(i) else {
                continue;
            };
            if !ep.schedule.claim(now_ms) {
                continue;
            }
            let pool = self.clone();
            tokio::spawn(async move {
                let Some(ep) = pool.endpoints.get(i) else {
                    return;
                };
                let Some(prober) = pool.prober.as_ref() else {
                    return;
                };
                let ok = prober.probe(&ep.label).await;
                if ok {
                    ep.metrics.probe_ok.inc();
                } else {
                    ep.metrics.probe_failed.inc();
                }
                if let Some(healthy) = ep.health.record(ok, &prober.spec) {
                    ep.metrics.healthy.set(i64::from(healthy));
                    tracing::warn!(
                        upstream = %pool.upstream.name,
                        endpoint = %ep.label,
                        healthy,
                        "endpoint health changed"
                    );
                }
                ep.schedule
                    .done(now().as_millis() as u64, prober.spec.interval.0);
            });
        }
        Some(interval)
    }
}

/// Whether two compiled upstreams would build the same pool (the state of the old one may then
/// be kept).
fn same_upstream(a: &Upstream, b: &Upstream) -> bool {
    a.spec == b.spec
        && a.endpoints == b.endpoints
        && a.request_headers == b.request_headers
        && a.transport == b.transport
}

impl EndpointSlot {
    /// The breaker's state (closed without a breaker).
    pub fn breaker_state(&self, now: Duration) -> BreakerState {
        self.breaker
            .as_ref()
            .map_or(BreakerState::Closed, |b| b.state(now))
    }
}
