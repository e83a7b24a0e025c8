//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! only one reconciles. The holder renews the Lease every `renew_every`; a replica takes it over
//! once `renewTime + leaseDurationSeconds` has passed without a renewal. Writes carry the
//! Lease's resourceVersion, so two replicas racing for an expired Lease cannot both win.
//!
//! A holder that fails to renew for a whole lease duration stops acting (the caller exits and
//! is restarted), and a holder that shuts down releases the Lease so that the next replica
//! takes over at once instead of after the lease duration.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{info, warn};

/// Where the Lease lives and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub lease_name: String,
    pub namespace: String,
    /// This replica's name, written as `holderIdentity` (the Pod name in a cluster).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// What this replica should do with the Lease as it is now.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// No Lease yet: create it, held by us.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Someone else held it and let it expire (or released it): take it over.
    TakeOver,
    /// Someone else holds it; look again after this long.
    Wait(Duration),
}

/// Decides what to do with `lease` at `now` (pure).
pub fn decide(
    lease: Option<&Lease>,
    identity: &str,
    now: Timestamp,
    default_duration: Duration,
) -> LeaseAction {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return if lease.is_some() {
            LeaseAction::TakeOver
        } else {
            LeaseAction::Create
        };
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return LeaseAction::Renew;
    }
    if holder.is_empty() {
        return LeaseAction::TakeOver;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(default_duration);
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return LeaseAction::TakeOver;
    };
    let expires = renewed.0 + SignedDuration::try_from(duration).unwrap_or(SignedDuration::ZERO);
    if now >= expires {
        LeaseAction::TakeOver
    } else {
        let left = expires.duration_since(now).unsigned_abs();
        LeaseAction::Wait(Duration::from_secs(left.as_secs().max(1)).min(duration))
    }
}

/// The Lease as this replica writes it when it takes or renews it.
pub fn held_lease(
    previous: Option<&Lease>,
    config: &LeaderConfig,
    now: Timestamp,
    taking_over: bool,
) -> Lease {
    let old = previous.and_then(|l| l.spec.clone()).unwrap_or_default();
    let transitions =
        old.lease_transitions.unwrap_or(0) + i32::from(taking_over && previous.is_some());
    Lease {
        metadata: ObjectMeta {
            name: Some(config.lease_name.clone()),
            namespace: Some(config.namespace.clone()),
            resource_version: previous.and_then(|l| l.metadata.resource_version.clone()),
            ..previous.map(|l| l.metadata.clone()).unwrap_or_default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: i32::try_from(config.lease_duration.as_secs()).ok(),
            acquire_time: if taking_over || previous.is_none() {
                Some(MicroTime(now))
            } else {
                old.acquire_time.clone()
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }),
    }
}

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease {0}: {1}")]
    Kube(String, #[source] kube::Error),
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaderConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self { api, config }
    }

    /// One round: returns true when this replica holds the Lease afterwards, or how long to
    /// wait before the next round.
    async fn try_hold(&self) -> Result<Result<(), Duration>, LeaderError> {
        let name = &self.config.lease_name;
        let err = |e| LeaderError::Kube(name.clone(), e);
        let current = self.api.get_opt(name).await.map_err(err)?;
        let now = Timestamp::now();
        let lease = match decide(
            current.as_ref(),
            &self.config.identity,
            now,
            self.config.lease_duration,
        ) {
            LeaseAction::Wait(after) => return Ok(Err(after)),
            LeaseAction::Create => held_lease(None, &self.config, now, true),
            LeaseAction::Renew => held_lease(current.as_ref(), &self.config, now, false),
            LeaseAction::TakeOver => held_lease(current.as_ref(), &self.config, now, true),
        };
        let written = match current {
            None => self.api.create(&PostParams::default(), &lease).await,
            Some(_) => self.api.replace(name, &PostParams::default(), &lease).await,
        };
        match written {
            Ok(_) => Ok(Ok(())),
            // Another replica wrote first (409 on a stale resourceVersion or an existing name).
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Err(self.config.renew_every)),
            Err(e) => Err(err(e)),
        }
    }

    /// Waits until this replica holds the Lease. Returns false if `stop` resolved first.
    pub async fn acquire(&self, stop: impl std::future::Future<Output = ()>) -> bool {
        tokio::pin!(stop);
        loop {
            let wait = match self.try_hold().await {
                Ok(Ok(())) => {
                    info!(lease = %self.config.lease_name, identity = %self.config.identity, "became leader");
                    return true;
                }
                Ok(Err(after)) => after,
                Err(e) => {
                    warn!(error = %e, "leader election failed; retrying");
                    self.config.renew_every
                }
            };
            tokio::select! {
                _ = &mut stop => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Renews the Lease until a renewal has failed for a whole lease duration; then returns
    /// (leadership is lost and the caller must stop acting).
    pub async fn hold(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_every).await;
            match self.try_hold().await {
                Ok(Ok(())) => last_renewed = tokio::time::Instant::now(),
                Ok(Err(_)) => {
                    warn!(lease = %self.config.lease_name, "another replica holds the lease");
                    return;
                }
                Err(e) => warn!(error = %e, "could not renew the lease"),
            }
            if last_renewed.elapsed() >= self.config.lease_duration {
                return;
            }
        }
    }

    /// Gives the Lease up so that another replica can take over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.lease_name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.config.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.config.lease_name, "released the lease"),
            Err(e) => warn!(error = %e, "could not release the lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LeaderConfig {
        LeaderConfig {
            lease_name: "kubexec-operator".into(),
            namespace: "kubexec-system".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    fn lease(holder: Option<&str>, renewed: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("kubexec-operator".into()),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                acquire_time: Some(MicroTime(renewed)),
                lease_transitions: Some(2),
                ..Default::default()
            }),
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("timestamp")
    }

    #[test]
    fn missing_lease_is_created() {
        assert_eq!(
            decide(None, "me", at(0), Duration::from_secs(15)),
            LeaseAction::Create
        );
    }

    #[test]
    fn own_lease_is_renewed() {
        assert_eq!(
            decide(
                Some(&lease(Some("me"), at(0))),
                "me",
                at(3),
                Duration::from_secs(15)
            ),
            LeaseAction::Renew
        );
    }

    #[test]
    fn live_foreign_lease_is_waited_for_until_it_expires() {
        let l = lease(Some("other"), at(0));
        assert_eq!(
            decide(Some(&l), "me", at(10), Duration::from_secs(15)),
            LeaseAction::Wait(Duration::from_secs(5))
        );
        assert_eq!(
            decide(Some(&l), "me", at(15), Duration::from_secs(15)),
            LeaseAction::TakeOver
        );
    }

    #[test]
    fn released_lease_is_taken_at_once() {
        assert_eq!(
            decide(
                Some(&lease(None, at(0))),
                "me",
                at(1),
                Duration::from_secs(15)
            ),
            LeaseAction::TakeOver
        );
    }

    #[test]
    fn taking_over_counts_a_transition_and_keeps_the_resource_version() {
        let old = lease(Some("other"), at(0));
        let new = held_lease(Some(&old), &config(), at(20), true);
        let spec = new.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(new.metadata.resource_version.as_deref(), Some("7"));
    }

    #[test]
    fn renewing_keeps_the_acquire_time() {
        let old = lease(Some("me"), at(0));
        let spec = held_lease(Some(&old), &config(), at(5), false)
            .spec
            .expect("spec");
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(5))));
        assert_eq!(spec.lease_transitions, Some(2));
    }
}
