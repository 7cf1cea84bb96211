//! The Redis rate-limit counters: one Lua script, one round trip per decision, shared by every
//! gateway instance. The script is [`gcra::decide`](super::gcra::decide) transcribed; all
//! limits of a key live in one hash (field = limit name, value = TAT in µs), so a decision
//! touches one key, which Redis Cluster routes by its hash tag `{gw:rl:<policy>:<key>}`.
//!
//! Time comes from Redis (`TIME`) rather than from each gateway, so instances whose clocks
//! disagree still share one limit exactly. Redis 5+ replicates a script's effects, not the
//! script, so reading the clock before writing is allowed.

use std::sync::{Arc, LazyLock};

use redis::Script;

use super::CounterStore;
use super::gcra::{Decision, Gcra, LimitOutcome, MAX_LIMITS};
use crate::state::StoreError;
use crate::state::redis::RedisStore;

/// KEYS[1]: the partition's hash. ARGV: now in µs (0 = ask Redis), cost, then per limit its
/// field name, interval (µs) and burst. Returns {allowed, then per limit remaining, reset,
/// retry}. Numbers stay below 2^50, where Lua's doubles are exact integers.
const LUA: &str = r"
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local cost = tonumber(ARGV[2])
local n = (#ARGV - 2) / 3
local fields = {}
for i = 1, n do fields[i] = ARGV[3 * i] end
local stored = redis.call('HMGET', KEYS[1], unpack(fields))
local allowed = 1
local tats = {}
for i = 1, n do
  local interval = tonumber(ARGV[3 * i + 1])
  local cap = interval * tonumber(ARGV[3 * i + 2])
  local tat = tonumber(stored[i]) or 0
  if tat < now then tat = now end
  tats[i] = tat
  if tat + cost * interval - now > cap then allowed = 0 end
end
local out = {allowed}
local longest = 0
for i = 1, n do
  local interval = tonumber(ARGV[3 * i + 1])
  local cap = interval * tonumber(ARGV[3 * i + 2])
  local tat = tats[i]
  local nxt = tat + cost * interval
  if allowed == 1 then
    redis.call('HSET', KEYS[1], fields[i], string.format('%d', nxt))
    if nxt - now > longest then longest = nxt - now end
    out[#out + 1] = math.floor((cap - (nxt - now)) / interval)
    out[#out + 1] = nxt - now
    out[#out + 1] = 0
  else
    local left = cap - (tat - now)
    if left < 0 then left = 0 end
    local retry = nxt - now - cap
    if retry < 0 then retry = 0 end
    out[#out + 1] = math.floor(left / interval)
    out[#out + 1] = tat - now
    out[#out + 1] = retry
  end
end
if allowed == 1 then
  redis.call('PEXPIRE', KEYS[1], math.floor(longest / 1000) + 1)
end
return out
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LUA));

/// Decides requests against state in Redis.
#[derive(Debug)]
pub struct RedisCounters {
    store: Arc<RedisStore>,
    prefix: String,
    limits: Box<[Gcra]>,
    names: Box<[Box<str>]>,
}

impl RedisCounters {
    /// A limiter for the policy `policy` with these limits (and names, the hash fields).
    pub fn new(
        store: Arc<RedisStore>,
        policy: &str,
        limits: &[Gcra],
        names: &[Box<str>],
    ) -> RedisCounters {
        RedisCounters {
            store,
            prefix: format!("{{gw:rl:{policy}:"),
            limits: limits.into(),
            names: names.into(),
        }
    }

    /// The Redis key of a partition: `{gw:rl:<policy>:<partition>}`.
    pub fn key(&self, partition: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + partition.len() + 1);
        key.push_str(&self.prefix);
        key.push_str(partition);
        key.push('}');
        key
    }

    /// Decides a request of `cost` units for `partition`, at Redis's time (or at `now_us`,
    /// microseconds since the epoch, for tests that must not depend on the clock). One script
    /// call, bounded by the store's timeout.
    pub async fn decide(
        &self,
        partition: &str,
        cost: u64,
        now_us: Option<u64>,
    ) -> Result<Decision, StoreError> {
        let mut inv = SCRIPT.prepare_invoke();
        inv.key(self.key(partition))
            .arg(now_us.unwrap_or(0))
            .arg(cost);
        for (g, name) in self.limits.iter().zip(self.names.iter()) {
            inv.arg(&**name).arg(g.interval).arg(g.burst);
        }
        let reply: Vec<i64> = self
            .store
            .call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await?;
        parse(&reply, self.limits.len())
    }
}

impl CounterStore for RedisCounters {
    /// Decides at Redis's time (`now_us`, the gateway's monotonic clock, means nothing to other
    /// instances), so instances whose clocks disagree share one limit exactly.
    fn decide(
        &self,
        key: &str,
        cost: u64,
        _now_us: u64,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send {
        RedisCounters::decide(self, key, cost, None)
    }
}

fn parse(reply: &[i64], n: usize) -> Result<Decision, StoreError> {
    if reply.len() != 1 + 3 * n || n > MAX_LIMITS {
        return Err(StoreError::Failed(format!(
            "the rate-limit script answered {} values for {n} limits",
            reply.len()
        )));
    }
    let mut outcomes = [LimitOutcome::default(); MAX_LIMITS];
    for (i, o) in outcomes.iter_mut().take(n).enumerate() {
        let v = |j: usize| u64::try_from(reply[1 + 3 * i + j]).unwrap_or(0);
        *o = LimitOutcome {
            remaining: v(0),
            reset_us: v(1),
            retry_us: v(2),
        };
    }
    Ok(Decision::new(reply[0] == 1, &outcomes[..n]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_the_wrong_shape_are_store_errors() {
        assert!(parse(&[1, 4, 720, 0], 1).is_ok_and(|d| d.allowed && d.limits()[0].remaining == 4));
        assert!(parse(&[1, 4, 720], 1).is_err());
    }
}
