//! `wukong plan` and `wukong snapshot` end to end: the binary reads the simulated cluster over
//! HTTP through kube-rs, exactly as it would read a real one.

use std::path::{Path, PathBuf};
use std::process::Output;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use wukong::sim::{Config, Server};

use crate::support::{api_resource, eventually, root, wukong};

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        wukong(&args, &root())
    })
    .await
    .unwrap()
}

/// The example fleet's storage class, as a cluster would offer it: shared, expandable.
async fn create_storage_class(client: &Client) {
    let api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "storage.k8s.io",
            "v1",
            "StorageClass",
        )),
    );
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "ceph-rbd"},
            "provisioner": "rbd.csi.ceph.com", "allowVolumeExpansion": true
        }))
        .unwrap(),
    )
    .await
    .unwrap();
}

/// What the cluster has before Wukong runs, as an administrator made it: the fleet's
/// namespaces and the network attachment its web set names with `nadName`.
async fn prepare(client: &Client, fleet: &Path) {
    let (_, objects) = wukong::cli::load_and_render(fleet, "r1").unwrap();
    let namespaces: std::collections::BTreeSet<&str> =
        objects.iter().map(|o| o.id.namespace.as_str()).collect();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        ns_api
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let nad = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                     "metadata": {"name": "shared-services", "namespace": "web"},
                     "spec": {"config": "{\"cniVersion\":\"0.3.1\",\"type\":\"bridge\",\"bridge\":\"br9\"}"}});
    Api::<DynamicObject>::namespaced_with(client.clone(), "web", &api_resource(&nad).unwrap())
        .create(
            &PostParams::default(),
            &serde_json::from_value(nad).unwrap(),
        )
        .await
        .unwrap();
}

/// Wait until every VM of the fleet has settled (running, paused or stopped).
async fn settled(client: &Client, vms: &[(&str, &str)]) {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kubevirt.io",
        "v1",
        "VirtualMachine",
    ));
    for (ns, name) in vms {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
        eventually(&format!("vm {ns}/{name} settled"), || async {
            let vm = serde_json::to_value(api.get(name).await.map_err(|e| e.to_string())?)
                .unwrap_or_default();
            match vm
                .pointer("/status/printableStatus")
                .and_then(Value::as_str)
            {
                Some("Running" | "Paused" | "Stopped") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
}

/// Create what a fleet renders to, as if an earlier apply had run.
async fn create_rendered(client: &Client, fleet: &Path) {
    let (_, objects) = wukong::cli::load_and_render(fleet, "r1").unwrap();
    let namespaces: std::collections::BTreeSet<&str> =
        objects.iter().map(|o| o.id.namespace.as_str()).collect();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        let _ = ns_api
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await;
    }
    for o in objects {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &o.id.namespace,
            &api_resource(&o.manifest).unwrap(),
        );
        api.create(
            &PostParams::default(),
            &serde_json::from_value(o.manifest).unwrap(),
        )
        .await
        .unwrap();
    }
}

/// A copy of the example fleet to edit.
fn example_copy(dir: &Path) -> PathBuf {
    let fleet = dir.join("fleet");
    std::fs::create_dir_all(&fleet).unwrap();
    for entry in std::fs::read_dir(root().join("examples/fleet")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), fleet.join(entry.file_name())).unwrap();
    }
    fleet
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

fn json_steps(out: &Output) -> Vec<(String, String, String)> {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["vm"].as_str().or(s["nad"].as_str()).unwrap().to_owned(),
                s["change"].as_str().unwrap().to_owned(),
                s["class"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reads_the_cluster_and_shows_fleet_edits() {
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), Config::fast())
        .await
        .unwrap();
    let client = Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    create_storage_class(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let kc = kubeconfig.display().to_string();

    // An empty cluster: everything is created, NADs first; exit 2 with --detailed-exitcode.
    let fleet = example_copy(dir.path());
    prepare(&client, &fleet).await;
    let f = fleet.display().to_string();
    let out = run(vec![
        "plan".into(),
        f.clone(),
        "--kubeconfig".into(),
        kc.clone(),
        "-o".into(),
        "json".into(),
        "--detailed-exitcode".into(),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps = json_steps(&out);
    assert_eq!(steps.len(), 13, "{steps:?}");
    assert_eq!(steps[0].1, "nad-create");
    assert!(steps.iter().all(|s| s.2 == "create"));

    // Once the fleet is in the cluster and its VMs have started, the plan is empty (exit 0).
    create_rendered(&client, &fleet).await;
    settled(
        &client,
        &[
            ("databases", "pg-primary"),
            ("databases", "reporting"),
            ("databases", "batch-etl"),
            ("web", "web-0"),
            ("web", "web-1"),
            ("web", "web-2"),
            ("nfv", "dpdk-0"),
            ("nfv", "dpdk-1"),
        ],
    )
    .await;
    let out = run(vec![
        "plan".into(),
        f.clone(),
        "--kubeconfig".into(),
        kc.clone(),
        "--detailed-exitcode".into(),
    ])
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("No changes"), "{text}");

    // Edits: scale the web set out, grow pg-primary's CPU, suspend reporting's neighbour.
    edit(&fleet.join("web.yaml"), "replicas: 3", "replicas: 4");
    edit(&fleet.join("databases.yaml"), "  cpu: 4\n", "  cpu: 8\n");
    let out = run(vec![
        "plan".into(),
        f.clone(),
        "--kubeconfig".into(),
        kc.clone(),
        "-o".into(),
        "json".into(),
    ])
    .await;
    let steps = json_steps(&out);
    assert!(
        steps.contains(&("web/web-3".into(), "create".into(), "create".into())),
        "{steps:?}"
    );
    assert!(
        steps.contains(&("databases/pg-primary".into(), "cpu".into(), "live".into())),
        "{steps:?}"
    );

    // A snapshot of the cluster plans the same, with no cluster.
    let snapshot = dir.path().join("live.json");
    let out = run(vec![
        "snapshot".into(),
        f.clone(),
        "--kubeconfig".into(),
        kc.clone(),
        "-f".into(),
        snapshot.display().to_string(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline = run(vec![
        "plan".into(),
        f.clone(),
        "--live".into(),
        snapshot.display().to_string(),
        "-o".into(),
        "json".into(),
        "--out".into(),
        dir.path().join("plan.json").display().to_string(),
    ])
    .await;
    assert_eq!(json_steps(&offline), steps);
    // The saved plan carries what an apply needs: the manifests to write and the live
    // versions they were computed from.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("plan.json")).unwrap())
            .unwrap();
    assert_eq!(saved["revision"], "local");
    let writes = saved["writes"].as_array().unwrap();
    assert!(
        writes.iter().any(|w| w["metadata"]["name"] == "web-3"),
        "{writes:?}"
    );
    assert!(
        saved["basis"]["VirtualMachine/databases/pg-primary"].is_string(),
        "{}",
        saved["basis"]
    );

    // Markdown for a pull request.
    let md = run(vec![
        "plan".into(),
        f,
        "--live".into(),
        snapshot.display().to_string(),
        "-o".into(),
        "markdown".into(),
    ])
    .await;
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(md.starts_with("### Wukong plan for fleet `prod`"), "{md}");
    assert!(
        md.contains("<details><summary>Diff of vm databases/pg-primary</summary>"),
        "{md}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_an_error_not_a_plan() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    // A server that is gone: bind, write its kubeconfig, stop it.
    let server = Server::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    server.write_kubeconfig(&kubeconfig).unwrap();
    let server_url = server.url();
    server.shutdown().await.unwrap();
    let out = run(vec![
        "plan".into(),
        root().join("examples/fleet").display().to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    // One line naming the server and why (tests/it/reach.rs has the other causes).
    assert!(
        err.starts_with(&format!(
            "error: cannot reach the cluster at {}: connection refused",
            server_url
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
