//! The shipped example policy set (policies/files/gateway.yaml) served by the real binary in
//! front of the ERP simulator: each route asks for what it says (scopes per document, the
//! token's channel, Shopify's signature), and what passes reaches the ERP in canonical form.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use erp_sim::ErpSim;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tests::{Gateway, Start, gateway_binary, workspace_root};

/// The example file, pointed at `sim` and with its relative paths made absolute (the harness
/// writes the file into a temporary folder).
fn example_file(sim: &ErpSim) -> String {
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join("policies/files/gateway.yaml")).unwrap();
    let files = root.join("policies/files");
    let replaced = text
        .replace("\"127.0.0.1:9400\"", &format!("\"{}\"", sim.addr()))
        .replace("../../", &format!("{}/", root.display()))
        .replace(" schemas/", &format!(" {}/schemas/", files.display()))
        .replace(" skus.yaml", &format!(" {}/skus.yaml", files.display()));
    assert_ne!(replaced, text);
    replaced
}

async fn start() -> (ErpSim, Gateway) {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start_with(
        &example_file(&sim),
        Start {
            https: true,
            ..Start::default()
        },
    )
    .unwrap();
    (sim, gw)
}

/// A development token from `gateway token`.
fn token(channel: &str, scope: &str) -> String {
    let out = Command::new(gateway_binary().unwrap())
        .current_dir(workspace_root())
        .args(["token", "--channel", channel, "--scope", scope])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn case(path: &str) -> Vec<u8> {
    std::fs::read(workspace_root().join("transforms/mappings").join(path)).unwrap()
}

async fn post(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(gw.url(path))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_document_route_requires_its_own_scope_and_the_tokens_channel() {
    let (sim, gw) = start().await;
    let inventory = case("amazon/cases/inventory_adjustment/fba-summaries-with-details.input.json");
    let orders_token = format!("Bearer {}", token("amazon", "orders:write"));
    let inventory_token = format!("Bearer {}", token("amazon", "inventory:write"));

    // the inventory route inherits the order route's settings but not its scope
    let (status, problem) = post(
        &gw,
        "/channels/amazon/inventory",
        &[("authorization", &orders_token)],
        inventory.clone(),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["type"], "urn:gateway:problem:insufficient-scope");

    // an amazon token cannot post as walmart
    let (status, problem) = post(
        &gw,
        "/channels/walmart/inventory",
        &[("authorization", &inventory_token)],
        inventory.clone(),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["type"], "urn:gateway:problem:channel-forbidden");
    assert_eq!(sim.requests_started(), 0);

    let (status, ack) = post(
        &gw,
        "/channels/amazon/inventory",
        &[("authorization", &inventory_token)],
        inventory,
    )
    .await;
    assert!((200..300).contains(&status), "{status} {ack}");
    let got = sim.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/erp/v1/inventory-adjustments");
    let doc: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(doc["document_type"], "inventory_adjustment");
    assert_eq!(doc["channel"], "amazon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_shopify_webhook_creates_a_canonical_order_and_a_forged_one_never_arrives() {
    let (sim, gw) = start().await;
    let body = case("shopify/cases/order/admin-rest-2026-07-example-1001.input.json");
    let secret =
        std::fs::read_to_string(workspace_root().join("certs/dev-shopify-webhook.secret")).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.trim_end().as_bytes()).unwrap();
    mac.update(&body);
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    let shop = [("x-shopify-shop-domain", "example.myshopify.com")];

    let forged = STANDARD.encode([7u8; 32]);
    let delivery = (
        "x-shopify-webhook-id",
        "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
    );
    let (status, problem) = post(
        &gw,
        "/webhooks/shopify/orders",
        &[shop[0], delivery, ("x-shopify-hmac-sha256", &forged)],
        body.clone(),
    )
    .await;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["type"], "urn:gateway:problem:invalid-signature");
    assert_eq!(sim.requests_started(), 0);

    // Shopify retries a delivery it thinks failed: three deliveries, one order
    let mut acks = Vec::new();
    for _ in 0..3 {
        let (status, ack) = post(
            &gw,
            "/webhooks/shopify/orders",
            &[shop[0], delivery, ("x-shopify-hmac-sha256", &signature)],
            body.clone(),
        )
        .await;
        assert_eq!(status, 201, "{ack}");
        acks.push(ack);
    }
    assert_eq!(acks[0]["document_type"], "order");
    assert_eq!(acks[1], acks[0]);
    assert_eq!(acks[2], acks[0]);
    let got = sim.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].query.as_deref(), Some("channel=shopify"));
    let doc: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(doc["channel"], "shopify");
    assert_eq!(doc["document_type"], "order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erp_documents_are_read_back_only_with_the_read_scope() {
    let (sim, gw) = start().await;
    let order =
        std::fs::read(workspace_root().join("policies/files/samples/amazon-order.json")).unwrap();
    let writer = format!("Bearer {}", token("amazon", "orders:write"));
    let (status, ack) = post(
        &gw,
        "/channels/amazon/orders",
        &[
            ("authorization", &writer),
            ("idempotency-key", "\"read-back-1\""),
        ],
        order,
    )
    .await;
    assert_eq!(status, 201, "{ack}");
    let id = ack["erp_document_id"].as_str().unwrap().to_owned();

    let client = reqwest::Client::new();
    let url = gw.url(&format!("/erp/orders/{id}"));
    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong_scope = client
        .get(&url)
        .header("authorization", &writer)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_scope.status(), 403);
    assert_eq!(sim.requests().len(), 1);

    let reader = format!("Bearer {}", token("amazon", "erp:read"));
    let read = client
        .get(&url)
        .header("authorization", &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let doc: Value = read.json().await.unwrap();
    assert_eq!(doc["id"], "amazon:902-1845936-5435065", "{doc}");
}

/// The documents besides orders that a channel has a mapping for: (channel, document, route,
/// token scope, ERP path). Each has a channel input schema on its route.
const DOCUMENTS: [(&str, &str, &str, &str, &str); 6] = [
    (
        "amazon",
        "inventory_adjustment",
        "inventory",
        "inventory:write",
        "/erp/v1/inventory-adjustments",
    ),
    (
        "amazon",
        "shipment",
        "shipments",
        "shipments:write",
        "/erp/v1/shipments",
    ),
    (
        "shopify",
        "inventory_adjustment",
        "inventory",
        "inventory:write",
        "/erp/v1/inventory-adjustments",
    ),
    (
        "shopify",
        "shipment",
        "shipments",
        "shipments:write",
        "/erp/v1/shipments",
    ),
    (
        "shopify",
        "return",
        "returns",
        "returns:write",
        "/erp/v1/returns",
    ),
    (
        "walmart",
        "return",
        "returns",
        "returns:write",
        "/erp/v1/returns",
    ),
];

const SHOP: (&str, &str) = ("x-shopify-shop-domain", "example.myshopify.com");

/// The golden inputs of a mapping, by file name (`<channel>/cases/<document>/*.input.json`).
fn golden_inputs(channel: &str, document: &str) -> Vec<String> {
    let dir = workspace_root()
        .join("transforms/mappings")
        .join(channel)
        .join("cases")
        .join(document);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".input.json"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no golden input in {}", dir.display());
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_golden_input_passes_its_channel_schema_and_reaches_the_erp_canonical() {
    let (sim, gw) = start().await;
    let mut posted = 0;
    for (channel, document, route, scope, erp_path) in DOCUMENTS {
        let auth = format!("Bearer {}", token(channel, scope));
        for name in golden_inputs(channel, document) {
            let dir = format!("{channel}/cases/{document}");
            let body = case(&format!("{dir}/{name}"));
            let expected: Value = serde_json::from_slice(&case(&format!(
                "{dir}/{}",
                name.replace(".input.json", ".expected.json")
            )))
            .unwrap();
            let (status, ack) = post(
                &gw,
                &format!("/channels/{channel}/{route}"),
                &[("authorization", &auth), SHOP],
                body,
            )
            .await;
            assert!((200..300).contains(&status), "{dir}/{name}: {status} {ack}");
            posted += 1;
            let got = sim.requests();
            assert_eq!(got.len(), posted, "{dir}/{name}");
            let last = &got[posted - 1];
            assert_eq!(last.path, erp_path, "{dir}/{name}");
            assert_eq!(
                last.query.as_deref(),
                Some(format!("channel={channel}").as_str())
            );
            let doc: Value = serde_json::from_slice(&last.body).unwrap();
            assert_eq!(doc["document_type"], document, "{dir}/{name}: {doc}");
            assert_eq!(doc, expected, "{dir}/{name}");
        }
    }
    // every golden case of the six documents went through (shopify's stay under its burst);
    // shopify/return's shipping-line-without-amount came with the deep check's fixes
    assert_eq!(posted, 9);
}

/// How a broken variant is made from a golden input.
enum Break {
    /// Remove the member at this pointer.
    Remove(&'static str),
    /// Replace the value at this pointer.
    Set(&'static str, Value),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_breaking_its_channel_schema_is_refused_with_the_field_and_never_reaches_the_erp()
 {
    use serde_json::json;
    // (channel, route, scope, golden input, how it is broken, expected pointer, keyword)
    let variants = [
        (
            "amazon",
            "inventory",
            "inventory:write",
            "amazon/cases/inventory_adjustment/fba-summaries-with-details.input.json",
            Break::Set(
                "/payload/inventorySummaries/0/inventoryDetails/fulfillableQuantity",
                json!("42"),
            ),
            "/payload/inventorySummaries/0/inventoryDetails/fulfillableQuantity",
            "type",
        ),
        (
            "amazon",
            "inventory",
            "inventory:write",
            "amazon/cases/inventory_adjustment/fba-summaries-with-details.input.json",
            Break::Remove("/payload/inventorySummaries/1/sellerSku"),
            "/payload/inventorySummaries/1",
            "required",
        ),
        (
            "amazon",
            "shipments",
            "shipments:write",
            "amazon/cases/shipment/sandbox-confirm-shipment.input.json",
            Break::Set("/packageDetail/shipDate", json!("2022-02-11 01:00")),
            "/packageDetail/shipDate",
            "pattern",
        ),
        (
            "amazon",
            "shipments",
            "shipments:write",
            "amazon/cases/shipment/sandbox-confirm-shipment.input.json",
            Break::Remove("/packageDetail/orderItems/0/quantity"),
            "/packageDetail/orderItems/0",
            "required",
        ),
        (
            "shopify",
            "inventory",
            "inventory:write",
            "shopify/cases/inventory_adjustment/available-adjustment-delta.input.json",
            Break::Set("/available_adjustment", json!("-3")),
            "/available_adjustment",
            "type",
        ),
        (
            "shopify",
            "inventory",
            "inventory:write",
            "shopify/cases/inventory_adjustment/admin-rest-2026-07-inventory-level-set.input.json",
            Break::Remove("/inventory_level/inventory_item_id"),
            "/inventory_level",
            "required",
        ),
        (
            "shopify",
            "shipments",
            "shipments:write",
            "shopify/cases/shipment/success-in-transit-two-parcels.input.json",
            Break::Set("/fulfillment/line_items/0/quantity", json!("3")),
            "/fulfillment/line_items/0/quantity",
            "type",
        ),
        (
            "shopify",
            "shipments",
            "shipments:write",
            "shopify/cases/shipment/admin-rest-2026-07-fulfillment-failure.input.json",
            Break::Remove("/fulfillment/order_id"),
            "/fulfillment",
            "required",
        ),
        (
            "shopify",
            "returns",
            "returns:write",
            "shopify/cases/return/admin-rest-2026-07-refund.input.json",
            Break::Set(
                "/refund/refund_line_items/0/subtotal_set/shop_money/amount",
                json!(195.66),
            ),
            "/refund/refund_line_items/0/subtotal_set/shop_money/amount",
            "type",
        ),
        (
            "shopify",
            "returns",
            "returns:write",
            "shopify/cases/return/admin-rest-2026-07-refund.input.json",
            Break::Remove("/refund/refund_line_items/1/line_item_id"),
            "/refund/refund_line_items/1",
            "required",
        ),
        (
            "walmart",
            "returns",
            "returns:write",
            "walmart/cases/return/refund-completed.input.json",
            Break::Set("/returnOrderLines/0/quantity/measurementValue", json!("1")),
            "/returnOrderLines/0/quantity/measurementValue",
            "type",
        ),
        (
            "walmart",
            "returns",
            "returns:write",
            "walmart/cases/return/refund-completed.input.json",
            Break::Remove("/returnOrderDate"),
            "",
            "required",
        ),
    ];
    let (sim, gw) = start().await;
    let mut tokens = std::collections::HashMap::new();
    for (channel, route, scope, input, broken, pointer, keyword) in variants {
        let mut body: Value = serde_json::from_slice(&case(input)).unwrap();
        let field = match &broken {
            Break::Remove(at) => {
                let (parent, key) = at.rsplit_once('/').unwrap();
                let removed = body
                    .pointer_mut(parent)
                    .and_then(Value::as_object_mut)
                    .and_then(|o| o.remove(key));
                assert!(removed.is_some(), "{input}: nothing at {at}");
                key
            }
            Break::Set(at, value) => {
                let slot = body.pointer_mut(at).unwrap();
                assert_ne!(slot, value, "{input}: {at} is already {value}");
                *slot = value.clone();
                at.rsplit_once('/').unwrap().1
            }
        };
        let auth = tokens
            .entry((channel, scope))
            .or_insert_with(|| format!("Bearer {}", token(channel, scope)));
        let (status, problem) = post(
            &gw,
            &format!("/channels/{channel}/{route}"),
            &[("authorization", auth), SHOP],
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
        assert_eq!(status, 422, "{input} {pointer}: {problem}");
        assert_eq!(
            problem["type"], "urn:gateway:problem:schema-violation",
            "{problem}"
        );
        let violations = problem["violations"].as_array().unwrap();
        assert!(
            violations.iter().any(|v| v["pointer"] == pointer
                && v["keyword"] == keyword
                && (keyword != "required" || v["message"].as_str().unwrap().contains(field))),
            "{input}: no {keyword} violation of {field} at {pointer:?}: {problem}"
        );
    }
    assert_eq!(sim.requests_started(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_order_succeeds_over_https_with_http2_and_http11_and_so_does_the_next_one() {
    let (sim, gw) = start().await;
    let https = gw.https.unwrap().port();
    let bearer = format!("Bearer {}", token("amazon", "orders:write"));
    let order =
        std::fs::read(workspace_root().join("policies/files/samples/amazon-order.json")).unwrap();
    let ca = std::fs::read(workspace_root().join("certs/dev-ca.crt")).unwrap();
    let http1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let cases = [
        (reqwest::Version::HTTP_2, tests::client().unwrap()),
        (reqwest::Version::HTTP_11, http1),
    ];
    for (version, c) in &cases {
        // the second request goes over the same client and upstream connections
        for n in 0..2 {
            let r = c
                .post(format!("https://localhost:{https}/channels/amazon/orders"))
                .header("content-type", "application/json")
                .header("authorization", &bearer)
                .header("idempotency-key", format!("\"{version:?}-{n}\""))
                .body(order.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), *version);
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(status, 201, "{version:?} #{n}: {body}");
            assert_eq!(body["status"], "accepted", "{body}");
            assert_eq!(body["document_type"], "order", "{body}");
        }
    }
    assert_eq!(sim.documents(erp_sim::DocumentKind::Order).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_erp_down_an_order_is_stored_its_caller_watches_it_and_it_arrives_once() {
    let (sim, gw) = start().await;
    let bearer = format!("Bearer {}", token("amazon", "orders:write"));
    let order =
        std::fs::read(workspace_root().join("policies/files/samples/amazon-order.json")).unwrap();
    let c = reqwest::Client::new();
    sim.set_down(true).await.unwrap();
    let send = || {
        c.post(gw.url("/channels/amazon/orders"))
            .header("content-type", "application/json")
            .header("authorization", &bearer)
            .header("idempotency-key", "\"outage-1\"")
            .body(order.clone())
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = r.json().await.unwrap();
    assert!(
        location.starts_with("/channels/amazon/orders/deliveries/"),
        "{location}"
    );
    assert_eq!(accepted["location"], location.as_str());
    // the marketplace's retry gets the same 202
    let again = send().await.unwrap();
    assert_eq!(again.status().as_u16(), 202);
    assert_eq!(again.json::<Value>().await.unwrap(), accepted);

    let read = |auth: String| {
        c.get(gw.url(&location))
            .header("authorization", auth)
            .send()
    };
    let pending = read(bearer.clone()).await.unwrap();
    assert_eq!(pending.status().as_u16(), 200);
    let pending: Value = pending.json().await.unwrap();
    assert!(
        ["pending", "in_flight"].contains(&pending["state"].as_str().unwrap()),
        "{pending}"
    );
    // the same authentication as the route, and a channel sees only its own
    assert_eq!(
        c.get(gw.url(&location))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let walmart = format!("Bearer {}", token("walmart", "orders:write"));
    let walmart_path = location.replace("/amazon/", "/walmart/");
    let other = c
        .get(gw.url(&walmart_path))
        .header("authorization", walmart)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);

    sim.set_down(false).await.unwrap();
    let mut delivered = Value::Null;
    for _ in 0..300 {
        delivered = read(bearer.clone()).await.unwrap().json().await.unwrap();
        if delivered["state"] == "delivered" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(delivered["state"], "delivered", "{delivered}");
    // the ERP's acknowledgement mapped back as the sync path would have answered it
    assert_eq!(delivered["answer"]["status"], 201, "{delivered}");
    assert_eq!(
        delivered["answer"]["body"]["status"], "accepted",
        "{delivered}"
    );
    assert_eq!(delivered["answer"]["body"]["document_type"], "order");
    assert_eq!(sim.documents(erp_sim::DocumentKind::Order).len(), 1);
}
