//! An OTLP/HTTP trace receiver on 127.0.0.1 for tests: it answers `POST /v1/traces` and decodes
//! each protobuf `ExportTraceServiceRequest` into the spans it carries; or, started as a dead
//! collector, it takes connections and never answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running receiver.
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    /// `service.name` of the resources received.
    services: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The string value of an attribute.
pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

/// The string attribute `key` of a span, if it has one.
pub fn str_attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(&span.attributes, key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// The integer attribute `key` of a span, if it has one.
pub fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(&span.attributes, key) {
        Some(any_value::Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

/// Reads one HTTP/1.1 request (head and a Content-Length body); `None` at the end of the
/// connection.
async fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 16 * 1024];
                let n = conn.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((head, body));
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl OtlpReceiver {
    /// A receiver that accepts every export.
    pub async fn start() -> Result<OtlpReceiver> {
        Self::start_inner(true).await
    }

    /// A dead collector: it accepts connections and reads, but never answers.
    pub async fn start_silent() -> Result<OtlpReceiver> {
        Self::start_inner(false).await
    }

    async fn start_inner(answer: bool) -> Result<OtlpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let services = Arc::new(Mutex::new(Vec::new()));
        let (s, sv) = (spans.clone(), services.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (s, sv) = (s.clone(), sv.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some((head, body)) = read_request(&mut conn, &mut buf).await {
                        if !answer {
                            continue;
                        }
                        let ok = head.starts_with("POST /v1/traces ")
                            && head
                                .to_ascii_lowercase()
                                .contains("content-type: application/x-protobuf");
                        let status = match ExportTraceServiceRequest::decode(&body[..]) {
                            Ok(req) if ok => {
                                for rs in req.resource_spans {
                                    let name = rs.resource.as_ref().and_then(|r| {
                                        match attr(&r.attributes, "service.name") {
                                            Some(any_value::Value::StringValue(n)) => {
                                                Some(n.clone())
                                            }
                                            _ => None,
                                        }
                                    });
                                    if let (Some(name), Ok(mut g)) = (name, sv.lock()) {
                                        g.push(name);
                                    }
                                    for ss in rs.scope_spans {
                                        if let Ok(mut g) = s.lock() {
                                            g.extend(ss.spans);
                                        }
                                    }
                                }
                                "200 OK"
                            }
                            _ => "400 Bad Request",
                        };
                        let resp =
                            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").into_bytes();
                        if conn.write_all(&resp).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(OtlpReceiver {
            addr,
            spans,
            services,
            task,
        })
    }

    /// The traces URL to configure.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// The `service.name` of every resource received so far.
    pub fn services(&self) -> Vec<String> {
        self.services.lock().map(|g| g.clone()).unwrap_or_default()
    }
}
