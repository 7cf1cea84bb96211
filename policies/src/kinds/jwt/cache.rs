//! The verified-token cache of the `jwt` policy: a bounded, concurrent map from the SHA-256 of a
//! token (never the token itself) to what its verification established, so a client reusing
//! its token is not re-verified on every request. An entry is good until the token expires and
//! only while the key that verified it is still in the key set.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::Failure;
use super::keys::VerifyKey;
use crate::pipeline::Channel;

/// What verifying a token established (everything that does not depend on the request).
#[derive(Debug)]
pub(crate) struct Verified {
    /// `exp`, seconds since the epoch.
    pub exp: u64,
    /// The key that verified it.
    pub key: Arc<VerifyKey>,
    /// Whether it carries every scope the policy requires.
    pub scopes_ok: bool,
    /// The channel it names: `Ok(None)` when the policy does not bind tokens to channels, an
    /// error when it should name one and does not (or names an unknown one).
    pub channel: Result<Option<Channel>, Failure>,
    /// The caller it names (`jwt:<sub>`, else `jwt:<client_id>` or `jwt:<azp>`), for the
    /// access log and the deprecation view.
    pub caller: Option<Arc<str>>,
}

/// The cache key of a token.
pub(crate) type TokenHash = [u8; 32];

/// SHA-256 of a token.
pub(crate) fn token_hash(token: &[u8]) -> TokenHash {
    Sha256::digest(token).into()
}

/// A bounded cache of verified tokens (capacity 0: disabled).
pub(crate) struct TokenCache {
    inner: Option<quick_cache::sync::Cache<TokenHash, Arc<Verified>>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.inner.as_ref().map_or(0, |c| c.len()))
            .finish()
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            inner: (capacity > 0).then(|| quick_cache::sync::Cache::new(capacity)),
        }
    }

    /// Whether tokens are cached at all.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The entry of a token that has not expired (`now` and `leeway` in seconds); an expired
    /// entry is dropped.
    pub fn get(&self, hash: &TokenHash, now: u64, leeway: u64) -> Option<Arc<Verified>> {
        let cache = self.inner.as_ref()?;
        let entry = cache.get(hash)?;
        if now > entry.exp.saturating_add(leeway) {
            cache.remove(hash);
            return None;
        }
        Some(entry)
    }

    /// Remembers a verified token.
    pub fn insert(&self, hash: TokenHash, verified: Arc<Verified>) {
        if let Some(cache) = &self.inner {
            cache.insert(hash, verified);
        }
    }

    /// Forgets a token (its key left the key set).
    pub fn remove(&self, hash: &TokenHash) {
        if let Some(cache) = &self.inner {
            cache.remove(hash);
        }
    }

    /// How many tokens are cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |c| c.len())
    }
}
