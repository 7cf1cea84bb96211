//! What the four marketplaces share: finding the endpoint, the order of checks (token, rate
//! limit, body schema, path against body), recording, and the token endpoints' plumbing.
//! Each marketplace module says how its endpoints, headers, answers and errors look.

use std::collections::HashMap;

use base64::Engine as _;
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::channel::{Channel, Operation};
use crate::limits::Verdict;
use crate::records::{Counter, NewRecord};
use crate::response::Answer;
use crate::state::Shared;
use crate::tokens::TokenCheck;

/// A matched API call.
pub(crate) struct Call {
    pub(crate) operation: Operation,
    /// The id the path carries (order id, SKU), percent-decoded.
    pub(crate) path_key: Option<String>,
    /// The decoded query parameters.
    pub(crate) query: Vec<(String, String)>,
    /// The `Host` header, for absolute `Location`s.
    pub(crate) host: Option<String>,
}

impl Call {
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why an API call is refused.
pub(crate) enum Refusal {
    NotFound(String),
    Unauthorized(&'static str),
    Invalid(Vec<String>),
    Throttled,
    Down,
}

impl Refusal {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Refusal::NotFound(_) => StatusCode::NOT_FOUND,
            Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Refusal::Invalid(_) => StatusCode::BAD_REQUEST,
            Refusal::Throttled => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Down => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// One marketplace's API.
pub(crate) trait Market {
    const CHANNEL: Channel;

    /// The operation and the id in the path, if `method` and the decoded path segments (after
    /// the leading `/`) are one of its endpoints.
    fn endpoint(method: &Method, segments: &[String]) -> Option<(Operation, Option<String>)>;

    /// The access token the call presents (`Ok(None)`: none); `Err` lists other required
    /// headers that are missing (a 400).
    fn credential(headers: &HeaderMap) -> Result<Option<String>, Vec<String>>;

    /// Checks what the schema cannot (query, path against body) and finds the record's key
    /// and quantity.
    fn accept(call: &Call, body: &Value) -> Result<(String, Option<i64>), Vec<String>>;

    /// The success answer.
    fn success(call: &Call, body: &Value) -> Answer;

    /// A refusal in the marketplace's error shape (no rate headers).
    fn refusal(refusal: &Refusal) -> Answer;

    /// The marketplace's rate headers on an answer (`throttled`: the call was refused by
    /// the limit).
    fn rate_headers(answer: &mut Answer, verdict: &Verdict, throttled: bool);

    /// The token endpoint; `Err` is the refusal's status, OAuth error code and description.
    fn token_grant(
        shared: &Shared,
        parts: &Parts,
        form: &HashMap<String, String>,
    ) -> Result<(), (StatusCode, &'static str, &'static str)>;

    /// The token endpoint's success answer, around the issued token.
    fn token_answer(token: &str, expires_in: u64) -> Value;
}

/// Serves one API call of marketplace `M`.
pub(crate) fn api<M: Market>(
    shared: &Shared,
    parts: &Parts,
    segments: &[String],
    body: &[u8],
) -> Answer {
    let channel = M::CHANNEL;
    let Some((operation, path_key)) = M::endpoint(&parts.method, segments) else {
        return M::refusal(&Refusal::NotFound(format!(
            "no {channel} endpoint {} {}",
            parts.method,
            parts.uri.path()
        )));
    };
    let call = Call {
        operation,
        path_key,
        query: parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default(),
        host: parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned),
    };
    let (result, verdict) = checked::<M>(shared, parts, &call, body);
    let verdict = verdict.unwrap_or_else(|| shared.limits.peek(channel, operation));
    match result {
        Ok(answer) => {
            shared.counters.bump(channel, Counter::Accepted);
            let mut answer = answer;
            M::rate_headers(&mut answer, &verdict, false);
            answer
        }
        Err(refusal) => {
            let counter = match refusal {
                Refusal::Unauthorized(_) => Some(Counter::Unauthorized),
                Refusal::Invalid(_) => Some(Counter::Invalid),
                Refusal::Throttled => Some(Counter::Throttled),
                Refusal::Down => Some(Counter::Down),
                Refusal::NotFound(_) => None,
            };
            if let Some(counter) = counter {
                shared.counters.bump(channel, counter);
            }
            let mut answer = M::refusal(&refusal);
            M::rate_headers(&mut answer, &verdict, matches!(refusal, Refusal::Throttled));
            answer
        }
    }
}

/// The checks in order; also returns the verdict of the rate limit once it was asked.
fn checked<M: Market>(
    shared: &Shared,
    parts: &Parts,
    call: &Call,
    raw: &[u8],
) -> (Result<Answer, Refusal>, Option<Verdict>) {
    let channel = M::CHANNEL;
    let token = match M::credential(&parts.headers) {
        Err(missing) => return (Err(Refusal::Invalid(missing)), None),
        Ok(None) => return (Err(Refusal::Unauthorized("no access token")), None),
        Ok(Some(token)) => token,
    };
    let check = match &shared.options.channel(channel).static_token {
        Some(expected) => {
            if *expected == token {
                TokenCheck::Valid
            } else {
                TokenCheck::Unknown
            }
        }
        None => shared.tokens.check(channel, &token),
    };
    match check {
        TokenCheck::Valid => {}
        TokenCheck::Unknown => return (Err(Refusal::Unauthorized("invalid access token")), None),
        TokenCheck::Revoked => return (Err(Refusal::Unauthorized("revoked access token")), None),
        TokenCheck::Expired => {
            shared.counters.bump(channel, Counter::ExpiredTokenSeen);
            return (Err(Refusal::Unauthorized("expired access token")), None);
        }
    }
    let verdict = shared.limits.take(channel, call.operation);
    if !verdict.allowed {
        return (Err(Refusal::Throttled), Some(verdict));
    }
    let body: Value = match serde_json::from_slice(raw) {
        Ok(body) => body,
        Err(err) => {
            let refusal = Refusal::Invalid(vec![format!("the body is not JSON: {err}")]);
            return (Err(refusal), Some(verdict));
        }
    };
    let violations = shared.schemas.check(channel, call.operation, &body);
    if !violations.is_empty() {
        return (Err(Refusal::Invalid(violations)), Some(verdict));
    }
    let (key, quantity) = match M::accept(call, &body) {
        Ok(found) => found,
        Err(errors) => return (Err(Refusal::Invalid(errors)), Some(verdict)),
    };
    let answer = M::success(call, &body);
    shared.records.push(NewRecord {
        channel,
        operation: call.operation,
        key,
        quantity,
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        body,
        token,
        correlation_id: (channel == Channel::Walmart)
            .then(|| header(&parts.headers, "WM_QOS.CORRELATION_ID"))
            .flatten(),
    });
    (Ok(answer), Some(verdict))
}

/// Serves marketplace `M`'s token endpoint (a form body; client credentials in the form or
/// in Basic auth, as `M` checks).
pub(crate) fn token<M: Market>(shared: &Shared, parts: &Parts, body: &[u8]) -> Answer {
    let channel = M::CHANNEL;
    if parts.method != Method::POST {
        return oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "the token endpoint takes POST",
        );
    }
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    match M::token_grant(shared, parts, &form) {
        Ok(()) => {
            let lifetime = shared.options.channel(channel).token_lifetime;
            let token = shared.tokens.issue(channel, lifetime);
            shared.counters.bump(channel, Counter::TokensIssued);
            crate::response::json(StatusCode::OK, &M::token_answer(&token, lifetime.as_secs()))
        }
        Err((status, code, description)) => {
            shared.counters.bump(channel, Counter::TokenRefused);
            oauth_error(status, code, description)
        }
    }
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Answer {
    crate::response::json(
        status,
        &json!({"error": code, "error_description": description}),
    )
}

/// The OAuth checks shared by the token endpoints.
pub(crate) type GrantResult = Result<(), (StatusCode, &'static str, &'static str)>;

pub(crate) fn expect_grant(form: &HashMap<String, String>, grant: &str) -> GrantResult {
    match form.get("grant_type") {
        Some(g) if g == grant => Ok(()),
        Some(_) => Err((
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "the grant type is not supported",
        )),
        None => Err((
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is missing",
        )),
    }
}

pub(crate) fn expect_client(
    id: Option<&str>,
    secret: Option<&str>,
    shared: &Shared,
    channel: Channel,
) -> GrantResult {
    let options = shared.options.channel(channel);
    if id == Some(options.client_id.as_str()) && secret == Some(options.client_secret.as_str()) {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        ))
    }
}

pub(crate) fn expect_refresh_token(
    form: &HashMap<String, String>,
    shared: &Shared,
    channel: Channel,
) -> GrantResult {
    match form.get("refresh_token") {
        Some(t) if *t == shared.options.channel(channel).refresh_token => Ok(()),
        _ => Err((
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the refresh token is invalid or revoked",
        )),
    }
}

/// The client id and secret of `Authorization: Basic`.
pub(crate) fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// A header's value as text, if present and not empty.
pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Which of `names` are missing from the headers, as 400 messages.
pub(crate) fn missing_headers(headers: &HeaderMap, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .filter(|name| header(headers, name).is_none())
        .map(|name| format!("the header {name} is required"))
        .collect()
}

/// Decodes `%XX` escapes of one path segment; `None` if the result is not UTF-8.
pub(crate) fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A JSON id (string or number) as text.
pub(crate) fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
