//! `webhook_signature`: a marketplace push must carry an HMAC-SHA256 of its raw body in a
//! header (Shopify's `X-Shopify-Hmac-Sha256` as a preset), made with a shared secret; compared
//! in constant time, with two secrets valid at once per channel so secrets can rotate. The
//! secret that matched names the channel when the route does not.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::WWW_AUTHENTICATE;
use http::{HeaderName, HeaderValue, StatusCode};
use prometheus::{IntCounter, IntCounterVec, Registry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{KindContext, PolicyKind};
use crate::metrics::{KindMetrics, SharedMetrics};
use crate::pipeline::{Channel, ExchangeState, Flow, Phases, RequestView};
use crate::problem::{Problem, Reply};
use crate::secret;

/// A marketplace whose webhook signing is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookPreset {
    /// Shopify: `X-Shopify-Hmac-Sha256` = base64(HMAC-SHA256(secret, raw body)).
    Shopify,
}

/// How the signature is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    /// Standard base64 (padding optional).
    Base64,
    /// Hexadecimal, either case.
    Hex,
}

/// Settings of a `webhook_signature` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSignatureSpec {
    /// A marketplace preset that sets `header` and `encoding` (either may still be given).
    #[serde(default)]
    pub preset: Option<WebhookPreset>,
    /// The header carrying the signature, e.g. `X-Shopify-Hmac-Sha256`. Required without a
    /// preset.
    #[serde(default)]
    pub header: Option<String>,
    /// How the signature is written. Default: the preset's, else `base64`.
    #[serde(default)]
    pub encoding: Option<SignatureEncoding>,
    /// Text before the signature in the header value, such as `sha256=`. Default: none.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The shared secrets. List two for the same channel (or two without one) while a secret
    /// rotates: both verify until the old one is removed.
    #[schemars(length(min = 1))]
    pub secrets: Vec<WebhookSecretSpec>,
}

/// One shared secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSecretSpec {
    /// The secret: a `${ENV_VAR}` or `file:path` reference, never a literal value.
    pub secret: String,
    /// The channel this secret belongs to. On a route with a `{channel}` parameter only that
    /// channel's secrets (and those without a channel) are tried; elsewhere the secret that
    /// matched makes the request that channel's.
    #[serde(default)]
    pub channel: Option<String>,
}

/// Standard base64, padded or not.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// At most this many secrets per channel (and without a channel): an old and a new one.
const MAX_SECRETS_PER_CHANNEL: usize = 2;

/// Why a webhook was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Missing,
    Malformed,
    Mismatch,
}

impl Failure {
    const ALL: [Failure; 3] = [Failure::Missing, Failure::Malformed, Failure::Mismatch];

    fn reason(self) -> &'static str {
        match self {
            Failure::Missing => "missing_signature",
            Failure::Malformed => "malformed_signature",
            Failure::Mismatch => "bad_signature",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Failure::Missing => "the webhook carries no signature header",
            Failure::Malformed => "the webhook signature header cannot be decoded",
            Failure::Mismatch => "the webhook signature does not match its body",
        }
    }
}

struct Key {
    /// HMAC state keyed with the secret (the secret itself is not kept).
    mac: Hmac<Sha256>,
    channel: Option<Channel>,
}

/// The compiled `webhook_signature` policy.
pub struct WebhookSignature {
    header: HeaderName,
    encoding: SignatureEncoding,
    prefix: Option<String>,
    keys: Vec<Key>,
    failures: Vec<IntCounter>,
    challenge: HeaderValue,
}

impl std::fmt::Debug for WebhookSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSignature")
            .field("header", &self.header)
            .field("encoding", &self.encoding)
            .field("secrets", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// What `webhook_signature` policies record: refusals, in `gateway_auth_failures_total`
/// (shared with `jwt`).
#[derive(Debug, Clone)]
pub struct WebhookSignatureMetrics {
    /// `gateway_auth_failures_total{policy,reason}`.
    pub auth_failures: IntCounterVec,
}

impl KindMetrics for WebhookSignatureMetrics {
    fn new(shared: &SharedMetrics) -> Result<Self, prometheus::Error> {
        Ok(WebhookSignatureMetrics {
            auth_failures: shared.auth_failures.clone(),
        })
    }

    /// Nothing of its own: the shared counter is registered once, with the shared metrics.
    fn register(&self, _: &Registry) -> Result<(), prometheus::Error> {
        Ok(())
    }
}

impl PolicyKind for WebhookSignature {
    type Spec = WebhookSignatureSpec;
    type Metrics = WebhookSignatureMetrics;

    /// Compiles the spec, resolving every secret.
    fn compile(
        spec: &WebhookSignatureSpec,
        cx: &mut KindContext<'_, '_, Self>,
    ) -> Option<WebhookSignature> {
        let errors_before = cx.errors.len();
        let (preset_header, preset_encoding) = match spec.preset {
            Some(WebhookPreset::Shopify) => (
                Some("X-Shopify-Hmac-Sha256"),
                Some(SignatureEncoding::Base64),
            ),
            None => (None, None),
        };
        let header_text = spec.header.as_deref().or(preset_header);
        let header = match header_text.map(|h| HeaderName::from_bytes(h.as_bytes())) {
            Some(Ok(h)) => Some(h),
            Some(Err(_)) => {
                cx.error("/header", "not a valid header name");
                None
            }
            None => {
                cx.error("/header", "set `header` (or a `preset`)");
                None
            }
        };
        let encoding = spec
            .encoding
            .or(preset_encoding)
            .unwrap_or(SignatureEncoding::Base64);
        if spec.secrets.is_empty() {
            cx.error("/secrets", "list at least one secret");
        }
        let mut keys = Vec::with_capacity(spec.secrets.len());
        for (i, s) in spec.secrets.iter().enumerate() {
            let at = format!("/secrets/{i}");
            let channel = match &s.channel {
                Some(name) => match cx.channels.get(name) {
                    Some(c) => Some(c),
                    None => {
                        cx.error(
                            &format!("{at}/channel"),
                            format!("channel {name:?} is not declared"),
                        );
                        continue;
                    }
                },
                None => None,
            };
            let same = spec.secrets[..i]
                .iter()
                .filter(|o| o.channel == s.channel)
                .count();
            if same >= MAX_SECRETS_PER_CHANNEL {
                cx.error(
                    &at,
                    "at most two secrets per channel (the current one and the next)",
                );
                continue;
            }
            if !secret::is_reference(&s.secret) {
                cx.error(
                    &format!("{at}/secret"),
                    "webhook secrets must be ${ENV_VAR} or file: references, never literal values",
                );
                continue;
            }
            let value = match secret::expand(&s.secret, cx.base_dir, cx.secrets) {
                Ok(v) => v,
                Err(msg) => {
                    cx.error(&format!("{at}/secret"), msg);
                    continue;
                }
            };
            if value.expose().is_empty() {
                cx.error(&format!("{at}/secret"), "the secret is empty");
                continue;
            }
            match Hmac::<Sha256>::new_from_slice(value.expose().as_bytes()) {
                Ok(mac) => keys.push(Key { mac, channel }),
                Err(_) => cx.error(&format!("{at}/secret"), "unusable secret"),
            }
        }
        let header = header?;
        if cx.errors.len() > errors_before {
            return None;
        }
        let failures = Failure::ALL
            .iter()
            .map(|f| {
                cx.metrics
                    .auth_failures
                    .with_label_values(&[cx.name, f.reason()])
            })
            .collect();
        let challenge = HeaderValue::from_str(&format!(
            "HMAC-SHA256 realm=\"webhooks\", header=\"{}\"",
            header.as_str()
        ))
        .unwrap_or(HeaderValue::from_static("HMAC-SHA256"));
        Some(WebhookSignature {
            header,
            encoding,
            prefix: spec.prefix.clone(),
            keys,
            failures,
            challenge,
        })
    }
}

impl WebhookSignature {
    fn reject(&self, failure: Failure) -> Flow {
        let i = Failure::ALL
            .iter()
            .position(|f| *f == failure)
            .unwrap_or_default();
        if let Some(c) = self.failures.get(i) {
            c.inc();
        }
        let problem = Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-signature",
            "Invalid webhook signature",
        )
        .with_detail(failure.detail());
        Flow::Break(
            Reply::problem(problem, failure.reason())
                .with_header(WWW_AUTHENTICATE, self.challenge.clone()),
        )
    }

    /// The signature bytes of a request.
    fn signature(&self, req: &RequestView<'_>) -> Result<Vec<u8>, Failure> {
        let mut values = req.headers.get_all(&self.header).iter();
        let value = values.next().ok_or(Failure::Missing)?;
        if values.next().is_some() {
            return Err(Failure::Malformed);
        }
        let mut text = value.as_bytes().trim_ascii();
        if let Some(prefix) = &self.prefix {
            text = text
                .strip_prefix(prefix.as_bytes())
                .ok_or(Failure::Malformed)?;
        }
        // an HMAC-SHA256 is 32 bytes: anything much longer is not one
        if text.is_empty() || text.len() > 128 {
            return Err(Failure::Malformed);
        }
        let bytes = match self.encoding {
            SignatureEncoding::Base64 => BASE64.decode(text).map_err(|_| Failure::Malformed)?,
            SignatureEncoding::Hex => hex::decode(text).map_err(|_| Failure::Malformed)?,
        };
        if bytes.len() != 32 {
            return Err(Failure::Malformed);
        }
        Ok(bytes)
    }
}

impl Phases for WebhookSignature {
    const PHASES: u8 = crate::pipeline::phase::REQUEST | crate::pipeline::phase::REQUEST_BODY;

    fn needs_body(&self) -> bool {
        true
    }

    async fn on_request(&self, req: &RequestView<'_>, _state: &mut ExchangeState) -> Flow {
        // refuse an unsigned push before its body is read
        match self.signature(req) {
            Ok(_) => Flow::Continue(()),
            Err(f) => self.reject(f),
        }
    }

    async fn on_request_body(
        &self,
        req: &RequestView<'_>,
        state: &mut ExchangeState,
        body: &mut Bytes,
    ) -> Flow {
        let signature = match self.signature(req) {
            Ok(s) => s,
            Err(f) => return self.reject(f),
        };
        let route_channel = state.channel.as_ref().map(|c| c.index);
        for key in &self.keys {
            let eligible = match (&key.channel, route_channel) {
                (None, _) | (_, None) => true,
                (Some(c), Some(r)) => c.index == r,
            };
            if !eligible {
                continue;
            }
            let mut mac = key.mac.clone();
            mac.update(body);
            // constant-time comparison (subtle), inside the hmac crate
            if mac.verify_slice(&signature).is_ok() {
                if state.channel.is_none() {
                    state.channel = key.channel.clone();
                }
                // the signer is the channel whose secret matched (else the route's channel)
                if state.caller.is_none() {
                    let signer = key.channel.as_ref().or(state.channel.as_ref());
                    state.caller = Some(crate::pipeline::caller_id(
                        "webhook_signature",
                        signer.map_or("-", |c| &c.name),
                    ));
                }
                return Flow::Continue(());
            }
        }
        self.reject(Failure::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::PathParams;
    use base64::engine::general_purpose::STANDARD;
    use http::{HeaderMap, Method};

    fn key(secret: &str, channel: Option<(usize, &str)>) -> Key {
        Key {
            mac: Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap(),
            channel: channel.map(|(index, name)| Channel {
                index,
                name: name.into(),
            }),
        }
    }

    fn policy(encoding: SignatureEncoding, keys: Vec<Key>) -> WebhookSignature {
        WebhookSignature {
            header: HeaderName::from_static("x-shopify-hmac-sha256"),
            encoding,
            prefix: None,
            keys,
            failures: Vec::new(),
            challenge: HeaderValue::from_static("HMAC-SHA256"),
        }
    }

    fn sign(secret: &str, body: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    async fn run(
        p: &WebhookSignature,
        header: Option<&str>,
        body: &[u8],
        state: &mut ExchangeState,
    ) -> Option<&'static str> {
        let mut headers = HeaderMap::new();
        if let Some(h) = header {
            headers.insert("x-shopify-hmac-sha256", HeaderValue::from_str(h).unwrap());
        }
        let params = PathParams::default();
        let req = RequestView {
            method: &Method::POST,
            path: "/webhooks/shopify",
            query: None,
            headers: &headers,
            params: &params,
        };
        if let Flow::Break(r) = p.on_request(&req, state).await {
            return Some(r.reason);
        }
        let mut body = Bytes::copy_from_slice(body);
        match p.on_request_body(&req, state, &mut body).await {
            Flow::Break(r) => Some(r.reason),
            Flow::Continue(()) => None,
        }
    }

    #[tokio::test]
    async fn shopify_signatures_verify_and_one_changed_byte_fails() {
        let p = policy(
            SignatureEncoding::Base64,
            vec![key("old-secret", None), key("new-secret", None)],
        );
        let body = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;
        let good = STANDARD.encode(sign("old-secret", body));
        let mut st = ExchangeState::default();
        assert_eq!(run(&p, Some(&good), body, &mut st).await, None);
        // the rotated secret verifies too
        let next = STANDARD.encode(sign("new-secret", body));
        assert_eq!(run(&p, Some(&next), body, &mut st).await, None);
        let mut tampered = body.to_vec();
        tampered[10] ^= 1;
        assert_eq!(
            run(&p, Some(&good), &tampered, &mut st).await,
            Some("bad_signature")
        );
        let other = STANDARD.encode(sign("someone-else", body));
        assert_eq!(
            run(&p, Some(&other), body, &mut st).await,
            Some("bad_signature")
        );
        assert_eq!(
            run(&p, None, body, &mut st).await,
            Some("missing_signature")
        );
        assert_eq!(
            run(&p, Some("!!not base64!!"), body, &mut st).await,
            Some("malformed_signature")
        );
        assert_eq!(
            run(&p, Some("c2hvcnQ="), body, &mut st).await,
            Some("malformed_signature")
        );
    }

    #[tokio::test]
    async fn hex_signatures_verify() {
        let p = policy(SignatureEncoding::Hex, vec![key("s", None)]);
        let body = b"payload";
        let sig = hex::encode(sign("s", body));
        assert_eq!(
            run(&p, Some(&sig), body, &mut ExchangeState::default()).await,
            None
        );
        assert_eq!(
            run(
                &p,
                Some(&sig.to_uppercase()),
                body,
                &mut ExchangeState::default()
            )
            .await,
            None
        );
    }

    #[tokio::test]
    async fn the_matching_secret_names_the_channel_and_a_route_channel_limits_the_secrets() {
        let p = policy(
            SignatureEncoding::Base64,
            vec![
                key("shop-secret", Some((1, "shopify"))),
                key("ebay-secret", Some((2, "ebay"))),
            ],
        );
        let body = b"{}";
        let shop = STANDARD.encode(sign("shop-secret", body));
        let mut st = ExchangeState::default();
        assert_eq!(run(&p, Some(&shop), body, &mut st).await, None);
        assert_eq!(st.channel.as_ref().map(|c| &*c.name), Some("shopify"));
        // on an eBay route, Shopify's secret does not count
        let mut st = ExchangeState {
            channel: Some(Channel {
                index: 2,
                name: "ebay".into(),
            }),
            ..ExchangeState::default()
        };
        assert_eq!(
            run(&p, Some(&shop), body, &mut st).await,
            Some("bad_signature")
        );
    }
}
