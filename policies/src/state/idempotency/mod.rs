//! Idempotency records: per key, a claim in flight or a stored response, behind
//! [`RecordStore`], with an in-process implementation ([`LocalRecords`]) and a Redis one
//! ([`RedisRecords`], one script call per operation) that make the same decisions at the same
//! instants. A policy holds the [`Records`] its `store` chose.

pub mod local;
pub mod redis;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::StoreError;

pub use local::{Full, LocalRecords};
pub use redis::RedisRecords;

/// SHA-256 of a request body in canonical form.
pub type Fingerprint = [u8; 32];

/// A stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its status.
    pub status: u16,
    /// The headers kept (`replay_headers`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Its body, byte for byte.
    pub body: Bytes,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and is now this request's, in flight.
    Claimed,
    /// Another request holds the key and has not completed.
    InFlight {
        /// The holder's body fingerprint.
        fingerprint: Fingerprint,
        /// Until its lease ends.
        remaining_ms: u64,
    },
    /// A request with the key completed; its response.
    Done {
        /// Its body fingerprint.
        fingerprint: Fingerprint,
        /// Its response.
        record: Arc<Record>,
    },
}

/// Idempotency records. Times are unix milliseconds of the policy's clock, passed in, so every
/// implementation decides expiry at the same instants.
pub trait RecordStore: Send + Sync {
    /// Claims `key` for a request with this fingerprint for `lease_ms`; or reports the claim
    /// in flight, or the stored record.
    fn claim(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        token: u64,
        now_ms: u64,
        lease_ms: u64,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// Stores the response of the claim holding `token`, kept until `now_ms + ttl_ms`. False
    /// when the claim is no longer this one's, or its lease ran out.
    fn complete(
        &self,
        key: &str,
        token: u64,
        record: Record,
        now_ms: u64,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives up the claim holding `token`, so the next request with the key goes through.
    /// False when the claim is no longer this one's, or its lease ran out.
    fn release(
        &self,
        key: &str,
        token: u64,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// The records a policy chose with `store`.
#[derive(Debug)]
pub enum Records {
    /// In this process (shared with the policy it replaced on reload, when the bound matches).
    Local(Arc<LocalRecords>),
    /// On Redis.
    Redis(RedisRecords),
}

impl RecordStore for Records {
    async fn claim(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        token: u64,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Claim, StoreError> {
        match self {
            Records::Local(r) => {
                RecordStore::claim(&**r, key, fingerprint, token, now_ms, lease_ms).await
            }
            Records::Redis(r) => {
                RecordStore::claim(r, key, fingerprint, token, now_ms, lease_ms).await
            }
        }
    }

    async fn complete(
        &self,
        key: &str,
        token: u64,
        record: Record,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        match self {
            Records::Local(r) => {
                RecordStore::complete(&**r, key, token, record, now_ms, ttl_ms).await
            }
            Records::Redis(r) => RecordStore::complete(r, key, token, record, now_ms, ttl_ms).await,
        }
    }

    async fn release(&self, key: &str, token: u64, now_ms: u64) -> Result<bool, StoreError> {
        match self {
            Records::Local(r) => RecordStore::release(&**r, key, token, now_ms).await,
            Records::Redis(r) => RecordStore::release(r, key, token, now_ms).await,
        }
    }
}
