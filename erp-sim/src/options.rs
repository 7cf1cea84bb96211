//! How a simulator is started: memory bounds, TLS and the HTTP versions it serves.

use std::path::PathBuf;

/// Limits that keep the simulator's memory bounded under load, and how it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimOptions {
    /// How many request records to keep (the most recent ones); counters stay exact.
    pub record_limit: usize,
    /// Largest request body read; a larger one is answered `413` with the ERP error shape.
    pub max_body_bytes: usize,
    /// How many stored documents to keep per document kind (the most recent ones); document
    /// ids keep counting, and an evicted document answers `404`.
    pub document_limit: usize,
    /// Answer a write whose `Idempotency-Key` was answered before with that first answer,
    /// creating nothing, and refuse one whose key is still being processed with `409`. Off,
    /// every write is processed; repeats are counted (`duplicates`, `in_flight_conflicts`)
    /// either way.
    pub honour_idempotency_keys: bool,
    /// How many answered `Idempotency-Key`s to remember (the most recent ones); a key
    /// forgotten this way is processed again like a new one.
    pub idempotency_key_limit: usize,
    /// Serve HTTPS instead of plain HTTP.
    pub tls: Option<SimTls>,
    /// Serve HTTP/2 as well as HTTP/1.1: negotiated by ALPN (`h2`) under TLS, by prior
    /// knowledge (h2c, the client starts with the HTTP/2 preface) on plain TCP.
    pub http2: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            record_limit: 10_000,
            max_body_bytes: 64 * 1024 * 1024,
            document_limit: 10_000,
            // a well-behaved ERP: the gateway sends one key per accepted document on every
            // attempt of it, so a retry it cannot tell apart never becomes a second order
            honour_idempotency_keys: true,
            idempotency_key_limit: 100_000,
            tls: None,
            http2: false,
        }
    }
}

/// The simulator's TLS material, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTls {
    /// The server certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, every client must present a certificate issued by one of these CAs (mutual
    /// TLS); a handshake without one is refused and counted in `tls_handshake_failures`.
    pub client_ca: Option<PathBuf>,
}
