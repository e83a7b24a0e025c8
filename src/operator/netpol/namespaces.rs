//! Which namespaces hold Sessions, followed from a watch of Session metadata. The controller's
//! objects are these namespaces: each one is reconciled when its first Session appears, and
//! a namespace without Sessions is not reconciled at all.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    api::{ObjectMeta, PartialObjectMeta},
    runtime::{reflector::store::Writer, reflector::ObjectRef, watcher},
    ResourceExt,
};

use crate::crd::Session;

/// Follows the Sessions of every namespace and keeps the controller's store of namespaces:
/// a namespace is in it while it holds at least one Session.
pub struct SessionNamespaces {
    /// Session names by namespace, as of the last event.
    sessions: HashMap<String, BTreeSet<String>>,
    /// The same during a (re)list, swapped in when it is done.
    listing: HashMap<String, BTreeSet<String>>,
    /// The store the controller reads its namespaces from.
    writer: Writer<Namespace>,
}

fn placeholder(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

impl SessionNamespaces {
    /// Starts with no namespaces; the store becomes ready after the first full list.
    pub fn new(writer: Writer<Namespace>) -> Self {
        Self {
            sessions: HashMap::new(),
            listing: HashMap::new(),
            writer,
        }
    }

    /// Takes one watch event and returns the namespaces to reconcile now: every namespace
    /// after a (re)list, and a namespace whose first Session just appeared. Later changes to
    /// Sessions do not matter to the policies, and deletions are left to the policies' own
    /// watch.
    pub fn record(
        &mut self,
        event: watcher::Event<PartialObjectMeta<Session>>,
    ) -> Vec<ObjectRef<Namespace>> {
        let key = |session: &PartialObjectMeta<Session>| {
            session
                .namespace()
                .map(|namespace| (namespace, session.name_any()))
        };
        match event {
            watcher::Event::Init => {
                self.listing.clear();
                Vec::new()
            }
            watcher::Event::InitApply(session) => {
                if let Some((namespace, name)) = key(&session) {
                    self.listing.entry(namespace).or_default().insert(name);
                }
                Vec::new()
            }
            watcher::Event::InitDone => {
                self.sessions = std::mem::take(&mut self.listing);
                self.writer.apply_watcher_event(&watcher::Event::Init);
                for namespace in self.sessions.keys() {
                    let event = watcher::Event::InitApply(placeholder(namespace));
                    self.writer.apply_watcher_event(&event);
                }
                self.writer.apply_watcher_event(&watcher::Event::InitDone);
                let mut all: Vec<_> = self.sessions.keys().map(|ns| ObjectRef::new(ns)).collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                all
            }
            watcher::Event::Apply(session) => {
                let Some((namespace, name)) = key(&session) else {
                    return Vec::new();
                };
                let names = self.sessions.entry(namespace.clone()).or_default();
                let first = names.is_empty();
                names.insert(name);
                if !first {
                    return Vec::new();
                }
                let event = watcher::Event::Apply(placeholder(&namespace));
                self.writer.apply_watcher_event(&event);
                vec![ObjectRef::new(&namespace)]
            }
            watcher::Event::Delete(session) => {
                let Some((namespace, name)) = key(&session) else {
                    return Vec::new();
                };
                if let Some(names) = self.sessions.get_mut(&namespace) {
                    names.remove(&name);
                    if names.is_empty() {
                        self.sessions.remove(&namespace);
                        let event = watcher::Event::Delete(placeholder(&namespace));
                        self.writer.apply_watcher_event(&event);
                    }
                }
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;

    fn session(namespace: &str, name: &str) -> PartialObjectMeta<Session> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    fn names(refs: Vec<ObjectRef<Namespace>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_list_makes_every_namespace_with_sessions_a_key() {
        let (store, writer) = reflector::store::<Namespace>();
        let mut tracker = SessionNamespaces::new(writer);
        assert!(tracker.record(watcher::Event::Init).is_empty());
        for (ns, name) in [("b", "s1"), ("a", "s2"), ("b", "s3")] {
            assert!(tracker
                .record(watcher::Event::InitApply(session(ns, name)))
                .is_empty());
        }
        assert!(store.state().is_empty(), "nothing until the list is done");
        assert_eq!(names(tracker.record(watcher::Event::InitDone)), ["a", "b"]);
        assert!(store.get(&ObjectRef::new("a")).is_some());
        assert!(store.get(&ObjectRef::new("b")).is_some());
        assert_eq!(store.state().len(), 2);
    }

    #[test]
    fn only_the_first_session_of_a_namespace_triggers() {
        let (store, writer) = reflector::store::<Namespace>();
        let mut tracker = SessionNamespaces::new(writer);
        tracker.record(watcher::Event::Init);
        tracker.record(watcher::Event::InitDone);
        let apply = |t: &mut SessionNamespaces, ns, name| {
            names(t.record(watcher::Event::Apply(session(ns, name))))
        };
        assert_eq!(apply(&mut tracker, "team-a", "one"), ["team-a"]);
        assert!(
            apply(&mut tracker, "team-a", "one").is_empty(),
            "a status update"
        );
        assert!(apply(&mut tracker, "team-a", "two").is_empty());

        tracker.record(watcher::Event::Delete(session("team-a", "one")));
        assert!(
            store.get(&ObjectRef::new("team-a")).is_some(),
            "two is left"
        );
        tracker.record(watcher::Event::Delete(session("team-a", "two")));
        assert!(
            store.get(&ObjectRef::new("team-a")).is_none(),
            "no Sessions left"
        );
        assert_eq!(apply(&mut tracker, "team-a", "three"), ["team-a"]);
    }

    #[test]
    fn a_relist_forgets_namespaces_whose_sessions_went_unseen() {
        let (store, writer) = reflector::store::<Namespace>();
        let mut tracker = SessionNamespaces::new(writer);
        tracker.record(watcher::Event::Init);
        tracker.record(watcher::Event::InitApply(session("old", "s")));
        tracker.record(watcher::Event::InitDone);
        tracker.record(watcher::Event::Init);
        tracker.record(watcher::Event::InitApply(session("new", "s")));
        assert_eq!(names(tracker.record(watcher::Event::InitDone)), ["new"]);
        assert!(store.get(&ObjectRef::new("old")).is_none());
        assert!(store.get(&ObjectRef::new("new")).is_some());
    }
}
