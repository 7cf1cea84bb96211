//! The simulator's shared state: counters, faults, the request log, the documents and the
//! idempotency keys, and the switch that takes the listener down and up.

use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::behaviour::{Behaviour, Script};
use crate::counters::{Counters, SimStats};
use crate::documents::DocumentStore;
use crate::faults::{Faults, Transition};
use crate::idempotency::IdempotencyKeys;
use crate::options::SimOptions;
use crate::records::RequestLog;
use crate::switch::{Command, Switch};

pub(crate) struct Shared {
    pub(crate) options: SimOptions,
    pub(crate) counters: Counters,
    pub(crate) records: RequestLog,
    pub(crate) documents: DocumentStore,
    pub(crate) faults: Faults,
    pub(crate) keys: IdempotencyKeys,
    pub(crate) switch: Switch,
}

impl Shared {
    /// The state and the accept loop's end of its switch.
    pub(crate) fn new(
        options: SimOptions,
    ) -> (
        Shared,
        mpsc::UnboundedReceiver<Command>,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        let (switch, commands, listening) = Switch::new();
        let shared = Shared {
            records: RequestLog::new(options.record_limit),
            documents: DocumentStore::new(options.document_limit),
            keys: IdempotencyKeys::new(
                options.idempotency_key_limit,
                options.honour_idempotency_keys,
            ),
            counters: Counters::default(),
            faults: Faults::new(),
            switch,
            options,
        };
        (shared, commands, listening)
    }

    /// Puts a behaviour in effect. When it takes the listener down, the returned receiver
    /// fires once the listener is closed; connection `spare` (the one asking) is let finish
    /// its answer.
    pub(crate) fn set_behaviour(
        &self,
        behaviour: Behaviour,
        spare: Option<u64>,
    ) -> Option<oneshot::Receiver<()>> {
        let transition = self.faults.set_behaviour(behaviour, Instant::now());
        self.apply(transition, spare)
    }

    /// Starts a script; the receiver as for [`Shared::set_behaviour`].
    pub(crate) fn set_script(
        &self,
        script: Script,
        spare: Option<u64>,
    ) -> Option<oneshot::Receiver<()>> {
        let transition = self.faults.set_script(script, Instant::now());
        self.apply(transition, spare)
    }

    fn apply(&self, transition: Transition, spare: Option<u64>) -> Option<oneshot::Receiver<()>> {
        if let Some((at, generation)) = transition.next_phase {
            self.switch.send(Command::NextPhase { at, generation });
        }
        let until = transition.down_until?;
        let (done, closed) = oneshot::channel();
        self.switch
            .send(Command::Down {
                until: Some(until),
                spare,
                done: Some(done),
            })
            .then_some(closed)
    }

    /// What `GET /_sim/behaviour` shows: the behaviour in effect, the seed in use, the
    /// script's progress and whether the listener is up.
    pub(crate) fn behaviour_status(&self) -> Value {
        let mut status = self.faults.status_json(Instant::now());
        if let Value::Object(fields) = &mut status {
            fields.insert("listening".into(), json!(self.switch.listening()));
        }
        status
    }

    pub(crate) fn stats(&self) -> SimStats {
        self.counters.snapshot(self.records.by_path())
    }

    /// Clears records, documents, keys, counters, behaviour and script, and listens again if
    /// the listener was down.
    pub(crate) fn reset(&self) {
        self.counters.reset();
        self.records.clear();
        self.documents.clear();
        self.keys.clear();
        self.faults.reset();
        // Sent even when listening: a down may be on its way to the accept loop. Up while up
        // does nothing.
        self.switch.send(Command::Up { done: None });
    }
}
