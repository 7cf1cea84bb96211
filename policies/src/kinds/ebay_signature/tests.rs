//! Unit tests of the `ebay_signature` policy: eBay's own SDK fixture, header decoding of
//! hostile input, the challenge hash, and the key cache's refresh rules with a scripted key API
//! and a manual clock.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::keys::{KeyApi, KeyFetchError, KeyFuture, KeySettings, parse_key_answer};
use super::*;
use crate::clock::ManualClock;
use crate::credentials::{AccessToken, Credentials, FetchedToken, TokenFuture, TokenSource};
use crate::error::ErrorSink;
use crate::secret::tests::FakeEnv;

// eBay's fixture from event-notification-nodejs-sdk test/test.json ("VALID"; Apache License
// 2.0, Copyright 2021 eBay Inc.): a MARKETPLACE_ACCOUNT_DELETION notification, its
// X-EBAY-SIGNATURE, and getPublicKey's answer for its kid. The SDK verifies JSON.stringify of
// the parsed message, which for this object is the compact text below.
const FIXTURE_HEADER: &str = "eyJhbGciOiJlY2RzYSIsImtpZCI6Ijk5MzYyNjFhLTdkN2ItNDYyMS1hMGYxLTk2Y2NiNDI4YWY0OSIsInNpZ25hdHVyZSI6Ik1FWUNJUUNmeGZJV3V4bVdjSUJRSjljNS9YN2lHREpxczJSQ0dzQkVhQWppbnlycmZBSWhBSVY2d0djVGlCdVY1S0pVaWYyaG9reXJMK1E5c3NIa2FkK214Mm5FRTI1dyIsImRpZ2VzdCI6IlNIQTEifQ==";
const FIXTURE_BODY: &str = r#"{"metadata":{"topic":"MARKETPLACE_ACCOUNT_DELETION","schemaVersion":"1.0","deprecated":false},"notification":{"notificationId":"49feeaeb-4982-42d9-a377-9645b8479411_33f7e043-fed8-442b-9d44-791923bd9a6d","eventDate":"2021-03-19T20:43:59.462Z","publishDate":"2021-03-19T20:43:59.679Z","publishAttemptCount":1,"data":{"username":"test_user","userId":"ma8vp1jySJC","eiasToken":"nY+sHZ2PrBmdj6wVnY+sEZ2PrA2dj6wJnY+gAZGEpwmdj6x9nY+seQ=="}}}"#;
const FIXTURE_KID: &str = "9936261a-7d7b-4621-a0f1-96ccb428af49";
const FIXTURE_KEY_ANSWER: &str = r#"{"key":"-----BEGIN PUBLIC KEY-----MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZhhxXKtR+TOvtDbgTPCkSof02qgBB7IsYOyf76ilExJ/upAa/vKIKheOoCyOpcLmi4t0b4uepb7LLjmMr90FUg==-----END PUBLIC KEY-----","algorithm":"ECDSA","digest":"SHA1"}"#;

#[test]
fn ebays_sdk_fixture_verifies_and_a_changed_byte_does_not() {
    let header = parse_header(FIXTURE_HEADER.as_bytes()).unwrap();
    assert_eq!(header.kid, FIXTURE_KID);
    assert_eq!(header.digest, Some(KeyDigest::Sha1));
    let key = parse_key_answer(FIXTURE_KID, FIXTURE_KEY_ANSWER.as_bytes()).unwrap();
    assert_eq!(key.digest, KeyDigest::Sha1);
    assert!(verify(&key, &header, FIXTURE_BODY.as_bytes()));
    let mut tampered = FIXTURE_BODY.as_bytes().to_vec();
    tampered[30] ^= 1;
    assert!(!verify(&key, &header, &tampered));
    // the same signature under a key pinned to SHA-256 does not verify
    let sha256_key = parse_key_answer(
        FIXTURE_KID,
        FIXTURE_KEY_ANSWER.replace("SHA1", "SHA256").as_bytes(),
    )
    .unwrap();
    assert!(!verify(&sha256_key, &header, FIXTURE_BODY.as_bytes()));
}

#[test]
fn key_answers_with_line_breaks_or_without_armour_parse_and_others_do_not() {
    let pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZhhxXKtR+TOvtDbgTPCkSof02qgB\nB7IsYOyf76ilExJ/upAa/vKIKheOoCyOpcLmi4t0b4uepb7LLjmMr90FUg==\n-----END PUBLIC KEY-----\n";
    let answer = serde_json::json!({"key": pem, "algorithm": "ECDSA", "digest": "SHA1"});
    assert!(parse_key_answer("k", answer.to_string().as_bytes()).is_ok());
    for bad in [
        r#"{"key":"-----BEGIN PUBLIC KEY-----AAAA-----END PUBLIC KEY-----","algorithm":"ECDSA","digest":"SHA1"}"#,
        r#"{"key":"x","algorithm":"RSA","digest":"SHA1"}"#,
        &FIXTURE_KEY_ANSWER.replace("SHA1", "MD5"),
        "not json",
        "{}",
    ] {
        assert!(parse_key_answer("k", bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn hostile_headers_are_malformed_never_a_panic() {
    let b64 = |s: &str| STANDARD.encode(s);
    use base64::engine::general_purpose::STANDARD;
    let good_sig = "MEYCIQCfxfIWuxmWcIBQJ9c5/X7iGDJqs2RCGsBEaAjinyrrfAIhAIV6wGcTiBuV5KJUif2hokyrL+Q9ssHkad+mx2nEE25w";
    let cases = [
        String::new(),
        "!!!".into(),
        "a".repeat(5000),
        b64("not json"),
        b64("[]"),
        b64(r#"{"alg":"ecdsa"}"#),
        b64(&format!(
            r#"{{"alg":"rsa","kid":"k","signature":"{good_sig}","digest":"SHA1"}}"#
        )),
        b64(&format!(
            r#"{{"alg":"ecdsa","kid":"../../x","signature":"{good_sig}"}}"#
        )),
        b64(&format!(
            r#"{{"alg":"ecdsa","kid":"..","signature":"{good_sig}"}}"#
        )),
        b64(&format!(
            r#"{{"alg":"ecdsa","kid":"a/b?c","signature":"{good_sig}"}}"#
        )),
        b64(r#"{"alg":"ecdsa","kid":"k","signature":"AAAA"}"#),
        b64(r#"{"alg":"ecdsa","kid":"k","signature":"%%%"}"#),
        b64(&format!(
            r#"{{"alg":"ecdsa","kid":"k","signature":"{good_sig}","digest":"MD5"}}"#
        )),
    ];
    for c in &cases {
        assert_eq!(
            parse_header(c.as_bytes()).err(),
            Some(Failure::Malformed),
            "{c}"
        );
    }
    // without a digest the key's own is used
    let ok = b64(&format!(
        r#"{{"alg":"ECDSA","kid":"k-1","signature":"{good_sig}"}}"#
    ));
    assert!(parse_header(ok.as_bytes()).is_ok());
}

#[test]
fn the_challenge_response_is_sha256_of_code_token_and_endpoint_in_hex() {
    // the inputs of eBay's SDK test (test/test.js, "should return the correct challenge
    // response"), hashed here independently of the policy's code
    let code = "71745723-d031-455c-bfa5-f90d11b4f20a";
    let token = "71745723-d031-455c-bfa5-f90d11b4f20a";
    let endpoint = "http://www.testendpoint.com/webhook";
    let expected = hex::encode(Sha256::digest(format!("{code}{token}{endpoint}")));
    assert_eq!(
        challenge_response(code, &format!("{token}{endpoint}")),
        expected
    );
    assert_eq!(expected.len(), 64);
    assert!(valid_verification_token(&"a".repeat(32)));
    assert!(!valid_verification_token(&"a".repeat(31)));
    assert!(!valid_verification_token(&"a".repeat(81)));
    assert!(!valid_verification_token(&format!("{}!", "a".repeat(40))));
}

/// Answers key fetches from a script (the last answer repeats) and counts them.
#[derive(Debug, Default)]
struct ScriptedApi {
    answers: Mutex<VecDeque<Result<&'static str, KeyFetchError>>>,
    last: Mutex<Option<Result<&'static str, KeyFetchError>>>,
    fetches: AtomicUsize,
    tokens: AtomicUsize,
}

impl ScriptedApi {
    fn push(&self, a: Result<&'static str, KeyFetchError>) {
        self.answers.lock().unwrap().push_back(a);
    }
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl TokenSource for ScriptedApi {
    fn fetch<'a>(&'a self, _c: &'a Credentials) -> TokenFuture<'a> {
        self.tokens.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Ok(FetchedToken {
                access_token: AccessToken::new("app-token"),
                expires_in: Duration::from_secs(7200),
            })
        })
    }
}

impl KeyApi for ScriptedApi {
    fn get_key<'a>(&'a self, _u: &'a str, _t: &'a AccessToken, _d: Duration) -> KeyFuture<'a> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let next = self.answers.lock().unwrap().pop_front();
        let mut last = self.last.lock().unwrap();
        let answer = match next {
            Some(a) => {
                *last = Some(a.clone());
                a
            }
            None => last.clone().unwrap(),
        };
        Box::pin(async move {
            tokio::task::yield_now().await;
            answer.map(|s| Bytes::copy_from_slice(s.as_bytes()))
        })
    }
}

fn credentials() -> Arc<Credentials> {
    let spec: CredentialsSpec = serde_json::from_value(serde_json::json!({
        "preset": "ebay_application",
        "token_url": "https://api.ebay.com/identity/v1/oauth2/token",
        "client_id": "app-id",
        "client_secret": "${EBAY_SECRET}",
    }))
    .unwrap();
    let env = FakeEnv(
        [("EBAY_SECRET".to_owned(), "s3cret".to_owned())]
            .into_iter()
            .collect(),
    );
    let (_, map) = crate::source::parse_yaml("c: 1").unwrap();
    let mut errors = ErrorSink::new("p.yaml".into(), &map);
    let c = credentials::compile(&spec, "/c", std::path::Path::new("."), &env, &mut errors);
    assert!(errors.is_empty());
    let c = c.unwrap();
    assert_eq!(
        c.scope.as_deref(),
        Some("https://api.ebay.com/oauth/api_scope")
    );
    Arc::new(c)
}

fn cache(api: Arc<ScriptedApi>, clock: Arc<ManualClock>, cooldown: u64) -> Arc<KeyCache> {
    let metrics = EbaySignatureMetrics::new(&SharedMetrics::new().unwrap()).unwrap();
    Arc::new(KeyCache::new(
        KeySettings {
            url_template: EBAY_KEY_URL.into(),
            max_age: Duration::from_secs(3600),
            cooldown: Duration::from_secs(cooldown),
            timeout: Duration::from_secs(5),
            max_keys: 2,
        },
        "ebay".into(),
        credentials(),
        api,
        clock,
        KeyCounters {
            fetches: metrics.key_fetches,
        },
        metrics.token_refreshes,
    ))
}

#[tokio::test]
async fn a_key_is_fetched_once_for_many_requests_and_unknown_kids_wait_the_cooldown() {
    let api = Arc::new(ScriptedApi::default());
    api.push(Ok(FIXTURE_KEY_ANSWER));
    let clock = Arc::new(ManualClock::new(Duration::from_secs(1_000_000)));
    let keys = cache(api.clone(), clock.clone(), 30);
    let many = futures_join(&keys, FIXTURE_KID, 20).await;
    assert!(many.iter().all(Result::is_ok));
    assert_eq!(api.fetches(), 1);
    assert_eq!(api.tokens.load(Ordering::SeqCst), 1);

    // a kid eBay does not know: asked once, then not again within the cooldown
    api.push(Err(KeyFetchError::NotFound));
    assert_eq!(keys.key("made-up").await.err(), Some(KeyError::Unknown));
    assert_eq!(keys.key("made-up").await.err(), Some(KeyError::Unknown));
    assert_eq!(api.fetches(), 2);
    clock.advance(Duration::from_secs(31));
    assert_eq!(keys.key("made-up").await.err(), Some(KeyError::Unknown));
    assert_eq!(api.fetches(), 3);
}

async fn futures_join(
    keys: &Arc<KeyCache>,
    kid: &str,
    n: usize,
) -> Vec<Result<Arc<EbayKey>, KeyError>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let keys = keys.clone();
        let kid = kid.to_owned();
        set.spawn(async move { keys.key(&kid).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[tokio::test]
async fn a_down_key_api_is_unavailable_without_a_key_and_stale_while_error_with_one() {
    let api = Arc::new(ScriptedApi::default());
    api.push(Err(KeyFetchError::Unavailable("HTTP 503".into())));
    let clock = Arc::new(ManualClock::new(Duration::from_secs(1_000_000)));
    let keys = cache(api.clone(), clock.clone(), 30);
    assert_eq!(
        keys.key(FIXTURE_KID).await.err(),
        Some(KeyError::Unavailable)
    );
    // within the cooldown the key API is not asked again
    assert_eq!(
        keys.key(FIXTURE_KID).await.err(),
        Some(KeyError::Unavailable)
    );
    assert_eq!(api.fetches(), 1);
    clock.advance(Duration::from_secs(31));
    api.push(Ok(FIXTURE_KEY_ANSWER));
    assert!(keys.key(FIXTURE_KID).await.is_ok());
    assert_eq!(api.fetches(), 2);

    // past max_age the key is refreshed in the background; a failed refresh keeps it
    api.push(Err(KeyFetchError::Unavailable("HTTP 503".into())));
    clock.advance(Duration::from_secs(3601));
    assert!(keys.key(FIXTURE_KID).await.is_ok());
    wait_fetches(&api, 3).await;
    assert!(keys.key(FIXTURE_KID).await.is_ok());
    assert_eq!(keys.len(), 1);

    // a refresh eBay answers 404 drops the key
    api.push(Err(KeyFetchError::NotFound));
    clock.advance(Duration::from_secs(31));
    assert!(keys.key(FIXTURE_KID).await.is_ok());
    wait_fetches(&api, 4).await;
    for _ in 0..100 {
        if keys.len() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(keys.len(), 0);
    assert_eq!(keys.key(FIXTURE_KID).await.err(), Some(KeyError::Unknown));
}

async fn wait_fetches(api: &ScriptedApi, n: usize) {
    for _ in 0..1000 {
        if api.fetches() >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("expected {n} fetches, saw {}", api.fetches());
}

#[tokio::test]
async fn a_refused_token_is_replaced_once_and_the_cache_is_bounded() {
    let api = Arc::new(ScriptedApi::default());
    api.push(Err(KeyFetchError::Unauthorized));
    api.push(Ok(FIXTURE_KEY_ANSWER));
    let clock = Arc::new(ManualClock::new(Duration::from_secs(1_000_000)));
    let keys = cache(api.clone(), clock.clone(), 0);
    assert!(keys.key(FIXTURE_KID).await.is_ok());
    assert_eq!(api.tokens.load(Ordering::SeqCst), 2);
    clock.advance(Duration::from_secs(1));
    assert!(keys.key("second").await.is_ok());
    clock.advance(Duration::from_secs(1));
    assert!(keys.key("third").await.is_ok());
    // max_keys is 2: the oldest went
    assert_eq!(keys.len(), 2);
    let before = api.fetches();
    assert!(keys.key(FIXTURE_KID).await.is_ok());
    assert_eq!(api.fetches(), before + 1);
}
