//! Contract review: what changes for callers between two policy files
//! (`gateway check -c NEW --against OLD`). Breaking changes are the ones a caller that worked
//! against OLD may now fail on; additive ones only give callers more.
//!
//! What is compared, route by route (a route is paired by its name, or by its path and host
//! when renamed):
//!
//! | kind | severity | what |
//! |---|---|---|
//! | `route.removed` / `route.added` | breaking / additive | a route no longer (or newly) served |
//! | `route.path_changed`, `route.host_changed` | breaking | the route answers elsewhere |
//! | `method.removed` / `method.added` | breaking / additive | a method of a route |
//! | `channel.removed` / `channel.added` | breaking / additive | a declared channel (file-wide), or a channel a route maps documents of |
//! | `document.changed` | breaking | the route maps its bodies as another document |
//! | `security.added` / `security.removed` | breaking / additive | a credential a route requires |
//! | `scope.added` / `scope.removed` | breaking / additive | a scope bearer tokens must carry |
//! | `security.channel_bound`, `security.changed` | breaking (additive when loosened) | tokens must name the channel; signature header or accepted channels |
//! | `schema.added` / `schema.removed` | breaking / additive | a channel's documents newly (no longer) checked |
//! | `schema.<keyword>` | per change | a channel schema stricter or looser at one keyword: `required`, `properties` (removed under `additionalProperties: false`), `additionalProperties`, `type`, `enum`, `const`, `pattern`, `format`, `maxLength`, `maximum`, `exclusiveMaximum`, `maxItems`, `maxProperties`, `minLength`, `minimum`, `exclusiveMinimum`, `minItems`, `minProperties`, `multipleOf`, `uniqueItems`, `dependentRequired`, `allOf`, `anyOf`, `oneOf`, `if`, `$ref`, `other` |
//! | `mapping.output_changed` | breaking | the new mapping's output on one of the old mapping's golden inputs differs from the old mapping's |
//! | `mapping.now_maps`, `mapping.rejection_changed` | additive | an input refused before now maps; refused with another message |
//! | `rate_limit.lowered` / `rate_limit.raised` | breaking / additive | a lower (higher) rate per time or burst |
//! | `rate_limit.added` / `rate_limit.removed` | breaking / additive | a new limit (or channel limited), a limit gone |
//! | `max_body_bytes.lowered` / `max_body_bytes.raised` | breaking / additive | the largest body accepted |
//! | `idempotency.required` / `idempotency.optional`, `idempotency.key_changed` | breaking / additive, breaking | the idempotency key |
//! | `route.deprecated` | additive | a deprecation announced, or its dates changed (sunset not earlier) |
//! | `route.deprecation_removed` | additive | the route is no longer deprecated |
//! | `route.sunset` | breaking | the route is now past its sunset and refuses calls (410), or its sunset moved earlier |
//!
//! The JSON output (`--format json`), whose field names are stable:
//! ```json
//! {
//!   "breaking": 1,
//!   "additive": 0,
//!   "findings": [
//!     {
//!       "severity": "breaking",
//!       "kind": "schema.required",
//!       "route": "channel-orders",
//!       "channel": "amazon",
//!       "pointer": "/OrderItems/*/SellerSKU",
//!       "also_at": [],
//!       "schema": "schemas/amazon/order.schema.json#/properties/OrderItems/items/required",
//!       "message": "route channel-orders, amazon's schema: /OrderItems/*/SellerSKU: new required field \"SellerSKU\"",
//!       "old": null,
//!       "new": "SellerSKU"
//!     }
//!   ]
//! }
//! ```
//! `route`, `channel`, `pointer`, `schema`, `old` and `new` are `null` when they do not apply.
//! A keyword changed inside a `$defs` entry that several places refer to is one finding, at
//! the first place (`pointer`), with the other places in `also_at` (empty otherwise).
//! `pointer` is a JSON pointer into the channel's document for schema findings (`*` standing
//! for every item of an array), into the mapping's canonical output for mapping findings, and
//! into the policy file (`/policies/<name>/limits/<limit>`, `/routes/<name>/max_body_bytes`)
//! for limits. Findings come breaking first, then in file order. The text output is one line
//! per finding, `<severity> <kind>: <message>` (the message names the route, channel and
//! pointer), breaking first.

mod compare;
mod finding;
mod mapping_diff;
pub mod schema_diff;

pub use finding::{Finding, Severity};

use crate::surface::Surface;

/// The changes from `old` to `new`, breaking ones first (each group in file order).
pub fn review(old: &Surface, new: &Surface) -> Vec<Finding> {
    let mut findings = compare::surfaces(old, new);
    // stable: file order is kept within each severity
    findings.sort_by_key(|f| f.severity);
    findings
}

/// The findings for people: breaking first, then additive, one line each.
pub fn render_text(findings: &[Finding]) -> String {
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by_key(|f| f.severity);
    let mut out = String::new();
    for f in sorted {
        out.push_str(f.severity.word());
        out.push(' ');
        out.push_str(&f.kind);
        out.push_str(": ");
        // one line per finding, whatever a message quotes
        out.push_str(&f.message.replace(['\n', '\r'], " "));
        out.push('\n');
    }
    out
}

/// The findings for CI: `{"breaking": n, "additive": n, "findings": [...]}` (the fields are
/// described in the module documentation).
pub fn render_json(findings: &[Finding]) -> serde_json::Value {
    let breaking = findings
        .iter()
        .filter(|f| f.severity == Severity::Breaking)
        .count();
    serde_json::json!({
        "breaking": breaking,
        "additive": findings.len() - breaking,
        "findings": findings,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    fn example() -> Surface {
        let file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/files/gateway.yaml");
        crate::surface::load(&file).unwrap()
    }

    #[test]
    fn the_example_set_has_no_findings_against_itself() {
        assert_eq!(review(&example(), &example()), vec![]);
    }

    #[test]
    fn a_def_used_in_many_places_is_one_finding_per_route_and_channel_that_can_use_it() {
        let old = example();
        let mut new = old.clone();
        let mut schema = (*old.routes[0].schemas.channels["amazon"].value).clone();
        schema["$defs"]["Money"]["properties"]["CurrencyCode"]["maxLength"] = json!(3);
        let schema = Arc::new(schema);
        for route in &mut new.routes {
            if let Some(doc) = route.schemas.channels.get_mut("amazon")
                && doc.reference == "schemas/amazon/order.schema.json"
            {
                doc.value = schema.clone();
            }
        }
        let findings = review(&old, &new);
        // the routes taking amazon orders by {channel}; shopify-order-webhook shares the order
        // schema policy but only Shopify's signatures reach it, so amazon's schema is not its
        // concern
        let expected: Vec<&str> = old
            .routes
            .iter()
            .filter(|r| {
                r.channel_param
                    && r.schemas
                        .channels
                        .get("amazon")
                        .is_some_and(|d| d.reference == "schemas/amazon/order.schema.json")
            })
            .map(|r| r.name.as_str())
            .collect();
        assert!(expected.contains(&"channel-orders"), "{expected:?}");
        let routes: Vec<&str> = findings.iter().filter_map(|f| f.route.as_deref()).collect();
        assert_eq!(routes, expected, "{findings:#?}");
        for f in &findings {
            assert_eq!(
                (f.severity, f.kind.as_str(), f.channel.as_deref()),
                (Severity::Breaking, "schema.maxLength", Some("amazon"))
            );
            assert_eq!(
                f.schema.as_deref(),
                Some(
                    "schemas/amazon/order.schema.json#/$defs/Money/properties/CurrencyCode/maxLength"
                )
            );
            assert!(!f.also_at.is_empty(), "{f:?}");
            assert!(
                f.also_at
                    .iter()
                    .chain(f.pointer.iter())
                    .any(|p| p == "/OrderTotal/CurrencyCode"),
                "{f:?}"
            );
            assert!(f.message.contains("also at"), "{}", f.message);
        }
    }

    #[test]
    fn text_output_puts_breaking_first_one_line_each() {
        let additive = Finding::new(
            Severity::Additive,
            "route.added",
            Some("b"),
            None,
            "added\nwith a newline".to_owned(),
        );
        let breaking = Finding::new(
            Severity::Breaking,
            "route.removed",
            Some("a"),
            None,
            "removed".to_owned(),
        );
        let text = render_text(&[additive, breaking]);
        assert_eq!(
            text,
            "breaking route.removed: removed\nadditive route.added: added with a newline\n"
        );
    }
}
