//! Harness for the end-to-end tests: starts the real `gateway` binary on 127.0.0.1 with a policy
//! file written for the test, reads the addresses it picked, and talks to it over real sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

pub mod otlp;
pub mod raw_upstream;
use serde_json::Value;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The `gateway` binary of the same build profile as this test, built if missing.
pub fn gateway_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("GATEWAY_BIN") {
        return Ok(PathBuf::from(p));
    }
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return Ok(p.clone());
    }
    // target/<profile>/deps/<test> -> target/<profile>/gateway
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test binary location"))?;
    let bin = profile_dir.join("gateway");
    // `cargo test -p tests` does not build other packages' binaries: build it once.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "-q", "-p", "gateway", "--bin", "gateway"])
        // the idempotency tests move the binary's clock through a file
        .args(["--features", "test-hooks"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("building the gateway binary")?;
    if !status.success() || !bin.exists() {
        bail!("could not build {}", bin.display());
    }
    *built = Some(bin.clone());
    Ok(bin)
}

/// A scratch folder removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty folder.
    pub fn new(tag: &str) -> Result<TempDir> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gw-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running gateway process.
pub struct Gateway {
    child: Child,
    /// Plain-HTTP listener.
    pub http: SocketAddr,
    /// TLS listener, when configured.
    pub https: Option<SocketAddr>,
    /// Admin listener.
    pub admin: SocketAddr,
    /// The policy file it serves.
    pub config: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

/// Options for starting a gateway.
#[derive(Debug, Clone, Default)]
pub struct Start {
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Add `--https 127.0.0.1:0` (the file must configure listeners.https).
    pub https: bool,
    /// More arguments of `gateway run`.
    pub args: Vec<String>,
    /// Worker threads (`--threads`), 2 unless set.
    pub threads: Option<usize>,
}

impl Gateway {
    /// Starts the gateway with this policy file text (listeners are overridden with port 0).
    pub fn start(policy_yaml: &str) -> Result<Gateway> {
        Self::start_with(policy_yaml, Start::default())
    }

    /// Starts with options.
    pub fn start_with(policy_yaml: &str, opts: Start) -> Result<Gateway> {
        // Port 0 is resolved by the gateway probing for a free port that Pingora binds a moment
        // later, and a gateway another test starts meanwhile can take it: then this one is not
        // what answers there. Start it again, on other ports.
        let mut taken = Vec::new();
        for _ in 0..3 {
            match Self::start_once(policy_yaml, &opts)? {
                Ok(gw) => return Ok(gw),
                Err(why) => taken.push(why),
            }
        }
        bail!("gateway could not keep its ports:\n{}", taken.join("\n"))
    }

    /// One start: the ready gateway, or why another process holds one of its ports.
    fn start_once(policy_yaml: &str, opts: &Start) -> Result<std::result::Result<Gateway, String>> {
        let dir = TempDir::new("gateway")?;
        let config = dir.path().join("policy.yaml");
        std::fs::write(&config, policy_yaml)?;
        let mut cmd = Command::new(gateway_binary()?);
        cmd.arg("run")
            .arg("-c")
            .arg(&config)
            .args(["--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--threads", &opts.threads.unwrap_or(2).to_string()])
            .args(["--grace-period", "0", "--shutdown-timeout", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if opts.https {
            cmd.args(["--https", "127.0.0.1:0"]);
        }
        cmd.args(&opts.args);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawning gateway")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<Value>();
        if let Some(out) = child.stdout.take() {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && v["message"] == "listening"
                    {
                        let _ = tx.send(v);
                    }
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let listening = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                let log = lines.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
                bail!("gateway did not start:\n{log}");
            }
        };
        let addr =
            |k: &str| -> Option<SocketAddr> { listening[k].as_str().and_then(|s| s.parse().ok()) };
        let gw = Gateway {
            http: addr("http").ok_or_else(|| anyhow!("no http address in {listening}"))?,
            https: addr("https"),
            admin: addr("admin").ok_or_else(|| anyhow!("no admin address in {listening}"))?,
            child,
            config,
            lines,
            _dir: dir,
        };
        Ok(match gw.wait_ready(Duration::from_secs(30))? {
            true => Ok(gw),
            false => Err(gw.output()),
        })
    }

    /// Waits until this process listens on every address it printed and its admin listener
    /// answers ready; `false` when another process keeps one of them.
    fn wait_ready(&self, within: Duration) -> Result<bool> {
        let until = Instant::now() + within;
        let ports: Vec<u16> = [Some(self.http), Some(self.admin), self.https]
            .into_iter()
            .flatten()
            .map(|a| a.port())
            .collect();
        let mut elsewhere_since = None;
        while Instant::now() < until {
            let missing = not_held(self.child.id(), &ports);
            if missing.is_empty()
                && raw_request(
                    self.admin,
                    b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
                )
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(true);
            }
            // someone answers on a port this process does not hold: Pingora keeps retrying
            // its bind, in vain while that one lives
            let taken = missing
                .iter()
                .any(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if taken {
                let since = *elsewhere_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(2) {
                    return Ok(false);
                }
            } else {
                elsewhere_since = None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!("gateway not ready:\n{}", self.output())
    }

    /// `http://<http listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `http://<admin listener><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// The JSON log lines with this message.
    pub fn log_events(&self, message: &str) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// Waits until a log line with this message and `field == value` appears.
    pub fn wait_log(
        &self,
        message: &str,
        field: &str,
        value: &str,
        within: Duration,
    ) -> Result<Value> {
        let until = Instant::now() + within;
        loop {
            if let Some(v) = self
                .log_events(message)
                .into_iter()
                .find(|v| v[field].as_str() == Some(value))
            {
                return Ok(v);
            }
            if Instant::now() > until {
                bail!(
                    "no {message:?} log with {field}={value:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the process has printed `text` (its output is read from a pipe by a thread
    /// of its own, so a line can trail what the process did just before it, a metric say).
    pub fn wait_output(&self, text: &str, within: Duration) -> Result<()> {
        let until = Instant::now() + within;
        while !self.output().contains(text) {
            if Instant::now() > until {
                bail!("no {text:?} in the output:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Replaces the policy file (not yet reloaded).
    pub fn write_config(&self, yaml: &str) -> Result<()> {
        std::fs::write(&self.config, yaml)?;
        Ok(())
    }

    /// The gateway process's id (for what `/proc` tells of it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGHUP.
    pub fn sighup(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -HUP failed");
        }
        Ok(())
    }

    /// The admin `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        let resp = raw_request(
            self.admin,
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )?;
        Ok(String::from_utf8_lossy(&resp.body).into_owned())
    }

    /// The value of one metric series, e.g. `gateway_requests_total{route="r",...}`; 0 if absent.
    pub fn metric(&self, series: &str) -> Result<f64> {
        let text = self.metrics()?;
        Ok(text
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0))
    }

    /// Waits until a metric series reaches `value` (request counters are updated after the
    /// response is sent, so a client can see its answer before the count moves).
    pub fn wait_metric(&self, series: &str, value: f64) -> Result<()> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.metric(series)?;
            if now == value {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("{series} is {now}, expected {value}:\n{}", self.metrics()?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL (`kill -9`): no shutdown, nothing flushed.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Calls the admin API: its status and JSON body.
    pub fn admin_json(&self, method: &str, path_and_query: &str) -> Result<(u16, Value)> {
        let req = format!(
            "{method} {path_and_query} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let resp = raw_request(self.admin, req.as_bytes())?;
        let body = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        Ok((resp.status, body))
    }

    /// The admin `/config` document.
    pub fn config_doc(&self) -> Result<Value> {
        let resp = raw_request(
            self.admin,
            b"GET /config HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )?;
        Ok(serde_json::from_slice(&resp.body)?)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ports of `ports` on which process `pid` holds no listening TCP socket (from `/proc`;
/// none where that cannot be read).
fn not_held(pid: u32, ports: &[u16]) -> Vec<u16> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let sockets: std::collections::HashSet<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?;
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut listening = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && sockets.contains(f[9]) {
                let port = f[1].rsplit(':').next();
                if let Some(p) = port.and_then(|p| u16::from_str_radix(p, 16).ok()) {
                    listening.insert(p);
                }
            }
        }
    }
    ports
        .iter()
        .copied()
        .filter(|p| !listening.contains(p))
        .collect()
}

/// A response read off a raw socket.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body (by Content-Length, or to EOF).
    pub body: Vec<u8>,
    /// Whether the server closed the connection after the response.
    pub closed: bool,
}

impl RawResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

/// Writes raw bytes to `addr` and reads one response (then checks whether the server closed).
pub fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Result<RawResponse> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(bytes)?;
    read_response(&mut s)
}

/// Reads one HTTP/1.1 response from a stream.
pub fn read_response(s: &mut TcpStream) -> Result<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!(
                "connection closed before a response head ({} bytes)",
                buf.len()
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match len {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None => {
            s.read_to_end(&mut body)?;
        }
    }
    // Closed means: the next read returns EOF promptly (or an error), not a timeout.
    s.set_read_timeout(Some(Duration::from_millis(1500)))?;
    let closed = matches!(s.read(&mut chunk), Ok(0) | Err(_)) && {
        // distinguish a timeout (open) from EOF/reset (closed)
        let mut probe = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        match s.read(&mut probe) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    };
    Ok(RawResponse {
        status,
        headers,
        body,
        closed,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A policy file with one upstream (`erp`, at `upstream`) and the given channels, policies and
/// routes sections (YAML text, indented as top-level keys).
pub fn policy_file(upstream: SocketAddr, extra_upstream_keys: &str, body: &str) -> String {
    format!(
        "version: 1\n\
         listeners:\n  http: 127.0.0.1:0\n  admin: 127.0.0.1:0\n\
         channels:\n  amazon: {{}}\n  shopify: {{}}\n  walmart: {{}}\n  ebay: {{}}\n\
         upstreams:\n  erp:\n    endpoints: [\"{upstream}\"]\n{extra_upstream_keys}\
         {body}"
    )
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// An HTTP client that never reuses a failed connection and accepts the development CA.
pub fn client() -> Result<reqwest::Client> {
    let ca = std::fs::read(workspace_root().join("certs/dev-ca.crt"))?;
    Ok(reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Polls `cond` until it holds.
pub async fn eventually(
    what: &str,
    within: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<()> {
    let until = Instant::now() + within;
    while !cond() {
        if Instant::now() > until {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A real `redis-server` on 127.0.0.1, started for one test (no persistence), that the test can
/// kill, restart on the same port, or stall.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// Starts one on a free port.
    pub fn start() -> Result<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut server = RedisServer {
            child: None,
            port,
            dir: TempDir::new("redis")?,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (scripts/test.sh installs it)")?;
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.command(&["PING"]).is_ok_and(|r| r == "+PONG") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("redis-server did not start on port {}", self.port)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL): the port stops answering at once.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Sends one command and returns the first line of the reply (`+OK`, `:1`, `$3`...).
    pub fn command(&self, args: &[&str]) -> Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes())?;
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }

    /// Makes the server unresponsive for `ms` milliseconds (`DEBUG SLEEP`), without waiting.
    pub fn stall(&self, ms: u64) -> std::thread::JoinHandle<()> {
        let port = self.port;
        std::thread::spawn(move || {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let secs = format!("{:.3}", ms as f64 / 1000.0);
                let req = format!(
                    "*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n${}\r\n{secs}\r\n",
                    secs.len()
                );
                let _ = s.write_all(req.as_bytes());
                let _ = s.set_read_timeout(Some(Duration::from_millis(ms + 5000)));
                let mut buf = [0u8; 16];
                let _ = s.read(&mut buf);
            }
        })
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real 3-master Redis Cluster on 127.0.0.1 (no replicas, no persistence), started for one
/// test: three `redis-server --cluster-enabled yes`, each in its own folder, joined with
/// `redis-cli --cluster create`, ready once every node reports `cluster_state:ok`.
pub struct RedisCluster {
    nodes: Vec<Child>,
    /// The masters' ports.
    pub ports: Vec<u16>,
    _dirs: Vec<TempDir>,
}

impl RedisCluster {
    /// Starts one on free ports.
    pub fn start() -> Result<RedisCluster> {
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            ports: Vec::new(),
            _dirs: Vec::new(),
        };
        // the ports are held until every one is chosen, so they differ
        let held: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<_>>()?;
        let ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<_>>()?;
        drop(held);
        for port in ports {
            let dir = TempDir::new("redis-cluster")?;
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--cluster-node-timeout", "5000"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting redis-server (scripts/system-deps.sh installs it)")?;
            cluster.nodes.push(child);
            cluster.ports.push(port);
            cluster._dirs.push(dir);
        }
        for &port in &cluster.ports {
            cluster.wait_for(port, "PONG", &["PING"])?;
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .context("running redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for &port in &cluster.ports {
            cluster.wait_for(port, "cluster_state:ok", &["CLUSTER", "INFO"])?;
        }
        Ok(cluster)
    }

    fn wait_for(&self, port: u16, expected: &str, args: &[&str]) -> Result<()> {
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            let out = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(args)
                .output();
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(expected)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("redis cluster node {port} did not answer {expected}")
    }

    /// `redis://127.0.0.1:<port>` of the first master (a seed: the client learns the rest).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.nodes {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The Python that has playwright, for the browser tests: `GATEWAY_TEST_PYTHON`, else the venv
/// `scripts/system-deps.sh` makes (`target/browser-venv`), else `python3`.
pub fn browser_python() -> PathBuf {
    if let Some(p) = std::env::var_os("GATEWAY_TEST_PYTHON") {
        return p.into();
    }
    let venv = workspace_root().join("target/browser-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    "python3".into()
}

/// A program of the OpenAPI tools' venv (`openapi-spec-validator`, `st` of schemathesis):
/// `GATEWAY_TEST_OPENAPI_VENV/bin/<name>` when set, else the venv `scripts/system-deps.sh`
/// makes (`target/openapi-venv`).
pub fn openapi_tool(name: &str) -> Result<PathBuf> {
    let venv = std::env::var_os("GATEWAY_TEST_OPENAPI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/openapi-venv"));
    let tool = venv.join("bin").join(name);
    if !tool.exists() {
        bail!(
            "{} is missing: run scripts/system-deps.sh (it installs the pinned OpenAPI tools into target/openapi-venv)",
            tool.display()
        );
    }
    Ok(tool)
}

#[cfg(test)]
mod not_held_tests {
    use super::not_held;

    /// A listener of this process is found; one another process holds is not this one's.
    #[test]
    fn only_the_process_that_holds_a_listener_listens_on_its_port() {
        let ours = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = ours.local_addr().unwrap().port();
        assert_eq!(not_held(std::process::id(), &[port]), [0u16; 0]);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert_eq!(not_held(child.id(), &[port]), [port]);
        child.kill().unwrap();
        child.wait().unwrap();
        drop(ours);
        assert_eq!(not_held(std::process::id(), &[port]), [port]);
    }
}
