//! Writing the gateway's own responses (problems, policy replies, buffered upstream answers)
//! to the client, with the request id and the headers policies asked for.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use policies::problem::{PROBLEM_CONTENT_TYPE, Problem, Reply, ReplyBody};

pub use crate::ids::REQUEST_ID;

/// The ids an answer of the gateway carries: the request id (a header and a problem member)
/// and the trace id (a problem member).
#[derive(Debug, Clone, Copy)]
pub struct Ids<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The trace id, when the request has a trace context.
    pub trace_id: Option<&'a [u8; 16]>,
}

/// Writes a complete response. `HEAD` requests get the head only.
pub async fn write(
    session: &mut Session,
    status: StatusCode,
    headers: &HeaderMap,
    extra: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
    body: Bytes,
    close: bool,
) -> Result<()> {
    // No case map: every name here is a `HeaderName`, which Pingora writes in the same bytes
    // (title case where it knows one, else lowercase) with or without it, so the map would only
    // cost a second insert per header.
    let mut resp = ResponseHeader::build_no_case(status, Some(headers.len() + 4))?;
    for (name, value) in headers {
        resp.append_header(name.clone(), value.clone())?;
    }
    for (name, value) in extra {
        resp.insert_header(name, value)?;
    }
    resp.insert_header(CONTENT_LENGTH, body.len())?;
    if close {
        session.set_keepalive(None);
        resp.insert_header(http::header::CONNECTION, "close")?;
    }
    let head_only = session.req_header().method == Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Writes a problem document.
pub async fn problem(
    session: &mut Session,
    problem: &Problem,
    ids: Ids<'_>,
    response_headers: &HeaderMap,
    extra: Vec<(HeaderName, HeaderValue)>,
    close: bool,
) -> Result<()> {
    let mut hex = [0u8; 32];
    let trace_id = ids.trace_id.map(|t| {
        let n = crate::ids::hex_into(t, &mut hex);
        std::str::from_utf8(&hex[..n]).unwrap_or("")
    });
    let body = problem.to_json_traced(session.req_header().uri.path(), ids.request_id, trace_id);
    let id = HeaderValue::from_str(ids.request_id).unwrap_or(HeaderValue::from_static("-"));
    let fixed = [
        (CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE)),
        (REQUEST_ID, id),
    ];
    write(
        session,
        problem.status,
        response_headers,
        extra.into_iter().chain(fixed),
        body,
        close,
    )
    .await
}

/// Writes a policy's reply.
pub async fn reply(
    session: &mut Session,
    reply: &Reply,
    ids: Ids<'_>,
    response_headers: &HeaderMap,
    close: bool,
) -> Result<()> {
    match &reply.body {
        ReplyBody::Problem(p) => {
            problem(
                session,
                p,
                ids,
                response_headers,
                reply.headers.clone(),
                close,
            )
            .await
        }
        ReplyBody::Bytes { content_type, body } => {
            let id = HeaderValue::from_str(ids.request_id).unwrap_or(HeaderValue::from_static("-"));
            let mut extra = reply.headers.clone();
            if let Some(ct) = content_type {
                extra.push((CONTENT_TYPE, ct.clone()));
            }
            extra.push((REQUEST_ID, id));
            write(
                session,
                reply.status,
                response_headers,
                extra,
                body.clone(),
                close,
            )
            .await
        }
    }
}
