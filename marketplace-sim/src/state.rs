//! The state every connection shares.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::channel::Channel;
use crate::ebay_keys::EbayKeys;
use crate::limits::Limits;
use crate::options::MarketOptions;
use crate::records::{Counters, Records};
use crate::schemas::Schemas;
use crate::tokens::Tokens;

pub(crate) struct Shared {
    pub(crate) options: MarketOptions,
    pub(crate) schemas: Schemas,
    pub(crate) tokens: Tokens,
    pub(crate) limits: Limits,
    pub(crate) records: Records,
    pub(crate) counters: Counters,
    /// eBay's notification keys (kept across `reset`, which only zeroes their fetch count).
    pub(crate) ebay_keys: EbayKeys,
    down: [AtomicBool; 4],
}

impl Shared {
    pub(crate) fn new(options: MarketOptions, schemas: Schemas) -> Shared {
        Shared {
            limits: Limits::new(&options),
            records: Records::new(options.record_limit),
            options,
            schemas,
            tokens: Tokens::default(),
            counters: Counters::default(),
            ebay_keys: EbayKeys::default(),
            down: Default::default(),
        }
    }

    pub(crate) fn is_down(&self, channel: Channel) -> bool {
        self.down[channel.index()].load(Ordering::Acquire)
    }

    pub(crate) fn set_down(&self, channel: Channel, down: bool) {
        self.down[channel.index()].store(down, Ordering::Release);
    }

    /// Back to how it started: no records, counters or tokens, the options' limits with full
    /// buckets, every channel up.
    pub(crate) fn reset(&self) {
        self.records.clear();
        self.counters.clear();
        self.tokens.clear();
        self.ebay_keys.reset_fetches();
        self.limits.reset(&self.options);
        for channel in Channel::ALL {
            self.set_down(channel, false);
        }
    }
}
