//! TLS, mutual TLS and HTTP/2 against the simulator's real listener, with the development
//! certificates in `certs/`.

use std::path::PathBuf;
use std::time::Duration;

use erp_sim::{ErpSim, SimOptions, SimTls};
use reqwest::{Certificate, Identity, StatusCode, Version};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

fn certs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../certs")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(certs().join(name)).unwrap_or_else(|err| panic!("{name}: {err}"))
}

async fn start(tls: Option<SimTls>, http2: bool) -> ErpSim {
    let options = SimOptions {
        tls,
        http2,
        ..SimOptions::default()
    };
    ErpSim::start_with("127.0.0.1:0".parse().expect("an address"), options)
        .await
        .expect("the simulator starts")
}

fn server_tls(client_ca: bool) -> SimTls {
    SimTls {
        cert: certs().join("dev-tls.crt"),
        key: certs().join("dev-tls.key"),
        client_ca: client_ca.then(|| certs().join("dev-ca.crt")),
    }
}

/// A client trusting only the development CA, presenting `identity` (cert and key files).
fn client(identity: Option<(&str, &str)>) -> reqwest::ClientBuilder {
    let ca = Certificate::from_pem(&read("dev-ca.crt")).expect("the CA certificate");
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .pool_max_idle_per_host(0);
    if let Some((cert, key)) = identity {
        let mut pem = read(cert);
        pem.extend(read(key));
        builder = builder.identity(Identity::from_pem(&pem).expect("a client identity"));
    }
    builder
}

/// Polls until `condition` holds; fails the test if it never does.
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn https_serves_http1_and_h2_by_alpn() {
    let sim = start(Some(server_tls(false)), true).await;
    assert!(sim.base_url().starts_with("https://127.0.0.1:"));
    let url = format!("{}/echo", sim.base_url());
    let h2 = client(None)
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(h2.status(), StatusCode::OK);
    assert_eq!(h2.version(), Version::HTTP_2);
    let h1 = client(None)
        .http1_only()
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(h1.status(), StatusCode::OK);
    assert_eq!(h1.version(), Version::HTTP_11);
    let records = sim.requests();
    let seen: Vec<_> = records.iter().map(|r| (r.version, r.tls)).collect();
    assert_eq!(seen, [(Version::HTTP_2, true), (Version::HTTP_11, true)]);
    assert!(records.iter().all(|r| r.client_cert.is_none()));
    assert_eq!(sim.stats().tls_handshake_failures, 0);
}

#[tokio::test]
async fn without_http2_tls_offers_only_http1() {
    let sim = start(Some(server_tls(false)), false).await;
    let response = client(None)
        .build()
        .unwrap()
        .get(format!("{}/echo", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_11);
}

#[tokio::test]
async fn plain_tcp_serves_h2c_by_prior_knowledge_and_http1() {
    let sim = start(None, true).await;
    let url = format!("{}/echo", sim.base_url());
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(h2c.status(), StatusCode::OK);
    assert_eq!(h2c.version(), Version::HTTP_2);
    let echoed: serde_json::Value = h2c.json().await.unwrap();
    assert_eq!(echoed["version"], "HTTP/2.0");
    let h1 = reqwest::get(&url).await.unwrap();
    assert_eq!(h1.version(), Version::HTTP_11);
    let versions: Vec<_> = sim.requests().iter().map(|r| (r.version, r.tls)).collect();
    assert_eq!(
        versions,
        [(Version::HTTP_2, false), (Version::HTTP_11, false)]
    );

    // Without `http2`, prior knowledge is not understood.
    let http1_only = start(None, false).await;
    let refused = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
        .get(format!("{}/echo", http1_only.base_url()))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_valid_certificate() {
    let sim = start(Some(server_tls(true)), true).await;
    let url = format!("{}/echo", sim.base_url());

    // A TCP health check (connect, close) is no handshake failure.
    drop(tokio::net::TcpStream::connect(sim.addr()).await.unwrap());
    wait_for("the probe to be accepted", || {
        sim.connections_accepted() == 1
    })
    .await;

    let anonymous = client(None).build().unwrap().get(&url).send().await;
    assert!(anonymous.is_err(), "{anonymous:?}");
    wait_for("the refused handshake to be counted", || {
        sim.stats().tls_handshake_failures == 1
    })
    .await;

    // Signed by the right CA, but a server certificate: not valid for client authentication.
    let wrong_usage = client(Some(("dev-tls.crt", "dev-tls.key")))
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await;
    assert!(wrong_usage.is_err(), "{wrong_usage:?}");
    wait_for("the second refused handshake", || {
        sim.stats().tls_handshake_failures == 2
    })
    .await;
    assert!(sim.requests().is_empty(), "no request got through");
    // Had the probe counted, it would have by now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sim.stats().tls_handshake_failures, 2);

    for http1 in [false, true] {
        let mut builder = client(Some(("dev-client.crt", "dev-client.key")));
        if http1 {
            builder = builder.http1_only();
        }
        let response = builder.build().unwrap().get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let leaf = CertificateDer::from_pem_slice(&read("dev-client.crt")).unwrap();
    let fingerprint = hex::encode(Sha256::digest(&leaf));
    let records = sim.requests();
    assert_eq!(records.len(), 2);
    for (record, version) in records.iter().zip([Version::HTTP_2, Version::HTTP_11]) {
        assert_eq!(record.version, version);
        let cert = record.client_cert.as_ref().expect("the client certificate");
        assert_eq!(cert.subject, "CN=retail-gateway development client");
        assert_eq!(cert.sha256, fingerprint);
    }
    let listed: serde_json::Value = client(Some(("dev-client.crt", "dev-client.key")))
        .build()
        .unwrap()
        .get(format!("{}/_sim/requests", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed[0]["client_cert"]["subject"],
        "CN=retail-gateway development client"
    );
    assert_eq!(listed[0]["version"], "HTTP/2.0");
    assert_eq!(sim.stats().tls_handshake_failures, 2);
}

#[tokio::test]
async fn unusable_tls_material_fails_the_start_naming_the_file() {
    let tls = SimTls {
        cert: certs().join("missing.crt"),
        ..server_tls(false)
    };
    let options = SimOptions {
        tls: Some(tls),
        ..SimOptions::default()
    };
    let err = ErpSim::start_with("127.0.0.1:0".parse().unwrap(), options)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("missing.crt"), "{err}");
}
