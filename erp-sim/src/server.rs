//! The accept loop: owns the listening socket (closing it while the simulator is down and
//! binding the same address again after), times a script's phases, counts connections and
//! serves each with its own task (TLS handshake, then hyper HTTP/1.1 or HTTP/2), which it can
//! drop to close the socket without answering.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::connection::ConnectionInfo;
use crate::service::handle;
use crate::state::Shared;
use crate::switch::Command;
use crate::tls::client_cert;

/// How the accept loop is set up; see [`accept_loop`].
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) listener: TcpListener,
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) listening: Arc<AtomicBool>,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) http2: bool,
}

/// Tells the open connections to close: every one but `spare`, which finishes its exchange.
#[derive(Debug, Clone, Copy, Default)]
struct Kill {
    spare: Option<u64>,
}

enum Listening {
    Up(TcpListener),
    /// Closed until then (`None`: until told otherwise).
    Down(Option<Instant>),
}

/// How soon to try binding again when the address is taken when coming back up.
const REBIND_RETRY: Duration = Duration::from_millis(100);

enum Event {
    Stop,
    Command(Command),
    Accepted(std::io::Result<(TcpStream, SocketAddr)>),
    DownOver,
    PhaseDue,
    Reaped,
}

/// Serves until `stop` fires or its sender is dropped, then closes the listener and every
/// open connection.
pub(crate) async fn accept_loop(server: Server, mut stop: oneshot::Receiver<()>) {
    let Server {
        addr,
        listener,
        shared,
        mut commands,
        listening: listening_flag,
        tls,
        http2,
    } = server;
    let mut listening = Listening::Up(listener);
    let mut connections = JoinSet::new();
    let (kill, _) = watch::channel(Kill::default());
    let mut next_connection = 0u64;
    let mut next_phase: Option<(Instant, u64)> = None;
    loop {
        let event = tokio::select! {
            _ = &mut stop => Event::Stop,
            Some(command) = commands.recv() => Event::Command(command),
            accepted = accept(&listening) => Event::Accepted(accepted),
            () = sleep_until(down_deadline(&listening)) => Event::DownOver,
            () = sleep_until(next_phase.map(|(at, _)| at)) => Event::PhaseDue,
            // Reaps finished connections so the set does not grow under load.
            Some(_) = connections.join_next(), if !connections.is_empty() => Event::Reaped,
        };
        match event {
            Event::Stop => break,
            Event::Reaped => {}
            Event::Accepted(Ok((stream, _peer))) => {
                shared.counters.accept();
                next_connection += 1;
                connections.spawn(serve_connection(
                    stream,
                    next_connection,
                    Arc::clone(&shared),
                    tls.clone(),
                    http2,
                    kill.subscribe(),
                ));
            }
            Event::Accepted(Err(err)) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %err, "erp-sim accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Event::DownOver => {
                if let Err(err) = come_up(&mut listening, addr, &listening_flag).await {
                    tracing::warn!(error = %err, %addr, "erp-sim cannot listen again yet");
                    listening = Listening::Down(Some(Instant::now() + REBIND_RETRY));
                }
            }
            Event::PhaseDue => {
                let Some((_, generation)) = next_phase.take() else {
                    continue;
                };
                if let Some(transition) = shared.faults.advance(generation) {
                    next_phase = transition
                        .next_phase
                        .map(|(at, generation)| (Instant::from_std(at), generation));
                    if let Some(until) = transition.down_until {
                        go_down(
                            &mut listening,
                            Some(until.into()),
                            None,
                            &kill,
                            &listening_flag,
                        );
                    }
                }
            }
            Event::Command(Command::NextPhase { at, generation }) => {
                next_phase = Some((Instant::from_std(at), generation));
            }
            Event::Command(Command::Down { until, spare, done }) => {
                let until = until.map(Instant::from_std);
                go_down(&mut listening, until, spare, &kill, &listening_flag);
                if let Some(done) = done {
                    // The asker may have given up waiting; the listener is down either way.
                    let _ = done.send(());
                }
            }
            Event::Command(Command::Up { done }) => {
                let result = come_up(&mut listening, addr, &listening_flag).await;
                if let Some(done) = done {
                    let _ = done.send(result);
                }
            }
        }
    }
    drop(listening);
    listening_flag.store(false, Ordering::Release);
    connections.shutdown().await;
}

async fn accept(listening: &Listening) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listening {
        Listening::Up(listener) => listener.accept().await,
        Listening::Down(_) => std::future::pending().await,
    }
}

fn down_deadline(listening: &Listening) -> Option<Instant> {
    match listening {
        Listening::Up(_) => None,
        Listening::Down(until) => *until,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Closes the listening socket, so connecting is refused, and every open connection, as a
/// crashed ERP would. A later deadline replaces an earlier one.
fn go_down(
    listening: &mut Listening,
    until: Option<Instant>,
    spare: Option<u64>,
    kill: &watch::Sender<Kill>,
    flag: &AtomicBool,
) {
    if until.is_some_and(|until| until <= Instant::now()) {
        return;
    }
    // Replacing `Up` drops, and so closes, the listener.
    *listening = Listening::Down(until);
    flag.store(false, Ordering::Release);
    kill.send_replace(Kill { spare });
}

async fn come_up(
    listening: &mut Listening,
    addr: SocketAddr,
    flag: &AtomicBool,
) -> std::io::Result<()> {
    if let Listening::Down(_) = listening {
        // tokio sets SO_REUSEADDR, so connections of the old socket in TIME_WAIT do not
        // stand in the way.
        *listening = Listening::Up(TcpListener::bind(addr).await?);
        flag.store(true, Ordering::Release);
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    id: u64,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    http2: bool,
    mut kill: watch::Receiver<Kill>,
) {
    // Small request/response exchanges; Nagle would only add latency to the benches.
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        let connection = ConnectionInfo {
            id,
            tls: false,
            client_cert: None,
            close: Notify::new(),
        };
        serve(stream, connection, shared, http2, kill).await;
        return;
    };
    let handshake = tokio::select! {
        handshake = acceptor.accept(stream) => handshake,
        _ = kill.changed() => return,
    };
    match handshake {
        Ok(stream) => {
            let connection = ConnectionInfo {
                id,
                tls: true,
                client_cert: client_cert(stream.get_ref().1),
                close: Notify::new(),
            };
            serve(stream, connection, shared, http2, kill).await;
        }
        // A peer that closes without a word (a TCP health check) did not fail a handshake;
        // one that was refused, or refused us, did.
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(err) => {
            shared.counters.tls_handshake_failure();
            tracing::debug!(error = %err, "erp-sim TLS handshake failed");
        }
    }
}

async fn serve<IO>(
    io: IO,
    connection: ConnectionInfo,
    shared: Arc<Shared>,
    http2: bool,
    mut kill: watch::Receiver<Kill>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = Arc::new(connection);
    let service = {
        let connection = Arc::clone(&connection);
        service_fn(move |request| handle(Arc::clone(&shared), Arc::clone(&connection), request))
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if !http2 {
        builder = builder.http1_only();
    }
    let serving = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(serving);
    loop {
        // The kill is looked at before the next request: `set_down` returns once the kill is
        // sent, and a request its caller sends afterwards on a kept-alive connection must find
        // the simulator down. Polled in random order, a connection whose task had not run
        // since the kill could still serve it (a test of ejection then saw an attempt succeed
        // after the ERP was down, on a busy machine).
        tokio::select! {
            biased;
            // Dropping the connection closes the socket with nothing written.
            () = connection.close.notified() => return,
            changed = kill.changed() => {
                let spared = changed.is_ok() && kill.borrow_and_update().spare == Some(connection.id);
                if !spared {
                    return;
                }
                // The connection that asked for the down gets its answer, then closes.
                serving.as_mut().graceful_shutdown();
            }
            result = serving.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "erp-sim connection ended with an error");
                }
                return;
            }
        }
    }
}
