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

/// The ERP simulator and a gateway serving the fixture in front of it.
async fn start() -> (ErpSim, Gateway) {
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
    (sim, gw)
}

/// The admin listener's `/openapi.json` (with the token when `auth`).
fn served(gw: &Gateway, auth: bool) -> tests::RawResponse {
    let auth = if auth {
        format!("Authorization: Bearer {ADMIN_TOKEN}\r\n")
    } else {
        String::new()
    };
    raw_request(
        gw.admin,
        format!("GET /openapi.json HTTP/1.1\r\nHost: a\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap()
}

/// Runs schemathesis (`st run`) with the fixture's hooks against `gw` from the document at
/// `schema`, with the checks above and `args`; answers its stdout and the calls it made
/// (statuses, as the hooks recorded them). Every answer must conform.
fn schemathesis(gw: &Gateway, dir: &Path, schema: &Path, args: &[&str]) -> (String, Vec<u64>) {
    let (out, statuses) = run_schemathesis(gw, dir, schema, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "schemathesis found nonconforming answers:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, statuses)
}

fn run_schemathesis(gw: &Gateway, dir: &Path, schema: &Path, args: &[&str]) -> (Output, Vec<u64>) {
    let tokens: Map<String, Value> = CHANNELS
        .iter()
        .map(|c| ((*c).to_owned(), Value::String(token(c))))
        .collect();
    let calls = dir.join("calls.ndjson");
    let _ = std::fs::remove_file(&calls);
    // fixed seed, no example database, one worker: a run is repeatable
    let out = Command::new(openapi_tool("st").unwrap())
        .current_dir(dir)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", fixtures())
        .env("GATEWAY_TEST_TOKENS", Value::Object(tokens).to_string())
        .env("GATEWAY_TEST_CALLS", &calls)
        .arg("run")
        .arg(schema)
        .args(["--url", &gw.url("")])
        .args(["--checks", CHECKS])
        .args([
            "--seed",
            "7",
            "--generation-database",
            "none",
            "--workers",
            "1",
        ])
        .args(["--no-color", "--request-timeout", "20"])
        .args(args)
        .output()
        .unwrap();
    let statuses = std::fs::read_to_string(&calls)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["status"]
                .as_u64()
                .unwrap()
        })
        .collect();
    (out, statuses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_every_answer_conforming_and_most_requests_reach_the_erp() {
    let (sim, gw) = start().await;
    let dir = TempDir::new("openapi-run").unwrap();

    // the admin listener serves the document `gateway openapi` writes, behind its token
    assert_eq!(served(&gw, false).status, 401);
    let served_doc = served(&gw, true);
    assert_eq!(served_doc.status, 200);
    assert_eq!(served_doc.header("content-type"), Some("application/json"));
    let doc = served_doc.json().unwrap();
    let written = openapi(&gw.config, &dir.path().join("written.json"));
    assert_eq!(doc, written);
    // a second request is served from the cache: the same bytes
    assert_eq!(served(&gw, true).body, served_doc.body);
    assert_eq!(
        doc["paths"]["/v1/channels/amazon/orders"]["post"]["deprecated"],
        true
    );
    let schema = dir.path().join("openapi.json");
    std::fs::write(&schema, &served_doc.body).unwrap();

    // Positive data only: the golden inputs the document carries as examples, then bounded
    // random documents valid against each channel's schema. The hooks add each channel's
    // token and a fresh Idempotency-Key, and record every call.
    let (stdout, statuses) = schemathesis(
        &gw,
        dir.path(),
        &schema,
        &[
            "--phases",
            "examples,fuzzing",
            "--mode",
            "positive",
            "--max-examples",
            "3",
        ],
    );
    let made = statuses.len() as u64;
    let reached = sim.requests_started();
    let accepted = statuses.iter().filter(|s| (200..300).contains(*s)).count() as u64;
    println!(
        "schemathesis (positive): {made} requests, {reached} reached the ERP simulator, {accepted} answered 2xx"
    );
    // every operation was called (14: four document routes per channel, and the v1 orders)
    let operations = doc["paths"].as_object().unwrap().len() as u64;
    assert!(made >= 2 * operations, "{made} requests:\n{stdout}");
    assert!(statuses.iter().all(|s| *s < 500), "{statuses:?}");
    assert!(
        reached * 2 >= made,
        "only {reached} of {made} generated requests reached the ERP:\n{stdout}"
    );
    // each forwarded document was answered with the canonical answer
    assert_eq!(accepted, reached, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_coverage_sweep_finds_every_refusal_conforming() {
    let (sim, gw) = start().await;
    let dir = TempDir::new("openapi-sweep").unwrap();
    let schema = dir.path().join("openapi.json");
    std::fs::write(&schema, served(&gw, true).body).unwrap();
    // Boundary and negative data (missing or malformed headers and bodies, wrong types,
    // values just outside each constraint) on the operations that carry every kind of
    // policy: bearer token, rate limit, schema, idempotency key, mapping, fallback delivery,
    // deprecation headers.
    let (stdout, statuses) = schemathesis(
        &gw,
        dir.path(),
        &schema,
        &[
            "--phases",
            "coverage",
            "--mode",
            "all",
            "--max-examples",
            "3",
            "--include-path-regex",
            "^/(v1/)?channels/amazon/orders$|^/channels/shopify/inventory$",
        ],
    );
    let made = statuses.len();
    let count =
        |range: std::ops::Range<u64>| statuses.iter().filter(|s| range.contains(*s)).count();
    println!(
        "schemathesis (coverage sweep): {made} requests, {} answered 2xx, {} 4xx, {} reached the ERP simulator",
        count(200..300),
        count(400..500),
        sim.requests_started()
    );
    assert!(statuses.iter().all(|s| *s < 500), "{statuses:?}");
    // the sweep exercised refusals of several kinds, each checked against the document
    for status in [400, 422] {
        assert!(statuses.contains(&status), "no {status}:\n{stdout}");
    }
    assert!(count(400..500) > made / 2, "{stdout}");

    // the checks bite: a document that no longer lists schema-violation among the 422s of
    // the amazon order operation is caught on the same kind of run
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&schema).unwrap()).unwrap();
    let types = doc.pointer_mut(
        "/paths/~1channels~1amazon~1orders/post/responses/422/content/application~1problem+json/schema/allOf/1/properties/type/anyOf/0/enum",
    )
    .unwrap();
    let kept: Vec<Value> = types
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| *t != "urn:gateway:problem:schema-violation")
        .cloned()
        .collect();
    assert_eq!(kept.len() + 1, types.as_array().unwrap().len());
    *types = Value::Array(kept);
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (out, _) = run_schemathesis(
        &gw,
        dir.path(),
        &wrong,
        &[
            "--phases",
            "coverage",
            "--mode",
            "all",
            "--max-examples",
            "3",
            "--max-failures",
            "1",
            "--include-path-regex",
            "^/channels/amazon/orders$",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("schema-violation"), "{stdout}");
}
