//! Criterion benches of the transforms crate, per channel, for a ~2 KB and a ~200 KB order:
//! the body pre-check and parse, the canonical schema validation, and the whole transform
//! (jq mapping plus validation of its output), and the ERP answer mapped back. The large orders repeat the line items of the
//! small ones. The mappings run as `apply` does (their compiled form when they have one) and,
//! beside each, as `..._interpreted` (jaq alone). Run with
//! `cargo bench -p benches --bench transforms` (`-- --quick` for a fast look).

use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use transforms::{Catalog, PrecheckLimits, canonical_validator, parse_checked};

/// Where each channel's order keeps its lines, and the field that identifies a line.
const CHANNELS: [(&str, &[&str], &str); 4] = [
    ("amazon", &["OrderItems"], "OrderItemId"),
    ("shopify", &["line_items"], "id"),
    ("walmart", &["orderLines", "orderLine"], "lineNumber"),
    ("ebay", &["lineItems"], "lineItemId"),
];

const SMALL_BYTES: usize = 2 * 1024;
const LARGE_BYTES: usize = 200 * 1024;

fn load_catalog() -> Catalog {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../transforms/mappings");
    Catalog::load(&root).unwrap_or_else(|errors| {
        let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("the mappings do not load:\n{}", listed.join("\n"))
    })
}

fn lines_mut<'a>(order: &'a mut Value, path: &[&str]) -> &'a mut Vec<Value> {
    let mut at = order;
    for key in path {
        at = &mut at[*key];
    }
    at.as_array_mut()
        .expect("the order has its lines where the table says")
}

/// A golden order cut down to one line, then grown by copies of that line until its JSON
/// reaches `target` bytes.
fn order_of_size(template: &Value, path: &[&str], id_field: &str, target: usize) -> Value {
    // Mappings accept some orders wrapped ({"order": {...}}); the bench sends them bare.
    let mut order = match template.get("order") {
        Some(inner) if inner.is_object() => inner.clone(),
        _ => template.clone(),
    };
    let first = lines_mut(&mut order, path)
        .first()
        .cloned()
        .expect("the golden order has a line");
    let lines = lines_mut(&mut order, path);
    lines.truncate(1);
    let mut n = 1u64;
    while serde_json::to_vec(&order).expect("serializable").len() < target {
        let mut line = first.clone();
        // Walmart's line numbers are strings, Shopify's ids numbers: keep each kind.
        line[id_field] = match &first[id_field] {
            Value::Number(_) => Value::from(1_000_000 + n),
            _ => Value::from(format!("{}", 1_000_000 + n)),
        };
        lines_mut(&mut order, path).push(line);
        n += 1;
    }
    order
}

fn sized_orders(catalog: &Catalog) -> Vec<(&'static str, &'static str, Value, Vec<u8>)> {
    let mut out = Vec::new();
    for (channel, path, id_field) in CHANNELS {
        let mapping = catalog
            .mapping(channel, "order")
            .unwrap_or_else(|| panic!("no {channel}/order mapping"));
        // The smallest golden order the mapping accepts (golden cases also expect rejections):
        // the 2 KB order is one line of it, the 200 KB one many.
        let template = &mapping
            .golden_cases()
            .iter()
            .filter(|case| case.expected_rejection().is_none())
            .min_by_key(|case| case.input.to_string().len())
            .unwrap_or_else(|| panic!("{channel}/order has no golden case"))
            .input;
        for (label, target) in [("2KB", SMALL_BYTES), ("200KB", LARGE_BYTES)] {
            let order = order_of_size(template, path, id_field, target);
            let bytes = serde_json::to_vec(&order).expect("serializable");
            out.push((channel, label, order, bytes));
        }
    }
    out
}

fn benches(c: &mut Criterion) {
    let catalog = load_catalog();
    let orders = sized_orders(&catalog);
    let limits = PrecheckLimits::default();
    let validator = canonical_validator("order").expect("the canonical order schema compiles");

    let mut group = c.benchmark_group("transforms/precheck_and_parse");
    for (channel, label, _, bytes) in &orders {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new(*channel, label), bytes, |b, bytes| {
            b.iter(|| parse_checked(black_box(bytes), &limits).expect("valid JSON"));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("transforms/validate_canonical_order");
    for (channel, label, order, bytes) in &orders {
        let mapping = catalog.mapping(channel, "order").expect("mapping");
        let canonical = mapping.apply(order.clone()).expect("the order maps");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(
            BenchmarkId::new(*channel, label),
            &canonical,
            |b, canonical| {
                b.iter(|| {
                    validator
                        .validate(black_box(canonical), 100)
                        .expect("valid")
                });
            },
        );
    }
    group.finish();

    // `<label>` runs `apply` (the compiled form of the mapping when it has one, else jaq),
    // `<label>_interpreted` the same order through jaq alone, side by side.
    let mut group = c.benchmark_group("transforms/apply_order_mapping");
    for (channel, label, order, bytes) in &orders {
        let mapping = catalog.mapping(channel, "order").expect("mapping");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new(*channel, label), order, |b, order| {
            // The input is moved into the mapping, so each run gets a fresh copy, untimed.
            b.iter_batched(
                || order.clone(),
                |order| mapping.apply(order).expect("the order maps"),
                BatchSize::LargeInput,
            );
        });
        group.bench_with_input(
            BenchmarkId::new(*channel, format!("{label}_interpreted")),
            order,
            |b, order| {
                b.iter_batched(
                    || order.clone(),
                    |order| mapping.apply_interpreted(order).expect("the order maps"),
                    BatchSize::LargeInput,
                );
            },
        );
    }
    group.finish();

    // The ERP's answer mapped back for the channel (erp/ack, with its answer validation).
    let mut group = c.benchmark_group("transforms/apply_answer_mapping");
    let ack = catalog
        .response_mapping("ack")
        .expect("the erp/ack mapping");
    let answer = ack
        .golden_cases()
        .first()
        .expect("erp/ack has a golden case")
        .input
        .clone();
    group.bench_with_input(BenchmarkId::new("erp", "ack"), &answer, |b, answer| {
        b.iter_batched(
            || answer.clone(),
            |answer| ack.apply(answer).expect("the answer maps"),
            BatchSize::SmallInput,
        );
    });
    group.bench_with_input(
        BenchmarkId::new("erp", "ack_interpreted"),
        &answer,
        |b, answer| {
            b.iter_batched(
                || answer.clone(),
                |answer| ack.apply_interpreted(answer).expect("the answer maps"),
                BatchSize::SmallInput,
            );
        },
    );
    group.finish();

    let mut group = c.benchmark_group("transforms/load_catalog");
    group.sample_size(10);
    group.bench_function("all_mappings", |b| b.iter(load_catalog));
    group.finish();
}

criterion_group!(transforms_benches, benches);
criterion_main!(transforms_benches);
