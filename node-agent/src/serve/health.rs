//! Liveness of the agent's loops, for `/healthz`: every loop beats at each
//! round; a loop that has not beaten for [`STALE_AFTER`] is stuck, as the
//! kubelet's healthz fails when its sync loop stops turning. A loop may also
//! set a deadline for work it has queued (the proxy: a change not applied
//! within twice syncPeriod, as kube-proxy's healthz); past it, `/healthz` fails.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::locked::Locked;

/// A loop that has not beaten for this long makes `/healthz` fail. Every loop
/// wakes at least every 30s.
pub const STALE_AFTER: Duration = Duration::from_secs(90);

/// Last beat of each registered loop.
#[derive(Clone, Debug, Default)]
pub struct Health {
    beats: Arc<Mutex<BTreeMap<&'static str, Instant>>>,
    deadlines: Arc<Mutex<BTreeMap<&'static str, Instant>>>,
}

/// One loop's handle to report that it is alive.
#[derive(Clone, Debug)]
pub struct LoopHeartbeat {
    name: &'static str,
    health: Health,
}

impl Health {
    /// Registers a loop (counted as alive from now) and returns its heartbeat.
    pub fn register(&self, name: &'static str) -> LoopHeartbeat {
        let heartbeat = LoopHeartbeat {
            name,
            health: self.clone(),
        };
        heartbeat.beat();
        heartbeat
    }

    /// Loops whose last beat is older than `max_age`.
    pub fn stale_loops(&self, now: Instant, max_age: Duration) -> Vec<&'static str> {
        let beats = self.beats.locked();
        stale(&beats, now, max_age)
    }

    /// Work of `name` queued and due by `deadline`; `None` when nothing waits.
    pub fn set_deadline(&self, name: &'static str, deadline: Option<Instant>) {
        let mut deadlines = self.deadlines.locked();
        match deadline {
            Some(at) => deadlines.insert(name, at),
            None => deadlines.remove(name),
        };
    }

    /// Names whose queued work is past its deadline.
    pub fn overdue(&self, now: Instant) -> Vec<&'static str> {
        let deadlines = self.deadlines.locked();
        deadlines
            .iter()
            .filter(|(_, at)| now > **at)
            .map(|(name, _)| *name)
            .collect()
    }
}

impl LoopHeartbeat {
    /// Records that the loop is alive now.
    pub fn beat(&self) {
        let mut beats = self.health.beats.locked();
        beats.insert(self.name, Instant::now());
    }
}

fn stale(
    beats: &BTreeMap<&'static str, Instant>,
    now: Instant,
    max_age: Duration,
) -> Vec<&'static str> {
    beats
        .iter()
        .filter(|(_, at)| now.saturating_duration_since(**at) > max_age)
        .map(|(name, _)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loops_past_the_limit_are_stale() {
        let now = Instant::now();
        let mut beats = BTreeMap::new();
        beats.insert("config", now);
        beats.insert("runtime", now - Duration::from_secs(100));
        assert_eq!(stale(&beats, now, Duration::from_secs(90)), vec!["runtime"]);
        assert!(stale(&beats, now, Duration::from_secs(120)).is_empty());
    }

    #[test]
    fn queued_work_past_its_deadline_is_overdue_until_cleared() {
        let health = Health::default();
        let now = Instant::now();
        health.set_deadline("proxy", Some(now + Duration::from_secs(60)));
        assert!(health.overdue(now).is_empty());
        assert_eq!(health.overdue(now + Duration::from_secs(61)), vec!["proxy"]);
        health.set_deadline("proxy", None);
        assert!(health.overdue(now + Duration::from_secs(61)).is_empty());
    }

    #[test]
    fn a_registered_loop_starts_alive() {
        let health = Health::default();
        let _beat = health.register("status");
        assert!(health
            .stale_loops(Instant::now(), Duration::from_secs(1))
            .is_empty());
    }
}
