//! The embedded delivery store: every queue of a gateway in one redb file on local disk, so
//! accepted documents survive `kill -9`. One writer thread owns every mutation and commits
//! whatever is waiting in one transaction with one fsync (group commit, held open for a
//! [`GroupCommit`] window so that a busy queue's acceptances share it); an in-memory index,
//! rebuilt at open, answers `claim`, `next_due` and `stats` without touching the disk.
//!
//! Leases live in memory only: after a restart every delivery that was in flight is pending
//! again, and its next attempt re-sends it with the same upstream key.
//!
//! Only what a caller or an operator was told is fsynced before the answer: accepting a
//! document, replaying it, purging it. The outcome of an attempt (delivered, retry later,
//! dead) is committed without its own fsync and made durable by the next fsynced commit, at
//! most [`SETTLE_SYNC_AFTER`] later: a crash in between forgets the outcome and the delivery
//! is attempted again, with the same upstream key, which an upstream honouring
//! `Idempotency-Key` answers as the repeat it is. That halves the fsyncs of a busy queue.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::Deserialize;

use super::inbox::{Inbox, Taken};
use super::replies::{self, ReplyTo};
use super::{
    AttemptRecord, ChannelDeadLetters, Claimed, Delivery, DeliveryError, DeliveryRecord,
    DeliveryState, DeliveryStatus, DeliveryStore, FORMAT_VERSION, Filter, QueueLimits, QueueStats,
    Settle,
};

/// Records by sequence (as [`encode_record`] writes them; JSON alone in files written before
/// it): insertion order, the order `list` walks.
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
/// Statuses (JSON) by sequence, apart from the records so a settle rewrites only the small part.
const STATUS: TableDefinition<u64, &[u8]> = TableDefinition::new("status");
/// Delivery id to sequence, as files written before 2026-12-06 hold it. Nothing read it: the
/// index maps ids from the records at open. It cost every acceptance a third B-tree in its
/// commit, so it is no longer written, and [`EmbeddedDeliveries::open`] drops it.
const LEGACY_IDS: TableDefinition<&str, u64> = TableDefinition::new("ids");
/// The last-writer-wins register: (queue, ordering key) to the highest sequence noted.
const SEQUENCES: TableDefinition<(&str, &str), u64> = TableDefinition::new("sequences");

/// The most requests one commit takes, so one huge backlog cannot delay its first waiter long.
const MAX_BATCH: usize = 4096;

/// redb's page cache. Its default, 1 GiB, filled within a minute of a busy queue (every commit
/// caches the pages it wrote), so the process grew to ~1.1 GiB and kept faulting in fresh
/// (huge) pages, ~3 % of the gateway's CPU. What is read back is the head of each queue, which
/// was written moments before: 64 MiB holds several seconds of a busy queue's writes, and a
/// page past it is read from the OS's file cache.
const CACHE_BYTES: usize = 64 << 20;

/// How many bytes of accepted records the index keeps in memory for their first claim. A
/// busy queue's worker claims a record moments after it was stored; kept, it is handed over as
/// it was accepted, with no read transaction, no blocking-pool hop and no decode (~7 % of a
/// queued order's CPU, issue 13). Past this (a backlog while the upstream is down) records are
/// read back from the file as before, so the memory stays bounded.
const FRESH_BYTES: u64 = 32 << 20;

/// How the writer groups the requests that need an fsync. Requests that arrive while a commit
/// syncs go into the next one anyway; the window also holds a commit that needs an fsync open a
/// little, so that a busy queue's acceptances share their fsyncs and page writes instead of
/// paying one each (like PostgreSQL's `commit_delay`). An answer that needs the fsync (a 202)
/// waits at most `window` longer for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommit {
    /// How long a commit that needs an fsync waits for more requests to share it.
    pub window: Duration,
    /// The window closes as soon as the commit holds this many requests.
    pub window_requests: usize,
}

impl Default for GroupCommit {
    /// 1 ms, or 64 requests: under ALL-queued's load, ~11 % less CPU per accepted order and ~20 %
    /// more orders per second than with no window (benches/README.md, issue 13).
    fn default() -> Self {
        GroupCommit {
            window: Duration::from_millis(1),
            window_requests: 64,
        }
    }
}

/// How long the outcome of an attempt may stay committed without an fsync.
pub const SETTLE_SYNC_AFTER: Duration = Duration::from_millis(200);

/// Called after each fsynced commit with the number of requests it made durable (its own and
/// the unsynced ones before it): the gateway counts fsyncs and observes records per fsync. Runs on the writer thread, so
/// it must be quick and must not panic.
pub type CommitHook = Arc<dyn Fn(usize) + Send + Sync>;

/// The commit statistics the writer keeps.
struct CommitStats {
    commits: AtomicU64,
    records: AtomicU64,
    hook: Option<CommitHook>,
}

/// The embedded [`DeliveryStore`]: one redb file, one writer thread (group commit), an
/// in-memory index. Dropping it stops the writer after the commits already requested.
pub struct EmbeddedDeliveries {
    path: PathBuf,
    db: Arc<Database>,
    index: Arc<Mutex<Index>>,
    inbox: Arc<Inbox<Request>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
}

impl fmt::Debug for EmbeddedDeliveries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedDeliveries")
            .field("path", &self.path)
            .field("commits", &self.commits())
            .finish_non_exhaustive()
    }
}

impl EmbeddedDeliveries {
    /// Opens the store at `path`, creating the file (and its folders) when absent. A file that
    /// is not a readable store, or holds a record of a newer format, is an error naming the
    /// path: never an empty queue.
    pub fn open(path: &Path) -> Result<Self, DeliveryError> {
        Self::open_inner(path, None, GroupCommit::default())
    }

    /// [`EmbeddedDeliveries::open`], calling `on_commit` after every commit with the number
    /// of records it wrote (for the fsync counter and the records-per-fsync histogram).
    pub fn open_with(path: &Path, on_commit: CommitHook) -> Result<Self, DeliveryError> {
        Self::open_inner(path, Some(on_commit), GroupCommit::default())
    }

    /// [`EmbeddedDeliveries::open_with`], grouping fsynced commits as `group` says.
    pub fn open_grouped(
        path: &Path,
        on_commit: CommitHook,
        group: GroupCommit,
    ) -> Result<Self, DeliveryError> {
        Self::open_inner(path, Some(on_commit), group)
    }

    fn open_inner(
        path: &Path,
        hook: Option<CommitHook>,
        group: GroupCommit,
    ) -> Result<Self, DeliveryError> {
        let unreadable = |message: String| DeliveryError::Unreadable {
            location: path.display().to_string(),
            message,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| unreadable(format!("cannot create its folder: {e}")))?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| unreadable(e.to_string()))?;
        // Create the tables once, so readers never meet a missing one.
        let create = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(RECORDS)?;
            txn.open_table(STATUS)?;
            txn.open_table(SEQUENCES)?;
            txn.delete_table(LEGACY_IDS)?;
            txn.commit()?;
            Ok(())
        };
        create().map_err(|e| unreadable(e.to_string()))?;
        let mut index = load_index(&db).map_err(unreadable)?;
        index.fresh_max = FRESH_BYTES;

        let db = Arc::new(db);
        let index = Arc::new(Mutex::new(index));
        let stats = Arc::new(CommitStats {
            commits: AtomicU64::new(0),
            records: AtomicU64::new(0),
            hook,
        });
        let inbox = Arc::new(Inbox::new());
        let thread = {
            let (db, index, stats, inbox) =
                (db.clone(), index.clone(), stats.clone(), inbox.clone());
            std::thread::Builder::new()
                .name("delivery-writer".into())
                .spawn(move || {
                    // However the writer ends (a panic too), what it will never take is dropped
                    // and later sends fail, so no caller waits for an answer that cannot come.
                    let _closed = CloseOnExit(&inbox);
                    crate::background::yield_to_request_workers();
                    run_writer(&db, &index, &stats, &inbox, group);
                })
                .map_err(|e| unreadable(format!("cannot start its writer: {e}")))?
        };
        Ok(EmbeddedDeliveries {
            path: path.to_path_buf(),
            db,
            index,
            inbox,
            thread: Some(thread),
            stats,
        })
    }

    /// The file it is in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits (fsyncs) so far.
    pub fn commits(&self) -> u64 {
        self.stats.commits.load(Ordering::Relaxed)
    }

    /// Records written by those commits.
    pub fn records_committed(&self) -> u64 {
        self.stats.records.load(Ordering::Relaxed)
    }

    /// Removes the delivered records whose delivery is older than `older_than_ms`, and the
    /// superseded ones settled before it (retention: they stay for `get`, `list` and event
    /// replay until pruned). Returns how many it removed.
    pub async fn prune_delivered(&self, older_than_ms: u64) -> Result<u64, DeliveryError> {
        match self.write(Op::Prune { older_than_ms }).await? {
            Done::Pruned(ids) => Ok(ids.len() as u64),
            _ => Ok(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        lock(&self.index)
    }

    /// Hands `op` to the writer and waits for its commit. The writer updates the index itself
    /// after the commit, so a caller that goes away mid-wait leaves nothing half done.
    async fn write(&self, op: Op) -> Result<Done, DeliveryError> {
        let (reply, answer) = ReplyTo::new();
        let request = Request { op, reply };
        if let Err(request) = self.inbox.send(request) {
            return Err(self.writer_gone(request.op));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(DeliveryError::Failed("the delivery writer stopped".into())))
    }

    /// Undoes what the caller reserved for `op` when the writer cannot take it.
    fn writer_gone(&self, op: Op) -> DeliveryError {
        let err = || DeliveryError::Failed("the delivery writer stopped".into());
        finish(&mut self.lock(), &op, &Err(err()));
        err()
    }

    /// Reads deliveries by sequence off the async threads.
    async fn read(&self, seqs: Vec<u64>) -> Result<Vec<Option<Delivery>>, DeliveryError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || read_deliveries(&db, &seqs))
            .await
            .map_err(|e| DeliveryError::Failed(e.to_string()))?
    }
}

impl Drop for EmbeddedDeliveries {
    fn drop(&mut self) {
        // Closing the inbox ends the writer once it answered what was sent; joining it
        // releases the file, so the same process can open it again.
        self.inbox.close(false);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    // A panic while holding the lock leaves the index as consistent as any single step is.
    index.lock().unwrap_or_else(PoisonError::into_inner)
}

fn failed(e: impl fmt::Display) -> DeliveryError {
    DeliveryError::Failed(e.to_string())
}

fn lease_token(seq: u64, nonce: u64) -> String {
    format!("{seq}:{nonce}")
}

fn parse_lease(token: &str) -> Option<(u64, u64)> {
    let (seq, nonce) = token.split_once(':')?;
    Some((seq.parse().ok()?, nonce.parse().ok()?))
}

impl DeliveryStore for EmbeddedDeliveries {
    async fn enqueue(
        &self,
        record: DeliveryRecord,
        limits: QueueLimits,
        now_ms: u64,
    ) -> Result<(), DeliveryError> {
        self.enqueue_batch(vec![record], limits, now_ms).await
    }

    async fn enqueue_batch(
        &self,
        records: Vec<DeliveryRecord>,
        limits: QueueLimits,
        now_ms: u64,
    ) -> Result<(), DeliveryError> {
        if records.is_empty() {
            return Ok(());
        }
        let status = serde_json::to_vec(&DeliveryStatus::accepted(now_ms)).map_err(failed)?;
        let mut prepared = Vec::with_capacity(records.len());
        for mut record in records {
            if record.v > FORMAT_VERSION {
                return Err(DeliveryError::NewerFormat {
                    id: record.id,
                    found: record.v,
                });
            }
            let bytes = encode_record(&mut record).map_err(failed)?;
            prepared.push((record, bytes));
        }
        let items = self.lock().reserve(prepared, limits, now_ms)?;
        // One request, so one transaction: every record of the batch is stored, or none.
        self.write(Op::Enqueue { items, status }).await.map(|_| ())
    }

    async fn note_sequence(
        &self,
        queue: &str,
        ordering_key: &str,
        seq: u64,
    ) -> Result<bool, DeliveryError> {
        let done = self
            .write(Op::NoteSequence {
                queue: queue.to_owned(),
                key: ordering_key.to_owned(),
                seq,
            })
            .await?;
        Ok(matches!(done, Done::Noted(true)))
    }

    async fn latest_sequence(
        &self,
        queue: &str,
        ordering_key: &str,
    ) -> Result<Option<u64>, DeliveryError> {
        let (db, queue, key) = (self.db.clone(), queue.to_owned(), ordering_key.to_owned());
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(failed)?;
            let table = txn.open_table(SEQUENCES).map_err(failed)?;
            let found = table
                .get((queue.as_str(), key.as_str()))
                .map_err(failed)?
                .map(|g| g.value());
            Ok(found)
        })
        .await
        .map_err(failed)?
    }

    async fn claim(
        &self,
        queue: &str,
        max: usize,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<Claimed>, DeliveryError> {
        let mut picked = self.lock().claim(queue, max, now_ms, lease_ms);
        if picked.is_empty() {
            return Ok(Vec::new());
        }
        let release = |seqs: &mut dyn Iterator<Item = (u64, u64)>| {
            let mut ix = self.lock();
            for (seq, nonce) in seqs {
                ix.release(seq, nonce);
            }
        };
        // Only the records no longer kept are read back from the file.
        let unkept: Vec<u64> = picked
            .iter()
            .filter(|p| p.fresh.is_none())
            .map(|p| p.seq)
            .collect();
        let mut read = if unkept.is_empty() {
            Vec::new()
        } else {
            match self.read(unkept).await {
                Ok(d) => d,
                Err(e) => {
                    release(&mut picked.iter().map(|p| (p.seq, p.nonce)));
                    return Err(e);
                }
            }
        }
        .into_iter();
        let mut claimed = Vec::with_capacity(picked.len());
        for p in &mut picked {
            let delivery = match p.fresh.take() {
                Some(fresh) => Some(fresh.into_delivery()),
                None => read.next().flatten(),
            };
            match delivery {
                Some(mut delivery) => {
                    delivery.status.state = DeliveryState::InFlight;
                    claimed.push(Claimed {
                        delivery,
                        lease: lease_token(p.seq, p.nonce),
                    });
                }
                // Purged between the claim and the read cannot happen (purge refuses a held
                // delivery); let it go rather than hand out nothing under a lease.
                None => release(&mut std::iter::once((p.seq, p.nonce))),
            }
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
        let lost = || DeliveryError::LeaseLost(id.clone());
        let (seq, nonce) = parse_lease(&claimed.lease).ok_or_else(lost)?;
        {
            let mut ix = self.lock();
            let holds = ix
                .entries
                .get(&seq)
                .and_then(|e| e.lease)
                .is_some_and(|l| l.nonce == nonce);
            if !holds || ix.busy.contains(&seq) {
                return Err(lost());
            }
            // Busy: no other claim may take it, even with its lease run out, while it settles.
            ix.busy.insert(seq);
        }
        self.write(Op::Settle {
            seq,
            attempt,
            outcome,
            now_ms,
        })
        .await
        .map(|_| ())
    }

    async fn get(&self, id: &str) -> Result<Option<Delivery>, DeliveryError> {
        let Some(seq) = self.lock().ids.get(id).copied() else {
            return Ok(None);
        };
        let Some(mut delivery) = self.read(vec![seq]).await?.into_iter().flatten().next() else {
            return Ok(None);
        };
        self.lock().overlay(seq, &mut delivery.status);
        Ok(Some(delivery))
    }

    async fn list(
        &self,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, DeliveryError> {
        let start = match after {
            None => Start::Beginning,
            Some(id) => match self.lock().ids.get(id) {
                Some(seq) => Start::AfterSeq(*seq),
                // Purged or pruned since the last page: ids sort by acceptance, so go on by id.
                None => Start::AfterId(id.to_owned()),
            },
        };
        let (db, index, filter) = (self.db.clone(), self.index.clone(), filter.clone());
        tokio::task::spawn_blocking(move || list_deliveries(&db, &index, &filter, start, limit))
            .await
            .map_err(failed)?
    }

    async fn requeue(
        &self,
        id: &str,
        body: Option<String>,
        now_ms: u64,
    ) -> Result<bool, DeliveryError> {
        let seq = {
            let mut ix = self.lock();
            let Some(seq) = ix.ids.get(id).copied() else {
                return Ok(false);
            };
            // In the index and not dead: pending or in flight, so not final.
            if ix.busy.contains(&seq) || ix.entries.get(&seq).is_some_and(|e| !e.dead) {
                return Ok(false);
            }
            ix.busy.insert(seq);
            seq
        };
        let done = self.write(Op::Requeue { seq, body, now_ms }).await?;
        Ok(matches!(done, Done::Requeued(_)))
    }

    async fn purge(&self, id: &str) -> Result<bool, DeliveryError> {
        let seq = {
            let mut ix = self.lock();
            let Some(seq) = ix.ids.get(id).copied() else {
                return Ok(false);
            };
            // Any lease, even one run out, may still have a worker attempting it.
            if ix.busy.contains(&seq) || ix.entries.get(&seq).is_some_and(|e| e.lease.is_some()) {
                return Ok(false);
            }
            ix.busy.insert(seq);
            seq
        };
        let done = self
            .write(Op::Purge {
                seq,
                id: id.to_owned(),
            })
            .await?;
        Ok(matches!(done, Done::Written))
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, DeliveryError> {
        Ok(self.lock().queue_stats(queue))
    }

    async fn next_due(&self, queue: &str) -> Result<Option<u64>, DeliveryError> {
        Ok(self.lock().next_due(queue))
    }
}

// ---------------------------------------------------------------------------------------------
// The in-memory index.

/// What the index knows of every delivery not final or dead, per queue, plus every id.
#[derive(Default)]
struct Index {
    next_seq: u64,
    next_lease: u64,
    /// Every stored delivery, delivered ones included (`get`, `requeue`, `purge` by id).
    ids: HashMap<String, u64>,
    /// Deliveries not delivered: pending, in flight, blocked, dead.
    entries: HashMap<u64, Entry>,
    queues: HashMap<String, QueueIndex>,
    /// Deliveries with a write on its way: neither claimable nor open to another mutation.
    busy: HashSet<u64>,
    /// Bytes of the records kept in [`Entry::fresh`], at most `fresh_max`.
    fresh_bytes: u64,
    /// [`FRESH_BYTES`] (tests lower it).
    fresh_max: u64,
}

struct Entry {
    queue: String,
    key: Option<String>,
    /// The channel it came from (its queue's dead letters are counted per channel).
    channel: Option<Arc<str>>,
    dead: bool,
    due_ms: u64,
    lease: Option<Lease>,
    /// Size of its stored record, counted against `max_bytes`.
    bytes: u64,
    accepted_at_ms: u64,
    /// Whether it is in its queue's `ready` set (kept with it so removal finds the due time).
    in_ready: bool,
    /// The record as accepted, until its first claim takes it (see [`FRESH_BYTES`]).
    fresh: Option<Box<Fresh>>,
}

/// An accepted record kept for its first claim, and what its stored status says then.
struct Fresh {
    record: DeliveryRecord,
    /// The `now_ms` of its enqueue: its stored status is `DeliveryStatus::accepted` of it.
    accepted_ms: u64,
    /// What it counts in [`Index::fresh_bytes`].
    bytes: u64,
}

impl Fresh {
    /// The delivery a read of the file would give for it, before any attempt.
    fn into_delivery(self) -> Delivery {
        Delivery {
            record: self.record,
            status: DeliveryStatus::accepted(self.accepted_ms),
        }
    }
}

/// A delivery [`Index::claim`] leased.
struct Picked {
    seq: u64,
    nonce: u64,
    fresh: Option<Box<Fresh>>,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    nonce: u64,
    expires_ms: u64,
}

#[derive(Default)]
struct QueueIndex {
    /// (due, sequence) of the claimable candidates: not dead, and unordered or the head of
    /// their ordering key. Leased and busy ones stay in and are skipped.
    ready: BTreeSet<(u64, u64)>,
    /// Not final and not dead (pending, in flight, blocked), by sequence.
    live: BTreeSet<u64>,
    dead: u64,
    /// Dead letters by channel, by sequence (the first is the oldest accepted).
    dead_by_channel: BTreeMap<Option<Arc<str>>, BTreeSet<u64>>,
    bytes: u64,
    keys: HashMap<String, KeyState>,
}

impl QueueIndex {
    fn dead_letter(&mut self, channel: &Option<Arc<str>>, seq: u64, dead: bool) {
        if dead {
            self.dead_by_channel
                .entry(channel.clone())
                .or_default()
                .insert(seq);
        } else if let Some(seqs) = self.dead_by_channel.get_mut(channel) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.dead_by_channel.remove(channel);
            }
        }
    }
}

#[derive(Default)]
struct KeyState {
    /// Its deliveries not delivered (dead ones included), oldest first: the first is the head.
    seqs: BTreeSet<u64>,
    /// Its dead letters: everything after the first of them is blocked.
    dead: BTreeSet<u64>,
    /// The delivery of this key a worker took last: a requeue may put an older one ahead of a
    /// held one, and the key must still never be with two workers.
    held: Option<u64>,
}

impl Index {
    /// Reserves a sequence for each record, all or none: none of their ids stored already
    /// (nor twice among them), and each queue within `limits` with all of them counted.
    /// Reserved (not yet durable) entries count, so concurrent enqueues cannot together pass
    /// the limits. Each is busy until committed: in the index (its key's line, its bytes) but
    /// not claimable.
    fn reserve(
        &mut self,
        records: Vec<(DeliveryRecord, Vec<u8>)>,
        limits: QueueLimits,
        now_ms: u64,
    ) -> Result<Vec<Stored>, DeliveryError> {
        {
            let mut seen = HashSet::new();
            // per queue: (entries, bytes) of the records before this one
            let mut added: HashMap<&str, (u64, u64)> = HashMap::new();
            for (record, bytes) in &records {
                if self.ids.contains_key(&record.id) {
                    return Err(DeliveryError::Failed(format!(
                        "delivery {} is already stored",
                        record.id
                    )));
                }
                if !seen.insert(record.id.as_str()) {
                    return Err(DeliveryError::Failed(format!(
                        "delivery {} is twice in one batch",
                        record.id
                    )));
                }
                let size = bytes.len() as u64;
                let (entries, used) = self
                    .queues
                    .get(&record.queue)
                    .map_or((0, 0), |q| (q.live.len() as u64 + q.dead, q.bytes));
                let before = added.entry(record.queue.as_str()).or_default();
                if entries.saturating_add(before.0) >= limits.max_entries {
                    return Err(DeliveryError::Full {
                        queue: record.queue.clone(),
                        what: "entries",
                    });
                }
                if used.saturating_add(before.1).saturating_add(size) > limits.max_bytes {
                    return Err(DeliveryError::Full {
                        queue: record.queue.clone(),
                        what: "bytes",
                    });
                }
                before.0 += 1;
                before.1 = before.1.saturating_add(size);
            }
        }
        let mut stored = Vec::with_capacity(records.len());
        for (record, bytes) in records {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.ids.insert(record.id.clone(), seq);
            self.busy.insert(seq);
            let size = bytes.len() as u64;
            let mut entry = Entry {
                queue: record.queue.clone(),
                key: record.ordering_key.clone(),
                channel: record.channel.as_deref().map(Arc::from),
                dead: false,
                due_ms: now_ms,
                lease: None,
                bytes: size,
                accepted_at_ms: record.accepted_at_ms,
                in_ready: false,
                fresh: None,
            };
            let id = record.id.clone();
            if self.fresh_bytes.saturating_add(size) <= self.fresh_max {
                self.fresh_bytes += size;
                entry.fresh = Some(Box::new(Fresh {
                    record,
                    accepted_ms: now_ms,
                    bytes: size,
                }));
            }
            self.insert(seq, entry);
            stored.push(Stored {
                seq,
                id,
                record: bytes,
            });
        }
        Ok(stored)
    }

    fn insert(&mut self, seq: u64, entry: Entry) {
        let q = self.queues.entry(entry.queue.clone()).or_default();
        q.bytes = q.bytes.saturating_add(entry.bytes);
        if entry.dead {
            q.dead += 1;
            q.dead_letter(&entry.channel, seq, true);
        } else {
            q.live.insert(seq);
        }
        let old_head = entry.key.as_ref().and_then(|k| {
            let ks = q.keys.entry(k.clone()).or_default();
            let old = ks.seqs.first().copied();
            ks.seqs.insert(seq);
            if entry.dead {
                ks.dead.insert(seq);
            }
            old
        });
        self.entries.insert(seq, entry);
        self.sync_ready(seq);
        if let Some(h) = old_head {
            self.sync_ready(h);
        }
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let mut entry = self.entries.remove(&seq)?;
        if let Some(fresh) = entry.fresh.take() {
            self.fresh_bytes = self.fresh_bytes.saturating_sub(fresh.bytes);
        }
        let Some(q) = self.queues.get_mut(&entry.queue) else {
            return Some(entry);
        };
        if entry.in_ready {
            q.ready.remove(&(entry.due_ms, seq));
            entry.in_ready = false;
        }
        q.bytes = q.bytes.saturating_sub(entry.bytes);
        if entry.dead {
            q.dead = q.dead.saturating_sub(1);
            q.dead_letter(&entry.channel, seq, false);
        } else {
            q.live.remove(&seq);
        }
        let mut new_head = None;
        if let Some(k) = &entry.key
            && let Some(ks) = q.keys.get_mut(k)
        {
            ks.seqs.remove(&seq);
            ks.dead.remove(&seq);
            if ks.held == Some(seq) {
                ks.held = None;
            }
            new_head = ks.seqs.first().copied();
            if ks.seqs.is_empty() {
                q.keys.remove(k);
            }
        }
        if let Some(h) = new_head {
            self.sync_ready(h);
        }
        Some(entry)
    }

    /// Puts `seq` in or out of its queue's ready set, as its state and key say.
    fn sync_ready(&mut self, seq: u64) {
        let Some(e) = self.entries.get_mut(&seq) else {
            return;
        };
        let Some(q) = self.queues.get_mut(&e.queue) else {
            return;
        };
        let head = match &e.key {
            None => true,
            Some(k) => q.keys.get(k).and_then(|ks| ks.seqs.first()) == Some(&seq),
        };
        let want = !e.dead && head;
        if want && !e.in_ready {
            q.ready.insert((e.due_ms, seq));
            e.in_ready = true;
        } else if !want && e.in_ready {
            q.ready.remove(&(e.due_ms, seq));
            e.in_ready = false;
        }
    }

    fn set_due(&mut self, seq: u64, due_ms: u64) {
        let Some(e) = self.entries.get_mut(&seq) else {
            return;
        };
        if e.in_ready
            && let Some(q) = self.queues.get_mut(&e.queue)
        {
            q.ready.remove(&(e.due_ms, seq));
            q.ready.insert((due_ms, seq));
        }
        e.due_ms = due_ms;
    }

    fn set_dead(&mut self, seq: u64, dead: bool) {
        let Some(e) = self.entries.get_mut(&seq) else {
            return;
        };
        if e.dead == dead {
            return;
        }
        e.dead = dead;
        if let Some(q) = self.queues.get_mut(&e.queue) {
            if dead {
                q.dead += 1;
                q.live.remove(&seq);
            } else {
                q.dead = q.dead.saturating_sub(1);
                q.live.insert(seq);
            }
            q.dead_letter(&e.channel, seq, dead);
            if let Some(ks) = e.key.as_ref().and_then(|k| q.keys.get_mut(k)) {
                if dead {
                    ks.dead.insert(seq);
                } else {
                    ks.dead.remove(&seq);
                }
            }
        }
        self.sync_ready(seq);
    }

    fn set_bytes(&mut self, seq: u64, bytes: u64) {
        let Some(e) = self.entries.get_mut(&seq) else {
            return;
        };
        if let Some(q) = self.queues.get_mut(&e.queue) {
            q.bytes = q.bytes.saturating_sub(e.bytes).saturating_add(bytes);
        }
        e.bytes = bytes;
    }

    /// Drops a lease (its delivery pending again) if it is still the one given.
    fn release(&mut self, seq: u64, nonce: u64) {
        let Some(e) = self.entries.get_mut(&seq) else {
            return;
        };
        if e.lease.is_some_and(|l| l.nonce == nonce) {
            e.lease = None;
            self.clear_held(seq);
        }
    }

    fn clear_held(&mut self, seq: u64) {
        let Some(e) = self.entries.get(&seq) else {
            return;
        };
        if let Some(ks) = e
            .key
            .as_ref()
            .and_then(|k| self.queues.get_mut(&e.queue)?.keys.get_mut(k))
            && ks.held == Some(seq)
        {
            ks.held = None;
        }
    }

    /// Whether a worker holds `seq` at `now_ms` (a lease not run out, or a settle on its way).
    fn is_held(&self, seq: u64, now_ms: u64) -> bool {
        self.busy.contains(&seq)
            || self
                .entries
                .get(&seq)
                .and_then(|e| e.lease)
                .is_some_and(|l| now_ms <= l.expires_ms)
    }

    /// Leases up to `max` due candidates of `queue`; returns (sequence, lease nonce) of each,
    /// and the record as accepted if it is still kept (its first claim takes it).
    fn claim(&mut self, queue: &str, max: usize, now_ms: u64, lease_ms: u64) -> Vec<Picked> {
        let Some(q) = self.queues.get(queue) else {
            return Vec::new();
        };
        let mut picked = Vec::new();
        for &(due, seq) in &q.ready {
            if picked.len() >= max || due > now_ms {
                break;
            }
            if self.is_held(seq, now_ms) {
                continue;
            }
            let key_held = self
                .entries
                .get(&seq)
                .and_then(|e| e.key.as_ref())
                .and_then(|k| q.keys.get(k)?.held)
                .is_some_and(|h| h != seq && self.is_held(h, now_ms));
            if !key_held {
                picked.push(seq);
            }
        }
        let mut leased = Vec::with_capacity(picked.len());
        for seq in picked {
            self.next_lease += 1;
            let nonce = self.next_lease;
            let Some(e) = self.entries.get_mut(&seq) else {
                continue;
            };
            e.lease = Some(Lease {
                nonce,
                expires_ms: now_ms.saturating_add(lease_ms),
            });
            let fresh = e.fresh.take();
            if let Some(f) = &fresh {
                self.fresh_bytes = self.fresh_bytes.saturating_sub(f.bytes);
            }
            if let Some(ks) = e
                .key
                .as_ref()
                .and_then(|k| self.queues.get_mut(&e.queue)?.keys.get_mut(k))
            {
                ks.held = Some(seq);
            }
            leased.push(Picked { seq, nonce, fresh });
        }
        leased
    }

    /// The earliest time a candidate of `queue` becomes claimable: its due time, or for one
    /// under a lease, the end of that lease (it may be claimed again then).
    fn next_due(&self, queue: &str) -> Option<u64> {
        let q = self.queues.get(queue)?;
        let mut best: Option<u64> = None;
        for &(due, seq) in &q.ready {
            if best.is_some_and(|b| b <= due) {
                break;
            }
            if self.busy.contains(&seq) {
                continue;
            }
            let at = match self.entries.get(&seq).and_then(|e| e.lease) {
                Some(l) => due.max(l.expires_ms.saturating_add(1)),
                None => due,
            };
            best = Some(best.map_or(at, |b| b.min(at)));
        }
        best
    }

    fn queue_stats(&self, queue: &str) -> QueueStats {
        let Some(q) = self.queues.get(queue) else {
            return QueueStats::default();
        };
        QueueStats {
            depth: q.live.len() as u64,
            dead: q.dead,
            bytes: q.bytes,
            oldest_pending_ms: q
                .live
                .first()
                .and_then(|s| self.entries.get(s))
                .map(|e| e.accepted_at_ms),
            dead_by_channel: q
                .dead_by_channel
                .iter()
                .map(|(channel, seqs)| ChannelDeadLetters {
                    channel: channel.as_deref().map(str::to_owned),
                    dead: seqs.len() as u64,
                    oldest_accepted_ms: seqs
                        .first()
                        .and_then(|s| self.entries.get(s))
                        .map_or(0, |e| e.accepted_at_ms),
                })
                .collect(),
        }
    }

    /// The state of a delivery not final as of now, `blocked` and `in_flight` computed.
    fn state_of(&self, seq: u64) -> Option<DeliveryState> {
        let e = self.entries.get(&seq)?;
        if e.dead {
            return Some(DeliveryState::Dead);
        }
        if e.lease.is_some() {
            return Some(DeliveryState::InFlight);
        }
        let blocked = e
            .key
            .as_ref()
            .and_then(|k| {
                self.queues
                    .get(&e.queue)?
                    .keys
                    .get(k)?
                    .dead
                    .first()
                    .copied()
            })
            .is_some_and(|d| d < seq);
        Some(if blocked {
            DeliveryState::Blocked
        } else {
            DeliveryState::Pending
        })
    }

    /// Corrects a stored status to the state as of now. The disk is ahead of the index (the
    /// writer commits, then updates the index), so a final state on disk wins.
    fn overlay(&self, seq: u64, status: &mut DeliveryStatus) {
        if status.state.is_final() {
            return;
        }
        match self.state_of(seq) {
            Some(DeliveryState::Dead) | None => status.state = DeliveryState::Pending,
            Some(state) => status.state = state,
        }
    }
}

/// Rebuilds the index from the file; an error message says what is wrong (the caller names
/// the path).
fn load_index(db: &Database) -> Result<Index, String> {
    #[derive(Deserialize)]
    struct RecordHead {
        v: u32,
        id: String,
        queue: String,
        #[serde(default)]
        ordering_key: Option<String>,
        #[serde(default)]
        channel: Option<String>,
        accepted_at_ms: u64,
    }
    let run = || -> Result<Result<Index, String>, redb::Error> {
        let txn = db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let status = txn.open_table(STATUS)?;
        let mut ix = Index::default();
        for row in records.iter()? {
            let (seq, bytes) = row?;
            let seq = seq.value();
            let head: RecordHead = match record_head(bytes.value())
                .and_then(|h| serde_json::from_slice(h).map_err(|e| e.to_string()))
            {
                Ok(h) => h,
                Err(e) => return Ok(Err(format!("record {seq} is not readable: {e}"))),
            };
            if head.v > FORMAT_VERSION {
                let newer = DeliveryError::NewerFormat {
                    id: head.id,
                    found: head.v,
                };
                return Ok(Err(newer.to_string()));
            }
            let Some(st) = status.get(seq)? else {
                return Ok(Err(format!("delivery {} has no status", head.id)));
            };
            let st: DeliveryStatus = match serde_json::from_slice(st.value()) {
                Ok(s) => s,
                Err(e) => return Ok(Err(format!("status of {} is not readable: {e}", head.id))),
            };
            ix.next_seq = ix.next_seq.max(seq + 1);
            ix.ids.insert(head.id, seq);
            // Delivered and superseded ones are off their queue: only `ids` knows them.
            if st.state.is_done() {
                continue;
            }
            // In flight or blocked are never stored, but a leaseless restart makes them pending.
            ix.insert(
                seq,
                Entry {
                    queue: head.queue,
                    key: head.ordering_key,
                    channel: head.channel.as_deref().map(Arc::from),
                    dead: st.state == DeliveryState::Dead,
                    due_ms: st.next_attempt_at_ms,
                    lease: None,
                    bytes: bytes.value().len() as u64,
                    accepted_at_ms: head.accepted_at_ms,
                    in_ready: false,
                    fresh: None,
                },
            );
        }
        Ok(Ok(ix))
    };
    run().map_err(|e| e.to_string())?
}

/// The first byte of a record stored as [`encode_record`] writes it; a record stored as one JSON
/// document (before that) starts with `{`.
const ENVELOPE: u8 = 1;

/// A record as stored: [`ENVELOPE`], then the record's JSON without its body and original, the
/// body, and (after a byte saying whether there is one) the original, each after its length
/// (4 bytes, little-endian).
/// The bodies are JSON themselves, and inside the record's JSON every quote of theirs was
/// escaped on the way in and unescaped on the way out: ~200k instructions per queued order,
/// 12 % of the store-and-forward path (callgrind, issue 13). The record is borrowed mutably
/// only to lend its bodies out while its JSON is written (no copy of them); it is left as it
/// came.
fn encode_record(record: &mut DeliveryRecord) -> Result<Vec<u8>, String> {
    let body = std::mem::take(&mut record.body);
    let original = record.original.take();
    let head = serde_json::to_vec(&*record);
    record.body = body;
    record.original = original;
    let head = head.map_err(|e| e.to_string())?;
    let original = record.original.as_deref().map(str::as_bytes);
    let size = 14 + head.len() + record.body.len() + original.map_or(0, <[u8]>::len);
    let mut out = Vec::with_capacity(size);
    out.push(ENVELOPE);
    put(&mut out, &head)?;
    put(&mut out, record.body.as_bytes())?;
    out.push(u8::from(original.is_some()));
    if let Some(original) = original {
        put(&mut out, original)?;
    }
    Ok(out)
}

/// Appends `part` after its length, which [`cut`] reads back.
fn put(out: &mut Vec<u8>, part: &[u8]) -> Result<(), String> {
    let n = u32::try_from(part.len())
        .map_err(|_| format!("a part of {} bytes is too large to store", part.len()))?;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(part);
    Ok(())
}

/// A stored record's parts: its JSON (the whole record when stored as JSON alone), and the body
/// and original the envelope carries apart.
type Parts<'b> = (&'b [u8], Option<(&'b [u8], Option<&'b [u8]>)>);

fn record_parts(bytes: &[u8]) -> Result<Parts<'_>, String> {
    let Some(rest) = bytes.strip_prefix(&[ENVELOPE]) else {
        return Ok((bytes, None));
    };
    let short = || "a stored record is cut short".to_owned();
    let (n, rest) = cut(rest).ok_or_else(short)?;
    let (head, rest) = rest.split_at_checked(n as usize).ok_or_else(short)?;
    let (n, rest) = cut(rest).ok_or_else(short)?;
    let (body, rest) = rest.split_at_checked(n as usize).ok_or_else(short)?;
    let original = match rest.split_first() {
        Some((0, [])) => None,
        Some((1, rest)) => match cut(rest) {
            Some((n, original)) if original.len() == n as usize => Some(original),
            _ => return Err(short()),
        },
        _ => return Err("a stored record's end is not readable".to_owned()),
    };
    Ok((head, Some((body, original))))
}

/// A length (4 bytes, little-endian, as [`put`] writes it) and what follows it.
fn cut(b: &[u8]) -> Option<(u32, &[u8])> {
    let (n, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*n), rest))
}

/// The JSON of a stored record that names its id, queue and keys.
fn record_head(bytes: &[u8]) -> Result<&[u8], String> {
    record_parts(bytes).map(|(head, _)| head)
}

fn decode_record(bytes: &[u8]) -> Result<DeliveryRecord, String> {
    let (head, bodies) = record_parts(bytes)?;
    let mut record: DeliveryRecord = serde_json::from_slice(head).map_err(|e| e.to_string())?;
    if let Some((body, original)) = bodies {
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|_| "a stored body is not UTF-8".to_owned())
        };
        record.body = text(body)?;
        record.original = original.map(text).transpose()?;
    }
    Ok(record)
}

fn read_deliveries(db: &Database, seqs: &[u64]) -> Result<Vec<Option<Delivery>>, DeliveryError> {
    let txn = db.begin_read().map_err(failed)?;
    let records = txn.open_table(RECORDS).map_err(failed)?;
    let status = txn.open_table(STATUS).map_err(failed)?;
    seqs.iter()
        .map(|&seq| {
            let (Some(r), Some(s)) = (
                records.get(seq).map_err(failed)?,
                status.get(seq).map_err(failed)?,
            ) else {
                return Ok(None);
            };
            Ok(Some(Delivery {
                record: decode_record(r.value()).map_err(failed)?,
                status: serde_json::from_slice(s.value()).map_err(failed)?,
            }))
        })
        .collect()
}

enum Start {
    Beginning,
    AfterSeq(u64),
    AfterId(String),
}

/// Walks the records in insertion order: correct rather than clever (the admin API pages).
fn list_deliveries(
    db: &Database,
    index: &Mutex<Index>,
    filter: &Filter,
    start: Start,
    limit: usize,
) -> Result<Vec<Delivery>, DeliveryError> {
    let txn = db.begin_read().map_err(failed)?;
    let records = txn.open_table(RECORDS).map_err(failed)?;
    let status = txn.open_table(STATUS).map_err(failed)?;
    let from = match start {
        Start::AfterSeq(s) => s.saturating_add(1),
        _ => 0,
    };
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    for row in records.range(from..).map_err(failed)? {
        let (seq, bytes) = row.map_err(failed)?;
        let seq = seq.value();
        let record = decode_record(bytes.value()).map_err(failed)?;
        if let Start::AfterId(after) = &start
            && record.id.as_str() <= after.as_str()
        {
            continue;
        }
        if filter.queue.as_deref().is_some_and(|q| q != record.queue) {
            continue;
        }
        let Some(st) = status.get(seq).map_err(failed)? else {
            continue;
        };
        let mut st: DeliveryStatus = serde_json::from_slice(st.value()).map_err(failed)?;
        lock(index).overlay(seq, &mut st);
        let delivery = Delivery { record, status: st };
        if filter.matches(&delivery) {
            out.push(delivery);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The writer: group commit.

/// One record of an enqueue, reserved in the index.
struct Stored {
    seq: u64,
    id: String,
    /// Its JSON.
    record: Vec<u8>,
}

/// A mutation, prepared (and reserved in the index) by the caller.
enum Op {
    /// One delivery, or the deliveries of one event: all in one transaction.
    Enqueue {
        items: Vec<Stored>,
        /// The status every one of them starts with (JSON).
        status: Vec<u8>,
    },
    Settle {
        seq: u64,
        attempt: Option<AttemptRecord>,
        outcome: Settle,
        now_ms: u64,
    },
    Requeue {
        seq: u64,
        body: Option<String>,
        now_ms: u64,
    },
    Purge {
        seq: u64,
        id: String,
    },
    Prune {
        older_than_ms: u64,
    },
    /// The last-writer-wins register: decided on the writer thread, so atomically.
    NoteSequence {
        queue: String,
        key: String,
        seq: u64,
    },
}

impl Op {
    /// How many records it writes, as the commit hook counts them.
    fn records(&self) -> usize {
        match self {
            Op::Enqueue { items, .. } => items.len(),
            _ => 1,
        }
    }
}

/// What a committed mutation did.
enum Done {
    Written,
    /// Its record was not there (purged meanwhile).
    Missing,
    /// A requeue of a delivery that is not final.
    NotFinal,
    Requeued(Requeued),
    /// The ids of the records removed.
    Pruned(Vec<String>),
    /// Whether a sequence was noted (not older than the register's).
    Noted(bool),
}

/// What the index needs of a requeued delivery (a delivered one is not in it any more).
struct Requeued {
    queue: String,
    key: Option<String>,
    channel: Option<String>,
    bytes: u64,
    accepted_at_ms: u64,
    due_ms: u64,
}

struct Request {
    op: Op,
    reply: ReplyTo<Result<Done, DeliveryError>>,
}

/// Closes the writer's inbox when the writer thread ends, dropping what it did not take.
struct CloseOnExit<'a>(&'a Inbox<Request>);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        self.0.close(true);
    }
}

fn run_writer(
    db: &Database,
    index: &Mutex<Index>,
    stats: &CommitStats,
    inbox: &Inbox<Request>,
    group: GroupCommit,
) {
    // outcomes committed without an fsync: how many, and since when
    let mut unsynced: Option<(Instant, usize)> = None;
    loop {
        // Everything that arrived while the last commit was syncing goes in this one.
        let mut batch = Vec::new();
        let sync_by = unsynced.map(|(since, _)| since + SETTLE_SYNC_AFTER);
        if inbox.take(&mut batch, 1, MAX_BATCH, sync_by) == Taken::Closed {
            flush(db, stats, &mut unsynced);
            return;
        }
        if batch.is_empty() {
            // nothing came: the pending outcomes get their fsync now
            flush(db, stats, &mut unsynced);
            continue;
        }
        let overdue = unsynced.is_some_and(|(since, _)| since.elapsed() >= SETTLE_SYNC_AFTER);
        let durable = overdue || batch.iter().any(|r| !matches!(r.op, Op::Settle { .. }));
        if durable {
            // The window is time-boxed and bounded in size; Settles that arrive join it too.
            // One timed wait: only the request that fills the window wakes the writer early.
            let until = Instant::now() + group.window;
            let want = group.window_requests.min(MAX_BATCH);
            inbox.take(&mut batch, want, MAX_BATCH, Some(until));
        }
        let results = match commit(db, &batch, durable) {
            Ok(results) => {
                let n = batch.iter().map(|r| r.op.records()).sum::<usize>();
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.records.fetch_add(n as u64, Ordering::Relaxed);
                if durable {
                    let carried = unsynced.take().map_or(0, |(_, k)| k);
                    if let Some(hook) = &stats.hook {
                        hook(n + carried);
                    }
                } else {
                    unsynced.get_or_insert((Instant::now(), 0)).1 += n;
                }
                results
            }
            Err(e) => {
                tracing::error!(error = %e, "delivery store commit failed");
                batch
                    .iter()
                    .map(|_| Err(DeliveryError::Failed(e.clone())))
                    .collect()
            }
        };
        {
            let mut ix = lock(index);
            for (request, result) in batch.iter().zip(&results) {
                finish(&mut ix, &request.op, result);
            }
        }
        // A caller that went away does not need its answer; the index is already right.
        replies::send_all(
            batch
                .into_iter()
                .zip(results)
                .map(|(request, result)| (request.reply, result)),
        );
    }
}

/// Makes the outcomes committed without an fsync durable: an empty fsynced commit.
fn flush(db: &Database, stats: &CommitStats, unsynced: &mut Option<(Instant, usize)>) {
    let Some((_, n)) = unsynced.take() else {
        return;
    };
    match commit(db, &[], true) {
        Ok(_) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            if let Some(hook) = &stats.hook {
                hook(n);
            }
        }
        Err(e) => {
            // the outcomes stay committed; the next fsynced commit covers them
            tracing::error!(error = %e, "delivery store sync failed");
            *unsynced = Some((Instant::now(), n));
        }
    }
}

type Tables<'t> = (
    Table<'t, u64, &'static [u8]>,
    Table<'t, u64, &'static [u8]>,
    Table<'t, (&'static str, &'static str), u64>,
);

/// Applies every request in one transaction, fsynced when `durable` (else made durable by the
/// next fsynced commit). An error of one request (a record not there) is its answer; a
/// storage error fails them all.
fn commit(
    db: &Database,
    batch: &[Request],
    durable: bool,
) -> Result<Vec<Result<Done, DeliveryError>>, String> {
    let s = |e: redb::Error| e.to_string();
    let mut txn = db.begin_write().map_err(|e| s(e.into()))?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(|e| s(e.into()))?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut tables: Tables<'_> = (
            txn.open_table(RECORDS).map_err(|e| s(e.into()))?,
            txn.open_table(STATUS).map_err(|e| s(e.into()))?,
            txn.open_table(SEQUENCES).map_err(|e| s(e.into()))?,
        );
        for request in batch {
            results.push(apply(&mut tables, &request.op).map_err(s)?);
        }
    }
    txn.commit().map_err(|e| s(e.into()))?;
    Ok(results)
}

/// One request's writes. Checks come before writes, so an answered error wrote nothing.
fn apply(t: &mut Tables<'_>, op: &Op) -> Result<Result<Done, DeliveryError>, redb::Error> {
    let (records, status, sequences) = t;
    let read_status = |status: &Table<'_, u64, &'static [u8]>, seq: u64| {
        Ok::<_, redb::Error>(
            status
                .get(seq)?
                .map(|g| serde_json::from_slice::<DeliveryStatus>(g.value())),
        )
    };
    match op {
        Op::Enqueue { items, status: st } => {
            // A storage error here fails the whole transaction: none of them is stored.
            for item in items {
                records.insert(item.seq, item.record.as_slice())?;
                status.insert(item.seq, st.as_slice())?;
            }
            Ok(Ok(Done::Written))
        }
        Op::NoteSequence { queue, key, seq } => {
            let k = (queue.as_str(), key.as_str());
            let stored = sequences.get(k)?.map(|g| g.value());
            if stored.is_some_and(|s| *seq < s) {
                return Ok(Ok(Done::Noted(false)));
            }
            if stored != Some(*seq) {
                sequences.insert(k, *seq)?;
            }
            Ok(Ok(Done::Noted(true)))
        }
        Op::Settle {
            seq,
            attempt,
            outcome,
            now_ms,
        } => {
            let mut st = match read_status(status, *seq)? {
                None => return Ok(Ok(Done::Missing)),
                Some(Err(e)) => return Ok(Err(failed(e))),
                Some(Ok(st)) => st,
            };
            st.settle(attempt.as_ref(), outcome, *now_ms);
            let bytes = match serde_json::to_vec(&st) {
                Ok(b) => b,
                Err(e) => return Ok(Err(failed(e))),
            };
            status.insert(*seq, bytes.as_slice())?;
            Ok(Ok(Done::Written))
        }
        Op::Requeue { seq, body, now_ms } => {
            let mut st = match read_status(status, *seq)? {
                None => return Ok(Ok(Done::Missing)),
                Some(Err(e)) => return Ok(Err(failed(e))),
                Some(Ok(st)) => st,
            };
            if !st.state.is_final() {
                return Ok(Ok(Done::NotFinal));
            }
            let Some(rec) = records.get(*seq)?.map(|g| g.value().to_vec()) else {
                return Ok(Ok(Done::Missing));
            };
            let mut record = match decode_record(&rec) {
                Ok(r) => r,
                Err(e) => return Ok(Err(failed(e))),
            };
            let mut size = rec.len() as u64;
            if let Some(body) = body {
                record.body = body.clone();
                let rec = match encode_record(&mut record) {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(failed(e))),
                };
                size = rec.len() as u64;
                records.insert(*seq, rec.as_slice())?;
            }
            // The history (attempts, the last answer, when delivered) stays for operators.
            st.state = DeliveryState::Pending;
            st.next_attempt_at_ms = *now_ms;
            st.reason = None;
            st.replays = st.replays.saturating_add(1);
            st.updated_at_ms = *now_ms;
            let bytes = match serde_json::to_vec(&st) {
                Ok(b) => b,
                Err(e) => return Ok(Err(failed(e))),
            };
            status.insert(*seq, bytes.as_slice())?;
            Ok(Ok(Done::Requeued(Requeued {
                queue: record.queue,
                key: record.ordering_key,
                channel: record.channel,
                bytes: size,
                accepted_at_ms: record.accepted_at_ms,
                due_ms: *now_ms,
            })))
        }
        Op::Purge { seq, .. } => {
            let found = records.remove(*seq)?.is_some();
            status.remove(*seq)?;
            Ok(Ok(if found { Done::Written } else { Done::Missing }))
        }
        Op::Prune { older_than_ms } => {
            let mut old = Vec::new();
            for row in status.iter()? {
                let (seq, st) = row?;
                let Ok(st) = serde_json::from_slice::<DeliveryStatus>(st.value()) else {
                    continue;
                };
                let over_at = match st.state {
                    DeliveryState::Delivered => st.delivered_at_ms.unwrap_or(st.updated_at_ms),
                    // never delivered (a delivered_at_ms is from before a replay)
                    DeliveryState::Superseded => st.updated_at_ms,
                    _ => continue,
                };
                if over_at < *older_than_ms {
                    old.push(seq.value());
                }
            }
            #[derive(Deserialize)]
            struct Id {
                id: String,
            }
            let mut pruned = Vec::with_capacity(old.len());
            for seq in old {
                status.remove(seq)?;
                let id = records.remove(seq)?.and_then(|g| {
                    let head = record_head(g.value()).ok()?;
                    serde_json::from_slice::<Id>(head).ok()
                });
                if let Some(Id { id }) = id {
                    pruned.push(id);
                }
            }
            Ok(Ok(Done::Pruned(pruned)))
        }
    }
}

/// Brings the index in line with what was committed (or undoes what the caller reserved when
/// it was not).
fn finish(ix: &mut Index, op: &Op, result: &Result<Done, DeliveryError>) {
    match op {
        Op::Enqueue { items, .. } => {
            for item in items {
                ix.busy.remove(&item.seq);
                if result.is_err() {
                    ix.remove(item.seq);
                    ix.ids.remove(&item.id);
                }
            }
        }
        Op::NoteSequence { .. } => {}
        Op::Settle { seq, outcome, .. } => {
            ix.busy.remove(seq);
            if !matches!(result, Ok(Done::Written)) {
                // The lease stays: the worker may settle again.
                return;
            }
            ix.clear_held(*seq);
            if let Some(e) = ix.entries.get_mut(seq) {
                e.lease = None;
            }
            match outcome {
                Settle::Delivered(_) | Settle::Superseded(_) => {
                    ix.remove(*seq);
                }
                Settle::RetryAt(at) | Settle::Release(at) => ix.set_due(*seq, *at),
                Settle::Dead(_) => ix.set_dead(*seq, true),
            }
        }
        Op::Requeue { seq, .. } => {
            ix.busy.remove(seq);
            let Ok(Done::Requeued(r)) = result else {
                return;
            };
            if ix.entries.contains_key(seq) {
                // It was dead: its key is unparked (if no other dead letter parks it).
                ix.set_bytes(*seq, r.bytes);
                ix.set_due(*seq, r.due_ms);
                ix.set_dead(*seq, false);
            } else {
                ix.insert(
                    *seq,
                    Entry {
                        queue: r.queue.clone(),
                        key: r.key.clone(),
                        channel: r.channel.as_deref().map(Arc::from),
                        dead: false,
                        due_ms: r.due_ms,
                        lease: None,
                        bytes: r.bytes,
                        accepted_at_ms: r.accepted_at_ms,
                        in_ready: false,
                        fresh: None,
                    },
                );
            }
        }
        Op::Purge { seq, id } => {
            ix.busy.remove(seq);
            if matches!(result, Ok(Done::Written)) {
                ix.remove(*seq);
                ix.ids.remove(id);
            }
        }
        Op::Prune { .. } => {
            if let Ok(Done::Pruned(ids)) = result {
                for id in ids {
                    ix.ids.remove(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use redb::TableHandle;

    use super::*;
    use crate::state::delivery::{Destination, StoredAnswer};

    /// A folder under the system's temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("gw-deliveries-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("queue").join("deliveries.redb")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A runtime of `threads` workers, for the tests that drive concurrent callers from a plain
    /// test thread.
    fn runtime(threads: usize) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap()
    }

    fn rec(id: &str, key: Option<&str>) -> DeliveryRecord {
        rec_in("erp", id, key)
    }

    fn rec_in(queue: &str, id: &str, key: Option<&str>) -> DeliveryRecord {
        DeliveryRecord {
            v: FORMAT_VERSION,
            id: id.into(),
            queue: queue.into(),
            route: "orders".into(),
            channel: Some("amazon".into()),
            destination: Destination {
                upstream: "erp".into(),
                method: "POST".into(),
                path: "/erp/v1/orders".into(),
                mapping: None,
                operation: None,
            },
            headers: vec![("content-type".into(), "application/json".into())],
            body: format!("{{\"order\":\"{id}\"}}"),
            original: None,
            upstream_key: format!("key-{id}"),
            ordering_key: key.map(Into::into),
            traceparent: None,
            tracestate: None,
            request_id: format!("req-{id}"),
            accepted_at_ms: 1_000,
            sequence: None,
        }
    }

    const ROOMY: QueueLimits = QueueLimits {
        max_entries: 1_000,
        max_bytes: 1 << 30,
    };

    const LEASE: u64 = 30_000;

    fn ok_answer() -> Settle {
        Settle::Delivered(StoredAnswer {
            status: 201,
            content_type: None,
            body: "{}".into(),
        })
    }

    fn attempt(at_ms: u64) -> Option<AttemptRecord> {
        Some(AttemptRecord {
            at_ms,
            duration_ms: 3,
            status: Some(503),
            error: None,
        })
    }

    fn ids(claimed: &[Claimed]) -> Vec<&str> {
        let mut v: Vec<&str> = claimed
            .iter()
            .map(|c| c.delivery.record.id.as_str())
            .collect();
        v.sort_unstable();
        v
    }

    async fn state(store: &EmbeddedDeliveries, id: &str) -> DeliveryState {
        store
            .get(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id} is gone"))
            .status
            .state
    }

    async fn store_with(dir: &TempDir, records: &[(&str, Option<&str>)]) -> EmbeddedDeliveries {
        let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
        for (id, key) in records {
            store.enqueue(rec(id, *key), ROOMY, 1_000).await.unwrap();
        }
        store
    }

    #[tokio::test]
    async fn only_the_head_of_each_ordering_key_is_claimed() {
        let dir = TempDir::new("order");
        let store = store_with(
            &dir,
            &[
                ("a1", Some("A")),
                ("b1", Some("B")),
                ("a2", Some("A")),
                ("b2", Some("B")),
                ("u", None),
            ],
        )
        .await;
        let first = store.claim("erp", 10, 1_000, LEASE).await.unwrap();
        assert_eq!(ids(&first), ["a1", "b1", "u"]);
        assert_eq!(first[0].delivery.status.state, DeliveryState::InFlight);
        assert_eq!(state(&store, "a1").await, DeliveryState::InFlight);
        assert_eq!(state(&store, "a2").await, DeliveryState::Pending);
        // Another worker gets nothing: both keys are held, the unordered one too.
        assert!(
            store
                .claim("erp", 10, 1_000, LEASE)
                .await
                .unwrap()
                .is_empty()
        );

        let a1 = first.iter().find(|c| c.delivery.record.id == "a1").unwrap();
        let b1 = first.iter().find(|c| c.delivery.record.id == "b1").unwrap();
        store
            .settle(a1, attempt(1_000), ok_answer(), 1_010)
            .await
            .unwrap();
        let next = store.claim("erp", 10, 1_010, LEASE).await.unwrap();
        assert_eq!(ids(&next), ["a2"]);
        // b1 retries later; b2 behind it must wait for it, even though b2 is due.
        store
            .settle(b1, attempt(1_000), Settle::RetryAt(5_000), 1_010)
            .await
            .unwrap();
        assert!(
            store
                .claim("erp", 10, 1_020, LEASE)
                .await
                .unwrap()
                .is_empty()
        );
        let b = store.claim("erp", 10, 5_000, LEASE).await.unwrap();
        assert_eq!(ids(&b), ["b1"]);
        assert_eq!(store.stats("erp").await.unwrap().depth, 4);
    }

    #[tokio::test]
    async fn one_key_is_never_with_two_workers_and_a_lease_runs_out() {
        let dir = TempDir::new("lease");
        let store = store_with(&dir, &[("k1", Some("K")), ("k2", Some("K"))]).await;
        let w1 = store.claim("erp", 1, 1_000, 100).await.unwrap();
        assert_eq!(ids(&w1), ["k1"]);
        for now in [1_000, 1_050, 1_100] {
            assert!(
                store.claim("erp", 10, now, 100).await.unwrap().is_empty(),
                "claimed at {now} while the lease holds"
            );
        }
        assert_eq!(store.next_due("erp").await.unwrap(), Some(1_101));
        // Past the lease another worker takes the same head, never k2.
        let w2 = store.claim("erp", 10, 1_101, 100).await.unwrap();
        assert_eq!(ids(&w2), ["k1"]);
        let lost = store
            .settle(&w1[0], attempt(1_000), ok_answer(), 1_102)
            .await;
        assert!(
            matches!(lost, Err(DeliveryError::LeaseLost(ref id)) if id == "k1"),
            "{lost:?}"
        );
        assert!(!store.purge("k1").await.unwrap(), "purged a held delivery");
        store
            .settle(&w2[0], attempt(1_101), ok_answer(), 1_102)
            .await
            .unwrap();
        assert_eq!(state(&store, "k1").await, DeliveryState::Delivered);
        let w3 = store.claim("erp", 10, 1_102, 100).await.unwrap();
        assert_eq!(ids(&w3), ["k2"]);
    }

    #[tokio::test]
    async fn a_dead_letter_blocks_its_key_until_requeued() {
        let dir = TempDir::new("dead");
        let store = store_with(
            &dir,
            &[
                ("d1", Some("K")),
                ("d2", Some("K")),
                ("d3", Some("K")),
                ("o", Some("O")),
            ],
        )
        .await;
        let c = store.claim("erp", 10, 1_000, LEASE).await.unwrap();
        let d1 = c.iter().find(|c| c.delivery.record.id == "d1").unwrap();
        let o = c.iter().find(|c| c.delivery.record.id == "o").unwrap();
        store
            .settle(d1, attempt(1_000), Settle::Dead("422".into()), 1_001)
            .await
            .unwrap();
        store
            .settle(o, attempt(1_000), ok_answer(), 1_001)
            .await
            .unwrap();
        assert_eq!(state(&store, "d1").await, DeliveryState::Dead);
        assert_eq!(state(&store, "d2").await, DeliveryState::Blocked);
        assert_eq!(state(&store, "d3").await, DeliveryState::Blocked);
        assert!(
            store
                .claim("erp", 10, 9_000, LEASE)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.next_due("erp").await.unwrap(), None);
        let blocked = Filter {
            state: Some(DeliveryState::Blocked),
            ..Filter::default()
        };
        let listed = store.list(&blocked, None, 10).await.unwrap();
        let listed: Vec<&str> = listed.iter().map(|d| d.record.id.as_str()).collect();
        assert_eq!(listed, ["d2", "d3"]);
        let stats = store.stats("erp").await.unwrap();
        assert_eq!((stats.depth, stats.dead), (2, 1));

        assert!(
            !store.requeue("d2", None, 2_000).await.unwrap(),
            "d2 is not final"
        );
        assert!(
            store
                .requeue("d1", Some("{\"fixed\":1}".into()), 2_000)
                .await
                .unwrap()
        );
        let d1 = store.get("d1").await.unwrap().unwrap();
        assert_eq!(d1.status.state, DeliveryState::Pending);
        assert_eq!((d1.status.replays, d1.status.attempt_count), (1, 1));
        assert_eq!(d1.record.body, "{\"fixed\":1}");
        assert_eq!(state(&store, "d2").await, DeliveryState::Pending);
        // Then in order: d1, d2, d3, one at a time.
        for (id, now) in [("d1", 2_000), ("d2", 2_001), ("d3", 2_002)] {
            let c = store.claim("erp", 10, now, LEASE).await.unwrap();
            assert_eq!(ids(&c), [id]);
            store.settle(&c[0], None, ok_answer(), now).await.unwrap();
        }
        let stats = store.stats("erp").await.unwrap();
        assert_eq!((stats.depth, stats.dead, stats.bytes), (0, 0, 0));
        // A delivered one replays too, at the head of its key again.
        assert!(store.requeue("o", None, 3_000).await.unwrap());
        let c = store.claim("erp", 10, 3_000, LEASE).await.unwrap();
        assert_eq!(ids(&c), ["o"]);
        assert_eq!(c[0].delivery.status.replays, 1);
    }

    #[tokio::test]
    async fn dead_letters_are_counted_per_channel_with_the_oldest_acceptance() {
        let dir = TempDir::new("dead-channels");
        let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
        for (id, channel, at) in [
            ("a1", Some("amazon"), 1_000),
            ("a2", Some("amazon"), 2_000),
            ("s1", Some("shopify"), 3_000),
            ("n1", None, 4_000),
        ] {
            let mut r = rec(id, None);
            r.channel = channel.map(Into::into);
            r.accepted_at_ms = at;
            store.enqueue(r, ROOMY, at).await.unwrap();
        }
        let c = store.claim("erp", 10, 5_000, LEASE).await.unwrap();
        for claimed in &c {
            let outcome = if claimed.delivery.record.id == "s1" {
                ok_answer()
            } else {
                Settle::Dead("refused".into())
            };
            store.settle(claimed, None, outcome, 5_001).await.unwrap();
        }
        let by_channel = |stats: QueueStats| {
            stats
                .dead_by_channel
                .into_iter()
                .map(|c| (c.channel, c.dead, c.oldest_accepted_ms))
                .collect::<Vec<_>>()
        };
        let stats = store.stats("erp").await.unwrap();
        assert_eq!(stats.dead, 3);
        assert_eq!(
            by_channel(stats),
            [(None, 1, 4_000), (Some("amazon".into()), 2, 1_000)]
        );
        // a replayed one is no longer dead; the oldest left is the next one
        assert!(store.requeue("a1", None, 6_000).await.unwrap());
        assert_eq!(
            by_channel(store.stats("erp").await.unwrap()),
            [(None, 1, 4_000), (Some("amazon".into()), 1, 2_000)]
        );
        assert!(store.purge("n1").await.unwrap());
        drop(store);
        // the index rebuilt from the file counts the same
        let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
        assert_eq!(
            by_channel(store.stats("erp").await.unwrap()),
            [(Some("amazon".into()), 1, 2_000)]
        );
    }

    #[tokio::test]
    async fn purging_a_dead_letter_unblocks_its_key() {
        let dir = TempDir::new("purge");
        let store = store_with(&dir, &[("d1", Some("K")), ("d2", Some("K"))]).await;
        let c = store.claim("erp", 10, 1_000, LEASE).await.unwrap();
        store
            .settle(&c[0], None, Settle::Dead("gone".into()), 1_001)
            .await
            .unwrap();
        assert!(
            store
                .claim("erp", 10, 1_002, LEASE)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.purge("d1").await.unwrap());
        assert!(store.get("d1").await.unwrap().is_none());
        assert!(!store.purge("d1").await.unwrap(), "purged twice");
        let c = store.claim("erp", 10, 1_002, LEASE).await.unwrap();
        assert_eq!(ids(&c), ["d2"]);
        assert_eq!(store.stats("erp").await.unwrap().dead, 0);
    }

    #[tokio::test]
    async fn a_retry_waits_for_its_time_and_a_release_is_not_an_attempt() {
        let dir = TempDir::new("retry");
        let store = store_with(&dir, &[("r", None)]).await;
        let c = store.claim("erp", 1, 1_000, LEASE).await.unwrap();
        store
            .settle(&c[0], attempt(1_000), Settle::RetryAt(1_500), 1_003)
            .await
            .unwrap();
        assert_eq!(store.next_due("erp").await.unwrap(), Some(1_500));
        assert!(
            store
                .claim("erp", 1, 1_499, LEASE)
                .await
                .unwrap()
                .is_empty()
        );
        let c = store.claim("erp", 1, 1_500, LEASE).await.unwrap();
        assert_eq!(c[0].delivery.status.attempt_count, 1);
        assert_eq!(c[0].delivery.status.attempts.len(), 1);
        assert_eq!(
            store.next_due("erp").await.unwrap(),
            Some(1_500 + LEASE + 1)
        );

        store
            .settle(&c[0], attempt(1_500), Settle::Release(1_600), 1_501)
            .await
            .unwrap();
        let c = store.claim("erp", 1, 1_600, LEASE).await.unwrap();
        let st = &c[0].delivery.status;
        assert_eq!(
            (st.attempt_count, st.attempts.len()),
            (1, 1),
            "release counted"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_by_entries_and_by_bytes() {
        let dir = TempDir::new("full");
        let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
        let two = QueueLimits {
            max_entries: 2,
            max_bytes: 1 << 20,
        };
        store.enqueue(rec("e1", None), two, 1_000).await.unwrap();
        store.enqueue(rec("e2", None), two, 1_000).await.unwrap();
        let full = store.enqueue(rec("e3", None), two, 1_000).await;
        assert!(
            matches!(
                full,
                Err(DeliveryError::Full {
                    what: "entries",
                    ..
                })
            ),
            "{full:?}"
        );
        // Another queue has its own limits.
        store
            .enqueue(rec_in("wms", "w1", None), two, 1_000)
            .await
            .unwrap();
        let c = store.claim("erp", 2, 1_000, LEASE).await.unwrap();
        // A dead letter still occupies the queue; a delivered one does not.
        store
            .settle(&c[0], None, Settle::Dead("x".into()), 1_001)
            .await
            .unwrap();
        assert!(store.enqueue(rec("e3", None), two, 1_002).await.is_err());
        store.settle(&c[1], None, ok_answer(), 1_001).await.unwrap();
        store.enqueue(rec("e3", None), two, 1_002).await.unwrap();

        let size = encode_record(&mut rec_in("b", "b1", None)).unwrap().len() as u64;
        let bytes = QueueLimits {
            max_entries: 100,
            max_bytes: size * 3 / 2,
        };
        store
            .enqueue(rec_in("b", "b1", None), bytes, 1_000)
            .await
            .unwrap();
        assert_eq!(store.stats("b").await.unwrap().bytes, size);
        let full = store.enqueue(rec_in("b", "b2", None), bytes, 1_000).await;
        assert!(
            matches!(full, Err(DeliveryError::Full { what: "bytes", .. })),
            "{full:?}"
        );
        assert!(store.get("b2").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn everything_survives_a_reopen_and_in_flight_is_pending_again() {
        let dir = TempDir::new("durable");
        {
            let store = store_with(
                &dir,
                &[
                    ("p1", Some("K")),
                    ("p2", Some("K")),
                    ("x", Some("X")),
                    ("y", Some("Y")),
                ],
            )
            .await;
            let c = store.claim("erp", 10, 1_000, LEASE).await.unwrap();
            assert_eq!(ids(&c), ["p1", "x", "y"]);
            let x = c.iter().find(|c| c.delivery.record.id == "x").unwrap();
            let y = c.iter().find(|c| c.delivery.record.id == "y").unwrap();
            store
                .settle(x, attempt(1_000), Settle::Dead("bad".into()), 1_001)
                .await
                .unwrap();
            store
                .settle(y, attempt(1_000), ok_answer(), 1_001)
                .await
                .unwrap();
            store
                .enqueue(rec("x2", Some("X")), ROOMY, 1_002)
                .await
                .unwrap();
            // p1 stays in flight: the process "dies" here.
        }
        let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
        assert_eq!(state(&store, "p1").await, DeliveryState::Pending);
        assert_eq!(state(&store, "p2").await, DeliveryState::Pending);
        assert_eq!(state(&store, "x").await, DeliveryState::Dead);
        assert_eq!(state(&store, "x2").await, DeliveryState::Blocked);
        let y = store.get("y").await.unwrap().unwrap();
        assert_eq!(y.status.state, DeliveryState::Delivered);
        assert_eq!(y.record, rec("y", Some("Y")));
        let stats = store.stats("erp").await.unwrap();
        assert_eq!((stats.depth, stats.dead), (3, 1));
        let c = store.claim("erp", 10, 2_000, LEASE).await.unwrap();
        assert_eq!(ids(&c), ["p1"]);
        assert_eq!(c[0].delivery.record.upstream_key, "key-p1");
        let all = store.list(&Filter::default(), None, 100).await.unwrap();
        let all: Vec<&str> = all.iter().map(|d| d.record.id.as_str()).collect();
        assert_eq!(all, ["p1", "p2", "x", "y", "x2"]);
        // Paging goes on after the last id it gave.
        let page = store.list(&Filter::default(), Some("x"), 1).await.unwrap();
        assert_eq!(page[0].record.id, "y");
        // New sequences continue after the old ones.
        store.enqueue(rec("z", None), ROOMY, 2_001).await.unwrap();
        let last = store
            .list(&Filter::default(), Some("x2"), 10)
            .await
            .unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].record.id, "z");
    }

    #[test]
    fn concurrent_enqueues_share_commits() {
        let runtime = runtime(4);
        let dir = TempDir::new("group");
        let hooked = Arc::new(AtomicUsize::new(0));
        let seen = hooked.clone();
        let hook: CommitHook = Arc::new(move |n| {
            seen.fetch_add(n, Ordering::Relaxed);
        });
        let store = Arc::new(EmbeddedDeliveries::open_with(&dir.file(), hook).unwrap());
        runtime.block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .enqueue(rec(&format!("g{i:02}"), None), ROOMY, 1_000)
                            .await
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        });
        assert_eq!(store.records_committed(), 64);
        assert_eq!(hooked.load(Ordering::Relaxed), 64);
        // Table creation at open is not counted; 64 enqueues took fewer than 64 fsyncs.
        assert!(store.commits() < 64, "{} commits", store.commits());
        assert!(store.commits() >= 1);
        let depth = runtime.block_on(store.stats("erp")).unwrap().depth;
        assert_eq!(depth, 64);
    }

    /// A commit that needs an fsync stays open for the window: an enqueue sent while the first
    /// one waits joins its commit, and the window closes as soon as it holds `window_requests`
    /// (the minute-long window is never waited out).
    #[test]
    fn an_enqueue_within_the_window_shares_the_fsync() {
        let runtime = runtime(2);
        let dir = TempDir::new("window");
        let per_fsync = Arc::new(Mutex::new(Vec::new()));
        let seen = per_fsync.clone();
        let hook: CommitHook = Arc::new(move |n| seen.lock().unwrap().push(n));
        let group = GroupCommit {
            window: Duration::from_secs(60),
            window_requests: 2,
        };
        let store = Arc::new(EmbeddedDeliveries::open_grouped(&dir.file(), hook, group).unwrap());
        runtime.block_on(async {
            let first = {
                let store = store.clone();
                tokio::spawn(async move { store.enqueue(rec("w1", None), ROOMY, 1_000).await })
            };
            // Without the window, the first enqueue would be committed alone by now.
            tokio::time::sleep(Duration::from_millis(50)).await;
            store.enqueue(rec("w2", None), ROOMY, 1_000).await.unwrap();
            first.await.unwrap().unwrap();
        });
        assert_eq!(*per_fsync.lock().unwrap(), vec![2]);
        assert_eq!(store.commits(), 1);
    }

    /// Outcomes are committed without their own fsync, and every one is made durable: by the
    /// next fsynced commit, by the writer when nothing else comes, or when the store closes.
    #[test]
    fn outcomes_ride_on_the_next_fsync_and_none_is_lost() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = TempDir::new("outcomes");
        let synced = Arc::new(AtomicUsize::new(0));
        let fsyncs = Arc::new(AtomicUsize::new(0));
        let (seen, counted) = (synced.clone(), fsyncs.clone());
        let hook: CommitHook = Arc::new(move |n| {
            seen.fetch_add(n, Ordering::Relaxed);
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let store = EmbeddedDeliveries::open_with(&dir.file(), hook).unwrap();
        runtime.block_on(async {
            for id in ["o1", "o2", "o3"] {
                store.enqueue(rec(id, None), ROOMY, 1_000).await.unwrap();
            }
            assert_eq!(
                synced.load(Ordering::Relaxed),
                3,
                "an accepted record is fsynced"
            );
            let claimed = store.claim("erp", 10, 1_000, LEASE).await.unwrap();
            assert_eq!(claimed.len(), 3);
            for c in &claimed {
                store.settle(c, None, ok_answer(), 1_001).await.unwrap();
            }
            assert_eq!(state(&store, "o1").await, DeliveryState::Delivered);
        });
        // the writer syncs the outcomes within SETTLE_SYNC_AFTER even if nothing else comes
        let until = Instant::now() + Duration::from_secs(10);
        while synced.load(Ordering::Relaxed) < 6 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            synced.load(Ordering::Relaxed),
            6,
            "every outcome reached an fsync"
        );
        assert_eq!(
            fsyncs.load(Ordering::Relaxed),
            4,
            "one fsync per accepted record, one for the three outcomes"
        );
        drop(store);
        let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
        runtime.block_on(async {
            for id in ["o1", "o2", "o3"] {
                assert_eq!(state(&store, id).await, DeliveryState::Delivered, "{id}");
            }
        });
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_its_path() {
        let dir = TempDir::new("corrupt");
        let file = dir.file();
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, vec![0x5a_u8; 8192]).unwrap();
        let err = EmbeddedDeliveries::open(&file).unwrap_err();
        assert!(matches!(err, DeliveryError::Unreadable { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_record_of_a_newer_format_is_an_error_naming_the_path() {
        let dir = TempDir::new("newer");
        let file = dir.file();
        drop(EmbeddedDeliveries::open(&file).unwrap());
        {
            let db = Database::create(&file).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut r = rec("future", None);
                r.v = FORMAT_VERSION + 1;
                let r = serde_json::to_vec(&r).unwrap();
                let s = serde_json::to_vec(&DeliveryStatus::accepted(1)).unwrap();
                txn.open_table(RECORDS)
                    .unwrap()
                    .insert(0, r.as_slice())
                    .unwrap();
                txn.open_table(STATUS)
                    .unwrap()
                    .insert(0, s.as_slice())
                    .unwrap();
                txn.open_table(LEGACY_IDS)
                    .unwrap()
                    .insert("future", 0)
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let err = EmbeddedDeliveries::open(&file).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(
            err.contains("future") && err.contains("format version 2"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn prune_removes_only_old_delivered_records() {
        let dir = TempDir::new("prune");
        let store = store_with(
            &dir,
            &[("old", None), ("new", None), ("dead", None), ("p", None)],
        )
        .await;
        let c = store.claim("erp", 10, 1_000, LEASE).await.unwrap();
        let by = |id: &str| c.iter().find(|c| c.delivery.record.id == id).unwrap();
        store
            .settle(by("old"), None, ok_answer(), 2_000)
            .await
            .unwrap();
        store
            .settle(by("new"), None, ok_answer(), 5_000)
            .await
            .unwrap();
        store
            .settle(by("dead"), None, Settle::Dead("x".into()), 2_000)
            .await
            .unwrap();
        store
            .settle(by("p"), None, Settle::RetryAt(9_000), 2_000)
            .await
            .unwrap();
        assert_eq!(store.prune_delivered(3_000).await.unwrap(), 1);
        assert!(store.get("old").await.unwrap().is_none());
        assert!(!store.requeue("old", None, 6_000).await.unwrap());
        for id in ["new", "dead", "p"] {
            assert!(store.get(id).await.unwrap().is_some(), "{id} pruned");
        }
        assert_eq!(store.prune_delivered(3_000).await.unwrap(), 0);
        drop(store);
        let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
        assert!(store.get("old").await.unwrap().is_none());
        assert!(store.get("new").await.unwrap().is_some());
    }

    fn inventory(id: &str, sku: &str, sequence: u64) -> DeliveryRecord {
        let mut r = rec(id, Some(sku));
        r.sequence = Some(sequence);
        r.destination.operation = Some("inventory".into());
        r
    }

    #[tokio::test]
    async fn a_superseded_delivery_is_final_not_dead_and_frees_its_key() {
        let dir = TempDir::new("superseded");
        let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
        for (id, seq) in [("s1", 1), ("s2", 2), ("s3", 3)] {
            store
                .enqueue(inventory(id, "sku-1", seq), ROOMY, 1_000)
                .await
                .unwrap();
        }
        let size = encode_record(&mut inventory("s1", "sku-1", 1))
            .unwrap()
            .len() as u64;
        let c = store.claim("erp", 10, 1_000, LEASE).await.unwrap();
        assert_eq!(ids(&c), ["s1"]);
        store
            .settle(&c[0], attempt(1_000), Settle::Superseded(3), 1_001)
            .await
            .unwrap();
        let s1 = store.get("s1").await.unwrap().unwrap();
        assert_eq!(s1.status.state, DeliveryState::Superseded);
        assert_eq!(
            (s1.status.attempt_count, s1.status.attempts.len()),
            (0, 0),
            "superseding is not an attempt"
        );
        assert_eq!(
            s1.status.reason.as_deref(),
            Some("superseded by sequence 3")
        );
        assert_eq!(s1.status.delivered_at_ms, None);
        assert_eq!(s1.record.sequence, Some(1));
        assert_eq!(
            s1.record.destination.operation.as_deref(),
            Some("inventory")
        );
        // Its key is free at once, and it is neither depth nor a dead letter.
        let c = store.claim("erp", 10, 1_001, LEASE).await.unwrap();
        assert_eq!(ids(&c), ["s2"]);
        let stats = store.stats("erp").await.unwrap();
        assert_eq!((stats.depth, stats.dead, stats.bytes), (2, 0, 2 * size));
        assert!(stats.dead_by_channel.is_empty());
        let listed = |state| {
            let filter = Filter {
                state: Some(state),
                ..Filter::default()
            };
            let store = &store;
            async move {
                let found = store.list(&filter, None, 10).await.unwrap();
                found.into_iter().map(|d| d.record.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(listed(DeliveryState::Superseded).await, ["s1"]);
        assert!(listed(DeliveryState::Dead).await.is_empty());
        // It no longer counts against max_entries.
        let three = QueueLimits {
            max_entries: 3,
            max_bytes: 1 << 20,
        };
        store
            .enqueue(inventory("s4", "sku-1", 4), three, 1_002)
            .await
            .unwrap();
        drop(store);

        // The same after a reopen (s2's claim is gone with the process).
        let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
        assert_eq!(state(&store, "s1").await, DeliveryState::Superseded);
        let stats = store.stats("erp").await.unwrap();
        assert_eq!((stats.depth, stats.dead), (3, 0));
        let c = store.claim("erp", 10, 2_000, LEASE).await.unwrap();
        assert_eq!(ids(&c), ["s2"]);
        store
            .settle(&c[0], None, Settle::Superseded(4), 2_001)
            .await
            .unwrap();
        // An operator may replay it: pending again, at the head of its key.
        assert!(store.requeue("s2", None, 2_002).await.unwrap());
        let s2 = store.get("s2").await.unwrap().unwrap();
        assert_eq!(
            (s2.status.state, s2.status.replays),
            (DeliveryState::Pending, 1)
        );
        assert_eq!(s2.status.reason, None);
        let c = store.claim("erp", 10, 2_002, LEASE).await.unwrap();
        assert_eq!(ids(&c), ["s2"]);
        // Pruned like a delivered one, by when it was superseded.
        assert_eq!(store.prune_delivered(1_001).await.unwrap(), 0);
        assert_eq!(store.prune_delivered(1_002).await.unwrap(), 1);
        assert!(store.get("s1").await.unwrap().is_none());
        assert!(store.get("s2").await.unwrap().is_some(), "pending: kept");
    }

    #[tokio::test]
    async fn the_sequence_register_keeps_the_highest_and_survives_a_reopen() {
        let dir = TempDir::new("lww");
        {
            let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
            assert_eq!(store.latest_sequence("erp", "sku-1").await.unwrap(), None);
            assert!(store.note_sequence("erp", "sku-1", 5).await.unwrap());
            assert!(
                !store.note_sequence("erp", "sku-1", 4).await.unwrap(),
                "an older one is refused"
            );
            assert_eq!(
                store.latest_sequence("erp", "sku-1").await.unwrap(),
                Some(5)
            );
            assert!(
                store.note_sequence("erp", "sku-1", 5).await.unwrap(),
                "an equal one is a retry"
            );
            assert!(store.note_sequence("erp", "sku-1", 9).await.unwrap());
            // per ordering key and per queue
            assert!(store.note_sequence("erp", "sku-2", 1).await.unwrap());
            assert!(store.note_sequence("wms", "sku-1", 0).await.unwrap());
            assert_eq!(
                store.latest_sequence("wms", "sku-1").await.unwrap(),
                Some(0)
            );
            // the whole u64 range
            assert!(store.note_sequence("erp", "big", u64::MAX).await.unwrap());
            assert!(
                !store
                    .note_sequence("erp", "big", u64::MAX - 1)
                    .await
                    .unwrap()
            );
        }
        let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
        for (queue, key, want) in [
            ("erp", "sku-1", 9),
            ("erp", "sku-2", 1),
            ("wms", "sku-1", 0),
            ("erp", "big", u64::MAX),
        ] {
            assert_eq!(
                store.latest_sequence(queue, key).await.unwrap(),
                Some(want),
                "{queue} {key}"
            );
        }
        assert!(!store.note_sequence("erp", "sku-1", 8).await.unwrap());
    }

    #[test]
    fn concurrent_notes_keep_the_highest() {
        let runtime = runtime(4);
        let dir = TempDir::new("lww-race");
        let store = Arc::new(EmbeddedDeliveries::open(&dir.file()).unwrap());
        let answers = runtime.block_on(async {
            // every order of arrival: 37 is coprime with 64, so this visits 0..64 shuffled
            let tasks: Vec<_> = (0..64u64)
                .map(|i| {
                    let store = store.clone();
                    let seq = i * 37 % 64;
                    tokio::spawn(async move {
                        (seq, store.note_sequence("erp", "sku", seq).await.unwrap())
                    })
                })
                .collect();
            let mut answers = Vec::new();
            for t in tasks {
                answers.push(t.await.unwrap());
            }
            answers
        });
        let latest = runtime
            .block_on(store.latest_sequence("erp", "sku"))
            .unwrap();
        assert_eq!(latest, Some(63));
        assert!(answers.contains(&(63, true)), "{answers:?}");
    }

    #[tokio::test]
    async fn a_batch_is_stored_all_or_none_in_one_commit() {
        let dir = TempDir::new("batch");
        let synced = Arc::new(AtomicUsize::new(0));
        let seen = synced.clone();
        let hook: CommitHook = Arc::new(move |n| {
            seen.fetch_add(n, Ordering::Relaxed);
        });
        let store = EmbeddedDeliveries::open_with(&dir.file(), hook).unwrap();
        store.enqueue(rec("e0", None), ROOMY, 1_000).await.unwrap();
        let commits = store.commits();
        let batch = vec![
            rec("b1", Some("K")),
            rec("b2", Some("K")),
            rec_in("wms", "w1", None),
        ];
        store.enqueue_batch(batch, ROOMY, 1_000).await.unwrap();
        assert_eq!(store.commits(), commits + 1, "one transaction, one fsync");
        assert_eq!(synced.load(Ordering::Relaxed), 4, "each record counted");

        // erp holds 3: two more fit, three do not, so none of the three is stored.
        let five = QueueLimits {
            max_entries: 5,
            max_bytes: 1 << 20,
        };
        let over = vec![rec("c1", None), rec("c2", None), rec("c3", None)];
        let full = store.enqueue_batch(over, five, 1_000).await;
        assert!(
            matches!(
                full,
                Err(DeliveryError::Full {
                    what: "entries",
                    ..
                })
            ),
            "{full:?}"
        );
        // By bytes too: each fits alone, both together do not.
        let size = encode_record(&mut rec("c1", None)).unwrap().len() as u64;
        let room = QueueLimits {
            max_entries: 100,
            max_bytes: store.stats("erp").await.unwrap().bytes + size * 3 / 2,
        };
        let full = store
            .enqueue_batch(vec![rec("c1", None), rec("c2", None)], room, 1_000)
            .await;
        assert!(
            matches!(full, Err(DeliveryError::Full { what: "bytes", .. })),
            "{full:?}"
        );
        // An id stored already, or twice in the batch, refuses the whole batch.
        let dup = store
            .enqueue_batch(vec![rec("d1", None), rec("b1", None)], ROOMY, 1_000)
            .await;
        assert!(matches!(dup, Err(DeliveryError::Failed(_))), "{dup:?}");
        let twice = store
            .enqueue_batch(vec![rec("d1", None), rec("d1", None)], ROOMY, 1_000)
            .await;
        assert!(matches!(twice, Err(DeliveryError::Failed(_))), "{twice:?}");
        for id in ["c1", "c2", "c3", "d1"] {
            assert!(store.get(id).await.unwrap().is_none(), "{id} was stored");
        }
        assert_eq!(store.stats("erp").await.unwrap().depth, 3);
        store.enqueue_batch(Vec::new(), ROOMY, 1_000).await.unwrap();
        // What was refused is free for the retry.
        store
            .enqueue_batch(vec![rec("c1", None), rec("c2", None)], five, 1_000)
            .await
            .unwrap();
        drop(store);

        let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
        let c = store.claim("erp", 10, 1_000, LEASE).await.unwrap();
        assert_eq!(ids(&c), ["b1", "c1", "c2", "e0"], "b2 waits behind b1");
        assert_eq!(state(&store, "b2").await, DeliveryState::Pending);
        let w = store.claim("wms", 10, 1_000, LEASE).await.unwrap();
        assert_eq!(ids(&w), ["w1"]);
    }

    /// A file written before records had `sequence`/`operation` and before the register
    /// existed opens, reads, and gets the register.
    #[tokio::test]
    async fn a_file_of_the_previous_version_still_opens_and_reads() {
        let dir = TempDir::new("previous");
        let file = dir.file();
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        {
            let db = Database::create(&file).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let r = serde_json::json!({
                    "v": 1, "id": "old", "queue": "erp", "route": "orders",
                    "destination": {"upstream": "erp", "method": "POST", "path": "/erp/v1/orders"},
                    "body": "{}", "upstream_key": "k", "ordering_key": "K", "accepted_at_ms": 7
                });
                let r = serde_json::to_vec(&r).unwrap();
                let st = serde_json::to_vec(&DeliveryStatus::accepted(7)).unwrap();
                txn.open_table(RECORDS)
                    .unwrap()
                    .insert(0, r.as_slice())
                    .unwrap();
                txn.open_table(STATUS)
                    .unwrap()
                    .insert(0, st.as_slice())
                    .unwrap();
                txn.open_table(LEGACY_IDS)
                    .unwrap()
                    .insert("old", 0)
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let store = EmbeddedDeliveries::open(&file).unwrap();
        let old = store.get("old").await.unwrap().unwrap();
        assert_eq!(
            (old.record.sequence, old.record.destination.operation),
            (None, None)
        );
        assert_eq!(store.latest_sequence("erp", "K").await.unwrap(), None);
        assert!(store.note_sequence("erp", "K", 1).await.unwrap());
        let c = store.claim("erp", 10, 7, LEASE).await.unwrap();
        assert_eq!(ids(&c), ["old"]);
        drop(store);
        // Its id table, which nothing read, is gone; the id is still found by the index.
        let db = Database::open(&file).unwrap();
        let names: Vec<String> = db
            .begin_read()
            .unwrap()
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_owned())
            .collect();
        assert!(!names.iter().any(|n| n == "ids"), "{names:?}");
        drop(db);
        let store = EmbeddedDeliveries::open(&file).unwrap();
        assert!(store.get("old").await.unwrap().is_some());
    }

    /// A claim soon after the acceptance hands over the record kept in memory; it must be the
    /// delivery a read of the file gives, and the memory kept must stay within its bound and
    /// be given back by claims and purges.
    #[tokio::test]
    async fn a_kept_record_is_claimed_as_the_file_has_it_within_its_bound() {
        let dir = TempDir::new("fresh");
        let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
        let mut records = Vec::new();
        for (i, key) in [(1, Some("K")), (2, None), (3, None), (4, None)] {
            let mut r = rec_in("erp", &format!("f{i}"), key);
            r.body = format!("{{\"n\":{i},\"note\":\"\u{e9} \\\"q\\\"\"}}");
            r.original = Some(format!("<o n=\"{i}\"/>"));
            r.accepted_at_ms = 900 + i;
            records.push(r);
        }
        let size = |r: &DeliveryRecord| encode_record(&mut r.clone()).unwrap().len() as u64;
        // room for the first two only
        store.lock().fresh_max = size(&records[0]) + size(&records[1]);
        for r in &records {
            store.enqueue(r.clone(), ROOMY, 1_000).await.unwrap();
        }
        let kept = store.lock().fresh_bytes;
        assert_eq!(kept, size(&records[0]) + size(&records[1]));
        // f3 and f4 were not kept; purging f2 (kept, unclaimed) gives its room back
        assert!(store.purge("f2").await.unwrap());
        assert_eq!(store.lock().fresh_bytes, size(&records[0]));

        let claimed = store.claim("erp", 10, 1_000, LEASE).await.unwrap();
        assert_eq!(ids(&claimed), ["f1", "f3", "f4"]);
        assert_eq!(store.lock().fresh_bytes, 0);
        for c in &claimed {
            let r = records
                .iter()
                .find(|r| r.id == c.delivery.record.id)
                .unwrap();
            assert_eq!(&c.delivery.record, r);
            // what a read of the file gives, with the state of a leased delivery
            let read = store.get(&r.id).await.unwrap().unwrap();
            assert_eq!(c.delivery, read);
            assert_eq!(c.delivery.status.state, DeliveryState::InFlight);
            assert_eq!(c.delivery.status.next_attempt_at_ms, 1_000);
        }
        // a retry is read back from the file: the kept copy went with the first claim
        let f1 = claimed
            .iter()
            .find(|c| c.delivery.record.id == "f1")
            .unwrap();
        store
            .settle(f1, attempt(1_000), Settle::RetryAt(1_001), 1_000)
            .await
            .unwrap();
        let again = store.claim("erp", 10, 1_001, LEASE).await.unwrap();
        assert_eq!(ids(&again), ["f1"]);
        assert_eq!(again[0].delivery.record, records[0]);
        assert_eq!(again[0].delivery.status.attempt_count, 1);
    }

    /// Bodies travel outside the record's JSON, byte for byte, through a reopen; an envelope
    /// cut anywhere is an error, not a shorter body.
    #[tokio::test]
    async fn bodies_are_stored_apart_and_read_back_byte_for_byte() {
        let dir = TempDir::new("bodies");
        let mut r = rec("x1", Some("K"));
        r.body = "{\"note\":\"a \\\"quoted\\\" word, \u{e9}, \\u0000 and \\\\\"}".into();
        r.original = Some("<order id=\"x1\">\n\t\u{1f4e6}</order>".into());
        let mut empty = rec("x2", None);
        empty.body = String::new();
        empty.original = Some(String::new());
        {
            let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
            store.enqueue(r.clone(), ROOMY, 1_000).await.unwrap();
            store.enqueue(empty.clone(), ROOMY, 1_000).await.unwrap();
            assert_eq!(store.get("x1").await.unwrap().unwrap().record, r);
        }
        let store = EmbeddedDeliveries::open(&dir.file()).unwrap();
        assert_eq!(store.get("x1").await.unwrap().unwrap().record, r);
        assert_eq!(store.get("x2").await.unwrap().unwrap().record, empty);
        let c = store.claim("erp", 10, 1_000, LEASE).await.unwrap();
        assert_eq!(c[0].delivery.record, r);

        let bytes = encode_record(&mut r.clone()).unwrap();
        assert_eq!(bytes[0], ENVELOPE);
        assert_eq!(decode_record(&bytes).unwrap(), r);
        for end in 0..bytes.len() {
            assert!(decode_record(&bytes[..end]).is_err(), "cut at {end}");
        }
        let mut longer = bytes.clone();
        longer.push(b'x');
        assert!(decode_record(&longer).is_err());
    }
}
