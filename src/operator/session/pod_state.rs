//! What an observed sandbox Pod means for a Session that should be running. Pure.
//!
//! A sandbox is ready when its runner answers a ping through exec ([`RunnerAnswer`]), not when
//! the kubelet's next relist reports the container: exec works as soon as the container has
//! started, a relist (up to a second) earlier.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{ContainerStatus, Pod},
    apimachinery::pkg::api::resource::Quantity,
};
use kube::ResourceExt;

use crate::layout::{INSTALL_CONTAINER, SANDBOX_CONTAINER};

use super::desired::{same_quantity, DesiredPod};

/// What pinging the sandbox's runner found out, this reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RunnerAnswer {
    /// Not pinged: the Pod is not bound or running yet, or it already answered once.
    #[default]
    NotAsked,
    /// The runner answered.
    Answered,
    /// The runner did not answer within one round of pings; the last failure.
    Silent {
        /// Why the last ping failed.
        why: String,
    },
}

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
    /// The sandbox has no runner: its container (or the init container copying it) cannot
    /// start it.
    RunnerMissing {
        /// What the runtime said.
        detail: String,
    },
    /// The runner answers (now, or it did before and the container still runs).
    Ready {
        /// Its IP.
        ip: Option<String>,
        /// It answered in this reconcile (not only before).
        just_answered: bool,
    },
    /// The Pod is starting.
    Starting {
        /// What a container is waiting for, when it says, or why the runner did not answer.
        waiting: Option<String>,
        /// Its IP, if it has one yet.
        ip: Option<String>,
    },
}

/// Classifies the observed Pod against the desired one. The first state that applies wins: a
/// terminating Pod is waited for whatever else holds, and a stopped one is replaced as lost
/// even when the spec changed too. `answered_before` says the Session was already Ready on
/// this Pod: it stays so while the sandbox container is not reported down.
pub fn pod_state(
    pod: Option<&Pod>,
    desired: &DesiredPod,
    runner: &RunnerAnswer,
    answered_before: bool,
) -> PodState {
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
    } else if let Some(detail) = runner_missing(pod) {
        PodState::RunnerMissing { detail }
    } else if *runner == RunnerAnswer::Answered && ip().is_some() {
        PodState::Ready {
            ip: ip(),
            just_answered: true,
        }
    } else if answered_before && !sandbox_down(pod) {
        PodState::Ready {
            ip: ip(),
            just_answered: false,
        }
    } else {
        let silent = match runner {
            RunnerAnswer::Silent { why } => Some(format!("the runner has not answered: {why}")),
            // Ready names the Pod's IP (previews and clients connect to it); the kubelet
            // reports it with its next status, usually with or before the container.
            RunnerAnswer::Answered => Some("the runner answered; waiting for the Pod's IP".into()),
            RunnerAnswer::NotAsked => None,
        };
        PodState::Starting {
            waiting: waiting_message(pod).or(silent),
            ip: ip(),
        }
    }
}

/// True when the runner should be pinged: the Pod is bound to a node, is neither going nor
/// stopped, and its sandbox container is not reported down (a container that cannot start
/// will not answer; its status says why). Exec reaches a container as soon as it has started,
/// which the kubelet reports only at its next relist, so a bound Pod is pinged before it looks
/// running. A Session already Ready on the Pod is not pinged again while it runs.
pub fn needs_ping(pod: Option<&Pod>, answered_before: bool) -> bool {
    let Some(pod) = pod else {
        return false;
    };
    let bound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
    bound
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod_phase(pod), "Failed" | "Succeeded")
        && !sandbox_down(pod)
        && runner_missing(pod).is_none()
        && !(answered_before && sandbox_running(pod))
}

/// The requests of the sandbox container in `pod`'s spec (what a resize asked for) and as the
/// kubelet reports them applied (`status.containerStatuses[].resources`; `None` when it
/// reports none, as kubelets without in-place resize do).
pub fn sandbox_requests(pod: &Pod) -> (Requests, Option<Requests>) {
    let wanted = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.iter().find(|c| c.name == SANDBOX_CONTAINER))
        .and_then(|c| c.resources.as_ref()?.requests.as_ref())
        .map(to_strings)
        .unwrap_or_default();
    let applied = sandbox_status(pod)
        .and_then(|c| c.resources.as_ref()?.requests.as_ref())
        .map(to_strings);
    (wanted, applied)
}

/// Resource requests by name, as quantity strings.
pub type Requests = BTreeMap<String, String>;

fn to_strings(map: &BTreeMap<String, Quantity>) -> Requests {
    map.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()
}

/// True when `actual` holds every request of `want` with the same quantity.
pub fn requests_match(actual: &Requests, want: &Requests) -> bool {
    want.iter()
        .all(|(key, value)| same_quantity(actual.get(key), Some(value)))
}

/// Why the kubelet has not applied a resize, when it says it cannot now (`PodResizePending`:
/// `Deferred` until the node has room, or `Infeasible`).
pub fn resize_pending(pod: &Pod) -> Option<String> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodResizePending" && c.status == "True")?;
    let reason = condition.reason.clone().unwrap_or_else(|| "Pending".into());
    Some(match condition.message.as_deref() {
        Some(message) if !message.is_empty() => format!("{reason}: {message}"),
        _ => reason,
    })
}

fn sandbox_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == SANDBOX_CONTAINER)
}

fn sandbox_running(pod: &Pod) -> bool {
    sandbox_status(pod)
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

/// The kubelet reports the sandbox container ended or failing to start (anything but the
/// routine wait of a container being created).
fn sandbox_down(pod: &Pod) -> bool {
    let Some(state) = sandbox_status(pod).and_then(|c| c.state.as_ref()) else {
        return false;
    };
    state.terminated.is_some()
        || state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref())
            .is_some_and(|reason| !is_routine_wait(reason))
}

fn is_routine_wait(reason: &str) -> bool {
    reason == "ContainerCreating" || reason == "PodInitializing"
}

/// The runtime's words when a container's command (the runner, in the sandbox; the runner
/// image's own binary, in the init container) does not exist: the runner volume is empty.
fn runner_missing(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter(|cs| cs.name == SANDBOX_CONTAINER || cs.name == INSTALL_CONTAINER)
        .flat_map(|cs| {
            let now = cs.state.as_ref();
            let last = cs.last_state.as_ref();
            [
                now.and_then(|s| s.waiting.as_ref()?.message.clone()),
                now.and_then(|s| s.terminated.as_ref()?.message.clone()),
                last.and_then(|s| s.terminated.as_ref()?.message.clone()),
            ]
        })
        .flatten()
        .find(|message| {
            message.contains("kubexec-runner") && message.contains("no such file or directory")
        })
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
            if is_routine_wait(reason) {
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
    use jiff::Timestamp;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        PodCondition, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

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

    /// The desired Pod as the apiserver reports it once bound, with this status.
    fn observed(status: PodStatus) -> Pod {
        let mut pod = *desired(None).into_pod();
        pod.metadata.uid = Some("pod-uid".into());
        pod.spec.get_or_insert_with(PodSpec::default).node_name = Some("node-1".into());
        pod.status = Some(status);
        pod
    }

    /// Ready as the kubelet reports it, which is not what makes a Session ready.
    fn kubelet_ready() -> PodStatus {
        PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.0.0.7".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(Timestamp::from_second(3).expect("valid"))),
                ..PodCondition::default()
            }]),
            container_statuses: Some(vec![container(
                SANDBOX_CONTAINER,
                ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..ContainerState::default()
                },
            )]),
            ..PodStatus::default()
        }
    }

    fn container(name: &str, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(state),
            ..ContainerStatus::default()
        }
    }

    fn waiting(name: &str, reason: &str, message: Option<&str>) -> ContainerStatus {
        container(
            name,
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: message.map(str::to_string),
                }),
                ..ContainerState::default()
            },
        )
    }

    fn state(pod: &Pod, runner: RunnerAnswer, before: bool) -> PodState {
        pod_state(Some(pod), &desired(None), &runner, before)
    }

    #[test]
    fn only_an_answer_makes_the_pod_ready() {
        let want = desired(None);
        assert_eq!(
            pod_state(None, &want, &RunnerAnswer::Answered, false),
            PodState::Missing
        );
        let pod = observed(kubelet_ready());
        assert_eq!(
            state(&pod, RunnerAnswer::Answered, false),
            PodState::Ready {
                ip: Some("10.0.0.7".into()),
                just_answered: true
            }
        );
        let silent = RunnerAnswer::Silent {
            why: "exec failed".into(),
        };
        assert_eq!(
            state(&pod, silent, false),
            PodState::Starting {
                waiting: Some("the runner has not answered: exec failed".into()),
                ip: Some("10.0.0.7".into())
            },
            "the kubelet's Ready is not enough"
        );
        let starting = observed(PodStatus {
            pod_ip: Some("10.0.0.8".into()),
            ..PodStatus::default()
        });
        assert_eq!(
            state(&starting, RunnerAnswer::Answered, false),
            PodState::Ready {
                ip: Some("10.0.0.8".into()),
                just_answered: true
            },
            "an answer before the kubelet reports the container counts"
        );
        let without_ip = observed(PodStatus::default());
        assert_eq!(
            state(&without_ip, RunnerAnswer::Answered, false),
            PodState::Starting {
                waiting: Some("the runner answered; waiting for the Pod's IP".into()),
                ip: None
            },
            "Ready always names the Pod's IP"
        );
    }

    #[test]
    fn a_pod_that_answered_stays_ready_until_its_container_goes_down() {
        let pod = observed(kubelet_ready());
        assert_eq!(
            state(&pod, RunnerAnswer::NotAsked, true),
            PodState::Ready {
                ip: Some("10.0.0.7".into()),
                just_answered: false
            }
        );
        assert!(!needs_ping(Some(&pod), true), "no ping while it runs");
        let mut crashed = kubelet_ready();
        crashed.container_statuses =
            Some(vec![waiting(SANDBOX_CONTAINER, "CrashLoopBackOff", None)]);
        let crashed = observed(crashed);
        assert_eq!(
            state(&crashed, RunnerAnswer::NotAsked, true),
            PodState::Starting {
                waiting: Some("sandbox: CrashLoopBackOff".into()),
                ip: Some("10.0.0.7".into())
            }
        );
        assert!(
            !needs_ping(Some(&crashed), true),
            "a down container is not pinged"
        );
    }

    #[test]
    fn a_bound_pod_is_pinged_before_it_looks_running() {
        assert!(!needs_ping(None, false));
        let mut unbound = observed(PodStatus::default());
        assert!(needs_ping(Some(&unbound), false));
        unbound.spec.as_mut().expect("spec").node_name = None;
        assert!(!needs_ping(Some(&unbound), false), "not scheduled yet");
        let creating = observed(PodStatus {
            container_statuses: Some(vec![waiting(SANDBOX_CONTAINER, "ContainerCreating", None)]),
            ..PodStatus::default()
        });
        assert!(needs_ping(Some(&creating), false));
        let mut going = observed(kubelet_ready());
        going.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert!(!needs_ping(Some(&going), false));
    }

    #[test]
    fn an_empty_runner_volume_is_named() {
        let message = "failed to create containerd task: exec: \"/kubexec/bin/kubexec-runner\": stat /kubexec/bin/kubexec-runner: no such file or directory: unknown";
        let terminated = container(
            SANDBOX_CONTAINER,
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    reason: Some("StartError".into()),
                    message: Some(message.into()),
                    exit_code: 128,
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            },
        );
        let pod = observed(PodStatus {
            container_statuses: Some(vec![terminated]),
            ..PodStatus::default()
        });
        assert_eq!(
            state(&pod, RunnerAnswer::NotAsked, false),
            PodState::RunnerMissing {
                detail: message.into()
            }
        );
        assert!(!needs_ping(Some(&pod), false));
        let mut later = pod.clone();
        let status = later.status.as_mut().expect("status");
        let mut crash = waiting(SANDBOX_CONTAINER, "CrashLoopBackOff", Some("back-off"));
        crash.last_state = status.container_statuses.as_ref().expect("statuses")[0]
            .state
            .clone();
        status.container_statuses = Some(vec![crash]);
        assert!(matches!(
            state(&later, RunnerAnswer::NotAsked, true),
            PodState::RunnerMissing { .. }
        ));
    }

    #[test]
    fn routine_waiting_reasons_are_skipped() {
        let status = PodStatus {
            init_container_statuses: Some(vec![waiting(
                INSTALL_CONTAINER,
                "PodInitializing",
                None,
            )]),
            container_statuses: Some(vec![waiting(SANDBOX_CONTAINER, "ImagePullBackOff", None)]),
            ..PodStatus::default()
        };
        assert_eq!(
            state(&observed(status), RunnerAnswer::NotAsked, false),
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
        let none = RunnerAnswer::NotAsked;
        assert_eq!(
            pod_state(Some(&stopped), &other_spec, &none, false),
            PodState::Stopped {
                uid: Some("pod-uid".into()),
                why: "Succeeded".into()
            },
            "no reason or message: the phase says why"
        );
        stopped.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert_eq!(
            pod_state(Some(&stopped), &other_spec, &none, false),
            PodState::Terminating
        );
    }

    #[test]
    fn a_ready_pod_from_another_spec_is_outdated() {
        let pod = observed(kubelet_ready());
        assert_eq!(
            pod_state(
                Some(&pod),
                &desired(Some("other:1")),
                &RunnerAnswer::Answered,
                true
            ),
            PodState::Outdated {
                uid: Some("pod-uid".into())
            }
        );
    }
}
