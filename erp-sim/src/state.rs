//! The simulator's shared state: counters, misbehaviour settings, and the log and documents
//! they sit beside.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::SimOptions;
use crate::documents::DocumentStore;
use crate::lock::lock;
use crate::records::RequestLog;

/// How the simulator misbehaves for ERP and echo requests (never for `/_sim/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Sleep this long after reading the body, before answering.
    pub delay_ms: Option<u64>,
    /// Answer this status with code `SIMULATED_FAILURE` instead of handling the request.
    pub fail_status: Option<u16>,
    /// How many of the next requests fail (by `fail_status` or `drop_connection`); absent
    /// means all of them while set. Counts down; `0` means failing is over.
    pub fail_count: Option<u64>,
    /// Read the headers, then close the TCP connection without any response.
    #[serde(default)]
    pub drop_connection: bool,
}

impl Behaviour {
    /// Answer after `ms` milliseconds.
    pub fn delay_ms(ms: u64) -> Behaviour {
        Behaviour {
            delay_ms: Some(ms),
            ..Behaviour::default()
        }
    }

    /// Answer `status` to the next `count` requests (all of them when `None`).
    pub fn fail(status: u16, count: Option<u64>) -> Behaviour {
        Behaviour {
            fail_status: Some(status),
            fail_count: count,
            ..Behaviour::default()
        }
    }

    /// Drop the connection of the next `count` requests (all of them when `None`).
    pub fn drop_connection(count: Option<u64>) -> Behaviour {
        Behaviour {
            drop_connection: true,
            fail_count: count,
            ..Behaviour::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        match self.fail_status {
            Some(status) if !(400..=599).contains(&status) => Err(format!(
                "fail_status must be between 400 and 599, got {status}"
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "delay_ms": self.delay_ms,
            "fail_status": self.fail_status,
            "fail_count": self.fail_count,
            "drop_connection": self.drop_connection,
        })
    }
}

/// What to do with one request, decided when its headers arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Answer,
    Fail(StatusCode),
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) delay: Option<Duration>,
    pub(crate) action: Action,
}

/// A snapshot of the counters, as served by `GET /_sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    pub requests_started: u64,
    pub requests_completed: u64,
    pub connections_accepted: u64,
    /// Requests per path (at most 1024 distinct paths; the rest count under `(other)`).
    pub by_path: BTreeMap<String, u64>,
}

impl SimStats {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "requests_started": self.requests_started,
            "requests_completed": self.requests_completed,
            "connections_accepted": self.connections_accepted,
            "by_path": self.by_path,
        })
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    /// Bumped by reset, so a request in flight across it does not count as completed after it.
    epoch: AtomicU64,
    started: AtomicU64,
    completed: AtomicU64,
    connections: AtomicU64,
}

impl Counters {
    /// Counts a started request and returns the epoch it started in.
    pub(crate) fn start(&self) -> u64 {
        let epoch = self.epoch.load(Ordering::Acquire);
        self.started.fetch_add(1, Ordering::Relaxed);
        epoch
    }

    pub(crate) fn complete(&self, epoch: u64) {
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.completed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn accept(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    pub(crate) fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    fn reset(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.started.store(0, Ordering::Relaxed);
        self.completed.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
    }
}

pub(crate) struct Shared {
    pub(crate) options: SimOptions,
    pub(crate) counters: Counters,
    pub(crate) records: RequestLog,
    pub(crate) documents: DocumentStore,
    behaviour: Mutex<Behaviour>,
}

impl Shared {
    pub(crate) fn new(options: SimOptions) -> Shared {
        Shared {
            records: RequestLog::new(options.record_limit),
            documents: DocumentStore::new(options.document_limit),
            counters: Counters::default(),
            behaviour: Mutex::new(Behaviour::default()),
            options,
        }
    }

    /// Decides the fate of a request, consuming one of `fail_count` if it fails.
    pub(crate) fn plan(&self) -> Plan {
        let mut behaviour = lock(&self.behaviour);
        let delay = behaviour
            .delay_ms
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        let misbehaves = behaviour.drop_connection || behaviour.fail_status.is_some();
        let fails = misbehaves
            && match behaviour.fail_count.as_mut() {
                None => true,
                Some(0) => false,
                Some(left) => {
                    *left -= 1;
                    true
                }
            };
        let action = match (fails, behaviour.drop_connection, behaviour.fail_status) {
            (false, _, _) => Action::Answer,
            (true, true, _) => Action::Drop,
            (true, false, status) => Action::Fail(
                status
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            ),
        };
        Plan { delay, action }
    }

    pub(crate) fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.behaviour) = behaviour;
    }

    pub(crate) fn behaviour(&self) -> Behaviour {
        lock(&self.behaviour).clone()
    }

    pub(crate) fn stats(&self) -> SimStats {
        SimStats {
            requests_started: self.counters.started(),
            requests_completed: self.counters.completed(),
            connections_accepted: self.counters.connections(),
            by_path: self.records.by_path(),
        }
    }

    pub(crate) fn reset(&self) {
        self.counters.reset();
        self.records.clear();
        self.documents.clear();
        self.set_behaviour(Behaviour::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_with(behaviour: Behaviour) -> Shared {
        let shared = Shared::new(SimOptions::default());
        shared.set_behaviour(behaviour);
        shared
    }

    #[test]
    fn fail_count_counts_down_then_requests_are_answered() {
        let shared = shared_with(Behaviour::fail(503, Some(2)));
        let fail = Action::Fail(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shared.plan().action, fail);
        assert_eq!(shared.plan().action, fail);
        assert_eq!(shared.plan().action, Action::Answer);
        assert_eq!(shared.behaviour().fail_count, Some(0));
    }

    #[test]
    fn without_fail_count_every_request_fails() {
        let shared = shared_with(Behaviour::fail(500, None));
        for _ in 0..5 {
            assert_eq!(
                shared.plan().action,
                Action::Fail(StatusCode::INTERNAL_SERVER_ERROR)
            );
        }
    }

    #[test]
    fn drop_wins_over_fail_status_and_delay_is_kept() {
        let shared = shared_with(Behaviour {
            delay_ms: Some(7),
            fail_status: Some(500),
            fail_count: Some(1),
            drop_connection: true,
        });
        assert_eq!(
            shared.plan(),
            Plan {
                delay: Some(Duration::from_millis(7)),
                action: Action::Drop
            }
        );
        assert_eq!(shared.plan().action, Action::Answer);
    }

    #[test]
    fn behaviour_json_rejects_unknown_fields_and_bad_statuses() {
        let parsed: Behaviour = serde_json::from_str(r#"{"fail_status":503}"#).unwrap();
        assert_eq!(parsed, Behaviour::fail(503, None));
        assert!(serde_json::from_str::<Behaviour>(r#"{"fail_stat":503}"#).is_err());
        assert!(Behaviour::fail(200, None).validate().is_err());
        assert!(Behaviour::fail(599, None).validate().is_ok());
    }
}
