//! Shopify Admin REST: create a fulfillment, set an inventory level. A static
//! `X-Shopify-Access-Token` (no token endpoint); errors `{"errors": ...}`;
//! `X-Shopify-Shop-Api-Call-Limit: used/bucket` on every answer and `Retry-After` (whole
//! seconds) on a 429.

use std::collections::HashMap;

use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::channel::{Channel, Operation};
use crate::limits::Verdict;
use crate::market::{Call, GrantResult, Market, Refusal, header, id_text};
use crate::response::{Answer, json as json_answer, set_header};
use crate::state::Shared;

pub(crate) struct Shopify;

impl Market for Shopify {
    const CHANNEL: Channel = Channel::Shopify;

    fn endpoint(method: &Method, segments: &[String]) -> Option<(Operation, Option<String>)> {
        match (method, segments) {
            (&Method::POST, [admin, api, version, fulfillments])
                if admin == "admin"
                    && api == "api"
                    && !version.is_empty()
                    && fulfillments == "fulfillments.json" =>
            {
                Some((Operation::Shipment, None))
            }
            (&Method::POST, [admin, api, version, levels, set])
                if admin == "admin"
                    && api == "api"
                    && !version.is_empty()
                    && levels == "inventory_levels"
                    && set == "set.json" =>
            {
                Some((Operation::Inventory, None))
            }
            _ => None,
        }
    }

    fn credential(headers: &HeaderMap) -> Result<Option<String>, Vec<String>> {
        Ok(header(headers, "x-shopify-access-token"))
    }

    fn accept(call: &Call, body: &Value) -> Result<(String, Option<i64>), Vec<String>> {
        match call.operation {
            Operation::Shipment => {
                let id = &body["fulfillment"]["line_items_by_fulfillment_order"][0]["fulfillment_order_id"];
                let Some(key) = id_text(id) else {
                    return Err(vec![
                        "/fulfillment/line_items_by_fulfillment_order/0/fulfillment_order_id: required"
                            .to_owned(),
                    ]);
                };
                Ok((key, None))
            }
            Operation::Inventory => {
                let Some(key) = id_text(&body["inventory_item_id"]) else {
                    return Err(vec!["/inventory_item_id: required".to_owned()]);
                };
                Ok((key, body["available"].as_i64()))
            }
        }
    }

    fn success(call: &Call, body: &Value) -> Answer {
        match call.operation {
            Operation::Shipment => {
                let fulfillment = &body["fulfillment"];
                let tracking = &fulfillment["tracking_info"];
                json_answer(
                    StatusCode::CREATED,
                    &json!({"fulfillment": {
                        "id": next_id(),
                        "status": "success",
                        "line_items_by_fulfillment_order": fulfillment["line_items_by_fulfillment_order"],
                        "tracking_company": tracking["company"],
                        "tracking_number": tracking["number"],
                        "tracking_url": tracking["url"],
                    }}),
                )
            }
            Operation::Inventory => json_answer(
                StatusCode::OK,
                &json!({"inventory_level": {
                    "inventory_item_id": body["inventory_item_id"],
                    "location_id": body["location_id"],
                    "available": body["available"],
                    "updated_at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                }}),
            ),
        }
    }

    fn refusal(refusal: &Refusal) -> Answer {
        let errors = match refusal {
            Refusal::NotFound(_) => json!("Not Found"),
            Refusal::Unauthorized(_) => json!(
                "[API] Invalid API key or access token (unrecognized login or wrong password)"
            ),
            Refusal::Invalid(errors) => json!({"body": errors}),
            Refusal::Throttled => json!(
                "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."
            ),
            Refusal::Down => json!("Service Unavailable"),
        };
        json_answer(refusal.status(), &json!({"errors": errors}))
    }

    fn rate_headers(answer: &mut Answer, verdict: &Verdict, throttled: bool) {
        set_header(
            answer,
            "X-Shopify-Shop-Api-Call-Limit",
            &format!("{}/{}", verdict.used(), verdict.limit.burst),
        );
        if throttled {
            // Whole seconds, rounded up and at least one, as clients parse Retry-After.
            let secs = verdict.next_token_in.as_secs_f64().ceil().max(1.0) as u64;
            set_header(answer, "Retry-After", &secs.to_string());
        }
    }

    fn token_grant(_: &Shared, _: &Parts, _: &HashMap<String, String>) -> GrantResult {
        Err((
            StatusCode::NOT_FOUND,
            "invalid_request",
            "Shopify uses a static access token",
        ))
    }

    fn token_answer(token: &str, _expires_in: u64) -> Value {
        json!({"access_token": token})
    }
}

/// Fulfillment ids: 64-bit numbers, unique within the process.
fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(5_000_000_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
