//! The business KPIs end to end, with the real binary and the ERP simulator: orders accepted,
//! refused by authentication, a rate limit, the schema and the mapping, refused and failed by
//! the ERP, stored for delivery and replayed, and one that dies as a dead letter; the admin
//! `/metrics` must then show exactly that many documents per outcome, the accepted orders'
//! value in minor units, the ERP acknowledgement and per-channel latency counts, the
//! per-channel dead letters with their age, and the rate limits' headroom.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use erp_sim::{Behaviour, ErpSim};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tests::{Gateway, Start, TempDir, client, policy_file, workspace_root};

const SECRET: &str = "a-kpi-test-hs256-secret-of-32-bytes!";

fn file(sim: &ErpSim, dir: &Path) -> String {
    let root = workspace_root();
    let schemas = root.join("policies/files/schemas");
    let mappings = root.join("transforms/mappings");
    policy_file(
        sim.addr(),
        "    connect_timeout: 200ms\n    read_timeout: 3s\n    total_timeout: 4s\n",
        &format!(
            "\
queues:
  q:
    path: {dir}/deliveries.redb
    workers: 2
    lease: 10s
    poll_interval: 20ms
    retry: {{initial_backoff: 20ms, max_backoff: 200ms, max_attempts: 3, max_age: 1h}}
policies:
  auth:
    kind: jwt
    issuer: kpi-test
    audience: gateway
    keys:
      hs256: {{k1: \"${{KPI_HS_SECRET}}\"}}
  rl-all:
    kind: rate_limit
    key: [channel]
    limits: [{{name: daily, rate: 100, per: 1d}}]
  rl-ebay:
    kind: rate_limit
    channels: [ebay]
    key: [channel]
    limits: [{{name: hourly, rate: 1, per: 1h}}]
  order-schema:
    kind: schema
    channels:
      amazon: {s}/amazon/order.schema.json
      shopify: {s}/shopify/order.schema.json
      walmart: {s}/walmart/order.schema.json
      ebay: {s}/ebay/order.schema.json
  order-transform:
    kind: transform
    mappings: {m}
    document: order
    answer: erp/ack
    error: erp/error
  idem:
    kind: idempotency
    key: {{header: Idempotency-Key}}
    required: true
    ttl: 1h
    lease: 20s
routes:
  - name: orders
    methods: [POST]
    path: /channels/{{channel}}/orders
    upstream: erp
    upstream_path: /erp/v1/orders
    policies: [auth, rl-all, rl-ebay, order-schema, order-transform]
  - name: queued-orders
    methods: [POST]
    path: /queued/channels/{{channel}}/orders
    upstream: erp
    upstream_path: /erp/v1/orders
    policies: [idem, order-schema, order-transform]
    delivery: {{mode: queued, queue: q}}
",
            dir = dir.display(),
            s = schemas.display(),
            m = mappings.display(),
        ),
    )
}

fn golden_text(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join("transforms/mappings").join(path)).unwrap()
}

fn golden(path: &str) -> Value {
    serde_json::from_str(&golden_text(path)).unwrap()
}

/// The canonical total of a golden case, in minor units: the mappings write amounts at their
/// currency's minor unit already (`11.01` USD, `4480` JPY), so the digits are the minor units.
fn expected_total(case: &str) -> (String, u64) {
    let doc = golden(&format!("{case}.expected.json"));
    let total = &doc["totals"]["total"];
    let digits = total["amount"].as_str().unwrap().replace('.', "");
    (
        total["currency"].as_str().unwrap().to_owned(),
        digits.parse().unwrap(),
    )
}

fn token() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(
        &header,
        &json!({"iss": "kpi-test", "aud": "gateway", "sub": "connector", "iat": now, "exp": now + 600}),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn post(
    c: &reqwest::Client,
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, Value) {
    let mut req = c
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn documents(channel: &str, outcome: &str) -> String {
    format!(
        "gateway_documents_total{{channel=\"{channel}\",document=\"order\",outcome=\"{outcome}\"}}"
    )
}

/// The sum of every series of a family whose labels start with `labels_prefix`.
fn sum_of(text: &str, family_and_labels_prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(family_and_labels_prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_is_counted_by_outcome_with_order_value_dead_letters_and_headroom() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = TempDir::new("kpis").unwrap();
    let gw = Gateway::start_with(
        &file(&sim, dir.path()),
        Start {
            env: vec![("KPI_HS_SECRET".into(), SECRET.into())],
            ..Start::default()
        },
    )
    .unwrap();
    let c = client().unwrap();
    let bearer = format!("Bearer {}", token());
    let auth = [("authorization", bearer.as_str())];
    let amazon = "/channels/amazon/orders";

    // three accepted Amazon orders, two in USD and one in JPY
    let cases = [
        "amazon/cases/order/sandbox-test-case-200",
        "amazon/cases/order/afn-exact-sums-partially-shipped",
        "amazon/cases/order/jpy-zero-decimals",
    ];
    for case in cases {
        let (status, body) = post(
            &c,
            &gw,
            amazon,
            &auth,
            golden_text(&format!("{case}.input.json")),
        )
        .await;
        assert_eq!(status, 201, "{case}: {body}");
    }
    let sandbox = golden_text("amazon/cases/order/sandbox-test-case-200.input.json");

    // refused by authentication: no token
    let (status, _) = post(&c, &gw, amazon, &[], sandbox.clone()).await;
    assert_eq!(status, 401);
    // refused by the schema
    let mut invalid = golden("amazon/cases/order/sandbox-test-case-200.input.json");
    invalid.as_object_mut().unwrap().remove("AmazonOrderId");
    let (status, body) = post(&c, &gw, amazon, &auth, invalid.to_string()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["type"], "urn:gateway:problem:schema-violation");
    // refused by the mapping: valid, but an item in another currency
    let mut mixed = golden("amazon/cases/order/sandbox-test-case-200.input.json");
    mixed["OrderItems"][0]["ItemPrice"]["CurrencyCode"] = json!("EUR");
    let (status, body) = post(&c, &gw, amazon, &auth, mixed.to_string()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["type"], "urn:gateway:problem:unmappable-document");
    // the ERP refuses one (4xx), fails one (5xx), and is down for one (no answer)
    sim.set_behaviour(Behaviour::fail(409, Some(1)));
    let (status, body) = post(&c, &gw, amazon, &auth, sandbox.clone()).await;
    assert_eq!(status, 409, "{body}");
    sim.set_behaviour(Behaviour::fail(500, Some(1)));
    let (status, body) = post(&c, &gw, amazon, &auth, sandbox.clone()).await;
    assert!(status >= 500, "{status} {body}");
    sim.set_behaviour(Behaviour::default());
    sim.set_down(true).await.unwrap();
    let (status, body) = post(&c, &gw, amazon, &auth, sandbox.clone()).await;
    assert!(status >= 500, "{status} {body}");
    sim.set_down(false).await.unwrap();

    // eBay: the first document spends the channel's only unit (and fails the schema), the
    // second is refused by the rate limit
    let ebay = "/channels/ebay/orders";
    let (status, _) = post(&c, &gw, ebay, &auth, "{}".into()).await;
    assert_eq!(status, 422);
    let (status, _) = post(&c, &gw, ebay, &auth, "{}".into()).await;
    assert_eq!(status, 429);

    // Shopify, queued: accepted (202), repeated (a replay), then the ERP refuses it for good
    sim.set_behaviour(Behaviour::fail(422, Some(1)));
    let shopify_case = "shopify/cases/order/admin-rest-2026-07-example-1001";
    let shopify = golden_text(&format!("{shopify_case}.input.json"));
    let queued = "/queued/channels/shopify/orders";
    let key = [("idempotency-key", "kpi-1")];
    let (status, first) = post(&c, &gw, queued, &key, shopify.clone()).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = post(&c, &gw, queued, &key, shopify.clone()).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["delivery_id"], first["delivery_id"], "a replay");
    gw.wait_metric(
        "gateway_delivery_channel_dead_letters{channel=\"shopify\",queue=\"q\"}",
        1.0,
    )
    .unwrap();

    // documents by outcome, exactly
    for (channel, outcome, n) in [
        ("amazon", "accepted", 3.0),
        ("amazon", "rejected_auth", 1.0),
        ("amazon", "rejected_schema", 1.0),
        ("amazon", "rejected_mapping", 1.0),
        ("amazon", "rejected_upstream", 1.0),
        ("amazon", "failed_upstream", 2.0),
        ("ebay", "rejected_schema", 1.0),
        ("ebay", "rejected_limit", 1.0),
        ("shopify", "accepted", 1.0),
        ("shopify", "replayed", 1.0),
    ] {
        gw.wait_metric(&documents(channel, outcome), n).unwrap();
    }
    let text = gw.metrics().unwrap();
    let every = |channel: &str| {
        sum_of(
            &text,
            &format!("gateway_documents_total{{channel=\"{channel}\""),
        )
    };
    assert_eq!(every("amazon"), 9.0, "no other amazon outcome:\n{text}");
    assert_eq!(every("ebay"), 2.0, "{text}");
    assert_eq!(every("shopify"), 2.0, "{text}");

    // the accepted orders' value: each counted once (not the refused ones, not the replay)
    let mut expected = std::collections::BTreeMap::<(String, String), u64>::new();
    for case in cases {
        let (currency, minor) = expected_total(case);
        *expected.entry(("amazon".into(), currency)).or_default() += minor;
    }
    let (currency, minor) = expected_total(shopify_case);
    *expected.entry(("shopify".into(), currency)).or_default() += minor;
    assert_eq!(
        expected[&("amazon".to_owned(), "USD".to_owned())],
        1101 + 5870,
        "the golden totals moved"
    );
    for ((channel, currency), minor) in &expected {
        let series = format!(
            "gateway_order_value_minor_units_total{{channel=\"{channel}\",currency=\"{currency}\"}}"
        );
        assert_eq!(
            gw.metric(&series).unwrap(),
            *minor as f64,
            "{series}\n{text}"
        );
    }
    assert_eq!(
        sum_of(&text, "gateway_order_value_minor_units_total{"),
        expected.values().sum::<u64>() as f64,
        "no other value series:\n{text}"
    );

    // the ERP's synchronous acknowledgements, and per-channel latency of every request
    assert_eq!(
        gw.metric("gateway_delivery_ack_seconds_count{channel=\"amazon\"}")
            .unwrap(),
        3.0,
        "{text}"
    );
    assert_eq!(
        gw.metric("gateway_channel_request_duration_seconds_count{channel=\"amazon\"}")
            .unwrap(),
        9.0,
        "{text}"
    );
    assert_eq!(
        gw.metric("gateway_channel_request_duration_seconds_count{channel=\"ebay\"}")
            .unwrap(),
        2.0,
        "{text}"
    );

    // the dead letter, per channel, with its age; other channels are at 0
    assert!(
        text.lines().any(|l| l.starts_with(
            "gateway_delivery_oldest_dead_letter_age_seconds{channel=\"shopify\",queue=\"q\"} "
        )),
        "{text}"
    );
    assert_eq!(
        gw.metric("gateway_delivery_channel_dead_letters{channel=\"amazon\",queue=\"q\"}")
            .unwrap(),
        0.0
    );
    assert!(
        text.contains(
            "gateway_delivery_oldest_dead_letter_age_seconds{channel=\"amazon\",queue=\"q\"} 0"
        ),
        "{text}"
    );

    // headroom: eBay's only unit is spent; Amazon spent 8 of its 100 (the refused token
    // never reached the limit)
    assert_eq!(
        gw.metric("gateway_ratelimit_headroom_ratio{channel=\"ebay\",policy=\"rl-ebay\"}")
            .unwrap(),
        0.0,
        "{text}"
    );
    assert!(
        text.contains("gateway_ratelimit_headroom_ratio{channel=\"ebay\",policy=\"rl-ebay\"} 0"),
        "the series exists:\n{text}"
    );
    let amazon_headroom = gw
        .metric("gateway_ratelimit_headroom_ratio{channel=\"amazon\",policy=\"rl-all\"}")
        .unwrap();
    assert_eq!(amazon_headroom, 0.92, "{text}");
    assert!(
        !text.contains("gateway_ratelimit_headroom_ratio{channel=\"amazon\",policy=\"rl-ebay\"}"),
        "rl-ebay never decided for amazon:\n{text}"
    );
}
