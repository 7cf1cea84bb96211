//! TLS for the simulator: a rustls server configuration from PEM files, optionally requiring
//! client certificates from a CA (mutual TLS), and who a verified client was.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use crate::options::SimTls;

/// The client certificate a connection presented and the simulator verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject's distinguished name, e.g. `CN=retail-gateway development client`
    /// (empty if the certificate could not be parsed for it).
    pub subject: String,
    /// Hex SHA-256 of the certificate's DER encoding (`openssl x509 -fingerprint -sha256`
    /// without the colons, lower case).
    pub sha256: String,
}

impl ClientCert {
    pub(crate) fn from_der(der: &[u8]) -> ClientCert {
        let subject = x509_parser::parse_x509_certificate(der)
            .map(|(_, cert)| cert.subject().to_string())
            .unwrap_or_default();
        ClientCert {
            subject,
            sha256: hex::encode(Sha256::digest(der)),
        }
    }
}

/// Why the TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsSetupError {
    #[error("reading {path}: {source}")]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("client CA certificate in {path}: {source}")]
    ClientCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("server certificate and key: {0}")]
    Config(#[from] rustls::Error),
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem_error = |source| TlsSetupError::Pem {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The acceptor for `tls`, offering `h2` by ALPN when `http2` is set.
pub(crate) fn acceptor(tls: &SimTls, http2: bool) -> Result<TlsAcceptor, TlsSetupError> {
    // An explicit provider: the process-wide default is ambiguous when a build links more
    // than one rustls backend.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|source| TlsSetupError::ClientCa {
                    path: ca.clone(),
                    source,
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|source| TlsSetupError::Pem {
        path: tls.key.clone(),
        source,
    })?;
    let mut config = builder.with_single_cert(certificates(&tls.cert)?, key)?;
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The verified leaf certificate of a finished handshake, if the client sent one.
pub(crate) fn client_cert(connection: &rustls::ServerConnection) -> Option<ClientCert> {
    let leaf = connection.peer_certificates()?.first()?;
    Some(ClientCert::from_der(leaf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs")
    }

    #[test]
    fn the_development_material_loads_with_and_without_client_auth() {
        let dir = certs_dir();
        let mut tls = SimTls {
            cert: dir.join("dev-tls.crt"),
            key: dir.join("dev-tls.key"),
            client_ca: None,
        };
        assert!(acceptor(&tls, true).is_ok());
        tls.client_ca = Some(dir.join("dev-ca.crt"));
        assert!(acceptor(&tls, false).is_ok());
    }

    #[test]
    fn missing_or_wrong_files_are_named_in_the_error() {
        let dir = certs_dir();
        let tls = SimTls {
            cert: dir.join("no-such.crt"),
            key: dir.join("dev-tls.key"),
            client_ca: None,
        };
        let err = acceptor(&tls, false).err().unwrap().to_string();
        assert!(err.contains("no-such.crt"), "{err}");
        let tls = SimTls {
            cert: dir.join("dev-tls.key"),
            key: dir.join("dev-tls.key"),
            client_ca: None,
        };
        let err = acceptor(&tls, false).err().unwrap().to_string();
        assert!(err.contains("holds no certificate"), "{err}");
    }

    #[test]
    fn a_client_certificate_is_known_by_subject_and_fingerprint() {
        let pem = std::fs::read(certs_dir().join("dev-client.crt")).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        let cert = ClientCert::from_der(&der);
        assert_eq!(cert.subject, "CN=retail-gateway development client");
        assert_eq!(cert.sha256.len(), 64);
        assert_eq!(ClientCert::from_der(b"junk").subject, "");
    }
}
