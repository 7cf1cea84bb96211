//! Strict framing: smuggling-shaped requests get 400 and a closed connection, oversized heads
//! 431, and none of them reaches the upstream. The strict HTTP/1 edge: control characters in
//! the target, a missing or repeated `Host`, `Content-Length` lists, repeated singleton fields,
//! obs-fold and unparsable heads are problem+json 400s, counted and logged; slow heads and
//! bodies get 408; kept-alive and pipelined good requests still work.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use erp_sim::ErpSim;
use tests::{Gateway, RawResponse, policy_file, raw_request, read_response};

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

/// A refused request: what it is, the raw bytes, and the answer expected.
struct Refused {
    name: &'static str,
    bytes: Vec<u8>,
    status: u16,
    slug: &'static str,
    reason: &'static str,
}

fn refused(
    name: &'static str,
    bytes: &[u8],
    status: u16,
    slug: &'static str,
    reason: &'static str,
) -> Refused {
    Refused {
        name,
        bytes: bytes.to_vec(),
        status,
        slug,
        reason,
    }
}

fn edge_cases() -> Vec<Refused> {
    let mut cases = Vec::new();
    // control characters, DEL, space and non-ASCII in the request target
    for (name, target) in [
        ("NUL in target", &b"/stream\x00x"[..]),
        ("CR in target", b"/stream\rx"),
        ("TAB in target", b"/stream\tx"),
        ("C0 in target", b"/stream\x01x"),
        ("ESC in target", b"/stream\x1bx"),
        ("DEL in target", b"/stream\x7fx"),
        ("SP in target", b"/stream x"),
        ("non-ASCII in target", b"/stream\xc3\xa9"),
        ("control in query", b"/stream?a=\x02"),
    ] {
        let mut bytes = b"POST ".to_vec();
        bytes.extend_from_slice(target);
        bytes.extend_from_slice(b" HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}");
        cases.push(refused(
            name,
            &bytes,
            400,
            "bad-request-target",
            "bad_request_target",
        ));
    }
    let head = |h: &str| format!("POST /stream HTTP/1.1\r\n{h}\r\n{{}}").into_bytes();
    cases.extend([
        refused(
            "HTTP/1.1 without Host",
            &head("Content-Length: 2\r\n"),
            400,
            "bad-host",
            "missing_host",
        ),
        refused(
            "two Host fields",
            &head("Host: gw\r\nHost: evil\r\nContent-Length: 2\r\n"),
            400,
            "bad-host",
            "repeated_host",
        ),
        refused(
            "Content-Length list of equal values",
            &head("Host: gw\r\nContent-Length: 2,2\r\n"),
            400,
            "bad-framing",
            "bad_content_length",
        ),
        refused(
            "Content-Length 2957,2957",
            &head("Host: gw\r\nContent-Length: 2957,2957\r\n"),
            400,
            "bad-framing",
            "bad_content_length",
        ),
        refused(
            "Content-Length repeated, equal",
            &head("Host: gw\r\nContent-Length: 2\r\nContent-Length: 2\r\n"),
            400,
            "bad-framing",
            "bad_content_length",
        ),
        refused(
            "Content-Length differing (Pingora's bare 400 before)",
            &head("Host: gw\r\nContent-Length: 2\r\nContent-Length: 3\r\n"),
            400,
            "bad-framing",
            "bad_content_length",
        ),
        refused(
            "Content-Length not a number",
            &head("Host: gw\r\nContent-Length: 0x2\r\n"),
            400,
            "bad-framing",
            "bad_content_length",
        ),
        refused(
            "Transfer-Encoding identity (Pingora's bare 400 before)",
            &head("Host: gw\r\nTransfer-Encoding: identity\r\n"),
            400,
            "bad-framing",
            "bad_transfer_encoding",
        ),
        refused(
            "obs-fold",
            &head("Host: gw\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n"),
            400,
            "malformed-request",
            "obs_fold",
        ),
        refused(
            "space before the colon (Pingora's bare 400 before)",
            &head("Host: gw\r\nContent-Length : 2\r\n"),
            400,
            "malformed-request",
            "malformed_head",
        ),
        refused(
            "userinfo in Host (Pingora's bare 400 before)",
            &head("Host: user@gw\r\nContent-Length: 2\r\n"),
            400,
            "bad-host",
            "bad_host",
        ),
        refused(
            "absolute-form URL naming another host (Pingora's bare 400 before)",
            b"POST http://other/stream HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}",
            400,
            "bad-host",
            "bad_host",
        ),
        refused(
            "a target that is neither a path nor a URL",
            b"POST stream HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}",
            400,
            "bad-request-target",
            "bad_request_target",
        ),
        refused(
            "CONNECT (Pingora's bare 405 before)",
            b"CONNECT gw:443 HTTP/1.1\r\nHost: gw:443\r\n\r\n",
            405,
            "",
            "method_not_allowed",
        ),
        refused(
            "not HTTP at all",
            b"HELLO THERE\r\n\r\n",
            400,
            "malformed-request",
            "malformed_head",
        ),
        refused(
            "NUL in a header value",
            &head("Host: gw\r\nX-A: a\x00b\r\nContent-Length: 2\r\n"),
            400,
            "malformed-request",
            "malformed_head",
        ),
    ]);
    for field in [
        "Content-Type: application/json",
        "Authorization: Bearer a",
        "Idempotency-Key: k1",
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "X-Request-Id: r1",
        "X-Shopify-Hmac-Sha256: aa",
        "X-EBAY-SIGNATURE: aa",
    ] {
        let name = field.split(':').next().unwrap_or_default();
        let twice = format!(
            "Host: gw\r\n{field}\r\n{}\r\nContent-Length: 2\r\n",
            field.to_lowercase()
        );
        cases.push(Refused {
            name: Box::leak(format!("{name} twice").into_boxed_str()),
            bytes: head(&twice),
            status: 400,
            slug: "repeated-header",
            reason: "repeated_header",
        });
    }
    cases
}

fn rejections(gw: &Gateway, reason: &str) -> f64 {
    gw.metric(&format!(
        "gateway_edge_rejections_total{{reason=\"{reason}\"}}"
    ))
    .unwrap()
}

fn assert_problem(r: &RawResponse, status: u16, slug: &str, name: &str) {
    assert_eq!(r.status, status, "{name}: {r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{name}"
    );
    assert!(
        r.header("x-request-id").is_some_and(|v| !v.is_empty()),
        "{name}: no request id: {r:?}"
    );
    let p = r.json().unwrap();
    let want = if slug.is_empty() {
        "about:blank".to_owned()
    } else {
        format!("urn:gateway:problem:{slug}")
    };
    assert_eq!(p["type"], want, "{name}: {p}");
    assert_eq!(p["status"], status, "{name}");
    assert_eq!(
        Some(p["request_id"].as_str().unwrap_or_default()),
        r.header("x-request-id"),
        "{name}"
    );
    assert!(r.closed, "{name}: the connection must be closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_strict_edge_refuses_every_listed_shape_as_a_counted_logged_problem() {
    let (sim, gw) = setup().await;
    let cases = edge_cases();
    let mut expected: BTreeMap<&str, (f64, u16)> = BTreeMap::new();
    for case in &cases {
        let before = rejections(&gw, case.reason);
        let r = raw_request(gw.http, &case.bytes).unwrap();
        assert_problem(&r, case.status, case.slug, case.name);
        assert_eq!(
            rejections(&gw, case.reason),
            before + 1.0,
            "{}: the counter of {} must move",
            case.name,
            case.reason
        );
        expected.entry(case.reason).or_insert((0.0, case.status)).0 += 1.0;
    }
    for (reason, (n, status)) in &expected {
        assert_eq!(rejections(&gw, reason), *n, "{reason}");
        // each refusal has its access-log line, with the reason and the status
        let line = gw
            .wait_log("request", "reason", reason, Duration::from_secs(10))
            .unwrap();
        assert_eq!(line["outcome"], "refused", "{line}");
        assert_eq!(line["status"], *status, "{line}");
    }
    assert_eq!(
        sim.requests_started(),
        0,
        "reached the ERP: {:?}",
        sim.requests()
    );

    // the client's well-formed request id is kept
    let r = raw_request(
        gw.http,
        b"POST /stream HTTP/1.1\r\nHost: gw\r\nX-Request-Id: edge-7\r\nContent-Length: 1,1\r\n\r\n{}",
    )
    .unwrap();
    assert_eq!(r.header("x-request-id"), Some("edge-7"));
    assert_eq!(r.json().unwrap()["instance"], "/stream");

    // fields that may repeat stay allowed, and a good request still goes through
    let r = raw_request(
        gw.http,
        b"POST /stream HTTP/1.1\r\nHost: gw\r\nAccept: a\r\nAccept: b\r\nVia: 1.1 a\r\nVia: 1.1 b\r\n\
          X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nCookie: a=1\r\nCookie: b=2\r\n\
          Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(sim.requests_started(), 1);
}

/// A gateway whose head and body timeouts are short, so slow clients are timed out in a test.
async fn setup_timeouts() -> (ErpSim, Gateway) {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&policy_file(
        sim.addr(),
        "",
        &format!("limits:\n  head_timeout: 300ms\n  body_idle_timeout: 300ms\n{ROUTES}"),
    ))
    .unwrap();
    (sim, gw)
}

/// Reads the next response on a connection (`read_response` leaves a short timeout behind
/// after probing for the close).
fn read_next(s: &mut TcpStream) -> RawResponse {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    read_response(s).unwrap()
}

fn connect(gw: &Gateway) -> TcpStream {
    let s = TcpStream::connect(gw.http).unwrap();
    // only bounds a wait for an answer that must come
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_gets_408_even_when_it_trickles() {
    let (sim, gw) = setup_timeouts().await;
    // a partial head, then nothing
    let mut s = connect(&gw);
    s.write_all(b"POST /stream HTTP/1.1\r\nHost: gw\r\n")
        .unwrap();
    let r = read_next(&mut s);
    assert_problem(&r, 408, "request-timeout", "partial head");

    // one byte at a time, each well within any per-read timeout: the whole head is bounded
    let mut s = connect(&gw);
    let mut writer = s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let head = format!(
            "POST /stream HTTP/1.1\r\nHost: gw\r\nX-Slow: {}\r\n\r\n",
            "a".repeat(100_000)
        );
        for b in head.bytes() {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let r = read_next(&mut s);
    assert_problem(&r, 408, "request-timeout", "trickled head");
    drop(s);
    trickle.join().unwrap();

    assert_eq!(rejections(&gw, "head_timeout"), 2.0);
    assert_eq!(sim.requests_started(), 0);

    // on a kept-alive connection the deadline starts at the next request's first byte
    let mut s = connect(&gw);
    s.write_all(b"POST /stream HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    let r = read_next(&mut s);
    assert_eq!(r.status, 200);
    assert!(!r.closed);
    s.write_all(b"POST /stream HTTP/1.1\r\nHo").unwrap();
    let r = read_next(&mut s);
    assert_problem(&r, 408, "request-timeout", "second, partial head");
    assert_eq!(sim.requests_started(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_408() {
    let (sim, gw) = setup_timeouts().await;
    // buffered route (body policy): nothing reaches the ERP
    let mut s = connect(&gw);
    s.write_all(b"POST /orders HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{\"a\"")
        .unwrap();
    let r = read_next(&mut s);
    assert_problem(&r, 408, "request-timeout", "buffered body");
    assert_eq!(sim.requests_started(), 0);

    // streaming route: the client is answered 408 too
    let mut s = connect(&gw);
    s.write_all(b"POST /stream HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n{\"a\"")
        .unwrap();
    let r = read_next(&mut s);
    assert_problem(&r, 408, "request-timeout", "streamed body");
    assert_eq!(rejections(&gw, "body_timeout"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_and_pipelined_requests_are_each_checked() {
    let (sim, gw) = setup().await;
    let good = |n: u32| {
        format!(
            "POST /stream HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n{{\"n\":{n}}}",
            format!("{{\"n\":{n}}}").len()
        )
    };
    // three requests one after the other on one connection
    let mut s = connect(&gw);
    for n in 0..3 {
        s.write_all(good(n).as_bytes()).unwrap();
        let r = read_next(&mut s);
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
        assert!(!r.closed);
    }
    // then, after the connection idled, a bad one on it: refused, closed
    std::thread::sleep(Duration::from_millis(1_500));
    s.write_all(b"POST /stream HTTP/1.1\r\nHost: gw\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    let r = read_next(&mut s);
    assert_problem(&r, 400, "bad-host", "bad request after good ones");
    assert_eq!(sim.requests_started(), 3);
    // its latency counts from its own first byte, not from the end of the request before
    // (the idle wait between them is the connection's, not the request's)
    let line = gw
        .wait_log(
            "request",
            "reason",
            "repeated_host",
            Duration::from_secs(10),
        )
        .unwrap();
    let latency = line["latency_ms"].as_f64().unwrap();
    assert!(latency < 1_000.0, "the idle time was counted: {line}");

    // pipelined: three good requests and a bad one in one write; the good ones are answered in
    // order, the bad one is refused and never forwarded
    let mut s = connect(&gw);
    let mut burst = String::new();
    for n in 10..13 {
        burst.push_str(&good(n));
    }
    burst.push_str("GET /stream\x01 HTTP/1.1\r\nHost: gw\r\n\r\n");
    s.write_all(burst.as_bytes()).unwrap();
    for n in 10..13 {
        let r = read_response_keep(&mut s);
        assert_eq!(r.status, 200, "pipelined {n}: {r:?}");
        assert_eq!(
            r.json().unwrap()["body_utf8"],
            format!("{{\"n\":{n}}}"),
            "pipelined {n}"
        );
    }
    let r = read_next(&mut s);
    assert_problem(&r, 400, "bad-request-target", "pipelined bad request");
    assert_eq!(sim.requests_started(), 6);
}

/// Reads one response without probing for the close (more responses follow).
fn read_response_keep(s: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head.split(' ').nth(1).and_then(|v| v.parse().ok()).unwrap();
    let headers: Vec<(String, String)> = head
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    RawResponse {
        status,
        headers,
        body,
        closed: false,
    }
}
