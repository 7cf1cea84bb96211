//! The accept loop: counts connections and serves each with its own hyper HTTP/1.1 connection
//! task, which it can drop on the handler's request to close the socket without answering.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;

use crate::service::handle;
use crate::state::Shared;

/// Serves until `stop` fires or its sender is dropped, then closes the listener and every
/// open connection.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    shared.counters.accept();
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %err, "erp-sim accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reaps finished connections so the set does not grow under load.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Small request/response exchanges; Nagle would only add latency to the benches.
    let _ = stream.set_nodelay(true);
    let close = Arc::new(Notify::new());
    let service = {
        let close = Arc::clone(&close);
        service_fn(move |request| handle(Arc::clone(&shared), Arc::clone(&close), request))
    };
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "erp-sim connection ended with an error");
            }
        }
        // Dropping the connection closes the socket with nothing written.
        () = close.notified() => {}
    }
}
