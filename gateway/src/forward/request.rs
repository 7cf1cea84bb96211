//! The request head sent upstream, built from the client's: the route's path template, hop-by-hop
//! headers removed, the request id and trace context, `X-Forwarded-*`, the headers policies
//! removed and added, the upstream's own headers and `Host`; then, for the buffered exchange,
//! the head made right for the upstream connection's protocol whatever the client spoke (an
//! HTTP/1.1 request line and `Host`, or an HTTP/2 URI with scheme and authority).

use std::net::IpAddr;

use http::header::{CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Version};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::{Error, ErrorType};
use policies::model::{Route, Upstream};
use policies::pipeline::ExchangeState;
use policies::route::PathParams;

use crate::ids::{REQUEST_ID_NAME, TRACESTATE, TraceContext};

/// The header carrying the upstream idempotency key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static(IDEMPOTENCY_KEY_NAME);

/// Hop-by-hop request headers a proxy must not forward (RFC 9110 7.6.1).
static HOP_BY_HOP: [HeaderName; 7] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
];
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static(X_FORWARDED_FOR_NAME);

// Names inserted through Pingora's head API as static strings: it keeps a name as written and
// copies a `HeaderName` it has no title case for (all of these) into a new lowercase one, so
// the bytes on the wire are the same without an allocation per header and request.
/// The W3C trace-context header.
pub const TRACEPARENT_NAME: &str = "traceparent";
const TRACESTATE_NAME: &str = "tracestate";
const X_FORWARDED_FOR_NAME: &str = "x-forwarded-for";
const X_FORWARDED_PROTO_NAME: &str = "x-forwarded-proto";
const IDEMPOTENCY_KEY_NAME: &str = "idempotency-key";

/// What the upstream request is made from, besides the client's head.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// The route.
    pub route: &'a Route,
    /// Its upstream.
    pub upstream: &'a Upstream,
    /// The path parameters.
    pub params: &'a PathParams,
    /// The policies' state (headers to add and remove, the request id).
    pub state: &'a ExchangeState,
    /// The trace context.
    pub trace: Option<&'a TraceContext>,
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// Whether the client spoke TLS.
    pub tls: bool,
    /// The upstream idempotency key of this request, which replaces any the client sent (the
    /// client's is scoped to the client, the gateway's to the document).
    pub idempotency_key: Option<&'a HeaderValue>,
}

/// Rewrites the client's request head into the one sent upstream (both paths use it).
pub fn rewrite(req: &mut RequestHeader, o: &Outbound<'_>) -> Result<()> {
    // the Host the upstream sees: its configured one, or the client's (an HTTP/2 client sends
    // it as :authority, which the path rewrite below drops)
    if let Some(host) = &o.upstream.transport.host {
        req.insert_header(HOST, host.clone())?;
    } else if !req.headers.contains_key(HOST)
        && let Some(authority) = req.uri.authority()
    {
        let host = HeaderValue::from_str(authority.as_str())
            .or_err(ErrorType::InvalidHTTPHeader, "request authority")?;
        req.insert_header(HOST, host)?;
    }
    if let Some(template) = &o.route.upstream_path {
        let path = template.render(o.params, req.uri.query());
        // a template that gives back the very request target (the route mirrors its upstream's
        // paths) leaves the head as it is: the same bytes go upstream without a new URI
        let unchanged = req.uri.scheme().is_none()
            && req.uri.authority().is_none()
            && req.raw_path() == path.as_bytes();
        if !unchanged {
            let uri = http::Uri::builder()
                .path_and_query(path)
                .build()
                .or_err(ErrorType::InternalError, "rendering upstream path")?;
            req.set_uri(uri);
        }
    }
    remove_hop_by_hop(req);
    let id = HeaderValue::from_str(&o.state.request_id)
        .or_err(ErrorType::InternalError, "request id")?;
    req.insert_header(REQUEST_ID_NAME, id)?;
    if let Some(trace) = o.trace {
        req.insert_header(TRACEPARENT_NAME, trace.upstream_traceparent())?;
        match &trace.tracestate {
            Some(ts) => req.insert_header(TRACESTATE_NAME, ts.clone())?,
            None => {
                if req.headers.contains_key(&TRACESTATE) {
                    req.remove_header(&TRACESTATE);
                }
            }
        }
    }
    if let Some(ip) = o.client_ip {
        let xff = forwarded_for(req.headers.get(&X_FORWARDED_FOR), ip)
            .or_err(ErrorType::InternalError, "X-Forwarded-For")?;
        req.insert_header(X_FORWARDED_FOR_NAME, xff)?;
    }
    req.insert_header(
        X_FORWARDED_PROTO_NAME,
        HeaderValue::from_static(if o.tls { "https" } else { "http" }),
    )?;
    for name in &o.state.upstream_removed_headers {
        req.remove_header(name);
    }
    for (name, value) in &o.upstream.request_headers {
        req.insert_header(name.clone(), value.clone())?;
    }
    for (name, value) in &o.state.upstream_headers {
        req.insert_header(name.clone(), value.clone())?;
    }
    if let Some(key) = o.idempotency_key {
        req.insert_header(IDEMPOTENCY_KEY_NAME, key.clone())?;
    }
    Ok(())
}

/// Removes the hop-by-hop headers (RFC 9110 7.6.1), and those the request's `Connection` names.
fn remove_hop_by_hop(req: &mut RequestHeader) {
    // Most requests carry none: one pass over their few names tells, where a lookup per
    // hop-by-hop name hashed seven times (and a removal also edits Pingora's header-case map,
    // so nothing is removed that is not there).
    if !req.headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // headers named by Connection (itself hop-by-hop) are hop-by-hop too
    let named: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for h in &HOP_BY_HOP {
        if req.headers.contains_key(h) {
            req.remove_header(h);
        }
    }
    for h in &named {
        req.remove_header(h.as_str());
    }
}

/// `X-Forwarded-For` with the client's address appended to the list it arrived with (a list
/// that is not visible ASCII is replaced).
fn forwarded_for(
    prev: Option<&HeaderValue>,
    ip: IpAddr,
) -> std::result::Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut xff = Vec::with_capacity(40);
    if let Some(prev) = prev.and_then(|v| v.to_str().ok()) {
        xff.extend_from_slice(prev.as_bytes());
        xff.extend_from_slice(b", ");
    }
    crate::access_log::write_ip(&mut xff, ip);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(xff))
}

/// Prepares a buffered request head whose whole body (`body_len` bytes) is known, for an
/// upstream connection speaking HTTP/2 (`h2`) or HTTP/1.1.
pub fn for_connection(
    req: RequestHeader,
    body_len: usize,
    h2: bool,
    tls: bool,
) -> Result<Box<RequestHeader>> {
    let mut out = Box::new(req);
    for h in [TRANSFER_ENCODING, EXPECT] {
        if out.headers.contains_key(&h) {
            out.remove_header(&h);
        }
    }
    out.insert_header(CONTENT_LENGTH, body_len)?;
    let path = out
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if h2 {
        let authority = out
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| out.uri.authority().map(|a| a.as_str().to_owned()))
            .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no host to send"))?;
        let uri = http::Uri::builder()
            .scheme(if tls { "https" } else { "http" })
            .authority(authority)
            .path_and_query(path)
            .build()
            .or_err(
                ErrorType::InvalidHTTPHeader,
                "building the HTTP/2 request URI",
            )?;
        out.set_uri(uri);
        out.remove_header(&HOST);
        out.set_version(Version::HTTP_2);
    } else {
        let uri = http::Uri::builder()
            .path_and_query(path)
            .build()
            .or_err(ErrorType::InvalidHTTPHeader, "building the request target")?;
        out.set_uri(uri);
        out.set_version(Version::HTTP_11);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_appended_to_x_forwarded_for() {
        let v4: IpAddr = "192.0.2.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(forwarded_for(None, v4).unwrap(), "192.0.2.10");
        assert_eq!(forwarded_for(None, v6).unwrap(), "2001:db8::1");
        let prev = HeaderValue::from_static("203.0.113.9, 198.51.100.2");
        assert_eq!(
            forwarded_for(Some(&prev), v4).unwrap(),
            "203.0.113.9, 198.51.100.2, 192.0.2.10"
        );
        let opaque = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        assert_eq!(forwarded_for(Some(&opaque), v6).unwrap(), "2001:db8::1");
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let head = |headers: &[(&'static str, &'static str)]| {
            let mut req = RequestHeader::build("GET", b"/erp/v1/orders", None).unwrap();
            for (name, value) in headers {
                req.append_header(*name, *value).unwrap();
            }
            req
        };
        // none of them: the head is left as it came, in its order
        let mut req = head(&[("Host", "erp"), ("Accept", "*/*"), ("X-Trace", "1")]);
        remove_hop_by_hop(&mut req);
        let names: Vec<_> = req.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "accept", "x-trace"]);
        // each one alone, without a Connection header to name it
        for hop in [
            "Connection",
            "Keep-Alive",
            "Proxy-Connection",
            "Proxy-Authorization",
            "TE",
            "Trailer",
            "Upgrade",
        ] {
            let mut req = head(&[("Host", "erp"), (hop, "x"), ("Accept", "*/*")]);
            remove_hop_by_hop(&mut req);
            assert!(!req.headers.contains_key(hop), "{hop}");
            assert_eq!(req.headers.len(), 2, "{hop}");
        }
        // the names Connection lists, in any case, go with it; others stay
        let mut req = head(&[
            ("Host", "erp"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("Connection", "close"),
            ("x-secret-hop", "1"),
            ("close", "2"),
            ("X-Kept", "3"),
        ]);
        remove_hop_by_hop(&mut req);
        let names: Vec<_> = req.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "x-kept"]);
    }

    #[test]
    fn an_http2_head_becomes_an_http11_request_line_with_host() {
        let mut req = RequestHeader::build("POST", b"/erp/v1/orders?channel=amazon", None).unwrap();
        req.set_version(Version::HTTP_2);
        req.insert_header(HOST, "erp.internal").unwrap();
        let h1 = for_connection(req.clone(), 12, false, false).unwrap();
        assert_eq!(h1.version, Version::HTTP_11);
        assert_eq!(h1.uri.to_string(), "/erp/v1/orders?channel=amazon");
        assert_eq!(h1.headers[HOST], "erp.internal");
        assert_eq!(h1.headers[CONTENT_LENGTH], "12");
        let h2 = for_connection(req, 12, true, true).unwrap();
        assert_eq!(
            h2.uri.to_string(),
            "https://erp.internal/erp/v1/orders?channel=amazon"
        );
        assert!(!h2.headers.contains_key(HOST));
    }
}
