//! The gateway's `ProxyHttp` implementation: route matching and the header phase in
//! `request_filter`, then either Pingora's streaming proxy (routes without body policies) or the
//! buffered exchange (routes with body policies, see `exchange`). Both paths share the upstream
//! request rewrite, the error mapping, the access log and the metrics, which live in `logging`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use policies::model::{Resolved, Route, Upstream};
use policies::pipeline::{Completion, ExchangeState, Flow, RequestView, ResponseView};
use policies::problem::{Problem, Reply};
use policies::route::PathParams;

use crate::access_log::{AccessLine, AccessLog, Hex, Ip, Timestamp};
use crate::framing::{self, EdgeRejection};
use crate::ids::{self, TraceContext};
use crate::metrics::Metrics;
use crate::respond::{self, REQUEST_ID};
use crate::snapshot::{ConfigStore, Snapshot};

/// The gateway proxy.
pub struct Gateway {
    /// Where the current snapshot comes from.
    pub store: Arc<ConfigStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Upstream connections of buffered exchanges (pooled per peer).
    pub(crate) connector: Connector,
    /// Where access-log lines go.
    pub access_log: AccessLog,
}

impl Gateway {
    /// A gateway serving from `store`.
    pub fn new(store: Arc<ConfigStore>, metrics: Arc<Metrics>) -> Self {
        Gateway {
            access_log: AccessLog::new(metrics.access_log_dropped.clone()),
            store,
            metrics,
            connector: Connector::new(None),
        }
    }
}

/// How a request was handled, for logs.
#[derive(Debug, Clone, Default)]
pub enum Outcome {
    /// Still being handled (or the client went away).
    #[default]
    Pending,
    /// Forwarded upstream and answered from it.
    Forwarded,
    /// Refused before routing or by the route table.
    Edge(&'static str),
    /// Answered by a policy.
    Policy {
        /// The policy.
        policy: Option<Arc<str>>,
        /// Its reason.
        reason: &'static str,
    },
    /// The upstream failed.
    Upstream(&'static str),
}

/// Per-request context.
pub struct RequestCtx {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) started: Instant,
    pub(crate) trace: Option<TraceContext>,
    pub(crate) route: Option<Arc<Route>>,
    pub(crate) params: PathParams,
    pub(crate) state: ExchangeState,
    pub(crate) pool_start: Option<usize>,
    pub(crate) attempts: usize,
    pub(crate) peer: Option<Arc<str>>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) outcome: Outcome,
    pub(crate) upstream_status: Option<u16>,
    pub(crate) forwarded: bool,
    pub(crate) buffered_response: Option<(HeaderMap, Bytes)>,
    /// The status of `buffered_response` (the client may have gone before it was written).
    pub(crate) buffered_status: Option<u16>,
    pub(crate) bytes_in: usize,
}

/// Hop-by-hop request headers a proxy must not forward (RFC 9110 7.6.1).
static HOP_BY_HOP: [HeaderName; 7] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
];
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

impl Gateway {
    pub(crate) fn upstream_of<'a>(&self, ctx: &'a RequestCtx) -> Option<&'a Upstream> {
        let route = ctx.route.as_ref()?;
        ctx.snapshot.set.upstreams.get(route.upstream).map(|u| &**u)
    }

    /// Applies the route's upstream rewrite to a request head (both paths use it).
    pub(crate) fn rewrite_upstream_request(
        &self,
        req: &mut RequestHeader,
        ctx: &RequestCtx,
        client_ip: Option<String>,
        tls: bool,
    ) -> Result<()> {
        let Some(route) = ctx.route.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no route");
        };
        if let Some(template) = &route.upstream_path {
            let path = template.render(&ctx.params, req.uri.query());
            let uri = http::Uri::builder()
                .path_and_query(path)
                .build()
                .or_err(ErrorType::InternalError, "rendering upstream path")?;
            req.set_uri(uri);
        }
        // headers named by Connection are hop-by-hop too
        let named: Vec<String> = req
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        // most requests carry none of them: look before removing (a removal also edits
        // Pingora's header-case map)
        for h in &HOP_BY_HOP {
            if req.headers.contains_key(h) {
                req.remove_header(h);
            }
        }
        for h in &named {
            req.remove_header(h.as_str());
        }
        let id = HeaderValue::from_str(&ctx.state.request_id)
            .or_err(ErrorType::InternalError, "request id")?;
        req.insert_header(REQUEST_ID, id)?;
        if let Some(trace) = &ctx.trace {
            req.insert_header(&TRACEPARENT, trace.upstream_traceparent())?;
            match &trace.tracestate {
                Some(ts) => req.insert_header(&TRACESTATE, ts.clone())?,
                None => {
                    if req.headers.contains_key(&TRACESTATE) {
                        req.remove_header(&TRACESTATE);
                    }
                }
            }
        }
        if let Some(ip) = client_ip {
            let xff = match req
                .headers
                .get(&X_FORWARDED_FOR)
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip,
            };
            req.insert_header(&X_FORWARDED_FOR, xff)?;
        }
        req.insert_header(
            &X_FORWARDED_PROTO,
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        )?;
        for name in &ctx.state.upstream_removed_headers {
            req.remove_header(name);
        }
        if let Some(upstream) = self.upstream_of(ctx) {
            for (name, value) in &upstream.request_headers {
                req.insert_header(name.clone(), value.clone())?;
            }
        }
        for (name, value) in &ctx.state.upstream_headers {
            req.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    }

    /// Sends an edge rejection.
    pub(crate) async fn edge_reject(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        r: EdgeRejection,
    ) -> Result<bool> {
        self.metrics
            .edge_rejections
            .with_label_values(&[r.reason])
            .inc();
        ctx.outcome = Outcome::Edge(r.reason);
        let problem = Problem::new(r.status, r.slug, r.title).with_detail(r.detail);
        respond::problem(
            session,
            &problem,
            &ctx.state.request_id,
            &ctx.state.response_headers,
            Vec::new(),
            r.close,
        )
        .await?;
        Ok(true)
    }

    /// Sends a policy's reply.
    pub(crate) async fn send_reply(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        reply: Reply,
        close: bool,
    ) -> Result<bool> {
        if reply.is_rejection() {
            let policy = reply.policy.as_deref().unwrap_or("-");
            self.metrics
                .policy_rejections
                .with_label_values(&[policy, reply.reason])
                .inc();
        }
        ctx.outcome = Outcome::Policy {
            policy: reply.policy.clone(),
            reason: reply.reason,
        };
        respond::reply(
            session,
            &reply,
            &ctx.state.request_id,
            &ctx.state.response_headers,
            close,
        )
        .await?;
        Ok(true)
    }

    pub(crate) async fn upstream_failure(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        kind: &'static str,
        detail: String,
        count: bool,
    ) -> Result<bool> {
        let upstream = self.upstream_of(ctx).map_or("-", |u| &*u.name).to_owned();
        if count {
            self.metrics
                .upstream_errors
                .with_label_values(&[&upstream, kind])
                .inc();
        }
        ctx.outcome = Outcome::Upstream(kind);
        let status = upstream_error_status(kind);
        let problem = upstream_problem(status, &upstream, detail);
        if ctx.forwarded {
            // the request may have reached the upstream: the answer is what an idempotency
            // record of this exchange holds
            let body = problem.to_json(session.req_header().uri.path(), &ctx.state.request_id);
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(policies::problem::PROBLEM_CONTENT_TYPE),
            );
            ctx.buffered_response = Some((headers, body));
            ctx.buffered_status = Some(status.as_u16());
        }
        respond::problem(
            session,
            &problem,
            &ctx.state.request_id,
            &ctx.state.response_headers,
            Vec::new(),
            false,
        )
        .await?;
        Ok(true)
    }
}

/// The metric kind of an upstream error.
pub(crate) fn upstream_error_kind(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout => "connect_timeout",
        ErrorType::ConnectRefused => "connect_refused",
        ErrorType::ConnectNoRoute => "no_route",
        ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::TLSWantX509Lookup => {
            "tls"
        }
        ErrorType::ConnectError | ErrorType::SocketError | ErrorType::BindError => "connect_error",
        ErrorType::ReadTimedout => "read_timeout",
        ErrorType::WriteTimedout => "write_timeout",
        ErrorType::ConnectionClosed => "connection_closed",
        ErrorType::InvalidHTTPHeader | ErrorType::InvalidH2 | ErrorType::H2Error => "protocol",
        _ => "other",
    }
}

fn is_connect_error(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::TLSHandshakeTimedout
    )
}

pub(crate) fn upstream_error_status(kind: &str) -> StatusCode {
    match kind {
        "connect_timeout" | "read_timeout" | "write_timeout" | "total_timeout" => {
            StatusCode::GATEWAY_TIMEOUT
        }
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn upstream_problem(status: StatusCode, upstream: &str, detail: String) -> Problem {
    let (slug, title) = if status == StatusCode::GATEWAY_TIMEOUT {
        ("upstream-timeout", "Upstream timed out")
    } else {
        ("upstream-unavailable", "Upstream unavailable")
    };
    Problem::new(status, slug, title)
        .with_detail(detail)
        .with_extension("upstream", upstream)
}

fn client_addr(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

fn client_ip(session: &Session) -> Option<String> {
    client_addr(session).map(|ip| ip.to_string())
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The request's `Content-Length`, if it has one.
fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        self.metrics.inflight.inc();
        RequestCtx {
            snapshot: self.store.current(),
            started: Instant::now(),
            trace: None,
            route: None,
            params: PathParams::default(),
            state: ExchangeState::default(),
            pool_start: None,
            attempts: 0,
            peer: None,
            deadline: None,
            outcome: Outcome::Pending,
            upstream_status: None,
            forwarded: false,
            buffered_response: None,
            buffered_status: None,
            bytes_in: 0,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snapshot = ctx.snapshot.clone();
        let set = &snapshot.set;
        {
            let req = session.req_header();
            ctx.state.request_id = match req.headers.get(&REQUEST_ID) {
                Some(v) if ids::is_valid_request_id(v.as_bytes()) => {
                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                }
                _ => ids::new_request_id(),
            };
            ctx.trace = Some(TraceContext::from_headers(
                req.headers.get("traceparent").map(HeaderValue::as_bytes),
                req.headers.get("tracestate"),
            ));
        }
        if let Err(rejection) = framing::check(session, set.limits.max_header_bytes) {
            return self.edge_reject(session, ctx, rejection).await;
        }

        let req = session.req_header();
        let host = req
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host());
        let resolved = set.resolve(&req.method, host, req.uri.path());
        let (route, params, channel) = match resolved {
            Resolved::Route {
                route,
                params,
                channel,
            } => (route.clone(), params, channel),
            Resolved::NotFound => {
                return self
                    .edge_reject(
                        session,
                        ctx,
                        not_found("no route matches this method and path", "no_route"),
                    )
                    .await;
            }
            Resolved::UnknownChannel => {
                return self
                    .edge_reject(
                        session,
                        ctx,
                        not_found("no channel of this name is configured", "unknown_channel"),
                    )
                    .await;
            }
            Resolved::BadPath => {
                let r = EdgeRejection {
                    status: StatusCode::BAD_REQUEST,
                    slug: "bad-path",
                    title: "Path not allowed",
                    detail: "paths with '.' or '..' segments are refused".into(),
                    reason: "dot_segment",
                    close: false,
                };
                return self.edge_reject(session, ctx, r).await;
            }
            Resolved::MethodNotAllowed(allow) => {
                let allow = allow.clone();
                self.metrics
                    .edge_rejections
                    .with_label_values(&["method_not_allowed"])
                    .inc();
                ctx.outcome = Outcome::Edge("method_not_allowed");
                let p = Problem::status(StatusCode::METHOD_NOT_ALLOWED).with_detail(format!(
                    "this path takes {}",
                    allow.to_str().unwrap_or("other methods")
                ));
                respond::problem(
                    session,
                    &p,
                    &ctx.state.request_id,
                    &ctx.state.response_headers,
                    vec![(http::header::ALLOW, allow)],
                    false,
                )
                .await?;
                return Ok(true);
            }
        };
        ctx.state.channel = channel;
        ctx.state.route = Some(route.name.clone());
        ctx.params = params;

        let declared = content_length(req);
        let chunked = req.headers.contains_key(TRANSFER_ENCODING);
        if let Some(len) = declared
            && len > route.max_body_bytes
        {
            let r = too_large(route.max_body_bytes);
            ctx.route = Some(route);
            return self.edge_reject(session, ctx, r).await;
        }
        ctx.route = Some(route.clone());
        if let Some(upstream) = set.upstreams.get(route.upstream) {
            ctx.deadline = Some(ctx.started + upstream.total_timeout);
        }

        let view = RequestView {
            method: &req.method,
            path: req.uri.path(),
            query: req.uri.query(),
            headers: &req.headers,
            params: &ctx.params,
        };
        if let Flow::Break(reply) = route.chain.on_request(&view, &mut ctx.state).await {
            // an unread body would have to be drained; close instead when one is coming
            let close = declared.is_some_and(|l| l > 0) || chunked;
            return self.send_reply(session, ctx, reply, close).await;
        }

        // A chunked body has no declared size: buffer it so an oversized one is refused before
        // anything reaches the upstream.
        if route.chain.needs_body() || chunked {
            return crate::exchange::buffered(self, session, ctx).await;
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "no route chosen");
        };
        let Some(pool) = ctx.snapshot.pools.get(route.upstream) else {
            return Error::e_explain(ErrorType::InternalError, "no pool for the route's upstream");
        };
        let attempt = ctx.attempts;
        ctx.attempts += 1;
        let Some((peer, label)) = pool.pick_labelled(&mut ctx.pool_start, attempt) else {
            return Error::e_explain(ErrorType::ConnectNoRoute, "upstream has no endpoints");
        };
        ctx.peer = Some(label.clone());
        let mut peer = Box::new(peer.clone());
        if let Some(deadline) = ctx.deadline {
            // the whole exchange must fit the total budget: no single wait may outlast it
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let o = &mut peer.options;
            o.read_timeout = o.read_timeout.map(|t| t.min(left));
            o.write_timeout = o.write_timeout.map(|t| t.min(left));
            o.total_connection_timeout = o.total_connection_timeout.map(|t| t.min(left));
        }
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.forwarded = true;
        self.rewrite_upstream_request(upstream_request, ctx, client_ip(session), is_tls(session))
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        ctx.outcome = Outcome::Forwarded;
        if let Some(route) = ctx.route.clone().filter(|r| !r.chain.is_empty()) {
            // Pingora's response head keeps header-name case beside the map, so policies work on
            // a copy whose changes are then applied through its API.
            let mut headers = upstream_response.headers.clone();
            let mut view = ResponseView {
                status: upstream_response.status,
                headers: &mut headers,
            };
            if let Flow::Break(reply) = route.chain.on_response(&mut view, &mut ctx.state).await {
                // a streaming response cannot be replaced once its head is decided; refuse it
                return Error::e_explain(
                    ErrorType::HTTPStatus(reply.status.as_u16()),
                    "response refused by a policy",
                );
            }
            let removed: Vec<_> = upstream_response
                .headers
                .keys()
                .filter(|k| !headers.contains_key(*k))
                .cloned()
                .collect();
            for name in removed {
                upstream_response.remove_header(&name);
            }
            for name in headers.keys() {
                let values: Vec<_> = headers.get_all(name).iter().cloned().collect();
                if upstream_response
                    .headers
                    .get_all(name)
                    .iter()
                    .ne(values.iter())
                {
                    upstream_response.remove_header(name);
                    for v in values {
                        upstream_response.append_header(name.clone(), v)?;
                    }
                }
            }
        }
        for (name, value) in &ctx.state.response_headers {
            upstream_response.insert_header(name.clone(), value.clone())?;
        }
        let id = HeaderValue::from_str(&ctx.state.request_id)
            .or_err(ErrorType::InternalError, "request id")?;
        upstream_response.insert_header(REQUEST_ID, id)?;
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if ctx.deadline.is_some_and(|d| Instant::now() > d) {
            return Error::e_explain(ErrorType::ReadTimedout, "total upstream timeout exceeded");
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(upstream) = self.upstream_of(ctx) {
            self.metrics
                .upstream_errors
                .with_label_values(&[&upstream.name, upstream_error_kind(&e)])
                .inc();
            let endpoints = ctx
                .snapshot
                .pools
                .get(ctx.route.as_ref().map_or(0, |r| r.upstream))
                .map_or(0, |p| p.len());
            let in_budget = ctx.deadline.is_none_or(|d| Instant::now() < d);
            if is_connect_error(&e) && ctx.attempts < endpoints && in_budget {
                e.set_retry(true);
            }
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => {
                    let kind = upstream_error_kind(e);
                    if !matches!(ctx.outcome, Outcome::Upstream(_)) && !is_connect_error(e) {
                        // connect errors were counted per attempt in fail_to_connect
                        let upstream = self.upstream_of(ctx).map_or("-", |u| &*u.name).to_owned();
                        self.metrics
                            .upstream_errors
                            .with_label_values(&[&upstream, kind])
                            .inc();
                    }
                    ctx.outcome = Outcome::Upstream(kind);
                    upstream_error_status(kind).as_u16()
                }
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            let problem = if status.is_server_error() && e.esource() == &ErrorSource::Upstream {
                let upstream = self.upstream_of(ctx).map_or("-", |u| &*u.name).to_owned();
                upstream_problem(status, &upstream, describe_upstream_error(e))
            } else {
                Problem::status(status)
            };
            let _ = respond::problem(
                session,
                &problem,
                &ctx.state.request_id,
                &ctx.state.response_headers,
                Vec::new(),
                true,
            )
            .await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.metrics.inflight.dec();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route_index = ctx.route.as_ref().map(|r| r.index);
        let channel_index = ctx.state.channel.as_ref().map(|c| c.index);
        let elapsed = ctx.started.elapsed();
        if let Some(route) = ctx.route.clone() {
            let (headers, body) = match &ctx.buffered_response {
                Some((h, b)) => (Some(h), Some(b)),
                None => (None, None),
            };
            let done = Completion {
                status: if status == 0 {
                    ctx.buffered_status.unwrap_or(0)
                } else {
                    status
                },
                forwarded: ctx.forwarded,
                headers,
                body,
            };
            route.chain.on_complete(&done, &mut ctx.state).await;
        }
        ctx.snapshot.route_metrics.observe(
            &self.metrics,
            route_index,
            channel_index,
            status,
            elapsed.as_secs_f64(),
        );

        let req = session.req_header();
        let (outcome, policy, reason) = match &ctx.outcome {
            Outcome::Pending => ("incomplete", None, ""),
            Outcome::Forwarded => ("forwarded", None, ""),
            Outcome::Edge(r) => ("refused", None, *r),
            Outcome::Policy { policy, reason } => ("policy", policy.as_deref(), *reason),
            Outcome::Upstream(k) => ("upstream_error", None, *k),
        };
        if AccessLog::enabled() {
            self.access_log.write(&AccessLine {
                timestamp: Timestamp(SystemTime::now()),
                level: "INFO",
                target: "access",
                message: "request",
                request_id: &ctx.state.request_id,
                trace_id: Hex(ctx.trace.as_ref().map_or(&[][..], |t| &t.trace_id[..])),
                client: Ip(client_addr(session)),
                method: req.method.as_str(),
                path: req.uri.path(),
                route: ctx.route.as_ref().map_or("-", |r| &*r.name),
                channel: ctx.state.channel.as_ref().map_or("-", |c| &*c.name),
                status,
                upstream: ctx.peer.as_deref().unwrap_or("-"),
                upstream_status: ctx.upstream_status.unwrap_or(0),
                latency_ms: elapsed.as_secs_f64() * 1000.0,
                bytes_in: ctx.bytes_in.max(session.body_bytes_read()),
                bytes_out: session.body_bytes_sent(),
                outcome,
                policy: policy.unwrap_or("-"),
                reason,
                error: e.map(|e| e.etype().as_str()).unwrap_or(""),
            });
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // the access log line already carries the outcome of every request
        true
    }
}

fn describe_upstream_error(e: &Error) -> String {
    match upstream_error_kind(e) {
        "connect_timeout" => "the upstream did not accept a connection in time".into(),
        "connect_refused" => "the upstream refused the connection".into(),
        "read_timeout" => "the upstream did not answer in time".into(),
        "write_timeout" => "the upstream did not take the request in time".into(),
        "connection_closed" => {
            "the upstream closed the connection without a complete answer".into()
        }
        "tls" => "the TLS handshake with the upstream failed".into(),
        "protocol" => "the upstream answered with invalid HTTP".into(),
        _ => "the upstream exchange failed".into(),
    }
}

fn not_found(detail: &str, reason: &'static str) -> EdgeRejection {
    EdgeRejection {
        status: StatusCode::NOT_FOUND,
        slug: "",
        title: "Not Found",
        detail: detail.to_owned(),
        reason,
        close: false,
    }
}

pub(crate) fn too_large(limit: u64) -> EdgeRejection {
    EdgeRejection {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        slug: "body-too-large",
        title: "Request body too large",
        detail: format!("this route accepts bodies of at most {limit} bytes"),
        reason: "body_too_large",
        close: true,
    }
}
