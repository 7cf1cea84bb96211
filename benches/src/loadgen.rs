//! The load generator: HTTP/1.1 keep-alive connections driven by tokio and hyper's client.
//!
//! - [`closed_loop`]: every connection sends its next request as soon as the previous answer is
//!   read — the most the system can do with that many connections (throughput).
//! - [`open_loop`]: requests are offered at a fixed rate whatever the answers do. A pacer thread
//!   releases slot `i` at `start + i / rate` (see [`crate::schedule`]) into one queue; the
//!   connections take slots from it in the order they become free, and each latency is measured
//!   from the slot's *intended* time, so time spent waiting for a connection held by a slow
//!   answer — or for the generator itself — counts against the result (corrected for
//!   coordinated omission). The pacer is an OS thread because tokio's timer ticks in whole
//!   milliseconds, which at 10k requests/s would release slots in bursts of ten; how late a
//!   free connection actually sent its slot is reported as `send_lag`, the generator's own
//!   health figure.
//!
//! Run both on a current-thread runtime pinned to one core (the harness does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

use crate::latency::{Percentiles, new_histogram, percentiles, record};
use crate::recipe::Recipe;
use crate::schedule::Schedule;

/// Where and how hard to send.
#[derive(Debug, Clone)]
pub struct Load {
    /// The listener of the system under test.
    pub addr: SocketAddr,
    /// Keep-alive connections.
    pub connections: usize,
    /// A request not answered within this counts as an error (and its connection is dropped).
    pub timeout: Duration,
}

/// The measurement window: the caller samples the system's CPU at both edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The window opens.
    Start,
    /// The window closes.
    End,
}

/// What one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunResult {
    /// Successful answers completed inside the window.
    pub ok: u64,
    /// Answers with an unexpected status.
    pub bad_status: u64,
    /// Connection failures and timeouts.
    pub errors: u64,
    /// Open loop: slots never sent because the run's grace period ran out (the system could not
    /// keep up); 0 for a closed loop.
    pub dropped: u64,
    /// Window length, seconds.
    pub window_s: f64,
    /// Successful answers per second of window.
    pub rps: f64,
    /// Open loop: the offered rate.
    pub offered_rps: Option<f64>,
    /// Latency of the successful answers: corrected (from the intended send time) in an open
    /// loop; plain request-to-answer time in a closed loop.
    pub latency: Percentiles,
    /// Open loop: how late a connection that was free when its slot fell due actually sent it
    /// — the generator's own lateness (pacer, scheduling), a health figure of the run.
    pub send_lag: Percentiles,
}

#[derive(Default)]
struct Tally {
    ok: u64,
    bad_status: u64,
    errors: u64,
    dropped: u64,
    latency: Option<Histogram<u64>>,
    lag: Option<Histogram<u64>>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: Some(new_histogram()),
            lag: Some(new_histogram()),
            ..Tally::default()
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.bad_status += other.bad_status;
        self.errors += other.errors;
        self.dropped += other.dropped;
        for (mine, theirs) in [
            (&mut self.latency, other.latency),
            (&mut self.lag, other.lag),
        ] {
            if let (Some(m), Some(t)) = (mine.as_mut(), theirs) {
                // same bounds on both sides: cannot fail
                let _ = m.add(t);
            }
        }
    }

    fn result(&self, window: Duration, offered: Option<f64>) -> RunResult {
        let window_s = window.as_secs_f64();
        let empty = new_histogram();
        RunResult {
            ok: self.ok,
            bad_status: self.bad_status,
            errors: self.errors,
            dropped: self.dropped,
            window_s,
            rps: if window_s > 0.0 {
                self.ok as f64 / window_s
            } else {
                0.0
            },
            offered_rps: offered,
            latency: percentiles(self.latency.as_ref().unwrap_or(&empty)),
            send_lag: percentiles(self.lag.as_ref().unwrap_or(&empty)),
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // ends when the sender is dropped or the server closes
        let _ = conn.await;
    });
    Ok(sender)
}

enum Outcome {
    Status(u16),
    Failed,
}

/// One exchange on a connection (reconnecting first if it was dropped).
async fn exchange(
    sender: &mut Option<Sender>,
    addr: SocketAddr,
    host: &HeaderValue,
    recipe: &Recipe,
    timeout: Duration,
) -> Outcome {
    let attempt = async {
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            *sender = Some(connect(addr).await?);
        }
        let Some(s) = sender.as_mut() else {
            anyhow::bail!("no connection");
        };
        s.ready().await?;
        let resp = s.send_request(recipe.build(host)).await?;
        let status = resp.status().as_u16();
        // the answer counts once its whole body is read
        resp.into_body().collect().await?;
        anyhow::Ok(status)
    };
    let result = tokio::time::timeout(timeout, attempt).await;
    match result {
        Ok(Ok(status)) => Outcome::Status(status),
        _ => {
            *sender = None;
            Outcome::Failed
        }
    }
}

fn host_of(addr: SocketAddr) -> anyhow::Result<HeaderValue> {
    Ok(HeaderValue::try_from(addr.to_string())?)
}

async fn connect_all(load: &Load) -> anyhow::Result<Vec<Option<Sender>>> {
    let mut senders = Vec::with_capacity(load.connections);
    for _ in 0..load.connections.max(1) {
        senders.push(Some(connect(load.addr).await?));
    }
    Ok(senders)
}

/// Sends one request and returns its status (a check that a scenario answers as expected
/// before it is measured).
pub async fn probe(addr: SocketAddr, recipe: &Recipe) -> anyhow::Result<u16> {
    let mut sender = None;
    match exchange(
        &mut sender,
        addr,
        &host_of(addr)?,
        recipe,
        Duration::from_secs(10),
    )
    .await
    {
        Outcome::Status(s) => Ok(s),
        Outcome::Failed => anyhow::bail!("no answer from {addr}"),
    }
}

/// Closed loop for `duration`; `window` is called when the window opens and closes.
pub async fn closed_loop(
    load: &Load,
    recipe: Arc<Recipe>,
    duration: Duration,
    window: &mut dyn FnMut(Edge),
) -> anyhow::Result<RunResult> {
    let host = host_of(load.addr)?;
    let senders = connect_all(load).await?;
    window(Edge::Start);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for mut sender in senders {
        let (recipe, host, addr, timeout) = (recipe.clone(), host.clone(), load.addr, load.timeout);
        tasks.spawn(async move {
            let mut t = Tally::new();
            loop {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                let outcome = exchange(&mut sender, addr, &host, &recipe, timeout).await;
                let done = Instant::now();
                if done > deadline {
                    // finished outside the window: the CPU it used is not in the window either
                    break;
                }
                match outcome {
                    Outcome::Status(s) if recipe.ok(s) => {
                        t.ok += 1;
                        if let Some(h) = t.latency.as_mut() {
                            record(h, done - sent);
                        }
                    }
                    Outcome::Status(_) => t.bad_status += 1,
                    Outcome::Failed => {
                        t.errors += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            t
        });
    }
    tokio::time::sleep_until(deadline.into()).await;
    window(Edge::End);
    let mut total = Tally::new();
    while let Some(t) = tasks.join_next().await {
        total.merge(t?);
    }
    Ok(total.result(duration, None))
}

/// Open loop at `rate` requests/s for `duration`. Slots not sent within `grace` after the
/// schedule ends are counted as dropped.
pub async fn open_loop(
    load: &Load,
    recipe: Arc<Recipe>,
    rate: f64,
    duration: Duration,
    grace: Duration,
    window: &mut dyn FnMut(Edge),
) -> anyhow::Result<RunResult> {
    let host = host_of(load.addr)?;
    let senders = connect_all(load).await?;
    let schedule = Schedule::new(rate, duration);
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + schedule.span();
    let hard_deadline = end + grace;

    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            for i in 0..schedule.slots {
                let at = start + schedule.intended(i);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if tx.send(at).is_err() {
                    break;
                }
            }
        })?;

    let queue = Arc::new(Mutex::new(rx));
    let mut tasks = tokio::task::JoinSet::new();
    for mut sender in senders {
        let (recipe, host, addr, queue) = (recipe.clone(), host.clone(), load.addr, queue.clone());
        let timeout = load.timeout;
        tasks.spawn(async move {
            let mut t = Tally::new();
            loop {
                let free_since = Instant::now();
                let next = { queue.lock().await.recv().await };
                let Some(intended) = next else { break };
                let sent = Instant::now();
                if sent >= hard_deadline {
                    t.dropped += 1;
                    continue;
                }
                // Only a connection that was already free when the slot fell due measures the
                // generator's own lateness; a slot that was overdue before any connection came
                // free waited for the system (and that wait is in its corrected latency).
                if free_since <= intended
                    && let Some(h) = t.lag.as_mut()
                {
                    record(h, sent.saturating_duration_since(intended));
                }
                let left = hard_deadline.saturating_duration_since(sent) + Duration::from_secs(1);
                let outcome = exchange(&mut sender, addr, &host, &recipe, timeout.min(left)).await;
                let done = Instant::now();
                match outcome {
                    Outcome::Status(s) if recipe.ok(s) => {
                        t.ok += 1;
                        if let Some(h) = t.latency.as_mut() {
                            record(h, done.saturating_duration_since(intended));
                        }
                    }
                    Outcome::Status(_) => t.bad_status += 1,
                    Outcome::Failed => t.errors += 1,
                }
            }
            t
        });
    }
    tokio::time::sleep_until(start.into()).await;
    window(Edge::Start);
    tokio::time::sleep_until(end.into()).await;
    window(Edge::End);
    let mut total = Tally::new();
    while let Some(t) = tasks.join_next().await {
        total.merge(t?);
    }
    pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    Ok(total.result(schedule.span(), Some(schedule.rate)))
}
