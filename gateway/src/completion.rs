//! The end of every request, whichever path it took: the completion phase of its policies
//! (idempotency records are stored here), the route metrics and the access-log line.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use pingora::Error;
use pingora::proxy::Session;
use policies::pipeline::{Completion, phase};

use crate::access_log::{AccessLine, AccessLog, Hex, Ip, Timestamp};
use crate::context::{Outcome, RequestCtx};
use crate::kpi;
use crate::metrics::Metrics;
use crate::telemetry;

fn client_addr(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Runs the completion phase of the route's policies on the buffered answer, BEFORE it is
/// written: an idempotency record is then stored by the time the client has its answer, so a
/// retry sent right after it is a replay, not a 409 "still being processed". Runs once.
pub async fn complete_policies(ctx: &mut RequestCtx, status: u16) {
    if ctx.policies_completed {
        return;
    }
    ctx.policies_completed = true;
    let Some(route) = ctx.route.clone().filter(|r| r.chain.runs(phase::COMPLETE)) else {
        return;
    };
    let (headers, body) = match &ctx.buffered_response {
        Some((h, b)) => (Some(h), Some(b)),
        None => (None, None),
    };
    let done = Completion {
        status,
        // a document stored for delivery is handed on as surely as a forwarded one: its 202
        // is what a repeat must get
        forwarded: ctx.attempts.forwarded || matches!(ctx.outcome, Outcome::Queued),
        headers,
        body,
    };
    route.chain.on_complete(&done, &mut ctx.state).await;
}

/// Completes a request: policies (unless they completed before the answer), metrics, access log.
pub async fn complete(
    metrics: &Metrics,
    access_log: &AccessLog,
    session: &mut Session,
    e: Option<&Error>,
    ctx: &mut RequestCtx,
) {
    metrics.inflight.dec();
    ctx.attempts.finish();
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let route_index = ctx.route.as_ref().map(|r| r.index);
    let channel_index = ctx.state.channel.as_ref().map(|c| c.index);
    let elapsed = ctx.started.elapsed();
    if let Some(route) = ctx.route.clone()
        && !ctx.policies_completed
        && route.chain.runs(phase::COMPLETE)
    {
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
            // a document stored for delivery is handed on as surely as a forwarded one: its 202
            // is what a repeat must get
            forwarded: ctx.attempts.forwarded || matches!(ctx.outcome, Outcome::Queued),
            headers,
            body,
        };
        // boxed: inline, the policies' future (~3 KiB) would size every request's logging
        // future, which `async_trait` moves into a box of that size
        Box::pin(route.chain.on_complete(&done, &mut ctx.state)).await;
    }
    ctx.snapshot.route_metrics.observe(
        metrics,
        route_index,
        channel_index,
        status,
        elapsed.as_secs_f64(),
    );
    // business KPIs: the document's outcome, an accepted order's value, its ERP ack time
    record_kpis(metrics, ctx, status, elapsed);
    if let Some(started_wall) = ctx.traced_at {
        record_spans(session, ctx, status, started_wall);
    }
    let caller = caller(ctx);
    if let Some(route) = ctx.route.as_deref()
        && let Some(d) = &route.deprecation
    {
        // an unauthenticated caller is known by its address
        let client = match (&caller, client_addr(session)) {
            (Some(c), _) => c.to_string(),
            (None, Some(ip)) => format!("ip:{ip}"),
            (None, None) => "ip:-".to_owned(),
        };
        metrics.deprecations.record(
            &route.name,
            ctx.state.channel.as_ref().map(|c| &c.name),
            &client,
            matches!(ctx.outcome, Outcome::Edge("sunset")),
            d.now(),
        );
    }

    if !AccessLog::enabled() {
        return;
    }
    let req = session.req_header();
    let (outcome, policy, reason) = describe(&ctx.outcome);
    access_log.write(&AccessLine {
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
        client_cert: ctx
            .state
            .client_cert
            .as_deref()
            .map_or("-", |c| c.common_name.as_deref().unwrap_or(&c.subject)),
        client_cert_sha256: ctx
            .state
            .client_cert
            .as_deref()
            .map_or("", |c| &c.fingerprint_sha256),
        caller: caller.as_deref(),
        status,
        upstream: ctx.attempts.peer.as_deref().unwrap_or("-"),
        upstream_status: ctx.attempts.status.unwrap_or(0),
        attempts: ctx.attempts.count,
        latency_ms: elapsed.as_secs_f64() * 1000.0,
        bytes_in: ctx.bytes_in.max(session.body_bytes_read()),
        bytes_out: session.body_bytes_sent(),
        outcome,
        policy: policy.unwrap_or("-"),
        reason,
        error: e.map(|e| e.etype().as_str()).unwrap_or(""),
    });
}

/// Who called, as authenticated: the caller the authentication policies named, else the
/// verified client certificate (`client_cert:<CN or subject>`); `None`: unauthenticated.
fn caller(ctx: &RequestCtx) -> Option<std::sync::Arc<str>> {
    if let Some(c) = &ctx.state.caller {
        return Some(c.clone());
    }
    let cert = ctx.state.client_cert.as_deref()?;
    Some(policies::pipeline::caller_id(
        "client_cert",
        cert.common_name.as_deref().unwrap_or(&cert.subject),
    ))
}

/// How a request ended, in words: outcome, answering policy, reason.
fn describe(outcome: &Outcome) -> (&'static str, Option<&str>, &'static str) {
    match outcome {
        Outcome::Pending => ("incomplete", None, ""),
        Outcome::Forwarded => ("forwarded", None, ""),
        Outcome::Edge(r) => ("refused", None, r),
        Outcome::Policy { policy, reason } => ("policy", policy.as_deref(), reason),
        Outcome::Upstream(e) => ("upstream_error", None, e.kind()),
        Outcome::Queued => ("queued", None, ""),
        Outcome::Served => ("served", None, ""),
    }
}

/// Hands the spans of a traced request to the snapshot's exporter.
fn record_spans(session: &Session, ctx: &mut RequestCtx, status: u16, started_wall: SystemTime) {
    let (Some(tracer), Some(trace)) = (ctx.snapshot.tracer.as_ref(), ctx.trace.as_ref()) else {
        return;
    };
    let (outcome, policy, reason) = describe(&ctx.outcome);
    let summary = telemetry::RequestSummary {
        trace,
        started: ctx.started,
        started_wall,
        method: session.req_header().method.as_str(),
        route: ctx.route.as_ref().map(|r| &*r.name),
        channel: ctx.state.channel.as_ref().map(|c| &*c.name),
        request_id: &ctx.state.request_id,
        status,
        outcome,
        policy,
        reason,
    };
    let runs = ctx.state.policy_runs.take().unwrap_or_default();
    let spans =
        telemetry::request_spans(&summary, &runs, &ctx.attempts.traced, ctx.upstream_name());
    tracer.record(spans);
}

/// Records the KPIs of a request that is over (one that has a route and a channel): its
/// document outcome and, for an accepted one, its order value and acknowledgement time.
fn record_kpis(metrics: &Metrics, ctx: &RequestCtx, status: u16, elapsed: Duration) {
    let (Some(route), Some(channel)) = (ctx.route.as_deref(), ctx.state.channel.as_ref()) else {
        return;
    };
    let refused_by = match &ctx.outcome {
        Outcome::Policy {
            policy: Some(name), ..
        } => route
            .chain
            .policies()
            .iter()
            .find(|p| std::sync::Arc::ptr_eq(&p.name, name) || p.name == *name)
            .map(|p| p.policy.kind()),
        _ => None,
    };
    let Some(outcome) = kpi::classify(&ctx.outcome, refused_by, ctx.attempts.status, status) else {
        return;
    };
    let kpis = &ctx.snapshot.kpi;
    kpis.count(&metrics.kpi, route.index, channel.index, outcome);
    if outcome != kpi::DocumentOutcome::Accepted {
        return;
    }
    if let Some(value) = ctx
        .state
        .extensions
        .get::<policies::kinds::transform::OrderValue>()
    {
        kpis.add_order_value(&metrics.kpi, channel.index, value);
    }
    // a queued document's acknowledgement is observed by the worker that delivers it
    if !matches!(ctx.outcome, Outcome::Queued) {
        kpis.observe_ack(&metrics.delivery.ack_seconds, channel.index, elapsed);
    }
}
