//! `kubexec api` and `kubexec keys` flags, and the tenant → namespace mapping.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Subcommand};

use super::tiers::Tier;

/// Default prefix of tenant namespaces.
pub const DEFAULT_NAMESPACE_PREFIX: &str = "kubexec-";
/// Default `ttlSecondsAfterFinished` of the Executions the api creates: long enough to read a
/// result back (`GET /executions/{id}`), short enough that a flood of requests does not pile
/// up finished objects in etcd. The run's output stays in the workspace's run directory.
pub const DEFAULT_EXECUTION_TTL: i32 = 300;
/// Default `--result-retention`: a day.
pub const DEFAULT_RESULT_RETENTION: u64 = 24 * 3600;
/// Default `--run-gc-interval`.
pub const DEFAULT_RUN_GC_INTERVAL: u64 = 60;
/// Default namespace of the key Secrets.
pub const DEFAULT_KEYS_NAMESPACE: &str = "kubexec-system";

/// Flags shared by `kubexec api` and `kubexec keys`: where keys live and how a tenant maps to
/// its namespace.
#[derive(Args, Clone, Debug)]
pub struct TenancyArgs {
    /// Namespace holding one Secret per API key (SHA-256 only).
    #[arg(long, env = "KUBEXEC_KEYS_NAMESPACE", default_value = DEFAULT_KEYS_NAMESPACE, global = true)]
    pub keys_namespace: String,

    /// A tenant's sessions live in the namespace `<prefix><tenant>`. An empty prefix makes the
    /// tenant name the namespace name.
    #[arg(long, env = "KUBEXEC_NAMESPACE_PREFIX", default_value = DEFAULT_NAMESPACE_PREFIX, global = true)]
    pub namespace_prefix: String,
}

impl TenancyArgs {
    /// The namespace of a tenant.
    pub fn namespace_of(&self, tenant: &str) -> String {
        format!("{}{tenant}", self.namespace_prefix)
    }

    /// Checks a tenant name: its namespace must be a valid DNS label.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), InvalidTenant> {
        let namespace = self.namespace_of(tenant);
        if tenant.is_empty() || !is_dns_label(&namespace) || !is_dns_label(tenant) {
            return Err(InvalidTenant {
                tenant: tenant.to_string(),
                namespace,
            });
        }
        Ok(())
    }

    /// Refuses tenants whose namespace is one kubexec or Kubernetes keeps for itself: the keys
    /// namespace (the install namespace in the chart), `kubexec-system`, `default` and `kube-*`.
    /// Existing namespaces that kubexec did not make are refused by `keys create`, which can
    /// look them up.
    pub fn check_not_reserved(&self, tenant: &str) -> Result<(), ReservedTenant> {
        let namespace = self.namespace_of(tenant);
        let why = if namespace == self.keys_namespace {
            Some("the namespace of the API keys")
        } else if namespace == DEFAULT_KEYS_NAMESPACE {
            Some("kubexec's install namespace")
        } else if namespace == "default" {
            Some("the default namespace")
        } else if namespace.starts_with("kube-") {
            Some("a Kubernetes system namespace")
        } else {
            None
        };
        match why {
            Some(why) => Err(ReservedTenant {
                tenant: tenant.to_string(),
                namespace,
                why,
            }),
            None => Ok(()),
        }
    }
}

/// Why a tenant name is refused although it is a valid namespace name.
#[derive(Debug, thiserror::Error)]
#[error("tenant {tenant:?}: its namespace {namespace:?} is reserved ({why}); choose another tenant name")]
pub struct ReservedTenant {
    /// The tenant name.
    pub tenant: String,
    /// Its namespace.
    pub namespace: String,
    /// What the namespace is.
    pub why: &'static str,
}

/// A tenant name that cannot name a namespace.
#[derive(Debug, thiserror::Error)]
#[error("tenant {tenant:?}: the tenant and its namespace {namespace:?} must be lowercase letters, digits and '-', at most 63 characters")]
pub struct InvalidTenant {
    /// The tenant name.
    pub tenant: String,
    /// Its namespace.
    pub namespace: String,
}

/// True for a valid Kubernetes DNS label (namespace and Session names).
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// `kubexec api` flags.
#[derive(Args, Clone, Debug)]
pub struct ApiArgs {
    /// Address to serve the REST API on. Use 0.0.0.0:8080 inside a cluster.
    #[arg(long, env = "KUBEXEC_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// YAML file overriding tier limits (see docs/api.md).
    #[arg(long, env = "KUBEXEC_TIERS_FILE")]
    pub tiers_file: Option<PathBuf>,

    /// Seconds an execute or file request waits for its session to become ready.
    #[arg(long, env = "KUBEXEC_SESSION_READY_TIMEOUT", default_value_t = 60)]
    pub session_ready_timeout: u64,

    /// Base URL clients reach this api at. Accepted for existing installs; `previewUrl` no
    /// longer uses it, since previews have origins of their own (`--preview-url`).
    #[arg(long, env = "KUBEXEC_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Seconds a finished Execution created by the api is kept (`ttlSecondsAfterFinished`).
    #[arg(long, env = "KUBEXEC_EXECUTION_TTL", default_value_t = DEFAULT_EXECUTION_TTL)]
    pub execution_ttl: i32,

    /// Upper bound of any non-streaming request, in seconds.
    #[arg(long, env = "KUBEXEC_REQUEST_TIMEOUT", default_value_t = 420)]
    pub request_timeout: u64,

    /// Seconds a finished execution's result can be looked up (`GET /executions/{id}`) and its
    /// `Idempotency-Key` is remembered; later, 410 `EXECUTION_EXPIRED`. Needs the cluster's
    /// result secret (`KUBEXEC_RESULT_SECRET`) beyond the Execution's own TTL.
    #[arg(long, env = "KUBEXEC_RESULT_RETENTION", default_value_t = DEFAULT_RESULT_RETENTION)]
    pub result_retention: u64,

    /// Answer an execute from the run's result as the runner reports it on the api's own
    /// channel, when its seal verifies under the derived key (needs the cluster's result
    /// secret), instead of waiting for the operator to store it in the status; the status
    /// still answers whenever it comes first. `false`: always the status (for comparison).
    #[arg(long, env = "KUBEXEC_ANSWER_FROM_RUNNER", default_value_t = true, action = clap::ArgAction::Set)]
    pub answer_from_runner: bool,

    /// Least seconds between two collections of one session's run directories (run after an
    /// execute; 0: after every one).
    #[arg(long, env = "KUBEXEC_RUN_GC_INTERVAL", default_value_t = DEFAULT_RUN_GC_INTERVAL)]
    pub run_gc_interval: u64,

    /// PEM certificate chain to serve HTTPS with (with `--tls-key`). Without both: plain HTTP,
    /// for a cluster whose ingress or mesh terminates TLS.
    #[arg(long, env = "KUBEXEC_API_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "KUBEXEC_API_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Seconds the API-key watch may stay broken before `/readyz` fails and every request is
    /// refused with 503 `KEYS_STALE` (a replica must not keep accepting a key revoked
    /// meanwhile).
    #[arg(long, env = "KUBEXEC_KEYS_STALE_AFTER", default_value_t = super::keys::STALE_AFTER.as_secs())]
    pub keys_stale_after: u64,

    /// Where keys live and how tenants map to namespaces.
    #[command(flatten)]
    pub tenancy: TenancyArgs,

    /// Previews: their listener, origins, ports, link lifetime and signing secret.
    #[command(flatten)]
    pub preview: PreviewArgs,
}

/// `kubexec api` preview flags.
#[derive(Args, Clone, Debug)]
pub struct PreviewArgs {
    /// Address to serve previews on (every `<session>-<port>.<domain>` origin; routed by the
    /// Host header). Use 0.0.0.0:8081 inside a cluster.
    #[arg(long, env = "KUBEXEC_PREVIEW_LISTEN", default_value = "127.0.0.1:8081")]
    pub preview_listen: SocketAddr,

    /// Public base of preview origins, e.g. `https://preview.example.com` (a wildcard DNS name
    /// and certificate for `*.preview.example.com`): a preview is
    /// `https://<session>-<port>.preview.example.com/`. Default: `http://preview.localhost:<the
    /// preview listener's port>` (Chromium resolves `*.localhost` to loopback).
    #[arg(long, env = "KUBEXEC_PREVIEW_URL")]
    pub preview_url: Option<String>,

    /// Sandbox ports that may be previewed: `8080` or a range `8000-8999` (the chart passes
    /// `sandbox.network.previewPorts`, which the sandboxes' ingress policy admits).
    #[arg(long, env = "KUBEXEC_PREVIEW_PORTS", default_value = "8080")]
    pub preview_ports: String,

    /// Seconds a preview link works (also the most a caller may ask for).
    #[arg(long, env = "KUBEXEC_PREVIEW_TOKEN_TTL", default_value_t = 3600)]
    pub preview_token_ttl: u64,

    /// File holding the secret (at least 32 bytes) preview tokens are signed with; every
    /// replica of the api must share it (the chart keeps it in a Secret). Default: a random
    /// secret per process, so links work only on the replica that made them.
    #[arg(long, env = "KUBEXEC_PREVIEW_SECRET_FILE")]
    pub preview_secret_file: Option<PathBuf>,
}

impl ApiArgs {
    /// `--session-ready-timeout` as a duration.
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.session_ready_timeout)
    }

    /// `--public-url` without a trailing slash.
    pub fn public_url(&self) -> Option<String> {
        self.public_url
            .as_deref()
            .map(|url| url.trim_end_matches('/').to_string())
            .filter(|url| !url.is_empty())
    }
}

/// `kubexec keys` flags.
#[derive(Args, Clone, Debug)]
pub struct KeysArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,

    /// Where keys live and how tenants map to namespaces.
    #[command(flatten)]
    pub tenancy: TenancyArgs,
}

/// `kubexec keys` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum KeysCommand {
    /// Creates a key (and the tenant's namespace if missing) and prints it once.
    Create {
        /// The tenant the key belongs to.
        #[arg(long)]
        tenant: String,
        /// free, paid or enterprise.
        #[arg(long, default_value = "free")]
        tier: Tier,
        /// YAML file overriding tier limits, as the api's: a new tenant namespace's quota and
        /// limits come from its tier.
        #[arg(long, env = "KUBEXEC_TIERS_FILE")]
        tiers_file: Option<PathBuf>,
        /// The api's ServiceAccount, in the keys namespace: bound to `--api-role` in the tenant
        /// namespace, the only place the api may write.
        #[arg(
            long,
            env = "KUBEXEC_API_SERVICE_ACCOUNT",
            default_value = "kubexec-api"
        )]
        api_service_account: String,
        /// The ClusterRole of the api's work in a tenant namespace (the chart's
        /// `<release>-api-tenant`).
        #[arg(long, env = "KUBEXEC_API_ROLE", default_value = "kubexec-api-tenant")]
        api_role: String,
        /// The operator's ServiceAccount, in the keys namespace: bound to `--operator-role` in
        /// the tenant namespace, so that it may run sandboxes there (and only where it is bound).
        #[arg(
            long,
            env = "KUBEXEC_OPERATOR_SERVICE_ACCOUNT",
            default_value = crate::layout::OPERATOR_SERVICE_ACCOUNT
        )]
        operator_service_account: String,
        /// The ClusterRole of the operator's work in a sandbox namespace (the chart's
        /// `<release>-operator-sandboxes`).
        #[arg(
            long,
            env = "KUBEXEC_OPERATOR_ROLE",
            default_value = crate::layout::OPERATOR_SANDBOX_ROLE
        )]
        operator_role: String,
    },
    /// Lists keys (ids, tenants and tiers; never the keys themselves).
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revokes a key by id.
    Revoke {
        /// The key id shown by `create` and `list`.
        id: String,
    },
}

impl clap::ValueEnum for Tier {
    fn value_variants<'a>() -> &'a [Self] {
        &Tier::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_map_to_namespaces() {
        let tenancy = TenancyArgs {
            keys_namespace: DEFAULT_KEYS_NAMESPACE.into(),
            namespace_prefix: DEFAULT_NAMESPACE_PREFIX.into(),
        };
        assert_eq!(tenancy.namespace_of("acme"), "kubexec-acme");
        assert!(tenancy.check_tenant("acme").is_ok());
        assert!(tenancy.check_tenant("Acme").is_err());
        assert!(tenancy.check_tenant("").is_err());
        assert!(tenancy.check_tenant(&"a".repeat(60)).is_err());
        assert!(is_dns_label("ses-abc1"));
        assert!(!is_dns_label("-x") && !is_dns_label("a/b") && !is_dns_label("a.b"));
    }

    #[test]
    fn reserved_tenants_are_refused() {
        let tenancy = TenancyArgs {
            keys_namespace: DEFAULT_KEYS_NAMESPACE.into(),
            namespace_prefix: DEFAULT_NAMESPACE_PREFIX.into(),
        };
        let refused = |tenancy: &TenancyArgs, tenant: &str| {
            tenancy
                .check_not_reserved(tenant)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(
            refused(&tenancy, "system").as_deref(),
            Some("tenant \"system\": its namespace \"kubexec-system\" is reserved (the namespace of the API keys); choose another tenant name")
        );
        assert_eq!(refused(&tenancy, "acme"), None);
        assert_eq!(
            refused(&tenancy, "kube-system"),
            None,
            "kubexec-kube-system is fine"
        );
        let bare = TenancyArgs {
            keys_namespace: "keys".into(),
            namespace_prefix: String::new(),
        };
        for (tenant, why) in [
            ("keys", "the namespace of the API keys"),
            ("kubexec-system", "kubexec's install namespace"),
            ("default", "the default namespace"),
            ("kube-system", "a Kubernetes system namespace"),
            ("kube-public", "a Kubernetes system namespace"),
            ("kube-node-lease", "a Kubernetes system namespace"),
        ] {
            let message = refused(&bare, tenant).unwrap_or_default();
            assert!(message.contains(why), "{tenant}: {message}");
        }
        assert_eq!(refused(&bare, "acme"), None);
    }
}
