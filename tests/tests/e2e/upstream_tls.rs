//! The gateway's side of the upstream connection against real listeners: TLS with a private CA
//! and a client certificate (mutual TLS to the ERP), refused without the certificate; HTTP/2 to
//! the upstream, negotiated by ALPN over TLS and spoken by prior knowledge (h2c) in plain text;
//! on both the streaming path (GET) and the buffered exchange (POST with a body policy).

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use erp_sim::{ErpSim, SimOptions, SimTls};
use serde_json::Value;
use tests::{Gateway, workspace_root};

const ROUTES: &str = "\
policies:
  json: {kind: json_body}
routes:
  - {name: read, methods: [GET], path: \"/echo/{*rest}\", upstream: erp}
  - {name: orders, methods: [POST], path: /orders, upstream: erp, upstream_path: /erp/v1/orders, policies: [json]}
";

fn cert(name: &str) -> String {
    workspace_root()
        .join("certs")
        .join(name)
        .display()
        .to_string()
}

async fn sim(tls: bool, client_ca: bool, http2: bool) -> ErpSim {
    let options = SimOptions {
        tls: tls.then(|| SimTls {
            cert: cert("dev-tls.crt").into(),
            key: cert("dev-tls.key").into(),
            client_ca: client_ca.then(|| cert("dev-ca.crt").into()),
        }),
        http2,
        ..SimOptions::default()
    };
    ErpSim::start_with("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap()
}

fn file(sim: &ErpSim, upstream_keys: &str) -> String {
    format!(
        "version: 1\nlisteners: {{http: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         upstreams:\n  erp:\n    endpoints: [\"{}\"]\n    connect_timeout: 1s\n    read_timeout: 2s\n    total_timeout: 5s\n{upstream_keys}{ROUTES}",
        sim.addr()
    )
}

/// A GET on the streaming path and a POST through the buffered exchange; both must succeed.
async fn both_paths(gw: &Gateway) {
    let c = reqwest::Client::new();
    let r = c.get(gw.url("/echo/ping")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = c
        .post(gw.url("/orders"))
        .header("content-type", "application/json")
        .body("{\"order\":\"PO-1\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_the_erp_presents_the_client_certificate() {
    let sim = sim(true, true, false).await;
    let gw = Gateway::start(&file(
        &sim,
        &format!(
            "    tls: {{ca: \"{}\", cert: \"{}\", key: \"{}\"}}\n",
            cert("dev-ca.crt"),
            cert("dev-client.crt"),
            cert("dev-client.key")
        ),
    ))
    .unwrap();
    both_paths(&gw).await;
    let requests = sim.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert!(r.tls);
        let client = r.client_cert.as_ref().expect("a client certificate");
        assert!(
            client.subject.contains("retail-gateway development client"),
            "{}",
            client.subject
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_client_certificate_the_gateway_is_refused_and_says_so() {
    let sim = sim(true, true, false).await;
    let gw = Gateway::start(&file(
        &sim,
        &format!("    tls: {{ca: \"{}\"}}\n", cert("dev-ca.crt")),
    ))
    .unwrap();
    let r = reqwest::get(gw.url("/echo/ping")).await.unwrap();
    assert_eq!(r.status(), 502);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["type"], "urn:gateway:problem:upstream-unavailable");
    assert!(sim.stats().tls_handshake_failures >= 1);
    assert_eq!(sim.requests_started(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_upstream_certificate_is_refused() {
    // the system's roots do not include the development CA
    let sim = sim(true, false, false).await;
    let gw = Gateway::start(&file(&sim, "    tls: true\n")).unwrap();
    let r = reqwest::get(gw.url("/echo/ping")).await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(
        gw.metric("gateway_upstream_errors_total{kind=\"tls\",upstream=\"erp\"}")
            .unwrap()
            >= 1.0
    );
    assert_eq!(sim.requests_started(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_to_the_upstream_over_tls_by_alpn() {
    let sim = sim(true, false, true).await;
    let gw = Gateway::start(&file(
        &sim,
        &format!(
            "    tls: {{ca: \"{}\"}}\n    http2: true\n",
            cert("dev-ca.crt")
        ),
    ))
    .unwrap();
    both_paths(&gw).await;
    let requests = sim.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.version, http::Version::HTTP_2, "{} {}", r.method, r.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_to_a_plain_upstream_by_prior_knowledge() {
    let sim = sim(false, false, true).await;
    let gw = Gateway::start(&file(&sim, "    http2: true\n")).unwrap();
    both_paths(&gw).await;
    let requests = sim.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.version, http::Version::HTTP_2, "{} {}", r.method, r.path);
    }
    // and the default stays HTTP/1.1
    let plain = sim_default().await;
    let gw = Gateway::start(&file(&plain, "")).unwrap();
    both_paths(&gw).await;
    assert!(
        plain
            .requests()
            .iter()
            .all(|r| r.version == http::Version::HTTP_11)
    );
}

async fn sim_default() -> ErpSim {
    sim(false, false, false).await
}
