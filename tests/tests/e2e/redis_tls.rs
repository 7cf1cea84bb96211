//! `rediss://` against a real redis-server listening on TLS only, with certificates made here
//! by rcgen (a private CA, a server certificate for 127.0.0.1, a client certificate: the server
//! requires one, as redis-server does by default): the gateway's Redis rate limit and
//! idempotency work over it with `redis.tls`, and a connection that cannot be verified (the CA
//! not given, so only the public roots are trusted) or that has no client certificate is
//! refused, the policy's store-failure behaviour answering instead.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use erp_sim::ErpSim;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tests::{Gateway, TempDir, policy_file};

/// The PEM files of one test: a CA, the server's certificate and a client's, all signed by it.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("redis-tls").unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "redis test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        for (name, client) in [("server", false), ("client", true)] {
            let sans = if client {
                vec![]
            } else {
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
            };
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![if client {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join(format!("{name}.crt")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A redis-server with no plain port, TLS on `port`, client certificates required.
struct TlsRedis {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl TlsRedis {
    fn start(pki: &Pki) -> Result<TlsRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = TempDir::new("redis-tls-data")?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(pki.path("server.crt"))
            .arg("--tls-key-file")
            .arg(pki.path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(pki.path("ca.crt"))
            .args(["--tls-auth-clients", "yes"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = TlsRedis {
            child,
            port,
            _dir: dir,
        };
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if server.cli(pki, &["PING"]).is_ok_and(|r| r == "PONG") {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("redis-server with TLS did not start on port {port}")
    }

    /// Runs one command through `redis-cli --tls` with the client certificate.
    fn cli(&self, pki: &Pki, args: &[&str]) -> Result<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--tls"])
            .arg("--cacert")
            .arg(pki.path("ca.crt"))
            .arg("--cert")
            .arg(pki.path("client.crt"))
            .arg("--key")
            .arg(pki.path("client.key"))
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("redis-cli: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A policy file whose `orders` GET route is rate limited (2 per hour per channel, decided on
/// Redis, refused with 503 when Redis cannot be asked) and whose POST route is idempotent on
/// Redis; `tls` is the `redis.tls` section (indented YAML) or empty.
fn file(sim: &ErpSim, redis: &TlsRedis, tls: &str) -> String {
    let body = format!(
        "redis:\n  url: \"{url}\"\n  timeout: 2s\n  connect_timeout: 2s\n{tls}\
         policies:\n\
         \x20 rl:\n    kind: rate_limit\n    store: redis\n    on_store_error: deny\n    key: [channel]\n    limits: [{{name: hourly, rate: 2, per: 1h}}]\n\
         \x20 idem:\n    kind: idempotency\n    ttl: 1h\n    lease: 60s\n    store: redis\n\
         routes:\n\
         \x20 - name: orders\n    methods: [GET]\n    path: /channels/{{channel}}/orders\n    upstream: erp\n    upstream_path: /echo/{{channel}}\n    policies: [rl]\n\
         \x20 - name: create\n    methods: [POST]\n    path: /channels/{{channel}}/orders\n    upstream: erp\n    upstream_path: /erp/v1/orders\n    policies: [idem]\n",
        url = redis.url()
    );
    policy_file(sim.addr(), "", &body)
}

fn full_tls(pki: &Pki) -> String {
    format!(
        "  tls:\n    ca: {:?}\n    client_cert: {:?}\n    client_key: {:?}\n",
        pki.path("ca.crt").display().to_string(),
        pki.path("client.crt").display().to_string(),
        pki.path("client.key").display().to_string()
    )
}

async fn get_status(client: &reqwest::Client, gw: &Gateway, path: &str) -> u16 {
    client
        .get(gw.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_idempotency_work_over_rediss_with_a_private_ca_and_client_cert() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki).unwrap();
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&file(&sim, &redis, &full_tls(&pki))).unwrap();
    let client = reqwest::Client::new();

    // decided on Redis: with `on_store_error: deny` an unreachable Redis would answer 503
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get_status(&client, &gw, "/channels/amazon/orders").await);
    }
    assert_eq!(statuses, [200, 200, 429], "{}", gw.output());
    // another channel has its own count, on the same Redis
    assert_eq!(get_status(&client, &gw, "/channels/ebay/orders").await, 200);

    // the second POST with the same key is the stored answer, read back from Redis
    let post = |key: &'static str| {
        client
            .post(gw.url("/channels/amazon/orders"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(r#"{"order_id":"A-1"}"#)
            .send()
    };
    let first = post("tls-order-1").await.unwrap();
    let first_status = first.status().as_u16();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body = first.bytes().await.unwrap();
    let again = post("tls-order-1").await.unwrap();
    assert_eq!(again.status().as_u16(), first_status);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true"),
        "{}",
        gw.output()
    );
    assert_eq!(again.bytes().await.unwrap(), first_body);
    let posted = sim
        .requests()
        .iter()
        .filter(|r| r.path == "/erp/v1/orders")
        .count();
    assert_eq!(posted, 1, "the ERP got the order once");

    // the state is really in this Redis: the limiter's keys and the idempotency record
    let keys: usize = redis.cli(&pki, &["DBSIZE"]).unwrap().parse().unwrap();
    assert!(keys >= 3, "{keys} keys");
    assert_eq!(store_errors(&gw), 0.0, "{}", gw.output());
}

/// `gateway_ratelimit_store_errors_total`, all series summed.
fn store_errors(gw: &Gateway) -> f64 {
    gw.metrics()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("gateway_ratelimit_store_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Verification is real: the private CA not given (only the public roots trusted), or no
/// client certificate for a server that requires one, and nothing reaches Redis: the limit
/// answers 503 (`on_store_error: deny`) and the store errors are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverifiable_server_or_a_missing_client_certificate_is_refused() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki).unwrap();
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = reqwest::Client::new();
    let without_ca = format!(
        "  tls:\n    client_cert: {:?}\n    client_key: {:?}\n",
        pki.path("client.crt").display().to_string(),
        pki.path("client.key").display().to_string()
    );
    let without_client_cert = format!(
        "  tls:\n    ca: {:?}\n",
        pki.path("ca.crt").display().to_string()
    );
    for tls in [without_ca, without_client_cert, String::new()] {
        let gw = Gateway::start(&file(&sim, &redis, &tls)).unwrap();
        for _ in 0..3 {
            assert_eq!(
                get_status(&client, &gw, "/channels/amazon/orders").await,
                503,
                "{tls}\n{}",
                gw.output()
            );
        }
        let errors = store_errors(&gw);
        assert!(errors >= 1.0, "{tls}\n{}", gw.output());
    }
    assert_eq!(redis.cli(&pki, &["DBSIZE"]).unwrap(), "0");
    assert!(sim.requests().is_empty());
}

/// `tls` with a plain `redis://` URL, and the `#insecure` fragment that would turn verification
/// off, are refused by `gateway check` with their location.
#[test]
fn tls_settings_need_rediss_and_insecure_is_refused() {
    let dir = TempDir::new("redis-tls-check").unwrap();
    for (url, tls, expected) in [
        (
            "redis://127.0.0.1:6379",
            "  tls: {ca: ca.pem}\n",
            "tls settings need a rediss:// URL",
        ),
        ("rediss://127.0.0.1:6379/#insecure", "", "#insecure"),
        (
            "rediss://127.0.0.1:6379",
            "  tls: {ca: missing-ca.pem}\n",
            "missing-ca.pem",
        ),
    ] {
        let file = dir.path().join("policy.yaml");
        std::fs::write(
            &file,
            format!(
                "version: 1\nredis:\n  url: \"{url}\"\n{tls}upstreams:\n  erp:\n    endpoints: [\"127.0.0.1:9\"]\nroutes: []\n"
            ),
        )
        .unwrap();
        let out = Command::new(tests::gateway_binary().unwrap())
            .arg("check")
            .arg("-c")
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{stdout}");
        assert!(stdout.contains(expected), "{url}: {stdout}");
        assert!(
            stdout.contains("policy.yaml:3:"),
            "located at redis.url: {stdout}"
        );
    }
}
