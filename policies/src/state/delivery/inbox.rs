//! The hand-over from the callers of a store to its writer thread: a queue under a mutex whose
//! senders wake the writer only when it waits for what they bring (its first request, or the
//! request that fills a group commit's window), not on every hand-over as a channel does.
//!
//! A busy queue's writer used to be woken once per request while a window was open: ~14
//! context switches a commit on the writer's side, and a `futex` wake-up on every sender's
//! (issue 13). Now a window is one timed wait, cut short only by the request that fills it.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Requests for one consumer thread, from any number of senders.
pub(super) struct Inbox<T> {
    state: Mutex<State<T>>,
    /// Signalled when the consumer's wait is over: enough requests, or closed.
    ready: Condvar,
}

struct State<T> {
    queue: VecDeque<T>,
    /// How many queued requests end the consumer's wait; 0 while it does not wait.
    wanted: usize,
    closed: bool,
}

/// Why [`Inbox::take`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taken {
    /// It took what was there (possibly nothing, when the deadline came first).
    Some,
    /// The inbox is closed and empty: nothing more will come.
    Closed,
}

impl<T> Inbox<T> {
    pub(super) fn new() -> Self {
        Inbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                wanted: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every step under the lock leaves the queue whole; a panicking holder loses nothing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` for the consumer, or gives it back when the inbox is closed.
    pub(super) fn send(&self, item: T) -> Result<(), T> {
        let mut state = self.lock();
        if state.closed {
            return Err(item);
        }
        state.queue.push_back(item);
        if state.wanted != 0 && state.queue.len() >= state.wanted {
            state.wanted = 0;
            drop(state);
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Closes the inbox: later sends fail, and the consumer takes what was queued, then
    /// [`Taken::Closed`]. With `drop_queued`, what was queued is dropped instead (the consumer
    /// is gone, and dropping a request is how its sender learns it).
    pub(super) fn close(&self, drop_queued: bool) {
        let dropped = {
            let mut state = self.lock();
            state.closed = true;
            state.wanted = 0;
            if drop_queued {
                std::mem::take(&mut state.queue)
            } else {
                VecDeque::new()
            }
        };
        self.ready.notify_one();
        drop(dropped);
    }

    /// Moves queued requests into `out`, up to `cap` in all, once at least `want` are in it
    /// (counting what `out` already holds), the `deadline` has passed, or the inbox is closed.
    /// Without a deadline it waits as long as it takes. Senders wake it only when the wait is
    /// over, so a window of many requests costs one wake-up.
    pub(super) fn take(
        &self,
        out: &mut Vec<T>,
        want: usize,
        cap: usize,
        deadline: Option<Instant>,
    ) -> Taken {
        let mut state = self.lock();
        loop {
            let have = out.len() + state.queue.len();
            let want = want.min(cap);
            if have >= want || state.closed {
                break;
            }
            state.wanted = want - out.len();
            state = match deadline {
                None => self
                    .ready
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.ready
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        state.wanted = 0;
        let n = state.queue.len().min(cap.saturating_sub(out.len()));
        out.extend(state.queue.drain(..n));
        if out.is_empty() && state.closed && state.queue.is_empty() {
            Taken::Closed
        } else {
            Taken::Some
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_wait_ends_when_the_wanted_count_is_queued_not_before() {
        let inbox = Arc::new(Inbox::new());
        let done = Arc::new(AtomicBool::new(false));
        let consumer = {
            let (inbox, done) = (inbox.clone(), done.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let taken = inbox.take(&mut out, 3, 10, None);
                done.store(true, Ordering::SeqCst);
                (taken, out)
            })
        };
        inbox.send(1).unwrap();
        inbox.send(2).unwrap();
        // two of three: the consumer still waits (it has no deadline to end it)
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !done.load(Ordering::SeqCst),
            "woke before the third request"
        );
        inbox.send(3).unwrap();
        let (taken, out) = consumer.join().unwrap();
        assert_eq!(taken, Taken::Some);
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn a_deadline_ends_the_wait_with_what_came_and_the_cap_leaves_the_rest() {
        let inbox = Inbox::new();
        for i in 0..5 {
            inbox.send(i).unwrap();
        }
        let mut out = vec![100];
        // a deadline already past: no wait, and at most 3 in all
        let taken = inbox.take(&mut out, 10, 3, Some(Instant::now()));
        assert_eq!(taken, Taken::Some);
        assert_eq!(out, vec![100, 0, 1]);
        let mut rest = Vec::new();
        assert_eq!(inbox.take(&mut rest, 1, 10, None), Taken::Some);
        assert_eq!(rest, vec![2, 3, 4]);
        let mut none = Vec::new();
        let before = Instant::now();
        let deadline = before + Duration::from_millis(20);
        assert_eq!(inbox.take(&mut none, 1, 10, Some(deadline)), Taken::Some);
        assert!(none.is_empty());
        assert!(Instant::now() >= deadline, "returned before its deadline");
    }

    #[test]
    fn closing_hands_over_what_was_queued_then_refuses() {
        let inbox = Inbox::new();
        inbox.send("a").unwrap();
        inbox.close(false);
        assert_eq!(inbox.send("b"), Err("b"));
        let mut out = Vec::new();
        assert_eq!(inbox.take(&mut out, 5, 10, None), Taken::Some);
        assert_eq!(out, vec!["a"]);
        out.clear();
        assert_eq!(inbox.take(&mut out, 1, 10, None), Taken::Closed);
    }

    #[test]
    fn closing_wakes_a_waiting_consumer_and_can_drop_what_was_queued() {
        let inbox = Arc::new(Inbox::new());
        let consumer = {
            let inbox = inbox.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                inbox.take(&mut out, 2, 10, None)
            })
        };
        // the dropped request's owner sees it dropped (here: its Arc count falls back)
        let request = Arc::new(());
        inbox.send(request.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        inbox.close(true);
        assert_eq!(consumer.join().unwrap(), Taken::Closed);
        assert_eq!(Arc::strong_count(&request), 1);
    }
}
