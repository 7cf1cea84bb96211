//! The serving snapshot (a compiled policy set with its upstream pools and metric handles) and
//! the store that swaps it atomically on reload. A request keeps the snapshot it started with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use policies::compile::compile_file;
use policies::env::CompileEnv;
use policies::error::{ConfigError, ConfigErrors};
use policies::model::{Endpoint, PolicySet};
use policies::queue::QueueStore;

use crate::delivery::runtime::{DeliveryStores, QueueRuntime, queue_runtimes};
use crate::forward::UpstreamPool;
use crate::kpi::KpiHandles;
use crate::metrics::{Metrics, RouteMetricHandles};
use crate::telemetry::Tracer;

/// Everything one request needs, immutable.
#[derive(Debug)]
pub struct Snapshot {
    /// The compiled policy file.
    pub set: PolicySet,
    /// One pool per upstream, by the upstream's index (kept from the previous snapshot when
    /// the upstream did not change, with its health, ejection and breaker state).
    pub pools: Vec<Arc<UpstreamPool>>,
    /// Metric handles for this set's routes and channels.
    pub route_metrics: RouteMetricHandles,
    /// Business-KPI handles (documents by outcome, order value) for this set.
    pub kpi: KpiHandles,
    /// One runtime per queue, by the queue's index (kept from the previous snapshot when the
    /// queue did not change).
    pub queues: Vec<Arc<QueueRuntime>>,
    /// The span exporter of the set's `tracing:` section (kept from the previous snapshot when
    /// the section did not change); `None`: no spans are recorded.
    pub tracer: Option<Arc<Tracer>>,
}

/// Changes applied on top of the file at every load (command-line overrides).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replace the endpoints of these upstreams (the demo points `erp` at its simulator).
    pub upstream_endpoints: BTreeMap<String, Vec<Endpoint>>,
    /// Where the embedded delivery stores named by relative paths live, instead of next to the
    /// policy file (`--data-dir`; the demo uses a fresh folder).
    pub data_dir: Option<PathBuf>,
}

/// How the last reload went, for `/config`.
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    /// When it ran.
    pub at: SystemTime,
    /// Whether it was applied.
    pub ok: bool,
    /// Its errors, if it failed.
    pub errors: Vec<String>,
}

/// The current snapshot, and how to build the next one.
pub struct ConfigStore {
    current: ArcSwap<Snapshot>,
    file: PathBuf,
    env: CompileEnv,
    overrides: Overrides,
    metrics: Arc<Metrics>,
    reload_lock: Mutex<Option<ReloadStatus>>,
    deliveries: DeliveryStores,
}

impl std::fmt::Debug for ConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigStore")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

fn build(
    file: &Path,
    env: &CompileEnv,
    overrides: &Overrides,
    metrics: &Metrics,
    deliveries: &DeliveryStores,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, ConfigErrors> {
    let mut set = compile_file(file, env, previous.map(|p| &p.set))?;
    warm_up(&set)?;
    // what `gateway check` warns about (a sunset past), said once per load
    for w in set.warnings() {
        tracing::warn!(warning = %w, "policy file");
    }
    for (name, endpoints) in &overrides.upstream_endpoints {
        if let Some(u) = set.upstreams.iter_mut().find(|u| &*u.name == name) {
            Arc::make_mut(u).endpoints = endpoints.clone();
        }
    }
    // a token endpoint given as a path is on the upstream's own host (after any override)
    for u in &mut set.upstreams {
        let (Some(c), Some(e)) = (&u.credentials, u.endpoints.first()) else {
            continue;
        };
        if c.token_url_is_relative() {
            let scheme = if u.transport.tls { "https" } else { "http" };
            let host = if e.host.contains(':') {
                format!("[{}]", e.host)
            } else {
                e.host.clone()
            };
            let placed = Arc::new(c.on_host(&format!("{scheme}://{host}:{}", e.port)));
            Arc::make_mut(u).credentials = Some(placed);
        }
    }
    if let Some(dir) = &overrides.data_dir {
        for q in &mut set.queues {
            if matches!(q.store, QueueStore::Embedded(_)) {
                let file = q.spec.path.as_deref().unwrap_or("deliveries.redb");
                let path = Path::new(file);
                if path.is_relative() {
                    Arc::make_mut(q).store = QueueStore::Embedded(dir.join(path));
                }
            }
        }
    }
    let mut pools = Vec::with_capacity(set.upstreams.len());
    for u in &set.upstreams {
        let prev = previous.and_then(|p| p.pools.iter().find(|pool| pool.upstream.name == u.name));
        let pool = UpstreamPool::build(u.clone(), &metrics.upstream, prev).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.to_path_buf(),
                location: None,
                message: e.to_string(),
            }])
        })?;
        pools.push(pool);
    }
    let route_metrics = RouteMetricHandles::new(
        set.routes.iter().map(|r| r.name.clone()).collect(),
        set.channels.names().to_vec(),
    );
    let kpi = KpiHandles::new(&set);
    let queues = queue_runtimes(
        &set.queues,
        set.queue_redis.as_ref(),
        deliveries,
        &metrics.delivery,
        &env.clock,
        previous.map_or(&[], |p| &p.queues[..]),
    )
    .map_err(|message| {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            location: None,
            message,
        }])
    })?;
    let tracer = match (&set.tracing, previous.and_then(|p| p.tracer.as_ref())) {
        (None, _) => None,
        (Some(s), Some(prev)) if prev.settings() == s => Some(prev.clone()),
        (Some(s), _) => Some(Arc::new(
            Tracer::start(s.clone(), &metrics.traces).map_err(|e| {
                ConfigErrors(vec![ConfigError {
                    file: file.to_path_buf(),
                    location: None,
                    message: format!("cannot start the span exporter: {e}"),
                }])
            })?,
        )),
    };
    Ok(Snapshot {
        tracer,
        set,
        pools,
        route_metrics,
        kpi,
        queues,
    })
}

/// Runs the set's warm-up (such as fetching identity providers' keys) to completion on a small
/// runtime of its own thread: `load` runs before Pingora starts and reloads run on the SIGHUP
/// thread, and neither may block inside a runtime. A failure fails the load or reload like a
/// compile error, so a set never serves (or replaces the serving one) without its keys.
fn warm_up(set: &PolicySet) -> Result<(), ConfigErrors> {
    let fail = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: set.version.file.clone(),
            location: None,
            message,
        }])
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| fail(format!("cannot start the warm-up runtime: {e}")))?;
            rt.block_on(set.warm_up())
        })
        .join()
        .unwrap_or_else(|_| Err(fail("the policy warm-up panicked".into())))
    })
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl ConfigStore {
    /// Compiles the file for the first time.
    pub fn load(
        file: PathBuf,
        env: CompileEnv,
        overrides: Overrides,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigErrors> {
        let deliveries = DeliveryStores::default();
        let snapshot = build(&file, &env, &overrides, &metrics, &deliveries, None)?;
        metrics
            .config_loaded_at
            .set(unix_secs(snapshot.set.version.loaded_at));
        Ok(ConfigStore {
            current: ArcSwap::from_pointee(snapshot),
            file,
            env,
            overrides,
            metrics,
            reload_lock: Mutex::new(None),
            deliveries,
        })
    }

    /// The snapshot new requests use.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The clock policies use (the test clock in a `test-hooks` build), which deliveries
    /// schedule by too.
    pub fn clock(&self) -> &Arc<dyn policies::clock::Clock> {
        &self.env.clock
    }

    /// The policy file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// How the last reload went.
    pub fn last_reload(&self) -> Option<ReloadStatus> {
        self.reload_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Recompiles the file; on success swaps the snapshot, on failure keeps serving the old
    /// one. Reloads are serialized.
    pub fn reload(&self) -> Result<Arc<Snapshot>, ConfigErrors> {
        let mut status = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.current.load_full();
        let result = build(
            &self.file,
            &self.env,
            &self.overrides,
            &self.metrics,
            &self.deliveries,
            Some(&previous),
        );
        match result {
            Ok(next) => {
                if next.set.listeners != previous.set.listeners {
                    tracing::warn!(
                        file = %self.file.display(),
                        "listener settings changed; they take effect at the next start or graceful upgrade"
                    );
                }
                let next = Arc::new(next);
                self.current.store(next.clone());
                self.metrics
                    .config_reloads
                    .with_label_values(&["success"])
                    .inc();
                self.metrics
                    .config_loaded_at
                    .set(unix_secs(next.set.version.loaded_at));
                tracing::info!(
                    file = %self.file.display(),
                    version = %next.set.version.hash,
                    summary = %next.set.summary(),
                    "policy set reloaded"
                );
                *status = Some(ReloadStatus {
                    at: SystemTime::now(),
                    ok: true,
                    errors: Vec::new(),
                });
                Ok(next)
            }
            Err(errors) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                for e in &errors.0 {
                    tracing::error!(error = %e, "policy set reload rejected");
                }
                tracing::error!(
                    file = %self.file.display(),
                    errors = errors.0.len(),
                    version = %previous.set.version.hash,
                    "reload failed; still serving the previous policy set"
                );
                *status = Some(ReloadStatus {
                    at: SystemTime::now(),
                    ok: false,
                    errors: errors.0.iter().map(ToString::to_string).collect(),
                });
                Err(errors)
            }
        }
    }
}
