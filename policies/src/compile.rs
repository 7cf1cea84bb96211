//! Compiles a policy file into a `model::PolicySet`: the immutable snapshot the gateway serves
//! from.
//! Every error is collected (syntax, schema, references, templates, secrets) and reported as
//! `file:line:col: message`; `gateway check` runs exactly this.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderName, HeaderValue, Method};
use sha2::{Digest, Sha256};

use crate::admin_auth::{self, AdminAuth};
use crate::chain::{Chain, NamedPolicy};
use crate::env::CompileEnv;
use crate::error::{ConfigError, ConfigErrors, ErrorSink};
use crate::kinds::CompileScope;
use crate::model::{Channels, ConfigVersion, Endpoint, Limits, PolicySet, Route, Upstream};
use crate::queue::{DeliveryMode, Queue, RouteDelivery, check_pointer, compile_queue};
use crate::route::{self, PathTemplate, RouteKey, Router};
use crate::secret;
use crate::source::{parse_yaml, push_token};
use crate::spec::{ListenersSpec, PolicyFileSpec};
use crate::state::redis::{RedisSpec, RedisStore};
use crate::upstream::{UpstreamKeys, compile_resilience, compile_transport};

/// Reads and compiles a policy file.
pub fn compile_file(
    file: &Path,
    env: &CompileEnv,
    previous: Option<&PolicySet>,
) -> Result<PolicySet, ConfigErrors> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            location: None,
            message: format!("cannot read the policy file: {e}"),
        }])
    })?;
    compile_str(file, &text, env, previous)
}

/// Compiles policy-file text; `file` names it in errors and anchors relative paths.
/// `previous` is the set being replaced, whose policies may hand their state over.
pub fn compile_str(
    file: &Path,
    text: &str,
    env: &CompileEnv,
    previous: Option<&PolicySet>,
) -> Result<PolicySet, ConfigErrors> {
    let (doc, map) = parse_yaml(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            location: e.location,
            message: e.message,
        }])
    })?;
    let mut errors = ErrorSink::new(file.to_path_buf(), &map);
    crate::file_schema::validate(&doc, &mut errors);
    if !errors.is_empty() {
        return Err(errors.into_errors());
    }
    let spec: PolicyFileSpec = match serde_path_to_error::deserialize(doc) {
        Ok(spec) => spec,
        Err(e) => {
            let pointer = path_to_pointer(e.path());
            errors.at(&pointer, e.inner().to_string());
            return Err(errors.into_errors());
        }
    };
    let base_dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut cx = Compiler {
        env,
        base_dir: &base_dir,
        errors,
    };
    let set = cx.compile(spec, text, file, previous);
    match set {
        Some(set) if cx.errors.is_empty() => Ok(set),
        _ => Err(cx.errors.into_errors()),
    }
}

fn path_to_pointer(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => {
                out = push_token(&out, &index.to_string())
            }
            serde_path_to_error::Segment::Map { key } => out = push_token(&out, key),
            serde_path_to_error::Segment::Enum { variant } => out = push_token(&out, variant),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

struct Compiler<'a, 'm> {
    env: &'a CompileEnv,
    base_dir: &'a Path,
    errors: ErrorSink<'m>,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Compiler<'_, '_> {
    fn compile(
        &mut self,
        spec: PolicyFileSpec,
        text: &str,
        file: &Path,
        previous: Option<&PolicySet>,
    ) -> Option<PolicySet> {
        let listeners = self.listeners(&spec.listeners);
        let admin_auth = self.admin_auth(&spec.listeners);
        let channels = self.channels(&spec);
        let (upstreams, upstream_index) = self.upstreams(&spec);
        let redis = self.redis(&spec);
        let policies = self.policies(&spec, previous, redis.as_ref(), &channels);
        let limits = Limits {
            max_header_bytes: spec.limits.max_header_bytes.0,
            max_body_bytes: spec.limits.max_body_bytes.0,
            head_timeout: spec.limits.head_timeout.0,
            body_idle_timeout: spec.limits.body_idle_timeout.0,
        };
        let queues = self.queues(&spec, &upstreams);
        let tracing = self.tracing(&spec);
        let outbound = self.outbound(
            &spec,
            &upstream_index,
            &channels,
            redis.as_ref(),
            previous.and_then(|p| p.outbound.as_deref()),
        );
        // only when the file's redis compiled, so an error in it is reported once
        let queue_redis = if redis.is_some()
            && queues
                .iter()
                .any(|q| matches!(q.store, crate::queue::QueueStore::Redis { .. }))
        {
            self.queue_redis(&spec)
        } else {
            None
        };
        let (routes, router) = self.routes(
            &spec,
            &upstream_index,
            &policies,
            &channels,
            limits,
            &queues,
            outbound.as_deref(),
        );
        let hash = format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())));
        Some(PolicySet {
            version: ConfigVersion {
                hash,
                loaded_at: SystemTime::now(),
                file: file.to_path_buf(),
            },
            listeners,
            admin_auth,
            limits,
            channels,
            upstreams,
            routes,
            policies,
            queues,
            redis,
            queue_redis,
            outbound,
            tracing,
            router: router?,
            spec: Arc::new(spec),
            base_dir: self.base_dir.to_path_buf(),
        })
    }

    fn listeners(&mut self, spec: &ListenersSpec) -> ListenersSpec {
        let mut out = spec.clone();
        for (field, addr) in [("http", &spec.http), ("admin", &spec.admin)] {
            if let Some(a) = addr
                && a.parse::<SocketAddr>().is_err()
            {
                self.errors.at(
                    &format!("/listeners/{field}"),
                    format!("listener address {a:?} must be ip:port, e.g. 127.0.0.1:8080"),
                );
            }
        }
        if let (Some(https), Some(o)) = (&spec.https, &mut out.https) {
            if https.address.parse::<SocketAddr>().is_err() {
                self.errors.at(
                    "/listeners/https/address",
                    format!("listener address {:?} must be ip:port", https.address),
                );
            }
            o.cert = self.base_dir.join(&https.cert);
            o.key = self.base_dir.join(&https.key);
            for (field, path) in [("cert", &o.cert), ("key", &o.key)] {
                if let Err(e) = std::fs::metadata(path) {
                    self.errors.at(
                        &format!("/listeners/https/{field}"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                }
            }
            if let Some(ca) = o.client_auth.as_mut().map(|c| &mut c.ca) {
                *ca = self.base_dir.join(&*ca);
                self.readable("/listeners/https/client_auth/ca", ca);
            }
        }
        if let Some(o) = &mut out.admin_tls {
            o.cert = self.base_dir.join(&o.cert);
            o.key = self.base_dir.join(&o.key);
            self.readable("/listeners/admin_tls/cert", &o.cert);
            self.readable("/listeners/admin_tls/key", &o.key);
            if let Some(ca) = o.client_auth.as_mut().map(|c| &mut c.ca) {
                *ca = self.base_dir.join(&*ca);
                self.readable("/listeners/admin_tls/client_auth/ca", ca);
            }
        }
        out
    }

    /// Reports a listener file that cannot be read (its contents are checked when the gateway
    /// starts and on every reload).
    fn readable(&mut self, pointer: &str, path: &std::path::Path) {
        if let Err(e) = std::fs::metadata(path) {
            self.errors
                .at(pointer, format!("cannot read {}: {e}", path.display()));
        }
    }

    fn admin_auth(&mut self, spec: &ListenersSpec) -> Option<AdminAuth> {
        let auth = spec.admin_auth.as_ref()?;
        match admin_auth::compile(auth, self.base_dir, &*self.env.secrets) {
            Ok(a) => Some(a),
            Err(e) => {
                self.errors
                    .at(&format!("/listeners/admin_auth/{}", e.field), e.message);
                None
            }
        }
    }

    fn channels(&mut self, spec: &PolicyFileSpec) -> Channels {
        let mut names = Vec::with_capacity(spec.channels.len());
        for name in spec.channels.keys() {
            if !is_name(name) {
                self.errors.at_key(
                    &push_token("/channels", name),
                    format!("channel name {name:?} may only use letters, digits, '_', '-', '.'"),
                );
            }
            names.push(Arc::from(name.as_str()));
        }
        Channels::new(names)
    }

    fn upstreams(&mut self, spec: &PolicyFileSpec) -> (Vec<Arc<Upstream>>, HashMap<String, usize>) {
        let mut out = Vec::with_capacity(spec.upstreams.len());
        let mut index = HashMap::new();
        for (name, u) in &spec.upstreams {
            let at = push_token("/upstreams", name);
            if !is_name(name) {
                self.errors.at_key(
                    &at,
                    format!("upstream name {name:?} may only use letters, digits, '_', '-', '.'"),
                );
            }
            let mut endpoints = Vec::with_capacity(u.endpoints.len());
            for (i, e) in u.endpoints.iter().enumerate() {
                match parse_endpoint(e) {
                    Ok(ep) => endpoints.push(ep),
                    Err(msg) => self.errors.at(&format!("{at}/endpoints/{i}"), msg),
                }
            }
            let mut request_headers = Vec::with_capacity(u.request_headers.len());
            for (h, v) in &u.request_headers {
                let hat = push_token(&format!("{at}/request_headers"), h);
                let Ok(hn) = HeaderName::from_bytes(h.as_bytes()) else {
                    self.errors
                        .at_key(&hat, format!("{h:?} is not a valid header name"));
                    continue;
                };
                let value = match secret::expand(v, self.base_dir, &*self.env.secrets) {
                    Ok(s) => s,
                    Err(msg) => {
                        self.errors.at(&hat, msg);
                        continue;
                    }
                };
                match HeaderValue::from_str(value.expose()) {
                    Ok(mut hv) => {
                        if secret::is_reference(v) {
                            hv.set_sensitive(true);
                        }
                        request_headers.push((hn, hv));
                    }
                    // the value may be a secret: say which header, never what it holds
                    Err(_) => self.errors.at(
                        &hat,
                        format!("the value of header {h} is not a valid header value"),
                    ),
                }
            }
            if u.total_timeout.0 < u.connect_timeout.0 {
                self.errors.at(
                    &format!("{at}/total_timeout"),
                    "total_timeout is shorter than connect_timeout",
                );
            }
            if let Some(sni) = &u.sni
                && sni.is_empty()
            {
                self.errors
                    .at(&format!("{at}/sni"), "sni must not be empty");
            }
            let keys = UpstreamKeys {
                tls: &u.tls,
                http2: u.http2,
                host: u.host.as_deref(),
                health_check: u.health_check.as_ref(),
                outlier_detection: &u.outlier_detection,
                circuit_breaker: u.circuit_breaker.as_ref(),
                retry: u.retry.as_ref(),
                max_in_flight: u.max_in_flight,
                max_rate: u.max_rate.as_ref(),
                queue_timeout: u.queue_timeout.0,
                total_timeout: u.total_timeout.0,
                read_timeout: u.read_timeout.0,
            };
            let transport = compile_transport(&keys, &at, self.base_dir, &mut self.errors);
            let resilience = compile_resilience(&keys, &at, &mut self.errors);
            let credentials = u.credentials.as_ref().and_then(|c| {
                crate::credentials::compile(
                    c,
                    &format!("{at}/credentials"),
                    self.base_dir,
                    &*self.env.secrets,
                    &mut self.errors,
                )
                .map(Arc::new)
            });
            index.insert(name.clone(), out.len());
            out.push(Arc::new(Upstream {
                name: Arc::from(name.as_str()),
                endpoints,
                transport,
                resilience,
                sni: u.sni.clone(),
                connect_timeout: u.connect_timeout.0,
                read_timeout: u.read_timeout.0,
                total_timeout: u.total_timeout.0,
                idle_timeout: u.idle_timeout.0,
                max_response_bytes: u.max_response_bytes.0,
                request_headers,
                credentials,
                spec: u.clone(),
            }));
        }
        (out, index)
    }

    fn tracing(&mut self, spec: &PolicyFileSpec) -> Option<crate::traces::TracingSettings> {
        match crate::traces::TracingSettings::compile(spec.tracing.as_ref()?) {
            Ok(settings) => Some(settings),
            Err(errors) => {
                for (pointer, message) in errors {
                    self.errors.at(pointer, message);
                }
                None
            }
        }
    }

    fn redis(&mut self, spec: &PolicyFileSpec) -> Option<Arc<RedisStore>> {
        let r = spec.redis.as_ref()?;
        self.redis_store(r)
    }

    /// The connection for `r` (shared with every earlier compile asking for the same).
    fn redis_store(&mut self, r: &RedisSpec) -> Option<Arc<RedisStore>> {
        let url = match secret::expand(&r.url, self.base_dir, &*self.env.secrets) {
            Ok(u) => u,
            Err(msg) => {
                self.errors.at("/redis/url", msg);
                return None;
            }
        };
        match self
            .env
            .stores
            .redis(url.expose(), &r.relative_to(self.base_dir))
        {
            Ok(store) => Some(store),
            Err(msg) => {
                self.errors.at("/redis/url", msg);
                None
            }
        }
    }

    /// The Redis of the queues: the file's, with calls bounded by at least a second.
    fn queue_redis(&mut self, spec: &PolicyFileSpec) -> Option<Arc<RedisStore>> {
        let floor = std::time::Duration::from_secs(1);
        let mut r = spec.redis.clone()?;
        r.timeout.0 = r.timeout.0.max(floor);
        r.connect_timeout.0 = r.connect_timeout.0.max(floor);
        self.redis_store(&r)
    }

    fn policies(
        &mut self,
        spec: &PolicyFileSpec,
        previous: Option<&PolicySet>,
        redis: Option<&Arc<RedisStore>>,
        channels: &Channels,
    ) -> BTreeMap<String, Arc<NamedPolicy>> {
        let mut out = BTreeMap::new();
        // what compile steps share during this compile (a kind's caches, by type)
        let mut cache = http::Extensions::new();
        for (name, p) in &spec.policies {
            let at = push_token("/policies", name);
            if !is_name(name) {
                self.errors.at_key(
                    &at,
                    format!("policy name {name:?} may only use letters, digits, '_', '-', '.'"),
                );
            }
            let name_arc: Arc<str> = Arc::from(name.as_str());
            let prev = previous.and_then(|s| s.policies.get(name));
            let mut scope = CompileScope {
                name: &name_arc,
                pointer: &at,
                base_dir: self.base_dir,
                clock: &self.env.clock,
                secrets: &*self.env.secrets,
                http: &self.env.http,
                channels,
                redis,
                has_redis_section: spec.redis.is_some(),
                cache: &mut cache,
                errors: &mut self.errors,
            };
            let compiled = p.compile(&mut scope, prev.map(|p| &p.policy), &self.env.metrics);
            if let Some(policy) = compiled {
                out.insert(
                    name.clone(),
                    Arc::new(NamedPolicy {
                        name: name_arc,
                        policy,
                    }),
                );
            }
        }
        out
    }

    fn queues(&mut self, spec: &PolicyFileSpec, upstreams: &[Arc<Upstream>]) -> Vec<Arc<Queue>> {
        let longest = upstreams
            .iter()
            .map(|u| u.total_timeout)
            .max()
            .unwrap_or_default();
        let mut out = Vec::with_capacity(spec.queues.len());
        for (name, q) in &spec.queues {
            let at = push_token("/queues", name);
            if !is_name(name) {
                self.errors.at_key(
                    &at,
                    format!("queue name {name:?} may only use letters, digits, '_', '-', '.'"),
                );
            }
            match compile_queue(name, q, self.base_dir, spec.redis.is_some(), longest) {
                Ok(queue) => out.push(Arc::new(queue)),
                Err(errors) => {
                    for (field, message) in errors {
                        self.errors.at(&format!("{at}{field}"), message);
                    }
                }
            }
        }
        out
    }

    /// A route's delivery: `None` for `sync`; errors reported.
    fn delivery(
        &mut self,
        at: &str,
        r: &crate::spec::RouteSpec,
        queues: &[Arc<Queue>],
        spec: &PolicyFileSpec,
    ) -> Option<RouteDelivery> {
        let d = r.delivery.as_ref()?;
        if let Some(p) = &d.ordering_key
            && let Err(msg) = check_pointer(p)
        {
            self.errors.at(&format!("{at}/delivery/ordering_key"), msg);
        }
        if d.mode == DeliveryMode::Sync {
            if d.queue.is_some() {
                self.errors.at(
                    &format!("{at}/delivery/queue"),
                    "a sync route uses no queue (did you mean mode: queued or fallback?)",
                );
            }
            return None;
        }
        if r.methods.iter().any(|m| m == "GET" || m == "HEAD") {
            self.errors.at(
                &format!("{at}/delivery/mode"),
                format!(
                    "mode: {} stores request bodies; a GET or HEAD route has none to store",
                    d.mode.as_str()
                ),
            );
        }
        let Some(name) = &d.queue else {
            self.errors.at(
                &format!("{at}/delivery"),
                format!("mode: {} needs a queue", d.mode.as_str()),
            );
            return None;
        };
        match queues.iter().position(|q| &*q.name == name.as_str()) {
            Some(queue) => Some(RouteDelivery {
                mode: d.mode,
                queue,
                ordering_key: d.ordering_key.clone(),
                readable: false,
            }),
            // defined, but its own errors were reported
            None if spec.queues.contains_key(name) => None,
            None => {
                let known: Vec<&str> = queues.iter().map(|q| &*q.name).collect();
                self.errors.at(
                    &format!("{at}/delivery/queue"),
                    format!(
                        "route {:?} names queue {name:?}, which is not defined (defined: {})",
                        r.name,
                        list(&known)
                    ),
                );
                None
            }
        }
    }

    /// The `outbound` section.
    fn outbound(
        &mut self,
        spec: &PolicyFileSpec,
        upstreams: &HashMap<String, usize>,
        channels: &Channels,
        redis: Option<&Arc<RedisStore>>,
        previous: Option<&crate::fanout::Outbound>,
    ) -> Option<Arc<crate::fanout::Outbound>> {
        let o = spec.outbound.as_ref()?;
        let mut errors = Vec::new();
        let cx = crate::fanout::OutboundContext {
            base_dir: self.base_dir,
            upstreams,
            channels: channels.names(),
            redis,
            previous,
        };
        let compiled = crate::fanout::compile_outbound(o, &cx, &mut errors);
        for (at, message) in errors {
            self.errors.at(&at, message);
        }
        compiled.map(Arc::new)
    }

    /// A route's `fanout`, checked against its delivery.
    fn fanout(
        &mut self,
        at: &str,
        r: &crate::spec::RouteSpec,
        outbound: Option<&crate::fanout::Outbound>,
    ) -> Option<Arc<crate::fanout::Fanout>> {
        let f = r.fanout.as_ref()?;
        if !r
            .delivery
            .as_ref()
            .is_some_and(|d| d.mode == DeliveryMode::Queued)
        {
            self.errors.at(
                &format!("{at}/fanout"),
                "a fan-out route stores one delivery per destination: it needs `delivery: {mode: queued, queue: ...}`",
            );
        }
        let mut errors = Vec::new();
        let mut file_errors = Vec::new();
        let compiled = crate::fanout::compile_fanout(
            &format!("{at}/fanout"),
            f,
            self.base_dir,
            outbound,
            &mut errors,
            &mut file_errors,
        );
        for (at, message) in errors {
            self.errors.at(&at, message);
        }
        for e in file_errors {
            self.errors.other_file(e);
        }
        compiled.map(Arc::new)
    }

    #[allow(clippy::too_many_arguments)]
    fn routes(
        &mut self,
        spec: &PolicyFileSpec,
        upstream_index: &HashMap<String, usize>,
        policies: &BTreeMap<String, Arc<NamedPolicy>>,
        channels: &Channels,
        limits: Limits,
        queues: &[Arc<Queue>],
        outbound: Option<&crate::fanout::Outbound>,
    ) -> (Vec<Arc<Route>>, Option<Router>) {
        let mut routes = Vec::with_capacity(spec.routes.len());
        let mut keys_owned: Vec<(usize, Option<String>, String, Vec<Method>)> = Vec::new();
        let mut seen = HashMap::new();
        for (i, r) in spec.routes.iter().enumerate() {
            let at = format!("/routes/{i}");
            if let Some(first) = seen.insert(r.name.clone(), i) {
                self.errors.at(
                    &format!("{at}/name"),
                    format!(
                        "duplicate route name {:?} (first used by route {first})",
                        r.name
                    ),
                );
            }
            let mut methods = Vec::with_capacity(r.methods.len());
            let mut method_set = HashSet::new();
            for (j, m) in r.methods.iter().enumerate() {
                let valid = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
                match Method::from_bytes(m.as_bytes()) {
                    Ok(method) if valid => {
                        if !method_set.insert(method.clone()) {
                            self.errors.at(
                                &format!("{at}/methods/{j}"),
                                format!("method {m} is listed twice"),
                            );
                        }
                        methods.push(method);
                    }
                    _ => self.errors.at(
                        &format!("{at}/methods/{j}"),
                        format!("{m:?} is not an HTTP method (use upper case, e.g. POST)"),
                    ),
                }
            }
            let params = match route::template_params(&r.path) {
                Ok(p) => p,
                Err(msg) => {
                    self.errors.at(&format!("{at}/path"), msg);
                    Vec::new()
                }
            };
            let channel_param = params.iter().any(|p| p == "channel");
            if channel_param && channels.names().is_empty() {
                self.errors.at(
                    &format!("{at}/path"),
                    "the path captures {channel} but the file declares no channels",
                );
            }
            let upstream = match upstream_index.get(&r.upstream) {
                Some(u) => *u,
                None => {
                    let known: Vec<&str> = upstream_index.keys().map(String::as_str).collect();
                    self.errors.at(
                        &format!("{at}/upstream"),
                        format!(
                            "route {:?} names upstream {:?}, which is not defined (defined: {})",
                            r.name,
                            r.upstream,
                            list(&known)
                        ),
                    );
                    0
                }
            };
            let upstream_path = r.upstream_path.as_ref().and_then(|t| {
                PathTemplate::parse(t, &params)
                    .map_err(|msg| self.errors.at(&format!("{at}/upstream_path"), msg))
                    .ok()
            });
            let mut chain = Vec::with_capacity(r.policies.len());
            for (j, name) in r.policies.iter().enumerate() {
                if r.policies[..j].contains(name) {
                    self.errors.at(
                        &format!("{at}/policies/{j}"),
                        format!("policy {name:?} is listed twice"),
                    );
                    continue;
                }
                match policies.get(name) {
                    Some(p) => chain.push(p.clone()),
                    None if spec.policies.contains_key(name) => {} // its own errors were reported
                    None => {
                        let known: Vec<&str> = spec.policies.keys().map(String::as_str).collect();
                        self.errors.at(
                            &format!("{at}/policies/{j}"),
                            format!("route {:?} names policy {name:?}, which is not defined (defined: {})", r.name, list(&known)),
                        );
                    }
                }
            }
            // deny by default: without a policy that authenticates a read (a signed webhook's
            // signature covers its body, not a later GET), a route's deliveries are only
            // visible to operators
            let readable = chain
                .iter()
                .any(|p| matches!(p.policy, crate::kinds::Policy::Jwt(_)));
            let delivery = self
                .delivery(&at, r, queues, spec)
                .map(|d| RouteDelivery { readable, ..d });
            let fanout = self.fanout(&at, r, outbound);
            let deprecation = r.deprecation.as_ref().and_then(|d| {
                let at = format!("{at}/deprecation");
                let sunset = if d.sunset.is_some() {
                    "/sunset"
                } else {
                    "/deprecated"
                };
                let location = self.errors.locate(&format!("{at}{sunset}"));
                crate::deprecation::compile(d, &r.name, location, self.env.clock.clone())
                    .map_err(|errors| {
                        for (field, message) in errors {
                            self.errors.at(&format!("{at}{field}"), message);
                        }
                    })
                    .ok()
                    .map(Arc::new)
            });
            keys_owned.push((i, r.host.clone(), r.path.clone(), methods));
            routes.push(Arc::new(Route {
                index: i,
                name: Arc::from(r.name.as_str()),
                upstream,
                upstream_path,
                chain: Chain::new(chain),
                max_body_bytes: r.max_body_bytes.map_or(limits.max_body_bytes, |b| b.0),
                channel_param,
                delivery,
                fanout,
                status_of: None,
                deprecation,
            }));
        }
        // each delivery route serves its deliveries' state under its own path, guarded by the
        // policies that guard reads
        let mut status_routes = Vec::new();
        for route in &routes {
            if !route.delivery.as_ref().is_some_and(|d| d.readable) {
                continue;
            }
            let Some(r) = spec.routes.get(route.index) else {
                continue;
            };
            let index = routes.len() + status_routes.len();
            let guards: Vec<Arc<NamedPolicy>> = route
                .chain
                .policies()
                .iter()
                .filter(|p| p.policy.guards_reads())
                .cloned()
                .collect();

            let path = format!(
                "{}/deliveries/{{delivery_id}}",
                r.path.trim_end_matches('/')
            );
            keys_owned.push((index, r.host.clone(), path, vec![Method::GET]));
            status_routes.push(Arc::new(Route {
                index,
                name: Arc::from(format!("{}.deliveries", route.name)),
                upstream: route.upstream,
                upstream_path: None,
                chain: Chain::new(guards),
                max_body_bytes: 0,
                channel_param: route.channel_param,
                delivery: None,
                fanout: None,
                status_of: Some(route.index),
                // a deprecated route's delivery reads stay until its deliveries are done
                deprecation: None,
            }));
        }
        routes.extend(status_routes);
        let keys: Vec<RouteKey<'_>> = keys_owned
            .iter()
            .filter(|(i, _, path, _)| {
                route::template_params(path).is_ok() && routes.get(*i).is_some()
            })
            .map(|(i, host, path, methods)| RouteKey {
                route: *i,
                host: host.as_deref(),
                path,
                methods,
            })
            .collect();
        let names: Vec<&str> = routes.iter().map(|r| &*r.name).collect();
        let router = match Router::build(&keys, &names) {
            Ok(r) => Some(r),
            Err(conflicts) => {
                for c in conflicts {
                    // a conflict of a delivery-state route is its delivery route's
                    let at = match routes.get(c.route).and_then(|r| r.status_of) {
                        Some(of) => format!("/routes/{of}/delivery"),
                        None => format!("/routes/{}/path", c.route),
                    };
                    self.errors.at(&at, c.message);
                }
                None
            }
        };
        (routes, router)
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Parses `host:port` or `[v6]:port`.
pub fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let bad =
        || format!("endpoint {text:?} must be host:port, e.g. 127.0.0.1:9000 or erp.internal:443");
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        let (h, p) = text.rsplit_once(':').ok_or_else(bad)?;
        if h.contains(':') {
            return Err(bad());
        }
        (h, p)
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resolved;
    use crate::secret::tests::FakeEnv;

    fn env_with(pairs: &[(&str, &str)]) -> CompileEnv {
        CompileEnv {
            secrets: Arc::new(FakeEnv(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )),
            ..CompileEnv::default()
        }
    }

    fn compile(yaml: &str) -> Result<PolicySet, Vec<String>> {
        compile_str(Path::new("p.yaml"), yaml, &env_with(&[("KEY", "v")]), None)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    const BASE: &str = "version: 1\nchannels: {amazon: {}, shopify: {}}\nupstreams:\n  erp:\n    endpoints: [\"127.0.0.1:9000\", \"[::1]:9001\", \"erp.internal:443\"]\n    request_headers: {X-Key: \"k-${KEY}\"}\npolicies:\n  json: {kind: json_body}\n";

    /// A file with an `outbound` section over the shipped mappings and a fan-out route, its
    /// SKU file in `dir`.
    fn outbound_file(dir: &Path, outbound: &str, route: &str, skus: &str) -> (PathBuf, String) {
        let mappings = Path::new(env!("CARGO_MANIFEST_DIR")).join("../transforms/mappings");
        std::fs::write(dir.join("skus.yaml"), skus).unwrap();
        let file = dir.join("p.yaml");
        let text = format!(
            "version: 1\nchannels: {{amazon: {{}}, shopify: {{}}}}\nupstreams:\n  erp: {{endpoints: [\"127.0.0.1:9000\"]}}\n  amz: {{endpoints: [\"127.0.0.1:9001\"]}}\nqueues:\n  out: {{path: {}/d.redb}}\noutbound:\n  mappings: {}\n  marketplaces:\n{outbound}routes:\n{route}",
            dir.display(),
            mappings.display()
        );
        (file, text)
    }

    fn compile_at(file: &Path, text: &str) -> Result<PolicySet, Vec<String>> {
        compile_str(file, text, &env_with(&[]), None)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_transform_version_uses_the_channels_versioned_mapping_and_a_missing_one_is_an_error() {
        let mappings = Path::new(env!("CARGO_MANIFEST_DIR")).join("../transforms/mappings");
        let file = |version: &str| {
            format!(
                "{BASE}  t: {{kind: transform, mappings: {}, document: order, version: {version}}}\nroutes:\n  - {{name: o, methods: [POST], path: \"/c/{{channel}}/orders\", upstream: erp, policies: [t]}}\n",
                mappings.display()
            )
        };
        let set = compile(&file("v1")).unwrap();
        let crate::kinds::Policy::Transform(t) = &set.policies["t"].policy else {
            panic!("a transform");
        };
        let name = |i: usize| t.channel_mapping(i).map(|m| m.name().to_owned());
        // channels in name order: amazon has order.v1.jq, shopify only order.jq
        assert_eq!(name(0).as_deref(), Some("amazon/order.v1"));
        assert_eq!(name(1).as_deref(), Some("shopify/order"));
        let errors = compile(&file("v9")).unwrap_err().join("\n");
        assert!(
            errors.contains("p.yaml:9:")
                && errors.contains("no channel has a \"order.v9\" mapping"),
            "{errors}"
        );
    }

    #[test]
    fn deprecation_dates_and_links_are_checked_where_they_are_written() {
        let text = format!(
            "{BASE}routes:\n  - name: old\n    methods: [GET]\n    path: /old\n    upstream: erp\n    deprecation:\n      deprecated: 2026-13-01\n      sunset: tomorrow\n      link: docs.example.com/v2\n"
        );
        let errors = compile(&text).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("p.yaml:15:19: ") && errors[0].contains("no such date"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("p.yaml:16:15: ") && errors[1].contains("not an RFC 3339"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with("p.yaml:17:13: ") && errors[2].contains("absolute http(s) URL"),
            "{errors:?}"
        );
        let ok = text
            .replace("2026-13-01", "2026-06-30")
            .replace("tomorrow", "2099-12-31T00:00:00+01:00")
            .replace("docs.example.com", "https://docs.example.com");
        let set = compile(&ok).unwrap();
        let d = set.routes[0].deprecation.as_ref().unwrap();
        assert_eq!(d.sunset_at, Some(4_102_358_400 - 3600));
        assert!(set.warnings().is_empty());
    }

    #[test]
    fn a_fanout_route_compiles_with_its_marketplaces_and_sku_file() {
        let dir = std::env::temp_dir().join(format!("fanout-ok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (file, text) = outbound_file(
            &dir,
            "    amazon: {upstream: amz, params: {seller_id: S}, operations: {inventory: {limit: {rate: 5, per: 1s, burst: 5}}}}\n",
            "  - {name: inv, methods: [POST], path: /inv, upstream: erp, delivery: {mode: queued, queue: out}, fanout: {document: inventory_adjustment, to: [listing_channels], skus: skus.yaml}}\n",
            "SKU-1:\n  amazon: {product_type: SHIRT}\n",
        );
        let set = compile_at(&file, &text).unwrap();
        let outbound = set.outbound.as_ref().unwrap();
        let amazon = outbound.marketplace("amazon").unwrap();
        assert!(amazon.operation("inventory").unwrap().limit.is_some());
        assert!(
            amazon.operation("shipment").is_none(),
            "only the listed operations"
        );
        let fanout = set.routes[0].fanout.as_ref().unwrap();
        assert_eq!(fanout.skus.channels("SKU-1").len(), 1);
        assert!(fanout.skus.channels("SKU-2").is_empty());
        assert_eq!(outbound.mappings().len(), 1);
    }

    #[test]
    fn fanout_mistakes_are_reported_where_they_are_even_in_the_sku_file() {
        let dir = std::env::temp_dir().join(format!("fanout-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (file, text) = outbound_file(
            &dir,
            "    amazon: {upstream: nowhere, operations: {inventory: {}}}\n    shopify: {upstream: amz, operations: {refund: {}}}\n",
            "  - {name: inv, methods: [POST], path: /inv, upstream: erp, fanout: {document: shipment, to: [listing_channels]}}\n",
            "SKU-1:\n  amazon: {}\n  walmart: {}\nSKU-2: [1]\n",
        );
        let errors = compile_at(&file, &text).unwrap_err().join("\n");
        assert!(
            errors.contains("upstream \"nowhere\" is not defined"),
            "{errors}"
        );
        assert!(
            errors.contains("no outbound operation is called \"refund\""),
            "{errors}"
        );
        assert!(
            errors.contains("it needs `delivery: {mode: queued"),
            "{errors}"
        );
        assert!(
            errors.contains("use it with document: inventory_adjustment"),
            "{errors}"
        );
        assert!(
            errors.contains("listing_channels needs a `skus` file"),
            "{errors}"
        );

        // the SKU file's own mistakes point at its lines
        let route = "  - {name: inv, methods: [POST], path: /inv, upstream: erp, delivery: {mode: queued, queue: out}, fanout: {document: inventory_adjustment, to: [listing_channels], skus: skus.yaml}}\n";
        let (file, text) = outbound_file(
            &dir,
            "    amazon: {upstream: amz, operations: {inventory: {}}}\n",
            route,
            "SKU-1:\n  amazon: {}\n  walmart: {}\nSKU-2: [1]\n",
        );
        let errors = compile_at(&file, &text).unwrap_err();
        let skus = dir.join("skus.yaml").display().to_string();
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{skus}:3:3:"))
                && e.contains("\"walmart\" has no marketplace")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{skus}:4:"))
                && e.contains("expected a map of channels")),
            "{errors:?}"
        );
    }

    #[test]
    fn a_valid_file_compiles_into_routes_upstreams_and_chains() {
        let set = compile(&format!(
            "{BASE}routes:\n  - {{name: orders, methods: [POST], path: \"/channels/{{channel}}/orders\", upstream: erp, policies: [json], max_body_bytes: 2MiB}}\n  - {{name: docs, methods: [GET], path: \"/docs/{{*rest}}\", upstream: erp}}\n"
        ))
        .unwrap();
        assert_eq!(set.routes.len(), 2);
        assert!(set.routes[0].chain.needs_body());
        assert!(!set.routes[1].chain.needs_body());
        assert_eq!(set.routes[0].max_body_bytes, 2 * 1024 * 1024);
        assert_eq!(
            set.routes[1].max_body_bytes,
            1024 * 1024,
            "the default limit"
        );
        let up = &set.upstreams[0];
        assert_eq!(up.endpoints[1].host, "::1");
        assert_eq!(up.endpoints[1].to_string(), "[::1]:9001");
        assert_eq!(up.request_headers[0].1, "k-v");
        assert!(
            up.request_headers[0].1.is_sensitive(),
            "secret-bearing headers are marked sensitive"
        );
        assert!(set.version.hash.starts_with("sha256:"));

        match set.resolve(&Method::POST, None, "/channels/amazon/orders") {
            Resolved::Route { route, channel, .. } => {
                assert_eq!(&*route.name, "orders");
                assert_eq!(channel.map(|c| c.name), Some(Arc::from("amazon")));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            set.resolve(&Method::POST, None, "/channels/etsy/orders"),
            Resolved::UnknownChannel
        ));
        assert!(matches!(
            set.resolve(&Method::GET, None, "/channels/amazon/orders"),
            Resolved::MethodNotAllowed(_)
        ));
        assert!(matches!(
            set.resolve(&Method::GET, None, "/docs/../x"),
            Resolved::BadPath
        ));
        assert!(matches!(
            set.resolve(&Method::GET, None, "/nothing"),
            Resolved::NotFound
        ));
    }

    #[test]
    fn a_channel_parameter_needs_declared_channels() {
        let yaml = "version: 1\nupstreams: {erp: {endpoints: [\"127.0.0.1:1\"]}}\nroutes:\n  - {name: r, methods: [GET], path: \"/c/{channel}\", upstream: erp}\n";
        let errs = compile(yaml).unwrap_err();
        assert_eq!(
            errs,
            ["p.yaml:4:37: the path captures {channel} but the file declares no channels"]
        );
    }

    #[test]
    fn listener_addresses_and_files_are_checked() {
        let yaml = "version: 1\nlisteners:\n  http: localhost\n  https: {address: \"127.0.0.1:0\", cert: missing.crt, key: missing.key}\nupstreams: {erp: {endpoints: [\"127.0.0.1:1\"]}}\nroutes: []\n";
        let errs = compile(yaml).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].starts_with("p.yaml:3:9: listener address \"localhost\" must be ip:port"),
            "{errs:?}"
        );
        assert!(errs[1].starts_with("p.yaml:4:41: cannot read"), "{errs:?}");
    }

    #[test]
    fn a_literal_admin_token_is_an_error_at_its_line() {
        let yaml = "version: 1\nlisteners:\n  admin: 127.0.0.1:0\n  admin_auth: {token: not-a-reference-0123456789}\nupstreams: {erp: {endpoints: [\"127.0.0.1:1\"]}}\nroutes: []\n";
        let errs = compile(yaml).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "p.yaml:4:23: the admin token must be a ${ENV_VAR} or file: reference"
            ),
            "{errs:?}"
        );
        assert!(!errs[0].contains("not-a-reference"), "{errs:?}");
    }

    #[test]
    fn timeouts_must_be_consistent() {
        let yaml = "version: 1\nupstreams: {erp: {endpoints: [\"127.0.0.1:1\"], connect_timeout: 5s, total_timeout: 1s}}\nroutes: []\n";
        let errs = compile(yaml).unwrap_err();
        assert!(
            errs[0].contains("total_timeout is shorter than connect_timeout"),
            "{errs:?}"
        );
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(parse_endpoint("a:1").unwrap().to_string(), "a:1");
        for bad in ["a", ":80", "a:0", "a:99999", "::1:80", "[::1]"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }
}
