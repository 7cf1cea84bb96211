//! The OpenAPI 3.1 document of a policy file's public surface: every route and method; a route
//! whose `{channel}` has per-channel schemas or mappings becomes one concrete path per channel
//! (`/channels/amazon/orders`, operationId `channel-orders.amazon`), each with that channel's
//! request schema; the security each route requires (bearer JWT scopes, webhook signature
//! headers, client certificates); the responses, with every problem type the route's policies
//! can answer (RFC 9457 `application/problem+json`); and the RateLimit, Idempotency and
//! Deprecation headers. `gateway openapi -c FILE` writes it, the admin listener serves it at
//! `/openapi.json`.

mod problems;
mod schemas;

use std::collections::BTreeMap;

use policies::kinds::PolicySpec;
use policies::queue::DeliveryMode;
use serde_json::{Map, Value, json};

use crate::surface::{RouteSurface, Security, Surface};

use problems::{Problems, Success};
use schemas::Components;

/// The OpenAPI version written.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// The OpenAPI 3.1 document of `surface`.
pub fn document(surface: &Surface) -> Value {
    let mut components = Components::default();
    components.insert("ProblemDetails", problems::problem_details_schema());
    let mut security_schemes = Map::new();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    // the same method and concrete path from two routes: the first route in the file takes it
    // (as the router does), the later one is noted in the document's description
    let mut shadowed: Vec<String> = Vec::new();
    for route in &surface.routes {
        for scheme in &route.security {
            let (name, value) = security_scheme(scheme);
            security_schemes.entry(name).or_insert(value);
        }
        for (path, channel) in concrete_paths(surface, route) {
            let channel = channel.or_else(|| implied_channel(route));
            let item = paths.entry(path.clone()).or_default();
            let multi = route.methods.len() > 1;
            for method in &route.methods {
                let key = method.to_ascii_lowercase();
                if item.contains_key(&key) {
                    shadowed.push(format!("{method} {path} (route {})", route.name));
                    continue;
                }
                let op = operation(
                    surface,
                    route,
                    channel.as_deref(),
                    method,
                    multi,
                    &mut components,
                );
                item.insert(key, op);
            }
        }
    }
    let mut description = format!(
        "The public surface of the policy file `{}` (content {}): what each channel may call \
         through the gateway, what it must send and what it gets back. Errors are RFC 9457 \
         problem documents; `type` names the problem (docs/problems.md lists them all).",
        surface
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        surface.set.version.hash,
    );
    if !shadowed.is_empty() {
        description.push_str(&format!(
            " Not reachable, because an earlier route takes the same method and path: {}.",
            shadowed.join(", ")
        ));
    }
    let tags: Vec<Value> = surface
        .channels
        .iter()
        .map(|c| {
            let mut tag = json!({"name": c});
            if let Some(d) = surface
                .set
                .spec
                .channels
                .get(c)
                .and_then(|s| s.description.clone())
            {
                tag["description"] = Value::String(d);
            }
            tag
        })
        .collect();
    let paths: Map<String, Value> = paths
        .into_iter()
        .map(|(p, item)| (p, Value::Object(item)))
        .collect();
    json!({
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Retail gateway",
            "version": surface.set.version.hash,
            "description": description,
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": Value::Object(components.schemas),
            "securitySchemes": security_schemes,
            "headers": problems::header_components(),
        },
    })
}

/// The paths a route is published under, each with its channel: one per channel that has a
/// schema (or, without a schema policy, a mapping) when the route has a `{channel}` and per
/// channel documents; else the template itself (channel None).
fn concrete_paths(surface: &Surface, route: &RouteSurface) -> Vec<(String, Option<String>)> {
    let template = openapi_path(&route.path);
    if !route.channel_param {
        return vec![(template, None)];
    }
    let has_schema = route.schemas.policy.is_some();
    let has_mapping = route.document.is_some();
    if !has_schema && !has_mapping {
        return vec![(template, None)];
    }
    surface
        .channels
        .iter()
        .filter(|c| !has_schema || route.schemas.for_channel(c).is_some())
        .filter(|c| !has_mapping || route.mappings.contains_key(*c))
        .map(|c| (template.replace("{channel}", c), Some(c.clone())))
        .collect()
}

/// The one channel a route without `{channel}` serves, when its credentials name exactly one
/// (a webhook secret's channel, eBay's, a client certificate's): its schema is the route's.
fn implied_channel(route: &RouteSurface) -> Option<String> {
    if route.channel_param {
        return None;
    }
    let mut named: Vec<&String> = Vec::new();
    for s in &route.security {
        match s {
            Security::WebhookSignature { channels, .. } | Security::ClientCert { channels, .. } => {
                named.extend(channels)
            }
            Security::Bearer { .. } | Security::EbaySignature { .. } => {}
        }
    }
    named.dedup();
    match named.as_slice() {
        [one] => Some((*one).clone()),
        _ => None,
    }
}

/// The route template as an OpenAPI path: a catch-all `{*rest}` becomes `{rest}`.
fn openapi_path(template: &str) -> String {
    template.replace("{*", "{")
}

fn security_scheme(scheme: &Security) -> (String, Value) {
    match scheme {
        Security::Bearer {
            policy,
            scopes,
            channel_bound,
        } => {
            let mut d = String::from(
                "An OAuth 2.0 access token (RFC 9068 JWT) in `Authorization: Bearer`.",
            );
            if !scopes.is_empty() {
                d.push_str(&format!(" Scopes required: {}.", scopes.join(" ")));
            }
            if *channel_bound {
                d.push_str(" The token names its channel, which must be the path's channel.");
            }
            (
                policy.clone(),
                json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": d}),
            )
        }
        Security::WebhookSignature {
            policy,
            header,
            channels,
        } => (
            policy.clone(),
            json!({
                "type": "apiKey",
                "in": "header",
                "name": header,
                "description": format!(
                    "HMAC-SHA256 of the raw body, base64, with the channel's webhook secret (channels: {}).",
                    channels.join(", ")
                ),
            }),
        ),
        Security::EbaySignature { policy } => (
            policy.clone(),
            json!({
                "type": "apiKey",
                "in": "header",
                "name": "X-EBAY-SIGNATURE",
                "description": "eBay's notification signature: base64 JSON naming the key (`kid`) and an ECDSA signature of the body, verified with the key eBay publishes.",
            }),
        ),
        Security::ClientCert { policy, channels } => (
            policy.clone(),
            json!({
                "type": "mutualTLS",
                "description": format!(
                    "A client certificate over TLS, issued by the listener's client CA and bound to a channel ({}).",
                    channels.join(", ")
                ),
            }),
        ),
    }
}

fn security_requirement(route: &RouteSurface, challenge_get: bool) -> Value {
    let mut req = Map::new();
    for s in &route.security {
        match s {
            Security::Bearer { policy, scopes, .. } => {
                req.insert(policy.clone(), json!(scopes));
            }
            // eBay's endpoint-validation GET is not signed
            Security::EbaySignature { .. } if challenge_get => {}
            Security::WebhookSignature { policy, .. }
            | Security::EbaySignature { policy }
            | Security::ClientCert { policy, .. } => {
                req.insert(policy.clone(), json!([]));
            }
        }
    }
    if req.is_empty() {
        json!([])
    } else {
        json!([req])
    }
}

fn operation(
    surface: &Surface,
    route: &RouteSurface,
    channel: Option<&str>,
    method: &str,
    multi_method: bool,
    components: &mut Components,
) -> Value {
    let spec = &surface.set.spec;
    let mut op_id = route.name.clone();
    // one operation per channel only where the path was expanded per channel
    if let Some(c) = channel.filter(|_| route.channel_param) {
        op_id = format!("{op_id}.{c}");
    }
    if multi_method {
        op_id = format!("{op_id}.{}", method.to_ascii_lowercase());
    }
    let read = matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS");
    // eBay's endpoint validation: a GET with challenge_code, answered by the gateway itself
    let challenge_get = method == "GET"
        && route.policies.iter().any(|(name, _)| {
            matches!(spec.policies.get(name), Some(PolicySpec::EbaySignature(e)) if e.challenge.is_some())
        });
    let mut summary = format!("{method} {} (route {})", route.path, route.name);
    if let Some(c) = channel {
        summary = format!("{summary} for {c}");
    }
    let mut description = Vec::new();
    if let Some(doc) = &route.document {
        description.push(format!(
            "Carries the channel's `{doc}` document, in its own format; the gateway checks it, maps it to the canonical model and forwards that."
        ));
    }
    match route.delivery {
        DeliveryMode::Sync => {}
        DeliveryMode::Queued => description.push(
            "Queued: the document is stored and answered 202 with the delivery's Location; a worker delivers it."
                .into(),
        ),
        DeliveryMode::Fallback => description.push(
            "Forwarded at once; when the upstream cannot take it, stored and answered 202 with the delivery's Location."
                .into(),
        ),
    }
    if route.fanout {
        description.push("Fanned out: the 202 names one delivery per destination.".into());
    }
    if let Some(host) = &route.host {
        description.push(format!("Only on requests for host `{host}`."));
    }
    if let Some(d) = &route.deprecation {
        let mut s = format!("Deprecated since {}", d.deprecated);
        if let Some(sunset) = &d.sunset {
            s.push_str(&format!("; sunset {sunset}"));
        }
        if let Some(link) = &d.link {
            s.push_str(&format!(" (see {link})"));
        }
        s.push('.');
        description.push(s);
    }
    if let Some(idem) = &route.idempotency
        && idem.header.is_none()
    {
        description.push(format!(
            "Idempotent by the body's {}: a repeat gets the first answer back with `Idempotent-Replayed: true`.",
            idem.body_pointers.join(" + ")
        ));
    }
    let mut op = json!({
        "operationId": op_id,
        "summary": summary,
        "tags": channel.map(|c| vec![c.to_owned()]).unwrap_or_default(),
        "security": security_requirement(route, challenge_get),
    });
    if !description.is_empty() {
        op["description"] = Value::String(description.join(" "));
    }
    if route.deprecation.is_some() {
        op["deprecated"] = Value::Bool(true);
    }
    let params = parameters(surface, route, channel, challenge_get);
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if !read && let Some(body) = request_body(route, channel, components) {
        op["requestBody"] = body;
    }
    let problems = Problems::of(surface, route, channel, challenge_get);
    let success = if challenge_get {
        Success::Challenge
    } else {
        Success::of(surface, route)
    };
    op["responses"] = problems::responses(surface, route, channel, &problems, success, components);
    op
}

fn parameters(
    surface: &Surface,
    route: &RouteSurface,
    channel: Option<&str>,
    challenge_get: bool,
) -> Vec<Value> {
    let mut out = Vec::new();
    for p in &route.params {
        if p == "channel" && channel.is_some() {
            continue;
        }
        let mut schema = json!({"type": "string", "minLength": 1});
        let mut description = format!("Path parameter `{p}`.");
        if p == "channel" {
            schema = json!({"type": "string", "enum": surface.channels});
            description = "A declared channel.".into();
        } else if route.path.contains(&format!("{{*{p}}}")) {
            description = format!("The rest of the path (`{p}`, may hold `/`).");
        }
        out.push(json!({
            "name": p, "in": "path", "required": true, "description": description, "schema": schema,
        }));
    }
    if challenge_get {
        out.push(json!({
            "name": "challenge_code", "in": "query", "required": true,
            "description": "eBay's endpoint-validation challenge.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 512},
        }));
    }
    if let Some(idem) = &route.idempotency
        && let Some(header) = &idem.header
        && !challenge_get
    {
        let schema = if header.eq_ignore_ascii_case("Idempotency-Key") {
            // an RFC 8941 string; the bare form (printable ASCII without space, `"`, `,`,
            // `;`, `\`) is what is published, `"quoted"` is accepted as well
            json!({"type": "string", "minLength": 1, "maxLength": 255,
                   "pattern": "^[!#-+\\--:<-\\[\\]-~]+$"})
        } else {
            json!({"type": "string", "minLength": 1, "maxLength": 255,
                   "pattern": "^[!-~]([ -~]*[!-~])?$"})
        };
        out.push(json!({
            "name": header, "in": "header", "required": idem.required,
            "description": "One key per document: a retry with the same key and body gets the first answer back (`Idempotent-Replayed: true`); the same key with another body is refused.",
            "schema": schema,
        }));
    }
    out
}

fn request_body(
    route: &RouteSurface,
    channel: Option<&str>,
    components: &mut Components,
) -> Option<Value> {
    if !route.reads_body {
        // streamed to the upstream as sent
        return Some(json!({
            "required": false,
            "description": "Passed to the upstream as sent.",
            "content": {"*/*": {"schema": {}}},
        }));
    }
    let doc = match channel {
        Some(c) => route.schemas.for_channel(c),
        None => route.schemas.default.as_ref(),
    };
    let (schema, description) = match doc {
        Some(doc) => (
            components.embed(&doc.reference, &doc.value),
            format!("A JSON document valid against `{}`.", doc.reference),
        ),
        None => (json!({}), "A JSON document.".to_owned()),
    };
    let mut media = json!({"schema": schema});
    // the mapping's golden inputs (the ones it maps, not the refusals it is tested with) are
    // real documents of the channel: callers see what to send, testers get examples to send
    let examples: Map<String, Value> = channel
        .and_then(|c| route.mappings.get(c))
        .map(|m| {
            m.golden_cases()
                .iter()
                .filter(|case| case.expected_rejection().is_none())
                .map(|case| {
                    (
                        case.name.clone(),
                        json!({"summary": format!("golden case {} of {}", case.name, m.name()), "value": case.input}),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if !examples.is_empty() {
        media["examples"] = Value::Object(examples);
    }
    Some(json!({
        "required": true,
        "description": description,
        "content": {"application/json": media},
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn example() -> Value {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/files/gateway.yaml");
        document(&crate::surface::load(&file).expect("the example set compiles"))
    }

    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r);
                }
                for (k, v) in o {
                    if k != "enum" && k != "const" {
                        refs(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn per_channel_routes_become_one_path_per_channel_with_its_own_schema() {
        let doc = example();
        let paths = doc["paths"].as_object().expect("paths");
        for channel in ["amazon", "shopify", "walmart", "ebay"] {
            let op = &paths[&format!("/channels/{channel}/orders")]["post"];
            assert_eq!(op["operationId"], format!("channel-orders.{channel}"));
            assert_eq!(
                op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
                format!("#/components/schemas/{channel}.order")
            );
            assert_eq!(op["security"], json!([{"orders-auth": ["orders:write"]}]));
            let idem = op["parameters"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["name"] == "Idempotency-Key"))
                .expect("Idempotency-Key");
            assert_eq!(idem["required"], true);
            for status in ["2XX", "202", "401", "403", "409", "422", "429"] {
                assert!(op["responses"].get(status).is_some(), "{channel} {status}");
            }
        }
        // a channel without an inventory schema gets no inventory path
        assert!(paths.contains_key("/channels/amazon/inventory"));
        assert!(!paths.contains_key("/channels/walmart/inventory"));
        assert!(!paths.contains_key("/channels/{channel}/orders"));
    }

    #[test]
    fn problem_types_security_schemes_and_headers_are_published() {
        let doc = example();
        let op = &doc["paths"]["/channels/amazon/orders"]["post"];
        let types_429 = &op["responses"]["429"]["content"]["application/problem+json"]["schema"]["allOf"]
            [1]["properties"]["type"]["anyOf"][0]["enum"];
        assert_eq!(types_429, &json!(["urn:gateway:problem:quota-exceeded"]));
        assert!(
            op["responses"]["429"]["headers"]
                .get("Retry-After")
                .is_some()
        );
        assert!(op["responses"]["2XX"]["headers"].get("RateLimit").is_some());
        assert!(
            op["responses"]["2XX"]["headers"]
                .get("Idempotent-Replayed")
                .is_some()
        );
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["orders-auth"]["scheme"], "bearer");
        assert_eq!(schemes["shopify-webhooks"]["type"], "apiKey");
        assert_eq!(schemes["shopify-webhooks"]["name"], "X-Shopify-Hmac-Sha256");
        assert_eq!(schemes["ebay-notifications"]["name"], "X-EBAY-SIGNATURE");
        assert_eq!(schemes["partner-certs"]["type"], "mutualTLS");
        // eBay's validation GET is unsigned and answered by the gateway
        let get = &doc["paths"]["/webhooks/ebay"]["get"];
        assert_eq!(get["security"], json!([]));
        assert!(get["responses"].get("200").is_some());
    }

    #[test]
    fn every_reference_resolves_and_operation_ids_are_unique() {
        let doc = example();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r.strip_prefix('#').expect("a local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.values())
            .filter_map(Value::as_object)
            .flat_map(|item| item.values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "operationIds repeat");
    }
}
