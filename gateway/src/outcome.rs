//! How a request ended (forwarded, refused at the edge or by a policy, failed upstream, stored,
//! served), as logs, traces and the business KPIs read it.

use std::sync::Arc;

use crate::forward::UpstreamError;

/// How a request was handled, for logs.
#[derive(Debug, Clone, Default)]
pub enum Outcome {
    /// Still being handled (or the client went away).
    #[default]
    Pending,
    /// Forwarded upstream and answered from it.
    Forwarded,
    /// Refused before routing or by the route table.
    Edge(&'static str),
    /// Answered by a policy.
    Policy {
        /// The policy.
        policy: Option<Arc<str>>,
        /// Its reason.
        reason: &'static str,
    },
    /// The upstream failed (or the forwarding layer refused to try it).
    Upstream(UpstreamError),
    /// Stored for later delivery and answered 202.
    Queued,
    /// Answered by the gateway itself (a delivery's state).
    Served,
}
