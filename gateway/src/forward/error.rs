//! The typed upstream failure: every way an exchange with an upstream can fail, from Pingora's
//! error types or the forwarding layer's own decisions, with its metric label, the status the
//! client gets, its problem document, and how the resilience rules treat it.

use std::time::Duration;

use http::StatusCode;
use pingora::{Error, ErrorType};
use policies::problem::Problem;

/// Why an upstream exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The endpoint refused the connection.
    ConnectRefused,
    /// No connection (or TLS handshake) within `connect_timeout`.
    ConnectTimeout,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// Another failure to connect (no route, socket error).
    ConnectFailed,
    /// The connection closed or was reset before a complete answer.
    Reset,
    /// No answer (or no next body chunk) within `read_timeout`: a hung endpoint.
    ReadTimeout,
    /// The endpoint did not take the request within `read_timeout`.
    WriteTimeout,
    /// The whole exchange, retries included, did not fit `total_timeout`.
    TotalTimeout,
    /// The answer was not valid HTTP.
    Protocol,
    /// The answer was larger than `max_response_bytes`.
    ResponseTooLarge,
    /// Every endpoint's circuit is open; nothing was sent.
    CircuitOpen {
        /// When the first circuit lets a probe through.
        retry_after: Duration,
    },
    /// No endpoint is healthy (active health checks); nothing was sent.
    NoHealthyEndpoint {
        /// When the next probes run.
        retry_after: Duration,
    },
    /// `max_in_flight` requests were already at the upstream and this one waited
    /// `queue_timeout` in vain; nothing was sent.
    Saturated {
        /// A hint for the client.
        retry_after: Duration,
    },
    /// A failure inside the gateway.
    Internal,
}

impl UpstreamError {
    /// Classifies a Pingora error raised while connecting to or talking with an upstream.
    pub fn from_pingora(e: &Error) -> Self {
        match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout => {
                UpstreamError::ConnectTimeout
            }
            ErrorType::ConnectRefused => UpstreamError::ConnectRefused,
            ErrorType::TLSHandshakeFailure
            | ErrorType::InvalidCert
            | ErrorType::TLSWantX509Lookup => UpstreamError::Tls,
            ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::SocketError
            | ErrorType::BindError
            | ErrorType::ConnectProxyFailure => UpstreamError::ConnectFailed,
            ErrorType::ReadTimedout => UpstreamError::ReadTimeout,
            ErrorType::WriteTimedout => UpstreamError::WriteTimeout,
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
                UpstreamError::Reset
            }
            ErrorType::H2Error if is_reset(e) => UpstreamError::Reset,
            ErrorType::InvalidHTTPHeader
            | ErrorType::InvalidH2
            | ErrorType::H2Error
            | ErrorType::H2Downgrade => UpstreamError::Protocol,
            _ => UpstreamError::Internal,
        }
    }

    /// The `kind` label of `gateway_upstream_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::ConnectRefused => "connect_refused",
            UpstreamError::ConnectTimeout => "connect_timeout",
            UpstreamError::Tls => "tls",
            UpstreamError::ConnectFailed => "connect_error",
            UpstreamError::Reset => "connection_closed",
            UpstreamError::ReadTimeout => "read_timeout",
            UpstreamError::WriteTimeout => "write_timeout",
            UpstreamError::TotalTimeout => "total_timeout",
            UpstreamError::Protocol => "protocol",
            UpstreamError::ResponseTooLarge => "response_too_large",
            UpstreamError::CircuitOpen { .. } => "circuit_open",
            UpstreamError::NoHealthyEndpoint { .. } => "no_healthy_endpoint",
            UpstreamError::Saturated { .. } => "saturated",
            UpstreamError::Internal => "other",
        }
    }

    /// Every kind, so the series exist from the start.
    pub const KINDS: [&'static str; 14] = [
        "connect_refused",
        "connect_timeout",
        "tls",
        "connect_error",
        "connection_closed",
        "read_timeout",
        "write_timeout",
        "total_timeout",
        "protocol",
        "response_too_large",
        "circuit_open",
        "no_healthy_endpoint",
        "saturated",
        "other",
    ];

    /// Whether the request never left the gateway (it is safe to send it elsewhere).
    pub fn before_sending(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectRefused
                | UpstreamError::ConnectTimeout
                | UpstreamError::Tls
                | UpstreamError::ConnectFailed
                | UpstreamError::CircuitOpen { .. }
                | UpstreamError::NoHealthyEndpoint { .. }
                | UpstreamError::Saturated { .. }
        )
    }

    /// Whether it was a failure to connect to one endpoint (the next one is tried).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectRefused
                | UpstreamError::ConnectTimeout
                | UpstreamError::Tls
                | UpstreamError::ConnectFailed
        )
    }

    /// Whether it tells against the endpoint (outlier ejection and its circuit breaker).
    pub fn counts_against_endpoint(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectRefused
                | UpstreamError::ConnectTimeout
                | UpstreamError::Tls
                | UpstreamError::ConnectFailed
                | UpstreamError::Reset
                | UpstreamError::ReadTimeout
                | UpstreamError::WriteTimeout
                | UpstreamError::Protocol
        )
    }

    /// The `reason` label of a retry after this failure.
    pub fn retry_reason(&self) -> &'static str {
        if self.is_connect() {
            "connect"
        } else {
            match self {
                UpstreamError::ReadTimeout | UpstreamError::WriteTimeout => "timeout",
                _ => "reset",
            }
        }
    }

    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::ConnectTimeout
            | UpstreamError::ReadTimeout
            | UpstreamError::WriteTimeout
            | UpstreamError::TotalTimeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::CircuitOpen { .. }
            | UpstreamError::NoHealthyEndpoint { .. }
            | UpstreamError::Saturated { .. } => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `Retry-After` the client gets, in whole seconds (at least one).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            UpstreamError::CircuitOpen { retry_after }
            | UpstreamError::NoHealthyEndpoint { retry_after }
            | UpstreamError::Saturated { retry_after } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
                    .map(|s| s.max(1))
            }
            _ => None,
        }
    }

    /// What happened, for the problem's detail (never an address or a secret).
    pub fn describe(&self) -> &'static str {
        match self {
            UpstreamError::ConnectRefused => "the upstream refused the connection",
            UpstreamError::ConnectTimeout => "the upstream did not accept a connection in time",
            UpstreamError::Tls => "the TLS handshake with the upstream failed",
            UpstreamError::ConnectFailed => "no connection to the upstream could be made",
            UpstreamError::Reset => "the upstream closed the connection without a complete answer",
            UpstreamError::ReadTimeout => "the upstream did not answer in time",
            UpstreamError::WriteTimeout => "the upstream did not take the request in time",
            UpstreamError::TotalTimeout => "the upstream exchange exceeded the total timeout",
            UpstreamError::Protocol => "the upstream answered with invalid HTTP",
            UpstreamError::ResponseTooLarge => {
                "the upstream's answer is larger than this gateway buffers"
            }
            UpstreamError::CircuitOpen { .. } => {
                "every endpoint of the upstream is failing; its circuit breakers are open"
            }
            UpstreamError::NoHealthyEndpoint { .. } => {
                "no endpoint of the upstream passes its health checks"
            }
            UpstreamError::Saturated { .. } => {
                "the upstream is at its limit of concurrent requests and none finished in time"
            }
            UpstreamError::Internal => "the upstream exchange failed",
        }
    }

    /// The problem document the client gets.
    pub fn problem(&self, upstream: &str) -> Problem {
        let status = self.status();
        let (slug, title) = match self {
            UpstreamError::CircuitOpen { .. } => ("upstream-circuit-open", "Upstream circuit open"),
            UpstreamError::NoHealthyEndpoint { .. } => {
                ("upstream-unhealthy", "No healthy upstream endpoint")
            }
            UpstreamError::Saturated { .. } => ("upstream-saturated", "Upstream at capacity"),
            _ if status == StatusCode::GATEWAY_TIMEOUT => {
                ("upstream-timeout", "Upstream timed out")
            }
            UpstreamError::Internal => ("", "Internal Server Error"),
            _ => ("upstream-unavailable", "Upstream unavailable"),
        };
        Problem::new(status, slug, title)
            .with_detail(self.describe())
            .with_extension("upstream", upstream)
    }
}

/// Whether an HTTP/2 error is the stream or connection being reset by the peer.
fn is_reset(e: &Error) -> bool {
    e.to_string().contains("reset")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingora_errors_map_to_kinds_statuses_and_rules() {
        let e = |t| UpstreamError::from_pingora(&Error::new(t));
        assert_eq!(e(ErrorType::ConnectRefused), UpstreamError::ConnectRefused);
        assert_eq!(
            e(ErrorType::ReadTimedout).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(e(ErrorType::ConnectionClosed).kind(), "connection_closed");
        assert!(e(ErrorType::ConnectTimedout).is_connect());
        assert!(!e(ErrorType::ReadTimedout).before_sending());
        assert!(e(ErrorType::ReadTimedout).counts_against_endpoint());
        let open = UpstreamError::CircuitOpen {
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(open.retry_after(), Some(2));
        assert!(!open.counts_against_endpoint());
        assert_eq!(open.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(open.problem("erp").slug, "upstream-circuit-open");
        for kind in UpstreamError::KINDS {
            assert!(!kind.is_empty());
        }
    }
}
