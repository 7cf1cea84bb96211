//! Unit tests of the `jwt` policy: real keys (the development RSA key and test keys of every
//! other algorithm), policy files compiled as the gateway compiles them, a manual clock, and
//! an in-process JWKS "server".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use super::*;
use crate::clock::ManualClock;
use crate::compile::compile_str;
use crate::env::CompileEnv;
use crate::model::PolicySet;
use crate::fetch::FetchError;
use crate::fetch::tests::ScriptedGet;
use crate::kinds::{Policy, PolicyMetrics};
use crate::problem::ReplyBody;
use crate::route::PathParams;
use crate::secret::tests::FakeEnv;
use crate::state::redis::Stores;

const NOW: u64 = 1_800_000_000;
const HS_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";
const ISS: &str = "https://idp.test";

fn read(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dev_rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read("certs/dev-jwt-signing.key")).unwrap()
}

fn dev_kid() -> String {
    let v: Value = serde_json::from_slice(&read("certs/dev-jwks.json")).unwrap();
    v["keys"][0]["kid"].as_str().unwrap().to_owned()
}

fn rotated_rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read("tests/fixtures/keys/rsa-rotated.key")).unwrap()
}

fn es_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&read("tests/fixtures/keys/es256.key")).unwrap()
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(&read("tests/fixtures/keys/ed25519.key")).unwrap()
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut j = Jwk::from_encoding_key(key, alg).unwrap();
    j.common.key_id = Some(kid.into());
    serde_json::to_value(j).unwrap()
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// The development key, the test keys of the other algorithms, and the dev JWKS's own entry.
fn all_keys_jwks() -> String {
    let dev: Value = serde_json::from_slice(&read("certs/dev-jwks.json")).unwrap();
    jwks(&[
        dev["keys"][0].clone(),
        jwk(&rotated_rsa(), Algorithm::PS256, "ps"),
        jwk(&es_key(), Algorithm::ES256, "es"),
        jwk(&ed_key(), Algorithm::EdDSA, "ed"),
    ])
}

fn claims() -> Value {
    json!({
        "iss": ISS,
        "aud": "gateway",
        "sub": "acme",
        "iat": NOW,
        "exp": NOW + 600,
        "scope": "orders:write orders:read",
        "channel": "amazon",
        "client_id": "acme-shop",
    })
}

fn with(mut c: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        c.as_object_mut().unwrap().remove(key);
    } else {
        c[key] = value;
    }
    c
}

fn sign(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(Into::into);
    encode(&h, claims, key).unwrap()
}

fn rs(claims: &Value) -> String {
    sign(&dev_rsa(), Algorithm::RS256, Some(&dev_kid()), claims)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

const POLICY: &str = "    kind: jwt
    issuer: https://idp.test
    audience: [gateway, other-api]
    keys: {jwks_file: keys.json, hs256: {hs1: \"${HS}\"}}
    scopes: [orders:write]
    channel: {claim: channel, clients: {acme-shop: shopify}}
";

struct Fx {
    set: PolicySet,
    clock: Arc<ManualClock>,
    http: Arc<ScriptedGet>,
    metrics: Arc<PolicyMetrics>,
    env: CompileEnv,
    dir: PathBuf,
}

impl Drop for Fx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn policy_file(policy: &str) -> String {
    format!(
        "version: 1\nchannels: {{amazon: {{}}, shopify: {{}}}}\nupstreams: {{erp: {{endpoints: [\"127.0.0.1:1\"]}}}}\npolicies:\n  auth:\n{policy}routes: []\n"
    )
}

fn scratch_dir() -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("jwt-unit-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn test_env(
    clock: Arc<ManualClock>,
    http: Arc<ScriptedGet>,
    metrics: Arc<PolicyMetrics>,
) -> CompileEnv {
    let secrets: HashMap<String, String> = [("HS", HS_SECRET), ("SHORT", "too-short")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    CompileEnv {
        clock,
        secrets: Arc::new(FakeEnv(secrets)),
        stores: Arc::new(Stores::default()),
        metrics,
        http,
    }
}

impl Fx {
    fn new(policy: &str) -> Fx {
        Self::try_new(policy, &all_keys_jwks()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn try_new(policy: &str, keys_json: &str) -> Result<Fx, Vec<String>> {
        let dir = scratch_dir();
        std::fs::write(dir.join("keys.json"), keys_json).unwrap();
        let clock = Arc::new(ManualClock::new(Duration::from_secs(NOW)));
        let http = Arc::new(ScriptedGet::default());
        let metrics = Arc::new(PolicyMetrics::default());
        let env = test_env(clock.clone(), http.clone(), metrics.clone());
        let set = compile_str(&dir.join("p.yaml"), &policy_file(policy), &env, None);
        match set {
            Ok(set) => Ok(Fx {
                set,
                clock,
                http,
                metrics,
                env,
                dir,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e.0.iter().map(ToString::to_string).collect())
            }
        }
    }

    /// Compiles `policy` again as a reload of this set.
    fn reload(&self, policy: &str) -> PolicySet {
        compile_str(
            &self.dir.join("p.yaml"),
            &policy_file(policy),
            &self.env,
            Some(&self.set),
        )
        .unwrap()
    }

    fn jwt(&self) -> &Jwt {
        jwt_of(&self.set)
    }

    async fn call(&self, token: &str) -> Outcome {
        self.request(Some(&format!("Bearer {token}")), None, None)
            .await
    }

    async fn call_on(&self, token: &str, route_channel: &str) -> Outcome {
        self.request(Some(&format!("Bearer {token}")), None, Some(route_channel))
            .await
    }

    async fn request(
        &self,
        authorization: Option<&str>,
        query: Option<&str>,
        route_channel: Option<&str>,
    ) -> Outcome {
        call_policy(self.jwt(), &self.set, authorization, query, route_channel).await
    }

    fn failures(&self, reason: &str) -> u64 {
        self.metrics
            .shared
            .auth_failures
            .with_label_values(&["auth", reason])
            .get()
    }
}

fn jwt_of(set: &PolicySet) -> &Jwt {
    match &set.policies["auth"].policy {
        Policy::Jwt(j) => j,
        other => panic!("{other:?}"),
    }
}

#[derive(Debug)]
struct Outcome {
    /// `None`: the request goes on.
    status: Option<u16>,
    reason: &'static str,
    challenge: Option<String>,
    body: String,
    channel: Option<String>,
    caller: Option<String>,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.status.is_none()
    }
}

async fn call_policy(
    jwt: &Jwt,
    set: &PolicySet,
    authorization: Option<&str>,
    query: Option<&str>,
    route_channel: Option<&str>,
) -> Outcome {
    let mut headers = HeaderMap::new();
    if let Some(a) = authorization {
        headers.insert(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
    }
    let params = PathParams::default();
    let req = RequestView {
        method: &Method::GET,
        path: "/x",
        query,
        headers: &headers,
        params: &params,
    };
    let mut state = ExchangeState {
        channel: route_channel.map(|c| set.channels.get(c).unwrap()),
        ..ExchangeState::default()
    };
    match jwt.on_request(&req, &mut state).await {
        Flow::Continue(()) => Outcome {
            status: None,
            reason: "",
            challenge: None,
            body: String::new(),
            channel: state.channel.map(|c| c.name.to_string()),
            caller: state.caller.map(|c| c.to_string()),
        },
        Flow::Break(reply) => {
            let body = match &reply.body {
                ReplyBody::Problem(p) => String::from_utf8(p.to_json("/x", "r").to_vec()).unwrap(),
                ReplyBody::Bytes { .. } => panic!("a rejection carries a problem"),
            };
            Outcome {
                status: Some(reply.status.as_u16()),
                reason: reply.reason,
                challenge: reply
                    .headers
                    .iter()
                    .find(|(n, _)| n == WWW_AUTHENTICATE)
                    .map(|(_, v)| v.to_str().unwrap().to_owned()),
                body,
                channel: None,
                caller: None,
            }
        }
    }
}

#[tokio::test]
async fn tokens_of_all_five_algorithms_verify_with_their_own_keys() {
    let fx = Fx::new(POLICY);
    let c = claims();
    for (name, token) in [
        ("RS256", rs(&c)),
        (
            "PS256",
            sign(&rotated_rsa(), Algorithm::PS256, Some("ps"), &c),
        ),
        ("ES256", sign(&es_key(), Algorithm::ES256, Some("es"), &c)),
        ("EdDSA", sign(&ed_key(), Algorithm::EdDSA, Some("ed"), &c)),
        (
            "HS256",
            sign(
                &EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap(),
                Algorithm::HS256,
                Some("hs1"),
                &c,
            ),
        ),
    ] {
        let out = fx.call(&token).await;
        assert!(out.passed(), "{name}: {out:?}");
        assert_eq!(out.channel.as_deref(), Some("amazon"), "{name}");
    }
}

#[tokio::test]
async fn an_accepted_token_names_its_caller_by_subject_else_client_id() {
    let fx = Fx::new(POLICY);
    let out = fx.call(&rs(&claims())).await;
    assert_eq!(out.caller.as_deref(), Some("jwt:acme"), "{out:?}");
    let out = fx.call(&rs(&with(claims(), "sub", Value::Null))).await;
    assert_eq!(out.caller.as_deref(), Some("jwt:acme-shop"), "{out:?}");
    let long = "x".repeat(500);
    let out = fx.call(&rs(&with(claims(), "sub", json!(long)))).await;
    assert_eq!(
        out.caller.map(|c| c.len()),
        Some(crate::pipeline::MAX_CALLER_BYTES)
    );
}

#[tokio::test]
async fn alg_none_is_always_refused() {
    let fx = Fx::new(POLICY);
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "JWT"});
        let unsigned = format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        let out = fx.call(&unsigned).await;
        assert_eq!(
            (out.status, out.reason),
            (Some(401), "alg_not_allowed"),
            "{alg}"
        );
        // and with a signature segment copied from a real token
        let real = rs(&claims());
        let sig = real.rsplit('.').next().unwrap();
        let out = fx.call(&format!("{}{sig}", unsigned)).await;
        assert_eq!(out.reason, "alg_not_allowed", "{alg}");
    }
    assert_eq!(fx.failures("alg_not_allowed"), 6);
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let fx = Fx::new(POLICY);
    let public_pem = read("certs/dev-jwt-signing.pub");
    let confused = EncodingKey::from_secret(&public_pem).unwrap();
    // naming the RSA key: the key is pinned to RS256
    let t = sign(&confused, Algorithm::HS256, Some(&dev_kid()), &claims());
    let out = fx.call(&t).await;
    assert_eq!((out.status, out.reason), (Some(401), "alg_not_allowed"));
    // naming no key: the one HS256 key is tried, and the signature does not match it
    let t = sign(&confused, Algorithm::HS256, None, &claims());
    assert_eq!(fx.call(&t).await.reason, "bad_signature");
    // and an RSA-signed token naming the HMAC key fails the same way
    let t = sign(&dev_rsa(), Algorithm::RS256, Some("hs1"), &claims());
    assert_eq!(fx.call(&t).await.reason, "alg_not_allowed");
}

#[tokio::test]
async fn an_es256_signature_of_zeros_is_refused() {
    let fx = Fx::new(POLICY);
    let header = json!({"alg": "ES256", "kid": "es", "typ": "JWT"});
    let out = fx.call(&raw_token(&header, &claims(), &[0u8; 64])).await;
    assert_eq!((out.status, out.reason), (Some(401), "bad_signature"));
    // r = 0 with a real s, and a signature of the wrong length
    let real = sign(&es_key(), Algorithm::ES256, Some("es"), &claims());
    let mut sig = URL_SAFE_NO_PAD
        .decode(real.rsplit('.').next().unwrap())
        .unwrap();
    sig[..32].fill(0);
    assert_eq!(
        fx.call(&raw_token(&header, &claims(), &sig)).await.reason,
        "bad_signature"
    );
    assert_eq!(
        fx.call(&raw_token(&header, &claims(), &[1u8; 63]))
            .await
            .reason,
        "bad_signature"
    );
}

#[tokio::test]
async fn tampered_payloads_bad_signatures_and_malformed_tokens_are_refused() {
    let fx = Fx::new(POLICY);
    let good = rs(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    // the payload of another (more privileged) token under the original signature
    let forged_payload = b64(with(claims(), "scope", json!("admin orders:write"))
        .to_string()
        .as_bytes());
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_eq!(fx.call(&tampered).await.reason, "bad_signature");
    let other_sig = rs(&with(claims(), "sub", json!("x")));
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        other_sig.rsplit('.').next().unwrap()
    );
    assert_eq!(fx.call(&swapped).await.reason, "bad_signature");

    for bad in [
        "abc".to_owned(),
        "a.b".to_owned(),
        "a.b.c.d".to_owned(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{}..{}", parts[0], parts[2]),
        format!(".{}.{}", parts[1], parts[2]),
        format!("{}.{}.{}.", parts[0], parts[1], parts[2]),
        format!("{}.{}.!!!", parts[0], parts[1]),
        format!("e30.{}.{}", parts[1], parts[2]), // header {} has no alg
        format!("{}.bm90IGpzb24.{}", parts[0], parts[2]),
    ] {
        let out = fx.call(&bad).await;
        assert_eq!(out.status, Some(401), "{bad}");
        assert!(
            matches!(out.reason, "malformed" | "bad_signature"),
            "{bad}: {}",
            out.reason
        );
    }
    assert_eq!(fx.call("a.b").await.reason, "malformed");
}

#[tokio::test]
async fn issuer_audience_and_required_claims_are_checked() {
    let fx = Fx::new(POLICY);
    let out = fx
        .call(&rs(&with(claims(), "iss", json!("https://evil.test"))))
        .await;
    assert_eq!((out.status, out.reason), (Some(401), "wrong_issuer"));
    let out = fx
        .call(&rs(&with(claims(), "aud", json!("someone-else"))))
        .await;
    assert_eq!(out.reason, "wrong_audience");
    assert_eq!(
        fx.call(&rs(&with(claims(), "aud", json!(["a", "b"]))))
            .await
            .reason,
        "wrong_audience"
    );
    assert!(
        fx.call(&rs(&with(claims(), "aud", json!(["a", "other-api"]))))
            .await
            .passed()
    );
    for missing in ["exp", "iss", "aud"] {
        let out = fx.call(&rs(&with(claims(), missing, Value::Null))).await;
        assert_eq!(out.reason, "missing_claim", "{missing}");
    }
    assert_eq!(
        fx.call(&rs(&with(claims(), "exp", json!("tomorrow"))))
            .await
            .reason,
        "malformed"
    );
    assert_eq!(
        fx.call(&rs(&with(claims(), "iss", json!(42)))).await.reason,
        "wrong_issuer"
    );
}

#[tokio::test]
async fn expiry_and_not_before_allow_the_configured_leeway_on_the_injected_clock() {
    let fx = Fx::new(&POLICY.replace("kind: jwt\n", "kind: jwt\n    leeway: 30s\n"));
    let c = with(claims(), "exp", json!(NOW + 10));
    let token = rs(&c);
    assert!(fx.call(&token).await.passed());
    fx.clock.advance(Duration::from_secs(10 + 30));
    assert!(fx.call(&token).await.passed(), "within the leeway");
    fx.clock.advance(Duration::from_secs(1));
    let out = fx.call(&token).await;
    assert_eq!((out.status, out.reason), (Some(401), "expired"));
    // a fresh token that expired 31s ago is refused from the start
    let stale = rs(&with(claims(), "exp", json!(NOW + 10)));
    assert_eq!(fx.call(&stale).await.reason, "expired");

    let now = NOW + 41;
    let early = rs(&with(claims(), "nbf", json!(now + 31)));
    assert_eq!(fx.call(&early).await.reason, "not_yet_valid");
    let almost = rs(&with(claims(), "nbf", json!(now + 30)));
    assert!(fx.call(&almost).await.passed(), "nbf within the leeway");
    fx.clock.advance(Duration::from_secs(1));
    assert!(fx.call(&early).await.passed(), "nbf reached");
}

#[tokio::test]
async fn verified_tokens_are_cached_until_they_expire() {
    let fx = Fx::new(POLICY);
    let jwt = fx.jwt();
    let token = rs(&with(claims(), "exp", json!(NOW + 100)));
    let first = jwt.verified(&token).await.unwrap();
    let again = jwt.verified(&token).await.unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "the second use is served from the cache"
    );
    assert_eq!(jwt.cache.len(), 1);
    fx.clock.advance(Duration::from_secs(100 + 30));
    let late = jwt.verified(&token).await.unwrap();
    assert!(Arc::ptr_eq(&first, &late), "still good at exp + leeway");
    fx.clock.advance(Duration::from_secs(1));
    assert!(matches!(jwt.verified(&token).await, Err(Failure::Expired)));
    assert_eq!(jwt.cache.len(), 0, "the expired entry is gone");
    // failures are not cached
    let bad = rs(&with(claims(), "iss", json!("x")));
    assert!(jwt.verified(&bad).await.is_err());
    assert_eq!(jwt.cache.len(), 0);
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let fx = Fx::new(&POLICY.replace("kind: jwt\n", "kind: jwt\n    cache_entries: 8\n"));
    for i in 0..50 {
        let t = rs(&with(claims(), "jti", json!(i)));
        assert!(fx.call(&t).await.passed());
    }
    assert!(fx.jwt().cache.len() <= 8, "{}", fx.jwt().cache.len());
}

#[tokio::test]
async fn missing_scopes_get_403_insufficient_scope() {
    let fx = Fx::new(&POLICY.replace("[orders:write]", "[orders:write, inventory:read]"));
    let out = fx.call(&rs(&claims())).await;
    assert_eq!((out.status, out.reason), (Some(403), "insufficient_scope"));
    let challenge = out.challenge.unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"gateway\", error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"orders:write inventory:read\""),
        "{challenge}"
    );
    // `scp` as an array, and as a string, count too
    let c = with(
        with(claims(), "scope", Value::Null),
        "scp",
        json!(["orders:write", "inventory:read"]),
    );
    assert!(fx.call(&rs(&c)).await.passed());
    let c = with(claims(), "scp", json!("inventory:read"));
    assert!(fx.call(&rs(&c)).await.passed());
    // a scope that merely contains the required one is not it
    let c = with(claims(), "scope", json!("orders:writer inventory:read"));
    assert_eq!(fx.call(&rs(&c)).await.reason, "insufficient_scope");
}

#[tokio::test]
async fn the_token_channel_must_match_the_route_and_is_set_for_later_policies() {
    let fx = Fx::new(POLICY);
    let amazon = rs(&claims());
    assert!(fx.call_on(&amazon, "amazon").await.passed());
    let out = fx.call_on(&amazon, "shopify").await;
    assert_eq!((out.status, out.reason), (Some(403), "channel_mismatch"));
    assert!(
        out.challenge
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    // no {channel} in the route: the token names it
    assert_eq!(fx.call(&amazon).await.channel.as_deref(), Some("amazon"));
    // the client table, when there is no channel claim
    let by_client = rs(&with(claims(), "channel", Value::Null));
    assert_eq!(
        fx.call(&by_client).await.channel.as_deref(),
        Some("shopify")
    );
    assert_eq!(
        fx.call_on(&by_client, "amazon").await.reason,
        "channel_mismatch"
    );
    let nobody = rs(&with(
        with(claims(), "channel", Value::Null),
        "client_id",
        json!("stranger"),
    ));
    assert_eq!(fx.call(&nobody).await.reason, "no_channel");
    let unknown = rs(&with(claims(), "channel", json!("etsy")));
    assert_eq!(fx.call(&unknown).await.reason, "unknown_channel");
}

#[tokio::test]
async fn without_a_channel_section_tokens_are_not_bound_to_channels() {
    let fx = Fx::new(&POLICY.replace(
        "    channel: {claim: channel, clients: {acme-shop: shopify}}\n",
        "",
    ));
    let out = fx
        .call_on(&rs(&with(claims(), "channel", json!("shopify"))), "amazon")
        .await;
    assert!(out.passed());
    assert_eq!(out.channel.as_deref(), Some("amazon"));
}

#[tokio::test]
async fn where_the_token_travels_and_how_long_it_is_are_checked_first() {
    let fx = Fx::new(POLICY);
    let token = rs(&claims());
    let out = fx.request(None, None, None).await;
    assert_eq!((out.status, out.reason), (Some(401), "missing_token"));
    assert_eq!(
        out.challenge.as_deref(),
        Some("Bearer realm=\"gateway\""),
        "no error attribute without credentials"
    );
    let out = fx.request(Some("Basic dXNlcjpwYXNz"), None, None).await;
    assert_eq!(out.reason, "missing_token");
    let out = fx
        .request(None, Some(&format!("x=1&access_token={token}")), None)
        .await;
    assert_eq!((out.status, out.reason), (Some(401), "token_in_query"));
    assert!(out.challenge.unwrap().contains("error=\"invalid_request\""));
    // refused even when the header is there too: the token already leaked into the URL
    let out = fx
        .request(
            Some(&format!("Bearer {token}")),
            Some(&format!("access_token={token}")),
            None,
        )
        .await;
    assert_eq!(out.reason, "token_in_query");
    let huge = format!(
        "{}.{}.{}",
        "a".repeat(30_000),
        "b".repeat(30_000),
        "c".repeat(5_000)
    );
    let out = fx.call(&huge).await;
    assert_eq!((out.status, out.reason), (Some(401), "too_long"));
    let out = fx.call(&format!("{token}x{}", "y".repeat(8 * 1024))).await;
    assert_eq!(out.reason, "too_long");
    assert_eq!(
        fx.request(Some("Bearer"), None, None).await.reason,
        "malformed"
    );
    assert_eq!(
        fx.request(Some("Bearer a b c"), None, None).await.reason,
        "malformed"
    );
    // a byte outside RFC 6750's b64token anywhere in an otherwise good token
    for bad in ["!", "%2E", "\"", "*"] {
        let (head, rest) = token.split_at(token.len() / 2);
        let out = fx
            .request(Some(&format!("Bearer {head}{bad}{rest}")), None, None)
            .await;
        assert_eq!(out.reason, "malformed", "{bad}");
    }
    assert!(
        fx.request(Some(&format!("bearer   {token}")), None, None)
            .await
            .passed()
    );
}

#[tokio::test]
async fn rejections_never_echo_the_token_and_carry_the_bearer_challenge() {
    let fx = Fx::new(POLICY);
    let expired = rs(&with(claims(), "exp", json!(NOW - 3600)));
    let out = fx.call(&expired).await;
    assert_eq!(out.status, Some(401));
    assert!(!out.body.contains(&expired));
    for part in expired.split('.') {
        assert!(!out.body.contains(part), "the body echoes a token segment");
    }
    let challenge = out.challenge.unwrap();
    assert!(!challenge.contains(expired.split('.').nth(1).unwrap()));
    assert_eq!(
        challenge,
        "Bearer realm=\"gateway\", error=\"invalid_token\", error_description=\"the access token has expired\""
    );
    let doc: Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(doc["type"], "urn:gateway:problem:invalid-token");
    assert_eq!(doc["status"], 401);
    assert_eq!(fx.failures("expired"), 1);
}

#[tokio::test]
async fn at_jwt_type_is_required_when_configured() {
    let fx = Fx::new(&POLICY.replace("kind: jwt\n", "kind: jwt\n    require_at_jwt: true\n"));
    assert_eq!(fx.call(&rs(&claims())).await.reason, "wrong_type");
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(dev_kid());
    h.typ = Some("at+jwt".into());
    assert!(
        fx.call(&encode(&h, &claims(), &dev_rsa()).unwrap())
            .await
            .passed()
    );
    h.typ = Some("application/AT+JWT".into());
    assert!(
        fx.call(&encode(&h, &claims(), &dev_rsa()).unwrap())
            .await
            .passed()
    );
}

#[tokio::test]
async fn algorithms_outside_the_list_are_refused_even_with_a_matching_key() {
    let fx = Fx::new(&POLICY.replace("kind: jwt\n", "kind: jwt\n    algorithms: [RS256, HS256]\n"));
    let t = sign(&es_key(), Algorithm::ES256, Some("es"), &claims());
    assert_eq!(fx.call(&t).await.reason, "alg_not_allowed");
    assert!(fx.call(&rs(&claims())).await.passed());
    let t = sign(&rotated_rsa(), Algorithm::RS384, Some("ps"), &claims());
    assert_eq!(fx.call(&t).await.reason, "alg_not_allowed");
}

#[tokio::test]
async fn unknown_kids_without_a_jwks_url_are_refused() {
    let fx = Fx::new(POLICY);
    let t = sign(&rotated_rsa(), Algorithm::RS256, Some("who"), &claims());
    assert_eq!(fx.call(&t).await.reason, "unknown_kid");
    assert_eq!(fx.http.calls(), 0);
}

// ---- remote key sets ----

const REMOTE: &str = "    kind: jwt
    issuer: https://idp.test
    audience: gateway
    keys: {jwks_url: \"https://idp.test/jwks\", refresh_cooldown: 30s, max_age: 1h}
";

fn key_a() -> Value {
    jwk(&dev_rsa(), Algorithm::RS256, "a")
}

fn key_b() -> Value {
    jwk(&rotated_rsa(), Algorithm::RS256, "b")
}

fn token_a() -> String {
    sign(&dev_rsa(), Algorithm::RS256, Some("a"), &claims())
}

fn token_b() -> String {
    sign(&rotated_rsa(), Algorithm::RS256, Some("b"), &claims())
}

async fn remote_fx(first: Result<&str, FetchError>) -> Fx {
    let fx = Fx::new(REMOTE);
    fx.http.push(first);
    fx
}

#[tokio::test]
async fn the_remote_set_is_fetched_at_warm_up_and_a_failure_fails_it() {
    let fx = remote_fx(Ok(&jwks(&[key_a()]))).await;
    assert_eq!(fx.http.calls(), 0, "compiling fetches nothing");
    fx.set.warm_up().await.unwrap();
    assert_eq!(fx.http.calls(), 1);
    assert!(fx.call(&token_a()).await.passed());
    fx.set.warm_up().await.unwrap();
    assert_eq!(fx.http.calls(), 1, "a loaded set is not fetched again");

    let down = remote_fx(Err(FetchError::Status(503))).await;
    let errors = down.set.warm_up().await.unwrap_err();
    let text = errors.to_string();
    assert!(text.contains("policy \"auth\""), "{text}");
    assert!(text.contains("HTTP 503"), "{text}");
    let junk = remote_fx(Ok("{\"keys\": []}")).await;
    assert!(junk.set.warm_up().await.is_err());
    assert_eq!(
        down.metrics
            .jwt
            .jwks_refreshes
            .with_label_values(&["auth", "failure"])
            .get(),
        1
    );
}

#[tokio::test]
async fn rotation_new_keys_are_fetched_on_an_unknown_kid_and_removed_keys_stop_working() {
    let fx = Fx::new(&REMOTE.replace("30s", "0s"));
    fx.http.push(Ok(&jwks(&[key_a()])));
    fx.set.warm_up().await.unwrap();
    let a = token_a();
    assert!(fx.call(&a).await.passed());
    // the provider rotates: b replaces a
    fx.http.push(Ok(&jwks(&[key_b()])));
    assert!(
        fx.call(&token_b()).await.passed(),
        "b is fetched on its first use"
    );
    assert_eq!(fx.http.calls(), 2);
    // a's token was cached, but its key is gone
    let out = fx.call(&a).await;
    assert_eq!((out.status, out.reason), (Some(401), "unknown_kid"));
    // the provider goes down: known keys keep working, unknown ones fail
    fx.http
        .push(Err(FetchError::Transport("connection refused".into())));
    let c = sign(&rotated_rsa(), Algorithm::RS256, Some("c"), &claims());
    assert_eq!(fx.call(&c).await.reason, "unknown_kid");
    let b2 = sign(
        &rotated_rsa(),
        Algorithm::RS256,
        Some("b"),
        &with(claims(), "jti", json!("2")),
    );
    assert!(
        fx.call(&b2).await.passed(),
        "the last good set keeps serving"
    );
    assert!(fx.call(&token_b()).await.passed());
}

#[tokio::test]
async fn unknown_kids_refresh_at_most_once_per_cooldown() {
    let fx = remote_fx(Ok(&jwks(&[key_a()]))).await;
    fx.set.warm_up().await.unwrap();
    assert_eq!(fx.http.calls(), 1);
    for i in 0..20 {
        let junk = sign(
            &rotated_rsa(),
            Algorithm::RS256,
            Some(&format!("junk-{i}")),
            &claims(),
        );
        assert_eq!(fx.call(&junk).await.reason, "unknown_kid");
    }
    assert_eq!(
        fx.http.calls(),
        1,
        "within the cooldown of the warm-up fetch"
    );
    fx.clock.advance(Duration::from_secs(30));
    for i in 0..20 {
        let junk = sign(
            &rotated_rsa(),
            Algorithm::RS256,
            Some(&format!("junk-{i}")),
            &claims(),
        );
        assert_eq!(fx.call(&junk).await.reason, "unknown_kid");
    }
    assert_eq!(fx.http.calls(), 2, "one fetch once the cooldown passed");
    assert_eq!(
        fx.metrics
            .jwt
            .jwks_refreshes
            .with_label_values(&["auth", "success"])
            .get(),
        2
    );
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_fetch() {
    let fx = Fx::new(&REMOTE.replace("30s", "0s"));
    fx.http.push(Ok(&jwks(&[key_a()])));
    fx.set.warm_up().await.unwrap();
    fx.http.push(Ok(&jwks(&[key_a(), key_b()])));
    let set = Arc::new(fx.reload(&REMOTE.replace("30s", "0s")));
    // the reload kept the fetched set (same key settings): nothing was fetched for it
    assert_eq!(fx.http.calls(), 1);
    let token = token_b();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let set = set.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let jwt = jwt_of(&set);
            call_policy(jwt, &set, Some(&format!("Bearer {token}")), None, None)
                .await
                .passed()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(fx.http.calls(), 2, "eight callers, one fetch");
}

#[tokio::test]
async fn a_stale_set_is_refreshed_in_the_background() {
    let fx = remote_fx(Ok(&jwks(&[key_a()]))).await;
    fx.set.warm_up().await.unwrap();
    fx.http.push(Ok(&jwks(&[key_b()])));
    let long_lived = with(claims(), "exp", json!(NOW + 86_400));
    let a = sign(&dev_rsa(), Algorithm::RS256, Some("a"), &long_lived);
    fx.clock.advance(Duration::from_secs(3600));
    // this request is served from the current set; the refresh runs beside it
    assert!(fx.call(&a).await.passed());
    for _ in 0..100 {
        if fx.http.calls() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(fx.http.calls(), 2);
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(fx.call(&a).await.reason, "unknown_kid", "a was removed");
}

#[tokio::test]
async fn a_reload_keeps_the_fetched_set_only_when_the_key_settings_are_unchanged() {
    let fx = remote_fx(Ok(&jwks(&[key_a()]))).await;
    fx.set.warm_up().await.unwrap();
    // other settings change, the key source does not
    let same = fx.reload(&REMOTE.replace("audience: gateway", "audience: [gateway, x]"));
    same.warm_up().await.unwrap();
    assert_eq!(fx.http.calls(), 1);
    assert!(
        call_policy(
            jwt_of(&same),
            &same,
            Some(&format!("Bearer {}", token_a())),
            None,
            None
        )
        .await
        .passed()
    );
    // a new URL is a new set
    fx.http.push(Ok(&jwks(&[key_b()])));
    let moved = fx.reload(&REMOTE.replace("idp.test/jwks", "idp.test/v2/jwks"));
    moved.warm_up().await.unwrap();
    assert_eq!(fx.http.calls(), 2);
}

// ---- compile errors ----

fn compile_errors(policy: &str) -> Vec<String> {
    Fx::try_new(policy, &all_keys_jwks())
        .err()
        .unwrap_or_default()
}

#[test]
fn settings_are_checked_at_compile_time() {
    let e =
        compile_errors(&POLICY.replace("\"${HS}\"", "literal-secret-value-that-is-long-enough"));
    assert!(
        e.iter().any(|m| m.contains("never literal values")),
        "{e:?}"
    );
    assert!(
        !e.iter().any(|m| m.contains("literal-secret")),
        "the value is never shown: {e:?}"
    );
    let e = compile_errors(&POLICY.replace("${HS}", "${SHORT}"));
    assert!(
        e.iter().any(|m| m.contains("at least 32 are required")),
        "{e:?}"
    );
    assert!(!e.iter().any(|m| m.contains("too-short")), "{e:?}");
    let e = compile_errors(&REMOTE.replace("https://idp.test", "http://idp.test"));
    assert!(e.iter().any(|m| m.contains("must use https")), "{e:?}");
    let e = compile_errors(&POLICY.replace("acme-shop: shopify", "acme-shop: etsy"));
    assert!(
        e.iter()
            .any(|m| m.contains("channel \"etsy\" is not declared")),
        "{e:?}"
    );
    let e = compile_errors(&POLICY.replace(
        "keys: {jwks_file: keys.json, hs256: {hs1: \"${HS}\"}}",
        "keys: {}",
    ));
    assert!(e.iter().any(|m| m.contains("no key source")), "{e:?}");
    let e = compile_errors(&POLICY.replace("jwks_file: keys.json", "jwks_file: missing.json"));
    assert!(e.iter().any(|m| m.contains("cannot read")), "{e:?}");
    let e = compile_errors(&POLICY.replace("kind: jwt\n", "kind: jwt\n    algorithms: [RS256]\n"));
    assert!(
        e.iter().any(|m| m.contains("does not accept HS256")),
        "{e:?}"
    );
    let e = compile_errors(&POLICY.replace("kind: jwt\n", "kind: jwt\n    algorithms: [none]\n"));
    assert!(!e.is_empty());
    let e = compile_errors(&POLICY.replace("[orders:write]", "[\"orders write\"]"));
    assert!(e.iter().any(|m| m.contains("not a valid scope")), "{e:?}");
    // every error is located
    assert!(e.iter().all(|m| m.contains("p.yaml:")), "{e:?}");
}

#[test]
fn the_dev_jwks_matches_the_dev_key() {
    let dev: Value = serde_json::from_slice(&read("certs/dev-jwks.json")).unwrap();
    let key = &dev["keys"][0];
    let from_private = jwk(&dev_rsa(), Algorithm::RS256, "x");
    assert_eq!(key["n"], from_private["n"]);
    assert_eq!(key["e"], from_private["e"]);
    let thumbprint = serde_json::from_value::<Jwk>(key.clone())
        .unwrap()
        .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
        .unwrap();
    assert_eq!(
        key["kid"],
        thumbprint.as_str(),
        "the kid is the RFC 7638 thumbprint"
    );
}

/// The branch-free check accepts exactly RFC 6750's b64token bytes, and finds one bad byte at
/// any place of a long token, on both sides of its chunks' edges.
#[test]
fn the_b64token_check_takes_exactly_the_rfc_bytes_wherever_they_are() {
    const B64TOKEN: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=";
    for b in 0..=255u8 {
        assert_eq!(
            super::is_b64token(&[b]),
            B64TOKEN.contains(&b),
            "byte {b:#04x}"
        );
    }
    let good: Vec<u8> = B64TOKEN.iter().copied().cycle().take(700).collect();
    assert!(super::is_b64token(&good));
    for at in 0..good.len() {
        for bad in [b'!', b',', b' ', 0x80, 0xff] {
            let mut token = good.clone();
            token[at] = bad;
            assert!(!super::is_b64token(&token), "{bad:#04x} at {at}");
        }
    }
}
