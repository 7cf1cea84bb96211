//! Edge authentication end to end, with the real binary and the ERP simulator: every bad
//! bearer token is refused with 401 (403 for a missing scope or another channel's token) and
//! nothing reaches the ERP; JWKS keys rotate through a local identity provider and survive its
//! outage; Shopify-signed webhooks pass, tampered ones fail, a rotated secret passes; and
//! `gateway token` mints development tokens only.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use erp_sim::ErpSim;
use hmac::{Hmac, Mac};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use sha2::Sha256;
use tests::{Gateway, Start, TempDir, gateway_binary, policy_file, workspace_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISS: &str = "https://idp.test";
const HS_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(workspace_root().join(rel)).unwrap()
}

fn dev_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read("certs/dev-jwt-signing.key")).unwrap()
}

fn dev_jwks() -> Value {
    serde_json::from_slice(&read("certs/dev-jwks.json")).unwrap()
}

fn dev_kid() -> String {
    dev_jwks()["keys"][0]["kid"].as_str().unwrap().to_owned()
}

fn rotated_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&read("tests/fixtures/keys/rsa-rotated.key")).unwrap()
}

fn es_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&read("tests/fixtures/keys/es256.key")).unwrap()
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut j = Jwk::from_encoding_key(key, alg).unwrap();
    j.common.key_id = Some(kid.into());
    serde_json::to_value(j).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(channel: &str) -> Value {
    json!({
        "iss": ISS,
        "aud": "gateway",
        "sub": format!("{channel}-connector"),
        "iat": now(),
        "exp": now() + 600,
        "scope": "orders:write orders:read",
        "channel": channel,
    })
}

fn with(mut c: Value, key: &str, value: Value) -> Value {
    c[key] = value;
    c
}

fn sign(key: &EncodingKey, alg: Algorithm, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    encode(&h, claims, key).unwrap()
}

fn rs(claims: &Value) -> String {
    sign(&dev_key(), Algorithm::RS256, &dev_kid(), claims)
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

/// The `value` of the series of `name` whose labels include all of `labels` (0 if absent).
fn series(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A file with a `jwt` policy over a JWKS file (the development key and an ES256 test key) and
/// an HS256 secret, protecting the channel routes and a channel-less route.
fn auth_setup(erp: SocketAddr, dir: &TempDir) -> String {
    let keys =
        json!({ "keys": [dev_jwks()["keys"][0].clone(), jwk(&es_key(), Algorithm::ES256, "es")] });
    let keys_file = dir.path().join("keys.json");
    std::fs::write(&keys_file, keys.to_string()).unwrap();
    policy_file(
        erp,
        "",
        &format!(
            "\
policies:
  auth:
    kind: jwt
    issuer: {ISS}
    audience: gateway
    keys:
      jwks_file: {}
      hs256: {{hs1: \"${{TEST_HS_SECRET}}\"}}
    scopes: [orders:write]
    channel: {{claim: channel}}
  auth-forwarding:
    kind: jwt
    issuer: {ISS}
    audience: gateway
    keys:
      jwks_file: {}
    forward_token: true
routes:
  - name: orders
    methods: [GET, POST]
    path: /channels/{{channel}}/orders
    upstream: erp
    upstream_path: /echo/{{channel}}/orders
    policies: [auth]
  - name: any-orders
    methods: [GET]
    path: /orders
    upstream: erp
    upstream_path: /echo/orders
    policies: [auth]
  - name: forwarded-orders
    methods: [GET]
    path: /forwarded/orders
    upstream: erp
    upstream_path: /echo/orders
    policies: [auth-forwarding]
",
            keys_file.display(),
            keys_file.display()
        ),
    )
}

async fn start_auth() -> (ErpSim, Gateway, TempDir) {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = TempDir::new("auth").unwrap();
    let gw = Gateway::start_with(
        &auth_setup(sim.addr(), &dir),
        Start {
            env: vec![("TEST_HS_SECRET".into(), HS_SECRET.into())],
            ..Start::default()
        },
    )
    .unwrap();
    (sim, gw, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401_or_403_and_nothing_reaches_the_erp() {
    let (sim, gw, _dir) = start_auth().await;
    let client = reqwest::Client::new();
    let good = rs(&claims("amazon"));
    let parts: Vec<&str> = good.split('.').collect();
    let tampered_payload = b64(with(claims("amazon"), "scope", json!("admin orders:write"))
        .to_string()
        .as_bytes());
    let public_pem = read("certs/dev-jwt-signing.pub");
    let rsa_as_hmac = EncodingKey::from_secret(&public_pem).unwrap();
    let cases: Vec<(&str, Option<String>, &str, u16, &str)> = vec![
        // (case, Authorization value, path and query, status, reason)
        (
            "no token",
            None,
            "/channels/amazon/orders",
            401,
            "missing_token",
        ),
        (
            "malformed: two segments",
            Some("abc.def".into()),
            "/channels/amazon/orders",
            401,
            "malformed",
        ),
        (
            "malformed: four segments",
            Some(format!("{good}.x")),
            "/channels/amazon/orders",
            401,
            "malformed",
        ),
        (
            "malformed: header not base64url JSON",
            Some(format!("!!.{}.{}", parts[1], parts[2])),
            "/channels/amazon/orders",
            401,
            "malformed",
        ),
        (
            "alg none",
            Some(format!(
                "{}.{}.",
                b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
                parts[1]
            )),
            "/channels/amazon/orders",
            401,
            "alg_not_allowed",
        ),
        (
            "HS256 signed with the RSA public key",
            Some(sign(
                &rsa_as_hmac,
                Algorithm::HS256,
                &dev_kid(),
                &claims("amazon"),
            )),
            "/channels/amazon/orders",
            401,
            "alg_not_allowed",
        ),
        (
            "bad signature",
            Some(sign(
                &rotated_key(),
                Algorithm::RS256,
                &dev_kid(),
                &claims("amazon"),
            )),
            "/channels/amazon/orders",
            401,
            "bad_signature",
        ),
        (
            "payload tampered",
            Some(format!("{}.{tampered_payload}.{}", parts[0], parts[2])),
            "/channels/amazon/orders",
            401,
            "bad_signature",
        ),
        (
            "expired",
            Some(rs(&with(claims("amazon"), "exp", json!(now() - 3600)))),
            "/channels/amazon/orders",
            401,
            "expired",
        ),
        (
            "nbf in the future",
            Some(rs(&with(claims("amazon"), "nbf", json!(now() + 3600)))),
            "/channels/amazon/orders",
            401,
            "not_yet_valid",
        ),
        (
            "wrong iss",
            Some(rs(&with(
                claims("amazon"),
                "iss",
                json!("https://evil.test"),
            ))),
            "/channels/amazon/orders",
            401,
            "wrong_issuer",
        ),
        (
            "wrong aud",
            Some(rs(&with(
                claims("amazon"),
                "aud",
                json!(["billing", "crm"]),
            ))),
            "/channels/amazon/orders",
            401,
            "wrong_audience",
        ),
        (
            "unknown kid",
            Some(sign(
                &rotated_key(),
                Algorithm::RS256,
                "not-a-known-key",
                &claims("amazon"),
            )),
            "/channels/amazon/orders",
            401,
            "unknown_kid",
        ),
        (
            "ES256 signature of zeros (r = s = 0)",
            Some(raw_token(
                &json!({"alg": "ES256", "kid": "es", "typ": "JWT"}),
                &claims("amazon"),
                &[0u8; 64],
            )),
            "/channels/amazon/orders",
            401,
            "bad_signature",
        ),
        (
            "token in the query string",
            None,
            "/channels/amazon/orders?access_token=TOKEN",
            401,
            "token_in_query",
        ),
        (
            "64 KB token",
            Some(format!(
                "{}.{}.{}",
                "e".repeat(100),
                "p".repeat(64 * 1024),
                "s".repeat(100)
            )),
            "/channels/amazon/orders",
            401,
            "too_long",
        ),
        (
            "missing scope",
            Some(rs(&with(claims("amazon"), "scope", json!("orders:read")))),
            "/channels/amazon/orders",
            403,
            "insufficient_scope",
        ),
        (
            "another channel's token",
            Some(rs(&claims("shopify"))),
            "/channels/amazon/orders",
            403,
            "channel_mismatch",
        ),
    ];
    for (case, token, path, status, reason) in &cases {
        let path = path.replace("TOKEN", &good);
        let mut req = client.get(gw.url(&path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), *status, "{case}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{case}"
        );
        let challenge = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = resp.text().await.unwrap();
        match *status {
            401 if *reason == "missing_token" => {
                assert_eq!(
                    challenge, "Bearer realm=\"gateway\"",
                    "{case}: no error attribute"
                )
            }
            401 if *reason == "token_in_query" => {
                assert!(
                    challenge.contains("error=\"invalid_request\""),
                    "{case}: {challenge}"
                )
            }
            401 => assert!(
                challenge.contains("error=\"invalid_token\""),
                "{case}: {challenge}"
            ),
            _ => assert!(
                challenge.contains("error=\"insufficient_scope\""),
                "{case}: {challenge}"
            ),
        }
        if let Some(t) = token {
            for segment in t.split('.').filter(|s| s.len() > 8) {
                assert!(
                    !body.contains(segment),
                    "{case}: the problem echoes the token"
                );
            }
        }
        assert!(
            !body.contains(&good),
            "{case}: the problem echoes the token"
        );
        assert_eq!(
            sim.requests_started(),
            0,
            "{case}: the request reached the ERP"
        );
        let metrics = gw.metrics().unwrap();
        assert!(
            series(
                &metrics,
                "gateway_auth_failures_total",
                &[("policy", "auth"), ("reason", reason)]
            ) >= 1.0,
            "{case}: gateway_auth_failures_total{{reason={reason}}} was not counted"
        );
    }
    // a body on its way is not forwarded either
    let resp = client
        .post(gw.url("/channels/amazon/orders"))
        .header(
            "authorization",
            format!(
                "Bearer {}",
                rs(&with(claims("amazon"), "exp", json!(now() - 60)))
            ),
        )
        .header("content-type", "application/json")
        .body(r#"{"order":"1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(sim.requests_started(), 0);

    let metrics = gw.metrics().unwrap();
    assert_eq!(
        series(
            &metrics,
            "gateway_auth_failures_total",
            &[("policy", "auth"), ("reason", "expired")]
        ),
        2.0
    );
    assert_eq!(
        series(
            &metrics,
            "gateway_auth_failures_total",
            &[("policy", "auth"), ("reason", "bad_signature")]
        ),
        3.0
    );
    assert!(
        series(
            &metrics,
            "gateway_policy_rejections_total",
            &[("policy", "auth"), ("reason", "unknown_kid")]
        ) >= 1.0
    );

    // and the good token goes through
    let resp = client
        .get(gw.url("/channels/amazon/orders"))
        .header("authorization", format!("Bearer {good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sim.requests_started(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_pass_and_name_the_channel() {
    let (sim, gw, _dir) = start_auth().await;
    let client = reqwest::Client::new();
    let amazon = rs(&claims("amazon"));
    for _ in 0..3 {
        // the second and third are served from the verified-token cache
        let resp = client
            .get(gw.url("/channels/amazon/orders"))
            .header("authorization", format!("Bearer {amazon}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let echo: Value = resp.json().await.unwrap();
        assert_eq!(echo["path"], "/echo/amazon/orders");
    }
    let es = sign(&es_key(), Algorithm::ES256, "es", &claims("amazon"));
    let hs = sign(
        &EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap(),
        Algorithm::HS256,
        "hs1",
        &claims("amazon"),
    );
    for token in [es, hs] {
        let resp = client
            .get(gw.url("/channels/amazon/orders"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // a route without {channel}: the token's channel becomes the request's
    let shopify = rs(&claims("shopify"));
    let resp = client
        .get(gw.url("/orders"))
        .header("authorization", format!("Bearer {shopify}"))
        .header("x-request-id", "auth-channel-from-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let line = gw
        .wait_log(
            "request",
            "request_id",
            "auth-channel-from-token",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(line["channel"], "shopify");
    assert_eq!(sim.requests_started(), 6);
    // the token is the edge's business: the ERP does not get it...
    assert!(
        sim.requests()
            .iter()
            .all(|r| r.header("authorization").is_none())
    );
    // ...unless the policy says to forward it
    let resp = client
        .get(gw.url("/forwarded/orders"))
        .header("authorization", format!("Bearer {amazon}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let forwarded = sim.requests().pop().unwrap();
    assert_eq!(
        forwarded.header("authorization"),
        Some(format!("Bearer {amazon}").as_str())
    );
    assert!(
        !gw.output().contains(&amazon),
        "a token appears in the logs"
    );
}

/// A tiny JWKS server on 127.0.0.1: serves whatever document it holds, counts requests, and
/// can be stopped (its port then refuses connections).
struct JwksServer {
    addr: SocketAddr,
    doc: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(doc: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let doc = Arc::new(Mutex::new(doc));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (d, h) = (d.clone(), h.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = d.lock().unwrap().clone();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(resp.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        JwksServer {
            addr,
            doc,
            hits,
            task,
        }
    }

    fn serve(&self, doc: String) {
        *self.doc.lock().unwrap() = doc;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn stop(&self) {
        self.task.abort();
    }
}

fn remote_policy(erp: SocketAddr, jwks: SocketAddr) -> String {
    policy_file(
        erp,
        "",
        &format!(
            "\
policies:
  auth:
    kind: jwt
    issuer: {ISS}
    audience: gateway
    keys:
      jwks_url: http://{jwks}/.well-known/jwks.json
      refresh_cooldown: 0s
      fetch_timeout: 2s
routes:
  - name: orders
    methods: [GET]
    path: /channels/{{channel}}/orders
    upstream: erp
    upstream_path: /echo/{{channel}}/orders
    policies: [auth]
"
        ),
    )
}

async fn status_with(gw: &Gateway, token: &str) -> u16 {
    reqwest::Client::new()
        .get(gw.url("/channels/amazon/orders"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_rotate_and_survive_an_identity_provider_outage() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let key_a = jwk(&dev_key(), Algorithm::RS256, "key-a");
    let key_b = jwk(&rotated_key(), Algorithm::RS256, "key-b");
    let idp = JwksServer::start(json!({ "keys": [key_a] }).to_string()).await;
    let gw = Gateway::start(&remote_policy(sim.addr(), idp.addr)).unwrap();
    assert_eq!(
        idp.hits(),
        1,
        "the set is fetched before the gateway is ready"
    );

    let token_a = sign(&dev_key(), Algorithm::RS256, "key-a", &claims("amazon"));
    assert_eq!(status_with(&gw, &token_a).await, 200);

    // the provider rotates: key-b replaces key-a
    idp.serve(json!({ "keys": [key_b] }).to_string());
    let token_b = sign(&rotated_key(), Algorithm::RS256, "key-b", &claims("amazon"));
    assert_eq!(
        status_with(&gw, &token_b).await,
        200,
        "key-b is fetched on first use"
    );
    assert_eq!(idp.hits(), 2);
    assert_eq!(
        status_with(&gw, &token_a).await,
        401,
        "key-a is gone, even for a token seen before"
    );
    assert_eq!(
        idp.hits(),
        3,
        "an unknown kid is looked up once more before it is refused"
    );

    // the provider goes down: known keys keep working, new ones cannot be learned
    idp.stop();
    let token_b2 = sign(
        &rotated_key(),
        Algorithm::RS256,
        "key-b",
        &with(claims("amazon"), "jti", json!("2")),
    );
    assert_eq!(status_with(&gw, &token_b2).await, 200);
    let token_c = sign(&dev_key(), Algorithm::RS256, "key-c", &claims("amazon"));
    assert_eq!(status_with(&gw, &token_c).await, 401);
    assert_eq!(
        status_with(&gw, &token_b).await,
        200,
        "the last good set keeps serving"
    );
    assert_eq!(sim.requests_started(), 4);

    let metrics = gw.metrics().unwrap();
    assert_eq!(
        series(
            &metrics,
            "gateway_jwks_refreshes_total",
            &[("policy", "auth"), ("outcome", "success")]
        ),
        3.0
    );
    assert!(
        series(
            &metrics,
            "gateway_jwks_refreshes_total",
            &[("policy", "auth"), ("outcome", "failure")]
        ) >= 1.0
    );
    assert!(
        series(
            &metrics,
            "gateway_auth_failures_total",
            &[("policy", "auth"), ("reason", "unknown_kid")]
        ) >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jwks_url_keeps_the_gateway_from_starting() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // a port nothing listens on
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = match Gateway::start(&remote_policy(sim.addr(), closed)) {
        Ok(_) => panic!("the gateway started without its keys"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("cannot fetch the JWKS"), "{err}");
    assert_eq!(sim.requests_started(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_fetched_keys_and_a_reload_whose_keys_cannot_be_fetched_is_refused() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let key_a = jwk(&dev_key(), Algorithm::RS256, "key-a");
    let idp = JwksServer::start(json!({ "keys": [key_a] }).to_string()).await;
    let gw = Gateway::start(&remote_policy(sim.addr(), idp.addr)).unwrap();
    let token_a = sign(&dev_key(), Algorithm::RS256, "key-a", &claims("amazon"));
    assert_eq!(status_with(&gw, &token_a).await, 200);

    // another setting changes, the key source does not: the fetched set is kept
    let same_keys = remote_policy(sim.addr(), idp.addr)
        .replace("audience: gateway", "audience: [gateway, billing]");
    gw.write_config(&same_keys).unwrap();
    gw.sighup().unwrap();
    tests::eventually("the reload", Duration::from_secs(10), || {
        gw.metric("gateway_config_reloads_total{result=\"success\"}")
            .unwrap()
            == 1.0
    })
    .await
    .unwrap();
    assert_eq!(
        idp.hits(),
        1,
        "an unchanged key source is not fetched again"
    );
    assert_eq!(status_with(&gw, &token_a).await, 200);

    // a new JWKS URL that does not answer: the reload is refused and the serving set stays
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    gw.write_config(&remote_policy(sim.addr(), closed)).unwrap();
    gw.sighup().unwrap();
    tests::eventually("the refused reload", Duration::from_secs(10), || {
        gw.metric("gateway_config_reloads_total{result=\"failure\"}")
            .unwrap()
            == 1.0
    })
    .await
    .unwrap();
    assert_eq!(status_with(&gw, &token_a).await, 200);
    let doc = gw.config_doc().unwrap();
    assert_eq!(doc["last_reload"]["ok"], false);
    assert!(
        doc["last_reload"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("cannot fetch the JWKS"),
        "{doc}"
    );
    assert_eq!(sim.requests_started(), 3);
}

fn shopify_hmac(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_webhooks_are_verified_with_either_of_two_secrets() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = policy_file(
        sim.addr(),
        "",
        "\
policies:
  shopify-webhooks:
    kind: webhook_signature
    preset: shopify
    secrets:
      - {secret: \"${SHOPIFY_SECRET}\", channel: shopify}
      - {secret: \"${SHOPIFY_SECRET_NEXT}\", channel: shopify}
routes:
  - name: shopify-orders-create
    methods: [POST]
    path: /webhooks/shopify/orders-create
    upstream: erp
    upstream_path: /echo/webhooks/orders-create
    policies: [shopify-webhooks]
",
    );
    let gw = Gateway::start_with(
        &yaml,
        Start {
            env: vec![
                ("SHOPIFY_SECRET".into(), "shpss_current_secret".into()),
                ("SHOPIFY_SECRET_NEXT".into(), "shpss_next_secret".into()),
            ],
            ..Start::default()
        },
    )
    .unwrap();
    let client = reqwest::Client::new();
    let body =
        br#"{"id":820982911946154508,"email":"jon@example.com","total_price":"199.00"}"#.to_vec();
    let post = |sig: Option<String>, body: Vec<u8>, id: &str| {
        let mut req = client
            .post(gw.url("/webhooks/shopify/orders-create"))
            .header("content-type", "application/json")
            .header("x-shopify-topic", "orders/create")
            .header("x-request-id", id)
            .body(body);
        if let Some(s) = sig {
            req = req.header("X-Shopify-Hmac-Sha256", s);
        }
        req.send()
    };

    let signed = shopify_hmac("shpss_current_secret", &body);
    let resp = post(Some(signed.clone()), body.clone(), "hook-1")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sim.requests_started(), 1);
    let line = gw
        .wait_log("request", "request_id", "hook-1", Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        line["channel"], "shopify",
        "the matching secret names the channel"
    );
    let received = &sim.requests()[0];
    assert_eq!(
        received.body.as_ref(),
        body.as_slice(),
        "the raw body arrives untouched"
    );

    let mut changed = body.clone();
    changed[40] ^= 0x01;
    let resp = post(Some(signed.clone()), changed, "hook-2").await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(
        sim.requests_started(),
        1,
        "the tampered push reached the ERP"
    );

    let rotated = shopify_hmac("shpss_next_secret", &body);
    let resp = post(Some(rotated), body.clone(), "hook-3").await.unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the second secret verifies during a rotation"
    );
    assert_eq!(sim.requests_started(), 2);

    let resp = post(None, body.clone(), "hook-4").await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = post(
        Some(shopify_hmac("someone-else", &body)),
        body.clone(),
        "hook-5",
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(sim.requests_started(), 2);

    let metrics = gw.metrics().unwrap();
    assert_eq!(
        series(
            &metrics,
            "gateway_auth_failures_total",
            &[("policy", "shopify-webhooks"), ("reason", "bad_signature")]
        ),
        2.0
    );
    assert_eq!(
        series(
            &metrics,
            "gateway_auth_failures_total",
            &[
                ("policy", "shopify-webhooks"),
                ("reason", "missing_signature")
            ]
        ),
        1.0
    );
}

fn gateway_token(args: &[&str]) -> std::process::Output {
    Command::new(gateway_binary().unwrap())
        .current_dir(workspace_root())
        .arg("token")
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_token_mints_development_tokens_the_dev_jwks_accepts_and_nothing_else() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let jwks_file: PathBuf = workspace_root().join("certs/dev-jwks.json");
    let yaml = policy_file(
        sim.addr(),
        "",
        &format!(
            "\
policies:
  auth:
    kind: jwt
    issuer: https://dev-idp.retail-gateway.invalid
    audience: retail-gateway
    require_at_jwt: true
    keys: {{jwks_file: {}}}
    scopes: [orders:write]
    channel: {{claim: channel}}
routes:
  - name: orders
    methods: [GET]
    path: /channels/{{channel}}/orders
    upstream: erp
    upstream_path: /echo/{{channel}}/orders
    policies: [auth]
",
            jwks_file.display()
        ),
    );
    let gw = Gateway::start(&yaml).unwrap();

    let out = gateway_token(&[
        "--channel",
        "walmart",
        "--scope",
        "orders:write",
        "--ttl",
        "5m",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.trim_end();
    assert_eq!(stdout.lines().count(), 1, "only the token is printed");
    assert_eq!(token.split('.').count(), 3);
    let client = reqwest::Client::new();
    let resp = client
        .get(gw.url("/channels/walmart/orders"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .get(gw.url("/channels/amazon/orders"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    let out = gateway_token(&[
        "--channel",
        "walmart",
        "--scope",
        "orders:write",
        "--key",
        "tests/fixtures/keys/rsa-rotated.key",
    ]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not the development key"), "{err}");
}
