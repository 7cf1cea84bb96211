//! What the simulator accepts: per channel, the credentials its token endpoint takes, how long
//! its tokens live, and the rate limit of each operation. The defaults are the published
//! figures (shared/reference/marketplaces/README.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::channel::{Channel, Operation};

/// A token bucket: `rate` tokens a second refill it up to `burst`; a call takes one token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    /// Tokens added per second (`0` never refills: exactly `burst` calls pass).
    pub rate: f64,
    /// Bucket size: how many calls pass back to back from a full bucket (at least 1).
    pub burst: u32,
}

/// A [`Limit`] that cannot work (negative or non-finite rate, zero burst).
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid limit: {0}")]
pub struct InvalidLimit(pub(crate) String);

impl Limit {
    /// `rate` per second, `burst` at once.
    pub const fn new(rate: f64, burst: u32) -> Limit {
        Limit { rate, burst }
    }

    /// Refuses a negative or non-finite rate and a zero burst.
    pub fn validate(&self) -> Result<(), InvalidLimit> {
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(InvalidLimit(format!(
                "rate must be a finite number >= 0, got {}",
                self.rate
            )));
        }
        if self.burst == 0 {
            return Err(InvalidLimit("burst must be at least 1".to_owned()));
        }
        Ok(())
    }
}

/// One marketplace's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelOptions {
    /// The client id the token endpoint accepts (Amazon: form field; Walmart, eBay: Basic
    /// user). Unused by Shopify.
    pub client_id: String,
    /// The client secret that goes with `client_id`.
    pub client_secret: String,
    /// The refresh token the token endpoint accepts (Amazon, eBay; unused by Walmart and
    /// Shopify).
    pub refresh_token: String,
    /// Shopify only: the static `X-Shopify-Access-Token` its API accepts (`None` elsewhere).
    pub static_token: Option<String>,
    /// How long an issued access token is accepted (`expires_in` is its whole seconds; zero
    /// issues tokens that are already expired).
    #[serde(with = "humantime_serde_duration")]
    pub token_lifetime: Duration,
    /// The limit of the shipment endpoint.
    pub shipment: Limit,
    /// The limit of the inventory endpoint.
    pub inventory: Limit,
}

impl ChannelOptions {
    /// The limit of one operation.
    pub fn limit(&self, operation: Operation) -> Limit {
        match operation {
            Operation::Shipment => self.shipment,
            Operation::Inventory => self.inventory,
        }
    }

    /// The defaults of one channel: credentials `{channel}-client-id`, `{channel}-client-secret`,
    /// `{channel}-refresh-token`, Shopify's static token `shpat_simulated`; tokens for an hour
    /// (Walmart 15 minutes); the published limits.
    pub fn defaults(channel: Channel) -> ChannelOptions {
        let name = channel.as_str();
        let (lifetime, shipment, inventory) = match channel {
            // confirmShipment 2/s burst 10; patchListingsItem 5/s burst 5.
            Channel::Amazon => (3600, Limit::new(2.0, 10), Limit::new(5.0, 5)),
            // Per-minute token buckets: ship about 60/min, inventory about 200/min.
            Channel::Walmart => (900, Limit::new(1.0, 60), Limit::new(200.0 / 60.0, 200)),
            // Daily quotas: Fulfillment about 100k/day, Inventory about 2M/day.
            Channel::Ebay => (
                3600,
                Limit::new(100_000.0 / 86_400.0, 100_000),
                Limit::new(2_000_000.0 / 86_400.0, 2_000_000),
            ),
            // Leaky bucket of 40 at 2/s (standard plan), for both endpoints.
            Channel::Shopify => (3600, Limit::new(2.0, 40), Limit::new(2.0, 40)),
        };
        ChannelOptions {
            client_id: format!("{name}-client-id"),
            client_secret: format!("{name}-client-secret"),
            refresh_token: format!("{name}-refresh-token"),
            static_token: (channel == Channel::Shopify).then(|| "shpat_simulated".to_owned()),
            token_lifetime: Duration::from_secs(lifetime),
            shipment,
            inventory,
        }
    }
}

/// The simulator's settings, one [`ChannelOptions`] per marketplace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketOptions {
    /// Amazon SP-API.
    pub amazon: ChannelOptions,
    /// Walmart Marketplace.
    pub walmart: ChannelOptions,
    /// eBay Sell APIs.
    pub ebay: ChannelOptions,
    /// Shopify Admin REST.
    pub shopify: ChannelOptions,
    /// How many accepted calls to keep (the most recent ones).
    pub record_limit: usize,
}

impl Default for MarketOptions {
    fn default() -> Self {
        MarketOptions {
            amazon: ChannelOptions::defaults(Channel::Amazon),
            walmart: ChannelOptions::defaults(Channel::Walmart),
            ebay: ChannelOptions::defaults(Channel::Ebay),
            shopify: ChannelOptions::defaults(Channel::Shopify),
            record_limit: 100_000,
        }
    }
}

impl MarketOptions {
    /// One channel's settings.
    pub fn channel(&self, channel: Channel) -> &ChannelOptions {
        match channel {
            Channel::Amazon => &self.amazon,
            Channel::Walmart => &self.walmart,
            Channel::Ebay => &self.ebay,
            Channel::Shopify => &self.shopify,
        }
    }

    /// One channel's settings, to change before starting.
    pub fn channel_mut(&mut self, channel: Channel) -> &mut ChannelOptions {
        match channel {
            Channel::Amazon => &mut self.amazon,
            Channel::Walmart => &mut self.walmart,
            Channel::Ebay => &mut self.ebay,
            Channel::Shopify => &mut self.shopify,
        }
    }

    /// Every limit valid?
    pub fn validate(&self) -> Result<(), InvalidLimit> {
        for channel in Channel::ALL {
            for operation in Operation::ALL {
                self.channel(channel)
                    .limit(operation)
                    .validate()
                    .map_err(|err| InvalidLimit(format!("{channel}.{operation}: {}", err.0)))?;
            }
        }
        Ok(())
    }
}

/// Durations as humantime strings ("15m", "1h") in JSON.
mod humantime_serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}
