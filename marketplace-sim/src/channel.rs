//! The four marketplaces and the two outbound operations, as closed sets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A marketplace the simulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Amazon Selling Partner API (LWA tokens).
    Amazon,
    /// Walmart Marketplace (client-credentials tokens).
    Walmart,
    /// eBay Sell APIs (user tokens from a refresh token).
    Ebay,
    /// Shopify Admin REST (a static access token).
    Shopify,
}

impl Channel {
    /// Every channel, in a fixed order.
    pub const ALL: [Channel; 4] = [
        Channel::Amazon,
        Channel::Walmart,
        Channel::Ebay,
        Channel::Shopify,
    ];

    /// The lowercase name used in paths, records and options.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Amazon => "amazon",
            Channel::Walmart => "walmart",
            Channel::Ebay => "ebay",
            Channel::Shopify => "shopify",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the simulator's channels or operations.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown {what} {name:?}")]
pub struct UnknownName {
    what: &'static str,
    name: String,
}

impl FromStr for Channel {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "channel",
                name: s.to_owned(),
            })
    }
}

/// An outbound operation (each channel has one endpoint per operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Confirm a shipment (tracking, lines).
    Shipment,
    /// Set one SKU's available quantity.
    Inventory,
}

impl Operation {
    /// Both operations.
    pub const ALL: [Operation; 2] = [Operation::Shipment, Operation::Inventory];

    /// `shipment` or `inventory`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Shipment => "shipment",
            Operation::Inventory => "inventory",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "operation",
                name: s.to_owned(),
            })
    }
}
