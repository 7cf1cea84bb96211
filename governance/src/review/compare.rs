//! The comparison of two surfaces, route by route: paths and methods, credentials and scopes,
//! channels served, channel schemas (through `schema_diff`), mappings (through
//! `mapping_diff`), rate limits, body size, idempotency and deprecation.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::finding::{Finding, Severity};
use super::mapping_diff;
use super::schema_diff;
use crate::surface::{RateLimitSurface, RouteSurface, SchemaDoc, Security, Surface};

use Severity::{Additive, Breaking};

/// Every change from `old` to `new`, file-wide first, then route by route in the old file's
/// order (routes only in the new file last).
pub fn surfaces(old: &Surface, new: &Surface) -> Vec<Finding> {
    let mut out = Vec::new();
    channels(old, new, &mut out);
    let mut paired_new = vec![false; new.routes.len()];
    let mut pairs = Vec::new();
    // a route keeps its name across versions; a renamed one is found by its path and host
    for o in &old.routes {
        let found = new
            .routes
            .iter()
            .position(|n| n.name == o.name)
            .filter(|&i| !paired_new[i])
            .or_else(|| {
                new.routes.iter().enumerate().position(|(i, n)| {
                    !paired_new[i]
                        && !old.routes.iter().any(|x| x.name == n.name)
                        && n.host == o.host
                        && shape(&n.path) == shape(&o.path)
                })
            });
        if let Some(i) = found {
            paired_new[i] = true;
        }
        pairs.push((o, found.map(|i| &new.routes[i])));
    }
    for (o, n) in pairs {
        match n {
            Some(n) => route(old, new, o, n, &mut out),
            None => out.push(
                Finding::new(
                    Breaking,
                    "route.removed",
                    Some(&o.name),
                    None,
                    format!(
                        "route {} removed: {} {} is no longer served",
                        o.name,
                        o.methods.join(","),
                        o.path
                    ),
                )
                .values(Some(json!(o.path)), None),
            ),
        }
    }
    for (n, _) in new.routes.iter().zip(&paired_new).filter(|(_, p)| !**p) {
        out.push(
            Finding::new(
                Additive,
                "route.added",
                Some(&n.name),
                None,
                format!("route {} added: {} {}", n.name, n.methods.join(","), n.path),
            )
            .values(None, Some(json!(n.path))),
        );
    }
    out
}

/// A path template with its parameter names blanked (`/a/{x}` and `/a/{y}` match alike).
fn shape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

fn channels(old: &Surface, new: &Surface, out: &mut Vec<Finding>) {
    // only routes with a {channel} path parameter accept any declared channel
    if !old.routes.iter().any(|r| r.channel_param) && !new.routes.iter().any(|r| r.channel_param) {
        return;
    }
    for c in old.channels.iter().filter(|c| !new.channels.contains(c)) {
        out.push(
            Finding::new(
                Breaking,
                "channel.removed",
                None,
                Some(c),
                format!("channel {c} no longer declared: its {{channel}} paths answer 404"),
            )
            .values(Some(json!(c)), None),
        );
    }
    for c in new.channels.iter().filter(|c| !old.channels.contains(c)) {
        out.push(
            Finding::new(
                Additive,
                "channel.added",
                None,
                Some(c),
                format!("channel {c} declared"),
            )
            .values(None, Some(json!(c))),
        );
    }
}

fn route(
    old_file: &Surface,
    new_file: &Surface,
    o: &RouteSurface,
    n: &RouteSurface,
    out: &mut Vec<Finding>,
) {
    let name = n.name.as_str();
    let f = |severity, kind: &str, channel: Option<&str>, message: String| {
        Finding::new(severity, kind, Some(name), channel, message)
    };
    if shape(&o.path) != shape(&n.path) {
        out.push(
            f(
                Breaking,
                "route.path_changed",
                None,
                format!("route {name}: path {} is now {}", o.path, n.path),
            )
            .values(Some(json!(o.path)), Some(json!(n.path))),
        );
    }
    if o.host != n.host && n.host.is_some() {
        out.push(
            f(
                Breaking,
                "route.host_changed",
                None,
                format!(
                    "route {name}: served for host {} only (was {})",
                    n.host.as_deref().unwrap_or_default(),
                    o.host.as_deref().unwrap_or("any host")
                ),
            )
            .values(
                o.host.clone().map(Value::from),
                n.host.clone().map(Value::from),
            ),
        );
    } else if o.host != n.host {
        out.push(f(
            Additive,
            "route.host_changed",
            None,
            format!(
                "route {name}: served for any host (was only {})",
                o.host.as_deref().unwrap_or_default()
            ),
        ));
    }
    for m in o.methods.iter().filter(|m| !n.methods.contains(m)) {
        out.push(
            f(
                Breaking,
                "method.removed",
                None,
                format!("route {name}: {m} {} is no longer served", n.path),
            )
            .values(Some(json!(m)), None),
        );
    }
    for m in n.methods.iter().filter(|m| !o.methods.contains(m)) {
        out.push(
            f(
                Additive,
                "method.added",
                None,
                format!("route {name}: {m} {} now served", n.path),
            )
            .values(None, Some(json!(m))),
        );
    }
    security(name, &o.security, &n.security, out);
    let served = served_channels(old_file, new_file, o, n, out);
    schemas(name, o, n, &served, out);
    for c in &served {
        if let (Some(om), Some(nm)) = (o.mappings.get(c), n.mappings.get(c)) {
            out.extend(mapping_diff::diff(name, c, om, nm));
        }
    }
    rate_limits(name, &o.rate_limits, &n.rate_limits, out);
    if n.max_body_bytes != o.max_body_bytes {
        let lowered = n.max_body_bytes < o.max_body_bytes;
        out.push(
            f(
                if lowered { Breaking } else { Additive },
                if lowered {
                    "max_body_bytes.lowered"
                } else {
                    "max_body_bytes.raised"
                },
                None,
                format!(
                    "route {name}: largest body {} bytes (was {})",
                    n.max_body_bytes, o.max_body_bytes
                ),
            )
            .at(format!("/routes/{name}/max_body_bytes"))
            .values(Some(json!(o.max_body_bytes)), Some(json!(n.max_body_bytes))),
        );
    }
    idempotency(name, o, n, out);
    deprecation(old_file, new_file, o, n, out);
}

/// The channels a route accepts documents from in both files (all of them when it maps no
/// document); reports the ones it stops or starts mapping.
fn served_channels(
    old_file: &Surface,
    new_file: &Surface,
    o: &RouteSurface,
    n: &RouteSurface,
    out: &mut Vec<Finding>,
) -> Vec<String> {
    let name = n.name.as_str();
    let declared: BTreeSet<&String> = old_file
        .channels
        .iter()
        .filter(|c| new_file.channels.contains(c))
        .collect();
    let serves = |r: &RouteSurface, c: &str| r.document.is_none() || r.mappings.contains_key(c);
    // a route without a {channel} parameter whose credentials name the channel (a webhook
    // signature, a client certificate) is only called by those channels: the others' schemas
    // and mappings on it are never used
    let callers = |r: &RouteSurface| -> Option<Vec<String>> {
        if r.channel_param {
            return None;
        }
        let named: Vec<String> = r
            .security
            .iter()
            .flat_map(|s| match s {
                Security::WebhookSignature { channels, .. }
                | Security::ClientCert { channels, .. } => channels.clone(),
                _ => Vec::new(),
            })
            .collect();
        (!named.is_empty()).then_some(named)
    };
    let (oc, nc) = (callers(o), callers(n));
    let callable = |c: &str| match (&oc, &nc) {
        (Some(a), Some(b)) => a.iter().chain(b).any(|x| x == c),
        _ => true,
    };
    let declared: BTreeSet<&String> = declared.into_iter().filter(|c| callable(c)).collect();
    match (&o.document, &n.document) {
        (Some(a), Some(b)) if a != b => out.push(
            Finding::new(
                Breaking,
                "document.changed",
                Some(name),
                None,
                format!("route {name}: carries {b} documents (was {a})"),
            )
            .values(Some(json!(a)), Some(json!(b))),
        ),
        (None, Some(b)) => out.push(
            Finding::new(
                Breaking,
                "document.changed",
                Some(name),
                None,
                format!(
                    "route {name}: bodies are now mapped as {b} documents (channels without a mapping are answered 404)"
                ),
            )
            .values(None, Some(json!(b))),
        ),
        (Some(a), None) => out.push(
            Finding::new(
                Additive,
                "document.changed",
                Some(name),
                None,
                format!("route {name}: bodies are no longer mapped (was {a})"),
            )
            .values(Some(json!(a)), None),
        ),
        _ => {}
    }
    let mut served = Vec::new();
    for c in declared {
        match (serves(o, c), serves(n, c)) {
            (true, true) => served.push(c.clone()),
            (true, false) if n.document.is_some() && o.document == n.document => out.push(
                Finding::new(
                    Breaking,
                    "channel.removed",
                    Some(name),
                    Some(c),
                    format!("route {name}: no {c} mapping any more (answered 404)"),
                )
                .values(Some(json!(c)), None),
            ),
            (false, true) if o.document == n.document => out.push(
                Finding::new(
                    Additive,
                    "channel.added",
                    Some(name),
                    Some(c),
                    format!("route {name}: {c} documents now mapped"),
                )
                .values(None, Some(json!(c))),
            ),
            _ => {}
        }
    }
    served
}

fn security(route: &str, old: &[Security], new: &[Security], out: &mut Vec<Finding>) {
    let f = |severity, kind: &str, message: String| {
        Finding::new(severity, kind, Some(route), None, message)
    };
    let kind_of = |s: &Security| std::mem::discriminant(s);
    let describe = |s: &Security| match s {
        Security::Bearer { scopes, .. } => format!("a bearer token (scopes {scopes:?})"),
        Security::WebhookSignature { header, .. } => format!("a webhook signature in {header}"),
        Security::EbaySignature { .. } => "an eBay signature".to_owned(),
        Security::ClientCert { .. } => "a client certificate".to_owned(),
    };
    let mut used = vec![false; new.len()];
    for o in old {
        let found = new
            .iter()
            .enumerate()
            .position(|(i, n)| !used[i] && kind_of(n) == kind_of(o));
        let Some(i) = found else {
            out.push(f(
                Additive,
                "security.removed",
                format!("route {route}: {} no longer required", describe(o)),
            ));
            continue;
        };
        used[i] = true;
        match (o, &new[i]) {
            (
                Security::Bearer {
                    scopes: os,
                    channel_bound: ob,
                    ..
                },
                Security::Bearer {
                    scopes: ns,
                    channel_bound: nb,
                    ..
                },
            ) => {
                for s in ns.iter().filter(|s| !os.contains(s)) {
                    out.push(
                        f(
                            Breaking,
                            "scope.added",
                            format!("route {route}: tokens must now carry the scope {s}"),
                        )
                        .values(None, Some(json!(s))),
                    );
                }
                for s in os.iter().filter(|s| !ns.contains(s)) {
                    out.push(
                        f(
                            Additive,
                            "scope.removed",
                            format!("route {route}: the scope {s} is no longer required"),
                        )
                        .values(Some(json!(s)), None),
                    );
                }
                if nb != ob {
                    out.push(f(
                        if *nb { Breaking } else { Additive },
                        "security.channel_bound",
                        if *nb {
                            format!("route {route}: tokens must now name the route's channel")
                        } else {
                            format!("route {route}: tokens no longer need to name the channel")
                        },
                    ));
                }
            }
            (
                Security::WebhookSignature {
                    header: oh,
                    channels: oc,
                    ..
                },
                Security::WebhookSignature {
                    header: nh,
                    channels: nc,
                    ..
                },
            ) => {
                if !oh.eq_ignore_ascii_case(nh) {
                    out.push(
                        f(
                            Breaking,
                            "security.changed",
                            format!(
                                "route {route}: the signature is now read from {nh} (was {oh})"
                            ),
                        )
                        .values(Some(json!(oh)), Some(json!(nh))),
                    );
                }
                channel_lists(route, "signatures", oc, nc, out);
            }
            (
                Security::ClientCert { channels: oc, .. },
                Security::ClientCert { channels: nc, .. },
            ) => channel_lists(route, "client certificates", oc, nc, out),
            _ => {}
        }
    }
    for (n, _) in new.iter().zip(&used).filter(|(_, u)| !**u) {
        out.push(f(
            Breaking,
            "security.added",
            format!("route {route}: now requires {}", describe(n)),
        ));
    }
}

fn channel_lists(route: &str, what: &str, old: &[String], new: &[String], out: &mut Vec<Finding>) {
    for c in old.iter().filter(|c| !new.contains(c)) {
        out.push(
            Finding::new(
                Breaking,
                "security.changed",
                Some(route),
                Some(c),
                format!("route {route}: {c}'s {what} are no longer accepted"),
            )
            .values(Some(json!(c)), None),
        );
    }
    for c in new.iter().filter(|c| !old.contains(c)) {
        out.push(
            Finding::new(
                Additive,
                "security.changed",
                Some(route),
                Some(c),
                format!("route {route}: {c}'s {what} are now accepted"),
            )
            .values(None, Some(json!(c))),
        );
    }
}

fn schemas(
    route: &str,
    o: &RouteSurface,
    n: &RouteSurface,
    served: &[String],
    out: &mut Vec<Finding>,
) {
    // the channels either file lists a schema for (others fall back to the default schema)
    let listed: BTreeSet<&String> = o
        .schemas
        .channels
        .keys()
        .chain(n.schemas.channels.keys())
        .collect();
    for c in listed {
        // a channel the route stops (or starts) serving is reported once, as such; one that
        // cannot call the route (see `served_channels`) or is no longer declared, not here
        if !served.contains(c) {
            continue;
        }
        schema_pair(
            route,
            Some(c),
            o.schemas.for_channel(c),
            n.schemas.for_channel(c),
            out,
        );
    }
    schema_pair(
        route,
        None,
        o.schemas.default.as_ref(),
        n.schemas.default.as_ref(),
        out,
    );
}

fn schema_pair(
    route: &str,
    channel: Option<&str>,
    old: Option<&SchemaDoc>,
    new: Option<&SchemaDoc>,
    out: &mut Vec<Finding>,
) {
    let whose = channel.map_or("other channels'".to_owned(), |c| format!("{c}'s"));
    match (old, new) {
        (None, None) => {}
        (None, Some(n)) => out.push(
            Finding::new(
                Breaking,
                "schema.added",
                Some(route),
                channel,
                format!(
                    "route {route}: {whose} documents must now match {}",
                    n.reference
                ),
            )
            .at("")
            .values(None, Some(json!(n.reference))),
        ),
        (Some(o), None) => out.push(
            Finding::new(
                Additive,
                "schema.removed",
                Some(route),
                channel,
                format!(
                    "route {route}: {whose} documents are no longer checked against {}",
                    o.reference
                ),
            )
            .at("")
            .values(Some(json!(o.reference)), None),
        ),
        (Some(o), Some(n)) => {
            // a keyword inside a `$defs` entry used in several places is one change: one
            // finding at its first place, the others listed in `also_at`
            let mut groups: Vec<(schema_diff::SchemaChange, Vec<String>)> = Vec::new();
            for change in schema_diff::diff(&o.value, &n.value) {
                let same = groups.iter_mut().find(|(g, _)| {
                    g.stricter == change.stricter
                        && g.keyword == change.keyword
                        && g.schema_pointer == change.schema_pointer
                        && g.old == change.old
                        && g.new == change.new
                });
                match same {
                    Some((_, also)) => also.push(change.pointer),
                    None => groups.push((change, Vec::new())),
                }
            }
            for (change, also_at) in groups {
                // the file the keyword sits in: the new one unless it only exists in the old
                let file = if n.value.pointer(&change.schema_pointer).is_some()
                    || o.value.pointer(&change.schema_pointer).is_none()
                {
                    &n.reference
                } else {
                    &o.reference
                };
                let elsewhere = match also_at.len() {
                    0 => String::new(),
                    1 => format!(" (also at {})", also_at[0]),
                    k => format!(" (also at {} and {} other place(s))", also_at[0], k - 1),
                };
                out.push(Finding {
                    severity: if change.stricter { Breaking } else { Additive },
                    kind: format!("schema.{}", change.keyword),
                    route: Some(route.to_owned()),
                    channel: channel.map(str::to_owned),
                    pointer: Some(change.pointer),
                    also_at,
                    schema: Some(format!("{file}#{}", change.schema_pointer)),
                    message: format!(
                        "route {route}, {whose} schema: {}{elsewhere}",
                        change.message
                    ),
                    old: change.old,
                    new: change.new,
                });
            }
        }
    }
}

fn rate_limits(
    route: &str,
    old: &[RateLimitSurface],
    new: &[RateLimitSurface],
    out: &mut Vec<Finding>,
) {
    // one finding per channel the policy limits (None: every caller)
    let each = |p: &RateLimitSurface| -> Vec<Option<String>> {
        match &p.channels {
            None => vec![None],
            Some(list) => list.iter().cloned().map(Some).collect(),
        }
    };
    let push = |out: &mut Vec<Finding>, p: &RateLimitSurface, f: Finding| {
        for c in each(p) {
            let mut f = f.clone();
            f.channel = c;
            out.push(f);
        }
    };
    let describe = |l: &crate::surface::LimitSurface| {
        format!(
            "{} per {:?}, burst {}",
            l.rate,
            l.per,
            l.burst.unwrap_or(l.rate)
        )
    };
    for np in new {
        let Some(op) = old.iter().find(|p| p.policy == np.policy) else {
            for l in &np.limits {
                push(
                    out,
                    np,
                    Finding::new(
                        Breaking,
                        "rate_limit.added",
                        Some(route),
                        None,
                        format!(
                            "route {route}: new limit {}/{}: {}",
                            np.policy,
                            l.name,
                            describe(l)
                        ),
                    )
                    .at(format!("/policies/{}/limits/{}", np.policy, l.name))
                    .values(None, Some(limit_json(l))),
                );
            }
            continue;
        };
        // channels the policy newly limits: every limit of it is new to them
        if let (Some(oc), Some(nc)) = (&op.channels, &np.channels) {
            for c in nc.iter().filter(|c| !oc.contains(c)) {
                out.push(
                    Finding::new(
                        Breaking,
                        "rate_limit.added",
                        Some(route),
                        Some(c),
                        format!("route {route}: {} now limits {c}", np.policy),
                    )
                    .at(format!("/policies/{}/channels", np.policy)),
                );
            }
        } else if op.channels.is_some() && np.channels.is_none() {
            out.push(
                Finding::new(
                    Breaking,
                    "rate_limit.added",
                    Some(route),
                    None,
                    format!("route {route}: {} now limits every channel", np.policy),
                )
                .at(format!("/policies/{}/channels", np.policy)),
            );
        }
        for nl in &np.limits {
            let ol = op
                .limits
                .iter()
                .find(|l| l.name == nl.name)
                .or_else(|| op.limits.iter().find(|l| l.per == nl.per));
            let pointer = format!("/policies/{}/limits/{}", np.policy, nl.name);
            let Some(ol) = ol else {
                push(
                    out,
                    np,
                    Finding::new(
                        Breaking,
                        "rate_limit.added",
                        Some(route),
                        None,
                        format!(
                            "route {route}: new limit {}/{}: {}",
                            np.policy,
                            nl.name,
                            describe(nl)
                        ),
                    )
                    .at(pointer)
                    .values(None, Some(limit_json(nl))),
                );
                continue;
            };
            // rate per time compared exactly: new.rate / new.per against old.rate / old.per
            let lhs = u128::from(nl.rate) * ol.per.as_millis();
            let rhs = u128::from(ol.rate) * nl.per.as_millis();
            let (ob, nb) = (ol.burst.unwrap_or(ol.rate), nl.burst.unwrap_or(nl.rate));
            let mut lowered = Vec::new();
            let mut raised = Vec::new();
            match lhs.cmp(&rhs) {
                std::cmp::Ordering::Less => lowered.push("rate"),
                std::cmp::Ordering::Greater => raised.push("rate"),
                std::cmp::Ordering::Equal => {}
            }
            match nb.cmp(&ob) {
                std::cmp::Ordering::Less => lowered.push("burst"),
                std::cmp::Ordering::Greater => raised.push("burst"),
                std::cmp::Ordering::Equal => {}
            }
            for (words, severity, kind) in [
                (&lowered, Breaking, "rate_limit.lowered"),
                (&raised, Additive, "rate_limit.raised"),
            ] {
                if words.is_empty() {
                    continue;
                }
                push(
                    out,
                    np,
                    Finding::new(
                        severity,
                        kind,
                        Some(route),
                        None,
                        format!(
                            "route {route}: limit {}/{} {} {}: {} (was {})",
                            np.policy,
                            nl.name,
                            words.join(" and "),
                            if severity == Breaking {
                                "lowered"
                            } else {
                                "raised"
                            },
                            describe(nl),
                            describe(ol)
                        ),
                    )
                    .at(pointer.clone())
                    .values(Some(limit_json(ol)), Some(limit_json(nl))),
                );
            }
        }
        for ol in &op.limits {
            let kept = np
                .limits
                .iter()
                .any(|l| l.name == ol.name || l.per == ol.per);
            if !kept {
                push(
                    out,
                    op,
                    Finding::new(
                        Additive,
                        "rate_limit.removed",
                        Some(route),
                        None,
                        format!("route {route}: limit {}/{} removed", op.policy, ol.name),
                    )
                    .at(format!("/policies/{}/limits/{}", op.policy, ol.name))
                    .values(Some(limit_json(ol)), None),
                );
            }
        }
    }
    for op in old
        .iter()
        .filter(|p| !new.iter().any(|n| n.policy == p.policy))
    {
        push(
            out,
            op,
            Finding::new(
                Additive,
                "rate_limit.removed",
                Some(route),
                None,
                format!("route {route}: rate limit {} removed", op.policy),
            )
            .at(format!("/policies/{}", op.policy)),
        );
    }
}

fn limit_json(l: &crate::surface::LimitSurface) -> Value {
    json!({
        "rate": l.rate,
        "per_ms": u64::try_from(l.per.as_millis()).unwrap_or(u64::MAX),
        "burst": l.burst.unwrap_or(l.rate),
    })
}

fn idempotency(route: &str, o: &RouteSurface, n: &RouteSurface, out: &mut Vec<Finding>) {
    let f = |severity, kind: &str, message: String| {
        Finding::new(severity, kind, Some(route), None, message)
    };
    let required = |r: &RouteSurface| r.idempotency.as_ref().is_some_and(|i| i.required);
    match (&o.idempotency, &n.idempotency) {
        (_, Some(ni)) if ni.required && !required(o) => out.push(f(
            Breaking,
            "idempotency.required",
            format!(
                "route {route}: requests without an idempotency key ({}) are now refused",
                ni.header.as_deref().unwrap_or("from the body")
            ),
        )),
        (Some(oi), _) if oi.required && !required(n) => out.push(f(
            Additive,
            "idempotency.optional",
            format!("route {route}: an idempotency key is no longer required"),
        )),
        _ => {}
    }
    if let (Some(oi), Some(ni)) = (&o.idempotency, &n.idempotency)
        && (oi.header != ni.header || oi.body_pointers != ni.body_pointers)
    {
        let key = |i: &crate::surface::IdempotencySurface| {
            i.header
                .clone()
                .unwrap_or_else(|| i.body_pointers.join(","))
        };
        out.push(
            f(
                Breaking,
                "idempotency.key_changed",
                format!(
                    "route {route}: the idempotency key is now {} (was {}): retries sent with the old key repeat the request",
                    key(ni),
                    key(oi)
                ),
            )
            .values(Some(json!(key(oi))), Some(json!(key(ni)))),
        );
    }
}

/// The compiled deprecation of a route (its dates as Unix seconds, and the set's clock).
fn compiled_deprecation(
    file: &Surface,
    route: &str,
) -> Option<std::sync::Arc<policies::deprecation::Deprecation>> {
    file.set
        .routes
        .iter()
        .find(|r| &*r.name == route)
        .and_then(|r| r.deprecation.clone())
}

fn deprecation(
    old_file: &Surface,
    new_file: &Surface,
    o: &RouteSurface,
    n: &RouteSurface,
    out: &mut Vec<Finding>,
) {
    let route = n.name.as_str();
    let dates = |d: &policies::spec::DeprecationSpec| json!({"deprecated": d.deprecated, "sunset": d.sunset});
    let (Some(nd), od) = (&n.deprecation, &o.deprecation) else {
        if let Some(od) = &o.deprecation {
            out.push(
                Finding::new(
                    Additive,
                    "route.deprecation_removed",
                    Some(route),
                    None,
                    format!("route {route}: no longer deprecated"),
                )
                .values(Some(dates(od)), None),
            );
        }
        return;
    };
    let (oc, nc) = (
        compiled_deprecation(old_file, &o.name),
        compiled_deprecation(new_file, &n.name),
    );
    // past its sunset with `after_sunset: refuse`, the route answers 410: as good as removed
    if nc.as_ref().is_some_and(|d| d.refuses()) && !oc.as_ref().is_some_and(|d| d.refuses()) {
        out.push(
            Finding::new(
                Breaking,
                "route.sunset",
                Some(route),
                None,
                format!(
                    "route {route}: past its sunset ({}): answered 410 Gone",
                    nd.sunset.as_deref().unwrap_or_default()
                ),
            )
            .values(od.as_ref().map(dates), Some(dates(nd))),
        );
        return;
    }
    // a sunset announced earlier than before leaves callers less time than they were promised
    let (old_sunset, new_sunset) = (
        oc.as_ref().and_then(|d| d.sunset_at),
        nc.as_ref().and_then(|d| d.sunset_at),
    );
    if let (Some(before), Some(after)) = (old_sunset, new_sunset)
        && after < before
    {
        out.push(
            Finding::new(
                Breaking,
                "route.sunset",
                Some(route),
                None,
                format!(
                    "route {route}: sunset moved earlier, to {} (was {})",
                    nd.sunset.as_deref().unwrap_or_default(),
                    od.as_ref()
                        .and_then(|d| d.sunset.as_deref())
                        .unwrap_or_default()
                ),
            )
            .values(od.as_ref().map(dates), Some(dates(nd))),
        );
        return;
    }
    let changed = od
        .as_ref()
        .is_none_or(|od| od.deprecated != nd.deprecated || od.sunset != nd.sunset);
    if changed {
        // announcing a deprecation breaks nothing yet; the sunset is when callers must have moved
        out.push(
            Finding::new(
                Additive,
                "route.deprecated",
                Some(route),
                None,
                format!(
                    "route {route}: deprecated since {}{}",
                    nd.deprecated,
                    nd.sunset
                        .as_ref()
                        .map_or(String::new(), |s| format!(", sunset {s}"))
                ),
            )
            .values(od.as_ref().map(dates), Some(dates(nd))),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::surface::LimitSurface;

    fn policy(
        channels: Option<&[&str]>,
        limits: &[(&str, u64, u64, Option<u64>)],
    ) -> RateLimitSurface {
        RateLimitSurface {
            policy: "limit".to_owned(),
            channels: channels.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
            limits: limits
                .iter()
                .map(|(name, rate, per_s, burst)| LimitSurface {
                    name: (*name).to_owned(),
                    rate: *rate,
                    per: Duration::from_secs(*per_s),
                    burst: *burst,
                })
                .collect(),
        }
    }

    fn kinds(old: RateLimitSurface, new: RateLimitSurface) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        rate_limits("r", &[old], &[new], &mut out);
        out.into_iter().map(|f| (f.kind, f.channel)).collect()
    }

    fn k(kind: &str, channel: Option<&str>) -> (String, Option<String>) {
        (kind.to_owned(), channel.map(str::to_owned))
    }

    #[test]
    fn rates_compare_per_unit_of_time_and_burst_defaults_to_the_rate() {
        let all = None;
        // 60 per minute is 1 per second: same rate; the burst (60 -> 1) is lower
        assert_eq!(
            kinds(
                policy(all, &[("l", 60, 60, None)]),
                policy(all, &[("l", 1, 1, None)])
            ),
            vec![k("rate_limit.lowered", None)]
        );
        // same rate and burst written differently: nothing
        assert_eq!(
            kinds(
                policy(all, &[("l", 60, 60, Some(10))]),
                policy(all, &[("l", 1, 1, Some(10))])
            ),
            vec![]
        );
        assert_eq!(
            kinds(
                policy(all, &[("l", 10, 1, Some(20))]),
                policy(all, &[("l", 11, 1, Some(20))])
            ),
            vec![k("rate_limit.raised", None)]
        );
    }

    #[test]
    fn channel_limits_are_reported_per_channel_and_new_ones_break() {
        let two: &[&str] = &["amazon", "ebay"];
        assert_eq!(
            kinds(
                policy(Some(two), &[("l", 10, 1, None)]),
                policy(Some(two), &[("l", 5, 1, None)])
            ),
            vec![
                k("rate_limit.lowered", Some("amazon")),
                k("rate_limit.lowered", Some("ebay"))
            ]
        );
        // a second limit, and a channel newly limited
        assert_eq!(
            kinds(
                policy(Some(&["amazon"]), &[("l", 10, 1, None)]),
                policy(
                    Some(two),
                    &[("l", 10, 1, None), ("daily", 1000, 86400, None)]
                )
            ),
            vec![
                k("rate_limit.added", Some("ebay")),
                k("rate_limit.added", Some("amazon")),
                k("rate_limit.added", Some("ebay"))
            ]
        );
        // a limit dropped only adds room
        assert_eq!(
            kinds(
                policy(
                    Some(&["amazon"]),
                    &[("l", 10, 1, None), ("daily", 1000, 86400, None)]
                ),
                policy(Some(&["amazon"]), &[("l", 10, 1, None)])
            ),
            vec![k("rate_limit.removed", Some("amazon"))]
        );
    }

    #[test]
    fn path_shapes_ignore_parameter_names() {
        assert_eq!(shape("/erp/{collection}/{id}"), shape("/erp/{kind}/{key}"));
        assert_ne!(shape("/erp/{collection}/{id}"), shape("/erp/{collection}"));
    }
}
