//! Edge authentication: the `jwt` policy's header phase for RS256, ES256 and HS256 tokens,
//! cold (a policy with `cache_entries: 0` verifies every time) and from the verified-token
//! cache, and the `webhook_signature` body phase on a 4 KiB Shopify push.
//!
//! Run: `cargo bench -p benches --bench auth` (add `-- --quick` for a short run).

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use base64::Engine;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use policies::compile::compile_str;
use policies::env::CompileEnv;
use policies::kinds::Policy;
use policies::model::PolicySet;
use policies::pipeline::{ExchangeState, Flow, RequestView};
use policies::route::PathParams;
use policies::secret::SecretSource;
use serde_json::{Value, json};
use sha2::Sha256;

const HS_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";
const WEBHOOK_SECRET: &str = "shpss_bench_secret";

#[derive(Debug)]
struct Secrets(HashMap<&'static str, &'static str>);

impl SecretSource for Secrets {
    fn env(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|v| (*v).to_owned())
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Polls a future that never waits (static keys: no fetch) to its end.
fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the policy waited"),
    }
}

struct Setup {
    set: PolicySet,
    _dir: PathBuf,
}

fn setup() -> Setup {
    let dir = std::env::temp_dir().join(format!("auth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let dev: Value = serde_json::from_slice(&read("certs/dev-jwks.json")).expect("dev jwks");
    let es = EncodingKey::from_ec_pem(&read("tests/fixtures/keys/es256.key")).expect("es key");
    let mut es_jwk = Jwk::from_encoding_key(&es, Algorithm::ES256).expect("es jwk");
    es_jwk.common.key_id = Some("es".into());
    let keys = json!({ "keys": [dev["keys"][0].clone(), es_jwk] });
    std::fs::write(dir.join("keys.json"), keys.to_string()).expect("keys file");
    let jwt = |cache: u32| {
        format!(
            "    kind: jwt\n    issuer: https://idp.bench\n    audience: gateway\n    keys: {{jwks_file: keys.json, hs256: {{hs1: \"${{HS}}\"}}}}\n    scopes: [orders:write]\n    channel: {{claim: channel}}\n    cache_entries: {cache}\n"
        )
    };
    let yaml = format!(
        "version: 1\nchannels: {{amazon: {{}}, shopify: {{}}}}\nupstreams: {{erp: {{endpoints: [\"127.0.0.1:1\"]}}}}\npolicies:\n  cold:\n{}  cached:\n{}  shopify:\n    kind: webhook_signature\n    preset: shopify\n    secrets: [{{secret: \"${{WEBHOOK}}\", channel: shopify}}]\nroutes: []\n",
        jwt(0),
        jwt(10_000)
    );
    let env = CompileEnv {
        secrets: Arc::new(Secrets(HashMap::from([
            ("HS", HS_SECRET),
            ("WEBHOOK", WEBHOOK_SECRET),
        ]))),
        ..CompileEnv::default()
    };
    let set = compile_str(&dir.join("bench.yaml"), &yaml, &env, None)
        .unwrap_or_else(|e| panic!("bench policy file: {e}"));
    Setup { set, _dir: dir }
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let claims = json!({
        "iss": "https://idp.bench",
        "aud": "gateway",
        "sub": "bench",
        "iat": now(),
        "exp": now() + 3600,
        "scope": "orders:write orders:read",
        "channel": "amazon",
    });
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    encode(&h, &claims, key).expect("sign")
}

fn bench_jwt(c: &mut Criterion) {
    let s = setup();
    let dev_kid = {
        let v: Value = serde_json::from_slice(&read("certs/dev-jwks.json")).expect("jwks");
        v["keys"][0]["kid"].as_str().unwrap_or_default().to_owned()
    };
    let tokens = [
        (
            "RS256",
            token(
                Algorithm::RS256,
                &dev_kid,
                &EncodingKey::from_rsa_pem(&read("certs/dev-jwt-signing.key")).expect("rsa"),
            ),
        ),
        (
            "ES256",
            token(
                Algorithm::ES256,
                "es",
                &EncodingKey::from_ec_pem(&read("tests/fixtures/keys/es256.key")).expect("es"),
            ),
        ),
        (
            "HS256",
            token(
                Algorithm::HS256,
                "hs1",
                &EncodingKey::from_secret(HS_SECRET.as_bytes()).expect("hs"),
            ),
        ),
    ];
    let params = PathParams::from_pairs(&[("channel", "amazon")]);
    let amazon = s.set.channels.get("amazon");
    let mut group = c.benchmark_group("jwt_verify");
    for (alg, token) in &tokens {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        let req = RequestView {
            method: &Method::POST,
            path: "/channels/amazon/orders",
            query: None,
            headers: &headers,
            params: &params,
        };
        for mode in ["cold", "cached"] {
            let policy = &s.set.policies[mode].policy;
            let check = || {
                let mut state = ExchangeState {
                    channel: amazon.clone(),
                    ..ExchangeState::default()
                };
                let flow = ready(policy.on_request(&req, &mut state));
                assert!(matches!(flow, Flow::Continue(())), "{alg} {mode} refused");
                state
            };
            check();
            group.bench_function(format!("{alg}/{mode}"), |b| b.iter(|| black_box(check())));
        }
    }
    group.finish();
}

fn bench_webhook(c: &mut Criterion) {
    let s = setup();
    let policy = &s.set.policies["shopify"].policy;
    assert!(matches!(policy, Policy::WebhookSignature(_)));
    let body = Bytes::from(
        json!({"id": 820982911946154508u64, "note": "x".repeat(4000)})
            .to_string()
            .into_bytes(),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("mac");
    mac.update(&body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-shopify-hmac-sha256",
        HeaderValue::from_str(&sig).expect("header"),
    );
    let params = PathParams::default();
    let req = RequestView {
        method: &Method::POST,
        path: "/webhooks/shopify",
        query: None,
        headers: &headers,
        params: &params,
    };
    c.bench_function("webhook_signature/shopify_4KiB", |b| {
        b.iter(|| {
            let mut state = ExchangeState::default();
            let mut body = body.clone();
            let flow = ready(policy.on_request_body(&req, &mut state, &mut body));
            assert!(matches!(flow, Flow::Continue(())));
        })
    });
}

criterion_group!(benches, bench_jwt, bench_webhook);
criterion_main!(benches);
