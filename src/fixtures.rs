//! Test helpers: a mocked apiserver that expects the reconciler's HTTP calls in order.
//!
//! `Context::test()` gives a Context whose client talks to a `tower_test` mock. The
//! [`ApiServerVerifier`] answers each expected call as the apiserver would and asserts on its
//! method, path and body. A missing call shows up as a timeout; an unexpected one as an
//! error in the reconciler (the mock is gone once the scenario has run).

use std::{sync::Arc, time::Duration};

use http::{Method, Request, Response, StatusCode};
use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{Pod, PodCondition, PodStatus},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{client::Body, Client, ResourceExt};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle, SendResponse};

use crate::crd::{Session, SessionPhase, SessionSpec, SessionStatus};
use crate::operator::{
    config::SandboxConfig,
    session::{build::build_pod, status::FIELD_MANAGER},
    Context, Metrics,
};

pub const NS: &str = "testns";
pub const SESSION: &str = "demo";
const POD: &str = "demo-sandbox";

impl Session {
    /// A Session created ten seconds ago in [`NS`].
    pub fn test() -> Self {
        let mut s = Session::new(
            SESSION,
            SessionSpec {
                ttl_seconds: 3600,
                ..SessionSpec::default()
            },
        );
        s.metadata.namespace = Some(NS.into());
        s.metadata.uid = Some("session-uid".into());
        s.metadata.generation = Some(1);
        s.metadata.resource_version = Some("1".into());
        let now = Timestamp::now().as_second();
        let created = Timestamp::from_second(now - 10).unwrap_or(Timestamp::UNIX_EPOCH);
        s.metadata.creation_timestamp = Some(Time(created));
        s
    }

    /// Sets the status phase and Pod name, as after an earlier reconcile.
    pub fn with_phase(mut self, phase: SessionPhase, pod: Option<&str>) -> Self {
        self.status = Some(SessionStatus {
            phase: Some(phase),
            pod_name: pod.map(str::to_string),
            ..SessionStatus::default()
        });
        self
    }
}

/// The sandbox Pod of `session`, Running and Ready since a second after the Session's creation.
pub fn ready_pod(session: &Session) -> Pod {
    let since = session
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0 + jiff::SignedDuration::from_secs(1))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let mut pod = build_pod(session, &SandboxConfig::default()).expect("pod builds");
    pod.metadata.uid = Some("pod-uid".into());
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some("10.1.2.3".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(Time(since)),
            ..PodCondition::default()
        }]),
        ..PodStatus::default()
    });
    pod
}

type Pending = (Request<Body>, SendResponse<Response<Body>>);

/// Answers the reconciler's calls in order.
pub struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

/// What a reconcile is expected to do, call by call.
pub enum Scenario {
    /// New Session, no Pod: GET pod (404), POST pod, status Pending, POST event PodCreated.
    Create(Session),
    /// Pod Ready to the kubelet, but not bound here, so its runner is not pinged: GET pod,
    /// status Pending (readiness comes from the runner, never from the kubelet alone).
    BecomesReady(Session),
    /// TTL passed: GET pod, status Expired, POST event Expired, DELETE session.
    Expire(Session),
    /// spec.suspend: GET pod, DELETE pod, status Suspended, POST event Suspended.
    Suspend(Session),
    /// Pod gone while Ready: GET pod (404), POST pod, status Pending, POST Warning PodLost.
    PodLost(Session),
    /// Persistent workspace: GET pod (404), POST claim, POST pod, status, event.
    CreatePersistent(Session),
    /// Ready and unchanged: GET pod, nothing else.
    Steady(Session),
    /// `spec.network.egress` changed under a Ready Pod: GET pod (this one), PATCH its labels,
    /// POST event PodRelabeled. No DELETE and no new Pod.
    Relabel {
        /// The Pod as it runs, with the labels of the old spec.
        pod: Box<Pod>,
        /// The egress label value the PATCH must set.
        egress: &'static str,
    },
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).expect("serializable")))
        .expect("response")
}

fn not_found(kind: &str, name: &str) -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound", "code": 404
        }),
    )
}

async fn body_json(request: Request<Body>) -> Value {
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body");
    serde_json::from_slice(&bytes).expect("JSON body")
}

impl ApiServerVerifier {
    async fn next(&mut self, what: &str) -> Pending {
        self.0
            .next_request()
            .await
            .unwrap_or_else(|| panic!("the reconciler never sent: {what}"))
    }

    async fn expect(&mut self, method: Method, path: &str) -> Pending {
        let (request, send) = self.next(&format!("{method} {path}")).await;
        assert_eq!(
            (request.method(), request.uri().path()),
            (&method, path),
            "unexpected call {} {}",
            request.method(),
            request.uri()
        );
        (request, send)
    }

    async fn get_pod(&mut self, pod: Option<Pod>) {
        let (_, send) = self
            .expect(Method::GET, &format!("/api/v1/namespaces/{NS}/pods/{POD}"))
            .await;
        send.send_response(match pod {
            Some(pod) => json_response(StatusCode::OK, &pod),
            None => not_found("pods", POD),
        });
    }

    async fn create_pod(&mut self) -> Pod {
        let (request, send) = self
            .expect(Method::POST, &format!("/api/v1/namespaces/{NS}/pods"))
            .await;
        let pod: Pod = serde_json::from_value(body_json(request).await).expect("a Pod");
        assert_eq!(pod.name_any(), POD);
        send.send_response(json_response(StatusCode::CREATED, &pod));
        pod
    }

    async fn create_claim(&mut self) {
        let (request, send) = self
            .expect(
                Method::POST,
                &format!("/api/v1/namespaces/{NS}/persistentvolumeclaims"),
            )
            .await;
        let claim = body_json(request).await;
        assert_eq!(claim["metadata"]["name"], "demo-workspace");
        assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
        send.send_response(json_response(StatusCode::CREATED, &claim));
    }

    async fn delete_pod(&mut self) {
        let (request, send) = self
            .expect(
                Method::DELETE,
                &format!("/api/v1/namespaces/{NS}/pods/{POD}"),
            )
            .await;
        let params = body_json(request).await;
        assert_eq!(
            params["preconditions"]["uid"], "pod-uid",
            "deletes only the Pod it saw"
        );
        send.send_response(json_response(
            StatusCode::OK,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
        ));
    }

    /// Expects a merge patch of the Pod's labels and returns them.
    async fn patch_pod_labels(&mut self, pod: &Pod) -> Value {
        let (request, send) = self
            .expect(
                Method::PATCH,
                &format!("/api/v1/namespaces/{NS}/pods/{POD}"),
            )
            .await;
        assert_eq!(
            request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/merge-patch+json")
        );
        let patch = body_json(request).await;
        let labels = patch["metadata"]["labels"].clone();
        assert_eq!(
            patch,
            json!({"metadata": {"labels": labels}}),
            "only labels"
        );
        let mut patched = pod.clone();
        if let Some(map) = labels.as_object() {
            let pod_labels = patched.metadata.labels.get_or_insert_with(Default::default);
            for (key, value) in map {
                pod_labels.insert(key.clone(), value.as_str().unwrap_or_default().into());
            }
        }
        send.send_response(json_response(StatusCode::OK, &patched));
        labels
    }

    async fn event(&mut self, reason: &str, type_: &str) {
        let (request, send) = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
            )
            .await;
        let event = body_json(request).await;
        assert_eq!(event["reason"], reason, "event {event}");
        assert_eq!(event["type"], type_, "event {event}");
        assert_eq!(event["regarding"]["kind"], "Session");
        assert_eq!(event["regarding"]["name"], SESSION);
        send.send_response(json_response(StatusCode::CREATED, &event));
    }

    /// Expects a server-side apply of the status and returns it.
    async fn status(&mut self, session: &Session, phase: SessionPhase) -> SessionStatus {
        let (request, send) = self
            .expect(
                Method::PATCH,
                &format!("/apis/kubexec.dev/v1alpha1/namespaces/{NS}/sessions/{SESSION}/status"),
            )
            .await;
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(
            query.contains(&format!("fieldManager={FIELD_MANAGER}")),
            "{query}"
        );
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(
            request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/apply-patch+yaml")
        );
        let patch = body_json(request).await;
        assert_eq!(patch["apiVersion"], "kubexec.dev/v1alpha1");
        assert_eq!(patch["kind"], "Session");
        assert!(
            patch["status"].get("lastActivityAt").is_none(),
            "not ours to write"
        );
        let status: SessionStatus =
            serde_json::from_value(patch["status"].clone()).expect("a SessionStatus");
        assert_eq!(status.phase, Some(phase), "status {status:?}");
        assert!(status.expires_at.is_some());
        let mut updated = session.clone();
        updated.status = Some(status.clone());
        send.send_response(json_response(StatusCode::OK, &updated));
        status
    }

    async fn delete_session(&mut self, session: &Session) {
        let (request, send) = self
            .expect(
                Method::DELETE,
                &format!("/apis/kubexec.dev/v1alpha1/namespaces/{NS}/sessions/{SESSION}"),
            )
            .await;
        let params = body_json(request).await;
        assert_eq!(params["preconditions"]["uid"], "session-uid");
        send.send_response(json_response(StatusCode::OK, session));
    }

    /// Plays a scenario in the background.
    pub fn run(mut self, scenario: Scenario) -> JoinHandle<()> {
        tokio::spawn(async move {
            match scenario {
                Scenario::Create(session) => {
                    self.get_pod(None).await;
                    self.create_pod().await;
                    let status = self.status(&session, SessionPhase::Pending).await;
                    assert_eq!(status.pod_name.as_deref(), Some(POD));
                    self.event("PodCreated", "Normal").await;
                }
                Scenario::CreatePersistent(session) => {
                    self.get_pod(None).await;
                    self.create_claim().await;
                    let pod = self.create_pod().await;
                    let volumes = pod.spec.and_then(|s| s.volumes).unwrap_or_default();
                    assert!(volumes.iter().any(|v| v
                        .persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == "demo-workspace")));
                    self.status(&session, SessionPhase::Pending).await;
                    self.event("PodCreated", "Normal").await;
                }
                Scenario::BecomesReady(session) => {
                    self.get_pod(Some(ready_pod(&session))).await;
                    let status = self.status(&session, SessionPhase::Pending).await;
                    assert_eq!(status.pod_ip.as_deref(), Some("10.1.2.3"));
                    assert!(status.ready_at.is_none());
                    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
                    assert_eq!(ready.map(|c| c.status.as_str()), Some("False"));
                }
                Scenario::Expire(session) => {
                    self.get_pod(Some(ready_pod(&session))).await;
                    self.status(&session, SessionPhase::Expired).await;
                    self.event("Expired", "Normal").await;
                    self.delete_session(&session).await;
                }
                Scenario::Suspend(session) => {
                    self.get_pod(Some(ready_pod(&session))).await;
                    self.delete_pod().await;
                    let status = self.status(&session, SessionPhase::Suspended).await;
                    assert_eq!(status.pod_name, None);
                    self.event("Suspended", "Normal").await;
                }
                Scenario::PodLost(session) => {
                    self.get_pod(None).await;
                    self.create_pod().await;
                    self.status(&session, SessionPhase::Pending).await;
                    self.event("PodLost", "Warning").await;
                }
                Scenario::Steady(session) => {
                    self.get_pod(Some(ready_pod(&session))).await;
                }
                Scenario::Relabel { pod, egress } => {
                    self.get_pod(Some((*pod).clone())).await;
                    let labels = self.patch_pod_labels(&pod).await;
                    assert_eq!(labels, json!({ crate::crd::labels::EGRESS: egress }));
                    self.event("PodRelabeled", "Normal").await;
                }
            }
        })
    }
}

impl Context {
    /// A Context whose client talks to the returned verifier.
    pub fn test() -> (Arc<Self>, ApiServerVerifier) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, NS);
        let ctx = Context::new(
            client,
            Arc::new(Metrics::default()),
            SandboxConfig::default(),
            None,
        );
        // As after the Execution watch's first list: no Execution runs anywhere.
        ctx.executions_by_session
            .observe(&kube::runtime::watcher::Event::InitDone);
        (Arc::new(ctx), ApiServerVerifier(handle))
    }
}

/// Waits for a scenario, failing fast if the reconciler did not make every expected call.
pub async fn timeout_after_1s(handle: JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .expect("timed out: the reconciler did not make every expected call")
        .expect("scenario failed");
}
