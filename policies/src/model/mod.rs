//! The runtime model: the compiled policy set the gateway serves from (routes with their
//! precomputed chains, upstreams, channels, limits), immutable once built. `compile` builds it
//! from a policy file; the gateway only reads it. Nothing here parses or checks a file.

pub(crate) mod channels;
mod upstream;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderValue, Method};

use crate::chain::{Chain, NamedPolicy};
use crate::error::{ConfigError, ConfigErrors};
use crate::kinds::Policy;
use crate::pipeline::Channel;
use crate::queue::{Queue, RouteDelivery};
use crate::route::{self, Lookup, PathParams, PathTemplate, Router};
use crate::spec::ListenersSpec;

pub use channels::Channels;
pub use upstream::{Endpoint, Upstream};

/// Which policy set is serving: a content hash and when it was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigVersion {
    /// `sha256:<hex>` of the file's bytes.
    pub hash: String,
    /// When it was compiled.
    pub loaded_at: SystemTime,
    /// The file it came from.
    pub file: PathBuf,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Index in [`PolicySet::routes`].
    pub index: usize,
    /// Its name (metrics, logs).
    pub name: Arc<str>,
    /// Index of its upstream in [`PolicySet::upstreams`].
    pub upstream: usize,
    /// Upstream path template; `None` forwards the path unchanged.
    pub upstream_path: Option<PathTemplate>,
    /// Policies in order.
    pub chain: Chain,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Whether the path captures `{channel}`, which must name a known channel.
    pub channel_param: bool,
    /// For `queued` and `fallback` routes: the queue and ordering.
    pub delivery: Option<RouteDelivery>,
    /// For fan-out routes: where each accepted event goes.
    pub fanout: Option<Arc<crate::fanout::Fanout>>,
    /// For the `<path>/deliveries/{id}` route of a delivery route: that route's index. Such a
    /// route runs only the policies that guard reads (authentication, rate limits).
    pub status_of: Option<usize>,
    /// When the route is deprecated: its dates and headers (`None` costs the request path one
    /// branch).
    pub deprecation: Option<Arc<crate::deprecation::Deprecation>>,
}

/// Server-wide limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head.
    pub max_header_bytes: u64,
    /// Default body limit.
    pub max_body_bytes: u64,
    /// Time to send a whole HTTP/1 request head.
    pub head_timeout: std::time::Duration,
    /// Longest pause between two reads of a request body.
    pub body_idle_timeout: std::time::Duration,
}

/// The compiled policy file: everything the gateway needs to serve, immutable once built.
#[derive(Debug)]
pub struct PolicySet {
    /// Which file and content.
    pub version: ConfigVersion,
    /// Listener settings, with file paths made absolute.
    pub listeners: ListenersSpec,
    /// The admin listener's token, resolved (`listeners.admin_auth`); `None`: loopback only.
    pub admin_auth: Option<crate::admin_auth::AdminAuth>,
    /// Server-wide limits.
    pub limits: Limits,
    /// Known channels.
    pub channels: Channels,
    /// Upstream clusters.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Routes, in file order.
    pub routes: Vec<Arc<Route>>,
    /// Policies by name.
    pub policies: BTreeMap<String, Arc<NamedPolicy>>,
    /// Store-and-forward queues, by name order.
    pub queues: Vec<Arc<Queue>>,
    /// The file's Redis, when it has one (the policies with `store: redis` use it).
    pub redis: Option<Arc<crate::state::redis::RedisStore>>,
    /// The file's Redis as the queues with `store: redis` use it: its own connection, and a
    /// longer call timeout than the request path's (a delivery store call may wait a second;
    /// a rate limit may not).
    pub queue_redis: Option<Arc<crate::state::redis::RedisStore>>,
    /// The compiled `outbound` section: how fan-out deliveries call the marketplaces.
    pub outbound: Option<Arc<crate::fanout::Outbound>>,
    /// The compiled `tracing:` section; `None`: no spans are recorded.
    pub tracing: Option<crate::traces::TracingSettings>,
    /// The file as parsed, before compiling: what governance commands (OpenAPI, contract
    /// review) read about routes and policies; nothing on the request path uses it.
    pub spec: Arc<crate::spec::PolicyFileSpec>,
    /// The folder relative paths in the file are resolved against.
    pub base_dir: std::path::PathBuf,
    /// The route table over `routes`.
    pub(crate) router: Router,
}

/// How a request resolves against the route table.
#[derive(Debug)]
pub enum Resolved<'a> {
    /// A route takes it.
    Route {
        /// The route.
        route: &'a Arc<Route>,
        /// Its captured parameters.
        params: PathParams,
        /// The channel named by the path, if the route captures one.
        channel: Option<Channel>,
    },
    /// No route for this path (deny by default).
    NotFound,
    /// The route captures `{channel}` but the value names no known channel.
    UnknownChannel,
    /// Known path, other method.
    MethodNotAllowed(&'a HeaderValue),
    /// The path has dot segments.
    BadPath,
}

impl PolicySet {
    /// Resolves a request to its route.
    pub fn resolve(&self, method: &Method, host: Option<&str>, path: &str) -> Resolved<'_> {
        if route::has_dot_segment(path) {
            return Resolved::BadPath;
        }
        match self.router.lookup(method, host, path) {
            Lookup::Found { route, params } => {
                let Some(route) = self.routes.get(route) else {
                    return Resolved::NotFound;
                };
                let channel = if route.channel_param {
                    match params.get("channel").and_then(|c| self.channels.get(c)) {
                        Some(c) => Some(c),
                        None => return Resolved::UnknownChannel,
                    }
                } else {
                    None
                };
                Resolved::Route {
                    route,
                    params,
                    channel,
                }
            }
            Lookup::MethodNotAllowed { allow } => Resolved::MethodNotAllowed(allow),
            Lookup::NotFound => Resolved::NotFound,
        }
    }

    /// What `gateway check` warns about without refusing the file: deprecated routes whose
    /// sunset is past (on the set's clock) or before their deprecation date.
    pub fn warnings(&self) -> Vec<ConfigError> {
        self.routes
            .iter()
            .filter_map(|r| r.deprecation.as_ref())
            .flat_map(|d| d.warnings(&self.version.file))
            .collect()
    }

    /// A one-line summary, as `gateway check` prints it.
    pub fn summary(&self) -> String {
        // the delivery-state reads a delivery route serves are not routes of the file
        let routes = self.routes.iter().filter(|r| r.status_of.is_none()).count();
        format!(
            "{} routes, {} upstreams, {} policies, {} channels, {} queues ({})",
            routes,
            self.upstreams.len(),
            self.policies.len(),
            self.channels.names().len(),
            self.queues.len(),
            self.version.hash
        )
    }

    /// Every mapping the set's transform policies use, once each.
    pub fn mappings_in_use(&self) -> Vec<Arc<transforms::Mapping>> {
        let mut seen = BTreeMap::new();
        for p in self.policies.values() {
            if let Policy::Transform(t) = &p.policy {
                for m in t.mappings() {
                    seen.entry(m.name().to_owned()).or_insert(m);
                }
            }
        }
        seen.into_values().collect()
    }

    /// Runs every policy's warm-up (such as fetching an identity provider's keys); the gateway
    /// awaits it before it reports ready and before it swaps a reloaded set in. Every failure is
    /// reported, naming its policy.
    pub async fn warm_up(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        for (name, p) in &self.policies {
            if let Err(message) = p.policy.warm_up().await {
                errors.push(ConfigError {
                    file: self.version.file.clone(),
                    location: None,
                    message: format!("policy {name:?}: {message}"),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}
