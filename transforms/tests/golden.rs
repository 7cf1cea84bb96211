//! Runs every golden case of every mapping shipped in `mappings/`: a mapping whose output
//! drifts from its expected canonical document fails here with the diff.

use std::path::Path;

use transforms::Catalog;

fn shipped() -> Catalog {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    match Catalog::load(&root) {
        Ok(catalog) => catalog,
        Err(errors) => {
            let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
            panic!("the shipped mappings do not load:\n{}", listed.join("\n"));
        }
    }
}

#[test]
fn every_golden_case_of_every_mapping_passes() {
    let catalog = shipped();
    let mut failures = Vec::new();
    let mut ran = 0;
    for mapping in catalog.mappings() {
        for outcome in mapping.run_golden_cases() {
            ran += 1;
            if !outcome.passed {
                failures.push(format!(
                    "{} / {}:\n{}",
                    mapping.name(),
                    outcome.name,
                    outcome.diff.unwrap_or_default()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(ran >= 20, "only {ran} golden cases ran");
}

#[test]
fn every_mapping_has_golden_cases() {
    let catalog = shipped();
    for mapping in catalog.mappings() {
        assert!(
            !mapping.golden_cases().is_empty(),
            "{} has no golden case",
            mapping.name()
        );
    }
}

#[test]
fn the_issue_s_mappings_are_all_there() {
    let catalog = shipped();
    let names: Vec<&str> = catalog.names().collect();
    for expected in [
        "amazon/order",
        "amazon/order_change",
        "amazon/inventory_adjustment",
        "amazon/shipment",
        "shopify/order",
        "shopify/inventory_adjustment",
        "shopify/shipment",
        "shopify/return",
        "walmart/order",
        "walmart/return",
        "ebay/order",
        "erp/ack",
        "erp/error",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert_eq!(
        catalog.response_mapping("ack").map(|m| m.output_document()),
        Some("answer")
    );
    assert_eq!(
        catalog
            .response_mapping("error")
            .map(|m| m.output_document()),
        Some("problem")
    );
    assert!(catalog.mapping("amazon", "order").is_some());
    assert!(catalog.mapping("amazon", "nope").is_none());
}

#[test]
fn a_drifting_mapping_fails_its_golden_case_with_a_diff() {
    let catalog = shipped();
    let mapping = catalog.mapping("walmart", "order").expect("walmart/order");
    let case = &mapping.golden_cases()[0];
    let mut expected = case.expected.clone();
    expected["totals"]["subtotal"]["amount"] = "10.48".into();
    let actual = mapping.apply(case.input.clone()).expect("maps");
    let diff = transforms::golden::diff(&expected, &actual);
    assert_eq!(
        diff,
        vec![r#"/totals/subtotal/amount: expected "10.48", got "10.49""#.to_owned()]
    );
}
