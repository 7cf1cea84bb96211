//! The forwarding layer: the only code that picks an endpoint, connects, retries, maps upstream
//! failures to a typed error ([`UpstreamError`]) and counts them. The streaming path (Pingora's
//! proxy, through the `ProxyHttp` adapter) and the buffered exchange both go through
//! [`Attempts`]; the endpoint state they feed (health, ejection, circuit breaker), the retry
//! budget and the `max_in_flight` slots live in each upstream's [`UpstreamPool`].

pub mod attempt;
pub mod error;
pub mod exchange;
pub mod health;
pub mod metrics;
pub mod pool;
pub mod request;

pub use attempt::{AttemptRecord, Attempts, Next};
pub use error::UpstreamError;
pub use exchange::{Answer, exchange};
pub use metrics::UpstreamMetrics;
pub use pool::UpstreamPool;
pub use request::{IDEMPOTENCY_KEY, Outbound};
