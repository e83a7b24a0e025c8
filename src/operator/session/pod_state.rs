//! What an observed sandbox Pod means for a Session that should be running. Pure.

use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Time};
use kube::ResourceExt;

use super::desired::DesiredPod;

/// The state of the sandbox Pod, as far as the Session controller acts on it.
#[derive(Clone, Debug, PartialEq)]
pub enum PodState {
    /// There is no Pod.
    Missing,
    /// The previous Pod is still terminating.
    Terminating,
    /// The Pod failed, was evicted or exited, for the reason in `why`.
    Stopped {
        /// uid of the stopped Pod.
        uid: Option<String>,
        /// Its reason, else its message, else its phase.
        why: String,
    },
    /// The Pod was built from another spec.
    Outdated {
        /// uid of the outdated Pod.
        uid: Option<String>,
    },
    /// The Pod is ready.
    Ready {
        /// When its Ready condition last turned true.
        since: Time,
        /// Its IP.
        ip: Option<String>,
    },
    /// The Pod is starting.
    Starting {
        /// What a container is waiting for, when it says.
        waiting: Option<String>,
        /// Its IP, if it has one yet.
        ip: Option<String>,
    },
}

/// Classifies the observed Pod against the desired one. The first state that applies wins: a
/// terminating Pod is waited for whatever else holds, and a stopped one is replaced as lost
/// even when the spec changed too.
pub fn pod_state(pod: Option<&Pod>, desired: &DesiredPod) -> PodState {
    let Some(pod) = pod else {
        return PodState::Missing;
    };
    let ip = || pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    if pod.metadata.deletion_timestamp.is_some() {
        PodState::Terminating
    } else if matches!(pod_phase(pod), "Failed" | "Succeeded") {
        PodState::Stopped {
            uid: pod.uid(),
            why: stop_reason(pod),
        }
    } else if desired.is_outdated(pod) {
        PodState::Outdated { uid: pod.uid() }
    } else if let Some(since) = ready_since(pod) {
        PodState::Ready { since, ip: ip() }
    } else {
        PodState::Starting {
            waiting: waiting_message(pod),
            ip: ip(),
        }
    }
}

fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn stop_reason(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.reason.clone().or_else(|| s.message.clone()))
        .unwrap_or_else(|| pod_phase(pod).to_string())
}

fn ready_since(pod: &Pod) -> Option<Time> {
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        ready
            .last_transition_time
            .clone()
            .unwrap_or(Time(Timestamp::UNIX_EPOCH)),
    )
}

/// Why a Pod is not ready yet, from its containers' waiting states. The routine reasons of a
/// Pod that is simply starting say nothing a user can act on, so they are skipped.
fn waiting_message(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find_map(|cs| {
            let waiting = cs.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            if reason == "ContainerCreating" || reason == "PodInitializing" {
                return None;
            }
            Some(match waiting.message.as_deref() {
                Some(msg) => format!("{}: {reason}: {msg}", cs.name),
                None => format!("{}: {reason}", cs.name),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Session, SessionSpec};
    use crate::operator::config::SandboxConfig;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
    };

    fn desired(image: Option<&str>) -> DesiredPod {
        let mut s = Session::new(
            "demo",
            SessionSpec {
                ttl_seconds: 3600,
                image: image.map(str::to_string),
                ..SessionSpec::default()
            },
        );
        s.metadata.namespace = Some("ns".into());
        DesiredPod::build(&s, &SandboxConfig::default()).expect("valid")
    }

    /// The desired Pod as the apiserver reports it, with this status.
    fn observed(status: PodStatus) -> Pod {
        let mut pod = *desired(None).into_pod();
        pod.metadata.uid = Some("pod-uid".into());
        pod.status = Some(status);
        pod
    }

    fn ready_at(secs: i64) -> PodStatus {
        PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.0.0.7".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(Timestamp::from_second(secs).expect("valid"))),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }
    }

    fn waiting(container: &str, reason: &str) -> ContainerStatus {
        ContainerStatus {
            name: container.into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: None,
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn missing_ready_and_starting() {
        let want = desired(None);
        assert_eq!(pod_state(None, &want), PodState::Missing);
        assert_eq!(
            pod_state(Some(&observed(ready_at(3))), &want),
            PodState::Ready {
                since: Time(Timestamp::from_second(3).expect("valid")),
                ip: Some("10.0.0.7".into())
            }
        );
        assert_eq!(
            pod_state(Some(&observed(PodStatus::default())), &want),
            PodState::Starting {
                waiting: None,
                ip: None
            }
        );
    }

    #[test]
    fn routine_waiting_reasons_are_skipped() {
        let status = PodStatus {
            init_container_statuses: Some(vec![waiting("install-runner", "PodInitializing")]),
            container_statuses: Some(vec![waiting("sandbox", "ImagePullBackOff")]),
            ..PodStatus::default()
        };
        assert_eq!(
            pod_state(Some(&observed(status)), &desired(None)),
            PodState::Starting {
                waiting: Some("sandbox: ImagePullBackOff".into()),
                ip: None
            }
        );
    }

    #[test]
    fn terminating_wins_over_stopped_and_stopped_over_outdated() {
        let mut stopped = observed(PodStatus {
            phase: Some("Succeeded".into()),
            ..PodStatus::default()
        });
        let other_spec = desired(Some("other:1"));
        assert_eq!(
            pod_state(Some(&stopped), &other_spec),
            PodState::Stopped {
                uid: Some("pod-uid".into()),
                why: "Succeeded".into()
            },
            "no reason or message: the phase says why"
        );
        stopped.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert_eq!(
            pod_state(Some(&stopped), &other_spec),
            PodState::Terminating
        );
    }

    #[test]
    fn a_ready_pod_from_another_spec_is_outdated() {
        assert_eq!(
            pod_state(Some(&observed(ready_at(3))), &desired(Some("other:1"))),
            PodState::Outdated {
                uid: Some("pod-uid".into())
            }
        );
    }
}
