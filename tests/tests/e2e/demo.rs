//! `gateway demo` from a clean checkout: it starts, prints a curl command, and that command goes
//! through the example chain to the ERP simulator and succeeds.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::{gateway_binary, workspace_root};

/// Runs `sh -c line` and returns (stdout, success).
fn shell(line: &str) -> (String, bool) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

#[test]
fn the_printed_request_goes_through_and_succeeds() {
    let mut child = Command::new(gateway_binary().unwrap())
        .current_dir(workspace_root())
        .args([
            "demo",
            "--http",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--erp",
            "127.0.0.1:0",
            "--marketplaces",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sim = None;
        let mut admin_auth = None;
        let mut status_page = None;
        let mut markets = None;
        let mut order_line = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("ERP sim") {
                sim = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(rest) = line.strip_prefix("status ") {
                status_page = rest.split_whitespace().next().map(str::to_owned);
            }
            if line.trim_start().starts_with("admin API:") {
                admin_auth = Some(line.clone());
            }
            if let Some(rest) = line.strip_prefix("markets") {
                markets = rest.split_whitespace().next().map(str::to_owned);
            }
            if line.starts_with("curl ") && line.contains("/events/shipments") {
                let first = (
                    order_line.take().unwrap_or_default(),
                    sim.clone(),
                    admin_auth.clone(),
                    status_page.clone(),
                );
                let _ = tx.send((first, line, markets.clone()));
            } else if line.starts_with("curl ") {
                order_line = Some(line);
            }
        }
    });
    let printed = rx.recv_timeout(Duration::from_secs(60));
    let result = printed.map(
        |((line, sim, admin_auth, status_page), fanout_line, markets)| {
            let (out, ok) = shell(&line);
            // pasted again: the same idempotency key, so the stored answer comes back
            let (again, _) = shell(&line);
            // The same request without its token must be refused at the edge.
            let without_token = line
                .split(" -H 'Authorization: ")
                .enumerate()
                .map(|(i, part)| {
                    if i == 0 {
                        part.to_owned()
                    } else {
                        part.split_once("' ")
                            .map_or(String::new(), |(_, r)| format!(" {r}"))
                    }
                })
                .collect::<String>();
            let (refused, _) = shell(&without_token);
            let seen = sim.clone().map(|url| shell(&format!("curl -sS {url}")).0);
            // the second request: a warehouse shipment, fanned out to the ERP and to Amazon
            let (fanned, _) = shell(&fanout_line);
            let markets = markets.expect("the demo printed no marketplace simulator URL");
            let mut at_amazon = String::new();
            let mut at_erp = String::new();
            for _ in 0..300 {
                at_amazon = shell(&format!("curl -sS {markets}")).0;
                at_erp = sim
                    .clone()
                    .map(|url| shell(&format!("curl -sS {url}")).0)
                    .unwrap_or_default();
                if at_amazon.contains("shipmentConfirmation")
                    && at_erp.contains("/erp/v1/shipments")
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let page = status_page
                .clone()
                .map(|url| shell(&format!("curl -sS {url}")).0);
            (
                line,
                out,
                again,
                ok,
                without_token,
                refused,
                seen,
                admin_auth,
                (status_page, page),
                (fanout_line, fanned, at_amazon, at_erp),
            )
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    let (
        line,
        out,
        again,
        ok,
        without_token,
        refused,
        seen,
        admin_auth,
        (status_page, page),
        (fanout_line, fanned, at_amazon, at_erp),
    ) = result.expect("the demo printed no curl command");
    // the status page's URL is printed: the admin listener's root, serving the page
    let status_page = status_page.expect("the demo printed no status page URL");
    assert!(
        status_page.starts_with("http://127.0.0.1:") && status_page.ends_with('/'),
        "{status_page}"
    );
    let page = page.unwrap_or_default();
    assert!(page.contains("<title>Gateway status</title>"), "{page}");
    // the demo runs the admin API without a token, on loopback, and says so
    let admin_auth = admin_auth.expect("the demo did not say how the admin API is protected");
    assert!(
        admin_auth.contains("no token configured, listening on loopback only"),
        "{admin_auth}"
    );
    assert!(ok, "{line}\n{out}");
    let status_line = out.lines().next().unwrap_or_default();
    assert!(status_line.starts_with("HTTP/1.1 201"), "{line}\n{out}");
    // the ERP's answer, mapped back to the canonical acknowledgement
    assert!(
        out.contains("\"erp_document_id\":\"ERP-ORD-000001\""),
        "{out}"
    );
    assert!(
        out.contains("\"reference\":\"amazon:902-1845936-5435065\""),
        "{out}"
    );
    assert!(out.to_ascii_lowercase().contains("\nratelimit: "), "{out}");

    assert!(again.starts_with("HTTP/1.1 201"), "{again}");
    assert!(
        again
            .to_ascii_lowercase()
            .contains("\nidempotent-replayed: true"),
        "{again}"
    );
    let body = |r: &str| r.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    assert_eq!(body(&again), body(&out));
    assert!(!without_token.contains("Bearer"), "{without_token}");
    assert!(
        refused.starts_with("HTTP/1.1 401"),
        "{without_token}\n{refused}"
    );

    // exactly one request reached the ERP, and it was the canonical order
    let seen: serde_json::Value =
        serde_json::from_str(&seen.expect("the demo printed no ERP simulator URL")).unwrap();
    let seen = seen.as_array().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let order: serde_json::Value =
        serde_json::from_str(seen[0]["body_utf8"].as_str().unwrap()).unwrap();
    assert_eq!(order["document_type"], "order");
    assert_eq!(order["channel"], "amazon");
    assert_eq!(order["id"], "amazon:902-1845936-5435065");

    // the shipment was accepted once for two destinations, and each got it in its own shape
    assert!(
        fanned.starts_with("HTTP/1.1 202"),
        "{fanout_line}\n{fanned}"
    );
    assert!(fanned.contains("\"destination\":\"amazon\""), "{fanned}");
    assert!(fanned.contains("\"destination\":\"erp\""), "{fanned}");
    let amazon: serde_json::Value = serde_json::from_str(&at_amazon).unwrap();
    let amazon: Vec<&serde_json::Value> = amazon
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["channel"] == "amazon")
        .collect();
    assert_eq!(amazon.len(), 1, "{at_amazon}");
    assert_eq!(amazon[0]["key"], "902-1845936-5435065");
    assert_eq!(
        amazon[0]["body"]["packageDetail"]["orderItems"][0]["orderItemId"],
        "05015851154158"
    );
    assert!(at_erp.contains("/erp/v1/shipments"), "{at_erp}");
}
