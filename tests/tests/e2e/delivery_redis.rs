//! The Redis Streams delivery store against a real redis-server and a real 3-master Redis
//! Cluster: order per ordering key within one instance and across two instances sharing Redis
//! (never both holding one key), a dead instance's claim delivered again by the instance that
//! takes its partition over (same record, same upstream key), a dead letter parking its key
//! until requeued, purge unparking it, the queue limits, the admin reads, superseded
//! deliveries, the last-writer-wins register and batches. Time is injected
//! through `now_ms`; only the partition leases are Redis TTLs (milliseconds, kept short).

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures by design

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use policies::state::delivery::{
    AttemptRecord, ChannelDeadLetters, Claimed, DeliveryError, DeliveryRecord, DeliveryState,
    DeliveryStore, Destination, FORMAT_VERSION, Filter, QueueLimits, RedisDeliveries,
    RedisDeliveryOptions, Settle, StoredAnswer,
};
use policies::state::redis::{RedisSpec, RedisStore};
use policies::units::DurationSpec;
use tests::{RedisCluster, RedisServer};

const ROOMY: QueueLimits = QueueLimits {
    max_entries: 10_000,
    max_bytes: 100_000_000,
};

/// Where the stores connect.
struct Target {
    url: String,
    cluster: bool,
}

impl Target {
    fn single(r: &RedisServer) -> Target {
        Target {
            url: r.url(),
            cluster: false,
        }
    }

    fn cluster(c: &RedisCluster) -> Target {
        Target {
            url: c.url(),
            cluster: true,
        }
    }

    /// A store as the gateway instance `instance` would make it (its own connection, as a
    /// second process would have).
    fn store(&self, instance: &str, partitions: u32, partition_lease_ms: u64) -> RedisDeliveries {
        let spec = RedisSpec {
            url: self.url.clone(),
            cluster: self.cluster,
            timeout: DurationSpec::millis(3000),
            connect_timeout: DurationSpec::millis(3000),
            tls: None,
        };
        let redis = Arc::new(RedisStore::new(&self.url, &spec).unwrap());
        RedisDeliveries::new(
            redis,
            instance,
            RedisDeliveryOptions {
                partitions,
                partition_lease_ms,
            },
        )
    }
}

fn record(queue: &str, id: &str, key: Option<&str>, accepted_at_ms: u64) -> DeliveryRecord {
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
        upstream_key: format!("\"key-{id}\""),
        ordering_key: key.map(str::to_owned),
        traceparent: None,
        tracestate: None,
        request_id: format!("req-{id}"),
        accepted_at_ms,
        sequence: None,
    }
}

fn attempt(at_ms: u64, status: u16) -> Option<AttemptRecord> {
    Some(AttemptRecord {
        at_ms,
        duration_ms: 3,
        status: Some(status),
        error: None,
    })
}

fn ok() -> Settle {
    Settle::Delivered(StoredAnswer {
        status: 201,
        content_type: Some("application/json".into()),
        body: "{}".into(),
    })
}

fn ids(claimed: &[Claimed]) -> Vec<String> {
    let mut ids: Vec<String> = claimed
        .iter()
        .map(|c| c.delivery.record.id.clone())
        .collect();
    ids.sort();
    ids
}

async fn state_of(s: &RedisDeliveries, id: &str) -> DeliveryState {
    s.get(id).await.unwrap().unwrap().status.state
}

/// Per key, only the oldest not-final delivery is claimed; a retry holds its key; unordered
/// deliveries go at once.
async fn ordering_within_one_instance(t: &Target) {
    let q = "order1";
    let s = t.store("gw-a", 16, 5000);
    for (id, key) in [
        ("d01", Some("a")),
        ("d02", Some("b")),
        ("d03", Some("a")),
        ("d04", None),
        ("d05", Some("a")),
        ("d06", Some("b")),
    ] {
        s.enqueue(record(q, id, key, 1000), ROOMY, 1000)
            .await
            .unwrap();
    }
    let first = s.claim(q, 10, 1000, 30_000).await.unwrap();
    assert_eq!(
        ids(&first),
        ["d01", "d02", "d04"],
        "one per key, oldest first"
    );
    assert!(s.claim(q, 10, 1000, 30_000).await.unwrap().is_empty());
    assert_eq!(state_of(&s, "d01").await, DeliveryState::InFlight);
    assert_eq!(state_of(&s, "d03").await, DeliveryState::Pending);

    let by_id: HashMap<_, _> = first
        .into_iter()
        .map(|c| (c.delivery.record.id.clone(), c))
        .collect();
    s.settle(&by_id["d01"], attempt(1000, 201), ok(), 1001)
        .await
        .unwrap();
    s.settle(
        &by_id["d02"],
        attempt(1000, 503),
        Settle::RetryAt(5000),
        1001,
    )
    .await
    .unwrap();
    s.settle(&by_id["d04"], attempt(1000, 201), ok(), 1001)
        .await
        .unwrap();
    // settling twice with one claim: the claim is gone
    assert!(matches!(
        s.settle(&by_id["d01"], None, ok(), 1002).await,
        Err(DeliveryError::LeaseLost(_))
    ));

    // a's next is d03; b waits for its retry at 5000, and d06 behind it must not go first
    let second = s.claim(q, 10, 1002, 30_000).await.unwrap();
    assert_eq!(ids(&second), ["d03"]);
    assert_eq!(s.next_due(q).await.unwrap(), Some(5000));
    let b_again = s.claim(q, 10, 5000, 30_000).await.unwrap();
    assert_eq!(ids(&b_again), ["d02"]);
    assert_eq!(b_again[0].delivery.status.attempt_count, 1);
    assert_eq!(b_again[0].delivery.status.attempts[0].status, Some(503));

    s.settle(&second[0], attempt(1002, 201), ok(), 5001)
        .await
        .unwrap();
    s.settle(&b_again[0], attempt(5000, 201), ok(), 5001)
        .await
        .unwrap();
    let third = s.claim(q, 10, 5001, 30_000).await.unwrap();
    assert_eq!(ids(&third), ["d05", "d06"]);

    let d01 = s.get("d01").await.unwrap().unwrap();
    assert_eq!(d01.status.state, DeliveryState::Delivered);
    assert_eq!(d01.status.delivered_at_ms, Some(1001));
    assert_eq!(d01.status.answer.as_ref().map(|a| a.status), Some(201));
    assert_eq!(d01.record, record(q, "d01", Some("a"), 1000));
}

/// Two instances on one Redis, partitions changing hands every round: no key is ever held by
/// both, and every key is delivered in acceptance order.
async fn two_instances_never_share_a_key(t: &Target) {
    let q = "order2";
    let lease = 150;
    let stores = [t.store("gw-a", 4, lease), t.store("gw-b", 4, lease)];
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let mut expected: HashMap<&str, Vec<String>> = HashMap::new();
    for i in 0..30 {
        let id = format!("e{i:03}");
        let key = keys[i % keys.len()];
        stores[i % 2]
            .enqueue(record(q, &id, Some(key), 1000 + i as u64), ROOMY, 1000)
            .await
            .unwrap();
        expected.entry(key).or_default().push(id);
    }
    let mut held: HashMap<String, (usize, Claimed)> = HashMap::new();
    let mut delivered: HashMap<String, Vec<String>> = HashMap::new();
    let mut claimed_by = [0usize; 2];
    let mut now = 2000;
    for round in 0..400 {
        if delivered.values().map(Vec::len).sum::<usize>() == 30 {
            break;
        }
        now += 1;
        let who = round % 2;
        for c in stores[who].claim(q, 3, now, 1_000_000).await.unwrap() {
            let key = c.delivery.record.ordering_key.clone().unwrap();
            assert!(
                !held.contains_key(&key),
                "{key} claimed by instance {who} while instance {} holds it",
                held[&key].0
            );
            claimed_by[who] += 1;
            held.insert(key, (who, c));
        }
        // settle one held key per round (by whichever instance claimed it)
        if let Some(key) = held.keys().min().cloned() {
            let (owner, c) = held.remove(&key).unwrap();
            stores[owner]
                .settle(&c, attempt(now, 201), ok(), now)
                .await
                .unwrap();
            delivered.entry(key).or_default().push(c.delivery.record.id);
        }
        if round % 3 == 2 {
            // the partitions' holder stops polling: the other instance takes them over
            tokio::time::sleep(Duration::from_millis(lease + 50)).await;
        }
    }
    for key in keys {
        assert_eq!(delivered[key], expected[key], "order of {key}");
    }
    assert!(
        claimed_by[0] > 0 && claimed_by[1] > 0,
        "both instances delivered: {claimed_by:?}"
    );
}

/// Instance A claims and dies; B takes its partition over once A's partition lease runs out,
/// and delivers A's delivery again once its claim's lease ran out: same record, same key.
async fn a_dead_instance_is_taken_over(t: &Target) {
    let q = "takeover";
    let a = t.store("gw-a", 2, 200);
    let b = t.store("gw-b", 2, 200);
    a.enqueue(record(q, "t1", Some("k"), 1000), ROOMY, 1000)
        .await
        .unwrap();
    b.enqueue(record(q, "t2", Some("k"), 1001), ROOMY, 1001)
        .await
        .unwrap();
    let by_a = a.claim(q, 10, 1000, 5000).await.unwrap();
    assert_eq!(ids(&by_a), ["t1"]);
    drop(a); // dies without settling

    // A's partition lease still runs: B gets nothing
    assert!(b.claim(q, 10, 1500, 5000).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // B holds the partition now, but A's claim runs until 6000: the key stays A's
    assert!(b.claim(q, 10, 3000, 5000).await.unwrap().is_empty());
    assert_eq!(b.next_due(q).await.unwrap(), Some(6000));

    let by_b = b.claim(q, 10, 6000, 5000).await.unwrap();
    assert_eq!(
        ids(&by_b),
        ["t1"],
        "the dead instance's delivery, not the next one"
    );
    assert_eq!(by_b[0].delivery.record, by_a[0].delivery.record);
    assert_eq!(by_b[0].delivery.record.upstream_key, "\"key-t1\"");
    // A's old claim is worthless now
    assert!(matches!(
        b.settle(&by_a[0], None, ok(), 6001).await,
        Err(DeliveryError::LeaseLost(_))
    ));
    b.settle(&by_b[0], attempt(6000, 201), ok(), 6001)
        .await
        .unwrap();
    assert_eq!(ids(&b.claim(q, 10, 6002, 5000).await.unwrap()), ["t2"]);
}

/// A dead letter parks its key (the later ones are blocked) until requeued; purge unparks too.
async fn dead_parks_its_key(t: &Target) {
    let q = "dead";
    let s = t.store("gw-a", 8, 5000);
    for (i, id) in ["p1", "p2", "p3"].iter().enumerate() {
        s.enqueue(record(q, id, Some("k"), 1000 + i as u64), ROOMY, 1000)
            .await
            .unwrap();
    }
    let c = s.claim(q, 10, 1000, 5000).await.unwrap();
    assert_eq!(ids(&c), ["p1"]);
    s.settle(&c[0], attempt(1000, 422), Settle::Dead("422".into()), 1001)
        .await
        .unwrap();
    assert!(
        s.claim(q, 10, 9000, 5000).await.unwrap().is_empty(),
        "parked"
    );
    assert_eq!(state_of(&s, "p1").await, DeliveryState::Dead);
    assert_eq!(state_of(&s, "p2").await, DeliveryState::Blocked);
    assert_eq!(state_of(&s, "p3").await, DeliveryState::Blocked);
    let stats = s.stats(q).await.unwrap();
    assert_eq!((stats.depth, stats.dead), (2, 1));
    assert_eq!(stats.oldest_pending_ms, Some(1001));
    let amazon = |dead, oldest_accepted_ms| ChannelDeadLetters {
        channel: Some("amazon".into()),
        dead,
        oldest_accepted_ms,
    };
    assert_eq!(stats.dead_by_channel, [amazon(1, 1000)]);
    let blocked = s
        .list(
            &Filter {
                state: Some(DeliveryState::Blocked),
                ..Filter::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        blocked
            .iter()
            .map(|d| d.record.id.as_str())
            .collect::<Vec<_>>(),
        ["p2", "p3"]
    );

    assert!(!s.requeue("p2", None, 9000).await.unwrap(), "not final");
    assert!(!s.purge("nope").await.unwrap());
    assert!(
        s.requeue("p1", Some("{\"fixed\":1}".into()), 9000)
            .await
            .unwrap()
    );
    assert_eq!(state_of(&s, "p2").await, DeliveryState::Pending);
    assert_eq!(s.stats(q).await.unwrap().dead_by_channel, [], "replayed");
    let again = s.claim(q, 10, 9000, 5000).await.unwrap();
    assert_eq!(ids(&again), ["p1"], "the requeued one first");
    assert_eq!(again[0].delivery.status.replays, 1);
    assert_eq!(again[0].delivery.record.body, "{\"fixed\":1}");
    assert!(!s.purge("p1").await.unwrap(), "in flight");
    s.settle(&again[0], attempt(9000, 201), ok(), 9001)
        .await
        .unwrap();
    let next = s.claim(q, 10, 9001, 5000).await.unwrap();
    assert_eq!(ids(&next), ["p2"], "then the later one");

    // p2 dies too; purging it lets p3 go
    s.settle(&next[0], None, Settle::Dead("gone".into()), 9002)
        .await
        .unwrap();
    assert_eq!(state_of(&s, "p3").await, DeliveryState::Blocked);
    assert_eq!(s.stats(q).await.unwrap().dead_by_channel, [amazon(1, 1001)]);
    assert!(s.purge("p2").await.unwrap());
    assert_eq!(s.stats(q).await.unwrap().dead_by_channel, [], "purged");
    assert!(s.get("p2").await.unwrap().is_none());
    assert_eq!(ids(&s.claim(q, 10, 9003, 5000).await.unwrap()), ["p3"]);

    // a delivered one replayed goes again, at the end of its key's line
    assert!(s.requeue("p1", None, 9004).await.unwrap());
    assert_eq!(state_of(&s, "p1").await, DeliveryState::Pending);
}

/// Past `max_entries` or `max_bytes`: `Full`; a delivered one frees its room.
async fn full_queues_refuse(t: &Target) {
    let q = "full";
    let s = t.store("gw-a", 4, 5000);
    let two = QueueLimits {
        max_entries: 2,
        max_bytes: 100_000,
    };
    s.enqueue(record(q, "f1", None, 1), two, 1).await.unwrap();
    s.enqueue(record(q, "f2", None, 2), two, 2).await.unwrap();
    let full = s.enqueue(record(q, "f3", None, 3), two, 3).await;
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
    assert!(s.get("f3").await.unwrap().is_none(), "not stored");
    let c = s.claim(q, 1, 10, 5000).await.unwrap();
    assert_eq!(c.len(), 1);
    s.settle(&c[0], attempt(10, 201), ok(), 11).await.unwrap();
    s.enqueue(record(q, "f3", None, 12), two, 12).await.unwrap();

    let bytes = s.stats(q).await.unwrap().bytes;
    assert!(bytes > 0);
    let tight = QueueLimits {
        max_entries: 100,
        max_bytes: bytes + 10,
    };
    let full = s.enqueue(record(q, "f4", None, 13), tight, 13).await;
    assert!(
        matches!(full, Err(DeliveryError::Full { what: "bytes", .. })),
        "{full:?}"
    );
    assert_eq!(s.stats(q).await.unwrap().bytes, bytes, "nothing reserved");
}

/// The admin reads: list pages by id across partitions and filters; next_due.
async fn admin_reads(t: &Target) {
    let q = "admin";
    let s = t.store("gw-a", 16, 5000);
    assert_eq!(s.next_due(q).await.unwrap(), None);
    let all: Vec<String> = (0..12).map(|i| format!("l{i:02}")).collect();
    for (i, id) in all.iter().enumerate() {
        s.enqueue(record(q, id, None, 100 + i as u64), ROOMY, 100)
            .await
            .unwrap();
    }
    assert_eq!(s.next_due(q).await.unwrap(), Some(100));
    let in_q = Filter {
        queue: Some(q.into()),
        ..Filter::default()
    };
    let page1 = s.list(&in_q, None, 5).await.unwrap();
    let page2 = s.list(&in_q, Some("l04"), 5).await.unwrap();
    let got: Vec<_> = page1
        .iter()
        .chain(&page2)
        .map(|d| d.record.id.clone())
        .collect();
    assert_eq!(got, all[..10]);
    let seen: HashSet<_> = s
        .list(&Filter::default(), None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.record.queue == q)
        .map(|d| d.record.id)
        .collect();
    assert_eq!(seen.len(), 12);
    let since = Filter {
        since_ms: Some(110),
        ..in_q.clone()
    };
    assert_eq!(s.list(&since, None, 100).await.unwrap().len(), 2);
}

/// The gauges count pending and dead deliveries and the oldest pending one without reading
/// every delivery; delivered ones are pruned after their time, dead and pending ones never.
async fn stats_and_prune(t: &Target) {
    let q = "gauges";
    let s = t.store("gw-a", 4, 5000);
    for (i, id) in ["g1", "g2", "g3", "g4"].iter().enumerate() {
        s.enqueue(record(q, id, None, 100 + i as u64), ROOMY, 100)
            .await
            .unwrap();
    }
    let claimed = s.claim(q, 2, 200, 5000).await.unwrap();
    assert_eq!(ids(&claimed), ["g1", "g2"], "oldest first");
    let by_id = |id: &str| claimed.iter().find(|c| c.delivery.record.id == id).unwrap();
    s.settle(by_id("g1"), attempt(200, 201), ok(), 300)
        .await
        .unwrap();
    s.settle(
        by_id("g2"),
        attempt(200, 422),
        Settle::Dead("422".into()),
        310,
    )
    .await
    .unwrap();
    let st = s.stats(q).await.unwrap();
    assert_eq!((st.depth, st.dead), (2, 1), "{st:?}");
    assert_eq!(
        st.oldest_pending_ms,
        Some(102),
        "g3 is the oldest not final"
    );

    assert_eq!(
        s.prune_delivered(300).await.unwrap(),
        0,
        "settled at 300: kept"
    );
    assert_eq!(s.prune_delivered(301).await.unwrap(), 1);
    assert!(s.get("g1").await.unwrap().is_none(), "pruned");
    assert_eq!(
        state_of(&s, "g2").await,
        DeliveryState::Dead,
        "dead letters stay"
    );
    assert_eq!(state_of(&s, "g3").await, DeliveryState::Pending);
    assert!(s.requeue("g2", None, 400).await.unwrap());
    let st = s.stats(q).await.unwrap();
    assert_eq!((st.depth, st.dead), (3, 0), "{st:?}");
    assert_eq!(st.oldest_pending_ms, Some(101), "g2 is pending again");
}

fn inventory(queue: &str, id: &str, sku: &str, sequence: u64, at: u64) -> DeliveryRecord {
    let mut r = record(queue, id, Some(sku), at);
    r.sequence = Some(sequence);
    r.destination.operation = Some("inventory".into());
    r
}

/// A superseded delivery is final, not an attempt and not a dead letter: its key is free at
/// once and its entry and bytes are given back; it is listed by its state, may be replayed,
/// and is pruned like a delivered one.
async fn superseded_frees_its_key(t: &Target) {
    let q = "lww1";
    let s = t.store("gw-a", 4, 5000);
    let two = QueueLimits {
        max_entries: 2,
        max_bytes: 1_000_000,
    };
    for (id, seq) in [("v1", 1), ("v2", 2)] {
        s.enqueue(inventory(q, id, "sku-1", seq, 100), two, 100)
            .await
            .unwrap();
    }
    let c = s.claim(q, 10, 100, 1000).await.unwrap();
    assert_eq!(ids(&c), ["v1"]);
    s.settle(&c[0], attempt(100, 200), Settle::Superseded(2), 101)
        .await
        .unwrap();
    let v1 = s.get("v1").await.unwrap().unwrap();
    assert_eq!(v1.status.state, DeliveryState::Superseded);
    assert_eq!(
        (v1.status.attempt_count, v1.status.attempts.len()),
        (0, 0),
        "not an attempt"
    );
    assert_eq!(
        v1.status.reason.as_deref(),
        Some("superseded by sequence 2")
    );
    assert_eq!(v1.record.sequence, Some(1));
    assert_eq!(
        v1.record.destination.operation.as_deref(),
        Some("inventory")
    );
    let c = s.claim(q, 10, 101, 1000).await.unwrap();
    assert_eq!(ids(&c), ["v2"], "the key is free at once");
    let st = s.stats(q).await.unwrap();
    assert_eq!((st.depth, st.dead), (1, 0), "{st:?}");
    assert!(st.dead_by_channel.is_empty(), "{st:?}");
    let v2_len = serde_json::to_string(&inventory(q, "v2", "sku-1", 2, 100))
        .unwrap()
        .len() as u64;
    assert_eq!(st.bytes, v2_len, "v1's bytes given back");
    // its entry was given back too: a second one fits in two
    s.enqueue(inventory(q, "v3", "sku-1", 3, 102), two, 102)
        .await
        .unwrap();
    let listed = |state| Filter {
        queue: Some(q.into()),
        state: Some(state),
        ..Filter::default()
    };
    let superseded = s
        .list(&listed(DeliveryState::Superseded), None, 10)
        .await
        .unwrap();
    assert_eq!(
        superseded
            .iter()
            .map(|d| d.record.id.as_str())
            .collect::<Vec<_>>(),
        ["v1"]
    );
    assert!(
        s.list(&listed(DeliveryState::Dead), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // an operator may replay one: pending again, counted again
    s.settle(&c[0], None, Settle::Superseded(3), 103)
        .await
        .unwrap();
    assert_eq!(s.stats(q).await.unwrap().depth, 1);
    assert!(s.requeue("v2", None, 104).await.unwrap());
    let v2 = s.get("v2").await.unwrap().unwrap();
    assert_eq!(
        (v2.status.state, v2.status.replays),
        (DeliveryState::Pending, 1)
    );
    assert_eq!(s.stats(q).await.unwrap().depth, 2);
    // pruned like a delivered one, by when it was superseded
    assert_eq!(s.prune_delivered(101).await.unwrap(), 0);
    assert_eq!(s.prune_delivered(102).await.unwrap(), 1);
    assert!(s.get("v1").await.unwrap().is_none());
    assert!(s.get("v2").await.unwrap().is_some(), "pending: kept");
}

/// The last-writer-wins register: shared by the instances, per queue and ordering key, equal
/// accepted, exact past 2^53, and atomic under concurrent notes.
async fn sequences_last_writer_wins(t: &Target) {
    let q = "lww2";
    let a = Arc::new(t.store("gw-a", 4, 5000));
    let b = Arc::new(t.store("gw-b", 4, 5000));
    assert_eq!(a.latest_sequence(q, "sku-1").await.unwrap(), None);
    assert!(a.note_sequence(q, "sku-1", 5).await.unwrap());
    assert!(
        !b.note_sequence(q, "sku-1", 4).await.unwrap(),
        "older, from the other instance"
    );
    assert!(
        b.note_sequence(q, "sku-1", 5).await.unwrap(),
        "equal: a retry"
    );
    assert!(b.note_sequence(q, "sku-1", 10).await.unwrap());
    assert!(!a.note_sequence(q, "sku-1", 9).await.unwrap());
    assert_eq!(a.latest_sequence(q, "sku-1").await.unwrap(), Some(10));
    // per ordering key and per queue
    assert_eq!(a.latest_sequence(q, "sku-2").await.unwrap(), None);
    assert!(a.note_sequence("lww3", "sku-1", 0).await.unwrap());
    assert_eq!(b.latest_sequence("lww3", "sku-1").await.unwrap(), Some(0));
    // past 2^53 a Lua number would round 2^53 + 1 down to 2^53 and call them equal
    let big = (1u64 << 53) + 1;
    assert!(a.note_sequence(q, "big", big).await.unwrap());
    assert!(!a.note_sequence(q, "big", big - 1).await.unwrap());
    assert!(a.note_sequence(q, "big", u64::MAX).await.unwrap());
    assert_eq!(b.latest_sequence(q, "big").await.unwrap(), Some(u64::MAX));
    // both instances at once, every order of arrival (23 is coprime with 40)
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40u64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let seq = i * 23 % 40;
        tasks.spawn(async move { (seq, store.note_sequence(q, "race", seq).await.unwrap()) });
    }
    let mut answers = Vec::new();
    while let Some(done) = tasks.join_next().await {
        answers.push(done.unwrap());
    }
    assert!(answers.contains(&(39, true)), "{answers:?}");
    assert_eq!(a.latest_sequence(q, "race").await.unwrap(), Some(39));
}

/// A batch is stored in order; the first refusal stops it with the ones before it kept, and a
/// retry of the whole batch stores only the missing ones (an id stored already is a no-op).
async fn batches_in_order(t: &Target) {
    let q = "batch";
    let s = t.store("gw-a", 4, 5000);
    s.enqueue_batch(Vec::new(), ROOMY, 100).await.unwrap();
    let event = vec![
        record(q, "x1", Some("K"), 100),
        record(q, "x2", Some("K"), 100),
        record(q, "x3", None, 100),
    ];
    s.enqueue_batch(event, ROOMY, 100).await.unwrap();
    let c = s.claim(q, 10, 100, 1000).await.unwrap();
    assert_eq!(ids(&c), ["x1", "x3"], "x2 waits behind x1");
    let four = QueueLimits {
        max_entries: 4,
        max_bytes: 1_000_000,
    };
    let event = || vec![record(q, "y1", None, 100), record(q, "y2", None, 100)];
    let full = s.enqueue_batch(event(), four, 100).await;
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
    assert!(s.get("y1").await.unwrap().is_some(), "the one before kept");
    assert!(s.get("y2").await.unwrap().is_none());
    for claimed in &c {
        s.settle(claimed, attempt(100, 201), ok(), 101)
            .await
            .unwrap();
    }
    s.enqueue_batch(event(), four, 101).await.unwrap();
    let st = s.stats(q).await.unwrap();
    assert_eq!(st.depth, 3, "x2, y1 once, y2: {st:?}");
    let c = s.claim(q, 10, 101, 1000).await.unwrap();
    assert_eq!(ids(&c), ["x2", "y1", "y2"]);
}

async fn all_scenarios(t: &Target) {
    ordering_within_one_instance(t).await;
    two_instances_never_share_a_key(t).await;
    a_dead_instance_is_taken_over(t).await;
    dead_parks_its_key(t).await;
    full_queues_refuse(t).await;
    admin_reads(t).await;
    stats_and_prune(t).await;
    superseded_frees_its_key(t).await;
    sequences_last_writer_wins(t).await;
    batches_in_order(t).await;
}

#[tokio::test]
async fn order_per_key_within_one_instance() {
    let r = RedisServer::start().unwrap();
    ordering_within_one_instance(&Target::single(&r)).await;
}

#[tokio::test]
async fn two_instances_never_hold_one_key_and_keep_its_order() {
    let r = RedisServer::start().unwrap();
    two_instances_never_share_a_key(&Target::single(&r)).await;
}

#[tokio::test]
async fn a_dead_instances_claim_is_delivered_by_the_next_one() {
    let r = RedisServer::start().unwrap();
    a_dead_instance_is_taken_over(&Target::single(&r)).await;
}

#[tokio::test]
async fn a_dead_letter_parks_its_key_until_requeued_or_purged() {
    let r = RedisServer::start().unwrap();
    dead_parks_its_key(&Target::single(&r)).await;
}

#[tokio::test]
async fn a_full_queue_refuses() {
    let r = RedisServer::start().unwrap();
    full_queues_refuse(&Target::single(&r)).await;
}

#[tokio::test]
async fn admin_reads_page_and_filter() {
    let r = RedisServer::start().unwrap();
    admin_reads(&Target::single(&r)).await;
}

#[tokio::test]
async fn gauges_and_pruning() {
    let r = RedisServer::start().unwrap();
    stats_and_prune(&Target::single(&r)).await;
}

#[tokio::test]
async fn a_superseded_delivery_frees_its_key_and_is_no_dead_letter() {
    let r = RedisServer::start().unwrap();
    superseded_frees_its_key(&Target::single(&r)).await;
}

#[tokio::test]
async fn the_sequence_register_keeps_the_highest() {
    let r = RedisServer::start().unwrap();
    sequences_last_writer_wins(&Target::single(&r)).await;
}

#[tokio::test]
async fn a_batch_is_stored_in_order_and_a_retry_completes_it() {
    let r = RedisServer::start().unwrap();
    batches_in_order(&Target::single(&r)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_runs_on_a_three_master_cluster() {
    let c = RedisCluster::start().unwrap();
    all_scenarios(&Target::cluster(&c)).await;
}
