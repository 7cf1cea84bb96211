//! `loadbench`: the bundled load test. Builds the release binaries, starts the upstream and each
//! scenario's system under test on its own core, measures throughput (closed loop) and latency
//! at fixed offered rates (open loop, corrected for coordinated omission), and writes the table,
//! `bench-results/<date>.json` and `bench-results/<date>.svg`.
//!
//! `cargo run --release -p benches --bin loadbench -- [--quick] [--scenarios S0,P0,S1,...]`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use benches::loadgen::{self, Edge, Load};
use benches::orders;
use benches::procstat;
use benches::report::{
    self, Backlog, LatencyPoint, LatencyRun, Machine, Method, Report, ScenarioReport, Stat, Status,
    SustainedPoint, ThroughputRun,
};
use benches::rotation;
use benches::scenarios::{self, Inputs, Scenario, System};
use benches::systems::{
    self, HaproxyMode, LOAD_CORE, Proc, SUT_CORE, Scratch, free_addr, installed, pinned,
};
use benches::tokens;
use bytes::Bytes;
use clap::Parser;

/// The bundled load test of the gateway (see the README's performance section).
#[derive(Debug, Parser)]
#[command(name = "loadbench")]
struct Args {
    /// A short smoke run (seconds, not minutes).
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, comma separated (default: all; `--list` shows them).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Keep-alive connections of the generator.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Closed-loop seconds per repetition (default 8, quick 2).
    #[arg(long)]
    throughput_secs: Option<f64>,
    /// Open-loop seconds per repetition and rate (default 5, quick 2).
    #[arg(long)]
    latency_secs: Option<f64>,
    /// Interleaved repetitions (default 3, quick 1).
    #[arg(long)]
    reps: Option<usize>,
    /// Offered rates as fractions of capacity (default 0.25,0.5,0.75,0.9; quick 0.5).
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    /// The upstream: `fast` (benches' bench-upstream) or `erp-sim` (the ERP simulator binary).
    #[arg(long, default_value = "fast")]
    upstream: String,
    /// Where the JSON and SVG go (relative to the workspace root).
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Turn access logs off in every system (by default each writes one line per request to a
    /// file: the gateway's JSON log, nginx's access_log, haproxy's httplog).
    #[arg(long)]
    no_access_log: bool,
    /// Run the systems under test, the generator and the upstream at this nice value (e.g.
    /// -10, as root) so that other work on a shared machine disturbs the figures less.
    #[arg(long, allow_hyphen_values = true)]
    nice: Option<i32>,
    /// Do not build; use the binaries next to this one.
    #[arg(long)]
    no_build: bool,
    /// A/B: also run every selected gateway scenario on these other gateway binaries (e.g. a
    /// copy of the previous build), as `<id>@B`, `<id>@C`, ..., each next to its scenario in
    /// every repetition of the same run, taking turns going first. Comma separated.
    #[arg(long, value_delimiter = ',')]
    compare: Vec<PathBuf>,
    /// Soak instead of the matrix: after the warm-up, load each selected scenario with the
    /// closed loop for this many minutes, sampling its resident memory (`VmRSS`) at the end of
    /// every minute (e.g. `--scenarios ALL --soak 10`); a queued scenario's rows also give
    /// its deliveries per second and its queues' depth, and the time its backlog took after.
    #[arg(long, value_name = "MINUTES")]
    soak: Option<u32>,
    /// Write one gateway scenario's inputs to this folder and exit, for a run by hand (such as
    /// `scripts/instructions.sh --scenario`): `policy.yaml` (its upstream is
    /// `--prepare-upstream`), the files it names, `env` (the variables its gateway runs with),
    /// and `requests.http`, `--prepare-requests` of the scenario's requests on the wire, one
    /// after the other, as the generator would send them. Nothing is built or started.
    #[arg(long, value_name = "DIR", requires = "prepare_upstream")]
    prepare: Option<PathBuf>,
    /// With `--prepare`: the upstream address the policy file forwards to.
    #[arg(long, value_name = "ADDR")]
    prepare_upstream: Option<SocketAddr>,
    /// With `--prepare`: how many requests `requests.http` holds.
    #[arg(long, default_value_t = 2300)]
    prepare_requests: usize,
}

struct Plan {
    mode: &'static str,
    warmup: Duration,
    throughput: Duration,
    latency: Duration,
    reps: usize,
    rates: Vec<f64>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = Command::new("uname")
        .arg("-sr")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default();
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |k| k / 1024);
    Machine {
        cpu,
        cores,
        kernel,
        os,
        memory_mib,
    }
}

fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // civil date from days since the epoch (Howard Hinnant's algorithm)
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    (
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
        format!("{y:04}-{m:02}-{d:02}T{hh:02}{mm:02}{ss:02}Z"),
    )
}

fn version_of(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().next().map(|l| l.trim().to_owned())
}

fn build(root: &Path, upstream: &str) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root).args([
        "build",
        "--release",
        "-p",
        "gateway",
        "--bin",
        "gateway",
        "-p",
        "benches",
        "--bins",
    ]);
    if upstream == "erp-sim" {
        cmd.args(["-p", "erp-sim", "--bin", "erp-sim"]);
    }
    eprintln!("building release binaries: {cmd:?}");
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(())
}

/// How many times a system is started before a probe answered wrongly counts as its failure.
const SETUP_ATTEMPTS: u32 = 3;

/// A scenario that is up and answering.
struct Ready<'a> {
    scenario: &'a Scenario,
    addr: SocketAddr,
    /// The process whose CPU and memory are the system under test's.
    pid: u32,
    /// The admin listener of a gateway whose policy file has store-and-forward queues: every
    /// measured window ends only once they are empty (see [`wait_delivered`]).
    queue_admin: Option<SocketAddr>,
    recipe: Arc<benches::recipe::Recipe>,
    report: ScenarioReport,
    _procs: Vec<Proc>,
    _dir: Option<Scratch>,
}

struct Env<'a> {
    bin: &'a Path,
    upstream: &'a Proc,
    upstream_pid: u32,
    files: scenarios::Files,
    public_pem: PathBuf,
    access_log: bool,
}

fn wait_gateway_listening(
    p: &mut Proc,
    within: Duration,
) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let until = Instant::now() + within;
    loop {
        for line in p.output().lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                && v["message"] == "listening"
            {
                let addr = |k: &str| -> anyhow::Result<SocketAddr> {
                    v[k].as_str()
                        .and_then(|s| s.parse().ok())
                        .with_context(|| format!("no {k} address in {line}"))
                };
                return Ok((addr("http")?, addr("admin")?));
            }
        }
        if let Some(status) = p.exited() {
            bail!("the gateway exited ({status}):\n{}", p.output());
        }
        if Instant::now() > until {
            bail!("the gateway did not log \"listening\":\n{}", p.output());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Waits until the store-and-forward queues of the gateway at `admin` are empty (every order
/// accepted so far delivered); returns the seconds it waited. A queued scenario's window ends
/// here, so its CPU per request counts each order's delivery, not only its acceptance: under
/// the closed loop the acceptances outrun the deliveries, and the backlog's deliveries would
/// otherwise run unmeasured (and in the next scenario's window, on the same core).
fn wait_delivered(admin: SocketAddr) -> anyhow::Result<f64> {
    let start = Instant::now();
    loop {
        if queue_depth(admin)? == 0.0 {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("the queues did not empty within 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The orders in all store-and-forward queues of the gateway at `admin`, as its admin
/// `GET /queues` counts them when asked (the `/metrics` gauge is refreshed once a second).
fn queue_depth(admin: SocketAddr) -> anyhow::Result<f64> {
    let (status, body) = systems::http_get(admin, "/queues")?;
    if status != 200 {
        bail!("GET /queues answered {status}");
    }
    let v: serde_json::Value = serde_json::from_slice(&body).context("GET /queues")?;
    let depths: Vec<f64> = v["queues"]
        .as_array()
        .map(|qs| qs.iter().filter_map(|q| q["depth"].as_f64()).collect())
        .unwrap_or_default();
    if depths.is_empty() {
        bail!("no queue in GET /queues");
    }
    Ok(depths.iter().sum())
}

/// The deliveries the gateway at `admin` has made so far, all queues and channels: the
/// `delivered` outcomes of `gateway_deliveries_total` on its `/metrics` (a counter, current
/// when read).
fn delivered_total(admin: SocketAddr) -> anyhow::Result<f64> {
    let (status, body) = systems::http_get(admin, "/metrics")?;
    if status != 200 {
        bail!("GET /metrics answered {status}");
    }
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| {
            l.starts_with("gateway_deliveries_total{") && l.contains("outcome=\"delivered\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

/// After an open-loop window of a queued scenario: what was still queued, and how long its
/// delivery took (the CPU read after it counts it).
fn backlog_after_window(admin: SocketAddr) -> anyhow::Result<Backlog> {
    let depth_at_end = queue_depth(admin)?;
    let drain_s = wait_delivered(admin)?;
    Ok(Backlog {
        depth_at_end,
        drain_s,
    })
}

/// A queued window's backlog, as the progress lines print it after the rest.
fn backlog_note(backlog: Option<Backlog>) -> String {
    backlog
        .map(|b| {
            format!(
                "  queued at the end {:.0}, drained in {:.2} s",
                b.depth_at_end, b.drain_s
            )
        })
        .unwrap_or_default()
}

/// Queued scenarios and their synchronous twins (the same chain answered at once), measured
/// together at one offered rate the queued one sustains.
const SUSTAINED_PAIRS: [(&str, &str); 2] = [("ALL-queued", "ALL"), ("queued", "transform")];

/// The index in `ready` of the twin of `ready[i]` (with the same `@tag` of an A/B run).
fn twin(ready: &[Ready<'_>], i: usize) -> Option<usize> {
    let id = ready[i].scenario.id;
    let base = rotation::base_id(id);
    // `@B` of an A/B twin, or nothing
    let tag = &id[base.len()..];
    let other = SUSTAINED_PAIRS.iter().find_map(|&(q, s)| {
        if q == base {
            Some(s)
        } else if s == base {
            Some(q)
        } else {
            None
        }
    })?;
    let want = format!("{other}{tag}");
    ready.iter().position(|r| r.scenario.id == want)
}

/// `gateway check` on the scenario's file: Ok, or the status to report.
fn check_policy(bin: &Path, file: &Path, env: &[(String, String)]) -> Result<(), Status> {
    let out = Command::new(bin.join("gateway"))
        .arg("check")
        .arg("-c")
        .arg(file)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|e| Status::Failed(format!("gateway check: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("error(s)"))
        .map(|l| l.rsplit_once(".yaml:").map_or(l, |(_, rest)| rest))
        .collect();
    let summary = errors.join("; ");
    if summary.contains("unknown variant") || summary.contains("kind") {
        Err(Status::Pending(format!("not built yet: {summary}")))
    } else {
        Err(Status::Failed(format!(
            "policy file does not compile: {summary}"
        )))
    }
}

fn start_scenario<'a>(sc: &'a Scenario, env: &Env<'_>) -> Result<Ready<'a>, Box<ScenarioReport>> {
    let fail = |status: Status| Box::new(ScenarioReport::new(sc.id, sc.title, status));
    let failed = |e: anyhow::Error| fail(Status::Failed(format!("{e:#}")));
    let dir = Scratch::new(sc.id).map_err(failed)?;
    let mut procs = Vec::new();
    let mut policy_text = None;
    let mut queue_admin = None;
    let (addr, pid) = match sc.system {
        System::Upstream => (env.upstream.addr, env.upstream_pid),
        System::P0 => {
            let addr = free_addr().map_err(failed)?;
            let mut cmd = pinned(SUT_CORE, &env.bin.join("p0-passthrough"));
            cmd.args(["--listen", &addr.to_string()])
                .args(["--upstream", &env.upstream.addr.to_string()])
                .args(["--threads", "1"]);
            let mut p = Proc::spawn("p0-passthrough", addr, cmd, dir.path().join("p0.log"))
                .map_err(failed)?;
            p.wait_listening(addr, Duration::from_secs(20))
                .map_err(failed)?;
            let pid = p.pid();
            procs.push(p);
            (addr, pid)
        }
        System::Gateway => {
            let redis_addr = if sc.needs_redis {
                Some(free_addr().map_err(failed)?)
            } else {
                None
            };
            let text =
                scenarios::policy_file(env.upstream.addr, sc.snippet, &env.files, redis_addr);
            let file = dir.path().join("policy.yaml");
            std::fs::write(&file, &text).map_err(|e| failed(e.into()))?;
            let text_has_queues = text.lines().any(|l| l.starts_with("queues:"));
            policy_text = Some(text);
            if let Err(status) = check_policy(env.bin, &file, &sc.env) {
                let mut r = fail(status);
                r.policy_file = policy_text;
                return Err(r);
            }
            if let Some(raddr) = redis_addr {
                if !installed("redis-server") {
                    return Err(fail(Status::Skipped(
                        "redis-server not installed (scripts/system-deps.sh installs it)".into(),
                    )));
                }
                let mut cmd = pinned(LOAD_CORE, Path::new("redis-server"));
                cmd.args(["--bind", "127.0.0.1", "--port", &raddr.port().to_string()])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(dir.path());
                let mut p = Proc::spawn("redis-server", raddr, cmd, dir.path().join("redis.log"))
                    .map_err(failed)?;
                p.wait_listening(raddr, Duration::from_secs(10))
                    .map_err(failed)?;
                procs.push(p);
            }
            let gateway = sc
                .gateway_bin
                .clone()
                .unwrap_or_else(|| env.bin.join("gateway"));
            let mut cmd = pinned(SUT_CORE, &gateway);
            cmd.arg("run")
                .arg("-c")
                .arg(&file)
                .args([
                    "--http",
                    "127.0.0.1:0",
                    "--admin",
                    "127.0.0.1:0",
                    "--threads",
                    "1",
                ])
                .args(["--grace-period", "0", "--shutdown-timeout", "1"])
                .envs(sc.env.iter().map(|(k, v)| (k, v)));
            if !env.access_log {
                // the access log is the `access` target; keep `listening` (info) for the harness
                cmd.env("GATEWAY_LOG", "info,access=off");
            }
            let placeholder = "127.0.0.1:0"
                .parse()
                .map_err(|e: std::net::AddrParseError| failed(e.into()))?;
            let mut p = Proc::spawn("gateway", placeholder, cmd, dir.path().join("gateway.log"))
                .map_err(failed)?;
            let (http, admin) =
                wait_gateway_listening(&mut p, Duration::from_secs(30)).map_err(failed)?;
            if text_has_queues {
                queue_admin = Some(admin);
            }
            p.wait_http_200(admin, "/readyz", Duration::from_secs(30))
                .map_err(failed)?;
            p.wait_listening(http, Duration::from_secs(10))
                .map_err(failed)?;
            let pid = p.pid();
            procs.push(p);
            (http, pid)
        }
        System::Nginx => {
            if !installed("nginx") {
                return Err(fail(Status::Skipped(
                    "nginx not installed (scripts/bench.sh installs it)".into(),
                )));
            }
            let addr = free_addr().map_err(failed)?;
            let conf = dir.path().join("nginx.conf");
            std::fs::write(
                &conf,
                systems::nginx_config(dir.path(), addr, env.upstream.addr, env.access_log),
            )
            .map_err(|e| failed(e.into()))?;
            let mut cmd = pinned(SUT_CORE, Path::new("nginx"));
            cmd.arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.path().join("nginx-error.log"));
            let mut p =
                Proc::spawn("nginx", addr, cmd, dir.path().join("nginx.out")).map_err(failed)?;
            p.wait_listening(addr, Duration::from_secs(20))
                .map_err(failed)?;
            let pid = p.pid();
            procs.push(p);
            (addr, pid)
        }
        System::Haproxy(mode) => {
            if !installed("haproxy") {
                return Err(fail(Status::Skipped(
                    "haproxy not installed (scripts/bench.sh installs it)".into(),
                )));
            }
            let addr = free_addr().map_err(failed)?;
            let conf = dir.path().join("haproxy.cfg");
            std::fs::write(
                &conf,
                systems::haproxy_config(
                    addr,
                    env.upstream.addr,
                    mode,
                    &env.public_pem,
                    env.access_log,
                ),
            )
            .map_err(|e| failed(e.into()))?;
            let check = Command::new("haproxy")
                .arg("-c")
                .arg("-f")
                .arg(&conf)
                .output()
                .map_err(|e| failed(e.into()))?;
            if !check.status.success() {
                let why = String::from_utf8_lossy(&check.stderr).into_owned()
                    + &String::from_utf8_lossy(&check.stdout);
                return Err(fail(Status::Failed(format!(
                    "haproxy -c refused the config ({}): {why}",
                    if mode == HaproxyMode::JwtRateLimit {
                        "jwt_verify needs haproxy >= 2.5"
                    } else {
                        "passthrough"
                    }
                ))));
            }
            let mut cmd = pinned(SUT_CORE, Path::new("haproxy"));
            cmd.arg("-db").arg("-f").arg(&conf);
            let mut p = Proc::spawn("haproxy", addr, cmd, dir.path().join("haproxy.log"))
                .map_err(failed)?;
            p.wait_listening(addr, Duration::from_secs(20))
                .map_err(failed)?;
            let pid = p.pid();
            procs.push(p);
            (addr, pid)
        }
    };
    let mut report = ScenarioReport::new(sc.id, sc.title, Status::Measured);
    report.policy_file = policy_text;
    Ok(Ready {
        scenario: sc,
        addr,
        pid,
        queue_admin,
        recipe: Arc::new(sc.recipe.clone()),
        report,
        _procs: procs,
        _dir: Some(dir),
    })
}

fn start_upstream(kind: &str, bin: &Path, dir: &Path) -> anyhow::Result<Proc> {
    let addr = free_addr()?;
    let mut cmd;
    match kind {
        "fast" => {
            cmd = pinned(LOAD_CORE, &bin.join("bench-upstream"));
            cmd.args(["--listen", &addr.to_string()]);
        }
        "erp-sim" => {
            cmd = pinned(LOAD_CORE, &bin.join("erp-sim"));
            cmd.args(["--listen", &addr.to_string()]).args([
                "--record-limit",
                "0",
                "--document-limit",
                "1",
            ]);
        }
        other => bail!("unknown upstream {other:?} (fast or erp-sim)"),
    }
    let mut p = Proc::spawn(kind, addr, cmd, dir.join("upstream.log"))?;
    p.wait_listening(addr, Duration::from_secs(20))?;
    Ok(p)
}

/// One open-loop window of `r` at `rate`: its CPU per request, a queued scenario's drain
/// included.
fn open_window(
    rt: &tokio::runtime::Runtime,
    r: &Ready<'_>,
    load: &dyn Fn(SocketAddr) -> Load,
    rate: f64,
    window: Duration,
) -> anyhow::Result<LatencyRun> {
    let mut cpu = [0.0f64; 2];
    let run = rt.block_on(loadgen::open_loop(
        &load(r.addr),
        r.recipe.clone(),
        rate,
        window,
        Duration::from_secs(2),
        &mut |e| match e {
            Edge::Start => cpu[0] = procstat::cpu_seconds(r.pid),
            Edge::End => cpu[1] = procstat::cpu_seconds(r.pid),
        },
    ))?;
    let backlog = match r.queue_admin {
        Some(admin) => {
            let b = backlog_after_window(admin)?;
            cpu[1] = procstat::cpu_seconds(r.pid);
            Some(b)
        }
        None => None,
    };
    Ok(LatencyRun {
        cpu_us_per_req: if run.ok > 0 {
            (cpu[1] - cpu[0]) * 1e6 / run.ok as f64
        } else {
            f64::NAN
        },
        run,
        backlog,
    })
}

/// Each queued scenario and its synchronous twin, when both run, under one open-loop rate:
/// half the queued one's capacity (orders accepted and delivered per second), so its
/// deliveries keep up with its acceptances. Interleaved repetitions of the latency phase's
/// window.
fn sustained(
    rt: &tokio::runtime::Runtime,
    ready: &mut [Ready<'_>],
    load: &dyn Fn(SocketAddr) -> Load,
    plan: &Plan,
) -> anyhow::Result<()> {
    let pairs: Vec<(usize, usize)> = (0..ready.len())
        .filter(|&i| ready[i].queue_admin.is_some())
        .filter_map(|i| Some((i, twin(ready, i)?)))
        .collect();
    for (q, s) in pairs {
        let Some(capacity) = ready[q].report.capacity() else {
            continue;
        };
        let rate = capacity * 0.5;
        let mut runs: [Vec<LatencyRun>; 2] = [Vec::new(), Vec::new()];
        for rep in 0..plan.reps {
            // the pair takes turns going first, as twins do (`rotation`)
            let turn = if rep % 2 == 0 {
                [(0, q), (1, s)]
            } else {
                [(1, s), (0, q)]
            };
            for (k, i) in turn {
                let run = open_window(rt, &ready[i], load, rate, plan.latency)?;
                eprintln!(
                    "sustained {:<15} {:>8.0}/s offered  cpu {:>6.1} µs/req  errors {} dropped {}{}",
                    ready[i].scenario.id,
                    rate,
                    run.cpu_us_per_req,
                    run.run.errors + run.run.bad_status,
                    run.run.dropped,
                    backlog_note(run.backlog)
                );
                runs[k].push(run);
            }
        }
        let [qruns, sruns] = runs;
        for (i, other, runs) in [(q, s, qruns), (s, q, sruns)] {
            let cpu: Vec<f64> = runs.iter().map(|r| r.cpu_us_per_req).collect();
            let Some(cpu_us_per_req) = Stat::of(&cpu) else {
                continue;
            };
            ready[i].report.sustained = Some(SustainedPoint {
                paired_with: ready[other].scenario.id.to_owned(),
                offered_rps: rate,
                cpu_us_per_req,
                runs,
            });
        }
    }
    Ok(())
}

/// `--soak`: minutes of closed-loop load per scenario, one row per minute with its throughput,
/// CPU per request and resident memory at the minute's end; a markdown table.
fn soak(
    rt: &tokio::runtime::Runtime,
    ready: &[Ready],
    load: &dyn Fn(SocketAddr) -> Load,
    minutes: u32,
) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let mut table = String::new();
    for r in ready {
        writeln!(
            table,
            "### soak: {} ({minutes} min, closed loop)\n",
            r.scenario.id
        )?;
        // a queued scenario also shows its deliveries: under the closed loop the acceptances
        // outrun them, and how far is what the rows tell
        let queued = r.queue_admin;
        if queued.is_some() {
            writeln!(
                table,
                "| minute | req/s | CPU µs/req | errors | VmRSS MiB | delivered/s | queued at the end |"
            )?;
            writeln!(table, "|---|---|---|---|---|---|---|")?;
        } else {
            writeln!(
                table,
                "| minute | req/s | CPU µs/req | errors | VmRSS MiB |"
            )?;
            writeln!(table, "|---|---|---|---|---|")?;
        }
        let mut first_rss = None;
        let mut delivered = match queued {
            Some(admin) => delivered_total(admin)?,
            None => 0.0,
        };
        for minute in 1..=minutes {
            let mut cpu = [0.0f64; 2];
            let run = rt.block_on(loadgen::closed_loop(
                &load(r.addr),
                r.recipe.clone(),
                Duration::from_secs(60),
                &mut |e| match e {
                    Edge::Start => cpu[0] = procstat::cpu_seconds(r.pid),
                    Edge::End => cpu[1] = procstat::cpu_seconds(r.pid),
                },
            ))?;
            let rss = procstat::rss_kib(r.pid) as f64 / 1024.0;
            first_rss.get_or_insert(rss);
            let mut row = format!(
                "| {minute} | {:.0} | {:.1} | {} | {rss:.1} |",
                run.rps,
                (cpu[1] - cpu[0]) * 1e6 / run.ok.max(1) as f64,
                run.errors + run.bad_status,
            );
            if let Some(admin) = queued {
                let now = delivered_total(admin)?;
                write!(
                    row,
                    " {:.0} | {:.0} |",
                    (now - delivered) / run.window_s.max(1e-9),
                    queue_depth(admin)?
                )?;
                delivered = now;
            }
            eprintln!("soak {} {row}", r.scenario.id);
            writeln!(table, "{row}")?;
        }
        if let Some(admin) = queued {
            let drain = wait_delivered(admin)?;
            writeln!(
                table,
                "\nThe backlog was delivered {drain:.1} s after the load stopped."
            )?;
        }
        let peak = procstat::peak_rss_kib(r.pid) as f64 / 1024.0;
        let last = procstat::rss_kib(r.pid) as f64 / 1024.0;
        writeln!(
            table,
            "\nVmRSS after minute 1: {:.1} MiB, at the end: {last:.1} MiB, peak (VmHWM) {peak:.1} MiB\n",
            first_rss.unwrap_or(0.0)
        )?;
    }
    Ok(table)
}

/// The inputs with real tokens: `placeholder`'s orders, pre-minted RS256 and HS256 tokens.
fn minted_inputs(
    root: &Path,
    placeholder: &Inputs,
    passthrough_path: String,
) -> anyhow::Result<Inputs> {
    Ok(Inputs {
        rs256: tokens::rs256(&root.join("certs/dev-jwt-signing.key"), 64)?,
        hs256: tokens::hs256(64)?,
        orders: placeholder.orders.clone(),
        passthrough_path,
    })
}

/// `--prepare`: the one selected gateway scenario's policy file, the JWKS it names, and its
/// requests on the wire.
fn prepare(
    dir: &Path,
    upstream: SocketAddr,
    args: &Args,
    root: &Path,
    inputs: &Inputs,
) -> anyhow::Result<()> {
    let [id] = args.scenarios.as_slice() else {
        bail!("--prepare takes one scenario (--scenarios ID)");
    };
    let all = scenarios::all(inputs)?;
    let sc = all
        .iter()
        .find(|s| s.id.eq_ignore_ascii_case(id))
        .with_context(|| format!("no scenario {id:?} (--list shows them)"))?;
    anyhow::ensure!(
        sc.system == System::Gateway,
        "{} is not a gateway scenario",
        sc.id
    );
    anyhow::ensure!(!sc.needs_redis, "{} needs a redis-server", sc.id);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    let jwks = dir.join("jwks.json");
    std::fs::write(
        &jwks,
        tokens::jwks(&root.join("certs/dev-jwt-signing.pub"))?,
    )?;
    let files = scenarios::Files::new(root, jwks);
    let text = scenarios::policy_file(upstream, sc.snippet, &files, None);
    std::fs::write(dir.join("policy.yaml"), text)?;
    // the variables the scenario's gateway runs with (a bench-only secret), for `set -a; . env`
    anyhow::ensure!(
        sc.env.iter().all(|(_, v)| !v.contains('\'')),
        "a variable of {} does not fit in single quotes",
        sc.id
    );
    let env: String = sc.env.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
    std::fs::write(dir.join("env"), env)?;
    let host = http::HeaderValue::from_static("bench");
    let mut wire = Vec::new();
    for _ in 0..args.prepare_requests {
        sc.recipe.write_wire(&host, &mut wire);
    }
    std::fs::write(dir.join("requests.http"), wire)?;
    eprintln!(
        "{}: {} requests of {} in {}",
        sc.id,
        args.prepare_requests,
        sc.title,
        dir.display()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = workspace_root();
    let order_raw = std::fs::read(root.join("policies/files/samples/amazon-order.json"))
        .context("reading the sample Amazon order")?;
    let order: serde_json::Value = serde_json::from_slice(&order_raw)?;
    let orders: Arc<[Bytes]> = orders::amazon_variants(&order, orders::DISTINCT_ORDERS)?.into();
    let placeholder_inputs = Inputs {
        rs256: vec!["x".into()],
        hs256: vec!["x".into()],
        orders,
        passthrough_path: scenarios::PASSTHROUGH_PATH.into(),
    };
    if args.list {
        for s in scenarios::all(&placeholder_inputs)? {
            println!("{:<16} {}", s.id, s.title);
        }
        return Ok(());
    }
    if let Some(dir) = &args.prepare {
        // nothing is built or started: the policy file forwards to the given upstream
        let upstream = args
            .prepare_upstream
            .context("--prepare needs --prepare-upstream")?;
        let inputs = minted_inputs(
            &root,
            &placeholder_inputs,
            scenarios::PASSTHROUGH_PATH.into(),
        )?;
        return prepare(dir, upstream, &args, &root, &inputs);
    }
    let plan = if args.quick {
        Plan {
            mode: "quick",
            warmup: Duration::from_secs(1),
            throughput: Duration::from_secs_f64(args.throughput_secs.unwrap_or(2.0)),
            latency: Duration::from_secs_f64(args.latency_secs.unwrap_or(2.0)),
            reps: args.reps.unwrap_or(1),
            rates: if args.rates.is_empty() {
                vec![0.5]
            } else {
                args.rates.clone()
            },
        }
    } else {
        Plan {
            mode: "full",
            warmup: Duration::from_secs(3),
            throughput: Duration::from_secs_f64(args.throughput_secs.unwrap_or(8.0)),
            latency: Duration::from_secs_f64(args.latency_secs.unwrap_or(5.0)),
            reps: args.reps.unwrap_or(3),
            rates: if args.rates.is_empty() {
                vec![0.25, 0.5, 0.75, 0.9]
            } else {
                args.rates.clone()
            },
        }
    };
    if !args.no_build {
        build(&root, &args.upstream)?;
    }
    let bin = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("no binary folder")?;
    // before pinning, which makes this process see one core
    let machine = machine();
    if let Some(n) = args.nice {
        systems::renice_self(n)?;
        systems::set_nice(n);
    }
    if installed("taskset") {
        systems::pin_self(LOAD_CORE)?;
    } else {
        eprintln!("taskset not installed: nothing is pinned (util-linux provides it)");
    }

    let started = Instant::now();
    let (date, file_date) = utc_now();
    let loadavg_start = loadavg();
    let scratch = Scratch::new("run")?;
    let public_pem = root.join("certs/dev-jwt-signing.pub");
    let jwks = scratch.path().join("jwks.json");
    std::fs::write(&jwks, tokens::jwks(&public_pem)?)?;
    let upstream = start_upstream(&args.upstream, &bin, scratch.path())?;
    let passthrough_path = if args.upstream == "erp-sim" {
        // the simulator answers 404 to unknown documents: store one to read back
        let (status, body) = systems::http_post_json(
            upstream.addr,
            "/erp/v1/orders",
            &placeholder_inputs.orders[0],
        )?;
        let ack: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("the simulator answered {status}"))?;
        let id = ack["documentId"]
            .as_str()
            .context("no documentId in the simulator's answer")?;
        format!("/erp/v1/orders/{id}")
    } else {
        scenarios::PASSTHROUGH_PATH.into()
    };
    let inputs = minted_inputs(&root, &placeholder_inputs, passthrough_path)?;
    let all = scenarios::all(&inputs)?;
    let mut wanted: Vec<&Scenario> = if args.scenarios.is_empty() {
        all.iter().collect()
    } else {
        let mut v = Vec::new();
        for id in &args.scenarios {
            match all.iter().find(|s| s.id.eq_ignore_ascii_case(id)) {
                Some(s) => v.push(s),
                None => bail!("no scenario {id:?} (--list shows them)"),
            }
        }
        v
    };
    let mut twins: Vec<(&str, Scenario)> = Vec::new();
    for (i, b) in args.compare.iter().enumerate() {
        let b = std::fs::canonicalize(b).with_context(|| format!("--compare {}", b.display()))?;
        let tag = ["B", "C", "D", "E", "F", "G"]
            .get(i)
            .context("at most 6 --compare binaries")?;
        for s in wanted.iter().filter(|s| s.system == System::Gateway) {
            twins.push((s.id, s.on_binary(tag, b.clone())));
        }
    }
    if !twins.is_empty() {
        // each twin right after its scenario, so A and B alternate within every repetition
        // (and take turns going first, `rotation`)
        let mut v = Vec::new();
        for s in wanted {
            v.push(s);
            v.extend(twins.iter().filter(|(of, _)| *of == s.id).map(|(_, t)| t));
        }
        wanted = v;
    }

    let env = Env {
        bin: &bin,
        upstream_pid: upstream.pid(),
        upstream: &upstream,
        files: scenarios::Files::new(&root, jwks),
        public_pem,
        access_log: !args.no_access_log,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // set up every scenario; the ones that cannot run are reported with the reason
    let mut order_ids: Vec<&str> = Vec::new();
    let mut ready: Vec<Ready> = Vec::new();
    let mut done: HashMap<String, ScenarioReport> = HashMap::new();
    for sc in &wanted {
        order_ids.push(sc.id);
        eprint!("setting up {:<15} ", sc.id);
        let mut attempt = 1;
        loop {
            match start_scenario(sc, &env) {
                Ok(r) => match rt.block_on(loadgen::probe(r.addr, &r.recipe)) {
                    Ok(s) if r.recipe.ok(s) => {
                        eprintln!("ready on {} (pid {})", r.addr, r.pid);
                        ready.push(r);
                    }
                    // A system started on a port chosen by binding `:0` can lose that port to
                    // another listener before it binds it again, and the probe then reaches
                    // that one: start it again, on other ports (dropping `r` stops it).
                    Ok(s) if attempt < SETUP_ATTEMPTS => {
                        eprint!("(answered {s} on {}, starting again) ", r.addr);
                        attempt += 1;
                        continue;
                    }
                    Ok(s) => {
                        let mut rep = r.report;
                        rep.status = Status::Failed(format!("answered {s} to the probe request"));
                        eprintln!("FAILED: answered {s}");
                        done.insert(sc.id.to_owned(), rep);
                    }
                    Err(e) => {
                        let mut rep = r.report;
                        rep.status = Status::Failed(format!("probe: {e:#}"));
                        eprintln!("FAILED: {e:#}");
                        done.insert(sc.id.to_owned(), rep);
                    }
                },
                Err(rep) => {
                    eprintln!("{:?}", rep.status);
                    done.insert(sc.id.to_owned(), *rep);
                }
            }
            break;
        }
    }

    let load = |addr| Load {
        addr,
        connections: args.connections,
        timeout: Duration::from_secs(10),
    };
    // warm-up
    for r in &ready {
        rt.block_on(loadgen::closed_loop(
            &load(r.addr),
            r.recipe.clone(),
            plan.warmup,
            &mut |_| {},
        ))?;
        if let Some(admin) = r.queue_admin {
            wait_delivered(admin)?;
        }
    }
    if let Some(minutes) = args.soak {
        let table = soak(&rt, &ready, &load, minutes)?;
        let out_dir = root.join(&args.out);
        std::fs::create_dir_all(&out_dir)?;
        let path = out_dir.join(format!("{file_date}-soak.md"));
        std::fs::write(&path, &table)?;
        println!("\n{table}\nwrote {}", path.display());
        return Ok(());
    }
    // throughput: interleaved repetitions, twins taking turns going first
    let ids: Vec<&'static str> = ready.iter().map(|r| r.scenario.id).collect();
    for rep in 0..plan.reps {
        for i in rotation::order(&ids, rep) {
            let r = &mut ready[i];
            let pid = r.pid;
            let mut cpu = [0.0f64; 2];
            let run = rt.block_on(loadgen::closed_loop(
                &load(r.addr),
                r.recipe.clone(),
                plan.throughput,
                &mut |e| match e {
                    Edge::Start => cpu[0] = procstat::cpu_seconds(pid),
                    Edge::End => cpu[1] = procstat::cpu_seconds(pid),
                },
            ))?;
            let mut drain_s = None;
            if let Some(admin) = r.queue_admin {
                drain_s = Some(wait_delivered(admin)?);
                cpu[1] = procstat::cpu_seconds(pid);
            }
            let sut_cpu_s = cpu[1] - cpu[0];
            let t = ThroughputRun {
                cpu_us_per_req: if run.ok > 0 {
                    sut_cpu_s * 1e6 / run.ok as f64
                } else {
                    f64::NAN
                },
                sut_util: sut_cpu_s / (run.window_s + drain_s.unwrap_or(0.0)).max(1e-9),
                sut_cpu_s,
                drain_s,
                loadavg: loadavg(),
                run,
            };
            eprintln!(
                "throughput {}/{} {:<15} {:>8.0} req/s  cpu {:>6.1} µs/req  busy {:>3.0}%  errors {}{}",
                rep + 1,
                plan.reps,
                r.scenario.id,
                t.run.rps,
                t.cpu_us_per_req,
                t.sut_util * 100.0,
                t.run.errors + t.run.bad_status,
                t.drain_s
                    .map(|d| format!("  drained in {d:.1} s"))
                    .unwrap_or_default()
            );
            r.report.throughput.push(t);
        }
    }
    for r in &mut ready {
        r.report.summarise();
    }
    // latency: open loop at fractions of each scenario's capacity, interleaved
    for &fraction in &plan.rates {
        let mut runs: Vec<Vec<LatencyRun>> = ready.iter().map(|_| Vec::new()).collect();
        for rep in 0..plan.reps {
            for i in rotation::order(&ids, rep) {
                let r = &ready[i];
                let capacity = r.report.capacity().unwrap_or(0.0);
                if capacity <= 0.0 {
                    continue;
                }
                let rate = capacity * fraction;
                let lr = open_window(&rt, r, &load, rate, plan.latency)?;
                let run = &lr.run;
                eprintln!(
                    "latency {:>3.0}% {:<15} {:>8.0}/s offered  p50 {:>7} µs  p99 {:>7} µs  p99.9 {:>7} µs  send lag p99 {} µs  errors {} dropped {}{}",
                    fraction * 100.0,
                    r.scenario.id,
                    rate,
                    run.latency.p50_us,
                    run.latency.p99_us,
                    run.latency.p999_us,
                    run.send_lag.p99_us,
                    run.errors + run.bad_status,
                    run.dropped,
                    backlog_note(lr.backlog)
                );
                runs[i].push(lr);
            }
        }
        for (r, runs) in ready.iter_mut().zip(runs) {
            if runs.is_empty() {
                continue;
            }
            let stat = |f: &dyn Fn(&LatencyRun) -> u64| {
                Stat::of(&runs.iter().map(|x| f(x) as f64).collect::<Vec<_>>()).unwrap_or_default()
            };
            r.report.latency.push(LatencyPoint {
                fraction,
                offered_rps: runs[0].run.offered_rps.unwrap_or(0.0),
                p50_us: stat(&|x| x.run.latency.p50_us),
                p99_us: stat(&|x| x.run.latency.p99_us),
                p999_us: stat(&|x| x.run.latency.p999_us),
                runs,
            });
        }
    }
    sustained(&rt, &mut ready, &load, &plan)?;
    for r in &mut ready {
        r.report.peak_rss_kib = Some(procstat::peak_rss_kib(r.pid));
    }
    for r in ready {
        done.insert(r.scenario.id.to_owned(), r.report);
    }
    drop(upstream);

    let mut scenarios: Vec<ScenarioReport> =
        order_ids.iter().filter_map(|id| done.remove(*id)).collect();
    report::fill_ratios(&mut scenarios);
    let targets = report::targets(&scenarios);
    let peers = [version_of("nginx", &["-v"]), version_of("haproxy", &["-v"])]
        .into_iter()
        .flatten()
        .collect();
    let rep = Report {
        date,
        machine,
        loadavg_start,
        loadavg_end: loadavg(),
        wall_s: started.elapsed().as_secs_f64(),
        method: Method {
            mode: plan.mode.into(),
            connections: args.connections,
            warmup_s: plan.warmup.as_secs_f64(),
            throughput_s: plan.throughput.as_secs_f64(),
            throughput_reps: plan.reps,
            latency_s: plan.latency.as_secs_f64(),
            latency_reps: plan.reps,
            rate_fractions: plan.rates.clone(),
            upstream: match args.upstream.as_str() {
                "fast" => "bench-upstream (hyper, 1 thread, fixed 199-byte JSON ack)".into(),
                other => other.to_owned(),
            },
            pinning: format!("{SUT_CORE} (generator and upstream on core {LOAD_CORE})"),
            peers,
            access_log: !args.no_access_log,
            nice: args.nice,
        },
        scenarios,
        targets,
    };
    let out_dir = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    std::fs::create_dir_all(&out_dir)?;
    let json_path = out_dir.join(format!("{file_date}.json"));
    let svg_path = out_dir.join(format!("{file_date}.svg"));
    let md_path = out_dir.join(format!("{file_date}.md"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&rep)?)?;
    std::fs::write(&svg_path, report::svg(&rep))?;
    let table = report::table(&rep);
    std::fs::write(&md_path, &table)?;
    println!("\n{table}");
    println!(
        "wrote {}, {} and {}",
        json_path.display(),
        md_path.display(),
        svg_path.display()
    );
    Ok(())
}
