//! Session lifecycle on the real cluster (issue 16, parts 1 and 2): sleep gives back the
//! Pod's requests in place and keeps its processes, deep sleep keeps a persistent workspace's
//! files, a request on a sleeping or deep-sleeping session wakes it and succeeds, a running
//! execution holds back deep sleep, and a spec change waits for it. Times are shortened to a
//! few seconds.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use kubexec::crd::quantity::Quantity;
use kubexec::crd::{find_condition, Execution, ExecutionPhase, Session, SessionPhase};
use kubexec_e2e::api::ApiServer;
use kubexec_e2e::{create_session, pod_of, wait_for, wait_gone, wait_until, TestNs};
use serde_json::json;

fn phase(s: &Session) -> Option<SessionPhase> {
    s.status.as_ref().and_then(|st| st.phase)
}

fn ready_reason(s: &Session) -> Option<String> {
    let status = s.status.as_ref()?;
    find_condition(&status.conditions, "Ready").map(|c| c.reason.clone())
}

/// The sandbox container's CPU request: in the Pod's spec, and as the kubelet reports it.
fn cpu_requests(pod: &Pod) -> (Option<Quantity>, Option<Quantity>) {
    let parse = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.and_then(|q| Quantity::parse(&q.0).ok())
    };
    let spec = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == "sandbox"))
        .and_then(|c| c.resources.as_ref()?.requests.as_ref()?.get("cpu").cloned());
    let reported = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "sandbox"))
        .and_then(|c| c.resources.as_ref()?.requests.as_ref()?.get("cpu").cloned());
    (parse(spec.as_ref()), parse(reported.as_ref()))
}

fn cpu_limit(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "sandbox")?
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("cpu")
        .map(|q| q.0.clone())
}

async fn event_reasons(ns: &TestNs, session: &str) -> Vec<String> {
    let events: kube::Api<Event> = ns.api();
    let selector = format!("involvedObject.name={session}");
    events
        .list(&ListParams::default().fields(&selector))
        .await
        .map(|list| list.items.into_iter().filter_map(|e| e.reason).collect())
        .unwrap_or_default()
}

/// Sleep → a request wakes it (same Pod, same processes) → deep sleep → a request resumes it
/// (new Pod, same files), all through the REST api, which waits without an error.
#[tokio::test]
async fn sleep_keeps_processes_deep_sleep_keeps_files_and_a_request_wakes_either() {
    let ns = TestNs::new("life-sleep").await;
    let api = ApiServer::start(&ns.name, &[]);
    let key = api.create_key(&ns.name, "free").await;
    let http = api.client();
    create_session(
        &ns,
        "nap",
        json!({
            "sleepAfterSeconds": 3,
            "idleTimeoutSeconds": 12,
            "workspace": {"persistent": true, "size": "64Mi"}
        }),
    )
    .await;
    let execute = |command: &str| {
        let body = json!({"sessionId": "nap", "command": command});
        let http = &http;
        let key = &key;
        async move {
            let reply = http.post("/execute", Some(key), &body).await;
            assert_eq!(reply.status, 200, "{body}: {}", reply.text());
            let json = reply.json();
            assert_eq!(json["exitCode"], 0, "{json}");
            json["stdout"].as_str().unwrap_or_default().to_string()
        }
    };
    execute("sleep 1000 >/dev/null 2>&1 & echo $! > /workspace/bg.pid; echo kept > note.txt").await;

    // Sleep: the Pod stays, its CPU request drops to the operator's sleep value (10m), as the
    // kubelet reports it; the limit does not change.
    let sessions = ns.api::<Session>();
    let pods = ns.api::<Pod>();
    let asleep = wait_for(
        &sessions,
        "nap",
        Duration::from_secs(30),
        "Sleeping",
        |s: &Session| phase(s) == Some(SessionPhase::Sleeping),
    )
    .await;
    assert_eq!(ready_reason(&asleep).as_deref(), Some("Sleeping"));
    let pod_name = pod_of(&asleep);
    let uid = pods.get(&pod_name).await.expect("pod").uid();
    let sleep_cpu = Quantity::parse("10m").ok();
    let slept = wait_for(
        &pods,
        &pod_name,
        Duration::from_secs(30),
        "the kubelet reports the sleep request",
        move |pod: &Pod| cpu_requests(pod) == (sleep_cpu, sleep_cpu),
    )
    .await;
    assert_eq!(cpu_limit(&slept).as_deref(), Some("1"), "limits unchanged");
    // The background process lives on (checked without using the session).
    assert_eq!(
        ns.sh(&pod_name, "kill -0 $(cat /workspace/bg.pid) && echo alive"),
        "alive"
    );

    // A request on the sleeping session wakes it and succeeds, on the same Pod.
    let out = execute("kill -0 $(cat /workspace/bg.pid) && echo alive").await;
    assert_eq!(out, "alive\n");
    let awake = sessions.get("nap").await.expect("session");
    assert_eq!(phase(&awake), Some(SessionPhase::Ready));
    // Ready as soon as the apiserver took the resize; the kubelet applies it at its next sync.
    let awake_cpu = Quantity::parse("100m").ok();
    let pod = wait_for(
        &pods,
        &pod_name,
        Duration::from_secs(30),
        "the kubelet reports the requests restored",
        move |pod: &Pod| cpu_requests(pod) == (awake_cpu, awake_cpu),
    )
    .await;
    assert_eq!(pod.uid(), uid, "same Pod");

    // Deep sleep: the Pod goes, the workspace stays; a request resumes it with the files.
    wait_for(
        &sessions,
        "nap",
        Duration::from_secs(40),
        "deep sleep",
        |s: &Session| {
            phase(s) == Some(SessionPhase::Suspended) && ready_reason(s).as_deref() == Some("Idle")
        },
    )
    .await;
    wait_gone(&pods, &pod_name, Duration::from_secs(30)).await;
    assert_eq!(execute("cat note.txt").await, "kept\n");
    let resumed = pods.get(&pod_name).await.expect("new pod");
    assert_ne!(resumed.uid(), uid, "a new Pod");

    wait_until(Duration::from_secs(10), "the lifecycle Events", || async {
        let reasons = event_reasons(&ns, "nap").await;
        ["Slept", "Woke", "DeepSlept", "Resumed"]
            .iter()
            .all(|r| reasons.iter().any(|seen| seen == r))
    })
    .await;
}

/// A 20 s execution in a session with a 5 s idle timeout completes; a spec change during it
/// waits (reason WaitingForExecutions, same Pod) and replaces the Pod once the run is done.
#[tokio::test]
async fn a_long_run_holds_back_deep_sleep_and_a_spec_change_waits_for_it() {
    let ns = TestNs::new("life-busy").await;
    let session = create_session(&ns, "busy", json!({"idleTimeoutSeconds": 5})).await;
    let pod_name = pod_of(&session);
    let pods = ns.api::<Pod>();
    let uid = pods.get(&pod_name).await.expect("pod").uid();
    let execution: Execution = serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "Execution",
        "metadata": {"name": "long"},
        "spec": {"sessionRef": {"name": "busy"}, "command": "sleep 20; echo done", "timeoutSeconds": 60}
    }))
    .expect("execution literal");
    let executions = ns.api::<Execution>();
    executions
        .create(&PostParams::default(), &execution)
        .await
        .expect("create execution");
    wait_for(
        &executions,
        "long",
        Duration::from_secs(30),
        "Running",
        |e: &Execution| e.status.as_ref().and_then(|s| s.phase) == Some(ExecutionPhase::Running),
    )
    .await;

    // A change that needs a new Pod waits for the run.
    let sessions = ns.api::<Session>();
    sessions
        .patch(
            "busy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"env": [{"name": "CHANGED", "value": "yes"}]}})),
        )
        .await
        .expect("patch session");
    let waiting = wait_for(
        &sessions,
        "busy",
        Duration::from_secs(15),
        "WaitingForExecutions",
        |s: &Session| ready_reason(s).as_deref() == Some("WaitingForExecutions"),
    )
    .await;
    let message = waiting.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("running executions"), "{message}");
    assert_eq!(pods.get(&pod_name).await.expect("pod").uid(), uid);

    // The run outlives the idle timeout four times over and completes.
    let done = wait_for(
        &executions,
        "long",
        Duration::from_secs(60),
        "finished",
        |e: &Execution| {
            matches!(
                e.status.as_ref().and_then(|s| s.phase),
                Some(ExecutionPhase::Succeeded | ExecutionPhase::Failed)
            )
        },
    )
    .await;
    let status = done.status.expect("status");
    assert_eq!(status.phase, Some(ExecutionPhase::Succeeded), "{status:#?}");
    assert_eq!(status.stdout.as_deref(), Some("done\n"));

    // Then the Pod is replaced, with the new env.
    wait_until(Duration::from_secs(30), "the replacement Pod", || async {
        pods.get_opt(&pod_name)
            .await
            .ok()
            .flatten()
            .is_some_and(|p| p.uid() != uid && p.metadata.deletion_timestamp.is_none())
    })
    .await;
    let reasons = event_reasons(&ns, "busy").await;
    assert!(
        reasons.iter().any(|r| r == "WaitingForExecutions"),
        "{reasons:?}"
    );
}
