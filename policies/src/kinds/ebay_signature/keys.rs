//! The public keys of eBay's notification signatures: fetched one `kid` at a time from the
//! Notification API's `getPublicKey` (`GET .../public_key/{public_key_id}` with an application
//! token), parsed once (a P-256 key pinned to the digest eBay names with it), and cached with
//! the `jwt` policy's rules for a remote key set: a fetch for an unknown `kid`, one at a time;
//! a `kid` eBay does not know, and an unreachable key API, not asked again within the cooldown;
//! a key older than `max_age` refreshed in the background while it keeps verifying; a refresh
//! that fails keeps the key (stale while error), one that eBay answers 404 drops it.
//!
//! Unlike a JWKS, where one fetch brings every key, each `kid` here is a fetch of its own: a
//! cooldown shared by all unknown `kid`s would let anyone sending a made-up `kid` every
//! cooldown keep eBay's next key out. So the cooldown after a 404 is per `kid`, it is shared
//! only after the key API failed, and fetches run one at a time: a flood of made-up `kid`s
//! costs eBay at most one request in flight.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;
use prometheus::IntCounterVec;
use serde::Deserialize;

use crate::clock::Clock;
use crate::fetch::LazyClient;
use crate::credentials::{
    AccessToken, Credentials, FetchedToken, TokenCache, TokenFailure, TokenFuture, TokenRequest,
    TokenSource, parse_token_response,
};

/// Largest `getPublicKey` answer read (a P-256 key in PEM is about 180 bytes).
const MAX_KEY_ANSWER_BYTES: usize = 16 * 1024;
/// Largest token answer read.
const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;
/// At most this many `kid`s remembered as unknown (a flood of made-up ones is forgotten whole).
const MAX_MISSING: usize = 1024;

/// The digest a key signs with (eBay's `digest`: `SHA1` today).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyDigest {
    /// SHA-1 (`SHA1withECDSA`).
    Sha1,
    /// SHA-256 (`SHA256withECDSA`).
    Sha256,
}

impl KeyDigest {
    /// The digest named in a key answer or a signature header, either case.
    pub fn parse(name: &str) -> Option<KeyDigest> {
        if name.eq_ignore_ascii_case("SHA1") || name.eq_ignore_ascii_case("SHA-1") {
            Some(KeyDigest::Sha1)
        } else if name.eq_ignore_ascii_case("SHA256") || name.eq_ignore_ascii_case("SHA-256") {
            Some(KeyDigest::Sha256)
        } else {
            None
        }
    }

    /// The digest of `body`.
    pub fn digest(self, body: &[u8]) -> aws_lc_rs::digest::Digest {
        let alg = match self {
            KeyDigest::Sha1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
            KeyDigest::Sha256 => &aws_lc_rs::digest::SHA256,
        };
        aws_lc_rs::digest::digest(alg, body)
    }
}

/// One public key of eBay's, pinned to its digest.
pub(crate) struct EbayKey {
    /// Its id (`kid` in the signature header).
    pub kid: Box<str>,
    /// The P-256 public key.
    pub key: VerifyingKey,
    /// The digest it signs with: a header naming another one does not verify.
    pub digest: KeyDigest,
}

impl fmt::Debug for EbayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EbayKey")
            .field("kid", &self.kid)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// `getPublicKey`'s answer: `{"key": "-----BEGIN PUBLIC KEY-----...", "algorithm": "ECDSA",
/// "digest": "SHA1"}` (eBay's PEM has no line breaks; the SDKs strip the armour).
#[derive(Deserialize)]
struct KeyAnswer {
    key: String,
    algorithm: String,
    digest: String,
}

/// Parses a `getPublicKey` answer into a key for `kid`.
pub(crate) fn parse_key_answer(kid: &str, body: &[u8]) -> Result<EbayKey, String> {
    let answer: KeyAnswer = serde_json::from_slice(body)
        .map_err(|_| "the answer is not a JSON object with key, algorithm and digest".to_owned())?;
    if !answer.algorithm.eq_ignore_ascii_case("ECDSA") {
        return Err(format!(
            "algorithm {:?} is not supported (ECDSA is)",
            answer.algorithm
        ));
    }
    let digest = KeyDigest::parse(&answer.digest)
        .ok_or_else(|| format!("digest {:?} is not supported (SHA1, SHA256)", answer.digest))?;
    let armoured = answer.key.trim();
    let inner = armoured
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|s| s.strip_suffix("-----END PUBLIC KEY-----"))
        .unwrap_or(armoured);
    let b64: String = inner.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| "the key is not base64 inside its PEM armour".to_owned())?;
    let key = VerifyingKey::from_public_key_der(&der)
        .map_err(|_| "the key is not a P-256 public key (SubjectPublicKeyInfo)".to_owned())?;
    Ok(EbayKey {
        kid: kid.into(),
        key,
        digest,
    })
}

/// Why the key API gave no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyFetchError {
    /// 404: eBay has no key of this id.
    NotFound,
    /// 401: the application token was refused.
    Unauthorized,
    /// Unreachable, timed out, 5xx, 429, or another status.
    Unavailable(String),
}

/// A key fetch in flight.
pub(crate) type KeyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Bytes, KeyFetchError>> + Send + 'a>>;

/// The HTTP side of the key API: the token call and `getPublicKey` (reqwest in the gateway,
/// scripted in unit tests).
pub(crate) trait KeyApi: TokenSource {
    /// `GET url` with `Authorization: Bearer token`, bounded by `timeout`.
    fn get_key<'a>(
        &'a self,
        url: &'a str,
        token: &'a AccessToken,
        timeout: Duration,
    ) -> KeyFuture<'a>;
}

/// The real key API client: reqwest over rustls, no redirects, no pooled connections (a fetch
/// may run on a short-lived runtime).
#[derive(Default, Debug)]
pub(crate) struct HttpKeyApi {
    client: LazyClient,
}

impl HttpKeyApi {
    fn client(&self) -> Result<&reqwest::Client, String> {
        self.client.get()
    }

    async fn post_token(&self, req: &TokenRequest) -> Result<FetchedToken, TokenFailure> {
        let client = self.client().map_err(TokenFailure::Unavailable)?;
        let mut builder = client.post(&req.url).form(&req.form);
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        if let Some((id, secret)) = &req.basic {
            builder = builder.basic_auth(id, Some(secret));
        }
        let resp = builder
            .send()
            .await
            .map_err(|e| TokenFailure::Unavailable(describe(&e)))?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            // the answer's body is not read: it may echo what was sent
            return Err(match status {
                408 | 429 => TokenFailure::Unavailable(format!("HTTP {status}")),
                400..=499 => TokenFailure::Refused(status),
                _ => TokenFailure::Unavailable(format!("HTTP {status}")),
            });
        }
        let body = read_body(resp, MAX_TOKEN_ANSWER_BYTES)
            .await
            .map_err(TokenFailure::Malformed)?;
        parse_token_response(&body)
    }

    async fn get(&self, url: &str, token: &AccessToken) -> Result<Bytes, KeyFetchError> {
        let client = self.client().map_err(KeyFetchError::Unavailable)?;
        let mut auth = http::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| KeyFetchError::Unavailable("the access token is not a header".into()))?;
        auth.set_sensitive(true);
        let resp = client
            .get(url)
            .header(http::header::AUTHORIZATION, auth)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| KeyFetchError::Unavailable(describe(&e)))?;
        match resp.status().as_u16() {
            200 => read_body(resp, MAX_KEY_ANSWER_BYTES)
                .await
                .map_err(KeyFetchError::Unavailable),
            404 => Err(KeyFetchError::NotFound),
            401 => Err(KeyFetchError::Unauthorized),
            s => Err(KeyFetchError::Unavailable(format!("HTTP {s}"))),
        }
    }
}

async fn read_body(mut resp: reqwest::Response, max: usize) -> Result<Bytes, String> {
    if resp.content_length().is_some_and(|len| len > max as u64) {
        return Err(format!("the answer is larger than {max} bytes"));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > max {
            return Err(format!("the answer is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

impl TokenSource for HttpKeyApi {
    fn fetch<'a>(&'a self, credentials: &'a Credentials) -> TokenFuture<'a> {
        Box::pin(async move {
            let Some(req) = credentials.token_request("") else {
                return Err(TokenFailure::Malformed(
                    "these credentials have no token endpoint".into(),
                ));
            };
            match tokio::time::timeout(req.timeout, self.post_token(&req)).await {
                Ok(result) => result,
                Err(_) => Err(TokenFailure::Unavailable(format!(
                    "timed out after {:?}",
                    req.timeout
                ))),
            }
        })
    }
}

impl KeyApi for HttpKeyApi {
    fn get_key<'a>(
        &'a self,
        url: &'a str,
        token: &'a AccessToken,
        timeout: Duration,
    ) -> KeyFuture<'a> {
        Box::pin(async move {
            match tokio::time::timeout(timeout, self.get(url, token)).await {
                Ok(result) => result,
                Err(_) => Err(KeyFetchError::Unavailable(format!(
                    "timed out after {timeout:?}"
                ))),
            }
        })
    }
}

/// reqwest's error with its sources (the URL it names carries no secret).
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Settings of a key cache; equal settings (and credentials) on reload keep the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeySettings {
    /// `getPublicKey`'s URL with `{public_key_id}` where the `kid` goes.
    pub url_template: String,
    /// Age after which a key is refreshed in the background.
    pub max_age: Duration,
    /// Least time before a `kid` eBay did not know, or any unknown `kid` after the key API
    /// failed, is asked for again.
    pub cooldown: Duration,
    /// Bound on one key fetch.
    pub timeout: Duration,
    /// Most keys kept.
    pub max_keys: usize,
}

/// Why no key verifies a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// eBay has no key of this `kid` (now, or within the cooldown).
    Unknown,
    /// The key API (or its token endpoint) is unreachable and the key was never fetched.
    Unavailable,
}

struct Entry {
    key: Arc<EbayKey>,
    /// Monotonic ms (+1) when it was fetched, and when a refresh was last tried.
    fetched_at: u64,
    last_attempt: u64,
}

/// Metric handles of a key cache.
#[derive(Debug, Clone)]
pub(crate) struct KeyCounters {
    /// `gateway_ebay_key_fetches_total{policy,result}`.
    pub fetches: IntCounterVec,
}

/// The `result` labels of `gateway_ebay_key_fetches_total`.
pub(crate) const FETCH_RESULTS: [&str; 5] = [
    "success",
    "not_found",
    "unavailable",
    "malformed",
    "token_unavailable",
];

/// The keys of one policy.
pub(crate) struct KeyCache {
    pub settings: KeySettings,
    policy: Arc<str>,
    api: Arc<dyn KeyApi>,
    clock: Arc<dyn Clock>,
    tokens: TokenCache,
    keys: Mutex<HashMap<Box<str>, Entry>>,
    /// `kid`s eBay answered 404 for, with when (monotonic ms + 1).
    missing: Mutex<HashMap<Box<str>, u64>>,
    /// When the key API last failed (monotonic ms + 1; 0: never).
    failed_at: AtomicU64,
    /// One fetch at a time: callers asking for the same new `kid` share it.
    gate: tokio::sync::Mutex<()>,
    counters: KeyCounters,
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("url", &self.settings.url_template)
            .field("keys", &lock(&self.keys).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl KeyCache {
    /// An empty cache; tokens for the key API come from `credentials`, counted in
    /// `token_refreshes` (labels `policy`, `result`).
    pub fn new(
        settings: KeySettings,
        policy: Arc<str>,
        credentials: Arc<Credentials>,
        api: Arc<dyn KeyApi>,
        clock: Arc<dyn Clock>,
        counters: KeyCounters,
        token_refreshes: IntCounterVec,
    ) -> KeyCache {
        KeyCache {
            tokens: TokenCache::new(policy.clone(), credentials, clock.clone(), token_refreshes),
            settings,
            policy,
            api,
            clock,
            keys: Mutex::new(HashMap::new()),
            missing: Mutex::new(HashMap::new()),
            failed_at: AtomicU64::new(0),
            gate: tokio::sync::Mutex::new(()),
            counters,
        }
    }

    /// The credentials of the key API's token.
    pub fn credentials(&self) -> &Arc<Credentials> {
        self.tokens.credentials()
    }

    fn now_ms(&self) -> u64 {
        millis(self.clock.monotonic()).saturating_add(1)
    }

    fn within_cooldown(&self, since: u64) -> bool {
        since != 0 && self.now_ms().saturating_sub(since) < millis(self.settings.cooldown)
    }

    fn count(&self, result: &str) {
        self.counters
            .fetches
            .with_label_values(&[&*self.policy, result])
            .inc();
    }

    /// How many keys are cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.keys).len()
    }

    fn cached(&self, kid: &str) -> Option<(Arc<EbayKey>, bool)> {
        let mut keys = lock(&self.keys);
        let now = self.now_ms();
        let entry = keys.get_mut(kid)?;
        let stale = now.saturating_sub(entry.fetched_at) >= millis(self.settings.max_age)
            && !self.within_cooldown(entry.last_attempt);
        if stale {
            // claimed here, so concurrent requests start one refresh, not one each
            entry.last_attempt = now;
        }
        Some((entry.key.clone(), stale))
    }

    /// The key of `kid`: cached, or fetched now (one fetch at a time; none for a `kid` eBay
    /// did not know, or after the key API failed, within the cooldown). A cached key older
    /// than `max_age` is returned at once and refreshed in the background.
    pub async fn key(self: &Arc<Self>, kid: &str) -> Result<Arc<EbayKey>, KeyError> {
        if let Some((key, stale)) = self.cached(kid) {
            if stale {
                self.refresh_in_background(kid);
            }
            return Ok(key);
        }
        self.check_cooldowns(kid)?;
        let _gate = self.gate.lock().await;
        // a caller before this one may have fetched it (or found it missing) meanwhile
        if let Some((key, _)) = self.cached(kid) {
            return Ok(key);
        }
        self.check_cooldowns(kid)?;
        self.fetch_locked(kid).await
    }

    fn check_cooldowns(&self, kid: &str) -> Result<(), KeyError> {
        if let Some(at) = lock(&self.missing).get(kid).copied()
            && self.within_cooldown(at)
        {
            return Err(KeyError::Unknown);
        }
        if self.within_cooldown(self.failed_at.load(Ordering::Acquire)) {
            return Err(KeyError::Unavailable);
        }
        Ok(())
    }

    fn refresh_in_background(self: &Arc<Self>, kid: &str) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        let kid: Box<str> = kid.into();
        handle.spawn(async move {
            let _gate = this.gate.lock().await;
            // errors are logged and counted; the cached key keeps verifying
            let _ = this.fetch_locked(&kid).await;
        });
    }

    /// One fetch of `kid`; the caller holds the gate.
    async fn fetch_locked(&self, kid: &str) -> Result<Arc<EbayKey>, KeyError> {
        let url = self.settings.url_template.replace("{public_key_id}", kid);
        let mut retried = false;
        let body = loop {
            let token = match self.tokens.token(&*self.api).await {
                Ok(t) => t,
                Err(e) => {
                    self.count("token_unavailable");
                    return Err(self.failed(kid, &e.to_string()));
                }
            };
            match self.api.get_key(&url, &token, self.settings.timeout).await {
                Ok(body) => break body,
                // a token refused mid-life (revoked): one new token, once
                Err(KeyFetchError::Unauthorized) if !retried => {
                    self.tokens.refused();
                    retried = true;
                }
                Err(KeyFetchError::NotFound) => {
                    self.count("not_found");
                    let now = self.now_ms();
                    let mut missing = lock(&self.missing);
                    if missing.len() >= MAX_MISSING {
                        missing.clear();
                    }
                    missing.insert(kid.into(), now);
                    drop(missing);
                    // eBay withdrew a key it used to serve: it no longer verifies
                    if lock(&self.keys).remove(kid).is_some() {
                        tracing::warn!(policy = %self.policy, kid, "eBay no longer serves this public key; dropped");
                    }
                    return Err(KeyError::Unknown);
                }
                Err(KeyFetchError::Unauthorized) => {
                    self.tokens.refused();
                    self.count("unavailable");
                    return Err(self.failed(kid, "the key API refused the application token"));
                }
                Err(KeyFetchError::Unavailable(why)) => {
                    self.count("unavailable");
                    return Err(self.failed(kid, &why));
                }
            }
        };
        match parse_key_answer(kid, &body) {
            Ok(key) => {
                self.count("success");
                let key = Arc::new(key);
                let now = self.now_ms();
                let mut keys = lock(&self.keys);
                if keys.len() >= self.settings.max_keys && !keys.contains_key(kid) {
                    // the oldest key makes room; it is fetched again if it is used again
                    if let Some(oldest) = keys
                        .iter()
                        .min_by_key(|(_, e)| e.fetched_at)
                        .map(|(k, _)| k.clone())
                    {
                        keys.remove(&oldest);
                    }
                }
                keys.insert(
                    kid.into(),
                    Entry {
                        key: key.clone(),
                        fetched_at: now,
                        last_attempt: now,
                    },
                );
                drop(keys);
                self.failed_at.store(0, Ordering::Release);
                tracing::info!(policy = %self.policy, kid, "eBay public key fetched");
                Ok(key)
            }
            Err(why) => {
                self.count("malformed");
                Err(self.failed(kid, &why))
            }
        }
    }

    /// Records a failed fetch: a cached key of `kid` keeps verifying; without one, the caller
    /// gets `Unavailable` (and so does every unknown `kid` within the cooldown).
    fn failed(&self, kid: &str, why: &str) -> KeyError {
        self.failed_at.store(self.now_ms(), Ordering::Release);
        let cached = lock(&self.keys).contains_key(kid);
        tracing::warn!(
            policy = %self.policy,
            url = %self.settings.url_template,
            kid,
            error = %why,
            kept = cached,
            "eBay public key fetch failed"
        );
        KeyError::Unavailable
    }
}
