//! The responses of an operation: its success (the upstream's answer, the canonical answer of
//! a transform, 202 for stored documents), every problem type its policies, the edge, the
//! forwarding layer and the delivery queue can answer (grouped by status, each status's
//! `type` constrained to the listed ones), and the headers each response may carry.

use std::collections::BTreeMap;

use policies::kinds::PolicySpec;
use policies::queue::DeliveryMode;
use policies::spec::AfterSunset;
use policies::state::StoreKind;
use serde_json::{Map, Value, json};

use super::schemas::{Components, ref_to};
use crate::surface::{RouteSurface, Surface};

/// The prefix of the gateway's own problem types.
const PREFIX: &str = policies::problem::PROBLEM_TYPE_PREFIX;

/// What a successful call is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Success {
    /// The upstream's answer, as it sent it (2xx).
    Upstream,
    /// The canonical answer a transform's `answer` mapping makes of the upstream's (2xx).
    CanonicalAnswer,
    /// Forwarded at once, or stored and 202 when the upstream cannot take it.
    UpstreamOrStored {
        /// Whether the forwarded answer is the canonical answer.
        canonical: bool,
    },
    /// Stored and answered 202 (queued delivery, fan-out).
    Stored,
    /// eBay's endpoint validation: `{"challengeResponse": ...}`.
    Challenge,
}

impl Success {
    /// How `route` answers a call that passes.
    pub fn of(surface: &Surface, route: &RouteSurface) -> Success {
        let canonical = route.policies.iter().any(|(name, _)| {
            matches!(surface.set.spec.policies.get(name), Some(PolicySpec::Transform(t)) if t.answer.is_some())
        });
        if route.fanout || route.delivery == DeliveryMode::Queued {
            Success::Stored
        } else if route.delivery == DeliveryMode::Fallback {
            Success::UpstreamOrStored { canonical }
        } else if canonical {
            Success::CanonicalAnswer
        } else {
            Success::Upstream
        }
    }
}

/// The problem types one operation can answer, by status.
#[derive(Debug, Default)]
pub struct Problems {
    /// status -> (type, when), in the order added, without repeats.
    by_status: BTreeMap<u16, Vec<(String, String)>>,
    /// A transform's `error` mapping turns the upstream's 4xx/5xx into
    /// `urn:gateway:problem:erp-<code>` (4xx kept, 5xx as 502).
    erp_errors: bool,
    /// The upstream's errors reach the caller as it sent them.
    passthrough: bool,
    /// A policy answers 401/403 with `WWW-Authenticate`.
    challenges: bool,
}

impl Problems {
    fn add(&mut self, status: u16, slug: &str, when: &str) {
        let ty = if slug.is_empty() {
            "about:blank".to_owned()
        } else {
            format!("{PREFIX}{slug}")
        };
        let list = self.by_status.entry(status).or_default();
        if !list.iter().any(|(t, _)| *t == ty) {
            list.push((ty, when.to_owned()));
        }
    }

    /// Every problem `route` can answer for `channel` (None: the route's template, any
    /// channel); `challenge_get`: the GET of eBay's endpoint validation.
    pub fn of(
        surface: &Surface,
        route: &RouteSurface,
        channel: Option<&str>,
        challenge_get: bool,
    ) -> Problems {
        let mut p = Problems::default();
        // the strict edge, before any route is chosen
        for (slug, when) in [
            (
                "bad-framing",
                "Content-Length and Transfer-Encoding disagree or are malformed",
            ),
            (
                "bad-request-target",
                "the request target holds characters a URI may not",
            ),
            ("bad-host", "Host is missing, repeated or malformed"),
            (
                "repeated-header",
                "a header that must appear once appears twice",
            ),
            ("malformed-request", "the request head does not parse"),
        ] {
            p.add(400, slug, when);
        }
        p.add(
            408,
            "request-timeout",
            "the head or the body did not arrive in time",
        );
        p.add(
            431,
            "headers-too-large",
            "the request head is larger than allowed",
        );
        p.add(
            413,
            "body-too-large",
            &format!("the body exceeds {} bytes", route.max_body_bytes),
        );
        if channel.is_none() && route.channel_param {
            p.add(404, "", "the path's channel is not a declared channel");
        }
        if let Some(d) = &route.deprecation
            && d.sunset.is_some()
            && d.after_sunset == AfterSunset::Refuse
        {
            p.add(
                410,
                "route-sunset",
                "the route's sunset date has passed; nothing is forwarded",
            );
        }
        let spec = &surface.set.spec;
        for (name, _) in &route.policies {
            let Some(ps) = spec.policies.get(name) else {
                continue;
            };
            p.policy(route, channel, challenge_get, ps);
        }
        if challenge_get {
            return p;
        }
        let forwards_now = !route.fanout && route.delivery != DeliveryMode::Queued;
        if forwards_now {
            p.add(
                502,
                "upstream-unavailable",
                "the upstream refused, reset or answered invalid HTTP",
            );
            p.add(
                504,
                "upstream-timeout",
                "the upstream did not answer in time",
            );
            p.add(
                503,
                "upstream-circuit-open",
                "every endpoint's circuit breaker is open (Retry-After)",
            );
            p.add(
                503,
                "upstream-unhealthy",
                "no endpoint passes its health checks (Retry-After)",
            );
            p.add(
                503,
                "upstream-saturated",
                "the upstream is at its max_in_flight (Retry-After)",
            );
            if !p.erp_errors {
                p.passthrough = true;
            }
        }
        if route.delivery != DeliveryMode::Sync || route.fanout {
            p.add(
                503,
                "queue-full",
                "the delivery queue is full (Retry-After)",
            );
            p.add(
                503,
                "delivery-store-unavailable",
                "the document could not be stored (Retry-After)",
            );
        }
        if route.fanout {
            p.add(
                422,
                "fanout-refused",
                "the event names no destination it can be delivered to",
            );
        }
        p
    }

    fn policy(
        &mut self,
        route: &RouteSurface,
        channel: Option<&str>,
        challenge_get: bool,
        spec: &PolicySpec,
    ) {
        match spec {
            PolicySpec::Jwt(j) => {
                self.challenges = true;
                self.add(401, "authentication-required", "no bearer token");
                self.add(
                    401,
                    "invalid-token",
                    "the token is malformed, expired, of another issuer or audience, or badly signed",
                );
                if !j.scopes.is_empty() {
                    self.add(
                        403,
                        "insufficient-scope",
                        &format!("the token lacks a scope of: {}", j.scopes.join(" ")),
                    );
                }
                if j.channel.is_some() {
                    self.add(
                        403,
                        "channel-forbidden",
                        "the token names another channel than the path's",
                    );
                }
            }
            PolicySpec::WebhookSignature(_) => {
                self.add(
                    401,
                    "invalid-signature",
                    "the signature header is missing or does not match the body",
                );
            }
            PolicySpec::EbaySignature(e) => {
                self.challenges = true;
                if challenge_get {
                    self.add(
                        400,
                        "missing-challenge-code",
                        "no, an empty or an over-long challenge_code",
                    );
                    return;
                }
                self.add(
                    401,
                    "invalid-signature",
                    "X-EBAY-SIGNATURE is missing, malformed, of an unknown key or does not match the body",
                );
                self.add(
                    503,
                    "signature-key-unavailable",
                    "eBay's public key cannot be fetched (Retry-After)",
                );
                if e.channel.is_some() && route.channel_param {
                    self.add(
                        403,
                        "channel-forbidden",
                        "the policy's channel is not the path's",
                    );
                }
            }
            PolicySpec::ClientCert(_) => {
                self.add(
                    401,
                    "client-certificate-required",
                    "no verified client certificate (plain HTTP, or none sent)",
                );
                self.add(
                    403,
                    "client-certificate-forbidden",
                    "the certificate is not one the policy binds to a channel",
                );
            }
            PolicySpec::RateLimit(r) => {
                let applies = match (channel, &r.channels) {
                    (Some(c), Some(list)) => list.iter().any(|l| l == c),
                    _ => true,
                };
                if !applies {
                    return;
                }
                self.add(
                    429,
                    "quota-exceeded",
                    "a rate limit is used up (Retry-After)",
                );
                if r.store == StoreKind::Redis {
                    self.add(
                        503,
                        "temporary-reduced-capacity",
                        "the limit's Redis cannot be reached (Retry-After)",
                    );
                }
                if let Some(h) = &r.cost_header {
                    self.add(
                        400,
                        "invalid-request-cost",
                        &format!("{h} is not an integer from 1 to the policy's max_cost"),
                    );
                }
            }
            PolicySpec::JsonBody(j) => {
                if j.require_content_type {
                    self.add(415, "unsupported-media-type", "the body is not JSON");
                }
                self.add(
                    400,
                    "malformed-json",
                    "the body is empty, not UTF-8 or not JSON",
                );
                self.add(400, "json-too-deep", "the body nests too deeply");
            }
            PolicySpec::Schema(s) => {
                self.add(
                    400,
                    "malformed-json",
                    "the body is empty, not UTF-8 or not JSON",
                );
                self.add(400, "json-too-deep", "the body nests too deeply");
                if channel.is_none() && route.schemas.default.is_none() {
                    self.add(
                        404,
                        "no-schema",
                        "the channel has no schema for this document",
                    );
                }
                self.add(
                    422,
                    "schema-violation",
                    "the body does not match the channel's schema (violations lists them)",
                );
                if s.response.is_some() {
                    self.add(
                        502,
                        "upstream-invalid-answer",
                        "the upstream's answer does not match its schema",
                    );
                }
            }
            PolicySpec::Idempotency(i) => {
                if i.required {
                    self.add(400, "idempotency-key-missing", "no idempotency key");
                }
                self.add(
                    400,
                    "invalid-idempotency-key",
                    "the key is malformed, repeated, empty or too long",
                );
                self.add(
                    409,
                    "idempotency-key-in-use",
                    "a request with the same key is still in flight (Retry-After)",
                );
                self.add(
                    422,
                    "idempotency-key-reused",
                    "the key was used with another body",
                );
                self.add(
                    503,
                    "idempotency-store-unavailable",
                    "the idempotency store cannot take the key (Retry-After)",
                );
            }
            PolicySpec::Transform(t) => {
                self.add(
                    400,
                    "malformed-json",
                    "the body is empty, not UTF-8 or not JSON",
                );
                self.add(400, "json-too-deep", "the body nests too deeply");
                if channel.is_none() {
                    self.add(
                        404,
                        "no-mapping",
                        "the channel has no mapping for this document",
                    );
                }
                self.add(
                    422,
                    "unmappable-document",
                    "the mapping refuses the document (a field the canonical model needs is missing or invalid)",
                );
                self.add(
                    500,
                    "mapping-failed",
                    "the mapping failed: a bug of the mapping, logged; nothing was forwarded",
                );
                if t.answer.is_some() || t.error.is_some() {
                    self.add(
                        502,
                        "mapping-failed",
                        "the upstream's answer could not be mapped",
                    );
                }
                if t.error.is_some() {
                    self.erp_errors = true;
                    self.passthrough = false;
                }
            }
        }
    }
}

/// The schema of a problem document (RFC 9457, with the gateway's members).
pub fn problem_details_schema() -> Value {
    json!({
        "type": "object",
        "description": "An RFC 9457 problem document. `type` names the problem (urn:gateway:problem:<name>, or about:blank for plain HTTP errors); docs/problems.md lists them.",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string", "minLength": 1},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 100, "maximum": 599},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "request_id": {"type": "string"},
            "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "violations": {
                "type": "array",
                "description": "schema-violation: up to max_errors violations.",
                "items": {
                    "type": "object",
                    "properties": {
                        "pointer": {"type": "string"},
                        "keyword": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            },
            "total": {"type": "integer", "minimum": 0, "description": "schema-violation: how many violations in all."},
            "limits": {"type": "array", "description": "quota-exceeded: the exhausted limits."},
            "erp_code": {"type": ["string", "null"]},
            "erp_status": {"type": "integer"},
        },
    })
}

/// `components.headers`.
pub fn header_components() -> Value {
    let string =
        |description: &str| json!({"description": description, "schema": {"type": "string"}});
    json!({
        "X-Request-Id": {"description": "The request's id (also `request_id` in problem documents and the access log); on every answer.", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 128}},
        "RateLimit": string("The remaining quota of the limit closest to exhaustion (draft-ietf-httpapi-ratelimit-headers: `\"name\";r=<remaining>;t=<seconds>`)."),
        "RateLimit-Policy": string("The limits that apply (`\"name\";q=<quota>;w=<window seconds>`)."),
        "Retry-After": {"description": "Seconds until the request could pass.", "schema": {"type": "string", "pattern": "^[0-9]+$"}},
        "Idempotent-Replayed": {"description": "`true` on an answer replayed for a repeated idempotency key.", "schema": {"type": "string", "enum": ["true"]}},
        "Idempotency-Policy": string("How long keys are kept: `ttl=<seconds>, lease=<seconds>`."),
        "WWW-Authenticate": string("The authentication challenge (RFC 6750 for bearer tokens)."),
        "Location": string("Where the stored delivery can be watched."),
        "Deprecation": {"description": "When the route was deprecated (RFC 9745: `@<unix seconds>`).", "schema": {"type": "string", "pattern": "^@-?[0-9]+$"}},
        "Sunset": string("When the route stops being served (RFC 8594, an HTTP date)."),
        "Link": string("`<url>; rel=\"deprecation\"`: where to read about the deprecation."),
    })
}

fn header_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}

/// The headers of one response of `route`.
fn headers(
    surface: &Surface,
    route: &RouteSurface,
    channel: Option<&str>,
    status: Option<u16>,
    success: bool,
    problems: &Problems,
) -> Value {
    let mut h = Map::new();
    let mut add = |name: &str| {
        h.insert(name.to_owned(), header_ref(name));
    };
    add("X-Request-Id");
    let limited = route.rate_limits.iter().any(|l| match channel {
        Some(c) => l.applies_to(Some(c)),
        None => true,
    });
    if limited {
        add("RateLimit");
        add("RateLimit-Policy");
    }
    if let Some(idem) = &route.idempotency {
        let advertise = matches!(surface.set.spec.policies.get(&idem.policy),
            Some(PolicySpec::Idempotency(i)) if i.advertise);
        if success {
            add("Idempotent-Replayed");
        }
        if advertise {
            add("Idempotency-Policy");
        }
    }
    if matches!(status, Some(429 | 503 | 409)) {
        add("Retry-After");
    }
    if problems.challenges && matches!(status, Some(401 | 403)) {
        add("WWW-Authenticate");
    }
    if status == Some(202) {
        add("Location");
    }
    if let Some(d) = &route.deprecation {
        add("Deprecation");
        if d.sunset.is_some() {
            add("Sunset");
        }
        if d.link.is_some() {
            add("Link");
        }
    }
    Value::Object(h)
}

/// The `responses` object of an operation.
pub fn responses(
    surface: &Surface,
    route: &RouteSurface,
    channel: Option<&str>,
    problems: &Problems,
    success: Success,
    components: &mut Components,
) -> Value {
    let mut out = Map::new();
    let answer_schema = |components: &mut Components, canonical: bool| {
        if canonical {
            components
                .embed_canonical("answer")
                .unwrap_or_else(|| json!({"type": "object"}))
        } else {
            json!({})
        }
    };
    let stored = json!({
        "description": "Stored for delivery: the body names the delivery (or, fanned out, each delivery) and where to watch it.",
        "headers": headers(surface, route, channel, Some(202), true, problems),
        "content": {"application/json": {"schema": {"type": "object"}}},
    });
    let upstream = |components: &mut Components, canonical: bool| {
        let (media, description) = if canonical {
            (
                "application/json",
                "The upstream accepted the document: its acknowledgement, mapped to the canonical answer.",
            )
        } else {
            ("*/*", "The upstream's answer, as it sent it.")
        };
        json!({
            "description": description,
            "headers": headers(surface, route, channel, None, true, problems),
            "content": {media: {"schema": answer_schema(components, canonical)}},
        })
    };
    match success {
        Success::Upstream => {
            out.insert("2XX".into(), upstream(components, false));
        }
        Success::CanonicalAnswer => {
            out.insert("2XX".into(), upstream(components, true));
        }
        Success::UpstreamOrStored { canonical } => {
            out.insert("2XX".into(), upstream(components, canonical));
            out.insert("202".into(), stored);
        }
        Success::Stored => {
            out.insert("202".into(), stored);
        }
        Success::Challenge => {
            out.insert(
                "200".into(),
                json!({
                    "description": "eBay's endpoint validation answered: hex SHA-256 of the challenge code, the verification token and the endpoint.",
                    "headers": headers(surface, route, channel, Some(200), false, problems),
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "required": ["challengeResponse"],
                        "properties": {"challengeResponse": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
                    }}},
                }),
            );
        }
    }
    let erp_type = json!({"type": "string", "pattern": "^urn:gateway:problem:erp-[a-z0-9-]+$"});
    let mut statuses: Vec<u16> = problems.by_status.keys().copied().collect();
    if problems.erp_errors && !statuses.contains(&502) {
        statuses.push(502);
        statuses.sort_unstable();
    }
    for status in statuses {
        let list = problems
            .by_status
            .get(&status)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let erp = problems.erp_errors && ((400..500).contains(&status) || status == 502);
        let mut lines: Vec<String> = list.iter().map(|(t, w)| format!("`{t}`: {w}")).collect();
        if erp {
            lines.push(format!(
                "`{PREFIX}erp-<code>`: the upstream {} (its error, mapped)",
                if status == 502 {
                    "failed"
                } else {
                    "refused the document"
                }
            ));
        }
        let types: Vec<&str> = list.iter().map(|(t, _)| t.as_str()).collect();
        let type_schema = match (types.is_empty(), erp) {
            (false, false) => json!({"enum": types}),
            (false, true) => json!({"anyOf": [{"enum": types}, erp_type]}),
            (true, _) => erp_type.clone(),
        };
        let schema = json!({"allOf": [
            ref_to("ProblemDetails"),
            {"properties": {"type": type_schema, "status": {"const": status}}},
        ]});
        let mut content = Map::new();
        content.insert(
            policies::problem::PROBLEM_CONTENT_TYPE.into(),
            json!({"schema": schema}),
        );
        if problems.passthrough {
            // the upstream's own answers with this status pass unchanged
            content.insert("*/*".into(), json!({"schema": {}}));
            lines.push("or the upstream's own answer with this status, as it sent it".into());
        }
        out.insert(
            status.to_string(),
            json!({
                "description": lines.join("; "),
                "headers": headers(surface, route, channel, Some(status), false, problems),
                "content": content,
            }),
        );
    }
    if problems.erp_errors {
        out.insert(
            "4XX".into(),
            json!({
                "description": "The upstream refused the document: its error, mapped to a problem (`urn:gateway:problem:erp-<code>`).",
                "headers": headers(surface, route, channel, None, false, problems),
                "content": {policies::problem::PROBLEM_CONTENT_TYPE: {"schema": {"allOf": [
                    ref_to("ProblemDetails"),
                    {"properties": {"type": erp_type, "status": {"minimum": 400, "maximum": 499}}},
                ]}}},
            }),
        );
    }
    if problems.passthrough {
        for range in ["4XX", "5XX"] {
            out.insert(
                range.into(),
                json!({
                    "description": "The upstream's own error, as it sent it.",
                    "headers": headers(surface, route, channel, None, false, problems),
                    "content": {"*/*": {"schema": {}}},
                }),
            );
        }
    }
    Value::Object(out)
}
