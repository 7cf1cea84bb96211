//! The access log: one JSON object per request, serialized straight from the request's context
//! into a per-thread buffer (no tracing event, no intermediate values) and written to stdout in
//! batches by one background thread, so that no request waits on a write(2).
//!
//! Lines keep the shape of the gateway's other JSON logs (`timestamp`, `level`, `target`,
//! `message`, then the fields) and obey the same filter: `GATEWAY_LOG=...,access=off` turns
//! them off. A line is never lost silently: if stdout falls more than [`MAX_PENDING`] bytes
//! behind (or fails), lines are dropped and counted in `gateway_access_log_dropped_total`.

use std::cell::RefCell;
use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus::IntCounter;
use serde::{Serialize, Serializer};

/// Bytes waiting for the writer beyond which new lines are dropped (and counted) instead of
/// growing memory without bound while stdout is blocked.
pub const MAX_PENDING: usize = 16 << 20;
/// How long the writer lets lines gather after the first of a batch: one write(2) per batch.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// One access-log line. Field order is the order written.
#[derive(Serialize)]
pub struct AccessLine<'a> {
    /// When the request completed (RFC 3339, UTC, microseconds).
    pub timestamp: Timestamp,
    /// Always `INFO`.
    pub level: &'static str,
    /// Always `access` (the filter target).
    pub target: &'static str,
    /// Always `request`.
    pub message: &'static str,
    /// The request id (the client's when well formed, else generated).
    pub request_id: &'a str,
    /// The W3C trace id (32 hex digits), empty when none.
    pub trace_id: Hex<'a>,
    /// The client's address, empty when unknown.
    pub client: Ip,
    /// Request method.
    pub method: &'a str,
    /// Request path (no query).
    pub path: &'a str,
    /// The route that took the request, `-` for none.
    pub route: &'a str,
    /// The request's channel, `-` for none.
    pub channel: &'a str,
    /// The verified client certificate (mutual TLS): its subject common name, else its whole
    /// subject; `-` for none.
    pub client_cert: &'a str,
    /// SHA-256 fingerprint of that certificate (hex), empty for none.
    pub client_cert_sha256: &'a str,
    /// The authenticated caller, `<policy kind>:<id>`: `jwt:<sub>` (else its `client_id`),
    /// `webhook_signature:<channel>`, `ebay_signature:<channel>`, `client_cert:<CN>`. Absent
    /// when no authentication accepted the request. (`client` is the peer's address.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<&'a str>,
    /// Status sent to the client (0 when none was).
    pub status: u16,
    /// The upstream peer, `-` for none.
    pub upstream: &'a str,
    /// The upstream's status (0 when none).
    pub upstream_status: u16,
    /// Upstream attempts made (failed connections and retries included).
    pub attempts: u32,
    /// Time from request head to the end of the response, in milliseconds.
    pub latency_ms: f64,
    /// Request body bytes read.
    pub bytes_in: usize,
    /// Response body bytes sent.
    pub bytes_out: usize,
    /// `forwarded`, `refused`, `policy`, `upstream_error` or `incomplete`.
    pub outcome: &'static str,
    /// The policy that answered, `-` for none.
    pub policy: &'a str,
    /// The reason of a refusal or failure.
    pub reason: &'a str,
    /// Pingora's error type, empty for none.
    pub error: &'a str,
}

impl AccessLine<'_> {
    /// Appends the line as JSON: the bytes serde's derive above writes (a test holds the two
    /// to each other), but with the field names as constants and the values written directly,
    /// which costs a third of the serializer's instructions on every request.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut stamp = [0u8; 27];
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(rfc3339_micros(self.timestamp.0, &mut stamp).as_bytes());
        str_field(out, b"\",\"level\":", self.level);
        str_field(out, b",\"target\":", self.target);
        str_field(out, b",\"message\":", self.message);
        str_field(out, b",\"request_id\":", self.request_id);
        out.extend_from_slice(b",\"trace_id\":\"");
        let mut hex = [0u8; 64];
        for chunk in self.trace_id.0.chunks(32) {
            let n = crate::ids::hex_into(chunk, &mut hex);
            out.extend_from_slice(&hex[..n]);
        }
        out.extend_from_slice(b"\",\"client\":\"");
        if let Some(ip) = self.client.0 {
            write_ip(out, ip);
        }
        str_field(out, b"\",\"method\":", self.method);
        str_field(out, b",\"path\":", self.path);
        str_field(out, b",\"route\":", self.route);
        str_field(out, b",\"channel\":", self.channel);
        str_field(out, b",\"client_cert\":", self.client_cert);
        str_field(out, b",\"client_cert_sha256\":", self.client_cert_sha256);
        if let Some(caller) = self.caller {
            str_field(out, b",\"caller\":", caller);
        }
        int_field(out, b",\"status\":", self.status);
        str_field(out, b",\"upstream\":", self.upstream);
        int_field(out, b",\"upstream_status\":", self.upstream_status);
        int_field(out, b",\"attempts\":", self.attempts);
        out.extend_from_slice(b",\"latency_ms\":");
        // serde_json's own float writer (shortest round trip; `null` when not finite)
        if serde_json::to_writer(&mut *out, &self.latency_ms).is_err() {
            out.extend_from_slice(b"null");
        }
        int_field(out, b",\"bytes_in\":", self.bytes_in);
        int_field(out, b",\"bytes_out\":", self.bytes_out);
        str_field(out, b",\"outcome\":", self.outcome);
        str_field(out, b",\"policy\":", self.policy);
        str_field(out, b",\"reason\":", self.reason);
        str_field(out, b",\"error\":", self.error);
        out.push(b'}');
    }
}

/// Appends `key` (the separator, the quoted name and the colon) and `s` as a JSON string.
fn str_field(out: &mut Vec<u8>, key: &[u8], s: &str) {
    out.extend_from_slice(key);
    transforms::json_text::write_str(out, s);
}

/// Appends `key` and an integer.
fn int_field(out: &mut Vec<u8>, key: &[u8], n: impl itoa::Integer) {
    out.extend_from_slice(key);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends an address as `Display` writes it; IPv4, nearly every client, without the
/// formatting machinery.
pub fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(n.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            // writing to a Vec cannot fail
            let _ = write!(out, "{v6}");
        }
    }
}

/// Bytes written as lowercase hex (a JSON string), without allocating.
pub struct Hex<'a>(pub &'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&HexDisplay(self.0))
    }
}

/// Lowercase hex of some bytes, for `Display`.
pub struct HexDisplay<'a>(pub &'a [u8]);

impl fmt::Display for HexDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        for chunk in self.0.chunks(32) {
            let n = crate::ids::hex_into(chunk, &mut buf);
            // hex digits are ASCII
            f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

/// An IP address written as a JSON string (empty for none), without allocating.
pub struct Ip(pub Option<IpAddr>);

impl Serialize for Ip {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(ip) => s.collect_str(ip),
            None => s.serialize_str(""),
        }
    }
}

/// A UTC time written as RFC 3339 with microseconds (`2026-11-28T12:00:00.123456Z`).
pub struct Timestamp(pub SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 27];
        let text = rfc3339_micros(self.0, &mut buf);
        s.serialize_str(text)
    }
}

/// Formats `t` into `buf` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn rfc3339_micros(t: SystemTime, buf: &mut [u8; 27]) -> &str {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let micros = d.subsec_micros();
    // civil date from days since the epoch (Howard Hinnant's algorithm)
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = secs % 86_400;
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 6, u64::from(micros));
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        buf[at] = c;
    }
    buf[26] = b'Z';
    // every byte written above is ASCII
    std::str::from_utf8(buf).unwrap_or("1970-01-01T00:00:00.000000Z")
}

struct Shared {
    pending: Mutex<Vec<u8>>,
    ready: Condvar,
    /// Held from taking a batch to having written it, so batches reach stdout in order.
    writing: Mutex<()>,
    dropped: IntCounter,
}

/// The access-log writer (cheap to clone; the background thread starts with the first line).
#[derive(Clone)]
pub struct AccessLog {
    shared: Arc<Shared>,
    /// Whether the writer thread runs (set with the first line).
    thread: Arc<OnceLock<bool>>,
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // a panic while holding the lock leaves plain bytes behind: still usable
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AccessLog {
    /// A writer counting dropped lines in `dropped`.
    pub fn new(dropped: IntCounter) -> Self {
        AccessLog {
            shared: Arc::new(Shared {
                pending: Mutex::new(Vec::with_capacity(64 * 1024)),
                ready: Condvar::new(),
                writing: Mutex::new(()),
                dropped,
            }),
            thread: Arc::new(OnceLock::new()),
        }
    }

    /// Whether access lines are wanted (the `access` target at `info`, see `GATEWAY_LOG`).
    pub fn enabled() -> bool {
        tracing::enabled!(target: "access", tracing::Level::INFO)
    }

    /// Queues one line; it reaches stdout within a few milliseconds.
    pub fn write(&self, line: &AccessLine<'_>) {
        SCRATCH.with(|scratch| {
            let Ok(mut buf) = scratch.try_borrow_mut() else {
                self.shared.dropped.inc();
                return;
            };
            buf.clear();
            line.write_json(&mut buf);
            buf.push(b'\n');
            self.push(&buf);
        });
    }

    fn push(&self, bytes: &[u8]) {
        if !*self.thread.get_or_init(|| self.spawn()) {
            // no writer thread: write inline rather than lose lines
            let _order = lock(&self.shared.writing);
            emit(&self.shared, bytes);
            return;
        }
        let was_empty = {
            let mut pending = lock(&self.shared.pending);
            if pending.len() + bytes.len() > MAX_PENDING {
                drop(pending);
                self.shared.dropped.inc();
                return;
            }
            let was_empty = pending.is_empty();
            pending.extend_from_slice(bytes);
            was_empty
        };
        // only the first line of a batch wakes the writer: one wake-up per batch
        if was_empty {
            self.shared.ready.notify_one();
        }
    }

    fn spawn(&self) -> bool {
        let shared = self.shared.clone();
        let started = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                policies::background::yield_to_request_workers();
                writer(&shared);
            });
        if let Err(e) = &started {
            tracing::error!(error = %e, "cannot start the access-log writer; lines are written inline");
        }
        started.is_ok()
    }

    /// Writes every queued line now (at shutdown).
    pub fn flush(&self) {
        let _order = lock(&self.shared.writing);
        let batch = std::mem::take(&mut *lock(&self.shared.pending));
        emit(&self.shared, &batch);
    }
}

fn emit(shared: &Shared, batch: &[u8]) {
    if batch.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out.write_all(batch).and_then(|()| out.flush()).is_err() {
        let lines = batch.iter().filter(|b| **b == b'\n').count();
        shared.dropped.inc_by(lines as u64);
    }
}

fn writer(shared: &Shared) {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        {
            let mut pending = lock(&shared.pending);
            while pending.is_empty() {
                pending = shared
                    .ready
                    .wait(pending)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        std::thread::sleep(BATCH_WINDOW);
        let _order = lock(&shared.writing);
        std::mem::swap(&mut *lock(&shared.pending), &mut batch);
        emit(shared, &batch);
        batch.clear();
        if batch.capacity() > 4 << 20 {
            batch.shrink_to(64 * 1024);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let mut buf = [0u8; 27];
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_732_795_200_123_456);
        assert_eq!(rfc3339_micros(t, &mut buf), "2024-11-28T12:00:00.123456Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // a leap day
        assert_eq!(rfc3339_micros(t, &mut buf), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn a_line_is_one_json_object_with_escaped_strings() {
        let line = AccessLine {
            timestamp: Timestamp(SystemTime::UNIX_EPOCH),
            level: "INFO",
            target: "access",
            message: "request",
            request_id: "r-1",
            trace_id: Hex(&[0xab, 0x01]),
            client: Ip(Some("127.0.0.1".parse().unwrap())),
            method: "GET",
            path: "/a\"b\\c\n",
            route: "-",
            channel: "amazon",
            client_cert: "-",
            client_cert_sha256: "",
            caller: None,
            status: 200,
            upstream: "127.0.0.1:9",
            upstream_status: 201,
            attempts: 1,
            latency_ms: 0.25,
            bytes_in: 3,
            bytes_out: 4,
            outcome: "forwarded",
            policy: "-",
            reason: "",
            error: "",
        };
        let mut written = Vec::new();
        line.write_json(&mut written);
        let text = String::from_utf8(written).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\n");
        assert_eq!(v["trace_id"], "ab01");
        assert_eq!(v["client"], "127.0.0.1");
        // absent, not null, when nobody authenticated
        assert!(v.get("caller").is_none(), "{text}");
        assert_eq!(v["message"], "request");
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_ms"], 0.25);
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000000Z");
        assert!(text.starts_with("{\"timestamp\""), "{text}");
    }

    /// The hand-written line is byte for byte what serde writes for the same fields: names,
    /// order, escapes, numbers, the absent caller, both address families.
    #[test]
    fn the_written_line_is_what_serde_writes() {
        let trace = [
            0x4bu8, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36,
        ];
        let v6: IpAddr = "2001:db8::ff00:42:8329".parse().unwrap();
        let strings = [
            "",
            "plain",
            "/a\"b\\c\n\t\u{1}",
            "caf\u{e9} \u{1f600}",
            "\u{7f}\u{1f}",
        ];
        let mut checked = 0;
        for (i, text) in strings.iter().enumerate() {
            for client in [None, Some("10.0.255.7".parse().unwrap()), Some(v6)] {
                for latency in [0.0, 0.25, 1234.5678, f64::NAN] {
                    let line = AccessLine {
                        timestamp: Timestamp(
                            SystemTime::UNIX_EPOCH
                                + Duration::from_micros(1_764_806_400_123_456 + i as u64),
                        ),
                        level: "INFO",
                        target: "access",
                        message: "request",
                        request_id: text,
                        trace_id: Hex(if i % 2 == 0 { &trace } else { &[] }),
                        client: Ip(client),
                        method: "POST",
                        path: text,
                        route: text,
                        channel: "amazon",
                        client_cert: text,
                        client_cert_sha256: "ab",
                        caller: (i % 2 == 1).then_some(*text),
                        status: 503,
                        upstream: "127.0.0.1:9",
                        upstream_status: u16::try_from(i).unwrap(),
                        attempts: u32::MAX,
                        latency_ms: latency,
                        bytes_in: usize::MAX,
                        bytes_out: i,
                        outcome: "forwarded",
                        policy: text,
                        reason: text,
                        error: text,
                    };
                    let mut written = Vec::new();
                    line.write_json(&mut written);
                    let expected = serde_json::to_vec(&line).unwrap();
                    assert_eq!(
                        String::from_utf8_lossy(&written),
                        String::from_utf8_lossy(&expected)
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 60);
    }

    #[test]
    fn lines_past_the_bound_are_counted_not_kept() {
        let dropped = IntCounter::new("d", "d").unwrap();
        let log = AccessLog::new(dropped.clone());
        // no writer thread: fill the queue directly
        let _ = log.thread.set(true);
        let big = vec![b'x'; MAX_PENDING - 10];
        log.push(&big);
        log.push(b"0123456789abcdef\n");
        assert_eq!(dropped.get(), 1);
        assert_eq!(lock(&log.shared.pending).len(), MAX_PENDING - 10);
    }
}
