//! Store-and-forward in the gateway: accepting a document into its route's queue (`accept`),
//! fanning a canonical event out to one delivery per destination (`fanout`), what marketplace
//! deliveries need besides the forwarding layer (`outbound`),
//! the queues' stores and runtimes kept across reloads (`runtime`), the workers that deliver
//! them through the forwarding layer (`worker`), how a delivery is shown to its caller and to
//! operators (`view`, `admin`), and the metrics of it all.

pub mod accept;
pub mod admin;
pub mod fanout;
pub mod metrics;
pub mod outbound;
pub mod runtime;
pub mod view;
pub mod worker;

pub use metrics::DeliveryMetrics;
