//! Request recipes: what the load generator sends (method, path, headers, body), optionally
//! with one header generated per request (a fresh `Idempotency-Key`, or the next of a pool of
//! pre-minted tokens), bodies sent in turn, and which statuses count as success.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;

/// A header value made per request.
#[derive(Debug, Clone)]
pub enum Generated {
    /// A fresh UUID v4 each time, as an RFC 8941 string (`"..."`, the `Idempotency-Key`
    /// syntax): new idempotency keys.
    Uuid,
    /// The values in turn, round robin over every connection (pre-minted tokens, a small set of
    /// keys that are replayed).
    Cycle(Vec<HeaderValue>),
}

/// One request, sent over and over.
#[derive(Debug)]
pub struct Recipe {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub uri: Uri,
    /// Fixed headers (Host is added by the generator).
    pub headers: HeaderMap,
    /// Bodies, sent in turn (one empty body for none).
    pub bodies: Arc<[Bytes]>,
    /// Headers generated per request.
    pub generated: Vec<(HeaderName, Generated)>,
    /// Statuses that count as success: `lo..=hi`.
    pub expect: (u16, u16),
    seq: AtomicU64,
    body_seq: AtomicU64,
}

impl Clone for Recipe {
    fn clone(&self) -> Self {
        Recipe {
            method: self.method.clone(),
            uri: self.uri.clone(),
            headers: self.headers.clone(),
            bodies: self.bodies.clone(),
            generated: self.generated.clone(),
            expect: self.expect,
            seq: AtomicU64::new(0),
            body_seq: AtomicU64::new(0),
        }
    }
}

impl Recipe {
    /// `GET path`, expecting 2xx.
    pub fn get(path: &str) -> anyhow::Result<Recipe> {
        Ok(Recipe {
            method: Method::GET,
            uri: path.parse()?,
            headers: HeaderMap::new(),
            bodies: Arc::from([Bytes::new()]),
            generated: Vec::new(),
            expect: (200, 299),
            seq: AtomicU64::new(0),
            body_seq: AtomicU64::new(0),
        })
    }

    /// `POST path` with JSON bodies sent in turn, expecting 2xx.
    pub fn post_json(path: &str, bodies: Arc<[Bytes]>) -> anyhow::Result<Recipe> {
        anyhow::ensure!(!bodies.is_empty(), "a POST recipe without a body");
        let mut r = Recipe::get(path)?;
        r.method = Method::POST;
        r.bodies = bodies;
        r.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(r)
    }

    /// Adds a fixed header.
    pub fn header(mut self, name: &str, value: &str) -> anyhow::Result<Recipe> {
        self.headers
            .append(HeaderName::try_from(name)?, HeaderValue::try_from(value)?);
        Ok(self)
    }

    /// Generates `name` per request (with `Cycle`, round robin over one counter per recipe,
    /// shared by every generated header that cycles).
    pub fn generate(mut self, name: &str, how: Generated) -> anyhow::Result<Recipe> {
        if let Generated::Cycle(v) = &how {
            anyhow::ensure!(!v.is_empty(), "an empty cycle of {name} values");
        }
        self.generated.push((HeaderName::try_from(name)?, how));
        Ok(self)
    }

    /// Whether a status counts as success.
    pub fn ok(&self, status: u16) -> bool {
        (self.expect.0..=self.expect.1).contains(&status)
    }

    /// The next value of generated header `k`, if there is one.
    pub fn next_generated(&self, k: usize) -> Option<(HeaderName, HeaderValue)> {
        let (name, how) = self.generated.get(k)?;
        let value = match how {
            Generated::Uuid => {
                let id = uuid::Uuid::new_v4();
                let mut buf = [b'"'; uuid::fmt::Hyphenated::LENGTH + 2];
                id.hyphenated()
                    .encode_lower(&mut buf[1..=uuid::fmt::Hyphenated::LENGTH]);
                // a quoted hyphenated UUID is ASCII: always a valid header value
                HeaderValue::from_bytes(&buf).ok()?
            }
            Generated::Cycle(values) => {
                let i = self.seq.fetch_add(1, Ordering::Relaxed) as usize;
                values[i % values.len()].clone()
            }
        };
        Some((name.clone(), value))
    }

    /// The request to send to `host`.
    pub fn build(&self, host: &HeaderValue) -> Request<Full<Bytes>> {
        let (head, body) = self.next(host);
        head.map(|()| Full::new(body))
    }

    /// The next request to `host` as HTTP/1.1 bytes, appended to `out` (with its
    /// `Content-Length` when it has a body): what `build` gives, for a client that writes raw
    /// requests.
    pub fn write_wire(&self, host: &HeaderValue, out: &mut Vec<u8>) {
        let (head, body) = self.next(host);
        out.extend_from_slice(head.method().as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(head.uri().to_string().as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in head.headers() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !body.is_empty() {
            out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
    }

    /// The next request's head and body: the next body in turn, the generated headers' next
    /// values.
    fn next(&self, host: &HeaderValue) -> (Request<()>, Bytes) {
        let i = self.body_seq.fetch_add(1, Ordering::Relaxed) as usize;
        let mut req = Request::new(());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        let headers = req.headers_mut();
        headers.clone_from(&self.headers);
        headers.insert(HOST, host.clone());
        for k in 0..self.generated.len() {
            if let Some((name, value)) = self.next_generated(k) {
                headers.insert(name, value);
            }
        }
        (req, self.bodies[i % self.bodies.len()].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_with_host_and_generated_headers() {
        let bodies: Arc<[Bytes]> =
            Arc::from([Bytes::from_static(b"{}"), Bytes::from_static(b"[]")]);
        let r = Recipe::post_json("/a?b=1", bodies)
            .and_then(|r| r.header("authorization", "Bearer x"))
            .and_then(|r| r.generate("idempotency-key", Generated::Uuid))
            .expect("recipe");
        let host = HeaderValue::from_static("127.0.0.1:1");
        let a = r.build(&host);
        let b = r.build(&host);
        assert_eq!(a.method(), Method::POST);
        assert_eq!(a.uri(), "/a?b=1");
        assert_eq!(a.headers()["host"], "127.0.0.1:1");
        assert_eq!(a.headers()["authorization"], "Bearer x");
        assert_eq!(a.headers()["content-type"], "application/json");
        assert_eq!(a.headers()["idempotency-key"].len(), 38);
        assert!(a.headers()["idempotency-key"].as_bytes().starts_with(b"\""));
        assert_ne!(
            a.headers()["idempotency-key"],
            b.headers()["idempotency-key"]
        );
        // the bodies in turn
        let c = r.build(&host);
        let sent = [a, b, c].map(|req| body_bytes(req.into_body()));
        assert_eq!(
            sent,
            [b"{}".as_slice(), b"[]", b"{}"].map(Bytes::from_static)
        );
    }

    /// The bytes of a `Full` body (it is ready at once).
    fn body_bytes(body: Full<Bytes>) -> Bytes {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(body.collect()).expect("full body").to_bytes()
    }

    #[test]
    fn cycles_through_a_pool() {
        let pool = vec![
            HeaderValue::from_static("t1"),
            HeaderValue::from_static("t2"),
        ];
        let r = Recipe::get("/")
            .and_then(|r| r.generate("authorization", Generated::Cycle(pool)))
            .expect("recipe");
        let got: Vec<_> = (0..4)
            .filter_map(|_| r.next_generated(0).map(|(_, v)| v))
            .collect();
        assert_eq!(got, ["t1", "t2", "t1", "t2"]);
        assert!(r.ok(204) && !r.ok(404));
    }

    #[test]
    fn writes_requests_on_the_wire_one_after_the_other() {
        let bodies: Arc<[Bytes]> =
            Arc::from([Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"[]")]);
        let r = Recipe::post_json("/orders?x=1", bodies)
            .and_then(|r| r.generate("idempotency-key", Generated::Uuid))
            .expect("recipe");
        let mut wire = Vec::new();
        r.write_wire(&HeaderValue::from_static("bench"), &mut wire);
        r.write_wire(&HeaderValue::from_static("bench"), &mut wire);
        let mut rest = wire.as_slice();
        let mut keys = Vec::new();
        for body in [b"{\"a\":1}".as_slice(), b"[]"] {
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut req = httparse::Request::new(&mut headers);
            let httparse::Status::Complete(n) = req.parse(rest).expect("a request") else {
                panic!("an incomplete head");
            };
            assert_eq!((req.method, req.path), (Some("POST"), Some("/orders?x=1")));
            let header = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value.to_vec())
            };
            assert_eq!(header("host").as_deref(), Some(b"bench".as_slice()));
            assert_eq!(
                header("content-type").as_deref(),
                Some(b"application/json".as_slice())
            );
            assert_eq!(
                header("content-length").as_deref(),
                Some(body.len().to_string().as_bytes())
            );
            keys.push(header("idempotency-key").expect("a generated key"));
            assert_eq!(&rest[n..n + body.len()], body);
            rest = &rest[n + body.len()..];
        }
        assert!(rest.is_empty());
        assert_ne!(keys[0], keys[1]);
    }
}
