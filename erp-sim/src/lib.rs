//! An ERP simulator: a small HTTP/1.1 server that plays the retailer's ERP for the demo, the
//! end-to-end tests and the load benches, and records everything it receives so tests can
//! assert exactly what reached the ERP.
//!
//! Start it in-process with [`ErpSim::start`] (bind `127.0.0.1:0` for an ephemeral port), or
//! run the `erp-sim` binary. Besides the ERP API (`/erp/v1/...`) and `/echo`, it serves a
//! control API under `/_sim/` that is never recorded; the same controls are methods here.

mod documents;
mod error;
mod lock;
mod records;
mod response;
mod server;
mod service;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use documents::{DocumentKind, StoredDocument};
pub use records::ReceivedRequest;
pub use state::{Behaviour, SimStats};

use state::Shared;

/// Limits that keep the simulator's memory bounded under load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimOptions {
    /// How many request records to keep (the most recent ones); counters stay exact.
    pub record_limit: usize,
    /// Largest request body read; a larger one is answered `413` with the ERP error shape.
    pub max_body_bytes: usize,
    /// How many stored documents to keep per document kind (the most recent ones); document
    /// ids keep counting, and an evicted document answers `404`.
    pub document_limit: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            record_limit: 10_000,
            max_body_bytes: 64 * 1024 * 1024,
            document_limit: 10_000,
        }
    }
}

/// A running simulator. Dropping it stops the server as [`ErpSim::shutdown`] does, without
/// waiting for it.
pub struct ErpSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ErpSim {
    /// Binds (use `127.0.0.1:0` for an ephemeral port) and serves on the current tokio runtime.
    pub async fn start(addr: SocketAddr) -> std::io::Result<ErpSim> {
        Self::start_with(addr, SimOptions::default()).await
    }

    /// Like [`ErpSim::start`], with explicit limits.
    pub async fn start_with(addr: SocketAddr, options: SimOptions) -> std::io::Result<ErpSim> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(options));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server::accept_loop(listener, Arc::clone(&shared), stopped));
        Ok(ErpSim {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for building request URLs.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The kept request records in arrival order (at most `record_limit`, the most recent).
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.records.snapshot()
    }

    /// Requests whose headers were parsed, whether or not their body ever arrived.
    pub fn requests_started(&self) -> u64 {
        self.shared.counters.started()
    }

    /// Requests the simulator answered (not those it dropped or whose body read failed).
    pub fn requests_completed(&self) -> u64 {
        self.shared.counters.completed()
    }

    /// Accepted TCP connections.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.counters.connections()
    }

    /// The counters, including requests per path.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// The kept documents of one kind, oldest first.
    pub fn documents(&self, kind: DocumentKind) -> Vec<StoredDocument> {
        self.shared.documents.list(kind)
    }

    /// Replaces how the simulator misbehaves for ERP and echo requests.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared.set_behaviour(behaviour);
    }

    /// The current behaviour, with `fail_count` showing how many failures remain.
    pub fn behaviour(&self) -> Behaviour {
        self.shared.behaviour()
    }

    /// Clears records, documents (their ids restart at 000001), counters and behaviour.
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
