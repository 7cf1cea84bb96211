//! How the gateway talks to an upstream and protects it, as compiled from the upstream's keys:
//! the transport (TLS with a CA bundle and a client certificate read from files, HTTP/2, the
//! `Host` sent) and the resilience settings (health checks, outlier detection, circuit breaker,
//! retries, `max_in_flight`). The gateway's forwarding layer applies them; certificate files are
//! read and checked here, so `gateway check` reports a bad one with its location.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderValue;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ErrorSink;
use crate::resilience::breaker::CircuitBreakerSpec;
use crate::resilience::budget::RetrySpec;
use crate::resilience::ejection::OutlierDetectionSpec;
use crate::resilience::health::{HealthCheckSpec, ProbeKind};
use crate::resilience::pacing::MaxRateSpec;

/// TLS to an upstream: `true` (certificates checked against the system's roots), or the files
/// of a private CA and of a client certificate (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum UpstreamTlsSpec {
    /// `true` for TLS, `false` (the default) for plain TCP.
    Enabled(bool),
    /// TLS with these files.
    Files(UpstreamTlsFilesSpec),
}

impl Default for UpstreamTlsSpec {
    fn default() -> Self {
        UpstreamTlsSpec::Enabled(false)
    }
}

impl UpstreamTlsSpec {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        match self {
            UpstreamTlsSpec::Enabled(on) => *on,
            UpstreamTlsSpec::Files(_) => true,
        }
    }
}

/// Certificate files for TLS to an upstream, relative to the policy file's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFilesSpec {
    /// PEM bundle of the CA certificates the upstream's certificate must chain to (instead of
    /// the system's roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM certificate chain the gateway presents to the upstream (mutual TLS); needs `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// A client certificate, read and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// DER private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Vec<u8>,
}

/// How the gateway connects to an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transport {
    /// TLS to the endpoints.
    pub tls: bool,
    /// DER certificates of a private CA (empty: the system's roots).
    pub ca: Vec<Vec<u8>>,
    /// The client certificate for mutual TLS.
    pub client_cert: Option<ClientCertificate>,
    /// Offer HTTP/2 (ALPN over TLS; prior knowledge in plain text).
    pub http2: bool,
    /// The `Host` sent upstream (default: the client's).
    pub host: Option<HeaderValue>,
}

/// How the gateway protects an upstream and routes around its failures.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resilience {
    /// Active health checks.
    pub health_check: Option<HealthCheckSpec>,
    /// Passive outlier detection.
    pub outlier_detection: OutlierDetectionSpec,
    /// A circuit breaker per endpoint.
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// Retries of requests safe to repeat.
    pub retry: Option<RetrySpec>,
    /// The most requests at the upstream at once (per gateway instance).
    pub max_in_flight: Option<u32>,
    /// The most attempts per period (per gateway instance).
    pub max_rate: Option<MaxRateSpec>,
    /// How long a request waits for a `max_in_flight` slot.
    pub queue_timeout: Duration,
}

/// The upstream keys this module compiles, borrowed from the upstream's spec.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamKeys<'a> {
    /// `tls`.
    pub tls: &'a UpstreamTlsSpec,
    /// `http2`.
    pub http2: bool,
    /// `host`.
    pub host: Option<&'a str>,
    /// `health_check`.
    pub health_check: Option<&'a HealthCheckSpec>,
    /// `outlier_detection`.
    pub outlier_detection: &'a OutlierDetectionSpec,
    /// `circuit_breaker`.
    pub circuit_breaker: Option<&'a CircuitBreakerSpec>,
    /// `retry`.
    pub retry: Option<&'a RetrySpec>,
    /// `max_in_flight`.
    pub max_in_flight: Option<u32>,
    /// `max_rate`.
    pub max_rate: Option<&'a MaxRateSpec>,
    /// `queue_timeout`.
    pub queue_timeout: Duration,
    /// `total_timeout`, which waits must fit in.
    pub total_timeout: Duration,
    /// `read_timeout`.
    pub read_timeout: Duration,
}

/// Compiles the transport keys of the upstream at JSON Pointer `at`.
pub fn compile_transport(
    keys: &UpstreamKeys<'_>,
    at: &str,
    base_dir: &Path,
    errors: &mut ErrorSink<'_>,
) -> Transport {
    let mut out = Transport {
        tls: keys.tls.enabled(),
        http2: keys.http2,
        ..Transport::default()
    };
    if let Some(host) = keys.host {
        match HeaderValue::from_str(host) {
            Ok(v) if !host.is_empty() && !host.contains(['/', '@', ' ']) => out.host = Some(v),
            _ => errors.at(
                &format!("{at}/host"),
                format!("{host:?} is not a host name (host or host:port)"),
            ),
        }
    }
    if let UpstreamTlsSpec::Files(files) = keys.tls {
        if let Some(ca) = &files.ca {
            let path = base_dir.join(ca);
            match read_certificates(&path) {
                Ok(certs) => out.ca = certs,
                Err(msg) => errors.at(&format!("{at}/tls/ca"), msg),
            }
        }
        match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certificates(&base_dir.join(cert))
                    .map_err(|msg| errors.at(&format!("{at}/tls/cert"), msg))
                    .ok();
                let key = read_key(&base_dir.join(key))
                    .map_err(|msg| errors.at(&format!("{at}/tls/key"), msg))
                    .ok();
                if let (Some(chain), Some(key)) = (chain, key) {
                    out.client_cert = Some(ClientCertificate { chain, key });
                }
            }
            (Some(_), None) => errors.at(&format!("{at}/tls/cert"), "cert needs key"),
            (None, Some(_)) => errors.at(&format!("{at}/tls/key"), "key needs cert"),
            (None, None) => {}
        }
    }
    out
}

/// Compiles the resilience keys of the upstream at JSON Pointer `at`.
pub fn compile_resilience(
    keys: &UpstreamKeys<'_>,
    at: &str,
    errors: &mut ErrorSink<'_>,
) -> Resilience {
    if let Some(hc) = keys.health_check {
        if hc.kind == ProbeKind::Http && !hc.path.starts_with('/') {
            errors.at(
                &format!("{at}/health_check/path"),
                "the probe path must start with '/'",
            );
        }
        if let Some(bad) = hc.expect_status.iter().find(|s| !(100..=599).contains(*s)) {
            errors.at(
                &format!("{at}/health_check/expect_status"),
                format!("{bad} is not an HTTP status"),
            );
        }
        if hc.timeout.0 > hc.interval.0 {
            errors.at(
                &format!("{at}/health_check/timeout"),
                "the probe timeout is longer than the interval between probes",
            );
        }
        if hc.interval.0.is_zero() {
            errors.at(
                &format!("{at}/health_check/interval"),
                "the interval must be longer than zero",
            );
        }
    }
    let od = keys.outlier_detection;
    if od.max_ejection_time.0 < od.base_ejection_time.0 {
        errors.at(
            &format!("{at}/outlier_detection/max_ejection_time"),
            "max_ejection_time is shorter than base_ejection_time",
        );
    }
    if let Some(cb) = keys.circuit_breaker
        && !(0.0..=1.0).contains(&cb.failure_ratio)
    {
        errors.at(
            &format!("{at}/circuit_breaker/failure_ratio"),
            "failure_ratio must be between 0 and 1",
        );
    }
    if let Some(r) = keys.retry {
        if !(0.0..=10.0).contains(&r.budget_ratio) {
            errors.at(
                &format!("{at}/retry/budget_ratio"),
                "budget_ratio must be between 0 and 10",
            );
        }
        if let Some(bad) = r.on_status.iter().find(|s| !(400..=599).contains(*s)) {
            errors.at(
                &format!("{at}/retry/on_status"),
                format!("{bad} is not an error status (400-599)"),
            );
        }
        if r.backoff.max.0 < r.backoff.base.0 {
            errors.at(
                &format!("{at}/retry/backoff/max"),
                "backoff max is shorter than its base",
            );
        }
        if r.max_attempts > 1 && keys.read_timeout >= keys.total_timeout {
            // a hung endpoint would use the whole budget on its first attempt
            errors.at(
                &format!("{at}/retry/max_attempts"),
                "retries need read_timeout shorter than total_timeout",
            );
        }
    }
    if let Some(rate) = keys.max_rate {
        if rate.rate == 0 {
            errors.at(&format!("{at}/max_rate/rate"), "rate must be at least 1");
        }
        if rate.per.0.is_zero() {
            errors.at(
                &format!("{at}/max_rate/per"),
                "per must be longer than zero",
            );
        }
        if rate.burst == 0 {
            errors.at(&format!("{at}/max_rate/burst"), "burst must be at least 1");
        }
    }
    if keys.max_in_flight == Some(0) {
        errors.at(
            &format!("{at}/max_in_flight"),
            "max_in_flight must be at least 1",
        );
    }
    Resilience {
        health_check: keys.health_check.cloned(),
        outlier_detection: keys.outlier_detection.clone(),
        circuit_breaker: keys.circuit_breaker.cloned(),
        retry: keys.retry.cloned(),
        max_in_flight: keys.max_in_flight,
        max_rate: keys.max_rate.cloned(),
        // waiting for a slot is part of the exchange, which must fit the total budget
        queue_timeout: keys.queue_timeout.min(keys.total_timeout),
    }
}

/// Reads a PEM bundle of certificates, checking each parses as X.509.
fn read_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| format!("{shown}: not a PEM certificate: {e}"))?;
        x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| format!("{shown}: not an X.509 certificate: {e}"))?;
        out.push(cert.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(format!("{shown}: no PEM certificate in the file"));
    }
    Ok(out)
}

/// Reads a PEM private key.
fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{shown}: no PEM private key: {e}"))?;
    Ok(key.secret_der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs")
    }

    #[test]
    fn certificate_files_are_read_and_checked() {
        let certs = read_certificates(&certs_dir().join("dev-ca.crt")).unwrap();
        assert_eq!(certs.len(), 1);
        let err = read_certificates(&certs_dir().join("dev-jwks.json")).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = read_certificates(&certs_dir().join("missing.crt")).unwrap_err();
        assert!(err.starts_with("cannot read"), "{err}");
        assert!(read_key(&certs_dir().join("dev-tls.key")).is_ok());
        assert!(read_key(&certs_dir().join("dev-ca.crt")).is_err());
    }
}
