//! The Redis (or Redis Cluster) connection that the Redis implementations of every state
//! interface share. Connections are made lazily and remade after failures (so the gateway
//! starts, and recovers, while Redis is down), and every call is bounded by a timeout so a slow
//! Redis never stalls the proxy. Stores live in the compile environment, so a reload keeps its
//! connections. `rediss://` speaks TLS (rustls), trusting a private CA from a file or, without
//! one, the public web PKI roots, with an optional client certificate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS (the server's
    /// certificate is verified against `tls.ca`, or without it the public web PKI roots, and
    /// must name the URL's host). May reference secrets, e.g. `${REDIS_URL}`; the password
    /// never appears in logs. The `#insecure` fragment (no verification) is refused.
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
    /// TLS settings of a `rediss://` URL: the CA that signed the server's certificate and the
    /// client certificate (redis-server asks for one unless `tls-auth-clients no`). Only with
    /// `rediss://`.
    #[serde(default)]
    pub tls: Option<RedisTlsSpec>,
}

/// How a `rediss://` connection is verified and authenticated. The files are PEM, relative to
/// the policy file's folder, and read when the policy file is compiled (a reload that changes
/// this section, or a restart, picks up new files).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RedisTlsSpec {
    /// CA bundle that signed the server's certificate (a private CA). Absent: the public web
    /// PKI roots (managed Redis services).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate chain presented to the server (mutual TLS); with `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

impl RedisSpec {
    /// The spec with its TLS file paths made absolute against `base_dir` (the policy file's
    /// folder), so stores are shared by what they really read.
    pub fn relative_to(&self, base_dir: &Path) -> RedisSpec {
        let mut spec = self.clone();
        if let Some(tls) = &mut spec.tls {
            for p in [&mut tls.ca, &mut tls.client_cert, &mut tls.client_key]
                .into_iter()
                .flatten()
            {
                *p = base_dir.join(&*p);
            }
        }
        spec
    }
}

/// The TLS material of a spec, read and checked; `None` for a `redis://` URL.
fn tls_certificates(url: &str, spec: &RedisSpec) -> Result<Option<redis::TlsCertificates>, String> {
    let secure = url.starts_with("rediss://");
    if secure && url.contains('#') {
        return Err(format!(
            "redis url {}: a fragment (such as #insecure, which turns certificate verification off) is not accepted; trust a private CA with tls.ca",
            redact(url)
        ));
    }
    let Some(tls) = &spec.tls else {
        // `rediss://` alone: the public roots, no client certificate
        return Ok(secure.then_some(redis::TlsCertificates {
            client_tls: None,
            root_cert: None,
        }));
    };
    if !secure {
        return Err(format!(
            "redis url {}: tls settings need a rediss:// URL",
            redact(url)
        ));
    }
    let read = |field: &str, p: &PathBuf| {
        std::fs::read(p).map_err(|e| format!("redis tls.{field} {}: {e}", p.display()))
    };
    let pem_certs = |field: &str, p: &PathBuf, bytes: &[u8]| {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                format!(
                    "redis tls.{field} {}: not PEM certificates: {e}",
                    p.display()
                )
            })?;
        if certs.is_empty() {
            return Err(format!(
                "redis tls.{field} {}: no PEM certificate in the file",
                p.display()
            ));
        }
        Ok(())
    };
    let root_cert = match &tls.ca {
        Some(p) => {
            let bytes = read("ca", p)?;
            pem_certs("ca", p, &bytes)?;
            Some(bytes)
        }
        None => None,
    };
    let client_tls = match (&tls.client_cert, &tls.client_key) {
        (Some(c), Some(k)) => {
            let client_cert = read("client_cert", c)?;
            pem_certs("client_cert", c, &client_cert)?;
            let client_key = read("client_key", k)?;
            {
                use rustls_pki_types::pem::PemObject;
                rustls_pki_types::PrivateKeyDer::from_pem_slice(&client_key).map_err(|_| {
                    format!(
                        "redis tls.client_key {}: no PEM private key in the file",
                        k.display()
                    )
                })?;
            }
            Some(redis::ClientTlsConfig {
                client_cert,
                client_key,
            })
        }
        (None, None) => None,
        _ => {
            return Err(
                "redis tls: client_cert and client_key go together (mutual TLS needs both)"
                    .to_owned(),
            );
        }
    };
    ensure_crypto_provider();
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// The redis crate builds its rustls config with the process-wide crypto provider; install
/// ring (the provider the rest of the gateway's rustls uses) unless one is set, so a build that
/// also links another provider cannot make TLS connections fail at runtime.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // losing the race to another thread installing one is fine
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
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
    /// A store for this (resolved) URL; nothing is connected yet (the TLS files are read now).
    pub fn new(url: &str, spec: &RedisSpec) -> Result<Self, String> {
        let invalid = |e: redis::RedisError| format!("invalid redis url {}: {e}", redact(url));
        let certs = tls_certificates(url, spec)?;
        let client = if spec.cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(vec![url]);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            builder
                .build()
                .map(|c| Client::Cluster(Box::new(c)))
                .map_err(invalid)?
        } else {
            match certs {
                Some(certs) => redis::Client::build_with_tls(url, certs),
                None => redis::Client::open(url),
            }
            .map(|c| Client::Single(Box::new(c)))
            .map_err(invalid)?
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
            tls: None,
        }
    }

    #[test]
    fn tls_settings_are_checked_when_the_store_is_made() {
        let dir = std::env::temp_dir().join(format!("redis-tls-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("garbage.pem"), "not a certificate").unwrap();
        let with = |tls: RedisTlsSpec| RedisSpec {
            tls: Some(tls),
            ..spec("x")
        };
        let err = |url: &str, s: &RedisSpec| RedisStore::new(url, s).unwrap_err();
        // plain redis:// with tls settings, and the insecure fragment, are refused
        let e = err("redis://h:1", &with(RedisTlsSpec::default()));
        assert!(e.contains("need a rediss:// URL"), "{e}");
        let e = err("rediss://u:pw@h:1/#insecure", &spec("x"));
        assert!(e.contains("#insecure") && !e.contains("pw"), "{e}");
        let e = err(
            "rediss://h:1",
            &with(RedisTlsSpec {
                ca: Some(dir.join("missing.pem")),
                ..RedisTlsSpec::default()
            }),
        );
        assert!(e.contains("tls.ca") && e.contains("missing.pem"), "{e}");
        let e = err(
            "rediss://h:1",
            &with(RedisTlsSpec {
                ca: Some(dir.join("garbage.pem")),
                ..RedisTlsSpec::default()
            }),
        );
        assert!(
            e.contains("no PEM certificate") && e.contains("garbage.pem"),
            "{e}"
        );
        let e = err(
            "rediss://h:1",
            &with(RedisTlsSpec {
                client_cert: Some(dir.join("garbage.pem")),
                ..RedisTlsSpec::default()
            }),
        );
        assert!(e.contains("go together"), "{e}");
        // rediss:// alone is fine (public roots), and paths resolve against the file's folder
        assert!(RedisStore::new("rediss://h:1", &spec("x")).is_ok());
        let rel = with(RedisTlsSpec {
            ca: Some("ca.pem".into()),
            ..RedisTlsSpec::default()
        })
        .relative_to(Path::new("/etc/gw"));
        assert_eq!(
            rel.tls.unwrap().ca.unwrap(),
            PathBuf::from("/etc/gw/ca.pem")
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
