//! What the fuzz targets share: the workspace root, a compile environment whose secrets all
//! resolve, the `jwt` policy fixture and the mapping catalog, each made once per process.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // fixtures: a broken setup panics

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, header::AUTHORIZATION};
use policies::clock::ManualClock;
use policies::compile::compile_str;
use policies::env::CompileEnv;
use policies::model::PolicySet;
use policies::pipeline::{ExchangeState, Flow, RequestView};
use policies::route::PathParams;
use policies::secret::SecretSource;

/// The HS256 secret of the jwt fixture (and every `${VAR}` of a fuzzed policy file).
pub const HS_SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";
/// The fixture's clock (unix seconds).
pub const NOW: u64 = 1_800_000_000;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `${VAR}` resolves, so fuzzed files get past secret lookups.
#[derive(Debug)]
pub struct AnySecret;

impl SecretSource for AnySecret {
    fn env(&self, _name: &str) -> Option<String> {
        Some(HS_SECRET.to_owned())
    }
}

/// A compile environment with a fixed clock and [`AnySecret`].
pub fn env() -> CompileEnv {
    CompileEnv {
        clock: Arc::new(ManualClock::new(Duration::from_secs(NOW))),
        secrets: Arc::new(AnySecret),
        ..CompileEnv::default()
    }
}

/// A `jwt` policy (RS256 from the development JWKS, HS256 with [`HS_SECRET`]) and a runtime.
pub struct JwtFixture {
    set: PolicySet,
    rt: tokio::runtime::Runtime,
}

/// The jwt fixture, made once.
pub fn jwt() -> &'static JwtFixture {
    static FX: OnceLock<JwtFixture> = OnceLock::new();
    FX.get_or_init(|| {
        let jwks = root().join("certs/dev-jwks.json");
        let yaml = format!(
            "version: 1\nchannels: {{amazon: {{}}}}\nupstreams: {{erp: {{endpoints: [\"127.0.0.1:1\"]}}}}\n\
             policies:\n  auth:\n    kind: jwt\n    issuer: https://idp.test\n    audience: [gateway]\n\
             \x20   keys: {{jwks_file: {:?}, hs256: {{hs1: \"${{HS}}\"}}}}\nroutes: []\n",
            jwks.display().to_string()
        );
        let set = compile_str(Path::new("/fuzz/jwt.yaml"), &yaml, &env(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        JwtFixture {
            set,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    })
}

impl JwtFixture {
    /// Whether the policy lets a request with this `Authorization` value through; `None` when
    /// the bytes cannot be a header value.
    pub fn accepts(&self, authorization: &[u8]) -> Option<bool> {
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
        let flow = self.rt.block_on(
            self.set.policies["auth"]
                .policy
                .on_request(&req, &mut state),
        );
        Some(matches!(flow, Flow::Continue(())))
    }
}

/// The shipped mappings, loaded once.
pub fn catalog() -> &'static transforms::Catalog {
    static CATALOG: OnceLock<transforms::Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        transforms::Catalog::load(&root().join("transforms/mappings"))
            .unwrap_or_else(|e| panic!("{} mapping errors", e.len()))
    })
}

/// The bound the property tests hold mappings to: linear in the input.
pub fn output_bound(input_len: usize) -> usize {
    4 * input_len + 8 * 1024
}
