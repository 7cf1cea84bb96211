//! The control API under `/_sim/`: records, counters, channels down and up, tokens revoked or
//! expired, limits read and replaced, reset. Never recorded nor counted.

use std::collections::BTreeMap;

use http::request::Parts;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::channel::{Channel, Operation};
use crate::options::Limit;
use crate::response::{Answer, empty, json as json_answer};
use crate::state::Shared;

pub(crate) fn handle(shared: &Shared, parts: &Parts, body: &[u8]) -> Answer {
    let path = parts.uri.path().trim_end_matches('/');
    let rest = path.strip_prefix("/_sim/").unwrap_or_default();
    let segments: Vec<&str> = rest.split('/').collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["records"]) => match serde_json::to_value(shared.records.snapshot()) {
            Ok(records) => json_answer(StatusCode::OK, &records),
            Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
        },
        (&Method::GET, ["inventory"]) => match serde_json::to_value(shared.records.inventory()) {
            Ok(levels) => json_answer(StatusCode::OK, &levels),
            Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
        },
        (&Method::GET, ["stats"]) => match serde_json::to_value(shared.counters.all()) {
            Ok(stats) => json_answer(StatusCode::OK, &stats),
            Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
        },
        (&Method::POST, ["reset"]) => {
            shared.reset();
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["tokens", "revoke"]) => json_answer(
            StatusCode::OK,
            &json!({"revoked": shared.tokens.revoke_all()}),
        ),
        (&Method::POST, ["tokens", "expire"]) => json_answer(
            StatusCode::OK,
            &json!({"expired": shared.tokens.expire_all()}),
        ),
        (&Method::POST, ["ebay", "sign"]) => json_answer(
            StatusCode::OK,
            &json!({"x-ebay-signature": shared.ebay_keys.sign(body)}),
        ),
        (&Method::POST, ["ebay", "rotate-key"]) => {
            json_answer(StatusCode::OK, &json!({"kid": shared.ebay_keys.rotate()}))
        }
        (&Method::GET, ["ebay", "keys"]) => json_answer(
            StatusCode::OK,
            &json!({"kid": shared.ebay_keys.current_kid(), "fetches": shared.ebay_keys.fetches()}),
        ),
        (method, [channel, action]) => {
            let Ok(channel) = channel.parse::<Channel>() else {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("no control endpoint {path}"),
                );
            };
            match (method, *action) {
                (&Method::POST, "down") => {
                    shared.set_down(channel, true);
                    json_answer(StatusCode::OK, &json!({"channel": channel, "down": true}))
                }
                (&Method::POST, "up") => {
                    shared.set_down(channel, false);
                    json_answer(StatusCode::OK, &json!({"channel": channel, "down": false}))
                }
                (&Method::GET, "limits") => json_answer(StatusCode::OK, &limits(shared, channel)),
                (&Method::PUT, "limits") => set_limits(shared, channel, body),
                _ => error(
                    StatusCode::NOT_FOUND,
                    &format!("no control endpoint {} {path}", parts.method),
                ),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no control endpoint {} {path}", parts.method),
        ),
    }
}

fn limits(shared: &Shared, channel: Channel) -> Value {
    let map: BTreeMap<Operation, Limit> = Operation::ALL
        .into_iter()
        .map(|op| (op, shared.limits.get(channel, op)))
        .collect();
    serde_json::to_value(map).unwrap_or(Value::Null)
}

/// `{operation: {rate, burst}}`: every named bucket gets the new limit and starts full; all
/// are checked before any is changed.
fn set_limits(shared: &Shared, channel: Channel, body: &[u8]) -> Answer {
    let wanted: BTreeMap<Operation, Limit> = match serde_json::from_slice(body) {
        Ok(wanted) => wanted,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "expected {{\"shipment\"|\"inventory\": {{\"rate\": number, \"burst\": integer}}}}: {err}"
                ),
            );
        }
    };
    for (operation, limit) in &wanted {
        if let Err(err) = limit.validate() {
            return error(StatusCode::BAD_REQUEST, &format!("{operation}: {err}"));
        }
    }
    for (operation, limit) in wanted {
        shared.limits.set(channel, operation, limit);
    }
    json_answer(StatusCode::OK, &limits(shared, channel))
}

fn error(status: StatusCode, message: &str) -> Answer {
    json_answer(status, &json!({"error": message}))
}
