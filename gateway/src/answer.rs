//! The gateway's own answers, shared by every path: an edge refusal, a policy's reply, an
//! upstream failure. Each is counted, recorded as the request's outcome, and written as
//! problem+json with the request id.

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::prelude::*;
use pingora::proxy::Session;
use policies::problem::{PROBLEM_CONTENT_TYPE, Problem, Reply};

use crate::completion;
use crate::context::{Outcome, RequestCtx};
use crate::forward::UpstreamError;
use crate::framing::EdgeRejection;
use crate::metrics::Metrics;
use crate::respond;

/// Sends an edge rejection; returns `Ok(true)` (the request is answered).
pub async fn edge_reject(
    metrics: &Metrics,
    session: &mut Session,
    ctx: &mut RequestCtx,
    r: EdgeRejection,
) -> Result<bool> {
    metrics.edge_rejections.with_label_values(&[r.reason]).inc();
    ctx.outcome = Outcome::Edge(r.reason);
    let problem = Problem::new(r.status, r.slug, r.title).with_detail(r.detail);
    respond::problem(
        session,
        &problem,
        ctx.ids(),
        &ctx.state.response_headers,
        Vec::new(),
        r.close,
    )
    .await?;
    Ok(true)
}

/// Sends a policy's reply; returns `Ok(true)`.
pub async fn reply(
    metrics: &Metrics,
    session: &mut Session,
    ctx: &mut RequestCtx,
    reply: Reply,
    close: bool,
) -> Result<bool> {
    if reply.is_rejection() {
        let policy = reply.policy.as_deref().unwrap_or("-");
        metrics
            .policy_rejections
            .with_label_values(&[policy, reply.reason])
            .inc();
    }
    ctx.outcome = Outcome::Policy {
        policy: reply.policy.clone(),
        reason: reply.reason,
    };
    completion::complete_policies(ctx, reply.status.as_u16()).await;
    respond::reply(
        session,
        &reply,
        ctx.ids(),
        &ctx.state.response_headers,
        close,
    )
    .await?;
    Ok(true)
}

/// The headers an upstream failure's answer carries besides the problem's own.
fn failure_headers(e: &UpstreamError) -> Vec<(HeaderName, HeaderValue)> {
    e.retry_after()
        .map(|s| vec![(RETRY_AFTER, HeaderValue::from(s))])
        .unwrap_or_default()
}

/// Answers an upstream failure (the forwarding layer counted it). When the request may have
/// reached the upstream, the answer is also kept as the exchange's, for completion policies.
pub async fn upstream_failure(
    session: &mut Session,
    ctx: &mut RequestCtx,
    e: UpstreamError,
    close: bool,
) -> Result<bool> {
    ctx.outcome = Outcome::Upstream(e);
    let problem = e.problem(ctx.upstream_name());
    let extra = failure_headers(&e);
    if ctx.attempts.forwarded {
        // the request may have reached the upstream: the answer is what an idempotency record
        // of this exchange holds
        let body = problem.to_json(session.req_header().uri.path(), &ctx.state.request_id);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        for (name, value) in &extra {
            headers.insert(name.clone(), value.clone());
        }
        ctx.buffered_response = Some((headers, body));
        ctx.buffered_status = Some(problem.status.as_u16());
    }
    completion::complete_policies(ctx, problem.status.as_u16()).await;
    respond::problem(
        session,
        &problem,
        ctx.ids(),
        &ctx.state.response_headers,
        extra,
        close,
    )
    .await?;
    Ok(true)
}
