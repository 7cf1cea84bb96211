//! criterion: resolving a request against the route table of the example policy set (the
//! per-request route match every request pays).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use policies::compile::compile_file;
use policies::env::CompileEnv;
use policies::model::Resolved;

fn route_table(c: &mut Criterion) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/files/gateway.yaml");
    let set = match compile_file(&file, &CompileEnv::default(), None) {
        Ok(set) => set,
        Err(e) => panic!("the example policy set does not compile: {e:?}"),
    };
    let mut g = c.benchmark_group("route_table");
    for (name, method, path) in [
        (
            "post_channel_orders",
            Method::POST,
            "/channels/amazon/orders",
        ),
        ("get_erp_document", Method::GET, "/erp/orders/SO-000001"),
        ("miss", Method::GET, "/nowhere/at/all"),
        ("method_not_allowed", Method::GET, "/channels/amazon/orders"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = set.resolve(black_box(&method), None, black_box(path));
                black_box(matches!(r, Resolved::Route { .. }))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, route_table);
criterion_main!(benches);
