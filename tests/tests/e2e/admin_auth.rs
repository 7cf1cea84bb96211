//! Authentication of the admin listener, against the real binary: the bearer token, the open
//! health paths, `protect_metrics`, the loopback rule without a token, the browser sign-in
//! cookie, and tokens read from a file.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::{Gateway, RawResponse, Start, TempDir, gateway_binary, raw_request};

/// Contains `+`, `/` and `=` so the sign-in form's URL-decoding is exercised.
const TOKEN: &str = "adm1n+t0ken/for=tests-4f9c2a7e";
const WRONG: &str = "wrong-token-d41d8cd98f00b204";

fn policy(admin_auth: &str) -> String {
    format!(
        "version: 1\nlisteners:\n  http: 127.0.0.1:0\n  admin: 127.0.0.1:0\n{admin_auth}\
         upstreams:\n  erp:\n    endpoints: [\"127.0.0.1:9\"]\nroutes: []\n"
    )
}

fn with_env_token(protect_metrics: bool) -> Gateway {
    let yaml = policy(&format!(
        "  admin_auth:\n    token: \"${{ADMIN_TOKEN}}\"\n    protect_metrics: {protect_metrics}\n"
    ));
    Gateway::start_with(
        &yaml,
        Start {
            env: vec![("ADMIN_TOKEN".into(), TOKEN.into())],
            ..Start::default()
        },
    )
    .unwrap()
}

fn request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    raw_request(admin, req.as_bytes()).unwrap()
}

fn get(admin: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    request(admin, "GET", path, headers, "")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn body(r: &RawResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn assert_401(r: &RawResponse) {
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{r:?}"
    );
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{r:?}"
    );
    assert_eq!(r.json().unwrap()["status"], 401);
}

#[test]
fn every_admin_path_but_health_and_metrics_needs_the_bearer_token() {
    let gw = with_env_token(false);
    let a = gw.admin;

    for path in ["/config", "/upstreams", "/no-such-path", "/"] {
        assert_401(&get(a, path, &[]));
    }
    let ok = get(a, "/config", &[("Authorization", &bearer(TOKEN))]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.json().unwrap()["version"]["hash"].is_string());
    let ok = get(
        a,
        "/upstreams",
        &[("authorization", &format!("bearer {TOKEN}"))],
    );
    assert_eq!(ok.status, 200, "{ok:?}");

    let wrong = get(a, "/config", &[("Authorization", &bearer(WRONG))]);
    assert_401(&wrong);
    let text = format!("{:?} {}", wrong.headers, body(&wrong));
    assert!(!text.contains(WRONG) && !text.contains(TOKEN), "{text}");
    // a token that is only a prefix, or sent under another scheme, is no token
    assert_401(&get(
        a,
        "/config",
        &[("Authorization", &bearer(&TOKEN[..20]))],
    ));
    assert_401(&get(
        a,
        "/config",
        &[("Authorization", &format!("Basic {TOKEN}"))],
    ));
    // the token in the URL is not accepted either
    assert_401(&get(a, &format!("/config?token={TOKEN}"), &[]));

    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(a, path, &[]).status, 200, "{path}");
    }
    // missing: 5 paths + the query one; wrong: wrong token, prefix, Basic
    gw.wait_metric("gateway_admin_auth_failures_total{reason=\"missing\"}", 5.0)
        .unwrap();
    gw.wait_metric("gateway_admin_auth_failures_total{reason=\"wrong\"}", 3.0)
        .unwrap();
    assert_eq!(
        gw.log_events("admin API: token required (open: /healthz /readyz /metrics)")
            .len(),
        1,
        "{}",
        gw.output()
    );
    let out = gw.output();
    assert!(!out.contains(TOKEN) && !out.contains(WRONG), "{out}");
}

#[test]
fn protect_metrics_closes_metrics_but_not_health() {
    let gw = with_env_token(true);
    let a = gw.admin;
    assert_401(&get(a, "/metrics", &[]));
    let m = get(a, "/metrics", &[("Authorization", &bearer(TOKEN))]);
    assert_eq!(m.status, 200);
    assert!(
        body(&m).contains("gateway_admin_auth_failures_total{reason=\"missing\"} 1"),
        "{}",
        body(&m)
    );
    assert_eq!(get(a, "/healthz", &[]).status, 200);
    assert_eq!(get(a, "/readyz", &[]).status, 200);
}

#[test]
fn without_a_token_the_admin_listener_is_loopback_only() {
    // on loopback: open, and the log says why
    let gw = Gateway::start(&policy("")).unwrap();
    assert_eq!(get(gw.admin, "/config", &[]).status, 200);
    assert_eq!(
        gw.log_events("admin API: no token configured, listening on loopback only")
            .len(),
        1,
        "{}",
        gw.output()
    );
    // /login does not exist without a token
    assert_eq!(get(gw.admin, "/login", &[]).status, 404);

    // on every interface: refused at start, with the fix in the message
    let dir = TempDir::new("admin-auth-exposed").unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, policy("")).unwrap();
    let out = Command::new(gateway_binary().unwrap())
        .arg("run")
        .arg("-c")
        .arg(&file)
        .args(["--http", "127.0.0.1:0", "--admin", "0.0.0.0:0"])
        .env_remove("GATEWAY_ADMIN_TOKEN_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is not a loopback address and no admin token is configured"),
        "{stderr}"
    );
    assert!(stderr.contains("listeners.admin_auth.token"), "{stderr}");
}

#[test]
fn a_literal_token_in_the_file_is_an_error_with_its_location() {
    let dir = TempDir::new("admin-auth-literal").unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(
        &file,
        policy(&format!("  admin_auth:\n    token: {WRONG}\n")),
    )
    .unwrap();
    let out = Command::new(gateway_binary().unwrap())
        .arg("check")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout
            .contains("policy.yaml:6:12: the admin token must be a ${ENV_VAR} or file: reference"),
        "{stdout}"
    );
    assert!(!stdout.contains(WRONG), "{stdout}");
}

/// The value of `gateway_admin=` in a Set-Cookie header.
fn cookie_value(set_cookie: &str) -> &str {
    set_cookie
        .split(';')
        .next()
        .and_then(|p| p.strip_prefix("gateway_admin="))
        .unwrap()
}

fn form(token: &str) -> String {
    let mut out = String::from("token=");
    for b in token.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[test]
fn browsers_sign_in_to_a_strict_http_only_cookie_that_is_not_the_token() {
    let gw = with_env_token(false);
    let a = gw.admin;
    let form_type = ("Content-Type", "application/x-www-form-urlencoded");

    let page = get(a, "/login", &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let html = body(&page);
    assert!(
        html.contains("method=\"post\"") && html.contains("type=\"password\""),
        "{html}"
    );
    assert!(!html.contains(TOKEN));

    let wrong = request(a, "POST", "/login", &[form_type], &form(WRONG));
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
    assert!(body(&wrong).contains("not the admin token"));
    assert!(!body(&wrong).contains(WRONG));
    gw.wait_metric("gateway_admin_auth_failures_total{reason=\"login\"}", 1.0)
        .unwrap();

    // a form posted from another site is refused even with the right token
    let cross = request(
        a,
        "POST",
        "/login",
        &[form_type, ("Origin", "http://evil.example")],
        &form(TOKEN),
    );
    assert_eq!(cross.status, 403);
    assert!(cross.header("set-cookie").is_none());

    let origin = format!("http://{a}");
    let signed_in = request(
        a,
        "POST",
        "/login",
        &[form_type, ("Origin", &origin)],
        &form(TOKEN),
    );
    assert_eq!(signed_in.status, 303, "{signed_in:?}");
    assert_eq!(signed_in.header("location"), Some("/"));
    let set_cookie = signed_in.header("set-cookie").unwrap().to_owned();
    let attrs: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
    assert!(attrs.contains(&"HttpOnly"), "{set_cookie}");
    assert!(attrs.contains(&"SameSite=Strict"), "{set_cookie}");
    assert!(attrs.contains(&"Path=/"), "{set_cookie}");
    // the admin listener is plain HTTP: a Secure cookie would never be sent back
    assert!(!attrs.contains(&"Secure"), "{set_cookie}");
    let session = cookie_value(&set_cookie).to_owned();
    assert!(session.len() >= 32, "{set_cookie}");
    assert!(!set_cookie.contains(TOKEN) && !set_cookie.contains(&form(TOKEN)[6..]));

    let cookie = format!("theme=dark; gateway_admin={session}");
    let ok = get(a, "/config", &[("Cookie", &cookie)]);
    assert_eq!(ok.status, 200, "{ok:?}");
    // a made-up session, or the token as the cookie, opens nothing
    assert_401(&get(
        a,
        "/config",
        &[("Cookie", &format!("gateway_admin={}", "a".repeat(64)))],
    ));
    assert_401(&get(
        a,
        "/config",
        &[("Cookie", &format!("gateway_admin={TOKEN}"))],
    ));

    let out = request(a, "POST", "/logout", &[("Cookie", &cookie)], "");
    assert_eq!(out.status, 303);
    let cleared = out.header("set-cookie").unwrap();
    assert!(
        cleared.starts_with("gateway_admin=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // the session is over on the server too, not only in the browser
    assert_401(&get(a, "/config", &[("Cookie", &cookie)]));
    assert!(!gw.output().contains(TOKEN));
}

#[test]
fn the_token_can_come_from_a_file_or_the_command_line_override() {
    let dir = TempDir::new("admin-auth-file").unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();

    let yaml = policy(&format!(
        "  admin_auth:\n    token: \"file:{}\"\n",
        token_file.display()
    ));
    let gw = Gateway::start(&yaml).unwrap();
    assert_401(&get(gw.admin, "/config", &[]));
    assert_eq!(
        get(gw.admin, "/config", &[("Authorization", &bearer(TOKEN))]).status,
        200
    );
    drop(gw);

    // GATEWAY_ADMIN_TOKEN_FILE (= --admin-token-file) protects a file without admin_auth
    let gw = Gateway::start_with(
        &policy(""),
        Start {
            env: vec![(
                "GATEWAY_ADMIN_TOKEN_FILE".into(),
                token_file.display().to_string(),
            )],
            ..Start::default()
        },
    )
    .unwrap();
    assert_401(&get(gw.admin, "/config", &[]));
    assert_eq!(
        get(gw.admin, "/config", &[("Authorization", &bearer(TOKEN))]).status,
        200
    );
}

/// A real headless Chromium signs in through the form (tests/browser/admin_login.py): the
/// cookie is HttpOnly and SameSite=Strict, invisible to script, opens `/config`, and ends at
/// sign-out; the token never appears in a URL or the page.
#[test]
fn a_real_browser_signs_in_through_the_form() {
    let gw = with_env_token(false);
    let out = Command::new(tests::browser_python())
        .arg(tests::workspace_root().join("tests/browser/admin_login.py"))
        .env("ADMIN_URL", format!("http://{}", gw.admin))
        .env("ADMIN_TOKEN", TOKEN)
        .env(
            "CHROMIUM",
            std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
        )
        .output()
        .expect("python3 with playwright (scripts/system-deps.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ok: signed in"),
        "{stdout}\n{stderr}\n{}",
        gw.output()
    );
}

/// The token being retired during a rotation (issue 16).
const OLD: &str = "old-adm1n-t0ken-9b1e77d0c3";

/// `/config` with this bearer token: its status.
fn config_status(admin: SocketAddr, token: &str) -> u16 {
    get(admin, "/config", &[("Authorization", &bearer(token))]).status
}

/// Signs in through the form with `token`; the session cookie header value.
fn sign_in(admin: SocketAddr, token: &str) -> String {
    let origin = format!("http://{admin}");
    let r = request(
        admin,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", &origin),
        ],
        &form(token),
    );
    assert_eq!(r.status, 303, "{r:?}");
    format!(
        "gateway_admin={}",
        cookie_value(r.header("set-cookie").unwrap())
    )
}

#[test]
fn two_tokens_are_valid_during_a_rotation_and_the_old_one_is_refused_after_it() {
    let env = vec![
        ("ADMIN_TOKEN".to_owned(), TOKEN.to_owned()),
        ("ADMIN_TOKEN_PREVIOUS".to_owned(), OLD.to_owned()),
    ];
    let rotating = policy(
        "  admin_auth:\n    token: \"${ADMIN_TOKEN}\"\n    previous_token: \"${ADMIN_TOKEN_PREVIOUS}\"\n",
    );
    let gw = Gateway::start_with(
        &rotating,
        Start {
            env: env.clone(),
            ..Start::default()
        },
    )
    .unwrap();
    let a = gw.admin;
    assert_eq!(config_status(a, TOKEN), 200);
    assert_eq!(config_status(a, OLD), 200);
    assert_401(&get(a, "/config", &[("Authorization", &bearer(WRONG))]));
    // a prefix of either token is no token
    assert_401(&get(
        a,
        "/config",
        &[("Authorization", &bearer(&OLD[..20]))],
    ));
    // a browser may sign in with the old token too; its session opens the API
    let old_session = sign_in(a, OLD);
    assert_eq!(get(a, "/config", &[("Cookie", &old_session)]).status, 200);
    // what let each request in is counted, so the operator sees when the old token is unused
    gw.wait_metric(
        "gateway_admin_auth_accepted_total{credential=\"previous_token\"}",
        2.0,
    )
    .unwrap();
    gw.wait_metric(
        "gateway_admin_auth_accepted_total{credential=\"token\"}",
        1.0,
    )
    .unwrap();
    gw.wait_metric(
        "gateway_admin_auth_accepted_total{credential=\"session\"}",
        1.0,
    )
    .unwrap();
    gw.wait_metric("gateway_admin_auth_failures_total{reason=\"wrong\"}", 2.0)
        .unwrap();
    assert_eq!(
        gw.log_events(
            "admin API: a previous token is accepted too (a rotation is under way): remove it once gateway_admin_auth_accepted_total{credential=\"previous_token\"} stops growing"
        )
        .len(),
        1,
        "{}",
        gw.output()
    );
    drop(gw);

    // the rotation ends: previous_token removed, restart (admin auth is read at start)
    let gw = Gateway::start_with(
        &policy("  admin_auth:\n    token: \"${ADMIN_TOKEN}\"\n"),
        Start {
            env,
            ..Start::default()
        },
    )
    .unwrap();
    let a = gw.admin;
    assert_401(&get(a, "/config", &[("Authorization", &bearer(OLD))]));
    assert_eq!(config_status(a, TOKEN), 200);
    // sessions do not outlive the process, whichever token opened them
    assert_401(&get(a, "/config", &[("Cookie", &old_session)]));
    let refused = request(
        a,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form(OLD),
    );
    assert_eq!(refused.status, 401);
    assert!(
        !gw.metrics()
            .unwrap()
            .contains("credential=\"previous_token\""),
        "no previous token, no series"
    );
}

#[test]
fn a_token_file_rotates_with_a_second_line() {
    let dir = TempDir::new("admin-auth-rotate-file").unwrap();
    let token_file = dir.path().join("admin-token");
    let start = || {
        Gateway::start_with(
            &policy(""),
            Start {
                env: vec![(
                    "GATEWAY_ADMIN_TOKEN_FILE".into(),
                    token_file.display().to_string(),
                )],
                ..Start::default()
            },
        )
        .unwrap()
    };
    // during the rotation: the new token first, the old one on the second line
    std::fs::write(&token_file, format!("{TOKEN}\n{OLD}\n")).unwrap();
    let gw = start();
    assert_eq!(config_status(gw.admin, TOKEN), 200);
    assert_eq!(config_status(gw.admin, OLD), 200);
    assert_401(&get(
        gw.admin,
        "/config",
        &[("Authorization", &bearer(WRONG))],
    ));
    drop(gw);
    // after it: one line, restart
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let gw = start();
    assert_eq!(config_status(gw.admin, TOKEN), 200);
    assert_401(&get(
        gw.admin,
        "/config",
        &[("Authorization", &bearer(OLD))],
    ));
    drop(gw);

    // a third line, or the same token twice, is refused at start without showing a token
    for text in [
        format!("{TOKEN}\n{OLD}\n{WRONG}\n"),
        format!("{TOKEN}\n{TOKEN}\n"),
    ] {
        std::fs::write(&token_file, text).unwrap();
        let out = Command::new(gateway_binary().unwrap())
            .arg("run")
            .arg("-c")
            .arg(dir.path().join("none.yaml"))
            .arg("--admin-token-file")
            .arg(&token_file)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{all}");
        assert!(
            !all.contains(TOKEN) && !all.contains(OLD) && !all.contains(WRONG),
            "{all}"
        );
    }
}

/// Every way a token reaches the gateway (bearer headers right and wrong, sign-in forms right
/// and wrong, a token in the URL, a reload, a reload refused for a literal token in the file)
/// is exercised with `GATEWAY_LOG=trace`, and the gateway's whole stdout and stderr hold none
/// of the tokens, in plain or URL-encoded form.
#[test]
fn no_token_is_ever_logged_even_at_trace_level() {
    let yaml = policy(
        "  admin_auth:\n    token: \"${ADMIN_TOKEN}\"\n    previous_token: \"${ADMIN_TOKEN_PREVIOUS}\"\n",
    );
    let gw = Gateway::start_with(
        &yaml,
        Start {
            env: vec![
                ("ADMIN_TOKEN".into(), TOKEN.into()),
                ("ADMIN_TOKEN_PREVIOUS".into(), OLD.into()),
                ("GATEWAY_LOG".into(), "trace".into()),
            ],
            ..Start::default()
        },
    )
    .unwrap();
    let a = gw.admin;
    assert_eq!(config_status(a, TOKEN), 200);
    assert_eq!(config_status(a, OLD), 200);
    assert_eq!(config_status(a, WRONG), 401);
    assert_eq!(config_status(a, &format!("{TOKEN}x")), 401);
    assert_eq!(
        get(a, &format!("/config?token={TOKEN}&old={OLD}"), &[]).status,
        401
    );
    let form_type = ("Content-Type", "application/x-www-form-urlencoded");
    assert_eq!(
        request(a, "POST", "/login", &[form_type], &form(WRONG)).status,
        401
    );
    sign_in(a, TOKEN);
    sign_in(a, OLD);
    // a reload, then one refused because the file now holds a literal token
    gw.sighup().unwrap();
    gw.wait_metric("gateway_config_reloads_total{result=\"success\"}", 1.0)
        .unwrap();
    gw.write_config(&policy(&format!(
        "  admin_auth:\n    token: \"${{ADMIN_TOKEN}}\"\n    previous_token: {OLD}\n"
    )))
    .unwrap();
    gw.sighup().unwrap();
    gw.wait_metric("gateway_config_reloads_total{result=\"failure\"}", 1.0)
        .unwrap();
    // the refusal says why
    gw.wait_output("never a literal value", Duration::from_secs(5))
        .unwrap();
    assert_eq!(config_status(a, TOKEN), 200, "the old set keeps serving");
    // the output is read after the last request was answered and logged
    gw.wait_metric("gateway_admin_auth_failures_total{reason=\"wrong\"}", 2.0)
        .unwrap();
    let out = gw.output();
    // the log did record what happened (which credential signed in), just never a token;
    // before Pingora's head dumps were capped, its trace lines held every Authorization header
    assert_eq!(
        gw.log_events("admin API: browser signed in").len(),
        2,
        "{out}"
    );
    assert!(out.contains("\"credential\":\"previous_token\""), "{out}");
    for secret in [TOKEN, OLD, WRONG] {
        let encoded = &form(secret)["token=".len()..];
        assert!(
            !out.contains(secret) && !out.contains(encoded),
            "{secret} in the log:\n{out}"
        );
    }
}
