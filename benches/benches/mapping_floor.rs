//! criterion, under mimalloc (the `gateway` binary's allocator): the example set's Amazon
//! order as the load test's ALL sends it (one line, or two), through the body path's steps, next
//! to the cost of building the mapping's output document itself (`output_clone`: a deep copy
//! of the canonical order). That copy is what any mapping producing the same
//! `serde_json::Value` pays at least; `apply` minus `output_validation` minus `output_clone` is
//! what interpreting the mapping adds on top (issue 13, twenty-first part). Neither drops its
//! output in the timed part; `apply` drops its input there.

use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::Value;
use transforms::{Catalog, PrecheckLimits, canonical_validator, parse_checked};

#[global_allocator]
static ALLOCATOR: allocator::Mimalloc = allocator::Mimalloc;

/// The example set's sample order with `lines` copies of its first line, each with its own
/// item id, as `orders::amazon_variants` gives the load test one line or two.
fn example_order(lines: usize) -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/files/samples/amazon-order.json");
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("sample order: {e}"));
    let mut order: Value =
        serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("sample order: {e}"));
    let first = order["OrderItems"][0].clone();
    let items = (0..lines)
        .map(|k| {
            let mut line = first.clone();
            line["OrderItemId"] = Value::from(format!("{:014}", 5_015_851_154_158u64 + k as u64));
            line
        })
        .collect();
    order["OrderItems"] = Value::Array(items);
    order
}

fn benches(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../transforms/mappings");
    let catalog = Catalog::load(&root).unwrap_or_else(|errors| {
        let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("the mappings do not load:\n{}", listed.join("\n"))
    });
    let mapping = catalog.mapping("amazon", "order").expect("amazon/order");
    let validator = canonical_validator("order").expect("the canonical order schema");
    let limits = PrecheckLimits::default();

    let mut group = c.benchmark_group("mapping_floor/amazon_example");
    for lines in [1usize, 2] {
        let order = example_order(lines);
        let text = serde_json::to_vec(&order).expect("serializable");
        let canonical = mapping
            .apply(order.clone())
            .expect("the example order maps");
        let label = format!("{lines}_line");
        group.bench_with_input(BenchmarkId::new("parse", &label), &text, |b, text| {
            b.iter(|| parse_checked(black_box(text), &limits).expect("valid JSON"));
        });
        group.bench_with_input(BenchmarkId::new("apply", &label), &order, |b, order| {
            b.iter_batched(
                || order.clone(),
                |order| mapping.apply(order).expect("the order maps"),
                BatchSize::SmallInput,
            );
        });
        group.bench_with_input(
            BenchmarkId::new("output_validation", &label),
            &canonical,
            |b, canonical| b.iter(|| validator.validate(black_box(canonical), 100).is_ok()),
        );
        group.bench_with_input(
            BenchmarkId::new("output_clone", &label),
            &canonical,
            // The copy is dropped untimed, as `apply`'s output is.
            |b, canonical| {
                b.iter_batched(
                    || (),
                    |()| black_box(canonical).clone(),
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(mapping_floor_benches, benches);
criterion_main!(mapping_floor_benches);
