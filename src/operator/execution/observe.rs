//! Dereference (IO): the Session and its sandbox Pod (from the controllers' caches when they
//! let a run start, see [`Caches`]), and the Secrets an Execution needs (one GET each).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{
    runtime::reflector::{self, ObjectRef, Store},
    Api, ResourceExt,
};

use crate::crd::{Execution, ExecutionPhase, Session, SessionPhase};
use crate::layout::is_env_name;
use crate::operator::{Error, Result};

use super::build::Env;

/// What the cluster holds for an Execution right now.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The Session it runs in (read unless the Execution is finished).
    pub session: Option<Session>,
    /// The sandbox Pod: the one the run was recorded in (Running), or the Session's (Pending).
    pub pod: Option<Pod>,
    /// The environment, resolved only when the Execution may start now, or is recovered.
    pub env: Option<EnvResolution>,
}

/// The Execution's environment, or why it cannot be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvResolution {
    /// Every value resolved.
    Ready(Env),
    /// A Secret is missing (may be transient: the api creates it just before the Execution).
    MissingSecret(String),
    /// A Secret exists but lacks a referenced key.
    MissingKey {
        /// The Secret.
        secret: String,
        /// The key.
        key: String,
    },
    /// A value or name is unusable (names only; values are never reported).
    Invalid(String),
}

/// The caches the Execution controller reads before a run, so that starting a run on a ready
/// Session costs no read: the Sessions (the Execution controller's own Session watch, the one
/// that wakes pending Executions) and the sandbox Pods (the Session controller's Pod watch).
/// A cache may lag behind the cluster, so only what lets a run start is taken from it (a Ready
/// Session; its Pod with the expected UID); a miss or anything else is confirmed with one GET.
/// There is no Secret cache: env Secrets are read with one GET per execution that has env.
#[derive(Clone)]
pub struct Caches {
    /// Sessions.
    pub sessions: Store<Session>,
    /// Sandbox Pods (kubexec-managed).
    pub pods: Store<Pod>,
}

impl Default for Caches {
    /// Empty caches with no writer: every read falls back to a GET.
    fn default() -> Self {
        Self {
            sessions: reflector::store().0,
            pods: reflector::store().0,
        }
    }
}

fn cached<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .get(&ObjectRef::new(name).within(namespace))
        .map(|object| (*object).clone())
}

/// A Session that can take a run: Ready, not suspended, not being deleted, with a Pod.
fn can_run(session: &Session) -> bool {
    let ready = session
        .status
        .as_ref()
        .is_some_and(|st| st.phase == Some(SessionPhase::Ready) && st.pod_name.is_some());
    ready && !session.spec.suspend && session.metadata.deletion_timestamp.is_none()
}

/// The Session: from the cache when it can take a run, else read.
async fn session(
    caches: &Caches,
    api: &Api<Session>,
    namespace: &str,
    name: &str,
) -> Result<Option<Session>> {
    match cached(&caches.sessions, namespace, name) {
        Some(session) if can_run(&session) => Ok(Some(session)),
        _ => api.get_opt(name).await.map_err(Error::kube("get session")),
    }
}

/// The Pod: from the cache when it is there, not being deleted, and `is_the_one` (a cached
/// Pod of the same name may be one that was replaced); else read.
async fn pod(
    caches: &Caches,
    api: &Api<Pod>,
    namespace: &str,
    name: &str,
    is_the_one: impl Fn(&Pod) -> bool,
) -> Result<Option<Pod>> {
    match cached(&caches.pods, namespace, name) {
        Some(pod) if pod.metadata.deletion_timestamp.is_none() && is_the_one(&pod) => Ok(Some(pod)),
        _ => api.get_opt(name).await.map_err(Error::kube("get pod")),
    }
}

/// A cached Pod is the one a run was recorded in when its UID is the recorded one.
fn has_uid(uid: Option<&str>) -> impl Fn(&Pod) -> bool + '_ {
    move |pod| uid.is_some() && pod.metadata.uid.as_deref() == uid
}

/// A cached Pod is the Session's current one when it has the IP the Session's status names.
fn has_ip(ip: Option<&str>) -> impl Fn(&Pod) -> bool + '_ {
    move |pod| ip.is_some() && pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == ip
}

/// Reads what the pipeline needs, and no more: nothing for a finished Execution; the Pod the
/// run was recorded in, the Session and the env for a Running one (its inputs, in case the run
/// was never started); the Session, its Pod and the env for a Pending one. Sessions and Pods
/// come from `caches` when they let the run start (see [`Caches`]).
pub async fn observe(
    client: &kube::Client,
    caches: &Caches,
    execution: &Execution,
) -> Result<Observed> {
    let namespace = execution
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let status = execution.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    if matches!(phase, ExecutionPhase::Succeeded | ExecutionPhase::Failed)
        || execution.metadata.deletion_timestamp.is_some()
    {
        return Ok(Observed::default());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let sessions: Api<Session> = Api::namespaced(client.clone(), &namespace);
    let session = session(
        caches,
        &sessions,
        &namespace,
        &execution.spec.session_ref.name,
    )
    .await?;
    if phase == ExecutionPhase::Running {
        let pod = match &status.pod_name {
            Some(name) => {
                let recorded = has_uid(status.pod_uid.as_deref());
                pod(caches, &pods, &namespace, name, recorded).await?
            }
            None => None,
        };
        let env = resolve_env(client, &namespace, execution, session.as_ref()).await?;
        return Ok(Observed {
            session,
            pod,
            env: Some(env),
        });
    }

    let ready_pod = session.as_ref().and_then(|s| {
        let st = s.status.as_ref()?;
        (st.phase == Some(SessionPhase::Ready) && !s.spec.suspend)
            .then(|| st.pod_name.clone())
            .flatten()
    });
    let Some(pod_name) = ready_pod else {
        return Ok(Observed {
            session,
            ..Observed::default()
        });
    };
    let session_ip = session
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.pod_ip.as_deref());
    let pod = pod(caches, &pods, &namespace, &pod_name, has_ip(session_ip)).await?;
    let env = resolve_env(client, &namespace, execution, session.as_ref()).await?;
    Ok(Observed {
        session,
        pod,
        env: Some(env),
    })
}

/// Resolves `env` (literal values and `secretKeyRef`s) over `envFrom` (every key of a Secret),
/// as a container's env works: explicit entries win. Both go over the Session's own env, which
/// every execution gets with its run (a Pod adopted from a pool was built without it). Values
/// never leave the returned [`Env`].
pub async fn resolve_env(
    client: &kube::Client,
    namespace: &str,
    execution: &Execution,
    session: Option<&Session>,
) -> Result<EnvResolution> {
    let spec = &execution.spec;
    let session_env = session.map(|s| s.spec.env.as_slice()).unwrap_or_default();
    let names: BTreeSet<&str> = spec
        .env_from
        .iter()
        .map(|from| from.secret_ref.name.as_str())
        .chain(
            session_env
                .iter()
                .chain(&spec.env)
                .filter_map(|var| var.value_from.as_ref())
                .map(|from| from.secret_key_ref.name.as_str()),
        )
        .collect();
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut secrets = BTreeMap::new();
    for name in names {
        match secrets_api
            .get_opt(name)
            .await
            .map_err(Error::kube("get secret"))?
        {
            Some(secret) => {
                secrets.insert(name.to_string(), secret);
            }
            None => return Ok(EnvResolution::MissingSecret(name.to_string())),
        }
    }
    Ok(merge_env(execution, session_env, &secrets))
}

fn secret_value(secret: &Secret, key: &str) -> Option<Result<String, ()>> {
    if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(String::from_utf8(bytes.0.clone()).map_err(|_| ()));
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| Ok(v.clone()))
}

/// The pure half of [`resolve_env`], given the Session's env and the Secrets by name.
pub fn merge_env(
    execution: &Execution,
    session_env: &[crate::crd::EnvVar],
    secrets: &BTreeMap<String, Secret>,
) -> EnvResolution {
    let spec = &execution.spec;
    let mut env = BTreeMap::new();
    if let Err(failed) = insert_vars(&mut env, session_env, secrets) {
        return failed;
    }
    if let Some(from) = &spec.env_from {
        let name = &from.secret_ref.name;
        let Some(secret) = secrets.get(name) else {
            return EnvResolution::MissingSecret(name.clone());
        };
        let keys: BTreeSet<&String> = secret
            .data
            .iter()
            .flat_map(|d| d.keys())
            .chain(secret.string_data.iter().flat_map(|d| d.keys()))
            .collect();
        for key in keys {
            if !is_env_name(key) {
                return EnvResolution::Invalid(format!(
                    "key {key:?} of Secret {name} is not a valid environment variable name"
                ));
            }
            match secret_value(secret, key) {
                Some(Ok(value)) => {
                    env.insert(key.clone(), value);
                }
                _ => {
                    return EnvResolution::Invalid(format!(
                        "the value of key {key:?} of Secret {name} is not UTF-8"
                    ))
                }
            }
        }
    }
    if let Err(failed) = insert_vars(&mut env, &spec.env, secrets) {
        return failed;
    }
    if env.values().any(|v| v.contains('\0')) {
        return EnvResolution::Invalid("an environment value contains a NUL byte".into());
    }
    EnvResolution::Ready(Env(env))
}

/// Inserts `vars` (literal values and `secretKeyRef`s) into `env`, later ones winning.
fn insert_vars(
    env: &mut BTreeMap<String, String>,
    vars: &[crate::crd::EnvVar],
    secrets: &BTreeMap<String, Secret>,
) -> Result<(), EnvResolution> {
    for var in vars {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                let selector = &from.secret_key_ref;
                let Some(secret) = secrets.get(&selector.name) else {
                    return Err(EnvResolution::MissingSecret(selector.name.clone()));
                };
                match secret_value(secret, &selector.key) {
                    Some(Ok(value)) => value,
                    Some(Err(())) => {
                        return Err(EnvResolution::Invalid(format!(
                            "the value of key {:?} of Secret {} is not UTF-8",
                            selector.key, selector.name
                        )))
                    }
                    None => {
                        return Err(EnvResolution::MissingKey {
                            secret: selector.name.clone(),
                            key: selector.key.clone(),
                        })
                    }
                }
            }
            (Some(value), None) => value.clone(),
            (None, None) => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        EnvFromSource, EnvVar, EnvVarSource, ExecutionSpec, SecretKeySelector, SecretReference,
    };
    use k8s_openapi::ByteString;

    fn secret(name: &str, pairs: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.data = Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        s
    }

    fn execution(env: Vec<EnvVar>, from: Option<&str>) -> Execution {
        Execution::new(
            "e",
            ExecutionSpec {
                env,
                env_from: from.map(|name| EnvFromSource {
                    secret_ref: SecretReference { name: name.into() },
                }),
                command: Some("true".into()),
                ..ExecutionSpec::default()
            },
        )
    }

    fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: SecretKeySelector {
                    name: secret.into(),
                    key: key.into(),
                },
            }),
        }
    }

    #[test]
    fn explicit_env_wins_over_env_from() {
        let e = execution(
            vec![
                EnvVar::literal("A", "literal"),
                from_secret("B", "keys", "token"),
            ],
            Some("bulk"),
        );
        let secrets = BTreeMap::from([
            (
                "bulk".to_string(),
                secret("bulk", &[("A", "bulk"), ("C", "c")]),
            ),
            ("keys".to_string(), secret("keys", &[("token", "t0k")])),
        ]);
        let EnvResolution::Ready(Env(env)) = merge_env(&e, &[], &secrets) else {
            panic!("resolves");
        };
        assert_eq!(env.get("A").map(String::as_str), Some("literal"));
        assert_eq!(env.get("B").map(String::as_str), Some("t0k"));
        assert_eq!(env.get("C").map(String::as_str), Some("c"));
    }

    #[test]
    fn the_sessions_env_comes_with_every_execution_under_its_own() {
        let e = execution(vec![EnvVar::literal("A", "execution")], Some("bulk"));
        let session_env = [
            EnvVar::literal("A", "session"),
            EnvVar::literal("C", "session"),
            EnvVar::literal("S", "session"),
            from_secret("T", "keys", "token"),
        ];
        let secrets = BTreeMap::from([
            ("bulk".to_string(), secret("bulk", &[("C", "bulk")])),
            ("keys".to_string(), secret("keys", &[("token", "t0k")])),
        ]);
        let EnvResolution::Ready(Env(env)) = merge_env(&e, &session_env, &secrets) else {
            panic!("resolves");
        };
        assert_eq!(env.get("A").map(String::as_str), Some("execution"));
        assert_eq!(env.get("C").map(String::as_str), Some("bulk"));
        assert_eq!(env.get("S").map(String::as_str), Some("session"));
        assert_eq!(env.get("T").map(String::as_str), Some("t0k"));
        assert_eq!(
            merge_env(&e, &session_env, &BTreeMap::new()),
            EnvResolution::MissingSecret("keys".into())
        );
    }

    #[test]
    fn missing_secrets_keys_and_bad_names_are_reported_without_values() {
        let e = execution(vec![from_secret("B", "keys", "nope")], None);
        assert_eq!(
            merge_env(&e, &[], &BTreeMap::new()),
            EnvResolution::MissingSecret("keys".into())
        );
        let secrets = BTreeMap::from([("keys".to_string(), secret("keys", &[("token", "x")]))]);
        assert!(matches!(
            merge_env(&e, &[], &secrets),
            EnvResolution::MissingKey { .. }
        ));

        let e = execution(vec![], Some("bulk"));
        let secrets = BTreeMap::from([(
            "bulk".to_string(),
            secret("bulk", &[("BAD-NAME", "hunter2")]),
        )]);
        let EnvResolution::Invalid(message) = merge_env(&e, &[], &secrets) else {
            panic!("invalid");
        };
        assert!(message.contains("BAD-NAME") && !message.contains("hunter2"));
    }
}
