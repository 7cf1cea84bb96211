//! Request dispatch: the `/_sim/` control API, the token endpoints, and each marketplace's API
//! by its path prefix (the four marketplaces' paths do not collide).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use crate::amazon::{self, Amazon};
use crate::channel::Channel;
use crate::control;
use crate::ebay::{self, Ebay};
use crate::ebay_keys;
use crate::market::{self, Market, Refusal, percent_decode};
use crate::records::Counter;
use crate::response::{Answer, json as json_answer};
use crate::shopify::Shopify;
use crate::state::Shared;
use crate::walmart::{self, Walmart};

/// Bodies larger than this are refused (413): outbound calls carry one event.
const BODY_LIMIT: usize = 1024 * 1024;

/// The hyper service.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Answer, Infallible> {
    let (parts, body) = request.into_parts();
    let body: Bytes = match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            return Ok(json_answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": format!("the body could not be read: {err}")}),
            ));
        }
    };
    let path = parts.uri.path();
    if path == "/_sim" || path.starts_with("/_sim/") {
        return Ok(control::handle(&shared, &parts, &body));
    }
    if path.starts_with(ebay_keys::KEY_PATH) {
        if shared.is_down(Channel::Ebay) {
            shared.counters.bump(Channel::Ebay, Counter::Down);
            return Ok(down(Channel::Ebay));
        }
        return Ok(ebay::get_public_key(&shared, &parts, path));
    }
    let Some((channel, is_token)) = channel_of(path) else {
        return Ok(json_answer(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no marketplace serves {path}")}),
        ));
    };
    if shared.is_down(channel) {
        shared.counters.bump(channel, Counter::Down);
        return Ok(down(channel));
    }
    let answer = if is_token {
        match channel {
            Channel::Amazon => market::token::<Amazon>(&shared, &parts, &body),
            Channel::Walmart => market::token::<Walmart>(&shared, &parts, &body),
            Channel::Ebay => market::token::<Ebay>(&shared, &parts, &body),
            Channel::Shopify => market::token::<Shopify>(&shared, &parts, &body),
        }
    } else {
        let Some(segments) = segments(path) else {
            return Ok(json_answer(
                StatusCode::BAD_REQUEST,
                &json!({"error": "the path is not UTF-8 once percent-decoded"}),
            ));
        };
        match channel {
            Channel::Amazon => market::api::<Amazon>(&shared, &parts, &segments, &body),
            Channel::Walmart => market::api::<Walmart>(&shared, &parts, &segments, &body),
            Channel::Ebay => market::api::<Ebay>(&shared, &parts, &segments, &body),
            Channel::Shopify => market::api::<Shopify>(&shared, &parts, &segments, &body),
        }
    };
    Ok(answer)
}

/// Which marketplace serves `path`, and whether it is its token endpoint.
fn channel_of(path: &str) -> Option<(Channel, bool)> {
    let prefixes: [(&str, Channel); 5] = [
        ("/orders/v0/", Channel::Amazon),
        ("/listings/", Channel::Amazon),
        ("/v3/", Channel::Walmart),
        ("/sell/", Channel::Ebay),
        ("/admin/api/", Channel::Shopify),
    ];
    match path {
        amazon::TOKEN_PATH => Some((Channel::Amazon, true)),
        walmart::TOKEN_PATH => Some((Channel::Walmart, true)),
        ebay::TOKEN_PATH => Some((Channel::Ebay, true)),
        _ => prefixes
            .into_iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map(|(_, channel)| (channel, false)),
    }
}

/// The percent-decoded segments after the leading `/`.
fn segments(path: &str) -> Option<Vec<String>> {
    path.trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect()
}

fn down(channel: Channel) -> Answer {
    let refusal = Refusal::Down;
    match channel {
        Channel::Amazon => Amazon::refusal(&refusal),
        Channel::Walmart => Walmart::refusal(&refusal),
        Channel::Ebay => Ebay::refusal(&refusal),
        Channel::Shopify => Shopify::refusal(&refusal),
    }
}
