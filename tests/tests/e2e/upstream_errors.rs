//! Upstream failures: a dead upstream is 502, a slow one 504, a dropped connection 502, on both
//! the streaming and the buffered path, each as problem+json and counted.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use erp_sim::{Behaviour, ErpSim};
use serde_json::Value;
use tests::{Gateway, policy_file};

const ROUTES: &str = "\
policies:
  json: {kind: json_body}
routes:
  - name: stream
    methods: [GET]
    path: /stream
    upstream: erp
    upstream_path: /echo/stream
  - name: orders
    methods: [POST]
    path: /orders
    upstream: erp
    upstream_path: /erp/v1/orders
    policies: [json]
";

const TIMEOUTS: &str = "    connect_timeout: 1s\n    read_timeout: 300ms\n    total_timeout: 2s\n";

async fn get_and_post(gw: &Gateway) -> [(u16, Value); 2] {
    let c = reqwest::Client::new();
    let a = c.get(gw.url("/stream")).send().await.unwrap();
    let b = c
        .post(gw.url("/orders"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let sa = a.status().as_u16();
    assert_eq!(a.headers()["content-type"], "application/problem+json");
    let sb = b.status().as_u16();
    assert_eq!(b.headers()["content-type"], "application/problem+json");
    [(sa, a.json().await.unwrap()), (sb, b.json().await.unwrap())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_502() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = Gateway::start(&policy_file(dead, TIMEOUTS, ROUTES)).unwrap();
    for (status, p) in get_and_post(&gw).await {
        assert_eq!(status, 502, "{p}");
        assert_eq!(p["type"], "urn:gateway:problem:upstream-unavailable");
        assert_eq!(p["upstream"], "erp");
        assert!(p["request_id"].is_string());
    }
    let n = gw
        .metric("gateway_upstream_errors_total{kind=\"connect_refused\",upstream=\"erp\"}")
        .unwrap();
    assert_eq!(n, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_504() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    sim.set_behaviour(Behaviour::delay_ms(1500));
    let gw = Gateway::start(&policy_file(sim.addr(), TIMEOUTS, ROUTES)).unwrap();
    for (status, p) in get_and_post(&gw).await {
        assert_eq!(status, 504, "{p}");
        assert_eq!(p["type"], "urn:gateway:problem:upstream-timeout");
    }
    let n = gw
        .metric("gateway_upstream_errors_total{kind=\"read_timeout\",upstream=\"erp\"}")
        .unwrap();
    assert_eq!(n, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_timeout_bounds_the_exchange() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    sim.set_behaviour(Behaviour::delay_ms(1500));
    // reads may wait 10s, but the whole exchange only 500ms
    let timeouts = "    connect_timeout: 200ms\n    read_timeout: 10s\n    total_timeout: 500ms\n";
    let gw = Gateway::start(&policy_file(sim.addr(), timeouts, ROUTES)).unwrap();
    for (status, _) in get_and_post(&gw).await {
        assert_eq!(status, 504);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_502() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    sim.set_behaviour(Behaviour {
        drop_connection: true,
        ..Behaviour::default()
    });
    let gw = Gateway::start(&policy_file(sim.addr(), TIMEOUTS, ROUTES)).unwrap();
    for (status, p) in get_and_post(&gw).await {
        assert_eq!(status, 502, "{p}");
    }
    // a request that reached the ERP and failed is not retried: exactly one attempt each
    assert_eq!(sim.requests_started(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_answers_pass_through_unchanged() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    sim.set_behaviour(Behaviour::fail(503, Some(2)));
    let gw = Gateway::start(&policy_file(sim.addr(), TIMEOUTS, ROUTES)).unwrap();
    let c = reqwest::Client::new();
    let a = c.get(gw.url("/stream")).send().await.unwrap();
    assert_eq!(a.status(), 503);
    let body: Value = a.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SIMULATED_FAILURE");
}
