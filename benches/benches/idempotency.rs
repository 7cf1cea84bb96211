//! Cost of the `idempotency` policy: the canonical fingerprint of an order, and per store
//! (in-process; Redis, against a redis-server this bench starts, skipped with a message when
//! `redis-server` is not installed) the three calls a request makes: `claim` (a new key),
//! `replay` (a claim answered by the stored response of 1 KiB) and `store` (completing a claim).
//! `policy_replay` is the whole request path of a repeat on the in-process store: key parse,
//! body parse, fingerprint, lookup and the replay answer. `policy_new` is the path of a new key
//! with the ~2 KB sample order (`idem-new` of the load matrix): key parse, body parse,
//! fingerprint, claim, and storing a ~200 B answer at completion. `claim_and_store_full` is a
//! new key's claim and completion in a store kept full at the default 100,000 records, where
//! each claim evicts the record nearest its expiry (ALL's steady state past its first minute).

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use policies::compile::compile_str;
use policies::env::CompileEnv;
use policies::kinds::Policy;
use policies::kinds::idempotency::fingerprint;
use policies::pipeline::{Channel, Completion, ExchangeState, RequestView};
use policies::route::PathParams;
use policies::state::idempotency::{Claim, LocalRecords, Record, RedisRecords};
use policies::state::redis::{RedisSpec, RedisStore};
use policies::units::DurationSpec;

/// A 1 KiB order, as a channel sends it.
fn order() -> String {
    let lines: Vec<String> = (0..8)
        .map(|i| {
            format!(r#"{{"sku": "SKU-{i:04}", "qty": {i}, "price": "19.99", "title": "Item {i}"}}"#)
        })
        .collect();
    format!(
        r#"{{"AmazonOrderId": "111-2222222-3333333", "LastUpdateDate": "2024-11-28T12:00:00Z", "BuyerEmail": "x@example.com", "OrderTotal": {{"Amount": "159.92", "CurrencyCode": "EUR"}}, "Lines": [{}]}}"#,
        lines.join(", ")
    )
}

fn record() -> Record {
    Record {
        status: 201,
        headers: vec![(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body: Bytes::from(vec![b'x'; 1024]),
    }
}

/// The ~2 KB sample Amazon order, minified.
fn sample_order() -> Bytes {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/files/samples/amazon-order.json");
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("sample order: {e}"));
    let value: serde_json::Value =
        serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("sample order: {e}"));
    Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
}

fn bench_fingerprint(c: &mut Criterion) {
    let text = order();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    c.bench_function("idempotency/fingerprint/1KiB_order", |b| {
        b.iter(|| fingerprint(Some(&value), text.as_bytes()))
    });
    let text = sample_order();
    let value: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    c.bench_function("idempotency/fingerprint/2KB_order", |b| {
        b.iter(|| fingerprint(Some(&value), &text))
    });
}

fn bench_local(c: &mut Criterion) {
    let store = LocalRecords::new(10_000_000);
    let fp = [1u8; 32];
    let now = 1_700_000_000_000;
    let mut n = 0u64;
    c.bench_function("idempotency/local/claim", |b| {
        b.iter(|| {
            n += 1;
            store.claim(&format!("amazon|orders|c{n}"), &fp, n, now, 60_000)
        })
    });
    let rec = Arc::new(record());
    let _ = store.claim("amazon|orders|hot", &fp, 1, now, 60_000);
    store.complete("amazon|orders|hot", 1, rec.clone(), now, 3_600_000);
    c.bench_function("idempotency/local/replay", |b| {
        b.iter(|| {
            let claim = store.claim("amazon|orders|hot", &fp, 2, now, 60_000);
            assert!(matches!(claim, Ok(Claim::Done { .. })));
        })
    });
    c.bench_function("idempotency/local/store", |b| {
        b.iter_custom(|iters| {
            let keys: Vec<String> = (0..iters)
                .map(|i| format!("amazon|orders|s{n}-{i}"))
                .collect();
            n += 1;
            for (i, k) in keys.iter().enumerate() {
                let _ = store.claim(k, &fp, i as u64 + 1, now, 60_000);
            }
            let start = Instant::now();
            for (i, k) in keys.iter().enumerate() {
                store.complete(k, i as u64 + 1, rec.clone(), now, 3_600_000);
            }
            start.elapsed()
        })
    });
    // the store at its default bound, kept full by new keys: each claim evicts the record
    // nearest its expiry, and its completion stores the new one (a gateway taking new orders
    // for longer than their TTL)
    let full = LocalRecords::new(100_000);
    let mut t = now;
    for i in 0..100_000u64 {
        let k = format!("amazon|orders|f{i}");
        let _ = full.claim(&k, &fp, i + 1, t, 60_000);
        full.complete(&k, i + 1, rec.clone(), t, 3_600_000);
        // eight records a millisecond, so the heap holds many expiries, some shared
        if i % 8 == 7 {
            t += 1;
        }
    }
    c.bench_function("idempotency/local/claim_and_store_full", |b| {
        b.iter(|| {
            n += 1;
            // the clock goes on as in the fill: the record evicted is the oldest, as in a
            // gateway, not one of the records just stored that share the newest expiry
            if n.is_multiple_of(8) {
                t += 1;
            }
            let k = format!("amazon|orders|g{n}");
            let claim = full.claim(&k, &fp, n, t, 60_000);
            assert!(matches!(claim, Ok(Claim::Claimed)));
            full.complete(&k, n, rec.clone(), t, 3_600_000)
        })
    });
}

fn bench_policy_replay(c: &mut Criterion) {
    let yaml = "version: 1\nchannels: {amazon: {}}\nupstreams: {erp: {endpoints: [\"127.0.0.1:9\"]}}\n\
                policies:\n  idem: {kind: idempotency}\nroutes: []\n";
    let set = compile_str(Path::new("bench.yaml"), yaml, &CompileEnv::default(), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let policy: &Policy = &set.policies["idem"].policy;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut headers = HeaderMap::new();
    headers.insert(
        "idempotency-key",
        HeaderValue::from_static("\"8e03978e-40d5-43e8-bc93-6894a57f9324\""),
    );
    let params = PathParams::default();
    let body = Bytes::from(order());
    let view = RequestView {
        method: &Method::POST,
        path: "/channels/amazon/orders",
        query: None,
        headers: &headers,
        params: &params,
    };
    let state = || ExchangeState {
        channel: Some(Channel {
            index: 0,
            name: "amazon".into(),
        }),
        route: Some("orders".into()),
        ..ExchangeState::default()
    };
    // the first request, completed
    rt.block_on(async {
        let mut s = state();
        let mut b = body.clone();
        assert!(policy.on_request(&view, &mut s).await.is_continue());
        assert!(
            policy
                .on_request_body(&view, &mut s, &mut b)
                .await
                .is_continue()
        );
        let rec = record();
        let mut resp_headers = HeaderMap::new();
        resp_headers.insert("content-type", HeaderValue::from_static("application/json"));
        let done = Completion {
            status: 201,
            forwarded: true,
            headers: Some(&resp_headers),
            body: Some(&rec.body),
        };
        policy.on_complete(&done, &mut s).await;
    });
    c.bench_function("idempotency/local/policy_replay", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut s = state();
                    let mut b = body.clone();
                    let _ = policy.on_request(&view, &mut s).await;
                    let flow = policy.on_request_body(&view, &mut s, &mut b).await;
                    assert!(flow.is_break(), "replayed");
                }
                start.elapsed()
            })
        })
    });
}

fn bench_policy_new(c: &mut Criterion) {
    let yaml = "version: 1\nchannels: {amazon: {}}\nupstreams: {erp: {endpoints: [\"127.0.0.1:9\"]}}\n\
                policies:\n  idem: {kind: idempotency, max_entries: 100000}\nroutes: []\n";
    let set = compile_str(Path::new("bench.yaml"), yaml, &CompileEnv::default(), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let policy: &Policy = &set.policies["idem"].policy;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let params = PathParams::default();
    let body = sample_order();
    let answer = Bytes::from(vec![b'x'; 200]);
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert("content-type", HeaderValue::from_static("application/json"));
    let mut n = 0u64;
    c.bench_function("idempotency/local/policy_new", |b| {
        b.iter_custom(|iters| {
            let keys: Vec<HeaderMap> = (0..iters)
                .map(|_| {
                    n += 1;
                    let mut h = HeaderMap::new();
                    let key = format!("\"8e03978e-40d5-43e8-bc93-{n:012}\"");
                    h.insert(
                        "idempotency-key",
                        HeaderValue::try_from(key).unwrap_or_else(|e| panic!("{e}")),
                    );
                    h
                })
                .collect();
            rt.block_on(async {
                let start = Instant::now();
                for headers in &keys {
                    let view = RequestView {
                        method: &Method::POST,
                        path: "/channels/amazon/orders",
                        query: None,
                        headers,
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
                    let flow = policy.on_request_body(&view, &mut s, &mut b).await;
                    assert!(flow.is_continue(), "claimed");
                    let done = Completion {
                        status: 201,
                        forwarded: true,
                        headers: Some(&resp_headers),
                        body: Some(&answer),
                    };
                    policy.on_complete(&done, &mut s).await;
                }
                start.elapsed()
            })
        })
    });
}

struct RedisProcess(Child);

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<(RedisProcess, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let process = RedisProcess(child);
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((process, port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn bench_redis(c: &mut Criterion, port: u16) {
    let url = format!("redis://127.0.0.1:{port}");
    let spec = RedisSpec {
        url: url.clone(),
        cluster: false,
        timeout: DurationSpec::secs(1),
        connect_timeout: DurationSpec::secs(1),
        tls: None,
    };
    let store = Arc::new(RedisStore::new(&url, &spec).unwrap_or_else(|e| panic!("{e}")));
    let records = RedisRecords::new(store, "bench");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let fp = [1u8; 32];
    let now = 1_700_000_000_000;
    let rec = record();
    let mut n = 0u64;
    c.bench_function("idempotency/redis/claim", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    n += 1;
                    let claim = records
                        .claim(&format!("amazon|orders|c{n}"), &fp, n, now, 60_000)
                        .await;
                    assert!(matches!(claim, Ok(Claim::Claimed)));
                }
                start.elapsed()
            })
        })
    });
    rt.block_on(async {
        let _ = records
            .claim("amazon|orders|hot", &fp, 1, now, 60_000)
            .await;
        let _ = records
            .complete("amazon|orders|hot", 1, &rec, now, 3_600_000)
            .await;
    });
    c.bench_function("idempotency/redis/replay", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let claim = records
                        .claim("amazon|orders|hot", &fp, 2, now, 60_000)
                        .await;
                    assert!(matches!(claim, Ok(Claim::Done { .. })));
                }
                start.elapsed()
            })
        })
    });
    c.bench_function("idempotency/redis/store", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                n += 1;
                let keys: Vec<String> = (0..iters)
                    .map(|i| format!("amazon|orders|s{n}-{i}"))
                    .collect();
                for (i, k) in keys.iter().enumerate() {
                    let _ = records.claim(k, &fp, i as u64 + 1, now, 60_000).await;
                }
                let start = Instant::now();
                for (i, k) in keys.iter().enumerate() {
                    let stored = records
                        .complete(k, i as u64 + 1, &rec, now, 3_600_000)
                        .await;
                    assert!(matches!(stored, Ok(true)));
                }
                start.elapsed()
            })
        })
    });
}

fn idempotency(c: &mut Criterion) {
    bench_fingerprint(c);
    bench_local(c);
    bench_policy_replay(c);
    bench_policy_new(c);
    match start_redis() {
        Some((_redis, port)) => bench_redis(c, port),
        None => {
            eprintln!("idempotency/redis: skipped, redis-server is not installed or did not start")
        }
    }
}

criterion_group!(benches, idempotency);
criterion_main!(benches);
