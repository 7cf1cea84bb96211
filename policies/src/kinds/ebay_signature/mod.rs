//! `ebay_signature`: eBay's notifications (Notification API push, e.g. marketplace account
//! deletion) carry `X-EBAY-SIGNATURE`: base64 of a JSON object `{"alg":"ecdsa","kid":..,
//! "signature":<base64 DER ECDSA>,"digest":"SHA1"}`. The signature is ECDSA P-256 over the raw
//! body, with the digest eBay names alongside the public key, which is fetched by `kid` from
//! the Notification API's `getPublicKey` with an application token (client credentials) and
//! cached (see [`keys`]). The policy also answers eBay's endpoint-validation challenge:
//! `GET <endpoint>?challenge_code=X` gets `{"challengeResponse": hex(SHA-256(X +
//! verification token + endpoint URL))}`.
//!
//! As in eBay's SDKs (event-notification-nodejs-sdk, event-notification-java-sdk).

mod keys;

use std::sync::Arc;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use p256::ecdsa::Signature;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{KindContext, PolicyKind};
use crate::credentials::{self, CredentialsPreset, CredentialsSpec};
use crate::metrics::{KindMetrics, SharedMetrics};
use crate::pipeline::{Channel, ExchangeState, Flow, Phases, RequestView};
use crate::problem::{Problem, Reply, ReplyBody};
use crate::secret;
use crate::units::DurationSpec;

pub(crate) use keys::KeyError;
use keys::{EbayKey, FETCH_RESULTS, HttpKeyApi, KeyCache, KeyCounters, KeyDigest};

/// eBay's production `getPublicKey` URL (sandbox: `api.sandbox.ebay.com`).
pub const EBAY_KEY_URL: &str =
    "https://api.ebay.com/commerce/notification/v1/public_key/{public_key_id}";

/// The signature header.
pub const EBAY_SIGNATURE_HEADER: HeaderName = HeaderName::from_static("x-ebay-signature");

/// Settings of an `ebay_signature` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EbaySignatureSpec {
    /// Where the public keys come from, and the application credentials that fetch them.
    pub keys: EbayKeysSpec,
    /// The endpoint-validation challenge eBay sends when the endpoint is registered (and
    /// from time to time after): `GET <route>?challenge_code=...` is answered by the gateway.
    /// Without it, GET requests are refused like unsigned notifications.
    #[serde(default)]
    pub challenge: Option<EbayChallengeSpec>,
    /// The channel verified notifications belong to (a declared channel, e.g. `ebay`). On a
    /// `{channel}` route it must be the route's (else 403); elsewhere the request becomes this
    /// channel's. Default: none.
    #[serde(default)]
    pub channel: Option<String>,
}

/// Where eBay's public keys come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EbayKeysSpec {
    /// The `getPublicKey` URL, with `{public_key_id}` where the signature's `kid` goes
    /// (`https://`; plain `http://` only to a loopback host, such as the marketplace
    /// simulator). Default: eBay production,
    /// `https://api.ebay.com/commerce/notification/v1/public_key/{public_key_id}`.
    #[serde(default = "default_key_url")]
    pub url: String,
    /// The application's credentials for the key API: `preset: ebay_application`
    /// (client-credentials grant), with an absolute `token_url` (eBay:
    /// `https://api.ebay.com/identity/v1/oauth2/token`), `client_id` and `client_secret`.
    pub credentials: CredentialsSpec,
    /// Age after which a cached key is fetched again in the background (it keeps verifying
    /// meanwhile, and after a failed refresh; a 404 drops it).
    #[serde(default = "default_max_age")]
    pub max_age: DurationSpec,
    /// Least time before a `kid` eBay answered 404 for is asked for again, and before any
    /// unknown `kid` is asked for after the key API failed (those get 503 meanwhile). `0s`:
    /// every unknown `kid` is asked for (one fetch at a time).
    #[serde(default = "default_cooldown")]
    pub refresh_cooldown: DurationSpec,
    /// Bound on one key fetch (the token call has its own, `credentials.timeout`).
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout: DurationSpec,
    /// Most keys cached (eBay's SDKs keep 100); the oldest makes room.
    #[serde(default = "default_max_keys")]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_keys: u32,
}

/// eBay's endpoint validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EbayChallengeSpec {
    /// The verification token given to eBay with the endpoint: `${ENV_VAR}` or `file:path`,
    /// 32 to 80 characters of letters, digits, `_` and `-` (eBay's rule).
    pub verification_token: String,
    /// The endpoint URL exactly as registered with eBay (it is part of the hash), e.g.
    /// `https://gateway.example.com/webhooks/ebay`.
    pub endpoint: String,
}

fn default_key_url() -> String {
    EBAY_KEY_URL.to_owned()
}
fn default_max_age() -> DurationSpec {
    DurationSpec::secs(3600)
}
fn default_cooldown() -> DurationSpec {
    DurationSpec::secs(30)
}
fn default_fetch_timeout() -> DurationSpec {
    DurationSpec::secs(5)
}
fn default_max_keys() -> u32 {
    100
}

/// Largest `X-EBAY-SIGNATURE` value read (eBay's are about 250 bytes).
const MAX_HEADER_BYTES: usize = 2048;
/// Largest `kid` (eBay's are UUIDs).
const MAX_KID_BYTES: usize = 128;
/// Largest `challenge_code` answered.
const MAX_CHALLENGE_BYTES: usize = 512;

/// Why a notification was refused; each is a metric `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Missing,
    Malformed,
    UnknownKey,
    Mismatch,
    KeyUnavailable,
    ChannelMismatch,
    MissingChallenge,
}

impl Failure {
    const ALL: [Failure; 7] = [
        Failure::Missing,
        Failure::Malformed,
        Failure::UnknownKey,
        Failure::Mismatch,
        Failure::KeyUnavailable,
        Failure::ChannelMismatch,
        Failure::MissingChallenge,
    ];

    fn reason(self) -> &'static str {
        match self {
            Failure::Missing => "missing_signature",
            Failure::Malformed => "malformed_signature",
            Failure::UnknownKey => "unknown_kid",
            Failure::Mismatch => "bad_signature",
            Failure::KeyUnavailable => "key_unavailable",
            Failure::ChannelMismatch => "channel_mismatch",
            Failure::MissingChallenge => "missing_challenge_code",
        }
    }

    fn problem(self) -> Problem {
        let (status, slug, title, detail) = match self {
            Failure::Missing => (
                StatusCode::UNAUTHORIZED,
                "invalid-signature",
                "Invalid eBay signature",
                "the notification carries no X-EBAY-SIGNATURE header",
            ),
            Failure::Malformed => (
                StatusCode::UNAUTHORIZED,
                "invalid-signature",
                "Invalid eBay signature",
                "the X-EBAY-SIGNATURE header cannot be decoded",
            ),
            Failure::UnknownKey => (
                StatusCode::UNAUTHORIZED,
                "invalid-signature",
                "Invalid eBay signature",
                "the notification is signed with a key eBay does not publish",
            ),
            Failure::Mismatch => (
                StatusCode::UNAUTHORIZED,
                "invalid-signature",
                "Invalid eBay signature",
                "the signature does not match the notification's body",
            ),
            Failure::KeyUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "signature-key-unavailable",
                "Signature key unavailable",
                "eBay's public key cannot be fetched right now; the notification can be retried",
            ),
            Failure::ChannelMismatch => (
                StatusCode::FORBIDDEN,
                "channel-forbidden",
                "Signature not valid for this channel",
                "an eBay notification is not valid on this channel's route",
            ),
            Failure::MissingChallenge => (
                StatusCode::BAD_REQUEST,
                "missing-challenge-code",
                "Missing challenge code",
                "a GET on this endpoint must carry eBay's challenge_code",
            ),
        };
        Problem::new(status, slug, title).with_detail(detail)
    }
}

/// The compiled challenge: the hash input after the code, kept as one value.
struct Challenge {
    /// verification token + endpoint URL (the secret part of the hash input).
    suffix: secret::Secret,
}

/// The compiled `ebay_signature` policy.
pub struct EbaySignature {
    keys: Arc<KeyCache>,
    challenge: Option<Challenge>,
    channel: Option<Channel>,
    failures: Vec<IntCounter>,
    challenges: IntCounter,
}

impl std::fmt::Debug for EbaySignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbaySignature")
            .field("keys", &self.keys)
            .field("challenge", &self.challenge.is_some())
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// What `ebay_signature` policies record.
#[derive(Debug, Clone)]
pub struct EbaySignatureMetrics {
    /// `gateway_auth_failures_total{policy,reason}` (shared with `jwt`, `webhook_signature`).
    pub auth_failures: IntCounterVec,
    /// `gateway_ebay_key_fetches_total{policy,result}`: calls to eBay's `getPublicKey`
    /// (`success`, `not_found`, `unavailable`, `malformed`, `token_unavailable`).
    pub key_fetches: IntCounterVec,
    /// `gateway_ebay_token_refreshes_total{policy,result}`: application-token calls for the
    /// key API (`success`, `unavailable`, `refused`, `malformed`).
    pub token_refreshes: IntCounterVec,
    /// `gateway_ebay_challenges_total{policy}`: endpoint-validation challenges answered.
    pub challenges: IntCounterVec,
}

impl KindMetrics for EbaySignatureMetrics {
    fn new(shared: &SharedMetrics) -> Result<Self, prometheus::Error> {
        Ok(EbaySignatureMetrics {
            auth_failures: shared.auth_failures.clone(),
            key_fetches: IntCounterVec::new(
                Opts::new(
                    "gateway_ebay_key_fetches_total",
                    "Fetches of eBay notification public keys, by policy and result.",
                ),
                &["policy", "result"],
            )?,
            token_refreshes: IntCounterVec::new(
                Opts::new(
                    "gateway_ebay_token_refreshes_total",
                    "Application-token calls for eBay's key API, by policy and result.",
                ),
                &["policy", "result"],
            )?,
            challenges: IntCounterVec::new(
                Opts::new(
                    "gateway_ebay_challenges_total",
                    "eBay endpoint-validation challenges answered, by policy.",
                ),
                &["policy"],
            )?,
        })
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.key_fetches.clone()))?;
        registry.register(Box::new(self.token_refreshes.clone()))?;
        registry.register(Box::new(self.challenges.clone()))
    }
}

/// Whether a verification token follows eBay's rule (32 to 80 of `[A-Za-z0-9_-]`).
fn valid_verification_token(t: &str) -> bool {
    (32..=80).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl PolicyKind for EbaySignature {
    type Spec = EbaySignatureSpec;
    type Metrics = EbaySignatureMetrics;

    /// Compiles the spec: checks the key URL, the credentials and the challenge, and keeps
    /// the key cache of the policy it replaces when its settings and credentials are equal.
    fn compile(spec: &EbaySignatureSpec, cx: &mut KindContext<'_, '_, Self>) -> Option<Self> {
        let errors_before = cx.errors.len();
        let k = &spec.keys;
        if !k.url.contains("{public_key_id}") {
            cx.error(
                "/keys/url",
                "the key URL must contain {public_key_id} where the signature's kid goes",
            );
        } else if let Err(msg) =
            crate::fetch::check_key_url(&k.url.replace("{public_key_id}", "kid"))
        {
            cx.error("/keys/url", msg);
        }
        if k.credentials.preset != CredentialsPreset::EbayApplication {
            cx.error(
                "/keys/credentials/preset",
                "eBay's key API takes an application token: use preset ebay_application",
            );
        }
        if k.credentials
            .token_url
            .as_deref()
            .is_some_and(|u| u.starts_with('/'))
        {
            cx.error(
                "/keys/credentials/token_url",
                "a policy has no upstream host: give the token endpoint's full URL",
            );
        }
        if k.fetch_timeout.0.is_zero() {
            cx.error(
                "/keys/fetch_timeout",
                "fetch_timeout must be more than zero",
            );
        }
        if k.max_keys == 0 {
            cx.error("/keys/max_keys", "max_keys must be at least 1");
        }
        let at = format!("{}/keys/credentials", cx.pointer);
        let credentials =
            credentials::compile(&k.credentials, &at, cx.base_dir, cx.secrets, cx.errors);

        let channel = match &spec.channel {
            Some(name) => match cx.channels.get(name) {
                Some(c) => Some(c),
                None => {
                    cx.error("/channel", format!("channel {name:?} is not declared"));
                    None
                }
            },
            None => None,
        };

        let challenge = spec.challenge.as_ref().and_then(|c| {
            match reqwest::Url::parse(&c.endpoint) {
                Ok(u) if matches!(u.scheme(), "https" | "http") => {}
                _ => cx.error(
                    "/challenge/endpoint",
                    format!(
                        "{:?} is not an http(s) URL (give the endpoint exactly as registered with eBay)",
                        c.endpoint
                    ),
                ),
            }
            if !secret::is_reference(&c.verification_token) {
                cx.error(
                    "/challenge/verification_token",
                    "the verification token must be a ${ENV_VAR} or file: reference, never a literal value",
                );
                return None;
            }
            match secret::expand(&c.verification_token, cx.base_dir, cx.secrets) {
                Ok(token) if valid_verification_token(token.expose()) => Some(Challenge {
                    suffix: secret::Secret::new(format!("{}{}", token.expose(), c.endpoint)),
                }),
                Ok(_) => {
                    // say what is wrong, never what it holds
                    cx.error(
                        "/challenge/verification_token",
                        "eBay's verification token is 32 to 80 characters of letters, digits, '_' and '-'",
                    );
                    None
                }
                Err(msg) => {
                    cx.error("/challenge/verification_token", msg);
                    None
                }
            }
        });

        if cx.errors.len() > errors_before {
            return None;
        }
        let credentials = Arc::new(credentials?);
        let settings = keys::KeySettings {
            url_template: k.url.clone(),
            max_age: k.max_age.0,
            cooldown: k.refresh_cooldown.0,
            timeout: k.fetch_timeout.0,
            max_keys: k.max_keys as usize,
        };
        let name = cx.name.clone();
        let m = cx.metrics;
        for result in FETCH_RESULTS {
            m.key_fetches.with_label_values(&[&name, result]);
        }
        for result in credentials::REFRESH_RESULTS {
            m.token_refreshes.with_label_values(&[&name, result]);
        }
        // keys already fetched survive a reload that leaves their source unchanged
        let keys = match cx.previous {
            Some(p) if p.keys.settings == settings && **p.keys.credentials() == *credentials => {
                p.keys.clone()
            }
            _ => Arc::new(KeyCache::new(
                settings,
                name.clone(),
                credentials,
                Arc::new(HttpKeyApi::default()),
                cx.clock.clone(),
                KeyCounters {
                    fetches: m.key_fetches.clone(),
                },
                m.token_refreshes.clone(),
            )),
        };
        let failures = Failure::ALL
            .iter()
            .map(|f| m.auth_failures.with_label_values(&[&name, f.reason()]))
            .collect();
        Some(EbaySignature {
            keys,
            challenge,
            channel,
            failures,
            challenges: m.challenges.with_label_values(&[&name]),
        })
    }
}

/// `X-EBAY-SIGNATURE` decoded.
#[derive(Debug)]
struct SignatureHeader {
    kid: String,
    signature: Signature,
    digest: Option<KeyDigest>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: String,
    signature: String,
    #[serde(default)]
    digest: Option<String>,
}

/// Standard base64, padded or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a header value (never panics; every failure is `Malformed`).
fn parse_header(value: &[u8]) -> Result<SignatureHeader, Failure> {
    let text = value.trim_ascii();
    if text.is_empty() || text.len() > MAX_HEADER_BYTES {
        return Err(Failure::Malformed);
    }
    let json = BASE64.decode(text).map_err(|_| Failure::Malformed)?;
    let raw: RawHeader = serde_json::from_slice(&json).map_err(|_| Failure::Malformed)?;
    if !raw.alg.eq_ignore_ascii_case("ecdsa") {
        return Err(Failure::Malformed);
    }
    // the kid goes into the key URL's path: only what eBay's UUIDs use
    if raw.kid.is_empty()
        || raw.kid.len() > MAX_KID_BYTES
        || !raw
            .kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || raw.kid.bytes().all(|b| b == b'.')
    {
        return Err(Failure::Malformed);
    }
    let der = BASE64
        .decode(raw.signature.as_bytes())
        .map_err(|_| Failure::Malformed)?;
    let signature = Signature::from_der(&der).map_err(|_| Failure::Malformed)?;
    let digest = match &raw.digest {
        Some(d) => Some(KeyDigest::parse(d).ok_or(Failure::Malformed)?),
        None => None,
    };
    Ok(SignatureHeader {
        kid: raw.kid,
        signature,
        digest,
    })
}

/// Whether `signature` is `key`'s over `body` (with the key's digest; a header naming another
/// digest does not verify).
fn verify(key: &EbayKey, header: &SignatureHeader, body: &[u8]) -> bool {
    if header.digest.is_some_and(|d| d != key.digest) {
        return false;
    }
    let digest = key.digest.digest(body);
    key.key
        .verify_prehash(digest.as_ref(), &header.signature)
        .is_ok()
}

/// eBay's challenge response: hex(SHA-256(code + verification token + endpoint)).
fn challenge_response(code: &str, suffix: &str) -> String {
    let mut h = Sha256::new();
    h.update(code.as_bytes());
    h.update(suffix.as_bytes());
    hex::encode(h.finalize())
}

/// The key a request's header phase found, for its body phase.
struct Resolved {
    header: SignatureHeader,
    key: Arc<EbayKey>,
}

impl EbaySignature {
    fn reject(&self, failure: Failure) -> Flow {
        let i = Failure::ALL
            .iter()
            .position(|f| *f == failure)
            .unwrap_or_default();
        if let Some(c) = self.failures.get(i) {
            c.inc();
        }
        let mut reply = Reply::problem(failure.problem(), failure.reason());
        match failure {
            Failure::KeyUnavailable => {
                reply = reply.with_header(RETRY_AFTER, HeaderValue::from_static("30"));
            }
            Failure::ChannelMismatch | Failure::MissingChallenge => {}
            _ => {
                reply = reply.with_header(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("ECDSA realm=\"ebay\", header=\"X-EBAY-SIGNATURE\""),
                );
            }
        }
        Flow::Break(reply)
    }

    /// Answers eBay's challenge (a GET with `challenge_code`).
    fn answer_challenge(&self, challenge: &Challenge, query: Option<&str>) -> Flow {
        let code = query.and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "challenge_code")
                .map(|(_, v)| v.into_owned())
        });
        let Some(code) = code.filter(|c| !c.is_empty() && c.len() <= MAX_CHALLENGE_BYTES) else {
            return self.reject(Failure::MissingChallenge);
        };
        self.challenges.inc();
        let doc = serde_json::json!({
            "challengeResponse": challenge_response(&code, challenge.suffix.expose()),
        });
        Flow::Break(Reply {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: ReplyBody::Bytes {
                content_type: Some(HeaderValue::from_static("application/json")),
                body: Bytes::from(doc.to_string()),
            },
            reason: "ebay_challenge",
            policy: None,
        })
    }

    /// The header and its key; the key is fetched here, so a notification whose key cannot be
    /// had is refused before its body is read.
    async fn resolve(&self, req: &RequestView<'_>) -> Result<Resolved, Failure> {
        let mut values = req.headers.get_all(&EBAY_SIGNATURE_HEADER).iter();
        let value = values.next().ok_or(Failure::Missing)?;
        if values.next().is_some() {
            return Err(Failure::Malformed);
        }
        let header = parse_header(value.as_bytes())?;
        let key = self.keys.key(&header.kid).await.map_err(|e| match e {
            KeyError::Unknown => Failure::UnknownKey,
            KeyError::Unavailable => Failure::KeyUnavailable,
        })?;
        Ok(Resolved { header, key })
    }
}

impl Phases for EbaySignature {
    const PHASES: u8 = crate::pipeline::phase::REQUEST | crate::pipeline::phase::REQUEST_BODY;

    fn needs_body(&self) -> bool {
        true
    }

    async fn on_request(&self, req: &RequestView<'_>, state: &mut ExchangeState) -> Flow {
        if let Some(challenge) = &self.challenge
            && *req.method == Method::GET
        {
            return self.answer_challenge(challenge, req.query);
        }
        if let (Some(mine), Some(route)) = (&self.channel, &state.channel)
            && mine.index != route.index
        {
            return self.reject(Failure::ChannelMismatch);
        }
        match self.resolve(req).await {
            Ok(resolved) => {
                state.extensions.insert(Arc::new(resolved));
                Flow::Continue(())
            }
            Err(f) => self.reject(f),
        }
    }

    async fn on_request_body(
        &self,
        req: &RequestView<'_>,
        state: &mut ExchangeState,
        body: &mut Bytes,
    ) -> Flow {
        let resolved = match state.extensions.remove::<Arc<Resolved>>() {
            Some(r) => r,
            // the header phase always runs first; resolve again rather than trust nothing
            None => match self.resolve(req).await {
                Ok(r) => Arc::new(r),
                Err(f) => return self.reject(f),
            },
        };
        if !verify(&resolved.key, &resolved.header, body) {
            return self.reject(Failure::Mismatch);
        }
        if state.channel.is_none() {
            state.channel = self.channel.clone();
        }
        if state.caller.is_none() {
            state.caller = Some(crate::pipeline::caller_id(
                "ebay_signature",
                state.channel.as_ref().map_or("-", |c| &c.name),
            ));
        }
        Flow::Continue(())
    }
}

#[cfg(test)]
mod tests;
