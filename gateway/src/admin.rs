//! The admin listener: `/healthz` (the process is up), `/readyz` (a policy set is compiled, its
//! upstream pools exist, and the server is not shutting down), `/metrics` (Prometheus text) and
//! `/config` (which policy set serves: content hash, load time, routes, last reload) and
//! `/upstreams` (each endpoint's health, ejection, circuit and in-flight requests); `/` and
//! `/status.json` are the status page (`crate::status_page`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use policies::problem::{PROBLEM_CONTENT_TYPE, Problem};
use serde_json::json;

use crate::delivery;
use crate::forward::pool::now;
use crate::metrics::Metrics;
use crate::snapshot::ConfigStore;
use policies::resilience::breaker::BreakerState;

/// Whether the gateway should receive traffic.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Marks ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Flips readiness on when the server's services start and off when shutdown begins, so a load
/// balancer stops sending traffic while in-flight requests drain.
pub struct Lifecycle(pub Arc<Readiness>);

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.0.set(true);
        let _ = shutdown.changed().await;
        self.0.set(false);
    }
}

/// The admin HTTP app.
pub struct AdminApp {
    /// The config store.
    pub store: Arc<ConfigStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub readiness: Arc<Readiness>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    if let Ok(v) = http::HeaderValue::from_str(&resp.body().len().to_string()) {
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, v);
    }
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

fn problem(status: StatusCode, detail: &str, path: &str) -> Response<Vec<u8>> {
    let body = Problem::status(status)
        .with_detail(detail)
        .to_json(path, "-");
    respond(status, PROBLEM_CONTENT_TYPE, body.to_vec())
}

impl AdminApp {
    /// The `/config` document (also read by the status page).
    pub(crate) fn config(&self) -> serde_json::Value {
        let snap = self.store.current();
        let set = &snap.set;
        let routes: Vec<_> = set
            .routes
            .iter()
            .map(|r| {
                json!({
                    "name": &*r.name,
                    "upstream": set.upstreams.get(r.upstream).map(|u| &*u.name),
                    "policies": r.chain.policies().iter().map(|p| &*p.name).collect::<Vec<_>>(),
                    "buffered": r.chain.needs_body(),
                    "max_body_bytes": r.max_body_bytes,
                })
            })
            .collect();
        let upstreams: Vec<_> = set
            .upstreams
            .iter()
            .map(|u| {
                json!({
                    "name": &*u.name,
                    "endpoints": u.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "tls": u.transport.tls,
                    "http2": u.transport.http2,
                })
            })
            .collect();
        let last_reload = self
            .store
            .last_reload()
            .map(|r| json!({ "at": rfc3339(r.at), "ok": r.ok, "errors": r.errors }));
        json!({
            "version": {
                "hash": set.version.hash,
                "loaded_at": rfc3339(set.version.loaded_at),
                "file": set.version.file.display().to_string(),
            },
            "summary": set.summary(),
            "channels": set.channels.names().iter().map(|c| &**c).collect::<Vec<_>>(),
            "routes": routes,
            "upstreams": upstreams,
            "policies": set.policies.keys().collect::<Vec<_>>(),
            "last_reload": last_reload,
        })
    }
}

impl AdminApp {
    /// Each upstream's endpoints with their health, ejection and circuit state, and the
    /// upstream's slots and retry budget (also read by the status page).
    pub(crate) fn upstreams(&self) -> serde_json::Value {
        let snap = self.store.current();
        let now = now();
        let list: Vec<_> = snap
            .pools
            .iter()
            .map(|pool| {
                let r = &pool.upstream.resilience;
                let endpoints: Vec<_> = pool
                    .endpoints()
                    .iter()
                    .map(|ep| {
                        let breaker = ep.breaker_state(now);
                        json!({
                            "address": &*ep.label,
                            "healthy": ep.health.is_healthy(),
                            "ejected": ep.ejection.is_ejected(now),
                            "ejected_for_ms": ep.ejection.ejected_for(now).map(|d| d.as_millis() as u64),
                            "ejections": ep.ejection.times(),
                            "circuit": breaker.name(),
                            "circuit_retry_after_ms": match breaker {
                                BreakerState::Open { retry_after } => Some(retry_after.as_millis() as u64),
                                _ => None,
                            },
                            "in_flight": ep.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                            "attempts": ep.metrics.attempts.get(),
                        })
                    })
                    .collect();
                let budget = pool.budget().map(|b| {
                    let (used, left) = b.usage(now);
                    json!({ "retries_in_window": used, "retries_left": left })
                });
                let slots = pool
                    .slots_in_use()
                    .map(|(used, limit)| json!({ "in_use": used, "limit": limit, "waiting": pool.metrics.queued.get() }));
                json!({
                    "name": &*pool.upstream.name,
                    "in_flight": pool.metrics.in_flight.get(),
                    "max_in_flight": slots,
                    "health_check": r.health_check.is_some(),
                    "outlier_detection": r.outlier_detection.enabled,
                    "circuit_breaker": r.circuit_breaker.is_some(),
                    "retry_budget": budget,
                    "endpoints": endpoints,
                })
            })
            .collect();
        json!({ "upstreams": list })
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_owned();
        if delivery::admin::handles(&path) {
            let method = req.method.clone();
            let query = req.uri.query().map(str::to_owned);
            let snapshot = self.store.current();
            let (status, body) = delivery::admin::handle(
                &snapshot,
                &self.metrics.delivery,
                &method,
                &path,
                query.as_deref(),
            )
            .await;
            let content_type = if status.is_success() {
                "application/json"
            } else {
                PROBLEM_CONTENT_TYPE
            };
            let body = serde_json::to_vec_pretty(&body).unwrap_or_default();
            return respond(status, content_type, body);
        }
        if crate::status_page::handles(&path) {
            let method = req.method.clone();
            return crate::status_page::response(self, &method, &path).await;
        }
        if req.method != Method::GET && req.method != Method::HEAD {
            return problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "the admin endpoints are read-only",
                &path,
            );
        }
        match path.as_str() {
            "/healthz" => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                if self.readiness.get() {
                    respond(StatusCode::OK, "text/plain", b"ready\n".to_vec())
                } else {
                    problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: starting or shutting down",
                        &path,
                    )
                }
            }
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            ),
            "/upstreams" => {
                let body = serde_json::to_vec_pretty(&self.upstreams()).unwrap_or_default();
                respond(StatusCode::OK, "application/json", body)
            }
            "/config" => {
                let body = serde_json::to_vec_pretty(&self.config()).unwrap_or_default();
                respond(StatusCode::OK, "application/json", body)
            }
            _ => problem(
                StatusCode::NOT_FOUND,
                "admin endpoints: / (status page) /status.json /healthz /readyz /metrics /config /upstreams /queues /deliveries",
                &path,
            ),
        }
    }
}
