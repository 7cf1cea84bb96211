//! A compiled upstream cluster and its endpoints, as the gateway's forwarding layer reads them.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::spec::UpstreamSpec;
use crate::upstream::{Resilience, Transport};

/// One upstream endpoint, as written (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A compiled upstream cluster.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Its name.
    pub name: Arc<str>,
    /// Endpoints, used round robin.
    pub endpoints: Vec<Endpoint>,
    /// How the gateway connects (TLS, client certificate, HTTP/2, `Host`).
    pub transport: Transport,
    /// Health checks, outlier detection, circuit breaker, retries, `max_in_flight`.
    pub resilience: Resilience,
    /// TLS server name; empty means each endpoint's host.
    pub sni: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-read timeout.
    pub read_timeout: Duration,
    /// Whole-exchange budget.
    pub total_timeout: Duration,
    /// Idle time of pooled connections.
    pub idle_timeout: Duration,
    /// Largest buffered response.
    pub max_response_bytes: u64,
    /// Headers added upstream (secret values are marked sensitive).
    pub request_headers: Vec<(HeaderName, HeaderValue)>,
    /// The credentials of the gateway's own calls (marketplace APIs); `None`: none.
    pub credentials: Option<Arc<crate::credentials::Credentials>>,
    /// The spec, so the gateway can keep a pool whose upstream did not change on reload.
    pub spec: UpstreamSpec,
}
