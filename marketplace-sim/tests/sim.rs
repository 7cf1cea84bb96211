//! The simulator over real HTTP: started in-process on 127.0.0.1:0 and called with reqwest as
//! the gateway would (token endpoint first, then the API with the marketplace's headers).

use std::time::Duration;

use anyhow::Context;
use marketplace_sim::{
    Channel, ChannelStats, Limit, MarketOptions, MarketplaceSim, Operation, Record,
};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

async fn start(options: MarketOptions) -> anyhow::Result<(MarketplaceSim, Client)> {
    let sim = MarketplaceSim::start("127.0.0.1:0".parse()?, options).await?;
    let client = Client::builder().timeout(Duration::from_secs(30)).build()?;
    Ok((sim, client))
}

/// A token from the channel's token endpoint with the default credentials.
async fn token(sim: &MarketplaceSim, client: &Client, channel: Channel) -> anyhow::Result<String> {
    let response = token_request(sim, client, channel, "").await?;
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "token endpoint of {channel} answered {}",
        response.status()
    );
    let body: Value = response.json().await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token")
}

/// The token request the gateway's credential presets send; `secret_suffix` spoils the secret.
async fn token_request(
    sim: &MarketplaceSim,
    client: &Client,
    channel: Channel,
    secret_suffix: &str,
) -> anyhow::Result<Response> {
    let o = sim.options().channel(channel).clone();
    let secret = format!("{}{secret_suffix}", o.client_secret);
    let base = sim.base_url();
    let request = match channel {
        Channel::Amazon => client.post(format!("{base}/auth/o2/token")).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", o.refresh_token.as_str()),
            ("client_id", o.client_id.as_str()),
            ("client_secret", secret.as_str()),
        ]),
        Channel::Walmart => client
            .post(format!("{base}/v3/token"))
            .basic_auth(&o.client_id, Some(&secret))
            .header(
                "WM_QOS.CORRELATION_ID",
                "6f1a0b8e-0000-4000-8000-000000000001",
            )
            .header("WM_SVC.NAME", "Walmart Marketplace")
            .form(&[("grant_type", "client_credentials")]),
        Channel::Ebay => client
            .post(format!("{base}/identity/v1/oauth2/token"))
            .basic_auth(&o.client_id, Some(&secret))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", o.refresh_token.as_str()),
                (
                    "scope",
                    "https://api.ebay.com/oauth/api_scope/sell.fulfillment",
                ),
            ]),
        Channel::Shopify => anyhow::bail!("Shopify has no token endpoint"),
    };
    Ok(request.send().await?)
}

/// A valid call of one endpoint: method, path, body; `key` and `quantity` as recorded.
struct Call {
    method: reqwest::Method,
    path: String,
    body: Value,
    key: &'static str,
    quantity: Option<i64>,
}

fn valid_call(channel: Channel, operation: Operation) -> Call {
    use reqwest::Method;
    match (channel, operation) {
        (Channel::Amazon, Operation::Shipment) => Call {
            method: Method::POST,
            path: "/orders/v0/orders/902-3159896-1390916/shipmentConfirmation".into(),
            body: json!({
                "marketplaceId": "ATVPDKIKX0DER",
                "packageDetail": {
                    "packageReferenceId": "1",
                    "carrierCode": "UPS",
                    "trackingNumber": "1Z999AA10123456784",
                    "shipDate": "2026-12-03T10:00:00Z",
                    "orderItems": [{"orderItemId": "52986411826454", "quantity": 1}]
                }
            }),
            key: "902-3159896-1390916",
            quantity: None,
        },
        (Channel::Amazon, Operation::Inventory) => Call {
            method: Method::PATCH,
            path: "/listings/2021-08-01/items/A3SELLER/SKU%2F42?marketplaceIds=ATVPDKIKX0DER"
                .into(),
            body: json!({
                "productType": "PRODUCT",
                "patches": [{
                    "op": "replace",
                    "path": "/attributes/fulfillment_availability",
                    "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": 7}]
                }]
            }),
            key: "SKU/42",
            quantity: Some(7),
        },
        (Channel::Walmart, Operation::Shipment) => Call {
            method: Method::POST,
            path: "/v3/orders/1796277083022/shipping".into(),
            body: json!({"orderShipment": {"orderLines": {"orderLine": [{
                "lineNumber": "1",
                "sellerOrderId": "92344",
                "orderLineStatuses": {"orderLineStatus": [{
                    "status": "Shipped",
                    "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "1"},
                    "trackingInfo": {
                        "shipDateTime": 1_764_756_000_000_u64,
                        "carrierName": {"carrier": "UPS"},
                        "methodCode": "Standard",
                        "trackingNumber": "1Z999AA10123456784"
                    }
                }]}
            }]}}}),
            key: "1796277083022",
            quantity: None,
        },
        (Channel::Walmart, Operation::Inventory) => Call {
            method: Method::PUT,
            path: "/v3/inventory?sku=WM%20SKU%2B1".into(),
            body: json!({"sku": "WM SKU+1", "quantity": {"unit": "EACH", "amount": 12}}),
            key: "WM SKU+1",
            quantity: Some(12),
        },
        (Channel::Ebay, Operation::Shipment) => Call {
            method: Method::POST,
            path: "/sell/fulfillment/v1/order/12-34567-89012/shipping_fulfillment".into(),
            body: json!({
                "lineItems": [{"lineItemId": "10000000001", "quantity": 1}],
                "shippedDate": "2026-12-03T10:00:00.000Z",
                "shippingCarrierCode": "USPS",
                "trackingNumber": "9400111899223100000000"
            }),
            key: "12-34567-89012",
            quantity: None,
        },
        (Channel::Ebay, Operation::Inventory) => Call {
            method: Method::POST,
            path: "/sell/inventory/v1/bulk_update_price_quantity".into(),
            body: json!({"requests": [{"sku": "EB-1", "shipToLocationAvailability": {"quantity": 3}}]}),
            key: "EB-1",
            quantity: Some(3),
        },
        (Channel::Shopify, Operation::Shipment) => Call {
            method: Method::POST,
            path: "/admin/api/2026-07/fulfillments.json".into(),
            body: json!({"fulfillment": {
                "line_items_by_fulfillment_order": [{"fulfillment_order_id": 1046000787}],
                "tracking_info": {"number": "1Z1234512345123456", "company": "UPS"},
                "notify_customer": false
            }}),
            key: "1046000787",
            quantity: None,
        },
        (Channel::Shopify, Operation::Inventory) => Call {
            method: Method::POST,
            path: "/admin/api/2026-07/inventory_levels/set.json".into(),
            body: json!({"location_id": 655441491, "inventory_item_id": "808950810", "available": 42}),
            key: "808950810",
            quantity: Some(42),
        },
    }
}

/// Sends `call` to the channel's API with `token` in the channel's auth header.
async fn send(
    sim: &MarketplaceSim,
    client: &Client,
    channel: Channel,
    token: &str,
    call: &Call,
) -> anyhow::Result<Response> {
    let url = format!("{}{}", sim.base_url(), call.path);
    let mut request = client
        .request(call.method.clone(), url)
        .header("accept", "application/json")
        .json(&call.body);
    request = match channel {
        Channel::Amazon => request.header("x-amz-access-token", token),
        Channel::Walmart => request
            .header("WM_SEC.ACCESS_TOKEN", token)
            .header(
                "WM_QOS.CORRELATION_ID",
                "6f1a0b8e-0000-4000-8000-000000000002",
            )
            .header("WM_SVC.NAME", "Walmart Marketplace"),
        Channel::Ebay => request.bearer_auth(token),
        Channel::Shopify => request.header("X-Shopify-Access-Token", token),
    };
    Ok(request.send().await?)
}

/// A token the channel accepts: a fresh one, or Shopify's static one.
async fn credential(
    sim: &MarketplaceSim,
    client: &Client,
    channel: Channel,
) -> anyhow::Result<String> {
    match channel {
        Channel::Shopify => sim
            .options()
            .shopify
            .static_token
            .clone()
            .context("no static token"),
        _ => token(sim, client, channel).await,
    }
}

#[tokio::test]
async fn every_endpoint_accepts_a_valid_call_and_records_it_in_order() -> anyhow::Result<()> {
    let (sim, client) = start(MarketOptions::default()).await?;
    let mut expected = Vec::new();
    for channel in Channel::ALL {
        let token = credential(&sim, &client, channel).await?;
        for operation in Operation::ALL {
            let call = valid_call(channel, operation);
            let response = send(&sim, &client, channel, &token, &call).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.text().await?;
            let want = match (channel, operation) {
                (Channel::Amazon, Operation::Shipment) => StatusCode::NO_CONTENT,
                (Channel::Ebay | Channel::Shopify, Operation::Shipment) => StatusCode::CREATED,
                _ => StatusCode::OK,
            };
            assert_eq!(status, want, "{channel} {operation}: {body}");
            match (channel, operation) {
                (Channel::Amazon, Operation::Inventory) => {
                    let body: Value = serde_json::from_str(&body)?;
                    assert_eq!(body["sku"], "SKU/42");
                    assert_eq!(body["status"], "ACCEPTED");
                    assert_eq!(body["issues"], json!([]));
                }
                (Channel::Ebay, Operation::Shipment) => {
                    let location = headers["location"].to_str()?;
                    assert!(
                        location.contains(
                            "/sell/fulfillment/v1/order/12-34567-89012/shipping_fulfillment/"
                        ),
                        "{location}"
                    );
                }
                (Channel::Ebay, Operation::Inventory) => {
                    let body: Value = serde_json::from_str(&body)?;
                    assert_eq!(body["responses"][0]["statusCode"], 200);
                    assert_eq!(body["responses"][0]["sku"], "EB-1");
                }
                (Channel::Walmart, Operation::Inventory) => {
                    let body: Value = serde_json::from_str(&body)?;
                    assert_eq!(body, call.body, "Walmart echoes the inventory body");
                }
                (Channel::Shopify, Operation::Inventory) => {
                    let body: Value = serde_json::from_str(&body)?;
                    assert_eq!(body["inventory_level"]["available"], 42);
                }
                _ => {}
            }
            expected.push((channel, operation, call, token.clone()));
        }
    }
    let records = sim.records();
    assert_eq!(records.len(), expected.len());
    for (i, (record, (channel, operation, call, token))) in
        records.iter().zip(&expected).enumerate()
    {
        assert_eq!(record.index, i as u64);
        assert_eq!(record.channel, *channel);
        assert_eq!(record.operation, *operation);
        assert_eq!(record.key, call.key, "{channel} {operation}");
        assert_eq!(record.quantity, call.quantity, "{channel} {operation}");
        assert_eq!(record.body, call.body);
        assert_eq!(&record.token, token);
        assert!(record.at_ms > 0);
        let correlation = (*channel == Channel::Walmart)
            .then(|| "6f1a0b8e-0000-4000-8000-000000000002".to_owned());
        assert_eq!(record.correlation_id, correlation);
    }
    // What each marketplace now shows per key, from the handle and over HTTP.
    let inventory = sim.inventory();
    assert_eq!(inventory[&Channel::Amazon]["SKU/42"], 7);
    assert_eq!(inventory[&Channel::Walmart]["WM SKU+1"], 12);
    assert_eq!(inventory[&Channel::Ebay]["EB-1"], 3);
    assert_eq!(inventory[&Channel::Shopify]["808950810"], 42);
    let over_http: Value = client
        .get(format!("{}/_sim/inventory", sim.base_url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(over_http, serde_json::to_value(&inventory)?);
    // The same records and counters over the control API.
    let over_http: Vec<Record> = client
        .get(format!("{}/_sim/records", sim.base_url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(over_http, records);
    let stats: Value = client
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await?
        .json()
        .await?;
    for channel in Channel::ALL {
        let from_http: ChannelStats = serde_json::from_value(stats[channel.as_str()].clone())?;
        assert_eq!(from_http, sim.channel_stats(channel));
        assert_eq!(from_http.accepted, 2);
        let issued = if channel == Channel::Shopify { 0 } else { 1 };
        assert_eq!(from_http.tokens_issued, issued, "{channel}");
    }
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn token_endpoints_refuse_wrong_credentials_and_missing_headers() -> anyhow::Result<()> {
    let (sim, client) = start(MarketOptions::default()).await?;
    for channel in [Channel::Amazon, Channel::Walmart, Channel::Ebay] {
        let response = token_request(&sim, &client, channel, "-wrong").await?;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{channel}");
        let body: Value = response.json().await?;
        assert_eq!(body["error"], "invalid_client", "{channel}");
    }
    // A wrong refresh token is an invalid grant.
    let o = &sim.options().amazon;
    let response = client
        .post(format!("{}/auth/o2/token", sim.base_url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "Atzr|stolen"),
            ("client_id", o.client_id.as_str()),
            ("client_secret", o.client_secret.as_str()),
        ])
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await?["error"], "invalid_grant");
    // Walmart's token call needs its correlation and service headers.
    let w = &sim.options().walmart;
    let response = client
        .post(format!("{}/v3/token", sim.base_url()))
        .basic_auth(&w.client_id, Some(&w.client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sim.channel_stats(Channel::Amazon).token_refused, 2);
    assert_eq!(sim.channel_stats(Channel::Walmart).token_refused, 2);
    assert_eq!(sim.channel_stats(Channel::Ebay).token_refused, 1);
    for channel in Channel::ALL {
        assert_eq!(sim.channel_stats(channel).tokens_issued, 0);
    }
    // The expires_in of the options.
    let response = token_request(&sim, &client, Channel::Walmart, "").await?;
    let body: Value = response.json().await?;
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["token_type"], "Bearer");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unknown_foreign_expired_and_revoked_tokens_get_401_in_the_marketplace_shape()
-> anyhow::Result<()> {
    let mut options = MarketOptions::default();
    // Tokens that are expired the moment they are issued: no waiting, no clock in the test.
    options.ebay.token_lifetime = Duration::ZERO;
    let (sim, client) = start(options).await?;
    let amazon_call = valid_call(Channel::Amazon, Operation::Shipment);

    // Never issued.
    let response = send(&sim, &client, Channel::Amazon, "Atza|forged", &amazon_call).await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("x-amzn-ratelimit-limit"));
    let body: Value = response.json().await?;
    assert_eq!(body["errors"][0]["code"], "Unauthorized");

    // Issued for another marketplace.
    let walmart_token = token(&sim, &client, Channel::Walmart).await?;
    let response = send(&sim, &client, Channel::Amazon, &walmart_token, &amazon_call).await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Expired (lifetime zero): refused and counted as seen expired.
    let ebay_response = token_request(&sim, &client, Channel::Ebay, "").await?;
    let ebay_token: Value = ebay_response.json().await?;
    assert_eq!(ebay_token["expires_in"], 0);
    let ebay_token = ebay_token["access_token"].as_str().context("token")?;
    let ebay_call = valid_call(Channel::Ebay, Operation::Inventory);
    let response = send(&sim, &client, Channel::Ebay, ebay_token, &ebay_call).await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await?;
    assert_eq!(body["errors"][0]["errorId"], 1001);
    assert_eq!(sim.channel_stats(Channel::Ebay).expired_token_seen, 1);

    // Valid, then expired on command (the token's lifetime passed).
    let amazon_token = token(&sim, &client, Channel::Amazon).await?;
    let response = send(&sim, &client, Channel::Amazon, &amazon_token, &amazon_call).await?;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let expired: Value = client
        .post(format!("{}/_sim/tokens/expire", sim.base_url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(expired["expired"], 2, "the Amazon and Walmart tokens");
    let response = send(&sim, &client, Channel::Amazon, &amazon_token, &amazon_call).await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(sim.channel_stats(Channel::Amazon).expired_token_seen, 1);

    // Valid, then revoked over the control API; a new token works again.
    let walmart_token = token(&sim, &client, Channel::Walmart).await?;
    let walmart_call = valid_call(Channel::Walmart, Operation::Inventory);
    let response = send(
        &sim,
        &client,
        Channel::Walmart,
        &walmart_token,
        &walmart_call,
    )
    .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let revoked = client
        .post(format!("{}/_sim/tokens/revoke", sim.base_url()))
        .send()
        .await?;
    assert_eq!(revoked.status(), StatusCode::OK);
    let response = send(
        &sim,
        &client,
        Channel::Walmart,
        &walmart_token,
        &walmart_call,
    )
    .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("x-current-token-count"));
    let body: Value = response.json().await?;
    assert_eq!(
        body["errors"]["error"][0]["code"],
        "UNAUTHORIZED.GMP_GATEWAY_API"
    );
    let fresh = token(&sim, &client, Channel::Walmart).await?;
    let response = send(&sim, &client, Channel::Walmart, &fresh, &walmart_call).await?;
    assert_eq!(response.status(), StatusCode::OK);

    // Shopify: only its static token.
    let shopify_call = valid_call(Channel::Shopify, Operation::Inventory);
    let response = send(
        &sim,
        &client,
        Channel::Shopify,
        "shpat_wrong",
        &shopify_call,
    )
    .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await?;
    assert!(
        body["errors"]
            .as_str()
            .is_some_and(|e| e.contains("Invalid API key"))
    );

    assert_eq!(sim.channel_stats(Channel::Amazon).unauthorized, 3);
    assert_eq!(sim.channel_stats(Channel::Walmart).unauthorized, 1);
    assert_eq!(sim.channel_stats(Channel::Ebay).unauthorized, 1);
    assert_eq!(sim.channel_stats(Channel::Shopify).unauthorized, 1);
    // Only the accepted calls are recorded.
    let recorded: Vec<(Channel, String)> = sim
        .records()
        .into_iter()
        .map(|r| (r.channel, r.token))
        .collect();
    assert_eq!(
        recorded,
        vec![
            (Channel::Amazon, amazon_token),
            (Channel::Walmart, walmart_token),
            (Channel::Walmart, fresh)
        ]
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bodies_against_the_schemas_and_the_path_get_400_and_are_not_recorded() -> anyhow::Result<()>
{
    let (sim, client) = start(MarketOptions::default()).await?;
    for channel in Channel::ALL {
        let token = credential(&sim, &client, channel).await?;
        for operation in Operation::ALL {
            let mut call = valid_call(channel, operation);
            // Every schema requires an object: an array body violates all eight.
            call.body = json!([call.body]);
            let response = send(&sim, &client, channel, &token, &call).await?;
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "{channel} {operation}"
            );
        }
    }
    let token = token(&sim, &client, Channel::Amazon).await?;
    // A field the schema requires is missing: the violation is listed.
    let mut call = valid_call(Channel::Amazon, Operation::Shipment);
    call.body["packageDetail"]
        .as_object_mut()
        .context("object")?
        .remove("trackingNumber");
    let response = send(&sim, &client, Channel::Amazon, &token, &call).await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await?;
    assert_eq!(body["errors"][0]["code"], "InvalidInput");
    let details = body["errors"][0]["details"].as_str().unwrap_or_default();
    assert!(details.contains("/packageDetail"), "{details}");
    // Not JSON at all.
    let response = client
        .post(format!(
            "{}/orders/v0/orders/1/shipmentConfirmation",
            sim.base_url()
        ))
        .header("x-amz-access-token", &token)
        .body("{not json")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Amazon listings without marketplaceIds.
    let mut call = valid_call(Channel::Amazon, Operation::Inventory);
    call.path = "/listings/2021-08-01/items/A3SELLER/SKU-1".into();
    let response = send(&sim, &client, Channel::Amazon, &token, &call).await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Walmart: the body's sku is not the query's.
    let walmart = self::token(&sim, &client, Channel::Walmart).await?;
    let mut call = valid_call(Channel::Walmart, Operation::Inventory);
    call.path = "/v3/inventory?sku=OTHER".into();
    let response = send(&sim, &client, Channel::Walmart, &walmart, &call).await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await?;
    let description = body["errors"]["error"][0]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(description.contains("OTHER"), "{description}");
    // Walmart without its required headers.
    let call = valid_call(Channel::Walmart, Operation::Inventory);
    let response = client
        .put(format!("{}{}", sim.base_url(), call.path))
        .header("WM_SEC.ACCESS_TOKEN", &walmart)
        .json(&call.body)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Shopify's 400 lists the violations under errors.body.
    let mut call = valid_call(Channel::Shopify, Operation::Inventory);
    call.body["available"] = json!("many");
    let response = send(&sim, &client, Channel::Shopify, "shpat_simulated", &call).await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await?;
    assert!(
        body["errors"]["body"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );

    assert!(sim.records().is_empty());
    let stats = sim.stats();
    assert_eq!(stats[&Channel::Amazon].invalid, 5);
    assert_eq!(stats[&Channel::Walmart].invalid, 4);
    assert_eq!(stats[&Channel::Ebay].invalid, 2);
    assert_eq!(stats[&Channel::Shopify].invalid, 3);
    assert!(stats.values().all(|s| s.accepted == 0));
    sim.shutdown().await;
    Ok(())
}

/// A limit that lets `burst` calls pass and refills one token in 1000 s: past the burst, the
/// next call is refused however slowly the test runs.
const TIGHT: Limit = Limit::new(0.001, 2);

#[tokio::test]
async fn past_the_burst_each_marketplace_answers_429_with_its_headers() -> anyhow::Result<()> {
    let (sim, client) = start(MarketOptions::default()).await?;
    // Over the control API for Amazon and Walmart, through the handle for the others.
    for channel in [Channel::Amazon, Channel::Walmart] {
        let response = client
            .put(format!("{}/_sim/{channel}/limits", sim.base_url()))
            .json(&json!({"inventory": {"rate": TIGHT.rate, "burst": TIGHT.burst}}))
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::OK);
        let limits: Value = response.json().await?;
        assert_eq!(limits["inventory"]["burst"], 2);
    }
    sim.set_limit(Channel::Ebay, Operation::Inventory, TIGHT)?;
    sim.set_limit(Channel::Shopify, Operation::Inventory, TIGHT)?;
    assert_eq!(sim.limit(Channel::Amazon, Operation::Inventory), TIGHT);

    for channel in Channel::ALL {
        let token = credential(&sim, &client, channel).await?;
        let call = valid_call(channel, Operation::Inventory);
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(send(&sim, &client, channel, &token, &call).await?);
        }
        let statuses: Vec<StatusCode> = answers.iter().map(Response::status).collect();
        assert_eq!(
            statuses,
            [
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::TOO_MANY_REQUESTS
            ],
            "{channel}"
        );
        let throttled = &answers[2];
        let header = |answer: &Response, name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        match channel {
            Channel::Amazon => {
                for answer in &answers {
                    assert_eq!(
                        header(answer, "x-amzn-RateLimit-Limit").as_deref(),
                        Some("0.001")
                    );
                }
            }
            Channel::Walmart => {
                assert_eq!(
                    header(&answers[0], "x-current-token-count").as_deref(),
                    Some("1")
                );
                assert_eq!(
                    header(throttled, "x-current-token-count").as_deref(),
                    Some("0")
                );
                let replenish: u64 = header(throttled, "x-next-replenish-time")
                    .context("x-next-replenish-time")?
                    .parse()?;
                let now_ms = u64::try_from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)?
                        .as_millis(),
                )?;
                assert!(replenish > now_ms, "the next token is in the future");
            }
            Channel::Ebay => {
                assert!(header(throttled, "retry-after").is_none());
                assert!(header(throttled, "x-current-token-count").is_none());
            }
            Channel::Shopify => {
                assert_eq!(
                    header(&answers[0], "X-Shopify-Shop-Api-Call-Limit").as_deref(),
                    Some("1/2")
                );
                assert_eq!(
                    header(throttled, "X-Shopify-Shop-Api-Call-Limit").as_deref(),
                    Some("2/2")
                );
                let retry_after: u64 = header(throttled, "retry-after")
                    .context("Retry-After")?
                    .parse()?;
                assert!(retry_after >= 1);
                assert!(header(&answers[0], "retry-after").is_none());
            }
        }
        // The other operation has its own bucket.
        let other = valid_call(channel, Operation::Shipment);
        let response = send(&sim, &client, channel, &token, &other).await?;
        assert!(response.status().is_success(), "{channel} shipment");
        let stats = sim.channel_stats(channel);
        assert_eq!((stats.accepted, stats.throttled), (3, 1), "{channel}");
    }
    // A limit that cannot work is refused.
    let response = client
        .put(format!("{}/_sim/ebay/limits", sim.base_url()))
        .json(&json!({"shipment": {"rate": -1, "burst": 2}}))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        sim.set_limit(Channel::Ebay, Operation::Shipment, Limit::new(1.0, 0))
            .is_err()
    );
    // Reset restores the options' limits with full buckets.
    sim.reset();
    assert_eq!(
        sim.limit(Channel::Amazon, Operation::Inventory),
        MarketOptions::default().amazon.inventory
    );
    assert!(sim.records().is_empty());
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_channel_down_answers_503_to_its_api_and_token_calls_until_up() -> anyhow::Result<()> {
    let (sim, client) = start(MarketOptions::default()).await?;
    let token = token(&sim, &client, Channel::Ebay).await?;
    let call = valid_call(Channel::Ebay, Operation::Shipment);
    let down = client
        .post(format!("{}/_sim/ebay/down", sim.base_url()))
        .send()
        .await?;
    assert_eq!(down.status(), StatusCode::OK);
    assert!(sim.is_down(Channel::Ebay));
    let response = send(&sim, &client, Channel::Ebay, &token, &call).await?;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let response = token_request(&sim, &client, Channel::Ebay, "").await?;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Other channels are not affected.
    let amazon = self::token(&sim, &client, Channel::Amazon).await?;
    let amazon_call = valid_call(Channel::Amazon, Operation::Shipment);
    let response = send(&sim, &client, Channel::Amazon, &amazon, &amazon_call).await?;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let up = client
        .post(format!("{}/_sim/ebay/up", sim.base_url()))
        .send()
        .await?;
    assert_eq!(up.status(), StatusCode::OK);
    let response = send(&sim, &client, Channel::Ebay, &token, &call).await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    // The handle's methods do the same.
    sim.down(Channel::Shopify);
    let shopify_call = valid_call(Channel::Shopify, Operation::Shipment);
    let response = send(
        &sim,
        &client,
        Channel::Shopify,
        "shpat_simulated",
        &shopify_call,
    )
    .await?;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    sim.up(Channel::Shopify);
    let response = send(
        &sim,
        &client,
        Channel::Shopify,
        "shpat_simulated",
        &shopify_call,
    )
    .await?;
    assert_eq!(response.status(), StatusCode::CREATED);

    assert_eq!(sim.channel_stats(Channel::Ebay).down, 2);
    assert_eq!(sim.channel_stats(Channel::Shopify).down, 1);
    let keys: Vec<(Channel, String)> = sim
        .records()
        .into_iter()
        .map(|r| (r.channel, r.key))
        .collect();
    assert_eq!(
        keys,
        vec![
            (Channel::Amazon, "902-3159896-1390916".to_owned()),
            (Channel::Ebay, "12-34567-89012".to_owned()),
            (Channel::Shopify, "1046000787".to_owned()),
        ]
    );
    // Unknown control endpoints and channels are 404s.
    let response = client
        .post(format!("{}/_sim/etsy/down", sim.base_url()))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_binary_prints_its_address_and_serves() -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_marketplace-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--limit",
            "amazon.shipment=0.001/1",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = lines.next_line().await?.context("no output")?;
    let base = line
        .strip_prefix("marketplace-sim listening on ")
        .context("unexpected first line")?
        .to_owned();
    let limits: Value = reqwest::get(format!("{base}/_sim/amazon/limits"))
        .await?
        .json()
        .await?;
    assert_eq!(limits["shipment"]["burst"], 1);
    child.kill().await?;
    Ok(())
}

/// eBay's notification keys: an application token (client credentials) opens `getPublicKey`,
/// whose PEM verifies what `ebay_sign` signed (ECDSA P-256 over SHA-1 of the body); unknown
/// `kid`s are 404, rotated keys stay published, and every call is counted.
#[tokio::test]
async fn ebay_public_keys_verify_the_simulators_notification_signatures() -> anyhow::Result<()> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::ecdsa::{Signature, VerifyingKey};
    use p256::pkcs8::DecodePublicKey;

    let (sim, client) = start(MarketOptions::default()).await?;
    let base = sim.base_url();
    let o = sim.options().channel(Channel::Ebay).clone();
    let app: Value = client
        .post(format!("{base}/identity/v1/oauth2/token"))
        .basic_auth(&o.client_id, Some(&o.client_secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "https://api.ebay.com/oauth/api_scope"),
        ])
        .send()
        .await?
        .json()
        .await?;
    let app_token = app["access_token"].as_str().context("no token")?.to_owned();

    let body = br#"{"metadata":{"topic":"MARKETPLACE_ACCOUNT_DELETION"},"notification":{"notificationId":"n-1"}}"#;
    let header: Value = serde_json::from_slice(&STANDARD.decode(sim.ebay_sign(body))?)?;
    assert_eq!(header["alg"], "ecdsa");
    assert_eq!(header["digest"], "SHA1");
    let kid = header["kid"].as_str().context("no kid")?.to_owned();
    assert_eq!(kid, sim.ebay_key_id());
    let key_url = |kid: &str| format!("{base}/commerce/notification/v1/public_key/{kid}");

    let without = client.get(key_url(&kid)).send().await?;
    assert_eq!(without.status(), StatusCode::UNAUTHORIZED);
    let answer: Value = client
        .get(key_url(&kid))
        .bearer_auth(&app_token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(answer["algorithm"], "ECDSA");
    assert_eq!(answer["digest"], "SHA1");
    let pem = answer["key"].as_str().context("no key")?;
    let b64 = pem
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|s| s.strip_suffix("-----END PUBLIC KEY-----"))
        .context("not eBay's one-line PEM")?;
    let key = VerifyingKey::from_public_key_der(&STANDARD.decode(b64)?)?;
    let signature = Signature::from_der(
        &STANDARD.decode(header["signature"].as_str().context("no signature")?)?,
    )?;
    let digest = sha1_smol::Sha1::from(&body[..]).digest().bytes();
    key.verify_prehash(&digest, &signature)?;
    let other = sha1_smol::Sha1::from(&b"{}"[..]).digest().bytes();
    assert!(key.verify_prehash(&other, &signature).is_err());

    let unknown = client
        .get(key_url("00000000-0000-0000-0000-000000000000"))
        .bearer_auth(&app_token)
        .send()
        .await?;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let new_kid = sim.ebay_rotate_key();
    assert_ne!(new_kid, kid);
    for k in [&kid, &new_kid] {
        let r = client
            .get(key_url(k))
            .bearer_auth(&app_token)
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::OK, "{k} is published");
    }
    assert_eq!(sim.ebay_key_fetches(), 5);
    Ok(())
}
