//! Walmart Marketplace: ship order lines, update one SKU's inventory, and the
//! client-credentials token endpoint. Tokens in `WM_SEC.ACCESS_TOKEN` with the required
//! `WM_QOS.CORRELATION_ID` and `WM_SVC.NAME`; errors `{"errors":{"error":[...]}}`;
//! `x-current-token-count` and `x-next-replenish-time` (epoch ms) on every answer.

use std::collections::HashMap;

use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::channel::{Channel, Operation};
use crate::limits::Verdict;
use crate::market::{
    Call, GrantResult, Market, Refusal, basic_auth, expect_client, expect_grant, header,
    missing_headers,
};
use crate::records::now_ms;
use crate::response::{Answer, json as json_answer, set_header};
use crate::state::Shared;

pub(crate) struct Walmart;

/// The token endpoint.
pub(crate) const TOKEN_PATH: &str = "/v3/token";

/// Headers every Walmart call (and token call) must carry besides the token.
const REQUIRED: [&str; 2] = ["WM_QOS.CORRELATION_ID", "WM_SVC.NAME"];

impl Market for Walmart {
    const CHANNEL: Channel = Channel::Walmart;

    fn endpoint(method: &Method, segments: &[String]) -> Option<(Operation, Option<String>)> {
        match (method, segments) {
            (&Method::POST, [v3, orders, po, shipping])
                if v3 == "v3" && orders == "orders" && shipping == "shipping" =>
            {
                Some((Operation::Shipment, Some(po.clone())))
            }
            (&Method::PUT, [v3, inventory]) if v3 == "v3" && inventory == "inventory" => {
                Some((Operation::Inventory, None))
            }
            _ => None,
        }
    }

    fn credential(headers: &HeaderMap) -> Result<Option<String>, Vec<String>> {
        let missing = missing_headers(headers, &REQUIRED);
        if !missing.is_empty() {
            return Err(missing);
        }
        Ok(header(headers, "WM_SEC.ACCESS_TOKEN"))
    }

    fn accept(call: &Call, body: &Value) -> Result<(String, Option<i64>), Vec<String>> {
        match call.operation {
            Operation::Shipment => Ok((call.path_key.clone().unwrap_or_default(), None)),
            Operation::Inventory => {
                let Some(sku) = call.query("sku").filter(|s| !s.is_empty()) else {
                    return Err(vec!["the query parameter sku is required".to_owned()]);
                };
                if let Some(body_sku) = body["sku"].as_str()
                    && body_sku != sku
                {
                    return Err(vec![format!(
                        "the body's sku {body_sku:?} is not the query's sku {sku:?}"
                    )]);
                }
                Ok((sku.to_owned(), body["quantity"]["amount"].as_i64()))
            }
        }
    }

    fn success(call: &Call, body: &Value) -> Answer {
        match call.operation {
            Operation::Shipment => json_answer(
                StatusCode::OK,
                &json!({"order": {
                    "purchaseOrderId": call.path_key,
                    "orderLines": body["orderShipment"]["orderLines"],
                }}),
            ),
            Operation::Inventory => json_answer(StatusCode::OK, body),
        }
    }

    fn refusal(refusal: &Refusal) -> Answer {
        let (code, description) = match refusal {
            Refusal::NotFound(what) => ("CONTENT_NOT_FOUND.GMP_ORDER_API", what.clone()),
            Refusal::Unauthorized(why) => (
                "UNAUTHORIZED.GMP_GATEWAY_API",
                format!("Unauthorized: {why}"),
            ),
            Refusal::Invalid(errors) => {
                ("INVALID_REQUEST_CONTENT.GMP_ORDER_API", errors.join("; "))
            }
            Refusal::Throttled => (
                "REQUEST_THRESHOLD_VIOLATED.GMP_GATEWAY_API",
                "Too many requests".to_owned(),
            ),
            Refusal::Down => (
                "SERVICE_UNAVAILABLE.GMP_GATEWAY_API",
                "Service unavailable".to_owned(),
            ),
        };
        json_answer(
            refusal.status(),
            &json!({"errors": {"error": [{
                "code": code,
                "description": description,
                "severity": "ERROR",
                "category": "DATA",
                "causes": [],
            }]}}),
        )
    }

    fn rate_headers(answer: &mut Answer, verdict: &Verdict, _throttled: bool) {
        let count = verdict.tokens.floor().max(0.0) as u64;
        let next_ms = u64::try_from(verdict.next_token_in.as_millis()).unwrap_or(u64::MAX);
        set_header(answer, "x-current-token-count", &count.to_string());
        set_header(
            answer,
            "x-next-replenish-time",
            &now_ms().saturating_add(next_ms).to_string(),
        );
    }

    fn token_grant(shared: &Shared, parts: &Parts, form: &HashMap<String, String>) -> GrantResult {
        if !missing_headers(&parts.headers, &REQUIRED).is_empty() {
            return Err((
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "WM_QOS.CORRELATION_ID and WM_SVC.NAME are required",
            ));
        }
        let (id, secret) = basic_auth(&parts.headers).unzip();
        expect_client(id.as_deref(), secret.as_deref(), shared, Channel::Walmart)?;
        expect_grant(form, "client_credentials")
    }

    fn token_answer(token: &str, expires_in: u64) -> Value {
        json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": expires_in,
        })
    }
}
