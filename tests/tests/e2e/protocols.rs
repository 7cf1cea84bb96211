//! What the upstream receives, byte for byte, whatever protocol the client spoke: an HTTP/1.1
//! request line, one `Host`, no HTTP/2 pseudo-headers, the body intact; and the pooled upstream
//! connection still serves the next request. Checked on a raw upstream listener for a body
//! route (the buffered exchange) over HTTP/1.1, HTTPS with HTTP/1.1 and HTTPS with HTTP/2, and
//! for a streaming route fed by an HTTP/2 client that ends its body with an empty DATA frame
//! (Pingora issue 935).

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use bytes::Bytes;
use tests::raw_upstream::{RawRequest, RawUpstream};
use tests::{Gateway, Start, client, policy_file, workspace_root};

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
  - name: stream
    methods: [POST]
    path: /stream
    upstream: erp
    upstream_path: /erp/v1/stream
";

fn start(upstream: &RawUpstream, upstream_keys: &str) -> Gateway {
    let certs = workspace_root().join("certs");
    let yaml = policy_file(upstream.addr(), upstream_keys, ROUTES).replace(
        "listeners:\n",
        &format!(
            "listeners:\n  https: {{address: \"127.0.0.1:0\", cert: \"{}\", key: \"{}\"}}\n",
            certs.join("dev-tls.crt").display(),
            certs.join("dev-tls.key").display()
        ),
    );
    Gateway::start_with(
        &yaml,
        Start {
            https: true,
            ..Start::default()
        },
    )
    .unwrap()
}

fn http1_client() -> reqwest::Client {
    let ca = std::fs::read(workspace_root().join("certs/dev-ca.crt")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .http1_only()
        .build()
        .unwrap()
}

fn assert_http11_with_host(r: &RawRequest, line: &str, host: &str) {
    assert_eq!(r.request_line, line, "{r:?}");
    assert_eq!(r.header_values("host"), [host], "exactly one Host: {r:?}");
    assert!(
        r.headers.iter().all(|(n, _)| !n.starts_with(':')),
        "no pseudo-header may reach an HTTP/1.1 upstream: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_route_sends_http11_with_host_over_every_client_protocol_and_reuses_the_connection()
{
    let upstream = RawUpstream::start().unwrap();
    let gw = start(&upstream, "");
    let https = gw.https.unwrap().port();
    let cases = [
        (
            "http/1.1",
            http1_client(),
            format!("http://{}", gw.http),
            gw.http.to_string(),
        ),
        (
            "https http/1.1",
            http1_client(),
            format!("https://localhost:{https}"),
            format!("localhost:{https}"),
        ),
        (
            "https h2",
            client().unwrap(),
            format!("https://localhost:{https}"),
            format!("localhost:{https}"),
        ),
    ];
    let mut sent = Vec::new();
    for (label, c, base, host) in &cases {
        for n in 0..2 {
            let body = format!("{{\"order\":\"{label}-{n}\",\"total\":\"12.50\"}}");
            let r = c
                .post(format!("{base}/channels/amazon/orders"))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let version = r.version();
            assert_eq!(r.status(), 201, "{label} #{n}: {}", r.text().await.unwrap());
            if *label == "https h2" {
                assert_eq!(version, reqwest::Version::HTTP_2, "ALPN should pick h2");
            } else {
                assert_eq!(version, reqwest::Version::HTTP_11);
            }
            sent.push((body, host.clone()));
        }
    }
    let got = upstream.requests();
    assert_eq!(upstream.errors(), Vec::<String>::new());
    assert_eq!(got.len(), sent.len());
    for (r, (body, host)) in got.iter().zip(&sent) {
        assert_http11_with_host(r, "POST /erp/v1/orders?channel=amazon HTTP/1.1", host);
        assert_eq!(String::from_utf8_lossy(&r.body), *body);
        assert_eq!(r.header_values("content-length"), [body.len().to_string()]);
    }
    // pooled upstream connections carried the requests one after the other. On a loaded
    // machine a released connection can be back in the pool a moment after the next request
    // looked for one, which then opens a second (seen once in CI, for the last request); a
    // gateway that did not reuse connections would open one per request.
    let connections = upstream.connections();
    assert!(
        connections <= 2,
        "{connections} upstream connections for {} requests: {got:?}",
        got.len()
    );
    assert!(got.iter().all(|r| r.connection < 2), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstreams_configured_host_replaces_the_clients() {
    let upstream = RawUpstream::start().unwrap();
    let gw = start(&upstream, "    host: erp.internal\n");
    let https = gw.https.unwrap().port();
    let r = client()
        .unwrap()
        .post(format!("https://localhost:{https}/channels/ebay/orders"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = upstream.requests();
    assert_http11_with_host(
        &got[0],
        "POST /erp/v1/orders?channel=ebay HTTP/1.1",
        "erp.internal",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_ended_by_an_empty_data_frame_is_framed_once_upstream() {
    let upstream = RawUpstream::start().unwrap();
    let gw = start(&upstream, "");
    let https = gw.https.unwrap().port();
    let c = client().unwrap();
    // a streamed body of unknown length: hyper ends it with an empty DATA frame that carries
    // END_STREAM, exactly what Pingora issue 935 is about
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"{\"sku\":")),
        Ok(Bytes::from_static(b"\"A-1\"}")),
    ];
    let r = c
        .post(format!("https://localhost:{https}/stream"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 201);
    // the next request (on the same upstream connection when it is back in the pool) must
    // parse as a request
    let r = c
        .post(format!("https://localhost:{https}/stream"))
        .body("{\"sku\":\"B-2\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = upstream.requests();
    assert_eq!(
        upstream.errors(),
        Vec::<String>::new(),
        "stray bytes upstream"
    );
    assert_eq!(got.len(), 2);
    assert!(got[0].chunked, "{:?}", got[0]);
    assert_eq!(got[0].body, b"{\"sku\":\"A-1\"}");
    assert_http11_with_host(
        &got[0],
        "POST /erp/v1/stream HTTP/1.1",
        &format!("localhost:{https}"),
    );
    assert_eq!(got[1].body, b"{\"sku\":\"B-2\"}");
    // a second terminator would reach the first connection right after its request; give it
    // the time to arrive (on the same connection it would also have broken the next request)
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        upstream.errors(),
        Vec::<String>::new(),
        "stray bytes upstream"
    );
}
