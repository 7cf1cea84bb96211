//! A raw HTTP/1.1 upstream for tests that check the exact bytes the gateway sends: it records
//! every request's head and body per connection (decoding `Content-Length` and chunked
//! bodies), flags any byte it cannot parse as the start of a request, and answers each request
//! with a fixed JSON document on the same keep-alive connection.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// Which accepted connection it came on (0 for the first).
    pub connection: usize,
    /// The request line, without CRLF.
    pub request_line: String,
    /// Header lines as sent (name and value, name case kept).
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// Whether the body was chunked.
    pub chunked: bool,
}

impl RawRequest {
    /// The values of a header (name compared without case).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct Log {
    requests: Vec<RawRequest>,
    errors: Vec<String>,
}

/// The running listener (threads end with the test process).
pub struct RawUpstream {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    connections: Arc<AtomicUsize>,
}

impl RawUpstream {
    /// Listens on 127.0.0.1 (an ephemeral port) and answers `201` with `{"ok":true}`.
    pub fn start() -> std::io::Result<RawUpstream> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Log::default()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (l, c) = (log.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let n = c.fetch_add(1, Ordering::SeqCst);
                let l = l.clone();
                std::thread::spawn(move || serve(stream, n, &l));
            }
        });
        Ok(RawUpstream {
            addr,
            log,
            connections,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The requests so far, in arrival order.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
            .clone()
    }

    /// Everything that could not be parsed as a request (stray bytes, bad framing).
    pub fn errors(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .errors
            .clone()
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

const ANSWER: &[u8] = b"{\"ok\":true}";

fn serve(stream: TcpStream, connection: usize, log: &Mutex<Log>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        match read_request(&mut reader, connection) {
            Ok(Some(req)) => {
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .requests
                    .push(req);
                let head = format!(
                    "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    ANSWER.len()
                );
                if out.write_all(head.as_bytes()).is_err() || out.write_all(ANSWER).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .errors
                    .push(format!("connection {connection}: {e}"));
                return;
            }
        }
    }
}

fn line(r: &mut impl BufRead) -> Result<Option<String>, String> {
    let mut buf = Vec::new();
    match r.read_until(b'\n', &mut buf) {
        Ok(0) => Ok(None),
        Ok(_) => {
            if !buf.ends_with(b"\r\n") {
                return Err(format!(
                    "a line without CRLF: {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            buf.truncate(buf.len() - 2);
            String::from_utf8(buf)
                .map(Some)
                .map_err(|e| format!("a line that is not UTF-8: {e}"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn read_request(r: &mut impl BufRead, connection: usize) -> Result<Option<RawRequest>, String> {
    let Some(request_line) = line(r)? else {
        return Ok(None);
    };
    let parts: Vec<&str> = request_line.split(' ').collect();
    if parts.len() != 3 || !parts[2].starts_with("HTTP/") || parts[0].is_empty() {
        return Err(format!("not a request line: {request_line:?}"));
    }
    let mut headers = Vec::new();
    loop {
        let Some(l) = line(r)? else {
            return Err("the connection ended inside a request head".into());
        };
        if l.is_empty() {
            break;
        }
        let (name, value) = l
            .split_once(':')
            .ok_or_else(|| format!("not a header line: {l:?}"))?;
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let mut req = RawRequest {
        connection,
        request_line,
        headers,
        body: Vec::new(),
        chunked: false,
    };
    let chunked = req
        .header_values("transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        req.chunked = true;
        loop {
            let size_line = line(r)?.ok_or("the connection ended inside a chunked body")?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("not a chunk size: {size_line:?}"))?;
            if size == 0 {
                // trailers, then the empty line
                loop {
                    let t = line(r)?.ok_or("the connection ended inside trailers")?;
                    if t.is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            req.body.extend_from_slice(&chunk);
            let end = line(r)?.ok_or("the connection ended after a chunk")?;
            if !end.is_empty() {
                return Err(format!("a chunk longer than its size: {end:?}"));
            }
        }
    } else if let Some(len) = req.header_values("content-length").first() {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad content-length {len:?}"))?;
        req.body = vec![0; len];
        r.read_exact(&mut req.body).map_err(|e| e.to_string())?;
    }
    Ok(Some(req))
}
