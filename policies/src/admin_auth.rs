//! Authentication of the admin listener, without any listener: the token (a secret reference
//! checked when the file is compiled) and, during a rotation, the previous one; their
//! constant-time check; and the browser sessions that signing in with a token opens. The
//! gateway's admin layer asks [`AdminGuard`] and answers.

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

/// The compiled `listeners.admin_auth`: the resolved tokens and what they protect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAuth {
    /// The token (never logged: `Secret` hides it from `Debug`).
    pub token: Secret,
    /// The token being retired during a rotation, accepted as well until it is removed.
    pub previous: Option<Secret>,
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

/// What is wrong with `listeners.admin_auth`: the field (`token` or `previous_token`) and the
/// message, which never shows a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAuthError {
    /// The field of `listeners.admin_auth` at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for AdminAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn resolve(
    field: &'static str,
    reference: &str,
    base_dir: &Path,
    secrets: &dyn SecretSource,
) -> Result<Secret, AdminAuthError> {
    let err = |message: String| AdminAuthError { field, message };
    if !secret::is_reference(reference) {
        return Err(err(
            "the admin token must be a ${ENV_VAR} or file: reference, never a literal value"
                .to_owned(),
        ));
    }
    let token = secret::expand(reference, base_dir, secrets).map_err(err)?;
    check_token(token.expose()).map_err(err)?;
    Ok(token)
}

/// Two equal tokens are a rotation written wrong (the new token was not put in): refused, so
/// the operator notices before removing the "previous" one locks everybody out.
fn check_distinct(token: &Secret, previous: Option<&Secret>) -> Result<(), String> {
    if previous.is_some_and(|p| p == token) {
        return Err("the previous admin token is the same as the token: put the new token in `token` and the old one in `previous_token`".to_owned());
    }
    Ok(())
}

/// Resolves and checks `listeners.admin_auth`.
pub fn compile(
    spec: &AdminAuthSpec,
    base_dir: &Path,
    secrets: &dyn SecretSource,
) -> Result<AdminAuth, AdminAuthError> {
    let token = resolve("token", &spec.token, base_dir, secrets)?;
    let previous = match &spec.previous_token {
        Some(p) => Some(resolve("previous_token", p, base_dir, secrets)?),
        None => None,
    };
    check_distinct(&token, previous.as_ref()).map_err(|message| AdminAuthError {
        field: "previous_token",
        message,
    })?;
    Ok(AdminAuth {
        token,
        previous,
        protect_metrics: spec.protect_metrics,
    })
}

/// Reads the admin tokens from a file (the `--admin-token-file` override), checked like those
/// of the policy file: the token on the first line and, during a rotation, the previous token
/// on a second line. Blank lines are ignored; a third token is refused.
pub fn tokens_from_file(path: &Path) -> Result<(Secret, Option<Secret>), String> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    let mut lines = raw.lines().filter(|l| !l.is_empty());
    let token = lines
        .next()
        .ok_or_else(|| "the admin token file is empty".to_owned())?;
    check_token(token).map_err(|e| format!("line 1: {e}"))?;
    let token = Secret::new(token);
    let previous = match lines.next() {
        Some(p) => {
            check_token(p).map_err(|e| format!("the previous token (line 2): {e}"))?;
            Some(Secret::new(p))
        }
        None => None,
    };
    if lines.next().is_some() {
        return Err("the admin token file holds more than two tokens: the token on the first line and, during a rotation, the previous one on the second".to_owned());
    }
    check_distinct(&token, previous.as_ref())?;
    Ok((token, previous))
}

/// Which credential let a request in: counted, so an operator sees when the previous token
/// is no longer used and can be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The token.
    Token,
    /// The previous token (during a rotation).
    PreviousToken,
    /// A browser session cookie.
    Session,
}

impl Credential {
    /// The bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            Credential::Token => "token",
            Credential::PreviousToken => "previous_token",
            Credential::Session => "session",
        }
    }
}

/// What a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A valid token, or a live session.
    Allowed(Credential),
    /// Neither a bearer token nor a session cookie.
    Missing,
    /// A token or cookie that does not match.
    Wrong,
}

impl Verdict {
    /// The bounded metric label of a refusal.
    pub fn reason(self) -> &'static str {
        match self {
            Verdict::Allowed(_) => "allowed",
            Verdict::Missing => "missing",
            Verdict::Wrong => "wrong",
        }
    }
}

type Tag = [u8; 32];

/// Checks the admin tokens and keeps the browser sessions of one process.
///
/// Tokens are compared as HMAC-SHA256 tags under a random per-process key (`verify_slice` is
/// constant time, and the tag hides the token's length). With a previous token, a presented
/// value is always checked against both tags, so the time taken does not tell which one (or
/// whether either) matched. A session is a random 256-bit id the browser holds in a cookie; the
/// guard keeps only its tag, so neither a token nor a usable cookie sits in memory to leak, and
/// a session ends at logout, expiry or restart (whichever token opened it).
pub struct AdminGuard {
    key: [u8; 32],
    token_tag: Tag,
    /// The previous token's tag; without one, a random tag no input is known to produce, so
    /// the check does the same work either way.
    previous_tag: Tag,
    has_previous: bool,
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
        let previous_tag = match &auth.previous {
            Some(p) => tag(&key, p.expose().as_bytes()),
            None => rand::random(),
        };
        AdminGuard {
            key,
            token_tag,
            previous_tag,
            has_previous: auth.previous.is_some(),
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

    /// Which token `presented` is, if any, in constant time: both tags are always compared.
    pub fn token_matches(&self, presented: &[u8]) -> Option<Credential> {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return None;
        };
        mac.update(presented);
        let current = mac.clone().verify_slice(&self.token_tag).is_ok();
        let previous = mac.verify_slice(&self.previous_tag).is_ok() & self.has_previous;
        // `&`/`|` rather than an early return: no branch on which comparison matched first
        match (current, previous) {
            (true, _) => Some(Credential::Token),
            (false, true) => Some(Credential::PreviousToken),
            (false, false) => None,
        }
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
                && let Some(credential) = self.token_matches(token)
            {
                return Verdict::Allowed(credential);
            }
        }
        for value in cookies {
            if let Some(id) = session_cookie(value) {
                presented = true;
                if self.session_valid(id) {
                    return Verdict::Allowed(Credential::Session);
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
            previous_token: None,
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
            previous_token: None,
            protect_metrics: false,
        };
        let err = |s: AdminAuthSpec| {
            let e = compile(&s, Path::new("."), &env).unwrap_err();
            assert_eq!(e.field, "token");
            e.message
        };
        let literal = err(spec("0123456789abcdefghij"));
        assert!(literal.contains("never a literal"), "{literal}");
        assert!(!literal.contains("0123456789abcdefghij"));
        let short = err(spec("${SHORT}"));
        assert!(short.contains("at least 16"), "{short}");
        assert!(!short.contains("abc"));
        let spaced = err(spec("${SPACED}"));
        assert!(spaced.contains("printable ASCII"), "{spaced}");
        let unset = err(spec("${NOPE}"));
        assert_eq!(unset, "environment variable NOPE is not set");

        // the previous token obeys the same rules, and names its own field
        let env = FakeEnv(
            [
                ("NEW".to_owned(), TOKEN.to_owned()),
                ("SHORT".to_owned(), "abc".to_owned()),
            ]
            .into(),
        );
        let with_previous = |p: &str| AdminAuthSpec {
            token: "${NEW}".into(),
            previous_token: Some(p.into()),
            protect_metrics: false,
        };
        for (previous, expected) in [
            ("0123456789abcdefghij", "never a literal"),
            ("${SHORT}", "at least 16"),
            ("${NEW}", "the same as the token"),
        ] {
            let e = compile(&with_previous(previous), Path::new("."), &env).unwrap_err();
            assert_eq!(e.field, "previous_token", "{previous}");
            assert!(e.message.contains(expected), "{}", e.message);
            assert!(!e.message.contains(TOKEN) && !e.message.contains("abc"));
        }
    }

    #[test]
    fn only_the_exact_token_passes() {
        let (g, _) = guard(false);
        assert_eq!(g.token_matches(TOKEN.as_bytes()), Some(Credential::Token));
        assert_eq!(g.token_matches(b"0123456789abcdef-admiN"), None);
        assert_eq!(g.token_matches(b"0123456789abcdef-admin "), None);
        assert_eq!(g.token_matches(b""), None);
        let bearer_ok = format!("Bearer {TOKEN}");
        let allowed = Verdict::Allowed(Credential::Token);
        assert_eq!(g.check([bearer_ok.as_bytes()], []), allowed);
        let lower = format!("bearer {TOKEN}");
        assert_eq!(g.check([lower.as_bytes()], []), allowed);
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
        let allowed = Verdict::Allowed(Credential::Session);
        assert_eq!(g.check([], [cookie.as_bytes()]), allowed);
        let forged = format!("{SESSION_COOKIE}={}", "0".repeat(64));
        assert_eq!(g.check([], [forged.as_bytes()]), Verdict::Wrong);
        // the token itself is not a session
        let token_cookie = format!("{SESSION_COOKIE}={TOKEN}");
        assert_eq!(g.check([], [token_cookie.as_bytes()]), Verdict::Wrong);

        clock.advance(SESSION_TTL - Duration::from_secs(1));
        assert_eq!(g.check([], [cookie.as_bytes()]), allowed);
        clock.advance(Duration::from_secs(1));
        assert_eq!(g.check([], [cookie.as_bytes()]), Verdict::Wrong);

        let other = g.start_session();
        let other_cookie = format!("{SESSION_COOKIE}={other}");
        assert_eq!(g.check([], [other_cookie.as_bytes()]), allowed);
        g.end_session([other_cookie.as_bytes()]);
        assert_eq!(g.check([], [other_cookie.as_bytes()]), Verdict::Wrong);
    }

    const OLD: &str = "fedcba9876543210-retiring";

    #[test]
    fn during_a_rotation_both_tokens_pass_and_say_which_they_are() {
        let env = FakeEnv(
            [
                ("NEW".to_owned(), TOKEN.to_owned()),
                ("OLD".to_owned(), OLD.to_owned()),
            ]
            .into(),
        );
        let spec = AdminAuthSpec {
            token: "${NEW}".into(),
            previous_token: Some("${OLD}".into()),
            protect_metrics: false,
        };
        let auth = compile(&spec, Path::new("."), &env).unwrap();
        assert!(!format!("{auth:?}").contains(OLD));
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_000)));
        let g = AdminGuard::new(&auth, clock);
        assert_eq!(g.token_matches(TOKEN.as_bytes()), Some(Credential::Token));
        assert_eq!(
            g.token_matches(OLD.as_bytes()),
            Some(Credential::PreviousToken)
        );
        assert_eq!(g.token_matches(&OLD.as_bytes()[1..]), None);
        assert_eq!(g.token_matches(b""), None);
        let old = format!("Bearer {OLD}");
        assert_eq!(
            g.check([old.as_bytes()], []),
            Verdict::Allowed(Credential::PreviousToken)
        );

        // without a previous token, the filler tag matches nothing (not even all zeros)
        let (single, _) = guard(false);
        assert_eq!(single.token_matches(OLD.as_bytes()), None);
        assert_eq!(single.token_matches(&[0; 32]), None);
    }

    #[test]
    fn a_token_file_holds_the_token_and_optionally_the_previous_one() {
        let dir = std::env::temp_dir().join(format!("admin-token-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let (t, p) = tokens_from_file(&write("one", &format!("{TOKEN}\n"))).unwrap();
        assert_eq!((t.expose(), p), (TOKEN, None));
        let (t, p) = tokens_from_file(&write("two", &format!("{TOKEN}\r\n\n{OLD}\n"))).unwrap();
        assert_eq!(
            (t.expose(), p.as_ref().map(Secret::expose)),
            (TOKEN, Some(OLD))
        );
        for (name, text, expected) in [
            ("empty", "\n".to_owned(), "is empty"),
            (
                "three",
                format!("{TOKEN}\n{OLD}\n{OLD}x\n"),
                "more than two",
            ),
            (
                "same",
                format!("{TOKEN}\n{TOKEN}\n"),
                "the same as the token",
            ),
            (
                "short",
                format!("{TOKEN}\nabc\n"),
                "previous token (line 2)",
            ),
            ("spaced", format!("{TOKEN} {OLD}\n"), "printable ASCII"),
        ] {
            let e = tokens_from_file(&write(name, &text)).unwrap_err();
            assert!(e.contains(expected), "{name}: {e}");
            assert!(!e.contains(TOKEN) && !e.contains(OLD), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
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
