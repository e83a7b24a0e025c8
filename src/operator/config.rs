//! Operator settings: command-line flags with environment fallbacks, and the sandbox defaults
//! that the pure builders read.

use std::net::SocketAddr;

use clap::Args;

use crate::crd::quantity::Quantity;

use super::{netpol::config::NetworkArgs, Error};

/// Default image of sandbox containers (Bun and a shell).
pub const DEFAULT_SANDBOX_IMAGE: &str = "localhost/kubexec-sandbox:dev";
/// Default image the runner binary is copied from.
pub const DEFAULT_RUNNER_IMAGE: &str = "localhost/kubexec-runner:dev";

/// The chart value that chooses [`RunnerDelivery`], named where a sandbox lacks its runner.
pub const RUNNER_DELIVERY_VALUE: &str = "sandbox.runnerDelivery";

/// How the runner binary reaches a sandbox Pod.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunnerDelivery {
    /// The runner image is an image volume: nothing runs before the sandbox container.
    #[default]
    #[value(name = "imageVolume")]
    ImageVolume,
    /// An init container copies the runner from its image into an emptyDir (any cluster).
    #[value(name = "initContainer")]
    InitContainer,
}

impl RunnerDelivery {
    /// The flag's (and the chart value's) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerDelivery::ImageVolume => "imageVolume",
            RunnerDelivery::InitContainer => "initContainer",
        }
    }
}

/// Default number of Executions reconciled at once (runs themselves are not limited by it).
pub const DEFAULT_EXECUTION_CONCURRENCY: u16 = 64;

/// Default of `--max-runs`.
pub const DEFAULT_MAX_RUNS: u32 = 64;
/// Default of `--max-runs-per-session`.
pub const DEFAULT_MAX_RUNS_PER_SESSION: u32 = 8;

/// Which Events the operator records about each Execution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutionEvents {
    /// Every transition: also the Normal `Started` and `Completed` of each run.
    All,
    /// Warnings only (a run that failed or could not run), and the rare Normal Events that are
    /// not about one run's routine (a Session resumed for it).
    #[default]
    Warnings,
}

/// How the Execution controller runs executions: its queue bounds and its Events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecutionSettings {
    /// Most runs in flight in this replica.
    pub max_runs: usize,
    /// Most runs in flight in one Session.
    pub max_runs_per_session: usize,
    /// Which Events are recorded.
    pub events: ExecutionEvents,
}

impl Default for ExecutionSettings {
    fn default() -> Self {
        Self {
            max_runs: DEFAULT_MAX_RUNS as usize,
            max_runs_per_session: DEFAULT_MAX_RUNS_PER_SESSION as usize,
            events: ExecutionEvents::Warnings,
        }
    }
}

/// `kubexec operator` flags.
#[derive(Args, Clone, Debug)]
pub struct OperatorArgs {
    /// Image of sandboxes whose Session sets no `spec.image`.
    #[arg(long, env = "KUBEXEC_SANDBOX_IMAGE", default_value = DEFAULT_SANDBOX_IMAGE)]
    pub sandbox_image: String,

    /// Image holding `/kubexec-runner`: mounted into every sandbox as an image volume, or
    /// copied in by an init container (see `--runner-delivery`).
    #[arg(long, env = "KUBEXEC_RUNNER_IMAGE", default_value = DEFAULT_RUNNER_IMAGE)]
    pub runner_image: String,

    /// How the runner reaches a sandbox: `imageVolume` mounts the runner image read-only
    /// (Kubernetes 1.33+ with the ImageVolume feature, containerd 2.1+), so the Pod starts
    /// without an init container; `initContainer` copies it in first, on any cluster.
    #[arg(long, env = "KUBEXEC_RUNNER_DELIVERY", value_enum, default_value_t = RunnerDelivery::ImageVolume)]
    pub runner_delivery: RunnerDelivery,

    /// CPU limit of sandboxes whose Session sets none.
    #[arg(long, env = "KUBEXEC_DEFAULT_CPU", default_value = "1")]
    pub default_cpu: String,

    /// Memory limit of sandboxes whose Session sets none.
    #[arg(long, env = "KUBEXEC_DEFAULT_MEMORY", default_value = "512Mi")]
    pub default_memory: String,

    /// Ephemeral-storage limit of sandboxes whose Session sets none.
    #[arg(long, env = "KUBEXEC_DEFAULT_STORAGE", default_value = "1Gi")]
    pub default_storage: String,

    /// Process-count limit of sandboxes whose Session sets none.
    #[arg(long, env = "KUBEXEC_DEFAULT_PIDS", default_value_t = 512)]
    pub default_pids: i64,

    /// Highest process-count limit a sandbox gets, whatever its Session asks for. Set it a
    /// little below the kubelet's `podPidsLimit` (say 64 less): a session at its own limit then
    /// leaves room in the Pod for the runner to start executions and to stop runaway ones.
    #[arg(long, env = "KUBEXEC_MAX_PIDS", default_value_t = 32768)]
    pub max_pids: i64,

    /// Runs every sandbox in a user namespace of its own (`hostUsers: false`), so that its uid
    /// 1000 is a host uid no other Pod uses. The process limit holds only then. Needs a
    /// cluster that supports it (Kubernetes 1.33+, a runtime with idmapped mounts such as
    /// containerd 2.0+ with runc 1.2+); elsewhere sandbox Pods fail to start, so it is off by
    /// default.
    #[arg(long, env = "KUBEXEC_USER_NAMESPACES", default_value_t = false, action = clap::ArgAction::Set)]
    pub user_namespaces: bool,

    /// Requests are the limits times this ratio (0 < ratio <= 1). 1 gives Guaranteed QoS; the
    /// default 0.1 lets many mostly idle sandboxes share a node.
    #[arg(long, env = "KUBEXEC_REQUEST_RATIO", default_value_t = 0.1)]
    pub request_ratio: f64,

    /// CPU request of a sleeping sandbox (`spec.sleepAfterSeconds`), set by an in-place resize
    /// of its Pod; never more than its awake request. Limits do not change.
    #[arg(long, env = "KUBEXEC_SLEEP_CPU", default_value = "10m")]
    pub sleep_cpu: String,

    /// Memory request of a sleeping sandbox; never more than its awake request. A sleeping
    /// sandbox using more than this is among the first the kubelet evicts under memory
    /// pressure.
    #[arg(long, env = "KUBEXEC_SLEEP_MEMORY", default_value = "16Mi")]
    pub sleep_memory: String,

    /// Address of the `/metrics` and `/healthz` endpoint. Use 0.0.0.0:9464 inside a cluster.
    #[arg(long, env = "KUBEXEC_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,

    /// Most Sessions reconciled at once.
    #[arg(long, env = "KUBEXEC_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Most Executions reconciled at once. Runs happen in their own tasks and are not limited
    /// by this.
    #[arg(long, env = "KUBEXEC_EXECUTION_CONCURRENCY", default_value_t = DEFAULT_EXECUTION_CONCURRENCY)]
    pub execution_concurrency: u16,

    /// Most execution runs in flight at once in this replica; more wait in a queue (first come,
    /// first served) and start as runs finish. Bounds the exec streams, memory and CPU one
    /// replica spends, so that overload raises latency instead of exhausting the operator.
    #[arg(long, env = "KUBEXEC_MAX_RUNS", default_value_t = DEFAULT_MAX_RUNS, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_runs: u32,

    /// Most execution runs in flight at once in one Session (per replica); more wait queued.
    #[arg(long, env = "KUBEXEC_MAX_RUNS_PER_SESSION", default_value_t = DEFAULT_MAX_RUNS_PER_SESSION, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_runs_per_session: u32,

    /// Which Kubernetes Events the operator records about each Execution: `warnings` (failures
    /// only) or `all` (also the Normal `Started` and `Completed` of every run, two writes more
    /// per execution).
    #[arg(long, env = "KUBEXEC_EXECUTION_EVENTS", value_enum, default_value_t = ExecutionEvents::Warnings)]
    pub execution_events: ExecutionEvents,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "KUBEXEC_NAMESPACE")]
    pub namespace: Option<String>,

    /// Act only while holding a Lease, so that several replicas can run and one acts.
    #[arg(long, env = "KUBEXEC_LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "KUBEXEC_LEASE_NAME", default_value = "kubexec-operator")]
    pub lease_name: String,

    /// Namespace of the leader-election Lease (in a cluster: the operator's own namespace).
    #[arg(
        long,
        env = "KUBEXEC_LEASE_NAMESPACE",
        default_value = "kubexec-system"
    )]
    pub lease_namespace: String,

    /// This replica's identity in the Lease (in a cluster: the Pod name). Default: host name
    /// and process id.
    #[arg(long, env = "KUBEXEC_POD_NAME")]
    pub identity: Option<String>,

    /// Seconds a Lease stays valid without renewal; a standby replica takes over after it.
    #[arg(long, env = "KUBEXEC_LEASE_DURATION", default_value_t = 15)]
    pub lease_duration_seconds: u64,

    /// The ClusterRole bound in each namespace that runs sandboxes (the chart's
    /// `<release>-operator-sandboxes`). Named in the status of a Session whose namespace is not
    /// enabled, with the command that enables it.
    #[arg(
        long,
        env = "KUBEXEC_SANDBOX_ROLE",
        default_value = crate::layout::OPERATOR_SANDBOX_ROLE
    )]
    pub sandbox_role: String,

    /// This operator's ServiceAccount, in `--lease-namespace`. Named in that command too.
    #[arg(
        long,
        env = "KUBEXEC_SERVICE_ACCOUNT",
        default_value = "kubexec-operator"
    )]
    pub service_account: String,

    /// How runs reach the runner: `channel` sends them over one long-lived
    /// `kubexec-runner serve` exec per sandbox; `exec` opens one exec per run (the design before
    /// channels, kept to compare the two).
    #[arg(long, env = "KUBEXEC_EXEC_TRANSPORT", value_enum, default_value_t = ExecTransport::Channel)]
    pub exec_transport: ExecTransport,

    /// Seconds a runner channel without requests stays open.
    #[arg(long, env = "KUBEXEC_CHANNEL_IDLE_SECONDS", default_value_t = 120)]
    pub channel_idle_seconds: u64,

    /// The sandboxes' NetworkPolicies (boxed: many strings, read once).
    #[command(flatten)]
    pub network: Box<NetworkArgs>,
}

/// How the operator sends runs to the runner (`--exec-transport`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecTransport {
    /// Many runs over one `kubexec-runner serve` exec per sandbox.
    Channel,
    /// One `kubexec-runner exec` per run.
    Exec,
}

impl OperatorArgs {
    /// The runner channels' settings; `None` with `--exec-transport exec`.
    pub fn channel_config(&self) -> Option<crate::sandbox::PoolConfig> {
        (self.exec_transport == ExecTransport::Channel).then(|| crate::sandbox::PoolConfig {
            idle: std::time::Duration::from_secs(self.channel_idle_seconds.max(1)),
            ..crate::sandbox::PoolConfig::default()
        })
    }

    /// Checks the flags and resolves the sandbox defaults.
    pub fn sandbox_config(&self) -> Result<SandboxConfig, Error> {
        let quantity = |flag: &'static str, value: &str| {
            Quantity::parse(value)
                .ok()
                .filter(|q| !q.is_zero())
                .map(|_| value.to_string())
                .ok_or_else(|| {
                    Error::Config(format!("--{flag} {value:?} is not a positive quantity"))
                })
        };
        if !(self.request_ratio > 0.0 && self.request_ratio <= 1.0) {
            return Err(Error::Config(format!(
                "--request-ratio {} must be in (0, 1]",
                self.request_ratio
            )));
        }
        for (flag, pids) in [
            ("default-pids", self.default_pids),
            ("max-pids", self.max_pids),
        ] {
            if !(16..=32768).contains(&pids) {
                return Err(Error::Config(format!(
                    "--{flag} must be between 16 and 32768"
                )));
            }
        }
        Ok(SandboxConfig {
            sandbox_image: self.sandbox_image.clone(),
            runner_image: self.runner_image.clone(),
            runner_delivery: self.runner_delivery,
            default_cpu: quantity("default-cpu", &self.default_cpu)?,
            default_memory: quantity("default-memory", &self.default_memory)?,
            default_storage: quantity("default-storage", &self.default_storage)?,
            default_pids: self.default_pids,
            max_pids: self.max_pids,
            request_ratio: self.request_ratio,
            sleep_cpu: quantity("sleep-cpu", &self.sleep_cpu)?,
            sleep_memory: quantity("sleep-memory", &self.sleep_memory)?,
            user_namespaces: self.user_namespaces,
            enablement: Enablement {
                role: self.sandbox_role.clone(),
                service_account: format!("{}:{}", self.lease_namespace, self.service_account),
            },
        })
    }
}

/// How a namespace is enabled for sandboxes: a RoleBinding of the operator's namespaced role
/// to its ServiceAccount there (docs/security.md, "Sandbox namespaces").
#[derive(Clone, Debug, PartialEq)]
pub struct Enablement {
    /// The ClusterRole to bind.
    pub role: String,
    /// The operator's ServiceAccount as `namespace:name`.
    pub service_account: String,
}

impl Enablement {
    /// The `kubectl` command that enables `namespace`.
    pub fn command(&self, namespace: &str) -> String {
        format!(
            "kubectl create rolebinding kubexec-operator -n {namespace} --clusterrole={} --serviceaccount={}",
            self.role, self.service_account
        )
    }
}

impl Default for Enablement {
    fn default() -> Self {
        Self {
            role: crate::layout::OPERATOR_SANDBOX_ROLE.into(),
            service_account: format!("kubexec-system:{}", crate::layout::OPERATOR_SERVICE_ACCOUNT),
        }
    }
}

/// What the Pod builder needs to know beyond the Session itself.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxConfig {
    /// Image for Sessions without `spec.image`.
    pub sandbox_image: String,
    /// Image holding the runner binary.
    pub runner_image: String,
    /// How the runner reaches the sandbox.
    pub runner_delivery: RunnerDelivery,
    /// Default CPU limit (a valid quantity).
    pub default_cpu: String,
    /// Default memory limit (a valid quantity).
    pub default_memory: String,
    /// Default ephemeral-storage limit (a valid quantity).
    pub default_storage: String,
    /// Default process-count limit.
    pub default_pids: i64,
    /// No sandbox gets a higher process-count limit.
    pub max_pids: i64,
    /// Requests = limits × this.
    pub request_ratio: f64,
    /// CPU request of a sleeping sandbox (a valid quantity).
    pub sleep_cpu: String,
    /// Memory request of a sleeping sandbox (a valid quantity).
    pub sleep_memory: String,
    /// Sandbox Pods get `hostUsers: false`.
    pub user_namespaces: bool,
    /// How a namespace is enabled for sandboxes, for the status of one that is not.
    pub enablement: Enablement,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            sandbox_image: DEFAULT_SANDBOX_IMAGE.into(),
            runner_image: DEFAULT_RUNNER_IMAGE.into(),
            runner_delivery: RunnerDelivery::ImageVolume,
            default_cpu: "1".into(),
            default_memory: "512Mi".into(),
            default_storage: "1Gi".into(),
            default_pids: 512,
            max_pids: 32768,
            request_ratio: 0.1,
            sleep_cpu: "10m".into(),
            sleep_memory: "16Mi".into(),
            user_namespaces: false,
            enablement: Enablement::default(),
        }
    }
}

impl OperatorArgs {
    /// How executions are run (queue bounds, Events).
    pub fn execution_settings(&self) -> ExecutionSettings {
        ExecutionSettings {
            max_runs: self.max_runs as usize,
            max_runs_per_session: self.max_runs_per_session as usize,
            events: self.execution_events,
        }
    }

    /// The leader-election settings, when leader election is on.
    pub fn leader_config(&self) -> Option<super::leader::LeaderConfig> {
        if !self.leader_election {
            return None;
        }
        let identity = self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        let duration = std::time::Duration::from_secs(self.lease_duration_seconds.max(3));
        Some(super::leader::LeaderConfig {
            lease_name: self.lease_name.clone(),
            namespace: self.lease_namespace.clone(),
            identity,
            lease_duration: duration,
            renew_every: duration / 3,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        operator: OperatorArgs,
    }

    fn config(flags: &[&str]) -> Result<SandboxConfig, Error> {
        let args = std::iter::once("operator").chain(flags.iter().copied());
        Flags::try_parse_from(args)
            .expect("flags parse")
            .operator
            .sandbox_config()
    }

    #[test]
    fn user_namespaces_are_off_unless_asked_for() {
        let defaults = config(&[]).expect("valid");
        assert!(!defaults.user_namespaces);
        assert_eq!(defaults.max_pids, 32768, "the CRD's maximum: no cap");
        assert!(
            config(&["--user-namespaces", "true"])
                .expect("valid")
                .user_namespaces
        );
        assert!(
            !config(&["--user-namespaces", "false"])
                .expect("valid")
                .user_namespaces
        );
    }

    #[test]
    fn execution_settings_default_to_bounded_queues_and_warnings_only() {
        let parse = |flags: &[&str]| {
            let args = std::iter::once("operator").chain(flags.iter().copied());
            Flags::try_parse_from(args).map(|f| f.operator.execution_settings())
        };
        assert_eq!(parse(&[]).expect("valid"), ExecutionSettings::default());
        let all = parse(&["--execution-events", "all", "--max-runs", "5"]).expect("valid");
        assert_eq!(all.events, ExecutionEvents::All);
        assert_eq!(all.max_runs, 5);
        assert!(parse(&["--max-runs", "0"]).is_err());
        assert!(parse(&["--execution-events", "none"]).is_err());
    }

    #[test]
    fn runs_go_over_channels_unless_asked_otherwise() {
        let parse = |flags: &[&str]| {
            Flags::try_parse_from(std::iter::once("operator").chain(flags.iter().copied()))
                .expect("flags parse")
                .operator
        };
        let defaults = parse(&[]);
        assert_eq!(defaults.exec_transport, ExecTransport::Channel);
        assert_eq!(
            defaults.channel_config().map(|c| c.idle.as_secs()),
            Some(120)
        );
        let short = parse(&["--channel-idle-seconds", "3"]);
        assert_eq!(short.channel_config().map(|c| c.idle.as_secs()), Some(3));
        assert!(parse(&["--exec-transport", "exec"])
            .channel_config()
            .is_none());
        assert!(Flags::try_parse_from(["operator", "--exec-transport", "carrier-pigeon"]).is_err());
    }

    #[test]
    fn the_runner_comes_as_an_image_volume_unless_told() {
        assert_eq!(
            config(&[]).expect("valid").runner_delivery,
            RunnerDelivery::ImageVolume
        );
        assert_eq!(
            config(&["--runner-delivery", "initContainer"])
                .expect("valid")
                .runner_delivery,
            RunnerDelivery::InitContainer
        );
        let args = ["operator", "--runner-delivery", "copy"];
        assert!(Flags::try_parse_from(args).is_err());
    }

    #[test]
    fn the_process_limit_cap_is_checked() {
        assert_eq!(
            config(&["--max-pids", "4032"]).expect("valid").max_pids,
            4032
        );
        for bad in ["8", "40000"] {
            assert!(config(&["--max-pids", bad]).is_err(), "{bad}");
        }
    }
}
