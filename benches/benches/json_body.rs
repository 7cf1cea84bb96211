//! criterion: the `json_body` policy's body phase (UTF-8, well-formed JSON, nesting depth) on
//! a ~2 KB order and a ~200 KB one; and the `schema` policy's body phase on the ~2 KB Amazon
//! order (`schema/2KB/policy`: pre-checks, parse, validation) with its parts alone (`parse`,
//! `is_valid`).

use std::hint::black_box;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use policies::compile::compile_file;
use policies::env::CompileEnv;
use policies::model::Resolved;
use policies::pipeline::{ExchangeState, Flow, RequestView};
use serde_json::Value;

/// Polls a future that never waits (the body phase is pure computation) to completion.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// The sample order, minified (~2 KB), and one with its items repeated to ~200 KB.
fn bodies() -> (Bytes, Bytes) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let raw = match std::fs::read(root.join("policies/files/samples/amazon-order.json")) {
        Ok(r) => r,
        Err(e) => panic!("sample order: {e}"),
    };
    let order: Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(e) => panic!("sample order: {e}"),
    };
    let small = serde_json::to_vec(&order).unwrap_or_default();
    let copies = vec![order; 200_000 / small.len().max(1) + 1];
    let large = serde_json::to_vec(&serde_json::json!({"orders": copies})).unwrap_or_default();
    (Bytes::from(small), Bytes::from(large))
}

fn json_body(c: &mut Criterion) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/files/gateway.yaml");
    let set = match compile_file(&file, &CompileEnv::default(), None) {
        Ok(set) => set,
        Err(e) => panic!("the example policy set does not compile: {e:?}"),
    };
    let Resolved::Route { route, params, .. } =
        set.resolve(&Method::POST, None, "/channels/amazon/orders")
    else {
        panic!("the example set has no POST /channels/{{channel}}/orders route");
    };
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let view = RequestView {
        method: &Method::POST,
        path: "/channels/amazon/orders",
        query: None,
        headers: &headers,
        params: &params,
    };
    let (small, large) = bodies();
    let mut g = c.benchmark_group("json_body");
    for (name, body) in [("2KB", small), ("200KB", large)] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| {
                let mut state = ExchangeState::default();
                let mut body = body.clone();
                let flow = ready(route.chain.on_request_body(&view, &mut state, &mut body));
                assert!(matches!(flow, Flow::Continue(())));
                black_box(body)
            })
        });
    }
    g.finish();

    // the schema policy of the same route, on the amazon channel
    let schema = &set.policies["order-schema"].policy;
    let Some(amazon) = set.channels.get("amazon") else {
        panic!("the example set has no amazon channel");
    };
    let Ok(validator) = policies::kinds::body_schema::load_schema(
        "schemas/amazon/order.schema.json",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/files"),
    ) else {
        panic!("the amazon order schema does not compile");
    };
    let (small, _) = bodies();
    let mut g = c.benchmark_group("schema/2KB");
    g.bench_function("parse", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&small)).map(|_| ()))
    });
    let value: Value = serde_json::from_slice(&small).unwrap_or_default();
    g.bench_function("is_valid", |b| {
        b.iter(|| assert!(validator.is_valid(black_box(&value))))
    });
    g.bench_function("policy", |b| {
        b.iter(|| {
            let mut state = ExchangeState {
                channel: Some(amazon.clone()),
                ..ExchangeState::default()
            };
            let mut body = small.clone();
            let flow = ready(schema.on_request_body(&view, &mut state, &mut body));
            assert!(matches!(flow, Flow::Continue(())));
            black_box(state)
        })
    });
    g.finish();
}

criterion_group!(benches, json_body);
criterion_main!(benches);
