//! The api's only door to Kubernetes: the [`Cluster`] trait, and [`KubeCluster`], its
//! implementation over a `kube::Client` and the shared [`Sandbox`] exec client. Routes depend on
//! the trait, so route tests run against an in-memory fake without an apiserver.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{future::BoxFuture, stream::BoxStream, FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::wait::await_condition,
    Api, Client,
};
use kubexec_runner::protocol::RunnerEvent;
use serde_json::json;

use crate::{
    crd::{Execution, Session, SessionPool, API_VERSION},
    layout::SANDBOX_CONTAINER,
    sandbox::{
        ChannelKey, ChannelMetrics, ChannelPool, HelperOutput, PoolConfig, Process, Sandbox,
        SandboxError,
    },
    shared::{
        activity::ActivityWriter,
        kube_status::{is_quota_exceeded, is_quota_uncounted, is_status, is_unavailable},
    },
};

use super::{
    errors::{ApiError, ApiResult},
    informer::{ExecutionWaiters, Subscription},
};

/// Chunks of a helper's stdout.
pub type ByteStream = BoxStream<'static, Result<bytes::Bytes, SandboxError>>;

/// What creating an object did.
#[derive(Debug)]
pub enum Created<K> {
    /// The object was created; here it is as stored.
    New(K),
    /// An object of that name exists already.
    Exists,
}

/// One Execution's versions, subscribed to before it is created, so that its result is seen
/// without reading back what was just created.
pub trait ExecutionWatch: Send {
    /// Waits until `done` holds or `timeout` passes; returns the last version seen (`None`:
    /// not seen, or deleted).
    fn until(
        &mut self,
        timeout: Duration,
        done: fn(&Execution) -> bool,
    ) -> BoxFuture<'_, ApiResult<Option<Execution>>>;
}

/// A streamed upload to a helper's stdin (`write-files`).
pub trait Upload: Send {
    /// Sends bytes to the helper's stdin.
    fn write<'a>(&'a mut self, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), SandboxError>>;
    /// Waits for the helper to end and returns its output.
    fn finish(
        self: Box<Self>,
        max_stdout: usize,
    ) -> BoxFuture<'static, Result<HelperOutput, SandboxError>>;
}

/// Everything the api does to the cluster. Namespaced operations take the tenant's namespace.
pub trait Cluster: Send + Sync + 'static {
    /// A Session, or `None`.
    fn get_session<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, ApiResult<Option<Session>>>;
    /// Every Session of a namespace.
    fn list_sessions<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, ApiResult<Vec<Session>>>;
    /// Creates a Session (its name is set).
    fn create_session<'a>(
        &'a self,
        ns: &'a str,
        session: &'a Session,
    ) -> BoxFuture<'a, ApiResult<Created<Session>>>;
    /// Deletes a Session; false when there was none.
    fn delete_session<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, ApiResult<bool>>;
    /// Records activity on a Session, which wakes a sleeping one and resumes one in deep sleep.
    fn touch_session<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, ApiResult<()>>;
    /// Watches a Session until `done` holds or `timeout` passes; returns its last state
    /// (`None` once deleted).
    fn wait_session<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        timeout: Duration,
        done: fn(&Session) -> bool,
    ) -> BoxFuture<'a, ApiResult<Option<Session>>>;
    /// Creates a Secret.
    fn create_secret<'a>(&'a self, ns: &'a str, secret: &'a Secret)
        -> BoxFuture<'a, ApiResult<()>>;
    /// Makes `owner` the owner of a Secret.
    fn own_secret<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        owner: OwnerReference,
    ) -> BoxFuture<'a, ApiResult<()>>;
    /// Deletes a Secret (missing is fine).
    fn delete_secret<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, ApiResult<()>>;
    /// Creates an Execution.
    fn create_execution<'a>(
        &'a self,
        ns: &'a str,
        execution: &'a Execution,
    ) -> BoxFuture<'a, ApiResult<Created<Execution>>>;
    /// Subscribes to the versions of an Execution that is about to be created.
    fn watch_execution(&self, ns: &str, name: &str) -> Box<dyn ExecutionWatch>;
    /// Runs a `kubexec-runner` helper to the end.
    fn helper<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
        args: Vec<String>,
        max_stdout: usize,
    ) -> BoxFuture<'a, Result<HelperOutput, SandboxError>>;
    /// Starts a helper and streams its stdout, in constant memory; a non-zero exit ends the
    /// stream with the helper's error.
    fn read_stream<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
        args: Vec<String>,
    ) -> BoxFuture<'a, Result<ByteStream, SandboxError>>;
    /// Starts a helper whose stdin the caller streams.
    fn upload<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
        args: Vec<String>,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, SandboxError>>;
    /// Follows a run's output: `kubexec-runner follow <runId>`, as a request on the api's own
    /// runner channel to the Pod (a one-shot exec when there is none). The api never asks the
    /// operator: any api replica can follow any run, whichever operator replica runs it.
    fn follow<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<RunnerEvent, SandboxError>>, SandboxError>>;
    /// Sets one annotation of a Session (a merge patch). Without its own implementation, a
    /// no-op.
    fn annotate_session<'a>(
        &'a self,
        _ns: &'a str,
        _name: &'a str,
        _key: &'a str,
        _value: &'a str,
    ) -> BoxFuture<'a, ApiResult<()>> {
        async { Ok(()) }.boxed()
    }
    /// Follows a run's output from byte offsets into its stdout and stderr (a resumed
    /// stream): `kubexec-runner follow <runId> --stdout-offset N --stderr-offset M`, over the
    /// runner channel as [`Cluster::follow`] is. Without
    /// its own implementation, offsets are ignored and the output comes from the start.
    fn follow_from<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
        run_id: &'a str,
        _stdout_offset: u64,
        _stderr_offset: u64,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<RunnerEvent, SandboxError>>, SandboxError>>
    {
        self.follow(ns, pod, run_id)
    }
    /// True when the apiserver answers.
    fn ping(&self) -> BoxFuture<'_, bool>;
    /// Makes sure a tenant's SessionPool exists as `pool` describes it (server-side apply;
    /// an implementation may skip pools it applied recently). Without its own implementation,
    /// a no-op.
    fn ensure_pool<'a>(
        &'a self,
        _ns: &'a str,
        _pool: &'a SessionPool,
    ) -> BoxFuture<'a, ApiResult<()>> {
        async { Ok(()) }.boxed()
    }
}

/// Field manager of the api's SessionPool applies.
pub const POOL_FIELD_MANAGER: &str = "kubexec-api";
/// How long a SessionPool the api applied is taken to be in place before it is applied again
/// (so a deleted pool, or a changed `poolSize`, is repaired within this time).
pub const POOL_REAPPLY: Duration = Duration::from_secs(300);

/// [`Cluster`] over a real apiserver.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    executions: Arc<ExecutionWaiters>,
    /// The api's own runner channels, for `follow` (see [`Cluster::follow`]).
    channels: ChannelPool,
    /// When each tenant pool (`namespace/name`) was last applied by this replica.
    pools_applied: Arc<Mutex<HashMap<String, Instant>>>,
}

/// A channel of the api's that nobody follows through for this long is closed. Streams come in
/// bursts per session, and an idle channel costs a connection and a runner process.
const FOLLOW_CHANNEL_IDLE: Duration = Duration::from_secs(60);

impl KubeCluster {
    /// Wraps a client, and starts the shared watch of Executions (see [`super::informer`]).
    pub fn new(client: Client) -> Arc<Self> {
        let executions = Arc::new(ExecutionWaiters::default());
        tokio::spawn(executions.clone().run(client.clone()));
        let channels = ChannelPool::kube(
            client.clone(),
            PoolConfig {
                idle: FOLLOW_CHANNEL_IDLE,
                ..PoolConfig::default()
            },
            ChannelMetrics::default(),
        );
        Arc::new(Self {
            client,
            executions,
            channels,
            pools_applied: Arc::default(),
        })
    }

    fn sessions(&self, ns: &str) -> Api<Session> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn executions(&self, ns: &str) -> Api<Execution> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn secrets(&self, ns: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), ns)
    }
}

/// An [`ExecutionWatch`] fed by the api's shared watch of Executions.
struct SharedExecutionWatch {
    api: Api<Execution>,
    name: String,
    subscription: Option<Subscription>,
}

impl ExecutionWatch for SharedExecutionWatch {
    fn until(
        &mut self,
        timeout: Duration,
        done: fn(&Execution) -> bool,
    ) -> BoxFuture<'_, ApiResult<Option<Execution>>> {
        async move {
            let Some(subscription) = self.subscription.as_mut() else {
                return watch_until(self.api.clone(), &self.name, timeout, done).await;
            };
            if let Ok(Some(seen)) = tokio::time::timeout(timeout, subscription.until(done)).await {
                return Ok(Some(Execution::clone(&seen)));
            }
            // Not done in time: one read says where it stands.
            self.api
                .get_opt(&self.name)
                .await
                .map_err(cluster_error("get execution"))
        }
        .boxed()
    }
}

/// Waits until the Execution `name`, which may exist already, satisfies `done` or `timeout`
/// passes; returns its last version (`None`: there is none). Subscribes before it looks, so a
/// version between the look and the wait is not missed. A zero `timeout` is one look.
pub async fn wait_execution(
    cluster: &dyn Cluster,
    ns: &str,
    name: &str,
    timeout: Duration,
    done: fn(&Execution) -> bool,
) -> ApiResult<Option<Execution>> {
    let mut watch = cluster.watch_execution(ns, name);
    match watch.until(Duration::ZERO, done).await? {
        Some(execution) if !done(&execution) && !timeout.is_zero() => {
            watch.until(timeout, done).await
        }
        other => Ok(other),
    }
}

/// What a create of `kind` (`context` in the log) that the apiserver refused answers: 429
/// `QUOTA_EXCEEDED` when the tenant's ResourceQuota is used up; 503 `QUOTA_NOT_COUNTED` while
/// the cluster has not counted it yet (a user cannot fix that, a retry soon passes); else 500.
fn refused_create(kind: &str, context: &'static str, err: kube::Error) -> ApiError {
    if is_quota_exceeded(&err) {
        quota_exceeded(kind)
    } else if is_quota_uncounted(&err) {
        ApiError::Unavailable {
            code: super::errors::codes::QUOTA_NOT_COUNTED,
            message: format!(
                "the tenant's quota of {kind} is not counted by the cluster yet; retry shortly"
            ),
            retry_after: 5,
        }
    } else {
        cluster_error(context)(err)
    }
}

/// What a failed call to the apiserver answers (`context` in the log): 503
/// `CLUSTER_UNAVAILABLE` when the apiserver cannot answer now (a restart, an overload: retry
/// soon), else 500.
pub fn cluster_error(context: &'static str) -> impl FnOnce(kube::Error) -> ApiError {
    move |err| {
        if is_unavailable(&err) {
            ApiError::cluster_unavailable(context, &err)
        } else {
            ApiError::internal(context, err)
        }
    }
}

/// The tenant namespace's ResourceQuota refused a create: 429 `QUOTA_EXCEEDED`. Objects of
/// the kind come back as others finish or expire, so a retry later may pass.
pub fn quota_exceeded(kind: &str) -> ApiError {
    ApiError::TooMany {
        code: super::errors::codes::QUOTA_EXCEEDED,
        message: format!("this tenant has as many {kind} as its quota allows"),
        retry_after: 10,
    }
}

async fn watch_until<K>(
    api: Api<K>,
    name: &str,
    timeout: Duration,
    done: fn(&K) -> bool,
) -> ApiResult<Option<K>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let watched = await_condition(api.clone(), name, move |obj: Option<&K>| {
        obj.is_none_or(done)
    });
    match tokio::time::timeout(timeout, watched).await {
        Ok(Ok(obj)) => Ok(obj),
        // A watch that broke (the apiserver restarted, say): the caller retries.
        Ok(Err(e)) => Err(ApiError::cluster_unavailable("watch", &e)),
        Err(_) => api
            .get_opt(name)
            .await
            .map_err(cluster_error("get after watch timeout")),
    }
}

impl KubeCluster {
    /// True when this replica applied the pool within [`POOL_REAPPLY`].
    fn applied_recently(&self, key: &str, now: Instant) -> bool {
        self.pools_applied
            .lock()
            .map(|applied| {
                applied
                    .get(key)
                    .is_some_and(|at| now.duration_since(*at) < POOL_REAPPLY)
            })
            .unwrap_or(false)
    }
}

impl Cluster for KubeCluster {
    fn ensure_pool<'a>(
        &'a self,
        ns: &'a str,
        pool: &'a SessionPool,
    ) -> BoxFuture<'a, ApiResult<()>> {
        async move {
            let name = pool.metadata.name.clone().unwrap_or_default();
            let key = format!("{ns}/{name}");
            if self.applied_recently(&key, Instant::now()) {
                return Ok(());
            }
            let pools: Api<SessionPool> = Api::namespaced(self.client.clone(), ns);
            let patch = json!({
                "apiVersion": API_VERSION,
                "kind": "SessionPool",
                "metadata": { "name": name, "labels": pool.metadata.labels },
                "spec": pool.spec,
            });
            pools
                .patch(
                    &name,
                    &PatchParams::apply(POOL_FIELD_MANAGER).force(),
                    &Patch::Apply(patch),
                )
                .await
                .map_err(cluster_error("apply session pool"))?;
            if let Ok(mut applied) = self.pools_applied.lock() {
                applied.insert(key, Instant::now());
            }
            Ok(())
        }
        .boxed()
    }

    fn get_session<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, ApiResult<Option<Session>>> {
        async move {
            self.sessions(ns)
                .get_opt(name)
                .await
                .map_err(cluster_error("get session"))
        }
        .boxed()
    }

    fn list_sessions<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, ApiResult<Vec<Session>>> {
        async move {
            self.sessions(ns)
                .list(&ListParams::default())
                .await
                .map(|list| list.items)
                .map_err(cluster_error("list sessions"))
        }
        .boxed()
    }

    fn create_session<'a>(
        &'a self,
        ns: &'a str,
        session: &'a Session,
    ) -> BoxFuture<'a, ApiResult<Created<Session>>> {
        async move {
            match self
                .sessions(ns)
                .create(&PostParams::default(), session)
                .await
            {
                Ok(created) => Ok(Created::New(created)),
                Err(e) if is_status(&e, 409) => Ok(Created::Exists),
                Err(e) => Err(refused_create("Sessions", "create session", e)),
            }
        }
        .boxed()
    }

    fn delete_session<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, ApiResult<bool>> {
        async move {
            match self
                .sessions(ns)
                .delete(name, &DeleteParams::background())
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if is_status(&e, 404) => Ok(false),
                Err(e) => Err(cluster_error("delete session")(e)),
            }
        }
        .boxed()
    }

    fn touch_session<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, ApiResult<()>> {
        async move {
            ActivityWriter::API
                .record(&self.client, ns, name, Timestamp::now())
                .await
                .map_err(cluster_error("record session activity"))
        }
        .boxed()
    }

    fn wait_session<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        timeout: Duration,
        done: fn(&Session) -> bool,
    ) -> BoxFuture<'a, ApiResult<Option<Session>>> {
        watch_until(self.sessions(ns), name, timeout, done).boxed()
    }

    fn create_secret<'a>(
        &'a self,
        ns: &'a str,
        secret: &'a Secret,
    ) -> BoxFuture<'a, ApiResult<()>> {
        async move {
            self.secrets(ns)
                .create(&PostParams::default(), secret)
                .await
                .map(drop)
                .map_err(|e| refused_create("Secrets", "create env secret", e))
        }
        .boxed()
    }

    fn own_secret<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        owner: OwnerReference,
    ) -> BoxFuture<'a, ApiResult<()>> {
        async move {
            let patch = json!({ "metadata": { "ownerReferences": [owner] } });
            self.secrets(ns)
                .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(drop)
                .map_err(cluster_error("set env secret owner"))
        }
        .boxed()
    }

    fn delete_secret<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, ApiResult<()>> {
        async move {
            match self
                .secrets(ns)
                .delete(name, &DeleteParams::default())
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_status(&e, 404) => Ok(()),
                Err(e) => Err(cluster_error("delete env secret")(e)),
            }
        }
        .boxed()
    }

    fn create_execution<'a>(
        &'a self,
        ns: &'a str,
        execution: &'a Execution,
    ) -> BoxFuture<'a, ApiResult<Created<Execution>>> {
        async move {
            match self
                .executions(ns)
                .create(&PostParams::default(), execution)
                .await
            {
                Ok(created) => Ok(Created::New(created)),
                Err(e) if is_status(&e, 409) => Ok(Created::Exists),
                Err(e) => Err(refused_create("Executions", "create execution", e)),
            }
        }
        .boxed()
    }

    fn watch_execution(&self, ns: &str, name: &str) -> Box<dyn ExecutionWatch> {
        // Without the shared watch established, the wait falls back to a watch of its own.
        let subscription = self
            .executions
            .is_synced()
            .then(|| self.executions.subscribe(ns, name));
        Box::new(SharedExecutionWatch {
            api: self.executions(ns),
            name: name.to_string(),
            subscription,
        })
    }

    fn helper<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
        args: Vec<String>,
        max_stdout: usize,
    ) -> BoxFuture<'a, Result<HelperOutput, SandboxError>> {
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Sandbox::new(self.client.clone(), ns, pod)
                .run_helper(&args, None, max_stdout)
                .await
        }
        .boxed()
    }

    fn read_stream<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
        args: Vec<String>,
    ) -> BoxFuture<'a, Result<ByteStream, SandboxError>> {
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let process = Sandbox::new(self.client.clone(), ns, pod)
                .spawn(&args, false)
                .await?;
            Ok(process.into_stdout_stream().boxed())
        }
        .boxed()
    }

    fn upload<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
        args: Vec<String>,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, SandboxError>> {
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let process = Sandbox::new(self.client.clone(), ns, pod)
                .spawn(&args, true)
                .await?;
            Ok(Box::new(ProcessUpload(process)) as Box<dyn Upload>)
        }
        .boxed()
    }

    fn follow<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<RunnerEvent, SandboxError>>, SandboxError>>
    {
        self.follow_from(ns, pod, run_id, 0, 0)
    }

    fn annotate_session<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, ApiResult<()>> {
        async move {
            let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
            self.sessions(ns)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
                .map_err(cluster_error("annotate session"))
        }
        .boxed()
    }

    fn follow_from<'a>(
        &'a self,
        ns: &'a str,
        pod: &'a str,
        run_id: &'a str,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<RunnerEvent, SandboxError>>, SandboxError>>
    {
        async move {
            let key = ChannelKey {
                namespace: ns.to_string(),
                pod: pod.to_string(),
                pod_uid: None,
                container: SANDBOX_CONTAINER,
            };
            match self.channels.channel(&key).await {
                Ok(Some(channel)) => {
                    let run = channel
                        .follow_from(run_id, stdout_offset, stderr_offset)
                        .await?;
                    return Ok(run.into_events().boxed());
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, pod, "no runner channel; following with a one-shot exec");
                }
            }
            let (stdout, stderr) = (stdout_offset.to_string(), stderr_offset.to_string());
            let mut args = vec!["follow", run_id];
            if stdout_offset > 0 || stderr_offset > 0 {
                args.extend(["--stdout-offset", &stdout, "--stderr-offset", &stderr]);
            }
            let run = Sandbox::new(self.client.clone(), ns, pod)
                .start_framed(&args)
                .await?;
            Ok(run.into_events().boxed())
        }
        .boxed()
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        // `/version` is readable by every authenticated client, whatever its RBAC.
        async move { self.client.apiserver_version().await.is_ok() }.boxed()
    }
}

struct ProcessUpload(Process);

impl Upload for ProcessUpload {
    fn write<'a>(&'a mut self, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), SandboxError>> {
        self.0.write_stdin(bytes).boxed()
    }

    fn finish(
        self: Box<Self>,
        max_stdout: usize,
    ) -> BoxFuture<'static, Result<HelperOutput, SandboxError>> {
        self.0.collect(max_stdout).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::errors::codes;
    use crate::shared::kube_status::api_error;

    /// A create the tenant's quota refuses is never a 500: used up is a 429 to back off from,
    /// not counted yet (a new namespace, CRDs just installed) a 503 to retry soon.
    #[test]
    fn a_quota_refusal_is_a_429_or_a_503_and_anything_else_a_500() {
        let answer = |message: &str| {
            let error = refused_create("Sessions", "create session", api_error(403, message));
            (error.status().as_u16(), error.body().error.code)
        };
        assert_eq!(
            answer("exceeded quota: kubexec-tenant, requested: count/sessions.kubexec.dev=1"),
            (429, codes::QUOTA_EXCEEDED.to_string())
        );
        assert_eq!(
            answer(
                "status unknown for quota: kubexec-tenant, resources: count/sessions.kubexec.dev"
            ),
            (503, codes::QUOTA_NOT_COUNTED.to_string())
        );
        assert_eq!(
            answer("User \"x\" cannot create resource \"sessions\""),
            (500, codes::INTERNAL.to_string())
        );
    }
}
