//! The TLS listeners' certificates, reloaded without a restart: a server-certificate resolver
//! and a client-certificate verifier whose contents swap atomically (new handshakes get the new
//! ones, connections already made keep theirs), reloaded on SIGHUP and when the files change
//! on disk. A file that cannot be loaded is refused with its path and the old material keeps
//! serving. Also the handshake callback that hands the verified client certificate to the
//! request path, and the certificates' expiry metrics.

use std::any::Any;
use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use pingora::listeners::TlsAccept;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::tls::TlsRef;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use policies::pipeline::ClientIdentity;
use policies::spec::ClientAuthSpec;
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// How often the files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Why a listener's files were refused. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds something else than what it should.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The files of one TLS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// `https` or `admin`: the metric and log label.
    pub listener: &'static str,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Client certificates, when the listener asks for them.
    pub client_auth: Option<ClientAuthSpec>,
}

/// What the files of a listener hold, loaded and checked.
struct Material {
    cert: Arc<CertifiedKey>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// The leaf certificate's notAfter (unix seconds).
    cert_not_after: i64,
    /// The earliest notAfter of the CA bundle (unix seconds).
    ca_not_after: Option<i64>,
}

fn provider() -> Arc<CryptoProvider> {
    // the provider Pingora's rustls uses
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        path: path.to_owned(),
        source,
    })
}

fn invalid(path: &Path, message: impl Into<String>) -> TlsFileError {
    TlsFileError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Every certificate of a PEM file, each parsed as X.509; their notAfter with them.
fn certificates(path: &Path) -> Result<Vec<(CertificateDer<'static>, i64)>, TlsFileError> {
    let pem = read(path)?;
    let mut out = Vec::new();
    for (i, item) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let der = item.map_err(|e| invalid(path, format!("certificate {}: {e}", i + 1)))?;
        let not_after = match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok((_, cert)) => cert.validity().not_after.timestamp(),
            Err(e) => {
                return Err(invalid(
                    path,
                    format!("certificate {} is not valid X.509: {e}", i + 1),
                ));
            }
        };
        out.push((der, not_after));
    }
    if out.is_empty() {
        return Err(invalid(path, "no PEM certificate found"));
    }
    Ok(out)
}

impl Material {
    fn load(files: &TlsFiles) -> Result<Material, TlsFileError> {
        let provider = provider();
        let chain = certificates(&files.cert)?;
        let cert_not_after = chain.first().map_or(0, |(_, t)| *t);
        let key_pem = read(&files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| invalid(&files.key, format!("no usable PEM private key: {e}")))?;
        let certs = chain.into_iter().map(|(c, _)| c).collect();
        let cert = CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
            invalid(
                &files.key,
                format!(
                    "the key does not fit the certificate {}: {e}",
                    files.cert.display()
                ),
            )
        })?;
        let (verifier, ca_not_after) = match &files.client_auth {
            None => (None, None),
            Some(auth) => {
                let cas = certificates(&auth.ca)?;
                let not_after = cas.iter().map(|(_, t)| *t).min();
                let mut roots = RootCertStore::empty();
                for (i, (ca, _)) in cas.into_iter().enumerate() {
                    roots.add(ca).map_err(|e| {
                        invalid(&auth.ca, format!("certificate {} is not a CA: {e}", i + 1))
                    })?;
                }
                let builder =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let builder = if auth.required {
                    builder
                } else {
                    builder.allow_unauthenticated()
                };
                let verifier = builder
                    .build()
                    .map_err(|e| invalid(&auth.ca, e.to_string()))?;
                (Some(verifier), not_after)
            }
        };
        Ok(Material {
            cert: Arc::new(cert),
            verifier,
            cert_not_after,
            ca_not_after,
        })
    }
}

/// A file's identity and version, to notice a change (replaced, rewritten, touched).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// The TLS metrics, registered once.
#[derive(Debug, Clone)]
pub struct TlsMetrics {
    /// `gateway_tls_certificate_expiry_days{listener,role}`.
    expiry_days: GaugeVec,
    /// `gateway_tls_certificate_not_after_seconds{listener,role}`.
    not_after: GaugeVec,
    /// `gateway_tls_reloads_total{listener,outcome}`.
    reloads: IntCounterVec,
}

impl TlsMetrics {
    /// Makes the metrics and registers them.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = TlsMetrics {
            expiry_days: GaugeVec::new(
                Opts::new(
                    "gateway_tls_certificate_expiry_days",
                    "Days until a certificate the gateway serves or trusts expires (negative once \
                     expired), by listener and role (server: the leaf of the listener's chain; \
                     client_ca: the first to expire of its client CA bundle).",
                ),
                &["listener", "role"],
            )?,
            not_after: GaugeVec::new(
                Opts::new(
                    "gateway_tls_certificate_not_after_seconds",
                    "The notAfter of that certificate, in unix seconds.",
                ),
                &["listener", "role"],
            )?,
            reloads: IntCounterVec::new(
                Opts::new(
                    "gateway_tls_reloads_total",
                    "Reloads of a TLS listener's certificate, key and client CA files, by \
                     listener and outcome (ok, error: the old ones keep serving).",
                ),
                &["listener", "outcome"],
            )?,
        };
        registry.register(Box::new(m.expiry_days.clone()))?;
        registry.register(Box::new(m.not_after.clone()))?;
        registry.register(Box::new(m.reloads.clone()))?;
        Ok(m)
    }
}

/// One TLS listener's reloadable certificate and client verifier.
pub struct TlsListener {
    files: TlsFiles,
    cert: ArcSwap<CertifiedKey>,
    verifier: Option<ArcSwap<Arc<dyn ClientCertVerifier>>>,
    not_after: Mutex<(i64, Option<i64>)>,
    stamps: Mutex<Vec<Stamp>>,
    metrics: TlsMetrics,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Loads the files; an error names the file (the gateway does not start).
    pub fn load(files: TlsFiles, metrics: TlsMetrics) -> Result<Arc<Self>, TlsFileError> {
        let stamps = Self::stamps_of(&files);
        let m = Material::load(&files)?;
        let listener = TlsListener {
            cert: ArcSwap::new(m.cert),
            verifier: m.verifier.map(|v| ArcSwap::new(Arc::new(v))),
            not_after: Mutex::new((m.cert_not_after, m.ca_not_after)),
            stamps: Mutex::new(stamps),
            files,
            metrics,
        };
        listener.refresh_expiry(SystemTime::now());
        Ok(Arc::new(listener))
    }

    fn paths(files: &TlsFiles) -> Vec<&Path> {
        let mut p = vec![files.cert.as_path(), files.key.as_path()];
        if let Some(a) = &files.client_auth {
            p.push(a.ca.as_path());
        }
        p
    }

    fn stamps_of(files: &TlsFiles) -> Vec<Stamp> {
        Self::paths(files).into_iter().map(stamp).collect()
    }

    /// The settings of the listener: this resolver, this verifier, HTTP/2 when asked, and
    /// the handshake callback that keeps the client certificate for the request path.
    pub fn settings(self: &Arc<Self>, h2: bool) -> anyhow::Result<TlsSettings> {
        let mut tls = TlsSettings::with_callbacks(Box::new(IdentityCallback))
            .map_err(|e| anyhow::anyhow!("TLS listener: {e}"))?;
        tls.set_cert_resolver(Arc::new(Resolver(self.clone())));
        if self.verifier.is_some() {
            tls.set_client_cert_verifier(Arc::new(Verifier(self.clone())));
        }
        if h2 {
            tls.enable_h2();
        }
        Ok(tls)
    }

    /// Loads the files again; on success new handshakes use them, on failure the error is
    /// logged with the file's path and the old ones keep serving.
    pub fn reload(&self, cause: &'static str) -> Result<(), TlsFileError> {
        *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) = Self::stamps_of(&self.files);
        let listener = self.files.listener;
        match Material::load(&self.files) {
            Ok(m) => {
                self.cert.store(m.cert);
                if let (Some(slot), Some(v)) = (&self.verifier, m.verifier) {
                    slot.store(Arc::new(v));
                }
                *self
                    .not_after
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = (m.cert_not_after, m.ca_not_after);
                self.refresh_expiry(SystemTime::now());
                self.metrics
                    .reloads
                    .with_label_values(&[listener, "ok"])
                    .inc();
                tracing::info!(
                    listener,
                    cause,
                    cert = %self.files.cert.display(),
                    "TLS certificate reloaded: new connections use it"
                );
                Ok(())
            }
            Err(e) => {
                self.metrics
                    .reloads
                    .with_label_values(&[listener, "error"])
                    .inc();
                let path = match &e {
                    TlsFileError::Read { path, .. } | TlsFileError::Invalid { path, .. } => {
                        path.display().to_string()
                    }
                };
                tracing::error!(
                    listener,
                    cause,
                    path,
                    error = %e,
                    "TLS reload refused: the previous certificate keeps serving"
                );
                Err(e)
            }
        }
    }

    /// Reloads when a file changed since it was last loaded.
    pub fn reload_if_changed(&self) {
        let now = Self::stamps_of(&self.files);
        let changed = *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) != now;
        if changed {
            let _ = self.reload("file changed");
        }
    }

    /// Sets the expiry gauges for `now`.
    pub fn refresh_expiry(&self, now: SystemTime) {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let (cert, ca) = *self
            .not_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let listener = self.files.listener;
        for (role, not_after) in [("server", Some(cert)), ("client_ca", ca)] {
            let Some(t) = not_after else { continue };
            #[allow(clippy::cast_precision_loss)] // unix seconds fit an f64 exactly
            let t = t as f64;
            self.metrics
                .not_after
                .with_label_values(&[listener, role])
                .set(t);
            self.metrics
                .expiry_days
                .with_label_values(&[listener, role])
                .set((t - now) / 86_400.0);
        }
    }
}

/// The server certificate of new handshakes: the listener's current one.
#[derive(Debug)]
struct Resolver(Arc<TlsListener>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.cert.load_full())
    }
}

/// The client-certificate verifier of new handshakes: the listener's current one.
#[derive(Debug)]
struct Verifier(Arc<TlsListener>);

impl Verifier {
    fn current(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.0.verifier.as_ref().map(|v| (**v.load()).clone())
    }

    fn required(&self) -> bool {
        self.0
            .files
            .client_auth
            .as_ref()
            .is_some_and(|a| a.required)
    }
}

fn no_verifier() -> rustls::Error {
    rustls::Error::General("no client certificate verifier".into())
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.required()
    }

    /// No hints: they would have to borrow from the swappable bundle. Clients present their
    /// certificate anyway, and the hints are optional in TLS 1.2 and 1.3 alike.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .ok_or_else(no_verifier)?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current()
            .ok_or_else(no_verifier)?
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current()
            .ok_or_else(no_verifier)?
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// Keeps the identity of the verified client certificate with the connection (Pingora stores
/// it in the connection's `SslDigest`), parsed once per connection, not per request.
struct IdentityCallback;

#[async_trait::async_trait]
impl TlsAccept for IdentityCallback {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let der = tls.peer_certificate_der()?;
        let identity = policies::kinds::client_cert::identity_from_der(der)?;
        Some(Arc::new(Arc::new(identity)))
    }
}

/// The verified client certificate of a request's connection, if any.
pub fn client_identity(session: &pingora::proxy::Session) -> Option<Arc<ClientIdentity>> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<Arc<ClientIdentity>>()
        .cloned()
}

/// Every TLS listener of the gateway, for SIGHUP and the file watch.
#[derive(Debug, Clone, Default)]
pub struct TlsReloader(pub Vec<Arc<TlsListener>>);

impl TlsReloader {
    /// Reloads every listener's files (SIGHUP).
    pub fn reload_all(&self, cause: &'static str) {
        for l in &self.0 {
            let _ = l.reload(cause);
        }
    }
}

/// Watches the files of every TLS listener and keeps the expiry gauges current.
pub struct TlsWatch(pub TlsReloader);

#[async_trait::async_trait]
impl BackgroundService for TlsWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            for l in &self.0.0 {
                l.reload_if_changed();
                l.refresh_expiry(SystemTime::now());
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
