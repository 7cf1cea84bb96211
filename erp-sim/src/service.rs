//! Request handling: the ERP API, `/echo`, and the `/_sim/` control API. A request is counted
//! and recorded here as soon as hyper hands it over, i.e. when its headers are parsed and
//! before its body is read.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::documents::DocumentKind;
use crate::error::ErpError;
use crate::records::{headers_json, sha256_hex, utf8_preview};
use crate::response::json_response;
use crate::state::{Action, Behaviour, Shared};

/// Control requests are small JSON documents; anything bigger is a mistake.
const CONTROL_BODY_LIMIT: usize = 64 * 1024;

/// The hyper service of one connection. `close` asks that connection's task to drop the
/// connection without answering.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    close: Arc<Notify>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let response = if path == "/_sim" || path.starts_with("/_sim/") {
        control(&shared, request).await
    } else {
        erp(&shared, &close, request).await
    };
    Ok(response)
}

async fn erp(shared: &Shared, close: &Notify, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let epoch = shared.counters.start();
    let (parts, body) = request.into_parts();
    let ticket = shared.records.begin(&parts);
    let plan = shared.plan();
    if plan.action == Action::Drop {
        close.notify_one();
        // The connection task drops this future together with the connection, so nothing
        // is ever written.
        return std::future::pending().await;
    }
    let body = match read_body(body, shared.options.max_body_bytes).await {
        Ok(body) => {
            shared.records.finish(&ticket, body.clone(), None);
            body
        }
        Err(failure) => {
            shared
                .records
                .finish(&ticket, failure.partial, Some(failure.error.to_string()));
            // A client that went away gets no answer; a too-large body does.
            if matches!(failure.error, ErpError::PayloadTooLarge { .. }) {
                shared.counters.complete(epoch);
            }
            return failure.error.to_response();
        }
    };
    if let Some(delay) = plan.delay {
        tokio::time::sleep(delay).await;
    }
    let response = match plan.action {
        Action::Fail(status) => ErpError::SimulatedFailure(status).to_response(),
        Action::Answer | Action::Drop => route(shared, &parts, body),
    };
    shared.counters.complete(epoch);
    response
}

fn route(shared: &Shared, parts: &Parts, body: Bytes) -> Response<Full<Bytes>> {
    let path = parts.uri.path();
    if path == "/echo" || path.starts_with("/echo/") {
        return echo(parts, &body);
    }
    let not_found = || ErpError::NotFound(format!("no route for {} {path}", parts.method));
    let Some((kind, document_id)) = path.strip_prefix("/erp/v1/").and_then(|rest| {
        let (collection, id) = match rest.split_once('/') {
            Some((collection, id)) => (collection, Some(id)),
            None => (rest, None),
        };
        Some((DocumentKind::from_collection(collection)?, id))
    }) else {
        return not_found().to_response();
    };
    let not_allowed = || ErpError::MethodNotAllowed {
        method: parts.method.to_string(),
        path: path.to_owned(),
    };
    match (document_id, &parts.method) {
        (None, &Method::POST) => create(shared, kind, parts, body),
        (Some(id), &Method::GET) => match shared.documents.get(kind, id) {
            Some(raw) => {
                let mut response = Response::new(Full::new(raw));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            None => ErpError::NotFound(format!("no {} {id}", kind.document_type())).to_response(),
        },
        _ => not_allowed().to_response(),
    }
}

fn create(shared: &Shared, kind: DocumentKind, parts: &Parts, raw: Bytes) -> Response<Full<Bytes>> {
    let document = match serde_json::from_slice::<Value>(&raw) {
        Ok(document @ Value::Object(_)) => document,
        Ok(other) => {
            return ErpError::InvalidDocument(format!("got {}", json_kind(&other))).to_response();
        }
        Err(err) => return ErpError::InvalidDocument(err.to_string()).to_response(),
    };
    let request_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let ack = shared.documents.store(kind, document, raw, request_id);
    json_response(StatusCode::CREATED, &ack)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn echo(parts: &Parts, body: &Bytes) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::OK,
        &json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers_json(&parts.headers),
            "body_len": body.len(),
            "body_sha256": sha256_hex(body),
            "body_utf8": utf8_preview(body),
        }),
    )
}

async fn control(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let resource = path.trim_end_matches('/');
    match (&parts.method, resource) {
        (&Method::GET, "/_sim/requests") => {
            let records = shared.records.snapshot();
            let list = records.iter().map(|r| r.to_json()).collect();
            json_response(StatusCode::OK, &Value::Array(list))
        }
        (&Method::GET, "/_sim/stats") => json_response(StatusCode::OK, &shared.stats().to_json()),
        (&Method::POST, "/_sim/reset") => {
            shared.reset();
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        (&Method::GET, "/_sim/behaviour" | "/_sim/behavior") => {
            json_response(StatusCode::OK, &shared.behaviour().to_json())
        }
        (&Method::PUT, "/_sim/behaviour" | "/_sim/behavior") => {
            let behaviour = match read_body(body, CONTROL_BODY_LIMIT).await {
                Ok(raw) => serde_json::from_slice::<Behaviour>(&raw)
                    .map_err(|err| ErpError::InvalidBehaviour(err.to_string()))
                    .and_then(|b| b.validate().map(|()| b).map_err(ErpError::InvalidBehaviour)),
                Err(failure) => Err(failure.error),
            };
            match behaviour {
                Ok(behaviour) => {
                    let answer = behaviour.to_json();
                    shared.set_behaviour(behaviour);
                    json_response(StatusCode::OK, &answer)
                }
                Err(err) => err.to_response(),
            }
        }
        (
            _,
            "/_sim/requests" | "/_sim/stats" | "/_sim/reset" | "/_sim/behaviour" | "/_sim/behavior",
        ) => ErpError::MethodNotAllowed {
            method: parts.method.to_string(),
            path: path.to_owned(),
        }
        .to_response(),
        _ => ErpError::NotFound(format!("no control endpoint {path}")).to_response(),
    }
}

struct BodyFailure {
    /// What arrived before the failure.
    partial: Bytes,
    error: ErpError,
}

async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyFailure> {
    let too_large = ErpError::PayloadTooLarge { limit };
    if body
        .size_hint()
        .exact()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(BodyFailure {
            partial: Bytes::new(),
            error: too_large,
        });
    }
    let mut chunks = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    chunks.push(data);
                    if total > limit {
                        return Err(BodyFailure {
                            partial: concat(chunks, total),
                            error: too_large,
                        });
                    }
                }
            }
            Err(err) => {
                return Err(BodyFailure {
                    partial: concat(chunks, total),
                    error: ErpError::BodyRead(err.to_string()),
                });
            }
        }
    }
    Ok(concat(chunks, total))
}

fn concat(mut chunks: Vec<Bytes>, total: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut buf = BytesMut::with_capacity(total);
    for chunk in chunks {
        buf.extend_from_slice(&chunk);
    }
    buf.freeze()
}
