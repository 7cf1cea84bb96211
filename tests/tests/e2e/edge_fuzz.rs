//! Property test of the strict HTTP/1 edge: random and mutated request heads (fixed seed,
//! bounded case count) sent through a real gateway listener in front of the ERP simulator. The
//! gateway never answers 5xx, keeps serving, and the simulator only ever receives requests whose
//! head was valid by an oracle written here independently of the gateway's checker.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use erp_sim::ErpSim;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use tests::{Gateway, policy_file, raw_request};

const ROUTES: &str = "\
limits:
  head_timeout: 100ms
  body_idle_timeout: 100ms
policies:
  json: {kind: json_body, require_content_type: false}
routes:
  - name: stream
    methods: [POST, GET]
    path: /stream
    upstream: erp
    upstream_path: /echo/stream
    # a body policy: the whole request is read before anything goes upstream, so what the ERP
    # simulator counted is final when the client has its answer
    policies: [json]
";

/// Header fields the base requests draw from (some are singletons, some may repeat).
const EXTRA: [&str; 10] = [
    "Accept: application/json",
    "X-Forwarded-For: 10.0.0.1",
    "Content-Type: application/json",
    "Authorization: Bearer abc",
    "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "Idempotency-Key: k-1",
    "X-Request-Id: fuzz-1",
    "Cookie: a=1",
    "Via: 1.1 proxy",
    "User-Agent: fuzz",
];

/// Byte strings that tend to matter to an HTTP/1 parser, inserted by mutations.
const TOKENS: [&[u8]; 14] = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b"\x00",
    b"\x7f",
    b",",
    b":",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"Host: other\r\n",
    b"\r\n ",
    b"\xc3\xa9",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
    Token(usize, usize),
    DuplicateLine(usize),
    DropLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Replace(p, b)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(p, t)| Mutation::Token(p, t)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::DropLine),
    ]
}

/// A base request (valid) and the mutations applied to its head.
#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    query: Option<String>,
    extra: Vec<usize>,
    mutations: Vec<Mutation>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(vec!["POST", "GET", "PUT"]),
        prop::option::of("[a-z0-9=&%]{0,12}"),
        prop::collection::vec(0..EXTRA.len(), 0..4),
        prop::collection::vec(mutation(), 0..4),
    )
        .prop_map(|(method, query, extra, mutations)| Case {
            method,
            query,
            extra,
            mutations,
        })
}

fn build(case: &Case) -> Vec<u8> {
    let mut head = format!("{} /stream", case.method);
    if let Some(q) = &case.query {
        head.push('?');
        head.push_str(q);
    }
    head.push_str(" HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n");
    let mut seen = Vec::new();
    for i in &case.extra {
        // distinct extras: the base request stays valid
        if !seen.contains(i) {
            seen.push(*i);
            head.push_str(EXTRA[*i]);
            head.push_str("\r\n");
        }
    }
    let mut bytes = head.into_bytes();
    for m in &case.mutations {
        mutate(&mut bytes, m);
    }
    bytes.extend_from_slice(b"\r\n{}");
    bytes
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |p: usize, len: usize| if len == 0 { 0 } else { p % len };
    match *m {
        Mutation::Insert(p, b) => {
            let i = at(p, bytes.len() + 1);
            bytes.insert(i, b);
        }
        Mutation::Delete(p) if !bytes.is_empty() => {
            let i = at(p, bytes.len());
            bytes.remove(i);
        }
        Mutation::Replace(p, b) if !bytes.is_empty() => {
            let i = at(p, bytes.len());
            bytes[i] = b;
        }
        Mutation::Token(p, t) => {
            let i = at(p, bytes.len() + 1);
            bytes.splice(i..i, TOKENS[t].iter().copied());
        }
        Mutation::DuplicateLine(p) | Mutation::DropLine(p) => {
            let lines: Vec<Vec<u8>> = bytes
                .split_inclusive(|b| *b == b'\n')
                .map(<[u8]>::to_vec)
                .collect();
            if lines.len() < 2 {
                return;
            }
            // never the request line
            let i = 1 + at(p, lines.len() - 1);
            let mut out = Vec::with_capacity(bytes.len() * 2);
            for (n, line) in lines.iter().enumerate() {
                if n == i && matches!(m, Mutation::DropLine(_)) {
                    continue;
                }
                out.extend_from_slice(line);
                if n == i {
                    out.extend_from_slice(line);
                }
            }
            *bytes = out;
        }
        _ => {}
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The oracle: whether a request head (and what follows) is one this gateway may forward. An
/// independent statement of RFC 9112 plus the gateway's stricter rules.
fn valid_head(raw: &[u8]) -> bool {
    let Some((_, lines)) = split_head(raw) else {
        return false;
    };
    let mut lines = lines.into_iter();
    let Some(request_line) = lines.next() else {
        return false;
    };
    let parts: Vec<&[u8]> = request_line.split(|b| *b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return false;
    };
    if method.is_empty()
        || !method.iter().all(|b| is_tchar(*b))
        || target.is_empty()
        || !target.iter().all(|b| (0x21..=0x7e).contains(b))
        || (version != b"HTTP/1.1" && version != b"HTTP/1.0")
    {
        return false;
    }
    let mut count = std::collections::HashMap::<Vec<u8>, usize>::new();
    let mut content_length = None;
    let mut te = None;
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return false;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty()
            || !name.iter().all(|b| is_tchar(*b))
            || !value
                .iter()
                .all(|b| *b == b'\t' || *b == b' ' || (0x21..=0x7e).contains(b) || *b >= 0x80)
        {
            return false;
        }
        let lower = name.to_ascii_lowercase();
        *count.entry(lower.clone()).or_default() += 1;
        match &lower[..] {
            b"content-length" => content_length = Some(value.trim_ascii().to_vec()),
            b"transfer-encoding" => te = Some(value.trim_ascii().to_ascii_lowercase()),
            _ => {}
        }
    }
    let n = |name: &str| count.get(name.as_bytes()).copied().unwrap_or(0);
    let singletons = [
        "host",
        "content-length",
        "transfer-encoding",
        "content-type",
        "authorization",
        "idempotency-key",
        "traceparent",
        "x-request-id",
        "x-shopify-hmac-sha256",
        "x-ebay-signature",
    ];
    if singletons.iter().any(|s| n(s) > 1) {
        return false;
    }
    if version == b"HTTP/1.1" && n("host") != 1 {
        return false;
    }
    if let Some(cl) = &content_length
        && (cl.is_empty() || cl.len() > 19 || !cl.iter().all(u8::is_ascii_digit))
    {
        return false;
    }
    match &te {
        None => true,
        Some(te) => te == b"chunked" && content_length.is_none() && version == b"HTTP/1.1",
    }
}

/// Whether bytes after a valid head run past its declared body.
fn pipelined(raw: &[u8]) -> bool {
    if !valid_head(raw) {
        return false;
    }
    let Some(end) = head_end(raw) else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    if head.contains("transfer-encoding") {
        return false;
    }
    let declared = head
        .split('\n')
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    raw.len() - end > declared
}

fn head_end(raw: &[u8]) -> Option<usize> {
    split_head(raw).map(|(end, _)| end)
}

/// The lines of a request head (CR LF or bare LF endings, blank lines before the request line
/// skipped) and where the head ends; `None` if it does not end.
fn split_head(raw: &[u8]) -> Option<(usize, Vec<&[u8]>)> {
    let mut lines = Vec::new();
    let mut pos = 0;
    loop {
        let nl = pos + raw[pos..].iter().position(|b| *b == b'\n')?;
        let line = &raw[pos..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos = nl + 1;
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Some((pos, lines));
        }
        lines.push(line);
    }
}

/// Sends one request and reads the status of the answer, if one comes before the connection
/// closes (`None`: closed without an answer).
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    // only bounds a wait for the gateway's own timeouts (100 ms) to fire
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            return line.split(' ').nth(1).and_then(|s| s.parse().ok());
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_request_heads_never_get_5xx_and_only_valid_ones_reach_the_erp() {
    let sim = ErpSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gw = Gateway::start(&policy_file(sim.addr(), "", ROUTES)).unwrap();
    let addr = gw.http;
    let started = std::time::Instant::now();

    let mut runner = TestRunner::new(Config {
        cases: 128,
        rng_seed: RngSeed::Fixed(0x5eed_ed6e),
        failure_persistence: None,
        ..Config::default()
    });
    // counted from inside the property (a `Fn` closure)
    let forwarded = AtomicU32::new(0);
    let refused = AtomicU32::new(0);
    let result = runner.run(&case(), |case| {
        let bytes = build(&case);
        // a valid head followed by more than its body is a pipelined second request, answered
        // after the first: its effect would land in the next case's counts
        prop_assume!(!pipelined(&bytes));
        let before = sim.requests_started();
        let status = exchange(addr, &bytes);
        let reached = sim.requests_started() - before;
        let shown = bytes.escape_ascii().to_string();
        if let Some(s) = status {
            prop_assert!(s < 500, "{s} for {shown}");
        }
        if reached > 0 {
            forwarded.fetch_add(1, Ordering::Relaxed);
            prop_assert!(
                valid_head(&bytes),
                "an invalid head reached the ERP: {shown}"
            );
        } else if !valid_head(&bytes) {
            refused.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = result {
        panic!("{e}\n{}", gw.output());
    }
    // the generator exercises both sides
    let (forwarded, refused) = (forwarded.into_inner(), refused.into_inner());
    eprintln!(
        "{forwarded} cases forwarded, {refused} invalid ones refused, in {:?}",
        started.elapsed()
    );
    assert!(forwarded > 10, "only {forwarded} forwarded");
    assert!(refused > 10, "only {refused} refused");

    // still serving
    let r = raw_request(
        addr,
        b"POST /stream HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .unwrap();
    assert_eq!(r.status, 200);
}
