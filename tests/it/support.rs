//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wukong::fleet::{self, SourceFile};

/// The crate root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Build source files from (path, text) pairs.
pub fn files(pairs: &[(&str, &str)]) -> Vec<SourceFile> {
    pairs
        .iter()
        .map(|(p, t)| SourceFile {
            path: (*p).to_owned(),
            text: (*t).to_owned(),
        })
        .collect()
}

/// Load a fleet from in-memory files and return every diagnostic as displayed.
pub fn diagnostics(pairs: &[(&str, &str)]) -> Result<fleet::Fleet, Vec<String>> {
    fleet::load(&files(pairs))
        .map_err(|e| e.diagnostics().iter().map(ToString::to_string).collect())
}

/// Run the `wukong` binary built for this test run.
pub fn wukong(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wukong"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run wukong")
}

/// How long a test waits for the simulated cluster to reach a state: far above the tens of
/// milliseconds it takes at `Config::fast` speed, so a loaded CI machine does not flake.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often a waiting test polls.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Poll `check` until it returns `Ok`; on timeout, fail with its last `Err` (what it saw).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(seen) if tokio::time::Instant::now() > deadline => {
                panic!("timed out waiting for {what}; last saw: {seen}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// The API resource of a manifest's kind (its plural included), from the simulator's table of
/// served kinds; `None` for a kind it does not serve.
pub fn api_resource(manifest: &serde_json::Value) -> Option<kube::api::ApiResource> {
    let api_version = manifest["apiVersion"].as_str()?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = manifest["kind"].as_str()?;
    let def = wukong::sim::resources::RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)?;
    Some(kube::api::ApiResource {
        group: def.group.into(),
        version: def.version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: def.plural.into(),
    })
}

/// Namespace and name of the service account `deploy/` runs Wukong as.
pub const DEPLOY_SERVICE_ACCOUNT: (&str, &str) = ("wukong-system", "wukong");

/// The RBAC request of a simulator audit entry.
pub fn rbac_request(entry: &wukong::sim::audit::AuditEntry) -> wukong::daemon::rbac::Request {
    wukong::daemon::rbac::Request {
        verb: entry.verb.clone(),
        group: entry.group.clone(),
        resource: entry.resource.clone(),
        subresource: entry.subresource.clone(),
        namespace: entry.namespace.clone(),
        name: entry.name.clone(),
    }
}

/// Fail, listing them, unless the RBAC manifests in `deploy_dir` grant Wukong's service account
/// every request of `audit` (the simulator's log of a run: `Server::audit()`).
pub fn assert_rbac_allows(audit: &[wukong::sim::audit::AuditEntry], deploy_dir: &Path) {
    let (namespace, name) = DEPLOY_SERVICE_ACCOUNT;
    let policy = wukong::daemon::rbac::Policy::from_dir(deploy_dir, namespace, name)
        .unwrap_or_else(|e| panic!("cannot load the RBAC of {}: {e}", deploy_dir.display()));
    let denied: std::collections::BTreeSet<String> = audit
        .iter()
        .map(rbac_request)
        .filter(|r| !policy.allows(r))
        .map(|r| r.to_string())
        .collect();
    assert!(
        denied.is_empty(),
        "{} denies {} of the {} requests made:\n  {}",
        deploy_dir.display(),
        denied.len(),
        audit.len(),
        denied.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

/// API group, version and plural of a kind the simulator serves.
pub type Kind = (&'static str, &'static str, &'static str);
pub const VM: Kind = ("kubevirt.io", "v1", "virtualmachines");
pub const VMI: Kind = ("kubevirt.io", "v1", "virtualmachineinstances");
pub const PVC: Kind = ("", "v1", "persistentvolumeclaims");
pub const DV: Kind = ("cdi.kubevirt.io", "v1beta1", "datavolumes");
pub const NAD: Kind = ("k8s.cni.cncf.io", "v1", "network-attachment-definitions");

/// A running simulated cluster with some namespaces, a kubeconfig for it in a temporary
/// directory (also there for the test's other files), and a client.
pub struct SimCluster {
    pub server: wukong::sim::Server,
    pub client: kube::Client,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl SimCluster {
    pub async fn start(config: wukong::sim::Config, namespaces: &[&str]) -> SimCluster {
        use k8s_openapi::api::core::v1::Namespace;
        let server = wukong::sim::Server::start_with("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        let client =
            kube::Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
        for ns in namespaces {
            kube::Api::<Namespace>::all(client.clone())
                .create(
                    &Default::default(),
                    &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap(),
                )
                .await
                .unwrap();
        }
        SimCluster {
            server,
            client,
            dir,
            kubeconfig,
        }
    }

    /// One object, read from the store in-process (so the audit log holds only the calls of
    /// the program under test).
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<serde_json::Value> {
        let (group, version, plural) = kind;
        let r = wukong::sim::resources::find(group, version, plural).unwrap();
        self.server.shared().store().get(r, namespace, name).ok()
    }

    /// Change the cluster's configuration as its administrator would: a merge patch of the
    /// KubeVirt CR `kubevirt/kubevirt`.
    pub async fn patch_kubevirt(&self, patch: serde_json::Value) {
        use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kubevirt.io", "v1", "KubeVirt"),
            "kubevirts",
        );
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), "kubevirt", &resource);
        api.patch("kubevirt", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// Edit a VM by hand, as kubectl would: a merge patch over HTTP, field manager `kubectl`.
    pub async fn patch_vm(&self, namespace: &str, name: &str, patch: serde_json::Value) {
        self.patch_vm_as("kubectl", namespace, name, patch).await;
    }

    /// Edit a VM as another writer would (a person, a controller): a merge patch over HTTP as
    /// field manager `manager`.
    pub async fn patch_vm_as(
        &self,
        manager: &str,
        namespace: &str,
        name: &str,
        patch: serde_json::Value,
    ) {
        use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
            "virtualmachines",
        );
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        let params = PatchParams {
            field_manager: Some(manager.into()),
            ..PatchParams::default()
        };
        api.patch(name, &params, &Patch::Merge(patch))
            .await
            .unwrap();
    }
}

/// The status of an object's condition of type `kind`.
pub fn condition(v: &serde_json::Value, kind: &str) -> Option<String> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
        .map(str::to_owned)
}

/// The alpha feature gates some of KubeVirt's examples use (sidecar hooks, a host disk, a USB
/// host device); KubeVirt denies those examples unless its CR enables them.
pub const EXAMPLE_GATES: &[&str] = &["Sidecar", "HostDisk", "HostDevices"];

/// Enable feature gates in the KubeVirt CR `kubevirt/kubevirt`, as an admin would (merge patch).
pub async fn enable_feature_gates(client: &kube::Client, gates: &[&str]) {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "KubeVirt"),
        "kubevirts",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "kubevirt", &resource);
    let patch = serde_json::json!({"spec": {"configuration": {"developerConfiguration": {
        "featureGates": gates}}}});
    api.patch("kubevirt", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}
