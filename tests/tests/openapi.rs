//! The OpenAPI document of the public surface, against the real binary: `gateway openapi` on
//! the example set validates as OpenAPI 3.1 (openapi-spec-validator), the admin listener serves
//! the same document behind its token, and schemathesis, driven by the served document, calls a
//! running gateway in front of the ERP simulator: every answer conforms to the document (status,
//! content type, headers, body schema), none is a 5xx, and at least half of the generated
//! requests reach the ERP. The Python tools come from the venv `scripts/system-deps.sh` makes.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use erp_sim::ErpSim;
use serde_json::{Map, Value};
use tests::{Gateway, Start, TempDir, gateway_binary, openapi_tool, raw_request, workspace_root};

const ADMIN_TOKEN: &str = "openapi-test-admin-token-5d1e";
/// Every channel of the fixture, each with a token carrying every document scope.
const CHANNELS: [&str; 4] = ["amazon", "shopify", "walmart", "ebay"];
const SCOPES: &str = "orders:write inventory:write shipments:write returns:write";
/// The checks schemathesis applies to every answer.
const CHECKS: &str = "status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,not_a_server_error";

fn fixtures() -> PathBuf {
    workspace_root().join("tests/fixtures/openapi")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `gateway openapi -c file -o out`, parsed.
fn openapi(file: &Path, out: &Path) -> Value {
    run(Command::new(gateway_binary().unwrap())
        // the fixture's admin token comes from the environment, as the gateway's does
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .args(["openapi", "-c"])
        .arg(file)
        .arg("-o")
        .arg(out));
    serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap()
}

fn token(channel: &str) -> String {
    let out = run(Command::new(gateway_binary().unwrap())
        .current_dir(workspace_root())
        .args(["token", "--channel", channel, "--scope", SCOPES]));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_example_sets_document_validates_as_openapi_3_1() {
    let dir = TempDir::new("openapi-doc").unwrap();
    let file = dir.path().join("openapi.json");
    let doc = openapi(&workspace_root().join("policies/files/gateway.yaml"), &file);
    assert_eq!(doc["openapi"], "3.1.0");
    let out = run(Command::new(openapi_tool("openapi-spec-validator").unwrap()).arg(&file));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{out:?}"
    );

    // the validator is not a rubber stamp: an operation without responses is refused
    let mut broken = doc.clone();
    let op = broken["paths"]["/channels/amazon/orders"]["post"]
        .as_object_mut()
        .unwrap();
    op.insert("responses".into(), Value::Array(Vec::new()));
    let broken_file = dir.path().join("broken.json");
    std::fs::write(&broken_file, serde_json::to_vec(&broken).unwrap()).unwrap();
    let out = Command::new(openapi_tool("openapi-spec-validator").unwrap())
        .arg(&broken_file)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_every_answer_conforming_and_most_requests_reach_the_erp() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = std::fs::read_to_string(fixtures().join("policy.yaml"))
        .unwrap()
        .replace("@ROOT@", &workspace_root().display().to_string())
        .replace("@ERP@", &sim.addr().to_string());
    let gw = Gateway::start_with(
        &yaml,
        Start {
            env: vec![("ADMIN_TOKEN".into(), ADMIN_TOKEN.into())],
            ..Start::default()
        },
    )
    .unwrap();
    let dir = TempDir::new("openapi-run").unwrap();

    // the admin listener serves the document `gateway openapi` writes, behind its token
    let get = |auth: &str| {
        raw_request(
            gw.admin,
            format!("GET /openapi.json HTTP/1.1\r\nHost: a\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap()
    };
    assert_eq!(get("").status, 401);
    let served = get(&format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"));
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    let served_doc = served.json().unwrap();
    let written = openapi(&gw.config, &dir.path().join("written.json"));
    assert_eq!(served_doc, written);
    // a second request is served from the cache: the same bytes
    let again = get(&format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"));
    assert_eq!(again.body, served.body);
    let schema = dir.path().join("openapi.json");
    std::fs::write(&schema, &served.body).unwrap();
    assert_eq!(
        served_doc["paths"]["/v1/channels/amazon/orders"]["post"]["deprecated"],
        true
    );

    let tokens: Map<String, Value> = CHANNELS
        .iter()
        .map(|c| ((*c).to_owned(), Value::String(token(c))))
        .collect();
    let calls = dir.path().join("calls.ndjson");
    // Positive data only: the golden inputs the document carries as examples, then bounded
    // random documents valid against each channel's schema (fixed seed, no example database,
    // one worker, so a run is repeatable). The hooks add each channel's token and a fresh
    // Idempotency-Key, and record every call.
    let out = Command::new(openapi_tool("st").unwrap())
        .current_dir(dir.path())
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", fixtures())
        .env("GATEWAY_TEST_TOKENS", Value::Object(tokens).to_string())
        .env("GATEWAY_TEST_CALLS", &calls)
        .arg("run")
        .arg(&schema)
        .args(["--url", &gw.url("")])
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,fuzzing", "--mode", "positive"])
        .args(["--max-examples", "3", "--seed", "7"])
        .args(["--generation-database", "none", "--workers", "1"])
        .args(["--no-color", "--request-timeout", "20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found nonconforming answers:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let lines = std::fs::read_to_string(&calls).unwrap();
    let statuses: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["status"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let made = statuses.len() as u64;
    let reached = sim.requests_started();
    let accepted = statuses.iter().filter(|s| (200..300).contains(*s)).count();
    println!(
        "schemathesis: {made} requests, {reached} reached the ERP simulator, {accepted} answered 2xx"
    );
    // every operation was called (14: four document routes per channel, and the v1 orders)
    let operations = served_doc["paths"].as_object().unwrap().len() as u64;
    assert!(made >= 2 * operations, "{made} requests:\n{stdout}");
    assert!(statuses.iter().all(|s| *s < 500), "{statuses:?}");
    assert!(
        reached * 2 >= made,
        "only {reached} of {made} generated requests reached the ERP:\n{stdout}"
    );
    // each forwarded document was answered with the canonical answer
    assert_eq!(accepted as u64, reached, "{statuses:?}");
}
