//! eBay notification signatures end to end: the real gateway binary verifies
//! `X-EBAY-SIGNATURE` (ECDSA P-256 over SHA-1 of the raw body) with the public key it fetches
//! by `kid` from the marketplace simulator's `getPublicKey` (with an application token), in
//! front of the ERP simulator. Signed notifications reach the ERP untouched; tampered, unsigned,
//! garbled and unknown-key ones get 401 and never reach it; a key is fetched once for many
//! notifications and a rotated key (new `kid`) is fetched when it first signs; the key API
//! down with no cached key is 503 (a cached key keeps verifying, across a reload too); eBay's
//! endpoint-validation challenge is answered with the hash computed here independently; and
//! the example set's eBay route works.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use erp_sim::ErpSim;
use marketplace_sim::{Channel, MarketOptions, MarketplaceSim};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tests::{Gateway, Start, policy_file, workspace_root};

const VERIFICATION_TOKEN: &str = "gw-verification-token_0123456789-abcdefghij";
const ENDPOINT: &str = "https://gateway.example.com/webhooks/ebay";

/// A notification as eBay sends one (compact JSON).
fn notification(id: &str) -> Vec<u8> {
    format!(
        r#"{{"metadata":{{"topic":"MARKETPLACE_ACCOUNT_DELETION","schemaVersion":"1.0","deprecated":false}},"notification":{{"notificationId":"{id}","eventDate":"2026-12-03T10:00:00.000Z","publishDate":"2026-12-03T10:00:00.100Z","publishAttemptCount":1,"data":{{"username":"test_user","userId":"ma8vp1jySJC","eiasToken":"nY+sHZ2PrBmdj6wVnY+sEZ2PrA2dj6wJnY+gAZGEpwmdj6x9nY+seQ=="}}}}}}"#
    )
    .into_bytes()
}

async fn start(cooldown: &str) -> (ErpSim, MarketplaceSim, Gateway) {
    let erp = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let market = MarketplaceSim::start("127.0.0.1:0".parse().unwrap(), MarketOptions::default())
        .await
        .unwrap();
    let base = market.base_url();
    let yaml = policy_file(
        erp.addr(),
        "",
        &format!(
            "\
policies:
  ebay-notifications:
    kind: ebay_signature
    channel: ebay
    keys:
      url: \"{base}/commerce/notification/v1/public_key/{{public_key_id}}\"
      credentials:
        preset: ebay_application
        token_url: {base}/identity/v1/oauth2/token
        client_id: ebay-client-id
        client_secret: \"${{EBAY_CLIENT_SECRET}}\"
      refresh_cooldown: {cooldown}
    challenge:
      verification_token: \"${{EBAY_VERIFICATION_TOKEN}}\"
      endpoint: {ENDPOINT}
routes:
  - name: ebay-notifications
    methods: [GET, POST]
    path: /webhooks/ebay
    upstream: erp
    upstream_path: /echo/notifications/ebay
    policies: [ebay-notifications]
"
        ),
    );
    let gw = Gateway::start_with(
        &yaml,
        Start {
            env: vec![
                ("EBAY_CLIENT_SECRET".into(), "ebay-client-secret".into()),
                ("EBAY_VERIFICATION_TOKEN".into(), VERIFICATION_TOKEN.into()),
            ],
            ..Start::default()
        },
    )
    .unwrap();
    (erp, market, gw)
}

async fn post(gw: &Gateway, path: &str, signature: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(gw.url(path))
        .header("content-type", "application/json");
    if let Some(s) = signature {
        req = req.header("X-EBAY-SIGNATURE", s);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let problem = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/problem+json");
    let doc = resp.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert!(problem, "{status} is not problem+json: {doc}");
    }
    (status, doc)
}

fn failures(gw: &Gateway, reason: &str) -> f64 {
    gw.metric(&format!(
        "gateway_auth_failures_total{{policy=\"ebay-notifications\",reason=\"{reason}\"}}"
    ))
    .unwrap()
}

/// The same header with another `kid` (its signature unchanged).
fn with_kid(header: &str, kid: &str) -> String {
    let mut doc: Value = serde_json::from_slice(&STANDARD.decode(header).unwrap()).unwrap();
    doc["kid"] = Value::String(kid.into());
    STANDARD.encode(doc.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_notifications_pass_and_forged_ones_never_reach_the_erp() {
    let (erp, market, gw) = start("30s").await;

    // five signed notifications: forwarded untouched, the key fetched once
    for i in 0..5 {
        let body = notification(&format!("n-{i}"));
        let sig = market.ebay_sign(&body);
        let (status, _) = post(&gw, "/webhooks/ebay", Some(&sig), body.clone()).await;
        assert_eq!(status, 200, "notification {i}");
        let received = erp.requests();
        assert_eq!(received.len(), i + 1);
        assert_eq!(
            received[i].body.as_ref(),
            body.as_slice(),
            "the raw body arrives untouched"
        );
    }
    assert_eq!(
        market.ebay_key_fetches(),
        1,
        "one key fetch for five notifications"
    );
    assert_eq!(
        gw.metric(
            "gateway_ebay_key_fetches_total{policy=\"ebay-notifications\",result=\"success\"}"
        )
        .unwrap(),
        1.0
    );

    let body = notification("forged");
    let sig = market.ebay_sign(&body);
    // one changed byte of the body
    let mut tampered = body.clone();
    tampered[40] ^= 1;
    let (status, problem) = post(&gw, "/webhooks/ebay", Some(&sig), tampered).await;
    assert_eq!(status, 401);
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("invalid-signature"),
        "{problem}"
    );
    // another notification's signature
    let other = market.ebay_sign(&notification("other"));
    assert_eq!(
        post(&gw, "/webhooks/ebay", Some(&other), body.clone())
            .await
            .0,
        401
    );
    // no header, garbage, a header that decodes to nothing useful
    assert_eq!(post(&gw, "/webhooks/ebay", None, body.clone()).await.0, 401);
    assert_eq!(
        post(&gw, "/webhooks/ebay", Some("%%%not-base64"), body.clone())
            .await
            .0,
        401
    );
    let junk = STANDARD.encode(r#"{"alg":"ecdsa","kid":"k","signature":"AAAA"}"#);
    assert_eq!(
        post(&gw, "/webhooks/ebay", Some(&junk), body.clone())
            .await
            .0,
        401
    );
    // a kid eBay does not publish: asked for once, then refused
    let unknown = with_kid(&sig, "00000000-0000-0000-0000-000000000000");
    assert_eq!(
        post(&gw, "/webhooks/ebay", Some(&unknown), body.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        post(&gw, "/webhooks/ebay", Some(&unknown), body.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        market.ebay_key_fetches(),
        2,
        "an unknown kid is asked for once per cooldown"
    );
    assert_eq!(
        erp.requests().len(),
        5,
        "a refused notification reached the ERP"
    );

    assert_eq!(failures(&gw, "bad_signature"), 2.0);
    assert_eq!(failures(&gw, "missing_signature"), 1.0);
    assert_eq!(failures(&gw, "malformed_signature"), 2.0);
    assert_eq!(failures(&gw, "unknown_kid"), 2.0);

    // eBay rotates its key: the new kid is fetched when it first signs, the old one still works
    let old_sig = market.ebay_sign(&body);
    let new_kid = market.ebay_rotate_key();
    let new_sig = market.ebay_sign(&body);
    assert!(new_sig != old_sig);
    assert_eq!(
        post(&gw, "/webhooks/ebay", Some(&new_sig), body.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        market.ebay_key_fetches(),
        3,
        "the rotated key {new_kid} was fetched"
    );
    assert_eq!(
        post(&gw, "/webhooks/ebay", Some(&new_sig), body.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        post(&gw, "/webhooks/ebay", Some(&old_sig), body.clone())
            .await
            .0,
        200
    );
    assert_eq!(market.ebay_key_fetches(), 3);
    assert_eq!(erp.requests().len(), 8);

    // the access log names the channel the policy gives verified notifications
    let resp = reqwest::Client::new()
        .post(gw.url("/webhooks/ebay"))
        .header("X-EBAY-SIGNATURE", &new_sig)
        .header("x-request-id", "ebay-logged")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let line = gw
        .wait_log(
            "request",
            "request_id",
            "ebay-logged",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(line["channel"], "ebay", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_api_down_without_a_cached_key_is_503_and_nothing_is_forwarded() {
    let (erp, market, gw) = start("0s").await;
    market.down(Channel::Ebay);
    let body = notification("while-down");
    let sig = market.ebay_sign(&body);
    let resp = reqwest::Client::new()
        .post(gw.url("/webhooks/ebay"))
        .header("X-EBAY-SIGNATURE", &sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(erp.requests().len(), 0);
    assert_eq!(failures(&gw, "key_unavailable"), 1.0);

    // back up: the next delivery (eBay retries) verifies
    market.up(Channel::Ebay);
    assert_eq!(post(&gw, "/webhooks/ebay", Some(&sig), body).await.0, 200);
    assert_eq!(erp.requests().len(), 1);

    // with the key cached, the key API going down again changes nothing
    market.down(Channel::Ebay);
    let body = notification("cached");
    let sig = market.ebay_sign(&body);
    assert_eq!(
        post(&gw, "/webhooks/ebay", Some(&sig), body.clone())
            .await
            .0,
        200
    );
    assert_eq!(erp.requests().len(), 2);

    // a reload that leaves the policy unchanged keeps the fetched key: still down, still 200
    gw.sighup().unwrap();
    gw.wait_metric("gateway_config_reloads_total{result=\"success\"}", 1.0)
        .unwrap();
    assert_eq!(post(&gw, "/webhooks/ebay", Some(&sig), body).await.0, 200);
    assert_eq!(erp.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_challenge_is_answered_with_the_hash_of_code_token_and_endpoint() {
    let (erp, _market, gw) = start("30s").await;
    let code = "a8628072-3d33-45ee-9004-bee86830a22d+/=";
    let encoded: String = url_encode(code);
    let resp = reqwest::Client::new()
        .get(gw.url(&format!("/webhooks/ebay?challenge_code={encoded}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.unwrap();
    // computed here, from eBay's definition: hex(SHA-256(challengeCode + token + endpoint))
    let mut h = Sha256::new();
    h.update(code.as_bytes());
    h.update(VERIFICATION_TOKEN.as_bytes());
    h.update(ENDPOINT.as_bytes());
    let expected = hex::encode(h.finalize());
    assert_eq!(doc, serde_json::json!({"challengeResponse": expected}));
    assert_eq!(
        gw.metric("gateway_ebay_challenges_total{policy=\"ebay-notifications\"}")
            .unwrap(),
        1.0
    );

    // a GET without a code is refused; neither reaches the ERP
    let resp = reqwest::Client::new()
        .get(gw.url("/webhooks/ebay"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(erp.requests().len(), 0);
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_sets_ebay_route_verifies_with_the_simulators_key() {
    let erp = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let market = MarketplaceSim::start("127.0.0.1:0".parse().unwrap(), MarketOptions::default())
        .await
        .unwrap();
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join("policies/files/gateway.yaml")).unwrap();
    let files = root.join("policies/files");
    let yaml = text
        .replace("\"127.0.0.1:9400\"", &format!("\"{}\"", erp.addr()))
        .replace("127.0.0.1:9500", &market.addr().to_string())
        .replace("../../", &format!("{}/", root.display()))
        .replace(" schemas/", &format!(" {}/schemas/", files.display()))
        .replace(" skus.yaml", &format!(" {}/skus.yaml", files.display()));
    let gw = Gateway::start_with(&yaml, Start::default()).unwrap();
    let body = notification("example-set");
    let sig = market.ebay_sign(&body);
    let (status, _) = post(&gw, "/webhooks/ebay", Some(&sig), body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(erp.requests().len(), 1);
    assert_eq!(erp.requests()[0].body.as_ref(), body.as_slice());
    let (status, _) = post(&gw, "/webhooks/ebay", None, body).await;
    assert_eq!(status, 401);
    assert_eq!(erp.requests().len(), 1);

    // the challenge, with the development verification token
    let token =
        std::fs::read_to_string(root.join("certs/dev-marketplaces/ebay-verification-token"))
            .unwrap();
    let resp = reqwest::Client::new()
        .get(gw.url("/webhooks/ebay?challenge_code=abc123"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    let expected = hex::encode(Sha256::digest(
        format!("abc123{}{ENDPOINT}", token.trim_end()).as_bytes(),
    ));
    assert_eq!(doc["challengeResponse"], expected);
}
