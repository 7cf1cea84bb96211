//! The commands that reach the accept loop from the handlers and the API: take the listener
//! down and bring it up, and wake up when a script's next phase is due.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

pub(crate) enum Command {
    /// Close the listening socket and every open connection (but `spare`, which finishes its
    /// current exchange first), until `until` or, when `None`, until `Up`.
    Down {
        until: Option<Instant>,
        spare: Option<u64>,
        done: Option<oneshot::Sender<()>>,
    },
    /// Listen again on the same address.
    Up {
        done: Option<oneshot::Sender<std::io::Result<()>>>,
    },
    /// Advance the script of this generation at that time.
    NextPhase { at: Instant, generation: u64 },
}

/// The sending side, shared by everything that changes the listener.
pub(crate) struct Switch {
    commands: mpsc::UnboundedSender<Command>,
    listening: Arc<AtomicBool>,
}

impl Switch {
    /// The switch, the receiving end for the accept loop and the flag it keeps up to date.
    pub(crate) fn new() -> (Switch, mpsc::UnboundedReceiver<Command>, Arc<AtomicBool>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let listening = Arc::new(AtomicBool::new(true));
        let switch = Switch {
            commands,
            listening: Arc::clone(&listening),
        };
        (switch, receiver, listening)
    }

    /// Sends a command; false when the accept loop has ended.
    pub(crate) fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    pub(crate) fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }
}
