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

/// Writes a complete response. `HEAD` requests get the head only.
pub async fn write(
    session: &mut Session,
    status: StatusCode,
    headers: &HeaderMap,
    extra: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
    body: Bytes,
    close: bool,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 4))?;
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
    request_id: &str,
    response_headers: &HeaderMap,
    extra: Vec<(HeaderName, HeaderValue)>,
    close: bool,
) -> Result<()> {
    let body = problem.to_json(session.req_header().uri.path(), request_id);
    let id = HeaderValue::from_str(request_id).unwrap_or(HeaderValue::from_static("-"));
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
    request_id: &str,
    response_headers: &HeaderMap,
    close: bool,
) -> Result<()> {
    match &reply.body {
        ReplyBody::Problem(p) => {
            problem(
                session,
                p,
                request_id,
                response_headers,
                reply.headers.clone(),
                close,
            )
            .await
        }
        ReplyBody::Bytes { content_type, body } => {
            let id = HeaderValue::from_str(request_id).unwrap_or(HeaderValue::from_static("-"));
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
