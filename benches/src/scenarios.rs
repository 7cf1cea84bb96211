//! The scenario matrix. A scenario is a system under test, for the gateway a policy-file
//! snippet (its `policies:` and `routes:`, and `redis:` when it needs one), and a request
//! recipe. Policy scenarios whose kinds the gateway does not have yet are found out by
//! `gateway check` on their file and reported as pending, never approximated.
//!
//! Snippets may use `{jwks}` (path of a JWKS with the development RS256 key), `{schemas}` and
//! `{mappings}` (the example set's schemas and the mapping catalog, absolute paths) and
//! `{redis}` (`host:port` of a redis-server the harness starts when `needs_redis`) and
//! `{upstream}` (the upstream's `host:port`; bench-upstream answers 201 to any POST, so it is
//! also the OTLP collector of the tracing scenarios).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;

use crate::recipe::{Generated, Recipe};
use crate::systems::HaproxyMode;

/// What answers the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// The upstream itself (S0, the ceiling).
    Upstream,
    /// The minimal Pingora passthrough.
    P0,
    /// Our gateway with the scenario's policy file.
    Gateway,
    /// nginx passthrough.
    Nginx,
    /// haproxy.
    Haproxy(HaproxyMode),
}

/// One cell of the matrix.
#[derive(Debug)]
pub struct Scenario {
    /// Short id used on the command line and in the table.
    pub id: &'static str,
    /// What it measures.
    pub title: &'static str,
    /// The system under test.
    pub system: System,
    /// Gateway only: `policies:` / `routes:` / `redis:` of its policy file.
    pub snippet: &'static str,
    /// Gateway only: environment for secrets the snippet references.
    pub env: Vec<(String, String)>,
    /// Starts a redis-server (next to the upstream) for the scenario.
    pub needs_redis: bool,
    /// The request sent over and over.
    pub recipe: Recipe,
    /// Gateway only: run this gateway binary instead of the one built (`--compare`).
    pub gateway_bin: Option<PathBuf>,
}

impl Scenario {
    /// The same scenario on another gateway binary, as `<id>@<tag>` (A/B runs of two builds,
    /// interleaved in one run).
    pub fn on_binary(&self, tag: &str, bin: PathBuf) -> Scenario {
        Scenario {
            id: Box::leak(format!("{}@{tag}", self.id).into_boxed_str()),
            title: Box::leak(format!("{} [{tag}: {}]", self.title, bin.display()).into_boxed_str()),
            system: self.system,
            snippet: self.snippet,
            env: self.env.clone(),
            needs_redis: self.needs_redis,
            recipe: self.recipe.clone(),
            gateway_bin: Some(bin),
        }
    }
}

/// Material the recipes need, made once per run.
pub struct Inputs {
    /// Pre-minted RS256 tokens.
    pub rs256: Vec<String>,
    /// Pre-minted HS256 tokens.
    pub hs256: Vec<String>,
    /// ~2 KB Amazon orders, distinct (`orders::amazon_variants` of the example set's sample).
    pub orders: Arc<[Bytes]>,
    /// The path of the passthrough scenarios (an existing document of the upstream).
    pub passthrough_path: String,
}

/// The path every passthrough scenario requests: bench-upstream serves any path; with the ERP
/// simulator the harness first stores one order and reads it back at its own id.
pub const PASSTHROUGH_PATH: &str = "/erp/v1/orders/ERP-ORD-000001";
/// The path of the per-channel GET scenarios (auth, rate limits).
pub const CHANNEL_GET_PATH: &str = "/channels/amazon/orders/ORD-000001";
/// The path orders are posted to.
pub const ORDERS_PATH: &str = "/channels/amazon/orders";

const S1: &str = r#"routes:
  - name: passthrough
    methods: [GET]
    path: /erp/v1/{collection}/{id}
    upstream: erp
    upstream_path: /erp/v1/{collection}/{id}
"#;

/// The GET route the auth and rate-limit scenarios put their policies on.
macro_rules! channel_get_route {
    ($policies:literal) => {
        concat!(
            r#"routes:
  - name: orders-read
    methods: [GET]
    path: /channels/{channel}/orders/{id}
    upstream: erp
    upstream_path: /erp/v1/orders/{id}?channel={channel}
    policies: "#,
            $policies,
            "\n"
        )
    };
}

/// The POST route of the body scenarios.
macro_rules! orders_post_route {
    ($policies:literal) => {
        concat!(
            r#"routes:
  - name: channel-orders
    methods: [POST]
    path: /channels/{channel}/orders
    upstream: erp
    upstream_path: /erp/v1/orders?channel={channel}
    policies: "#,
            $policies,
            "\n    max_body_bytes: 5MiB\n"
        )
    };
}

/// The queue of the store-and-forward scenarios: the embedded store next to the policy file
/// (the run's temporary directory, on disk: every 202 waits for its fsync, shared by the
/// requests that arrive together), roomy enough never to answer 503 during a run.
const QUEUE: &str = r#"queues:
  erp-orders:
    path: bench-deliveries.redb
    workers: 8
    max_entries: 100000000
    max_bytes: 64GiB
    keep_delivered: 1m
"#;

/// The POST route of the store-and-forward scenarios: `queued`, every order a 202 after its
/// durable write, delivered to the upstream by the workers in the background.
macro_rules! orders_queued_route {
    ($policies:literal) => {
        concat!(
            orders_post_route!($policies),
            "    delivery: {mode: queued, queue: erp-orders}\n"
        )
    };
}

// Pending snippets follow the policy kinds as their branches define them; each is checked by
// `gateway check` before it runs, so a name that changes on merge shows up as an error in the
// report rather than as a wrong number.

/// RS256 verification on every request: the token cache is off, because the peer we compare
/// with (haproxy `jwt_verify`) has none.
const JWT_RS256: &str = r#"policies:
  auth:
    kind: jwt
    issuer: https://idp.bench.invalid/
    audience: retail-gateway
    keys: {jwks_file: "{jwks}"}
    algorithms: [RS256]
    cache_entries: 0
"#;

const JWT_HS256: &str = r#"policies:
  auth:
    kind: jwt
    issuer: https://idp.bench.invalid/
    audience: retail-gateway
    keys:
      hs256: {bench-hs256: "${BENCH_HS256_SECRET}"}
    algorithms: [HS256]
    cache_entries: 0
"#;

/// A per-channel limit far above any rate a run reaches: the decision is measured, not refusals.
const RL_LOCAL: &str = r#"policies:
  limit:
    kind: rate_limit
    key: [channel]
    limits: [{name: per_second, rate: 1000000, per: 1s}]
"#;

const RL_REDIS: &str = r#"redis:
  url: redis://{redis}
policies:
  limit:
    kind: rate_limit
    key: [channel]
    store: redis
    limits: [{name: per_second, rate: 1000000, per: 1s}]
"#;

const JWT_RL: &str = r#"policies:
  auth:
    kind: jwt
    issuer: https://idp.bench.invalid/
    audience: retail-gateway
    keys: {jwks_file: "{jwks}"}
    algorithms: [RS256]
    cache_entries: 0
  limit:
    kind: rate_limit
    key: [channel]
    limits: [{name: per_second, rate: 1000000, per: 1s}]
"#;

/// `jwt-rl` with the verified-token cache on (its default size): clients reuse each token for
/// its lifetime, as marketplace connectors do, so after its first use a token costs a SHA-256
/// and a lookup instead of an RSA verification.
const JWT_RL_CACHED: &str = r#"policies:
  auth:
    kind: jwt
    issuer: https://idp.bench.invalid/
    audience: retail-gateway
    keys: {jwks_file: "{jwks}"}
    algorithms: [RS256]
  limit:
    kind: rate_limit
    key: [channel]
    limits: [{name: per_second, rate: 1000000, per: 1s}]
"#;

/// The example set's `order-schema`: each marketplace's own order schema.
const SCHEMA: &str = r#"policies:
  order-schema:
    kind: schema
    max_errors: 20
    channels:
      amazon: "{schemas}/amazon/order.schema.json"
      shopify: "{schemas}/shopify/order.schema.json"
      walmart: "{schemas}/walmart/order.schema.json"
      ebay: "{schemas}/ebay/order.schema.json"
"#;

/// The example set's `order-transform`: the channel's order into the canonical model, the
/// ERP's acknowledgement back (bench-upstream answers the ERP's canonical ack, see
/// `bench-upstream.rs`, so `erp/ack` runs on every answer).
const TRANSFORM: &str = r#"policies:
  order-transform:
    kind: transform
    mappings: "{mappings}"
    document: order
    answer: erp/ack
    error: erp/error
"#;

/// Idempotency keys from the `Idempotency-Key` header (an RFC 8941 string), kept 24 h.
const IDEMPOTENCY: &str = r#"policies:
  idempotency:
    kind: idempotency
    key: {header: Idempotency-Key}
    ttl: 24h
"#;

/// The chain an Amazon order takes in the example policy set (policies/files/gateway.yaml,
/// route `channel-orders`): `orders-auth` (RFC 9068 access tokens bound to the route's
/// channel), one rate limit per marketplace (only the request's channel's applies; rates far
/// above what a run reaches), `order-schema`, idempotency, `order-transform`. Schemas and
/// mappings are absolute paths filled in by the harness, so the file can live anywhere.
macro_rules! all_chain {
    ($idempotency:literal) => {
        concat!(
            r#"policies:
  orders-auth:
    kind: jwt
    issuer: https://idp.bench.invalid/
    audience: retail-gateway
    keys: {jwks_file: "{jwks}"}
    algorithms: [RS256, ES256]
    require_at_jwt: true
    scopes: [orders:write]
    channel: {claim: channel}
    leeway: 30s
  amazon-limit:
    kind: rate_limit
    channels: [amazon]
    key: [channel, subject]
    limits: [{name: per_second, rate: 1000000, per: 1s}]
  shopify-limit:
    kind: rate_limit
    channels: [shopify]
    key: [channel, {header: X-Shopify-Shop-Domain}]
    limits: [{name: per_second, rate: 1000000, per: 1s}]
  walmart-limit:
    kind: rate_limit
    channels: [walmart]
    key: [channel]
    limits: [{name: per_minute, rate: 1000000, per: 1m}]
  ebay-limit:
    kind: rate_limit
    channels: [ebay]
    key: [channel, client_id]
    limits:
      - {name: per_second, rate: 1000000, per: 1s}
      - {name: daily, rate: 1000000000, per: 1d}
  order-schema:
    kind: schema
    max_errors: 20
    channels:
      amazon: "{schemas}/amazon/order.schema.json"
      shopify: "{schemas}/shopify/order.schema.json"
      walmart: "{schemas}/walmart/order.schema.json"
      ebay: "{schemas}/ebay/order.schema.json"
"#,
            $idempotency,
            r#"  order-transform:
    kind: transform
    mappings: "{mappings}"
    document: order
    answer: erp/ack
    error: erp/error
"#
        )
    };
}

const ALL: &str = all_chain!(
    r#"  idempotency:
    kind: idempotency
    key: {header: Idempotency-Key}
    ttl: 24h
"#
);

/// Traces exported to the upstream (bench-upstream takes any POST), 1% of requests sampled.
const TRACE_1: &str =
    "tracing:\n  endpoint: http://{upstream}/v1/traces\n  sampling: {ratio: 0.01}\n";
/// Every request traced.
const TRACE_100: &str =
    "tracing:\n  endpoint: http://{upstream}/v1/traces\n  sampling: {ratio: 1.0}\n";

/// The route list of the ALL scenarios.
const ALL_ROUTE: &str = orders_post_route!(
    "[orders-auth, amazon-limit, shopify-limit, walmart-limit, ebay-limit, order-schema, idempotency, order-transform]"
);

/// [`ALL`] without idempotency, measured while that kind is pending.
const ALL_NO_IDEM: &str = all_chain!("");

fn bearer_pool(tokens: &[String]) -> anyhow::Result<Generated> {
    let values = tokens
        .iter()
        .map(|t| HeaderValue::try_from(format!("Bearer {t}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Generated::Cycle(values))
}

/// A small set of keys: after its first round every request is a replay.
fn replay_keys() -> anyhow::Result<Generated> {
    let values = (0..16)
        .map(|i| HeaderValue::try_from(format!("\"bench-replay-{i:04}\"")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Generated::Cycle(values))
}

/// Every scenario, in the order of the report.
pub fn all(inputs: &Inputs) -> anyhow::Result<Vec<Scenario>> {
    let pass = || Recipe::get(&inputs.passthrough_path);
    let order = || Recipe::post_json(ORDERS_PATH, inputs.orders.clone());
    let sc = |id, title, system, snippet, recipe| Scenario {
        id,
        title,
        system,
        snippet,
        env: Vec::new(),
        needs_redis: false,
        recipe,
        gateway_bin: None,
    };
    let mut v = vec![
        sc(
            "S0",
            "direct to the upstream (the ceiling)",
            System::Upstream,
            "",
            pass()?,
        ),
        sc("P0", "minimal Pingora passthrough", System::P0, "", pass()?),
        sc(
            "S1",
            "gateway passthrough (route, no policies)",
            System::Gateway,
            S1,
            pass()?,
        ),
        // The POST passthroughs split a body scenario's cost over S1 into the body's own I/O
        // (a 2 KB order in, the same out) and what the gateway does with it.
        sc(
            "P0-post",
            "minimal Pingora passthrough, 2 KB order posted",
            System::P0,
            "",
            order()?,
        ),
        sc(
            "S1-post",
            "gateway passthrough of a 2 KB order (route, no policies: streamed)",
            System::Gateway,
            orders_post_route!("[]"),
            order()?,
        ),
        sc("nginx", "nginx passthrough", System::Nginx, "", pass()?),
        sc(
            "haproxy",
            "haproxy passthrough",
            System::Haproxy(HaproxyMode::Passthrough),
            "",
            pass()?,
        ),
        sc(
            "haproxy-jwt-rl",
            "haproxy jwt_verify RS256 + stick-table rate limit",
            System::Haproxy(HaproxyMode::JwtRateLimit),
            "",
            Recipe::get(CHANNEL_GET_PATH)?
                .generate("authorization", bearer_pool(&inputs.rs256)?)?,
        ),
        sc(
            "jwt-rs256",
            "gateway JWT RS256 (no token cache)",
            System::Gateway,
            concat_static(JWT_RS256, channel_get_route!("[auth]")),
            Recipe::get(CHANNEL_GET_PATH)?
                .generate("authorization", bearer_pool(&inputs.rs256)?)?,
        ),
        sc(
            "jwt-hs256",
            "gateway JWT HS256 (no token cache)",
            System::Gateway,
            concat_static(JWT_HS256, channel_get_route!("[auth]")),
            Recipe::get(CHANNEL_GET_PATH)?
                .generate("authorization", bearer_pool(&inputs.hs256)?)?,
        ),
        sc(
            "rl-local",
            "gateway rate limit, in-process",
            System::Gateway,
            concat_static(RL_LOCAL, channel_get_route!("[limit]")),
            Recipe::get(CHANNEL_GET_PATH)?,
        ),
        sc(
            "rl-redis",
            "gateway rate limit on Redis",
            System::Gateway,
            concat_static(RL_REDIS, channel_get_route!("[limit]")),
            Recipe::get(CHANNEL_GET_PATH)?,
        ),
        sc(
            "jwt-rl",
            "gateway JWT RS256 + rate limit (haproxy-jwt-rl's work)",
            System::Gateway,
            concat_static(JWT_RL, channel_get_route!("[auth, limit]")),
            Recipe::get(CHANNEL_GET_PATH)?
                .generate("authorization", bearer_pool(&inputs.rs256)?)?,
        ),
        sc(
            "jwt-rl-cached",
            "gateway JWT RS256 + rate limit, verified-token cache on (64 tokens reused)",
            System::Gateway,
            concat_static(JWT_RL_CACHED, channel_get_route!("[auth, limit]")),
            Recipe::get(CHANNEL_GET_PATH)?
                .generate("authorization", bearer_pool(&inputs.rs256)?)?,
        ),
        sc(
            "schema",
            "gateway schema validation, 2 KB order",
            System::Gateway,
            concat_static(SCHEMA, orders_post_route!("[order-schema]")),
            order()?,
        ),
        sc(
            "transform",
            "gateway transform, 2 KB order",
            System::Gateway,
            concat_static(TRANSFORM, orders_post_route!("[order-transform]")),
            order()?,
        ),
        sc(
            "idem-new",
            "gateway idempotency, new keys",
            System::Gateway,
            concat_static(IDEMPOTENCY, orders_post_route!("[idempotency]")),
            order()?.generate("idempotency-key", Generated::Uuid)?,
        ),
        sc(
            "idem-replay",
            "gateway idempotency, replays",
            System::Gateway,
            concat_static(IDEMPOTENCY, orders_post_route!("[idempotency]")),
            // a replay is the same document under the same key: one body, or a key would meet
            // another body and be refused 422 (the fingerprint is still computed every time)
            Recipe::post_json(ORDERS_PATH, inputs.orders.iter().take(1).cloned().collect())?
                .generate("idempotency-key", replay_keys()?)?,
        ),
        sc(
            "ALL",
            "gateway full Amazon order chain",
            System::Gateway,
            concat_static(
                ALL,
                orders_post_route!(
                    "[orders-auth, amazon-limit, shopify-limit, walmart-limit, ebay-limit, order-schema, idempotency, order-transform]"
                ),
            ),
            order()?
                .generate("authorization", bearer_pool(&inputs.rs256)?)?
                .generate("idempotency-key", Generated::Uuid)?,
        ),
        sc(
            "S1-trace1",
            "S1 with OpenTelemetry traces, 1% sampled",
            System::Gateway,
            concat_static(TRACE_1, S1),
            pass()?,
        ),
        sc(
            "S1-trace100",
            "S1 with OpenTelemetry traces, every request",
            System::Gateway,
            concat_static(TRACE_100, S1),
            pass()?,
        ),
        sc(
            "ALL-trace1",
            "ALL with OpenTelemetry traces, 1% sampled",
            System::Gateway,
            concat_static(TRACE_1, concat_static(ALL, ALL_ROUTE)),
            order()?
                .generate("authorization", bearer_pool(&inputs.rs256)?)?
                .generate("idempotency-key", Generated::Uuid)?,
        ),
        sc(
            "ALL-trace100",
            "ALL with OpenTelemetry traces, every request",
            System::Gateway,
            concat_static(TRACE_100, concat_static(ALL, ALL_ROUTE)),
            order()?
                .generate("authorization", bearer_pool(&inputs.rs256)?)?
                .generate("idempotency-key", Generated::Uuid)?,
        ),
        sc(
            "queued",
            "gateway transform, stored durably, 202 (store-and-forward, embedded store)",
            System::Gateway,
            concat_static(
                TRANSFORM,
                concat_static(QUEUE, orders_queued_route!("[order-transform]")),
            ),
            order()?,
        ),
        sc(
            "ALL-queued",
            "gateway full Amazon order chain, stored durably, 202",
            System::Gateway,
            concat_static(
                ALL,
                concat_static(
                    QUEUE,
                    orders_queued_route!(
                        "[orders-auth, amazon-limit, shopify-limit, walmart-limit, ebay-limit, order-schema, idempotency, order-transform]"
                    ),
                ),
            ),
            order()?
                .generate("authorization", bearer_pool(&inputs.rs256)?)?
                .generate("idempotency-key", Generated::Uuid)?,
        ),
        sc(
            "ALL-noidem",
            "gateway full Amazon order chain without idempotency (pending kind)",
            System::Gateway,
            concat_static(
                ALL_NO_IDEM,
                orders_post_route!(
                    "[orders-auth, amazon-limit, shopify-limit, walmart-limit, ebay-limit, order-schema, order-transform]"
                ),
            ),
            order()?.generate("authorization", bearer_pool(&inputs.rs256)?)?,
        ),
    ];
    for s in &mut v {
        if s.id == "jwt-hs256" {
            s.env
                .push(("BENCH_HS256_SECRET".into(), crate::tokens::HS_SECRET.into()));
        }
        if s.id == "rl-redis" {
            s.needs_redis = true;
        }
    }
    Ok(v)
}

/// Joins two snippets once for the life of the program (the matrix is built once per run).
fn concat_static(a: &str, b: &str) -> &'static str {
    Box::leak(format!("{a}{b}").into_boxed_str())
}

/// The files a snippet's placeholders name.
#[derive(Debug, Clone)]
pub struct Files {
    /// `{jwks}`: a JWKS file with the development RS256 public key.
    pub jwks: PathBuf,
    /// `{schemas}`: the example set's channel schemas (`policies/files/schemas`).
    pub schemas: PathBuf,
    /// `{mappings}`: the mapping catalog (`transforms/mappings`).
    pub mappings: PathBuf,
}

impl Files {
    /// The example set's schemas and mappings under the workspace `root`, and `jwks`.
    pub fn new(root: &Path, jwks: PathBuf) -> Files {
        Files {
            jwks,
            schemas: root.join("policies/files/schemas"),
            mappings: root.join("transforms/mappings"),
        }
    }
}

/// A whole policy file for a gateway scenario.
pub fn policy_file(
    upstream: SocketAddr,
    snippet: &str,
    files: &Files,
    redis: Option<SocketAddr>,
) -> String {
    let body = snippet
        .replace("{jwks}", &files.jwks.display().to_string())
        .replace("{schemas}", &files.schemas.display().to_string())
        .replace("{mappings}", &files.mappings.display().to_string())
        .replace("{redis}", &redis.map(|r| r.to_string()).unwrap_or_default())
        .replace("{upstream}", &upstream.to_string());
    format!(
        "# written by loadbench\nversion: 1\n\
         listeners:\n  http: 127.0.0.1:0\n  admin: 127.0.0.1:0\n\
         channels:\n  amazon: {{}}\n  walmart: {{}}\n  ebay: {{}}\n  shopify: {{}}\n\
         upstreams:\n  erp:\n    endpoints: [\"{upstream}\"]\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gateway_scenario_has_a_route_and_ids_are_unique() {
        let inputs = Inputs {
            rs256: vec!["a.b.c".into()],
            hs256: vec!["a.b.c".into()],
            orders: Arc::from([Bytes::from_static(b"{}"), Bytes::from_static(b"[]")]),
            passthrough_path: PASSTHROUGH_PATH.into(),
        };
        let all = all(&inputs).expect("matrix");
        let mut ids: Vec<_> = all.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        // replayed keys must meet the body they were first sent with, or every replay is a 422
        let replay = all
            .iter()
            .find(|s| s.id == "idem-replay")
            .expect("idem-replay");
        assert_eq!(replay.recipe.bodies.len(), 1);
        for s in all.iter().filter(|s| s.system == System::Gateway) {
            assert!(s.snippet.contains("routes:"), "{}", s.id);
            let file = policy_file(
                "127.0.0.1:1".parse().expect("addr"),
                s.snippet,
                &Files::new(Path::new("/w"), "/x/jwks.json".into()),
                Some("127.0.0.1:2".parse().expect("addr")),
            );
            assert!(
                !["{jwks}", "{redis}", "{schemas}", "{mappings}", "{upstream}"]
                    .iter()
                    .any(|p| file.contains(p)),
                "{file}"
            );
        }
    }
}
