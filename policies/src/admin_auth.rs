//! Authentication of the admin listener, without any listener: the token (a secret reference
//! checked when the file is compiled), its constant-time check, and the browser sessions that
//! signing in with the token opens. The gateway's admin layer asks [`AdminGuard`] and answers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::Clock;
use crate::secret::{self, Secret, SecretSource};
use crate::spec::AdminAuthSpec;

/// The shortest token accepted: long enough that guessing it through the listener is hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

/// How long a browser session lasts after signing in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The most sessions kept at once; past it the ones closest to expiry are dropped.
const MAX_SESSIONS: usize = 1024;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "gateway_admin";

/// The compiled `listeners.admin_auth`: the resolved token and what it protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAuth {
    /// The token (never logged: `Secret` hides it from `Debug`).
    pub token: Secret,
    /// Whether `/metrics` needs the token too.
    pub protect_metrics: bool,
}

/// Whether a resolved value is usable as the admin token; the message never shows the value.
pub fn check_token(value: &str) -> Result<(), String> {
    if value.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "the admin token is {} characters; at least {MIN_TOKEN_LEN} are required (e.g. `openssl rand -hex 32`)",
            value.len()
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the admin token may only hold printable ASCII without spaces (it travels in an Authorization header)"
                .to_owned(),
        );
    }
    Ok(())
}

/// Resolves and checks `listeners.admin_auth`; the error is the message for `/listeners/admin_auth/token`.
pub fn compile(
    spec: &AdminAuthSpec,
    base_dir: &Path,
    secrets: &dyn SecretSource,
) -> Result<AdminAuth, String> {
    if !secret::is_reference(&spec.token) {
        return Err(
            "the admin token must be a ${ENV_VAR} or file: reference, never a literal value"
                .to_owned(),
        );
    }
    let token = secret::expand(&spec.token, base_dir, secrets)?;
    check_token(token.expose())?;
    Ok(AdminAuth {
        token,
        protect_metrics: spec.protect_metrics,
    })
}

/// Reads the admin token from a file (the `--admin-token-file` override), checked like one
/// from the policy file.
pub fn token_from_file(path: &Path) -> Result<Secret, String> {
    let token = secret::expand(
        &format!("file:{}", path.display()),
        Path::new("."),
        &secret::ProcessEnv,
    )?;
    check_token(token.expose())?;
    Ok(token)
}

/// What a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The right token, or a live session.
    Allowed,
    /// Neither a bearer token nor a session cookie.
    Missing,
    /// A token or cookie that does not match.
    Wrong,
}

impl Verdict {
    /// The bounded metric label of a refusal.
    pub fn reason(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Missing => "missing",
            Verdict::Wrong => "wrong",
        }
    }
}

type Tag = [u8; 32];

/// Checks the admin token and keeps the browser sessions of one process.
///
/// Tokens are compared as HMAC-SHA256 tags under a random per-process key (`verify_slice` is
/// constant time, and the tag hides the token's length). A session is a random 256-bit id the
/// browser holds in a cookie; the guard keeps only its tag, so neither the token nor a usable
/// cookie sits in memory to leak, and a session ends at logout, expiry or restart.
pub struct AdminGuard {
    key: [u8; 32],
    token_tag: Tag,
    protect_metrics: bool,
    sessions: Mutex<HashMap<Tag, Duration>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for AdminGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminGuard")
            .field("protect_metrics", &self.protect_metrics)
            .finish_non_exhaustive()
    }
}

impl AdminGuard {
    /// A guard for this token, with a fresh random key.
    pub fn new(auth: &AdminAuth, clock: Arc<dyn Clock>) -> Self {
        let key: [u8; 32] = rand::random();
        let token_tag = tag(&key, auth.token.expose().as_bytes());
        AdminGuard {
            key,
            token_tag,
            protect_metrics: auth.protect_metrics,
            sessions: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Paths anyone may read: liveness and readiness for orchestrators, and the metrics
    /// unless `protect_metrics`.
    pub fn is_open(&self, path: &str) -> bool {
        match path {
            "/healthz" | "/readyz" => true,
            "/metrics" => !self.protect_metrics,
            _ => false,
        }
    }

    /// Whether `presented` is the token, in constant time.
    pub fn token_matches(&self, presented: &[u8]) -> bool {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return false;
        };
        mac.update(presented);
        mac.verify_slice(&self.token_tag).is_ok()
    }

    /// Judges a request by its `Authorization` header values and its `Cookie` header values.
    pub fn check<'a>(
        &self,
        authorization: impl IntoIterator<Item = &'a [u8]>,
        cookies: impl IntoIterator<Item = &'a [u8]>,
    ) -> Verdict {
        let mut presented = false;
        for value in authorization {
            presented = true;
            if let Some(token) = bearer(value)
                && self.token_matches(token)
            {
                return Verdict::Allowed;
            }
        }
        for value in cookies {
            if let Some(id) = session_cookie(value) {
                presented = true;
                if self.session_valid(id) {
                    return Verdict::Allowed;
                }
            }
        }
        if presented {
            Verdict::Wrong
        } else {
            Verdict::Missing
        }
    }

    /// Opens a session; the returned id is the cookie value (hex, not the token).
    pub fn start_session(&self) -> String {
        let id: [u8; 32] = rand::random();
        let id = hex::encode(id);
        let now = self.clock.monotonic();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, expires| *expires > now);
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(t, _)| *t);
            match oldest {
                Some(t) => sessions.remove(&t),
                None => break,
            };
        }
        sessions.insert(tag(&self.key, id.as_bytes()), now + SESSION_TTL);
        id
    }

    /// Whether a cookie value is a live session.
    pub fn session_valid(&self, id: &[u8]) -> bool {
        let t = tag(&self.key, id);
        let now = self.clock.monotonic();
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.get(&t).is_some_and(|expires| *expires > now)
    }

    /// Ends the session of these `Cookie` header values, if any.
    pub fn end_session<'a>(&self, cookies: impl IntoIterator<Item = &'a [u8]>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for value in cookies {
            if let Some(id) = session_cookie(value) {
                sessions.remove(&tag(&self.key, id));
            }
        }
    }
}

fn tag(key: &[u8], data: &[u8]) -> Tag {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        // HMAC takes keys of any length; this arm is never taken
        Err(_) => [0; 32],
    }
}

/// The credentials of `Authorization: Bearer <token>` (the scheme is case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(value[7..].trim_ascii())
}

/// The value of the session cookie in one `Cookie` header value.
fn session_cookie(header: &[u8]) -> Option<&[u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let (name, value) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
        (name == SESSION_COOKIE.as_bytes()).then(|| &value[1..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::secret::tests::FakeEnv;

    const TOKEN: &str = "0123456789abcdef-admin";

    fn guard(protect_metrics: bool) -> (AdminGuard, Arc<ManualClock>) {
        let env = FakeEnv([("ADMIN_TOKEN".to_owned(), TOKEN.to_owned())].into());
        let spec = AdminAuthSpec {
            token: "${ADMIN_TOKEN}".into(),
            protect_metrics,
        };
        let auth = compile(&spec, Path::new("."), &env).unwrap();
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_000)));
        (AdminGuard::new(&auth, clock.clone()), clock)
    }

    #[test]
    fn literal_short_and_unprintable_tokens_are_refused_without_showing_them() {
        let env = FakeEnv(
            [
                ("SHORT".to_owned(), "abc".to_owned()),
                ("SPACED".to_owned(), "0123456789 abcdefgh".to_owned()),
            ]
            .into(),
        );
        let spec = |t: &str| AdminAuthSpec {
            token: t.into(),
            protect_metrics: false,
        };
        let literal = compile(&spec("0123456789abcdefghij"), Path::new("."), &env).unwrap_err();
        assert!(literal.contains("never a literal"), "{literal}");
        assert!(!literal.contains("0123456789abcdefghij"));
        let short = compile(&spec("${SHORT}"), Path::new("."), &env).unwrap_err();
        assert!(short.contains("at least 16"), "{short}");
        assert!(!short.contains("abc"));
        let spaced = compile(&spec("${SPACED}"), Path::new("."), &env).unwrap_err();
        assert!(spaced.contains("printable ASCII"), "{spaced}");
        let unset = compile(&spec("${NOPE}"), Path::new("."), &env).unwrap_err();
        assert_eq!(unset, "environment variable NOPE is not set");
    }

    #[test]
    fn only_the_exact_token_passes() {
        let (g, _) = guard(false);
        assert!(g.token_matches(TOKEN.as_bytes()));
        assert!(!g.token_matches(b"0123456789abcdef-admiN"));
        assert!(!g.token_matches(b"0123456789abcdef-admin "));
        assert!(!g.token_matches(b""));
        let bearer_ok = format!("Bearer {TOKEN}");
        assert_eq!(g.check([bearer_ok.as_bytes()], []), Verdict::Allowed);
        let lower = format!("bearer {TOKEN}");
        assert_eq!(g.check([lower.as_bytes()], []), Verdict::Allowed);
        let basic = format!("Basic {TOKEN}");
        assert_eq!(g.check([basic.as_bytes()], []), Verdict::Wrong);
        assert_eq!(g.check([b"Bearer nope".as_slice()], []), Verdict::Wrong);
        assert_eq!(g.check([], []), Verdict::Missing);
        assert_eq!(g.check([], [b"other=1".as_slice()]), Verdict::Missing);
    }

    #[test]
    fn open_paths_depend_on_protect_metrics() {
        let (open, _) = guard(false);
        assert!(open.is_open("/healthz") && open.is_open("/readyz") && open.is_open("/metrics"));
        assert!(!open.is_open("/config") && !open.is_open("/") && !open.is_open("/metrics/"));
        let (closed, _) = guard(true);
        assert!(closed.is_open("/healthz") && !closed.is_open("/metrics"));
    }

    #[test]
    fn sessions_open_expire_and_end() {
        let (g, clock) = guard(false);
        let id = g.start_session();
        assert!(!id.contains(TOKEN));
        let cookie = format!("theme=dark; {SESSION_COOKIE}={id}");
        assert_eq!(g.check([], [cookie.as_bytes()]), Verdict::Allowed);
        let forged = format!("{SESSION_COOKIE}={}", "0".repeat(64));
        assert_eq!(g.check([], [forged.as_bytes()]), Verdict::Wrong);
        // the token itself is not a session
        let token_cookie = format!("{SESSION_COOKIE}={TOKEN}");
        assert_eq!(g.check([], [token_cookie.as_bytes()]), Verdict::Wrong);

        clock.advance(SESSION_TTL - Duration::from_secs(1));
        assert_eq!(g.check([], [cookie.as_bytes()]), Verdict::Allowed);
        clock.advance(Duration::from_secs(1));
        assert_eq!(g.check([], [cookie.as_bytes()]), Verdict::Wrong);

        let other = g.start_session();
        let other_cookie = format!("{SESSION_COOKIE}={other}");
        assert_eq!(g.check([], [other_cookie.as_bytes()]), Verdict::Allowed);
        g.end_session([other_cookie.as_bytes()]);
        assert_eq!(g.check([], [other_cookie.as_bytes()]), Verdict::Wrong);
    }

    #[test]
    fn sessions_are_bounded() {
        let (g, clock) = guard(false);
        let first = g.start_session();
        for _ in 0..MAX_SESSIONS {
            clock.advance(Duration::from_millis(1));
            g.start_session();
        }
        assert!(!g.session_valid(first.as_bytes()));
        assert!(g.sessions.lock().unwrap().len() <= MAX_SESSIONS);
    }
}
