//! Strict framing: smuggling-shaped requests get 400 and a closed connection, oversized heads
//! 431, and none of them reaches the upstream.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use erp_sim::ErpSim;
use tests::{Gateway, policy_file, raw_request};

const ROUTES: &str = "\
policies:
  json: {kind: json_body}
routes:
  - name: stream
    methods: [POST]
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

async fn setup() -> (ErpSim, Gateway) {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&policy_file(
        sim.addr(),
        "",
        &format!("limits:\n  max_header_bytes: 8KiB\n{ROUTES}"),
    ))
    .unwrap();
    (sim, gw)
}

fn attack(path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{headers}\r\n{body}"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_get_400_a_closed_connection_and_reach_nothing() {
    let (sim, gw) = setup().await;
    let cases: [(&str, &str, &str); 5] = [
        (
            "CL.TE",
            "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\nX",
        ),
        (
            "TE.CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            "2\r\n{}\r\n0\r\n\r\n",
        ),
        (
            "TE not chunked",
            "Transfer-Encoding: gzip, chunked\r\n",
            "2\r\n{}\r\n0\r\n\r\n",
        ),
        (
            "TE twice",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "2\r\n{}\r\n0\r\n\r\n",
        ),
        (
            "differing CL",
            "Content-Length: 2\r\nContent-Length: 3\r\n",
            "{} ",
        ),
    ];
    for path in ["/stream", "/orders"] {
        for (name, headers, body) in cases {
            let r = raw_request(gw.http, &attack(path, headers, body)).unwrap();
            assert_eq!(r.status, 400, "{name} on {path}: {r:?}");
            assert!(r.closed, "{name} on {path}: the connection must be closed");
        }
    }
    // identity-only Transfer-Encoding is not chunked either
    let r = raw_request(
        gw.http,
        &attack("/stream", "Transfer-Encoding: identity\r\n", "{}"),
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.closed);

    assert_eq!(
        sim.requests_started(),
        0,
        "reached the ERP: {:?}",
        sim.requests()
    );
    let m = gw.metrics().unwrap();
    assert!(
        m.contains("gateway_edge_rejections_total{reason=\"cl_and_te\"} 4"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_framing_rejections_are_problem_documents() {
    let (_sim, gw) = setup().await;
    let r = raw_request(
        gw.http,
        &attack(
            "/orders",
            "Content-Length: 2\r\nTransfer-Encoding: chunked\r\nX-Request-Id: smug-1\r\n",
            "0\r\n\r\n",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let p = r.json().unwrap();
    assert_eq!(p["type"], "urn:gateway:problem:bad-framing");
    assert_eq!(p["request_id"], "smug-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431() {
    let (sim, gw) = setup().await;
    let big = "a".repeat(9 * 1024);
    let r = raw_request(
        gw.http,
        format!(
            "POST /stream HTTP/1.1\r\nHost: gw\r\nX-Big: {big}\r\nContent-Length: 2\r\n\r\n{{}}"
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(
        r.json().unwrap()["type"],
        "urn:gateway:problem:headers-too-large"
    );
    assert_eq!(sim.requests_started(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_framed_chunked_request_still_passes() {
    let (sim, gw) = setup().await;
    let r = raw_request(
        gw.http,
        &attack(
            "/orders",
            "Transfer-Encoding: chunked\r\nConnection: close\r\n",
            "2\r\n{}\r\n0\r\n\r\n",
        ),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(sim.requests_started(), 1);
    assert_eq!(&sim.requests()[0].body[..], b"{}");
}
