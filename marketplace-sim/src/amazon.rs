//! Amazon SP-API: confirmShipment (orders v0), patchListingsItem (listings 2021-08-01), and
//! Login with Amazon's token endpoint. Tokens in `x-amz-access-token`; errors
//! `{"errors":[{code, message, details}]}`; `x-amzn-RateLimit-Limit` on every answer.

use std::collections::HashMap;

use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::channel::{Channel, Operation};
use crate::limits::Verdict;
use crate::market::{
    Call, GrantResult, Market, Refusal, expect_client, expect_grant, expect_refresh_token, header,
};
use crate::response::{Answer, empty, json as json_answer, set_header};
use crate::state::Shared;

pub(crate) struct Amazon;

/// The LWA token endpoint.
pub(crate) const TOKEN_PATH: &str = "/auth/o2/token";

impl Market for Amazon {
    const CHANNEL: Channel = Channel::Amazon;

    fn endpoint(method: &Method, segments: &[String]) -> Option<(Operation, Option<String>)> {
        match (method, segments) {
            (&Method::POST, [orders, v0, orders2, order_id, confirmation])
                if orders == "orders"
                    && v0 == "v0"
                    && orders2 == "orders"
                    && confirmation == "shipmentConfirmation" =>
            {
                Some((Operation::Shipment, Some(order_id.clone())))
            }
            (&Method::PATCH, [listings, version, items, _seller_id, sku])
                if listings == "listings" && version == "2021-08-01" && items == "items" =>
            {
                Some((Operation::Inventory, Some(sku.clone())))
            }
            _ => None,
        }
    }

    fn credential(headers: &HeaderMap) -> Result<Option<String>, Vec<String>> {
        Ok(header(headers, "x-amz-access-token"))
    }

    fn accept(call: &Call, body: &Value) -> Result<(String, Option<i64>), Vec<String>> {
        let key = call.path_key.clone().unwrap_or_default();
        match call.operation {
            Operation::Shipment => Ok((key, None)),
            Operation::Inventory => {
                if call.query("marketplaceIds").is_none_or(str::is_empty) {
                    return Err(vec![
                        "the query parameter marketplaceIds is required".to_owned(),
                    ]);
                }
                let quantity = body["patches"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["path"] == "/attributes/fulfillment_availability")
                    .flat_map(|p| p["value"].as_array().into_iter().flatten())
                    .find_map(|v| v["quantity"].as_i64());
                Ok((key, quantity))
            }
        }
    }

    fn success(call: &Call, _body: &Value) -> Answer {
        match call.operation {
            Operation::Shipment => empty(StatusCode::NO_CONTENT),
            Operation::Inventory => json_answer(
                StatusCode::OK,
                &json!({
                    "sku": call.path_key,
                    "status": "ACCEPTED",
                    "submissionId": uuid::Uuid::new_v4().simple().to_string(),
                    "issues": [],
                }),
            ),
        }
    }

    fn refusal(refusal: &Refusal) -> Answer {
        let (code, message, details) = match refusal {
            Refusal::NotFound(what) => ("NotFound", "Resource not found.", what.clone()),
            Refusal::Unauthorized(why) => (
                "Unauthorized",
                "Access to requested resource is denied.",
                format!("The access token you provided is not valid: {why}."),
            ),
            Refusal::Invalid(errors) => ("InvalidInput", "Invalid input.", errors.join("; ")),
            Refusal::Throttled => (
                "QuotaExceeded",
                "You exceeded your quota for the requested resource.",
                String::new(),
            ),
            Refusal::Down => (
                "ServiceUnavailable",
                "Service is temporarily unavailable.",
                String::new(),
            ),
        };
        json_answer(
            refusal.status(),
            &json!({"errors": [{"code": code, "message": message, "details": details}]}),
        )
    }

    fn rate_headers(answer: &mut Answer, verdict: &Verdict, _throttled: bool) {
        set_header(
            answer,
            "x-amzn-RateLimit-Limit",
            &rate_text(verdict.limit.rate),
        );
    }

    fn token_grant(shared: &Shared, _parts: &Parts, form: &HashMap<String, String>) -> GrantResult {
        expect_grant(form, "refresh_token")?;
        expect_client(
            form.get("client_id").map(String::as_str),
            form.get("client_secret").map(String::as_str),
            shared,
            Channel::Amazon,
        )?;
        expect_refresh_token(form, shared, Channel::Amazon)
    }

    fn token_answer(token: &str, expires_in: u64) -> Value {
        json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": expires_in,
        })
    }
}

/// Amazon writes its rates as decimals: `2.0`, `0.0167`.
fn rate_text(rate: f64) -> String {
    if rate.fract() == 0.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate}")
    }
}
