//! The public surface of a compiled policy file: what a caller can call and must send — every
//! route and method, its security, the request schema and mapping per channel, idempotency,
//! rate limits and deprecation. The OpenAPI document, contract review and the deep check all
//! read this one view instead of each walking the policy file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use policies::kinds::Policy;
use policies::kinds::PolicySpec;
use policies::kinds::idempotency::KeySpec;
use policies::model::PolicySet;
use policies::queue::DeliveryMode;
use policies::spec::DeprecationSpec;
use serde_json::Value;
use transforms::Mapping;

/// Why a surface could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SurfaceError {
    /// The file does not compile; each line is a located error.
    #[error("{file}: {} error(s):\n{}", .errors.len(), .errors.join("\n"))]
    Compile {
        /// The policy file.
        file: PathBuf,
        /// Its errors, `file:line:col: message`.
        errors: Vec<String>,
    },
    /// A schema the file names cannot be read back as JSON.
    #[error("schema {reference}: {message}")]
    Schema {
        /// The reference as written in the file.
        reference: String,
        /// What went wrong.
        message: String,
    },
}

/// The public surface of one policy file.
#[derive(Debug, Clone)]
pub struct Surface {
    /// The policy file it was read from.
    pub file: PathBuf,
    /// Declared channels, in name order.
    pub channels: Vec<String>,
    /// Routes in file order.
    pub routes: Vec<RouteSurface>,
    /// The compiled set it was read from.
    pub set: Arc<PolicySet>,
}

/// What one route offers callers.
#[derive(Debug, Clone)]
pub struct RouteSurface {
    /// Route name.
    pub name: String,
    /// Path template, e.g. `/channels/{channel}/orders`.
    pub path: String,
    /// Methods, as written (upper case).
    pub methods: Vec<String>,
    /// Host the route is bound to, if any.
    pub host: Option<String>,
    /// Whether the path has a `{channel}` parameter (its value must be a declared channel).
    pub channel_param: bool,
    /// Path parameter names in template order.
    pub params: Vec<String>,
    /// What a caller must present; all of them (they are checked in turn).
    pub security: Vec<Security>,
    /// Request body schemas: per channel, plus `default` for any other channel.
    pub schemas: RouteSchemas,
    /// The document the route carries through a `transform` (`order`, `shipment`, ...).
    pub document: Option<String>,
    /// The mapping of each channel's documents, by channel name.
    pub mappings: BTreeMap<String, Arc<Mapping>>,
    /// The idempotency key the route requires or accepts.
    pub idempotency: Option<IdempotencySurface>,
    /// Rate limits on the route (each applies to its channels, or all).
    pub rate_limits: Vec<RateLimitSurface>,
    /// Largest body accepted.
    pub max_body_bytes: u64,
    /// How documents reach the upstream.
    pub delivery: DeliveryMode,
    /// Whether the route fans events out (answers 202 naming deliveries).
    pub fanout: bool,
    /// Whether the route's policies read the body (JSON body expected).
    pub reads_body: bool,
    /// Deprecation settings, as written.
    pub deprecation: Option<DeprecationSpec>,
    /// The route's policies as (name, kind tag), in order.
    pub policies: Vec<(String, &'static str)>,
}

/// The request schemas of a route.
#[derive(Debug, Clone, Default)]
pub struct RouteSchemas {
    /// The `schema` policy that holds them.
    pub policy: Option<String>,
    /// Per channel name.
    pub channels: BTreeMap<String, SchemaDoc>,
    /// For channels not listed (and routes without a channel).
    pub default: Option<SchemaDoc>,
}

impl RouteSchemas {
    /// The schema a channel's documents are validated against, if any.
    pub fn for_channel(&self, channel: &str) -> Option<&SchemaDoc> {
        self.channels.get(channel).or(self.default.as_ref())
    }
}

/// A JSON Schema document as the policy file names it.
#[derive(Debug, Clone)]
pub struct SchemaDoc {
    /// As written in the file (`schemas/amazon/order.schema.json`, `canonical:order`).
    pub reference: String,
    /// The file it was read from (None for `canonical:`).
    pub path: Option<PathBuf>,
    /// The schema itself.
    pub value: Arc<Value>,
}

/// One credential a route requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// An OAuth 2.0 bearer JWT.
    Bearer {
        /// The `jwt` policy.
        policy: String,
        /// Scopes the token must carry (all of them).
        scopes: Vec<String>,
        /// Whether the token must name the route's channel.
        channel_bound: bool,
    },
    /// An HMAC signature of the body in a header.
    WebhookSignature {
        /// The `webhook_signature` policy.
        policy: String,
        /// The header carrying it.
        header: String,
        /// Channels whose secrets are accepted.
        channels: Vec<String>,
    },
    /// eBay's `X-EBAY-SIGNATURE`.
    EbaySignature {
        /// The `ebay_signature` policy.
        policy: String,
    },
    /// A client certificate over mutual TLS.
    ClientCert {
        /// The `client_cert` policy.
        policy: String,
        /// Channels certificates are bound to.
        channels: Vec<String>,
    },
}

/// An idempotency key on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencySurface {
    /// The `idempotency` policy.
    pub policy: String,
    /// The header holding the key; None when the key comes from the body.
    pub header: Option<String>,
    /// JSON pointers into the body forming the key, when it comes from the body.
    pub body_pointers: Vec<String>,
    /// Whether a request without a key is refused.
    pub required: bool,
}

/// A rate-limit policy on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSurface {
    /// The `rate_limit` policy.
    pub policy: String,
    /// The channels it applies to; None: all.
    pub channels: Option<Vec<String>>,
    /// Its limits.
    pub limits: Vec<LimitSurface>,
}

impl RateLimitSurface {
    /// Whether it applies to a channel's requests.
    pub fn applies_to(&self, channel: Option<&str>) -> bool {
        match (&self.channels, channel) {
            (None, _) => true,
            (Some(list), Some(c)) => list.iter().any(|l| l == c),
            (Some(_), None) => false,
        }
    }
}

/// One limit of a rate-limit policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSurface {
    /// Its name (`per_second`).
    pub name: String,
    /// Requests per `per`.
    pub rate: u64,
    /// The period.
    pub per: Duration,
    /// The burst (None: the rate).
    pub burst: Option<u64>,
}

/// Compiles a policy file offline and reads its surface.
pub fn load(file: &Path) -> Result<Surface, SurfaceError> {
    let set = policies::compile::compile_file(file, &policies::env::CompileEnv::default(), None)
        .map_err(|e| SurfaceError::Compile {
            file: file.to_path_buf(),
            errors: e.0.iter().map(ToString::to_string).collect(),
        })?;
    of_set(Arc::new(set))
}

/// The surface of an already compiled set (the running gateway's).
pub fn of_set(set: Arc<PolicySet>) -> Result<Surface, SurfaceError> {
    let spec = set.spec.clone();
    let channels: Vec<String> = spec.channels.keys().cloned().collect();
    let mut schema_cache: BTreeMap<String, SchemaDoc> = BTreeMap::new();
    let mut routes = Vec::with_capacity(spec.routes.len());
    for (i, r) in spec.routes.iter().enumerate() {
        let params = policies::route::template_params(&r.path).unwrap_or_default();
        let mut route = RouteSurface {
            name: r.name.clone(),
            path: r.path.clone(),
            methods: r.methods.clone(),
            host: r.host.clone(),
            channel_param: params.iter().any(|p| p == "channel"),
            params,
            security: Vec::new(),
            schemas: RouteSchemas::default(),
            document: None,
            mappings: BTreeMap::new(),
            idempotency: None,
            rate_limits: Vec::new(),
            max_body_bytes: set.routes.get(i).map_or(0, |c| c.max_body_bytes),
            delivery: r.delivery.as_ref().map(|d| d.mode).unwrap_or_default(),
            fanout: r.fanout.is_some(),
            reads_body: set.routes.get(i).is_some_and(|c| c.chain.needs_body()),
            deprecation: r.deprecation.clone(),
            policies: Vec::new(),
        };
        for name in &r.policies {
            let (Some(ps), Some(compiled)) = (spec.policies.get(name), set.policies.get(name))
            else {
                continue;
            };
            route.policies.push((name.clone(), compiled.policy.kind()));
            read_policy(
                &set,
                &channels,
                name,
                ps,
                &compiled.policy,
                &mut route,
                &mut schema_cache,
            )?;
        }
        routes.push(route);
    }
    Ok(Surface {
        file: set.version.file.clone(),
        channels,
        routes,
        set,
    })
}

fn read_policy(
    set: &PolicySet,
    channels: &[String],
    name: &str,
    spec: &PolicySpec,
    compiled: &Policy,
    route: &mut RouteSurface,
    cache: &mut BTreeMap<String, SchemaDoc>,
) -> Result<(), SurfaceError> {
    match spec {
        PolicySpec::Jwt(j) => route.security.push(Security::Bearer {
            policy: name.to_owned(),
            scopes: j.scopes.clone(),
            channel_bound: j.channel.is_some(),
        }),
        PolicySpec::WebhookSignature(w) => {
            let header = w.header.clone().unwrap_or_else(|| match w.preset {
                Some(policies::kinds::webhook_signature::WebhookPreset::Shopify) | None => {
                    "X-Shopify-Hmac-Sha256".to_owned()
                }
            });
            let mut chans: Vec<String> =
                w.secrets.iter().filter_map(|s| s.channel.clone()).collect();
            chans.sort();
            chans.dedup();
            route.security.push(Security::WebhookSignature {
                policy: name.to_owned(),
                header,
                channels: chans,
            });
        }
        PolicySpec::EbaySignature(_) => route.security.push(Security::EbaySignature {
            policy: name.to_owned(),
        }),
        PolicySpec::ClientCert(c) => {
            let mut chans: Vec<String> = c.clients.iter().map(|e| e.channel.clone()).collect();
            chans.sort();
            chans.dedup();
            route.security.push(Security::ClientCert {
                policy: name.to_owned(),
                channels: chans,
            });
        }
        PolicySpec::RateLimit(r) => route.rate_limits.push(RateLimitSurface {
            policy: name.to_owned(),
            channels: r.channels.clone(),
            limits: r
                .limits
                .iter()
                .map(|l| LimitSurface {
                    name: l.name.clone(),
                    rate: l.rate,
                    per: l.per.0,
                    burst: l.burst,
                })
                .collect(),
        }),
        PolicySpec::Idempotency(i) => {
            let (header, body_pointers) = match &i.key {
                KeySpec::Header(h) => (Some(h.clone()), Vec::new()),
                KeySpec::Body(p) => (None, p.clone()),
            };
            route.idempotency = Some(IdempotencySurface {
                policy: name.to_owned(),
                header,
                body_pointers,
                required: i.required,
            });
        }
        PolicySpec::Schema(s) => {
            route.schemas.policy = Some(name.to_owned());
            for (channel, reference) in &s.channels {
                let doc = schema_doc(&set.base_dir, reference, cache)?;
                route.schemas.channels.insert(channel.clone(), doc);
            }
            if let Some(reference) = &s.default {
                route.schemas.default = Some(schema_doc(&set.base_dir, reference, cache)?);
            }
        }
        PolicySpec::Transform(t) => {
            route.document = Some(t.document.clone());
            if let Policy::Transform(rt) = compiled {
                for (index, channel) in channels.iter().enumerate() {
                    if let Some(m) = rt.channel_mapping(index) {
                        route.mappings.insert(channel.clone(), m.clone());
                    }
                }
            }
        }
        PolicySpec::JsonBody(_) => {}
    }
    Ok(())
}

fn schema_doc(
    base_dir: &Path,
    reference: &str,
    cache: &mut BTreeMap<String, SchemaDoc>,
) -> Result<SchemaDoc, SurfaceError> {
    if let Some(doc) = cache.get(reference) {
        return Ok(doc.clone());
    }
    let err = |message: String| SurfaceError::Schema {
        reference: reference.to_owned(),
        message,
    };
    let doc = if let Some(document) = reference.strip_prefix("canonical:") {
        let value = transforms::canonical_schema(document)
            .ok_or_else(|| err(format!("no canonical schema {document:?}")))?;
        SchemaDoc {
            reference: reference.to_owned(),
            path: None,
            value: Arc::new(value.clone()),
        }
    } else {
        let path = base_dir.join(reference);
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        SchemaDoc {
            reference: reference.to_owned(),
            path: Some(path),
            value: Arc::new(value),
        }
    };
    cache.insert(reference.to_owned(), doc.clone());
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Surface {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/files/gateway.yaml");
        load(&file).expect("the example set compiles")
    }

    #[test]
    fn the_example_sets_order_route_has_per_channel_schemas_and_mappings() {
        let s = example();
        let orders = s
            .routes
            .iter()
            .find(|r| r.name == "channel-orders")
            .expect("channel-orders route");
        assert!(orders.channel_param);
        assert_eq!(orders.methods, ["POST"]);
        for channel in ["amazon", "shopify", "walmart", "ebay"] {
            assert!(orders.schemas.for_channel(channel).is_some(), "{channel}");
            assert!(orders.mappings.contains_key(channel), "{channel}");
        }
        assert_eq!(orders.document.as_deref(), Some("order"));
        assert!(matches!(
            &orders.security[0],
            Security::Bearer { scopes, channel_bound: true, .. } if scopes == &["orders:write"]
        ));
        let idem = orders.idempotency.as_ref().expect("idempotency");
        assert_eq!(idem.header.as_deref(), Some("Idempotency-Key"));
        assert!(idem.required);
        let amazon_limits: Vec<_> = orders
            .rate_limits
            .iter()
            .filter(|l| l.applies_to(Some("amazon")))
            .collect();
        assert_eq!(amazon_limits.len(), 1);
        assert_eq!(amazon_limits[0].limits[0].rate, 10);
    }

    #[test]
    fn webhook_cert_and_ebay_routes_name_their_credentials() {
        let s = example();
        let kinds: Vec<(&str, &Security)> = s
            .routes
            .iter()
            .flat_map(|r| r.security.iter().map(move |sec| (r.name.as_str(), sec)))
            .collect();
        assert!(kinds.iter().any(|(r, s)| *r == "shopify-order-webhook"
            && matches!(s, Security::WebhookSignature { header, .. } if header == "X-Shopify-Hmac-Sha256")));
        assert!(kinds.iter().any(
            |(r, s)| *r == "ebay-notifications" && matches!(s, Security::EbaySignature { .. })
        ));
        assert!(kinds.iter().any(|(r, s)| *r == "partner-shipments"
            && matches!(s, Security::ClientCert { channels, .. } if channels == &["acme-3pl"])));
    }
}
