//! Contract review as CI runs it: the real `gateway check -c NEW --against OLD` on pairs of
//! policy files in tests/fixtures/review (base.yaml against one file per kind of change; the
//! folder's README lists them). A breaking change exits 1 with a JSON finding that names it
//! (kind, route, channel, pointer, old and new value), a file with only additive changes exits
//! 0 and lists each one, a file that does not compile exits 2.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tests::{gateway_binary, workspace_root};

fn fixtures() -> PathBuf {
    workspace_root().join("tests/fixtures/review")
}

/// What one run printed and returned.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `gateway check -c NEW --against OLD --format FORMAT`, run in the fixtures folder so the
/// output names the files as given.
fn run(new: &str, old: &str, format: &str) -> Result<Run> {
    let out = Command::new(gateway_binary()?)
        .current_dir(fixtures())
        .args(["check", "-c", new, "--against", old, "--format", format])
        .output()
        .context("running gateway check --against")?;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The JSON report of NEW against base.yaml, with its exit status.
fn review(new: &str) -> Result<(i32, Value)> {
    let r = run(new, "base.yaml", "json")?;
    let doc: Value = serde_json::from_str(&r.stdout)
        .with_context(|| format!("not JSON (stderr: {}):\n{}", r.stderr, r.stdout))?;
    Ok((r.code, doc))
}

/// Whether every member of `wanted` is in `finding` with the same value.
fn matches(finding: &Value, wanted: &Value) -> bool {
    wanted
        .as_object()
        .is_some_and(|w| w.iter().all(|(k, v)| finding.get(k) == Some(v)))
}

/// NEW against base.yaml exits 1 and reports exactly these breaking findings (each given by
/// some of its fields), and nothing else.
fn assert_breaks(new: &str, wanted: &[Value]) -> Result<()> {
    let (code, doc) = review(new)?;
    let pretty = serde_json::to_string_pretty(&doc)?;
    ensure!(code == 1, "{new}: exit {code}, not 1:\n{pretty}");
    ensure!(
        doc["breaking"] == json!(wanted.len()) && doc["additive"] == json!(0),
        "{new}: expected {} breaking finding(s) and no additive one:\n{pretty}",
        wanted.len()
    );
    let findings = doc["findings"].as_array().context("findings")?;
    ensure!(findings.len() == wanted.len(), "{new}:\n{pretty}");
    for w in wanted {
        ensure!(
            findings
                .iter()
                .any(|f| f["severity"] == "breaking" && matches(f, w)),
            "{new}: no breaking finding like {w}:\n{pretty}"
        );
    }
    // every finding carries the documented fields, null when they do not apply
    for f in findings {
        for field in [
            "severity", "kind", "route", "channel", "pointer", "also_at", "schema", "message",
            "old", "new",
        ] {
            ensure!(f.get(field).is_some(), "{new}: no {field} in {f}");
        }
    }
    Ok(())
}

#[test]
fn a_removed_route_breaks() -> Result<()> {
    assert_breaks(
        "route-removed.yaml",
        &[json!({
            "kind": "route.removed",
            "route": "erp-documents",
            "old": "/erp/{collection}/{id}",
            "new": null,
        })],
    )
}

#[test]
fn a_removed_method_breaks() -> Result<()> {
    assert_breaks(
        "method-removed.yaml",
        &[json!({"kind": "method.removed", "route": "channel-shipments", "old": "PUT"})],
    )
}

#[test]
fn an_added_scope_breaks() -> Result<()> {
    assert_breaks(
        "scope-added.yaml",
        &[json!({
            "kind": "scope.added",
            "route": "channel-shipments",
            "new": "shipments:confirm",
        })],
    )
}

#[test]
fn a_new_required_field_breaks() -> Result<()> {
    assert_breaks(
        "required-added.yaml",
        &[json!({
            "kind": "schema.required",
            "route": "channel-shipments",
            "channel": "amazon",
            "pointer": "/packageDetail/carrierCode",
            "schema": "schemas/required-added.schema.json#/properties/packageDetail/required",
            "new": "carrierCode",
        })],
    )
}

#[test]
fn a_property_removed_under_additional_properties_false_breaks() -> Result<()> {
    // the item schema is a $ref into $defs: the pointer is where documents carry it, the
    // schema location where the property was
    assert_breaks(
        "property-removed.yaml",
        &[json!({
            "kind": "schema.properties",
            "channel": "amazon",
            "pointer": "/packageDetail/orderItems/*/transparencyCodes",
            "schema": "schemas/base.schema.json#/$defs/OrderItem/properties/transparencyCodes",
            "new": null,
        })],
    )
}

#[test]
fn a_narrower_type_breaks() -> Result<()> {
    assert_breaks(
        "type-narrowed.yaml",
        &[json!({
            "kind": "schema.type",
            "channel": "amazon",
            "pointer": "/marketplaceId",
            "old": ["string", "null"],
            "new": "string",
        })],
    )
}

#[test]
fn a_narrower_enum_breaks() -> Result<()> {
    assert_breaks(
        "enum-narrowed.yaml",
        &[json!({
            "kind": "schema.enum",
            "channel": "amazon",
            "pointer": "/codCollectionMethod",
            "old": ["DirectPayment", "CashOnDelivery"],
            "new": ["DirectPayment"],
        })],
    )
}

#[test]
fn a_lower_max_length_and_maximum_break() -> Result<()> {
    assert_breaks(
        "max-lowered.yaml",
        &[
            json!({
                "kind": "schema.maxLength",
                "pointer": "/packageDetail/carrierCode",
                "old": 64,
                "new": 32,
            }),
            json!({
                "kind": "schema.maximum",
                "pointer": "/packageDetail/orderItems/*/quantity",
                "schema": "schemas/max-lowered.schema.json#/$defs/OrderItem/properties/quantity/maximum",
                "old": 10000,
                "new": 999,
            }),
        ],
    )
}

#[test]
fn a_higher_min_length_and_minimum_break() -> Result<()> {
    assert_breaks(
        "min-raised.yaml",
        &[
            json!({
                "kind": "schema.minLength",
                "pointer": "/packageDetail/orderItems/*/orderItemId",
                "old": 1,
                "new": 14,
            }),
            json!({
                "kind": "schema.minimum",
                "pointer": "/packageDetail/orderItems/*/quantity",
                "old": 1,
                "new": 2,
            }),
        ],
    )
}

#[test]
fn additional_properties_newly_false_breaks() -> Result<()> {
    assert_breaks(
        "closed.yaml",
        &[json!({
            "kind": "schema.additionalProperties",
            "channel": "amazon",
            "pointer": "/packageDetail",
            "schema": "schemas/closed.schema.json#/properties/packageDetail/additionalProperties",
            "old": null,
            "new": false,
        })],
    )
}

#[test]
fn a_changed_pattern_breaks() -> Result<()> {
    // whether one regular expression accepts all another does is not decided: a changed
    // pattern is breaking unless the new one only adds alternatives (additive.yaml)
    assert_breaks(
        "pattern-narrowed.yaml",
        &[json!({
            "kind": "schema.pattern",
            "pointer": "/packageDetail/packageReferenceId",
            "old": "^[1-9][0-9]*$",
            "new": "^[1-9][0-9]{0,8}$",
        })],
    )
}

#[test]
fn a_route_past_its_sunset_breaks() -> Result<()> {
    assert_breaks(
        "sunset-passed.yaml",
        &[json!({
            "kind": "route.sunset",
            "route": "erp-documents",
            "old": null,
            "new": {"deprecated": "2020-01-01", "sunset": "2020-06-30"},
        })],
    )
}

#[test]
fn a_deprecation_with_a_future_sunset_is_additive() -> Result<()> {
    let (code, doc) = review("deprecated.yaml")?;
    ensure!(code == 0, "exit {code}: {doc}");
    ensure!(
        doc["breaking"] == json!(0) && doc["additive"] == json!(1),
        "{doc}"
    );
    ensure!(
        matches(
            &doc["findings"][0],
            &json!({"kind": "route.deprecated", "route": "erp-documents", "severity": "additive"})
        ),
        "{doc}"
    );
    Ok(())
}

#[test]
fn a_lower_rate_limit_breaks() -> Result<()> {
    assert_breaks(
        "limit-lowered.yaml",
        &[json!({
            "kind": "rate_limit.lowered",
            "route": "channel-shipments",
            "channel": "amazon",
            "pointer": "/policies/amazon-limit/limits/per_second",
            "old": {"rate": 10, "per_ms": 1000, "burst": 20},
            "new": {"rate": 5, "per_ms": 1000, "burst": 20},
        })],
    )
}

#[test]
fn a_lower_body_limit_breaks() -> Result<()> {
    assert_breaks(
        "body-limit-lowered.yaml",
        &[json!({
            "kind": "max_body_bytes.lowered",
            "route": "channel-shipments",
            "old": 1_048_576,
            "new": 65_536,
        })],
    )
}

#[test]
fn a_mapping_whose_output_changes_on_its_golden_input_breaks() -> Result<()> {
    assert_breaks(
        "mapping-changed.yaml",
        &[json!({
            "kind": "mapping.output_changed",
            "route": "channel-shipments",
            "channel": "amazon",
            "pointer": "/carrier/code",
            "old": "FedEx",
            "new": "FEDEX",
        })],
    )
}

const ADDITIVE_KINDS: [&str; 11] = [
    "channel.added",
    "method.added",
    "schema.enum",
    "schema.required",
    "schema.maxLength",
    "schema.maximum",
    "schema.properties",
    "schema.pattern",
    "rate_limit.raised",
    "max_body_bytes.raised",
    "route.added",
];

#[test]
fn only_additive_changes_exit_0_and_are_each_listed() -> Result<()> {
    let (code, doc) = review("additive.yaml")?;
    let pretty = serde_json::to_string_pretty(&doc)?;
    ensure!(code == 0, "exit {code}:\n{pretty}");
    ensure!(doc["breaking"] == json!(0), "{pretty}");
    ensure!(doc["additive"] == json!(ADDITIVE_KINDS.len()), "{pretty}");
    let findings = doc["findings"].as_array().context("findings")?;
    ensure!(
        findings.iter().all(|f| f["severity"] == "additive"),
        "{pretty}"
    );
    let kinds: BTreeSet<&str> = findings.iter().filter_map(|f| f["kind"].as_str()).collect();
    ensure!(
        kinds == ADDITIVE_KINDS.into_iter().collect(),
        "kinds {kinds:?}:\n{pretty}"
    );
    for w in [
        json!({"kind": "route.added", "route": "erp-health", "new": "/erp/health"}),
        json!({"kind": "method.added", "new": "PATCH"}),
        json!({"kind": "channel.added", "channel": "walmart"}),
        json!({"kind": "schema.enum", "pointer": "/codCollectionMethod"}),
        json!({"kind": "schema.required", "pointer": "/packageDetail/shipDate", "old": "shipDate"}),
        json!({"kind": "schema.properties", "pointer": "/packageDetail/orderItems/*/giftWrap"}),
        json!({"kind": "rate_limit.raised", "channel": "amazon"}),
    ] {
        ensure!(findings.iter().any(|f| matches(f, &w)), "no {w}:\n{pretty}");
    }
    Ok(())
}

#[test]
fn every_additive_change_read_backwards_breaks() -> Result<()> {
    // base.yaml against additive.yaml: each widening undone is a narrowing
    let r = run("base.yaml", "additive.yaml", "json")?;
    let doc: Value = serde_json::from_str(&r.stdout)?;
    ensure!(r.code == 1, "exit {}:\n{}", r.code, r.stdout);
    ensure!(
        doc["breaking"] == json!(ADDITIVE_KINDS.len()) && doc["additive"] == json!(0),
        "{}",
        r.stdout
    );
    ensure!(
        doc["findings"]
            .as_array()
            .context("findings")?
            .iter()
            .any(|f| matches(
                f,
                &json!({"kind": "schema.properties", "pointer": "/packageDetail/orderItems/*/giftWrap"})
            )),
        "the new property under additionalProperties: false, removed again: {}",
        r.stdout
    );
    Ok(())
}

#[test]
fn unchanged_files_have_no_findings() -> Result<()> {
    let (code, doc) = review("base.yaml")?;
    ensure!(
        code == 0 && doc == json!({"breaking": 0, "additive": 0, "findings": []}),
        "exit {code}: {doc}"
    );
    // the shipped example set against itself: every schema, mapping and limit compared
    let example = workspace_root().join("policies/files/gateway.yaml");
    let example = example.to_str().context("path")?;
    let r = run(example, example, "json")?;
    ensure!(r.code == 0, "exit {}: {}{}", r.code, r.stdout, r.stderr);
    let doc: Value = serde_json::from_str(&r.stdout)?;
    ensure!(doc["findings"] == json!([]), "{}", r.stdout);
    Ok(())
}

#[test]
fn the_text_output_lists_breaking_changes_first_one_line_each() -> Result<()> {
    // mixed.yaml declares a new channel (additive, found first) and drops PUT (breaking)
    let r = run("mixed.yaml", "base.yaml", "text")?;
    ensure!(r.code == 1, "exit {}: {}", r.code, r.stdout);
    let lines: Vec<&str> = r.stdout.lines().collect();
    ensure!(lines.len() == 3, "{}", r.stdout);
    ensure!(
        lines[0].starts_with("breaking method.removed: ") && lines[0].contains("PUT"),
        "{}",
        r.stdout
    );
    ensure!(
        lines[1].starts_with("additive channel.added: ") && lines[1].contains("walmart"),
        "{}",
        r.stdout
    );
    ensure!(
        lines[2] == "mixed.yaml against base.yaml: 1 breaking, 1 additive change(s)",
        "{}",
        r.stdout
    );
    Ok(())
}

#[test]
fn a_file_that_does_not_compile_exits_2_naming_the_error() -> Result<()> {
    for (new, old) in [("broken.yaml", "base.yaml"), ("base.yaml", "broken.yaml")] {
        let r = run(new, old, "json")?;
        ensure!(r.code == 2, "{new} against {old}: exit {}", r.code);
        ensure!(r.stdout.is_empty(), "no report: {}", r.stdout);
        ensure!(
            r.stderr
                .contains("broken.yaml:42:5: unknown key \"max_body_byte\""),
            "{}",
            r.stderr
        );
    }
    Ok(())
}
