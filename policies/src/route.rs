//! Route matching: method, path template (`/channels/{channel}/orders`) and optional host,
//! compiled once into radix trees (matchit); plus the upstream path templates.
//!
//! This sits in `policies` rather than `gateway` (where DESIGN.md first put it) because the
//! route table is part of the compiled policy set: `gateway check` must report bad templates
//! and conflicts offline, and it is unit-testable without Pingora.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderValue, Method};

/// Path parameters captured by a route match, in template order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams {
    entries: Vec<(Arc<str>, Box<str>)>,
}

impl PathParams {
    /// The raw (still percent-encoded) value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| &**v)
    }

    /// All parameters as (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (&**n, &**v))
    }

    /// Builds parameters by hand (tests, benches).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        PathParams {
            entries: pairs
                .iter()
                .map(|(n, v)| (Arc::from(*n), Box::from(*v)))
                .collect(),
        }
    }
}

/// The parameter names of a path template, checking its syntax.
pub fn template_params(template: &str) -> Result<Vec<String>, String> {
    if !template.starts_with('/') {
        return Err(format!("path template {template:?} must start with '/'"));
    }
    let mut names = Vec::new();
    let segments: Vec<&str> = template[1..].split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if seg.contains(['{', '}']) {
            let inner = seg
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .ok_or_else(|| {
                    format!("in {template:?}: a parameter must be a whole segment, like {{name}}")
                })?;
            let (catch_all, name) = match inner.strip_prefix('*') {
                Some(n) => (true, n),
                None => (false, inner),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "in {template:?}: invalid parameter name {name:?} (letters, digits, _)"
                ));
            }
            if catch_all && i + 1 != segments.len() {
                return Err(format!(
                    "in {template:?}: {{*{name}}} must be the last segment"
                ));
            }
            if names.iter().any(|n| n == name) {
                return Err(format!("in {template:?}: parameter {name:?} appears twice"));
            }
            names.push(name.to_owned());
        } else if *seg == "." || *seg == ".." {
            return Err(format!("in {template:?}: dot segments are not allowed"));
        }
    }
    Ok(names)
}

/// Whether a request path has a `.` or `..` segment, plain or percent-encoded. Such paths are
/// refused rather than normalized, so that a parameter can never walk the upstream path.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        let mut dots = 0;
        let mut rest = seg.as_bytes();
        if rest.is_empty() {
            return false;
        }
        while !rest.is_empty() {
            if rest[0] == b'.' {
                rest = &rest[1..];
            } else if rest.len() >= 3
                && rest[0] == b'%'
                && rest[1] == b'2'
                && (rest[2] | 0x20) == b'e'
            {
                rest = &rest[3..];
            } else {
                return false;
            }
            dots += 1;
        }
        dots <= 2
    })
}

/// An upstream path template such as `/erp/v1/orders?channel={channel}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    parts: Vec<TemplatePart>,
    has_query: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Literal(String),
    Param(Arc<str>),
}

impl PathTemplate {
    /// Parses a template that may use the parameters in `available`.
    pub fn parse(text: &str, available: &[String]) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("upstream path {text:?} must start with '/'"));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("upstream path {text:?}: unclosed '{{'"))?;
            let raw = &rest[open + 1..open + close];
            let name = raw.strip_prefix('*').unwrap_or(raw);
            if !available.iter().any(|a| a == name) {
                return Err(format!(
                    "upstream path {text:?} uses {{{name}}}, which the route path does not capture"
                ));
            }
            parts.push(TemplatePart::Param(Arc::from(name)));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("upstream path {text:?}: unmatched '}}'"));
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Literal(rest.to_owned()));
        }
        Ok(PathTemplate {
            parts,
            has_query: text.contains('?'),
        })
    }

    /// The upstream path and query for a request's parameters and query string.
    pub fn render(&self, params: &PathParams, query: Option<&str>) -> String {
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            match part {
                TemplatePart::Literal(l) => out.push_str(l),
                TemplatePart::Param(name) => out.push_str(params.get(name).unwrap_or("")),
            }
        }
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            out.push(if self.has_query { '&' } else { '?' });
            out.push_str(q);
        }
        out
    }
}

/// The outcome of looking a request up.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A route takes it.
    Found {
        /// Index of the route in the policy set.
        route: usize,
        /// Captured parameters.
        params: PathParams,
    },
    /// The path is known but not for this method.
    MethodNotAllowed {
        /// The `Allow` header value.
        allow: &'a HeaderValue,
    },
    /// No route has this path.
    NotFound,
}

#[derive(Debug)]
struct MethodTable {
    entries: Vec<(Method, usize)>,
    allow: HeaderValue,
    params: Arc<[Arc<str>]>,
}

/// Routes sharing a table entry: (host, path template).
type GroupKey = (Option<String>, String);

/// The compiled route table.
#[derive(Debug, Default)]
pub struct Router {
    by_host: HashMap<String, matchit::Router<MethodTable>>,
    any_host: matchit::Router<MethodTable>,
}

/// A route as the router sees it.
pub struct RouteKey<'a> {
    /// Index of the route.
    pub route: usize,
    /// Host to match, if any.
    pub host: Option<&'a str>,
    /// Path template.
    pub path: &'a str,
    /// Methods.
    pub methods: &'a [Method],
}

/// An error building the route table, naming the routes involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConflict {
    /// The route the error is reported at.
    pub route: usize,
    /// What is wrong.
    pub message: String,
}

impl Router {
    /// Builds the table; every conflict is reported.
    pub fn build(keys: &[RouteKey<'_>], names: &[&str]) -> Result<Router, Vec<RouteConflict>> {
        let mut errors = Vec::new();
        // One method table per (host, path): matchit keeps one value per template.
        let mut groups: Vec<(GroupKey, Vec<(Method, usize)>)> = Vec::new();
        for key in keys {
            let host = key.host.map(normalize_host);
            let slot = (host, key.path.to_owned());
            let group = match groups.iter_mut().find(|(k, _)| *k == slot) {
                Some((_, g)) => g,
                None => {
                    groups.push((slot, Vec::new()));
                    match groups.last_mut() {
                        Some((_, g)) => g,
                        None => continue,
                    }
                }
            };
            for m in key.methods {
                if let Some((_, other)) = group.iter().find(|(gm, _)| gm == m) {
                    errors.push(RouteConflict {
                        route: key.route,
                        message: format!(
                            "route {:?} and route {:?} both take {m} {}",
                            names.get(key.route).copied().unwrap_or("?"),
                            names.get(*other).copied().unwrap_or("?"),
                            key.path
                        ),
                    });
                } else {
                    group.push((m.clone(), key.route));
                }
            }
        }
        let mut router = Router::default();
        for ((host, path), entries) in groups {
            let Some(&(_, first_route)) = entries.first() else {
                continue;
            };
            let params: Arc<[Arc<str>]> = template_params(&path)
                .unwrap_or_default()
                .into_iter()
                .map(Arc::from)
                .collect();
            let allow = entries
                .iter()
                .map(|(m, _)| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let table = MethodTable {
                allow: HeaderValue::from_str(&allow).unwrap_or(HeaderValue::from_static("")),
                entries,
                params,
            };
            let tree = match host {
                Some(h) => router.by_host.entry(h).or_default(),
                None => &mut router.any_host,
            };
            if let Err(e) = tree.insert(path.clone(), table) {
                errors.push(RouteConflict {
                    route: first_route,
                    message: format!("path {path:?} conflicts with another route: {e}"),
                });
            }
        }
        if errors.is_empty() {
            Ok(router)
        } else {
            Err(errors)
        }
    }

    /// Finds the route for a request. `host` is the `Host` header (a port is ignored).
    pub fn lookup<'a>(&'a self, method: &Method, host: Option<&str>, path: &str) -> Lookup<'a> {
        let mut allow = None;
        let host_tree = host.and_then(|h| self.by_host.get(&normalize_host(h)));
        for tree in host_tree.into_iter().chain(std::iter::once(&self.any_host)) {
            let Ok(m) = tree.at(path) else { continue };
            let table = m.value;
            if let Some((_, route)) = table.entries.iter().find(|(tm, _)| tm == method) {
                let mut entries = Vec::with_capacity(table.params.len());
                for name in table.params.iter() {
                    if let Some(v) = m.params.get(&**name) {
                        entries.push((name.clone(), Box::from(v)));
                    }
                }
                return Lookup::Found {
                    route: *route,
                    params: PathParams { entries },
                };
            }
            allow.get_or_insert(&table.allow);
        }
        match allow {
            Some(allow) => Lookup::MethodNotAllowed { allow },
            None => Lookup::NotFound,
        }
    }
}

fn normalize_host(host: &str) -> String {
    let host = match host.rsplit_once(':') {
        // keep IPv6 literals like [::1] intact; strip a trailing port
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(Option<&str>, &str, &[Method])]) -> Router {
        let keys: Vec<RouteKey<'_>> = routes
            .iter()
            .enumerate()
            .map(|(i, (host, path, methods))| RouteKey {
                route: i,
                host: *host,
                path,
                methods,
            })
            .collect();
        let names: Vec<String> = (0..routes.len()).map(|i| format!("r{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Router::build(&keys, &names).unwrap()
    }

    #[test]
    fn matches_method_path_and_params() {
        let r = router(&[
            (None, "/channels/{channel}/orders", &[Method::POST]),
            (None, "/channels/{channel}/orders", &[Method::GET]),
            (None, "/files/{*rest}", &[Method::GET]),
        ]);
        match r.lookup(&Method::POST, None, "/channels/amazon/orders") {
            Lookup::Found { route, params } => {
                assert_eq!(route, 0);
                assert_eq!(params.get("channel"), Some("amazon"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.lookup(&Method::GET, None, "/channels/amazon/orders"),
            Lookup::Found { route: 1, .. }
        ));
        match r.lookup(&Method::GET, None, "/files/a/b/c") {
            Lookup::Found { params, .. } => assert_eq!(params.get("rest"), Some("a/b/c")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_method_is_405_with_allow_and_unknown_path_is_404() {
        let r = router(&[(None, "/orders", &[Method::POST, Method::PUT])]);
        match r.lookup(&Method::DELETE, None, "/orders") {
            Lookup::MethodNotAllowed { allow } => assert_eq!(allow, "POST, PUT"),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.lookup(&Method::POST, None, "/nope"), Lookup::NotFound);
        assert_eq!(
            r.lookup(&Method::POST, None, "/orders/extra"),
            Lookup::NotFound
        );
    }

    #[test]
    fn host_routes_win_and_fall_back_to_any_host() {
        let r = router(&[
            (Some("api.example.com"), "/orders", &[Method::POST]),
            (None, "/orders", &[Method::POST]),
            (None, "/health", &[Method::GET]),
        ]);
        assert!(matches!(
            r.lookup(&Method::POST, Some("API.example.com:8443"), "/orders"),
            Lookup::Found { route: 0, .. }
        ));
        assert!(matches!(
            r.lookup(&Method::POST, Some("other.example.com"), "/orders"),
            Lookup::Found { route: 1, .. }
        ));
        assert!(matches!(
            r.lookup(&Method::GET, Some("api.example.com"), "/health"),
            Lookup::Found { route: 2, .. }
        ));
    }

    #[test]
    fn overlapping_routes_are_reported() {
        let keys = [
            RouteKey {
                route: 0,
                host: None,
                path: "/a",
                methods: &[Method::POST],
            },
            RouteKey {
                route: 1,
                host: None,
                path: "/a",
                methods: &[Method::POST],
            },
            RouteKey {
                route: 2,
                host: None,
                path: "/b/{x}",
                methods: &[Method::GET],
            },
            RouteKey {
                route: 3,
                host: None,
                path: "/b/{y}",
                methods: &[Method::GET],
            },
        ];
        let errs = Router::build(&keys, &["one", "two", "three", "four"]).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0]
                .message
                .contains("\"two\" and route \"one\" both take POST /a")
        );
        assert_eq!(errs[1].route, 3);
    }

    #[test]
    fn templates_are_checked() {
        assert_eq!(
            template_params("/channels/{channel}/orders").unwrap(),
            ["channel"]
        );
        assert!(template_params("channels").is_err());
        assert!(template_params("/a/x{y}").is_err());
        assert!(template_params("/a/{*rest}/b").is_err());
        assert!(template_params("/a/{x}/{x}").is_err());
        assert!(template_params("/a/../b").is_err());
    }

    #[test]
    fn upstream_paths_render_params_and_keep_the_query() {
        let avail = vec!["channel".to_owned()];
        let t = PathTemplate::parse("/erp/v1/orders?source={channel}", &avail).unwrap();
        let p = PathParams::from_pairs(&[("channel", "amazon")]);
        assert_eq!(t.render(&p, None), "/erp/v1/orders?source=amazon");
        assert_eq!(
            t.render(&p, Some("a=1")),
            "/erp/v1/orders?source=amazon&a=1"
        );
        let t = PathTemplate::parse("/erp/{channel}", &avail).unwrap();
        assert_eq!(t.render(&p, Some("a=1")), "/erp/amazon?a=1");
        assert!(PathTemplate::parse("/erp/{nope}", &avail).is_err());
        assert!(PathTemplate::parse("/erp/{channel", &avail).is_err());
    }

    #[test]
    fn dot_segments_are_detected_plain_and_encoded() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/%2e%2E/b",
            "/a/.%2e",
            "/a/%2E",
        ] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for good in ["/a/b", "/a/.well-known", "/a/...", "/a/b.json", "/"] {
            assert!(!has_dot_segment(good), "{good}");
        }
    }
}
