//! Request ids (`X-Request-Id`, accepted when well formed, else generated) and W3C Trace Context
//! (`traceparent` propagated with a new span id for our hop, or created).

use http::{HeaderName, HeaderValue};

/// The header carrying the request id, to the upstream and back to the client.
pub const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_NAME);
/// Its name, for Pingora's header inserts (a static name costs them no allocation).
pub const REQUEST_ID_NAME: &str = "x-request-id";

/// The W3C trace-context headers, parsed once: a lookup by a `&str` name parses it each time.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The vendor part of the trace context.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest client request id accepted.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client-supplied request id is safe to accept, log and forward: 1 to 128 of
/// `A-Z a-z 0-9 - _ . : /`... no spaces, quotes or control characters.
pub fn is_valid_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A fresh upstream idempotency key: a UUID v7 as an RFC 8941 sf-string, as the
/// Idempotency-Key draft writes it.
pub fn new_idempotency_key() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH + 2];
    buf[0] = b'"';
    buf[uuid::fmt::Hyphenated::LENGTH + 1] = b'"';
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buf[1..=uuid::fmt::Hyphenated::LENGTH]);
    // a quoted lowercase UUID is always a valid header value
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("\"-\""))
}

/// A fresh request id (a UUID v7: unique, and sorting by time in logs).
pub fn new_request_id() -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

/// The trace context of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id.
    pub trace_id: [u8; 16],
    /// The span id of the caller's span (zero when we started the trace).
    pub parent_id: [u8; 8],
    /// The span id of our hop, sent upstream as the parent.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
    /// `tracestate`, forwarded unchanged when the caller's `traceparent` was valid.
    pub tracestate: Option<HeaderValue>,
}

fn nonzero_random<const N: usize>() -> [u8; N] {
    loop {
        let bytes: [u8; N] = rand::random();
        if bytes.iter().any(|b| *b != 0) {
            return bytes;
        }
    }
}

fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl TraceContext {
    /// Continues the caller's trace if its `traceparent` is valid (version 00 or a future
    /// version read as 00, non-zero ids), else starts a new sampled trace.
    pub fn from_headers(traceparent: Option<&[u8]>, tracestate: Option<&HeaderValue>) -> Self {
        if let Some(ctx) = traceparent.and_then(|tp| Self::parse(tp, tracestate)) {
            return ctx;
        }
        TraceContext {
            trace_id: nonzero_random(),
            parent_id: [0; 8],
            span_id: nonzero_random(),
            flags: 0x01,
            tracestate: None,
        }
    }

    fn parse(raw: &[u8], tracestate: Option<&HeaderValue>) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?.trim();
        let mut parts = text.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let parent = parts.next()?;
        let flags = parts.next()?;
        // version 00 has exactly four fields; later versions may append more
        if version == "ff"
            || parse_hex::<1>(version).is_none()
            || (version == "00" && parts.next().is_some())
        {
            return None;
        }
        let trace_id = parse_hex::<16>(trace).filter(|t| t.iter().any(|b| *b != 0))?;
        let parent_id = parse_hex::<8>(parent).filter(|p| p.iter().any(|b| *b != 0))?;
        let flags = parse_hex::<1>(flags)?[0];
        Some(TraceContext {
            trace_id,
            parent_id,
            span_id: nonzero_random(),
            flags,
            tracestate: tracestate.cloned(),
        })
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        let mut buf = [0u8; 32];
        let n = hex_into(&self.trace_id, &mut buf);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// The `traceparent` to send upstream: our span is the parent of the upstream's.
    pub fn upstream_traceparent(&self) -> HeaderValue {
        traceparent(&self.trace_id, &self.span_id, self.flags)
    }
}

/// A version-00 `traceparent` naming `span_id` as the parent.
pub fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], flags: u8) -> HeaderValue {
    // built on the stack: this runs on every forwarded request
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(trace_id, &mut buf[3..35]);
    hex_into(span_id, &mut buf[36..52]);
    hex_into(&[flags], &mut buf[53..55]);
    // lowercase hex and dashes: always a valid header value
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A fresh, non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    nonzero_random()
}

/// Writes `bytes` as lowercase hex into `out` (as far as it fits); returns the digits written.
pub fn hex_into(bytes: &[u8], out: &mut [u8]) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut n = 0;
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
        n += 2;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        assert!(is_valid_request_id(b"abc-123_x.y:z"));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id(b"quote\""));
        assert!(!is_valid_request_id(&[b'a'; 129]));
        assert!(is_valid_request_id(new_request_id().as_bytes()));
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let state = HeaderValue::from_static("congo=t61rcWkgMzE");
        let ctx = TraceContext::from_headers(Some(tp), Some(&state));
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            ctx.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_ne!(ctx.span_id, ctx.parent_id);
        assert_eq!(ctx.tracestate, Some(state));
        let up = ctx.upstream_traceparent();
        let up = up.to_str().unwrap();
        assert!(
            up.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{up}"
        );
        assert!(up.ends_with("-01"));
        assert!(!up.contains("00f067aa0ba902b7"));
    }

    #[test]
    fn an_invalid_traceparent_starts_a_new_trace() {
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"garbage",
        ] {
            let ctx = TraceContext::from_headers(Some(bad), None);
            assert_eq!(ctx.parent_id, [0; 8], "{}", String::from_utf8_lossy(bad));
            assert_ne!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(ctx.flags, 1);
        }
    }
}
