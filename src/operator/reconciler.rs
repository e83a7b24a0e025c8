//! The scaffolding both controllers share: the timed reconcile wrapper, per-object error
//! backoff, the error policy, the requeue helpers and the logger of the controller's stream.
//! Each controller supplies only its pipeline (observe → decide → act) and its watches.

use std::{future::Future, sync::Arc, time::Duration};

use jiff::Timestamp;
use kube::{
    runtime::{controller, controller::Action, reflector::ObjectRef},
    Resource, ResourceExt,
};
use tracing::{debug, warn};

use super::{Context, Error, Result};

/// How long a permanent error (an invalid spec) waits before a safety recheck; a change to the
/// object reconciles it at once.
pub const PERMANENT_ERROR_RECHECK: Duration = Duration::from_secs(3600);

/// The key of an object's error backoff: `<controller>/<namespace>/<name>`.
fn backoff_key<K: Resource>(controller: &str, object: &K) -> String {
    format!(
        "{controller}/{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// Runs one reconcile of `object`: times it under `controller`'s metric labels and forgets the
/// object's error backoff when it succeeds.
pub async fn timed<K: Resource>(
    controller: &'static str,
    object: &K,
    ctx: &Context,
    pipeline: impl Future<Output = Result<Action>>,
) -> Result<Action> {
    let timer = ctx.metrics.reconcile_started(controller);
    let result = pipeline.await;
    match &result {
        Ok(_) => {
            ctx.reset_backoff(&backoff_key(controller, object));
            timer.finish("ok");
        }
        Err(e) => timer.finish(e.metric_label()),
    }
    result
}

/// How long to wait after a failed reconcile: a permanent error waits for a change (with a
/// long safety requeue); anything else backs off exponentially per object.
pub fn error_policy<K>(controller: &'static str, object: &K, error: &Error, ctx: &Context) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let kind = K::kind(&());
    if error.is_permanent() {
        warn!(%kind, name = %object.name_any(), %error, "waiting for the object to change");
        Action::requeue(PERMANENT_ERROR_RECHECK)
    } else {
        let wait = ctx.next_backoff(&backoff_key(controller, object));
        warn!(%kind, name = %object.name_any(), %error, retry_in = ?wait, "reconcile failed");
        Action::requeue(wait)
    }
}

/// Requeue after `after`, or only on a change when `None`.
pub fn requeue(after: Option<Duration>) -> Action {
    match after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    }
}

/// Whole seconds from `now` until `then`, at least one (a requeue of zero would spin).
pub fn until(now: Timestamp, then: Timestamp) -> Duration {
    let secs = then.as_second().saturating_sub(now.as_second()).max(1);
    Duration::from_secs(secs as u64)
}

/// Logs one item of a controller's output stream: reconciles at debug level (the reconcile
/// logs its own failures), objects gone before a requeue came due too, and the controller's
/// own errors (watch failures) as warnings.
pub fn log_outcome<K, E>(
    controller: &'static str,
    result: Result<(ObjectRef<K>, Action), controller::Error<E, kube::runtime::watcher::Error>>,
) -> std::future::Ready<()>
where
    K: Resource,
    E: std::error::Error + 'static,
{
    match result {
        Ok((object, _)) => debug!(controller, name = %object.name, "reconciled"),
        Err(controller::Error::ReconcilerFailed(error, object)) => {
            debug!(controller, name = %object.name, %error, "reconcile failed")
        }
        // A requeue of an object deleted since (a Session, or a namespace's last Session).
        Err(controller::Error::ObjectNotFound(object)) => {
            debug!(controller, name = %object.name, "gone before its reconcile")
        }
        Err(error) => warn!(controller, %error, "controller"),
    }
    std::future::ready(())
}

/// The error policy of a controller, in the shape `Controller::run` takes.
pub fn policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    move |object, error, ctx| error_policy(controller, &*object, error, &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_is_at_least_a_second() {
        let now = Timestamp::from_second(1_000).expect("valid");
        let later = Timestamp::from_second(1_042).expect("valid");
        assert_eq!(until(now, later), Duration::from_secs(42));
        assert_eq!(until(later, now), Duration::from_secs(1));
        assert_eq!(until(now, now), Duration::from_secs(1));
    }

    #[test]
    fn requeue_none_waits_for_a_change() {
        assert_eq!(requeue(None), Action::await_change());
        assert_eq!(
            requeue(Some(Duration::from_secs(5))),
            Action::requeue(Duration::from_secs(5))
        );
    }
}
