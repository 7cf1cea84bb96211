//! Rate limits end to end: the real gateway binary, the ERP simulator and a real redis-server.
//! Two instances sharing Redis admit the limit together; a killed Redis is met with the
//! configured `allow`, `deny` or `local` and left behind by itself once Redis is back; a stalled
//! Redis does not hold decisions up; headers, 429 answers and metrics are what clients and
//! operators see. Limits use long windows (5 per hour), so time passing during a test cannot
//! change what it counts. The Redis script is also checked against the local GCRA, decision by
//! decision, at injected times.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::sync::Arc;
use std::time::Duration;

use erp_sim::ErpSim;
use policies::state::rate_limit::{Gcra, LocalCounters, RedisCounters};
use policies::state::redis::{RedisSpec, RedisStore};
use policies::units::DurationSpec;
use serde_json::Value;
use tests::{Gateway, RedisServer, eventually, policy_file};

const HOURLY_POLICY: &str = "\"hourly\";q=5;w=3600";

/// A file whose `orders` route (streaming) and `bulk` route (buffered: it has a body policy)
/// are limited by `rl` (`policy_yaml`, indented under `policies:`).
fn file(sim: &ErpSim, redis: Option<&RedisServer>, policy_yaml: &str) -> String {
    let redis = redis.map_or(String::new(), |r| {
        format!("redis:\n  url: \"{}\"\n  timeout: 200ms\n", r.url())
    });
    let body = format!(
        "{redis}policies:\n  json: {{kind: json_body}}\n  rl:\n{policy_yaml}\
         routes:\n\
         \x20 - name: orders\n    methods: [GET]\n    path: /channels/{{channel}}/orders\n    upstream: erp\n    upstream_path: /echo/{{channel}}\n    policies: [rl]\n\
         \x20 - name: bulk\n    methods: [POST]\n    path: /channels/{{channel}}/bulk\n    upstream: erp\n    upstream_path: /echo/{{channel}}/bulk\n    policies: [rl, json]\n"
    );
    policy_file(sim.addr(), "", &body)
}

fn redis_policy(on_error: &str) -> String {
    format!(
        "    kind: rate_limit\n    store: redis\n    on_store_error: {on_error}\n    key: [channel]\n    limits: [{{name: hourly, rate: 5, per: 1h}}]\n"
    )
}

/// The sum of a metric's series that carry all these labels (in any order).
fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = gw.metrics().unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// `t` of the `RateLimit` header (its only limit).
    fn reset(&self) -> u64 {
        let h = self.header("ratelimit").unwrap();
        h.rsplit("t=").next().unwrap().parse().unwrap()
    }
}

async fn get(client: &reqwest::Client, gw: &Gateway, path: &str) -> Answer {
    let resp = client.get(gw.url(path)).send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

async fn statuses(client: &reqwest::Client, gw: &Gateway, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(client, gw, "/channels/amazon/orders").await.status);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_redis_admit_the_limit_together() {
    let redis = RedisServer::start().unwrap();
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = file(&sim, Some(&redis), &redis_policy("deny"));
    let a = Gateway::start(&yaml).unwrap();
    let b = Gateway::start(&yaml).unwrap();
    let client = reqwest::Client::new();

    let mut answers = Vec::new();
    for i in 0..12 {
        let gw = if i % 2 == 0 { &a } else { &b };
        answers.push(get(&client, gw, "/channels/amazon/orders").await);
    }
    let admitted: Vec<&Answer> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(admitted.len(), 5, "5 per hour across both instances");
    assert!(answers[..5].iter().all(|a| a.status == 200));
    assert_eq!(
        sim.requests().len(),
        5,
        "only admitted requests reach the ERP"
    );
    for (i, ok) in admitted.iter().enumerate() {
        // the upstream's answer carries the headers too
        assert_eq!(ok.header("ratelimit-policy"), Some(HOURLY_POLICY));
        let remaining = format!("\"hourly\";r={};t=", 4 - i);
        assert!(
            ok.header("ratelimit").unwrap().starts_with(&remaining),
            "{:?}",
            ok.header("ratelimit")
        );
        // a unit replenishes every 720 s; the test takes far less than a minute
        let t = ok.reset();
        assert!(
            t <= 720 * (i as u64 + 1) && t > 720 * (i as u64 + 1) - 60,
            "{t}"
        );
    }
    for refused in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(refused.status, 429);
        assert_eq!(
            refused.header("content-type"),
            Some("application/problem+json")
        );
        let doc = refused.json();
        assert_eq!(doc["type"], "urn:gateway:problem:quota-exceeded");
        assert_eq!(doc["status"], 429);
        assert_eq!(doc["limits"], serde_json::json!(["hourly"]));
        let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!((660..=720).contains(&retry), "{retry}");
        assert_eq!(refused.header("ratelimit-policy"), Some(HOURLY_POLICY));
        assert!(
            refused
                .header("ratelimit")
                .unwrap()
                .starts_with("\"hourly\";r=0;t=")
        );
        assert!(refused.reset() > 3600 - 60 && refused.reset() <= 3600);
    }
    // another channel has its own count, on either instance
    assert_eq!(
        get(&client, &b, "/channels/shopify/orders").await.status,
        200
    );
    // the buffered route shares the policy, hence the channel's count
    let resp = client
        .post(a.url("/channels/amazon/bulk"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["ratelimit-policy"], HOURLY_POLICY);

    let rejected = |gw: &Gateway| {
        metric(
            gw,
            "gateway_policy_rejections_total",
            &[("policy", "rl"), ("reason", "quota_exceeded")],
        )
    };
    assert_eq!(rejected(&a) + rejected(&b), 8.0);
    for gw in [&a, &b] {
        assert_eq!(
            metric(
                gw,
                "gateway_ratelimit_store_errors_total",
                &[("policy", "rl")]
            ),
            0.0
        );
        assert_eq!(
            metric(gw, "gateway_ratelimit_degraded", &[("policy", "rl")]),
            0.0
        );
    }
}

/// Spends the quota on Redis, kills it, checks the configured behaviour, restarts it and
/// waits for the gateway to use it again by itself. Returns what was sent while it was down.
async fn outage(on_error: &str) -> (Vec<u16>, Vec<u16>) {
    let mut redis = RedisServer::start().unwrap();
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&file(&sim, Some(&redis), &redis_policy(on_error))).unwrap();
    let client = reqwest::Client::new();

    let before = statuses(&client, &gw, 7).await;
    assert_eq!(before, [200, 200, 200, 200, 200, 429, 429]);

    redis.kill();
    let down = statuses(&client, &gw, 8).await;
    assert_eq!(
        metric(&gw, "gateway_ratelimit_degraded", &[("policy", "rl")]),
        1.0
    );
    let errors = metric(
        &gw,
        "gateway_ratelimit_store_errors_total",
        &[("policy", "rl")],
    );
    assert!(errors >= 1.0, "{errors}");
    redis.restart().unwrap();
    // the gateway finds Redis again by itself; the restarted Redis is empty
    let mut after = Vec::new();
    // requests drive the probe: send until one is decided on Redis again
    for _ in 0..200 {
        let a = get(&client, &gw, "/channels/amazon/orders").await;
        if metric(&gw, "gateway_ratelimit_degraded", &[("policy", "rl")]) == 0.0 {
            after.push(a.status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(after, [200], "the probe that found Redis is counted there");
    after.extend(statuses(&client, &gw, 6).await);
    assert_eq!(
        after,
        [200, 200, 200, 200, 200, 429, 429],
        "counted on Redis again"
    );
    assert_eq!(
        gw.log_events("rate limit store failing; deciding with the fallback")
            .len(),
        1,
        "logged once per state change:\n{}",
        gw.output()
    );
    assert_eq!(
        gw.log_events("rate limit store recovered; deciding on redis again")
            .len(),
        1
    );
    (down, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_allow_admits_everything_until_it_is_back() {
    let (down, _) = outage("allow").await;
    assert_eq!(down, [200; 8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_deny_refuses_everything_until_it_is_back() {
    let (down, _) = outage("deny").await;
    assert_eq!(down, [503; 8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_local_limits_in_process_until_it_is_back() {
    // instances: 1, so the local share is the whole 5 per hour, counted afresh in-process
    let (down, _) = outage("local").await;
    assert_eq!(down, [200, 200, 200, 200, 200, 429, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_on_a_dead_redis_is_a_503_problem_with_retry_after() {
    let mut redis = RedisServer::start().unwrap();
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&file(&sim, Some(&redis), &redis_policy("deny"))).unwrap();
    redis.kill();
    let a = get(&reqwest::Client::new(), &gw, "/channels/amazon/orders").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        a.json()["type"],
        "urn:gateway:problem:temporary-reduced-capacity"
    );
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(a.header("ratelimit-policy"), Some(HOURLY_POLICY));
    assert_eq!(a.header("ratelimit"), None, "nothing could be counted");
    assert!(sim.requests().is_empty());
    assert_eq!(
        metric(
            &gw,
            "gateway_policy_rejections_total",
            &[("policy", "rl"), ("reason", "store_unavailable")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_does_not_hold_decisions_up() {
    let redis = RedisServer::start().unwrap();
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&file(&sim, Some(&redis), &redis_policy("allow"))).unwrap();
    let client = reqwest::Client::new();
    assert_eq!(
        statuses(&client, &gw, 6).await,
        [200, 200, 200, 200, 200, 429]
    );

    // Redis would refuse (the quota is spent): a 200 can only come from the `allow` fallback,
    // i.e. from a decision that did not wait for the stalled Redis.
    let stall = redis.stall(4000);
    let mut during = Vec::new();
    for _ in 0..60 {
        let s = get(&client, &gw, "/channels/amazon/orders").await.status;
        during.push(s);
        if s == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(during.last(), Some(&200), "{during:?}");
    assert!(
        metric(
            &gw,
            "gateway_ratelimit_store_errors_total",
            &[("policy", "rl"), ("kind", "timeout")]
        ) >= 1.0
    );
    assert_eq!(
        metric(&gw, "gateway_ratelimit_degraded", &[("policy", "rl")]),
        1.0
    );
    stall.join().unwrap();

    // once Redis answers again, its count (kept through the stall) applies again
    let mut back = 0;
    for _ in 0..200 {
        let s = get(&client, &gw, "/channels/amazon/orders").await.status;
        if metric(&gw, "gateway_ratelimit_degraded", &[("policy", "rl")]) == 0.0 {
            back = s;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(back, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_limits_weights_legacy_headers_and_reload() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let policy = |headers: &str| {
        format!(
            "    kind: rate_limit\n    key: [channel]\n    cost_header: X-Batch-Size\n    max_cost: 5\n    headers: {headers}\n    limits: [{{name: hourly, rate: 5, per: 1h}}]\n"
        )
    };
    let gw = Gateway::start(&file(&sim, None, &policy("legacy"))).unwrap();
    let client = reqwest::Client::new();

    let a = get(&client, &gw, "/channels/amazon/orders").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(a.header("x-ratelimit-remaining"), Some("4"));
    assert_eq!(a.header("x-ratelimit-reset"), Some("720"));
    assert_eq!(a.header("ratelimit"), None);

    // a bad weight is a 400 problem and never reaches the ERP
    let bad = client
        .get(gw.url("/channels/amazon/orders"))
        .header("x-batch-size", "6")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    let doc: Value = bad.json().await.unwrap();
    assert_eq!(doc["type"], "urn:gateway:problem:invalid-request-cost");
    assert_eq!(sim.requests().len(), 1);

    // a batch of 2 spends 2
    let resp = client
        .get(gw.url("/channels/amazon/orders"))
        .header("x-batch-size", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "2");

    // a reload that changes the headers but not the limit keeps the count
    gw.write_config(&file(&sim, None, &policy("ietf"))).unwrap();
    gw.sighup().unwrap();
    eventually("the reload", Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(20));
        metric(
            &gw,
            "gateway_config_reloads_total",
            &[("result", "success")],
        ) == 1.0
    })
    .await
    .unwrap();
    let a = get(&client, &gw, "/channels/amazon/orders").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("ratelimit-policy"), Some(HOURLY_POLICY));
    // 4 units spent: the bucket is full again 4 × 720 s after the first (less the seconds the
    // test took)
    assert!(
        a.header("ratelimit")
            .unwrap()
            .starts_with("\"hourly\";r=1;t=")
    );
    assert!(a.reset() > 2880 - 60 && a.reset() <= 2880, "{}", a.reset());
    let a = get(&client, &gw, "/channels/amazon/orders").await;
    assert_eq!(a.status, 200);
    let refused = get(&client, &gw, "/channels/amazon/orders").await;
    assert_eq!(refused.status, 429);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((660..=720).contains(&retry), "{retry}");
    assert!(
        refused
            .header("ratelimit")
            .unwrap()
            .starts_with("\"hourly\";r=0;t=")
    );
    assert_eq!(sim.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_script_decides_exactly_like_the_local_gcra() {
    let redis = RedisServer::start().unwrap();
    let spec = RedisSpec {
        url: redis.url(),
        cluster: false,
        timeout: DurationSpec::secs(2),
        connect_timeout: DurationSpec::secs(2),
        tls: None,
    };
    let store = Arc::new(RedisStore::new(&redis.url(), &spec).unwrap());
    let s = 1_000_000;
    let limits = [
        Gcra::new(5, s, 10).unwrap(),
        Gcra::new(3, 7 * s, 4).unwrap(),
        Gcra::new(100, 86_400 * s, 100).unwrap(),
    ];
    let names: Vec<Box<str>> = ["rate", "odd", "daily"].map(Box::from).into();
    let remote = RedisCounters::new(store, "eq", &limits, &names);
    let local = LocalCounters::new(&limits);

    // a deterministic walk: bursts, pauses and weights on three keys
    let mut now: u64 = 1_700_000_000_000_000;
    let mut seed: u64 = 42;
    let (mut allowed, mut refused) = (0, 0);
    for i in 0..600 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let r = seed >> 33;
        now += match r % 5 {
            0 => r % 2_000_000,
            1 => r % 97,
            _ => 0,
        };
        let key = ["amazon", "shopify|x", "~anonymous"][(r % 3) as usize];
        let cost = 1 + (r >> 8) % 4;
        let want = local.decide(key, now, cost);
        let got = remote.decide(key, cost, Some(now)).await.unwrap();
        assert_eq!(got, want, "request {i}: key {key}, cost {cost}, at {now}");
        if want.allowed {
            allowed += 1;
        } else {
            refused += 1;
        }
    }
    assert!(allowed > 50 && refused > 50, "{allowed} / {refused}");
    // the state expires with the longest bucket, and lives under one hash-tagged key
    let ttl = redis.command(&["PTTL", &remote.key("amazon")]).unwrap();
    let ttl: u64 = ttl.trim_start_matches(':').parse().unwrap();
    assert!(ttl > 0 && ttl <= 86_400_000 + 1, "{ttl}");
    assert_eq!(remote.key("amazon"), "{gw:rl:eq:amazon}");
}
