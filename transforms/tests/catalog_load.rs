//! Loading a mappings folder: every problem is reported at once, located by file (and line and
//! column where the source has them), and nothing half-loaded is returned.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use transforms::Catalog;

/// A fresh folder under the system temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "transforms-catalog-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("dirs");
        std::fs::write(path, text).expect("write");
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GOOD_INVENTORY: &str = r#"{
  document_type: "inventory_adjustment", model_version: "v1", channel: "shop",
  items: [{sku: .sku, kind: "snapshot", quantities: {available: .n}}]
}"#;

#[test]
fn a_good_folder_loads_with_its_cases() {
    let dir = Scratch::new();
    dir.write("shop/inventory_adjustment.jq", GOOD_INVENTORY);
    dir.write(
        "shop/cases/inventory_adjustment/one.input.json",
        r#"{"sku": "A", "n": 3}"#,
    );
    dir.write(
        "shop/cases/inventory_adjustment/one.expected.json",
        r#"{"document_type": "inventory_adjustment", "model_version": "v1", "channel": "shop",
            "items": [{"sku": "A", "kind": "snapshot", "quantities": {"available": 3}}]}"#,
    );
    dir.write(
        "shop/cases/inventory_adjustment/two.input.json",
        r#"{"sku": "B", "n": 4}"#,
    );
    dir.write(
        "shop/cases/inventory_adjustment/two.expected.json",
        r#"{"document_type": "inventory_adjustment", "model_version": "v1", "channel": "shop",
            "items": [{"sku": "B", "kind": "snapshot", "quantities": {"available": 5}}]}"#,
    );
    let catalog = Catalog::load(dir.path()).expect("loads");
    let mapping = catalog
        .mapping("shop", "inventory_adjustment")
        .expect("mapping");
    assert_eq!(mapping.golden_cases().len(), 2);
    let outcomes = mapping.run_golden_cases();
    assert!(outcomes[0].passed, "{:?}", outcomes[0]);
    assert!(!outcomes[1].passed);
    assert_eq!(
        outcomes[1].diff.as_deref(),
        Some("/items/0/quantities/available: expected 5, got 4")
    );
}

#[test]
fn every_error_is_reported_with_its_location() {
    let dir = Scratch::new();
    // A syntax error on line 3.
    dir.write("shop/order.jq", "{\n  id: .id,\n  lines: [.items[] | ]\n}");
    // An undefined function on line 2, column 3.
    dir.write("shop/shipment.jq", ".x\n| no_such_helper(1)");
    // A file name that is no canonical document.
    dir.write("shop/orders.jq", ".");
    // A case without its expected output, and an expected output that is not JSON.
    dir.write("shop/inventory_adjustment.jq", GOOD_INVENTORY);
    dir.write("shop/cases/inventory_adjustment/lonely.input.json", "{}");
    dir.write(
        "shop/cases/inventory_adjustment/broken.input.json",
        r#"{"sku": "A", "n": 1}"#,
    );
    dir.write(
        "shop/cases/inventory_adjustment/broken.expected.json",
        "{\n  \"a\": 1,\n}",
    );
    // Cases for a document with no mapping.
    dir.write("shop/cases/return/x.input.json", "{}");
    dir.write("shop/cases/return/x.expected.json", "{}");
    // A channel folder with an invalid name.
    dir.write("Bad Channel/order.jq", ".");

    let errors = Catalog::load(dir.path()).expect_err("broken folder");
    let rendered: Vec<String> = errors
        .iter()
        .map(|e| {
            e.to_string()
                .replace(&format!("{}/", dir.path().display()), "")
        })
        .collect();
    let has = |prefix: &str| rendered.iter().any(|line| line.starts_with(prefix));
    assert!(has("shop/order.jq:3:"), "{rendered:#?}");
    assert!(
        has("shop/shipment.jq:2:3: undefined filter `no_such_helper`"),
        "{rendered:#?}"
    );
    assert!(
        has("shop/orders.jq: no canonical document is called \"orders\""),
        "{rendered:#?}"
    );
    assert!(
        has("shop/cases/inventory_adjustment/lonely.expected.json: cannot read"),
        "{rendered:#?}"
    );
    assert!(
        has("shop/cases/inventory_adjustment/broken.expected.json:3:1: not JSON: trailing comma"),
        "{rendered:#?}"
    );
    assert!(
        has("shop/cases/return: golden cases for \"return\""),
        "{rendered:#?}"
    );
    assert!(has("Bad Channel: a channel folder"), "{rendered:#?}");
}

const GOOD_OUTBOUND: &str = r#"{
  method: "PUT",
  path: "/v3/inventory?sku=\(.document.items[0].sku | @uri)",
  body: {sku: .document.items[0].sku, quantity: {unit: "EACH", amount: .document.items[0].quantities.available}}
}"#;

#[test]
fn an_outbound_folder_loads_beside_the_inbound_mappings() {
    let dir = Scratch::new();
    dir.write("walmart/inventory_adjustment.jq", GOOD_INVENTORY);
    dir.write("walmart/outbound/inventory.jq", GOOD_OUTBOUND);
    dir.write(
        "walmart/outbound/cases/inventory/one.input.json",
        r#"{"document": {"items": [{"sku": "A/B", "quantities": {"available": 3}}]}}"#,
    );
    dir.write(
        "walmart/outbound/cases/inventory/one.expected.json",
        r#"{"method": "PUT", "path": "/v3/inventory?sku=A%2FB",
            "body": {"sku": "A/B", "quantity": {"unit": "EACH", "amount": 3}}}"#,
    );
    dir.write(
        "walmart/outbound/cases/inventory/no-items.input.json",
        r#"{"document": {"items": []}}"#,
    );
    dir.write(
        "walmart/outbound/cases/inventory/no-items.expected.json",
        r#"{"$rejected": "never said"}"#,
    );
    let catalog = Catalog::load(dir.path()).expect("loads");
    assert_eq!(
        catalog.names().collect::<Vec<_>>(),
        ["walmart/inventory_adjustment"]
    );
    let mapping = catalog
        .outbound("walmart", "inventory")
        .expect("outbound mapping");
    assert_eq!(catalog.outbound_mappings().count(), 1);
    let outcomes = mapping.run_golden_cases();
    assert_eq!(outcomes.len(), 2);
    // no-items sorts first: the mapping produces a body off the schema instead of the
    // rejection the case expects.
    assert!(!outcomes[0].passed);
    assert!(
        outcomes[0]
            .diff
            .as_deref()
            .is_some_and(|d| d.contains("expected the rejection \"never said\"")),
        "{:?}",
        outcomes[0]
    );
    assert!(outcomes[1].passed, "{:?}", outcomes[1]);
}

#[test]
fn outbound_errors_are_reported_with_their_location() {
    let dir = Scratch::new();
    // A syntax error on line 3 and an undefined function on line 2, column 3.
    dir.write(
        "amazon/outbound/shipment.jq",
        "{\n  method: \"POST\",\n  path: (.x | ]\n}",
    );
    dir.write("ebay/outbound/inventory.jq", ".x\n| no_such_helper(1)");
    // An operation that does not exist, and a channel without body schemas.
    dir.write("shopify/outbound/order.jq", ".");
    dir.write("erp/outbound/shipment.jq", ".");
    // Cases for an operation with no mapping, and a stray file among cases.
    dir.write("walmart/outbound/inventory.jq", GOOD_OUTBOUND);
    dir.write("walmart/outbound/cases/shipment/x.input.json", "{}");
    dir.write("walmart/outbound/cases/shipment/x.expected.json", "{}");
    dir.write("walmart/outbound/cases/inventory/notes.txt", "x");

    let errors = Catalog::load(dir.path()).expect_err("broken folder");
    let rendered: Vec<String> = errors
        .iter()
        .map(|e| {
            e.to_string()
                .replace(&format!("{}/", dir.path().display()), "")
        })
        .collect();
    let has = |prefix: &str| rendered.iter().any(|line| line.starts_with(prefix));
    assert!(has("amazon/outbound/shipment.jq:3:"), "{rendered:#?}");
    assert!(
        has("ebay/outbound/inventory.jq:2:3: undefined filter `no_such_helper`"),
        "{rendered:#?}"
    );
    assert!(
        has("shopify/outbound/order.jq: no outbound operation is called \"order\""),
        "{rendered:#?}"
    );
    assert!(
        has("erp/outbound/shipment.jq: no outbound body schema for channel \"erp\""),
        "{rendered:#?}"
    );
    assert!(
        has(
            "walmart/outbound/cases/shipment: golden cases for \"shipment\", which has no outbound mapping"
        ),
        "{rendered:#?}"
    );
    assert!(
        has("walmart/outbound/cases/inventory/notes.txt: a golden case is a pair"),
        "{rendered:#?}"
    );
    // Nothing else: the good mapping beside them is no error.
    assert!(
        rendered
            .iter()
            .all(|line| !line.starts_with("walmart/outbound/inventory.jq")),
        "{rendered:#?}"
    );
}
