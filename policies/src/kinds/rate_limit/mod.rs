//! `rate_limit`: GCRA limits (a rate with a burst, a daily quota...) per key (channel, account,
//! client, route, header, path parameter), decided in this process or cluster-wide on Redis,
//! with a configured behaviour when Redis fails, and the IETF `RateLimit` headers.
//!
//! One policy holds every limit that shares a key: they are decided together (all admit, or
//! the request is refused and spends nothing) in one step, which on Redis is one script call.
//! Limits that need different keys go in separate policies listed on the same route; their
//! headers are merged into one list. List the policy after authentication, so a forged token
//! never spends a channel's quota.
//!
//! The counters live in `state::rate_limit` (in process or on Redis, one interface). The GCRA
//! is this project's own (`state/rate_limit/gcra.rs`, 60 lines) rather than `governor`: the
//! `RateLimit` header's `t` needs the theoretical arrival time, which governor keeps private
//! (`StateSnapshot::tat` is crate-only, a refusal only yields the earliest retry time); and
//! the Redis script must make the very same decisions, which is checked by running one
//! integer algorithm in both and comparing them request by request.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use prometheus::{Gauge, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{KindContext, PolicyKind};
use crate::clock::Clock;
use crate::metrics::{KindMetrics, SharedMetrics};
use crate::pipeline::{ExchangeState, Flow, Identity, Phases, RequestView};
use crate::problem::{Problem, Reply};
use crate::state::rate_limit::{
    CounterStore, Counters, Decision, Gcra, LocalCounters, MAX_LIMITS, RedisCounters,
};
use crate::state::{OnStoreError, OnStoreErrorRules, StoreChoice, StoreError, StoreKind};
use crate::units::DurationSpec;

/// Settings of a `rate_limit` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// The limits, decided together for each key: a request passes only when every one admits
    /// it, and a refused request spends nothing from any. Typically a rate with a burst and a
    /// daily quota. At most 8. Limits that need different keys go in separate policies.
    #[schemars(length(min = 1, max = 8))]
    pub limits: Vec<LimitSpec>,
    /// What the limits count per: parts combined into one key, from `channel`, `route`,
    /// `subject` (the authenticated account), `client_id` (the authenticated OAuth client),
    /// `{claim: <name>}` (another claim of the token), `{header: <name>}` and
    /// `{param: <name>}` (a path parameter). Empty: one count for every request on the
    /// policy's routes. A part the request lacks (no authenticated identity, no such header)
    /// counts as "anonymous", shared by every request that lacks it.
    #[serde(default)]
    pub key: Vec<KeyPartSpec>,
    /// Apply only to requests of these channels (names from the file's `channels`); others
    /// pass untouched and get no headers from this policy. Absent: every request. One shared
    /// route such as `/channels/{channel}/orders` can so list one policy per channel, each
    /// shaped like that marketplace's own limits.
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// Units each request costs, unless `cost_header` states another cost.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub cost: u64,
    /// A request header in which a batch endpoint's caller states the request's cost (for
    /// example `X-Batch-Size`): one integer from 1 to `max_cost`, anything else is answered
    /// 400. A request without it costs `cost`.
    #[serde(default)]
    pub cost_header: Option<String>,
    /// The largest cost `cost_header` may state. Required with `cost_header`; at most the
    /// smallest `burst`, since a larger request could never pass.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_cost: Option<u64>,
    /// Where the counts live: `local` (in this process, the default) or `redis` (shared by
    /// every gateway instance, through the file's `redis` section; one round trip per request).
    #[serde(default)]
    pub store: StoreKind,
    /// With `store: redis`, how requests are decided while Redis is unreachable or slower than
    /// its timeout: `local` (the default: by an in-process limit of `limit / instances`),
    /// `allow` (every request passes; `pass` is its older name) or `deny` (every request is
    /// answered 503). Redis is retried in the background of the traffic, and the limit goes
    /// back to it by itself.
    #[serde(default)]
    pub on_store_error: Option<OnStoreError>,
    /// With `on_store_error: local`, how many gateway instances share the limit: each then
    /// admits `rate / instances` with a burst of `burst / instances` (at least 1) on its own.
    /// Default 1.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1024))]
    pub instances: Option<u32>,
    /// The response headers describing the limits, on every response of the policy's routes:
    /// `ietf` (the default: `RateLimit-Policy` and `RateLimit` of the current IETF draft),
    /// `legacy` (`X-RateLimit-Limit`, `-Remaining`, `-Reset` of the tightest limit, for older
    /// clients) or `none`.
    #[serde(default)]
    pub headers: HeaderStyle,
}

fn one() -> u64 {
    1
}

/// One limit: `rate` units per `per`, with a bucket of `burst` units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Its name in the `RateLimit` headers and in 429 answers, e.g. `per_second` or `daily`:
    /// letters, digits, `_`, `-`, `.`; unique within the policy.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$"))]
    pub name: String,
    /// Units that replenish per `per`.
    #[schemars(range(min = 1))]
    pub rate: u64,
    /// The period `rate` is counted over, e.g. `1s`, `1m`, `1d`.
    pub per: DurationSpec,
    /// The most units admitted at once, from a full bucket. Default: `rate` (so `rate: 1000,
    /// per: 1d` is a daily quota of 1000 that refills gradually). Headers show the limit as
    /// `q = burst` units per `w` = the seconds a full bucket takes to refill.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub burst: Option<u64>,
}

/// A part of a rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyPartSpec {
    /// The request's channel.
    Channel,
    /// The route that took the request.
    Route,
    /// The authenticated account (the token's subject).
    Subject,
    /// The authenticated OAuth client.
    ClientId,
    /// A claim of the authenticated token, by name.
    Claim(String),
    /// A request header, by name.
    Header(String),
    /// A path parameter of the route, by name.
    Param(String),
}

/// Which rate-limit headers responses carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HeaderStyle {
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    #[default]
    Ietf,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (seconds).
    Legacy,
    /// None.
    None,
}

/// `on_store_error` for rate limits: every value is honoured; the default decides locally.
const ON_STORE_ERROR: OnStoreErrorRules = OnStoreErrorRules {
    default: OnStoreError::Local,
    refused: &[],
};

/// While Redis is failing, at most one decision per this many µs tries it again, so a dead or
/// stalled Redis costs one timeout per interval instead of one per request.
const PROBE_INTERVAL_US: u64 = 250_000;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

#[derive(Debug)]
enum KeyPart {
    Channel,
    Route,
    Subject,
    ClientId,
    Claim(Box<str>),
    Header(HeaderName),
    Param(Box<str>),
}

/// A set of limits as enforced, with its precomputed `RateLimit-Policy` value.
#[derive(Debug)]
struct Limits {
    gcra: Box<[Gcra]>,
    policy_header: HeaderValue,
}

/// Whether the shared store is being bypassed, kept across reloads of the policy.
#[derive(Debug, Default)]
struct Health {
    degraded: AtomicBool,
    next_probe_us: AtomicU64,
}

/// What decides while the counters fail (`on_store_error`).
#[derive(Debug)]
enum Fallback {
    Allow,
    Deny,
    /// In-process counters at the limit divided by `instances`, and their headers.
    Local(Arc<LocalCounters>, Limits),
}

/// The counters `store` chose, and what stands in for them while they fail (counters in this
/// process never fail, and have no fallback).
#[derive(Debug)]
struct Store {
    counters: Counters,
    fallback: Option<Fallback>,
    health: Arc<Health>,
}

/// The compiled `rate_limit` policy.
#[derive(Debug)]
pub struct RateLimit {
    policy: Arc<str>,
    spec: RateLimitSpec,
    /// Indices of the channels it applies to; `None`: all requests.
    only: Option<Box<[usize]>>,
    key: Box<[KeyPart]>,
    cost: u64,
    cost_header: Option<(HeaderName, u64)>,
    names: Box<[Box<str>]>,
    limits: Limits,
    headers: HeaderStyle,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: RateLimitMetrics,
    /// `gateway_ratelimit_headroom_ratio{policy,channel}` by channel index + 1 (0: no
    /// channel), resolved on first use so the request path never hashes labels and a channel
    /// the policy never decided for shows no series.
    headroom: Box<[OnceLock<Gauge>]>,
}

/// The channel label of headroom for requests without a channel.
const NO_CHANNEL: &str = "none";

fn is_limit_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn describe(names: &[Box<str>], gcra: &[Gcra]) -> Limits {
    let mut text = String::new();
    for (name, g) in names.iter().zip(gcra) {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str(&format!("\"{name}\";q={};w={}", g.burst, g.window_secs()));
    }
    Limits {
        gcra: gcra.into(),
        // names are checked to be plain tokens, so the value is always valid
        policy_header: HeaderValue::from_str(&text)
            .unwrap_or_else(|_| HeaderValue::from_static("")),
    }
}

/// What `rate_limit` policies record about their shared store.
#[derive(Debug, Clone)]
pub struct RateLimitMetrics {
    /// `gateway_ratelimit_store_errors_total{policy,kind}`.
    pub store_errors: IntCounterVec,
    /// `gateway_ratelimit_degraded{policy}`: 1 while a limit decides with its fallback.
    pub degraded: IntGaugeVec,
    /// `gateway_ratelimit_headroom_ratio{policy,channel}`: remaining / capacity of the
    /// tightest limit at the policy's last decision for that channel (0..1).
    pub headroom: GaugeVec,
}

impl KindMetrics for RateLimitMetrics {
    fn new(_: &SharedMetrics) -> Result<Self, prometheus::Error> {
        Ok(RateLimitMetrics {
            store_errors: IntCounterVec::new(
                Opts::new(
                    "gateway_ratelimit_store_errors_total",
                    "Rate-limit decisions the shared store could not make, by policy and kind.",
                ),
                &["policy", "kind"],
            )?,
            degraded: IntGaugeVec::new(
                Opts::new(
                    "gateway_ratelimit_degraded",
                    "1 while a rate limit runs on its store-failure behaviour instead of the shared store.",
                ),
                &["policy"],
            )?,
            headroom: GaugeVec::new(
                Opts::new(
                    "gateway_ratelimit_headroom_ratio",
                    "Units left over capacity of the tightest limit at a rate limit's last decision, by policy and channel (0..1).",
                ),
                &["policy", "channel"],
            )?,
        })
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.store_errors.clone()))?;
        registry.register(Box::new(self.degraded.clone()))?;
        registry.register(Box::new(self.headroom.clone()))
    }
}

impl PolicyKind for RateLimit {
    type Spec = RateLimitSpec;
    type Metrics = RateLimitMetrics;

    /// Compiles the spec. State (the buckets) is taken over from the previous policy of the
    /// same name when its key and limits did not change.
    fn compile(spec: &RateLimitSpec, cx: &mut KindContext<'_, '_, Self>) -> Option<RateLimit> {
        let errors_before = cx.errors.len();
        let prev = cx.previous.filter(|p| p.spec.key == spec.key);

        if spec.limits.is_empty() || spec.limits.len() > MAX_LIMITS {
            cx.error(
                "/limits",
                format!("a rate_limit policy has 1 to {MAX_LIMITS} limits"),
            );
        }
        let mut names: Vec<Box<str>> = Vec::with_capacity(spec.limits.len());
        let mut gcras = Vec::with_capacity(spec.limits.len());
        for (i, l) in spec.limits.iter().enumerate() {
            if !is_limit_name(&l.name) {
                cx.error(
                    &format!("/limits/{i}/name"),
                    format!(
                        "limit name {:?} may only use letters, digits, '_', '-', '.'",
                        l.name
                    ),
                );
            } else if names.iter().any(|n| **n == *l.name) {
                cx.error(
                    &format!("/limits/{i}/name"),
                    format!("limit name {:?} is used twice in this policy", l.name),
                );
            }
            names.push(l.name.as_str().into());
            let per_us = u64::try_from(l.per.0.as_micros()).unwrap_or(u64::MAX);
            match Gcra::new(l.rate, per_us, l.burst.unwrap_or(l.rate)) {
                Ok(g) => gcras.push(g),
                Err(msg) => cx.error(&format!("/limits/{i}"), msg),
            }
        }
        let smallest_burst = gcras.iter().map(|g| g.burst).min().unwrap_or(u64::MAX);

        let only = spec.channels.as_ref().map(|names| {
            let mut only = Vec::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                match cx.channels.get(name) {
                    Some(c) => only.push(c.index),
                    None => {
                        let known = cx.channels.names().join(", ");
                        cx.error(
                            &format!("/channels/{i}"),
                            format!("channel {name:?} is not declared (declared: {known})"),
                        );
                    }
                }
            }
            only.into_boxed_slice()
        });

        let mut key = Vec::with_capacity(spec.key.len());
        for (i, part) in spec.key.iter().enumerate() {
            key.push(match part {
                KeyPartSpec::Channel => KeyPart::Channel,
                KeyPartSpec::Route => KeyPart::Route,
                KeyPartSpec::Subject => KeyPart::Subject,
                KeyPartSpec::ClientId => KeyPart::ClientId,
                KeyPartSpec::Claim(c) | KeyPartSpec::Param(c) if c.is_empty() => {
                    cx.error(&format!("/key/{i}"), "the name must not be empty");
                    continue;
                }
                KeyPartSpec::Claim(c) => KeyPart::Claim(c.as_str().into()),
                KeyPartSpec::Param(p) => KeyPart::Param(p.as_str().into()),
                KeyPartSpec::Header(h) => match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(h) => KeyPart::Header(h),
                    Err(_) => {
                        cx.error(
                            &format!("/key/{i}/header"),
                            format!("{h:?} is not a valid header name"),
                        );
                        continue;
                    }
                },
            });
        }

        if spec.cost == 0 || spec.cost > smallest_burst {
            cx.error(
                "/cost",
                format!(
                    "cost must be from 1 to the smallest burst ({smallest_burst}); a larger request could never pass"
                ),
            );
        }
        let cost_header = match (&spec.cost_header, spec.max_cost) {
            (None, None) => None,
            (Some(_), None) => {
                cx.error(
                    "/cost_header",
                    "cost_header needs max_cost, its upper bound",
                );
                None
            }
            (None, Some(_)) => {
                cx.error("/max_cost", "max_cost only applies with cost_header");
                None
            }
            (Some(h), Some(max)) => {
                if max == 0 || max > smallest_burst {
                    cx.error(
                        "/max_cost",
                        format!(
                            "max_cost must be from 1 to the smallest burst ({smallest_burst}); a larger request could never pass"
                        ),
                    );
                }
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(name) => Some((name, max)),
                    Err(_) => {
                        cx.error("/cost_header", format!("{h:?} is not a valid header name"));
                        None
                    }
                }
            }
        };

        let limits = describe(&names, &gcras);
        if spec.instances.is_some() {
            match (
                spec.store,
                spec.on_store_error.unwrap_or(ON_STORE_ERROR.default),
            ) {
                (StoreKind::Local, _) => {
                    cx.error("/instances", "instances only applies with store: redis")
                }
                (StoreKind::Redis, OnStoreError::Local) => {}
                (StoreKind::Redis, _) => cx.error(
                    "/instances",
                    "instances only applies with on_store_error: local",
                ),
            }
        }
        let store = match cx.store_choice(spec.store, spec.on_store_error, &ON_STORE_ERROR)? {
            StoreChoice::Local => {
                let local = reuse(prev, &gcras, |p| match &p.store.counters {
                    Counters::Local(s) => Some(s),
                    Counters::Redis(_) => None,
                });
                Store {
                    counters: Counters::Local(local),
                    fallback: None,
                    health: Arc::default(),
                }
            }
            StoreChoice::Redis { redis, on_error } => {
                let instances = spec.instances.unwrap_or(1);
                if instances == 0 {
                    cx.error("/instances", "instances must be at least 1");
                }
                let fallback = match on_error {
                    OnStoreError::Allow => Fallback::Allow,
                    OnStoreError::Deny => Fallback::Deny,
                    OnStoreError::Local => {
                        let mut divided = Vec::with_capacity(gcras.len());
                        for g in &gcras {
                            match g.divided(u64::from(instances)) {
                                Ok(d) => divided.push(d),
                                Err(msg) => cx.error("/instances", msg),
                            }
                        }
                        let local = reuse(prev, &divided, |p| match &p.store.fallback {
                            Some(Fallback::Local(s, _)) => Some(s),
                            _ => None,
                        });
                        Fallback::Local(local, describe(&names, &divided))
                    }
                };
                let health = match cx.previous {
                    Some(p) if matches!(p.store.counters, Counters::Redis(_)) => {
                        p.store.health.clone()
                    }
                    _ => Arc::default(),
                };
                let m = cx.metrics;
                for kind in ["unavailable", "timeout", "error"] {
                    m.store_errors.with_label_values(&[&**cx.name, kind]);
                }
                m.degraded.with_label_values(&[&**cx.name]);
                Store {
                    counters: Counters::Redis(RedisCounters::new(redis, cx.name, &gcras, &names)),
                    fallback: Some(fallback),
                    health,
                }
            }
        };
        if cx.errors.len() > errors_before {
            return None;
        }
        Some(RateLimit {
            policy: cx.name.clone(),
            spec: spec.clone(),
            only,
            key: key.into(),
            cost: spec.cost,
            cost_header,
            names: names.into(),
            limits,
            headers: spec.headers,
            store,
            clock: cx.clock.clone(),
            metrics: cx.metrics.clone(),
            headroom: (0..=cx.channels.names().len())
                .map(|_| OnceLock::new())
                .collect(),
        })
    }
}

impl RateLimit {
    fn now_us(&self) -> u64 {
        u64::try_from(self.clock.monotonic().as_micros()).unwrap_or(u64::MAX)
    }

    /// The request's cost; `None` for a bad cost header.
    fn cost_of(&self, req: &RequestView<'_>) -> Option<u64> {
        let Some((name, max)) = &self.cost_header else {
            return Some(self.cost);
        };
        let mut values = req.headers.get_all(name).iter();
        let Some(value) = values.next() else {
            return Some(self.cost);
        };
        let digits = value.as_bytes().trim_ascii();
        let parsed = if values.next().is_none()
            && !digits.is_empty()
            && digits.len() <= 19
            && digits.iter().all(u8::is_ascii_digit)
        {
            digits
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
        } else {
            0
        };
        (1..=*max).contains(&parsed).then_some(parsed)
    }

    /// The 400 answer to a bad cost header.
    fn bad_cost(&self) -> Flow {
        let (name, max) = match &self.cost_header {
            Some((name, max)) => (name.as_str(), *max),
            None => ("cost", self.cost),
        };
        Flow::Break(Reply::problem(
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-request-cost",
                "Invalid request cost",
            )
            .with_detail(format!(
                "the {name} header must be one integer from 1 to {max}"
            )),
            "bad_cost",
        ))
    }

    /// The key of the request's bucket: each part escaped (`%XX` for `%`, `|`, `~`, braces
    /// and anything but visible ASCII) so distinct values never meet, joined by `|`; an
    /// absent part is `~anonymous`.
    fn partition(&self, req: &RequestView<'_>, state: &ExchangeState) -> String {
        let identity = state.extensions.get::<Identity>();
        let mut key = String::with_capacity(16 * self.key.len());
        let mut number: String;
        for (i, part) in self.key.iter().enumerate() {
            if i > 0 {
                key.push('|');
            }
            let value: Option<&[u8]> = match part {
                KeyPart::Channel => state.channel.as_ref().map(|c| c.name.as_bytes()),
                KeyPart::Route => state.route.as_deref().map(str::as_bytes),
                KeyPart::Subject => identity
                    .and_then(|i| i.subject.as_deref())
                    .map(str::as_bytes),
                KeyPart::ClientId => identity
                    .and_then(|i| i.client_id.as_deref())
                    .map(str::as_bytes),
                KeyPart::Claim(c) => match identity.and_then(|i| i.claims.get(&**c)) {
                    Some(serde_json::Value::String(s)) => Some(s.as_bytes()),
                    Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                        number = v.to_string();
                        Some(number.as_bytes())
                    }
                    _ => None,
                },
                KeyPart::Header(h) => req.headers.get(h).map(HeaderValue::as_bytes),
                KeyPart::Param(p) => req.params.get(p).map(str::as_bytes),
            };
            push_part(&mut key, value);
        }
        key
    }

    /// Records the answer of the primary store in the health state.
    fn store_ok(&self, health: &Health) {
        if health.degraded.load(Ordering::Relaxed) && health.degraded.swap(false, Ordering::AcqRel)
        {
            self.metrics
                .degraded
                .with_label_values(&[&*self.policy])
                .set(0);
            tracing::info!(
                policy = %self.policy,
                "rate limit store recovered; deciding on redis again"
            );
        }
    }

    fn store_failed(&self, health: &Health, error: &StoreError, now: u64) {
        self.metrics
            .store_errors
            .with_label_values(&[&*self.policy, error.kind()])
            .inc();
        health
            .next_probe_us
            .store(now + PROBE_INTERVAL_US, Ordering::Relaxed);
        if !health.degraded.swap(true, Ordering::AcqRel) {
            self.metrics
                .degraded
                .with_label_values(&[&*self.policy])
                .set(1);
            let fallback = match &self.store.fallback {
                Some(Fallback::Allow) => "allow",
                Some(Fallback::Deny) => "deny",
                Some(Fallback::Local(..)) => "local",
                None => "-",
            };
            tracing::warn!(
                policy = %self.policy,
                error = %error,
                fallback,
                "rate limit store failing; deciding with the fallback"
            );
        }
    }

    /// Whether this decision should try the shared store: always while healthy, once per
    /// probe interval while degraded.
    fn should_try(health: &Health, now: u64) -> bool {
        if !health.degraded.load(Ordering::Relaxed) {
            return true;
        }
        let next = health.next_probe_us.load(Ordering::Relaxed);
        now >= next
            && health
                .next_probe_us
                .compare_exchange(
                    next,
                    now + PROBE_INTERVAL_US,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn set_headers(&self, state: &mut ExchangeState, limits: &Limits, d: Option<&Decision>) {
        let h = &mut state.response_headers;
        match self.headers {
            HeaderStyle::None => {}
            HeaderStyle::Ietf => {
                append_list(h, RATELIMIT_POLICY, limits.policy_header.clone());
                if let Some(d) = d {
                    let mut text = String::with_capacity(32 * d.limits().len());
                    for (name, o) in self.names.iter().zip(d.limits()) {
                        if !text.is_empty() {
                            text.push_str(", ");
                        }
                        // writing to a String cannot fail
                        let _ = write!(text, "\"{name}\";r={};t={}", o.remaining, o.reset_secs());
                    }
                    if let Ok(v) = HeaderValue::try_from(text) {
                        append_list(h, RATELIMIT, v);
                    }
                }
            }
            HeaderStyle::Legacy => {
                let Some(d) = d else { return };
                // the tightest limit: fewest units left, then the longest wait for a full bucket
                let Some((g, o)) = limits
                    .gcra
                    .iter()
                    .zip(d.limits())
                    .min_by_key(|(_, o)| (o.remaining, u64::MAX - o.reset_us))
                else {
                    return;
                };
                let earlier = h
                    .get(&X_REMAINING)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if earlier.is_some_and(|r| r <= o.remaining) {
                    return;
                }
                h.insert(X_LIMIT, HeaderValue::from(g.burst));
                h.insert(X_REMAINING, HeaderValue::from(o.remaining));
                h.insert(X_RESET, HeaderValue::from(o.reset_secs()));
            }
        }
    }

    /// Records the headroom of this decision: the smallest `remaining / burst` of its limits.
    fn record_headroom(&self, state: &ExchangeState, limits: &Limits, d: &Decision) {
        let ratio = limits
            .gcra
            .iter()
            .zip(d.limits())
            .filter(|(g, _)| g.burst > 0)
            .map(|(g, o)| (o.remaining.min(g.burst) as f64) / (g.burst as f64))
            .fold(1.0_f64, f64::min);
        let (slot, channel) = match &state.channel {
            Some(c) => (c.index + 1, &*c.name),
            None => (0, NO_CHANNEL),
        };
        if let Some(cell) = self.headroom.get(slot) {
            cell.get_or_init(|| {
                self.metrics
                    .headroom
                    .with_label_values(&[&*self.policy, channel])
            })
            .set(ratio);
        }
    }

    fn refuse(&self, d: &Decision) -> Flow {
        let secs = d.retry_after_secs();
        let exhausted: Vec<&str> = self
            .names
            .iter()
            .zip(d.limits())
            .filter(|(_, o)| o.retry_us > 0)
            .map(|(n, _)| &**n)
            .collect();
        let problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota-exceeded",
            "Quota exceeded",
        )
        .with_detail(format!(
            "the {} limit of this route is used up; retry in {secs} s",
            exhausted.join(" and ")
        ))
        .with_extension("limits", exhausted);
        Flow::Break(
            Reply::problem(problem, "quota_exceeded")
                .with_header(http::header::RETRY_AFTER, HeaderValue::from(secs)),
        )
    }
}

/// A previous policy's in-process counters, when they enforced exactly these limits (same key
/// checked by the caller); otherwise new ones.
fn reuse(
    prev: Option<&RateLimit>,
    limits: &[Gcra],
    which: impl Fn(&RateLimit) -> Option<&Arc<LocalCounters>>,
) -> Arc<LocalCounters> {
    prev.and_then(which)
        .filter(|s| s.limits() == limits)
        .cloned()
        .unwrap_or_else(|| Arc::new(LocalCounters::new(limits)))
}

fn push_part(key: &mut String, value: Option<&[u8]>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let Some(value) = value else {
        key.push_str("~anonymous");
        return;
    };
    for &b in value {
        if (0x21..=0x7e).contains(&b) && !matches!(b, b'%' | b'|' | b'~' | b'{' | b'}') {
            key.push(char::from(b));
        } else {
            key.push('%');
            key.push(char::from(HEX[usize::from(b >> 4)]));
            key.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// Adds `value` to a list-valued header (several rate-limit policies on one route each add
/// their limits to the same field).
fn append_list(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    let combined = match headers.get(&name) {
        Some(old) => {
            let mut v = Vec::with_capacity(old.len() + 2 + value.len());
            v.extend_from_slice(old.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(value.as_bytes());
            match HeaderValue::from_maybe_shared(bytes::Bytes::from(v)) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
        None => value,
    };
    headers.insert(name, combined);
}

impl Phases for RateLimit {
    const PHASES: u8 = crate::pipeline::phase::REQUEST;

    fn guards_reads(&self) -> bool {
        true
    }

    async fn on_request(&self, req: &RequestView<'_>, state: &mut ExchangeState) -> Flow {
        if let Some(only) = &self.only {
            let applies = state
                .channel
                .as_ref()
                .is_some_and(|c| only.contains(&c.index));
            if !applies {
                return Flow::Continue(());
            }
        }
        let Some(cost) = self.cost_of(req) else {
            return self.bad_cost();
        };
        let partition = self.partition(req, state);
        let store = &self.store;
        let now = self.now_us();
        let mut decided = None;
        if Self::should_try(&store.health, now) {
            match store.counters.decide(&partition, cost, now).await {
                Ok(d) => {
                    self.store_ok(&store.health);
                    decided = Some(d);
                }
                Err(e) => self.store_failed(&store.health, &e, now),
            }
        }
        let (decision, limits) = match (decided, &store.fallback) {
            (Some(d), _) => (d, &self.limits),
            (None, Some(Fallback::Local(local, limits))) => {
                (local.decide(&partition, now, cost), limits)
            }
            (None, Some(Fallback::Allow) | None) => {
                self.set_headers(state, &self.limits, None);
                return Flow::Continue(());
            }
            (None, Some(Fallback::Deny)) => {
                self.set_headers(state, &self.limits, None);
                let problem = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporary-reduced-capacity",
                    "Temporarily reduced capacity",
                )
                .with_detail(
                    "the rate-limit store is unavailable, and this route refuses what it cannot count",
                );
                return Flow::Break(
                    Reply::problem(problem, "store_unavailable")
                        .with_header(http::header::RETRY_AFTER, HeaderValue::from(1u32)),
                );
            }
        };
        self.set_headers(state, limits, Some(&decision));
        self.record_headroom(state, limits, &decision);
        if decision.allowed {
            Flow::Continue(())
        } else {
            self.refuse(&decision)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use http::HeaderMap;

    use super::*;
    use crate::clock::ManualClock;
    use crate::compile::compile_str;
    use crate::env::CompileEnv;
    use crate::kinds::{Policy, PolicyMetrics};
    use crate::model::PolicySet;
    use crate::pipeline::Channel;
    use crate::route::PathParams;

    struct Harness {
        clock: Arc<ManualClock>,
        env: CompileEnv,
    }

    fn harness() -> Harness {
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_000)));
        let env = CompileEnv {
            clock: clock.clone(),
            metrics: Arc::new(PolicyMetrics::default()),
            ..CompileEnv::default()
        };
        Harness { clock, env }
    }

    fn file(policies: &str, redis: &str) -> String {
        format!(
            "version: 1\nchannels: {{amazon: {{}}, shopify: {{}}}}\n{redis}upstreams:\n  erp: {{endpoints: [\"127.0.0.1:9\"]}}\npolicies:\n{policies}routes: []\n"
        )
    }

    impl Harness {
        fn compile(&self, policies: &str, previous: Option<&PolicySet>) -> PolicySet {
            self.compile_with(policies, "", previous)
        }

        fn compile_with(
            &self,
            policies: &str,
            redis: &str,
            previous: Option<&PolicySet>,
        ) -> PolicySet {
            compile_str(
                Path::new("p.yaml"),
                &file(policies, redis),
                &self.env,
                previous,
            )
            .unwrap_or_else(|e| panic!("{e}"))
        }

        fn errors(&self, policies: &str) -> Vec<String> {
            match compile_str(Path::new("p.yaml"), &file(policies, ""), &self.env, None) {
                Ok(_) => Vec::new(),
                Err(e) => e.0.iter().map(ToString::to_string).collect(),
            }
        }

        fn metric(&self, which: &str, labels: &[&str]) -> i64 {
            let m = &self.env.metrics;
            match which {
                "errors" => m.rate_limit.store_errors.with_label_values(labels).get() as i64,
                _ => m.rate_limit.degraded.with_label_values(labels).get(),
            }
        }
    }

    fn rate_limit<'a>(set: &'a PolicySet, name: &str) -> &'a RateLimit {
        match &set.policies[name].policy {
            Policy::RateLimit(p) => p,
            other => panic!("not a rate limit: {other:?}"),
        }
    }

    /// A request's answer: its status (200 = admitted), response headers and Retry-After.
    #[derive(Debug)]
    struct Answer {
        status: u16,
        headers: HeaderMap,
        retry_after: Option<String>,
        detail: Option<String>,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }
    }

    struct Req<'a> {
        channel: &'a str,
        headers: &'a [(&'a str, &'a str)],
        identity: Option<Identity>,
        params: &'a [(&'a str, &'a str)],
    }

    const AMAZON: Req<'static> = Req {
        channel: "amazon",
        headers: &[],
        identity: None,
        params: &[],
    };

    fn state_for(r: &Req<'_>) -> ExchangeState {
        let mut state = ExchangeState {
            // the file's channels, in name order
            channel: Some(Channel {
                index: usize::from(r.channel == "shopify"),
                name: r.channel.into(),
            }),
            route: Some("orders".into()),
            ..ExchangeState::default()
        };
        if let Some(id) = &r.identity {
            state.extensions.insert(id.clone());
        }
        state
    }

    async fn send_into(p: &RateLimit, r: &Req<'_>, state: &mut ExchangeState) -> Answer {
        let mut headers = HeaderMap::new();
        for (k, v) in r.headers {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let params = PathParams::from_pairs(r.params);
        let view = RequestView {
            method: &http::Method::POST,
            path: "/channels/amazon/orders",
            query: None,
            headers: &headers,
            params: &params,
        };
        let flow = p.on_request(&view, state).await;
        let (status, retry_after, detail) = match flow {
            Flow::Continue(()) => (200, None, None),
            Flow::Break(reply) => {
                let retry = reply
                    .headers
                    .iter()
                    .find(|(n, _)| n == http::header::RETRY_AFTER)
                    .map(|(_, v)| v.to_str().unwrap().to_owned());
                let detail = match &reply.body {
                    crate::problem::ReplyBody::Problem(p) => {
                        assert_eq!(
                            p.type_uri(),
                            format!("urn:gateway:problem:{}", p.slug),
                            "problem types are gateway urns"
                        );
                        p.detail.clone()
                    }
                    crate::problem::ReplyBody::Bytes { .. } => None,
                };
                (reply.status.as_u16(), retry, detail)
            }
        };
        Answer {
            status,
            headers: state.response_headers.clone(),
            retry_after,
            detail,
        }
    }

    async fn send(p: &RateLimit, r: &Req<'_>) -> Answer {
        send_into(p, r, &mut state_for(r)).await
    }

    async fn admitted(p: &RateLimit, r: &Req<'_>, tries: usize) -> usize {
        let mut n = 0;
        for _ in 0..tries {
            if send(p, r).await.status == 200 {
                n += 1;
            }
        }
        n
    }

    const SHOPIFY_LIKE: &str = "  rl:\n    kind: rate_limit\n    key: [channel]\n    limits: [{name: bucket, rate: 2, per: 1s, burst: 40}]\n";

    #[tokio::test]
    async fn rate_and_burst_admit_exactly_with_exact_headers() {
        let h = harness();
        let set = h.compile(SHOPIFY_LIKE, None);
        let p = rate_limit(&set, "rl");
        let first = send(p, &AMAZON).await;
        assert_eq!(first.status, 200);
        assert_eq!(
            first.header("ratelimit-policy"),
            Some("\"bucket\";q=40;w=20")
        );
        assert_eq!(first.header("ratelimit"), Some("\"bucket\";r=39;t=1"));
        assert_eq!(admitted(p, &AMAZON, 100).await, 39, "the burst is 40");

        let refused = send(p, &AMAZON).await;
        assert_eq!(refused.status, 429);
        assert_eq!(refused.retry_after.as_deref(), Some("1"));
        assert_eq!(refused.header("ratelimit"), Some("\"bucket\";r=0;t=20"));
        assert_eq!(
            refused.header("ratelimit-policy"),
            Some("\"bucket\";q=40;w=20")
        );
        assert!(
            refused.detail.as_deref().unwrap().contains("bucket"),
            "{refused:?}"
        );

        // each channel has its own bucket
        let shopify = Req {
            channel: "shopify",
            ..AMAZON
        };
        assert_eq!(admitted(p, &shopify, 100).await, 40);

        // 2 per second: after 1.2 s, two more (not 2.4), and the third waits 0.3 s -> 1 s
        h.clock.advance(Duration::from_millis(1200));
        assert_eq!(admitted(p, &AMAZON, 2).await, 2);
        let refused = send(p, &AMAZON).await;
        assert_eq!(refused.status, 429);
        assert_eq!(refused.retry_after.as_deref(), Some("1"));
        assert_eq!(refused.header("ratelimit"), Some("\"bucket\";r=0;t=20"));
        h.clock.advance(Duration::from_secs(10));
        assert_eq!(admitted(p, &AMAZON, 100).await, 20);
    }

    #[tokio::test]
    async fn headroom_is_the_tightest_limits_share_left_per_channel() {
        let h = harness();
        let set = h.compile(
            "  rl:\n    kind: rate_limit\n    key: [channel]\n    limits:\n      - {name: burst, rate: 1, per: 1h, burst: 10}\n      - {name: daily, rate: 4, per: 1d}\n",
            None,
        );
        let p = rate_limit(&set, "rl");
        let headroom = |channel: &str| {
            h.env
                .metrics
                .rate_limit
                .headroom
                .with_label_values(&["rl", channel])
                .get()
        };
        send(p, &AMAZON).await;
        // burst: 9 of 10 left; daily: 3 of 4 left, the tighter
        assert_eq!(headroom("amazon"), 0.75);
        assert_eq!(admitted(p, &AMAZON, 10).await, 3);
        assert_eq!(headroom("amazon"), 0.0, "the refusal leaves nothing");
        let shopify = Req {
            channel: "shopify",
            ..AMAZON
        };
        send(p, &shopify).await;
        assert_eq!(headroom("shopify"), 0.75, "each channel has its own gauge");
        assert_eq!(headroom("amazon"), 0.0);
    }

    #[tokio::test]
    async fn a_daily_quota_caps_a_per_second_rate() {
        let h = harness();
        let set = h.compile(
            "  rl:\n    kind: rate_limit\n    key: [channel]\n    limits:\n      - {name: per_second, rate: 5, per: 1s}\n      - {name: daily, rate: 20, per: 1d}\n",
            None,
        );
        let p = rate_limit(&set, "rl");
        let mut per_second = Vec::new();
        for _ in 0..6 {
            per_second.push(admitted(p, &AMAZON, 10).await);
            h.clock.advance(Duration::from_secs(1));
        }
        assert_eq!(per_second, [5, 5, 5, 5, 0, 0]);
        // at t = 6 s: the per-second bucket is full, the daily one is empty until a unit
        // replenishes (every 86400 / 20 = 4320 s; the last admitted one was spent at t = 3 s)
        let refused = send(p, &AMAZON).await;
        assert_eq!(refused.status, 429);
        assert_eq!(
            refused.header("ratelimit-policy"),
            Some("\"per_second\";q=5;w=1, \"daily\";q=20;w=86400")
        );
        assert_eq!(
            refused.header("ratelimit"),
            Some("\"per_second\";r=5;t=0, \"daily\";r=0;t=86394")
        );
        assert_eq!(refused.retry_after.as_deref(), Some("4314"));
        assert!(refused.detail.unwrap().contains("the daily limit"));
        h.clock.advance(Duration::from_secs(4314));
        assert_eq!(admitted(p, &AMAZON, 10).await, 1);
    }

    #[tokio::test]
    async fn weights_come_from_the_config_or_a_bounded_header() {
        let h = harness();
        let set = h.compile(
            "  rl:\n    kind: rate_limit\n    cost: 2\n    cost_header: X-Batch-Size\n    max_cost: 10\n    limits: [{name: m, rate: 10, per: 1m}]\n",
            None,
        );
        let p = rate_limit(&set, "rl");
        let batch = |n: &'static str| Req {
            headers: match n {
                "4" => &[("x-batch-size", "4")],
                "10" => &[("x-batch-size", " 10 ")],
                _ => &[],
            },
            ..AMAZON
        };
        let a = send(p, &batch("4")).await;
        assert_eq!(
            (a.status, a.header("ratelimit")),
            (200, Some("\"m\";r=6;t=24"))
        );
        let a = send(p, &batch("4")).await;
        assert_eq!(
            (a.status, a.header("ratelimit")),
            (200, Some("\"m\";r=2;t=48"))
        );
        let a = send(p, &batch("4")).await;
        assert_eq!(
            (a.status, a.header("ratelimit")),
            (429, Some("\"m\";r=2;t=48"))
        );
        assert_eq!(a.retry_after.as_deref(), Some("12"));
        // without the header a request costs the configured 2
        let a = send(p, &AMAZON).await;
        assert_eq!(
            (a.status, a.header("ratelimit")),
            (200, Some("\"m\";r=0;t=60"))
        );
        // a bad cost is 400 and spends nothing
        h.clock.advance(Duration::from_secs(60));
        for bad in ["0", "11", "abc", "-1", "", "1.5", "99999999999999999999999"] {
            let r = Req {
                headers: &[("x-batch-size", bad)],
                ..AMAZON
            };
            let a = send(p, &r).await;
            assert_eq!(a.status, 400, "{bad:?}");
            assert!(a.detail.unwrap().contains("from 1 to 10"));
        }
        let twice = Req {
            headers: &[("x-batch-size", "1"), ("x-batch-size", "1")],
            ..AMAZON
        };
        assert_eq!(send(p, &twice).await.status, 400);
        let a = send(p, &batch("10")).await;
        assert_eq!(
            (a.status, a.header("ratelimit")),
            (200, Some("\"m\";r=0;t=60"))
        );
    }

    #[tokio::test]
    async fn keys_combine_identity_headers_params_channel_and_route() {
        let h = harness();
        let set = h.compile(
            "  rl:\n    kind: rate_limit\n    key: [channel, subject, client_id, {claim: seller}, {header: X-Shop}, {param: id}, route]\n    limits: [{name: s, rate: 1, per: 1s}]\n",
            None,
        );
        let p = rate_limit(&set, "rl");
        let mut claims = serde_json::Map::new();
        claims.insert(
            "seller".into(),
            serde_json::json!(4_200_000_000_000_000_001u64),
        );
        let identity = Identity {
            subject: Some("acct|1".into()),
            client_id: Some("app~{x}".into()),
            claims,
        };
        let r = Req {
            channel: "amazon",
            headers: &[("x-shop", "shop 7%")],
            identity: Some(identity),
            params: &[("id", "A-1")],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-shop", HeaderValue::from_static("shop 7%"));
        let params = PathParams::from_pairs(r.params);
        let view = RequestView {
            method: &http::Method::GET,
            path: "/",
            query: None,
            headers: &headers,
            params: &params,
        };
        assert_eq!(
            p.partition(&view, &state_for(&r)),
            "amazon|acct%7C1|app%7E%7Bx%7D|4200000000000000001|shop%207%25|A-1|orders"
        );
        let empty = HeaderMap::new();
        let none = PathParams::default();
        let view = RequestView {
            headers: &empty,
            params: &none,
            ..view
        };
        let anon = "amazon|~anonymous|~anonymous|~anonymous|~anonymous|~anonymous|orders";
        assert_eq!(p.partition(&view, &state_for(&AMAZON)), anon);
        // each identity has its own bucket; requests without one share "anonymous"
        assert_eq!(send(p, &r).await.status, 200);
        assert_eq!(send(p, &r).await.status, 429);
        assert_eq!(send(p, &AMAZON).await.status, 200);
        assert_eq!(send(p, &AMAZON).await.status, 429);
    }

    #[tokio::test]
    async fn legacy_headers_describe_the_tightest_limit() {
        let h = harness();
        let set = h.compile(
            "  rl:\n    kind: rate_limit\n    headers: legacy\n    limits:\n      - {name: per_second, rate: 5, per: 1s}\n      - {name: daily, rate: 3, per: 1d}\n",
            None,
        );
        let p = rate_limit(&set, "rl");
        let a = send(p, &AMAZON).await;
        assert_eq!(a.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(a.header("x-ratelimit-remaining"), Some("2"));
        assert_eq!(a.header("x-ratelimit-reset"), Some("28800"));
        assert_eq!(a.header("ratelimit"), None);
        assert_eq!(a.header("ratelimit-policy"), None);
    }

    #[tokio::test]
    async fn two_policies_on_one_route_list_both_in_the_headers() {
        let h = harness();
        let set = h.compile(
            "  per_channel:\n    kind: rate_limit\n    key: [channel]\n    limits: [{name: channel, rate: 10, per: 1s}]\n  per_seller:\n    kind: rate_limit\n    key: [{header: X-Seller}]\n    limits: [{name: seller, rate: 1, per: 1m}]\n",
            None,
        );
        let mut state = state_for(&AMAZON);
        let r = Req {
            headers: &[("x-seller", "s1")],
            ..AMAZON
        };
        send_into(rate_limit(&set, "per_channel"), &r, &mut state).await;
        let a = send_into(rate_limit(&set, "per_seller"), &r, &mut state).await;
        assert_eq!(
            a.header("ratelimit-policy"),
            Some("\"channel\";q=10;w=1, \"seller\";q=1;w=60")
        );
        assert_eq!(
            a.header("ratelimit"),
            Some("\"channel\";r=9;t=1, \"seller\";r=0;t=60")
        );
    }

    #[tokio::test]
    async fn buckets_survive_a_reload_unless_their_limits_change() {
        let h = harness();
        let v1 = "  rl:\n    kind: rate_limit\n    limits: [{name: h, rate: 5, per: 1h}]\n";
        let set1 = h.compile(v1, None);
        assert_eq!(admitted(rate_limit(&set1, "rl"), &AMAZON, 3).await, 3);
        // other settings changed, limits and key did not: the buckets carry over
        let v2 = "  rl:\n    kind: rate_limit\n    headers: legacy\n    limits: [{name: h, rate: 5, per: 1h}]\n";
        let set2 = h.compile(v2, Some(&set1));
        assert_eq!(admitted(rate_limit(&set2, "rl"), &AMAZON, 5).await, 2);
        // a changed limit starts afresh
        let v3 = "  rl:\n    kind: rate_limit\n    limits: [{name: h, rate: 6, per: 1h}]\n";
        let set3 = h.compile(v3, Some(&set2));
        assert_eq!(admitted(rate_limit(&set3, "rl"), &AMAZON, 10).await, 6);
        // so does a changed key
        let v4 = "  rl:\n    kind: rate_limit\n    key: [channel]\n    limits: [{name: h, rate: 6, per: 1h}]\n";
        let set4 = h.compile(v4, Some(&set3));
        assert_eq!(admitted(rate_limit(&set4, "rl"), &AMAZON, 10).await, 6);
    }

    fn dead_redis() -> String {
        // nothing listens on this port
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("redis: {{url: \"redis://127.0.0.1:{port}\", timeout: 50ms}}\n")
    }

    fn redis_policy(extra: &str) -> String {
        format!(
            "  rl:\n    kind: rate_limit\n    store: redis\n{extra}    limits: [{{name: m, rate: 10, per: 1m}}]\n"
        )
    }

    #[tokio::test]
    async fn an_unreachable_redis_allows_when_so_configured_and_is_measured() {
        let h = harness();
        let set = h.compile_with(
            &redis_policy("    on_store_error: allow\n"),
            &dead_redis(),
            None,
        );
        let p = rate_limit(&set, "rl");
        assert_eq!(h.metric("degraded", &["rl"]), 0);
        for _ in 0..20 {
            let a = send(p, &AMAZON).await;
            assert_eq!(a.status, 200);
            assert_eq!(a.header("ratelimit-policy"), Some("\"m\";q=10;w=60"));
            assert_eq!(a.header("ratelimit"), None, "nothing was counted");
        }
        // one failed call, then at most one probe per interval
        assert_eq!(h.metric("errors", &["rl", "unavailable"]), 1);
        assert_eq!(h.metric("degraded", &["rl"]), 1);
        h.clock.advance(Duration::from_micros(PROBE_INTERVAL_US));
        assert_eq!(send(p, &AMAZON).await.status, 200);
        assert_eq!(send(p, &AMAZON).await.status, 200);
        assert_eq!(h.metric("errors", &["rl", "unavailable"]), 2);
    }

    #[tokio::test]
    async fn pass_is_the_older_name_of_allow() {
        let h = harness();
        let set = h.compile_with(
            &redis_policy("    on_store_error: pass\n"),
            &dead_redis(),
            None,
        );
        let a = send(rate_limit(&set, "rl"), &AMAZON).await;
        assert_eq!((a.status, a.header("ratelimit")), (200, None));
        assert_eq!(h.metric("degraded", &["rl"]), 1);
    }

    #[tokio::test]
    async fn an_unreachable_redis_denies_when_so_configured() {
        let h = harness();
        let set = h.compile_with(
            &redis_policy("    on_store_error: deny\n"),
            &dead_redis(),
            None,
        );
        let a = send(rate_limit(&set, "rl"), &AMAZON).await;
        assert_eq!(a.status, 503);
        assert_eq!(a.retry_after.as_deref(), Some("1"));
        assert_eq!(a.header("ratelimit-policy"), Some("\"m\";q=10;w=60"));
        assert_eq!(h.metric("degraded", &["rl"]), 1);
    }

    #[tokio::test]
    async fn an_unreachable_redis_falls_back_to_a_local_share_of_the_limit() {
        let h = harness();
        let set = h.compile_with(
            &redis_policy("    on_store_error: local\n    instances: 2\n"),
            &dead_redis(),
            None,
        );
        let p = rate_limit(&set, "rl");
        let a = send(p, &AMAZON).await;
        assert_eq!(a.status, 200);
        // 10 per minute over 2 instances: 5 per minute here
        assert_eq!(a.header("ratelimit-policy"), Some("\"m\";q=5;w=60"));
        assert_eq!(a.header("ratelimit"), Some("\"m\";r=4;t=12"));
        assert_eq!(admitted(p, &AMAZON, 10).await, 4);
        let a = send(p, &AMAZON).await;
        assert_eq!(a.status, 429);
        assert_eq!(a.retry_after.as_deref(), Some("12"));
        assert_eq!(h.metric("degraded", &["rl"]), 1);
        assert_eq!(h.metric("errors", &["rl", "unavailable"]), 1);
    }

    #[tokio::test]
    async fn a_policy_can_apply_to_some_channels_only() {
        let h = harness();
        let set = h.compile(
            "  rl:\n    kind: rate_limit\n    channels: [shopify]\n    limits: [{name: s, rate: 1, per: 1h}]\n",
            None,
        );
        let p = rate_limit(&set, "rl");
        let a = send(p, &AMAZON).await;
        assert_eq!((a.status, a.header("ratelimit-policy")), (200, None));
        assert_eq!(admitted(p, &AMAZON, 10).await, 10);
        let shopify = Req {
            channel: "shopify",
            ..AMAZON
        };
        assert_eq!(admitted(p, &shopify, 10).await, 1);
        let errs = h
            .errors("  rl:\n    kind: rate_limit\n    channels: [shopify, amazn]\n    limits: [{name: s, rate: 1, per: 1h}]\n")
            .join("\n");
        assert!(
            errs.contains(
                "p.yaml:8:25: channel \"amazn\" is not declared (declared: amazon, shopify)"
            ),
            "{errs}"
        );
    }

    #[test]
    fn mistakes_are_reported_at_their_field() {
        let h = harness();
        let errs = h.errors(
            "  a:\n    kind: rate_limit\n    cost: 5\n    limits: [{name: x, rate: 2, per: 1s}, {name: x, rate: 1, per: 1s, burst: 1}]\n",
        );
        let joined = errs.join("\n");
        assert!(
            joined.contains("p.yaml:9:50: limit name \"x\" is used twice"),
            "{joined}"
        );
        assert!(
            joined.contains("p.yaml:8:11: cost must be from 1 to the smallest burst (1)"),
            "{joined}"
        );
        let errs = h.errors(
            "  a:\n    kind: rate_limit\n    cost_header: X-Batch\n    on_store_error: deny\n    key: [{header: \"bad header\"}]\n    limits: [{name: x, rate: 2000000, per: 1s}]\n",
        )
        .join("\n");
        for expected in [
            "p.yaml:8:18: cost_header needs max_cost",
            "p.yaml:9:21: on_store_error only applies with store: redis",
            "p.yaml:10:20: \"bad header\" is not a valid header name",
            "p.yaml:11:14: rate 2000000 per 1000000µs is finer than one unit per microsecond",
        ] {
            assert!(errs.contains(expected), "missing {expected:?} in\n{errs}");
        }
        let errs = h.errors("  a:\n    kind: rate_limit\n    store: redis\n    limits: [{name: x, rate: 1, per: 1s}]\n").join("\n");
        assert!(
            errs.contains(
                "p.yaml:8:12: this policy uses the redis store, but the file has no `redis` section"
            ),
            "{errs}"
        );
        let errs = h
            .errors("  a:\n    kind: rate_limit\n    limits: [{name: \"a b\", rate: 1, per: 1s, colour: red}]\n")
            .join("\n");
        assert!(errs.contains("unknown key \"colour\""), "{errs}");
        assert!(errs.contains("does not match"), "{errs}");
    }
}
