//! Access tokens for the gateway's own calls to marketplace APIs: [`OutboundAuth`] keeps one
//! token cache per upstream with `credentials:` (the decisions live in
//! `policies::credentials`), fetches tokens over HTTP with reqwest ([`HttpTokenSource`]), and
//! hands the delivery worker the headers a call carries. Caches survive reloads that leave an
//! upstream's credentials unchanged. Secrets and tokens never reach logs or errors.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use http::{HeaderName, HeaderValue};
use policies::clock::Clock;
use policies::credentials::{
    Credentials, FetchedToken, REFRESH_RESULTS, TokenCache, TokenFailure, TokenFuture,
    TokenRequest, TokenSource, parse_token_response,
};
use policies::fetch::LazyClient;
use policies::model::Upstream;
use prometheus::{IntCounterVec, Opts, Registry};

pub use policies::credentials::AuthError;

/// The largest token answer read (they are a few hundred bytes).
const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;

/// The access tokens of every upstream with credentials. Cheap to clone (one `Arc`); one per
/// gateway, shared by the delivery workers and kept across reloads.
#[derive(Clone)]
pub struct OutboundAuth {
    inner: Arc<Inner>,
}

struct Inner {
    /// One cache per upstream name, with the credentials it was made for.
    caches: Mutex<HashMap<Arc<str>, Arc<TokenCache>>>,
    source: Arc<dyn TokenSource>,
    clock: Arc<dyn Clock>,
    /// `gateway_outbound_token_refreshes_total{upstream,result}`.
    refreshes: IntCounterVec,
}

impl fmt::Debug for OutboundAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let upstreams: Vec<Arc<str>> = self.lock().keys().cloned().collect();
        f.debug_struct("OutboundAuth")
            .field("upstreams", &upstreams)
            .finish_non_exhaustive()
    }
}

impl OutboundAuth {
    /// Tokens fetched over HTTP, timed by `clock`; registers
    /// `gateway_outbound_token_refreshes_total{upstream,result}` in `registry` (pass
    /// `Metrics::registry()`; once per registry).
    pub fn new(registry: &Registry, clock: Arc<dyn Clock>) -> Result<Self, prometheus::Error> {
        Self::with_source(registry, clock, Arc::new(HttpTokenSource::default()))
    }

    /// The same with another token source (tests).
    pub fn with_source(
        registry: &Registry,
        clock: Arc<dyn Clock>,
        source: Arc<dyn TokenSource>,
    ) -> Result<Self, prometheus::Error> {
        let refreshes = IntCounterVec::new(
            Opts::new(
                "gateway_outbound_token_refreshes_total",
                "Access-token calls to marketplaces' token endpoints, by upstream and result \
                 (success, unavailable, refused, malformed).",
            ),
            &["upstream", "result"],
        )?;
        registry.register(Box::new(refreshes.clone()))?;
        Ok(OutboundAuth {
            inner: Arc::new(Inner {
                caches: Mutex::new(HashMap::new()),
                source,
                clock,
                refreshes,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<TokenCache>>> {
        self.inner.caches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cache of `upstream`'s credentials: the one kept from before when they are equal
    /// (a reload that did not change them), else a new, empty one.
    fn cache(&self, upstream: &Upstream, credentials: &Arc<Credentials>) -> Arc<TokenCache> {
        let mut caches = self.lock();
        if let Some(cache) = caches.get(&upstream.name)
            && (Arc::ptr_eq(cache.credentials(), credentials)
                || **cache.credentials() == **credentials)
        {
            return cache.clone();
        }
        if credentials.token_request("").is_some() {
            // every result shows up as 0 before the first call, so rates work from the start
            for result in REFRESH_RESULTS {
                self.inner
                    .refreshes
                    .with_label_values(&[&*upstream.name, result]);
            }
        }
        let cache = Arc::new(TokenCache::new(
            upstream.name.clone(),
            credentials.clone(),
            self.inner.clock.clone(),
            self.inner.refreshes.clone(),
        ));
        caches.insert(upstream.name.clone(), cache.clone());
        cache
    }

    /// The headers a call to `upstream` carries: its access token in the preset's header
    /// (fetched or refreshed first when needed; values marked sensitive), plus Walmart's
    /// `WM_SVC.NAME` and a fresh `WM_QOS.CORRELATION_ID`. None for an upstream without
    /// credentials.
    pub async fn headers(
        &self,
        upstream: &Upstream,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, AuthError> {
        let Some(credentials) = &upstream.credentials else {
            return Ok(Vec::new());
        };
        let cache = self.cache(upstream, credentials);
        let token = cache.token(&*self.inner.source).await?;
        let correlation_id = uuid::Uuid::new_v4().to_string();
        credentials
            .api_headers(&token, &correlation_id)
            .map_err(|failure| AuthError {
                upstream: upstream.name.clone(),
                failure,
            })
    }

    /// `upstream` answered 401 to a call with its token: the token is dropped, and the next
    /// [`headers`](OutboundAuth::headers) fetches a new one.
    pub fn refused(&self, upstream: &Upstream) {
        if let Some(cache) = self.lock().get(&upstream.name) {
            cache.refused();
        }
    }

    /// Forgets the caches of upstreams no longer in `upstreams` (after a reload removed them).
    pub fn retain(&self, upstreams: &[Arc<Upstream>]) {
        self.lock().retain(|name, _| {
            upstreams
                .iter()
                .any(|u| u.name == *name && u.credentials.is_some())
        });
    }
}

/// Token calls over HTTP: reqwest over rustls, no redirects followed (a token URL is
/// configured exactly), no pooled connections (a call an hour per marketplace does not need
/// one, and a caller may run on a short-lived runtime), each call bounded by the credentials'
/// `timeout`.
#[derive(Default, Debug)]
pub struct HttpTokenSource {
    client: LazyClient,
}

impl HttpTokenSource {
    fn client(&self) -> Result<&reqwest::Client, TokenFailure> {
        self.client.get().map_err(TokenFailure::Unavailable)
    }

    async fn post(&self, req: &TokenRequest) -> Result<FetchedToken, TokenFailure> {
        let client = self.client()?;
        let mut builder = client.post(&req.url).form(&req.form);
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        if let Some((id, secret)) = &req.basic {
            builder = builder.basic_auth(id, Some(secret));
        }
        let mut resp = builder
            .send()
            .await
            .map_err(|e| TokenFailure::Unavailable(describe(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            // the answer's body is not read: it may echo what was sent
            return Err(match status.as_u16() {
                408 | 429 => TokenFailure::Unavailable(format!("HTTP {}", status.as_u16())),
                s @ 400..=499 => TokenFailure::Refused(s),
                s => TokenFailure::Unavailable(format!("HTTP {s}")),
            });
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| TokenFailure::Unavailable(describe(&e)))?
        {
            if body.len() + chunk.len() > MAX_TOKEN_ANSWER_BYTES {
                return Err(TokenFailure::Malformed(format!(
                    "the answer is larger than {MAX_TOKEN_ANSWER_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        parse_token_response(&body)
    }
}

impl TokenSource for HttpTokenSource {
    fn fetch<'a>(&'a self, credentials: &'a Credentials) -> TokenFuture<'a> {
        Box::pin(async move {
            // a fresh correlation id per token call (Walmart asks for one on every call)
            let correlation_id = uuid::Uuid::new_v4().to_string();
            let Some(req) = credentials.token_request(&correlation_id) else {
                return Err(TokenFailure::Malformed(
                    "these credentials have no token endpoint".into(),
                ));
            };
            match tokio::time::timeout(req.timeout, self.post(&req)).await {
                Ok(result) => result,
                Err(_) => Err(TokenFailure::Unavailable(format!(
                    "timed out after {:?}",
                    req.timeout
                ))),
            }
        })
    }
}

/// reqwest's error with its sources ("connection refused" is there). It names the URL, which
/// carries no secret (credentials travel in the body and the `Authorization` header).
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;

    use policies::clock::ManualClock;
    use policies::compile::compile_str;
    use policies::env::CompileEnv;
    use policies::secret::SecretSource;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// The token server's script: `(status, body)` per call, `None` to stall.
    type Answers = Arc<Mutex<VecDeque<Option<(u16, String)>>>>;

    /// What the token server received in one call.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        headers: HashMap<String, String>,
        form: HashMap<String, String>,
    }

    /// A tiny HTTP/1.1 token endpoint on 127.0.0.1:0: answers each call with the next scripted
    /// `(status, body)` (the last one repeats; `None` stalls without answering) and records it.
    struct TokenServer {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
        answers: Answers,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for TokenServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl TokenServer {
        async fn start() -> TokenServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let answers: Answers = Arc::default();
            let (s, a) = (seen.clone(), answers.clone());
            let task = tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    tokio::spawn(serve(conn, s.clone(), a.clone()));
                }
            });
            TokenServer {
                addr,
                seen,
                answers,
                task,
            }
        }

        fn answer(&self, status: u16, body: &str) {
            self.answers
                .lock()
                .unwrap()
                .push_back(Some((status, body.to_owned())));
        }

        fn token(&self, token: &str, expires_in: u64) {
            self.answer(
                200,
                &format!(
                    r#"{{"access_token":"{token}","token_type":"bearer","expires_in":{expires_in}}}"#
                ),
            );
        }

        fn stall(&self) {
            self.answers.lock().unwrap().push_back(None);
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    async fn serve(mut conn: tokio::net::TcpStream, seen: Arc<Mutex<Vec<Seen>>>, answers: Answers) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_owned();
        let path = first.next().unwrap_or_default().to_owned();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let form = form_urlencoded::parse(&buf[head_end..head_end + len])
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        seen.lock().unwrap().push(Seen {
            method,
            path,
            headers,
            form,
        });
        let answer = {
            let mut answers = answers.lock().unwrap();
            if answers.len() > 1 {
                answers.pop_front().flatten()
            } else {
                answers.front().cloned().flatten()
            }
        };
        let Some((status, body)) = answer else {
            // stall: hold the connection open without answering
            std::future::pending::<()>().await;
            return;
        };
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(resp.as_bytes()).await;
        let _ = conn.shutdown().await;
    }

    #[derive(Debug)]
    struct Env(HashMap<&'static str, &'static str>);

    impl SecretSource for Env {
        fn env(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
    }

    fn secrets(rotated: bool) -> Env {
        Env(HashMap::from([
            ("LWA_SECRET", "lwa-secret"),
            (
                "LWA_REFRESH",
                if rotated {
                    "Atzr|rotated"
                } else {
                    "Atzr|refresh"
                },
            ),
            ("WM_SECRET", "wm-secret"),
        ]))
    }

    /// Compiles a policy file with one upstream `market` carrying these credentials.
    fn upstream(credentials: &str, rotated: bool) -> Arc<Upstream> {
        let yaml = format!(
            "version: 1\nupstreams:\n  market:\n    endpoints: [\"127.0.0.1:1\"]\n    credentials: {credentials}\nroutes: []\n"
        );
        let env = CompileEnv {
            secrets: Arc::new(secrets(rotated)),
            ..CompileEnv::default()
        };
        let set =
            compile_str(Path::new("p.yaml"), &yaml, &env, None).unwrap_or_else(|e| panic!("{e}"));
        set.upstreams[0].clone()
    }

    fn lwa(addr: SocketAddr) -> String {
        format!(
            "{{preset: amazon_lwa, token_url: \"http://{addr}/auth/o2/token\", client_id: amzn-client, client_secret: \"${{LWA_SECRET}}\", refresh_token: \"${{LWA_REFRESH}}\", refresh_before: 60s}}"
        )
    }

    struct Fx {
        auth: OutboundAuth,
        clock: Arc<ManualClock>,
        registry: Registry,
    }

    fn fx() -> Fx {
        let registry = Registry::new();
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_000)));
        let auth = OutboundAuth::new(&registry, clock.clone()).unwrap();
        Fx {
            auth,
            clock,
            registry,
        }
    }

    impl Fx {
        fn refreshes(&self, result: &str) -> u64 {
            self.auth
                .inner
                .refreshes
                .with_label_values(&["market", result])
                .get()
        }
    }

    fn header<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[tokio::test]
    async fn outbound_auth_amazon_lwa_posts_the_refresh_grant_as_a_form() {
        let server = TokenServer::start().await;
        server.token("Atza|one", 3600);
        let fx = fx();
        let up = upstream(&lwa(server.addr), false);

        let headers = fx.auth.headers(&up).await.unwrap();
        assert_eq!(headers.len(), 1);
        assert_eq!(header(&headers, "x-amz-access-token"), Some("Atza|one"));
        assert!(headers[0].1.is_sensitive());

        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        let call = &seen[0];
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, "/auth/o2/token");
        assert_eq!(
            call.headers.get("content-type").map(String::as_str),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            call.headers.get("accept").map(String::as_str),
            Some("application/json")
        );
        assert!(
            !call.headers.contains_key("authorization"),
            "LWA takes the client credentials in the body"
        );
        let form = |k: &str| call.form.get(k).map(String::as_str);
        assert_eq!(form("grant_type"), Some("refresh_token"));
        assert_eq!(form("refresh_token"), Some("Atzr|refresh"));
        assert_eq!(form("client_id"), Some("amzn-client"));
        assert_eq!(form("client_secret"), Some("lwa-secret"));

        // the next call uses the cached token
        fx.auth.headers(&up).await.unwrap();
        assert_eq!(server.seen().len(), 1);
        assert_eq!(fx.refreshes("success"), 1);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&fx.registry.gather())
            .unwrap();
        assert!(
            text.contains(
                "gateway_outbound_token_refreshes_total{result=\"success\",upstream=\"market\"} 1"
            ),
            "{text}"
        );
        assert!(!format!("{:?}", fx.auth).contains("Atza"));
    }

    #[tokio::test]
    async fn outbound_auth_walmart_uses_basic_client_credentials_and_wm_headers() {
        let server = TokenServer::start().await;
        server.token("wm-token", 900);
        let fx = fx();
        let up = upstream(
            &format!(
                "{{preset: walmart, token_url: \"http://{}/v3/token\", client_id: wm-client, client_secret: \"${{WM_SECRET}}\"}}",
                server.addr
            ),
            false,
        );
        let first = fx.auth.headers(&up).await.unwrap();
        let second = fx.auth.headers(&up).await.unwrap();
        assert_eq!(header(&first, "WM_SEC.ACCESS_TOKEN"), Some("wm-token"));
        assert_eq!(header(&first, "WM_SVC.NAME"), Some("Walmart Marketplace"));
        let corr1 = header(&first, "WM_QOS.CORRELATION_ID").unwrap();
        let corr2 = header(&second, "WM_QOS.CORRELATION_ID").unwrap();
        assert!(uuid::Uuid::parse_str(corr1).is_ok(), "{corr1}");
        assert_ne!(corr1, corr2, "a fresh correlation id per call");

        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        let call = &seen[0];
        assert_eq!(call.path, "/v3/token");
        // base64("wm-client:wm-secret")
        assert_eq!(
            call.headers.get("authorization").map(String::as_str),
            Some("Basic d20tY2xpZW50OndtLXNlY3JldA==")
        );
        assert_eq!(
            call.form.get("grant_type").map(String::as_str),
            Some("client_credentials")
        );
        assert!(!call.form.contains_key("client_secret"));
        assert_eq!(
            call.headers.get("wm_svc.name").map(String::as_str),
            Some("Walmart Marketplace")
        );
        let token_corr = call.headers.get("wm_qos.correlation_id").unwrap();
        assert!(uuid::Uuid::parse_str(token_corr).is_ok());
        assert_ne!(token_corr, corr1);
    }

    #[tokio::test]
    async fn outbound_auth_tokens_are_refreshed_before_expiry_and_caches_survive_reloads() {
        let server = TokenServer::start().await;
        server.token("t1", 900);
        server.token("t2", 900);
        server.token("t3", 900);
        let fx = fx();
        let up = upstream(&lwa(server.addr), false);
        let token = |h: Vec<(HeaderName, HeaderValue)>| {
            header(&h, "x-amz-access-token").unwrap().to_owned()
        };
        assert_eq!(token(fx.auth.headers(&up).await.unwrap()), "t1");
        fx.clock.advance(Duration::from_secs(839));
        assert_eq!(token(fx.auth.headers(&up).await.unwrap()), "t1");

        // a reload compiling the same credentials keeps the cached token
        let reloaded = upstream(&lwa(server.addr), false);
        assert!(!Arc::ptr_eq(&up, &reloaded));
        assert_eq!(token(fx.auth.headers(&reloaded).await.unwrap()), "t1");
        assert_eq!(server.seen().len(), 1);

        fx.clock.advance(Duration::from_secs(1));
        assert_eq!(
            token(fx.auth.headers(&reloaded).await.unwrap()),
            "t2",
            "refresh_before (60s) ahead of the 900s expiry"
        );
        assert_eq!(server.seen().len(), 2);

        // a rotated refresh token is new credentials: a new token, fetched with it
        let rotated = upstream(&lwa(server.addr), true);
        assert_eq!(token(fx.auth.headers(&rotated).await.unwrap()), "t3");
        let seen = server.seen();
        assert_eq!(seen.len(), 3);
        assert_eq!(
            seen[2].form.get("refresh_token").map(String::as_str),
            Some("Atzr|rotated")
        );
        assert_eq!(fx.refreshes("success"), 3);

        fx.auth.retain(&[]);
        assert!(fx.auth.lock().is_empty());
    }

    #[tokio::test]
    async fn outbound_auth_a_401_drops_the_token_and_the_next_call_fetches_a_new_one() {
        let server = TokenServer::start().await;
        server.token("revoked", 3600);
        server.token("fresh", 3600);
        let fx = fx();
        let up = upstream(&lwa(server.addr), false);
        let h = fx.auth.headers(&up).await.unwrap();
        assert_eq!(header(&h, "x-amz-access-token"), Some("revoked"));
        fx.auth.refused(&up);
        let h = fx.auth.headers(&up).await.unwrap();
        assert_eq!(header(&h, "x-amz-access-token"), Some("fresh"));
        assert_eq!(server.seen().len(), 2);
    }

    #[tokio::test]
    async fn outbound_auth_token_endpoint_failures_are_errors_without_secrets() {
        let server = TokenServer::start().await;
        server.answer(401, r#"{"error":"invalid_client","echo":"lwa-secret"}"#);
        server.answer(503, "down");
        server.answer(200, r#"{"token":"x"}"#);
        server.stall();
        let fx = fx();
        let up = upstream(
            &lwa(server.addr).replace("refresh_before: 60s", "timeout: 300ms"),
            false,
        );
        let mut failures = Vec::new();
        for _ in 0..4 {
            let err = fx.auth.headers(&up).await.unwrap_err();
            let text = err.to_string();
            for secret in ["lwa-secret", "Atzr|refresh"] {
                assert!(!text.contains(secret), "{text}");
            }
            assert_eq!(&*err.upstream, "market");
            failures.push(err.failure);
        }
        assert_eq!(failures[0], TokenFailure::Refused(401));
        assert_eq!(failures[1], TokenFailure::Unavailable("HTTP 503".into()));
        assert!(matches!(failures[2], TokenFailure::Malformed(_)));
        assert!(
            matches!(&failures[3], TokenFailure::Unavailable(m) if m.contains("timed out")),
            "{:?}",
            failures[3]
        );
        assert_eq!(fx.refreshes("refused"), 1);
        assert_eq!(fx.refreshes("unavailable"), 2);
        assert_eq!(fx.refreshes("malformed"), 1);

        // nothing listening
        drop(server);
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let up = upstream(&lwa(addr), false);
        let err = fx.auth.headers(&up).await.unwrap_err();
        assert!(matches!(err.failure, TokenFailure::Unavailable(_)), "{err}");
    }

    #[tokio::test]
    async fn outbound_auth_shopify_sends_its_static_token_and_plain_upstreams_nothing() {
        let fx = fx();
        let env = Env(HashMap::from([("SHOP", "shpat_abc")]));
        let set = compile_str(
            Path::new("p.yaml"),
            "version: 1\nupstreams:\n  market:\n    endpoints: [\"127.0.0.1:1\"]\n    credentials: {preset: shopify, token: \"${SHOP}\"}\n  erp:\n    endpoints: [\"127.0.0.1:2\"]\nroutes: []\n",
            &CompileEnv {
                secrets: Arc::new(env),
                ..CompileEnv::default()
            },
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let erp = set.upstreams.iter().find(|u| &*u.name == "erp").unwrap();
        let shop = set.upstreams.iter().find(|u| &*u.name == "market").unwrap();
        assert!(fx.auth.headers(erp).await.unwrap().is_empty());
        let h = fx.auth.headers(shop).await.unwrap();
        assert_eq!(header(&h, "X-Shopify-Access-Token"), Some("shpat_abc"));
        fx.auth.refused(shop);
        assert_eq!(fx.auth.headers(shop).await.unwrap(), h);
        assert_eq!(fx.refreshes("success"), 0);
    }
}
