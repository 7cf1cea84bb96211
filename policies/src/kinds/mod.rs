//! The closed set of policy kinds: the file model of each (`XxxSpec`), the runtime (`Xxx`),
//! and the one `match` that compiles a spec and the ones that dispatch phases. Adding a kind is
//! one file, one variant in each enum, and one arm per match below.

pub mod idempotency;
pub mod json_body;
pub mod body_schema;
pub mod jwt;
pub mod rate_limit;
pub mod transform;
pub mod webhook_signature;

use std::sync::Arc;

use bytes::Bytes;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::env::CompileEnv;
use crate::error::ErrorSink;
use crate::pipeline::{Completion, ExchangeState, Flow, Phases, RequestView, ResponseView};
use crate::state::redis::RedisStore;
use crate::state::{
    OnStoreError, OnStoreErrorRules, StoreChoice, StoreKind, check_on_store_error,
};

pub use body_schema::{Schema, SchemaSpec};
pub use idempotency::{Idempotency, IdempotencySpec};
pub use json_body::{JsonBody, JsonBodySpec};
pub use jwt::{Jwt, JwtSpec};
pub use rate_limit::{RateLimit, RateLimitSpec};
pub use transform::{Transform, TransformSpec};
pub use webhook_signature::{WebhookSignature, WebhookSignatureSpec};

/// A policy instance in the file: its `kind` and that kind's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PolicySpec {
    /// Rejects request bodies that are not well-formed JSON (and, optionally, a wrong
    /// `Content-Type`) before anything is sent upstream.
    JsonBody(JsonBodySpec),
    /// Validates the body against a JSON Schema chosen per channel; 422 lists every violation.
    Schema(SchemaSpec),
    /// Maps the body from the channel's dialect to the canonical model with the channel's
    /// jq mapping, and the upstream's answer back.
    Transform(TransformSpec),
    /// Limits the rate of requests per channel, account, client, route, header or path
    /// parameter (GCRA: a rate with a burst, and quotas), in this process or shared on Redis;
    /// over the limit, 429 with `Retry-After`. List it after authentication.
    RateLimit(RateLimitSpec),
    /// Requires an OAuth 2.0 bearer token: a JWT signed by a configured key (JWKS file, JWKS
    /// URL, or HS256 secrets), with the right issuer, audience, lifetime, scopes and channel.
    Jwt(Box<JwtSpec>),
    /// Verifies a marketplace webhook: an HMAC-SHA256 of the raw body in a header (Shopify's
    /// `X-Shopify-Hmac-Sha256` as a preset), against one or two secrets per channel.
    WebhookSignature(WebhookSignatureSpec),
    /// Makes a request with the same idempotency key (the `Idempotency-Key` header, another
    /// header such as `X-Shopify-Webhook-Id`, or values from the body) reach the upstream once:
    /// repeats get the stored answer replayed, 409 while the first is in flight, 422 with a
    /// different body. Records live in this process or on Redis. List it before a `transform`.
    Idempotency(IdempotencySpec),
}

/// A compiled policy.
#[derive(Debug)]
pub enum Policy {
    /// See [`JsonBody`].
    JsonBody(JsonBody),
    /// See [`Schema`].
    Schema(Schema),
    /// See [`Transform`].
    Transform(Transform),
    /// See [`RateLimit`] (boxed: it is much larger than the other kinds).
    RateLimit(Box<RateLimit>),
    /// See [`Jwt`].
    Jwt(Jwt),
    /// See [`WebhookSignature`].
    WebhookSignature(WebhookSignature),
    /// See [`Idempotency`].
    Idempotency(Idempotency),
}

/// What a kind's compile step gets.
pub struct KindContext<'a, 'm> {
    /// The policy's name.
    pub name: &'a Arc<str>,
    /// JSON Pointer of the policy in the file, for errors.
    pub pointer: &'a str,
    /// Shared compile services.
    pub env: &'a CompileEnv,
    /// The folder of the policy file, for relative paths.
    pub base_dir: &'a std::path::Path,
    /// The policy of the same name in the set being replaced, whose state this one may keep
    /// when its settings did not change.
    pub previous: Option<&'a Policy>,
    /// The shared Redis store, when the file configures `redis`.
    pub redis: Option<&'a Arc<RedisStore>>,
    /// Whether the file has a `redis` section (it may have failed to compile).
    pub has_redis_section: bool,
    /// The channels the file declares (policies index per-channel settings by them).
    pub channels: &'a crate::model::channels::Channels,
    /// Mapping catalogs already loaded during this compile.
    pub catalogs: &'a mut transform::CatalogCache,
    /// Where errors go.
    pub errors: &'a mut ErrorSink<'m>,
}

impl KindContext<'_, '_> {
    /// The store the policy's `store` and `on_store_error` choose, checked against the kind's
    /// rules (mistakes are reported at those keys). `None` when the choice is Redis and the
    /// file has no usable `redis` section.
    pub fn store_choice(
        &mut self,
        store: StoreKind,
        on_store_error: Option<OnStoreError>,
        rules: &OnStoreErrorRules,
    ) -> Option<StoreChoice> {
        let on_error = check_on_store_error(store, on_store_error, rules).unwrap_or_else(|e| {
            self.error(e.field, e.message);
            rules.default
        });
        match (store, self.redis) {
            (StoreKind::Local, _) => Some(StoreChoice::Local),
            (StoreKind::Redis, Some(redis)) => Some(StoreChoice::Redis {
                redis: redis.clone(),
                on_error,
            }),
            (StoreKind::Redis, None) => {
                // a `redis` section that failed to compile has reported its own error
                if !self.has_redis_section {
                    self.error(
                        "/store",
                        "this policy uses the redis store, but the file has no `redis` section",
                    );
                }
                None
            }
        }
    }

    /// Reports an error at a field of this policy (`field` is a JSON Pointer suffix such as
    /// `/max_depth`, or empty for the policy itself).
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        let pointer = format!("{}{field}", self.pointer);
        self.errors.at(&pointer, message);
    }
}

impl PolicySpec {
    /// Compiles the spec; `None` when errors were reported.
    pub fn compile(&self, cx: &mut KindContext<'_, '_>) -> Option<Policy> {
        match self {
            PolicySpec::JsonBody(s) => JsonBody::compile(s, cx).map(Policy::JsonBody),
            PolicySpec::Schema(s) => Schema::compile(s, cx).map(Policy::Schema),
            PolicySpec::Transform(s) => Transform::compile(s, cx).map(Policy::Transform),
            PolicySpec::RateLimit(s) => {
                RateLimit::compile(s, cx).map(|p| Policy::RateLimit(Box::new(p)))
            }
            PolicySpec::Jwt(s) => Jwt::compile(s, cx).map(Policy::Jwt),
            PolicySpec::WebhookSignature(s) => {
                WebhookSignature::compile(s, cx).map(Policy::WebhookSignature)
            }
            PolicySpec::Idempotency(s) => Idempotency::compile(s, cx).map(Policy::Idempotency),
        }
    }
}

macro_rules! dispatch {
    ($self:expr, $p:ident => $body:expr) => {
        match $self {
            Policy::JsonBody($p) => $body,
            Policy::Schema($p) => $body,
            Policy::Transform($p) => $body,
            Policy::RateLimit($p) => $body,
            Policy::Jwt($p) => $body,
            Policy::WebhookSignature($p) => $body,
            Policy::Idempotency($p) => $body,
        }
    };
}

impl Policy {
    /// Whether this policy has a body phase.
    pub fn needs_body(&self) -> bool {
        dispatch!(self, p => p.needs_body())
    }

    /// See [`Phases::warm_up`].
    pub async fn warm_up(&self) -> Result<(), String> {
        dispatch!(self, p => p.warm_up().await)
    }

    /// See [`Phases::on_request`].
    pub async fn on_request(&self, req: &RequestView<'_>, state: &mut ExchangeState) -> Flow {
        dispatch!(self, p => p.on_request(req, state).await)
    }

    /// See [`Phases::on_request_body`].
    pub async fn on_request_body(
        &self,
        req: &RequestView<'_>,
        state: &mut ExchangeState,
        body: &mut Bytes,
    ) -> Flow {
        dispatch!(self, p => p.on_request_body(req, state, body).await)
    }

    /// See [`Phases::on_response`].
    pub async fn on_response(
        &self,
        resp: &mut ResponseView<'_>,
        state: &mut ExchangeState,
    ) -> Flow {
        dispatch!(self, p => p.on_response(resp, state).await)
    }

    /// See [`Phases::on_response_body`].
    pub async fn on_response_body(
        &self,
        resp: &mut ResponseView<'_>,
        state: &mut ExchangeState,
        body: &mut Bytes,
    ) -> Flow {
        dispatch!(self, p => p.on_response_body(resp, state, body).await)
    }

    /// See [`Phases::on_complete`].
    pub async fn on_complete(&self, done: &Completion<'_>, state: &mut ExchangeState) {
        dispatch!(self, p => p.on_complete(done, state).await)
    }
}
