//! The gateway's background threads that only serve its own requests (the delivery store's
//! writer, the access-log writer) give way to the request workers: on Linux they run under
//! `SCHED_BATCH`, so a background thread that wakes up does not preempt a worker in the middle
//! of a request.
//!
//! Why: with every thread of a busy gateway on the same cores, the store's writer woke ~1.2
//! times per queued order with the delivery runtime, and each wake-up preempted the request
//! worker (52k involuntary context switches in 10 s, issue 13); each switch costs its own time
//! and the worker's warm caches. Batch threads keep their fair share of CPU (the same weight,
//! the same nice value) and run at the next scheduling point instead: when a worker waits, or
//! at the end of its slice. On a machine with idle cores nothing changes.
//!
//! The delivery runtime is not one of them. It feeds the upstream, and as batch work it
//! delivered 1,235–1,375 orders a second while a saturated core accepted ~3,900–4,400: the
//! upstream idled while the backlog grew by 160,000–180,000 orders a minute. At the normal
//! policy it delivers 2,800–3,700 a second under the same load, for about as many acceptances
//! (issue 13, sixteenth part).

/// Marks the calling thread as background work. Best effort: where the system refuses (or is
/// not Linux), the thread stays as it was, which is only slower.
pub fn yield_to_request_workers() {
    #[cfg(target_os = "linux")]
    {
        // Linux applies the policy of pid 0 to the calling thread only.
        let param = uapi::c::sched_param { sched_priority: 0 };
        if let Err(e) = uapi::sched_setscheduler(0, uapi::c::SCHED_BATCH, &param) {
            // said once as each background thread starts, so a sandbox that refuses it shows
            tracing::warn!(error = %e, "background thread keeps its scheduling policy (not SCHED_BATCH)");
        }
    }
}

/// Whether the calling thread runs as background work (`SCHED_BATCH`).
pub fn is_background() -> bool {
    #[cfg(target_os = "linux")]
    {
        uapi::sched_getscheduler(0).is_ok_and(|p| p == uapi::c::SCHED_BATCH)
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_marked_thread_is_batch_and_others_are_not() {
        let marked = std::thread::spawn(|| {
            yield_to_request_workers();
            is_background()
        });
        assert!(marked.join().unwrap(), "the thread is not SCHED_BATCH");
        // the policy is per thread: this one, and a fresh one, are untouched
        assert!(!is_background());
        assert!(!std::thread::spawn(is_background).join().unwrap());
    }
}
