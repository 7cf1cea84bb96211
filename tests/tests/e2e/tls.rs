//! The TLS listener, with the development certificate, over HTTP/1.1 and HTTP/2, and the admin
//! endpoints.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use erp_sim::ErpSim;
use serde_json::Value;
use tests::{Gateway, Start, client, policy_file, raw_request, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http1_and_h2_with_the_dev_certificate() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let certs = workspace_root().join("certs");
    let yaml = policy_file(
        sim.addr(),
        "",
        "routes:\n  - {name: echo, methods: [GET], path: /echo, upstream: erp}\n",
    )
    .replace(
        "listeners:\n",
        &format!(
            "listeners:\n  https: {{address: \"127.0.0.1:0\", cert: \"{}\", key: \"{}\"}}\n",
            certs.join("dev-tls.crt").display(),
            certs.join("dev-tls.key").display()
        ),
    );
    let gw = Gateway::start_with(
        &yaml,
        Start {
            https: true,
            ..Start::default()
        },
    )
    .unwrap();
    let https = gw.https.expect("an https listener");
    let url = format!("https://localhost:{}/echo", https.port());
    let c = client().unwrap();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN should pick h2");
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    let c1 = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(certs.join("dev-ca.crt")).unwrap())
                .unwrap(),
        )
        .http1_only()
        .build()
        .unwrap();
    let r = c1.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(sim.requests_started(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_serves_health_readiness_metrics_and_config() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&policy_file(
        sim.addr(),
        "",
        "routes:\n  - {name: echo, methods: [GET], path: \"/echo/{channel}\", upstream: erp}\n",
    ))
    .unwrap();
    let r = raw_request(
        gw.admin,
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let r = raw_request(
        gw.admin,
        b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let r = raw_request(
        gw.admin,
        b"GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));

    for _ in 0..3 {
        assert_eq!(
            reqwest::get(gw.url("/echo/shopify"))
                .await
                .unwrap()
                .status(),
            200
        );
    }
    gw.wait_metric(
        "gateway_requests_total{channel=\"shopify\",route=\"echo\",status_class=\"2xx\"}",
        3.0,
    )
    .unwrap();
    let m = gw.metrics().unwrap();
    assert!(
        m.contains("gateway_request_duration_seconds_count{route=\"echo\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("# TYPE gateway_upstream_errors_total counter"),
        "{m}"
    );
    assert!(
        !m.contains("/echo/shopify"),
        "raw paths must never be labels"
    );

    let doc = gw.config_doc().unwrap();
    assert!(
        doc["version"]["hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(doc["version"]["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(doc["routes"][0]["name"], "echo");
    assert_eq!(doc["routes"][0]["buffered"], false);
}
