//! Decision cost of the `rate_limit` policy: in-process (one hot key, and 1024 keys), and on
//! Redis (one script round trip per decision, against a redis-server this bench starts; skipped
//! with a message when `redis-server` is not installed). Each iteration is one whole
//! `on_request`: key building, the decision and the response headers; `store_decide` is the
//! sharded map and the GCRA alone.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use policies::compile::compile_str;
use policies::env::CompileEnv;
use policies::kinds::Policy;
use policies::model::PolicySet;
use policies::pipeline::{Channel, ExchangeState, RequestView};
use policies::route::PathParams;
use policies::state::rate_limit::{Gcra, LocalCounters};

fn compile(redis: &str, store: &str) -> PolicySet {
    let yaml = format!(
        "version: 1\nchannels: {{amazon: {{}}}}\n{redis}upstreams: {{erp: {{endpoints: [\"127.0.0.1:9\"]}}}}\n\
         policies:\n  rl:\n    kind: rate_limit\n    store: {store}\n    key: [channel, {{header: X-Seller}}]\n\
         \x20   limits:\n      - {{name: per_second, rate: 1000000, per: 1s}}\n      - {{name: daily, rate: 1000000000, per: 1d}}\n\
         routes: []\n"
    );
    compile_str(Path::new("bench.yaml"), &yaml, &CompileEnv::default(), None)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn sellers(n: usize) -> Vec<HeaderMap> {
    (0..n)
        .map(|i| {
            let mut h = HeaderMap::new();
            h.insert("x-seller", HeaderValue::from(i));
            h
        })
        .collect()
}

fn bench_policy(c: &mut Criterion, name: &str, set: &PolicySet, keys: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let policy: &Policy = &set.policies["rl"].policy;
    let headers = sellers(keys);
    let params = PathParams::default();
    let channel = Channel {
        index: 0,
        name: "amazon".into(),
    };
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let view = RequestView {
                        method: &Method::GET,
                        path: "/channels/amazon/orders",
                        query: None,
                        headers: &headers[i as usize % headers.len()],
                        params: &params,
                    };
                    let mut state = ExchangeState {
                        channel: Some(channel.clone()),
                        ..ExchangeState::default()
                    };
                    let flow = policy.on_request(&view, &mut state).await;
                    assert!(flow.is_continue());
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

/// The store alone: the sharded map and the GCRA, without key building or headers.
fn bench_store(c: &mut Criterion) {
    let store = LocalCounters::new(&[
        Gcra::new(1_000_000, 1_000_000, 1_000_000).unwrap_or_else(|e| panic!("{e}")),
        Gcra::new(1_000_000_000, 86_400_000_000, 1_000_000_000).unwrap_or_else(|e| panic!("{e}")),
    ]);
    let keys: Vec<String> = (0..1024).map(|i| format!("amazon|{i}")).collect();
    let origin = Instant::now();
    let mut i = 0usize;
    c.bench_function("ratelimit/local/store_decide", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let now = origin.elapsed().as_micros() as u64;
            store.decide(&keys[i], now, 1)
        })
    });
}

fn ratelimit(c: &mut Criterion) {
    bench_store(c);
    let local = compile("", "local");
    bench_policy(c, "ratelimit/local/one_key", &local, 1);
    bench_policy(c, "ratelimit/local/1024_keys", &local, 1024);
    match start_redis() {
        Some((_redis, port)) => {
            let redis = format!("redis: {{url: \"redis://127.0.0.1:{port}\", timeout: 1s}}\n");
            let set = compile(&redis, "redis");
            bench_policy(c, "ratelimit/redis/1024_keys", &set, 1024);
        }
        None => {
            eprintln!("ratelimit/redis: skipped, redis-server is not installed or did not start")
        }
    }
}

criterion_group!(benches, ratelimit);
criterion_main!(benches);
