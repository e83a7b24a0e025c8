//! Open previews: every proxied exchange and WebSocket, so that revoking its key, deleting its
//! session or its token expiring closes it, and so that previews count against the key's
//! stream quota. An exchange holds a [`Lease`]; closing fires the lease's signal, which the
//! proxy waits on beside the traffic.
//!
//! Quota: all plain HTTP exchanges of one key's preview (session and port) that are open at
//! once take one stream slot together (a page loads its assets in parallel), and every
//! WebSocket takes one of its own for as long as it is open.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use tokio::sync::watch;

use crate::api::{
    errors::ApiError,
    quota::{StreamSlot, TenantQuotas},
    tiers::TierLimits,
};

/// Which preview an exchange belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The API key the token was made for.
    pub key_id: String,
    /// The session's namespace.
    pub namespace: String,
    /// The session.
    pub session: String,
    /// The sandbox port.
    pub port: u16,
}

/// Why an open preview was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Its API key was revoked.
    KeyRevoked,
    /// Its session was deleted (or expired).
    SessionGone,
    /// Its token expired.
    TokenExpired,
}

impl CloseReason {
    /// As logs and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::KeyRevoked => "key_revoked",
            CloseReason::SessionGone => "session_gone",
            CloseReason::TokenExpired => "token_expired",
        }
    }
}

/// One open exchange, as the sweeper sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenPreview {
    /// The registry's id of it.
    pub id: u64,
    /// Its preview.
    pub target: Target,
    /// When its token expires (Unix seconds).
    pub expires: u64,
}

struct Entry {
    open: OpenPreview,
    close: watch::Sender<Option<CloseReason>>,
}

/// The HTTP exchanges of one preview open at once, and their shared stream slot.
struct Group {
    exchanges: usize,
    _slot: StreamSlot,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<u64, Entry>,
    groups: HashMap<Target, Group>,
}

/// Every open preview of this api process.
#[derive(Default)]
pub struct OpenPreviews {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
}

/// An open exchange: closed when dropped; [`Lease::closed`] resolves when it must end.
pub struct Lease {
    registry: Arc<OpenPreviews>,
    id: u64,
    group: Option<Target>,
    closed: watch::Receiver<Option<CloseReason>>,
    _own_slot: Option<StreamSlot>,
}

impl Lease {
    /// Resolves with the reason once the preview is closed (never, while it stays open).
    pub async fn closed(&mut self) -> CloseReason {
        let reason = self.closed.wait_for(Option::is_some).await.map(|r| *r);
        match reason {
            Ok(Some(reason)) => reason,
            // The registry dropped its side without a reason: keep the exchange open.
            _ => std::future::pending().await,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.entries.remove(&self.id);
        if let Some(target) = &self.group {
            if let Some(group) = inner.groups.get_mut(target) {
                group.exchanges = group.exchanges.saturating_sub(1);
                if group.exchanges == 0 {
                    inner.groups.remove(target);
                }
            }
        }
    }
}

/// What an exchange is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A request and its response.
    Http,
    /// An upgraded connection (a WebSocket).
    Upgrade,
}

impl OpenPreviews {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens an exchange of `target`, whose token expires at `expires`; refuses with 429
    /// `QUOTA_EXCEEDED` when the key has no stream left.
    pub fn open(
        self: &Arc<Self>,
        quotas: &Arc<TenantQuotas>,
        limits: &TierLimits,
        target: Target,
        expires: u64,
        kind: Kind,
    ) -> Result<Lease, ApiError> {
        let mut inner = self.lock();
        let (group, own_slot) = match kind {
            Kind::Upgrade => (None, Some(quotas.open_stream(&target.key_id, limits)?)),
            Kind::Http => {
                match inner.groups.get_mut(&target) {
                    Some(group) => group.exchanges += 1,
                    None => {
                        let slot = quotas.open_stream(&target.key_id, limits)?;
                        inner.groups.insert(
                            target.clone(),
                            Group {
                                exchanges: 1,
                                _slot: slot,
                            },
                        );
                    }
                }
                (Some(target.clone()), None)
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(None);
        inner.entries.insert(
            id,
            Entry {
                open: OpenPreview {
                    id,
                    target,
                    expires,
                },
                close,
            },
        );
        Ok(Lease {
            registry: self.clone(),
            id,
            group,
            closed,
            _own_slot: own_slot,
        })
    }

    /// Every open exchange.
    pub fn snapshot(&self) -> Vec<OpenPreview> {
        self.lock()
            .entries
            .values()
            .map(|e| e.open.clone())
            .collect()
    }

    /// Closes the exchanges `ids` for `reason`; their proxies end them.
    pub fn close(&self, ids: &[(u64, CloseReason)]) {
        let inner = self.lock();
        for (id, reason) in ids {
            if let Some(entry) = inner.entries.get(id) {
                entry.close.send_replace(Some(*reason));
            }
        }
    }
}

/// Which open exchanges must close at `now` (Unix seconds): those whose key is not in
/// `valid_keys`, whose session is in `gone_sessions` (namespace, name), or whose token has
/// expired. A pure decision.
pub fn to_close(
    open: &[OpenPreview],
    now: u64,
    key_is_valid: impl Fn(&str) -> bool,
    gone_sessions: &HashSet<(String, String)>,
) -> Vec<(u64, CloseReason)> {
    open.iter()
        .filter_map(|p| {
            let t = &p.target;
            let reason = if !key_is_valid(&t.key_id) {
                CloseReason::KeyRevoked
            } else if gone_sessions.contains(&(t.namespace.clone(), t.session.clone())) {
                CloseReason::SessionGone
            } else if now >= p.expires {
                CloseReason::TokenExpired
            } else {
                return None;
            };
            Some((p.id, reason))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(key: &str, session: &str) -> Target {
        Target {
            key_id: key.into(),
            namespace: "ns".into(),
            session: session.into(),
            port: 8080,
        }
    }

    fn limits(streams: usize) -> TierLimits {
        TierLimits {
            concurrent_streams: streams,
            ..TierLimits::free()
        }
    }

    #[test]
    fn http_exchanges_of_a_preview_share_a_slot_and_websockets_take_their_own() {
        let quotas = Arc::new(TenantQuotas::default());
        let open = Arc::new(OpenPreviews::default());
        let l = limits(2);
        let a = open.open(&quotas, &l, target("k", "s"), 10, Kind::Http);
        let b = open.open(&quotas, &l, target("k", "s"), 10, Kind::Http);
        assert!(a.is_ok() && b.is_ok(), "one slot for both");
        let ws = open
            .open(&quotas, &l, target("k", "s"), 10, Kind::Upgrade)
            .expect("the second slot");
        let refused = open.open(&quotas, &l, target("k", "t"), 10, Kind::Http);
        assert!(
            matches!(
                refused,
                Err(ApiError::TooMany {
                    code: "QUOTA_EXCEEDED",
                    ..
                })
            ),
            "a third stream"
        );
        drop((a, b));
        assert!(open
            .open(&quotas, &l, target("k", "t"), 10, Kind::Http)
            .is_ok());
        drop(ws);
        assert!(open.snapshot().is_empty());
        assert!(open.lock().groups.is_empty());
    }

    #[tokio::test]
    async fn closing_reaches_the_lease() {
        let quotas = Arc::new(TenantQuotas::default());
        let open = Arc::new(OpenPreviews::default());
        let mut lease = open
            .open(&quotas, &limits(5), target("k", "s"), 10, Kind::Upgrade)
            .expect("lease");
        let ids: Vec<u64> = open.snapshot().iter().map(|p| p.id).collect();
        open.close(&[(ids[0], CloseReason::KeyRevoked)]);
        assert_eq!(lease.closed().await, CloseReason::KeyRevoked);
    }

    #[test]
    fn revoked_keys_gone_sessions_and_expired_tokens_close() {
        let open = [
            OpenPreview {
                id: 1,
                target: target("revoked", "s"),
                expires: 100,
            },
            OpenPreview {
                id: 2,
                target: target("k", "deleted"),
                expires: 100,
            },
            OpenPreview {
                id: 3,
                target: target("k", "s"),
                expires: 50,
            },
            OpenPreview {
                id: 4,
                target: target("k", "s"),
                expires: 100,
            },
        ];
        let gone = HashSet::from([("ns".to_string(), "deleted".to_string())]);
        assert_eq!(
            to_close(&open, 50, |k| k != "revoked", &gone),
            [
                (1, CloseReason::KeyRevoked),
                (2, CloseReason::SessionGone),
                (3, CloseReason::TokenExpired)
            ]
        );
    }
}
