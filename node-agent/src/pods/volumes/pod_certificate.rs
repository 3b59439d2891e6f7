//! The life of one `podCertificate` projection, after the kubelet's
//! `pkg/kubelet/podcertificate` IssuingManager. Pure: the shell
//! ([`crate::pods::volumes::pod_certificates`]) asks [`CredState::want`] what
//! to do, makes the PodCertificateRequest or reads it back, and feeds what
//! it saw to [`CredState::requested`] or [`CredState::observe`].
//!
//! - No state: generate a key, create a PodCertificateRequest → `Wait`.
//! - `Wait`: the request is read back; `Issued` → `Fresh` with that key and
//!   the returned chain; `Denied`/`Failed` are final (the pod's volume never
//!   sets up); a request still missing 10 minutes after it was made is
//!   assumed deleted and the projection starts over.
//! - `Fresh`: once `beginRefreshAt` (plus up to 5 minutes of jitter) has
//!   passed, a new request is made → `WaitRefresh`, which keeps serving the
//!   current credentials until the new ones are issued.
use std::time::{Duration, SystemTime};

use crate::pods::volumes::trust_bundles::{encode_pem, pem_blocks};

/// A request still missing this long after its creation is assumed deleted.
pub const ASSUME_DELETED_AFTER: Duration = Duration::from_secs(10 * 60);
/// The most jitter added to `beginRefreshAt` and to the abandon time.
pub const MAX_JITTER: Duration = Duration::from_secs(5 * 60);

/// What the pod's files hold: its private key (PKCS#8 PEM) and the issued
/// certificate chain (PEM CERTIFICATE blocks, leaf first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub key_pem: Vec<u8>,
    pub chain_pem: Vec<u8>,
}

/// A request made and not answered yet: the key it proves, its name, and
/// when to give up on it if it cannot be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub key_pem: Vec<u8>,
    pub name: String,
    pub abandon_at: SystemTime,
}

/// Issued credentials and their times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub credentials: Credentials,
    pub begin_refresh_at: SystemTime,
    pub not_after: SystemTime,
}

/// Where one projection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredState {
    Wait(Pending),
    Denied { reason: String, message: String },
    Failed { reason: String, message: String },
    Fresh(Issued),
    WaitRefresh { current: Issued, refresh: Pending },
}

/// What the shell saw of a PodCertificateRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not found (or not readable yet).
    Missing,
    /// No terminal condition yet.
    Pending,
    Issued {
        chain: String,
        begin_refresh_at: SystemTime,
        not_after: SystemTime,
    },
    Denied {
        reason: String,
        message: String,
    },
    Failed {
        reason: String,
        message: String,
    },
}

/// What the shell should do for a projection now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// Generate a key and create a request.
    Request,
    /// Read back the named request.
    Check(String),
    Nothing,
}

impl CredState {
    /// The next step for a projection in `state` (`None`: never requested).
    pub fn want(state: Option<&Self>, now: SystemTime) -> Want {
        match state {
            None => Want::Request,
            Some(Self::Wait(p)) | Some(Self::WaitRefresh { refresh: p, .. }) => {
                Want::Check(p.name.clone())
            }
            Some(Self::Fresh(issued)) if now >= issued.begin_refresh_at => Want::Request,
            Some(_) => Want::Nothing,
        }
    }

    /// The state after a request was created (from `state`, `None` when
    /// there was none).
    pub fn requested(state: Option<Self>, refresh: Pending) -> Self {
        match state {
            Some(Self::Fresh(current)) | Some(Self::WaitRefresh { current, .. }) => {
                Self::WaitRefresh { current, refresh }
            }
            _ => Self::Wait(refresh),
        }
    }

    /// The state after reading back the pending request. `jitter` (at most
    /// [`MAX_JITTER`]) is added to an issued request's `beginRefreshAt`.
    /// `None`: start over (the request was lost).
    pub fn observe(self, seen: Seen, now: SystemTime, jitter: Duration) -> Option<Self> {
        let (current, pending) = match self {
            Self::Wait(p) => (None, p),
            Self::WaitRefresh { current, refresh } => (Some(current), refresh),
            other => return Some(other),
        };
        Some(match seen {
            Seen::Missing if now > pending.abandon_at => match current {
                None => return None,
                Some(current) => Self::Fresh(current),
            },
            Seen::Missing | Seen::Pending => match current {
                None => Self::Wait(pending),
                Some(current) => Self::WaitRefresh {
                    current,
                    refresh: pending,
                },
            },
            Seen::Denied { reason, message } => Self::Denied { reason, message },
            Seen::Failed { reason, message } => Self::Failed { reason, message },
            Seen::Issued {
                chain,
                begin_refresh_at,
                not_after,
            } => Self::Fresh(Issued {
                credentials: Credentials {
                    key_pem: pending.key_pem,
                    chain_pem: clean_chain(&chain),
                },
                begin_refresh_at: begin_refresh_at + jitter.min(MAX_JITTER),
                not_after,
            }),
        })
    }

    /// The credentials to write, or why there are none (the kubelet's texts).
    pub fn credentials(state: Option<&Self>) -> Result<Credentials, String> {
        match state {
            None | Some(Self::Wait(_)) => Err("credential bundle is not issued yet".into()),
            Some(Self::Denied { reason, message }) => Err(format!(
                "PodCertificateRequest was permanently denied: reason={reason:?} message={message:?}"
            )),
            Some(Self::Failed { reason, message }) => Err(format!(
                "PodCertificateRequest was permanently failed: reason={reason:?} message={message:?}"
            )),
            Some(Self::Fresh(issued)) | Some(Self::WaitRefresh { current: issued, .. }) => {
                Ok(issued.credentials.clone())
            }
        }
    }
}

/// The chain's PEM blocks rewritten as plain CERTIFICATE blocks (the
/// kubelet's `cleanCertificateChain`).
pub fn clean_chain(chain: &str) -> Vec<u8> {
    pem_blocks(chain)
        .iter()
        .flat_map(|der| encode_pem("CERTIFICATE", der).into_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn pending(name: &str) -> Pending {
        Pending {
            key_pem: format!("key-{name}").into_bytes(),
            name: name.into(),
            abandon_at: t(600),
        }
    }

    fn issued(refresh_at: u64) -> Seen {
        Seen::Issued {
            chain: encode_pem("CERTIFICATE", b"leaf"),
            begin_refresh_at: t(refresh_at),
            not_after: t(2 * refresh_at),
        }
    }

    #[test]
    fn a_request_is_made_waited_for_and_its_chain_served_with_its_key() {
        assert_eq!(CredState::want(None, t(0)), Want::Request);
        assert!(CredState::credentials(None)
            .unwrap_err()
            .contains("not issued yet"));
        let wait = CredState::requested(None, pending("req-1"));
        assert_eq!(
            CredState::want(Some(&wait), t(1)),
            Want::Check("req-1".into())
        );
        let still = wait
            .clone()
            .observe(Seen::Pending, t(2), Duration::ZERO)
            .unwrap();
        assert_eq!(still, wait);
        let fresh = wait
            .observe(issued(1000), t(3), Duration::from_secs(7))
            .unwrap();
        let creds = CredState::credentials(Some(&fresh)).unwrap();
        assert_eq!(creds.key_pem, b"key-req-1");
        assert_eq!(
            creds.chain_pem,
            encode_pem("CERTIFICATE", b"leaf").into_bytes()
        );
        assert_eq!(CredState::want(Some(&fresh), t(1006)), Want::Nothing);
        assert_eq!(CredState::want(Some(&fresh), t(1007)), Want::Request);
    }

    #[test]
    fn a_refresh_keeps_the_current_credentials_until_the_new_ones_are_issued() {
        let fresh = CredState::requested(None, pending("req-1"))
            .observe(issued(100), t(1), Duration::ZERO)
            .unwrap();
        let refreshing = CredState::requested(Some(fresh), pending("req-2"));
        assert_eq!(
            CredState::want(Some(&refreshing), t(101)),
            Want::Check("req-2".into())
        );
        assert_eq!(
            CredState::credentials(Some(&refreshing)).unwrap().key_pem,
            b"key-req-1"
        );
        let renewed = refreshing
            .observe(issued(500), t(102), Duration::ZERO)
            .unwrap();
        assert_eq!(
            CredState::credentials(Some(&renewed)).unwrap().key_pem,
            b"key-req-2"
        );
    }

    #[test]
    fn denied_and_failed_are_final_and_a_lost_request_starts_over() {
        let denied = CredState::requested(None, pending("r"))
            .observe(
                Seen::Denied {
                    reason: "NoWay".into(),
                    message: "no".into(),
                },
                t(1),
                Duration::ZERO,
            )
            .unwrap();
        assert_eq!(CredState::want(Some(&denied), t(2)), Want::Nothing);
        assert_eq!(
            CredState::credentials(Some(&denied)).unwrap_err(),
            "PodCertificateRequest was permanently denied: reason=\"NoWay\" message=\"no\""
        );
        let wait = CredState::requested(None, pending("r"));
        assert!(wait
            .clone()
            .observe(Seen::Missing, t(10), Duration::ZERO)
            .is_some());
        assert_eq!(wait.observe(Seen::Missing, t(601), Duration::ZERO), None);
    }
}
