//! Cost of making an accepted document durable in the embedded delivery store: one `enqueue`
//! alone (one fsync each), and 64 concurrent ones (group commit: the writer puts what waits in
//! one transaction, one fsync). The same two for the raw engines the store could sit on, redb
//! (what it uses) and fjall (an LSM tree; a record written then its journal fsynced), so the
//! choice is measured. Files go under cargo's target tmp dir, on the disk the target is on
//! (a tmpfs would make every fsync free).
//!
//! The Redis Streams store too, on a redis-server the bench starts (skipped when none is
//! installed), twice: with `appendonly yes` + `appendfsync always` (a 202 that survives a power
//! cut: every write waits for Redis's fsync) and without persistence (what memory alone costs).
//! And delivery: claiming due deliveries and settling them delivered, per delivery, with no
//! upstream (the store's share of delivery throughput).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use policies::state::delivery::{
    DeliveryRecord, DeliveryStore, Destination, EmbeddedDeliveries, FORMAT_VERSION, QueueLimits,
    RedisDeliveries, RedisDeliveryOptions, Settle, StoredAnswer,
};
use policies::state::redis::{RedisSpec, RedisStore};
use policies::units::DurationSpec;

const CONCURRENT: usize = 64;

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("delivery-bench-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A 1 KiB order, as a queued route stores it.
fn record(id: u64) -> DeliveryRecord {
    DeliveryRecord {
        v: FORMAT_VERSION,
        id: format!("0193b0a4-0000-7000-8000-{id:012}"),
        queue: "erp".into(),
        route: "amazon-orders".into(),
        channel: Some("amazon".into()),
        destination: Destination {
            upstream: "erp".into(),
            method: "POST".into(),
            path: "/erp/v1/orders?channel=amazon".into(),
            mapping: Some("amazon/order".into()),
            operation: None,
        },
        headers: vec![("content-type".into(), "application/json".into())],
        body: format!("{{\"order\":{id},\"lines\":\"{}\"}}", "x".repeat(1000)),
        original: None,
        upstream_key: format!("\"k{id}\""),
        ordering_key: Some(format!("amazon:{}", id % 97)),
        traceparent: None,
        tracestate: None,
        request_id: format!("r{id}"),
        accepted_at_ms: 1_700_000_000_000,
        sequence: None,
    }
}

const ROOMY: QueueLimits = QueueLimits {
    max_entries: u64::MAX,
    max_bytes: u64::MAX,
};

fn bench_store(c: &mut Criterion) {
    let path = dir("store").join("deliveries.redb");
    let store = Arc::new(EmbeddedDeliveries::open(&path).unwrap_or_else(|e| panic!("{e}")));
    let next = Arc::new(AtomicU64::new(0));
    let rt = runtime();
    let mut g = c.benchmark_group("delivery_store/embedded_redb");
    bench_enqueue(&mut g, &rt, &store, &next);
    g.finish();
    println!(
        "embedded store: {} records in {} commits",
        store.records_committed(),
        store.commits()
    );
}

/// Enqueues `n` records at once on `store`.
async fn enqueue_many<S: DeliveryStore + 'static>(store: &Arc<S>, next: &Arc<AtomicU64>, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (store, next) = (store.clone(), next.clone());
            tokio::spawn(async move {
                let r = record(next.fetch_add(1, Ordering::Relaxed));
                store.enqueue(r, ROOMY, 1).await
            })
        })
        .collect();
    for t in tasks {
        t.await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Claims up to 64 due deliveries and settles each delivered, concurrently as the workers do
/// (the upstream left out): returns how many.
async fn deliver_batch<S: DeliveryStore + 'static>(store: &Arc<S>, now: u64) -> usize {
    let claimed = store
        .claim("erp", CONCURRENT, now, 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let n = claimed.len();
    let tasks: Vec<_> = claimed
        .into_iter()
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                let answer = StoredAnswer {
                    status: 201,
                    content_type: Some("application/json".into()),
                    body: "{\"id\":\"ERP-1\"}".into(),
                };
                store.settle(&c, None, Settle::Delivered(answer), now).await
            })
        })
        .collect();
    for t in tasks {
        t.await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    n
}

/// Delivery, on a store of its own (no backlog from the enqueue benches).
fn bench_delivery(c: &mut Criterion) {
    let path = dir("deliver").join("deliveries.redb");
    let store = Arc::new(EmbeddedDeliveries::open(&path).unwrap_or_else(|e| panic!("{e}")));
    let next = Arc::new(AtomicU64::new(0));
    let rt = runtime();
    let mut g = c.benchmark_group("delivery_store/embedded_redb");
    bench_claim_and_settle(&mut g, &rt, &store, &next);
    g.finish();
}

/// One enqueue alone, and 64 at once.
fn bench_enqueue<S: DeliveryStore + 'static>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    store: &Arc<S>,
    next: &Arc<AtomicU64>,
) {
    g.throughput(Throughput::Elements(1));
    g.bench_function("enqueue_alone", |b| {
        b.iter(|| rt.block_on(enqueue_many(store, next, 1)))
    });
    g.throughput(Throughput::Elements(CONCURRENT as u64));
    g.bench_function("enqueue_64_concurrent", |b| {
        b.iter(|| rt.block_on(enqueue_many(store, next, CONCURRENT)))
    });
}

/// 64 pending deliveries claimed and settled (a store may hand them out over several
/// claims), the batch refilled outside the measurement.
fn bench_claim_and_settle<S: DeliveryStore + 'static>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    store: &Arc<S>,
    next: &Arc<AtomicU64>,
) {
    g.throughput(Throughput::Elements(CONCURRENT as u64));
    g.bench_function("claim_and_settle_64", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(enqueue_many(store, next, CONCURRENT));
                let t0 = std::time::Instant::now();
                let mut n = 0;
                while n < CONCURRENT {
                    n += rt.block_on(deliver_batch(store, 2));
                }
                spent += t0.elapsed();
            }
            spent
        })
    });
}

/// A redis-server on a free port in its own directory, killed at drop.
struct Redis(std::process::Child, u16);

impl Redis {
    fn start(name: &str, persistence: &[&str]) -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let d = dir(name);
        std::fs::create_dir_all(&d).ok()?;
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .args(persistence)
            .arg("--dir")
            .arg(&d)
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Redis(child, port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn bench_redis(c: &mut Criterion) {
    let setups: [(&str, &[&str]); 2] = [
        (
            "redis_aof_always",
            &["--appendonly", "yes", "--appendfsync", "always"],
        ),
        ("redis_no_persistence", &["--appendonly", "no"]),
    ];
    for (name, persistence) in setups {
        let Some(server) = Redis::start(name, persistence) else {
            eprintln!("{name}: no redis-server, skipped");
            return;
        };
        let rt = runtime();
        let url = format!("redis://127.0.0.1:{}", server.1);
        let spec = RedisSpec {
            url: url.clone(),
            cluster: false,
            timeout: DurationSpec::millis(5000),
            connect_timeout: DurationSpec::millis(1000),
            tls: None,
        };
        let redis = Arc::new(RedisStore::new(&url, &spec).unwrap_or_else(|e| panic!("{e}")));
        let store = Arc::new(RedisDeliveries::new(
            redis,
            "bench",
            RedisDeliveryOptions::default(),
        ));
        let next = Arc::new(AtomicU64::new(0));
        let mut g = c.benchmark_group(format!("delivery_store/{name}"));
        bench_enqueue(&mut g, &rt, &store, &next);
        bench_claim_and_settle(&mut g, &rt, &store, &next);
        g.finish();
        drop(server);
    }
}

const RECORDS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");

/// redb alone: `n` records in one transaction with `Durability::Immediate` (one fsync).
fn redb_commit(db: &redb::Database, next: &mut u64, n: usize) {
    let txn = db.begin_write().unwrap_or_else(|e| panic!("{e}"));
    {
        let mut t = txn.open_table(RECORDS).unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..n {
            let bytes = serde_json::to_vec(&record(*next)).unwrap_or_default();
            t.insert(*next, bytes.as_slice())
                .unwrap_or_else(|e| panic!("{e}"));
            *next += 1;
        }
    }
    txn.commit().unwrap_or_else(|e| panic!("{e}"));
}

/// fjall alone: `n` records in one batch, then its journal fsynced (`PersistMode::SyncAll`).
fn fjall_commit(db: &fjall::Database, ks: &fjall::Keyspace, next: &mut u64, n: usize) {
    let mut batch = db.batch().durability(Some(fjall::PersistMode::SyncAll));
    for _ in 0..n {
        let bytes = serde_json::to_vec(&record(*next)).unwrap_or_default();
        batch.insert(ks, next.to_be_bytes(), bytes);
        *next += 1;
    }
    batch.commit().unwrap_or_else(|e| panic!("{e}"));
}

fn bench_engines(c: &mut Criterion) {
    let path = dir("redb").join("raw.redb");
    let _ = std::fs::create_dir_all(path.parent().unwrap_or(&path));
    let db = redb::Database::create(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut next = 0u64;
    let mut g = c.benchmark_group("delivery_store/redb");
    g.throughput(Throughput::Elements(1));
    g.bench_function("commit_1", |b| b.iter(|| redb_commit(&db, &mut next, 1)));
    g.throughput(Throughput::Elements(CONCURRENT as u64));
    g.bench_function("commit_64", |b| {
        b.iter(|| redb_commit(&db, &mut next, CONCURRENT))
    });
    g.finish();
    drop(db);

    let db = fjall::Database::builder(dir("fjall"))
        .open()
        .unwrap_or_else(|e| panic!("{e}"));
    let ks = db
        .keyspace("records", fjall::KeyspaceCreateOptions::default)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut next = 0u64;
    let mut g = c.benchmark_group("delivery_store/fjall");
    g.throughput(Throughput::Elements(1));
    g.bench_function("commit_1", |b| {
        b.iter(|| fjall_commit(&db, &ks, &mut next, 1))
    });
    g.throughput(Throughput::Elements(CONCURRENT as u64));
    g.bench_function("commit_64", |b| {
        b.iter(|| fjall_commit(&db, &ks, &mut next, CONCURRENT))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_store, bench_delivery, bench_engines, bench_redis
}
criterion_main!(benches);
