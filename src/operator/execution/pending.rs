//! Pending Executions, indexed by their Session: when a Session becomes ready (or is resumed),
//! its waiting Executions are found by one lookup instead of a scan of every Execution in the
//! cache. Fed by the same watch events as the controller's cache.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Mutex, MutexGuard},
};

use kube::{
    runtime::{reflector::ObjectRef, watcher},
    ResourceExt,
};

use crate::crd::{Execution, ExecutionPhase, Session};

/// (namespace, Session name).
type SessionKey = (String, String);
type Index = HashMap<SessionKey, BTreeSet<String>>;

/// The names of the pending Executions of each Session.
#[derive(Default)]
pub struct PendingBySession {
    current: Mutex<Index>,
    /// Built during a relist, then swapped in whole.
    relisting: Mutex<Index>,
}

fn is_pending(execution: &Execution) -> bool {
    matches!(
        execution.status.as_ref().and_then(|s| s.phase),
        None | Some(ExecutionPhase::Pending)
    )
}

fn session_key(execution: &Execution) -> SessionKey {
    (
        execution.namespace().unwrap_or_default(),
        execution.spec.session_ref.name.clone(),
    )
}

fn lock(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds or removes one Execution (a Session reference never changes).
fn update(index: &mut Index, execution: &Execution, present: bool) {
    let key = session_key(execution);
    let name = execution.name_any();
    if present && is_pending(execution) {
        index.entry(key).or_default().insert(name);
    } else if let Some(names) = index.get_mut(&key) {
        names.remove(&name);
        if names.is_empty() {
            index.remove(&key);
        }
    }
}

impl PendingBySession {
    /// Applies one watch event.
    pub fn observe(&self, event: &watcher::Event<Execution>) {
        match event {
            watcher::Event::Apply(e) => update(&mut lock(&self.current), e, true),
            watcher::Event::Delete(e) => update(&mut lock(&self.current), e, false),
            watcher::Event::Init => lock(&self.relisting).clear(),
            watcher::Event::InitApply(e) => update(&mut lock(&self.relisting), e, true),
            watcher::Event::InitDone => {
                let listed = std::mem::take(&mut *lock(&self.relisting));
                *lock(&self.current) = listed;
            }
        }
    }

    /// The pending Executions of `session`.
    pub fn waiting_on(&self, session: &Session) -> Vec<ObjectRef<Execution>> {
        let namespace = session.namespace();
        let key = (namespace.clone().unwrap_or_default(), session.name_any());
        let current = lock(&self.current);
        current
            .get(&key)
            .into_iter()
            .flatten()
            .map(|name| {
                let reference = ObjectRef::new(name);
                match &namespace {
                    Some(ns) => reference.within(ns),
                    None => reference,
                }
            })
            .collect()
    }
}
