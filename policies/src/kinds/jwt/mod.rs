//! `jwt`: OAuth 2.0 bearer tokens (RFC 6750) that are signed JWTs (RFC 7519, RFC 9068 access
//! tokens), verified at the edge against keys from a JWKS file, an identity provider's JWKS URL
//! or HS256 secrets; each key verifies one algorithm only. The token names the caller's channel,
//! which must match a `{channel}` route and is then known to every later policy.

mod cache;
mod keys;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use jsonwebtoken::{Algorithm, Validation};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{KindContext, PolicyKind};
use crate::clock::Clock;
use crate::metrics::{KindMetrics, SharedMetrics};
use crate::model::channels::Channels;
use crate::pipeline::{Channel, ExchangeState, Flow, Phases, RequestView};
use crate::problem::{Problem, Reply};
use crate::secret;
use crate::source::push_token;
use crate::units::{ByteSize, DurationSpec};

use cache::{TokenCache, Verified, token_hash};
use keys::{
    KeyMaterial, KeySet, Lookup, RefreshCounters, RemoteKeys, RemoteSettings, VerifyKey, parse_jwks,
};

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StringOrList {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl StringOrList {
    fn to_vec(&self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s.clone()],
            StringOrList::Many(v) => v.clone(),
        }
    }
}

/// A JWS signature algorithm the gateway verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum JwtAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[serde(rename = "RS256")]
    Rs256,
    /// RSASSA-PSS with SHA-256.
    #[serde(rename = "PS256")]
    Ps256,
    /// ECDSA on P-256 with SHA-256.
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519.
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// HMAC with SHA-256 (shared secrets).
    #[serde(rename = "HS256")]
    Hs256,
}

impl JwtAlgorithm {
    fn algorithm(self) -> Algorithm {
        match self {
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Ps256 => Algorithm::PS256,
            JwtAlgorithm::Es256 => Algorithm::ES256,
            JwtAlgorithm::EdDsa => Algorithm::EdDSA,
            JwtAlgorithm::Hs256 => Algorithm::HS256,
        }
    }
}

/// Settings of a `jwt` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    /// Accepted issuers: the token's `iss` must equal one of them. A string or a list.
    pub issuer: StringOrList,
    /// Accepted audiences: the token's `aud` (a string or an array) must contain one of them.
    /// A string or a list.
    pub audience: StringOrList,
    /// Where the verification keys come from (at least one source).
    pub keys: JwtKeysSpec,
    /// Signature algorithms accepted. Whatever this lists, a key only ever verifies its own
    /// algorithm, and `none` is always refused. Default: all five.
    #[serde(default = "default_algorithms")]
    #[schemars(length(min = 1))]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Clock skew tolerated on `exp` and `nbf`. At most 5m.
    #[serde(default = "default_leeway")]
    pub leeway: DurationSpec,
    /// Require the JOSE header `typ: at+jwt` of RFC 9068 access tokens (ID tokens and other
    /// JWTs of the same issuer are then refused).
    #[serde(default)]
    pub require_at_jwt: bool,
    /// Scopes the token must carry, every one of them, in `scope` (space separated) or `scp`
    /// (an array). A token without them gets 403 `insufficient_scope`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How a token names its channel. When set, every token must name a declared channel; on
    /// a route with a `{channel}` parameter it must be that channel (else 403), and on other
    /// routes it becomes the request's channel (rate-limit keys, mappings, metrics, logs).
    /// Absent: tokens are not bound to channels.
    #[serde(default)]
    pub channel: Option<JwtChannelSpec>,
    /// Largest token accepted; a longer one gets 401 before any parsing. At most 32KiB.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: ByteSize,
    /// How many verified tokens are remembered (by their SHA-256, until their `exp`), so a
    /// client reusing its token is not re-verified on every request. `0` disables the cache.
    #[serde(default = "default_cache_entries")]
    #[schemars(range(max = 1_000_000))]
    pub cache_entries: u32,
    /// The `realm` of the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Send the client's `Authorization` header on to the upstream. Off by default: the token
    /// is the edge's business, and an upstream that logs headers would keep a live credential.
    #[serde(default)]
    pub forward_token: bool,
}

/// Where a `jwt` policy's keys come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtKeysSpec {
    /// A JWKS file (RFC 7517), relative to the policy file; read at every load and reload.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The identity provider's JWKS URL (`https://`; plain `http://` only to a loopback host).
    /// Fetched before the gateway reports ready (a failure fails the load or reload), cached,
    /// refreshed when a token names an unknown `kid` and when the set is older than `max_age`;
    /// while the provider is unreachable the last good set keeps serving. Keys named inside a
    /// token (`jku`, `x5u`, `jwk`) are never fetched or used.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// HS256 shared secrets by `kid`. Values must be `${ENV_VAR}` or `file:path` references, at
    /// least 32 bytes long; symmetric keys are never taken from a JWKS.
    #[serde(default)]
    pub hs256: BTreeMap<String, String>,
    /// Least time between two fetches of `jwks_url`, however many unknown `kid`s arrive
    /// (`0s`: refetch on every unknown `kid`, one fetch at a time).
    #[serde(default = "default_refresh_cooldown")]
    pub refresh_cooldown: DurationSpec,
    /// Age after which the fetched set is refreshed in the background.
    #[serde(default = "default_max_age")]
    pub max_age: DurationSpec,
    /// Bound on one fetch of `jwks_url` (connect, TLS, status and body).
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout: DurationSpec,
}

/// How a token names its channel: a claim, or a client id looked up in a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtChannelSpec {
    /// Claim whose string value is the channel's name, e.g. `channel`. Tried first.
    #[serde(default)]
    pub claim: Option<String>,
    /// Client ids and the channel each one is, for identity providers that cannot add a claim.
    #[serde(default)]
    pub clients: BTreeMap<String, String>,
    /// Claim holding the client id looked up in `clients` (RFC 9068 `client_id`; some
    /// providers use `azp`).
    #[serde(default = "default_client_claim")]
    pub client_claim: String,
}

fn default_algorithms() -> Vec<JwtAlgorithm> {
    vec![
        JwtAlgorithm::Rs256,
        JwtAlgorithm::Ps256,
        JwtAlgorithm::Es256,
        JwtAlgorithm::EdDsa,
        JwtAlgorithm::Hs256,
    ]
}
fn default_leeway() -> DurationSpec {
    DurationSpec::secs(30)
}
fn default_max_token_bytes() -> ByteSize {
    ByteSize::kib(8)
}
fn default_cache_entries() -> u32 {
    10_000
}
fn default_realm() -> String {
    "gateway".into()
}
fn default_refresh_cooldown() -> DurationSpec {
    DurationSpec::secs(30)
}
fn default_max_age() -> DurationSpec {
    DurationSpec::secs(15 * 60)
}
fn default_fetch_timeout() -> DurationSpec {
    DurationSpec::secs(5)
}
fn default_client_claim() -> String {
    "client_id".into()
}

/// Why a request was refused; each is a metric `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No bearer token in `Authorization`.
    MissingToken,
    /// A token in the query string (`access_token=`), where it would end up in logs.
    TokenInQuery,
    /// Several `Authorization` headers.
    InvalidRequest,
    /// A token longer than `max_token_bytes`.
    TooLong,
    /// Not three base64url segments of JSON, or a claim of the wrong type.
    Malformed,
    /// `alg` is `none`, not accepted, or not the algorithm of the key named by `kid`.
    AlgNotAllowed,
    /// No key of this `kid`, even after a refresh.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp`, `iss` or `aud` is missing.
    MissingClaim,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iss` is not an accepted issuer.
    WrongIssuer,
    /// `aud` names no accepted audience.
    WrongAudience,
    /// `typ` is not `at+jwt` where that is required.
    WrongType,
    /// A required scope is missing.
    InsufficientScope,
    /// The token names no channel.
    NoChannel,
    /// The token names a channel the file does not declare.
    UnknownChannel,
    /// The token's channel is not the route's.
    ChannelMismatch,
}

impl Failure {
    const ALL: [Failure; 18] = [
        Failure::MissingToken,
        Failure::TokenInQuery,
        Failure::InvalidRequest,
        Failure::TooLong,
        Failure::Malformed,
        Failure::AlgNotAllowed,
        Failure::UnknownKey,
        Failure::BadSignature,
        Failure::MissingClaim,
        Failure::Expired,
        Failure::NotYetValid,
        Failure::WrongIssuer,
        Failure::WrongAudience,
        Failure::WrongType,
        Failure::InsufficientScope,
        Failure::NoChannel,
        Failure::UnknownChannel,
        Failure::ChannelMismatch,
    ];

    /// The metric and log label.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::MissingToken => "missing_token",
            Failure::TokenInQuery => "token_in_query",
            Failure::InvalidRequest => "invalid_request",
            Failure::TooLong => "too_long",
            Failure::Malformed => "malformed",
            Failure::AlgNotAllowed => "alg_not_allowed",
            Failure::UnknownKey => "unknown_kid",
            Failure::BadSignature => "bad_signature",
            Failure::MissingClaim => "missing_claim",
            Failure::Expired => "expired",
            Failure::NotYetValid => "not_yet_valid",
            Failure::WrongIssuer => "wrong_issuer",
            Failure::WrongAudience => "wrong_audience",
            Failure::WrongType => "wrong_type",
            Failure::InsufficientScope => "insufficient_scope",
            Failure::NoChannel => "no_channel",
            Failure::UnknownChannel => "unknown_channel",
            Failure::ChannelMismatch => "channel_mismatch",
        }
    }

    /// What the client is told (fixed text: never anything from the token).
    fn description(self) -> &'static str {
        match self {
            Failure::MissingToken => {
                "this route requires an OAuth 2.0 bearer token in the Authorization header"
            }
            Failure::TokenInQuery => {
                "send the access token in the Authorization header, not in the query string"
            }
            Failure::InvalidRequest => "the request carries more than one Authorization header",
            Failure::TooLong => "the access token is too long",
            Failure::Malformed => "the access token is not a well-formed JWT",
            Failure::AlgNotAllowed => "the access token's signature algorithm is not accepted",
            Failure::UnknownKey => "the access token is signed with an unknown key",
            Failure::BadSignature => "the access token's signature is invalid",
            Failure::MissingClaim => "the access token lacks a required claim (exp, iss or aud)",
            Failure::Expired => "the access token has expired",
            Failure::NotYetValid => "the access token is not valid yet",
            Failure::WrongIssuer => {
                "the access token was issued by an issuer this route does not trust"
            }
            Failure::WrongAudience => "the access token is not meant for this audience",
            Failure::WrongType => "the token is not an OAuth 2.0 access token (typ at+jwt)",
            Failure::InsufficientScope => "the access token lacks a scope this route requires",
            Failure::NoChannel => "the access token names no channel",
            Failure::UnknownChannel => {
                "the access token names a channel this gateway does not serve"
            }
            Failure::ChannelMismatch => "the access token is not valid for this channel",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Failure::InsufficientScope
            | Failure::NoChannel
            | Failure::UnknownChannel
            | Failure::ChannelMismatch => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The RFC 6750 error code (none when the request carried no credentials at all).
    fn error_code(self) -> Option<&'static str> {
        match self {
            Failure::MissingToken => None,
            Failure::TokenInQuery | Failure::InvalidRequest => Some("invalid_request"),
            f if f.status() == StatusCode::FORBIDDEN => Some("insufficient_scope"),
            _ => Some("invalid_token"),
        }
    }

    fn problem(self) -> Problem {
        let (slug, title) = match self {
            Failure::MissingToken => ("authentication-required", "Authentication required"),
            Failure::InsufficientScope => ("insufficient-scope", "Insufficient scope"),
            Failure::NoChannel | Failure::UnknownChannel | Failure::ChannelMismatch => {
                ("channel-forbidden", "Token not valid for this channel")
            }
            _ => ("invalid-token", "Invalid access token"),
        };
        Problem::new(self.status(), slug, title).with_detail(self.description())
    }
}

/// How tokens name channels, compiled.
#[derive(Debug)]
struct ChannelIdentity {
    claim: Option<String>,
    clients: BTreeMap<String, String>,
    client_claim: String,
}

/// The JOSE header members the policy reads before choosing a key.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
}

/// The compiled `jwt` policy.
pub struct Jwt {
    issuers: Vec<String>,
    audiences: Vec<String>,
    /// Accepted algorithms, each with its prebuilt signature-only validation (claims are
    /// checked here, against the injected clock).
    validations: Vec<(Algorithm, Validation)>,
    leeway: u64,
    require_at_jwt: bool,
    scopes: Vec<String>,
    identity: Option<ChannelIdentity>,
    channels: Channels,
    max_token_bytes: usize,
    static_keys: KeySet,
    remote: Option<Arc<RemoteKeys>>,
    cache: TokenCache,
    clock: Arc<dyn Clock>,
    /// Per failure (indexed like `Failure::ALL`): its counter and its challenge.
    failures: Vec<IntCounter>,
    challenges: Vec<HeaderValue>,
    forward_token: bool,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("static_keys", &self.static_keys.len())
            .field("remote", &self.remote)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

fn quotable(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

fn scope_token(s: &str) -> bool {
    // RFC 6749 scope-token: %x21 / %x23-5B / %x5D-7E
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

fn challenge(realm: &str, failure: Failure, scopes: &[String]) -> HeaderValue {
    let mut v = format!("Bearer realm=\"{realm}\"");
    if let Some(code) = failure.error_code() {
        v.push_str(&format!(
            ", error=\"{code}\", error_description=\"{}\"",
            failure.description()
        ));
        if failure == Failure::InsufficientScope && !scopes.is_empty() {
            v.push_str(&format!(", scope=\"{}\"", scopes.join(" ")));
        }
    }
    // realm and scopes were checked to be quotable ASCII
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("Bearer"))
}

/// What `jwt` policies record.
#[derive(Debug, Clone)]
pub struct JwtMetrics {
    /// `gateway_auth_failures_total{policy,reason}` (shared with `webhook_signature`).
    pub auth_failures: IntCounterVec,
    /// `gateway_jwks_refreshes_total{policy,outcome}`: fetches of an identity provider's key
    /// set (`success`, `failure`; after a failure the last good set keeps serving).
    pub jwks_refreshes: IntCounterVec,
}

impl KindMetrics for JwtMetrics {
    fn new(shared: &SharedMetrics) -> Result<Self, prometheus::Error> {
        Ok(JwtMetrics {
            auth_failures: shared.auth_failures.clone(),
            jwks_refreshes: IntCounterVec::new(
                Opts::new(
                    "gateway_jwks_refreshes_total",
                    "Fetches of an identity provider's JWKS, by policy and outcome.",
                ),
                &["policy", "outcome"],
            )?,
        })
    }

    /// Registers the refresh counter (the shared failure counter is registered once, with the
    /// shared metrics).
    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.jwks_refreshes.clone()))
    }
}

impl PolicyKind for Jwt {
    type Spec = JwtSpec;
    type Metrics = JwtMetrics;

    /// Compiles the spec: reads the JWKS file and the secrets, checks every setting, and keeps
    /// the fetched key set of the policy it replaces when the key source did not change.
    fn compile(spec: &JwtSpec, cx: &mut KindContext<'_, '_, Self>) -> Option<Jwt> {
        let errors_before = cx.errors.len();
        let issuers = spec.issuer.to_vec();
        if issuers.is_empty() || issuers.iter().any(String::is_empty) {
            cx.error("/issuer", "issuer must name at least one non-empty issuer");
        }
        let audiences = spec.audience.to_vec();
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            cx.error(
                "/audience",
                "audience must name at least one non-empty audience",
            );
        }
        if spec.algorithms.is_empty() {
            cx.error("/algorithms", "list at least one algorithm");
        }
        let algorithms: Vec<Algorithm> = spec.algorithms.iter().map(|a| a.algorithm()).collect();
        if spec.leeway.0 > std::time::Duration::from_secs(300) {
            cx.error("/leeway", "leeway must be at most 5m");
        }
        if !(512..=32 * 1024).contains(&spec.max_token_bytes.0) {
            cx.error(
                "/max_token_bytes",
                "max_token_bytes must be between 512B and 32KiB",
            );
        }
        if spec.cache_entries > 1_000_000 {
            cx.error("/cache_entries", "cache_entries must be at most 1000000");
        }
        for (i, s) in spec.scopes.iter().enumerate() {
            if !scope_token(s) {
                cx.error(
                    &format!("/scopes/{i}"),
                    format!("{s:?} is not a valid scope (no spaces, quotes or backslashes)"),
                );
            }
        }
        if spec.realm.is_empty() || !quotable(&spec.realm) {
            cx.error(
                "/realm",
                "realm must be printable ASCII without quotes or backslashes",
            );
        }

        // keys
        let k = &spec.keys;
        let mut static_keys = Vec::new();
        if let Some(file) = &k.jwks_file {
            let path = cx.base_dir.join(file);
            match std::fs::read(&path) {
                Ok(bytes) => match parse_jwks(&bytes, false) {
                    Ok(parsed) => {
                        for why in &parsed.skipped {
                            tracing::warn!(policy = %cx.name, file = %path.display(), key = %why, "JWKS key skipped");
                        }
                        static_keys.extend(parsed.keys.into_iter().map(Arc::new));
                    }
                    Err(e) => cx.error("/keys/jwks_file", format!("{}: {e}", path.display())),
                },
                Err(e) => cx.error(
                    "/keys/jwks_file",
                    format!("cannot read {}: {e}", path.display()),
                ),
            }
        }
        for (kid, reference) in &k.hs256 {
            let at = push_token("/keys/hs256", kid);
            if kid.is_empty() {
                cx.error(&at, "an HS256 key needs a non-empty kid");
                continue;
            }
            if !secret::is_reference(reference) {
                cx.error(
                    &at,
                    "HS256 secrets must be ${ENV_VAR} or file: references, never literal values",
                );
                continue;
            }
            let value = match secret::expand(reference, cx.base_dir, cx.secrets) {
                Ok(v) => v,
                Err(msg) => {
                    cx.error(&at, msg);
                    continue;
                }
            };
            let bytes = value.expose().as_bytes();
            if bytes.len() < 32 {
                cx.error(
                    &at,
                    format!(
                        "the HS256 secret of kid {kid:?} is {} bytes; at least 32 are required",
                        bytes.len()
                    ),
                );
                continue;
            }
            match VerifyKey::hs256(kid, bytes) {
                Ok(key) => static_keys.push(Arc::new(key)),
                Err(e) => cx.error(&at, format!("unusable HS256 secret: {e}")),
            }
        }
        if !k.hs256.is_empty() && !algorithms.contains(&Algorithm::HS256) {
            cx.error(
                "/keys/hs256",
                "HS256 secrets are configured but `algorithms` does not accept HS256",
            );
        }
        let name = cx.name.clone();
        let metrics = cx.metrics.clone();
        let remote = k.jwks_url.as_ref().and_then(|url| {
            if let Err(msg) = crate::fetch::check_key_url(url) {
                cx.error("/keys/jwks_url", msg);
                return None;
            }
            let settings = RemoteSettings {
                url: url.clone(),
                cooldown: k.refresh_cooldown.0,
                max_age: k.max_age.0,
                timeout: k.fetch_timeout.0,
            };
            if let Some(prev) = cx.previous
                && let Some(r) = &prev.remote
                && r.settings == settings
            {
                return Some(r.clone());
            }
            let counters = RefreshCounters {
                success: metrics
                    .jwks_refreshes
                    .with_label_values(&[&name, "success"]),
                failure: metrics
                    .jwks_refreshes
                    .with_label_values(&[&name, "failure"]),
            };
            Some(Arc::new(RemoteKeys::new(
                settings,
                name.clone(),
                cx.http.clone(),
                cx.clock.clone(),
                counters,
            )))
        });
        if k.jwks_file.is_none() && k.jwks_url.is_none() && k.hs256.is_empty() {
            cx.error("/keys", "no key source: set jwks_file, jwks_url or hs256");
        }
        if k.fetch_timeout.0.is_zero() {
            cx.error("/keys/fetch_timeout", "fetch_timeout must be positive");
        }

        // channel identity
        let identity = spec.channel.as_ref().map(|c| {
            if c.claim.is_none() && c.clients.is_empty() {
                cx.error("/channel", "set `claim`, `clients`, or both");
            }
            if cx.channels.names().is_empty() {
                cx.error(
                    "/channel",
                    "tokens are bound to channels, but the file declares no channels",
                );
            }
            for (client, channel) in &c.clients {
                if cx.channels.get(channel).is_none() {
                    let known = cx
                        .channels
                        .names()
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    cx.error(
                        &push_token("/channel/clients", client),
                        format!("channel {channel:?} is not declared (declared: {known})"),
                    );
                }
            }
            ChannelIdentity {
                claim: c.claim.clone(),
                clients: c.clients.clone(),
                client_claim: c.client_claim.clone(),
            }
        });

        if cx.errors.len() > errors_before {
            return None;
        }
        let failures = Failure::ALL
            .iter()
            .map(|f| {
                metrics
                    .auth_failures
                    .with_label_values(&[&name, f.reason()])
            })
            .collect();
        let challenges = Failure::ALL
            .iter()
            .map(|f| challenge(&spec.realm, *f, &spec.scopes))
            .collect();
        let validations = algorithms
            .iter()
            .map(|alg| {
                // signature and header only: time, issuer and audience are checked against
                // the policy's clock below
                let mut v = Validation::new(*alg);
                v.validate_exp = false;
                v.validate_nbf = false;
                v.validate_aud = false;
                v.required_spec_claims.clear();
                (*alg, v)
            })
            .collect();
        Some(Jwt {
            forward_token: spec.forward_token,
            issuers,
            audiences,
            validations,
            leeway: spec.leeway.0.as_secs(),
            require_at_jwt: spec.require_at_jwt,
            scopes: spec.scopes.clone(),
            identity,
            channels: cx.channels.clone(),
            max_token_bytes: usize::try_from(spec.max_token_bytes.0).unwrap_or(usize::MAX),
            static_keys: KeySet::new(static_keys),
            remote,
            cache: TokenCache::new(spec.cache_entries as usize),
            clock: cx.clock.clone(),
            failures,
            challenges,
        })
    }
}

impl Jwt {
    fn reject(&self, failure: Failure) -> Flow {
        let i = Failure::ALL
            .iter()
            .position(|f| *f == failure)
            .unwrap_or_default();
        if let Some(c) = self.failures.get(i) {
            c.inc();
        }
        let mut reply = Reply::problem(failure.problem(), failure.reason());
        if let Some(ch) = self.challenges.get(i) {
            reply = reply.with_header(WWW_AUTHENTICATE, ch.clone());
        }
        Flow::Break(reply)
    }

    /// Authenticates and authorizes one request.
    async fn check(&self, req: &RequestView<'_>, state: &mut ExchangeState) -> Result<(), Failure> {
        let token = bearer_token(req, self.max_token_bytes)?;
        let verified = self.verified(token).await?;
        match &verified.channel {
            Err(f) => return Err(*f),
            Ok(None) => {}
            Ok(Some(token_channel)) => match &state.channel {
                Some(route) if route.index != token_channel.index => {
                    return Err(Failure::ChannelMismatch);
                }
                Some(_) => {}
                None => state.channel = Some(token_channel.clone()),
            },
        }
        if !verified.scopes_ok {
            return Err(Failure::InsufficientScope);
        }
        if state.caller.is_none() {
            state.caller = verified.caller.clone();
        }
        Ok(())
    }

    /// The verification of a token, from the cache when it was verified before (and its key
    /// is still in the key set).
    async fn verified(&self, token: &str) -> Result<Arc<Verified>, Failure> {
        if let Some(remote) = &self.remote {
            remote.refresh_if_stale();
        }
        let now = self.clock.unix_time().as_secs();
        if !self.cache.enabled() {
            // no cache, no SHA-256 of the token to look it up by
            return Ok(Arc::new(self.verify(token, now).await?));
        }
        let hash = token_hash(token.as_bytes());
        if let Some(v) = self.cache.get(&hash, now, self.leeway) {
            if self.key_is_current(&v.key) {
                return Ok(v);
            }
            self.cache.remove(&hash);
        }
        let verified = Arc::new(self.verify(token, now).await?);
        self.cache.insert(hash, verified.clone());
        Ok(verified)
    }

    fn key_is_current(&self, key: &Arc<VerifyKey>) -> bool {
        !key.remote
            || self
                .remote
                .as_ref()
                .is_some_and(|r| r.current().contains(key))
    }

    async fn find_key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<VerifyKey>, Failure> {
        let local = self.static_keys.lookup(kid, alg);
        let remote = match (&self.remote, &local) {
            (Some(r), Lookup::NotFound) => r.lookup_or_refresh(kid, alg).await,
            (Some(r), Lookup::Found(_)) if kid.is_none() => r.current().lookup(None, alg),
            _ => Lookup::NotFound,
        };
        match (local, remote) {
            // without a kid, a key is chosen only when exactly one fits
            (Lookup::Found(_), Lookup::Found(_)) => Err(Failure::UnknownKey),
            (Lookup::Found(k), _) | (_, Lookup::Found(k)) => Ok(k),
            (Lookup::AlgMismatch, _) | (_, Lookup::AlgMismatch) => Err(Failure::AlgNotAllowed),
            (Lookup::NotFound, Lookup::NotFound) => Err(Failure::UnknownKey),
        }
    }

    /// Verifies a token: structure, header, key, signature, then the claims against the clock.
    async fn verify(&self, token: &str, now: u64) -> Result<Verified, Failure> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Failure::Malformed);
        };
        if h.is_empty() || p.is_empty() {
            return Err(Failure::Malformed);
        }
        let header_json = URL_SAFE_NO_PAD.decode(h).map_err(|_| Failure::Malformed)?;
        let header: JoseHeader =
            serde_json::from_slice(&header_json).map_err(|_| Failure::Malformed)?;
        let Some((alg, validation)) = self
            .validations
            .iter()
            .find(|(a, _)| header.alg.parse::<Algorithm>().ok() == Some(*a))
        else {
            // `none`, unknown names, and algorithms this policy does not accept
            return Err(Failure::AlgNotAllowed);
        };
        if s.is_empty() {
            return Err(Failure::Malformed);
        }
        if self.require_at_jwt
            && !header.typ.as_deref().is_some_and(|t| {
                t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
            })
        {
            return Err(Failure::WrongType);
        }
        let key = self.find_key(header.kid.as_deref(), *alg).await?;
        let claims = match &key.key {
            KeyMaterial::Public(public) => {
                // the signing input is the token up to its second dot (RFC 7515 5.2)
                let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
                let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| Failure::Malformed)?;
                public
                    .verify_sig(signing_input, &sig)
                    .map_err(|_| Failure::BadSignature)?;
                let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| Failure::Malformed)?;
                serde_json::from_slice::<Map<String, Value>>(&payload)
                    .map_err(|_| Failure::Malformed)?
            }
            KeyMaterial::Secret(secret) => {
                jsonwebtoken::decode::<Map<String, Value>>(token, secret, validation)
                    .map_err(|e| map_error(&e))?
                    .claims
            }
        };

        let exp = match claims.get("exp") {
            None => return Err(Failure::MissingClaim),
            Some(v) => numeric_date(v).ok_or(Failure::Malformed)?,
        };
        if now > exp.saturating_add(self.leeway) {
            return Err(Failure::Expired);
        }
        if let Some(v) = claims.get("nbf") {
            let nbf = numeric_date(v).ok_or(Failure::Malformed)?;
            if nbf > now.saturating_add(self.leeway) {
                return Err(Failure::NotYetValid);
            }
        }
        match claims.get("iss") {
            None => return Err(Failure::MissingClaim),
            Some(Value::String(iss)) if self.issuers.iter().any(|i| i == iss) => {}
            Some(_) => return Err(Failure::WrongIssuer),
        }
        let aud_ok = match claims.get("aud") {
            None => return Err(Failure::MissingClaim),
            Some(Value::String(a)) => self.audiences.iter().any(|x| x == a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| self.audiences.iter().any(|x| x == a)),
            Some(_) => false,
        };
        if !aud_ok {
            return Err(Failure::WrongAudience);
        }
        Ok(Verified {
            exp,
            key,
            scopes_ok: has_scopes(&claims, &self.scopes),
            channel: self.token_channel(&claims),
            caller: ["sub", "client_id", "azp"]
                .iter()
                .find_map(|c| claims.get(*c).and_then(Value::as_str))
                .filter(|id| !id.is_empty())
                .map(|id| crate::pipeline::caller_id("jwt", id)),
        })
    }

    fn token_channel(&self, claims: &Map<String, Value>) -> Result<Option<Channel>, Failure> {
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        let from_claim = identity
            .claim
            .as_ref()
            .and_then(|c| claims.get(c))
            .and_then(Value::as_str);
        let name = from_claim.or_else(|| {
            claims
                .get(&identity.client_claim)
                .and_then(Value::as_str)
                .and_then(|id| identity.clients.get(id))
                .map(String::as_str)
        });
        let name = name.ok_or(Failure::NoChannel)?;
        self.channels
            .get(name)
            .map(Some)
            .ok_or(Failure::UnknownChannel)
    }
}

/// A NumericDate (seconds since the epoch, possibly fractional) as whole seconds.
fn numeric_date(v: &Value) -> Option<u64> {
    let f = v.as_f64()?;
    if !f.is_finite() {
        return None;
    }
    // `as` saturates: negative dates are 0 (long past), huge ones u64::MAX
    Some(f.floor() as u64)
}

/// Whether the claims grant every required scope (`scope`: space separated; `scp`: an array,
/// or a space-separated string as some providers write it).
fn has_scopes(claims: &Map<String, Value>, required: &[String]) -> bool {
    if required.is_empty() {
        return true;
    }
    let mut granted: Vec<&str> = Vec::new();
    for claim in ["scope", "scp"] {
        match claims.get(claim) {
            Some(Value::String(s)) => granted.extend(s.split_ascii_whitespace()),
            Some(Value::Array(list)) => granted.extend(list.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    required.iter().all(|r| granted.contains(&r.as_str()))
}

fn map_error(e: &jsonwebtoken::errors::Error) -> Failure {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature
        | K::InvalidEcdsaKey
        | K::InvalidEddsaKey
        | K::InvalidRsaKey(_)
        | K::InvalidKeyFormat => Failure::BadSignature,
        K::InvalidAlgorithm
        | K::MissingAlgorithm
        | K::InvalidAlgorithmName
        | K::UnsupportedAlgorithm => Failure::AlgNotAllowed,
        _ => Failure::Malformed,
    }
}

/// The bearer token of a request: from `Authorization: Bearer <token>` only (RFC 6750 2.1).
/// A token in the query string is refused, a header of another scheme counts as no token, and
/// the length is capped before anything is parsed.
fn bearer_token<'r>(req: &'r RequestView<'_>, max: usize) -> Result<&'r str, Failure> {
    if let Some(q) = req.query
        && q.split('&')
            .any(|p| p == "access_token" || p.starts_with("access_token="))
    {
        return Err(Failure::TokenInQuery);
    }
    let mut values = req.headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Failure::MissingToken);
    };
    if values.next().is_some() {
        return Err(Failure::InvalidRequest);
    }
    let bytes = value.as_bytes();
    if bytes.len() > max.saturating_add(64) {
        return Err(Failure::TooLong);
    }
    let (scheme, rest) = match bytes.iter().position(|b| *b == b' ') {
        Some(i) => (&bytes[..i], &bytes[i..]),
        None => (bytes, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(Failure::MissingToken);
    }
    let token = rest.trim_ascii();
    if token.is_empty() {
        return Err(Failure::Malformed);
    }
    if token.len() > max {
        return Err(Failure::TooLong);
    }
    // RFC 6750 b64token; a JWT uses only base64url and dots
    if !is_b64token(token) {
        return Err(Failure::Malformed);
    }
    std::str::from_utf8(token).map_err(|_| Failure::Malformed)
}

/// Whether every byte is one of an RFC 6750 `b64token`'s (letters, digits, `-._~+/`, and its
/// trailing `=`, taken anywhere). Tokens run to a kilobyte and this runs on every request, so
/// the test of a byte has no branch and no table: the compiler then checks a chunk's bytes 32
/// at a time, where a lookup per byte cost 8k instructions for a 700-byte token.
fn is_b64token(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .all(|chunk| chunk.iter().fold(true, |ok, &b| ok & b64token_byte(b)))
}

#[inline(always)]
fn b64token_byte(b: u8) -> bool {
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    letter
        | digit
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
        | (b == b'=')
}

impl Phases for Jwt {
    const PHASES: u8 = crate::pipeline::phase::REQUEST;

    fn guards_reads(&self) -> bool {
        true
    }

    async fn warm_up(&self) -> Result<(), String> {
        match &self.remote {
            Some(remote) => remote.ensure_loaded().await,
            None => Ok(()),
        }
    }

    async fn on_request(&self, req: &RequestView<'_>, state: &mut ExchangeState) -> Flow {
        match self.check(req, state).await {
            Ok(()) => {
                if !self.forward_token {
                    state
                        .upstream_removed_headers
                        .push(http::header::AUTHORIZATION);
                }
                Flow::Continue(())
            }
            Err(failure) => self.reject(failure),
        }
    }
}

#[cfg(test)]
mod tests;
