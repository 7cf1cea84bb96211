//! No marketplace document with one field left out is answered 5xx (issue 11). The shipped
//! example policy set (policies/files/gateway.yaml, with raised rate limits) is served by the
//! real binary in front of the ERP simulator; every golden input of every channel route, with
//! each of its fields removed in turn (every object member at any depth; of an array, the
//! members of its first element), is posted to its route. Each answer must be a 2xx, or a 422
//! problem+json from the channel schema or the mapping, and only the 2xx reach the ERP.
//!
//! `cargo test -p transforms --test missing_fields` runs the same sweep in process and names
//! the failing mapping; this one proves the whole route answers as it should.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use erp_sim::ErpSim;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tests::{Gateway, Start, gateway_binary, workspace_root};

/// The documents a channel route carries: (golden-case folder, route, token scope). A
/// channel's golden cases of another document (Amazon's `order_change`) have no route in the
/// example set.
const ROUTES: [(&str, &str, &str); 4] = [
    ("order", "orders", "orders:write"),
    ("inventory_adjustment", "inventory", "inventory:write"),
    ("shipment", "shipments", "shipments:write"),
    ("return", "returns", "returns:write"),
];

const CHANNELS: [&str; 4] = ["amazon", "walmart", "ebay", "shopify"];

/// Requests in flight at once: enough to keep both gateway threads busy on a shared machine.
const CONCURRENCY: usize = 16;

const SHOP: (&str, &str) = ("x-shopify-shop-domain", "example.myshopify.com");

/// Every `<key>: <digits>` in the text with the digits replaced by `value`; how many were.
fn replace_numbers(text: &str, key: &str, value: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut count = 0;
    while let Some(at) = rest.find(key) {
        let (before, after) = rest.split_at(at + key.len());
        out.push_str(before);
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            out.push_str(value);
            count += 1;
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    (out, count)
}

/// The example file pointed at `sim`, its relative paths made absolute, and its channel rate
/// limits raised so the sweep's thousands of requests are not refused as too many.
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
    let (replaced, rates) = replace_numbers(&replaced, " rate: ", "100000");
    let (replaced, bursts) = replace_numbers(&replaced, " burst: ", "100000");
    assert!(
        rates >= 4 && bursts >= 3,
        "the example's rate limits were not found ({rates} rates, {bursts} bursts)"
    );
    replaced
}

/// A development token from `gateway token`.
fn token(channel: &str, scope: &str) -> String {
    let out = Command::new(gateway_binary().unwrap())
        .current_dir(workspace_root())
        .args(["token", "--channel", channel, "--scope", scope])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    format!("Bearer {}", String::from_utf8(out.stdout).unwrap().trim())
}

/// RFC 6901 escaping of one reference token.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The pointer of every object member at any depth; of an array, only its first element's.
fn member_pointers(value: &Value, at: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                let pointer = format!("{at}/{}", escape(key));
                found.push(pointer.clone());
                member_pointers(member, &pointer, found);
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first() {
                member_pointers(first, &format!("{at}/0"), found);
            }
        }
        _ => {}
    }
}

/// The document without the member at `pointer`.
fn without(document: &Value, pointer: &str) -> Value {
    let mut copy = document.clone();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let key = key.replace("~1", "/").replace("~0", "~");
    let removed = copy
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|members| members.remove(&key));
    assert!(removed.is_some(), "nothing to remove at {pointer}");
    copy
}

/// One request of the sweep.
struct Probe {
    /// `<channel>/<document>/<case> without <pointer>` (or `as is`), for failure messages.
    what: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// The Shopify webhook signature of a body (`X-Shopify-Hmac-Sha256`).
fn shopify_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Every golden input (as is, then without each field) of every channel route, plus the
/// Shopify orders again on the signed webhook route.
fn probes() -> Vec<Probe> {
    let root = workspace_root();
    let secret = std::fs::read_to_string(root.join("certs/dev-shopify-webhook.secret")).unwrap();
    let secret = secret.trim_end();
    let mut tokens = HashMap::new();
    let mut probes = Vec::new();
    let mut key = 0;
    for channel in CHANNELS {
        for (document, route, scope) in ROUTES {
            let dir = root
                .join("transforms/mappings")
                .join(channel)
                .join("cases")
                .join(document);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut inputs: Vec<_> = entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(".input.json"))
                // A case that expects a rejection (`{"$rejected": ...}`) is no accepted
                // baseline to remove fields from.
                .filter(|p| {
                    let expected = p.to_string_lossy().replace(".input.json", ".expected.json");
                    std::fs::read(expected)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                        .is_none_or(|e| e.get("$rejected").is_none())
                })
                .collect();
            inputs.sort();
            let auth: &String = tokens
                .entry((channel, scope))
                .or_insert_with(|| token(channel, scope));
            for input in inputs {
                let case = input.file_name().unwrap().to_string_lossy().into_owned();
                let golden: Value =
                    serde_json::from_slice(&std::fs::read(&input).unwrap()).unwrap();
                let mut pointers = Vec::new();
                member_pointers(&golden, "", &mut pointers);
                let variants = std::iter::once(("as is".to_owned(), golden.clone())).chain(
                    pointers
                        .into_iter()
                        .map(|p| (format!("without {p}"), without(&golden, &p))),
                );
                for (how, body) in variants {
                    let body = serde_json::to_vec(&body).unwrap();
                    let what = format!("{channel}/{document}/{case} {how}");
                    key += 1;
                    probes.push(Probe {
                        what: what.clone(),
                        path: format!("/channels/{channel}/{route}"),
                        headers: vec![
                            ("authorization".into(), auth.clone()),
                            (
                                "idempotency-key".into(),
                                format!("\"missing-fields-{key}\""),
                            ),
                            (SHOP.0.into(), SHOP.1.into()),
                        ],
                        body: body.clone(),
                    });
                    if (channel, document) == ("shopify", "order") {
                        key += 1;
                        probes.push(Probe {
                            what: format!("{what} (webhook)"),
                            path: "/webhooks/shopify/orders".into(),
                            headers: vec![
                                (
                                    "x-shopify-hmac-sha256".into(),
                                    shopify_signature(secret, &body),
                                ),
                                (
                                    "x-shopify-webhook-id".into(),
                                    format!("missing-fields-{key}"),
                                ),
                                (SHOP.0.into(), SHOP.1.into()),
                            ],
                            body,
                        });
                    }
                }
            }
        }
    }
    probes
}

/// How the gateway answered one probe.
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

async fn send(client: &reqwest::Client, gw: &Gateway, probe: &Probe) -> Answer {
    let mut req = client
        .post(gw.url(&probe.path))
        .header("content-type", "application/json")
        .body(probe.body.clone());
    for (name, value) in &probe.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_golden_input_with_one_field_removed_is_answered_5xx() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start_with(
        &example_file(&sim),
        Start {
            https: true,
            ..Start::default()
        },
    )
    .unwrap();
    let probes = probes();
    assert!(probes.len() > 1500, "only {} probes", probes.len());

    let client = reqwest::Client::new();
    let gw = Arc::new(gw);
    let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, probe) in probes.into_iter().enumerate() {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (client, gw) = (client.clone(), gw.clone());
        tasks.spawn(async move {
            let answer = send(&client, &gw, &probe).await;
            drop(permit);
            (i, probe.what, answer)
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = tasks.join_next().await {
        answers.push(done.unwrap());
    }
    answers.sort_by_key(|(i, _, _)| *i);

    let mut wrong = Vec::new();
    let (mut accepted, mut by_schema, mut by_mapping) = (0u64, 0, 0);
    for (_, what, answer) in &answers {
        let problem_type = answer.body["type"].as_str().unwrap_or_default();
        match answer.status {
            200..=299 => accepted += 1,
            422 if answer.content_type.starts_with("application/problem+json")
                && problem_type == "urn:gateway:problem:schema-violation" =>
            {
                by_schema += 1
            }
            422 if answer.content_type.starts_with("application/problem+json")
                && problem_type == "urn:gateway:problem:unmappable-document" =>
            {
                by_mapping += 1
            }
            status => wrong.push(format!("{what}: {status} {}", answer.body)),
        }
        // The unchanged golden input is the baseline every variant is measured against.
        if what.contains(" as is") && !(200..300).contains(&answer.status) {
            wrong.push(format!("{what} is not accepted: {}", answer.body));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} answers are neither 2xx nor a 422 problem:\n{}",
        wrong.len(),
        answers.len(),
        wrong.join("\n")
    );
    // The sweep reaches all three outcomes, and what was refused never reached the ERP.
    assert!(
        accepted > 0 && by_schema > 0 && by_mapping > 0,
        "{accepted} accepted, {by_schema} refused by a schema, {by_mapping} by a mapping"
    );
    assert_eq!(sim.requests_started(), accepted);
}

#[test]
fn numbers_after_a_key_are_replaced_and_counted() {
    let (text, count) = replace_numbers(
        "limits: [{ rate: 10, per: 1s, burst: 20 }, { rate: 5 }]\n  x_rate: 3",
        " rate: ",
        "99",
    );
    assert_eq!(
        text,
        "limits: [{ rate: 99, per: 1s, burst: 20 }, { rate: 99 }]\n  x_rate: 3"
    );
    assert_eq!(count, 2);
}
