//! The strict HTTP/1 edge: a layer around Pingora's HTTP app that reads every request head
//! itself, within a whole-head deadline and the head-size limit, checks it
//! ([`framing::check_h1_head`]), and only then hands the connection to Pingora, whose parser
//! reads the same bytes again from a replaying stream wrapper. A refused head is answered here
//! with problem+json (request id, `Connection: close`), counted in
//! `gateway_edge_rejections_total{reason}`, written to the access log, and the connection is
//! closed: nothing of it reaches Pingora or an upstream. HTTP/2 connections (ALPN `h2`) go
//! straight to Pingora, whose h2 layer frames them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use policies::problem::{PROBLEM_CONTENT_TYPE, Problem};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::access_log::{AccessLine, AccessLog, Hex, Ip, Timestamp};
use crate::framing::{self, EdgeRejection, HeadCheck};
use crate::ids;
use crate::metrics::Metrics;
use crate::snapshot::ConfigStore;

/// How long a kept-alive connection may wait for its next request (Pingora's own default).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// How long writing a refusal may take before the connection is simply dropped.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After a refusal, what the client may still have in flight is read and dropped for at most
/// this long (and [`LINGER_BYTES`]), so closing does not reset the connection under the
/// answer before the client has read it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 << 10;
/// Room kept free in the head buffer before each read.
const READ_CHUNK: usize = 4096;

/// The strict edge around an HTTP app (the gateway's `HttpProxy`).
pub struct StrictEdge<A> {
    inner: Arc<A>,
    store: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
    access_log: AccessLog,
}

impl<A> StrictEdge<A> {
    /// Wraps `inner`; limits are read from the serving snapshot of `store` for each request.
    pub fn new(
        inner: A,
        store: Arc<ConfigStore>,
        metrics: Arc<Metrics>,
        access_log: AccessLog,
    ) -> Self {
        StrictEdge {
            inner: Arc::new(inner),
            store,
            metrics,
            access_log,
        }
    }
}

/// The connection as Pingora sees it: the bytes the edge read (the checked head and whatever
/// followed it) are replayed first, then reads go to the socket, but never past the end of the
/// checked request when its length is known (no body, or a `Content-Length`): Pingora then never
/// reads a pipelined next request, which stays here to be checked like the first. One
/// allocation per connection: Pingora hands the box back for each kept-alive request.
#[derive(Debug)]
pub struct EdgeStream {
    inner: Stream,
    pending: BytesMut,
    /// Bytes of the current request Pingora has yet to read; `None`: unknown (chunked body).
    remaining: Option<u64>,
}

impl EdgeStream {
    fn new(inner: Stream) -> Self {
        EdgeStream {
            inner,
            pending: BytesMut::with_capacity(READ_CHUNK),
            remaining: None,
        }
    }

    fn reserve(&mut self) {
        if self.pending.capacity() - self.pending.len() < READ_CHUNK / 4 {
            self.pending.reserve(READ_CHUNK);
        }
    }

    /// Reads more of the socket into the head buffer.
    async fn fill(&mut self) -> io::Result<usize> {
        self.reserve();
        self.inner.read_buf(&mut self.pending).await
    }

    fn consumed(&mut self, n: usize) {
        if let Some(r) = &mut self.remaining {
            *r = r.saturating_sub(n as u64);
        }
    }

    /// A read once the whole request was handed on (Pingora probes for a client that goes
    /// away while it waits for the upstream): bytes of a pipelined next request are kept for
    /// the edge and the read stays pending, as Pingora's own pipelining does; end of stream
    /// and errors pass.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.pending.is_empty() {
            return Poll::Pending;
        }
        // straight into the head buffer's spare room: no scratch buffer to zero on each probe
        // (Pingora probes once or twice per proxied request)
        self.reserve();
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.pending) {
            Poll::Ready(Ok(n)) if n > 0 => Poll::Pending,
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for EdgeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let want = match this.remaining {
            Some(0) => return this.poll_idle(cx),
            Some(r) => usize::try_from(r)
                .unwrap_or(usize::MAX)
                .min(buf.remaining()),
            None => buf.remaining(),
        };
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        if !this.pending.is_empty() {
            let n = this.pending.len().min(want);
            buf.put_slice(&this.pending[..n]);
            this.pending.advance(n);
            this.consumed(n);
            return Poll::Ready(Ok(()));
        }
        let n = if want == buf.remaining() {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            buf.filled().len() - before
        } else {
            let mut sub = ReadBuf::new(buf.initialize_unfilled_to(want));
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut sub))?;
            let n = sub.filled().len();
            buf.advance(n);
            n
        };
        this.consumed(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for EdgeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for EdgeStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await;
    }
}

impl UniqueID for EdgeStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for EdgeStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for EdgeStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for EdgeStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for EdgeStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for EdgeStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.pending.is_empty() {
            self.inner.try_peek(buf).await
        } else {
            // replayed bytes are not on the socket any more; peeking them is not offered
            Ok(false)
        }
    }
}

/// What reading a request head ended in.
enum Head {
    /// A checked head is in the buffer.
    Ready,
    /// The client went away, or was idle between requests: close without a word.
    Gone,
    /// Refuse it. The instant is when the head began (the start of its deadline), which the
    /// refusal's latency counts from.
    Refused(Refusal, Instant),
}

/// A refused head, with what is known of the request.
struct Refusal {
    rejection: EdgeRejection,
    method: String,
    path: String,
    request_id: Option<String>,
}

impl From<EdgeRejection> for Refusal {
    fn from(rejection: EdgeRejection) -> Self {
        Refusal {
            rejection,
            method: String::new(),
            path: String::new(),
            request_id: None,
        }
    }
}

/// Whether the connection is kept for another request.
enum Served {
    Again(Box<EdgeStream>, Option<HttpPersistentSettings>),
    Closed,
}

impl<A> StrictEdge<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Reads one request head into `conn.pending` and checks it. `since` is when the head's
    /// deadline starts (the accept of a new connection); `None` on a kept-alive connection,
    /// where the deadline starts at the request's first byte and the wait before it is the
    /// keep-alive idle time. A refusal's latency counts from the same instant, so a request
    /// refused on a kept-alive connection does not count the idle time before it.
    async fn read_head(
        &self,
        conn: &mut EdgeStream,
        since: Option<Instant>,
        head_timeout: Duration,
        max_header_bytes: u64,
        shutdown: &ShutdownWatch,
    ) -> Head {
        let began = match since {
            Some(t) => t,
            None => {
                if conn.pending.is_empty() {
                    if *shutdown.borrow() {
                        return Head::Gone;
                    }
                    let mut stop = shutdown.clone();
                    tokio::select! {
                        r = tokio::time::timeout(KEEPALIVE_IDLE, conn.fill()) => match r {
                            Ok(Ok(n)) if n > 0 => {}
                            _ => return Head::Gone,
                        },
                        _ = stop.changed() => return Head::Gone,
                    }
                }
                Instant::now()
            }
        };
        let deadline = began + head_timeout;
        // a head can only end at a line feed: parse again only when one arrived
        let mut scanned = 0;
        loop {
            if conn.pending[scanned..].contains(&b'\n')
                || conn.pending.len() as u64 > max_header_bytes
            {
                match framing::check_h1_head(&conn.pending, max_header_bytes) {
                    HeadCheck::Accepted { len, body } => {
                        conn.remaining = body.map(|b| len as u64 + b);
                        return Head::Ready;
                    }
                    HeadCheck::Partial => {}
                    HeadCheck::Refused {
                        rejection,
                        method,
                        path,
                        request_id,
                    } => {
                        let refusal = Refusal {
                            rejection,
                            method: method.to_owned(),
                            path: path.to_owned(),
                            request_id: request_id.map(str::to_owned),
                        };
                        return Head::Refused(refusal, began);
                    }
                }
            }
            scanned = conn.pending.len();
            match tokio::time::timeout_at(deadline.into(), conn.fill()).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Head::Gone,
                // nothing at all on a fresh connection (a preconnect) is closed quietly
                Err(_) if conn.pending.is_empty() => return Head::Gone,
                Err(_) => {
                    return Head::Refused(framing::head_timeout(head_timeout).into(), began);
                }
            }
        }
    }

    /// Answers a refused head, counts and logs it, and lets the connection go.
    async fn refuse(&self, conn: &mut EdgeStream, refusal: Refusal, started: Instant) {
        let Refusal {
            rejection: r,
            method,
            path,
            request_id,
        } = refusal;
        let request_id = request_id.unwrap_or_else(ids::new_request_id);
        let status = r.status.as_u16();
        self.metrics
            .edge_rejections
            .with_label_values(&[r.reason])
            .inc();
        let snapshot = self.store.current();
        snapshot.route_metrics.observe(
            &self.metrics,
            None,
            None,
            status,
            started.elapsed().as_secs_f64(),
        );
        drop(snapshot);

        let problem = Problem::new(r.status, r.slug, r.title).with_detail(r.detail);
        let body = problem.to_json(&path, &request_id);
        let head = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: {PROBLEM_CONTENT_TYPE}\r\n{}: {request_id}\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            r.status.canonical_reason().unwrap_or(""),
            ids::REQUEST_ID.as_str(),
            body.len()
        );
        let written = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
            conn.inner.write_all(head.as_bytes()).await?;
            conn.inner.write_all(&body).await?;
            conn.inner.flush().await?;
            AsyncWriteExt::shutdown(&mut conn.inner).await
        })
        .await;

        if AccessLog::enabled() {
            let client = conn
                .inner
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
            self.access_log.write(&AccessLine {
                timestamp: Timestamp(SystemTime::now()),
                level: "INFO",
                target: "access",
                message: "request",
                request_id: &request_id,
                trace_id: Hex(&[]),
                client: Ip(client),
                method: &method,
                path: &path,
                route: "-",
                channel: "-",
                client_cert: "-",
                client_cert_sha256: "",
                caller: None,
                status,
                upstream: "-",
                upstream_status: 0,
                attempts: 0,
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                bytes_in: 0,
                bytes_out: body.len(),
                outcome: "refused",
                policy: "-",
                reason: r.reason,
                error: "",
            });
        }
        if matches!(written, Ok(Ok(()))) {
            // read what the client still sends until it closes, briefly: closing a socket with
            // unread bytes resets it, and a reset can destroy the answer before it is read
            let mut sink = [0u8; 4096];
            let mut drained = 0;
            let _ = tokio::time::timeout(LINGER, async {
                while drained < LINGER_BYTES {
                    match conn.inner.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => drained += n,
                    }
                }
            })
            .await;
        }
    }

    /// Serves one request of an HTTP/1 connection: its head, then Pingora's handling.
    async fn serve_one(
        self: &Arc<Self>,
        mut conn: Box<EdgeStream>,
        settings: Option<HttpPersistentSettings>,
        accepted: Option<Instant>,
        shutdown: &ShutdownWatch,
    ) -> Served {
        let limits = self.store.current().set.limits;
        match self
            .read_head(
                &mut conn,
                accepted,
                limits.head_timeout,
                limits.max_header_bytes,
                shutdown,
            )
            .await
        {
            Head::Ready => {}
            Head::Gone => return Served::Closed,
            Head::Refused(r, began) => {
                self.refuse(&mut conn, r, began).await;
                return Served::Closed;
            }
        }
        let mut session = ServerSession::new_http1(conn);
        match settings {
            Some(s) => s.apply_to_session(&mut session),
            None => {
                // what Pingora's own HTTP/1 loop sets on a new connection
                session.set_keepalive(if *shutdown.borrow() {
                    None
                } else {
                    Some(KEEPALIVE_IDLE.as_secs())
                });
                session.set_keepalive_reuses_remaining(
                    self.inner
                        .server_options()
                        .and_then(|o| o.keepalive_request_limit),
                );
            }
        }
        // a body that stops arriving: each read waits at most this long (408, see proxy.rs)
        session.set_read_timeout(Some(limits.body_idle_timeout));
        let Some(reused) = self.inner.process_new_http(session, shutdown).await else {
            return Served::Closed;
        };
        let (stream, settings) = reused.consume();
        match stream.into_any().downcast::<EdgeStream>() {
            Ok(conn) => Served::Again(conn, settings),
            Err(_) => Served::Closed,
        }
    }
}

#[async_trait]
impl<A> ServerApp for StrictEdge<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        let mut accepted = Some(Instant::now());
        let mut conn = Box::new(EdgeStream::new(stream));
        let mut settings = None;
        loop {
            match self.serve_one(conn, settings, accepted, shutdown).await {
                Served::Again(c, s) => {
                    conn = c;
                    settings = s;
                    accepted = None;
                }
                Served::Closed => return None,
            }
        }
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.inner).await;
    }
}
