//! No channel document with one field left out may make a mapping fail: every golden input of
//! every channel mapping, with each of its fields removed in turn, is either refused by the
//! channel's example schema (`policies/files/schemas/<channel>/<document>.schema.json`, a 422
//! naming the field) or mapped to a valid canonical document or a rejection (a 422 naming the
//! input field); never a mapping failure, which the gateway answers 500.
//!
//! The same sweep runs end to end through the example policy set in
//! `tests/tests/e2e/missing_fields.rs`; this one runs in process and names the mapping error.

use std::path::{Path, PathBuf};

use serde_json::Value;
use transforms::{Catalog, SchemaValidator};

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

/// The example set's channel schemas, which the routes of `policies/files/gateway.yaml` run
/// before the mappings.
fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/files/schemas")
}

/// The channel schema of a document, when the example set has one.
fn channel_schema(channel: &str, document: &str) -> Option<SchemaValidator> {
    let path = schemas_dir()
        .join(channel)
        .join(format!("{document}.schema.json"));
    let text = std::fs::read_to_string(&path).ok()?;
    let schema: Value = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{}: not JSON: {err}", path.display()));
    Some(
        SchemaValidator::compile(&schema).unwrap_or_else(|err| panic!("{}: {err}", path.display())),
    )
}

/// RFC 6901 escaping of one reference token.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The pointer of every object member at any depth; of an array, only the first element is
/// walked (the others have the same shape in the golden inputs).
fn member_pointers(value: &Value, at: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                let pointer = format!("{at}/{}", escape(key));
                found.push(pointer.clone());
                member_pointers(member, &pointer, found);
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first() {
                member_pointers(first, &format!("{at}/0"), found);
            }
        }
        _ => {}
    }
}

/// The document without the member at `pointer`.
fn without(document: &Value, pointer: &str) -> Value {
    let mut copy = document.clone();
    let (parent, key) = pointer.rsplit_once('/').expect("a member pointer");
    let key = key.replace("~1", "/").replace("~0", "~");
    let removed = copy
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|members| members.remove(&key));
    assert!(removed.is_some(), "nothing to remove at {pointer}");
    copy
}

#[test]
fn the_walk_covers_nested_members_and_the_first_array_element() {
    let doc = serde_json::json!({"a": {"b/c": 1}, "l": [{"x": 1}, {"y": 2}], "s": [1]});
    let mut found = Vec::new();
    member_pointers(&doc, "", &mut found);
    assert_eq!(found, ["/a", "/a/b~1c", "/l", "/l/0/x", "/s"]);
    assert_eq!(
        without(&doc, "/a/b~1c"),
        serde_json::json!({"a": {}, "l": [{"x": 1}, {"y": 2}], "s": [1]})
    );
}

#[test]
fn no_golden_input_with_one_field_removed_makes_a_mapping_fail() {
    let catalog = shipped();
    let mut failures = Vec::new();
    let (mut tried, mut refused_by_schema, mut rejected, mut mapped) = (0, 0, 0, 0);
    for mapping in catalog.mappings() {
        if mapping.channel() == transforms::catalog::RESPONSE_CHANNEL {
            continue;
        }
        let schema = channel_schema(mapping.channel(), mapping.document());
        for case in mapping.golden_cases() {
            // The sweep starts from a document that passes its schema.
            if let Some(Err(violations)) = schema.as_ref().map(|s| s.validate(&case.input, 20)) {
                failures.push(format!(
                    "{} fails its channel schema: {violations}",
                    case.name
                ));
            }
            let mut pointers = Vec::new();
            member_pointers(&case.input, "", &mut pointers);
            for pointer in pointers {
                tried += 1;
                let input = without(&case.input, &pointer);
                if schema.as_ref().is_some_and(|s| !s.is_valid(&input)) {
                    refused_by_schema += 1;
                    continue;
                }
                match mapping.apply(input) {
                    Ok(_) => mapped += 1,
                    Err(err) if err.is_rejection() => rejected += 1,
                    Err(err) => failures.push(format!("{} without {pointer}: {err}", case.name)),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {tried} documents with one field removed make their mapping fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The sweep is only worth something if it reaches every outcome.
    assert!(tried > 500, "only {tried} variants");
    assert!(refused_by_schema > 0 && rejected > 0 && mapped > 0);
}

fn golden_input(mapping: &transforms::Mapping, case: &str) -> Value {
    mapping
        .golden_cases()
        .iter()
        .find(|c| c.name == case)
        .unwrap_or_else(|| panic!("{} has no golden case {case}", mapping.name()))
        .input
        .clone()
}

/// Issue 11: a Shopify order without one of its three totals passed the channel schema and
/// made the mapping fail. Shopify sends them on every order (legacy ones without the `*_set`
/// amounts too): the schema requires them, and the mapping refuses their absence by name.
#[test]
fn a_shopify_order_without_a_total_is_refused_naming_it() {
    let catalog = shipped();
    let mapping = catalog.mapping("shopify", "order").expect("shopify/order");
    let schema = channel_schema("shopify", "order").expect("shopify/order schema");
    let mut legacy = golden_input(&mapping, "admin-rest-2026-07-example-1001");
    // A legacy order: plain amounts only, no *_set twins and no presentment currency.
    fn drop_sets(value: &mut Value) {
        match value {
            Value::Object(members) => {
                members.retain(|key, _| !key.ends_with("_set") && key != "presentment_currency");
                members.values_mut().for_each(drop_sets);
            }
            Value::Array(items) => items.iter_mut().for_each(drop_sets),
            _ => {}
        }
    }
    drop_sets(&mut legacy);
    assert!(schema.is_valid(&legacy));
    let mapped = mapping.apply(legacy.clone()).expect("a legacy order maps");
    assert_eq!(mapped["totals"]["total"]["amount"], "598.94", "{mapped}");

    for field in ["total_line_items_price", "total_tax", "total_price"] {
        let mut order = legacy.clone();
        order.as_object_mut().and_then(|o| o.remove(field));
        let violations = schema
            .validate(&order, 20)
            .expect_err("refused by the schema");
        assert!(
            violations.violations.iter().any(|v| v.pointer.is_empty()
                && v.keyword == "required"
                && v.message.contains(field)),
            "{field}: {violations}"
        );
        let err = mapping.apply(order).expect_err("refused by the mapping");
        assert!(err.is_rejection(), "{field}: {err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }

    // Wrapped as {"order": ...}, the violation points into the order, not at the wrapper.
    let mut wrapped = serde_json::json!({ "order": legacy });
    wrapped["order"]
        .as_object_mut()
        .and_then(|o| o.remove("total_tax"));
    let violations = schema.validate(&wrapped, 20).expect_err("refused");
    assert!(
        violations
            .violations
            .iter()
            .any(|v| v.pointer == "/order" && v.message.contains("total_tax")),
        "{violations}"
    );
}

/// Issue 11: an eBay order without `fulfillmentStartInstructions` made the mapping produce
/// nothing. The canonical order needs no shipping address, so it maps without one.
#[test]
fn an_ebay_order_without_fulfillment_instructions_maps_without_a_shipping_address() {
    let catalog = shipped();
    let mapping = catalog.mapping("ebay", "order").expect("ebay/order");
    let schema = channel_schema("ebay", "order").expect("ebay/order schema");
    let full = golden_input(&mapping, "converted-currency-collect-and-remit");
    let with_address = mapping.apply(full.clone()).expect("maps");
    for instructions in [
        None,
        Some(serde_json::json!([])),
        Some(serde_json::json!([{"fulfillmentInstructionsType": "DIGITAL"}])),
    ] {
        let mut order = full.clone();
        match &instructions {
            None => {
                order
                    .as_object_mut()
                    .and_then(|o| o.remove("fulfillmentStartInstructions"));
            }
            Some(given) => order["fulfillmentStartInstructions"] = given.clone(),
        }
        assert!(schema.is_valid(&order), "{instructions:?}");
        let mapped = mapping.apply(order).expect("maps");
        assert!(mapped.get("shipping_address").is_none(), "{mapped}");
        assert_eq!(mapped["fulfillment"]["by"], "merchant");
        assert_eq!(mapped["totals"], with_address["totals"]);
        assert_eq!(mapped["lines"], with_address["lines"]);
    }
}
