//! Strict HTTP/1.1 framing at the edge, against request smuggling: a request with both
//! `Content-Length` and `Transfer-Encoding`, or a `Transfer-Encoding` other than `chunked`,
//! is refused with 400 and the connection closed; oversized heads get 431. (Pingora's parser
//! already refuses differing `Content-Length` values and a non-chunked final coding.)

use http::StatusCode;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
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

fn bad_framing(detail: &str, reason: &'static str) -> EdgeRejection {
    EdgeRejection {
        status: StatusCode::BAD_REQUEST,
        slug: "bad-framing",
        title: "Ambiguous request framing",
        detail: detail.to_owned(),
        reason,
        close: true,
    }
}

/// Whether a raw request head carries a `Content-Length` header line.
fn raw_has_content_length(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length";
    raw.split(|b| *b == b'\n').skip(1).any(|line| {
        line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) && {
            let rest = &line[NAME.len()..];
            rest.iter().find(|b| !matches!(b, b' ' | b'\t')) == Some(&b':')
        }
    })
}

/// Checks the framing and size of a request head.
pub fn check(session: &ServerSession, max_header_bytes: u64) -> Result<(), EdgeRejection> {
    let req = session.req_header();
    let head_len = match session.as_http1() {
        Some(h1) => {
            let raw = h1.get_headers_raw_bytes();
            let te: Vec<_> = req.headers.get_all(TRANSFER_ENCODING).iter().collect();
            if !te.is_empty() {
                // Pingora drops Content-Length when both are present; the raw head still shows it.
                if raw_has_content_length(&raw) || req.headers.contains_key(CONTENT_LENGTH) {
                    return Err(bad_framing(
                        "the request has both Content-Length and Transfer-Encoding",
                        "cl_and_te",
                    ));
                }
                let only_chunked = te.len() == 1
                    && te[0]
                        .as_bytes()
                        .trim_ascii()
                        .eq_ignore_ascii_case(b"chunked");
                if !only_chunked {
                    return Err(bad_framing(
                        "Transfer-Encoding must be exactly \"chunked\"",
                        "bad_transfer_encoding",
                    ));
                }
            }
            raw.len() as u64
        }
        None => {
            req.headers
                .iter()
                .map(|(n, v)| (n.as_str().len() + v.len() + 4) as u64)
                .sum::<u64>()
                + req.uri.path_and_query().map_or(1, |p| p.as_str().len()) as u64
        }
    };
    if head_len > max_header_bytes {
        return Err(EdgeRejection {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            slug: "headers-too-large",
            title: "Request headers too large",
            detail: format!(
                "the request head is {head_len} bytes; the limit is {max_header_bytes}"
            ),
            reason: "headers_too_large",
            close: true,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_content_length_lines_are_found_in_any_case() {
        assert!(raw_has_content_length(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
        ));
        assert!(raw_has_content_length(
            b"POST / HTTP/1.1\r\ncontent-LENGTH : 5\r\n\r\n"
        ));
        assert!(!raw_has_content_length(
            b"POST / HTTP/1.1\r\nX-Content-Length: 5\r\n\r\n"
        ));
        assert!(!raw_has_content_length(
            b"POST /content-length: HTTP/1.1\r\n\r\n"
        ));
    }
}
