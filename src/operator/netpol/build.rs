//! Pure builders: the three NetworkPolicies every namespace that holds Sessions gets, from the
//! checked [`NetworkConfig`]. Nothing here does IO.
//!
//! Policies add up: a Pod is allowed what any policy selecting it allows.
//! - `kubexec-sandbox-ingress`: every sandbox accepts only the api's Pods, only on the preview
//!   ports.
//! - `kubexec-sandbox-egress-deny`: every sandbox may send nothing. This is the floor, and
//!   what `spec.network.egress: Deny` gets; it fails closed for a Pod without the egress label.
//! - `kubexec-sandbox-egress-allow`: sandboxes labelled `kubexec.dev/egress: Allow` may also
//!   query DNS and reach the internet outside the blocked ranges.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
        NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::api::ObjectMeta;

use crate::crd::{labels, EgressPolicy};

use super::config::{NetworkConfig, PodPeer, ANYWHERE};

/// Name of the ingress policy.
pub const INGRESS_POLICY: &str = "kubexec-sandbox-ingress";
/// Name of the egress floor.
pub const EGRESS_DENY_POLICY: &str = "kubexec-sandbox-egress-deny";
/// Name of the egress allowance for sandboxes labelled `Allow`.
pub const EGRESS_ALLOW_POLICY: &str = "kubexec-sandbox-egress-allow";
/// `app.kubernetes.io/component` of the policies.
pub const COMPONENT: &str = "network-policy";
/// Selects the policies the operator keeps, and nothing else.
pub const MANAGED_POLICY_SELECTOR: &str =
    "app.kubernetes.io/managed-by=kubexec,app.kubernetes.io/component=network-policy";

/// The label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
const DNS_PORT: i32 = 53;

/// The policies of a namespace, built once from the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicySet(Vec<NetworkPolicy>);

impl PolicySet {
    /// Builds the three policies.
    pub fn new(config: &NetworkConfig) -> Self {
        Self(vec![
            ingress_policy(config),
            egress_deny_policy(),
            egress_allow_policy(config),
        ])
    }

    /// The policies, placed in `namespace`.
    pub fn in_namespace<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = NetworkPolicy> + 'a {
        self.0.iter().map(move |policy| {
            let mut policy = policy.clone();
            policy.metadata.namespace = Some(namespace.to_string());
            policy
        })
    }
}

fn pairs<const N: usize>(entries: [(&str, &str); N]) -> BTreeMap<String, String> {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Labels of every sandbox Pod, whatever its Session asks for.
pub fn sandbox_labels() -> BTreeMap<String, String> {
    pairs([
        (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
        (labels::COMPONENT, labels::SANDBOX_COMPONENT),
    ])
}

fn selector(match_labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(match_labels),
        match_expressions: None,
    }
}

fn policy(name: &str, spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(pairs([
                (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
                (labels::COMPONENT, COMPONENT),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
    }
}

fn pods(peer: &PodPeer) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(selector(pairs([(
            NAMESPACE_NAME_LABEL,
            peer.namespace.as_str(),
        )]))),
        pod_selector: Some(selector(peer.labels.clone())),
        ip_block: None,
    }
}

fn block(cidr: Ipv4Net, except: &[Ipv4Net]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_string(),
            except: (!except.is_empty()).then(|| except.iter().map(|e| e.to_string()).collect()),
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn port(protocol: &str, port: u16, end_port: Option<u16>) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_string()),
        port: Some(IntOrString::Int(i32::from(port))),
        end_port: end_port.map(i32::from),
    }
}

/// Only the api's Pods reach a sandbox, only on the preview ports. Traffic from the node
/// itself (the kubelet, host processes) is always allowed by the NetworkPolicy API.
pub fn ingress_policy(config: &NetworkConfig) -> NetworkPolicy {
    let ports = config.preview_ports;
    let end_port = (ports.last > ports.first).then_some(ports.last);
    policy(
        INGRESS_POLICY,
        NetworkPolicySpec {
            pod_selector: Some(selector(sandbox_labels())),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![pods(&config.api)]),
                ports: Some(vec![port("TCP", ports.first, end_port)]),
            }]),
            egress: None,
        },
    )
}

/// No egress at all for every sandbox: `Deny`, and the floor under `Allow`.
pub fn egress_deny_policy() -> NetworkPolicy {
    policy(
        EGRESS_DENY_POLICY,
        NetworkPolicySpec {
            pod_selector: Some(selector(sandbox_labels())),
            policy_types: Some(vec!["Egress".into()]),
            ingress: None,
            // No rules under policyTypes [Egress] is "deny all egress". Never `Some([])`: the
            // apiserver stores an empty list as no list, so every apply of `[]` would differ
            // from the stored spec, bump the generation, and wake this controller's own watch:
            // a loop of ~100 applies per second per namespace.
            egress: None,
        },
    )
}

/// Sandboxes labelled `Allow`: DNS to the resolvers and the cluster DNS Pods, and everything
/// outside the blocked ranges. A resolver inside a blocked range is still reached on port 53,
/// since the rules add up.
pub fn egress_allow_policy(config: &NetworkConfig) -> NetworkPolicy {
    let mut allowed = sandbox_labels();
    allowed.insert(labels::EGRESS.into(), EgressPolicy::Allow.as_str().into());
    let mut dns_peers: Vec<NetworkPolicyPeer> = config
        .dns_resolvers
        .iter()
        .map(|r| block(*r, &[]))
        .collect();
    dns_peers.extend(config.dns_pods.as_ref().map(pods));
    let mut egress = Vec::new();
    // A rule with no peers would allow every destination: no DNS peers, no DNS rule.
    if !dns_peers.is_empty() {
        egress.push(NetworkPolicyEgressRule {
            to: Some(dns_peers),
            ports: Some(vec![
                port("UDP", DNS_PORT as u16, None),
                port("TCP", DNS_PORT as u16, None),
            ]),
        });
    }
    egress.push(NetworkPolicyEgressRule {
        to: Some(vec![block(ANYWHERE, &config.blocked)]),
        ports: None,
    });
    policy(
        EGRESS_ALLOW_POLICY,
        NetworkPolicySpec {
            pod_selector: Some(selector(allowed)),
            policy_types: Some(vec!["Egress".into()]),
            ingress: None,
            egress: Some(egress),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::netpol::config::PortRange;
    use serde_json::{json, Value};

    fn config() -> NetworkConfig {
        let net = |t: &str| t.parse::<Ipv4Net>().expect("a CIDR");
        NetworkConfig {
            api: PodPeer {
                namespace: "kubexec-system".into(),
                labels: pairs([
                    ("app.kubernetes.io/name", "kubexec"),
                    ("app.kubernetes.io/component", "api"),
                ]),
            },
            preview_ports: PortRange {
                first: 8080,
                last: 8080,
            },
            dns_resolvers: vec![net("10.255.255.53/32")],
            dns_pods: Some(PodPeer {
                namespace: "kube-system".into(),
                labels: pairs([("k8s-app", "kube-dns")]),
            }),
            blocked: ["10.0.0.0/8", "169.254.0.0/16", "192.0.2.2/32"]
                .map(net)
                .to_vec(),
        }
    }

    fn to_json(policy: &NetworkPolicy) -> Value {
        serde_json::to_value(policy).expect("serializes")
    }

    const SANDBOXES: &str = r#"{"matchLabels": {
        "app.kubernetes.io/managed-by": "kubexec", "app.kubernetes.io/component": "sandbox"}}"#;

    fn sandboxes() -> Value {
        serde_json::from_str(SANDBOXES).expect("JSON")
    }

    fn metadata(name: &str) -> Value {
        json!({"name": name, "labels": {
            "app.kubernetes.io/managed-by": "kubexec",
            "app.kubernetes.io/component": "network-policy"}})
    }

    #[test]
    fn ingress_admits_only_the_api_on_the_preview_ports() {
        assert_eq!(
            to_json(&ingress_policy(&config())),
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": metadata(INGRESS_POLICY),
                "spec": {
                    "podSelector": sandboxes(),
                    "policyTypes": ["Ingress"],
                    "ingress": [{
                        "from": [{
                            "namespaceSelector": {"matchLabels": {
                                "kubernetes.io/metadata.name": "kubexec-system"}},
                            "podSelector": {"matchLabels": {
                                "app.kubernetes.io/name": "kubexec",
                                "app.kubernetes.io/component": "api"}}
                        }],
                        "ports": [{"protocol": "TCP", "port": 8080}]
                    }]
                }
            })
        );
        let mut wide = config();
        wide.preview_ports = PortRange {
            first: 8080,
            last: 8090,
        };
        assert_eq!(
            to_json(&ingress_policy(&wide))["spec"]["ingress"][0]["ports"],
            json!([{"protocol": "TCP", "port": 8080, "endPort": 8090}])
        );
    }

    #[test]
    fn the_egress_floor_denies_every_sandbox_everything() {
        assert_eq!(
            to_json(&egress_deny_policy()),
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": metadata(EGRESS_DENY_POLICY),
                "spec": {
                    "podSelector": sandboxes(),
                    "policyTypes": ["Egress"]
                }
            })
        );
    }

    #[test]
    fn allowed_egress_is_dns_and_the_internet_outside_the_blocked_ranges() {
        let mut allowed = sandboxes();
        allowed["matchLabels"]["kubexec.dev/egress"] = json!("Allow");
        assert_eq!(
            to_json(&egress_allow_policy(&config())),
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": metadata(EGRESS_ALLOW_POLICY),
                "spec": {
                    "podSelector": allowed,
                    "policyTypes": ["Egress"],
                    "egress": [
                        {
                            "to": [
                                {"ipBlock": {"cidr": "10.255.255.53/32"}},
                                {
                                    "namespaceSelector": {"matchLabels": {
                                        "kubernetes.io/metadata.name": "kube-system"}},
                                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
                                }
                            ],
                            "ports": [
                                {"protocol": "UDP", "port": 53},
                                {"protocol": "TCP", "port": 53}
                            ]
                        },
                        {"to": [{"ipBlock": {
                            "cidr": "0.0.0.0/0",
                            "except": ["10.0.0.0/8", "169.254.0.0/16", "192.0.2.2/32"]
                        }}]}
                    ]
                }
            })
        );
    }

    #[test]
    fn without_dns_peers_there_is_no_dns_rule() {
        let mut bare = config();
        bare.dns_resolvers.clear();
        bare.dns_pods = None;
        bare.blocked.clear();
        assert_eq!(
            to_json(&egress_allow_policy(&bare))["spec"]["egress"],
            json!([{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]),
            "never a rule without peers, which would allow everything"
        );
    }

    /// The apiserver stores an empty list as none: a policy holding one would differ from its
    /// stored self after every apply (a new generation, a watch event, another apply).
    #[test]
    fn no_policy_holds_an_empty_list() {
        fn empty_lists(value: &serde_json::Value, path: &str, found: &mut Vec<String>) {
            match value {
                serde_json::Value::Array(items) if items.is_empty() => found.push(path.into()),
                serde_json::Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        empty_lists(item, &format!("{path}[{i}]"), found);
                    }
                }
                serde_json::Value::Object(fields) => {
                    for (key, item) in fields {
                        empty_lists(item, &format!("{path}.{key}"), found);
                    }
                }
                _ => {}
            }
        }
        let mut bare = config();
        bare.blocked.clear();
        for config in [config(), bare] {
            for policy in PolicySet::new(&config).in_namespace("team-a") {
                let mut found = Vec::new();
                empty_lists(&to_json(&policy), "", &mut found);
                assert!(found.is_empty(), "{:?}: {found:?}", policy.metadata.name);
            }
        }
    }

    #[test]
    fn the_set_is_placed_in_each_namespace() {
        let set = PolicySet::new(&config());
        let placed: Vec<_> = set.in_namespace("team-a").collect();
        let names: Vec<_> = placed
            .iter()
            .map(|p| {
                (
                    p.metadata.name.as_deref().unwrap_or_default(),
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                (INGRESS_POLICY, "team-a"),
                (EGRESS_DENY_POLICY, "team-a"),
                (EGRESS_ALLOW_POLICY, "team-a")
            ]
        );
        assert_eq!(
            MANAGED_POLICY_SELECTOR,
            format!(
                "{}={},{}={COMPONENT}",
                labels::MANAGED_BY,
                labels::MANAGED_BY_VALUE,
                labels::COMPONENT
            )
        );
    }
}
