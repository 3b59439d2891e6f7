//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it:
//! the leader renews the Lease every retry period; a candidate takes it over once it has gone
//! unrenewed for its lease duration; every write carries the resourceVersion it read, so two
//! candidates can never both win. A leader that cannot renew within the renew deadline (shorter
//! than the lease duration) steps down before anyone else may take over, which leaves room for a
//! few seconds of clock skew. Expiry is judged on the Lease's `renewTime`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// Timing of the election.
#[derive(Clone, Debug)]
pub struct ElectionTiming {
    /// How long a Lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// How long a leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and a candidate looks.
    pub retry_period: Duration,
}

/// What a candidate should do with the Lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// It holds the Lease: renew it.
    Renew,
    /// The Lease is free (released or expired): take it.
    Acquire,
    /// Someone else holds it; look again when it would expire.
    Follow {
        holder: String,
        expires_in: Duration,
    },
}

/// Decides the next step from a Lease's spec.
pub fn next_step(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Step {
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty());
    let Some(holder) = holder else {
        return Step::Acquire;
    };
    if holder == me {
        return Step::Renew;
    }
    let renewed = spec
        .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
        .map(|t| t.0);
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or(0)
        .max(0);
    let Some(renewed) = renewed else {
        return Step::Acquire;
    };
    let expires = renewed + Duration::from_secs(duration as u64);
    match Duration::try_from(expires.duration_since(now)) {
        Ok(left) if !left.is_zero() => Step::Follow {
            holder: holder.to_string(),
            expires_in: left,
        },
        _ => Step::Acquire,
    }
}

/// The Lease spec that records `me` as leader from `now`.
pub fn acquired_spec(
    previous: Option<&LeaseSpec>,
    me: &str,
    lease_duration: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
    let was_mine = previous.and_then(|s| s.holder_identity.as_deref()) == Some(me);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(lease_duration.as_secs().max(1) as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if previous.is_some() && !was_mine {
            transitions + 1
        } else {
            transitions
        }),
        ..LeaseSpec::default()
    }
}

/// The Lease spec a leader leaves behind on shutdown: no holder, so a candidate takes it at once.
pub fn released_spec(previous: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: previous.acquire_time.clone(),
        renew_time: Some(MicroTime(now)),
        lease_transitions: previous.lease_transitions,
        ..LeaseSpec::default()
    }
}

/// Runs the election until `shutdown` turns true; `leading` says whether this replica leads.
pub struct LeaderElector {
    api: Api<Lease>,
    lease_name: String,
    identity: String,
    timing: ElectionTiming,
    leading: watch::Sender<bool>,
}

enum Attempt {
    Held,
    HeldByOther {
        holder: String,
        expires_in: Duration,
    },
    /// Another writer got there first; look again at once.
    Lost,
}

impl LeaderElector {
    pub fn new(
        api: Api<Lease>,
        lease_name: String,
        identity: String,
        timing: ElectionTiming,
    ) -> (Self, watch::Receiver<bool>) {
        let (leading, rx) = watch::channel(false);
        (
            Self {
                api,
                lease_name,
                identity,
                timing,
                leading,
            },
            rx,
        )
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut last_renewal: Option<Instant> = None;
        let mut logged_holder: Option<String> = None;
        while !*shutdown.borrow() {
            let leading = *self.leading.borrow();
            // A leader never waits on the API server past its renew deadline.
            let budget = match (leading, last_renewal) {
                (true, Some(at)) => self
                    .timing
                    .renew_deadline
                    .saturating_sub(at.elapsed())
                    .max(Duration::from_millis(100)),
                _ => self.timing.retry_period.max(Duration::from_secs(5)),
            };
            let mut wait = self.timing.retry_period;
            match tokio::time::timeout(budget, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Held)) => {
                    last_renewal = Some(Instant::now());
                    if !leading {
                        info!(identity = %self.identity, lease = %self.lease_name, "became the leader");
                        self.leading.send_replace(true);
                    }
                    logged_holder = None;
                }
                Ok(Ok(Attempt::HeldByOther { holder, expires_in })) => {
                    if leading {
                        warn!(%holder, "another replica holds the lease; stepping down");
                        self.leading.send_replace(false);
                    }
                    if logged_holder.as_deref() != Some(holder.as_str()) {
                        info!(%holder, "standing by: another replica leads");
                        logged_holder = Some(holder);
                    }
                    // Look again right when the lease would expire.
                    wait = wait.min(expires_in + Duration::from_millis(50));
                }
                Ok(Ok(Attempt::Lost)) => wait = Duration::from_millis(50),
                Ok(Err(error)) => {
                    warn!(%error, lease = %self.lease_name, "leader election: lease request failed")
                }
                Err(_) => {
                    warn!(lease = %self.lease_name, "leader election: lease request timed out")
                }
            }
            let past_deadline =
                last_renewal.is_none_or(|at| at.elapsed() >= self.timing.renew_deadline);
            if *self.leading.borrow() && past_deadline {
                warn!("could not renew the lease within the renew deadline; stepping down");
                self.leading.send_replace(false);
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        if self.leading.send_replace(false) {
            match tokio::time::timeout(Duration::from_secs(5), self.release()).await {
                Ok(Ok(())) => info!(lease = %self.lease_name, "released the lease"),
                Ok(Err(error)) => warn!(%error, "could not release the lease"),
                Err(_) => warn!("releasing the lease timed out"),
            }
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease_name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(acquired_spec(
                    None,
                    &self.identity,
                    self.timing.lease_duration,
                    now,
                )),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Lost),
                Err(e) => Err(e),
            };
        };
        let spec = match next_step(lease.spec.as_ref(), &self.identity, now) {
            Step::Follow { holder, expires_in } => {
                return Ok(Attempt::HeldByOther { holder, expires_in })
            }
            Step::Renew => {
                let mut spec = lease.spec.clone().unwrap_or_default();
                spec.renew_time = Some(MicroTime(now));
                spec.lease_duration_seconds =
                    Some(self.timing.lease_duration.as_secs().max(1) as i32);
                spec
            }
            Step::Acquire => acquired_spec(
                lease.spec.as_ref(),
                &self.identity,
                self.timing.lease_duration,
                now,
            ),
        };
        lease.spec = Some(spec);
        // Replacing with the resourceVersion just read fails with 409 if anyone wrote in between.
        match self
            .api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Lost),
            Err(e) => Err(e),
        }
    }

    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.lease_name).await? else {
            return Ok(());
        };
        let Some(spec) = lease
            .spec
            .as_ref()
            .filter(|s| s.holder_identity.as_deref() == Some(self.identity.as_str()))
        else {
            return Ok(());
        };
        lease.spec = Some(released_spec(spec, Timestamp::now()));
        self.api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("valid timestamp")
    }

    fn lease(holder: Option<&str>, renewed: Option<i64>, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: renewed.map(|s| MicroTime(at(s))),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(4),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn steps() {
        let cases = [
            ("no spec", None, 100, Step::Acquire),
            (
                "no holder (released)",
                Some(lease(None, Some(99), 15)),
                100,
                Step::Acquire,
            ),
            (
                "empty holder",
                Some(lease(Some(""), Some(99), 15)),
                100,
                Step::Acquire,
            ),
            (
                "mine",
                Some(lease(Some("me"), Some(10), 15)),
                100,
                Step::Renew,
            ),
            (
                "mine, fresh",
                Some(lease(Some("me"), Some(99), 15)),
                100,
                Step::Renew,
            ),
            (
                "theirs, fresh",
                Some(lease(Some("them"), Some(95), 15)),
                100,
                Step::Follow {
                    holder: "them".into(),
                    expires_in: Duration::from_secs(10),
                },
            ),
            (
                "theirs, expired exactly",
                Some(lease(Some("them"), Some(85), 15)),
                100,
                Step::Acquire,
            ),
            (
                "theirs, long expired",
                Some(lease(Some("them"), Some(0), 15)),
                100,
                Step::Acquire,
            ),
            (
                "theirs, never renewed",
                Some(lease(Some("them"), None, 15)),
                100,
                Step::Acquire,
            ),
            (
                "released with 1s",
                Some(lease(Some("them"), Some(98), 1)),
                100,
                Step::Acquire,
            ),
        ];
        for (name, spec, now, want) in cases {
            assert_eq!(next_step(spec.as_ref(), "me", at(now)), want, "{name}");
        }
    }

    #[test]
    fn acquiring_counts_transitions_between_holders() {
        let fresh = acquired_spec(None, "me", Duration::from_secs(15), at(0));
        assert_eq!(fresh.holder_identity.as_deref(), Some("me"));
        assert_eq!(fresh.lease_duration_seconds, Some(15));
        assert_eq!(fresh.lease_transitions, Some(0));
        assert_eq!(fresh.renew_time, Some(MicroTime(at(0))));

        let taken_over = acquired_spec(
            Some(&lease(Some("them"), Some(0), 15)),
            "me",
            Duration::from_secs(15),
            at(20),
        );
        assert_eq!(taken_over.lease_transitions, Some(5));
        assert_eq!(taken_over.acquire_time, Some(MicroTime(at(20))));

        let after_release = acquired_spec(
            Some(&lease(None, Some(0), 1)),
            "me",
            Duration::from_secs(15),
            at(20),
        );
        assert_eq!(after_release.lease_transitions, Some(5));
    }

    #[test]
    fn a_released_lease_is_free_for_anyone() {
        let released = released_spec(&lease(Some("me"), Some(0), 15), at(10));
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_transitions, Some(4));
        assert_eq!(next_step(Some(&released), "other", at(10)), Step::Acquire);
    }
}
