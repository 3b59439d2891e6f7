//! CrashLoopBackOff as the kubelet keeps it (`flowcontrol.Backoff` with
//! 10 s initial and 300 s maximum): the first restart after an exit is
//! immediate, each further one waits twice as long, up to 5 minutes; an entry
//! whose last restart is more than twice the maximum (10 minutes) old starts
//! over, so a container that ran for 10 minutes restarts at once again.
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// The kubelet's initial container back-off.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// The kubelet's `MaxContainerBackOff`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// One container of one pod instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackoffKey {
    pub pod_uid: String,
    pub container: String,
}

impl BackoffKey {
    pub fn new(pod_uid: impl Into<String>, container: impl Into<String>) -> Self {
        Self {
            pod_uid: pod_uid.into(),
            container: container.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    backoff: Duration,
    last_update: SystemTime,
}

/// Back-off per container; pure (the caller passes the times).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<BackoffKey, Entry>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(INITIAL_BACKOFF, MAX_BACKOFF)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    /// How long a container that exited at `finished_at` must still wait at
    /// `now` before it may restart; `None` when it may restart now.
    pub fn remaining(
        &self,
        key: &BackoffKey,
        finished_at: SystemTime,
        now: SystemTime,
    ) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        if self.expired(entry, finished_at) {
            return None;
        }
        let since_exit = now.duration_since(finished_at).unwrap_or(Duration::ZERO);
        entry
            .backoff
            .checked_sub(since_exit)
            .filter(|left| !left.is_zero())
    }

    /// Records a restart of a container that exited at `finished_at`
    /// (the kubelet's `Next`): the wait before the following one doubles.
    pub fn record_restart(&mut self, key: BackoffKey, finished_at: SystemTime) {
        let next = match self.entries.get(&key) {
            Some(entry) if !self.expired(entry, finished_at) => (entry.backoff * 2).min(self.max),
            _ => self.initial,
        };
        self.entries.insert(
            key,
            Entry {
                backoff: next,
                last_update: finished_at,
            },
        );
    }

    /// The current wait of a container, if it has restarted before.
    pub fn current(&self, key: &BackoffKey) -> Option<Duration> {
        self.entries.get(key).map(|e| e.backoff)
    }

    /// Forgets every container of a pod (the pod is gone).
    pub fn forget_pod(&mut self, pod_uid: &str) {
        self.entries.retain(|k, _| k.pod_uid != pod_uid);
    }

    /// Drops entries that would start over anyway (the kubelet's GC).
    pub fn gc(&mut self, now: SystemTime) {
        let horizon = self.max * 2;
        self.entries.retain(|_, e| {
            now.duration_since(e.last_update)
                .map_or(true, |age| age <= horizon)
        });
    }

    fn expired(&self, entry: &Entry, event: SystemTime) -> bool {
        event
            .duration_since(entry.last_update)
            .is_ok_and(|age| age > self.max * 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn key() -> BackoffKey {
        BackoffKey::new("uid-1", "app")
    }

    #[test]
    fn first_exit_restarts_at_once() {
        let b = Backoff::default();
        assert_eq!(b.remaining(&key(), t(0), t(0)), None);
    }

    #[test]
    fn waits_double_from_10s_to_300s() {
        let mut b = Backoff::default();
        let mut waits = Vec::new();
        // Crashes a second after each restart.
        for clock in 0..8 {
            b.record_restart(key(), t(clock));
            waits.push(b.current(&key()).unwrap().as_secs());
        }
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn remaining_counts_from_the_exit() {
        let mut b = Backoff::default();
        b.record_restart(key(), t(0)); // first crash, restarted at once; wait now 10s
        assert_eq!(
            b.remaining(&key(), t(5), t(5)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            b.remaining(&key(), t(5), t(12)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(b.remaining(&key(), t(5), t(15)), None);
        assert_eq!(b.remaining(&key(), t(5), t(30)), None);
    }

    #[test]
    fn resets_after_ten_minutes_of_running() {
        let mut b = Backoff::default();
        for s in 0..6 {
            b.record_restart(key(), t(s));
        }
        assert_eq!(b.current(&key()), Some(MAX_BACKOFF));
        // Ran for just over 10 minutes before exiting again: no wait, and the next wait is 10s.
        let exit = t(5 + 601);
        assert_eq!(b.remaining(&key(), exit, exit), None);
        b.record_restart(key(), exit);
        assert_eq!(b.current(&key()), Some(INITIAL_BACKOFF));
    }

    #[test]
    fn keys_are_per_pod_and_container() {
        let mut b = Backoff::default();
        b.record_restart(key(), t(0));
        let other_container = BackoffKey::new("uid-1", "sidecar");
        let other_pod = BackoffKey::new("uid-2", "app");
        assert_eq!(b.remaining(&other_container, t(1), t(1)), None);
        assert_eq!(b.remaining(&other_pod, t(1), t(1)), None);
        b.forget_pod("uid-1");
        assert_eq!(b.current(&key()), None);
    }

    #[test]
    fn gc_drops_old_entries_only() {
        let mut b = Backoff::default();
        b.record_restart(key(), t(0));
        b.record_restart(BackoffKey::new("uid-2", "app"), t(500));
        b.gc(t(700));
        assert_eq!(b.current(&key()), None);
        assert!(b.current(&BackoffKey::new("uid-2", "app")).is_some());
    }
}
