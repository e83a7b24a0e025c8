//! Tenant namespace guardrails: `kubexec keys create` refuses reserved tenants, and a new
//! tenant namespace carries kubexec's mark, the Pod Security `restricted` level, a ResourceQuota
//! and a LimitRange from its tier. Per-tenant quotas: the session limit holds under concurrent
//! creates, and one key's flood of fat requests is refused with `QUOTA_EXCEEDED` while the
//! operator's and the api's memory and etcd's size stay bounded.

use std::time::Instant;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::{api::ListParams, Api, ResourceExt};
use kubexec::crd::{quantity::Quantity, Session};
use kubexec_e2e::{
    api::{keys_command, ApiServer},
    etcd_db_size, kubectl, rss_bytes, TestNs,
};
use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;

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
    // The free tier: 5 sessions and a warm pool of 1.
    assert_eq!(hard("pods"), q("22"), "pods");
    assert_eq!(
        hard("persistentvolumeclaims"),
        q("22"),
        "persistentvolumeclaims"
    );
    assert_eq!(hard("requests.storage"), q("60Gi"), "requests.storage");
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
    assert_eq!(hard("count/secrets"), q("1022"), "count/secrets");

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
        q("22")
    );
}

/// A tiers file for a test's api, in the test's temporary directory.
fn tiers_file(ns: &str, yaml: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{ns}-tiers.yaml"));
    std::fs::write(&path, yaml).expect("tiers file");
    path
}

/// The session limit is the tenant namespace's ResourceQuota on Sessions, which the apiserver
/// counts atomically: 30 concurrent creates on the 5-session free tier make exactly 5.
#[tokio::test]
async fn concurrent_session_creates_stop_exactly_at_the_tier_limit() {
    let ns = TestNs::new("ten-race").await;
    // The request rate lets all 30 through (the session limit stays the free tier's 5).
    let tiers = tiers_file(&ns.name, "free:\n  burst: 100\n");
    let api = ApiServer::start(&ns.name, &["--tiers-file", &tiers.to_string_lossy()]);
    let key = api.create_key(&ns.name, "free").await;
    let http = api.client();
    let request = json!({"ttl": 300});
    let replies = futures::future::join_all(
        (0..30).map(|_| http.post("/sessions/create", Some(&key), &request)),
    )
    .await;
    let _ = std::fs::remove_file(&tiers);
    let created = replies.iter().filter(|r| r.status == 201).count();
    let limited: Vec<_> = replies
        .iter()
        .filter(|r| r.status == 429 && r.json()["error"]["code"] == "SESSION_LIMIT_REACHED")
        .collect();
    let others: Vec<String> = replies
        .iter()
        .filter(|r| r.status != 201 && r.status != 429)
        .map(|r| format!("{} {}", r.status, r.text()))
        .collect();
    assert!(others.is_empty(), "unexpected answers: {others:?}");
    assert_eq!(created, 5, "created {created} of 30, the tier allows 5");
    assert_eq!(limited.len(), 25);
    assert!(limited
        .iter()
        .all(|r| r.headers.contains_key("retry-after")));
    let sessions: Api<Session> = ns.api();
    let stored = sessions
        .list(&ListParams::default())
        .await
        .expect("list sessions")
        .items
        .len();
    assert_eq!(stored, 5, "the namespace holds {stored} Sessions");
}

/// The bloat test: one key sends 300 fat requests (250 KiB of code, four 64 KiB inline files,
/// a 500 KiB env map) without waiting for the answers. Past its quota it gets 429
/// `QUOTA_EXCEEDED`; the api and the operator stay under 200 MiB and keep running; etcd grows
/// by less than 64 MiB.
#[tokio::test]
async fn a_flood_of_fat_requests_is_refused_by_quota_with_bounded_memory() {
    const REQUESTS: usize = 300;
    const RSS_BOUND: u64 = 200 * MIB;
    const ETCD_BOUND: u64 = 64 * MIB;
    let mut ns = TestNs::new("ten-bloat").await;
    // A request rate that lets the whole flood through to the quotas.
    let tiers = tiers_file(
        &ns.name,
        "free:\n  requestsPerMinute: 60000\n  burst: 1000\n",
    );
    let mut api = ApiServer::start(&ns.name, &["--tiers-file", &tiers.to_string_lossy()]);
    let key = api.create_key(&ns.name, "free").await;
    let http = api.client();
    let created = http
        .post("/sessions/create", Some(&key), &json!({"ttl": 600}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let session = created.json()["sessionId"]
        .as_str()
        .expect("sessionId")
        .to_string();
    let warm = http
        .post(
            "/execute",
            Some(&key),
            &json!({"sessionId": session, "command": "true"}),
        )
        .await;
    assert_eq!(warm.status, 200, "{}", warm.text());
    let _ = std::fs::remove_file(&tiers);

    let code = format!("/*{}*/\nconsole.log('fat')\n", "x".repeat(250 * 1024 - 30));
    let files: Vec<Value> = (0..4)
        .map(|i| json!({"path": format!("fat-{i}.txt"), "content": "y".repeat(64 * 1024)}))
        .collect();
    let env: serde_json::Map<String, Value> = (0..100)
        .map(|i| (format!("FAT_{i:03}"), json!("z".repeat(5 * 1024 - 8))))
        .collect();
    let body = json!({"sessionId": session, "code": code, "files": files, "env": env})
        .to_string()
        .into_bytes();
    println!("bloat: {REQUESTS} requests of {} KiB", body.len() / 1024);

    let idle = (
        api.pid().and_then(rss_bytes),
        ns.operator_pid().and_then(rss_bytes),
    );
    let etcd_before = etcd_db_size().await;
    let began = Instant::now();
    let flood: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let key = key.clone();
            let body = body.clone();
            tokio::spawn(async move {
                http.request(hyper::Method::POST, "/execute", Some(&key), &[], body)
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut quota = 0;
    let mut others = Vec::new();
    for reply in futures::future::join_all(flood).await {
        let reply = reply.expect("request task");
        match (
            reply.status.as_u16(),
            reply.json()["error"]["code"].as_str(),
        ) {
            (200, _) => ok += 1,
            (429, Some("QUOTA_EXCEEDED")) if reply.headers.contains_key("retry-after") => {
                quota += 1
            }
            (status, _) => others.push(format!("{status} {}", reply.text())),
        }
    }
    let flood_took = began.elapsed();
    let etcd_after = etcd_db_size().await;
    let api_rss = api.pid().and_then(rss_bytes);
    let operator_rss = ns.operator_pid().and_then(rss_bytes);
    let growth = etcd_after.0.saturating_sub(etcd_before.0);
    let growth_in_use = etcd_after.1.saturating_sub(etcd_before.1);
    let mib = |b: u64| b as f64 / MIB as f64;
    let show = |rss: Option<(u64, u64)>| {
        rss.map(|(now, peak)| format!("{:.1} MiB (peak {:.1} MiB)", mib(now), mib(peak)))
            .unwrap_or_else(|| "not running".into())
    };
    println!(
        "bloat: before the flood api RSS {}, operator RSS {}",
        show(idle.0),
        show(idle.1)
    );
    println!(
        "bloat: {ok} ran, {quota} refused with QUOTA_EXCEEDED, in {:.1} s; api RSS {}, operator RSS {}; etcd dbSize {:.1} -> {:.1} MiB (+{:.1}), in use {:.1} -> {:.1} MiB (+{:.1})",
        flood_took.as_secs_f64(),
        show(api_rss),
        show(operator_rss),
        mib(etcd_before.0),
        mib(etcd_after.0),
        mib(growth),
        mib(etcd_before.1),
        mib(etcd_after.1),
        mib(growth_in_use),
    );
    assert!(others.is_empty(), "unexpected answers: {others:?}");
    assert!(quota > 0, "no request was refused by quota");
    assert!(ok > 0, "no request ran");
    let (_, api_peak) = api_rss.expect("the api kept running");
    assert!(
        api_peak < RSS_BOUND,
        "api peak RSS {:.1} MiB",
        mib(api_peak)
    );
    if let Some((_, operator_peak)) = operator_rss {
        assert!(
            operator_peak < RSS_BOUND,
            "operator peak RSS {:.1} MiB",
            mib(operator_peak)
        );
    }
    assert!(growth < ETCD_BOUND, "etcd grew by {:.1} MiB", mib(growth));
    assert!(
        growth_in_use < ETCD_BOUND,
        "etcd's data grew by {:.1} MiB",
        mib(growth_in_use)
    );
    // Neither restarted: the same processes still run, and the api still answers.
    assert!(ns.operator_pid().is_some() || std::env::var("KUBEXEC_E2E_OPERATOR").is_ok());
    let still = http.get(&format!("/sessions/{session}"), Some(&key)).await;
    assert_eq!(still.status, 200, "{}", still.text());
    assert!(api.pid().is_some(), "the api exited");
}
