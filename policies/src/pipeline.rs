//! The request pipeline as policies see it: plain views of the request and response, the
//! per-request state that phases share, and the phase trait with a no-op default per phase (in
//! Pingora's style). It names no policy kind: kinds implement these phases, `chain` runs them.

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use crate::problem::Reply;
use crate::route::PathParams;

/// What a phase decides: go on, or answer with this reply instead.
pub type Flow = ControlFlow<Reply>;

/// A channel the gateway knows, as resolved for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Index in the policy set's channel list (dense, for metric handle tables).
    pub index: usize,
    /// The channel's name.
    pub name: Arc<str>,
}

/// The request as policies see it (read-only; changes go through [`ExchangeState`]).
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path, still percent-encoded.
    pub path: &'a str,
    /// Query string without `?`.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Parameters captured by the route.
    pub params: &'a PathParams,
}

/// The upstream's response as response policies see it.
#[derive(Debug)]
pub struct ResponseView<'a> {
    /// Status; body policies of buffered routes may change it (streaming routes cannot).
    pub status: StatusCode,
    /// Headers, which response policies may change.
    pub headers: &'a mut HeaderMap,
}

/// How a request ended, for `on_complete`.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// The status sent to the client (0 if none could be sent). For a buffered exchange
    /// whose client went away before the answer was written, the status it had.
    pub status: u16,
    /// Whether the request was forwarded upstream, or stored for a later delivery to it.
    pub forwarded: bool,
    /// The response headers sent, when the exchange was buffered.
    pub headers: Option<&'a HeaderMap>,
    /// The response body sent, when the exchange was buffered.
    pub body: Option<&'a Bytes>,
}

/// State one request carries through every phase of every policy.
#[derive(Debug, Default)]
pub struct ExchangeState {
    /// The request id (accepted from the client or generated).
    pub request_id: String,
    /// The client certificate the connection's TLS handshake verified (mutual TLS), set by the
    /// gateway before any phase; `None` on plain HTTP or when the client sent none.
    pub client_cert: Option<Arc<ClientIdentity>>,
    /// The channel, once known (from the path or an authenticated identity).
    pub channel: Option<Channel>,
    /// The name of the route that took the request (set by the gateway before any phase).
    pub route: Option<Arc<str>>,
    /// Who the first authentication policy that accepted the request says the caller is,
    /// as `<policy kind>:<id>` (`jwt:<sub or client_id>`, `webhook_signature:<channel>`,
    /// `ebay_signature:<channel>`): the access log's `caller` and the deprecation view's
    /// clients. `None`: no authentication policy accepted it (yet).
    pub caller: Option<Arc<str>>,
    /// Headers to set on the request sent upstream.
    pub upstream_headers: HeaderMap,
    /// Client headers not to send upstream (credentials the edge consumed), removed before
    /// `upstream_headers` are set.
    pub upstream_removed_headers: Vec<http::HeaderName>,
    /// Headers to set on the response sent to the client, whatever its status.
    pub response_headers: HeaderMap,
    /// Typed data a policy keeps between its own phases (one slot per type).
    pub extensions: http::Extensions,
    /// The policy phases run so far, recorded only when the request is traced (`Some`), for
    /// one span each; `None` costs the chain one branch per policy.
    pub policy_runs: Option<Vec<PolicyRun>>,
}

/// Phases as bits, for [`Phases::PHASES`].
pub mod phase {
    /// `on_request`.
    pub const REQUEST: u8 = 1;
    /// `on_request_body`.
    pub const REQUEST_BODY: u8 = 2;
    /// `on_response`.
    pub const RESPONSE: u8 = 4;
    /// `on_response_body`.
    pub const RESPONSE_BODY: u8 = 8;
    /// `on_complete`.
    pub const COMPLETE: u8 = 16;
    /// Every phase.
    pub const ALL: u8 = 31;
}

/// One phase of one policy, as a traced request ran it.
#[derive(Debug, Clone)]
pub struct PolicyRun {
    /// The policy's name in the file.
    pub policy: Arc<str>,
    /// Its kind (`jwt`, `rate_limit`, ...).
    pub kind: &'static str,
    /// `request`, `request_body`, `response`, `response_body` or `complete`.
    pub phase: &'static str,
    /// When the phase started.
    pub started: std::time::Instant,
    /// When it ended.
    pub ended: std::time::Instant,
    /// The status and reason of its reply, when it answered instead of letting the request on.
    pub refused: Option<(u16, &'static str)>,
}

/// The request body parsed as JSON by one policy, kept for the next ones so the body is parsed
/// once per request. It is only valid for the exact bytes it was parsed from.
#[derive(Debug, Clone)]
pub struct ParsedBody {
    ptr: usize,
    len: usize,
    /// The parsed document.
    pub value: serde_json::Value,
}

impl ParsedBody {
    /// Remembers `value` as the parse of `body`.
    pub fn new(body: &Bytes, value: serde_json::Value) -> Self {
        ParsedBody {
            ptr: body.as_ptr() as usize,
            len: body.len(),
            value,
        }
    }

    /// Takes the parse of `body` out of the state, if a policy left one for these very bytes.
    pub fn take(state: &mut ExchangeState, body: &Bytes) -> Option<serde_json::Value> {
        let parsed = state.extensions.remove::<ParsedBody>()?;
        (parsed.ptr == body.as_ptr() as usize && parsed.len == body.len()).then_some(parsed.value)
    }
}

/// Who sent the request, as established by an authentication policy, which puts it in
/// [`ExchangeState::extensions`]; later policies (rate limits keyed by account or client) read
/// it from there. Absent when no authentication policy ran before them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// The authenticated account (the token's `sub`).
    pub subject: Option<String>,
    /// The OAuth client (RFC 9068 `client_id`, or `azp`).
    pub client_id: Option<String>,
    /// The token's claims, for policies keyed by another claim.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// A client certificate verified by the TLS handshake (against the listener's CA bundle), as
/// policies see it: what a `client_cert` policy matches to bind it to a channel, and what the
/// access log names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject's common name (the first CN), if any.
    pub common_name: Option<String>,
    /// The subject as RFC 4514 text, e.g. `CN=acme-3pl,O=Acme`.
    pub subject: String,
    /// The DNS names of its subjectAltName.
    pub dns_names: Vec<String>,
    /// The URIs of its subjectAltName (SPIFFE ids and the like).
    pub uris: Vec<String>,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub fingerprint_sha256: String,
}

/// The longest caller id kept (in bytes, cut at a character boundary): a token's `sub` is
/// whatever its issuer put there, and it ends up in every log line.
pub const MAX_CALLER_BYTES: usize = 128;

/// A caller id `<kind>:<id>`, cut to [`MAX_CALLER_BYTES`].
pub fn caller_id(kind: &str, id: &str) -> Arc<str> {
    let mut text = format!("{kind}:{id}");
    if text.len() > MAX_CALLER_BYTES {
        let mut end = MAX_CALLER_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    Arc::from(text)
}

/// The phases of a policy. Every phase has a no-op default; a kind implements the ones it
/// needs. Kinds are dispatched through the closed `kinds::Policy` enum, so no phase is boxed.
pub trait Phases {
    /// The phases this kind implements ([`phase`] bits): a traced request gets a span for
    /// each of them, none for the phases left at their no-op default, and a phase no policy of
    /// a route implements is not run for it at all (`Chain::runs`).
    const PHASES: u8 = phase::ALL;

    /// Whether this policy needs the whole request or response body (it has a body phase);
    /// routes with such a policy buffer the exchange.
    fn needs_body(&self) -> bool {
        false
    }

    /// Whether this policy also guards the reads a route serves besides its own requests (the
    /// state of its deliveries): authentication and rate limits do; body checks, transforms
    /// and idempotency do not apply to a read.
    fn guards_reads(&self) -> bool {
        false
    }

    /// Whether this policy makes a request safe to send upstream more than once, so the
    /// forwarding layer may retry it after it reached the upstream (an idempotency policy: each
    /// attempt then carries one upstream `Idempotency-Key`).
    fn makes_repeats_safe(&self) -> bool {
        false
    }

    /// Prepares the policy before its set serves (for example fetching an identity provider's
    /// keys). Runs when a set is loaded or reloaded, before the gateway reports ready or swaps
    /// the set in; an error fails that load or reload like a compile error.
    fn warm_up(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }

    /// Request headers arrived.
    fn on_request(
        &self,
        _req: &RequestView<'_>,
        _state: &mut ExchangeState,
    ) -> impl Future<Output = Flow> + Send {
        async { Flow::Continue(()) }
    }

    /// The whole request body arrived; it may be replaced.
    fn on_request_body(
        &self,
        _req: &RequestView<'_>,
        _state: &mut ExchangeState,
        _body: &mut Bytes,
    ) -> impl Future<Output = Flow> + Send {
        async { Flow::Continue(()) }
    }

    /// The upstream's response headers arrived.
    fn on_response(
        &self,
        _resp: &mut ResponseView<'_>,
        _state: &mut ExchangeState,
    ) -> impl Future<Output = Flow> + Send {
        async { Flow::Continue(()) }
    }

    /// The upstream's whole response body arrived (buffered routes only); it may be replaced.
    fn on_response_body(
        &self,
        _resp: &mut ResponseView<'_>,
        _state: &mut ExchangeState,
        _body: &mut Bytes,
    ) -> impl Future<Output = Flow> + Send {
        async { Flow::Continue(()) }
    }

    /// The exchange is over (logging, metrics, storing records).
    fn on_complete(
        &self,
        _done: &Completion<'_>,
        _state: &mut ExchangeState,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
}
