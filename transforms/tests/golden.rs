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

/// The four marketplaces' two outbound operations.
const OUTBOUND: [(&str, &str); 8] = [
    ("amazon", "shipment"),
    ("amazon", "inventory"),
    ("walmart", "shipment"),
    ("walmart", "inventory"),
    ("ebay", "shipment"),
    ("ebay", "inventory"),
    ("shopify", "shipment"),
    ("shopify", "inventory"),
];

#[test]
fn every_outbound_mapping_is_there_apart_from_the_inbound_ones() {
    let catalog = shipped();
    let names: Vec<&str> = catalog.outbound_mappings().map(|m| m.name()).collect();
    assert_eq!(names.len(), OUTBOUND.len(), "{names:?}");
    for (channel, operation) in OUTBOUND {
        let mapping = catalog
            .outbound(channel, operation)
            .unwrap_or_else(|| panic!("{channel}/outbound/{operation} missing from {names:?}"));
        assert_eq!(mapping.name(), format!("{channel}/outbound/{operation}"));
        assert_eq!(
            (mapping.channel(), mapping.operation()),
            (channel, operation)
        );
    }
    // The outbound folder is no inbound document.
    assert!(catalog.names().all(|name| !name.contains("outbound")));
    assert!(catalog.outbound("amazon", "order").is_none());
}

#[test]
fn every_outbound_golden_case_passes() {
    let catalog = shipped();
    let mut failures = Vec::new();
    for mapping in catalog.outbound_mappings() {
        let cases = mapping.golden_cases();
        assert!(
            cases.len() >= 2,
            "{} has {} golden cases",
            mapping.name(),
            cases.len()
        );
        assert!(
            cases.iter().any(|c| c.expected_rejection().is_some()),
            "{} has no rejection case",
            mapping.name()
        );
        assert!(
            cases.iter().any(|c| c.expected_rejection().is_none()),
            "{} has no request case",
            mapping.name()
        );
        for outcome in mapping.run_golden_cases() {
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
        "{} outbound golden case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The golden inputs are what a fan-out route hands the mappings: a valid canonical document
/// (the route checks it first), so rejections are of valid documents a marketplace cannot take.
#[test]
fn every_outbound_golden_input_carries_a_valid_canonical_document() {
    let catalog = shipped();
    for mapping in catalog.outbound_mappings() {
        let document = match mapping.operation() {
            "shipment" => "shipment",
            _ => "inventory_adjustment",
        };
        let validator = transforms::canonical_validator(document).expect("canonical validator");
        for case in mapping.golden_cases() {
            let input = &case.input;
            assert!(
                input["target"].is_object() && input["listing"].is_object(),
                "{} / {}: target and listing are objects",
                mapping.name(),
                case.name
            );
            if let Err(violations) = validator.validate(&input["document"], 10) {
                panic!("{} / {}: {violations}", mapping.name(), case.name);
            }
        }
    }
}

/// What the golden requests hold is what the marketplaces' facts say, checked apart from the
/// expected files (which the mapping's own output could have been copied into).
#[test]
fn outbound_requests_follow_the_marketplaces_calls() {
    let catalog = shipped();
    let request = |channel: &str, operation: &str, case: &str| {
        let mapping = catalog.outbound(channel, operation).expect("mapping");
        let case = mapping
            .golden_cases()
            .iter()
            .find(|c| c.name == case)
            .unwrap_or_else(|| panic!("{channel}/{operation}/{case}"));
        mapping.apply(case.input.clone()).expect("maps")
    };
    let amazon = request("amazon", "inventory", "sku-with-slash-and-product-type");
    assert_eq!(
        (amazon.method.as_str(), amazon.path.as_str()),
        (
            "PATCH",
            "/listings/2021-08-01/items/A2SELLER9X/TSHIRT%2FRED%20M?marketplaceIds=ATVPDKIKX0DER"
        )
    );
    let walmart = request("walmart", "shipment", "two-lines-fedex-express");
    let info = &walmart.body["orderShipment"]["orderLines"]["orderLine"][0]["orderLineStatuses"]["orderLineStatus"]
        [0];
    // 2024-11-28T12:00:00.123Z in epoch milliseconds, and the quantity as a string.
    assert_eq!(info["trackingInfo"]["shipDateTime"], 1_732_795_200_123_i64);
    assert_eq!(info["statusQuantity"]["amount"], "1");
    let ebay = request("ebay", "shipment", "two-lines-tracking-with-separators");
    assert_eq!(ebay.body["shippedDate"], "2024-11-28T12:00:00.000Z");
    assert_eq!(ebay.body["trackingNumber"], "9400100000000000000000");
    let shopify = request("shopify", "shipment", "whole-fulfillment-order-big-id");
    // Above 2^53 and still exact.
    assert_eq!(
        shopify.body["fulfillment"]["line_items_by_fulfillment_order"][0]["fulfillment_order_id"]
            .to_string(),
        "9007199254740995"
    );
    let shopify = request("shopify", "inventory", "oversold-listing-location");
    assert_eq!(shopify.body["available"], -3);
}
