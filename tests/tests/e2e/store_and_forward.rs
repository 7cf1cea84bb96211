//! Store-and-forward end to end on the embedded store, with the real binary and the ERP
//! simulator (millisecond backoffs, scaled-down limits): an ERP outage turns orders into 202s
//! that are all delivered once when it is back; `kill -9` loses nothing that was answered 202;
//! a kill in the middle of an attempt re-sends with the same upstream key; deliveries keep to
//! the upstream's `max_rate`; a permanent refusal becomes a dead letter that parks its ordering
//! key until an operator replays it (through `gateway deliveries`); a full queue answers 503;
//! a corrupt store stops the start with its path named.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use erp_sim::{Behaviour, DocumentKind, ErpSim};
use serde_json::{Value, json};
use tests::{Gateway, TempDir, client, eventually, gateway_binary, policy_file};

/// A policy file: the `erp` upstream (its extra keys), queue `q` in `dir` (its extra keys),
/// and route `orders` in `mode`, ordered by the body's `/ref`.
fn file(sim: &ErpSim, dir: &Path, upstream: &str, queue: &str, mode: &str) -> String {
    policy_file(
        sim.addr(),
        &format!(
            "    connect_timeout: 200ms\n    read_timeout: 3s\n    total_timeout: 4s\n{upstream}"
        ),
        &format!(
            "\
queues:
  q:
    path: {}/deliveries.redb
    workers: 8
    lease: 10s
    poll_interval: 20ms
    retry: {{initial_backoff: 20ms, max_backoff: 200ms, max_attempts: 100000, max_age: 1h}}
{queue}
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
    delivery: {{mode: {mode}, queue: q, ordering_key: /ref}}
",
            dir.display()
        ),
    )
}

async fn post(
    c: &reqwest::Client,
    gw: &Gateway,
    key: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = c
        .post(gw.url("/orders"))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn queue_depth(gw: &Gateway) -> u64 {
    let (status, body) = gw.admin_json("GET", "/queues").unwrap();
    assert_eq!(status, 200, "{body}");
    body["queues"][0]["depth"].as_u64().unwrap()
}

fn deliveries(gw: &Gateway, query: &str) -> Vec<Value> {
    let (status, body) = gw
        .admin_json("GET", &format!("/deliveries?limit=1000&{query}"))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body["deliveries"].as_array().unwrap().clone()
}

fn state(gw: &Gateway, id: &str) -> String {
    let (status, body) = gw.admin_json("GET", &format!("/deliveries/{id}")).unwrap();
    assert_eq!(status, 200, "{body}");
    body["state"].as_str().unwrap().to_owned()
}

/// The orders the simulator stored, by the body's `ref`.
fn stored_refs(sim: &ErpSim) -> Vec<String> {
    sim.documents(DocumentKind::Order)
        .iter()
        .map(|d| d.body["ref"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erp_outage_turns_orders_into_202s_delivered_exactly_once_when_it_is_back() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    sim.set_down(true).await.unwrap();
    let dir = TempDir::new("saf-outage").unwrap();
    let gw = Gateway::start(&file(&sim, dir.path(), "", "", "fallback")).unwrap();
    let c = client().unwrap();

    let mut ids = BTreeSet::new();
    for chunk in (0..200).collect::<Vec<_>>().chunks(20) {
        let sends = chunk.iter().map(|i| {
            let c = c.clone();
            let gw = &gw;
            async move {
                post(
                    &c,
                    gw,
                    &format!("k-{i}"),
                    &json!({"ref": format!("o-{i}"), "n": i}),
                )
                .await
            }
        });
        for (status, headers, body) in futures_util::future::join_all(sends).await {
            assert_eq!(status, 202, "{body}");
            assert!(
                headers.get("location").is_none(),
                "no authenticated reads here"
            );
            ids.insert(body["delivery_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(ids.len(), 200, "one delivery per order");
    assert_eq!(sim.documents(DocumentKind::Order).len(), 0);

    sim.set_down(false).await.unwrap();
    eventually("200 orders at the ERP", Duration::from_secs(60), || {
        sim.documents(DocumentKind::Order).len() >= 200 && queue_depth(&gw) == 0
    })
    .await
    .unwrap();
    // nothing more arrives afterwards
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refs = stored_refs(&sim);
    assert_eq!(refs.len(), 200, "exactly 200 orders");
    assert_eq!(
        refs.iter().collect::<BTreeSet<_>>().len(),
        200,
        "all distinct"
    );
    assert_eq!(sim.stats().duplicates, 0);
    let delivered = deliveries(&gw, "state=delivered");
    assert_eq!(delivered.len(), 200);
    let accepted = gw
        .metric("gateway_deliveries_total{channel=\"none\",outcome=\"accepted\",queue=\"q\"}")
        .unwrap();
    assert_eq!(accepted, 200.0);
    assert!(gw.metric("gateway_delivery_store_fsyncs_total").unwrap() >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_with_100_pending_loses_none_and_sends_each_once() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    sim.set_down(true).await.unwrap();
    let dir = TempDir::new("saf-kill").unwrap();
    let yaml = file(&sim, dir.path(), "", "", "queued");
    let gw = Gateway::start(&yaml).unwrap();
    let c = client().unwrap();
    for i in 0..100 {
        let (status, _, body) = post(
            &c,
            &gw,
            &format!("k-{i}"),
            &json!({"ref": format!("o-{i}")}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    assert_eq!(queue_depth(&gw), 100);
    gw.kill_9();

    let gw = Gateway::start(&yaml).unwrap();
    assert_eq!(queue_depth(&gw), 100, "every 202 survived kill -9");
    sim.set_down(false).await.unwrap();
    eventually("100 orders at the ERP", Duration::from_secs(60), || {
        queue_depth(&gw) == 0
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refs = stored_refs(&sim);
    assert_eq!(refs.len(), 100);
    assert_eq!(refs.iter().collect::<BTreeSet<_>>().len(), 100);
    let order_requests = sim
        .requests()
        .iter()
        .filter(|r| r.path == "/erp/v1/orders")
        .count();
    assert_eq!(order_requests, 100, "exactly 100 requests at the simulator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_in_the_middle_of_an_attempt_resends_with_the_same_upstream_key() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // the ERP takes 1.5 s per order: the gateway is killed while the first attempts wait
    sim.set_behaviour(Behaviour::delay_ms(1500));
    let dir = TempDir::new("saf-midflight").unwrap();
    let yaml = file(&sim, dir.path(), "", "", "queued");
    let gw = Gateway::start(&yaml).unwrap();
    let c = client().unwrap();
    for i in 0..5 {
        let (status, _, body) = post(
            &c,
            &gw,
            &format!("k-{i}"),
            &json!({"ref": format!("o-{i}")}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    eventually("attempts on their way", Duration::from_secs(10), || {
        sim.requests_started() >= 5
    })
    .await
    .unwrap();
    gw.kill_9();
    sim.set_behaviour(Behaviour::default());

    let gw = Gateway::start(&yaml).unwrap();
    eventually("the 5 orders delivered", Duration::from_secs(60), || {
        queue_depth(&gw) == 0
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refs = stored_refs(&sim);
    assert_eq!(
        refs.iter().collect::<BTreeSet<_>>().len(),
        5,
        "every order at the ERP: {refs:?}"
    );
    assert_eq!(refs.len(), 5, "none twice: the repeat had the same key");
    // every request of one order carried one key, before and after the kill
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut sends = 0;
    for r in sim.requests().iter().filter(|r| r.path == "/erp/v1/orders") {
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let key = r.header("idempotency-key").unwrap().to_owned();
        keys.entry(body["ref"].as_str().unwrap_or("?").to_owned())
            .or_default()
            .insert(key);
        sends += 1;
    }
    assert!(
        sends >= 10,
        "each order was sent again after the restart ({sends})"
    );
    for (order, k) in &keys {
        assert_eq!(k.len(), 1, "order {order} was sent with keys {k:?}");
    }
    // what the re-sends were to the simulator depends on how far the first attempts got
    // (cancelled with the connection, still processing: 409, or done: a duplicate answered
    // with the first answer); none made a second order
    let stats = sim.stats();
    eprintln!(
        "re-sends: {}, simulator duplicates: {}, in-flight conflicts: {}",
        sends - 5,
        stats.duplicates,
        stats.in_flight_conflicts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_keep_to_the_upstreams_max_rate() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    sim.set_down(true).await.unwrap();
    let dir = TempDir::new("saf-pace").unwrap();
    let (rate, burst) = (10.0, 2.0);
    let yaml = file(
        &sim,
        dir.path(),
        "    max_rate: {rate: 10, per: 1s, burst: 2}\n    queue_timeout: 100ms\n",
        "",
        "queued",
    );
    let gw = Gateway::start(&yaml).unwrap();
    let c = client().unwrap();
    for i in 0..40 {
        let (status, _, body) = post(
            &c,
            &gw,
            &format!("k-{i}"),
            &json!({"ref": format!("o-{i}")}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    sim.set_down(false).await.unwrap();
    eventually("40 orders delivered", Duration::from_secs(60), || {
        queue_depth(&gw) == 0
    })
    .await
    .unwrap();
    let mut times: Vec<SystemTime> = sim
        .requests()
        .iter()
        .filter(|r| r.path == "/erp/v1/orders")
        .map(|r| r.received_at)
        .collect();
    times.sort();
    assert!(times.len() >= 40);
    for w in [1.0f64, 2.0, 3.0] {
        let window = Duration::from_secs_f64(w);
        let most = (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| t.duration_since(times[i]).unwrap_or_default() < window)
                    .count()
            })
            .max()
            .unwrap();
        assert!(
            most as f64 <= rate * w + burst,
            "{most} requests within {w}s (max_rate 10/s, burst 2)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_permanent_refusal_parks_its_key_until_an_operator_replays_it() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // the ERP refuses the first order it sees
    sim.set_behaviour(Behaviour::fail(422, Some(1)));
    let dir = TempDir::new("saf-dead").unwrap();
    let gw = Gateway::start(&file(&sim, dir.path(), "", "", "queued")).unwrap();
    let c = client().unwrap();
    let (s, _, first) = post(&c, &gw, "a", &json!({"ref": "o-1", "seq": 1})).await;
    assert_eq!(s, 202);
    let first = first["delivery_id"].as_str().unwrap().to_owned();
    eventually("the first order dead", Duration::from_secs(20), || {
        state(&gw, &first) == "dead"
    })
    .await
    .unwrap();
    let (status, shown) = gw
        .admin_json("GET", &format!("/deliveries/{first}"))
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(shown["attempts"], 1, "a permanent refusal is not retried");
    assert!(shown["reason"].as_str().unwrap().contains("422"), "{shown}");
    assert_eq!(shown["original_body"]["ref"], "o-1");

    // a later order with the same ordering key waits; another key goes through
    let (_, _, second) = post(&c, &gw, "b", &json!({"ref": "o-1", "seq": 2})).await;
    let second = second["delivery_id"].as_str().unwrap().to_owned();
    let (_, _, other) = post(&c, &gw, "c", &json!({"ref": "o-2", "seq": 3})).await;
    let other = other["delivery_id"].as_str().unwrap().to_owned();
    eventually("the other key delivered", Duration::from_secs(20), || {
        state(&gw, &other) == "delivered"
    })
    .await
    .unwrap();
    assert_eq!(state(&gw, &second), "blocked");
    assert_eq!(deliveries(&gw, "state=blocked").len(), 1);
    assert_eq!(stored_refs(&sim), vec!["o-2"]);

    // the operator replays the dead letter from the command line (the ERP is fixed: its
    // scripted refusal is used up)
    let out = Command::new(gateway_binary().unwrap())
        .args(["deliveries", "--admin", &gw.admin_url(""), "replay", &first])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("both delivered", Duration::from_secs(20), || {
        state(&gw, &first) == "delivered" && state(&gw, &second) == "delivered"
    })
    .await
    .unwrap();
    let seqs: Vec<i64> = sim
        .documents(DocumentKind::Order)
        .iter()
        .filter(|d| d.body["ref"] == "o-1")
        .map(|d| d.body["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2], "delivered once each, in acceptance order");

    // the list from the command line shows them
    let out = Command::new(gateway_binary().unwrap())
        .args([
            "deliveries",
            "--admin",
            &gw.admin_url(""),
            "list",
            "--state",
            "delivered",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for id in [&first, &second, &other] {
        assert!(table.contains(id.as_str()), "{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_503_and_a_repeat_gets_the_same_202() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // the ERP refuses every delivery (retried) but keeps its port: a closed listener's port can
    // be bound by another test's server meanwhile, which then takes the deliveries
    sim.set_behaviour(Behaviour::fail(503, None));
    let dir = TempDir::new("saf-full").unwrap();
    let gw = Gateway::start(&file(
        &sim,
        dir.path(),
        "",
        "    max_entries: 3\n",
        "queued",
    ))
    .unwrap();
    let c = client().unwrap();
    let mut first = None;
    for i in 0..3 {
        let (status, _, body) = post(&c, &gw, &format!("k-{i}"), &json!({"ref": i})).await;
        assert_eq!(status, 202, "{body}");
        first.get_or_insert(body);
    }
    // the same request again: the same 202, nothing more stored
    let (status, headers, again) = post(&c, &gw, "k-0", &json!({"ref": 0})).await;
    assert_eq!(status, 202);
    assert_eq!(Some(&again), first.as_ref());
    assert_eq!(headers["idempotent-replayed"], "true");

    let (status, headers, problem) = post(&c, &gw, "k-9", &json!({"ref": 9})).await;
    assert_eq!(status, 503, "{problem}");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(problem["type"], "urn:gateway:problem:queue-full");
    assert_eq!(queue_depth(&gw), 3);
    assert_eq!(
        gw.metric("gateway_deliveries_total{channel=\"none\",outcome=\"full\",queue=\"q\"}")
            .unwrap(),
        1.0
    );

    // an operator purges one; the next document fits
    let id = first.unwrap()["delivery_id"].as_str().unwrap().to_owned();
    // (a delivery a worker holds is refused with 409 "try again", as the operator is told)
    let admin = gw.admin_url("");
    eventually("the purge done", Duration::from_secs(20), || {
        let out = Command::new(gateway_binary().unwrap())
            .args(["deliveries", "--admin", &admin, "purge", &id])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() || err.contains("409"), "{err}");
        out.status.success()
    })
    .await
    .unwrap();
    assert_eq!(queue_depth(&gw), 2);
    let (status, _, _) = post(&c, &gw, "k-10", &json!({"ref": 10})).await;
    assert_eq!(status, 202);
}

#[test]
fn a_corrupt_store_stops_the_start_naming_its_file() {
    let dir = TempDir::new("saf-corrupt").unwrap();
    let store = dir.path().join("deliveries.redb");
    std::fs::write(
        &store,
        b"this is not a delivery store, it is a text file.\n",
    )
    .unwrap();
    let yaml = format!(
        "version: 1\nlisteners: {{http: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         upstreams: {{erp: {{endpoints: [\"127.0.0.1:1\"]}}}}\n\
         queues: {{q: {{path: {}}}}}\n\
         routes:\n  - {{name: r, methods: [POST], path: /r, upstream: erp, delivery: {{mode: queued, queue: q}}}}\n",
        store.display()
    );
    let config = dir.path().join("policy.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = Command::new(gateway_binary().unwrap())
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&store.display().to_string()),
        "the error names the file: {text}"
    );
    // and the file is left as it was, for an operator to look at
    assert_eq!(
        std::fs::read(&store).unwrap(),
        b"this is not a delivery store, it is a text file.\n"
    );
}

/// Each thread of the process with this name, and its scheduling policy (`/proc`'s `stat`,
/// field 41: 0 normal, 3 batch).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue; // a thread that ended meanwhile
        };
        // the fields after the name, which may hold spaces, start at field 3
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = after_name.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        out.push((comm.trim().to_owned(), policy));
    }
    out
}

/// The store's writer and the access-log writer are batch work, which never preempts a
/// request worker mid-request; the request workers keep the normal policy, and so does the
/// delivery runtime, which would otherwise starve the upstream while acceptances saturate a
/// core.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_threads_give_way_to_the_request_workers() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    // The gateway asks for the policy best effort; a sandbox that refuses it to every process
    // (this one included) leaves nothing to check here.
    let allowed = std::thread::spawn(|| {
        policies::background::yield_to_request_workers();
        policies::background::is_background()
    })
    .join()
    .unwrap();
    if !allowed {
        eprintln!("this system refuses SCHED_BATCH to unprivileged threads; nothing to check");
        return;
    }
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = TempDir::new("saf-sched").unwrap();
    let gw = Gateway::start(&file(&sim, dir.path(), "", "", "queued")).unwrap();
    let c = client().unwrap();
    // one order through every thread: accepted (the worker, the writer, the access log) and
    // delivered (the delivery runtime)
    let (status, _, body) = post(&c, &gw, "k-sched", &json!({"ref": "o-sched"})).await;
    assert_eq!(status, 202, "{body}");
    eventually("the order at the ERP", Duration::from_secs(20), || {
        stored_refs(&sim) == ["o-sched"]
    })
    .await
    .unwrap();

    // The access log's thread starts with the first line, written after the answer (the order
    // can reach the ERP first), and each thread sets its policy once running: wait for both.
    let settled = |threads: &[(String, u32)]| {
        ["delivery-writer", "access-log"]
            .iter()
            .all(|name| threads.iter().any(|(n, p)| n == name && *p == SCHED_BATCH))
    };
    let _ = eventually(
        "the background threads settled",
        Duration::from_secs(10),
        || settled(&thread_policies(gw.pid())),
    )
    .await;
    let threads = thread_policies(gw.pid());
    let policy_of = |name: &str| -> Vec<u32> {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .collect()
    };
    for name in ["delivery-writer", "access-log"] {
        assert_eq!(policy_of(name), [SCHED_BATCH], "{name}: {threads:?}");
    }
    assert_eq!(policy_of("BG deliveries"), [SCHED_OTHER], "{threads:?}");
    let workers = policy_of("gateway");
    assert!(!workers.is_empty(), "{threads:?}");
    assert!(workers.iter().all(|p| *p == SCHED_OTHER), "{threads:?}");
}
