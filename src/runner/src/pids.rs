//! The session's process limit, enforced as `RLIMIT_NPROC` on each execution's user process.
//!
//! # Why `RLIMIT_NPROC`, and only inside a user namespace
//!
//! Since Linux 5.14 the kernel counts `RLIMIT_NPROC` per (user namespace, real host uid), threads
//! and unreaped zombies included, and compares the count with the limit of the task that forks.
//! A sandbox Pod with `hostUsers: false` has a user namespace of its own, mapped onto host uids
//! that no other Pod on the node uses. There the count is exactly "the tasks of this sandbox's
//! user", and a limit of N bounds this session alone. Capabilities inside the namespace do not
//! exempt a task: the exemption needs `CAP_SYS_RESOURCE` or `CAP_SYS_ADMIN` in the *initial*
//! namespace, and an unprivileged task cannot raise its hard limit again.
//!
//! Without a user namespace, uid 1000 in this sandbox *is* host uid 1000, shared by every
//! sandbox on the node and by any host process of that uid. A limit of N would then bound them
//! all together, and one session's fork bomb would make fork fail in every other session. So
//! the limit is applied only when `/proc/self/uid_map` is not the identity map. Otherwise it is
//! skipped, and the kubelet's `podPidsLimit` is the only bound.
//!
//! # Why on the user process and not on the runner
//!
//! The limit is set between fork and exec of the user process (soft = hard = N). That process
//! and everything it starts are bounded. The runner keeps the limit it inherited from the
//! container runtime: PID 1 and every `kubexec-runner exec`, each started by the runtime through
//! the exec subresource. So while user code holds the session at its limit, the runner can
//! still start the next execution and kill a fork bomb's process group.
//!
//! N comes from the runner's own environment ([`PIDS_LIMIT_ENV`], set by the operator on the
//! sandbox container). It never comes from an `ExecSpec`, whose env reaches only the user
//! process, so a tenant's env cannot raise it.

use std::fmt;

pub use crate::protocol::PIDS_LIMIT_ENV;

/// Highest pid the kernel hands out on 64-bit systems (`PID_MAX_LIMIT`); a larger process
/// limit means nothing.
pub const MAX_PIDS_LIMIT: u64 = 4 * 1024 * 1024;

/// Where `RLIMIT_NPROC` is enforced and where it is not, as decided from the runner's
/// environment and its user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessLimit {
    /// Each user process gets soft = hard = this limit.
    Enforced(u64),
    /// No limit is configured: the runner is not in a kubexec sandbox (a test, a hand-made Pod).
    Unset,
    /// A limit is configured but not applied.
    NotEnforced { configured: String, reason: Skip },
}

/// Why a configured limit is not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The value is not a number between 1 and [`MAX_PIDS_LIMIT`].
    Invalid,
    /// `/proc/self/uid_map` is the identity map: no user namespace, so the count is shared with
    /// every sandbox on the node.
    SharedHostUid,
    /// `/proc/self/uid_map` could not be read or parsed, so isolation cannot be shown.
    UnknownUidMap,
}

impl ProcessLimit {
    /// Decides from the limit's value in the runner's environment and the contents of
    /// `/proc/self/uid_map`.
    pub fn decide(configured: Option<&str>, uid_map: Option<&str>) -> Self {
        let Some(configured) = configured else {
            return Self::Unset;
        };
        let not_enforced = |reason| Self::NotEnforced {
            configured: configured.to_string(),
            reason,
        };
        let Some(limit) = parse_limit(configured) else {
            return not_enforced(Skip::Invalid);
        };
        match uid_map.and_then(is_identity_map) {
            None => not_enforced(Skip::UnknownUidMap),
            Some(true) => not_enforced(Skip::SharedHostUid),
            Some(false) => Self::Enforced(limit),
        }
    }

    /// Reads [`PIDS_LIMIT_ENV`] from this process's own environment and this process's uid map.
    pub fn from_environment() -> Self {
        let configured =
            std::env::var_os(PIDS_LIMIT_ENV).map(|value| value.to_string_lossy().into_owned());
        let uid_map = std::fs::read_to_string("/proc/self/uid_map").ok();
        Self::decide(configured.as_deref(), uid_map.as_deref())
    }

    /// The `RLIMIT_NPROC` to give a user process whose runner has the hard limit `runner_hard`.
    /// Never above `runner_hard`: setting it would fail, since an unprivileged process cannot
    /// raise its hard limit.
    pub fn for_user_process(&self, runner_hard: u64) -> Option<u64> {
        match self {
            Self::Enforced(limit) => Some((*limit).min(runner_hard)),
            Self::Unset | Self::NotEnforced { .. } => None,
        }
    }
}

impl fmt::Display for ProcessLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Enforced(limit) => write!(
                f,
                "process limit {limit} enforced on every execution (RLIMIT_NPROC in this \
                 sandbox's own user namespace)"
            ),
            Self::Unset => write!(f, "no process limit configured ({PIDS_LIMIT_ENV} is unset)"),
            Self::NotEnforced { configured, reason } => {
                write!(f, "{PIDS_LIMIT_ENV}={configured:?} is not enforced: ")?;
                match reason {
                    Skip::Invalid => write!(f, "not a number between 1 and {MAX_PIDS_LIMIT}"),
                    Skip::SharedHostUid => write!(
                        f,
                        "/proc/self/uid_map is the identity map (no user namespace), so this \
                         uid is shared with every sandbox on the node; the kubelet's \
                         podPidsLimit is the only bound"
                    ),
                    Skip::UnknownUidMap => write!(
                        f,
                        "/proc/self/uid_map is unreadable, so a user namespace cannot be shown"
                    ),
                }
            }
        }
    }
}

/// A limit between 1 and [`MAX_PIDS_LIMIT`], surrounding whitespace allowed.
pub fn parse_limit(value: &str) -> Option<u64> {
    value
        .trim()
        .parse()
        .ok()
        .filter(|limit| (1..=MAX_PIDS_LIMIT).contains(limit))
}

/// Whether a `uid_map` maps every uid onto itself, as in the initial user namespace
/// (`0 0 4294967295`). `None` if it is empty or malformed.
pub fn is_identity_map(uid_map: &str) -> Option<bool> {
    let mut ranges = Vec::new();
    for line in uid_map.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [inside, outside, count] = fields[..] else {
            return None;
        };
        ranges.push((inside, outside, count));
    }
    match ranges[..] {
        [] => None,
        [(0, 0, count)] => Some(count == u64::from(u32::MAX)),
        _ => Some(false),
    }
}

/// The hard `RLIMIT_NPROC` of this process (`RLIM_INFINITY` as `u64::MAX`).
pub fn current_hard_limit() -> u64 {
    // SAFETY: rlimit is plain data, filled in by getrlimit.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut limit) } == 0 {
        limit.rlim_max
    } else {
        libc::RLIM_INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "         0          0 4294967295\n";
    const POD: &str = "         0 1879048192      65536\n";

    #[test]
    fn the_initial_namespace_maps_every_uid_onto_itself() {
        assert_eq!(is_identity_map(HOST), Some(true));
        assert_eq!(is_identity_map("0 0 4294967295"), Some(true));
    }

    #[test]
    fn any_other_map_is_a_user_namespace() {
        for map in [
            POD,
            "0 0 65536\n",
            "1000 65534 1\n",
            "0 0 1\n1 100000 65535\n",
            "0 0 4294967295\n0 0 4294967295\n",
        ] {
            assert_eq!(is_identity_map(map), Some(false), "{map:?}");
        }
    }

    #[test]
    fn malformed_maps_prove_nothing() {
        for map in ["", "\n", "0 0", "0 0 x\n", "0 0 1 2\n", "-1 0 1\n"] {
            assert_eq!(is_identity_map(map), None, "{map:?}");
        }
    }

    #[test]
    fn limits_are_positive_and_bounded() {
        assert_eq!(parse_limit("512"), Some(512));
        assert_eq!(parse_limit(" 16\n"), Some(16));
        assert_eq!(parse_limit("4194304"), Some(MAX_PIDS_LIMIT));
        for bad in ["", "0", "-1", "4194305", "1e3", "512k", "many"] {
            assert_eq!(parse_limit(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_limit_is_enforced_only_in_a_user_namespace() {
        assert_eq!(
            ProcessLimit::decide(Some("512"), Some(POD)),
            ProcessLimit::Enforced(512)
        );
        let skipped = |reason| ProcessLimit::NotEnforced {
            configured: "512".into(),
            reason,
        };
        assert_eq!(
            ProcessLimit::decide(Some("512"), Some(HOST)),
            skipped(Skip::SharedHostUid)
        );
        assert_eq!(
            ProcessLimit::decide(Some("512"), None),
            skipped(Skip::UnknownUidMap)
        );
        assert_eq!(
            ProcessLimit::decide(Some("512"), Some("")),
            skipped(Skip::UnknownUidMap)
        );
        assert_eq!(ProcessLimit::decide(None, Some(POD)), ProcessLimit::Unset);
        assert_eq!(
            ProcessLimit::decide(Some("lots"), Some(POD)),
            ProcessLimit::NotEnforced {
                configured: "lots".into(),
                reason: Skip::Invalid
            }
        );
    }

    #[test]
    fn the_user_process_never_gets_more_than_the_runner_may_give() {
        let enforced = ProcessLimit::Enforced(512);
        assert_eq!(enforced.for_user_process(u64::MAX), Some(512));
        assert_eq!(enforced.for_user_process(96_365), Some(512));
        assert_eq!(enforced.for_user_process(100), Some(100));
        assert_eq!(ProcessLimit::Unset.for_user_process(100), None);
        let skipped = ProcessLimit::decide(Some("512"), Some(HOST));
        assert_eq!(skipped.for_user_process(u64::MAX), None);
    }

    #[test]
    fn reasons_are_spelled_out() {
        let skipped = ProcessLimit::decide(Some("512"), Some(HOST)).to_string();
        assert!(
            skipped.starts_with("KUBEXEC_PIDS_LIMIT=\"512\" is not enforced")
                && skipped.contains("podPidsLimit"),
            "{skipped}"
        );
        let enforced = ProcessLimit::decide(Some("64"), Some(POD)).to_string();
        assert!(enforced.contains("limit 64"), "{enforced}");
    }

    #[test]
    fn the_hard_limit_of_this_process_is_readable() {
        assert!(current_hard_limit() > 0);
    }
}
