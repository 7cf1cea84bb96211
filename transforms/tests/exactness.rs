//! The exactness promises of the canonical model, each proven through the shipped mappings
//! on inputs parsed from text (so numbers arrive as the literals a channel sends).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use transforms::{Catalog, Mapping};

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        Catalog::load(&root).unwrap_or_else(|errors| panic!("mappings do not load: {errors:?}"))
    })
}

fn mapping(name: &str) -> Arc<Mapping> {
    catalog()
        .get(name)
        .unwrap_or_else(|| panic!("no mapping {name}"))
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("test JSON")
}

fn apply(name: &str, input: &str) -> Value {
    mapping(name)
        .apply(parse(input))
        .unwrap_or_else(|err| panic!("{name} failed: {err}"))
}

/// A Walmart purchase order with one line per (amount, tax, status).
fn walmart_order(lines: &[(&str, &str, &str)]) -> String {
    let lines: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, (amount, tax, status))| {
            format!(
                r#"{{"lineNumber": "{n}", "item": {{"sku": "SKU-{n}", "productName": "item {n}"}},
                    "charges": {{"charge": [{{"chargeType": "PRODUCT", "chargeName": "ItemPrice",
                        "chargeAmount": {{"currency": "USD", "amount": {amount}}},
                        "tax": {{"taxName": "Tax1", "taxAmount": {{"currency": "USD", "amount": {tax}}}}}}}]}},
                    "orderLineQuantity": {{"unitOfMeasurement": "EACH", "amount": "1"}},
                    "orderLineStatuses": {{"orderLineStatus": [{{"status": "{status}",
                        "statusQuantity": {{"unitOfMeasurement": "EACH", "amount": "1"}}}}]}}}}"#,
                n = i + 1
            )
        })
        .collect();
    format!(
        r#"{{"purchaseOrderId": "1796277083022", "customerOrderId": "5281956426648",
            "orderDate": 1568466571000,
            "shippingInfo": {{"postalAddress": {{"name": "K. Cole", "address1": "3258B Warners rd",
                "city": "Warners", "state": "NY", "postalCode": "13164", "country": "USA"}}}},
            "orderLines": {{"orderLine": [{}]}}}}"#,
        lines.join(",")
    )
}

/// An Amazon order with one item per (price, tax).
fn amazon_order(currency: &str, items: &[(&str, &str)]) -> String {
    let items: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, (price, tax))| {
            format!(
                r#"{{"ASIN": "B000000{i}", "OrderItemId": "1000{i}", "SellerSKU": "SKU-{i}",
                    "QuantityOrdered": 1, "QuantityShipped": 0,
                    "ItemPrice": {{"CurrencyCode": "{currency}", "Amount": "{price}"}},
                    "ItemTax": {{"CurrencyCode": "{currency}", "Amount": "{tax}"}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"AmazonOrderId": "111-2222222-3333333", "PurchaseDate": "2024-11-28T12:00:00Z",
            "LastUpdateDate": "2024-11-28T12:00:00Z", "OrderStatus": "Unshipped",
            "OrderItems": [{}]}}"#,
        items.join(",")
    )
}

#[test]
fn decimal_sums_are_exact() {
    // In binary floating point 0.10 + 0.20 is 0.30000000000000004.
    let order = apply(
        "amazon/order",
        &amazon_order("USD", &[("0.10", "0.01"), ("0.20", "0.02")]),
    );
    assert_eq!(order["totals"]["subtotal"]["amount"], "0.30");
    assert_eq!(order["totals"]["tax"]["amount"], "0.03");
    assert_eq!(order["totals"]["total"]["amount"], "0.33");

    // Ten dimes are a dollar, not 0.9999999999999999.
    let dimes: Vec<(&str, &str)> = vec![("0.10", "0.00"); 10];
    let order = apply("amazon/order", &amazon_order("USD", &dimes));
    assert_eq!(order["totals"]["subtotal"]["amount"], "1.00");

    // Walmart sends numbers: 0.1 + 0.2 as JSON numbers still sums to 0.30.
    let order = apply(
        "walmart/order",
        &walmart_order(&[("0.1", "0", "Created"), ("0.2", "0", "Created")]),
    );
    assert_eq!(order["totals"]["subtotal"]["amount"], "0.30");
}

#[test]
fn walmart_numeric_amounts_become_exact_strings() {
    let order = apply(
        "walmart/order",
        &walmart_order(&[
            ("9.99", "0.6", "Created"),
            ("1234567.89", "0.07", "Created"),
        ]),
    );
    let lines = order["lines"].as_array().expect("lines");
    assert_eq!(
        lines[0]["subtotal"],
        parse(r#"{"amount": "9.99", "currency": "USD"}"#)
    );
    assert_eq!(lines[0]["taxes"][0]["amount"]["amount"], "0.60");
    assert_eq!(lines[1]["subtotal"]["amount"], "1234567.89");
    assert_eq!(order["totals"]["subtotal"]["amount"], "1234577.88");
    // Never a JSON number anywhere money is.
    assert!(lines[0]["subtotal"]["amount"].is_string());
}

#[test]
fn three_and_zero_decimal_currencies_keep_their_digits() {
    let order = apply(
        "amazon/order",
        &amazon_order("KWD", &[("12.345", "0.617"), ("0.005", "0.000")]),
    );
    assert_eq!(order["totals"]["subtotal"]["amount"], "12.350");
    assert_eq!(order["lines"][0]["subtotal"]["amount"], "12.345");
    assert_eq!(order["totals"]["tax"]["amount"], "0.617");

    let order = apply(
        "amazon/order",
        &amazon_order("JPY", &[("1500", "111"), ("2980.00", "220.00")]),
    );
    assert_eq!(order["totals"]["subtotal"]["amount"], "4480");
    assert_eq!(order["lines"][1]["subtotal"]["amount"], "2980");
    assert_eq!(order["totals"]["tax"]["amount"], "331");

    // Shopify unit price x quantity in KWD: 3.125 x 3 = 9.375, no rounding to 2 digits.
    let order = apply(
        "shopify/order",
        r#"{"id": 1, "currency": "KWD", "created_at": "2024-06-15T09:45:12+03:00",
            "financial_status": "paid", "fulfillment_status": null,
            "line_items": [{"id": 2, "quantity": 3, "price": "3.125", "sku": "DATES"}],
            "total_line_items_price": "9.375", "total_tax": "0.000", "total_price": "9.375"}"#,
    );
    assert_eq!(order["lines"][0]["subtotal"]["amount"], "9.375");
    assert_eq!(order["lines"][0]["unit_price"]["amount"], "3.125");
}

#[test]
fn ids_above_2_pow_53_arrive_unchanged() {
    // 9007199254740993 is 2^53 + 1: as a double it would become ...992.
    let order = apply(
        "shopify/order",
        r#"{"id": 9007199254740993, "currency": "USD", "created_at": "2024-06-15T09:45:12Z",
            "financial_status": "paid", "fulfillment_status": null,
            "customer": {"id": 18446744073709551615},
            "line_items": [{"id": 9007199254740995, "variant_id": 123456789012345678901234567890,
                            "quantity": 1, "price": "1.00"}],
            "total_line_items_price": "1.00", "total_tax": "0.00", "total_price": "1.00"}"#,
    );
    assert_eq!(order["id"], "shopify:9007199254740993");
    assert_eq!(order["channel_ids"]["order_id"], "9007199254740993");
    assert_eq!(order["lines"][0]["line_id"], "9007199254740995");
    assert_eq!(
        order["lines"][0]["channel_ids"]["variant_id"],
        "123456789012345678901234567890"
    );
    assert_eq!(
        order["buyer"]["channel_ids"]["customer_id"],
        "18446744073709551615"
    );

    // And the ids stay exact in shipments that refer to the order.
    let shipment = apply(
        "shopify/shipment",
        r#"{"id": 9007199254741021, "order_id": 9007199254740993, "status": "success",
            "created_at": "2024-06-16T10:00:00+03:00",
            "line_items": [{"id": 9007199254740995, "quantity": 1}]}"#,
    );
    assert_eq!(shipment["order_id"], "shopify:9007199254740993");
    assert_eq!(shipment["lines"][0]["line_id"], "9007199254740995");
}

#[test]
fn epoch_millis_and_local_offsets_become_utc() {
    let order = apply("walmart/order", &walmart_order(&[("1.00", "0", "Created")]));
    assert_eq!(order["created_at"], "2019-09-14T13:09:31Z");

    let order = apply(
        "shopify/order",
        r#"{"id": 1, "currency": "USD", "created_at": "2008-01-10T11:00:00-05:00",
            "updated_at": "2008-01-11T01:30:00.5+09:30",
            "financial_status": "paid", "fulfillment_status": null,
            "line_items": [{"id": 2, "quantity": 1, "price": "1.00"}],
            "total_line_items_price": "1.00", "total_tax": "0.00", "total_price": "1.00"}"#,
    );
    assert_eq!(order["created_at"], "2008-01-10T16:00:00Z");
    assert_eq!(order["updated_at"], "2008-01-10T16:00:00.5Z");
}

#[test]
fn walmart_alpha3_countries_become_alpha2() {
    let order = apply("walmart/order", &walmart_order(&[("1.00", "0", "Created")]));
    assert_eq!(order["shipping_address"]["country"], "US");

    let mut input = parse(&walmart_order(&[("1.00", "0", "Created")]));
    input["shippingInfo"]["postalAddress"]["country"] = "XXX".into();
    let err = mapping("walmart/order")
        .apply(input)
        .expect_err("unknown country");
    // A malformed channel value is the input's fault: a 4xx, not a mapping failure.
    assert!(err.is_rejection(), "{err}");
    assert!(err.to_string().contains("country"), "{err}");
}

#[test]
fn line_statuses_roll_up_to_one_order_status() {
    let status = |lines: &[(&str, &str, &str)]| {
        apply("walmart/order", &walmart_order(lines))["status"].clone()
    };
    assert_eq!(
        status(&[("1", "0", "Shipped"), ("1", "0", "Acknowledged")]),
        "partially_fulfilled"
    );
    assert_eq!(
        status(&[("1", "0", "Shipped"), ("1", "0", "Delivered")]),
        "fulfilled"
    );
    assert_eq!(
        status(&[("1", "0", "Delivered"), ("1", "0", "Delivered")]),
        "delivered"
    );
    assert_eq!(
        status(&[("1", "0", "Cancelled"), ("1", "0", "Cancelled")]),
        "cancelled"
    );
    assert_eq!(
        status(&[("1", "0", "Cancelled"), ("1", "0", "Shipped")]),
        "fulfilled"
    );
    assert_eq!(
        status(&[("1", "0", "Created"), ("1", "0", "Acknowledged")]),
        "unfulfilled"
    );
    assert_eq!(
        status(&[("1", "0", "Refund"), ("1", "0", "Cancelled")]),
        "refunded"
    );
}

#[test]
fn a_large_order_keeps_every_line_exact() {
    // About 1 MiB of Walmart order: every line and amount must come out, exactly.
    let lines: Vec<(String, &str, &str)> = (0..4000)
        .map(|i| (format!("{}.{:02}", i, i % 100), "0.01", "Created"))
        .collect();
    let borrowed: Vec<(&str, &str, &str)> =
        lines.iter().map(|(a, t, s)| (a.as_str(), *t, *s)).collect();
    let input = walmart_order(&borrowed);
    assert!(input.len() > 1 << 20, "{} bytes", input.len());
    let order = apply("walmart/order", &input);
    let out = order["lines"].as_array().expect("lines");
    assert_eq!(out.len(), 4000);
    assert_eq!(out[3999]["subtotal"]["amount"], "3999.99");
    assert_eq!(out[1234]["line_id"], "1235");
    // sum of i for i < 4000 plus sum of (i % 100) / 100
    assert_eq!(order["totals"]["subtotal"]["amount"], "7999980.00");
    assert_eq!(order["totals"]["tax"]["amount"], "40.00");
}
