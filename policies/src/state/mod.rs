//! Where policies keep state, behind one interface per kind of state: rate-limit counters
//! ([`rate_limit::CounterStore`]) and idempotency records ([`idempotency::RecordStore`]), each
//! with an in-process and a Redis implementation ([`redis`] is the shared connection). Every
//! kind with state chooses its store with the same two keys, `store: local | redis` and
//! `on_store_error: allow | deny | local`; the kinds talk to these interfaces, never to Redis.

pub mod delivery;
pub mod idempotency;
pub mod rate_limit;
pub mod redis;

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Where a policy keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In this process.
    #[default]
    Local,
    /// In the file's shared Redis.
    Redis,
}

/// What a policy whose state is on Redis does while Redis fails (unreachable, an error, or
/// slower than its timeout). A kind refuses, at compile time, a value it cannot honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Let the request through without the store's decision. `pass`, its older name, is
    /// accepted too.
    #[serde(alias = "pass")]
    Allow,
    /// Refuse the request (503 with `Retry-After`).
    Deny,
    /// Decide in this process instead.
    Local,
}

impl OnStoreError {
    /// The value as written in a policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnStoreError::Allow => "allow",
            OnStoreError::Deny => "deny",
            OnStoreError::Local => "local",
        }
    }
}

/// Written by hand because the published schema must accept `pass` (serde's alias of `allow`,
/// so files written before the vocabulary was unified keep working); schemars ignores aliases.
impl JsonSchema for OnStoreError {
    fn schema_name() -> Cow<'static, str> {
        "OnStoreError".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "What a policy whose state is on Redis does while Redis fails (unreachable, an error, or slower than its timeout). A kind refuses a value it cannot honour.",
            "oneOf": [
                { "const": "allow", "type": "string", "description": "Let the request through without the store's decision." },
                { "const": "deny", "type": "string", "description": "Refuse the request (503 with `Retry-After`)." },
                { "const": "local", "type": "string", "description": "Decide in this process instead." },
                { "const": "pass", "type": "string", "deprecated": true, "description": "The older name of `allow`." }
            ]
        })
    }
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No connection could be made (or one was tried too recently).
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// The call did not finish within the timeout.
    #[error("redis call timed out")]
    Timeout,
    /// Redis answered with an error, or the connection broke mid-call.
    #[error("redis error: {0}")]
    Failed(String),
    /// The in-process store is full of entries it may not evict.
    #[error("the in-process store is full of in-flight requests")]
    Full,
}

impl StoreError {
    /// The `kind` label of the store-error metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Timeout => "timeout",
            StoreError::Failed(_) => "error",
            StoreError::Full => "full",
        }
    }
}

/// How a kind treats `on_store_error`: the value it applies when none is written, and the
/// values it cannot honour, each with the reason the compile error gives.
#[derive(Debug, Clone, Copy)]
pub struct OnStoreErrorRules {
    /// Applied when the policy writes none.
    pub default: OnStoreError,
    /// Refused values and why.
    pub refused: &'static [(OnStoreError, &'static str)],
}

/// The store a policy's `store` and `on_store_error` chose, once checked.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// In this process; it cannot fail, so `on_store_error` does not apply.
    Local,
    /// On the file's Redis.
    Redis {
        /// The shared connection, for the Redis implementation of the kind's store.
        redis: std::sync::Arc<self::redis::RedisStore>,
        /// What the policy does while Redis fails.
        on_error: OnStoreError,
    },
}

/// A mistake in `store` / `on_store_error`: the key it is at, and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceError {
    /// The key (`/on_store_error`).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Checks `on_store_error` against `store` and the kind's rules: the value to apply with Redis
/// (the kind's default when none is written), or the mistake.
pub fn check_on_store_error(
    store: StoreKind,
    on_store_error: Option<OnStoreError>,
    rules: &OnStoreErrorRules,
) -> Result<OnStoreError, ChoiceError> {
    match (store, on_store_error) {
        (StoreKind::Local, Some(_)) => Err(ChoiceError {
            field: "/on_store_error",
            message: "on_store_error only applies with store: redis".into(),
        }),
        (_, None) => Ok(rules.default),
        (StoreKind::Redis, Some(value)) => match rules.refused.iter().find(|(v, _)| *v == value) {
            Some((_, why)) => Err(ChoiceError {
                field: "/on_store_error",
                message: format!(
                    "on_store_error: {} cannot be honoured here: {why}",
                    value.as_str()
                ),
            }),
            None => Ok(value),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: OnStoreErrorRules = OnStoreErrorRules {
        default: OnStoreError::Deny,
        refused: &[(OnStoreError::Local, "no local decision")],
    };

    #[test]
    fn on_store_error_is_checked_against_the_store_and_the_kind() {
        assert_eq!(
            check_on_store_error(StoreKind::Redis, None, &RULES),
            Ok(OnStoreError::Deny)
        );
        assert_eq!(
            check_on_store_error(StoreKind::Redis, Some(OnStoreError::Allow), &RULES),
            Ok(OnStoreError::Allow)
        );
        let refused = check_on_store_error(StoreKind::Redis, Some(OnStoreError::Local), &RULES);
        assert_eq!(
            refused.map_err(|e| e.message),
            Err("on_store_error: local cannot be honoured here: no local decision".into())
        );
        let local = check_on_store_error(StoreKind::Local, Some(OnStoreError::Deny), &RULES);
        assert_eq!(
            local.map_err(|e| e.field),
            Err("/on_store_error"),
            "with store: local nothing can fail"
        );
    }

    #[test]
    fn pass_is_read_as_allow() {
        let v: OnStoreError = serde_json::from_str("\"pass\"").unwrap();
        assert_eq!(v, OnStoreError::Allow);
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"allow\"");
    }
}
