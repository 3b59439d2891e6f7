//! When the proxy loop syncs, as kube-proxy's bounded-frequency runner decides
//! it: a change is applied at once unless the last sync started less than
//! minSyncPeriod ago (then a burst of changes becomes one sync when the period
//! is over); without changes a partial sync runs every syncPeriod (it checks the
//! canary and lists nat NC-SERVICES, and a missing canary or a changed chain
//! makes the Proxier rewrite everything); a full
//! sync, every chain rewritten, runs every [`FULL_SYNC_PERIOD`]. A failed sync
//! is retried as a full one after a backoff from [`RETRY_MIN`] doubling up to
//! syncPeriod. Pure: the loop passes the clock in.

use std::time::{Duration, Instant};

/// How often every chain is rewritten whether or not anything changed, as
/// kube-proxy does (a full sync at 10,000 Services costs seconds, so not every
/// syncPeriod).
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);
/// First wait before a failed sync is tried again.
pub const RETRY_MIN: Duration = Duration::from_secs(1);

/// The next sync: when, and whether it must rewrite every chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncDue {
    pub at: Instant,
    pub full: bool,
}

/// The sync schedule of one proxy loop.
#[derive(Clone, Debug)]
pub struct Scheduler {
    min_sync_period: Duration,
    sync_period: Duration,
    /// Start of the last sync attempt.
    last_sync: Option<Instant>,
    /// Start of the last successful full sync (the first sync counts: it reads
    /// the kernel back and rewrites whatever differs).
    last_full_sync: Option<Instant>,
    /// The first change that no sync has started on yet.
    dirty_since: Option<Instant>,
    /// The first change the running sync covers.
    in_flight: Option<Instant>,
    /// After a failure: when to try again, and the backoff that led there.
    retry: Option<(Instant, Duration)>,
}

impl Scheduler {
    pub fn new(min_sync_period: Duration, sync_period: Duration) -> Self {
        Self {
            min_sync_period,
            sync_period,
            last_sync: None,
            last_full_sync: None,
            dirty_since: None,
            in_flight: None,
            retry: None,
        }
    }

    /// New periods from the NodeConfig; they count from the last sync.
    pub fn set_periods(&mut self, min_sync_period: Duration, sync_period: Duration) {
        self.min_sync_period = min_sync_period;
        self.sync_period = sync_period;
    }

    pub fn sync_period(&self) -> Duration {
        self.sync_period
    }

    /// A Service, EndpointSlice or setting changed at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.dirty_since.get_or_insert(now);
    }

    /// The oldest change not yet applied (queued or in a running sync), for `/healthz`.
    pub fn queued_since(&self) -> Option<Instant> {
        match (self.dirty_since, self.in_flight) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next sync; `at` may be in the past (due now).
    pub fn next(&self, now: Instant) -> SyncDue {
        let Some(last) = self.last_sync else {
            return SyncDue {
                at: now,
                full: false,
            };
        };
        let earliest = last + self.min_sync_period;
        let full_at = self.last_full_sync.map_or(now, |t| t + FULL_SYNC_PERIOD);
        let mut at = (last + self.sync_period).min(full_at);
        // After a failure the backoff rules: changes wait for the retry.
        match (self.retry, self.dirty_since) {
            (Some((retry_at, _)), _) => at = at.min(retry_at),
            (None, Some(dirty)) => at = at.min(dirty),
            (None, None) => {}
        }
        let at = at.max(earliest);
        SyncDue {
            at,
            full: self.retry.is_some() || full_at <= at,
        }
    }

    /// A sync starts at `now`: it covers every change seen so far.
    pub fn started(&mut self, now: Instant) {
        self.last_sync = Some(now);
        self.in_flight = self.dirty_since.take();
    }

    /// The sync that started at `started` (a full one or not) ended at `now`.
    pub fn finished(&mut self, started: Instant, now: Instant, full: bool, ok: bool) {
        let covered = self.in_flight.take();
        if ok {
            self.retry = None;
            if full || self.last_full_sync.is_none() {
                self.last_full_sync = Some(started);
            }
            return;
        }
        // Still not applied: the change stays queued (it counts for /healthz).
        let queued = covered.unwrap_or(started);
        self.dirty_since = Some(self.dirty_since.map_or(queued, |d| d.min(queued)));
        let backoff = self
            .retry
            .map_or(RETRY_MIN, |(_, b)| b * 2)
            .min(self.sync_period.max(RETRY_MIN));
        self.retry = Some((now + backoff, backoff));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(1);
    const PERIOD: Duration = Duration::from_secs(30);

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A scheduler whose first (successful) sync ran at t0.
    fn after_first_sync(t0: Instant) -> Scheduler {
        let mut sched = Scheduler::new(MIN, PERIOD);
        sched.started(t0);
        sched.finished(t0, t0 + ms(100), false, true);
        sched
    }

    #[test]
    fn the_first_sync_is_due_at_once() {
        let now = Instant::now();
        let sched = Scheduler::new(MIN, PERIOD);
        assert_eq!(
            sched.next(now),
            SyncDue {
                at: now,
                full: false
            }
        );
    }

    #[test]
    fn without_changes_a_partial_sync_every_sync_period() {
        let t0 = Instant::now();
        let sched = after_first_sync(t0);
        assert_eq!(
            sched.next(t0 + s(5)),
            SyncDue {
                at: t0 + PERIOD,
                full: false
            }
        );
    }

    #[test]
    fn a_change_after_min_sync_period_syncs_at_once() {
        let t0 = Instant::now();
        let mut sched = after_first_sync(t0);
        sched.changed(t0 + s(10));
        assert_eq!(sched.next(t0 + s(10)).at, t0 + s(10));
    }

    #[test]
    fn a_burst_within_min_sync_period_is_one_sync_at_its_end() {
        let t0 = Instant::now();
        let mut sched = after_first_sync(t0);
        for i in 0..10 {
            sched.changed(t0 + ms(100 + i * 50));
        }
        assert_eq!(sched.next(t0 + ms(600)).at, t0 + MIN);
        sched.started(t0 + MIN);
        assert_eq!(sched.queued_since(), Some(t0 + ms(100)));
        sched.finished(t0 + MIN, t0 + MIN + ms(50), false, true);
        assert_eq!(sched.queued_since(), None);
        assert_eq!(
            sched.next(t0 + MIN + ms(50)).at,
            t0 + MIN + PERIOD,
            "nothing left to do"
        );
    }

    #[test]
    fn a_change_during_a_sync_waits_for_the_next() {
        let t0 = Instant::now();
        let mut sched = after_first_sync(t0);
        sched.changed(t0 + s(5));
        sched.started(t0 + s(5));
        sched.changed(t0 + s(5) + ms(200));
        sched.finished(t0 + s(5), t0 + s(5) + ms(300), false, true);
        assert_eq!(sched.queued_since(), Some(t0 + s(5) + ms(200)));
        assert_eq!(sched.next(t0 + s(5) + ms(300)).at, t0 + s(6));
    }

    #[test]
    fn a_full_sync_every_hour() {
        let t0 = Instant::now();
        let mut sched = after_first_sync(t0);
        let mut t = t0;
        // Partial syncs every syncPeriod for just under an hour.
        while t + PERIOD < t0 + FULL_SYNC_PERIOD {
            let due = sched.next(t);
            assert!(!due.full, "partial at {:?}", due.at - t0);
            t = due.at;
            sched.started(t);
            sched.finished(t, t + ms(10), false, true);
        }
        let due = sched.next(t);
        assert_eq!(
            due,
            SyncDue {
                at: t0 + FULL_SYNC_PERIOD,
                full: true
            }
        );
        sched.started(due.at);
        sched.finished(due.at, due.at + s(1), true, true);
        assert!(!sched.next(due.at + s(1)).full);
    }

    #[test]
    fn a_failure_is_retried_full_with_a_growing_backoff_and_stays_queued() {
        let t0 = Instant::now();
        let mut sched = after_first_sync(t0);
        sched.changed(t0 + s(10));
        sched.started(t0 + s(10));
        sched.finished(t0 + s(10), t0 + s(10), false, false);
        assert_eq!(sched.queued_since(), Some(t0 + s(10)));
        let due = sched.next(t0 + s(10));
        assert_eq!(
            due,
            SyncDue {
                at: t0 + s(11),
                full: true
            }
        );
        sched.started(due.at);
        sched.finished(due.at, due.at, true, false);
        assert_eq!(sched.next(due.at).at, due.at + s(2), "doubled");
        assert_eq!(
            sched.queued_since(),
            Some(t0 + s(10)),
            "the change is still not applied"
        );
        let mut t = due.at;
        for _ in 0..10 {
            t = sched.next(t).at;
            sched.started(t);
            sched.finished(t, t, true, false);
        }
        assert_eq!(sched.next(t).at, t + PERIOD, "backoff capped at syncPeriod");
        sched.started(t + PERIOD);
        sched.finished(t + PERIOD, t + PERIOD, true, true);
        assert_eq!(sched.queued_since(), None);
        assert!(!sched.next(t + PERIOD).full);
    }

    #[test]
    fn min_sync_period_bounds_retries_too() {
        let t0 = Instant::now();
        let mut sched = Scheduler::new(s(5), PERIOD);
        sched.started(t0);
        sched.finished(t0, t0, false, false);
        assert_eq!(sched.next(t0).at, t0 + s(5));
    }
}
