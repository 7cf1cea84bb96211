//! The buffered exchange, for routes with body policies (and for bodies of unknown size): the
//! whole request body is read and given to the policies BEFORE anything is sent upstream, then
//! the request goes out through Pingora's connector (pooled connections), the whole response is
//! read, response policies run, and the answer is written to the client.
//!
//! Why not Pingora's streaming proxy: by the time it calls `request_body_filter`, the request
//! head is already on its way upstream, and its retry buffer (which could replay a body read in
//! `request_filter`) holds only 64 KiB. This path has neither limit: a rejected body sends
//! nothing upstream, not even headers, and bodies up to the route's limit arrive intact.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, StatusCode};
use pingora::ErrorType;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession as ClientSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::Peer;
use policies::pipeline::{Flow, RequestView, ResponseView};

use crate::proxy::{Gateway, Outcome, RequestCtx, too_large, upstream_error_kind};
use crate::respond::{self, REQUEST_ID};

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

struct Failure {
    kind: &'static str,
    detail: String,
}

fn expects_continue(req: &RequestHeader) -> bool {
    req.headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Handles the request entirely; returns `Ok(true)` (the response was written).
pub(crate) async fn buffered(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let Some(route) = ctx.route.clone() else {
        return Error::e_explain(
            ErrorType::InternalError,
            "buffered exchange without a route",
        );
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
    while let Some(chunk) = session.read_request_body().await? {
        if (buf.len() + chunk.len()) as u64 > limit {
            return gw.edge_reject(session, ctx, too_large(limit)).await;
        }
        buf.extend_from_slice(&chunk);
    }
    ctx.bytes_in = buf.len();
    let mut body = buf.freeze();

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
            return gw.send_reply(session, ctx, reply, false).await;
        }
    }

    let mut upstream_req = session.req_header().clone();
    let client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string());
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    gw.rewrite_upstream_request(&mut upstream_req, ctx, client_ip, tls)?;
    upstream_req.remove_header(&TRANSFER_ENCODING);
    upstream_req.remove_header(&EXPECT);
    upstream_req.insert_header(CONTENT_LENGTH, body.len())?;

    // the total budget covers the upstream exchange, not the time body policies took
    let total = gw
        .upstream_of(ctx)
        .map_or(std::time::Duration::ZERO, |u| u.total_timeout);
    let deadline = Instant::now() + total;
    ctx.deadline = Some(deadline);
    let remaining = total;
    let outcome = tokio::time::timeout(remaining, exchange(gw, ctx, upstream_req, body)).await;
    let (resp, mut resp_body) = match outcome {
        Ok(Ok(answer)) => answer,
        Ok(Err(f)) => {
            return gw
                .upstream_failure(session, ctx, f.kind, f.detail, false)
                .await;
        }
        Err(_) => {
            let detail = "the upstream exchange exceeded the total timeout".to_owned();
            return gw
                .upstream_failure(session, ctx, "total_timeout", detail, true)
                .await;
        }
    };

    let mut status = resp.status;
    ctx.upstream_status = Some(status.as_u16());
    ctx.outcome = Outcome::Forwarded;
    let mut headers: HeaderMap = resp.headers.clone();
    for h in RESPONSE_HOP_HEADERS {
        headers.remove(h);
    }
    {
        let mut view = ResponseView {
            status,
            headers: &mut headers,
        };
        if let Flow::Break(reply) = route.chain.on_response(&mut view, &mut ctx.state).await {
            return gw.send_reply(session, ctx, reply, false).await;
        }
        if let Flow::Break(reply) = route
            .chain
            .on_response_body(&mut view, &mut ctx.state, &mut resp_body)
            .await
        {
            return gw.send_reply(session, ctx, reply, false).await;
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
    let written = respond::write(
        session,
        status,
        &headers,
        std::iter::empty(),
        resp_body.clone(),
        false,
    )
    .await;
    // kept even when the client is gone: the upstream did the work, so an idempotency record
    // of it must still be stored
    ctx.buffered_response = Some((headers, resp_body));
    ctx.buffered_status = Some(status.as_u16());
    written?;
    Ok(true)
}

/// Sends the request to the route's upstream, trying the next endpoint when a connection cannot
/// be made. Nothing is retried once the request was sent: an order must not reach the ERP twice.
async fn exchange(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    req: RequestHeader,
    body: Bytes,
) -> Result<(ResponseHeader, Bytes), Failure> {
    let fail = |kind, detail: &str| Failure {
        kind,
        detail: detail.to_owned(),
    };
    let Some(route) = ctx.route.clone() else {
        return Err(fail("other", "no route"));
    };
    let snapshot = ctx.snapshot.clone();
    let (Some(pool), Some(upstream)) = (
        snapshot.pools.get(route.upstream),
        snapshot.set.upstreams.get(route.upstream),
    ) else {
        return Err(fail("other", "the route's upstream has no pool"));
    };
    let count = |kind: &str| {
        gw.metrics
            .upstream_errors
            .with_label_values(&[&upstream.name, kind])
            .inc();
    };
    let mut last = fail("connect_error", "the upstream has no endpoints");
    for attempt in 0..pool.len() {
        let Some((peer, label)) = pool.pick_labelled(&mut ctx.pool_start, attempt) else {
            break;
        };
        ctx.peer = Some(label.clone());
        ctx.attempts += 1;
        let mut up = match gw.connector.get_http_session(peer).await {
            Ok((up, _reused)) => up,
            Err(e) => {
                let kind = upstream_error_kind(&e);
                count(kind);
                last = fail(kind, describe(kind));
                if Instant::now() < ctx.deadline.unwrap_or_else(Instant::now) {
                    continue;
                }
                return Err(last);
            }
        };
        ctx.forwarded = true;
        up.set_read_timeout(Some(upstream.read_timeout));
        up.set_write_timeout(Some(upstream.read_timeout));
        match send(&mut up, req, &body, upstream.max_response_bytes).await {
            Ok(answer) => {
                gw.connector
                    .release_http_session(up, peer, peer.idle_timeout())
                    .await;
                return Ok(answer);
            }
            Err(f) => {
                count(f.kind);
                up.shutdown().await;
                return Err(f);
            }
        }
    }
    Err(last)
}

fn describe(kind: &str) -> &'static str {
    match kind {
        "connect_timeout" => "the upstream did not accept a connection in time",
        "connect_refused" => "the upstream refused the connection",
        "read_timeout" => "the upstream did not answer in time",
        "write_timeout" => "the upstream did not take the request in time",
        "connection_closed" => "the upstream closed the connection without a complete answer",
        "response_too_large" => "the upstream's answer is larger than this gateway buffers",
        "tls" => "the TLS handshake with the upstream failed",
        "protocol" => "the upstream answered with invalid HTTP",
        _ => "the upstream exchange failed",
    }
}

async fn send(
    up: &mut ClientSession,
    req: RequestHeader,
    body: &Bytes,
    max_response: u64,
) -> Result<(ResponseHeader, Bytes), Failure> {
    let fail = |e: Box<Error>| {
        let kind = upstream_error_kind(&e);
        Failure {
            kind,
            detail: describe(kind).to_owned(),
        }
    };
    up.write_request_header(Box::new(req)).await.map_err(fail)?;
    if !body.is_empty() {
        up.write_request_body(body.clone(), true)
            .await
            .map_err(fail)?;
    }
    up.finish_request_body().await.map_err(fail)?;
    let resp = loop {
        up.read_response_header().await.map_err(fail)?;
        match up.response_header() {
            Some(h)
                if h.status.is_informational() && h.status != StatusCode::SWITCHING_PROTOCOLS =>
            {
                continue;
            }
            Some(h) => break h.clone(),
            None => {
                return Err(Failure {
                    kind: "protocol",
                    detail: describe("protocol").to_owned(),
                });
            }
        }
    };
    let mut out = BytesMut::new();
    while let Some(chunk) = up.read_response_body().await.map_err(fail)? {
        if (out.len() + chunk.len()) as u64 > max_response {
            return Err(Failure {
                kind: "response_too_large",
                detail: describe("response_too_large").to_owned(),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok((resp, out.freeze()))
}
