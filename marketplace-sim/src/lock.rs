//! Mutex locking for the simulator's shared state.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks without propagating poisoning: every critical section leaves its data consistent, so
/// a panic elsewhere must not take the simulator down.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
