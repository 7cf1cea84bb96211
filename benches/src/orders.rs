//! Distinct orders for the body scenarios: every request of a run carries one of at least
//! 1,000 different documents (ids, lines and amounts), so nothing keyed by the body can serve
//! a result from an earlier request (issue 13's rules of measurement).

use bytes::Bytes;
use serde_json::Value;

/// How many distinct bodies a body scenario cycles through.
pub const DISTINCT_ORDERS: usize = 1024;

/// `n` variants of an Amazon order (the example set's sample): each has its own order id, a
/// line of its own (item id, SKU, ASIN, quantity, price, tax) and an order total that adds up,
/// and every other variant carries a second line. Each is still valid against the Amazon
/// order schema and maps to the canonical model.
pub fn amazon_variants(sample: &Value, n: usize) -> anyhow::Result<Vec<Bytes>> {
    let first_line = sample["OrderItems"]
        .get(0)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the sample order has no OrderItems"))?;
    let currency = sample["OrderTotal"]["CurrencyCode"]
        .as_str()
        .unwrap_or("USD")
        .to_owned();
    (0..n)
        .map(|i| {
            let mut order = sample.clone();
            order["AmazonOrderId"] = Value::from(format!(
                "{:03}-{:07}-{:07}",
                900 + i % 100,
                1_845_936 + i,
                5_435_065 + 7 * i
            ));
            let lines = 1 + i % 2;
            let mut items = Vec::with_capacity(lines);
            let mut total_cents = 0u64;
            for l in 0..lines {
                let k = i * 2 + l;
                let quantity = 1 + (k % 3) as u64;
                // ItemPrice is the price of the whole line, ItemTax its tax
                let price_cents = quantity * (999 + (k % 500) as u64);
                let tax_cents = price_cents / 10;
                total_cents += price_cents + tax_cents;
                let mut line = first_line.clone();
                line["OrderItemId"] =
                    Value::from(format!("{:014}", 5_015_851_154_158u64 + k as u64));
                line["SellerSKU"] = Value::from(format!("BENCH-SKU-{k:06}"));
                line["ASIN"] = Value::from(format!("B{:09}", 551_000 + k));
                line["QuantityOrdered"] = Value::from(quantity);
                line["ItemPrice"]["Amount"] = Value::from(cents(price_cents));
                line["ItemTax"]["Amount"] = Value::from(cents(tax_cents));
                items.push(line);
            }
            order["OrderItems"] = Value::Array(items);
            order["NumberOfItemsUnshipped"] = Value::from(lines);
            order["OrderTotal"] =
                serde_json::json!({"CurrencyCode": currency, "Amount": cents(total_cents)});
            Ok(Bytes::from(serde_json::to_vec(&order)?))
        })
        .collect()
}

fn cents(c: u64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_are_distinct_and_keep_the_shape() {
        let sample: Value = serde_json::from_str(include_str!(
            "../../policies/files/samples/amazon-order.json"
        ))
        .expect("sample");
        let v = amazon_variants(&sample, DISTINCT_ORDERS).expect("variants");
        let mut sorted = v.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), DISTINCT_ORDERS);
        let two: Value = serde_json::from_slice(&v[1]).expect("json");
        assert_eq!(two["OrderItems"].as_array().map(Vec::len), Some(2));
        assert_ne!(
            two["OrderItems"][0]["OrderItemId"],
            two["OrderItems"][1]["OrderItemId"]
        );
        assert!(
            v.iter().all(|b| (1500..4000).contains(&b.len())),
            "about 2 KB each"
        );
    }

    #[test]
    fn variants_map_to_canonical_orders_with_their_own_totals() {
        let sample: Value = serde_json::from_str(include_str!(
            "../../policies/files/samples/amazon-order.json"
        ))
        .expect("sample");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transforms/mappings");
        let catalog = transforms::Catalog::load(&root).expect("mappings load");
        let mapping = catalog
            .mapping("amazon", "order")
            .expect("amazon order mapping");
        let variants = amazon_variants(&sample, 8).expect("variants");
        let mut totals = Vec::new();
        for body in &variants {
            let order: Value = serde_json::from_slice(body).expect("json");
            let canonical = mapping.apply(order).expect("a variant maps");
            totals.push(canonical.to_string());
        }
        totals.sort();
        totals.dedup();
        assert_eq!(
            totals.len(),
            variants.len(),
            "each variant maps to its own document"
        );
    }
}
