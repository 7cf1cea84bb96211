//! A marketplace simulator: one small HTTP server playing the outbound APIs of Amazon SP-API,
//! Walmart Marketplace, eBay Sell and Shopify Admin REST (shipment confirmation and inventory
//! update), with their token endpoints, auth headers, rate limits and error shapes. It checks
//! bodies against the same schemas the gateway's outbound mappings produce
//! (transforms/schemas/outbound/), records every accepted call, and is controlled over
//! `/_sim/` or the methods here (records, stats, channels down/up, tokens revoked/expired,
//! limits). Start it in-process with [`MarketplaceSim::start`] on `127.0.0.1:0`, or run the
//! `marketplace-sim` binary; the crate's README lists the endpoints.

mod amazon;
mod channel;
mod control;
mod ebay;
mod ebay_keys;
mod limits;
mod lock;
mod market;
mod options;
mod records;
mod response;
mod schemas;
mod server;
mod service;
mod shopify;
mod state;
mod tokens;
mod walmart;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use channel::{Channel, Operation, UnknownName};
pub use options::{ChannelOptions, InvalidLimit, Limit, MarketOptions};
pub use records::{ChannelStats, Record};

use state::Shared;

/// A running simulator. Dropping it stops the server (without waiting, unlike
/// [`MarketplaceSim::shutdown`]).
pub struct MarketplaceSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MarketplaceSim {
    /// Binds `addr` (`127.0.0.1:0` for an ephemeral port) and serves on the current tokio
    /// runtime. Invalid limits or a body schema that does not compile are an `InvalidInput`
    /// error.
    pub async fn start(
        addr: SocketAddr,
        options: MarketOptions,
    ) -> std::io::Result<MarketplaceSim> {
        let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
        options.validate().map_err(|err| invalid(err.to_string()))?;
        let schemas = schemas::Schemas::compile().map_err(invalid)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(options, schemas));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server::accept_loop(listener, Arc::clone(&shared), stopped));
        Ok(MarketplaceSim {
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

    /// `http://ADDR`, the base URL of every marketplace and token endpoint.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The options it started with.
    pub fn options(&self) -> &MarketOptions {
        &self.shared.options
    }

    /// The accepted calls in arrival order (at most `record_limit`, the most recent).
    pub fn records(&self) -> Vec<Record> {
        self.shared.records.snapshot()
    }

    /// The accepted calls of one channel, in arrival order.
    pub fn records_of(&self, channel: Channel) -> Vec<Record> {
        let mut records = self.records();
        records.retain(|r| r.channel == channel);
        records
    }

    /// The last quantity each channel was told per key (SKU; Shopify: inventory item id), in
    /// arrival order of the kept records: what the marketplace would now show.
    pub fn inventory(&self) -> BTreeMap<Channel, BTreeMap<String, i64>> {
        self.shared.records.inventory()
    }

    /// Every channel's counters.
    pub fn stats(&self) -> BTreeMap<Channel, ChannelStats> {
        self.shared.counters.all()
    }

    /// One channel's counters.
    pub fn channel_stats(&self, channel: Channel) -> ChannelStats {
        self.shared.counters.channel(channel)
    }

    /// Answers 503 to every call of `channel` (API and token endpoint) until
    /// [`MarketplaceSim::up`].
    pub fn down(&self, channel: Channel) {
        self.shared.set_down(channel, true);
    }

    /// Serves `channel` again.
    pub fn up(&self, channel: Channel) {
        self.shared.set_down(channel, false);
    }

    /// Whether `channel` is down.
    pub fn is_down(&self, channel: Channel) -> bool {
        self.shared.is_down(channel)
    }

    /// Revokes every token issued so far (their calls get 401; new tokens work). Shopify's
    /// static token is not affected. Returns how many were revoked.
    pub fn revoke_tokens(&self) -> usize {
        self.shared.tokens.revoke_all()
    }

    /// Makes every token issued so far expired, as if its lifetime had passed (their calls
    /// get 401 and count in `expired_token_seen`). Returns how many were still valid.
    pub fn expire_tokens(&self) -> usize {
        self.shared.tokens.expire_all()
    }

    /// Replaces the limit of one channel's operation; its bucket starts full.
    pub fn set_limit(
        &self,
        channel: Channel,
        operation: Operation,
        limit: Limit,
    ) -> Result<(), InvalidLimit> {
        limit.validate()?;
        self.shared.limits.set(channel, operation, limit);
        Ok(())
    }

    /// The current limit of one channel's operation.
    pub fn limit(&self, channel: Channel, operation: Operation) -> Limit {
        self.shared.limits.get(channel, operation)
    }

    /// Clears records, counters and tokens, restores the options' limits with full buckets
    /// and brings every channel up.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// `X-EBAY-SIGNATURE` for a notification `body`, signed as eBay signs (ECDSA P-256 over
    /// SHA-1, DER, in base64 JSON with the `kid`) with the simulator's current eBay key, whose
    /// public half `GET /commerce/notification/v1/public_key/{kid}` serves.
    pub fn ebay_sign(&self, body: &[u8]) -> String {
        self.shared.ebay_keys.sign(body)
    }

    /// The `kid` of the key that signs now.
    pub fn ebay_key_id(&self) -> String {
        self.shared.ebay_keys.current_kid()
    }

    /// A new eBay key pair signs from now on (the old ones stay published); returns its `kid`.
    pub fn ebay_rotate_key(&self) -> String {
        self.shared.ebay_keys.rotate()
    }

    /// How many `getPublicKey` calls arrived (answered or refused; zeroed by `reset`).
    pub fn ebay_key_fetches(&self) -> u64 {
        self.shared.ebay_keys.fetches()
    }

    /// Stops accepting, closes every connection and waits until the listener is closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // The loop may already have ended; either way it is stopping.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            tracing::warn!(error = %err, "marketplace-sim accept loop ended abnormally");
        }
    }
}
