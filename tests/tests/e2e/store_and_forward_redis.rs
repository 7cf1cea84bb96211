//! Store-and-forward on Redis Streams end to end, with the real binary, the ERP simulator and a
//! real redis-server (and a real 3-master Redis Cluster): two gateway instances share one
//! queue; orders accepted by either while the ERP is down are delivered once when it is back,
//! and when the instance delivering them is killed (`kill -9`) in the middle of its attempts,
//! the other takes its partitions over and finishes them with the same upstream keys.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use erp_sim::{Behaviour, DocumentKind, ErpSim};
use serde_json::{Value, json};
use tests::{Gateway, RedisCluster, RedisServer, client, eventually, policy_file};

/// Both instances' file: queue `q` on `redis_url` (millisecond backoffs, a 2 s lease so a dead
/// instance's partitions and claims come back quickly), route `orders` in `queued` mode.
fn file(sim: &ErpSim, redis_url: &str, cluster: bool) -> String {
    policy_file(
        sim.addr(),
        "    connect_timeout: 200ms\n    read_timeout: 900ms\n    total_timeout: 1s\n",
        &format!(
            "\
redis: {{url: \"{redis_url}\", cluster: {cluster}, timeout: 2s, connect_timeout: 1s}}
queues:
  q:
    store: redis
    partitions: 8
    workers: 4
    lease: 2s
    poll_interval: 20ms
    retry: {{initial_backoff: 20ms, max_backoff: 200ms, max_attempts: 100000, max_age: 1h}}
policies:
  json: {{kind: json_body}}
  idem: {{kind: idempotency, key: {{header: Idempotency-Key}}, required: true, ttl: 1h, lease: 20s}}
routes:
  - name: orders
    methods: [POST]
    path: /orders
    upstream: erp
    upstream_path: /erp/v1/orders
    policies: [json, idem]
    delivery: {{mode: queued, queue: q, ordering_key: /ref}}
"
        ),
    )
}

async fn post(c: &reqwest::Client, gw: &Gateway, i: usize) -> (u16, Value) {
    let r = c
        .post(gw.url("/orders"))
        .header("Idempotency-Key", format!("k-{i}"))
        .json(&json!({"ref": format!("o-{i}"), "n": i}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn queue_depth(gw: &Gateway) -> u64 {
    let (status, body) = gw.admin_json("GET", "/queues").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["queues"][0]["store"], "redis", "{body}");
    body["queues"][0]["depth"].as_u64().unwrap()
}

fn delivered(gw: &Gateway) -> usize {
    let (status, body) = gw
        .admin_json("GET", "/deliveries?limit=1000&state=delivered")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body["deliveries"].as_array().unwrap().len()
}

/// Every order at the ERP once, and every request of one order with one upstream key.
fn assert_each_order_once(sim: &ErpSim, n: usize) {
    let refs: Vec<String> = sim
        .documents(DocumentKind::Order)
        .iter()
        .map(|d| d.body["ref"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        refs.iter().collect::<BTreeSet<_>>().len(),
        n,
        "every order at the ERP"
    );
    assert_eq!(refs.len(), n, "no order twice");
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in sim.requests().iter().filter(|r| r.path == "/erp/v1/orders") {
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        keys.entry(body["ref"].as_str().unwrap_or("?").to_owned())
            .or_default()
            .insert(r.header("idempotency-key").unwrap().to_owned());
    }
    for (order, k) in &keys {
        assert_eq!(k.len(), 1, "order {order} was sent with keys {k:?}");
    }
}

/// Accepts `n` orders alternately at `a` and `b` while the ERP is down: all 202, distinct ids.
async fn accept_while_down(sim: &ErpSim, a: &Gateway, b: &Gateway, n: usize) {
    let c = client().unwrap();
    let mut ids = BTreeSet::new();
    for i in 0..n {
        let gw = if i % 2 == 0 { a } else { b };
        let (status, body) = post(&c, gw, i).await;
        assert_eq!(status, 202, "{body}");
        ids.insert(body["delivery_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), n, "one delivery per order");
    assert_eq!(sim.documents(DocumentKind::Order).len(), 0);
    assert_eq!(queue_depth(a), n as u64, "both instances see one queue");
    assert_eq!(queue_depth(b), n as u64);
}

/// Whether `gw` has attempted a delivery (so it holds a partition): with the ERP down its
/// attempts fail, or are refused once the circuit opens.
fn has_attempted(gw: &Gateway) -> bool {
    ["retryable", "refused", "ok"].iter().any(|result| {
        gw.metric(&format!(
            "gateway_delivery_attempts_total{{queue=\"q\",result=\"{result}\"}}"
        ))
        .unwrap()
            > 0.0
    })
}

/// `a` accepts the first half of the orders alone, while the ERP is down, and so holds the
/// partitions they went to; `b` accepts the rest. The ERP comes back slow, `a` is killed while
/// its attempts wait for their answers, and `b` takes its partitions over (once the 2 s lease
/// ran out) and finishes every delivery: each order once at the ERP, with one upstream key.
async fn the_survivor_finishes_a_killed_instances_deliveries(redis_url: &str, cluster: bool) {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    sim.set_down(true).await.unwrap();
    let yaml = file(&sim, redis_url, cluster);
    let a = Gateway::start(&yaml).unwrap();
    let c = client().unwrap();
    let n = 60;
    for i in 0..n / 2 {
        let (status, body) = post(&c, &a, i).await;
        assert_eq!(status, 202, "{body}");
    }
    eventually(
        "a delivers (and holds partitions)",
        Duration::from_secs(10),
        || has_attempted(&a),
    )
    .await
    .unwrap();
    let b = Gateway::start(&yaml).unwrap();
    for i in n / 2..n {
        let (status, body) = post(&c, &b, i).await;
        assert_eq!(status, 202, "{body}");
    }
    assert_eq!(queue_depth(&a), n as u64, "both instances see one queue");
    assert_eq!(queue_depth(&b), n as u64);

    // the ERP is back but slow: `a` is killed while its attempts wait for answers
    sim.set_down(false).await.unwrap();
    sim.set_behaviour(Behaviour::delay_ms(300));
    eventually("a's attempts on their way", Duration::from_secs(10), || {
        sim.requests_started() >= 4
    })
    .await
    .unwrap();
    a.kill_9();
    assert!(
        sim.documents(DocumentKind::Order).len() < n,
        "the kill came before everything was delivered"
    );
    sim.set_behaviour(Behaviour::default());

    eventually("b delivers everything", Duration::from_secs(60), || {
        queue_depth(&b) == 0
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_each_order_once(&sim, n);
    assert_eq!(delivered(&b), n, "b reads every delivery as delivered");
    assert!(
        b.metric("gateway_deliveries_total{channel=\"none\",outcome=\"delivered\",queue=\"q\"}")
            .unwrap()
            > 0.0,
        "b delivered what a left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_redis_and_the_survivor_finishes_a_killed_ones_deliveries() {
    let redis = RedisServer::start().unwrap();
    the_survivor_finishes_a_killed_instances_deliveries(&redis.url(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_a_three_master_cluster_and_the_survivor_finishes_a_killed_ones() {
    let cluster = RedisCluster::start().unwrap();
    the_survivor_finishes_a_killed_instances_deliveries(&cluster.url(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_a_queue_on_a_three_master_cluster() {
    let cluster = RedisCluster::start().unwrap();
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    sim.set_down(true).await.unwrap();
    let yaml = file(&sim, &cluster.url(), true);
    let a = Gateway::start(&yaml).unwrap();
    let b = Gateway::start(&yaml).unwrap();
    let n = 40;
    accept_while_down(&sim, &a, &b, n).await;

    sim.set_down(false).await.unwrap();
    eventually("everything delivered", Duration::from_secs(60), || {
        queue_depth(&a) == 0
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_each_order_once(&sim, n);
    assert_eq!(delivered(&a), n);
    assert_eq!(delivered(&b), n);
}
