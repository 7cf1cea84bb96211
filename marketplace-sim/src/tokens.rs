//! Access tokens the token endpoints issued: each belongs to one channel, expires after the
//! channel's lifetime (tokio clock) and can be revoked or expired all at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::channel::Channel;
use crate::lock::lock;

/// What a presented access token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenCheck {
    Valid,
    /// Never issued, or issued for another channel.
    Unknown,
    Expired,
    Revoked,
}

struct Issued {
    channel: Channel,
    expires_at: Instant,
    revoked: bool,
}

#[derive(Default)]
pub(crate) struct Tokens {
    issued: Mutex<HashMap<String, Issued>>,
}

impl Tokens {
    /// A new token for `channel`, accepted for `lifetime`.
    pub(crate) fn issue(&self, channel: Channel, lifetime: Duration) -> String {
        let prefix = match channel {
            Channel::Amazon => "Atza|",
            Channel::Walmart => "wm-",
            Channel::Ebay => "v^1.1#i^1#",
            Channel::Shopify => "shpat_",
        };
        let token = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
        lock(&self.issued).insert(
            token.clone(),
            Issued {
                channel,
                expires_at: Instant::now() + lifetime,
                revoked: false,
            },
        );
        token
    }

    pub(crate) fn check(&self, channel: Channel, token: &str) -> TokenCheck {
        match lock(&self.issued).get(token) {
            Some(issued) if issued.channel != channel => TokenCheck::Unknown,
            Some(issued) if issued.revoked => TokenCheck::Revoked,
            Some(issued) if Instant::now() >= issued.expires_at => TokenCheck::Expired,
            Some(_) => TokenCheck::Valid,
            None => TokenCheck::Unknown,
        }
    }

    /// Revokes every token issued so far; returns how many were not revoked yet.
    pub(crate) fn revoke_all(&self) -> usize {
        let mut issued = lock(&self.issued);
        let mut count = 0;
        for token in issued.values_mut().filter(|t| !t.revoked) {
            token.revoked = true;
            count += 1;
        }
        count
    }

    /// Expires every token issued so far; returns how many were still valid.
    pub(crate) fn expire_all(&self) -> usize {
        let now = Instant::now();
        let mut issued = lock(&self.issued);
        let mut count = 0;
        for token in issued.values_mut() {
            if !token.revoked && token.expires_at > now {
                count += 1;
            }
            token.expires_at = token.expires_at.min(now);
        }
        count
    }

    pub(crate) fn clear(&self) {
        lock(&self.issued).clear();
    }
}
