//! Fetching small documents over HTTP (an identity provider's JWKS), behind a trait so that unit
//! tests hand policies in-process values instead of running a server.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

/// Why a fetch failed. Messages never carry response bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The whole exchange did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The server answered with a non-success status.
    #[error("the server answered HTTP {0}")]
    Status(u16),
    /// The body exceeded the limit.
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
    /// Connecting, TLS, or reading failed.
    #[error("{0}")]
    Transport(String),
}

/// A boxed fetch in flight.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Bytes, FetchError>> + Send + 'a>>;

/// An HTTP GET of a small document.
pub trait HttpGet: Send + Sync + fmt::Debug {
    /// Fetches `url`, bounded by `timeout` for the whole exchange and `max_bytes` for the body.
    fn get<'a>(&'a self, url: &'a str, timeout: Duration, max_bytes: usize) -> FetchFuture<'a>;
}

/// The real client: reqwest over rustls, certificates verified against the web PKI roots, no
/// redirects followed (a JWKS URL is configured exactly), and no pooled connections, because a
/// fetch may run on a short-lived runtime (the warm-up before serving) whose connections must
/// not be reused from another one.
#[derive(Default, Debug)]
pub struct ReqwestGet {
    client: LazyClient,
}

impl ReqwestGet {
    fn client(&self) -> Result<&reqwest::Client, FetchError> {
        self.client.get().map_err(FetchError::Transport)
    }
}

/// The HTTP client of the gateway's own calls (JWKS, marketplace tokens, eBay's keys), built on
/// first use: rustls with the web PKI roots, no redirects followed (every URL is configured
/// exactly), and no pooled connections, because a call may run on a short-lived runtime (the
/// warm-up before serving) whose connections must not be reused from another one, and these
/// calls are rare.
#[derive(Default)]
pub struct LazyClient(OnceLock<Result<reqwest::Client, String>>);

impl fmt::Debug for LazyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LazyClient")
    }
}

impl LazyClient {
    /// The client, or why it could not be built (the same answer on every call).
    pub fn get(&self) -> Result<&reqwest::Client, String> {
        self.0
            .get_or_init(|| {
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .pool_max_idle_per_host(0)
                    .user_agent(concat!("retail-gateway/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot build the HTTP client: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl HttpGet for ReqwestGet {
    fn get<'a>(&'a self, url: &'a str, timeout: Duration, max_bytes: usize) -> FetchFuture<'a> {
        Box::pin(async move {
            let client = self.client()?;
            let exchange = async {
                let mut resp = client
                    .get(url)
                    .header(http::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| FetchError::Transport(describe(&e)))?;
                if !resp.status().is_success() {
                    return Err(FetchError::Status(resp.status().as_u16()));
                }
                if resp
                    .content_length()
                    .is_some_and(|len| len > max_bytes as u64)
                {
                    return Err(FetchError::TooLarge(max_bytes));
                }
                let mut body = BytesMut::new();
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| FetchError::Transport(describe(&e)))?
                {
                    if body.len() + chunk.len() > max_bytes {
                        return Err(FetchError::TooLarge(max_bytes));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body.freeze())
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(result) => result,
                Err(_) => Err(FetchError::Timeout(timeout)),
            }
        })
    }
}

/// reqwest's error with its sources (the useful part, such as "connection refused", is there).
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

/// Whether a JWKS-style URL is acceptable: `https://`, or `http://` to a loopback host only
/// (a development identity provider), so keys never travel unauthenticated over a network.
pub fn check_key_url(url: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a valid URL: {e}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" => {
            let host = parsed.host_str().unwrap_or_default();
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(format!(
                    "{url:?} must use https (plain http is accepted only for loopback hosts)"
                ));
            }
        }
        other => return Err(format!("{url:?}: scheme {other:?} is not http(s)")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the URL must not carry credentials".into());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers fetches from a script of results (the last one repeats) and counts them.
    #[derive(Debug, Default)]
    pub struct ScriptedGet {
        answers: Mutex<VecDeque<Result<Bytes, FetchError>>>,
        last: Mutex<Option<Result<Bytes, FetchError>>>,
        /// How many fetches were made.
        pub calls: AtomicUsize,
    }

    impl ScriptedGet {
        pub fn push(&self, answer: Result<&str, FetchError>) {
            let answer = answer.map(|s| Bytes::copy_from_slice(s.as_bytes()));
            self.answers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(answer);
        }

        pub fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl HttpGet for ScriptedGet {
        fn get<'a>(&'a self, _url: &'a str, _t: Duration, _max: usize) -> FetchFuture<'a> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let next = self
                .answers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            let answer = match next {
                Some(a) => {
                    *last = Some(a.clone());
                    a
                }
                None => last
                    .clone()
                    .unwrap_or(Err(FetchError::Transport("no answer scripted".into()))),
            };
            Box::pin(async move {
                // let concurrent callers pile up behind a fetch in flight
                tokio::task::yield_now().await;
                answer
            })
        }
    }

    #[test]
    fn key_urls_must_be_https_except_on_loopback() {
        assert!(check_key_url("https://idp.example.com/.well-known/jwks.json").is_ok());
        assert!(check_key_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_key_url("http://localhost/jwks").is_ok());
        assert!(check_key_url("http://[::1]:1/jwks").is_ok());
        assert!(check_key_url("http://idp.example.com/jwks").is_err());
        assert!(check_key_url("http://10.0.0.1/jwks").is_err());
        assert!(check_key_url("ftp://idp.example.com/jwks").is_err());
        assert!(check_key_url("https://user:pw@idp.example.com/jwks").is_err());
        assert!(check_key_url("not a url").is_err());
    }
}
