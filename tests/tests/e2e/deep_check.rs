//! The deep check as CI runs it: the real `gateway check -c FILE --deep`. On the example set
//! every document generated from a channel schema maps to a valid canonical document (exit
//! 0); on tests/fixtures/deep/signed-amounts.yaml (the real Shopify mapping behind a schema
//! that lets negative amounts through) it exits 1 naming the generated input and the failing
//! pointer of the canonical output; a schema keyword the generator does not know stops it
//! with an error naming the schema file and the pointer.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tests::{gateway_binary, workspace_root};

/// What one run printed and returned.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `gateway check -c FILE --deep ARGS...`, run in `dir` so the output names files as given.
fn deep(dir: &Path, file: &str, args: &[&str]) -> Result<Run> {
    let binary = gateway_binary()?;
    let started = Instant::now();
    let out = Command::new(binary)
        .current_dir(dir)
        .args(["check", "-c", file, "--deep"])
        .args(args)
        .output()
        .context("running gateway check --deep")?;
    // Not asserted (no timing assertions); printed so a slow default run shows in the log.
    eprintln!(
        "gateway check -c {file} --deep {}: {:.2} s",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[test]
fn the_example_set_passes_the_deep_check() -> Result<()> {
    let root = workspace_root();
    let run = deep(&root, "policies/files/gateway.yaml", &[])?;
    ensure!(
        run.code == 0,
        "exit {}:\n{}\n{}",
        run.code,
        run.stdout,
        run.stderr
    );
    ensure!(run.stdout.contains("deep check ok"), "{}", run.stdout);
    // Every route x channel with a schema and a mapping was exercised (a summary line per
    // schema and mapping, naming the routes sharing them), and documents did map: a check that
    // only saw rejections would prove little.
    let summaries: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains(" -> ") && l.contains(" documents, "))
        .collect();
    for pair in [
        "[amazon] schemas/amazon/order.schema.json -> amazon/order",
        "[ebay] schemas/ebay/order.schema.json -> ebay/order",
        "[shopify] schemas/shopify/order.schema.json -> shopify/order",
        "[walmart] schemas/walmart/order.schema.json -> walmart/order",
        "[amazon] schemas/amazon/inventory_adjustment.schema.json -> amazon/inventory_adjustment",
        "[shopify] schemas/shopify/inventory_adjustment.schema.json -> shopify/inventory_adjustment",
        "[amazon] schemas/amazon/shipment.schema.json -> amazon/shipment",
        "[shopify] schemas/shopify/shipment.schema.json -> shopify/shipment",
        "[shopify] schemas/shopify/return.schema.json -> shopify/return",
        "[walmart] schemas/walmart/return.schema.json -> walmart/return",
    ] {
        ensure!(
            summaries.iter().any(|l| l.contains(pair)),
            "no summary line for {pair}:\n{}",
            run.stdout
        );
    }
    for line in summaries {
        ensure!(line.ends_with(", 0 failed"), "{line}");
        let mapped: usize = line
            .split(", ")
            .find_map(|part| part.strip_suffix(" mapped"))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no mapped count in {line}"))?;
        ensure!(mapped > 0, "no generated document mapped: {line}");
    }
    Ok(())
}

#[test]
fn a_schema_that_lets_through_what_its_mapping_cannot_map_fails_naming_input_and_pointer()
-> Result<()> {
    let dir = workspace_root().join("tests/fixtures/deep");
    let args = ["--seed", "17", "--samples", "300"];
    let run = deep(&dir, "signed-amounts.yaml", &args)?;
    ensure!(
        run.code == 1,
        "exit {}:\n{}\n{}",
        run.code,
        run.stdout,
        run.stderr
    );
    ensure!(
        run.stderr.contains("way(s) the mappings fail"),
        "{}",
        run.stderr
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    let fails: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].starts_with("FAIL route channel-orders channel shopify"))
        .collect();
    ensure!(!fails.is_empty(), "no finding:\n{}", run.stdout);
    for i in fails {
        // The failing pointer into the canonical order, then the input that fails.
        let pointer = lines
            .get(i + 1)
            .and_then(|l| l.strip_prefix("  failing pointer: "))
            .with_context(|| format!("no pointer after {}", lines[i]))?;
        ensure!(pointer.starts_with('/'), "{pointer}");
        ensure!(lines[i].contains(&format!("at {pointer}:")), "{}", lines[i]);
        let input = lines
            .get(i + 2)
            .and_then(|l| l.strip_prefix("  input ("))
            .and_then(|l| l.split_once("): "))
            .map(|(_, json)| json)
            .with_context(|| format!("no input after {}", lines[i]))?;
        let input: Value = serde_json::from_str(input).context("the input is not JSON")?;
        // The real mapping, run offline on that input, fails the way the finding says (the
        // generator already checked the input against the fixture's schema).
        let file =
            std::env::temp_dir().join(format!("deep-check-input-{}-{i}.json", std::process::id()));
        std::fs::write(&file, input.to_string())?;
        let out = Command::new(gateway_binary()?)
            .current_dir(workspace_root())
            .args(["transform", "--mapping", "shopify/order"])
            .arg(&file)
            .output()
            .context("running gateway transform")?;
        let _ = std::fs::remove_file(&file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "the input maps: {input}");
        ensure!(
            stderr.contains("invalid canonical order") && stderr.contains(pointer),
            "{stderr} (pointer {pointer})"
        );
    }
    // The same seed, the same findings.
    let again = deep(&dir, "signed-amounts.yaml", &args)?;
    ensure!(again.stdout == run.stdout, "a second run differs");
    Ok(())
}

#[test]
fn an_unknown_schema_keyword_stops_the_deep_check_naming_file_and_pointer() -> Result<()> {
    let dir = workspace_root().join("tests/fixtures/deep");
    let run = deep(&dir, "unknown-keyword.yaml", &[])?;
    ensure!(run.code == 1, "exit {}:\n{}", run.code, run.stderr);
    ensure!(
        run.stderr.contains(
            "schemas/unknown-keyword.schema.json: unknown keyword \"uniqueItems\" at \"/properties/line_items\""
        ),
        "{}",
        run.stderr
    );
    ensure!(!run.stdout.contains("deep check ok"), "{}", run.stdout);
    Ok(())
}
