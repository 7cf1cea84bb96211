//! Memory of the in-process idempotency records: stores N answers of ~200 B through the
//! policy's whole path (new key, ~2 KB order, completion) and prints the growth of the resident
//! set per record (what the load test's peak RSS counts; the request's own temporaries are freed
//! and reused, so what stays is the records). A counting allocator would be exacter, but the
//! workspace forbids `unsafe`. The answer is shaped as the gateway hands it over:
//! header values are slices of Pingora's response-header read buffer (4 KiB reserved) and the
//! body was grown in a `BytesMut`, so anything that keeps those buffers alive shows here.
//! Run: `cargo bench -p benches --bench idempotency_memory`.

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use policies::compile::compile_str;
use policies::env::CompileEnv;
use policies::kinds::Policy;
use policies::pipeline::{Channel, Completion, ExchangeState, RequestView};
use policies::route::PathParams;

const RECORDS: usize = 50_000;
const ANSWER: usize = 200;

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Response headers as Pingora 0.9 parses them: every value a slice of one frozen read buffer.
fn pingora_headers() -> HeaderMap {
    let mut buf = BytesMut::with_capacity(4096);
    buf.put_slice(b"application/json");
    buf.put_slice(b"W/\"abc123\"");
    let buf = buf.freeze();
    let mut h = HeaderMap::new();
    let value = |r: std::ops::Range<usize>| match HeaderValue::from_maybe_shared(buf.slice(r)) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    };
    h.insert(http::header::CONTENT_TYPE, value(0..16));
    h.insert(HeaderName::from_static("x-erp-trace"), value(16..26));
    h
}

/// A body read in chunks into a `BytesMut`, as the gateway's forwarding layer does.
fn grown_body() -> Bytes {
    let mut out = BytesMut::new();
    for _ in 0..4 {
        out.extend_from_slice(&[b'x'; ANSWER / 4]);
    }
    out.freeze()
}

fn main() {
    let yaml = "version: 1\nchannels: {amazon: {}}\nupstreams: {erp: {endpoints: [\"127.0.0.1:9\"]}}\n\
                policies:\n  idem: {kind: idempotency}\nroutes: []\n";
    let set = match compile_str(Path::new("bench.yaml"), yaml, &CompileEnv::default(), None) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let policy: &Policy = &set.policies["idem"].policy;
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => panic!("{e}"),
    };
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/files/samples/amazon-order.json");
    let body = match std::fs::read(path) {
        Ok(b) => Bytes::from(b),
        Err(e) => panic!("sample order: {e}"),
    };
    let params = PathParams::default();
    let rss_before = rss_bytes();
    rt.block_on(async {
        for n in 0..RECORDS {
            let mut headers = HeaderMap::new();
            let key = format!("\"8e03978e-40d5-43e8-bc93-{n:012}\"");
            match HeaderValue::try_from(key) {
                Ok(v) => headers.insert("idempotency-key", v),
                Err(e) => panic!("{e}"),
            };
            let view = RequestView {
                method: &Method::POST,
                path: "/channels/amazon/orders",
                query: None,
                headers: &headers,
                params: &params,
            };
            let mut s = ExchangeState {
                channel: Some(Channel {
                    index: 0,
                    name: "amazon".into(),
                }),
                route: Some("orders".into()),
                ..ExchangeState::default()
            };
            let mut b = body.clone();
            let _ = policy.on_request(&view, &mut s).await;
            assert!(
                policy
                    .on_request_body(&view, &mut s, &mut b)
                    .await
                    .is_continue()
            );
            let resp_headers = pingora_headers();
            let answer = grown_body();
            let done = Completion {
                status: 201,
                forwarded: true,
                headers: Some(&resp_headers),
                body: Some(&answer),
            };
            policy.on_complete(&done, &mut s).await;
        }
    });
    let rss = rss_bytes().saturating_sub(rss_before) as f64 / RECORDS as f64;
    println!(
        "idempotency/local: {RECORDS} records of a {ANSWER} B answer: RSS +{rss:.0} B per record \
         ({:.0} B beyond the answer)",
        rss - ANSWER as f64
    );
}
