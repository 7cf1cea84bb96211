//! What the request handler knows about the connection a request came on, and how it asks that
//! connection to close.

use tokio::sync::Notify;

use crate::tls::ClientCert;

/// One accepted connection, as its requests see it.
pub(crate) struct ConnectionInfo {
    /// Unique per simulator, in accept order.
    pub(crate) id: u64,
    /// The connection is TLS.
    pub(crate) tls: bool,
    /// The verified client certificate, under mutual TLS.
    pub(crate) client_cert: Option<ClientCert>,
    /// Asks the connection's task to drop the connection without answering.
    pub(crate) close: Notify,
}
