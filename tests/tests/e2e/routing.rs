//! Routing end to end: path rewrite, request ids, trace context, forwarded headers, 404/405 as
//! problem+json, unknown channels, dot segments, round robin and failover across endpoints;
//! and how `gateway run` sets up its process (schedulers, transparent huge pages).

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::time::Duration;

use erp_sim::ErpSim;
use serde_json::Value;
use tests::{Gateway, Start, gateway_binary, policy_file, raw_request};

const ROUTES: &str = "\
routes:
  - name: echo
    methods: [GET, POST]
    path: /channels/{channel}/echo/{*rest}
    upstream: erp
    upstream_path: /echo/{channel}/{rest}?source=gateway
  - name: orders
    methods: [POST]
    path: /channels/{channel}/orders
    upstream: erp
    upstream_path: /erp/v1/orders
";

async fn setup() -> (ErpSim, Gateway) {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&policy_file(sim.addr(), "", ROUTES)).unwrap();
    (sim, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_path_rewrite_request_id_and_trace_context() {
    let (sim, gw) = setup().await;
    let resp = reqwest::Client::new()
        .get(gw.url("/channels/amazon/echo/a/b?x=1"))
        .header("x-request-id", "test-req-42")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("tracestate", "vendor=abc")
        .header("connection", "keep-alive, x-secret-hop")
        .header("x-secret-hop", "must not be forwarded")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "test-req-42");
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["path"], "/echo/amazon/a/b");
    assert_eq!(echo["query"], "source=gateway&x=1");
    let h = &echo["headers"];
    assert_eq!(h["x-request-id"], "test-req-42");
    let tp = h["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "our hop must have its own span id: {tp}"
    );
    assert_eq!(h["tracestate"], "vendor=abc");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(
        h.get("x-secret-hop").is_none(),
        "hop-by-hop header forwarded: {h}"
    );
    assert_eq!(sim.requests_started(), 1);

    let access = gw
        .wait_log(
            "request",
            "request_id",
            "test-req-42",
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(access["route"], "echo");
    assert_eq!(access["channel"], "amazon");
    assert_eq!(access["status"], 200);
    assert_eq!(access["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(access["outcome"], "forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_ids_are_replaced_and_traces_created() {
    let (_sim, gw) = setup().await;
    let resp = reqwest::Client::new()
        .get(gw.url("/channels/amazon/echo/x"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "bad id with spaces");
    assert_eq!(id.len(), 36, "a generated UUID: {id}");
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["headers"]["x-request-id"], id.as_str());
    let tp = echo["headers"]["traceparent"].as_str().unwrap();
    assert_eq!(tp.len(), 55, "{tp}");
    assert!(tp.starts_with("00-") && tp.ends_with("-01"), "{tp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_and_wrong_methods_405_as_problems() {
    let (sim, gw) = setup().await;
    let client = reqwest::Client::new();

    let resp = client
        .get(gw.url("/admin/secrets"))
        .header("x-request-id", "nf-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["status"], 404);
    assert_eq!(p["type"], "about:blank");
    assert_eq!(p["request_id"], "nf-1");
    assert_eq!(p["instance"], "/admin/secrets");

    let resp = client
        .delete(gw.url("/channels/amazon/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["status"], 405);
    assert!(p["request_id"].as_str().is_some_and(|s| !s.is_empty()));

    // a {channel} that names no configured channel is not a route either
    let resp = client
        .post(gw.url("/channels/etsy/orders"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // dot segments never reach the upstream, even encoded
    let r = raw_request(
        gw.http,
        b"GET /channels/amazon/echo/%2e%2e/secret HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json().unwrap()["type"], "urn:gateway:problem:bad-path");

    assert_eq!(
        sim.requests_started(),
        0,
        "nothing may be forwarded: {:?}",
        sim.requests()
    );
    let m = gw.metrics().unwrap();
    assert!(
        m.contains("gateway_edge_rejections_total{reason=\"no_route\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("gateway_edge_rejections_total{reason=\"method_not_allowed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("gateway_edge_rejections_total{reason=\"unknown_channel\"} 1"),
        "{m}"
    );
    gw.wait_metric(
        "gateway_requests_total{channel=\"none\",route=\"unmatched\",status_class=\"4xx\"}",
        4.0,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_used_round_robin_and_a_dead_one_is_skipped() {
    let a = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let b = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "version: 1\nchannels: {{amazon: {{}}}}\nupstreams:\n  erp:\n    endpoints: [\"{}\", \"{}\", \"{dead}\"]\n    connect_timeout: 1s\n{ROUTES}",
        a.addr(),
        b.addr()
    );
    let gw = Gateway::start(&yaml).unwrap();
    let client = reqwest::Client::new();
    for i in 0..9 {
        let resp = client
            .get(gw.url(&format!("/channels/amazon/echo/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "request {i} must fail over past the dead endpoint"
        );
        let resp = client
            .post(gw.url("/channels/amazon/orders"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            201,
            "buffered request {i} must fail over too"
        );
    }
    assert!(
        a.requests_started() >= 6 && b.requests_started() >= 6,
        "a={} b={}",
        a.requests_started(),
        b.requests_started()
    );
    assert_eq!(a.requests_started() + b.requests_started(), 18);
    let refused = gw
        .metric("gateway_upstream_errors_total{kind=\"connect_refused\",upstream=\"erp\"}")
        .unwrap();
    assert!(refused >= 1.0, "failed attempts are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_pooled_and_reused() {
    let (sim, gw) = setup().await;
    let client = reqwest::Client::new();
    // Each answer is read out, so the client sends every request on its one kept-alive
    // connection and the gateway serves them in turn. An answer dropped unread closes the
    // client's connection; the next request then arrives on a new one, possibly on the other
    // worker, while the previous request's upstream connection is still on its way back to
    // the pool (Pingora returns it after the last byte is written downstream).
    for i in 0..10 {
        let r = client
            .get(gw.url(&format!("/channels/amazon/echo/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        let r = client
            .post(gw.url("/channels/amazon/orders"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.bytes().await.unwrap();
    }
    assert_eq!(sim.requests_started(), 20);
    // One pooled connection for the streaming path and one for the buffered path. Pingora
    // 0.9 closes a pooled connection when the worker taking it wakes before the pool's idle
    // watcher on the other worker has let go of it (cloudflare/pingora#998): that request
    // connects anew, and the gateway counts it. Those are the only other connections.
    let connections = sim.connections_accepted();
    let lost = gw.metric("gateway_upstream_pool_reuse_lost_total").unwrap() as u64;
    assert!(
        connections <= 2 + lost,
        "{connections} connections for 20 sequential requests, {lost} pooled ones lost to the race"
    );
}

/// Both schedulers (`--scheduler`) are what Pingora runs (the `listening` line says what it was
/// given) and serve many connections at once, each request reaching the upstream once; `auto`,
/// the default, is per-thread for one worker and work-stealing for more; a value that names
/// none of them is refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_schedulers_serve_concurrent_connections() {
    for scheduler in ["per-thread", "work-stealing"] {
        let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let opts = Start {
            args: vec!["--scheduler".into(), scheduler.into()],
            ..Start::default()
        };
        let gw = Gateway::start_with(&policy_file(sim.addr(), "", ROUTES), opts).unwrap();
        let listening = gw.log_events("listening");
        assert_eq!(listening.len(), 1, "{listening:?}");
        assert_eq!(listening[0]["scheduler"], scheduler);
        assert_eq!(listening[0]["threads"], 2);
        // no pooling: every request is a connection of its own, spread over the workers
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let sent = (0..40).map(|i| {
            let req = client.get(gw.url(&format!("/channels/amazon/echo/n/{i}")));
            async move { req.send().await }
        });
        for (i, resp) in futures_util::future::join_all(sent)
            .await
            .into_iter()
            .enumerate()
        {
            let resp = resp.unwrap();
            assert_eq!(resp.status(), 200, "{scheduler}: request {i}");
            let echo: Value = resp.json().await.unwrap();
            assert_eq!(echo["path"], format!("/echo/amazon/n/{i}"), "{scheduler}");
        }
        assert_eq!(sim.requests_started(), 40, "{scheduler}");
    }

    // by default, per-thread with one worker and work-stealing with more: Pingora's pool loses
    // pooled connections between per-thread workers
    for (threads, expected) in [(1, "per-thread"), (2, "work-stealing")] {
        let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let opts = Start {
            threads: Some(threads),
            ..Start::default()
        };
        let gw = Gateway::start_with(&policy_file(sim.addr(), "", ROUTES), opts).unwrap();
        let listening = gw.log_events("listening");
        assert_eq!(listening[0]["scheduler"], expected, "{listening:?}");
        assert_eq!(listening[0]["threads"], threads);
    }

    let refused = std::process::Command::new(gateway_binary().unwrap())
        .args(["run", "-c", "unused.yaml", "--scheduler", "round-robin"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("per-thread") && err.contains("work-stealing") && err.contains("auto"),
        "{err}"
    );
}

/// `gateway run` turns transparent huge pages off for itself: its allocator asks for them, and
/// the first touch of each one zeroes 2 MiB while a request waits. `--transparent-huge-pages`
/// leaves the system's setting. The kernel tells which in the process's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_huge_pages_are_off_unless_asked_for() {
    let thp_enabled = |gw: &Gateway| -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("THP_enabled:"))
            .map(|v| v.trim().to_owned())
            .expect("THP_enabled in /proc/PID/status (Linux 5.0 or later)")
    };
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&policy_file(sim.addr(), "", ROUTES)).unwrap();
    assert_eq!(thp_enabled(&gw), "0");
    let resp = reqwest::get(gw.url("/channels/amazon/echo/x"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let opts = Start {
        args: vec!["--transparent-huge-pages".into()],
        ..Start::default()
    };
    let gw = Gateway::start_with(&policy_file(sim.addr(), "", ROUTES), opts).unwrap();
    assert_eq!(thp_enabled(&gw), "1");
}
