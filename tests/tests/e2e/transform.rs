//! Validation and transformation end to end: channel payloads checked against their schema
//! (invalid ones never reach the ERP), mapped to the canonical model exactly (money, 64-bit
//! ids, times), the ERP's answers mapped back; and the offline tools (`gateway transform`,
//! `gateway check` running golden cases).

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::process::Command;

use erp_sim::{Behaviour, ErpSim};
use serde_json::{Value, json};
use tests::{Gateway, TempDir, gateway_binary, policy_file, workspace_root};

fn routes() -> String {
    let root = workspace_root();
    let schemas = root.join("policies/files/schemas");
    let mappings = root.join("transforms/mappings");
    format!(
        "policies:
  order-schema:
    kind: schema
    max_errors: 5
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
routes:
  - name: orders
    methods: [POST]
    path: /channels/{{channel}}/orders
    upstream: erp
    upstream_path: /erp/v1/orders
    policies: [order-schema, order-transform]
    max_body_bytes: 8MiB
",
        s = schemas.display(),
        m = mappings.display()
    )
}

async fn setup() -> (ErpSim, Gateway) {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&policy_file(sim.addr(), "", &routes())).unwrap();
    (sim, gw)
}

fn golden(path: &str) -> Value {
    let text =
        std::fs::read_to_string(workspace_root().join("transforms/mappings").join(path)).unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn post(gw: &Gateway, channel: &str, body: impl Into<reqwest::Body>) -> (u16, Value, String) {
    let resp = reqwest::Client::new()
        .post(gw.url(&format!("/channels/{channel}/orders")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, resp.json().await.unwrap_or(Value::Null), ct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amazon_order_reaches_the_erp_canonical_and_the_answer_comes_back_canonical() {
    let (sim, gw) = setup().await;
    let input = golden("amazon/cases/order/sandbox-test-case-200.input.json");
    let (status, answer, ct) = post(&gw, "amazon", input.to_string()).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(ct, "application/json");
    assert_eq!(answer["status"], "accepted");
    assert_eq!(answer["erp_document_id"], "ERP-ORD-000001");
    assert_eq!(answer["document_type"], "order");
    assert_eq!(answer["reference"], "amazon:902-1845936-5435065");

    let got = sim.requests();
    assert_eq!(got.len(), 1);
    let sent: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        sent,
        golden("amazon/cases/order/sandbox-test-case-200.expected.json")
    );
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(
        got[0].header("content-length"),
        Some(got[0].body.len().to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_schema_rejects_lists_every_violation_and_never_reaches_the_erp() {
    let (sim, gw) = setup().await;
    let mut order = golden("amazon/cases/order/sandbox-test-case-200.input.json");
    let o = order.as_object_mut().unwrap();
    o.remove("AmazonOrderId");
    o.insert("OrderStatus".into(), json!("Lost"));
    o["OrderItems"][0]["QuantityOrdered"] = json!("two");
    let (status, problem, ct) = post(&gw, "amazon", order.to_string()).await;
    assert_eq!(status, 422);
    assert_eq!(ct, "application/problem+json");
    assert_eq!(problem["type"], "urn:gateway:problem:schema-violation");
    assert_eq!(problem["total"], 3, "{problem}");
    let v = problem["violations"].as_array().unwrap();
    let pointers: Vec<&str> = v.iter().map(|x| x["pointer"].as_str().unwrap()).collect();
    assert!(pointers.contains(&"/OrderStatus"), "{problem}");
    assert!(
        pointers.contains(&"/OrderItems/0/QuantityOrdered"),
        "{problem}"
    );
    assert!(v.iter().any(|x| x["keyword"] == "required"), "{problem}");
    assert!(
        !problem.to_string().contains("two"),
        "violations must not echo values: {problem}"
    );

    // not JSON, too deep: refused before any tree is built
    let (status, p, _) = post(&gw, "amazon", "{\"AmazonOrderId\": ").await;
    assert_eq!(status, 400);
    assert_eq!(p["type"], "urn:gateway:problem:malformed-json");
    let (status, p, _) = post(
        &gw,
        "amazon",
        format!("{}{}", "[".repeat(100), "]".repeat(100)),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(p["type"], "urn:gateway:problem:json-too-deep");

    // many violations: capped, all counted
    let lines: Vec<Value> = (0..50).map(|_| json!({"QuantityOrdered": -1})).collect();
    let bad = json!({"AmazonOrderId": "1", "PurchaseDate": "x", "OrderStatus": "Pending", "OrderItems": lines});
    let (status, p, _) = post(&gw, "amazon", bad.to_string()).await;
    assert_eq!(status, 422);
    assert_eq!(p["violations"].as_array().unwrap().len(), 5);
    assert!(p["total"].as_u64().unwrap() > 100, "{p}");

    assert_eq!(
        sim.requests_started(),
        0,
        "the ERP saw: {:?}",
        sim.requests()
    );
    assert_eq!(sim.connections_accepted(), 0);
    let m = gw.metrics().unwrap();
    assert!(
        m.contains(
            "gateway_policy_rejections_total{policy=\"order-schema\",reason=\"schema_violation\"} 2"
        ),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_ids_and_times_survive_exactly() {
    let (sim, gw) = setup().await;
    // Walmart: numeric amounts, epoch milliseconds, alpha-3 country
    let walmart = r#"{"purchaseOrderId":"4792701858213","customerOrderId":"200012345678901","orderDate":1732795200123,
      "shippingInfo":{"postalAddress":{"name":"Sam","address1":"702 SW 8th St","city":"Bentonville","state":"AR","postalCode":"72716","country":"USA","addressType":"RESIDENTIAL"}},
      "orderLines":{"orderLine":[
        {"lineNumber":"1","item":{"productName":"A","sku":"A-1"},"orderLineQuantity":{"unitOfMeasurement":"EACH","amount":"1"},
         "charges":{"charge":[{"chargeType":"PRODUCT","chargeName":"ItemPrice","chargeAmount":{"currency":"USD","amount":9.99},"tax":{"taxName":"Tax1","taxAmount":{"currency":"USD","amount":0.1}}}]},
         "orderLineStatuses":{"orderLineStatus":[{"status":"Acknowledged","statusQuantity":{"unitOfMeasurement":"EACH","amount":"1"}}]}},
        {"lineNumber":"2","item":{"productName":"B","sku":"B-1"},"orderLineQuantity":{"unitOfMeasurement":"EACH","amount":"1"},
         "charges":{"charge":[{"chargeType":"PRODUCT","chargeName":"ItemPrice","chargeAmount":{"currency":"USD","amount":0.2},"tax":{"taxName":"Tax1","taxAmount":{"currency":"USD","amount":0.2}}}]},
         "orderLineStatuses":{"orderLineStatus":[{"status":"Shipped","statusQuantity":{"unitOfMeasurement":"EACH","amount":"1"}}]}}]}}"#;
    let (status, answer, _) = post(&gw, "walmart", walmart).await;
    assert_eq!(status, 201, "{answer}");
    let raw = String::from_utf8(sim.requests()[0].body.to_vec()).unwrap();
    let doc: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(doc["lines"][0]["subtotal"]["amount"], "9.99", "{raw}");
    assert_eq!(doc["totals"]["subtotal"]["amount"], "10.19", "{raw}");
    assert_eq!(
        doc["totals"]["tax"]["amount"], "0.30",
        "0.1 + 0.2 exactly: {raw}"
    );
    assert_eq!(doc["created_at"], "2024-11-28T12:00:00.123Z");
    assert_eq!(doc["shipping_address"]["country"], "US");
    assert_eq!(
        doc["status"], "partially_fulfilled",
        "per-line statuses roll up: {raw}"
    );

    // Shopify: a 64-bit id above 2^53 and a local-offset timestamp
    let mut shopify = golden("shopify/cases/order/admin-rest-2026-07-example-1001.input.json");
    let text = shopify.to_string();
    let id = shopify["id"].to_string();
    let text = text.replacen(&format!("\"id\":{id}"), "\"id\":9007199254740993", 1);
    shopify = serde_json::from_str(&text).unwrap();
    let (status, answer, _) = post(&gw, "shopify", shopify.to_string()).await;
    assert_eq!(status, 201, "{answer}");
    let raw = String::from_utf8(sim.requests()[1].body.to_vec()).unwrap();
    assert!(raw.contains("\"shopify:9007199254740993\""), "{raw}");
    assert!(raw.contains("\"order_id\":\"9007199254740993\""), "{raw}");
    assert_eq!(answer["reference"], "shopify:9007199254740993");
    let doc: Value = serde_json::from_str(&raw).unwrap();
    assert!(doc["created_at"].as_str().unwrap().ends_with('Z'), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_mib_order_passes_validation_and_transform_intact() {
    let (sim, gw) = setup().await;
    let line = |n: usize| {
        json!({"lineNumber": n.to_string(), "item": {"productName": format!("Widget number {n}: {}", "a long catalogue description ".repeat(60)), "sku": format!("SKU-{n:07}")},
               "orderLineQuantity": {"unitOfMeasurement": "EACH", "amount": "3"},
               "charges": {"charge": [{"chargeType": "PRODUCT", "chargeName": "ItemPrice", "chargeAmount": {"currency": "USD", "amount": 0.07},
                                        "tax": {"taxName": "Tax1", "taxAmount": {"currency": "USD", "amount": 0.01}}}]},
               "orderLineStatuses": {"orderLineStatus": [{"status": "Created", "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "3"}}]}})
    };
    let mut lines = Vec::new();
    let mut body = String::new();
    while body.len() < 5 * 1024 * 1024 {
        lines.push(line(lines.len() + 1));
        if lines.len() % 200 == 0 {
            body = json!({"purchaseOrderId": "5M", "orderDate": 1732795200000u64, "orderLines": {"orderLine": lines}}).to_string();
        }
    }
    let n = lines.len();
    assert!(body.len() >= 5 * 1024 * 1024);
    let (status, answer, _) = post(&gw, "walmart", body).await;
    assert_eq!(status, 201, "{answer}");
    let doc: Value = serde_json::from_slice(&sim.requests()[0].body).unwrap();
    assert_eq!(doc["lines"].as_array().unwrap().len(), n);
    // n lines of 0.07 and 0.01 tax: exact sums, no floating point drift
    let cents = |c: usize| format!("{}.{:02}", c / 100, c % 100);
    assert_eq!(doc["totals"]["subtotal"]["amount"], cents(7 * n).as_str());
    assert_eq!(doc["totals"]["tax"]["amount"], cents(n).as_str());
    assert_eq!(doc["lines"][n - 1]["sku"], format!("SKU-{n:07}").as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erp_errors_come_back_as_problems_and_mapping_rejections_as_422() {
    let (sim, gw) = setup().await;
    let input = golden("amazon/cases/order/sandbox-test-case-200.input.json");
    sim.set_behaviour(Behaviour::fail(503, Some(1)));
    let (status, p, ct) = post(&gw, "amazon", input.to_string()).await;
    assert_eq!(
        status, 502,
        "an ERP 5xx is the gateway's upstream failing: {p}"
    );
    assert_eq!(ct, "application/problem+json");
    assert_eq!(p["erp_code"], "SIMULATED_FAILURE");
    assert_eq!(p["type"], "urn:gateway:problem:erp-simulated-failure");
    assert!(p["request_id"].is_string(), "{p}");

    sim.set_behaviour(Behaviour::fail(409, Some(1)));
    let (status, p, _) = post(&gw, "amazon", input.to_string()).await;
    assert_eq!(status, 409, "{p}");

    // valid against the schema, but the mapping refuses it: an item in another currency
    let mut mixed = input.clone();
    mixed["OrderItems"][0]["ItemPrice"]["CurrencyCode"] = json!("EUR");
    let before = sim.requests_started();
    let (status, p, _) = post(&gw, "amazon", mixed.to_string()).await;
    assert_eq!(status, 422, "{p}");
    assert_eq!(p["type"], "urn:gateway:problem:unmappable-document");
    assert_eq!(
        sim.requests_started(),
        before,
        "a refused document is never forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_bug_is_a_500_and_nothing_is_forwarded() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = TempDir::new("bad-mapping").unwrap();
    std::fs::create_dir_all(dir.path().join("amazon")).unwrap();
    // produces a document the canonical order schema refuses (no lines, no totals)
    std::fs::write(
        dir.path().join("amazon/order.jq"),
        "{id: (\"amazon:\" + .AmazonOrderId)}\n",
    )
    .unwrap();
    let yaml = format!(
        "policies:\n  t: {{kind: transform, mappings: {}, document: order}}\nroutes:\n  - {{name: o, methods: [POST], path: \"/channels/{{channel}}/orders\", upstream: erp, policies: [t]}}\n",
        dir.path().display()
    );
    let gw = Gateway::start(&policy_file(sim.addr(), "", &yaml)).unwrap();
    let (status, p, _) = post(&gw, "amazon", r#"{"AmazonOrderId":"1"}"#).await;
    assert_eq!(status, 500, "{p}");
    assert_eq!(p["type"], "urn:gateway:problem:mapping-failed");
    assert_eq!(sim.requests_started(), 0);
    let (status, _, _) = post(&gw, "ebay", r#"{"orderId":"1"}"#).await;
    assert_eq!(status, 404, "no ebay/order mapping in this catalog");
}

#[test]
fn gateway_transform_runs_a_mapping_offline() {
    let root = workspace_root();
    let out = Command::new(gateway_binary().unwrap())
        .current_dir(&root)
        .args(["transform", "--mapping", "walmart/order"])
        .arg(root.join("transforms/mappings/walmart/cases/order/mixed-line-statuses.input.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc,
        golden("walmart/cases/order/mixed-line-statuses.expected.json")
    );

    let dir = TempDir::new("transform-cli").unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\n  \"purchaseOrderId\": \"1\",\n  oops\n}").unwrap();
    let out = Command::new(gateway_binary().unwrap())
        .current_dir(&root)
        .args(["transform", "--mapping", "walmart/order"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("{}:3:3: not JSON", bad.display())),
        "{err}"
    );
}

#[test]
fn gateway_check_runs_the_golden_cases_of_the_mappings_in_use() {
    let root = workspace_root();
    let dir = TempDir::new("golden").unwrap();
    let mappings = dir.path().join("mappings");
    copy_dir(&root.join("transforms/mappings"), &mappings);
    let yaml = format!(
        "version: 1\nchannels: {{walmart: {{}}, amazon: {{}}}}\nupstreams: {{erp: {{endpoints: [\"127.0.0.1:9\"]}}}}\npolicies:\n  t: {{kind: transform, mappings: {}, document: order}}\nroutes: []\n",
        mappings.display()
    );
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let check = || {
        Command::new(gateway_binary().unwrap())
            .arg("check")
            .arg("-c")
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("golden cases of"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let expected = mappings.join("walmart/cases/order/mixed-line-statuses.expected.json");
    let text = std::fs::read_to_string(&expected).unwrap();
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    doc["currency"] = json!("EUR");
    std::fs::write(&expected, doc.to_string()).unwrap();
    let out = check();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("golden case \"mixed-line-statuses\" of walmart/order failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/currency"),
        "the diff names the field: {stdout}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
