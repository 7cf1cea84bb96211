//! The attempts of one request: which endpoint each goes to, the `max_in_flight` slot it holds,
//! and after each one the decision to stop or try again (the next endpoint after a failed
//! connection; a retry with backoff, within the budget and the deadline, for a request safe to
//! repeat). Both the streaming and the buffered path drive a request through this.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::HeaderValue;
use pingora::upstreams::peer::HttpPeer;

use crate::forward::error::UpstreamError;
use crate::forward::pool::{AttemptResult, Chosen, InFlight, UpstreamPool, now, now_at};

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again (after the wait [`Attempts::next`] applies).
    Retry,
    /// This attempt's outcome is the request's.
    Stop,
}

/// One upstream attempt of a traced request (or a refusal to make one), for its span.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The attempt's span, the parent named in the `traceparent` it carries.
    pub span_id: [u8; 8],
    /// The endpoint, `-` when the forwarding layer refused before choosing one.
    pub endpoint: Arc<str>,
    /// When it began.
    pub started: Instant,
    /// When it ended.
    pub ended: Option<Instant>,
    /// Whether the request was sent on a connection.
    pub sent: bool,
    /// The upstream's status.
    pub status: Option<u16>,
    /// The failure's kind.
    pub error: Option<&'static str>,
    /// Why another attempt followed it, if one did.
    pub retry: Option<&'static str>,
}

#[derive(Debug)]
struct Current {
    chosen: Chosen,
    started: Instant,
    sent: bool,
}

/// The forwarding state of one request.
#[derive(Debug, Default)]
pub struct Attempts {
    pool: Option<Arc<UpstreamPool>>,
    start: usize,
    offset: usize,
    current: Option<Current>,
    slot: Option<InFlight>,
    wait: Option<Duration>,
    /// Attempts made (failed connections included).
    pub count: u32,
    sent: u32,
    retries: u32,
    connect_failures: u32,
    stale_retries: u32,
    /// The endpoint of the latest attempt, as logged.
    pub peer: Option<Arc<str>>,
    /// When the whole exchange must be over.
    pub deadline: Option<Instant>,
    /// Whether the request may have reached the upstream.
    pub forwarded: bool,
    /// The status of the latest answer.
    pub status: Option<u16>,
    /// Whether the request may be repeated once it reached the upstream.
    pub repeatable: bool,
    /// The upstream `Idempotency-Key` every attempt of this request carries, when it has one.
    pub idempotency_key: Option<HeaderValue>,
    /// The trace id and flags of a traced request: its attempts are then recorded.
    trace: Option<([u8; 16], u8)>,
    /// The attempts of a traced request, in order (empty when not traced).
    pub traced: Vec<AttemptRecord>,
}

impl Attempts {
    /// Starts forwarding to `pool`; the exchange must end by `deadline`.
    pub fn begin(&mut self, pool: &Arc<UpstreamPool>, deadline: Instant, repeatable: bool) {
        self.start = pool.start();
        if let Some(b) = pool.budget() {
            b.record_request(now());
        }
        self.pool = Some(pool.clone());
        self.deadline = Some(deadline);
        self.repeatable = repeatable;
    }

    /// Records each attempt of this request (in [`Attempts::traced`]) under `trace_id`.
    pub fn trace(&mut self, trace_id: [u8; 16], flags: u8) {
        self.trace = Some((trace_id, flags));
    }

    /// The `traceparent` of the current attempt of a traced request: its own span is the
    /// upstream's parent.
    pub fn attempt_traceparent(&self) -> Option<HeaderValue> {
        let (trace_id, flags) = self.trace.as_ref()?;
        let last = self.traced.last().filter(|a| a.ended.is_none())?;
        Some(crate::ids::traceparent(trace_id, &last.span_id, *flags))
    }

    fn last_traced(&mut self) -> Option<&mut AttemptRecord> {
        self.traced.last_mut()
    }

    /// The pool, once begun.
    pub fn pool(&self) -> Option<&Arc<UpstreamPool>> {
        self.pool.as_ref()
    }

    fn left(&self) -> Duration {
        self.left_at(Instant::now())
    }

    fn left_at(&self, now: Instant) -> Duration {
        self.deadline
            .map_or(Duration::MAX, |d| d.saturating_duration_since(now))
    }

    /// Waits as the last decision asked, takes a `max_in_flight` slot and chooses the endpoint
    /// of the next attempt.
    pub async fn next(&mut self) -> Result<usize, UpstreamError> {
        let Some(pool) = self.pool.clone() else {
            return Err(UpstreamError::Internal);
        };
        if let Some(wait) = self.wait.take() {
            // the slot is not held while waiting: others may use the upstream meanwhile
            self.slot = None;
            tokio::time::sleep(wait.min(self.left())).await;
        }
        // the clock is read again only after a wait: a request that waits for nothing (most)
        // reads it twice here, where each wait bound used to read it anew
        let mut left = self.left();
        if left.is_zero() {
            return Err(self.refuse(&pool, UpstreamError::TotalTimeout));
        }
        let queue_timeout = pool.upstream.resilience.queue_timeout;
        match pool.pace(queue_timeout.min(left)).await {
            Ok(true) => left = self.left(),
            Ok(false) => {}
            Err(e) => return Err(self.refuse(&pool, e)),
        }
        if self.slot.is_none() {
            match pool.slot(queue_timeout.min(left)).await {
                Ok(slot) => self.slot = Some(slot),
                Err(e) => return Err(self.refuse(&pool, e)),
            }
        }
        let started = Instant::now();
        let (chosen, offset) = match pool.choose(self.start, self.offset, now_at(started)) {
            Ok(c) => c,
            Err(e) => return Err(self.refuse(&pool, e)),
        };
        self.offset = offset;
        self.count += 1;
        if let Some(ep) = pool.endpoint(chosen.index) {
            ep.metrics.attempts.inc();
            ep.in_flight.fetch_add(1, Ordering::Relaxed);
            self.peer = Some(ep.label.clone());
            if self.trace.is_some() {
                self.traced.push(AttemptRecord {
                    span_id: crate::ids::new_span_id(),
                    endpoint: ep.label.clone(),
                    started,
                    ended: None,
                    sent: false,
                    status: None,
                    error: None,
                    retry: None,
                });
            }
        }
        self.current = Some(Current {
            chosen,
            started,
            sent: false,
        });
        Ok(chosen.index)
    }

    fn refuse(&mut self, pool: &UpstreamPool, e: UpstreamError) -> UpstreamError {
        pool.metrics.error(&e);
        if self.trace.is_some() {
            let now = Instant::now();
            self.traced.push(AttemptRecord {
                span_id: crate::ids::new_span_id(),
                endpoint: Arc::from("-"),
                started: now,
                ended: Some(now),
                sent: false,
                status: None,
                error: Some(e.kind()),
                retry: None,
            });
        }
        self.slot = None;
        e
    }

    /// The peer of the current attempt, with its timeouts trimmed to the time left when the
    /// attempt started (`next` chose it just before, without a wait in between).
    pub fn peer(&self) -> Option<Box<HttpPeer>> {
        let pool = self.pool.as_ref()?;
        let current = self.current.as_ref()?;
        let ep = pool.endpoint(current.chosen.index)?;
        let mut peer = Box::new(ep.peer.clone());
        if self.deadline.is_some() {
            // no single wait may outlast the total budget
            let left = self.left_at(current.started).max(Duration::from_millis(1));
            let o = &mut peer.options;
            o.read_timeout = o.read_timeout.map(|t| t.min(left));
            o.write_timeout = o.write_timeout.map(|t| t.min(left));
            o.total_connection_timeout = o.total_connection_timeout.map(|t| t.min(left));
        }
        Some(peer)
    }

    /// The per-read timeout of the current attempt (trimmed to the time left).
    pub fn read_timeout(&self) -> Duration {
        let configured = self
            .pool
            .as_ref()
            .map_or(Duration::from_secs(30), |p| p.upstream.read_timeout);
        configured.min(self.left()).max(Duration::from_millis(1))
    }

    /// Whether the request may be sent again after this attempt sends it on a connection
    /// (`reused` from the pool, or new), so its head must be kept: a retry, or a resend after
    /// a stale pooled connection.
    pub fn may_resend(&self, reused: bool) -> bool {
        self.repeatable
            && (reused
                || self
                    .pool
                    .as_ref()
                    .is_some_and(|p| p.upstream.resilience.retry.is_some()))
    }

    /// The request of the current attempt is on its way upstream.
    pub fn sending(&mut self) {
        self.forwarded = true;
        if let Some(c) = &mut self.current
            && !c.sent
        {
            c.sent = true;
            self.sent += 1;
            if let Some(a) = self.traced.last_mut() {
                a.sent = true;
            }
        }
    }

    fn end_attempt(&mut self, result: AttemptResult) {
        let (Some(pool), Some(c)) = (self.pool.as_ref(), self.current.take()) else {
            return;
        };
        let ended = Instant::now();
        if let Some(a) = self.traced.last_mut()
            && a.ended.is_none()
        {
            a.ended = Some(ended);
        }
        pool.metrics
            .duration
            .observe(ended.saturating_duration_since(c.started).as_secs_f64());
        if let Some(ep) = pool.endpoint(c.chosen.index) {
            ep.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        pool.record(c.chosen, result, now_at(ended));
    }

    /// The current attempt failed with `e`: decides whether another is made.
    pub fn failed(&mut self, e: UpstreamError) -> Next {
        let Some(pool) = self.pool.clone() else {
            return Next::Stop;
        };
        pool.metrics.error(&e);
        if let Some(a) = self.last_traced() {
            a.error.get_or_insert(e.kind());
        }
        let Some(sent) = self.current.as_ref().map(|c| c.sent) else {
            // the failure came after the attempt's answer was taken (a broken response body):
            // the client has part of it, nothing may be tried again
            return Next::Stop;
        };
        let result = if e.counts_against_endpoint() {
            AttemptResult::Failed
        } else {
            AttemptResult::Abandoned
        };
        self.end_attempt(result);
        if e.is_connect() && !sent {
            // nothing reached the upstream: the next endpoint may take it, once each
            self.connect_failures += 1;
            if (self.connect_failures as usize) < pool.len() && !self.left().is_zero() {
                pool.metrics.retry("connect");
                if let Some(a) = self.last_traced() {
                    a.retry = Some("connect");
                }
                return Next::Retry;
            }
            return Next::Stop;
        }
        if self.may_retry(&pool, e.retry_reason(), None) {
            Next::Retry
        } else {
            Next::Stop
        }
    }

    /// The current attempt failed on a pooled connection before any answer: most often the
    /// upstream closed it while it was idle. That tells nothing about the endpoint, and a
    /// request safe to repeat is sent again at once on another connection (twice at most),
    /// outside the retry budget; anything else is an ordinary failure.
    pub fn failed_on_reused(&mut self, e: UpstreamError) -> Next {
        if !(self.repeatable && e == UpstreamError::Reset && self.stale_retries < 2) {
            return self.failed(e);
        }
        let Some(pool) = self.pool.clone() else {
            return Next::Stop;
        };
        if self.current.as_ref().is_some_and(|c| c.sent) {
            self.sent = self.sent.saturating_sub(1);
        }
        self.stale_retries += 1;
        if let Some(a) = self.last_traced() {
            a.error = Some(e.kind());
            a.retry = Some("stale_connection");
        }
        self.end_attempt(AttemptResult::Abandoned);
        pool.metrics.retry("stale_connection");
        Next::Retry
    }

    /// The current attempt was answered with `status` (and maybe a `Retry-After`): decides
    /// whether the answer is the request's, or it is retried.
    pub fn answered(&mut self, status: u16, retry_after: Option<Duration>) -> Next {
        self.status = Some(status);
        if let Some(a) = self.last_traced() {
            a.status = Some(status);
        }
        let result = match status {
            500..=599 => AttemptResult::Failed,
            // the upstream asks for less traffic: not a sign the endpoint is broken
            429 => AttemptResult::Abandoned,
            _ => AttemptResult::Answered,
        };
        self.end_attempt(result);
        let Some(pool) = self.pool.clone() else {
            return Next::Stop;
        };
        let retried = pool
            .upstream
            .resilience
            .retry
            .as_ref()
            .is_some_and(|r| r.on_status.contains(&status));
        if retried && self.may_retry(&pool, "status", retry_after) {
            Next::Retry
        } else {
            Next::Stop
        }
    }

    fn may_retry(
        &mut self,
        pool: &UpstreamPool,
        reason: &'static str,
        retry_after: Option<Duration>,
    ) -> bool {
        let Some(spec) = &pool.upstream.resilience.retry else {
            return false;
        };
        if !self.repeatable {
            return false;
        }
        if self.sent >= spec.max_attempts {
            pool.metrics.skipped("max_attempts");
            return false;
        }
        let wait = match retry_after {
            Some(asked) if asked > spec.max_retry_after.0 => {
                pool.metrics.skipped("retry_after");
                return false;
            }
            Some(asked) => asked,
            None => spec.backoff.delay(self.retries + 1, rand::random::<f64>()),
        };
        if wait >= self.left() {
            pool.metrics.skipped("deadline");
            return false;
        }
        if let Some(budget) = pool.budget()
            && !budget.try_retry(now())
        {
            pool.metrics.skipped("budget");
            return false;
        }
        self.retries += 1;
        self.wait = Some(wait);
        pool.metrics.retry(reason);
        if let Some(a) = self.traced.last_mut() {
            a.retry = Some(reason);
        }
        true
    }

    /// Ends the exchange: an attempt without a verdict frees its probe, and the slot is freed.
    pub fn finish(&mut self) {
        self.end_attempt(AttemptResult::Abandoned);
        self.slot = None;
    }
}

impl Drop for Attempts {
    fn drop(&mut self) {
        self.finish();
    }
}
