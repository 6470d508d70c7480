//! Issue #13, the findings about what is in the cluster: shared disks (3), adoption of a volume
//! Wukong does not own (4), an edited disk-size annotation and a hand-edited saved plan (9),
//! one stuck VM holding the daemon (8), and webhook bodies (7). Each test is named after the
//! hostile or unlucky input that found the problem and drives the binary (CLI or daemon) end to
//! end against the simulated cluster, asserting that nothing was created, patched, restarted or
//! deleted that should not be.

use std::path::{Path, PathBuf};
use std::process::Output;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use wukong::sim::Config;

use crate::support::{DV, Kind, PVC, SimCluster, VM, eventually, root, wukong};

/// Run the binary off the test's runtime (the simulator runs on it).
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        wukong(&args, &root())
    })
    .await
    .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A simulated cluster with namespace `ns` and a fleet directory.
struct Env {
    sim: SimCluster,
    ns: &'static str,
}

impl Env {
    async fn new(ns: &'static str) -> Env {
        Env {
            sim: SimCluster::start(Config::fast(), &[ns]).await,
            ns,
        }
    }

    /// Write the fleet: its settings (`extra` lines under `spec:`) and `docs`.
    fn fleet(&self, extra: &str, docs: &str) -> PathBuf {
        let path = self.sim.dir.path().join("fleet");
        std::fs::create_dir_all(&path).unwrap();
        let ns = self.ns;
        std::fs::write(
            path.join("fleet.yaml"),
            format!(
                "apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: f13
spec:
  namespaces: [{ns}]
  defaultNamespace: {ns}
  defaultStorageClass: sim-shared
  prune: true
{extra}{docs}"
            ),
        )
        .unwrap();
        path
    }

    fn kubeconfig(&self) -> String {
        self.sim.kubeconfig.display().to_string()
    }

    async fn plan(&self, fleet: &Path) -> Value {
        let out = run(vec![
            "plan".into(),
            fleet.display().to_string(),
            "--kubeconfig".into(),
            self.kubeconfig(),
            "-o".into(),
            "json".into(),
        ])
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `wukong apply PATH --auto-approve -o json`: exit code and the document printed (Null
    /// when nothing was printed), and stderr.
    async fn apply(&self, path: &Path, extra: &[&str]) -> (i32, Value, String) {
        let mut args: Vec<String> = vec![
            "apply".into(),
            path.display().to_string(),
            "--kubeconfig".into(),
            self.kubeconfig(),
            "--auto-approve".into(),
            "-o".into(),
            "json".into(),
            "--timeout".into(),
            "60s".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = run(args).await;
        let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), doc, stderr(&out))
    }

    fn get(&self, kind: Kind, name: &str) -> Option<Value> {
        self.sim.get(kind, self.ns, name)
    }

    fn api(&self, kind: Kind) -> Api<DynamicObject> {
        let (group, version, plural) = kind;
        let r = wukong::sim::resources::find(group, version, plural).unwrap();
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, r.kind),
            plural,
        );
        Api::namespaced_with(self.sim.client.clone(), self.ns, &resource)
    }

    /// Change an object by hand, as `kubectl edit` would.
    async fn edit(&self, kind: Kind, name: &str, patch: Value) {
        let params = PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..PatchParams::default()
        };
        self.api(kind)
            .patch(name, &params, &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// Wait for a VM to run.
    async fn running(&self, name: &str) {
        eventually(&format!("{name} running"), || async {
            match self.get(VM, name) {
                Some(vm) if vm["status"]["printableStatus"] == "Running" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
}

fn vm_doc(name: &str, disks: &[(&str, &str)]) -> String {
    let mut doc = format!(
        "---
apiVersion: vm.novasphere.dev/v1alpha1
kind: Wukong
metadata:
  name: {name}
spec:
  cpu: 1
  memory: 1Gi
  disks:
"
    );
    for (disk, size) in disks {
        doc.push_str(&format!("    - name: {disk}\n      size: {size}\n"));
    }
    doc
}

/// The plan's steps as (object, change, class, reason).
fn steps(plan: &Value) -> Vec<(String, String, String, String)> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["vm"].as_str().or(s["nad"].as_str()).unwrap().to_owned(),
                s["change"].as_str().unwrap().to_owned(),
                s["class"].as_str().unwrap().to_owned(),
                s["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn request(pvc: &Value) -> String {
    pvc["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Whether a client (the binary under test) changed objects of `resource`: the simulator's own
/// controllers write in-process and are not in the audit log, and the test only creates.
fn writes_to(env: &Env, resource: &str) -> bool {
    env.sim
        .server
        .audit()
        .iter()
        .any(|e| e.resource == resource && matches!(e.verb.as_str(), "patch" | "update" | "delete"))
}

fn resource_version(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Finding 3: two VMs could share one disk.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_3_vm_a_with_disk_b_data_and_vm_a_b_with_disk_data_are_rejected_naming_both() {
    let env = Env::new("apps").await;
    let fleet = env.fleet(
        "",
        &format!(
            "{}{}",
            vm_doc("a", &[("b-data", "1Gi")]),
            vm_doc("a-b", &[("data", "1Gi")])
        ),
    );
    let out = run(vec!["validate".into(), fleet.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).lines().nth(1).unwrap_or_default().trim(),
        "fleet.yaml:30:13: Wukong apps/a-b: disk `data` generates DataVolume and PVC `apps/a-b-data`, \
         the same name as disk `b-data` of VM `apps/a` (fleet.yaml:19:13; Wukong apps/a): the two \
         VMs would share one volume; rename a disk or a VM",
        "{}",
        stderr(&out)
    );
    let (code, doc, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(doc, Value::Null);
    assert!(err.contains("apps/a-b-data"), "{err}");
    assert!(
        env.sim
            .server
            .audit()
            .iter()
            .all(|e| e.verb == "get" || e.verb == "list" || e.resource == "namespaces")
    );
    assert!(env.get(VM, "a").is_none() && env.get(VM, "a-b").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_3_vm_a_b_with_disk_data_never_gets_the_disk_a_b_data_of_vm_a() {
    let env = Env::new("apps").await;
    // Revision 1: VM `a` with disk `b-data` (DataVolume `a-b-data`), and some data on it.
    let fleet = env.fleet("", &vm_doc("a", &[("b-data", "1Gi")]));
    let (code, doc, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{doc:#} {err}");
    env.running("a").await;
    let a_uid = env.get(VM, "a").unwrap()["metadata"]["uid"].clone();
    let dv = env.get(DV, "a-b-data").unwrap();
    assert_eq!(dv["metadata"]["ownerReferences"][0]["uid"], a_uid);

    // Revision 2: `a` is gone and `a-b` with disk `data` would generate the same name. The
    // plan refuses to give `a-b` that disk, naming it, while `a` is deleted (its disk kept).
    env.fleet("", &vm_doc("a-b", &[("data", "1Gi")]));
    let plan = env.plan(&fleet).await;
    let create = steps(&plan)
        .into_iter()
        .find(|s| s.0 == "apps/a-b")
        .unwrap();
    assert_eq!(
        (create.1.as_str(), create.2.as_str()),
        ("create", "refused")
    );
    assert!(
        create
            .3
            .contains("DataVolume apps/a-b-data exists and belongs to VM apps/a"),
        "{create:?}"
    );
    let (code, doc, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{doc:#} {err}");
    assert!(env.get(VM, "a").is_none(), "a pruned");
    assert!(env.get(VM, "a-b").is_none(), "a-b not created");
    let kept = env.get(DV, "a-b-data").expect("a's disk kept");
    assert_eq!(
        kept["metadata"]["annotations"]["wukong.novasphere.dev/kept-from-vm"],
        "a"
    );

    // Applied again: `a`'s kept disk still goes to nobody else.
    let plan = env.plan(&fleet).await;
    let create = steps(&plan)
        .into_iter()
        .find(|s| s.0 == "apps/a-b")
        .unwrap();
    assert_eq!(create.2, "refused", "{create:?}");
    assert!(
        create
            .3
            .contains("was kept when VM apps/a was deleted; it is not given to another VM"),
        "{create:?}"
    );
    let (code, _, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(env.get(VM, "a-b").is_none());
    assert!(env.get(PVC, "a-b-data").is_some(), "a's data is there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_3_pruning_vm_a_keeps_the_disk_a_b_data_that_vm_a_b_uses() {
    let env = Env::new("apps").await;
    // The fleet empties itself on purpose: the prune guard is lifted.
    let settings = "  pruneDisks: true\n  pruneGuard: {allowEmpty: true}\n";
    let fleet = env.fleet(settings, &vm_doc("a", &[("b-data", "1Gi")]));
    let (code, doc, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{doc:#} {err}");
    env.running("a").await;
    // A VM `a-b` already mounts `a`'s disk (made by hand, or before names were checked).
    let mut shared = env.get(VM, "a").unwrap();
    shared["metadata"] = json!({"name": "a-b", "namespace": "apps"});
    shared.as_object_mut().unwrap().remove("status");
    env.api(VM)
        .create(
            &Default::default(),
            &serde_json::from_value(shared).unwrap(),
        )
        .await
        .unwrap();
    env.running("a-b").await;

    // Pruning `a` (with pruneDisks) deletes `a`, not the disk `a-b` uses.
    env.fleet(settings, "");
    let (code, doc, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{doc:#} {err}");
    let a = doc["report"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["vm"] == "apps/a")
        .unwrap()
        .clone();
    assert_eq!(a["outcome"], "done", "{a}");
    assert!(
        a["detail"]
            .as_str()
            .unwrap()
            .contains("disks kept: a-b-data"),
        "{a}"
    );
    assert!(env.get(VM, "a").is_none());
    // The garbage collector had its chance: the disk is still there, and so is `a-b`.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(env.get(DV, "a-b-data").is_some());
    assert!(env.get(PVC, "a-b-data").is_some());
    env.running("a-b").await;
}

// ---------------------------------------------------------------------------------------------
// Finding 4: a volume Wukong does not own became a VM's disk and was patched.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_a_hand_made_pvc_web_hx_system_is_not_adopted_and_not_patched() {
    let env = Env::new("web").await;
    let hand_made = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "hx-system", "namespace": "web"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "sim-shared",
                 "resources": {"requests": {"storage": "5Gi"}}}
    });
    env.api(PVC)
        .create(
            &Default::default(),
            &serde_json::from_value(hand_made).unwrap(),
        )
        .await
        .unwrap();
    let before = eventually("the hand-made PVC bound", || async {
        match env.get(PVC, "hx-system") {
            Some(p) if p["status"]["phase"] == "Bound" => Ok(p),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let fleet = env.fleet("", &vm_doc("hx", &[("system", "10Gi")]));
    let plan = env.plan(&fleet).await;
    assert_eq!(
        steps(&plan),
        [(
            "web/hx".to_owned(),
            "create".to_owned(),
            "refused".to_owned(),
            "disk `system`: PersistentVolumeClaim web/hx-system exists and is not managed by fleet `f13` (no ownership labels, not created for its DataVolume); Wukong never adopts or changes a volume it does not own".to_owned()
        )]
    );
    let (code, doc, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{doc:#} {err}");
    assert!(env.get(VM, "hx").is_none(), "not created");
    assert!(env.get(DV, "hx-system").is_none());
    let after = env.get(PVC, "hx-system").unwrap();
    assert_eq!(
        resource_version(&after),
        resource_version(&before),
        "not touched"
    );
    assert!(
        !writes_to(&env, "persistentvolumeclaims") && !writes_to(&env, "datavolumes"),
        "no volume written"
    );

    // A disk whose PVC lost its ownership (labels and owner removed by hand) is not grown:
    // the plan refuses, naming the PVC, and nothing is patched.
    let fleet = env.fleet("", &vm_doc("hy", &[("system", "10Gi")]));
    let (code, doc, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{doc:#} {err}");
    env.edit(
        PVC,
        "hy-system",
        json!({"metadata": {"labels": null, "ownerReferences": null}}),
    )
    .await;
    env.fleet("", &vm_doc("hy", &[("system", "20Gi")]));
    let plan = env.plan(&fleet).await;
    let grow = steps(&plan).into_iter().find(|s| s.1 == "disk").unwrap();
    assert_eq!(grow.2, "refused", "{grow:?}");
    assert!(
        grow.3.starts_with(
            "PersistentVolumeClaim web/hy-system exists and is not managed by fleet `f13`"
        ),
        "{grow:?}"
    );
    let before = env.get(PVC, "hy-system").unwrap();
    let (code, _, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{err}");
    let after = env.get(PVC, "hy-system").unwrap();
    assert_eq!(resource_version(&after), resource_version(&before));
    assert_eq!(request(&after), "10Gi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_a_pvc_disowned_between_plan_and_apply_is_not_patched() {
    use wukong::apply::{self, Cluster, Options, Timeouts};
    let env = Env::new("web").await;
    let fleet = env.fleet("", &vm_doc("hz", &[("system", "10Gi")]));
    let (code, doc, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{doc:#} {err}");
    env.running("hz").await;
    env.fleet("", &vm_doc("hz", &[("system", "20Gi")]));
    // Planned while the PVC is Wukong's …
    let (f, objects) = wukong::cli::load_and_render(&fleet, "r2").unwrap();
    let live = wukong::live::read::read(&env.sim.client, &wukong::live::read::Scope::of(&f))
        .await
        .unwrap();
    let plan = wukong::plan::plan(&f, &objects, &live, "r2");
    assert!(
        plan.steps
            .iter()
            .any(|s| s.change == wukong::plan::Change::Disk && s.acts()),
        "{}",
        wukong::plan::output::text(&plan, false)
    );
    // … then someone takes it over before the executor gets to it.
    env.edit(
        PVC,
        "hz-system",
        json!({"metadata": {"labels": null, "ownerReferences": null}}),
    )
    .await;
    let before = env.get(PVC, "hz-system").unwrap();
    let options = Options {
        timeouts: Timeouts::all(std::time::Duration::from_secs(30)),
        ..Options::default()
    };
    let report = apply::execute(&Cluster::new(env.sim.client.clone()), &plan, &options).await;
    let disk = report
        .steps
        .iter()
        .find(|r| r.step.change == wukong::plan::Change::Disk)
        .unwrap();
    assert_eq!(disk.outcome, apply::Outcome::Failed, "{disk:?}");
    assert!(
        disk.detail.starts_with(
            "not patched: PersistentVolumeClaim web/hz-system exists and is not managed"
        ),
        "{disk:?}"
    );
    let after = env.get(PVC, "hz-system").unwrap();
    assert_eq!(resource_version(&after), resource_version(&before));
}

// ---------------------------------------------------------------------------------------------
// Finding 9: sizes came from an annotation anyone can edit.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_9_a_hand_edited_disk_size_annotation_of_1gi_neither_grows_nor_misreports() {
    let env = Env::new("apps").await;
    let fleet = env.fleet("", &vm_doc("db", &[("data", "20Gi")]));
    let (code, doc, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{doc:#} {err}");
    env.running("db").await;
    env.edit(
        PVC,
        "db-data",
        json!({"metadata": {"annotations": {"wukong.novasphere.dev/disk-size": "1Gi"}}}),
    )
    .await;
    // Nothing to do: the PVC holds 20Gi, as the fleet says.
    let plan = env.plan(&fleet).await;
    assert_eq!(plan["hasChanges"], false, "{plan:#}");
    let before = env.get(PVC, "db-data").unwrap();
    let (code, _, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        resource_version(&env.get(PVC, "db-data").unwrap()),
        resource_version(&before)
    );

    // Grown to 30Gi: reported 20Gi → 30Gi, and patched to exactly that (the annotation
    // lying about 1Gi would have made it 49Gi).
    env.fleet("", &vm_doc("db", &[("data", "30Gi")]));
    let plan = env.plan(&fleet).await;
    let grow = &plan["steps"][0];
    assert_eq!(
        (&grow["change"], &grow["from"], &grow["to"]),
        (&json!("disk"), &json!("20Gi"), &json!("30Gi")),
        "{plan:#}"
    );
    let (code, doc, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{doc:#} {err}");
    let pvc = env.get(PVC, "db-data").unwrap();
    assert_eq!(request(&pvc), "30Gi");
    assert_eq!(pvc["status"]["capacity"]["storage"], "30Gi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_9_on_a_filesystem_volume_the_patched_size_is_the_reported_size_plus_cdis_overhead()
{
    let env = Env::new("apps").await;
    // An expandable Filesystem storage class (a host-path provisioner: RWO Filesystem).
    let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": "fs"}, "provisioner": "kubevirt.io.hostpath-provisioner",
                    "allowVolumeExpansion": true});
    Api::<DynamicObject>::all_with(
        env.sim.client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("storage.k8s.io", "v1", "StorageClass"),
            "storageclasses",
        ),
    )
    .create(&Default::default(), &serde_json::from_value(sc).unwrap())
    .await
    .unwrap();
    let doc = |size: &str| {
        format!(
            "{}      storageClass: fs\n",
            vm_doc("fsvm", &[("data", size)])
        )
    };
    let fleet = env.fleet("", &doc("20Gi"));
    let (code, report, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{report:#} {err}");
    env.running("fsvm").await;
    env.edit(
        PVC,
        "fsvm-data",
        json!({"metadata": {"annotations": {"wukong.novasphere.dev/disk-size": "1Gi"}}}),
    )
    .await;
    env.fleet("", &doc("30Gi"));
    let (code, report, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{report:#} {err}");
    let grow = report["report"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["change"] == "disk")
        .unwrap()
        .clone();
    assert_eq!(
        (&grow["from"], &grow["to"]),
        (&json!("20Gi"), &json!("30Gi"))
    );
    // The request is 30Gi plus the filesystem overhead KubeVirt reports (0.055): the guest
    // gets 30Gi, and the plan reads 30Gi back.
    let pvc = env.get(PVC, "fsvm-data").unwrap();
    let requested: wukong::quantity::Quantity = request(&pvc).parse().unwrap();
    let overhead = wukong::plan::volumes::Overhead::parse("0.055").unwrap();
    assert_eq!(
        requested,
        wukong::plan::volumes::padded("30Gi".parse().unwrap(), overhead)
    );
    assert!(
        grow["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("PVC fsvm-data has 30Gi (request {requested}")),
        "{grow}"
    );
    let plan = env.plan(&fleet).await;
    assert_eq!(plan["hasChanges"], false, "{plan:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_9_a_saved_plan_edited_to_restart_a_blocked_vm_and_extend_restartable_is_refused() {
    let env = Env::new("apps").await;
    // Restarts are not allowed; CPU hot-plug is not enabled, so 1 → 2 CPUs needs a restart.
    let fleet = env.fleet(
        "  allowRestarts: false\n",
        &vm_doc("db", &[("system", "1Gi")]),
    );
    let (code, doc, err) = env.apply(&fleet, &[]).await;
    assert_eq!(code, 0, "{doc:#} {err}");
    env.running("db").await;
    let uid = env.sim.get(crate::support::VMI, "apps", "db").unwrap()["metadata"]["uid"].clone();
    env.fleet(
        "  allowRestarts: false\n",
        &vm_doc("db", &[("system", "1Gi")]).replace("cpu: 1", "cpu: 2"),
    );
    let saved = env.sim.dir.path().join("plan.json");
    let out = run(vec![
        "plan".into(),
        fleet.display().to_string(),
        "--kubeconfig".into(),
        env.kubeconfig(),
        "--out".into(),
        saved.display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mut plan: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let classes: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["blocked", "blocked"], "{plan:#}");

    // Edited by hand: the blocked steps become a restart, db becomes restartable, and the
    // manifest carries the two CPUs.
    for step in plan["steps"].as_array_mut().unwrap() {
        step["class"] = json!("restart");
    }
    plan["restartable"] = json!(["apps/db"]);
    for w in plan["writes"].as_array_mut().unwrap() {
        w["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"] = json!(2);
    }
    std::fs::write(&saved, serde_json::to_string_pretty(&plan).unwrap()).unwrap();
    let writes_before = env
        .sim
        .server
        .audit()
        .iter()
        .filter(|e| !matches!(e.verb.as_str(), "get" | "list" | "watch"))
        .count();
    let (code, doc, err) = env.apply(&saved, &[]).await;
    assert_eq!(code, 1, "{doc:#} {err}");
    assert_eq!(doc, Value::Null, "nothing printed, nothing applied");
    for line in [
        "the saved plan is not what its fleet allows now; nothing was applied",
        "step cpu vms/apps/db: the plan says `restart`, the fleet says `blocked`",
        "step restart vms/apps/db: the plan says `restart`, the fleet says `blocked`",
        "the manifest to write for vms/apps/db is not the one the fleet gives",
        "restartable: the fleet does not allow restarting vms/apps/db",
    ] {
        assert!(err.contains(line), "{line} not in {err}");
    }
    let writes_after = env
        .sim
        .server
        .audit()
        .iter()
        .filter(|e| !matches!(e.verb.as_str(), "get" | "list" | "watch"))
        .count();
    assert_eq!(
        writes_before, writes_after,
        "nothing written, nothing restarted"
    );
    let vmi = env.sim.get(crate::support::VMI, "apps", "db").unwrap();
    assert_eq!(vmi["metadata"]["uid"], uid, "not restarted");
    assert_eq!(
        env.get(VM, "db").unwrap()["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"],
        1
    );

    // A plan that names no fleet cannot be checked, so it is refused too.
    plan.as_object_mut().unwrap().remove("source");
    std::fs::write(&saved, serde_json::to_string_pretty(&plan).unwrap()).unwrap();
    let (code, _, err) = env.apply(&saved, &[]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("does not name the fleet it was made from"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 7: the webhook buffered 25 MB bodies before checking the signature.

/// A field of `/proc/<pid>/status` in KiB (`VmHWM`: peak resident memory, `VmRSS`: now).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// POST `body` to the webhook with `headers`: the status line is read as soon as the daemon
/// answers, before the body is sent (it is sent afterwards, as an attacker would, and the
/// daemon may have closed the connection by then). The status code, if one came.
fn post_hook(addr: std::net::SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    stream
        .set_write_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    let mut head = format!(
        "POST /hooks/git HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    let mut line = Vec::new();
    let mut byte = [0u8];
    while !line.ends_with(b"\r\n") && stream.read(&mut byte).ok()? == 1 {
        line.push(byte[0]);
    }
    let _ = stream.write_all(body);
    String::from_utf8_lossy(&line)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_7_a_hundred_unsigned_24_mb_webhooks_leave_memory_bounded_and_a_signed_push_still_syncs()
 {
    use crate::daemon_e2e::{Daemon, Repo, SECRET, SYSTEM_DISK, start_sim, vm};
    let sim = start_sim(Config::fast()).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    let c1 = repo.push(
        &[("solo.yaml", &vm("solo", 1, "2Gi", SYSTEM_DISK, ""))],
        "one VM",
    );
    // Polls an hour apart: only the webhook can bring a push in.
    let daemon = Daemon::start(
        &sim,
        repo.path(),
        &tmp.path().join("cache"),
        &["--interval", "1h", "--drift-interval", "1h"],
    )
    .await;
    daemon.converged(&c1).await;
    let pid = daemon.child.id();
    let peak_before = memory_kib(pid, "VmHWM");
    let resident_before = memory_kib(pid, "VmRSS");

    // 100 unsigned 24 MB requests, ten at a time: each is answered 401 before its body.
    let body = std::sync::Arc::new(vec![b' '; 24 << 20]);
    let addr = daemon.addr;
    let codes: Vec<Option<u16>> = tokio::task::spawn_blocking(move || {
        let threads: Vec<_> = (0..10)
            .map(|_| {
                let body = std::sync::Arc::clone(&body);
                std::thread::spawn(move || {
                    (0..10)
                        .map(|_| post_hook(addr, &[("X-GitHub-Event", "push")], &body))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    })
    .await
    .unwrap();
    assert_eq!(codes.len(), 100);
    assert!(codes.iter().all(|c| *c == Some(401)), "{codes:?}");
    // Wrongly signed, announcing 24 MB: 413, unread.
    let wrong = wukong::daemon::webhook::sign(b"not the secret", b"{}");
    let big = vec![b' '; 24 << 20];
    let code = tokio::task::spawn_blocking(move || {
        post_hook(addr, &[("X-Hub-Signature-256", &wrong)], &big)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(413));

    let peak_after = memory_kib(pid, "VmHWM");
    let now = memory_kib(pid, "VmRSS");
    // 2.4 GB were thrown at it; the peak grew by less than 64 MiB (it grew to 1.9 GB before).
    assert!(
        peak_after < peak_before + 64 * 1024,
        "peak resident memory {peak_before} KiB → {peak_after} KiB"
    );
    // And nothing of it stays (it kept 1.35 GB before).
    assert!(
        now < resident_before + 64 * 1024,
        "resident memory {resident_before} KiB → {now} KiB"
    );
    assert!(daemon.status().await["ready"] == true, "still serving");

    // A valid signed push still triggers a sync at once.
    let c2 = repo.push(
        &[("solo.yaml", &vm("solo", 2, "2Gi", SYSTEM_DISK, ""))],
        "two CPUs",
    );
    let push = br#"{"ref":"refs/heads/main"}"#;
    let signed = wukong::daemon::webhook::sign(SECRET.as_bytes(), push);
    let (code, text) = daemon
        .http(
            "POST",
            "/hooks/git",
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &signed)],
            push,
        )
        .await;
    assert_eq!(code, 202, "{text}");
    daemon.converged(&c2).await;
    let (code, _) = daemon.terminate().await;
    assert_eq!(code, 0);
    sim.server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Finding 8: one VM that never reaches Running held the daemon for 15 minutes.

/// A sample of the daemon's `/metrics`.
async fn sample(daemon: &crate::daemon_e2e::Daemon, name: &str, labels: &[(&str, &str)]) -> f64 {
    let scrape = daemon.metrics().await;
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(n)
            | prometheus_parse::Value::Gauge(n)
            | prometheus_parse::Value::Untyped(n) => n,
            _ => f64::NAN,
        })
        .unwrap_or(0.0)
}

const FLEET_TWO_NAMESPACES: &str = "apiVersion: vm.novasphere.dev/v1alpha1
kind: Fleet
metadata:
  name: e2e
spec:
  namespaces: [apps, nowhere]
  defaultNamespace: apps
  defaultStorageClass: sim-shared
  allowRestarts: true
  prune: true
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_8_a_storage_class_namespace_or_nad_that_does_not_exist_is_blocked_not_waited_for()
{
    use crate::daemon_e2e::{Daemon, SYSTEM_DISK, start_sim, vm};
    let sim = start_sim(Config::fast()).await;
    let tmp = tempfile::tempdir().unwrap();
    let up = crate::daemon_git::Upstream::new(&tmp.path().join("fleet.git"));
    let missing_class = vm(
        "no-class",
        1,
        "2Gi",
        &format!("{SYSTEM_DISK}      storageClass: does-not-exist\n"),
        "",
    );
    let missing_nad = vm(
        "no-nad",
        1,
        "2Gi",
        SYSTEM_DISK,
        "  networks:\n    - name: ext\n      type: bridge\n      nadName: apps/missing-net\n",
    );
    let missing_ns = vm("no-ns", 1, "2Gi", SYSTEM_DISK, "")
        .replace("  name: no-ns\n", "  name: no-ns\n  namespace: nowhere\n");
    let good = vm("good", 1, "2Gi", SYSTEM_DISK, "");
    let files = [
        ("fleet.yaml", FLEET_TWO_NAMESPACES),
        ("a.yaml", missing_class.as_str()),
        ("b.yaml", missing_nad.as_str()),
        ("c.yaml", missing_ns.as_str()),
        ("d.yaml", good.as_str()),
    ];
    let c1 = up
        .commit(
            "main",
            &files,
            "three VMs the cluster cannot run, one it can",
        )
        .to_string();
    let started = std::time::Instant::now();
    let daemon = Daemon::start(
        &sim,
        &up.dir,
        &tmp.path().join("cache"),
        &["--interval", "500ms", "--drift-interval", "1h"],
    )
    .await;
    // The sync finishes at once (nothing to wait for) and succeeds: the good VM is created,
    // the others are blocked with the reason, and nothing is created for them.
    let status = eventually("the first sync", || async {
        let s = daemon.status().await;
        if s["lastSync"]["revision"] == c1.as_str() && s["lastSync"]["result"] == "success" {
            Ok(s)
        } else {
            Err(format!("{} {}", s["lastSync"], s["errors"]))
        }
    })
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let blocked: Vec<(String, String)> = status["lastPlan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["class"] == "blocked")
        .map(|s| {
            (
                s["vm"].as_str().unwrap().to_owned(),
                s["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        blocked,
        [
            ("apps/no-class".to_owned(), "cannot be created now: disk `system`: storage class `does-not-exist` does not exist, so its PVC would stay Pending".to_owned()),
            ("apps/no-nad".to_owned(), "cannot be created now: network `ext`: network attachment apps/missing-net does not exist, so the VM could not start".to_owned()),
            ("nowhere/no-ns".to_owned(), "cannot be created now: namespace `nowhere` does not exist (Wukong does not create namespaces)".to_owned()),
        ],
        "{status:#}"
    );
    sim.running(&["good"]).unwrap();
    for name in ["no-class", "no-nad"] {
        assert!(sim.get(VM, "apps", name).is_none(), "{name} not created");
    }
    assert!(
        !sim.server
            .audit()
            .iter()
            .any(|e| e.namespace.as_deref() == Some("nowhere")
                && !matches!(e.verb.as_str(), "get" | "list" | "watch")),
        "nothing written to a namespace that does not exist"
    );
    // Once the class exists, the next commit creates the VM.
    let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": "does-not-exist"}, "provisioner": "rbd.csi.ceph.com",
                    "allowVolumeExpansion": true});
    Api::<DynamicObject>::all_with(
        sim.client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("storage.k8s.io", "v1", "StorageClass"),
            "storageclasses",
        ),
    )
    .create(&Default::default(), &serde_json::from_value(sc).unwrap())
    .await
    .unwrap();
    let c2 = up
        .commit(
            "main",
            &files[..2],
            "only the VM whose storage class now exists",
        )
        .to_string();
    eventually("the VM created", || async {
        let s = daemon.status().await;
        match sim.running(&["no-class"]) {
            Ok(()) if s["lastSync"]["revision"] == c2.as_str() => Ok(()),
            other => Err(format!("{other:?} {}", s["lastSync"])),
        }
    })
    .await;
    let (code, _) = daemon.terminate().await;
    assert_eq!(code, 0);
    sim.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_8_a_stuck_migration_does_not_hold_a_newer_commit_and_status_shows_it_in_progress()
{
    use crate::daemon_e2e::{Daemon, Repo, SYSTEM_DISK, start_sim, vm};
    let sim = start_sim(Config::fast()).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path());
    let slow = |cpu| vm("slow", cpu, "2Gi", SYSTEM_DISK, "");
    let c1 = repo.push(&[("slow.yaml", &slow(1))], "one VM");
    let daemon = Daemon::start(
        &sim,
        repo.path(),
        &tmp.path().join("cache"),
        &["--interval", "500ms", "--drift-interval", "1h"],
    )
    .await;
    daemon.converged(&c1).await;

    // Every migration gets stuck: a CPU hot-plug waits for its timeout (here 60 s, by default
    // ten minutes).
    sim.server.kubevirt_faults().set_migrations_stuck(true);
    let c2 = repo.push(
        &[("slow.yaml", &slow(2))],
        "two CPUs: a hot-plug that will not finish",
    );
    let status = eventually("the hot-plug in progress", || async {
        let s = daemon.status().await;
        let waiting = s["inProgress"]
            .as_array()
            .and_then(|steps| {
                steps
                    .iter()
                    .find(|p| p["object"] == "vms/apps/slow" && p["change"] == "cpu")
            })
            .filter(|p| p["waitingFor"].is_string())
            .cloned();
        match waiting {
            Some(_) if s["reconciling"]["revision"] == c2.as_str() => Ok(s),
            _ => Err(format!("{} {}", s["reconciling"], s["inProgress"])),
        }
    })
    .await;
    assert_eq!(status["inProgress"][0]["class"], "live", "{status:#}");
    assert!(status["inProgress"][0]["startedAt"].is_string());
    assert_eq!(sample(&daemon, "wukong_steps_in_progress", &[]).await, 1.0);
    assert_eq!(
        sample(&daemon, "wukong_reconcile_in_progress", &[]).await,
        1.0
    );

    // A newer commit is applied at once, not after the stuck step's timeout.
    let pushed = std::time::Instant::now();
    let c3 = repo.push(
        &[
            ("slow.yaml", &slow(2)),
            ("fresh.yaml", &vm("fresh", 1, "2Gi", SYSTEM_DISK, "")),
        ],
        "a new VM",
    );
    eventually("the newer commit applied", || async {
        let s = daemon.status().await;
        match sim.running(&["fresh"]) {
            Ok(()) if s["lastSync"]["revision"] == c3.as_str() => Ok(()),
            other => Err(format!("{other:?} {} {}", s["lastSync"], s["reconciling"])),
        }
    })
    .await;
    assert!(
        pushed.elapsed() < std::time::Duration::from_secs(20),
        "applied after {:?}",
        pushed.elapsed()
    );
    let s = daemon.status().await;
    assert_eq!(s["lastSync"]["result"], "success", "{s:#}");
    assert!(s["inProgress"].as_array().unwrap().is_empty(), "{s:#}");
    assert_eq!(
        sample(
            &daemon,
            "wukong_reconciles_total",
            &[("result", "superseded")]
        )
        .await,
        1.0
    );
    assert_eq!(sample(&daemon, "wukong_steps_in_progress", &[]).await, 0.0);
    assert!(!daemon.logs("superseded by a newer revision").is_empty());
    // The superseded hot-plug was written; KubeVirt finishes it once migrations move again.
    let vm = sim.get(VM, "apps", "slow").unwrap();
    assert_eq!(
        vm["spec"]["template"]["spec"]["domain"]["cpu"]["sockets"],
        2
    );
    sim.server.kubevirt_faults().set_migrations_stuck(false);
    eventually("the hot-plug finished", || async {
        let vmi = sim.get(crate::support::VMI, "apps", "slow").unwrap();
        match vmi["status"]["currentCPUTopology"]["sockets"].as_u64() {
            Some(2) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let (code, _) = daemon.terminate().await;
    assert_eq!(code, 0);
    sim.server.shutdown().await.unwrap();
}

/// A reconciler that waits until it is superseded (a reconcile stuck on a slow step), checks
/// revisions by their `vm.yaml`, and records what it was asked.
#[derive(Clone, Default)]
struct Stuck {
    calls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    superseded: std::sync::Arc<tokio::sync::Notify>,
}

impl wukong::daemon::Reconciler for Stuck {
    async fn reconcile(
        &self,
        _: &Path,
        revision: &str,
        _: bool,
    ) -> Result<wukong::daemon::Outcome, wukong::daemon::ReconcileError> {
        let first = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(revision.to_owned());
            calls.len() == 1
        };
        if first {
            self.superseded.notified().await;
        }
        Ok(wukong::daemon::Outcome::default())
    }

    async fn check(
        &self,
        fleet_root: &Path,
        _: &str,
    ) -> Result<(), wukong::daemon::ReconcileError> {
        match std::fs::read_to_string(fleet_root.join("vm.yaml")) {
            Ok(t) if t.contains("invalid") => Err(wukong::daemon::ReconcileError::Rejected(
                format!("vm.yaml: {t}"),
            )),
            _ => Ok(()),
        }
    }

    fn supersede(&self) {
        self.superseded.notify_one();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_8_an_invalid_newer_commit_supersedes_nothing_and_a_valid_one_takes_over() {
    use wukong::daemon::run::{self, Origin};
    let tmp = tempfile::tempdir().unwrap();
    let up = crate::daemon_git::Upstream::new(&tmp.path().join("origin.git"));
    let r1 = up.commit("main", &[("vm.yaml", "one")], "one").to_string();
    let source = wukong::daemon::git::Source::new(wukong::daemon::git::Config {
        url: up.dir.display().to_string(),
        selector: wukong::daemon::git::Selector::Branch("main".into()),
        subdir: None,
        auth: wukong::daemon::git::Auth::None,
        cache_dir: tmp.path().join("cache"),
    })
    .unwrap();
    let stuck = Stuck::default();
    let status = wukong::daemon::status::shared();
    let (_triggers, received) = tokio::sync::mpsc::channel(1);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run::run(
        Origin::Git(std::sync::Arc::new(source)),
        stuck.clone(),
        run::Options {
            interval: std::time::Duration::from_millis(100),
            drift_interval: std::time::Duration::from_secs(3600),
            plan_only: false,
            fetch_timeout: std::time::Duration::from_secs(30),
            seed: Some(1),
        },
        run::Shared {
            status: std::sync::Arc::clone(&status),
            metrics: std::sync::Arc::new(wukong::daemon::metrics::Metrics::new()),
        },
        received,
        stopped,
    ));
    let current = || status.read().unwrap().clone();
    eventually("r1 in flight", || async {
        match current().reconciling {
            Some(r) if r.revision == r1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // An invalid commit is rejected and supersedes nothing: r1 stays in flight.
    let r2 = up
        .commit("main", &[("vm.yaml", "invalid")], "broken")
        .to_string();
    eventually("r2 rejected", || async {
        let s = current();
        match s.errors.last() {
            Some(e) if e.revision.as_deref() == Some(r2.as_str()) && e.stage == "validate" => {
                Ok(())
            }
            _ => Err(format!("{:?}", s.errors)),
        }
    })
    .await;
    let s = current();
    assert_eq!(s.reconciling.as_ref().unwrap().revision, r1);
    assert_eq!(s.reconciling.as_ref().unwrap().superseded_by, None);
    // A valid one supersedes it and is reconciled; the superseded one is not accepted.
    let r3 = up
        .commit("main", &[("vm.yaml", "three")], "three")
        .to_string();
    eventually("r3 reconciled", || async {
        let s = current();
        match &s.last_sync {
            Some(sync) if sync.revision.as_deref() == Some(r3.as_str()) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(*stuck.calls.lock().unwrap(), [r1.clone(), r3.clone()]);
    assert_eq!(current().last_good_revision.as_deref(), Some(r3.as_str()));
    stop.send_replace(true);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_4_a_vm_or_pvc_made_by_hand_between_plan_and_apply_is_not_taken_over() {
    use wukong::apply::{self, Cluster, Options, Timeouts};
    let env = Env::new("web").await;
    let fleet = env.fleet(
        "",
        &format!(
            "{}{}",
            vm_doc("hx", &[("system", "1Gi")]),
            vm_doc("hw", &[("system", "1Gi")])
        ),
    );
    let (f, objects) = wukong::cli::load_and_render(&fleet, "r1").unwrap();
    let live = wukong::live::read::read(&env.sim.client, &wukong::live::read::Scope::of(&f))
        .await
        .unwrap();
    let plan = wukong::plan::plan(&f, &objects, &live, "r1");
    assert_eq!(plan.summary().create, 2);
    // After the plan, someone makes a VM `hx` and a PVC `hw-system` by hand.
    let theirs = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "hx", "namespace": "web"},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {
            "devices": {}, "memory": {"guest": "1Gi"}}}}}});
    env.api(VM)
        .create(
            &Default::default(),
            &serde_json::from_value(theirs).unwrap(),
        )
        .await
        .unwrap();
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "hw-system", "namespace": "web"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "sim-shared",
                 "resources": {"requests": {"storage": "5Gi"}}}});
    env.api(PVC)
        .create(&Default::default(), &serde_json::from_value(pvc).unwrap())
        .await
        .unwrap();
    let vm_before = env.get(VM, "hx").unwrap();
    let options = Options {
        timeouts: Timeouts::all(std::time::Duration::from_secs(30)),
        ..Options::default()
    };
    let report = apply::execute(&Cluster::new(env.sim.client.clone()), &plan, &options).await;
    let details: Vec<(String, apply::Outcome, String)> = report
        .steps
        .iter()
        .map(|r| (r.step.target.name.clone(), r.outcome, r.detail.clone()))
        .collect();
    assert_eq!(
        details,
        [
            ("hw".to_owned(), apply::Outcome::Failed, "not created: PersistentVolumeClaim web/hw-system exists and is not managed by fleet `f13` (no ownership labels, not created for its DataVolume)".to_owned()),
            ("hx".to_owned(), apply::Outcome::Failed, "not created: vms/web/hx exists and is not managed by fleet `f13`".to_owned()),
        ]
    );
    assert!(env.get(VM, "hw").is_none());
    let vm_after = env.get(VM, "hx").unwrap();
    assert_eq!(
        resource_version(&vm_after),
        resource_version(&vm_before),
        "not taken over"
    );
    assert!(!writes_to(&env, "virtualmachines") && !writes_to(&env, "persistentvolumeclaims"));
}
