//! The policy-file model: plain serde structs, one per section of the YAML file. Their `///`
//! docs are the reference platform teams read (they also become the published JSON Schema).
//! Nothing here is checked beyond its shape; `compile` turns a spec into runtime objects.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::kinds::PolicySpec;
use crate::resilience::breaker::CircuitBreakerSpec;
use crate::resilience::budget::RetrySpec;
use crate::resilience::ejection::OutlierDetectionSpec;
use crate::resilience::health::HealthCheckSpec;
use crate::resilience::pacing::MaxRateSpec;
use crate::units::{ByteSize, DurationSpec};
use crate::upstream::UpstreamTlsSpec;

/// A policy file: the whole configuration of one gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyFileSpec {
    /// Version of the policy-file format. Only `1` exists.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// Where the gateway listens. Listener changes take effect at start (or through a graceful
    /// upgrade), not on a hot reload.
    #[serde(default)]
    pub listeners: ListenersSpec,
    /// Server-wide limits that apply to every request before any route is matched.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// The marketplace channels the gateway knows. A `{channel}` path parameter must name one of
    /// them (anything else is answered 404), and only these names appear in metric labels.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelSpec>,
    /// The Redis (or Redis Cluster) that policies with `store: redis` share state through, so
    /// that several gateway instances enforce one limit and one idempotency record.
    #[serde(default)]
    pub redis: Option<crate::state::redis::RedisSpec>,
    /// OpenTelemetry traces over OTLP/HTTP. Absent: no spans are recorded.
    #[serde(default)]
    pub tracing: Option<crate::traces::TracingSpec>,
    /// Upstream clusters requests are forwarded to, by name.
    pub upstreams: BTreeMap<String, UpstreamSpec>,
    /// Named policy instances that routes list in the order they run.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicySpec>,
    /// Store-and-forward queues, by name: where the documents of `queued` and `fallback`
    /// routes wait, durably, until they are delivered.
    #[serde(default)]
    pub queues: BTreeMap<String, crate::queue::QueueSpec>,
    /// How the gateway calls the marketplaces' APIs: the deliveries of fan-out routes (their
    /// upstreams, the values their outbound mappings read, each operation's published limit).
    #[serde(default)]
    pub outbound: Option<crate::fanout::OutboundSpec>,
    /// Routes, matched by method, path template and optionally host. A request that no route
    /// names is answered 404 and never forwarded.
    pub routes: Vec<RouteSpec>,
}

/// The gateway's listeners. An address is `host:port`; port `0` picks a free port at start
/// (the chosen addresses are printed, which tests use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ListenersSpec {
    /// Plain-HTTP listener for traffic, e.g. `0.0.0.0:8080`. Absent: none.
    #[serde(default)]
    pub http: Option<String>,
    /// TLS listener for traffic. Absent: none.
    #[serde(default)]
    pub https: Option<HttpsListenerSpec>,
    /// Admin listener: `/healthz`, `/readyz`, `/metrics`, `/config`. Keep it on a private
    /// interface. Without `admin_auth` it must be a loopback address (`127.0.0.1:9090`,
    /// `[::1]:9090`): the gateway refuses to start otherwise. Absent: none.
    #[serde(default)]
    pub admin: Option<String>,
    /// The token the admin listener requires on every path but `/healthz`, `/readyz` and
    /// (unless `protect_metrics`) `/metrics`. Absent: no token, and the admin listener may
    /// only bind a loopback address. `gateway run --admin-token-file` (or
    /// `GATEWAY_ADMIN_TOKEN_FILE`) overrides the token.
    #[serde(default)]
    pub admin_auth: Option<AdminAuthSpec>,
    /// Serve the admin listener over TLS (and optionally require client certificates). Absent:
    /// plain HTTP. Its files are reloaded like those of `https`.
    #[serde(default)]
    pub admin_tls: Option<AdminTlsSpec>,
}

/// Authentication of the admin listener: a bearer token (`Authorization: Bearer <token>`), or
/// the session cookie a browser gets by signing in with the token at `/login`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminAuthSpec {
    /// The token, as a secret reference, never a literal: `${ADMIN_TOKEN}` or
    /// `file:/path/to/token` (relative to this file's folder; one trailing newline is
    /// trimmed). At least 16 characters, printable ASCII without spaces; e.g.
    /// `openssl rand -hex 32 > admin-token`. Read at start, like the listeners.
    pub token: String,
    /// During a rotation, the token being retired, as a secret reference like `token`:
    /// accepted as well until it is removed. To rotate: put the new token in `token` and the
    /// old one here, restart; move every client (scripts, Prometheus, browsers) to the new
    /// token, watching `gateway_admin_auth_accepted_total{credential="previous_token"}` stop
    /// growing; remove this field and restart (the old token then gets 401). Both tokens are
    /// always checked in constant time. Browser sessions last 12 hours from sign-in, until
    /// sign-out or a restart, whichever token opened them. Must differ from `token`.
    #[serde(default)]
    pub previous_token: Option<String>,
    /// Require the token on `/metrics` too (a Prometheus scrape then sends it as
    /// `authorization: {credentials_file: ...}`). `/healthz` and `/readyz` stay open, for
    /// load balancers and orchestrators.
    #[serde(default)]
    pub protect_metrics: bool,
}

/// A TLS listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpsListenerSpec {
    /// Address, e.g. `0.0.0.0:8443`.
    pub address: String,
    /// PEM certificate chain, relative to this file's folder.
    pub cert: PathBuf,
    /// PEM private key, relative to this file's folder.
    pub key: PathBuf,
    /// Offer HTTP/2 through ALPN as well as HTTP/1.1.
    #[serde(default = "yes")]
    pub h2: bool,
    /// Mutual TLS: client certificates, verified against a CA bundle. A `client_cert` policy
    /// on a route then binds the verified certificate to a channel. Absent: clients are not
    /// asked for a certificate. The certificate, key and CA files are reloaded on SIGHUP and
    /// when they change on disk (new connections get the new ones).
    #[serde(default)]
    pub client_auth: Option<ClientAuthSpec>,
}

/// Client certificates a TLS listener asks for (mutual TLS).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthSpec {
    /// PEM bundle of the CA certificates a client certificate must chain to, relative to this
    /// file's folder (partners' CAs, or the one CA that issues partner certificates).
    pub ca: PathBuf,
    /// `true` (the default): the handshake fails without a valid client certificate. `false`:
    /// a client may connect without one (routes with a `client_cert` policy then answer 401),
    /// but a certificate that is sent must still chain to `ca`, else the handshake fails.
    #[serde(default = "yes")]
    pub required: bool,
}

/// The admin listener over TLS (`listeners.admin` is its address): HTTPS only, optionally with
/// client certificates. The token rules of `admin_auth` apply on top.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminTlsSpec {
    /// PEM certificate chain, relative to this file's folder.
    pub cert: PathBuf,
    /// PEM private key, relative to this file's folder.
    pub key: PathBuf,
    /// Client certificates the admin listener asks for. Absent: none.
    #[serde(default)]
    pub client_auth: Option<ClientAuthSpec>,
}

fn yes() -> bool {
    true
}

/// Limits applied to every request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSpec {
    /// Largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: ByteSize,
    /// Body limit of routes that set none; a larger body gets 413.
    pub max_body_bytes: ByteSize,
    /// Time a client has to send a whole HTTP/1 request head (request line and headers),
    /// counted from the accepted connection, or from the first byte of a request on a reused
    /// keep-alive connection; a slower head gets 408 and the connection closed.
    pub head_timeout: DurationSpec,
    /// Longest pause allowed between two reads of a request body; a client that stops sending
    /// its body for longer gets 408 (when no answer has started) and the connection closed.
    pub body_idle_timeout: DurationSpec,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            max_header_bytes: ByteSize::kib(128),
            max_body_bytes: ByteSize::mib(1),
            head_timeout: DurationSpec::secs(10),
            body_idle_timeout: DurationSpec::secs(30),
        }
    }
}

/// A marketplace channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    /// What the channel is, for people reading the file.
    #[serde(default)]
    pub description: Option<String>,
}

/// An upstream cluster: one or more endpoints used round robin, with pooled connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// Endpoints as `host:port`; a host name is resolved when the file is compiled.
    #[schemars(length(min = 1))]
    pub endpoints: Vec<String>,
    /// TLS to the endpoints: `true` (certificates checked against the system's roots), or
    /// `{ca, cert, key}` files for a private CA and a client certificate (mutual TLS).
    #[serde(default)]
    pub tls: UpstreamTlsSpec,
    /// Speak HTTP/2 to the endpoints: offered through ALPN over TLS (HTTP/1.1 stays possible),
    /// prior knowledge (h2c) in plain text.
    #[serde(default)]
    pub http2: bool,
    /// The `Host` header sent upstream, e.g. `erp.internal`. Absent: the client's `Host` (or
    /// its HTTP/2 `:authority`).
    #[serde(default)]
    pub host: Option<String>,
    /// Server name for TLS (SNI and certificate check). Default: the endpoint's host.
    #[serde(default)]
    pub sni: Option<String>,
    /// How long to wait for a TCP (and TLS) connection; past it the gateway tries the next
    /// endpoint, then answers 502.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: DurationSpec,
    /// How long to wait for each read from the upstream (the response head, then every body
    /// chunk); past it the gateway answers 504.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: DurationSpec,
    /// Budget for the whole upstream exchange, from connecting to the last response byte;
    /// past it the gateway answers 504.
    #[serde(default = "default_total_timeout")]
    pub total_timeout: DurationSpec,
    /// How long an idle pooled connection is kept for reuse.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: DurationSpec,
    /// Largest upstream response the gateway buffers on routes with body policies; larger
    /// gets 502.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: ByteSize,
    /// Active health checks of each endpoint (off unless set). Unhealthy endpoints get no
    /// requests; probes are not counted as attempts.
    #[serde(default)]
    pub health_check: Option<HealthCheckSpec>,
    /// Passive outlier detection (on by default): failed attempts in a row eject an endpoint
    /// for a while, never all endpoints at once.
    #[serde(default)]
    pub outlier_detection: OutlierDetectionSpec,
    /// A circuit breaker per endpoint (off unless set). When every endpoint's circuit is open
    /// the gateway answers 503 with `Retry-After` at once, without connecting.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// Retries of requests that reached the upstream and failed, for requests safe to repeat
    /// (off unless set; a failed connection always moves on to the next endpoint).
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// The most requests this gateway instance has at the upstream at once (divide the
    /// upstream's capacity by the number of instances). Others wait up to `queue_timeout`,
    /// then get 503 with `Retry-After`. Absent: no limit.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_in_flight: Option<u32>,
    /// The most attempts this gateway instance sends the upstream per period (retries
    /// included), evenly spaced: `{rate: 50, per: 1s}`, optionally with a `burst`. An attempt
    /// whose turn is further away than `queue_timeout` gets 503 with `Retry-After`. Absent: no
    /// rate cap.
    #[serde(default)]
    pub max_rate: Option<MaxRateSpec>,
    /// How long a request waits for one of the `max_in_flight` slots, or for its turn under
    /// `max_rate` (at most `total_timeout`).
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout: DurationSpec,
    /// Headers added to every request sent to this upstream (for example an ERP API key).
    /// Values may reference secrets: `${ENV_VAR}` or `file:/path/to/secret`.
    #[serde(default)]
    pub request_headers: BTreeMap<String, String>,
    /// The credentials the gateway's own calls to this upstream carry (a marketplace's API):
    /// a preset (`amazon_lwa`, `walmart`, `ebay`, `shopify`) and its keys; the access token
    /// is fetched, cached and refreshed before it expires. Absent: none.
    #[serde(default)]
    pub credentials: Option<crate::credentials::CredentialsSpec>,
}

fn default_connect_timeout() -> DurationSpec {
    DurationSpec::secs(2)
}
fn default_read_timeout() -> DurationSpec {
    DurationSpec::secs(30)
}
fn default_total_timeout() -> DurationSpec {
    DurationSpec::secs(60)
}
fn default_idle_timeout() -> DurationSpec {
    DurationSpec::secs(60)
}
fn default_queue_timeout() -> DurationSpec {
    DurationSpec::secs(1)
}
fn default_max_response_bytes() -> ByteSize {
    ByteSize::mib(16)
}

/// A route: which requests it takes, the policies they pass through, and where they go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Unique name, used in metrics, logs and errors.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"))]
    pub name: String,
    /// HTTP methods this route takes, e.g. `[POST]`. Another method on the same path gets 405.
    #[schemars(length(min = 1))]
    pub methods: Vec<String>,
    /// Path template: literal segments, `{name}` for one segment, and `{*name}` for the rest
    /// of the path, e.g. `/channels/{channel}/orders`.
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
    /// Host to match (the `Host` header without port). Absent: any host.
    #[serde(default)]
    pub host: Option<String>,
    /// The upstream cluster requests are forwarded to.
    pub upstream: String,
    /// Path sent upstream, a template that may use the path parameters, e.g.
    /// `/erp/v1/orders?channel={channel}`. The request's query string is appended. Absent:
    /// the request path unchanged.
    #[serde(default)]
    pub upstream_path: Option<String>,
    /// Policies, by name, in the order they run.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Largest request body accepted; larger gets 413 and never reaches the upstream.
    /// Absent: `limits.max_body_bytes`.
    #[serde(default)]
    pub max_body_bytes: Option<ByteSize>,
    /// How documents reach the upstream: `sync` (the default: forwarded now), `queued`
    /// (stored, answered 202, delivered by a worker) or `fallback` (forwarded now, stored when
    /// the upstream cannot take it). A `queued` or `fallback` route also serves its
    /// deliveries' state at `<path>/deliveries/{id}`, behind the same authentication.
    #[serde(default)]
    pub delivery: Option<crate::queue::RouteDeliverySpec>,
    /// Fans each accepted canonical event out to several destinations, one tracked delivery
    /// each (the route needs `delivery: {mode: queued}`): the route's upstream, the
    /// marketplace the document names, every channel a SKU is listed on.
    #[serde(default)]
    pub fanout: Option<crate::fanout::FanoutSpec>,
    /// Marks the route deprecated: its answers carry `Deprecation` (RFC 9745), `Sunset`
    /// (RFC 8594) and `Link: <...>; rel="deprecation"`, its calls are counted per channel, and
    /// after the sunset it answers 410 (or keeps serving, per `after_sunset`).
    #[serde(default)]
    pub deprecation: Option<DeprecationSpec>,
}

/// The lifecycle of a deprecated route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeprecationSpec {
    /// When the route was (or will be) deprecated: an RFC 3339 date (`2026-06-30`) or date-time
    /// (`2026-06-30T12:00:00Z`).
    pub deprecated: String,
    /// When the route stops being served, in the same form, after `deprecated`. Absent: no
    /// date is announced.
    #[serde(default)]
    pub sunset: Option<String>,
    /// Where callers read about the deprecation and the route that replaces it (sent as
    /// `Link: <url>; rel="deprecation"`).
    #[serde(default)]
    pub link: Option<String>,
    /// What happens after the sunset: `refuse` (the default: 410 problem+json, nothing
    /// forwarded) or `serve` (keep forwarding, with the headers).
    #[serde(default)]
    pub after_sunset: AfterSunset,
}

/// What a route does once its sunset date has passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AfterSunset {
    /// Answer 410 Gone (problem+json), forward nothing.
    #[default]
    Refuse,
    /// Keep serving, still with the deprecation headers.
    Serve,
}
