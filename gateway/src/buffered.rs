//! The buffered path, for routes with body policies (and for bodies of unknown size): the whole
//! request body is read and given to the policies BEFORE anything is sent upstream, the
//! forwarding layer's exchange sends it (attempt after attempt, as its rules decide), the
//! response policies run on the whole answer, and it is written to the client.
//!
//! Why not Pingora's streaming proxy: by the time it calls `request_body_filter`, the request
//! head is already on its way upstream, and its retry buffer (which could replay a body read in
//! `request_filter`) holds only 64 KiB. This path has neither limit: a rejected body sends
//! nothing upstream, not even headers, and bodies up to the route's limit arrive intact.

use std::time::Instant;

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, EXPECT};
use http::{HeaderMap, HeaderValue};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use policies::pipeline::{Flow, RequestView, ResponseView};
use policies::queue::DeliveryMode;

use crate::answer;
use crate::completion;
use crate::context::{Outcome, RequestCtx};
use crate::delivery::{accept, fanout};
use crate::edge::too_large;
use crate::forward::{self, Outbound};
use crate::ids::{self, REQUEST_ID};
use crate::metrics::Metrics;
use crate::respond;

/// Response headers that describe the hop, not the message; the gateway sets its own.
const RESPONSE_HOP_HEADERS: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "trailer",
    "upgrade",
    "content-length",
];

fn expects_continue(req: &RequestHeader) -> bool {
    req.headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Handles the request entirely; returns `Ok(true)` (the response was written).
///
/// The refusals, the upstream failure, the fan-out and the store-and-forward acceptance are
/// awaited boxed: inline, the largest of them (~6 KiB) set the size of this future, which the
/// caller boxes for every buffered request, so a forwarded order copied ~9 KiB where ~6 do.
pub async fn handle(
    metrics: &Metrics,
    connector: &Connector,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let Some(route) = ctx.route.clone() else {
        return Error::e_explain(ErrorType::InternalError, "buffered path without a route");
    };
    let snapshot = ctx.snapshot.clone();
    let (Some(upstream), Some(pool)) = (
        snapshot.set.upstreams.get(route.upstream),
        snapshot.pools.get(route.upstream),
    ) else {
        return Error::e_explain(ErrorType::InternalError, "the route's upstream has no pool");
    };
    let limit = route.max_body_bytes;

    // The header phase passed, so the client may now send its body.
    if expects_continue(session.req_header()) {
        session.write_continue_response().await?;
    }
    let declared = session
        .req_header()
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut buf = BytesMut::with_capacity(declared.min(limit) as usize);
    loop {
        let chunk = match session.read_request_body().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            // the body stopped arriving for longer than limits.body_idle_timeout
            Err(e) if matches!(e.etype(), ErrorType::ReadTimedout) => {
                return answer::edge_reject(metrics, session, ctx, crate::framing::body_timeout())
                    .await;
            }
            Err(e) => return Err(e),
        };
        if (buf.len() + chunk.len()) as u64 > limit {
            return answer::edge_reject(metrics, session, ctx, too_large(limit)).await;
        }
        buf.extend_from_slice(&chunk);
    }
    ctx.bytes_in = buf.len();
    let mut body = buf.freeze();
    // a stored document keeps what the caller sent too (a cheap reference to the same bytes)
    let original = route.delivery.as_ref().map(|_| body.clone());

    {
        let req = session.req_header();
        let view = RequestView {
            method: &req.method,
            path: req.uri.path(),
            query: req.uri.query(),
            headers: &req.headers,
            params: &ctx.params,
        };
        if let Flow::Break(reply) = route
            .chain
            .on_request_body(&view, &mut ctx.state, &mut body)
            .await
        {
            return Box::pin(answer::reply(metrics, session, ctx, reply, false)).await;
        }
    }

    // the total budget covers the upstream exchange, not the time body policies took
    let method = &session.req_header().method;
    // a stored document is delivered with one upstream key too, so its sync attempt and every
    // queued one are the same document to the upstream
    let by_policy = route.chain.repeat_safe() || route.delivery.is_some();
    let repeatable = by_policy || method == http::Method::GET || method == http::Method::HEAD;
    ctx.attempts
        .begin(pool, Instant::now() + upstream.total_timeout, repeatable);
    // one key per accepted document, made before its first attempt and sent on every one
    if by_policy {
        ctx.attempts.idempotency_key = Some(ids::new_idempotency_key());
    }
    let mut upstream_req = session.req_header().clone();
    {
        let outbound = Outbound {
            route: &route,
            upstream,
            params: &ctx.params,
            state: &ctx.state,
            trace: ctx.trace.as_ref(),
            client_ip: client_ip(session),
            tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
            idempotency_key: ctx.attempts.idempotency_key.as_ref(),
        };
        forward::request::rewrite(&mut upstream_req, &outbound)?;
    }
    let stored = route
        .delivery
        .as_ref()
        .and_then(|d| Some((d, snapshot.queues.get(d.queue)?)));
    if let (Some(fanout), Some((delivery, rt))) = (&route.fanout, stored) {
        ctx.attempts.finish();
        let event = fanout::Event {
            route: &route,
            fanout,
            upstream,
            delivery,
            rt,
            head: &upstream_req,
            body: &body,
        };
        return Box::pin(fanout::accept(metrics, session, ctx, event)).await;
    }
    let store = |ctx: &RequestCtx, head: &RequestHeader| {
        let (d, rt) = stored?;
        let out = accept::Outgoing {
            head,
            body: &body,
            original: original.as_ref(),
            trace: ctx.trace.as_ref(),
        };
        let record = accept::record(
            ctx,
            &route,
            upstream,
            d,
            &rt.queue.name,
            &out,
            rt.clock_ms(),
        );
        Some((rt, record, d.readable))
    };
    if let Some((d, _)) = stored
        && d.mode == DeliveryMode::Queued
        && let Some((rt, record, readable)) = store(ctx, &upstream_req)
    {
        ctx.attempts.finish();
        return Box::pin(accept::store_and_answer(
            &metrics.delivery,
            session,
            ctx,
            rt,
            record,
            readable,
        ))
        .await;
    }
    // a fallback route keeps the head (not a record: most documents go through at once) to
    // store the document if the upstream cannot take it
    let fallback_head = stored
        .filter(|(d, _)| d.mode == DeliveryMode::Fallback)
        .map(|_| upstream_req.clone());
    let total = upstream.total_timeout;
    // boxed: the exchange's future is some 10 KiB, which every move of this one would copy
    let exchanged = tokio::time::timeout(
        total,
        Box::pin(forward::exchange(
            connector,
            &mut ctx.attempts,
            upstream_req,
            &body,
        )),
    )
    .await;
    let failure = match exchanged {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            let e = forward::UpstreamError::TotalTimeout;
            pool.metrics.error(&e);
            Err(e)
        }
    };
    ctx.attempts.finish();
    let cannot_take = match &failure {
        Ok(answer) => answer.head.status.is_server_error(),
        Err(_) => true,
    };
    if cannot_take
        && let Some(head) = &fallback_head
        && let Some((rt, record, readable)) = store(ctx, head)
    {
        return Box::pin(accept::store_and_answer(
            &metrics.delivery,
            session,
            ctx,
            rt,
            record,
            readable,
        ))
        .await;
    }
    let answer = match failure {
        Ok(answer) => answer,
        Err(e) => return Box::pin(answer::upstream_failure(session, ctx, e, false)).await,
    };
    let forward::Answer {
        head,
        body: mut resp_body,
    } = answer;

    let mut status = head.status;
    ctx.outcome = Outcome::Forwarded;
    let mut headers: HeaderMap = head.headers.clone();
    for h in RESPONSE_HOP_HEADERS {
        headers.remove(h);
    }
    {
        let mut view = ResponseView {
            status,
            headers: &mut headers,
        };
        if let Flow::Break(reply) = route.chain.on_response(&mut view, &mut ctx.state).await {
            return Box::pin(answer::reply(metrics, session, ctx, reply, false)).await;
        }
        if let Flow::Break(reply) = route
            .chain
            .on_response_body(&mut view, &mut ctx.state, &mut resp_body)
            .await
        {
            return Box::pin(answer::reply(metrics, session, ctx, reply, false)).await;
        }
        // a response policy may restate the status (an ERP 503 mapped to a 502 problem)
        status = view.status;
    }
    for (name, value) in &ctx.state.response_headers {
        headers.insert(name.clone(), value.clone());
    }
    let id = HeaderValue::from_str(&ctx.state.request_id)
        .or_err(ErrorType::InternalError, "request id")?;
    headers.insert(REQUEST_ID, id);
    // recorded before the write: the upstream did the work, so an idempotency record of it
    // is stored even when the client is gone, and before a retry can arrive
    ctx.buffered_response = Some((headers, resp_body));
    ctx.buffered_status = Some(status.as_u16());
    completion::complete_policies(ctx, status.as_u16()).await;
    let Some((headers, resp_body)) = &ctx.buffered_response else {
        return Error::e_explain(ErrorType::InternalError, "buffered answer vanished");
    };
    respond::write(
        session,
        status,
        headers,
        std::iter::empty(),
        resp_body.clone(),
        false,
    )
    .await?;
    Ok(true)
}
