//! The Redis (or Redis Cluster) connection that the Redis implementations of every state
//! interface share. Connections are made lazily and remade after failures (so the gateway
//! starts, and recovers, while Redis is down), and every call is bounded by a timeout so a slow
//! Redis never stalls the proxy. Stores live in the compile environment, so a reload keeps its
//! connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::units::DurationSpec;

/// A Redis deployment the policies can share state through.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSpec {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS. May reference secrets,
    /// e.g. `${REDIS_URL}`; the password never appears in logs.
    pub url: String,
    /// The URL is a seed node of a Redis Cluster (keys are hash-tagged per decision).
    #[serde(default)]
    pub cluster: bool,
    /// Bound on every call; past it the call counts as failed and the policy's store-failure
    /// behaviour applies.
    #[serde(default = "default_timeout")]
    pub timeout: DurationSpec,
    /// Bound on making a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: DurationSpec,
}

fn default_timeout() -> DurationSpec {
    DurationSpec::millis(50)
}

fn default_connect_timeout() -> DurationSpec {
    DurationSpec::millis(250)
}

enum Client {
    Single(Box<redis::Client>),
    Cluster(Box<redis::cluster::ClusterClient>),
}

/// A connection of either kind.
#[derive(Clone)]
pub enum Connection {
    /// One server (multiplexed: cheap to clone, shared by concurrent calls).
    Single(MultiplexedConnection),
    /// A cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// A lazily connected, self-healing Redis handle.
pub struct RedisStore {
    client: Client,
    /// The URL without its password, for logs.
    display: String,
    timeout: Duration,
    connect_timeout: Duration,
    conn: ArcSwapOption<Connection>,
    connecting: tokio::sync::Mutex<()>,
    origin: Instant,
    /// Monotonic ms (since `origin`, +1 so 0 means never) of the last failed connect attempt.
    last_failure_ms: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.display)
            .finish_non_exhaustive()
    }
}

/// After a failed connect, calls fail fast for this long instead of each trying to connect.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(200);

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl RedisStore {
    /// A store for this (resolved) URL; nothing is connected yet.
    pub fn new(url: &str, spec: &RedisSpec) -> Result<Self, String> {
        let client = if spec.cluster {
            redis::cluster::ClusterClient::new(vec![url])
                .map(|c| Client::Cluster(Box::new(c)))
                .map_err(|e| format!("invalid redis url {}: {e}", redact(url)))?
        } else {
            redis::Client::open(url)
                .map(|c| Client::Single(Box::new(c)))
                .map_err(|e| format!("invalid redis url {}: {e}", redact(url)))?
        };
        Ok(RedisStore {
            client,
            display: redact(url),
            timeout: spec.timeout.0,
            connect_timeout: spec.connect_timeout.0,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            origin: Instant::now(),
            last_failure_ms: AtomicU64::new(0),
        })
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    async fn connection(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let last = self.last_failure_ms.load(Ordering::Relaxed);
        if last != 0 && self.now_ms().saturating_sub(last) < RECONNECT_BACKOFF.as_millis() as u64 {
            return Err(StoreError::Unavailable("reconnecting".into()));
        }
        // one connect at a time; the others wait for its result instead of piling on
        let _guard = self.connecting.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let made = match &self.client {
            Client::Single(c) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.timeout));
                tokio::time::timeout(
                    self.connect_timeout,
                    c.get_multiplexed_async_connection_with_config(&config),
                )
                .await
                .map(|r| r.map(Connection::Single))
            }
            Client::Cluster(c) => {
                tokio::time::timeout(self.connect_timeout, c.get_async_connection())
                    .await
                    .map(|r| r.map(Connection::Cluster))
            }
        };
        match made {
            Ok(Ok(conn)) => {
                self.last_failure_ms.store(0, Ordering::Relaxed);
                self.conn.store(Some(Arc::new(conn.clone())));
                Ok(conn)
            }
            Ok(Err(e)) => {
                self.last_failure_ms.store(self.now_ms(), Ordering::Relaxed);
                Err(StoreError::Unavailable(e.to_string()))
            }
            Err(_) => {
                self.last_failure_ms.store(self.now_ms(), Ordering::Relaxed);
                Err(StoreError::Unavailable("connect timed out".into()))
            }
        }
    }

    /// Runs one call (a script invocation, a command) on a connection, bounded by the timeout.
    /// A connection that broke is dropped, so the next call reconnects.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.conn.store(None);
                }
                if e.is_timeout() {
                    Err(StoreError::Timeout)
                } else {
                    Err(StoreError::Failed(e.to_string()))
                }
            }
            Err(_) => Err(StoreError::Timeout),
        }
    }
}

/// The stores of a gateway, shared across reloads: a policy asking for the same Redis spec gets
/// the same connection.
#[derive(Default)]
pub struct Stores {
    redis: Mutex<HashMap<(String, RedisSpec), Arc<RedisStore>>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    /// The store for a resolved URL and spec, made on first use.
    pub fn redis(&self, url: &str, spec: &RedisSpec) -> Result<Arc<RedisStore>, String> {
        let mut map = self.redis.lock().unwrap_or_else(|e| e.into_inner());
        let key = (url.to_owned(), spec.clone());
        if let Some(s) = map.get(&key) {
            return Ok(s.clone());
        }
        let store = Arc::new(RedisStore::new(url, spec)?);
        map.insert(key, store.clone());
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> RedisSpec {
        RedisSpec {
            url: url.into(),
            cluster: false,
            timeout: DurationSpec::millis(50),
            connect_timeout: DurationSpec::millis(100),
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:pw@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn stores_are_shared_by_spec() {
        let stores = Stores::default();
        let a = stores.redis("redis://127.0.0.1:1", &spec("x")).unwrap();
        let b = stores.redis("redis://127.0.0.1:1", &spec("x")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(stores.redis("not a url", &spec("y")).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_and_within_bounds() {
        // nothing listens on this port
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = RedisStore::new(&format!("redis://127.0.0.1:{port}"), &spec("x")).unwrap();
        let r: Result<Value, _> = store
            .call(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await;
        assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        // within the backoff, the next call does not even try
        let r: Result<Value, _> = store
            .call(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
            .await;
        assert_eq!(r, Err(StoreError::Unavailable("reconnecting".into())));
    }
}
