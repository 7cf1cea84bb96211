//! Request handling: the ERP API, `/echo`, and the `/_sim/` control API. A request is counted
//! and recorded here as soon as hyper hands it over, i.e. when its headers are parsed and
//! before its body is read; it counts as in flight until its answer has been written.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::behaviour::{Behaviour, InvalidBehaviour, Script};
use crate::connection::ConnectionInfo;
use crate::documents::DocumentKind;
use crate::error::ErpError;
use crate::faults::Action;
use crate::idempotency::{Lookup, StoredAnswer};
use crate::records::{headers_json, sha256_hex, utf8_preview};
use crate::response::{SimBody, json_response};
use crate::state::Shared;

/// Control requests are small JSON documents; anything bigger is a mistake.
const CONTROL_BODY_LIMIT: usize = 64 * 1024;

/// The hyper service of one connection.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    connection: Arc<ConnectionInfo>,
    request: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let path = request.uri().path();
    if path == "/_sim" || path.starts_with("/_sim/") {
        let response = control(&shared, &connection, request).await;
        return Ok(response.map(|body| SimBody::new(body, None)));
    }
    if path == HEALTH_PATH && request.method() == Method::GET {
        shared.counters.health_check();
        let response = health(&shared, &connection).await;
        return Ok(response.map(|body| SimBody::new(body, None)));
    }
    let in_flight = shared.counters.in_flight.enter();
    let response = erp(&shared, &connection, request).await;
    Ok(response.map(|body| SimBody::new(body, Some(in_flight))))
}

/// The ERP's health endpoint, for the gateway's active health checks.
const HEALTH_PATH: &str = "/erp/v1/health";

/// Answers a health probe as the ERP's state would: failing, hung or dropped while the
/// behaviour fails every request, slow while it is slow, else `200`. Probes are not business
/// traffic: they are only counted in `health_checks`, and never consume a behaviour's
/// `fail_count`, `fail_every` or `fail_ratio` (which count the ERP's requests).
async fn health(shared: &Shared, connection: &ConnectionInfo) -> Response<Bytes> {
    let b = shared.faults.behaviour();
    let fails_all = b.fail_count.is_none() && b.fail_every.is_none() && b.fail_ratio.is_none();
    if fails_all && (b.hang || b.drop_connection) {
        if b.drop_connection && !b.hang {
            connection.close.notify_one();
        }
        return std::future::pending().await;
    }
    if let Some(ms) = b.delay_ms.filter(|ms| *ms > 0) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    match b.fail_status.filter(|_| fails_all) {
        Some(status) => ErpError::SimulatedFailure {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            retry_after: b.retry_after,
        }
        .to_response(),
        None => json_response(StatusCode::OK, &json!({"status": "ok"})),
    }
}

async fn erp(
    shared: &Shared,
    connection: &ConnectionInfo,
    request: Request<Incoming>,
) -> Response<Bytes> {
    let epoch = shared.counters.start();
    let (parts, body) = request.into_parts();
    let ticket = shared
        .records
        .begin(&parts, connection.tls, connection.client_cert.as_ref());
    let plan = shared.faults.plan();
    if plan.action == Action::Drop {
        connection.close.notify_one();
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
    if plan.action == Action::Hang {
        // Until the connection goes away: the client gives up, or the simulator shuts down or
        // goes down.
        return std::future::pending().await;
    }
    // The key is looked up (and reserved) before the delay: a slow ERP is slow while it
    // processes, and a retry arriving meanwhile must find the key taken.
    let lookup = match plan.action {
        Action::Answer => idempotency_key(&parts)
            .map(|key| shared.keys.lookup(&parts.method, parts.uri.path(), key)),
        _ => None,
    };
    if let Some(delay) = plan.delay {
        tokio::time::sleep(delay).await;
    }
    let response = match (plan.action, lookup) {
        (
            Action::Fail {
                status,
                retry_after,
            },
            _,
        ) => ErpError::SimulatedFailure {
            status,
            retry_after,
        }
        .to_response(),
        (_, Some(Lookup::Replay(answer))) => {
            shared.counters.duplicate();
            if shared.keys.honoured() {
                answer.replay()
            } else {
                route(shared, &parts, body)
            }
        }
        (_, Some(Lookup::Processing)) => {
            shared.counters.in_flight_conflict();
            if shared.keys.honoured() {
                ErpError::IdempotencyKeyInUse.to_response()
            } else {
                route(shared, &parts, body)
            }
        }
        (_, Some(Lookup::Fresh(reservation))) => {
            let response = route(shared, &parts, body);
            // Only a created document is remembered; anything else leaves the key free.
            if response.status() == StatusCode::CREATED {
                reservation.answered(StoredAnswer::of(&response));
            }
            response
        }
        (_, None) => route(shared, &parts, body),
    };
    shared.counters.complete(epoch);
    response
}

/// The `Idempotency-Key` of an ERP write (a `POST` under `/erp/v1/`), if it has one.
fn idempotency_key(parts: &Parts) -> Option<&str> {
    if parts.method != Method::POST || !parts.uri.path().starts_with("/erp/v1/") {
        return None;
    }
    parts
        .headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .filter(|key| !key.is_empty())
}

fn route(shared: &Shared, parts: &Parts, body: Bytes) -> Response<Bytes> {
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
                let mut response = Response::new(raw);
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

fn create(shared: &Shared, kind: DocumentKind, parts: &Parts, raw: Bytes) -> Response<Bytes> {
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

fn echo(parts: &Parts, body: &Bytes) -> Response<Bytes> {
    json_response(
        StatusCode::OK,
        &json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "version": format!("{:?}", parts.version),
            "headers": headers_json(&parts.headers),
            "body_len": body.len(),
            "body_sha256": sha256_hex(body),
            "body_utf8": utf8_preview(body),
        }),
    )
}

async fn control(
    shared: &Shared,
    connection: &ConnectionInfo,
    request: Request<Incoming>,
) -> Response<Bytes> {
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
            let mut response = Response::new(Bytes::new());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        (&Method::GET, "/_sim/behaviour" | "/_sim/behavior" | "/_sim/script") => {
            json_response(StatusCode::OK, &shared.behaviour_status())
        }
        (&Method::PUT, "/_sim/behaviour" | "/_sim/behavior") => {
            let behaviour = read_control::<Behaviour>(body, Behaviour::validate)
                .await
                .map_err(|err| err.into_error(ErpError::InvalidBehaviour));
            match behaviour {
                Ok(behaviour) => {
                    let closed = shared.set_behaviour(behaviour, Some(connection.id));
                    answer_after_down(shared, closed).await
                }
                Err(err) => err.to_response(),
            }
        }
        (&Method::PUT, "/_sim/script") => {
            let script = read_control::<Script>(body, Script::validate)
                .await
                .map_err(|err| err.into_error(ErpError::InvalidScript));
            match script {
                Ok(script) => {
                    let closed = shared.set_script(script, Some(connection.id));
                    answer_after_down(shared, closed).await
                }
                Err(err) => err.to_response(),
            }
        }
        (
            _,
            "/_sim/requests" | "/_sim/stats" | "/_sim/reset" | "/_sim/behaviour" | "/_sim/behavior"
            | "/_sim/script",
        ) => ErpError::MethodNotAllowed {
            method: parts.method.to_string(),
            path: path.to_owned(),
        }
        .to_response(),
        _ => ErpError::NotFound(format!("no control endpoint {path}")).to_response(),
    }
}

/// Answers a behaviour or script change once the listener is closed, if the change closes it,
/// so the client knows connections are refused when it gets the answer.
async fn answer_after_down(
    shared: &Shared,
    closed: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Response<Bytes> {
    if let Some(closed) = closed {
        // An error means the accept loop ended: nothing left to wait for.
        let _ = closed.await;
    }
    json_response(StatusCode::OK, &shared.behaviour_status())
}

/// Why a control document was refused.
enum ControlError {
    Body(ErpError),
    Invalid(String),
}

impl ControlError {
    fn into_error(self, invalid: fn(String) -> ErpError) -> ErpError {
        match self {
            ControlError::Body(err) => err,
            ControlError::Invalid(message) => invalid(message),
        }
    }
}

async fn read_control<T: DeserializeOwned>(
    body: Incoming,
    validate: fn(&T) -> Result<(), InvalidBehaviour>,
) -> Result<T, ControlError> {
    let raw = read_body(body, CONTROL_BODY_LIMIT)
        .await
        .map_err(|failure| ControlError::Body(failure.error))?;
    let value =
        serde_json::from_slice::<T>(&raw).map_err(|err| ControlError::Invalid(err.to_string()))?;
    validate(&value).map_err(|err| ControlError::Invalid(err.to_string()))?;
    Ok(value)
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
