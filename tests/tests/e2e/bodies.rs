//! Body handling: body policies see the whole body before anything goes upstream; a rejected
//! body sends nothing (not even headers); large bodies arrive intact; limits answer 413.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::io::Write;
use std::net::TcpStream;

use erp_sim::ErpSim;
use serde_json::Value;
use tests::{Gateway, policy_file, read_response, sha256_hex};

const ROUTES: &str = "\
policies:
  json: {kind: json_body}
routes:
  - name: orders
    methods: [POST]
    path: /channels/{channel}/orders
    upstream: erp
    upstream_path: /erp/v1/orders?channel={channel}
    policies: [json]
    max_body_bytes: 6MiB
  - name: stream
    methods: [POST]
    path: /stream
    upstream: erp
    upstream_path: /echo/stream
    max_body_bytes: 1KiB
";

async fn setup() -> (ErpSim, Gateway) {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&policy_file(sim.addr(), "", ROUTES)).unwrap();
    (sim, gw)
}

/// A valid JSON order of about `size` bytes.
fn big_order(size: usize) -> Vec<u8> {
    let line = r#"{"sku":"SKU-0000001","qty":1,"price":{"amount":"19.99","currency":"USD"},"title":"A widget with a long enough title to take room"},"#;
    let mut out = String::with_capacity(size + 256);
    out.push_str(r#"{"id":"9007199254740993","lines":["#);
    while out.len() + line.len() < size {
        out.push_str(line);
    }
    out.push_str(r#"{"sku":"last","qty":1}]}"#);
    out.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_rejected_and_nothing_reaches_the_erp() {
    let (sim, gw) = setup().await;
    let client = reqwest::Client::new();
    for (body, reason) in [
        (&b"{\"a\":"[..], "malformed_json"),
        (b"[1,2", "malformed_json"),
        (b"", "empty_body"),
        (b"{\"a\":\"\xff\"}", "not_utf8"),
    ] {
        let resp = client
            .post(gw.url("/channels/amazon/orders"))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{reason}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let p: Value = resp.json().await.unwrap();
        assert_eq!(p["type"], "urn:gateway:problem:malformed-json", "{reason}");
    }
    let resp = client
        .post(gw.url("/channels/amazon/orders"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert_eq!(
        sim.requests_started(),
        0,
        "the ERP saw: {:?}",
        sim.requests()
    );
    assert_eq!(
        sim.connections_accepted(),
        0,
        "not even a connection may be opened"
    );
    let m = gw.metrics().unwrap();
    assert!(
        m.contains("gateway_policy_rejections_total{policy=\"json\",reason=\"malformed_json\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("gateway_policy_rejections_total{policy=\"json\",reason=\"content_type\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_mib_order_arrives_intact() {
    let (sim, gw) = setup().await;
    let body = big_order(5 * 1024 * 1024);
    assert!(body.len() > 5 * 1024 * 1024 - 200);
    let resp = reqwest::Client::new()
        .post(gw.url("/channels/walmart/orders"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let got = sim.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].query.as_deref(), Some("channel=walmart"));
    assert_eq!(got[0].body.len(), body.len());
    assert_eq!(sha256_hex(&got[0].body), sha256_hex(&body));
    assert_eq!(
        got[0].header("content-length"),
        Some(body.len().to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_is_buffered_whole_and_checked_before_forwarding() {
    let (sim, gw) = setup().await;
    let body = big_order(300 * 1024);
    let mut s = TcpStream::connect(gw.http).unwrap();
    write!(s, "POST /channels/ebay/orders HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    for chunk in body.chunks(7000) {
        write!(s, "{:x}\r\n", chunk.len()).unwrap();
        s.write_all(chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 201);
    let got = sim.requests();
    assert_eq!(sha256_hex(&got[0].body), sha256_hex(&body));
    assert_eq!(got[0].header("transfer-encoding"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_and_never_reach_the_upstream() {
    let (sim, gw) = setup().await;
    // declared too large: refused before reading
    let mut s = TcpStream::connect(gw.http).unwrap();
    write!(
        s,
        "POST /stream HTTP/1.1\r\nHost: gw\r\nContent-Length: 2048\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.closed);

    // chunked and too large: refused while buffering, before anything is sent upstream
    let mut s = TcpStream::connect(gw.http).unwrap();
    write!(
        s,
        "POST /stream HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'x'; 600];
    for _ in 0..2 {
        write!(s, "{:x}\r\n", chunk.len()).unwrap();
        s.write_all(&chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 413);

    // 6 MiB route limit on the buffered route
    let resp = reqwest::Client::new()
        .post(gw.url("/channels/amazon/orders"))
        .header("content-type", "application/json")
        .body(big_order(7 * 1024 * 1024))
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 413);
    } // a client may also see the connection closed while still sending
    assert_eq!(
        sim.requests_started(),
        0,
        "the ERP saw: {:?}",
        sim.requests()
    );
    let m = gw.metrics().unwrap();
    assert!(
        m.contains("gateway_edge_rejections_total{reason=\"body_too_large\"}"),
        "{m}"
    );

    // and a body within the limit on the streaming route passes
    let resp = reqwest::Client::new()
        .post(gw.url("/stream"))
        .body(vec![b'y'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["body_len"], 1000);
}
