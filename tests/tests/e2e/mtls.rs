//! Mutual TLS against the real binary: a listener that requires or asks for client
//! certificates, the `client_cert` policy binding certificates to channels (alone and with a
//! token), server certificates and client CA bundles reloaded on SIGHUP and on file change,
//! the expiry metrics, and the admin listener over TLS with client certificates. Every
//! certificate is made here with rcgen.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use erp_sim::ErpSim;
use jsonwebtoken::{EncodingKey, Header, encode};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use tests::{Gateway, Start, TempDir, policy_file, sha256_hex};

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM, and the certificate's DER.
struct Leaf {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Leaf {
    fn fingerprint(&self) -> String {
        sha256_hex(&self.der)
    }

    /// Certificate and key in one PEM, as reqwest takes a client identity.
    fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.cert, self.key).as_bytes()).unwrap()
    }
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `localhost` (server) or a client named `cn` with these DNS SANs.
    fn leaf(&self, cn: &str, sans: &[&str], client: bool) -> Leaf {
        self.leaf_until(cn, sans, client, (2035, 1, 1))
    }

    /// A leaf whose notAfter is midnight UTC of `(year, month, day)`.
    fn leaf_until(&self, cn: &str, sans: &[&str], client: bool, not_after: (i32, u8, u8)) -> Leaf {
        let mut names: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        if !client {
            names.push("localhost".into());
        }
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Writes a file through a temporary name and a rename, as a certificate rotation does.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The files of one test's TLS material.
struct Files {
    dir: TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: TempDir::new("mtls").unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// The `listeners.https` line of a policy file, with client auth when `ca` is given.
fn https_listener(files: &Files, ca: Option<(&str, bool)>) -> String {
    let client_auth = ca.map_or(String::new(), |(ca, required)| {
        format!(
            ", client_auth: {{ca: \"{}\", required: {required}}}",
            files.path(ca).display()
        )
    });
    format!(
        "listeners:\n  https: {{address: \"127.0.0.1:0\", cert: \"{}\", key: \"{}\"{client_auth}}}\n",
        files.path("server.crt").display(),
        files.path("server.key").display(),
    )
}

fn start(sim: &ErpSim, listener: &str, body: &str) -> Gateway {
    let yaml = policy_file(sim.addr(), "", body).replace("listeners:\n", listener);
    Gateway::start_with(
        &yaml,
        Start {
            https: true,
            env: vec![(
                "TEST_HS_SECRET".into(),
                "0123456789abcdef0123456789abcdef".into(),
            )],
            ..Start::default()
        },
    )
    .unwrap()
}

/// A client trusting `ca`, presenting `identity` if given, on a connection of its own.
fn tls_client(ca: &Ca, identity: Option<&Leaf>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .use_rustls_tls()
        .tls_info(true)
        .http1_only()
        // a sign-in's 303 and its cookie are what the admin test reads
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20));
    if let Some(id) = identity {
        b = b.identity(id.identity());
    }
    b.build().unwrap()
}

fn https_url(gw: &Gateway, path: &str) -> String {
    format!("https://localhost:{}{path}", gw.https.unwrap().port())
}

/// The DER of the server certificate the response's connection was made with.
fn peer_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("TLS info with the server certificate")
}

/// The status and problem type of a refusal.
async fn problem(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["type"].as_str().unwrap_or_default().to_owned())
}

/// The server and client certificates of most tests: one CA issues all of them.
struct Pki {
    ca: Ca,
    files: Files,
    server: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let ca = Ca::new("partner CA");
        let files = Files::new();
        let server = ca.leaf("gateway", &[], false);
        files.write("server.crt", &server.cert);
        files.write("server.key", &server.key);
        files.write("ca.crt", &ca.pem());
        Pki { ca, files, server }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_requires_client_certificates_refuses_handshakes_without_one() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let pki = Pki::new();
    let gw = start(
        &sim,
        &https_listener(&pki.files, Some(("ca.crt", true))),
        "routes:\n  - {name: echo, methods: [GET], path: /echo, upstream: erp}\n",
    );
    let url = https_url(&gw, "/echo");
    let no_cert = tls_client(&pki.ca, None).get(&url).send().await;
    assert!(
        no_cert.is_err(),
        "a handshake without a certificate must fail"
    );
    let stranger_ca = Ca::new("someone else's CA");
    let foreign = stranger_ca.leaf("acme-3pl", &[], true);
    let r = tls_client(&pki.ca, Some(&foreign)).get(&url).send().await;
    assert!(r.is_err(), "a certificate of an unknown CA must fail");
    assert_eq!(sim.requests_started(), 0, "nothing reached the upstream");

    let good = pki.ca.leaf("acme-3pl", &[], true);
    let r = tls_client(&pki.ca, Some(&good))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sim.requests_started(), 1);
}

const PARTNER_POLICIES: &str = "policies:
  partner-cert:
    kind: client_cert
    clients:
      - {subject_cn: acme-3pl, channel: walmart}
      - {san_dns: edi.globex.example, channel: ebay}
      - {fingerprint_sha256: \"FINGERPRINT\", channel: shopify}
  partner-token:
    kind: jwt
    issuer: https://idp.test
    audience: gateway
    keys:
      hs256: {k1: \"${TEST_HS_SECRET}\"}
    channel: {claim: channel}
routes:
  - {name: shipments, methods: [POST], path: \"/partners/{channel}/shipments\", upstream: erp, upstream_path: /echo, policies: [partner-cert]}
  - {name: any-partner, methods: [POST], path: /partners/shipments, upstream: erp, upstream_path: /echo, policies: [partner-cert]}
  - {name: both, methods: [POST], path: /b2b/orders, upstream: erp, upstream_path: /echo, policies: [partner-token, partner-cert]}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_cert_policy_binds_certificates_to_channels() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let pki = Pki::new();
    let acme = pki.ca.leaf("acme-3pl", &[], true);
    let globex = pki.ca.leaf("globex", &["edi.globex.example"], true);
    let pinned = pki.ca.leaf("whoever", &[], true);
    let unlisted = pki.ca.leaf("not-a-partner", &[], true);
    let gw = start(
        &sim,
        &https_listener(&pki.files, Some(("ca.crt", false))),
        &PARTNER_POLICIES.replace("FINGERPRINT", &pinned.fingerprint()),
    );
    let post = |client: &reqwest::Client, path: &str| {
        client
            .post(https_url(&gw, path))
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };

    // the right certificate for the route's channel is forwarded
    let r = post(
        &tls_client(&pki.ca, Some(&acme)),
        "/partners/walmart/shipments",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    // over HTTP/2 too (the certificate is kept with the connection, for every stream)
    let h2 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.pem().as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .use_rustls_tls()
        .identity(globex.identity())
        .build()
        .unwrap();
    let r = post(&h2, "/partners/ebay/shipments").await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200, "matched by its SAN DNS name");
    let r = post(
        &tls_client(&pki.ca, Some(&pinned)),
        "/partners/shopify/shipments",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "matched by its fingerprint");
    assert_eq!(sim.requests_started(), 3);

    // no certificate: 401; another channel's: 403; a certificate no entry lists: 403
    let r = post(&tls_client(&pki.ca, None), "/partners/walmart/shipments")
        .await
        .unwrap();
    assert_eq!(
        problem(r).await,
        (
            401,
            "urn:gateway:problem:client-certificate-required".into()
        )
    );
    let r = post(
        &tls_client(&pki.ca, Some(&globex)),
        "/partners/walmart/shipments",
    )
    .await
    .unwrap();
    assert_eq!(
        problem(r).await,
        (403, "urn:gateway:problem:channel-forbidden".into())
    );
    let r = post(
        &tls_client(&pki.ca, Some(&unlisted)),
        "/partners/walmart/shipments",
    )
    .await
    .unwrap();
    assert_eq!(
        problem(r).await,
        (
            403,
            "urn:gateway:problem:client-certificate-forbidden".into()
        )
    );
    // plain HTTP carries no certificate at all
    let r = reqwest::Client::new()
        .post(gw.url("/partners/walmart/shipments"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // a certificate of a CA the listener does not trust fails the handshake, even optional
    let foreign = Ca::new("someone else's CA").leaf("acme-3pl", &[], true);
    let r = post(
        &tls_client(&pki.ca, Some(&foreign)),
        "/partners/walmart/shipments",
    )
    .await;
    assert!(
        r.is_err(),
        "an unknown CA's certificate must fail the handshake"
    );
    assert_eq!(
        sim.requests_started(),
        3,
        "no refused request reached the ERP"
    );

    // on a route without {channel}, the certificate names the channel
    let r = post(&tls_client(&pki.ca, Some(&acme)), "/partners/shipments")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = gw
        .wait_log("request", "route", "any-partner", Duration::from_secs(10))
        .unwrap();
    assert_eq!(line["channel"], "walmart");
    assert_eq!(line["client_cert"], "acme-3pl");
    assert_eq!(line["client_cert_sha256"], acme.fingerprint());

    gw.wait_metric(
        "gateway_client_cert_accepted_total{channel=\"walmart\",policy=\"partner-cert\"}",
        2.0,
    )
    .unwrap();
    for (reason, n) in [
        ("missing_certificate", 2.0),
        ("channel_mismatch", 1.0),
        ("unknown_certificate", 1.0),
    ] {
        gw.wait_metric(
            &format!("gateway_auth_failures_total{{policy=\"partner-cert\",reason=\"{reason}\"}}"),
            n,
        )
        .unwrap();
    }
}

fn token(channel: &str) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut h = Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("k1".into());
    encode(
        &h,
        &json!({"iss": "https://idp.test", "aud": "gateway", "exp": now + 600, "channel": channel}),
        &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_a_token_and_a_certificate_needs_both_of_one_channel() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let pki = Pki::new();
    let acme = pki.ca.leaf("acme-3pl", &[], true);
    let gw = start(
        &sim,
        &https_listener(&pki.files, Some(("ca.crt", false))),
        &PARTNER_POLICIES.replace("FINGERPRINT", &"ab".repeat(32)),
    );
    let url = https_url(&gw, "/b2b/orders");
    let with_cert = tls_client(&pki.ca, Some(&acme));
    let without = tls_client(&pki.ca, None);

    let r = without
        .post(&url)
        .bearer_auth(token("walmart"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a token alone is not enough");
    let r = with_cert.post(&url).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401, "a certificate alone is not enough");
    let r = with_cert
        .post(&url)
        .bearer_auth(token("amazon"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(r).await,
        (403, "urn:gateway:problem:channel-forbidden".into()),
        "the token's channel and the certificate's differ"
    );
    assert_eq!(sim.requests_started(), 0);
    let r = with_cert
        .post(&url)
        .bearer_auth(token("walmart"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sim.requests_started(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificates_reload_on_sighup_and_on_file_change() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let pki = Pki::new();
    let gw = start(
        &sim,
        &https_listener(&pki.files, None),
        "routes:\n  - {name: echo, methods: [GET], path: /echo, upstream: erp}\n",
    );
    let url = https_url(&gw, "/echo");
    // a client whose one pooled connection is made before the reload
    let kept = tls_client(&pki.ca, None);
    let r = kept.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer_cert(&r), pki.server.der);

    // SIGHUP: a new connection gets the new certificate
    let second = pki.ca.leaf("gateway-2", &[], false);
    replace(&pki.files.path("server.key"), &second.key);
    replace(&pki.files.path("server.crt"), &second.cert);
    gw.sighup().unwrap();
    gw.wait_log(
        "TLS certificate reloaded: new connections use it",
        "cause",
        "SIGHUP",
        Duration::from_secs(10),
    )
    .unwrap();
    let r = tls_client(&pki.ca, None).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        peer_cert(&r),
        second.der,
        "a new connection sees the new certificate"
    );
    // the connection made before is untouched (it still shows the first certificate)
    let r = kept.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer_cert(&r), pki.server.der);

    // no signal: the file change alone is picked up
    let third = pki.ca.leaf("gateway-3", &[], false);
    replace(&pki.files.path("server.key"), &third.key);
    replace(&pki.files.path("server.crt"), &third.cert);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let r = tls_client(&pki.ca, None).get(&url).send().await.unwrap();
        if peer_cert(&r) == third.der {
            break;
        }
        assert!(
            Instant::now() < until,
            "the changed files were not reloaded:\n{}",
            gw.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gw.metric("gateway_tls_reloads_total{listener=\"https\",outcome=\"ok\"}")
            .unwrap()
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_cannot_be_parsed_is_refused_and_the_old_one_keeps_serving() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let pki = Pki::new();
    let gw = start(
        &sim,
        &https_listener(&pki.files, Some(("ca.crt", true))),
        "routes:\n  - {name: echo, methods: [GET], path: /echo, upstream: erp}\n",
    );
    let url = https_url(&gw, "/echo");
    let client_cert = pki.ca.leaf("acme-3pl", &[], true);
    let cert_path = pki.files.path("server.crt");
    replace(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    );
    gw.sighup().unwrap();
    let refused = gw
        .wait_log(
            "TLS reload refused: the previous certificate keeps serving",
            "path",
            &cert_path.display().to_string(),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(refused["listener"], "https");
    let r = tls_client(&pki.ca, Some(&client_cert))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        peer_cert(&r),
        pki.server.der,
        "the old certificate still serves"
    );
    assert!(
        gw.metric("gateway_tls_reloads_total{listener=\"https\",outcome=\"error\"}")
            .unwrap()
            >= 1.0
    );

    // a CA bundle that is not PEM is refused the same way
    replace(&cert_path, &pki.server.cert);
    let ca_path = pki.files.path("ca.crt");
    replace(&ca_path, "garbage\n");
    gw.sighup().unwrap();
    gw.wait_log(
        "TLS reload refused: the previous certificate keeps serving",
        "path",
        &ca_path.display().to_string(),
        Duration::from_secs(10),
    )
    .unwrap();
    let r = tls_client(&pki.ca, Some(&client_cert))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the old CA bundle still verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_ca_bundle_applies_to_new_connections() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let pki = Pki::new();
    let gw = start(
        &sim,
        &https_listener(&pki.files, Some(("ca.crt", true))),
        "routes:\n  - {name: echo, methods: [GET], path: /echo, upstream: erp}\n",
    );
    let url = https_url(&gw, "/echo");
    let old_partner = pki.ca.leaf("acme-3pl", &[], true);
    let new_ca = Ca::new("new partner CA");
    let new_partner = new_ca.leaf("acme-3pl", &[], true);
    let kept = tls_client(&pki.ca, Some(&old_partner));
    assert_eq!(kept.get(&url).send().await.unwrap().status(), 200);
    assert!(
        tls_client(&pki.ca, Some(&new_partner))
            .get(&url)
            .send()
            .await
            .is_err()
    );

    replace(&pki.files.path("ca.crt"), &new_ca.pem());
    gw.sighup().unwrap();
    gw.wait_log(
        "TLS certificate reloaded: new connections use it",
        "cause",
        "SIGHUP",
        Duration::from_secs(10),
    )
    .unwrap();
    let r = tls_client(&pki.ca, Some(&new_partner))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the new CA's client is accepted");
    assert!(
        tls_client(&pki.ca, Some(&old_partner))
            .get(&url)
            .send()
            .await
            .is_err(),
        "the removed CA's client is refused on a new connection"
    );
    assert_eq!(
        kept.get(&url).send().await.unwrap().status(),
        200,
        "the connection made before the reload goes on"
    );
}

/// `2031-06-15T00:00:00Z` and `2040-01-01T00:00:00Z` in unix seconds.
const JUNE_2031: i64 = 1_939_248_000;
const JAN_2040: i64 = 2_208_988_800;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_metric_gives_the_days_left_of_each_certificate() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let pki = Pki::new();
    let expiring = pki.ca.leaf_until("gateway", &[], false, (2031, 6, 15));
    pki.files.write("server.crt", &expiring.cert);
    pki.files.write("server.key", &expiring.key);
    let gw = start(
        &sim,
        &https_listener(&pki.files, Some(("ca.crt", false))),
        "routes:\n  - {name: echo, methods: [GET], path: /echo, upstream: erp}\n",
    );
    let series = |name: &str, role: &str| {
        gw.metric(&format!("{name}{{listener=\"https\",role=\"{role}\"}}"))
            .unwrap()
    };
    #[allow(clippy::cast_precision_loss)]
    let (june, jan) = (JUNE_2031 as f64, JAN_2040 as f64);
    assert_eq!(
        series("gateway_tls_certificate_not_after_seconds", "server"),
        june
    );
    assert_eq!(
        series("gateway_tls_certificate_not_after_seconds", "client_ca"),
        jan
    );
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let days = series("gateway_tls_certificate_expiry_days", "server");
    let expected = (june - now) / 86_400.0;
    // the gauge is refreshed every second: it may be a few seconds behind this clock
    assert!(
        (days - expected).abs() < 0.01,
        "{days} days left, expected {expected}"
    );
    let ca_days = series("gateway_tls_certificate_expiry_days", "client_ca");
    assert!((ca_days - (jan - now) / 86_400.0).abs() < 0.01, "{ca_days}");
}

/// A gateway started without the shared helper, whose readiness check speaks plain HTTP to the
/// admin listener.
struct AdminTlsGateway {
    child: Child,
    admin: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for AdminTlsGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_admin_tls(config: &Path) -> Result<AdminTlsGateway> {
    let mut child = Command::new(tests::gateway_binary()?)
        .arg("run")
        .arg("-c")
        .arg(config)
        .args([
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--threads",
            "2",
        ])
        .args(["--grace-period", "0", "--shutdown-timeout", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning gateway")?;
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
    let mut gw = AdminTlsGateway {
        child,
        admin: "127.0.0.1:1".parse()?,
        lines,
    };
    let Ok(listening) = rx.recv_timeout(Duration::from_secs(30)) else {
        bail!(
            "gateway did not start:\n{}",
            gw.lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .join("\n")
        );
    };
    gw.admin = listening["admin"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("admin address")?;
    Ok(gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_tls_and_requires_client_certificates() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let pki = Pki::new();
    let operator = pki.ca.leaf("operator", &[], true);
    let yaml = policy_file(
        sim.addr(),
        "",
        "routes:\n  - {name: echo, methods: [GET], path: /echo, upstream: erp}\n",
    )
    .replace(
        "listeners:\n",
        &format!(
            "listeners:\n  admin_tls: {{cert: \"{}\", key: \"{}\", client_auth: {{ca: \"{}\"}}}}\n  admin_auth: {{token: \"file:{}\"}}\n",
            pki.files.path("server.crt").display(),
            pki.files.path("server.key").display(),
            pki.files.path("ca.crt").display(),
            pki.files.path("admin-token").display(),
        ),
    );
    let admin_token = "admin-token-over-tls-0123456789";
    pki.files.write("admin-token", admin_token);
    let config = pki.files.write("policy.yaml", &yaml);
    let gw = start_admin_tls(&config).unwrap();
    let url = |path: &str| format!("https://localhost:{}{path}", gw.admin.port());

    let operator_client = tls_client(&pki.ca, Some(&operator));
    let mut ready = false;
    let until = Instant::now() + Duration::from_secs(20);
    while !ready {
        ready =
            matches!(operator_client.get(url("/readyz")).send().await, Ok(r) if r.status() == 200);
        assert!(Instant::now() < until, "admin over TLS never became ready");
        if !ready {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let r = operator_client.get(url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    // a browser signing in over TLS gets a cookie it only ever sends back over TLS
    let r = operator_client
        .post(url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={admin_token}"))
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        r.status() == 303 && cookie.starts_with("gateway_admin=") && cookie.ends_with("; Secure"),
        "status {}, set-cookie {cookie:?}",
        r.status()
    );
    assert!(
        text.contains("gateway_tls_certificate_expiry_days{listener=\"admin\",role=\"server\"}"),
        "{text}"
    );
    assert!(
        tls_client(&pki.ca, None)
            .get(url("/healthz"))
            .send()
            .await
            .is_err(),
        "no client certificate, no handshake"
    );
    let stranger = Ca::new("someone else's CA").leaf("operator", &[], true);
    assert!(
        tls_client(&pki.ca, Some(&stranger))
            .get(url("/healthz"))
            .send()
            .await
            .is_err()
    );
    // and plain HTTP is not served on it
    assert!(
        tests::raw_request(
            gw.admin,
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        .map_or(true, |r| r.status != 200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_an_unreadable_client_ca_bundle_does_not_start_and_names_the_file() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let pki = Pki::new();
    let ca = pki.files.write("ca.crt", "not a certificate\n");
    let yaml = policy_file(
        sim.addr(),
        "",
        "routes:\n  - {name: echo, methods: [GET], path: /echo, upstream: erp}\n",
    )
    .replace(
        "listeners:\n",
        &https_listener(&pki.files, Some(("ca.crt", true))),
    );
    let config = pki.files.write("policy.yaml", &yaml);
    let out = Command::new(tests::gateway_binary().unwrap())
        .arg("run")
        .arg("-c")
        .arg(&config)
        .args([
            "--http",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&ca.display().to_string()) && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
}
