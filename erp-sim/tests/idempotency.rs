//! The simulated ERP and `Idempotency-Key` on writes. Honoured: a repeat gets the first answer
//! and creates nothing, a failed attempt leaves the key free, a key still being processed is a
//! conflict. Not honoured (the default): every write is processed, and repeats are counted.

use std::time::Duration;

use erp_sim::{Behaviour, DocumentKind, ErpSim, SimOptions};
use serde_json::{Value, json};

/// A simulator that honours keys.
async fn start() -> ErpSim {
    let options = SimOptions {
        honour_idempotency_keys: true,
        ..SimOptions::default()
    };
    ErpSim::start_with("127.0.0.1:0".parse().expect("a socket address"), options)
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

struct Answer {
    status: u16,
    replayed: bool,
    content_type: Option<String>,
    body: bytes::Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON answer")
    }
}

async fn post(
    client: &reqwest::Client,
    sim: &ErpSim,
    path: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Result<Answer> {
    let mut request = client.post(format!("{}{path}", sim.base_url())).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("a visible ASCII header").to_owned())
    };
    let replayed = header("erp-sim-replayed").as_deref() == Some("true");
    let content_type = header("content-type");
    Ok(Answer {
        status: response.status().as_u16(),
        replayed,
        content_type,
        body: response.bytes().await?,
    })
}

const ORDERS: &str = "/erp/v1/orders";

#[tokio::test]
async fn a_repeated_key_gets_the_first_answer_and_creates_nothing() {
    let sim = start().await;
    let client = reqwest::Client::new();
    let order = json!({"id": "PO-1"});
    let first = post(&client, &sim, ORDERS, Some("key-1"), &order)
        .await
        .unwrap();
    assert_eq!((first.status, first.replayed), (201, false));
    assert_eq!(first.json()["documentId"], "ERP-ORD-000001");
    for _ in 0..2 {
        let again = post(&client, &sim, ORDERS, Some("key-1"), &order)
            .await
            .unwrap();
        assert_eq!((again.status, again.replayed), (201, true));
        assert_eq!(again.body, first.body, "byte for byte the first answer");
        assert_eq!(again.content_type.as_deref(), Some("application/json"));
    }
    assert_eq!(sim.documents(DocumentKind::Order).len(), 1);
    assert_eq!(sim.stats().duplicates, 2);
    assert_eq!(sim.requests().len(), 3, "every attempt is recorded");

    // Another key, another path or no key at all: processed anew.
    let other = post(&client, &sim, ORDERS, Some("key-2"), &order)
        .await
        .unwrap();
    assert_eq!(other.json()["documentId"], "ERP-ORD-000002");
    let elsewhere = post(&client, &sim, "/erp/v1/returns", Some("key-1"), &order)
        .await
        .unwrap();
    assert_eq!(
        (elsewhere.status, elsewhere.replayed),
        (201, false),
        "same key, other path"
    );
    for n in 3..5 {
        let keyless = post(&client, &sim, ORDERS, None, &order).await.unwrap();
        assert_eq!(keyless.json()["documentId"], format!("ERP-ORD-00000{n}"));
    }
    let stats: Value = client
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["duplicates"], 2);
    assert_eq!(stats["in_flight_conflicts"], 0);
}

#[tokio::test]
async fn an_attempt_that_failed_records_nothing_so_its_retry_is_not_a_duplicate() {
    let sim = start().await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let order = json!({"id": "PO-1"});

    sim.set_behaviour(Behaviour::fail(503, Some(1)));
    let failed = post(&client, &sim, ORDERS, Some("a"), &order)
        .await
        .unwrap();
    assert_eq!(failed.status, 503);
    let retry = post(&client, &sim, ORDERS, Some("a"), &order)
        .await
        .unwrap();
    assert_eq!((retry.status, retry.replayed), (201, false));

    sim.set_behaviour(Behaviour::drop_connection(Some(1)));
    assert!(
        post(&client, &sim, ORDERS, Some("b"), &order)
            .await
            .is_err()
    );
    let retry = post(&client, &sim, ORDERS, Some("b"), &order)
        .await
        .unwrap();
    assert_eq!((retry.status, retry.replayed), (201, false));

    // A hung attempt, abandoned by its client, does not hold the key either.
    sim.set_behaviour(Behaviour::hang(Some(1)));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = post(&impatient, &sim, ORDERS, Some("c"), &order)
        .await
        .err()
        .unwrap();
    assert!(err.is_timeout(), "{err}");
    let retry = post(&client, &sim, ORDERS, Some("c"), &order)
        .await
        .unwrap();
    assert_eq!((retry.status, retry.replayed), (201, false));

    // An invalid document is refused and not remembered: the corrected one goes through.
    let invalid = post(&client, &sim, ORDERS, Some("d"), &json!([1]))
        .await
        .unwrap();
    assert_eq!(invalid.status, 400);
    let fixed = post(&client, &sim, ORDERS, Some("d"), &order)
        .await
        .unwrap();
    assert_eq!((fixed.status, fixed.replayed), (201, false));

    assert_eq!(sim.documents(DocumentKind::Order).len(), 4);
    assert_eq!(sim.stats().duplicates, 0);
    let replay = post(&client, &sim, ORDERS, Some("a"), &order)
        .await
        .unwrap();
    assert_eq!((replay.status, replay.replayed), (201, true));
    assert_eq!(sim.stats().duplicates, 1);
}

#[tokio::test]
async fn a_key_still_being_processed_is_a_conflict() {
    let sim = start().await;
    // Slow enough that the two requests overlap.
    sim.set_behaviour(Behaviour::delay_ms(1500));
    let client = reqwest::Client::new();
    let order = json!({"id": "PO-1"});
    let first = {
        let client = client.clone();
        let sim_url = sim.base_url();
        let order = order.clone();
        tokio::spawn(async move {
            client
                .post(format!("{sim_url}{ORDERS}"))
                .header("idempotency-key", "same")
                .json(&order)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    wait_for("the first request to be read", || {
        sim.requests().first().is_some_and(|r| r.body_complete)
    })
    .await;
    let second = post(&client, &sim, ORDERS, Some("same"), &order)
        .await
        .unwrap();
    let first = first.await.unwrap().unwrap();
    // Whichever of the two took the key first created the order; the other was refused.
    let mut statuses = [first, second.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409]);
    if second.status == 409 {
        let error = second.json();
        assert_eq!(error["error"]["code"], "IDEMPOTENCY_KEY_IN_USE", "{error}");
    }
    assert_eq!(sim.documents(DocumentKind::Order).len(), 1);
    let stats = sim.stats();
    assert_eq!((stats.in_flight_conflicts, stats.duplicates), (1, 0));

    sim.set_behaviour(Behaviour::default());
    let third = post(&client, &sim, ORDERS, Some("same"), &order)
        .await
        .unwrap();
    assert_eq!((third.status, third.replayed), (201, true));
    assert_eq!(sim.stats().duplicates, 1);
}

#[tokio::test]
async fn reset_forgets_the_keys() {
    let sim = start().await;
    let client = reqwest::Client::new();
    let order = json!({"id": "PO-1"});
    post(&client, &sim, ORDERS, Some("k"), &order)
        .await
        .unwrap();
    post(&client, &sim, ORDERS, Some("k"), &order)
        .await
        .unwrap();
    assert_eq!(sim.stats().duplicates, 1);
    sim.reset();
    assert_eq!(sim.stats().duplicates, 0);
    let fresh = post(&client, &sim, ORDERS, Some("k"), &order)
        .await
        .unwrap();
    assert_eq!((fresh.status, fresh.replayed), (201, false));
    assert_eq!(fresh.json()["documentId"], "ERP-ORD-000001");
}

#[tokio::test]
async fn when_keys_are_not_honoured_repeats_are_processed_and_counted() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    sim.honour_idempotency_keys(false);
    let client = reqwest::Client::new();
    let order = json!({"id": "PO-1"});
    let first = post(&client, &sim, ORDERS, Some("k"), &order)
        .await
        .unwrap();
    let again = post(&client, &sim, ORDERS, Some("k"), &order)
        .await
        .unwrap();
    assert_eq!((again.status, again.replayed), (201, false));
    assert_ne!(again.body, first.body, "a second order");
    assert_eq!(sim.documents(DocumentKind::Order).len(), 2);
    assert_eq!(sim.stats().duplicates, 1, "the ERP saw the key twice");

    // Two at once with one key: both processed, the overlap counted.
    sim.set_behaviour(Behaviour::delay_ms(1000));
    let overlapping = {
        let client = client.clone();
        let url = format!("{}{ORDERS}", sim.base_url());
        let order = order.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .header("idempotency-key", "both")
                .json(&order)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    wait_for("the first request to be read", || {
        sim.requests().len() == 3 && sim.requests()[2].body_complete
    })
    .await;
    let second = post(&client, &sim, ORDERS, Some("both"), &order)
        .await
        .unwrap();
    assert_eq!(
        (overlapping.await.unwrap().unwrap(), second.status),
        (201, 201)
    );
    assert_eq!(sim.documents(DocumentKind::Order).len(), 4);
    assert_eq!(sim.stats().in_flight_conflicts, 1);

    // Turned on at run time, repeats are answered from memory.
    sim.set_behaviour(Behaviour::default());
    sim.honour_idempotency_keys(true);
    let replay = post(&client, &sim, ORDERS, Some("k"), &order)
        .await
        .unwrap();
    assert_eq!((replay.status, replay.replayed), (201, true));
    assert_eq!(replay.body, first.body);
    assert_eq!(sim.documents(DocumentKind::Order).len(), 4);
}
