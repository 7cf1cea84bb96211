//! Deprecated routes end to end, with the real binary and the ERP simulator, on policy files
//! written here with dates relative to now: every answer of a deprecated route carries
//! `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and `Link: <...>; rel="deprecation"`, other
//! routes none; after the sunset the route answers 410 problem+json and forwards nothing (or
//! keeps serving with `after_sunset: serve`), also when the sunset passes while it runs; calls
//! are counted per route and channel, the access log names the authenticated caller, the
//! admin view lists each route's top clients; `gateway check` warns about a past sunset and
//! dates in the wrong order, and refuses malformed dates and links at their line.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use erp_sim::ErpSim;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tests::{Gateway, Start, TempDir, gateway_binary, policy_file, workspace_root};

const ISS: &str = "https://idp.test";
const DAY: i64 = 86_400;
const LINK: &str = "https://developer.example.com/orders-v2";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// RFC 3339 date-time of Unix seconds (what a platform team writes in the file).
fn date(unix: i64) -> String {
    policies::deprecation::rfc3339(unix)
}

fn token(channel: &str, sub: &str) -> String {
    let key = std::fs::read(workspace_root().join("certs/dev-jwt-signing.key")).unwrap();
    let jwks: Value = serde_json::from_slice(
        &std::fs::read(workspace_root().join("certs/dev-jwks.json")).unwrap(),
    )
    .unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
    let claims = json!({
        "iss": ISS, "aud": "gateway", "sub": sub, "iat": now(), "exp": now() + 600,
        "channel": channel,
    });
    encode(&header, &claims, &EncodingKey::from_rsa_pem(&key).unwrap()).unwrap()
}

/// The routes: `v1-things` deprecated (sunset `v1_sunset`), `v2-things` its successor,
/// `v0-things` past its sunset (refused), `v0-kept` past its sunset but still served.
fn file(erp: &ErpSim, deprecated: i64, v1_sunset: &str) -> String {
    let jwks = workspace_root().join("certs/dev-jwks.json");
    policy_file(
        erp.addr(),
        "",
        &format!(
            "policies:
  auth:
    kind: jwt
    issuer: {ISS}
    audience: gateway
    keys: {{jwks_file: {}}}
    channel: {{claim: channel}}
routes:
  - name: v1-things
    methods: [GET, POST]
    path: /v1/things/{{channel}}
    upstream: erp
    upstream_path: /echo/v1/{{channel}}
    policies: [auth]
    deprecation:
      deprecated: {}
      sunset: {v1_sunset}
      link: {LINK}
  - name: v2-things
    methods: [GET, POST]
    path: /v2/things/{{channel}}
    upstream: erp
    upstream_path: /echo/v2/{{channel}}
    policies: [auth]
  - name: v0-things
    methods: [GET, POST]
    path: /v0/things/{{channel}}
    upstream: erp
    upstream_path: /echo/v0/{{channel}}
    deprecation: {{deprecated: {}, sunset: {}, link: {LINK}}}
  - name: v0-kept
    methods: [GET]
    path: /v0/kept
    upstream: erp
    upstream_path: /echo/v0/kept
    deprecation: {{deprecated: {}, sunset: {}, after_sunset: serve}}
",
            jwks.display(),
            date(deprecated),
            date(now() - 400 * DAY),
            date(now() - DAY),
            date(now() - 400 * DAY),
            date(now() - DAY),
        ),
    )
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

fn erp_paths(erp: &ErpSim) -> Vec<String> {
    erp.requests().into_iter().map(|r| r.path).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deprecated_route_says_so_is_counted_per_channel_and_lists_its_clients() {
    let erp = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let deprecated = now() - 30 * DAY;
    let gw = Gateway::start(&file(&erp, deprecated, "2099-12-31")).unwrap();
    let c = reqwest::Client::new();
    let amazon = token("amazon", "acme-connector");
    let shopify = token("shopify", "shop-app");

    for _ in 0..3 {
        let r = c
            .get(gw.url("/v1/things/amazon"))
            .bearer_auth(&amazon)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // RFC 9745: an sf-date, @ and Unix seconds; RFC 8594: an IMF-fixdate
        let expected = format!("@{deprecated}");
        assert_eq!(header(&r, "deprecation"), Some(expected.as_str()));
        assert_eq!(header(&r, "sunset"), Some("Thu, 31 Dec 2099 00:00:00 GMT"));
        assert_eq!(
            header(&r, "link"),
            Some(format!("<{LINK}>; rel=\"deprecation\"").as_str())
        );
    }
    let r = c
        .post(gw.url("/v1/things/shopify"))
        .bearer_auth(&shopify)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "deprecation").is_some());
    // a refusal of a deprecated route says so too (the caller learns it must move)
    let r = c.get(gw.url("/v1/things/walmart")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "deprecation"),
        Some(format!("@{deprecated}").as_str())
    );
    assert!(header(&r, "sunset").is_some());

    // its successor says nothing of the kind
    let r = c
        .get(gw.url("/v2/things/amazon"))
        .bearer_auth(&amazon)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for name in ["deprecation", "sunset", "link"] {
        assert_eq!(header(&r, name), None, "{name} on v2");
    }
    assert_eq!(
        erp_paths(&erp),
        [
            "/echo/v1/amazon",
            "/echo/v1/amazon",
            "/echo/v1/amazon",
            "/echo/v1/shopify",
            "/echo/v2/amazon"
        ]
    );

    let series = |route: &str, channel: &str| {
        format!("gateway_deprecated_requests_total{{channel=\"{channel}\",route=\"{route}\"}}")
    };
    gw.wait_metric(&series("v1-things", "walmart"), 1.0)
        .unwrap();
    assert_eq!(gw.metric(&series("v1-things", "amazon")).unwrap(), 3.0);
    assert_eq!(gw.metric(&series("v1-things", "shopify")).unwrap(), 1.0);
    let metrics = gw.metrics().unwrap();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("gateway_deprecated_requests_total") && l.contains("v2-things")),
        "v2 is not deprecated:\n{metrics}"
    );

    // the access log names the authenticated caller, and nobody for the unauthenticated call
    gw.wait_log(
        "request",
        "path",
        "/v2/things/amazon",
        Duration::from_secs(10),
    )
    .unwrap();
    let lines = gw.log_events("request");
    let callers: Vec<(String, Option<String>)> = lines
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap_or("").to_owned(),
                l.get("caller").and_then(Value::as_str).map(str::to_owned),
            )
        })
        .collect();
    let of = |path: &str| -> Vec<Option<String>> {
        callers
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, c)| c.clone())
            .collect()
    };
    assert_eq!(
        of("/v1/things/amazon"),
        vec![Some("jwt:acme-connector".to_owned()); 3]
    );
    assert_eq!(of("/v1/things/shopify"), [Some("jwt:shop-app".to_owned())]);
    assert_eq!(of("/v1/things/walmart"), [None]);
    assert_eq!(
        of("/v2/things/amazon"),
        [Some("jwt:acme-connector".to_owned())]
    );

    // the admin view: dates, calls and who still calls, most calls first
    let (status, view) = gw.admin_json("GET", "/deprecations").unwrap();
    assert_eq!(status, 200, "{view}");
    let routes = view["routes"].as_array().unwrap();
    let names: Vec<&str> = routes.iter().filter_map(|r| r["route"].as_str()).collect();
    assert_eq!(names, ["v1-things", "v0-things", "v0-kept"]);
    let v1 = &routes[0];
    assert_eq!(v1["deprecated"], date(deprecated));
    assert_eq!(v1["sunset"], "2099-12-31T00:00:00Z");
    assert_eq!(v1["link"], LINK);
    assert_eq!(v1["state"], "deprecated");
    assert_eq!(v1["calls"], 5);
    let top: Vec<(String, String, u64)> = v1["top_clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["client"].as_str().unwrap().to_owned(),
                c["channel"].as_str().unwrap().to_owned(),
                c["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(top[0], ("jwt:acme-connector".into(), "amazon".into(), 3));
    let mut rest = top[1..].to_vec();
    rest.sort();
    assert_eq!(
        rest,
        [
            ("ip:127.0.0.1".into(), "walmart".into(), 1),
            ("jwt:shop-app".into(), "shopify".into(), 1)
        ]
    );
    assert!(v1["top_clients"][0]["last_seen"].as_str().is_some());
    // the status page shows the same (its table reads /status.json)
    let (status, page) = gw.admin_json("GET", "/status.json").unwrap();
    assert_eq!(status, 200);
    assert_eq!(page["deprecations"], view["routes"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_sunset_the_route_answers_410_and_forwards_nothing_unless_it_keeps_serving() {
    let erp = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&file(&erp, now() - 30 * DAY, "2099-12-31")).unwrap();
    let c = reqwest::Client::new();

    let r = c.get(gw.url("/v0/things/amazon")).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert_eq!(header(&r, "content-type"), Some("application/problem+json"));
    assert!(header(&r, "deprecation").is_some() && header(&r, "sunset").is_some());
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "urn:gateway:problem:route-sunset");
    assert_eq!(problem["status"], 410);
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains(&date(now() - DAY)[..10]) && detail.contains(LINK),
        "{detail}"
    );

    // a body is refused unread (the connection is closed) and nothing reaches the ERP
    let r = c
        .post(gw.url("/v0/things/amazon"))
        .header("content-type", "application/json")
        .body(r#"{"id": "o-1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);

    // `after_sunset: serve` keeps forwarding, still saying it is deprecated
    let r = c.get(gw.url("/v0/kept")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "sunset").is_some());
    assert_eq!(erp_paths(&erp), ["/echo/v0/kept"]);

    gw.wait_metric(
        "gateway_deprecated_requests_total{channel=\"none\",route=\"v0-kept\"}",
        1.0,
    )
    .unwrap();
    gw.wait_metric(
        "gateway_deprecated_requests_total{channel=\"amazon\",route=\"v0-things\"}",
        2.0,
    )
    .unwrap();
    assert_eq!(
        gw.metric("gateway_edge_rejections_total{reason=\"sunset\"}")
            .unwrap(),
        2.0
    );
    let (_, view) = gw.admin_json("GET", "/deprecations").unwrap();
    let route = |name: &str| {
        view["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(route("v0-things")["state"], "sunset_refused");
    assert_eq!(route("v0-things")["refused"], 2);
    assert_eq!(route("v0-kept")["state"], "sunset_served");
    assert_eq!(route("v0-kept")["refused"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sunset_takes_effect_while_the_gateway_runs() {
    let erp = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = TempDir::new("deprecation-clock").unwrap();
    let offset = dir.path().join("offset");
    let yaml = policy_file(
        erp.addr(),
        "",
        &format!(
            "routes:\n  - name: old\n    methods: [GET]\n    path: /old\n    upstream: erp\n    upstream_path: /echo/old\n    deprecation: {{deprecated: {}, sunset: {}}}\n",
            date(now() - DAY),
            date(now() + 3600)
        ),
    );
    let gw = Gateway::start_with(
        &yaml,
        Start {
            env: vec![(
                "GATEWAY_TEST_CLOCK_OFFSET_FILE".into(),
                offset.display().to_string(),
            )],
            ..Start::default()
        },
    )
    .unwrap();
    let c = reqwest::Client::new();
    assert_eq!(c.get(gw.url("/old")).send().await.unwrap().status(), 200);
    // two hours later on the gateway's clock: no reload, the route is retired
    std::fs::write(&offset, "7200").unwrap();
    assert_eq!(c.get(gw.url("/old")).send().await.unwrap().status(), 410);
    assert_eq!(erp_paths(&erp), ["/echo/old"]);
}

fn check(yaml: &str) -> (i32, String, std::path::PathBuf, TempDir) {
    let dir = TempDir::new("deprecation-check").unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(gateway_binary().unwrap())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text, path, dir)
}

/// A file whose only route (at line 9) has this `deprecation:` (flow mapping, line 10).
fn one_route(deprecation: &str) -> String {
    policy_file(
        "127.0.0.1:9".parse().unwrap(),
        "",
        &format!(
            "routes:\n  - name: old\n    methods: [GET]\n    path: /old\n    upstream: erp\n    deprecation:\n{deprecation}"
        ),
    )
}

#[test]
fn gateway_check_warns_about_a_past_or_misordered_sunset_and_refuses_bad_dates() {
    let sunset = date(now() - DAY);
    let yaml = one_route(&format!(
        "      deprecated: {}\n      sunset: {sunset}\n",
        date(now() - 30 * DAY),
    ));
    let line = yaml.lines().position(|l| l.contains("sunset:")).unwrap() + 1;
    let (code, out, path, _dir) = check(&yaml);
    assert_eq!(code, 0, "warnings do not fail the check:\n{out}");
    let expected = format!(
        "{}:{line}:15: warning: route \"old\": the sunset ({sunset}) is past: it answers 410 Gone",
        path.display(),
    );
    assert!(
        out.lines().any(|l| l == expected),
        "{out}\nexpected {expected}"
    );

    let (code, out, path, _dir) = check(&one_route(
        "      deprecated: 2099-06-30\n      sunset: 2099-01-01\n",
    ));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "{}:{line}:15: warning: route \"old\": the sunset (2099-01-01T00:00:00Z) is before the deprecation date (2099-06-30T00:00:00Z)",
            path.display()
        )),
        "{out}"
    );

    let (code, out, _, _dir) = check(&one_route(
        "      deprecated: 2099-06-30\n      sunset: 2099-12-31\n      link: https://developer.example.com/v2\n",
    ));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("warning"), "{out}");

    let (code, out, path, _dir) = check(&one_route(
        "      deprecated: 30 June 2099\n      sunset: 2099-02-30\n      link: /docs/v2\n",
    ));
    assert_eq!(code, 1, "{out}");
    let file = path.display().to_string();
    for (l, what) in [
        (line - 1, "is not an RFC 3339 date"),
        (line, "no such date"),
        (line + 1, "must be an absolute http(s) URL"),
    ] {
        assert!(
            out.lines()
                .any(|o| o.starts_with(&format!("{file}:{l}:")) && o.contains(what)),
            "{what} at line {l}:\n{out}"
        );
    }
}

/// The shipped example set, pointed at `erp`, its relative paths made absolute.
fn example_file(erp: &ErpSim) -> String {
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join("policies/files/gateway.yaml")).unwrap();
    let files = root.join("policies/files");
    text.replace("\"127.0.0.1:9400\"", &format!("\"{}\"", erp.addr()))
        .replace("../../", &format!("{}/", root.display()))
        .replace(" schemas/", &format!(" {}/schemas/", files.display()))
        .replace(" skus.yaml", &format!(" {}/skus.yaml", files.display()))
}

fn dev_token(channel: &str) -> String {
    let out = Command::new(gateway_binary().unwrap())
        .current_dir(workspace_root())
        .args(["token", "--channel", channel, "--scope", "orders:write"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn case(path: &str) -> Vec<u8> {
    std::fs::read(workspace_root().join("transforms/mappings").join(path)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_sets_v1_and_v2_orders_take_their_own_amazon_documents_into_one_canonical_order()
 {
    let erp = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start_with(
        &example_file(&erp),
        Start {
            https: true,
            ..Start::default()
        },
    )
    .unwrap();
    let c = reqwest::Client::new();
    let amazon = dev_token("amazon");
    let post = |path: &str, token: &str, key: &str, body: Vec<u8>| {
        c.post(gw.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("idempotency-key", format!("\"{key}\""))
            .body(body)
            .send()
    };
    let expected: Value = serde_json::from_slice(&case(
        "amazon/cases/order/sandbox-test-case-200.expected.json",
    ))
    .unwrap();
    let v1_doc = case("amazon/cases/order.v1/sandbox-test-case-200.input.json");
    let v2_doc = case("amazon/cases/order/sandbox-test-case-200.input.json");

    // v1: getOrder and getOrderItems side by side, deprecated
    let r = post(
        "/v1/channels/amazon/orders",
        &amazon,
        "v1-1",
        v1_doc.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert!(header(&r, "deprecation").is_some_and(|d| d.starts_with('@')));
    assert_eq!(header(&r, "sunset"), Some("Thu, 31 Dec 2099 00:00:00 GMT"));
    assert!(header(&r, "link").is_some_and(|l| l.ends_with("; rel=\"deprecation\"")));
    // v2: the Order with its OrderItems, current
    let r = post("/v2/channels/amazon/orders", &amazon, "v2-1", v2_doc)
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(header(&r, "deprecation"), None);
    // each version's schema refuses the other's document, before the ERP
    let r = post("/v2/channels/amazon/orders", &amazon, "v2-2", v1_doc)
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "urn:gateway:problem:schema-violation");

    // the ERP got the same canonical order from both versions
    let got = erp.requests();
    assert_eq!(got.len(), 2);
    for request in &got {
        assert_eq!(request.path, "/erp/v1/orders");
        let doc: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(doc, expected);
    }

    // the other channels post to v1 what they post to v2
    let shopify = dev_token("shopify");
    let r = post(
        "/v1/channels/shopify/orders",
        &shopify,
        "v1-shopify-1",
        case("shopify/cases/order/admin-rest-2026-07-example-1001.input.json"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    gw.wait_metric(
        "gateway_deprecated_requests_total{channel=\"shopify\",route=\"orders-v1\"}",
        1.0,
    )
    .unwrap();
    assert_eq!(
        gw.metric("gateway_deprecated_requests_total{channel=\"amazon\",route=\"orders-v1\"}")
            .unwrap(),
        1.0
    );
}
