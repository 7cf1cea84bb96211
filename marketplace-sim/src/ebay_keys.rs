//! eBay's Notification API as far as notification signatures need it: a P-256 key pair of the
//! simulator's own (never eBay's), `getPublicKey` (`GET
//! /commerce/notification/v1/public_key/{public_key_id}` behind an eBay application or user
//! token) answering `{"key": "-----BEGIN PUBLIC KEY-----<base64, no line breaks>-----END
//! PUBLIC KEY-----", "algorithm": "ECDSA", "digest": "SHA1"}` as eBay does, and signing a
//! notification body the way eBay does: `X-EBAY-SIGNATURE` = base64 of `{"alg":"ecdsa",
//! "kid":..,"signature":<base64 DER ECDSA over SHA-1 of the body>,"digest":"SHA1"}`. Keys can
//! be rotated (a new `kid`; old ones stay published) and fetches are counted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use serde_json::json;

use crate::lock::lock;

/// The path prefix of `getPublicKey`.
pub(crate) const KEY_PATH: &str = "/commerce/notification/v1/public_key/";

struct KeyPair {
    kid: String,
    key: SigningKey,
}

/// The simulator's notification keys; the last one signs.
pub(crate) struct EbayKeys {
    keys: Mutex<Vec<KeyPair>>,
    fetches: AtomicU64,
}

impl Default for EbayKeys {
    fn default() -> Self {
        EbayKeys {
            keys: Mutex::new(vec![new_pair()]),
            fetches: AtomicU64::new(0),
        }
    }
}

/// A fresh key pair with a UUID `kid`, as eBay's are.
fn new_pair() -> KeyPair {
    loop {
        // 32 random bytes from two v4 UUIDs (the OS generator); one scalar in 2^128 is out of
        // range, in which case another is drawn
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        if let Ok(key) = SigningKey::from_slice(&bytes) {
            return KeyPair {
                kid: uuid::Uuid::new_v4().to_string(),
                key,
            };
        }
    }
}

/// SHA-1 of `body` (eBay's notification digest).
fn sha1(body: &[u8]) -> [u8; 20] {
    sha1_smol::Sha1::from(body).digest().bytes()
}

impl EbayKeys {
    /// The `kid` that signs now.
    pub(crate) fn current_kid(&self) -> String {
        lock(&self.keys)
            .last()
            .map(|k| k.kid.clone())
            .unwrap_or_default()
    }

    /// A new key pair signs from now on; the old ones stay published. Returns its `kid`.
    pub(crate) fn rotate(&self) -> String {
        let pair = new_pair();
        let kid = pair.kid.clone();
        lock(&self.keys).push(pair);
        kid
    }

    /// `X-EBAY-SIGNATURE` for `body`, signed with the current key.
    pub(crate) fn sign(&self, body: &[u8]) -> String {
        let keys = lock(&self.keys);
        let Some(pair) = keys.last() else {
            return String::new();
        };
        // the prehash is a SHA-1 digest: 20 bytes, as the hazmat API accepts for P-256
        let signature: Result<Signature, _> = pair.key.sign_prehash(&sha1(body));
        let der = match signature {
            Ok(s) => STANDARD.encode(s.to_der().as_bytes()),
            Err(_) => String::new(),
        };
        let header = json!({
            "alg": "ecdsa",
            "kid": pair.kid,
            "signature": der,
            "digest": "SHA1",
        });
        STANDARD.encode(header.to_string())
    }

    /// How many `getPublicKey` calls arrived (every one, answered or refused).
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Acquire)
    }

    pub(crate) fn reset_fetches(&self) {
        self.fetches.store(0, Ordering::Release);
    }

    /// Counts one `getPublicKey` call.
    pub(crate) fn count_fetch(&self) {
        self.fetches.fetch_add(1, Ordering::AcqRel);
    }

    /// The PEM eBay answers for `kid`: armour and base64 on one line.
    pub(crate) fn public_pem(&self, kid: &str) -> Option<String> {
        let keys = lock(&self.keys);
        let pair = keys.iter().find(|k| k.kid == kid)?;
        let der = pair.key.verifying_key().to_public_key_der().ok()?;
        Some(format!(
            "-----BEGIN PUBLIC KEY-----{}-----END PUBLIC KEY-----",
            STANDARD.encode(der.as_bytes())
        ))
    }
}
