//! `deploy/`: the manifests load, the RBAC grants exactly the calls Wukong makes (no wildcards,
//! nothing broader), and a real run against the simulator makes no call the RBAC denies.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use wukong::daemon::rbac::{Policy, Request};
use wukong::sim::{Config, Server};

use crate::support::{DEPLOY_SERVICE_ACCOUNT, assert_rbac_allows, root, wukong};

fn deploy_dir() -> PathBuf {
    root().join("deploy")
}

/// Every (API group, resource[/subresource], verb) Wukong uses, and where: `true` for
/// cluster-wide, `false` for its own namespace only. Keep in step with the code: the reader
/// (src/live/read.rs) and the daemon's watches (src/live/watch.rs), the executor (src/apply/),
/// the daemon's Lease and Events.
const CALLS: &[(&str, &str, &[&str], bool)] = &[
    (
        "kubevirt.io",
        "virtualmachines",
        &["get", "list", "watch", "patch", "delete"],
        true,
    ),
    (
        "kubevirt.io",
        "virtualmachineinstances",
        &["get", "list", "watch"],
        true,
    ),
    ("kubevirt.io", "kubevirts", &["list", "watch"], true),
    (
        "subresources.kubevirt.io",
        "virtualmachineinstances/pause",
        &["update"],
        true,
    ),
    (
        "subresources.kubevirt.io",
        "virtualmachineinstances/unpause",
        &["update"],
        true,
    ),
    (
        "subresources.kubevirt.io",
        "virtualmachines/restart",
        &["update"],
        true,
    ),
    (
        "",
        "persistentvolumeclaims",
        &["get", "list", "watch", "patch"],
        true,
    ),
    (
        "cdi.kubevirt.io",
        "datavolumes",
        &["get", "list", "watch", "patch"],
        true,
    ),
    ("storage.k8s.io", "storageclasses", &["list", "watch"], true),
    ("", "namespaces", &["list", "watch"], true),
    (
        "k8s.cni.cncf.io",
        "network-attachment-definitions",
        &["get", "list", "watch", "patch", "delete"],
        true,
    ),
    ("", "events", &["create", "patch"], true),
    (
        "coordination.k8s.io",
        "leases",
        &["create", "get", "update"],
        false,
    ),
];

fn policy() -> Policy {
    let (ns, name) = DEPLOY_SERVICE_ACCOUNT;
    Policy::from_dir(&deploy_dir(), ns, name).unwrap()
}

#[test]
fn every_rule_is_a_known_call_without_wildcards() {
    let policy = policy();
    assert!(
        !policy.grants.is_empty(),
        "no RBAC bound to the service account"
    );
    let mut granted = BTreeSet::new();
    for grant in &policy.grants {
        let rule = &grant.rule;
        assert!(
            rule.non_resource_urls.is_empty(),
            "{}: non-resource URLs",
            grant.role
        );
        for field in [
            &rule.api_groups,
            &rule.resources,
            &rule.verbs,
            &rule.resource_names,
        ] {
            assert!(
                !field.iter().any(|v| v.contains('*')),
                "{}: wildcard in {rule:?}",
                grant.role
            );
        }
        for group in &rule.api_groups {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    let known = CALLS.iter().find(|(g, r, verbs, _)| {
                        g == group && r == resource && verbs.contains(&verb.as_str())
                    });
                    let Some((_, _, _, cluster_wide)) = known else {
                        panic!(
                            "{}: `{verb}` on {group}/{resource} is not a call Wukong makes",
                            grant.role
                        );
                    };
                    assert_eq!(
                        grant.namespace.is_none(),
                        *cluster_wide,
                        "{}: {group}/{resource} granted {}",
                        grant.role,
                        if grant.namespace.is_none() {
                            "cluster-wide"
                        } else {
                            "in one namespace"
                        }
                    );
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    for (group, resource, verbs, _) in CALLS {
        for verb in *verbs {
            assert!(
                granted.contains(&(group.to_string(), resource.to_string(), verb.to_string())),
                "`{verb}` on {group}/{resource} is not granted"
            );
        }
    }
}

#[test]
fn the_lease_is_granted_in_wukongs_namespace_only_and_by_name() {
    let policy = policy();
    let lease = |verb: &str, ns: &str, name: Option<&str>| Request {
        verb: verb.into(),
        group: "coordination.k8s.io".into(),
        resource: "leases".into(),
        subresource: None,
        namespace: Some(ns.into()),
        name: name.map(Into::into),
    };
    let own = DEPLOY_SERVICE_ACCOUNT.0;
    let lease_name = wukong::daemon::LEASE_NAME;
    assert!(policy.allows(&lease("create", own, None)));
    assert!(policy.allows(&lease("update", own, Some(lease_name))));
    assert!(!policy.allows(&lease("update", own, Some("someone-elses"))));
    assert!(!policy.allows(&lease("create", "default", None)));
    // Nothing outside the list: secrets, pods, deleting PVCs.
    for (verb, group, resource) in [
        ("get", "", "secrets"),
        ("list", "", "pods"),
        ("delete", "", "persistentvolumeclaims"),
        ("create", "kubevirt.io", "virtualmachines"),
        ("update", "kubevirt.io", "virtualmachines"),
        ("deletecollection", "kubevirt.io", "virtualmachines"),
        ("watch", "", "secrets"),
    ] {
        let request = Request {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: None,
            namespace: Some("default".into()),
            name: Some("x".into()),
        };
        assert!(!policy.allows(&request), "{request} is allowed");
    }
}

fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy_dir().join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn the_kustomization_lists_every_manifest_and_the_deployment_is_locked_down() {
    let kustomization = &documents("kustomization.yaml")[0];
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let files: BTreeSet<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    assert_eq!(listed, files);

    let deployment = &documents("deployment.yaml")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], DEPLOY_SERVICE_ACCOUNT.1);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "daemon");
    for flag in [
        "--repo=",
        "--listen=0.0.0.0:8080",
        "--webhook-secret-file=",
        "--cache-dir=",
    ] {
        assert!(
            args.iter().any(|a| a.starts_with(flag)),
            "{flag} missing: {args:?}"
        );
    }
    // The flags parse as `wukong daemon` takes them.
    let mut argv = vec!["wukong"];
    argv.extend(args.iter().map(|a| {
        if a.starts_with("--repo=") {
            "--repo=/srv/fleet"
        } else {
            a
        }
    }));
    <wukong::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_against_the_simulator_makes_only_granted_calls() {
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), Config::fast())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let kubeconfig = kubeconfig.display().to_string();
    let output = tokio::task::spawn_blocking(move || {
        wukong(
            &["plan", "examples/fleet", "--kubeconfig", &kubeconfig],
            &root(),
        )
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let audit = server.audit();
    let lists: BTreeSet<(&str, &str)> = audit
        .iter()
        .filter(|e| e.verb == "list")
        .map(|e| (e.group.as_str(), e.resource.as_str()))
        .collect();
    for kind in [
        ("kubevirt.io", "virtualmachines"),
        ("kubevirt.io", "virtualmachineinstances"),
        ("kubevirt.io", "kubevirts"),
        ("", "persistentvolumeclaims"),
        ("storage.k8s.io", "storageclasses"),
    ] {
        assert!(lists.contains(&kind), "no list of {kind:?} in {audit:?}");
    }
    assert!(
        audit.iter().all(|e| e.verb == "list"),
        "a plan only lists: {audit:?}"
    );
    assert_rbac_allows(&audit, &deploy_dir());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_names_verbs_subresources_and_scopes_as_rbac_does() {
    use wukong::sim::audit::AuditEntry;
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), Config::fast())
        .await
        .unwrap();
    let client = kube::Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    let send = |method: &str, path: &str| {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/merge-patch+json")
            .body(b"{}".to_vec())
            .unwrap();
        let client = client.clone();
        async move {
            // Answers (404s included) do not matter: every request is logged.
            let _ = client.request_text(request).await;
        }
    };
    send("GET", "/version").await;
    send("GET", "/apis/kubevirt.io/v1/virtualmachines").await;
    send(
        "GET",
        "/apis/kubevirt.io/v1/namespaces/a/virtualmachines?watch=true&timeoutSeconds=1",
    )
    .await;
    send(
        "GET",
        "/apis/kubevirt.io/v1/namespaces/a/virtualmachines/vm",
    )
    .await;
    send(
        "PATCH",
        "/api/v1/namespaces/a/persistentvolumeclaims/p/status",
    )
    .await;
    send("DELETE", "/apis/storage.k8s.io/v1/storageclasses/sc").await;
    send(
        "PUT",
        "/apis/subresources.kubevirt.io/v1/namespaces/a/virtualmachineinstances/vm/pause",
    )
    .await;
    let entry = |verb: &str,
                 group: &str,
                 resource: &str,
                 sub: Option<&str>,
                 ns: Option<&str>,
                 name: Option<&str>| AuditEntry {
        verb: verb.into(),
        group: group.into(),
        version: "v1".into(),
        resource: resource.into(),
        subresource: sub.map(Into::into),
        namespace: ns.map(Into::into),
        name: name.map(Into::into),
        dry_run: false,
    };
    assert_eq!(
        server.audit(),
        [
            entry("list", "kubevirt.io", "virtualmachines", None, None, None),
            entry(
                "watch",
                "kubevirt.io",
                "virtualmachines",
                None,
                Some("a"),
                None
            ),
            entry(
                "get",
                "kubevirt.io",
                "virtualmachines",
                None,
                Some("a"),
                Some("vm")
            ),
            entry(
                "patch",
                "",
                "persistentvolumeclaims",
                Some("status"),
                Some("a"),
                Some("p")
            ),
            entry(
                "delete",
                "storage.k8s.io",
                "storageclasses",
                None,
                None,
                Some("sc")
            ),
            entry(
                "update",
                "subresources.kubevirt.io",
                "virtualmachineinstances",
                Some("pause"),
                Some("a"),
                Some("vm")
            ),
        ],
        "discovery (/version) is not logged"
    );
    server.shutdown().await.unwrap();
}
