//! Verification keys of the `jwt` policy: each key pinned to one algorithm, sets parsed from a
//! JWKS (RFC 7517), and the remote set of an identity provider (fetched before serving, cached,
//! refreshed on an unknown `kid` as a single flight behind a cooldown, the last good set kept
//! when the provider is unreachable).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use prometheus::IntCounter;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::fetch::HttpGet;

/// Largest JWKS document accepted from a URL.
pub(crate) const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Smallest RSA modulus accepted (RFC 7518 3.3: 2048 bits or larger).
const MIN_RSA_BITS: usize = 2048;

/// The material of a verification key.
pub(crate) enum KeyMaterial {
    /// A shared secret (HS256), checked by jsonwebtoken.
    Secret(DecodingKey),
    /// A public key parsed once, when its set is loaded: aws-lc then checks a signature
    /// without rebuilding the key (an RSA key built per token costs about as much as the
    /// verification itself).
    Public(ParsedPublicKey),
}

/// A verification key and the one algorithm it verifies.
pub(crate) struct VerifyKey {
    /// Its `kid`, if it has one.
    pub kid: Option<Box<str>>,
    /// The only algorithm this key verifies: an RSA key never checks an HS256 token.
    pub alg: Algorithm,
    /// The key material.
    pub key: KeyMaterial,
    /// Whether it came from the identity provider's URL (and may therefore disappear).
    pub remote: bool,
    /// SHA-256 of its algorithm and material, to keep the same `Arc` across refreshes.
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// An HMAC key (HS256) from a shared secret.
    pub fn hs256(kid: &str, secret: &[u8]) -> Result<VerifyKey, String> {
        let key = DecodingKey::from_secret(secret).map_err(|e| e.to_string())?;
        let mut h = Sha256::new();
        h.update(b"HS256\0");
        h.update(kid.as_bytes());
        h.update(b"\0");
        h.update(secret);
        Ok(VerifyKey {
            kid: Some(kid.into()),
            alg: Algorithm::HS256,
            key: KeyMaterial::Secret(key),
            remote: false,
            fingerprint: h.finalize().into(),
        })
    }
}

/// How a key lookup went.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// This key verifies the token.
    Found(Arc<VerifyKey>),
    /// A key of that `kid` exists but is pinned to another algorithm.
    AlgMismatch,
    /// No key of that `kid` (or, without a `kid`, not exactly one key of the algorithm).
    NotFound,
}

/// A set of keys.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    /// A set of these keys.
    pub fn new(keys: Vec<Arc<VerifyKey>>) -> KeySet {
        KeySet { keys }
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key for a token's `kid` and `alg`. Without a `kid`, the one key pinned to `alg`, if
    /// exactly one is (trying several keys would multiply the work an attacker can cause).
    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match kid {
            Some(kid) => {
                let mut named = false;
                for k in &self.keys {
                    if k.kid.as_deref() == Some(kid) {
                        if k.alg == alg {
                            return Lookup::Found(k.clone());
                        }
                        named = true;
                    }
                }
                if named {
                    Lookup::AlgMismatch
                } else {
                    Lookup::NotFound
                }
            }
            None => {
                let mut it = self.keys.iter().filter(|k| k.alg == alg);
                match (it.next(), it.next()) {
                    (Some(k), None) => Lookup::Found(k.clone()),
                    _ => Lookup::NotFound,
                }
            }
        }
    }

    /// Whether this exact key (same `Arc`) is still in the set.
    pub fn contains(&self, key: &Arc<VerifyKey>) -> bool {
        self.keys.iter().any(|k| Arc::ptr_eq(k, key))
    }

    /// The same key from this set when `key` has the same material, so that it keeps its
    /// identity (and the verified tokens it vouches for) across refreshes.
    fn reuse(&self, key: VerifyKey) -> Arc<VerifyKey> {
        self.keys
            .iter()
            .find(|k| k.fingerprint == key.fingerprint && k.kid == key.kid)
            .cloned()
            .unwrap_or_else(|| Arc::new(key))
    }
}

/// One JWK as published; unknown members are ignored (IdPs add their own).
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    key_ops: Option<Vec<String>>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// A parsed JWKS: its usable keys, and why the others were skipped.
#[derive(Debug, Default)]
pub(crate) struct ParsedJwks {
    /// Usable signing keys.
    pub keys: Vec<VerifyKey>,
    /// One line per skipped key.
    pub skipped: Vec<String>,
}

fn b64(field: &str, value: Option<&String>) -> Result<Vec<u8>, String> {
    let v = value.ok_or_else(|| format!("no `{field}`"))?;
    URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('='))
        .map_err(|_| format!("`{field}` is not base64url"))
}

fn fingerprint(alg: Algorithm, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(format!("{alg:?}").as_bytes());
    for p in parts {
        h.update(b"\0");
        h.update(p);
    }
    h.finalize().into()
}

fn public_key(
    scheme: &'static dyn VerificationAlgorithm,
    bytes: &[u8],
) -> Result<KeyMaterial, String> {
    ParsedPublicKey::new(scheme, bytes)
        .map(KeyMaterial::Public)
        .map_err(|e| format!("the key is rejected: {e}"))
}

/// The key a JWK describes, pinned to its algorithm: its `alg` when given, else the one its
/// type implies (RSA: RS256, P-256: ES256, Ed25519: EdDSA). Symmetric (`oct`) keys are never
/// taken from a JWKS: HS256 secrets come only from the environment or files.
fn jwk_key(raw: &RawJwk, remote: bool) -> Result<VerifyKey, String> {
    if let Some(u) = &raw.use_
        && u != "sig"
    {
        return Err(format!("`use` is {u:?}, not \"sig\""));
    }
    if let Some(ops) = &raw.key_ops
        && !ops.iter().any(|o| o == "verify")
    {
        return Err("`key_ops` does not include \"verify\"".into());
    }
    let kty = raw.kty.as_deref().ok_or("no `kty`")?;
    let alg_text = raw.alg.as_deref();
    let (alg, key, fp) = match kty {
        "RSA" => {
            let alg = match alg_text {
                None | Some("RS256") => Algorithm::RS256,
                Some("PS256") => Algorithm::PS256,
                Some(other) => return Err(format!("RSA algorithm {other:?} is not supported")),
            };
            let n = b64("n", raw.n.as_ref())?;
            let e = b64("e", raw.e.as_ref())?;
            let bits = n
                .iter()
                .position(|b| *b != 0)
                .map_or(0, |i| (n.len() - i) * 8);
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "the RSA modulus has about {bits} bits; at least {MIN_RSA_BITS} are required"
                ));
            }
            if e.is_empty() {
                return Err("`e` is empty".into());
            }
            let fp = fingerprint(alg, &[&n, &e]);
            let spki = aws_lc_rs::rsa::PublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .as_der()
            .map_err(|_| "not a valid RSA public key".to_owned())?;
            let scheme: &'static dyn VerificationAlgorithm = if alg == Algorithm::PS256 {
                &signature::RSA_PSS_2048_8192_SHA256
            } else {
                &signature::RSA_PKCS1_2048_8192_SHA256
            };
            (alg, public_key(scheme, spki.as_ref())?, fp)
        }
        "EC" => {
            match alg_text {
                None | Some("ES256") => {}
                Some(other) => return Err(format!("EC algorithm {other:?} is not supported")),
            }
            if raw.crv.as_deref() != Some("P-256") {
                return Err(format!("curve {:?} is not supported (P-256 is)", raw.crv));
            }
            let x = b64("x", raw.x.as_ref())?;
            let y = b64("y", raw.y.as_ref())?;
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes each".into());
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let fp = fingerprint(Algorithm::ES256, &[&point]);
            // JWS carries ES256 signatures as R || S, not DER (RFC 7518 3.4)
            let key = public_key(&signature::ECDSA_P256_SHA256_FIXED, &point)?;
            (Algorithm::ES256, key, fp)
        }
        "OKP" => {
            match alg_text {
                None | Some("EdDSA") | Some("Ed25519") => {}
                Some(other) => return Err(format!("OKP algorithm {other:?} is not supported")),
            }
            if raw.crv.as_deref() != Some("Ed25519") {
                return Err(format!("curve {:?} is not supported (Ed25519 is)", raw.crv));
            }
            let x = b64("x", raw.x.as_ref())?;
            if x.len() != 32 {
                return Err("an Ed25519 key must be 32 bytes".into());
            }
            let fp = fingerprint(Algorithm::EdDSA, &[&x]);
            (Algorithm::EdDSA, public_key(&signature::ED25519, &x)?, fp)
        }
        "oct" => {
            return Err(
                "symmetric keys are never taken from a JWKS (configure HS256 secrets instead)"
                    .into(),
            );
        }
        other => return Err(format!("key type {other:?} is not supported")),
    };
    Ok(VerifyKey {
        kid: raw.kid.as_deref().map(Box::from),
        alg,
        key,
        remote,
        fingerprint: fp,
    })
}

/// Parses a JWKS document. Keys that cannot be used are skipped (and listed); a document with
/// no usable key at all is an error.
pub(crate) fn parse_jwks(bytes: &[u8], remote: bool) -> Result<ParsedJwks, String> {
    let doc: RawJwks = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a JWKS document (a JSON object with `keys`): {e}"))?;
    let mut out = ParsedJwks::default();
    for (i, value) in doc.keys.into_iter().enumerate() {
        let raw: RawJwk = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                out.skipped.push(format!("key {i}: {e}"));
                continue;
            }
        };
        let name = raw
            .kid
            .as_deref()
            .map_or_else(|| format!("key {i}"), |k| format!("key {k:?}"));
        match jwk_key(&raw, remote) {
            Ok(k) => out.keys.push(k),
            Err(why) => out.skipped.push(format!("{name}: {why}")),
        }
    }
    if out.keys.is_empty() {
        let why = if out.skipped.is_empty() {
            "the set is empty".to_owned()
        } else {
            out.skipped.join("; ")
        };
        return Err(format!("the JWKS has no usable signing key ({why})"));
    }
    Ok(out)
}

/// Settings of a remote key set; equal settings on reload keep the cached set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteSettings {
    /// The JWKS URL.
    pub url: String,
    /// Least time between two fetches.
    pub cooldown: Duration,
    /// Age after which the set is refreshed in the background.
    pub max_age: Duration,
    /// Bound on one fetch.
    pub timeout: Duration,
}

/// Metric handles of a remote key set.
#[derive(Debug, Clone)]
pub(crate) struct RefreshCounters {
    pub success: IntCounter,
    pub failure: IntCounter,
}

/// An identity provider's key set, fetched from its URL.
pub(crate) struct RemoteKeys {
    pub settings: RemoteSettings,
    policy: Arc<str>,
    http: Arc<dyn HttpGet>,
    clock: Arc<dyn Clock>,
    current: ArcSwap<KeySet>,
    /// Monotonic ms (+1, so 0 means never) of the last fetch attempt, and of the last success.
    last_attempt: AtomicU64,
    fetched_at: AtomicU64,
    /// Bumped by every finished attempt, so callers that waited for one can tell.
    attempts: AtomicU64,
    /// Whether a fetch is running (callers then wait for it rather than give up).
    in_flight: AtomicBool,
    gate: tokio::sync::Mutex<()>,
    counters: RefreshCounters,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("url", &self.settings.url)
            .field("keys", &self.current.load().len())
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RemoteKeys {
    /// An empty set that `ensure_loaded` fills.
    pub fn new(
        settings: RemoteSettings,
        policy: Arc<str>,
        http: Arc<dyn HttpGet>,
        clock: Arc<dyn Clock>,
        counters: RefreshCounters,
    ) -> RemoteKeys {
        RemoteKeys {
            settings,
            policy,
            http,
            clock,
            current: ArcSwap::from_pointee(KeySet::default()),
            last_attempt: AtomicU64::new(0),
            fetched_at: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            in_flight: AtomicBool::new(false),
            gate: tokio::sync::Mutex::new(()),
            counters,
        }
    }

    /// The current set.
    pub fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    fn now_ms(&self) -> u64 {
        millis(self.clock.monotonic()).saturating_add(1)
    }

    /// Whether the cooldown since the last attempt has passed.
    fn may_fetch(&self) -> bool {
        let last = self.last_attempt.load(Ordering::Acquire);
        last == 0 || self.now_ms().saturating_sub(last) >= millis(self.settings.cooldown)
    }

    /// Fetches the set if none was ever loaded (the warm-up before serving); a set kept from
    /// the policy this one replaces is used as it is.
    pub async fn ensure_loaded(&self) -> Result<(), String> {
        if self.fetched_at.load(Ordering::Acquire) != 0 {
            return Ok(());
        }
        let _gate = self.gate.lock().await;
        if self.fetched_at.load(Ordering::Acquire) != 0 {
            return Ok(());
        }
        self.fetch_locked().await
    }

    /// One fetch; the caller holds the gate. On failure the current set stays.
    async fn fetch_locked(&self) -> Result<(), String> {
        /// Clears `in_flight` however the fetch ends (a request that awaited it may be dropped).
        struct InFlight<'a>(&'a AtomicBool);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        self.in_flight.store(true, Ordering::Release);
        let _in_flight = InFlight(&self.in_flight);
        self.last_attempt.store(self.now_ms(), Ordering::Release);
        let s = &self.settings;
        let result = match self.http.get(&s.url, s.timeout, MAX_JWKS_BYTES).await {
            Ok(body) => parse_jwks(&body, true),
            Err(e) => Err(format!("cannot fetch the JWKS from {}: {e}", s.url)),
        };
        let outcome = match result {
            Ok(parsed) => {
                let old = self.current.load_full();
                let keys = parsed.keys.into_iter().map(|k| old.reuse(k)).collect();
                self.current.store(Arc::new(KeySet::new(keys)));
                self.fetched_at.store(self.now_ms(), Ordering::Release);
                self.counters.success.inc();
                for why in &parsed.skipped {
                    tracing::warn!(policy = %self.policy, url = %s.url, key = %why, "JWKS key skipped");
                }
                tracing::info!(policy = %self.policy, url = %s.url, keys = self.current.load().len(), "JWKS loaded");
                Ok(())
            }
            Err(e) => {
                self.counters.failure.inc();
                tracing::warn!(
                    policy = %self.policy,
                    url = %s.url,
                    error = %e,
                    keys = self.current.load().len(),
                    "JWKS refresh failed; keeping the last good key set"
                );
                Err(e)
            }
        };
        self.attempts.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    /// Looks a key up, refreshing the set once when the `kid` is unknown: one fetch at a time
    /// (callers arriving meanwhile wait for it and share its result), and none within the
    /// cooldown of the last attempt, so a flood of made-up `kid`s costs the provider at most one
    /// request per cooldown.
    pub async fn lookup_or_refresh(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let found = self.current.load().lookup(kid, alg);
        if !matches!(found, Lookup::NotFound) || kid.is_none() {
            return found;
        }
        let seen = self.attempts.load(Ordering::Acquire);
        if !self.may_fetch() && !self.in_flight.load(Ordering::Acquire) {
            return found;
        }
        let _gate = self.gate.lock().await;
        if self.attempts.load(Ordering::Acquire) == seen && self.may_fetch() {
            // errors are logged and counted; the last good set keeps serving
            let _ = self.fetch_locked().await;
        }
        self.current.load().lookup(kid, alg)
    }

    /// When the set is older than `max_age`, refreshes it in the background (without making
    /// the request wait), so removed keys disappear even if no new `kid` shows up.
    pub fn refresh_if_stale(self: &Arc<Self>) {
        let fetched = self.fetched_at.load(Ordering::Acquire);
        if fetched == 0
            || self.now_ms().saturating_sub(fetched) < millis(self.settings.max_age)
            || !self.may_fetch()
        {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        handle.spawn(async move {
            // a fetch already in flight serves the same purpose
            if let Ok(_gate) = this.gate.try_lock()
                && this.may_fetch()
            {
                let _ = this.fetch_locked().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const RSA_N: &str = "joDXgsfcNrTqtCI6vaQIDszT4xpj3Ir_Am3U4SEysTjxHpeUJbyBkWfw1VKvgaBdl7FURhFjdjtboz3BTzzptfLSbvysOZpHiJq8PvgC_Bl21BDzHEzoo3-7MK_mLY--ElNrwd1fxg2WnSKjR2PHqOHKOTS-UoucNjzuZR9qsSwxqfMd0tXYZXZJm6u53R0Pcx5clQHpc28zsL8JR5XZ701pigUEzaUhjjmnlFi6PsNp3kY43rfC87oTuVn6v2KNRubMwCDQcgwTCO2njbYiAuykpVBm2zWgbAHSlDD4-4nXWXTMPSniXy-KY3ung-2drtrqqHjtDalbpo3J2PObGw";

    #[test]
    fn keys_are_pinned_to_their_algorithm() {
        let doc = format!(
            r#"{{"keys":[
                {{"kty":"RSA","kid":"r1","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"RSA","kid":"p1","alg":"PS256","n":"{RSA_N}","e":"AQAB"}}
            ]}}"#
        );
        let parsed = parse_jwks(doc.as_bytes(), true).unwrap();
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
        let set = KeySet::new(parsed.keys.into_iter().map(Arc::new).collect());
        assert!(matches!(
            set.lookup(Some("r1"), Algorithm::RS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.lookup(Some("r1"), Algorithm::HS256),
            Lookup::AlgMismatch
        ));
        assert!(matches!(
            set.lookup(Some("r1"), Algorithm::PS256),
            Lookup::AlgMismatch
        ));
        assert!(matches!(
            set.lookup(Some("p1"), Algorithm::PS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.lookup(Some("nope"), Algorithm::RS256),
            Lookup::NotFound
        ));
        // without a kid, only an unambiguous key is used
        assert!(matches!(
            set.lookup(None, Algorithm::RS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.lookup(None, Algorithm::ES256),
            Lookup::NotFound
        ));
    }

    #[test]
    fn unusable_keys_are_skipped_with_a_reason() {
        let doc = format!(
            r#"{{"keys":[
                {{"kty":"oct","kid":"s","k":"c2VjcmV0"}},
                {{"kty":"RSA","kid":"enc","use":"enc","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"RSA","kid":"small","n":"AQAB","e":"AQAB"}},
                {{"kty":"EC","kid":"p384","crv":"P-384","x":"AA","y":"AA"}},
                {{"kty":"RSA","kid":"rs512","alg":"RS512","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"RSA","kid":"ok","n":"{RSA_N}","e":"AQAB"}}
            ]}}"#
        );
        let parsed = parse_jwks(doc.as_bytes(), false).unwrap();
        assert_eq!(parsed.keys.len(), 1);
        assert_eq!(parsed.skipped.len(), 5, "{:?}", parsed.skipped);
        assert!(parsed.skipped[0].contains("symmetric keys are never taken"));
        assert!(parsed.skipped[2].contains("at least 2048"));
    }

    #[test]
    fn a_jwks_without_usable_keys_is_an_error() {
        assert!(parse_jwks(b"{\"keys\":[]}", true).is_err());
        assert!(parse_jwks(b"[]", true).is_err());
        assert!(parse_jwks(b"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}", true).is_err());
    }
}
