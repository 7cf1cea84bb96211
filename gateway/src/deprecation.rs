//! Calls to deprecated routes: `gateway_deprecated_requests_total{route,channel}` and, per
//! route, the clients still calling it (a bounded space-saving top-K, in memory), which the
//! admin listener shows at `GET /deprecations` so a platform team knows who must still move
//! before the sunset.
//!
//! Only requests whose route has a `deprecation:` get here (completion checks one `Option`),
//! so the lock below is never taken on the path of a route that is not deprecated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use policies::deprecation::rfc3339;
use policies::model::PolicySet;
use policies::spec::AfterSunset;
use prometheus::{IntCounterVec, Opts, Registry};
use serde_json::json;

use policies::metrics::NO_CHANNEL;

/// Clients kept per deprecated route. Space-saving: a client that is not among them replaces
/// the one counted least, inheriting its count as an over-estimate bound (`error`), so every
/// client called more than 1/K of the route's calls is listed.
pub const TOP_CLIENTS: usize = 20;

/// The metric and the per-route top clients.
#[derive(Debug)]
pub struct DeprecationMetrics {
    /// `gateway_deprecated_requests_total{route,channel}`.
    pub requests: IntCounterVec,
    routes: Mutex<HashMap<Arc<str>, RouteCalls>>,
}

/// The calls of one deprecated route since the gateway started.
#[derive(Debug, Default, Clone)]
struct RouteCalls {
    total: u64,
    refused: u64,
    top: Vec<ClientCalls>,
}

/// One client among a route's top clients.
#[derive(Debug, Clone)]
struct ClientCalls {
    client: Arc<str>,
    channel: Arc<str>,
    count: u64,
    /// How much of `count` may belong to clients it replaced (space-saving's bound).
    error: u64,
    last_seen: i64,
}

impl DeprecationMetrics {
    /// Creates and registers the metric.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_deprecated_requests_total",
                "Requests to deprecated routes (before and after their sunset), by route and channel.",
            ),
            &["route", "channel"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        Ok(DeprecationMetrics {
            requests,
            routes: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one call of a deprecated route by `client` (its caller id, or `ip:<address>`
    /// when unauthenticated); `refused`: answered 410 after the sunset.
    pub fn record(
        &self,
        route: &Arc<str>,
        channel: Option<&Arc<str>>,
        client: &str,
        refused: bool,
        now: i64,
    ) {
        let channel_label = channel.map_or(NO_CHANNEL, |c| &**c);
        self.requests
            .with_label_values(&[&**route, channel_label])
            .inc();
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let calls = routes.entry(route.clone()).or_default();
        calls.total += 1;
        calls.refused += u64::from(refused);
        let channel: Arc<str> = channel.cloned().unwrap_or_else(|| Arc::from(NO_CHANNEL));
        if let Some(c) = calls
            .top
            .iter_mut()
            .find(|c| &*c.client == client && c.channel == channel)
        {
            c.count += 1;
            c.last_seen = now;
            return;
        }
        let entry = ClientCalls {
            client: Arc::from(client),
            channel,
            count: 1,
            error: 0,
            last_seen: now,
        };
        if calls.top.len() < TOP_CLIENTS {
            calls.top.push(entry);
        } else if let Some(min) = calls.top.iter_mut().min_by_key(|c| c.count) {
            *min = ClientCalls {
                count: min.count + 1,
                error: min.count,
                ..entry
            };
        }
    }

    /// The `/deprecations` document: every deprecated route of `set` with its dates, link,
    /// state, calls and top clients (most calls first).
    pub fn view(&self, set: &PolicySet) -> serde_json::Value {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let list: Vec<_> = set
            .routes
            .iter()
            .filter_map(|r| r.deprecation.as_ref().map(|d| (r, d)))
            .map(|(r, d)| {
                let calls = routes.get(&r.name).cloned().unwrap_or_default();
                let mut top = calls.top;
                top.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen.cmp(&a.last_seen)));
                let state = match (d.sunset_passed(), d.after_sunset) {
                    (false, _) => "deprecated",
                    (true, AfterSunset::Refuse) => "sunset_refused",
                    (true, AfterSunset::Serve) => "sunset_served",
                };
                json!({
                    "route": &*r.name,
                    "deprecated": rfc3339(d.deprecated_at),
                    "sunset": d.sunset_at.map(rfc3339),
                    "link": d.link,
                    "after_sunset": match d.after_sunset {
                        AfterSunset::Refuse => "refuse",
                        AfterSunset::Serve => "serve",
                    },
                    "state": state,
                    "calls": calls.total,
                    "refused": calls.refused,
                    "top_clients": top.iter().map(|c| json!({
                        "client": &*c.client,
                        "channel": &*c.channel,
                        "calls": c.count,
                        "calls_overestimate": c.error,
                        "last_seen": rfc3339(c.last_seen),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "top_clients_per_route": TOP_CLIENTS, "routes": list })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(m: &DeprecationMetrics, route: &str) -> RouteCalls {
        m.routes.lock().unwrap()[route].clone()
    }

    #[test]
    fn counts_per_route_and_channel_and_keeps_the_top_clients() {
        let m = DeprecationMetrics::register(&Registry::new()).unwrap();
        let route: Arc<str> = Arc::from("orders_v1");
        let amazon: Arc<str> = Arc::from("amazon");
        m.record(&route, Some(&amazon), "jwt:acme", false, 10);
        m.record(&route, Some(&amazon), "jwt:acme", false, 20);
        m.record(&route, None, "ip:127.0.0.1", true, 30);
        assert_eq!(
            m.requests.with_label_values(&["orders_v1", "amazon"]).get(),
            2
        );
        assert_eq!(
            m.requests.with_label_values(&["orders_v1", "none"]).get(),
            1
        );
        let c = calls(&m, "orders_v1");
        assert_eq!((c.total, c.refused, c.top.len()), (3, 1, 2));
        assert_eq!((c.top[0].count, c.top[0].last_seen), (2, 20));
    }

    #[test]
    fn the_top_clients_are_bounded_and_a_heavy_caller_stays_listed() {
        let m = DeprecationMetrics::register(&Registry::new()).unwrap();
        let route: Arc<str> = Arc::from("r");
        for i in 0..1000 {
            m.record(&route, None, &format!("jwt:one-off-{i}"), false, i);
            if i % 3 == 0 {
                m.record(&route, None, "jwt:heavy", false, i);
            }
        }
        let c = calls(&m, "r");
        assert_eq!(c.top.len(), TOP_CLIENTS);
        let heavy = c.top.iter().find(|e| &*e.client == "jwt:heavy");
        // space-saving never under-counts a listed client
        assert!(heavy.is_some_and(|h| h.count >= 334), "{:?}", c.top);
        assert_eq!(c.total, 1334);
    }
}
