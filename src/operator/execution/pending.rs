//! Unfinished Executions, indexed by their Session: when a Session becomes ready (or is
//! resumed), its waiting Executions are found by one lookup instead of a scan of every
//! Execution in the cache; and the Session controller reads how many run in a Session before
//! it lets it sleep, deep-sleep, expire or replace its Pod ([`Busy`]). Fed by the same watch
//! events as the Execution controller's cache: no read of the apiserver.

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
type Index = HashMap<SessionKey, Names>;

/// The unfinished Executions of one Session, by phase.
#[derive(Clone, Debug, Default)]
struct Names {
    pending: BTreeSet<String>,
    running: BTreeSet<String>,
}

/// How many Executions of a Session have not finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Busy {
    /// Running now (phase Running).
    pub running: usize,
    /// Waiting to start (no phase yet, or Pending).
    pub pending: usize,
    /// False until the first list of Executions has been seen: nothing is known yet, and the
    /// Session is treated as busy.
    pub known: bool,
}

impl Busy {
    /// A Session with nothing running or waiting, as far as a synced index knows.
    pub const IDLE: Busy = Busy {
        running: 0,
        pending: 0,
        known: true,
    };

    /// Some Execution runs (or it is not known yet that none does).
    pub fn running(self) -> bool {
        !self.known || self.running > 0
    }

    /// Some Execution runs or waits to (or it is not known yet that none does): the Session is
    /// in use and must not sleep.
    pub fn in_use(self) -> bool {
        self.running() || self.pending > 0
    }
}

/// The names of the pending and running Executions of each Session.
#[derive(Default)]
pub struct PendingBySession {
    current: Mutex<Index>,
    /// Built during a relist, then swapped in whole.
    relisting: Mutex<Index>,
    /// The first list has been applied.
    synced: std::sync::atomic::AtomicBool,
}

fn phase(execution: &Execution) -> Option<ExecutionPhase> {
    execution.status.as_ref().and_then(|s| s.phase)
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
    let phase = present.then(|| phase(execution)).flatten();
    let names = index.entry(key.clone()).or_default();
    names.pending.remove(&name);
    names.running.remove(&name);
    match (present, phase) {
        (true, None | Some(ExecutionPhase::Pending)) => {
            names.pending.insert(name);
        }
        (true, Some(ExecutionPhase::Running)) => {
            names.running.insert(name);
        }
        _ => {}
    }
    if names.pending.is_empty() && names.running.is_empty() {
        index.remove(&key);
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
                self.synced
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
    }

    /// How many Executions of Session `name` in `namespace` run or wait.
    pub fn busy(&self, namespace: &str, name: &str) -> Busy {
        let known = self.synced.load(std::sync::atomic::Ordering::Acquire);
        let current = lock(&self.current);
        let names = current.get(&(namespace.to_string(), name.to_string()));
        Busy {
            running: names.map_or(0, |n| n.running.len()),
            pending: names.map_or(0, |n| n.pending.len()),
            known,
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
            .flat_map(|names| names.pending.iter())
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
