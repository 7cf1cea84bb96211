//! A resilient upstream, end to end with three ERP simulators as the endpoints of one upstream
//! (millisecond durations): a killed or hung endpoint is ejected and gets no attempts until it
//! recovers; a brownout is retried within the budget and never makes an order twice;
//! `max_in_flight` caps what the ERP sees at once; open circuits answer 503 without
//! connecting, and a half-open probe closes them; state survives a reload that leaves the
//! upstream unchanged; active health checks take an endpoint out and back, their probes not
//! counted as attempts.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::time::Duration;

use erp_sim::{Behaviour, DocumentKind, ErpSim};
use serde_json::Value;
use tests::{Gateway, eventually, raw_request};

const ROUTES: &str = "\
policies:
  json: {kind: json_body}
  idem: {kind: idempotency, key: {header: Idempotency-Key}, required: true, ttl: 1h, lease: 20s}
routes:
  - {name: read, methods: [GET], path: \"/echo/{*rest}\", upstream: erp}
  - {name: orders, methods: [POST], path: /orders, upstream: erp, upstream_path: /erp/v1/orders, policies: [json, idem]}
";

async fn sims(n: usize) -> Vec<ErpSim> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap());
    }
    out
}

/// A policy file with one upstream over `sims`, its extra keys, and the routes above.
fn file(sims: &[ErpSim], upstream_keys: &str) -> String {
    let endpoints: Vec<String> = sims.iter().map(|s| format!("\"{}\"", s.addr())).collect();
    format!(
        "version: 1\nlisteners: {{http: 127.0.0.1:0, admin: 127.0.0.1:0}}\nchannels: {{amazon: {{}}}}\n\
         upstreams:\n  erp:\n    endpoints: [{}]\n    connect_timeout: 300ms\n    read_timeout: 400ms\n    total_timeout: 5s\n{upstream_keys}{ROUTES}",
        endpoints.join(", ")
    )
}

fn attempts(gw: &Gateway, sim: &ErpSim) -> f64 {
    gw.metric(&format!(
        "gateway_upstream_attempts_total{{endpoint=\"{}\",upstream=\"erp\"}}",
        sim.addr()
    ))
    .unwrap()
}

fn upstreams(gw: &Gateway) -> Value {
    let r = raw_request(
        gw.admin,
        b"GET /upstreams HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    r.json().unwrap()
}

fn endpoint(gw: &Gateway, sim: &ErpSim) -> Value {
    let doc = upstreams(gw);
    doc["upstreams"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == sim.addr().to_string())
        .cloned()
        .unwrap()
}

async fn get(c: &reqwest::Client, gw: &Gateway) -> reqwest::Response {
    c.get(gw.url("/echo/x")).send().await.unwrap()
}

async fn get_ok(c: &reqwest::Client, gw: &Gateway, times: usize) {
    for _ in 0..times {
        let r = get(c, gw).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_is_ejected_gets_no_attempts_and_returns_after_it_recovers() {
    let sims = sims(3).await;
    let gw = Gateway::start(&file(
        &sims,
        "    outlier_detection: {consecutive_failures: 2, base_ejection_time: 3s, max_ejection_time: 3s}\n",
    ))
    .unwrap();
    let c = reqwest::Client::new();
    get_ok(&c, &gw, 6).await;
    assert_eq!(sims[0].requests_started(), 2, "round robin");

    sims[0].set_down(true).await.unwrap();
    // a refused connection moves on to the next endpoint: the clients see no failure
    get_ok(&c, &gw, 12).await;
    // the killed simulator closed its kept-alive connection: when the gateway reuses it before
    // noticing, that attempt is resent at once as a stale connection, without blaming the
    // endpoint, so it comes on top of the two failures that eject it
    let stale = gw
        .metric("gateway_upstream_retries_total{reason=\"stale_connection\",upstream=\"erp\"}")
        .unwrap();
    assert!(stale <= 1.0, "one pooled connection at most: {stale}");
    assert_eq!(
        attempts(&gw, &sims[0]),
        4.0 + stale,
        "two attempts before it is ejected"
    );
    assert_eq!(endpoint(&gw, &sims[0])["ejected"], true);
    get_ok(&c, &gw, 12).await;
    assert_eq!(
        attempts(&gw, &sims[0]),
        4.0 + stale,
        "no attempts while ejected"
    );
    assert_eq!(
        gw.metric(&format!(
            "gateway_upstream_ejections_total{{endpoint=\"{}\",upstream=\"erp\"}}",
            sims[0].addr()
        ))
        .unwrap(),
        1.0
    );

    sims[0].set_down(false).await.unwrap();
    let before = sims[0].requests_started();
    // requests keep flowing; the endpoint is used again once its ejection is over
    for _ in 0..400 {
        get_ok(&c, &gw, 1).await;
        if sims[0].requests_started() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        sims[0].requests_started() > before,
        "used again after recovery"
    );
    assert_eq!(endpoint(&gw, &sims[0])["ejected"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_endpoint_is_ejected_after_its_timeouts_and_returns_after_it_recovers() {
    let sims = sims(3).await;
    let gw = Gateway::start(&file(
        &sims,
        "    outlier_detection: {consecutive_failures: 2, base_ejection_time: 3s, max_ejection_time: 3s}\n    retry: {max_attempts: 3, budget_min_retries: 50, backoff: {base: 1ms, max: 2ms}}\n",
    ))
    .unwrap();
    let c = reqwest::Client::new();
    // an endpoint that accepts, reads the request and never answers
    sims[1].set_behaviour(Behaviour::hang(None));
    // each of its read timeouts is retried on another endpoint (GET is safe to repeat)
    get_ok(&c, &gw, 12).await;
    assert_eq!(attempts(&gw, &sims[1]), 2.0, "two timeouts, then ejected");
    get_ok(&c, &gw, 12).await;
    assert_eq!(attempts(&gw, &sims[1]), 2.0, "no attempts while ejected");
    assert!(
        gw.metric("gateway_upstream_errors_total{kind=\"read_timeout\",upstream=\"erp\"}")
            .unwrap()
            >= 2.0
    );

    sims[1].set_behaviour(Behaviour::default());
    let before = sims[1].requests_completed();
    for _ in 0..400 {
        get_ok(&c, &gw, 1).await;
        if sims[1].requests_completed() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        sims[1].requests_completed() > before,
        "used (and answering) again after recovery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brownout_is_retried_within_the_budget_and_no_order_reaches_the_erp_twice() {
    let sims = sims(3).await;
    for s in &sims {
        // every other answer of each endpoint is a 503
        s.set_behaviour(Behaviour::fail_every(503, 2));
    }
    let (ratio, min_retries) = (0.5, 2.0);
    let gw = Gateway::start(&file(
        &sims,
        "    outlier_detection: {enabled: false}\n    retry: {max_attempts: 3, budget_ratio: 0.5, budget_min_retries: 2, budget_window: 10m, backoff: {base: 1ms, max: 5ms}}\n",
    ))
    .unwrap();
    let c = reqwest::Client::new();
    let n = 40usize;
    let mut created = 0usize;
    let mut failed = 0usize;
    for i in 0..n {
        let r = c
            .post(gw.url("/orders"))
            .header("content-type", "application/json")
            .header("idempotency-key", format!("\"order-{i}\""))
            .body(format!("{{\"order\":\"PO-{i}\"}}"))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            201 => created += 1,
            503 => failed += 1,
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
    }
    let received: u64 = sims.iter().map(ErpSim::requests_started).sum();
    let bound = n as f64 * (1.0 + ratio) + min_retries;
    assert!(
        received as f64 <= bound,
        "the ERP got {received} requests for {n} orders (bound {bound})"
    );
    assert!(received as usize > n, "some were retried");
    assert!(failed <= n / 2, "{failed} of {n} failed");
    let duplicates: u64 = sims.iter().map(|s| s.stats().duplicates).sum();
    assert_eq!(duplicates, 0, "no order reached the ERP twice");
    let documents: usize = sims
        .iter()
        .map(|s| s.documents(DocumentKind::Order).len())
        .sum();
    assert_eq!(documents, created, "one document per order answered 201");

    // every attempt of one order carried the same upstream key, and no two orders shared one
    let mut by_key: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for s in &sims {
        for r in s.requests() {
            let key = r.header("idempotency-key").unwrap().to_owned();
            assert!(key.starts_with('"') && key.ends_with('"'), "{key}");
            let body = String::from_utf8_lossy(&r.body).into_owned();
            by_key.entry(key).or_default().push(body);
        }
    }
    assert_eq!(by_key.len(), n, "one upstream key per accepted order");
    assert!(
        by_key
            .values()
            .all(|bodies| bodies.windows(2).all(|w| w[0] == w[1])),
        "a key never names two documents"
    );
    assert!(
        gw.metric("gateway_upstream_retries_total{reason=\"status\",upstream=\"erp\"}")
            .unwrap()
            > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_caps_what_the_erp_sees_under_64_concurrent_clients() {
    let sims = sims(1).await;
    sims[0].set_behaviour(Behaviour::delay_ms(30));
    let gw = Gateway::start(&file(
        &sims,
        "    max_in_flight: 4\n    queue_timeout: 5s\n",
    ))
    .unwrap();
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let c = c.clone();
        let url = gw.url("/echo/x");
        tasks.push(tokio::spawn(async move {
            c.get(url).send().await.unwrap().status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let stats = sims[0].stats();
    assert_eq!(stats.requests_completed, 64);
    assert!(
        stats.max_in_flight <= 4,
        "the ERP saw {} at once",
        stats.max_in_flight
    );
    assert!(stats.max_in_flight >= 2, "the clients did overlap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_upstream_answers_503_with_retry_after_once_the_queue_timeout_passes() {
    let sims = sims(1).await;
    sims[0].set_behaviour(Behaviour::delay_ms(350));
    let gw = Gateway::start(&file(
        &sims,
        "    max_in_flight: 1\n    queue_timeout: 50ms\n",
    ))
    .unwrap();
    let c = reqwest::Client::new();
    let first = {
        let c = c.clone();
        let url = gw.url("/echo/x");
        tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
    };
    eventually(
        "the first request at the ERP",
        Duration::from_secs(5),
        || sims[0].stats().in_flight == 1,
    )
    .await
    .unwrap();
    let r = get(&c, &gw).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["type"], "urn:gateway:problem:upstream-saturated");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        sims[0].requests_started(),
        1,
        "the refused one was never sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_circuits_answer_503_without_connecting_and_a_half_open_probe_closes_them() {
    let sims = sims(2).await;
    for s in &sims {
        s.set_behaviour(Behaviour::fail(500, None));
    }
    let gw = Gateway::start(&file(
        &sims,
        "    outlier_detection: {enabled: false}\n    circuit_breaker: {consecutive_failures: 2, open_for: 1500ms, half_open_probes: 1, close_after: 1}\n",
    ))
    .unwrap();
    let c = reqwest::Client::new();
    for _ in 0..4 {
        assert_eq!(get(&c, &gw).await.status(), 500, "passed through");
    }
    for s in &sims {
        assert_eq!(endpoint(&gw, s)["circuit"], "open");
    }
    let connections: Vec<u64> = sims.iter().map(ErpSim::connections_accepted).collect();
    let started: Vec<u64> = sims.iter().map(ErpSim::requests_started).collect();
    for _ in 0..5 {
        let r = get(&c, &gw).await;
        assert_eq!(r.status(), 503);
        let retry_after: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry_after), "{retry_after}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["type"], "urn:gateway:problem:upstream-circuit-open");
    }
    assert_eq!(
        sims.iter()
            .map(ErpSim::connections_accepted)
            .collect::<Vec<_>>(),
        connections,
        "no new connection at any simulator"
    );
    assert_eq!(
        sims.iter()
            .map(ErpSim::requests_started)
            .collect::<Vec<_>>(),
        started
    );
    assert_eq!(
        gw.metric(&format!(
            "gateway_upstream_circuit_open{{endpoint=\"{}\",upstream=\"erp\"}}",
            sims[0].addr()
        ))
        .unwrap(),
        1.0
    );

    // the ERP recovers; after open_for, one probe per endpoint closes its circuit
    for s in &sims {
        s.set_behaviour(Behaviour::default());
    }
    let mut ok = 0;
    for _ in 0..200 {
        if get(&c, &gw).await.status() == 200 {
            ok += 1;
            if ok == 4 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(ok, 4, "the upstream serves again");
    for s in &sims {
        assert_eq!(endpoint(&gw, s)["circuit"], "closed");
    }
    assert_eq!(
        gw.metric(&format!(
            "gateway_upstream_circuit_transitions_total{{endpoint=\"{}\",to=\"closed\",upstream=\"erp\"}}",
            sims[0].addr()
        ))
        .unwrap(),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_leaves_the_upstream_unchanged_keeps_ejection_and_breaker_state() {
    let sims = sims(2).await;
    let keys = "    outlier_detection: {consecutive_failures: 1, base_ejection_time: 60s, max_ejection_time: 60s}\n    circuit_breaker: {consecutive_failures: 1, open_for: 60s}\n";
    let yaml = file(&sims, keys);
    let gw = Gateway::start(&yaml).unwrap();
    let c = reqwest::Client::new();
    sims[0].set_down(true).await.unwrap();
    get_ok(&c, &gw, 4).await;
    let before = endpoint(&gw, &sims[0]);
    assert_eq!(before["ejected"], true, "{before}");
    assert_eq!(before["circuit"], "open", "{before}");
    let tried = attempts(&gw, &sims[0]);

    // another route, the same upstream
    gw.write_config(&format!(
        "{yaml}  - {{name: extra, methods: [GET], path: /extra, upstream: erp, upstream_path: /echo/extra}}\n"
    ))
    .unwrap();
    gw.sighup().unwrap();
    gw.wait_metric("gateway_config_reloads_total{result=\"success\"}", 1.0)
        .unwrap();
    assert_eq!(c.get(gw.url("/extra")).send().await.unwrap().status(), 200);
    let after = endpoint(&gw, &sims[0]);
    assert_eq!(after["ejected"], true, "{after}");
    assert_eq!(after["circuit"], "open", "{after}");
    get_ok(&c, &gw, 6).await;
    assert_eq!(attempts(&gw, &sims[0]), tried, "still not tried");

    // a changed upstream starts afresh
    gw.write_config(&file(&sims, &format!("{keys}    idle_timeout: 30s\n")))
        .unwrap();
    gw.sighup().unwrap();
    gw.wait_metric("gateway_config_reloads_total{result=\"success\"}", 2.0)
        .unwrap();
    let fresh = endpoint(&gw, &sims[0]);
    assert_eq!(fresh["ejected"], false, "{fresh}");
    assert_eq!(fresh["circuit"], "closed", "{fresh}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_an_endpoint_out_and_back_and_their_probes_are_not_attempts() {
    let sims = sims(2).await;
    let gw = Gateway::start(&file(
        &sims,
        "    health_check: {path: /erp/v1/health, interval: 50ms, timeout: 40ms, healthy_threshold: 2, unhealthy_threshold: 2}\n",
    ))
    .unwrap();
    let c = reqwest::Client::new();
    sims[0].set_behaviour(Behaviour::fail(503, None));
    eventually(
        "the failing endpoint to be unhealthy",
        Duration::from_secs(10),
        || endpoint(&gw, &sims[0])["healthy"] == false,
    )
    .await
    .unwrap();
    let tried = attempts(&gw, &sims[0]);
    let reached = sims[0].requests_started();
    let probed = sims[0].stats().health_checks;
    get_ok(&c, &gw, 10).await;
    assert_eq!(
        attempts(&gw, &sims[0]),
        tried,
        "no traffic to an unhealthy endpoint"
    );
    assert_eq!(sims[0].requests_started(), reached);
    eventually("more probes to reach it", Duration::from_secs(10), || {
        sims[0].stats().health_checks > probed + 2
    })
    .await
    .unwrap();
    assert_eq!(
        attempts(&gw, &sims[0]),
        tried,
        "probes reach the endpoint but are not attempts"
    );
    assert_eq!(
        gw.metric(&format!(
            "gateway_upstream_endpoint_healthy{{endpoint=\"{}\",upstream=\"erp\"}}",
            sims[0].addr()
        ))
        .unwrap(),
        0.0
    );

    sims[1].set_behaviour(Behaviour::fail(503, None));
    eventually("both endpoints unhealthy", Duration::from_secs(10), || {
        endpoint(&gw, &sims[1])["healthy"] == false
    })
    .await
    .unwrap();
    let r = get(&c, &gw).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["type"], "urn:gateway:problem:upstream-unhealthy");

    for s in &sims {
        s.set_behaviour(Behaviour::default());
    }
    eventually("both healthy again", Duration::from_secs(10), || {
        sims.iter().all(|s| endpoint(&gw, s)["healthy"] == true)
    })
    .await
    .unwrap();
    get_ok(&c, &gw, 4).await;
    assert!(attempts(&gw, &sims[0]) > tried, "traffic is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rate_refuses_an_attempt_whose_turn_is_further_than_the_queue_timeout() {
    let sims = sims(1).await;
    let gw = Gateway::start(&file(
        &sims,
        "    max_rate: {rate: 1, per: 20s}\n    queue_timeout: 100ms\n",
    ))
    .unwrap();
    let c = reqwest::Client::new();
    get_ok(&c, &gw, 1).await;
    let r = get(&c, &gw).await;
    assert_eq!(r.status(), 503);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((15..=20).contains(&retry_after), "{retry_after}");
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["type"], "urn:gateway:problem:upstream-saturated");
    assert_eq!(
        sims[0].requests_started(),
        1,
        "the refused one was never sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_on_the_streaming_path_is_retried_before_the_client_sees_anything() {
    let sims = sims(1).await;
    sims[0].set_behaviour(Behaviour::fail_every(503, 2));
    let gw = Gateway::start(&file(
        &sims,
        "    outlier_detection: {enabled: false}\n    retry: {max_attempts: 2, budget_min_retries: 100, backoff: {base: 1ms, max: 2ms}}\n",
    ))
    .unwrap();
    let c = reqwest::Client::new();
    // the ERP fails every other request it sees: after the first, each client request meets a
    // 503 and is answered by its retry
    get_ok(&c, &gw, 10).await;
    assert_eq!(sims[0].requests_started(), 19);
    assert_eq!(
        gw.metric("gateway_upstream_retries_total{reason=\"status\",upstream=\"erp\"}")
            .unwrap(),
        9.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_retry_after_is_honoured_up_to_the_cap_and_passed_on_beyond_it() {
    let sims = sims(1).await;
    let gw = Gateway::start(&file(
        &sims,
        "    retry: {max_attempts: 2, budget_min_retries: 100, max_retry_after: 1s}\n",
    ))
    .unwrap();
    let c = reqwest::Client::new();
    // asks for 1 s: waited for, then retried
    sims[0].set_behaviour(Behaviour::fail(503, Some(1)).with_retry_after(1));
    get_ok(&c, &gw, 1).await;
    assert_eq!(sims[0].requests_started(), 2);
    // asks for 5 s, more than the cap: the client gets the answer as it is, at once
    sims[0].set_behaviour(Behaviour::fail(503, Some(1)).with_retry_after(5));
    let r = get(&c, &gw).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(sims[0].requests_started(), 3);
    assert_eq!(
        gw.metric(
            "gateway_upstream_retries_skipped_total{reason=\"retry_after\",upstream=\"erp\"}"
        )
        .unwrap(),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_safe_to_repeat_is_never_sent_twice() {
    let sims = sims(2).await;
    for s in &sims {
        s.set_behaviour(Behaviour::fail(503, None));
    }
    let gw = Gateway::start(&file(
        &sims,
        "    retry: {max_attempts: 3, budget_min_retries: 100}\n",
    ))
    .unwrap();
    // a POST on a route without an idempotency policy
    let yaml = std::fs::read_to_string(&gw.config).unwrap();
    gw.write_config(&format!(
        "{yaml}  - {{name: notes, methods: [POST], path: /notes, upstream: erp, upstream_path: /erp/v1/orders, policies: [json]}}\n"
    ))
    .unwrap();
    gw.sighup().unwrap();
    gw.wait_metric("gateway_config_reloads_total{result=\"success\"}", 1.0)
        .unwrap();
    let r = reqwest::Client::new()
        .post(gw.url("/notes"))
        .header("content-type", "application/json")
        .header("idempotency-key", "\"client-key\"")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "the ERP's answer, passed through");
    let seen: u64 = sims.iter().map(ErpSim::requests_started).sum();
    assert_eq!(seen, 1, "sent once");
    let record = sims.iter().flat_map(ErpSim::requests).next().unwrap();
    assert_eq!(
        record.header("idempotency-key"),
        Some("\"client-key\""),
        "no gateway key: the client's own passes unchanged"
    );
}
