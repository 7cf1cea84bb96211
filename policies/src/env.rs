//! The services a compile shares with every policy it builds (clock, secrets, shared stores,
//! metrics, remote fetches), made once per gateway and kept across reloads; tests inject a
//! manual clock and a fake environment.

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::fetch::{HttpGet, ReqwestGet};
use crate::kinds::PolicyMetrics;
use crate::secret::{ProcessEnv, SecretSource};
use crate::state::redis::Stores;

/// Services compile steps share; tests inject a manual clock and a fake environment.
#[derive(Clone)]
pub struct CompileEnv {
    /// The clock every policy uses.
    pub clock: Arc<dyn Clock>,
    /// Where `${ENV}` secrets come from.
    pub secrets: Arc<dyn SecretSource>,
    /// Connections to shared state, kept across reloads.
    pub stores: Arc<Stores>,
    /// Metrics policies record.
    pub metrics: Arc<PolicyMetrics>,
    /// How policies fetch remote documents (an identity provider's JWKS).
    pub http: Arc<dyn HttpGet>,
}

impl Default for CompileEnv {
    fn default() -> Self {
        CompileEnv {
            clock: Arc::new(SystemClock::new()),
            secrets: Arc::new(ProcessEnv),
            stores: Arc::new(Stores::default()),
            metrics: Arc::new(PolicyMetrics::default()),
            http: Arc::new(ReqwestGet::default()),
        }
    }
}

impl std::fmt::Debug for CompileEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileEnv")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}
