//! API keys. A key is `kx_` followed by 64 hex digits (32 random bytes). Only its SHA-256 is
//! stored: one Secret per key in the keys namespace, labelled with the key's tenant and tier.
//! The api keeps an in-memory index of those Secrets, fed by a watcher, so checking a key costs
//! no apiserver call and a revoked key stops working within moments.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{api::core::v1::Secret, ByteString};
use kube::{api::ObjectMeta, runtime::watcher, Api, Client, ResourceExt};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::tiers::Tier;
use crate::crd::labels;

/// Label marking a Secret as an API key.
pub const KEY_LABEL: &str = "kubexec.dev/api-key";
/// Label naming the key's tenant.
pub const TENANT_LABEL: &str = "kubexec.dev/tenant";
/// Label naming the key's tier.
pub const TIER_LABEL: &str = "kubexec.dev/tier";
/// Annotation with the first characters of the key, to recognise it in `keys list`.
pub const PREFIX_ANNOTATION: &str = "kubexec.dev/key-prefix";
/// Data field holding the key's hex SHA-256.
pub const HASH_FIELD: &str = "sha256";
/// Prefix of every key's Secret name; the rest is the key id.
pub const SECRET_PREFIX: &str = "kubexec-key-";
/// Selector of key Secrets.
pub const KEY_SELECTOR: &str = "kubexec.dev/api-key=true";

/// How long the key watch may be broken (failing, with no successful relist since) before the
/// cache counts as stale, by default: then `/readyz` fails and requests are refused, so that no
/// replica keeps accepting a key that was revoked meanwhile. `--keys-stale-after` sets it.
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// The key watch starts over with a full list this often, even when it never fails: a watch
/// that hangs silently shows up as a relist that is overdue.
pub const RELIST_EVERY: Duration = Duration::from_secs(300);
/// Longest wait between attempts of a failing key watch.
const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(5);

/// How current the key cache is, from the watch's successes and failures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Freshness {
    /// The last complete list of keys.
    pub last_relist: Option<Instant>,
    /// The first failure since that list, if the watch has failed since.
    pub broken_since: Option<Instant>,
}

impl Freshness {
    /// True when the cache can no longer be trusted at `now`: the watch has been broken for
    /// `stale_after` (normally [`STALE_AFTER`]), or the periodic relist is that much overdue.
    /// Before the first list the cache is not stale but not loaded (see
    /// [`KeyCache::is_synced`]).
    pub fn is_stale(&self, now: Instant, stale_after: Duration) -> bool {
        let broken_too_long = self
            .broken_since
            .is_some_and(|since| now.saturating_duration_since(since) >= stale_after);
        let relist_overdue = self
            .last_relist
            .is_some_and(|at| now.saturating_duration_since(at) >= RELIST_EVERY + stale_after);
        broken_too_long || relist_overdue
    }
}

/// What a valid key stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key id (its Secret is `kubexec-key-<id>`).
    pub id: String,
    /// The tenant the key belongs to.
    pub tenant: String,
    /// The key's tier.
    pub tier: Tier,
}

/// The OS gave no random bytes.
#[derive(Debug, thiserror::Error)]
#[error("no randomness from the OS: {0}")]
pub struct NoRandomness(getrandom::Error);

/// Fills `buf` with random bytes from the OS.
fn random_bytes(buf: &mut [u8]) -> Result<(), NoRandomness> {
    getrandom::fill(buf).map_err(NoRandomness)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random lowercase alphanumeric string (for object names).
pub fn random_name_suffix(len: usize) -> Result<String, NoRandomness> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    random_bytes(&mut bytes)?;
    // 256 % 36 != 0 skews a few letters slightly; names only need to be unlikely to collide.
    Ok(bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect())
}

/// A new key id and plaintext key.
pub fn generate_key() -> Result<(String, String), NoRandomness> {
    let mut id = [0u8; 4];
    let mut secret = [0u8; 32];
    random_bytes(&mut id)?;
    random_bytes(&mut secret)?;
    Ok((hex(&id), format!("kx_{}", hex(&secret))))
}

/// The hex SHA-256 of a key, as stored.
pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// The hex SHA-256 of any text (also used for idempotency keys).
pub fn sha256_hex(text: &[u8]) -> String {
    hex(&Sha256::digest(text))
}

/// The Secret that stores a key.
pub fn key_secret(id: &str, key: &str, tenant: &str, tier: Tier) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("{SECRET_PREFIX}{id}")),
            labels: Some(BTreeMap::from([
                (KEY_LABEL.to_string(), "true".to_string()),
                (TENANT_LABEL.to_string(), tenant.to_string()),
                (TIER_LABEL.to_string(), tier.as_str().to_string()),
                (
                    labels::MANAGED_BY.to_string(),
                    labels::MANAGED_BY_VALUE.to_string(),
                ),
            ])),
            annotations: Some(BTreeMap::from([(
                PREFIX_ANNOTATION.to_string(),
                key.chars().take(9).collect(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            HASH_FIELD.to_string(),
            ByteString(hash_key(key).into_bytes()),
        )])),
        type_: Some("Opaque".to_string()),
        ..Default::default()
    }
}

/// Reads a key Secret back: its hash and what the key stands for. `None` if it is not a
/// well-formed key Secret.
pub fn parse_key_secret(secret: &Secret) -> Option<(String, KeyInfo)> {
    let name = secret.metadata.name.as_deref()?;
    let id = name.strip_prefix(SECRET_PREFIX)?.to_string();
    let labels = secret.metadata.labels.as_ref()?;
    let tenant = labels.get(TENANT_LABEL)?.clone();
    let tier = labels.get(TIER_LABEL)?.parse().ok()?;
    let hash = secret.data.as_ref()?.get(HASH_FIELD)?;
    let hash = String::from_utf8(hash.0.clone()).ok()?;
    Some((hash.trim().to_string(), KeyInfo { id, tenant, tier }))
}

/// The index of valid keys, by hash.
pub struct KeyCache {
    by_hash: RwLock<HashMap<String, KeyInfo>>,
    /// Secret name → hash, to forget a deleted Secret.
    by_secret: RwLock<HashMap<String, String>>,
    synced: AtomicBool,
    freshness: Mutex<Freshness>,
    /// See [`Freshness::is_stale`].
    stale_after: Duration,
}

impl KeyCache {
    /// An empty cache that turns stale after [`STALE_AFTER`].
    pub fn new() -> Arc<Self> {
        Self::stale_after(STALE_AFTER)
    }

    /// An empty cache that turns stale once its watch has been broken for `stale_after`.
    pub fn stale_after(stale_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            by_hash: RwLock::default(),
            by_secret: RwLock::default(),
            synced: AtomicBool::default(),
            freshness: Mutex::default(),
            stale_after,
        })
    }

    /// The key's owner, if the key is valid.
    pub fn lookup(&self, key: &str) -> Option<KeyInfo> {
        let hash = hash_key(key);
        self.by_hash
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .cloned()
    }

    /// The key with id `id`, if it is valid (not revoked).
    pub fn get_by_id(&self, id: &str) -> Option<KeyInfo> {
        self.by_hash
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|info| info.id == id)
            .cloned()
    }

    /// True once the first complete list of keys is in.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// How current the cache is.
    pub fn freshness(&self) -> Freshness {
        *self.freshness.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when the cache may miss revocations (see [`Freshness::is_stale`]).
    pub fn is_stale(&self) -> bool {
        self.freshness().is_stale(Instant::now(), self.stale_after)
    }

    /// Records a failure of the watch at `at` (the first one since the last list counts).
    pub fn watch_failed(&self, at: Instant) {
        let mut freshness = self.freshness.lock().unwrap_or_else(|e| e.into_inner());
        freshness.broken_since.get_or_insert(at);
    }

    /// Records a complete list at `at`: the cache is current again.
    pub fn relisted(&self, at: Instant) {
        *self.freshness.lock().unwrap_or_else(|e| e.into_inner()) = Freshness {
            last_relist: Some(at),
            broken_since: None,
        };
    }

    /// Adds or replaces a key Secret.
    pub fn insert(&self, secret: &Secret) {
        let name = secret.name_any();
        self.remove(&name);
        if let Some((hash, info)) = parse_key_secret(secret) {
            self.by_secret
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name, hash.clone());
            self.by_hash
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(hash, info);
        }
    }

    /// Forgets a key Secret.
    pub fn remove(&self, secret_name: &str) {
        let hash = self
            .by_secret
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(secret_name);
        if let Some(hash) = hash {
            self.by_hash
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&hash);
        }
    }

    /// Replaces everything with a complete list.
    pub fn replace_all(&self, secrets: &[Secret]) {
        self.by_hash
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.by_secret
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for secret in secrets {
            self.insert(secret);
        }
        self.synced.store(true, Ordering::Relaxed);
        self.relisted(Instant::now());
    }

    /// Applies one watcher event.
    pub fn apply(&self, event: watcher::Event<Secret>, relisting: &mut Vec<Secret>) {
        match event {
            watcher::Event::Apply(secret) => self.insert(&secret),
            watcher::Event::Delete(secret) => self.remove(&secret.name_any()),
            watcher::Event::Init => relisting.clear(),
            watcher::Event::InitApply(secret) => relisting.push(secret),
            watcher::Event::InitDone => {
                self.replace_all(relisting);
                relisting.clear();
            }
        }
    }
}

/// Keeps `cache` in step with the key Secrets of `namespace`, forever. Each round is a fresh
/// watcher: a full list, then a watch. A round ends on the first error (recorded, so that a
/// watch broken for long makes the cache stale) or after [`RELIST_EVERY`]; the next one
/// starts with a full list again, after a backoff when the last one failed.
pub async fn watch_keys(client: Client, namespace: String, cache: Arc<KeyCache>) {
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(KEY_SELECTOR);
    let mut backoff = Duration::from_millis(100);
    info!(namespace, "watching API keys");
    loop {
        let mut relisting = Vec::new();
        let mut events = watcher(secrets.clone(), config.clone()).boxed();
        let round = tokio::time::sleep(RELIST_EVERY);
        tokio::pin!(round);
        let failed = loop {
            tokio::select! {
                () = &mut round => break false,
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        if matches!(event, watcher::Event::InitDone) {
                            backoff = Duration::from_millis(100);
                        }
                        cache.apply(event, &mut relisting);
                    }
                    Some(Err(e)) => {
                        warn!(error = %e, "watching API keys");
                        cache.watch_failed(Instant::now());
                        break true;
                    }
                    None => break true,
                },
            }
        };
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_WATCH_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_stored_hashed() {
        let (id, key) = generate_key().expect("random");
        let (_, other) = generate_key().expect("random");
        assert_ne!(key, other);
        assert!(key.starts_with("kx_") && key.len() == 67, "{key}");
        assert_eq!(id.len(), 8);
        let secret = key_secret(&id, &key, "acme", Tier::Paid);
        let stored = serde_json::to_string(&secret).expect("json");
        assert!(!stored.contains(&key[3..]), "plaintext must not be stored");
        let (hash, info) = parse_key_secret(&secret).expect("parses");
        assert_eq!(hash, hash_key(&key));
        assert_eq!(
            info,
            KeyInfo {
                id,
                tenant: "acme".into(),
                tier: Tier::Paid
            }
        );
    }

    #[test]
    fn the_cache_follows_the_watcher() {
        let cache = KeyCache::new();
        let (id, key) = generate_key().expect("random");
        let secret = key_secret(&id, &key, "acme", Tier::Free);
        let mut relisting = Vec::new();
        assert!(!cache.is_synced());
        cache.apply(watcher::Event::Init, &mut relisting);
        cache.apply(watcher::Event::InitApply(secret.clone()), &mut relisting);
        assert!(
            cache.lookup(&key).is_none(),
            "not before the list is complete"
        );
        cache.apply(watcher::Event::InitDone, &mut relisting);
        assert!(cache.is_synced());
        assert_eq!(cache.lookup(&key).map(|k| k.tenant), Some("acme".into()));
        assert!(cache.lookup("kx_wrong").is_none());
        cache.apply(watcher::Event::Delete(secret), &mut relisting);
        assert!(cache.lookup(&key).is_none());
    }

    #[test]
    fn a_watch_broken_for_long_makes_the_cache_stale() {
        trait AtDefault {
            fn is_stale_at(&self, now: Instant) -> bool;
        }
        impl AtDefault for Freshness {
            fn is_stale_at(&self, now: Instant) -> bool {
                self.is_stale(now, STALE_AFTER)
            }
        }
        let listed = Instant::now();
        let later = |d: Duration| listed + d;
        let mut freshness = Freshness {
            last_relist: Some(listed),
            broken_since: None,
        };
        assert!(!freshness.is_stale_at(later(Duration::from_secs(60))));
        freshness.broken_since = Some(later(Duration::from_secs(10)));
        assert!(!freshness.is_stale_at(later(Duration::from_secs(10) + STALE_AFTER / 2)));
        assert!(freshness.is_stale_at(later(Duration::from_secs(10) + STALE_AFTER)));
        // A watch that hangs without failing: the periodic relist is overdue.
        let quiet = Freshness {
            last_relist: Some(listed),
            broken_since: None,
        };
        assert!(!quiet.is_stale_at(later(RELIST_EVERY)));
        assert!(quiet.is_stale_at(later(RELIST_EVERY + STALE_AFTER)));
        assert!(!Freshness::default().is_stale_at(later(RELIST_EVERY * 10)));

        let cache = KeyCache::new();
        cache.replace_all(&[]);
        cache.watch_failed(listed);
        cache.watch_failed(later(Duration::from_secs(20)));
        assert_eq!(
            cache.freshness().broken_since,
            Some(listed),
            "the first failure counts"
        );
        cache.relisted(later(Duration::from_secs(40)));
        assert_eq!(cache.freshness().broken_since, None);
    }
}
