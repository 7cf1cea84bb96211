//! The gateway's `ProxyHttp` implementation: a thin adapter from Pingora's phases to the
//! gateway's own steps. A request arrives (`edge`), then either Pingora streams it to the
//! upstream, with the forwarding layer choosing each attempt's endpoint and deciding retries,
//! or the buffered path (`buffered`) handles it whole; every request ends in `completion`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{HeaderValue, StatusCode};
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, RetryType};
use policies::pipeline::{Flow, ResponseView, phase};
use policies::problem::Problem;
use policies::resilience::backoff::parse_retry_after;

use crate::access_log::AccessLog;
use crate::answer;
use crate::buffered;
use crate::completion;
use crate::context::{Outcome, RequestCtx};
use crate::delivery;
use crate::edge::{self, Arrival};
use crate::forward::{self, Next, Outbound, UpstreamError};
use crate::ids;
use crate::metrics::Metrics;
use crate::respond;
use crate::snapshot::ConfigStore;

/// The gateway proxy.
pub struct Gateway {
    /// Where the current snapshot comes from.
    pub store: Arc<ConfigStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Upstream connections of buffered exchanges (pooled per peer).
    connector: Connector,
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

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// A Pingora error carrying a forwarding-layer refusal (its typed form is in the context).
fn refusal(e: UpstreamError) -> Box<Error> {
    let mut err = Error::explain(ErrorType::HTTPStatus(e.status().as_u16()), e.describe());
    err.set_retry(false);
    err.into_up()
}

#[async_trait]
impl ProxyHttp for Gateway {
    // Boxed: Pingora's request future holds the context twice (in itself and in the future of
    // the phases it awaits), and `async_trait` moves that whole future into a box per request,
    // so a ~0.9 KiB context inline cost ~1.8 KiB of copying on every request.
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        self.metrics.inflight.inc();
        Box::new(RequestCtx::new(self.store.current()))
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<bool> {
        // The buffered exchange's future is ~6 KiB and the delivery view's ~3 KiB: boxed here,
        // only the requests taking them pay for them, where inline every request's future (which
        // `async_trait` moves into a box of that size) would.
        match edge::arrive(&self.metrics, session, ctx).await? {
            Arrival::Answered => Ok(true),
            Arrival::DeliveryStatus => {
                Box::pin(delivery::view::serve(&self.metrics.delivery, session, ctx)).await
            }
            Arrival::Buffer => {
                Box::pin(buffered::handle(
                    &self.metrics,
                    &self.connector,
                    session,
                    ctx,
                ))
                .await
            }
            Arrival::Stream => {
                let snapshot = ctx.snapshot.clone();
                let Some(route) = ctx.route.as_ref() else {
                    return Error::e_explain(ErrorType::InternalError, "no route");
                };
                let (Some(upstream), Some(pool)) = (
                    snapshot.set.upstreams.get(route.upstream),
                    snapshot.pools.get(route.upstream),
                ) else {
                    return Error::e_explain(ErrorType::InternalError, "no pool for the route");
                };
                let method = &session.req_header().method;
                let repeatable = route.chain.repeat_safe()
                    || method == http::Method::GET
                    || method == http::Method::HEAD;
                ctx.attempts
                    .begin(pool, ctx.started + upstream.total_timeout, repeatable);
                Ok(false)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        _ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        // Pingora issue 935: a client ending its body with an empty DATA frame makes Pingora
        // write the chunk terminator twice to an HTTP/1.1 upstream; an empty last chunk is none
        if end_of_stream && body.as_ref().is_some_and(Bytes::is_empty) {
            *body = None;
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Box<HttpPeer>> {
        if let Err(e) = ctx.attempts.next().await {
            ctx.outcome = Outcome::Upstream(e);
            return Err(refusal(e));
        }
        match ctx.attempts.peer() {
            Some(peer) => Ok(peer),
            None => Error::e_explain(ErrorType::InternalError, "no peer chosen"),
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        ctx.attempts.sending();
        let (Some(route), Some(pool)) = (ctx.route.as_ref(), ctx.attempts.pool()) else {
            return Error::e_explain(ErrorType::InternalError, "no route");
        };
        let outbound = Outbound {
            route,
            upstream: &pool.upstream,
            params: &ctx.params,
            state: &ctx.state,
            trace: ctx.trace.as_ref(),
            client_ip: client_ip(session),
            tls: is_tls(session),
            idempotency_key: ctx.attempts.idempotency_key.as_ref(),
        };
        forward::request::rewrite(upstream_request, &outbound)?;
        // a traced request names each attempt's own span as the upstream's parent
        if let Some(tp) = ctx.attempts.attempt_traceparent() {
            upstream_request.insert_header(forward::request::TRACEPARENT_NAME, tp)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        let retry_after = upstream_response
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| parse_retry_after(v.as_bytes(), std::time::SystemTime::now()));
        match ctx.attempts.answered(status, retry_after) {
            Next::Stop => Ok(()),
            Next::Retry => {
                // nothing of this answer has reached the client yet: Pingora asks for the next
                // peer when the error is marked for retry
                ctx.retry_on_answer = true;
                let mut e = Error::explain(ErrorType::HTTPStatus(status), "retrying an answer");
                e.set_retry(true);
                Err(e.into_up())
            }
        }
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        ctx.outcome = Outcome::Forwarded;
        if let Some(route) = ctx.route.clone().filter(|r| r.chain.runs(phase::RESPONSE)) {
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
        // the name as a static string: Pingora keeps it as written (lowercase, as it would
        // copy a `HeaderName` it has no title case for) without an allocation per request
        upstream_response.insert_header(ids::REQUEST_ID_NAME, id)?;
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Option<Duration>> {
        if ctx.attempts.deadline.is_some_and(|d| Instant::now() > d) {
            return Error::e_explain(ErrorType::ReadTimedout, "total upstream timeout exceeded");
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Box<RequestCtx>,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let failure = UpstreamError::from_pingora(&e);
        let retry = ctx.attempts.failed(failure) == Next::Retry;
        ctx.outcome = Outcome::Upstream(failure);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        _session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut Box<RequestCtx>,
        client_reused: bool,
    ) -> Box<Error> {
        if std::mem::take(&mut ctx.retry_on_answer) {
            e.set_retry(true);
            return e;
        }
        if e.esource() != &ErrorSource::Upstream {
            // the client went away or sent something bad: nothing to say about the upstream
            e.set_retry(false);
            return e;
        }
        let failure = UpstreamError::from_pingora(&e);
        // Pingora marks failures on a pooled connection that may simply have gone stale
        let next = if client_reused && matches!(e.retry, RetryType::ReusedOnly) {
            ctx.attempts.failed_on_reused(failure)
        } else {
            ctx.attempts.failed(failure)
        };
        ctx.outcome = Outcome::Upstream(failure);
        e.set_retry(next == Next::Retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<RequestCtx>,
    ) -> FailToProxy {
        ctx.attempts.finish();
        let failure = match (&ctx.outcome, e.esource()) {
            (Outcome::Upstream(f), _) => Some(*f),
            (_, ErrorSource::Upstream) if !matches!(e.etype(), ErrorType::HTTPStatus(_)) => {
                Some(UpstreamError::from_pingora(e))
            }
            _ => None,
        };
        let code = match (failure, e.etype()) {
            (Some(f), _) => f.status().as_u16(),
            (None, ErrorType::HTTPStatus(code)) => *code,
            (None, _) => match e.esource() {
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    // the body stopped arriving for longer than limits.body_idle_timeout
                    ErrorType::ReadTimedout => 408,
                    _ => 400,
                },
                _ => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            match failure {
                Some(f) => {
                    let _ = answer::upstream_failure(session, ctx, f, true).await;
                }
                None if code == 408 => {
                    let _ = answer::edge_reject(
                        &self.metrics,
                        session,
                        ctx,
                        crate::framing::body_timeout(),
                    )
                    .await;
                }
                None => {
                    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
                    let _ = respond::problem(
                        session,
                        &Problem::status(status),
                        ctx.ids(),
                        &ctx.state.response_headers,
                        Vec::new(),
                        true,
                    )
                    .await;
                }
            }
        } else if let Some(f) = failure {
            ctx.outcome = Outcome::Upstream(f);
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Box<RequestCtx>) {
        completion::complete(&self.metrics, &self.access_log, session, e, ctx).await;
    }

    fn suppress_error_log(
        &self,
        _session: &Session,
        _ctx: &Box<RequestCtx>,
        _error: &Error,
    ) -> bool {
        // the access log line already carries the outcome of every request
        true
    }
}
