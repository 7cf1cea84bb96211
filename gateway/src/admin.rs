//! The admin listener: `/healthz` (the process is up), `/readyz` (a policy set is compiled, its
//! upstream pools exist, and the server is not shutting down), `/metrics` (Prometheus text) and
//! `/config` (which policy set serves: content hash, load time, routes, last reload) and
//! `/upstreams` (each endpoint's health, ejection, circuit and in-flight requests),
//! `/deprecations` (each deprecated route's dates, calls and top clients); `/` and
//! `/status.json` are the status page (`crate::status_page`); `/openapi.json` is the OpenAPI
//! document of the serving policy file (`governance::openapi`).

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
    /// `/openapi.json`, built once per config version.
    pub openapi: OpenApiCache,
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
            "/openapi.json" => self.openapi.response(&self.store, &path).await,
            "/config" => {
                let body = serde_json::to_vec_pretty(&crate::admin_views::config(&self.store))
                    .unwrap_or_default();
                respond(StatusCode::OK, "application/json", body)
            }
            _ => problem(
                StatusCode::NOT_FOUND,
                "admin endpoints: / (status page) /status.json /healthz /readyz /metrics /config /upstreams /deprecations /openapi.json /queues /deliveries",
                &path,
            ),
        }
    }
}

/// The OpenAPI document of the serving policy file (`/openapi.json`), built on first request
/// after each load and kept while the config version (its content hash) stays the same.
#[derive(Debug, Default)]
pub struct OpenApiCache(std::sync::Mutex<Option<(String, Arc<Vec<u8>>)>>);

impl OpenApiCache {
    async fn response(&self, store: &ConfigStore, path: &str) -> Response<Vec<u8>> {
        let version = store.current().set.version.clone();
        let cached = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(hash, _)| *hash == version.hash)
            .map(|(_, body)| body.clone());
        if let Some(body) = cached {
            return respond(StatusCode::OK, "application/json", body.to_vec());
        }
        // The surface reads the parsed file and its schema files: the serving set's file is
        // compiled again offline (as `gateway openapi` does), off the async threads, and its
        // content hash must be the serving one's.
        let file = version.file.clone();
        let built = tokio::task::spawn_blocking(move || {
            let surface = governance::surface::load(&file).map_err(|e| e.to_string())?;
            let doc = governance::openapi::document(&surface);
            let body = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
            Ok::<_, String>((surface.set.version.hash.clone(), body))
        })
        .await;
        match built {
            Ok(Ok((hash, body))) if hash == version.hash => {
                let body = Arc::new(body);
                *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((hash, body.clone()));
                respond(StatusCode::OK, "application/json", body.to_vec())
            }
            Ok(Ok(_)) => {
                let mut resp = problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the policy file changed on disk since it was loaded: reload it (SIGHUP), or run `gateway openapi -c FILE`",
                    path,
                );
                resp.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("5"),
                );
                resp
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "admin: the OpenAPI document could not be built");
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("the OpenAPI document could not be built: {e}"),
                    path,
                )
            }
            Err(e) => problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the OpenAPI document could not be built: {e}"),
                path,
            ),
        }
    }
}
