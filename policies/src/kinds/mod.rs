//! The policy kinds, and what a kind is.
//!
//! A kind is a module of its own under `kinds/` with its settings (`XxxSpec`: a plain serde
//! struct whose `///` docs become the published JSON Schema), its runtime type implementing
//! [`PolicyKind`] (compile step and metrics) and [`Phases`] (the phases it runs), and ONE line
//! in the `policy_kinds!` list at the end of this file. From that list follow the `PolicySpec`
//! enum of the file (tagged by `kind`), the runtime [`Policy`] enum, the one `match` that
//! compiles a spec, the phase dispatch, and [`PolicyMetrics`] with every kind's metrics.
//! Dispatch is a closed enum: no boxed future and no dynamic dispatch on the request path.
//!
//! A kind depends on the pipeline, the state interfaces and the channels of the model, never
//! on the compiler: its compile step gets a [`KindContext`].

use std::borrow::Borrow;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use prometheus::Registry;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::error::ErrorSink;
use crate::fetch::HttpGet;
use crate::metrics::{KindMetrics, SharedMetrics};
use crate::model::channels::Channels;
use crate::pipeline::{Completion, ExchangeState, Flow, Phases, RequestView, ResponseView};
use crate::secret::SecretSource;
use crate::state::redis::RedisStore;
use crate::state::{OnStoreError, OnStoreErrorRules, StoreChoice, StoreKind, check_on_store_error};

/// A policy kind: its settings in the file, how they compile, and the metrics it records. Its
/// phases are its [`Phases`] implementation.
pub trait PolicyKind: Phases + Sized + Send + Sync + std::fmt::Debug + 'static {
    /// Its settings in the policy file: a serde struct with `deny_unknown_fields` whose `///`
    /// docs are the reference (they end up in the published JSON Schema).
    type Spec: Clone + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned + JsonSchema;
    /// The metrics it records (`()` for none), made and registered once per gateway.
    type Metrics: KindMetrics;
    /// Compiles the settings, reporting every mistake through `cx` at its key; `None` when one
    /// was reported. Expensive work (keys, schemas, mappings) happens here, once.
    fn compile(spec: &Self::Spec, cx: &mut KindContext<'_, '_, Self>) -> Option<Self>;
}

/// What the compiler hands every policy's compile step, whatever its kind.
pub struct CompileScope<'a, 'm> {
    /// The policy's name.
    pub name: &'a Arc<str>,
    /// JSON Pointer of the policy in the file, for errors.
    pub pointer: &'a str,
    /// The folder of the policy file, for relative paths.
    pub base_dir: &'a Path,
    /// The clock every policy uses.
    pub clock: &'a Arc<dyn Clock>,
    /// Where `${ENV}` secrets come from.
    pub secrets: &'a dyn SecretSource,
    /// How policies fetch remote documents.
    pub http: &'a Arc<dyn HttpGet>,
    /// The channels the file declares.
    pub channels: &'a Channels,
    /// The shared Redis store, when the file configures a usable `redis`.
    pub redis: Option<&'a Arc<RedisStore>>,
    /// Whether the file has a `redis` section (it may have failed to compile).
    pub has_redis_section: bool,
    /// What compile steps share during one compile, one value per type.
    pub cache: &'a mut http::Extensions,
    /// Where errors go.
    pub errors: &'a mut ErrorSink<'m>,
}

impl<'m> CompileScope<'_, 'm> {
    /// The context of a kind's compile step.
    fn for_kind<'s, K: PolicyKind>(
        &'s mut self,
        previous: Option<&'s K>,
        metrics: &'s K::Metrics,
    ) -> KindContext<'s, 'm, K> {
        KindContext {
            name: self.name,
            pointer: self.pointer,
            base_dir: self.base_dir,
            clock: self.clock,
            secrets: self.secrets,
            http: self.http,
            channels: self.channels,
            metrics,
            previous,
            errors: &mut *self.errors,
            redis: self.redis,
            has_redis_section: self.has_redis_section,
            cache: &mut *self.cache,
        }
    }
}

/// What a kind's compile step gets.
pub struct KindContext<'a, 'm, K: PolicyKind> {
    /// The policy's name.
    pub name: &'a Arc<str>,
    /// JSON Pointer of the policy in the file, for errors.
    pub pointer: &'a str,
    /// The folder of the policy file, for relative paths.
    pub base_dir: &'a Path,
    /// The clock every policy uses.
    pub clock: &'a Arc<dyn Clock>,
    /// Where `${ENV}` secrets come from.
    pub secrets: &'a dyn SecretSource,
    /// How policies fetch remote documents (an identity provider's JWKS).
    pub http: &'a Arc<dyn HttpGet>,
    /// The channels the file declares (policies index per-channel settings by them).
    pub channels: &'a Channels,
    /// The kind's metrics.
    pub metrics: &'a K::Metrics,
    /// The policy of the same name and kind in the set being replaced, whose state this one
    /// may keep when its settings did not change.
    pub previous: Option<&'a K>,
    /// Where errors go.
    pub errors: &'a mut ErrorSink<'m>,
    redis: Option<&'a Arc<RedisStore>>,
    has_redis_section: bool,
    cache: &'a mut http::Extensions,
}

impl<K: PolicyKind> KindContext<'_, '_, K> {
    /// Reports an error at a field of this policy (`field` is a JSON Pointer suffix such as
    /// `/max_depth`, or empty for the policy itself).
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        let pointer = format!("{}{field}", self.pointer);
        self.errors.at(&pointer, message);
    }

    /// A value shared by every compile step of this compile (one per type, made on first use),
    /// such as the mapping catalogs already loaded.
    pub fn cache<T: Default + Clone + Send + Sync + 'static>(&mut self) -> &mut T {
        self.cache.get_or_insert_default::<T>()
    }

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
}

/// The runtime variant of a kind: the kind itself, or boxed when it is much larger than the
/// others (so every `Policy` is not as large as the largest kind).
macro_rules! runtime_variant {
    ($kind:ident) => { $kind };
    ($kind:ident boxed) => { Box<$kind> };
}

/// A compiled kind as its runtime variant holds it.
macro_rules! runtime_value {
    ($policy:expr) => {
        $policy
    };
    ($policy:expr, boxed) => {
        Box::new($policy)
    };
}

/// Generates, from the one list of kinds, everything that enumerates them. Each line is
/// `<tag> => <module>::<Kind>`, optionally followed by `[boxed]`, under the doc comment that
/// describes the kind in the published schema; `<tag>` is the `kind:` value in the file (the
/// snake case of `<Kind>`, checked by a test).
macro_rules! policy_kinds {
    ($(
        $(#[$doc:meta])*
        $tag:ident => $module:ident :: $kind:ident $([$boxed:ident])?,
    )*) => {
        $(pub mod $module;)*
        $(pub use $module::$kind;)*

        /// A policy instance in the file: its `kind` and that kind's settings.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum PolicySpec {
            $(
                $(#[$doc])*
                $kind(Box<<$kind as PolicyKind>::Spec>),
            )*
        }

        /// A compiled policy.
        #[derive(Debug)]
        pub enum Policy {
            $(
                #[doc = concat!("See [`", stringify!($kind), "`].")]
                $kind(runtime_variant!($kind $($boxed)?)),
            )*
        }

        /// Every policy-level metric: those several kinds record, and each kind's own.
        #[derive(Debug)]
        pub struct PolicyMetrics {
            /// Metrics several kinds record.
            pub shared: SharedMetrics,
            $(
                #[doc = concat!("The metrics of `", stringify!($tag), "` policies.")]
                pub $tag: <$kind as PolicyKind>::Metrics,
            )*
        }

        impl PolicyMetrics {
            /// Creates the metrics and registers them in `registry`.
            pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
                let m = Self::unregistered()?;
                m.shared.register(registry)?;
                $(m.$tag.register(registry)?;)*
                Ok(m)
            }

            /// Metrics registered nowhere (offline compiles, unit tests).
            pub fn unregistered() -> Result<Self, prometheus::Error> {
                let shared = SharedMetrics::new()?;
                Ok(PolicyMetrics {
                    $($tag: KindMetrics::new(&shared)?,)*
                    shared,
                })
            }
        }

        /// The `kind` values of the list, in its order.
        pub const KIND_TAGS: &[&str] = &[$(stringify!($tag)),*];

        impl PolicySpec {
            /// Compiles the spec with its kind's compile step; `previous` is the policy of the
            /// same name in the set being replaced. `None` when errors were reported.
            pub fn compile(
                &self,
                scope: &mut CompileScope<'_, '_>,
                previous: Option<&Policy>,
                metrics: &PolicyMetrics,
            ) -> Option<Policy> {
                match self {
                    $(
                        PolicySpec::$kind(spec) => {
                            let previous = match previous {
                                Some(Policy::$kind(p)) => Some(Borrow::<$kind>::borrow(p)),
                                _ => None,
                            };
                            let mut cx = scope.for_kind::<$kind>(previous, &metrics.$tag);
                            <$kind as PolicyKind>::compile(spec, &mut cx)
                                .map(|p| Policy::$kind(runtime_value!(p $(, $boxed)?)))
                        }
                    )*
                }
            }
        }

        impl Policy {
            /// The kind's `kind:` tag in the file (`jwt`, `rate_limit`, ...), for traces and
            /// metrics.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Policy::$kind(_) => stringify!($tag),)*
                }
            }

            /// The phases it implements (`pipeline::phase` bits).
            pub fn phases(&self) -> u8 {
                match self {
                    $(Policy::$kind(_) => <$kind as Phases>::PHASES,)*
                }
            }

            /// Whether this policy has a body phase.
            pub fn needs_body(&self) -> bool {
                match self {
                    $(Policy::$kind(p) => p.needs_body(),)*
                }
            }

            /// See [`Phases::guards_reads`].
            pub fn guards_reads(&self) -> bool {
                match self {
                    $(Policy::$kind(p) => p.guards_reads(),)*
                }
            }

            /// See [`Phases::makes_repeats_safe`].
            pub fn makes_repeats_safe(&self) -> bool {
                match self {
                    $(Policy::$kind(p) => p.makes_repeats_safe(),)*
                }
            }

            /// See [`Phases::warm_up`].
            pub async fn warm_up(&self) -> Result<(), String> {
                match self {
                    $(Policy::$kind(p) => p.warm_up().await,)*
                }
            }

            /// See [`Phases::on_request`].
            pub async fn on_request(
                &self,
                req: &RequestView<'_>,
                state: &mut ExchangeState,
            ) -> Flow {
                match self {
                    $(Policy::$kind(p) => p.on_request(req, state).await,)*
                }
            }

            /// See [`Phases::on_request_body`].
            pub async fn on_request_body(
                &self,
                req: &RequestView<'_>,
                state: &mut ExchangeState,
                body: &mut Bytes,
            ) -> Flow {
                match self {
                    $(Policy::$kind(p) => p.on_request_body(req, state, body).await,)*
                }
            }

            /// See [`Phases::on_response`].
            pub async fn on_response(
                &self,
                resp: &mut ResponseView<'_>,
                state: &mut ExchangeState,
            ) -> Flow {
                match self {
                    $(Policy::$kind(p) => p.on_response(resp, state).await,)*
                }
            }

            /// See [`Phases::on_response_body`].
            pub async fn on_response_body(
                &self,
                resp: &mut ResponseView<'_>,
                state: &mut ExchangeState,
                body: &mut Bytes,
            ) -> Flow {
                match self {
                    $(Policy::$kind(p) => p.on_response_body(resp, state, body).await,)*
                }
            }

            /// See [`Phases::on_complete`].
            pub async fn on_complete(&self, done: &Completion<'_>, state: &mut ExchangeState) {
                match self {
                    $(Policy::$kind(p) => p.on_complete(done, state).await,)*
                }
            }
        }
    };
}

impl Default for PolicyMetrics {
    fn default() -> Self {
        // building metric descriptors with fixed, valid names cannot fail
        Self::unregistered()
            .unwrap_or_else(|e| panic!("policy metric definitions are invalid: {e}"))
    }
}

// The kinds. Adding one: its module, and one line here (see docs/design-notes.md).
policy_kinds! {
    /// Rejects request bodies that are not well-formed JSON (and, optionally, a wrong
    /// `Content-Type`) before anything is sent upstream.
    json_body => json_body::JsonBody,
    /// Validates the body against a JSON Schema chosen per channel; 422 lists every violation.
    schema => body_schema::Schema,
    /// Maps the body from the channel's dialect to the canonical model with the channel's
    /// jq mapping, and the upstream's answer back.
    transform => transform::Transform,
    /// Limits the rate of requests per channel, account, client, route, header or path
    /// parameter (GCRA: a rate with a burst, and quotas), in this process or shared on Redis;
    /// over the limit, 429 with `Retry-After`. List it after authentication.
    rate_limit => rate_limit::RateLimit [boxed],
    /// Requires an OAuth 2.0 bearer token: a JWT signed by a configured key (JWKS file, JWKS
    /// URL, or HS256 secrets), with the right issuer, audience, lifetime, scopes and channel.
    jwt => jwt::Jwt,
    /// Requires a client certificate verified by the TLS listener (mutual TLS) and binds it
    /// to a channel by subject common name, subjectAltName DNS name or URI, or SHA-256
    /// fingerprint. With `jwt` on the same route, both must name the same channel.
    client_cert => client_cert::ClientCert,
    /// Verifies a marketplace webhook: an HMAC-SHA256 of the raw body in a header (Shopify's
    /// `X-Shopify-Hmac-Sha256` as a preset), against one or two secrets per channel.
    webhook_signature => webhook_signature::WebhookSignature,
    /// Verifies eBay's notifications: `X-EBAY-SIGNATURE` (ECDSA P-256 over the raw body) with
    /// the public key fetched by `kid` from eBay's Notification API (cached), and answers
    /// eBay's endpoint-validation challenge.
    ebay_signature => ebay_signature::EbaySignature,
    /// Makes a request with the same idempotency key (the `Idempotency-Key` header, another
    /// header such as `X-Shopify-Webhook-Id`, or values from the body) reach the upstream once:
    /// repeats get the stored answer replayed, 409 while the first is in flight, 422 with a
    /// different body. Records live in this process or on Redis. List it before a `transform`.
    idempotency => idempotency::Idempotency,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_is_the_kind_value_in_the_file() {
        let schema = crate::file_schema::policy_file_schema();
        let tags = &schema["$defs"]["PolicySpec"]["properties"]["kind"]["enum"];
        assert_eq!(*tags, serde_json::json!(KIND_TAGS));
    }
}
