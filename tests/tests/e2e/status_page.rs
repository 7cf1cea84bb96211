//! The status page on the admin listener, in a real headless Chromium (tests/browser/status_page.py)
//! against the real binary and the ERP simulator: it loads with no browser error, its figures
//! move with traffic, a dead letter shows up and is replayed from the page until delivered; and
//! with an admin token it is reached by signing in and links to the sign-in form once signed out.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::path::Path;
use std::process::Command;

use erp_sim::{Behaviour, DocumentKind, ErpSim};
use tests::{Gateway, Start, TempDir, policy_file, raw_request};

/// A queued order route for every channel (ebay with a tiny rate limit) and a queue whose
/// retries are few and fast, so a refused order is a dead letter at once.
fn file(sim: &ErpSim, dir: &Path, admin_auth: &str) -> String {
    let text = policy_file(
        sim.addr(),
        "    connect_timeout: 200ms\n    read_timeout: 3s\n",
        &format!(
            "\
queues:
  q:
    path: {}/deliveries.redb
    workers: 2
    poll_interval: 20ms
    retry: {{initial_backoff: 20ms, max_backoff: 100ms, max_attempts: 2, max_age: 1h}}
policies:
  json: {{kind: json_body}}
  ebay-limit:
    kind: rate_limit
    channels: [ebay]
    key: [channel]
    limits: [{{name: hourly, rate: 2, per: 1h}}]
routes:
  - name: orders
    methods: [POST]
    path: /channels/{{channel}}/orders
    upstream: erp
    upstream_path: /erp/v1/orders
    policies: [json, ebay-limit]
    delivery: {{mode: queued, queue: q}}
",
            dir.display()
        ),
    );
    // admin_auth belongs under listeners:, right after the admin address
    text.replacen(
        "  admin: 127.0.0.1:0\n",
        &format!("  admin: 127.0.0.1:0\n{admin_auth}"),
        1,
    )
}

/// Runs the browser script; its stdout, after asserting it succeeded.
fn browse(gw: &Gateway, env: &[(&str, String)]) -> String {
    let mut cmd = Command::new(tests::browser_python());
    cmd.arg(tests::workspace_root().join("tests/browser/status_page.py"))
        .env("ADMIN_URL", format!("http://{}", gw.admin))
        .env("GATEWAY_URL", format!("http://{}", gw.http))
        .env(
            "CHROMIUM",
            std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .expect("python3 with playwright (scripts/system-deps.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ok: "),
        "{stdout}\n{stderr}\n{}",
        gw.output()
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_updates_with_traffic_and_replays_a_dead_letter() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // the ERP refuses the first order it sees (a permanent refusal: a dead letter at once),
    // then accepts every other one
    sim.set_behaviour(Behaviour::fail(422, Some(1)));
    let dir = TempDir::new("status-page").unwrap();
    let gw = Gateway::start(&file(&sim, dir.path(), "")).unwrap();

    let screenshot = tests::workspace_root().join("target/status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let stdout = tokio::task::block_in_place(|| {
        browse(
            &gw,
            &[
                ("MODE", "open".into()),
                ("SCREENSHOT", screenshot.display().to_string()),
            ],
        )
    });

    // what the page showed is what the gateway did: the replayed delivery is delivered, and
    // the ERP stored the order it had refused
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("replayed: "))
        .unwrap_or_else(|| panic!("no replayed id in {stdout}"))
        .trim()
        .to_owned();
    let (status, shown) = gw.admin_json("GET", &format!("/deliveries/{id}")).unwrap();
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["state"], "delivered", "{shown}");
    assert_eq!(shown["replays"], 1, "{shown}");
    assert!(
        sim.documents(DocumentKind::Order)
            .iter()
            .any(|d| d.body["ref"] == "amazon-0"),
        "the replayed order did not reach the ERP"
    );
    let (_, queues) = gw.admin_json("GET", "/queues").unwrap();
    assert_eq!(queues["queues"][0]["dead"], 0, "{queues}");
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "no screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_status_page_is_reached_by_signing_in() {
    const TOKEN: &str = "status-page-admin-token-7c41d0";
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = TempDir::new("status-page-token").unwrap();
    let gw = Gateway::start_with(
        &file(
            &sim,
            dir.path(),
            "  admin_auth:\n    token: \"${ADMIN_TOKEN}\"\n",
        ),
        Start {
            env: vec![("ADMIN_TOKEN".into(), TOKEN.into())],
            ..Start::default()
        },
    )
    .unwrap();
    // without a session neither the page nor its data is served: a browser asking for the
    // page is sent to the sign-in form, an API client is answered 401
    let (status, _) = gw.admin_json("GET", "/status.json").unwrap();
    assert_eq!(status, 401);
    let get_root = |accept: &str| {
        raw_request(
            gw.admin,
            format!("GET / HTTP/1.1\r\nHost: a\r\n{accept}Connection: close\r\n\r\n").as_bytes(),
        )
        .unwrap()
    };
    let browser = get_root("Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n");
    assert_eq!(browser.status, 303, "{browser:?}");
    assert_eq!(browser.header("location"), Some("/login"));
    assert_eq!(get_root("").status, 401);
    tokio::task::block_in_place(|| {
        browse(
            &gw,
            &[("MODE", "token".into()), ("ADMIN_TOKEN", TOKEN.into())],
        )
    });
}
