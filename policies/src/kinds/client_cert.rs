//! `client_cert`: mutual TLS bound to channels. The TLS listener (`listeners.https.client_auth`)
//! verifies a client certificate against its CA bundle; this policy decides which verified
//! certificates a route accepts and which channel each one is, matched by subject common name,
//! a subjectAltName DNS name or URI, or the certificate's SHA-256 fingerprint, as the `jwt`
//! policy binds a token's `channel` claim. With `jwt` on the same route, both must name the
//! same channel.

use http::StatusCode;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{KindContext, PolicyKind};
use crate::metrics::{KindMetrics, SharedMetrics};
use crate::pipeline::{Channel, ClientIdentity, ExchangeState, Flow, Phases, RequestView};
use crate::problem::{Problem, Reply};

/// Settings of a `client_cert` policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCertSpec {
    /// The client certificates this policy accepts, each with the channel it is. A
    /// certificate the listener verified but no entry matches is refused (403). On a route
    /// with a `{channel}` parameter the certificate must be that channel's (else 403); on
    /// other routes it makes the request its channel (rate-limit keys, mappings, metrics,
    /// logs).
    #[schemars(length(min = 1))]
    pub clients: Vec<ClientCertEntrySpec>,
}

/// One accepted client certificate: exactly one of `subject_cn`, `san_dns`, `san_uri` or
/// `fingerprint_sha256`, and its channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCertEntrySpec {
    /// The subject's common name, e.g. `acme-3pl` (exact, case-sensitive).
    #[serde(default)]
    pub subject_cn: Option<String>,
    /// A DNS name of the certificate's subjectAltName, e.g. `edi.acme.example` (ASCII case
    /// ignored).
    #[serde(default)]
    pub san_dns: Option<String>,
    /// A URI of the certificate's subjectAltName, e.g. `spiffe://acme.example/edi` (exact).
    #[serde(default)]
    pub san_uri: Option<String>,
    /// SHA-256 of the certificate's DER, in hex, colons allowed
    /// (`openssl x509 -noout -fingerprint -sha256 -in client.crt`): pins one certificate, so a
    /// renewed certificate needs a new entry (list both while it rolls out).
    #[serde(default)]
    pub fingerprint_sha256: Option<String>,
    /// The channel this certificate is (a declared channel).
    pub channel: String,
}

/// What an entry matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    CommonName(String),
    Dns(String),
    Uri(String),
    Fingerprint(String),
}

impl Matcher {
    fn matches(&self, id: &ClientIdentity) -> bool {
        match self {
            Matcher::CommonName(cn) => id.common_name.as_deref() == Some(cn.as_str()),
            Matcher::Dns(d) => id.dns_names.iter().any(|n| n.eq_ignore_ascii_case(d)),
            Matcher::Uri(u) => id.uris.iter().any(|n| n == u),
            Matcher::Fingerprint(f) => id.fingerprint_sha256 == *f,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The connection carries no verified client certificate (plain HTTP, or none sent).
    Missing,
    /// The certificate chains to the listener's CA but no entry of this policy names it.
    Unknown,
    /// The certificate is another channel's than the route's (or the token's).
    ChannelMismatch,
}

impl Failure {
    const ALL: [Failure; 3] = [Failure::Missing, Failure::Unknown, Failure::ChannelMismatch];

    fn reason(self) -> &'static str {
        match self {
            Failure::Missing => "missing_certificate",
            Failure::Unknown => "unknown_certificate",
            Failure::ChannelMismatch => "channel_mismatch",
        }
    }

    fn problem(self) -> Problem {
        match self {
            Failure::Missing => Problem::new(
                StatusCode::UNAUTHORIZED,
                "client-certificate-required",
                "Client certificate required",
            )
            .with_detail(
                "this route requires a client certificate: connect over TLS to the mutual-TLS listener with a certificate issued by the partner CA",
            ),
            Failure::Unknown => Problem::new(
                StatusCode::FORBIDDEN,
                "client-certificate-forbidden",
                "Client certificate not accepted",
            )
            .with_detail("this route does not accept the client certificate presented"),
            Failure::ChannelMismatch => Problem::new(
                StatusCode::FORBIDDEN,
                "channel-forbidden",
                "Client certificate not valid for this channel",
            )
            .with_detail("the client certificate belongs to another channel"),
        }
    }
}

/// What `client_cert` policies record.
#[derive(Debug, Clone)]
pub struct ClientCertMetrics {
    /// `gateway_auth_failures_total{policy,reason}` (shared with `jwt` and
    /// `webhook_signature`).
    pub auth_failures: IntCounterVec,
    /// `gateway_client_cert_accepted_total{policy,channel}`: requests a client certificate
    /// authenticated, by the channel it is.
    pub accepted: IntCounterVec,
}

impl KindMetrics for ClientCertMetrics {
    fn new(shared: &SharedMetrics) -> Result<Self, prometheus::Error> {
        Ok(ClientCertMetrics {
            auth_failures: shared.auth_failures.clone(),
            accepted: IntCounterVec::new(
                Opts::new(
                    "gateway_client_cert_accepted_total",
                    "Requests authenticated by a client certificate, by policy and channel.",
                ),
                &["policy", "channel"],
            )?,
        })
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.accepted.clone()))
    }
}

/// One compiled entry.
#[derive(Debug)]
struct Entry {
    matcher: Matcher,
    channel: Channel,
    accepted: IntCounter,
}

/// The compiled `client_cert` policy.
#[derive(Debug)]
pub struct ClientCert {
    entries: Vec<Entry>,
    failures: Vec<IntCounter>,
}

impl PolicyKind for ClientCert {
    type Spec = ClientCertSpec;
    type Metrics = ClientCertMetrics;

    fn compile(spec: &ClientCertSpec, cx: &mut KindContext<'_, '_, Self>) -> Option<ClientCert> {
        let errors_before = cx.errors.len();
        if spec.clients.is_empty() {
            cx.error("/clients", "list at least one client certificate");
        }
        let mut entries = Vec::with_capacity(spec.clients.len());
        for (i, c) in spec.clients.iter().enumerate() {
            let at = format!("/clients/{i}");
            let channel = cx.channels.get(&c.channel);
            if channel.is_none() {
                let known: Vec<&str> = cx.channels.names().iter().map(|n| &**n).collect();
                cx.error(
                    &format!("{at}/channel"),
                    format!(
                        "channel {:?} is not declared (declared: {})",
                        c.channel,
                        known.join(", ")
                    ),
                );
            }
            let given = [
                c.subject_cn.is_some(),
                c.san_dns.is_some(),
                c.san_uri.is_some(),
                c.fingerprint_sha256.is_some(),
            ]
            .iter()
            .filter(|g| **g)
            .count();
            if given != 1 {
                cx.error(
                    &at,
                    "set exactly one of subject_cn, san_dns, san_uri, fingerprint_sha256",
                );
                continue;
            }
            let matcher = if let Some(cn) = &c.subject_cn {
                Matcher::CommonName(cn.clone())
            } else if let Some(d) = &c.san_dns {
                Matcher::Dns(d.clone())
            } else if let Some(u) = &c.san_uri {
                Matcher::Uri(u.clone())
            } else if let Some(f) = &c.fingerprint_sha256 {
                match normalize_fingerprint(f) {
                    Some(f) => Matcher::Fingerprint(f),
                    None => {
                        cx.error(
                            &format!("{at}/fingerprint_sha256"),
                            "not a SHA-256 fingerprint: 64 hex digits, colons allowed",
                        );
                        continue;
                    }
                }
            } else {
                continue;
            };
            if let Some(channel) = channel {
                let accepted = cx
                    .metrics
                    .accepted
                    .with_label_values(&[&**cx.name, &*channel.name]);
                entries.push(Entry {
                    matcher,
                    channel,
                    accepted,
                });
            }
        }
        if cx.errors.len() > errors_before {
            return None;
        }
        let failures = Failure::ALL
            .iter()
            .map(|f| {
                cx.metrics
                    .auth_failures
                    .with_label_values(&[cx.name, f.reason()])
            })
            .collect();
        Some(ClientCert { entries, failures })
    }
}

impl ClientCert {
    fn reject(&self, failure: Failure) -> Flow {
        let i = Failure::ALL
            .iter()
            .position(|f| *f == failure)
            .unwrap_or_default();
        if let Some(c) = self.failures.get(i) {
            c.inc();
        }
        Flow::Break(Reply::problem(failure.problem(), failure.reason()))
    }

    fn check(&self, state: &mut ExchangeState) -> Result<(), Failure> {
        let id = state.client_cert.as_deref().ok_or(Failure::Missing)?;
        let mut matched = self.entries.iter().filter(|e| e.matcher.matches(id));
        let Some(first) = matched.next() else {
            return Err(Failure::Unknown);
        };
        let entry = match &state.channel {
            // a certificate listed for several channels is accepted for any of them
            Some(c) if c.index != first.channel.index => std::iter::once(first)
                .chain(matched)
                .find(|e| e.channel.index == c.index)
                .ok_or(Failure::ChannelMismatch)?,
            Some(_) => first,
            None => {
                state.channel = Some(first.channel.clone());
                first
            }
        };
        entry.accepted.inc();
        Ok(())
    }
}

impl Phases for ClientCert {
    const PHASES: u8 = crate::pipeline::phase::REQUEST;

    fn guards_reads(&self) -> bool {
        true
    }

    async fn on_request(&self, _req: &RequestView<'_>, state: &mut ExchangeState) -> Flow {
        match self.check(state) {
            Ok(()) => Flow::Continue(()),
            Err(f) => self.reject(f),
        }
    }
}

/// `AB:cd:...` or `abcd...` as 64 lowercase hex digits.
fn normalize_fingerprint(text: &str) -> Option<String> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// The identity of a DER certificate the TLS handshake verified; `None` when it cannot be
/// parsed (the handshake's verifier parsed it already, so that does not happen in practice).
pub fn identity_from_der(der: &[u8]) -> Option<ClientIdentity> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut dns_names = Vec::new();
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                GeneralName::URI(u) => uris.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    Some(ClientIdentity {
        common_name,
        subject: cert.subject().to_string(),
        dns_names,
        uris,
        fingerprint_sha256: hex::encode(Sha256::digest(der)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn channel(index: usize, name: &str) -> Channel {
        Channel {
            index,
            name: name.into(),
        }
    }

    fn policy() -> ClientCert {
        let entry = |matcher, ch| Entry {
            matcher,
            channel: ch,
            accepted: IntCounter::new("x", "x").unwrap(),
        };
        ClientCert {
            entries: vec![
                entry(Matcher::CommonName("acme".into()), channel(0, "acme")),
                entry(Matcher::Dns("edi.globex.example".into()), channel(1, "globex")),
                entry(Matcher::Fingerprint("ab".repeat(32)), channel(1, "globex")),
            ],
            failures: Vec::new(),
        }
    }

    fn id(cn: &str, dns: &[&str], fp: &str) -> Option<Arc<ClientIdentity>> {
        Some(Arc::new(ClientIdentity {
            common_name: Some(cn.into()),
            subject: format!("CN={cn}"),
            dns_names: dns.iter().map(|d| (*d).to_owned()).collect(),
            uris: Vec::new(),
            fingerprint_sha256: fp.into(),
        }))
    }

    #[test]
    fn binds_the_certificate_to_its_channel() {
        let p = policy();
        let mut st = ExchangeState {
            client_cert: id("acme", &[], "00"),
            ..ExchangeState::default()
        };
        assert_eq!(p.check(&mut st), Ok(()));
        assert_eq!(st.channel, Some(channel(0, "acme")));

        let mut st = ExchangeState {
            client_cert: id("x", &["EDI.globex.example"], "00"),
            ..ExchangeState::default()
        };
        assert_eq!(p.check(&mut st), Ok(()));
        assert_eq!(st.channel, Some(channel(1, "globex")));
    }

    #[test]
    fn refuses_missing_unknown_and_foreign_certificates() {
        let p = policy();
        let mut st = ExchangeState::default();
        assert_eq!(p.check(&mut st), Err(Failure::Missing));
        let mut st = ExchangeState {
            client_cert: id("stranger", &[], "00"),
            ..ExchangeState::default()
        };
        assert_eq!(p.check(&mut st), Err(Failure::Unknown));
        let mut st = ExchangeState {
            client_cert: id("acme", &[], "00"),
            channel: Some(channel(1, "globex")),
            ..ExchangeState::default()
        };
        assert_eq!(p.check(&mut st), Err(Failure::ChannelMismatch));
        // pinned by fingerprint, on its own channel's route
        let mut st = ExchangeState {
            client_cert: id("whoever", &[], &"ab".repeat(32)),
            channel: Some(channel(1, "globex")),
            ..ExchangeState::default()
        };
        assert_eq!(p.check(&mut st), Ok(()));
    }

    #[test]
    fn fingerprints_are_normalized() {
        let colons = "AB:".repeat(31) + "AB";
        assert_eq!(normalize_fingerprint(&colons), Some("ab".repeat(32)));
        assert_eq!(normalize_fingerprint("abc"), None);
        assert_eq!(normalize_fingerprint(&"zz".repeat(32)), None);
    }
}
