//! Per-tenant quotas that the api keeps itself, for what a Kubernetes ResourceQuota cannot
//! count: unfinished Executions, the bytes of a tenant's stored Executions and env Secrets, and
//! open SSE streams per key. (Object counts, the session limit included, are the tenant
//! namespace's ResourceQuota: the apiserver enforces those atomically, see
//! [`super::tiers::TierLimits::tenant_quota`].)
//!
//! An execute request reserves its place in the tenant's ledger before its body is read, so a
//! flood of large bodies is refused without buffering them; it charges the bytes it is about to
//! store before anything is created; and only a created Execution keeps its entry. The entry
//! counts as live until the api sees the Execution finish (or, if nobody is left watching, until
//! its result could last arrive), and its bytes count until the Execution can have expired
//! (`ttlSecondsAfterFinished` later). Each api replica keeps its own ledger, like the request
//! rate: with N replicas a tenant may reach N times these bounds.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    errors::{codes, ApiError},
    tiers::TierLimits,
};
use crate::crd::ExecutionSpec;

/// Most seconds a `Retry-After` of a quota refusal asks a client to wait.
const MAX_RETRY_AFTER: u64 = 3600;

/// Refused bodies read at once. The HTTP server reads a body only as fast as it is consumed,
/// and grows a connection's read buffer (to ~400 KiB) while it is read fast: a flood of
/// refused uploads read all at once would cost that much per connection.
const CONCURRENT_DISCARDS: usize = 8;

/// The longest a refused body is read before its connection is given up.
const DISCARD_TIME: Duration = Duration::from_secs(10);

/// The ledgers of every tenant (by namespace) and the open streams of every key.
pub struct TenantQuotas {
    ledgers: Mutex<HashMap<String, Ledger>>,
    streams: Mutex<HashMap<String, usize>>,
    next_id: std::sync::atomic::AtomicU64,
    discards: tokio::sync::Semaphore,
}

impl Default for TenantQuotas {
    fn default() -> Self {
        Self {
            ledgers: Mutex::default(),
            streams: Mutex::default(),
            next_id: std::sync::atomic::AtomicU64::default(),
            discards: tokio::sync::Semaphore::new(CONCURRENT_DISCARDS),
        }
    }
}

/// One tenant's Executions, as this replica admitted them.
#[derive(Default)]
struct Ledger {
    entries: Vec<Entry>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: u64,
    live_until: Instant,
    stored_until: Instant,
    bytes: u64,
}

impl Ledger {
    fn prune(&mut self, now: Instant) {
        self.entries.retain(|e| e.stored_until > now);
    }

    fn live(&self, now: Instant) -> usize {
        self.entries.iter().filter(|e| e.live_until > now).count()
    }

    fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    fn get(&mut self, id: u64) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.id == id)
    }
}

fn seconds_until(now: Instant, then: Option<Instant>) -> u64 {
    then.map(|t| t.saturating_duration_since(now).as_secs().saturating_add(1))
        .unwrap_or(1)
        .clamp(1, MAX_RETRY_AFTER)
}

fn exceeded(message: String, retry_after: u64) -> ApiError {
    ApiError::TooMany {
        code: codes::QUOTA_EXCEEDED,
        message,
        retry_after,
    }
}

impl TenantQuotas {
    fn ledgers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ledger>> {
        self.ledgers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a place for one more Execution of the tenant in `namespace`, or refuses with 429
    /// `QUOTA_EXCEEDED`. The place is live for at most `live_for` (after which nobody waits for
    /// it), and is given back when the [`Reservation`] is dropped unless it is
    /// [created](Reservation::created).
    pub fn reserve(
        self: &Arc<Self>,
        namespace: &str,
        limits: &TierLimits,
        live_for: Duration,
        now: Instant,
    ) -> Result<Reservation, ApiError> {
        let mut ledgers = self.ledgers();
        let ledger = ledgers.entry(namespace.to_string()).or_default();
        ledger.prune(now);
        if ledger.live(now) >= limits.live_executions {
            let soonest = ledger
                .entries
                .iter()
                .filter(|e| e.live_until > now)
                .map(|e| e.live_until)
                .min();
            return Err(exceeded(
                format!(
                    "this tenant has {} unfinished executions, the most its tier allows; wait for one to finish",
                    limits.live_executions
                ),
                seconds_until(now, soonest).min(30),
            ));
        }
        if ledger.entries.len() >= limits.stored_executions() {
            let soonest = ledger.entries.iter().map(|e| e.stored_until).min();
            return Err(exceeded(
                format!(
                    "this tenant keeps {} executions, the most its tier allows, until they expire",
                    limits.stored_executions()
                ),
                seconds_until(now, soonest),
            ));
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let live_until = now + live_for;
        ledger.entries.push(Entry {
            id,
            live_until,
            stored_until: live_until,
            bytes: 0,
        });
        Ok(Reservation {
            quotas: self.clone(),
            namespace: namespace.to_string(),
            id,
            keep: false,
        })
    }

    /// Opens one more stream for `key`, or refuses with 429 `QUOTA_EXCEEDED`. The stream counts
    /// until the [`StreamSlot`] is dropped.
    pub fn open_stream(
        self: &Arc<Self>,
        key: &str,
        limits: &TierLimits,
    ) -> Result<StreamSlot, ApiError> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let open = streams.entry(key.to_string()).or_default();
        if *open >= limits.concurrent_streams {
            return Err(exceeded(
                format!(
                    "this key has {} streams open, the most its tier allows",
                    limits.concurrent_streams
                ),
                5,
            ));
        }
        *open += 1;
        Ok(StreamSlot {
            quotas: self.clone(),
            key: key.to_string(),
        })
    }

    /// Reads and drops a refused request's body (at most `limit` bytes, for at most
    /// [`DISCARD_TIME`]), a few at a time, so that the client still sending it reads the
    /// answer instead of a reset connection, and a flood of refusals costs little memory.
    pub async fn discard(&self, body: axum::body::Body, limit: u64) {
        use futures::StreamExt;
        let Ok(_permit) = self.discards.acquire().await else {
            return;
        };
        let drain = async {
            let mut read: u64 = 0;
            let mut chunks = body.into_data_stream();
            while let Some(Ok(chunk)) = chunks.next().await {
                read = read.saturating_add(chunk.len() as u64);
                if read > limit {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
    }

    /// The unfinished Executions and stored bytes this replica counts for a tenant.
    pub fn usage(&self, namespace: &str, now: Instant) -> (usize, u64) {
        let mut ledgers = self.ledgers();
        match ledgers.get_mut(namespace) {
            Some(ledger) => {
                ledger.prune(now);
                (ledger.live(now), ledger.bytes())
            }
            None => (0, 0),
        }
    }

    fn update(&self, namespace: &str, id: u64, change: impl FnOnce(&mut Ledger, Option<usize>)) {
        let mut ledgers = self.ledgers();
        if let Some(ledger) = ledgers.get_mut(namespace) {
            let at = ledger.entries.iter().position(|e| e.id == id);
            change(ledger, at);
            if ledger.entries.is_empty() {
                ledgers.remove(namespace);
            }
        }
    }
}

/// A tenant's place for one Execution that is not created yet.
pub struct Reservation {
    quotas: Arc<TenantQuotas>,
    namespace: String,
    id: u64,
    keep: bool,
}

impl Reservation {
    /// Charges the bytes the Execution and its env Secret will take in etcd, or refuses with
    /// 429 `QUOTA_EXCEEDED` (and the reservation is given back when dropped).
    pub fn charge(
        &mut self,
        bytes: u64,
        limits: &TierLimits,
        now: Instant,
    ) -> Result<(), ApiError> {
        let mut ledgers = self.quotas.ledgers();
        let Some(ledger) = ledgers.get_mut(&self.namespace) else {
            return Ok(());
        };
        ledger.prune(now);
        let others: u64 = ledger
            .entries
            .iter()
            .filter(|e| e.id != self.id)
            .map(|e| e.bytes)
            .sum();
        if others.saturating_add(bytes) > limits.stored_bytes {
            let soonest = ledger
                .entries
                .iter()
                .filter(|e| e.bytes > 0)
                .map(|e| e.stored_until)
                .min();
            return Err(exceeded(
                format!(
                    "this tenant's stored executions and env take {others} bytes; {bytes} more would pass its tier's {} until some expire",
                    limits.stored_bytes
                ),
                seconds_until(now, soonest),
            ));
        }
        if let Some(entry) = ledger.get(self.id) {
            entry.bytes = bytes;
        }
        Ok(())
    }

    /// The Execution exists: its entry stays, live for at most `live_for` from `now` and
    /// stored for `ttl` after that.
    pub fn created(mut self, live_for: Duration, ttl: Duration, now: Instant) -> Charge {
        self.keep = true;
        let live_until = now + live_for;
        self.quotas.update(&self.namespace, self.id, |ledger, at| {
            if let Some(entry) = at.and_then(|at| ledger.entries.get_mut(at)) {
                entry.live_until = live_until;
                entry.stored_until = live_until + ttl;
            }
        });
        Charge {
            quotas: self.quotas.clone(),
            namespace: self.namespace.clone(),
            id: self.id,
            ttl,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        self.quotas.update(&self.namespace, self.id, |ledger, at| {
            if let Some(at) = at {
                ledger.entries.swap_remove(at);
            }
        });
    }
}

/// A created Execution's entry in its tenant's ledger.
pub struct Charge {
    quotas: Arc<TenantQuotas>,
    namespace: String,
    id: u64,
    ttl: Duration,
}

impl Charge {
    /// The Execution has finished at `now`: it is no longer live, and its bytes count until it
    /// can have expired.
    pub fn finished(&self, now: Instant) {
        let ttl = self.ttl;
        self.quotas.update(&self.namespace, self.id, |ledger, at| {
            if let Some(entry) = at.and_then(|at| ledger.entries.get_mut(at)) {
                entry.live_until = now;
                entry.stored_until = now + ttl;
            }
        });
    }
}

impl std::fmt::Debug for Charge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Charge")
            .field("namespace", &self.namespace)
            .field("id", &self.id)
            .finish()
    }
}

/// One open stream of a key.
pub struct StreamSlot {
    quotas: Arc<TenantQuotas>,
    key: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self
            .quotas
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(open) = streams.get_mut(&self.key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.key);
            }
        }
    }
}

/// What an object takes in etcd beyond its payload (metadata, labels, status), roughly.
const OBJECT_OVERHEAD: usize = 4096;

/// The bytes an Execution and the env Secret it refers to take in etcd, without serializing
/// them: the spec's code, command and inline files, and each variable's name and
/// base64-encoded value, plus each object's overhead.
pub fn stored_bytes<'a>(
    spec: &ExecutionSpec,
    env: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> u64 {
    let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
    let files: usize = spec
        .files
        .iter()
        .map(|f| f.path.len() + f.content.len() + 64)
        .sum();
    let execution = OBJECT_OVERHEAD + text(&spec.code) + text(&spec.command) + files;
    let mut secret = 0;
    for (name, value) in env {
        secret = secret.max(OBJECT_OVERHEAD) + name.len() + value.len().div_ceil(3) * 4;
    }
    u64::try_from(execution.saturating_add(secret)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn limits() -> TierLimits {
        TierLimits {
            live_executions: 2,
            stored_bytes: 1000,
            concurrent_streams: 1,
            ..TierLimits::free()
        }
    }

    fn code(result: Result<impl Sized, ApiError>) -> Option<(&'static str, u64)> {
        match result {
            Err(ApiError::TooMany {
                code, retry_after, ..
            }) => Some((code, retry_after)),
            _ => None,
        }
    }

    #[test]
    fn live_executions_are_bounded_until_they_finish() {
        let quotas = Arc::new(TenantQuotas::default());
        let now = Instant::now();
        let a = quotas.reserve("t", &limits(), MINUTE, now).expect("first");
        let a = a.created(MINUTE, MINUTE * 5, now);
        let _b = quotas.reserve("t", &limits(), MINUTE, now).expect("second");
        let refused = code(quotas.reserve("t", &limits(), MINUTE, now));
        assert_eq!(refused.map(|r| r.0), Some("QUOTA_EXCEEDED"));
        assert!(refused.is_some_and(|r| (1..=30).contains(&r.1)));
        // Another tenant has its own ledger.
        assert!(quotas.reserve("u", &limits(), MINUTE, now).is_ok());
        a.finished(now);
        assert!(quotas.reserve("t", &limits(), MINUTE, now).is_ok());
        assert_eq!(quotas.usage("t", now).0, 1, "the second, still pending");
        // Nobody waits longer than `live_for`: a place nobody settled comes back then.
        assert_eq!(quotas.usage("t", now + MINUTE * 2).0, 0);
    }

    #[test]
    fn a_dropped_reservation_leaves_nothing() {
        let quotas = Arc::new(TenantQuotas::default());
        let now = Instant::now();
        let mut r = quotas.reserve("t", &limits(), MINUTE, now).expect("place");
        r.charge(900, &limits(), now).expect("fits");
        assert_eq!(quotas.usage("t", now), (1, 900));
        drop(r);
        assert_eq!(quotas.usage("t", now), (0, 0));
        assert!(quotas.ledgers().is_empty());
    }

    #[test]
    fn stored_bytes_count_until_the_execution_can_have_expired() {
        let quotas = Arc::new(TenantQuotas::default());
        let now = Instant::now();
        let mut r = quotas.reserve("t", &limits(), MINUTE, now).expect("place");
        r.charge(600, &limits(), now).expect("fits");
        let first = r.created(MINUTE, MINUTE * 5, now);
        first.finished(now);
        let mut second = quotas.reserve("t", &limits(), MINUTE, now).expect("place");
        let refused = code(second.charge(600, &limits(), now));
        assert_eq!(refused, Some(("QUOTA_EXCEEDED", 301)));
        second
            .charge(400, &limits(), now)
            .expect("what is left fits");
        drop(second);
        let expired = now + MINUTE * 5 + Duration::from_secs(1);
        assert_eq!(quotas.usage("t", expired), (0, 0));
        let mut third = quotas
            .reserve("t", &limits(), MINUTE, expired)
            .expect("place");
        third
            .charge(1000, &limits(), expired)
            .expect("all of it again");
    }

    #[test]
    fn stored_executions_are_bounded_by_count() {
        let quotas = Arc::new(TenantQuotas::default());
        let now = Instant::now();
        let many = TierLimits {
            live_executions: usize::MAX,
            ..limits()
        };
        let charges: Vec<Charge> = (0..many.stored_executions())
            .map(|_| {
                let r = quotas.reserve("t", &many, MINUTE, now).expect("place");
                let charge = r.created(MINUTE, MINUTE, now);
                charge.finished(now);
                charge
            })
            .collect();
        assert_eq!(charges.len(), 1000);
        let refused = code(quotas.reserve("t", &many, MINUTE, now));
        assert_eq!(refused, Some(("QUOTA_EXCEEDED", 61)));
    }

    #[test]
    fn streams_are_bounded_per_key() {
        let quotas = Arc::new(TenantQuotas::default());
        let slot = quotas.open_stream("k1", &limits()).expect("first");
        assert_eq!(
            code(quotas.open_stream("k1", &limits())).map(|r| r.0),
            Some("QUOTA_EXCEEDED")
        );
        let _other_key = quotas.open_stream("k2", &limits()).expect("own count");
        drop(slot);
        assert!(quotas.open_stream("k1", &limits()).is_ok());
    }

    #[test]
    fn bytes_are_charged_as_etcd_stores_them() {
        let spec = ExecutionSpec {
            code: Some("x".repeat(100)),
            ..Default::default()
        };
        let no_env = std::collections::BTreeMap::new();
        assert_eq!(stored_bytes(&spec, &no_env), 4096 + 100);
        let env = std::collections::BTreeMap::from([("A".to_string(), "xyz".to_string())]);
        assert_eq!(stored_bytes(&spec, &env), 4096 + 100 + 4096 + 1 + 4);
    }
}
