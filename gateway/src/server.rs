//! Starting the gateway: load the policy set, bind the listeners (resolving port 0), install the
//! SIGHUP reload, and run the Pingora server with the proxy and admin services.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum as _;
use pingora::apps::http_app::HttpServer;
use pingora::connectors::http::Connector;
use pingora::server::Server;
use pingora::server::ShutdownWatch;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;
use policies::env::CompileEnv;
use policies::kinds::PolicyMetrics;

use crate::admin::{AdminApp, Lifecycle, Readiness};
use crate::admin_auth::AuthLayer;
use crate::delivery::outbound::Throttle;
use crate::delivery::worker::{DeliveryService, Outbound as DeliveryOutbound};
use crate::metrics::Metrics;
use crate::outbound_auth::OutboundAuth;
use crate::pool_race::CountLostConnections;
use crate::proxy::Gateway;
use crate::snapshot::{ConfigStore, Overrides};
use policies::admin_auth::AdminAuth;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The policy file.
    pub config: PathBuf,
    /// Override the file's plain listener.
    pub http: Option<String>,
    /// Override the file's TLS listener address.
    pub https: Option<String>,
    /// Override the file's admin listener.
    pub admin: Option<String>,
    /// Read the admin token (first line) and, during a rotation, the previous one (second
    /// line) from this file instead of `listeners.admin_auth`.
    pub admin_token_file: Option<PathBuf>,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// How the worker threads share the work.
    pub scheduler: Scheduler,
    /// Take over the listeners of a running gateway (Pingora graceful upgrade).
    pub upgrade: bool,
    /// Seconds to keep serving after SIGTERM before draining.
    pub grace_period_secs: u64,
    /// Seconds to wait for in-flight requests when shutting down.
    pub shutdown_timeout_secs: u64,
    /// Overrides applied on every load.
    pub overrides: Overrides,
}

/// How the worker threads share connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheduler {
    /// `per-thread` with one worker, `work-stealing` with more.
    #[default]
    Auto,
    /// Each worker runs its own single-threaded scheduler; a connection is given to one at
    /// accept and stays there, as nginx and HAProxy workers share connections. With one worker
    /// a request costs less CPU than on the work-stealing scheduler (8–21 % in the load test,
    /// benches/README.md). With more, Pingora's pool loses 2–4 % of its pooled connections
    /// between them (`crate::pool_race`), and a request cost ~5 % more than work-stealing.
    PerThread,
    /// One multi-threaded scheduler whose idle workers take tasks from busy ones: evener load
    /// when a few long-lived connections carry most of the traffic, and no pooled connection
    /// lost between workers.
    WorkStealing,
}

impl Scheduler {
    /// Whether `threads` workers run the work-stealing scheduler.
    pub fn steals_work(self, threads: usize) -> bool {
        match self {
            Scheduler::Auto => threads > 1,
            Scheduler::PerThread => false,
            Scheduler::WorkStealing => true,
        }
    }
}

/// The listeners actually bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listening {
    /// Plain HTTP.
    pub http: Option<SocketAddr>,
    /// TLS.
    pub https: Option<SocketAddr>,
    /// Admin.
    pub admin: Option<SocketAddr>,
    /// Whether the admin listener requires a token (without one it is on loopback only).
    pub admin_token: bool,
}

/// Turns `ip:0` into a concrete free port, so the chosen address can be printed (tests read
/// it). The probe that found it goes into `held` and is released, with the others, just before
/// Pingora binds the port again: while it is held, the next listener's probe cannot be given
/// the same port (with each probe closed at once, two listeners could get one port).
fn concrete(addr: &str, held: &mut Vec<TcpListener>) -> anyhow::Result<SocketAddr> {
    let parsed: SocketAddr = addr
        .parse()
        .with_context(|| format!("listener address {addr:?} must be ip:port"))?;
    if parsed.port() != 0 {
        return Ok(parsed);
    }
    let probe = TcpListener::bind(parsed).with_context(|| format!("cannot bind {addr}"))?;
    let chosen = probe.local_addr()?;
    held.push(probe);
    Ok(chosen)
}

/// Loads the policy file, printing every error; exits the process with status 1 on failure.
pub fn load_store(
    config: PathBuf,
    overrides: Overrides,
    metrics: Arc<Metrics>,
) -> Arc<ConfigStore> {
    let policy_metrics = match PolicyMetrics::register(metrics.registry()) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("gateway: cannot register policy metrics: {e}");
            std::process::exit(1);
        }
    };
    #[cfg_attr(not(feature = "test-hooks"), allow(unused_mut))]
    let mut env = CompileEnv {
        metrics: policy_metrics,
        ..CompileEnv::default()
    };
    // end-to-end tests move the gateway's time through a file instead of sleeping
    #[cfg(feature = "test-hooks")]
    if let Some(file) = std::env::var_os(policies::clock::TEST_CLOCK_OFFSET_ENV) {
        env.clock = Arc::new(policies::clock::TestOffsetClock::new(file));
    }
    match ConfigStore::load(config, env, overrides, metrics) {
        Ok(store) => Arc::new(store),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!(
                "gateway: the policy file has {} error(s); not starting",
                errors.0.len()
            );
            std::process::exit(1);
        }
    }
}

/// Runs the gateway until it is told to stop. Does not return on success.
pub fn run(
    opts: RunOptions,
    on_listening: impl FnOnce(&Listening) + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new()?);
    let store = load_store(opts.config.clone(), opts.overrides.clone(), metrics.clone());
    let snapshot = store.current();
    let spec = &snapshot.set.listeners;

    let http = opts.http.clone().or_else(|| spec.http.clone());
    let https = spec.https.clone();
    let https_addr = opts
        .https
        .clone()
        .or_else(|| https.as_ref().map(|h| h.address.clone()));
    let admin = opts.admin.clone().or_else(|| spec.admin.clone());
    if http.is_none() && https_addr.is_none() {
        bail!(
            "no traffic listener: set listeners.http or listeners.https in the policy file, or pass --http"
        );
    }
    let admin_auth = resolve_admin_auth(&opts, snapshot.set.admin_auth.as_ref())?;
    let mut probes = Vec::new();
    let mut pick = |addr: Option<&str>| addr.map(|a| concrete(a, &mut probes)).transpose();
    let listening = Listening {
        http: pick(http.as_deref())?,
        https: pick(https_addr.as_deref())?,
        admin: pick(admin.as_deref())?,
        admin_token: admin_auth.is_some(),
    };
    drop(probes);
    if let Some(a) = listening.admin {
        check_admin_exposure(a, admin_auth.as_ref())?;
    }

    // the TLS listeners' files, reloaded with the policy set on SIGHUP and when they change
    let tls_metrics = crate::tls::TlsMetrics::register(metrics.registry())?;
    let mut tls_reloader = crate::tls::TlsReloader::default();

    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let upgrade_sock = std::env::temp_dir().join(format!(
        "gateway-upgrade-{}.sock",
        listening.http.or(listening.https).map_or(0, |a| a.port())
    ));
    let conf = ServerConf {
        threads,
        work_stealing: opts.scheduler.steals_work(threads),
        grace_period_seconds: Some(opts.grace_period_secs),
        graceful_shutdown_timeout_seconds: Some(opts.shutdown_timeout_secs),
        upgrade_sock: upgrade_sock.display().to_string(),
        pid_file: std::env::temp_dir()
            .join("gateway.pid")
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: opts.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let gateway = Gateway::new(store.clone(), metrics.clone());
    let access_log = gateway.access_log.clone();
    // the strict HTTP/1 edge reads and checks every request head before Pingora's proxy does
    let edge = crate::edge_layer::StrictEdge::new(
        pingora::proxy::http_proxy(&server.configuration, gateway),
        store.clone(),
        metrics.clone(),
        access_log.clone(),
    );
    let mut proxy = Service::new("gateway".to_owned(), edge);
    if let Some(a) = listening.http {
        proxy.add_tcp(&a.to_string());
    }
    if let (Some(a), Some(h)) = (listening.https, https.as_ref()) {
        let files = crate::tls::TlsFiles {
            listener: "https",
            cert: h.cert.clone(),
            key: h.key.clone(),
            client_auth: h.client_auth.clone(),
        };
        let listener = crate::tls::TlsListener::load(files, tls_metrics.clone())?;
        proxy.add_tls_with_settings(&a.to_string(), None, listener.settings(h.h2)?);
        tls_reloader.0.push(listener);
    } else if listening.https.is_some() {
        bail!("--https needs listeners.https (certificate and key) in the policy file");
    }
    server.add_service(proxy);

    let readiness = Arc::new(Readiness::default());
    if let Some(a) = listening.admin {
        let app = AdminApp {
            store: store.clone(),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            openapi: Default::default(),
        };
        let mut app = AuthLayer::new(app, admin_auth.as_ref(), metrics.registry())?;
        if snapshot.set.listeners.admin_tls.is_some() {
            app = app.with_secure_cookie();
        }
        let mut admin = Service::new("admin".to_owned(), HttpServer::new_app(app));
        match &snapshot.set.listeners.admin_tls {
            Some(t) => {
                let files = crate::tls::TlsFiles {
                    listener: "admin",
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    client_auth: t.client_auth.clone(),
                };
                let listener = crate::tls::TlsListener::load(files, tls_metrics.clone())?;
                admin.add_tls_with_settings(&a.to_string(), None, listener.settings(false)?);
                tls_reloader.0.push(listener);
            }
            None => admin.add_tcp(&a.to_string()),
        }
        server.add_service(admin);
    }
    install_reload_signal(store.clone(), tls_reloader.clone())?;
    if !tls_reloader.0.is_empty() {
        server.add_service(background_service(
            "tls files",
            crate::tls::TlsWatch(tls_reloader),
        ));
    }
    server.add_service(background_service("lifecycle", Lifecycle(readiness)));
    server.add_service(background_service(
        "upstream health",
        UpstreamUpkeep(store.clone()),
    ));
    server.add_service(background_service(
        "deliveries",
        DeliveryService {
            config: store.clone(),
            metrics: metrics.delivery.clone(),
            connector: Arc::new(Connector::new(None)),
            outbound: Arc::new(DeliveryOutbound {
                throttle: Throttle::default(),
                auth: OutboundAuth::new(metrics.registry(), store.clock().clone())?,
            }),
        },
    ));

    // what Pingora was given, not what was asked: the two can only differ by a bug
    let scheduler = if server.configuration.work_stealing {
        Scheduler::WorkStealing
    } else {
        Scheduler::PerThread
    };
    tracing::info!(
        http = %listening.http.map(|a| a.to_string()).unwrap_or_default(),
        https = %listening.https.map(|a| a.to_string()).unwrap_or_default(),
        admin = %listening.admin.map(|a| a.to_string()).unwrap_or_default(),
        admin_token = listening.admin_token,
        threads = server.configuration.threads,
        scheduler = %scheduler
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default(),
        version = %snapshot.set.version.hash,
        summary = %snapshot.set.summary(),
        "listening"
    );
    on_listening(&listening);
    server.run(pingora::server::RunArgs::default());
    // the access log is written in batches: the last ones go out before the process ends
    access_log.flush();
    std::process::exit(0)
}

/// The admin token: `--admin-token-file` (or `GATEWAY_ADMIN_TOKEN_FILE`) over the file's
/// `listeners.admin_auth`, whose `protect_metrics` applies either way. Read once at start.
fn resolve_admin_auth(
    opts: &RunOptions,
    from_file: Option<&AdminAuth>,
) -> anyhow::Result<Option<AdminAuth>> {
    let Some(path) = &opts.admin_token_file else {
        return Ok(from_file.cloned());
    };
    // the first line is the token, an optional second line the previous one (a rotation)
    let (token, previous) = policies::admin_auth::tokens_from_file(path)
        .map_err(|e| anyhow::anyhow!("--admin-token-file {}: {e}", path.display()))?;
    Ok(Some(AdminAuth {
        token,
        previous,
        protect_metrics: from_file.is_some_and(|a| a.protect_metrics),
    }))
}

/// Without a token the admin listener may only be reachable from this machine: anything but
/// a loopback address is refused (rather than silently rebound) so the operator sees it.
fn check_admin_exposure(addr: SocketAddr, auth: Option<&AdminAuth>) -> anyhow::Result<()> {
    match auth {
        Some(a) => {
            tracing::info!(
                admin = %addr,
                protect_metrics = a.protect_metrics,
                "admin API: token required (open: /healthz /readyz{})",
                if a.protect_metrics { "" } else { " /metrics" }
            );
            Ok(())
        }
        None if addr.ip().is_loopback() => {
            tracing::info!(
                admin = %addr,
                "admin API: no token configured, listening on loopback only"
            );
            Ok(())
        }
        None => bail!(
            "the admin listener {addr} is not a loopback address and no admin token is configured: \
             set listeners.admin_auth.token (e.g. `token: file:admin-token`) or pass \
             --admin-token-file, or bind the admin listener to 127.0.0.1"
        ),
    }
}

/// Runs the active health probes of every upstream of the serving snapshot when they are due,
/// and refreshes the gauges of state that changes with time (ejections end on their own).
struct UpstreamUpkeep(Arc<ConfigStore>);

#[async_trait::async_trait]
impl BackgroundService for UpstreamUpkeep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let snapshot = self.0.current();
            let mut tick = Duration::from_millis(500);
            for pool in &snapshot.pools {
                if let Some(interval) = pool.probe_due() {
                    tick = tick.min(interval / 4);
                }
                pool.refresh_gauges(crate::forward::pool::now());
            }
            drop(snapshot);
            tokio::select! {
                _ = tokio::time::sleep(tick.max(Duration::from_millis(5))) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// SIGHUP recompiles the policy file; the handler is installed before the server starts, as
/// SIGHUP's default action would end the process.
fn install_reload_signal(
    store: Arc<ConfigStore>,
    tls: crate::tls::TlsReloader,
) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .context("installing the SIGHUP handler")?;
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                tracing::info!(file = %store.file().display(), "SIGHUP: reloading the policy set");
                let _ = store.reload();
                // certificates are not part of the policy set: a failed set still rotates them
                tls.reload_all("SIGHUP");
            }
        })
        .context("starting the reload thread")?;
    Ok(())
}

/// Installs the JSON log subscriber (access log and diagnostics, one object per line on stdout).
/// `GATEWAY_LOG` sets the filter (default `info`), except that the libraries in
/// [`HEAD_DUMPING_TARGETS`] never log below `info`: no log level writes a secret; and Pingora's
/// lost pooled connections are counted instead of logged ([`crate::pool_race`]).
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(log_layer(filter, std::io::stdout))
        .try_init();
}

/// The JSON log layer under `filter`, with [`HEAD_DUMPING_TARGETS`] held to `info`, writing to
/// `out`.
fn log_layer<S, W>(
    filter: tracing_subscriber::EnvFilter,
    out: W,
) -> impl tracing_subscriber::Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;

    // The hint keeps the combined filter's maximum level the `GATEWAY_LOG` one. Without it the
    // closure's unknown maximum made the whole layer's TRACE, so the `log` bridge let every
    // `debug!`/`trace!` of Pingora's through to be formatted into a record and then refused,
    // on every request (about 1.5 µs of S1's ~50).
    let no_heads = tracing_subscriber::filter::filter_fn(|meta| {
        *meta.level() <= tracing::Level::INFO || !dumps_heads(meta.target())
    })
    .with_max_level_hint(tracing::level_filters::LevelFilter::TRACE);
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(out)
        .with_filter(filter.and(no_heads).and(CountLostConnections))
}

/// Libraries that print whole request or response heads at `debug` or `trace` (Pingora: the
/// client's `Authorization` and cookies, the upstream request with its credentials, `Set-Cookie`
/// of admin sessions; h2: header blocks). Their events below `info` are dropped whatever
/// `GATEWAY_LOG` says, so raising the log level to debug a problem never writes a token.
pub const HEAD_DUMPING_TARGETS: &[&str] = &["pingora", "h2", "hyper", "reqwest"];

fn dumps_heads(target: &str) -> bool {
    HEAD_DUMPING_TARGETS.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tracing::level_filters::LevelFilter;
    use tracing_subscriber::{EnvFilter, Layer as _, Registry};

    use super::{concrete, log_layer};

    /// A port chosen for `:0` stays bound until every listener has its own, so a second
    /// listener's probe cannot be given it.
    #[test]
    fn ports_chosen_for_zero_stay_held_until_all_are_chosen() {
        let mut held = Vec::new();
        let first = concrete("127.0.0.1:0", &mut held).expect("a free port");
        let second = concrete("127.0.0.1:0", &mut held).expect("another free port");
        assert_ne!(first, second);
        assert!(
            std::net::TcpListener::bind(first).is_err(),
            "the first port is held while the others are chosen"
        );
        drop(held);
        assert_eq!(
            concrete("127.0.0.1:8080", &mut Vec::new()).expect("a fixed port"),
            "127.0.0.1:8080".parse().expect("address"),
            "a fixed port is taken as it is"
        );
    }

    /// The `log` bridge (Pingora logs through `log`) lets records through up to the
    /// subscriber's maximum level: it must be `GATEWAY_LOG`'s, not TRACE.
    #[test]
    fn the_log_layer_keeps_the_filters_maximum_level() {
        for (spec, max) in [
            ("info", LevelFilter::INFO),
            ("warn", LevelFilter::WARN),
            ("info,gateway=debug", LevelFilter::DEBUG),
        ] {
            let layer = log_layer::<Registry, _>(EnvFilter::new(spec), std::io::sink);
            assert_eq!(layer.max_level_hint(), Some(max), "GATEWAY_LOG={spec}");
        }
    }

    /// What the log lines of one closure are, through the `log` bridge Pingora logs through.
    fn logged(emit: impl FnOnce()) -> Vec<String> {
        use tracing_subscriber::layer::SubscriberExt as _;

        let out = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let writer = {
            let out = out.clone();
            move || Lines(out.clone())
        };
        let subscriber = Registry::default().with(log_layer(EnvFilter::new("info"), writer));
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_record(target: &str, level: log::Level, message: &str) {
        tracing_log::format_trace(
            &log::Record::builder()
                .target(target)
                .level(level)
                .args(format_args!("{message}"))
                .build(),
        )
        .unwrap();
    }

    /// Pingora's `failed to acquire reusable stream` is counted, not logged; its other errors,
    /// and that message from anyone else, are logged as ever.
    #[test]
    fn lost_pooled_connections_are_counted_not_logged() {
        const LOST: &str = "failed to acquire reusable stream";
        let before = crate::pool_race::LOST.get();
        let lines = logged(|| {
            log_record("pingora_core::connectors", log::Level::Error, LOST);
            log_record(
                "pingora_core::connectors",
                log::Level::Error,
                "TLS handshake failed",
            );
            log_record("somebody_else", log::Level::Error, LOST);
            log_record("pingora_core::connectors", log::Level::Warn, LOST);
        });
        assert_eq!(crate::pool_race::LOST.get() - before, 1, "{lines:?}");
        let from: Vec<(String, String)> = lines
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["target"].as_str().unwrap().to_owned(),
                    v["message"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let pingora = "pingora_core::connectors".to_owned();
        assert_eq!(
            from,
            [
                (pingora.clone(), "TLS handshake failed".to_owned()),
                ("somebody_else".to_owned(), LOST.to_owned()),
                (pingora, LOST.to_owned()),
            ]
        );
    }
}
