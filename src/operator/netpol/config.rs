//! The network settings the NetworkPolicies are built from: flags with environment fallbacks,
//! checked once at start-up so that the apiserver never rejects a policy the operator builds.
//!
//! Addresses are IPv4 CIDRs in canonical form (`10.0.0.0/8`, not `10.0.0.1/8`); a bare
//! address means a `/32`. Lists are separated by commas or spaces, and an empty value is an
//! empty list.

use std::{collections::BTreeMap, net::Ipv4Addr, str::FromStr};

use clap::Args;
use ipnet::Ipv4Net;

use crate::operator::Error;

/// Ranges sandboxes with egress `Allow` never reach unless told otherwise: RFC 1918,
/// shared address space (RFC 6598) and link-local (cloud metadata). Documentation ranges such
/// as 192.0.2.0/24 are deliberately not here: real registries can resolve into them.
pub const DEFAULT_BLOCKED_CIDRS: &str =
    "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,169.254.0.0/16";

/// Labels of the kubexec api's Pods, which alone may reach a sandbox.
pub const DEFAULT_API_POD_SELECTOR: &str =
    "app.kubernetes.io/name=kubexec,app.kubernetes.io/component=api";

/// The keyword in `--dns-resolvers` that stands for the nameservers of the operator's own
/// `/etc/resolv.conf`.
pub const AUTO: &str = "auto";

/// The range sandboxes with egress `Allow` may reach, minus the blocked ranges.
pub const ANYWHERE: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0);

/// `kubexec operator` flags of the NetworkPolicies it keeps in every namespace that holds
/// Sessions.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Network policies")]
pub struct NetworkArgs {
    /// Keep the sandboxes' NetworkPolicies (ingress only from the api, egress per Session).
    /// Off: no policies are written, and sandboxes are isolated only if something else does it.
    #[arg(long, env = "KUBEXEC_NETWORK_POLICIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub network_policies: bool,

    /// Namespace of the kubexec api's Pods (in a cluster: the release namespace).
    #[arg(long, env = "KUBEXEC_API_NAMESPACE", default_value = "kubexec-system")]
    pub api_namespace: String,

    /// Labels of the kubexec api's Pods, `key=value` pairs. Only these Pods reach a sandbox.
    #[arg(long, env = "KUBEXEC_API_POD_SELECTOR", default_value = DEFAULT_API_POD_SELECTOR)]
    pub api_pod_selector: String,

    /// TCP ports the api may reach sandboxes on: `8080` or a range `8080-8090`. It must hold
    /// the preview port.
    #[arg(long, env = "KUBEXEC_PREVIEW_PORTS", default_value = "8080")]
    pub preview_ports: String,

    /// DNS servers sandboxes use (UDP and TCP 53), as CIDRs. `auto`: the nameservers of the
    /// operator's own /etc/resolv.conf, which a sandbox on the same kind of node shares.
    #[arg(long, env = "KUBEXEC_DNS_RESOLVERS", default_value = AUTO)]
    pub dns_resolvers: String,

    /// Namespace of the cluster DNS Pods.
    #[arg(long, env = "KUBEXEC_DNS_NAMESPACE", default_value = "kube-system")]
    pub dns_namespace: String,

    /// Labels of the cluster DNS Pods, which sandboxes may query on port 53 (the DNS Service's
    /// address is translated to theirs before policies apply). Empty: no such rule.
    #[arg(
        long,
        env = "KUBEXEC_DNS_POD_SELECTOR",
        default_value = "k8s-app=kube-dns"
    )]
    pub dns_pod_selector: String,

    /// Ranges sandboxes never reach, as CIDRs.
    #[arg(long, env = "KUBEXEC_BLOCKED_CIDRS", default_value = DEFAULT_BLOCKED_CIDRS)]
    pub blocked_cidrs: String,

    /// The cluster's Pod ranges, blocked like `--blocked-cidrs`.
    #[arg(long, env = "KUBEXEC_POD_CIDRS", default_value = "")]
    pub pod_cidrs: String,

    /// The cluster's Service ranges, blocked like `--blocked-cidrs`.
    #[arg(long, env = "KUBEXEC_SERVICE_CIDRS", default_value = "")]
    pub service_cidrs: String,

    /// The nodes' addresses (usually `/32`s), blocked like `--blocked-cidrs`. List any that
    /// the other ranges do not cover.
    #[arg(long, env = "KUBEXEC_NODE_CIDRS", default_value = "")]
    pub node_cidrs: String,
}

/// Pods chosen by labels in one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPeer {
    /// Their namespace.
    pub namespace: String,
    /// Labels they all carry (never empty).
    pub labels: BTreeMap<String, String>,
}

pub use crate::shared::ports::PortRange;

/// The checked network settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The api's Pods: the only ones that reach a sandbox.
    pub api: PodPeer,
    /// The ports they reach it on.
    pub preview_ports: PortRange,
    /// DNS servers sandboxes with egress `Allow` may query.
    pub dns_resolvers: Vec<Ipv4Net>,
    /// The cluster DNS Pods, when there is a rule for them.
    pub dns_pods: Option<PodPeer>,
    /// Everything sandboxes with egress `Allow` never reach: the blocked, Pod, Service and
    /// node ranges, in that order, without repeats. Each lies strictly inside [`ANYWHERE`].
    pub blocked: Vec<Ipv4Net>,
}

impl NetworkArgs {
    /// Checks the flags. `None` when the policies are off. `resolv_conf` reads the operator's
    /// own /etc/resolv.conf, and is only called for `auto`.
    pub fn network_config(
        &self,
        resolv_conf: impl FnOnce() -> std::io::Result<String>,
    ) -> Result<Option<NetworkConfig>, Error> {
        if !self.network_policies {
            return Ok(None);
        }
        let api_labels = labels("api-pod-selector", &self.api_pod_selector)?;
        if api_labels.is_empty() {
            return Err(Error::Config(
                "--api-pod-selector is empty, which would admit every Pod of the api's namespace"
                    .into(),
            ));
        }
        let dns_labels = labels("dns-pod-selector", &self.dns_pod_selector)?;
        let mut blocked = Vec::new();
        for (flag, text) in [
            ("blocked-cidrs", &self.blocked_cidrs),
            ("pod-cidrs", &self.pod_cidrs),
            ("service-cidrs", &self.service_cidrs),
            ("node-cidrs", &self.node_cidrs),
        ] {
            for net in cidrs(flag, text)? {
                if !is_strictly_inside(net, ANYWHERE) {
                    return Err(Error::Config(format!(
                        "--{flag} {net} is not strictly inside {ANYWHERE}, the range it is cut \
                         out of; the apiserver would reject the policy"
                    )));
                }
                if !blocked.contains(&net) {
                    blocked.push(net);
                }
            }
        }
        Ok(Some(NetworkConfig {
            api: PodPeer {
                namespace: namespace("api-namespace", &self.api_namespace)?,
                labels: api_labels,
            },
            preview_ports: preview_ports(&self.preview_ports)?,
            dns_resolvers: resolvers(&self.dns_resolvers, resolv_conf)?,
            dns_pods: if dns_labels.is_empty() {
                None
            } else {
                Some(PodPeer {
                    namespace: namespace("dns-namespace", &self.dns_namespace)?,
                    labels: dns_labels,
                })
            },
            blocked,
        }))
    }
}

/// True when `inner` lies inside `outer` and is smaller: what the apiserver asks of every
/// `except` entry of an `ipBlock`.
pub fn is_strictly_inside(inner: Ipv4Net, outer: Ipv4Net) -> bool {
    outer.contains(&inner) && inner.prefix_len() > outer.prefix_len()
}

fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
}

/// Parses one CIDR in canonical form (or a bare address, as a /32).
pub fn cidr(flag: &str, text: &str) -> Result<Ipv4Net, Error> {
    let bad = |why: &str| Error::Config(format!("--{flag} {text:?}: {why}"));
    if text.contains(':') {
        return Err(bad(
            "IPv6 is not supported; sandboxes get no IPv6 egress at all",
        ));
    }
    let net = match Ipv4Addr::from_str(text) {
        Ok(address) => Ipv4Net::from(address),
        Err(_) => Ipv4Net::from_str(text)
            .map_err(|_| bad("not an IPv4 address or CIDR such as 10.0.0.0/8"))?,
    };
    if net.trunc() != net {
        return Err(bad(&format!(
            "has bits set beyond the prefix length; write {} for the range, or {}/32 for the \
             one address",
            net.trunc(),
            net.addr()
        )));
    }
    Ok(net)
}

/// Parses a list of CIDRs.
pub fn cidrs(flag: &str, text: &str) -> Result<Vec<Ipv4Net>, Error> {
    items(text).map(|item| cidr(flag, item)).collect()
}

/// `--dns-resolvers`, with `auto` replaced by the nameservers of `resolv_conf`.
fn resolvers(
    text: &str,
    resolv_conf: impl FnOnce() -> std::io::Result<String>,
) -> Result<Vec<Ipv4Net>, Error> {
    let mut found = Vec::new();
    let mut resolv_conf = Some(resolv_conf);
    for item in items(text) {
        let nets = if item == AUTO {
            let Some(read) = resolv_conf.take() else {
                continue;
            };
            let content = read().map_err(|e| {
                Error::Config(format!(
                    "--dns-resolvers auto: reading /etc/resolv.conf: {e}"
                ))
            })?;
            nameservers(&content)
        } else {
            vec![cidr("dns-resolvers", item)?]
        };
        for net in nets {
            if !found.contains(&net) {
                found.push(net);
            }
        }
    }
    Ok(found)
}

/// The IPv4 nameservers of a resolv.conf, as /32s. Loopback ones are left out: inside a
/// sandbox they would be the sandbox itself.
pub fn nameservers(resolv_conf: &str) -> Vec<Ipv4Net> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|address| Ipv4Addr::from_str(address).ok())
        .filter(|address| !address.is_loopback())
        .map(Ipv4Net::from)
        .collect()
}

/// Parses `key=value` pairs.
fn labels(flag: &str, text: &str) -> Result<BTreeMap<String, String>, Error> {
    items(text)
        .map(|item| {
            let (key, value) = item.split_once('=').ok_or_else(|| {
                Error::Config(format!("--{flag}: {item:?} is not a key=value label"))
            })?;
            if key.is_empty() {
                return Err(Error::Config(format!("--{flag}: {item:?} has no key")));
            }
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

fn namespace(flag: &str, text: &str) -> Result<String, Error> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(text.to_string())
    } else {
        Err(Error::Config(format!(
            "--{flag} {text:?} is not a namespace name"
        )))
    }
}

/// Parses `8080` or `8080-8090`, which must hold the preview port the api proxies to.
fn preview_ports(text: &str) -> Result<PortRange, Error> {
    PortRange::parse_preview(text)
        .map_err(|why| Error::Config(format!("--preview-ports {text:?}: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        network: NetworkArgs,
    }

    fn args(flags: &[&str]) -> NetworkArgs {
        let argv = std::iter::once("kubexec").chain(flags.iter().copied());
        Cli::try_parse_from(argv).expect("flags parse").network
    }

    fn config(flags: &[&str]) -> Result<NetworkConfig, Error> {
        let resolv = || Ok("search example\nnameserver 10.255.255.53\nnameserver ::1\n".into());
        args(flags)
            .network_config(resolv)
            .map(|c| c.expect("policies on"))
    }

    fn net(text: &str) -> Ipv4Net {
        text.parse().expect("a CIDR")
    }

    fn message(result: Result<NetworkConfig, Error>) -> String {
        result.expect_err("rejected").to_string()
    }

    #[test]
    fn the_defaults_block_private_and_link_local_ranges_only() {
        let c = config(&[]).expect("valid");
        assert_eq!(
            c.blocked,
            [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "169.254.0.0/16"
            ]
            .map(net)
        );
        for documentation in ["192.0.2.0/24", "203.0.113.0/24"] {
            let doc = net(documentation);
            assert!(
                !c.blocked.iter().any(|b| b.contains(&doc)),
                "{documentation} stays reachable"
            );
        }
        assert_eq!(c.dns_resolvers, [net("10.255.255.53/32")], "auto");
        assert_eq!(
            c.preview_ports,
            PortRange {
                first: 8080,
                last: 8080
            }
        );
        assert_eq!(c.api.namespace, "kubexec-system");
        assert_eq!(
            c.api
                .labels
                .get("app.kubernetes.io/component")
                .map(String::as_str),
            Some("api")
        );
        let dns = c.dns_pods.expect("cluster DNS Pods");
        assert_eq!(dns.namespace, "kube-system");
        assert_eq!(
            dns.labels.get("k8s-app").map(String::as_str),
            Some("kube-dns")
        );
    }

    #[test]
    fn cluster_ranges_join_the_blocked_ones_without_repeats() {
        let c = config(&[
            "--blocked-cidrs",
            "10.0.0.0/8",
            "--pod-cidrs",
            "10.244.0.0/24",
            "--service-cidrs",
            "10.96.0.0/24 10.0.0.0/8",
            "--node-cidrs",
            "10.244.0.1,192.0.2.2/32",
        ])
        .expect("valid");
        assert_eq!(
            c.blocked,
            [
                "10.0.0.0/8",
                "10.244.0.0/24",
                "10.96.0.0/24",
                "10.244.0.1/32",
                "192.0.2.2/32"
            ]
            .map(net)
        );
    }

    #[test]
    fn every_blocked_range_must_lie_strictly_inside_the_allowed_one() {
        assert!(is_strictly_inside(net("10.0.0.0/8"), ANYWHERE));
        assert!(is_strictly_inside(net("10.1.0.0/16"), net("10.0.0.0/8")));
        assert!(
            !is_strictly_inside(net("10.0.0.0/8"), net("10.0.0.0/8")),
            "equal"
        );
        assert!(
            !is_strictly_inside(net("11.0.0.0/16"), net("10.0.0.0/8")),
            "outside"
        );
        assert!(
            !is_strictly_inside(net("10.0.0.0/7"), net("10.0.0.0/8")),
            "wider"
        );
        for flag in ["--blocked-cidrs", "--pod-cidrs", "--node-cidrs"] {
            let error = message(config(&[flag, "0.0.0.0/0"]));
            assert!(error.contains("not strictly inside 0.0.0.0/0"), "{error}");
            assert!(error.contains(&flag[2..]), "names the flag: {error}");
        }
    }

    #[test]
    fn cidrs_must_be_canonical_ipv4() {
        let error = message(config(&["--node-cidrs", "192.0.2.2/24"]));
        assert!(error.contains("write 192.0.2.0/24"), "{error}");
        assert!(error.contains("or 192.0.2.2/32"), "{error}");
        let error = message(config(&["--blocked-cidrs", "fc00::/7"]));
        assert!(error.contains("IPv6"), "{error}");
        let error = message(config(&["--dns-resolvers", "dns.example"]));
        assert!(error.contains("dns-resolvers"), "{error}");
        assert!(config(&["--blocked-cidrs", "10.0.0.0/33"]).is_err());
    }

    #[test]
    fn empty_lists_are_empty() {
        let c = config(&[
            "--blocked-cidrs",
            "",
            "--dns-resolvers",
            " ",
            "--dns-pod-selector",
            "",
        ])
        .expect("valid");
        assert!(c.blocked.is_empty());
        assert!(c.dns_resolvers.is_empty());
        assert_eq!(c.dns_pods, None);
    }

    #[test]
    fn resolvers_are_listed_or_read_from_resolv_conf() {
        let c = config(&["--dns-resolvers", "10.0.0.10,auto,10.255.255.53/32"]).expect("valid");
        assert_eq!(
            c.dns_resolvers,
            [net("10.0.0.10/32"), net("10.255.255.53/32")]
        );
        assert_eq!(
            nameservers("nameserver 127.0.0.53\nnameserver 169.254.20.10 # local\n"),
            [net("169.254.20.10/32")],
            "loopback is the sandbox itself"
        );
        let unreadable = args(&[]).network_config(|| Err(std::io::ErrorKind::NotFound.into()));
        let error = unreadable.expect_err("rejected").to_string();
        assert!(error.contains("resolv.conf"), "{error}");
        let listed = args(&["--dns-resolvers", "10.0.0.10"])
            .network_config(|| panic!("not read without auto"))
            .expect("valid");
        assert!(listed.is_some());
    }

    #[test]
    fn preview_ports_hold_the_preview_port() {
        let c = config(&["--preview-ports", "8000-8999"]).expect("valid");
        assert_eq!(
            c.preview_ports,
            PortRange {
                first: 8000,
                last: 8999
            }
        );
        for bad in ["9000", "8081-8090", "8090-8000", "0", "http", "8080-70000"] {
            let error = message(config(&["--preview-ports", bad]));
            assert!(error.contains("--preview-ports"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_api_selector_must_choose_something() {
        let error = message(config(&["--api-pod-selector", ""]));
        assert!(error.contains("every Pod"), "{error}");
        assert!(config(&["--api-pod-selector", "app"]).is_err());
        assert!(config(&["--api-namespace", "Not/A/Namespace"]).is_err());
    }

    #[test]
    fn the_switch_turns_everything_off() {
        let off = args(&[
            "--network-policies",
            "false",
            "--blocked-cidrs",
            "0.0.0.0/0",
        ])
        .network_config(|| panic!("not read when off"))
        .expect("nothing to check");
        assert_eq!(off, None);
    }
}
