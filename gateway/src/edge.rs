//! A request's arrival: its request id and trace context, the framing checks, the route, the
//! body-size limit it declares, and the header phase of the route's policies. It ends answered
//! (a refusal or a policy's reply), or with the path the request takes: Pingora's streaming
//! proxy, or the buffered exchange (body policies, or a body of unknown size).

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, StatusCode};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use policies::model::Resolved;
use policies::pipeline::{Flow, RequestView, phase};
use policies::problem::Problem;

use crate::answer;
use crate::context::{Outcome, RequestCtx};
use crate::framing::{self, EdgeRejection};
use crate::ids::{self, REQUEST_ID, TraceContext};
use crate::metrics::Metrics;
use crate::respond;

/// Where a request goes after its arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// It was answered.
    Answered,
    /// Pingora streams it to the upstream.
    Stream,
    /// The buffered exchange takes it.
    Buffer,
    /// It reads a delivery's state (its guard policies passed).
    DeliveryStatus,
}

/// The request's `Content-Length`, if it has one.
pub fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Handles the arrival of a request.
pub async fn arrive(
    metrics: &Metrics,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Arrival> {
    let snapshot = ctx.snapshot.clone();
    let set = &snapshot.set;
    // the client certificate the connection's handshake verified, for `client_cert` policies
    ctx.state.client_cert = crate::tls::client_identity(session);
    {
        let req = session.req_header();
        ctx.state.request_id = match req.headers.get(&REQUEST_ID) {
            Some(v) if ids::is_valid_request_id(v.as_bytes()) => {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            }
            _ => ids::new_request_id(),
        };
        let mut trace = TraceContext::from_headers(
            req.headers
                .get(&ids::TRACEPARENT)
                .map(HeaderValue::as_bytes),
            req.headers.get(&ids::TRACESTATE),
        );
        if let Some(tracer) = &snapshot.tracer {
            // the decision travels upstream in the sampled flag
            let caller = (trace.parent_id != [0; 8]).then_some(trace.flags);
            let sampled = tracer.settings().sampled(&trace.trace_id, caller);
            trace.flags = (trace.flags & !0x01) | u8::from(sampled);
            if sampled {
                ctx.traced_at = Some(std::time::SystemTime::now());
                ctx.state.policy_runs = Some(Vec::with_capacity(8));
                ctx.attempts.trace(trace.trace_id, trace.flags);
            }
        }
        ctx.trace = Some(trace);
    }
    if let Err(rejection) = framing::check(session, set.limits.max_header_bytes) {
        Box::pin(answer::edge_reject(metrics, session, ctx, rejection)).await?;
        return Ok(Arrival::Answered);
    }

    let req = session.req_header();
    let host = req
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host());
    let refusal = match set.resolve(&req.method, host, req.uri.path()) {
        Resolved::Route {
            route,
            params,
            channel,
        } => {
            ctx.state.channel = channel;
            ctx.state.route = Some(route.name.clone());
            ctx.params = params;
            ctx.route = Some(route.clone());
            None
        }
        Resolved::NotFound => Some(not_found(
            "no route matches this method and path",
            "no_route",
        )),
        Resolved::UnknownChannel => Some(not_found(
            "no channel of this name is configured",
            "unknown_channel",
        )),
        Resolved::BadPath => Some(EdgeRejection {
            status: StatusCode::BAD_REQUEST,
            slug: "bad-path",
            title: "Path not allowed",
            detail: "paths with '.' or '..' segments are refused".into(),
            reason: "dot_segment",
            close: false,
        }),
        Resolved::MethodNotAllowed(allow) => {
            let allow = allow.clone();
            metrics
                .edge_rejections
                .with_label_values(&["method_not_allowed"])
                .inc();
            ctx.outcome = Outcome::Edge("method_not_allowed");
            let p = Problem::status(StatusCode::METHOD_NOT_ALLOWED).with_detail(format!(
                "this path takes {}",
                allow.to_str().unwrap_or("other methods")
            ));
            Box::pin(respond::problem(
                session,
                &p,
                ctx.ids(),
                &ctx.state.response_headers,
                vec![(http::header::ALLOW, allow)],
                false,
            ))
            .await?;
            return Ok(Arrival::Answered);
        }
    };
    if let Some(r) = refusal {
        Box::pin(answer::edge_reject(metrics, session, ctx, r)).await?;
        return Ok(Arrival::Answered);
    }
    let Some(route) = ctx.route.clone() else {
        return Error::e_explain(ErrorType::InternalError, "no route");
    };
    // a deprecated route says so on every answer, refusals included
    if let Some(d) = &route.deprecation {
        for (name, value) in &d.headers {
            ctx.state
                .response_headers
                .insert(name.clone(), value.clone());
        }
        if d.refuses() {
            // an unread body would have to be drained; close instead when one is coming
            let req = session.req_header();
            let close = content_length(req).is_some_and(|l| l > 0)
                || req.headers.contains_key(TRANSFER_ENCODING);
            Box::pin(answer::edge_reject(metrics, session, ctx, gone(d, close))).await?;
            return Ok(Arrival::Answered);
        }
    }

    let req = session.req_header();
    let declared = content_length(req);
    let chunked = req.headers.contains_key(TRANSFER_ENCODING);
    if let Some(len) = declared
        && len > route.max_body_bytes
    {
        Box::pin(answer::edge_reject(
            metrics,
            session,
            ctx,
            too_large(route.max_body_bytes),
        ))
        .await?;
        return Ok(Arrival::Answered);
    }

    let view = RequestView {
        method: &req.method,
        path: req.uri.path(),
        query: req.uri.query(),
        headers: &req.headers,
        params: &ctx.params,
    };
    // The policies' futures (a few KiB) and the answers' are boxed where they run: inline,
    // they would size this future, and with it the one Pingora boxes for every request, for
    // the largest of them, and each request would copy that whole size into its box.
    if route.chain.runs(phase::REQUEST)
        && let Flow::Break(reply) = Box::pin(route.chain.on_request(&view, &mut ctx.state)).await
    {
        // an unread body would have to be drained; close instead when one is coming
        let close = declared.is_some_and(|l| l > 0) || chunked;
        Box::pin(answer::reply(metrics, session, ctx, reply, close)).await?;
        return Ok(Arrival::Answered);
    }

    if route.status_of.is_some() {
        return Ok(Arrival::DeliveryStatus);
    }
    // A chunked body has no declared size: buffer it so an oversized one is refused before
    // anything reaches the upstream. A route that may store its documents buffers them.
    if route.chain.needs_body() || chunked || route.delivery.is_some() {
        Ok(Arrival::Buffer)
    } else {
        Ok(Arrival::Stream)
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

/// The answer of a deprecated route after its sunset (`after_sunset: refuse`): nothing is
/// forwarded.
fn gone(d: &policies::deprecation::Deprecation, close: bool) -> EdgeRejection {
    let mut detail = format!(
        "this route was retired on {}",
        d.sunset_at
            .map_or_else(String::new, policies::deprecation::rfc3339)
    );
    if let Some(link) = &d.link {
        detail.push_str("; see ");
        detail.push_str(link);
    }
    EdgeRejection {
        status: StatusCode::GONE,
        slug: "route-sunset",
        title: "Route retired",
        detail,
        reason: "sunset",
        close,
    }
}

/// The refusal of a body larger than the route takes.
pub fn too_large(limit: u64) -> EdgeRejection {
    EdgeRejection {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        slug: "body-too-large",
        title: "Request body too large",
        detail: format!("this route accepts bodies of at most {limit} bytes"),
        reason: "body_too_large",
        close: true,
    }
}
