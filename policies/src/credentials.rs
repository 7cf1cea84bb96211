//! Credentials the gateway presents when it calls an upstream on its own behalf (a marketplace's
//! API): the `credentials:` key of an upstream, compiled, and the decisions about its access
//! token — what the token call looks like for each marketplace's preset, which headers carry the
//! token, and a per-upstream cache that refreshes it before it expires. The HTTP exchange itself
//! sits behind [`TokenSource`] (the gateway implements it with reqwest), and time behind
//! [`Clock`], so every decision here is unit-tested with plain values.
//!
//! Secret values (client secret, refresh token, access tokens) never appear in `Debug` output,
//! logs or errors.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use prometheus::IntCounterVec;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::error::ErrorSink;
use crate::secret::{self, Secret, SecretSource};
use crate::units::DurationSpec;

/// Which marketplace's token scheme an upstream's credentials follow. The preset fixes the
/// grant, how the client authenticates to the token endpoint, and the header the token travels
/// in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsPreset {
    /// Login with Amazon (Selling Partner API): `grant_type=refresh_token` with `client_id`
    /// and `client_secret` in the form body; the token goes in `x-amz-access-token`. Needs
    /// `token_url` (e.g. `https://api.amazon.com/auth/o2/token`), `client_id`,
    /// `client_secret`, `refresh_token`.
    AmazonLwa,
    /// Walmart Marketplace: `grant_type=client_credentials` with HTTP Basic client
    /// authentication; every call (the token call included) carries `WM_SVC.NAME` and a fresh
    /// `WM_QOS.CORRELATION_ID`; the token goes in `WM_SEC.ACCESS_TOKEN`. Needs `token_url`
    /// (e.g. `https://marketplace.walmartapis.com/v3/token`), `client_id`, `client_secret`.
    Walmart,
    /// eBay: `grant_type=refresh_token` (with `scope` when set) and HTTP Basic client
    /// authentication; the token goes in `Authorization: Bearer`. Needs `token_url` (e.g.
    /// `https://api.ebay.com/identity/v1/oauth2/token`), `client_id`, `client_secret`,
    /// `refresh_token`.
    Ebay,
    /// eBay application token: `grant_type=client_credentials` (with `scope`, default
    /// `https://api.ebay.com/oauth/api_scope`) and HTTP Basic client authentication; the token
    /// goes in `Authorization: Bearer`. For APIs that act for the application rather than a
    /// seller, such as the Notification API's `getPublicKey`. Needs `token_url`, `client_id`,
    /// `client_secret`.
    EbayApplication,
    /// Shopify (custom app): a static Admin API access token in `X-Shopify-Access-Token`; no
    /// token endpoint. Needs `token`.
    Shopify,
}

/// How an access token is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// OAuth 2 `refresh_token` grant.
    RefreshToken,
    /// OAuth 2 `client_credentials` grant.
    ClientCredentials,
    /// A static token from the policy file; nothing is fetched.
    Static,
}

impl CredentialsPreset {
    /// The name as written in policy files.
    pub fn name(self) -> &'static str {
        match self {
            CredentialsPreset::AmazonLwa => "amazon_lwa",
            CredentialsPreset::Walmart => "walmart",
            CredentialsPreset::Ebay => "ebay",
            CredentialsPreset::EbayApplication => "ebay_application",
            CredentialsPreset::Shopify => "shopify",
        }
    }

    /// The grant the preset uses.
    pub fn grant(self) -> Grant {
        match self {
            CredentialsPreset::AmazonLwa | CredentialsPreset::Ebay => Grant::RefreshToken,
            CredentialsPreset::Walmart | CredentialsPreset::EbayApplication => {
                Grant::ClientCredentials
            }
            CredentialsPreset::Shopify => Grant::Static,
        }
    }

    /// Whether the client authenticates to the token endpoint with HTTP Basic (otherwise its
    /// id and secret travel in the form body).
    pub fn basic_client_auth(self) -> bool {
        matches!(
            self,
            CredentialsPreset::Walmart
                | CredentialsPreset::Ebay
                | CredentialsPreset::EbayApplication
        )
    }

    /// The header an API call carries the access token in.
    pub fn token_header(self) -> HeaderName {
        match self {
            CredentialsPreset::AmazonLwa => HeaderName::from_static("x-amz-access-token"),
            CredentialsPreset::Walmart => HeaderName::from_static("wm_sec.access_token"),
            CredentialsPreset::Ebay | CredentialsPreset::EbayApplication => {
                http::header::AUTHORIZATION
            }
            CredentialsPreset::Shopify => HeaderName::from_static("x-shopify-access-token"),
        }
    }

    /// The keys this preset needs (`client_id`, ...), and the ones it accepts besides.
    fn keys(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            CredentialsPreset::AmazonLwa => (
                &["token_url", "client_id", "client_secret", "refresh_token"],
                &[],
            ),
            CredentialsPreset::Walmart => (
                &["token_url", "client_id", "client_secret"],
                &["service_name"],
            ),
            CredentialsPreset::Ebay => (
                &["token_url", "client_id", "client_secret", "refresh_token"],
                &["scope"],
            ),
            CredentialsPreset::EbayApplication => {
                (&["token_url", "client_id", "client_secret"], &["scope"])
            }
            CredentialsPreset::Shopify => (&["token"], &[]),
        }
    }
}

/// The scope `ebay_application` asks for when none is set: eBay's public application scope.
pub const EBAY_APPLICATION_SCOPE: &str = "https://api.ebay.com/oauth/api_scope";

/// `WM_SVC.NAME`, sent on every Walmart call.
pub const WALMART_SERVICE_NAME_HEADER: HeaderName = HeaderName::from_static("wm_svc.name");
/// `WM_QOS.CORRELATION_ID`, a fresh id on every Walmart call.
pub const WALMART_CORRELATION_HEADER: HeaderName = HeaderName::from_static("wm_qos.correlation_id");
/// The `WM_SVC.NAME` sent when `service_name` is not set.
pub const DEFAULT_WALMART_SERVICE_NAME: &str = "Walmart Marketplace";

/// The credentials an upstream's calls carry: a marketplace preset and its keys. Secrets are
/// `${ENV_VAR}` or `file:path` references, never literal values; they are read when the file
/// is compiled (a reload picks up a rotated secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSpec {
    /// The marketplace's token scheme: `amazon_lwa`, `walmart`, `ebay`, `ebay_application`
    /// or `shopify`.
    pub preset: CredentialsPreset,
    /// The token endpoint (`https://`, or `http://` to a loopback host for a local
    /// simulator), or a path (`/v3/token`) on the upstream's own host (its first endpoint, in
    /// its scheme). Required by every preset but `shopify`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// The client (application) id: a literal or a secret reference.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The client secret: `${ENV_VAR}` or `file:path`.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The long-lived refresh token (`amazon_lwa`, `ebay`): `${ENV_VAR}` or `file:path`.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// The OAuth scopes asked for, space-separated (`ebay`, `ebay_application`; optional;
    /// `ebay_application` asks for `https://api.ebay.com/oauth/api_scope` without one).
    #[serde(default)]
    pub scope: Option<String>,
    /// The static access token (`shopify`): `${ENV_VAR}` or `file:path`.
    #[serde(default)]
    pub token: Option<String>,
    /// The `WM_SVC.NAME` header (`walmart`). Default: `Walmart Marketplace`.
    #[serde(default)]
    pub service_name: Option<String>,
    /// How long before its expiry a token is replaced (at most half its lifetime is kept
    /// back, so a short-lived token is not fetched on every call). A token past its expiry is
    /// never sent.
    #[serde(default = "default_refresh_before")]
    pub refresh_before: DurationSpec,
    /// Budget of one token call, from connecting to the last byte of the answer.
    #[serde(default = "default_token_timeout")]
    pub timeout: DurationSpec,
}

fn default_refresh_before() -> DurationSpec {
    DurationSpec::secs(60)
}
fn default_token_timeout() -> DurationSpec {
    DurationSpec::secs(5)
}

/// Compiled credentials. Equal credentials (same preset, URL, settings and secret values) let
/// a token cache survive a reload; a rotated secret makes them differ.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The preset.
    pub preset: CredentialsPreset,
    /// The token endpoint (`None` for `shopify`).
    pub token_url: Option<String>,
    client_id: Option<Secret>,
    client_secret: Option<Secret>,
    refresh_token: Option<Secret>,
    /// The scopes asked for (`ebay`).
    pub scope: Option<String>,
    static_token: Option<AccessToken>,
    service_name: Option<HeaderValue>,
    /// How long before expiry a token is replaced.
    pub refresh_before: Duration,
    /// Budget of one token call.
    pub timeout: Duration,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // names of what is configured, never a value
        f.debug_struct("Credentials")
            .field("preset", &self.preset.name())
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id.is_some())
            .field("client_secret", &self.client_secret.is_some())
            .field("refresh_token", &self.refresh_token.is_some())
            .field("scope", &self.scope)
            .field("token", &self.static_token.is_some())
            .field("refresh_before", &self.refresh_before)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Compiles an upstream's `credentials:` (at JSON pointer `at`), reporting every problem to
/// `errors`; `None` when there was one.
pub fn compile(
    spec: &CredentialsSpec,
    at: &str,
    base_dir: &Path,
    secrets: &dyn SecretSource,
    errors: &mut ErrorSink<'_>,
) -> Option<Credentials> {
    let before = errors.len();
    let preset = spec.preset;
    let (required, optional) = preset.keys();
    let given: [(&str, Option<&String>); 7] = [
        ("token_url", spec.token_url.as_ref()),
        ("client_id", spec.client_id.as_ref()),
        ("client_secret", spec.client_secret.as_ref()),
        ("refresh_token", spec.refresh_token.as_ref()),
        ("scope", spec.scope.as_ref()),
        ("token", spec.token.as_ref()),
        ("service_name", spec.service_name.as_ref()),
    ];
    for (key, value) in given {
        match value {
            None if required.contains(&key) => {
                errors.at(at, format!("preset {} needs {key}", preset.name()))
            }
            Some(_) if !required.contains(&key) && !optional.contains(&key) => errors.at_key(
                &format!("{at}/{key}"),
                format!("{key} is not used by preset {}", preset.name()),
            ),
            _ => {}
        }
    }
    if let Some(url) = &spec.token_url {
        // a path is the token endpoint on the upstream's own host (Walmart's and eBay's are)
        let checked = if url.starts_with('/') {
            if url.starts_with("//") || url.contains(['?', '#', ' ']) {
                Err(format!(
                    "token_url {url:?}: a path on the upstream's host is /like/this"
                ))
            } else {
                Ok(())
            }
        } else {
            crate::fetch::check_key_url(url)
        };
        if let Err(msg) = checked {
            errors.at(&format!("{at}/token_url"), msg);
        }
    }
    let mut resolve = |key: &str, value: Option<&String>, must_be_reference: bool| {
        let value = value?;
        let pointer = format!("{at}/{key}");
        if must_be_reference && !secret::is_reference(value) {
            errors.at(
                &pointer,
                format!("{key} must be a ${{ENV_VAR}} or file: reference, never a literal value"),
            );
            return None;
        }
        match secret::expand(value, base_dir, secrets) {
            Ok(s) if s.expose().is_empty() => {
                errors.at(&pointer, format!("{key} is empty"));
                None
            }
            Ok(s) => Some(s),
            Err(msg) => {
                errors.at(&pointer, msg);
                None
            }
        }
    };
    let client_id = resolve("client_id", spec.client_id.as_ref(), false);
    let client_secret = resolve("client_secret", spec.client_secret.as_ref(), true);
    let refresh_token = resolve("refresh_token", spec.refresh_token.as_ref(), true);
    let static_token = resolve("token", spec.token.as_ref(), true);
    if let Some(token) = &static_token
        && HeaderValue::from_str(token.expose()).is_err()
    {
        // say which key, never what it holds
        errors.at(&format!("{at}/token"), "token is not a valid header value");
    }
    let service_name = match &spec.service_name {
        Some(name) => match HeaderValue::from_str(name) {
            Ok(v) if !name.is_empty() => Some(v),
            _ => {
                errors.at(
                    &format!("{at}/service_name"),
                    format!("{name:?} is not a valid header value"),
                );
                None
            }
        },
        None if preset == CredentialsPreset::Walmart => {
            Some(HeaderValue::from_static(DEFAULT_WALMART_SERVICE_NAME))
        }
        None => None,
    };
    if spec.timeout.0.is_zero() {
        errors.at(&format!("{at}/timeout"), "timeout must be more than zero");
    }
    if errors.len() != before {
        return None;
    }
    Some(Credentials {
        preset,
        token_url: spec.token_url.clone(),
        client_id,
        client_secret,
        refresh_token,
        // eBay's client-credentials grant requires a scope; the public one fits every
        // application-level API
        scope: spec.scope.clone().or_else(|| {
            (preset == CredentialsPreset::EbayApplication)
                .then(|| EBAY_APPLICATION_SCOPE.to_owned())
        }),
        static_token: static_token.map(|s| AccessToken::new(s.expose())),
        service_name,
        refresh_before: spec.refresh_before.0,
        timeout: spec.timeout.0,
    })
}

/// An access token; its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    /// Wraps a token value.
    pub fn new(value: &str) -> Self {
        AccessToken(Arc::from(value))
    }

    /// The value, for the header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(***)")
    }
}

/// The token call of credentials that fetch one: a `POST` of `form` (form-encoded) to `url`,
/// with HTTP Basic client authentication when `basic` is set and these `headers`. Its `Debug`
/// names the form keys, never their values.
#[derive(Clone)]
pub struct TokenRequest {
    /// The token endpoint.
    pub url: String,
    /// The form fields, in order.
    pub form: Vec<(&'static str, String)>,
    /// Client id and secret for HTTP Basic authentication.
    pub basic: Option<(String, String)>,
    /// Extra headers (`Accept`, Walmart's service name and correlation id).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Budget of the whole exchange.
    pub timeout: Duration,
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.form.iter().map(|(k, _)| *k).collect();
        let headers: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("TokenRequest")
            .field("url", &self.url)
            .field("form", &keys)
            .field("basic", &self.basic.is_some())
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn exposed(s: &Option<Secret>) -> String {
    s.as_ref()
        .map(|s| s.expose().to_owned())
        .unwrap_or_default()
}

impl Credentials {
    /// Whether `token_url` is a path on the upstream's own host, to be placed with
    /// [`Credentials::on_host`] once the upstream's endpoint is known.
    pub fn token_url_is_relative(&self) -> bool {
        self.token_url
            .as_deref()
            .is_some_and(|u| u.starts_with('/'))
    }

    /// These credentials with a relative `token_url` placed on `base` (`http://host:port`,
    /// the upstream's first endpoint).
    pub fn on_host(&self, base: &str) -> Credentials {
        let mut placed = self.clone();
        if let Some(path) = self.token_url.as_deref().filter(|u| u.starts_with('/')) {
            placed.token_url = Some(format!("{}{path}", base.trim_end_matches('/')));
        }
        placed
    }

    /// The token call, with `correlation_id` as Walmart's `WM_QOS.CORRELATION_ID` (a fresh id
    /// per call); `None` for a static token.
    pub fn token_request(&self, correlation_id: &str) -> Option<TokenRequest> {
        let grant = self.preset.grant();
        let url = self.token_url.clone()?;
        let mut form: Vec<(&'static str, String)> = Vec::with_capacity(4);
        match grant {
            Grant::Static => return None,
            Grant::RefreshToken => {
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", exposed(&self.refresh_token)));
            }
            Grant::ClientCredentials => form.push(("grant_type", "client_credentials".into())),
        }
        if let Some(scope) = &self.scope {
            form.push(("scope", scope.clone()));
        }
        let basic = if self.preset.basic_client_auth() {
            Some((exposed(&self.client_id), exposed(&self.client_secret)))
        } else {
            form.push(("client_id", exposed(&self.client_id)));
            form.push(("client_secret", exposed(&self.client_secret)));
            None
        };
        let mut headers = vec![(
            http::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        )];
        self.walmart_headers(correlation_id, &mut headers);
        Some(TokenRequest {
            url,
            form,
            basic,
            headers,
            timeout: self.timeout,
        })
    }

    fn walmart_headers(&self, correlation_id: &str, out: &mut Vec<(HeaderName, HeaderValue)>) {
        if self.preset != CredentialsPreset::Walmart {
            return;
        }
        if let Some(name) = &self.service_name {
            out.push((WALMART_SERVICE_NAME_HEADER, name.clone()));
        }
        if let Ok(id) = HeaderValue::from_str(correlation_id) {
            out.push((WALMART_CORRELATION_HEADER, id));
        }
    }

    /// The static token, when the preset uses one.
    pub fn static_token(&self) -> Option<&AccessToken> {
        self.static_token.as_ref()
    }

    /// The headers an API call carries: the token in the preset's header (marked sensitive),
    /// and for Walmart `WM_SVC.NAME` and `correlation_id` as `WM_QOS.CORRELATION_ID`.
    pub fn api_headers(
        &self,
        token: &AccessToken,
        correlation_id: &str,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, TokenFailure> {
        let text = match self.preset {
            CredentialsPreset::Ebay | CredentialsPreset::EbayApplication => {
                format!("Bearer {}", token.expose())
            }
            _ => token.expose().to_owned(),
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| {
            TokenFailure::Malformed("the access token is not a valid header value".into())
        })?;
        value.set_sensitive(true);
        let mut out = vec![(self.preset.token_header(), value)];
        self.walmart_headers(correlation_id, &mut out);
        Ok(out)
    }
}

/// A token a token endpoint issued.
#[derive(Debug, Clone)]
pub struct FetchedToken {
    /// The token.
    pub access_token: AccessToken,
    /// Its lifetime from when it was asked for.
    pub expires_in: Duration,
}

/// Reads a token endpoint's JSON answer: `access_token` (a non-empty string) and `expires_in`
/// (seconds, more than zero; a number or a numeric string). Errors never quote the answer,
/// which may hold a token.
pub fn parse_token_response(body: &[u8]) -> Result<FetchedToken, TokenFailure> {
    let malformed = |why: &str| TokenFailure::Malformed(why.to_owned());
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| malformed("the answer is not JSON"))?;
    let token = doc
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("the answer has no access_token"))?;
    let expires_in = match doc.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .filter(|s| *s > 0)
    .ok_or_else(|| malformed("the answer has no positive expires_in"))?;
    Ok(FetchedToken {
        access_token: AccessToken::new(token),
        expires_in: Duration::from_secs(expires_in),
    })
}

/// Why no token could be had. Messages never carry a secret or a token endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFailure {
    /// The token endpoint could not be reached, timed out, or failed (5xx, 429).
    #[error("the token endpoint is unavailable: {0}")]
    Unavailable(String),
    /// The token endpoint refused the credentials (a 4xx answer).
    #[error("the token endpoint refused the credentials (HTTP {0})")]
    Refused(u16),
    /// The answer could not be used.
    #[error("the token endpoint's answer is malformed: {0}")]
    Malformed(String),
}

impl TokenFailure {
    /// The `result` label of `gateway_outbound_token_refreshes_total`.
    pub fn label(&self) -> &'static str {
        match self {
            TokenFailure::Unavailable(_) => "unavailable",
            TokenFailure::Refused(_) => "refused",
            TokenFailure::Malformed(_) => "malformed",
        }
    }
}

/// Every `result` label of `gateway_outbound_token_refreshes_total`.
pub const REFRESH_RESULTS: [&str; 4] = ["success", "unavailable", "refused", "malformed"];

/// No access token for an upstream, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream {upstream}: no access token: {failure}")]
pub struct AuthError {
    /// The upstream.
    pub upstream: Arc<str>,
    /// Why.
    pub failure: TokenFailure,
}

/// A token fetch in flight.
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<FetchedToken, TokenFailure>> + Send + 'a>>;

/// Fetches a new access token for credentials (the gateway's implementation posts
/// [`Credentials::token_request`]).
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// One token call.
    fn fetch<'a>(&'a self, credentials: &'a Credentials) -> TokenFuture<'a>;
}

#[derive(Debug)]
struct Cached {
    token: AccessToken,
    /// Monotonic time from which the token is no longer handed out.
    refresh_at: Duration,
}

#[derive(Debug, Default)]
struct CacheState {
    token: Option<Cached>,
    /// Finished fetch attempts, so callers that waited for one can tell.
    attempts: u64,
    /// The failure of the last attempt, when it failed.
    last_failure: Option<TokenFailure>,
}

/// The access token of one upstream's credentials: fetched on first use, handed out until
/// `refresh_before` (at most half its lifetime) before it expires, then replaced before use,
/// so an expired token is never sent. Callers that need a new token at the same time share one
/// fetch (and its failure). The gateway keeps one per upstream across reloads that leave the
/// credentials unchanged.
pub struct TokenCache {
    upstream: Arc<str>,
    credentials: Arc<Credentials>,
    clock: Arc<dyn Clock>,
    refreshes: IntCounterVec,
    state: Mutex<CacheState>,
    gate: tokio::sync::Mutex<()>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("upstream", &self.upstream)
            .field("preset", &self.credentials.preset.name())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// An empty cache for `upstream`'s `credentials`; every fetch is counted in `refreshes`
    /// (labels `upstream`, `result`).
    pub fn new(
        upstream: Arc<str>,
        credentials: Arc<Credentials>,
        clock: Arc<dyn Clock>,
        refreshes: IntCounterVec,
    ) -> Self {
        TokenCache {
            upstream,
            credentials,
            clock,
            refreshes,
            state: Mutex::new(CacheState::default()),
            gate: tokio::sync::Mutex::new(()),
        }
    }

    /// The credentials this cache serves.
    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, state: &CacheState) -> Option<AccessToken> {
        let now = self.clock.monotonic();
        state
            .token
            .as_ref()
            .filter(|c| now < c.refresh_at)
            .map(|c| c.token.clone())
    }

    fn error(&self, failure: TokenFailure) -> AuthError {
        AuthError {
            upstream: self.upstream.clone(),
            failure,
        }
    }

    /// A token to send now: the cached one while it is fresh, else a new one from `source`.
    pub async fn token(&self, source: &dyn TokenSource) -> Result<AccessToken, AuthError> {
        if let Some(token) = self.credentials.static_token() {
            return Ok(token.clone());
        }
        let seen = {
            let state = self.lock();
            if let Some(token) = self.fresh(&state) {
                return Ok(token);
            }
            state.attempts
        };
        let _gate = self.gate.lock().await;
        {
            let state = self.lock();
            if let Some(token) = self.fresh(&state) {
                return Ok(token);
            }
            // an attempt finished while this caller waited and failed: share its failure
            // rather than hammer a failing endpoint once per waiting caller
            if state.attempts != seen
                && let Some(failure) = &state.last_failure
            {
                return Err(self.error(failure.clone()));
            }
        }
        // the lifetime counts from before the call, so the token never outlives its expiry
        let asked_at = self.clock.monotonic();
        let result = source.fetch(&self.credentials).await;
        let mut state = self.lock();
        state.attempts += 1;
        match result {
            Ok(fetched) => {
                let keep_back = self.credentials.refresh_before.min(fetched.expires_in / 2);
                let refresh_at = asked_at + fetched.expires_in - keep_back;
                state.token = Some(Cached {
                    token: fetched.access_token.clone(),
                    refresh_at,
                });
                state.last_failure = None;
                self.count("success");
                Ok(fetched.access_token)
            }
            Err(failure) => {
                state.token = None;
                state.last_failure = Some(failure.clone());
                self.count(failure.label());
                Err(self.error(failure))
            }
        }
    }

    fn count(&self, result: &str) {
        self.refreshes
            .with_label_values(&[&*self.upstream, result])
            .inc();
    }

    /// The upstream refused the token (a 401): it is dropped, and the next [`token`] fetches
    /// a new one. A static token stays (there is nothing to fetch).
    ///
    /// [`token`]: TokenCache::token
    pub fn refused(&self) {
        self.lock().token = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::secret::tests::FakeEnv;
    use crate::source::parse_yaml;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn env() -> FakeEnv {
        FakeEnv(
            [
                ("LWA_ID", "amzn1.application-oa2-client.x"),
                ("LWA_SECRET", "lwa-secret-value"),
                ("LWA_REFRESH", "Atzr|refresh-value"),
                ("WM_ID", "wm-client"),
                ("WM_SECRET", "wm-secret-value"),
                ("SHOP_TOKEN", "shpat_static-value"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        )
    }

    /// Compiles `yaml` (the body of one `credentials:` key) and returns the credentials or
    /// the errors as `line:col: message`.
    fn compile_yaml(yaml: &str) -> Result<Credentials, Vec<String>> {
        let doc_text = format!("credentials:\n{yaml}");
        let (doc, map) = parse_yaml(&doc_text).expect("yaml");
        let spec: CredentialsSpec =
            serde_json::from_value(doc["credentials"].clone()).map_err(|e| vec![e.to_string()])?;
        let mut errors = ErrorSink::new("p.yaml".into(), &map);
        let out = compile(&spec, "/credentials", Path::new("."), &env(), &mut errors);
        if errors.is_empty() {
            out.ok_or_else(|| vec!["no credentials and no error".to_owned()])
        } else {
            Err(errors
                .into_errors()
                .0
                .iter()
                .map(ToString::to_string)
                .collect())
        }
    }

    fn lwa() -> Credentials {
        compile_yaml(
            "  preset: amazon_lwa\n  token_url: http://127.0.0.1:1/auth/o2/token\n  client_id: ${LWA_ID}\n  client_secret: ${LWA_SECRET}\n  refresh_token: ${LWA_REFRESH}\n  refresh_before: 60s\n",
        )
        .unwrap()
    }

    #[test]
    fn credentials_of_each_preset_compile_into_their_token_call() {
        let c = lwa();
        let req = c.token_request("id-1").unwrap();
        assert_eq!(req.url, "http://127.0.0.1:1/auth/o2/token");
        assert_eq!(
            req.form,
            vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", "Atzr|refresh-value".to_owned()),
                ("client_id", "amzn1.application-oa2-client.x".to_owned()),
                ("client_secret", "lwa-secret-value".to_owned()),
            ]
        );
        assert!(req.basic.is_none());
        assert_eq!(req.timeout, Duration::from_secs(5));

        let w = compile_yaml(
            "  preset: walmart\n  token_url: https://marketplace.walmartapis.com/v3/token\n  client_id: ${WM_ID}\n  client_secret: file:/dev/null\n",
        );
        assert!(
            w.unwrap_err()[0].contains("client_secret is empty"),
            "an empty secret file is an error"
        );
        let w = compile_yaml(
            "  preset: walmart\n  token_url: https://marketplace.walmartapis.com/v3/token\n  client_id: wm-client\n  client_secret: ${WM_SECRET}\n",
        )
        .unwrap();
        let req = w.token_request("corr-1").unwrap();
        assert_eq!(
            req.form,
            vec![("grant_type", "client_credentials".to_owned())]
        );
        assert_eq!(
            req.basic,
            Some(("wm-client".to_owned(), "wm-secret-value".to_owned()))
        );
        let header = |name: &HeaderName| {
            req.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            header(&WALMART_SERVICE_NAME_HEADER).as_deref(),
            Some(DEFAULT_WALMART_SERVICE_NAME)
        );
        assert_eq!(
            header(&WALMART_CORRELATION_HEADER).as_deref(),
            Some("corr-1")
        );
        assert_eq!(
            header(&http::header::ACCEPT).as_deref(),
            Some("application/json")
        );

        let e = compile_yaml(
            "  preset: ebay\n  token_url: https://api.ebay.com/identity/v1/oauth2/token\n  client_id: ${WM_ID}\n  client_secret: ${WM_SECRET}\n  refresh_token: ${LWA_REFRESH}\n  scope: https://api.ebay.com/oauth/api_scope/sell.inventory\n",
        )
        .unwrap();
        let req = e.token_request("x").unwrap();
        assert_eq!(req.form[0], ("grant_type", "refresh_token".to_owned()));
        assert_eq!(
            req.form[2],
            (
                "scope",
                "https://api.ebay.com/oauth/api_scope/sell.inventory".to_owned()
            )
        );
        assert!(req.basic.is_some());
        assert!(
            req.headers
                .iter()
                .all(|(n, _)| n != WALMART_CORRELATION_HEADER)
        );

        let s = compile_yaml("  preset: shopify\n  token: ${SHOP_TOKEN}\n").unwrap();
        assert!(s.token_request("x").is_none());
        assert_eq!(s.static_token().unwrap().expose(), "shpat_static-value");
    }

    #[test]
    fn credentials_api_headers_carry_the_token_in_the_presets_header() {
        let token = AccessToken::new("tok");
        let headers = lwa().api_headers(&token, "c").unwrap();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0.as_str(), "x-amz-access-token");
        assert_eq!(headers[0].1, "tok");
        assert!(headers[0].1.is_sensitive());

        let w = compile_yaml(
            "  preset: walmart\n  token_url: https://w.example/v3/token\n  client_id: id\n  client_secret: ${WM_SECRET}\n  service_name: Retail Gateway\n",
        )
        .unwrap();
        let headers = w.api_headers(&token, "corr-9").unwrap();
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "wm_sec.access_token",
                "wm_svc.name",
                "wm_qos.correlation_id"
            ]
        );
        assert_eq!(headers[1].1, "Retail Gateway");
        assert_eq!(headers[2].1, "corr-9");

        let e = compile_yaml(
            "  preset: ebay\n  token_url: https://e.example/token\n  client_id: id\n  client_secret: ${WM_SECRET}\n  refresh_token: ${LWA_REFRESH}\n",
        )
        .unwrap();
        assert_eq!(e.api_headers(&token, "c").unwrap()[0].1, "Bearer tok");
        assert_eq!(
            e.api_headers(&token, "c").unwrap()[0].0,
            http::header::AUTHORIZATION
        );
        assert!(e.api_headers(&AccessToken::new("bad\ntoken"), "c").is_err());
    }

    #[test]
    fn credentials_errors_are_located_and_never_show_a_secret() {
        let errs = compile_yaml(
            "  preset: amazon_lwa\n  token_url: http://lwa.example.com/token\n  client_id: id\n  client_secret: literal-secret\n  token: ${MISSING}\n",
        )
        .unwrap_err();
        let joined = errs.join("\n");
        assert!(
            joined.contains("p.yaml:2:3: preset amazon_lwa needs refresh_token"),
            "{joined}"
        );
        assert!(
            joined.contains("p.yaml:3:14: \"http://lwa.example.com/token\" must use https"),
            "{joined}"
        );
        assert!(
            joined.contains("p.yaml:5:18: client_secret must be a ${ENV_VAR} or file: reference"),
            "{joined}"
        );
        assert!(
            joined.contains("p.yaml:6:3: token is not used by preset amazon_lwa"),
            "{joined}"
        );
        assert!(!joined.contains("literal-secret"), "{joined}");

        let errs =
            compile_yaml("  preset: shopify\n  token: ${SHOP_TOKEN}\n  timeout: 0s\n").unwrap_err();
        assert!(
            errs[0].contains("timeout must be more than zero"),
            "{errs:?}"
        );

        let debug = format!("{:?}", lwa());
        for secret in [
            "lwa-secret-value",
            "Atzr|refresh-value",
            "amzn1.application",
        ] {
            assert!(!debug.contains(secret), "{debug}");
        }
        let debug = format!("{:?}", lwa().token_request("c").unwrap());
        assert!(!debug.contains("lwa-secret-value"), "{debug}");
        assert!(debug.contains("client_secret"), "the key is named: {debug}");
        let s = compile_yaml("  preset: shopify\n  token: ${SHOP_TOKEN}\n").unwrap();
        assert!(!format!("{s:?}").contains("shpat_"));
        assert_eq!(
            format!("{:?}", AccessToken::new("shpat_x")),
            "AccessToken(***)"
        );
    }

    #[test]
    fn credentials_token_answers_are_parsed_without_quoting_them() {
        let t = parse_token_response(
            br#"{"access_token":"Atza|abc","token_type":"bearer","expires_in":3600}"#,
        )
        .unwrap();
        assert_eq!(t.access_token.expose(), "Atza|abc");
        assert_eq!(t.expires_in, Duration::from_secs(3600));
        let t = parse_token_response(br#"{"access_token":"x","expires_in":"900"}"#).unwrap();
        assert_eq!(t.expires_in, Duration::from_secs(900));
        for bad in [
            &br#"{"access_token":"secret-tok"}"#[..],
            br#"{"access_token":"secret-tok","expires_in":0}"#,
            br#"{"access_token":"","expires_in":10}"#,
            br#"{"expires_in":10}"#,
            b"secret-tok",
        ] {
            let err = parse_token_response(bad).unwrap_err();
            assert!(matches!(err, TokenFailure::Malformed(_)));
            assert!(!err.to_string().contains("secret-tok"), "{err}");
        }
    }

    /// Answers token calls from a script (the last answer repeats) and counts them.
    #[derive(Debug, Default)]
    struct Scripted {
        answers: Mutex<VecDeque<Result<(String, u64), TokenFailure>>>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn push(&self, answer: Result<(&str, u64), TokenFailure>) {
            self.answers
                .lock()
                .unwrap()
                .push_back(answer.map(|(t, s)| (t.to_owned(), s)));
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl TokenSource for Scripted {
        fn fetch<'a>(&'a self, _c: &'a Credentials) -> TokenFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut answers = self.answers.lock().unwrap();
            let answer = if answers.len() > 1 {
                answers.pop_front()
            } else {
                answers.front().cloned()
            }
            .unwrap_or(Err(TokenFailure::Unavailable("nothing scripted".into())));
            Box::pin(async move {
                // let concurrent callers pile up behind the fetch in flight
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                }
                answer.map(|(t, s)| FetchedToken {
                    access_token: AccessToken::new(&t),
                    expires_in: Duration::from_secs(s),
                })
            })
        }
    }

    fn counter() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("t", "t"), &["upstream", "result"]).unwrap()
    }

    fn cache(clock: &Arc<ManualClock>, creds: Credentials) -> (TokenCache, IntCounterVec) {
        let refreshes = counter();
        let cache = TokenCache::new(
            Arc::from("amazon"),
            Arc::new(creds),
            clock.clone(),
            refreshes.clone(),
        );
        (cache, refreshes)
    }

    fn count(c: &IntCounterVec, result: &str) -> u64 {
        c.with_label_values(&["amazon", result]).get()
    }

    #[tokio::test]
    async fn credentials_tokens_are_refreshed_before_they_expire_never_after() {
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_000)));
        let (cache, refreshes) = cache(&clock, lwa());
        let source = Scripted::default();
        source.push(Ok(("t1", 3600)));
        source.push(Ok(("t2", 3600)));
        assert_eq!(cache.token(&source).await.unwrap().expose(), "t1");
        clock.advance(Duration::from_secs(3539));
        assert_eq!(
            cache.token(&source).await.unwrap().expose(),
            "t1",
            "still more than refresh_before (60s) from expiry"
        );
        assert_eq!(source.calls(), 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            cache.token(&source).await.unwrap().expose(),
            "t2",
            "60s before expiry the token is replaced"
        );
        assert_eq!(source.calls(), 2);
        assert_eq!(count(&refreshes, "success"), 2);
    }

    #[tokio::test]
    async fn credentials_short_lived_tokens_keep_half_their_life() {
        let clock = Arc::new(ManualClock::new(Duration::ZERO));
        let (cache, _) = cache(&clock, lwa());
        let source = Scripted::default();
        source.push(Ok(("short", 30)));
        source.push(Ok(("next", 30)));
        cache.token(&source).await.unwrap();
        clock.advance(Duration::from_secs(14));
        assert_eq!(
            cache.token(&source).await.unwrap().expose(),
            "short",
            "a 30s token with refresh_before 60s is kept for 15s, not refetched on every call"
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.token(&source).await.unwrap().expose(), "next");
    }

    #[tokio::test]
    async fn credentials_concurrent_callers_share_one_refresh() {
        let clock = Arc::new(ManualClock::new(Duration::ZERO));
        let (cache, refreshes) = cache(&clock, lwa());
        let source = Scripted::default();
        source.push(Ok(("shared", 3600)));
        let (a, b, c, d) = tokio::join!(
            cache.token(&source),
            cache.token(&source),
            cache.token(&source),
            cache.token(&source)
        );
        for t in [a, b, c, d] {
            assert_eq!(t.unwrap().expose(), "shared");
        }
        assert_eq!(source.calls(), 1);
        assert_eq!(count(&refreshes, "success"), 1);

        // a failing endpoint: the callers waiting share the one failure too
        let (cache, refreshes) = self::cache(&clock, lwa());
        let down = Scripted::default();
        down.push(Err(TokenFailure::Unavailable("connection refused".into())));
        let (a, b, c) = tokio::join!(cache.token(&down), cache.token(&down), cache.token(&down));
        for r in [a, b, c] {
            let err = r.unwrap_err();
            assert_eq!(&*err.upstream, "amazon");
            assert!(matches!(err.failure, TokenFailure::Unavailable(_)));
        }
        assert_eq!(down.calls(), 1);
        assert_eq!(count(&refreshes, "unavailable"), 1);
    }

    #[tokio::test]
    async fn credentials_a_refused_token_is_dropped_and_a_failing_endpoint_is_an_error() {
        let clock = Arc::new(ManualClock::new(Duration::ZERO));
        let (cache, refreshes) = cache(&clock, lwa());
        let source = Scripted::default();
        source.push(Ok(("revoked", 3600)));
        source.push(Err(TokenFailure::Refused(400)));
        source.push(Ok(("fresh", 3600)));
        assert_eq!(cache.token(&source).await.unwrap().expose(), "revoked");
        cache.refused();
        let err = cache.token(&source).await.unwrap_err();
        assert_eq!(err.failure, TokenFailure::Refused(400));
        assert_eq!(
            err.to_string(),
            "upstream amazon: no access token: the token endpoint refused the credentials (HTTP 400)"
        );
        assert_eq!(
            cache.token(&source).await.unwrap().expose(),
            "fresh",
            "a later call tries again"
        );
        assert_eq!(source.calls(), 3);
        assert_eq!(count(&refreshes, "refused"), 1);
        assert_eq!(count(&refreshes, "success"), 2);
    }

    #[tokio::test]
    async fn credentials_static_tokens_are_never_fetched() {
        let clock = Arc::new(ManualClock::new(Duration::ZERO));
        let s = compile_yaml("  preset: shopify\n  token: ${SHOP_TOKEN}\n").unwrap();
        let (cache, _) = cache(&clock, s);
        let source = Scripted::default();
        cache.refused();
        assert_eq!(
            cache.token(&source).await.unwrap().expose(),
            "shpat_static-value"
        );
        assert_eq!(source.calls(), 0);
    }
}
