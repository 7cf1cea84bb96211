//! The admin listener: `/healthz` (the process is up), `/readyz` (a policy set is compiled, its
//! upstream pools exist, and the server is not shutting down), `/metrics` (Prometheus text) and
//! `/config` (which policy set serves: content hash, load time, routes, last reload) and
//! `/upstreams` (each endpoint's health, ejection, circuit and in-flight requests),
//! `/deprecations` (each deprecated route's dates, calls and top clients); `/` and
//! `/status.json` are the status page (`crate::status_page`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use policies::problem::{PROBLEM_CONTENT_TYPE, Problem};

use crate::delivery;
use crate::metrics::Metrics;
use crate::snapshot::ConfigStore;

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
            return crate::status_page::response(&self.store, &self.metrics, &method, &path).await;
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
                let body = serde_json::to_vec_pretty(&crate::admin_views::upstreams(&self.store))
                    .unwrap_or_default();
                respond(StatusCode::OK, "application/json", body)
            }
            "/deprecations" => {
                let snapshot = self.store.current();
                let body =
                    serde_json::to_vec_pretty(&self.metrics.deprecations.view(&snapshot.set))
                        .unwrap_or_default();
                respond(StatusCode::OK, "application/json", body)
            }
            "/config" => {
                let body = serde_json::to_vec_pretty(&crate::admin_views::config(&self.store))
                    .unwrap_or_default();
                respond(StatusCode::OK, "application/json", body)
            }
            _ => problem(
                StatusCode::NOT_FOUND,
                "admin endpoints: / (status page) /status.json /healthz /readyz /metrics /config /upstreams /deprecations /queues /deliveries",
                &path,
            ),
        }
    }
}
