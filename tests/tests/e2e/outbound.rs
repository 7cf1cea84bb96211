//! Outbound fan-out end to end, with the real binary, the ERP simulator and the marketplace
//! simulator (scaled-down limits, millisecond backoffs): a warehouse shipment reaches the ERP
//! and the order's marketplace once each, in their own shapes, slowed to the marketplace's
//! limit by its 429s without spending attempts; stock changes for 10 SKUs across 4 channels
//! (one down for a while, all throttled) leave every channel with the newest quantity, never
//! an older one after a newer one; outbound tokens are refreshed before they expire, and a
//! refused one is refreshed once, never looped; bad events are refused before anything is
//! stored.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use erp_sim::{DocumentKind, ErpSim};
use marketplace_sim::{Channel, Limit, MarketOptions, MarketplaceSim, Operation};
use serde_json::{Value, json};
use tests::{Gateway, RedisServer, TempDir, eventually, gateway_binary, workspace_root};

/// Per-test knobs of the policy file.
#[derive(Default)]
struct Knobs {
    /// `limit:` of every marketplace operation (YAML flow map), or none.
    limit: Option<&'static str>,
    /// `refresh_before` of the token credentials.
    refresh_before: Option<&'static str>,
    /// The queue's `max_attempts`.
    max_attempts: u32,
    /// The file holding Shopify's access token.
    shopify_token_file: Option<String>,
    /// A Redis URL: the outbound limits count there (`store: redis`).
    redis: Option<String>,
}

fn file(erp: &ErpSim, market: &MarketplaceSim, dir: &Path, k: &Knobs) -> String {
    let root = workspace_root();
    let secrets = root.join("certs/dev-marketplaces");
    let s = secrets.display();
    let m = market.addr();
    let refresh = k
        .refresh_before
        .map(|r| format!(", refresh_before: {r}"))
        .unwrap_or_default();
    let shopify_token = k
        .shopify_token_file
        .clone()
        .unwrap_or_else(|| format!("{s}/shopify-access-token"));
    let ops = match k.limit {
        Some(l) => format!("{{shipment: {{limit: {l}}}, inventory: {{limit: {l}}}}}"),
        None => "{shipment: {}, inventory: {}}".to_owned(),
    };
    let skus: String = (0..10)
        .map(|i| {
            format!(
                "SKU-{i}:\n  amazon: {{product_type: SHIRT}}\n  walmart: {{}}\n  ebay: {{}}\n  shopify: {{inventory_item_id: \"9000{i}\"}}\n"
            )
        })
        .collect();
    std::fs::write(dir.join("skus.yaml"), skus).unwrap();
    let timeouts = "connect_timeout: 200ms, read_timeout: 3s, total_timeout: 4s";
    let (redis, store) = match &k.redis {
        Some(url) => (
            format!("redis: {{url: \"{url}\", timeout: 500ms}}\n"),
            "  store: redis\n",
        ),
        None => (String::new(), ""),
    };
    format!(
        r#"version: 1
listeners: {{http: 127.0.0.1:0, admin: 127.0.0.1:0}}
channels: {{amazon: {{}}, walmart: {{}}, ebay: {{}}, shopify: {{}}}}
{redis}upstreams:
  erp: {{endpoints: ["{erp}"], {timeouts}}}
  amazon-sp:
    endpoints: ["{m}"]
    {timeouts_block}
    credentials: {{preset: amazon_lwa, token_url: "http://{m}/auth/o2/token", client_id: amazon-client-id, client_secret: "file:{s}/amazon-client-secret", refresh_token: "file:{s}/amazon-refresh-token"{refresh}}}
  walmart-api:
    endpoints: ["{m}"]
    {timeouts_block}
    credentials: {{preset: walmart, token_url: /v3/token, client_id: walmart-client-id, client_secret: "file:{s}/walmart-client-secret"{refresh}}}
  ebay-api:
    endpoints: ["{m}"]
    {timeouts_block}
    credentials: {{preset: ebay, token_url: "http://{m}/identity/v1/oauth2/token", client_id: ebay-client-id, client_secret: "file:{s}/ebay-client-secret", refresh_token: "file:{s}/ebay-refresh-token"{refresh}}}
  shopify-admin:
    endpoints: ["{m}"]
    {timeouts_block}
    credentials: {{preset: shopify, token: "file:{shopify_token}"}}
queues:
  out:
    path: {dir}/deliveries.redb
    workers: 16
    lease: 10s
    poll_interval: 20ms
    retry: {{initial_backoff: 20ms, max_backoff: 300ms, max_attempts: {attempts}, max_age: 1h}}
outbound:
  mappings: {root}/transforms/mappings
{store}  marketplaces:
    amazon: {{upstream: amazon-sp, params: {{seller_id: A2SELLER, marketplace_id: ATVPDKIKX0DER}}, operations: {ops}}}
    walmart: {{upstream: walmart-api, operations: {ops}}}
    ebay: {{upstream: ebay-api, operations: {ops}}}
    shopify: {{upstream: shopify-admin, params: {{api_version: "2026-07", location_id: "655441491"}}, operations: {ops}}}
policies:
  auth:
    kind: jwt
    issuer: https://dev-idp.retail-gateway.invalid
    audience: retail-gateway
    keys: {{jwks_file: {root}/certs/dev-jwks.json}}
    scopes: [events:publish]
  idem: {{kind: idempotency, key: {{header: Idempotency-Key}}, required: true, ttl: 1h, lease: 20s}}
routes:
  - name: shipments
    methods: [POST]
    path: /events/shipments
    upstream: erp
    upstream_path: /erp/v1/shipments
    policies: [auth, idem]
    delivery: {{mode: queued, queue: out}}
    fanout: {{document: shipment, to: [route_upstream, document_channel]}}
  - name: inventory
    methods: [POST]
    path: /events/inventory
    upstream: erp
    policies: [auth, idem]
    delivery: {{mode: queued, queue: out}}
    fanout: {{document: inventory_adjustment, to: [listing_channels], skus: {dir}/skus.yaml}}
"#,
        erp = erp.addr(),
        timeouts_block = timeouts.replace(", ", "\n    "),
        dir = dir.display(),
        root = root.display(),
        attempts = if k.max_attempts == 0 {
            1000
        } else {
            k.max_attempts
        },
    )
}

/// A development token of the internal systems' scope.
fn token() -> String {
    let out = Command::new(gateway_binary().unwrap())
        .current_dir(workspace_root())
        .args([
            "token",
            "--channel",
            "warehouse",
            "--scope",
            "events:publish",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    format!("Bearer {}", String::from_utf8(out.stdout).unwrap().trim())
}

async fn post(
    c: &reqwest::Client,
    gw: &Gateway,
    path: &str,
    auth: &str,
    key: &str,
    body: &Value,
) -> (u16, Value) {
    let r = c
        .post(gw.url(path))
        .header("authorization", auth)
        .header("idempotency-key", format!("\"{key}\""))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A canonical shipment of one order of `channel`.
fn shipment(channel: &str, order: &str) -> Value {
    json!({
        "id": format!("{channel}:shipment:{order}:1"),
        "document_type": "shipment",
        "model_version": "v1",
        "channel": channel,
        "channel_ids": {
            "order_id": order,
            "package_reference_id": "1",
            "fulfillment_order_id": format!("77{}", order.len()),
            "seller_order_id": format!("S-{order}")
        },
        "order_id": format!("{channel}:{order}"),
        "shipped_at": "2026-12-03T09:30:00Z",
        "status": "shipped",
        "carrier": {"code": "UPS", "name": "UPS"},
        "service": "UPS Ground",
        "tracking": [{"number": "1Z999AA10123456784"}],
        "lines": [{"line_id": "1", "sku": "SKU-0", "quantity": 2}]
    })
}

/// A canonical stock snapshot of one SKU.
fn stock(sku: &str, sequence: u64, quantity: i64) -> Value {
    json!({
        "document_type": "inventory_adjustment",
        "model_version": "v1",
        "channel": "erp",
        "occurred_at": "2026-12-03T09:30:00Z",
        "items": [{"sku": sku, "kind": "snapshot", "sequence": sequence, "quantities": {"available": quantity}}]
    })
}

fn queue(gw: &Gateway) -> (u64, u64) {
    let (status, body) = gw.admin_json("GET", "/queues").unwrap();
    assert_eq!(status, 200, "{body}");
    let q = &body["queues"][0];
    (
        q["depth"].as_u64().unwrap(),
        q["dead"].as_u64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shipment_reaches_the_erp_and_amazon_once_each_slowed_to_amazons_limit() {
    let erp = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut options = MarketOptions::default();
    // Amazon throttles below what the gateway mirrors: its 429s must pause the deliveries
    options.amazon.shipment = Limit::new(10.0, 2);
    let market = MarketplaceSim::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let dir = TempDir::new("outbound-ship").unwrap();
    let knobs = Knobs {
        limit: Some("{rate: 40, per: 1s, burst: 8}"),
        // a 429 that spent an attempt would make dead letters fast
        max_attempts: 3,
        ..Knobs::default()
    };
    let gw = Gateway::start(&file(&erp, &market, dir.path(), &knobs)).unwrap();
    let c = reqwest::Client::new();
    let auth = token();

    let orders: Vec<String> = (0..12).map(|i| format!("902-000000{i:02}-1")).collect();
    let sends = orders.iter().map(|o| {
        let (c, gw, auth) = (c.clone(), &gw, auth.clone());
        async move {
            post(
                &c,
                gw,
                "/events/shipments",
                &auth,
                o,
                &shipment("amazon", o),
            )
            .await
        }
    });
    for (status, body) in futures_util::future::join_all(sends).await {
        assert_eq!(status, 202, "{body}");
        let destinations: BTreeSet<&str> = body["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["destination"].as_str().unwrap())
            .collect();
        assert_eq!(destinations, BTreeSet::from(["amazon", "erp"]), "{body}");
    }
    eventually("every delivery final", Duration::from_secs(60), || {
        queue(&gw).0 == 0
    })
    .await
    .unwrap();
    assert_eq!(queue(&gw).1, 0, "no dead letters:\n{}", gw.output());

    // the ERP got each canonical document once
    let at_erp: Vec<String> = erp
        .documents(DocumentKind::Shipment)
        .iter()
        .map(|d| d.body["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(at_erp.len(), 12, "{at_erp:?}");
    assert_eq!(at_erp.iter().collect::<BTreeSet<_>>().len(), 12);
    // Amazon got each order's confirmShipment once, in its own shape
    let at_amazon = market.records_of(Channel::Amazon);
    let keys: BTreeSet<&str> = at_amazon.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(at_amazon.len(), 12, "{at_amazon:?}");
    assert_eq!(keys, orders.iter().map(String::as_str).collect());
    let r = &at_amazon[0];
    assert_eq!(r.operation, Operation::Shipment);
    assert!(r.path.ends_with("/shipmentConfirmation"), "{}", r.path);
    assert_eq!(r.body["marketplaceId"], "ATVPDKIKX0DER", "{}", r.body);
    assert_eq!(r.body["packageDetail"]["orderItems"][0]["orderItemId"], "1");
    assert!(
        r.body.get("document_type").is_none(),
        "not the canonical shape"
    );

    // Amazon throttled, and the gateway waited instead of spending attempts
    let stats = market.channel_stats(Channel::Amazon);
    assert!(stats.throttled > 0, "{stats:?}");
    let waits = gw
        .metric(r#"gateway_outbound_waits_total{channel="amazon",operation="shipment",reason="marketplace_429"}"#)
        .unwrap();
    assert!(waits >= 1.0, "429s are counted as waits: {waits}");
    assert_eq!(
        stats.tokens_issued, 1,
        "one token serves every call: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_channel_ends_with_the_newest_quantity_and_never_goes_back() {
    let erp = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut options = MarketOptions::default();
    for ch in Channel::ALL {
        options.channel_mut(ch).inventory = Limit::new(40.0, 3);
    }
    let market = MarketplaceSim::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    market.down(Channel::Ebay);
    let dir = TempDir::new("outbound-stock").unwrap();
    let knobs = Knobs {
        limit: Some("{rate: 30, per: 1s, burst: 3}"),
        ..Knobs::default()
    };
    let gw = Gateway::start(&file(&erp, &market, dir.path(), &knobs)).unwrap();
    let c = reqwest::Client::new();
    let auth = token();

    // 10 SKUs, each changed 10 times; the changes of one SKU arrive out of sequence order
    let arrival = [3u64, 1, 7, 2, 10, 5, 4, 9, 6, 8];
    let quantity = |sku: usize, seq: u64| (sku as i64) * 1000 + seq as i64 * 10;
    let per_sku = (0..10usize).map(|sku| {
        let (c, gw, auth) = (c.clone(), &gw, auth.clone());
        async move {
            let mut superseded = 0;
            for seq in arrival {
                let (status, body) = post(
                    &c,
                    gw,
                    "/events/inventory",
                    &auth,
                    &format!("sku-{sku}-{seq}"),
                    &stock(&format!("SKU-{sku}"), seq, quantity(sku, seq)),
                )
                .await;
                assert_eq!(status, 202, "{body}");
                superseded += body["superseded"].as_array().map_or(0, Vec::len);
            }
            superseded
        }
    });
    let superseded: usize = futures_util::future::join_all(per_sku)
        .await
        .into_iter()
        .sum();
    // 1 after 3, 2 after 7, 5/4 after 10, ...: 7 of the 10 arrive after a newer one, on each
    // of the 4 channels
    assert_eq!(superseded, 10 * 7 * 4, "older snapshots are not stored");

    market.up(Channel::Ebay);
    eventually("every delivery final", Duration::from_secs(90), || {
        queue(&gw).0 == 0
    })
    .await
    .unwrap();
    assert_eq!(queue(&gw).1, 0, "no dead letters:\n{}", gw.output());

    for ch in Channel::ALL {
        let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for r in market.records_of(ch) {
            assert_eq!(r.operation, Operation::Inventory);
            seen.entry(r.key.clone())
                .or_default()
                .push(r.quantity.unwrap());
        }
        assert_eq!(seen.len(), 10, "{ch:?}: every SKU arrived: {seen:?}");
        for (key, quantities) in &seen {
            let sku: usize = key
                .trim_start_matches("SKU-")
                .trim_start_matches("9000")
                .parse()
                .unwrap();
            assert_eq!(
                quantities.last(),
                Some(&quantity(sku, 10)),
                "{ch:?} {key}: ends with the newest quantity: {quantities:?}"
            );
            assert!(
                quantities.windows(2).all(|w| w[0] < w[1]),
                "{ch:?} {key}: an older quantity after a newer one: {quantities:?}"
            );
        }
    }
    assert!(
        market.channel_stats(Channel::Ebay).down > 0,
        "eBay was down for a while"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_are_refreshed_before_they_expire_and_a_refused_one_once() {
    let erp = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut options = MarketOptions::default();
    options.amazon.token_lifetime = Duration::from_secs(1);
    let market = MarketplaceSim::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let dir = TempDir::new("outbound-tokens").unwrap();
    let wrong = dir.path().join("wrong-shopify-token");
    std::fs::write(&wrong, "shpat_not_the_stores\n").unwrap();
    let knobs = Knobs {
        refresh_before: Some("400ms"),
        max_attempts: 5,
        shopify_token_file: Some(wrong.display().to_string()),
        ..Knobs::default()
    };
    let gw = Gateway::start(&file(&erp, &market, dir.path(), &knobs)).unwrap();
    let c = reqwest::Client::new();
    let auth = token();
    let market = &market;
    let amazon_calls = |n: usize| move || market.records_of(Channel::Amazon).len() >= n;

    let (status, body) = post(
        &c,
        &gw,
        "/events/shipments",
        &auth,
        "t1",
        &shipment("amazon", "T-1"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    eventually("the first call", Duration::from_secs(30), amazon_calls(1))
        .await
        .unwrap();
    // the token (1 s) is past its refresh point (400 ms before expiry) by then
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, body) = post(
        &c,
        &gw,
        "/events/shipments",
        &auth,
        "t2",
        &shipment("amazon", "T-2"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    eventually("the second call", Duration::from_secs(30), amazon_calls(2))
        .await
        .unwrap();
    let stats = market.channel_stats(Channel::Amazon);
    assert_eq!(
        stats.expired_token_seen, 0,
        "never an expired token: {stats:?}"
    );
    assert_eq!(stats.unauthorized, 0, "{stats:?}");
    assert_eq!(stats.tokens_issued, 2, "refreshed before use: {stats:?}");

    // the marketplace revokes a token (eBay's live for hours): one 401, one refresh, the
    // call made again
    let ebay_calls = |n: usize| move || market.records_of(Channel::Ebay).len() >= n;
    let (status, body) = post(
        &c,
        &gw,
        "/events/shipments",
        &auth,
        "t3",
        &shipment("ebay", "E-3"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    eventually("an eBay call", Duration::from_secs(30), ebay_calls(1))
        .await
        .unwrap();
    market.revoke_tokens();
    let (status, body) = post(
        &c,
        &gw,
        "/events/shipments",
        &auth,
        "t4",
        &shipment("ebay", "E-4"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    eventually("a second eBay call", Duration::from_secs(30), ebay_calls(2))
        .await
        .unwrap();
    let stats = market.channel_stats(Channel::Ebay);
    assert_eq!(stats.unauthorized, 1, "{stats:?}");
    assert_eq!(stats.tokens_issued, 2, "{stats:?}");

    // a token the store refuses for good: refreshed (re-read) once, then a dead letter
    let (status, body) = post(
        &c,
        &gw,
        "/events/shipments",
        &auth,
        "t5",
        &shipment("shopify", "4501"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let shopify = body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == "shopify")
        .unwrap()["delivery_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dead = || {
        let (_, d) = gw
            .admin_json("GET", &format!("/deliveries/{shopify}"))
            .unwrap();
        d["state"] == "dead"
    };
    eventually("the shopify delivery dead", Duration::from_secs(30), dead)
        .await
        .unwrap();
    let stats = market.channel_stats(Channel::Shopify);
    assert_eq!(
        stats.unauthorized, 2,
        "one call, one retry after the refresh, no loop: {stats:?}"
    );
    assert_eq!(stats.accepted, 0);
    let (_, d) = gw
        .admin_json("GET", &format!("/deliveries/{shopify}"))
        .unwrap();
    assert!(d["reason"].as_str().unwrap().contains("401"), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_refused_before_anything_is_stored() {
    let erp = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let market = MarketplaceSim::start("127.0.0.1:0".parse().unwrap(), MarketOptions::default())
        .await
        .unwrap();
    let dir = TempDir::new("outbound-bad").unwrap();
    let gw = Gateway::start(&file(&erp, &market, dir.path(), &Knobs::default())).unwrap();
    let c = reqwest::Client::new();
    let auth = token();

    let mut delta = stock("SKU-1", 1, 5);
    delta["items"][0] = json!({"sku": "SKU-1", "kind": "delta", "delta": -2, "sequence": 1});
    let mut unsequenced = stock("SKU-1", 1, 5);
    unsequenced["items"][0]
        .as_object_mut()
        .unwrap()
        .remove("sequence");
    let mut no_lines = shipment("amazon", "X-1");
    no_lines.as_object_mut().unwrap().remove("lines");
    let cases = [
        ("/events/inventory", delta, "inventory_delta"),
        ("/events/inventory", unsequenced, "inventory_no_sequence"),
        ("/events/shipments", no_lines, "schema_violation"),
        (
            "/events/shipments",
            shipment("otto", "X-2"),
            "no_marketplace",
        ),
    ];
    for (i, (path, body, reason)) in cases.into_iter().enumerate() {
        let (status, problem) = post(&c, &gw, path, &auth, &format!("bad-{i}"), &body).await;
        assert_eq!(status, 422, "{reason}: {problem}");
        assert!(
            problem["type"].as_str().is_some(),
            "problem+json: {problem}"
        );
        let series =
            format!(r#"gateway_policy_rejections_total{{policy="fanout",reason="{reason}"}}"#);
        assert_eq!(gw.metric(&series).unwrap(), 1.0, "{series}");
    }
    assert_eq!(queue(&gw), (0, 0));
    let (_, list) = gw.admin_json("GET", "/deliveries?limit=10").unwrap();
    assert_eq!(
        list["deliveries"].as_array().map_or(0, Vec::len),
        0,
        "{list}"
    );
    assert!(market.records().is_empty());
    assert!(erp.documents(DocumentKind::Shipment).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_marketplace_limit_through_redis() {
    let erp = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let market = MarketplaceSim::start("127.0.0.1:0".parse().unwrap(), MarketOptions::default())
        .await
        .unwrap();
    let redis = RedisServer::start().unwrap();
    // three calls an hour between them: the fourth waits, whichever instance holds it
    let knobs = Knobs {
        limit: Some("{rate: 1, per: 1h, burst: 3}"),
        redis: Some(redis.url()),
        ..Knobs::default()
    };
    let (dir_a, dir_b) = (
        TempDir::new("outbound-a").unwrap(),
        TempDir::new("outbound-b").unwrap(),
    );
    let a = Gateway::start(&file(&erp, &market, dir_a.path(), &knobs)).unwrap();
    let b = Gateway::start(&file(&erp, &market, dir_b.path(), &knobs)).unwrap();
    let c = reqwest::Client::new();
    let auth = token();
    for (i, gw) in [&a, &b, &a, &b, &a, &b].into_iter().enumerate() {
        let order = format!("R-{i}");
        let (status, body) = post(
            &c,
            gw,
            "/events/shipments",
            &auth,
            &order,
            &shipment("amazon", &order),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    let waits = |gw: &Gateway| {
        gw.metric(
            r#"gateway_outbound_waits_total{channel="amazon",operation="shipment",reason="limit"}"#,
        )
        .unwrap_or(0.0)
    };
    eventually(
        "three calls made, three held back",
        Duration::from_secs(30),
        || {
            market.records_of(Channel::Amazon).len() == 3
                && queue(&a).0 + queue(&b).0 == 3
                // whichever instance holds them (the first turns may all go to one)
                && waits(&a) + waits(&b) >= 3.0
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {} calls, depths {:?} {:?}, waits {} {}\n{}",
            market.records_of(Channel::Amazon).len(),
            queue(&a),
            queue(&b),
            waits(&a),
            waits(&b),
            a.output()
        )
    });
    assert_eq!(
        market.records_of(Channel::Amazon).len(),
        3,
        "one limit for both instances"
    );
    assert_eq!(
        erp.documents(DocumentKind::Shipment).len(),
        6,
        "the ERP's copies are not held"
    );
}
