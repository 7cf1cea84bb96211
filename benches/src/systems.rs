//! Starting the processes of a run — the upstream, P0, the gateway, nginx, haproxy, redis —
//! pinned with `taskset`, each listening only on 127.0.0.1 with its files in a scratch folder,
//! and killed when dropped.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The core the system under test runs on, and the one the generator and upstream share.
pub const SUT_CORE: &str = "0";
/// See [`SUT_CORE`].
pub const LOAD_CORE: &str = "1";

/// A scratch folder removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new empty folder under the system's temp dir.
    pub fn new(tag: &str) -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("loadbench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free port on 127.0.0.1 (released, then bound by the process we start).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Whether a program is on PATH.
pub fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

static NICE: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// Every process started from now on runs at nice value `n` (see `--nice`).
pub fn set_nice(n: i32) {
    let _ = NICE.set(n);
}

/// Sets this process's nice value (threads created from now on inherit it).
pub fn renice_self(n: i32) -> anyhow::Result<()> {
    let status = Command::new("renice")
        .args(["-n", &n.to_string(), "-p", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running renice")?;
    if !status.success() {
        bail!("renice -n {n} failed (negative values need root)");
    }
    Ok(())
}

/// `program args` pinned to `core` (unpinned when taskset is missing), at the nice value of
/// [`set_nice`] if one was set. `nice` and `taskset` exec the program, so the child's pid is
/// the program's.
pub fn pinned(core: &str, program: &Path) -> Command {
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Some(n) = NICE.get() {
        argv.extend(["nice".into(), "-n".into(), n.to_string().into()]);
    }
    if installed("taskset") {
        argv.extend(["taskset".into(), "-c".into(), core.into()]);
    }
    argv.push(program.as_os_str().to_owned());
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

/// Pins this process (every thread created from now on inherits it) to `core`.
pub fn pin_self(core: &str) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-cp", core, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?;
    if !status.success() {
        bail!("taskset -cp {core} failed");
    }
    Ok(())
}

/// A running process, killed on drop.
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    /// The address it serves.
    pub addr: SocketAddr,
    /// Where its output goes.
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr into `log`.
    pub fn spawn(
        name: &str,
        addr: SocketAddr,
        mut cmd: Command,
        log: PathBuf,
    ) -> anyhow::Result<Proc> {
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc {
            name: name.to_owned(),
            addr,
            log,
            child,
        })
    }

    /// Its process id (taskset execs the program, so it is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What it printed.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `addr` accepts connections (and the process still runs).
    pub fn wait_listening(&mut self, addr: SocketAddr, within: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("{} exited ({status}):\n{}", self.name, self.output());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > until {
                bail!(
                    "{} is not listening on {addr}:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until `GET path` on `addr` answers 200.
    pub fn wait_http_200(
        &mut self,
        addr: SocketAddr,
        path: &str,
        within: Duration,
    ) -> anyhow::Result<()> {
        let until = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("{} exited ({status}):\n{}", self.name, self.output());
            }
            if http_status(addr, path).is_ok_and(|s| s == 200) {
                return Ok(());
            }
            if Instant::now() > until {
                bail!(
                    "{} never answered 200 on {path}:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of `GET path` on a fresh connection.
pub fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    http_get(addr, path).map(|(status, _)| status)
}

/// `GET path` on a fresh connection: the status and the body (read to EOF).
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    read_answer(s)
}

/// `POST path` with a JSON body on a fresh connection: the status and the body (read to EOF).
pub fn http_post_json(addr: SocketAddr, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    read_answer(s)
}

/// The status and the body of an answer on a connection the peer closes after it.
fn read_answer(mut s: TcpStream) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .context("not an HTTP answer")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default();
    Ok((status, body))
}

/// nginx as a keep-alive reverse proxy to `upstream`, one worker, access log to a file (or
/// off).
pub fn nginx_config(
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    access_log: bool,
) -> String {
    let d = dir.display();
    let access_log = if access_log {
        format!("{d}/nginx-access.log")
    } else {
        "off".into()
    };
    format!(
        r#"# written by loadbench
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {access_log};
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream erp {{
        server {upstream};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://erp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
    }}
}}
"#
    )
}

/// What haproxy does in front of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaproxyMode {
    /// Plain keep-alive passthrough.
    Passthrough,
    /// RS256 `jwt_verify` (with `alg`, `iss`, `aud`, `exp` checks) and a per-channel
    /// stick-table rate limit (high enough never to refuse during a run).
    JwtRateLimit,
}

/// haproxy with one thread, HTTP log lines to stdout (the harness sends them to a file) unless
/// `access_log` is false.
pub fn haproxy_config(
    listen: SocketAddr,
    upstream: SocketAddr,
    mode: HaproxyMode,
    public_pem: &Path,
    access_log: bool,
) -> String {
    let (global_log, log) = if access_log {
        (
            "    log stdout format raw local0 info\n",
            "    log global\n    option httplog\n",
        )
    } else {
        ("", "")
    };
    let checks = match mode {
        HaproxyMode::Passthrough => String::new(),
        HaproxyMode::JwtRateLimit => format!(
            r#"    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
    http-request deny status 401 unless {{ var(txn.alg) -m str RS256 }}
    http-request deny status 401 unless {{ var(txn.bearer),jwt_payload_query('$.iss') -m str {iss} }}
    http-request deny status 401 unless {{ var(txn.bearer),jwt_payload_query('$.aud') -m str {aud} }}
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
    http-request set-var(txn.now) date
    http-request deny status 401 unless {{ var(txn.exp),sub(txn.now) -m int gt 0 }}
    http-request deny status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,"{pem}") -m int 1 }}
    http-request set-var(txn.channel) path,field(3,/)
    http-request track-sc0 var(txn.channel) table ratelimit
    http-request deny status 429 if {{ sc_http_req_rate(0) gt 100000000 }}
"#,
            iss = crate::tokens::ISSUER,
            aud = crate::tokens::AUDIENCE,
            pem = public_pem.display()
        ),
    };
    format!(
        r#"# written by loadbench
global
    nbthread 1
    maxconn 4096
{global_log}
defaults
    mode http
{log}    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 60s

frontend bench
    bind {listen}
{checks}    default_backend erp

backend erp
    http-reuse always
    server erp1 {upstream}

backend ratelimit
    stick-table type string len 64 size 10k expire 60s store http_req_rate(1s)
"#
    )
}
