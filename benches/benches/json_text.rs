//! criterion: the ~2 KB Amazon order's JSON text read and written by serde_json and by
//! `transforms::json_text` (`json_text/2KB/{parse,write}/{serde_json,json_text}`), under
//! mimalloc, the allocator of the `gateway` binary. The allocator matters here: the parse
//! builds each object's map from its gathered members, which costs a short-lived vector per
//! object; under glibc's malloc that is slower than serde_json's inserts, under mimalloc
//! faster.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;

#[global_allocator]
static ALLOCATOR: allocator::Mimalloc = allocator::Mimalloc;

/// The sample order, minified (~2 KB).
fn order_text() -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/files/samples/amazon-order.json");
    let raw = match std::fs::read(&path) {
        Ok(r) => r,
        Err(e) => panic!("sample order: {e}"),
    };
    match serde_json::from_slice::<Value>(&raw) {
        Ok(v) => serde_json::to_vec(&v).unwrap_or_default(),
        Err(e) => panic!("sample order: {e}"),
    }
}

fn json_text(c: &mut Criterion) {
    let text = order_text();
    let value: Value = serde_json::from_slice(&text).unwrap_or_default();
    let mut g = c.benchmark_group("json_text/2KB");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("parse/serde_json", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&text)).map(|_| ()))
    });
    g.bench_function("parse/json_text", |b| {
        b.iter(|| transforms::json_text::parse_slice(black_box(&text)).map(|_| ()))
    });
    g.bench_function("write/serde_json", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(text.len());
            let _ = serde_json::to_writer(&mut out, black_box(&value));
            out
        })
    });
    g.bench_function("write/json_text", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(text.len());
            transforms::json_text::write_value(&mut out, black_box(&value));
            out
        })
    });
    g.finish();
}

criterion_group!(benches, json_text);
criterion_main!(benches);
