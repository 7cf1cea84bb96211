//! What the simulator keeps: every accepted call in arrival order, and counters per channel.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channel::{Channel, Operation};
use crate::lock::lock;

/// One accepted API call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position among all accepted calls since start (or reset), from 0.
    pub index: u64,
    /// The marketplace called.
    pub channel: Channel,
    /// Which endpoint.
    pub operation: Operation,
    /// Order id (shipment; Shopify: the first fulfillment-order id), or SKU (inventory;
    /// Shopify: the `inventory_item_id`), percent-decoded.
    pub key: String,
    /// The quantity set (inventory only).
    pub quantity: Option<i64>,
    /// The request method.
    pub method: String,
    /// The request path and query, as sent.
    pub path: String,
    /// The JSON body.
    pub body: Value,
    /// The access token that authorised the call.
    pub token: String,
    /// Walmart only: the call's `WM_QOS.CORRELATION_ID` (to check it is fresh per call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A record before its index and time are known.
pub(crate) struct NewRecord {
    pub(crate) channel: Channel,
    pub(crate) operation: Operation,
    pub(crate) key: String,
    pub(crate) quantity: Option<i64>,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) body: Value,
    pub(crate) token: String,
    pub(crate) correlation_id: Option<String>,
}

struct Kept {
    next_index: u64,
    records: VecDeque<Record>,
}

pub(crate) struct Records {
    limit: usize,
    kept: Mutex<Kept>,
}

impl Records {
    pub(crate) fn new(limit: usize) -> Records {
        Records {
            limit,
            kept: Mutex::new(Kept {
                next_index: 0,
                records: VecDeque::new(),
            }),
        }
    }

    pub(crate) fn push(&self, new: NewRecord) {
        let mut kept = lock(&self.kept);
        let index = kept.next_index;
        kept.next_index += 1;
        kept.records.push_back(Record {
            index,
            channel: new.channel,
            operation: new.operation,
            key: new.key,
            quantity: new.quantity,
            method: new.method,
            path: new.path,
            body: new.body,
            token: new.token,
            correlation_id: new.correlation_id,
            at_ms: now_ms(),
        });
        while kept.records.len() > self.limit {
            kept.records.pop_front();
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<Record> {
        lock(&self.kept).records.iter().cloned().collect()
    }

    /// The last quantity set per key of each channel, from the kept inventory records.
    pub(crate) fn inventory(&self) -> BTreeMap<Channel, BTreeMap<String, i64>> {
        let mut levels: BTreeMap<Channel, BTreeMap<String, i64>> = Channel::ALL
            .into_iter()
            .map(|c| (c, BTreeMap::new()))
            .collect();
        for record in &lock(&self.kept).records {
            if record.operation == Operation::Inventory
                && let Some(quantity) = record.quantity
            {
                levels
                    .entry(record.channel)
                    .or_default()
                    .insert(record.key.clone(), quantity);
            }
        }
        levels
    }

    pub(crate) fn clear(&self) {
        let mut kept = lock(&self.kept);
        kept.records.clear();
        kept.next_index = 0;
    }
}

/// One channel's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStats {
    /// API calls accepted (and recorded).
    pub accepted: u64,
    /// API calls refused with 429.
    pub throttled: u64,
    /// API calls refused with 401 (no, unknown, expired or revoked token).
    pub unauthorized: u64,
    /// API calls refused with 400 (body against the schema, path against body, headers).
    pub invalid: u64,
    /// Calls (API and token) answered 503 while the channel was down.
    pub down: u64,
    /// Access tokens issued.
    pub tokens_issued: u64,
    /// Token requests refused (bad client, grant or refresh token).
    pub token_refused: u64,
    /// API calls that presented an expired (not revoked) token; counted in `unauthorized` too.
    pub expired_token_seen: u64,
}

#[derive(Clone, Copy)]
pub(crate) enum Counter {
    Accepted,
    Throttled,
    Unauthorized,
    Invalid,
    Down,
    TokensIssued,
    TokenRefused,
    ExpiredTokenSeen,
}

const COUNTERS: usize = 8;

#[derive(Default)]
pub(crate) struct Counters {
    values: [[AtomicU64; COUNTERS]; 4],
}

impl Counters {
    pub(crate) fn bump(&self, channel: Channel, counter: Counter) {
        self.values[channel.index()][counter as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn channel(&self, channel: Channel) -> ChannelStats {
        let v = &self.values[channel.index()];
        let get = |c: Counter| v[c as usize].load(Ordering::Relaxed);
        ChannelStats {
            accepted: get(Counter::Accepted),
            throttled: get(Counter::Throttled),
            unauthorized: get(Counter::Unauthorized),
            invalid: get(Counter::Invalid),
            down: get(Counter::Down),
            tokens_issued: get(Counter::TokensIssued),
            token_refused: get(Counter::TokenRefused),
            expired_token_seen: get(Counter::ExpiredTokenSeen),
        }
    }

    pub(crate) fn all(&self) -> BTreeMap<Channel, ChannelStats> {
        Channel::ALL
            .into_iter()
            .map(|c| (c, self.channel(c)))
            .collect()
    }

    pub(crate) fn clear(&self) {
        for channel in &self.values {
            for value in channel {
                value.store(0, Ordering::Relaxed);
            }
        }
    }
}
