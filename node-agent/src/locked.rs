//! Locking a `std::sync::Mutex` of plain bookkeeping (back-off, admitted
//! UIDs, caches, health beats, queued changes): [`Locked::locked`], in place
//! of `lock().unwrap()`.
//!
//! A poisoned lock means another thread panicked while holding it. Every
//! update of the maps behind these locks is a single insert, remove or field
//! write, so what they hold stays consistent, and one pod's panic must not
//! take every other pod's worker down with it: the guard is taken anyway, as
//! the probe manager, the volume tokens and the proxy's queue already do.
use std::sync::{Mutex, MutexGuard, PoisonError};

/// [`Mutex::lock`] that recovers from poisoning.
pub trait Locked<T> {
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_still_gives_its_data() {
        let counts = std::sync::Arc::new(Mutex::new(vec![1]));
        let held = counts.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.locked();
            panic!("a worker panics while holding the lock");
        })
        .join();
        assert!(counts.is_poisoned());
        counts.locked().push(2);
        assert_eq!(*counts.locked(), [1, 2]);
    }
}
