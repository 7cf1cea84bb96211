//! The request log: what reached the simulated ERP, recorded the moment the headers are parsed
//! and completed when the body has been read (or failed to arrive), bounded to the newest N.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, Method, Version};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::documents::rfc3339;
use crate::lock::lock;
use crate::tls::ClientCert;

/// Bodies up to this size are shown as text in JSON views; larger ones only by length and hash.
const UTF8_PREVIEW_LIMIT: usize = 64 * 1024;

/// `by_path` is keyed by a client-controlled string, so it is capped; the rest is lumped here.
const MAX_DISTINCT_PATHS: usize = 1024;
const OTHER_PATHS: &str = "(other)";

/// SHA-256 of nothing: the hash of a body of which nothing has been read yet.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// One request that reached the ERP (or the echo endpoint).
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// 1 for the first request since start or reset, in arrival order of the headers.
    pub seq: u64,
    pub method: Method,
    /// The path as sent (not percent-decoded).
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The body bytes that arrived; empty until the body has been read.
    pub body: Bytes,
    /// Hex SHA-256 of `body`.
    pub body_sha256: String,
    /// The whole body arrived. False while it is being read, and for good when it never did.
    pub body_complete: bool,
    /// Why the body read failed (client went away, too large), if it did.
    pub body_error: Option<String>,
    /// When the headers were parsed.
    pub received_at: SystemTime,
    /// The HTTP version the request came in (`HTTP_11`, `HTTP_2`, ...).
    pub version: Version,
    /// It came over TLS.
    pub tls: bool,
    /// The verified client certificate, when the simulator requires one (mutual TLS).
    pub client_cert: Option<ClientCert>,
}

impl ReceivedRequest {
    /// The first value of a header, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text, when it is UTF-8 and at most 64 KiB.
    pub fn body_utf8(&self) -> Option<&str> {
        utf8_preview(&self.body)
    }

    /// The JSON shape served by `GET /_sim/requests`.
    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "method": self.method.as_str(),
            "path": self.path,
            "query": self.query,
            "headers": headers_json(&self.headers),
            "body_len": self.body.len(),
            "body_sha256": self.body_sha256,
            "body_utf8": self.body_utf8(),
            "body_complete": self.body_complete,
            "body_error": self.body_error,
            "received_at": rfc3339(self.received_at),
            "version": format!("{:?}", self.version),
            "tls": self.tls,
            "client_cert": self.client_cert.as_ref().map(|cert| json!({
                "subject": cert.subject,
                "sha256": cert.sha256,
            })),
        })
    }
}

/// `{name: value}` or `{name: [values]}` when a header repeats.
pub(crate) fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let mut values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let value = if values.len() == 1 {
            values.swap_remove(0)
        } else {
            Value::Array(values)
        };
        out.insert(name.as_str().to_owned(), value);
    }
    Value::Object(out)
}

pub(crate) fn utf8_preview(body: &[u8]) -> Option<&str> {
    if body.len() > UTF8_PREVIEW_LIMIT {
        return None;
    }
    std::str::from_utf8(body).ok()
}

pub(crate) fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Which record a request's body belongs to. The epoch stops a request that was in flight
/// across a reset from filling in a newer record that reuses its `seq`.
pub(crate) struct Ticket {
    epoch: u64,
    seq: u64,
}

struct Log {
    epoch: u64,
    last_seq: u64,
    items: VecDeque<ReceivedRequest>,
    by_path: HashMap<String, u64>,
}

/// The bounded log. One mutex, held only to push, pop or patch a record: hashing and cloning
/// happen outside it so benches do not serialise on it.
pub(crate) struct RequestLog {
    limit: usize,
    log: Mutex<Log>,
}

impl RequestLog {
    pub(crate) fn new(limit: usize) -> RequestLog {
        RequestLog {
            limit,
            log: Mutex::new(Log {
                epoch: 0,
                last_seq: 0,
                items: VecDeque::new(),
                by_path: HashMap::new(),
            }),
        }
    }

    /// Records a request whose headers have just been parsed, from a connection that is TLS
    /// or not and showed that client certificate.
    pub(crate) fn begin(
        &self,
        parts: &http::request::Parts,
        tls: bool,
        client_cert: Option<&ClientCert>,
    ) -> Ticket {
        let path = parts.uri.path();
        let record = (self.limit > 0).then(|| ReceivedRequest {
            seq: 0,
            method: parts.method.clone(),
            path: path.to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body: Bytes::new(),
            body_sha256: EMPTY_SHA256.to_owned(),
            body_complete: false,
            body_error: None,
            received_at: SystemTime::now(),
            version: parts.version,
            tls,
            client_cert: client_cert.cloned(),
        });
        let mut log = lock(&self.log);
        log.last_seq += 1;
        let seq = log.last_seq;
        let distinct = log.by_path.len();
        if let Some(count) = log.by_path.get_mut(path) {
            *count += 1;
        } else if distinct < MAX_DISTINCT_PATHS {
            log.by_path.insert(path.to_owned(), 1);
        } else {
            *log.by_path.entry(OTHER_PATHS.to_owned()).or_default() += 1;
        }
        if let Some(mut record) = record {
            record.seq = seq;
            log.items.push_back(record);
            while log.items.len() > self.limit {
                log.items.pop_front();
            }
        }
        Ticket {
            epoch: log.epoch,
            seq,
        }
    }

    /// Fills in the body of a record, if it is still kept.
    pub(crate) fn finish(&self, ticket: &Ticket, body: Bytes, error: Option<String>) {
        if self.limit == 0 {
            return;
        }
        let sha = sha256_hex(&body);
        let mut log = lock(&self.log);
        if log.epoch != ticket.epoch {
            return;
        }
        // Records are pushed in seq order under this lock, so the position follows from
        // the first kept seq.
        let Some(first) = log.items.front().map(|r| r.seq) else {
            return;
        };
        let Some(index) = ticket
            .seq
            .checked_sub(first)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        if let Some(record) = log.items.get_mut(index)
            && record.seq == ticket.seq
        {
            record.body_complete = error.is_none();
            record.body_error = error;
            record.body = body;
            record.body_sha256 = sha;
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<ReceivedRequest> {
        lock(&self.log).items.iter().cloned().collect()
    }

    pub(crate) fn by_path(&self) -> BTreeMap<String, u64> {
        lock(&self.log)
            .by_path
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    pub(crate) fn clear(&self) {
        let mut log = lock(&self.log);
        log.epoch += 1;
        log.last_seq = 0;
        log.items.clear();
        log.by_path.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str) -> http::request::Parts {
        let (parts, ()) = http::Request::post(path)
            .header("x-a", "1")
            .header("x-b", "1")
            .header("x-b", "2")
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    impl RequestLog {
        fn begin_plain(&self, parts: &http::request::Parts) -> Ticket {
            self.begin(parts, false, None)
        }
    }

    #[test]
    fn keeps_the_newest_records_and_fills_bodies_by_seq() {
        let log = RequestLog::new(2);
        let tickets: Vec<_> = (0..3)
            .map(|n| log.begin_plain(&parts(&format!("/p/{n}"))))
            .collect();
        log.finish(&tickets[0], Bytes::from_static(b"evicted"), None);
        log.finish(&tickets[2], Bytes::from_static(b"third"), None);
        log.finish(&tickets[1], Bytes::from_static(b"sec"), Some("gone".into()));
        let records = log.snapshot();
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].seq, records[0].path.as_str()), (2, "/p/1"));
        assert_eq!(&records[0].body[..], b"sec");
        assert!(!records[0].body_complete);
        assert_eq!(records[0].body_error.as_deref(), Some("gone"));
        assert_eq!(&records[1].body[..], b"third");
        assert!(records[1].body_complete);
        assert_eq!(records[1].body_sha256, sha256_hex(b"third"));
    }

    #[test]
    fn a_body_finishing_after_a_reset_does_not_touch_newer_records() {
        let log = RequestLog::new(10);
        let old = log.begin_plain(&parts("/old"));
        log.clear();
        log.begin_plain(&parts("/new"));
        log.finish(&old, Bytes::from_static(b"old"), None);
        let records = log.snapshot();
        assert_eq!(records[0].path, "/new");
        assert!(records[0].body.is_empty());
        assert!(!records[0].body_complete);
        assert_eq!(records[0].body_sha256, sha256_hex(b""));
    }

    #[test]
    fn headers_json_lists_repeated_values() {
        let headers = headers_json(&parts("/").headers);
        assert_eq!(headers, json!({"x-a": "1", "x-b": ["1", "2"]}));
    }

    #[test]
    fn by_path_is_capped() {
        let log = RequestLog::new(0);
        for n in 0..MAX_DISTINCT_PATHS + 5 {
            log.begin_plain(&parts(&format!("/p/{n}")));
        }
        log.begin_plain(&parts("/p/0"));
        let by_path = log.by_path();
        assert_eq!(by_path.len(), MAX_DISTINCT_PATHS + 1);
        assert_eq!(by_path["/p/0"], 2);
        assert_eq!(by_path[OTHER_PATHS], 5);
        assert!(log.snapshot().is_empty());
    }
}
