//! Answers from the store's writer thread to the async callers waiting for them, handed over
//! with one wake-up per caller's runtime thread and commit instead of one per caller.
//!
//! Waking a task from outside its runtime costs a system call (tokio's single-threaded
//! scheduler, the gateway's default, writes its `eventfd` on every such wake). A busy queue's
//! commit answers ~14 acceptances on a request worker and ~14 outcomes on the delivery worker:
//! sent one by one, that was ~3 writes an order from the writer (issue 13). Sent from a task
//! spawned on each caller's runtime, the wakes within it are local, and the group costs one.

use std::thread::ThreadId;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Where one caller waits for its answer.
pub(super) struct ReplyTo<T> {
    tx: oneshot::Sender<T>,
    /// The runtime the caller waits on, and the thread it asked from (a runtime's thread, for
    /// grouping; a work-stealing runtime may group less, never wrongly). Only for a caller that
    /// is a spawned task: its runtime is being driven while it waits, so a task spawned there
    /// runs. A future under `block_on` is no task, and `Handle::block_on` does not drive a
    /// single-threaded runtime's tasks: such callers are answered directly.
    home: Option<(ThreadId, Handle)>,
}

impl<T: Send + 'static> ReplyTo<T> {
    /// A reply slot for the calling task, and the receiver it awaits.
    pub(super) fn new() -> (Self, oneshot::Receiver<T>) {
        let (tx, rx) = oneshot::channel();
        let home = tokio::task::try_id()
            .and_then(|_| Handle::try_current().ok())
            .map(|h| (std::thread::current().id(), h));
        (ReplyTo { tx, home }, rx)
    }

    fn send(self, value: T) {
        // a caller that went away does not need its answer
        let _ = self.tx.send(value);
    }
}

/// Sends every answer. Those of callers on the same runtime thread, when more than one, are
/// sent by one task spawned there. Answers of callers outside any runtime go directly.
pub(super) fn send_all<T: Send + 'static>(replies: impl IntoIterator<Item = (ReplyTo<T>, T)>) {
    type Group<T> = (ThreadId, Handle, Vec<(ReplyTo<T>, T)>);
    let mut groups: Vec<Group<T>> = Vec::new();
    for (to, value) in replies {
        let Some((thread, handle)) = &to.home else {
            to.send(value);
            continue;
        };
        match groups.iter_mut().find(|g| g.0 == *thread) {
            Some(group) => group.2.push((to, value)),
            None => {
                let (thread, handle) = (*thread, handle.clone());
                groups.push((thread, handle, vec![(to, value)]));
            }
        }
    }
    for (_, handle, mut group) in groups {
        if group.len() == 1 {
            if let Some((to, value)) = group.pop() {
                to.send(value);
            }
            continue;
        }
        // A runtime that is shutting down drops the task, and with it the senders: its
        // callers, going away too, see the writer's answer lost, never a wrong one.
        handle.spawn(async move {
            for (to, value) in group {
                to.send(value);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_caller_gets_its_own_answer_on_one_runtime_or_another() {
        let a = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let b = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // slots made by tasks on runtime a (one thread) and on runtime b, under a `block_on`
        // (no task), and outside any runtime
        let on_a: Vec<_> = (0..5)
            .map(|_| a.block_on(async { tokio::spawn(async { ReplyTo::new() }).await.unwrap() }))
            .collect();
        let in_block_on = a.block_on(async { ReplyTo::new() });
        assert!(in_block_on.0.home.is_none(), "a block_on future is no task");
        let on_b: Vec<_> = (0..3)
            .map(|_| b.block_on(async { b.spawn(async { ReplyTo::new() }).await.unwrap() }))
            .collect();
        let outside = ReplyTo::new();
        assert!(outside.0.home.is_none());
        assert!(on_a.iter().all(|(to, _)| to.home.is_some()));

        let mut receivers = Vec::new();
        let mut replies = Vec::new();
        let all = on_a.into_iter().chain(on_b).chain([in_block_on, outside]);
        for (i, (to, rx)) in all.enumerate() {
            replies.push((to, i));
            receivers.push((i, rx));
        }
        // the answers are sent from this thread, which is no runtime's
        std::thread::spawn(move || send_all(replies))
            .join()
            .unwrap();
        for (i, rx) in receivers {
            let got = a.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(10), rx).await
            });
            assert_eq!(got.unwrap().unwrap(), i, "caller {i} got another's answer");
        }
    }
}
