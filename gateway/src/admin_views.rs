//! The admin listener's JSON views of the serving state, shared by the admin endpoints
//! (`/config`, `/upstreams`) and the status page.

use std::time::SystemTime;

use serde_json::json;

use crate::forward::pool::now;
use crate::snapshot::ConfigStore;
use policies::resilience::breaker::BreakerState;

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The `/config` document: which policy set serves (version, routes, upstreams, policies)
/// and how the last reload went.
pub fn config(store: &ConfigStore) -> serde_json::Value {
    let snap = store.current();
    let set = &snap.set;
    let routes: Vec<_> = set
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": &*r.name,
                "upstream": set.upstreams.get(r.upstream).map(|u| &*u.name),
                "policies": r.chain.policies().iter().map(|p| &*p.name).collect::<Vec<_>>(),
                "buffered": r.chain.needs_body(),
                "max_body_bytes": r.max_body_bytes,
            })
        })
        .collect();
    let upstreams: Vec<_> = set
        .upstreams
        .iter()
        .map(|u| {
            json!({
                "name": &*u.name,
                "endpoints": u.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "tls": u.transport.tls,
                "http2": u.transport.http2,
            })
        })
        .collect();
    let last_reload = store
        .last_reload()
        .map(|r| json!({ "at": rfc3339(r.at), "ok": r.ok, "errors": r.errors }));
    json!({
        "version": {
            "hash": set.version.hash,
            "loaded_at": rfc3339(set.version.loaded_at),
            "file": set.version.file.display().to_string(),
        },
        "summary": set.summary(),
        "channels": set.channels.names().iter().map(|c| &**c).collect::<Vec<_>>(),
        "routes": routes,
        "upstreams": upstreams,
        "policies": set.policies.keys().collect::<Vec<_>>(),
        "last_reload": last_reload,
    })
}

/// The `/upstreams` document: each upstream's endpoints with their health, ejection and circuit
/// state, and the upstream's slots and retry budget.
pub fn upstreams(store: &ConfigStore) -> serde_json::Value {
    let snap = store.current();
    let now = now();
    let list: Vec<_> = snap
        .pools
        .iter()
        .map(|pool| {
            let r = &pool.upstream.resilience;
            let endpoints: Vec<_> = pool
                .endpoints()
                .iter()
                .map(|ep| {
                    let breaker = ep.breaker_state(now);
                    json!({
                        "address": &*ep.label,
                        "healthy": ep.health.is_healthy(),
                        "ejected": ep.ejection.is_ejected(now),
                        "ejected_for_ms": ep.ejection.ejected_for(now).map(|d| d.as_millis() as u64),
                        "ejections": ep.ejection.times(),
                        "circuit": breaker.name(),
                        "circuit_retry_after_ms": match breaker {
                            BreakerState::Open { retry_after } => Some(retry_after.as_millis() as u64),
                            _ => None,
                        },
                        "in_flight": ep.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                        "attempts": ep.metrics.attempts.get(),
                    })
                })
                .collect();
            let budget = pool.budget().map(|b| {
                let (used, left) = b.usage(now);
                json!({ "retries_in_window": used, "retries_left": left })
            });
            let slots = pool
                .slots_in_use()
                .map(|(used, limit)| json!({ "in_use": used, "limit": limit, "waiting": pool.metrics.queued.get() }));
            json!({
                "name": &*pool.upstream.name,
                "in_flight": pool.metrics.in_flight.get(),
                "max_in_flight": slots,
                "health_check": r.health_check.is_some(),
                "outlier_detection": r.outlier_detection.enabled,
                "circuit_breaker": r.circuit_breaker.is_some(),
                "retry_budget": budget,
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({ "upstreams": list })
}
