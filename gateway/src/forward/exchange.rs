//! The buffered exchange: a request whose whole body is known goes to the upstream through
//! Pingora's connector (pooled connections, HTTP/1.1 or HTTP/2), and the whole answer is read
//! back. Each attempt follows [`Attempts`]: the next endpoint after a failed connection, a
//! retry of a request safe to repeat after a reset, a timeout or a retryable status.

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http::header::RETRY_AFTER;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::Peer;
use policies::resilience::backoff::parse_retry_after;

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
        let answer_head = match send(&mut session, head, body).await {
            Ok(h) => h,
            Err(e) => {
                session.shutdown().await;
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

async fn send(
    up: &mut HttpSession,
    head: Box<RequestHeader>,
    body: &Bytes,
) -> Result<ResponseHeader, UpstreamError> {
    let fail = |e: Box<pingora::Error>| UpstreamError::from_pingora(&e);
    up.write_request_header(head).await.map_err(fail)?;
    if !body.is_empty() {
        up.write_request_body(body.clone(), true)
            .await
            .map_err(fail)?;
    }
    up.finish_request_body().await.map_err(fail)?;
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
