//! Scripted faults over real sockets: every fault kind, the listener going down and coming
//! back, scripts moving through their phases, and requests in flight. Assertions are on what
//! happened and in which order, never on how fast.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use erp_sim::{Behaviour, DocumentKind, ErpSim, LatencyPoint, Phase, Script};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start() -> ErpSim {
    ErpSim::start("127.0.0.1:0".parse().expect("a socket address"))
        .await
        .expect("the simulator starts")
}

/// Polls until `condition` holds; fails the test if it never does.
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A client that opens a fresh connection per request, so each sees the listener as it is.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a client")
}

async fn put_json(sim: &ErpSim, path: &str, body: &Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .put(format!("{}{path}", sim.base_url()))
        .json(body)
        .send()
        .await
        .expect("the control API answers");
    let status = response.status();
    (status, response.json().await.expect("a JSON answer"))
}

async fn post_order(client: &reqwest::Client, sim: &ErpSim) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{}/erp/v1/orders", sim.base_url()))
        .json(&json!({"id": "PO-1"}))
        .send()
        .await
}

/// Collapses repeats: `[a, a, b, a]` becomes `[a, b, a]`.
fn collapse<T: PartialEq + Clone>(items: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in items {
        if out.last() != Some(item) {
            out.push(item.clone());
        }
    }
    out
}

/// `observed` (collapsed) visits `expected` in its order, possibly skipping some.
fn is_in_order<T: PartialEq>(observed: &[T], expected: &[T]) -> bool {
    let mut expected = expected.iter();
    observed.iter().all(|o| expected.any(|e| e == o))
}

#[tokio::test]
async fn fail_every_two_fails_every_other_request_with_retry_after() {
    let sim = start().await;
    let (status, shown) = put_json(
        &sim,
        "/_sim/behaviour",
        &json!({"fail_status": 503, "fail_every": 2, "retry_after": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["fail_every"], 2);
    assert_eq!(
        sim.behaviour(),
        Behaviour::fail_every(503, 2).with_retry_after(3)
    );
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = post_order(&client, &sim).await.unwrap();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        statuses.push((response.status().as_u16(), retry_after));
    }
    let ok = (201, None);
    let failed = (503, Some("3".to_owned()));
    assert_eq!(
        statuses,
        [
            ok.clone(),
            failed.clone(),
            ok.clone(),
            failed.clone(),
            ok,
            failed
        ]
    );
    assert_eq!(sim.documents(DocumentKind::Order).len(), 3);
    assert_eq!(sim.requests_completed(), 6);
}

#[tokio::test]
async fn fail_ratio_repeats_the_same_outcomes_for_the_same_seed() {
    let sim = start().await;
    let client = reqwest::Client::new();
    let behaviour = json!({"fail_status": 500, "fail_ratio": 0.5, "seed": 1234});
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (status, shown) = put_json(&sim, "/_sim/behaviour", &behaviour).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(shown["seed_in_use"], 1234);
        let mut outcomes = Vec::new();
        for _ in 0..40 {
            let response = client
                .get(format!("{}/echo", sim.base_url()))
                .send()
                .await
                .unwrap();
            outcomes.push(response.status().as_u16());
        }
        runs.push(outcomes);
    }
    assert_eq!(runs[0], runs[1], "same seed, same sequence");
    assert!(
        runs[0].contains(&200) && runs[0].contains(&500),
        "{:?}",
        runs[0]
    );

    // Without a seed one is picked and shown, so a run can be repeated.
    let (_, shown) = put_json(
        &sim,
        "/_sim/behaviour",
        &json!({"fail_status": 500, "fail_ratio": 0.5}),
    )
    .await;
    assert_eq!(shown["seed"], Value::Null);
    assert!(shown["seed_in_use"].is_u64(), "{shown}");
}

#[tokio::test]
async fn latency_delays_every_answer_by_at_least_its_floor() {
    let sim = start().await;
    // Every percentile at 150 ms, plus 0-20 ms of jitter.
    sim.set_behaviour(Behaviour {
        jitter_ms: Some(20),
        latency_percentiles: Some(vec![
            LatencyPoint::new(50.0, 150),
            LatencyPoint::new(100.0, 150),
        ]),
        ..Behaviour::default()
    });
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let started = Instant::now();
        let response = post_order(&client, &sim).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
    let (status, body) = put_json(
        &sim,
        "/_sim/behaviour",
        &json!({"latency_percentiles": [{"percentile": 100, "ms": 5}, {"percentile": 50, "ms": 1}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "INVALID_BEHAVIOUR");
}

#[tokio::test]
async fn hang_reads_the_request_and_never_answers_while_it_counts_in_flight() {
    let sim = start().await;
    sim.set_behaviour(Behaviour::hang(Some(1)));
    let mut hung = TcpStream::connect(sim.addr()).await.unwrap();
    hung.write_all(
        b"POST /erp/v1/orders HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n\
          content-length: 13\r\n\r\n{\"id\":\"PO-1\"}",
    )
    .await
    .unwrap();
    wait_for("the hung request's body to be read", || {
        sim.requests().first().is_some_and(|r| r.body_complete)
    })
    .await;
    wait_for("the hung request to count in flight", || {
        sim.stats().in_flight == 1
    })
    .await;

    // fail_count was 1: the next request is answered, while the first still hangs.
    let (status, ack) = {
        let response = post_order(&reqwest::Client::new(), &sim).await.unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        ack["documentId"], "ERP-ORD-000001",
        "the hung one stored nothing"
    );
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(200), hung.read(&mut byte)).await;
    assert!(
        read.is_err(),
        "the hung connection got {read:?}, not silence"
    );
    let stats = sim.stats();
    assert_eq!(stats.in_flight, 1);
    assert_eq!(stats.requests_started, 2);
    assert_eq!(stats.requests_completed, 1);

    // The client giving up ends it.
    drop(hung);
    wait_for("the hung request to leave", || sim.stats().in_flight == 0).await;
    assert_eq!(
        sim.stats().max_in_flight,
        2,
        "the hung one and the answered one"
    );
}

#[tokio::test]
async fn concurrent_slow_requests_set_the_high_water_mark() {
    let sim = start().await;
    sim.set_behaviour(Behaviour::delay_ms(1500));
    let client = reqwest::Client::new();
    let mut answers = tokio::task::JoinSet::new();
    for n in 0..6 {
        let url = format!("{}/echo/{n}", sim.base_url());
        let client = client.clone();
        answers.spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    }
    wait_for("six requests in flight", || sim.stats().in_flight == 6).await;
    // The control API is never counted.
    let stats: Value = reqwest::get(format!("{}/_sim/stats", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["in_flight"], 6);
    assert_eq!(stats["max_in_flight"], 6);
    while let Some(answer) = answers.join_next().await {
        assert_eq!(answer.unwrap().unwrap(), StatusCode::OK);
    }
    wait_for("every answer to be written", || sim.stats().in_flight == 0).await;
    assert_eq!(sim.stats().max_in_flight, 6);

    sim.set_behaviour(Behaviour::default());
    for _ in 0..3 {
        client
            .get(format!("{}/echo", sim.base_url()))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        sim.stats().max_in_flight,
        6,
        "one at a time leaves the mark"
    );
    sim.reset();
    assert_eq!(sim.stats().max_in_flight, 0);
}

#[tokio::test]
async fn down_for_ms_refuses_connections_then_listens_on_the_same_port() {
    let sim = start().await;
    let addr = sim.addr();
    // An idle connection from before: a crashed ERP closes it too.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    wait_for("the idle connection", || sim.connections_accepted() == 1).await;

    // The answer comes once the listener is closed, on the connection that asked.
    let (status, shown) = put_json(&sim, "/_sim/behaviour", &json!({"down_for_ms": 1500})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["listening"], false);
    assert_eq!(shown["down_for_ms"], 1500);
    assert!(!sim.is_listening());
    let refused = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection was closed");
    assert!(rest.is_empty(), "{read:?}");

    wait_for("the listener to come back", || sim.is_listening()).await;
    let response = post_order(&fresh_client(), &sim).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(sim.addr(), addr);
}

#[tokio::test]
async fn set_down_abandons_requests_in_flight_until_resumed() {
    let sim = start().await;
    let addr = sim.addr();
    sim.set_behaviour(Behaviour::hang(None));
    let client = fresh_client();
    let pending = {
        let client = client.clone();
        let url = format!("{}/echo", sim.base_url());
        tokio::spawn(async move { client.get(url).send().await })
    };
    wait_for("the request to hang", || sim.stats().in_flight == 1).await;

    sim.set_down(true).await.unwrap();
    assert!(!sim.is_listening());
    let err = pending.await.unwrap().unwrap_err();
    assert!(!err.is_timeout(), "{err}");
    wait_for("the abandoned request to leave", || {
        sim.stats().in_flight == 0
    })
    .await;
    let refused = post_order(&client, &sim).await.unwrap_err();
    assert!(refused.is_connect(), "{refused}");
    // Going down twice is fine; so is resuming twice.
    sim.stop_listening().await.unwrap();

    sim.set_behaviour(Behaviour::default());
    sim.resume().await.unwrap();
    sim.resume().await.unwrap();
    assert!(sim.is_listening());
    assert_eq!(sim.addr(), addr);
    let response = post_order(&client, &sim).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    // Reset listens again too.
    sim.set_down(true).await.unwrap();
    sim.reset();
    wait_for("reset to listen again", || sim.is_listening()).await;
    assert_eq!(
        post_order(&client, &sim).await.unwrap().status(),
        StatusCode::CREATED
    );
}

/// What one request saw while a script ran.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Status(u16),
    /// Its connection was closed under it (the listener went down meanwhile).
    Cut,
    Refused,
}

async fn observe(client: &reqwest::Client, sim: &ErpSim) -> Seen {
    match post_order(client, sim).await {
        Ok(response) => Seen::Status(response.status().as_u16()),
        Err(err) if err.is_connect() => Seen::Refused,
        Err(_) => Seen::Cut,
    }
}

#[tokio::test]
async fn a_script_runs_its_phases_in_order_and_holds_the_last() {
    let sim = start().await;
    let script = json!({"phases": [
        {"duration_ms": 200, "behaviour": {"fail_status": 503}},
        {"duration_ms": 200, "behaviour": {"fail_status": 429, "retry_after": 1}},
        {"duration_ms": 300, "behaviour": {"down_for_ms": 300}},
        {"duration_ms": 50},
    ]});
    let (status, shown) = put_json(&sim, "/_sim/script", &script).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["script"]["phases"], 4);
    let client = fresh_client();
    let mut seen = Vec::new();
    let final_state = Seen::Status(201);
    for _ in 0..2000 {
        let now = observe(&client, &sim).await;
        let done = now == final_state && sim.script_phase() == Some((3, 4));
        seen.push(now);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = collapse(&seen);
    let expected = [
        Seen::Status(503),
        Seen::Status(429),
        Seen::Cut,
        Seen::Refused,
        Seen::Status(201),
    ];
    assert!(is_in_order(&seen, &expected), "{seen:?}");
    assert_eq!(seen.last(), Some(&final_state), "{seen:?}");

    // The last phase is held.
    let shown: Value = reqwest::get(format!("{}/_sim/behaviour", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["script"]["phase"], 3);
    assert_eq!(shown["script"]["phase_ends_in_ms"], Value::Null);
    assert_eq!(shown["listening"], true);
    assert_eq!(sim.script_phase(), Some((3, 4)));

    // A behaviour ends the script; reset clears it.
    sim.set_script(Script::new(vec![Phase::new(
        60_000,
        Behaviour::fail(500, None),
    )]));
    assert_eq!(observe(&client, &sim).await, Seen::Status(500));
    sim.reset();
    assert_eq!(sim.script_phase(), None);
    assert_eq!(observe(&client, &sim).await, Seen::Status(201));
}

#[tokio::test]
async fn a_repeating_script_starts_over() {
    let sim = start().await;
    let mut script = Script::new(vec![
        Phase::new(50, Behaviour::fail(503, None)),
        Phase::new(50, Behaviour::default()),
    ]);
    script.repeat = true;
    sim.set_script(script);
    for phase in [1, 0, 1, 0] {
        wait_for(&format!("phase {phase}"), || {
            sim.script_phase() == Some((phase, 2))
        })
        .await;
    }
    sim.set_behaviour(Behaviour::default());
    assert_eq!(sim.script_phase(), None);
}

#[tokio::test]
async fn bad_scripts_are_refused_and_change_nothing() {
    let sim = start().await;
    sim.set_behaviour(Behaviour::fail(502, None));
    for bad in [
        json!({"phases": []}),
        json!({"phases": [{"duration_ms": 0}]}),
        json!({"phases": [{"duration_ms": 10, "behaviour": {"fail_status": 200}}]}),
        json!({"phases": [{"duration_ms": 10, "behavior": {}}]}),
    ] {
        let (status, body) = put_json(&sim, "/_sim/script", &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["code"], "INVALID_SCRIPT", "{bad}");
    }
    assert_eq!(sim.behaviour(), Behaviour::fail(502, None));
    assert_eq!(sim.script_phase(), None);
    assert_eq!(
        sim.stats().requests_started,
        0,
        "the control API is not counted"
    );
}

/// Starts the binary with `args`; returns it and its base URL.
fn spawn_binary(args: &[&str]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_erp-sim"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("its stdout"))
        .read_line(&mut line)
        .expect("its first line");
    let url = line
        .trim()
        .strip_prefix("erp-sim listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

#[tokio::test]
async fn the_binary_takes_a_behaviour_or_a_script_from_the_command_line() {
    let (mut child, url) = spawn_binary(&["--behaviour", r#"{"fail_status":503,"fail_every":2}"#]);
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = client.get(format!("{url}/echo")).send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(statuses, [200, 503, 200, 503]);

    let file = std::env::temp_dir().join(format!("erp-sim-script-{}.json", std::process::id()));
    std::fs::write(
        &file,
        r#"{"phases":[{"duration_ms":60000,"behaviour":{"fail_status":429,"retry_after":5}}]}"#,
    )
    .unwrap();
    let (mut child, url) = spawn_binary(&["--script", file.to_str().unwrap()]);
    let response = client.get(format!("{url}/echo")).send().await.unwrap();
    let shown: Value = client
        .get(format!("{url}/_sim/behaviour"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(shown["script"]["phases"], 1);

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_erp-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--behaviour",
            r#"{"fail_ratio":0.5}"#,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("also say how they fail"), "{stderr}");
}

#[test]
fn the_shipped_brownout_script_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/brownout.json");
    let text = std::fs::read_to_string(path).unwrap();
    let script: Script = serde_json::from_str(&text).unwrap();
    script.validate().unwrap();
    assert!(script.repeat);
    let failing: Vec<_> = script
        .phases
        .iter()
        .filter(|p| p.behaviour.fail_every == Some(2))
        .collect();
    assert_eq!(failing.len(), 1, "one phase where every other answer fails");
}
