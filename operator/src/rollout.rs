//! The node-agent DaemonSet's rollout, followed as a Deployment's progress deadline follows
//! its ReplicaSets: a rollout that makes no progress (no more agents updated, none more
//! available) for the defaults' `agent.progressDeadline` is stalled. The operator then stops
//! it, switching the DaemonSet to `OnDelete` so that no further working agent is replaced by
//! one that does not become Ready, and says so (a Warning Event on the DaemonSet, the
//! `AgentUpToDate` condition of the Companion nodes that lag). Only new defaults (another image
//! or version) start a new rollout.
//!
//! The stop survives a change of leader: the stopped DaemonSet carries [`STALLED_ANNOTATION`]
//! with the image whose rollout stalled.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetUpdateStrategy};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;

/// Annotation of a stopped DaemonSet: the agent image whose rollout stalled.
pub const STALLED_ANNOTATION: &str = "nodeconfig.dev/rollout-stalled";
/// Reason of the Event on the DaemonSet and of the lagging nodes' AgentUpToDate condition.
pub const STALLED: &str = "RolloutStalled";
/// Reason of the Event when every scheduled agent runs the new template and is available.
pub const COMPLETE: &str = "RolloutComplete";

/// What the DaemonSet's status says of the rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The DaemonSet controller has seen the current spec.
    pub observed: bool,
    pub desired: i32,
    pub updated: i32,
    pub available: i32,
}

impl Progress {
    pub fn of(ds: &DaemonSet) -> Option<Self> {
        let status = ds.status.as_ref()?;
        Some(Self {
            observed: status.observed_generation.is_some()
                && status.observed_generation >= ds.metadata.generation,
            desired: status.desired_number_scheduled,
            updated: status.updated_number_scheduled.unwrap_or(0),
            available: status.number_available.unwrap_or(0),
        })
    }

    fn complete(&self) -> bool {
        self.observed && self.updated >= self.desired && self.available >= self.desired
    }
}

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    Progressing,
    Complete,
    /// Stopped; the message says where it stood.
    Stalled(String),
}

/// Follows the rollout of one image.
#[derive(Debug)]
pub struct Tracker {
    image: String,
    phase: Phase,
    /// The (updated, available) counts last seen, and since when.
    last: Option<(i32, i32)>,
    since: Instant,
    /// Nothing observed yet: a rollout found complete then was completed before this tracker
    /// (another leader's term, or the previous image), so it is not announced.
    fresh: bool,
}

impl Tracker {
    /// A rollout of `image` starting now; `stalled_image` is the annotation of the DaemonSet
    /// found in the cluster, so a stop decided by an earlier leader holds.
    pub fn new(image: &str, stalled_image: Option<&str>, now: Instant) -> Self {
        let phase = if stalled_image == Some(image) {
            Phase::Stalled(format!(
                "the rollout of {image} was stopped earlier: set another agent.image or agent.version to roll again"
            ))
        } else {
            Phase::Progressing
        };
        Self {
            image: image.to_string(),
            phase,
            last: None,
            since: now,
            fresh: true,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn stalled(&self) -> bool {
        matches!(self.phase, Phase::Stalled(_))
    }

    /// The defaults now ask for `image`: another image is a new rollout.
    pub fn target(&mut self, image: &str, now: Instant) {
        if image != self.image {
            *self = Self::new(image, None, now);
        }
    }

    /// Takes in the DaemonSet's progress at `now`; returns the new phase when it changed.
    pub fn observe(
        &mut self,
        progress: &Progress,
        deadline: Duration,
        now: Instant,
    ) -> Option<Phase> {
        let fresh = std::mem::take(&mut self.fresh);
        if self.stalled() {
            return None;
        }
        let counts = (progress.updated, progress.available);
        if self.last != Some(counts) {
            self.last = Some(counts);
            self.since = now;
        }
        let phase = if progress.complete() {
            Phase::Complete
        } else if now.duration_since(self.since) >= deadline {
            Phase::Stalled(format!(
                "no progress for {}: {} of {} agents run {}, {} available",
                nodeconfig_crds::duration::format_duration(deadline),
                progress.updated,
                progress.desired,
                self.image,
                progress.available
            ))
        } else {
            Phase::Progressing
        };
        if phase == self.phase {
            return None;
        }
        self.phase = phase.clone();
        (!(fresh && phase == Phase::Complete)).then_some(phase)
    }

    /// How long until the deadline passes with no progress, while the rollout is under way.
    pub fn deadline_in(&self, deadline: Duration, now: Instant) -> Option<Duration> {
        (self.phase == Phase::Progressing && self.last.is_some())
            .then(|| deadline.saturating_sub(now.duration_since(self.since)))
    }
}

/// `ds` as a stopped rollout: `OnDelete` (the DaemonSet controller replaces no more pods) and
/// the annotation naming the stalled image.
pub fn stop(ds: &mut DaemonSet, image: &str) {
    ds.spec.update_strategy = Some(DaemonSetUpdateStrategy {
        type_: Some("OnDelete".into()),
        rolling_update: None,
    });
    ds.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(STALLED_ANNOTATION.into(), image.into());
}

/// The stalled image a DaemonSet in the cluster is annotated with.
pub fn stalled_image(ds: &DaemonSet) -> Option<&str> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(STALLED_ANNOTATION)
        .map(String::as_str)
}

/// What the rollout's Events regard: the DaemonSet as seen, with its uid (`kubectl describe
/// daemonset` finds Events by it) and its resourceVersion, as client-go's references carry it.
/// kube-runtime's recorder folds an Event into one of the same reference and reason published
/// in the last 6 minutes, keeping that one's message; without the resourceVersion, a rollout
/// completing within 6 minutes of another (or of an agent's restart) would show the earlier
/// image.
pub fn event_reference(ds: &DaemonSet) -> ObjectReference {
    ObjectReference {
        resource_version: ds.metadata.resource_version.clone(),
        ..ds.object_ref(&())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(60);

    fn progress(desired: i32, updated: i32, available: i32) -> Progress {
        Progress {
            observed: true,
            desired,
            updated,
            available,
        }
    }

    #[test]
    fn a_rollout_that_moves_completes() {
        let t0 = Instant::now();
        let mut t = Tracker::new("agent:2", None, t0);
        // The old image's rollout, complete before the new one starts, is not announced.
        assert_eq!(t.observe(&progress(3, 3, 3), DEADLINE, t0), None);
        assert_eq!(t.phase(), &Phase::Complete);
        let new_spec = Progress {
            observed: false,
            ..progress(3, 3, 3)
        };
        assert_eq!(t.observe(&new_spec, DEADLINE, t0), Some(Phase::Progressing));
        assert_eq!(t.observe(&progress(3, 0, 3), DEADLINE, t0), None);
        assert_eq!(
            t.observe(&progress(3, 1, 2), DEADLINE, t0 + Duration::from_secs(50)),
            None
        );
        // 50 s more, but counts moved at 50 s: still within the deadline.
        assert_eq!(
            t.observe(&progress(3, 2, 2), DEADLINE, t0 + Duration::from_secs(100)),
            None
        );
        assert_eq!(
            t.deadline_in(DEADLINE, t0 + Duration::from_secs(130)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            t.observe(&progress(3, 3, 3), DEADLINE, t0 + Duration::from_secs(150)),
            Some(Phase::Complete)
        );
        assert_eq!(t.deadline_in(DEADLINE, t0 + Duration::from_secs(150)), None);
    }

    #[test]
    fn a_rollout_without_progress_past_the_deadline_stalls_and_stays_stalled() {
        let t0 = Instant::now();
        let mut t = Tracker::new("agent:broken", None, t0);
        assert_eq!(t.observe(&progress(2, 1, 1), DEADLINE, t0), None);
        assert_eq!(
            t.observe(&progress(2, 1, 1), DEADLINE, t0 + Duration::from_secs(59)),
            None
        );
        let Some(Phase::Stalled(message)) = t.observe(&progress(2, 1, 1), DEADLINE, t0 + DEADLINE)
        else {
            panic!("stalled at the deadline");
        };
        assert_eq!(
            message,
            "no progress for 1m: 1 of 2 agents run agent:broken, 1 available"
        );
        // Even if the counts move later, a stopped rollout stays stopped...
        assert_eq!(
            t.observe(&progress(2, 2, 2), DEADLINE, t0 + Duration::from_secs(200)),
            None
        );
        assert!(t.stalled());
        // ...until the defaults name another image.
        t.target("agent:broken", t0 + Duration::from_secs(210));
        assert!(t.stalled());
        t.target("agent:fixed", t0 + Duration::from_secs(220));
        assert_eq!(t.phase(), &Phase::Progressing);
    }

    #[test]
    fn an_unobserved_spec_is_not_complete() {
        let t0 = Instant::now();
        let mut t = Tracker::new("agent:2", None, t0);
        let stale = Progress {
            observed: false,
            ..progress(1, 1, 1)
        };
        assert_eq!(t.observe(&stale, DEADLINE, t0), None);
        assert_eq!(
            t.observe(&progress(1, 1, 1), DEADLINE, t0),
            Some(Phase::Complete)
        );
    }

    #[test]
    fn a_stop_holds_across_leaders_for_the_same_image_only() {
        let t0 = Instant::now();
        assert!(Tracker::new("agent:broken", Some("agent:broken"), t0).stalled());
        assert!(!Tracker::new("agent:fixed", Some("agent:broken"), t0).stalled());
    }

    #[test]
    fn a_stopped_daemonset_is_on_delete_and_names_the_image() {
        let mut ds = DaemonSet::default();
        stop(&mut ds, "agent:broken");
        let strategy = ds.spec.update_strategy.as_ref().expect("strategy");
        assert_eq!(strategy.type_.as_deref(), Some("OnDelete"));
        assert!(strategy.rolling_update.is_none());
        assert_eq!(stalled_image(&ds), Some("agent:broken"));
    }

    #[test]
    fn events_regard_each_version_of_the_daemonset_by_uid() {
        let mut ds = DaemonSet::default();
        ds.metadata.name = Some("node-agent".into());
        ds.metadata.namespace = Some("nodeconfig-system".into());
        ds.metadata.uid = Some("u-1".into());
        ds.metadata.resource_version = Some("41".into());
        let first = event_reference(&ds);
        assert_eq!(first.kind.as_deref(), Some("DaemonSet"));
        assert_eq!(first.api_version.as_deref(), Some("apps/v1"));
        assert_eq!(first.namespace.as_deref(), Some("nodeconfig-system"));
        assert_eq!(first.uid.as_deref(), Some("u-1"));
        ds.metadata.resource_version = Some("57".into());
        assert_ne!(
            event_reference(&ds),
            first,
            "a later rollout is another Event"
        );
    }
}
