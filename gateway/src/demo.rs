//! `gateway demo`: the shipped example policy set in front of the ERP simulator and the
//! marketplace simulator, on loopback, with ready-to-paste requests that go through the whole
//! chain: an Amazon order into the ERP, and a warehouse shipment fanned out to the ERP and
//! Amazon.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use policies::model::Endpoint;

use crate::server::{self, Listening, RunOptions};
use crate::snapshot::Overrides;

/// Where the example policy set is, from the repository root or the build tree.
pub fn example_policy_file() -> PathBuf {
    let local = PathBuf::from("policies/files/gateway.yaml");
    if local.exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/files/gateway.yaml")
}

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The policy file (default: the shipped example).
    pub config: Option<PathBuf>,
    /// Address of the ERP simulator.
    pub erp: String,
    /// Address of the marketplace simulator.
    pub marketplaces: String,
    /// Listener overrides.
    pub http: Option<String>,
    /// TLS listener override.
    pub https: Option<String>,
    /// Admin listener override.
    pub admin: Option<String>,
}

/// Starts the simulator and the gateway; does not return.
pub fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let config = opts.config.clone().unwrap_or_else(example_policy_file);
    let config = std::fs::canonicalize(&config)
        .with_context(|| format!("cannot find the example policy file {}", config.display()))?;
    let erp_addr: SocketAddr = opts.erp.parse().context("--erp must be ip:port")?;
    let erp = start_simulator(erp_addr)?;
    let market_addr: SocketAddr = opts
        .marketplaces
        .parse()
        .context("--marketplaces must be ip:port")?;
    let market = start_marketplaces(market_addr)?;
    let samples = config
        .parent()
        .map(|d| d.join("samples"))
        .ok_or_else(|| anyhow!("the policy file has no folder"))?;

    let mut overrides = Overrides::default();
    overrides.upstream_endpoints.insert(
        "erp".into(),
        vec![Endpoint {
            host: erp.ip().to_string(),
            port: erp.port(),
        }],
    );
    // the example set's marketplace APIs (and their token endpoints, given as paths on the
    // same host) are the simulator's
    for upstream in MARKETPLACE_UPSTREAMS {
        overrides.upstream_endpoints.insert(
            upstream.into(),
            vec![Endpoint {
                host: market.ip().to_string(),
                port: market.port(),
            }],
        );
    }
    // a fresh store per demo run: what an earlier run left pending is not delivered to this
    // run's simulator
    let data_dir = std::env::temp_dir().join(format!("gateway-demo-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    overrides.data_dir = Some(data_dir);
    let run = RunOptions {
        config,
        http: opts.http,
        https: opts.https,
        admin: opts.admin,
        // the demo runs the admin API without a token, so on loopback only (see the banner)
        admin_token_file: None,
        threads: 0,
        scheduler: Default::default(),
        upgrade: false,
        grace_period_secs: 0,
        shutdown_timeout_secs: 5,
        overrides,
    };
    server::run(run, move |listening| {
        let listening = listening.clone();
        std::thread::spawn(move || {
            if wait_ready(&listening, Duration::from_secs(30)) {
                print_banner(&listening, erp, market, &samples);
            } else {
                eprintln!("gateway demo: the gateway did not become ready within 30s");
            }
        });
    })
}

/// The example set's upstreams that are marketplace APIs.
const MARKETPLACE_UPSTREAMS: [&str; 4] = ["amazon-sp", "walmart-api", "ebay-api", "shopify-admin"];

fn start_marketplaces(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("marketplace-sim".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let options = marketplace_sim::MarketOptions::default();
                match marketplace_sim::MarketplaceSim::start(addr, options).await {
                    Ok(sim) => {
                        let _ = tx.send(Ok(sim.addr()));
                        std::future::pending::<()>().await;
                        drop(sim);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })?;
    rx.recv()?
        .with_context(|| format!("cannot start the marketplace simulator on {addr}"))
}

fn start_simulator(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("erp-sim".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                match erp_sim::ErpSim::start(addr).await {
                    Ok(sim) => {
                        let _ = tx.send(Ok(sim.addr()));
                        std::future::pending::<()>().await;
                        drop(sim);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        })?;
    rx.recv()?
        .with_context(|| format!("cannot start the ERP simulator on {addr}"))
}

fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn wait_ready(l: &Listening, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        let ready = match (l.admin, l.http.or(l.https)) {
            (Some(admin), _) => http_get_status(admin, "/readyz") == Some(200),
            (None, Some(a)) => TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok(),
            (None, None) => false,
        };
        if ready {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn print_banner(l: &Listening, erp: SocketAddr, market: SocketAddr, samples: &Path) {
    let sample = samples.join("amazon-order.json");
    let sample = sample.as_path();
    let Some(http) = l.http else {
        eprintln!("gateway demo: no plain-HTTP listener to print a request for");
        return;
    };
    let mut out = String::new();
    out.push_str("\n=== retail gateway demo ===\n");
    out.push_str(&format!("gateway   http://{http}\n"));
    if let Some(https) = l.https {
        out.push_str(&format!(
            "          https://{https} (development certificate in certs/)\n"
        ));
    }
    if let Some(admin) = l.admin {
        out.push_str(&format!(
            "status    http://{admin}/  (the status page: open it in a browser)\n"
        ));
        out.push_str(&format!(
            "admin     http://{admin}/metrics  http://{admin}/config  http://{admin}/upstreams  http://{admin}/readyz\n"
        ));
        out.push_str(&admin_auth_line(l.admin_token));
    }
    out.push_str(&format!(
        "ERP sim   http://{erp}/_sim/requests  http://{erp}/_sim/stats\n"
    ));
    out.push_str(&format!(
        "markets   http://{market}/_sim/records  http://{market}/_sim/stats  (Amazon, Walmart, eBay, Shopify APIs)\n"
    ));
    // A day is long enough for a demo session and short enough not to be a credential.
    let opts = crate::token::TokenOptions::dev(
        "amazon",
        &["orders:write"],
        Duration::from_secs(24 * 3600),
    );
    let token = match crate::token::mint(&opts, std::time::SystemTime::now()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gateway demo: cannot mint the development token: {e:#}");
            return;
        }
    };
    let key = uuid::Uuid::new_v4();
    out.push_str(
        "\nPost an Amazon order through the gateway to the ERP (development token for channel \
         amazon, scope orders:write, valid 24h; `gateway token --help` mints others):\n\n",
    );
    out.push_str(&demo_curl(http, sample, &token, &key.to_string()));
    out.push_str(
        "\n\nPaste it again: same Idempotency-Key, so the ERP is not called twice and the \
         stored answer comes back with `Idempotent-Replayed: true`.\n",
    );
    out.push_str(&format!(
        "\nStage an ERP outage, then post orders (with new Idempotency-Keys) and watch the \
         gateway cope:\n  every other ERP answer a 503 (orders are retried, one upstream key per \
         order, so none is created twice):\n    curl -X PUT http://{erp}/_sim/behaviour -d \
         '{{\"fail_every\":2,\"fail_status\":503}}'\n  the ERP down for 30 s (orders are \
         stored and answered 202 Accepted; its Location shows the delivery pending, then \
         delivered once the ERP is back, exactly once):\n    \
         curl -X PUT http://{erp}/_sim/behaviour -d '{{\"down_for_ms\":30000}}'\n    \
         curl -H 'Authorization: Bearer {token}' http://{http}<Location of the 202>\n  back to \
         normal:\n    curl -X PUT http://{erp}/_sim/behaviour -d '{{}}'\n"
    ));
    if let Some(admin) = l.admin {
        out.push_str(&format!(
            "  the ERP as the gateway sees it (health, ejection, circuit, in flight):\n    \
             curl http://{admin}/upstreams\n  the stored orders (depth, dead letters; list, \
             show, replay, purge):\n    curl http://{admin}/queues\n    \
             gateway deliveries --admin http://{admin} list\n"
        ));
    }
    let warehouse = crate::token::TokenOptions::dev(
        "warehouse",
        &["shipments:publish"],
        Duration::from_secs(24 * 3600),
    );
    match crate::token::mint(&warehouse, std::time::SystemTime::now()) {
        Ok(wh_token) => {
            out.push_str(
                "\nPost a warehouse shipment confirmation for that order: it fans out to the ERP \
                 (the canonical document) and to Amazon (its confirmShipment call, with an LWA \
                 token the gateway fetched), each a delivery of its own (development token of \
                 the warehouse, scope shipments:publish):\n\n",
            );
            out.push_str(&fanout_curl(
                http,
                &samples.join("warehouse-shipment.json"),
                &wh_token,
                &uuid::Uuid::new_v4().to_string(),
            ));
            out.push_str(&format!(
                "\n\nWatch each destination arrive: the 202 names both deliveries; each one's \
                 `location` shows it pending, then delivered:\n    \
                 curl -H 'Authorization: Bearer {wh_token}' http://{http}<location>\n  \
                 at the ERP:     curl http://{erp}/_sim/requests\n  \
                 at Amazon:      curl http://{market}/_sim/records\n  \
                 throttle Amazon (2 calls, then 429s; deliveries wait, none is lost):\n    \
                 curl -X PUT http://{market}/_sim/amazon/limits -d '{{\"shipment\":{{\"rate\":0.2,\"burst\":2}}}}'\n"
            ));
        }
        Err(e) => eprintln!("gateway demo: cannot mint the warehouse token: {e:#}"),
    }
    out.push('\n');
    print!("{out}");
    let _ = std::io::stdout().flush();
}

/// What the banner says about the admin API's authentication.
pub fn admin_auth_line(token: bool) -> String {
    if token {
        "          admin API: token required (Authorization: Bearer <token>, or sign in at /login)\n"
            .to_owned()
    } else {
        "          admin API: no token configured, listening on loopback only (set \
         listeners.admin_auth to expose it)\n"
            .to_owned()
    }
}

/// The fan-out request the demo prints: one line, ready to paste.
pub fn fanout_curl(http: SocketAddr, sample: &Path, token: &str, idempotency_key: &str) -> String {
    format!(
        "curl -sS -i -X POST http://{http}/events/shipments -H 'Content-Type: application/json' -H 'Authorization: Bearer {token}' -H 'Idempotency-Key: \"{idempotency_key}\"' --data-binary @{}",
        sample.display()
    )
}

/// The request the demo prints: one line, ready to paste. It carries everything the example
/// chain asks of an Amazon order: a bearer token and an idempotency key.
pub fn demo_curl(http: SocketAddr, sample: &Path, token: &str, idempotency_key: &str) -> String {
    format!(
        "curl -sS -i -X POST http://{http}/channels/amazon/orders -H 'Content-Type: application/json' -H 'Authorization: Bearer {token}' -H 'Idempotency-Key: \"{idempotency_key}\"' --data-binary @{}",
        sample.display()
    )
}
