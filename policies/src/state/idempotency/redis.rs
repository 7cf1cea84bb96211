//! The Redis idempotency records, shared by every gateway instance: one Lua script claims a key
//! or answers what holds it (the claim in flight, or the stored response, so a replay costs
//! one round trip), one completes a claim, one releases it. Each key is one hash,
//! `{gw:idem:<policy>:<channel>|<route>|<key>}` (the hash tag keeps it on one Cluster slot),
//! with the fields `exp` (unix ms when it ends), `fp` (fingerprint), `tok` (the claim's token,
//! while in flight), and once completed `st`, `hd`, `bd` (status, headers, body).
//!
//! Time is the gateway's clock (passed in), the same as the in-process store uses, so both
//! stores make the same decisions at the same instants; Redis's own expiry (PEXPIRE, the same
//! duration) only collects what has ended.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use redis::Script;

use super::{Claim, Fingerprint, Record, RecordStore};
use crate::state::StoreError;
use crate::state::redis::RedisStore;

/// KEYS[1]: the record. ARGV: now (unix ms), fingerprint, token, lease (ms).
/// Returns {'claimed'}, {'inflight', fp, ms left} or {'done', fp, status, headers, body}.
const CLAIM: &str = r"
local now = tonumber(ARGV[1])
local r = redis.call('HMGET', KEYS[1], 'exp', 'fp', 'st', 'hd', 'bd')
local exp = tonumber(r[1])
if exp and exp > now then
  if r[3] then return {'done', r[2], r[3], r[4], r[5]} end
  return {'inflight', r[2], string.format('%d', exp - now)}
end
redis.call('DEL', KEYS[1])
local lease = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'exp', string.format('%d', now + lease), 'fp', ARGV[2], 'tok', ARGV[3])
redis.call('PEXPIRE', KEYS[1], lease)
return {'claimed'}
";

/// KEYS[1]: the record. ARGV: token, now (unix ms), TTL (ms), status, headers, body.
/// Returns 1 when stored, 0 when the claim is not this token's any more or its lease ran out.
const COMPLETE: &str = r"
local held = redis.call('HMGET', KEYS[1], 'tok', 'exp')
if held[1] ~= ARGV[1] or (tonumber(held[2]) or 0) <= tonumber(ARGV[2]) then return 0 end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'exp', string.format('%d', tonumber(ARGV[2]) + ttl), 'st', ARGV[4], 'hd', ARGV[5], 'bd', ARGV[6])
redis.call('HDEL', KEYS[1], 'tok')
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
";

/// KEYS[1]: the record. ARGV: token, now (unix ms). Deletes the claim if it is still this
/// token's and its lease has not run out.
const RELEASE: &str = r"
local held = redis.call('HMGET', KEYS[1], 'tok', 'exp')
if held[1] ~= ARGV[1] or (tonumber(held[2]) or 0) <= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM));
static COMPLETE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(COMPLETE));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

/// Idempotency records in Redis.
#[derive(Debug)]
pub struct RedisRecords {
    store: Arc<RedisStore>,
    prefix: String,
}

impl RedisRecords {
    /// The records of the policy `policy`.
    pub fn new(store: Arc<RedisStore>, policy: &str) -> RedisRecords {
        RedisRecords {
            store,
            prefix: format!("{{gw:idem:{policy}:"),
        }
    }

    /// The Redis key of a scoped key: `{gw:idem:<policy>:<scoped key>}`.
    pub fn key(&self, scoped: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + scoped.len() + 1);
        key.push_str(&self.prefix);
        key.push_str(scoped);
        key.push('}');
        key
    }

    /// See [`LocalRecords::claim`](super::LocalRecords::claim); one script call.
    pub async fn claim(
        &self,
        scoped: &str,
        fingerprint: &Fingerprint,
        token: u64,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Claim, StoreError> {
        let mut inv = CLAIM_SCRIPT.prepare_invoke();
        inv.key(self.key(scoped))
            .arg(now_ms)
            .arg(&fingerprint[..])
            .arg(token)
            .arg(lease_ms.max(1));
        let reply: Vec<Vec<u8>> = self
            .store
            .call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await?;
        parse_claim(reply)
    }

    /// See [`LocalRecords::complete`](super::LocalRecords::complete); one script call.
    pub async fn complete(
        &self,
        scoped: &str,
        token: u64,
        record: &Record,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut inv = COMPLETE_SCRIPT.prepare_invoke();
        inv.key(self.key(scoped))
            .arg(token)
            .arg(now_ms)
            .arg(ttl_ms.max(1))
            .arg(record.status)
            .arg(encode_headers(&record.headers))
            .arg(&record.body[..]);
        let stored: i64 = self
            .store
            .call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await?;
        Ok(stored == 1)
    }

    /// See [`LocalRecords::release`](super::LocalRecords::release); one script call.
    pub async fn release(&self, scoped: &str, token: u64, now_ms: u64) -> Result<bool, StoreError> {
        let mut inv = RELEASE_SCRIPT.prepare_invoke();
        inv.key(self.key(scoped)).arg(token).arg(now_ms);
        let released: i64 = self
            .store
            .call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await?;
        Ok(released == 1)
    }
}

impl RecordStore for RedisRecords {
    fn claim(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        token: u64,
        now_ms: u64,
        lease_ms: u64,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        RedisRecords::claim(self, key, fingerprint, token, now_ms, lease_ms)
    }

    async fn complete(
        &self,
        key: &str,
        token: u64,
        record: Record,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        RedisRecords::complete(self, key, token, &record, now_ms, ttl_ms).await
    }

    fn release(
        &self,
        key: &str,
        token: u64,
        now_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        RedisRecords::release(self, key, token, now_ms)
    }
}

/// Headers as `name:value` lines (a header value holds no CR or LF, so this is unambiguous).
fn encode_headers(headers: &[(HeaderName, HeaderValue)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 2)
            .sum(),
    );
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

fn decode_headers(bytes: &[u8]) -> Result<Vec<(HeaderName, HeaderValue)>, StoreError> {
    let mut headers = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let colon = line.iter().position(|b| *b == b':');
        let parsed = colon.and_then(|i| {
            Some((
                HeaderName::from_bytes(&line[..i]).ok()?,
                HeaderValue::from_bytes(&line[i + 1..]).ok()?,
            ))
        });
        match parsed {
            Some(h) => headers.push(h),
            None => return Err(bad("a stored header is malformed")),
        }
    }
    Ok(headers)
}

fn bad(what: &str) -> StoreError {
    StoreError::Failed(format!("idempotency record: {what}"))
}

fn fingerprint(bytes: &[u8]) -> Result<Fingerprint, StoreError> {
    bytes
        .try_into()
        .map_err(|_| bad("the fingerprint is not 32 bytes"))
}

fn parse_claim(mut reply: Vec<Vec<u8>>) -> Result<Claim, StoreError> {
    match (reply.first().map(Vec::as_slice), reply.len()) {
        (Some(b"claimed"), 1) => Ok(Claim::Claimed),
        (Some(b"inflight"), 3) => {
            let remaining_ms = std::str::from_utf8(&reply[2])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("the lease is not a number"))?;
            Ok(Claim::InFlight {
                fingerprint: fingerprint(&reply[1])?,
                remaining_ms,
            })
        }
        (Some(b"done"), 5) => {
            let body = Bytes::from(std::mem::take(&mut reply[4]));
            let status = std::str::from_utf8(&reply[2])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("the status is not a number"))?;
            Ok(Claim::Done {
                fingerprint: fingerprint(&reply[1])?,
                record: Arc::new(Record {
                    status,
                    headers: decode_headers(&reply[3])?,
                    body,
                }),
            })
        }
        _ => Err(bad("the claim script answered an unexpected shape")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_replies_are_store_errors() {
        let headers = vec![
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            ),
            (
                http::header::LOCATION,
                HeaderValue::from_static("/erp/v1/orders/SO-1"),
            ),
        ];
        assert_eq!(decode_headers(&encode_headers(&headers)).unwrap(), headers);
        assert!(decode_headers(b"no colon\n").is_err());
        assert_eq!(
            parse_claim(vec![b"claimed".to_vec()]).unwrap(),
            Claim::Claimed
        );
        let done = parse_claim(vec![
            b"done".to_vec(),
            vec![1; 32],
            b"201".to_vec(),
            encode_headers(&headers),
            b"{}".to_vec(),
        ])
        .unwrap();
        assert!(
            matches!(done, Claim::Done { record, .. } if record.status == 201 && record.headers == headers)
        );
        assert!(parse_claim(vec![b"inflight".to_vec(), vec![1; 31], b"5".to_vec()]).is_err());
        assert!(parse_claim(vec![b"what".to_vec()]).is_err());
    }
}
