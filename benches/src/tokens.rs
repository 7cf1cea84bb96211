//! JWTs for the auth scenarios, minted once before a run with the `openssl` command (RS256 with
//! the development signing key in certs/, HS256 with a bench-only secret), and the JWKS that
//! publishes the development public key. Nothing here is secret: it is development material.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::json;

/// Issuer in every bench token.
pub const ISSUER: &str = "https://idp.bench.invalid/";
/// Audience in every bench token.
pub const AUDIENCE: &str = "retail-gateway";
/// Key id of the RS256 key.
pub const RS_KID: &str = "bench-rs256";
/// Key id of the HS256 secret.
pub const HS_KID: &str = "bench-hs256";
/// The HS256 secret (bench only; given to the gateway through an environment variable).
pub const HS_SECRET: &str = "bench-only-hs256-secret-0123456789abcdef";

fn openssl(args: &[&str], input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running openssl (scripts/system-deps.sh installs it)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

fn claims(i: usize) -> serde_json::Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": format!("bench-client-{i}"),
        "client_id": format!("bench-client-{i}"),
        "channel": "amazon",
        "scope": "orders:read orders:write",
        "iat": now,
        "exp": now + 4 * 3600,
    })
}

fn signing_input(alg: &str, kid: &str, i: usize) -> String {
    // RFC 9068 access tokens: the example set's `orders-auth` requires `typ: at+jwt`
    let header = json!({"alg": alg, "typ": "at+jwt", "kid": kid});
    format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims(i).to_string())
    )
}

/// `n` RS256 tokens (different subjects) signed with the PEM private key at `key`.
pub fn rs256(key: &Path, n: usize) -> anyhow::Result<Vec<String>> {
    let key = key.to_string_lossy();
    (0..n)
        .map(|i| {
            let input = signing_input("RS256", RS_KID, i);
            let sig = openssl(&["dgst", "-sha256", "-sign", &key], input.as_bytes())?;
            Ok(format!("{input}.{}", B64.encode(sig)))
        })
        .collect()
}

/// `n` HS256 tokens signed with [`HS_SECRET`].
pub fn hs256(n: usize) -> anyhow::Result<Vec<String>> {
    (0..n)
        .map(|i| {
            let input = signing_input("HS256", HS_KID, i);
            let sig = openssl(
                &["dgst", "-sha256", "-binary", "-hmac", HS_SECRET],
                input.as_bytes(),
            )?;
            Ok(format!("{input}.{}", B64.encode(sig)))
        })
        .collect()
}

/// A JWKS (RFC 7517) with the RSA public key at `public_pem`, as [`RS_KID`].
pub fn jwks(public_pem: &Path) -> anyhow::Result<String> {
    let pem = public_pem.to_string_lossy();
    let text = String::from_utf8(openssl(
        &["rsa", "-pubin", "-in", &pem, "-noout", "-text"],
        b"",
    )?)?;
    let modulus = String::from_utf8(openssl(
        &["rsa", "-pubin", "-in", &pem, "-noout", "-modulus"],
        b"",
    )?)?;
    let hex = modulus
        .trim()
        .strip_prefix("Modulus=")
        .context("no modulus in openssl's output")?;
    let n = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .context("modulus is not hex")?;
    let e: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Exponent:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no exponent in openssl's output")?;
    let e_bytes: Vec<u8> = e
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect();
    Ok(json!({"keys": [{
        "kty": "RSA", "kid": RS_KID, "alg": "RS256", "use": "sig",
        "n": B64.encode(n), "e": B64.encode(e_bytes),
    }]})
    .to_string())
}
