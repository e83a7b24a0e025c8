//! Tier limits: what a key of each tier may do. The defaults are the hosted API's; a YAML file
//! (`--tiers-file`, a Helm value in a cluster) overrides any of them.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use crate::crd::MAX_TIMEOUT_SECONDS;

/// A pricing tier. Every API key has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The free tier.
    Free,
    /// The paid tier.
    Paid,
    /// Enterprise: paid defaults, meant to be configured.
    Enterprise,
}

impl Tier {
    /// Every tier.
    pub const ALL: [Tier; 3] = [Tier::Free, Tier::Paid, Tier::Enterprise];

    /// The tier as written in labels and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Paid => "paid",
            Tier::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "free" => Ok(Tier::Free),
            "paid" => Ok(Tier::Paid),
            "enterprise" => Ok(Tier::Enterprise),
            other => Err(format!("unknown tier {other:?} (free, paid or enterprise)")),
        }
    }
}

/// Default `sleepAfterSeconds` of every tier: 5 minutes, as in the hosted API.
pub const DEFAULT_SLEEP_AFTER_SECONDS: u64 = 300;
/// Default `deepSleepAfterSeconds` of every tier: 30 minutes, as in the hosted API.
pub const DEFAULT_DEEP_SLEEP_AFTER_SECONDS: u64 = 1800;

/// The limits of one tier. Sizes are in bytes, "MB" as in the hosted API (10^6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TierLimits {
    /// Longest execution timeout, in seconds (the Execution resource caps it at 300).
    pub timeout_seconds: u32,
    /// Most memory of one session, in MiB; also the default of a new session.
    #[serde(rename = "memoryMiB")]
    pub memory_mb: u64,
    /// Most CPU cores of one session.
    pub cpu: f64,
    /// Largest single file, in bytes (decoded).
    #[serde(rename = "fileSizeBytes")]
    pub file_bytes: u64,
    /// Most files in one request.
    pub files_per_request: usize,
    /// Most environment variables of one execution.
    pub env_vars: usize,
    /// Most sessions a tenant may have at once.
    #[serde(rename = "concurrentSessions")]
    pub max_sessions: usize,
    /// Sustained requests per minute per key.
    pub requests_per_minute: f64,
    /// Requests a key may burst above the sustained rate.
    pub burst: u32,
    /// Largest request body, in bytes.
    pub max_request_bytes: u64,
    /// Most Executions of a tenant that have not finished (each api replica counts its own).
    pub live_executions: usize,
    /// Most bytes of Executions and env Secrets a tenant may keep stored, from their creation
    /// until they can have expired (each api replica counts its own).
    pub stored_bytes: u64,
    /// Most Server-Sent Event streams one key may have open at once (per api replica).
    pub concurrent_streams: usize,
    /// Most bytes of full run output a session keeps in `.kubexec/runs/` (finished runs'
    /// output is collected oldest first beyond it; a running run's never).
    pub run_output_bytes: u64,
    /// Seconds a finished run's full output is kept.
    pub run_output_max_age_seconds: u64,
    /// Warm sandboxes kept for each tenant of this tier (its SessionPool `kubexec-<tier>`):
    /// a REST session of the default shape adopts one instead of starting a Pod. 0: none.
    pub pool_size: usize,
    /// Seconds without activity before a REST session sleeps (Pod and processes kept,
    /// requests given back); 0: never. Set as the Session's `spec.sleepAfterSeconds`.
    pub sleep_after_seconds: u64,
    /// Seconds without activity before a REST session deep-sleeps (Pod deleted, workspace
    /// kept); 0: never. Set as the Session's `spec.idleTimeoutSeconds`.
    pub deep_sleep_after_seconds: u64,
}

impl Default for TierLimits {
    fn default() -> Self {
        Self::free()
    }
}

impl TierLimits {
    /// The free tier of the hosted API.
    pub fn free() -> Self {
        Self {
            timeout_seconds: 30,
            memory_mb: 1024,
            cpu: 1.0,
            file_bytes: 10_000_000,
            files_per_request: 100,
            env_vars: 100,
            max_sessions: 5,
            requests_per_minute: 120.0,
            burst: 30,
            max_request_bytes: 64 << 20,
            live_executions: 10,
            stored_bytes: 8 << 20,
            concurrent_streams: 5,
            run_output_bytes: 64 << 20,
            run_output_max_age_seconds: 3600,
            pool_size: 1,
            sleep_after_seconds: DEFAULT_SLEEP_AFTER_SECONDS,
            deep_sleep_after_seconds: DEFAULT_DEEP_SLEEP_AFTER_SECONDS,
        }
    }

    /// The Session's `spec.sleepAfterSeconds` and `spec.idleTimeoutSeconds` for a REST
    /// session of this tier (`None`: never).
    pub fn idle_policy(&self) -> (Option<i64>, Option<i64>) {
        let seconds = |v: u64| (v > 0).then(|| i64::try_from(v).unwrap_or(i64::MAX));
        (
            seconds(self.sleep_after_seconds),
            seconds(self.deep_sleep_after_seconds),
        )
    }

    /// Sustained requests per second per key.
    pub fn requests_per_second(&self) -> f64 {
        self.requests_per_minute / 60.0
    }

    /// Enterprise: the paid tier with more room (meant to be configured).
    pub fn enterprise() -> Self {
        Self {
            memory_mb: 16384,
            cpu: 4.0,
            max_sessions: 500,
            requests_per_minute: 12000.0,
            burst: 1000,
            live_executions: 1000,
            stored_bytes: 256 << 20,
            concurrent_streams: 500,
            run_output_bytes: 1 << 30,
            ..Self::paid()
        }
    }

    /// Most Pods and workspace claims a tenant namespace may hold: twice the concurrent
    /// sessions plus the warm pool (a deleted session's Pod counts until it is gone, and the
    /// pool refills while adopted Pods still run), plus 10.
    pub fn namespace_objects(&self) -> usize {
        self.max_sessions
            .saturating_add(self.pool_size)
            .saturating_mul(2)
            .saturating_add(10)
    }

    /// Most Executions a tenant namespace may hold, finished ones included (they stay until
    /// `ttlSecondsAfterFinished`): 100 per concurrent session, at least 1000.
    pub fn stored_executions(&self) -> usize {
        self.max_sessions.saturating_mul(100).max(1000)
    }

    /// The `hard` limits of a tenant namespace's ResourceQuota. The apiserver enforces them
    /// atomically, so concurrent creates cannot overshoot: Sessions exactly the tier's
    /// concurrent sessions (the session limit), Executions [`Self::stored_executions`],
    /// Secrets (env of executions and sessions) as many plus the namespace's other objects,
    /// workspace storage 10Gi (the largest workspace) per concurrent session and warm sandbox.
    pub fn tenant_quota(&self) -> BTreeMap<String, String> {
        let objects = self.namespace_objects();
        let executions = self.stored_executions();
        BTreeMap::from([
            ("pods".to_string(), objects.to_string()),
            ("persistentvolumeclaims".to_string(), objects.to_string()),
            (
                "requests.storage".to_string(),
                format!(
                    "{}Gi",
                    self.max_sessions
                        .saturating_add(self.pool_size)
                        .saturating_mul(10)
                ),
            ),
            (
                "count/sessions.kubexec.dev".to_string(),
                self.max_sessions.to_string(),
            ),
            (
                "count/executions.kubexec.dev".to_string(),
                executions.to_string(),
            ),
            (
                "count/secrets".to_string(),
                executions.saturating_add(objects).to_string(),
            ),
        ])
    }

    /// The most CPU and memory of one container in a tenant namespace (its LimitRange): one
    /// session of this tier.
    pub fn container_max(&self) -> BTreeMap<String, String> {
        let millis = (self.cpu * 1000.0).round().max(1.0) as u64;
        BTreeMap::from([
            ("cpu".to_string(), format!("{millis}m")),
            ("memory".to_string(), format!("{}Mi", self.memory_mb)),
        ])
    }

    /// The paid tier of the hosted API.
    pub fn paid() -> Self {
        Self {
            timeout_seconds: 300,
            memory_mb: 4096,
            cpu: 2.0,
            file_bytes: 50_000_000,
            files_per_request: 1000,
            env_vars: 500,
            max_sessions: 50,
            requests_per_minute: 1200.0,
            burst: 100,
            max_request_bytes: 256 << 20,
            live_executions: 100,
            stored_bytes: 64 << 20,
            concurrent_streams: 50,
            run_output_bytes: 256 << 20,
            run_output_max_age_seconds: 24 * 3600,
            pool_size: 2,
            sleep_after_seconds: DEFAULT_SLEEP_AFTER_SECONDS,
            deep_sleep_after_seconds: DEFAULT_DEEP_SLEEP_AFTER_SECONDS,
        }
    }
}

/// The limits of every tier.
#[derive(Clone, Debug, PartialEq)]
pub struct Tiers(BTreeMap<Tier, TierLimits>);

impl Default for Tiers {
    fn default() -> Self {
        Self(BTreeMap::from([
            (Tier::Free, TierLimits::free()),
            (Tier::Paid, TierLimits::paid()),
            (Tier::Enterprise, TierLimits::enterprise()),
        ]))
    }
}

/// The YAML of `--tiers-file`: any tier, any field; the rest keeps its default.
///
/// ```yaml
/// free:
///   timeoutSeconds: 20
/// enterprise:
///   memoryMiB: 16384
///   fileSizeBytes: 200000000
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TiersFile {
    #[serde(default)]
    free: Option<serde_json::Value>,
    #[serde(default)]
    paid: Option<serde_json::Value>,
    #[serde(default)]
    enterprise: Option<serde_json::Value>,
}

impl Tiers {
    /// The limits of `tier`.
    pub fn get(&self, tier: Tier) -> &TierLimits {
        // Every tier is in the map: built from the defaults, overrides only replace.
        self.0.get(&tier).unwrap_or_else(|| &FALLBACK)
    }

    /// The largest request body any tier accepts: the body limit of the whole server.
    pub fn largest_request_bytes(&self) -> u64 {
        self.0
            .values()
            .map(|l| l.max_request_bytes)
            .max()
            .unwrap_or(FALLBACK.max_request_bytes)
    }

    /// The defaults with the overrides of a YAML document applied.
    pub fn from_yaml(text: &str) -> Result<Self, TiersError> {
        let file: TiersFile = serde_saphyr::from_str(text).map_err(TiersError::Syntax)?;
        let mut tiers = Tiers::default();
        for (tier, overrides) in [
            (Tier::Free, file.free),
            (Tier::Paid, file.paid),
            (Tier::Enterprise, file.enterprise),
        ] {
            let Some(overrides) = overrides else { continue };
            let mut merged = serde_json::to_value(tiers.get(tier)).map_err(TiersError::Merge)?;
            let (Some(base), serde_json::Value::Object(over)) = (merged.as_object_mut(), overrides)
            else {
                return Err(TiersError::NotAMapping(tier));
            };
            for (key, value) in over {
                if !base.contains_key(&key) {
                    return Err(TiersError::UnknownLimit { tier, key });
                }
                base.insert(key, value);
            }
            let limits: TierLimits = serde_json::from_value(merged)
                .map_err(|source| TiersError::BadLimit { tier, source })?;
            check(tier, &limits)?;
            tiers.0.insert(tier, limits);
        }
        Ok(tiers)
    }

    /// Reads `--tiers-file`.
    pub fn from_file(path: &Path) -> Result<Self, TiersError> {
        let text = std::fs::read_to_string(path).map_err(|source| TiersError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text)
    }
}

/// Why a tiers file was refused. The messages name the file's part at fault.
#[derive(Debug, thiserror::Error)]
pub enum TiersError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The `--tiers-file` path.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML of the expected shape.
    #[error("tiers file: {0}")]
    Syntax(#[source] serde_saphyr::Error),
    /// A tier's defaults could not be merged with its overrides.
    #[error("tiers file: {0}")]
    Merge(#[source] serde_json::Error),
    /// A tier's entry is not a mapping of limits.
    #[error("tiers file: {0} must be a mapping")]
    NotAMapping(Tier),
    /// A tier names a limit that does not exist.
    #[error("tiers file: {tier}: unknown limit {key:?}")]
    UnknownLimit {
        /// The tier.
        tier: Tier,
        /// The unknown name.
        key: String,
    },
    /// A limit has a value of the wrong type.
    #[error("tiers file: {tier}: {source}")]
    BadLimit {
        /// The tier.
        tier: Tier,
        /// What did not deserialize.
        #[source]
        source: serde_json::Error,
    },
    /// `timeoutSeconds` is outside what an Execution accepts.
    #[error("tiers file: {tier}: timeoutSeconds must be between 1 and {max}")]
    Timeout {
        /// The tier.
        tier: Tier,
        /// The Execution's largest timeout.
        max: u32,
    },
    /// The idle policy is out of range, or deep sleep does not come after sleep.
    #[error("tiers file: {tier}: sleepAfterSeconds and deepSleepAfterSeconds must be at most {max} (0: never), and sleep must come before deep sleep")]
    IdlePolicy {
        /// The tier.
        tier: Tier,
        /// The largest value (a week, the longest TTL).
        max: i64,
    },
    /// Limits that must be positive are not.
    #[error("tiers file: {tier}: {limits} must be positive")]
    NotPositive {
        /// The tier.
        tier: Tier,
        /// The limits, as named in the file.
        limits: &'static str,
    },
}

static FALLBACK: std::sync::LazyLock<TierLimits> = std::sync::LazyLock::new(TierLimits::free);

fn check(tier: Tier, limits: &TierLimits) -> Result<(), TiersError> {
    let max = u32::try_from(MAX_TIMEOUT_SECONDS).unwrap_or(300);
    if !(1..=max).contains(&limits.timeout_seconds) {
        return Err(TiersError::Timeout { tier, max });
    }
    let not_positive = |limits| Err(TiersError::NotPositive { tier, limits });
    if !(limits.cpu.is_finite() && limits.cpu > 0.0) {
        return not_positive("cpu");
    }
    if !(limits.requests_per_minute.is_finite() && limits.requests_per_minute > 0.0) {
        return not_positive("requestsPerMinute");
    }
    if limits.memory_mb == 0 || limits.file_bytes == 0 || limits.burst == 0 {
        return not_positive("memoryMiB, fileSizeBytes and burst");
    }
    if limits.max_sessions == 0
        || limits.live_executions == 0
        || limits.stored_bytes == 0
        || limits.concurrent_streams == 0
    {
        return not_positive(
            "concurrentSessions, liveExecutions, storedBytes and concurrentStreams",
        );
    }
    let (sleep, deep) = limits.idle_policy();
    let max = crate::crd::MAX_TTL_SECONDS;
    let in_range = |v: Option<i64>| v.is_none_or(|v| v <= max);
    if !in_range(sleep) || !in_range(deep) || sleep.zip(deep).is_some_and(|(s, d)| s >= d) {
        return Err(TiersError::IdlePolicy { tier, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_hosted_apis() {
        let tiers = Tiers::default();
        let free = tiers.get(Tier::Free);
        assert_eq!(free.timeout_seconds, 30);
        assert_eq!(free.memory_mb, 1024);
        assert_eq!(free.file_bytes, 10_000_000);
        assert_eq!(free.files_per_request, 100);
        assert_eq!(free.env_vars, 100);
        let paid = tiers.get(Tier::Paid);
        assert_eq!(paid.timeout_seconds, 300);
        assert_eq!(paid.memory_mb, 4096);
        assert_eq!(paid.file_bytes, 50_000_000);
        assert_eq!(paid.files_per_request, 1000);
        assert_eq!(paid.env_vars, 500);
        assert_eq!(tiers.largest_request_bytes(), 256 << 20);
    }

    #[test]
    fn a_file_overrides_single_limits() {
        let tiers =
            Tiers::from_yaml("free:\n  timeoutSeconds: 20\nenterprise:\n  memoryMiB: 16384\n")
                .expect("valid");
        assert_eq!(tiers.get(Tier::Free).timeout_seconds, 20);
        assert_eq!(tiers.get(Tier::Free).env_vars, 100);
        assert_eq!(tiers.get(Tier::Enterprise).memory_mb, 16384);
        assert!(Tiers::from_yaml("free:\n  timeoutSeconds: 301\n").is_err());
        assert!(Tiers::from_yaml("free:\n  bogus: 1\n").is_err());
        assert!(Tiers::from_yaml("gold: {}\n").is_err());
    }

    /// `kubexec api` prints these messages; they read as they did when they were strings.
    #[test]
    fn refused_files_say_why() {
        let message = |yaml: &str| match Tiers::from_yaml(yaml) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{yaml:?} was accepted"),
        };
        assert_eq!(
            message("free:\n  timeoutSeconds: 301\n"),
            "tiers file: free: timeoutSeconds must be between 1 and 300"
        );
        assert_eq!(
            message("paid:\n  bogus: 1\n"),
            "tiers file: paid: unknown limit \"bogus\""
        );
        assert_eq!(message("free: 3\n"), "tiers file: free must be a mapping");
        assert_eq!(
            message("free:\n  cpu: 0\n"),
            "tiers file: free: cpu must be positive"
        );
        assert_eq!(
            message("free:\n  requestsPerMinute: 0\n"),
            "tiers file: free: requestsPerMinute must be positive"
        );
        assert_eq!(
            message("enterprise:\n  burst: 0\n"),
            "tiers file: enterprise: memoryMiB, fileSizeBytes and burst must be positive"
        );
        assert!(message("free:\n  burst: many\n").starts_with("tiers file: free: "));
        assert!(message("gold: {}\n").starts_with("tiers file: "));
        let missing = Path::new("/nonexistent/tiers.yaml");
        let read = Tiers::from_file(missing)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(
            read.as_ref()
                .is_err_and(|e| e.starts_with("reading /nonexistent/tiers.yaml: ")),
            "{read:?}"
        );
    }

    #[test]
    fn tenant_quota_comes_from_the_tier() {
        let quota = TierLimits::free().tenant_quota();
        let expected: BTreeMap<String, String> = [
            ("pods", "22"),
            ("persistentvolumeclaims", "22"),
            ("requests.storage", "60Gi"),
            ("count/sessions.kubexec.dev", "5"),
            ("count/executions.kubexec.dev", "1000"),
            ("count/secrets", "1022"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(quota, expected);
        let paid = TierLimits::paid().tenant_quota();
        assert_eq!(
            paid["pods"], "114",
            "50 sessions and a pool of 2, twice, plus 10"
        );
        assert_eq!(paid["count/executions.kubexec.dev"], "5000");
        assert_eq!(paid["count/sessions.kubexec.dev"], "50");
        assert_eq!(paid["requests.storage"], "520Gi");
        assert_eq!(
            TierLimits::free().container_max(),
            BTreeMap::from([
                ("cpu".to_string(), "1000m".to_string()),
                ("memory".to_string(), "1024Mi".to_string()),
            ])
        );
        let tiny = TierLimits {
            cpu: 0.25,
            ..TierLimits::free()
        };
        assert_eq!(tiny.container_max()["cpu"], "250m");
        let no_pool = TierLimits {
            pool_size: 0,
            ..TierLimits::free()
        };
        assert_eq!(no_pool.tenant_quota()["pods"], "20");
    }

    #[test]
    fn pool_sizes_default_per_tier_and_a_file_sets_them() {
        let tiers = Tiers::default();
        assert_eq!(tiers.get(Tier::Free).pool_size, 1);
        assert_eq!(tiers.get(Tier::Paid).pool_size, 2);
        assert_eq!(tiers.get(Tier::Enterprise).pool_size, 2);
        let tiers =
            Tiers::from_yaml("free:\n  poolSize: 0\npaid:\n  poolSize: 10\n").expect("valid");
        assert_eq!(tiers.get(Tier::Free).pool_size, 0);
        assert_eq!(tiers.get(Tier::Paid).pool_size, 10);
        assert!(Tiers::from_yaml("free:\n  poolSize: -1\n").is_err());
    }

    #[test]
    fn tiers_parse_from_their_names() {
        for tier in Tier::ALL {
            assert_eq!(tier.as_str().parse::<Tier>(), Ok(tier));
        }
        assert!("platinum".parse::<Tier>().is_err());
    }
}

#[cfg(test)]
mod chart_tests {
    use super::*;

    /// The Helm chart renders its `tiers` values into the file `--tiers-file` reads.
    #[test]
    fn the_charts_tier_values_are_a_valid_tiers_file() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/kubexec/values.yaml");
        let Ok(values) = std::fs::read_to_string(path) else {
            return;
        };
        let values: serde_json::Value = serde_saphyr::from_str(&values).expect("values.yaml");
        let tiers = serde_json::to_string(&values["tiers"]).expect("json");
        // JSON is YAML.
        let parsed = Tiers::from_yaml(&tiers).expect("the chart's tiers parse");
        assert_eq!(
            parsed.get(Tier::Free).timeout_seconds,
            values["tiers"]["free"]["timeoutSeconds"]
                .as_u64()
                .unwrap_or(0) as u32
        );
    }
}
