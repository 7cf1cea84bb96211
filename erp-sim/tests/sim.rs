//! End-to-end tests of the simulator over real sockets: a real HTTP client for the API, raw
//! TCP where the test must control exactly which bytes are sent.

use std::time::Duration;

use erp_sim::{Behaviour, DocumentKind, ErpSim, SimOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start() -> ErpSim {
    let addr = "127.0.0.1:0".parse().expect("a socket address");
    ErpSim::start(addr).await.expect("the simulator starts")
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

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn post_json(sim: &ErpSim, path: &str, body: &Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", sim.base_url()))
        .json(body)
        .send()
        .await
        .expect("the simulator answers");
    let status = response.status();
    (status, response.json().await.expect("a JSON answer"))
}

/// Sends raw bytes on a fresh connection and reads until the server closes it.
async fn raw_exchange(sim: &ErpSim, request: &str) -> String {
    let mut stream = TcpStream::connect(sim.addr()).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}

fn assert_error_shape(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn orders_are_acknowledged_stored_and_listed() {
    let sim = start().await;
    let client = reqwest::Client::new();
    let order = json!({"id": "PO-1", "lines": [{"sku": "A", "qty": 2}], "total": "19.99"});
    let first = client
        .post(format!("{}/erp/v1/orders", sim.base_url()))
        .header("x-request-id", "req-1")
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(first.headers()["content-type"], "application/json");
    let ack: Value = first.json().await.unwrap();
    assert_eq!(ack["documentId"], "ERP-ORD-000001");
    assert_eq!(ack["documentType"], "order");
    assert_eq!(ack["status"], "ACCEPTED");
    assert_eq!(ack["reference"], "PO-1");
    assert_eq!(ack["requestId"], "req-1");
    let received_at = ack["receivedAt"].as_str().unwrap();
    assert!(received_at.ends_with('Z'), "{received_at}");
    humantime::parse_rfc3339(received_at).unwrap();

    // The ERP does not deduplicate: the same body again is a second document.
    let (status, ack) = post_json(&sim, "/erp/v1/orders", &order).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(ack["documentId"], "ERP-ORD-000002");
    assert_eq!(ack["requestId"], Value::Null);

    let (_, ack) = post_json(&sim, "/erp/v1/shipments", &json!({"carrier": "UPS"})).await;
    assert_eq!(ack["documentId"], "ERP-SHP-000001");
    assert_eq!(ack["documentType"], "shipment");
    assert_eq!(ack["reference"], Value::Null);
    let (_, ack) = post_json(&sim, "/erp/v1/inventory-adjustments", &json!({"id": 7})).await;
    assert_eq!(ack["documentId"], "ERP-INV-000001");
    assert_eq!(ack["documentType"], "inventory_adjustment");
    assert_eq!(
        ack["reference"],
        Value::Null,
        "a non-string id is no reference"
    );
    let (_, ack) = post_json(&sim, "/erp/v1/returns", &json!({"id": "RMA-9"})).await;
    assert_eq!(ack["documentId"], "ERP-RET-000001");
    assert_eq!(ack["documentType"], "return");

    let orders = sim.documents(DocumentKind::Order);
    let ids: Vec<_> = orders.iter().map(|d| d.document_id.as_str()).collect();
    assert_eq!(ids, ["ERP-ORD-000001", "ERP-ORD-000002"]);
    assert_eq!(orders[0].body, order);
    assert_eq!(orders[0].request_id.as_deref(), Some("req-1"));
    assert_eq!(sim.documents(DocumentKind::Shipment).len(), 1);

    let stored = client
        .get(format!("{}/erp/v1/orders/ERP-ORD-000002", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), StatusCode::OK);
    assert_eq!(stored.json::<Value>().await.unwrap(), order);

    let missing = client
        .get(format!("{}/erp/v1/orders/ERP-ORD-000003", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()["content-type"], "application/json");
    assert_error_shape(&missing.json().await.unwrap(), "NOT_FOUND");

    // Every ERP request is recorded, in order, and answered.
    let paths: Vec<_> = sim.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.len(), 7);
    assert_eq!(paths[0], "/erp/v1/orders");
    assert_eq!(paths[6], "/erp/v1/orders/ERP-ORD-000003");
    assert_eq!(sim.requests_started(), 7);
    assert_eq!(sim.requests_completed(), 7);
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_rejected() {
    let sim = start().await;
    let client = reqwest::Client::new();
    for body in ["[1,2]", "\"order\"", "42", "null", "not json", ""] {
        let response = client
            .post(format!("{}/erp/v1/orders", sim.base_url()))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "body {body:?}");
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_error_shape(&response.json().await.unwrap(), "INVALID_DOCUMENT");
    }
    assert!(sim.documents(DocumentKind::Order).is_empty());
    assert_eq!(sim.requests().len(), 6);
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_error_shape() {
    let sim = start().await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", sim.base_url());

    let response = client.get(url("/nowhere")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_error_shape(&response.json().await.unwrap(), "NOT_FOUND");
    let response = client.get(url("/erp/v1/invoices")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = client.get(url("/erp/v1/orders")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_error_shape(&response.json().await.unwrap(), "METHOD_NOT_ALLOWED");
    assert_eq!(sim.requests_started(), 3);

    // The control API is never recorded nor counted.
    let response = client.get(url("/_sim/nowhere")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    client.get(url("/_sim/requests")).send().await.unwrap();
    assert_eq!(sim.requests_started(), 3);
    assert_eq!(sim.requests().len(), 3);
}

#[tokio::test]
async fn echo_reports_what_it_received() {
    let sim = start().await;
    let body = "héllo, ERP";
    let response = reqwest::Client::new()
        .put(format!("{}/echo/a/b%20c?x=1&y=two", sim.base_url()))
        .header("x-request-id", "abc-123")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/echo/a/b%20c");
    assert_eq!(echo["query"], "x=1&y=two");
    assert_eq!(echo["headers"]["x-request-id"], "abc-123");
    assert_eq!(echo["headers"]["x-multi"], json!(["one", "two"]));
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(echo["body_sha256"], sha256_hex(body.as_bytes()));
    assert_eq!(echo["body_utf8"], body);

    let echo: Value = reqwest::get(format!("{}/echo", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["query"], Value::Null);
    assert_eq!(echo["body_len"], 0);

    let record = &sim.requests()[0];
    assert_eq!(record.seq, 1);
    assert_eq!(record.path, "/echo/a/b%20c");
    assert_eq!(record.query.as_deref(), Some("x=1&y=two"));
    assert_eq!(record.header("x-request-id"), Some("abc-123"));
    assert_eq!(&record.body[..], body.as_bytes());
    assert!(record.body_complete);

    // The control API shows the same record as JSON.
    let records: Value = reqwest::get(format!("{}/_sim/requests", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = &records[0];
    assert_eq!(first["seq"], 1);
    assert_eq!(first["method"], "PUT");
    assert_eq!(first["headers"]["x-multi"], json!(["one", "two"]));
    assert_eq!(first["body_sha256"], sha256_hex(body.as_bytes()));
    assert_eq!(first["body_utf8"], body);
    assert_eq!(first["body_complete"], true);
    humantime::parse_rfc3339(first["received_at"].as_str().unwrap()).unwrap();
    assert_eq!(records.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn large_bodies_are_kept_byte_for_byte() {
    let sim = start().await;
    let payload: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let echo: Value = reqwest::Client::new()
        .post(format!("{}/echo/big", sim.base_url()))
        .body(payload.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["body_len"], payload.len());
    assert_eq!(echo["body_sha256"], sha256_hex(&payload));
    assert_eq!(echo["body_utf8"], Value::Null, "too large to show as text");
    let record = &sim.requests()[0];
    assert!(record.body == payload, "recorded body differs");
    assert_eq!(record.body_sha256, sha256_hex(&payload));
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_and_marked_incomplete() {
    let options = SimOptions {
        max_body_bytes: 1024,
        ..SimOptions::default()
    };
    let sim = ErpSim::start_with("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/erp/v1/orders", sim.base_url()))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_error_shape(&response.json().await.unwrap(), "PAYLOAD_TOO_LARGE");
    let record = &sim.requests()[0];
    assert!(!record.body_complete);
    assert!(record.body_error.is_some());
    assert!(sim.documents(DocumentKind::Order).is_empty());
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_is_counted_at_its_headers() {
    let sim = start().await;
    let mut stream = TcpStream::connect(sim.addr()).await.unwrap();
    stream
        .write_all(
            b"POST /erp/v1/orders HTTP/1.1\r\nhost: sim\r\nx-request-id: headers-only\r\n\
              content-type: application/json\r\ncontent-length: 10\r\n\r\n",
        )
        .await
        .unwrap();
    wait_for("the headers to be counted", || sim.requests_started() == 1).await;
    let record = &sim.requests()[0];
    assert_eq!(record.method, "POST");
    assert_eq!(record.path, "/erp/v1/orders");
    assert_eq!(record.header("x-request-id"), Some("headers-only"));
    assert!(!record.body_complete);
    assert!(record.body.is_empty());
    assert_eq!(sim.requests_completed(), 0);

    // Part of the body, then the client gives up: the record keeps what arrived.
    stream.write_all(b"{\"a\"").await.unwrap();
    drop(stream);
    wait_for("the body read to fail", || {
        sim.requests()[0].body_error.is_some()
    })
    .await;
    let record = &sim.requests()[0];
    assert!(!record.body_complete);
    assert_eq!(&record.body[..], b"{\"a\"");
    assert_eq!(record.body_sha256, sha256_hex(b"{\"a\""));
    assert_eq!(sim.requests_started(), 1);
    assert_eq!(sim.requests_completed(), 0);
    assert!(sim.documents(DocumentKind::Order).is_empty());

    let records: Value = reqwest::get(format!("{}/_sim/requests", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(records[0]["body_complete"], false);
    assert_eq!(records[0]["body_len"], 4);
}

#[tokio::test]
async fn delay_holds_the_answer_after_the_body_is_read() {
    let sim = start().await;
    sim.set_behaviour(Behaviour::delay_ms(120_000));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let err = impatient
        .post(format!("{}/erp/v1/orders", sim.base_url()))
        .json(&json!({"id": "slow"}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let record = &sim.requests()[0];
    assert!(record.body_complete, "the body is read before the delay");
    assert_eq!(sim.requests_completed(), 0);
    assert!(sim.documents(DocumentKind::Order).is_empty());

    // A short delay still answers normally.
    sim.set_behaviour(Behaviour::delay_ms(50));
    let (status, ack) = post_json(&sim, "/erp/v1/orders", &json!({"id": "late"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(ack["reference"], "late");
}

#[tokio::test]
async fn fail_status_fails_the_next_fail_count_requests() {
    let sim = start().await;
    let client = reqwest::Client::new();
    let put = client
        .put(format!("{}/_sim/behaviour", sim.base_url()))
        .json(&json!({"fail_status": 503, "fail_count": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(sim.behaviour(), Behaviour::fail(503, Some(2)));

    for _ in 0..2 {
        let response = client
            .post(format!("{}/erp/v1/orders", sim.base_url()))
            .json(&json!({"id": "PO-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_error_shape(&response.json().await.unwrap(), "SIMULATED_FAILURE");
    }
    let (status, ack) = post_json(&sim, "/erp/v1/orders", &json!({"id": "PO-1"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        ack["documentId"], "ERP-ORD-000001",
        "failed requests store nothing"
    );

    let behaviour: Value = client
        .get(format!("{}/_sim/behaviour", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(behaviour["fail_status"], 503);
    assert_eq!(behaviour["fail_count"], 0);
    assert_eq!(sim.requests_started(), 3);
    assert_eq!(sim.requests_completed(), 3);

    // Without a count every request fails until the behaviour changes.
    sim.set_behaviour(Behaviour::fail(500, None));
    for _ in 0..3 {
        let (status, body) = post_json(&sim, "/echo", &json!({})).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_error_shape(&body, "SIMULATED_FAILURE");
    }

    // Bad settings are refused and leave the behaviour as it was.
    for bad in [json!({"fail_status": 200}), json!({"fail_stauts": 503})] {
        let response = client
            .put(format!("{}/_sim/behaviour", sim.base_url()))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_error_shape(&response.json().await.unwrap(), "INVALID_BEHAVIOUR");
    }
    assert_eq!(sim.behaviour(), Behaviour::fail(500, None));
}

#[tokio::test]
async fn drop_connection_closes_without_a_single_response_byte() {
    let sim = start().await;
    sim.set_behaviour(Behaviour::drop_connection(Some(1)));
    let mut stream = TcpStream::connect(sim.addr()).await.unwrap();
    stream
        .write_all(
            b"POST /erp/v1/orders HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n\
              content-length: 13\r\n\r\n{\"id\":\"PO-1\"}",
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received))
        .await
        .expect("the simulator kept the connection open");
    match read {
        Ok(_) => {}
        // Closing with unread bytes in the socket may reset instead of a clean close.
        Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}"),
    }
    assert!(
        received.is_empty(),
        "got response bytes: {:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(sim.requests_started(), 1);
    assert_eq!(sim.requests_completed(), 0);
    assert_eq!(sim.requests()[0].path, "/erp/v1/orders");
    assert!(sim.documents(DocumentKind::Order).is_empty());

    // fail_count was 1: the next request is answered.
    let (status, ack) = post_json(&sim, "/erp/v1/orders", &json!({"id": "PO-1"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(ack["documentId"], "ERP-ORD-000001");

    // Through the control API, for every request while set; an HTTP client sees an error.
    let put = reqwest::Client::new()
        .put(format!("{}/_sim/behaviour", sim.base_url()))
        .json(&json!({"drop_connection": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for _ in 0..2 {
        let err = client
            .get(format!("{}/echo", sim.base_url()))
            .send()
            .await
            .unwrap_err();
        assert!(!err.is_timeout(), "{err}");
    }
    assert_eq!(sim.requests_started(), 4);
    assert_eq!(sim.requests_completed(), 1);
}

#[tokio::test]
async fn reset_clears_records_documents_counters_and_behaviour() {
    let sim = start().await;
    post_json(&sim, "/erp/v1/orders", &json!({"id": "PO-1"})).await;
    post_json(&sim, "/echo", &json!({})).await;
    sim.set_behaviour(Behaviour::fail(502, None));
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/_sim/reset", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    assert!(sim.requests().is_empty());
    assert!(sim.documents(DocumentKind::Order).is_empty());
    assert_eq!(sim.behaviour(), Behaviour::default());
    let stats = sim.stats();
    assert_eq!(stats.requests_started, 0);
    assert_eq!(stats.requests_completed, 0);
    assert_eq!(stats.connections_accepted, 0);
    assert!(stats.by_path.is_empty());

    let (status, ack) = post_json(&sim, "/erp/v1/orders", &json!({"id": "PO-1"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(ack["documentId"], "ERP-ORD-000001");
    assert_eq!(sim.requests()[0].seq, 1);

    sim.reset();
    assert!(sim.requests().is_empty());
    assert_eq!(sim.requests_started(), 0);
}

#[tokio::test]
async fn record_limit_keeps_the_newest_while_counters_stay_exact() {
    let options = SimOptions {
        record_limit: 3,
        ..SimOptions::default()
    };
    let sim = ErpSim::start_with("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let client = reqwest::Client::new();
    for n in 0..10 {
        let response = client
            .post(format!("{}/echo/{n}", sim.base_url()))
            .body(format!("body {n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let kept: Vec<_> = sim
        .requests()
        .into_iter()
        .map(|r| (r.seq, r.path, r.body))
        .collect();
    assert_eq!(
        kept,
        [
            (8, "/echo/7".to_owned(), "body 7".into()),
            (9, "/echo/8".to_owned(), "body 8".into()),
            (10, "/echo/9".to_owned(), "body 9".into()),
        ]
    );
    assert_eq!(sim.requests_started(), 10);
    assert_eq!(sim.requests_completed(), 10);

    let stats: Value = client
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["requests_started"], 10);
    assert_eq!(stats["requests_completed"], 10);
    assert_eq!(stats["by_path"]["/echo/0"], 1);
    assert_eq!(stats["by_path"].as_object().unwrap().len(), 10);
}

#[tokio::test]
async fn connections_are_counted_per_tcp_connection() {
    let sim = start().await;
    for _ in 0..3 {
        let answer = raw_exchange(
            &sim,
            "GET /echo HTTP/1.1\r\nhost: sim\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // Two requests on one kept-alive connection.
    let answer = raw_exchange(
        &sim,
        "GET /echo HTTP/1.1\r\nhost: sim\r\n\r\nGET /echo HTTP/1.1\r\nhost: sim\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    assert_eq!(sim.connections_accepted(), 4);
    assert_eq!(sim.requests_started(), 5);
}

#[tokio::test]
async fn shutdown_closes_open_connections_and_the_listener() {
    let sim = start().await;
    let addr = sim.addr();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    wait_for("the connection to be accepted", || {
        sim.connections_accepted() == 1
    })
    .await;
    sim.shutdown().await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), idle.read_to_end(&mut rest))
        .await
        .expect("the open connection was not closed");
    assert!(read.is_ok() || rest.is_empty());
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

#[test]
fn the_binary_prints_its_address_and_serves() {
    use std::io::{BufRead, BufReader, Read, Write};

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_erp-sim"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("erp-sim listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /_sim/stats HTTP/1.1\r\nhost: sim\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"requests_started\":0"), "{answer}");
}

#[tokio::test]
async fn the_health_endpoint_answers_ok_and_fails_with_the_simulator() {
    let sim = start().await;
    let url = format!("{}/erp/v1/health", sim.base_url());
    let ok = reqwest::get(&url).await.expect("an answer");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.json::<Value>().await.expect("JSON")["status"], "ok");
    sim.set_behaviour(Behaviour::fail(503, None));
    let failing = reqwest::get(&url).await.expect("an answer");
    assert_eq!(failing.status(), StatusCode::SERVICE_UNAVAILABLE);
    // probes are not business traffic, and do not use up a counted fault
    assert_eq!(sim.requests_started(), 0);
    assert!(sim.requests().is_empty());
    assert_eq!(sim.stats().health_checks, 2);
    sim.set_behaviour(Behaviour::fail_every(503, 2));
    for _ in 0..3 {
        assert_eq!(
            reqwest::get(&url).await.expect("an answer").status(),
            StatusCode::OK
        );
    }
    let (first, _) = post_json(&sim, "/erp/v1/orders", &json!({"id": 1})).await;
    let (second, _) = post_json(&sim, "/erp/v1/orders", &json!({"id": 2})).await;
    assert_eq!(
        (first, second),
        (StatusCode::CREATED, StatusCode::SERVICE_UNAVAILABLE)
    );
}
