//! An ERP simulator: a small HTTP server that plays the retailer's ERP for the demo, the
//! end-to-end tests and the load benches, records everything it receives so tests can assert
//! exactly what reached the ERP, and misbehaves on demand (errors, latency, hangs, dropped
//! connections, refused connections), per instance and over time.
//!
//! Start it in-process with [`ErpSim::start`] (bind `127.0.0.1:0` for an ephemeral port), or
//! run the `erp-sim` binary. Besides the ERP API (`/erp/v1/...`) and `/echo`, it serves a
//! control API under `/_sim/` that is never recorded nor counted; the same controls are
//! methods here. The crate's README describes the behaviours, scripts and idempotency.

mod behaviour;
mod connection;
mod counters;
mod documents;
mod error;
mod faults;
mod idempotency;
mod lock;
mod options;
mod records;
mod response;
mod server;
mod service;
mod state;
mod switch;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use behaviour::{
    Behaviour, InvalidBehaviour, LatencyPoint, OutOfRange, Percentile, Phase, Ratio, Script,
};
pub use counters::SimStats;
pub use documents::{DocumentKind, StoredDocument};
pub use options::{SimOptions, SimTls};
pub use records::ReceivedRequest;
pub use tls::ClientCert;

use state::Shared;
use switch::Command;

/// A running simulator. Dropping it stops the server as [`ErpSim::shutdown`] does, without
/// waiting for it.
pub struct ErpSim {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ErpSim {
    /// Binds (use `127.0.0.1:0` for an ephemeral port) and serves on the current tokio runtime.
    pub async fn start(addr: SocketAddr) -> std::io::Result<ErpSim> {
        Self::start_with(addr, SimOptions::default()).await
    }

    /// Like [`ErpSim::start`], with explicit limits, TLS and HTTP versions. Unusable TLS
    /// material is an `InvalidInput` error naming the file.
    pub async fn start_with(addr: SocketAddr, options: SimOptions) -> std::io::Result<ErpSim> {
        let tls = match &options.tls {
            Some(tls) => Some(
                tls::acceptor(tls, options.http2)
                    .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))?,
            ),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let http2 = options.http2;
        let (shared, commands, listening) = Shared::new(options);
        let shared = Arc::new(shared);
        let (stop, stopped) = oneshot::channel();
        let server = server::Server {
            addr,
            listener,
            shared: Arc::clone(&shared),
            commands,
            listening,
            tls: tls.clone(),
            http2,
        };
        let task = tokio::spawn(server::accept_loop(server, stopped));
        Ok(ErpSim {
            addr,
            tls: tls.is_some(),
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` (`https://ADDR` under TLS), for building request URLs.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The kept request records in arrival order (at most `record_limit`, the most recent).
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.records.snapshot()
    }

    /// Requests whose headers were parsed, whether or not their body ever arrived.
    pub fn requests_started(&self) -> u64 {
        self.shared.counters.started()
    }

    /// Requests the simulator answered (not those it dropped, hung or whose body read failed).
    pub fn requests_completed(&self) -> u64 {
        self.shared.counters.completed()
    }

    /// Accepted TCP connections.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.counters.connections()
    }

    /// The counters, including requests per path, requests in flight and their high-water
    /// mark, idempotent replays and conflicts, and refused TLS handshakes.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// The kept documents of one kind, oldest first.
    pub fn documents(&self, kind: DocumentKind) -> Vec<StoredDocument> {
        self.shared.documents.list(kind)
    }

    /// Replaces how the simulator misbehaves for ERP and echo requests, ending any script. A
    /// `down_for_ms` closes the listener a moment later (on the accept loop); to wait until
    /// it is closed, use [`ErpSim::set_down`].
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        // The receiver only tells when a down has happened; nobody waits for it here.
        drop(self.shared.set_behaviour(behaviour, None));
    }

    /// Runs `script` from its first phase now; each phase's behaviour takes effect when the
    /// previous phase's time is up, and the last is held (or the script starts over, with
    /// `repeat`). Setting a behaviour, another script, or resetting ends it.
    pub fn set_script(&self, script: Script) {
        drop(self.shared.set_script(script, None));
    }

    /// The current behaviour (a script's current phase), with `fail_count` showing how many
    /// failures remain.
    pub fn behaviour(&self) -> Behaviour {
        self.shared.faults.behaviour()
    }

    /// Where the running script stands: `(phase index, number of phases)`; `None` without a
    /// script.
    pub fn script_phase(&self) -> Option<(usize, usize)> {
        self.shared.faults.script_phase()
    }

    /// `true`: closes the listening socket (new connections are refused) and every open
    /// connection (requests in flight are abandoned), as if the ERP had crashed, until
    /// `set_down(false)`, which listens on the same address again. Returns once done; the
    /// error is that of binding the address again (someone else took the port), or of a
    /// simulator already shut down.
    pub async fn set_down(&self, down: bool) -> std::io::Result<()> {
        let gone = || std::io::Error::other("the simulator is shut down");
        if down {
            let (done, closed) = oneshot::channel();
            let command = Command::Down {
                until: None,
                spare: None,
                done: Some(done),
            };
            if !self.shared.switch.send(command) {
                return Err(gone());
            }
            closed.await.map_err(|_| gone())
        } else {
            let (done, result) = oneshot::channel();
            if !self.shared.switch.send(Command::Up { done: Some(done) }) {
                return Err(gone());
            }
            result.await.map_err(|_| gone())?
        }
    }

    /// `set_down(true)`: connections are refused until [`ErpSim::resume`].
    pub async fn stop_listening(&self) -> std::io::Result<()> {
        self.set_down(true).await
    }

    /// `set_down(false)`: listens on the same address again.
    pub async fn resume(&self) -> std::io::Result<()> {
        self.set_down(false).await
    }

    /// Turns [`SimOptions::honour_idempotency_keys`] on or off from now on (repeats are counted
    /// either way; `reset` leaves this setting alone).
    pub fn honour_idempotency_keys(&self, honour: bool) {
        self.shared.keys.set_honoured(honour);
    }

    /// Whether the listening socket is open.
    pub fn is_listening(&self) -> bool {
        self.shared.switch.listening()
    }

    /// Clears records, documents (their ids restart at 000001), idempotency keys, counters,
    /// behaviour and script, and listens again if down. `max_in_flight` restarts from the
    /// requests in flight at that moment.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops accepting, closes every open connection (in-flight requests are abandoned) and
    /// waits until the listener is closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // The loop may already have ended; either way it is stopping.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            tracing::warn!(error = %err, "erp-sim accept loop ended abnormally");
        }
    }
}
