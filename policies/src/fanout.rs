//! Outbound in the policy file: the `outbound` section (how the gateway calls each
//! marketplace's API: which upstream, the values its outbound mappings read, the published
//! limit of each operation) and a route's `fanout` (one accepted canonical event, one delivery
//! per destination: the route's upstream, the marketplace the document names, every channel a
//! SKU is listed on), checked and compiled into [`Outbound`] and [`Fanout`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use transforms::Catalog;
use transforms::canonical_schemas::{self, SchemaValidator};
use transforms::outbound::OutboundMapping;

use crate::error::ConfigError;
use crate::source::{parse_yaml, push_token};
use crate::state::StoreKind;
use crate::state::rate_limit::{Counters, Gcra, LocalCounters, RedisCounters};
use crate::state::redis::RedisStore;
use crate::units::DurationSpec;

/// How the gateway calls the marketplaces (outbound deliveries of fan-out routes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundSpec {
    /// The mappings folder (`<channel>/outbound/<operation>.jq` and their golden cases),
    /// relative to this policy file.
    pub mappings: String,
    /// Where the outbound limits count: `local` (this instance) or `redis` (the file's Redis,
    /// one limit shared by every instance, as the marketplace sees it).
    #[serde(default)]
    pub store: StoreKind,
    /// Each marketplace the gateway calls, by channel name.
    pub marketplaces: BTreeMap<String, MarketplaceSpec>,
}

/// One marketplace's API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketplaceSpec {
    /// The upstream (under `upstreams`) that is the marketplace's API; its `credentials`
    /// authenticate every call.
    pub upstream: String,
    /// Values the outbound mappings read as `.target` (seller id, marketplace id, API
    /// version, location), as strings.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The operations called on this marketplace (`shipment`, `inventory`), each with the
    /// marketplace's published limit. An operation not listed is not called: a fan-out to it
    /// is refused.
    pub operations: BTreeMap<String, OperationSpec>,
}

/// One operation of a marketplace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct OperationSpec {
    /// The marketplace's limit on this call (a token bucket: `rate` per `per`, `burst` at
    /// once), mirrored so deliveries wait their turn instead of collecting 429s. Absent: no
    /// limit of the gateway's own (the marketplace's 429s still slow deliveries down).
    #[serde(default)]
    pub limit: Option<OutboundLimitSpec>,
}

/// A marketplace's published limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundLimitSpec {
    /// Calls per `per`.
    #[schemars(range(min = 1))]
    pub rate: u64,
    /// The period, e.g. `1s`, `1m`.
    pub per: DurationSpec,
    /// Calls that may go at once after a quiet while. Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub burst: u64,
}

fn one() -> u64 {
    1
}

/// A route's fan-out: the canonical event it takes, and where each accepted one goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FanoutSpec {
    /// The canonical document the body must be (checked against the canonical schema; a
    /// violation is answered 422): `shipment` or `inventory_adjustment` (snapshots with a
    /// per-SKU `sequence`; a delta is refused).
    pub document: FanoutDocument,
    /// The destinations, one delivery each: `route_upstream` (the route's `upstream` and
    /// `upstream_path`, the canonical document as is), `document_channel` (the marketplace
    /// named by the document's `channel`), `listing_channels` (every channel the `skus` file
    /// lists the item's SKU on; one delivery per item and channel).
    #[schemars(length(min = 1))]
    pub to: Vec<FanoutTarget>,
    /// The SKU file for `listing_channels` (YAML, relative to this policy file): per SKU, the
    /// channels it is listed on with the values their mappings read as `.listing`
    /// (`SKU-1: {amazon: {}, shopify: {inventory_item_id: "808950810"}}`). Read again on
    /// every reload.
    #[serde(default)]
    pub skus: Option<String>,
}

/// The canonical documents a fan-out route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FanoutDocument {
    /// A shipment confirmation (outbound operation `shipment`).
    Shipment,
    /// Stock levels (outbound operation `inventory`).
    InventoryAdjustment,
}

impl FanoutDocument {
    /// The canonical document's name.
    pub fn as_str(self) -> &'static str {
        match self {
            FanoutDocument::Shipment => "shipment",
            FanoutDocument::InventoryAdjustment => "inventory_adjustment",
        }
    }

    /// The outbound operation it becomes at a marketplace.
    pub fn operation(self) -> &'static str {
        match self {
            FanoutDocument::Shipment => "shipment",
            FanoutDocument::InventoryAdjustment => "inventory",
        }
    }
}

/// A fan-out destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FanoutTarget {
    /// The route's own upstream (the ERP), with the canonical document.
    RouteUpstream,
    /// The marketplace the document's `channel` names.
    DocumentChannel,
    /// Every channel the SKU file lists the item's SKU on.
    ListingChannels,
}

/// The compiled `outbound` section.
#[derive(Debug)]
pub struct Outbound {
    /// The marketplaces, by channel name order.
    pub marketplaces: Vec<Marketplace>,
    /// The catalog the outbound mappings come from.
    pub catalog: Arc<Catalog>,
}

impl Outbound {
    /// The marketplace of a channel.
    pub fn marketplace(&self, channel: &str) -> Option<&Marketplace> {
        self.marketplaces.iter().find(|m| &*m.channel == channel)
    }

    /// Every outbound mapping in use, once each.
    pub fn mappings(&self) -> Vec<Arc<OutboundMapping>> {
        self.marketplaces
            .iter()
            .flat_map(|m| m.operations.iter().map(|o| o.mapping.clone()))
            .collect()
    }
}

/// A compiled marketplace.
#[derive(Debug)]
pub struct Marketplace {
    /// Its channel.
    pub channel: Arc<str>,
    /// Index of its upstream in the set's upstreams.
    pub upstream: usize,
    /// The mappings' `.target`.
    pub params: Value,
    /// Its operations.
    pub operations: Vec<Operation>,
}

impl Marketplace {
    /// An operation by name.
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| &*o.name == name)
    }
}

/// A compiled operation.
#[derive(Debug)]
pub struct Operation {
    /// `shipment` or `inventory`.
    pub name: Arc<str>,
    /// Its outbound mapping.
    pub mapping: Arc<OutboundMapping>,
    /// Its limit and where it counts.
    pub limit: Option<OutboundLimit>,
}

/// A compiled limit.
#[derive(Debug)]
pub struct OutboundLimit {
    /// The spec, so a reload keeps counters whose limit did not change.
    pub spec: OutboundLimitSpec,
    /// The counters (one key: `<channel>:<operation>`).
    pub counters: Arc<Counters>,
}

/// A compiled fan-out.
#[derive(Debug)]
pub struct Fanout {
    /// The canonical document taken.
    pub document: FanoutDocument,
    /// Its canonical schema.
    pub validator: &'static SchemaValidator,
    /// The destinations.
    pub to: Vec<FanoutTarget>,
    /// SKU -> channel -> listing values.
    pub skus: SkuListings,
}

/// Which channels list each SKU, with each listing's values.
#[derive(Debug, Default)]
pub struct SkuListings {
    by_sku: HashMap<String, Vec<(Arc<str>, Value)>>,
}

impl SkuListings {
    /// The channels a SKU is listed on and their listing values, in channel name order.
    pub fn channels(&self, sku: &str) -> &[(Arc<str>, Value)] {
        self.by_sku.get(sku).map_or(&[], Vec::as_slice)
    }

    /// How many SKUs it knows.
    pub fn len(&self) -> usize {
        self.by_sku.len()
    }

    /// Whether it knows none.
    pub fn is_empty(&self) -> bool {
        self.by_sku.is_empty()
    }
}

/// What compiling the outbound section needs from the rest of the file.
pub struct OutboundContext<'a> {
    /// The policy file's folder.
    pub base_dir: &'a Path,
    /// Upstream index by name.
    pub upstreams: &'a HashMap<String, usize>,
    /// Declared channels.
    pub channels: &'a [Arc<str>],
    /// The file's Redis, for `store: redis`.
    pub redis: Option<&'a Arc<RedisStore>>,
    /// The set being replaced, whose local counters are kept when a limit did not change.
    pub previous: Option<&'a Outbound>,
}

/// Compiles the `outbound` section; errors are (pointer, message).
pub fn compile_outbound(
    spec: &OutboundSpec,
    cx: &OutboundContext<'_>,
    errors: &mut Vec<(String, String)>,
) -> Option<Outbound> {
    let root = cx.base_dir.join(&spec.mappings);
    let catalog = match Catalog::load(&root) {
        Ok(c) => Arc::new(c),
        Err(load) => {
            for e in load {
                errors.push(("/outbound/mappings".into(), e.to_string()));
            }
            return None;
        }
    };
    if spec.store == StoreKind::Redis && cx.redis.is_none() {
        errors.push((
            "/outbound/store".into(),
            "store: redis needs the file's `redis` section".into(),
        ));
    }
    let mut marketplaces = Vec::new();
    for (channel, m) in &spec.marketplaces {
        let at = push_token("/outbound/marketplaces", channel);
        if !cx.channels.iter().any(|c| &**c == channel) {
            errors.push((
                at.clone(),
                format!("{channel:?} is not a channel of this file (declare it under `channels`)"),
            ));
        }
        let Some(&upstream) = cx.upstreams.get(&m.upstream) else {
            errors.push((
                format!("{at}/upstream"),
                format!("upstream {:?} is not defined", m.upstream),
            ));
            continue;
        };
        let mut operations = Vec::new();
        for (name, op) in &m.operations {
            let op_at = push_token(&format!("{at}/operations"), name);
            if !transforms::outbound::OUTBOUND_OPERATIONS.contains(&name.as_str()) {
                errors.push((
                    op_at,
                    format!(
                        "no outbound operation is called {name:?} (known: {})",
                        transforms::outbound::OUTBOUND_OPERATIONS.join(", ")
                    ),
                ));
                continue;
            }
            let Some(mapping) = catalog.outbound(channel, name) else {
                errors.push((
                    op_at,
                    format!(
                        "no outbound mapping {channel}/outbound/{name}.jq under {}",
                        root.display()
                    ),
                ));
                continue;
            };
            let limit = op.limit.as_ref().and_then(|l| {
                let per_us = u64::try_from(l.per.0.as_micros()).unwrap_or(u64::MAX);
                let gcra = match Gcra::new(l.rate, per_us, l.burst) {
                    Ok(g) => g,
                    Err(msg) => {
                        errors.push((format!("{op_at}/limit"), msg));
                        return None;
                    }
                };
                let counters = match (spec.store, cx.redis) {
                    (StoreKind::Redis, Some(redis)) => {
                        Arc::new(Counters::Redis(RedisCounters::new(
                            redis.clone(),
                            &format!("outbound.{channel}.{name}"),
                            std::slice::from_ref(&gcra),
                            &[Box::from(name.as_str())],
                        )))
                    }
                    _ => cx
                        .previous
                        .and_then(|p| p.marketplace(channel))
                        .and_then(|p| p.operation(name))
                        .and_then(|p| p.limit.as_ref())
                        .filter(|p| p.spec == *l && matches!(*p.counters, Counters::Local(_)))
                        .map(|p| p.counters.clone())
                        .unwrap_or_else(|| {
                            Arc::new(Counters::Local(Arc::new(LocalCounters::new(&[gcra]))))
                        }),
                };
                Some(OutboundLimit {
                    spec: l.clone(),
                    counters,
                })
            });
            operations.push(Operation {
                name: Arc::from(name.as_str()),
                mapping,
                limit,
            });
        }
        let params: Map<String, Value> = m
            .params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        marketplaces.push(Marketplace {
            channel: Arc::from(channel.as_str()),
            upstream,
            params: Value::Object(params),
            operations,
        });
    }
    Some(Outbound {
        marketplaces,
        catalog,
    })
}

/// Compiles a route's `fanout` (at pointer `at`); errors in the policy file are (pointer,
/// message), errors in the SKU file are whole [`ConfigError`]s at its own lines.
pub fn compile_fanout(
    at: &str,
    spec: &FanoutSpec,
    base_dir: &Path,
    outbound: Option<&Outbound>,
    errors: &mut Vec<(String, String)>,
    file_errors: &mut Vec<ConfigError>,
) -> Option<Fanout> {
    let validator = canonical_schemas::canonical_validator(spec.document.as_str())?;
    let needs_marketplaces = spec.to.iter().any(|t| *t != FanoutTarget::RouteUpstream);
    if needs_marketplaces && outbound.is_none() {
        errors.push((
            format!("{at}/to"),
            "calling marketplaces needs the file's `outbound` section".into(),
        ));
    }
    let listing = spec.to.contains(&FanoutTarget::ListingChannels);
    if listing && spec.document != FanoutDocument::InventoryAdjustment {
        errors.push((
            format!("{at}/to"),
            "listing_channels fans inventory out per SKU; use it with document: inventory_adjustment".into(),
        ));
    }
    let skus = match (&spec.skus, listing) {
        (Some(file), true) => {
            let path = base_dir.join(file);
            load_skus(&path, outbound, file_errors).unwrap_or_default()
        }
        (None, true) => {
            errors.push((
                format!("{at}/skus"),
                "listing_channels needs a `skus` file".into(),
            ));
            SkuListings::default()
        }
        (Some(_), false) => {
            errors.push((
                format!("{at}/skus"),
                "a skus file is only read for listing_channels".into(),
            ));
            SkuListings::default()
        }
        (None, false) => SkuListings::default(),
    };
    if let Some(o) = outbound
        && needs_marketplaces
    {
        let op = spec.document.operation();
        if !o.marketplaces.iter().any(|m| m.operation(op).is_some()) {
            errors.push((
                format!("{at}/to"),
                format!("no marketplace under `outbound` has the operation {op}"),
            ));
        }
    }
    for (i, t) in spec.to.iter().enumerate() {
        if spec.to[..i].contains(t) {
            errors.push((format!("{at}/to/{i}"), "listed twice".into()));
        }
    }
    Some(Fanout {
        document: spec.document,
        validator,
        to: spec.to.clone(),
        skus,
    })
}

/// Reads a SKU file: `SKU: {channel: {key: "value"}}`.
fn load_skus(
    path: &PathBuf,
    outbound: Option<&Outbound>,
    file_errors: &mut Vec<ConfigError>,
) -> Option<SkuListings> {
    let err = |location, message: String| ConfigError {
        file: path.clone(),
        location,
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            file_errors.push(err(None, format!("cannot read the SKU file: {e}")));
            return None;
        }
    };
    let (doc, map) = match parse_yaml(&text) {
        Ok(parsed) => parsed,
        Err(e) => {
            file_errors.push(err(e.location, e.message));
            return None;
        }
    };
    let Value::Object(skus) = doc else {
        file_errors.push(err(
            map.value(""),
            "a SKU file maps each SKU to the channels it is listed on".into(),
        ));
        return None;
    };
    let mut by_sku = HashMap::with_capacity(skus.len());
    for (sku, channels) in skus {
        let at = push_token("", &sku);
        let Value::Object(channels) = channels else {
            file_errors.push(err(
                map.value(&at),
                format!("SKU {sku:?}: expected a map of channels"),
            ));
            continue;
        };
        let mut listed: Vec<(Arc<str>, Value)> = Vec::with_capacity(channels.len());
        for (channel, values) in channels {
            let c_at = push_token(&at, &channel);
            if let Some(o) = outbound
                && o.marketplace(&channel).is_none()
            {
                file_errors.push(err(
                    map.key(&c_at),
                    format!("SKU {sku:?}: channel {channel:?} has no marketplace under `outbound`"),
                ));
                continue;
            }
            let values = match values {
                Value::Null => Value::Object(Map::new()),
                Value::Object(o) if o.values().all(Value::is_string) => Value::Object(o),
                _ => {
                    file_errors.push(err(
                        map.value(&c_at),
                        format!("SKU {sku:?} on {channel}: listing values are strings"),
                    ));
                    continue;
                }
            };
            listed.push((Arc::from(channel.as_str()), values));
        }
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        by_sku.insert(sku, listed);
    }
    Some(SkuListings { by_sku })
}
