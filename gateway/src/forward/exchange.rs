//! The buffered exchange: a request whose whole body is known goes to the upstream through
//! Pingora's connector (pooled connections, HTTP/1.1 or HTTP/2), and the whole answer is read
//! back. Each attempt follows [`Attempts`]: the next endpoint after a failed connection, a
//! retry of a request safe to repeat after a reset, a timeout or a retryable status.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::RETRY_AFTER;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::{HttpSession as Http1Session, http_req_header_to_wire};
use pingora::upstreams::peer::{HttpPeer, Peer};
use policies::resilience::backoff::parse_retry_after;
use tokio::io::AsyncWriteExt;

use crate::forward::attempt::{Attempts, Next};
use crate::forward::error::UpstreamError;
use crate::forward::request;

/// The upstream's answer, read whole.
#[derive(Debug)]
pub struct Answer {
    /// Its head.
    pub head: ResponseHeader,
    /// Its body.
    pub body: Bytes,
}

/// Sends `req` (already rewritten for the upstream) with `body`, attempt after attempt as
/// `at` decides, and returns the answer of the last one.
pub async fn exchange(
    connector: &Connector,
    at: &mut Attempts,
    req: RequestHeader,
    body: &Bytes,
) -> Result<Answer, UpstreamError> {
    let Some(pool) = at.pool().cloned() else {
        return Err(UpstreamError::Internal);
    };
    let max_response = pool.upstream.max_response_bytes;
    let tls = pool.upstream.transport.tls;
    // the head is only kept for another attempt when one may follow its sending; otherwise
    // the first attempt takes it, without a copy
    let mut req = Some(req);
    loop {
        let index = at.next().await?;
        // the pool's own peer: the whole exchange is bounded by the caller's total timeout,
        // and each read and write by the session timeouts set below
        let Some(peer) = pool.endpoint(index).map(|ep| &ep.peer) else {
            return Err(UpstreamError::Internal);
        };
        let (mut session, reused) = match connector.get_http_session(peer).await {
            Ok(got) => got,
            Err(e) => match at.failed(UpstreamError::from_pingora(&e)) {
                Next::Retry => continue,
                Next::Stop => return Err(UpstreamError::from_pingora(&e)),
            },
        };
        at.sending();
        let timeout = Some(at.read_timeout());
        session.set_read_timeout(timeout);
        session.set_write_timeout(timeout);
        let h2 = matches!(session, HttpSession::H2(_));
        let Some(original) = (if at.may_resend(reused) {
            req.clone()
        } else {
            req.take()
        }) else {
            return Err(UpstreamError::Internal);
        };
        let mut head = match request::for_connection(original, body.len(), h2, tls) {
            Ok(h) => h,
            Err(_) => {
                at.failed(UpstreamError::Internal);
                return Err(UpstreamError::Internal);
            }
        };
        // a traced request names each attempt's own span as the upstream's parent
        if let Some(tp) = at.attempt_traceparent() {
            let _ = head.insert_header(request::TRACEPARENT_NAME, tp);
        }
        let sent = match session {
            HttpSession::H1(h1) if in_one_write(&head, body) => {
                write_whole(h1, peer, &head, body, timeout)
                    .await
                    .map(HttpSession::H1)
                    .map_err(|e| (None, e))
            }
            other => write_parts(other, head, body).await,
        };
        let read = match sent {
            Ok(mut s) => match read_head(&mut s).await {
                Ok(h) => Ok((s, h)),
                Err(e) => Err((Some(s), e)),
            },
            Err(failed) => Err(failed),
        };
        let (mut session, answer_head) = match read {
            Ok(h) => h,
            Err((session, e)) => {
                if let Some(mut session) = session {
                    session.shutdown().await;
                }
                let next = if reused {
                    at.failed_on_reused(e)
                } else {
                    at.failed(e)
                };
                match next {
                    Next::Retry => continue,
                    Next::Stop => return Err(e),
                }
            }
        };
        let retry_after = answer_head
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| parse_retry_after(v.as_bytes(), std::time::SystemTime::now()));
        match at.answered(answer_head.status.as_u16(), retry_after) {
            Next::Retry => {
                // read the refused answer out so the connection can serve the next request
                match read_body(&mut session, max_response).await {
                    Ok(_) => {
                        connector
                            .release_http_session(session, peer, peer.idle_timeout())
                            .await
                    }
                    Err(_) => session.shutdown().await,
                }
                continue;
            }
            Next::Stop => {}
        }
        return match read_body(&mut session, max_response).await {
            Ok(body) => {
                connector
                    .release_http_session(session, peer, peer.idle_timeout())
                    .await;
                Ok(Answer {
                    head: answer_head,
                    body,
                })
            }
            Err(e) => {
                session.shutdown().await;
                if let Some(pool) = at.pool() {
                    pool.metrics.error(&e);
                }
                Err(e)
            }
        };
    }
}

/// The largest body written together with its head.
const ONE_WRITE_MAX_BODY: usize = 64 * 1024;

/// Whether the request goes in one write on HTTP/1.1: a small body, and not `HEAD` (the
/// session rebuilt after that write does not know the request, and would expect a body in
/// the answer to a `HEAD`).
fn in_one_write(head: &RequestHeader, body: &Bytes) -> bool {
    !body.is_empty() && body.len() <= ONE_WRITE_MAX_BODY && head.method != http::Method::HEAD
}

/// Writes head and body in one write and flush. Pingora's HTTP/1 client flushes the head on
/// its own before the body: a second system call, a second segment and a second wake-up of the
/// upstream for every request with a body, about a twentieth of a 2 KB order's whole cost.
/// The session is rebuilt on the same connection (as Pingora's connector builds it) to read
/// the answer; it holds no state of the request but its method, which `in_one_write` rules on.
async fn write_whole(
    h1: Http1Session,
    peer: &HttpPeer,
    head: &RequestHeader,
    body: &Bytes,
    timeout: Option<Duration>,
) -> Result<Http1Session, UpstreamError> {
    // the same serialization and checks Pingora's client applies to a head
    let mut wire = http_req_header_to_wire(head).ok_or(UpstreamError::Protocol)?;
    wire.extend_from_slice(body);
    let mut stream = h1.into_inner();
    let write = async {
        stream.write_all(&wire).await?;
        stream.flush().await
    };
    let written = match timeout {
        Some(t) => match tokio::time::timeout(t, write).await {
            Ok(r) => r,
            Err(_) => return Err(UpstreamError::WriteTimeout),
        },
        None => write.await,
    };
    written.map_err(|_| UpstreamError::Reset)?;
    let mut h1 = Http1Session::new_with_options(stream, peer);
    h1.read_timeout = timeout;
    h1.write_timeout = timeout;
    Ok(h1)
}

/// Writes the request through Pingora's session: HTTP/2, and HTTP/1.1 bodies too large or
/// absent for [`write_whole`].
async fn write_parts(
    mut up: HttpSession,
    head: Box<RequestHeader>,
    body: &Bytes,
) -> Result<HttpSession, (Option<HttpSession>, UpstreamError)> {
    let written = async {
        up.write_request_header(head).await?;
        if !body.is_empty() {
            up.write_request_body(body.clone(), true).await?;
        }
        up.finish_request_body().await
    }
    .await;
    match written {
        Ok(()) => Ok(up),
        Err(e) => Err((Some(up), UpstreamError::from_pingora(&e))),
    }
}

/// Reads the answer's head, past informational ones.
async fn read_head(up: &mut HttpSession) -> Result<ResponseHeader, UpstreamError> {
    let fail = |e: Box<pingora::Error>| UpstreamError::from_pingora(&e);
    loop {
        up.read_response_header().await.map_err(fail)?;
        match up.response_header() {
            Some(h)
                if h.status.is_informational() && h.status != StatusCode::SWITCHING_PROTOCOLS =>
            {
                continue;
            }
            Some(h) => return Ok(h.clone()),
            None => return Err(UpstreamError::Protocol),
        }
    }
}

async fn read_body(up: &mut HttpSession, max: u64) -> Result<Bytes, UpstreamError> {
    let mut out = BytesMut::new();
    while let Some(chunk) = up
        .read_response_body()
        .await
        .map_err(|e| UpstreamError::from_pingora(&e))?
    {
        if (out.len() + chunk.len()) as u64 > max {
            return Err(UpstreamError::ResponseTooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}
