//! The admin listener's authentication layer: wraps the admin app, so every admin path (this
//! one's and every later one's) needs the token, except `/healthz`, `/readyz` and (unless
//! protected) `/metrics`; and serves the browser sign-in at `/login` and `/logout`.

use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderValue, Method, Response, StatusCode, header};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use policies::admin_auth::{
    AdminAuth, AdminGuard, Credential, SESSION_COOKIE, SESSION_TTL, Verdict,
};
use policies::clock::SystemClock;
use policies::problem::{PROBLEM_CONTENT_TYPE, Problem};
use prometheus::{IntCounterVec, Opts, Registry};

/// The largest sign-in form body read.
const MAX_FORM_BYTES: usize = 4096;

/// An admin app behind the token check. Without a token every request goes straight through
/// (the listener is then loopback only: `server::run` refuses anything else).
pub struct AuthLayer<A> {
    inner: A,
    guard: Option<AdminGuard>,
    failures: IntCounterVec,
    /// Requests and sign-ins let in, by credential: tells when a previous token is unused.
    accepted: IntCounterVec,
    /// `Secure` on the cookie: only when the admin listener speaks TLS (a plain-HTTP browser
    /// would drop a `Secure` cookie).
    secure_cookie: bool,
}

impl<A> AuthLayer<A> {
    /// Wraps `inner`; registers `gateway_admin_auth_failures_total{reason}` and
    /// `gateway_admin_auth_accepted_total{credential}`.
    pub fn new(
        inner: A,
        auth: Option<&AdminAuth>,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let failures = IntCounterVec::new(
            Opts::new(
                "gateway_admin_auth_failures_total",
                "Admin requests refused for a missing or wrong token or session, by reason (missing, wrong, login).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(failures.clone()))?;
        for reason in ["missing", "wrong", "login"] {
            failures.with_label_values(&[reason]);
        }
        let accepted = IntCounterVec::new(
            Opts::new(
                "gateway_admin_auth_accepted_total",
                "Admin requests and sign-ins let in, by credential (token, previous_token, session): once previous_token stops growing on every instance, the rotation can end.",
            ),
            &["credential"],
        )?;
        registry.register(Box::new(accepted.clone()))?;
        let mut credentials = vec![Credential::Token, Credential::Session];
        if auth.is_some_and(|a| a.previous.is_some()) {
            credentials.push(Credential::PreviousToken);
        }
        for c in credentials {
            accepted.with_label_values(&[c.label()]);
        }
        if let Some(a) = auth
            && a.previous.is_some()
        {
            tracing::warn!(
                "admin API: a previous token is accepted too (a rotation is under way): remove it once gateway_admin_auth_accepted_total{{credential=\"previous_token\"}} stops growing"
            );
        }
        Ok(AuthLayer {
            inner,
            guard: auth.map(|a| AdminGuard::new(a, Arc::new(SystemClock::new()))),
            failures,
            accepted,
            secure_cookie: false,
        })
    }

    /// Marks the session cookie `Secure`: the admin listener speaks TLS.
    pub fn with_secure_cookie(mut self) -> Self {
        self.secure_cookie = true;
        self
    }
}

#[async_trait]
impl<A: ServeHttp + Send + Sync> ServeHttp for AuthLayer<A> {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let Some(guard) = &self.guard else {
            return self.inner.response(session).await;
        };
        let req = session.req_header();
        let path = req.uri.path().to_owned();
        let method = req.method.clone();
        let read = method == Method::GET || method == Method::HEAD;
        if path == "/login" && read {
            return login_page(StatusCode::OK, None);
        }
        if path == "/login" && method == Method::POST {
            return self.login(guard, session).await;
        }
        if path == "/logout" && method == Method::POST {
            if let Some(refused) = cross_origin(session) {
                return refused;
            }
            guard.end_session(cookie_values(session));
            let mut resp = redirect("/login");
            set_cookie(&mut resp, "", 0, self.secure_cookie);
            return resp;
        }
        if guard.is_open(&path) {
            return self.inner.response(session).await;
        }
        let req = session.req_header();
        let verdict = guard.check(
            req.headers
                .get_all(header::AUTHORIZATION)
                .iter()
                .map(HeaderValue::as_bytes),
            cookie_values(session),
        );
        if let Verdict::Allowed(credential) = verdict {
            self.accepted.with_label_values(&[credential.label()]).inc();
            return self.inner.response(session).await;
        }
        // A browser opening the status page without a session (none yet: not a failure) is
        // sent to the sign-in form, which lands back on `/`, rather than shown a JSON problem;
        // API clients, which do not ask for HTML, still get the 401.
        let to_sign_in = read && path == "/" && accepts_html(session);
        if to_sign_in && verdict == Verdict::Missing {
            return redirect("/login");
        }
        self.failures.with_label_values(&[verdict.reason()]).inc();
        tracing::warn!(
            path = %path,
            reason = verdict.reason(),
            client = %session.client_addr().map(ToString::to_string).unwrap_or_default(),
            "admin API: request refused without a valid token"
        );
        if to_sign_in {
            // an ended or unknown session: sign in again
            return redirect("/login");
        }
        unauthorized(&path, verdict)
    }
}

impl<A> AuthLayer<A> {
    /// `POST /login` with `token=...`: a session cookie and 303 to `/`, or the form again.
    async fn login(&self, guard: &AdminGuard, session: &mut ServerSession) -> Response<Vec<u8>> {
        if let Some(refused) = cross_origin(session) {
            return refused;
        }
        let is_form = session
            .req_header()
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|t| {
                    t.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        if !is_form {
            return problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "sign in with an application/x-www-form-urlencoded form: token=...",
                "/login",
            );
        }
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_FORM_BYTES {
                        return problem(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "the sign-in form is larger than 4 KiB",
                            "/login",
                        );
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        "the sign-in form could not be read",
                        "/login",
                    );
                }
            }
        }
        let token = form_field(&body, "token").unwrap_or_default();
        let matched = guard.token_matches(&token);
        let Some(credential) = matched.filter(|_| !token.is_empty()) else {
            self.failures.with_label_values(&["login"]).inc();
            tracing::warn!(
                client = %session.client_addr().map(ToString::to_string).unwrap_or_default(),
                "admin API: sign-in with a wrong token"
            );
            return login_page(
                StatusCode::UNAUTHORIZED,
                Some("That is not the admin token."),
            );
        };
        self.accepted.with_label_values(&[credential.label()]).inc();
        let id = guard.start_session();
        let mut resp = redirect("/");
        set_cookie(&mut resp, &id, SESSION_TTL.as_secs(), self.secure_cookie);
        tracing::info!(
            client = %session.client_addr().map(ToString::to_string).unwrap_or_default(),
            credential = credential.label(),
            "admin API: browser signed in"
        );
        resp
    }
}

/// Whether the request asks for HTML (a browser navigating), by its `Accept` header.
fn accepts_html(session: &ServerSession) -> bool {
    session
        .req_header()
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("text/html")))
}

fn cookie_values(session: &ServerSession) -> impl Iterator<Item = &[u8]> {
    session
        .req_header()
        .headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
}

/// A form posted from another site (its `Origin` names another host) is refused: sign-in and
/// sign-out change state, and only the admin's own page should trigger them.
fn cross_origin(session: &ServerSession) -> Option<Response<Vec<u8>>> {
    let headers = &session.req_header().headers;
    let origin = headers.get(header::ORIGIN)?.as_bytes();
    let host = headers
        .get(header::HOST)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    let authority = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"));
    if authority.is_some_and(|a| !host.is_empty() && a.eq_ignore_ascii_case(host)) {
        return None;
    }
    Some(problem(
        StatusCode::FORBIDDEN,
        "a cross-origin form was refused",
        session.req_header().uri.path(),
    ))
}

/// A response of the admin listener: its body, `Content-Type`, `Content-Length`, never cached.
pub(crate) fn with_headers(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Vec<u8>> {
    let len = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn problem(status: StatusCode, detail: &str, path: &str) -> Response<Vec<u8>> {
    let body = Problem::status(status)
        .with_detail(detail)
        .to_json(path, "-");
    with_headers(status, PROBLEM_CONTENT_TYPE, body.to_vec())
}

/// 401 problem+json with `WWW-Authenticate: Bearer`; it says how to sign in, never what was sent.
fn unauthorized(path: &str, verdict: Verdict) -> Response<Vec<u8>> {
    let detail = match verdict {
        Verdict::Wrong => {
            "the admin token or session is not valid: send Authorization: Bearer <token>, or sign in at /login"
        }
        _ => {
            "the admin API needs a token: send Authorization: Bearer <token>, or sign in at /login"
        }
    };
    let mut resp = problem(StatusCode::UNAUTHORIZED, detail, path);
    let challenge = match verdict {
        Verdict::Wrong => "Bearer realm=\"gateway admin\", error=\"invalid_token\"",
        _ => "Bearer realm=\"gateway admin\"",
    };
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    resp
}

fn redirect(to: &'static str) -> Response<Vec<u8>> {
    let mut resp = with_headers(StatusCode::SEE_OTHER, "text/plain", Vec::new());
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    resp
}

/// The session cookie: HttpOnly (no script reads it), SameSite=Strict (no other site sends it).
fn set_cookie(resp: &mut Response<Vec<u8>>, value: &str, max_age: u64, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
}

/// The sign-in form. It holds no token (the field starts empty) and posts to `/login`, so the
/// token travels in a request body, never in a URL.
fn login_page(status: StatusCode, message: Option<&'static str>) -> Response<Vec<u8>> {
    let message = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{m}</p>\n"))
        .unwrap_or_default();
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Gateway admin: sign in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto}}label,input,button{{display:block;width:100%;margin:.4rem 0}}.error{{color:#b00020}}</style>
</head>
<body>
<h1>Gateway admin</h1>
{message}<form method="post" action="/login">
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
</body>
</html>
"#
    );
    let mut resp = with_headers(status, "text/html; charset=utf-8", html.into_bytes());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// The decoded value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<Vec<u8>> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_field(b"a=1&token=ab%2Bc+d%3D&x", "token").unwrap(),
            b"ab+c d="
        );
        assert_eq!(form_field(b"token=", "token").unwrap(), b"");
        assert_eq!(form_field(b"tok=1", "token"), None);
        assert_eq!(form_field(b"token=100%", "token").unwrap(), b"100%");
    }

    #[test]
    fn the_login_page_posts_a_password_field_and_holds_no_value() {
        let page = login_page(StatusCode::OK, None);
        let html = String::from_utf8_lossy(page.body());
        assert!(html.contains(r#"method="post" action="/login""#));
        assert!(html.contains(r#"type="password""#));
        assert!(!html.contains("value="));
    }

    #[test]
    fn cookies_are_http_only_and_same_site_strict() {
        let mut resp = redirect("/");
        set_cookie(&mut resp, "abc", 60, false);
        let c = resp.headers()[header::SET_COOKIE].to_str().unwrap();
        assert_eq!(
            c,
            "gateway_admin=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=60"
        );
        set_cookie(&mut resp, "abc", 60, true);
        assert!(
            resp.headers()[header::SET_COOKIE]
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
    }
}
