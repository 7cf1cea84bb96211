//! What a delivery to a marketplace needs besides the forwarding layer: its turn under the
//! marketplace's published limit (counted where the `outbound` section says: this instance or
//! the shared Redis), a pause of every delivery of that operation after the marketplace's own
//! 429 (its wait read from the marketplace's rate headers), and the marketplace's ways of
//! saying no inside a success status.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::RETRY_AFTER;
use policies::fanout::Operation;
use policies::resilience::backoff::parse_retry_after;
use policies::state::rate_limit::CounterStore;
use serde_json::Value;

/// The origin of the local counters' monotonic time, one per process so counters kept across
/// reloads keep counting from the same origin.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The wait after a marketplace's 429 when it says nothing about when to come back.
const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(1);
/// The longest wait a marketplace's rate header can impose at once (a broken header must not
/// park deliveries for a day; a longer throttle simply answers 429 again).
const MAX_THROTTLE_WAIT: Duration = Duration::from_secs(300);

/// Whether a delivery may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Its turn.
    Go,
    /// Not before this many milliseconds; `true` when the marketplace itself asked for the
    /// pause (a 429), `false` for the gateway's mirror of its published limit.
    Wait(u64, bool),
}

/// The pauses marketplaces asked for, by `<channel>:<operation>` (this instance).
#[derive(Debug, Default)]
pub struct Throttle {
    paused_until_ms: Mutex<HashMap<String, u64>>,
}

impl Throttle {
    /// Takes a turn for one call of `operation` on `channel` at `now_ms` (unix ms): refused
    /// while the marketplace's pause lasts, then as the operation's limit decides. A limit
    /// store that fails lets the call go: the marketplace's own 429 still slows it down.
    pub async fn turn(&self, channel: &str, operation: &Operation, now_ms: u64) -> Turn {
        let key = format!("{channel}:{}", operation.name);
        if let Ok(mut paused) = self.paused_until_ms.lock() {
            match paused.get(&key) {
                Some(&until) if until > now_ms => return Turn::Wait(until - now_ms, true),
                Some(_) => {
                    paused.remove(&key);
                }
                None => {}
            }
        }
        let Some(limit) = &operation.limit else {
            return Turn::Go;
        };
        let now_us = u64::try_from(ORIGIN.elapsed().as_micros()).unwrap_or(u64::MAX);
        match limit.counters.decide(&key, 1, now_us).await {
            Ok(d) if !d.allowed => {
                let us = d.limits().iter().map(|o| o.retry_us).max().unwrap_or(0);
                Turn::Wait(us.div_ceil(1000).max(1), false)
            }
            Ok(_) => Turn::Go,
            Err(e) => {
                tracing::warn!(channel, operation = %operation.name, error = %e, "outbound limit store failed; the call goes");
                Turn::Go
            }
        }
    }

    /// Pauses every call of `operation` on `channel` until `until_ms`.
    pub fn pause(&self, channel: &str, operation: &str, until_ms: u64) {
        if let Ok(mut paused) = self.paused_until_ms.lock() {
            let e = paused.entry(format!("{channel}:{operation}")).or_insert(0);
            *e = (*e).max(until_ms);
        }
    }
}

fn header_f64(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// How long to wait after a marketplace's 429: its `Retry-After`; Walmart's
/// `x-next-replenish-time` (epoch ms) when `x-current-token-count` is spent; Amazon's
/// `x-amzn-RateLimit-Limit` (requests per second: one request's worth); else a second.
pub fn wait_after_throttle(headers: &HeaderMap, now: SystemTime) -> Duration {
    let wait = if let Some(d) = headers
        .get(RETRY_AFTER)
        .and_then(|v| parse_retry_after(v.as_bytes(), now))
    {
        d
    } else if let Some(at_ms) = header_f64(headers, "x-next-replenish-time") {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_millis() as f64);
        Duration::from_millis((at_ms - now_ms).max(1.0) as u64)
    } else if let Some(rate) = header_f64(headers, "x-amzn-ratelimit-limit").filter(|r| *r > 0.0) {
        Duration::from_secs_f64((1.0 / rate).min(MAX_THROTTLE_WAIT.as_secs_f64()))
    } else {
        DEFAULT_THROTTLE_WAIT
    };
    wait.clamp(Duration::from_millis(1), MAX_THROTTLE_WAIT)
}

/// A marketplace's refusal inside a success status: Amazon's listings answer `status:
/// INVALID` with 200, eBay's bulk update lists a failed `statusCode` per SKU in a 200 or 207.
pub fn refused_in_body(operation: &str, body: &[u8]) -> Option<String> {
    if operation != "inventory" || body.is_empty() {
        return None;
    }
    let doc = transforms::json_text::parse_slice(body).ok()?;
    if doc.get("status").and_then(Value::as_str) == Some("INVALID") {
        return Some(format!(
            "the marketplace answered INVALID: {}",
            doc.get("issues").map(Value::to_string).unwrap_or_default()
        ));
    }
    let failed: Vec<String> = doc
        .get("responses")
        .and_then(Value::as_array)?
        .iter()
        .filter(|r| r.get("statusCode").and_then(Value::as_u64).unwrap_or(200) >= 400)
        .map(Value::to_string)
        .collect();
    (!failed.is_empty()).then(|| format!("the marketplace refused: {}", failed.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_wait_after_a_429_comes_from_each_marketplaces_headers() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            wait_after_throttle(&headers(&[("retry-after", "3")]), now),
            Duration::from_secs(3)
        );
        assert_eq!(
            wait_after_throttle(
                &headers(&[
                    ("x-current-token-count", "0"),
                    ("x-next-replenish-time", "1000250")
                ]),
                now
            ),
            Duration::from_millis(250)
        );
        assert_eq!(
            wait_after_throttle(&headers(&[("x-amzn-RateLimit-Limit", "2.0")]), now),
            Duration::from_millis(500)
        );
        assert_eq!(
            wait_after_throttle(&HeaderMap::new(), now),
            DEFAULT_THROTTLE_WAIT
        );
        assert_eq!(
            wait_after_throttle(&headers(&[("x-amzn-RateLimit-Limit", "0.00001")]), now),
            MAX_THROTTLE_WAIT
        );
    }

    #[test]
    fn refusals_inside_a_200_are_found() {
        assert!(
            refused_in_body(
                "inventory",
                br#"{"sku":"a","status":"INVALID","issues":[{"code":"x"}]}"#
            )
            .is_some()
        );
        assert!(
            refused_in_body(
                "inventory",
                br#"{"sku":"a","status":"ACCEPTED","issues":[]}"#
            )
            .is_none()
        );
        assert!(
            refused_in_body(
                "inventory",
                br#"{"responses":[{"statusCode":400,"sku":"a"}]}"#
            )
            .is_some()
        );
        assert!(
            refused_in_body(
                "inventory",
                br#"{"responses":[{"statusCode":200,"sku":"a"}]}"#
            )
            .is_none()
        );
        assert!(refused_in_body("shipment", br#"{"status":"INVALID"}"#).is_none());
    }

    #[test]
    fn a_pause_holds_every_call_of_the_operation_until_it_ends() {
        let t = Throttle::default();
        t.pause("amazon", "shipment", 2_000);
        let paused = t
            .paused_until_ms
            .lock()
            .unwrap()
            .get("amazon:shipment")
            .copied();
        assert_eq!(paused, Some(2_000));
        t.pause("amazon", "shipment", 1_000);
        let paused = t
            .paused_until_ms
            .lock()
            .unwrap()
            .get("amazon:shipment")
            .copied();
        assert_eq!(
            paused,
            Some(2_000),
            "a shorter pause never shortens a longer one"
        );
    }
}
