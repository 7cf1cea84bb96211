//! eBay Sell APIs: createShippingFulfillment, bulkUpdatePriceQuantity, and the OAuth token
//! endpoint (refresh-token grant, or client credentials for an application token, with Basic
//! client auth; and the Notification API's getPublicKey with the keys of `ebay_keys`). `Authorization: Bearer`; errors
//! `{"errors":[{errorId, domain, category, message}]}`; a plain 429 (eBay has daily quotas
//! and documents no rate headers).

use std::collections::HashMap;

use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

use crate::channel::{Channel, Operation};
use crate::ebay_keys;
use crate::limits::Verdict;
use crate::market::{
    Call, GrantResult, Market, Refusal, basic_auth, expect_client, expect_grant,
    expect_refresh_token, header,
};
use crate::records::Counter;
use crate::response::{Answer, empty, json as json_answer, set_header};
use crate::state::Shared;
use crate::tokens::TokenCheck;

pub(crate) struct Ebay;

/// The token endpoint.
pub(crate) const TOKEN_PATH: &str = "/identity/v1/oauth2/token";

impl Market for Ebay {
    const CHANNEL: Channel = Channel::Ebay;

    fn endpoint(method: &Method, segments: &[String]) -> Option<(Operation, Option<String>)> {
        match (method, segments) {
            (&Method::POST, [sell, fulfillment, v1, order, order_id, shipping])
                if sell == "sell"
                    && fulfillment == "fulfillment"
                    && v1 == "v1"
                    && order == "order"
                    && shipping == "shipping_fulfillment" =>
            {
                Some((Operation::Shipment, Some(order_id.clone())))
            }
            (&Method::POST, [sell, inventory, v1, bulk])
                if sell == "sell"
                    && inventory == "inventory"
                    && v1 == "v1"
                    && bulk == "bulk_update_price_quantity" =>
            {
                Some((Operation::Inventory, None))
            }
            _ => None,
        }
    }

    fn credential(headers: &HeaderMap) -> Result<Option<String>, Vec<String>> {
        Ok(header(headers, "authorization").and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        }))
    }

    fn accept(call: &Call, body: &Value) -> Result<(String, Option<i64>), Vec<String>> {
        match call.operation {
            Operation::Shipment => Ok((call.path_key.clone().unwrap_or_default(), None)),
            Operation::Inventory => {
                let first = &body["requests"][0];
                let Some(sku) = first["sku"].as_str() else {
                    return Err(vec!["/requests/0/sku: a SKU is required".to_owned()]);
                };
                Ok((
                    sku.to_owned(),
                    first["shipToLocationAvailability"]["quantity"].as_i64(),
                ))
            }
        }
    }

    fn success(call: &Call, body: &Value) -> Answer {
        match call.operation {
            Operation::Shipment => {
                let path = format!(
                    "/sell/fulfillment/v1/order/{}/shipping_fulfillment/{}",
                    call.path_key.as_deref().unwrap_or_default(),
                    uuid::Uuid::new_v4().simple()
                );
                let location = match &call.host {
                    Some(host) => format!("http://{host}{path}"),
                    None => path,
                };
                let mut answer = empty(StatusCode::CREATED);
                set_header(&mut answer, "location", &location);
                answer
            }
            Operation::Inventory => {
                let responses: Vec<Value> = body["requests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| json!({"statusCode": 200, "sku": r["sku"], "errors": [], "warnings": []}))
                    .collect();
                json_answer(StatusCode::OK, &json!({"responses": responses}))
            }
        }
    }

    fn refusal(refusal: &Refusal) -> Answer {
        let (id, domain, category, message) = match refusal {
            Refusal::NotFound(what) => (2002, "API_FULFILLMENT", "REQUEST", what.clone()),
            Refusal::Unauthorized(why) => (
                1001,
                "OAuth",
                "REQUEST",
                format!("Invalid access token: {why}"),
            ),
            Refusal::Invalid(errors) => (32100, "API_FULFILLMENT", "REQUEST", errors.join("; ")),
            Refusal::Throttled => (
                2001,
                "ACCESS",
                "REQUEST",
                "Too many requests. The request limit has been reached for the resource."
                    .to_owned(),
            ),
            Refusal::Down => (
                2003,
                "ACCESS",
                "APPLICATION",
                "There was a problem with an eBay internal system or process.".to_owned(),
            ),
        };
        json_answer(
            refusal.status(),
            &json!({"errors": [{
                "errorId": id,
                "domain": domain,
                "category": category,
                "message": message,
            }]}),
        )
    }

    fn rate_headers(_answer: &mut Answer, _verdict: &Verdict, _throttled: bool) {}

    fn token_grant(shared: &Shared, parts: &Parts, form: &HashMap<String, String>) -> GrantResult {
        let (id, secret) = basic_auth(&parts.headers).unzip();
        expect_client(id.as_deref(), secret.as_deref(), shared, Channel::Ebay)?;
        // an application token (client credentials, e.g. for the Notification API's
        // getPublicKey) or a user token (refresh token, for the Sell APIs)
        if form.get("grant_type").map(String::as_str) == Some("client_credentials") {
            return Ok(());
        }
        expect_grant(form, "refresh_token")?;
        expect_refresh_token(form, shared, Channel::Ebay)
    }

    fn token_answer(token: &str, expires_in: u64) -> Value {
        json!({
            "access_token": token,
            "token_type": "User Access Token",
            "expires_in": expires_in,
        })
    }
}

/// Serves `getPublicKey` (the channel is up; `path` starts with [`ebay_keys::KEY_PATH`]).
pub(crate) fn get_public_key(shared: &Shared, parts: &Parts, path: &str) -> Answer {
    shared.ebay_keys.count_fetch();
    if parts.method != Method::GET {
        return <Ebay as Market>::refusal(&Refusal::NotFound(format!(
            "no eBay endpoint {} {path}",
            parts.method
        )));
    }
    let token = match <Ebay as Market>::credential(&parts.headers) {
        Ok(Some(token)) => token,
        _ => {
            shared.counters.bump(Channel::Ebay, Counter::Unauthorized);
            return <Ebay as Market>::refusal(&Refusal::Unauthorized("no bearer token"));
        }
    };
    match shared.tokens.check(Channel::Ebay, &token) {
        TokenCheck::Valid => {}
        check => {
            if check == TokenCheck::Expired {
                shared
                    .counters
                    .bump(Channel::Ebay, Counter::ExpiredTokenSeen);
            }
            shared.counters.bump(Channel::Ebay, Counter::Unauthorized);
            return <Ebay as Market>::refusal(&Refusal::Unauthorized("the token is not valid"));
        }
    }
    let kid = path.strip_prefix(ebay_keys::KEY_PATH).unwrap_or_default();
    match shared.ebay_keys.public_pem(kid) {
        Some(pem) => json_answer(
            StatusCode::OK,
            &json!({"key": pem, "algorithm": "ECDSA", "digest": "SHA1"}),
        ),
        None => json_answer(
            StatusCode::NOT_FOUND,
            &json!({"errors": [{
                // the simulator's own error id and text
                "errorId": 195001,
                "domain": "API_NOTIFICATION",
                "category": "REQUEST",
                "message": "The specified public key id was not found.",
            }]}),
        ),
    }
}
