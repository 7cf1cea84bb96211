//! `idempotency`: a request carrying a key (the `Idempotency-Key` header of
//! draft-ietf-httpapi-idempotency-key-header, another header such as Shopify's
//! `X-Shopify-Webhook-Id`, or values from the body) reaches the upstream once; repeats get the
//! stored response replayed (`Idempotent-Replayed: true`), 409 while the first is in flight, 422
//! when the key comes back with a different body. Keys are scoped by channel and route.
//!
//! The first request claims its key atomically, as in flight for a lease (so a crashed instance
//! cannot lock a key forever); the answer the client receives (status, chosen headers, body) is
//! stored for the TTL once the exchange completes. An upstream 5xx or timeout either releases the
//! claim (the retry goes through) or is stored like any answer, per policy. Records live in this
//! process or in Redis (one round trip to claim or replay, one to complete).
//!
//! The body's fingerprint is SHA-256 of its canonical JSON (object keys sorted, no whitespace,
//! numbers as written), so key order and formatting do not count as a different payload; a body
//! that is not JSON is fingerprinted byte for byte. List the policy BEFORE a `transform` on the
//! route: request body phases run in route order, so it then sees the body as the client sent
//! it, and response phases run in reverse, so it stores the answer as the client receives it.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use transforms::json_text;

use super::{KindContext, PolicyKind};
use crate::clock::Clock;
use crate::metrics::{KindMetrics, SharedMetrics};
use crate::pipeline::{Completion, ExchangeState, Flow, ParsedBody, Phases, RequestView};
use crate::problem::{Problem, Reply, ReplyBody};
use crate::state::idempotency::{
    Claim, Fingerprint, LocalRecords, Record, RecordStore, Records, RedisRecords,
};
use crate::state::{OnStoreError, OnStoreErrorRules, StoreChoice, StoreError, StoreKind};
use crate::units::DurationSpec;

/// Settings of an `idempotency` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySpec {
    /// Where the key comes from: `{header: Idempotency-Key}` (the default; an RFC 8941 string,
    /// `"..."`), `{header: <name>}` (any other header, taken as sent, e.g.
    /// `X-Shopify-Webhook-Id`), or `{body: [<JSON pointer>, ...]}` (the values at these
    /// pointers, joined, e.g. `[/AmazonOrderId, /LastUpdateDate]`). Keys are scoped by channel
    /// and route: the same key on another channel or route is another key.
    #[serde(default)]
    pub key: KeySpec,
    /// Whether a request without a key is refused (400, `idempotency-key-missing`). When false
    /// it passes unprotected.
    #[serde(default = "yes")]
    pub required: bool,
    /// How long a completed request's response is kept and replayed (the draft asks that this
    /// be published: it is sent in `Idempotency-Policy` unless `advertise` is false). After it
    /// the key is new again.
    #[serde(default = "default_ttl")]
    pub ttl: DurationSpec,
    /// How long a claim stays in flight at most: if the instance handling the first request
    /// dies, the key is free again after this. Make it longer than the upstream's
    /// `total_timeout`, or a retry may reach the upstream while the first request still runs.
    #[serde(default = "default_lease")]
    pub lease: DurationSpec,
    /// Where records live: `local` (in this process, the default) or `redis` (shared by every
    /// gateway instance, through the file's `redis` section).
    #[serde(default)]
    pub store: StoreKind,
    /// With `store: redis`, what happens while Redis is unreachable or slower than its
    /// timeout: `deny` (the default: 503, `idempotency-store-unavailable`) or `allow` (the
    /// request goes upstream unprotected, counted as `unprotected`; `pass` is its older name).
    /// `local` is refused: a record kept by one instance would not stop a repeat reaching
    /// another.
    #[serde(default)]
    pub on_store_error: Option<OnStoreError>,
    /// What an upstream 5xx answer or an upstream failure (timeout, broken connection) does to
    /// the key: `release` (the default: nothing is stored, a retry goes upstream again) or
    /// `store` (the error is stored and replayed like any answer). A request that never reached
    /// the upstream (refused by a later policy, no connection) always releases its key.
    #[serde(default)]
    pub on_upstream_error: OnUpstreamError,
    /// Response headers stored and replayed with the body (the status and body always are).
    /// Never `Set-Cookie`, hop-by-hop headers, `Content-Length` or `X-Request-Id`.
    #[serde(default = "default_replay_headers")]
    pub replay_headers: Vec<String>,
    /// With `store: local`, the most keys kept; past it expired keys go first, then the
    /// completed records closest to their expiry (in-flight claims are never evicted).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_entries: Option<u64>,
    /// The longest key accepted, in bytes; longer keys are refused (400,
    /// `invalid-idempotency-key`).
    #[serde(default = "default_max_key_length")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_key_length: usize,
    /// Send `Idempotency-Policy: ttl=<seconds>, lease=<seconds>` on the answers of requests
    /// that carry a key (stored, replayed, 409, 422), publishing the expiry policy.
    #[serde(default = "yes")]
    pub advertise: bool,
}

/// Where an idempotency key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeySpec {
    /// A request header. `Idempotency-Key` is parsed as an RFC 8941 string (`"..."`; a bare
    /// value without quotes, spaces or commas is accepted too, as many clients send one); any
    /// other header is taken as sent, trimmed.
    Header(String),
    /// Values from the JSON body at these JSON pointers (RFC 6901), joined. Strings, numbers
    /// and booleans count; a pointer that finds nothing (or null, an object, an array) means
    /// the key is missing.
    Body(Vec<String>),
}

impl Default for KeySpec {
    fn default() -> Self {
        KeySpec::Header("Idempotency-Key".into())
    }
}

/// What an upstream error does to the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnUpstreamError {
    /// Free the key; a retry goes upstream.
    #[default]
    Release,
    /// Store the error and replay it.
    Store,
}

fn yes() -> bool {
    true
}

fn default_ttl() -> DurationSpec {
    DurationSpec::secs(24 * 3600)
}

fn default_lease() -> DurationSpec {
    DurationSpec::secs(90)
}

fn default_max_key_length() -> usize {
    255
}

fn default_replay_headers() -> Vec<String> {
    [
        "Content-Type",
        "Content-Encoding",
        "Content-Language",
        "Location",
        "ETag",
        "Last-Modified",
    ]
    .map(String::from)
    .to_vec()
}

/// The default bound of the in-process store.
const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// Headers that are never stored: per-connection, per-request, or a client's session.
const NEVER_REPLAYED: [&str; 12] = [
    "set-cookie",
    "set-cookie2",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "trailer",
    "upgrade",
    "content-length",
    "x-request-id",
    "idempotent-replayed",
    "idempotency-policy",
];

/// `on_store_error` for idempotency: deny by default; never decided in one process alone.
const ON_STORE_ERROR: OnStoreErrorRules = OnStoreErrorRules {
    default: OnStoreError::Deny,
    refused: &[(
        OnStoreError::Local,
        "a record kept by one instance would not stop a repeat that reaches another; use deny or allow",
    )],
};

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
const IDEMPOTENCY_POLICY: HeaderName = HeaderName::from_static("idempotency-policy");

#[derive(Debug)]
enum KeySource {
    /// A header; `structured` for `Idempotency-Key` (an sf-string).
    Header {
        name: HeaderName,
        structured: bool,
    },
    Body(Box<[Box<str>]>),
}

/// Counters of each outcome, resolved once.
#[derive(Debug)]
struct Outcomes {
    stored: IntCounter,
    replayed: IntCounter,
    conflict: IntCounter,
    mismatch: IntCounter,
    missing: IntCounter,
    invalid: IntCounter,
    released: IntCounter,
    unprotected: IntCounter,
    skipped: IntCounter,
}

impl Outcomes {
    fn new(m: &IdempotencyMetrics, policy: &str) -> Outcomes {
        let c = |o: &str| m.outcomes.with_label_values(&[policy, o]);
        Outcomes {
            stored: c("stored"),
            replayed: c("replayed"),
            conflict: c("conflict"),
            mismatch: c("mismatch"),
            missing: c("missing"),
            invalid: c("invalid"),
            released: c("released"),
            unprotected: c("unprotected"),
            skipped: c("skipped"),
        }
    }
}

/// The compiled `idempotency` policy.
#[derive(Debug)]
pub struct Idempotency {
    policy: Arc<str>,
    key: KeySource,
    required: bool,
    ttl_ms: u64,
    lease_ms: u64,
    on_upstream_error: OnUpstreamError,
    replay_headers: Box<[HeaderName]>,
    max_key_length: usize,
    advertise: Option<HeaderValue>,
    records: Records,
    /// What a failed claim does (with in-process records: only when they are full).
    on_store_error: OnStoreError,
    clock: Arc<dyn Clock>,
    metrics: IdempotencyMetrics,
    outcomes: Outcomes,
}

/// The key of this request, between the header phase and the body phase.
#[derive(Debug, Clone)]
struct KeyFromHeader {
    policy: Arc<str>,
    key: String,
}

/// This request's claim, until the exchange completes.
#[derive(Debug, Clone)]
struct Held {
    policy: Arc<str>,
    scoped: String,
    token: u64,
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What `idempotency` policies record.
#[derive(Debug, Clone)]
pub struct IdempotencyMetrics {
    /// `gateway_idempotency_total{policy,outcome}`.
    pub outcomes: IntCounterVec,
    /// `gateway_idempotency_store_errors_total{policy,kind}`.
    pub store_errors: IntCounterVec,
}

impl KindMetrics for IdempotencyMetrics {
    fn new(_: &SharedMetrics) -> Result<Self, prometheus::Error> {
        Ok(IdempotencyMetrics {
            outcomes: IntCounterVec::new(
                Opts::new(
                    "gateway_idempotency_total",
                    "Idempotency decisions, by policy and outcome.",
                ),
                &["policy", "outcome"],
            )?,
            store_errors: IntCounterVec::new(
                Opts::new(
                    "gateway_idempotency_store_errors_total",
                    "Idempotency store calls that failed, by policy and kind.",
                ),
                &["policy", "kind"],
            )?,
        })
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.outcomes.clone()))?;
        registry.register(Box::new(self.store_errors.clone()))
    }
}

impl PolicyKind for Idempotency {
    type Spec = IdempotencySpec;
    type Metrics = IdempotencyMetrics;

    /// Compiles the spec. The in-process records are taken over from the previous policy of
    /// the same name when it also kept them in this process, with the same bound.
    fn compile(spec: &IdempotencySpec, cx: &mut KindContext<'_, '_, Self>) -> Option<Idempotency> {
        let errors_before = cx.errors.len();
        let key = match &spec.key {
            KeySpec::Header(h) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(name) => {
                    let structured = name.as_str() == IDEMPOTENCY_KEY;
                    Some(KeySource::Header { name, structured })
                }
                Err(_) => {
                    cx.error("/key/header", format!("{h:?} is not a valid header name"));
                    None
                }
            },
            KeySpec::Body(pointers) => {
                if pointers.is_empty() || pointers.len() > 8 {
                    cx.error("/key/body", "a body key has 1 to 8 JSON pointers");
                }
                for (i, p) in pointers.iter().enumerate() {
                    if !p.starts_with('/') {
                        cx.error(
                            &format!("/key/body/{i}"),
                            format!("{p:?} is not a JSON pointer (it starts with '/')"),
                        );
                    }
                }
                Some(KeySource::Body(
                    pointers.iter().map(|p| p.as_str().into()).collect(),
                ))
            }
        };
        let ttl_ms = ms(spec.ttl.0);
        let lease_ms = ms(spec.lease.0);
        if ttl_ms == 0 {
            cx.error("/ttl", "ttl must be at least 1ms");
        }
        if lease_ms == 0 {
            cx.error("/lease", "lease must be at least 1ms");
        }
        if spec.max_key_length == 0 || spec.max_key_length > 1024 {
            cx.error("/max_key_length", "max_key_length must be from 1 to 1024");
        }
        let mut replay_headers = Vec::with_capacity(spec.replay_headers.len());
        for (i, h) in spec.replay_headers.iter().enumerate() {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(name) if NEVER_REPLAYED.contains(&name.as_str()) => cx.error(
                    &format!("/replay_headers/{i}"),
                    format!("{h} is never stored: it belongs to one response or connection"),
                ),
                Ok(name) => replay_headers.push(name),
                Err(_) => cx.error(
                    &format!("/replay_headers/{i}"),
                    format!("{h:?} is not a valid header name"),
                ),
            }
        }

        let choice = cx.store_choice(spec.store, spec.on_store_error, &ON_STORE_ERROR);
        let (records, on_store_error) = match choice {
            None => (None, ON_STORE_ERROR.default),
            Some(StoreChoice::Local) => {
                let max = spec.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES);
                if max == 0 {
                    cx.error("/max_entries", "max_entries must be at least 1");
                }
                let max = usize::try_from(max).unwrap_or(usize::MAX);
                cx.metrics
                    .store_errors
                    .with_label_values(&[&**cx.name, "full"]);
                let previous = match cx.previous.map(|p| &p.records) {
                    Some(Records::Local(s)) if s.max_entries() == max => Some(s.clone()),
                    _ => None,
                };
                let local = previous.unwrap_or_else(|| Arc::new(LocalRecords::new(max)));
                (Some(Records::Local(local)), ON_STORE_ERROR.default)
            }
            Some(StoreChoice::Redis { redis, on_error }) => {
                for kind in ["unavailable", "timeout", "error"] {
                    cx.metrics
                        .store_errors
                        .with_label_values(&[&**cx.name, kind]);
                }
                let records = Records::Redis(RedisRecords::new(redis, cx.name));
                (Some(records), on_error)
            }
        };
        if spec.store == StoreKind::Redis && spec.max_entries.is_some() {
            cx.error("/max_entries", "max_entries only applies with store: local");
        }
        let advertise = spec.advertise.then(|| {
            HeaderValue::try_from(format!(
                "ttl={}, lease={}",
                spec.ttl.0.as_secs(),
                spec.lease.0.as_secs().max(1)
            ))
        });
        if cx.errors.len() > errors_before {
            return None;
        }
        Some(Idempotency {
            policy: cx.name.clone(),
            key: key?,
            required: spec.required,
            ttl_ms,
            lease_ms,
            on_upstream_error: spec.on_upstream_error,
            replay_headers: replay_headers.into(),
            max_key_length: spec.max_key_length,
            advertise: advertise.and_then(|v| v.ok()),
            records: records?,
            on_store_error,
            clock: cx.clock.clone(),
            metrics: cx.metrics.clone(),
            outcomes: Outcomes::new(cx.metrics, cx.name),
        })
    }
}

impl Idempotency {
    fn now_ms(&self) -> u64 {
        ms(self.clock.unix_time())
    }

    fn missing(&self) -> Flow {
        self.outcomes.missing.inc();
        let what = match &self.key {
            KeySource::Header { name, .. } => format!("the {name} header"),
            KeySource::Body(p) => format!("the body values at {}", p.join(", ")),
        };
        Flow::Break(Reply::problem(
            Problem::new(
                StatusCode::BAD_REQUEST,
                "idempotency-key-missing",
                "Idempotency key missing",
            )
            .with_detail(format!("this route requires an idempotency key: {what}")),
            "key_missing",
        ))
    }

    fn invalid(&self, why: &str) -> Flow {
        self.outcomes.invalid.inc();
        Flow::Break(Reply::problem(
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-idempotency-key",
                "Invalid idempotency key",
            )
            .with_detail(why.to_owned()),
            "key_invalid",
        ))
    }

    /// The key in a header, or why it is not acceptable (`Ok(None)`: absent).
    fn header_key<'h>(
        &self,
        name: &HeaderName,
        structured: bool,
        req: &'h RequestView<'_>,
    ) -> Result<Option<std::borrow::Cow<'h, str>>, String> {
        let mut values = req.headers.get_all(name).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(format!("the {name} header must appear once"));
        }
        let key = if structured {
            parse_sf_string(value.as_bytes())
                .ok_or_else(|| format!("the {name} header must be a structured-field string such as \"8e03978e-40d5-43e8-bc93-6894a57f9324\""))?
        } else {
            let text = std::str::from_utf8(value.as_bytes().trim_ascii())
                .ok()
                .filter(|t| t.bytes().all(|b| (0x20..0x7f).contains(&b)))
                .ok_or_else(|| format!("the {name} header must be printable ASCII"))?;
            std::borrow::Cow::Borrowed(text)
        };
        if key.is_empty() {
            return Err(format!("the {name} header is empty"));
        }
        if key.len() > self.max_key_length {
            return Err(format!(
                "the {name} header is longer than {} characters",
                self.max_key_length
            ));
        }
        Ok(Some(key))
    }

    /// Stores (or releases) the claim once the exchange is over.
    async fn finish(&self, held: Held, done: &Completion<'_>) {
        let keep = match (done.forwarded, done.status, done.body) {
            (true, status @ 100.., Some(body)) => {
                let failed = status >= 500;
                (!failed || self.on_upstream_error == OnUpstreamError::Store)
                    .then_some((status, body))
            }
            _ => None,
        };
        let now = self.now_ms();
        let Some((status, body)) = keep else {
            match self.records.release(&held.scoped, held.token, now).await {
                Ok(_) => self.outcomes.released.inc(),
                // the lease frees the key in the end
                Err(e) => self.store_failed(&e),
            }
            return;
        };
        // Copied, not cloned: a value or body handed over may be a slice of a larger buffer
        // (Pingora parses response headers into slices of a 4 KiB read buffer), and a record
        // holding a slice keeps the whole buffer alive for its TTL.
        let mut headers: Vec<_> = match done.headers {
            Some(h) => self
                .replay_headers
                .iter()
                .flat_map(|name| h.get_all(name).iter().map(|v| (name.clone(), own(v))))
                .collect(),
            None => Vec::new(),
        };
        headers.shrink_to_fit();
        let record = Record {
            status,
            headers,
            body: Bytes::copy_from_slice(body),
        };
        let stored = self
            .records
            .complete(&held.scoped, held.token, record, now, self.ttl_ms)
            .await;
        match stored {
            Ok(true) => self.outcomes.stored.inc(),
            Ok(false) => tracing::warn!(
                policy = %self.policy,
                "an idempotent request completed after its lease ran out; its answer is not stored"
            ),
            Err(e) => self.store_failed(&e),
        }
    }

    fn store_failed(&self, e: &StoreError) {
        self.metrics
            .store_errors
            .with_label_values(&[&*self.policy, e.kind()])
            .inc();
        // a full in-process store is a flood's symptom: counted, not logged per request
        if *e != StoreError::Full {
            tracing::warn!(policy = %self.policy, error = %e, "idempotency store call failed");
        }
    }

    fn replay(&self, record: &Record) -> Flow {
        self.outcomes.replayed.inc();
        let mut headers = Vec::with_capacity(record.headers.len() + 1);
        headers.extend(record.headers.iter().cloned());
        headers.push((IDEMPOTENT_REPLAYED, HeaderValue::from_static("true")));
        Flow::Break(Reply {
            status: StatusCode::from_u16(record.status).unwrap_or(StatusCode::OK),
            headers,
            body: ReplyBody::Bytes {
                content_type: None,
                body: record.body.clone(),
            },
            reason: "replayed",
            policy: None,
        })
    }

    fn conflict(&self, remaining_ms: u64) -> Flow {
        self.outcomes.conflict.inc();
        let secs = remaining_ms.div_ceil(1000).max(1);
        Flow::Break(
            Reply::problem(
                Problem::new(
                    StatusCode::CONFLICT,
                    "idempotency-key-in-use",
                    "Idempotency key in use",
                )
                .with_detail(
                    "a request with this idempotency key is still being processed; retry later",
                ),
                "key_in_flight",
            )
            .with_header(http::header::RETRY_AFTER, HeaderValue::from(secs)),
        )
    }

    fn mismatch(&self) -> Flow {
        self.outcomes.mismatch.inc();
        Flow::Break(Reply::problem(
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
            )
            .with_detail("this idempotency key was used with a different request body"),
            "key_reused",
        ))
    }

    fn unavailable(&self) -> Flow {
        Flow::Break(
            Reply::problem(
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "idempotency-store-unavailable",
                    "Idempotency store unavailable",
                )
                .with_detail(
                    "the idempotency store cannot be reached, and this route refuses what it cannot protect",
                ),
                "store_unavailable",
            )
            .with_header(http::header::RETRY_AFTER, HeaderValue::from(1u32)),
        )
    }
}

/// A header value in an allocation of its own (see `finish`).
fn own(v: &HeaderValue) -> HeaderValue {
    match HeaderValue::from_bytes(v.as_bytes()) {
        Ok(mut owned) => {
            owned.set_sensitive(v.is_sensitive());
            owned
        }
        // a value the http crate would not have accepted from bytes (Pingora's parser admits
        // more): kept as it came rather than dropped
        Err(_) => v.clone(),
    }
}

/// Parses an RFC 8941 sf-string (`"..."`, printable ASCII, `\"` and `\\` escapes), or leniently
/// a bare value without quotes, spaces, commas or backslashes; `None` otherwise.
pub fn parse_sf_string(raw: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    let raw = raw.trim_ascii();
    let Some(inner) = raw.strip_prefix(b"\"") else {
        let bare = !raw.is_empty()
            && raw
                .iter()
                .all(|&b| (0x21..0x7f).contains(&b) && !matches!(b, b'"' | b',' | b'\\' | b';'));
        return bare
            .then(|| {
                std::str::from_utf8(raw)
                    .ok()
                    .map(std::borrow::Cow::Borrowed)
            })
            .flatten();
    };
    let inner = inner.strip_suffix(b"\"")?;
    if !inner.contains(&b'\\') {
        let ok = inner
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) && b != b'"');
        return ok
            .then(|| {
                std::str::from_utf8(inner)
                    .ok()
                    .map(std::borrow::Cow::Borrowed)
            })
            .flatten();
    }
    let mut out = String::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&e @ (b'"' | b'\\')) => out.push(char::from(e)),
                _ => return None,
            },
            b'"' => return None,
            0x20..0x7f => out.push(char::from(b)),
            _ => return None,
        }
    }
    Some(std::borrow::Cow::Owned(out))
}

/// How much canonical JSON is gathered before it is fed to the hash: feeding SHA-256 one token
/// at a time costs more in calls than the hashing itself.
const CHUNK: usize = 4096;

/// Canonical JSON on its way into a SHA-256, gathered in chunks.
struct CanonicalHasher {
    hash: Sha256,
    buf: Vec<u8>,
}

impl CanonicalHasher {
    /// Hands what is gathered to the hash once a chunk is full.
    fn spill(&mut self) {
        if self.buf.len() >= CHUNK {
            self.hash.update(&self.buf);
            self.buf.clear();
        }
    }

    fn finish(mut self) -> Fingerprint {
        self.hash.update(&self.buf);
        self.hash.finalize().into()
    }

    /// Writes `value` as canonical JSON: object members sorted by key, no whitespace, numbers
    /// and strings as serde_json writes them (numbers keep their text: `1.0` and `1` differ).
    fn write(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                self.buf.push(b'{');
                if maps_iterate_sorted() {
                    for (i, (k, v)) in map.iter().enumerate() {
                        self.member(i, k, v);
                    }
                } else {
                    let mut entries: Vec<_> = map.iter().collect();
                    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                    for (i, (k, v)) in entries.into_iter().enumerate() {
                        self.member(i, k, v);
                    }
                }
                self.buf.push(b'}');
            }
            Value::Array(items) => {
                self.buf.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b',');
                    }
                    self.write(v);
                }
                self.buf.push(b']');
            }
            Value::Null => self.buf.extend_from_slice(b"null"),
            Value::Bool(true) => self.buf.extend_from_slice(b"true"),
            Value::Bool(false) => self.buf.extend_from_slice(b"false"),
            Value::String(s) => json_text::write_str(&mut self.buf, s),
            Value::Number(n) => json_text::write_number(&mut self.buf, n),
        }
        self.spill();
    }

    fn member(&mut self, i: usize, k: &str, v: &Value) {
        if i > 0 {
            self.buf.push(b',');
        }
        json_text::write_str(&mut self.buf, k);
        self.buf.push(b':');
        self.write(v);
    }
}

/// Whether serde_json's maps iterate in key order: they do unless its `preserve_order`
/// feature is on somewhere in the build, which holds for every map alike, so one probe
/// answers for all of them (a check per map compared every pair of neighbouring keys).
fn maps_iterate_sorted() -> bool {
    static SORTED: OnceLock<bool> = OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut probe = serde_json::Map::new();
        probe.insert("b".into(), Value::Null);
        probe.insert("a".into(), Value::Null);
        probe.keys().next().is_some_and(|k| k == "a")
    })
}

/// The fingerprint of a body: its canonical JSON when it parsed, else its bytes (each domain
/// prefixed, so a document and raw bytes never share a fingerprint).
pub fn fingerprint(value: Option<&Value>, raw: &[u8]) -> Fingerprint {
    let mut hash = Sha256::new();
    match value {
        Some(v) => {
            hash.update(b"json\0");
            let mut w = CanonicalHasher {
                hash,
                buf: Vec::with_capacity(CHUNK + 256),
            };
            w.write(v);
            w.finish()
        }
        None => {
            hash.update(b"raw\0");
            hash.update(raw);
            hash.finalize().into()
        }
    }
}

/// The key made of the values at `pointers`; `None` when one is missing.
fn body_key(value: Option<&Value>, pointers: &[Box<str>]) -> Option<String> {
    let value = value?;
    let mut key = String::new();
    for (i, p) in pointers.iter().enumerate() {
        if i > 0 {
            key.push('|');
        }
        match value.pointer(p)? {
            Value::String(s) if !s.is_empty() => push_escaped(&mut key, s.as_bytes()),
            v @ (Value::Number(_) | Value::Bool(_)) => {
                push_escaped(&mut key, v.to_string().as_bytes());
            }
            _ => return None,
        }
    }
    Some(key)
}

/// Escapes a key part like rate-limit keys (`%XX` for `%`, `|`, `~`, braces and anything but
/// visible ASCII), so parts joined by `|` never meet and no part closes the hash tag.
fn push_escaped(out: &mut String, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value {
        if (0x21..=0x7e).contains(&b) && !matches!(b, b'%' | b'|' | b'~' | b'{' | b'}') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// `<channel>|<route>|<key>`, each escaped.
pub fn scoped_key(channel: Option<&str>, route: Option<&str>, key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 32);
    push_escaped(&mut out, channel.unwrap_or("~").as_bytes());
    out.push('|');
    push_escaped(&mut out, route.unwrap_or("~").as_bytes());
    out.push('|');
    out.push_str(key);
    out
}

impl Phases for Idempotency {
    const PHASES: u8 = crate::pipeline::phase::REQUEST
        | crate::pipeline::phase::REQUEST_BODY
        | crate::pipeline::phase::COMPLETE;

    fn needs_body(&self) -> bool {
        true
    }

    fn makes_repeats_safe(&self) -> bool {
        true
    }

    async fn on_request(&self, req: &RequestView<'_>, state: &mut ExchangeState) -> Flow {
        let KeySource::Header { name, structured } = &self.key else {
            return Flow::Continue(());
        };
        match self.header_key(name, *structured, req) {
            Ok(Some(key)) => {
                let mut escaped = String::with_capacity(key.len());
                push_escaped(&mut escaped, key.as_bytes());
                state.extensions.insert(KeyFromHeader {
                    policy: self.policy.clone(),
                    key: escaped,
                });
                Flow::Continue(())
            }
            Ok(None) if self.required => self.missing(),
            Ok(None) => {
                self.outcomes.skipped.inc();
                Flow::Continue(())
            }
            Err(why) => self.invalid(&why),
        }
    }

    async fn on_request_body(
        &self,
        _req: &RequestView<'_>,
        state: &mut ExchangeState,
        body: &mut Bytes,
    ) -> Flow {
        let header_key = match &self.key {
            KeySource::Header { .. } => match state.extensions.remove::<KeyFromHeader>() {
                Some(k) if Arc::ptr_eq(&k.policy, &self.policy) => Some(k.key),
                // no key (and not required): nothing to protect
                _ => return Flow::Continue(()),
            },
            KeySource::Body(_) => None,
        };
        // share the parse with the policies around this one: take it, give it back
        // one UTF-8 check of the whole body, so the parser need not check each string again (a
        // body that is not UTF-8 is not JSON either way)
        let parsed = ParsedBody::take(state, body).or_else(|| {
            std::str::from_utf8(body)
                .ok()
                .and_then(|text| transforms::json_text::parse_str(text).ok())
        });
        let value = parsed.as_ref();
        let key = match (&self.key, header_key) {
            (_, Some(k)) => Some(k),
            (KeySource::Body(pointers), None) => body_key(value, pointers),
            (KeySource::Header { .. }, None) => None,
        };
        let fp = fingerprint(value, body);
        // a parse of our own is handed on too, so a later `transform` does not parse again
        if let Some(v) = parsed {
            state.extensions.insert(ParsedBody::new(body, v));
        }
        let Some(key) = key else {
            if self.required {
                return self.missing();
            }
            self.outcomes.skipped.inc();
            return Flow::Continue(());
        };
        if let Some(v) = &self.advertise {
            state.response_headers.insert(IDEMPOTENCY_POLICY, v.clone());
        }
        let scoped = scoped_key(
            state.channel.as_ref().map(|c| &*c.name),
            state.route.as_deref(),
            &key,
        );
        let token = rand::random::<u64>() | 1;
        let now = self.now_ms();
        let claim = self
            .records
            .claim(&scoped, &fp, token, now, self.lease_ms)
            .await;
        match claim {
            Ok(Claim::Claimed) => {
                state.extensions.insert(Held {
                    policy: self.policy.clone(),
                    scoped,
                    token,
                });
                Flow::Continue(())
            }
            Ok(Claim::InFlight { fingerprint, .. }) | Ok(Claim::Done { fingerprint, .. })
                if fingerprint != fp =>
            {
                self.mismatch()
            }
            Ok(Claim::InFlight { remaining_ms, .. }) => self.conflict(remaining_ms),
            Ok(Claim::Done { record, .. }) => self.replay(&record),
            Err(e) => {
                self.store_failed(&e);
                match self.on_store_error {
                    OnStoreError::Allow => {
                        self.outcomes.unprotected.inc();
                        Flow::Continue(())
                    }
                    // `local` is refused at compile time
                    OnStoreError::Deny | OnStoreError::Local => self.unavailable(),
                }
            }
        }
    }

    async fn on_complete(&self, done: &Completion<'_>, state: &mut ExchangeState) {
        let ours = state
            .extensions
            .get::<Held>()
            .is_some_and(|h| Arc::ptr_eq(&h.policy, &self.policy));
        if !ours {
            return;
        }
        if let Some(held) = state.extensions.remove::<Held>() {
            self.finish(held, done).await;
        }
    }
}

#[cfg(test)]
mod tests;
