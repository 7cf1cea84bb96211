//! Strict request framing at the edge, against request smuggling and desync. HTTP/1 heads are
//! checked byte for byte by [`check_h1_head`] before Pingora parses them (the strict edge layer
//! in `edge_layer` calls it): a control character in the request target, a missing or repeated
//! `Host`, a `Content-Length` that is not one plain number, a repeated singleton field, a
//! `Transfer-Encoding` other than exactly `chunked`, both framings at once, obs-fold and any
//! head the parser refuses get 400; a head over the limit gets 431. HTTP/2 requests, which the
//! h2 layer has already framed, get the size check of [`check`].

use http::StatusCode;
use pingora::protocols::http::ServerSession;

/// A request the gateway refuses before routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeRejection {
    /// Status to answer.
    pub status: StatusCode,
    /// Problem type slug.
    pub slug: &'static str,
    /// Problem title.
    pub title: &'static str,
    /// Problem detail.
    pub detail: String,
    /// Metric reason label.
    pub reason: &'static str,
    /// Whether the connection must be closed (its framing can no longer be trusted).
    pub close: bool,
}

fn bad_framing(detail: impl Into<String>, reason: &'static str) -> EdgeRejection {
    EdgeRejection {
        status: StatusCode::BAD_REQUEST,
        slug: "bad-framing",
        title: "Ambiguous request framing",
        detail: detail.into(),
        reason,
        close: true,
    }
}

fn bad_request(
    slug: &'static str,
    title: &'static str,
    detail: impl Into<String>,
    reason: &'static str,
) -> EdgeRejection {
    EdgeRejection {
        status: StatusCode::BAD_REQUEST,
        slug,
        title,
        detail: detail.into(),
        reason,
        close: true,
    }
}

/// The refusal of a head larger than `limit` bytes.
pub fn too_large_head(len: u64, limit: u64) -> EdgeRejection {
    EdgeRejection {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        slug: "headers-too-large",
        title: "Request headers too large",
        detail: format!("the request head is {len} bytes or more; the limit is {limit}"),
        reason: "headers_too_large",
        close: true,
    }
}

/// The answer to a client that did not send its whole request head within `limit`.
pub fn head_timeout(limit: std::time::Duration) -> EdgeRejection {
    EdgeRejection {
        status: StatusCode::REQUEST_TIMEOUT,
        slug: "request-timeout",
        title: "Request not received in time",
        detail: format!(
            "the request head was not complete within {}",
            humantime::format_duration(limit)
        ),
        reason: "head_timeout",
        close: true,
    }
}

/// The answer to a client that stopped sending its request body.
pub fn body_timeout() -> EdgeRejection {
    EdgeRejection {
        status: StatusCode::REQUEST_TIMEOUT,
        slug: "request-timeout",
        title: "Request not received in time",
        detail: "the client stopped sending the request body".into(),
        reason: "body_timeout",
        close: true,
    }
}

/// Fields a request may carry at most once. The standard lets some of them be combined; a
/// security gateway refuses the ambiguity instead (which copy would a policy, the upstream or a
/// signature check read?). `Transfer-Encoding` and `Content-Length` are here too, with their own
/// reasons.
const SINGLETONS: [&[u8]; 10] = [
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"content-type",
    b"authorization",
    b"idempotency-key",
    b"traceparent",
    b"x-request-id",
    b"x-shopify-hmac-sha256",
    b"x-ebay-signature",
];
const HOST: usize = 0;
const CONTENT_LENGTH: usize = 1;
const TRANSFER_ENCODING: usize = 2;
const REQUEST_ID: usize = 7;

/// Headers a head may have; more is refused with 431 (Pingora's own limit is the same).
pub const MAX_HEADERS: usize = 256;

/// The verdict on the bytes of an HTTP/1 request head read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadCheck<'a> {
    /// The head is not complete yet.
    Partial,
    /// A valid head of `len` bytes (the body, if any, follows).
    Accepted {
        /// Length of the head, the blank line included.
        len: usize,
        /// Bytes of body that follow (0 for none); `None` when only the body itself tells
        /// where the request ends (chunked) or the connection may become a tunnel (`Upgrade`,
        /// `CONNECT`).
        body: Option<u64>,
    },
    /// The head is refused.
    Refused {
        /// What to answer.
        rejection: EdgeRejection,
        /// The method, when it could be read (empty otherwise).
        method: &'a str,
        /// The request target, when it is clean (empty otherwise).
        path: &'a str,
        /// The client's `X-Request-Id`, when it is well formed.
        request_id: Option<&'a str>,
    },
}

fn refused(rejection: EdgeRejection) -> HeadCheck<'static> {
    HeadCheck::Refused {
        rejection,
        method: "",
        path: "",
        request_id: None,
    }
}

/// Whether a request-target byte is allowed: visible ASCII only (no C0 control, SP, DEL or
/// byte above 0x7E). Pingora would percent-encode the others and forward them.
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// Why httparse refused a head, in the gateway's words.
fn classify_unparsable(buf: &[u8]) -> EdgeRejection {
    let line_end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
    let line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    // `METHOD SP target SP HTTP/1.x`: a target holding illegal bytes (SP included) lies
    // between the first space and the last one
    if let (Some(first), Some(last)) = (
        line.iter().position(|b| *b == b' '),
        line.iter().rposition(|b| *b == b' '),
    ) && first < last
        && line[last + 1..].starts_with(b"HTTP/")
        && line[first + 1..last].iter().any(|b| !is_target_byte(*b))
    {
        return bad_request(
            "bad-request-target",
            "Request target not allowed",
            "the request target holds a control character, a space or a non-ASCII byte",
            "bad_request_target",
        );
    }
    if line.iter().any(|b| !is_target_byte(*b) && *b != b' ') {
        return bad_request(
            "bad-request-target",
            "Request target not allowed",
            "the request line holds a control character or a non-ASCII byte",
            "bad_request_target",
        );
    }
    let head_end = find_head_end(buf).unwrap_or(buf.len());
    let folded = buf[line_end.min(head_end)..head_end]
        .split(|b| *b == b'\n')
        .skip(1)
        .any(|l| matches!(l.first(), Some(b' ' | b'\t')));
    if folded {
        return bad_request(
            "malformed-request",
            "Malformed request",
            "a header field is folded over several lines (obs-fold)",
            "obs_fold",
        );
    }
    bad_request(
        "malformed-request",
        "Malformed request",
        "the request head is not valid HTTP/1.1",
        "malformed_head",
    )
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether a `Content-Length` value is one plain decimal number (of at most 18 digits, so it
/// fits every integer type that reads it).
fn is_plain_length(value: &[u8]) -> bool {
    let v = value.trim_ascii();
    !v.is_empty() && v.len() <= 18 && v.iter().all(u8::is_ascii_digit)
}

fn bad_target(detail: &'static str) -> EdgeRejection {
    bad_request(
        "bad-request-target",
        "Request target not allowed",
        detail,
        "bad_request_target",
    )
}

fn bad_host(detail: &'static str) -> EdgeRejection {
    bad_request("bad-host", "Host not allowed", detail, "bad_host")
}

/// Whether an origin-form target (path and query, visible ASCII already checked) holds only
/// bytes a URI may carry unencoded: no `<`, `>`, `` ` `` in the path, no `"`, `<`, `>` in the
/// query (what the `http` crate's URI parser refuses), and no fragment.
fn is_clean_origin_form(target: &[u8]) -> bool {
    let (path, query) = match target.iter().position(|b| *b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &[][..]),
    };
    path.first() == Some(&b'/')
        && !path.iter().any(|b| matches!(b, b'<' | b'>' | b'`' | b'#'))
        && !query.iter().any(|b| matches!(b, b'"' | b'<' | b'>' | b'#'))
}

/// Whether a `Host` value (or an absolute-form authority) is `host[:port]` in plain characters:
/// a registered name (letters, digits, `-._~`) or a bracketed IPv6 literal, no userinfo.
fn is_plain_authority(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        match value.iter().position(|b| *b == b']') {
            Some(end) => {
                let inner = &value[1..end];
                if inner.is_empty()
                    || !inner
                        .iter()
                        .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
                {
                    return false;
                }
                (&value[..=end], &value[end + 1..])
            }
            None => return false,
        }
    } else {
        match value.iter().position(|b| *b == b':') {
            Some(c) => (&value[..c], &value[c..]),
            None => (value, &[][..]),
        }
    };
    let host_ok = host.first() == Some(&b'[')
        || (!host.is_empty()
            && host
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')));
    let port_ok = port.is_empty()
        || (port[0] == b':' && port.len() <= 6 && port[1..].iter().all(u8::is_ascii_digit));
    host_ok && port_ok
}

/// Checks the request target's form against the method and `Host` (RFC 9112 3.2): origin-form
/// (`/path?query`), `*` for `OPTIONS`, or absolute-form `http(s)://authority/path` whose
/// authority is the `Host`. `CONNECT` is not served. A `Host` holding anything but
/// `host[:port]` is refused (Pingora would refuse userinfo with a bare 400).
fn check_target(method: &str, target: &str, host: Option<&[u8]>) -> Result<(), EdgeRejection> {
    let t = target.as_bytes();
    if t.len() >= usize::from(u16::MAX) {
        return Err(bad_target("the request target is too long"));
    }
    if method == "CONNECT" {
        return Err(EdgeRejection {
            status: StatusCode::METHOD_NOT_ALLOWED,
            slug: "",
            title: "Method Not Allowed",
            detail: "CONNECT is not served".into(),
            reason: "method_not_allowed",
            close: true,
        });
    }
    if let Some(h) = host
        && !h.is_empty()
        && !is_plain_authority(h.trim_ascii())
    {
        return Err(bad_host("the Host field must be host[:port]"));
    }
    if t == b"*" {
        return if method == "OPTIONS" {
            Ok(())
        } else {
            Err(bad_target("the asterisk form is for OPTIONS only"))
        };
    }
    if t.first() == Some(&b'/') {
        return if is_clean_origin_form(t) {
            Ok(())
        } else {
            Err(bad_target(
                "the request target holds a character that must be percent-encoded, or a fragment",
            ))
        };
    }
    let lower = |n: usize| t.get(..n).map(<[u8]>::to_ascii_lowercase);
    let rest = if lower(7).as_deref() == Some(b"http://") {
        &t[7..]
    } else if lower(8).as_deref() == Some(b"https://") {
        &t[8..]
    } else {
        return Err(bad_target(
            "the request target must be a path, or an http(s) URL",
        ));
    };
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if !is_plain_authority(authority) {
        return Err(bad_target("the URL's authority must be host[:port]"));
    }
    if !path.is_empty() && !is_clean_origin_form(path) {
        return Err(bad_target(
            "the request target holds a character that must be percent-encoded, or a fragment",
        ));
    }
    if host.is_some_and(|h| h.trim_ascii() != authority) {
        return Err(bad_host("the Host field differs from the URL's authority"));
    }
    Ok(())
}

/// Checks the bytes of an HTTP/1 request head read so far (they may run on into the body).
/// `max_header_bytes` bounds the head: a longer one is refused with 431 as soon as it is seen,
/// complete or not.
pub fn check_h1_head(buf: &[u8], max_header_bytes: u64) -> HeadCheck<'_> {
    // left uninitialised: httparse writes the fields it finds, where `EMPTY_HEADER` in all 256
    // slots (8 KiB) cost a thousand stores per request
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() as u64 > max_header_bytes {
                return refused(too_large_head(buf.len() as u64, max_header_bytes));
            }
            return HeadCheck::Partial;
        }
        Err(httparse::Error::TooManyHeaders) => {
            let mut r = too_large_head(buf.len() as u64, max_header_bytes);
            r.detail = format!("the request has more than {MAX_HEADERS} header fields");
            return refused(r);
        }
        Err(_) => return refused(classify_unparsable(buf)),
    };
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let target_ok = !target.is_empty() && target.bytes().all(is_target_byte);
    let path = if target_ok { target } else { "" };

    let mut seen = [0u8; SINGLETONS.len()];
    let mut first = [&[][..]; SINGLETONS.len()];
    let mut upgrade = method.eq_ignore_ascii_case("CONNECT");
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        upgrade |= name.eq_ignore_ascii_case(b"upgrade");
        if let Some(i) = SINGLETONS
            .iter()
            .position(|s| s.len() == name.len() && s.eq_ignore_ascii_case(name))
        {
            seen[i] = seen[i].saturating_add(1);
            if seen[i] == 1 {
                first[i] = h.value;
            }
        }
    }
    let request_id = (seen[REQUEST_ID] == 1 && crate::ids::is_valid_request_id(first[REQUEST_ID]))
        .then(|| std::str::from_utf8(first[REQUEST_ID]).ok())
        .flatten();
    let refuse = |rejection| HeadCheck::Refused {
        rejection,
        method,
        path,
        request_id,
    };

    if len as u64 > max_header_bytes {
        return refuse(too_large_head(len as u64, max_header_bytes));
    }
    if !target_ok {
        return refuse(bad_request(
            "bad-request-target",
            "Request target not allowed",
            "the request target holds a control character, a space or a non-ASCII byte",
            "bad_request_target",
        ));
    }
    if let Err(r) = check_target(method, target, (seen[HOST] == 1).then_some(first[HOST])) {
        return refuse(r);
    }
    let http11 = req.version == Some(1);
    if seen[HOST] == 0 && http11 {
        return refuse(bad_request(
            "bad-host",
            "Missing Host",
            "an HTTP/1.1 request must carry exactly one Host field",
            "missing_host",
        ));
    }
    if seen[HOST] > 1 {
        return refuse(bad_request(
            "bad-host",
            "Repeated Host",
            "the request carries more than one Host field",
            "repeated_host",
        ));
    }
    if seen[CONTENT_LENGTH] > 0 && seen[TRANSFER_ENCODING] > 0 {
        return refuse(bad_framing(
            "the request has both Content-Length and Transfer-Encoding",
            "cl_and_te",
        ));
    }
    if seen[CONTENT_LENGTH] > 1 {
        return refuse(bad_framing(
            "the request carries more than one Content-Length field",
            "bad_content_length",
        ));
    }
    if seen[CONTENT_LENGTH] == 1 && !is_plain_length(first[CONTENT_LENGTH]) {
        return refuse(bad_framing(
            "Content-Length must be one decimal number",
            "bad_content_length",
        ));
    }
    if seen[TRANSFER_ENCODING] > 0 {
        let only_chunked = seen[TRANSFER_ENCODING] == 1
            && first[TRANSFER_ENCODING]
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked");
        if !only_chunked || !http11 {
            return refuse(bad_framing(
                "Transfer-Encoding must be exactly \"chunked\", once, on HTTP/1.1",
                "bad_transfer_encoding",
            ));
        }
    }
    if let Some(i) = (0..SINGLETONS.len()).find(|i| seen[*i] > 1) {
        let name = String::from_utf8_lossy(SINGLETONS[i]);
        return refuse(bad_request(
            "repeated-header",
            "Repeated header field",
            format!("the request carries more than one {name} field"),
            "repeated_header",
        ));
    }
    let body = if upgrade || seen[TRANSFER_ENCODING] > 0 {
        None
    } else if seen[CONTENT_LENGTH] == 1 {
        // checked above: at most 19 digits
        std::str::from_utf8(first[CONTENT_LENGTH].trim_ascii())
            .ok()
            .and_then(|v| v.parse().ok())
    } else {
        Some(0)
    };
    HeadCheck::Accepted { len, body }
}

/// Checks the size of a request head that did not come through the HTTP/1 edge layer (HTTP/2:
/// its framing is the h2 layer's, and Pingora's h2 server refuses connection-specific fields
/// such as `Transfer-Encoding`).
pub fn check(session: &ServerSession, max_header_bytes: u64) -> Result<(), EdgeRejection> {
    if session.as_http1().is_some() {
        // the edge layer checked this head before Pingora read it
        return Ok(());
    }
    let req = session.req_header();
    let head_len = req
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().len() + v.len() + 4) as u64)
        .sum::<u64>()
        + req.uri.path_and_query().map_or(1, |p| p.as_str().len()) as u64;
    if head_len > max_header_bytes {
        return Err(too_large_head(head_len, max_header_bytes));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(head: &[u8]) -> &'static str {
        match check_h1_head(head, 8192) {
            HeadCheck::Refused { rejection, .. } => rejection.reason,
            HeadCheck::Accepted { .. } => "accepted",
            HeadCheck::Partial => "partial",
        }
    }

    #[test]
    fn good_heads_pass_and_end_where_the_body_starts() {
        let head = b"POST /a?b=c HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nAccept: a\r\nAccept: b\r\n\r\n{}";
        assert_eq!(
            check_h1_head(head, 8192),
            HeadCheck::Accepted {
                len: head.len() - 2,
                body: Some(2)
            }
        );
        assert_eq!(reason(b"GET / HTTP/1.0\r\n\r\n"), "accepted");
        assert_eq!(
            reason(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\n\r\n"),
            "accepted"
        );
        assert_eq!(reason(b"GET / HTTP/1.1\r\nHost: a\r\n"), "partial");
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let cases: [(&[u8], &str); 16] = [
            (b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", "bad_request_target"),
            (b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", "bad_request_target"),
            (b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", "bad_request_target"),
            (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", "bad_request_target"),
            (b"GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", "bad_request_target"),
            (b"GET / HTTP/1.1\r\n\r\n", "missing_host"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", "repeated_host"),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2957,2957\r\n\r\n",
                "bad_content_length",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                "bad_content_length",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
                "bad_content_length",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
                "bad_transfer_encoding",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "cl_and_te",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nAuthorization: a\r\nauthorization: b\r\n\r\n",
                "repeated_header",
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
                "obs_fold",
            ),
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "malformed_head"),
            (b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n", "malformed_head"),
        ];
        for (head, want) in cases {
            assert_eq!(reason(head), want, "{}", head.escape_ascii());
        }
    }

    #[test]
    fn target_forms_and_hosts() {
        let cases: [(&[u8], &str); 12] = [
            (
                b"GET http://gw:80/a?b HTTP/1.1\r\nHost: gw:80\r\n\r\n",
                "accepted",
            ),
            (
                b"OPTIONS * HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
                "accepted",
            ),
            (
                b"GET /a?x={\"b\"} HTTP/1.1\r\nHost: gw\r\n\r\n",
                "bad_request_target",
            ),
            (
                b"GET /a<b HTTP/1.1\r\nHost: gw\r\n\r\n",
                "bad_request_target",
            ),
            (
                b"GET /a#frag HTTP/1.1\r\nHost: gw\r\n\r\n",
                "bad_request_target",
            ),
            (b"GET * HTTP/1.1\r\nHost: gw\r\n\r\n", "bad_request_target"),
            (
                b"GET foo HTTP/1.1\r\nHost: gw\r\n\r\n",
                "bad_request_target",
            ),
            (
                b"GET http://a@gw/ HTTP/1.1\r\nHost: gw\r\n\r\n",
                "bad_request_target",
            ),
            (
                b"GET http://gw/ HTTP/1.1\r\nHost: other\r\n\r\n",
                "bad_host",
            ),
            (b"GET / HTTP/1.1\r\nHost: user@gw\r\n\r\n", "bad_host"),
            (b"GET / HTTP/1.1\r\nHost: gw:http\r\n\r\n", "bad_host"),
            (
                b"CONNECT gw:443 HTTP/1.1\r\nHost: gw:443\r\n\r\n",
                "method_not_allowed",
            ),
        ];
        for (head, want) in cases {
            assert_eq!(reason(head), want, "{}", head.escape_ascii());
        }
    }

    #[test]
    fn size_is_bounded_complete_or_not() {
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "a".repeat(100));
        match check_h1_head(big.as_bytes(), 64) {
            HeadCheck::Refused { rejection, .. } => assert_eq!(rejection.status.as_u16(), 431),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_header_count_is_bounded_at_max_headers() {
        // Host, `extra` fields and a request id: every slot filled is read back by the checks
        let head = |extra: usize| {
            let mut h = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
            for i in 0..extra {
                h.push_str(&format!("X-F{i}: {i}\r\n"));
            }
            h.push_str("X-Request-Id: r-last\r\n\r\n");
            h
        };
        let full = head(MAX_HEADERS - 2);
        assert_eq!(
            check_h1_head(full.as_bytes(), 1 << 20),
            HeadCheck::Accepted {
                len: full.len(),
                body: Some(0)
            }
        );
        match check_h1_head(head(MAX_HEADERS - 1).as_bytes(), 1 << 20) {
            HeadCheck::Refused { rejection, .. } => {
                assert_eq!(rejection.status.as_u16(), 431);
                assert!(
                    rejection.detail.contains("256 header fields"),
                    "{}",
                    rejection.detail
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refusal_keeps_the_clean_target_and_the_request_id() {
        match check_h1_head(
            b"POST /o HTTP/1.1\r\nHost: a\r\nX-Request-Id: r-1\r\nContent-Length: 1,1\r\n\r\n",
            8192,
        ) {
            HeadCheck::Refused {
                method,
                path,
                request_id,
                ..
            } => {
                assert_eq!((method, path, request_id), ("POST", "/o", Some("r-1")));
            }
            other => panic!("{other:?}"),
        }
    }
}
