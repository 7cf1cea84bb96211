//! The delivery queues on Redis Streams, shared by every gateway instance, so any instance can
//! accept a document and any instance can deliver it.
//!
//! A queue is split into partitions (a constructor parameter, 16 by default); a delivery's
//! partition is `fnv1a(ordering key, or its id when it has none) % partitions`, so every
//! delivery of one ordering key lives in one partition. The first instance to use a queue
//! records its partition count in `gw:dq:queues` and every instance uses that count, so
//! instances configured differently still agree where a key lives.
//!
//! Keys (`P` = `gw:dq:{<queue>:<p>}:`; the hash tag keeps each partition in one Cluster slot,
//! and every script touches one partition only):
//! - `P s`: the stream every accepted (or replayed) delivery is added to, read by the consumer
//!   group `g`; `P lease`: which instance is that partition's one consumer (`SET PX`, renewed
//!   by every claim). An instance that takes a partition over (its holder stopped renewing)
//!   moves the holder's pending entries to itself with `XAUTOCLAIM`. An entry is acknowledged
//!   (and deleted) when its delivery is delivered or purged, so the group's pending list is
//!   the partition's deliveries not yet delivered.
//! - `P d:<id>`: a hash per delivery: `rec` (the record's JSON), `st` (the status's JSON),
//!   and the fields scripts decide on: `state`, `next`, `upd`, `ok` (ordering key), `acc`,
//!   `len` (bytes counted), `tok`/`until` (the claim), `ver` (bumped on every change), `eid`.
//! - `P k:<ordering key>`: the key's line, oldest first, of deliveries read from the stream
//!   and not delivered; only its head may be claimed, and a dead head parks the key.
//! - `P r`: heads due to be claimed (score: due time); `P f`: claimed ones (score: lease end);
//!   `P all` / `P live`: every id / the ids not delivered (lexicographic, for the admin API);
//!   `P done`: the delivered (and superseded) ids by settle time, so pruning reads only what
//!   it removes;
//!   `P dead`: the dead letters, so the queue's gauges never read every delivery (ids are
//!   UUIDv7: the first live id that is not dead is the oldest pending one); `P dl:<channel>`:
//!   the dead letters of one channel (`P dl:` those without one), and `P dlc` the channels
//!   that have some, so the per-channel gauges cost one read per channel.
//! - `gw:dq:{<queue>}:n`: the queue's `entries` and `bytes` counted against its limits.
//! - `gw:dq:{<queue>}:seq`: the queue's last-writer-wins register, a hash ordering key ->
//!   the highest sequence noted (decimal), checked and set by one script.
//!
//! A superseded delivery leaves its partition like a delivered one (acknowledged, out of its
//! key's line and of `live`, its entry and bytes given back), never having been sent.
//! - `gw:dq:{ix:<n>}`: 16 hashes id -> `<partition>|<queue>`, so `get`, `requeue` and `purge`
//!   find a delivery by id alone.
//!
//! Ordering across instances: only the partition's lease holder claims in it, and within the
//! partition a script claims a key's head atomically; a claim not settled before its lease
//! (`now_ms + lease_ms`) ends goes back to the line, so an instance that took a partition over
//! delivers a dead instance's claims again (same record, same upstream key) once they expire.
//!
//! The limits: an enqueue first reserves its entry and bytes in the queue's counter (one Lua
//! script: check and add, so concurrent instances never overshoot), then stores the delivery
//! in its partition; delivering or purging gives them back. These are separate calls (the
//! counter and the partition are in different slots): a gateway that dies between them leaves
//! the counter one entry too high until an operator purges the queue's counter.
//!
//! `enqueue_batch` is not atomic here (its deliveries may be in different partitions, so
//! different slots): it stores them one by one, in order, and stops at the first failure,
//! the ones before it kept. Enqueueing an id already stored is a no-op, so the caller's retry
//! of the whole batch stores only the missing ones.
//!
//! Durability is Redis's: `enqueue` returns when Redis has the delivery in memory; it
//! survives a power cut only with `appendonly yes` and `appendfsync always` (and a restart
//! of Redis without persistence loses the queue).
//!
//! Calls are bounded by the shared store's timeout: build the delivery store from a
//! `RedisStore` whose timeout suits it (e.g. 1 s), not the 50 ms the request path uses.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use redis::{Script, Value};

use super::{
    AttemptRecord, ChannelDeadLetters, Claimed, Delivery, DeliveryError, DeliveryRecord,
    DeliveryState, DeliveryStatus, DeliveryStore, FORMAT_VERSION, Filter, QueueLimits, QueueStats,
    Settle,
};
use crate::state::StoreError;
use crate::state::redis::RedisStore;

/// Shared Lua: puts a key's new head in the ready set if it is waiting.
const PROMOTE: &str = r"
local function promote(p, id)
  if not id then return end
  local h = redis.call('HMGET', p .. 'd:' .. id, 'state', 'next')
  if h[1] == 'pending' then redis.call('ZADD', p .. 'r', h[2], id) end
end
";

/// Shared Lua: files a delivery under (or removes it from) its channel's dead letters. The
/// channel is the hash's `ch` (written by enqueue; read once from the record for deliveries
/// stored before it was).
const DEAD_LETTER: &str = r"
local function channel_of(d)
  local ch = redis.call('HGET', d, 'ch')
  if ch then return ch end
  local ok, rec = pcall(cjson.decode, redis.call('HGET', d, 'rec') or '')
  ch = ''
  if ok and type(rec) == 'table' and type(rec.channel) == 'string' then ch = rec.channel end
  redis.call('HSET', d, 'ch', ch)
  return ch
end
local function dead_letter(p, id, dead)
  local ch = channel_of(p .. 'd:' .. id)
  local k = p .. 'dl:' .. ch
  if dead then
    redis.call('ZADD', k, 0, id)
    redis.call('SADD', p .. 'dlc', ch)
  else
    redis.call('ZREM', k, id)
    if redis.call('ZCARD', k) == 0 then redis.call('SREM', p .. 'dlc', ch) end
  end
end
";

/// KEYS[1]: the stream. ARGV: prefix, id, record, status, ordering key ('' none), now,
/// accepted at, length, channel ('' none). 1 stored, 0 the id exists already.
const ENQUEUE: &str = r"
local p = ARGV[1]
local d = p .. 'd:' .. ARGV[2]
if redis.call('EXISTS', d) == 1 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'g', '0', 'MKSTREAM')
end
local eid = redis.call('XADD', KEYS[1], '*', 'id', ARGV[2])
redis.call('HSET', d, 'rec', ARGV[3], 'st', ARGV[4], 'ok', ARGV[5], 'acc', ARGV[7],
  'len', ARGV[8], 'state', 'pending', 'next', ARGV[6], 'upd', ARGV[6], 'ver', 1, 'eid', eid,
  'ch', ARGV[9])
redis.call('ZADD', p .. 'all', 0, ARGV[2])
redis.call('ZADD', p .. 'live', 0, ARGV[2])
return 1
";

/// KEYS[1]: the stream. ARGV: prefix, instance, now, partition lease (ms).
/// Takes or renews the partition, admits new stream entries to their keys' lines, frees
/// expired claims; returns how many heads are due (-1: another instance holds it, or empty).
const SCAN: &str = r"
local p = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local lk = p .. 'lease'
local holder = redis.call('GET', lk)
if holder and holder ~= ARGV[2] then return -1 end
redis.call('SET', lk, ARGV[2], 'PX', ARGV[4])
if not holder then
  -- taking the partition over: the entries the previous holder read and did not finish
  -- are this consumer's now (their claims come back below once their leases end)
  local cursor = '0-0'
  repeat
    local r = redis.call('XAUTOCLAIM', KEYS[1], 'g', ARGV[2], 0, cursor, 'COUNT', 1000, 'JUSTID')
    cursor = r[1]
  until cursor == '0-0'
  -- forget the consumers that hold nothing now (the dead instances), so XINFO stays short
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], 'g')) do
    if c[2] ~= ARGV[2] and c[4] == 0 then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'g', c[2]) end
  end
end
local got = redis.call('XREADGROUP', 'GROUP', 'g', ARGV[2], 'COUNT', 1000, 'STREAMS', KEYS[1], '>')
if got then
  for _, e in ipairs(got[1][2]) do
    local id = e[2][2]
    local h = redis.call('HMGET', p .. 'd:' .. id, 'ok', 'state', 'next')
    if not h[2] then
      redis.call('XACK', KEYS[1], 'g', e[1])
      redis.call('XDEL', KEYS[1], e[1])
    else
      local head = true
      if h[1] ~= '' then head = redis.call('RPUSH', p .. 'k:' .. h[1], id) == 1 end
      if head and h[2] == 'pending' then redis.call('ZADD', p .. 'r', h[3], id) end
    end
  end
end
local expired = redis.call('ZRANGEBYSCORE', p .. 'f', '-inf', ARGV[3], 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  local d = p .. 'd:' .. id
  redis.call('ZREM', p .. 'f', id)
  redis.call('HDEL', d, 'tok', 'until')
  redis.call('HINCRBY', d, 'ver', 1)
  redis.call('HSET', d, 'state', 'pending')
  redis.call('ZADD', p .. 'r', redis.call('HGET', d, 'next'), id)
end
return redis.call('ZCOUNT', p .. 'r', '-inf', ARGV[3])
";

/// KEYS[1]: the stream. ARGV: prefix, instance, now, lease end, most, token prefix.
/// Claims due heads: {id, token, record, status, next, updated} each.
const TAKE: &str = r"
local p = ARGV[1]
if redis.call('GET', p .. 'lease') ~= ARGV[2] then return {} end
local ids = redis.call('ZRANGEBYSCORE', p .. 'r', '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[5]))
local out = {}
for i, id in ipairs(ids) do
  local d = p .. 'd:' .. id
  local tok = ARGV[6] .. ':' .. i
  redis.call('ZREM', p .. 'r', id)
  redis.call('ZADD', p .. 'f', ARGV[4], id)
  redis.call('HINCRBY', d, 'ver', 1)
  redis.call('HSET', d, 'state', 'in_flight', 'tok', tok, 'until', ARGV[4], 'upd', ARGV[3])
  local h = redis.call('HMGET', d, 'rec', 'st', 'next')
  out[#out + 1] = {id, tok, h[1], h[2], h[3], ARGV[3]}
end
return out
";

/// KEYS[1]: the stream. ARGV: prefix, id, token, new state (pending, delivered, dead,
/// superseded), next, now, status. -1: the claim is not this token's; else the bytes to give
/// back (delivered, superseded).
const SETTLE: &str = r"
local p = ARGV[1]
local id = ARGV[2]
local d = p .. 'd:' .. id
local h = redis.call('HMGET', d, 'tok', 'state', 'ok', 'eid', 'len')
if h[1] ~= ARGV[3] or h[2] ~= 'in_flight' then return -1 end
redis.call('ZREM', p .. 'f', id)
redis.call('HDEL', d, 'tok', 'until')
redis.call('HINCRBY', d, 'ver', 1)
redis.call('HSET', d, 'state', ARGV[4], 'next', ARGV[5], 'upd', ARGV[6], 'st', ARGV[7])
if ARGV[4] == 'pending' then
  redis.call('ZADD', p .. 'r', ARGV[5], id)
elseif ARGV[4] == 'dead' then
  redis.call('ZADD', p .. 'dead', 0, id)
  dead_letter(p, id, true)
elseif ARGV[4] == 'delivered' or ARGV[4] == 'superseded' then
  redis.call('ZREM', p .. 'live', id)
  redis.call('ZADD', p .. 'done', ARGV[6], id)
  redis.call('XACK', KEYS[1], 'g', h[4])
  redis.call('XDEL', KEYS[1], h[4])
  if h[3] ~= '' then
    local k = p .. 'k:' .. h[3]
    redis.call('LREM', k, 1, id)
    promote(p, redis.call('LINDEX', k, 0))
  end
  return tonumber(h[5])
end
return 0
";

/// KEYS[1]: the stream. ARGV: prefix, id, expected version, now, status, record ('' kept),
/// its length. {previous state, previous length}; -1 changed meanwhile; -2 not final/absent.
const REQUEUE: &str = r"
local p = ARGV[1]
local id = ARGV[2]
local d = p .. 'd:' .. id
local h = redis.call('HMGET', d, 'state', 'ver', 'len')
if not h[1] then return -2 end
if h[2] ~= ARGV[3] then return -1 end
if h[1] ~= 'dead' and h[1] ~= 'delivered' and h[1] ~= 'superseded' then return -2 end
redis.call('HINCRBY', d, 'ver', 1)
redis.call('HSET', d, 'state', 'pending', 'next', ARGV[4], 'upd', ARGV[4], 'st', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', d, 'rec', ARGV[6], 'len', ARGV[7]) end
if h[1] == 'dead' then
  redis.call('ZREM', p .. 'dead', id)
  dead_letter(p, id, false)
  -- a dead delivery is still the head of its key's line: due at once, the key unparked
  redis.call('ZADD', p .. 'r', ARGV[4], id)
else
  -- a delivered (or superseded) one left its line: it joins the end again through the stream
  local eid = redis.call('XADD', KEYS[1], '*', 'id', id)
  redis.call('HSET', d, 'eid', eid)
  redis.call('ZADD', p .. 'live', 0, id)
  redis.call('ZREM', p .. 'done', id)
end
return {h[1], h[3]}
";

/// KEYS[1]: the stream. ARGV: prefix, id. {previous state, length}; -1 absent; -2 in flight.
const PURGE: &str = r"
local p = ARGV[1]
local id = ARGV[2]
local d = p .. 'd:' .. id
local h = redis.call('HMGET', d, 'state', 'ok', 'eid', 'len')
if not h[1] then return -1 end
if h[1] == 'in_flight' then return -2 end
if h[1] == 'dead' then dead_letter(p, id, false) end
if h[3] then
  redis.call('XACK', KEYS[1], 'g', h[3])
  redis.call('XDEL', KEYS[1], h[3])
end
if h[2] ~= '' then
  local k = p .. 'k:' .. h[2]
  local head = redis.call('LINDEX', k, 0)
  redis.call('LREM', k, 1, id)
  if head == id then promote(p, redis.call('LINDEX', k, 0)) end
end
for _, s in ipairs({'r', 'f', 'all', 'live', 'done', 'dead'}) do redis.call('ZREM', p .. s, id) end
redis.call('DEL', d)
return {h[1], h[4]}
";

/// KEYS[1]: the stream. ARGV: prefix, cutoff, most. The ids of delivered (or superseded)
/// deliveries settled before the cutoff, now removed (their index entries are the caller's
/// to drop).
const PRUNE: &str = r"
local p = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', p .. 'done', '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZREM', p .. 'done', id)
  redis.call('ZREM', p .. 'all', id)
  redis.call('DEL', p .. 'd:' .. id)
end
return ids
";

/// Shared Lua: one delivery as {id, record, status, state (blocked computed), next, updated,
/// version}, or false.
const READ: &str = r"
local function read(p, id)
  local h = redis.call('HMGET', p .. 'd:' .. id, 'rec', 'st', 'state', 'next', 'upd', 'ver', 'ok')
  if not h[1] then return false end
  local state = h[3]
  if state == 'pending' and h[7] ~= '' then
    local head = redis.call('LINDEX', p .. 'k:' .. h[7], 0)
    if head and head ~= id and redis.call('HGET', p .. 'd:' .. head, 'state') == 'dead' then
      state = 'blocked'
    end
  end
  return {id, h[1], h[2], state, h[4], h[5], h[6]}
end
";

/// KEYS[1]: the stream. ARGV: prefix, id.
const GET: &str = r"
return read(ARGV[1], ARGV[2])
";

/// KEYS[1]: the stream. ARGV: prefix, after ('' from the start), most.
const LIST: &str = r"
local from = '-'
if ARGV[2] ~= '' then from = '(' .. ARGV[2] end
local ids = redis.call('ZRANGEBYLEX', ARGV[1] .. 'all', from, '+', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local one = read(ARGV[1], id)
  if one then out[#out + 1] = one end
end
return out
";

/// KEYS[1]: the stream. ARGV: prefix. {not final, dead, oldest accepted not final or -1},
/// then {channel, its dead letters, acceptance of its oldest} per channel that has some.
const STATS: &str = r"
local p = ARGV[1]
local live = redis.call('ZCARD', p .. 'live')
local dead = redis.call('ZCARD', p .. 'dead')
local oldest = -1
local start = 0
while oldest < 0 do
  local ids = redis.call('ZRANGE', p .. 'live', start, start + 99)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    if not redis.call('ZSCORE', p .. 'dead', id) then
      oldest = tonumber(redis.call('HGET', p .. 'd:' .. id, 'acc')) or -1
      break
    end
  end
  start = start + 100
end
local out = {live - dead, dead, string.format('%d', oldest)}
for _, ch in ipairs(redis.call('SMEMBERS', p .. 'dlc')) do
  local k = p .. 'dl:' .. ch
  local first = redis.call('ZRANGE', k, 0, 0)[1]
  if first then
    out[#out + 1] = ch
    out[#out + 1] = redis.call('ZCARD', k)
    out[#out + 1] = redis.call('HGET', p .. 'd:' .. first, 'acc') or '0'
  end
end
return out
";
/// KEYS[1]: the stream. ARGV: prefix. The earliest due time of a waiting head, a claim's
/// lease end, or a stream entry not read yet; -1 none.
const NEXT_DUE: &str = r"
local p = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local best = -1
local function consider(t)
  t = tonumber(t)
  if t and (best < 0 or t < best) then best = t end
end
for _, z in ipairs({'r', 'f'}) do
  local first = redis.call('ZRANGE', p .. z, 0, 0, 'WITHSCORES')
  if first[2] then consider(first[2]) end
end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local last
  for i = 1, #g, 2 do if g[i] == 'last-delivered-id' then last = g[i + 1] end end
  if last then
    local unread = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
    if unread[1] then consider(redis.call('HGET', p .. 'd:' .. unread[1][2][2], 'next')) end
  end
end
return string.format('%d', best)
";

/// KEYS[1]: the queue's counter. ARGV: entries limit, bytes limit, bytes.
/// 'ok', or the limit that refused ('entries', 'bytes').
const RESERVE: &str = r"
local c = redis.call('HMGET', KEYS[1], 'entries', 'bytes')
local entries, bytes = tonumber(c[1]) or 0, tonumber(c[2]) or 0
if entries + 1 > tonumber(ARGV[1]) then return 'entries' end
if bytes + tonumber(ARGV[3]) > tonumber(ARGV[2]) then return 'bytes' end
redis.call('HINCRBY', KEYS[1], 'entries', 1)
redis.call('HINCRBY', KEYS[1], 'bytes', ARGV[3])
return 'ok'
";

/// KEYS[1]: the queue's counter. ARGV: entries delta, bytes delta (never below zero).
const ADJUST: &str = r"
for i, f in ipairs({'entries', 'bytes'}) do
  local v = redis.call('HINCRBY', KEYS[1], f, ARGV[i])
  if v < 0 then redis.call('HSET', KEYS[1], f, 0) end
end
return 1
";

/// KEYS[1]: the queue's register. ARGV: ordering key, sequence (decimal, no leading zeros).
/// 1 noted (not older than the stored one), 0 older. Compared as digit strings, not Lua
/// numbers: a u64 past 2^53 would lose its last digits as a double.
const NOTE_SEQUENCE: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local new = ARGV[2]
if cur then
  if #cur > #new then return 0 end
  if #cur == #new then
    for i = 1, #new do
      local a, b = string.byte(cur, i), string.byte(new, i)
      if a > b then return 0 end
      if a < b then break end
    end
  end
end
if cur ~= new then redis.call('HSET', KEYS[1], ARGV[1], new) end
return 1
";

static ENQUEUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ENQUEUE));
static SCAN_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SCAN));
static TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE));
static SETTLE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{PROMOTE}{DEAD_LETTER}{SETTLE}")));
static REQUEUE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{DEAD_LETTER}{REQUEUE}")));
static PURGE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{PROMOTE}{DEAD_LETTER}{PURGE}")));
static GET_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{READ}{GET}")));
static LIST_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{READ}{LIST}")));
static STATS_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(STATS));
static PRUNE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PRUNE));
static NEXT_DUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(NEXT_DUE));
static RESERVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RESERVE));
static ADJUST_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ADJUST));
static NOTE_SEQUENCE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(NOTE_SEQUENCE));

/// The registry of queues and their partition counts.
const QUEUES_KEY: &str = "gw:dq:queues";
/// How many hashes the id index is spread over (so it is not one hot Cluster slot).
const INDEX_SHARDS: u64 = 16;
/// How many delivered ids one prune call removes from a partition.
const PRUNE_BATCH: usize = 500;
/// How many ids a list call reads from a partition per round trip.
const LIST_BATCH: usize = 200;

/// How a [`RedisDeliveries`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisDeliveryOptions {
    /// Partitions per queue (used by the first instance that uses a queue; later ones adopt
    /// the recorded count). Ordering keys hash into them; more partitions spread a queue over
    /// more instances and Cluster slots.
    pub partitions: u32,
    /// How long an instance holds a partition after its last claim call (Redis `PX`, ms).
    /// Workers poll far more often; when an instance stops (or dies), another takes its
    /// partitions over after this long.
    pub partition_lease_ms: u64,
}

impl Default for RedisDeliveryOptions {
    fn default() -> Self {
        RedisDeliveryOptions {
            partitions: 16,
            partition_lease_ms: 10_000,
        }
    }
}

/// The delivery queues of a gateway on Redis (or Redis Cluster); see the module docs.
#[derive(Debug)]
pub struct RedisDeliveries {
    store: Arc<RedisStore>,
    instance: String,
    options: RedisDeliveryOptions,
    /// Partition counts of the queues this instance has used, as recorded in Redis.
    partitions: Mutex<HashMap<String, u32>>,
}

/// FNV-1a (64 bit): stable across builds and instances, unlike the std hasher.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn prefix(queue: &str, partition: u32) -> String {
    format!("gw:dq:{{{queue}:{partition}}}:")
}

fn index_key(id: &str) -> String {
    format!("gw:dq:{{ix:{}}}", fnv1a(id) % INDEX_SHARDS)
}

fn counter_key(queue: &str) -> String {
    format!("gw:dq:{{{queue}}}:n")
}

fn sequences_key(queue: &str) -> String {
    format!("gw:dq:{{{queue}}}:seq")
}

fn failed(e: StoreError) -> DeliveryError {
    DeliveryError::Failed(e.to_string())
}

fn bad(what: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Failed(format!("redis delivery store: {what}"))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other).and_then(|s| s.parse().ok()),
    }
}

fn parse_state(s: &str) -> Option<DeliveryState> {
    Some(match s {
        "pending" => DeliveryState::Pending,
        "in_flight" => DeliveryState::InFlight,
        "blocked" => DeliveryState::Blocked,
        "delivered" => DeliveryState::Delivered,
        "dead" => DeliveryState::Dead,
        "superseded" => DeliveryState::Superseded,
        _ => return None,
    })
}

/// A record from its JSON, refusing a newer format by name.
fn parse_record(id: &str, json: &str) -> Result<DeliveryRecord, DeliveryError> {
    #[derive(serde::Deserialize)]
    struct Version {
        v: u32,
    }
    let version: Version = serde_json::from_str(json).map_err(|e| bad(format!("{id}: {e}")))?;
    if version.v > FORMAT_VERSION {
        return Err(DeliveryError::NewerFormat {
            id: id.to_owned(),
            found: version.v,
        });
    }
    serde_json::from_str(json).map_err(|e| bad(format!("{id}: {e}")))
}

/// A delivery as the READ script answers it; the scalar fields override the status JSON's
/// (the scripts change them without rewriting the JSON). Also returns its version.
fn parse_read(v: &Value) -> Result<Option<(Delivery, String)>, DeliveryError> {
    let items = match v {
        Value::Array(items) if items.len() == 7 => items,
        Value::Nil | Value::Boolean(false) => return Ok(None),
        _ => return Err(bad("the read script answered an unexpected shape")),
    };
    let field = |i: usize| text(&items[i]).ok_or_else(|| bad("a field is not text"));
    let id = field(0)?;
    let record = parse_record(&id, &field(1)?)?;
    let mut status: DeliveryStatus =
        serde_json::from_str(&field(2)?).map_err(|e| bad(format!("{id}: {e}")))?;
    status.state = parse_state(&field(3)?).ok_or_else(|| bad("an unknown state"))?;
    status.next_attempt_at_ms = field(4)?.parse().map_err(|_| bad("next is not a number"))?;
    status.updated_at_ms = field(5)?.parse().map_err(|_| bad("upd is not a number"))?;
    Ok(Some((Delivery { record, status }, field(6)?)))
}

impl RedisDeliveries {
    /// The queues on `store`, as the instance `instance` (unique per gateway process: it names
    /// the instance's consumer and partition leases).
    pub fn new(
        store: Arc<RedisStore>,
        instance: &str,
        options: RedisDeliveryOptions,
    ) -> RedisDeliveries {
        RedisDeliveries {
            store,
            instance: instance.to_owned(),
            options: RedisDeliveryOptions {
                partitions: options.partitions.max(1),
                partition_lease_ms: options.partition_lease_ms.max(1),
            },
            partitions: Mutex::new(HashMap::new()),
        }
    }

    async fn run(&self, inv: redis::ScriptInvocation<'static>) -> Result<Value, DeliveryError> {
        self.store
            .call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await
            .map_err(failed)
    }

    /// Invokes a partition script: KEYS[1] the stream, ARGV[1] the prefix, then `args`.
    async fn partition_call(
        &self,
        script: &'static Script,
        queue: &str,
        partition: u32,
        args: &[&[u8]],
    ) -> Result<Value, DeliveryError> {
        let p = prefix(queue, partition);
        let mut inv = script.prepare_invoke();
        inv.key(format!("{p}s")).arg(p.as_bytes());
        for a in args {
            inv.arg(*a);
        }
        self.run(inv).await
    }

    /// The queue's partition count, recorded by the first instance that used it.
    async fn partition_count(&self, queue: &str) -> Result<u32, DeliveryError> {
        if let Some(n) = self.cached(queue) {
            return Ok(n);
        }
        let queue_owned = queue.to_owned();
        let mine = self.options.partitions;
        let n: Option<u32> = self
            .store
            .call(|mut conn| async move {
                redis::pipe()
                    .cmd("HSETNX")
                    .arg(QUEUES_KEY)
                    .arg(&queue_owned)
                    .arg(mine)
                    .ignore()
                    .cmd("HGET")
                    .arg(QUEUES_KEY)
                    .arg(&queue_owned)
                    .query_async::<(Option<u32>,)>(&mut conn)
                    .await
                    .map(|(n,)| n)
            })
            .await
            .map_err(failed)?;
        let n = n.filter(|n| *n > 0).unwrap_or(mine);
        if n != mine {
            tracing::warn!(
                queue,
                recorded = n,
                configured = mine,
                "delivery queue keeps the partition count it was created with"
            );
        }
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(queue.to_owned(), n);
        Ok(n)
    }

    fn cached(&self, queue: &str) -> Option<u32> {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(queue)
            .copied()
    }

    /// Every queue any instance has used, with its partition count.
    async fn queues(&self) -> Result<Vec<(String, u32)>, DeliveryError> {
        let all: HashMap<String, u32> = self
            .store
            .call(|mut conn| async move {
                redis::cmd("HGETALL")
                    .arg(QUEUES_KEY)
                    .query_async(&mut conn)
                    .await
            })
            .await
            .map_err(failed)?;
        let mut all: Vec<_> = all.into_iter().collect();
        all.sort();
        Ok(all)
    }

    /// Where a delivery is: (queue, partition), from the id index.
    async fn locate(&self, id: &str) -> Result<Option<(String, u32)>, DeliveryError> {
        let key = index_key(id);
        let id = id.to_owned();
        let at: Option<String> = self
            .store
            .call(|mut conn| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg(id)
                    .query_async(&mut conn)
                    .await
            })
            .await
            .map_err(failed)?;
        Ok(at.and_then(|at| {
            let (p, q) = at.split_once('|')?;
            Some((q.to_owned(), p.parse().ok()?))
        }))
    }

    async fn index(&self, id: &str, at: Option<(&str, u32)>) -> Result<(), DeliveryError> {
        let key = index_key(id);
        let id = id.to_owned();
        let at = at.map(|(q, p)| format!("{p}|{q}"));
        self.store
            .call(|mut conn| async move {
                let cmd = match &at {
                    Some(at) => {
                        let mut c = redis::cmd("HSET");
                        c.arg(&key).arg(&id).arg(at);
                        c
                    }
                    None => {
                        let mut c = redis::cmd("HDEL");
                        c.arg(&key).arg(&id);
                        c
                    }
                };
                cmd.query_async::<Value>(&mut conn).await
            })
            .await
            .map_err(failed)
            .map(|_| ())
    }

    async fn adjust(&self, queue: &str, entries: i64, bytes: i64) -> Result<(), DeliveryError> {
        if entries == 0 && bytes == 0 {
            return Ok(());
        }
        let mut inv = ADJUST_SCRIPT.prepare_invoke();
        inv.key(counter_key(queue)).arg(entries).arg(bytes);
        self.run(inv).await.map(|_| ())
    }

    async fn claim_in(
        &self,
        queue: &str,
        partition: u32,
        max: usize,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<Claimed>, DeliveryError> {
        let token = format!("{}:{:016x}", self.instance, rand::random::<u64>());
        let until = now_ms.saturating_add(lease_ms.max(1));
        let reply = self
            .partition_call(
                &TAKE_SCRIPT,
                queue,
                partition,
                &[
                    self.instance.as_bytes(),
                    now_ms.to_string().as_bytes(),
                    until.to_string().as_bytes(),
                    max.to_string().as_bytes(),
                    token.as_bytes(),
                ],
            )
            .await?;
        let Value::Array(rows) = reply else {
            return Err(bad("the claim script answered an unexpected shape"));
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Value::Array(f) = row else {
                return Err(bad("a claimed row is not an array"));
            };
            let field = |i: usize| {
                f.get(i)
                    .and_then(text)
                    .ok_or_else(|| bad("a claimed field is missing"))
            };
            let id = field(0)?;
            let record = parse_record(&id, &field(2)?)?;
            let mut status: DeliveryStatus =
                serde_json::from_str(&field(3)?).map_err(|e| bad(format!("{id}: {e}")))?;
            status.state = DeliveryState::InFlight;
            status.next_attempt_at_ms = field(4)?.parse().map_err(|_| bad("next"))?;
            status.updated_at_ms = now_ms;
            out.push(Claimed {
                delivery: Delivery { record, status },
                // the partition travels with the claim, so settling needs no lookup
                lease: format!("{partition}|{}", field(1)?),
            });
        }
        Ok(out)
    }

    /// Removes the delivered (and superseded) deliveries settled before `older_than_ms` (kept
    /// until then for reading back and event replay) from the queues this instance delivers (each queue has
    /// its own `keep_delivered`). Returns how many.
    pub async fn prune_delivered(&self, older_than_ms: u64) -> Result<u64, DeliveryError> {
        let mine: Vec<(String, u32)> = self
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(q, n)| (q.clone(), *n))
            .collect();
        let mut removed = 0;
        for (queue, n) in mine {
            for partition in 0..n {
                loop {
                    let reply = self
                        .partition_call(
                            &PRUNE_SCRIPT,
                            &queue,
                            partition,
                            &[
                                older_than_ms.to_string().as_bytes(),
                                PRUNE_BATCH.to_string().as_bytes(),
                            ],
                        )
                        .await?;
                    let Value::Array(ids) = reply else {
                        return Err(bad("the prune script answered an unexpected shape"));
                    };
                    for id in ids.iter().filter_map(text) {
                        self.index(&id, None).await?;
                        removed += 1;
                    }
                    if ids.len() < PRUNE_BATCH {
                        break;
                    }
                }
            }
        }
        Ok(removed)
    }

    async fn read_one(
        &self,
        id: &str,
    ) -> Result<Option<(Delivery, String, String, u32)>, DeliveryError> {
        let Some((queue, partition)) = self.locate(id).await? else {
            return Ok(None);
        };
        let reply = self
            .partition_call(&GET_SCRIPT, &queue, partition, &[id.as_bytes()])
            .await?;
        Ok(parse_read(&reply)?.map(|(d, ver)| (d, ver, queue, partition)))
    }
}

impl DeliveryStore for RedisDeliveries {
    async fn enqueue(
        &self,
        record: DeliveryRecord,
        limits: QueueLimits,
        now_ms: u64,
    ) -> Result<(), DeliveryError> {
        let n = self.partition_count(&record.queue).await?;
        let partition =
            (fnv1a(record.ordering_key.as_deref().unwrap_or(&record.id)) % u64::from(n)) as u32;
        let rec = serde_json::to_string(&record).map_err(bad)?;
        let status = serde_json::to_string(&DeliveryStatus::accepted(now_ms)).map_err(bad)?;
        let len = rec.len() as u64;

        let mut inv = RESERVE_SCRIPT.prepare_invoke();
        inv.key(counter_key(&record.queue))
            .arg(limits.max_entries)
            .arg(limits.max_bytes)
            .arg(len);
        match text(&self.run(inv).await?).as_deref() {
            Some("ok") => {}
            Some("entries") => {
                return Err(DeliveryError::Full {
                    queue: record.queue,
                    what: "entries",
                });
            }
            Some("bytes") => {
                return Err(DeliveryError::Full {
                    queue: record.queue,
                    what: "bytes",
                });
            }
            _ => return Err(bad("the reserve script answered an unexpected shape")),
        }
        // the index first: a delivery is never stored without a way to find it by id
        let stored = async {
            self.index(&record.id, Some((&record.queue, partition)))
                .await?;
            self.partition_call(
                &ENQUEUE_SCRIPT,
                &record.queue,
                partition,
                &[
                    record.id.as_bytes(),
                    rec.as_bytes(),
                    status.as_bytes(),
                    record.ordering_key.as_deref().unwrap_or("").as_bytes(),
                    now_ms.to_string().as_bytes(),
                    record.accepted_at_ms.to_string().as_bytes(),
                    len.to_string().as_bytes(),
                    record.channel.as_deref().unwrap_or("").as_bytes(),
                ],
            )
            .await
        }
        .await;
        let code = match &stored {
            Ok(v) => number(v),
            Err(_) => None,
        };
        match (code, stored) {
            (Some(1), _) => Ok(()),
            // the same id twice (a caller's retry): stored once, counted once
            (Some(0), _) => self.adjust(&record.queue, -1, -(len as i64)).await,
            (_, stored) => {
                // give the reservation back; the stale index entry finds nothing
                let _ = self.adjust(&record.queue, -1, -(len as i64)).await;
                match stored {
                    Err(e) => Err(e),
                    Ok(_) => Err(bad("the enqueue script answered an unexpected shape")),
                }
            }
        }
    }

    async fn enqueue_batch(
        &self,
        records: Vec<DeliveryRecord>,
        limits: QueueLimits,
        now_ms: u64,
    ) -> Result<(), DeliveryError> {
        // best effort in order (see the module docs): the first failure stops the rest
        for record in records {
            self.enqueue(record, limits, now_ms).await?;
        }
        Ok(())
    }

    async fn note_sequence(
        &self,
        queue: &str,
        ordering_key: &str,
        seq: u64,
    ) -> Result<bool, DeliveryError> {
        let mut inv = NOTE_SEQUENCE_SCRIPT.prepare_invoke();
        inv.key(sequences_key(queue))
            .arg(ordering_key)
            .arg(seq.to_string());
        match number(&self.run(inv).await?) {
            Some(1) => Ok(true),
            Some(0) => Ok(false),
            _ => Err(bad("the sequence script answered an unexpected shape")),
        }
    }

    async fn latest_sequence(
        &self,
        queue: &str,
        ordering_key: &str,
    ) -> Result<Option<u64>, DeliveryError> {
        let (key, field) = (sequences_key(queue), ordering_key.to_owned());
        let stored: Option<String> = self
            .store
            .call(|mut conn| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg(field)
                    .query_async(&mut conn)
                    .await
            })
            .await
            .map_err(failed)?;
        stored
            .map(|s| {
                s.parse()
                    .map_err(|_| bad(format!("the sequence of {ordering_key:?} is not a number")))
            })
            .transpose()
    }

    async fn claim(
        &self,
        queue: &str,
        max: usize,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<Claimed>, DeliveryError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let n = self.partition_count(queue).await?;
        // every partition at once (one round trip on one server, each node in parallel on a
        // Cluster): an idle queue costs one cheap script per partition per poll
        let mut scans = tokio::task::JoinSet::new();
        for partition in 0..n {
            let store = self.store.clone();
            let p = prefix(queue, partition);
            let mut inv = SCAN_SCRIPT.prepare_invoke();
            inv.key(format!("{p}s"))
                .arg(p)
                .arg(&self.instance)
                .arg(now_ms)
                .arg(self.options.partition_lease_ms);
            scans.spawn(async move {
                let due = store
                    .call(|mut conn| async move { inv.invoke_async::<i64>(&mut conn).await })
                    .await;
                (partition, due)
            });
        }
        let mut due = Vec::new();
        let mut first_error = None;
        while let Some(joined) = scans.join_next().await {
            match joined {
                Ok((p, Ok(d))) if d > 0 => due.push((p, d as usize)),
                Ok((_, Ok(_))) => {}
                Ok((_, Err(e))) => first_error = first_error.or(Some(failed(e))),
                Err(e) => first_error = first_error.or(Some(bad(e))),
            }
        }
        if due.is_empty()
            && let Some(e) = first_error
        {
            return Err(e);
        }
        // partitions in a rotating order so one busy partition does not starve the others
        due.sort_unstable();
        let start = (now_ms as usize) % due.len().max(1);
        due.rotate_left(start);
        let mut claimed = Vec::new();
        for (partition, count) in due {
            let want = count.min(max - claimed.len());
            if want == 0 {
                break;
            }
            claimed.extend(
                self.claim_in(queue, partition, want, now_ms, lease_ms)
                    .await?,
            );
        }
        Ok(claimed)
    }

    async fn settle(
        &self,
        claimed: &Claimed,
        attempt: Option<AttemptRecord>,
        outcome: Settle,
        now_ms: u64,
    ) -> Result<(), DeliveryError> {
        let id = &claimed.delivery.record.id;
        let queue = &claimed.delivery.record.queue;
        let (partition, token) = claimed
            .lease
            .split_once('|')
            .and_then(|(p, t)| Some((p.parse::<u32>().ok()?, t)))
            .ok_or_else(|| DeliveryError::LeaseLost(id.clone()))?;
        let mut status = claimed.delivery.status.clone();
        status.settle(attempt.as_ref(), &outcome, now_ms);
        let state = match outcome {
            Settle::Delivered(_) => "delivered",
            Settle::Dead(_) => "dead",
            Settle::Superseded(_) => "superseded",
            Settle::RetryAt(_) | Settle::Release(_) => "pending",
        };
        let json = serde_json::to_string(&status).map_err(bad)?;
        let reply = self
            .partition_call(
                &SETTLE_SCRIPT,
                queue,
                partition,
                &[
                    id.as_bytes(),
                    token.as_bytes(),
                    state.as_bytes(),
                    status.next_attempt_at_ms.to_string().as_bytes(),
                    now_ms.to_string().as_bytes(),
                    json.as_bytes(),
                ],
            )
            .await?;
        match number(&reply) {
            Some(-1) => Err(DeliveryError::LeaseLost(id.clone())),
            Some(bytes) if state == "delivered" || state == "superseded" => {
                self.adjust(queue, -1, -bytes).await
            }
            Some(_) => Ok(()),
            None => Err(bad("the settle script answered an unexpected shape")),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Delivery>, DeliveryError> {
        Ok(self.read_one(id).await?.map(|(d, ..)| d))
    }

    async fn list(
        &self,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, DeliveryError> {
        let queues = match &filter.queue {
            Some(q) => match self.queues().await?.into_iter().find(|(name, _)| name == q) {
                Some(one) => vec![one],
                None => Vec::new(),
            },
            None => self.queues().await?,
        };
        // each partition's first `limit` matches after `after`; the answer is the first
        // `limit` of their union by id (ids sort by acceptance time)
        let mut found = Vec::new();
        for (queue, n) in queues {
            for partition in 0..n {
                let mut cursor = after.unwrap_or("").to_owned();
                let mut matched = 0;
                while matched < limit {
                    let reply = self
                        .partition_call(
                            &LIST_SCRIPT,
                            &queue,
                            partition,
                            &[cursor.as_bytes(), LIST_BATCH.to_string().as_bytes()],
                        )
                        .await?;
                    let Value::Array(rows) = reply else {
                        return Err(bad("the list script answered an unexpected shape"));
                    };
                    let batch = rows.len();
                    for row in &rows {
                        if let Some((d, _)) = parse_read(row)? {
                            cursor.clone_from(&d.record.id);
                            if filter.matches(&d) && matched < limit {
                                matched += 1;
                                found.push(d);
                            }
                        }
                    }
                    if batch < LIST_BATCH {
                        break;
                    }
                }
            }
        }
        found.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        found.truncate(limit);
        Ok(found)
    }

    async fn requeue(
        &self,
        id: &str,
        body: Option<String>,
        now_ms: u64,
    ) -> Result<bool, DeliveryError> {
        // optimistic: read, compute, write if nothing changed meanwhile (a few tries)
        for _ in 0..5 {
            let Some((d, ver, queue, partition)) = self.read_one(id).await? else {
                return Ok(false);
            };
            if !d.status.state.is_final() {
                return Ok(false);
            }
            let mut status = d.status;
            status.state = DeliveryState::Pending;
            status.next_attempt_at_ms = now_ms;
            status.updated_at_ms = now_ms;
            status.replays = status.replays.saturating_add(1);
            let rec = match body {
                Some(ref body) => {
                    let mut record = d.record;
                    record.body.clone_from(body);
                    serde_json::to_string(&record).map_err(bad)?
                }
                None => String::new(),
            };
            let json = serde_json::to_string(&status).map_err(bad)?;
            let reply = self
                .partition_call(
                    &REQUEUE_SCRIPT,
                    &queue,
                    partition,
                    &[
                        id.as_bytes(),
                        ver.as_bytes(),
                        now_ms.to_string().as_bytes(),
                        json.as_bytes(),
                        rec.as_bytes(),
                        rec.len().to_string().as_bytes(),
                    ],
                )
                .await?;
            match reply {
                Value::Array(f) if f.len() == 2 => {
                    let was = f.first().and_then(text).unwrap_or_default();
                    let old_len = f.get(1).and_then(number).unwrap_or(0);
                    let new_len = if rec.is_empty() {
                        old_len
                    } else {
                        rec.len() as i64
                    };
                    // a delivered or superseded one counts against the limits again; a dead
                    // one still did
                    if was == "delivered" || was == "superseded" {
                        self.adjust(&queue, 1, new_len).await?;
                    } else {
                        self.adjust(&queue, 0, new_len - old_len).await?;
                    }
                    return Ok(true);
                }
                other => match number(&other) {
                    Some(-1) => continue,
                    Some(-2) => return Ok(false),
                    _ => return Err(bad("the requeue script answered an unexpected shape")),
                },
            }
        }
        Err(DeliveryError::Failed(format!(
            "delivery {id} kept changing while being requeued"
        )))
    }

    async fn purge(&self, id: &str) -> Result<bool, DeliveryError> {
        let Some((queue, partition)) = self.locate(id).await? else {
            return Ok(false);
        };
        let reply = self
            .partition_call(&PURGE_SCRIPT, &queue, partition, &[id.as_bytes()])
            .await?;
        match reply {
            Value::Array(f) if f.len() == 2 => {
                let was = f.first().and_then(text).unwrap_or_default();
                let len = f.get(1).and_then(number).unwrap_or(0);
                if was != "delivered" && was != "superseded" {
                    self.adjust(&queue, -1, -len).await?;
                }
                self.index(id, None).await?;
                Ok(true)
            }
            other => match number(&other) {
                Some(-1) => {
                    // a stale index entry (an enqueue that failed half way)
                    self.index(id, None).await?;
                    Ok(false)
                }
                Some(-2) => Ok(false),
                _ => Err(bad("the purge script answered an unexpected shape")),
            },
        }
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, DeliveryError> {
        let Some((_, n)) = self.queues().await?.into_iter().find(|(q, _)| q == queue) else {
            return Ok(QueueStats::default());
        };
        let mut stats = QueueStats::default();
        for partition in 0..n {
            let reply = self
                .partition_call(&STATS_SCRIPT, queue, partition, &[])
                .await?;
            let Value::Array(f) = reply else {
                return Err(bad("the stats script answered an unexpected shape"));
            };
            let at = |i: usize| f.get(i).and_then(number).unwrap_or(0);
            stats.depth += at(0).max(0) as u64;
            stats.dead += at(1).max(0) as u64;
            let oldest = at(2);
            if oldest >= 0 {
                let oldest = oldest as u64;
                stats.oldest_pending_ms =
                    Some(stats.oldest_pending_ms.map_or(oldest, |o| o.min(oldest)));
            }
            for c in f.get(3..).unwrap_or_default().chunks_exact(3) {
                let channel = text(&c[0]).filter(|ch| !ch.is_empty());
                let dead = number(&c[1]).unwrap_or(0).max(0) as u64;
                let oldest = number(&c[2]).unwrap_or(0).max(0) as u64;
                match stats
                    .dead_by_channel
                    .iter_mut()
                    .find(|d| d.channel == channel)
                {
                    Some(d) => {
                        d.dead += dead;
                        d.oldest_accepted_ms = d.oldest_accepted_ms.min(oldest);
                    }
                    None => stats.dead_by_channel.push(ChannelDeadLetters {
                        channel,
                        dead,
                        oldest_accepted_ms: oldest,
                    }),
                }
            }
        }
        let key = counter_key(queue);
        let bytes: Option<u64> = self
            .store
            .call(|mut conn| async move {
                redis::cmd("HGET")
                    .arg(key)
                    .arg("bytes")
                    .query_async(&mut conn)
                    .await
            })
            .await
            .map_err(failed)?;
        stats.bytes = bytes.unwrap_or(0);
        stats
            .dead_by_channel
            .sort_by(|a, b| a.channel.cmp(&b.channel));
        Ok(stats)
    }

    async fn next_due(&self, queue: &str) -> Result<Option<u64>, DeliveryError> {
        let n = self.partition_count(queue).await?;
        let mut best: Option<u64> = None;
        for partition in 0..n {
            let reply = self
                .partition_call(&NEXT_DUE_SCRIPT, queue, partition, &[])
                .await?;
            if let Some(t) = number(&reply).filter(|t| *t >= 0) {
                let t = t as u64;
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_and_keys_are_stable_and_hash_tagged() {
        // FNV-1a's published test vectors: the partition of a key never changes between builds
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(prefix("erp", 3), "gw:dq:{erp:3}:");
        assert_eq!(counter_key("erp"), "gw:dq:{erp}:n");
        assert_eq!(sequences_key("erp"), "gw:dq:{erp}:seq");
        assert!(index_key("x").starts_with("gw:dq:{ix:"));
    }
}
