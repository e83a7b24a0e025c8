//! Tenant namespace guardrails: `kubexec keys create` refuses reserved tenants, and a new
//! tenant namespace carries kubexec's mark, the Pod Security `restricted` level, a ResourceQuota
//! and a LimitRange from its tier.

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::{Api, ResourceExt};
use kubexec::crd::quantity::Quantity;
use kubexec_e2e::{api::keys_command, kubectl, TestNs};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn reserved_tenants_are_refused() {
    let ns = TestNs::new("ten-reserved").await;
    let foreign = TestNs::new("ten-foreign").await;
    // The keys live in the test namespace; tenants are namespace names.
    for (tenant, why) in [
        ("kube-system", "a Kubernetes system namespace"),
        ("kube-public", "a Kubernetes system namespace"),
        ("default", "the default namespace"),
        ("kubexec-system", "kubexec's install namespace"),
        (ns.name.as_str(), "the namespace of the API keys"),
        (foreign.name.as_str(), "exists and kubexec did not make it"),
    ] {
        let out = keys_command(&ns.name, "", &["create", "--tenant", tenant]);
        assert!(!out.status.success(), "{tenant} was accepted");
        let message = stderr_of(&out);
        assert!(message.contains(why), "{tenant}: {message}");
        assert!(out.stdout.is_empty(), "{tenant}: no key printed");
    }
    // With the chart's prefix, the tenant `system` would be the install namespace.
    let out = keys_command(
        "kubexec-system",
        "kubexec-",
        &["create", "--tenant", "system"],
    );
    assert!(!out.status.success(), "system was accepted");
    assert!(
        stderr_of(&out).contains("is reserved"),
        "{}",
        stderr_of(&out)
    );
    // Nothing was made on the way: no key, and the foreign namespace kept its labels.
    let keys = ns.kubectl(&["get", "secrets", "-l", "kubexec.dev/api-key", "-o", "name"]);
    assert!(
        String::from_utf8_lossy(&keys.stdout).trim().is_empty(),
        "keys: {}",
        String::from_utf8_lossy(&keys.stdout)
    );
    let namespaces: Api<Namespace> = Api::all(ns.client.clone());
    let kept = namespaces
        .get(&foreign.name)
        .await
        .expect("foreign namespace");
    assert!(!kept.labels().contains_key("app.kubernetes.io/managed-by"));
    assert!(!kept
        .labels()
        .contains_key("pod-security.kubernetes.io/enforce"));
}

/// Deletes the tenant namespace the test made.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::env::var_os("KUBEXEC_E2E_KEEP").is_none() {
            let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"]);
        }
    }
}

#[tokio::test]
async fn a_new_tenant_namespace_has_guardrails() {
    let ns = TestNs::new("ten-new").await;
    let tenant = format!("{}-t", ns.name);
    let _cleanup = Cleanup(tenant.clone());
    let out = keys_command(&ns.name, "", &["create", "--tenant", &tenant]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(key.starts_with("kx_"), "{key}");

    let namespaces: Api<Namespace> = Api::all(ns.client.clone());
    let made = namespaces.get(&tenant).await.expect("tenant namespace");
    let labels = made.labels();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("kubexec")
    );
    assert_eq!(
        labels.get("kubexec.dev/tenant").map(String::as_str),
        Some(tenant.as_str())
    );
    for mode in ["enforce", "audit", "warn"] {
        assert_eq!(
            labels
                .get(&format!("pod-security.kubernetes.io/{mode}"))
                .map(String::as_str),
            Some("restricted"),
            "{mode}"
        );
    }

    let quotas: Api<ResourceQuota> = Api::namespaced(ns.client.clone(), &tenant);
    let quota = quotas.get("kubexec-tenant").await.expect("quota");
    let hard = quota.spec.and_then(|s| s.hard).unwrap_or_default();
    // The apiserver stores quantities in canonical form ("1000" reads back as "1k").
    let hard = |name: &str| hard.get(name).and_then(|q| Quantity::parse(&q.0).ok());
    let q = |text: &str| Quantity::parse(text).ok();
    // The free tier: 5 sessions.
    assert_eq!(hard("pods"), q("20"), "pods");
    assert_eq!(
        hard("persistentvolumeclaims"),
        q("20"),
        "persistentvolumeclaims"
    );
    assert_eq!(hard("requests.storage"), q("50Gi"), "requests.storage");
    assert_eq!(
        hard("count/sessions.kubexec.dev"),
        q("5"),
        "count/sessions.kubexec.dev"
    );
    assert_eq!(
        hard("count/executions.kubexec.dev"),
        q("1000"),
        "count/executions.kubexec.dev"
    );
    assert_eq!(hard("count/secrets"), q("1020"), "count/secrets");

    let ranges: Api<LimitRange> = Api::namespaced(ns.client.clone(), &tenant);
    let range = ranges.get("kubexec-tenant").await.expect("limit range");
    let item = range
        .spec
        .and_then(|s| s.limits.into_iter().next())
        .expect("one limit");
    assert_eq!(item.type_, "Container");
    let max = item.max.unwrap_or_default();
    let max = |name: &str| max.get(name).and_then(|v| Quantity::parse(&v.0).ok());
    assert_eq!(max("memory"), q("1024Mi"));
    assert_eq!(max("cpu"), q("1"));

    // The api may work here, and only through this binding.
    let bindings: Api<RoleBinding> = Api::namespaced(ns.client.clone(), &tenant);
    let binding = bindings
        .get("kubexec-api")
        .await
        .expect("the api's RoleBinding");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, "kubexec-api-tenant");
    let subject = binding
        .subjects
        .unwrap_or_default()
        .into_iter()
        .next()
        .expect("a subject");
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", "kubexec-api")
    );
    assert_eq!(subject.namespace.as_deref(), Some(ns.name.as_str()));

    // A privileged Pod is refused in the tenant namespace by Pod Security.
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": tenant},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "securityContext": {"privileged": true}}]}
    });
    let path = std::env::temp_dir().join(format!("{tenant}-pod.json"));
    std::fs::write(&path, pod.to_string()).expect("pod file");
    let refused = kubectl(&["create", "--dry-run=server", "-f", &path.to_string_lossy()]);
    let _ = std::fs::remove_file(&path);
    assert!(!refused.status.success(), "a privileged Pod was admitted");
    assert!(
        stderr_of(&refused).contains("restricted"),
        "{}",
        stderr_of(&refused)
    );

    // A second key, on another tier, changes nothing of the namespace.
    let again = keys_command(
        &ns.name,
        "",
        &["create", "--tenant", &tenant, "--tier", "paid"],
    );
    assert!(again.status.success(), "{}", stderr_of(&again));
    let quota = quotas.get("kubexec-tenant").await.expect("quota");
    assert_eq!(
        quota
            .spec
            .and_then(|s| s.hard)
            .and_then(|h| h.get("pods").cloned())
            .and_then(|v| Quantity::parse(&v.0).ok()),
        q("20")
    );
}
