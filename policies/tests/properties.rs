//! Property tests that run on stable inside `cargo test` (issue 16), each with a fixed seed and
//! a bounded case count so a run is repeatable and short: the policy-file compiler on arbitrary
//! and mutated YAML (never panics, every error located), the `jwt` policy on arbitrary and
//! mutated tokens (never panics, never accepts a token it did not issue), every jq mapping on
//! arbitrary and mutated JSON (never panics, output bounded by the input), and the idempotency
//! fingerprint (equal canonical JSON, equal fingerprint; different documents, different ones).
//! The cargo-fuzz targets in `fuzz/` run the same properties for as long as one likes.

#![allow(clippy::unwrap_used)] // test setup panics on failure by design

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Method, header::AUTHORIZATION};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use policies::clock::ManualClock;
use policies::compile::compile_str;
use policies::env::CompileEnv;
use policies::kinds::idempotency::fingerprint;
use policies::model::PolicySet;
use policies::pipeline::{ExchangeState, Flow, RequestView};
use policies::route::PathParams;
use policies::secret::SecretSource;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::{Value, json};

/// A fixed seed and case count: the same inputs on every run, no regression files written.
fn config(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `${VAR}` resolves to a value that passes any secret check (the example set's
/// references, the jwt policy's HS256 secret).
#[derive(Debug)]
struct AnySecret;

impl SecretSource for AnySecret {
    fn env(&self, _name: &str) -> Option<String> {
        Some(HS_SECRET.to_owned())
    }
}

const HS_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";
const NOW: u64 = 1_800_000_000;

fn env() -> CompileEnv {
    CompileEnv {
        clock: Arc::new(ManualClock::new(Duration::from_secs(NOW))),
        secrets: Arc::new(AnySecret),
        ..CompileEnv::default()
    }
}

/// The compile errors' text, each checked to carry `file:line:col`.
fn assert_located(file: &Path, text: &str) -> Result<(), TestCaseError> {
    let env = env();
    if let Err(errors) = compile_str(file, text, &env, None) {
        prop_assert!(!errors.0.is_empty(), "an error result lists its errors");
        for e in &errors.0 {
            prop_assert!(
                e.location.is_some_and(|l| l.line >= 1 && l.column >= 1),
                "unlocated error {e} for:\n{text}"
            );
            let shown = e.to_string();
            let prefix = format!("{}:", file.display());
            prop_assert!(shown.starts_with(&prefix), "{shown}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Policy-file compile

/// Words of the policy-file format, so random documents get past the YAML parser and into the
/// compiler's checks often.
const WORDS: &[&str] = &[
    "version",
    "listeners",
    "http",
    "admin",
    "admin_auth",
    "token",
    "previous_token",
    "upstreams",
    "erp",
    "endpoints",
    "routes",
    "name",
    "path",
    "methods",
    "upstream",
    "policies",
    "kind",
    "jwt",
    "rate_limit",
    "json_body",
    "body_schema",
    "idempotency",
    "transform",
    "webhook_signature",
    "channels",
    "amazon",
    "limits",
    "rate",
    "per",
    "key",
    "store",
    "redis",
    "url",
    "tls",
    "ca",
    "issuer",
    "audience",
    "keys",
    "jwks_file",
    "hs256",
    "GET",
    "POST",
    "/channels/{channel}/orders",
    "1",
    "0",
    "-1",
    "1h",
    "10ms",
    "true",
    "null",
    "~",
    "${X}",
    "file:x",
    "127.0.0.1:0",
    "rediss://h:1",
    "",
    "é",
    "\u{0}",
];

/// Printable ASCII, up to `max` characters.
fn printable(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(0x20u8..0x7f, 0..=max)
        .prop_map(|b| String::from_utf8(b).unwrap_or_default())
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => printable(12),
        1 => any::<i64>().prop_map(|n| n.to_string()),
    ]
}

/// A random YAML document of policy-file words: mappings, sequences and scalars, nested.
fn yaml_doc() -> impl Strategy<Value = String> {
    let leaf = scalar().prop_map(|s| format!("{s:?}"));
    let tree = leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec((prop::sample::select(WORDS), inner.clone()), 0..6).prop_map(
                |members| {
                    let body: Vec<String> = members
                        .into_iter()
                        .map(|(k, v)| format!("{k:?}: {v}"))
                        .collect();
                    format!("{{{}}}", body.join(", "))
                }
            ),
            prop::collection::vec(inner, 0..5).prop_map(|items| format!("[{}]", items.join(", "))),
        ]
    });
    prop::collection::vec((prop::sample::select(WORDS), tree), 0..8).prop_map(|top| {
        top.into_iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect()
    })
}

/// Bytes of YAML's syntax and a few others, so the parser's error paths are walked.
fn yaml_noise() -> impl Strategy<Value = String> {
    let chars = prop::sample::select(vec![
        ':', '-', ' ', ' ', '\n', '\t', '{', '}', '[', ']', '"', '\'', '&', '*', '!', '#', '|',
        '>', '%', '@', '?', ',', 'a', 'k', '1', '.', '\\', '\u{feff}', 'é', '\r', '~', '$',
    ]);
    prop::collection::vec(chars, 0..200).prop_map(|c| c.into_iter().collect())
}

fn example_set() -> &'static (PathBuf, String) {
    static SET: OnceLock<(PathBuf, String)> = OnceLock::new();
    SET.get_or_init(|| {
        let file = root().join("policies/files/gateway.yaml");
        let text = std::fs::read_to_string(&file).unwrap();
        (file, text)
    })
}

/// One edit of a policy file's lines.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    Indent(usize, usize),
    Dedent(usize),
    Replace(usize, usize, String),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Swap(a, b)),
        (any::<usize>(), 1..4usize).prop_map(|(a, n)| Edit::Indent(a, n)),
        any::<usize>().prop_map(Edit::Dedent),
        (any::<usize>(), any::<usize>(), scalar()).prop_map(|(l, c, s)| Edit::Replace(l, c, s)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply_edits(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for e in edits {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match e {
            Edit::Delete(i) => {
                lines.remove(i % n);
            }
            Edit::Duplicate(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Edit::Swap(a, b) => lines.swap(a % n, b % n),
            Edit::Indent(i, k) => lines[i % n].insert_str(0, &" ".repeat(*k)),
            Edit::Dedent(i) => {
                let l = &mut lines[i % n];
                let trimmed = l.trim_start().to_owned();
                *l = trimmed;
            }
            Edit::Replace(i, c, s) => {
                let l = &mut lines[i % n];
                // replace the word around a char boundary with the scalar
                let chars: Vec<char> = l.chars().collect();
                let at = if chars.is_empty() { 0 } else { c % chars.len() };
                let end = (at + 1 + c % 7).min(chars.len());
                let mut out: String = chars[..at].iter().collect();
                out.push_str(s);
                out.extend(&chars[end..]);
                *l = out;
            }
            Edit::Truncate(i) => lines.truncate(i % n + 1),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

proptest! {
    #![proptest_config(config(1500, 0x1605_0001))]

    /// Arbitrary YAML of policy-file words never panics the compiler, and every error it
    /// reports is located.
    #[test]
    fn any_yaml_compiles_or_fails_with_located_errors(doc in yaml_doc()) {
        assert_located(Path::new("/fuzz/policy.yaml"), &doc)?;
    }

    /// So does YAML syntax noise.
    #[test]
    fn yaml_noise_compiles_or_fails_with_located_errors(doc in yaml_noise()) {
        assert_located(Path::new("/fuzz/policy.yaml"), &doc)?;
    }
}

proptest! {
    // compiling the example set loads every mapping and schema: fewer cases
    #![proptest_config(config(150, 0x1605_0002))]

    /// The example set with a few lines deleted, duplicated, moved, re-indented or rewritten
    /// never panics the compiler, and every error is located.
    #[test]
    fn mutated_example_sets_compile_or_fail_with_located_errors(
        edits in prop::collection::vec(edit(), 1..4)
    ) {
        let (file, text) = example_set();
        assert_located(file, &apply_edits(text, &edits))?;
    }
}

#[test]
fn the_example_set_compiles_as_shipped() {
    // the mutation test is only worth something if the unmutated file compiles
    let (file, text) = example_set();
    if let Err(e) = compile_str(file, text, &env(), None) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// JWT

struct JwtFx {
    set: PolicySet,
    rt: tokio::runtime::Runtime,
    rsa: EncodingKey,
    kid: String,
}

fn jwt_fx() -> &'static JwtFx {
    static FX: OnceLock<JwtFx> = OnceLock::new();
    FX.get_or_init(|| {
        let jwks = root().join("certs/dev-jwks.json");
        let yaml = format!(
            "version: 1\nchannels: {{amazon: {{}}}}\nupstreams: {{erp: {{endpoints: [\"127.0.0.1:1\"]}}}}\n\
             policies:\n  auth:\n    kind: jwt\n    issuer: https://idp.test\n    audience: [gateway]\n\
             \x20   keys: {{jwks_file: {jwks:?}, hs256: {{hs1: \"${{HS}}\"}}}}\nroutes: []\n",
            jwks = jwks.display().to_string()
        );
        let set = compile_str(Path::new("/fuzz/jwt.yaml"), &yaml, &env(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let jwks: Value = serde_json::from_slice(&std::fs::read(&jwks).unwrap()).unwrap();
        JwtFx {
            set,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            rsa: EncodingKey::from_rsa_pem(
                &std::fs::read(root().join("certs/dev-jwt-signing.key")).unwrap(),
            )
            .unwrap(),
            kid: jwks["keys"][0]["kid"].as_str().unwrap().to_owned(),
        }
    })
}

impl JwtFx {
    /// Whether the policy lets a request with this Authorization value through; `None` when
    /// the bytes cannot be a header value at all.
    fn accepts(&self, authorization: &[u8]) -> Option<bool> {
        let value = HeaderValue::from_bytes(authorization).ok()?;
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        let params = PathParams::default();
        let req = RequestView {
            method: &Method::GET,
            path: "/x",
            query: None,
            headers: &headers,
            params: &params,
        };
        let mut state = ExchangeState::default();
        let policy = &self.set.policies["auth"].policy;
        let flow = self.rt.block_on(policy.on_request(&req, &mut state));
        Some(matches!(flow, Flow::Continue(())))
    }

    fn token(&self, claims: &Value, rs: bool) -> String {
        if rs {
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some(self.kid.clone());
            jsonwebtoken::encode(&h, claims, &self.rsa).unwrap()
        } else {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("hs1".into());
            jsonwebtoken::encode(
                &h,
                claims,
                &EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap(),
            )
            .unwrap()
        }
    }
}

fn good_claims() -> Value {
    json!({"iss": "https://idp.test", "aud": "gateway", "sub": "acme", "iat": NOW, "exp": NOW + 600})
}

#[test]
fn the_jwt_fixture_accepts_its_own_tokens() {
    // the properties below are only worth something if real tokens pass
    let fx = jwt_fx();
    for rs in [true, false] {
        let t = fx.token(&good_claims(), rs);
        assert_eq!(fx.accepts(format!("Bearer {t}").as_bytes()), Some(true));
    }
}

/// One change of a token's text.
#[derive(Debug, Clone)]
enum TokenEdit {
    /// Replace the char at this position with one of the alphabet.
    Set(usize, char),
    Insert(usize, char),
    Remove(usize),
    Truncate(usize),
    /// Swap two of the three segments.
    SwapSegments(usize, usize),
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";

fn token_edit() -> impl Strategy<Value = TokenEdit> {
    let ch = prop::sample::select(B64).prop_map(char::from);
    prop_oneof![
        (any::<usize>(), ch.clone()).prop_map(|(i, c)| TokenEdit::Set(i, c)),
        (any::<usize>(), ch).prop_map(|(i, c)| TokenEdit::Insert(i, c)),
        any::<usize>().prop_map(TokenEdit::Remove),
        any::<usize>().prop_map(TokenEdit::Truncate),
        (0..3usize, 0..3usize).prop_map(|(a, b)| TokenEdit::SwapSegments(a, b)),
    ]
}

fn edit_token(token: &str, edits: &[TokenEdit]) -> String {
    let mut t: Vec<char> = token.chars().collect();
    for e in edits {
        let n = t.len().max(1);
        match e {
            TokenEdit::Set(i, c) if !t.is_empty() => t[i % n] = *c,
            TokenEdit::Insert(i, c) => t.insert(i % (t.len() + 1), *c),
            TokenEdit::Remove(i) if !t.is_empty() => {
                t.remove(i % n);
            }
            TokenEdit::Truncate(i) => t.truncate(i % n),
            TokenEdit::SwapSegments(a, b) => {
                let s: String = t.iter().collect();
                let mut parts: Vec<&str> = s.split('.').collect();
                if *a < parts.len() && *b < parts.len() {
                    parts.swap(*a, *b);
                }
                t = parts.join(".").chars().collect();
            }
            _ => {}
        }
    }
    t.into_iter().collect()
}

/// A header the attacker chose, with claims and a signature of its making.
#[derive(Debug, Clone)]
enum Forgery {
    /// `alg: none` and an empty signature.
    AlgNone(String),
    /// HS256 "signed" with the RSA public key document as the HMAC secret (key confusion).
    HsWithPublicKey,
    /// A valid RS256 token's header and signature with other claims.
    SwappedClaims,
    /// An unknown kid, or a kid that is a path.
    Kid(String),
}

fn forgery() -> impl Strategy<Value = Forgery> {
    prop_oneof![
        prop::sample::select(vec!["none", "None", "NONE", "nOnE", ""])
            .prop_map(|a| Forgery::AlgNone(a.into())),
        Just(Forgery::HsWithPublicKey),
        Just(Forgery::SwappedClaims),
        prop::sample::select(vec!["../../etc/passwd", "hs2", "", "' OR 1=1", "\u{0}"])
            .prop_map(|k| Forgery::Kid(k.into())),
    ]
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn forge(fx: &JwtFx, f: &Forgery, claims: &Value) -> String {
    match f {
        Forgery::AlgNone(alg) => format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT"})),
            b64(claims)
        ),
        Forgery::HsWithPublicKey => {
            let public = std::fs::read(root().join("certs/dev-jwks.json")).unwrap();
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some(fx.kid.clone());
            jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(&public).unwrap()).unwrap()
        }
        Forgery::SwappedClaims => {
            let real = fx.token(&good_claims(), true);
            let parts: Vec<&str> = real.split('.').collect();
            format!("{}.{}.{}", parts[0], b64(claims), parts[2])
        }
        Forgery::Kid(kid) => {
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some(kid.clone());
            jsonwebtoken::encode(&h, claims, &fx.rsa).unwrap()
        }
    }
}

proptest! {
    #![proptest_config(config(1000, 0x1605_0003))]

    /// Arbitrary bytes after `Bearer ` are refused, never a panic.
    #[test]
    fn arbitrary_tokens_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(&bytes);
        prop_assert_ne!(jwt_fx().accepts(&value), Some(true));
    }

    /// Base64url-looking three-segment tokens are refused.
    #[test]
    fn token_shaped_garbage_is_refused(
        segs in prop::collection::vec(prop::collection::vec(prop::sample::select(B64), 0..80), 1..5)
    ) {
        let token: Vec<String> = segs.into_iter().map(|s| String::from_utf8(s).unwrap()).collect();
        let value = format!("Bearer {}", token.join("."));
        prop_assert_ne!(jwt_fx().accepts(value.as_bytes()), Some(true));
    }

    /// Any change of a valid token's text (RS256 or HS256) makes it refused.
    #[test]
    fn mutated_valid_tokens_are_refused(
        rs in any::<bool>(),
        edits in prop::collection::vec(token_edit(), 1..4)
    ) {
        let fx = jwt_fx();
        let token = fx.token(&good_claims(), rs);
        let mutated = edit_token(&token, &edits);
        prop_assume!(mutated != token);
        let value = format!("Bearer {mutated}");
        prop_assert_ne!(fx.accepts(value.as_bytes()), Some(true), "{}", mutated);
    }

    /// Forged headers (alg none, HS256 keyed with the public key, swapped claims, odd kids)
    /// are refused whatever the claims say.
    #[test]
    fn forged_tokens_are_refused(f in forgery(), admin in any::<bool>(), exp in 0u64..4_000_000_000) {
        let fx = jwt_fx();
        let mut claims = good_claims();
        claims["exp"] = json!(exp);
        if admin {
            claims["scope"] = json!("admin orders:write");
        }
        let token = forge(fx, &f, &claims);
        let value = format!("Bearer {token}");
        prop_assert_ne!(fx.accepts(value.as_bytes()), Some(true), "{:?} {}", f, token);
    }
}

// ---------------------------------------------------------------------------------------------
// jq mappings

fn catalog() -> &'static transforms::Catalog {
    static CATALOG: OnceLock<transforms::Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        transforms::Catalog::load(&root().join("transforms/mappings"))
            .unwrap_or_else(|e| panic!("{} mapping errors", e.len()))
    })
}

/// Arbitrary JSON: every type, odd numbers, long and unusual strings, nesting.
fn json_value() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        prop::sample::select(vec![
            "0",
            "-0",
            "1e308",
            "1E-400",
            "123456789012345678901234567890",
            "0.1",
            "9.99",
            "-1.5e3",
            "18446744073709551616",
        ])
        .prop_map(str::to_owned),
    ]
    .prop_map(|t| serde_json::from_str::<Value>(&t).unwrap_or(Value::Null));
    let string = prop_oneof![
        printable(16),
        prop::sample::select(vec![
            "",
            "null",
            "2024-11-28T12:00:00Z",
            "not a date",
            "US",
            "ZZ",
            "\u{0}",
            "\u{10ffff}",
            "1e999",
            "-",
            "é€𝄞",
        ])
        .prop_map(str::to_owned),
        (1usize..3000).prop_map(|n| "x".repeat(n)),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number,
        string.prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

/// Field names the mappings read, so arbitrary documents reach past their first checks.
const KEYS: &[&str] = &[
    "id",
    "orderId",
    "purchaseOrderId",
    "AmazonOrderId",
    "order",
    "lines",
    "line_items",
    "orderLines",
    "orderLine",
    "OrderItems",
    "sku",
    "SKU",
    "quantity",
    "price",
    "amount",
    "currency",
    "currencyCode",
    "CurrencyCode",
    "total",
    "buyer",
    "customer",
    "shipTo",
    "shipping_address",
    "address",
    "country",
    "countryCode",
    "postalCode",
    "status",
    "created_at",
    "orderDate",
    "PurchaseDate",
    "lineItems",
    "value",
    "channel",
    "items",
];

/// An edit at a random place of a document: a value replaced, an array item repeated, a
/// member removed.
#[derive(Debug, Clone)]
enum JsonEdit {
    Replace(usize, Value),
    Repeat(usize, usize),
    Remove(usize),
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        (any::<usize>(), json_value()).prop_map(|(i, v)| JsonEdit::Replace(i, v)),
        (any::<usize>(), 1..40usize).prop_map(|(i, n)| JsonEdit::Repeat(i, n)),
        any::<usize>().prop_map(JsonEdit::Remove),
    ]
}

/// The number of values in `v` (itself included).
fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

fn edit_json(doc: &mut Value, e: &JsonEdit) {
    let total = count(doc);
    let target = |i: usize| i % total;
    match e {
        JsonEdit::Replace(i, new) => with_nth(doc, target(*i), |v| *v = new.clone()),
        JsonEdit::Repeat(i, times) => with_nth(doc, target(*i), |v| {
            if let Value::Array(a) = v
                && let Some(first) = a.first().cloned()
            {
                a.extend(std::iter::repeat_n(first, *times));
            }
        }),
        JsonEdit::Remove(i) => with_nth(doc, target(*i), |v| {
            if let Value::Object(o) = v
                && let Some(k) = o.keys().next().cloned()
            {
                o.remove(&k);
            }
        }),
    }
}

/// Runs `f` on the `n`th value (pre-order) of `doc`.
fn with_nth(doc: &mut Value, n: usize, f: impl FnOnce(&mut Value)) {
    fn walk(v: &mut Value, n: &mut usize, f: &mut Option<impl FnOnce(&mut Value)>) {
        if f.is_none() {
            return;
        }
        if *n == 0 {
            if let Some(f) = f.take() {
                f(v);
            }
            return;
        }
        *n -= 1;
        match v {
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, n, f)),
            Value::Object(o) => o.values_mut().for_each(|x| walk(x, n, f)),
            _ => {}
        }
    }
    let mut n = n;
    walk(doc, &mut n, &mut Some(f));
}

/// What "bounded by the input" means: a mapping reshapes a document, it does not multiply it.
/// Linear in the input with a constant for the fields a mapping adds (the shipped mappings'
/// golden cases stay far below this; see `golden_outputs_are_within_the_bound`).
fn output_bound(input_len: usize) -> usize {
    4 * input_len + 8 * 1024
}

fn check_mappings(input: &Value) -> Result<(), TestCaseError> {
    let in_len = input.to_string().len();
    for m in catalog().mappings() {
        if let Ok(out) = m.apply(input.clone()) {
            let out_len = out.to_string().len();
            prop_assert!(
                out_len <= output_bound(in_len),
                "{}: {} bytes out of {} in",
                m.name(),
                out_len,
                in_len
            );
        }
    }
    for m in catalog().outbound_mappings() {
        if let Ok(req) = m.apply(input.clone()) {
            let out_len = format!("{req:?}").len();
            prop_assert!(out_len <= output_bound(in_len) + 1024, "{:?}", req);
        }
    }
    Ok(())
}

#[test]
fn golden_outputs_are_within_the_bound() {
    let mut checked = 0;
    for m in catalog().mappings() {
        for case in m.golden_cases() {
            let in_len = case.input.to_string().len();
            if let Ok(out) = m.apply(case.input.clone()) {
                assert!(
                    out.to_string().len() <= output_bound(in_len),
                    "{}",
                    case.name
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "{checked}");
}

/// Every golden input of every mapping (inbound and outbound), to mutate.
fn golden_inputs() -> &'static Vec<Value> {
    static INPUTS: OnceLock<Vec<Value>> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let c = catalog();
        c.mappings()
            .flat_map(|m| m.golden_cases().iter().map(|g| g.input.clone()))
            .chain(
                c.outbound_mappings()
                    .flat_map(|m| m.golden_cases().iter().map(|g| g.input.clone())),
            )
            .collect()
    })
}

proptest! {
    #![proptest_config(config(200, 0x1605_0004))]

    /// Arbitrary JSON through every mapping: no panic, output bounded.
    #[test]
    fn mappings_survive_arbitrary_json(doc in json_value()) {
        check_mappings(&doc)?;
    }

    /// Golden inputs with values replaced, arrays repeated and members removed: no panic,
    /// output bounded (repeated order lines grow the output with the input, not faster).
    #[test]
    fn mappings_survive_mutated_golden_inputs(
        which in any::<usize>(),
        edits in prop::collection::vec(json_edit(), 1..4)
    ) {
        let inputs = golden_inputs();
        let mut doc = inputs[which % inputs.len()].clone();
        for e in &edits {
            edit_json(&mut doc, e);
        }
        check_mappings(&doc)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Idempotency fingerprint

/// Canonical JSON as the test understands it (keys sorted, no whitespace), written
/// independently of the gateway's hasher.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let mut members: Vec<(&String, &Value)> = o.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = members
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// The same document spelled another way: members in another order (by `order`), whitespace
/// (by `ws`) and string characters written as `\u` escapes (by `esc`).
fn respell(v: &Value, order: &mut impl Iterator<Item = u64>, ws: &str, esc: bool) -> String {
    match v {
        Value::Object(o) => {
            let mut members: Vec<(&String, &Value)> = o.iter().collect();
            members.sort_by_key(|_| order.next().unwrap_or(0));
            let inner: Vec<String> = members
                .into_iter()
                .map(|(k, v)| {
                    format!(
                        "{}{ws}:{ws}{}",
                        spell_string(k, esc),
                        respell(v, order, ws, esc)
                    )
                })
                .collect();
            format!("{{{ws}{}{ws}}}", inner.join(&format!(",{ws}")))
        }
        Value::Array(a) => {
            let inner: Vec<String> = a.iter().map(|x| respell(x, order, ws, esc)).collect();
            format!("[{ws}{}{ws}]", inner.join(&format!("{ws},{ws}")))
        }
        Value::String(s) => spell_string(s, esc),
        other => other.to_string(),
    }
}

fn spell_string(s: &str, esc: bool) -> String {
    if !esc {
        return Value::String(s.to_owned()).to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        let mut units = [0u16; 2];
        for u in c.encode_utf16(&mut units) {
            out.push_str(&format!("\\u{:04x}", u));
        }
    }
    out.push('"');
    out
}

fn fp(text: &str) -> [u8; 32] {
    let v: Value = serde_json::from_str(text).unwrap();
    fingerprint(Some(&v), text.as_bytes())
}

proptest! {
    #![proptest_config(config(1000, 0x1605_0005))]

    /// Reordered members, added whitespace and escaped strings: the same canonical document,
    /// the same fingerprint.
    #[test]
    fn equal_canonical_json_has_equal_fingerprints(
        doc in json_value(),
        order in prop::collection::vec(any::<u64>(), 64),
        ws in prop::sample::select(vec!["", " ", "\n", "\t", " \r\n  "]),
        esc in any::<bool>(),
    ) {
        let plain = doc.to_string();
        let other = respell(&doc, &mut order.into_iter().cycle(), ws, esc);
        prop_assert_eq!(
            canonical(&serde_json::from_str(&other).unwrap()),
            canonical(&doc),
            "the respelling is the same document"
        );
        prop_assert_eq!(fp(&plain), fp(&other), "{} vs {}", plain, other);
    }

    /// Documents whose canonical forms differ have different fingerprints, and a document never
    /// shares one with raw bytes.
    #[test]
    fn different_documents_have_different_fingerprints(
        a in json_value(),
        b in json_value(),
        edit in json_edit(),
    ) {
        let mut c = a.clone();
        edit_json(&mut c, &edit);
        for (x, y) in [(&a, &b), (&a, &c)] {
            let (fx, fy) = (fp(&x.to_string()), fp(&y.to_string()));
            prop_assert_eq!(canonical(x) == canonical(y), fx == fy, "{} vs {}", x, y);
        }
        let text = a.to_string();
        let raw = fingerprint(None, text.as_bytes());
        prop_assert_ne!(raw, fp(&text));
    }
}

#[test]
fn number_spellings_keep_their_text() {
    // the documented rule (numbers keep their literal text, so money is exact): `1.0` and `1`
    // are different documents, and the same spelling is the same document
    assert_ne!(fp(r#"{"a":1.0}"#), fp(r#"{"a":1}"#));
    assert_eq!(fp(r#"{"a":1.50,"b":2}"#), fp(r#"{ "b" : 2, "a" : 1.50 }"#));
}
