//! Active health probes of one upstream, through Pingora's load-balancing health checks: an HTTP
//! `GET` of the configured path on a connection of its own (with the upstream's TLS, client
//! certificate and HTTP version), healthy when the status is expected; or a TCP connection.
//! Probes go around the forwarding layer, so they never count as attempts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::header::HOST;
use pingora::http::RequestHeader;
use pingora::lb::Backend;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::upstreams::peer::{BasicPeer, HttpPeer, Peer};
use pingora::{Error, ErrorType};
use policies::resilience::health::{HealthCheckSpec, ProbeKind};

/// The probe of an upstream's endpoints.
pub struct Prober {
    check: Box<dyn HealthCheck + Send + Sync>,
    /// The spec it was made from.
    pub spec: HealthCheckSpec,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// When one endpoint is probed next, and whether a probe runs now.
#[derive(Debug, Default)]
pub struct ProbeSchedule {
    /// Milliseconds since the origin at which the next probe is due.
    next_ms: AtomicU64,
    running: AtomicBool,
}

impl ProbeSchedule {
    /// Claims the probe due at `now_ms`, if any (one at a time per endpoint).
    pub fn claim(&self, now_ms: u64) -> bool {
        now_ms >= self.next_ms.load(Ordering::Acquire)
            && self
                .running
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// The claimed probe finished at `now_ms`; the next one is due `interval` later.
    pub fn done(&self, now_ms: u64, interval: Duration) {
        self.next_ms
            .store(now_ms + interval.as_millis() as u64, Ordering::Release);
        self.running.store(false, Ordering::Release);
    }
}

impl Prober {
    /// A prober for endpoints reached like `template` (its TLS, ALPN and certificates), sending
    /// `host` as the HTTP probe's `Host`.
    pub fn new(spec: &HealthCheckSpec, template: &HttpPeer, host: &str) -> pingora::Result<Self> {
        let timeout = Some(spec.timeout.0);
        let check: Box<dyn HealthCheck + Send + Sync> = match spec.kind {
            ProbeKind::Http => {
                let mut check = HttpHealthCheck::new(host, false);
                let mut peer = template.clone();
                peer.options.connection_timeout = timeout;
                peer.options.total_connection_timeout = timeout;
                peer.options.read_timeout = timeout;
                peer.options.write_timeout = timeout;
                check.peer_template = peer;
                let mut req = RequestHeader::build("GET", spec.path.as_bytes(), None)?;
                req.insert_header(HOST, host)?;
                req.insert_header("user-agent", "retail-gateway-health-check")?;
                check.req = req;
                let expected = spec.expect_status.clone();
                check.validator = Some(Box::new(move |resp| {
                    if expected.contains(&resp.status.as_u16()) {
                        Ok(())
                    } else {
                        Error::e_explain(
                            ErrorType::CustomCode("unexpected status", resp.status.as_u16()),
                            "health probe",
                        )
                    }
                }));
                Box::new(check)
            }
            ProbeKind::Tcp => {
                let mut check = TcpHealthCheck::default();
                let mut peer = BasicPeer::new("0.0.0.0:1");
                // a basic peer speaks TLS when it has a server name
                if template.tls() {
                    peer.sni = template.sni.clone();
                }
                peer.options = template.options.clone();
                peer.options.connection_timeout = timeout;
                peer.options.total_connection_timeout = timeout;
                check.peer_template = peer;
                Box::new(check)
            }
        };
        Ok(Prober {
            check,
            spec: spec.clone(),
        })
    }

    /// Probes the endpoint at `address` once; true when it is healthy.
    pub async fn probe(&self, address: &str) -> bool {
        let Ok(backend) = Backend::new(address) else {
            return false;
        };
        // the probe's own timeouts bound each step; this bounds the whole of it
        let whole = self.spec.timeout.0 * 2;
        matches!(
            tokio::time::timeout(whole, self.check.check(&backend)).await,
            Ok(Ok(()))
        )
    }
}
