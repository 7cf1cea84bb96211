//! The policy file as operators meet it: `gateway check` lists every error with its line, secrets
//! come from the environment, SIGHUP swaps the route table without failing a request, and a bad
//! file keeps the old one serving.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use erp_sim::ErpSim;
use serde_json::Value;
use tests::{Gateway, Start, TempDir, gateway_binary, policy_file};

fn check(yaml: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = TempDir::new("check").unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut cmd = Command::new(gateway_binary().unwrap());
    cmd.arg("check").arg("-c").arg(&file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace(&file.display().to_string(), "FILE");
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_lists_every_structural_error_with_its_line() {
    let yaml = "\
version: 1
upstreams:
  erp:
    endpoint: [\"127.0.0.1:9\"]
    read_timeout: soon
policies:
  json:
    kind: json_body
    max_depht: 3
routes:
  - name: orders
    methods: [POST]
    path: /orders
    upstream: erp
    retries: 3
";
    let (code, out) = check(yaml, &[]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&"FILE:3:3: missing required key \"endpoints\""),
        "{out}"
    );
    assert!(
        lines.contains(&"FILE:4:5: unknown key \"endpoint\" (did you mean \"endpoints\"?)"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FILE:5:19: \"soon\" does not match")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("FILE:9:5: unknown key \"max_depht\" (did you mean \"max_depth\"?)")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FILE:15:5: unknown key \"retries\"")),
        "{out}"
    );
    assert_eq!(lines.len(), 5, "{out}");
}

#[test]
fn check_lists_every_reference_error_with_its_line() {
    let yaml = "\
version: 1
channels: {amazon: {}}
upstreams:
  erp:
    endpoints: [\"127.0.0.1:9\", \"no-port\"]
    request_headers:
      Authorization: \"Bearer ${GW_TEST_UNSET_TOKEN}\"
policies:
  json: {kind: json_body}
routes:
  - name: orders
    methods: [POST, post]
    path: /channels/{channel}/orders
    upstream: erpp
    upstream_path: /erp/{tenant}
    policies: [json, auth]
  - name: orders
    methods: [POST]
    path: /channels/{channel}/orders
    upstream: erp
";
    let (code, out) = check(yaml, &[]);
    assert_eq!(code, 1, "{out}");
    for expected in [
        "FILE:5:32: endpoint \"no-port\" must be host:port",
        "FILE:7:22: environment variable GW_TEST_UNSET_TOKEN is not set",
        "FILE:12:21: \"post\" is not an HTTP method",
        "FILE:14:15: route \"orders\" names upstream \"erpp\", which is not defined (defined: erp)",
        "FILE:15:20: upstream path \"/erp/{tenant}\" uses {tenant}, which the route path does not capture",
        "FILE:16:22: route \"orders\" names policy \"auth\", which is not defined (defined: json)",
        "FILE:17:11: duplicate route name \"orders\"",
        "FILE:19:11: route \"orders\" and route \"orders\" both take POST /channels/{channel}/orders",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(expected)),
            "missing {expected:?} in:\n{out}"
        );
    }
    assert!(
        !out.contains("Bearer"),
        "a secret's surroundings must not be echoed: {out}"
    );
}

#[test]
fn check_passes_the_shipped_example_and_a_syntax_error_is_located() {
    let out = Command::new(gateway_binary().unwrap())
        .current_dir(tests::workspace_root())
        .args(["check", "-c", "policies/files/gateway.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(": ok: 12 routes, 5 upstreams, 27 policies"),
        "{text}"
    );

    let (code, out) = check("version: 1\nroutes:\n  - name: [unclosed\n", &[]);
    assert_eq!(code, 1);
    assert!(out.starts_with("FILE:3:"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_come_from_the_environment_and_reach_only_the_upstream() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let extra = "    request_headers:\n      X-Erp-Key: \"${GW_TEST_ERP_KEY}\"\n";
    let routes = "routes:\n  - {name: echo, methods: [GET], path: /echo, upstream: erp}\n";
    let gw = Gateway::start_with(
        &policy_file(sim.addr(), extra, routes),
        Start {
            env: vec![("GW_TEST_ERP_KEY".into(), "k-123-secret".into())],
            ..Start::default()
        },
    )
    .unwrap();
    let resp = reqwest::get(gw.url("/echo")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-erp-key").is_none());
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["headers"]["x-erp-key"], "k-123-secret");
    assert!(
        !gw.output().contains("k-123-secret"),
        "the secret was logged"
    );
}

const V1: &str = "routes:\n  - {name: old, methods: [GET], path: /echo/old, upstream: erp}\n";
const V2: &str = "routes:\n  - {name: new, methods: [GET], path: /echo/new, upstream: erp}\n  - {name: old, methods: [GET], path: /echo/old, upstream: erp}\n";
const BAD: &str = "routes:\n  - {name: new, methods: [GET], path: /echo/new, upstream: nowhere}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_routes_and_a_bad_file_keeps_the_old_ones_without_failing_a_request() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&policy_file(sim.addr(), "", V1)).unwrap();
    let hash_v1 = gw.config_doc().unwrap()["version"]["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(gw.url("/echo/new"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // traffic on the route both versions keep, during both reloads
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url, client) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            gw.url("/echo/old"),
            client.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tests::eventually("traffic", Duration::from_secs(10), || {
        ok.load(Ordering::Relaxed) > 20
    })
    .await
    .unwrap();

    gw.write_config(&policy_file(sim.addr(), "", V2)).unwrap();
    gw.sighup().unwrap();
    gw.wait_log("policy set reloaded", "version", "", Duration::ZERO)
        .ok();
    tests::eventually("the new route", Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(20));
        gw.metric("gateway_config_reloads_total{result=\"success\"}")
            .unwrap()
            == 1.0
    })
    .await
    .unwrap();
    assert_eq!(
        client
            .get(gw.url("/echo/new"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let doc = gw.config_doc().unwrap();
    let hash_v2 = doc["version"]["hash"].as_str().unwrap().to_owned();
    assert_ne!(hash_v1, hash_v2);
    assert_eq!(doc["last_reload"]["ok"], true);

    let before = ok.load(Ordering::Relaxed);
    gw.write_config(&policy_file(sim.addr(), "", BAD)).unwrap();
    gw.sighup().unwrap();
    tests::eventually("the failed reload", Duration::from_secs(10), || {
        gw.metric("gateway_config_reloads_total{result=\"failure\"}")
            .unwrap()
            == 1.0
    })
    .await
    .unwrap();
    tests::eventually("more traffic", Duration::from_secs(10), || {
        ok.load(Ordering::Relaxed) > before + 20
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }

    // the old set still serves, and says why the reload was refused
    assert_eq!(
        client
            .get(gw.url("/echo/new"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let doc = gw.config_doc().unwrap();
    assert_eq!(doc["version"]["hash"], hash_v2.as_str());
    assert_eq!(doc["last_reload"]["ok"], false);
    let errors = doc["last_reload"]["errors"].to_string();
    assert!(
        errors.contains("names upstream \\\"nowhere\\\""),
        "{errors}"
    );
    gw.wait_output("policy set reload rejected", Duration::from_secs(5))
        .unwrap();
    let logged = gw.log_events("policy set reload rejected");
    assert!(
        logged.iter().any(|e| e["error"]
            .as_str()
            .is_some_and(|s| s.contains("policy.yaml:14:"))),
        "{logged:?}"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_during_a_reload_finishes_on_the_snapshot_it_started_with() {
    let slow = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    slow.set_behaviour(erp_sim::Behaviour::delay_ms(1000));
    let routes_v1 = "routes:\n  - {name: slow, methods: [GET], path: /echo/slow, upstream: erp}\n";
    let routes_v2 =
        "routes:\n  - {name: other, methods: [GET], path: /echo/other, upstream: erp}\n";
    let gw = Gateway::start(&policy_file(slow.addr(), "", routes_v1)).unwrap();
    let url = gw.url("/echo/slow");
    let in_flight =
        tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tests::eventually(
        "the request to reach the ERP",
        Duration::from_secs(10),
        || slow.requests_started() == 1,
    )
    .await
    .unwrap();

    gw.write_config(&policy_file(slow.addr(), "", routes_v2))
        .unwrap();
    gw.sighup().unwrap();
    tests::eventually("the reload", Duration::from_secs(10), || {
        gw.metric("gateway_config_reloads_total{result=\"success\"}")
            .unwrap()
            == 1.0
    })
    .await
    .unwrap();
    assert_eq!(
        reqwest::get(gw.url("/echo/slow")).await.unwrap().status(),
        404,
        "the new set has no such route"
    );
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the old request must finish normally"
    );
}

#[test]
fn an_admin_listener_reachable_from_other_machines_is_refused() {
    let dir = tests::TempDir::new("admin-exposed").unwrap();
    let config = dir.path().join("policy.yaml");
    std::fs::write(
        &config,
        "version: 1\nlisteners: {http: 127.0.0.1:0}\nupstreams: {erp: {endpoints: [\"127.0.0.1:1\"]}}\nroutes: []\n",
    )
    .unwrap();
    let out = Command::new(gateway_binary().unwrap())
        .args(["run", "-c"])
        .arg(&config)
        .args(["--admin", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("not a loopback address"), "{text}");
}
