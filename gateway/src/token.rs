//! `gateway token`: mints an RS256 access token with the development key in `certs/`, for the
//! demo, the README's examples and manual testing. It refuses every other key (the key's public
//! half must be the committed `certs/dev-jwt-signing.pub`, built into the binary), so it can
//! never mint a token a production identity provider's keys would vouch for.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, encode};
use serde_json::json;

/// The committed public half of the development signing key.
pub const DEV_PUBLIC_KEY: &str = include_str!("../../certs/dev-jwt-signing.pub");

/// The issuer of development tokens (the example policy set trusts it).
pub const DEV_ISSUER: &str = "https://dev-idp.retail-gateway.invalid";

/// The audience of development tokens.
pub const DEV_AUDIENCE: &str = "retail-gateway";

/// The longest lifetime a development token may have.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// What to mint.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    /// The channel the token names (claim `channel`; `client_id` is `dev-<channel>`).
    pub channel: String,
    /// Scopes (claim `scope`, space separated).
    pub scopes: Vec<String>,
    /// Lifetime.
    pub ttl: Duration,
    /// The private key (PEM); only the development key is accepted.
    pub key: PathBuf,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
}

impl TokenOptions {
    /// A development token for `channel` with `scopes`, valid for `ttl`, with the defaults.
    pub fn dev(channel: &str, scopes: &[&str], ttl: Duration) -> TokenOptions {
        TokenOptions {
            channel: channel.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ttl,
            key: dev_key_path(),
            issuer: DEV_ISSUER.to_owned(),
            audience: DEV_AUDIENCE.to_owned(),
        }
    }
}

/// Where the development key is, from the repository root or the build tree.
pub fn dev_key_path() -> PathBuf {
    let local = PathBuf::from("certs/dev-jwt-signing.key");
    if local.exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs/dev-jwt-signing.key")
}

fn rsa_public(jwk: &Jwk) -> Option<(&str, &str)> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => Some((p.n.as_str(), p.e.as_str())),
        _ => None,
    }
}

/// The `kid` of the development key: its RFC 7638 thumbprint, as in `certs/dev-jwks.json`.
pub fn dev_kid() -> anyhow::Result<String> {
    let public = DecodingKey::from_rsa_pem(DEV_PUBLIC_KEY.as_bytes())
        .context("the built-in development public key is unreadable")?;
    let jwk = Jwk::from_decoding_key(&public, Some(Algorithm::RS256))?;
    Ok(jwk.thumbprint(ThumbprintHash::SHA256)?)
}

/// Mints a token, or refuses when the key is not the development key.
pub fn mint(opts: &TokenOptions, now: SystemTime) -> anyhow::Result<String> {
    if opts.channel.is_empty() {
        bail!("--channel must not be empty");
    }
    if opts.scopes.is_empty() {
        bail!("give at least one --scope");
    }
    if opts.ttl.is_zero() || opts.ttl > MAX_TTL {
        bail!("--ttl must be between 1s and 30 days");
    }
    let pem = std::fs::read(&opts.key)
        .with_context(|| format!("cannot read the signing key {}", opts.key.display()))?;
    let key = EncodingKey::from_rsa_pem(&pem).map_err(|_| {
        anyhow::anyhow!(
            "refusing to sign: {} is not an RSA private key in PEM",
            opts.key.display()
        )
    })?;
    let given = Jwk::from_encoding_key(&key, Algorithm::RS256).map_err(|_| {
        anyhow::anyhow!(
            "refusing to sign: {} is not a usable RSA key",
            opts.key.display()
        )
    })?;
    let dev_public = DecodingKey::from_rsa_pem(DEV_PUBLIC_KEY.as_bytes())
        .context("the built-in development public key is unreadable")?;
    let dev = Jwk::from_decoding_key(&dev_public, Some(Algorithm::RS256))?;
    if rsa_public(&given).is_none() || rsa_public(&given) != rsa_public(&dev) {
        bail!(
            "refusing to sign: {} is not the development key (certs/dev-jwt-signing.key); \
             `gateway token` only mints development tokens",
            opts.key.display()
        );
    }
    let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let client = format!("dev-{}", opts.channel);
    let claims = json!({
        "iss": opts.issuer,
        "aud": opts.audience,
        "sub": client,
        "client_id": client,
        "channel": opts.channel,
        "scope": opts.scopes.join(" "),
        "iat": iat,
        "exp": iat + opts.ttl.as_secs(),
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(dev.thumbprint(ThumbprintHash::SHA256)?);
    Ok(encode(&header, &claims, &key)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Validation, decode};
    use serde_json::Value;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/keys")
            .join(name)
    }

    #[test]
    fn mints_a_verifiable_token_for_the_dev_jwks() {
        let opts = TokenOptions::dev(
            "amazon",
            &["orders:write", "orders:read"],
            Duration::from_secs(600),
        );
        let now = SystemTime::now();
        let token = mint(&opts, now).unwrap();
        let jwks: Value = serde_json::from_str(include_str!("../../certs/dev-jwks.json")).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), jwks["keys"][0]["kid"].as_str());
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[DEV_AUDIENCE]);
        v.set_issuer(&[DEV_ISSUER]);
        let key = DecodingKey::from_rsa_pem(DEV_PUBLIC_KEY.as_bytes()).unwrap();
        let data = decode::<Value>(&token, &key, &v).unwrap();
        assert_eq!(data.claims["channel"], "amazon");
        assert_eq!(data.claims["scope"], "orders:write orders:read");
        let iat = data.claims["iat"].as_u64().unwrap();
        assert_eq!(data.claims["exp"].as_u64().unwrap(), iat + 600);
        assert_eq!(dev_kid().unwrap(), jwks["keys"][0]["kid"].as_str().unwrap());
    }

    #[test]
    fn refuses_any_other_key() {
        for (file, why) in [
            ("rsa-rotated.key", "is not the development key"),
            ("es256.key", "is not an RSA private key"),
        ] {
            let mut opts = TokenOptions::dev("amazon", &["orders:write"], Duration::from_secs(60));
            opts.key = fixture(file);
            let err = mint(&opts, SystemTime::now()).unwrap_err().to_string();
            assert!(err.contains(why), "{file}: {err}");
        }
        let mut opts = TokenOptions::dev("amazon", &["x"], Duration::from_secs(60));
        opts.key = dev_key_path().with_file_name("dev-jwt-signing.pub");
        assert!(mint(&opts, SystemTime::now()).is_err());
    }

    #[test]
    fn refuses_silly_options() {
        let ok = TokenOptions::dev("amazon", &["x"], Duration::from_secs(60));
        for opts in [
            TokenOptions {
                channel: String::new(),
                ..ok.clone()
            },
            TokenOptions {
                scopes: Vec::new(),
                ..ok.clone()
            },
            TokenOptions {
                ttl: Duration::ZERO,
                ..ok.clone()
            },
            TokenOptions {
                ttl: MAX_TTL * 2,
                ..ok.clone()
            },
        ] {
            assert!(mint(&opts, SystemTime::now()).is_err(), "{opts:?}");
        }
    }
}
