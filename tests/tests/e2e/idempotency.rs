//! Idempotency end to end: the real gateway binary, the ERP simulator and a real redis-server.
//! Fifty concurrent requests with one key reach the ERP once (in one process, and across two
//! instances sharing Redis); retries get the stored answer byte for byte; a changed body gets
//! 422; after the TTL (moved with the gateway's test clock, never waited for) the key is new
//! again; Shopify webhooks delivered three times create one order; a dead Redis is met with
//! the configured `deny` or `pass`. The Redis scripts are also checked against the in-process
//! store, call by call, at injected times.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use erp_sim::{Behaviour, DocumentKind, ErpSim};
use policies::clock::TEST_CLOCK_OFFSET_ENV;
use policies::state::idempotency::{Claim, LocalRecords, Record, RedisRecords};
use policies::state::redis::{RedisSpec, RedisStore};
use policies::units::DurationSpec;
use tests::{Gateway, RedisServer, Start, TempDir, policy_file};

const KEY: &str = "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"";
const ORDER: &str = r#"{"order_id": "A-1", "lines": [{"sku": "S-1", "qty": 2}], "total": "19.98"}"#;

/// A file whose `orders` route creates ERP orders behind the `idem` policy, and whose
/// `shopify-orders-create` webhook route does so behind `hook` (keyed by the webhook id).
fn file(sim: &ErpSim, redis: Option<&RedisServer>, store: &str) -> String {
    let redis_section = redis.map_or(String::new(), |r| {
        format!("redis:\n  url: \"{}\"\n  timeout: 500ms\n", r.url())
    });
    let body = format!(
        "{redis_section}policies:\n\
         \x20 idem:\n    kind: idempotency\n    ttl: 1h\n    lease: 60s\n{store}\
         \x20 hook:\n    kind: idempotency\n    key: {{header: X-Shopify-Webhook-Id}}\n\
         routes:\n\
         \x20 - name: orders\n    methods: [POST]\n    path: /channels/{{channel}}/orders\n    upstream: erp\n    upstream_path: /erp/v1/orders\n    policies: [idem]\n\
         \x20 - name: shopify-orders-create\n    methods: [POST]\n    path: /webhooks/shopify/orders-create\n    upstream: erp\n    upstream_path: /erp/v1/orders\n    policies: [hook]\n"
    );
    policy_file(sim.addr(), "", &body)
}

/// A gateway on `yaml` whose clock is shifted by the seconds written in `clock`.
fn start(yaml: &str, clock: &Path) -> Gateway {
    Gateway::start_with(
        yaml,
        Start {
            env: vec![(
                TEST_CLOCK_OFFSET_ENV.into(),
                clock.to_string_lossy().into_owned(),
            )],
            ..Start::default()
        },
    )
    .unwrap()
}

/// The sum of a metric's series that carry all these labels.
fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = gw.metrics().unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    replayed: bool,
    content_type: Option<String>,
    policy: Option<String>,
    body: Vec<u8>,
}

async fn post(client: &reqwest::Client, url: String, key: Option<&str>, body: &str) -> Answer {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.unwrap();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Answer {
        status: resp.status().as_u16(),
        replayed: header("idempotent-replayed").as_deref() == Some("true"),
        content_type: header("content-type"),
        policy: header("idempotency-policy"),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

/// Sends 50 requests with one key at once, spread over the gateways; returns the answers.
async fn fifty_at_once(gateways: &[&Gateway]) -> Vec<Answer> {
    let client = reqwest::Client::new();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let url = gateways[i % gateways.len()].url("/channels/amazon/orders");
        let client = client.clone();
        set.spawn(async move { post(&client, url, Some(KEY), ORDER).await });
    }
    let mut answers = Vec::new();
    while let Some(a) = set.join_next().await {
        answers.push(a.unwrap());
    }
    answers
}

/// The whole story on one or two gateways (which share their records).
async fn one_key_reaches_the_erp_once(sim: &ErpSim, gateways: &[&Gateway], clock: &Path) {
    // slow enough that the 50 requests overlap the first one's exchange
    sim.set_behaviour(Behaviour::delay_ms(1500));
    let answers = fifty_at_once(gateways).await;
    sim.set_behaviour(Behaviour::default());
    assert_eq!(
        sim.requests().len(),
        1,
        "exactly one request reached the ERP"
    );
    assert_eq!(sim.documents(DocumentKind::Order).len(), 1);
    let first: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == 201 && !a.replayed)
        .collect();
    assert_eq!(first.len(), 1, "{answers:?}");
    let first = first[0].clone();
    assert_eq!(first.policy.as_deref(), Some("ttl=3600, lease=60"));
    for a in &answers {
        match a.status {
            201 => assert_eq!(a.body, first.body, "a replay is the stored answer"),
            409 => {
                assert_eq!(a.content_type.as_deref(), Some("application/problem+json"));
                let doc: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
                assert_eq!(doc["type"], "urn:gateway:problem:idempotency-key-in-use");
            }
            other => panic!("unexpected {other}: {a:?}"),
        }
    }
    let conflicts = answers.iter().filter(|a| a.status == 409).count() as f64;
    let early_replays = answers.iter().filter(|a| a.replayed).count() as f64;

    // later retries, on every instance, get the stored answer byte for byte, with the marker
    let client = reqwest::Client::new();
    for gw in gateways {
        // the record is stored once the first exchange has completed (after its answer)
        let url = gw.url("/channels/amazon/orders");
        let mut retry = post(&client, url.clone(), Some(KEY), ORDER).await;
        for _ in 0..100 {
            if retry.status != 409 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            retry = post(&client, url.clone(), Some(KEY), ORDER).await;
        }
        assert_eq!(retry.status, 201);
        assert!(retry.replayed);
        assert_eq!(retry.body, first.body);
        assert_eq!(retry.content_type, first.content_type);
        // the same order written differently is the same payload
        let reordered = r#"{"total":"19.98","lines":[{"qty":2,"sku":"S-1"}],"order_id":"A-1"}"#;
        let same = post(
            &client,
            gw.url("/channels/amazon/orders"),
            Some(KEY),
            reordered,
        )
        .await;
        assert!(same.replayed && same.body == first.body);
        // a changed body is 422
        let changed = ORDER.replace("19.98", "29.98");
        let a = post(
            &client,
            gw.url("/channels/amazon/orders"),
            Some(KEY),
            &changed,
        )
        .await;
        assert_eq!(a.status, 422);
        let doc: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(doc["type"], "urn:gateway:problem:idempotency-key-reused");
        // no key: 400
        let a = post(&client, gw.url("/channels/amazon/orders"), None, ORDER).await;
        assert_eq!(a.status, 400);
    }
    assert_eq!(sim.requests().len(), 1, "no retry reached the ERP");

    let count = |outcome: &str| -> f64 {
        gateways
            .iter()
            .map(|gw| {
                metric(
                    gw,
                    "gateway_idempotency_total",
                    &[("policy", "idem"), ("outcome", outcome)],
                )
            })
            .sum()
    };
    let n = gateways.len() as f64;
    assert_eq!(count("stored"), 1.0);
    assert!(count("conflict") >= conflicts);
    assert_eq!(count("replayed"), early_replays + 2.0 * n);
    assert_eq!(count("mismatch"), n);
    assert_eq!(count("missing"), n);
    // a replay is an answer, not a rejection, and is logged like any request
    for gw in gateways {
        assert_eq!(
            metric(
                gw,
                "gateway_policy_rejections_total",
                &[("reason", "replayed")]
            ),
            0.0
        );
        let line = gw
            .wait_log("request", "reason", "replayed", Duration::from_secs(5))
            .unwrap();
        assert_eq!(line["status"], 201);
        assert_eq!(line["upstream_status"], 0);
    }

    // after the TTL (an hour on the gateways' clock) the key is new again
    std::fs::write(clock, "3601").unwrap();
    let again = post(
        &client,
        gateways[0].url("/channels/amazon/orders"),
        Some(KEY),
        ORDER,
    )
    .await;
    assert_eq!(again.status, 201);
    assert!(!again.replayed);
    assert_ne!(again.body, first.body, "a new order");
    assert_eq!(sim.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_with_one_key_reach_the_erp_once_in_process() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = TempDir::new("idem-clock").unwrap();
    let clock = dir.path().join("offset");
    let gw = start(&file(&sim, None, ""), &clock);
    one_key_reaches_the_erp_once(&sim, &[&gw], &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_over_two_instances_sharing_redis_reach_the_erp_once() {
    let redis = RedisServer::start().unwrap();
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = TempDir::new("idem-clock").unwrap();
    let clock = dir.path().join("offset");
    let yaml = file(&sim, Some(&redis), "    store: redis\n");
    let a = start(&yaml, &clock);
    let b = start(&yaml, &clock);
    one_key_reaches_the_erp_once(&sim, &[&a, &b], &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopify_webhook_delivered_three_times_creates_one_order() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = TempDir::new("idem-clock").unwrap();
    let gw = start(&file(&sim, None, ""), &dir.path().join("offset"));
    let client = reqwest::Client::new();
    let body = r#"{"id":820982911946154508,"email":"jon@example.com","total_price":"199.00"}"#;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let resp = client
            .post(gw.url("/webhooks/shopify/orders-create"))
            .header("content-type", "application/json")
            .header("x-shopify-topic", "orders/create")
            .header(
                "x-shopify-webhook-id",
                "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            )
            .body(body)
            .send()
            .await
            .unwrap();
        let replayed = resp.headers().contains_key("idempotent-replayed");
        answers.push((
            resp.status().as_u16(),
            replayed,
            resp.bytes().await.unwrap(),
        ));
    }
    assert_eq!(sim.documents(DocumentKind::Order).len(), 1, "one order");
    assert_eq!(sim.requests().len(), 1);
    assert_eq!(answers[0].0, 201);
    assert!(!answers[0].1);
    for later in &answers[1..] {
        assert_eq!(later, &(201, true, answers[0].2.clone()));
    }
    // another delivery id is another webhook
    let resp = client
        .post(gw.url("/webhooks/shopify/orders-create"))
        .header("content-type", "application/json")
        .header("x-shopify-webhook-id", "another-delivery")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(sim.documents(DocumentKind::Order).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_error_releases_the_key_so_the_retry_goes_through() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = TempDir::new("idem-clock").unwrap();
    let gw = start(&file(&sim, None, ""), &dir.path().join("offset"));
    let client = reqwest::Client::new();
    sim.set_behaviour(Behaviour::fail(503, Some(1)));
    let url = gw.url("/channels/amazon/orders");
    let failed = post(&client, url.clone(), Some(KEY), ORDER).await;
    assert_eq!(failed.status, 503);
    // released once the exchange is over (after the answer): the retry reaches the ERP
    let mut retry = post(&client, url.clone(), Some(KEY), ORDER).await;
    for _ in 0..100 {
        if retry.status != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        retry = post(&client, url.clone(), Some(KEY), ORDER).await;
    }
    assert_eq!((retry.status, retry.replayed), (201, false));
    assert_eq!(sim.documents(DocumentKind::Order).len(), 1);
    gw.wait_metric(
        "gateway_idempotency_total{outcome=\"released\",policy=\"idem\"}",
        1.0,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_is_refused_or_passed_unprotected_as_configured() {
    let mut redis = RedisServer::start().unwrap();
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = TempDir::new("idem-clock").unwrap();
    let clock = dir.path().join("offset");
    let deny = start(&file(&sim, Some(&redis), "    store: redis\n"), &clock);
    let pass = start(
        &file(
            &sim,
            Some(&redis),
            "    store: redis\n    on_store_error: pass\n",
        ),
        &clock,
    );
    redis.kill();
    let client = reqwest::Client::new();
    let refused = post(
        &client,
        deny.url("/channels/amazon/orders"),
        Some(KEY),
        ORDER,
    )
    .await;
    assert_eq!(refused.status, 503);
    let doc: serde_json::Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(
        doc["type"],
        "urn:gateway:problem:idempotency-store-unavailable"
    );
    assert_eq!(sim.requests().len(), 0);
    for _ in 0..2 {
        let passed = post(
            &client,
            pass.url("/channels/amazon/orders"),
            Some(KEY),
            ORDER,
        )
        .await;
        assert_eq!(passed.status, 201);
    }
    assert_eq!(sim.requests().len(), 2, "unprotected: both went through");
    assert_eq!(
        metric(
            &pass,
            "gateway_idempotency_total",
            &[("policy", "idem"), ("outcome", "unprotected")]
        ),
        2.0
    );
    assert!(
        metric(
            &deny,
            "gateway_idempotency_store_errors_total",
            &[("policy", "idem")]
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_scripts_decide_exactly_like_the_local_store() {
    let redis = RedisServer::start().unwrap();
    let spec = RedisSpec {
        url: redis.url(),
        cluster: false,
        timeout: DurationSpec::secs(2),
        connect_timeout: DurationSpec::secs(2),
        tls: None,
    };
    let store = Arc::new(RedisStore::new(&redis.url(), &spec).unwrap());
    let remote = RedisRecords::new(store, "eq");
    let local = LocalRecords::new(1000);
    let record = |i: u64| Record {
        status: 200 + (i % 3) as u16,
        headers: vec![(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        body: bytes::Bytes::from(format!("{{\"n\":{i}}}")),
    };

    // a deterministic walk of claims, completions and releases on four keys
    let mut now: u64 = 1_700_000_000_000;
    let mut seed: u64 = 7;
    let mut tokens = [0u64; 4];
    let mut seen = [0usize; 3];
    for i in 0..800u64 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let r = seed >> 33;
        now += [0, 1, 500, 2_000, 40_000][(r % 5) as usize];
        let k = ((r >> 3) % 4) as usize;
        let key = format!("amazon|orders|k{k}");
        let fp = [((r >> 5) % 2) as u8; 32];
        match (r >> 7) % 8 {
            0..=3 => {
                let token = i + 1;
                let (a, b) = (
                    local.claim(&key, &fp, token, now, 10_000).unwrap(),
                    remote.claim(&key, &fp, token, now, 10_000).await.unwrap(),
                );
                assert_eq!(a, b, "claim {i} of {key} at {now}");
                match a {
                    Claim::Claimed => {
                        tokens[k] = token;
                        seen[0] += 1;
                    }
                    Claim::InFlight { .. } => seen[1] += 1,
                    Claim::Done { .. } => seen[2] += 1,
                }
            }
            4..=6 => {
                let rec = record(i);
                let a = local.complete(&key, tokens[k], Arc::new(rec.clone()), now, 30_000);
                let b = remote
                    .complete(&key, tokens[k], &rec, now, 30_000)
                    .await
                    .unwrap();
                assert_eq!(a, b, "complete {i} of {key} at {now}");
            }
            _ => {
                let a = local.release(&key, tokens[k], now);
                let b = remote.release(&key, tokens[k], now).await.unwrap();
                assert_eq!(a, b, "release {i} of {key} at {now}");
            }
        }
    }
    assert!(
        seen.iter().all(|&n| n > 20),
        "the walk covers every answer: {seen:?}"
    );
}
