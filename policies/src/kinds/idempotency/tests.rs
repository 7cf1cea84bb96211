//! Unit tests of the `idempotency` policy: the phases driven with plain values, the in-process
//! store on a manual clock, keys, fingerprints and compile errors.

use std::path::Path;
use std::time::Duration;

use http::HeaderMap;
use serde_json::json;

use super::*;
use crate::clock::ManualClock;
use crate::compile::compile_str;
use crate::env::CompileEnv;
use crate::kinds::{Policy, PolicyMetrics};
use crate::model::PolicySet;
use crate::pipeline::Channel;
use crate::route::PathParams;

struct Harness {
    clock: Arc<ManualClock>,
    env: CompileEnv,
}

fn harness() -> Harness {
    let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_000)));
    let env = CompileEnv {
        clock: clock.clone(),
        metrics: Arc::new(PolicyMetrics::default()),
        ..CompileEnv::default()
    };
    Harness { clock, env }
}

fn file(policies: &str, redis: &str) -> String {
    format!(
        "version: 1\nchannels: {{amazon: {{}}, shopify: {{}}}}\n{redis}upstreams:\n  erp: {{endpoints: [\"127.0.0.1:9\"]}}\npolicies:\n{policies}routes: []\n"
    )
}

impl Harness {
    fn compile(&self, policies: &str, previous: Option<&PolicySet>) -> PolicySet {
        self.compile_with(policies, "", previous)
    }

    fn compile_with(&self, policies: &str, redis: &str, previous: Option<&PolicySet>) -> PolicySet {
        compile_str(
            Path::new("p.yaml"),
            &file(policies, redis),
            &self.env,
            previous,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(&self, policies: &str) -> String {
        match compile_str(Path::new("p.yaml"), &file(policies, ""), &self.env, None) {
            Ok(_) => String::new(),
            Err(e) => {
                e.0.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    }

    fn outcome(&self, policy: &str, outcome: &str) -> u64 {
        self.env
            .metrics
            .idempotency
            .outcomes
            .with_label_values(&[policy, outcome])
            .get()
    }
}

fn idem<'a>(set: &'a PolicySet, name: &str) -> &'a Idempotency {
    match &set.policies[name].policy {
        Policy::Idempotency(p) => p,
        other => panic!("not an idempotency policy: {other:?}"),
    }
}

/// What the client got for one request, as far as the policy decides it.
#[derive(Debug)]
enum Answer {
    /// Let through (the state carries the claim, if any).
    Forward(ExchangeState),
    /// Answered by the policy.
    Reply(Reply, ExchangeState),
}

impl Answer {
    fn status(&self) -> u16 {
        match self {
            Answer::Forward(_) => 0,
            Answer::Reply(r, _) => r.status.as_u16(),
        }
    }

    fn reply(&self) -> &Reply {
        match self {
            Answer::Reply(r, _) => r,
            Answer::Forward(_) => panic!("forwarded"),
        }
    }

    fn slug(&self) -> &'static str {
        match &self.reply().body {
            ReplyBody::Problem(p) => p.slug,
            ReplyBody::Bytes { .. } => "",
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.reply()
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_str().unwrap().to_owned())
    }

    fn state(self) -> ExchangeState {
        match self {
            Answer::Forward(s) | Answer::Reply(_, s) => s,
        }
    }
}

async fn send(p: &Idempotency, channel: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let params = PathParams::default();
    let view = RequestView {
        method: &http::Method::POST,
        path: "/channels/amazon/orders",
        query: None,
        headers: &map,
        params: &params,
    };
    let mut state = ExchangeState {
        channel: Some(Channel {
            index: usize::from(channel == "shopify"),
            name: channel.into(),
        }),
        route: Some("orders".into()),
        ..ExchangeState::default()
    };
    if let Flow::Break(r) = p.on_request(&view, &mut state).await {
        return Answer::Reply(r, state);
    }
    let mut body = Bytes::copy_from_slice(body.as_bytes());
    match p.on_request_body(&view, &mut state, &mut body).await {
        Flow::Break(r) => Answer::Reply(r, state),
        Flow::Continue(()) => Answer::Forward(state),
    }
}

/// Completes a forwarded request as if the upstream answered `status` with `body`.
async fn answer(p: &Idempotency, a: Answer, status: u16, body: &'static str) {
    let mut state = a.state();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("location", HeaderValue::from_static("/erp/v1/orders/SO-1"));
    headers.insert("set-cookie", HeaderValue::from_static("session=secret"));
    headers.insert("x-request-id", HeaderValue::from_static("r-first"));
    let resp_body = Bytes::from_static(body.as_bytes());
    let done = Completion {
        status,
        forwarded: true,
        headers: Some(&headers),
        body: Some(&resp_body),
    };
    p.on_complete(&done, &mut state).await;
}

/// Completes a request that never reached the upstream.
async fn not_forwarded(p: &Idempotency, a: Answer) {
    let mut state = a.state();
    let done = Completion {
        status: 422,
        forwarded: false,
        headers: None,
        body: None,
    };
    p.on_complete(&done, &mut state).await;
}

const KEYED: &str = "  idem:\n    kind: idempotency\n    ttl: 1h\n    lease: 30s\n";
const K1: (&str, &str) = (
    "idempotency-key",
    "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"",
);

#[tokio::test]
async fn the_first_request_goes_through_and_repeats_are_replayed_until_the_ttl() {
    let h = harness();
    let set = h.compile(KEYED, None);
    let p = idem(&set, "idem");
    let body = r#"{"order": "A-1", "total": "10.00"}"#;

    let first = send(p, "amazon", &[K1], body).await;
    assert_eq!(first.status(), 0, "{first:?}");
    // while it is in flight, a repeat is 409 with the lease left
    let busy = send(p, "amazon", &[K1], body).await;
    assert_eq!(
        (busy.status(), busy.slug()),
        (409, "idempotency-key-in-use")
    );
    assert_eq!(busy.header("retry-after").as_deref(), Some("30"));
    answer(p, first, 201, r#"{"id":"SO-1"}"#).await;
    assert_eq!(h.outcome("idem", "stored"), 1);

    // the same body, keys in another order and other whitespace: the stored answer
    h.clock.advance(Duration::from_secs(3599));
    let again = send(p, "amazon", &[K1], r#"{ "total":"10.00","order":"A-1" }"#).await;
    let r = again.reply();
    assert_eq!(r.status, 201);
    assert_eq!(r.reason, "replayed");
    assert!(!r.is_rejection());
    assert_eq!(
        r.body,
        ReplyBody::Bytes {
            content_type: None,
            body: Bytes::from_static(br#"{"id":"SO-1"}"#)
        }
    );
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(
        again.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        again.header("location").as_deref(),
        Some("/erp/v1/orders/SO-1")
    );
    assert_eq!(again.header("set-cookie"), None, "never stored");
    assert_eq!(again.header("x-request-id"), None, "per request");
    assert_eq!(
        again
            .state()
            .response_headers
            .get("idempotency-policy")
            .unwrap(),
        "ttl=3600, lease=30"
    );
    assert_eq!(h.outcome("idem", "replayed"), 1);

    // a different body with the key: 422
    let changed = send(p, "amazon", &[K1], r#"{"order": "A-1", "total": "11.00"}"#).await;
    assert_eq!(
        (changed.status(), changed.slug()),
        (422, "idempotency-key-reused")
    );
    assert_eq!(h.outcome("idem", "mismatch"), 1);

    // the key is scoped by channel: the same key from another channel is another key
    assert_eq!(send(p, "shopify", &[K1], body).await.status(), 0);

    // after the TTL the key is new again
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(send(p, "amazon", &[K1], body).await.status(), 0);
    assert_eq!(h.outcome("idem", "conflict"), 1);
}

#[tokio::test]
async fn a_lease_runs_out_and_a_request_that_never_left_releases_its_key() {
    let h = harness();
    let set = h.compile(KEYED, None);
    let p = idem(&set, "idem");
    let crashed = send(p, "amazon", &[K1], "{}").await;
    assert_eq!(crashed.status(), 0);
    drop(crashed); // never completes, like an instance that died
    h.clock.advance(Duration::from_millis(29_999));
    assert_eq!(send(p, "amazon", &[K1], "{}").await.status(), 409);
    h.clock.advance(Duration::from_millis(1));
    let next = send(p, "amazon", &[K1], "{}").await;
    assert_eq!(next.status(), 0);
    // refused by a later policy: nothing reached the upstream, so nothing is stored
    not_forwarded(p, next).await;
    assert_eq!(h.outcome("idem", "released"), 1);
    assert_eq!(send(p, "amazon", &[K1], "{}").await.status(), 0);
}

#[tokio::test]
async fn upstream_errors_release_the_key_or_are_stored_per_policy() {
    let h = harness();
    let set = h.compile(
        &format!("{KEYED}  stored:\n    kind: idempotency\n    on_upstream_error: store\n"),
        None,
    );
    let release = idem(&set, "idem");
    let a = send(release, "amazon", &[K1], "{}").await;
    answer(release, a, 503, "down").await;
    let retry = send(release, "amazon", &[K1], "{}").await;
    assert_eq!(retry.status(), 0, "released: the retry goes upstream");
    answer(release, retry, 201, "ok").await;
    assert_eq!(send(release, "amazon", &[K1], "{}").await.status(), 201);

    let store = idem(&set, "stored");
    let a = send(store, "amazon", &[K1], "{}").await;
    answer(store, a, 504, "timeout").await;
    let replay = send(store, "amazon", &[K1], "{}").await;
    assert_eq!(replay.status(), 504);
    assert_eq!(replay.reply().reason, "replayed");
}

#[tokio::test]
async fn keys_are_required_well_formed_and_bounded() {
    let h = harness();
    let set = h.compile(
        &format!("{KEYED}  optional:\n    kind: idempotency\n    required: false\n"),
        None,
    );
    let p = idem(&set, "idem");
    let missing = send(p, "amazon", &[], "{}").await;
    assert_eq!(
        (missing.status(), missing.slug()),
        (400, "idempotency-key-missing")
    );
    assert_eq!(h.outcome("idem", "missing"), 1);
    let long = format!("\"{}\"", "k".repeat(256));
    for bad in [
        "\"unterminated",
        "\"a\\b\"",
        "two words",
        "\"\"",
        long.as_str(),
    ] {
        let a = send(p, "amazon", &[("idempotency-key", bad)], "{}").await;
        assert_eq!(
            (a.status(), a.slug()),
            (400, "invalid-idempotency-key"),
            "{bad}"
        );
    }
    let twice = send(p, "amazon", &[K1, K1], "{}").await;
    assert_eq!(twice.status(), 400);
    // 255 characters are fine; a bare value is taken as the same key as its quoted form
    let max = format!("\"{}\"", "k".repeat(255));
    assert_eq!(
        send(p, "amazon", &[("idempotency-key", &max)], "{}")
            .await
            .status(),
        0
    );
    let quoted = send(p, "amazon", &[("idempotency-key", "\"abc-1\"")], "{}").await;
    answer(p, quoted, 200, "x").await;
    let bare = send(p, "amazon", &[("idempotency-key", "abc-1")], "{}").await;
    assert_eq!(bare.status(), 200);

    let optional = idem(&set, "optional");
    assert_eq!(send(optional, "amazon", &[], "{}").await.status(), 0);
    assert_eq!(h.outcome("optional", "skipped"), 1);
}

#[test]
fn sf_strings_follow_rfc_8941_with_bare_values_accepted() {
    let ok = |raw: &str| parse_sf_string(raw.as_bytes()).map(|c| c.into_owned());
    assert_eq!(ok("\"abc\"").as_deref(), Some("abc"));
    assert_eq!(ok(" \"a b\" ").as_deref(), Some("a b"));
    assert_eq!(
        ok(r#""say \"hi\" \\ o/""#).as_deref(),
        Some(r#"say "hi" \ o/"#)
    );
    assert_eq!(ok("8e03978e-40d5").as_deref(), Some("8e03978e-40d5"));
    for bad in ["\"a", "\"a\\x\"", "\"a\"b\"", "a b", "a,b", "\"caf\u{e9}\""] {
        assert_eq!(ok(bad), None, "{bad}");
    }
}

#[tokio::test]
async fn shopify_webhook_ids_and_body_values_are_keys() {
    let h = harness();
    let set = h.compile(
        "  shopify:\n    kind: idempotency\n    key: {header: X-Shopify-Webhook-Id}\n  amazon:\n    kind: idempotency\n    key: {body: [/AmazonOrderId, /LastUpdateDate]}\n",
        None,
    );
    let shopify = idem(&set, "shopify");
    let hook = [(
        "x-shopify-webhook-id",
        "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
    )];
    let first = send(shopify, "shopify", &hook, r#"{"id":1}"#).await;
    answer(shopify, first, 201, "created").await;
    assert_eq!(
        send(shopify, "shopify", &hook, r#"{"id":1}"#)
            .await
            .status(),
        201
    );
    assert_eq!(send(shopify, "shopify", &[], "{}").await.status(), 400);

    let amazon = idem(&set, "amazon");
    let v1 = r#"{"AmazonOrderId":"111-222","LastUpdateDate":"2024-11-28T12:00:00Z","x":1}"#;
    let first = send(amazon, "amazon", &[], v1).await;
    answer(amazon, first, 201, "created").await;
    // the same order at the same update: the replay (any header is irrelevant)
    assert_eq!(send(amazon, "amazon", &[K1], v1).await.status(), 201);
    // a later update of the same order is a new key
    let v2 = r#"{"AmazonOrderId":"111-222","LastUpdateDate":"2024-11-28T13:00:00Z","x":1}"#;
    assert_eq!(send(amazon, "amazon", &[], v2).await.status(), 0);
    let no_date = send(amazon, "amazon", &[], r#"{"AmazonOrderId":"111-222"}"#).await;
    assert_eq!(
        (no_date.status(), no_date.slug()),
        (400, "idempotency-key-missing")
    );
    assert_eq!(send(amazon, "amazon", &[], "not json").await.status(), 400);
    assert_eq!(
        body_key(
            Some(&json!({"a": "x|y", "b": 42})),
            &["/a".into(), "/b".into()]
        )
        .as_deref(),
        Some("x%7Cy|42")
    );
}

#[test]
fn fingerprints_ignore_key_order_and_whitespace_only() {
    let fp = |text: &str| {
        let v: Option<Value> = serde_json::from_str(text).ok();
        fingerprint(v.as_ref(), text.as_bytes())
    };
    let a = fp(r#"{"b":[1,{"y":2,"x":"é"}],"a":null}"#);
    assert_eq!(
        a,
        fp("{ \"a\" : null ,\n \"b\" : [ 1 , { \"x\" : \"\\u00e9\", \"y\" : 2 } ] }")
    );
    assert_ne!(
        a,
        fp(r#"{"b":[{"y":2,"x":"é"},1],"a":null}"#),
        "array order counts"
    );
    assert_ne!(
        fp(r#"{"n":1}"#),
        fp(r#"{"n":1.0}"#),
        "numbers keep their text"
    );
    assert_ne!(
        fp("not json"),
        fp("not  json"),
        "other bodies count byte for byte"
    );
    // this build's maps iterate in key order, so the canonical text takes them as they are
    assert!(maps_iterate_sorted());
    // the canonical text itself
    let v = json!({"z": {"b": 1, "a": [true, "s"]}, "a": "x"});
    let mut w = CanonicalHasher {
        hash: Sha256::new(),
        buf: Vec::new(),
    };
    w.write(&v);
    let expected: Fingerprint =
        Sha256::digest(br#"{"a":"x","z":{"a":[true,"s"],"b":1}}"#).into();
    assert_eq!(w.finish(), expected);
    // escapes as serde_json writes them (a stored fingerprint must not change with the writer),
    // numbers as their text (serde_json's parser writes an exponent's sign)
    let v: Value =
        serde_json::from_str(r#"{"q\"k":"tab\there \\ \u0001\u001f é\u2028","n":[1.50,-2e3]}"#)
            .expect("json");
    let mut w = CanonicalHasher {
        hash: Sha256::new(),
        buf: Vec::new(),
    };
    w.write(&v);
    let expected: Fingerprint = Sha256::digest(
        "{\"n\":[1.50,-2e+3],\"q\\\"k\":\"tab\\there \\\\ \\u0001\\u001f é\u{2028}\"}".as_bytes(),
    )
    .into();
    assert_eq!(w.finish(), expected);
}

#[tokio::test]
async fn records_survive_a_reload_of_an_unchanged_store() {
    let h = harness();
    let set1 = h.compile(KEYED, None);
    let a = send(idem(&set1, "idem"), "amazon", &[K1], "{}").await;
    answer(idem(&set1, "idem"), a, 201, "kept").await;
    let set2 = h.compile(
        "  idem:\n    kind: idempotency\n    ttl: 2h\n    lease: 30s\n",
        Some(&set1),
    );
    assert_eq!(
        send(idem(&set2, "idem"), "amazon", &[K1], "{}")
            .await
            .status(),
        201
    );
    let set3 = h.compile(
        "  idem:\n    kind: idempotency\n    max_entries: 10\n",
        Some(&set2),
    );
    assert_eq!(
        send(idem(&set3, "idem"), "amazon", &[K1], "{}")
            .await
            .status(),
        0
    );
}

fn dead_redis() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("redis: {{url: \"redis://127.0.0.1:{port}\", timeout: 50ms}}\n")
}

#[tokio::test]
async fn an_unreachable_redis_denies_or_passes_unprotected_and_is_counted() {
    let h = harness();
    let set = h.compile_with(
        "  deny:\n    kind: idempotency\n    store: redis\n  pass:\n    kind: idempotency\n    store: redis\n    on_store_error: pass\n  allow:\n    kind: idempotency\n    store: redis\n    on_store_error: allow\n",
        &dead_redis(),
        None,
    );
    let denied = send(idem(&set, "deny"), "amazon", &[K1], "{}").await;
    assert_eq!(
        (denied.status(), denied.slug()),
        (503, "idempotency-store-unavailable")
    );
    assert_eq!(denied.header("retry-after").as_deref(), Some("1"));
    let passed = send(idem(&set, "pass"), "amazon", &[K1], "{}").await;
    assert_eq!(passed.status(), 0);
    assert!(
        passed.state().extensions.get::<Held>().is_none(),
        "nothing claimed"
    );
    assert_eq!(h.outcome("pass", "unprotected"), 1);
    // `pass` is the older name of `allow`
    let allowed = send(idem(&set, "allow"), "amazon", &[K1], "{}").await;
    assert_eq!(allowed.status(), 0);
    assert_eq!(h.outcome("allow", "unprotected"), 1);
    let errors = |p: &str| -> u64 {
        ["unavailable", "timeout", "error"]
            .iter()
            .map(|k| {
                h.env
                    .metrics
                    .idempotency
                    .store_errors
                    .with_label_values(&[p, k])
                    .get()
            })
            .sum()
    };
    assert_eq!((errors("deny"), errors("pass")), (1, 1));
}

#[test]
fn mistakes_are_reported_at_their_field() {
    let h = harness();
    let errs = h.errors(
        "  a:\n    kind: idempotency\n    key: {header: \"bad header\"}\n    on_store_error: pass\n    replay_headers: [Content-Type, Set-Cookie]\n    ttl: 0s\n",
    );
    for expected in [
        "p.yaml:8:19: \"bad header\" is not a valid header name",
        "p.yaml:9:21: on_store_error only applies with store: redis",
        "p.yaml:10:36: Set-Cookie is never stored",
        "p.yaml:11:10: ttl must be at least 1ms",
    ] {
        assert!(errs.contains(expected), "missing {expected:?} in\n{errs}");
    }
    let errs = h.errors("  a:\n    kind: idempotency\n    store: redis\n    on_store_error: local\n");
    assert!(
        errs.contains("p.yaml:9:21: on_store_error: local cannot be honoured here: a record kept by one instance would not stop a repeat that reaches another; use deny or allow"),
        "{errs}"
    );
    let errs = h.errors(
        "  a:\n    kind: idempotency\n    key: {body: [AmazonOrderId]}\n    store: redis\n",
    );
    assert!(errs.contains("is not a JSON pointer"), "{errs}");
    assert!(
        errs.contains("this policy uses the redis store, but the file has no `redis` section"),
        "{errs}"
    );
    let errs = h.errors("  a:\n    kind: idempotency\n    keys: {header: X}\n");
    assert!(errs.contains("unknown"), "{errs}");
}
