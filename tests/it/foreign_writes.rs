//! Other writers are never drift (issue #12): KubeVirt's webhook re-serialises every VM it
//! stores, its controllers add finalizers and annotations, add-ons such as KubeMacPool fill in
//! fields, and people use kubectl. The planner judges only what the fleet declares, and removes
//! only what Wukong itself set earlier (its own field manager in `managedFields`).

use std::path::Path;

use serde_json::{Value, json};
use wukong::identity::{FIELD_MANAGER, ObjectRef};
use wukong::live::LiveState;
use wukong::plan::{self, Change, Class, output};

use crate::apply::{Env, SYSTEM_DISK, vm_doc};
use crate::plan::{applied, applied_example, load};
use crate::support::{VM, root};

/// What the rest of a real cluster writes into a VM Wukong created, as `kubevirt-facts.md` §6
/// lists it (KubeVirt v1.7, which still wrote `creationTimestamp: null`, and later).
fn foreign_writes(vm: &mut Value) {
    let set = |vm: &mut Value, pointer: &str, v: Value| plan::shape::set_pointer(vm, pointer, v);
    // KubeVirt's mutating webhook: the Go round trip of the spec.
    set(vm, "/spec/template/spec/domain/resources", json!({}));
    set(vm, "/spec/template/metadata/creationTimestamp", Value::Null);
    if let Some(dvts) = vm
        .pointer_mut("/spec/dataVolumeTemplates")
        .and_then(Value::as_array_mut)
    {
        for t in dvts {
            set(t, "/metadata/creationTimestamp", Value::Null);
        }
    }
    set(
        vm,
        "/spec/template/metadata/annotations/kubevirt.io~1pci-topology-version",
        json!("v2"),
    );
    set(
        vm,
        "/spec/template/metadata/annotations/kubevirt.io~1pci-interface-slot-count",
        json!("4"),
    );
    // The VM controller.
    set(
        vm,
        "/metadata/finalizers",
        json!(["kubevirt.io/virtualMachineControllerFinalize"]),
    );
    set(
        vm,
        "/metadata/annotations/kubevirt.io~1storage-observed-api-version",
        json!("v1alpha3"),
    );
    // KubeMacPool, and a defaulting webhook that sets the interface model.
    set(
        vm,
        "/metadata/annotations/kubemacpool.io~1transaction-timestamp",
        json!("2026-11-29T10:00:00Z"),
    );
    if let Some(ifaces) = vm
        .pointer_mut("/spec/template/spec/domain/devices/interfaces")
        .and_then(Value::as_array_mut)
    {
        for i in ifaces {
            set(i, "/model", json!("virtio"));
        }
    }
    // A person with kubectl: an annotation, a label and a node selector Wukong never declared.
    set(vm, "/metadata/annotations/kubectl-note", json!("handmade"));
    set(vm, "/metadata/labels/team", json!("storage"));
    set(
        vm,
        "/spec/template/spec/nodeSelector",
        json!({"kubernetes.io/hostname": "node-3"}),
    );
    if let Some(entries) = vm
        .pointer_mut("/metadata/managedFields")
        .and_then(Value::as_array_mut)
    {
        entries.push(json!({"manager": "kubectl-annotate", "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:annotations": {"f:kubectl-note": {}}, "f:labels": {"f:team": {}}}}}));
    }
}

fn with_foreign_writes(mut live: LiveState) -> LiveState {
    for (id, object) in live.objects.iter_mut() {
        match id.kind {
            wukong::identity::Kind::VirtualMachine => foreign_writes(object),
            // Someone labels and annotates a network attachment.
            wukong::identity::Kind::NetworkAttachmentDefinition => {
                plan::shape::set_pointer(object, "/metadata/labels/team", json!("network"));
                plan::shape::set_pointer(
                    object,
                    "/metadata/annotations/description",
                    json!("handmade"),
                );
            }
        }
    }
    live
}

#[test]
fn foreign_writes_to_every_vm_of_the_example_fleet_are_not_drift() {
    for fleet in ["examples/fleet", "examples/fleet-next"] {
        let path = root().join(fleet);
        let live = with_foreign_writes(applied_example(&path));
        let (f, objects) = load(&path);
        let p = plan::plan(&f, &objects, &live, "r2");
        assert!(p.steps.is_empty(), "{fleet}:\n{}", output::text(&p, false));
    }
}

/// A fleet directory with one document of text.
fn fleet_dir(dir: &Path, text: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("fleet.yaml"), text).unwrap();
    dir.to_owned()
}

const FLEET: &str = "apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata: {name: fx}
spec:
  namespaces: [apps]
  defaultNamespace: apps
  defaultStorageClass: fast
  allowRestarts: true
";

#[test]
fn quantities_kubevirt_stores_canonically_are_not_drift() {
    let dir = tempfile::tempdir().unwrap();
    let path = fleet_dir(
        dir.path(),
        &format!(
            "{FLEET}---
apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata: {{name: app}}
spec:
  cpu: 2
  memory: 2048Mi
  disks:
    - {{name: data, size: 10240Mi}}
"
        ),
    );
    let mut live = applied(&path);
    // KubeVirt's webhook writes every quantity as Go's resource.Quantity prints it.
    let vm = live.objects.get_mut(&ObjectRef::vm("apps", "app")).unwrap();
    plan::shape::set_pointer(vm, "/spec/template/spec/domain/memory/guest", json!("2Gi"));
    *vm.pointer_mut("/spec/dataVolumeTemplates/0/spec/storage/resources/requests/storage")
        .unwrap() = json!("10Gi");
    let (f, objects) = load(&path);
    let p = plan::plan(&f, &objects, &live, "r2");
    assert!(p.steps.is_empty(), "{}", output::text(&p, false));
}

#[test]
fn a_label_wukong_set_and_the_fleet_dropped_is_removed_and_anothers_stays() {
    let dir = tempfile::tempdir().unwrap();
    let doc = |labels: &str| {
        format!(
            "{FLEET}---
apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata: {{name: app, labels: {{{labels}}}}}
spec: {{cpu: 2, memory: 2Gi}}
"
        )
    };
    let path = fleet_dir(dir.path(), &doc("app: db, tier: gold"));
    let mut live = applied(&path);
    let vm = live.objects.get_mut(&ObjectRef::vm("apps", "app")).unwrap();
    let owned = &vm["metadata"]["managedFields"][0];
    assert_eq!(owned["manager"], json!(FIELD_MANAGER));
    assert!(
        owned
            .pointer("/fieldsV1/f:metadata/f:labels/f:tier")
            .is_some()
    );
    foreign_writes(vm);

    fleet_dir(dir.path(), &doc("app: db"));
    let (f, objects) = load(&path);
    let p = plan::plan(&f, &objects, &live, "r2");
    let steps: Vec<(Change, Class, Option<&str>)> = p
        .steps
        .iter()
        .map(|s| (s.change, s.class, s.item.as_deref()))
        .collect();
    assert_eq!(
        steps,
        vec![(
            Change::Update,
            Class::Live,
            Some("metadata.labels.tier, spec.template.metadata.labels.tier")
        )],
        "{}",
        output::text(&p, false)
    );
    let write = &p.writes[&ObjectRef::vm("apps", "app")];
    assert!(write.pointer("/metadata/labels/tier").is_none());
    // The write claims nothing another manager set.
    assert!(write.pointer("/metadata/labels/team").is_none());
    assert!(
        write
            .pointer("/metadata/annotations/kubectl-note")
            .is_none()
    );
    assert!(
        write
            .pointer("/spec/template/spec/domain/resources")
            .is_none()
    );
}

// ---------------------------------------------------------------------------------------------
// End to end: the binary against the simulated cluster.

/// Patch a VM as another field manager would (kubectl, a controller), with a merge patch.
async fn patch_as(env: &Env, manager: &str, name: &str, patch: Value) {
    env.patch_vm_as(manager, "apps", name, patch).await;
}

/// VM `db` with these annotations (`key: value` pairs, YAML flow style).
fn db_annotated(annotations: &str) -> String {
    vm_doc("db", 2, "4Gi", SYSTEM_DISK).replacen(
        "  name: db\n",
        &format!("  name: db\n  annotations: {{{annotations}}}\n"),
        1,
    )
}

/// `wukong plan --detailed-exitcode` of the fleet: its exit code and output.
async fn detailed_plan(env: &Env, path: &Path) -> (i32, String) {
    let args = [
        "plan".to_string(),
        path.display().to_string(),
        "--kubeconfig".into(),
        env.kubeconfig.display().to_string(),
        "--detailed-exitcode".into(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::wukong(&args, &root())
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn foreign_writes_on_the_cluster_are_not_drift_end_to_end() {
    let env = Env::new().await;
    let nic = "  networks:
    - name: front
      type: bridge
      bridge: br0
";
    let fleet = env.fleet(
        false,
        &format!("{}{}", vm_doc("db", 2, "4Gi", SYSTEM_DISK), nic),
    );
    env.converge(&fleet).await;
    patch_as(
        &env,
        "kubectl-annotate",
        "db",
        json!({"metadata": {"annotations": {"description": "handmade"}, "labels": {"team": "storage"}}}),
    )
    .await;
    patch_as(
        &env,
        "virt-controller",
        "db",
        json!({"metadata": {"finalizers": ["kubevirt.io/virtualMachineControllerFinalize"],
                            "annotations": {"kubevirt.io/latest-observed-api-version": "v1"}},
               "spec": {"template": {"metadata": {"annotations": {"kubevirt.io/pci-topology-version": "v3"}},
                                     "spec": {"domain": {"resources": {}}}}}}),
    )
    .await;
    patch_as(
        &env,
        "kubectl-edit",
        "db",
        json!({"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/hostname": "node-3"}}}}}),
    )
    .await;
    let (code, out) = detailed_plan(&env, &fleet).await;
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn an_annotation_removed_from_the_fleet_is_removed_and_a_handmade_one_stays() {
    let env = Env::new().await;
    let fleet = env.fleet(false, &db_annotated("owner: team-a"));
    env.converge(&fleet).await;
    patch_as(
        &env,
        "kubectl-annotate",
        "db",
        json!({"metadata": {"annotations": {"description": "handmade"}}}),
    )
    .await;
    let (code, out) = detailed_plan(&env, &fleet).await;
    assert_eq!(code, 0, "a handmade annotation is not drift: {out}");

    env.fleet(false, &db_annotated(""));
    let plan = env.plan(&fleet).await;
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{plan:#}");
    assert_eq!(steps[0]["change"], json!("update"));
    assert_eq!(steps[0]["class"], json!("live"));
    assert_eq!(steps[0]["item"], json!("metadata.annotations.owner"));

    env.converge(&fleet).await;
    let vm = env.get(VM, "db").unwrap();
    assert!(
        vm.pointer("/metadata/annotations/owner").is_none(),
        "{vm:#}"
    );
    assert_eq!(
        vm.pointer("/metadata/annotations/description"),
        Some(&json!("handmade"))
    );
    let (code, out) = detailed_plan(&env, &fleet).await;
    assert_eq!(code, 0, "converged after the removal: {out}");
}

#[tokio::test]
async fn a_removal_another_manager_still_owns_is_never_reported_done() {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let env = Env::new().await;
    let fleet = env.fleet(false, &db_annotated("owner: team-a"));
    env.converge(&fleet).await;
    // kubectl apply --server-side of the same annotation: both managers own it now.
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
        "virtualmachines",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), "apps", &resource);
    api.patch(
        "db",
        &PatchParams::apply("kubectl"),
        &Patch::Apply(
            json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                             "metadata": {"name": "db", "annotations": {"owner": "team-a"}}}),
        ),
    )
    .await
    .unwrap();

    env.fleet(false, &db_annotated(""));
    // Online, the server-side dry run knows the write would change nothing: no step.
    let plan = env.plan(&fleet).await;
    assert_eq!(plan["hasChanges"], json!(false), "{plan:#}");
    assert!(
        plan["notes"]
            .to_string()
            .contains("would store it unchanged"),
        "{plan:#}"
    );
    // Offline (a snapshot), the plan cannot know; applying it is then not reported done.
    let dir = env.dir.path();
    let (snap, saved) = (dir.join("snap.json"), dir.join("plan.json"));
    // The binary talks to the simulator on this test's runtime: run it off that thread.
    let run = |args: Vec<String>| {
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::support::wukong(&args, &root())
        })
    };
    let s = |p: &Path| p.display().to_string();
    let out = wait_for(run(vec![
        "snapshot".into(),
        s(&fleet),
        "--kubeconfig".into(),
        s(&env.kubeconfig),
        "-f".into(),
        s(&snap),
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = wait_for(run(vec![
        "plan".into(),
        s(&fleet),
        "--live".into(),
        s(&snap),
        "--out".into(),
        s(&saved),
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("metadata.annotations.owner"), "{text}");
    assert!(text.contains("no server-side dry run"), "{text}");
    let (code, report) = env.apply(&saved, &[]).await;
    assert_ne!(code, 0, "{report:#}");
    let r = crate::apply::results(&report, "db");
    assert!(
        r.iter().any(|(c, o, d)| c == "update"
            && o == "failed"
            && d.contains("metadata.annotations.owner (still there)")
            && d.contains("another field manager owns it")),
        "{r:?}"
    );
    // Wukong no longer claims it: the next plan leaves it to its other owner.
    assert_eq!(
        env.get(VM, "db")
            .unwrap()
            .pointer("/metadata/annotations/owner"),
        Some(&json!("team-a"))
    );
    let (code, out) = detailed_plan(&env, &fleet).await;
    assert_eq!(code, 0, "{out}");
}

/// Wait for a thread without blocking the test's runtime.
async fn wait_for<T: Send + 'static>(t: std::thread::JoinHandle<T>) -> T {
    tokio::task::spawn_blocking(move || t.join().unwrap())
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Server-side dry run: what the API server would store, and its refusals, before any write.

/// The default VirtualMachine template with an extra DataVolume template no volume uses: a
/// template override mistake KubeVirt's webhook refuses and Wukong's own checks do not catch.
fn orphan_template() -> String {
    let default =
        std::fs::read_to_string(root().join("templates/virtualmachine.yaml.hbs")).unwrap();
    default.replacen(
        "  template:\n    metadata:",
        "    - metadata:
        name: db-orphan
      spec:
        storage:
          resources:
            requests:
              storage: 1Gi
        source:
          blank: {}
  template:
    metadata:",
        1,
    )
}

fn dry_runs(env: &Env) -> usize {
    env.server.audit().iter().filter(|e| e.dry_run).count()
}

#[tokio::test]
async fn a_write_kubevirt_refuses_is_refused_at_plan_time_and_nothing_is_written() {
    let env = Env::new().await;
    let fleet = env.fleet(false, &vm_doc("db", 2, "4Gi", SYSTEM_DISK));
    std::fs::create_dir_all(fleet.join("templates")).unwrap();
    std::fs::write(
        fleet.join("templates/virtualmachine.yaml.hbs"),
        orphan_template(),
    )
    .unwrap();
    let plan = env.plan(&fleet).await;
    let step = &plan["steps"][0];
    assert_eq!(step["change"], json!("create"), "{plan:#}");
    assert_eq!(step["class"], json!("refused"), "{plan:#}");
    assert!(
        step["reason"]
            .as_str()
            .unwrap()
            .contains("must be referenced in the VMI template's 'volumes' list"),
        "{step:#}"
    );
    assert!(dry_runs(&env) >= 1);

    let (code, report) = env.apply(&fleet, &[]).await;
    assert_eq!(
        code, 0,
        "a refused step does not fail the apply: {report:#}"
    );
    assert!(env.get(VM, "db").is_none(), "nothing is written");
    assert!(
        !env.server
            .audit()
            .iter()
            .any(|e| e.resource == "virtualmachines" && e.verb == "patch" && !e.dry_run),
        "no real write was sent"
    );
}

#[tokio::test]
async fn a_quiet_plan_sends_no_dry_run_and_a_changed_one_checks_only_what_changes() {
    let env = Env::new().await;
    let fleet = env.fleet(
        false,
        &format!(
            "{}{}",
            vm_doc("db", 2, "4Gi", SYSTEM_DISK),
            vm_doc("web", 2, "4Gi", SYSTEM_DISK)
        ),
    );
    env.converge(&fleet).await;
    env.server.shared().audit().clear();
    let plan = env.plan(&fleet).await;
    assert_eq!(plan["hasChanges"], json!(false), "{plan:#}");
    assert_eq!(dry_runs(&env), 0);

    env.fleet(
        false,
        &format!(
            "{}{}",
            vm_doc("db", 4, "4Gi", SYSTEM_DISK),
            vm_doc("web", 2, "4Gi", SYSTEM_DISK)
        ),
    );
    env.server.shared().audit().clear();
    let plan = env.plan(&fleet).await;
    assert_eq!(plan["steps"][0]["vm"], json!("apps/db"), "{plan:#}");
    assert_eq!(plan["steps"][0]["class"], json!("live"), "{plan:#}");
    let sent: Vec<_> = env
        .server
        .audit()
        .into_iter()
        .filter(|e| e.dry_run)
        .collect();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].name.as_deref(), Some("db"));
}
